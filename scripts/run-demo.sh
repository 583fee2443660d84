#!/usr/bin/env bash
# `make run`: the demo backend on 127.0.0.1:3000 and Palisade in front of it with gateway.toml.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
[ -f certs/dev.pem ] && [ -f certs/dev-key.pem ] || "$bin/palisade" cert dev --out certs
"$bin/examples/demo_backend" 127.0.0.1:3000 &
backend=$!
trap 'kill "$backend" 2>/dev/null || true' EXIT INT TERM
cat >&2 <<MSG

  Palisade is starting in front of the demo backend (127.0.0.1:3000). Try:
    curl -k https://localhost:8443/api/hello
    curl -i http://localhost:8080/api/hello          # 308 to HTTPS
    curl -s http://127.0.0.1:9901/metrics | grep gateway_requests_total

MSG
"$bin/palisade" run --config gateway.toml
