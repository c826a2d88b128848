#!/usr/bin/env bash
# Installs what renkei's build, demo and tests need on Debian 12 (as root):
# a C toolchain (build-essential: aws-lc and SQLite are built from source),
# strongSwan with kernel-libipsec (the interop peer), iproute2, ping, iperf3,
# openssl (an independent reader of the PKCS#12 files and CRLs renkei makes),
# tcpdump (the replay test captures ESP to send it again; the interop suite
# captures the hub's outer traffic), ethtool (turns UDP segmentation offload
# off on the captured link), Wireshark's tshark (an independent dissector of
# everything the hub sends), Libreswan (a second IKEv2 implementation; see
# below) and promtool (Debian's prometheus package: the alert rules in dist/
# are checked with it), and PostgreSQL 15 (the registry's second backend:
# interop-tests/src/postgres.rs runs its own throw-away clusters with
# Debian's initdb and pg_ctl as the postgres user; the system cluster the
# package creates is stopped and disabled, the tests never use it); and Debian's Chromium with its
# ChromeDriver (the status page is tested in a real headless browser).
# Rust: Debian's cargo (1.63) is too old; when cargo is missing or older
# than the workspace's rust-version, rustup installs the stable toolchain.
# cargo-fuzz is installed at a pinned version (scripts/fuzz.sh uses it).
# cargo-deb is installed at a pinned version (the Debian package: README
# "Installing the package"; interop-tests/tests/package.rs builds it).
# Idempotent: a second run installs nothing and says so.
set -euo pipefail

RUST_MIN=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")
CARGO_FUZZ_VERSION=0.13.2
CARGO_DEB_VERSION=3.8.0
CARGO_NEXTEST_VERSION=0.9.143

say() { echo "install-deps: $*"; }

packages=(
  strongswan-charon strongswan-swanctl libcharon-extra-plugins
  libstrongswan-extra-plugins libstrongswan-standard-plugins
  iproute2 iputils-ping iperf3 procps ca-certificates nftables conntrack
  openssl tcpdump tshark ethtool build-essential curl prometheus
  # Two hubs (interop-tests/tests/two_hubs.rs): VRRP between them.
  keepalived
  # cargo-deb's $auto dependencies (dpkg-shlibdeps).
  dpkg-dev
  # Libreswan's runtime: NSS and its tools, and the libraries pluto links.
  libnss3 libnss3-tools libnspr4 libcurl3-nss libevent-core-2.1-7
  libevent-pthreads-2.1-7 libldns3 libunbound8 libcap-ng0 libaudit1
  dns-root-data gcc libc6-dev
  # Time zones: operator output is in local time (tests/locale.rs: TZ=Asia/Tokyo).
  tzdata
  # The registry in PostgreSQL (issue #17): server binaries and psql.
  postgresql-15 postgresql-client-15
  # The status page's browser test (interop-tests/tests/status_page.rs).
  chromium chromium-driver fonts-noto-cjk
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
  say "installing ${missing[*]} (waits up to 10 minutes for another apt, e.g. unattended-upgrades)"
  export DEBIAN_FRONTEND=noninteractive
  # tshark's package asks whether non-root users may capture: no.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  # Wait for another apt (unattended-upgrades on a fresh machine) rather
  # than fail on its lock.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  say "Debian packages installed"
  # Only promtool is wanted: a Prometheus server the package enabled
  # here is stopped and disabled (one that was installed before is left).
  if printf '%s\n' "${missing[@]}" | grep -qx prometheus; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  # Likewise only PostgreSQL's binaries are wanted: the cluster the
  # package made and started is stopped and not started at boot.
  if printf '%s\n' "${missing[@]}" | grep -qx postgresql-15; then
    systemctl disable --now postgresql >/dev/null 2>&1 || true
    pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
  fi
else
  say "Debian packages already installed"
fi

# Libreswan's package conflicts with strongSwan's, so it is not installed:
# its files are extracted where the tests run pluto from
# (interop-tests/src/libreswan.rs).
libreswan_root=/opt/renkei-test/libreswan
if [ ! -x "$libreswan_root/usr/libexec/ipsec/pluto" ]; then
  say "extracting libreswan into $libreswan_root"
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

# Rust from rustup when cargo is missing or too old (Debian's is 1.63).
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo_version() { cargo --version 2>/dev/null | awk '{print $2}'; }
have=$(cargo_version || true)
if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$RUST_MIN" "$have" | sort -V | head -1)" != "$RUST_MIN" ]; then
  say "cargo ${have:-missing}, need >= $RUST_MIN: installing Rust stable with rustup (a few minutes)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable --component rustfmt,clippy >/dev/null
  . "$HOME/.cargo/env"
  say "$(cargo --version) installed; open a new shell or run: . \$HOME/.cargo/env"
else
  say "cargo $have (>= $RUST_MIN)"
fi

# cargo-fuzz, pinned: the test suite never fetches an unpinned tool.
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  say "building cargo-fuzz $CARGO_FUZZ_VERSION (cargo install --locked; a few minutes)"
  cargo install --locked --quiet "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
# cargo-deb, pinned: makes the Debian package (cargo deb -p renkei-cli).
if [ "$(cargo deb --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1)" != "$CARGO_DEB_VERSION" ]; then
  say "building cargo-deb $CARGO_DEB_VERSION (cargo install --locked; a few minutes)"
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi
# cargo-nextest runs the tests (scripts/test.sh); machines of this kind come
# with it, others get the pinned version.
if ! cargo nextest --version >/dev/null 2>&1; then
  say "building cargo-nextest $CARGO_NEXTEST_VERSION (cargo install --locked; a few minutes)"
  cargo install --locked --quiet cargo-nextest --version "$CARGO_NEXTEST_VERSION"
fi
say "ready"
