//! The hub as the routers hospitals own need it (issue #16 item 3):
//! route-based routers (YAMAHA RTX `ipsec tunnel`, Cisco `tunnel mode ipsec
//! ipv4`, FortiGate phase2-interface defaults) propose 0.0.0.0/0 on both
//! sides and get the facility's configured prefixes; a YAMAHA RTX gets
//! MODP-2048 in the hub's first KE payload, and a response with a zero
//! responder SPI (one RTX firmware's answer to a retry after
//! INVALID_KE_PAYLOAD, YAMAHA reference §4.3) is refused cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use ike::proposal::{ProposalSet, Protocol};
use ike::wire::*;
use ike::{Config, Endpoint, Event};
use pki::Identity;
use std::net::SocketAddr;
use util::*;

const YAMAHA_IKE: &str = "aes256-sha256-modp2048";

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// The hub's kyoto, reachable at [`SITE`] for the hub to initiate, with
/// `ike` proposals.
fn kyoto_reachable(ike: &str) -> ike::PeerConfig {
    let mut k = kyoto_at_hub();
    k.remote_addr = Some(at(SITE, 500));
    k.ike = ProposalSet::parse(ike, Protocol::Ike, false).unwrap();
    k
}

/// A site whose endpoint, like an RTX with `proposal-limitation on`, takes
/// AES-256-CBC, SHA-256 and MODP-2048 only, and asks for everything on
/// both sides (a route-based tunnel).
fn rtx_like(p: &mut Pair) {
    let mut cfg = Config::new(Identity::parse("kyoto.example").unwrap(), [2; 32]);
    cfg.ike_proposals = ProposalSet::parse(YAMAHA_IKE, Protocol::Ike, false).unwrap();
    p.site.ep = Endpoint::new(cfg);
    p.site
        .ep
        .set_peer(peer(
            "hub",
            "hub.example",
            PSK,
            "0.0.0.0/0",
            "0.0.0.0/0",
            Some(HUB),
            YAMAHA_IKE,
        ))
        .unwrap();
}

#[test]
fn route_based_selectors_are_narrowed_to_the_facility_configuration() {
    // The router initiates with TSi = TSr = 0.0.0.0/0.
    let mut p = Pair::new(PSK, YAMAHA_IKE, "0.0.0.0/0", "0.0.0.0/0");
    p.establish();
    let hub = child_ups(&p.hub.events);
    assert_eq!(hub.len(), 1, "one Child SA");
    assert_eq!(ike::ts::describe(&hub[0].local_ts), "203.0.113.0/25");
    assert_eq!(ike::ts::describe(&hub[0].remote_ts), "198.51.100.0/26");
    let site = child_ups(&p.site.events);
    assert_eq!(ike::ts::describe(&site[0].local_ts), "198.51.100.0/26");
    assert_eq!(ike::ts::describe(&site[0].remote_ts), "203.0.113.0/25");
    p.assert_consistent();
}

#[test]
fn the_hub_initiates_to_a_yamaha_facility_with_modp2048_first() {
    let mut p = Pair::new(PSK, YAMAHA_IKE, "0.0.0.0/0", "0.0.0.0/0");
    rtx_like(&mut p);
    p.hub.ep.set_peer(kyoto_reachable(YAMAHA_IKE)).unwrap();
    p.hub.ep.initiate(p.now, "kyoto").unwrap();
    // Its first IKE_SA_INIT carries MODP-2048: no INVALID_KE_PAYLOAD round.
    let mut first_ke = None;
    let mut invalid_ke = 0;
    p.run(&mut |_, from_hub, t| {
        // IKE_SA_INIT travels on port 500, without the non-ESP marker
        // that later messages on port 4500 carry.
        let Ok(h) = HeaderRepr::parse(&t.contents) else {
            return false;
        };
        if h.exchange == ExchangeType::IkeSaInit {
            let payloads = parse_chain(h.next_payload, &t.contents[HEADER_LEN..]).unwrap();
            if from_hub && first_ke.is_none() {
                first_ke = payloads.ke().map(|k| k.0);
            }
            if payloads
                .notifies()
                .any(|n| n.kind == NotifyType::InvalidKePayload)
            {
                invalid_ke += 1;
            }
        }
        false
    });
    assert_eq!(first_ke, Some(KeId::Modp2048));
    assert_eq!(invalid_ke, 0);
    // And the route-based router's 0/0 is narrowed the other way round too.
    let hub = child_ups(&p.hub.events);
    assert_eq!(hub.len(), 1);
    assert_eq!(ike::ts::describe(&hub[0].local_ts), "203.0.113.0/25");
    assert_eq!(ike::ts::describe(&hub[0].remote_ts), "198.51.100.0/26");
    p.assert_consistent();
}

#[test]
fn a_zero_responder_spi_after_invalid_ke_is_refused_cleanly() {
    let mut p = Pair::new(PSK, YAMAHA_IKE, "0.0.0.0/0", "0.0.0.0/0");
    rtx_like(&mut p);
    // A facility not (yet) marked as YAMAHA: the hub leads with ECP-256.
    p.hub
        .ep
        .set_peer(kyoto_reachable(
            "aes256gcm16-prfsha256-ecp256,aes256-sha256-modp2048",
        ))
        .unwrap();
    let now = p.now;
    p.hub.ep.initiate(now, "kyoto").unwrap();
    let deliver_to_site = |p: &mut Pair| {
        let t = p.hub.ep.poll_transmit().expect("hub sends");
        p.site
            .ep
            .handle_datagram(now, at(HUB, t.local.port()), t.remote, &t.contents);
        t
    };
    let ke_of = |m: &[u8]| {
        let h = HeaderRepr::parse(m).unwrap();
        parse_chain(h.next_payload, &m[HEADER_LEN..])
            .unwrap()
            .ke()
            .map(|k| k.0)
    };
    let first = deliver_to_site(&mut p);
    assert_eq!(ke_of(&first.contents), Some(KeId::Ecp256));
    // The site asks for MODP-2048 ...
    let r = p.site.ep.poll_transmit().expect("INVALID_KE_PAYLOAD");
    p.hub
        .ep
        .handle_datagram(now, at(SITE, r.local.port()), r.remote, &r.contents);
    let retry = deliver_to_site(&mut p);
    assert_eq!(ke_of(&retry.contents), Some(KeId::Modp2048));
    // ... and accepts the retry, but with a zero responder SPI.
    let mut r = p.site.ep.poll_transmit().expect("IKE_SA_INIT response");
    let h = HeaderRepr::parse(&r.contents).unwrap();
    assert_ne!(h.spi_r, 0);
    assert!(ke_of(&r.contents).is_some(), "a successful response");
    r.contents[8..16].fill(0);
    p.hub
        .ep
        .handle_datagram(now, at(SITE, r.local.port()), r.remote, &r.contents);
    // Refused: the IKE SA is gone with a reason naming it, nothing is sent
    // (no IKE_AUTH towards an SA the responder never made).
    assert!(p.hub.ep.poll_transmit().is_none(), "no IKE_AUTH");
    let mut downs = Vec::new();
    while let Some(e) = p.hub.ep.poll_event() {
        if let Event::IkeSaDown { reason, peer, .. } = e {
            downs.push((peer, reason));
        }
    }
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert_eq!(downs[0].0.as_deref(), Some("kyoto"));
    assert!(
        downs[0]
            .1
            .contains("the responder accepted with a zero SPI after INVALID_KE_PAYLOAD"),
        "{}",
        downs[0].1
    );
    assert!(p.hub.ep.status().is_empty(), "no IKE SA left");
    assert_eq!(p.hub.ep.poll_timeout(), None, "no timer left behind");
    // With the facility's own group first (`--router yamaha`), the next
    // attempt needs no retry and succeeds.
    p.hub.ep.set_peer(kyoto_reachable(YAMAHA_IKE)).unwrap();
    p.hub.ep.initiate(now, "kyoto").unwrap();
    p.quiet();
    assert_eq!(child_ups(&p.hub.events).len(), 1);
}
