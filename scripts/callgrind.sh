#!/usr/bin/env bash
# Counts the instructions a server executes per Begin + Complete pair,
# repeatably on a shared machine (valgrind --tool=callgrind): the bench's
# "new keys" scenario drives a server that runs under callgrind, and the
# total is divided by the pairs completed. Start-up and shutdown are counted
# too (a few million instructions, under 1% of a run).
#   TARGET=coordinator (default) or TARGET=noop (the do-nothing gRPC server
#   with the same service: the floor the coordinator is compared with).
#   COORDINATOR=path compares another coordinator build (default: this
#   tree's release build), e.g. one built from an earlier commit with
#   `git worktree`.
# Arguments go to the bench, e.g. scripts/callgrind.sh --callers 32 --seconds 20
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if ! command -v valgrind >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
cargo build --release -q -p idempotency-coordinator -p bench --bins
target="${TARGET:-coordinator}"
case "$target" in
  coordinator) binary="${COORDINATOR:-$PWD/target/release/idempotency-coordinator}"; wrapper_var=COORDINATOR_BIN ;;
  noop) binary="$PWD/target/release/bench"; wrapper_var=NOOP_BIN ;;
  *) echo "TARGET must be coordinator or noop" >&2; exit 2 ;;
esac
out="$PWD/target/callgrind/$(date +%Y%m%d-%H%M%S)-$target"
mkdir -p "$out"
cat >"$out/server" <<WRAPPER
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "$binary" "\$@"
WRAPPER
chmod +x "$out/server"
env "$wrapper_var=$out/server" target/release/bench --targets "$target" --scenarios "new keys" \
  --callers 32 --seconds 20 --warmup 0 "$@" | tee "$out/bench.txt"
pairs=$(awk -F'|' -v t="$target" '$2 ~ " "t" " && /new keys/ { gsub(/ /, "", $4); print $4 }' "$out/bench.txt")
seconds=$(grep -oE '[0-9]+ s measured' "$out/bench.txt" | grep -oE '^[0-9]+')
total=$(callgrind_annotate "$out/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1 }')
echo
echo "instructions: $total over $((pairs * seconds)) pairs = $((total / (pairs * seconds))) per pair"
echo "top functions (inclusive counts: callgrind_annotate --inclusive=yes $out/callgrind.out):"
callgrind_annotate "$out/callgrind.out" 2>/dev/null | sed -n '/^Ir/,$p' | head -40
