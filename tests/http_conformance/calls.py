"""How the cases call a target: POST with a key, a caller and test headers,
and read what came back."""

import json
import time
import uuid

import httpx


def post(target, path, key=None, body=None, auth="Bearer alice", content=None, **headers):
    """POSTs `body` as JSON (or `content` as is) with `key` as a Structured
    Field string and `auth` as Authorization; test headers as x_test_delay=1."""
    sent = {name.replace("_", "-"): str(value) for name, value in headers.items()}
    if content is None:
        content = json.dumps(body if body is not None else {"amount": 100}).encode()
        sent.setdefault("content-type", "application/json")
    if key is not None:
        sent["idempotency-key"] = f'"{key}"'
    if auth is not None:
        sent["authorization"] = auth
    return httpx.post(target.url(path), content=content, headers=sent, timeout=30)


def problem_type(answer) -> str:
    assert answer.headers.get("content-type") == "application/problem+json", (answer.status_code, answer.text)
    return answer.json()["type"].removeprefix("urn:idempotency-gateway:")


def until_protected(target, seconds=20.0):
    """Waits until the target reaches the coordinator again after a cut (a
    gRPC channel backs off before it reconnects)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if post(target, "/payments", key=f"probe-{uuid.uuid4()}").status_code == 201:
            return
        time.sleep(0.2)
    raise AssertionError(f"{target.name} did not reach the coordinator again within {seconds}s")
