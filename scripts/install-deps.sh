#!/usr/bin/env bash
# Installs what building and testing need and a fresh machine lacks:
#   etcd          (Debian package etcd-server)   - the store, started by tests and run-local.sh
#   protoc        (Debian package protobuf-compiler) and the well-known .proto
#                 files (libprotobuf-dev)        - needed by build.rs and etcd-client
#   faketime      (Debian package faketime)      - replicas with skewed clocks in the tests
# and with --container-engine, what scripts/image-test.sh needs to build and
# run the container image (no daemon, no image pulled):
#   buildah       builds it from deploy/Dockerfile
#   podman        runs it, and `podman kube play`s the rendered manifests
#   runc          the OCI runtime podman is pointed at (crun, Debian's default,
#                 refuses the hybrid cgroup layout of these VMs; runc works)
#   catatonit     the init of the pods' infra container: podman builds its
#                 local pause image from it
#   python3       Debian's, at /usr/bin/python3: the example payments service's
#                 image is made of it (scripts/stage-image.sh)
# (how the test configures them - vfs storage, chroot isolation, runc, no
# raised RLIMIT_NOFILE - is in scripts/container_engine.py, not in /etc).
# Does nothing when they are already there. On systems without apt, install the
# equivalents yourself: macOS `brew install etcd protobuf libfaketime`; Fedora
# `dnf install etcd protobuf-compiler protobuf-devel libfaketime`; or an etcd release
# binary on PATH (or ETCD_BIN=/path/to/etcd) and PROTOC=/path/to/protoc; for the
# image, Fedora `dnf install buildah podman runc catatonit`, or Docker Desktop or
# `brew install podman` (then `podman machine init`) to build and run it by hand.
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || [ -n "${ETCD_BIN:-}" ] || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || [ -n "${PROTOC:-}" ] || missing+=(protobuf-compiler)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
[ -f /usr/include/google/protobuf/duration.proto ] || [ -n "${PROTOC_INCLUDE:-}" ] || missing+=(libprotobuf-dev)
if [ "${1:-}" = "--container-engine" ]; then
  for tool in buildah podman runc catatonit; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ -x /usr/bin/python3 ] || missing+=(python3)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${missing[*]}; no apt-get here - see the top of $0 for other systems" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "installing ${missing[*]} needs root or sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
