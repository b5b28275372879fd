#!/usr/bin/env bash
# Checks deploy/monitoring offline: the PrometheusRule's spec (a plain rule
# file) passes `promtool check rules` and the alert unit tests in
# rules-test.yaml (`promtool test rules`), and the Grafana dashboard is valid
# JSON. That every metric they name exists is checked against a live scrape of
# the real server by tests/monitoring.rs.
# promtool comes with Debian's `prometheus` package, installed here if missing
# (elsewhere: a Prometheus release tarball, or `brew install prometheus`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # The package would start a Prometheus server where an init system runs:
  # refuse service starts while installing (Debian's policy-rc.d).
  policy=/usr/sbin/policy-rc.d
  [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null; $sudo chmod +x "$policy"; added=1; }
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  [ -z "${added:-}" ] || $sudo rm -f "$policy"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# PyYAML: from the virtualenv deploy-check.sh makes, or this Python's own.
python=python3
[ -x .tools/k8s/bin/python ] && python=.tools/k8s/bin/python
"$python" - deploy/monitoring/prometheusrule.yaml "$work/rules.yaml" <<'PY'
import sys
import yaml

rule = yaml.safe_load(open(sys.argv[1]))
assert rule["kind"] == "PrometheusRule", rule["kind"]
yaml.safe_dump(rule["spec"], open(sys.argv[2], "w"), sort_keys=False)
PY
cp deploy/monitoring/rules-test.yaml "$work/"
promtool check rules "$work/rules.yaml"
promtool test rules "$work/rules-test.yaml"
"$python" -c 'import json, sys; d = json.load(open(sys.argv[1])); print("monitoring: dashboard", repr(d["title"]), len(d["panels"]), "panels")' deploy/monitoring/dashboard.json
