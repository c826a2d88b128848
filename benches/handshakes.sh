#!/usr/bin/env bash
# Control-plane scale: IKE SAs (with their first Child SA) established per
# second against a renkei hub and against strongSwan as responder, with
# PSK and with ECDSA certificates, and the hub's memory per connected
# facility. One table from one run.
#
#   bash benches/handshakes.sh                 # as root; 500 facilities
#   LOAD_FACILITIES=10000 bash benches/handshakes.sh
#   LOAD_CA_KEY=ecdsa-p256 bash benches/handshakes.sh   # CA and hub key P-256
#   LOAD_ONLY_RENKEI=1 / LOAD_ONLY_SWAN=1                # one responder only
#   RENKEI_BIN=/path/to/renkei bash benches/handshakes.sh # another hub build
#
#   ns A: responder (renkei serve | strongSwan charon)  192.0.2.1
#   ns B: rk-load, facility i = f{i}.load.example       192.0.2.2
#
# rk-load (benches/src/bin/rk-load.rs) is renkei's own `ike` crate as an
# initiator with one identity and one IPv6 /128 selector per facility. Both
# sides run on this machine's cores: the generator does about as much
# cryptography per handshake as the responder, so these rates are for the
# pair, not for a responder with cores of its own. Certificates: the
# facilities' ECDSA P-256 certificates come from the hub's CA (made once,
# before the clock starts); the hub signs with its ECDSA P-384 key. A
# benchmark, not a test: nothing here passes or fails on a number.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${LOAD_FACILITIES:-500}
WINDOW=${LOAD_WINDOW:-32}
ID=rkl$$
NS_A=${ID}a
NS_B=${ID}b
WORK=$(mktemp -d /tmp/renkei-load.XXXXXX)
PSK="renkei-load-benchmark-psk-0123456789"
A=192.0.2.1
B=192.0.2.2

[ "$(id -u)" -eq 0 ] || { echo "handshakes: run as root" >&2; exit 1; }
log() { echo "handshakes: $*" >&2; }

# shellcheck source=benches/netns.sh
. "$ROOT/benches/netns.sh"
cleanup() { ns_remove "$NS_A" "$NS_B"; }
trap 'bench_finish "${LOAD_KEEP:-}" "$WORK" "$NS_A" "$NS_B"' EXIT

bash "$ROOT/scripts/install-deps.sh" >/dev/null
log "building renkei and rk-load (release)"
(cd "$ROOT" && cargo build --release -p renkei-cli -p renkei-benches --bins --quiet)
# RENKEI_BIN measures another build of the hub (an A/B comparison).
RENKEI=${RENKEI_BIN:-$ROOT/target/release/renkei}
LOAD=$ROOT/target/release/rk-load
CHARON=
for c in /usr/lib/ipsec/charon /usr/libexec/ipsec/charon; do
  [ -x "$c" ] && CHARON=$c && break
done
printf '%s\n' "$PSK" >"$WORK/psk"

net_up() {
  ns_pair "$NS_A" "$NS_B" "${ID}v" "$A/24" "$B/24"
  # The responder's address inside its side's selector, for its routes'
  # source (strongSwan will not install a Child SA without one).
  ip -n "$NS_A" addr add 2001:db8:ffff::1/128 dev lo nodad
}

# A hub state with N facilities authenticating by $1 (psk|cert).
make_hub() {
  local auth=$1 state=$WORK/hub-$1
  "$RENKEI" --state "$state" init --hub-id hub.example --public-addr "$A" \
    --ca-key "${LOAD_CA_KEY:-ecdsa-p384}" >/dev/null
  local creds=(--psk-file "$WORK/psk")
  [ "$auth" = cert ] && creds=(--cert)
  local t0=$SECONDS
  for i in $(seq 0 $((N - 1))); do
    "$RENKEI" --state "$state" peer add "f$i" --id "f$i.load.example" "${creds[@]}" \
      --remote-ts "2001:db8:1::$(printf %x "$i")/128" --local-ts 2001:db8:ffff::/64 \
      --ike aes256gcm16-prfsha256-ecp256 --esp aes256gcm16 --dpd 600 >/dev/null
  done
  log "registry: $N facilities ($auth) added in $((SECONDS - t0)) s"
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system, all threads) of a process so far, in ms.
cpu_ms() {
  awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"
}

# Runs rk-load against the responder in A; prints its JSON line. With a
# PID, also measures that process's RSS before and with all SAs up, and
# the CPU time it used to bring them up.
load() {
  local pid=${1:-} auth_args=("${@:2}")
  local before=0 cpu0=0 cpu=0
  [ -n "$pid" ] && before=$(rss_kib "$pid") && cpu0=$(cpu_ms "$pid")
  ip netns exec "$NS_B" "$LOAD" --hub "$A" --bind "$B" --count "$N" --window "$WINDOW" \
    "${auth_args[@]}" --hold 3 >"$WORK/load.out" 2>"$WORK/load.err" &
  local lp=$!
  for _ in $(seq 1 1200); do
    [ -s "$WORK/load.out" ] && break
    sleep 0.25
  done
  local after=0
  [ -n "$pid" ] && after=$(rss_kib "$pid") && cpu=$(($(cpu_ms "$pid") - cpu0))
  wait "$lp" || true
  echo "$(head -1 "$WORK/load.out") $before $after $cpu"
}

renkei_case() { # psk|cert
  local auth=$1
  net_up
  make_hub "$auth"
  ip netns exec "$NS_A" "$RENKEI" --state "$WORK/hub-$auth" --log warn serve --listen "$A" \
    --tun "${ID}t" >"$WORK/renkei-$auth.log" 2>&1 &
  for _ in $(seq 1 100); do
    "$RENKEI" --state "$WORK/hub-$auth" status --json >/dev/null 2>&1 && break
    sleep 0.1
  done
  local pid
  pid=$(pgrep -f -- "--state $WORK/hub-$auth --log warn serve" | head -1)
  local args=(--psk "$WORK/psk")
  [ "$auth" = cert ] && args=(--ca "$WORK/hub-$auth/ca")
  load "$pid" "${args[@]}"
  cleanup
}

swan_case() { # psk|cert
  local auth=$1 d=$WORK/swan-$1
  net_up
  mkdir -p "$d/swanctl/x509" "$d/swanctl/x509ca" "$d/swanctl/private"
  # strongSwan uses the renkei CA and hub certificate of the cert case.
  [ -d "$WORK/hub-cert" ] || "$RENKEI" --state "$WORK/hub-cert" init --hub-id hub.example \
    --ca-key "${LOAD_CA_KEY:-ecdsa-p384}" >/dev/null
  cp "$WORK/hub-cert/hub.pem" "$d/swanctl/x509/"
  cp "$WORK/hub-cert/hub.key" "$d/swanctl/private/"
  cp "$WORK/hub-cert/ca/ca.pem" "$d/swanctl/x509ca/"
  cat >"$d/strongswan.conf" <<EOF
charon {
  load = random kdf nonce aes sha1 sha2 hmac gcm x509 pem pkcs1 pkcs8 pubkey openssl kernel-libipsec kernel-netlink socket-default vici updown
  # Let one load generator address keep many handshakes open.
  block_threshold = 100000
  cookie_threshold = 100000
  init_limit_half_open = 0
  plugins { vici { socket = unix://$d/charon.vici } }
  filelog { log { path = $d/charon.log
    default = ${LOAD_SWAN_LOG:-0} } }
}
swanctl { socket = unix://$d/charon.vici }
EOF
  local local_auth="auth = psk
      id = hub.example" remote_auth="auth = psk
      id = %any"
  if [ "$auth" = cert ]; then
    local_auth="auth = pubkey
      certs = hub.pem
      id = hub.example"
    remote_auth="auth = pubkey
      cacerts = ca.pem
      id = %any"
  fi
  cat >"$d/swanctl/swanctl.conf" <<EOF
connections {
  load {
    version = 2
    local_addrs = $A
    proposals = aes256gcm16-prfsha256-ecp256
    encap = yes
    dpd_delay = 600s
    local {
      $local_auth
    }
    remote {
      $remote_auth
    }
    children { net {
      local_ts = 2001:db8:ffff::/64
      remote_ts = 2001:db8:1::/64
      esp_proposals = aes256gcm16 } }
  }
}
secrets { ike-any { secret = "$PSK" } }
EOF
  STRONGSWAN_CONF=$d/strongswan.conf ip netns exec "$NS_A" sh -c "mount -t tmpfs tmpfs /run && exec $CHARON" \
    >"$d/charon.stderr" 2>&1 &
  for _ in $(seq 1 50); do [ -S "$d/charon.vici" ] && break; sleep 0.1; done
  STRONGSWAN_CONF=$d/strongswan.conf SWANCTL_DIR=$d/swanctl \
    swanctl --load-all --uri "unix://$d/charon.vici" >/dev/null 2>&1
  local pid
  pid=$(ip netns pids "$NS_A" | head -1)
  local args=(--psk "$WORK/psk")
  [ "$auth" = cert ] && args=(--ca "$WORK/hub-cert/ca")
  load "$pid" "${args[@]}"
  cleanup
}

R_PSK="" R_CERT=""
if [ -z "${LOAD_ONLY_SWAN:-}" ]; then
  log "renkei, PSK"
  R_PSK=$(renkei_case psk)
  log "renkei, certificates"
  R_CERT=$(renkei_case cert)
fi
S_PSK="" S_CERT=""
if [ -z "${LOAD_ONLY_RENKEI:-}" ]; then
  log "strongSwan, PSK"
  S_PSK=$(swan_case psk)
  log "strongSwan, certificates"
  S_CERT=$(swan_case cert)
fi

python3 - "$N" "$WINDOW" "$(nproc)" "$R_PSK" "$R_CERT" "$S_PSK" "$S_CERT" <<'EOF'
import json, sys, datetime
n, window, cores = sys.argv[1], sys.argv[2], sys.argv[3]
def parse(s):
    parts = s.rsplit(" ", 3)
    try:
        return json.loads(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])
    except (ValueError, IndexError):
        return None, 0, 0, 0
rows = [("renkei hub", "PSK", sys.argv[4]), ("renkei hub", "ECDSA P-256 cert", sys.argv[5]),
        ("strongSwan (kernel-libipsec)", "PSK", sys.argv[6]), ("strongSwan (kernel-libipsec)", "ECDSA P-256 cert", sys.argv[7])]
print(f"renkei handshake benchmark, {datetime.date.today()}, {cores} cores shared by responder and generator, {n} facilities, {window} in flight")
print()
print(f"| {'responder':<28} | {'auth':<16} | {'up':>6} | {'failed':>6} | {'IKE SAs/s':>9} | {'CPU per SA':>10} | {'SAs/s/core':>10} | {'RSS before':>10} | {'RSS all up':>10} | {'per facility':>12} |")
print(f"|{'-'*30}|{'-'*18}|{'-'*8}|{'-'*8}|{'-'*11}|{'-'*12}|{'-'*12}|{'-'*12}|{'-'*12}|{'-'*14}|")
for who, auth, raw in rows:
    d, before, after, cpu = parse(raw)
    if d is None:
        print(f"| {who:<28} | {auth:<16} | {'-':>6} | {'-':>6} | {'-':>9} | {'-':>10} | {'-':>10} | {'-':>10} | {'-':>10} | {'-':>12} |")
        continue
    up = max(d['up'], 1)
    per = f"{(after - before) / up:.1f} KiB" if after else "-"
    ms = cpu / up
    cpu_col = f"{ms:.2f} ms" if cpu else "-"
    core_col = f"{1000 / ms:.0f}" if cpu else "-"
    print(f"| {who:<28} | {auth:<16} | {d['up']:>6} | {d['failed'] + d['timed_out']:>6} | {d['per_second']:>9.1f} | {cpu_col:>10} | {core_col:>10} | {before:>7} KiB | {after:>7} KiB | {per:>12} |")
print()
print("CPU per SA: the responder's own CPU time (user + system, all threads) from the")
print("first handshake until all were up, divided by the SAs; SAs/s/core = 1000 ms / that.")
EOF
