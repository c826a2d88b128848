#!/usr/bin/env bash
# The whole test suite: formatting, lints, time-boxed fuzzing, unit and
# protocol tests, and the black-box interop tests against strongSwan in
# network namespaces (root).
# Ends with one line totalling every test: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# All targets at once: the tests build with the same features, so nothing
# is compiled twice.
cargo build --workspace --all-targets --quiet
# Every fuzz target, time-boxed (longer runs: bash scripts/fuzz.sh 3600).
bash scripts/fuzz.sh 10
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# Every test in its own process, four at a time across all test binaries
# (settings and the tests kept one at a time: .config/nextest.toml). The
# crates' documentation has no runnable examples (nextest does not run
# doctests, and compiling them took minutes for none).
cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/Summary .* tests run:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/ || $i == "timed") f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
