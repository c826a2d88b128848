//! The hub's endpoint fed arbitrary datagrams on both ports, with time
//! moving: it must neither panic nor keep state for garbage.
#![no_main]

use ike::proposal::{ProposalSet, Protocol};
use ike::ts::parse_subnets;
use ike::{Config, Endpoint, Lifetimes, PeerConfig};
use libfuzzer_sys::fuzz_target;
use pki::Identity;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Ok(id) = Identity::parse("hub.example") else {
        return;
    };
    let mut cfg = Config::new(id, [7; 32]);
    cfg.cookie_threshold = 2;
    let mut ep = Endpoint::new(cfg);
    let peer = PeerConfig {
        name: "kyoto".into(),
        remote_id: Identity::parse("kyoto.example").expect("id"),
        auth: ike::PeerAuth::Psk(zeroize::Zeroizing::new(b"fuzzing-pre-shared-key".to_vec())),
        local_ts: parse_subnets("203.0.113.0/25").expect("ts"),
        remote_ts: parse_subnets("198.51.100.0/26").expect("ts"),
        remote_addr: None,
        ike: ProposalSet::default_for(Protocol::Ike),
        esp: ProposalSet::default_for(Protocol::Esp),
        lifetimes: Lifetimes::default(),
        ke_upgrade: true,
    };
    ep.set_peer(peer).expect("peer");
    // The first byte picks whether the hub drains (RFC 5685): new IKE SAs
    // accepted, refused, or redirected.
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    ep.set_new_ike_sas(match mode % 3 {
        0 => ike::NewIkeSas::Accept,
        1 => ike::NewIkeSas::Refuse,
        _ => ike::NewIkeSas::Redirect(
            ike::wire::GatewayIdentity::parse("hub2.example").expect("gateway"),
        ),
    });
    let mut now = Instant::now();
    // Split the input into datagrams at 0xFE 0xFE marks; alternate ports.
    for (i, datagram) in data.split(|b| *b == 0xfe).enumerate() {
        let port = if i % 2 == 0 { 500 } else { 4500 };
        let remote = format!("198.51.100.{}:{port}", i % 7 + 1)
            .parse()
            .expect("addr");
        let local = format!("192.0.2.1:{port}").parse().expect("addr");
        ep.handle_datagram(now, remote, local, datagram);
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
        now += Duration::from_secs(7);
        ep.handle_timeout(now);
    }
    assert!(ep.half_open_count() <= 2, "cookies bound the state");
});
