#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests that start their
# own etcd processes on free loopback ports and stop them afterwards, and the
# client helpers' tests against the real server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --all-targets "$@"
scripts/test-clients.sh
