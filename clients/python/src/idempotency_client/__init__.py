"""Client helper for the idempotency coordinator (see client.py)."""

from .client import SERVICE_CONFIG, Attempt, Coordinator, Outcome, Result, channel
from .errors import (
    IdempotencyError,
    InvalidRequestError,
    KeyReusedError,
    LeaseLostError,
    PermanentError,
    ReplayedFailure,
    RetryableError,
    UnavailableError,
)

__all__ = [
    "Attempt",
    "Coordinator",
    "IdempotencyError",
    "InvalidRequestError",
    "KeyReusedError",
    "LeaseLostError",
    "Outcome",
    "PermanentError",
    "ReplayedFailure",
    "Result",
    "RetryableError",
    "SERVICE_CONFIG",
    "UnavailableError",
    "channel",
]
