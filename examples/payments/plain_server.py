"""The same payments API with no idempotency code at all: every POST charges.
Put the gateway in front of it (`idempotency-coordinator gateway --routes
examples/payments/routes.toml --upstream http://127.0.0.1:PORT`) and a
double submit charges once, with no change here. GET /charges lists what the
"provider" charged, with the Idempotency-Key and fencing token each charge
arrived with, so the demo can count charges per key.

    python3 plain_server.py --port 8080
    python3 plain_server.py --listen 127.0.0.1:8080   # as deploy/examples/payments-api runs it
"""

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

charges = []  # the payment provider's books: what really got charged
charges_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        try:
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        if self.path != "/charges":
            return self.reply(404, {"error": "not found"})
        with charges_lock:
            return self.reply(200, {"charges": list(charges)})

    def do_POST(self):
        if self.path != "/payments":
            return self.reply(404, {"error": "not found"})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        time.sleep(float(self.headers.get("X-Simulate-Latency", "0")))  # the provider is slow today
        charge = {
            "id": f"ch_{uuid.uuid4().hex[:12]}",
            "amount": body.get("amount"),
            "key": self.headers.get("Idempotency-Key"),
            "fencing_token": self.headers.get("Idempotency-Fencing-Token"),
        }
        with charges_lock:
            charges.append(charge)
        self.reply(201, charge, [("Location", f"/payments/{charge['id']}")])

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:--port)")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1) if args.listen else ("127.0.0.1", args.port)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print(f"plain payments API on http://{host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
