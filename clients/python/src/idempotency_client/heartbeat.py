"""When a helper sends its heartbeats (Extend), and when it stops counting
on its lease. Shared by the blocking and the asyncio helper (and so by the
ASGI middleware); the Node helper and the gateway follow the same rule.

A lease may have much less than its TTL left when it is handed over: a Begin
retried with its `request_id` gets its own attempt back with the original
`lease_expires_at`, which may be a quarter of the TTL away. And the
coordinator's clock may not be the caller's. So:

- **Time left**, counted from when the call that answered (Begin or Extend)
  was *sent*, on the monotonic clock: `lease_expires_at` minus the caller's
  wall clock when the answer came, at most the TTL (a replica clock ahead of
  ours says more than there is) and at least a quarter of it (the coordinator
  hands out no lease, and answers no Extend, with less: an answer that says
  less comes from a replica clock behind ours). Counting from the send makes
  the estimate short by the call's own duration: heartbeats come a little
  early, never late. A Begin that waited for another owner is counted from
  its send too, so its first heartbeat comes at once.
- **Heartbeat** a third of the time left after the send.
- **Each Extend's deadline** is half the time left when it is sent (at most the
  helper's configured timeout), so that a lost answer leaves time for another
  try; at least `MIN_EXTEND_TIMEOUT`, for a last try.
- **Failures** other than the attempt's end (UNAVAILABLE, a deadline) are
  retried every `RETRY_PAUSE` while time is left. Once the time left has run
  out without an Extend answering OK, the helper stops treating itself as
  the owner, as on LEASE_LOST: `attempt.lease_lost` is set and heartbeats
  stop (the Complete then says whether another attempt took over). An
  Extend that answers OK, even late, proves that no other attempt took over:
  it would have been answered LEASE_LOST.
"""

from dataclasses import dataclass

# The shortest Extend deadline: one round trip and an etcd commit.
MIN_EXTEND_TIMEOUT = 0.25

# The pause between a failed Extend and the next try.
RETRY_PAUSE = 0.1


def lease_left(lease_expires_at: float, answered_at: float, ttl: float) -> float:
    """Seconds of a lease left, counted from when the call that answered was
    sent: `lease_expires_at` (Unix seconds) minus the caller's wall clock
    `answered_at` when the answer came, within [TTL/4, TTL]."""
    return min(float(ttl), max(ttl / 4.0, lease_expires_at - answered_at))


@dataclass(frozen=True)
class Lease:
    """A lease as the caller counts it, on the monotonic clock."""

    sent_at: float
    ends_at: float

    @classmethod
    def answered(cls, sent_at: float, lease_expires_at: float, answered_at: float, ttl: float) -> "Lease":
        """The lease a call sent at `sent_at` (monotonic) was answered with:
        `lease_expires_at` (Unix seconds), read against the wall clock
        `answered_at` when the answer came."""
        return cls(sent_at, sent_at + lease_left(lease_expires_at, answered_at, ttl))

    def heartbeat_at(self) -> float:
        """When to send the next Extend (monotonic): a third of the time left after the send."""
        return self.sent_at + (self.ends_at - self.sent_at) / 3.0

    def extend_timeout(self, now: float, configured: float) -> float:
        """The deadline of an Extend sent at `now`: half the time left, at
        most `configured`, at least MIN_EXTEND_TIMEOUT."""
        return min(configured, max((self.ends_at - now) / 2.0, MIN_EXTEND_TIMEOUT))

    def over(self, now: float) -> bool:
        """Whether the time left has run out: without an Extend answered OK,
        another caller may have taken over."""
        return now >= self.ends_at

    def retry_pause(self, now: float) -> float:
        return max(0.0, min(RETRY_PAUSE, self.ends_at - now))


def first_heartbeat(lease_expires_at: float, sent_at: float, ttl: float, answered_at: float, now: float) -> float:
    """Seconds from monotonic `now` until the first Extend of a lease whose
    Begin was sent at monotonic `sent_at` and answered `lease_expires_at`
    when the caller's wall clock said `answered_at`; 0 means at once."""
    return max(0.0, Lease.answered(sent_at, lease_expires_at, answered_at, ttl).heartbeat_at() - now)


def timestamp_seconds(timestamp) -> float:
    """A protobuf Timestamp as Unix seconds (0 when unset: the quarter floor applies)."""
    return timestamp.seconds + timestamp.nanos / 1e9
