//! IKE fragmentation (RFC 7383) between two endpoints: fragments both ways,
//! loss, reordering, duplicates, and the reassembly bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use ike::{Config, Endpoint, Transmit};
use pki::Identity;
use std::time::Duration;
use util::*;

/// Whether a datagram carries an Encrypted Fragment payload.
fn is_fragment(t: &Transmit) -> bool {
    let m = if t.local.port() == 4500 {
        t.contents.get(4..).unwrap_or_default()
    } else {
        &t.contents[..]
    };
    m.get(16) == Some(&53)
}

fn pair(hub_fragment: usize, site_fragment: usize) -> Pair {
    let mut p = Pair::with_hub_config(|c| c.fragment_size = hub_fragment);
    let mut cfg = Config::new(Identity::parse("kyoto.example").unwrap(), [2; 32]);
    cfg.fragment_size = site_fragment;
    p.site.ep = Endpoint::new(cfg);
    p.site
        .ep
        .set_peer(hub_at_kyoto("203.0.113.0/25", "aes256-sha256-modp2048"))
        .unwrap();
    p
}

#[test]
fn ike_auth_fragmented_both_ways() {
    let mut p = pair(200, 200);
    p.site.ep.initiate(p.now, "hub").unwrap();
    let (mut from_hub, mut from_site) = (0, 0);
    p.run(&mut |_, hub, t| {
        if is_fragment(t) {
            if hub {
                from_hub += 1
            } else {
                from_site += 1
            }
        }
        false
    });
    assert!(
        from_hub >= 2 && from_site >= 2,
        "fragments: hub {from_hub}, site {from_site}"
    );
    assert_eq!(child_ups(&p.hub.events).len(), 1);
    assert_eq!(child_ups(&p.site.events).len(), 1);
    p.assert_consistent();
}

/// The fragment size counts the whole IPv4 datagram (20 bytes of IP and 8
/// of UDP around the IKE message), so no fragment needs IP fragmentation on
/// a path of that MTU; and fragments fill it, rather than wasting room.
#[test]
fn fragments_fit_the_ip_datagram_size() {
    for size in [200, 256, 320] {
        let mut p = pair(size, size);
        p.site.ep.initiate(p.now, "hub").unwrap();
        let (mut count, mut largest) = (0, 0);
        p.run(&mut |_, _, t| {
            if is_fragment(t) {
                let datagram = 20 + 8 + t.contents.len();
                assert!(datagram <= size, "{datagram}-byte datagram at {size}");
                largest = largest.max(datagram);
                count += 1;
            }
            false
        });
        assert!(count >= 2, "{count} fragments at {size}");
        assert!(largest + 32 >= size, "largest {largest} of {size}");
        assert_eq!(child_ups(&p.site.events).len(), 1);
    }
}

#[test]
fn unfragmented_when_it_fits() {
    let mut p = pair(1280, 1280);
    p.site.ep.initiate(p.now, "hub").unwrap();
    let mut fragments = 0;
    p.run(&mut |_, _, t| {
        fragments += usize::from(is_fragment(t));
        false
    });
    assert_eq!(fragments, 0);
    assert_eq!(child_ups(&p.site.events).len(), 1);
}

#[test]
fn lost_reordered_and_duplicated_fragments() {
    let mut p = pair(200, 200);
    p.site.ep.initiate(p.now, "hub").unwrap();
    // Hold back the site's fragments and deliver them reversed and twice,
    // after losing the first copy of one entirely.
    let mut held: Vec<Transmit> = Vec::new();
    let mut lost_one = false;
    p.run(&mut |_, hub, t| {
        if !hub && is_fragment(t) {
            if !lost_one {
                lost_one = true;
                return true;
            }
            held.push(t.clone());
            return true;
        }
        false
    });
    let hub_addr = held[0].remote;
    let from: std::net::SocketAddr = format!("{SITE}:4500").parse().unwrap();
    for t in held.iter().rev().chain(held.iter()) {
        p.hub.ep.handle_datagram(p.now, from, hub_addr, &t.contents);
    }
    assert!(
        child_ups(&p.hub.events).is_empty(),
        "one fragment is still missing"
    );
    // The site retransmits every fragment; now it completes.
    while child_ups(&p.site.events).is_empty() && p.advance() {
        p.run(&mut |_, _, _| false);
    }
    assert_eq!(child_ups(&p.hub.events).len(), 1);
    assert_eq!(child_ups(&p.site.events).len(), 1);
    p.assert_consistent();
}

#[test]
fn messages_of_too_many_fragments_are_refused() {
    // A genuine, authenticated IKE_AUTH cut into more than 32 fragments: 90
    // traffic selectors in 141-byte IP datagrams.
    let mut p = Pair::with_hub_config(|_| {});
    let mut cfg = Config::new(Identity::parse("kyoto.example").unwrap(), [2; 32]);
    cfg.fragment_size = 141;
    p.site.ep = Endpoint::new(cfg);
    let many: Vec<String> = (0..90).map(|i| format!("203.0.113.{i}/32")).collect();
    p.site
        .ep
        .set_peer(hub_at_kyoto(
            &many.join(","),
            "aes256gcm16-prfsha256-ecp256",
        ))
        .unwrap();
    p.site.ep.initiate(p.now, "hub").unwrap();
    let mut fragments = 0;
    p.run(&mut |_, hub, t| {
        fragments += usize::from(!hub && is_fragment(t));
        false
    });
    assert!(fragments > 32, "the facility sent {fragments} fragments");
    let start = p.now;
    while p.advance() && p.now < start + Duration::from_secs(120) {
        p.run(&mut |_, _, _| false);
    }
    assert!(child_ups(&p.hub.events).is_empty(), "never reassembled");
    assert_eq!(p.hub.ep.status().len(), 0, "the half-open SA expired");
}
