#!/usr/bin/env bash
# The main job: installs what is needed, builds renkei's release binary
# (the one "Running a hub" in README.md uses), starts a hub and a
# strongSwan facility in network namespaces, configures the facility from
# `renkei export`, and shows the hub's status and a ping through the
# tunnel. Each operator command is printed before it runs; the last line
# says whether it worked. Everything it creates is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# install-deps.sh may just have installed Rust with rustup.
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
  . "$HOME/.cargo/env"
fi
target=${CARGO_TARGET_DIR:-target}
echo "demo: building the release binary (several minutes the first time)"
echo "+ cargo build --release -p renkei-cli"
cargo build --release -p renkei-cli --quiet
echo "demo: building the demo's lab driver (rk-demo: namespaces, strongSwan)"
echo "+ cargo build --release -p renkei-interop-tests --bin rk-demo"
cargo build --release -p renkei-interop-tests --bin rk-demo --quiet
echo "demo: renkei is $target/release/renkei ($(du -h "$target/release/renkei" | cut -f1))"
case $target in
  /*) RENKEI_BIN=$target/release/renkei ;;
  *) RENKEI_BIN=$PWD/$target/release/renkei ;;
esac
export RENKEI_BIN
exec "$target/release/rk-demo"
