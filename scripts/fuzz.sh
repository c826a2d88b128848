#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 10), starting from
# the committed seed corpora (captures of strongSwan and operator inputs).
#   bash scripts/fuzz.sh [SECONDS]
# FUZZ_SANITIZER=address for AddressSanitizer (slower to build; CI uses none:
# panics, assertions and overflow checks are caught either way).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-10}
# cargo-fuzz is installed, pinned, by scripts/install-deps.sh.
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz missing: run scripts/install-deps.sh" >&2; exit 1; }
# cargo-fuzz passes nightly-only flags; this machine has one stable toolchain.
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}
cargo fuzz build -O --sanitizer "$sanitizer" >/dev/null 2>&1 || cargo fuzz build -O --sanitizer "$sanitizer"
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  if ! cargo fuzz run -O --sanitizer "$sanitizer" "$target" "corpus/$target" "seeds/$target" \
      -- -max_total_time="$secs" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target FAILED (input saved under fuzz/artifacts/$target)"
    exit 1
  fi
  echo "fuzz: $target: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)s, no failure"
  rm -f "$log"
done
