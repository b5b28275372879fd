"""Issue 27, 2: the service sees a fencing token (and Idempotency-Recovered)
only from an acquired attempt, never from a client, on every path; and no
form of a protected path reaches the service unprotected."""

import uuid

from calls import post, until_protected

SPOOFED = {"idempotency_fencing_token": "18446744073709551615", "idempotency_recovered": "true"}


def test_a_client_never_sets_the_fencing_token_or_recovered(target, key):
    marker = str(uuid.uuid4())
    post(target, "/unprotected", None, {"marker": marker}, **SPOOFED)
    post(target, "/optional/payments", None, {"marker": marker}, x_api_key="team-a", **SPOOFED)
    post(target, "/payments", key, {"marker": marker}, **SPOOFED)
    executions = [e for e in target.executions() if marker in e["body"]]
    assert [e["handler"] for e in executions] == ["unprotected", "optional", "payments"]
    unprotected, unkeyed, acquired = executions
    assert unprotected["token"] is None and unkeyed["token"] is None
    assert acquired["token"] != SPOOFED["idempotency_fencing_token"] and int(acquired["token"]) > 0
    assert [e["recovered"] for e in executions] == [None, None, None]


def test_fail_open_forwards_without_the_clients_token(target, hop, key):
    hop.cut()
    try:
        forwarded = post(target, "/open/payments", key, **SPOOFED)
    finally:
        hop.restore()
    assert forwarded.status_code == 201
    [execution] = target.executions(key=f'"{key}"')
    assert execution["token"] is None and execution["recovered"] is None
    until_protected(target)


def test_a_takeover_tells_the_service_it_recovered(target, key):
    assert post(target, "/payments", key, x_test_status=500).status_code == 500
    retried = post(target, "/payments", key)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    first, second = target.executions(key=f'"{key}"')
    assert first["recovered"] is None and second["recovered"] == "true"
    assert int(second["token"]) > int(first["token"])


def test_no_form_of_a_protected_path_reaches_the_service_unprotected(target):
    marker = str(uuid.uuid4())
    forms = ["//payments", "/payments/", "/%70ayments", "/payments;x", "/PAYMENTS", "/Payments/", "/payments//"]
    answers = {form: post(target, form, None, {"marker": marker}).status_code for form in forms}
    unprotected = [e["path"] for e in target.executions(handler="payments") if marker in e["body"]]
    assert unprotected == [], f"served without a key: {unprotected}; answers {answers}"
