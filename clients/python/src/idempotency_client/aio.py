"""The asyncio helper (`grpc.aio`): the blocking `Coordinator`'s shape for
async code.

    coordinator = AsyncCoordinator("127.0.0.1:50051", owner="checkout-7")
    outcome = await coordinator.run("payments.create", key, charge, json_payload=cart)

`await charge(attempt)` runs only if this call acquired the key; a retry of a
finished key gets the stored result back instead (`outcome.replayed`). While it
runs, a heartbeat task extends the lease, timed from the lease it was handed
(see `heartbeat.py`). Exceptions release the key
(`RetryableError` and any other exception) or store a replayable failure
(`PermanentError`), and are re-raised; so does cancellation (the key is
released, so a retry runs again). Once the side effect has returned, Complete
is retried while the coordinator is unavailable, for up to the lease's TTL
(Complete is idempotent): the work is done and must not be lost to a blip.
The channel is created on first use, in the event loop that uses it.
"""

import asyncio
import time
from typing import Any, Awaitable, Callable, Optional, Sequence, Union

import grpc
import grpc.aio

from idempotency.v1 import coordinator_pb2 as pb
from idempotency.v1 import coordinator_pb2_grpc as pb_grpc

from .client import (
    LOST_REASONS,
    SERVICE_CONFIG,
    Attempt,
    Outcome,
    _to_result,
    attempt_of,
    begin_request,
    complete_request,
    extend_request,
    fail_request,
    lease_of,
    replay_of,
    still_in_progress,
)
from .errors import UnavailableError, from_rpc_error
from .heartbeat import Lease, timestamp_seconds


def aio_channel(target: str, credentials: Optional[grpc.ChannelCredentials] = None) -> grpc.aio.Channel:
    """An asyncio channel with the blocking helper's retry policy."""
    options = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


class AsyncCoordinator:
    def __init__(
        self,
        target: Union[str, Callable[[], grpc.aio.Channel]],
        *,
        owner: str = "",
        tenant: str = "",
        timeout: float = 10.0,
    ):
        """`target` is an address, or a function that makes the channel (for TLS)."""
        self._make_channel = (lambda: aio_channel(target)) if isinstance(target, str) else target
        self._channel: Optional[grpc.aio.Channel] = None
        self.owner, self.tenant, self.timeout = owner, tenant, timeout

    @property
    def stub(self) -> pb_grpc.CoordinatorServiceStub:
        if self._channel is None:
            self._channel = self._make_channel()
        return pb_grpc.CoordinatorServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def run(
        self,
        namespace: str,
        key: str,
        side_effect: Callable[[Attempt], Awaitable[Any]],
        *,
        payload: Union[bytes, str, None] = None,
        json_payload: Any = None,
        ignore_fields: Sequence[str] = (),
        fingerprint: Optional[bytes] = None,
        lease_ttl: int = 30,
        wait: float = 10.0,
        give_up_after: float = 60.0,
        retention: Optional[float] = None,
        heartbeat: bool = True,
    ) -> Outcome:
        """As `Coordinator.run`, with an async side effect."""
        request = begin_request(
            self.tenant, self.owner, namespace, key, payload, json_payload, ignore_fields, fingerprint, lease_ttl, wait
        )
        stub = self.stub
        give_up = time.monotonic() + give_up_after
        while True:
            sent_at = time.monotonic()
            try:
                response = await stub.Begin(request, timeout=wait + self.timeout)
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None
            replay = replay_of(response)
            if replay is not None:
                return replay
            if response.WhichOneof("outcome") == "acquired":
                lease = lease_of(response.acquired, sent_at, time.time(), lease_ttl)
                acquired = response.acquired
                return await self._own(stub, request, acquired, lease, side_effect, lease_ttl, retention, heartbeat)
            if time.monotonic() >= give_up:
                raise still_in_progress(response, namespace, key, give_up_after)
            if wait <= 0:
                await asyncio.sleep(response.in_progress.retry_after.ToTimedelta().total_seconds() or 0.1)

    async def _own(self, stub, request, acquired, lease, side_effect, lease_ttl, retention, heartbeat) -> Outcome:
        attempt = attempt_of(acquired, asyncio.Event())
        ids = dict(tenant=request.tenant, namespace=request.namespace, key=request.key)
        beat = asyncio.ensure_future(self._heartbeat(stub, ids, attempt, lease_ttl, lease)) if heartbeat else None
        try:
            value = await side_effect(attempt)
        except BaseException as error:
            await _stop(beat)
            # Shielded: a cancelled caller must still release its key.
            await asyncio.shield(self._fail(stub, fail_request(ids, attempt, error, retention)))
            raise
        await _stop(beat)
        stored = _to_result(value)
        request = complete_request(ids, attempt, stored, retention)
        await _retrying(lambda: stub.Complete(request, timeout=self.timeout), patience=lease_ttl)
        return Outcome(**vars(stored), replayed=False, attempt=attempt.attempt)

    async def fail(
        self,
        namespace: str,
        key: str,
        attempt: Attempt,
        error: BaseException,
        *,
        retention: Optional[float] = None,
        patience: float = 0.0,
    ) -> None:
        """Ends `attempt` as `run` does when its side effect raises `error`
        (a `PermanentError` is stored, anything else releases the key), for
        callers that finish an attempt themselves; retried while the
        coordinator is unavailable, for up to `patience` seconds."""
        request = fail_request(dict(tenant=self.tenant, namespace=namespace, key=key), attempt, error, retention)
        await _retrying(lambda: self.stub.Fail(request, timeout=self.timeout), patience=patience)

    async def _fail(self, stub, request: pb.FailRequest) -> None:
        try:
            await stub.Fail(request, timeout=self.timeout)
        except grpc.RpcError:
            # The original exception matters more; an unreleased key is
            # abandoned and taken over when its lease lapses.
            pass

    async def _heartbeat(self, stub, ids, attempt, lease_ttl, lease: Lease) -> None:
        """Extends the lease a third of its time left after each send (the
        rule is in `heartbeat.py`) until cancelled or the attempt is lost."""
        while lease is not None:
            await asyncio.sleep(max(0.0, lease.heartbeat_at() - time.monotonic()))
            lease = await self._extend(stub, ids, attempt, lease_ttl, lease)

    async def _extend(self, stub, ids, attempt, lease_ttl, lease: Lease) -> Optional[Lease]:
        """The lease an Extend renewed, tried again while time is left; None
        once the attempt is lost or its time ran out (then
        `attempt.lease_lost` is set)."""
        while True:
            sent_at = time.monotonic()
            try:
                answer = await stub.Extend(
                    extend_request(ids, attempt, lease_ttl), timeout=lease.extend_timeout(sent_at, self.timeout)
                )
                return Lease.answered(sent_at, timestamp_seconds(answer.lease_expires_at), time.time(), lease_ttl)
            except grpc.RpcError as error:
                if from_rpc_error(error).reason in LOST_REASONS or lease.over(time.monotonic()):
                    attempt.lease_lost.set()
                    return None
                # Unavailable or too slow: try again while time is left.
            await asyncio.sleep(lease.retry_pause(time.monotonic()))

    async def lookup(self, namespace: str, key: str) -> pb.Record:
        try:
            answer = await self.stub.Lookup(
                pb.LookupRequest(tenant=self.tenant, namespace=namespace, key=key), timeout=self.timeout
            )
            return answer.record
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def idempotent(self, namespace: str, *, key: Callable[..., str], json_payload: Callable[..., Any], **options):
        """Decorator form for async functions: `key` and `json_payload`
        compute the idempotency key and the guarded request from the
        arguments; the function gets the `Attempt` as its first argument."""

        def wrap(function):
            async def wrapper(*args, **kwargs):
                return await self.run(
                    namespace,
                    key(*args, **kwargs),
                    lambda attempt: function(attempt, *args, **kwargs),
                    json_payload=json_payload(*args, **kwargs),
                    **options,
                )

            return wrapper

        return wrap


async def _retrying(call: Callable[[], Awaitable[Any]], patience: float) -> Any:
    """`call()`, tried again with backoff (0.1 s doubling to 2 s) while it is
    UNAVAILABLE and `patience` seconds have not passed; raises its typed error."""
    give_up, pause = time.monotonic() + patience, 0.1
    while True:
        try:
            return await call()
        except grpc.RpcError as error:
            typed = from_rpc_error(error)
            if not isinstance(typed, UnavailableError) or time.monotonic() + pause >= give_up:
                raise typed from None
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def _stop(beat: Optional[asyncio.Future]) -> None:
    if beat is None:
        return
    beat.cancel()
    try:
        await beat
    except asyncio.CancelledError:
        pass


__all__ = ["AsyncCoordinator", "aio_channel"]
