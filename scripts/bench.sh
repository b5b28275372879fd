#!/usr/bin/env bash
# Runs the benchmark (BENCHMARKS.md): installs etcd, Redis and PostgreSQL if
# missing, then starts each on loopback with a fresh data directory and drives
# it with N concurrent callers. Arguments go to the bench, e.g.
#   scripts/bench.sh --callers 256 --seconds 10
#   scripts/bench.sh --targets coordinator,etcd
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The coordinator runs as its own process (its CPU is measured apart), so
# its binary is built beside the bench.
cargo build --release -q -p idempotency-coordinator -p bench --bins
exec target/release/bench "$@"
