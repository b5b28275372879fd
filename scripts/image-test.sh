#!/usr/bin/env bash
# Builds the container image from deploy/Dockerfile as the README tells users
# to, and runs it with podman (no daemon; no image is pulled):
#   scripts/image_test.py      the image against an etcd on this host: contents,
#                              SERVING, CLI, metrics, SIGTERM drain, restart, gateway
#   scripts/kube_play_test.py  `podman kube play` of deploy/overlays/dev and
#                              deploy/examples/payments-api as kubectl kustomize renders them
# Installs buildah, podman, runc, catatonit and etcd with apt-get when missing
# (scripts/install-deps.sh says what to do elsewhere).
#
# IMAGE_BINARY: the binary to put in the image (default: the release build,
# built here; CI passes the debug build it already has, see .ci/run).
# The engine's storage (images, volumes: about 150 MB, under /var/tmp, one
# directory per clone) is removed at the end unless IMAGE_TEST_KEEP (or
# KUBE_PLAY_KEEP, which leaves the pods running) is set.
# Run as root: the tests use rootful podman.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --container-engine
command -v kubectl >/dev/null 2>&1 || { echo "image-test: kubectl not found (it renders the manifests); see scripts/deploy-check.sh" >&2; exit 1; }
binary="${IMAGE_BINARY:-}"
if [ -z "$binary" ]; then
  cargo build --release --locked --quiet --bin idempotency-coordinator
  binary=target/release/idempotency-coordinator
fi
# PyYAML reads the rendered manifests; the same virtualenv as deploy-check.sh.
venv=.tools/k8s
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check pyyaml
state=$("$venv/bin/python" -c 'import sys; sys.path.insert(0, "scripts"); import container_engine; print(container_engine.STATE)')
trap '[ -n "${IMAGE_TEST_KEEP:-}${KUBE_PLAY_KEEP:-}" ] || rm -rf "$state" || true' EXIT
"$venv/bin/python" scripts/image_test.py "$binary"
"$venv/bin/python" scripts/kube_play_test.py "$binary"
