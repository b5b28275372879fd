// When the helper sends its heartbeats (Extend), and when it stops counting
// on its lease: the rule of the Python helper's heartbeat.py and the gateway.
//
// A lease may have much less than its TTL left when it is handed over: a
// Begin retried with its request_id gets its own attempt back with the
// original lease_expires_at, which may be a quarter of the TTL away. And the
// coordinator's clock may not be the caller's. So:
//
// - Time left, counted from when the call that answered (Begin or Extend)
//   was SENT, on the monotonic clock: lease_expires_at minus the caller's
//   wall clock when the answer came, at most the TTL (a replica clock ahead
//   of ours says more than there is) and at least a quarter of it (the
//   coordinator hands out no lease, and answers no Extend, with less: an
//   answer that says less comes from a replica clock behind ours). Counting
//   from the send makes the estimate short by the call's own duration:
//   heartbeats come a little early, never late. A Begin that waited for
//   another owner is counted from its send too, so its first heartbeat comes
//   at once.
// - Heartbeat a third of the time left after the send.
// - Each Extend's deadline is half the time left when it is sent (at most the
//   helper's timeoutMs), so that a lost answer leaves time for another try;
//   at least MIN_EXTEND_TIMEOUT_MS, for a last try.
// - Failures other than the attempt's end (UNAVAILABLE, a deadline) are
//   retried every RETRY_PAUSE_MS while time is left. Once the time left has
//   run out without an Extend answering OK, the helper stops treating itself
//   as the owner, as on LEASE_LOST: attempt.leaseLost is set and heartbeats
//   stop (the Complete then says whether another attempt took over). An
//   Extend that answers OK, even late, proves that no other attempt took
//   over: it would have been answered LEASE_LOST.
'use strict';

const { performance } = require('node:perf_hooks');

// The shortest Extend deadline: one round trip and an etcd commit.
const MIN_EXTEND_TIMEOUT_MS = 250;

// The pause between a failed Extend and the next try.
const RETRY_PAUSE_MS = 100;

/** The monotonic clock, in ms. */
const monotonic = () => performance.now();

/** Milliseconds of a lease left, counted from when the call that answered was sent. */
function leaseLeftMs(leaseExpiresAtMs, answeredAtMs, ttlMs) {
  return Math.min(ttlMs, Math.max(ttlMs / 4, leaseExpiresAtMs - answeredAtMs));
}

/** A lease as the caller counts it, on the monotonic clock (ms). */
class Lease {
  constructor(sentAt, endsAt) {
    this.sentAt = sentAt;
    this.endsAt = endsAt;
  }

  /**
   * The lease a call sent at monotonic `sentAt` was answered with:
   * `leaseExpiresAtMs` (Unix ms), read against the wall clock `answeredAtMs`
   * when the answer came.
   */
  static answered(sentAt, leaseExpiresAtMs, answeredAtMs, ttlMs) {
    return new Lease(sentAt, sentAt + leaseLeftMs(leaseExpiresAtMs, answeredAtMs, ttlMs));
  }

  /** When to send the next Extend: a third of the time left after the send. */
  heartbeatAt() {
    return this.sentAt + (this.endsAt - this.sentAt) / 3;
  }

  /** The deadline of an Extend sent at `now`: half the time left, within [MIN_EXTEND_TIMEOUT_MS, configuredMs]. */
  extendTimeoutMs(now, configuredMs) {
    return Math.min(configuredMs, Math.max((this.endsAt - now) / 2, MIN_EXTEND_TIMEOUT_MS));
  }

  /** Whether the time left has run out: without an Extend answered OK, another caller may have taken over. */
  over(now) {
    return now >= this.endsAt;
  }

  retryPauseMs(now) {
    return Math.max(0, Math.min(RETRY_PAUSE_MS, this.endsAt - now));
  }
}

/**
 * Milliseconds from monotonic `now` until the first Extend of a lease whose
 * Begin was sent at monotonic `sentAt` and answered `leaseExpiresAtMs` when
 * the caller's wall clock said `answeredAtMs`; 0 means at once.
 */
function firstHeartbeatMs(leaseExpiresAtMs, sentAt, ttlMs, answeredAtMs, now) {
  return Math.max(0, Lease.answered(sentAt, leaseExpiresAtMs, answeredAtMs, ttlMs).heartbeatAt() - now);
}

/** A decoded google.protobuf.Timestamp as Unix ms (0 when unset: the quarter floor applies). */
function timestampMs(timestamp) {
  return timestamp ? Number(timestamp.seconds) * 1000 + timestamp.nanos / 1e6 : 0;
}

module.exports = {
  Lease,
  MIN_EXTEND_TIMEOUT_MS,
  RETRY_PAUSE_MS,
  firstHeartbeatMs,
  leaseLeftMs,
  monotonic,
  timestampMs,
};
