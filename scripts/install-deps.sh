#!/usr/bin/env bash
# Installs what klb's demo and tests need on a fresh Debian machine (run as root).
# Idempotent: packages already present are skipped.
set -euo pipefail

need=()
for pkg in haproxy frr frr-pythontools postgresql iproute2 iptables socat curl openssl python3-venv ca-certificates sqlite3; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The distribution's daemons are not used: klb starts its own HAProxy/FRR per namespace.
for svc in haproxy frr; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
