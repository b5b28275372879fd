#!/usr/bin/env bash
# Installs what building and running the container image here needs, and a
# fresh Debian machine lacks:
#   buildah  - builds the OCI image from deploy/Dockerfile with no daemon
#   podman   - runs it, and `podman kube play`s the rendered manifests
#   catatonit - the init of the pods' infra container, which podman builds
#              its local pause image from (no image can be pulled here)
#   runc     - the OCI runtime podman is pointed at (crun, Debian's default,
#              refuses the hybrid cgroup layout of these VMs; runc works)
#   etcd     - (Debian package etcd-server) the binary the etcd image is made of
# Does nothing when they are already there. How the tests configure them (vfs
# storage, chroot isolation, runc, no raised RLIMIT_NOFILE) is in
# scripts/container_engine.py, not in /etc.
# Elsewhere: Fedora `dnf install buildah podman runc catatonit etcd`; macOS or Windows:
# Docker Desktop or `brew install podman` (then `podman machine init`); an etcd
# release binary from https://github.com/etcd-io/etcd/releases as ETCD_BIN.
set -euo pipefail

missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
command -v etcd >/dev/null 2>&1 || [ -n "${ETCD_BIN:-}" ] || missing+=(etcd-server)
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
