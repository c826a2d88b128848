//! Fragment reassembly fed real, authenticated fragments of a facility's
//! IKE_AUTH in any order, duplicated, corrupted, dropped and delayed as the
//! input says: no panic, at most one IKE SA, and no state left behind.
#![no_main]

use ike::proposal::{ProposalSet, Protocol};
use ike::ts::parse_subnets;
use ike::{Config, Endpoint, Event, Lifetimes, PeerConfig};
use libfuzzer_sys::fuzz_target;
use pki::Identity;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn peer(name: &str, id: &str, local: &str, remote: &str, addr: Option<SocketAddr>) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        remote_id: Identity::parse(id).expect("id"),
        auth: ike::PeerAuth::Psk(zeroize::Zeroizing::new(b"fuzzing-pre-shared-key".to_vec())),
        local_ts: parse_subnets(local).expect("ts"),
        remote_ts: parse_subnets(remote).expect("ts"),
        remote_addr: addr,
        ike: ProposalSet::parse("aes256gcm16-prfsha256-ecp256", Protocol::Ike, false).expect("ike"),
        esp: ProposalSet::default_for(Protocol::Esp),
        lifetimes: Lifetimes::default(),
        ke_upgrade: true,
    }
}

fuzz_target!(|data: &[u8]| {
    let hub_addr: SocketAddr = "192.0.2.1:500".parse().expect("addr");
    let site_ip = "192.0.2.2".parse().expect("ip");
    let mut hub = Endpoint::new(Config::new(
        Identity::parse("hub.example").expect("id"),
        [1; 32],
    ));
    hub.set_peer(peer(
        "kyoto",
        "kyoto.example",
        "203.0.113.0/24",
        "198.51.100.0/26",
        None,
    ))
    .expect("peer");
    let mut cfg = Config::new(Identity::parse("kyoto.example").expect("id"), [2; 32]);
    cfg.fragment_size = 160;
    let mut site = Endpoint::new(cfg);
    let many: Vec<String> = (0..12).map(|i| format!("203.0.113.{i}/32")).collect();
    site.set_peer(peer(
        "hub",
        "hub.example",
        "198.51.100.0/26",
        &many.join(","),
        Some(hub_addr),
    ))
    .expect("peer");
    let mut now = Instant::now();
    site.initiate(now, "hub").expect("initiate");
    // IKE_SA_INIT goes through unharmed.
    let init = site.poll_transmit().expect("init");
    hub.handle_datagram(
        now,
        SocketAddr::new(site_ip, 500),
        init.remote,
        &init.contents,
    );
    let reply = hub.poll_transmit().expect("reply");
    site.handle_datagram(
        now,
        SocketAddr::new(hub_addr.ip(), 500),
        reply.remote,
        &reply.contents,
    );
    let fragments: Vec<_> = std::iter::from_fn(|| site.poll_transmit()).collect();
    if fragments.is_empty() {
        return;
    }
    let from = SocketAddr::new(site_ip, 4500);
    for (i, b) in data.iter().enumerate() {
        let f = &fragments[usize::from(*b >> 2) % fragments.len()];
        match b & 3 {
            0 | 1 => hub.handle_datagram(now, from, f.remote, &f.contents),
            2 => {
                let mut c = f.contents.clone();
                let at = (i * 7 + usize::from(*b)) % c.len();
                c[at] ^= 1 << (b % 8);
                hub.handle_datagram(now, from, f.remote, &c);
            }
            _ => {
                now += Duration::from_secs(u64::from(*b) / 8);
                hub.handle_timeout(now);
            }
        }
        while hub.poll_transmit().is_some() {}
    }
    let ups = std::iter::from_fn(|| hub.poll_event())
        .filter(|e| matches!(e, Event::IkeSaUp { .. }))
        .count();
    assert!(ups <= 1);
    hub.handle_timeout(now + Duration::from_secs(3600));
    assert_eq!(hub.half_open_count(), 0, "no state left behind");
});
