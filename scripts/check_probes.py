"""Checks rendered Kustomize output (`kubectl kustomize`) against the server's
own view of its configuration: for each layout, the server binary is run with
the rendered ConfigMap as its environment (`serve --print-config`, which reads
no files and binds nothing), and the probes must name health services it
serves, on the port that serves them — the gRPC port, or the plaintext health
port when TLS is on — and the metrics port, TLS files and container ports must
agree with what it reports. Nothing here reads Rust source.

With a shard map (`IDEMPOTENCY_SHARD_MAP`), the file must come from a mounted
ConfigMap key of the same render, and every etcd endpoint it names must be a
member of a StatefulSet behind a headless Service of that render.

Usage: check_probes.py SERVER_BINARY RENDERED.yaml...
"""

import json
import pathlib
import subprocess
import sys
import tomllib
from urllib.parse import urlparse

import yaml


def port(address):
    return int(address.rsplit(":", 1)[1])


def server_view(binary, config_map):
    """The settings the server would run with under this ConfigMap."""
    result = subprocess.run(
        [binary, "serve", "--print-config"],
        env={key: str(value) for key, value in config_map.items()},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"deploy: the server refuses this ConfigMap: {result.stderr.strip()}")
    return json.loads(result.stdout)


def check(binary, resources):
    problems = []
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"]
    view = server_view(binary, named(resources, "ConfigMap", env_from)["data"])
    tls = view["tls"]["cert"] is not None
    grpc_port = port(view["listen"])
    health_port = port(view["health_listen"]) if tls else grpc_port
    metrics_port = port(view["metrics_listen"])
    liveness, readiness = view["health"]["liveness"], view["health"]["readiness"]

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
        if probe.get("service", "") not in liveness + readiness:
            problems.append(f"{kind} names health service {probe.get('service')!r}; the server serves {liveness + readiness}")
    if container["readinessProbe"]["grpc"].get("service") not in readiness:
        problems.append(f"the readinessProbe must use a name that follows etcd: {readiness}")
    if container["livenessProbe"]["grpc"].get("service", "") not in liveness:
        problems.append(f"the livenessProbe must not depend on etcd: use one of {liveness}")

    mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
    files = {f"tls.{name}": path for name, path in view["tls"].items()} | {"tokens_file": view["tokens_file"]}
    for setting, path in files.items():
        if path and not any(path.startswith(mount) for mount in mounts):
            problems.append(f"{setting}={path} lies on no volume mount (the root filesystem is read-only and empty)")
    if view["etcd"]["shard_map"]:
        problems += shard_map_problems(view["etcd"]["shard_map"], resources, pod)
    return tls, problems


def named(resources, kind, name):
    return next((r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name), None)


def shard_map_problems(path, resources, pod):
    """The shard map's file must be a mounted ConfigMap key, and its endpoints
    members of this render's etcd StatefulSets (pod `name-N` of Service `name`)."""
    container = pod["spec"]["containers"][0]
    mount = next((m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    if mount is None:
        return [f"shard map {path} lies on no volume mount"]
    volume = next(v for v in pod["spec"].get("volumes", []) if v["name"] == mount["name"])
    config_map = named(resources, "ConfigMap", volume.get("configMap", {}).get("name"))
    key = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    if config_map is None or key not in config_map.get("data", {}):
        return [f"shard map {path} is no key of a ConfigMap in this render"]
    problems = []
    for shard, table in tomllib.loads(config_map["data"][key]).get("shard", {}).items():
        for endpoint in table.get("endpoints", []):
            member, _, service = urlparse(endpoint).hostname.partition(".")
            statefulset = named(resources, "StatefulSet", service)
            if named(resources, "Service", service) is None or statefulset is None:
                problems.append(f"shard {shard}: {endpoint} names no etcd Service and StatefulSet {service!r}")
            elif not (
                member.startswith(service + "-")
                and member.rsplit("-", 1)[1].isdigit()
                and int(member.rsplit("-", 1)[1]) < statefulset["spec"]["replicas"]
            ):
                problems.append(f"shard {shard}: {endpoint} is no member of StatefulSet {service!r}")
    return problems


binary, rendered_files = sys.argv[1], sys.argv[2:]
failed = False
for rendered in rendered_files:
    tls, problems = check(binary, [doc for doc in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if doc])
    for problem in problems:
        print(f"deploy: {rendered}: {problem}")
    mode = "TLS, probes on the health port" if tls else "plaintext"
    print(f"deploy: {rendered} ({mode}): probes and ports checked against `serve --print-config`: {len(problems)} problems")
    failed |= bool(problems)
sys.exit(1 if failed else 0)
