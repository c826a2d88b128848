#!/usr/bin/env bash
# Failover benchmark (issue #17 item 7): how long a hub that was killed
# (SIGKILL) and started again takes to bring 1, 100 and 1,000 facilities
# back by initiating to them, measured from the kill. One table.
#
#   bash benches/restore.sh                        # as root
#   RESTORE_COUNTS="1 100 1000 5000" bash benches/restore.sh
#   RENKEI_BIN=/path/to/renkei LOAD_BIN=/path/to/rk-load bash benches/restore.sh
#   RESTORE_SERVE_ARGS="--reinitiate-rate 500" bash benches/restore.sh
#
#   ns A: the hub (renkei serve)                       192.0.2.1
#   ns B: rk-load --restore: facility i = f{i}.load.example at 192.0.2.2:(20000+i)
#
# Each facility has a UDP port of its own (as behind a NAT), initiates over
# NAT-T and keeps its IKE SA; it never reconnects by itself (its liveness
# checks are 10 minutes apart), so every facility that comes back was
# brought back by the hub's initiation. "first back" and "all back" are
# the times from the kill to the first and the last new Child SA at the
# facilities. The hub start includes opening the registry, creating the
# TUN device and binding its sockets.
#
# Two hubs later: the hub is started and killed by shell snippets,
#   RESTORE_HUB_START  default: start renkei serve in ns A in the background
#   RESTORE_HUB_KILL   default: kill -9 the hub's PID
# evaluated with STATE, NS_A, A, TUN, LOG and RENKEI set (and HUB_PID for
# the kill). For a pair, RESTORE_HUB_KILL kills the active node and
# RESTORE_HUB_START waits for (or starts) the standby. A benchmark, not a
# test: it reports the figures and never fails on them (targets: 1
# facility back within 5 s, 1,000 within 30 s).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COUNTS=${RESTORE_COUNTS:-1 100 1000}
WINDOW=${LOAD_WINDOW:-32}
WAIT=${RESTORE_WAIT:-120}
ID=rkr$$
NS_A=${ID}a
NS_B=${ID}b
WORK=$(mktemp -d /tmp/renkei-restore.XXXXXX)
PSK="renkei-load-benchmark-psk-0123456789"
A=192.0.2.1
B=192.0.2.2
TUN=${ID}t

[ "$(id -u)" -eq 0 ] || { echo "restore: run as root" >&2; exit 1; }
log() { echo "restore: $*" >&2; }

# shellcheck source=benches/netns.sh
. "$ROOT/benches/netns.sh"
trap 'bench_finish "${LOAD_KEEP:-}" "$WORK" "$NS_A" "$NS_B"' EXIT

if [ -z "${RENKEI_BIN:-}" ] || [ -z "${LOAD_BIN:-}" ]; then
  log "building renkei and rk-load (release)"
  (cd "$ROOT" && cargo build --release -p renkei-cli -p renkei-benches --bins --quiet)
fi
RENKEI=${RENKEI_BIN:-$ROOT/target/release/renkei}
LOAD=${LOAD_BIN:-$ROOT/target/release/rk-load}
printf '%s\n' "$PSK" >"$WORK/psk"
# One socket per facility in rk-load.
ulimit -n 70000 2>/dev/null || ulimit -n 8192

hub_start() {
  if [ -n "${RESTORE_HUB_START:-}" ]; then
    STATE=$STATE NS_A=$NS_A A=$A TUN=$TUN LOG=$LOG RENKEI=$RENKEI eval "$RESTORE_HUB_START"
  else
    # shellcheck disable=SC2086
    ip netns exec "$NS_A" "$RENKEI" --state "$STATE" --log info serve --listen "$A" \
      --tun "$TUN" ${RESTORE_SERVE_ARGS:-} >>"$LOG" 2>&1 &
    HUB_PID=$!
  fi
}

hub_kill() {
  if [ -n "${RESTORE_HUB_KILL:-}" ]; then
    STATE=$STATE NS_A=$NS_A A=$A TUN=$TUN LOG=$LOG RENKEI=$RENKEI HUB_PID=${HUB_PID:-} \
      eval "$RESTORE_HUB_KILL"
  else
    kill -9 "$HUB_PID"
    wait "$HUB_PID" 2>/dev/null || true
  fi
}

wait_control() {
  for _ in $(seq 1 200); do
    "$RENKEI" --state "$STATE" status --json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  log "the hub did not start; see $LOG"
  return 1
}

# restore_case N: prints "N first_back all_back back reinitiate_seconds".
restore_case() {
  local n=$1
  STATE=$WORK/hub-$n
  LOG=$WORK/hub-$n.log
  ns_pair "$NS_A" "$NS_B" "${ID}v" "$A/24" "$B/24"
  "$RENKEI" --state "$STATE" init --hub-id hub.example --public-addr "$A" >/dev/null
  local t0=$SECONDS
  for i in $(seq 0 $((n - 1))); do
    "$RENKEI" --state "$STATE" peer add "f$i" --id "f$i.load.example" --psk-file "$WORK/psk" \
      --remote-ts "2001:db8:1::$(printf %x "$i")/128" --local-ts 2001:db8:ffff::/64 \
      --ike aes256gcm16-prfsha256-ecp256 --esp aes256gcm16 --dpd 600 >/dev/null
  done
  log "$n facilities added in $((SECONDS - t0)) s"
  hub_start
  wait_control
  ip netns exec "$NS_B" "$LOAD" --hub "$A" --bind "$B" --count "$n" --window "$WINDOW" \
    --psk "$WORK/psk" --restore "$WAIT" >"$WORK/load-$n.out" 2>"$WORK/load-$n.err" &
  local lp=$!
  for _ in $(seq 1 2400); do
    [ -s "$WORK/load-$n.out" ] && break
    kill -0 "$lp" 2>/dev/null || { log "rk-load failed: $(cat "$WORK/load-$n.err")"; return 1; }
    sleep 0.25
  done
  log "$n facilities up; waiting for the hub to record them"
  # The hub records last known addresses once a second, off its loop.
  for _ in $(seq 1 120); do
    local rows=0
    if command -v sqlite3 >/dev/null; then
      rows=$(sqlite3 "file:$STATE/registry.db?mode=ro" \
        "SELECT count(*) FROM last_known WHERE up = 1" 2>/dev/null || echo 0)
    else
      sleep 3
      rows=$n
    fi
    [ "$rows" -ge "$n" ] && break
    sleep 0.5
  done
  local killed
  killed=$(date +%s.%N)
  hub_kill
  hub_start
  wait_control || true
  wait "$lp" || true
  local result
  result=$(tail -1 "$WORK/load-$n.out")
  # The facilities answered; the hub records when it has them all.
  for _ in $(seq 1 600); do
    grep -q '"event":"hub.reinitiate_done"' "$STATE/audit.log" 2>/dev/null && break
    sleep 0.1
  done
  hub_kill || true
  ns_remove "$NS_A" "$NS_B"
  python3 - "$n" "$killed" "$result" "$STATE/audit.log" <<'EOF'
import json, sys
n, killed, raw, audit = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
re = "-"
try:
    for line in open(audit):
        r = json.loads(line)
        if r.get("event") == "hub.reinitiate_done":
            d = r["details"]
            re = f'{d["seconds"]:.2f}_s,_{d["up"]}_up,_{d["failed"]}_failed'
except (OSError, ValueError, KeyError):
    pass
try:
    d = json.loads(raw)
except ValueError:
    print(n, "-", "-", "0", re)
    sys.exit()
f = lambda t: f"{t - killed:.2f}" if t is not None else "-"
print(n, f(d["first_back_unix"]), f(d["all_back_unix"]), d["back"], re)
EOF
}

ROWS=()
for n in $COUNTS; do
  log "$n facilities"
  ROWS+=("$(restore_case "$n")")
done

echo "renkei restore benchmark, $(date -u +%F), $(nproc) cores shared by the hub and rk-load"
echo "hub SIGKILLed and started again; Child SA times are seconds from the kill, at the facilities;"
echo "the hub's own figure runs from its start to its last IKE SA up"
echo
printf '| %10s | %16s | %14s | %11s | %34s |\n' facilities "first Child SA" "all Child SAs" "came back" "hub: initiating took, up, failed"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..18})" \
  "$(printf -- '-%.0s' {1..16})" "$(printf -- '-%.0s' {1..13})" "$(printf -- '-%.0s' {1..36})"
for r in "${ROWS[@]}"; do
  read -r n first all back re <<<"$r"
  printf '| %10s | %16s | %14s | %11s | %34s |\n' "$n" "$first" "$all" "$back/$n" "${re//_/ }"
done
