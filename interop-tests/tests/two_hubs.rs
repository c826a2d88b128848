//! Two hubs, active/standby with keepalived (VRRP on a bridge) and one
//! registry, and three strongSwan facilities (one behind NAT) pinging a
//! server behind the hubs through their tunnels: the active hub killed,
//! its link cut, and the old active hub coming back. Each case prints,
//! per facility, the time from the fault to the first ping through again
//! and the pings lost (`FAILOVER` lines); no time is asserted.
//!
//! The registry is in PostgreSQL (a cluster of the test's own, Debian's
//! PostgreSQL 15 run as the `postgres` user; both hubs reach it over its
//! Unix socket, which network namespaces do not separate). The split-brain
//! case at the end shares a SQLite file instead, which it moves aside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::ha::{fault_now, Pair, SharedRegistry};
use renkei_interop_tests::postgres::PgCluster;
use renkei_interop_tests::{must, renkei_bin, run};
use std::process::Command;
use std::time::Duration;

/// A PostgreSQL cluster for one case, and the registry URL both hubs use.
/// Declared before the pair, so the pair's hubs stop before it does.
fn registry() -> (PgCluster, SharedRegistry) {
    let pg = PgCluster::start();
    let url = pg.url();
    (pg, SharedRegistry::Url(url))
}

/// How long each case pings, from just before the fault.
const PING_SECS: u32 = 60;

/// Prints each facility's outage, and appends it to
/// `target/tmp/failover.txt`, so the figures of a whole-suite run (whose
/// output the test harness keeps to itself) can be read afterwards.
fn report(case: &str, outages: Vec<renkei_interop_tests::ha::Outage>) {
    use std::io::Write as _;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("failover.txt");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok();
    for o in outages {
        eprintln!("FAILOVER {case}: {o}");
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "FAILOVER {case}: {o}");
        }
    }
}

/// The old active hub comes back (restarted, or its link up again): it
/// stays standby, the active hub keeps the lease and its epoch, and no
/// ping is lost while it returns.
fn returns_without_flapping(pair: &Pair, active: usize, case: &str) {
    let old = 1 - active;
    let epoch = pair.status(active).unwrap()["ha"]["lease_epoch"].clone();
    let t = fault_now();
    let pings: Vec<_> = (0..pair.sites.len())
        .map(|i| pair.spawn_pings(i, 20))
        .collect();
    pair.wait_for(
        "the old hub back as standby",
        Duration::from_secs(30),
        |p| p.status(old).is_some_and(|s| s["ha"]["vrrp"] == "backup"),
    );
    // Ten seconds in which nothing may move.
    std::thread::sleep(Duration::from_secs(10));
    let outages: Vec<_> = pings.into_iter().map(|p| p.finish(t)).collect();
    report(case, outages);
    let st = pair.status(active).unwrap();
    assert_eq!(st["ha"]["role"], "active", "{st}");
    assert_eq!(st["ha"]["lease_epoch"], epoch, "no new lease: {st}");
    assert_eq!(pair.role(old).as_deref(), Some("standby"));
    pair.check_no_duplicates(active);
    for i in 0..pair.sites.len() {
        assert!(pair.ping(i, 3), "{} after the return", pair.sites[i].name);
    }
}

#[test]
fn the_active_hub_killed_then_restarted() {
    let (_pg, registry) = registry();
    let mut pair = Pair::start(registry);
    let a = pair.wait_active(Duration::from_secs(5));
    for i in 0..pair.sites.len() {
        assert!(pair.ping(i, 3), "{} before the fault", pair.sites[i].name);
    }
    pair.check_no_duplicates(a);
    let b = 1 - a;

    let pings: Vec<_> = (0..pair.sites.len())
        .map(|i| pair.spawn_pings(i, PING_SECS))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let t = fault_now();
    pair.kill_hub(a);
    pair.wait_for("the other hub active", Duration::from_secs(30), |p| {
        p.role(b).as_deref() == Some("active")
    });
    pair.wait_all_up(b, Duration::from_secs(90));
    let outages: Vec<_> = pings.into_iter().map(|p| p.finish(t)).collect();
    report("SIGKILL of the active hub", outages);
    let st = pair.status(b).unwrap();
    assert_eq!(
        st["ha"]["lease_holder"],
        pair.nodes[b].name.as_str(),
        "{st}"
    );
    for i in 0..pair.sites.len() {
        assert!(pair.ping(i, 3), "{} after the failover", pair.sites[i].name);
    }
    pair.check_no_duplicates(b);

    pair.start_hub(a);
    returns_without_flapping(&pair, b, "the killed hub restarted");
}

#[test]
fn the_active_hubs_link_cut_then_restored() {
    let (_pg, registry) = registry();
    let pair = Pair::start(registry);
    let a = pair.wait_active(Duration::from_secs(5));
    let b = 1 - a;
    // keepalived's notify hooks can reach a hub out of order (a "master"
    // after the "backup" that followed it): the standby, told MASTER while
    // the other hub holds the virtual address, takes itself as BACKUP
    // again, and the active hub keeps its lease.
    let epoch = pair.status(a).unwrap()["ha"]["lease_epoch"].clone();
    let out = pair.renkei(b, &["ha", "notify", "master"]);
    assert!(out.status.success(), "{out:?}");
    pair.wait_for(
        "the standby told MASTER back to BACKUP",
        Duration::from_secs(10),
        |p| p.status(b).is_some_and(|s| s["ha"]["vrrp"] == "backup"),
    );
    let st = pair.status(a).unwrap();
    assert_eq!(st["ha"]["role"], "active", "{st}");
    assert_eq!(st["ha"]["lease_epoch"], epoch, "{st}");
    assert_eq!(pair.role(b).as_deref(), Some("standby"));
    let pings: Vec<_> = (0..pair.sites.len())
        .map(|i| pair.spawn_pings(i, PING_SECS))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let t = fault_now();
    pair.set_link(a, false);
    pair.wait_for("the other hub active", Duration::from_secs(30), |p| {
        p.role(b).as_deref() == Some("active")
    });
    // The cut hub stepped down: keepalived put it in FAULT.
    let st = pair.status(a).unwrap();
    assert_eq!(st["ha"]["role"], "standby", "{st}");
    assert_eq!(st["ha"]["vrrp"], "fault", "{st}");
    assert_eq!(st["hub"]["child_sas"], 0, "{st}");
    pair.wait_all_up(b, Duration::from_secs(90));
    let outages: Vec<_> = pings.into_iter().map(|p| p.finish(t)).collect();
    report("the active hub's link cut", outages);
    pair.check_no_duplicates(b);

    pair.set_link(a, true);
    returns_without_flapping(&pair, b, "the cut link restored");
}

/// The second hub starts only with the cluster key that opens the
/// registry's sealed hub key: without it, or with another cluster's, it
/// stops at once with one line naming the key.
#[test]
fn a_missing_or_wrong_cluster_key_stops_the_second_hub() {
    let dir = std::env::temp_dir().join(format!("renkei-ha-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b, other) = (dir.join("a"), dir.join("b"), dir.join("other"));
    let renkei = |state: &std::path::Path, args: &[&str]| {
        run(Command::new(renkei_bin())
            .arg("--state")
            .arg(state)
            .args(args)
            .env("LC_ALL", "C"))
    };
    for s in [&a, &other] {
        must(Command::new(renkei_bin()).arg("--state").arg(s).args([
            "init",
            "--hub-id",
            "hub.example",
        ]));
        must(
            Command::new(renkei_bin())
                .arg("--state")
                .arg(s)
                .args(["hub", "seal"]),
        );
    }
    std::fs::create_dir_all(&b).unwrap();
    std::os::unix::fs::symlink(a.join("registry.db"), b.join("registry.db")).unwrap();
    // On a virtual address this host does not have (yet).
    let serve = [
        "serve",
        "--node",
        "b",
        "--listen",
        "192.0.2.1",
        "--tun",
        "rkhakey0",
    ];
    let first_line = |out: &std::process::Output| {
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{e}");
        let lines: Vec<&str> = e
            .lines()
            .filter(|l| l.starts_with("renkei: error:"))
            .collect();
        assert_eq!(lines.len(), 1, "{e}");
        lines[0].to_string()
    };
    let missing = first_line(&renkei(&b, &serve));
    assert!(
        missing.contains("cluster-key:") && missing.contains("does not exist"),
        "{missing}"
    );
    std::fs::copy(other.join("cluster.key"), b.join("cluster.key")).unwrap();
    let wrong = first_line(&renkei(&b, &serve));
    assert!(
        wrong.contains("cluster-key:") && wrong.contains("does not open the hub's key"),
        "{wrong}"
    );
    // The right key: hub b runs, standby until keepalived says more.
    std::fs::copy(a.join("cluster.key"), b.join("cluster.key")).unwrap();
    let ns = NetNs::new(&format!("rkhk-{}", std::process::id()));
    must(Command::new("ip").args([
        "netns",
        "exec",
        &ns.0,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_nonlocal_bind=1",
    ]));
    let mut hub = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(renkei_bin())
        .arg("--state")
        .arg(&b)
        .args(serve)
        .stderr(std::fs::File::create(dir.join("b.log")).unwrap())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..100 {
        let out = renkei(&b, &["status", "--json"]);
        if out.status.success() {
            status = Some(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status.unwrap_or_else(|| {
        panic!(
            "hub b did not start: {}",
            std::fs::read_to_string(dir.join("b.log")).unwrap_or_default()
        )
    });
    assert_eq!(status["ha"]["node"], "b", "{status}");
    assert_eq!(status["ha"]["role"], "standby", "{status}");
    assert_eq!(status["ha"]["vrrp"], "unknown", "{status}");
    // keepalived adds the virtual address only on the master: a hub that
    // started after keepalived made its node master is not told again,
    // and finds the address on its host instead (the lease is free: it
    // becomes active).
    must(Command::new("ip").args(["-n", &ns.0, "addr", "add", "192.0.2.1/32", "dev", "lo"]));
    let mut active = None;
    for _ in 0..100 {
        let out = renkei(&b, &["status", "--json"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if s["ha"]["role"] == "active" {
            active = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = hub.kill();
    let _ = hub.wait();
    let active = active.expect("hub b active once the virtual address is on its host");
    assert_eq!(active["ha"]["vrrp"], "master", "{active}");
    assert_eq!(active["ha"]["lease_holder"], "b", "{active}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A network namespace deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new(name: &str) -> NetNs {
        must(Command::new("ip").args(["netns", "add", name]));
        must(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
        NetNs(name.to_string())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The registry away for longer than a lease (PostgreSQL stopped): the
/// active hub keeps its role and every tunnel, says the
/// registry does not answer, and renews the same lease when it is back.
#[test]
fn a_registry_outage_keeps_the_active_hubs_tunnels() {
    let (pg, registry) = registry();
    let pair = Pair::start(registry);
    let a = pair.wait_active(Duration::from_secs(5));
    let epoch = pair.status(a).unwrap()["ha"]["lease_epoch"].clone();
    let pings: Vec<_> = (0..pair.sites.len())
        .map(|i| pair.spawn_pings(i, 20))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let t = fault_now();
    pg.stop();
    pair.wait_for("the outage noticed", Duration::from_secs(10), |p| {
        p.status(a)
            .is_some_and(|s| !s["ha"]["registry_error"].is_null())
    });
    // Three leases long.
    std::thread::sleep(Duration::from_secs(9));
    let st = pair.status(a).unwrap();
    assert_eq!(st["ha"]["role"], "active", "{st}");
    assert_eq!(st["hub"]["child_sas"], pair.sites.len(), "{st}");
    assert_eq!(pair.role(1 - a).as_deref(), Some("standby"));
    pg.start_again();
    pair.wait_for(
        "the registry answering again",
        Duration::from_secs(10),
        |p| {
            p.status(a)
                .is_some_and(|s| s["ha"]["registry_error"].is_null())
        },
    );
    let outages: Vec<_> = pings.into_iter().map(|p| p.finish(t)).collect();
    for o in &outages {
        assert_eq!(o.sent, o.received, "no ping lost: {o}");
    }
    report("the registry away for 10 s", outages);
    let st = pair.status(a).unwrap();
    assert_eq!(
        st["ha"]["lease_epoch"], epoch,
        "the same lease, renewed: {st}"
    );
    pair.check_no_duplicates(a);
}

/// Both hubs told they are VRRP master (a split: neither hears the
/// other): the lease makes exactly one active. When that one is told it
/// is backup, it steps down and gives the lease back, and the other takes
/// it at once, with a new epoch.
#[test]
fn the_lease_decides_when_both_hubs_are_master() {
    let dir = std::env::temp_dir().join(format!("renkei-ha-split-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let renkei = |state: &std::path::Path, args: &[&str]| {
        run(Command::new(renkei_bin())
            .arg("--state")
            .arg(state)
            .args(args)
            .env("LC_ALL", "C"))
    };
    must(Command::new(renkei_bin()).arg("--state").arg(&a).args([
        "init",
        "--hub-id",
        "hub.example",
    ]));
    must(
        Command::new(renkei_bin())
            .arg("--state")
            .arg(&a)
            .args(["hub", "seal"]),
    );
    std::fs::create_dir_all(&b).unwrap();
    std::os::unix::fs::symlink(a.join("registry.db"), b.join("registry.db")).unwrap();
    std::fs::copy(a.join("cluster.key"), b.join("cluster.key")).unwrap();
    let pid = std::process::id();
    let spaces = [
        NetNs::new(&format!("rkhsa-{pid}")),
        NetNs::new(&format!("rkhsb-{pid}")),
    ];
    let hubs: Vec<Hub> = [(&a, "a"), (&b, "b")]
        .iter()
        .zip(&spaces)
        .map(|((state, node), ns)| {
            Hub(Command::new("ip")
                .args(["netns", "exec", &ns.0])
                .arg(renkei_bin())
                .arg("--state")
                .arg(state)
                .args([
                    "serve",
                    "--node",
                    node,
                    "--listen",
                    "127.0.0.1",
                    "--tun",
                    "rkhs0",
                ])
                .stderr(std::fs::File::create(dir.join(format!("{node}.log"))).unwrap())
                .spawn()
                .unwrap())
        })
        .collect();
    let status = |state: &std::path::Path| -> Option<serde_json::Value> {
        let out = renkei(state, &["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        for _ in 0..100 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}: a: {}\nb: {}",
            std::fs::read_to_string(dir.join("a.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("b.log")).unwrap_or_default()
        );
    };
    wait("both hubs", &|| {
        status(&a).is_some() && status(&b).is_some()
    });
    for s in [&a, &b] {
        let out = renkei(s, &["ha", "notify", "master"]);
        assert!(out.status.success(), "{out:?}");
    }
    let role = |s: &std::path::Path| {
        status(s).unwrap()["ha"]["role"]
            .as_str()
            .unwrap()
            .to_string()
    };
    wait("one active hub", &|| {
        (role(&a) == "active") != (role(&b) == "active")
    });
    // Three leases long: it stays that way.
    std::thread::sleep(Duration::from_secs(9));
    let (active, standby) = if role(&a) == "active" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(role(standby), "standby");
    let st = status(active).unwrap();
    let epoch = st["ha"]["lease_epoch"].as_i64().unwrap();
    assert_eq!(st["ha"]["lease_holder"], st["ha"]["node"], "{st}");
    let out = renkei(active, &["ha", "notify", "backup"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("standby"),
        "{out:?}"
    );
    wait("the other hub active", &|| role(standby) == "active");
    let st = status(standby).unwrap();
    assert_eq!(st["ha"]["lease_epoch"].as_i64().unwrap(), epoch + 1, "{st}");
    assert_eq!(role(active), "standby");
    // Stopped cleanly, the active hub gives its lease back on the way out.
    let now_active = if standby == &a { 0 } else { 1 };
    let pid = hubs[now_active].0.id().to_string();
    must(Command::new("kill").args(["-TERM", &pid]));
    let log = dir.join(if now_active == 0 { "a.log" } else { "b.log" });
    wait("the hub stopped, its lease released", &|| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("lease released")
    });
    drop(hubs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hub process stopped on drop.
struct Hub(std::process::Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
