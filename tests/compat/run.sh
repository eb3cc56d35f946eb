#!/usr/bin/env bash
# Octavia client compatibility test: python-openstackclient + python-octaviaclient and
# openstacksdk (pinned in requirements.txt, installed from PyPI into a venv) drive a real
# `klb serve` (noauth, temporary SQLite database, free loopback port) and pytest asserts
# what they get back (tests/compat/test_octavia_compat.py).
#
# Usage: tests/compat/run.sh [KLB_BIN] [pytest args...]
#   KLB_BIN            path of the klb binary (default: $KLB_BIN or target/debug/klb)
#   KLB_COMPAT_VENV    venv to create or reuse (default: target/compat-venv; see venv.sh)
#   KLB_COMPAT_PYTHON  python used to create the venv (default: python3)
# Exit status: pytest's (non-zero on any failed case), or 2 when setup fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

klb_bin=${KLB_BIN:-$root/target/debug/klb}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  klb_bin=$1
  shift
fi
if [ ! -x "$klb_bin" ]; then
  echo "compat: klb binary not found or not executable: $klb_bin (build it: cargo build -p klb)" >&2
  exit 2
fi
klb_bin=$(cd "$(dirname "$klb_bin")" && pwd)/$(basename "$klb_bin")

venv=$(bash "$here/venv.sh")
"$venv/bin/openstack" --version

work=$(mktemp -d "${TMPDIR:-/tmp}/klb-compat.XXXXXX")
server_pid=""
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/server.log" ]; then
    echo "== compat: last lines of the klb serve log ($work/server.log kept)" >&2
    tail -n 40 "$work/server.log" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port: bind port 0, read it back, close. (A tiny race with other processes
# is possible; the wait below then fails loudly instead of testing another server.)
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
endpoint="http://127.0.0.1:$port"

echo "== compat: starting $klb_bin serve on $endpoint (db $work/klb.db)"
(
  cd "$work"
  export KLB_API_BIND="127.0.0.1:$port"
  export KLB_DATABASE_URL="sqlite://$work/klb.db?mode=rwc"
  export KLB_API_AUTH_STRATEGY=noauth
  exec "$klb_bin" serve >"$work/server.log" 2>&1
) &
server_pid=$!

# Wait (bounded: 30 s) until the version document answers.
ready=0
for _ in $(seq 1 300); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "compat: klb serve exited early:" >&2
    cat "$work/server.log" >&2
    exit 2
  fi
  if "$venv/bin/python" - "$endpoint" <<'EOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/", timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
    ready=1
    break
  fi
  sleep 0.1
done
if [ "$ready" -ne 1 ]; then
  echo "compat: klb serve did not answer GET / within 30 s" >&2
  exit 2
fi

echo "== compat: running pytest"
set +e
KLB_ENDPOINT="$endpoint" PATH="$venv/bin:$PATH" \
  "$venv/bin/python" -m pytest -p no:cacheprovider -rA "$here/test_octavia_compat.py" "$@"
rc=$?
set -e
exit "$rc"
