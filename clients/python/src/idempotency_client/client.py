"""The helper: run a side effect at most once per idempotency key.

    coordinator = Coordinator("127.0.0.1:50051", owner="checkout-7")
    outcome = coordinator.run("payments.create", key, charge, json_payload=cart)

`charge(attempt)` runs only if this call acquired the key; a retry of a
finished key gets the stored result back instead (`outcome.replayed`). While it
runs, a heartbeat thread extends the lease, timed from the lease it was
handed (see `heartbeat.py`). Exceptions release the key
(`RetryableError` and any other exception) or store a replayable failure
(`PermanentError`), and are re-raised.
"""

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import grpc
from google.protobuf import duration_pb2

from idempotency.v1 import coordinator_pb2 as pb
from idempotency.v1 import coordinator_pb2_grpc as pb_grpc

from .errors import (
    IdempotencyError,
    PermanentError,
    ReplayedFailure,
    UnavailableError,
    from_rpc_error,
)
from .heartbeat import Lease, timestamp_seconds

# Retries only UNAVAILABLE (etcd or a replica briefly gone). Begin carries a
# request_id, and Complete/Fail/Extend a fencing token, so a retry of a call
# whose answer was lost is recognised by the coordinator.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "idempotency.v1.CoordinatorService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def channel(target: str, credentials: Optional[grpc.ChannelCredentials] = None) -> grpc.Channel:
    """A channel with the retry policy above: plaintext, or TLS with `credentials`
    (grpc.ssl_channel_credentials(...), composed with
    grpc.access_token_call_credentials(token) for a bearer token)."""
    options = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


@dataclass
class Result:
    """What a side effect returns to be stored (or what a replay returns)."""

    response: Optional[bytes] = None
    resource_ref: Optional[str] = None
    content_type: str = ""
    status_code: int = 0


@dataclass
class Outcome(Result):
    """The answer of `Coordinator.run`."""

    replayed: bool = False
    attempt: int = 0


@dataclass
class Attempt:
    """What the side effect knows about its attempt. Pass `fencing_token` to the
    resource you write, so a stale owner's late write is refused there."""

    fencing_token: int
    attempt: int
    recovered: Optional[pb.Recovery]
    lease_lost: threading.Event = field(default_factory=threading.Event)


def _seconds(value: float) -> duration_pb2.Duration:
    whole = int(value)
    return duration_pb2.Duration(seconds=whole, nanos=int(round((value - whole) * 1e9)))


def _to_result(value: Any) -> Result:
    if isinstance(value, Result):
        return value
    if isinstance(value, bytes):
        return Result(response=value)
    if isinstance(value, str):
        return Result(response=value.encode())
    return Result(response=json.dumps(value).encode(), content_type="application/json")


def _outcome(stored: pb.Result, replayed: bool, attempt: int) -> Outcome:
    body = stored.WhichOneof("body")
    return Outcome(
        response=stored.response if body == "response" else None,
        resource_ref=stored.resource_ref if body == "resource_ref" else None,
        content_type=stored.content_type,
        status_code=stored.status_code,
        replayed=replayed,
        attempt=attempt,
    )


def begin_request(
    tenant, owner, namespace, key, payload, json_payload, ignore_fields, fingerprint, lease_ttl, wait
) -> pb.BeginRequest:
    """The Begin of a run, with a fresh request_id that its own retries reuse."""
    request = pb.BeginRequest(
        tenant=tenant,
        namespace=namespace,
        key=key,
        lease_ttl=_seconds(lease_ttl),
        wait=_seconds(wait),
        owner=owner,
        request_id=str(uuid.uuid4()),
    )
    if fingerprint is not None:
        request.fingerprint = fingerprint
    elif json_payload is not None:
        request.payload.data = json.dumps(json_payload).encode()
        request.payload.canonicalization = pb.CANONICALIZATION_JSON
        request.payload.ignore_fields.extend(ignore_fields)
    elif payload is not None:
        request.payload.data = payload.encode() if isinstance(payload, str) else payload
        request.payload.canonicalization = pb.CANONICALIZATION_RAW
    else:
        raise ValueError("give payload, json_payload or fingerprint")
    return request


# Reasons an Extend gets once the attempt is over: stop heartbeating.
LOST_REASONS = ("LEASE_LOST", "ALREADY_FINISHED", "RECORD_NOT_FOUND")


def replay_of(response: pb.BeginResponse) -> Optional[Outcome]:
    """The replay a Begin answered with (raising a replayed failure), or None."""
    kind = response.WhichOneof("outcome")
    if kind == "completed":
        return _outcome(response.completed.result, replayed=True, attempt=response.completed.attempt)
    if kind == "failed":
        e = response.failed.error
        raise ReplayedFailure(e.code, e.message, e.details, response.failed.attempt)
    return None


def still_in_progress(response: pb.BeginResponse, namespace: str, key: str, give_up_after: float) -> UnavailableError:
    retry_after = response.in_progress.retry_after.ToTimedelta().total_seconds() or 1.0
    return UnavailableError(
        f"{namespace}/{key} still in progress after {give_up_after}s", "IN_PROGRESS", retry_after=retry_after
    )


def lease_of(acquired: pb.Acquired, sent_at: float, answered_at: float, lease_ttl: float) -> Lease:
    """The lease of an acquisition whose Begin was sent at monotonic
    `sent_at` and answered when the wall clock said `answered_at`."""
    return Lease.answered(sent_at, timestamp_seconds(acquired.lease_expires_at), answered_at, lease_ttl)


def attempt_of(acquired: pb.Acquired, lease_lost) -> Attempt:
    recovered = acquired.recovered if acquired.HasField("recovered") else None
    return Attempt(acquired.fencing_token, acquired.attempt, recovered, lease_lost)


def fail_request(ids: dict, attempt: Attempt, error: BaseException, retention: Optional[float]) -> pb.FailRequest:
    """A PermanentError is stored and replayed; anything else releases the key."""
    if isinstance(error, PermanentError):
        stored, retryable = pb.Error(code=error.code, message=error.message, details=error.details), False
    else:
        stored, retryable = pb.Error(code=type(error).__name__[:128], message=str(error)[:4096]), True
    request = pb.FailRequest(fencing_token=attempt.fencing_token, error=stored, retryable=retryable, **ids)
    if retention is not None and not retryable:
        request.retention.CopyFrom(_seconds(retention))
    return request


def complete_request(ids: dict, attempt: Attempt, stored: Result, retention: Optional[float]) -> pb.CompleteRequest:
    result = pb.Result(content_type=stored.content_type, status_code=stored.status_code)
    if stored.resource_ref is not None:
        result.resource_ref = stored.resource_ref
    else:
        result.response = stored.response or b""
    request = pb.CompleteRequest(fencing_token=attempt.fencing_token, result=result, **ids)
    if retention is not None:
        request.retention.CopyFrom(_seconds(retention))
    return request


def extend_request(ids: dict, attempt: Attempt, lease_ttl: int) -> pb.ExtendRequest:
    return pb.ExtendRequest(fencing_token=attempt.fencing_token, lease_ttl=_seconds(lease_ttl), **ids)


class Coordinator:
    def __init__(
        self,
        target: Union[str, grpc.Channel],
        *,
        owner: str = "",
        tenant: str = "",
        timeout: float = 10.0,
    ):
        self._channel = channel(target) if isinstance(target, str) else target
        self._stub = pb_grpc.CoordinatorServiceStub(self._channel)
        self.owner, self.tenant, self.timeout = owner, tenant, timeout

    def close(self) -> None:
        self._channel.close()

    def run(
        self,
        namespace: str,
        key: str,
        side_effect: Callable[[Attempt], Any],
        *,
        payload: Union[bytes, str, None] = None,
        json_payload: Any = None,
        ignore_fields: Sequence[str] = (),
        fingerprint: Optional[bytes] = None,
        lease_ttl: int = 30,
        wait: float = 10.0,
        give_up_after: float = 60.0,
        retention: Optional[float] = None,
        heartbeat: bool = True,
    ) -> Outcome:
        """Runs `side_effect` if this call owns `key` in `namespace`, and
        returns its stored result; on a retry, returns the stored result
        without running anything. Waits (up to `give_up_after` seconds) while
        another caller holds the key."""
        request = begin_request(
            self.tenant, self.owner, namespace, key, payload, json_payload, ignore_fields, fingerprint, lease_ttl, wait
        )

        give_up = time.monotonic() + give_up_after
        while True:
            sent_at = time.monotonic()
            try:
                response = self._stub.Begin(request, timeout=wait + self.timeout)
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None
            replay = replay_of(response)
            if replay is not None:
                return replay
            if response.WhichOneof("outcome") == "acquired":
                lease = lease_of(response.acquired, sent_at, time.time(), lease_ttl)
                return self._own(request, response.acquired, lease, side_effect, lease_ttl, retention, heartbeat)
            # In progress elsewhere: Begin already waited up to `wait`.
            if time.monotonic() >= give_up:
                raise still_in_progress(response, namespace, key, give_up_after)
            if wait <= 0:
                time.sleep(response.in_progress.retry_after.ToTimedelta().total_seconds() or 0.1)

    def _own(self, request, acquired, lease, side_effect, lease_ttl, retention, heartbeat) -> Outcome:
        attempt = attempt_of(acquired, threading.Event())
        ids = dict(tenant=request.tenant, namespace=request.namespace, key=request.key)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(ids, attempt, lease_ttl, lease, stop), daemon=True)
        if heartbeat:
            beat.start()
        try:
            value = side_effect(attempt)
        except BaseException as error:
            self._stop(stop, beat, heartbeat)
            try:
                self._stub.Fail(fail_request(ids, attempt, error, retention), timeout=self.timeout)
            except grpc.RpcError:
                # The original exception matters more; an unreleased key is
                # abandoned and taken over when its lease lapses.
                pass
            raise
        self._stop(stop, beat, heartbeat)
        stored = _to_result(value)
        try:
            self._stub.Complete(complete_request(ids, attempt, stored, retention), timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return Outcome(**vars(stored), replayed=False, attempt=attempt.attempt)

    @staticmethod
    def _stop(stop: threading.Event, beat: threading.Thread, started: bool) -> None:
        stop.set()
        if started:
            beat.join()

    def _heartbeat(self, ids, attempt, lease_ttl, lease: Lease, stop: threading.Event) -> None:
        """Extends the lease a third of its time left after each send (the
        rule is in `heartbeat.py`) until stopped or the attempt is lost."""
        while not stop.wait(max(0.0, lease.heartbeat_at() - time.monotonic())):
            lease = self._extend(ids, attempt, lease_ttl, lease, stop)
            if lease is None:
                return

    def _extend(self, ids, attempt, lease_ttl, lease: Lease, stop: threading.Event) -> Optional[Lease]:
        """The lease an Extend renewed, tried again while time is left; None
        once stopped, or once the attempt is lost or its time ran out (then
        `attempt.lease_lost` is set)."""
        while True:
            sent_at = time.monotonic()
            try:
                answer = self._stub.Extend(
                    extend_request(ids, attempt, lease_ttl), timeout=lease.extend_timeout(sent_at, self.timeout)
                )
                return Lease.answered(sent_at, timestamp_seconds(answer.lease_expires_at), time.time(), lease_ttl)
            except grpc.RpcError as error:
                if from_rpc_error(error).reason in LOST_REASONS or lease.over(time.monotonic()):
                    attempt.lease_lost.set()
                    return None
                # Unavailable or too slow: try again while time is left.
            if stop.wait(lease.retry_pause(time.monotonic())):
                return None

    def lookup(self, namespace: str, key: str) -> pb.Record:
        try:
            return self._stub.Lookup(
                pb.LookupRequest(tenant=self.tenant, namespace=namespace, key=key), timeout=self.timeout
            ).record
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def idempotent(self, namespace: str, *, key: Callable[..., str], json_payload: Callable[..., Any], **options):
        """Decorator form: `key` and `json_payload` compute the idempotency key
        and the guarded request from the decorated function's arguments; the
        function gets the `Attempt` as its first argument."""

        def wrap(function):
            def wrapper(*args, **kwargs):
                return self.run(
                    namespace,
                    key(*args, **kwargs),
                    lambda attempt: function(attempt, *args, **kwargs),
                    json_payload=json_payload(*args, **kwargs),
                    **options,
                )

            return wrapper

        return wrap


__all__ = ["Coordinator", "Attempt", "Outcome", "Result", "channel", "SERVICE_CONFIG", "IdempotencyError"]
