"""Checks that the Deployment's probes name health services the server really
serves (src/health.rs) on the port it really listens on (the ConfigMap's
IDEMPOTENCY_LISTEN), and that the metrics port agrees everywhere."""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
health = (ROOT / "src" / "health.rs").read_text()
served = {""} | set(re.findall(r'pub const \w+: &str = "([^"]+)";', health))
deployment = yaml.safe_load((ROOT / "deploy" / "base" / "deployment.yaml").read_text())
config = yaml.safe_load((ROOT / "deploy" / "base" / "configmap.yaml").read_text())["data"]
grpc_port = int(config["IDEMPOTENCY_LISTEN"].rsplit(":", 1)[1])
metrics_port = int(config["IDEMPOTENCY_METRICS_LISTEN"].rsplit(":", 1)[1])

problems = []
pod = deployment["spec"]["template"]
container = pod["spec"]["containers"][0]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
if ports.get("grpc") != grpc_port:
    problems.append(f"containerPort grpc {ports.get('grpc')} != IDEMPOTENCY_LISTEN port {grpc_port}")
if ports.get("metrics") != metrics_port:
    problems.append(f"containerPort metrics {ports.get('metrics')} != IDEMPOTENCY_METRICS_LISTEN port {metrics_port}")
if str(metrics_port) != pod["metadata"]["annotations"].get("prometheus.io/port"):
    problems.append("the prometheus.io/port annotation does not match the metrics port")
for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
    probe = container.get(kind, {}).get("grpc")
    if probe is None:
        problems.append(f"{kind} is not a gRPC probe")
        continue
    if probe["port"] != grpc_port:
        problems.append(f"{kind} probes port {probe['port']}, the server listens on {grpc_port}")
    if probe.get("service", "") not in served:
        problems.append(f"{kind} names health service {probe.get('service')!r}; the server serves {sorted(served)}")
if container["readinessProbe"]["grpc"].get("service") not in ("readiness", "idempotency.v1.CoordinatorService"):
    problems.append("the readinessProbe must use a name that follows etcd (readiness)")
if container["livenessProbe"]["grpc"].get("service", "") not in ("", "liveness"):
    problems.append("the livenessProbe must not depend on etcd (use liveness)")

for problem in problems:
    print(f"deploy: {problem}")
print(f"deploy: probes and ports checked against src/health.rs {sorted(served)}: {len(problems)} problems")
sys.exit(1 if problems else 0)
