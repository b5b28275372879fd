"""The helper against the real coordinator and a real etcd."""

import json
import pathlib
import threading
import time
import uuid

import grpc
import pytest

from idempotency.v1 import coordinator_pb2 as pb
from idempotency_client import (
    InvalidRequestError,
    KeyReusedError,
    LeaseLostError,
    PermanentError,
    ReplayedFailure,
    UnavailableError,
)
from idempotency_client.client import begin_request
from idempotency_client.heartbeat import timestamp_seconds

GOLDEN = pathlib.Path(__file__).resolve().parents[3] / "testdata" / "fingerprints.json"


def new_key() -> str:
    return str(uuid.uuid4())


def test_the_side_effect_runs_once_and_a_retry_gets_the_replay(coordinator):
    key, calls = new_key(), []

    def charge(attempt):
        calls.append(attempt.fencing_token)
        return {"charge": "ch_1", "token": attempt.fencing_token}

    first = coordinator.run("payments.create", key, charge, json_payload={"amount": 100})
    retry = coordinator.run("payments.create", key, charge, json_payload={"amount": 100})
    assert len(calls) == 1
    assert not first.replayed and retry.replayed
    assert retry.response == first.response and retry.content_type == "application/json"


def test_a_reused_key_with_another_request_raises_and_runs_nothing(coordinator):
    key = new_key()
    coordinator.run("payments.create", key, lambda a: "ok", json_payload={"amount": 100})
    with pytest.raises(KeyReusedError) as refused:
        coordinator.run("payments.create", key, lambda a: pytest.fail("ran twice"), json_payload={"amount": 200})
    assert refused.value.differing_members == ["amount"]


def test_concurrent_callers_run_the_side_effect_once(coordinator):
    key, calls, outcomes = new_key(), [], []

    def charge(attempt):
        calls.append(attempt)
        time.sleep(0.5)
        return b"receipt"

    def caller():
        outcomes.append(coordinator.run("payments.create", key, charge, payload=b"cart", wait=5))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert [o.response for o in outcomes] == [b"receipt"] * 8
    assert sum(o.replayed for o in outcomes) == 7


def test_an_exception_releases_the_key_and_the_next_owner_is_told(coordinator):
    key = new_key()

    def flaky(attempt):
        raise TimeoutError("provider timed out")

    with pytest.raises(TimeoutError):
        coordinator.run("payments.create", key, flaky, payload=b"cart")
    seen = []
    coordinator.run("payments.create", key, lambda a: seen.append(a) or "ok", payload=b"cart")
    (attempt,) = seen
    assert attempt.attempt == 2
    assert attempt.recovered.reason == pb.RECOVERY_REASON_RELEASED
    assert attempt.recovered.last_error.code == "TimeoutError"


def test_a_permanent_error_is_stored_and_replayed(coordinator):
    key = new_key()

    def declined(attempt):
        raise PermanentError("card_declined", "insufficient funds")

    with pytest.raises(PermanentError):
        coordinator.run("payments.create", key, declined, payload=b"cart")
    with pytest.raises(ReplayedFailure) as replay:
        coordinator.run("payments.create", key, lambda a: pytest.fail("ran again"), payload=b"cart")
    assert replay.value.code == "card_declined"


def test_heartbeats_keep_a_long_side_effect_alive(coordinator):
    key, contender = new_key(), {}

    def long_job(attempt):
        def try_to_take_over():
            try:
                coordinator.run("payments.create", key, lambda a: "stolen", payload=b"cart", wait=0, give_up_after=0)
                contender["result"] = "acquired"
            except UnavailableError as error:
                contender["result"] = error.reason

        time.sleep(3.5)  # well past the 2 s lease: only the heartbeats keep it
        thief = threading.Thread(target=try_to_take_over)
        thief.start()
        thief.join()
        time.sleep(1.0)
        assert not attempt.lease_lost.is_set()
        return "done"

    outcome = coordinator.run("payments.create", key, long_job, payload=b"cart", lease_ttl=2)
    assert outcome.response == b"done"
    assert contender["result"] == "IN_PROGRESS"


def test_a_lost_lease_is_reported_and_the_new_owner_wins(coordinator):
    key = new_key()

    def stalled(attempt):
        time.sleep(2.5)  # no heartbeat: the 2 s lease lapses
        second = coordinator.run("payments.create", key, lambda a: "second owner", payload=b"cart")
        assert second.response == b"second owner"
        return "first owner"

    with pytest.raises(LeaseLostError):
        coordinator.run("payments.create", key, stalled, payload=b"cart", lease_ttl=2, heartbeat=False)
    replay = coordinator.run("payments.create", key, lambda a: pytest.fail("ran again"), payload=b"cart")
    assert replay.response == b"second owner"


def test_the_coordinator_agrees_with_the_golden_fingerprints(coordinator):
    vectors = json.loads(GOLDEN.read_text())["vectors"]
    for vector in vectors:
        key = new_key()
        payload = pb.Payload(
            data=vector["payload"].encode(),
            canonicalization=pb.CANONICALIZATION_JSON if vector["canonicalization"] == "JSON" else pb.CANONICALIZATION_RAW,
            ignore_fields=vector["ignore_fields"],
        )
        coordinator._stub.Begin(pb.BeginRequest(namespace="golden", key=key, payload=payload))
        record = coordinator.lookup("golden", key)
        assert record.fingerprint.hex() == vector["sha256"], vector["name"]
    refused = json.loads(GOLDEN.read_text())["refused"]
    for vector in refused:
        payload = pb.Payload(
            data=vector["payload"].encode(), canonicalization=pb.CANONICALIZATION_JSON, ignore_fields=vector["ignore_fields"]
        )
        with pytest.raises(grpc.RpcError) as refusal:
            coordinator._stub.Begin(pb.BeginRequest(namespace="golden", key=new_key(), payload=payload))
        assert refusal.value.code() == grpc.StatusCode.INVALID_ARGUMENT, vector["name"]
        assert f"the number at {json.dumps(vector['pointer'])}" in refusal.value.details(), vector["name"]


def test_two_accounts_a_double_cannot_tell_apart_are_refused_not_replayed(coordinator):
    """Issue 26: both ids were fingerprinted as 1234567890123456800, so the
    second account's request was answered with the first account's result."""
    key, calls = new_key(), []
    for account in (1234567890123456789, 1234567890123456788):
        with pytest.raises(InvalidRequestError) as refused:
            coordinator.run("payments.create", key, lambda a: calls.append(account) or "charged", json_payload={"account_id": account})
        assert '"/account_id"' in refused.value.violations["payload.data"]
        assert "send it as a string" in refused.value.violations["payload.data"]
    assert calls == []
    # Sent as a string, the id is an ordinary member.
    outcome = coordinator.run("payments.create", key, lambda a: "charged", json_payload={"account_id": "1234567890123456789"})
    assert outcome.response == b"charged" and not outcome.replayed


def test_the_decorator_form_runs_once_per_key(coordinator):
    calls = []

    @coordinator.idempotent("orders.create", key=lambda order: order["id"], json_payload=lambda order: order)
    def create_order(attempt, order):
        calls.append(attempt.fencing_token)
        return {"order": order["id"], "token": attempt.fencing_token}

    order = {"id": new_key(), "items": [1, 2]}
    first, retry = create_order(order), create_order(dict(order))
    assert len(calls) == 1 and retry.replayed and retry.response == first.response


def test_a_handed_back_attempt_is_extended_before_its_lease_runs_out(coordinator, monkeypatch):
    """Issue 26 item 2: a Begin retried with its request_id gets its own
    attempt back with the original lease_expires_at, here a quarter of the
    4 s TTL (and 0.2 s) away. The first Extend used to come a third of the
    TTL after the answer, past that deadline."""
    key, ttl = new_key(), 4
    lost = begin_request("", "pytest", "payments.create", key, b"cart", None, (), None, ttl, 0)
    first = coordinator._stub.Begin(lost, timeout=10).acquired  # its answer "lost"
    deadline = timestamp_seconds(first.lease_expires_at)
    time.sleep(max(0.0, deadline - (ttl / 4 + 0.2) - time.time()))
    retry_ids = iter([uuid.UUID(lost.request_id)])
    real_uuid4 = uuid.uuid4
    monkeypatch.setattr(uuid, "uuid4", lambda: next(retry_ids, None) or real_uuid4())
    seen, rival = {}, {}

    def take_over():
        rival["outcome"] = coordinator.run("payments.create", key, lambda a: "stolen", payload=b"cart", wait=8)

    def work(attempt):
        seen["token"] = attempt.fencing_token
        seen["thief"] = threading.Thread(target=take_over)
        seen["thief"].start()
        time.sleep(max(0.0, deadline - 0.15 - time.time()))
        seen["lease_expires_at"] = timestamp_seconds(coordinator.lookup("payments.create", key).lease_expires_at)
        # Past the point where etcd frees a lock nobody extended (2 s of slack, 0.5 s revocation).
        time.sleep(max(0.0, deadline + 3 - time.time()))
        seen["lost"] = attempt.lease_lost.is_set()
        return "done"

    outcome = coordinator.run("payments.create", key, work, payload=b"cart", lease_ttl=ttl, wait=0)
    seen["thief"].join()
    assert seen["token"] == first.fencing_token, "not handed back"
    assert seen["lease_expires_at"] > deadline, "not extended 0.15 s before the handed-back lease ran out"
    assert not seen["lost"]
    assert (outcome.response, outcome.replayed) == (b"done", False)
    assert (rival["outcome"].response, rival["outcome"].replayed) == (b"done", True)
