//! The sans-IO endpoint: every IKE SA of the hub, driven by datagrams and
//! time, producing datagrams, deadlines and events.
//!
//! Drive it like this, after every input, in this order:
//!
//! ```text
//! handle_datagram(now, remote, local, bytes) / handle_timeout(now) / initiate / close
//!     └─▶ while let Some(t) = poll_transmit()  → send t.contents from t.local to t.remote
//!     └─▶ while let Some(e) = poll_event()     → install/remove SAs, routes, status
//!     └─▶ poll_timeout()                       → when to call handle_timeout next
//! ```
//!
//! Exchanges are explicit states ([`State`]): an initiator goes
//! `InitSent → AuthSent → Established`, a responder `InitDone → Established`;
//! each transition consumes the previous state.

use crate::config::{Config, PeerAuth, PeerConfig};
use crate::crypto::{constant_time_eq, nat_detection_hash, KeyExchange};
use crate::error::Error;
use crate::keys::{derive_child, ChildKeys, IkeKeys};
use crate::proposal::{describe_offer, EspSuite, IkeSuite, KeChoice};
use crate::ts::{all_within, describe, narrow};
use crate::wire::{
    emit_chain, parse_chain, Delete, ExchangeType, Flags, HeaderRepr, KeId, Notify, NotifyType,
    Payload, PayloadType, PayloadsExt, Proposal, ProtocolId, TrafficSelector, HEADER_LEN,
};
use pki::Identity;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

mod auth;
mod fragment;
mod rekey;

const NONCE_LEN: usize = 32;
const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// How long a failed or deleted IKE SA lingers to answer retransmissions.
const LINGER: Duration = Duration::from_secs(10);
/// How long a replaced Child SA waits for its deletion before we delete it
/// ourselves. The initiator of a rekey should delete the old SA at once
/// (RFC 7296 §2.8) and the hub keeps sending on it until then, so a peer
/// that never does must not leave it (and the hub's traffic) there.
const REPLACED_GRACE: Duration = Duration::from_secs(30);
/// Retransmission timeouts stop doubling here.
const MAX_RETRANSMIT_INTERVAL: Duration = Duration::from_secs(30);

/// Handle of an IKE SA: the hub's own SPI for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId(pub u64);

impl std::fmt::Display for IkeSaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local address to send from: the port selects the IKE or the NAT-T
    /// socket; an unspecified IP means "any socket of this family".
    pub local: SocketAddr,
    /// Destination.
    pub remote: SocketAddr,
    /// The datagram, non-ESP marker included when sent on the NAT-T port.
    pub contents: Vec<u8>,
}

/// A Child SA ready to be installed in the data plane.
#[derive(Debug)]
pub struct ChildSaInfo {
    /// SPI the peer sends to us with.
    pub spi_in: u32,
    /// SPI we send to the peer with.
    pub spi_out: u32,
    /// Negotiated suite.
    pub suite: EspSuite,
    /// Keys in both directions.
    pub keys: ChildKeys,
    /// Selectors of the hub's side.
    pub local_ts: Vec<TrafficSelector>,
    /// Selectors of the facility's side.
    pub remote_ts: Vec<TrafficSelector>,
    /// Where ESP goes (the peer's NAT-T address and port).
    pub remote: SocketAddr,
    /// Whether ESP travels in UDP (RFC 3948).
    pub encap: bool,
}

/// A received IKE message on its way through the handlers: where it came
/// from and arrived, its parsed header and its bytes (from the IKE header on).
#[derive(Clone, Copy)]
struct Incoming<'a> {
    remote: SocketAddr,
    local: SocketAddr,
    hdr: &'a HeaderRepr,
    data: &'a [u8],
}

/// Something the driver must act on or record.
#[derive(Debug)]
pub enum Event {
    /// An IKE SA is authenticated.
    IkeSaUp {
        /// Handle.
        ike_sa: IkeSaId,
        /// Facility name.
        peer: String,
        /// Its current address.
        remote: SocketAddr,
        /// Negotiated suite.
        suite: IkeSuite,
        /// Whether the hub initiated.
        initiator: bool,
        /// Whether the facility is behind a NAT.
        remote_behind_nat: bool,
    },
    /// A Child SA is up.
    ChildSaUp {
        /// The IKE SA it belongs to.
        ike_sa: IkeSaId,
        /// Facility name.
        peer: String,
        /// What to install.
        child: ChildSaInfo,
        /// The inbound SPI of the Child SA it replaces (a rekey); the old
        /// one stays installed until its own `ChildSaDown`.
        rekey_of: Option<u32>,
        /// Whether the peer initiated the exchange and we answered it. The
        /// peer installs its inbound SA only when our answer arrives, so a
        /// rekey we answered should keep sending on the old SA until that
        /// is deleted.
        answered: bool,
    },
    /// A facility behind NAT now sends from another address or port (its
    /// NAT mapping changed); ESP to it must go there (RFC 7296 §2.23).
    PeerMoved {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// Facility name.
        peer: String,
        /// The new address and port.
        remote: SocketAddr,
        /// Outbound SPIs of its Child SAs.
        spis_out: Vec<u32>,
    },
    /// An IKE SA was rekeyed: its Child SAs now belong to `new`.
    IkeSaRekeyed {
        /// The IKE SA replaced.
        old: IkeSaId,
        /// The IKE SA that replaces it.
        new: IkeSaId,
        /// Facility name.
        peer: String,
        /// Suite of the new IKE SA.
        suite: IkeSuite,
    },
    /// A Child SA is gone: uninstall it.
    ChildSaDown {
        /// The IKE SA it belonged to.
        ike_sa: IkeSaId,
        /// Facility name.
        peer: String,
        /// Inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
    },
    /// An IKE SA is gone (its Child SAs were reported down before).
    IkeSaDown {
        /// Handle.
        ike_sa: IkeSaId,
        /// Facility name, if it had authenticated.
        peer: Option<String>,
        /// Why.
        reason: String,
    },
    /// A Child SA could not be made under an established IKE SA (the
    /// first one in IKE_AUTH, or one asked for with CREATE_CHILD_SA): the
    /// IKE SA lives on without it. Follows the IKE SA's `IkeSaUp` (and the
    /// `Refused` that names the cause).
    ChildSaFailed {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// Facility name.
        peer: String,
        /// The notification sent or received.
        notify: NotifyType,
        /// Whether the facility refused (rather than the hub).
        by_peer: bool,
        /// Details for the log and status.
        reason: String,
    },
    /// An attempt was refused (by us or by the peer): proposals,
    /// authentication, traffic selectors.
    Refused {
        /// The peer's address.
        remote: SocketAddr,
        /// Facility name, if known.
        peer: Option<String>,
        /// The notification sent or received.
        notify: NotifyType,
        /// Details for the log.
        reason: String,
    },
}

#[derive(Clone, Copy)]
enum Timer {
    Retransmit = 0,
    Expire = 1,
    Keepalive = 2,
    Rekey = 3,
    Dpd = 4,
    Work = 5,
}
const TIMER_COUNT: usize = 6;
const TIMERS: [Timer; TIMER_COUNT] = [
    Timer::Retransmit,
    Timer::Expire,
    Timer::Keepalive,
    Timer::Rekey,
    Timer::Dpd,
    Timer::Work,
];

#[derive(Default)]
struct Timers([Option<Instant>; TIMER_COUNT]);

impl Timers {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }
    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

struct InitSent {
    ke: KeyExchange,
    ke_public: Vec<u8>,
    nonce_i: Vec<u8>,
    message1: Vec<u8>,
    cookie: Option<Vec<u8>>,
    retried_ke: bool,
}

struct AuthSent {
    keys: IkeKeys,
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    message2: Vec<u8>,
    child_spi: u32,
}

struct InitDone {
    keys: IkeKeys,
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
    message1: Vec<u8>,
    message2: Vec<u8>,
}

struct ChildSa {
    spi_in: u32,
    spi_out: u32,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    /// When we rekey it (pushed back while a rekey is queued or running).
    rekey_at: Instant,
    /// Our own rekey of it is queued or in flight.
    rekeying: bool,
    /// When a newer Child SA replaced it. It stays installed until deleted,
    /// so packets in flight on it are still accepted (make-before-break);
    /// if whoever should delete it has not done so [`REPLACED_GRACE`] later,
    /// we do.
    replaced: Option<Instant>,
    /// The peer rekeyed it while our rekey was in flight (RFC 7296 §2.8.1):
    /// the lower nonce of the peer's exchange and the Child SA it made.
    peer_rekey: Option<(Vec<u8>, u32)>,
    /// It uses Extended Sequence Numbers (our rekey offers them again).
    esn: bool,
}

/// Something an established IKE SA still has to do; one request is in
/// flight at a time (window size 1), the rest wait here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    RekeyChild(u32),
    /// An additional Child SA over the facility's configured selectors.
    NewChild,
    RekeyIke,
    Dpd,
    DeleteChildren(Vec<u32>),
}

struct Established {
    keys: IkeKeys,
    children: Vec<ChildSa>,
    rekey_at: Instant,
    queue: VecDeque<Work>,
    last_received: Instant,
    /// Rekeyed into a new IKE SA: it only waits to be deleted.
    superseded: bool,
}

enum State {
    InitSent(InitSent),
    AuthSent(AuthSent),
    InitDone(InitDone),
    Established(Established),
    /// We sent a Delete for the IKE SA and wait for the answer.
    Closing(Established),
    /// Failed or deleted; kept only to answer retransmitted requests.
    Dead,
    /// To be removed now.
    Gone,
}

impl State {
    fn keys(&self) -> Option<&IkeKeys> {
        match self {
            State::AuthSent(s) => Some(&s.keys),
            State::InitDone(s) => Some(&s.keys),
            State::Established(s) | State::Closing(s) => Some(&s.keys),
            _ => None,
        }
    }
}

struct Pending {
    message_id: u32,
    /// The request as sent: one datagram, or its fragments.
    datagrams: Vec<Vec<u8>>,
    tries: u32,
    kind: PendingKind,
}

/// What an outstanding request of an established IKE SA was for.
enum PendingKind {
    /// IKE_SA_INIT or IKE_AUTH (their state lives in [`State`]).
    Handshake,
    /// Closing the IKE SA.
    DeleteIke,
    RekeyChild {
        old_spi_in: u32,
        new_spi_in: u32,
        nonce_i: Vec<u8>,
        ke: Option<KeyExchange>,
    },
    RekeyIke {
        new_spi: u64,
        nonce_i: Vec<u8>,
        ke: KeyExchange,
    },
    Dpd,
    DeleteChildren(Vec<u32>),
}

struct IkeSa {
    id: IkeSaId,
    initiator: bool,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    peer: Option<Arc<PeerConfig>>,
    state: State,
    next_request_id: u32,
    expected_request_id: u32,
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    pending: Option<Pending>,
    timers: Timers,
    /// The deadline this SA has in the endpoint's timer queue: its
    /// `timers.next()` when it was last stored.
    queued: Option<Instant>,
    encap: bool,
    remote_behind_nat: bool,
    last_sent: Instant,
    /// A responder's entry in the half-open table, until IKE_AUTH.
    half_open_key: Option<(SocketAddr, u64)>,
    /// Both sides announced IKE fragmentation (RFC 7383).
    fragmentation: bool,
    /// The signature hashes the peer announced (RFC 7427).
    sig_hashes: auth::SigHashes,
    /// A fragmented message being received.
    reassembly: Option<fragment::Reassembly>,
}

/// Secrets of stateless cookies (RFC 7296 §2.6), rotated so that a cookie
/// is valid for at most two rotation periods.
#[derive(Default)]
struct CookieSecrets {
    version: u8,
    current: [u8; 32],
    previous: [u8; 32],
    rotate_at: Option<Instant>,
}

const COOKIE_ROTATION: Duration = Duration::from_secs(300);

/// As responder: the facility's proposed selectors narrowed to its
/// configuration (RFC 7296 §2.9), as (its side, the hub's side).
fn narrow_to_peer(
    peer: &PeerConfig,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), Error> {
    let remote_allowed: Vec<TrafficSelector> =
        peer.remote_ts.iter().map(|s| s.to_selector()).collect();
    let local_allowed: Vec<TrafficSelector> =
        peer.local_ts.iter().map(|s| s.to_selector()).collect();
    let remote_ts = narrow(tsi, &remote_allowed);
    let local_ts = narrow(tsr, &local_allowed);
    if remote_ts.is_empty() || local_ts.is_empty() {
        return Err(Error::TsUnacceptable(format!(
            "facility proposed TSi {} TSr {}; configured {} === {}",
            describe(tsi),
            describe(tsr),
            describe(&remote_allowed),
            describe(&local_allowed)
        )));
    }
    Ok((remote_ts, local_ts))
}

/// As initiator: the responder's selectors, which may only narrow what we
/// proposed, as (our side, the facility's side).
fn accept_narrowed(
    peer: &PeerConfig,
    payloads: &[Payload],
) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), Error> {
    let tsi = payloads.ts_i().cloned().ok_or(Error::Missing("no TSi"))?;
    let tsr = payloads.ts_r().cloned().ok_or(Error::Missing("no TSr"))?;
    let local_allowed: Vec<TrafficSelector> =
        peer.local_ts.iter().map(|s| s.to_selector()).collect();
    let remote_allowed: Vec<TrafficSelector> =
        peer.remote_ts.iter().map(|s| s.to_selector()).collect();
    if tsi.is_empty()
        || tsr.is_empty()
        || !all_within(&tsi, &local_allowed)
        || !all_within(&tsr, &remote_allowed)
    {
        return Err(Error::TsUnacceptable(
            "responder widened the traffic selectors".into(),
        ));
    }
    Ok((tsi, tsr))
}

fn spi_pairs(children: &[ChildSa]) -> Vec<(u32, u32)> {
    children.iter().map(|c| (c.spi_in, c.spi_out)).collect()
}

impl ChildSa {
    fn new(info: &ChildSaInfo, rekey_at: Instant) -> ChildSa {
        ChildSa {
            spi_in: info.spi_in,
            spi_out: info.spi_out,
            local_ts: info.local_ts.clone(),
            remote_ts: info.remote_ts.clone(),
            rekey_at,
            rekeying: false,
            replaced: None,
            peer_rekey: None,
            esn: info.suite.esn,
        }
    }
}

impl IkeSa {
    fn peer_name(&self) -> Option<String> {
        self.peer.as_ref().map(|p| p.name.clone())
    }
}

/// Summary of one IKE SA, for status displays.
#[derive(Debug, Clone)]
pub struct IkeSaStatus {
    /// Handle.
    pub id: IkeSaId,
    /// Facility, once known.
    pub peer: Option<String>,
    /// "connecting", "established" or "closing".
    pub state: &'static str,
    /// Current address of the peer.
    pub remote: SocketAddr,
    /// Whether the hub initiated.
    pub initiator: bool,
    /// Negotiated suite, once keys exist.
    pub suite: Option<IkeSuite>,
    /// Inbound/outbound SPIs of its Child SAs.
    pub children: Vec<(u32, u32)>,
    /// When the facility was last heard from (any authenticated message,
    /// including answers to liveness checks), once established.
    pub last_received: Option<Instant>,
}

/// All IKE SAs of the hub.
pub struct Endpoint {
    config: Config,
    peers: HashMap<String, Arc<PeerConfig>>,
    by_id: HashMap<Identity, String>,
    sas: HashMap<u64, IkeSa>,
    /// Every stored SA's next deadline, earliest first, so that the next
    /// deadline is found without scanning all SAs. Entries go stale when
    /// an SA's deadline changes or it goes away; an entry is live only
    /// while it matches the SA's `queued`. Stale ones are dropped when
    /// they reach the top, and the queue is rebuilt when they outnumber
    /// the SAs.
    timer_queue: BinaryHeap<Reverse<(Instant, u64)>>,
    half_open: HashMap<(SocketAddr, u64), u64>,
    half_open_per_ip: HashMap<IpAddr, usize>,
    /// Where facilities with [`PeerConfig::ke_upgrade`] off send from.
    keep_ke: KeepKe,
    cookies: CookieSecrets,
    /// Token bucket of unprotected error replies: (tokens, last refill).
    reply_tokens: (f64, Option<Instant>),
    /// The payloads of a just-reassembled fragmented message, taken by the
    /// next `decrypt` (which then has nothing left to decrypt).
    reassembled: Option<Vec<Payload>>,
    child_spis: HashSet<u32>,
    /// A moment on the monotonic clock and the wall-clock time (seconds
    /// since the epoch) then, for certificate validity checks.
    wall_clock: Option<(Instant, i64)>,
    rng: ChaCha20Rng,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_id", &self.config.local_id)
            .field("peers", &self.peers.len())
            .field("ike_sas", &self.sas.len())
            .finish_non_exhaustive()
    }
}

/// The addresses of facilities whose [`PeerConfig::ke_upgrade`] is off:
/// their configured address and the one they last authenticated from. A
/// facility is known only by its address at IKE_SA_INIT (IDi comes in
/// IKE_AUTH), so this is how its setting reaches the responder's choice.
#[derive(Debug, Default)]
struct KeepKe {
    /// Facility name → (configured address, last authenticated address).
    by_peer: HashMap<String, (Option<IpAddr>, Option<IpAddr>)>,
    /// Address → how many of the above name it.
    by_ip: HashMap<IpAddr, usize>,
}

impl KeepKe {
    /// Follows a facility's configuration; `seen` is an address it just
    /// authenticated from. A facility whose own proposals allow no group
    /// compliant after 2030 is kept too: asking it for one would only fail
    /// its IKE_AUTH.
    fn update(&mut self, peer: &PeerConfig, seen: Option<IpAddr>) {
        let last = self.by_peer.get(&peer.name).and_then(|(_, s)| *s);
        self.remove(&peer.name);
        if peer.ke_upgrade && peer.ike.allows_compliant_ke() {
            return;
        }
        let entry = (peer.remote_addr.map(|a| a.ip()), seen.or(last));
        for ip in [entry.0, entry.1].into_iter().flatten() {
            *self.by_ip.entry(ip).or_default() += 1;
        }
        self.by_peer.insert(peer.name.clone(), entry);
    }

    fn remove(&mut self, name: &str) {
        let Some((configured, seen)) = self.by_peer.remove(name) else {
            return;
        };
        for ip in [configured, seen].into_iter().flatten() {
            if let Some(n) = self.by_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.by_ip.contains_key(&ip)
    }
}

fn first_error_notify(payloads: &[Payload]) -> Option<&Notify> {
    payloads.notifies().find(|n| n.kind.is_error())
}

fn unspecified_like(addr: SocketAddr, port: u16) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    }
}

impl Endpoint {
    /// An endpoint with no facilities.
    pub fn new(config: Config) -> Endpoint {
        let rng = ChaCha20Rng::from_seed(config.rng_seed);
        Endpoint {
            config,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            sas: HashMap::new(),
            timer_queue: BinaryHeap::new(),
            half_open: HashMap::new(),
            half_open_per_ip: HashMap::new(),
            keep_ke: KeepKe::default(),
            cookies: CookieSecrets::default(),
            reply_tokens: (0.0, None),
            reassembled: None,
            child_spis: HashSet::new(),
            wall_clock: None,
            rng,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The endpoint's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- configuration -------------------------------------------------

    /// Tells the endpoint the wall-clock time (seconds since the epoch) at
    /// `now`, for certificate validity periods. The endpoint keeps no clock
    /// of its own; the daemon calls this as it runs, so clock corrections
    /// are followed. Until it is called, certificates are refused.
    pub fn set_wall_clock(&mut self, now: Instant, unix_secs: i64) {
        self.wall_clock = Some((now, unix_secs));
    }

    fn unix_now(&self, now: Instant) -> Option<i64> {
        let (at, unix) = self.wall_clock?;
        let ahead = now.saturating_duration_since(at).as_secs() as i64;
        let behind = at.saturating_duration_since(now).as_secs() as i64;
        Some(unix + ahead - behind)
    }

    /// Replaces the CA and revocation list that facility certificates are
    /// checked against (after `renkei cert revoke`). Established SAs are
    /// not touched; the caller tears down those of a revoked facility.
    pub fn set_trust(&mut self, trust: Option<Arc<pki::verify::TrustStore>>) {
        self.config.trust = trust;
    }

    /// Adds a facility, or replaces the one of the same name (its existing
    /// SAs keep the configuration they were made with).
    pub fn set_peer(&mut self, peer: PeerConfig) -> Result<(), Error> {
        if let Some(other) = self.by_id.get(&peer.remote_id) {
            if *other != peer.name {
                return Err(Error::Misbehaved(format!(
                    "identity {} already belongs to {other}",
                    peer.remote_id
                )));
            }
        }
        if let Some(old) = self.peers.get(&peer.name) {
            self.by_id.remove(&old.remote_id);
        }
        self.by_id.insert(peer.remote_id.clone(), peer.name.clone());
        self.keep_ke.update(&peer, None);
        self.peers.insert(peer.name.clone(), Arc::new(peer));
        Ok(())
    }

    /// Whether an IKE_SA_INIT from `ip` may be answered with
    /// INVALID_KE_PAYLOAD to get a group compliant after 2030
    /// ([`PeerConfig::ke_upgrade`]).
    fn ke_upgrade_from(&self, ip: IpAddr) -> bool {
        !self.keep_ke.contains(ip)
    }

    /// Removes a facility and closes its IKE SAs.
    pub fn remove_peer(&mut self, now: Instant, name: &str) -> Result<(), Error> {
        let peer = self
            .peers
            .remove(name)
            .ok_or_else(|| Error::NotFound(format!("facility {name}")))?;
        self.by_id.remove(&peer.remote_id);
        self.keep_ke.remove(name);
        for id in self.sas_of(name) {
            self.close(now, id);
        }
        Ok(())
    }

    /// A facility's configuration.
    pub fn peer(&self, name: &str) -> Option<&PeerConfig> {
        self.peers.get(name).map(|p| &**p)
    }

    fn sas_of(&self, name: &str) -> Vec<IkeSaId> {
        let mut v: Vec<IkeSaId> = self
            .sas
            .values()
            .filter(|sa| sa.peer.as_ref().is_some_and(|p| p.name == name))
            .map(|sa| sa.id)
            .collect();
        v.sort();
        v
    }

    /// The IKE SAs of one facility.
    pub fn ike_sas_of(&self, name: &str) -> Vec<IkeSaId> {
        self.sas_of(name)
    }

    /// Status of every IKE SA.
    pub fn status(&self) -> Vec<IkeSaStatus> {
        let mut v: Vec<IkeSaStatus> = self
            .sas
            .values()
            .filter_map(|sa| {
                let state = match &sa.state {
                    State::InitSent(_) | State::AuthSent(_) | State::InitDone(_) => "connecting",
                    State::Established(_) => "established",
                    State::Closing(_) => "closing",
                    State::Dead | State::Gone => return None,
                };
                let children = match &sa.state {
                    State::Established(e) | State::Closing(e) => {
                        e.children.iter().map(|c| (c.spi_in, c.spi_out)).collect()
                    }
                    _ => Vec::new(),
                };
                Some(IkeSaStatus {
                    id: sa.id,
                    peer: sa.peer_name(),
                    state,
                    remote: sa.remote,
                    initiator: sa.initiator,
                    suite: sa.state.keys().map(|k| k.suite),
                    children,
                    last_received: match &sa.state {
                        State::Established(e) | State::Closing(e) => Some(e.last_received),
                        _ => None,
                    },
                })
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    // ---- outputs -------------------------------------------------------

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Entries in the timer queue, live and stale (for tests of its bound:
    /// at most twice the IKE SAs plus 1,024).
    #[doc(hidden)]
    pub fn timer_queue_len(&self) -> usize {
        self.timer_queue.len()
    }

    /// When [`Endpoint::handle_timeout`] must next be called. From a
    /// queue of deadlines: O(log n) in the number of IKE SAs, not a scan
    /// (it takes `&mut self` to drop stale entries on the way).
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.timer_queue.len() > 2 * self.sas.len() + 1024 {
            // Every SA is stored here (between calls), so its live entry
            // is exactly its `queued`.
            self.timer_queue = self
                .sas
                .values()
                .filter_map(|sa| sa.queued.map(|t| Reverse((t, sa.id.0))))
                .collect();
        }
        while let Some(&Reverse((t, id))) = self.timer_queue.peek() {
            if self.sas.get(&id).is_some_and(|sa| sa.queued == Some(t)) {
                return Some(t);
            }
            self.timer_queue.pop();
        }
        None
    }

    // ---- inputs --------------------------------------------------------

    /// Starts an IKE SA to a facility that has a remote address.
    pub fn initiate(&mut self, now: Instant, name: &str) -> Result<IkeSaId, Error> {
        let peer = self
            .peers
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("facility {name}")))?;
        let remote = peer
            .remote_addr
            .ok_or_else(|| Error::NotFound(format!("remote address of {name}")))?;
        let group = peer
            .ike
            .first_ke()
            .ok_or_else(|| Error::NoProposalChosen("no key exchange method configured".into()))?;
        let spi_i = self.new_ike_spi();
        let local = unspecified_like(remote, self.config.ike_port);
        let mut sa = IkeSa {
            id: IkeSaId(spi_i),
            initiator: true,
            spi_i,
            spi_r: 0,
            local,
            remote,
            peer: Some(peer),
            state: State::Gone,
            next_request_id: 0,
            expected_request_id: 0,
            last_response: None,
            pending: None,
            timers: Timers::default(),
            queued: None,
            encap: false,
            remote_behind_nat: false,
            last_sent: now,
            half_open_key: None,
            fragmentation: false,
            sig_hashes: auth::SigHashes::default(),
            reassembly: None,
        };
        self.send_init(now, &mut sa, group, None, false, None)?;
        info!(peer = name, %remote, ike_sa = %sa.id, "initiating IKE SA");
        let id = sa.id;
        self.store(sa);
        Ok(id)
    }

    /// Deletes an IKE SA and its Child SAs: a Delete is sent when the SA is
    /// established; the events follow at once.
    pub fn close(&mut self, now: Instant, id: IkeSaId) {
        let Some(mut sa) = self.sas.remove(&id.0) else {
            return;
        };
        self.abandon_pending(&mut sa);
        match std::mem::replace(&mut sa.state, State::Gone) {
            State::Established(mut est) => {
                let gone = spi_pairs(&est.children);
                est.children.clear();
                self.children_gone(&sa, &gone);
                let payloads = [Payload::Delete(Delete {
                    protocol: ProtocolId::Ike,
                    spi_size: 0,
                    spis: vec![],
                })];
                match self.send_request(
                    now,
                    &mut sa,
                    &est.keys,
                    ExchangeType::Informational,
                    &payloads,
                    PendingKind::DeleteIke,
                ) {
                    Ok(()) => sa.state = State::Closing(est),
                    Err(e) => warn!(ike_sa = %sa.id, "cannot send delete: {e}"),
                }
                self.events.push_back(Event::IkeSaDown {
                    ike_sa: sa.id,
                    peer: sa.peer_name(),
                    reason: "closed by the hub".into(),
                });
            }
            State::Closing(est) => sa.state = State::Closing(est),
            State::Dead | State::Gone => {}
            _ => self.events.push_back(Event::IkeSaDown {
                ike_sa: sa.id,
                peer: sa.peer_name(),
                reason: "closed by the hub before it was established".into(),
            }),
        }
        self.put_back(sa);
    }

    /// Closes every IKE SA (on shutdown).
    pub fn close_all(&mut self, now: Instant) {
        let mut ids: Vec<u64> = self.sas.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close(now, IkeSaId(id));
        }
    }

    /// Processes a datagram received on `local` from `remote`. Datagrams on
    /// the NAT-T port must start with the non-ESP marker (RFC 3948 §2.2);
    /// NAT keepalives are absorbed.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) {
        let data = if local.port() == self.config.natt_port {
            match natt::classify(data) {
                natt::Datagram::Ike(d) => d,
                _ => return,
            }
        } else {
            data
        };
        let hdr = match HeaderRepr::parse(data) {
            Ok(h) => h,
            Err(e) => {
                debug!(%remote, "dropping datagram: {e}");
                return;
            }
        };
        let msg = Incoming {
            remote,
            local,
            hdr: &hdr,
            data,
        };
        if let Err(e) = self.dispatch(now, msg) {
            debug!(%remote, exchange = %hdr.exchange, "{e}");
        }
    }

    /// Runs every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // The live entries due now (a timer set while handling these waits
        // for the next call, as before).
        let mut due = Vec::new();
        while let Some(&Reverse((t, id))) = self.timer_queue.peek() {
            if t > now {
                break;
            }
            self.timer_queue.pop();
            // Live: its entry leaves the queue now (so that a duplicate
            // entry for the same deadline is not taken as live too).
            if let Some(sa) = self.sas.get_mut(&id).filter(|sa| sa.queued == Some(t)) {
                sa.queued = None;
                due.push(id);
            }
        }
        for id in due {
            let Some(mut sa) = self.sas.remove(&id) else {
                continue;
            };
            for timer in TIMERS {
                if sa.timers.get(timer).is_some_and(|t| t <= now) {
                    sa.timers.stop(timer);
                    self.on_timer(now, &mut sa, timer);
                }
            }
            self.put_back(sa);
        }
    }

    // ---- internals -----------------------------------------------------

    fn put_back(&mut self, mut sa: IkeSa) {
        if matches!(sa.state, State::Gone) {
            self.forget_half_open(&mut sa);
            if let State::Established(e) | State::Closing(e) = &sa.state {
                for c in &e.children {
                    self.child_spis.remove(&c.spi_in);
                }
            }
            debug!(ike_sa = %sa.id, "IKE SA removed");
        } else {
            self.store(sa);
        }
    }

    /// Keeps `sa` (new or changed) and queues its next deadline.
    fn store(&mut self, mut sa: IkeSa) {
        let next = sa.timers.next();
        if next != sa.queued {
            if let Some(t) = next {
                self.timer_queue.push(Reverse((t, sa.id.0)));
            }
            sa.queued = next;
        }
        self.sas.insert(sa.id.0, sa);
    }

    fn new_ike_spi(&mut self) -> u64 {
        loop {
            let spi = self.rng.next_u64();
            if spi != 0 && !self.sas.contains_key(&spi) {
                return spi;
            }
        }
    }

    fn new_child_spi(&mut self) -> u32 {
        loop {
            let spi = self.rng.next_u32();
            // SPIs 1-255 are reserved by IANA (RFC 4303 §2.1).
            if spi > 255 && self.child_spis.insert(spi) {
                return spi;
            }
        }
    }

    fn random(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.rng.fill_bytes(&mut v);
        v
    }

    fn transmit(&mut self, now: Instant, sa: &mut IkeSa, message: Vec<u8>) {
        sa.last_sent = now;
        let contents = self.frame(sa.local, message);
        self.transmits.push_back(Transmit {
            local: sa.local,
            remote: sa.remote,
            contents,
        });
    }

    fn transmit_all(&mut self, now: Instant, sa: &mut IkeSa, messages: &[Vec<u8>]) {
        for m in messages {
            self.transmit(now, sa, m.clone());
        }
    }

    fn frame(&self, local: SocketAddr, message: Vec<u8>) -> Vec<u8> {
        if local.port() == self.config.natt_port {
            let mut framed = Vec::with_capacity(message.len() + 4);
            framed.extend_from_slice(&NON_ESP_MARKER);
            framed.extend_from_slice(&message);
            framed
        } else {
            message
        }
    }

    fn plain_message(
        spi_i: u64,
        spi_r: u64,
        exchange: ExchangeType,
        flags: Flags,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<Vec<u8>, Error> {
        let (first, body) = emit_chain(payloads)?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        HeaderRepr {
            spi_i,
            spi_r,
            next_payload: first,
            exchange,
            flags,
            message_id,
            length: u32::try_from(HEADER_LEN + body.len())
                .map_err(|_| Error::Missing("message too long"))?,
        }
        .emit(&mut out);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// An encrypted message, as one datagram or — when the peer supports
    /// it and the message is larger than the fragment size — as RFC 7383
    /// fragments, each encrypted on its own.
    fn encrypted_messages(
        &mut self,
        sa: &IkeSa,
        keys: &IkeKeys,
        exchange: ExchangeType,
        response: bool,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<Vec<Vec<u8>>, Error> {
        let (first, inner) = emit_chain(payloads)?;
        let marker = if sa.local.port() == self.config.natt_port {
            4
        } else {
            0
        };
        // The size counts the whole IP datagram, as strongSwan's
        // `fragment_size` does: a fragment must pass a path of that MTU
        // without IP fragmentation, which RFC 7383 §1 exists to avoid.
        let ip_udp = if sa.remote.is_ipv4() { 20 + 8 } else { 40 + 8 };
        let limit = self.config.fragment_size;
        let whole = ip_udp + marker + HEADER_LEN + 4 + keys.outbound.sealed_len(inner.len());
        // RFC 7383 §2.5.1: fragment only what would not fit. Each fragment
        // carries the IKE header, the SKF header (8 bytes) and its own IV,
        // padding and ICV: the largest piece whose datagram fits.
        let fixed = ip_udp + marker + HEADER_LEN + 8;
        let mut per_fragment = limit.saturating_sub(fixed + keys.outbound.sealed_len(0));
        while per_fragment > 0 && fixed + keys.outbound.sealed_len(per_fragment) > limit {
            per_fragment -= 1;
        }
        let pieces: Vec<&[u8]> = if sa.fragmentation && whole > limit && per_fragment >= 32 {
            inner.chunks(per_fragment).collect()
        } else {
            vec![&inner[..]]
        };
        let fragmented = pieces.len() > 1;
        let total_fragments = u16::try_from(pieces.len())
            .map_err(|_| Error::Missing("message too large to fragment"))?;
        let mut out = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            let extra = if fragmented { 4 } else { 0 };
            let body_len = keys.outbound.sealed_len(piece.len());
            let total = HEADER_LEN + 4 + extra + body_len;
            let mut m = Vec::with_capacity(total);
            HeaderRepr {
                spi_i: sa.spi_i,
                spi_r: sa.spi_r,
                next_payload: if fragmented {
                    PayloadType::Skf
                } else {
                    PayloadType::Sk
                },
                exchange,
                flags: Flags::new(sa.initiator, response),
                message_id,
                length: u32::try_from(total).map_err(|_| Error::Missing("message too long"))?,
            }
            .emit(&mut m);
            // The first fragment names the first inner payload; the others 0.
            m.push(if i == 0 { first.into() } else { 0 });
            m.push(0);
            m.extend_from_slice(&crate::wire::len16(4 + extra + body_len)?.to_be_bytes());
            if fragmented {
                m.extend_from_slice(&u16::try_from(i + 1).unwrap_or(u16::MAX).to_be_bytes());
                m.extend_from_slice(&total_fragments.to_be_bytes());
            }
            let body = keys.outbound.seal(&m, piece, &mut self.rng)?;
            m.extend_from_slice(&body);
            out.push(m);
        }
        Ok(out)
    }

    /// The inner payloads of an encrypted message (or of the fragmented
    /// message just reassembled).
    fn decrypt(
        &mut self,
        keys: &IkeKeys,
        hdr: &HeaderRepr,
        data: &[u8],
    ) -> Result<Vec<Payload>, Error> {
        if let Some(payloads) = self.reassembled.take() {
            return Ok(payloads);
        }
        let outer = parse_chain(hdr.next_payload, data.get(HEADER_LEN..).unwrap_or_default())?;
        let Some(Payload::Sk {
            first_inner,
            data: body,
        }) = outer.last()
        else {
            return Err(Error::Missing("no Encrypted payload"));
        };
        let prefix = &data[..data.len() - body.len()];
        let inner = keys.inbound.open(prefix, body)?;
        Ok(parse_chain(*first_inner, &inner)?)
    }

    fn send_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        keys: &IkeKeys,
        exchange: ExchangeType,
        payloads: &[Payload],
        kind: PendingKind,
    ) -> Result<(), Error> {
        let id = sa.next_request_id;
        let messages = self.encrypted_messages(sa, keys, exchange, false, id, payloads)?;
        sa.next_request_id = id.wrapping_add(1);
        self.start_request(now, sa, id, messages, kind);
        Ok(())
    }

    fn start_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        message_id: u32,
        messages: Vec<Vec<u8>>,
        kind: PendingKind,
    ) {
        sa.timers
            .set(Timer::Retransmit, now + self.config.retransmit_timeout);
        self.transmit_all(now, sa, &messages);
        sa.pending = Some(Pending {
            message_id,
            datagrams: messages,
            tries: 1,
            kind,
        });
    }

    fn send_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        keys: &IkeKeys,
        exchange: ExchangeType,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        let messages = self.encrypted_messages(sa, keys, exchange, true, message_id, payloads)?;
        self.transmit_all(now, sa, &messages);
        sa.last_response = Some((message_id, messages));
        sa.expected_request_id = message_id.wrapping_add(1);
        Ok(())
    }

    /// Answers an IKE_SA_INIT request with an unprotected error notify.
    fn reply_init_error(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: SocketAddr,
        hdr: &HeaderRepr,
        kind: NotifyType,
        data: Vec<u8>,
    ) {
        if !self.take_reply_token(now) {
            debug!(%remote, notify = %kind, "error reply suppressed (rate limit)");
            return;
        }
        self.send_init_notify(remote, local, hdr, kind, data);
    }

    /// A token of the unprotected-reply budget, refilled at
    /// `error_replies_per_sec` up to one second's worth.
    fn take_reply_token(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.config.error_replies_per_sec);
        let (tokens, last) = self.reply_tokens;
        let refill = last.map_or(rate, |l| {
            now.saturating_duration_since(l).as_secs_f64() * rate
        });
        let tokens = (tokens + refill).min(rate);
        if tokens >= 1.0 {
            self.reply_tokens = (tokens - 1.0, Some(now));
            true
        } else {
            self.reply_tokens = (tokens, Some(now));
            false
        }
    }

    /// Releases a responder's half-open table entry.
    fn forget_half_open(&mut self, sa: &mut IkeSa) {
        if let Some(key) = sa.half_open_key.take() {
            self.half_open.remove(&key);
            if let Some(n) = self.half_open_per_ip.get_mut(&key.0.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.half_open_per_ip.remove(&key.0.ip());
                }
            }
        }
    }

    /// Half-open (responder) IKE SAs waiting for IKE_AUTH.
    pub fn half_open_count(&self) -> usize {
        self.half_open.len()
    }

    /// `Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>)`
    /// (RFC 7296 §2.6).
    fn cookie(version: u8, secret: &[u8; 32], nonce: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        use aws_lc_rs::digest;
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(nonce);
        match ip {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&spi_i.to_be_bytes());
        ctx.update(secret);
        let mut out = vec![version];
        out.extend_from_slice(ctx.finish().as_ref());
        out
    }

    fn rotate_cookie_secret(&mut self, now: Instant) {
        if self.cookies.rotate_at.is_some_and(|t| t > now) {
            return;
        }
        self.cookies.previous = self.cookies.current;
        self.rng.fill_bytes(&mut self.cookies.current);
        self.cookies.version = self.cookies.version.wrapping_add(1);
        self.cookies.rotate_at = Some(now + COOKIE_ROTATION);
    }

    /// Whether a request carries a cookie we issued (current or previous
    /// secret), as its first payload.
    fn cookie_valid(
        &self,
        payloads: &[Payload],
        nonce: &[u8],
        remote: SocketAddr,
        spi_i: u64,
    ) -> bool {
        let Some(Payload::Notify(n)) = payloads.first() else {
            return false;
        };
        if n.kind != NotifyType::Cookie || n.data.is_empty() {
            return false;
        }
        let c = &self.cookies;
        let (version, secret) = if n.data[0] == c.version {
            (c.version, &c.current)
        } else if n.data[0] == c.version.wrapping_sub(1) {
            (n.data[0], &c.previous)
        } else {
            return false;
        };
        constant_time_eq(
            &n.data,
            &Self::cookie(version, secret, nonce, remote.ip(), spi_i),
        )
    }

    fn send_init_notify(
        &mut self,
        remote: SocketAddr,
        local: SocketAddr,
        hdr: &HeaderRepr,
        kind: NotifyType,
        data: Vec<u8>,
    ) {
        let payloads = [Payload::Notify(Notify::new(kind, data))];
        let Ok(message) = Self::plain_message(
            hdr.spi_i,
            0,
            ExchangeType::IkeSaInit,
            Flags::new(false, true),
            0,
            &payloads,
        ) else {
            return;
        };
        let contents = self.frame(local, message);
        self.transmits.push_back(Transmit {
            local,
            remote,
            contents,
        });
    }

    fn refuse(
        &mut self,
        remote: SocketAddr,
        peer: Option<String>,
        notify: NotifyType,
        reason: String,
    ) {
        warn!(%remote, peer = peer.as_deref().unwrap_or("-"), notify = %notify, "{reason}");
        self.events.push_back(Event::Refused {
            remote,
            peer,
            notify,
            reason,
        });
    }

    fn dispatch(&mut self, now: Instant, msg: Incoming<'_>) -> Result<(), Error> {
        let hdr = msg.hdr;
        if hdr.exchange == ExchangeType::IkeSaInit && !hdr.flags.response() {
            if hdr.spi_r != 0 || hdr.message_id != 0 || !hdr.flags.initiator() {
                return Err(Error::Missing(
                    "IKE_SA_INIT request with responder SPI or message ID",
                ));
            }
            return self.respond_init(now, msg);
        }
        // The sender's I flag tells whose SPI is ours (RFC 7296 §3.1).
        let ours = if hdr.flags.initiator() {
            hdr.spi_r
        } else {
            hdr.spi_i
        };
        let Some(mut sa) = self.sas.remove(&ours) else {
            return Err(Error::NotFound(format!("IKE SA {ours:016x}")));
        };
        let theirs_matches = if sa.initiator {
            !hdr.flags.initiator() && (sa.spi_r == 0 || sa.spi_r == hdr.spi_r)
        } else {
            hdr.flags.initiator() && sa.spi_i == hdr.spi_i
        };
        let result = if !theirs_matches {
            Err(Error::Misbehaved("SPI or role mismatch".into()))
        } else if hdr.next_payload == PayloadType::Skf {
            self.on_fragment(now, &mut sa, msg)
        } else if hdr.flags.response() {
            self.on_response(now, &mut sa, msg)
        } else {
            self.on_request(now, &mut sa, msg)
        };
        self.put_back(sa);
        result
    }

    fn on_request(&mut self, now: Instant, sa: &mut IkeSa, msg: Incoming<'_>) -> Result<(), Error> {
        let hdr = msg.hdr;
        // RFC 7296 §2.2: a retransmitted request gets the cached response.
        if let Some((id, messages)) = &sa.last_response {
            if *id == hdr.message_id {
                let messages = messages.clone();
                self.transmit_all(now, sa, &messages);
                return Ok(());
            }
        }
        if hdr.message_id != sa.expected_request_id {
            return Err(Error::Misbehaved(format!(
                "request with message ID {} (expected {})",
                hdr.message_id, sa.expected_request_id
            )));
        }
        match (hdr.exchange, std::mem::replace(&mut sa.state, State::Gone)) {
            (ExchangeType::IkeAuth, State::InitDone(init)) => self.respond_auth(now, sa, msg, init),
            (ExchangeType::Informational, State::Established(est)) => {
                self.respond_informational(now, sa, msg, est)
            }
            (ExchangeType::CreateChildSa, State::Established(est)) => {
                self.respond_create_child(now, sa, msg, est)
            }
            (_, state) => {
                sa.state = state;
                Err(Error::Misbehaved(format!(
                    "unexpected {} request",
                    hdr.exchange
                )))
            }
        }
    }

    fn on_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: Incoming<'_>,
    ) -> Result<(), Error> {
        let Incoming { hdr, data, .. } = msg;
        if sa.pending.as_ref().map(|p| p.message_id) != Some(hdr.message_id) {
            return Err(Error::Misbehaved(format!(
                "unexpected response {}",
                hdr.message_id
            )));
        }
        match (hdr.exchange, std::mem::replace(&mut sa.state, State::Gone)) {
            (ExchangeType::IkeSaInit, State::InitSent(init)) => {
                self.on_init_response(now, sa, msg, init)
            }
            (ExchangeType::IkeAuth, State::AuthSent(auth)) => {
                self.on_auth_response(now, sa, hdr, data, auth)
            }
            (ExchangeType::Informational, State::Closing(est)) => {
                if self.decrypt(&est.keys, hdr, data).is_err() {
                    sa.state = State::Closing(est);
                    return Err(Error::Misbehaved("undecryptable response".into()));
                }
                sa.pending = None;
                sa.state = State::Gone;
                Ok(())
            }
            (_, State::Established(est)) => self.on_established_response(now, sa, msg, est),
            (_, state) => {
                sa.state = state;
                Err(Error::Misbehaved(format!(
                    "unexpected {} response",
                    hdr.exchange
                )))
            }
        }
    }

    fn on_timer(&mut self, now: Instant, sa: &mut IkeSa, timer: Timer) {
        match timer {
            Timer::Retransmit => {
                let Some(p) = &mut sa.pending else {
                    return;
                };
                if p.tries >= self.config.retransmit_tries {
                    let tries = p.tries;
                    self.fail(sa, format!("no answer after {tries} transmissions"));
                    return;
                }
                p.tries += 1;
                let wait = self
                    .config
                    .retransmit_timeout
                    .saturating_mul(1 << (p.tries - 1).min(16))
                    .min(MAX_RETRANSMIT_INTERVAL);
                let datagrams = p.datagrams.clone();
                debug!(ike_sa = %sa.id, tries = p.tries, "retransmitting");
                sa.timers.set(Timer::Retransmit, now + wait);
                self.transmit_all(now, sa, &datagrams);
            }
            Timer::Expire => match &sa.state {
                State::Established(e) if e.superseded => {
                    debug!(ike_sa = %sa.id, "rekeyed IKE SA was not deleted by the facility; dropping it");
                    sa.state = State::Gone;
                }
                State::InitDone(_) => {
                    debug!(ike_sa = %sa.id, remote = %sa.remote, "half-open IKE SA expired");
                    sa.state = State::Gone;
                }
                State::Dead => sa.state = State::Gone,
                _ => {}
            },
            Timer::Rekey => self.on_rekey_timer(now, sa),
            Timer::Dpd => self.on_dpd_timer(now, sa),
            Timer::Work => self.pump(now, sa),
            Timer::Keepalive => {
                if matches!(sa.state, State::Established(_)) && sa.encap {
                    let interval = self.config.keepalive_interval;
                    if now.saturating_duration_since(sa.last_sent) >= interval {
                        sa.last_sent = now;
                        self.transmits.push_back(Transmit {
                            local: SocketAddr::new(sa.local.ip(), self.config.natt_port),
                            remote: sa.remote,
                            contents: vec![0xff],
                        });
                    }
                    sa.timers.set(Timer::Keepalive, sa.last_sent + interval);
                }
            }
        }
    }

    /// Gives an IKE SA up: reports it down and lets it linger.
    fn fail(&mut self, sa: &mut IkeSa, reason: String) {
        warn!(ike_sa = %sa.id, peer = sa.peer_name().as_deref().unwrap_or("-"), "{reason}");
        let mut superseded = false;
        if let State::Established(est) | State::Closing(est) =
            std::mem::replace(&mut sa.state, State::Dead)
        {
            superseded = est.superseded;
            self.children_gone(sa, &spi_pairs(&est.children));
        }
        self.abandon_pending(sa);
        sa.timers = Timers::default();
        // A superseded SA's Child SAs live on in its successor.
        if !superseded {
            self.events.push_back(Event::IkeSaDown {
                ike_sa: sa.id,
                peer: sa.peer_name(),
                reason,
            });
        }
        sa.state = State::Gone;
    }

    /// Opens a message on an established IKE SA: on success the facility
    /// counts as alive and is followed to its address; on failure the SA's
    /// state is put back untouched (a forged or corrupted message must not
    /// harm the SA).
    fn open_established(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        mut est: Established,
        msg: Incoming<'_>,
    ) -> Result<(Established, Vec<Payload>), Error> {
        let Incoming {
            remote,
            local,
            hdr,
            data,
        } = msg;
        match self.decrypt(&est.keys, hdr, data) {
            Ok(payloads) => {
                est.last_received = now;
                self.follow_peer(sa, &est, remote, local);
                Ok((est, payloads))
            }
            Err(e) => {
                sa.state = State::Established(est);
                Err(e)
            }
        }
    }

    /// After an authenticated message: a facility behind NAT whose mapping
    /// changed is followed to its new address (RFC 7296 §2.23).
    fn follow_peer(
        &mut self,
        sa: &mut IkeSa,
        est: &Established,
        remote: SocketAddr,
        local: SocketAddr,
    ) {
        sa.local = local;
        if sa.remote == remote {
            return;
        }
        if !sa.remote_behind_nat {
            debug!(ike_sa = %sa.id, %remote, "message from another address of a peer not behind NAT; not following");
            return;
        }
        info!(ike_sa = %sa.id, old = %sa.remote, new = %remote, "facility's NAT mapping changed; following it");
        sa.remote = remote;
        if let (Some(peer), false) = (sa.peer_name(), est.superseded) {
            self.events.push_back(Event::PeerMoved {
                ike_sa: sa.id,
                peer,
                remote,
                spis_out: est.children.iter().map(|c| c.spi_out).collect(),
            });
        }
    }

    /// Drops the request in flight, releasing what it reserved.
    fn abandon_pending(&mut self, sa: &mut IkeSa) {
        if let Some(Pending {
            kind: PendingKind::RekeyChild { new_spi_in, .. },
            ..
        }) = sa.pending.take()
        {
            self.child_spis.remove(&new_spi_in);
        }
        sa.timers.stop(Timer::Retransmit);
    }

    fn report_children_down(&mut self, sa: &IkeSa, children: &[(u32, u32)]) {
        let peer = sa.peer_name().unwrap_or_default();
        for (spi_in, spi_out) in children {
            self.events.push_back(Event::ChildSaDown {
                ike_sa: sa.id,
                peer: peer.clone(),
                spi_in: *spi_in,
                spi_out: *spi_out,
            });
        }
    }

    // ---- IKE_SA_INIT ---------------------------------------------------

    fn send_init(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        group: KeId,
        cookie: Option<Vec<u8>>,
        retried_ke: bool,
        reuse: Option<(KeyExchange, Vec<u8>, Vec<u8>)>,
    ) -> Result<(), Error> {
        let peer = sa
            .peer
            .clone()
            .ok_or(Error::Missing("initiator without peer"))?;
        // A retry with a cookie keeps every other payload unchanged
        // (RFC 7296 §2.6): the responder's cookie covers our nonce.
        let (ke, public, nonce_i) = match reuse {
            Some(r) => r,
            None => {
                let (ke, public) = KeyExchange::generate(group, &mut self.rng)?;
                (ke, public, self.random(NONCE_LEN))
            }
        };
        let mut payloads = Vec::new();
        if let Some(c) = &cookie {
            payloads.push(Payload::Notify(Notify::new(NotifyType::Cookie, c.clone())));
        }
        payloads.push(Payload::Sa(peer.ike.to_wire(&[], true)));
        payloads.push(Payload::Ke {
            group,
            data: public.clone(),
        });
        payloads.push(Payload::Nonce(nonce_i.clone()));
        payloads.extend(self.nat_detection(sa.spi_i, 0, sa.local, sa.remote));
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::Ikev2FragmentationSupported,
            vec![],
        )));
        if matches!(peer.auth, PeerAuth::Cert) {
            payloads.push(auth::SigHashes::announcement());
        }
        let message1 = Self::plain_message(
            sa.spi_i,
            0,
            ExchangeType::IkeSaInit,
            Flags::new(true, false),
            0,
            &payloads,
        )?;
        sa.state = State::InitSent(InitSent {
            ke,
            ke_public: public,
            nonce_i,
            message1: message1.clone(),
            cookie,
            retried_ke,
        });
        sa.next_request_id = 1;
        self.start_request(now, sa, 0, vec![message1], PendingKind::Handshake);
        Ok(())
    }

    /// NAT_DETECTION_SOURCE_IP and _DESTINATION_IP (RFC 7296 §2.23). With
    /// `force_encap` the source hash is random, so the peer sees "NAT" and
    /// encapsulates ESP in UDP.
    fn nat_detection(
        &mut self,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> [Payload; 2] {
        let src = if self.config.force_encap {
            self.random(20)
        } else {
            nat_detection_hash(spi_i, spi_r, local)
        };
        [
            Payload::Notify(Notify::new(NotifyType::NatDetectionSourceIp, src)),
            Payload::Notify(Notify::new(
                NotifyType::NatDetectionDestinationIp,
                nat_detection_hash(spi_i, spi_r, remote),
            )),
        ]
    }

    /// Reads the peer's NAT detection notifies: (peer behind NAT, we appear
    /// behind NAT, whether the peer sent any).
    fn nat_result(
        &self,
        payloads: &[Payload],
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> (bool, bool, bool) {
        let src: Vec<&Notify> = payloads
            .notifies()
            .filter(|n| n.kind == NotifyType::NatDetectionSourceIp)
            .collect();
        let dst = payloads
            .notifies()
            .find(|n| n.kind == NotifyType::NatDetectionDestinationIp);
        if src.is_empty() && dst.is_none() {
            return (false, false, false);
        }
        let expect_remote = nat_detection_hash(spi_i, spi_r, remote);
        let remote_nat = !src.iter().any(|n| n.data == expect_remote);
        // Behind a wildcard socket our own address is unknown; that counts
        // as "NAT", which only makes us encapsulate.
        let local_nat = local.ip().is_unspecified()
            || dst.is_none_or(|n| n.data != nat_detection_hash(spi_i, spi_r, local));
        (remote_nat, local_nat, true)
    }

    fn respond_init(&mut self, now: Instant, msg: Incoming<'_>) -> Result<(), Error> {
        let Incoming {
            remote,
            local,
            hdr,
            data,
        } = msg;
        if let Some(spi) = self.half_open.get(&(remote, hdr.spi_i)).copied() {
            if let Some(mut sa) = self.sas.remove(&spi) {
                if let Some((0, messages)) = sa.last_response.clone() {
                    self.transmit_all(now, &mut sa, &messages);
                }
                self.put_back(sa);
            }
            return Ok(());
        }
        let payloads = match parse_chain(hdr.next_payload, &data[HEADER_LEN..]) {
            Ok(p) => p,
            Err(e) => {
                let err = Error::from(e);
                if let Some(n) = err.notify() {
                    self.reply_init_error(now, remote, local, hdr, n, vec![]);
                }
                return Err(err);
            }
        };
        let offered = payloads.sa();
        let ke = payloads.ke();
        let nonce = payloads.nonce();
        let (Some(offered), Some((group, public)), Some(nonce_i)) = (offered, ke, nonce) else {
            self.reply_init_error(now, remote, local, hdr, NotifyType::InvalidSyntax, vec![]);
            return Err(Error::Missing("IKE_SA_INIT without SA, KE or Nonce"));
        };
        // RFC 7296 §2.10: nonces are at least 16 and at most 256 octets.
        if !(16..=256).contains(&nonce_i.len()) {
            self.reply_init_error(now, remote, local, hdr, NotifyType::InvalidSyntax, vec![]);
            return Err(Error::Missing("nonce length"));
        }
        // RFC 7296 §2.6: under load, spend no state and no Diffie-Hellman on
        // a source until it echoes a cookie (proof that it receives at its
        // address).
        self.rotate_cookie_secret(now);
        if self.half_open.len() >= self.config.max_half_open {
            debug!(%remote, "half-open table full; dropping IKE_SA_INIT");
            return Err(Error::TemporaryFailure("half-open table full"));
        }
        if self.half_open.len() >= self.config.cookie_threshold
            && !self.cookie_valid(&payloads, nonce_i, remote, hdr.spi_i)
        {
            let cookie = Self::cookie(
                self.cookies.version,
                &self.cookies.current,
                nonce_i,
                remote.ip(),
                hdr.spi_i,
            );
            self.send_init_notify(remote, local, hdr, NotifyType::Cookie, cookie);
            return Ok(());
        }
        if self
            .half_open_per_ip
            .get(&remote.ip())
            .copied()
            .unwrap_or(0)
            >= self.config.max_half_open_per_ip
        {
            debug!(%remote, "too many half-open IKE SAs from this address; dropping IKE_SA_INIT");
            return Err(Error::TemporaryFailure("half-open limit per source"));
        }
        let upgrade = self.ke_upgrade_from(remote.ip());
        let choice = self
            .config
            .ike_proposals
            .select_ike_for_ke(offered, group, upgrade);
        let Some(choice) = choice else {
            let offer = describe_offer(offered);
            self.refuse(
                remote,
                None,
                NotifyType::NoProposalChosen,
                format!("no acceptable IKE proposal; peer offered {offer}"),
            );
            self.reply_init_error(
                now,
                remote,
                local,
                hdr,
                NotifyType::NoProposalChosen,
                vec![],
            );
            return Err(Error::NoProposalChosen(offer));
        };
        let (suite, echo) = match choice {
            KeChoice::Accept(suite, echo) => (suite, echo),
            KeChoice::AskFor(wanted) => {
                // RFC 7296 §1.2: tell the initiator which group we chose —
                // another it offered, or one that stays compliant after
                // 2030 where it sent MODP-2048 first.
                debug!(%remote, offered = %group, %wanted, upgrade, "INVALID_KE_PAYLOAD");
                self.reply_init_error(
                    now,
                    remote,
                    local,
                    hdr,
                    NotifyType::InvalidKePayload,
                    u16::from(wanted).to_be_bytes().to_vec(),
                );
                return Err(Error::InvalidKe(wanted));
            }
        };
        let (kx, our_public) = KeyExchange::generate(suite.ke, &mut self.rng)?;
        let shared = match kx.shared_secret(public) {
            Ok(s) => s,
            Err(e) => {
                self.reply_init_error(now, remote, local, hdr, NotifyType::InvalidSyntax, vec![]);
                return Err(e.into());
            }
        };
        let spi_r = self.new_ike_spi();
        let nonce_r = self.random(NONCE_LEN);
        let (remote_nat, local_nat, peer_does_natt) =
            self.nat_result(&payloads, hdr.spi_i, 0, local, remote);
        let mut reply = vec![
            Payload::Sa(vec![echo]),
            Payload::Ke {
                group: suite.ke,
                data: our_public,
            },
            Payload::Nonce(nonce_r.clone()),
        ];
        if peer_does_natt {
            reply.extend(self.nat_detection(hdr.spi_i, spi_r, local, remote));
        }
        // RFC 7383 §2.3: announce fragmentation only to a peer that did.
        let peer_fragments = payloads
            .notifies()
            .any(|n| n.kind == NotifyType::Ikev2FragmentationSupported);
        if peer_fragments {
            reply.push(Payload::Notify(Notify::new(
                NotifyType::Ikev2FragmentationSupported,
                vec![],
            )));
        }
        if let Some(trust) = &self.config.trust {
            // Ask for the facility's certificate (strongSwan sends its own
            // only when asked) and say which signatures the hub checks.
            reply.push(Payload::CertReq {
                encoding: auth::CERT_X509_SIGNATURE,
                data: trust.certreq_hash().to_vec(),
            });
            reply.push(auth::SigHashes::announcement());
        }
        let message2 = Self::plain_message(
            hdr.spi_i,
            spi_r,
            ExchangeType::IkeSaInit,
            Flags::new(false, true),
            0,
            &reply,
        )?;
        let keys = IkeKeys::derive(suite, &shared, nonce_i, &nonce_r, hdr.spi_i, spi_r, false);
        let mut sa = IkeSa {
            id: IkeSaId(spi_r),
            initiator: false,
            spi_i: hdr.spi_i,
            spi_r,
            local,
            remote,
            peer: None,
            state: State::InitDone(InitDone {
                keys,
                nonce_i: nonce_i.clone(),
                nonce_r,
                message1: data.to_vec(),
                message2: message2.clone(),
            }),
            next_request_id: 0,
            expected_request_id: 1,
            last_response: Some((0, vec![message2.clone()])),
            pending: None,
            timers: Timers::default(),
            queued: None,
            encap: peer_does_natt && (remote_nat || local_nat || self.config.force_encap),
            remote_behind_nat: remote_nat,
            last_sent: now,
            half_open_key: Some((remote, hdr.spi_i)),
            fragmentation: peer_fragments,
            sig_hashes: auth::SigHashes::from_payloads(&payloads),
            reassembly: None,
        };
        sa.timers
            .set(Timer::Expire, now + self.config.half_open_timeout);
        debug!(%remote, ike_sa = %sa.id, %suite, "IKE_SA_INIT answered");
        self.transmit(now, &mut sa, message2);
        self.half_open.insert((remote, hdr.spi_i), spi_r);
        *self.half_open_per_ip.entry(remote.ip()).or_default() += 1;
        self.store(sa);
        Ok(())
    }

    fn on_init_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: Incoming<'_>,
        init: InitSent,
    ) -> Result<(), Error> {
        let Incoming {
            remote,
            local,
            hdr,
            data,
        } = msg;
        let peer = sa
            .peer
            .clone()
            .ok_or(Error::Missing("initiator without peer"))?;
        let payloads = match parse_chain(hdr.next_payload, &data[HEADER_LEN..]) {
            Ok(p) => p,
            Err(e) => {
                sa.state = State::InitSent(init);
                return Err(e.into());
            }
        };
        if let Some(n) = payloads.notifies().find(|n| n.kind == NotifyType::Cookie) {
            // RFC 7296 §2.6: repeat the request with the cookie in front.
            if init.cookie.is_none() && n.data.len() <= 64 {
                let group = init.ke.group();
                let cookie = Some(n.data.clone());
                let reuse = Some((init.ke, init.ke_public, init.nonce_i));
                return self.send_init(now, sa, group, cookie, init.retried_ke, reuse);
            }
        }
        if let Some(n) = payloads
            .notifies()
            .find(|n| n.kind == NotifyType::InvalidKePayload)
        {
            let wanted =
                <[u8; 2]>::try_from(n.data.as_slice()).map(|b| KeId::from(u16::from_be_bytes(b)));
            if let Ok(g) = wanted {
                if !init.retried_ke && peer.ike.allows_ke(g) && KeyExchange::supports(g) {
                    info!(peer = %peer.name, group = %g, "peer asks for another key exchange method; retrying");
                    return self.send_init(now, sa, g, init.cookie, true, None);
                }
            }
            self.refuse(
                remote,
                Some(peer.name.clone()),
                NotifyType::InvalidKePayload,
                "peer wants a key exchange method we do not offer".into(),
            );
            self.fail(sa, "INVALID_KE_PAYLOAD".into());
            return Ok(());
        }
        if let Some(n) = first_error_notify(&payloads) {
            self.refuse(
                remote,
                Some(peer.name.clone()),
                n.kind,
                format!("peer answered IKE_SA_INIT with {}", n.kind),
            );
            self.fail(sa, format!("peer refused: {}", n.kind));
            return Ok(());
        }
        let result = (|| {
            let Some(Payload::Sa(chosen)) = payloads.iter().find(|p| matches!(p, Payload::Sa(_)))
            else {
                return Err(Error::Missing("no SA payload"));
            };
            if chosen.len() != 1 {
                return Err(Error::Misbehaved(
                    "responder chose more than one proposal".into(),
                ));
            }
            let (suite, _) = peer.ike.select_ike(chosen).ok_or_else(|| {
                Error::Misbehaved("responder chose a proposal we did not offer".into())
            })?;
            let (group, public) = payloads.ke().ok_or(Error::Missing("no KE payload"))?;
            if group != suite.ke || group != init.ke.group() {
                return Err(Error::Misbehaved(
                    "KE payload does not match the chosen group".into(),
                ));
            }
            let nonce_r = payloads
                .nonce()
                .cloned()
                .ok_or(Error::Missing("no Nonce payload"))?;
            if !(16..=256).contains(&nonce_r.len()) || hdr.spi_r == 0 {
                return Err(Error::Missing("nonce length or responder SPI"));
            }
            let shared = init.ke.shared_secret(public)?;
            Ok((suite, shared, nonce_r))
        })();
        let (suite, shared, nonce_r) = match result {
            Ok(r) => r,
            Err(e) => {
                self.fail(sa, format!("bad IKE_SA_INIT response: {e}"));
                return Ok(());
            }
        };
        sa.spi_r = hdr.spi_r;
        sa.pending = None;
        sa.timers.stop(Timer::Retransmit);
        let (remote_nat, local_nat, natt) =
            self.nat_result(&payloads, sa.spi_i, sa.spi_r, local, remote);
        sa.remote_behind_nat = remote_nat;
        sa.fragmentation = payloads
            .notifies()
            .any(|n| n.kind == NotifyType::Ikev2FragmentationSupported);
        sa.sig_hashes = auth::SigHashes::from_payloads(&payloads);
        sa.encap = natt && (remote_nat || local_nat || self.config.force_encap);
        if sa.encap {
            // RFC 7296 §2.23: float to port 4500 from IKE_AUTH on.
            sa.local = SocketAddr::new(sa.local.ip(), self.config.natt_port);
            sa.remote = SocketAddr::new(sa.remote.ip(), self.config.natt_port);
        }
        let keys = IkeKeys::derive(
            suite,
            &shared,
            &init.nonce_i,
            &nonce_r,
            sa.spi_i,
            sa.spi_r,
            true,
        );
        let child_spi = self.new_child_spi();
        let local_id = self.config.local_id.clone();
        let id_data = local_id.data();
        let proof = auth::make(
            &peer.auth,
            self.config.credentials.as_deref(),
            sa.sig_hashes,
            &auth::AuthInput {
                prf: suite.prf,
                message: &init.message1,
                nonce: &nonce_r,
                sk_p: &keys.sk_pi,
                id_type: local_id.id_type(),
                id_reserved: [0; 3],
                id_data: &id_data,
            },
        );
        let proof = match proof {
            Ok(p) => p,
            Err(e) => {
                self.refuse(
                    sa.remote,
                    Some(peer.name.clone()),
                    NotifyType::AuthenticationFailed,
                    e.to_string(),
                );
                self.fail(sa, format!("cannot authenticate to the facility: {e}"));
                return Ok(());
            }
        };
        let mut payloads = vec![Payload::IdI {
            id_type: local_id.id_type(),
            reserved: [0; 3],
            data: id_data.clone(),
        }];
        if let (PeerAuth::Cert, Some(trust)) = (&peer.auth, &self.config.trust) {
            payloads.push(Payload::CertReq {
                encoding: auth::CERT_X509_SIGNATURE,
                data: trust.certreq_hash().to_vec(),
            });
        }
        payloads.push(Payload::IdR {
            id_type: peer.remote_id.id_type(),
            reserved: [0; 3],
            data: peer.remote_id.data(),
        });
        payloads.extend(proof);
        payloads.extend([
            Payload::Notify(Notify::new(NotifyType::InitialContact, vec![])),
            Payload::Sa(peer.esp.to_wire(&child_spi.to_be_bytes(), false)),
            Payload::TsI(peer.local_ts.iter().map(|s| s.to_selector()).collect()),
            Payload::TsR(peer.remote_ts.iter().map(|s| s.to_selector()).collect()),
        ]);
        if let Err(e) = self.send_request(
            now,
            sa,
            &keys,
            ExchangeType::IkeAuth,
            &payloads,
            PendingKind::Handshake,
        ) {
            self.child_spis.remove(&child_spi);
            self.fail(sa, format!("cannot build IKE_AUTH: {e}"));
            return Ok(());
        }
        sa.state = State::AuthSent(AuthSent {
            keys,
            nonce_i: init.nonce_i,
            nonce_r,
            message2: data.to_vec(),
            child_spi,
        });
        Ok(())
    }

    // ---- IKE_AUTH ------------------------------------------------------

    fn respond_auth(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: Incoming<'_>,
        init: InitDone,
    ) -> Result<(), Error> {
        let Incoming {
            remote,
            local,
            hdr,
            data,
        } = msg;
        let payloads = match self.decrypt(&init.keys, hdr, data) {
            Ok(p) => p,
            Err(e @ Error::Crypto(_)) => {
                sa.state = State::InitDone(init);
                return Err(e);
            }
            Err(e) => {
                let n = e.notify().unwrap_or(NotifyType::InvalidSyntax);
                self.reject_auth(now, sa, &init.keys, hdr.message_id, n)?;
                return Err(e);
            }
        };
        // An authenticated message: follow the peer's address (RFC 7296 §2.23).
        sa.remote = remote;
        sa.local = local;
        self.forget_half_open(sa);
        match self.authenticate_initiator(now, &payloads, &init) {
            Ok(peer) => {
                if !peer.ke_upgrade || !peer.ike.allows_compliant_ke() {
                    self.keep_ke.update(&peer, Some(remote.ip()));
                }
                sa.peer = Some(peer.clone());
                self.complete_responder_auth(now, sa, hdr, &payloads, init, peer)
            }
            Err((e, peer_name)) => {
                let n = e.notify().unwrap_or(NotifyType::AuthenticationFailed);
                self.refuse(remote, peer_name, n, e.to_string());
                self.reject_auth(now, sa, &init.keys, hdr.message_id, n)
            }
        }
    }

    /// Answers an IKE_AUTH request with an error notify; the SA then only
    /// lingers to repeat that answer to retransmissions.
    fn reject_auth(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        keys: &IkeKeys,
        message_id: u32,
        notify: NotifyType,
    ) -> Result<(), Error> {
        let reply = [Payload::Notify(Notify::new(notify, vec![]))];
        let sent = self.send_response(now, sa, keys, ExchangeType::IkeAuth, message_id, &reply);
        sa.state = State::Dead;
        sa.timers = Timers::default();
        sa.timers.set(Timer::Expire, now + LINGER);
        sent
    }

    fn authenticate_initiator(
        &self,
        now: Instant,
        payloads: &[Payload],
        init: &InitDone,
    ) -> Result<Arc<PeerConfig>, (Error, Option<String>)> {
        let (id_type, id_reserved, id_data) = payloads
            .id_i()
            .ok_or((Error::Missing("no IDi payload"), None))?;
        let identity = Identity::from_wire(id_type, id_data)
            .map_err(|e| (Error::AuthenticationFailed(format!("identity: {e}")), None))?;
        let peer = self
            .by_id
            .get(&identity)
            .and_then(|name| self.peers.get(name))
            .cloned()
            .ok_or_else(|| {
                (
                    Error::AuthenticationFailed(format!("no facility has identity {identity}")),
                    None,
                )
            })?;
        let name = Some(peer.name.clone());
        let suite = init.keys.suite;
        if !peer.ike.accepts_ike(&suite) {
            return Err((
                Error::AuthenticationFailed(format!(
                    "IKE suite {suite} is not allowed for {}",
                    peer.name
                )),
                name,
            ));
        }
        auth::verify(
            &peer.auth,
            self.config.trust.as_deref(),
            self.unix_now(now),
            &identity,
            payloads,
            &auth::AuthInput {
                prf: suite.prf,
                message: &init.message1,
                nonce: &init.nonce_r,
                sk_p: &init.keys.sk_pi,
                // RFC 7296 §2.15: the peer's IDi as it was sent.
                id_type,
                id_reserved,
                id_data,
            },
        )
        .map_err(|e| (e, name))?;
        Ok(peer)
    }

    fn complete_responder_auth(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        hdr: &HeaderRepr,
        payloads: &[Payload],
        init: InitDone,
        peer: Arc<PeerConfig>,
    ) -> Result<(), Error> {
        let local_id = &self.config.local_id;
        let proof = auth::make(
            &peer.auth,
            self.config.credentials.as_deref(),
            sa.sig_hashes,
            &auth::AuthInput {
                prf: init.keys.suite.prf,
                message: &init.message2,
                nonce: &init.nonce_i,
                sk_p: &init.keys.sk_pr,
                id_type: local_id.id_type(),
                id_reserved: [0; 3],
                id_data: &local_id.data(),
            },
        );
        let proof = match proof {
            Ok(p) => p,
            Err(e) => {
                let n = NotifyType::AuthenticationFailed;
                self.refuse(sa.remote, Some(peer.name.clone()), n, e.to_string());
                return self.reject_auth(now, sa, &init.keys, hdr.message_id, n);
            }
        };
        let mut reply = vec![Payload::IdR {
            id_type: local_id.id_type(),
            reserved: [0; 3],
            data: local_id.data(),
        }];
        reply.extend(proof);
        let child = self.negotiate_first_child(sa, payloads, &init, &peer);
        let mut installed = None;
        let mut failed = None;
        match child {
            Ok((info, echo)) => {
                reply.push(Payload::Sa(vec![echo]));
                reply.push(Payload::TsI(info.remote_ts.clone()));
                reply.push(Payload::TsR(info.local_ts.clone()));
                installed = Some(info);
            }
            Err(e) => {
                let n = e.reported_notify();
                let reason = format!("first Child SA refused: {e}");
                self.refuse(sa.remote, Some(peer.name.clone()), n, reason.clone());
                reply.push(Payload::Notify(Notify::new(n, vec![])));
                failed = Some((n, false, reason));
            }
        }
        self.send_response(
            now,
            sa,
            &init.keys,
            ExchangeType::IkeAuth,
            hdr.message_id,
            &reply,
        )?;
        sa.timers.stop(Timer::Expire);
        self.established(now, sa, &peer, init.keys, installed);
        self.child_failed(sa.id, &peer.name, failed);
        Ok(())
    }

    /// Reports a Child SA that could not be made under a live IKE SA.
    pub(super) fn child_failed(
        &mut self,
        ike_sa: IkeSaId,
        peer: &str,
        failed: Option<(NotifyType, bool, String)>,
    ) {
        if let Some((notify, by_peer, reason)) = failed {
            self.events.push_back(Event::ChildSaFailed {
                ike_sa,
                peer: peer.to_string(),
                notify,
                by_peer,
                reason,
            });
        }
    }

    fn negotiate_first_child(
        &mut self,
        sa: &IkeSa,
        payloads: &[Payload],
        init: &InitDone,
        peer: &PeerConfig,
    ) -> Result<(ChildSaInfo, Proposal), Error> {
        let offered = payloads
            .sa()
            .ok_or(Error::Missing("no SA payload for the Child SA"))?;
        let tsi = payloads.ts_i().ok_or(Error::Missing("no TSi"))?;
        let tsr = payloads.ts_r().ok_or(Error::Missing("no TSr"))?;
        let spi_in = self.new_child_spi();
        let Some((suite, spi_out, echo)) = peer.esp.select_esp(offered, true, None, spi_in) else {
            self.child_spis.remove(&spi_in);
            return Err(Error::NoProposalChosen(describe_offer(offered)));
        };
        let (remote_ts, local_ts) = match narrow_to_peer(peer, tsi, tsr) {
            Ok(r) => r,
            Err(e) => {
                self.child_spis.remove(&spi_in);
                return Err(e);
            }
        };
        let keys = derive_child(
            init.keys.suite.prf,
            &init.keys.sk_d,
            &suite,
            None,
            &init.nonce_i,
            &init.nonce_r,
            false,
        );
        Ok((
            ChildSaInfo {
                spi_in,
                spi_out,
                suite,
                keys,
                local_ts,
                remote_ts,
                remote: sa.remote,
                encap: sa.encap,
            },
            echo,
        ))
    }

    fn on_auth_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        hdr: &HeaderRepr,
        data: &[u8],
        auth: AuthSent,
    ) -> Result<(), Error> {
        let peer = sa
            .peer
            .clone()
            .ok_or(Error::Missing("initiator without peer"))?;
        let payloads = match self.decrypt(&auth.keys, hdr, data) {
            Ok(p) => p,
            Err(e) => {
                sa.state = State::AuthSent(auth);
                return Err(e);
            }
        };
        sa.pending = None;
        sa.timers.stop(Timer::Retransmit);
        let has_auth = payloads.iter().any(|p| matches!(p, Payload::Auth { .. }));
        if let (false, Some(n)) = (has_auth, first_error_notify(&payloads)) {
            self.child_spis.remove(&auth.child_spi);
            self.refuse(
                sa.remote,
                Some(peer.name.clone()),
                n.kind,
                format!("facility answered IKE_AUTH with {}", n.kind),
            );
            self.fail(sa, format!("facility refused IKE_AUTH: {}", n.kind));
            return Ok(());
        }
        let verified = (|| {
            let (id_type, id_reserved, id_data) =
                payloads.id_r().ok_or(Error::Missing("no IDr"))?;
            let identity = Identity::from_wire(id_type, id_data)
                .map_err(|e| Error::AuthenticationFailed(e.to_string()))?;
            if identity != peer.remote_id {
                return Err(Error::AuthenticationFailed(format!(
                    "facility identified as {identity}, expected {}",
                    peer.remote_id
                )));
            }
            let now_unix = self.unix_now(now);
            auth::verify(
                &peer.auth,
                self.config.trust.as_deref(),
                now_unix,
                &identity,
                &payloads,
                &auth::AuthInput {
                    prf: auth.keys.suite.prf,
                    message: &auth.message2,
                    nonce: &auth.nonce_i,
                    sk_p: &auth.keys.sk_pr,
                    // RFC 7296 §2.15: the peer's IDr as it was sent.
                    id_type,
                    id_reserved,
                    id_data,
                },
            )?;
            Ok(())
        })();
        if let Err(e) = verified {
            self.child_spis.remove(&auth.child_spi);
            self.refuse(
                sa.remote,
                Some(peer.name.clone()),
                NotifyType::AuthenticationFailed,
                e.to_string(),
            );
            self.fail(sa, e.to_string());
            return Ok(());
        }
        let mut installed = None;
        let mut failed = None;
        match self.accept_first_child(sa, &payloads, &auth, &peer) {
            Ok(info) => installed = Some(info),
            Err(e) => {
                self.child_spis.remove(&auth.child_spi);
                let n = e.reported_notify();
                let reason = format!("first Child SA failed: {e}");
                self.refuse(sa.remote, Some(peer.name.clone()), n, reason.clone());
                failed = Some((n, matches!(e, Error::RefusedByPeer(_)), reason));
            }
        }
        sa.expected_request_id = 0;
        self.established(now, sa, &peer, auth.keys, installed);
        self.child_failed(sa.id, &peer.name, failed);
        Ok(())
    }

    fn accept_first_child(
        &mut self,
        sa: &IkeSa,
        payloads: &[Payload],
        auth: &AuthSent,
        peer: &PeerConfig,
    ) -> Result<ChildSaInfo, Error> {
        if let Some(n) = first_error_notify(payloads) {
            return Err(Error::RefusedByPeer(n.kind));
        }
        let chosen = payloads.sa().ok_or(Error::Missing("no SA payload"))?;
        if chosen.len() != 1 {
            return Err(Error::Misbehaved(
                "responder chose more than one proposal".into(),
            ));
        }
        let (suite, spi_out) = peer
            .esp
            .accept_esp(chosen, true, auth.child_spi, false)
            .ok_or_else(|| {
                Error::Misbehaved("responder chose an ESP proposal we did not offer".into())
            })?;
        let (tsi, tsr) = accept_narrowed(peer, payloads)?;
        let keys = derive_child(
            auth.keys.suite.prf,
            &auth.keys.sk_d,
            &suite,
            None,
            &auth.nonce_i,
            &auth.nonce_r,
            true,
        );
        Ok(ChildSaInfo {
            spi_in: auth.child_spi,
            spi_out,
            suite,
            keys,
            local_ts: tsi,
            remote_ts: tsr,
            remote: sa.remote,
            encap: sa.encap,
        })
    }

    /// Common completion of IKE_AUTH: events, keepalives, and one IKE SA per
    /// facility (an older one is replaced).
    fn established(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        peer: &PeerConfig,
        keys: IkeKeys,
        child: Option<ChildSaInfo>,
    ) {
        let suite = keys.suite;
        let lifetimes = peer.lifetimes;
        let mut est = Established {
            keys,
            children: Vec::new(),
            rekey_at: self.jittered(now, lifetimes.ike, lifetimes.jitter_percent),
            queue: VecDeque::new(),
            last_received: now,
            superseded: false,
        };
        if let Some(c) = &child {
            let rekey_at = self.jittered(now, lifetimes.child, lifetimes.jitter_percent);
            est.children.push(ChildSa::new(c, rekey_at));
        }
        sa.state = State::Established(est);
        info!(peer = %peer.name, ike_sa = %sa.id, remote = %sa.remote, %suite, initiator = sa.initiator, "IKE SA established");
        self.events.push_back(Event::IkeSaUp {
            ike_sa: sa.id,
            peer: peer.name.clone(),
            remote: sa.remote,
            suite,
            initiator: sa.initiator,
            remote_behind_nat: sa.remote_behind_nat,
        });
        if let Some(child) = child {
            self.child_up(sa.id, &peer.name, child, None, !sa.initiator);
        }
        // One IKE SA per facility: a reconnecting facility replaces its old
        // SAs, reported down only after the new Child SA is up.
        for old in self.sas_of(&peer.name) {
            if old != sa.id {
                info!(peer = %peer.name, old = %old, new = %sa.id, "replacing older IKE SA of the facility");
                if let Some(mut o) = self.sas.remove(&old.0) {
                    self.fail(
                        &mut o,
                        "replaced by a new IKE SA of the same facility".into(),
                    );
                    self.put_back(o);
                }
            }
        }
        if sa.encap {
            sa.timers
                .set(Timer::Keepalive, now + self.config.keepalive_interval);
        }
        self.arm(sa);
    }

    /// Reports a new Child SA for installation.
    fn child_up(
        &mut self,
        ike_sa: IkeSaId,
        peer: &str,
        child: ChildSaInfo,
        rekey_of: Option<u32>,
        answered: bool,
    ) {
        info!(
            %peer,
            spi_in = format_args!("{:08x}", child.spi_in),
            spi_out = format_args!("{:08x}", child.spi_out),
            suite = %child.suite,
            local_ts = %describe(&child.local_ts),
            remote_ts = %describe(&child.remote_ts),
            rekey_of = ?rekey_of.map(|s| format!("{s:08x}")),
            "Child SA established"
        );
        self.events.push_back(Event::ChildSaUp {
            ike_sa,
            peer: peer.to_string(),
            child,
            rekey_of,
            answered,
        });
    }

    /// `now + d`, made earlier by up to `percent`% at random.
    fn jittered(&mut self, now: Instant, d: Duration, percent: u8) -> Instant {
        let span = d.as_millis() as u64 * u64::from(percent.min(100)) / 100;
        let early = if span == 0 {
            0
        } else {
            self.rng.next_u64() % span
        };
        now + d - Duration::from_millis(early)
    }

    // ---- INFORMATIONAL -------------------------------------------------

    fn respond_informational(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: Incoming<'_>,
        est: Established,
    ) -> Result<(), Error> {
        let hdr = msg.hdr;
        let (mut est, payloads) = self.open_established(now, sa, est, msg)?;
        let mut delete_ike = false;
        let mut ours = Vec::new();
        let mut gone = Vec::new();
        for p in &payloads {
            let Payload::Delete(d) = p else { continue };
            match d.protocol {
                ProtocolId::Ike => delete_ike = true,
                ProtocolId::Esp => {
                    for spi in &d.spis {
                        let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                            continue;
                        };
                        let spi_out = u32::from_be_bytes(b);
                        if let Some(i) = est.children.iter().position(|c| c.spi_out == spi_out) {
                            let c = est.children.remove(i);
                            ours.push(c.spi_in.to_be_bytes().to_vec());
                            gone.push((c.spi_in, c.spi_out));
                        }
                    }
                }
                _ => {}
            }
        }
        let peer = sa.peer_name().unwrap_or_default();
        if delete_ike {
            self.send_response(
                now,
                sa,
                &est.keys,
                ExchangeType::Informational,
                hdr.message_id,
                &[],
            )?;
            self.children_gone(sa, &spi_pairs(&est.children));
            if est.superseded {
                debug!(%peer, ike_sa = %sa.id, "rekeyed IKE SA deleted by the facility");
            } else {
                info!(%peer, ike_sa = %sa.id, "IKE SA deleted by the facility");
                self.events.push_back(Event::IkeSaDown {
                    ike_sa: sa.id,
                    peer: sa.peer_name(),
                    reason: "deleted by the facility".into(),
                });
            }
            sa.state = State::Dead;
            sa.timers = Timers::default();
            sa.timers.set(Timer::Expire, now + LINGER);
            return Ok(());
        }
        let reply: Vec<Payload> = if ours.is_empty() {
            Vec::new()
        } else {
            vec![Payload::Delete(Delete {
                protocol: ProtocolId::Esp,
                spi_size: 4,
                spis: ours,
            })]
        };
        let result = self.send_response(
            now,
            sa,
            &est.keys,
            ExchangeType::Informational,
            hdr.message_id,
            &reply,
        );
        for (spi_in, _) in &gone {
            info!(%peer, spi_in = format_args!("{spi_in:08x}"), "Child SA deleted by the facility");
        }
        self.children_gone(sa, &gone);
        sa.state = State::Established(est);
        self.arm(sa);
        result
    }
}
