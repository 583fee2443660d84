#!/usr/bin/env bash
# make bench: Palisade (full policy, and passthrough) against nginx with the same policy, and
# against bare Pingora (examples/bare_pingora.rs: a proxy with nothing but an upstream, the floor
# of Palisade's architecture), side by side on loopback, in front of one fast upstream (nginx
# answering a fixed 200).
#
#   HTTP/1.1 keep-alive   wrk    -t2 -c32 --latency, plain HTTP
#   HTTP/2 over TLS       h2load -t2 -c32 -m10 (percentiles from its per-request log)
#   the same load         h2load [--h1] -t2 -c32 --rps: h1 and h2 again, every gateway offered
#                         one fixed request rate (half the slowest gateway's), for latency
#                         and CPU compared at equal load rather than at saturation
#   TLS handshakes        BENCH_CONNECTIONS parallel `openssl s_time -new`: each connection a
#                         full handshake (no session resumption), then closed. Not wrk or h2load
#                         with `Connection: close`: both resume the TLS session on reconnect
#                         (seen in nginx's $ssl_session_reused), so they would time resumptions.
#   memory                RSS at start, idle after the load, and with 10,000 idle keep-alive
#                         connections (bench/idle_conns.py)
#   CPU                   the gateway's utime+stime (/proc/PID/stat; nginx: master + workers)
#                         around each run, per 100k requests, and the stime (kernel) part apart;
#                         and the load tool's own CPU (bash's `times`)
#
# The gateways run alternating (full, nginx, passthrough, bare, full, ...) for BENCH_ROUNDS rounds so
# drift hits each alike. Results: target/bench/results.md (and raw numbers beside it).
#
# Settings (environment):
#   BENCH_SECONDS=10        length of each measured run
#   BENCH_ROUNDS=3          rounds of every test
#   BENCH_WARMUP=2          seconds of warm-up per gateway and protocol before the rounds
#   BENCH_CONNECTIONS=32    load connections
#   BENCH_H2_STREAMS=10     concurrent streams per HTTP/2 connection
#   BENCH_LOAD_THREADS=2    wrk and h2load threads
#   BENCH_THREADS=2         Palisade threads = nginx worker_processes
#   BENCH_UPSTREAM_WORKERS=1  worker processes of the upstream nginx
#   BENCH_IDLE_CONNS=10000  idle keep-alive connections for the memory figure (0: skip)
#   BENCH_API_KEY_CHECK=auto  auto | on | off: the API key check in both gateways; auto turns
#                           it on when `palisade check` accepts [api_keys] and off otherwise
#                           (the key itself is made at run time and given to Palisade in
#                           BENCH_API_KEYS, as its config says)
#   BENCH_TESTS="h1 h2 tls fixed"  which load tests to run ("fixed": after the others, h1
#                           and h2 again at one fixed request rate for every gateway)
#   BENCH_RATE_SHARE=0.5    the fixed rate, as a share of the slowest gateway's median req/s
#   BENCH_PGO=1             1: Palisade is the profile-guided build bench/pgo.sh makes (the build
#                           to deploy); 0: a plain `cargo build --release`. Bare Pingora is a
#                           plain release build either way.
#   BENCH_BIN=              a palisade binary to measure instead of building this tree (e.g. one
#                           built from a clean checkout while the work tree is mid-edit)
#   BENCH_BARE_BIN=         likewise for the bare_pingora example
# A smoke run: BENCH_SECONDS=2 BENCH_ROUNDS=1 BENCH_WARMUP=1 BENCH_IDLE_CONNS=1000 bench/run.sh
set -euo pipefail

SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNECTIONS:-32}
H2_STREAMS=${BENCH_H2_STREAMS:-10}
LOAD_THREADS=${BENCH_LOAD_THREADS:-2}
THREADS=${BENCH_THREADS:-2}
UPSTREAM_WORKERS=${BENCH_UPSTREAM_WORKERS:-1}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
API_KEYS_MODE=${BENCH_API_KEY_CHECK:-auto}
TESTS=${BENCH_TESTS:-h1 h2 tls fixed}
RATE_SHARE=${BENCH_RATE_SHARE:-0.5}
PGO=${BENCH_PGO:-1}
ORIGIN="https://app.example.com"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
OUT=$TARGET_DIR/bench
PATH=$PATH:/usr/sbin:/sbin
export PATH
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in bench/

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- what the run needs -------------------------------------------------------------------

need_packages wrk:wrk nginx:nginx h2load:nghttp2-client python3:python3 curl:curl openssl:openssl ||
  die "please install wrk nginx nghttp2-client python3 curl openssl"
if [ -n "${BENCH_BIN:-}" ]; then
  BIN=$BENCH_BIN
  BUILD="BENCH_BIN=$BENCH_BIN"
elif [ "$PGO" = 1 ]; then
  say "building the profile-guided release binary (bench/pgo.sh)"
  BIN=$("$BENCH_DIR/pgo.sh" | tail -1)
  BUILD="profile-guided (bench/pgo.sh: trained on this bench's traffic and on refusals)"
  [ "${PGO_BOLT:-1}" = 1 ] && BUILD="$BUILD, laid out by BOLT from a second training run"
else
  say "building the release binary"
  cargo build --release --bin palisade
  BIN=$TARGET_DIR/release/palisade
  BUILD="cargo build --release (no profile-guided optimization)"
fi
[ -x "$BIN" ] || die "no binary at $BIN"
if [ -n "${BENCH_BARE_BIN:-}" ]; then
  BARE_BIN=$BENCH_BARE_BIN
else
  say "building bare Pingora (examples/bare_pingora.rs)"
  cargo build --release --example bare_pingora
  BARE_BIN=$TARGET_DIR/release/examples/bare_pingora
fi
[ -x "$BARE_BIN" ] || die "no binary at $BARE_BIN"
GATEWAYS="full nginx pass bare"

mkdir -p "$OUT"
RUN=$(mktemp -d "${TMPDIR:-/tmp}/palisade-bench.XXXXXX")
mkdir -p "$RUN/tmp"
PIDS=()

stop_all() {
  local pid _
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

cleanup() {
  local status=$?
  set +e
  stop_all
  # Keep the logs that explain a failure; never the key (it lives in $RUN only).
  mkdir -p "$OUT/logs"
  cp "$RUN"/*.err "$RUN"/*.error.log "$OUT/logs/" 2>/dev/null
  rm -rf "$RUN"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The 10,000 idle connections need file descriptors in the load script and in the gateways.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
if [ "$FD_LIMIT" != unlimited ] && [ "$IDLE_CONNS" -gt $((FD_LIMIT - 500)) ]; then
  say "the file descriptor limit is $FD_LIMIT: holding $((FD_LIMIT - 500)) idle connections, not $IDLE_CONNS"
  IDLE_CONNS=$((FD_LIMIT - 500))
fi

# --- ports, certificate, key, configs -----------------------------------------------------

read -r UP_PORT FULL_HTTP FULL_HTTPS FULL_ADMIN PASS_HTTP PASS_HTTPS PASS_ADMIN NGX_HTTP NGX_HTTPS BARE_HTTP BARE_HTTPS < <(
  free_ports 11)

"$BIN" cert dev --out "$RUN/cert" >/dev/null
CERT=$RUN/cert/dev.pem
KEY=$RUN/cert/dev-key.pem
API_KEY="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
export BENCH_API_KEYS=$API_KEY

case "$API_KEYS_MODE" in
  on | off) API_KEYS=$API_KEYS_MODE ;;
  auto)
    render palisade-full.toml palisade-full.toml on "$FULL_HTTP" "$FULL_HTTPS" "$FULL_ADMIN"
    if "$BIN" check "$RUN/palisade-full.toml" >"$RUN/apikeys-check.out" 2>&1; then
      API_KEYS=on
    else
      API_KEYS=off
      say "palisade check refuses [api_keys] in this build: running without the API key check"
      sed 's/^/bench:   /' "$RUN/apikeys-check.out" | head -5 >&2
    fi
    ;;
  *) die "BENCH_API_KEY_CHECK must be auto, on or off" ;;
esac

render upstream.nginx.conf upstream.conf off 0 0 0
render palisade-full.toml palisade-full.toml "$API_KEYS" "$FULL_HTTP" "$FULL_HTTPS" "$FULL_ADMIN"
render palisade-passthrough.toml palisade-pass.toml off "$PASS_HTTP" "$PASS_HTTPS" "$PASS_ADMIN"
render nginx-gateway.conf nginx-gateway.conf "$API_KEYS" "$NGX_HTTP" "$NGX_HTTPS" 0
render nginx-gateway.headers.conf nginx-gateway.headers.conf "$API_KEYS" 0 0 0
render nginx-gateway.location.conf nginx-gateway.location.conf "$API_KEYS" 0 0 0
for cfg in palisade-full palisade-pass; do
  "$BIN" check "$RUN/$cfg.toml" >"$RUN/$cfg.check" 2>&1 || { cat "$RUN/$cfg.check" >&2; die "$cfg.toml is invalid"; }
done
for cfg in upstream nginx-gateway; do
  nginx -e "$RUN/$cfg.error.log" -p "$RUN" -c "$RUN/$cfg.conf" -t >"$RUN/$cfg.check" 2>&1 ||
    { cat "$RUN/$cfg.check" >&2; die "$cfg.conf is invalid"; }
done

# --- start everything ---------------------------------------------------------------------

nginx -e "$RUN/upstream.error.log" -p "$RUN" -c "$RUN/upstream.conf" >"$RUN/upstream.err" 2>&1 &
PIDS+=($!)
UP_PID=$!
"$BIN" run --config "$RUN/palisade-full.toml" >>"$RUN/full.access.log" 2>"$RUN/full.err" &
PIDS+=($!)
FULL_PID=$!
"$BIN" run --config "$RUN/palisade-pass.toml" >>"$RUN/pass.access.log" 2>"$RUN/pass.err" &
PIDS+=($!)
PASS_PID=$!
nginx -e "$RUN/nginx-gateway.error.log" -p "$RUN" -c "$RUN/nginx-gateway.conf" >"$RUN/nginx.err" 2>&1 &
PIDS+=($!)
NGX_PID=$!
"$BARE_BIN" "127.0.0.1:$BARE_HTTP" "127.0.0.1:$BARE_HTTPS" "$CERT" "$KEY" "127.0.0.1:$UP_PORT" "$THREADS" \
  >"$RUN/bare.err" 2>&1 &
PIDS+=($!)
BARE_PID=$!

wait_port() {
  local _
  for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" && return 0
    sleep 0.2
  done
  die "nothing answers on 127.0.0.1:$1 ($2); see $OUT/logs"
}
wait_port "$UP_PORT" upstream
wait_port "$FULL_HTTP" "palisade full"
wait_port "$PASS_HTTP" "palisade passthrough"
wait_port "$NGX_HTTP" "nginx"
wait_port "$BARE_HTTP" "bare Pingora"

# Every process of a gateway: Palisade is one process; nginx is its master and workers.
gw_pids() {
  case "$1" in
    full) echo "$FULL_PID" ;;
    pass) echo "$PASS_PID" ;;
    bare) echo "$BARE_PID" ;;
    nginx) echo "$NGX_PID $(pgrep -P "$NGX_PID" | tr '\n' ' ')" ;;
    upstream) echo "$UP_PID $(pgrep -P "$UP_PID" | tr '\n' ' ')" ;;
  esac
}
gw_http() { case "$1" in full) echo "$FULL_HTTP" ;; pass) echo "$PASS_HTTP" ;; nginx) echo "$NGX_HTTP" ;; bare) echo "$BARE_HTTP" ;; esac; }
gw_https() { case "$1" in full) echo "$FULL_HTTPS" ;; pass) echo "$PASS_HTTPS" ;; nginx) echo "$NGX_HTTPS" ;; bare) echo "$BARE_HTTPS" ;; esac; }
# The access log file of a gateway (bare Pingora writes none: /dev/null).
gw_log() { case "$1" in full) echo "$RUN/full.access.log" ;; pass) echo "$RUN/pass.access.log" ;; nginx) echo "$RUN/nginx-gateway.access.log" ;; *) echo /dev/null ;; esac; }

CLK_TCK=$(getconf CLK_TCK)
# CPU seconds used so far by the given processes: "TOTAL SYSTEM" (user + system, and the
# system part alone: the kernel's share, which for a proxy on loopback is mostly TCP).
cpu_seconds() {
  local pid total=0 sys=0 t s
  for pid in "$@"; do
    # Fields after the command name: state is $1, utime $12, stime $13.
    read -r t s < <(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13, $13}')
    total=$((total + t))
    sys=$((sys + s))
  done
  awk -v t="$total" -v s="$sys" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f %.2f\n", t / hz, s / hz }'
}
# "MIGRATIONS SWITCHES" so far, summed over every thread of the given processes: how often the
# kernel moved one of their threads to another CPU, and how often it switched one out (each
# wake-up is a switch). "na na" where /proc has no sched files (a kernel without SCHED_DEBUG).
sched_counts() {
  local pid
  for pid in "$@"; do [ -r "/proc/$pid/sched" ] || { echo "na na"; return; }; done
  for pid in "$@"; do cat "/proc/$pid"/task/*/sched 2>/dev/null; done |
    awk '/^se\.nr_migrations/ { m += $3 } /^nr_switches/ { w += $3 } END { print m + 0, w + 0 }'
}
# TCP connections this machine opened so far (a handshake test must open one per handshake).
tcp_active_opens() { awk '/^Tcp:/ { if (h) { print $6; exit } h = 1 }' /proc/net/snmp; }
# Machine-wide busy, total and steal jiffies from /proc/stat. Steal is time the hypervisor ran
# something else while this VM's vCPUs wanted to run: it counts as busy, and it slows whichever
# gateway's run it falls in.
machine_jiffies() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t, $9 }' /proc/stat; }
# kB: "RSS PSS" summed over the processes.
memory_kb() {
  local pid rss=0 pss=0 r p
  for pid in "$@"; do
    r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    p=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    rss=$((rss + r))
    pss=$((pss + ${p:-0}))
  done
  echo "$rss $pss"
}

# --- the machine, and memory before the first request -------------------------------------

sleep 1
RAW=$OUT/raw.tsv
MEM=$OUT/memory.tsv
META=$OUT/meta.tsv
: >"$RAW"
: >"$MEM"
: >"$META"
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta git "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta nproc "$(nproc) (load tools, upstream and gateways all share them)"
meta kernel "$(uname -srm)"
meta memory "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
meta load_start "$(uptime | sed 's/.*load average/load average/')"
meta tools "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), $(h2load --version 2>&1 | head -1), $(nginx -v 2>&1 | sed 's/.*: //') ($(openssl version 2>/dev/null | awk '{print "OpenSSL", $2}'))"
meta palisade "$("$BIN" version), $THREADS threads; bare Pingora: $THREADS threads; nginx: $THREADS worker processes; upstream: nginx, $UPSTREAM_WORKERS worker(s)"
meta build "$BUILD"
meta settings "$SECS s per run, $ROUNDS rounds, warm-up $WARMUP s, $CONNS connections, $LOAD_THREADS load threads, $H2_STREAMS streams per HTTP/2 connection"
if [ "$API_KEYS" = on ]; then
  meta api_keys "on: Palisade [api_keys.bench] (X-API-Key), nginx map \$http_x_api_key -> 401"
elif [ "$API_KEYS_MODE" = off ]; then
  meta api_keys "OFF in both gateways (BENCH_API_KEY_CHECK=off)"
else
  meta api_keys "OFF in both gateways (this build's palisade check refuses [api_keys])"
fi
meta idle_conns "$IDLE_CONNS"
meta rounds "$ROUNDS"
meta cmd_h1 "wrk -t$LOAD_THREADS -c$CONNS -d${SECS}s --latency -H 'X-API-Key: ...' -H 'Origin: $ORIGIN' http://127.0.0.1:PORT/"
meta cmd_h2 "h2load -t$LOAD_THREADS -c$CONNS -m$H2_STREAMS -D $SECS -H 'x-api-key: ...' -H 'origin: $ORIGIN' https://127.0.0.1:PORT/"
meta cmd_fixed "h2load -t$LOAD_THREADS -c$CONNS -m$H2_STREAMS --rps=RATE/$CONNS -D $SECS (HTTP/1.1: --h1 -m1), the same headers"
meta rate_share "$RATE_SHARE"
meta cmd_tls "$CONNS x openssl s_time -connect 127.0.0.1:PORT -new -time $SECS (in parallel)"

# memory_row GATEWAY PHASE CONNS: one line of $MEM
memory_row() {
  local pids rss pss
  read -ra pids < <(gw_pids "$1")
  read -r rss pss < <(memory_kb "${pids[@]}")
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$rss" "$pss" "$3" >>"$MEM"
}
for gw in $GATEWAYS; do memory_row "$gw" start 0; done

# --- sanity: every gateway answers 200 on both protocols, and 401 without the key ----------

NOTES=()
for gw in $GATEWAYS; do
  http=$(gw_http "$gw")
  https=$(gw_https "$gw")
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $API_KEY" -H "Origin: $ORIGIN" "http://127.0.0.1:$http/")
  [ "$code" = 200 ] || die "$gw answers $code on HTTP/1.1"
  got=$(curl -sk -o /dev/null -w '%{http_code} %{http_version}' --http2 -H "X-API-Key: $API_KEY" -H "Origin: $ORIGIN" "https://127.0.0.1:$https/")
  [ "$got" = "200 2" ] || die "$gw answers '$got' on HTTPS (want '200 2')"
  curl -sk -D - -o /dev/null --http2 -H "X-API-Key: $API_KEY" -H "Origin: $ORIGIN" \
    "https://127.0.0.1:$https/" | tr -d '\r' | grep -v '^$' >"$OUT/headers-$gw.txt"
  if [ "$API_KEYS" = on ] && { [ "$gw" = full ] || [ "$gw" = nginx ]; }; then
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Origin: $ORIGIN" "http://127.0.0.1:$http/")
    [ "$code" = 401 ] || die "$gw answers $code without an API key (want 401)"
  fi
  tls=$(openssl s_client -connect "127.0.0.1:$https" -alpn h2 </dev/null 2>/dev/null |
    awk -F': *' '/^New,/ { split($0, a, ", Cipher is "); c = a[2] } /Server Temp Key/ { k = $2 } END { print c, "/", k }')
  NOTES+=("$gw: TLS $tls; response headers in target/bench/headers-$gw.txt ($(wc -l <"$OUT/headers-$gw.txt") lines, $(wc -c <"$OUT/headers-$gw.txt") bytes)")
done
for gw in $GATEWAYS; do : >"$(gw_log "$gw")"; done

# --- load ---------------------------------------------------------------------------------

# wrk's summary -> "rps p50_ms p99_ms requests errors"
parse_wrk() {
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    / requests in / { reqs = $1 }
    /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { err += $5 }
    /^Requests\/sec:/ { rps = $2 }
    END { printf "%s %s %s %s %d\n", rps + 0, p50 + 0, p99 + 0, reqs + 0, err }' "$1"
}

# h2load's summary and per-request log -> "rps p50_ms p99_ms requests errors"
parse_h2load() {
  local rps reqs err p50 p99 bad
  rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$1")
  reqs=$(awk '/^requests:/ { print $8 }' "$1")
  err=$(awk '/^requests:/ { print $10 + $12 + $14 }' "$1")
  read -r p50 p99 bad < <(python3 "$BENCH_DIR/report.py" h2pct "$2")
  echo "${rps:-0} $p50 $p99 ${reqs:-0} $((${err:-0} + bad))"
}

# load TEST GATEWAY SECONDS -> the tool's output in $RUN/load.out, numbers on stdout
load() {
  local test=$1 gw=$2 secs=$3
  local deadline=$((secs + 30))
  case "$test" in
    h1)
      timeout "$deadline" wrk -t"$LOAD_THREADS" -c"$CONNS" -d"${secs}s" --latency \
        -H "X-API-Key: $API_KEY" -H "Origin: $ORIGIN" "http://127.0.0.1:$(gw_http "$gw")/" >"$RUN/load.out" 2>&1 || true
      parse_wrk "$RUN/load.out"
      ;;
    h2)
      rm -f "$RUN/h2.log"
      timeout "$deadline" h2load -t"$LOAD_THREADS" -c"$CONNS" -m"$H2_STREAMS" -D "$secs" --log-file="$RUN/h2.log" \
        -H "x-api-key: $API_KEY" -H "origin: $ORIGIN" "https://127.0.0.1:$(gw_https "$gw")/" >"$RUN/load.out" 2>&1 || true
      grep -q '^Application protocol: h2' "$RUN/load.out" || die "h2load did not speak h2 to $gw: $(tail -3 "$RUN/load.out")"
      parse_h2load "$RUN/load.out" "$RUN/h2.log"
      ;;
    h1fixed | h2fixed)
      # The same load for every gateway: FIXED_RATE requests per second on each connection.
      local proto=() url="https://127.0.0.1:$(gw_https "$gw")/" streams=$H2_STREAMS
      if [ "$test" = h1fixed ]; then
        proto=(--h1)
        url="http://127.0.0.1:$(gw_http "$gw")/"
        streams=1 # h2load --h1 with more than one stream would pipeline
      fi
      rm -f "$RUN/h2.log"
      timeout "$deadline" h2load "${proto[@]}" -t"$LOAD_THREADS" -c"$CONNS" -m"$streams" \
        --rps="${FIXED_RATE[${test%fixed}]}" -D "$secs" --log-file="$RUN/h2.log" \
        -H "x-api-key: $API_KEY" -H "origin: $ORIGIN" "$url" >"$RUN/load.out" 2>&1 || true
      parse_h2load "$RUN/load.out" "$RUN/h2.log"
      ;;
    tls)
      # CONNS sequential clients in parallel, each a new full handshake per connection; the rate
      # is over the wall time the clients ran, the mean handshake time is CONNS x wall / count.
      local i start end clients=()
      start=$(date +%s.%N)
      for i in $(seq "$CONNS"); do
        timeout "$deadline" openssl s_time -connect "127.0.0.1:$(gw_https "$gw")" -new -time "$secs" \
          >"$RUN/stime.$i" 2>&1 &
        clients+=($!)
      done
      wait "${clients[@]}" || true
      end=$(date +%s.%N)
      cat "$RUN"/stime.* >"$RUN/load.out"
      awk -v c="$CONNS" -v s="$start" -v e="$end" '
        /connections in .* real seconds/ { n += $1; ok++ }
        END { w = e - s; printf "%.2f %.3f 0 %d %d\n", n / w, n ? c * w / n * 1000 : 0, n, c - ok }' "$RUN"/stime.*
      rm -f "$RUN"/stime.*
      ;;
  esac
}

# CPU seconds (user + system) that this shell's finished children used, from bash's `times`
# (its second line; "XmY.YYYs" fields): after `load`, the load tool's own CPU.
children_cpu() {
  # `times` itself must run in this shell (a pipe or $(...) would run it in a child, which has
  # no children of its own): into a file, then read.
  times >"$RUN/times.out"
  awk 'NR == 2 {
    for (i = 1; i <= 2; i++) { split($i, t, "m"); sub(/s$/, "", t[2]); total += t[1] * 60 + t[2] }
    printf "%.2f\n", total }' "$RUN/times.out"
}

label() { case "$1" in full) echo "palisade full" ;; pass) echo "palisade passthrough" ;; bare) echo "bare pingora" ;; *) echo "$1" ;; esac; }

if [ "$WARMUP" -gt 0 ]; then
  say "warming up ($WARMUP s per gateway and protocol)"
  for test in $TESTS; do
    [ "$test" = tls ] && continue
    for gw in $GATEWAYS; do load "$test" "$gw" "$WARMUP" >/dev/null; done
  done
  for gw in $GATEWAYS; do : >"$(gw_log "$gw")"; done
fi

# measure TEST GATEWAY ROUND: one run, its numbers appended to $RAW
measure() {
  local test=$1 gw=$2 round=$3 pids upids c0 c1 s0 s1 u0 u1 b0 b1 t0 t1 st0 st1 o0 o1 rps p50 p99
  local reqs errors log lines cpu scpu ucpu busy steal lcpu m0 m1 w0 w1 moves switches
  read -ra pids < <(gw_pids "$gw")
  read -ra upids < <(gw_pids upstream)
  read -r c0 s0 < <(cpu_seconds "${pids[@]}")
  read -r m0 w0 < <(sched_counts "${pids[@]}")
  read -r u0 _ < <(cpu_seconds "${upids[@]}")
  read -r b0 t0 st0 < <(machine_jiffies)
  o0=$(tcp_active_opens)
  # One line: the load's five figures, then the load tool's CPU seconds.
  read -r rps p50 p99 reqs errors lcpu < <(
    load "$test" "$gw" "$SECS" | tr '\n' ' '
    children_cpu
  )
  o1=$(tcp_active_opens)
  read -r b1 t1 st1 < <(machine_jiffies)
  read -r u1 _ < <(cpu_seconds "${upids[@]}")
  read -r c1 s1 < <(cpu_seconds "${pids[@]}")
  read -r m1 w1 < <(sched_counts "${pids[@]}")
  log=$(gw_log "$gw")
  lines=$(wc -l <"$log")
  [ "$log" = /dev/null ] || : >"$log"
  cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
  scpu=$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.2f", b - a }')
  ucpu=$(awk -v a="$u0" -v b="$u1" 'BEGIN { printf "%.2f", b - a }')
  busy=$(awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN { printf "%.0f", t ? 100 * b / t : 0 }')
  steal=$(awk -v s="$((st1 - st0))" -v t="$((t1 - t0))" 'BEGIN { printf "%.1f", t ? 100 * s / t : 0 }')
  moves=na switches=na
  if [ "$m0" != na ] && [ "$m1" != na ]; then moves=$((m1 - m0)) switches=$((w1 - w0)); fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$test" "$gw" "$round" \
    "$rps" "$p50" "$p99" "$reqs" "$cpu" "$errors" "$lines" "$ucpu" "$busy" "$((o1 - o0))" \
    "$scpu" "$lcpu" "$steal" "$moves" "$switches" >>"$RAW"
  say "$(printf 'round %s %-7s %-20s %10.0f/s  p50 %6.2f ms  p99 %6.2f ms  cpu %5.2f s  errors %s  steal %s%%' \
    "$round" "$test" "$(label "$gw")" "$rps" "$p50" "$p99" "$cpu" "$errors" "$steal")"
  if [ "$reqs" = 0 ]; then
    tail -5 "$RUN/load.out" >&2
    die "$test against $gw served no request"
  fi
}

for round in $(seq "$ROUNDS"); do
  for test in $TESTS; do
    [ "$test" = fixed ] && continue
    for gw in $GATEWAYS; do measure "$test" "$gw" "$round"; done
  done
done

# --- latency at the same load: every gateway offered the same request rate ----------------
# The runs above saturate the machine, where the slower gateway's latency is longer by
# queueing alone. Here each gateway is offered one fixed rate (a share of the slowest
# gateway's throughput) by h2load --rps, so the percentiles compare the same load.

declare -A FIXED_RATE=()
if [[ " $TESTS " == *" fixed "* ]]; then
  for base in h1 h2; do
    [[ " $TESTS " == *" $base "* ]] || continue
    rate=$(python3 "$BENCH_DIR/report.py" rate "$RAW" "$base" "$RATE_SHARE" "$CONNS")
    [ "${rate%% *}" -gt 0 ] || die "no throughput measured for $base to set a fixed rate from"
    FIXED_RATE[$base]=${rate##* }
    meta "rate_$base" "${rate%% *}"
    say "fixed load for $base: ${rate%% *} req/s (${rate##* } per connection)"
  done
  for round in $(seq "$ROUNDS"); do
    for base in h1 h2; do
      [ -n "${FIXED_RATE[$base]:-}" ] || continue
      for gw in $GATEWAYS; do measure "${base}fixed" "$gw" "$round"; done
    done
  done
fi

# --- memory: idle after the load, then with many idle keep-alive connections --------------

sleep 2
for gw in $GATEWAYS; do memory_row "$gw" after_load 0; done

if [ "$IDLE_CONNS" -gt 0 ]; then
  for gw in $GATEWAYS; do
    say "holding $IDLE_CONNS idle keep-alive connections to $(label "$gw")"
    port=$(gw_http "$gw")
    : >"$RUN/idle.out"
    timeout 300 python3 "$BENCH_DIR/idle_conns.py" 127.0.0.1 "$port" "$IDLE_CONNS" --hold 240 \
      --header "X-API-Key: $API_KEY" --header "Origin: $ORIGIN" >"$RUN/idle.out" 2>&1 &
    holder=$!
    PIDS+=("$holder")
    ready=""
    for _ in $(seq 1200); do
      ready=$(grep '^READY' "$RUN/idle.out" || true)
      [ -n "$ready" ] && break
      kill -0 "$holder" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$ready" ] || die "the idle connections to $gw never settled: $(tail -3 "$RUN/idle.out")"
    sleep 2
    established=$(ss -Htn state established "( sport = :$port )" | wc -l)
    memory_row "$gw" idle "$established"
    kill -TERM "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    say "$(label "$gw"): $ready; $established established at the gateway; $(grep '^DONE' "$RUN/idle.out" || echo 'DONE ?') still open at the end"
    NOTES+=("idle connections to $(label "$gw"): $(echo "$ready" | awk '{print $2 " opened, " $3 " failed"}'), $established established at the gateway while measured")
    : >"$(gw_log "$gw")"
    sleep 1
  done
fi

meta load_end "$(uptime | sed 's/.*load average/load average/')"
NOTES+=("nginx cannot send Palisade's per-request RateLimit header (remaining/reset); it sends the static RateLimit-Policy only. nginx still sends \`Server: nginx\` (server_tokens off); Palisade sends no Server header.")
NOTES+=("bare Pingora (examples/bare_pingora.rs) is a Pingora proxy with nothing but an upstream, run as Palisade runs (same threads, no work stealing, mimalloc, the vendored pingora-core): no policy, no access log, no metrics. Whatever it costs, Palisade's architecture costs too. It is a plain release build: against a profile-guided Palisade (BENCH_PGO=1, the default) it is the floor of the plain build, not of that one.")
NOTES+=("Palisade's access log is written by its own thread to stdout (a file here); nginx's with \`buffer=64k\`. Both logs were truncated after every run; 'access log lines / req' checks that every request was logged.")
NOTES+=("CPU s / 100k: the gateway's own CPU (utime+stime) per 100,000 requests (or handshakes), and 'of it kernel' its stime part (system calls, and loopback TCP, which the sender's system call carries to the receiving socket); the user-space part is the difference. The upstream and the load tools run on the same cores and are not counted. 'machine busy' is the whole machine's non-idle share during the run: near 100% means the numbers are CPU-bound for everyone on the box. 'steal' is the share of it the hypervisor took for other guests (/proc/stat), which slows whichever run it falls in.")
meta notes "$(printf '%s || ' "${NOTES[@]}" | sed 's/ || $//')"

python3 "$BENCH_DIR/report.py" render "$RAW" "$MEM" "$META" "$OUT/results.md"
say "results: $OUT/results.md (raw: $RAW, $MEM)"
