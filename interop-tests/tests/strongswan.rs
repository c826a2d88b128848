//! renkei against real strongSwan (kernel-libipsec) in network namespaces.
//!
//! Each case: the tunnel comes up, pings pass both ways at sizes up to the
//! tunnel MTU (1358-byte packets, the default), and a 20 MB TCP
//! transfer arrives with the same SHA-256 it was sent with. Refusals leave
//! no SA on either side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role, Topology};
use std::time::Duration;

const TRANSFER: u64 = 20 * 1024 * 1024;
/// ICMP payload sizes: small, medium, and a 1358-byte IP packet (the
/// default tunnel MTU).
const PING_SIZES: [usize; 3] = [56, 1000, 1330];

fn tunnel_carries_traffic(ike: &str, esp: &str, role: Role) {
    let mut f = Facility::new(ike, esp, role);
    f.swan_log_keys = true;
    let (lab, capture) = Lab::start_captured(Topology::Direct, vec![f]);
    match role {
        Role::SwanInitiates => assert!(lab.swan_initiate(), "strongSwan could not initiate"),
        Role::RenkeiInitiates => {}
    }
    lab.wait_up(Duration::from_secs(30));
    let f = lab.facility_status();
    let ike_suite = f["ike_suite"].as_str().unwrap().to_string();
    assert!(
        ike_suite.starts_with(ike.split('-').next().unwrap()),
        "negotiated {ike_suite} for {ike}"
    );
    for size in PING_SIZES {
        assert!(
            lab.ping(false, size, 3),
            "facility → hub ping, {size} bytes"
        );
        assert!(lab.ping(true, size, 3), "hub → facility ping, {size} bytes");
    }
    let (sent, received, bytes) = lab.transfer(false, TRANSFER);
    assert_eq!(bytes, TRANSFER, "bytes received");
    assert_eq!(sent, received, "SHA-256 at the far end");
    let f = lab.facility_status();
    assert!(
        f["packets_in"].as_u64().unwrap() > 1000 && f["packets_out"].as_u64().unwrap() > 100,
        "{f}"
    );
    assert!(
        f["drops"].as_object().unwrap().get("integrity").is_none(),
        "{f}"
    );
    assert_eq!(lab.swan_sa_count(), 1);
    assert!(
        !lab.hub_log().contains(renkei_interop_tests::PSK),
        "the PSK never appears in the debug log"
    );
    eprintln!(
        "{ike} ({role:?}): up as {ike_suite}, pings and {TRANSFER}-byte transfer OK, status {f}"
    );
    let verdict = capture.check(&format!("strongswan psk {ike} {role:?}"));
    assert!(verdict.decrypted >= 2, "IKE_AUTH decrypted: {verdict:?}");
}

#[test]
fn swan_initiates_aes256gcm16_prfsha256_ecp256() {
    tunnel_carries_traffic(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16-ecp256",
        Role::SwanInitiates,
    );
}

#[test]
fn swan_initiates_yamaha_suite_aes256_sha256_modp2048() {
    tunnel_carries_traffic(
        "aes256-sha256-modp2048",
        "aes256-sha256-modp2048",
        Role::SwanInitiates,
    );
}

#[test]
fn swan_initiates_aes128gcm16_prfsha384_ecp384() {
    tunnel_carries_traffic(
        "aes128gcm16-prfsha384-ecp384",
        "aes128gcm16",
        Role::SwanInitiates,
    );
}

#[test]
fn renkei_initiates_to_swan_responder() {
    tunnel_carries_traffic(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::RenkeiInitiates,
    );
}

/// Extended Sequence Numbers (RFC 4303 §2.2.1) with strongSwan. The
/// negotiation is checked on both sides: the ESN transform strongSwan
/// selects and the suite the hub installs. Debian's strongSwan 5.9.8
/// cannot install an ESN SA in kernel-libipsec (its log says "IPsec SA:
/// ESN not supported", and it deletes the Child SA again), so the data
/// plane — GCM's 12-byte AAD, the high bits after the packet for HMAC —
/// is checked only with a strongSwan that can: pings both ways and a
/// transfer, no integrity or replay drops.
fn esn_with_strongswan(lab: &Lab, swan_suite: &str, suite: &str) {
    lab.wait_for(
        "strongSwan's ESP selection",
        Duration::from_secs(30),
        |lab| lab.charon_log().contains("selected proposal: ESP:"),
    );
    let charon = lab.charon_log();
    assert!(
        charon.contains(&format!("selected proposal: ESP:{swan_suite}/EXT_SEQ")),
        "strongSwan selected ESN: {charon}"
    );
    if charon.contains("ESN not supported") {
        if lab.facility.role == Role::SwanInitiates {
            // The hub chose and installed ESN; strongSwan deletes the
            // Child SA it cannot install, and the hub removes its side.
            lab.wait_for("the hub's Child SA", Duration::from_secs(30), |lab| {
                std::fs::read_to_string(lab.dir.join("hub/audit.log"))
                    .unwrap_or_default()
                    .contains(&format!("\"suite\":\"{suite}\""))
            });
        } else {
            // strongSwan selected the hub's ESN offer, then refused what it
            // cannot install.
            assert!(charon.contains("N(NO_PROP)"), "{charon}");
        }
        lab.wait_for("no Child SA", Duration::from_secs(30), |lab| {
            lab.facility_status()["child_sas"]
                .as_array()
                .unwrap()
                .is_empty()
        });
        eprintln!("ESN: strongSwan selected {swan_suite}/EXT_SEQ ({suite}); this strongSwan's kernel-libipsec has no ESN, so no data plane test");
        return;
    }
    lab.wait_up(Duration::from_secs(30));
    let f = lab.facility_status();
    assert_eq!(f["child_sas"][0]["suite"], suite, "{f}");
    for size in PING_SIZES {
        assert!(
            lab.ping(false, size, 3),
            "facility → hub ping, {size} bytes"
        );
        assert!(lab.ping(true, size, 3), "hub → facility ping, {size} bytes");
    }
    let (sent, received, bytes) = lab.transfer(false, TRANSFER);
    assert_eq!(bytes, TRANSFER, "bytes received");
    assert_eq!(sent, received, "SHA-256 at the far end");
    let f = lab.facility_status();
    assert!(f["packets_in"].as_u64().unwrap() > 1000, "{f}");
    let drops = f["drops"].as_object().unwrap();
    assert!(
        drops.get("integrity").is_none() && drops.get("replay").is_none(),
        "{f}"
    );
    eprintln!("ESN: up as {suite}, pings and {TRANSFER}-byte transfer OK, status {f}");
}

#[test]
fn esn_swan_initiates_aes256gcm16_esn() {
    // The hub's default proposals accept ESN and pick it.
    let lab = Lab::start(Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16-esn",
        Role::SwanInitiates,
    ));
    let _ = lab.swan_initiate();
    esn_with_strongswan(&lab, "AES_GCM_16_256", "aes256gcm16-esn");
}

#[test]
fn esn_renkei_initiates_aes256_sha256_esn() {
    // The hub offers ESN because the operator wrote `esn`.
    let mut f = Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256-sha256-esn",
        Role::RenkeiInitiates,
    );
    f.hub_peer_args = vec!["--esp".into(), "aes256-sha256-esn".into()];
    let lab = Lab::start(f);
    esn_with_strongswan(&lab, "AES_CBC_256/HMAC_SHA2_256_128", "aes256-sha256-esn");
}

#[test]
fn weak_proposal_is_refused_and_no_sa_exists() {
    let lab = Lab::start(Facility::new(
        "3des-sha1-modp1024",
        "3des-sha1",
        Role::SwanInitiates,
    ));
    assert!(
        !lab.swan_initiate(),
        "a 3DES/SHA-1/MODP-1024 tunnel must not come up"
    );
    let charon = lab.charon_log();
    assert!(
        charon.contains("NO_PROPOSAL_CHOSEN"),
        "strongSwan was told NO_PROPOSAL_CHOSEN"
    );
    let hub = lab.hub_log();
    assert!(
        hub.contains("3DES_CBC/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024"),
        "the hub logs what was offered"
    );
    assert_eq!(lab.swan_sa_count(), 0);
    let f = lab.facility_status();
    assert_eq!(f["state"], "down");
    assert!(f["child_sas"].as_array().unwrap().is_empty());
    assert_eq!(lab.status()["hub"]["ike_sas"], 0);
}

#[test]
fn wrong_psk_gives_authentication_failed_and_no_sa() {
    let mut facility = Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    );
    facility.psk = "not-the-right-key-at-all-123".into();
    let lab = Lab::start(facility);
    assert!(!lab.swan_initiate(), "a wrong PSK must not authenticate");
    assert!(
        lab.charon_log().contains("AUTHENTICATION_FAILED"),
        "strongSwan received AUTHENTICATION_FAILED"
    );
    assert_eq!(lab.swan_sa_count(), 0);
    let f = lab.facility_status();
    assert_eq!(f["state"], "down");
    assert_eq!(f["auth_failures"], 1);
    assert!(f["child_sas"].as_array().unwrap().is_empty());
    assert_eq!(lab.status()["hub"]["ike_sas"], 0);
    assert!(
        !lab.hub_log().contains("renkei-interop-psk"),
        "the PSK never appears in the log"
    );
}

#[test]
fn exported_swanctl_config_connects_unchanged() {
    let lab = Lab::start(Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    ));
    let out = lab.renkei(&["export", "kyoto", "--format", "swanctl", "--with-secret"]);
    assert!(out.status.success(), "{out:?}");
    lab.load_swanctl_conf("exported-swanctl.conf", &out.stdout);
    // start_action = start: strongSwan connects by itself once loaded.
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3));
    assert!(lab.ping(true, 56, 3));
    let without = lab.renkei(&["export", "kyoto", "--format", "swanctl"]);
    assert!(!String::from_utf8_lossy(&without.stdout).contains(renkei_interop_tests::PSK));
    let audit = std::fs::read_to_string(lab.dir.join("hub/audit.log")).unwrap();
    assert!(
        audit.contains("peer.export_secret"),
        "exporting the secret is audited"
    );
}

#[test]
fn audit_log_metrics_and_compliance() {
    let mut f = Facility::new(
        "aes256-sha256-modp2048",
        "aes256-sha256",
        Role::SwanInitiates,
    );
    f.serve_args = vec!["--metrics".into(), "127.0.0.1:9810".into()];
    let mut lab = Lab::start(f);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3));
    // Metrics, scraped inside the hub's namespace.
    let scrape = renkei_interop_tests::must(std::process::Command::new("ip").args([
        "netns",
        "exec",
        &lab.hub_ns,
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/9810 && printf 'GET /metrics HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3",
    ]));
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    assert!(
        scrape.contains("renkei_facility_up{facility=\"kyoto\"} 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("renkei_facility_handshakes_total{facility=\"kyoto\"} 1"),
        "{scrape}"
    );
    // Compliance: MODP-2048 was negotiated and is flagged with its deadline.
    let out = lab.renkei(&["compliance", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kyoto = &report["facilities"][0];
    assert_eq!(kyoto["status"], "compliant until 2030", "{report}");
    assert!(kyoto["negotiated_ike"]
        .as_str()
        .unwrap()
        .contains("modp2048"));
    assert!(kyoto["findings"].to_string().contains("2030-12-31"));
    // Audit: the operator's setup and the tunnel's coming up, chained.
    let status = lab.facility_status();
    assert!(status["last_heard"].as_str().is_some(), "{status}");
    let verify = lab.renkei(&["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
    let audit = std::fs::read_to_string(lab.dir.join("hub/audit.log")).unwrap();
    for event in [
        "hub.init",
        "peer.add",
        "hub.start",
        "sa.ike_up",
        "sa.child_up",
    ] {
        assert!(
            audit.contains(&format!("\"event\":\"{event}\"")),
            "{event} missing"
        );
    }
    assert!(
        !audit.contains(renkei_interop_tests::PSK),
        "no secret in the audit log"
    );
    // Least privilege: every thread keeps CAP_NET_ADMIN and nothing else.
    let pid = lab.hub_pid().unwrap();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .collect();
    assert!(tasks.len() >= 3, "the data-plane threads are checked too");
    for task in tasks {
        let st = std::fs::read_to_string(task.join("status")).unwrap();
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            let line = st.lines().find(|l| l.starts_with(set)).unwrap();
            assert!(
                line.ends_with("0000000000001000"),
                "{}: {line}",
                task.display()
            );
        }
    }
    // The state directory is the hub's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(lab.dir.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("hub"), 0o700);
    for f in ["hub/registry.db", "hub/audit.log", "hub/renkei.sock"] {
        assert_eq!(mode(f), 0o600, "{f}");
    }
    // A stop is audited to the end: hub.stop and then the tunnel's
    // closing are on disk before the process exits.
    lab.stop_hub();
    let audit = std::fs::read_to_string(lab.dir.join("hub/audit.log")).unwrap();
    let events: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
        .collect();
    let at = |name: &str| events.iter().position(|e| *e == format!("\"{name}\""));
    assert!(at("hub.stop").is_some(), "{events:?}");
    assert!(at("hub.stop") < at("sa.ike_down"), "{events:?}");
    assert_eq!(
        events.last(),
        Some(&"\"sa.ike_down\"".to_string()),
        "{events:?}"
    );
    // Tampering is caught.
    std::fs::write(
        lab.dir.join("hub/audit.log"),
        audit.replacen("kyoto", "osaka", 1),
    )
    .unwrap();
    assert!(!lab.renkei(&["audit", "verify"]).status.success());
}

#[test]
fn ike_auth_fragmented_both_ways_with_strongswan() {
    let mut f = Facility::new(
        "aes256-sha256-modp2048",
        "aes256-sha256",
        Role::SwanInitiates,
    );
    f.swan_charon = vec!["fragment_size = 300".into()];
    f.serve_args = vec!["--ike-fragment-size".into(), "200".into()];
    f.swan_log_keys = true;
    let (lab, capture) = Lab::start_captured(Topology::Direct, vec![f]);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let swan = lab.charon_log();
    assert!(
        swan.contains("splitting IKE message"),
        "strongSwan fragmented its IKE_AUTH"
    );
    assert!(
        swan.contains("reassembled fragmented IKE message"),
        "strongSwan reassembled ours"
    );
    assert!(
        lab.hub_log().contains("message reassembled"),
        "the hub reassembled strongSwan's"
    );
    assert!(lab.ping(false, 1000, 3));
    assert!(lab.ping(true, 1000, 3));
    let verdict = capture.check("strongswan ike fragments both ways");
    assert!(verdict.ike_fragments_from_hub > 1, "{verdict:?}");
}

#[test]
fn byte_lifetime_rekeys_child_sas_under_traffic() {
    let mut f = Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    );
    f.hub_peer_args = vec!["--child-bytes".into(), "1000000".into()];
    let lab = Lab::start(f);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    // About 1 MB/s: the hub checks byte counts every second (a soft limit).
    let (sent, received, bytes) = lab.transfer_at(false, 6 * 1024 * 1024, Some(1_000_000));
    assert_eq!(bytes, 6 * 1024 * 1024);
    assert_eq!(sent, received, "SHA-256 across byte-lifetime rekeys");
    std::thread::sleep(Duration::from_secs(2));
    let f = lab.facility_status();
    eprintln!(
        "{} Child SA rekeys for 6 MiB at a 1 MB lifetime",
        f["child_rekeys"]
    );
    assert!(f["child_rekeys"].as_u64().unwrap() >= 4, "{f}");
    assert_eq!(
        f["child_sas"].as_array().unwrap().len(),
        1,
        "old Child SAs deleted: {f}"
    );
}

#[test]
fn strongswan_adds_a_second_child_sa() {
    let mut f = Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    );
    // strongSwan refuses duplicates, so the second one is narrower.
    f.swan_second_child = Some(("198.51.100.0/27".into(), "203.0.113.0/26".into()));
    let lab = Lab::start(f);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let out = lab.swanctl(&["--initiate", "--child", "net2", "--timeout", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    lab.wait_for("two Child SAs", Duration::from_secs(10), |l| {
        l.facility_status()["child_sas"].as_array().unwrap().len() == 2
    });
    assert_eq!(lab.status()["hub"]["ike_sas"], 1, "on the same IKE SA");
    assert!(lab.ping(false, 1000, 3));
    assert!(lab.ping(true, 1000, 3));
    // Closing one leaves the other (and the route) in place.
    let out = lab.swanctl(&["--terminate", "--child", "net2", "--timeout", "10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    lab.wait_for("one Child SA", Duration::from_secs(10), |l| {
        l.facility_status()["child_sas"].as_array().unwrap().len() == 1
    });
    assert!(lab.hub_route_present());
    assert!(lab.ping(true, 56, 3));
}

/// A facility the hub initiates to that refuses the Child SA (its router
/// was given another LAN prefix): the IKE SA comes up, but `status` says
/// `degraded` with the notify the facility actually sent, and the hub asks
/// again for the Child SA under the same IKE SA, with backoff.
#[test]
fn refused_child_sa_is_degraded_named_and_retried() {
    let mut f = Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::RenkeiInitiates,
    );
    f.swan_local_ts = Some("198.51.100.128/26".into());
    let lab = Lab::start(f);
    lab.wait_for(
        "IKE SA up without a Child SA",
        Duration::from_secs(30),
        |lab| lab.facility_status()["state"] == "degraded",
    );
    let st = lab.facility_status();
    let error = st["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("TS_UNACCEPTABLE") && error.contains("facility refused"),
        "status names the facility's notify: {st}"
    );
    assert!(st["child_sas"].as_array().unwrap().is_empty(), "{st}");
    // 2 s, then 4 s: two more requests under the same IKE SA.
    lab.wait_for("two Child SA retries", Duration::from_secs(20), |lab| {
        lab.hub_log()
            .matches("asking the facility again for a Child SA")
            .count()
            >= 2
    });
    let st = lab.facility_status();
    assert_eq!(st["state"], "degraded", "{st}");
    assert_eq!(st["handshakes"], 1, "one IKE SA throughout: {st}");
    let log = lab.hub_log();
    assert!(!log.contains("misbehaved"), "a refusal is not misbehaviour");
    assert!(
        !log.contains("NO_PROPOSAL_CHOSEN"),
        "the refusal is not misnamed"
    );
    assert!(
        lab.charon_log().matches("CREATE_CHILD_SA request").count() >= 2,
        "strongSwan received the retries"
    );
}

/// The first IKE_SA_INIT after the hub starts is sent at once, not lost
/// to a socket that is not yet known to be writable.
#[test]
fn the_first_ike_sa_init_after_start_is_sent() {
    let lab = Lab::start(Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::RenkeiInitiates,
    ));
    lab.wait_up(Duration::from_secs(30));
    // (The lab starts strongSwan after the hub, so that first request may
    // still find no one listening and be retransmitted; what must not
    // happen is the hub failing to send it.)
    assert!(
        !lab.hub_log().contains("send failed"),
        "the hub failed to send an IKE datagram"
    );
}

/// With strongSwan's default proposals on the facility (`default`, whose
/// groups include MODP-2048), the hub settles on a group that stays
/// compliant after 2030, in both roles.
#[test]
fn default_proposals_settle_on_a_group_compliant_after_2030() {
    for role in [Role::SwanInitiates, Role::RenkeiInitiates] {
        let lab = Lab::start(Facility::new("default", "default", role));
        if role == Role::SwanInitiates {
            assert!(lab.swan_initiate(), "strongSwan could not initiate");
        }
        lab.wait_up(Duration::from_secs(30));
        let f = lab.facility_status();
        let suite = f["ike_suite"].as_str().unwrap().to_string();
        assert!(
            !suite.contains("modp2048"),
            "{role:?}: negotiated {suite}, the group flagged for 2030"
        );
        eprintln!("default proposals ({role:?}): {suite}");
    }
}
