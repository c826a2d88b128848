//! renkei against Libreswan 4.10 (Debian's `libreswan`), a second,
//! independent IKEv2 implementation (`renkei_interop_tests::libreswan`).
//!
//! This kernel has no ESP, so Libreswan has no data plane here (its SA
//! installs are acknowledged by a shim): each case checks the control
//! plane on both sides — IKE_SA_INIT and IKE_AUTH with the Child SA
//! negotiated (the hub's status and Libreswan's `whack --trafficstatus`
//! and `--status` agree on the SPIs), Child SA and IKE SA rekeys, liveness
//! both ways, and a Delete that takes the facility down on the hub — and
//! tshark finds nothing to fault in any packet the hub sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::libreswan::{Pluto, PlutoConf};
use renkei_interop_tests::{Facility, Lab, Role, Topology};
use std::time::Duration;

/// Who starts the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Initiator {
    /// Libreswan (`whack --initiate`).
    Libreswan,
    /// The hub (`renkei sa up`), Libreswan responding.
    Hub,
}

struct Case {
    name: &'static str,
    /// The hub's proposals (strongSwan syntax) and Libreswan's.
    hub_ike: &'static str,
    hub_esp: &'static str,
    lsw_ike: &'static str,
    lsw_esp: &'static str,
    /// (facility key type, Libreswan authby, hub CA key type) for
    /// certificates; None: PSK.
    cert: Option<(&'static str, &'static str, &'static str)>,
    initiator: Initiator,
    /// The IKE suite the hub reports.
    expect_suite: &'static str,
}

/// What pluto (`plutodebug=base`) logs when the hub answered its liveness
/// check.
const LIVENESS_ANSWERED: &str = "received an INFORMATIONAL liveness check response";

fn status_num(lab: &Lab, field: &str) -> u64 {
    lab.facility_status()[field].as_u64().unwrap()
}

/// The hub's Child SA SPIs both appear in Libreswan's `--status`.
fn spis_agree(lab: &Lab, pluto: &Pluto) -> bool {
    let f = lab.facility_status();
    let Some(c) = f["child_sas"].as_array().and_then(|a| a.first()).cloned() else {
        return false;
    };
    let st = pluto.status();
    // pluto writes "esp.<spi>@<addr>" for both directions, in hex
    // without leading zeros.
    let spi = |k: &str| u32::from_str_radix(c[k].as_str().unwrap(), 16).unwrap();
    st.contains(&format!("esp.{:x}@", spi("spi_out")))
        && st.contains(&format!("esp.{:x}@", spi("spi_in")))
}

fn libreswan_case(c: &Case) {
    let case = format!("libreswan {}", c.name);
    let mut f = Facility::libreswan(c.hub_ike, c.hub_esp, Role::SwanInitiates);
    // The hub rekeys the IKE SA; Libreswan rekeys its Child SA and checks
    // liveness after 5 silent seconds (below).
    f.hub_peer_args
        .extend(["--ike-lifetime".into(), "25".into()]);
    if c.initiator == Initiator::Hub {
        // Initiated on request (`sa up`) once pluto runs.
        f.hub_peer_args.extend([
            "--remote-addr".into(),
            format!("{}:500", renkei_interop_tests::SITE_OUTER),
        ]);
    }
    let mut conf = PlutoConf::new(c.lsw_ike, c.lsw_esp);
    if let Some((key, authby, ca_key)) = c.cert {
        f.cert = Some(key.into());
        f.hub_init_args = vec!["--ca-key".into(), ca_key.into()];
        conf.cert_authby = Some(authby.into());
    }
    conf.child_lifetime = 20;
    conf.rekey_margin = 6;
    conf.ike_lifetime = 3600;
    conf.dpd_delay = 5;
    let (lab, capture) = Lab::start_captured(Topology::Direct, vec![f]);
    let pluto = Pluto::start(&lab, 0, &conf);
    match c.initiator {
        Initiator::Libreswan => {
            let out = pluto.initiate();
            assert!(
                out.contains("established Child SA"),
                "{case}: whack --initiate: {out}"
            );
        }
        Initiator::Hub => {
            let out = lab.renkei(&["sa", "up", "kyoto"]);
            assert!(out.status.success(), "{case}: sa up: {out:?}");
        }
    }
    lab.wait_up(Duration::from_secs(30));
    let f = lab.facility_status();
    assert_eq!(f["ike_suite"], c.expect_suite, "{case}: {f}");
    lab.wait_for(
        "Libreswan's view of the same Child SA",
        Duration::from_secs(10),
        |l| spis_agree(l, &pluto),
    );
    let traffic = pluto.traffic_status();
    assert!(
        traffic.contains("type=ESP") && traffic.contains("id='@hub.example'"),
        "{case}: whack --trafficstatus: {traffic}"
    );

    // Libreswan rekeys the Child SA with PFS; the hub rekeys the IKE SA.
    lab.wait_for("a Child SA rekey", Duration::from_secs(40), |l| {
        status_num(l, "child_rekeys") >= 1
    });
    lab.wait_for("an IKE SA rekey", Duration::from_secs(40), |l| {
        status_num(l, "ike_rekeys") >= 1
    });
    lab.wait_for(
        "Libreswan and the hub on the same rekeyed Child SA",
        Duration::from_secs(20),
        |l| {
            spis_agree(l, &pluto) && l.facility_status()["child_sas"].as_array().unwrap().len() == 1
        },
    );
    let f = lab.facility_status();
    let child_suite = f["child_sas"][0]["suite"].as_str().unwrap().to_string();
    let group = c.expect_suite.rsplit('-').next().unwrap();
    assert!(
        child_suite.contains(group),
        "{case}: rekeyed Child SA without PFS ({group}): {f}"
    );
    // The Child SA was rekeyed by Libreswan's CREATE_CHILD_SA, the IKE SA
    // by the hub's: both logged by pluto.
    let log = pluto.log();
    assert!(
        log.contains("initiator rekeyed Child SA"),
        "{case}: pluto's log"
    );
    assert!(
        log.contains("responder rekeyed IKE SA"),
        "{case}: pluto's log"
    );

    // Liveness: pluto checks the hub after 5 silent seconds; the hub
    // answers, so pluto keeps its IKE SA and the hub sees no new handshake.
    let probes = |p: &Pluto| p.log().matches(LIVENESS_ANSWERED).count();
    let (p0, handshakes) = (probes(&pluto), status_num(&lab, "handshakes"));
    lab.wait_for(
        "two liveness checks from Libreswan answered",
        Duration::from_secs(40),
        |_| probes(&pluto) >= p0 + 2,
    );
    let f = lab.facility_status();
    assert_eq!(f["state"], "up", "{case}: {f}");
    assert_eq!(f["handshakes"].as_u64().unwrap(), handshakes, "{case}: {f}");
    assert!(
        !pluto.log().contains("not responding"),
        "{case}: pluto found the hub unresponsive"
    );

    // Libreswan deletes: the hub takes the facility down at once.
    let out = pluto.terminate();
    assert!(out.contains("deleting"), "{case}: whack --terminate: {out}");
    lab.wait_for(
        "the facility down after Libreswan's Delete",
        Duration::from_secs(10),
        |l| l.facility_status()["state"] == "down",
    );
    assert!(
        lab.hub_log().contains("IKE SA deleted by the facility"),
        "{case}: the hub's log"
    );
    assert!(
        !pluto.traffic_status().contains("type=ESP"),
        "{case}: Libreswan still lists a Child SA"
    );
    let f = lab.facility_status();
    let verdict = capture.check(&case);
    println!(
        "libreswan verdict: {case}: IKE_SA_INIT + IKE_AUTH up as {}, Child SA rekeyed by Libreswan with PFS ({child_suite}), IKE SA rekeyed by the hub, liveness answered, Delete honoured; child_rekeys {} ike_rekeys {}; {} IKE messages from the hub dissected",
        c.expect_suite, f["child_rekeys"], f["ike_rekeys"], verdict.ike_from_hub
    );
}

#[test]
fn libreswan_initiates_psk_aes256_sha256_modp2048() {
    libreswan_case(&Case {
        name: "initiates psk aes256-sha256-modp2048",
        hub_ike: "aes256-sha256-modp2048",
        hub_esp: "aes256-sha256-modp2048",
        lsw_ike: "aes256-sha2_256;modp2048",
        lsw_esp: "aes256-sha2_256;modp2048",
        cert: None,
        initiator: Initiator::Libreswan,
        expect_suite: "aes256-sha256-prfsha256-modp2048",
    });
}

#[test]
fn libreswan_responds_psk_aes256gcm16_prfsha256_ecp256() {
    libreswan_case(&Case {
        name: "responds psk aes256gcm16-prfsha256-ecp256",
        hub_ike: "aes256gcm16-prfsha256-ecp256",
        hub_esp: "aes256gcm16-ecp256",
        lsw_ike: "aes_gcm256-sha2_256;dh19",
        lsw_esp: "aes_gcm256;dh19",
        cert: None,
        initiator: Initiator::Hub,
        expect_suite: "aes256gcm16-prfsha256-ecp256",
    });
}

#[test]
fn libreswan_initiates_ecdsa_cert_aes128gcm16_prfsha384_ecp384() {
    libreswan_case(&Case {
        name: "initiates ecdsa-cert aes128gcm16-prfsha384-ecp384",
        hub_ike: "aes128gcm16-prfsha384-ecp384",
        hub_esp: "aes128gcm16-ecp384",
        lsw_ike: "aes_gcm128-sha2_384;dh20",
        lsw_esp: "aes_gcm128;dh20",
        cert: Some(("ecdsa-p256", "ecdsa", "ecdsa-p384")),
        initiator: Initiator::Libreswan,
        expect_suite: "aes128gcm16-prfsha384-ecp384",
    });
}

#[test]
fn libreswan_responds_rsa_cert_aes256_sha384_ecp384() {
    libreswan_case(&Case {
        name: "responds rsa-cert aes256-sha384-ecp384",
        hub_ike: "aes256-sha384-ecp384",
        hub_esp: "aes256-sha384-ecp384",
        lsw_ike: "aes256-sha2_384;dh20",
        lsw_esp: "aes256-sha2_384;dh20",
        cert: Some(("rsa-3072", "rsasig", "rsa-3072")),
        initiator: Initiator::Hub,
        expect_suite: "aes256-sha384-prfsha384-ecp384",
    });
}
