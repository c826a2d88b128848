//! `renkei drain` between two hubs, against real strongSwan facilities
//! (issue #17 item 5).
//!
//! ```text
//!  ns rkdb-<id>: bridge ─┬─ 192.0.2.1 hub 1 (+ 192.0.2.10, the hub address keepalived would move)
//!                        ├─ 192.0.2.2 hub 2 (listens on 192.0.2.10 too: ip_nonlocal_bind)
//!                        ├─ 192.0.2.11 kyoto (lo 198.51.100.1), follows redirects, knows hub 1 as 192.0.2.1
//!                        └─ 192.0.2.12 osaka (lo 198.51.100.65), follow_redirects = no, knows 192.0.2.10
//! ```
//!
//! Both hubs have the same state (hub 2's directory is a copy of hub 1's,
//! made before either starts): the same identity, PSK and facilities, as
//! two hubs sharing one registry have. keepalived is not needed here: the
//! test moves 192.0.2.10 with `ip addr` once hub 1's status says it is
//! drained, as keepalived's check script would make it do (and flushes
//! osaka's ARP entry for it, which keepalived's gratuitous ARP does).
//! Times and pings lost are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::capture::Capture;
use renkei_interop_tests::{must, renkei_bin, run, Lab};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const HUB: [&str; 2] = ["192.0.2.1", "192.0.2.2"];
const VIP: &str = "192.0.2.10";
const SITE: [&str; 2] = ["192.0.2.11", "192.0.2.12"];
const SITE_INNER: [&str; 2] = ["198.51.100.1", "198.51.100.65"];
const SITE_NET: [&str; 2] = ["198.51.100.0/26", "198.51.100.64/26"];
const NAMES: [&str; 2] = ["kyoto", "osaka"];
const HUB_INNER: &str = "203.0.113.1";
const HUB_NET: &str = "203.0.113.0/25";
const PSK: &str = "renkei-interop-psk-0123456789";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Two hubs and two facilities on one bridge; dropped (also on a panic),
/// it stops every process and deletes the namespaces.
struct TwoHubs {
    id: String,
    dir: PathBuf,
    bridge_ns: String,
    hub_ns: [String; 2],
    site_ns: [String; 2],
    hubs: [Option<Child>; 2],
    charons: Vec<Child>,
}

fn ip(args: &[&str]) {
    must(Command::new("ip").args(args));
}

fn sysctl(ns: &str, kv: &str) {
    must(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-q", "-w", kv]));
}

impl TwoHubs {
    fn start() -> TwoHubs {
        assert!(
            std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
                .unwrap_or(false),
            "interop tests need root (network namespaces)"
        );
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{:x}", std::process::id() % 0xffff, n);
        let dir = std::env::temp_dir().join(format!("renkei-drain-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = TwoHubs {
            bridge_ns: format!("rkdb-{id}"),
            hub_ns: [format!("rkd1-{id}"), format!("rkd2-{id}")],
            site_ns: [format!("rkds0-{id}"), format!("rkds1-{id}")],
            id,
            dir,
            hubs: [None, None],
            charons: Vec::new(),
        };
        lab.network();
        lab
    }

    fn veth(&self, who: &str) -> String {
        format!("rkd{who}{}", self.id)
    }

    fn network(&self) {
        let b = &self.bridge_ns;
        ip(&["netns", "add", b]);
        ip(&["-n", b, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", b, "link", "set", "br0", "up"]);
        let mut ends = Vec::new();
        for i in 0..2 {
            ends.push((self.hub_ns[i].clone(), format!("h{i}"), HUB[i], HUB_INNER));
            ends.push((
                self.site_ns[i].clone(),
                format!("s{i}"),
                SITE[i],
                SITE_INNER[i],
            ));
        }
        for (ns, who, outer, inner) in &ends {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{inner}/32"), "dev", "lo"]);
            let (dev, port) = (self.veth(who), self.veth(&format!("{who}b")));
            ip(&[
                "link", "add", &dev, "netns", ns, "type", "veth", "peer", "name", &port, "netns", b,
            ]);
            ip(&["-n", b, "link", "set", &port, "master", "br0"]);
            ip(&["-n", b, "link", "set", &port, "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{outer}/24"), "dev", &dev]);
            ip(&["-n", ns, "link", "set", &dev, "up"]);
        }
        // The hub address starts on hub 1; hub 2 may bind it beforehand.
        ip(&[
            "-n",
            &self.hub_ns[0],
            "addr",
            "add",
            &format!("{VIP}/24"),
            "dev",
            &self.veth("h0"),
        ]);
        sysctl(&self.hub_ns[1], "net.ipv4.ip_nonlocal_bind=1");
    }

    /// Moves the hub address to hub 2, as keepalived does.
    fn move_vip(&self) {
        ip(&[
            "-n",
            &self.hub_ns[0],
            "addr",
            "del",
            &format!("{VIP}/24"),
            "dev",
            &self.veth("h0"),
        ]);
        ip(&[
            "-n",
            &self.hub_ns[1],
            "addr",
            "add",
            &format!("{VIP}/24"),
            "dev",
            &self.veth("h1"),
        ]);
        // keepalived's gratuitous ARP updates the neighbours' caches.
        for ns in &self.site_ns {
            let _ = run(Command::new("ip").args(["-n", ns, "neigh", "flush", VIP]));
        }
    }

    fn state(&self, hub: usize) -> PathBuf {
        self.dir.join(format!("hub{}", hub + 1))
    }

    /// `renkei --state <hub N> ARGS` in hub N's namespace, in English.
    fn renkei(&self, hub: usize, args: &[&str]) -> Output {
        run(&mut self.renkei_cmd(hub, args))
    }

    fn renkei_cmd(&self, hub: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hub_ns[hub]])
            .arg(renkei_bin())
            .arg("--state")
            .arg(self.state(hub))
            .args(args)
            .env("LC_ALL", "C");
        cmd
    }

    fn must_renkei(&self, hub: usize, args: &[&str]) -> String {
        let out = self.renkei(hub, args);
        assert!(
            out.status.success(),
            "renkei {args:?} on hub {}: {}{}",
            hub + 1,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One registry for both: hub 1's state, copied before either runs.
    fn init_hubs(&self) {
        let psk = self.dir.join("psk");
        std::fs::write(&psk, format!("{PSK}\n")).unwrap();
        self.must_renkei(
            0,
            &["init", "--hub-id", "hub.example", "--public-addr", VIP],
        );
        for i in 0..2 {
            self.must_renkei(
                0,
                &[
                    "peer",
                    "add",
                    NAMES[i],
                    "--id",
                    &format!("{}.example", NAMES[i]),
                    "--psk-file",
                    psk.to_str().unwrap(),
                    "--remote-ts",
                    SITE_NET[i],
                    "--local-ts",
                    HUB_NET,
                ],
            );
        }
        must(
            Command::new("cp")
                .arg("-a")
                .arg(self.state(0))
                .arg(self.state(1)),
        );
    }

    fn start_hub(&mut self, hub: usize) {
        let log = std::fs::File::create(self.dir.join(format!("hub{}.log", hub + 1))).unwrap();
        let tun = self.veth(&format!("t{hub}"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hub_ns[hub]])
            .arg(renkei_bin())
            .arg("--state")
            .arg(self.state(hub))
            .args(["--log", "debug", "serve", "--listen", HUB[hub]])
            .args(["--listen", VIP, "--tun", &tun])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start renkei");
        self.hubs[hub] = Some(child);
        wait_for("renkei control socket", Duration::from_secs(10), || {
            self.renkei(hub, &["status", "--json"]).status.success()
        });
    }

    fn site_dir(&self, i: usize) -> PathBuf {
        self.dir.join(NAMES[i])
    }

    /// strongSwan for facility `i`: kyoto follows redirects (charon's
    /// default) and knows hub 1's own address; osaka has
    /// `follow_redirects = no` and knows the hub address.
    fn start_charon(&mut self, i: usize) {
        let d = self.site_dir(i);
        std::fs::create_dir_all(d.join("swanctl")).unwrap();
        let ds = d.display();
        let follow = if i == 0 { "" } else { "follow_redirects = no" };
        std::fs::write(
            d.join("strongswan.conf"),
            format!(
                r#"charon {{
  load = random kdf nonce aes sha1 sha2 hmac gcm curve25519 x509 pem pkcs1 pkcs8 pubkey openssl kernel-libipsec kernel-netlink socket-default vici updown
  port = 500
  port_nat_t = 4500
  retransmit_tries = 5
  retransmit_timeout = 2
  {follow}
  plugins {{
    vici {{
      socket = unix://{ds}/charon.vici
    }}
  }}
  filelog {{
    log {{
      path = {ds}/charon.log
      time_format = %T
      flush_line = yes
      default = 1
      ike = 4
      cfg = 2
      knl = 1
    }}
  }}
}}
swanctl {{
  socket = unix://{ds}/charon.vici
}}
"#
            ),
        )
        .unwrap();
        let remote = if i == 0 { HUB[0] } else { VIP };
        std::fs::write(
            d.join("swanctl/swanctl.conf"),
            format!(
                r#"connections {{
  hub {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    proposals = aes256gcm16-prfsha256-ecp256
    local {{
      auth = psk
      id = {name}.example
    }}
    remote {{
      auth = psk
      id = hub.example
    }}
    children {{
      net {{
        local_ts = {net}
        remote_ts = {HUB_NET}
        esp_proposals = aes256gcm16-ecp256
        start_action = none
        close_action = start
      }}
    }}
  }}
}}
secrets {{
  ike-hub {{
    id-1 = {name}.example
    id-2 = hub.example
    secret = "{PSK}"
  }}
}}
"#,
                local = SITE[i],
                name = NAMES[i],
                net = SITE_NET[i],
            ),
        )
        .unwrap();
        let child = renkei_interop_tests::spawn_charon(&self.site_ns[i], &d);
        self.charons.push(child);
        let vici = d.join("charon.vici");
        wait_for("charon VICI socket", Duration::from_secs(10), || {
            vici.exists()
        });
        let file = d.join("swanctl/swanctl.conf");
        let out = self.swanctl(i, &["--load-all", "--file", file.to_str().unwrap()]);
        assert!(out.status.success(), "swanctl --load-all: {out:?}");
    }

    fn swanctl(&self, i: usize, args: &[&str]) -> Output {
        renkei_interop_tests::swanctl_in(&self.site_dir(i), args)
    }

    fn list_sas(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.swanctl(i, &["--list-sas"]).stdout).into_owned()
    }

    fn status(&self, hub: usize) -> Value {
        let out = self.renkei(hub, &["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn facility(&self, hub: usize, name: &str) -> Value {
        self.status(hub)["facilities"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }

    fn up_at(&self, hub: usize, name: &str) -> bool {
        self.facility(hub, name)["state"] == "up"
    }

    /// A ping from facility `i` to the hub side, every 50 ms.
    fn spawn_ping(&self, i: usize, count: u32) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.site_ns[i], "ping", "-n", "-q"])
            .args(["-i", "0.05", "-W", "1", "-c", &count.to_string()])
            .args(["-I", SITE_INNER[i], HUB_INNER])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn dump_logs(&self) {
        for f in [
            "hub1.log",
            "hub2.log",
            "kyoto/charon.log",
            "osaka/charon.log",
        ] {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("---- {f} (last lines) ----");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for TwoHubs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for c in self
            .hubs
            .iter_mut()
            .flatten()
            .chain(self.charons.iter_mut())
        {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !matches!(c.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut namespaces = vec![self.bridge_ns.clone()];
        namespaces.extend(self.hub_ns.iter().cloned());
        namespaces.extend(self.site_ns.iter().cloned());
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

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn drain_redirects_one_facility_and_deletes_the_other_onto_the_second_hub() {
    let mut lab = TwoHubs::start();
    lab.init_hubs();
    // Hub 1's link from before anything connects, with kyoto's IKE keys
    // logged: its REDIRECTs are checked by tshark. UDP segmentation is
    // done before the capture point, as on a NIC (see capture.rs).
    must(
        Command::new("ip")
            .args(["netns", "exec", &lab.hub_ns[0], "ethtool", "-K"])
            .args([&lab.veth("h0"), "tx-udp-segmentation", "off"]),
    );
    let capture = Capture::start(
        &lab.hub_ns[0],
        &lab.veth("h0"),
        &lab.dir.join("hub1.pcap"),
        HUB[0],
        vec![
            lab.site_dir(0).join("charon.log"),
            lab.site_dir(1).join("charon.log"),
        ],
    );
    lab.start_hub(0);
    lab.start_hub(1);
    lab.start_charon(0);
    lab.start_charon(1);
    for (i, name) in NAMES.iter().enumerate() {
        let out = lab.swanctl(i, &["--initiate", "--child", "net", "--timeout", "20"]);
        assert!(out.status.success(), "{name} initiate: {out:?}");
    }
    wait_for(
        "both facilities up at hub 1",
        Duration::from_secs(30),
        || lab.up_at(0, "kyoto") && lab.up_at(0, "osaka"),
    );
    // charon announces REDIRECT_SUPPORTED by default; follow_redirects = no
    // suppresses it.
    assert_eq!(lab.facility(0, "kyoto")["redirect_supported"], true);
    assert_eq!(lab.facility(0, "osaka")["redirect_supported"], false);
    assert_eq!(lab.status(0)["hub"]["draining"], false);

    // Bad input: a clear error naming the field, nothing changed.
    let bad = lab.renkei(0, &["drain", "--to", "not a name!"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("to: 'not a name!'"),
        "{bad:?}"
    );
    let own = lab.renkei(0, &["drain", "--to", VIP]);
    assert_eq!(own.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&own.stderr)
            .contains("to: 192.0.2.10 is an address this hub listens on"),
        "{own:?}"
    );
    assert_eq!(lab.status(0)["hub"]["draining"], false);

    // 20 s of pings every 50 ms, the drain 2 s in.
    let pings = [lab.spawn_ping(0, 400), lab.spawn_ping(1, 400)];
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let drain = lab
        .renkei_cmd(0, &["drain", "--to", HUB[1], "--wait", "60", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // keepalived's check script sees "drained" (the facilities handed
    // over, the Deletes sent from the hub address) and the address moves.
    wait_for("hub 1 drained", Duration::from_secs(70), || {
        let hub = &lab.status(0)["hub"];
        hub["draining"] == true && hub["drained"] == true
    });
    lab.move_vip();
    let mut at_hub2 = [None, None];
    wait_for(
        "both facilities up at hub 2",
        Duration::from_secs(90),
        || {
            for (i, name) in NAMES.iter().enumerate() {
                if at_hub2[i].is_none() && lab.up_at(1, name) {
                    at_hub2[i] = Some(started.elapsed());
                }
            }
            at_hub2.iter().all(Option::is_some)
        },
    );
    let out = drain.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "drain: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcome = |name: &str| {
        report["facilities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| (f["method"].clone(), f["outcome"].clone()))
            .unwrap()
    };
    assert_eq!(outcome("kyoto"), ("redirect".into(), "redirected".into()));
    assert_eq!(outcome("osaka"), ("delete".into(), "deleted".into()));

    // kyoto's IKE SA is with hub 2 now, osaka's with the moved address;
    // hub 1 has none left.
    wait_for("no SA left on hub 1", Duration::from_secs(40), || {
        lab.status(0)["hub"]["ike_sas"] == 0
    });
    let kyoto = lab.list_sas(0);
    assert!(kyoto.contains(&format!("{}[", HUB[1])), "kyoto: {kyoto}");
    assert!(!kyoto.contains(&format!("{}[", HUB[0])), "kyoto: {kyoto}");
    let osaka = lab.list_sas(1);
    assert!(osaka.contains(&format!("{VIP}[")), "osaka: {osaka}");
    assert_eq!(lab.facility(1, "kyoto")["redirect_supported"], true);
    let [(k_sent, k_recv), (o_sent, o_recv)] = pings.map(Lab::ping_result);
    eprintln!(
        "drain: kyoto (REDIRECT) up at hub 2 after {:.1} s, {} of {k_sent} pings lost; \
         osaka (deleted, address moved) up at hub 2 after {:.1} s, {} of {o_sent} pings lost",
        at_hub2[0].unwrap().as_secs_f64(),
        k_sent - k_recv,
        at_hub2[1].unwrap().as_secs_f64(),
        o_sent - o_recv,
    );
    assert!(k_recv > 0 && o_recv > 0);

    // While hub 1 drains, a new IKE SA to it is redirected in its
    // IKE_SA_INIT response (RFC 5685 §3): kyoto, which knows hub 1, comes
    // up at hub 2 again.
    let out = lab.swanctl(0, &["--terminate", "--ike", "hub", "--timeout", "10"]);
    assert!(out.status.success(), "terminate: {out:?}");
    wait_for("kyoto down at hub 2", Duration::from_secs(20), || {
        !lab.up_at(1, "kyoto")
    });
    let out = lab.swanctl(0, &["--initiate", "--child", "net", "--timeout", "30"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("redirected to"), "initiate: {text}");
    wait_for("kyoto up at hub 2 again", Duration::from_secs(30), || {
        lab.up_at(1, "kyoto")
    });
    assert_eq!(lab.status(0)["hub"]["ike_sas"], 0);

    // Audited: the drain and one record per facility, by the operator.
    let audit = lab.must_renkei(0, &["audit", "show", "--json", "--tail", "500"]);
    let records: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of = |event: &str| records.iter().filter(|r| r["event"] == event).count();
    assert_eq!(of("hub.drain"), 1, "{audit}");
    assert_eq!(of("drain.facility"), 2, "{audit}");

    // Back to normal.
    lab.must_renkei(0, &["drain", "--cancel"]);
    assert_eq!(lab.status(0)["hub"]["draining"], false);

    // tshark: hub 1's packets dissect clean, and its REDIRECTs (the
    // INFORMATIONAL one decrypted with kyoto's keys, and the one answering
    // IKE_SA_INIT) are there.
    let verdict = capture.check("drain");
    let redirects = verdict
        .notifies_from_hub
        .iter()
        .filter(|t| **t == 16407)
        .count();
    eprintln!(
        "drain: tshark saw {redirects} REDIRECT notifies from hub 1 ({} IKE SAs keyed)",
        verdict.keyed_ike_sas
    );
    assert!(redirects >= 1, "{verdict:?}");
    if verdict.keyed_ike_sas > 0 {
        assert!(redirects >= 2, "{verdict:?}");
    }

    // A hub that is not running: exit status 3, as for other commands.
    if let Some(mut c) = lab.hubs[1].take() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    let out = lab.renkei(1, &["drain", "--to", HUB[0]]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}
