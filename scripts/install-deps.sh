#!/usr/bin/env bash
# Installs what renkei's build, demo and tests need on Debian 12 (as root):
# strongSwan with kernel-libipsec (the interop peer), iproute2, ping, iperf3,
# openssl (an independent reader of the PKCS#12 files and CRLs renkei makes)
# and tcpdump (the replay test captures ESP to send it again).
# The Rust toolchain comes with the machine.
set -euo pipefail

packages=(
  strongswan-charon strongswan-swanctl libcharon-extra-plugins
  libstrongswan-extra-plugins libstrongswan-standard-plugins
  iproute2 iputils-ping iperf3 procps ca-certificates nftables conntrack
  openssl tcpdump
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (network namespaces and apt need it)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt (unattended-upgrades on a fresh machine) rather
  # than fail on its lock.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's package may start a system-wide charon; the tests run their own.
if pgrep -x charon >/dev/null 2>&1 && [ -z "${RENKEI_KEEP_SYSTEM_CHARON:-}" ]; then
  systemctl stop strongswan-starter strongswan 2>/dev/null || true
fi

if [ ! -c /dev/net/tun ]; then
  mkdir -p /dev/net
  mknod /dev/net/tun c 10 200
  chmod 0666 /dev/net/tun
fi

command -v cargo >/dev/null || { echo "install-deps: cargo (Rust) is required" >&2; exit 1; }
echo "install-deps: ready"
