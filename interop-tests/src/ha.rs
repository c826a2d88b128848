//! Two hubs, active/standby with keepalived, and strongSwan facilities
//! (one behind a NAT router), each in its own network namespace.
//!
//! ```text
//!                 ns rkw-<id>: bridges rkf<id> (facilities) and rkg<id> (servers)
//!  ns rka-<id> hub a  192.0.2.11 ─┤            ├─ 203.0.113.67  hub a
//!  ns rkc-<id> hub b  192.0.2.12 ─┤  VIP       ├─ 203.0.113.68  hub b
//!                                 │ 192.0.2.1  │ 203.0.113.65 (VIP, the servers' gateway)
//!  ns rks0-<id> kyoto 192.0.2.21 ─┤            ├─ 203.0.113.66  ns rkv-<id> server
//!  ns rks1-<id> osaka 192.0.2.22 ─┤
//!  ns rkn-<id> NAT 192.0.2.100 ───┘─ 198.51.100.193/30 ── 198.51.100.194 ns rks2-<id> nara
//! ```
//!
//! kyoto authenticates with a certificate (so the hub's key sealed in the
//! registry is what it checks on either hub) and initiates; osaka is
//! initiated by the hub (`--start`); nara initiates from behind the NAT.
//! keepalived runs in each hub's namespace with the shipped
//! `dist/keepalived/` files (interfaces, paths and the second hub's
//! priority replaced), its own
//! configuration, pid files and log. Both hubs share one registry
//! ([`SharedRegistry`]). Dropping the [`Pair`] (also when a test panics)
//! stops keepalived, the hubs and the charons and deletes every namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{must, renkei_bin, run, PSK};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The address the facilities know, moved by keepalived.
pub const VIP: &str = "192.0.2.1";
/// The servers' gateway, moved with it.
pub const GATEWAY: &str = "203.0.113.65";
/// The server behind the hubs the facilities ping.
pub const SERVER: &str = "203.0.113.66";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where the two hubs' registry lives.
#[derive(Debug, Clone)]
pub enum SharedRegistry {
    /// The first hub's SQLite file, which the second hub's state
    /// directory links to (both namespaces see one filesystem).
    SqliteFile,
    /// A registry URL given to every `renkei` as `--registry URL` (a
    /// `postgresql://` URL once the registry can live in PostgreSQL).
    Url(String),
}

/// One hub of the pair.
#[derive(Debug)]
pub struct Node {
    /// Its node name (`serve --node`): "a" or "b".
    pub name: String,
    pub ns: String,
    pub state: PathBuf,
    /// Its facilities-facing and servers-facing interfaces.
    pub fac_dev: String,
    pub srv_dev: String,
    pub tun: String,
    hub: Option<Child>,
    keepalived: Option<Child>,
    log: PathBuf,
    keepalived_log: PathBuf,
}

/// One facility.
#[derive(Debug)]
pub struct Site {
    pub name: String,
    pub ns: String,
    pub dir: PathBuf,
    pub outer: String,
    /// Its LAN address and prefix.
    pub inner: String,
    pub net: String,
    /// The hub initiates to it (`--start`).
    pub hub_initiates: bool,
    pub cert: bool,
    charon: Option<Child>,
}

#[derive(Debug)]
pub struct Pair {
    pub id: String,
    pub dir: PathBuf,
    pub switch_ns: String,
    pub nat_ns: String,
    pub server_ns: String,
    pub nodes: Vec<Node>,
    pub sites: Vec<Site>,
    registry: SharedRegistry,
}

fn ip(args: &[&str]) {
    must(Command::new("ip").args(args));
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl Pair {
    /// Builds the namespaces, sets up hub a (init, facilities, `hub
    /// seal`) and hub b (the shared registry and the cluster key), starts
    /// both hubs and keepalived, waits for one active hub, starts the
    /// facilities and waits until all three are up on it.
    pub fn start(registry: SharedRegistry) -> Pair {
        assert!(
            std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
                .unwrap_or(false),
            "interop tests need root (network namespaces)"
        );
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{:x}", std::process::id() % 0xffff, n);
        let dir = std::env::temp_dir().join(format!("renkei-ha-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let nodes = ["a", "c"]
            .iter()
            .zip(["a", "b"])
            .map(|(tag, name)| Node {
                name: name.to_string(),
                ns: format!("rk{tag}-{id}"),
                state: dir.join(format!("hub-{name}")),
                fac_dev: format!("rk{tag}f{id}"),
                srv_dev: format!("rk{tag}g{id}"),
                tun: format!("rkt{tag}{id}"),
                hub: None,
                keepalived: None,
                log: dir.join(format!("hub-{name}.log")),
                keepalived_log: dir.join(format!("keepalived-{name}.log")),
            })
            .collect();
        let sites = [
            (
                "kyoto",
                "192.0.2.21",
                "198.51.100.1",
                "198.51.100.0/26",
                false,
                true,
            ),
            (
                "osaka",
                "192.0.2.22",
                "198.51.100.65",
                "198.51.100.64/26",
                true,
                false,
            ),
            (
                "nara",
                "198.51.100.194",
                "198.51.100.129",
                "198.51.100.128/26",
                false,
                false,
            ),
        ]
        .iter()
        .enumerate()
        .map(|(i, (name, outer, inner, net, hub_initiates, cert))| {
            let d = dir.join(name);
            std::fs::create_dir_all(d.join("swanctl")).unwrap();
            Site {
                name: name.to_string(),
                ns: format!("rks{i}-{id}"),
                dir: d,
                outer: outer.to_string(),
                inner: inner.to_string(),
                net: net.to_string(),
                hub_initiates: *hub_initiates,
                cert: *cert,
                charon: None,
            }
        })
        .collect();
        let mut pair = Pair {
            switch_ns: format!("rkw-{id}"),
            nat_ns: format!("rkn-{id}"),
            server_ns: format!("rkv-{id}"),
            id,
            dir,
            nodes,
            sites,
            registry,
        };
        pair.network();
        pair.configure();
        for i in 0..2 {
            pair.start_hub(i);
        }
        for i in 0..2 {
            pair.start_keepalived(i);
        }
        let active = pair.wait_active(Duration::from_secs(40));
        eprintln!("hub {} is active", pair.nodes[active].name);
        for i in 0..pair.sites.len() {
            pair.start_charon(i);
        }
        for i in 0..pair.sites.len() {
            if !pair.sites[i].hub_initiates {
                pair.swan_initiate(i);
            }
        }
        pair.wait_all_up(active, Duration::from_secs(60));
        pair
    }

    fn network(&self) {
        let w = &self.switch_ns;
        let (br_f, br_g) = (format!("rkf{}", self.id), format!("rkg{}", self.id));
        let mut all = vec![w.clone(), self.nat_ns.clone(), self.server_ns.clone()];
        all.extend(self.nodes.iter().map(|n| n.ns.clone()));
        all.extend(self.sites.iter().map(|s| s.ns.clone()));
        for ns in &all {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        for br in [&br_f, &br_g] {
            ip(&["-n", w, "link", "add", br, "type", "bridge"]);
            ip(&["-n", w, "link", "set", br, "up"]);
        }
        // One port of a bridge: a veth with one end in `ns` as `dev`.
        let port = |ns: &str, dev: &str, br: &str, addr: &str| {
            let peer = format!("{dev}p");
            ip(&[
                "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", &peer, "netns", w,
            ]);
            ip(&["-n", w, "link", "set", &peer, "master", br]);
            ip(&["-n", w, "link", "set", &peer, "up"]);
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        };
        let sysctl = |ns: &str, kv: &str| {
            must(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-q", "-w", kv]));
        };
        for (i, node) in self.nodes.iter().enumerate() {
            port(
                &node.ns,
                &node.fac_dev,
                &br_f,
                &format!("192.0.2.{}/24", 11 + i),
            );
            port(
                &node.ns,
                &node.srv_dev,
                &br_g,
                &format!("203.0.113.{}/26", 67 + i),
            );
            sysctl(&node.ns, "net.ipv4.ip_forward=1");
            // The hub listens on the virtual address, which only the
            // active node has (README "Two hubs").
            sysctl(&node.ns, "net.ipv4.ip_nonlocal_bind=1");
        }
        port(
            &self.server_ns,
            &format!("rkv{}", self.id),
            &br_g,
            &format!("{SERVER}/26"),
        );
        ip(&[
            "-n",
            &self.server_ns,
            "route",
            "add",
            "default",
            "via",
            GATEWAY,
        ]);
        for (i, s) in self.sites.iter().enumerate() {
            ip(&[
                "-n",
                &s.ns,
                "addr",
                "add",
                &format!("{}/32", s.inner),
                "dev",
                "lo",
            ]);
            if i < 2 {
                port(
                    &s.ns,
                    &format!("rks{i}{}", self.id),
                    &br_f,
                    &format!("{}/24", s.outer),
                );
            }
        }
        // nara behind the NAT router.
        let nat = &self.nat_ns;
        port(nat, &format!("rkn{}", self.id), &br_f, "192.0.2.100/24");
        let (vi, vs) = (format!("rki{}", self.id), format!("rks2{}", self.id));
        let nara = &self.sites[2];
        ip(&[
            "link", "add", &vi, "netns", nat, "type", "veth", "peer", "name", &vs, "netns",
            &nara.ns,
        ]);
        ip(&["-n", nat, "addr", "add", "198.51.100.193/30", "dev", &vi]);
        ip(&["-n", nat, "link", "set", &vi, "up"]);
        ip(&[
            "-n",
            &nara.ns,
            "addr",
            "add",
            &format!("{}/30", nara.outer),
            "dev",
            &vs,
        ]);
        ip(&["-n", &nara.ns, "link", "set", &vs, "up"]);
        ip(&[
            "-n",
            &nara.ns,
            "route",
            "add",
            "default",
            "via",
            "198.51.100.193",
        ]);
        sysctl(nat, "net.ipv4.ip_forward=1");
        let rules = format!(
            "table ip rknat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  oifname \"rkn{}\" masquerade random\n }}\n}}\n",
            self.id
        );
        let file = self.dir.join("nat.nft");
        std::fs::write(&file, rules).unwrap();
        must(
            Command::new("ip")
                .args(["netns", "exec", nat, "nft", "-f"])
                .arg(&file),
        );
    }

    /// `renkei` with hub `i`'s state directory and the shared registry,
    /// in its namespace.
    pub fn renkei(&self, i: usize, args: &[&str]) -> std::process::Output {
        run(self.renkei_cmd(i).args(args))
    }

    fn renkei_cmd(&self, i: usize) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.nodes[i].ns])
            .arg(renkei_bin())
            .arg("--state")
            .arg(&self.nodes[i].state)
            .env("LC_ALL", "C");
        if let SharedRegistry::Url(url) = &self.registry {
            c.args(["--registry", url]);
        }
        c
    }

    fn renkei_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.renkei(i, args);
        assert!(
            out.status.success(),
            "hub {}: renkei {args:?}: {}{}",
            self.nodes[i].name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Hub a as `renkei init` makes it, its facilities, the sealed key;
    /// hub b's state directory with the cluster key copied once.
    fn configure(&self) {
        self.renkei_ok(
            0,
            &["init", "--hub-id", "hub.example", "--public-addr", VIP],
        );
        let psk = self.dir.join("psk");
        std::fs::write(&psk, format!("{PSK}\n")).unwrap();
        for s in &self.sites {
            let id = format!("{}.example", s.name);
            let mut add = vec![
                "peer",
                "add",
                &s.name,
                "--id",
                &id,
                "--remote-ts",
                &s.net,
                "--local-ts",
                crate::HUB_NET,
                "--dpd",
                "10",
            ];
            if s.cert {
                add.push("--cert");
            } else {
                add.extend(["--psk-file", psk.to_str().unwrap()]);
            }
            let remote = format!("{}:500", s.outer);
            if s.hub_initiates {
                add.extend(["--remote-addr", &remote, "--start"]);
            }
            self.renkei_ok(0, &add);
            if s.cert {
                let issued = s.dir.join("issued");
                self.renkei_ok(
                    0,
                    &["cert", "issue", &s.name, "--out", issued.to_str().unwrap()],
                );
                let sw = s.dir.join("swanctl");
                for (from, to) in [
                    (format!("{}.pem", s.name), format!("x509/{}.pem", s.name)),
                    (format!("{}.key", s.name), format!("private/{}.key", s.name)),
                    ("ca.pem".to_string(), "x509ca/ca.pem".to_string()),
                ] {
                    let to = sw.join(to);
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::copy(issued.join(from), to).unwrap();
                }
            }
        }
        let sealed = self.renkei_ok(0, &["hub", "seal"]);
        assert!(sealed.contains("cluster key"), "{sealed}");
        // Hub b: its own state directory, the registry shared, the
        // cluster key copied — nothing else of hub a's.
        let b = &self.nodes[1].state;
        std::fs::create_dir_all(b).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let SharedRegistry::SqliteFile = self.registry {
            std::os::unix::fs::symlink(
                self.nodes[0].state.join("registry.db"),
                b.join("registry.db"),
            )
            .unwrap();
        }
        std::fs::copy(
            self.nodes[0].state.join("cluster.key"),
            b.join("cluster.key"),
        )
        .unwrap();
        assert!(!b.join("hub.key").exists() && !b.join("ca").exists());
    }

    /// Starts hub `i` (`renkei serve --node`), listening on the virtual
    /// address.
    pub fn start_hub(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = self
            .renkei_cmd(i)
            .args([
                "--log", "debug", "serve", "--node", &node.name, "--listen", VIP,
            ])
            .args([
                "--tun",
                &node.tun,
                "--retransmit-timeout",
                "1",
                "--retransmit-tries",
                "3",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start renkei");
        self.nodes[i].hub = Some(child);
        self.wait_for(
            &format!("hub {i}'s control socket"),
            Duration::from_secs(10),
            |p| p.renkei(i, &["status", "--json"]).status.success(),
        );
    }

    /// Kills hub `i` with SIGKILL, as a crash or power cut would.
    pub fn kill_hub(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].hub.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// keepalived in hub `i`'s namespace with the shipped configuration.
    fn start_keepalived(&mut self, i: usize) {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dist = repo.join("dist/keepalived");
        let dist = dist.canonicalize().unwrap();
        let node = &self.nodes[i];
        let shipped = std::fs::read_to_string(dist.join("keepalived.conf")).unwrap();
        let mut conf = shipped
            .replace(
                "/usr/share/renkei/keepalived/",
                &format!("{}/", dist.display()),
            )
            .replace(
                "router_id renkei-a",
                &format!("router_id renkei-{}", node.name),
            )
            .replace("/usr/bin/renkei", renkei_bin().to_str().unwrap())
            .replace("/var/lib/renkei", node.state.to_str().unwrap())
            .replace("eth0", &node.fac_dev)
            .replace("eth1", &node.srv_dev);
        for shipped_path in ["/usr/bin/renkei", "/usr/share/renkei", "/var/lib/renkei"] {
            assert!(
                !conf.contains(shipped_path),
                "{shipped_path} replaced:\n{conf}"
            );
        }
        if i == 1 {
            conf = conf.replace("priority 100", "priority 90");
        }
        let kdir = self.dir.join(format!("keepalived-{}", node.name));
        std::fs::create_dir_all(&kdir).unwrap();
        let file = kdir.join("keepalived.conf");
        std::fs::write(&file, conf).unwrap();
        let log = std::fs::File::create(&node.keepalived_log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns, "keepalived"])
            .args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
            .arg("--use-file")
            .arg(&file)
            .arg("--pid")
            .arg(kdir.join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(kdir.join("vrrp.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start keepalived (scripts/install-deps.sh installs it)");
        self.nodes[i].keepalived = Some(child);
    }

    /// Hub `i`'s status (`renkei status --json`), or `None` when it does
    /// not answer.
    pub fn status(&self, i: usize) -> Option<Value> {
        let out = self.renkei(i, &["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Hub `i`'s role ("active", "standby"), or `None` when it is down.
    pub fn role(&self, i: usize) -> Option<String> {
        self.status(i)
            .and_then(|s| s["ha"]["role"].as_str().map(str::to_string))
    }

    /// Waits until exactly one hub is active; returns it.
    pub fn wait_active(&self, limit: Duration) -> usize {
        let mut found = 0;
        self.wait_for("exactly one active hub", limit, |p| {
            let active: Vec<usize> = (0..2)
                .filter(|i| p.role(*i).as_deref() == Some("active"))
                .collect();
            if let [one] = active[..] {
                found = one;
                true
            } else {
                false
            }
        });
        found
    }

    /// Waits until hub `i` reports every facility up with a Child SA.
    pub fn wait_all_up(&self, i: usize, limit: Duration) {
        self.wait_for(
            &format!("every facility up on hub {}", self.nodes[i].name),
            limit,
            |p| {
                p.status(i).is_some_and(|s| {
                    s["facilities"].as_array().unwrap().iter().all(|f| {
                        f["state"] == "up" && !f["child_sas"].as_array().unwrap().is_empty()
                    })
                })
            },
        );
    }

    pub fn wait_for(&self, what: &str, limit: Duration, mut f: impl FnMut(&Pair) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.dump_logs();
        panic!("timed out waiting for {what}");
    }

    fn swan_conf(&self, i: usize) {
        let s = &self.sites[i];
        let d = s.dir.display();
        std::fs::write(
            s.dir.join("strongswan.conf"),
            format!(
                r#"charon {{
  load = random kdf nonce aes sha1 sha2 hmac gcm curve25519 x509 pem pkcs1 pkcs8 pubkey openssl kernel-libipsec kernel-netlink socket-default vici updown
  retransmit_tries = 3
  retransmit_timeout = 2
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
      ike = 2
    }}
  }}
}}
swanctl {{
  socket = unix://{d}/charon.vici
}}
"#
            ),
        )
        .unwrap();
        let auth = if s.cert {
            format!(
                "local {{\n      auth = pubkey\n      certs = {n}.pem\n      id = {n}.example\n    }}\n    remote {{\n      auth = pubkey\n      id = hub.example\n    }}",
                n = s.name
            )
        } else {
            format!(
                "local {{\n      auth = psk\n      id = {n}.example\n    }}\n    remote {{\n      auth = psk\n      id = hub.example\n    }}",
                n = s.name
            )
        };
        let secrets = if s.cert {
            String::new()
        } else {
            format!(
                "secrets {{\n  ike-hub {{\n    id-1 = {}.example\n    id-2 = hub.example\n    secret = \"{PSK}\"\n  }}\n}}",
                s.name
            )
        };
        // A facility that initiates restarts after its dead-peer
        // detection; one the hub initiates waits for the hub.
        let dpd_action = if s.hub_initiates { "clear" } else { "restart" };
        let conf = format!(
            r#"connections {{
  hub {{
    version = 2
    local_addrs = {outer}
    remote_addrs = {VIP}
    proposals = aes256gcm16-prfsha256-ecp256
    dpd_delay = 2s
    {auth}
    children {{
      net {{
        local_ts = {net}
        remote_ts = {hub_net}
        esp_proposals = aes256gcm16-ecp256
        start_action = none
        dpd_action = {dpd_action}
      }}
    }}
  }}
}}
{secrets}
"#,
            outer = s.outer,
            net = s.net,
            hub_net = crate::HUB_NET,
        );
        std::fs::write(s.dir.join("swanctl/swanctl.conf"), conf).unwrap();
    }

    fn start_charon(&mut self, i: usize) {
        self.swan_conf(i);
        let s = &self.sites[i];
        let child = crate::spawn_charon(&s.ns, &s.dir);
        self.sites[i].charon = Some(child);
        let vici = self.sites[i].dir.join("charon.vici");
        self.wait_for("charon's VICI socket", Duration::from_secs(10), |_| {
            vici.exists()
        });
        let file = self.sites[i].dir.join("swanctl/swanctl.conf");
        let out = self.swanctl(i, &["--load-all", "--file", file.to_str().unwrap()]);
        assert!(out.status.success(), "swanctl --load-all: {out:?}");
    }

    fn swanctl(&self, i: usize, args: &[&str]) -> std::process::Output {
        crate::swanctl_in(&self.sites[i].dir, args)
    }

    fn swan_initiate(&self, i: usize) {
        let out = self.swanctl(i, &["--initiate", "--child", "net", "--timeout", "30"]);
        assert!(
            out.status.success(),
            "{} initiates: {}",
            self.sites[i].name,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// IKE SAs facility `i`'s strongSwan has established.
    pub fn swan_ike_sas(&self, i: usize) -> usize {
        let out = self.swanctl(i, &["--list-sas", "--raw"]);
        String::from_utf8_lossy(&out.stdout)
            .matches("state=ESTABLISHED")
            .count()
    }

    /// Pings the server behind the hubs from facility `i`'s LAN address.
    pub fn ping(&self, i: usize, count: u32) -> bool {
        let s = &self.sites[i];
        run(Command::new("ip").args([
            "netns",
            "exec",
            &s.ns,
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            "-I",
            &s.inner,
            SERVER,
        ]))
        .status
        .success()
    }

    /// Starts a ping every 100 ms for `secs` seconds from facility `i`'s
    /// LAN to the server, each reply time-stamped.
    pub fn spawn_pings(&self, i: usize, secs: u32) -> Pings {
        let s = &self.sites[i];
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &s.ns,
                "ping",
                "-n",
                "-D",
                "-i",
                "0.1",
                "-W",
                "1",
                "-c",
                &(secs * 10).to_string(),
                "-I",
                &s.inner,
                SERVER,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Pings {
            facility: s.name.clone(),
            child,
        }
    }

    /// Takes facility-side link of hub `i` down or up.
    pub fn set_link(&self, i: usize, up: bool) {
        let n = &self.nodes[i];
        ip(&[
            "-n",
            &n.ns,
            "link",
            "set",
            &n.fac_dev,
            if up { "up" } else { "down" },
        ]);
    }

    /// Every facility has exactly one IKE SA, the active hub has them
    /// all and the other hub none.
    pub fn check_no_duplicates(&self, active: usize) {
        self.wait_for("one IKE SA per facility", Duration::from_secs(60), |p| {
            (0..p.sites.len()).all(|i| p.swan_ike_sas(i) == 1)
        });
        let st = self.status(active).unwrap();
        assert_eq!(st["ha"]["role"], "active", "{st}");
        assert_eq!(st["hub"]["ike_sas"], self.sites.len(), "{st}");
        let other = 1 - active;
        if let Some(o) = self.status(other) {
            assert_eq!(o["ha"]["role"], "standby", "{o}");
            assert_eq!(o["hub"]["ike_sas"], 0, "{o}");
            assert_eq!(o["hub"]["child_sas"], 0, "{o}");
            // No route to a facility on the standby.
            for s in &self.sites {
                let out = run(Command::new("ip").args([
                    "-n",
                    &self.nodes[other].ns,
                    "route",
                    "show",
                    &s.net,
                ]));
                assert!(
                    String::from_utf8_lossy(&out.stdout).trim().is_empty(),
                    "standby hub {} routes {}",
                    self.nodes[other].name,
                    s.net
                );
            }
        }
    }

    pub fn dump_logs(&self) {
        let mut files: Vec<PathBuf> = Vec::new();
        for n in &self.nodes {
            files.push(n.log.clone());
            files.push(n.keepalived_log.clone());
        }
        for s in &self.sites {
            files.push(s.dir.join("charon.log"));
        }
        for f in files {
            if let Ok(text) = std::fs::read_to_string(&f) {
                eprintln!("===== {} (last lines) =====", f.display());
                let tail: Vec<&str> = text.lines().rev().take(80).collect();
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// A running [`Pair::spawn_pings`].
#[derive(Debug)]
pub struct Pings {
    pub facility: String,
    child: Child,
}

/// What a run of pings saw around a fault.
#[derive(Debug)]
pub struct Outage {
    pub facility: String,
    pub sent: u64,
    pub received: u64,
    /// From the fault to the first reply after the longest silence that
    /// followed it; `None` when no reply was missing.
    pub back_after: Option<Duration>,
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.back_after {
            Some(d) => write!(
                f,
                "{}: first ping through {:.1} s after the fault, {} of {} pings lost",
                self.facility,
                d.as_secs_f64(),
                self.sent - self.received,
                self.sent
            ),
            None => write!(
                f,
                "{}: no interruption, {} of {} pings lost",
                self.facility,
                self.sent - self.received,
                self.sent
            ),
        }
    }
}

impl Pings {
    /// Waits for the pings to end; `fault` is when the fault was made
    /// (seconds since the epoch, as `ping -D` stamps replies).
    pub fn finish(self, fault: f64) -> Outage {
        let out = self.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let replies: Vec<f64> = text
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
            .collect();
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_default();
        let num = |word: &str| -> u64 {
            summary
                .split(',')
                .find(|p| p.contains(word))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        // The longest silence that ends after the fault.
        let mut last = replies
            .iter()
            .copied()
            .filter(|t| *t <= fault)
            .fold(fault, f64::max);
        let mut worst: Option<(f64, f64)> = None;
        for t in replies.iter().copied().filter(|t| *t > fault) {
            if worst.is_none_or(|(gap, _)| t - last > gap) {
                worst = Some((t - last, t));
            }
            last = t;
        }
        let back_after = worst
            .filter(|(gap, _)| *gap > 0.5)
            .map(|(_, t)| Duration::from_secs_f64(t - fault));
        Outage {
            facility: self.facility,
            sent: num("transmitted"),
            received: num("received"),
            back_after,
        }
    }
}

/// Now, as `ping -D` stamps replies.
pub fn fault_now() -> f64 {
    unix_now()
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.keepalived.take() {
                crate::terminate(&mut c);
            }
            if let Some(mut c) = n.hub.take() {
                crate::terminate(&mut c);
            }
        }
        for s in &mut self.sites {
            if let Some(mut c) = s.charon.take() {
                crate::terminate(&mut c);
            }
        }
        let mut namespaces = vec![
            self.switch_ns.clone(),
            self.nat_ns.clone(),
            self.server_ns.clone(),
        ];
        namespaces.extend(self.nodes.iter().map(|n| n.ns.clone()));
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
