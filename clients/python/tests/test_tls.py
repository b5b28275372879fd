"""The helper against a coordinator with TLS and authentication on: tenants
come from a bearer token or a client certificate, never from the request."""

import hashlib
import pathlib
import tempfile
import uuid
from types import SimpleNamespace

import grpc
import pytest
from harness import answers, free_port, start_coordinator, start_etcd, stop, wait_until
from pki import Pki

from idempotency.v1 import coordinator_pb2 as pb
from idempotency_client import (
    Admin,
    AuthenticationError,
    Coordinator,
    PermissionDeniedError,
    RecordInProgressError,
    RecordNotFoundError,
    channel,
)

TOKEN = "python-" + uuid.uuid4().hex
OPS_TOKEN = "python-ops-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def tls_server():
    pki, data = Pki(), tempfile.TemporaryDirectory()
    files = pathlib.Path(data.name)
    cert, key = pki.server()
    (files / "server.pem").write_bytes(cert)
    (files / "server-key.pem").write_bytes(key)
    (files / "ca.pem").write_bytes(pki.ca_pem)
    (files / "tokens").write_text(
        f"acme {hashlib.sha256(TOKEN.encode()).hexdigest()}\nops {hashlib.sha256(OPS_TOKEN.encode()).hexdigest()}\n"
    )
    etcd, etcd_url = start_etcd(data.name)
    grpc_port = free_port()
    coordinator = start_coordinator(
        etcd_url, grpc_port,
        "--tls-cert", str(files / "server.pem"), "--tls-key", str(files / "server-key.pem"),
        "--tls-client-ca", str(files / "ca.pem"), "--tenant-uri-prefix", "spiffe://test.example/tenant/",
        "--tokens-file", str(files / "tokens"), "--health-listen", f"127.0.0.1:{free_port()}",
        "--admin-tenants", "ops",
    )
    server = SimpleNamespace(address=f"localhost:{grpc_port}", pki=pki)
    try:
        token_only = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=pki.ca_pem), grpc.access_token_call_credentials(TOKEN)
        )
        wait_until(lambda: answers(channel(server.address, token_only)), "the TLS coordinator")
        yield server
    finally:
        stop(coordinator, etcd)
        data.cleanup()


def secure_channel(server, token=None, certificate=None):
    cert, key = certificate or (None, None)
    credentials = grpc.ssl_channel_credentials(root_certificates=server.pki.ca_pem, private_key=key, certificate_chain=cert)
    if token:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    return channel(server.address, credentials)


def connect(server, token=None, certificate=None, tenant=""):
    return Coordinator(secure_channel(server, token, certificate), owner="pytest", tenant=tenant)


def test_a_token_and_a_certificate_of_one_tenant_share_its_records(tls_server):
    key, calls = str(uuid.uuid4()), []
    by_token = connect(tls_server, token=TOKEN)
    first = by_token.run("payments.create", key, lambda a: calls.append(1) or "charged", json_payload={"amount": 1})
    by_certificate = connect(tls_server, certificate=tls_server.pki.client("x", "spiffe://test.example/tenant/acme"))
    again = by_certificate.run("payments.create", key, lambda a: calls.append(2), json_payload={"amount": 1})
    assert calls == [1] and again.replayed and again.response == first.response


def test_another_tenant_is_denied_and_no_credentials_are_refused(tls_server):
    key = str(uuid.uuid4())
    naming_globex = connect(tls_server, token=TOKEN, tenant="globex")
    with pytest.raises(PermissionDeniedError):
        naming_globex.run("payments.create", key, lambda a: pytest.fail("ran"), json_payload={"amount": 1})
    with pytest.raises(AuthenticationError):
        connect(tls_server).run("payments.create", key, lambda a: pytest.fail("ran"), json_payload={"amount": 1})
    # With a tenant URI prefix configured, a certificate's CN names no tenant.
    with pytest.raises(AuthenticationError):
        cn_only = connect(tls_server, certificate=tls_server.pki.client("globex"))
        cn_only.run("payments.create", key, lambda a: pytest.fail("ran"), json_payload={"amount": 1})
    globex = connect(tls_server, certificate=tls_server.pki.client("globex", "spiffe://test.example/tenant/globex"))
    assert not globex.run("payments.create", key, lambda a: "globex's own", json_payload={"amount": 1}).replayed


def test_an_admin_lists_records_and_forgets_a_finished_one(tls_server):
    namespace, effects = f"adminpy.{uuid.uuid4().hex[:12]}", []
    acme, admin = connect(tls_server, token=TOKEN), Admin(secure_channel(tls_server, token=OPS_TOKEN))

    def charge(attempt):
        effects.append(attempt.attempt)
        return "charged"

    for key in ("k1", "k2", "k3"):
        acme.run(namespace, key, charge, json_payload={"amount": 1})

    # An attempt still running cannot be forgotten, even by an admin.
    def try_to_forget_itself(attempt):
        with pytest.raises(RecordInProgressError):
            admin.forget("acme", namespace, "k4", reason="test")
        return "done"

    acme.run(namespace, "k4", try_to_forget_itself, json_payload={"amount": 1})

    listed = list(admin.records("acme", namespace, page_size=2))
    assert [r.key for r in listed] == ["k1", "k2", "k3", "k4"]
    assert all(r.record.state == pb.STATE_COMPLETED and not r.record.HasField("result") for r in listed)

    forgotten = admin.forget("acme", namespace, "k1", reason="refund re-run, ticket 4711")
    assert forgotten.state == pb.STATE_COMPLETED and forgotten.result.response == b"charged"
    again = acme.run(namespace, "k1", charge, json_payload={"amount": 2})
    assert not again.replayed and effects == [1, 1, 1, 1]
    assert acme.run(namespace, "k2", charge, json_payload={"amount": 1}).replayed

    with pytest.raises(RecordNotFoundError):
        admin.forget("acme", namespace, "never-made", reason="test")
    with pytest.raises(PermissionDeniedError):
        list(Admin(secure_channel(tls_server, token=TOKEN)).records("acme", namespace))
