"""A tiny payments API that uses the idempotency coordinator.

POST /payments with an `Idempotency-Key` header and a JSON body
{"amount": 100, "currency": "EUR"} charges a (simulated) card at most once per
key. A retry gets the stored response with `Idempotent-Replayed: true`; a key
reused with a different body gets 422. Every response has
`Cache-Control: no-store`. GET /charges lists what the "provider" charged.

    python3 server.py --port 8080 --coordinator 127.0.0.1:50051
"""

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from idempotency_client import Coordinator, KeyReusedError, Result, UnavailableError

charges = []  # the payment provider's books: what really got charged
charges_lock = threading.Lock()


def make_handler(coordinator: Coordinator):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, status, body, replayed=False):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            if replayed:
                self.send_header("Idempotent-Replayed", "true")
            self.send_header("Content-Length", str(len(data)))
            try:
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up; the outcome is stored and its retry gets the replay

        def do_GET(self):
            if self.path != "/charges":
                return self.reply(404, {"error": "not found"})
            with charges_lock:
                return self.reply(200, {"charges": list(charges)})

        def do_POST(self):
            if self.path != "/payments":
                return self.reply(404, {"error": "not found"})
            key = self.headers.get("Idempotency-Key")
            if not key:
                return self.reply(400, {"error": "the Idempotency-Key header is required"})
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            latency = float(self.headers.get("X-Simulate-Latency", "0"))

            def charge(attempt):
                time.sleep(latency)  # the provider is slow today
                charge = {"id": f"ch_{uuid.uuid4().hex[:12]}", "amount": body.get("amount"), "key": key,
                          "fencing_token": attempt.fencing_token}
                with charges_lock:
                    charges.append(charge)
                return Result(response=json.dumps(charge).encode(), content_type="application/json", status_code=201)

            try:
                outcome = coordinator.run("payments.create", key, charge, json_payload=body, wait=10)
            except KeyReusedError:
                return self.reply(422, {"error": "this Idempotency-Key was used for a different request"})
            except UnavailableError as error:
                return self.reply(503, {"error": str(error)})
            return self.reply(outcome.status_code or 200, outcome.response, replayed=outcome.replayed)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--coordinator", default="127.0.0.1:50051")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Coordinator(args.coordinator, owner="payments-example")))
    print(f"payments API on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
