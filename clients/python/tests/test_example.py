"""The payments example (examples/payments) does what its README promises:
with the Python helper in the service, and with no idempotency code in the
service but the HTTP gateway in front of it."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
DEMO = REPO / "examples" / "payments" / "demo.py"
BINARY = os.environ.get("IDEMPOTENCY_BIN", str(REPO / "target" / "debug" / "idempotency-coordinator"))


def run_demo(*args):
    run = subprocess.run([sys.executable, str(DEMO), *args], capture_output=True, text=True, timeout=60)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_the_payments_example_charges_once_replays_and_refuses_a_reused_key(server_address):
    run_demo("--coordinator", server_address)


def test_the_plain_payments_service_behind_the_gateway_does_the_same_without_code(server_address):
    output = run_demo("--coordinator", server_address, "--gateway", BINARY)
    assert "7 passed, 0 failed" in output
