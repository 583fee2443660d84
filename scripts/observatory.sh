#!/usr/bin/env bash
# Scores Palisade's header presets with Mozilla's HTTP Observatory scanner, offline.
# Starts the demo backend and Palisade on 127.0.0.1:80/443 (the scanner's ports: needs root),
# scans https://localhost once per preset, prints grade and score, and stops both.
# Usage: scripts/observatory.sh [preset...]   (default: strict-api web-app baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(strict-api web-app baseline)
command -v npm >/dev/null || { echo "observatory: needs node and npm" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --quiet --bin palisade --example demo_backend
bin=target/debug

# The scanner's install script downloads the HSTS preload list; skip it and use an empty
# list (localhost is not preloaded anyway).
(cd "$work" && npm init -y >/dev/null && npm install --silent --ignore-scripts @mdn/mdn-http-observatory >/dev/null)
scanner="$work/node_modules/@mdn/mdn-http-observatory"
echo '{}' > "$scanner/conf/hsts-preload.json"

"$bin/palisade" cert dev --out "$work/certs" >/dev/null
"$bin/examples/demo_backend" 127.0.0.1:3000 2>/dev/null &
for preset in "${presets[@]}"; do
  cat > "$work/gateway.toml" <<TOML
[server]
listen = ["127.0.0.1:80"]
tls_listen = ["127.0.0.1:443"]
[admin]
listen = "127.0.0.1:19999"
[tls]
[[tls.certificates]]
cert = "certs/dev.pem"
key = { file = "certs/dev-key.pem" }
[defaults]
headers = "$preset"
[upstreams.app]
servers = ["127.0.0.1:3000"]
[[routes]]
name = "all"
upstream = "app"
TOML
  "$bin/palisade" run --config "$work/gateway.toml" >/dev/null 2>"$work/palisade.log" &
  gw=$!
  for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:19999/healthz && break; sleep 0.1; done
  NODE_EXTRA_CA_CERTS="$work/certs/dev.pem" node "$scanner/src/scan.js" localhost > "$work/result.json"
  python3 - "$preset" "$work/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
s = r["scan"]
failed = [k for k, v in r["tests"].items() if not v["pass"]]
print(f"{sys.argv[1]:<11} grade {s['grade']:<3} score {s['score']:>3}  tests passed {s['testsPassed']}/{s['testsQuantity']}" + (f"  failed: {', '.join(failed)}" if failed else ""))
PY
  kill -INT "$gw"; wait "$gw" 2>/dev/null || true
done
