"""Checks a rendered layout with the gateway sidecar (`kubectl kustomize
deploy/examples/payments-api`) against the gateway's own view of its
settings: the gateway binary is run with the sidecar's environment and the
rendered routes file (`gateway --check`, which binds nothing), and its
probes, ports, Service and scrape annotation must agree with what it reports.

Usage: check_gateway_sidecar.py BINARY RENDERED.yaml
"""

import json
import pathlib
import subprocess
import sys
import tempfile

import yaml


def port(address):
    return int(address.rsplit(":", 1)[1])


def check(binary, resources):
    problems = []
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "idempotency-gateway")
    env = {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}
    routes_path = pathlib.PurePosixPath(env["IDEMPOTENCY_GATEWAY_ROUTES"])
    mount = next((m for m in sidecar["volumeMounts"] if routes_path.is_relative_to(m["mountPath"])), None)
    if mount is None:
        return [f"the routes file {routes_path} lies on no volume mount"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = next(r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == volume["configMap"]["name"])
    routes = config_map["data"].get(routes_path.name)
    if routes is None:
        return [f"ConfigMap {config_map['metadata']['name']} has no key {routes_path.name}"]

    with tempfile.NamedTemporaryFile("w", suffix=".toml") as file:
        file.write(routes)
        file.flush()
        result = subprocess.run(
            [binary, "gateway", "--check"],
            env=env | {"IDEMPOTENCY_GATEWAY_ROUTES": file.name},
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        return [f"the gateway refuses this configuration: {result.stderr.strip()}"]
    view = json.loads(result.stdout)

    listen, admin, upstream = port(view["listen"]), port(view["admin_listen"]), port(view["upstream"].rstrip("/"))
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    if ports.get("http") != listen:
        problems.append(f"containerPort http is {ports.get('http')}, the gateway listens on {listen}")
    if upstream == listen:
        problems.append("the gateway's upstream is its own port")
    for kind, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        probe = sidecar.get(kind, {}).get("httpGet", {})
        if (probe.get("port"), probe.get("path")) != (admin, path):
            problems.append(f"{kind} is {probe}, expected GET {path} on the admin port {admin}")
    if pod["metadata"].get("annotations", {}).get("prometheus.io/port") != str(admin):
        problems.append("the prometheus.io/port annotation does not name the gateway's admin port")
    for service in (r for r in resources if r["kind"] == "Service"):
        for service_port in service["spec"]["ports"]:
            if service_port["targetPort"] not in ("http", listen):
                problems.append(f"Service {service['metadata']['name']} bypasses the gateway (targetPort {service_port['targetPort']})")
    print(f"deploy: gateway sidecar with {len(view['routes'])} routes, listening on {listen}, admin on {admin}")
    return problems


binary, rendered = sys.argv[1], sys.argv[2]
problems = check(binary, [doc for doc in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if doc])
for problem in problems:
    print(f"deploy: {rendered}: {problem}")
print(f"deploy: {rendered}: gateway sidecar checked against `gateway --check`: {len(problems)} problems")
sys.exit(1 if problems else 0)
