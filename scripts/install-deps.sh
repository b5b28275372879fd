#!/usr/bin/env bash
# Installs what building and testing need and a fresh machine lacks:
#   etcd          (Debian package etcd-server)   - the store, started by tests and run-local.sh
#   protoc        (Debian package protobuf-compiler) and the well-known .proto
#                 files (libprotobuf-dev)        - needed by build.rs and etcd-client
#   faketime      (Debian package faketime)      - replicas with skewed clocks in the tests
# Does nothing when they are already there. On systems without apt, install the
# equivalents yourself: macOS `brew install etcd protobuf libfaketime`; Fedora
# `dnf install etcd protobuf-compiler protobuf-devel libfaketime`; or an etcd release
# binary on PATH (or ETCD_BIN=/path/to/etcd) and PROTOC=/path/to/protoc.
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || [ -n "${ETCD_BIN:-}" ] || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || [ -n "${PROTOC:-}" ] || missing+=(protobuf-compiler)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
[ -f /usr/include/google/protobuf/duration.proto ] || [ -n "${PROTOC_INCLUDE:-}" ] || missing+=(libprotobuf-dev)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${missing[*]}; no apt-get here - see the top of $0 for other systems" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "installing ${missing[*]} needs root or sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
