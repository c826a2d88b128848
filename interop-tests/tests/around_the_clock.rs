//! Tunnels that renew and recover by themselves, against real strongSwan:
//! rekeys under continuous traffic, a facility that dies and comes back,
//! and a hub restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role};
use std::time::{Duration, Instant};

const GCM: (&str, &str) = ("aes256gcm16-prfsha256-ecp256", "aes256gcm16-ecp256");
/// 100 seconds of traffic at 20 pings per second.
const PINGS: u32 = 2000;
/// Paced so that the transfer spans the whole 100 seconds.
const TRANSFER: u64 = 24 * 1024 * 1024;
const RATE: u64 = TRANSFER / 95;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Child SA rekeyed every 10-12 s and IKE SA every 22-25 s for 100 s by one
/// side, with a ping at 20/s and a paced TCP transfer running throughout.
fn rekeys_lose_nothing(facility: Facility) {
    let lab = Lab::start(facility);
    if lab.facility.role == Role::SwanInitiates {
        assert!(lab.swan_initiate());
    }
    lab.wait_up(Duration::from_secs(30));
    let ping = lab.spawn_ping(false, "0.05", PINGS);
    let (sent, received, bytes) = lab.transfer_at(false, TRANSFER, Some(RATE));
    let (tx, rx) = Lab::ping_result(ping);
    let f = lab.facility_status();
    eprintln!(
        "rekeys: {} Child SA, {} IKE SA; pings {rx}/{tx}; transfer {bytes} bytes; {f}",
        f["child_rekeys"], f["ike_rekeys"]
    );
    assert_eq!(tx, u64::from(PINGS));
    assert_eq!(rx, tx, "no ping lost across the rekeys");
    assert_eq!(bytes, TRANSFER);
    assert_eq!(sent, received, "SHA-256 matches across the rekeys");
    assert!(f["child_rekeys"].as_u64().unwrap() >= 7, "{f}");
    assert!(f["ike_rekeys"].as_u64().unwrap() >= 3, "{f}");
    assert_eq!(f["state"], "up");
    assert_eq!(
        f["child_sas"].as_array().unwrap().len(),
        1,
        "old Child SAs were deleted: {f}"
    );
    assert_eq!(lab.status()["hub"]["ike_sas"], 1);
    assert!(
        f["drops"].as_object().unwrap().get("integrity").is_none(),
        "{f}"
    );
}

#[test]
fn strongswan_rekeys_under_traffic() {
    let mut f = Facility::new(GCM.0, GCM.1, Role::SwanInitiates);
    f.swan_conn = s(&["rekey_time = 25s", "over_time = 5s", "rand_time = 3s"]);
    f.swan_child = s(&["rekey_time = 12s", "life_time = 18s", "rand_time = 2s"]);
    rekeys_lose_nothing(f);
}

#[test]
fn renkei_rekeys_under_traffic() {
    let mut f = Facility::new(GCM.0, GCM.1, Role::RenkeiInitiates);
    f.hub_peer_args = s(&[
        "--child-lifetime",
        "12",
        "--ike-lifetime",
        "25",
        "--esp",
        "aes256gcm16-ecp256",
    ]);
    rekeys_lose_nothing(f);
}

fn wait(lab: &Lab, what: &str, limit: Duration, f: impl Fn(&Lab) -> bool) -> Duration {
    let start = Instant::now();
    lab.wait_for(what, limit, f);
    start.elapsed()
}

/// DPD notices a dead facility; it comes back when strongSwan restarts;
/// after a hub restart it is back and passes traffic within 30 s.
fn dies_returns_and_survives_a_hub_restart(role: Role) {
    let mut f = Facility::new(GCM.0, GCM.1, role);
    f.swan_conn = s(&["dpd_delay = 5s"]);
    f.swan_child = s(&["close_action = start", "dpd_action = restart"]);
    f.hub_peer_args = s(&["--dpd", "10"]);
    f.serve_args = s(&["--retransmit-timeout", "1", "--retransmit-tries", "3"]);
    let mut lab = Lab::start(f);
    if role == Role::SwanInitiates {
        assert!(lab.swan_initiate());
    }
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.hub_route_present());
    assert!(lab.ping(false, 56, 3));

    lab.kill_charon();
    let down = wait(
        &lab,
        "the facility reported down",
        Duration::from_secs(40),
        |l| l.facility_status()["state"] != "up",
    );
    assert!(!lab.hub_route_present(), "the route goes with the facility");
    // 10 s of silence, then 1 + 2 + 4 s of retransmissions.
    eprintln!("facility declared down {down:?} after it died");
    assert!(down <= Duration::from_secs(25), "{down:?}");

    lab.start_charon();
    if role == Role::SwanInitiates {
        assert!(lab.swan_initiate());
    }
    let back = wait(&lab, "the facility back", Duration::from_secs(70), |l| {
        let f = l.facility_status();
        f["state"] == "up" && !f["child_sas"].as_array().unwrap().is_empty()
    });
    eprintln!("facility back {back:?} after strongSwan restarted");
    assert!(lab.ping(false, 56, 3));
    assert!(lab.ping(true, 1000, 3));

    let restarted = Instant::now();
    lab.restart_hub();
    lab.wait_up(Duration::from_secs(30));
    assert!(
        lab.ping(false, 56, 3),
        "traffic passes after the hub restarted"
    );
    let took = restarted.elapsed();
    eprintln!("facility back and passing traffic {took:?} after the hub restarted");
    assert!(took <= Duration::from_secs(30), "{took:?}");
    assert_eq!(lab.swan_sa_count(), 1);
}

#[test]
fn strongswan_initiated_facility_dies_returns_and_survives_a_hub_restart() {
    dies_returns_and_survives_a_hub_restart(Role::SwanInitiates);
}

#[test]
fn hub_initiated_facility_dies_returns_and_survives_a_hub_restart() {
    dies_returns_and_survives_a_hub_restart(Role::RenkeiInitiates);
}
