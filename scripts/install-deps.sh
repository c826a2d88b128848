#!/usr/bin/env bash
# Installs what renkei's build, demo and tests need on Debian 12 (as root):
# strongSwan with kernel-libipsec (the interop peer), iproute2, ping, iperf3,
# openssl (an independent reader of the PKCS#12 files and CRLs renkei makes),
# tcpdump (the replay test captures ESP to send it again; the interop suite
# captures the hub's outer traffic), ethtool (turns UDP segmentation offload
# off on the captured link), Wireshark's tshark (an independent dissector of
# everything the hub sends), and Libreswan (a second IKEv2 implementation;
# see below).
# The Rust toolchain comes with the machine.
set -euo pipefail

packages=(
  strongswan-charon strongswan-swanctl libcharon-extra-plugins
  libstrongswan-extra-plugins libstrongswan-standard-plugins
  iproute2 iputils-ping iperf3 procps ca-certificates nftables conntrack
  openssl tcpdump tshark ethtool
  # Libreswan's runtime: NSS and its tools, and the libraries pluto links.
  libnss3 libnss3-tools libnspr4 libcurl3-nss libevent-core-2.1-7
  libevent-pthreads-2.1-7 libldns3 libunbound8 libcap-ng0 libaudit1
  dns-root-data gcc libc6-dev
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
  # tshark's package asks whether non-root users may capture: no.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  # Wait for another apt (unattended-upgrades on a fresh machine) rather
  # than fail on its lock.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Libreswan's package conflicts with strongSwan's, so it is not installed:
# its files are extracted where the tests run pluto from
# (interop-tests/src/libreswan.rs).
libreswan_root=/opt/renkei-test/libreswan
if [ ! -x "$libreswan_root/usr/libexec/ipsec/pluto" ]; then
  echo "install-deps: extracting libreswan into $libreswan_root"
  tmp=$(mktemp -d)
  # apt-get download writes into the current directory, as _apt if it can.
  chmod 0755 "$tmp"
  (cd "$tmp" && apt-get -o DPkg::Lock::Timeout=600 download -qq libreswan 2>/dev/null ||
    { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get download -qq libreswan; })
  mkdir -p "$libreswan_root"
  dpkg -x "$tmp"/libreswan_*.deb "$libreswan_root"
  rm -rf "$tmp"
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
