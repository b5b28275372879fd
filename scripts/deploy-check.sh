#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: yamllint, then each layout
# (base, overlays/dev, overlays/prod, overlays/sharded, monitoring, and
# examples/payments-api with the gateway sidecar component) rendered by the
# real Kustomize built into kubectl (`kubectl kustomize`) and checked with
# kubernetes-validate --strict against a current Kubernetes, then the
# probe/port/TLS/shard-map cross-check against the settings the server binary
# itself reports for the rendered ConfigMap (`serve --print-config`), and the
# sidecar's against `gateway --check`.
# The Python tools go into a virtualenv under .tools/.
#
# kubectl: the machine image ships it. Elsewhere install it from
# https://kubernetes.io/docs/tasks/tools/ (a single static binary; Debian and
# Ubuntu: the Kubernetes apt repository's `kubectl` package; macOS: `brew
# install kubectl`), or point KUBECTL at one. No package registry this project
# can reach carries it, so this script cannot install it itself.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBERNETES_VERSION=1.37.0
kubectl="${KUBECTL:-kubectl}"
if ! command -v "$kubectl" >/dev/null 2>&1; then
  echo "deploy: kubectl not found (it renders the Kustomize layouts); see the top of $0 for how to install it" >&2
  exit 1
fi
venv=.tools/k8s
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate yamllint
"$venv/bin/yamllint" --strict deploy .yamllint buf.yaml
cargo build -q --bin idempotency-coordinator
rendered=.tools/rendered
rm -rf "$rendered" && mkdir -p "$rendered"
for layout in base overlays/dev overlays/prod overlays/sharded monitoring examples/payments-api; do
  out="$rendered/${layout//\//-}.yaml"
  "$kubectl" kustomize "deploy/$layout" > "$out"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$out"
  echo "deploy: $layout renders $(grep -c '^kind:' "$out") resources with $("$kubectl" version --client 2>/dev/null | grep -i kustomize || echo kustomize), all valid against Kubernetes $KUBERNETES_VERSION (strict)"
done
# monitoring holds no Deployment: its PrometheusRule is a CRD that
# kubernetes-validate has no schema for (it warns), checked by promtool in
# scripts/monitoring-check.sh.
"$venv/bin/python" scripts/check_probes.py target/debug/idempotency-coordinator "$rendered"/{base,overlays-*}.yaml
"$venv/bin/python" scripts/check_gateway_sidecar.py target/debug/idempotency-coordinator "$rendered"/examples-payments-api.yaml
