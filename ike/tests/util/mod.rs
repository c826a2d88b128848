//! Two endpoints wired together with a virtual clock (shared by the
//! protocol-scenario tests).

#![allow(dead_code, unreachable_pub)]

use ike::proposal::{ProposalSet, Protocol};
use ike::ts::parse_subnets;
use ike::wire::NotifyType;
use ike::{Config, Endpoint, Event, Lifetimes, PeerConfig, Transmit};
use pki::Identity;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;
use zeroize::Zeroizing;

pub const HUB: &str = "192.0.2.1";
pub const SITE: &str = "192.0.2.2";
/// The pre-shared key both sides hold unless a test says otherwise.
pub const PSK: &str = "correct horse battery";

/// The hub's record of facility "kyoto": kyoto's prefix 198.51.100.0/26
/// behind the hub's 203.0.113.0/25, the whole CRYPTREC IKE profile.
pub fn kyoto_at_hub() -> PeerConfig {
    peer(
        "kyoto",
        "kyoto.example",
        PSK,
        "203.0.113.0/25",
        "198.51.100.0/26",
        None,
        ike::proposal::DEFAULT_IKE,
    )
}

/// Kyoto's record of the hub at [`HUB`]: asks for `hub_side` behind it and
/// offers `ike`.
pub fn hub_at_kyoto(hub_side: &str, ike: &str) -> PeerConfig {
    peer(
        "hub",
        "hub.example",
        PSK,
        "198.51.100.0/26",
        hub_side,
        Some(HUB),
        ike,
    )
}

pub struct Side {
    pub ep: Endpoint,
    pub ip: std::net::IpAddr,
    pub events: Vec<Event>,
    /// Child SAs installed now: inbound SPI → outbound SPI.
    pub live: BTreeMap<u32, u32>,
    /// Encryption keys of live Child SAs: inbound SPI → (in, out).
    pub keys: BTreeMap<u32, (Vec<u8>, Vec<u8>)>,
}

pub struct Pair {
    pub hub: Side,
    pub site: Side,
    pub now: Instant,
    /// Datagrams delivered so far, in order (for drop filters).
    pub delivered: usize,
    /// Ports the site's NAT adds to its source ports (0: no NAT).
    pub site_port_shift: u16,
}

pub fn peer(
    name: &str,
    id: &str,
    psk: &str,
    local: &str,
    remote: &str,
    addr: Option<&str>,
    ike: &str,
) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        remote_id: Identity::parse(id).unwrap(),
        auth: ike::PeerAuth::Psk(Zeroizing::new(psk.as_bytes().to_vec())),
        local_ts: parse_subnets(local).unwrap(),
        remote_ts: parse_subnets(remote).unwrap(),
        remote_addr: addr.map(|a| format!("{a}:500").parse().unwrap()),
        ike: ProposalSet::parse(ike, Protocol::Ike, false).unwrap(),
        esp: ProposalSet::default_for(Protocol::Esp),
        lifetimes: Lifetimes::default(),
        ke_upgrade: true,
    }
}

impl Pair {
    /// A hub (responder) with facility "kyoto", and kyoto's own endpoint
    /// configured to initiate to the hub.
    pub fn new(site_psk: &str, site_ike: &str, site_local: &str, site_remote: &str) -> Pair {
        let mut hub = Endpoint::new(Config::new(
            Identity::parse("hub.example").unwrap(),
            [1; 32],
        ));
        hub.set_peer(kyoto_at_hub()).unwrap();
        let mut site = Endpoint::new(Config::new(
            Identity::parse("kyoto.example").unwrap(),
            [2; 32],
        ));
        site.set_peer(peer(
            "hub",
            "hub.example",
            site_psk,
            site_local,
            site_remote,
            Some(HUB),
            site_ike,
        ))
        .unwrap();
        Pair {
            hub: Side::new(hub, HUB),
            site: Side::new(site, SITE),
            now: Instant::now(),
            delivered: 0,
            site_port_shift: 0,
        }
    }

    /// Delivers datagrams until both sides are quiet; `drop` sees each
    /// (index, from_hub, datagram) and returns true to lose it.
    pub fn run(&mut self, drop: &mut dyn FnMut(usize, bool, &Transmit) -> bool) {
        let shift = self.site_port_shift;
        loop {
            let mut moved = false;
            for from_hub in [true, false] {
                let (src, dst) = if from_hub {
                    (&mut self.hub, &mut self.site)
                } else {
                    (&mut self.site, &mut self.hub)
                };
                while let Some(t) = src.ep.poll_transmit() {
                    moved = true;
                    let index = self.delivered;
                    self.delivered += 1;
                    if drop(index, from_hub, &t) {
                        continue;
                    }
                    // The site may sit behind a NAT that shifts its ports.
                    let (from_port, to) = if from_hub {
                        let port = t.remote.port().wrapping_sub(shift);
                        (t.local.port(), SocketAddr::new(t.remote.ip(), port))
                    } else {
                        (t.local.port().wrapping_add(shift), t.remote)
                    };
                    let from = SocketAddr::new(src.ip, from_port);
                    assert_eq!(t.remote.ip(), dst.ip);
                    dst.ep.handle_datagram(self.now, from, to, &t.contents);
                }
                while let Some(e) = src.ep.poll_event() {
                    src.record(e);
                }
            }
            if !moved {
                break;
            }
        }
    }

    pub fn quiet(&mut self) {
        self.run(&mut |_, _, _| false);
    }

    /// Advances the virtual clock to the next deadline of either side.
    pub fn advance(&mut self) -> bool {
        let next = [self.hub.ep.poll_timeout(), self.site.ep.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) => {
                self.now = self.now.max(t);
                self.hub.ep.handle_timeout(self.now);
                self.site.ep.handle_timeout(self.now);
                true
            }
            None => false,
        }
    }
}

pub fn child_ups(events: &[Event]) -> Vec<&ike::ChildSaInfo> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaUp { child, .. } => Some(child),
            _ => None,
        })
        .collect()
}

pub fn refusals(events: &[Event]) -> Vec<NotifyType> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Refused { notify, .. } => Some(*notify),
            _ => None,
        })
        .collect()
}

impl Side {
    fn new(ep: Endpoint, ip: &str) -> Side {
        Side {
            ep,
            ip: ip.parse().unwrap(),
            events: vec![],
            live: BTreeMap::new(),
            keys: BTreeMap::new(),
        }
    }

    /// Keeps `live` and `keys` the way a data plane would.
    pub fn record(&mut self, e: Event) {
        match &e {
            Event::ChildSaUp { child, .. } => {
                self.live.insert(child.spi_in, child.spi_out);
                self.keys.insert(
                    child.spi_in,
                    (child.keys.encr_in.to_vec(), child.keys.encr_out.to_vec()),
                );
            }
            Event::ChildSaDown { spi_in, .. } => {
                assert!(
                    self.live.remove(spi_in).is_some(),
                    "ChildSaDown for unknown {spi_in:08x}"
                );
                self.keys.remove(spi_in);
            }
            _ => {}
        }
        self.events.push(e);
    }

    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

impl Pair {
    /// Both sides with the given lifetimes.
    pub fn with_lifetimes(site_ike: &str, hub_l: Lifetimes, site_l: Lifetimes) -> Pair {
        let mut p = Pair::new(PSK, site_ike, "198.51.100.0/26", "203.0.113.0/25");
        let mut h = kyoto_at_hub();
        h.lifetimes = hub_l;
        p.hub.ep.set_peer(h).unwrap();
        let mut s = hub_at_kyoto("203.0.113.0/25", site_ike);
        s.lifetimes = site_l;
        p.site.ep.set_peer(s).unwrap();
        p
    }

    pub fn establish(&mut self) {
        self.site.ep.initiate(self.now, "hub").unwrap();
        self.quiet();
    }

    /// Runs the virtual clock until `until`, delivering everything.
    pub fn run_until(&mut self, until: Instant) {
        self.quiet();
        loop {
            let next = [self.hub.ep.poll_timeout(), self.site.ep.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.hub.ep.handle_timeout(self.now);
                    self.site.ep.handle_timeout(self.now);
                    self.quiet();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// Both sides agree on the live Child SAs and their keys.
    pub fn assert_consistent(&self) {
        let mirrored: BTreeMap<u32, u32> = self.site.live.iter().map(|(i, o)| (*o, *i)).collect();
        assert_eq!(
            self.hub.live, mirrored,
            "hub and site disagree on Child SAs"
        );
        for (spi_in, (k_in, k_out)) in &self.hub.keys {
            let spi_out = self.hub.live[spi_in];
            let (s_in, s_out) = &self.site.keys[&spi_out];
            assert_eq!(k_in, s_out, "keys of {spi_in:08x}");
            assert_eq!(k_out, s_in, "keys of {spi_out:08x}");
        }
    }
}

impl Pair {
    /// A pair whose hub has a tuned configuration.
    pub fn with_hub_config(f: impl FnOnce(&mut Config)) -> Pair {
        let mut p = Pair::new(
            PSK,
            "aes256gcm16-prfsha256-ecp256",
            "198.51.100.0/26",
            "203.0.113.0/25",
        );
        let mut cfg = Config::new(Identity::parse("hub.example").unwrap(), [1; 32]);
        f(&mut cfg);
        p.hub.ep = Endpoint::new(cfg);
        p.hub.ep.set_peer(kyoto_at_hub()).unwrap();
        p
    }
}

/// An IKE proposal from raw IANA numbers: encryption (id, key bits; 0 for
/// none), PRFs, integrity algorithms and key exchange methods.
pub fn raw_ike_proposal(
    number: u8,
    encr: &[(u16, u16)],
    prf: &[u16],
    integ: &[u16],
    ke: &[u16],
) -> ike::wire::Proposal {
    use ike::wire::{Transform, TransformType};
    let mut transforms = Vec::new();
    for (id, bits) in encr {
        transforms.push(if *bits == 0 {
            Transform::new(TransformType::Encr, *id)
        } else {
            Transform::with_key_length(TransformType::Encr, *id, *bits)
        });
    }
    for (kind, ids) in [
        (TransformType::Prf, prf),
        (TransformType::Integ, integ),
        (TransformType::Ke, ke),
    ] {
        transforms.extend(ids.iter().map(|id| Transform::new(kind, *id)));
    }
    ike::wire::Proposal {
        number,
        protocol: ike::wire::ProtocolId::Ike,
        spi: vec![],
        transforms,
    }
}

/// Libreswan 4.10's default IKEv2 proposals, as its initiator sends them
/// (libreswan v4.10, lib/libswan/ike_info.c: `default_v2_ike_proposals`
/// AES_GCM_16_256, AES_GCM_16_128, AES_CBC_256, AES_CBC_128, one proposal
/// each; `default_v2_ike_prfs` SHA2_512, SHA2_256, integrity derived from
/// them for CBC; `default_v2_groups` MODP2048, MODP3072, MODP4096,
/// MODP8192, DH19, DH20, DH21, DH31). Its KE payload carries the first
/// group, MODP-2048.
pub fn libreswan_4_10_default_ike() -> Vec<ike::wire::Proposal> {
    const PRF: &[u16] = &[7, 5];
    const INTEG: &[u16] = &[14, 12];
    const KE: &[u16] = &[14, 15, 16, 18, 19, 20, 21, 31];
    vec![
        raw_ike_proposal(1, &[(20, 256)], PRF, &[], KE),
        raw_ike_proposal(2, &[(20, 128)], PRF, &[], KE),
        raw_ike_proposal(3, &[(12, 256)], PRF, INTEG, KE),
        raw_ike_proposal(4, &[(12, 128)], PRF, INTEG, KE),
    ]
}

/// strongSwan 5.9.8's default IKE proposals (swanctl without `proposals`:
/// src/libcharon/plugins/vici/vici_config.c adds `proposal_create_default`
/// then `proposal_create_default_aead`, both built by
/// `proposal_add_supported_ike` in src/libstrongswan/crypto/proposal/
/// proposal.c in rounds of decreasing strength). Key exchange: ECC first
/// (ECP_256, ECP_384, ECP_521, the Brainpool curves, CURVE_25519,
/// CURVE_448), then MODP_3072..MODP_8192, MODP_2048 last; within a round
/// the order is that of the loaded plugins, as Debian 12's build logs it.
/// Its KE payload carries ECP_256.
pub fn strongswan_5_9_8_default_ike() -> Vec<ike::wire::Proposal> {
    const PRF: &[u16] = &[5, 6, 7, 4, 2];
    const KE: &[u16] = &[19, 20, 21, 28, 29, 30, 31, 32, 15, 16, 17, 18, 14];
    vec![
        raw_ike_proposal(
            1,
            &[(12, 128), (12, 192), (12, 256)],
            PRF,
            &[12, 13, 14, 2, 5],
            KE,
        ),
        raw_ike_proposal(
            2,
            &[
                (20, 128),
                (20, 192),
                (20, 256),
                (28, 0),
                (19, 128),
                (19, 192),
                (19, 256),
                (18, 128),
                (18, 192),
                (18, 256),
            ],
            PRF,
            &[],
            KE,
        ),
    ]
}
