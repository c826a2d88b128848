//! Two endpoints wired together with a virtual clock: protocol scenarios
//! without sockets or sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use ike::proposal::{ProposalSet, Protocol};
use ike::wire::{NotifyType, HEADER_LEN};
use ike::{Config, Endpoint, Event, Transmit};
use pki::Identity;
use std::net::SocketAddr;
use std::time::Instant;
use util::*;

fn establish(p: &mut Pair) {
    p.site.ep.initiate(p.now, "hub").unwrap();
    p.quiet();
}

#[test]
fn psk_handshake_gives_matching_child_keys() {
    for ike in [
        "aes256gcm16-prfsha256-ecp256",
        "aes256-sha256-modp2048",
        "aes128gcm16-prfsha384-ecp384",
        "camellia256-sha512-ecp521",
        "aes128-sha384-modp3072",
    ] {
        let mut p = Pair::new(PSK, ike, "198.51.100.0/26", "203.0.113.0/25");
        establish(&mut p);
        let (h, s) = (child_ups(&p.hub.events), child_ups(&p.site.events));
        assert_eq!(
            (h.len(), s.len()),
            (1, 1),
            "{ike}: {:?} / {:?}",
            p.hub.events,
            p.site.events
        );
        let (h, s) = (h[0], s[0]);
        assert_eq!(h.spi_in, s.spi_out);
        assert_eq!(h.spi_out, s.spi_in);
        assert_eq!(*h.keys.encr_in, *s.keys.encr_out);
        assert_eq!(*h.keys.encr_out, *s.keys.encr_in);
        assert_eq!(*h.keys.integ_in, *s.keys.integ_out);
        assert_eq!(h.suite, s.suite);
        assert!(h.encap && s.encap, "forced UDP encapsulation");
        assert_eq!(h.remote.port(), 4500, "IKE_AUTH floated to 4500");
        assert_eq!(ike::ts::describe(&h.remote_ts), "198.51.100.0/26");
        assert_eq!(ike::ts::describe(&h.local_ts), "203.0.113.0/25");
        let suite = p.hub.ep.status()[0].suite.unwrap().to_string();
        assert!(
            suite.starts_with(ike.split('-').next().unwrap()),
            "{suite} for {ike}"
        );
    }
}

#[test]
fn wrong_psk_is_refused_with_authentication_failed() {
    let mut p = Pair::new(
        "wrong horse battery!",
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    establish(&mut p);
    assert!(child_ups(&p.hub.events).is_empty() && child_ups(&p.site.events).is_empty());
    assert_eq!(
        refusals(&p.hub.events),
        vec![NotifyType::AuthenticationFailed]
    );
    assert_eq!(
        refusals(&p.site.events),
        vec![NotifyType::AuthenticationFailed]
    );
    assert!(p.hub.ep.status().is_empty() && p.site.ep.status().is_empty());
}

#[test]
fn invalid_ke_payload_is_followed_by_a_retry() {
    // The site's first KE is for ECP-384; the hub only takes ECP-256.
    let mut p = Pair::with_hub_config(|cfg| {
        cfg.ike_proposals =
            ProposalSet::parse("aes256gcm16-prfsha256-ecp256", Protocol::Ike, false).unwrap();
    });
    let offer = "aes256gcm16-prfsha256-ecp384-ecp256";
    p.site
        .ep
        .set_peer(hub_at_kyoto("203.0.113.0/25", offer))
        .unwrap();
    establish(&mut p);
    assert_eq!(child_ups(&p.site.events).len(), 1);
    assert_eq!(
        p.site.ep.status()[0].suite.unwrap().to_string(),
        "aes256gcm16-prfsha256-ecp256"
    );
}

#[test]
fn lost_and_duplicated_messages_are_recovered() {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    p.site.ep.initiate(p.now, "hub").unwrap();
    // Lose the first IKE_SA_INIT response and the first IKE_AUTH request.
    let (mut init_lost, mut auth_lost) = (false, false);
    let mut lose = |_: usize, from_hub: bool, t: &Transmit| {
        let m = if t.local.port() == 4500 {
            &t.contents[4..]
        } else {
            &t.contents[..]
        };
        let exchange = m[18];
        if from_hub && exchange == 34 && !init_lost {
            init_lost = true;
            return true;
        }
        if !from_hub && exchange == 35 && !auth_lost {
            auth_lost = true;
            return true;
        }
        false
    };
    p.run(&mut lose);
    while child_ups(&p.site.events).is_empty() && p.advance() {
        p.run(&mut lose);
    }
    assert!(init_lost && auth_lost);
    assert_eq!(child_ups(&p.site.events).len(), 1);
    assert_eq!(child_ups(&p.hub.events).len(), 1);
    assert_eq!(
        p.hub.ep.status().len(),
        1,
        "a retransmitted IKE_SA_INIT made no second IKE SA"
    );
}

#[test]
fn retransmission_budget_gives_up() {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    p.site.ep.initiate(p.now, "hub").unwrap();
    let mut sent = 0;
    loop {
        p.run(&mut |_, from_hub, _| {
            if !from_hub {
                sent += 1;
            }
            true
        });
        if !p.advance() {
            break;
        }
    }
    p.run(&mut |_, _, _| true);
    assert_eq!(sent, 5, "default budget is 5 transmissions");
    assert!(p
        .site
        .events
        .iter()
        .any(|e| matches!(e, Event::IkeSaDown { .. })));
    assert!(p.site.ep.status().is_empty());
}

#[test]
fn selectors_are_narrowed_and_foreign_ones_refused() {
    // The site asks for everything on the hub side: narrowed to 203.0.113.0/25.
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "0.0.0.0/0",
    );
    establish(&mut p);
    let s = child_ups(&p.site.events);
    assert_eq!(ike::ts::describe(&s[0].remote_ts), "203.0.113.0/25");
    // The site claims another facility's prefix as its own: TS_UNACCEPTABLE.
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.128/26",
        "203.0.113.0/25",
    );
    establish(&mut p);
    assert!(child_ups(&p.hub.events).is_empty());
    assert_eq!(refusals(&p.hub.events), vec![NotifyType::TsUnacceptable]);
    assert_eq!(
        p.hub.ep.status()[0].state,
        "established",
        "the IKE SA stays up without a Child SA"
    );
}

#[test]
fn non_cryptrec_proposal_gets_no_proposal_chosen() {
    use ike::wire::*;
    let mut hub = Endpoint::new(Config::new(
        Identity::parse("hub.example").unwrap(),
        [1; 32],
    ));
    let sa = Payload::Sa(vec![Proposal {
        number: 1,
        protocol: ProtocolId::Ike,
        spi: vec![],
        transforms: vec![
            Transform::new(TransformType::Encr, EncrId::TripleDes.into()),
            Transform::new(TransformType::Integ, IntegId::HmacSha1_96.into()),
            Transform::new(TransformType::Prf, PrfId::HmacSha1.into()),
            Transform::new(TransformType::Ke, KeId::Modp1024.into()),
        ],
    }]);
    let payloads = vec![
        sa,
        Payload::Ke {
            group: KeId::Modp1024,
            data: vec![5; 128],
        },
        Payload::Nonce(vec![1; 32]),
    ];
    let (first, body) = emit_chain(&payloads).unwrap();
    let mut msg = Vec::new();
    HeaderRepr {
        spi_i: 42,
        spi_r: 0,
        next_payload: first,
        exchange: ExchangeType::IkeSaInit,
        flags: Flags::new(true, false),
        message_id: 0,
        length: (HEADER_LEN + body.len()) as u32,
    }
    .emit(&mut msg);
    msg.extend_from_slice(&body);
    let now = Instant::now();
    hub.handle_datagram(
        now,
        "192.0.2.9:500".parse().unwrap(),
        "192.0.2.1:500".parse().unwrap(),
        &msg,
    );
    let reply = hub.poll_transmit().expect("an answer");
    let hdr = HeaderRepr::parse(&reply.contents).unwrap();
    let answer = parse_chain(hdr.next_payload, &reply.contents[HEADER_LEN..]).unwrap();
    assert_eq!(
        answer,
        vec![Payload::Notify(Notify::new(
            NotifyType::NoProposalChosen,
            vec![]
        ))]
    );
    match hub.poll_event() {
        Some(Event::Refused { notify, reason, .. }) => {
            assert_eq!(notify, NotifyType::NoProposalChosen);
            assert!(
                reason.contains("3DES_CBC/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(hub.status().is_empty());
    assert!(hub.poll_timeout().is_none(), "no state kept");
}

/// A facility the operator disabled is refused as that facility, named,
/// not as an unknown identity; once forgotten it is unknown again, and
/// configured again it connects.
#[test]
fn a_disabled_facility_is_refused_by_name() {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    p.hub.ep.remove_peer(p.now, "kyoto").unwrap();
    p.hub
        .ep
        .set_disabled("kyoto", Some(Identity::parse("kyoto.example").unwrap()));
    establish(&mut p);
    let refused: Vec<(Option<String>, NotifyType, String)> = p
        .hub
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Refused {
                peer,
                notify,
                reason,
                ..
            } => Some((peer.clone(), *notify, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0.as_deref(), Some("kyoto"));
    assert_eq!(refused[0].1, NotifyType::AuthenticationFailed);
    assert!(refused[0].2.contains("is disabled"), "{}", refused[0].2);
    assert!(child_ups(&p.hub.events).is_empty());

    // Forgotten: an unknown identity again.
    p.hub.ep.set_disabled("kyoto", None);
    p.hub.events.clear();
    establish(&mut p);
    assert!(p.hub.events.iter().any(|e| matches!(
        e,
        Event::Refused { peer: None, reason, .. } if reason.contains("no facility has identity")
    )));

    // Enabled again: it connects.
    p.hub.ep.set_peer(kyoto_at_hub()).unwrap();
    p.hub.events.clear();
    establish(&mut p);
    assert_eq!(child_ups(&p.hub.events).len(), 1, "{:?}", p.hub.events);
}

#[test]
fn delete_from_either_side_tears_down_both() {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    establish(&mut p);
    let id = p.site.ep.status()[0].id;
    p.site.ep.close(p.now, id);
    p.quiet();
    for side in [&p.hub, &p.site] {
        assert!(side
            .events
            .iter()
            .any(|e| matches!(e, Event::ChildSaDown { .. })));
        assert!(side
            .events
            .iter()
            .any(|e| matches!(e, Event::IkeSaDown { .. })));
    }
    assert!(p.hub.ep.status().is_empty());
    assert!(p.site.ep.status().is_empty());
}

#[test]
fn reconnecting_facility_replaces_its_old_ike_sa() {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    establish(&mut p);
    // The site restarts: a fresh endpoint connects again.
    let mut site = Endpoint::new(Config::new(
        Identity::parse("kyoto.example").unwrap(),
        [3; 32],
    ));
    site.set_peer(hub_at_kyoto(
        "203.0.113.0/25",
        "aes256gcm16-prfsha256-ecp256",
    ))
    .unwrap();
    p.site.ep = site;
    establish(&mut p);
    assert_eq!(p.hub.ep.status().len(), 1);
    assert_eq!(child_ups(&p.hub.events).len(), 2);
    assert_eq!(
        p.hub
            .events
            .iter()
            .filter(|e| matches!(e, Event::ChildSaDown { .. }))
            .count(),
        1
    );
}

#[test]
fn garbage_never_panics_the_responder() {
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    p.site.ep.initiate(p.now, "hub").unwrap();
    let first = p.site.ep.poll_transmit().unwrap();
    let remote: SocketAddr = "192.0.2.2:500".parse().unwrap();
    let local: SocketAddr = "192.0.2.1:500".parse().unwrap();
    let mut seed = 0x1234_5678u32;
    for i in 0..first.contents.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut m = first.contents.clone();
            m[i] ^= flip;
            // Vary the SPI so each mutation is a new half-open attempt.
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            m[..4].copy_from_slice(&seed.to_be_bytes());
            p.hub.ep.handle_datagram(p.now, remote, local, &m);
        }
        p.hub.ep.handle_datagram(
            p.now,
            remote,
            local,
            &first.contents[..i.min(HEADER_LEN + 3)],
        );
    }
    while p.hub.ep.poll_transmit().is_some() {}
}

#[test]
fn nat_keepalives_are_sent_while_idle() {
    // No liveness checks, so that nothing but keepalives crosses the link.
    let quiet = ike::Lifetimes {
        dpd: std::time::Duration::ZERO,
        ..ike::Lifetimes::default()
    };
    let mut p = Pair::with_lifetimes("aes256gcm16-prfsha256-ecp256", quiet, quiet);
    establish(&mut p);
    let start = p.now;
    let mut keepalives = 0;
    while p.advance() && p.now < start + std::time::Duration::from_secs(65) {
        p.run(&mut |_, from_hub, t| {
            if from_hub && t.contents == [0xff] {
                assert_eq!(t.local.port(), 4500, "keepalives go out on the NAT-T port");
                keepalives += 1;
            }
            false
        });
    }
    assert_eq!(keepalives, 3, "one every 20 s of silence (RFC 3948 §4)");
}

#[test]
fn the_hub_deletes_one_child_sa_and_keeps_the_ike_sa() {
    // The driver refuses a Child SA it cannot route: it is deleted on both
    // sides, the IKE SA stays.
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    establish(&mut p);
    let spi_in = child_ups(&p.hub.events)[0].spi_in;
    assert!(p.hub.ep.delete_child(p.now, 0x0bad_0bad).is_err());
    p.hub.ep.delete_child(p.now, spi_in).unwrap();
    p.quiet();
    for side in [&p.hub, &p.site] {
        assert!(
            side.events
                .iter()
                .any(|e| matches!(e, Event::ChildSaDown { .. })),
            "{:?}",
            side.events
        );
        assert!(!side
            .events
            .iter()
            .any(|e| matches!(e, Event::IkeSaDown { .. })));
    }
    assert_eq!(p.hub.ep.status().len(), 1, "the IKE SA stays");
    assert_eq!(p.site.ep.status().len(), 1);
}

#[test]
fn hub_reaches_a_facility_through_its_nat_mapping_from_port_4500() {
    // The facility's NAT maps its port 4500 to 24500 (as its own traffic
    // to the hub opened it); a restarted hub initiates to that mapping.
    let mut p = Pair::new(
        PSK,
        "aes256gcm16-prfsha256-ecp256",
        "198.51.100.0/26",
        "203.0.113.0/25",
    );
    p.site_port_shift = 20000;
    let mapping: SocketAddr = format!("{SITE}:24500").parse().unwrap();
    let id = p.hub.ep.initiate_natt(p.now, "kyoto", mapping).unwrap();
    let mut sent = Vec::new();
    p.run(&mut |_, from_hub, t| {
        if from_hub {
            sent.push(t.clone());
        }
        false
    });
    assert!(sent.len() >= 2, "IKE_SA_INIT and IKE_AUTH: {sent:?}");
    for t in &sent {
        assert_eq!(t.local.port(), 4500, "sent from the NAT-T port");
        assert_eq!(t.remote, mapping, "to the mapping, never floated");
        assert_eq!(&t.contents[..4], &[0, 0, 0, 0], "non-ESP marker");
    }
    let (h, s) = (child_ups(&p.hub.events), child_ups(&p.site.events));
    assert_eq!((h.len(), s.len()), (1, 1));
    assert_eq!(h[0].remote, mapping, "ESP goes to the mapping too");
    assert!(h[0].encap);
    let st = p.hub.ep.status();
    assert_eq!(
        (st[0].id, st[0].initiator, st[0].remote),
        (id, true, mapping)
    );
}
