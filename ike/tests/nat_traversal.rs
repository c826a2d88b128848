//! A facility whose router does not do NAT traversal (YAMAHA RTX's
//! default): the hub carries ESP only in UDP, so it refuses the tunnel,
//! naming the cause, instead of installing a Child SA that would show up
//! while no packet could pass (the router would send ESP as IP protocol
//! 50).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use ike::{Config, Endpoint, Event, NO_NAT_TRAVERSAL};
use util::*;

/// A pair whose facility sends no NAT_DETECTION notification.
fn pair_without_natt() -> Pair {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    let mut cfg: Config = p.site.ep.config().clone();
    cfg.nat_traversal = false;
    p.site.ep = Endpoint::new(cfg);
    p.site
        .ep
        .set_peer(hub_at_kyoto(
            "203.0.113.0/25",
            "aes256gcm16-prfsha256-ecp256",
        ))
        .unwrap();
    p
}

fn refused_for_natt(events: &[Event]) -> bool {
    events.iter().any(|e| {
        matches!(e, Event::Refused { peer: Some(p), reason, .. }
            if p == "kyoto" && reason.contains(NO_NAT_TRAVERSAL))
    })
}

#[test]
fn the_hub_refuses_the_tunnel_of_a_facility_without_nat_traversal() {
    // The facility initiates: its IKE SA is authenticated, its Child SA
    // refused with the reason.
    let mut p = pair_without_natt();
    p.establish();
    assert!(
        child_ups(&p.hub.events).is_empty(),
        "no Child SA: {:?}",
        p.hub.events
    );
    assert!(refused_for_natt(&p.hub.events), "{:?}", p.hub.events);
    assert!(child_ups(&p.site.events).is_empty());

    // The hub initiates: the facility's IKE_SA_INIT answer carries no
    // NAT_DETECTION, and the hub gives up before IKE_AUTH.
    let mut p = pair_without_natt();
    let mut kyoto = kyoto_at_hub();
    kyoto.remote_addr = Some(format!("{SITE}:500").parse().unwrap());
    p.hub.ep.set_peer(kyoto).unwrap();
    p.hub.ep.initiate(p.now, "kyoto").unwrap();
    p.quiet();
    assert!(child_ups(&p.hub.events).is_empty(), "{:?}", p.hub.events);
    assert!(refused_for_natt(&p.hub.events), "{:?}", p.hub.events);
    assert!(p.hub.ep.status().iter().all(|s| s.state != "established"));
}

#[test]
fn with_nat_traversal_the_same_pair_comes_up() {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    p.establish();
    let ups = child_ups(&p.hub.events);
    assert_eq!(ups.len(), 1);
    assert!(ups[0].encap, "ESP in UDP");
    assert!(!refused_for_natt(&p.hub.events));
}
