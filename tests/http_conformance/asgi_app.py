"""The ASGI target: a Starlette app behind the ASGI middleware, in uvicorn,
serving the routes of routes.json as recording_service.py does (the same
test-only headers, the same records at GET /_executions).

    python asgi_app.py <port> <coordinator address> <target config.json>
"""

import asyncio
import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route as StarletteRoute

from idempotency_client import AsyncCoordinator
from idempotency_client.asgi import IdempotencyMiddleware, Route

port, coordinator_address, config_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
config = json.load(open(config_path))
executions = []


def handler(name):
    async def execute(request: Request):
        body = await request.body()
        headers = request.headers
        execution = len(executions) + 1
        executions.append({
            "handler": name,
            "path": request.url.path,
            "body": body.decode("utf-8", "replace"),
            "key": headers.get("idempotency-key"),
            "token": headers.get("idempotency-fencing-token"),
            "recovered": headers.get("idempotency-recovered"),
            "authorization": headers.get("authorization"),
            "api_key": headers.get("x-api-key"),
            "content_type": headers.get("content-type"),
        })
        await asyncio.sleep(float(headers.get("x-test-delay", "0")))
        status = int(headers.get("x-test-status", "201"))
        answer = {"handler": name, "execution": execution, "token": headers.get("idempotency-fencing-token")}
        if headers.get("x-test-break") == "after-status":
            async def broken():
                yield b'{"partial":'
                raise RuntimeError("the app broke off its answer (x-test-break)")

            return StreamingResponse(broken(), status_code=status, media_type="application/json")
        answer["padding"] = "x" * int(headers.get("x-test-body-bytes", "0"))
        extra = {"location": f"/payments/{execution}"}
        if "x-test-cache-control" in headers:
            extra["cache-control"] = headers["x-test-cache-control"]
        return JSONResponse(answer, status_code=status, headers=extra)

    return execute


async def list_executions(request: Request):
    return JSONResponse(executions)


paths = [(route["path"], route["name"]) for route in config["routes"]] + [("/unprotected", "unprotected")]
app = Starlette(routes=[StarletteRoute(path, handler(name), methods=["POST"]) for path, name in paths]
                + [StarletteRoute("/_executions", list_executions)])
routes = [
    Route(
        methods=["POST"],
        path=route["path"],
        namespace=route["namespace"],
        key_required=route.get("key", "required") == "required",
        lease_ttl=route.get("lease_ttl", 30),
        wait=route.get("wait", 0),
        fail_open=route.get("fail_open", False),
        max_stored_response_bytes=route.get("max_stored_response_bytes", 192 * 1024),
        **({"identity": route["identity"]} if "identity" in route else {}),
    )
    for route in config["routes"]
]
protected = IdempotencyMiddleware(app, AsyncCoordinator(coordinator_address, owner="conformance-asgi"), routes)
uvicorn.run(protected, host="127.0.0.1", port=port, log_level="warning")
