//! The routers hospitals own, as strongSwan can imitate them on the wire
//! (`renkei_interop_tests::profiles`): each profile's proposals, identity
//! type, 0.0.0.0/0 selectors, liveness and lack of IKE fragmentation,
//! facility-initiated and hub-initiated, PSK and (where the router can)
//! certificates.
//!
//! Each case: the tunnel comes up with the profile's suite and the
//! selectors narrowed to the facility's configuration; pings and TCP
//! transfers run without a loss while a Child SA is rekeyed (by the router
//! when it initiated, by the hub when the hub did) and the new Child SA
//! carries the PFS group; the router's liveness check (an empty
//! INFORMATIONAL) is answered; the hub never fragments an IKE message for
//! a router that did not offer fragmentation; and tshark finds nothing to
//! fault in any packet the hub sent, the IKE_AUTH exchange decrypted.
//! Lifetimes are shortened (the profiles hold the routers' defaults) so a
//! case sees its rekeys in seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::profiles::{
    Auth, RouterProfile, CISCO_IOSXE, FORTIGATE, NEC_IX, YAMAHA_RTX,
};
use renkei_interop_tests::{Lab, Role, Topology, HUB_NET};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Test Child SA lifetime (s): the side that rekeys does so after the
/// router's share of it (75 % for YAMAHA, 90 % for the others; the hub
/// at its own point), after the router's first liveness check (10 s of
/// silence), so rekey exchanges do not keep postponing that check.
const CHILD_LIFETIME: u32 = 30;

fn child_rekeys(lab: &Lab) -> u64 {
    lab.facility_status()["child_rekeys"].as_u64().unwrap()
}

/// Empty INFORMATIONAL exchanges strongSwan started and got answered.
fn answered_liveness(lab: &Lab) -> usize {
    lab.charon_log()
        .lines()
        .filter(|l| l.contains("parsed INFORMATIONAL response") && l.trim_end().ends_with("[ ]"))
        .count()
}

fn profile_case(p: &RouterProfile, role: Role, auth: Auth) {
    let case = format!(
        "router profile {} {} {}",
        p.name,
        match role {
            Role::SwanInitiates => "facility-initiated",
            Role::RenkeiInitiates => "hub-initiated",
        },
        match auth {
            Auth::Psk => "psk",
            Auth::Cert => "cert",
        }
    );
    let mut f = match role {
        // The router rekeys its Child SA; the hub keeps its default.
        Role::SwanInitiates => {
            p.facility_with_lifetimes(role, auth, p.ike_lifetime, CHILD_LIFETIME)
        }
        // The hub rekeys; the router keeps its defaults.
        Role::RenkeiInitiates => {
            let mut f = p.facility(role, auth);
            f.hub_peer_args
                .extend(["--child-lifetime".into(), CHILD_LIFETIME.to_string()]);
            f
        }
    };
    f.swan_log_keys = true;
    // The hub would fragment anything above 200 bytes (IKE_AUTH is
    // larger) for a peer that offered RFC 7383; these routers do not.
    f.serve_args = vec!["--ike-fragment-size".into(), "200".into()];
    let (lab, capture) = Lab::start_captured(Topology::Direct, vec![f]);
    if role == Role::SwanInitiates {
        assert!(lab.swan_initiate(), "{case}: strongSwan could not initiate");
    }
    lab.wait_up(Duration::from_secs(30));
    let status = lab.facility_status();
    let suite = status["ike_suite"].as_str().unwrap().to_string();
    assert!(
        suite.starts_with("aes256-sha256") && suite.ends_with("modp2048"),
        "{case}: IKE suite {suite}"
    );
    let child = &status["child_sas"][0];
    // Route-based routers propose 0.0.0.0/0: narrowed to what the
    // facility is configured with.
    assert_eq!(child["local_ts"], HUB_NET, "{case}: {child}");
    assert_eq!(
        child["remote_ts"],
        lab.sites[0].net.as_str(),
        "{case}: {child}"
    );
    assert_eq!(status["id"], lab.sites[0].psk_id().as_str(), "{case}");
    let first_spi = child["spi_in"].as_str().unwrap().to_string();
    for size in [56, 1330] {
        assert!(
            lab.ping(false, size, 3),
            "{case}: facility → hub, {size} bytes"
        );
        assert!(
            lab.ping(true, size, 3),
            "{case}: hub → facility, {size} bytes"
        );
    }

    // The router's liveness check after its interval of silence (before
    // the first rekey, which would count as traffic).
    let live = answered_liveness(&lab);
    lab.wait_for(
        "the router's liveness check answered",
        Duration::from_secs(4 * u64::from(p.liveness)),
        |l| answered_liveness(l) > live,
    );

    // Traffic both ways until a Child SA rekey has happened and the old
    // Child SA is gone: every ping burst and every transfer must be whole.
    let before = child_rekeys(&lab);
    let done = AtomicBool::new(false);
    let (bursts, transfers) = std::thread::scope(|s| {
        let pings = s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                assert!(
                    lab.ping_with(0, n % 2 == 0, false, 1000, 5),
                    "{case}: a ping burst lost packets around a rekey"
                );
                n += 1;
            }
            n
        });
        let xfers = s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let bytes = 512 * 1024;
                let (sent, received, got) =
                    lab.transfer_with(0, n % 2 == 1, false, bytes, Some(256 * 1024));
                assert_eq!(got, bytes, "{case}: bytes received around a rekey");
                assert_eq!(sent, received, "{case}: SHA-256 around a rekey");
                n += 1;
            }
            n
        });
        lab.wait_for("a Child SA rekey", Duration::from_secs(60), |l| {
            child_rekeys(l) > before
        });
        lab.wait_for("the old Child SA gone", Duration::from_secs(30), |l| {
            let c = l.facility_status()["child_sas"].clone();
            c.as_array().unwrap().len() == 1 && c[0]["spi_in"] != first_spi.as_str()
        });
        // A few more rounds on the new Child SA only.
        std::thread::sleep(Duration::from_secs(2));
        done.store(true, Ordering::Relaxed);
        (pings.join().unwrap(), xfers.join().unwrap())
    });
    let status = lab.facility_status();
    let child = &status["child_sas"][0];
    // PFS: the rekeyed Child SA ran its own MODP-2048 exchange.
    assert!(
        child["suite"].as_str().unwrap().contains("modp2048"),
        "{case}: rekeyed Child SA without PFS: {child}"
    );
    assert!(
        status["drops"].as_object().unwrap().is_empty(),
        "{case}: the hub dropped packets: {status}"
    );

    assert_eq!(lab.swan_sa_count(), 1, "{case}");
    let verdict = capture.check(&case);
    if !p.ike_fragmentation {
        assert_eq!(
            verdict.ike_fragments_from_hub, 0,
            "{case}: the hub fragmented IKE messages"
        );
    }
    assert!(
        verdict.decrypted >= 2,
        "{case}: IKE_AUTH not decrypted: {verdict:?}"
    );
    println!(
        "router profile verdict: {case}: up {suite}, narrowed {HUB_NET} === {}, child rekeyed with PFS ({}), {bursts} ping bursts and {transfers} transfers without loss, liveness answered",
        lab.sites[0].net,
        child["suite"].as_str().unwrap(),
    );
}

#[test]
fn yamaha_facility_initiates_psk() {
    profile_case(&YAMAHA_RTX, Role::SwanInitiates, Auth::Psk);
}

#[test]
fn yamaha_hub_initiates_psk() {
    profile_case(&YAMAHA_RTX, Role::RenkeiInitiates, Auth::Psk);
}

#[test]
fn yamaha_facility_initiates_cert() {
    profile_case(&YAMAHA_RTX, Role::SwanInitiates, Auth::Cert);
}

#[test]
fn yamaha_hub_initiates_cert() {
    profile_case(&YAMAHA_RTX, Role::RenkeiInitiates, Auth::Cert);
}

#[test]
fn cisco_facility_initiates_psk() {
    profile_case(&CISCO_IOSXE, Role::SwanInitiates, Auth::Psk);
}

#[test]
fn cisco_hub_initiates_psk() {
    profile_case(&CISCO_IOSXE, Role::RenkeiInitiates, Auth::Psk);
}

#[test]
fn cisco_facility_initiates_cert() {
    profile_case(&CISCO_IOSXE, Role::SwanInitiates, Auth::Cert);
}

#[test]
fn fortigate_facility_initiates_psk() {
    profile_case(&FORTIGATE, Role::SwanInitiates, Auth::Psk);
}

#[test]
fn fortigate_hub_initiates_psk() {
    profile_case(&FORTIGATE, Role::RenkeiInitiates, Auth::Psk);
}

#[test]
fn fortigate_facility_initiates_cert() {
    profile_case(&FORTIGATE, Role::SwanInitiates, Auth::Cert);
}

#[test]
fn nec_facility_initiates_psk() {
    profile_case(&NEC_IX, Role::SwanInitiates, Auth::Psk);
}

#[test]
fn nec_hub_initiates_psk() {
    profile_case(&NEC_IX, Role::RenkeiInitiates, Auth::Psk);
}
