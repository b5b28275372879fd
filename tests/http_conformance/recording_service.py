"""The service behind the gateway target: a small HTTP/1.1 server that serves
the routes of routes.json, records each execution and behaves as the
request's test-only headers say (the ASGI and Express targets' apps do the
same; see README "Tests", HTTP conformance):

- x-test-status: the status to answer (default 201)
- x-test-delay: seconds to work before answering
- x-test-body-bytes: pad the answer's body to about this many bytes
- x-test-break: "after-status": send the status line and part of the body, then break off
- x-test-cache-control: a Cache-Control of the service's own

GET /_executions lists the executions. Like many servers, it routes a path
leniently: percent-decoded, `;params` dropped, repeated and trailing slashes
ignored, so `POST //payments` is served as `/payments` (issue 27, 2).

    python recording_service.py <port> <routes.json>
"""

import json
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROUTES = {route["path"]: route["name"] for route in json.load(open(sys.argv[2]))["routes"]}
ROUTES["/unprotected"] = "unprotected"
executions = []
lock = threading.Lock()


def served_as(raw_path: str) -> str:
    path = urllib.parse.unquote(raw_path.split("?")[0])
    path = "/".join(segment.split(";")[0] for segment in path.split("/"))
    return re.sub("/+", "/", path).rstrip("/") or "/"


class Service(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/_executions":
            return self.answer(404, {"error": "not found"})
        with lock:
            self.answer(200, list(executions))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        handler = ROUTES.get(served_as(self.path))
        if handler is None:
            return self.answer(404, {"error": "not found"})
        with lock:
            execution = len(executions) + 1
            executions.append({
                "handler": handler,
                "path": self.path,
                "body": body.decode("utf-8", "replace"),
                "key": self.headers.get("idempotency-key"),
                "token": self.headers.get("idempotency-fencing-token"),
                "recovered": self.headers.get("idempotency-recovered"),
                "authorization": self.headers.get("authorization"),
                "api_key": self.headers.get("x-api-key"),
                "content_type": self.headers.get("content-type"),
            })
        time.sleep(float(self.headers.get("x-test-delay", "0")))
        status = int(self.headers.get("x-test-status", "201"))
        answer = {"handler": handler, "execution": execution, "token": self.headers.get("idempotency-fencing-token")}
        if self.headers.get("x-test-break") == "after-status":
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "100")
            self.end_headers()
            self.wfile.write(b'{"partial":')
            self.wfile.flush()
            self.close_connection = True
            return
        answer["padding"] = "x" * int(self.headers.get("x-test-body-bytes", "0"))
        extra = {"location": f"/payments/{execution}"}
        if "x-test-cache-control" in self.headers:
            extra["cache-control"] = self.headers["x-test-cache-control"]
        self.answer(status, answer, extra)

    def answer(self, status, document, extra=None):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Service).serve_forever()
