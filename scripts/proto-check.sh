#!/usr/bin/env bash
# Lints proto/ with buf (STANDARD rules) and checks it for breaking changes
# against the previous commit. buf comes from npm (@bufbuild/buf), installed
# into .tools/ on first use; node and npm are installed with apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF_VERSION=1.75.0
buf=.tools/node_modules/.bin/buf
if [ ! -x "$buf" ] || [ "$("$buf" --version)" != "$BUF_VERSION" ]; then
  scripts/ensure-node.sh
  npm install --silent --no-audit --no-fund --prefix .tools "@bufbuild/buf@$BUF_VERSION" >/dev/null
fi
"$buf" lint
if git rev-parse --verify --quiet HEAD~1 >/dev/null; then
  "$buf" breaking --against '.git#ref=HEAD~1,subdir=proto'
  echo "proto: lint clean, no breaking change against the previous commit"
else
  echo "proto: lint clean (no previous commit to compare with)"
fi
