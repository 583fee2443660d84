# Helpers the bench scripts share (sourced, not run): free ports and the config templates.
# shellcheck shell=bash

# need_packages COMMAND:PACKAGE...: installs with apt-get the Debian package of every command
# that is missing (a COMMAND may be a path); fails where that cannot be done.
need_packages() {
  local need=() pair sudo=""
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}"); done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "bench: installing ${need[*]}" >&2
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || return 1
    sudo=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# free_ports N: N free TCP ports on 127.0.0.1, space-separated
free_ports() {
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# render TEMPLATE OUT APIKEYS(on|off) HTTP HTTPS ADMIN: fills in a template of bench/ into
# $RUN/OUT from the globals BENCH_DIR RUN CERT KEY API_KEY THREADS UPSTREAM_WORKERS UP_PORT.
# APIKEYS on keeps the `#APIKEYS` lines (the API key check), off drops them.
render() {
  local keep=/^#APIKEYS/d
  [ "$3" = on ] && keep='s/^#APIKEYS //'
  sed -e "$keep" \
    -e "s|@RUN@|$RUN|g" -e "s|@CERT@|$CERT|g" -e "s|@KEY@|$KEY|g" -e "s|@API_KEY@|$API_KEY|g" \
    -e "s|@THREADS@|$THREADS|g" -e "s|@UPSTREAM_WORKERS@|$UPSTREAM_WORKERS|g" \
    -e "s|@UPSTREAM_PORT@|$UP_PORT|g" -e "s|@HTTP_PORT@|$4|g" -e "s|@HTTPS_PORT@|$5|g" \
    -e "s|@ADMIN_PORT@|$6|g" "$BENCH_DIR/$1" >"$RUN/$2"
}

# wait_tcp PORT: waits (up to 10 s) until 127.0.0.1:PORT accepts a connection; fails if not.
# A bare TCP probe, so a TLS port's log gets no failed handshake.
wait_tcp() {
  local _
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
