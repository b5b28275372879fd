#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests that start their
# own etcd processes on free loopback ports and stop them afterwards, the
# fault suite's rolling upgrade from the previous release, and the client
# helpers' tests against the real server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --all-targets "$@"
# The rolling upgrade runs the previous release beside this one; its binary
# is built from this clone's history (a few minutes the first time).
PREVIOUS_COORDINATOR_BIN=$(scripts/build-previous-release.sh) \
  cargo test --test faults -- --ignored --exact exactly_once_through_a_rolling_upgrade_from_the_previous_release
scripts/test-clients.sh
