//! Facilities behind NAT and on IPv6, against real strongSwan.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role, Topology, NAT_PUBLIC};
use std::net::SocketAddr;
use std::time::Duration;

const GCM: (&str, &str) = ("aes256gcm16-prfsha256-ecp256", "aes256gcm16");
const TRANSFER: u64 = 20 * 1024 * 1024;

fn swan(role: Role) -> Facility {
    Facility::new(GCM.0, GCM.1, role)
}

fn remote_of(lab: &Lab, name: &str) -> SocketAddr {
    lab.status_of(name)["remote"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn transfer_ok(lab: &Lab, site: usize, from_hub: bool, v6: bool, bytes: u64) {
    let (sent, received, n) = lab.transfer_with(site, from_hub, v6, bytes, None);
    assert_eq!(
        n, bytes,
        "bytes received (site {site}, from hub {from_hub}, IPv6 {v6})"
    );
    assert_eq!(
        sent, received,
        "SHA-256 (site {site}, from hub {from_hub}, IPv6 {v6})"
    );
}

#[test]
fn one_facility_behind_nat() {
    let mut f = swan(Role::SwanInitiates);
    f.swan_log_keys = true;
    let (lab, capture) = Lab::start_captured(Topology::Nat, vec![f]);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let remote = remote_of(&lab, "kyoto");
    assert_eq!(
        remote.ip().to_string(),
        NAT_PUBLIC,
        "the hub sees the NAT's address"
    );
    assert!(lab.status_of("kyoto")["drops"]
        .as_object()
        .unwrap()
        .is_empty());
    for size in [56, 1330] {
        assert!(lab.ping(false, size, 3));
        assert!(lab.ping(true, size, 3));
    }
    transfer_ok(&lab, 0, false, false, TRANSFER);
    transfer_ok(&lab, 0, true, false, TRANSFER / 4);
    let verdict = capture.check("strongswan behind nat");
    assert!(verdict.decrypted >= 2, "IKE_AUTH decrypted: {verdict:?}");
}

#[test]
fn two_facilities_behind_the_same_nat_address() {
    let lab = Lab::start_sites(
        Topology::Nat,
        vec![swan(Role::SwanInitiates), swan(Role::SwanInitiates)],
    );
    assert!(lab.swan_initiate_of(0));
    assert!(lab.swan_initiate_of(1));
    lab.wait_up_of(0, Duration::from_secs(30));
    lab.wait_up_of(1, Duration::from_secs(30));
    let (a, b) = (remote_of(&lab, "kyoto"), remote_of(&lab, "osaka"));
    assert_eq!(a.ip(), b.ip(), "one public address");
    assert_ne!(a.port(), b.port(), "told apart by port");
    for site in [0, 1] {
        assert!(
            lab.ping_with(site, true, false, 1000, 3),
            "hub → site {site}"
        );
        assert!(
            lab.ping_with(site, false, false, 1000, 3),
            "site {site} → hub"
        );
        transfer_ok(&lab, site, false, false, TRANSFER / 2);
        transfer_ok(&lab, site, true, false, TRANSFER / 4);
    }
    assert_eq!(lab.status()["hub"]["ike_sas"], 2);
}

#[test]
fn nat_mapping_flushed_mid_transfer() {
    let mut f = swan(Role::SwanInitiates);
    // strongSwan checks liveness after 5 s without traffic from the hub: its
    // check comes from the new mapping, and the hub follows it.
    f.swan_conn = vec!["dpd_delay = 5s".into()];
    let lab = Lab::start_sites(Topology::Nat, vec![f]);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let before = remote_of(&lab, "kyoto");
    let (sent, received, bytes) = std::thread::scope(|scope| {
        let xfer =
            scope.spawn(|| lab.transfer_with(0, false, false, 16 * 1024 * 1024, Some(600_000)));
        std::thread::sleep(Duration::from_secs(5));
        lab.flush_nat();
        xfer.join().unwrap()
    });
    let after = remote_of(&lab, "kyoto");
    eprintln!("mapping {before} → {after}; {bytes} bytes");
    assert_ne!(before, after, "the NAT mapped the facility anew");
    assert_eq!(bytes, 16 * 1024 * 1024);
    assert_eq!(sent, received, "SHA-256 across the mapping change");
    assert!(
        lab.ping(true, 56, 3),
        "the hub reaches the facility at its new mapping"
    );
    assert_eq!(lab.status_of("kyoto")["state"], "up");
}

#[test]
fn ipv6_outer_with_ipv4_and_ipv6_inside() {
    let mut f = swan(Role::SwanInitiates);
    f.swan_log_keys = true;
    let (lab, capture) = Lab::start_captured(Topology::Ipv6, vec![f]);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let f = lab.facility_status();
    assert!(
        f["remote"].as_str().unwrap().starts_with("[2001:db8::2]"),
        "{f}"
    );
    let ts = f["child_sas"][0]["remote_ts"].as_str().unwrap().to_string();
    assert!(
        ts.contains("198.51.100.0/26") && ts.contains("2001:db8:2::/64"),
        "one Child SA carries both families: {ts}"
    );
    for v6 in [false, true] {
        assert!(
            lab.ping_with(0, false, v6, 56, 3),
            "facility → hub, IPv6 {v6}"
        );
        assert!(
            lab.ping_with(0, true, v6, 1000, 3),
            "hub → facility, IPv6 {v6}"
        );
        transfer_ok(&lab, 0, false, v6, TRANSFER / 2);
    }
    let verdict = capture.check("strongswan ipv6 outer");
    assert!(verdict.decrypted >= 2, "IKE_AUTH decrypted: {verdict:?}");
}

#[test]
fn hub_initiates_to_a_facility_over_ipv6() {
    let lab = Lab::start_sites(Topology::Ipv6, vec![swan(Role::RenkeiInitiates)]);
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping_with(0, true, true, 56, 3));
    assert!(lab.ping_with(0, true, false, 56, 3));
}

#[test]
fn hub_keepalives_hold_the_nat_mapping_open() {
    let mut f = swan(Role::SwanInitiates);
    // Only the hub's keepalives (every 20 s) may keep the mapping: no
    // keepalives from strongSwan, no liveness checks from the hub.
    f.swan_charon = vec!["keep_alive = 0s".into()];
    f.hub_peer_args = vec!["--dpd".into(), "600".into()];
    let lab = Lab::start_sites(Topology::Nat, vec![f]);
    let nat = lab.nat_ns.clone().unwrap();
    for timeout in [
        "net.netfilter.nf_conntrack_udp_timeout=25",
        "net.netfilter.nf_conntrack_udp_timeout_stream=25",
    ] {
        renkei_interop_tests::must(
            std::process::Command::new("ip")
                .args(["netns", "exec", &nat, "sysctl", "-q", "-w", timeout]),
        );
    }
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let before = remote_of(&lab, "kyoto");
    // Twice the NAT's timeout without a single packet of traffic.
    std::thread::sleep(Duration::from_secs(50));
    assert!(
        lab.ping(true, 56, 3),
        "the hub still reaches the facility through its mapping"
    );
    assert_eq!(remote_of(&lab, "kyoto"), before, "the same mapping");
}
