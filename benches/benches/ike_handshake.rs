//! CPU cost of one IKE SA (IKE_SA_INIT + IKE_AUTH with the first Child SA),
//! both ends in memory: with a PSK, and with certificates from one CA
//! (validation of the peer's certificate, one signature and one
//! verification at each end).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ike::proposal::{ProposalSet, Protocol};
use ike::ts::parse_subnets;
use ike::{Config, Endpoint, Event, PeerConfig};
use pki::Identity;
use std::net::SocketAddr;
use std::sync::Arc;
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
        ke_upgrade: true,
    }
}

/// Both ends' certificate credentials, made once.
struct Certs {
    hub: Arc<ike::Credentials>,
    site: Arc<ike::Credentials>,
    trust: Arc<pki::verify::TrustStore>,
}

const NOW: i64 = 1_790_000_000;

fn certs(site_key: pki::ca::KeyKind) -> Certs {
    use pki::ca::{Ca, KeyKind};
    let ca = Ca::create(KeyKind::EcdsaP384, "Bench Network", NOW, 3650).expect("CA");
    let creds = |id: &str, kind| {
        let c = ca
            .issue(&Identity::parse(id).expect("id"), kind, NOW, 365)
            .expect("issue");
        Arc::new(ike::Credentials {
            key: pki::sig::SigningKey::from_pkcs8(&c.key_der).expect("key"),
            cert_der: c.cert_der,
        })
    };
    Certs {
        hub: creds("hub.example", KeyKind::EcdsaP384),
        site: creds("site.example", site_key),
        trust: Arc::new(pki::verify::TrustStore::new(ca.cert_der(), []).expect("trust")),
    }
}

fn endpoint(id: &str, seed: [u8; 32], creds: Option<(&Arc<ike::Credentials>, &Certs)>) -> Endpoint {
    let mut cfg = Config::new(Identity::parse(id).expect("id"), seed);
    if let Some((mine, all)) = creds {
        cfg.credentials = Some(mine.clone());
        cfg.trust = Some(all.trust.clone());
    }
    let mut ep = Endpoint::new(cfg);
    ep.set_wall_clock(Instant::now(), NOW);
    ep
}

fn handshake(ike: &str, seed: u8, certs: Option<&Certs>) {
    let hub_addr: SocketAddr = "192.0.2.1:500".parse().expect("addr");
    let site_ip = "192.0.2.2".parse().expect("ip");
    let mut hub = endpoint("hub.example", [seed; 32], certs.map(|c| (&c.hub, c)));
    let mut at_hub = peer(
        "site",
        "site.example",
        ike,
        "203.0.113.0/25",
        "198.51.100.0/26",
        None,
    );
    let mut site = endpoint(
        "site.example",
        [seed ^ 0xff; 32],
        certs.map(|c| (&c.site, c)),
    );
    let mut at_site = peer(
        "hub",
        "hub.example",
        ike,
        "198.51.100.0/26",
        "203.0.113.0/25",
        Some(hub_addr),
    );
    if certs.is_some() {
        at_hub.auth = ike::PeerAuth::Cert;
        at_site.auth = ike::PeerAuth::Cert;
    }
    hub.set_peer(at_hub).expect("peer");
    site.set_peer(at_site).expect("peer");
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
                handshake(ike, seed, None)
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("ike_handshake_cert");
    group.sample_size(20);
    let ike = "aes256gcm16-prfsha256-ecp256";
    for (name, kind) in [
        ("ecdsa-p256", pki::ca::KeyKind::EcdsaP256),
        ("ed25519", pki::ca::KeyKind::Ed25519),
        ("rsa-3072", pki::ca::KeyKind::Rsa3072),
    ] {
        let certs = certs(kind);
        let mut seed = 0u8;
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{ike}/facility-{name}/hub-ecdsa-p384")),
            &ike,
            |b, ike| {
                b.iter(|| {
                    seed = seed.wrapping_add(1);
                    handshake(ike, seed, Some(&certs))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
