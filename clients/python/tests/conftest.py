"""Starts a real etcd and the real coordinator on free loopback ports for the
test session, and stops both afterwards."""

import tempfile

import grpc
import pytest

from harness import answers, free_port, start_coordinator, start_etcd, stop, wait_until
from idempotency_client import Coordinator


@pytest.fixture(scope="session")
def server_address():
    data = tempfile.TemporaryDirectory()
    etcd, etcd_url = start_etcd(data.name)
    grpc_port = free_port()
    coordinator = start_coordinator(etcd_url, grpc_port)
    address = f"127.0.0.1:{grpc_port}"
    try:
        wait_until(lambda: answers(grpc.insecure_channel(address)), "the coordinator")
        yield address
    finally:
        stop(coordinator, etcd)
        data.cleanup()


@pytest.fixture
def coordinator(server_address):
    client = Coordinator(server_address, owner="pytest")
    yield client
    client.close()
