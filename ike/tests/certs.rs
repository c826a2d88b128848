//! Certificate authentication (RFC 7427) between two simulated endpoints
//! with certificates from one CA: every key type renkei issues, both
//! directions, and each reason a certificate must be refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::sync::Arc;

use ike::wire::NotifyType;
use ike::{Config, Credentials, Endpoint, PeerAuth};
use pki::ca::{Ca, Issued, KeyKind};
use pki::sig::SigningKey;
use pki::verify::TrustStore;
use pki::Identity;
use util::*;

/// The simulated wall clock (2026-09-21).
const NOW: i64 = 1_790_000_000;

struct Setup {
    ca: Ca,
    hub_cert: Issued,
    site_cert: Issued,
    /// Serials the hub's trust store lists as revoked.
    hub_revokes: Vec<String>,
    /// Wall-clock time the hub believes it is (None: never told).
    hub_clock: Option<i64>,
    /// Both sides' RFC 7383 fragment size.
    fragment_size: usize,
}

fn id(s: &str) -> Identity {
    Identity::parse(s).unwrap()
}

fn setup(site_kind: KeyKind, hub_kind: KeyKind) -> Setup {
    let ca = Ca::create(KeyKind::EcdsaP384, "Test Network", NOW - 86_400, 3650).unwrap();
    let hub_cert = ca
        .issue(&id("hub.example"), hub_kind, NOW - 86_400, 365)
        .unwrap();
    let site_cert = ca
        .issue(&id("kyoto.example"), site_kind, NOW - 86_400, 365)
        .unwrap();
    Setup {
        ca,
        hub_cert,
        site_cert,
        hub_revokes: vec![],
        hub_clock: Some(NOW),
        fragment_size: 1280,
    }
}

fn endpoint(local: &str, seed: u8, cert: &Issued, trust: TrustStore, frag: usize) -> Endpoint {
    let mut cfg = Config::new(id(local), [seed; 32]);
    cfg.fragment_size = frag;
    cfg.credentials = Some(Arc::new(Credentials {
        key: SigningKey::from_pkcs8(&cert.key_der).unwrap(),
        cert_der: cert.cert_der.clone(),
    }));
    cfg.trust = Some(Arc::new(trust));
    Endpoint::new(cfg)
}

fn pair(s: &Setup) -> Pair {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    let ca_der = s.ca.cert_der();
    p.hub.ep = endpoint(
        "hub.example",
        1,
        &s.hub_cert,
        TrustStore::new(ca_der, s.hub_revokes.clone()).unwrap(),
        s.fragment_size,
    );
    p.site.ep = endpoint(
        "kyoto.example",
        2,
        &s.site_cert,
        TrustStore::new(ca_der, []).unwrap(),
        s.fragment_size,
    );
    if let Some(t) = s.hub_clock {
        p.hub.ep.set_wall_clock(p.now, t);
    }
    p.site.ep.set_wall_clock(p.now, NOW);
    let mut at_hub = kyoto_at_hub();
    at_hub.auth = PeerAuth::Cert;
    at_hub.remote_addr = Some(format!("{SITE}:500").parse().unwrap());
    p.hub.ep.set_peer(at_hub).unwrap();
    let mut at_site = hub_at_kyoto("203.0.113.0/25", "aes256gcm16-prfsha256-ecp256");
    at_site.auth = PeerAuth::Cert;
    p.site.ep.set_peer(at_site).unwrap();
    p
}

fn established(p: &Pair) -> bool {
    child_ups(&p.hub.events).len() == 1 && child_ups(&p.site.events).len() == 1
}

#[test]
fn every_issued_key_type_authenticates_both_ways() {
    for hub_kind in [KeyKind::EcdsaP384, KeyKind::Rsa3072] {
        for site_kind in KeyKind::ALL {
            let s = setup(site_kind, hub_kind);
            let mut p = pair(&s);
            p.establish();
            assert!(established(&p), "site {site_kind} → hub {hub_kind}");
            p.assert_consistent();

            let mut p = pair(&s);
            p.hub.ep.initiate(p.now, "kyoto").unwrap();
            p.quiet();
            assert!(established(&p), "hub {hub_kind} → site {site_kind}");
            p.assert_consistent();
        }
    }
}

/// The facility's attempt is refused by the hub with AUTHENTICATION_FAILED
/// and neither side has a Child SA.
fn assert_refused(s: &Setup, why: &str) {
    let mut p = pair(s);
    p.establish();
    assert!(
        child_ups(&p.hub.events).is_empty() && child_ups(&p.site.events).is_empty(),
        "{why}: a Child SA came up"
    );
    assert_eq!(
        refusals(&p.hub.events),
        vec![NotifyType::AuthenticationFailed],
        "{why}"
    );
    let reason = p
        .hub
        .events
        .iter()
        .find_map(|e| match e {
            ike::Event::Refused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains(why), "'{reason}' does not say '{why}'");
}

#[test]
fn refused_certificates() {
    let mut s = setup(KeyKind::EcdsaP256, KeyKind::EcdsaP384);
    s.hub_revokes = vec![s.site_cert.serial.clone()];
    assert_refused(&s, "is revoked");

    let mut s = setup(KeyKind::EcdsaP256, KeyKind::EcdsaP384);
    s.hub_clock = Some(NOW + 400 * 86_400);
    assert_refused(&s, "certificate expired");

    let mut s = setup(KeyKind::EcdsaP256, KeyKind::EcdsaP384);
    s.hub_clock = None;
    assert_refused(&s, "wall clock is not set");

    let mut s = setup(KeyKind::EcdsaP256, KeyKind::EcdsaP384);
    s.site_cert =
        s.ca.issue(&id("osaka.example"), KeyKind::EcdsaP256, NOW - 10, 30)
            .unwrap();
    assert_refused(&s, "is not in the certificate");

    let mut s = setup(KeyKind::EcdsaP256, KeyKind::EcdsaP384);
    let other = Ca::create(KeyKind::EcdsaP256, "Other Network", NOW - 10, 30).unwrap();
    s.site_cert = other
        .issue(&id("kyoto.example"), KeyKind::EcdsaP256, NOW - 10, 30)
        .unwrap();
    assert_refused(&s, "not by this hub's CA");
}

/// The hub refused the facility with AUTHENTICATION_FAILED; no Child SA.
fn assert_hub_refused(p: &Pair) {
    assert!(child_ups(&p.hub.events).is_empty());
    assert_eq!(
        refusals(&p.hub.events),
        vec![NotifyType::AuthenticationFailed]
    );
}

#[test]
fn a_facility_must_use_the_method_it_is_configured_for() {
    // The hub expects a certificate; the facility proves a PSK.
    let s = setup(KeyKind::EcdsaP256, KeyKind::EcdsaP384);
    let mut p = pair(&s);
    p.site
        .ep
        .set_peer(hub_at_kyoto(
            "203.0.113.0/25",
            "aes256gcm16-prfsha256-ecp256",
        ))
        .unwrap();
    p.establish();
    assert_hub_refused(&p);

    // The hub expects a PSK; the facility signs.
    let mut p = pair(&s);
    p.hub.ep.set_peer(kyoto_at_hub()).unwrap();
    p.establish();
    assert_hub_refused(&p);
}

#[test]
fn a_signature_over_other_octets_is_refused() {
    // The site signs with a key that is not the one in its certificate:
    // its certificate validates, its AUTH does not.
    let s = setup(KeyKind::EcdsaP256, KeyKind::EcdsaP384);
    let impostor =
        s.ca.issue(&id("kyoto.example"), KeyKind::EcdsaP256, NOW - 10, 30)
            .unwrap();
    let mut p = pair(&s);
    let mut cfg = Config::new(id("kyoto.example"), [2; 32]);
    cfg.credentials = Some(Arc::new(Credentials {
        key: SigningKey::from_pkcs8(&impostor.key_der).unwrap(),
        cert_der: s.site_cert.cert_der.clone(),
    }));
    cfg.trust = Some(Arc::new(TrustStore::new(s.ca.cert_der(), []).unwrap()));
    p.site.ep = Endpoint::new(cfg);
    p.site.ep.set_wall_clock(p.now, NOW);
    let mut at_site = hub_at_kyoto("203.0.113.0/25", "aes256gcm16-prfsha256-ecp256");
    at_site.auth = PeerAuth::Cert;
    p.site.ep.set_peer(at_site).unwrap();
    p.establish();
    assert_hub_refused(&p);
}

#[test]
fn rsa_certificates_need_fragments_below_their_size() {
    let mut s = setup(KeyKind::Rsa3072, KeyKind::Rsa3072);
    let sizes = |s: &Setup| {
        let mut p = pair(s);
        let mut largest = 0;
        let mut count = 0;
        p.site.ep.initiate(p.now, "hub").unwrap();
        p.run(&mut |_, _, t| {
            largest = largest.max(t.contents.len());
            count += 1;
            false
        });
        assert!(established(&p));
        (largest, count)
    };
    s.fragment_size = 9000;
    let (whole, messages) = sizes(&s);
    assert!(
        whole > 1280,
        "an RSA-3072 IKE_AUTH of {whole} bytes would fit a 1280-byte path"
    );
    assert_eq!(messages, 4);
    s.fragment_size = 1280;
    let (largest, datagrams) = sizes(&s);
    assert!(largest <= 1280, "largest datagram {largest}");
    assert!(datagrams > 4, "{datagrams} datagrams");
}

/// A facility known by a distinguished name (RFC 7296 §3.5
/// ID_DER_ASN1_DN): it sends its certificate's subject as IDi, the hub
/// finds it by that DN although the operator wrote it in other case and
/// spacing, and checks it is the certificate's subject (RFC 4945 §3.1.5).
/// Both directions: as responder the hub looks the facility up by IDi, as
/// initiator it compares the IDr it gets with the configured DN.
#[test]
fn a_distinguished_name_facility_is_found_by_its_certificate_subject() {
    const SUBJECT: &str = "C=JP, O=Kyoto Hospital, OU=Radiology, CN=kyoto.example.jp";
    const WRITTEN: &str = "c=jp,o=KYOTO  HOSPITAL , ou=radiology, cn=Kyoto.Example.JP";
    let dn_setup = || {
        let mut s = setup(KeyKind::EcdsaP256, KeyKind::EcdsaP384);
        s.site_cert =
            s.ca.issue(&id(SUBJECT), KeyKind::EcdsaP256, NOW - 10, 30)
                .unwrap();
        s
    };
    let dn_pair = |s: &Setup, hub_knows: &str| {
        let mut p = pair(s);
        p.site.ep = endpoint(
            SUBJECT,
            2,
            &s.site_cert,
            TrustStore::new(s.ca.cert_der(), []).unwrap(),
            s.fragment_size,
        );
        p.site.ep.set_wall_clock(p.now, NOW);
        let mut at_site = hub_at_kyoto("203.0.113.0/25", "aes256gcm16-prfsha256-ecp256");
        at_site.auth = PeerAuth::Cert;
        p.site.ep.set_peer(at_site).unwrap();
        let mut at_hub = kyoto_at_hub();
        at_hub.remote_id = id(hub_knows);
        at_hub.auth = PeerAuth::Cert;
        at_hub.remote_addr = Some(format!("{SITE}:500").parse().unwrap());
        p.hub.ep.set_peer(at_hub).unwrap();
        p
    };
    let s = dn_setup();
    let mut p = dn_pair(&s, WRITTEN);
    p.establish();
    assert!(established(&p), "facility → hub");
    p.assert_consistent();
    let mut p = dn_pair(&s, WRITTEN);
    p.hub.ep.initiate(p.now, "kyoto").unwrap();
    p.quiet();
    assert!(established(&p), "hub → facility");

    // Another DN is no facility's; the refusal names it as written.
    let refusal = |p: &Pair| {
        p.hub
            .events
            .iter()
            .find_map(|e| match e {
                ike::Event::Refused { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .unwrap()
    };
    let mut p = dn_pair(&s, "C=JP, O=Nara Hospital, CN=nara.example.jp");
    p.establish();
    assert_hub_refused(&p);
    let reason = refusal(&p);
    assert!(
        reason.contains(&format!("no facility has identity {SUBJECT}")),
        "{reason}"
    );

    // The facility claims its DN with a certificate of another subject.
    let mut s = dn_setup();
    s.site_cert =
        s.ca.issue(
            &id("C=JP, O=Kyoto Hospital, OU=Surgery, CN=kyoto.example.jp"),
            KeyKind::EcdsaP256,
            NOW - 10,
            30,
        )
        .unwrap();
    let mut p = dn_pair(&s, WRITTEN);
    p.establish();
    assert_hub_refused(&p);
    let reason = refusal(&p);
    assert!(
        reason.contains(&format!("identity {SUBJECT} is not in the certificate")),
        "{reason}"
    );
}
