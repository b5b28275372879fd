"""An ASGI middleware (Starlette, FastAPI, any ASGI app) that applies the IETF
httpapi `Idempotency-Key` header rules, as the coordinator's HTTP gateway does:

    app = IdempotencyMiddleware(app, AsyncCoordinator("127.0.0.1:50051"), [
        Route(methods=["POST"], path="/payments", namespace="payments.create", identity="authorization", wait=10),
    ])

Records are scoped by the caller: each route names where its caller's
identity comes from (`identity`, required; see `Route`), and the
coordinator namespace is the route's plus a digest of that identity, so one
caller never gets another's answer, nor learns that its key exists.

On a matching route: a missing or malformed key is 400, as is a JSON body
with a number that canonical JSON would change (naming it by JSON Pointer;
see json_numbers.py); a keyed request without an identity is 401; a body
over the limit 413, a key reused for another request 422 (naming the JSON
members that differ), a retry while the first runs 409 with Retry-After (or,
with `wait`, the first one's answer), and a retry after it finished gets the
stored status, headers and body with `Idempotent-Replayed: true`, without
calling the app. The app's 401, 403, 407, 408, 425, 429, 5xx and
`retryable_4xx` answers release the key. Once the app has answered, it never
runs again for that key: an answer that cannot be stored (too large, broken
off, Complete failing after retries) ends the record as not replayable.
Every answer on a matching route carries `Cache-Control: no-store`; answers
the middleware writes itself are RFC 9457 problem documents. The fencing-token
and recovered headers are removed from every request and set only on an
acquired attempt. Answers are stored as `message/http`, the gateway's format.
Needs the `asgi` extra (`pip install idempotency-client[asgi]`).
"""

import asyncio
import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import http_sf

from . import json_numbers
from .aio import AsyncCoordinator
from .client import Result
from .errors import (
    IdempotencyError,
    InvalidRequestError,
    KeyReusedError,
    LeaseLostError,
    PermanentError,
    ReplayedFailure,
    RetryableError,
    UnavailableError,
)

log = logging.getLogger("idempotency_client.asgi")

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
MEDIA_TYPE = "message/http"
RESPONSE_NOT_STORED = "RESPONSE_NOT_STORED"
ALWAYS_REPLAYED = ("content-type", "content-encoding", "location", "etag")
# The member under which the request line and chosen headers join a JSON
# body in the fingerprinted payload; a key-reuse error names it when they differ.
REQUEST_MEMBER = "$request"
# Answers that say the request was not processed, so a retry must run it:
# released by default, beside every 5xx and a route's `retryable_4xx`.
RELEASING_4XX = (401, 403, 407, 408, 425, 429)
DEFAULT_FENCING_TOKEN_HEADER = "idempotency-fencing-token"
DEFAULT_RECOVERED_HEADER = "idempotency-recovered"
# The coordinator's namespace limit, and what identity scoping appends: ":" and 32 hex digits.
MAX_NAMESPACE_BYTES = 128
IDENTITY_SUFFIX_BYTES = 33

# An identity: "authorization", "header:<Name>", "none", or a function of the
# ASGI scope returning the caller's identity (None when there is none).
Identity = Union[str, Callable[[dict], Union[str, bytes, None]]]


@dataclass(frozen=True)
class Route:
    """A protected route; `path` is exact or has `{name}` segments.

    `identity` (required) says who the caller is, so that its keys are its
    own: "authorization" (the Authorization header's value), "header:<Name>"
    (e.g. an API key, or a header a trusted auth proxy sets), a function of
    the scope (your own auth result, the mTLS peer certificate), or "none"
    (every caller shares the route's keys; logged at startup)."""

    methods: Sequence[str]
    path: str
    namespace: str
    identity: Optional[Identity] = None
    key_required: bool = True
    lease_ttl: int = 30
    wait: float = 0.0
    retention: Optional[float] = None
    fingerprint_headers: Sequence[str] = ()
    ignore_fields: Sequence[str] = ()
    replay_headers: Sequence[str] = ()
    retryable_4xx: Sequence[int] = ()
    fail_open: bool = False
    max_request_bytes: int = 1024 * 1024
    max_stored_response_bytes: int = 192 * 1024
    fencing_token_header: str = DEFAULT_FENCING_TOKEN_HEADER
    recovered_header: str = DEFAULT_RECOVERED_HEADER

    def __post_init__(self):
        identity_source(self)  # raises on a missing or malformed identity
        if self.identity != "none" and len(self.namespace.encode()) + IDENTITY_SUFFIX_BYTES > MAX_NAMESPACE_BYTES:
            raise ValueError(
                f"Route {self.path!r}: namespace is {len(self.namespace.encode())} bytes; scoped by identity it gets "
                f"{IDENTITY_SUFFIX_BYTES} more, over the coordinator's {MAX_NAMESPACE_BYTES}-byte namespace limit"
            )

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and _pattern(self.path).fullmatch(path) is not None

    def releases(self, status: int) -> bool:
        """Whether an answer with `status` says the request was not processed, so the key is released."""
        return status >= 500 or status in RELEASING_4XX or status in self.retryable_4xx


def identity_source(route: Route) -> tuple:
    """(source, header name) for a route's identity setting: the source is
    hashed with the value, so two sources never share a namespace."""
    identity = route.identity
    if callable(identity):
        return "custom", None
    if identity in ("authorization", "none"):
        return identity, identity if identity == "authorization" else None
    if isinstance(identity, str) and identity.startswith("header:") and re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", identity[7:]):
        name = identity[7:].lower()
        return f"header:{name}", name
    raise ValueError(
        f"Route {route.path!r}: identity is required: \"authorization\", \"header:<Name>\", \"none\" "
        f"or a function of the ASGI scope (got {identity!r})"
    )


def scoped_namespace(route: Route, source: str, value: bytes) -> str:
    """The route's namespace plus the first 16 bytes of SHA-256(source, NUL, value) in hex, as the gateway scopes it."""
    digest = hashlib.sha256(source.encode() + b"\0" + value).hexdigest()
    return f"{route.namespace}:{digest[:32]}"


@functools.lru_cache(maxsize=None)
def _pattern(path: str) -> "re.Pattern[str]":
    """Compiled once per route path, not on every request."""
    return re.compile("/".join("[^/]+" if re.fullmatch(r"\{\w+\}", s) else re.escape(s) for s in path.split("/")))


@dataclass
class Answer:
    status: int
    headers: list  # [(bytes, bytes)]
    body: bytes


def problem(status: int, name: str, title: str, detail: str, retry_after: Optional[float] = None, **extra) -> Answer:
    document = {"type": f"urn:idempotency-gateway:{name}", "title": title, "status": status, "detail": detail, **extra}
    headers = [(b"content-type", b"application/problem+json")]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, int(-(-retry_after // 1)))).encode()))
    return Answer(status, headers, json.dumps(document).encode())


def parse_key(values: list) -> Optional[str]:
    """The key, None without one; ValueError says what is wrong with it."""
    if not values:
        return None
    if len(values) > 1:
        raise ValueError(f"{HEADER} must be sent once")
    try:
        key, _parameters = http_sf.parse(values[0].encode("latin-1"), tltype="item")
    except http_sf.StructuredFieldError as error:
        raise ValueError(f'{HEADER} must be a Structured Field string in double quotes, e.g. "8e03978e-40d5" ({error})') from None
    if type(key) is not str:
        raise ValueError(f'{HEADER} must be a Structured Field string in double quotes, e.g. "8e03978e-40d5"')
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise ValueError(f"{HEADER} must be 1..{MAX_KEY_CHARS} characters (got {len(key)})")
    if not key.strip():
        raise ValueError(f"{HEADER} must not be only whitespace")
    return key


class InexactNumberError(ValueError):
    """A JSON body has a number that canonical JSON would change: two such
    requests could share a fingerprint, so the request is refused."""

    def __init__(self, pointer: str):
        super().__init__(
            f"The number at {json.dumps(pointer)} would change in canonical JSON (RFC 8785 holds numbers as "
            "IEEE 754 doubles), so it could not be told apart from another number; send it as a string."
        )
        self.pointer = pointer


def fingerprint_payload(route: Route, method: str, path: str, query: str, headers: dict, body: bytes):
    """The JSON payload Begin fingerprints (coordinator-side, canonical JSON):
    a JSON object body's own members, with the request line and chosen
    headers under "$request"; any other body by its digest, with its
    Content-Type under "$request" (the same bytes as text and as a form are
    two requests). Returns the
    payload and the ignore_fields that apply to it; raises
    InexactNumberError for a JSON body with a number canonical JSON would
    change (json.loads would already have changed a float)."""
    request = {
        "method": method,
        "path": path,
        "query": query,
        "headers": {name: headers.get(name, []) for name in sorted(h.lower() for h in route.fingerprint_headers)},
    }
    content_type = (headers.get("content-type") or [""])[0].split(";")[0].strip().lower()
    if content_type == "application/json" or (content_type.startswith("application/") and content_type.endswith("+json")):
        try:
            parsed, inexact = json_numbers.loads(body)
        except ValueError:
            parsed, inexact = None, None
        if inexact is not None:
            raise InexactNumberError(inexact)
        if isinstance(parsed, dict) and REQUEST_MEMBER not in parsed:
            return {**parsed, REQUEST_MEMBER: request}, list(route.ignore_fields)
        if parsed is not None:
            return {REQUEST_MEMBER: request, "$body": parsed}, ["/$body" + p for p in route.ignore_fields]
    request["content_type"] = (headers.get("content-type") or [""])[0].strip()
    return {REQUEST_MEMBER: request, "$body_sha256": hashlib.sha256(body).hexdigest()}, []


def encode_stored(status: int, headers: list, keep: Sequence[str], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} ".encode()]
    for name, value in headers:
        if name.decode("latin-1").lower() in keep:
            lines.append(name.lower() + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def decode_stored(data: bytes) -> Answer:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator or not head.startswith(b"HTTP/1.1 "):
        raise ValueError("the stored response is not message/http")
    status_line, *header_lines = head.split(b"\r\n")
    headers = []
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return Answer(int(status_line.split(b" ")[1]), headers, body)


class _Release(RetryableError):
    """The app's answer releases the key (5xx, a releasing 4xx)."""

    def __init__(self, answer: Answer):
        super().__init__(f"the app answered {answer.status}")
        self.answer = answer


class _NotStored(PermanentError):
    """The app answered, but its answer cannot be stored: the request ran, and
    a retry must learn that, not run it again."""

    def __init__(self, answer: Answer, why: str):
        super().__init__(
            RESPONSE_NOT_STORED,
            f"the request was processed (status {answer.status}), but its response ({why}) was not stored, "
            "so it cannot be replayed",
        )
        self.answer = answer


class _BrokenOff(_NotStored):
    """The app sent its status, then failed before its body was whole."""

    def __init__(self, answer: Answer, error: BaseException):
        super().__init__(answer, f"it broke off: {error!r}")
        self.error = error


class _ClientGone(Exception):
    """The client hung up before its request body was whole."""


class IdempotencyMiddleware:
    def __init__(self, app, coordinator: AsyncCoordinator, routes: Sequence[Route]):
        self.app, self.coordinator, self.routes = app, coordinator, list(routes)
        # Every route's, and the default names: a client never sets them, on any path.
        self.set_only_here = {DEFAULT_FENCING_TOKEN_HEADER.encode(), DEFAULT_RECOVERED_HEADER.encode()}
        for route in self.routes:
            self.set_only_here |= {route.fencing_token_header.lower().encode(), route.recovered_header.lower().encode()}
            if route.identity == "none":
                log.warning("route %s has identity \"none\": every caller shares this route's keys", route.path)

    async def __call__(self, scope, receive, send):
        if "headers" in scope:
            scope = {**scope, "headers": [h for h in scope["headers"] if h[0].lower() not in self.set_only_here]}
        route = None
        if scope["type"] == "http":
            route = next((r for r in self.routes if r.matches(scope["method"], scope["path"])), None)
        if route is None:
            return await self.app(scope, receive, send)
        headers: dict = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        try:
            key = parse_key(headers.get("idempotency-key", []))
        except ValueError as error:
            return await _send(send, problem(400, "idempotency-key-malformed", "Idempotency-Key is malformed", str(error), header=HEADER))
        if key is None:
            if route.key_required:
                detail = f'This request needs an {HEADER} header, e.g. {HEADER}: "<uuid>".'
                return await _send(send, problem(400, "idempotency-key-missing", "Idempotency-Key is missing", detail, header=HEADER))
            return await self.app(scope, receive, _no_store(send))
        namespace = _namespace(route, scope, headers)
        if namespace is None:
            return await _send(send, _identity_missing(route))
        try:
            body = await _read_body(receive, route.max_request_bytes)
        except _ClientGone:
            return  # nothing was begun, and nobody is left to answer
        if body is None:
            detail = f"The request body is over this route's limit of {route.max_request_bytes} bytes."
            return await _send(send, problem(413, "request-body-too-large", "Request body too large", detail))
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            payload = fingerprint_payload(route, scope["method"], scope["path"], query, headers, body)
        except InexactNumberError as error:
            title = "A JSON number cannot be fingerprinted exactly"
            return await _send(send, problem(400, "json-number-inexact", title, str(error), pointer=error.pointer))
        # Shielded: a client that hangs up must not cancel the attempt, whose answer must still be stored.
        attempt = asyncio.ensure_future(self._protect(route, namespace, key, scope, payload, body))
        answer = await asyncio.shield(attempt)
        await _send(send, answer)

    async def _protect(self, route: Route, namespace: str, key: str, scope, fingerprinted: tuple, body: bytes) -> Answer:
        payload, ignore = fingerprinted
        # Set as the attempt goes: "attempt" once acquired, "answer" once the app has answered.
        progress: dict = {}

        async def call_app(attempt) -> Result:
            progress["attempt"] = attempt
            try:
                answer = await _capture(self.app, _acquired(route, scope, attempt), body)
            except _BrokenOff as broken:
                if route.releases(broken.answer.status):
                    raise broken.error  # a failure status releases, whole or not
                raise
            progress["answer"] = answer
            if route.releases(answer.status):
                raise _Release(answer)
            if len(answer.body) > route.max_stored_response_bytes:
                raise _NotStored(answer, f"more than the {route.max_stored_response_bytes} bytes this route stores")
            keep = ALWAYS_REPLAYED + tuple(h.lower() for h in route.replay_headers)
            stored = encode_stored(answer.status, answer.headers, keep, answer.body)
            return Result(response=stored, content_type=MEDIA_TYPE, status_code=answer.status)

        try:
            outcome = await self.coordinator.run(
                namespace,
                key,
                call_app,
                json_payload=payload,
                ignore_fields=ignore,
                lease_ttl=route.lease_ttl,
                wait=route.wait,
                give_up_after=route.wait,
                retention=route.retention,
            )
        except _BrokenOff as broken:
            raise broken.error  # the server answers the app's failure as it would without this middleware
        except (_Release, _NotStored) as ended:
            return ended.answer
        except IdempotencyError as error:
            if "answer" in progress:
                return await self._answered_but_not_stored(route, namespace, key, progress, error)
            return await self._not_begun(route, scope, body, error)
        if not outcome.replayed:
            return progress["answer"]
        try:
            replayed = decode_stored(outcome.response or b"")
        except ValueError as error:
            return problem(409, "response-not-replayable", "The response to this request cannot be replayed", str(error))
        replayed.headers.append((b"idempotent-replayed", b"true"))
        return replayed

    async def _answered_but_not_stored(self, route: Route, namespace: str, key: str, progress: dict, error) -> Answer:
        """The app answered and Complete failed: the client still gets the
        answer, and the record ends not replayable so no retry runs it again
        (fail_open is about Begin only: the app never runs twice)."""
        answer = progress["answer"]
        if isinstance(error, LeaseLostError):
            # Another attempt took over while the app worked: its answer is passed on, not stored.
            log.warning("lease lost on %s while the app worked; its answer is not stored", route.path)
            return answer
        refused = isinstance(error, InvalidRequestError)
        why = "over the coordinator's result limit" if refused else f"not stored: {error}"
        # A coordinator that refused the answer is there to take the mark; one that
        # stayed away while Complete was retried for a whole lease gets one more try.
        patience = route.lease_ttl if refused else 0.0
        try:
            await self.coordinator.fail(namespace, key, progress["attempt"], _NotStored(answer, why),
                                        retention=route.retention, patience=patience)
        except IdempotencyError as failed:
            # The lease lapses; a retry after that takes over (with a higher fencing token).
            log.error("cannot store the app's answer on %s (%s) nor mark it not replayable (%s)", route.path, error, failed)
        return answer

    async def _not_begun(self, route: Route, scope, body: bytes, error: IdempotencyError) -> Answer:
        """The answer to a Begin that did not acquire: the app has not run."""
        if isinstance(error, KeyReusedError):
            detail = "This Idempotency-Key was already used with a different method, path, query, headers or body."
            differing = error.differing_members
            if differing:
                detail += " Members that differ: " + ", ".join(differing) + "."
            return problem(422, "idempotency-key-reused", "Idempotency-Key was used for a different request", detail, differing_members=differing)
        if isinstance(error, ReplayedFailure):
            if error.code == RESPONSE_NOT_STORED:
                return problem(409, "response-not-replayable", "The response to this request cannot be replayed", str(error))
            return problem(409, "request-failed", "The request with this Idempotency-Key failed", str(error))
        if isinstance(error, UnavailableError):
            if error.reason == "IN_PROGRESS":
                detail = "Retry after the time in Retry-After; the first request's answer will be replayed."
                return problem(409, "request-in-progress", "A request with this Idempotency-Key is in progress", detail, error.retry_after)
            if route.fail_open:
                log.warning("coordinator unavailable: forwarding WITHOUT idempotency protection (fail_open) on %s", route.path)
                try:
                    return await _capture(self.app, scope, body)
                except _BrokenOff as broken:
                    raise broken.error
            detail = "The request was not forwarded, so it has not run; retry after the time in Retry-After."
            return problem(503, "coordinator-unavailable", "Idempotency protection is unavailable", detail, error.retry_after)
        log.error("the coordinator refused the middleware's call: %s", error)
        detail = "The request was not forwarded, so it has not run; the application's log says why."
        return problem(500, "gateway-misconfigured", "The idempotency middleware is misconfigured", detail)


def _namespace(route: Route, scope, headers: dict) -> Optional[str]:
    """The coordinator namespace of this caller's records on `route`; None
    when the request carries no identity."""
    source, header = identity_source(route)
    if source == "none":
        return route.namespace
    if header is not None:
        value = ", ".join(headers.get(header, [])).encode("latin-1")
    else:
        value = route.identity(scope)
        if value is not None and not isinstance(value, bytes):
            value = str(value).encode()
    if not value or not value.strip():
        return None
    return scoped_namespace(route, source, value)


def _identity_missing(route: Route) -> Answer:
    _source, header = identity_source(route)
    said = f"the {header.title()} header" if header else "the application's identity function"
    detail = f"This route keeps each caller's Idempotency-Keys apart by {said}, and this request has no value there."
    return problem(401, "identity-missing", "The caller's identity is missing", detail)


def _acquired(route: Route, scope, attempt) -> dict:
    """The scope the app sees on an acquired attempt: the fencing token, and
    Idempotency-Recovered when an earlier attempt was abandoned or released."""
    headers = list(scope["headers"]) + [(route.fencing_token_header.lower().encode(), str(attempt.fencing_token).encode())]
    if attempt.recovered is not None:
        headers.append((route.recovered_header.lower().encode(), b"true"))
    return {**scope, "headers": headers}


async def _read_body(receive, limit: int) -> Optional[bytes]:
    """The whole request body, or None once it is over `limit`; raises
    _ClientGone when the client disconnects first (a truncated body must
    never reach the app)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _capture(app, scope, body: bytes) -> Answer:
    """Runs the app on `body` and keeps its whole answer; raises _BrokenOff
    when the app fails after it sent a status that would be stored."""
    answer = Answer(500, [], b"")
    started = sent_whole = False
    sent_body = False
    chunks = []

    async def receive():
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the attempt finishes whatever the client does

    async def send(message):
        nonlocal started, sent_whole
        if message["type"] == "http.response.start":
            started = True
            answer.status, answer.headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            sent_whole = not message.get("more_body", False)

    try:
        await app(scope, receive, send)
    except Exception as error:
        answer.body = b"".join(chunks)
        if started and not sent_whole:
            raise _BrokenOff(answer, error) from error
        if not started:
            raise
        # Whole, then failed (Starlette sends its 500 page, then raises): the answer stands.
        log.warning("the app failed after it answered %s: %r", answer.status, error)
    answer.body = b"".join(chunks)
    return answer


def _no_store(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", []) if h[0].lower() != b"cache-control"]
            message = {**message, "headers": headers + [(b"cache-control", b"no-store")]}
        await send(message)

    return wrapped


async def _send(send, answer: Answer) -> None:
    headers = [h for h in answer.headers if h[0].lower() not in (b"cache-control", b"content-length")]
    headers += [(b"cache-control", b"no-store"), (b"content-length", str(len(answer.body)).encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


__all__ = ["IdempotencyMiddleware", "Route"]
