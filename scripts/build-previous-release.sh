#!/usr/bin/env bash
# Builds the coordinator of the previous release - the commit named in
# testdata/previous-release - for the rolling-upgrade run of the fault suite,
# and prints the binary's path. The source comes from this clone's history
# (git archive), the build goes to target/previous-release/ and is reused
# while the commit stays the same. After a release, put its commit there.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$(tr -d '[:space:]' < testdata/previous-release)
out=target/previous-release
binary=$out/target/debug/idempotency-coordinator
if [ -x "$binary" ] && [ "$(cat "$out/commit" 2>/dev/null)" = "$commit" ]; then
  echo "$PWD/$binary"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  # A shallow clone: fetch just that commit from origin.
  git fetch --quiet --depth=1 origin "$commit" >&2 || true
fi
git cat-file -e "$commit^{commit}" 2>/dev/null || {
  echo "commit $commit (testdata/previous-release) is not in this clone and cannot be fetched from origin" >&2
  exit 1
}
rm -rf "$out/src"
mkdir -p "$out/src"
git archive "$commit" | tar -x -C "$out/src"
echo "building the previous release ($commit) into $out" >&2
CARGO_PROFILE_DEV_DEBUG=0 CARGO_TARGET_DIR="$PWD/$out/target" cargo build --quiet --locked --bin idempotency-coordinator \
  --manifest-path "$out/src/Cargo.toml" >&2
echo "$commit" > "$out/commit"
echo "$PWD/$binary"
