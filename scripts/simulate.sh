#!/usr/bin/env bash
# Runs the deterministic simulation (tests/simulation) over more seeds than
# `cargo test` does, in release mode:
#   scripts/simulate.sh --seeds N      N seeds (default 10000)
#   scripts/simulate.sh --minutes M    as many seeds as fit in M minutes
# Options: --start S (first seed), --knobs K (comma-separated, e.g. `all` or
# `request-id-retries`; default `passing`: every scenario but settle-by-rule),
# --mutation token-compare|lock-compare|forget-feed|shard-fence|token-generations|settle-check
# (a fence turned off).
# A failing seed prints its shrunk trace and the command that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) export SIM_SEEDS="$2"; shift 2 ;;
    --minutes) export SIM_MINUTES="$2"; shift 2 ;;
    --start) export SIM_START="$2"; shift 2 ;;
    --knobs) export SIM_KNOBS="$2"; shift 2 ;;
    --mutation) export SIM_MUTATION="$2"; shift 2 ;;
    *) echo "usage: $0 [--seeds N | --minutes M] [--start S] [--knobs K] [--mutation NAME]" >&2; exit 2 ;;
  esac
done
scripts/install-deps.sh
exec cargo test --release --test simulation explore_from_env -- --ignored --nocapture
