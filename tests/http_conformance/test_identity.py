"""Issue 27, 1: records are scoped by the caller. A replay never hands one
caller's answer to another, a different caller never learns that a key
exists (no 422), a keyed request without an identity is 401, and a route
without an identity setting does not start."""

import httpx

from calls import post, problem_type
from targets import Target, routes


def test_another_caller_with_the_same_key_gets_its_own_record(target, key):
    alice = post(target, "/payments", key, {"amount": 100}, auth="Bearer alice")
    bob = post(target, "/payments", key, {"amount": 100}, auth="Bearer bob")
    carol = post(target, "/payments", key, {"amount": 999}, auth="Bearer carol")
    alice_again = post(target, "/payments", key, {"amount": 100}, auth="Bearer alice")
    assert [a.status_code for a in (alice, bob, carol, alice_again)] == [201] * 4
    assert "idempotent-replayed" not in bob.headers, "bob got alice's answer"
    assert "idempotent-replayed" not in carol.headers, "another body is not a reused key for another caller"
    assert alice_again.headers["idempotent-replayed"] == "true" and alice_again.content == alice.content
    executions = target.executions(key=f'"{key}"')
    assert [e["authorization"] for e in executions] == ["Bearer alice", "Bearer bob", "Bearer carol"]


def test_a_keyed_request_without_an_identity_is_401_and_claims_nothing(target, key):
    for auth in (None, ""):
        refused = post(target, "/payments", key, auth=auth)
        assert refused.status_code == 401, refused.text
        assert problem_type(refused) == "identity-missing"
        assert "authorization" in refused.json()["detail"].lower()
        assert refused.headers["cache-control"] == "no-store"
    # The key's rules come first: no key where one is required is still 400.
    assert problem_type(post(target, "/payments", None, auth=None)) == "idempotency-key-missing"
    assert post(target, "/payments", key).status_code == 201
    assert len(target.executions(key=f'"{key}"')) == 1


def test_an_identity_header_scopes_the_optional_route(target, key):
    first = post(target, "/optional/payments", key, auth=None, x_api_key="team-a")
    second = post(target, "/optional/payments", key, auth=None, x_api_key="team-b")
    assert (first.status_code, second.status_code) == (201, 201)
    assert "idempotent-replayed" not in second.headers
    assert problem_type(post(target, "/optional/payments", key, auth=None)) == "identity-missing"
    unkeyed = post(target, "/optional/payments", None, {"note": key}, auth=None)
    assert unkeyed.status_code == 201, "without a key the optional route needs no identity"
    assert [e["api_key"] for e in target.executions(key=f'"{key}"')] == ["team-a", "team-b"]


def test_identity_none_shares_a_routes_keys_between_callers(target, key):
    alice = post(target, "/shared/payments", key, auth="Bearer alice")
    bob = post(target, "/shared/payments", key, auth=None)
    assert (alice.status_code, bob.status_code) == (201, 201)
    assert bob.headers["idempotent-replayed"] == "true"
    assert len(target.executions(key=f'"{key}"')) == 1


def test_a_route_without_an_identity_setting_does_not_start(target):
    edge = Target(target.name, target.coordinator)
    try:
        printed = edge.refused(routes(target.name, drop="identity"))
    finally:
        edge.stop()
    assert "identity" in printed, printed


def test_a_repeated_identity_field_is_one_identity_of_all_its_values(target, key):
    """Every edge reads every field of the identity header, joined with ", ":
    two Authorization fields are another caller than their first alone (Node
    keeps only the first Authorization in `req.headers`)."""
    first = post(target, "/payments", key, auth="Bearer alice")
    headers = [
        ("content-type", "application/json"),
        ("idempotency-key", f'"{key}"'),
        ("authorization", "Bearer alice"),
        ("authorization", "Bearer x"),
    ]
    both = httpx.post(target.url("/payments"), content=b'{"amount": 100}', headers=headers, timeout=30)
    assert (first.status_code, both.status_code) == (201, 201), both.text
    assert "idempotent-replayed" not in both.headers, "two fields were read as their first alone"
    assert len(target.executions(key=f'"{key}"')) == 2
