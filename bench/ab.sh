#!/usr/bin/env bash
# A/B two palisade binaries on the same load, alternating A B A B so drift hits both: the tool
# for "did this change make the hot path cheaper". `make bench` is the full side-by-side with
# nginx; this one is quick and prints what a change moves: req/s and the gateway's CPU per
# request (user and system apart, from /proc/PID/stat).
#
#   bench/ab.sh OLD_BINARY NEW_BINARY [full|pass|full,pass] [h1|h2]
#
# `full,pass` gives A the full policy set and B none (one binary twice: the policy overhead).
# Settings (environment): AB_ROUNDS=4, AB_SECONDS=5, AB_CONNECTIONS=32, AB_THREADS=2;
# AB_REFUSED=1 sends no API key, so the full policy set answers every request 401 itself (the
# refusal path a flood takes); AB_RATE=N offers N requests per second in all (h2load --rps,
# split over the connections; HTTP/1.1 too) instead of as many as the gateway answers: the
# latency and CPU per request at equal load, where each request is likelier to find the gateway
# idle (bench/run.sh's "same load" runs do this against nginx).
# Needs wrk (h1) or h2load (h2), nginx (the upstream), python3; `make bench` installs them.
set -euo pipefail

A_BIN=${1:?usage: bench/ab.sh OLD_BINARY NEW_BINARY [full|pass] [h1|h2]}
B_BIN=${2:?usage: bench/ab.sh OLD_BINARY NEW_BINARY [full|pass] [h1|h2]}
POLICY=${3:-full}
PROTO=${4:-h1}
ROUNDS=${AB_ROUNDS:-4}
SECS=${AB_SECONDS:-5}
CONNS=${AB_CONNECTIONS:-32}
THREADS=${AB_THREADS:-2}
RATE=${AB_RATE:-}
if [ -n "$RATE" ] && ! [ "$RATE" -ge "$CONNS" ] 2>/dev/null; then
  echo "AB_RATE is a number of requests per second, at least AB_CONNECTIONS" >&2; exit 2
fi
KEY_HEADER=X-API-Key
[ "${AB_REFUSED:-0}" = 1 ] && KEY_HEADER=X-Not-The-Key
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PATH=$PATH:/usr/sbin:/sbin
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

A_POLICY=${POLICY%%,*}
B_POLICY=${POLICY##*,}
for p in "$A_POLICY" "$B_POLICY"; do
  case "$p" in full | pass) ;; *) echo "policy must be full, pass or full,pass" >&2; exit 2 ;; esac
done
case "$PROTO" in h1 | h2) ;; *) echo "protocol must be h1 or h2" >&2; exit 2 ;; esac

RUN=$(mktemp -d "${TMPDIR:-/tmp}/palisade-ab.XXXXXX")
mkdir -p "$RUN/tmp"
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$RUN"
}
trap cleanup EXIT

read -r UP_PORT A_HTTP A_HTTPS A_ADMIN B_HTTP B_HTTPS B_ADMIN < <(free_ports 7)

"$A_BIN" cert dev --out "$RUN/cert" >/dev/null
CERT=$RUN/cert/dev.pem
KEY=$RUN/cert/dev-key.pem
UPSTREAM_WORKERS=1
API_KEY="ab-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
export BENCH_API_KEYS=$API_KEY

# As bench/run.sh does, with the API key check on.
template() { if [ "$1" = pass ]; then echo palisade-passthrough.toml; else echo palisade-full.toml; fi; }
render upstream.nginx.conf upstream.conf off 0 0 0
render "$(template "$A_POLICY")" a.toml on "$A_HTTP" "$A_HTTPS" "$A_ADMIN"
render "$(template "$B_POLICY")" b.toml on "$B_HTTP" "$B_HTTPS" "$B_ADMIN"

nginx -e "$RUN/upstream.error.log" -p "$RUN" -c "$RUN/upstream.conf" >"$RUN/upstream.err" 2>&1 &
PIDS+=($!)
"$A_BIN" run --config "$RUN/a.toml" >"$RUN/a.access.log" 2>"$RUN/a.err" &
PIDS+=($!)
A_PID=$!
"$B_BIN" run --config "$RUN/b.toml" >"$RUN/b.access.log" 2>"$RUN/b.err" &
PIDS+=($!)
B_PID=$!

# The plain ports only: a bare TCP probe of a TLS port is a failed handshake in the log.
for port in "$UP_PORT" "$A_HTTP" "$B_HTTP"; do wait_tcp "$port" || true; done

CLK_TCK=$(getconf CLK_TCK)
# "utime stime" in ticks
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

# load PORT SECONDS: prints "requests p50_ms p99_ms"
load() {
  local h2=(-m10) url="https://127.0.0.1:$1/"
  if [ "$PROTO" = h1 ] && [ -z "$RATE" ]; then
    wrk -t2 -c"$CONNS" -d"$2s" --latency -H "$KEY_HEADER: $API_KEY" -H 'Origin: https://app.example.com' \
      "http://127.0.0.1:$1/" >"$RUN/load.out" 2>&1
    # wrk's latency in us, ms or s -> ms
    awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
      /requests in/ { n = $1 } /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
      END { print n, p50, p99 }' "$RUN/load.out"
    return
  fi
  [ "$PROTO" = h1 ] && { h2=(--h1 -m1); url="http://127.0.0.1:$1/"; }
  [ -n "$RATE" ] && h2+=(--rps="$((RATE / CONNS))")
  rm -f "$RUN/load.log"
  h2load -t2 -c"$CONNS" "${h2[@]}" -D"$2" --log-file="$RUN/load.log" -H "$KEY_HEADER: $API_KEY" \
    -H 'Origin: https://app.example.com' "$url" >"$RUN/load.out" 2>&1
  read -r p50 p99 _ < <(python3 "$BENCH_DIR/report.py" h2pct "$RUN/load.log")
  echo "$(awk '/^requests:/ { print $8 }' "$RUN/load.out") $p50 $p99"
}

port_of() { if [ "$PROTO" = h1 ]; then [ "$1" = A ] && echo "$A_HTTP" || echo "$B_HTTP"; else [ "$1" = A ] && echo "$A_HTTPS" || echo "$B_HTTPS"; fi; }
pid_of() { [ "$1" = A ] && echo "$A_PID" || echo "$B_PID"; }

load "$(port_of A)" 2 >/dev/null
load "$(port_of B)" 2 >/dev/null

[ -n "$RATE" ] && echo "offered: $((RATE / CONNS * CONNS)) requests a second ($((RATE / CONNS)) on each of $CONNS connections)"
printf '%-5s %-3s %10s %10s %9s %9s %9s %8s %8s\n' round bin req/s requests 'us/req' 'user' 'sys' 'p50 ms' 'p99 ms'
declare -A SUM_RPS SUM_US
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    pid=$(pid_of $side)
    read -r u0 s0 < <(cpu_ticks "$pid")
    read -r n p50 p99 < <(load "$(port_of $side)" "$SECS")
    read -r u1 s1 < <(cpu_ticks "$pid")
    awk -v r="$round" -v side="$side" -v n="$n" -v secs="$SECS" -v hz="$CLK_TCK" \
      -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v p50="$p50" -v p99="$p99" 'BEGIN {
      printf "%-5s %-3s %10.0f %10d %9.1f %9.1f %9.1f %8.3f %8.3f\n", r, side, n / secs, n,
        (du + ds) / hz * 1e6 / n, du / hz * 1e6 / n, ds / hz * 1e6 / n, p50, p99 }' | tee -a "$RUN/rows"
  done
done
awk '{ rps[$2] += $3; us[$2] += $5; u[$2] += $6; s[$2] += $7; p50[$2] += $8; p99[$2] += $9; n[$2]++ }
  END {
    for (k in n) printf "mean  %-3s %10.0f %10s %9.1f %9.1f %9.1f %8.3f %8.3f\n", k, rps[k] / n[k], "",
      us[k] / n[k], u[k] / n[k], s[k] / n[k], p50[k] / n[k], p99[k] / n[k]
    printf "B/A req/s %.3f   B/A us/req %.3f   B/A p50 %.3f   B/A p99 %.3f\n", rps["B"] / rps["A"],
      us["B"] / us["A"], p50["B"] / p50["A"], p99["B"] / p99["A"]
  }' "$RUN/rows" | sort
for side in a b; do
  # ERROR lines by source and message, counted (timestamps and peers cut off)
  grep ' ERROR ' "$RUN/$side.err" | sed -e 's/^\[[^ ]* ERROR //' -e 's/\] /: /' -e 's/ from [0-9.:]*//' |
    cut -c1-110 | sort | uniq -c | sort -rn | head -5 | sed "s/^/${side^^} ERROR /" || true
done
