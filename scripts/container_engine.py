"""What scripts/image_test.py and scripts/kube_play_test.py share: podman and
buildah set up for these VMs, image builds from the staged contexts, a host
etcd on free loopback ports, and waiting for things with a deadline.

The engine's settings are the test's own, not the machine's: a
containers.conf (given by CONTAINERS_CONF) with no default ulimits (the VM
refuses to raise RLIMIT_NOFILE), the runc runtime (crun refuses the VM's
hybrid cgroups) and cgroupfs; vfs storage (no overlay on this kernel's
filesystem) in a directory of this clone's own under /var/tmp, so the
images the test builds never mix with the machine's or another clone's (not
under target/: podman records the path, and a copied target/ would refuse to
open); buildah with chroot isolation (no user namespaces).
"""

import hashlib

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = os.environ.get("IMAGE_TEST_STATE") or "/var/tmp/idempotency-containers-" + hashlib.sha1(ROOT.encode()).hexdigest()[:8]

CONTAINERS_CONF = """[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


def say(message):
    print(f"image-test: {message}", flush=True)


class Engine:
    def __init__(self):
        os.makedirs(STATE, exist_ok=True)
        conf = os.path.join(STATE, "containers.conf")
        with open(conf, "w") as f:
            f.write(CONTAINERS_CONF)
        self.env = dict(os.environ, CONTAINERS_CONF=conf)
        self.storage = [
            "--storage-driver", "vfs",
            "--root", os.path.join(STATE, "storage"),
            "--runroot", os.path.join(STATE, "run"),
        ]

    def podman(self, *args, check=True, timeout=120, input=None):
        return self._run(["podman", *self.storage, *args], check, timeout, input)

    def podman_background(self, *args, stdout):
        """podman started and left running (e.g. `run` in the foreground,
        for the test to signal it and time its exit)."""
        return subprocess.Popen(["podman", *self.storage, *args], env=self.env, stdout=stdout, stderr=subprocess.STDOUT)

    def buildah(self, *args, check=True, timeout=300):
        return self._run(["buildah", *self.storage, *args], check, timeout, None)

    def _run(self, argv, check, timeout, input):
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def build(self, name, dockerfile, tag, binary=None):
        """Stages target/image/NAME (scripts/stage-image.sh) and builds
        dockerfile over it: the same commands the README gives users."""
        argv = [os.path.join(ROOT, "scripts", "stage-image.sh"), name] + ([binary] if binary else [])
        subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        context = os.path.join(ROOT, "target", "image", name)
        self.buildah("bud", "--isolation", "chroot", "--quiet", "-f", os.path.join(ROOT, dockerfile), "-t", tag, context)
        # The image the tag named before is now untagged; vfs keeps whole
        # copies of every layer, so drop it instead of letting runs pile up.
        self.podman("image", "prune", "--force")
        return context

    def image_size(self, tag):
        return int(self.podman("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip())

    def process_status(self, container):
        """/proc/PID/status of the container's process, as the host kernel
        sees it: {"Uid": [...], "CapEff": [...], "NoNewPrivs": [...], ...}."""
        pid = self.podman("inspect", container, "--format", "{{.State.Pid}}").stdout.strip()
        with open(f"/proc/{pid}/status") as f:
            return {line.split(":")[0]: line.split()[1:] for line in f}

    def remove_containers(self, *names):
        for name in names:
            self.podman("rm", "--force", "--time", "0", name, check=False)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout, interval=0.05):
    """Polls check() until it returns something truthy; fails naming what."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - kept to report on timeout
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last})")


def http(method, url, body=None, headers=None, timeout=10):
    """(status, headers (case-insensitive), body) of one request; HTTP errors are answers too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class HostEtcd:
    """etcd on free loopback ports with its own data directory, killed and
    removed on close."""

    def __init__(self):
        self.binary = os.environ.get("ETCD_BIN") or shutil.which("etcd")
        self.dir = tempfile.mkdtemp(prefix="image-test-etcd.")
        self.port = free_port()
        peer = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.dir, "etcd.log"), "w")
        self.process = subprocess.Popen(
            [
                self.binary, "--name", "host", "--data-dir", os.path.join(self.dir, "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"host=http://127.0.0.1:{peer}",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for("host etcd healthy", lambda: http("GET", f"{self.url}/health", timeout=1)[0] == 200, 20)

    def close(self):
        self.process.kill()
        self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
