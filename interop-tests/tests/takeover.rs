//! A hub killed (SIGKILL) and started again brings its facilities back by
//! initiating to them at once, through their NAT mappings, instead of
//! leaving them down until their own dead-peer detection (issue #17 item
//! 4). Against real strongSwan behind a NAT router namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role, Topology, NAT_PUBLIC};
use serde_json::Value;
use std::time::{Duration, Instant};

const GCM: (&str, &str) = ("aes256gcm16-prfsha256-ecp256", "aes256gcm16");

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The audit records of `kind` about `facility`, oldest first.
fn audit(lab: &Lab, kind: &str, facility: &str) -> Vec<Value> {
    std::fs::read_to_string(lab.dir.join("hub/audit.log"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"] == kind && r["details"]["facility"] == facility)
        .map(|r| r["details"].clone())
        .collect()
}

/// Waits until the hub has written the facility's last known address.
fn wait_recorded(lab: &Lab) {
    lab.wait_for(
        "the last known address recorded",
        Duration::from_secs(20),
        |l| {
            l.hub_log()
                .contains("recorded the facilities' last known addresses")
        },
    );
}

/// A facility behind NAT that only ever initiates, with the hub's own
/// liveness checks out of the way: after the hub is SIGKILLed, nothing
/// but the restarted hub's initiation can bring it back soon.
fn facility() -> Facility {
    let mut f = Facility::new(GCM.0, GCM.1, Role::SwanInitiates);
    // Its own dead-peer detection would take minutes.
    f.swan_conn = s(&["dpd_delay = 300s"]);
    f.hub_peer_args = s(&["--dpd", "600"]);
    f
}

fn first_ping_after(lab: &Lab, since: Instant, limit: Duration) -> Duration {
    let deadline = since + limit;
    while Instant::now() < deadline {
        if lab.ping(false, 56, 1) {
            return since.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.dump_logs();
    panic!("no ping through within {limit:?}");
}

#[test]
fn a_killed_hub_initiates_at_once_to_a_facility_behind_nat() {
    let mut lab = Lab::start_sites(Topology::Nat, vec![facility()]);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let before = lab.status_of("kyoto");
    assert!(
        before["remote"].as_str().unwrap().starts_with(NAT_PUBLIC),
        "{before}"
    );
    assert!(lab.ping(false, 56, 3));
    wait_recorded(&lab);

    // Pings at 10 a second run across the kill and the restart.
    let pinger = lab.spawn_ping(false, "0.1", 300);
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    lab.kill_hub();
    lab.respawn_hub();
    let took = first_ping_after(&lab, killed, Duration::from_secs(120));
    lab.wait_up(Duration::from_secs(30));
    let (tx, rx) = Lab::ping_result(pinger);
    eprintln!(
        "SIGKILL → first ping through again: {:.2} s; pings lost {} of {tx} (10 a second)",
        took.as_secs_f64(),
        tx - rx
    );

    // The hub initiated, to the NAT mapping, once.
    let re = audit(&lab, "sa.reinitiate", "kyoto");
    assert_eq!(re.len(), 1, "{re:?}");
    let ups = audit(&lab, "sa.ike_up", "kyoto");
    let d = ups.last().unwrap();
    assert_eq!(d["hub_initiated"], true, "{d}");
    assert!(d["remote"].as_str().unwrap().starts_with(NAT_PUBLIC), "{d}");
    assert!(audit(&lab, "sa.reinitiate_failed", "kyoto").is_empty());
    // No duplicate SAs on either side: INITIAL_CONTACT made strongSwan
    // drop the IKE SA it held with the killed hub.
    lab.wait_for("one IKE SA at the facility", Duration::from_secs(30), |l| {
        l.swan_sa_count() == 1
    });
    let out = lab.swanctl(&["--list-sas", "--raw"]);
    let sas = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(sas.matches("state=INSTALLED").count(), 1, "{sas}");
    let st = lab.status();
    assert_eq!(st["hub"]["ike_sas"], 1, "{st}");
    let f = lab.facility_status();
    assert_eq!(f["state"], "up");
    assert_eq!(f["child_sas"].as_array().unwrap().len(), 1, "{f}");
    assert!(lab.ping(true, 1000, 3), "the hub reaches the facility too");
}

#[test]
fn a_facility_that_does_not_accept_the_hub_falls_back_to_its_own_reconnect() {
    let mut f = facility();
    // strongSwan drops every IKE_SA_INIT it is sent while it holds an IKE
    // SA (the stale one with the killed hub): the hub's attempt is never
    // answered. Its own dead-peer detection (short here) then reconnects.
    f.swan_charon = s(&["ikesa_limit = 1"]);
    f.swan_conn = s(&["dpd_delay = 5s"]);
    f.swan_child = s(&["dpd_action = restart"]);
    f.serve_args = s(&["--retransmit-timeout", "0.5", "--retransmit-tries", "3"]);
    let mut lab = Lab::start_sites(Topology::Nat, vec![f]);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    wait_recorded(&lab);

    let killed = Instant::now();
    lab.kill_hub();
    lab.respawn_hub();
    lab.wait_for("the hub's attempt given up", Duration::from_secs(60), |l| {
        !audit(l, "sa.reinitiate_failed", "kyoto").is_empty()
    });
    let failed = audit(&lab, "sa.reinitiate_failed", "kyoto");
    eprintln!(
        "the hub gave up after {:.1} s: {failed:?}",
        killed.elapsed().as_secs_f64()
    );
    // The facility's own reconnect needs its liveness check to fail first
    // (5 s idle, then about 20 s of retransmissions): until then the
    // status says why the facility is down (in the hub's language; the
    // address is in every one).
    let f = lab.facility_status();
    let remote = failed[0]["remote"].as_str().unwrap();
    assert!(remote.starts_with(NAT_PUBLIC), "{remote}");
    assert_eq!(f["state"], "down", "{f}");
    assert!(
        f["last_error"].as_str().unwrap_or("").contains(remote),
        "{f}"
    );
    let took = first_ping_after(&lab, killed, Duration::from_secs(120));
    lab.wait_up(Duration::from_secs(30));
    eprintln!(
        "SIGKILL → first ping through again by the facility's own reconnect: {:.2} s",
        took.as_secs_f64()
    );
    // One attempt, not repeated: no storm.
    assert_eq!(audit(&lab, "sa.reinitiate", "kyoto").len(), 1);
    assert_eq!(audit(&lab, "sa.reinitiate_failed", "kyoto").len(), 1);
    let ups = audit(&lab, "sa.ike_up", "kyoto");
    let d = ups.last().unwrap();
    assert_eq!(
        d["hub_initiated"], false,
        "the facility came back itself: {d}"
    );
    lab.wait_for("one IKE SA at the facility", Duration::from_secs(30), |l| {
        l.swan_sa_count() == 1
    });
    assert_eq!(lab.status()["hub"]["ike_sas"], 1);
    assert!(lab.ping(false, 56, 3));
}
