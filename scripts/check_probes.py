"""Checks a rendered Kustomize output (scripts/render_kustomize.py) against
the server: the probes name health services it serves (src/shell/health.rs), on
the port that serves them — the gRPC port, or the plaintext health port when
the ConfigMap turns TLS on — and the metrics and TLS settings agree with the
container's ports and mounts.

Usage: check_probes.py RENDERED.yaml...
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
health = (ROOT / "src" / "shell" / "health.rs").read_text()
served = {""} | set(re.findall(r'pub const \w+: &str = "([^"]+)";', health))
server_defaults = dict(
    re.findall(r'env = "(IDEMPOTENCY_\w+)", default_value = "([^"]+)"', (ROOT / "src" / "shell" / "config.rs").read_text())
)


def port(address):
    return int(address.rsplit(":", 1)[1])


def check(resources):
    problems = []
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    config = {**server_defaults, **next(r for r in resources if r["kind"] == "ConfigMap")["data"]}
    tls = "IDEMPOTENCY_TLS_CERT" in config
    grpc_port = port(config["IDEMPOTENCY_LISTEN"])
    health_port = port(config["IDEMPOTENCY_HEALTH_LISTEN"]) if tls else grpc_port
    metrics_port = port(config["IDEMPOTENCY_METRICS_LISTEN"])

    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected_ports = {"grpc": grpc_port, "metrics": metrics_port} | ({"health": health_port} if tls else {})
    for name, number in expected_ports.items():
        if ports.get(name) != number:
            problems.append(f"containerPort {name} is {ports.get(name)}, the server listens on {number}")
    if str(metrics_port) != pod["metadata"]["annotations"].get("prometheus.io/port"):
        problems.append("the prometheus.io/port annotation does not match the metrics port")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind, {}).get("grpc")
        if probe is None:
            problems.append(f"{kind} is not a gRPC probe")
            continue
        if probe["port"] != health_port:
            where = "the health port, since TLS is on" if tls else "the gRPC port"
            problems.append(f"{kind} probes port {probe['port']}, but plaintext health is on port {health_port} ({where})")
        if probe.get("service", "") not in served:
            problems.append(f"{kind} names health service {probe.get('service')!r}; the server serves {sorted(served)}")
    if container["readinessProbe"]["grpc"].get("service") not in ("readiness", "idempotency.v1.CoordinatorService"):
        problems.append("the readinessProbe must use a name that follows etcd (readiness)")
    if container["livenessProbe"]["grpc"].get("service", "") not in ("", "liveness"):
        problems.append("the livenessProbe must not depend on etcd (use liveness)")

    mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
    for setting in ("IDEMPOTENCY_TLS_CERT", "IDEMPOTENCY_TLS_KEY", "IDEMPOTENCY_TLS_CLIENT_CA", "IDEMPOTENCY_TOKENS_FILE"):
        path = config.get(setting)
        if path and not any(path.startswith(mount) for mount in mounts):
            problems.append(f"{setting}={path} lies on no volume mount (the root filesystem is read-only and empty)")
    return tls, problems


failed = False
for rendered in sys.argv[1:]:
    tls, problems = check([doc for doc in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if doc])
    for problem in problems:
        print(f"deploy: {rendered}: {problem}")
    mode = "TLS, probes on the health port" if tls else "plaintext"
    print(f"deploy: {rendered} ({mode}): probes and ports checked against src/shell/health.rs: {len(problems)} problems")
    failed |= bool(problems)
sys.exit(1 if failed else 0)
