#!/usr/bin/env bash
# Stages the build context of a FROM-scratch image in target/image/NAME: a
# rootfs/ tree (the program, the shared libraries ldd says it loads, passwd,
# group and nsswitch.conf; see scripts/stage_rootfs.py) and CONTENTS, the list
# of every file in it. Then build it with docker, podman or buildah, e.g.
#
#   scripts/stage-image.sh coordinator
#   docker build -f deploy/Dockerfile -t idempotency-coordinator:0.1.0 target/image/coordinator
#
# NAME is one of:
#   coordinator   the release binary (or BINARY), built with deploy/Dockerfile
#   etcd          Debian's etcd-server binary (or ETCD_BIN) as /usr/local/bin/etcd,
#                 built with deploy/test-images/etcd/Dockerfile
#   payments-api  examples/payments/plain_server.py on Debian's python3 and its
#                 standard library, built with deploy/test-images/payments-api/Dockerfile
# The last two stand in, on a machine that can pull no image, for the etcd
# and service images the manifests name (scripts/image-test.sh).
# Linux only: the libraries are this machine's, the ones the binary was built against.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: $0 coordinator|etcd|payments-api [BINARY]}"
out="target/image/$name"
case "$name" in
  coordinator)
    binary="${2:-target/release/idempotency-coordinator}"
    [ -x "$binary" ] || { echo "$binary not built: cargo build --release --locked --bin idempotency-coordinator" >&2; exit 1; }
    python3 scripts/stage_rootfs.py "$out" --file "$binary=/usr/local/bin/idempotency-coordinator"
    ;;
  etcd)
    binary="${2:-${ETCD_BIN:-$(command -v etcd || true)}}"
    [ -x "$binary" ] || { echo "no etcd binary: scripts/install-deps.sh installs Debian's, or set ETCD_BIN" >&2; exit 1; }
    python3 scripts/stage_rootfs.py "$out" --file "$binary=/usr/local/bin/etcd"
    # The data directory, owned by the user etcd runs as (the Dockerfile
    # COPYs it with --chown); a volume mounted there starts from it.
    mkdir -p "$out/data"
    ;;
  payments-api)
    python="$(readlink -f "${2:-/usr/bin/python3}")"
    [ -x "$python" ] || { echo "no /usr/bin/python3: apt-get install python3" >&2; exit 1; }
    version="$(basename "$python")" # python3.11
    # The standard library without what a small HTTP service never imports
    # (the 25 MB static libpython in config-*, tests, GUI, installers).
    excludes=()
    for d in "config-${version#python}-x86_64-linux-gnu" test idlelib tkinter turtledemo lib2to3 ensurepip \
      pydoc_data distutils dist-packages site-packages; do
      excludes+=(--exclude "$d")
    done
    python3 scripts/stage_rootfs.py "$out" --file "$python=/usr/bin/python3" \
      --tree "/usr/lib/$version=/usr/lib/$version" "${excludes[@]}" \
      --file "examples/payments/plain_server.py=/app/plain_server.py"
    ;;
  *) echo "unknown image $name: coordinator, etcd or payments-api" >&2; exit 1 ;;
esac
