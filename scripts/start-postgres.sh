#!/usr/bin/env bash
# Starts the local PostgreSQL cluster for the store tests and prints the test database URL.
# stdout carries only the URL (callers capture it): every tool's chatter goes to stderr, e.g.
# pg_ctlcluster's "Removed stale pid file." when the machine image was snapshotted with the
# cluster running.
set -euo pipefail
exec 3>&1 1>&2
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  pg_ctlcluster "$ver" main start 3>&-  # the server must not hold the caller's pipe open
fi
for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
su postgres -c "psql -qtc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='klb_test'\"" | grep -q 1 \
  || su postgres -c "createdb klb_test"
echo "postgres://postgres:postgres@127.0.0.1/klb_test" >&3
