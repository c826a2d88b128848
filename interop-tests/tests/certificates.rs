//! Certificate authentication against real strongSwan: facilities hold
//! keys and certificates issued by `renkei cert issue`, the hub answers
//! with its own certificate from `renkei init`. Every key type renkei
//! issues, both directions, RSA with PSS and with PKCS#1 v1.5, and each
//! reason a certificate must be refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{CertFault, Facility, Lab, Role, Topology};
use std::time::Duration;

const SUITE: (&str, &str) = ("aes256gcm16-prfsha384-ecp384", "aes256gcm16-ecp384");

fn facility(key: &str, role: Role) -> Facility {
    let mut f = Facility::new(SUITE.0, SUITE.1, role);
    f.cert = Some(key.into());
    f
}

/// The tunnel comes up with certificates and carries traffic; the hub
/// logs the scheme the facility signed with.
fn connects(f: Facility, expect_scheme: &str) {
    let role = f.role;
    let key = f.cert.clone().unwrap();
    let mut f = f;
    f.swan_log_keys = true;
    let (lab, capture) = Lab::start_captured(Topology::Direct, vec![f]);
    if role == Role::SwanInitiates {
        assert!(lab.swan_initiate(), "strongSwan could not initiate ({key})");
    }
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 1330, 3), "facility → hub ping ({key})");
    assert!(lab.ping(true, 56, 3), "hub → facility ping ({key})");
    let log = lab.hub_log();
    assert!(
        log.contains("certificate accepted") && log.contains(expect_scheme),
        "hub log does not show a {expect_scheme} signature"
    );
    let charon = lab.charon_log();
    assert!(
        charon.contains("authentication of 'hub.example' with"),
        "strongSwan did not authenticate the hub"
    );
    eprintln!("{key} ({role:?}): up, AUTH {expect_scheme}");
    let verdict = capture.check(&format!("strongswan cert {key} {role:?}"));
    assert!(verdict.decrypted >= 2, "IKE_AUTH decrypted: {verdict:?}");
}

#[test]
fn ecdsa_p256_facility_initiates() {
    connects(
        facility("ecdsa-p256", Role::SwanInitiates),
        "ECDSA with SHA-256",
    );
}

#[test]
fn ecdsa_p384_facility_initiates() {
    connects(
        facility("ecdsa-p384", Role::SwanInitiates),
        "ECDSA with SHA-384",
    );
}

#[test]
fn rsa_3072_pkcs1_facility_initiates() {
    connects(
        facility("rsa-3072", Role::SwanInitiates),
        "RSA PKCS#1 v1.5 with SHA-",
    );
}

#[test]
fn rsa_3072_pss_facility_initiates() {
    let mut f = facility("rsa-3072", Role::SwanInitiates);
    f.swan_charon.push("rsa_pss = yes".into());
    connects(f, "RSA-PSS with SHA-");
}

#[test]
fn ed25519_facility_initiates() {
    connects(facility("ed25519", Role::SwanInitiates), "Ed25519");
}

#[test]
fn hub_initiates_to_each_key_type() {
    for (key, pss, scheme) in [
        ("ecdsa-p256", false, "ECDSA with SHA-256"),
        ("ecdsa-p384", false, "ECDSA with SHA-384"),
        ("rsa-3072", false, "RSA PKCS#1 v1.5 with SHA-"),
        ("rsa-3072", true, "RSA-PSS with SHA-"),
        ("ed25519", false, "Ed25519"),
    ] {
        let mut f = facility(key, Role::RenkeiInitiates);
        if pss {
            f.swan_charon.push("rsa_pss = yes".into());
        }
        connects(f, scheme);
    }
}

/// A facility known by a distinguished name: strongSwan has no `id` in
/// its `local` section, so it sends its certificate's subject as an
/// ID_DER_ASN1_DN IDi; the hub finds the facility by that DN, checks it is
/// the certificate's subject, and prints it as the operator wrote it.
#[test]
fn distinguished_name_facility_without_id_uses_its_certificate_subject() {
    const DN: &str = "C=JP, O=Kyoto Hospital, OU=Radiology, CN=kyoto.example.jp";
    let mut f = facility("ecdsa-p256", Role::SwanInitiates);
    f.dn_id = Some(DN.into());
    let lab = Lab::start(f);
    assert!(lab.swan_initiate(), "strongSwan could not initiate");
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 1372, 3), "facility → hub ping");
    assert!(lab.ping(true, 56, 3), "hub → facility ping");
    let charon = lab.charon_log();
    // strongSwan's own form of its identity, taken from the certificate.
    assert!(
        charon.contains(&format!("authentication of '{DN}' (myself)")),
        "strongSwan did not authenticate as its certificate's subject"
    );
    assert!(charon.contains("authentication of 'hub.example' with"));
    let log = lab.hub_log();
    let accepted = log
        .lines()
        .find(|l| l.contains("certificate accepted"))
        .expect("the hub accepted no certificate");
    assert!(accepted.contains(DN), "hub log: {accepted}");
    assert!(!log.contains("dn:30"), "a DN printed as hex: {log}");
    let st = lab.facility_status();
    assert_eq!(st["state"], "up", "{st}");
    assert!(
        st.to_string().contains(DN),
        "status does not show the DN: {st}"
    );
    let out = lab.renkei(&["export", "kyoto", "--format", "swanctl"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("id = \"{DN}\"")), "{text}");
    eprintln!("DN facility: up; hub log: {accepted}");
}

/// The facility is refused with AUTHENTICATION_FAILED, no SA on either
/// side, and the hub's log says why.
fn refused(fault: CertFault, why: &str) {
    let mut f = facility("ecdsa-p256", Role::SwanInitiates);
    f.cert_fault = fault;
    let lab = Lab::start(f);
    assert!(!lab.swan_initiate(), "strongSwan connected with {fault:?}");
    let charon = lab.charon_log();
    assert!(
        charon.contains("received AUTHENTICATION_FAILED"),
        "{fault:?}: strongSwan was not told AUTHENTICATION_FAILED"
    );
    assert_eq!(lab.swan_sa_count(), 0, "{fault:?}: strongSwan kept an SA");
    let st = lab.facility_status();
    assert_ne!(st["state"], "up", "{fault:?}: {st}");
    assert!(
        st["child_sas"].as_array().is_none_or(|c| c.is_empty()),
        "{st}"
    );
    let log = lab.hub_log();
    let line = log
        .lines()
        .find(|l| l.contains("authentication failed"))
        .unwrap_or_else(|| panic!("{fault:?}: the hub logged no authentication failure"));
    assert!(
        line.contains(why),
        "{fault:?}: '{line}' does not say '{why}'"
    );
    eprintln!("{fault:?}: refused: {line}");
}

#[test]
fn revoked_certificate_is_refused() {
    refused(CertFault::Revoked, "is revoked");
}

#[test]
fn certificate_from_another_ca_is_refused() {
    refused(CertFault::OtherCa, "certificate signature refused");
}

#[test]
fn expired_certificate_is_refused() {
    refused(CertFault::Expired, "certificate expired");
}

#[test]
fn identity_not_in_the_certificate_is_refused() {
    refused(CertFault::WrongIdentity, "not in the certificate");
}

#[test]
fn rsa_exchange_at_path_mtu_1280_needs_fragmentation() {
    // An RSA-3072 IKE_AUTH is larger than 1280 bytes; both sides fragment
    // at 1280 (renkei's default, strongSwan's fragment_size).
    let mut f = facility("rsa-3072", Role::SwanInitiates);
    f.hub_init_args = vec!["--ca-key".into(), "rsa-3072".into()];
    f.swan_charon.push("fragment_size = 1280".into());
    f.serve_args = vec!["--ike-fragment-size".into(), "1280".into()];
    let lab = Lab::start(f);
    lab.set_path_mtu(1280);
    assert!(
        lab.swan_initiate(),
        "strongSwan could not initiate at MTU 1280"
    );
    lab.wait_up(Duration::from_secs(30));
    let charon = lab.charon_log();
    assert!(
        charon.contains("splitting IKE message") && charon.contains("received fragment"),
        "no IKE fragments either way"
    );
    // RFC 7383 exists so that IKE needs no IP fragmentation: the size
    // counts the whole IP datagram, so no fragment was cut again by IP.
    assert_eq!(lab.hub_ip_counter("IpFragCreates"), 0, "IP fragments sent");
    assert_eq!(
        lab.hub_ip_counter("IpReasmReqds"),
        0,
        "IP fragments received"
    );
}

/// `renkei cert issue` writes keys 0600 and a PKCS#12 bundle that OpenSSL
/// opens with the written password; `cert revoke` puts the serial in a CRL
/// that OpenSSL verifies against the CA; both are in the registry.
#[test]
fn issued_files_are_private_and_readable_by_openssl() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("renkei-certcli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    let out = dir.join("out");
    let renkei = |args: &[&str]| {
        let o = renkei_interop_tests::renkei_command()
            .arg("--state")
            .arg(&state)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "renkei {args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    renkei(&["init", "--hub-id", "hub.example", "--ca-key", "rsa-3072"]);
    renkei(&[
        "peer",
        "add",
        "kyoto",
        "--id",
        "kyoto.example",
        "--cert",
        "--remote-ts",
        "198.51.100.0/26",
    ]);
    renkei(&[
        "cert",
        "issue",
        "kyoto",
        "--key",
        "ecdsa-p384",
        "--out",
        out.to_str().unwrap(),
    ]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for f in ["kyoto.key", "kyoto.p12", "kyoto.p12.password"] {
        assert_eq!(mode(&out.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&state.join("ca/ca.key")), 0o600);
    assert_eq!(mode(&state.join("hub.key")), 0o600);
    let p12 = Command::new("openssl")
        .args(["pkcs12", "-in"])
        .arg(out.join("kyoto.p12"))
        .arg("-passin")
        .arg(format!("file:{}", out.join("kyoto.p12.password").display()))
        .args(["-nokeys", "-clcerts"])
        .output()
        .unwrap();
    assert!(p12.status.success(), "openssl pkcs12: {p12:?}");
    assert!(String::from_utf8_lossy(&p12.stdout).contains("CN=kyoto.example"));
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(out.join("ca.pem"))
        .arg(out.join("kyoto.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "openssl verify: {verify:?}");
    let list: serde_json::Value =
        serde_json::from_str(&renkei(&["cert", "list", "--json"])).unwrap();
    let serial = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kyoto")
        .unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let compliance = |renkei: &dyn Fn(&[&str]) -> String| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&renkei(&["compliance", "--json"])).unwrap();
        v["facilities"][0].clone()
    };
    let c = compliance(&renkei);
    assert!(
        c["auth"].as_str().unwrap().contains(&serial)
            && c["auth"].as_str().unwrap().contains("ecdsa-p384"),
        "{c}"
    );
    renkei(&["cert", "revoke", "kyoto"]);
    let c = compliance(&renkei);
    assert!(
        c["findings"].to_string().contains("no current certificate"),
        "{c}"
    );
    let crl = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-CAfile"])
        .arg(state.join("ca/ca.pem"))
        .arg("-in")
        .arg(state.join("ca/crl.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&crl.stdout).to_lowercase();
    assert!(crl.status.success(), "openssl crl: {crl:?}");
    assert!(
        String::from_utf8_lossy(&crl.stderr).contains("verify OK"),
        "CRL signature: {crl:?}"
    );
    assert!(
        text.contains(&serial),
        "serial {serial} not in the CRL:\n{text}"
    );
    let audit = renkei(&["audit", "show", "--json"]);
    assert!(audit.contains("cert.issue") && audit.contains("cert.revoke"));
    // A P-256 CA is offered; an Ed25519 CA is refused and leaves nothing.
    for (key, ok) in [("ecdsa-p256", true), ("ed25519", false)] {
        let other = dir.join(format!("state-{key}"));
        let o = renkei_interop_tests::renkei_command()
            .arg("--state")
            .arg(&other)
            .args(["init", "--hub-id", "hub.example", "--ca-key", key])
            .output()
            .unwrap();
        assert_eq!(o.status.success(), ok, "init --ca-key {key}: {o:?}");
        assert_eq!(other.join("ca/ca.pem").exists(), ok);
        assert_eq!(other.join("registry.db").exists(), ok, "{key}: registry");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Revoking a connected facility's certificate closes its tunnel at once,
/// and it cannot come back.
#[test]
fn revoking_a_connected_facility_closes_its_tunnel() {
    let lab = Lab::start(facility("ecdsa-p256", Role::SwanInitiates));
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let out = lab.renkei(&["cert", "revoke", "kyoto"]);
    assert!(out.status.success(), "{out:?}");
    lab.wait_for("the tunnel to close", Duration::from_secs(15), |lab| {
        lab.facility_status()["state"] != "up" && lab.swan_sa_count() == 0
    });
    assert!(!lab.swan_initiate(), "a revoked facility connected again");
    assert!(lab.hub_log().contains("is revoked"));
}

/// The swanctl configuration `renkei export` writes for a certificate
/// facility loads unchanged next to the files `cert issue` wrote, and
/// connects.
#[test]
fn exported_swanctl_config_for_a_certificate_facility_connects() {
    let lab = Lab::start(facility("ecdsa-p256", Role::SwanInitiates));
    let out = lab.renkei(&["export", "kyoto", "--format", "swanctl"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("auth = pubkey") && !text.contains("secrets"),
        "{text}"
    );
    lab.load_swanctl_conf("exported-swanctl.conf", text.as_bytes());
    // start_action = start: strongSwan connects by itself once loaded.
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3));
}

/// The swanctl configuration `renkei export` writes for a facility with a
/// distinguished-name identity (`id = "C=JP, …"`, which strongSwan encodes
/// itself) loads unchanged and connects.
#[test]
fn exported_swanctl_config_for_a_distinguished_name_facility_connects() {
    const DN: &str = "C=JP, O=Kyoto Hospital, CN=kyoto.example.jp";
    let mut f = facility("ecdsa-p256", Role::SwanInitiates);
    f.dn_id = Some(DN.into());
    let lab = Lab::start(f);
    let out = lab.renkei(&["export", "kyoto", "--format", "swanctl"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("id = \"{DN}\"")), "{text}");
    lab.load_swanctl_conf("exported-swanctl.conf", text.as_bytes());
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3));
    assert!(lab
        .charon_log()
        .contains(&format!("authentication of '{DN}' (myself)")));
}
