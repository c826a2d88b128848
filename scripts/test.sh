#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and protocol tests, and the
# black-box interop tests against strongSwan in network namespaces (root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
cargo test --workspace --no-fail-fast
