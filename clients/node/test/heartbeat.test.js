// The heartbeat rule (heartbeat.js) on its own: when the first Extend goes
// out, each Extend's deadline, and when the time left has run out (issue 26
// item 2). No server needed.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Lease, MIN_EXTEND_TIMEOUT_MS, firstHeartbeatMs, leaseLeftMs, timestampMs } = require('../heartbeat');

const SENT = 1_000_000; // monotonic ms when the Begin was sent
const WALL = 1_800_000_000_000; // the caller's wall clock (ms) when its answer came
const near = (actual, expected) => assert.ok(Math.abs(actual - expected) < 1e-6, `${actual} is not ${expected}`);

test('a full lease is extended a third of its TTL after the send', () => {
  near(firstHeartbeatMs(WALL + 30_000, SENT, 30_000, WALL, SENT), 10_000);
  near(firstHeartbeatMs(WALL + 30_000, SENT, 30_000, WALL, SENT + 4_000), 6_000);
});

test('a handed-back lease with a quarter left is extended within that quarter', () => {
  // The case: 7.5 s of a 30 s lease left. The old helper waited 10 s.
  near(firstHeartbeatMs(WALL + 7_500, SENT, 30_000, WALL, SENT), 2_500);
  near(Lease.answered(SENT, WALL + 7_500, WALL, 30_000).endsAt, SENT + 7_500);
});

test('the time left is counted from the send, so a slow answer makes it earlier', () => {
  near(Lease.answered(SENT, WALL + 9_000, WALL, 30_000).endsAt, SENT + 9_000);
  near(firstHeartbeatMs(WALL + 9_000, SENT, 30_000, WALL, SENT + 2_000), 1_000);
  // A Begin that waited longer than a third of it: the first Extend goes at once.
  assert.equal(firstHeartbeatMs(WALL + 30_000, SENT, 30_000, WALL, SENT + 12_000), 0);
});

test('a skewed replica clock is bounded by the TTL and a quarter of it', () => {
  assert.equal(leaseLeftMs(WALL + 90_000, WALL, 30_000), 30_000); // a replica 60 s ahead
  assert.equal(leaseLeftMs(WALL - 30_000, WALL, 30_000), 7_500); // 60 s behind: a quarter
  near(firstHeartbeatMs(WALL - 30_000, SENT, 30_000, WALL, SENT), 2_500);
  assert.equal(leaseLeftMs(timestampMs(null), WALL, 2_000), 500); // unset
  assert.equal(timestampMs({ seconds: '1800000000', nanos: 250_000_000 }), WALL + 250);
});

test("an Extend's deadline is half the time left, at most the configured timeout", () => {
  const lease = Lease.answered(SENT, WALL + 30_000, WALL, 30_000);
  assert.equal(lease.extendTimeoutMs(SENT + 10_000, 10_000), 10_000);
  assert.equal(lease.extendTimeoutMs(SENT + 10_000, 5_000), 5_000);
  near(lease.extendTimeoutMs(SENT + 24_000, 10_000), 3_000);
  // A last try, when little or nothing is left, still gets a round trip.
  assert.equal(lease.extendTimeoutMs(SENT + 29_900, 10_000), MIN_EXTEND_TIMEOUT_MS);
  assert.equal(lease.extendTimeoutMs(SENT + 31_000, 10_000), MIN_EXTEND_TIMEOUT_MS);
});

test('the lease is over when its time left has run out', () => {
  const lease = Lease.answered(SENT, WALL + 2_000, WALL, 4_000);
  assert.equal(lease.over(SENT + 1_999), false);
  assert.equal(lease.over(SENT + 2_000), true);
  near(lease.retryPauseMs(SENT + 1_950), 50);
  near(lease.retryPauseMs(SENT + 1_000), 100);
});

// Issue 27, 6: on the shortest leases (2 s, or the quarter of one handed back)
// the Extend sent at the heartbeat gives up before the lease ends, so its
// answer, or a retry's, still counts.
test("a heartbeat's Extend deadline is shorter than the time left on short leases", () => {
  for (const lease of [Lease.answered(SENT, WALL + 2_000, WALL, 2_000), Lease.answered(SENT, WALL + 500, WALL, 2_000)]) {
    const at = lease.heartbeatAt();
    assert.ok(lease.extendTimeoutMs(at, 10_000) < lease.endsAt - at);
  }
});
