#!/usr/bin/env bash
# The main job: installs what is needed, builds renkei, starts a hub and a
# strongSwan facility in network namespaces, and shows the hub's status and
# a ping through the tunnel. Everything it creates is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --workspace --bins --quiet
exec target/debug/rk-demo
