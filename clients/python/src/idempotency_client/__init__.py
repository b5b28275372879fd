"""Client helper for the idempotency coordinator (see client.py)."""

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
    ReplayedFailure,
    RetryableError,
    UnavailableError,
)

__all__ = [
    "AsyncCoordinator",
    "Attempt",
    "AuthenticationError",
    "Coordinator",
    "IdempotencyError",
    "InvalidRequestError",
    "KeyReusedError",
    "LeaseLostError",
    "Outcome",
    "PermanentError",
    "PermissionDeniedError",
    "ReplayedFailure",
    "Result",
    "RetryableError",
    "SERVICE_CONFIG",
    "UnavailableError",
    "aio_channel",
    "channel",
]
