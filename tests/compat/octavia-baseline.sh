#!/usr/bin/env bash
# The real Octavia API on this machine, for same-run comparisons with klb: PyPI `octavia` 19
# (pinned in octavia-requirements.txt) in a venv, MariaDB from Debian with a private data
# directory (unix socket only, no TCP), Octavia's noop compute/network/amphora/volume/image
# drivers, noauth, and the v2 controller worker in the API process on oslo.messaging's `fake:`
# transport (octavia_inproc.py), so no RabbitMQ is needed.
#
# Usage (as root, Debian 12, Python 3.11):
#   tests/compat/octavia-baseline.sh [klb bench api options...]
#       starts MariaDB + Octavia, runs `klb bench api` against it (default options
#       --concurrency 8 --count 200 --output results/api-octavia.json), stops everything.
#   tests/compat/octavia-baseline.sh serve
#       starts MariaDB + Octavia and keeps them until Ctrl-C (prints the URL).
# Env: KLB_BIN (default target/release/klb), OCTAVIA_VENV (default target/octavia-venv),
#      OCTAVIA_PORT (default: a free port), OCTAVIA_PROJECT (X-Project-Id, default "bench").
# Everything started is stopped by PID on exit; the temporary directory is removed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${OCTAVIA_VENV:-$root/target/octavia-venv}
klb_bin=${KLB_BIN:-$root/target/release/klb}
project=${OCTAVIA_PROJECT:-bench}

mode=bench
if [ "${1:-}" = serve ]; then
  mode=serve
  shift
fi

# --- install (idempotent) -------------------------------------------------------------------
if [ ! -x /usr/sbin/mariadbd ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "octavia-baseline: MariaDB is missing and installing it needs root" >&2
    exit 2
  fi
  echo "== installing mariadb-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends mariadb-server >/dev/null
fi
stamp="$venv/.klb-requirements.sha256"
want=$(sha256sum "$here/octavia-requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/octavia-db-manage" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== creating venv $venv (octavia)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/octavia-requirements.txt"
  echo "$want" >"$stamp"
fi
if [ "$mode" = bench ] && [ ! -x "$klb_bin" ]; then
  cargo build --release -p klb --manifest-path "$root/Cargo.toml"
fi

# --- start ----------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/klb-octavia.XXXXXX")
chmod 755 "$work"
db_pid=""
octavia_pid=""
stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop_pid "$octavia_pid"
  stop_pid "$db_pid"
  if [ "$rc" -ne 0 ]; then
    for f in octavia.log mysqld.err; do
      [ -s "$work/$f" ] && { echo "== last lines of $f" >&2; tail -n 30 "$work/$f" >&2; }
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== MariaDB (private datadir $work/db)"
mariadb-install-db --no-defaults --datadir="$work/db" --user=root \
  --auth-root-authentication-method=socket --skip-test-db >"$work/install-db.log" 2>&1
/usr/sbin/mariadbd --no-defaults --datadir="$work/db" --socket="$work/mysqld.sock" \
  --pid-file="$work/mysqld.pid" --skip-networking --user=root \
  --log-error="$work/mysqld.err" --innodb-buffer-pool-size=256M &
db_pid=$!
for _ in $(seq 1 300); do
  [ -S "$work/mysqld.sock" ] && break
  kill -0 "$db_pid" 2>/dev/null || { echo "mariadbd exited" >&2; exit 2; }
  sleep 0.1
done
mariadb --socket="$work/mysqld.sock" -u root -e "CREATE DATABASE octavia;
  CREATE USER 'octavia'@'localhost' IDENTIFIED BY 'octavia';
  GRANT ALL ON octavia.* TO 'octavia'@'localhost';"

port=${OCTAVIA_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')}
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" \
  -days 7 -subj "/CN=klb-octavia-baseline-ca" >/dev/null 2>&1
cat >"$work/octavia.conf" <<EOF
[DEFAULT]
transport_url = fake:/
host = octavia-baseline

[api_settings]
bind_host = 127.0.0.1
bind_port = $port
auth_strategy = noauth
enabled_provider_drivers = amphora:The Octavia Amphora driver.,octavia:Deprecated alias of the Octavia Amphora driver.
default_provider_driver = amphora

[database]
connection = mysql+pymysql://octavia:octavia@localhost/octavia?unix_socket=$work/mysqld.sock

[controller_worker]
amphora_driver = amphora_noop_driver
compute_driver = compute_noop_driver
network_driver = network_noop_driver
volume_driver = volume_noop_driver
image_driver = image_noop_driver
loadbalancer_topology = SINGLE
amp_image_tag = amphora
amp_flavor_id = 1
amp_boot_network_list = 00000000-0000-4000-8000-000000000001
amp_secgroup_list = 00000000-0000-4000-8000-000000000002
client_ca = $work/ca.pem

[certificates]
cert_generator = local_cert_generator
ca_certificate = $work/ca.pem
ca_private_key = $work/ca.key

[task_flow]
jobboard_enabled = False

[oslo_messaging]
topic = octavia_prov

[health_manager]
bind_ip = 127.0.0.1
controller_ip_port_list = 127.0.0.1:5555
heartbeat_key = insecure
EOF

echo "== octavia-db-manage upgrade head"
"$venv/bin/octavia-db-manage" --config-file "$work/octavia.conf" upgrade head >"$work/db-manage.log" 2>&1 \
  || { tail -n 30 "$work/db-manage.log" >&2; exit 2; }

echo "== Octavia API + in-process worker on 127.0.0.1:$port"
"$venv/bin/python" "$here/octavia_inproc.py" --config-file "$work/octavia.conf" >"$work/octavia.log" 2>&1 &
octavia_pid=$!
ready=0
for _ in $(seq 1 600); do
  kill -0 "$octavia_pid" 2>/dev/null || { echo "octavia exited" >&2; exit 2; }
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
[ "$ready" -eq 1 ] || { echo "octavia did not answer within 60 s" >&2; exit 2; }

url="http://127.0.0.1:$port"
if [ "$mode" = serve ]; then
  echo "octavia: $url (noauth; send X-Project-Id: $project), pid $octavia_pid; Ctrl-C stops"
  wait "$octavia_pid"
  exit 0
fi
if [ $# -eq 0 ]; then
  set -- --concurrency 8 --count 200 --output results/api-octavia.json
fi
"$klb_bin" bench api --url "$url" --project-id "$project" --server-pid "$octavia_pid" "$@"
