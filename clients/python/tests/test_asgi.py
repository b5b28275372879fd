"""The ASGI middleware with the real framework (Starlette) in a real ASGI
server (uvicorn, on a loopback port), against the real coordinator, driven
by a real HTTP client (httpx). The app counts its charges per key."""

import asyncio
import collections
import json
import socket
import threading
import time
import uuid

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute

from idempotency_client import AsyncCoordinator, Coordinator
from idempotency_client.asgi import IdempotencyMiddleware, Route, scoped_namespace
from idempotency_client.heartbeat import timestamp_seconds


def caller(scope) -> str:
    """These tests' caller identity: an app's own authentication would say who called."""
    return "test-caller"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PaymentsApp:
    """POST /payments charges; x-test-delay (s), x-test-status and
    x-test-response-bytes steer one request, as in the Rust gateway tests."""

    def __init__(self):
        self.charges = collections.Counter()
        self.requests = 0
        self.tokens = []

    async def pay(self, request: Request):
        self.requests += 1
        body = await request.json()
        await asyncio.sleep(float(request.headers.get("x-test-delay", "0")))
        if "x-test-status" in request.headers:
            status = int(request.headers["x-test-status"])
            return JSONResponse({"error": f"refused with {status}"}, status_code=status)
        key = request.headers.get("idempotency-key", "")
        self.charges[key] += 1
        self.tokens.append(request.headers.get("idempotency-fencing-token"))
        charge = f"ch_{uuid.uuid4().hex[:12]}"
        padding = "x" * int(request.headers.get("x-test-response-bytes", "0"))
        return JSONResponse(
            {"id": charge, "amount": body.get("amount"), "padding": padding},
            status_code=201,
            headers={"location": f"/payments/{charge}", "x-served-at": str(time.time())},
        )

    def asgi(self, coordinator_address: str):
        app = Starlette(routes=[StarletteRoute(path, self.pay, methods=["POST"]) for path in ("/payments", "/waiting/payments")])
        routes = [
            Route(methods=["POST"], path="/payments", namespace="asgi.payments", identity=caller, lease_ttl=2,
                  ignore_fields=["/sent_at"], retryable_4xx=[429], max_request_bytes=4096,
                  max_stored_response_bytes=8192),
            Route(methods=["POST"], path="/waiting/payments", namespace="asgi.waiting", identity=caller, wait=10),
        ]
        return IdempotencyMiddleware(app, AsyncCoordinator(coordinator_address, owner="asgi-test"), routes)


class Served:
    """uvicorn serving an ASGI app on a free loopback port, in a thread."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def payments(server_address):
    app = PaymentsApp()
    served = Served(app.asgi(server_address))
    yield app, served
    served.stop()


def pay(served, key, body, path="/payments", **headers):
    all_headers = {"content-type": "application/json", **headers}
    if key is not None:
        all_headers["idempotency-key"] = f'"{key}"'
    return httpx.post(served.url(path), content=json.dumps(body), headers=all_headers, timeout=30)


def test_a_double_submit_charges_once_and_replays_the_created_answer(payments):
    app, served = payments
    key = str(uuid.uuid4())
    first = pay(served, key, {"amount": 100, "sent_at": "09:00"})
    second = pay(served, key, {"sent_at": "09:05", "amount": 100})
    assert (first.status_code, second.status_code) == (201, 201)
    assert "idempotent-replayed" not in first.headers and second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert second.headers["location"] == first.headers["location"]
    assert first.headers["cache-control"] == second.headers["cache-control"] == "no-store"
    assert "x-served-at" in first.headers and "x-served-at" not in second.headers
    assert app.charges[f'"{key}"'] == 1 and app.requests == 1
    assert app.tokens[0] is not None and int(app.tokens[0]) > 0


def test_a_reused_key_is_422_naming_the_member_and_never_runs(payments):
    app, served = payments
    key = str(uuid.uuid4())
    pay(served, key, {"amount": 100, "currency": "EUR"})
    reused = pay(served, key, {"amount": 200, "currency": "EUR"})
    assert reused.status_code == 422
    assert reused.headers["content-type"] == "application/problem+json"
    document = reused.json()
    assert document["type"] == "urn:idempotency-gateway:idempotency-key-reused"
    assert document["differing_members"] == ["amount"]
    assert app.requests == 1


def test_a_json_number_a_double_cannot_hold_is_400_naming_it_and_never_runs(payments):
    """Issue 26: two account ids (or prices) that a double cannot tell apart
    were fingerprinted alike, so the second request got the first one's answer."""
    app, served = payments
    key = str(uuid.uuid4())
    for body, pointer in [
        ('{"account_id": 1234567890123456789}', "/account_id"),
        ('{"account_id": 1234567890123456788}', "/account_id"),
        ('{"amount": 0.10000000000000000001}', "/amount"),
        ('{"amount": 0.1, "sent_at": 1234567890123456789}', "/sent_at"),
    ]:
        headers = {"content-type": "application/json", "idempotency-key": f'"{key}"'}
        refused = httpx.post(served.url("/payments"), content=body, headers=headers, timeout=30)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        document = refused.json()
        assert document["type"] == "urn:idempotency-gateway:json-number-inexact"
        assert document["pointer"] == pointer and "send it as a string" in document["detail"]
    assert app.requests == 0
    assert pay(served, key, {"account_id": "1234567890123456789", "amount": 0.1}).status_code == 201


def test_missing_and_malformed_keys_are_400_naming_the_header(payments):
    app, served = payments
    missing = pay(served, None, {"amount": 1})
    malformed = httpx.post(served.url("/payments"), content=b"{}", headers={"idempotency-key": "bare-token"})
    for answer, name in ((missing, "idempotency-key-missing"), (malformed, "idempotency-key-malformed")):
        assert answer.status_code == 400
        assert answer.json()["type"] == f"urn:idempotency-gateway:{name}"
        assert answer.json()["header"] == "Idempotency-Key"
    assert app.requests == 0


def test_a_retry_while_the_first_runs_is_409_or_waits(payments):
    app, served = payments
    key = str(uuid.uuid4())
    with httpx.Client(timeout=30) as client:
        def first(path):
            return client.post(served.url(path), content=b'{"amount":5}', headers={
                "content-type": "application/json", "idempotency-key": f'"{key}"', "x-test-delay": "1.5"})

        for path, expected in (("/payments", 409), ("/waiting/payments", 201)):
            running = threading.Thread(target=first, args=(path,))
            running.start()
            time.sleep(0.5)
            retry = pay(served, key, {"amount": 5}, path=path)
            running.join()
            assert retry.status_code == expected, retry.text
            if expected == 409:
                assert retry.json()["type"] == "urn:idempotency-gateway:request-in-progress"
                assert int(retry.headers["retry-after"]) >= 1
            else:
                assert retry.headers["idempotent-replayed"] == "true"
    assert app.charges[f'"{key}"'] == 2, "one charge per route (two namespaces)"


def test_concurrent_retries_charge_once(payments):
    app, served = payments
    key = str(uuid.uuid4())
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(pay(served, key, {"amount": 9}, **{"x-test-delay": "0.5"})))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    executed = [a for a in answers if a.status_code == 201 and "idempotent-replayed" not in a.headers]
    assert len(executed) == 1, [a.status_code for a in answers]
    assert all(a.status_code in (201, 409) for a in answers)
    assert app.charges[f'"{key}"'] == 1


def test_a_500_or_a_retryable_429_releases_the_key_and_a_final_4xx_is_replayed(payments):
    app, served = payments
    for status in (500, 429):
        key = str(uuid.uuid4())
        failed = pay(served, key, {"amount": 3}, **{"x-test-status": str(status)})
        assert failed.status_code == status and failed.headers["cache-control"] == "no-store"
        retried = pay(served, key, {"amount": 3})
        assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
        assert app.charges[f'"{key}"'] == 1
    declined_key = str(uuid.uuid4())
    declined = pay(served, declined_key, {"amount": 3}, **{"x-test-status": "402"})
    again = pay(served, declined_key, {"amount": 3})
    assert (declined.status_code, again.status_code, again.headers["idempotent-replayed"]) == (402, 402, "true")


def test_oversized_bodies_and_answers(payments):
    app, served = payments
    big = pay(served, str(uuid.uuid4()), {"note": "x" * 5000})
    assert big.status_code == 413 and "4096" in big.json()["detail"]
    assert app.requests == 0
    key = str(uuid.uuid4())
    large = pay(served, key, {"amount": 1}, **{"x-test-response-bytes": "20000"})
    assert large.status_code == 201 and len(large.content) > 20000
    retry = pay(served, key, {"amount": 1})
    assert retry.status_code == 409
    assert retry.json()["type"] == "urn:idempotency-gateway:response-not-replayable"
    assert "201" in retry.json()["detail"]
    assert app.charges[f'"{key}"'] == 1


class LosesFirstBeginAnswer(AsyncCoordinator):
    """A coordinator whose first Begin is answered but the answer lost, and
    sent again (the same request_id) when only a quarter of the lease and
    0.2 s are left, as a gRPC retry after UNAVAILABLE would: the middleware
    is handed its own attempt back, with the original lease_expires_at."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = None  # of the lease handed back, once known

    @property
    def stub(self):
        return _LossyStub(super().stub, self)


class _LossyStub:
    def __init__(self, stub, coordinator: LosesFirstBeginAnswer):
        self._stub, self._coordinator = stub, coordinator

    def __getattr__(self, name):
        return getattr(self._stub, name)

    async def Begin(self, request, **kwargs):
        if self._coordinator.deadline is None:
            first = await self._stub.Begin(request, **kwargs)
            self._coordinator.deadline = deadline = timestamp_seconds(first.acquired.lease_expires_at)
            await asyncio.sleep(max(0.0, deadline - (request.lease_ttl.seconds / 4 + 0.2) - time.time()))
        return await self._stub.Begin(request, **kwargs)


def test_a_handed_back_attempt_is_extended_before_its_lease_runs_out(server_address):
    """Issue 26 item 2: the middleware's Begin is handed back its own attempt
    with a quarter of the 4 s lease (and 0.2 s) left. Its first Extend used
    to come a third of the TTL after the answer, past that deadline."""
    app = PaymentsApp()
    coordinator = LosesFirstBeginAnswer(server_address, owner="asgi-test")
    routes = [Route(methods=["POST"], path="/payments", namespace="asgi.handback", identity=caller, lease_ttl=4, wait=10)]
    inner = Starlette(routes=[StarletteRoute("/payments", app.pay, methods=["POST"])])
    served = Served(IdempotencyMiddleware(inner, coordinator, routes))
    key, answers = str(uuid.uuid4()), {}
    try:
        # The app works until well past the point where etcd frees a lock nobody extended.
        first = threading.Thread(target=lambda: answers.update(first=pay(served, key, {"amount": 7}, **{"x-test-delay": "4.5"})))
        first.start()
        while coordinator.deadline is None:
            time.sleep(0.01)
        deadline = coordinator.deadline
        time.sleep(max(0.0, deadline - 0.15 - time.time()))
        looking = Coordinator(server_address)
        namespace = scoped_namespace(routes[0], "custom", b"test-caller")
        seen = timestamp_seconds(looking.lookup(namespace, key).lease_expires_at)
        looking.close()
        rival = pay(served, key, {"amount": 7})  # the route waits for the first
        first.join()
    finally:
        served.stop()
    assert seen > deadline, "not extended 0.15 s before the handed-back lease ran out"
    assert answers["first"].status_code == 201 and "idempotent-replayed" not in answers["first"].headers
    assert (rival.status_code, rival.headers.get("idempotent-replayed")) == (201, "true")
    assert app.charges[f'"{key}"'] == 1


def test_with_the_coordinator_down_nothing_runs():
    app = PaymentsApp()
    served = Served(app.asgi(f"127.0.0.1:{free_port()}"))
    try:
        refused = pay(served, str(uuid.uuid4()), {"amount": 1})
        assert refused.status_code == 503
        assert refused.json()["type"] == "urn:idempotency-gateway:coordinator-unavailable"
        assert int(refused.headers["retry-after"]) >= 1
        assert app.requests == 0
    finally:
        served.stop()


def test_a_route_needs_an_identity_and_room_for_its_scope():
    """Issue 27, 1: no route runs without saying who its caller is."""
    for identity, says in ((None, "identity is required"), ("cookie", "identity is required"),
                           ("header:", "identity is required"), ("header:X Key", "identity is required")):
        with pytest.raises(ValueError, match=says):
            Route(methods=["POST"], path="/payments", namespace="payments", identity=identity)
    with pytest.raises(ValueError, match="namespace is 96 bytes.*128-byte namespace limit"):
        Route(methods=["POST"], path="/payments", namespace="n" * 96, identity="authorization")
    Route(methods=["POST"], path="/payments", namespace="n" * 128, identity="none")
    Route(methods=["POST"], path="/payments", namespace="n" * 95, identity="header:X-Api-Key")


def test_the_scoped_namespace_is_the_one_every_edge_computes():
    """The same vector as clients/node/test/express.test.js: SHA-256 of
    source, NUL, value; its first 16 bytes in hex."""
    route = Route(methods=["POST"], path="/payments", namespace="payments.create", identity="authorization")
    assert scoped_namespace(route, "authorization", b"Bearer alice") == "payments.create:8c85c84b1c7184d55e6bd2a4d7089d7f"
