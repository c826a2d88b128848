//! CPU cost of one PSK-authenticated IKE SA (IKE_SA_INIT + IKE_AUTH with the
//! first Child SA), both ends in memory.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ike::proposal::{ProposalSet, Protocol};
use ike::ts::parse_subnets;
use ike::{Config, Endpoint, Event, PeerConfig};
use pki::Identity;
use std::net::SocketAddr;
use std::time::Instant;
use zeroize::Zeroizing;

fn peer(
    name: &str,
    id: &str,
    ike: &str,
    local: &str,
    remote: &str,
    addr: Option<SocketAddr>,
) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        remote_id: Identity::parse(id).expect("id"),
        auth: ike::PeerAuth::Psk(Zeroizing::new(b"benchmark-pre-shared-key".to_vec())),
        local_ts: parse_subnets(local).expect("ts"),
        remote_ts: parse_subnets(remote).expect("ts"),
        remote_addr: addr,
        ike: ProposalSet::parse(ike, Protocol::Ike, false).expect("ike"),
        esp: ProposalSet::default_for(Protocol::Esp),
        lifetimes: ike::Lifetimes::default(),
    }
}

fn handshake(ike: &str, seed: u8) {
    let hub_addr: SocketAddr = "192.0.2.1:500".parse().expect("addr");
    let site_ip = "192.0.2.2".parse().expect("ip");
    let mut hub = Endpoint::new(Config::new(
        Identity::parse("hub.example").expect("id"),
        [seed; 32],
    ));
    hub.set_peer(peer(
        "site",
        "site.example",
        ike,
        "203.0.113.0/25",
        "198.51.100.0/26",
        None,
    ))
    .expect("peer");
    let mut site = Endpoint::new(Config::new(
        Identity::parse("site.example").expect("id"),
        [seed ^ 0xff; 32],
    ));
    site.set_peer(peer(
        "hub",
        "hub.example",
        ike,
        "198.51.100.0/26",
        "203.0.113.0/25",
        Some(hub_addr),
    ))
    .expect("peer");
    let now = Instant::now();
    site.initiate(now, "hub").expect("initiate");
    let mut up = false;
    for _ in 0..8 {
        while let Some(t) = site.poll_transmit() {
            hub.handle_datagram(
                now,
                SocketAddr::new(site_ip, t.local.port()),
                t.remote,
                &t.contents,
            );
        }
        while let Some(t) = hub.poll_transmit() {
            site.handle_datagram(
                now,
                SocketAddr::new(hub_addr.ip(), t.local.port()),
                t.remote,
                &t.contents,
            );
        }
        while let Some(e) = site.poll_event() {
            up |= matches!(e, Event::ChildSaUp { .. });
        }
    }
    assert!(up, "handshake did not complete");
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ike_handshake_psk");
    group.sample_size(20);
    for ike in [
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16-prfsha384-ecp384",
        "aes256-sha256-modp2048",
        "aes256gcm16-prfsha256-modp3072",
    ] {
        let mut seed = 0u8;
        group.bench_with_input(BenchmarkId::from_parameter(ike), &ike, |b, ike| {
            b.iter(|| {
                seed = seed.wrapping_add(1);
                handshake(ike, seed)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
