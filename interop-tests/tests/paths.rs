//! Paths as hospitals have them: a router between the hub and a strongSwan
//! facility on a smaller link — NTT FLET'S PPPoE (1454 bytes), a 1280-byte
//! path over IPv4 and over IPv6 — with ICMP, and as an ICMP black hole.
//! Bulk TCP must cross every one of them both ways, between the facility
//! and a server behind the hub (through the hub's kernel routing) and the
//! hub itself, arriving with the SHA-256 it was sent with, and the hub
//! must count nothing as unsendable. Each case prints one `MTU-MATRIX`
//! line (path, direction, result, the facility's drops and tunnel MTU).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role, Topology};
use std::time::Duration;

const BULK: u64 = 4 * 1024 * 1024;

fn gcm() -> Facility {
    Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    )
}

/// The suite a YAMAHA RTX uses: AES-CBC with HMAC-SHA-256, the larger
/// overhead.
fn cbc() -> Facility {
    Facility::new(
        "aes256-sha256-modp2048",
        "aes256-sha256-modp2048",
        Role::SwanInitiates,
    )
}

/// Brings the lab's facility up and moves bulk TCP both ways between it
/// and the server behind the hub, and the hub itself; returns the
/// facility's status afterwards.
fn bulk_both_ways(
    case: &str,
    facility: Facility,
    mtu: u32,
    icmp: bool,
    v6: bool,
) -> serde_json::Value {
    let lab = Lab::start_sites(Topology::Path { mtu, icmp, v6 }, vec![facility]);
    assert!(lab.swan_initiate(), "{case}: strongSwan could not initiate");
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3), "{case}: facility → hub ping");
    for (direction, (sent, received, bytes)) in [
        ("server → facility", lab.transfer_server(true, BULK)),
        ("facility → server", lab.transfer_server(false, BULK)),
        ("hub → facility", lab.transfer(true, BULK)),
        ("facility → hub", lab.transfer(false, BULK)),
    ] {
        let f = lab.facility_status();
        eprintln!(
            "MTU-MATRIX {case}: {direction}: {} of {BULK} bytes, sha256 {}, drops {}, tunnel MTU {}",
            bytes,
            if sent == received { "equal" } else { "DIFFERENT" },
            f["drops"],
            f["mtu"]
        );
        assert_eq!(bytes, BULK, "{case}: {direction}: bytes received");
        assert_eq!(
            sent, received,
            "{case}: {direction}: SHA-256 at the far end"
        );
    }
    let f = lab.facility_status();
    let drops = f["drops"].as_object().unwrap();
    assert!(
        drops.get("io").is_none(),
        "{case}: nothing may fail to be sent: {f}"
    );
    assert_eq!(
        lab.hub_unattributed_drops("io"),
        0,
        "{case}: no unattributed send failures"
    );
    f
}

#[test]
fn pppoe_1454_with_icmp() {
    let f = bulk_both_ways("PPPoE 1454, ICMP, AES-GCM", gcm(), 1454, true, false);
    // The default tunnel MTU fits the path: nothing to learn.
    assert_eq!(f["path_mtu_limited"], false, "{f}");
    assert_eq!(f["mtu"], 1358, "{f}");
}

#[test]
fn pppoe_1454_icmp_black_hole_with_the_yamaha_suite() {
    // No ICMP anywhere: only the tunnel MTU and MSS clamping size TCP, and
    // the server behind the hub never hears of any MTU.
    let f = bulk_both_ways("PPPoE 1454, no ICMP, AES-CBC", cbc(), 1454, false, false);
    assert_eq!(f["path_mtu_limited"], false, "{f}");
}

#[test]
fn path_1280_with_icmp_is_learned() {
    let f = bulk_both_ways("IPv4 1280, ICMP, AES-GCM", gcm(), 1280, true, false);
    assert_eq!(f["path_mtu_limited"], true, "{f}");
    let mtu = f["mtu"].as_u64().unwrap();
    assert!(
        (1180..=1250).contains(&mtu),
        "tunnel MTU {mtu} for a 1280 path"
    );
}

#[test]
fn ipv6_outer_path_1280_with_icmp_is_learned() {
    let f = bulk_both_ways("IPv6 outer 1280, ICMPv6, AES-CBC", cbc(), 1280, true, true);
    assert_eq!(f["path_mtu_limited"], true, "{f}");
    let mtu = f["mtu"].as_u64().unwrap();
    assert!(
        (1100..=1230).contains(&mtu),
        "tunnel MTU {mtu} for a 1280 IPv6 path"
    );
}
