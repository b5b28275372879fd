"""Typed errors, keyed on the coordinator's google.rpc.ErrorInfo reason."""

import json
from typing import Optional

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class IdempotencyError(Exception):
    """Base class of every error this package raises."""

    def __init__(self, message: str, reason: str = "", metadata: Optional[dict] = None):
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata or {}


class KeyReusedError(IdempotencyError):
    """The key was used before for a request with a different fingerprint (a client bug)."""

    @property
    def differing_members(self) -> Optional[list]:
        """The top-level JSON members in which this request differs from the
        first one, e.g. ["amount"]; None when the coordinator could not tell
        (a raw payload or fingerprint on either side, or not a JSON object)."""
        names = self.metadata.get("differing_members")
        return json.loads(names) if names is not None else None


class LeaseLostError(IdempotencyError):
    """Another attempt took over or finished the record: stop, do not write."""


class UnavailableError(IdempotencyError):
    """The coordinator or its store is unavailable (or overloaded): retry later."""

    def __init__(self, message: str, reason: str = "", metadata: Optional[dict] = None, retry_after: float = 1.0):
        super().__init__(message, reason, metadata)
        self.retry_after = retry_after


class InvalidRequestError(IdempotencyError):
    """A field is malformed or over a limit; `violations` maps field to description."""

    def __init__(self, message: str, violations: dict):
        super().__init__(message, "INVALID_REQUEST")
        self.violations = violations


class AuthenticationError(IdempotencyError):
    """No, unknown or conflicting credentials (the coordinator has authentication on)."""


class PermissionDeniedError(IdempotencyError):
    """The request named a tenant other than the caller's."""


class RecordInProgressError(IdempotencyError):
    """An admin asked to forget a record that an attempt has not finished."""


class RecordNotFoundError(IdempotencyError):
    """No record under that tenant, namespace and key (never made, expired or forgotten)."""


class ReplayedFailure(IdempotencyError):
    """The operation failed for good earlier; this is the stored error, replayed."""

    def __init__(self, code: str, message: str, details: bytes, attempt: int):
        super().__init__(f"{code}: {message}", "REPLAYED_FAILURE")
        self.code, self.details, self.attempt = code, details, attempt


class RetryableError(Exception):
    """Raise (or subclass) from a side effect to release the key for another attempt."""


class PermanentError(Exception):
    """Raise (or subclass) from a side effect to store a failure that later calls replay."""

    def __init__(self, code: str, message: str = "", details: bytes = b""):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.details = code, message, details


def from_rpc_error(error: grpc.RpcError) -> IdempotencyError:
    """The typed error for a failed call."""
    status = rpc_status.from_call(error)
    reason, metadata, violations, retry_after = "", {}, {}, 1.0
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    message = f"{error.code().name}: {error.details()}"
    if reason == "IDEMPOTENCY_KEY_REUSED":
        return KeyReusedError(message, reason, metadata)
    if reason in ("LEASE_LOST", "ALREADY_FINISHED"):
        return LeaseLostError(message, reason, metadata)
    if reason == "RECORD_IN_PROGRESS":
        return RecordInProgressError(message, reason, metadata)
    if reason == "RECORD_NOT_FOUND":
        return RecordNotFoundError(message, reason, metadata)
    if reason == "INVALID_REQUEST" or error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequestError(message, violations)
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationError(message, reason, metadata)
    if error.code() == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDeniedError(message, reason, metadata)
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnavailableError(message, reason, metadata, retry_after)
    return IdempotencyError(message, reason, metadata)
