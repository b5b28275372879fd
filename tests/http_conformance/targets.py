"""The edges the suite runs against, each serving routes.json in front of a
service that records its executions: the gateway binary in front of
recording_service.py, the ASGI middleware around a Starlette app in uvicorn
(asgi_app.py), and the Express middleware around an Express 5 and an Express 4
app (express_app.js). Each runs as its own process, so a crash shows."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import httpx

from harness import REPO, free_port

HERE = pathlib.Path(__file__).resolve().parent
NAMES = ["gateway", "asgi", "express5", "express4"]


def routes(target: str, drop: str = "") -> dict:
    """routes.json with each namespace under this target's own prefix, and
    without the setting `drop` (to see a target refuse to start without it)."""
    config = json.loads((HERE / "routes.json").read_text())
    for route in config["routes"]:
        route["namespace"] = f"conformance.{target}.{route['namespace']}"
        route.pop(drop, None)
    return config


def gateway_toml(config: dict) -> str:
    lines = []
    for route in config["routes"]:
        lines += ["[[route]]", f'name = "{route["name"]}"', 'methods = ["POST"]', f'path = "{route["path"]}"',
                  f'namespace = "{route["namespace"]}"', 'upstream_timeout = "10s"']
        for field in ("identity", "key"):
            if field in route:
                lines.append(f'{field} = "{route[field]}"')
        for field in ("lease_ttl", "wait"):
            if field in route:
                lines.append(f'{field} = "{route[field]}s"')
        if route.get("fail_open"):
            lines.append("fail_open = true")
        if "max_stored_response_bytes" in route:
            lines.append(f'max_stored_response_bytes = {route["max_stored_response_bytes"]}')
        lines.append("")
    return "\n".join(lines)


class Target:
    def __init__(self, name: str, coordinator: str):
        self.name, self.coordinator = name, coordinator
        self.directory = tempfile.TemporaryDirectory(prefix=f"conformance-{name}-")
        self.processes = []
        self.port = free_port()
        self.records_port = self.port

    def commands(self, config: dict) -> list:
        """The processes that serve `config`, the edge last."""
        config_file = pathlib.Path(self.directory.name) / "routes.json"
        config_file.write_text(json.dumps(config))
        if self.name == "gateway":
            self.records_port = free_port()
            toml = pathlib.Path(self.directory.name) / "routes.toml"
            toml.write_text(gateway_toml(config))
            binary = os.environ.get("IDEMPOTENCY_BIN", str(REPO / "target" / "debug" / "idempotency-coordinator"))
            return [
                [sys.executable, str(HERE / "recording_service.py"), str(self.records_port), str(config_file)],
                [binary, "gateway", "--routes", str(toml), "--listen", f"127.0.0.1:{self.port}",
                 "--upstream", f"http://127.0.0.1:{self.records_port}", "--admin-listen", "127.0.0.1:0",
                 "--addr", f"http://{self.coordinator}", "--owner", "conformance-gateway", "--log", "warn"],
            ]
        if self.name == "asgi":
            return [[sys.executable, str(HERE / "asgi_app.py"), str(self.port), self.coordinator, str(config_file)]]
        module = {"express5": "express", "express4": "express4"}[self.name]
        return [["node", str(HERE / "express_app.js"), module, str(self.port), self.coordinator, str(config_file)]]

    def spawn(self, command: list) -> subprocess.Popen:
        log = open(pathlib.Path(self.directory.name) / f"{len(self.processes)}.log", "w+")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        process.log = log
        self.processes.append(process)
        return process

    def start(self, config: dict) -> "Target":
        for command in self.commands(config):
            self.spawn(command)
        deadline = time.monotonic() + 60
        while not self._answers("/_executions") or (self.name == "gateway" and not self._answers("/nowhere")):
            for process in self.processes:
                assert process.poll() is None, f"{self.name} exited: {self.output(process)}"
            assert time.monotonic() < deadline, f"{self.name} did not start"
            time.sleep(0.05)
        return self

    def refused(self, config: dict, seconds: float = 30) -> str:
        """What the edge printed when it refused to start with `config`."""
        edge = self.spawn(self.commands(config)[-1])
        try:
            edge.wait(seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} started with {config}")
        assert edge.returncode != 0
        return self.output(edge)

    def _answers(self, path: str) -> bool:
        try:
            port = self.records_port if path == "/_executions" else self.port
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
            return True
        except httpx.HTTPError:
            return False

    @staticmethod
    def output(process) -> str:
        process.log.flush()
        process.log.seek(0)
        return process.log.read()

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def executions(self, **match) -> list:
        """The service's executions, those whose fields equal `match`."""
        every = httpx.get(f"http://127.0.0.1:{self.records_port}/_executions", timeout=10).json()
        return [e for e in every if all(e.get(field) == value for field, value in match.items())]

    def stop(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
            process.log.close()
        self.processes = []
        self.directory.cleanup()
