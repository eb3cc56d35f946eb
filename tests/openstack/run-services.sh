#!/usr/bin/env bash
# Installs (first time: ~4.5 min) and starts (~1 min) real Keystone, Neutron, Nova (fake virt
# driver, two compute hosts), Placement, Glance, Aodh and Barbican from PyPI on loopback, then
# klb's fixtures (tests/openstack/setup-cloud.py). Run as root. `stop` stops them by PID.
# The kit (tests/openstack/kit) is ../shared/openstack-local as verified; its README has ports,
# versions and pitfalls. WORKDIR: KLB_OPENSTACK_DIR (default /var/lib/klb-openstack-local).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
W=${KLB_OPENSTACK_DIR:-/var/lib/klb-openstack-local}
case "${1:-start}" in
  start)
    bash "$here/kit/install.sh" "$W" >&2
    "$W/start.sh" all >&2
    "$W/venv/bin/python" "$here/setup-cloud.py" 2>/dev/null >&2
    ;;
  stop)
    [ -x "$W/stop.sh" ] && "$W/stop.sh" >&2 || true
    ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
