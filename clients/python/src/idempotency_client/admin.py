"""The operators' path (`idempotency.v1.AdminService`): list a namespace's
records and forget a finished one so its key can be used again. The server
serves it only with `--admin-tenants`, to callers authenticated as one of
those tenants; every call is logged there with who made it.

    admin = Admin(channel(address, ops_credentials))
    for listed in admin.records("acme", "payments.create"):
        print(listed.key, listed.record.state)
    admin.forget("acme", "payments.create", "order-9b21", reason="refund re-run, ticket 4711")
"""

from dataclasses import dataclass
from typing import Iterator

import grpc

from idempotency.v1 import admin_pb2 as admin_pb
from idempotency.v1 import admin_pb2_grpc as admin_grpc
from idempotency.v1 import coordinator_pb2 as pb

from .errors import from_rpc_error


@dataclass
class ListedRecord:
    """A record as listed: its key and its state, attempt, owner and times,
    without its stored result or error (`Coordinator.lookup` reads those)."""

    key: str
    record: pb.Record


class Admin:
    def __init__(self, channel: grpc.Channel, timeout: float = 10.0):
        self._stub = admin_grpc.AdminServiceStub(channel)
        self._timeout = timeout

    def records(self, tenant: str, namespace: str, page_size: int = 100) -> Iterator[ListedRecord]:
        """Every record of `namespace`, a page at a time, in the store's order."""
        page_token = ""
        while True:
            try:
                page = self._stub.ListRecords(
                    admin_pb.ListRecordsRequest(
                        tenant=tenant, namespace=namespace, page_size=page_size, page_token=page_token
                    ),
                    timeout=self._timeout,
                )
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None
            for listed in page.records:
                yield ListedRecord(listed.key, listed.record)
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def forget(self, tenant: str, namespace: str, key: str, reason: str) -> pb.Record:
        """Deletes a COMPLETED or FAILED record, so the next Begin with its key
        is a new request; returns the record as it was. A record in progress
        raises RecordInProgressError; an unknown one NotFoundError."""
        try:
            answer = self._stub.ForgetRecord(
                admin_pb.ForgetRecordRequest(tenant=tenant, namespace=namespace, key=key, reason=reason),
                timeout=self._timeout,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return answer.forgotten
