//! `renkei reload` (`systemctl reload renkei`, the unit's ExecReload,
//! issue #19 item 2): a registry change the running hub missed — made
//! while its control socket was out of reach — takes effect on reload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role};
use std::time::Duration;

#[test]
fn reload_applies_a_registry_change_the_hub_missed() {
    let lab = Lab::start(Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    ));
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));

    // With the control socket moved away, `peer disable` changes only
    // the registry and says the hub is not running.
    let sock = lab.dir.join("hub/renkei.sock");
    let aside = lab.dir.join("renkei.sock.aside");
    std::fs::rename(&sock, &aside).unwrap();
    let out = lab.renkei(&["peer", "disable", "kyoto"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));
    // Without a hub to ask, reload fails and says so.
    let out = lab.renkei(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("renkei: error: reload: "), "{err}");
    std::fs::rename(&aside, &sock).unwrap();
    assert_eq!(lab.facility_status()["state"], "up", "the hub missed it");

    let out = lab.renkei(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("kyoto: "), "{said}");
    assert_eq!(lab.facility_status()["state"], "disabled");
    lab.wait_for("strongSwan's SAs deleted", Duration::from_secs(20), |lab| {
        lab.swan_sa_count() == 0
    });

    // A second reload is harmless: the facility stays disabled, and that
    // is no change to report.
    let out = lab.renkei(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("kyoto"), "{said}");
    assert_eq!(lab.facility_status()["state"], "disabled");
}
