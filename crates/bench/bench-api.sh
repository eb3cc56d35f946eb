#!/usr/bin/env bash
# Runs `klb bench api` against a fresh `klb serve` (noauth, temporary SQLite database, free
# loopback port) and reports the server's peak RSS. The server is stopped by PID on exit.
#
# Usage: crates/bench/bench-api.sh [klb bench api options...]
#   default options: --concurrency 8,50 --count 200 --output results/api-klb.json
#   KLB_BIN         klb binary (default target/release/klb; built with `cargo build --release -p klb`
#                   when missing)
#   KLB_CLIENT_BIN  klb binary that runs `klb bench api` (default KLB_BIN): to compare two server
#                   builds with the same client
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
klb_bin=${KLB_BIN:-$root/target/release/klb}
if [ ! -x "$klb_bin" ]; then
  cargo build --release -p klb
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/klb-bench.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
KLB_API_BIND="127.0.0.1:$port" KLB_DATABASE_URL="sqlite://$work/klb.db?mode=rwc" \
  KLB_API_AUTH_STRATEGY=noauth RUST_LOG=${RUST_LOG:-warn} \
  "$klb_bin" serve >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 300); do
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 2; }
  curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
  sleep 0.1
done

if [ $# -eq 0 ]; then
  set -- --concurrency 8,50 --count 200 --output results/api-klb.json
fi
"${KLB_CLIENT_BIN:-$klb_bin}" bench api --url "http://127.0.0.1:$port" --server-pid "$server_pid" "$@"
