"""Starts a real etcd and the real coordinator on free loopback ports, and
stops them: shared by these tests and the HTTP conformance suite
(tests/http_conformance)."""

import os
import pathlib
import socket
import subprocess
import time

import grpc

from idempotency_client import Coordinator

REPO = pathlib.Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Generous: on a loaded 2-core machine a debug build and a fresh etcd have
# been seen to need more than 20 s together.
def wait_until(check, what, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {seconds}s")


def start_etcd(data_dir: str):
    """A single-member etcd on free loopback ports; returns (process, client URL)."""
    client_port, peer_port = free_port(), free_port()
    etcd = subprocess.Popen(
        [
            os.environ.get("ETCD_BIN", "etcd"),
            f"--data-dir={data_dir}/etcd",
            f"--listen-client-urls=http://127.0.0.1:{client_port}",
            f"--advertise-client-urls=http://127.0.0.1:{client_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return etcd, f"http://127.0.0.1:{client_port}"


def start_coordinator(etcd_url: str, grpc_port: int, *flags: str):
    binary = os.environ.get("IDEMPOTENCY_BIN", str(REPO / "target" / "debug" / "idempotency-coordinator"))
    return subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{grpc_port}", "--etcd-endpoints", etcd_url,
         "--metrics-listen", "127.0.0.1:0", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def answers(channel) -> bool:
    """Whether the coordinator behind `channel` answers with etcd behind it."""
    try:
        grpc.channel_ready_future(channel).result(timeout=0.5)
        Coordinator(channel).lookup("health.check", "probe")
    except Exception as error:  # NOT_FOUND means etcd answered
        return "RECORD_NOT_FOUND" in str(getattr(error, "reason", "")) or "NOT_FOUND" in str(error)
    return True


def stop(*processes):
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(10)
