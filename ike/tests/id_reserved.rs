//! RFC 7296 §2.15: AUTH covers the ID payload as it was sent — ID type, the
//! three RESERVED octets and the identification data — so a peer that puts
//! something other than zeros in RESERVED (Libreswan can, with `impair
//! send-nonzero-reserved-id`) must still be authenticated.
//!
//! The peer here is written out by hand from the RFC with the crate's
//! public codec and crypto, so that it can send an IDi or IDr no renkei
//! endpoint would: the hub as responder verifies such an IDi, and as
//! initiator such an IDr, with a PSK and with an ECDSA certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ike::crypto::{Encr, KeyExchange, Prf, SkCipher};
use ike::proposal::{ProposalSet, Protocol};
use ike::wire::*;
use ike::{Config, Credentials, Endpoint, Event, PeerAuth, PeerConfig};
use pki::ca::{Ca, Issued, KeyKind};
use pki::sig::{Hash, Scheme, SigningKey};
use pki::verify::TrustStore;
use pki::Identity;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use util::*;
use zeroize::Zeroizing;

/// The simulated wall clock (2026-09-21).
const NOW: i64 = 1_790_000_000;
const SUITE: &str = "aes256gcm16-prfsha256-ecp256";
const PRF: Prf = Prf::HmacSha256;
const ENCR: Encr = Encr::AesGcm16 { bits: 256 };
/// FQDN (RFC 7296 §3.5).
const ID_FQDN: u8 = 2;

fn id(s: &str) -> Identity {
    Identity::parse(s).unwrap()
}

fn addr(ip: &str) -> SocketAddr {
    format!("{ip}:500").parse().unwrap()
}

/// How the hand-written peer authenticates.
enum How {
    Psk,
    Cert(Issued),
}

struct Keys {
    sk_pi: Vec<u8>,
    sk_pr: Vec<u8>,
    i2r: SkCipher,
    r2i: SkCipher,
}

/// RFC 7296 §2.14 for an AEAD suite (no SK_a).
fn derive(shared: &[u8], ni: &[u8], nr: &[u8], spi_i: u64, spi_r: u64) -> Keys {
    let skeyseed = PRF.prf(&[ni, nr].concat(), &[shared]);
    let seed = [ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
    let (n, e) = (PRF.output_len(), ENCR.keymat_len());
    let km = PRF.prf_plus(&skeyseed, &seed, 3 * n + 2 * e);
    let part = |at: usize, len: usize| Zeroizing::new(km[at..at + len].to_vec());
    Keys {
        i2r: SkCipher::new(ENCR, None, part(n, e), Zeroizing::new(vec![])),
        r2i: SkCipher::new(ENCR, None, part(n + e, e), Zeroizing::new(vec![])),
        sk_pi: part(n + 2 * e, n).to_vec(),
        sk_pr: part(2 * n + 2 * e, n).to_vec(),
    }
}

fn plain(h: HeaderRepr, payloads: &[Payload]) -> Vec<u8> {
    let (first, body) = emit_chain(payloads).unwrap();
    let mut out = Vec::new();
    HeaderRepr {
        next_payload: first,
        length: (HEADER_LEN + body.len()) as u32,
        ..h
    }
    .emit(&mut out);
    out.extend_from_slice(&body);
    out
}

fn sealed(h: HeaderRepr, cipher: &SkCipher, payloads: &[Payload]) -> Vec<u8> {
    let (first, inner) = emit_chain(payloads).unwrap();
    let body_len = cipher.sealed_len(inner.len());
    let mut m = Vec::new();
    HeaderRepr {
        next_payload: PayloadType::Sk,
        length: (HEADER_LEN + 4 + body_len) as u32,
        ..h
    }
    .emit(&mut m);
    m.push(first.into());
    m.push(0);
    m.extend_from_slice(&((4 + body_len) as u16).to_be_bytes());
    let body = cipher
        .seal(&m, &inner, &mut ChaCha20Rng::from_seed([9; 32]))
        .unwrap();
    m.extend_from_slice(&body);
    m
}

fn opened(msg: &[u8], cipher: &SkCipher) -> (HeaderRepr, Vec<Payload>) {
    let h = HeaderRepr::parse(msg).unwrap();
    assert_eq!(h.next_payload, PayloadType::Sk, "an encrypted message");
    let first = PayloadType::from(msg[HEADER_LEN]);
    let inner = cipher
        .open(&msg[..HEADER_LEN + 4], &msg[HEADER_LEN + 4..])
        .unwrap();
    (h, parse_chain(first, &inner).unwrap())
}

fn decode(msg: &[u8]) -> (HeaderRepr, Vec<Payload>) {
    let h = HeaderRepr::parse(msg).unwrap();
    (h, parse_chain(h.next_payload, &msg[HEADER_LEN..]).unwrap())
}

/// `SignedOctets = RealMessage | NonceOfOtherSide | prf(SK_p, RestOfIDPayload)`
/// with `RestOfIDPayload` exactly as the peer puts it on the wire, and the
/// AUTH payload (and CERT) proving it (RFC 7296 §2.15, RFC 7427).
fn proof(how: &How, message: &[u8], nonce: &[u8], sk_p: &[u8], id: &[u8]) -> Vec<Payload> {
    let octets = [message, nonce, &PRF.prf(sk_p, &[id])].concat();
    match how {
        How::Psk => {
            let key = PRF.prf(PSK.as_bytes(), &[b"Key Pad for IKEv2"]);
            vec![Payload::Auth {
                method: AuthMethod::SharedKeyMic,
                data: PRF.prf(&key, &[&octets]).to_vec(),
            }]
        }
        How::Cert(issued) => {
            let key = SigningKey::from_pkcs8(&issued.key_der).unwrap();
            let scheme = Scheme::Ecdsa(Hash::Sha256);
            let ai = scheme.algorithm_identifier();
            let mut data = vec![ai.len() as u8];
            data.extend_from_slice(&ai);
            data.extend_from_slice(&key.sign(scheme, &octets).unwrap());
            vec![
                Payload::Cert {
                    encoding: 4,
                    data: issued.cert_der.clone(),
                },
                Payload::Auth {
                    method: AuthMethod::DigitalSignature,
                    data,
                },
            ]
        }
    }
}

/// SIGNATURE_HASH_ALGORITHMS with SHA2-256/384/512 (RFC 7427 §4).
fn sig_hashes() -> Payload {
    Payload::Notify(Notify::new(
        NotifyType::SignatureHashAlgorithms,
        vec![0, 2, 0, 3, 0, 4],
    ))
}

/// The hub, with facility "kyoto" at [`SITE`] authenticating as `how` says.
fn hub(how: &How, ca: &Ca, hub_cert: &Issued, now: Instant) -> Endpoint {
    let mut cfg = Config::new(id("hub.example"), [1; 32]);
    // The hand-written facility below sends no NAT_DETECTION and stays on
    // port 500: a hub that does not insist on ESP in UDP accepts it.
    cfg.force_encap = false;
    cfg.credentials = Some(Arc::new(Credentials {
        key: SigningKey::from_pkcs8(&hub_cert.key_der).unwrap(),
        cert_der: hub_cert.cert_der.clone(),
    }));
    cfg.trust = Some(Arc::new(TrustStore::new(ca.cert_der(), []).unwrap()));
    let mut hub = Endpoint::new(cfg);
    hub.set_wall_clock(now, NOW);
    let mut kyoto: PeerConfig = peer(
        "kyoto",
        "kyoto.example",
        PSK,
        "203.0.113.0/25",
        "198.51.100.0/26",
        Some(SITE),
        SUITE,
    );
    if let How::Cert(_) = how {
        kyoto.auth = PeerAuth::Cert;
    }
    hub.set_peer(kyoto).unwrap();
    hub
}

fn fixtures() -> (Ca, Issued, Issued) {
    let ca = Ca::create(KeyKind::EcdsaP384, "Test Network", NOW - 86_400, 3650).unwrap();
    let hub_cert = ca
        .issue(&id("hub.example"), KeyKind::EcdsaP256, NOW - 86_400, 365)
        .unwrap();
    let site_cert = ca
        .issue(&id("kyoto.example"), KeyKind::EcdsaP256, NOW - 86_400, 365)
        .unwrap();
    (ca, hub_cert, site_cert)
}

fn ike_sa_up(hub: &mut Endpoint) -> (bool, Vec<Event>) {
    let mut events = Vec::new();
    while let Some(e) = hub.poll_event() {
        events.push(e);
    }
    let up = events.iter().any(|e| matches!(e, Event::IkeSaUp { .. }));
    (up, events)
}

/// The facility initiates; its IDi carries `reserved`. Returns whether the
/// hub brought the IKE SA up and answered without an error notify.
fn facility_initiates(how: &How, (ca, hub_cert): (&Ca, &Issued), reserved: [u8; 3]) -> bool {
    let now = Instant::now();
    let mut hub = hub(how, ca, hub_cert, now);
    let (hub_addr, site_addr) = (addr(HUB), addr(SITE));
    let mut rng = ChaCha20Rng::from_seed([7; 32]);

    // IKE_SA_INIT.
    let spi_i = 0x1111_2222_3333_4444;
    let (kx, ke_i) = KeyExchange::generate(KeId::Ecp256, &mut rng).unwrap();
    let ni = vec![0x11; 32];
    let mut payloads = vec![
        Payload::Sa(
            ProposalSet::parse(SUITE, Protocol::Ike, false)
                .unwrap()
                .to_wire(&[], true),
        ),
        Payload::Ke {
            group: KeId::Ecp256,
            data: ke_i,
        },
        Payload::Nonce(ni.clone()),
    ];
    if let How::Cert(_) = how {
        payloads.push(sig_hashes());
    }
    let header = |exchange, message_id, spi_r| HeaderRepr {
        spi_i,
        spi_r,
        next_payload: PayloadType::NoNext,
        exchange,
        flags: Flags::new(true, false),
        message_id,
        length: 0,
    };
    let message1 = plain(header(ExchangeType::IkeSaInit, 0, 0), &payloads);
    hub.handle_datagram(now, site_addr, hub_addr, &message1);
    let message2 = hub.poll_transmit().expect("IKE_SA_INIT response").contents;
    let (h2, p2) = decode(&message2);
    let (group, ke_r) = p2.ke().expect("KE");
    assert_eq!(group, KeId::Ecp256);
    let nr = p2.nonce().expect("Nonce").clone();
    let shared = kx.shared_secret(ke_r).unwrap();
    let keys = derive(&shared, &ni, &nr, spi_i, h2.spi_r);

    // IKE_AUTH, with IDi's RESERVED as given.
    let data = b"kyoto.example".to_vec();
    let rest_of_id = [&[ID_FQDN][..], &reserved, &data].concat();
    let mut inner = vec![Payload::IdI {
        id_type: ID_FQDN,
        reserved,
        data,
    }];
    inner.extend(proof(how, &message1, &nr, &keys.sk_pi, &rest_of_id));
    inner.extend([
        Payload::Sa(
            ProposalSet::parse("aes256gcm16", Protocol::Esp, false)
                .unwrap()
                .to_wire(&0x0102_0304u32.to_be_bytes(), false),
        ),
        Payload::TsI(vec![TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: "198.51.100.0".parse().unwrap(),
            end: "198.51.100.63".parse().unwrap(),
        }]),
        Payload::TsR(vec![TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: "203.0.113.0".parse().unwrap(),
            end: "203.0.113.127".parse().unwrap(),
        }]),
    ]);
    let message3 = sealed(
        header(ExchangeType::IkeAuth, 1, h2.spi_r),
        &keys.i2r,
        &inner,
    );
    hub.handle_datagram(now, site_addr, hub_addr, &message3);
    let message4 = hub.poll_transmit().expect("IKE_AUTH response").contents;
    let (_, p4) = opened(&message4, &keys.r2i);
    let errors: Vec<NotifyType> = p4
        .notifies()
        .filter(|n| n.kind.is_error())
        .map(|n| n.kind)
        .collect();
    let (up, events) = ike_sa_up(&mut hub);
    assert_eq!(up, errors.is_empty(), "{errors:?} {events:?}");
    up
}

/// The hub initiates to the facility; the facility's IDr carries
/// `reserved`. Returns whether the hub brought the IKE SA up.
fn hub_initiates(how: &How, (ca, hub_cert): (&Ca, &Issued), reserved: [u8; 3]) -> bool {
    let now = Instant::now();
    let mut hub = hub(how, ca, hub_cert, now);
    let (hub_addr, site_addr) = (addr(HUB), addr(SITE));
    let mut rng = ChaCha20Rng::from_seed([8; 32]);

    hub.initiate(now, "kyoto").unwrap();
    let message1 = hub.poll_transmit().expect("IKE_SA_INIT request").contents;
    let (h1, p1) = decode(&message1);
    let (group, ke_i) = p1.ke().expect("KE");
    assert_eq!(group, KeId::Ecp256);
    let ni = p1.nonce().expect("Nonce").clone();
    let (kx, ke_r) = KeyExchange::generate(KeId::Ecp256, &mut rng).unwrap();
    let shared = kx.shared_secret(ke_i).unwrap();
    let spi_r = 0x5555_6666_7777_8888;
    let nr = vec![0x22; 32];
    let header = |exchange, message_id| HeaderRepr {
        spi_i: h1.spi_i,
        spi_r,
        next_payload: PayloadType::NoNext,
        exchange,
        flags: Flags::new(false, true),
        message_id,
        length: 0,
    };
    let mut payloads = vec![
        Payload::Sa(
            ProposalSet::parse(SUITE, Protocol::Ike, false)
                .unwrap()
                .to_wire(&[], true),
        ),
        Payload::Ke {
            group: KeId::Ecp256,
            data: ke_r,
        },
        Payload::Nonce(nr.clone()),
    ];
    if let How::Cert(_) = how {
        payloads.push(sig_hashes());
    }
    let message2 = plain(header(ExchangeType::IkeSaInit, 0), &payloads);
    hub.handle_datagram(now, site_addr, hub_addr, &message2);
    let keys = derive(&shared, &ni, &nr, h1.spi_i, spi_r);

    let message3 = hub.poll_transmit().expect("IKE_AUTH request").contents;
    let (_, p3) = opened(&message3, &keys.i2r);
    let (ts_i, ts_r) = (p3.ts_i().unwrap().clone(), p3.ts_r().unwrap().clone());
    let data = b"kyoto.example".to_vec();
    let rest_of_id = [&[ID_FQDN][..], &reserved, &data].concat();
    let mut inner = vec![Payload::IdR {
        id_type: ID_FQDN,
        reserved,
        data,
    }];
    inner.extend(proof(how, &message2, &ni, &keys.sk_pr, &rest_of_id));
    inner.extend([
        Payload::Sa(
            ProposalSet::parse("aes256gcm16", Protocol::Esp, false)
                .unwrap()
                .to_wire(&0x0a0b_0c0du32.to_be_bytes(), false),
        ),
        Payload::TsI(ts_i),
        Payload::TsR(ts_r),
    ]);
    let message4 = sealed(header(ExchangeType::IkeAuth, 1), &keys.r2i, &inner);
    hub.handle_datagram(now, site_addr, hub_addr, &message4);
    ike_sa_up(&mut hub).0
}

#[test]
fn hub_as_responder_verifies_idi_with_nonzero_reserved() {
    let (ca, hub_cert, site_cert) = fixtures();
    let f = (&ca, &hub_cert);
    for how in [How::Psk, How::Cert(site_cert)] {
        let kind = if matches!(how, How::Psk) {
            "PSK"
        } else {
            "cert"
        };
        assert!(facility_initiates(&how, f, [0; 3]), "{kind}: zero RESERVED");
        assert!(
            facility_initiates(&how, f, [0x01, 0x80, 0xff]),
            "{kind}: non-zero RESERVED must be covered as sent (RFC 7296 §2.15)"
        );
    }
}

#[test]
fn hub_as_initiator_verifies_idr_with_nonzero_reserved() {
    let (ca, hub_cert, site_cert) = fixtures();
    let f = (&ca, &hub_cert);
    for how in [How::Psk, How::Cert(site_cert)] {
        let kind = if matches!(how, How::Psk) {
            "PSK"
        } else {
            "cert"
        };
        assert!(hub_initiates(&how, f, [0; 3]), "{kind}: zero RESERVED");
        assert!(
            hub_initiates(&how, f, [0x5a, 0, 0x01]),
            "{kind}: non-zero RESERVED must be covered as sent (RFC 7296 §2.15)"
        );
    }
}
