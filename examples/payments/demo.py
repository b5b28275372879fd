"""Double-submits, retries after a timeout, and reuses a key with a different
amount against the payments example; exits 1 unless that gives one charge per
key, the replays, and one clear 422.

    python3 demo.py --coordinator 127.0.0.1:50051
    python3 demo.py --coordinator 127.0.0.1:50051 --gateway target/debug/idempotency-coordinator

The first runs server.py, which calls the coordinator itself; the second
runs plain_server.py, which has no idempotency code, behind the HTTP gateway.
"""

import argparse
import json
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid


def post(base, key, body, timeout=10.0, latency=0.0):
    request = urllib.request.Request(
        f"{base}/payments",
        data=json.dumps(body).encode(),
        # A Structured Field string, as the Idempotency-Key draft (and the gateway) require.
        headers={
            "Idempotency-Key": f'"{key}"',
            "Content-Type": "application/json",
            "X-Simulate-Latency": str(latency),
            # The gateway scopes keys by caller (routes.toml: identity = "authorization").
            "Authorization": "Bearer demo-client",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", default="127.0.0.1:50051")
    parser.add_argument("--gateway", help="the idempotency-coordinator binary: run plain_server.py behind its gateway")
    args = parser.parse_args()
    here = pathlib.Path(__file__).parent
    port = free_port()
    processes = []
    if args.gateway:
        processes.append(subprocess.Popen([sys.executable, str(here / "plain_server.py"), "--port", str(port)], stdout=subprocess.PIPE, text=True))
        gateway_port, admin_port = free_port(), free_port()
        processes.append(subprocess.Popen([
            args.gateway, "gateway", "--coordinator", f"http://{args.coordinator}", "--routes", str(here / "routes.toml"),
            "--upstream", f"http://127.0.0.1:{port}", "--listen", f"127.0.0.1:{gateway_port}",
            "--admin-listen", f"127.0.0.1:{admin_port}",
        ]))
        base = f"http://127.0.0.1:{gateway_port}"
        wait_until_up(f"http://127.0.0.1:{admin_port}/readyz")
    else:
        processes.append(subprocess.Popen(
            [sys.executable, str(here / "server.py"), "--port", str(port), "--coordinator", args.coordinator],
            stdout=subprocess.PIPE,
            text=True,
        ))
        base = f"http://127.0.0.1:{port}"
    try:
        processes[0].stdout.readline()  # "payments API on ..."
        checks = []

        def check(what, ok):
            checks.append(ok)
            print(f"{'ok  ' if ok else 'FAIL'} {what}")

        # 1. A double-submitted payment: one charge, one replay.
        order = str(uuid.uuid4())
        first = post(base, order, {"amount": 100, "currency": "EUR"})
        again = post(base, order, {"currency": "EUR", "amount": 100})
        print(f"double submit: {first[0]} {first[2]['id']} / {again[0]} {again[2]['id']} replayed={again[1].get('Idempotent-Replayed')}")
        check("the first submit charged (201)", first[0] == 201 and "Idempotent-Replayed" not in first[1])
        check("the second submit is a replay of the same charge",
              again[0] == 201 and again[1].get("Idempotent-Replayed") == "true" and again[2]["id"] == first[2]["id"])
        check("responses are not cacheable", first[1].get("Cache-Control") == "no-store")

        # 2. The client times out while the provider is slow, and retries.
        slow = str(uuid.uuid4())
        try:
            post(base, slow, {"amount": 50, "currency": "EUR"}, timeout=0.5, latency=1.5)
            check("the slow request timed out on the client", False)
        except (TimeoutError, socket.timeout, urllib.error.URLError):
            check("the slow request timed out on the client", True)
        retry = post(base, slow, {"amount": 50, "currency": "EUR"})
        print(f"retry after timeout: {retry[0]} {retry[2].get('id')} replayed={retry[1].get('Idempotent-Replayed')}")
        check("the retry waited for the first attempt and replayed its charge",
              retry[0] == 201 and retry[1].get("Idempotent-Replayed") == "true")

        # 3. The same key with a different amount: a client bug, refused.
        reused = post(base, order, {"amount": 200, "currency": "EUR"})
        print(f"key reused with another amount: {reused[0]} {reused[2]}")
        check("a key reused with a different amount gets 422", reused[0] == 422)

        with urllib.request.urlopen(f"{base}/charges") as response:
            charged = json.loads(response.read())["charges"]
        per_key = {key: sum(c["key"] == f'"{key}"' for c in charged) for key in (order, slow)}
        print(f"charges made: {len(charged)} ({per_key})")
        check("exactly one charge per key", per_key == {order: 1, slow: 1} and len(charged) == 2)
        print(f"{sum(checks)} passed, {len(checks) - sum(checks)} failed")
        return 0 if all(checks) else 1
    finally:
        for process in processes:
            process.terminate()
            process.wait(5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url, within=10.0):
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
