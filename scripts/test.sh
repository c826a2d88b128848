#!/usr/bin/env bash
# The whole test suite: formatting, lints, time-boxed fuzzing, unit and
# protocol tests, and the black-box interop tests against strongSwan in
# network namespaces (root).
# Ends with one line totalling every test binary: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
# Every fuzz target, time-boxed (longer runs: bash scripts/fuzz.sh 3600).
bash scripts/fuzz.sh 10
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# Interop tests spend most of their time waiting on timers; four at a time
# keeps the run short on two cores.
cargo test --workspace --no-fail-fast -- --test-threads 4 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
