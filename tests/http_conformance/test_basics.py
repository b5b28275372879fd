"""What every edge did before issue 27, kept as the suite's anchor: a double
submit runs once and replays the answer; a reused key is 422; a retry while
the first runs is 409, or waits on a route with `wait`."""

import threading
import time

from calls import post, problem_type


def test_a_double_submit_runs_once_and_replays_the_answer(target, key):
    first = post(target, "/payments", key)
    second = post(target, "/payments", key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert "idempotent-replayed" not in first.headers and second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content and second.headers["location"] == first.headers["location"]
    [execution] = target.executions(key=f'"{key}"')
    assert int(execution["token"]) > 0


def test_a_key_reused_for_another_body_is_422_and_never_runs(target, key):
    post(target, "/payments", key, {"amount": 100})
    reused = post(target, "/payments", key, {"amount": 200})
    assert reused.status_code == 422 and problem_type(reused) == "idempotency-key-reused"
    assert len(target.executions(key=f'"{key}"')) == 1


def test_a_retry_while_the_first_runs_is_409_or_waits_for_its_answer(target, key):
    for begun, (path, expected) in enumerate((("/payments", 409), ("/waiting/payments", 201)), start=1):
        first = threading.Thread(target=post, args=(target, path, key), kwargs={"x_test_delay": 1})
        first.start()
        deadline = time.monotonic() + 10
        while len(target.executions(key=f'"{key}"')) < begun:  # the first has begun
            assert time.monotonic() < deadline, "the first request never reached the service"
            time.sleep(0.02)
        retry = post(target, path, key)
        first.join()
        assert retry.status_code == expected, retry.text
        if expected == 409:
            assert problem_type(retry) == "request-in-progress" and int(retry.headers["retry-after"]) >= 1
        else:
            assert retry.headers["idempotent-replayed"] == "true"
    assert len(target.executions(key=f'"{key}"')) == 2, "one execution per route"
