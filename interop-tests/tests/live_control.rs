//! Operators change the running hub: facility A's traffic goes on without a
//! lost packet while facility B is changed, disabled, enabled and removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role, Topology};
use std::process::Command;
use std::time::Duration;

#[test]
fn other_facilities_are_untouched_by_changes() {
    let swan = || {
        Facility::new(
            "aes256gcm16-prfsha256-ecp256",
            "aes256gcm16",
            Role::SwanInitiates,
        )
    };
    let lab = Lab::start_sites(Topology::Nat, vec![swan(), swan()]);
    assert!(lab.swan_initiate_of(0));
    assert!(lab.swan_initiate_of(1));
    lab.wait_up_of(0, Duration::from_secs(30));
    lab.wait_up_of(1, Duration::from_secs(30));
    let kyoto_before = lab.status_of("kyoto");

    // Facility A (kyoto) pings the hub 20 times a second throughout.
    let ping = lab.spawn_ping(false, "0.05", 300);

    let step = |args: &[&str]| {
        let out = lab.renkei(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("applied to the running hub"),
            "{args:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    // A lifetime change leaves B's tunnel alone…
    step(&["peer", "set", "osaka", "--child-lifetime", "600"]);
    assert_eq!(lab.status_of("osaka")["state"], "up");
    // …a selector change restarts it (narrowed to its new prefix)…
    step(&["peer", "set", "osaka", "--remote-ts", "198.51.100.64/27"]);
    assert!(lab.swan_initiate_of(1));
    lab.wait_up_of(1, Duration::from_secs(30));
    assert_eq!(
        lab.status_of("osaka")["child_sas"][0]["remote_ts"],
        "198.51.100.64/27"
    );
    // …disabling takes it down and refuses it…
    step(&["peer", "disable", "osaka"]);
    assert_eq!(lab.status_of("osaka")["state"], "disabled");
    assert!(!lab.swan_initiate_of(1), "a disabled facility is refused");
    step(&["peer", "enable", "osaka"]);
    assert!(lab.swan_initiate_of(1));
    lab.wait_up_of(1, Duration::from_secs(30));
    // …and removing it deletes its SAs and its route.
    step(&["peer", "remove", "osaka"]);
    assert!(lab.status()["facilities"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["name"] != "osaka"));
    let routes = renkei_interop_tests::must(Command::new("ip").args([
        "-n",
        &lab.hub_ns,
        "route",
        "show",
        "198.51.100.64/27",
    ]));
    assert!(routes.trim().is_empty(), "B's route is gone: {routes}");

    let (sent, received) = Lab::ping_result(ping);
    eprintln!(
        "facility A: {received}/{sent} pings while B was changed, disabled, enabled and removed"
    );
    assert_eq!(sent, 300);
    assert_eq!(received, sent, "facility A lost nothing");
    let kyoto_after = lab.status_of("kyoto");
    assert_eq!(kyoto_after["state"], "up");
    assert_eq!(
        kyoto_after["since"], kyoto_before["since"],
        "A's tunnel was never renewed"
    );
    // The same Child SAs (their counters moved with the pings).
    let sas = |f: &serde_json::Value| -> Vec<(String, String, String)> {
        f["child_sas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["spi_in"].to_string(),
                    c["spi_out"].to_string(),
                    c["established"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(sas(&kyoto_after), sas(&kyoto_before));
    assert!(lab.renkei(&["audit", "verify"]).status.success());
    let audit = std::fs::read_to_string(lab.dir.join("hub/audit.log")).unwrap();
    for event in [
        "peer.change",
        "peer.disable",
        "peer.enable",
        "peer.remove",
        "hub.reload",
    ] {
        assert!(
            audit.contains(&format!("\"event\":\"{event}\"")),
            "{event} audited"
        );
    }
}
