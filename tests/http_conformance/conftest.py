"""One etcd and one coordinator for the session (started as the Python
client's tests start them), reached by every target through a hop a test can
cut, and each target started once, with routes.json. Every case takes
`target` and so runs against each of targets.NAMES."""

import pathlib
import sys
import tempfile
import uuid

import grpc
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python" / "tests"))

from harness import answers, free_port, start_coordinator, start_etcd, stop, wait_until  # noqa: E402
from hop import Hop  # noqa: E402
from targets import NAMES, Target, routes  # noqa: E402

# Small, so that the "large" route (65536 bytes) stores answers the coordinator refuses.
MAX_RESULT_BYTES = 16384


@pytest.fixture(scope="session")
def hop():
    data = tempfile.TemporaryDirectory()
    etcd, etcd_url = start_etcd(data.name)
    grpc_port = free_port()
    coordinator = start_coordinator(etcd_url, grpc_port, "--max-result-bytes", str(MAX_RESULT_BYTES))
    hop = Hop(grpc_port)
    try:
        wait_until(lambda: answers(grpc.insecure_channel(f"127.0.0.1:{hop.port}")), "the coordinator")
        yield hop
    finally:
        hop.close()
        stop(coordinator, etcd)
        data.cleanup()


@pytest.fixture(scope="session", params=NAMES)
def target(request, hop):
    started = Target(request.param, f"127.0.0.1:{hop.port}").start(routes(request.param))
    yield started
    started.stop()


@pytest.fixture
def key():
    return f"k-{uuid.uuid4()}"

