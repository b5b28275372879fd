"""The asyncio helper against the real coordinator: the blocking helper's
behaviour, with async side effects and a heartbeat task."""

import asyncio
import time
import uuid

import pytest

from idempotency_client import AsyncCoordinator, KeyReusedError, PermanentError, ReplayedFailure
from idempotency_client.client import begin_request
from idempotency_client.heartbeat import timestamp_seconds


def new_key() -> str:
    return str(uuid.uuid4())


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_side_effect_runs_once_and_a_retry_gets_the_replay(server_address):
    async def scenario():
        coordinator = AsyncCoordinator(server_address, owner="aio-test")
        key, calls = new_key(), []

        async def charge(attempt):
            calls.append(attempt.fencing_token)
            return {"charged": 100}

        first = await coordinator.run("payments.create", key, charge, json_payload={"amount": 100})
        second = await coordinator.run("payments.create", key, charge, json_payload={"amount": 100})
        await coordinator.close()
        return first, second, calls

    first, second, calls = run(scenario())
    assert (first.replayed, second.replayed) == (False, True)
    assert second.response == first.response == b'{"charged": 100}'
    assert len(calls) == 1


def test_concurrent_tasks_run_the_side_effect_once(server_address):
    async def scenario():
        coordinator = AsyncCoordinator(server_address, owner="aio-test")
        key, calls = new_key(), []

        async def charge(attempt):
            calls.append(attempt)
            await asyncio.sleep(0.5)
            return b"receipt"

        outcomes = await asyncio.gather(
            *[coordinator.run("payments.create", key, charge, json_payload={"amount": 7}, wait=5) for _ in range(8)]
        )
        await coordinator.close()
        return outcomes, calls

    outcomes, calls = run(scenario())
    assert len(calls) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    assert all(o.response == b"receipt" for o in outcomes)


def test_a_reused_key_raises_naming_the_members_that_differ(server_address):
    async def scenario():
        coordinator = AsyncCoordinator(server_address)
        key = new_key()
        await coordinator.run("payments.create", key, _returns("ok"), json_payload={"amount": 100, "currency": "EUR"})
        try:
            await coordinator.run("payments.create", key, _fails, json_payload={"amount": 200, "currency": "EUR"})
        finally:
            await coordinator.close()

    with pytest.raises(KeyReusedError) as refused:
        run(scenario())
    assert refused.value.differing_members == ["amount"]


def test_errors_release_or_store_and_heartbeats_keep_a_long_side_effect(server_address):
    async def scenario():
        coordinator = AsyncCoordinator(server_address)
        released, stored, slow = new_key(), new_key(), new_key()
        with pytest.raises(RuntimeError):
            await coordinator.run("payments.create", released, _raises(RuntimeError("flaky")), payload="x")
        retried = []

        async def after_release(attempt):
            retried.append(attempt.recovered)
            return "ok"

        await coordinator.run("payments.create", released, after_release, payload="x")
        with pytest.raises(PermanentError):
            await coordinator.run("payments.create", stored, _raises(PermanentError("card_declined", "no")), payload="y")
        with pytest.raises(ReplayedFailure) as replayed:
            await coordinator.run("payments.create", stored, _fails, payload="y")

        # A 2 s lease, a 5 s side effect: heartbeats keep it; a rival waits instead of taking over.
        async def long(attempt):
            await asyncio.sleep(5)
            return "done"

        owner = asyncio.ensure_future(coordinator.run("payments.create", slow, long, payload="z", lease_ttl=2))
        await asyncio.sleep(3)
        rival = await coordinator.run("payments.create", slow, _fails, payload="z", wait=5, give_up_after=10)
        first = await owner
        await coordinator.close()
        return retried, replayed.value, first, rival

    retried, replayed, first, rival = run(scenario())
    assert retried[0] is not None and retried[0].last_error.code == "RuntimeError"
    assert replayed.code == "card_declined"
    assert (first.replayed, rival.replayed, rival.response) == (False, True, b"done")


def test_a_handed_back_attempt_is_extended_before_its_lease_runs_out(server_address, monkeypatch):
    """Issue 26 item 2: a Begin retried with its request_id gets its own
    attempt back with the original lease_expires_at, here a quarter of the
    4 s TTL (and 0.2 s) away; the heartbeat task used to wait a third of the
    TTL, past that deadline."""
    key, ttl = new_key(), 4

    async def scenario():
        coordinator = AsyncCoordinator(server_address, owner="aio-test")
        lost = begin_request("", "aio-test", "payments.create", key, b"cart", None, (), None, ttl, 0)
        first = (await coordinator.stub.Begin(lost, timeout=10)).acquired  # its answer "lost"
        deadline = timestamp_seconds(first.lease_expires_at)
        await asyncio.sleep(max(0.0, deadline - (ttl / 4 + 0.2) - time.time()))
        retry_ids = iter([uuid.UUID(lost.request_id)])
        real_uuid4 = uuid.uuid4
        monkeypatch.setattr(uuid, "uuid4", lambda: next(retry_ids, None) or real_uuid4())
        seen = {}

        async def work(attempt):
            seen["token"] = attempt.fencing_token
            seen["rival"] = asyncio.ensure_future(
                coordinator.run("payments.create", key, _returns("stolen"), payload=b"cart", wait=8)
            )
            await asyncio.sleep(max(0.0, deadline - 0.15 - time.time()))
            seen["lease_expires_at"] = timestamp_seconds((await coordinator.lookup("payments.create", key)).lease_expires_at)
            # Past the point where etcd frees a lock nobody extended (2 s of slack, 0.5 s revocation).
            await asyncio.sleep(max(0.0, deadline + 3 - time.time()))
            seen["lost"] = attempt.lease_lost.is_set()
            return "done"

        outcome = await coordinator.run("payments.create", key, work, payload=b"cart", lease_ttl=ttl, wait=0)
        rival = await seen["rival"]
        await coordinator.close()
        return first, deadline, seen, outcome, rival

    first, deadline, seen, outcome, rival = run(scenario())
    assert seen["token"] == first.fencing_token, "not handed back"
    assert seen["lease_expires_at"] > deadline, "not extended 0.15 s before the handed-back lease ran out"
    assert not seen["lost"]
    assert (outcome.response, outcome.replayed) == (b"done", False)
    assert (rival.response, rival.replayed) == (b"done", True)


def _returns(value):
    async def side_effect(attempt):
        return value

    return side_effect


def _raises(error):
    async def side_effect(attempt):
        raise error

    return side_effect


async def _fails(attempt):
    pytest.fail("ran twice")
