#!/usr/bin/env bash
# Creates (or reuses) the pinned Octavia client venv (python-openstackclient,
# python-octaviaclient, openstacksdk from requirements.txt, installed from PyPI) and prints
# its path on stdout; progress goes to stderr. Used by run.sh and by
# crates/klb/tests/keystone.rs (the CLI through Keystone's catalog).
#   KLB_COMPAT_VENV    venv to create or reuse (default: target/compat-venv)
#   KLB_COMPAT_PYTHON  python used to create the venv (default: python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${KLB_COMPAT_VENV:-${CARGO_TARGET_DIR:-$root/target}/compat-venv}
python=${KLB_COMPAT_PYTHON:-python3}
stamp="$venv/.klb-requirements.sha256"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)

# The venv is reused while requirements.txt is unchanged (the stamp holds its hash).
if [ ! -x "$venv/bin/openstack" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== compat: creating venv $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$want" >"$stamp"
fi
echo "$venv"
