//! Changing the hub after `init` with strongSwan certificate facilities
//! connected (#15 item 6): `hub renew-cert` and `ca rollover` keep the
//! established tunnels, new IKE SAs authenticate with the new certificate,
//! facilities still on the previous CA keep working, reissued ones work,
//! and `ca retire-old` refuses while a facility depends on the previous CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role};
use serde_json::Value;
use std::time::Duration;

const SUITE: (&str, &str) = ("aes256gcm16-prfsha384-ecp384", "aes256gcm16-ecp384");

fn cert_facility() -> Facility {
    let mut f = Facility::new(SUITE.0, SUITE.1, Role::SwanInitiates);
    f.cert = Some("ecdsa-p256".into());
    f
}

fn ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.renkei(args);
    assert!(
        out.status.success(),
        "renkei {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn hub_show(lab: &Lab) -> Value {
    serde_json::from_str(&ok(lab, &["hub", "show", "--json"])).unwrap()
}

/// The SPIs of strongSwan's IKE and Child SAs: the same list means the
/// same SAs.
fn spis(lab: &Lab) -> Vec<String> {
    let out = lab.swanctl(&["--list-sas", "--raw"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut v: Vec<String> = text
        .split([' ', '{', '}'])
        .filter(|t| {
            ["initiator-spi=", "responder-spi=", "spi-in=", "spi-out="]
                .iter()
                .any(|k| t.starts_with(k))
        })
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Lines of the hub's log where it signed IKE_AUTH with the certificate
/// of `serial`.
fn signed_with(lab: &Lab, serial: &str) -> usize {
    lab.hub_log()
        .lines()
        .filter(|l| l.contains("authenticating with the hub's certificate") && l.contains(serial))
        .count()
}

/// How many times strongSwan authenticated the hub.
fn hub_authentications(lab: &Lab) -> usize {
    lab.charon_log()
        .matches("authentication of 'hub.example' with")
        .count()
}

/// Starts a new IKE SA from the facility (the old one is closed first)
/// and waits until traffic passes.
fn reconnect(lab: &Lab) {
    let before = hub_authentications(lab);
    let out = lab.swanctl(&["--terminate", "--ike", "hub", "--timeout", "20"]);
    assert!(out.status.success(), "terminate: {out:?}");
    assert!(lab.swan_initiate(), "strongSwan could not initiate again");
    lab.wait_up(Duration::from_secs(30));
    assert!(
        lab.ping(false, 56, 3),
        "facility → hub ping after reconnecting"
    );
    assert_eq!(hub_authentications(lab), before + 1);
}

#[test]
fn renew_cert_keeps_the_tunnel_and_new_ike_sas_use_the_new_certificate() {
    let lab = Lab::start(cert_facility());
    assert!(lab.swan_initiate(), "strongSwan could not initiate");
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3), "facility → hub ping");
    let before = hub_show(&lab);
    let old_serial = before["hub_certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(signed_with(&lab, &old_serial), 1);
    let sas = spis(&lab);
    assert_eq!(sas.len(), 4, "one IKE SA and one Child SA: {sas:?}");

    let out = ok(&lab, &["hub", "renew-cert"]);
    assert!(out.contains("applied to the running hub"), "{out}");
    let after = hub_show(&lab);
    let new_serial = after["hub_certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_serial, old_serial);
    assert_eq!(
        after["hub_certificate"]["subject"],
        before["hub_certificate"]["subject"]
    );
    assert_eq!(after["hub_certificate"]["san"][0], "DNS:hub.example");
    assert_eq!(after["ca"]["sha256"], before["ca"]["sha256"], "same CA");
    lab.wait_for("the hub reloads", Duration::from_secs(10), |lab| {
        lab.hub_log()
            .contains("hub certificate and trusted CAs reloaded")
    });
    // The established tunnel is untouched: same SAs, traffic passes.
    assert!(lab.ping(false, 56, 3), "facility → hub ping after renewal");
    assert!(lab.ping(true, 56, 3), "hub → facility ping after renewal");
    assert_eq!(spis(&lab), sas, "the SAs were replaced");
    assert_eq!(lab.facility_status()["state"], "up");
    // The previous certificate is kept.
    let retired: Vec<String> = std::fs::read_dir(lab.dir.join("hub/retired"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        retired.iter().any(|n| n.starts_with("hub.pem."))
            && retired.iter().any(|n| n.starts_with("hub.key.")),
        "{retired:?}"
    );

    // strongSwan reauthenticates its IKE SA: a new IKE_AUTH, answered with
    // the new certificate, which strongSwan accepts.
    let auths = hub_authentications(&lab);
    let out = lab.swanctl(&["--rekey", "--ike", "hub", "--reauth"]);
    assert!(out.status.success(), "reauth: {out:?}");
    lab.wait_for("reauthentication", Duration::from_secs(30), |lab| {
        hub_authentications(lab) > auths
    });
    lab.wait_up(Duration::from_secs(30));
    assert!(
        signed_with(&lab, &new_serial) >= 1,
        "the new certificate was not used"
    );
    assert_eq!(
        signed_with(&lab, &old_serial),
        1,
        "the old certificate was used again"
    );
    assert!(
        lab.ping(false, 56, 3),
        "facility → hub ping after reauthentication"
    );
    assert_ne!(spis(&lab), sas);
    let audit = ok(&lab, &["audit", "show", "--json"]);
    assert!(
        audit.contains("hub.renew_cert") && audit.contains(&new_serial),
        "{audit}"
    );
    eprintln!(
        "renewed {old_serial} → {new_serial}: tunnel kept, reauthentication used the new one"
    );
}

#[test]
fn ca_rollover_keeps_old_ca_facilities_and_takes_reissued_ones() {
    let lab = Lab::start(cert_facility());
    assert!(lab.swan_initiate(), "strongSwan could not initiate");
    lab.wait_up(Duration::from_secs(30));
    let sas = spis(&lab);
    let before = hub_show(&lab);

    let out = ok(&lab, &["ca", "rollover"]);
    assert!(out.contains("applied to the running hub"), "{out}");
    let during = hub_show(&lab);
    let new_hub = during["hub_certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let old_hub = during["rollover"]["previous_hub_certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        old_hub,
        before["hub_certificate"]["serial"].as_str().unwrap()
    );
    assert_eq!(
        during["rollover"]["previous_ca"]["sha256"],
        before["ca"]["sha256"]
    );
    assert_ne!(during["ca"]["sha256"], before["ca"]["sha256"]);
    assert_eq!(during["rollover"]["facilities_on_previous_ca"][0], "kyoto");
    lab.wait_for("the hub reloads", Duration::from_secs(10), |lab| {
        lab.hub_log()
            .contains("hub certificate and trusted CAs reloaded")
    });
    assert!(
        lab.ping(false, 56, 3),
        "facility → hub ping after the rollover"
    );
    assert_eq!(spis(&lab), sas, "the rollover replaced the SAs");

    // Retiring the previous CA is refused while kyoto depends on it, and
    // changes nothing.
    let out = lab.renkei(&["ca", "retire-old"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a facility still uses the previous CA: kyoto"),
        "{err}"
    );
    assert!(lab.dir.join("hub/ca/ca-old.pem").exists());
    assert_eq!(
        hub_show(&lab)["rollover"]["previous_ca"],
        during["rollover"]["previous_ca"]
    );

    // kyoto, still with its old-CA certificate and trusting only the old
    // CA, connects anew: the hub answers with its old-CA certificate.
    reconnect(&lab);
    assert!(
        signed_with(&lab, &old_hub) >= 2,
        "old-CA facility not answered with the old-CA hub certificate"
    );
    assert_eq!(signed_with(&lab, &new_hub), 0);

    // kyoto is reissued from the new CA and trusts only the new CA.
    let issued = lab.dir.join("reissued");
    ok(
        &lab,
        &["cert", "issue", "kyoto", "--out", issued.to_str().unwrap()],
    );
    let swanctl = lab.sites[0].dir.join("swanctl");
    for (from, to) in [
        ("kyoto.pem", "x509/kyoto.pem"),
        ("kyoto.key", "private/kyoto.key"),
        ("ca.pem", "x509ca/ca.pem"),
    ] {
        std::fs::copy(issued.join(from), swanctl.join(to)).unwrap();
    }
    let out = lab.swanctl(&["--load-creds", "--clear", "--noprompt"]);
    assert!(out.status.success(), "load-creds: {out:?}");
    let conf = swanctl.join("swanctl.conf");
    let out = lab.swanctl(&["--load-conns", "--file", conf.to_str().unwrap()]);
    assert!(out.status.success(), "load-conns: {out:?}");
    reconnect(&lab);
    assert_eq!(
        signed_with(&lab, &new_hub),
        1,
        "the reissued facility got the new hub certificate"
    );
    assert!(lab.ping(true, 56, 3), "hub → facility ping with the new CA");
    let st = hub_show(&lab);
    assert_eq!(
        st["rollover"]["facilities_on_previous_ca"],
        Value::Array(vec![])
    );

    // Now the previous CA can go; the hub then trusts and uses only the new one.
    let out = ok(&lab, &["ca", "retire-old"]);
    assert!(out.contains("applied to the running hub"), "{out}");
    assert!(hub_show(&lab)["rollover"].is_null());
    assert!(!lab.dir.join("hub/ca/ca-old.pem").exists());
    assert!(lab.ping(false, 56, 3), "facility → hub ping after retiring");
    reconnect(&lab);
    assert_eq!(signed_with(&lab, &new_hub), 2);
    let audit = ok(&lab, &["audit", "show", "--json"]);
    assert!(
        audit.contains("ca.rollover") && audit.contains("ca.retire_old"),
        "{audit}"
    );
    eprintln!("rollover: old-CA facility kept ({old_hub}), reissued facility on the new CA ({new_hub}), old CA retired");
}

/// The hub initiates to a facility that trusts only the previous CA: it
/// answers the facility's CERTREQ (in strongSwan's IKE_SA_INIT response)
/// with its certificate from the previous CA.
#[test]
fn after_a_rollover_the_hub_initiates_to_an_old_ca_facility_with_its_old_certificate() {
    let mut f = cert_facility();
    f.role = Role::RenkeiInitiates;
    let lab = Lab::start(f);
    lab.wait_up(Duration::from_secs(30));
    let old_hub = hub_show(&lab)["hub_certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&lab, &["ca", "rollover"]);
    let new_hub = hub_show(&lab)["hub_certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let auths = hub_authentications(&lab);
    ok(&lab, &["sa", "down", "kyoto"]);
    ok(&lab, &["sa", "up", "kyoto"]);
    lab.wait_for("the hub connects again", Duration::from_secs(30), |lab| {
        hub_authentications(lab) > auths
    });
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(true, 56, 3), "hub → facility ping");
    assert_eq!(signed_with(&lab, &old_hub), 2);
    assert_eq!(signed_with(&lab, &new_hub), 0);
}
