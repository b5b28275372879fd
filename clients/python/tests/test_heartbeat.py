"""The heartbeat rule (`heartbeat.py`) on its own: when the first Extend goes
out, each Extend's deadline, and when the time left has run out (issue 26
item 2). No server needed."""

import pytest

from idempotency_client.heartbeat import MIN_EXTEND_TIMEOUT, Lease, first_heartbeat, lease_left

SENT = 1000.0  # monotonic seconds when the Begin was sent
WALL = 1_800_000_000.0  # the caller's wall clock when its answer came


def test_a_full_lease_is_extended_a_third_of_its_ttl_after_the_send():
    assert first_heartbeat(WALL + 30, SENT, 30, WALL, SENT) == pytest.approx(10)
    # Later on the monotonic clock: the same instant, less of a wait.
    assert first_heartbeat(WALL + 30, SENT, 30, WALL, SENT + 4) == pytest.approx(6)


def test_a_handed_back_lease_with_a_quarter_left_is_extended_within_that_quarter():
    # The case: 7.5 s of a 30 s lease left. The old helpers waited 10 s.
    assert first_heartbeat(WALL + 7.5, SENT, 30, WALL, SENT) == pytest.approx(2.5)
    lease = Lease.answered(SENT, WALL + 7.5, WALL, 30)
    assert lease.ends_at == pytest.approx(SENT + 7.5)


def test_the_time_left_is_counted_from_the_send_so_a_slow_answer_makes_it_earlier():
    # Answered 2 s after it was sent, with 9 s left then: counted as 9 s from the send.
    assert Lease.answered(SENT, WALL + 9, WALL, 30).ends_at == pytest.approx(SENT + 9)
    assert first_heartbeat(WALL + 9, SENT, 30, WALL, SENT + 2) == pytest.approx(1)
    # A Begin that waited longer than a third of it: the first Extend goes at once.
    assert first_heartbeat(WALL + 30, SENT, 30, WALL, SENT + 12) == 0


def test_a_skewed_replica_clock_is_bounded_by_the_ttl_and_a_quarter_of_it():
    # A replica 60 s ahead says 90 s are left of a 30 s lease: no more than the TTL.
    assert lease_left(WALL + 90, WALL, 30) == 30
    # A replica 60 s behind says the lease ended: the coordinator hands out no
    # lease with under a quarter left, so a quarter is counted.
    assert lease_left(WALL - 30, WALL, 30) == 7.5
    assert first_heartbeat(WALL - 30, SENT, 30, WALL, SENT) == pytest.approx(2.5)
    # An unset timestamp (0) likewise.
    assert lease_left(0, WALL, 2) == 0.5


def test_an_extend_deadline_is_half_the_time_left_at_most_the_configured_timeout():
    lease = Lease.answered(SENT, WALL + 30, WALL, 30)
    assert lease.extend_timeout(SENT + 10, 10.0) == 10.0
    assert lease.extend_timeout(SENT + 10, 5.0) == 5.0
    assert lease.extend_timeout(SENT + 24, 10.0) == pytest.approx(3)
    # A last try, when little or nothing is left, still gets a round trip.
    assert lease.extend_timeout(SENT + 29.9, 10.0) == MIN_EXTEND_TIMEOUT
    assert lease.extend_timeout(SENT + 31, 10.0) == MIN_EXTEND_TIMEOUT


def test_the_lease_is_over_when_its_time_left_has_run_out():
    lease = Lease.answered(SENT, WALL + 2, WALL, 4)
    assert not lease.over(SENT + 1.99)
    assert lease.over(SENT + 2)
    assert lease.retry_pause(SENT + 1.95) == pytest.approx(0.05)
    assert lease.retry_pause(SENT + 1) == pytest.approx(0.1)


def test_a_heartbeats_extend_deadline_is_shorter_than_the_time_left_on_short_leases():
    """Issue 27, 6: on the shortest leases (2 s, or the quarter of one handed
    back) the Extend sent at the heartbeat gives up before the lease ends, so
    its answer, or a retry's, still counts."""
    for lease in (Lease.answered(SENT, WALL + 2, WALL, 2), Lease.answered(SENT, WALL + 0.5, WALL, 2)):
        at = lease.heartbeat_at()
        assert lease.extend_timeout(at, 10.0) < lease.ends_at - at
