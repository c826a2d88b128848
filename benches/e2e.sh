#!/usr/bin/env bash
# End-to-end throughput of renkei and the tunnels it is measured against,
# printed as one table from one run. Both tunnel ends run on this machine,
# each in its own network namespace, joined by a veth pair:
#
#   ns A  lo 203.0.113.1  veth 192.0.2.1 ───── 192.0.2.2 veth  lo 198.51.100.1  ns B
#
# For each case: one TCP stream, four TCP streams (iperf3 -P 4), and the
# rate of 64-byte UDP datagrams that arrive (iperf3 -u -l 64 -b 0), from
# 203.0.113.1 in A to 198.51.100.1 in B (for plain veth, outer to outer).
#
#   bash benches/e2e.sh            # as root; E2E_SECS=8 per measurement
#   E2E_KEEP=1 bash benches/e2e.sh # keep logs and configs in /tmp/renkei-e2e.*
#   RENKEI_BIN=/path/to/renkei bash benches/e2e.sh  # measure another build
#   E2E_ONLY=veth,rr bash benches/e2e.sh            # some cases (veth rr ss bb rs rp)
#
# Cases: plain veth; renkei <-> renkei; strongSwan <-> strongSwan
# (kernel-libipsec, userspace ESP); boringtun <-> boringtun (boringtun-cli
# with Debian's wireguard-tools); renkei hub <-> strongSwan facility. All
# IPsec cases use AES-256-GCM ESP in UDP (NAT-T encapsulation forced), IKE
# with ECP-256. The last case, renkei <-> renkei on a 1454-byte link (an
# NTT FLET'S PPPoE path), runs with the default tunnel MTU (1358), which
# fits that path. A benchmark, not a test: nothing here passes or fails on
# a number.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${E2E_SECS:-8}
ID=rke$$
NS_A=${ID}a
NS_B=${ID}b
WORK=$(mktemp -d /tmp/renkei-e2e.XXXXXX)
PSK="renkei-e2e-benchmark-psk-0123456789"
A_OUT=192.0.2.1
B_OUT=192.0.2.2
A_IN=203.0.113.1
B_IN=198.51.100.1

if [ "$(id -u)" -ne 0 ]; then
  echo "e2e: run as root (network namespaces)" >&2
  exit 1
fi

log() { echo "e2e: $*" >&2; }

# shellcheck source=benches/netns.sh
. "$ROOT/benches/netns.sh"
cleanup() { ns_remove "$NS_A" "$NS_B"; }
trap 'bench_finish "${E2E_KEEP:-}" "$WORK" "$NS_A" "$NS_B"' EXIT

# ---- tools ------------------------------------------------------------------

bash "$ROOT/scripts/install-deps.sh" >/dev/null
command -v wg >/dev/null || {
  log "installing wireguard-tools (for the boringtun case)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wireguard-tools >/dev/null
}
BORINGTUN=$(command -v boringtun-cli || echo "$HOME/.cargo/bin/boringtun-cli")
if [ ! -x "$BORINGTUN" ]; then
  log "installing boringtun-cli from crates.io (once)"
  cargo install boringtun-cli --locked --quiet
fi
if [ -n "${RENKEI_BIN:-}" ]; then
  RENKEI=$RENKEI_BIN # e.g. an older build, for a before/after comparison
else
  log "building renkei (release)"
  (cd "$ROOT" && cargo build --release -p renkei-cli --quiet)
  RENKEI=$ROOT/target/release/renkei
fi
CHARON=
for c in /usr/lib/ipsec/charon /usr/libexec/ipsec/charon; do
  [ -x "$c" ] && CHARON=$c && break
done

# ---- the two namespaces -------------------------------------------------------

net_up() {
  ns_pair "$NS_A" "$NS_B" "${ID}v" "$A_OUT/24" "$B_OUT/24"
  ip -n "$NS_A" addr add "$A_IN/32" dev lo
  ip -n "$NS_B" addr add "$B_IN/32" dev lo
}

wait_ping() { # wait until A's inner address reaches B's
  for _ in $(seq 1 60); do
    if ip netns exec "$NS_A" ping -c 1 -W 1 -I "$A_IN" "$B_IN" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  return 1
}

# ---- measurements -------------------------------------------------------------

# iperf3 from $2 (in A) to $1 (in B); prints "tcp1 tcp4 udp_kpps".
measure() {
  local server=$1 client=$2 out
  ip netns exec "$NS_B" iperf3 -s -B "$server" -D --pidfile "$WORK/iperf3.pid" >/dev/null
  sleep 0.5
  local tcp1 tcp4 udp
  out=$(ip netns exec "$NS_A" iperf3 -c "$server" -B "$client" -t "$SECS" -J 2>/dev/null || true)
  tcp1=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' <<<"$out" 2>/dev/null || echo "-")
  out=$(ip netns exec "$NS_A" iperf3 -c "$server" -B "$client" -t "$SECS" -P 4 -J 2>/dev/null || true)
  tcp4=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' <<<"$out" 2>/dev/null || echo "-")
  out=$(ip netns exec "$NS_A" iperf3 -c "$server" -B "$client" -t "$SECS" -u -l 64 -b 0 -J 2>/dev/null || true)
  udp=$(python3 -c '
import json,sys
d=json.load(sys.stdin)["end"]["sum"]
print("%.1f" % ((d["packets"]-d["lost_packets"])/d["seconds"]/1e3))' <<<"$out" 2>/dev/null || echo "-")
  kill "$(cat "$WORK/iperf3.pid" 2>/dev/null)" 2>/dev/null || true
  echo "$tcp1 $tcp4 $udp"
}

# ---- renkei -------------------------------------------------------------------

# renkei_hub NS NAME MY_ID PEER_ID MY_NET PEER_NET LISTEN [PEER_ADDR]
renkei_hub() {
  local ns=$1 name=$2 my_id=$3 peer_id=$4 my_net=$5 peer_net=$6 listen=$7 peer_addr=${8:-}
  local state=$WORK/$name
  printf '%s\n' "$PSK" >"$WORK/psk"
  "$RENKEI" --state "$state" init --hub-id "$my_id" --public-addr "$listen" >/dev/null || return 1
  local start=()
  [ -n "$peer_addr" ] && start=(--remote-addr "$peer_addr" --start)
  "$RENKEI" --state "$state" peer add peer --id "$peer_id" --psk-file "$WORK/psk" \
    --remote-ts "$peer_net" --local-ts "$my_net" "${start[@]}" \
    --ike aes256gcm16-prfsha256-ecp256 --esp aes256gcm16 >/dev/null || return 1
  ip netns exec "$ns" "$RENKEI" --state "$state" --log warn serve --listen "$listen" \
    --tun "${ID}t${name}" >"$WORK/$name.log" 2>&1 &
}

# ---- strongSwan ---------------------------------------------------------------

# swan NS NAME MY_ID PEER_ID MY_NET PEER_NET MY_ADDR PEER_ADDR
swan() {
  local ns=$1 name=$2 my_id=$3 peer_id=$4 my_net=$5 peer_net=$6 me=$7 peer=$8
  local d=$WORK/$name
  mkdir -p "$d/swanctl"
  cat >"$d/strongswan.conf" <<EOF
charon {
  load = random kdf nonce aes sha1 sha2 hmac gcm x509 pem pkcs1 pkcs8 pubkey openssl kernel-libipsec kernel-netlink socket-default vici updown
  port = 500
  port_nat_t = 4500
  plugins { vici { socket = unix://$d/charon.vici } }
  filelog { log { path = $d/charon.log
    default = 1 } }
}
swanctl { socket = unix://$d/charon.vici }
EOF
  cat >"$d/swanctl/swanctl.conf" <<EOF
connections {
  peer {
    version = 2
    local_addrs = $me
    remote_addrs = $peer
    proposals = aes256gcm16-prfsha256-ecp256
    encap = yes
    local { auth = psk
      id = $my_id }
    remote { auth = psk
      id = $peer_id }
    children { net {
      local_ts = $my_net
      remote_ts = $peer_net
      esp_proposals = aes256gcm16
      start_action = none } }
  }
}
secrets { ike-peer { id-1 = $my_id
  id-2 = $peer_id
  secret = "$PSK" } }
EOF
  STRONGSWAN_CONF=$d/strongswan.conf ip netns exec "$ns" sh -c "mount -t tmpfs tmpfs /run && exec $CHARON" \
    >"$d/charon.stderr" 2>&1 &
  for _ in $(seq 1 50); do [ -S "$d/charon.vici" ] && break; sleep 0.1; done
  swanctl_of "$name" --load-all --file "$d/swanctl/swanctl.conf" >/dev/null 2>&1
}

swanctl_of() {
  local name=$1
  shift
  STRONGSWAN_CONF=$WORK/$name/strongswan.conf SWANCTL_DIR=$WORK/$name/swanctl \
    swanctl "$@" --uri "unix://$WORK/$name/charon.vici"
}

# ---- boringtun ----------------------------------------------------------------

# bt NS NAME MY_KEY PEER_PUB MY_NET PEER_NET [PEER_ENDPOINT]
bt() {
  local ns=$1 name=$2 key=$3 peer_pub=$4 my_in=$5 peer_net=$6 endpoint=${7:-}
  local dev=${ID}w${name}
  WG_SUDO=1 ip netns exec "$ns" "$BORINGTUN" "$dev" --foreground --disable-drop-privileges \
    >"$WORK/bt-$name.log" 2>&1 &
  for _ in $(seq 1 50); do ip -n "$ns" link show "$dev" >/dev/null 2>&1 && break; sleep 0.1; done
  local ep=()
  [ -n "$endpoint" ] && ep=(endpoint "$endpoint")
  ip netns exec "$ns" wg set "$dev" private-key "$key" listen-port 51820 \
    peer "$peer_pub" allowed-ips "$peer_net" "${ep[@]}" persistent-keepalive 25
  ip -n "$ns" link set "$dev" mtu 1420 up
  ip -n "$ns" route add "$peer_net" dev "$dev" src "$my_in"
}

# ---- the run ------------------------------------------------------------------

declare -A RESULT
run_case() { # KEY LABEL SETUP-FUNCTION
  local key=$1 label=$2 setup=$3
  # E2E_ONLY=rr,bb runs only those cases (keys: rr ss bb rs rp).
  if [ -n "${E2E_ONLY:-}" ] && [[ ",$E2E_ONLY," != *",$key,"* ]]; then
    RESULT[$key]="- - -"
    return
  fi
  log "$label"
  net_up
  if $setup && wait_ping; then
    RESULT[$key]=$(measure "$B_IN" "$A_IN")
  else
    log "$label: tunnel did not come up (logs in $WORK)"
    RESULT[$key]="- - -"
  fi
  cleanup
}

case_veth() {
  if [ -n "${E2E_ONLY:-}" ] && [[ ",$E2E_ONLY," != *",veth,"* ]]; then
    RESULT[veth]="- - -"
    return
  fi
  net_up
  log "plain veth"
  RESULT[veth]=$(measure "$B_OUT" "$A_OUT")
  cleanup
}

# Each case has its own state and configuration directories (names are
# also TUN device suffixes, so they stay short).
# renkei_pair PREFIX: renkei in both namespaces, states PREFIXa and PREFIXb.
renkei_pair() {
  renkei_hub "$NS_B" "${1}b" b.example a.example "$B_IN/32" "$A_IN/32" "$B_OUT" || return 1
  renkei_hub "$NS_A" "${1}a" a.example b.example "$A_IN/32" "$B_IN/32" "$A_OUT" "$B_OUT"
}

setup_renkei_renkei() { renkei_pair rr; }

# The same over a PPPoE path: the veth carries at most 1454 bytes.
setup_renkei_renkei_pppoe() {
  ip -n "$NS_A" link set "${ID}va" mtu 1454
  ip -n "$NS_B" link set "${ID}vb" mtu 1454
  renkei_pair rp
}

setup_swan_swan() {
  swan "$NS_B" ssb b.example a.example "$B_IN/32" "$A_IN/32" "$B_OUT" "$A_OUT" || return 1
  swan "$NS_A" ssa a.example b.example "$A_IN/32" "$B_IN/32" "$A_OUT" "$B_OUT" || return 1
  swanctl_of ssa --initiate --child net --timeout 20 >/dev/null
}

setup_renkei_swan() {
  # The hub (renkei) in A, the facility (strongSwan) in B, which connects.
  renkei_hub "$NS_A" rsa hub.example facility.example "$A_IN/32" "$B_IN/32" "$A_OUT" || return 1
  sleep 0.5
  swan "$NS_B" rsb facility.example hub.example "$B_IN/32" "$A_IN/32" "$B_OUT" "$A_OUT" || return 1
  swanctl_of rsb --initiate --child net --timeout 20 >/dev/null
}

setup_bt_bt() {
  local ka kb pa pb
  ka=$WORK/wg-a.key
  kb=$WORK/wg-b.key
  wg genkey >"$ka"
  wg genkey >"$kb"
  pa=$(wg pubkey <"$ka")
  pb=$(wg pubkey <"$kb")
  bt "$NS_B" b "$kb" "$pa" "$B_IN" "$A_IN/32"
  bt "$NS_A" a "$ka" "$pb" "$A_IN" "$B_IN/32" "$B_OUT:51820"
}

case_veth
run_case rr "renkei <-> renkei" setup_renkei_renkei
run_case ss "strongSwan <-> strongSwan" setup_swan_swan
run_case bb "boringtun <-> boringtun" setup_bt_bt
run_case rs "renkei hub <-> strongSwan facility" setup_renkei_swan
run_case rp "renkei <-> renkei, PPPoE 1454 path" setup_renkei_renkei_pppoe

# ---- the table ----------------------------------------------------------------

python3 - "$SECS" "$(nproc)" "${RESULT[veth]}" "${RESULT[rr]}" "${RESULT[ss]}" "${RESULT[bb]}" "${RESULT[rs]}" "${RESULT[rp]}" <<'EOF'
import sys, datetime
secs, cores = sys.argv[1], sys.argv[2]
rows = [("plain veth", sys.argv[3]), ("renkei <-> renkei", sys.argv[4]),
        ("strongSwan <-> strongSwan (libipsec)", sys.argv[5]),
        ("boringtun <-> boringtun", sys.argv[6]),
        ("renkei hub <-> strongSwan facility", sys.argv[7]),
        ("renkei <-> renkei, PPPoE 1454 path", sys.argv[8])]
def num(x):
    try: return float(x)
    except ValueError: return None
vals = {name: [num(v) for v in r.split()] for name, r in rows}
veth = vals["plain veth"]
print(f"renkei end-to-end benchmark, {datetime.date.today()}, {cores} cores, both ends on this machine, {secs} s per measurement")
print()
print(f"| {'case':<38} | {'TCP x1 Gbit/s':>13} | {'TCP x4 Gbit/s':>13} | {'UDP 64 B kpps':>13} | {'x1 vs veth':>10} |")
print(f"|{'-'*40}|{'-'*15}|{'-'*15}|{'-'*15}|{'-'*12}|")
for name, _ in rows:
    v = vals[name]
    cells = [f"{x:.2f}" if x is not None else "-" for x in v[:2]] + [f"{v[2]:.1f}" if v[2] is not None else "-"]
    ratio = f"{100*v[0]/veth[0]:.1f} %" if v[0] and veth[0] else "-"
    print(f"| {name:<38} | {cells[0]:>13} | {cells[1]:>13} | {cells[2]:>13} | {ratio:>10} |")
print()
rr = vals["renkei <-> renkei"]
for peer in ["strongSwan <-> strongSwan (libipsec)", "boringtun <-> boringtun"]:
    p = vals[peer]
    parts = []
    for i, what in enumerate(["TCP x1", "TCP x4", "UDP 64 B"]):
        if rr[i] and p[i]:
            parts.append(f"{what} {rr[i]/p[i]:.1f}x")
    print(f"renkei <-> renkei vs {peer}: " + (", ".join(parts) if parts else "-"))
EOF
