"""Issue 27, 6: which answers release a key by default, which keys are
malformed, what the fingerprint of a non-JSON body includes, and
Cache-Control on every answer of a protected route."""

import uuid

import httpx

from calls import post, problem_type

RELEASING = [401, 403, 407, 408, 425, 429, 500, 503]
FINAL = [400, 402, 404, 409, 422]


def test_statuses_that_mean_not_processed_release_the_key(target):
    for status in RELEASING:
        key = f"k-{uuid.uuid4()}"
        assert post(target, "/payments", key, x_test_status=status).status_code == status
        retried = post(target, "/payments", key)
        assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers, (status, retried.text)
        assert len(target.executions(key=f'"{key}"')) == 2, status


def test_other_4xx_are_stored_and_replayed(target):
    for status in FINAL:
        key = f"k-{uuid.uuid4()}"
        first = post(target, "/payments", key, x_test_status=status)
        again = post(target, "/payments", key)
        assert (first.status_code, again.status_code) == (status, status)
        assert again.headers.get("idempotent-replayed") == "true", status
        assert len(target.executions(key=f'"{key}"')) == 1, status


def test_an_empty_or_whitespace_only_key_is_400_malformed(target):
    marker = str(uuid.uuid4())
    for value in ['""', '" "', '"   "']:
        refused = httpx.post(target.url("/payments"), json={"marker": marker}, timeout=30,
                             headers={"idempotency-key": value, "authorization": "Bearer alice"})
        assert refused.status_code == 400, (value, refused.status_code, refused.text)
        assert problem_type(refused) == "idempotency-key-malformed"
    assert [e for e in target.executions() if marker in e["body"]] == []


def test_the_content_type_of_a_non_json_body_is_part_of_its_fingerprint(target, key):
    form = post(target, "/payments", key, content=b"amount=100", content_type="text/plain")
    other = post(target, "/payments", key, content=b"amount=100", content_type="application/x-www-form-urlencoded")
    same = post(target, "/payments", key, content=b"amount=100", content_type="text/plain")
    assert form.status_code == 201
    assert other.status_code == 422 and problem_type(other) == "idempotency-key-reused", other.text
    assert same.headers.get("idempotent-replayed") == "true"
    assert len(target.executions(key=f'"{key}"')) == 1


def test_every_answer_on_a_protected_route_is_no_store(target, key):
    own = {"x_test_cache_control": "max-age=60"}
    answers = [
        post(target, "/payments", key, **own),
        post(target, "/payments", key, **own),
        post(target, "/optional/payments", None, auth=None, **own),
        post(target, "/payments", None, **own),
    ]
    assert [a.status_code for a in answers] == [201, 201, 201, 400]
    assert [a.headers.get("cache-control") for a in answers] == ["no-store"] * 4
