//! The data plane's parallel workers against real strongSwan, and the
//! guards that keep a second hub off a running hub's TUN device and ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{must, renkei_bin, run, Facility, Lab, Role, Topology};
use std::process::Command;
use std::time::Duration;

const GCM: (&str, &str) = ("aes256gcm16-prfsha256-ecp256", "aes256gcm16");
const TRANSFER: u64 = 16 * 1024 * 1024;

fn swan() -> Facility {
    Facility::new(GCM.0, GCM.1, Role::SwanInitiates)
}

#[test]
fn four_workers_carry_two_facilities_both_ways_at_once() {
    let mut first = swan();
    first.serve_args = vec!["--workers".into(), "4".into()];
    let lab = Lab::start_sites(Topology::Nat, vec![first, swan()]);
    // One TUN queue per worker.
    let queues = must(Command::new("ip").args([
        "netns",
        "exec",
        &lab.hub_ns,
        "ls",
        &format!("/sys/class/net/{}/queues", lab.tun),
    ]));
    for q in 0..4 {
        assert!(queues.contains(&format!("rx-{q}")), "queues: {queues}");
    }
    assert!(!queues.contains("rx-4"), "queues: {queues}");
    assert!(lab.hub_log().contains("workers=4"), "{}", lab.hub_log());
    assert!(lab.swan_initiate_of(0));
    assert!(lab.swan_initiate_of(1));
    lab.wait_up_of(0, Duration::from_secs(30));
    lab.wait_up_of(1, Duration::from_secs(30));
    // Five TCP transfers at once, to and from both facilities (two from
    // the hub to kyoto, which the TUN device may hand to two workers):
    // whichever workers their packets meet, every byte arrives once and in
    // order, and each SA's ESP leaves the hub in sequence-number order
    // (tshark flags any packet numbered below one sent before it).
    let capture = lab.capture();
    std::thread::scope(|s| {
        let runs: Vec<_> = [
            (0, true, 5001),
            (0, true, 5011),
            (0, false, 5001),
            (1, true, 5002),
            (1, false, 5002),
        ]
        .into_iter()
        .map(|(site, from_hub, port)| {
            let lab = &lab;
            s.spawn(move || {
                let (sent, received, n) = lab.transfer_on_port(site, from_hub, port, TRANSFER);
                assert_eq!(n, TRANSFER, "bytes (site {site}, from hub {from_hub})");
                assert_eq!(sent, received, "SHA-256 (site {site}, from hub {from_hub})");
            })
        })
        .collect();
        for r in runs {
            r.join().unwrap();
        }
    });
    capture.check("four workers, five transfers");
    for name in ["kyoto", "osaka"] {
        let drops = lab.status_of(name)["drops"].clone();
        assert!(
            drops.get("replay").is_none() && drops.get("integrity").is_none(),
            "{name}: {drops}"
        );
    }
}

#[test]
fn a_second_hub_cannot_take_the_tun_device_or_the_ports() {
    let lab = Lab::start(swan());
    // A second hub of its own (another state directory).
    let other = lab.dir.join("other-hub");
    let renkei = |args: &[&str]| {
        run(Command::new("ip")
            .args(["netns", "exec", &lab.hub_ns])
            .arg(renkei_bin())
            .arg("--state")
            .arg(&other)
            .args(args)
            .env("LC_ALL", "C"))
    };
    let init = renkei(&[
        "init",
        "--hub-id",
        "other.example",
        "--public-addr",
        lab.hub_outer(),
    ]);
    assert!(init.status.success(), "{init:?}");
    let refused = |args: &[&str], why: &str| {
        let mut all = vec!["serve", "--listen", lab.hub_outer()];
        all.extend(args);
        let out = renkei(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "second hub started: {err}");
        assert!(err.contains(why), "expected '{why}' in: {err}");
    };
    // The running hub's TUN device: refused, not joined as another queue.
    refused(&["--tun", &lab.tun], "already exists");
    // Its IKE port (and so the NAT-T port group behind it).
    let tun = format!("{}x", lab.tun);
    refused(&["--tun", &tun], "binding UDP");
    // Refused after it had made its own TUN device: nothing is left behind.
    let leftover = run(Command::new("ip").args(["-n", &lab.hub_ns, "link", "show", &tun]));
    assert!(!leftover.status.success(), "{tun} left behind");
    // The first hub is untouched and still carries traffic.
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(true, 1000, 3));
}
