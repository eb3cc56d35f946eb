#!/usr/bin/env bash
# Runs every klb test: formatting, lints, unit and integration tests (including the root /
# network-namespace end-to-end tests with real HAProxy and FRR), the store tests on PostgreSQL,
# and the Octavia client compatibility tests. Run as root on Debian (see scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}

if [ "$(id -u)" -eq 0 ]; then
  bash scripts/install-deps.sh
else
  echo "warning: not root: namespace/HAProxy/FRR end-to-end tests will skip" >&2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# PostgreSQL: the same API/store suite runs on it when KLB_TEST_POSTGRES_URL is set.
if [ -z "${KLB_TEST_POSTGRES_URL:-}" ] && [ "$(id -u)" -eq 0 ] && command -v pg_ctlcluster >/dev/null; then
  KLB_TEST_POSTGRES_URL=$(bash scripts/start-postgres.sh)
  case "$KLB_TEST_POSTGRES_URL" in
    postgres://*) ;;
    *) echo "start-postgres.sh printed no database URL: '$KLB_TEST_POSTGRES_URL'" >&2; exit 1 ;;
  esac
  export KLB_TEST_POSTGRES_URL
fi
# Real OpenStack services on loopback for the openstack driver's tests (tests/openstack/).
# A failure to start them is loud but not fatal: those tests then skip and say why.
if [ -z "${KLB_TEST_OPENSTACK:-}" ] && [ "$(id -u)" -eq 0 ] && [ -z "${KLB_SKIP_OPENSTACK:-}" ]; then
  echo "== starting the local OpenStack services (tests/openstack/run-services.sh)"
  if bash tests/openstack/run-services.sh start; then
    export KLB_TEST_OPENSTACK=1
    trap 'bash tests/openstack/run-services.sh stop' EXIT
  else
    echo "WARNING: the local OpenStack services did not start; the openstack driver tests will skip" >&2
  fi
fi
echo "== cargo test (KLB_TEST_OPENSTACK=${KLB_TEST_OPENSTACK:-unset})"
echo "== cargo test (KLB_TEST_POSTGRES_URL=${KLB_TEST_POSTGRES_URL:-unset})"
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2

echo "== Octavia client compatibility (python-octaviaclient, openstacksdk)"
KLB_BIN="$target_dir/debug/klb" bash tests/compat/run.sh

echo "== all tests passed"
