#!/usr/bin/env bash
# `renkei apply` on a running hub with N facilities up (issue #18 item 1):
# how long a dry run and an apply of the whole file take, and proof that
# no unchanged tunnel is touched (every Child SA's inbound SPI before and
# after). One table.
#
#   bash benches/apply.sh                          # as root; N=1000
#   APPLY_FACILITIES=300 bash benches/apply.sh
#   RENKEI_BIN=/path/to/renkei LOAD_BIN=/path/to/rk-load bash benches/apply.sh
#
#   ns A: the hub (renkei serve)          192.0.2.1
#   ns B: rk-load --hold: facility i = f{i}.load.example
#
# The file declares every facility (display name in Japanese); the hub
# takes it with one `apply` while it runs; rk-load brings every facility
# up; then the file changes the display name and notes of 10 facilities
# and is applied again (first --dry-run, then for real) with all N up.
# A benchmark, not a test: nothing here fails on a number.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${APPLY_FACILITIES:-1000}
CHANGED=10
ID=rkp$$
NS_A=${ID}a
NS_B=${ID}b
WORK=$(mktemp -d /tmp/renkei-apply.XXXXXX)
PSK="renkei-load-benchmark-psk-0123456789"
A=192.0.2.1
B=192.0.2.2
TUN=${ID}t

[ "$(id -u)" -eq 0 ] || { echo "apply: run as root" >&2; exit 1; }
log() { echo "apply: $*" >&2; }
# shellcheck source=benches/netns.sh
. "$ROOT/benches/netns.sh"
trap 'kill "${LOAD_PID:-}" "${HUB_PID:-}" 2>/dev/null || true; bench_finish "${APPLY_KEEP:-}" "$WORK" "$NS_A" "$NS_B"' EXIT

if [ -z "${RENKEI_BIN:-}" ] || [ -z "${LOAD_BIN:-}" ]; then
  log "building renkei and rk-load (release)"
  (cd "$ROOT" && cargo build --release -p renkei-cli -p renkei-benches --bins --quiet)
fi
RENKEI=${RENKEI_BIN:-$ROOT/target/release/renkei}
LOAD=${LOAD_BIN:-$ROOT/target/release/rk-load}
printf '%s\n' "$PSK" >"$WORK/psk"
ulimit -n 70000 2>/dev/null || ulimit -n 8192
STATE=$WORK/hub
export LC_ALL=C

# network.toml: N facilities; $1 = how many get the changed label.
write_file() {
  python3 - "$N" "$1" "$WORK/network.toml" <<'PY'
import sys
n, changed, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
out = ['version = 1', '', '[hub]', 'id = "hub.example"', 'public_addrs = ["192.0.2.1"]']
for i in range(n):
    label = f"施設 {i}" + ("（改称）" if i < changed else "")
    out += ['', '[[facility]]', f'name = "f{i}"', f'display_name = "{label}"',
            f'id = "f{i}.load.example"', 'auth = "psk"',
            f'remote_ts = ["2001:db8:1::{i:x}/128"]', 'local_ts = ["2001:db8:ffff::/64"]',
            'ike = "aes256gcm16-prfsha256-ecp256"', 'esp = "aes256gcm16"', 'dpd = 600']
    if i < changed:
        out.append('notes = "表示名を変更"')
open(path, "w").write("\n".join(out) + "\n")
PY
}
spis() {
  "$RENKEI" --state "$STATE" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
for f in s["facilities"]:
    print(f["name"], ",".join(sorted(str(c["spi_in"]) for c in f["child_sas"])))'
}
timed() { local t0 t1; t0=$(date +%s.%N); "$@" >"$WORK/last.out" 2>&1 || { cat "$WORK/last.out" >&2; return 1; }; t1=$(date +%s.%N); awk "BEGIN { printf \"%.2f\", $t1 - $t0 }"; }

ns_pair "$NS_A" "$NS_B" "${ID}v" "$A/24" "$B/24"
"$RENKEI" --state "$STATE" init --hub-id hub.example --public-addr "$A" >/dev/null
python3 - "$N" "$PSK" "$WORK/secrets.toml" <<'PY'
import sys
n, psk, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
open(path, "w").write("[psk]\n" + "".join(f'f{i} = "{psk}"\n' for i in range(n)))
PY
chmod 600 "$WORK/secrets.toml"
ip netns exec "$NS_A" "$RENKEI" --state "$STATE" --log warn serve --listen "$A" --tun "$TUN" \
  >"$WORK/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 1 200); do
  "$RENKEI" --state "$STATE" status --json >/dev/null 2>&1 && break
  sleep 0.05
done

write_file 0
t_new=$(timed "$RENKEI" --state "$STATE" apply "$WORK/network.toml" --secrets "$WORK/secrets.toml")
log "$N facilities applied in $t_new s; bringing them up"
ip netns exec "$NS_B" "$LOAD" --hub "$A" --bind "$B" --count "$N" --window 32 \
  --psk "$WORK/psk" --hold 600 >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD_PID=$!
for _ in $(seq 1 1200); do
  up=$("$RENKEI" --state "$STATE" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["hub"]["child_sas"])')
  [ "$up" -ge "$N" ] && break
  kill -0 "$LOAD_PID" 2>/dev/null || { log "rk-load failed: $(cat "$WORK/load.err")"; exit 1; }
  sleep 0.25
done
log "$up Child SAs up"
spis >"$WORK/before"

t_same=$(timed "$RENKEI" --state "$STATE" apply "$WORK/network.toml" --secrets "$WORK/secrets.toml" --dry-run)
write_file "$CHANGED"
t_dry=$(timed "$RENKEI" --state "$STATE" apply "$WORK/network.toml" --secrets "$WORK/secrets.toml" --dry-run)
planned=$(grep -c '^~' "$WORK/last.out" || true)
t_apply=$(timed "$RENKEI" --state "$STATE" apply "$WORK/network.toml" --secrets "$WORK/secrets.toml")
sleep 2
spis >"$WORK/after"
touched=$(diff "$WORK/before" "$WORK/after" | grep -c '^>' || true)
up_after=$("$RENKEI" --state "$STATE" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["hub"]["child_sas"])')

echo "renkei apply benchmark, $(date -u +%F), $(nproc) cores shared by the hub and rk-load"
echo
printf '| %-58s | %9s |\n' "step" "seconds"
printf '|%s|%s|\n' "$(printf -- '-%.0s' {1..60})" "$(printf -- '-%.0s' {1..11})"
printf '| %-58s | %9s |\n' "apply of $N new facilities to the running hub" "$t_new"
printf '| %-58s | %9s |\n' "dry run, nothing changed, $N up" "$t_same"
printf '| %-58s | %9s |\n' "dry run, $CHANGED display names changed ($planned shown), $N up" "$t_dry"
printf '| %-58s | %9s |\n' "apply, $CHANGED display names changed, $N up" "$t_apply"
echo
echo "Child SAs up before: $up, after: $up_after; facilities whose inbound SPIs changed: $touched"
