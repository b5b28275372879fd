#!/usr/bin/env bash
# Measures what a record costs in etcd for several result sizes
# (tests/capacity.rs; deploy/README.md, "Capacity" shows a run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --release --test capacity -- --ignored --nocapture --test-threads=1 2>&1 | grep '^|'
