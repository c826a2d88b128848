//! Rekeying, collisions, loss and liveness on a virtual clock: hours of
//! protocol time in milliseconds, no sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use ike::{Event, Lifetimes, Transmit};
use std::time::Duration;
use util::*;

const GCM: &str = "aes256gcm16-prfsha256-ecp256";

fn lifetimes(ike: u64, child: u64, dpd: u64) -> Lifetimes {
    Lifetimes {
        ike: Duration::from_secs(ike),
        child: Duration::from_secs(child),
        child_bytes: None,
        jitter_percent: 10,
        dpd: Duration::from_secs(dpd),
    }
}

const LONG: u64 = 100_000;

fn rekeyed(side: &Side) -> usize {
    side.count(|e| {
        matches!(
            e,
            Event::ChildSaUp {
                rekey_of: Some(_),
                ..
            }
        )
    })
}

fn ike_rekeyed(side: &Side) -> usize {
    side.count(|e| matches!(e, Event::IkeSaRekeyed { .. }))
}

fn downs(side: &Side) -> usize {
    side.count(|e| matches!(e, Event::IkeSaDown { .. }))
}

fn exchange_of(t: &Transmit) -> u8 {
    let m = if t.local.port() == 4500 {
        t.contents.get(4..).unwrap_or_default()
    } else {
        &t.contents[..]
    };
    m.get(18).copied().unwrap_or(0)
}

#[test]
fn hub_and_site_rekey_child_sas_make_before_break() {
    for (hub_child, site_child) in [(20, LONG), (LONG, 20)] {
        let mut p = Pair::with_lifetimes(
            GCM,
            lifetimes(LONG, hub_child, LONG),
            lifetimes(LONG, site_child, LONG),
        );
        p.establish();
        let start = p.now;
        p.run_until(start + Duration::from_secs(180));
        p.assert_consistent();
        let n = rekeyed(&p.hub);
        assert!(
            (8..=11).contains(&n),
            "{n} rekeys in 3 minutes at 20 s (with jitter)"
        );
        assert_eq!(rekeyed(&p.site), n);
        // The side that answered each rekey is told so (it must keep
        // sending on the old SA until the initiator deletes it).
        let (initiator, responder) = if hub_child == 20 {
            (&p.hub, &p.site)
        } else {
            (&p.site, &p.hub)
        };
        let answered = |side: &Side, want: bool| {
            side.count(|e| {
                matches!(e, Event::ChildSaUp { rekey_of: Some(_), answered, .. } if *answered == want)
            })
        };
        assert_eq!(answered(responder, true), n);
        assert_eq!(answered(initiator, false), n);
        assert_eq!(
            p.hub.live.len(),
            1,
            "old Child SAs are deleted after each rekey"
        );
        assert_eq!(downs(&p.hub) + downs(&p.site), 0);
        // Make-before-break: each replacement came up before its predecessor went down.
        let order: Vec<bool> = p
            .hub
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaUp { .. } => Some(true),
                Event::ChildSaDown { .. } => Some(false),
                _ => None,
            })
            .collect();
        for pair in order.windows(2) {
            assert!(
                pair[0] || pair[1],
                "two downs in a row: a gap without a Child SA"
            );
        }
        assert!(order[0]);
    }
}

#[test]
fn ike_sa_rekeys_keep_child_sas_and_derive_the_same_keys() {
    for (hub_ike, site_ike) in [(45, LONG), (LONG, 45)] {
        let mut p = Pair::with_lifetimes(
            GCM,
            lifetimes(hub_ike, 20, LONG),
            lifetimes(site_ike, LONG, LONG),
        );
        p.establish();
        let start = p.now;
        p.run_until(start + Duration::from_secs(180));
        p.assert_consistent();
        let n = ike_rekeyed(&p.hub);
        assert!((3..=5).contains(&n), "{n} IKE rekeys in 3 minutes at 45 s");
        assert_eq!(ike_rekeyed(&p.site), n);
        assert!(
            rekeyed(&p.hub) >= 8,
            "Child SA rekeys go on across IKE rekeys (new SK_d agrees)"
        );
        assert_eq!(p.hub.ep.status().len(), 1, "old IKE SAs are deleted");
        assert_eq!(p.site.ep.status().len(), 1);
        assert_eq!(downs(&p.hub) + downs(&p.site), 0);
        assert_eq!(p.hub.live.len(), 1);
    }
}

#[test]
fn simultaneous_child_rekeys_leave_one_child_sa() {
    for round in 0..8 {
        let mut p = Pair::with_lifetimes(
            GCM,
            lifetimes(LONG, LONG, LONG),
            lifetimes(LONG, LONG, LONG),
        );
        // Different seeds give different nonces, so either side may win.
        p.site.ep = {
            let mut cfg = ike::Config::new(
                pki::Identity::parse("kyoto.example").unwrap(),
                [round as u8 + 10; 32],
            );
            cfg.force_encap = true;
            let mut ep = ike::Endpoint::new(cfg);
            let mut s = hub_at_kyoto("203.0.113.0/25", GCM);
            s.lifetimes = lifetimes(LONG, LONG, LONG);
            ep.set_peer(s).unwrap();
            ep
        };
        p.establish();
        let (hub_spi, site_spi) = (
            *p.hub.live.keys().next().unwrap(),
            *p.site.live.keys().next().unwrap(),
        );
        // Both start a rekey of the same Child SA before either hears the other.
        p.hub.ep.rekey_child(p.now, hub_spi).unwrap();
        p.site.ep.rekey_child(p.now, site_spi).unwrap();
        let start = p.now;
        p.run_until(start + Duration::from_secs(30));
        p.assert_consistent();
        assert_eq!(
            p.hub.live.len(),
            1,
            "round {round}: redundant Child SAs are deleted"
        );
        assert!(
            !p.hub.live.contains_key(&hub_spi),
            "round {round}: the old Child SA is gone"
        );
        assert_eq!(downs(&p.hub) + downs(&p.site), 0);
    }
}

#[test]
fn simultaneous_ike_rekeys_settle_on_one_ike_sa() {
    let mut p = Pair::with_lifetimes(
        GCM,
        lifetimes(LONG, LONG, LONG),
        lifetimes(LONG, LONG, LONG),
    );
    p.establish();
    let hub_id = p.hub.ep.status()[0].id;
    let site_id = p.site.ep.status()[0].id;
    p.hub.ep.rekey_ike(p.now, hub_id).unwrap();
    p.site.ep.rekey_ike(p.now, site_id).unwrap();
    let start = p.now;
    p.run_until(start + Duration::from_secs(60));
    p.assert_consistent();
    assert_eq!(p.hub.ep.status().len(), 1);
    assert_eq!(p.site.ep.status().len(), 1);
    assert!(ike_rekeyed(&p.hub) >= 1);
    assert_eq!(p.hub.live.len(), 1);
    assert_eq!(downs(&p.hub) + downs(&p.site), 0);
}

#[test]
fn lost_and_duplicated_rekey_messages() {
    let mut p = Pair::with_lifetimes(
        GCM,
        lifetimes(LONG, LONG, LONG),
        lifetimes(LONG, LONG, LONG),
    );
    p.establish();
    let spi = *p.hub.live.keys().next().unwrap();
    p.hub.ep.rekey_child(p.now, spi).unwrap();
    // Lose the first CREATE_CHILD_SA response; the request is retransmitted
    // and answered from the response cache, creating nothing twice.
    let mut lost = false;
    let mut lose = |_: usize, from_hub: bool, t: &Transmit| {
        if !from_hub && exchange_of(t) == 36 && !lost {
            lost = true;
            return true;
        }
        false
    };
    p.run(&mut lose);
    while rekeyed(&p.hub) == 0 && p.advance() {
        p.run(&mut lose);
    }
    let start = p.now;
    p.run_until(start + Duration::from_secs(30));
    assert!(lost);
    p.assert_consistent();
    assert_eq!(
        rekeyed(&p.site),
        1,
        "the retransmitted request made no second Child SA"
    );
    assert_eq!(p.hub.live.len(), 1);
}

#[test]
fn pfs_rekeys_use_a_fresh_key_exchange() {
    let mut p = Pair::with_lifetimes(GCM, lifetimes(LONG, 20, LONG), lifetimes(LONG, LONG, LONG));
    for side in [&mut p.hub, &mut p.site] {
        let name = if side.ip.to_string() == HUB {
            "kyoto"
        } else {
            "hub"
        };
        let mut cfg = side.ep.peer(name).unwrap().clone();
        cfg.esp = ike::ProposalSet::parse("aes256gcm16-ecp384", ike::Protocol::Esp, false).unwrap();
        side.ep.set_peer(cfg).unwrap();
    }
    p.establish();
    let start = p.now;
    p.run_until(start + Duration::from_secs(70));
    p.assert_consistent();
    let suites: Vec<String> = p
        .hub
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaUp {
                child,
                rekey_of: Some(_),
                ..
            } => Some(child.suite.to_string()),
            _ => None,
        })
        .collect();
    assert!(suites.len() >= 3);
    assert!(
        suites.iter().all(|s| s == "aes256gcm16-ecp384"),
        "{suites:?}"
    );
}

/// A facility that accepts only Extended Sequence Numbers gets them with
/// the hub's default proposals, and keeps them through rekeys either side
/// starts (the hub's own rekey offers ESN again for an SA that uses it).
#[test]
fn esn_only_facility_keeps_esn_through_rekeys() {
    for (hub_child, site_child) in [(20, LONG), (LONG, 20)] {
        let mut p = Pair::with_lifetimes(
            GCM,
            lifetimes(LONG, hub_child, LONG),
            lifetimes(LONG, site_child, LONG),
        );
        let mut cfg = p.site.ep.peer("hub").unwrap().clone();
        cfg.esp = ike::ProposalSet::parse("aes256gcm16-esn", ike::Protocol::Esp, false).unwrap();
        p.site.ep.set_peer(cfg).unwrap();
        p.establish();
        let start = p.now;
        p.run_until(start + Duration::from_secs(70));
        p.assert_consistent();
        for side in [&p.hub, &p.site] {
            let suites: Vec<(bool, String)> = side
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::ChildSaUp {
                        child, rekey_of, ..
                    } => Some((rekey_of.is_some(), child.suite.to_string())),
                    _ => None,
                })
                .collect();
            assert!(suites.len() >= 3, "{suites:?}");
            assert!(suites.iter().any(|(rekey, _)| *rekey));
            assert!(
                suites.iter().all(|(_, s)| s == "aes256gcm16-esn"),
                "{suites:?}"
            );
        }
    }
}

#[test]
fn dead_facility_is_detected_and_its_sas_removed() {
    let mut p = Pair::with_lifetimes(GCM, lifetimes(LONG, LONG, 10), lifetimes(LONG, LONG, LONG));
    p.establish();
    assert_eq!(p.hub.live.len(), 1);
    let start = p.now;
    // The facility vanishes: nothing it would send arrives, and it answers nothing.
    let mut checks = 0;
    loop {
        p.run(&mut |_, from_hub, t| {
            if from_hub && exchange_of(t) == 37 {
                checks += 1;
            }
            true
        });
        if downs(&p.hub) > 0 || !p.advance() || p.now > start + Duration::from_secs(600) {
            break;
        }
    }
    let elapsed = p.now - start;
    assert_eq!(downs(&p.hub), 1, "declared dead");
    assert!(p.hub.live.is_empty(), "its Child SAs are reported down");
    assert!(p.hub.ep.status().is_empty());
    assert_eq!(
        checks, 5,
        "one liveness check, retransmitted to the budget of 5"
    );
    // 10 s of silence, then 2+4+8+16+30 s of retransmissions.
    assert!(
        elapsed >= Duration::from_secs(60) && elapsed <= Duration::from_secs(80),
        "{elapsed:?}"
    );
}

#[test]
fn liveness_checks_are_answered_and_keep_the_sa() {
    let mut p = Pair::with_lifetimes(GCM, lifetimes(LONG, LONG, 10), lifetimes(LONG, LONG, 10));
    p.establish();
    let start = p.now;
    p.run_until(start + Duration::from_secs(300));
    assert_eq!(downs(&p.hub) + downs(&p.site), 0);
    assert_eq!(p.hub.live.len(), 1);
    p.assert_consistent();
}

#[test]
fn half_a_day_of_liveness_checks_and_rekeys_keeps_every_timer_and_a_bounded_queue() {
    let l = lifetimes(3600, 1200, 10);
    let mut p = Pair::with_lifetimes(GCM, l, l);
    p.establish();
    let start = p.now;
    let mut most = 0;
    for hour in 1..=12 {
        p.run_until(start + Duration::from_secs(3600 * hour));
        most = most.max(p.hub.ep.timer_queue_len());
        most = most.max(p.site.ep.timer_queue_len());
    }
    // Thousands of liveness checks, each moving an SA's next deadline
    // back and forth: the stale entries they leave are dropped as they
    // come due, and the queue stays at about one entry per IKE SA.
    assert!(most <= 8, "timer queue grew to {most}");
    // And no deadline was lost: the rekeys all happened, nothing died.
    assert_eq!(downs(&p.hub) + downs(&p.site), 0);
    assert!(rekeyed(&p.hub) + rekeyed(&p.site) >= 30, "Child SA rekeys");
    assert!(
        ike_rekeyed(&p.hub) + ike_rekeyed(&p.site) >= 10,
        "IKE SA rekeys"
    );
    assert_eq!(p.hub.live.len(), 1);
    p.assert_consistent();
}

#[test]
fn the_timer_queue_forgets_closed_sas() {
    let mut p = Pair::with_lifetimes(
        GCM,
        lifetimes(LONG, LONG, LONG),
        lifetimes(LONG, LONG, LONG),
    );
    let now = p.now;
    // 3,000 attempts nobody answers, each with a retransmission deadline;
    // all but the last closed again.
    let ids: Vec<_> = (0..3000)
        .map(|_| p.site.ep.initiate(now, "hub").unwrap())
        .collect();
    let last = p.site.ep.poll_timeout().unwrap();
    for id in &ids[..ids.len() - 1] {
        p.site.ep.close(now, *id);
    }
    // The closed SAs' deadlines are not reported, and their entries do
    // not outlive the next look at the queue by much.
    assert_eq!(p.site.ep.poll_timeout(), Some(last));
    assert!(
        p.site.ep.timer_queue_len() <= 2 + 1024,
        "{}",
        p.site.ep.timer_queue_len()
    );
    p.site.ep.close(now, ids[ids.len() - 1]);
    assert_eq!(p.site.ep.poll_timeout(), None);
    assert_eq!(p.site.ep.timer_queue_len(), 0);
}

#[test]
fn hub_follows_a_changed_nat_mapping() {
    let mut p = Pair::with_lifetimes(GCM, lifetimes(LONG, LONG, LONG), lifetimes(LONG, 20, LONG));
    p.establish();
    // The site's NAT starts mapping it to other ports; its next
    // authenticated message (a rekey) arrives from there.
    p.site_port_shift = 20000;
    let start = p.now;
    p.run_until(start + Duration::from_secs(30));
    let moved: Vec<_> = p
        .hub
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PeerMoved {
                remote, spis_out, ..
            } => Some((*remote, spis_out.len())),
            _ => None,
        })
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].0.port(), 24500);
    assert_eq!(moved[0].1, 1);
    assert_eq!(p.hub.ep.status()[0].remote.port(), 24500);
    let newest = p
        .hub
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::ChildSaUp { child, .. } => Some(child.remote),
            _ => None,
        })
        .unwrap();
    assert_eq!(newest.port(), 24500, "new Child SAs go to the new mapping");
    p.assert_consistent();
    assert_eq!(downs(&p.hub) + downs(&p.site), 0);
}

#[test]
fn corrupted_or_forged_messages_do_not_harm_an_established_sa() {
    let mut p = Pair::with_lifetimes(GCM, lifetimes(LONG, LONG, 10), lifetimes(LONG, LONG, LONG));
    p.establish();
    // Corrupt every byte of the site's next requests in turn (a rekey and
    // liveness answers): the hub drops them and keeps the SA.
    let spi = *p.site.live.keys().next().unwrap();
    p.site.ep.rekey_child(p.now, spi).unwrap();
    let t = p.site.ep.poll_transmit().unwrap();
    let hub_addr = t.remote;
    let from: std::net::SocketAddr = format!("{SITE}:4500").parse().unwrap();
    for i in 4..t.contents.len() {
        let mut m = t.contents.clone();
        m[i] ^= 0x5a;
        p.hub.ep.handle_datagram(p.now, from, hub_addr, &m);
    }
    while p.hub.ep.poll_transmit().is_some() {}
    assert_eq!(p.hub.ep.status().len(), 1, "the SA survived");
    // The genuine request still works, and so does everything after it.
    p.hub.ep.handle_datagram(p.now, from, hub_addr, &t.contents);
    let start = p.now;
    p.run_until(start + Duration::from_secs(120));
    p.assert_consistent();
    assert_eq!(rekeyed(&p.hub), 1);
    assert_eq!(downs(&p.hub) + downs(&p.site), 0);
}

#[test]
fn additional_child_sas_from_either_side() {
    let mut p = Pair::with_lifetimes(GCM, lifetimes(LONG, 30, LONG), lifetimes(LONG, LONG, LONG));
    p.establish();
    let site_id = p.site.ep.status()[0].id;
    p.site.ep.create_child(p.now, site_id).unwrap();
    p.quiet();
    let hub_id = p.hub.ep.status()[0].id;
    p.hub.ep.create_child(p.now, hub_id).unwrap();
    p.quiet();
    assert_eq!(
        p.hub.live.len(),
        3,
        "the first Child SA and one more from each side"
    );
    p.assert_consistent();
    // Each is rekeyed on its own schedule and stays separate.
    let start = p.now;
    p.run_until(start + Duration::from_secs(100));
    assert_eq!(p.hub.live.len(), 3);
    assert!(rekeyed(&p.hub) >= 6);
    p.assert_consistent();
    assert_eq!(downs(&p.hub) + downs(&p.site), 0);
}

#[test]
fn a_replaced_child_sa_the_facility_never_deletes_is_deleted_by_the_hub() {
    let mut p = Pair::with_lifetimes(GCM, lifetimes(LONG, LONG, LONG), lifetimes(LONG, 20, LONG));
    p.establish();
    let start = p.now;
    // The site rekeys at 18–20 s; every INFORMATIONAL request it sends (its
    // Delete of the old Child SA and the retransmissions) is lost.
    let mut lose_site_informational = |_: usize, from_hub: bool, t: &Transmit| {
        let m = t.contents.get(4..).unwrap_or_default();
        !from_hub && exchange_of(t) == 37 && m.get(19).is_some_and(|f| f & 0x20 == 0)
    };
    while p.now < start + Duration::from_secs(55) && p.advance() {
        p.run(&mut lose_site_informational);
    }
    assert_eq!(rekeyed(&p.hub), 1, "the site rekeyed once");
    let old = p
        .hub
        .events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaUp { rekey_of, .. } => *rekey_of,
            _ => None,
        })
        .unwrap();
    let deleted = p
        .hub
        .count(|e| matches!(e, Event::ChildSaDown { spi_in, .. } if *spi_in == old));
    assert_eq!(deleted, 1, "the hub deleted the replaced Child SA itself");
    assert_eq!(p.hub.live.len(), 1);
    assert_eq!(downs(&p.hub), 0, "the IKE SA is unharmed");
}
