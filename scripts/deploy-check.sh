#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: yamllint, then each layout
# (base, overlays/dev, overlays/prod) rendered by scripts/render_kustomize.py
# and checked with kubernetes-validate --strict against a current Kubernetes
# and the probe/port/TLS cross-check. The tools go into a virtualenv under .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBERNETES_VERSION=1.37.0
venv=.tools/k8s
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate yamllint jsonpatch
"$venv/bin/yamllint" --strict deploy .yamllint buf.yaml
rendered=.tools/rendered
rm -rf "$rendered" && mkdir -p "$rendered"
for layout in base overlays/dev overlays/prod; do
  out="$rendered/${layout//\//-}.yaml"
  "$venv/bin/python" scripts/render_kustomize.py "deploy/$layout" > "$out"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$out"
  echo "deploy: $layout renders $(grep -c '^kind:' "$out") resources, all valid against Kubernetes $KUBERNETES_VERSION (strict)"
done
"$venv/bin/python" scripts/check_probes.py "$rendered"/*.yaml
