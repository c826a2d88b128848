#!/usr/bin/env bash
# How long adding facilities one by one to a running hub takes: a hub in a
# network namespace, then N `renkei peer add` (each of which tells the
# running hub to apply it), timed per hundred. Prints one table.
#
#   bash benches/add_facilities.sh                     # as root; N=1000
#   ADD_FACILITIES=300 bash benches/add_facilities.sh
#   RENKEI_BIN=/path/to/renkei bash benches/add_facilities.sh   # another build
#
# A benchmark, not a test: nothing here passes or fails on a number.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${ADD_FACILITIES:-1000}
ID=rka$$
NS=${ID}h
WORK=$(mktemp -d /tmp/renkei-add.XXXXXX)

if [ "$(id -u)" -ne 0 ]; then
  echo "add_facilities: run as root (network namespaces)" >&2
  exit 1
fi
log() { echo "add_facilities: $*" >&2; }
# shellcheck source=benches/netns.sh
. "$ROOT/benches/netns.sh"
trap 'bench_finish "${ADD_KEEP:-}" "$WORK" "$NS"' EXIT

bash "$ROOT/scripts/install-deps.sh" >/dev/null
if [ -n "${RENKEI_BIN:-}" ]; then
  RENKEI=$RENKEI_BIN
else
  log "building renkei (release)"
  (cd "$ROOT" && cargo build --release -p renkei-cli --quiet)
  RENKEI=$ROOT/target/release/renkei
fi

ns_remove "$NS"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add 192.0.2.1/32 dev lo
state=$WORK/hub
"$RENKEI" --state "$state" init --hub-id hub.example --public-addr 192.0.2.1 >/dev/null
printf '%s\n' "renkei-add-benchmark-psk-0123456789" >"$WORK/psk"
ip netns exec "$NS" "$RENKEI" --state "$state" --log warn serve --listen 192.0.2.1 \
  --tun "${ID}t" >"$WORK/hub.log" 2>&1 &
for _ in $(seq 1 50); do
  "$RENKEI" --state "$state" status --json >/dev/null 2>&1 && break
  sleep 0.2
done

log "adding $N facilities to the running hub"
rows=()
start=$(date +%s.%N)
last=$start
for i in $(seq 0 $((N - 1))); do
  # One IPv6 /64 per facility from 2001:db8:1000::/36.
  "$RENKEI" --state "$state" peer add "f$i" --id "f$i.example" --psk-file "$WORK/psk" \
    --remote-ts "$(printf '2001:db8:%x::/64' $((0x1000 + i)))" >/dev/null
  if [ $(((i + 1) % 100)) -eq 0 ]; then
    now=$(date +%s.%N)
    rows+=("$((i + 1)) $(awk "BEGIN { print $now - $last }") $(awk "BEGIN { print $now - $start }")")
    last=$now
  fi
done
running=$("$RENKEI" --state "$state" status --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["facilities"]))')

echo "renkei: adding $N facilities one by one to a running hub ($(nproc) cores), $(date -u +%F)"
echo
printf '| %-10s | %-22s | %-16s |\n' "facilities" "last 100 took (s)" "total (s)"
printf '|%s|%s|%s|\n' "------------" "------------------------" "------------------"
for r in "${rows[@]}"; do
  # shellcheck disable=SC2086
  set -- $r
  printf '| %10s | %22.2f | %16.2f |\n' "$1" "$2" "$3"
done
echo
echo "the running hub reports $running facilities"
