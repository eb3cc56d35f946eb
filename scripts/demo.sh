#!/usr/bin/env bash
# Sets up a fresh Debian machine (packages, release build) and runs `klb demo`: a whole real
# active-active load balancer on the local cloud of network namespaces, then removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "klb demo needs root (network namespaces)" >&2; exit 1; }
bash scripts/install-deps.sh
cargo build --release -p klb
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
exec "$target_dir/release/klb" demo "$@"
