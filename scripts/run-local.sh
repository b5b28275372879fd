#!/usr/bin/env bash
# Starts a throwaway local etcd (data in a temp dir, removed on exit) and the
# coordinator on 127.0.0.1:50051. Ctrl-C stops both.
# Environment: ETCD_PORT (default 2379), any IDEMPOTENCY_* setting (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

etcd_port="${ETCD_PORT:-2379}"
peer_port=$((etcd_port + 1))
data_dir="$(mktemp -d -t idempotency-etcd.XXXXXX)"
"${ETCD_BIN:-etcd}" --name local --data-dir "$data_dir/data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "local=http://127.0.0.1:$peer_port" >"$data_dir/etcd.log" 2>&1 &
etcd_pid=$!
# etcd exits non-zero when killed; that must not stop the clean-up (set -e).
trap 'kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; rm -rf "$data_dir"' EXIT
echo "etcd on 127.0.0.1:$etcd_port (pid $etcd_pid, log $data_dir/etcd.log)" >&2

cargo build --release --quiet
export IDEMPOTENCY_LISTEN="${IDEMPOTENCY_LISTEN:-127.0.0.1:50051}"
export IDEMPOTENCY_ETCD_ENDPOINTS="${IDEMPOTENCY_ETCD_ENDPOINTS:-http://127.0.0.1:$etcd_port}"
# Not exec: the trap above must run to stop etcd when the coordinator exits.
target/release/idempotency-coordinator serve "$@"
