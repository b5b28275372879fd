#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests that start
# their own etcd processes on free loopback ports and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --all-targets "$@"
