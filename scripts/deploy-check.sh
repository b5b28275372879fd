#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: yamllint, kubernetes-validate
# --strict against a current Kubernetes, and the probe/port cross-check.
# The tools go into a virtualenv under .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBERNETES_VERSION=1.37.0
venv=.tools/k8s
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate yamllint
"$venv/bin/yamllint" --strict deploy .yamllint buf.yaml
find deploy -name '*.yaml' ! -name kustomization.yaml -print0 \
  | xargs -0 "$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION"
echo "deploy: every resource valid against Kubernetes $KUBERNETES_VERSION (strict)"
"$venv/bin/python" scripts/check_probes.py
