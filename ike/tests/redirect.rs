//! The gateway's side of RFC 5685: remembering REDIRECT_SUPPORTED,
//! redirecting an established facility (§5) and redirecting or refusing
//! new IKE SAs while the hub drains (§3).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use ike::wire::{
    emit_chain, parse_chain, GatewayIdentity, HeaderRepr, Notify, NotifyType, Payload, PayloadsExt,
    Redirect, HEADER_LEN,
};
use ike::{Event, NewIkeSas};
use std::net::SocketAddr;
use std::time::Duration;
use util::*;

/// The other hub.
fn hub2() -> GatewayIdentity {
    GatewayIdentity::parse("192.0.2.20").unwrap()
}

/// A pair whose facility announces REDIRECT_SUPPORTED (or not).
fn pair(announce: bool) -> Pair {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    let mut cfg = p.site.ep.config().clone();
    cfg.test_announce_redirect_supported = announce;
    p.site.ep = ike::Endpoint::new(cfg);
    p.site
        .ep
        .set_peer(hub_at_kyoto(
            "203.0.113.0/25",
            "aes256gcm16-prfsha256-ecp256",
        ))
        .unwrap();
    p
}

#[test]
fn the_hub_remembers_who_announced_redirect_support() {
    for announce in [true, false] {
        let mut p = pair(announce);
        p.establish();
        let st = p.hub.ep.status();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].state, "established");
        assert_eq!(st[0].redirect_supported, announce);
        // Only a responder redirects: the facility's own view never says so.
        assert!(!p.site.ep.status()[0].redirect_supported);
        if !announce {
            let err = p.hub.ep.redirect(p.now, st[0].id, hub2()).unwrap_err();
            assert!(err.to_string().contains("REDIRECT_SUPPORTED"), "{err}");
        }
    }
}

#[test]
fn a_redirect_is_acknowledged_and_the_facility_deletes_its_ike_sa() {
    let mut p = pair(true);
    p.establish();
    let id = p.hub.ep.status()[0].id;
    let mut informational = None;
    p.hub.ep.redirect(p.now, id, hub2()).unwrap();
    p.run(&mut |_, from_hub, t| {
        if from_hub && informational.is_none() {
            informational = Some(t.contents.clone());
        }
        false
    });
    // Encrypted, so only its header is seen here: an INFORMATIONAL request.
    let raw = informational.unwrap();
    let raw = raw.strip_prefix(&[0, 0, 0, 0][..]).unwrap_or(&raw);
    let h = HeaderRepr::parse(raw).unwrap();
    assert_eq!(h.exchange, ike::wire::ExchangeType::Informational);
    assert!(!h.flags.response());
    let acked = p.hub.count(|e| {
        matches!(e, Event::Redirected { ike_sa, peer, gateway }
            if *ike_sa == id && peer == "kyoto" && *gateway == hub2())
    });
    assert_eq!(acked, 1);
    assert!(p.hub.ep.status()[0].redirected);
    // A second REDIRECT of the same SA is refused.
    assert!(p.hub.ep.redirect(p.now, id, hub2()).is_err());
    // The facility deletes the IKE SA, as strongSwan does once it is up
    // with the other gateway.
    let site_id = p.site.ep.status()[0].id;
    p.site.ep.close(p.now, site_id);
    p.quiet();
    assert!(p.hub.ep.status().is_empty());
    assert_eq!(
        p.hub.count(
            |e| matches!(e, Event::IkeSaDown { reason, .. } if reason == "deleted by the facility")
        ),
        1
    );
    assert!(p.hub.live.is_empty());
}

#[test]
fn a_redirected_facility_that_stays_is_deleted_after_the_grace_period() {
    let mut p = pair(true);
    p.establish();
    let id = p.hub.ep.status()[0].id;
    p.hub.ep.redirect(p.now, id, hub2()).unwrap();
    p.quiet();
    assert_eq!(p.hub.count(|e| matches!(e, Event::Redirected { .. })), 1);
    // Still there well inside the grace period …
    p.run_until(p.now + Duration::from_secs(20));
    assert_eq!(p.hub.ep.status().len(), 1);
    // … and deleted by the hub after it, with a Delete the facility answers.
    p.run_until(p.now + Duration::from_secs(15));
    assert!(p.hub.ep.status().is_empty(), "{:?}", p.hub.ep.status());
    assert!(p.site.ep.status().is_empty());
    assert_eq!(
        p.hub.count(
            |e| matches!(e, Event::IkeSaDown { reason, .. } if reason == ike::REDIRECTED_BUT_KEPT)
        ),
        1
    );
    assert!(p.hub.live.is_empty() && p.site.live.is_empty());
}

/// The facility's IKE_SA_INIT request, with REDIRECT_SUPPORTED added (or
/// not): the hub only answers it, nothing is authenticated.
fn init_request(announce: bool) -> (Vec<u8>, Vec<u8>) {
    let mut p = pair(announce);
    p.site.ep.initiate(p.now, "hub").unwrap();
    let request = p.site.ep.poll_transmit().unwrap().contents;
    let h = HeaderRepr::parse(&request).unwrap();
    let payloads = parse_chain(h.next_payload, &request[HEADER_LEN..]).unwrap();
    let nonce = payloads.nonce().unwrap().clone();
    assert_eq!(
        payloads
            .notifies()
            .any(|n| n.kind == NotifyType::RedirectSupported),
        announce
    );
    (request, nonce)
}

fn replies(p: &mut Pair, request: &[u8]) -> Vec<Vec<u8>> {
    let site: SocketAddr = format!("{SITE}:500").parse().unwrap();
    let hub: SocketAddr = format!("{HUB}:500").parse().unwrap();
    p.hub.ep.handle_datagram(p.now, site, hub, request);
    std::iter::from_fn(|| p.hub.ep.poll_transmit())
        .map(|t| t.contents)
        .collect()
}

#[test]
fn while_draining_a_new_ike_sa_is_redirected_with_the_initiators_nonce() {
    let (request, nonce) = init_request(true);
    let mut p = pair(true);
    p.hub.ep.set_new_ike_sas(NewIkeSas::Redirect(hub2()));
    let out = replies(&mut p, &request);
    assert_eq!(out.len(), 1);
    // HDR(SPIi, 0), N(REDIRECT, New_GW_ID, Ni) — RFC 5685 §3.
    let h = HeaderRepr::parse(&out[0]).unwrap();
    let req = HeaderRepr::parse(&request).unwrap();
    assert_eq!(h.spi_i, req.spi_i);
    assert_eq!(h.spi_r, 0);
    assert!(h.flags.response());
    let payloads = parse_chain(h.next_payload, &out[0][HEADER_LEN..]).unwrap();
    assert_eq!(payloads.len(), 1);
    let Payload::Notify(n) = &payloads[0] else {
        panic!("{payloads:?}")
    };
    assert_eq!(n.kind, NotifyType::Redirect);
    let r = Redirect::parse(&n.data).unwrap();
    assert_eq!(r.gateway, hub2());
    assert_eq!(r.nonce, nonce);
    assert!(p.hub.ep.status().is_empty(), "no state is kept");
    assert_eq!(refusals(&drain_events(&mut p)), [NotifyType::Redirect]);

    // A facility that did not announce support is left unanswered.
    let (request, _) = init_request(false);
    assert!(replies(&mut p, &request).is_empty());
    assert_eq!(
        refusals(&drain_events(&mut p)),
        [NotifyType::TemporaryFailure]
    );
    // So is everyone while draining with nowhere to send them.
    let (request, _) = init_request(true);
    p.hub.ep.set_new_ike_sas(NewIkeSas::Refuse);
    assert!(replies(&mut p, &request).is_empty());
    assert!(p.hub.ep.status().is_empty());
    // Back to normal: the same request is answered and makes a half-open SA.
    p.hub.ep.set_new_ike_sas(NewIkeSas::Accept);
    assert_eq!(replies(&mut p, &request).len(), 1);
    assert_eq!(p.hub.ep.half_open_count(), 1);
}

#[test]
fn redirected_from_counts_as_support_and_a_malformed_one_does_not() {
    let (request, _) = init_request(false);
    let with = |data: Vec<u8>| {
        let h = HeaderRepr::parse(&request).unwrap();
        let mut payloads = parse_chain(h.next_payload, &request[HEADER_LEN..]).unwrap();
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::RedirectedFrom,
            data,
        )));
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
    };
    let from = Redirect {
        gateway: GatewayIdentity::parse("192.0.2.1").unwrap(),
        nonce: Vec::new(),
    }
    .emit()
    .unwrap();
    let mut p = pair(false);
    p.hub.ep.set_new_ike_sas(NewIkeSas::Redirect(hub2()));
    let out = replies(&mut p, &with(from));
    assert_eq!(out.len(), 1, "REDIRECTED_FROM announces support");
    assert!(replies(&mut p, &with(vec![1, 9, 0])).is_empty());
}

fn drain_events(p: &mut Pair) -> Vec<Event> {
    std::iter::from_fn(|| p.hub.ep.poll_event()).collect()
}
