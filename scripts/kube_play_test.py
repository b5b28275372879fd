#!/usr/bin/env python3
"""The manifests brought up with podman (run by scripts/image-test.sh):
`podman kube play` of what `kubectl kustomize deploy/overlays/dev` renders —
the coordinator Deployment with its ConfigMap and the 3-member etcd
StatefulSet, on an etcd image built here from Debian's etcd-server — then of
deploy/examples/payments-api (the payments service and the gateway sidecar).
scripts/podman_manifests.py says what had to change for podman to play them.

Then, against the running pods:
- the probes the manifests declare (podman runs none of them: see
  IGNORED_PER_PODMAN_DOCS and observe_podman_view), performed by this script
  as the kubelet would;
- the declared container ports and the Prometheus annotation's port answer;
- each container runs with its securityContext: uid and gid, no effective
  capabilities, no_new_privs, a read-only root filesystem;
- the ConfigMap's settings reach the coordinator (debug logs, as JSON);
- the etcd members found each other by their names (etcd-0.etcd, ...);
- a Begin/Complete/replay through the coordinator, over the 3-member etcd;
- one Idempotency-Key submitted twice to the payments pod: one charge.

    kube_play_test.py BINARY     (the host copy of the image's binary, for the CLI)
    KUBE_PLAY_KEEP=1 leaves the pods running, to look at them.
"""

import fcntl
import json
import os
import socket
import subprocess
import sys
import time

import yaml
from container_engine import ROOT, STATE, Engine, http, say, wait_for
from image_test import double_submit, field
from podman_manifests import Played, address, pod_template, podman_pod_name

COORDINATOR_IMAGE = "localhost/idempotency-coordinator:0.1.0"
ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"  # what deploy/etcd names
LOCAL_ETCD_IMAGE = "localhost/etcd:3.4.23-debian"
PAYMENTS_IMAGE = "registry.example.com/payments-api:1.0.0"  # what the example names: built here under that name
NETWORK, SUBNET, LOOPBACK = "idempotency-kube-play", "10.89.28", "127.0.28"
# The example's gateway names the coordinator in namespace idempotency (the
# prod overlay's); here the dev overlay's coordinator answers that name.
EXAMPLE_COORDINATOR = ("idempotency-coordinator.idempotency.svc", "idempotency-coordinator-pod-0")
# Static IPs and host addresses are the machine's: one run at a time.
LOCK = "/var/tmp/idempotency-kube-play.lock"

# What podman 4.3's podman-kube-play(1) support table lists as unsupported,
# of what these manifests declare; observe_podman_view() checks the rest on
# the running containers.
IGNORED_PER_PODMAN_DOCS = """\
per podman-kube-play(1) (4.3), podman does not act on: startupProbe, readinessProbe, lifecycle.preStop,
  terminationGracePeriodSeconds, pod securityContext fsGroup and seccompProfile, runAsNonRoot,
  topologySpreadConstraints, serviceAccountName, automountServiceAccountToken, Deployment strategy
  (no rolling update) and revisionHistoryLimit; kinds other than Pod, Deployment, PVC and ConfigMap"""



def render(layout):
    out = subprocess.run(["kubectl", "kustomize", os.path.join(ROOT, "deploy", layout)],
                         check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


class Pods:
    """The played pods: where each one's declared ports are published."""

    def __init__(self, engine, addresses):
        self.engine, self.addresses = engine, addresses

    def host(self, pod_name):
        return self.addresses[pod_name][1]

    def container(self, pod_name, container_name):
        return f"{pod_name}-{container_name}"


def play(engine, played, path, ips):
    with open(path, "w") as f:
        yaml.safe_dump_all(played.resources, f, sort_keys=False)
    argv = ["kube", "play", "--network", NETWORK, "--quiet"]
    for ip in ips:
        argv += ["--ip", ip]
    engine.podman(*argv, path, timeout=180)


def tear_down(engine, paths, played_renders):
    for path in paths:
        if os.path.exists(path):
            engine.podman("kube", "down", path, check=False)
    # podman keeps the volumes it made for claims and for ConfigMaps mounted
    # as volumes; the next play must start from fresh ones.
    volumes = [r["metadata"]["name"] for p in played_renders for r in p.resources
               if r["kind"] in ("PersistentVolumeClaim", "ConfigMap")]
    existing = set(engine.podman("volume", "ls", "--quiet").stdout.split())
    if existing & set(volumes):
        engine.podman("volume", "rm", "--force", *(existing & set(volumes)))


def probe(binary, host, container, kind):
    """Runs a declared probe as the kubelet would, against the pod's published
    ports; returns what it did."""
    spec = container[kind]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    if "grpc" in spec:
        port, service = spec["grpc"]["port"], spec["grpc"].get("service", "")
        out = subprocess.run([binary, "--addr", f"http://{host}:{port}", "health", "--service", service, "--timeout", "1s"],
                             capture_output=True, text=True).stdout.strip()
        assert out == "SERVING", f"{kind} grpc {port} {service!r}: {out}"
        return f"grpc {port} {service}"
    if "httpGet" in spec:
        port = spec["httpGet"]["port"]
        port = ports.get(port, port)
        status = http("GET", f"http://{host}:{port}{spec['httpGet']['path']}", timeout=2)[0]
        assert 200 <= status < 400, f"{kind} httpGet {port}{spec['httpGet']['path']}: {status}"
        return f"http {port}{spec['httpGet']['path']}"
    raise AssertionError(f"{kind}: a probe kind this script does not perform: {spec}")


def check_pod(pods, binary, resource, timeout):
    """Waits until every declared probe of every container of the pod
    passes, then checks ports and securityContext."""
    pod_name = podman_pod_name(resource)
    metadata, spec = pod_template(resource)
    host = pods.host(pod_name)
    done = []
    for container in spec["containers"]:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if kind in container:
                done.append(wait_for(f"{pod_name}/{container['name']} {kind}",
                                     lambda c=container, k=kind: probe(binary, host, c, k), timeout, interval=0.1))
        for port in container.get("ports", []):
            with socket.create_connection((host, port["containerPort"]), timeout=2):
                pass
        check_security(pods, pod_name, spec, container)
    annotation = metadata.get("annotations", {}).get("prometheus.io/port")
    if annotation:
        status, _, body = http("GET", f"http://{host}:{annotation}/metrics")
        assert status == 200 and b"# TYPE" in body, f"{pod_name}: scrape on the annotated port {annotation}: {status}"
    say(f"{pod_name}: probes pass ({'; '.join(sorted(set(done)))}), ports "
        f"{[p['containerPort'] for c in spec['containers'] for p in c.get('ports', [])]} answer"
        + (f", metrics on the annotated port {annotation}" if annotation else ""))


def check_security(pods, pod_name, spec, container):
    """The container's process as the kernel sees it, against its declared securityContext."""
    declared = dict(spec.get("securityContext", {}), **container.get("securityContext", {}))
    status = pods.engine.process_status(pods.container(pod_name, container["name"]))
    want_uid = declared.get("runAsUser")
    assert want_uid is not None, f"{pod_name}/{container['name']} declares no runAsUser"
    assert set(status["Uid"]) == {str(want_uid)}, (pod_name, container["name"], status["Uid"])
    if "runAsGroup" in declared:
        assert set(status["Gid"]) == {str(declared["runAsGroup"])}, (pod_name, container["name"], status["Gid"])
    if declared.get("capabilities", {}).get("drop") == ["ALL"]:
        assert int(status["CapEff"][0], 16) == 0 and int(status["CapBnd"][0], 16) == 0, status["CapBnd"]
    if declared.get("seccompProfile", {}).get("type") == "RuntimeDefault":
        assert status["Seccomp"] == ["2"], f"{pod_name}: no seccomp filter"
    if declared.get("allowPrivilegeEscalation") is False:
        assert status["NoNewPrivs"] == ["1"], status["NoNewPrivs"]
    readonly = pods.engine.podman("inspect", pods.container(pod_name, container["name"]),
                                  "--format", "{{.HostConfig.ReadonlyRootfs}}").stdout.strip()
    assert readonly == str(bool(declared.get("readOnlyRootFilesystem"))).lower(), (pod_name, readonly)


def observe_podman_view(pods, resource):
    """What podman made of the pod's probes and grace period, as it reports
    them: asserted, so a podman that starts honouring them shows up here."""
    pod_name = podman_pod_name(resource)
    _, spec = pod_template(resource)
    seen = []
    for container in spec["containers"]:
        name = pods.container(pod_name, container["name"])
        view = json.loads(pods.engine.podman("inspect", name, "--format", "{{json .Config}}").stdout)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        assert view["StopTimeout"] == 10, view["StopTimeout"]
        seen.append(f"{container['name']}: stops after {view['StopTimeout']} s (declared {grace} s)")
        liveness = container.get("livenessProbe", {})
        check = (view.get("Healthcheck") or {}).get("Test", [])
        if "grpc" in liveness:
            assert not check, f"{name}: a healthcheck from a grpc probe: {check}"
            seen.append(f"{container['name']}: grpc livenessProbe dropped")
        elif "httpGet" in liveness:
            assert "curl" in check, check
            seen.append(f"{container['name']}: httpGet livenessProbe -> healthcheck `{' '.join(check[1:4])}` "
                        "(no curl in the image, no systemd timer to run it)")
    return seen


def check_etcd_cluster(pods):
    members = json.loads(http("POST", f"http://{pods.host('etcd-0')}:2379/v3/cluster/member/list", b"{}")[2])["members"]
    names = sorted((m["name"], m["peerURLs"][0]) for m in members)
    want = [(f"etcd-{i}", f"http://etcd-{i}.etcd:2380") for i in range(3)]
    assert names == want, f"etcd members {names}"
    say("etcd: 3 members, named by POD_NAME (fieldRef) and reaching each other as etcd-N.etcd")


def check_coordinator(engine, pods, binary):
    addr = f"http://{pods.host('idempotency-coordinator-pod-0')}:50051"

    def cli(*args):
        result = subprocess.run([binary, "--addr", addr, *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    key = f"kube-{time.time_ns()}"
    token = field(cli("begin", "-n", "kube.play", "-k", key, "--payload", "p"), "fencing_token")
    cli("complete", "-n", "kube.play", "-k", key, "--token", token, "--response", "done")
    assert cli("begin", "-n", "kube.play", "-k", key, "--payload", "p").startswith("completed: replay")
    # The coordinator logs to stderr; podman logs gives it back there.
    logs = engine.podman("logs", "idempotency-coordinator-pod-0-coordinator").stderr.splitlines()
    parsed = [json.loads(line) for line in logs if line.startswith("{")]
    assert parsed and len(parsed) == len(logs), "the ConfigMap's IDEMPOTENCY_LOG_FORMAT=json: a log line not JSON"
    assert any(line.get("level") == "DEBUG" for line in parsed), "the dev overlay's IDEMPOTENCY_LOG=debug: no DEBUG line"
    say("coordinator: Begin/Complete/replay over the 3-member etcd; the ConfigMap's JSON logs at DEBUG")


def check_payments(pods):
    host = pods.host("payments-api-pod-0")
    # The service container declares no probe (it listens on 127.0.0.1, which
    # the kubelet cannot reach) and the gateway's /readyz does not ask it, so
    # the pod is ready before the service listens, here as on Kubernetes: wait
    # until a request passes through (GET /charges matches no route).
    wait_for("the payments service behind the gateway",
             lambda: http("GET", f"http://{host}:8000/charges", timeout=1)[0] == 200, 30, interval=0.1)
    answers = double_submit(f"http://{host}:8000")
    status, _, body = http("GET", f"http://{host}:8000/charges")
    charges = [c for c in json.loads(body)["charges"] if c["key"] == answers["key"]]
    assert status == 200 and len(charges) == 1, f"{len(charges)} charges for one key"
    assert charges[0]["fencing_token"], "the service saw no fencing token"
    say(f"payments-api pod: double submit through the gateway sidecar -> {answers['statuses']}, "
        f"one charge (fencing token {charges[0]['fencing_token']})")


def main():
    binary = os.path.abspath(sys.argv[1])
    started = time.monotonic()
    engine = Engine()
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        engine.build("coordinator", "deploy/Dockerfile", COORDINATOR_IMAGE, binary)
        engine.build("etcd", "deploy/test-images/etcd/Dockerfile", LOCAL_ETCD_IMAGE)
        engine.build("payments-api", "deploy/test-images/payments-api/Dockerfile", PAYMENTS_IMAGE)
        say(f"images built: etcd {engine.image_size(LOCAL_ETCD_IMAGE) / 1e6:.1f} MB (Debian's etcd-server), "
            f"payments-api {engine.image_size(PAYMENTS_IMAGE) / 1e6:.1f} MB (Debian's python3)")
        dev = Played(render("overlays/dev"), {ETCD_IMAGE: LOCAL_ETCD_IMAGE})
        payments = Played(render("examples/payments-api"), {})
        addresses = address([dev, payments], SUBNET, LOOPBACK, [EXAMPLE_COORDINATOR])
        say(f"left out (no podman counterpart): {', '.join(dev.left_out + payments.left_out)}")
        if engine.podman("network", "exists", NETWORK, check=False).returncode != 0:
            engine.podman("network", "create", "--subnet", f"{SUBNET}.0/24", NETWORK)
        paths = [os.path.join(STATE, "dev.yaml"), os.path.join(STATE, "payments-api.yaml")]
        pods = Pods(engine, addresses)
        tear_down(engine, paths, [dev, payments])
        try:
            played_at = time.monotonic()
            play(engine, dev, paths[0], [addresses[podman_pod_name(p)][0] for p in dev.pods])
            observed = []
            for pod in dev.pods:
                check_pod(pods, binary, pod, 60)
                observed += observe_podman_view(pods, pod)
            say(f"overlays/dev played and every probe passing in {time.monotonic() - played_at:.1f} s")
            check_etcd_cluster(pods)
            check_coordinator(engine, pods, binary)
            play(engine, payments, paths[1], [addresses[podman_pod_name(p)][0] for p in payments.pods])
            for pod in payments.pods:
                check_pod(pods, binary, pod, 60)
                observed += observe_podman_view(pods, pod)
            check_payments(pods)
        finally:
            if os.environ.get("KUBE_PLAY_KEEP"):
                say(f"KUBE_PLAY_KEEP: pods left running; `podman kube down` {' '.join(paths)} with CONTAINERS_CONF and "
                    f"storage under {STATE}")
            else:
                tear_down(engine, paths, [dev, payments])
    for line in dict.fromkeys(observed):  # once each, in order
        say(f"podman's view: {line}")
    print(IGNORED_PER_PODMAN_DOCS, flush=True)
    say(f"kube play passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
