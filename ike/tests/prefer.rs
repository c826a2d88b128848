//! Key exchange methods that stay compliant after 2030 (CRYPTREC: MODP-2048
//! is 112-bit, usable only until 2030-12-31) are preferred: by the hub as
//! responder, against the default offers of Libreswan 4.10 and strongSwan
//! 5.9.8, with the per-facility `ke_upgrade` switch for routers that
//! mishandle an INVALID_KE_PAYLOAD; and by the hub as initiator, unless a
//! facility takes MODP-2048 only (YAMAHA RTX).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::net::SocketAddr;
use std::time::Instant;

use ike::crypto::KeyExchange;
use ike::proposal::{KeChoice, ProposalSet, Protocol};
use ike::wire::*;
use ike::{Config, Endpoint};
use pki::Identity;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use util::*;

fn addr(ip: &str) -> SocketAddr {
    format!("{ip}:500").parse().unwrap()
}

fn default_ike() -> ProposalSet {
    ProposalSet::default_for(Protocol::Ike)
}

fn accepted(choice: Option<KeChoice>) -> String {
    match choice {
        Some(KeChoice::Accept(suite, _)) => suite.to_string(),
        other => panic!("not accepted: {other:?}"),
    }
}

#[test]
fn libreswan_4_10_defaults_get_a_compliant_group() {
    let offer = libreswan_4_10_default_ike();
    // Libreswan's KE payload is MODP-2048, its first group; it also offers
    // MODP-3072, the first compliant one in its order: ask for that.
    assert_eq!(
        default_ike().select_ike_for_ke(&offer, KeId::Modp2048, true),
        Some(KeChoice::AskFor(KeId::Modp3072))
    );
    // Its retry is taken as sent.
    assert_eq!(
        accepted(default_ike().select_ike_for_ke(&offer, KeId::Modp3072, true)),
        "aes256gcm16-prfsha512-modp3072"
    );
    // With `ke_upgrade` off, its first KE payload is taken.
    assert_eq!(
        accepted(default_ike().select_ike_for_ke(&offer, KeId::Modp2048, false)),
        "aes256gcm16-prfsha512-modp2048"
    );
}

#[test]
fn strongswan_5_9_8_defaults_get_a_compliant_group() {
    let offer = strongswan_5_9_8_default_ike();
    for upgrade in [true, false] {
        assert_eq!(
            accepted(default_ike().select_ike_for_ke(&offer, KeId::Ecp256, upgrade)),
            "aes128-sha256-prfsha256-ecp256"
        );
    }
    // Even a strongSwan told to send MODP-2048 first is moved to ECP-256.
    assert_eq!(
        default_ike().select_ike_for_ke(&offer, KeId::Modp2048, true),
        Some(KeChoice::AskFor(KeId::Ecp256))
    );
}

#[test]
fn modp2048_alone_is_still_accepted() {
    // YAMAHA RTX with `proposal-limitation on`.
    let yamaha = ProposalSet::parse("aes256-sha256-modp2048", Protocol::Ike, false)
        .unwrap()
        .to_wire(&[], true);
    for upgrade in [true, false] {
        assert_eq!(
            accepted(default_ike().select_ike_for_ke(&yamaha, KeId::Modp2048, upgrade)),
            "aes256-sha256-prfsha256-modp2048"
        );
    }
    let mut p = Pair::new(
        PSK,
        "aes256-sha256-modp2048",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    p.establish();
    assert_eq!(child_ups(&p.hub.events).len(), 1);
    assert_eq!(
        p.hub.ep.status()[0].suite.unwrap().to_string(),
        "aes256-sha256-prfsha256-modp2048"
    );
}

/// Sends the hub an IKE_SA_INIT from [`SITE`] with `offer` and a KE payload
/// of `group`; returns the hub's answer: its KE payload's group, or the
/// group an INVALID_KE_PAYLOAD names.
fn init_answer(hub: &mut Endpoint, offer: &[Proposal], group: KeId, spi_i: u64) -> Answer {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let (_, public) = KeyExchange::generate(group, &mut rng).unwrap();
    let payloads = [
        Payload::Sa(offer.to_vec()),
        Payload::Ke {
            group,
            data: public,
        },
        Payload::Nonce(vec![0x33; 32]),
    ];
    let (first, body) = emit_chain(&payloads).unwrap();
    let mut m = Vec::new();
    HeaderRepr {
        spi_i,
        spi_r: 0,
        next_payload: first,
        exchange: ExchangeType::IkeSaInit,
        flags: Flags::new(true, false),
        message_id: 0,
        length: (HEADER_LEN + body.len()) as u32,
    }
    .emit(&mut m);
    m.extend_from_slice(&body);
    hub.handle_datagram(Instant::now(), addr(SITE), addr(HUB), &m);
    let reply = hub.poll_transmit().expect("an answer").contents;
    let h = HeaderRepr::parse(&reply).unwrap();
    let payloads = parse_chain(h.next_payload, &reply[HEADER_LEN..]).unwrap();
    if let Some(n) = payloads
        .notifies()
        .find(|n| n.kind == NotifyType::InvalidKePayload)
    {
        return Answer::InvalidKe(KeId::from(u16::from_be_bytes([n.data[0], n.data[1]])));
    }
    Answer::Ke(payloads.ke().expect("KE").0)
}

#[derive(Debug, PartialEq)]
enum Answer {
    Ke(KeId),
    InvalidKe(KeId),
}

fn hub_with_kyoto(ke_upgrade: bool) -> Endpoint {
    let mut hub = Endpoint::new(Config::new(
        Identity::parse("hub.example").unwrap(),
        [1; 32],
    ));
    let mut kyoto = kyoto_at_hub();
    kyoto.remote_addr = Some(addr(SITE));
    kyoto.ke_upgrade = ke_upgrade;
    hub.set_peer(kyoto).unwrap();
    hub
}

#[test]
fn the_hub_asks_libreswan_for_a_compliant_group_unless_told_not_to() {
    let offer = libreswan_4_10_default_ike();
    // Default: one INVALID_KE_PAYLOAD round trip to MODP-3072.
    let mut hub = hub_with_kyoto(true);
    assert_eq!(
        init_answer(&mut hub, &offer, KeId::Modp2048, 1),
        Answer::InvalidKe(KeId::Modp3072)
    );
    assert_eq!(
        init_answer(&mut hub, &offer, KeId::Modp3072, 2),
        Answer::Ke(KeId::Modp3072)
    );
    // A facility at SITE whose router mishandles that recovery: its
    // MODP-2048 is taken at once.
    let mut hub = hub_with_kyoto(false);
    assert_eq!(
        init_answer(&mut hub, &offer, KeId::Modp2048, 3),
        Answer::Ke(KeId::Modp2048)
    );
    // Turned back on, and for a facility removed, the hub asks again.
    let mut kyoto = kyoto_at_hub();
    kyoto.remote_addr = Some(addr(SITE));
    hub.set_peer(kyoto).unwrap();
    assert_eq!(
        init_answer(&mut hub, &offer, KeId::Modp2048, 4),
        Answer::InvalidKe(KeId::Modp3072)
    );
    // A facility at SITE configured for MODP-2048 only would fail
    // IKE_AUTH with any other group: it is not asked either.
    let mut yamaha = kyoto_at_hub();
    yamaha.remote_addr = Some(addr(SITE));
    yamaha.ike = ProposalSet::parse("aes256-sha256-modp2048", Protocol::Ike, false).unwrap();
    hub.set_peer(yamaha).unwrap();
    let cbc = &offer[2..];
    assert_eq!(
        init_answer(&mut hub, cbc, KeId::Modp2048, 6),
        Answer::Ke(KeId::Modp2048)
    );
    let mut hub = hub_with_kyoto(false);
    hub.remove_peer(Instant::now(), "kyoto").unwrap();
    assert_eq!(
        init_answer(&mut hub, &offer, KeId::Modp2048, 5),
        Answer::InvalidKe(KeId::Modp3072)
    );
}

#[test]
fn the_hub_answers_strongswan_defaults_with_ecp256_at_once() {
    let mut hub = hub_with_kyoto(true);
    assert_eq!(
        init_answer(&mut hub, &strongswan_5_9_8_default_ike(), KeId::Ecp256, 1),
        Answer::Ke(KeId::Ecp256)
    );
}

/// The group of the KE payload the hub sends first to a facility
/// configured with `ike`.
fn first_ke_sent(ike: &str) -> KeId {
    let mut hub = Endpoint::new(Config::new(
        Identity::parse("hub.example").unwrap(),
        [1; 32],
    ));
    hub.set_peer(peer(
        "osaka",
        "osaka.example",
        PSK,
        "203.0.113.0/25",
        "198.51.100.128/26",
        Some(SITE),
        ike,
    ))
    .unwrap();
    hub.initiate(Instant::now(), "osaka").unwrap();
    let m = hub.poll_transmit().unwrap().contents;
    let h = HeaderRepr::parse(&m).unwrap();
    let payloads = parse_chain(h.next_payload, &m[HEADER_LEN..]).unwrap();
    let sa = payloads.sa().unwrap();
    let first_listed = sa[0]
        .transforms
        .iter()
        .find(|t| t.kind == TransformType::Ke)
        .map(|t| KeId::from(t.id))
        .unwrap();
    let sent = payloads.ke().unwrap().0;
    assert_eq!(
        sent, first_listed,
        "the KE payload is the first group offered"
    );
    sent
}

#[test]
fn the_hub_as_initiator_leads_with_a_compliant_group() {
    assert_eq!(first_ke_sent(ike::proposal::DEFAULT_IKE), KeId::Ecp256);
    assert_eq!(
        first_ke_sent("aes256-sha256-modp2048-modp3072"),
        KeId::Modp3072
    );
    assert_eq!(
        first_ke_sent("aes256-sha256-modp2048,aes256gcm16-prfsha256-ecp384"),
        KeId::Ecp384
    );
    // YAMAHA RTX: MODP-2048 only, so MODP-2048 first.
    assert_eq!(first_ke_sent("aes256-sha256-modp2048"), KeId::Modp2048);
}
