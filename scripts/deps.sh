#!/usr/bin/env bash
# Installs what building and testing Palisade needs, when it is missing:
#   build: cmake and a C compiler (Pingora builds zlib-ng with them)
#   tests: promtool (checks the /metrics output), from Debian's `prometheus` package, and
#          redis-server (the shared rate-limit store; tests start their own on a free port)
# Usage: scripts/deps.sh build|test
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if [ "${1:-build}" = test ]; then
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "deps: installing ${need[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: please install ${need[*]} with your package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "deps: run as root or install ${need[*]} yourself" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends: promtool is all the tests need from `prometheus`.
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
