//! A lab for black-box tests: a renkei hub and strongSwan facilities, each
//! in its own network namespace.
//!
//! ```text
//! Direct / Ipv6:
//!   ns rkh-<id>  renkei (TUN rkt<id>)          ns rks-<id>  charon (kernel-libipsec)
//!   lo 203.0.113.1  veth 192.0.2.1 ────────── 192.0.2.2 veth   lo 198.51.100.1
//!                   (Ipv6: 2001:db8::1 ─ 2001:db8::2, inner 2001:db8:1::1 / 2001:db8:2::1)
//! Nat:
//!   hub 192.0.2.1 ── 192.0.2.100 ns rkn-<id> (masquerade) ─┬─ 198.51.100.194 site 0 (lo 198.51.100.1)
//!                                                          └─ 198.51.100.198 site 1 (lo 198.51.100.65)
//! ```
//!
//! Every name carries a per-lab id, so labs run side by side; dropping the
//! lab (also when a test panics) stops the processes and deletes the
//! namespaces. Requires root, iproute2, iputils-ping, nftables, conntrack and
//! strongSwan (`scripts/install-deps.sh` installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod capture;
pub mod ha;
pub mod libreswan;
pub mod postgres;
pub mod profiles;

use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const HUB_OUTER: &str = "192.0.2.1";
pub const SITE_OUTER: &str = "192.0.2.2";
pub const HUB_OUTER6: &str = "2001:db8::1";
pub const SITE_OUTER6: &str = "2001:db8::2";
pub const NAT_PUBLIC: &str = "192.0.2.100";
pub const HUB_INNER: &str = "203.0.113.1";
pub const HUB_NET: &str = "203.0.113.0/25";
pub const HUB_INNER6: &str = "2001:db8:1::1";
pub const HUB_NET6: &str = "2001:db8:1::/64";
pub const SITE_INNER: &str = "198.51.100.1";
pub const SITE_NET: &str = "198.51.100.0/26";
pub const PSK: &str = "renkei-interop-psk-0123456789";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SHOW_COMMANDS: AtomicBool = AtomicBool::new(false);

/// From now on, print each operator command a lab runs (`renkei …` on the
/// hub, `swanctl …` at a facility) before running it, as `WHERE# COMMAND`:
/// the demo (`scripts/demo.sh`) shows what it does.
pub fn show_commands() {
    SHOW_COMMANDS.store(true, Ordering::Relaxed);
}

fn show<S: AsRef<OsStr>>(place: &str, program: &Path, args: impl IntoIterator<Item = S>) {
    if !SHOW_COMMANDS.load(Ordering::Relaxed) {
        return;
    }
    let mut line = format!("{place}# {}", program.display());
    for a in args {
        line.push(' ');
        line.push_str(&a.as_ref().to_string_lossy());
    }
    println!("{line}");
}

/// Runs a command, returning its output; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed.
pub fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    must(Command::new("ip").args(args))
}

/// A binary built from this workspace (`RENKEI_BIN` overrides renkei's).
fn workspace_bin(name: &str) -> PathBuf {
    if name == "renkei" {
        if let Ok(p) = std::env::var("RENKEI_BIN") {
            return PathBuf::from(p);
        }
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found under {}: run `cargo build --workspace --bins` first (scripts/test.sh does)", target.display());
}

/// The renkei binary built from this workspace.
/// A `renkei` command in the C locale: tests match its English messages
/// (renkei speaks Japanese under a `ja` locale; `tests/locale.rs` runs
/// both).
pub fn renkei_command() -> Command {
    let mut c = Command::new(renkei_bin());
    c.env("LC_ALL", "C");
    c
}

pub fn renkei_bin() -> PathBuf {
    workspace_bin("renkei")
}

/// The transfer helper built with these tests.
pub fn xfer_bin() -> PathBuf {
    workspace_bin("rk-xfer")
}

/// Which side the strongSwan facility plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// strongSwan initiates; renkei waits.
    SwanInitiates,
    /// renkei initiates (`--remote-addr … --start`); strongSwan responds.
    RenkeiInitiates,
}

/// How the facilities reach the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One facility on a veth pair with the hub, over IPv4.
    Direct,
    /// One facility on a veth pair over IPv6, carrying IPv4 and IPv6 inside.
    Ipv6,
    /// Facilities behind one masquerading NAT router.
    Nat,
    /// One facility behind a router on a smaller link, as a clinic on
    /// PPPoE (1454) or a 1280-byte path is, with a server network behind
    /// the hub (the operating entity's servers):
    ///
    /// ```text
    /// ns rkv-<id> server 203.0.113.66 ── 203.0.113.65 hub 192.0.2.1 ── 192.0.2.100 ns rkr-<id> router
    ///   (masquerade) 198.51.100.193 ══ link of `mtu` bytes ══ 198.51.100.194 facility (lo 198.51.100.1)
    /// ```
    ///
    /// With `v6` the outer path is IPv6 (hub 2001:db8::1, router
    /// 2001:db8::100 / 2001:db8:ff::1, facility 2001:db8:ff::2, no NAT).
    /// Without `icmp` the router sends no ICMP errors and the server takes
    /// none (an ICMP black hole): only the hub's MSS clamping can size TCP.
    Path { mtu: u32, icmp: bool, v6: bool },
}

/// The server behind the hub in the [`Topology::Path`] lab.
pub const SERVER: &str = "203.0.113.66";

/// What is wrong with a facility's certificate, for refusal tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFault {
    /// Nothing: issued by `renkei cert issue`.
    None,
    /// Issued, then revoked with `renkei cert revoke` before the hub starts.
    Revoked,
    /// Issued by another CA (another hub's `renkei init`, same names).
    OtherCa,
    /// Issued by the hub's CA but expired (made with the pki crate).
    Expired,
    /// Issued by the hub's CA for another identity (osaka.example).
    WrongIdentity,
}

/// How a facility is configured.
#[derive(Debug, Clone)]
pub struct Facility {
    /// Authenticate with a certificate of this key type (`renkei cert
    /// issue --key`) instead of the PSK.
    pub cert: Option<String>,
    /// What is wrong with that certificate.
    pub cert_fault: CertFault,
    /// strongSwan IKE proposal.
    pub ike: String,
    /// strongSwan ESP proposal.
    pub esp: String,
    /// The PSK strongSwan uses (renkei always has [`PSK`]).
    pub psk: String,
    pub role: Role,
    /// Extra settings of strongSwan's connection (e.g. `rekey_time = 45s`).
    pub swan_conn: Vec<String>,
    /// Extra settings of strongSwan's child (e.g. `rekey_time = 20s`).
    pub swan_child: Vec<String>,
    /// Extra arguments of the hub's `peer add` (e.g. `--child-lifetime 20`).
    pub hub_peer_args: Vec<String>,
    /// Extra arguments of `renkei serve`.
    pub serve_args: Vec<String>,
    /// Extra arguments of `renkei init` (e.g. `--ca-key rsa-3072`).
    pub hub_init_args: Vec<String>,
    /// The prefixes strongSwan claims as its own, if not its real LAN.
    pub swan_local_ts: Option<String>,
    /// Extra settings of strongSwan's charon (e.g. `fragment_size = 300`).
    pub swan_charon: Vec<String>,
    /// A second child `net2` with these (local, remote) selectors.
    pub swan_second_child: Option<(String, String)>,
    /// With [`Facility::cert`]: the hub knows the facility by this
    /// distinguished name (`peer add --id`, and the issued certificate's
    /// subject), and strongSwan's `local` section sets no `id`, so it
    /// identifies itself by its certificate's subject.
    pub dn_id: Option<String>,
    /// With a PSK: the identity the facility authenticates as, if not
    /// `NAME.example` (e.g. its outer address, as NEC IX's `psk id ipv4`).
    pub id: Option<String>,
    /// The hub-side prefixes strongSwan proposes, if not the hub's real
    /// ones (e.g. `0.0.0.0/0`, as route-based routers do).
    pub swan_remote_ts: Option<String>,
    /// strongSwan logs its IKE keys (`ike = 4`), so a capture's encrypted
    /// IKE payloads can be decrypted ([`capture::Capture::check`]).
    pub swan_log_keys: bool,
    /// Start strongSwan for this facility; false when the test runs
    /// another implementation in its namespace ([`libreswan::Pluto`]).
    pub charon: bool,
}

impl Facility {
    pub fn new(ike: &str, esp: &str, role: Role) -> Facility {
        Facility {
            cert: None,
            cert_fault: CertFault::None,
            ike: ike.into(),
            esp: esp.into(),
            psk: PSK.into(),
            role,
            swan_conn: Vec::new(),
            swan_child: Vec::new(),
            hub_peer_args: Vec::new(),
            serve_args: Vec::new(),
            hub_init_args: Vec::new(),
            swan_local_ts: None,
            swan_charon: Vec::new(),
            swan_second_child: None,
            dn_id: None,
            id: None,
            swan_remote_ts: None,
            swan_log_keys: false,
            charon: true,
        }
    }
}

/// One facility's namespace, strongSwan and addresses.
#[derive(Debug)]
pub struct Site {
    /// Facility name in the hub's registry (kyoto, osaka, …).
    pub name: String,
    pub ns: String,
    /// Directory of its strongSwan configuration, socket and logs.
    pub dir: PathBuf,
    pub facility: Facility,
    /// Its own outer address.
    pub outer: String,
    /// Its inner (LAN) IPv4 address and prefix.
    pub inner: String,
    pub net: String,
    /// Its inner IPv6 address and prefix (IPv6 topology).
    pub inner6: Option<(String, String)>,
    charon: Option<Child>,
}

impl Site {
    /// The identity this facility authenticates as with a PSK.
    pub fn psk_id(&self) -> String {
        self.facility
            .id
            .clone()
            .unwrap_or_else(|| format!("{}.example", self.name))
    }
}

const SITE_NAMES: [&str; 2] = ["kyoto", "osaka"];

#[derive(Debug)]
pub struct Lab {
    pub id: String,
    pub topology: Topology,
    pub hub_ns: String,
    /// The NAT router's namespace (also the router of a `Path` lab).
    pub nat_ns: Option<String>,
    /// The server network's namespace (`Path` labs).
    pub server_ns: Option<String>,
    /// Facility 0's namespace (the single-facility API works on facility 0).
    pub site_ns: String,
    pub tun: String,
    pub dir: PathBuf,
    pub sites: Vec<Site>,
    hub: Option<Child>,
    /// Facility 0's configuration.
    pub facility: Facility,
    serve_args: Vec<String>,
}

impl Lab {
    /// One facility, directly connected over IPv4; renkei and strongSwan
    /// are started and loaded but not yet connected.
    pub fn start(facility: Facility) -> Lab {
        Lab::start_sites(Topology::Direct, vec![facility])
    }

    /// Facilities in a topology (Direct and Ipv6 take exactly one).
    pub fn start_sites(topology: Topology, facilities: Vec<Facility>) -> Lab {
        Lab::start_inner(topology, facilities, false).0
    }

    /// As [`Lab::start_sites`], with the hub's outer link captured from
    /// before the hub starts (so a hub-initiated IKE_SA_INIT is in it).
    pub fn start_captured(
        topology: Topology,
        facilities: Vec<Facility>,
    ) -> (Lab, capture::Capture) {
        let (lab, capture) = Lab::start_inner(topology, facilities, true);
        (lab, capture.unwrap())
    }

    fn start_inner(
        topology: Topology,
        facilities: Vec<Facility>,
        capture: bool,
    ) -> (Lab, Option<capture::Capture>) {
        assert!(
            std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
                .unwrap_or(false),
            "interop tests need root (network namespaces)"
        );
        assert!(!facilities.is_empty() && facilities.len() <= SITE_NAMES.len());
        assert!(topology == Topology::Nat || facilities.len() == 1);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{:x}", std::process::id() % 0xffff, n);
        let dir = std::env::temp_dir().join(format!("renkei-lab-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sites: Vec<Site> = facilities
            .into_iter()
            .enumerate()
            .map(|(i, facility)| {
                let name = SITE_NAMES[i].to_string();
                let ns = if i == 0 {
                    format!("rks-{id}")
                } else {
                    format!("rks{i}-{id}")
                };
                let outer = match topology {
                    Topology::Direct => SITE_OUTER.to_string(),
                    Topology::Ipv6 => SITE_OUTER6.to_string(),
                    Topology::Nat => format!("198.51.100.{}", 194 + 4 * i),
                    Topology::Path { v6: false, .. } => "198.51.100.194".to_string(),
                    Topology::Path { v6: true, .. } => "2001:db8:ff::2".to_string(),
                };
                let site_dir = if i == 0 { dir.clone() } else { dir.join(&name) };
                std::fs::create_dir_all(&site_dir).unwrap();
                Site {
                    inner: format!("198.51.100.{}", 1 + 64 * i),
                    net: format!("198.51.100.{}/26", 64 * i),
                    inner6: (topology == Topology::Ipv6)
                        .then(|| ("2001:db8:2::1".to_string(), "2001:db8:2::/64".to_string())),
                    name,
                    ns,
                    dir: site_dir,
                    facility,
                    outer,
                    charon: None,
                }
            })
            .collect();
        let facility = sites[0].facility.clone();
        let serve_args = facility.serve_args.clone();
        let mut lab = Lab {
            hub_ns: format!("rkh-{id}"),
            nat_ns: match topology {
                Topology::Nat => Some(format!("rkn-{id}")),
                Topology::Path { .. } => Some(format!("rkr-{id}")),
                _ => None,
            },
            server_ns: matches!(topology, Topology::Path { .. }).then(|| format!("rkv-{id}")),
            site_ns: sites[0].ns.clone(),
            tun: format!("rkt{id}"),
            id,
            topology,
            dir,
            sites,
            hub: None,
            facility,
            serve_args,
        };
        lab.network();
        let capture = capture.then(|| lab.capture());
        lab.start_hub();
        for i in 0..lab.sites.len() {
            if lab.sites[i].facility.charon {
                lab.start_charon_of(i);
            }
        }
        (lab, capture)
    }

    /// The hub's outer address (IPv6 in the IPv6 topology).
    pub fn hub_outer(&self) -> &'static str {
        match self.topology {
            Topology::Ipv6 | Topology::Path { v6: true, .. } => HUB_OUTER6,
            _ => HUB_OUTER,
        }
    }

    fn network(&self) {
        let h = &self.hub_ns;
        ip(&["netns", "add", h]);
        ip(&["-n", h, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{HUB_INNER}/32"),
            "dev",
            "lo",
        ]);
        for site in &self.sites {
            ip(&["netns", "add", &site.ns]);
            ip(&["-n", &site.ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &site.ns,
                "addr",
                "add",
                &format!("{}/32", site.inner),
                "dev",
                "lo",
            ]);
        }
        match self.topology {
            Topology::Direct | Topology::Ipv6 => {
                let s = &self.sites[0];
                let (vh, vs) = (format!("rkh{}", self.id), format!("rks{}", self.id));
                ip(&[
                    "link", "add", &vh, "netns", h, "type", "veth", "peer", "name", &vs, "netns",
                    &s.ns,
                ]);
                for (ns, dev, outer) in [
                    (h.as_str(), &vh, self.hub_outer()),
                    (s.ns.as_str(), &vs, s.outer.as_str()),
                ] {
                    let cidr = if self.topology == Topology::Ipv6 {
                        format!("{outer}/64")
                    } else {
                        format!("{outer}/24")
                    };
                    let mut args = vec!["-n", ns, "addr", "add", &cidr, "dev", dev];
                    if self.topology == Topology::Ipv6 {
                        args.push("nodad");
                    }
                    ip(&args);
                    ip(&["-n", ns, "link", "set", dev, "up"]);
                }
                if let Some((inner6, _)) = &s.inner6 {
                    ip(&[
                        "-n",
                        h,
                        "addr",
                        "add",
                        &format!("{HUB_INNER6}/128"),
                        "dev",
                        "lo",
                    ]);
                    ip(&[
                        "-n",
                        &s.ns,
                        "addr",
                        "add",
                        &format!("{inner6}/128"),
                        "dev",
                        "lo",
                    ]);
                }
            }
            Topology::Path { mtu, icmp, v6 } => self.path_network(mtu, icmp, v6),
            Topology::Nat => {
                let nat = self.nat_ns.as_deref().unwrap();
                ip(&["netns", "add", nat]);
                ip(&["-n", nat, "link", "set", "lo", "up"]);
                let (vh, vn) = (format!("rkh{}", self.id), format!("rkn{}", self.id));
                ip(&[
                    "link", "add", &vh, "netns", h, "type", "veth", "peer", "name", &vn, "netns",
                    nat,
                ]);
                ip(&[
                    "-n",
                    h,
                    "addr",
                    "add",
                    &format!("{HUB_OUTER}/24"),
                    "dev",
                    &vh,
                ]);
                ip(&["-n", h, "link", "set", &vh, "up"]);
                ip(&[
                    "-n",
                    nat,
                    "addr",
                    "add",
                    &format!("{NAT_PUBLIC}/24"),
                    "dev",
                    &vn,
                ]);
                ip(&["-n", nat, "link", "set", &vn, "up"]);
                for (i, s) in self.sites.iter().enumerate() {
                    let (vi, vs) = (format!("rki{i}{}", self.id), format!("rks{i}{}", self.id));
                    let gw = format!("198.51.100.{}", 193 + 4 * i);
                    ip(&[
                        "link", "add", &vi, "netns", nat, "type", "veth", "peer", "name", &vs,
                        "netns", &s.ns,
                    ]);
                    ip(&["-n", nat, "addr", "add", &format!("{gw}/30"), "dev", &vi]);
                    ip(&["-n", nat, "link", "set", &vi, "up"]);
                    ip(&[
                        "-n",
                        &s.ns,
                        "addr",
                        "add",
                        &format!("{}/30", s.outer),
                        "dev",
                        &vs,
                    ]);
                    ip(&["-n", &s.ns, "link", "set", &vs, "up"]);
                    ip(&["-n", &s.ns, "route", "add", "default", "via", &gw]);
                }
                must(Command::new("ip").args([
                    "netns",
                    "exec",
                    nat,
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv4.ip_forward=1",
                ]));
                // Random source ports, as carrier-grade NATs do: a flushed
                // mapping comes back on another port.
                let rules = format!(
                    "table ip rknat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  oifname \"{vn}\" masquerade random\n }}\n}}\n"
                );
                let rules_file = self.dir.join("nat.nft");
                std::fs::write(&rules_file, rules).unwrap();
                must(
                    Command::new("ip")
                        .args(["netns", "exec", nat, "nft", "-f"])
                        .arg(&rules_file),
                );
            }
        }
    }

    /// The [`Topology::Path`] lab's router, small link and server.
    fn path_network(&self, mtu: u32, icmp: bool, v6: bool) {
        let (h, r, s) = (
            self.hub_ns.as_str(),
            self.nat_ns.as_deref().unwrap(),
            self.sites[0].ns.as_str(),
        );
        let v = self.server_ns.as_deref().unwrap();
        let ns_ip = |ns: &str, args: &[&str]| {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            ip(&all)
        };
        let sysctl = |ns: &str, kv: &str| {
            must(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-q", "-w", kv]));
        };
        for ns in [r, v] {
            ip(&["netns", "add", ns]);
            ns_ip(ns, &["link", "set", "lo", "up"]);
        }
        let id = &self.id;
        let link = |a_ns: &str, a: &str, b_ns: &str, b: &str| {
            ip(&[
                "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns,
            ]);
        };
        let (vh, vr, vp, vs, vb, vv) = (
            format!("rkh{id}"),
            format!("rkr{id}"),
            format!("rkp{id}"),
            format!("rks{id}"),
            format!("rkb{id}"),
            format!("rkv{id}"),
        );
        link(h, &vh, r, &vr);
        link(r, &vp, s, &vs);
        link(h, &vb, v, &vv);
        // The small link: both ends, as a PPPoE session is.
        let mtu = mtu.to_string();
        for (ns, dev) in [(r, &vp), (s, &vs)] {
            ns_ip(ns, &["link", "set", dev, "mtu", &mtu]);
        }
        let addrs: &[(&str, &str, &str)] = if v6 {
            &[
                (h, &vh, "2001:db8::1/64"),
                (r, &vr, "2001:db8::100/64"),
                (r, &vp, "2001:db8:ff::1/64"),
                (s, &vs, "2001:db8:ff::2/64"),
            ]
        } else {
            &[
                (h, &vh, "192.0.2.1/24"),
                (r, &vr, "192.0.2.100/24"),
                (r, &vp, "198.51.100.193/30"),
                (s, &vs, "198.51.100.194/30"),
            ]
        };
        for (ns, dev, cidr) in addrs {
            let mut args = vec!["addr", "add", cidr, "dev", dev];
            if v6 {
                args.push("nodad");
            }
            ns_ip(ns, &args);
        }
        ns_ip(h, &["addr", "add", "203.0.113.65/26", "dev", &vb]);
        ns_ip(v, &["addr", "add", &format!("{SERVER}/26"), "dev", &vv]);
        for (ns, dev) in [(h, &vh), (r, &vr), (r, &vp), (s, &vs), (h, &vb), (v, &vv)] {
            ns_ip(ns, &["link", "set", dev, "up"]);
        }
        ns_ip(v, &["route", "add", "default", "via", "203.0.113.65"]);
        sysctl(h, "net.ipv4.ip_forward=1");
        if v6 {
            sysctl(r, "net.ipv6.conf.all.forwarding=1");
            ns_ip(
                h,
                &[
                    "-6",
                    "route",
                    "add",
                    "2001:db8:ff::/64",
                    "via",
                    "2001:db8::100",
                ],
            );
            ns_ip(
                s,
                &["-6", "route", "add", "default", "via", "2001:db8:ff::1"],
            );
        } else {
            sysctl(r, "net.ipv4.ip_forward=1");
            ns_ip(s, &["route", "add", "default", "via", "198.51.100.193"]);
        }
        let mut rules = String::new();
        if !v6 {
            rules.push_str(&format!(
                "table ip rknat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  oifname \"{vr}\" masquerade\n }}\n}}\n"
            ));
        }
        if !icmp {
            // No "fragmentation needed" / "packet too big" from the router,
            // and none reaches the server from the hub: a black hole.
            let drop = "icmp type destination-unreachable drop\n  icmpv6 type packet-too-big drop";
            rules.push_str(&format!(
                "table inet rkmtu {{\n chain rkout {{\n  type filter hook output priority 0;\n  {drop}\n }}\n chain rkfwd {{\n  type filter hook forward priority 0;\n  {drop}\n }}\n}}\n"
            ));
            let server_rules = format!(
                "table inet rkmtu {{\n chain rkin {{\n  type filter hook input priority 0;\n  {drop}\n }}\n}}\n"
            );
            let file = self.dir.join("server.nft");
            std::fs::write(&file, server_rules).unwrap();
            must(
                Command::new("ip")
                    .args(["netns", "exec", v, "nft", "-f"])
                    .arg(&file),
            );
        }
        if !rules.is_empty() {
            let file = self.dir.join("router.nft");
            std::fs::write(&file, rules).unwrap();
            must(
                Command::new("ip")
                    .args(["netns", "exec", r, "nft", "-f"])
                    .arg(&file),
            );
        }
    }

    /// Sets the MTU of the direct link between the hub and facility 0
    /// (both ends), so larger datagrams cannot cross it.
    pub fn set_path_mtu(&self, mtu: u32) {
        assert!(matches!(self.topology, Topology::Direct | Topology::Ipv6));
        let mtu = mtu.to_string();
        for (ns, dev) in [
            (&self.hub_ns, format!("rkh{}", self.id)),
            (&self.site_ns, format!("rks{}", self.id)),
        ] {
            must(Command::new("ip").args(["-n", ns, "link", "set", &dev, "mtu", &mtu]));
        }
    }

    /// `renkei --state <lab>/hub ARGS` in the hub namespace.
    pub fn renkei(&self, args: &[&str]) -> Output {
        let state = self.dir.join("hub");
        show(
            "hub",
            &renkei_bin(),
            [OsStr::new("--state"), state.as_os_str()]
                .into_iter()
                .chain(args.iter().map(OsStr::new)),
        );
        self.renkei_unshown(args)
    }

    /// [`Lab::renkei`] for the lab's own polling, never shown.
    fn renkei_unshown(&self, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.hub_ns])
            .arg(renkei_bin())
            .arg("--state")
            .arg(self.dir.join("hub"))
            .args(args)
            .env("LC_ALL", "C"))
    }

    fn start_hub(&mut self) {
        let psk = self.dir.join("psk");
        std::fs::write(&psk, format!("{PSK}\n")).unwrap();
        let mut init = vec![
            "init",
            "--hub-id",
            "hub.example",
            "--public-addr",
            self.hub_outer(),
        ];
        init.extend(
            self.sites[0]
                .facility
                .hub_init_args
                .iter()
                .map(String::as_str),
        );
        let out = self.renkei(&init);
        assert!(out.status.success(), "init: {out:?}");
        for s in &self.sites {
            let id = s
                .facility
                .dn_id
                .clone()
                .or_else(|| s.facility.id.clone())
                .unwrap_or_else(|| format!("{}.example", s.name));
            let mut remote_ts = s.net.clone();
            let mut local_ts = HUB_NET.to_string();
            if let Some((_, net6)) = &s.inner6 {
                remote_ts = format!("{remote_ts},{net6}");
                local_ts = format!("{local_ts},{HUB_NET6}");
            }
            let auth: &[&str] = if s.facility.cert.is_some() {
                &["--cert"]
            } else {
                &["--psk-file", psk.to_str().unwrap()]
            };
            let mut add = vec!["peer", "add", &s.name, "--id", &id];
            add.extend(auth);
            add.extend(["--remote-ts", &remote_ts, "--local-ts", &local_ts]);
            let remote = if s.outer.contains(':') {
                format!("[{}]:500", s.outer)
            } else {
                format!("{}:500", s.outer)
            };
            if s.facility.role == Role::RenkeiInitiates {
                add.extend(["--remote-addr", &remote, "--start"]);
            }
            add.extend(s.facility.hub_peer_args.iter().map(String::as_str));
            let out = self.renkei(&add);
            assert!(out.status.success(), "peer add: {out:?}");
        }
        for i in 0..self.sites.len() {
            if self.sites[i].facility.cert.is_some() {
                self.issue_site_cert(i);
            }
        }
        self.spawn_hub();
    }

    /// Issues facility `i`'s certificate as its [`CertFault`] says and
    /// puts key, certificate and the hub's CA where swanctl loads them.
    fn issue_site_cert(&self, i: usize) {
        let s = &self.sites[i];
        let key = s.facility.cert.clone().unwrap();
        let issued = s.dir.join("issued");
        let issue = |state: &Path| {
            let out = run(renkei_command()
                .arg("--state")
                .arg(state)
                .args(["cert", "issue", &s.name, "--key", &key, "--out"])
                .arg(&issued));
            assert!(out.status.success(), "cert issue: {out:?}");
        };
        let hub_state = self.dir.join("hub");
        match s.facility.cert_fault {
            CertFault::None | CertFault::Revoked => issue(&hub_state),
            CertFault::OtherCa => {
                let other = self.dir.join("other-ca");
                for args in [
                    vec!["init", "--hub-id", "hub.example"],
                    vec![
                        "peer",
                        "add",
                        &s.name,
                        "--id",
                        &format!("{}.example", s.name),
                        "--cert",
                        "--remote-ts",
                        &s.net,
                    ],
                ] {
                    let out = run(renkei_command().arg("--state").arg(&other).args(&args));
                    assert!(out.status.success(), "other CA: {out:?}");
                }
                issue(&other);
            }
            CertFault::Expired | CertFault::WrongIdentity => {
                // Made with the pki crate from the hub's own CA files: a
                // genuine certificate, only expired or for someone else.
                let ca = pki::ca::Ca::load(
                    &std::fs::read_to_string(hub_state.join("ca/ca.key")).unwrap(),
                    &std::fs::read_to_string(hub_state.join("ca/ca.pem")).unwrap(),
                )
                .unwrap();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let (id, from) = if s.facility.cert_fault == CertFault::Expired {
                    (format!("{}.example", s.name), now - 400 * 86_400)
                } else {
                    ("osaka.example".to_string(), now)
                };
                let cert = ca
                    .issue(
                        &pki::Identity::parse(&id).unwrap(),
                        key.parse().unwrap(),
                        from,
                        30,
                    )
                    .unwrap();
                std::fs::create_dir_all(&issued).unwrap();
                std::fs::write(issued.join(format!("{}.key", s.name)), &*cert.key_pem).unwrap();
                std::fs::write(issued.join(format!("{}.pem", s.name)), &cert.cert_pem).unwrap();
            }
        }
        if s.facility.cert_fault == CertFault::Revoked {
            let out = self.renkei(&["cert", "revoke", &s.name]);
            assert!(out.status.success(), "cert revoke: {out:?}");
        }
        let swanctl = s.dir.join("swanctl");
        for sub in ["x509", "x509ca", "private"] {
            std::fs::create_dir_all(swanctl.join(sub)).unwrap();
        }
        let name = &s.name;
        std::fs::copy(
            issued.join(format!("{name}.pem")),
            swanctl.join(format!("x509/{name}.pem")),
        )
        .unwrap();
        std::fs::copy(
            issued.join(format!("{name}.key")),
            swanctl.join(format!("private/{name}.key")),
        )
        .unwrap();
        // strongSwan trusts the hub's CA, whoever issued its own certificate.
        std::fs::copy(hub_state.join("ca/ca.pem"), swanctl.join("x509ca/ca.pem")).unwrap();
    }

    fn spawn_hub(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hub.log"))
            .unwrap();
        let state = self.dir.join("hub");
        let args: Vec<&OsStr> = [
            OsStr::new("--state"),
            state.as_os_str(),
            OsStr::new("--log"),
            OsStr::new("trace"),
            OsStr::new("serve"),
            OsStr::new("--listen"),
            OsStr::new(self.hub_outer()),
            OsStr::new("--tun"),
            OsStr::new(&self.tun),
        ]
        .into_iter()
        .chain(self.serve_args.iter().map(OsStr::new))
        .collect();
        show("hub", &renkei_bin(), &args);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hub_ns])
            .arg(renkei_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start renkei");
        self.hub = Some(child);
        self.wait_for("renkei control socket", Duration::from_secs(10), |lab| {
            lab.renkei_unshown(&["status", "--json"]).status.success()
        });
    }

    fn swan_conf(&self, i: usize) {
        let s = &self.sites[i];
        let d = s.dir.display();
        let conf = format!(
            r#"charon {{
  load = random kdf nonce aes des sha1 sha2 md5 hmac gcm curve25519 x509 pem pkcs1 pkcs8 pubkey openssl kernel-libipsec kernel-netlink socket-default vici updown
  port = 500
  port_nat_t = 4500
  retransmit_tries = 3
  retransmit_timeout = 2
  {charon_extra}
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
  }}
  filelog {{
    log {{
      path = {d}/charon.log
      time_format = %T
      flush_line = yes
      default = 1
      ike = {ike_level}
      cfg = 2
      knl = 1
    }}
  }}
}}
swanctl {{
  socket = unix://{d}/charon.vici
}}
"#,
            charon_extra = s.facility.swan_charon.join("\n  "),
            ike_level = if s.facility.swan_log_keys { 4 } else { 2 },
        );
        std::fs::write(s.dir.join("strongswan.conf"), conf).unwrap();
        let f = &s.facility;
        let (mut local_ts, mut remote_ts) = (
            f.swan_local_ts.clone().unwrap_or_else(|| s.net.clone()),
            f.swan_remote_ts
                .clone()
                .unwrap_or_else(|| HUB_NET.to_string()),
        );
        if let Some((_, net6)) = &s.inner6 {
            local_ts = format!("{local_ts},{net6}");
            remote_ts = format!("{remote_ts},{HUB_NET6}");
        }
        let swanctl = format!(
            r#"connections {{
  hub {{
    version = 2
    local_addrs = {local_addr}
    remote_addrs = {hub}
    proposals = {ike}
    {conn_extra}
    {auth}
    children {{
      net {{
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        esp_proposals = {esp}
        start_action = none
        {child_extra}
      }}
      {second_child}
    }}
  }}
}}
{secrets}
"#,
            auth = if f.cert.is_some() {
                // Without `id`, strongSwan uses its certificate's subject.
                let id = if f.dn_id.is_some() {
                    String::new()
                } else {
                    format!("\n      id = {}.example", s.name)
                };
                format!("local {{\n      auth = pubkey\n      certs = {name}.pem{id}\n    }}\n    remote {{\n      auth = pubkey\n      cacerts = ca.pem\n      id = hub.example\n    }}", name = s.name)
            } else {
                format!("local {{\n      auth = psk\n      id = {id}\n    }}\n    remote {{\n      auth = psk\n      id = hub.example\n    }}", id = s.psk_id())
            },
            secrets = if f.cert.is_some() {
                String::new()
            } else {
                format!("secrets {{\n  ike-hub {{\n    id-1 = {id}\n    id-2 = hub.example\n    secret = \"{psk}\"\n  }}\n}}", id = s.psk_id(), psk = f.psk)
            },
            local_addr = s.outer,
            hub = self.hub_outer(),
            ike = f.ike,
            esp = f.esp,
            conn_extra = f.swan_conn.join("\n    "),
            child_extra = f.swan_child.join("\n        "),
            second_child = match &f.swan_second_child {
                Some((l, r)) => format!("net2 {{\n        local_ts = {l}\n        remote_ts = {r}\n        esp_proposals = {}\n        start_action = none\n      }}", f.esp),
                None => String::new(),
            },
        );
        std::fs::create_dir_all(s.dir.join("swanctl")).unwrap();
        std::fs::write(s.dir.join("swanctl/swanctl.conf"), swanctl).unwrap();
    }

    /// Starts facility 0's strongSwan again (after [`Lab::kill_charon`]).
    pub fn start_charon(&mut self) {
        self.start_charon_of(0);
    }

    fn start_charon_of(&mut self, i: usize) {
        self.swan_conf(i);
        let s = &self.sites[i];
        let child = spawn_charon(&s.ns, &s.dir);
        self.sites[i].charon = Some(child);
        let vici = self.sites[i].dir.join("charon.vici");
        self.wait_for("charon VICI socket", Duration::from_secs(10), |_| {
            vici.exists()
        });
        let file = self.sites[i].dir.join("swanctl/swanctl.conf");
        let out = self.swanctl_of(i, &["--load-all", "--file", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "swanctl --load-all: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Runs swanctl against facility `i`'s charon.
    pub fn swanctl_of(&self, i: usize, args: &[&str]) -> Output {
        let s = &self.sites[i];
        show(&s.name, Path::new("swanctl"), args);
        swanctl_in(&s.dir, args)
    }

    /// Saves a swanctl.conf (e.g. from `renkei export`) in facility 0's
    /// swanctl directory, next to its x509/, private/ and x509ca/ folders
    /// (swanctl finds certificates and keys relative to it), and loads it;
    /// panics if strongSwan refuses it.
    pub fn load_swanctl_conf(&self, name: &str, text: &[u8]) {
        let conf = self.sites[0].dir.join("swanctl").join(name);
        std::fs::write(&conf, text).unwrap();
        let loaded = self.swanctl(&["--load-all", "--file", conf.to_str().unwrap()]);
        assert!(
            loaded.status.success(),
            "strongSwan loads {name}: {}",
            String::from_utf8_lossy(&loaded.stdout)
        );
    }

    /// Runs swanctl against facility 0's charon.
    pub fn swanctl(&self, args: &[&str]) -> Output {
        self.swanctl_of(0, args)
    }

    /// `swanctl --initiate --child net` at facility `i`; true on success.
    pub fn swan_initiate_of(&self, i: usize) -> bool {
        let out = self.swanctl_of(i, &["--initiate", "--child", "net", "--timeout", "30"]);
        std::fs::write(self.sites[i].dir.join("initiate.out"), &out.stdout).unwrap();
        out.status.success()
    }

    /// `swanctl --initiate --child net` at facility 0.
    pub fn swan_initiate(&self) -> bool {
        self.swan_initiate_of(0)
    }

    /// Number of IKE SAs facility 0's strongSwan has.
    pub fn swan_sa_count(&self) -> usize {
        let out = self.swanctl(&["--list-sas", "--raw"]);
        String::from_utf8_lossy(&out.stdout)
            .matches("state=ESTABLISHED")
            .count()
    }

    /// `renkei status --json`.
    pub fn status(&self) -> Value {
        let out = self.renkei_unshown(&["status", "--json"]);
        assert!(out.status.success(), "status: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A facility's entry in the status.
    pub fn status_of(&self, name: &str) -> Value {
        self.status()["facilities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap()
    }

    /// Facility 0's entry in the status.
    pub fn facility_status(&self) -> Value {
        self.status_of(&self.sites[0].name)
    }

    /// Waits until the hub reports facility `i` up with a Child SA.
    pub fn wait_up_of(&self, i: usize, timeout: Duration) {
        let name = self.sites[i].name.clone();
        self.wait_for(&format!("{name} up with a Child SA"), timeout, |lab| {
            let f = lab.status_of(&name);
            f["state"] == "up" && !f["child_sas"].as_array().unwrap().is_empty()
        });
    }

    /// Waits until the hub reports facility 0 up with a Child SA.
    pub fn wait_up(&self, timeout: Duration) {
        self.wait_up_of(0, timeout);
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Lab) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.dump_logs();
        panic!("timed out waiting for {what}");
    }

    /// Prints the logs of every side (for failed tests).
    pub fn dump_logs(&self) {
        let mut files = vec![self.dir.join("hub.log")];
        for s in &self.sites {
            for f in ["charon.log", "charon.stderr", "initiate.out"] {
                files.push(s.dir.join(f));
            }
        }
        for f in files {
            if let Ok(text) = std::fs::read_to_string(&f) {
                eprintln!("===== {} (last lines) =====", f.display());
                let tail: Vec<&str> = text.lines().rev().take(120).collect();
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }

    /// The hub's log so far.
    pub fn hub_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default()
    }

    /// Facility 0's strongSwan log so far, with the output of its last
    /// `swanctl --initiate`.
    pub fn charon_log(&self) -> String {
        let d = &self.sites[0].dir;
        let mut s = std::fs::read_to_string(d.join("charon.log")).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(d.join("initiate.out")).unwrap_or_default());
        s
    }

    /// (namespace, source, destination) for traffic with facility `i`.
    fn endpoints(&self, i: usize, from_hub: bool, v6: bool) -> (String, String, String) {
        let s = &self.sites[i];
        let (hub_addr, site_addr) = if v6 {
            (
                HUB_INNER6.to_string(),
                s.inner6.as_ref().expect("an IPv6 lab").0.clone(),
            )
        } else {
            (HUB_INNER.to_string(), s.inner.clone())
        };
        if from_hub {
            (self.hub_ns.clone(), hub_addr, site_addr)
        } else {
            (s.ns.clone(), site_addr, hub_addr)
        }
    }

    /// Pings between the hub's and facility `i`'s inner addresses; true if
    /// all `count` echoes came back.
    pub fn ping_with(&self, i: usize, from_hub: bool, v6: bool, size: usize, count: u32) -> bool {
        let (ns, src, dst) = self.endpoints(i, from_hub, v6);
        let out = run(Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            &size.to_string(),
            "-I",
            &src,
            &dst,
        ]));
        if !out.status.success() {
            eprintln!(
                "ping {src} -> {dst} size {size}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        out.status.success()
    }

    /// Pings over IPv4 between the hub and facility 0.
    pub fn ping(&self, from_hub: bool, size: usize, count: u32) -> bool {
        self.ping_with(0, from_hub, false, size, count)
    }

    /// Sends `bytes` over TCP between the hub and facility `i`, optionally
    /// paced to `rate` bytes per second; returns (sender digest, receiver
    /// digest, bytes received).
    pub fn transfer_with(
        &self,
        i: usize,
        from_hub: bool,
        v6: bool,
        bytes: u64,
        rate: Option<u64>,
    ) -> (String, String, u64) {
        let (src_ns, src, dst) = self.endpoints(i, from_hub, v6);
        let (dst_ns, _, _) = self.endpoints(i, !from_hub, v6);
        transfer_between(
            (&src_ns, &src),
            (&dst_ns, &dst),
            5001 + i as u16,
            bytes,
            rate,
        )
    }

    /// [`Lab::transfer_with`] (IPv4, unpaced) to another port: a second
    /// transfer between the same two ends at the same time.
    pub fn transfer_on_port(
        &self,
        i: usize,
        from_hub: bool,
        port: u16,
        bytes: u64,
    ) -> (String, String, u64) {
        let (src_ns, src, dst) = self.endpoints(i, from_hub, false);
        let (dst_ns, _, _) = self.endpoints(i, !from_hub, false);
        transfer_between((&src_ns, &src), (&dst_ns, &dst), port, bytes, None)
    }

    /// A TCP transfer between the server behind the hub ([`SERVER`], a
    /// `Path` lab) and facility 0, through the hub's kernel routing.
    pub fn transfer_server(&self, to_facility: bool, bytes: u64) -> (String, String, u64) {
        let server = (self.server_ns.as_deref().expect("a Path lab"), SERVER);
        let site = (self.sites[0].ns.as_str(), self.sites[0].inner.as_str());
        let (from, to) = if to_facility {
            (server, site)
        } else {
            (site, server)
        };
        transfer_between(from, to, 5101, bytes, None)
    }
}

/// Starts strongSwan's charon in namespace `ns` with `dir/strongswan.conf`
/// (its VICI socket `dir/charon.vici`, removed first; its stderr in
/// `dir/charon.stderr`). `ip netns exec` gives charon its own mount
/// namespace; a private /run keeps its pid file apart from other charons.
pub fn spawn_charon(ns: &str, dir: &Path) -> Child {
    let _ = std::fs::remove_file(dir.join("charon.vici"));
    let charon = ["/usr/lib/ipsec/charon", "/usr/libexec/ipsec/charon"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("strongSwan's charon is not installed (scripts/install-deps.sh)");
    Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c"])
        .arg(format!("mount -t tmpfs tmpfs /run && exec {charon}"))
        .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("charon.stderr")).unwrap())
        .spawn()
        .expect("start charon")
}

/// `swanctl ARGS` against the charon [`spawn_charon`] started with `dir`.
pub fn swanctl_in(dir: &Path, args: &[&str]) -> Output {
    run(Command::new("swanctl")
        .args(args)
        .args(["--uri", &format!("unix://{}/charon.vici", dir.display())])
        .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
        .env("SWANCTL_DIR", dir.join("swanctl")))
}

/// Sends `bytes` over TCP from `(namespace, address)` to another; returns
/// (sender digest, receiver digest, bytes received).
fn transfer_between(
    (src_ns, src): (&str, &str),
    (dst_ns, dst): (&str, &str),
    port: u16,
    bytes: u64,
    rate: Option<u64>,
) -> (String, String, u64) {
    let v6 = dst.contains(':');
    let listen = if v6 {
        format!("[{dst}]:{port}")
    } else {
        format!("{dst}:{port}")
    };
    let receiver = Command::new("ip")
        .args(["netns", "exec", dst_ns])
        .arg(xfer_bin())
        .args(["recv", &listen])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let sent = must(
        Command::new("ip")
            .args(["netns", "exec", src_ns])
            .arg(xfer_bin())
            .args(["send", src, &listen, &bytes.to_string()])
            .args(rate.map(|r| r.to_string())),
    );
    let received = receiver.wait_with_output().unwrap();
    let s: Value = serde_json::from_str(sent.trim()).unwrap();
    let r: Value = serde_json::from_slice(&received.stdout).unwrap_or(Value::Null);
    (
        s["sha256"].as_str().unwrap_or("").into(),
        r["sha256"].as_str().unwrap_or("").into(),
        r["bytes"].as_u64().unwrap_or(0),
    )
}

impl Lab {
    /// A TCP transfer over IPv4 between the hub and facility 0.
    pub fn transfer(&self, from_hub: bool, bytes: u64) -> (String, String, u64) {
        self.transfer_with(0, from_hub, false, bytes, None)
    }

    /// As [`Lab::transfer`], paced to `rate` bytes per second.
    pub fn transfer_at(
        &self,
        from_hub: bool,
        bytes: u64,
        rate: Option<u64>,
    ) -> (String, String, u64) {
        self.transfer_with(0, from_hub, false, bytes, rate)
    }

    /// Stops renkei (SIGTERM, as systemd does) and waits for it.
    pub fn stop_hub(&mut self) {
        if let Some(mut c) = self.hub.take() {
            terminate(&mut c);
        }
    }

    /// The running renkei's process ID.
    pub fn hub_pid(&self) -> Option<u32> {
        self.hub.as_ref().map(Child::id)
    }

    /// Replaces the extra `renkei serve` arguments for the next
    /// [`Lab::restart_hub`].
    pub fn set_serve_args(&mut self, args: Vec<String>) {
        self.serve_args = args;
    }

    /// Stops and starts renkei again on the same state directory.
    pub fn restart_hub(&mut self) {
        self.stop_hub();
        self.spawn_hub();
    }

    /// Kills renkei outright (SIGKILL: no Delete sent, nothing flushed), as
    /// a crash or the OOM killer would.
    pub fn kill_hub(&mut self) {
        if let Some(mut c) = self.hub.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts renkei again on the same state directory (after
    /// [`Lab::kill_hub`] or [`Lab::stop_hub`]).
    pub fn respawn_hub(&mut self) {
        self.spawn_hub();
    }

    /// Kills facility 0's strongSwan outright (no deletes sent), as a power
    /// cut would.
    pub fn kill_charon(&mut self) {
        if let Some(mut c) = self.sites[0].charon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Forgets every mapping of the NAT router, as a NAT reboot or timeout
    /// would; facilities come back on new ports.
    pub fn flush_nat(&self) {
        let nat = self.nat_ns.as_deref().expect("a NAT lab");
        must(Command::new("ip").args(["netns", "exec", nat, "conntrack", "-F"]));
    }

    /// A counter of the hub namespace's IP stack from `/proc/net/snmp`
    /// (e.g. `IpFragCreates`: IP fragments it made; `IpReasmReqds`: IP
    /// fragments it received), IPv4 and IPv6 (`/proc/net/snmp6`) summed.
    pub fn hub_ip_counter(&self, name: &str) -> u64 {
        let read = |file: &str| {
            must(Command::new("ip").args(["netns", "exec", &self.hub_ns, "cat", file]))
        };
        let snmp = read("/proc/net/snmp");
        let mut lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
        let v4 = match (lines.next(), lines.next()) {
            (Some(names), Some(values)) => names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == name.trim_start_matches("Ip"))
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0),
            _ => 0,
        };
        let v6_name = name.replacen("Ip", "Ip6", 1);
        let v6 = read("/proc/net/snmp6")
            .lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .find(|(n, _)| *n == v6_name)
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        v4 + v6
    }

    /// Drops the hub counted for no facility, for one reason.
    pub fn hub_unattributed_drops(&self, reason: &str) -> u64 {
        self.status()["hub"]["unattributed_drops"][reason]
            .as_u64()
            .unwrap_or(0)
    }

    /// Whether the hub's kernel routes facility 0's prefix.
    pub fn hub_route_present(&self) -> bool {
        let out =
            run(Command::new("ip").args(["-n", &self.hub_ns, "route", "show", &self.sites[0].net]));
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }

    /// Starts an IPv4 ping with facility 0 in the background.
    pub fn spawn_ping(&self, from_hub: bool, interval: &str, count: u32) -> Child {
        let (ns, src, dst) = self.endpoints(0, from_hub, false);
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "ping",
                "-n",
                "-q",
                "-i",
                interval,
                "-c",
                &count.to_string(),
                "-W",
                "2",
                "-I",
                &src,
                &dst,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits for a ping started by [`Lab::spawn_ping`]: (sent, received).
    pub fn ping_result(child: Child) -> (u64, u64) {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_default()
            .to_string();
        let num = |word: &str| -> u64 {
            line.split(',')
                .find(|p| p.contains(word))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (num("transmitted"), num("received"))
    }
}

/// Stops a child with SIGTERM, then SIGKILL after 5 s.
pub(crate) fn terminate(c: &mut Child) {
    // `ip netns exec` execs the program, so the child's PID is the program's.
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        if let Some(mut c) = self.hub.take() {
            terminate(&mut c);
        }
        for s in &mut self.sites {
            if let Some(mut c) = s.charon.take() {
                terminate(&mut c);
            }
        }
        // Anything left in the namespaces (e.g. a transfer helper) goes too.
        let mut namespaces = vec![self.hub_ns.clone()];
        namespaces.extend(self.nat_ns.clone());
        namespaces.extend(self.server_ns.clone());
        namespaces.extend(self.sites.iter().map(|s| s.ns.clone()));
        for ns in namespaces {
            let pids = run(Command::new("ip").args(["netns", "pids", &ns]));
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if std::env::var_os("RENKEI_KEEP_LAB").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
