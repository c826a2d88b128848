//! A lab for black-box tests: a renkei hub and a strongSwan facility, each
//! in its own network namespace, joined by a veth pair.
//!
//! ```text
//!   ns rkh-<id>                                   ns rks-<id>
//!   renkei serve (TUN rkt<id>)                    charon (kernel-libipsec, ipsec0)
//!   lo 203.0.113.1/32   veth 192.0.2.1/24 ─── 192.0.2.2/24 veth   lo 198.51.100.1/32
//! ```
//!
//! Every name carries a per-lab id, so labs run side by side; dropping the
//! lab (also when a test panics) stops the processes and deletes the
//! namespaces. Requires root, iproute2, iputils-ping and strongSwan
//! (`scripts/install-deps.sh` installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const HUB_OUTER: &str = "192.0.2.1";
pub const SITE_OUTER: &str = "192.0.2.2";
pub const HUB_INNER: &str = "203.0.113.1";
pub const HUB_NET: &str = "203.0.113.0/25";
pub const SITE_INNER: &str = "198.51.100.1";
pub const SITE_NET: &str = "198.51.100.0/26";
pub const PSK: &str = "renkei-interop-psk-0123456789";

static COUNTER: AtomicU32 = AtomicU32::new(0);

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

/// How the facility is configured.
#[derive(Debug, Clone)]
pub struct Facility {
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
}

impl Facility {
    pub fn new(ike: &str, esp: &str, role: Role) -> Facility {
        Facility {
            ike: ike.into(),
            esp: esp.into(),
            psk: PSK.into(),
            role,
            swan_conn: Vec::new(),
            swan_child: Vec::new(),
            hub_peer_args: Vec::new(),
            serve_args: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct Lab {
    pub id: String,
    pub hub_ns: String,
    pub site_ns: String,
    pub tun: String,
    pub dir: PathBuf,
    hub: Option<Child>,
    charon: Option<Child>,
    pub facility: Facility,
}

impl Lab {
    /// Builds the namespaces and starts renkei and strongSwan, loaded but
    /// not yet connected.
    pub fn start(facility: Facility) -> Lab {
        assert!(
            std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
                .unwrap_or(false),
            "interop tests need root (network namespaces)"
        );
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{:x}", std::process::id() % 0xffff, n);
        let dir = std::env::temp_dir().join(format!("renkei-lab-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Lab {
            hub_ns: format!("rkh-{id}"),
            site_ns: format!("rks-{id}"),
            tun: format!("rkt{id}"),
            id,
            dir,
            hub: None,
            charon: None,
            facility,
        };
        lab.network();
        lab.start_hub();
        lab.start_charon();
        lab
    }

    fn network(&self) {
        let (h, s) = (&self.hub_ns, &self.site_ns);
        let (vh, vs) = (format!("rkh{}", self.id), format!("rks{}", self.id));
        ip(&["netns", "add", h]);
        ip(&["netns", "add", s]);
        ip(&[
            "link", "add", &vh, "netns", h, "type", "veth", "peer", "name", &vs, "netns", s,
        ]);
        for (ns, dev, outer, inner) in [
            (h, &vh, HUB_OUTER, HUB_INNER),
            (s, &vs, SITE_OUTER, SITE_INNER),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{outer}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{inner}/32"), "dev", "lo"]);
        }
    }

    /// `renkei --state <lab>/hub ARGS` in the hub namespace.
    pub fn renkei(&self, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.hub_ns])
            .arg(renkei_bin())
            .arg("--state")
            .arg(self.dir.join("hub"))
            .args(args))
    }

    fn start_hub(&mut self) {
        let psk = self.dir.join("psk");
        std::fs::write(&psk, format!("{PSK}\n")).unwrap();
        let out = self.renkei(&[
            "init",
            "--hub-id",
            "hub.example",
            "--public-addr",
            HUB_OUTER,
        ]);
        assert!(out.status.success(), "init: {out:?}");
        let mut add = vec![
            "peer",
            "add",
            "kyoto",
            "--id",
            "kyoto.example",
            "--psk-file",
            psk.to_str().unwrap(),
            "--remote-ts",
            SITE_NET,
            "--local-ts",
            HUB_NET,
        ];
        let remote = format!("{SITE_OUTER}:500");
        if self.facility.role == Role::RenkeiInitiates {
            add.extend(["--remote-addr", &remote, "--start"]);
        }
        let extra = self.facility.hub_peer_args.clone();
        add.extend(extra.iter().map(String::as_str));
        let out = self.renkei(&add);
        assert!(out.status.success(), "peer add: {out:?}");
        self.spawn_hub();
    }

    fn spawn_hub(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hub.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hub_ns])
            .arg(renkei_bin())
            .arg("--state")
            .arg(self.dir.join("hub"))
            .args([
                "--log", "debug", "serve", "--listen", HUB_OUTER, "--tun", &self.tun,
            ])
            .args(&self.facility.serve_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start renkei");
        self.hub = Some(child);
        self.wait_for("renkei control socket", Duration::from_secs(10), |lab| {
            lab.renkei(&["status", "--json"]).status.success()
        });
    }

    fn swan_conf(&self) {
        let d = self.dir.display();
        let conf = format!(
            r#"charon {{
  load = random kdf nonce aes des sha1 sha2 md5 hmac gcm curve25519 x509 pem pkcs1 pkcs8 pubkey openssl kernel-libipsec kernel-netlink socket-default vici updown
  port = 500
  port_nat_t = 4500
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
      cfg = 2
      knl = 1
    }}
  }}
}}
swanctl {{
  socket = unix://{d}/charon.vici
}}
"#
        );
        std::fs::write(self.dir.join("strongswan.conf"), conf).unwrap();
        let f = &self.facility;
        let swanctl = format!(
            r#"connections {{
  hub {{
    version = 2
    local_addrs = {SITE_OUTER}
    remote_addrs = {HUB_OUTER}
    proposals = {ike}
    {conn_extra}
    local {{
      auth = psk
      id = kyoto.example
    }}
    remote {{
      auth = psk
      id = hub.example
    }}
    children {{
      net {{
        local_ts = {SITE_NET}
        remote_ts = {HUB_NET}
        esp_proposals = {esp}
        start_action = none
        {child_extra}
      }}
    }}
  }}
}}
secrets {{
  ike-hub {{
    id-1 = kyoto.example
    id-2 = hub.example
    secret = "{psk}"
  }}
}}
"#,
            ike = f.ike,
            esp = f.esp,
            psk = f.psk,
            conn_extra = f.swan_conn.join("\n    "),
            child_extra = f.swan_child.join("\n        "),
        );
        std::fs::create_dir_all(self.dir.join("swanctl")).unwrap();
        std::fs::write(self.dir.join("swanctl/swanctl.conf"), swanctl).unwrap();
    }

    /// Starts strongSwan's charon and loads its configuration.
    pub fn start_charon(&mut self) {
        self.swan_conf();
        let _ = std::fs::remove_file(self.dir.join("charon.vici"));
        let conf = self.dir.join("strongswan.conf");
        let charon = ["/usr/lib/ipsec/charon", "/usr/libexec/ipsec/charon"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("strongSwan's charon is not installed (scripts/install-deps.sh)");
        // `ip netns exec` gives charon its own mount namespace; a private
        // /run keeps its pid file apart from other charons.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.site_ns, "sh", "-c"])
            .arg(format!("mount -t tmpfs tmpfs /run && exec {charon}"))
            .env("STRONGSWAN_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("charon.stderr")).unwrap())
            .spawn()
            .expect("start charon");
        self.charon = Some(child);
        let vici = self.dir.join("charon.vici");
        self.wait_for("charon VICI socket", Duration::from_secs(10), |_| {
            vici.exists()
        });
        let out = self.swanctl(&[
            "--load-all",
            "--file",
            self.dir.join("swanctl/swanctl.conf").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "swanctl --load-all: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Runs swanctl against this lab's charon.
    pub fn swanctl(&self, args: &[&str]) -> Output {
        run(Command::new("swanctl")
            .args(args)
            .args([
                "--uri",
                &format!("unix://{}/charon.vici", self.dir.display()),
            ])
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .env("SWANCTL_DIR", self.dir.join("swanctl")))
    }

    /// `swanctl --initiate --child net`; true if strongSwan reports success.
    pub fn swan_initiate(&self) -> bool {
        let out = self.swanctl(&["--initiate", "--child", "net", "--timeout", "30"]);
        std::fs::write(self.dir.join("initiate.out"), &out.stdout).unwrap();
        out.status.success()
    }

    /// Number of IKE SAs strongSwan has.
    pub fn swan_sa_count(&self) -> usize {
        let out = self.swanctl(&["--list-sas", "--raw"]);
        String::from_utf8_lossy(&out.stdout)
            .matches("state=ESTABLISHED")
            .count()
    }

    /// `renkei status --json`.
    pub fn status(&self) -> Value {
        let out = self.renkei(&["status", "--json"]);
        assert!(out.status.success(), "status: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The facility's entry in the status.
    pub fn facility_status(&self) -> Value {
        self.status()["facilities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "kyoto")
            .cloned()
            .unwrap()
    }

    /// Waits until the hub reports the facility up with a Child SA.
    pub fn wait_up(&self, timeout: Duration) {
        self.wait_for("facility up with a Child SA", timeout, |lab| {
            let f = lab.facility_status();
            f["state"] == "up" && !f["child_sas"].as_array().unwrap().is_empty()
        });
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

    /// Prints the logs of both sides (for failed tests).
    pub fn dump_logs(&self) {
        for f in ["hub.log", "charon.log", "charon.stderr", "initiate.out"] {
            if let Ok(s) = std::fs::read_to_string(self.dir.join(f)) {
                let tail: Vec<&str> = s.lines().rev().take(120).collect();
                eprintln!("===== {f} (last lines) =====");
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

    /// strongSwan's log so far, with the output of the last `swanctl --initiate`.
    pub fn charon_log(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.dir.join("initiate.out")).unwrap_or_default());
        s
    }

    /// Pings from one namespace's inner address to the other's; true if all
    /// `count` echoes came back.
    pub fn ping(&self, from_hub: bool, size: usize, count: u32) -> bool {
        let (ns, src, dst) = if from_hub {
            (&self.hub_ns, HUB_INNER, SITE_INNER)
        } else {
            (&self.site_ns, SITE_INNER, HUB_INNER)
        };
        let out = run(Command::new("ip").args([
            "netns",
            "exec",
            ns,
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
            src,
            dst,
        ]));
        if !out.status.success() {
            eprintln!(
                "ping {src} -> {dst} size {size}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        out.status.success()
    }

    /// Sends `bytes` over TCP from one side's inner address to the other's;
    /// returns (sender digest, receiver digest, bytes received).
    pub fn transfer(&self, from_hub: bool, bytes: u64) -> (String, String, u64) {
        self.transfer_at(from_hub, bytes, None)
    }

    /// As [`Lab::transfer`], paced to `rate` bytes per second.
    pub fn transfer_at(
        &self,
        from_hub: bool,
        bytes: u64,
        rate: Option<u64>,
    ) -> (String, String, u64) {
        let (src_ns, dst_ns, src, dst) = if from_hub {
            (&self.hub_ns, &self.site_ns, HUB_INNER, SITE_INNER)
        } else {
            (&self.site_ns, &self.hub_ns, SITE_INNER, HUB_INNER)
        };
        let port = 5001;
        let receiver = Command::new("ip")
            .args(["netns", "exec", dst_ns])
            .arg(xfer_bin())
            .args(["recv", &format!("{dst}:{port}")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let sent = must(
            Command::new("ip")
                .args(["netns", "exec", src_ns])
                .arg(xfer_bin())
                .args(["send", src, &format!("{dst}:{port}"), &bytes.to_string()])
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

    /// Stops renkei (SIGTERM, as systemd does) and waits for it.
    pub fn stop_hub(&mut self) {
        if let Some(mut c) = self.hub.take() {
            terminate(&mut c);
        }
    }

    /// Stops and starts renkei again on the same state directory.
    pub fn restart_hub(&mut self) {
        self.stop_hub();
        self.spawn_hub();
    }

    /// Kills strongSwan outright (no deletes sent), as a power cut would.
    pub fn kill_charon(&mut self) {
        if let Some(mut c) = self.charon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the hub's kernel routes the facility's prefix.
    pub fn hub_route_present(&self) -> bool {
        let out = run(Command::new("ip").args(["-n", &self.hub_ns, "route", "show", SITE_NET]));
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }

    /// Starts a ping between the inner addresses in the background.
    pub fn spawn_ping(&self, from_hub: bool, interval: &str, count: u32) -> Child {
        let (ns, src, dst) = if from_hub {
            (&self.hub_ns, HUB_INNER, SITE_INNER)
        } else {
            (&self.site_ns, SITE_INNER, HUB_INNER)
        };
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
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
                src,
                dst,
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

fn terminate(c: &mut Child) {
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
        if let Some(mut c) = self.charon.take() {
            terminate(&mut c);
        }
        // Anything left in the namespaces (e.g. a transfer helper) goes too.
        for ns in [&self.hub_ns, &self.site_ns] {
            let pids = run(Command::new("ip").args(["netns", "pids", ns]));
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("RENKEI_KEEP_LAB").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
