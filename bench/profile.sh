#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a figure that does not move with
# whatever else the machine is doing, for before/after comparisons of hot-path work.
#
# Runs the gateway under callgrind twice (PROFILE_SMALL, then PROFILE_LARGE HTTP/1.1 keep-alive
# requests through h2load --h1) in front of the bench's upstream, and subtracts the two runs,
# so start-up and shutdown cancel out. Prints the total per request and the functions that cost
# the most per request (inclusive), and keeps the callgrind files (and h2load's report beside
# each, with its header byte counts) in target/bench/profile/.
#
#   bench/profile.sh [full|pass|nginx|bare]      default: full (bare: examples/bare_pingora.rs)
#
# Settings: PROFILE_SMALL=2000 PROFILE_LARGE=12000, PROFILE_TOP=40, PROFILE_CONNS=4 (connections),
# PROFILE_PROTO=h1 (or h2:
# HTTP/2 over TLS, 4 connections x 10 streams; the handshakes cancel out in the subtraction),
# and as in run.sh BENCH_BIN and BENCH_API_KEY_CHECK (auto | on | off). PROFILE_VALGRIND_ARGS adds
# valgrind options (callgrind and dhat), e.g. '--separate-callers=2' to split a function's cost
# by its callers, '--cache-sim=yes --branch-sim=yes' for simulated cache misses and branch
# mispredictions per request (printed under the total), '--num-callers=40' for DHAT's stacks
# of a build with line tables (CARGO_PROFILE_RELEASE_DEBUG=line-tables-only).
# PROFILE_RATE=N offers N requests per second in all (h2load --rps, split over the
# connections) instead of as fast as the gateway answers: the cost of a request that finds the
# gateway idle (each one wakes a thread), where the default measures a saturated gateway that
# takes many requests per wake-up; under callgrind a few hundred a second is already that.
# PROFILE_TOOL=strace counts system calls per request instead; PROFILE_TOOL=perf samples one
# run of PROFILE_LARGE requests at full speed (perf record -e cpu-clock; PROFILE_PERF_ARGS adds
# options) and prints each symbol's share of the gateway's CPU, then bench/atomics.py's share
# of the samples that wait on an atomic instruction. PROFILE_TOOL=dhat counts heap
# allocations per request by where they are made (valgrind's DHAT, the two runs subtracted by
# bench/dhat_diff.py; mimalloc's malloc in the binary is intercepted with --soname-synonyms).
# PROFILE_TOOL=stat counts, per request, the CPU time and the scheduler's work (perf stat's
# software events: task-clock, context switches, migrations, page faults), which neither
# callgrind nor a sampled profile shows: each thread wake-up is a context switch.
set -euo pipefail

WHICH=${1:-full}
SMALL=${PROFILE_SMALL:-2000}
LARGE=${PROFILE_LARGE:-12000}
TOP=${PROFILE_TOP:-40}
PROTO=${PROFILE_PROTO:-h1}
TOOL=${PROFILE_TOOL:-callgrind}
CONNS=${PROFILE_CONNS:-4}
RATE=${PROFILE_RATE:-}
RPS=()
if [ -n "$RATE" ]; then
  [ "$RATE" -ge "$CONNS" ] 2>/dev/null || { echo "profile: PROFILE_RATE is a number of requests per second, at least PROFILE_CONNS" >&2; exit 2; }
  RPS=(--rps="$((RATE / CONNS))")
fi
case "$PROTO" in
  h1) SUFFIX="" ;;
  h2) SUFFIX=".h2" ;;
  *) echo "profile: PROFILE_PROTO is h1 or h2" >&2; exit 2 ;;
esac
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
OUT=$TARGET_DIR/bench/profile
PATH=$PATH:/usr/sbin:/sbin
export PATH PYTHONDONTWRITEBYTECODE=1
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

case "$TOOL" in
  callgrind) TOOLS="valgrind callgrind_annotate" ;;
  strace) TOOLS="strace pgrep" ;;
  perf | stat) TOOLS="perf pgrep" ;;
  dhat) TOOLS="valgrind python3" ;;
  *) echo "profile: PROFILE_TOOL is callgrind, strace, perf, stat or dhat" >&2; exit 2 ;;
esac
for tool in $TOOLS nginx h2load curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "profile: needs $tool (Debian: valgrind strace procps nginx nghttp2-client curl)" >&2; exit 1; }
done
if [ -n "${BENCH_BIN:-}" ]; then
  BIN=$BENCH_BIN
else
  cargo build --release --bin palisade
  BIN=$TARGET_DIR/release/palisade
fi

mkdir -p "$OUT"
RUN=$(mktemp -d "${TMPDIR:-/tmp}/palisade-profile.XXXXXX")
mkdir -p "$RUN/tmp"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r UP_PORT GW GWS ADMIN < <(free_ports 4)
"$BIN" cert dev --out "$RUN/cert" >/dev/null
CERT=$RUN/cert/dev.pem
KEY=$RUN/cert/dev-key.pem
UPSTREAM_WORKERS=1
API_KEY="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
export BENCH_API_KEYS=$API_KEY

# gw_render TEMPLATE OUT APIKEYS(on|off) THREADS: a config on this run's ports
gw_render() { THREADS=$4 render "$1" "$2" "$3" "$GW" "$GWS" "$ADMIN"; }

case "${BENCH_API_KEY_CHECK:-auto}" in
  on | off) KEYS=$BENCH_API_KEY_CHECK ;;
  *)
    gw_render palisade-full.toml probe.toml on 2
    if "$BIN" check "$RUN/probe.toml" >/dev/null 2>&1; then KEYS=on; else KEYS=off; fi
    ;;
esac

gw_render upstream.nginx.conf upstream.conf off 1
nginx -e "$RUN/upstream.error.log" -p "$RUN" -c "$RUN/upstream.conf" >/dev/null 2>&1 &
PIDS+=($!)

case "$WHICH" in
  full) gw_render palisade-full.toml gw.conf "$KEYS" 2 ;;
  pass) gw_render palisade-passthrough.toml gw.conf off 2 ;;
  nginx)
    gw_render nginx-gateway.conf gw.conf "$KEYS" 1
    gw_render nginx-gateway.headers.conf nginx-gateway.headers.conf "$KEYS" 1
    gw_render nginx-gateway.location.conf nginx-gateway.location.conf "$KEYS" 1
    # One process: the worker's work is what callgrind sees.
    sed -i 's/^master_process on;/master_process off;/' "$RUN/gw.conf"
    ;;
  bare) BARE_BIN=${BENCH_BARE_BIN:-$TARGET_DIR/release/examples/bare_pingora}
    [ -n "${BENCH_BARE_BIN:-}" ] || cargo build --release --example bare_pingora
    ;;
  *) echo "usage: bench/profile.sh [full|pass|nginx|bare]" >&2; exit 2 ;;
esac

# profile_run REQUESTS: the gateway under callgrind serving REQUESTS requests; prints its file
profile_run() {
  local n=$1 out=$OUT/callgrind.$WHICH$SUFFIX.$1 pid _
  # shellcheck disable=SC2086 # PROFILE_VALGRIND_ARGS is a list of options
  local tracer=(valgrind --tool=callgrind --callgrind-out-file="$out" ${PROFILE_VALGRIND_ARGS:-})
  [ "$TOOL" = strace ] && { out=$OUT/strace.$WHICH$SUFFIX.$1; tracer=(strace -f -c -o "$out"); }
  [ "$TOOL" = dhat ] && { out=$OUT/dhat.$WHICH$SUFFIX.$1.json; tracer=(valgrind --tool=dhat --soname-synonyms=somalloc=NONE --dhat-out-file="$out" ${PROFILE_VALGRIND_ARGS:-}); }
  # shellcheck disable=SC2086 # PROFILE_PERF_ARGS is a list of options
  [ "$TOOL" = perf ] && { out=$OUT/perf.$WHICH$SUFFIX.$1; tracer=(perf record -q -e cpu-clock -F 4999 ${PROFILE_PERF_ARGS:-} -o "$out" --); }
  [ "$TOOL" = stat ] && { out=$OUT/stat.$WHICH$SUFFIX.$1; tracer=(perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults -o "$out" --); }
  if [ "$WHICH" = nginx ]; then
    "${tracer[@]}" nginx -e "$RUN/gw.error.log" -p "$RUN" -c "$RUN/gw.conf" >"$RUN/vg.log" 2>&1 &
  elif [ "$WHICH" = bare ]; then
    "${tracer[@]}" "$BARE_BIN" "127.0.0.1:$GW" "127.0.0.1:$GWS" "$RUN/cert/dev.pem" "$RUN/cert/dev-key.pem" \
      "127.0.0.1:$UP_PORT" 2 >/dev/null 2>"$RUN/vg.log" &
  else
    "${tracer[@]}" "$BIN" run --config "$RUN/gw.conf" >/dev/null 2>"$RUN/vg.log" &
  fi
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 120); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$GW/" && break
    sleep 0.5
  done
  if [ "$PROTO" = h2 ]; then
    timeout 600 h2load -t1 -c"$CONNS" -m10 -n "$n" "${RPS[@]}" -H "X-API-Key: $API_KEY" -H "Origin: https://app.example.com" \
      "https://127.0.0.1:$GWS/" >"$RUN/h2load.out" 2>&1 || true
  else
    timeout 600 h2load --h1 -t1 -c"$CONNS" -n "$n" "${RPS[@]}" -H "X-API-Key: $API_KEY" -H "Origin: https://app.example.com" \
      "http://127.0.0.1:$GW/" >"$RUN/h2load.out" 2>&1 || true
  fi
  cp "$RUN/h2load.out" "$out.h2load.txt"
  grep -q "status codes: $n 2xx" "$RUN/h2load.out" || { cat "$RUN/h2load.out" >&2; echo "profile: not every request got a 2xx" >&2; exit 1; }
  local target=$pid
  # strace's and perf's child is the gateway; they write their files when the child is gone.
  case "$TOOL" in strace | perf | stat) target=$(pgrep -o -P "$pid") ;; esac
  if [ "$WHICH" = nginx ]; then kill -QUIT "$target"; else kill -INT "$target"; fi
  wait "$pid" || true
  echo "$out"
}

# totals FILE: "function<TAB>inclusive instructions", one line per function
totals() {
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    grep -E '^ *[0-9,]+ \( *[0-9.]+%\)  ' |
    sed -E 's/^ *([0-9,]+) \( *[0-9.]+%\)  (.*) \[.*$/\1\t\2/; s/,//g' |
    awk -F'\t' '{ s[$2] += $1 } END { for (k in s) print k "\t" s[k] }' | sort -t"$(printf '\t')" -k1,1
}

if [ "$TOOL" = perf ]; then
  # Sampling, not counting: one run, and the share of the gateway's CPU samples per symbol
  # (start-up and shutdown included, which a large PROFILE_LARGE makes negligible).
  large=$(profile_run "$LARGE")
  echo "$WHICH: share of the gateway's CPU samples (perf, cpu-clock; $LARGE requests)"
  # `head` closing the pipe early is no failure.
  perf report -q -i "$large" --no-children --sort dso,symbol --percent-limit 0.3 2>/dev/null | head -n "$TOP" | cut -c1-200 || true
  echo
  # The samples that wait on atomic instructions (counts and locks shared between threads).
  if command -v objdump >/dev/null 2>&1 && [ "$WHICH" != nginx ] && [ "$WHICH" != bare ]; then
    python3 "$BENCH_DIR/atomics.py" "$large" "$BIN" 12 || true
    echo
  fi
  echo "perf file: $large (perf report -i FILE)"
  exit 0
fi
small=$(profile_run "$SMALL")
large=$(profile_run "$LARGE")
n=$((LARGE - SMALL))
if [ "$PROTO" = h2 ]; then how="HTTP/2 over TLS, $CONNS connections x 10 streams"; else how="HTTP/1.1, $CONNS keep-alive connections"; fi
[ -n "$RATE" ] && how="$how, $((RATE / CONNS * CONNS)) a second"
if [ "$TOOL" = dhat ]; then
  echo "$WHICH: heap allocations per request ($SMALL vs $LARGE requests, $how)"
  python3 "$BENCH_DIR/dhat_diff.py" "$small" "$large" "$n" "$TOP"
  echo
  echo "DHAT files: $small $large (valgrind's dh_view.html reads them)"
  exit 0
fi
if [ "$TOOL" = strace ]; then
  # strace -c's table: calls in the fourth column (or third, when seconds are blank).
  calls() { awk '$NF != "total" && $1 ~ /^[0-9.]+$/ { c = (NF >= 6) ? $4 : $(NF-1); if (c ~ /^[0-9]+$/) print $NF "\t" c }' "$1" | sort; }
  calls "$small" >"$RUN/a"
  calls "$large" >"$RUN/b"
  echo "$WHICH: system calls per request ($SMALL vs $LARGE requests, $how; every thread and process)"
  join -t"$(printf '\t')" -a2 -e0 -o0,1.2,2.2 "$RUN/a" "$RUN/b" |
    awk -F'\t' -v n="$n" '{ d = ($3 - $2) / n; t += d; if (d >= 0.01) printf "%8.2f  %s\n", d, $1 } END { printf "%8.2f  total\n", t }' |
    sort -rn
  echo
  echo "strace tables: $small $large"
  exit 0
fi
if [ "$TOOL" = stat ]; then
  # perf stat -x, lines: value,unit,event,...
  events() { awk -F, '$1 ~ /^[0-9.]+$/ { print $3 "\t" $1 }' "$1" | sort; }
  events "$small" >"$RUN/a"
  events "$large" >"$RUN/b"
  echo "$WHICH: per request ($SMALL vs $LARGE requests, $how; every thread of the gateway)"
  join -t"$(printf '\t')" "$RUN/a" "$RUN/b" |
    awk -F'\t' -v n="$n" '{ d = ($3 - $2) / n; if ($1 == "task-clock") printf "%10.2f  microseconds of CPU (task-clock)\n", d * 1000; else printf "%10.3f  %s\n", d, $1 }'
  echo
  echo "perf stat files: $small $large"
  exit 0
fi
total_small=$(awk '/^summary:/ { print $2 }' "$small")
total_large=$(awk '/^summary:/ { print $2 }' "$large")
if [ "$WHICH" = pass ]; then label="pass (no policies)"; else label="$WHICH (API key check $KEYS)"; fi
echo "$label: $(awk -v a="$total_small" -v b="$total_large" -v n="$n" 'BEGIN { printf "%.0f", (b - a) / n }') instructions per request (user space; $SMALL vs $LARGE requests, $how)"
# With --cache-sim=yes / --branch-sim=yes: every simulated event per request, as the two runs'
# "events:" and "summary:" lines name them (I1mr: first-level instruction cache read misses,
# D1mr / D1mw: data cache read / write misses, Bcm: conditional branches mispredicted, ...).
if grep -q '^events:.*D1mr\|^events:.*Bcm' "$large"; then
  awk -v n="$n" '/^events:/ { for (i = 2; i <= NF; i++) name[i] = $i }
    /^summary:/ { for (i = 2; i <= NF; i++) v[FILENAME, i] = $i; last = NF }
    END { printf "per request:"; for (i = 2; i <= last; i++) if (name[i] !~ /^(ILmr|DLmr|DLmw)$/)
      printf " %s %.0f", name[i], (v[ARGV[2], i] - v[ARGV[1], i]) / n; print "" }' "$small" "$large"
fi
echo
echo "per request, inclusive (a function's callees counted in it):"
totals "$small" >"$RUN/a"
totals "$large" >"$RUN/b"
join -t"$(printf '\t')" "$RUN/a" "$RUN/b" |
  awk -F'\t' -v n="$n" '$1 != "" { d = ($3 - $2) / n; if (d >= 100) printf "%9.0f  %s\n", d, $1 }' |
  sort -rn | head -n "$TOP" | cut -c1-200
echo
echo "callgrind files: $small $large (callgrind_annotate --tree=calling FILE)"
