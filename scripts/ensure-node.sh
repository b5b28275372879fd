#!/usr/bin/env bash
# Installs node and npm with apt if they are missing (buf and the Node client
# need them).
set -euo pipefail
command -v npm >/dev/null 2>&1 && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
