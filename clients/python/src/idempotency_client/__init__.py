"""Client helper for the idempotency coordinator (see client.py)."""

from .admin import Admin, ListedRecord
from .aio import AsyncCoordinator, aio_channel
from .client import SERVICE_CONFIG, Attempt, Coordinator, Outcome, Result, channel
from .errors import (
    AuthenticationError,
    IdempotencyError,
    InvalidRequestError,
    KeyReusedError,
    LeaseLostError,
    PermanentError,
    PermissionDeniedError,
    RecordInProgressError,
    RecordNotFoundError,
    ReplayedFailure,
    RetryableError,
    UnavailableError,
)

__all__ = [
    "Admin",
    "AsyncCoordinator",
    "Attempt",
    "AuthenticationError",
    "Coordinator",
    "IdempotencyError",
    "InvalidRequestError",
    "KeyReusedError",
    "LeaseLostError",
    "ListedRecord",
    "Outcome",
    "PermanentError",
    "PermissionDeniedError",
    "RecordInProgressError",
    "RecordNotFoundError",
    "ReplayedFailure",
    "Result",
    "RetryableError",
    "SERVICE_CONFIG",
    "UnavailableError",
    "aio_channel",
    "channel",
]
