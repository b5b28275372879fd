#!/usr/bin/env python3
"""The coordinator's image, end to end (run by scripts/image-test.sh): built
from deploy/Dockerfile as users build it, then run by podman with the
restrictions the manifests declare (read-only root filesystem, every
capability dropped, no privilege escalation) against an etcd on this host:

1. what the image holds: only the files CONTENTS lists (no shell, no package
   manager), its user 65532, its size;
2. start to readiness SERVING, with etcd named etcd-0.etcd (a name resolved
   through the image's nsswitch.conf and the engine's /etc/hosts);
3. Begin, Complete and the replay through the image's own CLI;
4. the metrics scrape counting them;
5. SIGTERM with a Begin waiting on a held key: the waiter is answered, the
   process exits 0 within IDEMPOTENCY_SHUTDOWN_GRACE;
6. the same container started again finds the completed record and the lock;
7. the gateway subcommand of the same image in front of the example payments
   service: one Idempotency-Key submitted twice, one charge.

    image_test.py BINARY     (the binary staged into the image; its host copy polls health)
"""

import datetime
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time

from container_engine import ROOT, Engine, HostEtcd, free_port, http, say, wait_for

TAG = "localhost/idempotency-coordinator:0.1.0"
SERVER = "image-test-coordinator"
GATEWAY = "image-test-gateway"
GRACE_SECONDS = 5
ROUTES = os.path.join(ROOT, "deploy", "examples", "payments-api", "routes.toml")
# Files the engine itself puts into every container it creates (mount points).
ENGINE_FILES = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run/.containerenv"}
# The hardening the coordinator's Deployment declares (securityContext).
RESTRICTED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def check_contents(engine, context):
    """Every regular file of the image is one CONTENTS lists (or an engine
    mount point): nothing else, so no shell or package manager."""
    listed = {line.split()[1] for line in open(os.path.join(context, "CONTENTS")) if line.split()[1].startswith("/")}
    engine.remove_containers("image-test-export")
    engine.podman("create", "--name", "image-test-export", TAG)
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "rootfs.tar")
        engine.podman("export", "-o", archive, "image-test-export")
        with tarfile.open(archive) as tar:
            files = {"/" + m.name.lstrip("./") for m in tar.getmembers() if not m.isdir()}
    engine.remove_containers("image-test-export")
    unexpected = files - listed - ENGINE_FILES
    assert not unexpected, f"the image holds files CONTENTS does not list: {sorted(unexpected)}"
    assert listed <= files, f"files missing from the image: {sorted(listed - files)}"
    for forbidden in ("sh", "bash", "busybox", "apt", "apt-get", "dpkg"):
        assert not any(os.path.basename(f) == forbidden for f in files), f"the image holds {forbidden}"
    shell = engine.podman("run", "--rm", "--entrypoint", "/bin/sh", TAG, "-c", "true", check=False)
    assert shell.returncode != 0, "the image ran /bin/sh"
    config = engine.podman("image", "inspect", TAG, "--format", "{{.Config.User}} {{.Config.Entrypoint}} {{.Config.Cmd}}")
    assert config.stdout.split() == ["65532:65532", "[/usr/local/bin/idempotency-coordinator]", "[serve]"], config.stdout
    say(f"image {TAG}: {len(files)} files, {engine.image_size(TAG) / 1e6:.1f} MB; user 65532; no shell "
        f"(/bin/sh: exit {shell.returncode}); contents: {os.path.relpath(context, ROOT)}/CONTENTS")


class Coordinator:
    """The image's server container on the host network, and the image's CLI
    (a second container per call) to talk to it."""

    def __init__(self, engine, binary, etcd):
        self.engine, self.binary = engine, binary
        self.addr = f"http://127.0.0.1:{free_port()}"
        self.metrics = f"http://127.0.0.1:{free_port()}/metrics"
        self.etcd_port = etcd.port

    def run(self):
        """Starts the container; returns the seconds from `podman run` to
        readiness SERVING, and from the container's own start to it."""
        self.engine.remove_containers(SERVER)
        before = time.monotonic()
        self.engine.podman(
            "run", "--detach", "--name", SERVER, "--network", "host", *RESTRICTED,
            # The name the manifests give etcd, resolved from /etc/hosts
            # through the image's nsswitch.conf.
            "--add-host", "etcd-0.etcd:127.0.0.1",
            "-e", f"IDEMPOTENCY_ETCD_ENDPOINTS=http://etcd-0.etcd:{self.etcd_port}",
            "-e", f"IDEMPOTENCY_LISTEN={self.addr.removeprefix('http://')}",
            "-e", f"IDEMPOTENCY_METRICS_LISTEN={self.metrics.removeprefix('http://').removesuffix('/metrics')}",
            "-e", f"IDEMPOTENCY_SHUTDOWN_GRACE={GRACE_SECONDS}s",
            "-e", "IDEMPOTENCY_LOG_FORMAT=json",
            TAG,
        )
        return self.wait_serving(before)

    def start_again(self):
        before = time.monotonic()
        self.engine.podman("start", SERVER)
        return self.wait_serving(before)

    def wait_serving(self, before):
        wait_for("readiness SERVING", lambda: self.health("readiness") == "SERVING", 30, interval=0.02)
        serving = time.monotonic()
        serving_wall = datetime.datetime.now(datetime.timezone.utc)
        started = self.engine.podman("inspect", SERVER, "--format", "{{.State.StartedAt}}").stdout.strip()
        return serving - before, (serving_wall - parse_podman_time(started)).total_seconds()

    def health(self, service):
        result = subprocess.run([self.binary, "--addr", self.addr, "health", "--service", service, "--timeout", "1s"],
                                capture_output=True, text=True)
        return result.stdout.strip()

    def cli(self, *args):
        """One CLI call through the image's own binary."""
        result = self.engine.podman("run", "--rm", "--network", "host", *RESTRICTED, TAG, "--addr", self.addr, *args,
                                    check=False)
        assert result.returncode == 0, f"CLI {' '.join(args)} exited {result.returncode}: {result.stdout}{result.stderr}"
        return result.stdout

    def scrape(self):
        status, _, body = http("GET", self.metrics)
        assert status == 200, f"metrics answered {status}"
        return body.decode()


def assert_runs_as_nonroot(engine, container):
    """The container's process, as the host kernel sees it: uid and gid 65532."""
    status = engine.process_status(container)
    assert set(status["Uid"]) == {"65532"} and set(status["Gid"]) == {"65532"}, (status["Uid"], status["Gid"])
    assert int(status["CapEff"][0], 16) == 0, f"effective capabilities {status['CapEff'][0]}"
    say(f"{container}: uid 65532, gid 65532, no effective capabilities (the host's /proc)")


def parse_podman_time(text):
    """podman's '2026-12-06 05:32:22.007257201 +0000 UTC' as an aware datetime."""
    match = re.match(r"(\S+ \S+?)(?:\.(\d+))? ([+-]\d{4})", text)
    assert match, f"unexpected podman time {text!r}"
    stamp = datetime.datetime.strptime(f"{match.group(1)} {match.group(3)}", "%Y-%m-%d %H:%M:%S %z")
    return stamp + datetime.timedelta(microseconds=int((match.group(2) or "0")[:6].ljust(6, "0")))


def field(output, name):
    match = re.search(rf"^\s+{name}\s+(\S+)", output, re.M)
    assert match, f"no {name} in:\n{output}"
    return match.group(1)


def metric(scrape, line_prefix):
    match = re.search(rf"^{re.escape(line_prefix)} (\S+)$", scrape, re.M)
    assert match, f"no {line_prefix} in the scrape"
    return float(match.group(1))


def begin_complete_replay(coordinator):
    namespace, key = "image.test", f"key-{time.time_ns()}"
    acquired = coordinator.cli("begin", "-n", namespace, "-k", key, "--payload", "charge 100")
    assert acquired.startswith("acquired"), acquired
    token = field(acquired, "fencing_token")
    completed = coordinator.cli("complete", "-n", namespace, "-k", key, "--token", token, "--response", "charged")
    assert completed.startswith("completed"), completed
    replay = coordinator.cli("begin", "-n", namespace, "-k", key, "--payload", "charge 100")
    assert replay.startswith("completed: replay") and field(replay, "response") == "charged", replay
    say(f"Begin (token {token}), Complete and the replay through the image's CLI")
    scrape = coordinator.scrape()
    acquired_count = metric(scrape, 'idempotency_begin_outcomes_total{outcome="acquired"}')
    replayed_count = metric(scrape, 'idempotency_begin_outcomes_total{outcome="replayed_completed"}')
    assert acquired_count >= 1 and replayed_count >= 1, (acquired_count, replayed_count)
    say(f"metrics scraped: {len(scrape.splitlines())} lines, acquired {acquired_count:.0f}, replayed {replayed_count:.0f}")
    return namespace, key


def drain_on_sigterm(engine, coordinator, namespace):
    """A Begin waits on a held key; SIGTERM must answer it and exit 0 within the grace."""
    held = f"held-{time.time_ns()}"
    assert coordinator.cli("begin", "-n", namespace, "-k", held, "--payload", "p", "--lease-ttl", "60s").startswith("acquired")
    waiter = subprocess.Popen(
        [coordinator.binary, "--addr", coordinator.addr, "begin", "-n", namespace, "-k", held, "--payload", "p",
         "--wait", "30s", "--timeout", "40s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    time.sleep(1)  # the waiter is connected and waiting (checked: it must be answered, not refused)
    assert waiter.poll() is None, f"the waiting Begin ended before SIGTERM: {waiter.stdout.read()}"
    signalled = time.monotonic()
    engine.podman("kill", "--signal", "TERM", SERVER)
    code = int(engine.podman("wait", SERVER, timeout=GRACE_SECONDS + 30).stdout.strip())
    drained = time.monotonic() - signalled
    answer, _ = waiter.communicate(timeout=10)
    assert code == 0, f"exit code {code} after SIGTERM:\n{engine.podman('logs', '--tail', '20', SERVER).stdout}"
    assert answer.startswith("in_progress"), f"the waiting Begin got: {answer}"
    assert drained < GRACE_SECONDS, f"drained in {drained:.2f} s, over the {GRACE_SECONDS} s grace"
    say(f"SIGTERM: the waiting Begin answered in_progress, exit 0 after {drained:.2f} s (grace {GRACE_SECONDS} s)")
    return held


def records_survive_restart(coordinator, namespace, key, held):
    took, since_start = coordinator.start_again()
    say(f"restarted: SERVING {took:.2f} s after `podman start` ({since_start:.2f} s after the process started)")
    record = coordinator.cli("lookup", "-n", namespace, "-k", key)
    assert field(record, "state") == "STATE_COMPLETED" and field(record, "response") == "charged", record
    lock = coordinator.cli("begin", "-n", namespace, "-k", held, "--payload", "p")
    assert lock.startswith("in_progress"), f"the held key after the restart: {lock}"
    say("after the restart: the completed record is found, the held key still in progress")


def gateway_double_submit(engine, coordinator):
    upstream_port, listen_port, admin_port = free_port(), free_port(), free_port()
    service = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "examples", "payments", "plain_server.py"), "--listen", f"127.0.0.1:{upstream_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        engine.remove_containers(GATEWAY)
        engine.podman(
            "run", "--detach", "--name", GATEWAY, "--network", "host", *RESTRICTED,
            "-v", f"{ROUTES}:/etc/idempotency-gateway/routes.toml:ro",
            "-e", f"IDEMPOTENCY_ADDR={coordinator.addr}",
            "-e", f"IDEMPOTENCY_GATEWAY_LISTEN=127.0.0.1:{listen_port}",
            "-e", f"IDEMPOTENCY_GATEWAY_UPSTREAM=http://127.0.0.1:{upstream_port}",
            "-e", f"IDEMPOTENCY_GATEWAY_ADMIN_LISTEN=127.0.0.1:{admin_port}",
            "-e", "IDEMPOTENCY_GATEWAY_ROUTES=/etc/idempotency-gateway/routes.toml",
            TAG, "gateway",
        )
        wait_for("the payments service listening",
                 lambda: http("GET", f"http://127.0.0.1:{upstream_port}/charges", timeout=1)[0] == 200, 20)
        wait_for("gateway /readyz 200", lambda: http("GET", f"http://127.0.0.1:{admin_port}/readyz", timeout=1)[0] == 200, 20)
        answers = double_submit(f"http://127.0.0.1:{listen_port}")
        charges = charges_for(f"http://127.0.0.1:{upstream_port}", answers["key"])
        assert charges == 1, f"{charges} charges for one key"
        say(f"gateway from the same image: double submit -> {answers['statuses']}, the second replayed; {charges} charge")
    finally:
        engine.remove_containers(GATEWAY)
        service.kill()
        service.wait()


def double_submit(base):
    """POSTs one payment twice with one Idempotency-Key; both answers must be
    the same 201, the second marked replayed."""
    key = f'"pay-{time.time_ns()}"'  # a Structured Field string, quotes included
    # X-Account-Id: the caller's identity, as the example's auth proxy would
    # set it (its routes scope keys by it: issue 27's `identity`).
    headers = {"Idempotency-Key": key, "Content-Type": "application/json", "X-Account-Id": "acct-image-test"}
    first = http("POST", f"{base}/payments", b'{"amount": 100, "sent_at": 1}', headers)
    second = http("POST", f"{base}/payments", b'{"amount": 100, "sent_at": 2}', headers)
    assert first[0] == 201 and second[0] == 201, (first, second)
    assert second[2] == first[2], f"the replay differs: {first[2]!r} vs {second[2]!r}"
    assert second[1].get("Idempotent-Replayed") == "true", second[1]
    return {"key": key, "statuses": [first[0], second[0]]}


def charges_for(base, key):
    status, _, body = http("GET", f"{base}/charges")
    assert status == 200, status
    return sum(1 for charge in json.loads(body)["charges"] if charge["key"] == key)


def main():
    binary = os.path.abspath(sys.argv[1])
    started = time.monotonic()
    engine = Engine()
    context = engine.build("coordinator", "deploy/Dockerfile", TAG, binary)
    say(f"built {TAG} from deploy/Dockerfile over {os.path.relpath(context, ROOT)} in {time.monotonic() - started:.1f} s")
    check_contents(engine, context)
    etcd = HostEtcd()
    try:
        coordinator = Coordinator(engine, binary, etcd)
        took, since_start = coordinator.run()
        say(f"SERVING {took:.2f} s after `podman run` ({since_start:.2f} s after the process started), "
            f"etcd reached as etcd-0.etcd; read-only root, no capabilities")
        assert_runs_as_nonroot(engine, SERVER)
        namespace, key = begin_complete_replay(coordinator)
        held = drain_on_sigterm(engine, coordinator, namespace)
        records_survive_restart(coordinator, namespace, key, held)
        gateway_double_submit(engine, coordinator)
    finally:
        engine.remove_containers(SERVER, GATEWAY)
        etcd.close()
    say(f"passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
