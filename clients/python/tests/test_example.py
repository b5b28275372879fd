"""The payments example (examples/payments) does what its README promises."""

import pathlib
import subprocess
import sys

DEMO = pathlib.Path(__file__).resolve().parents[3] / "examples" / "payments" / "demo.py"


def test_the_payments_example_charges_once_replays_and_refuses_a_reused_key(server_address):
    run = subprocess.run([sys.executable, str(DEMO), "--coordinator", server_address], capture_output=True, text=True, timeout=60)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout + run.stderr
