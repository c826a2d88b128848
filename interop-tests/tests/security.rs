//! Hostile input on the real network stack: a spoofed IKE_SA_INIT flood,
//! replayed ESP, garbage, and a facility claiming another's prefix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{must, Facility, Lab, Role, Topology, HUB_OUTER};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn swan() -> Facility {
    Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    )
}

fn rk_raw() -> PathBuf {
    renkei_interop_tests::xfer_bin().with_file_name("rk-raw")
}

fn drops(f: &serde_json::Value, reason: &str) -> u64 {
    f["drops"][reason].as_u64().unwrap_or(0)
}

#[test]
fn spoofed_init_flood_while_a_facility_connects_and_another_keeps_pinging() {
    let lab = Lab::start_sites(Topology::Nat, vec![swan(), swan()]);
    assert!(lab.swan_initiate_of(0));
    lab.wait_up_of(0, Duration::from_secs(30));
    let ping = lab.spawn_ping(false, "0.05", 300);
    // 40 000 IKE_SA_INIT requests at 4000/s from 128 spoofed addresses, sent
    // from inside the NAT router towards the hub.
    let nat = lab.nat_ns.clone().unwrap();
    let flood = Command::new("ip")
        .args(["netns", "exec", &nat])
        .arg(rk_raw())
        .args(["flood", HUB_OUTER, "203.0.113.128/25", "40000", "4000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let during = lab.status()["hub"]["half_open_ike_sas"].as_u64().unwrap();
    // Facility B connects in the middle of the flood (through a cookie).
    assert!(
        lab.swan_initiate_of(1),
        "a facility connects during the flood"
    );
    lab.wait_up_of(1, Duration::from_secs(30));
    let flooded = flood.wait_with_output().unwrap();
    let (sent, received) = Lab::ping_result(ping);
    eprintln!(
        "flood {}; half-open during it: {during}; facility A pings {received}/{sent}",
        String::from_utf8_lossy(&flooded.stdout).trim()
    );
    assert!(
        during <= 50,
        "cookies hold the half-open state at the threshold: {during}"
    );
    assert_eq!(received, sent, "the established tunnel lost nothing");
    assert!(lab.ping_with(1, true, false, 56, 3), "B passes traffic");
    assert_eq!(
        lab.status()["hub"]["ike_sas"].as_u64().unwrap(),
        2 + lab.status()["hub"]["half_open_ike_sas"].as_u64().unwrap()
    );
}

#[test]
fn replayed_esp_is_never_delivered_twice() {
    let lab = Lab::start(swan());
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    // Capture the facility's ESP while it pings the hub.
    let pcap = lab.dir.join("esp.pcap");
    let veth = format!("rks{}", lab.id);
    let mut tcpdump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.site_ns,
            "tcpdump",
            "-i",
            &veth,
            "-U",
            "-w",
        ])
        .arg(&pcap)
        .args([format!("udp and dst host {HUB_OUTER} and dst port 4500")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(lab.ping(false, 56, 3));
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").arg(tcpdump.id().to_string()).status();
    let _ = tcpdump.wait();
    let before = lab.facility_status();
    let out = must(
        Command::new("ip")
            .args(["netns", "exec", &lab.site_ns])
            .arg(rk_raw())
            .arg("replay")
            .arg(&pcap)
            .arg("5"),
    );
    let replay: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let after = lab.facility_status();
    let replayed = replay["sent"].as_u64().unwrap();
    eprintln!(
        "replayed {out}; replay drops {} → {}",
        drops(&before, "replay"),
        drops(&after, "replay")
    );
    assert!(replay["captured"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(
        after["packets_in"], before["packets_in"],
        "nothing replayed was delivered"
    );
    assert_eq!(
        drops(&after, "replay") - drops(&before, "replay"),
        replayed,
        "every replay counted: {after} hub {}",
        lab.status()["hub"]
    );
    assert!(lab.ping(false, 56, 3), "the tunnel is unharmed");
}

#[test]
fn truncated_and_corrupted_packets_are_dropped_and_counted() {
    let lab = Lab::start(swan());
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let out = must(
        Command::new("ip")
            .args(["netns", "exec", &lab.site_ns])
            .arg(rk_raw())
            .args(["garbage", HUB_OUTER, "4000"]),
    );
    std::thread::sleep(Duration::from_millis(500));
    let hub = lab.status()["hub"].clone();
    eprintln!(
        "garbage {}; hub drops {}",
        out.trim(),
        hub["unattributed_drops"]
    );
    assert!(
        hub["unattributed_drops"]["no_sa"].as_u64().unwrap_or(0) > 0,
        "{hub}"
    );
    assert_eq!(
        hub["ike_sas"].as_u64().unwrap(),
        1 + hub["half_open_ike_sas"].as_u64().unwrap()
    );
    assert!(lab.ping(false, 1000, 3), "the tunnel still works");
    assert!(lab.ping(true, 1000, 3));
    let (sent, received, _) = lab.transfer(false, 5 * 1024 * 1024);
    assert_eq!(sent, received);
}

#[test]
fn a_facility_claiming_another_facilitys_prefix_is_refused() {
    let mut intruder = swan();
    // Osaka claims Kyoto's LAN as its own.
    intruder.swan_local_ts = Some("198.51.100.0/26".into());
    let lab = Lab::start_sites(Topology::Nat, vec![swan(), intruder]);
    assert!(lab.swan_initiate_of(0));
    lab.wait_up_of(0, Duration::from_secs(30));
    assert!(!lab.swan_initiate_of(1), "no Child SA for a foreign prefix");
    let out = std::fs::read_to_string(lab.sites[1].dir.join("initiate.out")).unwrap();
    assert!(out.contains("TS_UNACCEPTABLE"), "{out}");
    let osaka = lab.status_of("osaka");
    assert!(osaka["child_sas"].as_array().unwrap().is_empty(), "{osaka}");
    let routes =
        must(Command::new("ip").args(["-n", &lab.hub_ns, "route", "show", "198.51.100.0/26"]));
    assert_eq!(routes.lines().count(), 1, "only Kyoto's route: {routes}");
    assert!(lab.ping_with(0, true, false, 56, 3), "Kyoto is unaffected");
}

#[test]
fn inner_sources_outside_the_selectors_are_dropped_and_counted() {
    let mut lab = Lab::start(swan());
    // A facility router turned hostile: right identity and key, forged
    // inner sources (198.51.100.200 belongs to another facility's range).
    lab.kill_charon();
    let evil = renkei_interop_tests::xfer_bin().with_file_name("rk-evil");
    let out = must(
        Command::new("ip")
            .args(["netns", "exec", &lab.site_ns])
            .arg(evil)
            .args([
                HUB_OUTER,
                "kyoto.example",
                renkei_interop_tests::PSK,
                renkei_interop_tests::SITE_NET,
                renkei_interop_tests::HUB_NET,
                "198.51.100.200",
                renkei_interop_tests::SITE_INNER,
                renkei_interop_tests::HUB_INNER,
                "50",
            ]),
    );
    std::thread::sleep(Duration::from_millis(500));
    let f = lab.facility_status();
    eprintln!("{}; kyoto drops {}", out.trim(), f["drops"]);
    assert_eq!(
        drops(&f, "policy"),
        50,
        "every forged packet dropped and counted: {f}"
    );
    assert_eq!(
        f["packets_in"], 1,
        "only the honest packet was delivered: {f}"
    );
}
