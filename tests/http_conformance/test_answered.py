"""Issue 27, 4 and 5: once the service has answered, its request never runs
again for a retry, whatever happens next (its body breaks off, Complete
fails, the answer is too large to store); a client that hangs up in the
middle of its body begins nothing and does not take the server down."""

import socket
import threading
import time

from calls import post, problem_type, until_protected


def test_an_answer_that_breaks_off_after_its_status_is_never_run_again(target, key):
    broken = post(target, "/payments", key, x_test_break="after-status")
    assert broken.status_code >= 500, broken.text
    retry = post(target, "/payments", key)
    assert retry.status_code == 409 and problem_type(retry) == "response-not-replayable", retry.text
    assert "201" in retry.json()["detail"]
    assert len(target.executions(key=f'"{key}"')) == 1


def test_a_client_that_hangs_up_mid_body_begins_nothing(target, key):
    with socket.create_connection(("127.0.0.1", target.port)) as connection:
        connection.sendall(
            f'POST /payments HTTP/1.1\r\nHost: edge\r\nIdempotency-Key: "{key}"\r\nAuthorization: Bearer alice\r\n'
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"amount\":".encode()
        )
        time.sleep(0.2)
    time.sleep(0.3)
    assert target.alive(), "the server went down"
    after = post(target, "/payments", key)
    assert after.status_code == 201 and "idempotent-replayed" not in after.headers, after.text
    assert len(target.executions(key=f'"{key}"')) == 1


def _while_cut(target, hop, path, key, cut_for):
    """POSTs to `path`; cuts the hop to the coordinator once the service has
    begun (Begin is done), for `cut_for` seconds; returns the answer."""
    answers = []
    first = threading.Thread(target=lambda: answers.append(post(target, path, key, x_test_delay=0.5)))
    first.start()
    deadline = time.monotonic() + 10
    while not target.executions(key=f'"{key}"'):
        assert time.monotonic() < deadline, "the service was never called"
        time.sleep(0.02)
    hop.cut()
    time.sleep(cut_for)
    hop.restore()
    first.join()
    return answers[0]


def test_a_complete_that_fails_at_first_is_retried_and_the_answer_kept(target, hop, key):
    answered = _while_cut(target, hop, "/payments", key, cut_for=1.0)
    assert answered.status_code == 201 and "idempotent-replayed" not in answered.headers, answered.text
    until_protected(target)
    retry = post(target, "/payments", key)
    assert retry.headers.get("idempotent-replayed") == "true" and retry.content == answered.content, retry.text
    assert len(target.executions(key=f'"{key}"')) == 1


def test_fail_open_never_runs_an_answered_request_again(target, hop, key):
    # The route's lease is 2 s: Complete is retried that long, and fails.
    answered = _while_cut(target, hop, "/open/payments", key, cut_for=3.0)
    assert answered.status_code == 201, answered.text
    assert len(target.executions(key=f'"{key}"')) == 1
    until_protected(target)


def test_an_answer_too_large_to_store_reaches_the_client_and_is_not_replayable(target, key):
    # Over the route's limit (8192 bytes), then over the coordinator's (16384) on a route allowing 65536.
    for path, size in (("/payments", 10000), ("/large/payments", 32768)):
        large = post(target, path, key, x_test_body_bytes=size)
        assert large.status_code == 201 and len(large.content) > size, large.text[:200]
        retry = post(target, path, key)
        assert retry.status_code == 409 and problem_type(retry) == "response-not-replayable", retry.text
        assert "201" in retry.json()["detail"]
    assert len(target.executions(key=f'"{key}"')) == 2, "one execution per route"
