#!/usr/bin/env bash
# A profile-guided (PGO) release build of Palisade: the build to deploy where CPU per request
# matters. LLVM lays out and inlines the code by how often each branch ran in a training run,
# instead of by guesses; then BOLT lays out the linked binary's functions and blocks by how
# often they ran in a second training run, so the hot path shares fewer cache lines with cold
# code.
#
#   bench/pgo.sh          builds target/pgo/bolt/palisade (PGO_BOLT=0: target/pgo/release/
#                         palisade) and prints its path (last line)
#
# The steps, each logged to stderr:
#   1. an instrumented build (RUSTFLAGS=-Cprofile-generate) in target/pgo-gen;
#   2. training: that binary serves, on loopback, the traffic `make bench` measures and what a
#      gateway refuses or answers itself (below), with the full policy set and with none, then
#      exits on SIGTERM and writes its counts;
#   3. the counts merged by llvm-profdata (from the Debian package of rustc's own LLVM version,
#      installed when missing) and the release build made with them (-Cprofile-use) in
#      target/pgo, linked with its relocations kept (--emit-relocs) for BOLT;
#   4. (PGO_BOLT=1, the default) that binary instrumented by llvm-bolt (Debian's bolt-N,
#      installed when missing), the same training again, and llvm-bolt's layout of the binary
#      by those counts in target/pgo/bolt.
# Training traffic, PGO_SECONDS (default 5) each: HTTP/1.1 keep-alive GETs (wrk) and HTTP/2 over
# TLS (h2load), full policy and passthrough; HTTP/1.1 POSTs with a 4 KiB body; GETs without
# the API key (401); then a few hundred each of new TLS connections, CORS preflights, an
# oversized body (413) and bad requests (400). Code the training never ran is laid out as cold,
# so refusals are in it: under a flood they are the hot path.
#
# Settings: PGO_SECONDS=5, PGO_BOLT=1, PGO_PROFDATA (an llvm-profdata to use instead),
# CARGO_TARGET_DIR.
# Needs what `make bench` needs (wrk, h2load, nginx, curl, openssl, python3); installs them.
set -euo pipefail

SECS=${PGO_SECONDS:-5}
BOLT=${PGO_BOLT:-1}
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
cd "$REPO"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
# Absolute: cargo runs rustc in each crate's own directory.
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac
GEN_DIR=$TARGET_DIR/pgo-gen
USE_DIR=$TARGET_DIR/pgo
RAW_DIR=$GEN_DIR/profraw
PROFDATA=$USE_DIR/palisade.profdata
BOLT_DIR=$USE_DIR/bolt
PATH=$PATH:/usr/sbin:/sbin
export PATH PYTHONDONTWRITEBYTECODE=1

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

say() { printf 'pgo: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

need_packages wrk:wrk nginx:nginx h2load:nghttp2-client python3:python3 curl:curl openssl:openssl ||
  die "please install wrk nginx nghttp2-client python3 curl openssl"

# llvm-profdata must read the raw profile format of rustc's LLVM: the same major version.
LLVM_MAJOR=$(rustc -vV | awk '/^LLVM version:/ { split($3, v, "."); print v[1] }')
[ -n "$LLVM_MAJOR" ] || die "rustc -vV names no LLVM version"
if [ -n "${PGO_PROFDATA:-}" ]; then
  LLVM_PROFDATA=$PGO_PROFDATA
else
  sysroot_tool="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | awk '/^host:/ { print $2 }')/bin/llvm-profdata"
  if [ -x "$sysroot_tool" ]; then
    LLVM_PROFDATA=$sysroot_tool # rustup's llvm-tools component
  else
    LLVM_PROFDATA=/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-profdata
    need_packages "$LLVM_PROFDATA:llvm-$LLVM_MAJOR" ||
      die "no llvm-profdata for LLVM $LLVM_MAJOR: install Debian's llvm-$LLVM_MAJOR or rustup's llvm-tools, or set PGO_PROFDATA"
  fi
fi
[ -x "$LLVM_PROFDATA" ] || die "no llvm-profdata at $LLVM_PROFDATA"
STEPS=3
if [ "$BOLT" = 1 ]; then
  STEPS=4
  # Any BOLT reads any linker's output; the one of rustc's LLVM version is at hand already.
  LLVM_BOLT=/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-bolt
  MERGE_FDATA=/usr/lib/llvm-$LLVM_MAJOR/bin/merge-fdata
  need_packages "$LLVM_BOLT:bolt-$LLVM_MAJOR" ||
    die "no llvm-bolt: install Debian's bolt-$LLVM_MAJOR, or set PGO_BOLT=0"
fi

# --- 1. the instrumented build ------------------------------------------------------------

say "1/$STEPS instrumented build in $GEN_DIR"
rm -rf "$RAW_DIR"
RUSTFLAGS="-Cprofile-generate=$RAW_DIR" CARGO_TARGET_DIR=$GEN_DIR \
  cargo build --release --locked --bin palisade >&2
GEN_BIN=$GEN_DIR/release/palisade

# --- 2. training --------------------------------------------------------------------------

RUN=$(mktemp -d "${TMPDIR:-/tmp}/palisade-pgo.XXXXXX")
mkdir -p "$RUN/tmp"
PIDS=()
cleanup() {
  local status=$? pid
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  [ "$status" = 0 ] || cp "$RUN"/*.err "$GEN_DIR/" 2>/dev/null
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "2/$STEPS training ($SECS s per load)"
read -r UP_PORT FULL_HTTP FULL_HTTPS FULL_ADMIN PASS_HTTP PASS_HTTPS PASS_ADMIN < <(free_ports 7)
"$GEN_BIN" cert dev --out "$RUN/cert" >/dev/null
CERT=$RUN/cert/dev.pem
KEY=$RUN/cert/dev-key.pem
THREADS=2
UPSTREAM_WORKERS=1
API_KEY="pgo-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
export BENCH_API_KEYS=$API_KEY
ORIGIN="https://app.example.com"
render upstream.nginx.conf upstream.conf off 0 0 0
render palisade-full.toml full.toml on "$FULL_HTTP" "$FULL_HTTPS" "$FULL_ADMIN"
render palisade-passthrough.toml pass.toml off "$PASS_HTTP" "$PASS_HTTPS" "$PASS_ADMIN"

nginx -e "$RUN/upstream.error.log" -p "$RUN" -c "$RUN/upstream.conf" >"$RUN/upstream.err" 2>&1 &
PIDS+=($!)
wait_tcp "$UP_PORT" || die "the upstream nginx did not start; see $GEN_DIR/*.err"

# expect CODE COUNT CURL_ARGS... URL: COUNT requests for URL (one curl, reusing its connection
# where the gateway keeps it) must each get CODE
expect() {
  local code=$1 count=$2 url=${*: -1} got _ urls=()
  for _ in $(seq "$count"); do urls+=(-o /dev/null "$url"); done
  got=$(curl -s -w '%{http_code}\n' "${@:3:$#-3}" "${urls[@]}" 2>/dev/null | sort | uniq -c |
    awk '{ printf "%s%sx%s", s, $1, $2; s = " " }')
  [ "$got" = "${count}x$code" ] || die "training: want ${count}x$code for $url, got: $got"
}

# h2load_ok WHAT: h2load's report in $RUN/load.out shows answers, every one a 2xx
h2load_ok() {
  awk '/^status codes:/ { ok = ($3 > 0 && $5 + $7 + $9 == 0) } END { exit !ok }' "$RUN/load.out" ||
    die "h2load ($1): not every answer a 2xx: $(grep -E '^(requests|status codes):' "$RUN/load.out" | tr '\n' ' ')"
}

dd if=/dev/zero bs=4096 count=1 status=none >"$RUN/body.4k"
dd if=/dev/zero bs=1M count=2 status=none >"$RUN/body.2m"

# train BIN: BIN serves the training traffic with the full policy set and with none, then
# exits on SIGTERM (an instrumented binary writes its counts as it exits)
train() {
  local bin=$1 gw http https port pid key
  "$bin" run --config "$RUN/full.toml" >/dev/null 2>"$RUN/full.err" &
  FULL_PID=$!
  PIDS+=("$FULL_PID")
  "$bin" run --config "$RUN/pass.toml" >/dev/null 2>"$RUN/pass.err" &
  PASS_PID=$!
  PIDS+=("$PASS_PID")
  for port in "$FULL_HTTP" "$PASS_HTTP"; do
    wait_tcp "$port" || die "nothing listens on 127.0.0.1:$port; see $GEN_DIR/*.err"
  done
  for gw in full pass; do
    if [ "$gw" = full ]; then http=$FULL_HTTP https=$FULL_HTTPS; else http=$PASS_HTTP https=$PASS_HTTPS; fi
    key=(-H "X-API-Key: $API_KEY" -H "Origin: $ORIGIN")
    expect 200 1 "${key[@]}" "http://127.0.0.1:$http/"
    wrk -t2 -c32 -d"${SECS}s" "${key[@]}" "http://127.0.0.1:$http/" >"$RUN/load.out" 2>&1 ||
      die "wrk failed: $(tail -3 "$RUN/load.out")"
    h2load -t2 -c32 -m10 -D "$SECS" -H "x-api-key: $API_KEY" -H "origin: $ORIGIN" \
      "https://127.0.0.1:$https/" >"$RUN/load.out" 2>&1 || die "h2load failed: $(tail -3 "$RUN/load.out")"
    grep -q '^Application protocol: h2' "$RUN/load.out" || die "h2load did not speak h2: $(tail -3 "$RUN/load.out")"
    h2load_ok "HTTP/2"
    h2load --h1 -t2 -c16 -D "$SECS" -d "$RUN/body.4k" -H "x-api-key: $API_KEY" -H "origin: $ORIGIN" \
      -H 'content-type: application/json' "http://127.0.0.1:$http/" >"$RUN/load.out" 2>&1 ||
      die "h2load (POST) failed: $(tail -3 "$RUN/load.out")"
    h2load_ok POST
    # New TLS connections: a full handshake each.
    h2load -t2 -c100 -n 400 -H "x-api-key: $API_KEY" "https://127.0.0.1:$https/" >"$RUN/load.out" 2>&1 ||
      die "h2load (handshakes) failed: $(tail -3 "$RUN/load.out")"
    h2load_ok handshakes
    expect 400 300 -H 'Content-Length: 1' -H 'Content-Length: 2' "http://127.0.0.1:$http/"
  done
  # What the full policy set refuses or answers itself.
  wrk -t2 -c32 -d"${SECS}s" -H "Origin: $ORIGIN" "http://127.0.0.1:$FULL_HTTP/" >"$RUN/load.out" 2>&1 ||
    die "wrk (401) failed: $(tail -3 "$RUN/load.out")"
  grep -q 'Non-2xx or 3xx responses' "$RUN/load.out" || die "wrk without the API key got no refusals"
  expect 204 300 -X OPTIONS -H "Origin: $ORIGIN" -H 'Access-Control-Request-Method: POST' \
    -H 'Access-Control-Request-Headers: content-type' "http://127.0.0.1:$FULL_HTTP/"
  expect 413 100 -H "X-API-Key: $API_KEY" --data-binary "@$RUN/body.2m" "http://127.0.0.1:$FULL_HTTP/"

  for pid in "$FULL_PID" "$PASS_PID"; do kill -TERM "$pid"; done
  for pid in "$FULL_PID" "$PASS_PID"; do wait "$pid" || die "the instrumented gateway exited with $? on SIGTERM"; done
  PIDS=("${PIDS[0]}") # the upstream
}

train "$GEN_BIN"
ls "$RAW_DIR"/*.profraw >/dev/null 2>&1 || die "the training wrote no profile to $RAW_DIR"

# --- 3. the optimized build ---------------------------------------------------------------

say "3/$STEPS merging with $LLVM_PROFDATA, optimized build in $USE_DIR"
mkdir -p "$USE_DIR"
"$LLVM_PROFDATA" merge -o "$PROFDATA" "$RAW_DIR"/*.profraw >&2 ||
  die "$LLVM_PROFDATA could not merge the profile of rustc's LLVM $LLVM_MAJOR (set PGO_PROFDATA to a matching one)"
# BOLT moves functions only in a binary that keeps its relocations.
flags="-Cprofile-use=$PROFDATA"
[ "$BOLT" = 1 ] && flags="$flags -Clink-arg=-Wl,--emit-relocs"
RUSTFLAGS=$flags CARGO_TARGET_DIR=$USE_DIR cargo build --release --locked --bin palisade >&2
BIN=$USE_DIR/release/palisade

# --- 4. BOLT ------------------------------------------------------------------------------

if [ "$BOLT" = 1 ]; then
  say "4/$STEPS BOLT: instrumenting, training again, laying out in $BOLT_DIR"
  rm -rf "$BOLT_DIR"
  mkdir -p "$BOLT_DIR/fdata"
  "$LLVM_BOLT" "$BIN" -instrument -o "$BOLT_DIR/palisade.instrumented" \
    --instrumentation-file="$BOLT_DIR/fdata/palisade" --instrumentation-file-append-pid \
    >"$BOLT_DIR/instrument.log" 2>&1 || die "llvm-bolt -instrument failed: $(tail -3 "$BOLT_DIR/instrument.log")"
  train "$BOLT_DIR/palisade.instrumented"
  ls "$BOLT_DIR"/fdata/palisade.* >/dev/null 2>&1 || die "the BOLT training wrote no profile"
  "$MERGE_FDATA" "$BOLT_DIR"/fdata/palisade.* >"$BOLT_DIR/palisade.fdata" 2>"$BOLT_DIR/merge.log" ||
    die "merge-fdata failed: $(tail -3 "$BOLT_DIR/merge.log")"
  # The layout rustc's own release builds get from BOLT.
  "$LLVM_BOLT" "$BIN" -o "$BOLT_DIR/palisade" -data="$BOLT_DIR/palisade.fdata" \
    -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
    -split-eh -icf=all -use-gnu-stack -dyno-stats >"$BOLT_DIR/optimize.log" 2>&1 ||
    die "llvm-bolt failed: $(tail -3 "$BOLT_DIR/optimize.log")"
  BIN=$BOLT_DIR/palisade
fi
"$BIN" version >&2
echo "$BIN"
