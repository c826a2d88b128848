//! Messages captured from strongSwan 5.9.8 (Debian 12) talking to renkei,
//! kept as test data: they must decode, and re-encode byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ike::wire::*;
use ike::{Config, Endpoint};
use pki::Identity;
use std::time::Instant;

const SA_INIT_REQUEST: &[u8] = include_bytes!("data/strongswan-ike-sa-init-request.bin");
const SA_INIT_RESPONSE: &[u8] = include_bytes!("data/strongswan-ike-sa-init-response.bin");
const AUTH_REQUEST: &[u8] = include_bytes!("data/strongswan-ike-auth-request.bin");
const AUTH_RESPONSE: &[u8] = include_bytes!("data/strongswan-ike-auth-response.bin");

fn decode(msg: &[u8]) -> (HeaderRepr, Vec<Payload>) {
    let h = HeaderRepr::parse(msg).unwrap();
    (h, parse_chain(h.next_payload, &msg[HEADER_LEN..]).unwrap())
}

fn encode(h: &HeaderRepr, payloads: &[Payload]) -> Vec<u8> {
    let (first, body) = emit_chain(payloads).unwrap();
    let mut out = Vec::new();
    HeaderRepr {
        next_payload: first,
        length: (HEADER_LEN + body.len()) as u32,
        ..*h
    }
    .emit(&mut out);
    out.extend_from_slice(&body);
    out
}

#[test]
fn captures_round_trip_byte_for_byte() {
    for msg in [
        SA_INIT_REQUEST,
        SA_INIT_RESPONSE,
        AUTH_REQUEST,
        AUTH_RESPONSE,
    ] {
        let (h, payloads) = decode(msg);
        assert_eq!(encode(&h, &payloads), msg);
    }
}

#[test]
fn strongswan_ike_sa_init_request_contents() {
    let (h, payloads) = decode(SA_INIT_REQUEST);
    assert_eq!(h.exchange, ExchangeType::IkeSaInit);
    assert!(h.flags.initiator() && !h.flags.response());
    let kinds: Vec<PayloadType> = payloads.iter().map(Payload::kind).collect();
    assert_eq!(
        &kinds[..3],
        &[PayloadType::Sa, PayloadType::Ke, PayloadType::Nonce]
    );
    let notifies: Vec<NotifyType> = payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Notify(n) => Some(n.kind),
            _ => None,
        })
        .collect();
    for n in [
        NotifyType::NatDetectionSourceIp,
        NotifyType::NatDetectionDestinationIp,
        NotifyType::Ikev2FragmentationSupported,
        NotifyType::SignatureHashAlgorithms,
        NotifyType::RedirectSupported,
    ] {
        assert!(notifies.contains(&n), "{n} missing from {notifies:?}");
    }
    let Payload::Sa(proposals) = &payloads[0] else {
        panic!()
    };
    assert_eq!(
        ike::proposal::describe_offer(proposals),
        "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256"
    );
}

#[test]
fn a_fresh_hub_answers_the_captured_request() {
    let mut hub = Endpoint::new(Config::new(
        Identity::parse("hub.example").unwrap(),
        [5; 32],
    ));
    let now = Instant::now();
    hub.handle_datagram(
        now,
        "192.0.2.2:500".parse().unwrap(),
        "192.0.2.1:500".parse().unwrap(),
        SA_INIT_REQUEST,
    );
    let reply = hub.poll_transmit().expect("a response");
    let (h, payloads) = decode(&reply.contents);
    assert!(h.flags.response() && h.spi_r != 0);
    let Some(Payload::Sa(chosen)) = payloads.first() else {
        panic!("{payloads:?}")
    };
    assert_eq!(
        ike::proposal::describe_offer(chosen),
        "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256"
    );
    assert_eq!(hub.status().len(), 1);
}

#[test]
fn encrypted_messages_are_a_single_sk_payload() {
    for msg in [AUTH_REQUEST, AUTH_RESPONSE] {
        let (h, payloads) = decode(msg);
        assert_eq!(h.exchange, ExchangeType::IkeAuth);
        assert!(matches!(payloads.as_slice(), [Payload::Sk { .. }]));
    }
}
