//! Denial-of-service protection of the responder: cookies, bounded
//! half-open state, rate-limited error replies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use ike::wire::{parse_chain, HeaderRepr, NotifyType, Payload, HEADER_LEN};
use ike::{Config, Endpoint};
use pki::Identity;
use std::net::SocketAddr;
use std::time::Duration;
use util::*;

/// A genuine IKE_SA_INIT request, to be replayed with other SPIs and sources.
fn init_request() -> Vec<u8> {
    let mut site = Endpoint::new(Config::new(Identity::parse("x.example").unwrap(), [9; 32]));
    site.set_peer(hub_at_kyoto(
        "203.0.113.0/25",
        "aes256gcm16-prfsha256-ecp256",
    ))
    .unwrap();
    site.initiate(std::time::Instant::now(), "hub").unwrap();
    site.poll_transmit().unwrap().contents
}

fn notify_of(reply: &[u8]) -> Option<NotifyType> {
    let h = HeaderRepr::parse(reply).ok()?;
    match parse_chain(h.next_payload, &reply[HEADER_LEN..])
        .ok()?
        .first()?
    {
        Payload::Notify(n) => Some(n.kind),
        _ => None,
    }
}

/// Sends `count` copies of a request from spoofed sources; returns the replies.
fn flood(
    ep: &mut Endpoint,
    now: std::time::Instant,
    count: u32,
    same_source: bool,
) -> Vec<Vec<u8>> {
    let template = init_request();
    let local: SocketAddr = format!("{HUB}:500").parse().unwrap();
    for i in 0..count {
        let mut m = template.clone();
        m[..4].copy_from_slice(&(i + 1).to_be_bytes());
        let src: SocketAddr = if same_source {
            "198.51.100.99:500".parse().unwrap()
        } else {
            format!("198.51.100.{}:{}", i % 250 + 1, 500 + i / 250)
                .parse()
                .unwrap()
        };
        ep.handle_datagram(now, src, local, &m);
    }
    std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| t.contents)
        .collect()
}

#[test]
fn cookies_bound_state_under_a_flood_and_a_real_facility_still_connects() {
    let mut p = Pair::with_hub_config(|c| c.cookie_threshold = 10);
    let replies = flood(&mut p.hub.ep, p.now, 2000, false);
    assert_eq!(
        p.hub.ep.half_open_count(),
        10,
        "state stops at the cookie threshold"
    );
    let cookies = replies
        .iter()
        .filter(|r| notify_of(r) == Some(NotifyType::Cookie))
        .count();
    assert_eq!(cookies, 1990, "everyone else gets a stateless cookie");
    assert!(
        replies
            .iter()
            .filter(|r| notify_of(r) == Some(NotifyType::Cookie))
            .all(|r| r.len() < 100),
        "cookie replies are small"
    );
    // The facility is asked for a cookie too, returns it, and gets in.
    p.establish();
    assert_eq!(child_ups(&p.site.events).len(), 1, "{:?}", p.site.events);
    assert_eq!(child_ups(&p.hub.events).len(), 1);
    // The flood's half-open SAs expire; the table empties.
    let later = p.now + Duration::from_secs(31);
    p.run_until(later);
    assert_eq!(p.hub.ep.half_open_count(), 0);
    assert_eq!(p.hub.ep.status().len(), 1);
}

/// The request with a COOKIE notify in front (as a retrying initiator sends it).
fn with_cookie(request: &[u8], cookie: Vec<u8>) -> Vec<u8> {
    use ike::wire::{emit_chain, Notify};
    let h = HeaderRepr::parse(request).unwrap();
    let mut payloads = parse_chain(h.next_payload, &request[HEADER_LEN..]).unwrap();
    payloads.insert(0, Payload::Notify(Notify::new(NotifyType::Cookie, cookie)));
    let (first, body) = emit_chain(&payloads).unwrap();
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

fn cookie_of(reply: &[u8]) -> Vec<u8> {
    let h = HeaderRepr::parse(reply).unwrap();
    match &parse_chain(h.next_payload, &reply[HEADER_LEN..]).unwrap()[0] {
        Payload::Notify(n) if n.kind == NotifyType::Cookie => n.data.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_forged_or_transplanted_cookie_is_not_accepted() {
    let mut p = Pair::with_hub_config(|c| c.cookie_threshold = 0);
    let template = init_request();
    let local: SocketAddr = format!("{HUB}:500").parse().unwrap();
    let (a, b): (SocketAddr, SocketAddr) = (
        "198.51.100.7:500".parse().unwrap(),
        "198.51.100.8:500".parse().unwrap(),
    );
    p.hub.ep.handle_datagram(p.now, a, local, &template);
    let cookie = cookie_of(&p.hub.ep.poll_transmit().unwrap().contents);
    assert_eq!(p.hub.ep.half_open_count(), 0, "no state before the cookie");
    // A made-up cookie, and A's cookie presented by B: both only earn a
    // fresh cookie challenge.
    let mut forged = cookie.clone();
    forged[5] ^= 1;
    for (src, c) in [(a, forged), (b, cookie.clone())] {
        p.hub
            .ep
            .handle_datagram(p.now, src, local, &with_cookie(&template, c));
        assert_eq!(
            notify_of(&p.hub.ep.poll_transmit().unwrap().contents),
            Some(NotifyType::Cookie)
        );
        assert_eq!(p.hub.ep.half_open_count(), 0);
    }
    // A's own cookie from A is accepted: a half-open SA and a real answer.
    p.hub
        .ep
        .handle_datagram(p.now, a, local, &with_cookie(&template, cookie.clone()));
    let reply = p.hub.ep.poll_transmit().unwrap().contents;
    assert!(matches!(
        parse_chain(
            HeaderRepr::parse(&reply).unwrap().next_payload,
            &reply[HEADER_LEN..]
        )
        .unwrap()[0],
        Payload::Sa(_)
    ));
    assert_eq!(p.hub.ep.half_open_count(), 1);
    // Stale: after two rotations (10 minutes) the cookie no longer works.
    let much_later = p.now + Duration::from_secs(700);
    p.hub.ep.handle_datagram(much_later, a, local, &template);
    let _ = p.hub.ep.poll_transmit();
    let later = much_later + Duration::from_secs(301);
    let mut again = template.clone();
    again[..4].copy_from_slice(&[9, 9, 9, 9]);
    p.hub
        .ep
        .handle_datagram(later, a, local, &with_cookie(&again, cookie));
    assert_eq!(
        notify_of(&p.hub.ep.poll_transmit().unwrap().contents),
        Some(NotifyType::Cookie)
    );
    // And a facility's endpoint, told to bring a cookie, does so correctly.
    p.now = later;
    p.establish();
    assert_eq!(child_ups(&p.site.events).len(), 1);
}

#[test]
fn half_open_sas_per_source_are_capped() {
    let mut p = Pair::with_hub_config(|c| {
        c.cookie_threshold = 1_000_000;
        c.max_half_open_per_ip = 5;
    });
    flood(&mut p.hub.ep, p.now, 50, true);
    assert_eq!(p.hub.ep.half_open_count(), 5);
    flood(&mut p.hub.ep, p.now, 50, false);
    assert_eq!(
        p.hub.ep.half_open_count(),
        55,
        "other sources are unaffected"
    );
}

#[test]
fn unprotected_error_replies_are_rate_limited() {
    let mut p = Pair::with_hub_config(|c| {
        c.error_replies_per_sec = 20;
        c.ike_proposals =
            ike::ProposalSet::parse("aes128-sha512-ecp521", ike::Protocol::Ike, false).unwrap();
    });
    // Every request is refused with NO_PROPOSAL_CHOSEN, but only 20 a second.
    let replies = flood(&mut p.hub.ep, p.now, 500, false);
    assert_eq!(replies.len(), 20);
    assert!(replies
        .iter()
        .all(|r| notify_of(r) == Some(NotifyType::NoProposalChosen)));
    let later = p.now + Duration::from_millis(500);
    assert_eq!(
        flood(&mut p.hub.ep, later, 500, false).len(),
        10,
        "refilled at the configured rate"
    );
    assert_eq!(p.hub.ep.half_open_count(), 0);
}

#[test]
fn completed_handshakes_leave_no_half_open_state() {
    let mut p = Pair::with_hub_config(|_| {});
    for _ in 0..3 {
        p.establish();
        let id = p.site.ep.status()[0].id;
        p.site.ep.close(p.now, id);
        p.quiet();
    }
    assert_eq!(child_ups(&p.hub.events).len(), 3);
    assert_eq!(
        p.hub.ep.half_open_count(),
        0,
        "IKE_AUTH releases the half-open entry"
    );
}
