#!/usr/bin/env bash
# `make run`: the demo backend on 127.0.0.1:3000 and Palisade in front of it with gateway.toml.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
[ -f certs/dev.pem ] && [ -f certs/dev-key.pem ] || "$bin/palisade" cert dev --out certs
# The /api/reports route needs an API key: make a throwaway one unless API_KEYS is set.
if [ -z "${API_KEYS:-}" ]; then
    API_KEYS=$("$bin/palisade" keys new --prefix pk_demo_ | head -n1)
fi
export API_KEYS
export API_KEYS_NEXT="${API_KEYS_NEXT:-}"
"$bin/examples/demo_backend" 127.0.0.1:3000 &
backend=$!
trap 'kill "$backend" 2>/dev/null || true' EXIT INT TERM
cat >&2 <<MSG

  Palisade is starting in front of the demo backend (127.0.0.1:3000). Try:
    curl -k https://localhost:8443/api/hello
    curl -i http://localhost:8080/api/hello          # 308 to HTTPS
    curl -k -H "X-API-Key: $API_KEYS" https://localhost:8443/api/reports   # needs the key
    curl -s http://127.0.0.1:9901/metrics | grep gateway_requests_total

MSG
"$bin/palisade" run --config gateway.toml
