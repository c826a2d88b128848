//! renkei against real strongSwan (kernel-libipsec) in network namespaces.
//!
//! Each case: the tunnel comes up, pings pass both ways at sizes up to the
//! path MTU (1400-byte packets through a 1400-byte TUN), and a 20 MB TCP
//! transfer arrives with the same SHA-256 it was sent with. Refusals leave
//! no SA on either side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role};
use std::time::Duration;

const TRANSFER: u64 = 20 * 1024 * 1024;
/// ICMP payload sizes: small, medium, and a 1400-byte IP packet.
const PING_SIZES: [usize; 3] = [56, 1000, 1372];

fn tunnel_carries_traffic(ike: &str, esp: &str, role: Role) {
    let lab = Lab::start(Facility::new(ike, esp, role));
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
