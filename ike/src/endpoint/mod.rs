//! The sans-IO endpoint: every IKE SA of the hub, driven by datagrams and
//! time, producing datagrams, deadlines and events. The public surface is in
//! [`api`]; this file holds the [`Endpoint`] itself and dispatches each
//! message and timer to the file of its protocol step.
//!
//! ```text
//! handle_datagram ─▶ nat: strip the non-ESP marker ─▶ IKE header
//!   │ IKE_SA_INIT request ───────────────────────────▶ ike_sa_init (cookie: its defences first)
//!   │ else: our SPI ─▶ IkeSa ─▶ receive, the same for every exchange:
//!   │     message ID ─▶ retransmit (cached answer, expected request, pending response)
//!   │     open once:  SK  ─▶ framing: decrypt ─────┐
//!   │                 SKF ─▶ fragment: reassemble ─┴▶ Message { payloads }
//!   │     request  ─▶ ike_auth / informational / create_child_sa (ike_rekey)
//!   │     response ─▶ ike_sa_init / ike_auth / informational / create_child_sa / ike_rekey
//! handle_timeout ─▶ on_timer: Retransmit (retransmit), Expire (sa), Keepalive (nat),
//!                   Rekey (create_child_sa), Dpd (liveness), Work (retransmit: pump)
//! requests out ─▶ framing (SK, or SKF fragments) ─▶ nat: marker ─▶ poll_transmit
//! ```
//!
//! | file | what | RFC |
//! |---|---|---|
//! | `api.rs` | inputs, outputs, [`Event`], [`Transmit`], handles | — |
//! | `sa.rs` | IKE SA and Child SA state, timers | RFC 7296 §2 |
//! | `framing.rs` | unprotected messages, the SK payload | RFC 7296 §3.14 |
//! | `retransmit.rs` | message IDs, window, retransmission, work queue | RFC 7296 §2.1–§2.3 |
//! | `cookie.rs` | cookies, half-open limits, error-reply rate | RFC 7296 §2.6 |
//! | `ike_sa_init.rs` | IKE_SA_INIT; REDIRECT while draining | RFC 7296 §1.2; RFC 5685 §3 |
//! | `ike_auth.rs`, `auth.rs` | IKE_AUTH, PSK and signatures | RFC 7296 §1.2, §2.15; RFC 7427 |
//! | `create_child_sa.rs` | Child SAs: new, rekeyed, selectors | RFC 7296 §1.3.1, §1.3.3, §2.8, §2.9 |
//! | `ike_rekey.rs` | rekeying the IKE SA | RFC 7296 §1.3.2, §2.8, §2.25 |
//! | `informational.rs` | INFORMATIONAL, Delete, REDIRECT | RFC 7296 §1.4; RFC 5685 §5 |
//! | `liveness.rs` | liveness checks (DPD) | RFC 7296 §1.4, §2.4 |
//! | `nat.rs` | NAT detection, NAT-T framing, keepalives | RFC 7296 §2.23; RFC 3948 |
//! | `fragment.rs` | IKE fragmentation, both ways | RFC 7383 |

mod api;
mod auth;
mod cookie;
mod create_child_sa;
mod fragment;
mod framing;
mod ike_auth;
mod ike_rekey;
mod ike_sa_init;
mod informational;
mod liveness;
mod nat;
mod retransmit;
mod sa;

pub use api::{ChildSaInfo, Event, IkeSaId, IkeSaStatus, NewIkeSas, Transmit, REDIRECTED_BUT_KEPT};
pub use nat::NO_NAT_TRAVERSAL;

use crate::config::{Config, PeerConfig};
use crate::error::Error;
use crate::wire::{
    parse_chain, ExchangeType, HeaderRepr, Notify, NotifyType, Payload, PayloadType, PayloadsExt,
    HEADER_LEN,
};
use cookie::CookieSecrets;
use ike_sa_init::KeepKe;
use pki::Identity;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sa::{spi_pairs, ChildSa, Established, IkeSa, PendingKind, State, Timer, Timers};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

const NONCE_LEN: usize = 32;

/// A received IKE message on its way through the handlers: where it came
/// from and arrived, its parsed header and its bytes (from the IKE header on).
#[derive(Clone, Copy)]
struct Incoming<'a> {
    remote: SocketAddr,
    local: SocketAddr,
    hdr: &'a HeaderRepr,
    data: &'a [u8],
}

/// A message of an existing IKE SA as the exchange handlers get it: its
/// message ID checked, authenticated and decrypted (or, for the
/// IKE_SA_INIT response, parsed in the clear), and reassembled if it came
/// in fragments.
struct Message<'a> {
    remote: SocketAddr,
    local: SocketAddr,
    hdr: &'a HeaderRepr,
    /// The datagram's bytes from the IKE header on (for a fragmented
    /// message, its last fragment's).
    data: &'a [u8],
    payloads: Vec<Payload>,
}

/// All IKE SAs of the hub.
pub struct Endpoint {
    config: Config,
    peers: HashMap<String, Arc<PeerConfig>>,
    by_id: HashMap<Identity, String>,
    /// Identities of facilities the operator disabled, with their names:
    /// an IKE_AUTH claiming one is refused as that facility's, not as an
    /// unknown identity.
    disabled: HashMap<Identity, String>,
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
    child_spis: HashSet<u32>,
    /// Whether new IKE SAs are accepted (not while the hub drains).
    new_ike_sas: NewIkeSas,
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

/// The one place an error becomes the Notify that answers the request it
/// refused (RFC 7296 §2.21): the one the error names
/// ([`Error::notify_payload`]), except that
///
/// - an IKE_SA_INIT request is not answered with TEMPORARY_FAILURE
///   (§2.25 gives that to requests under an IKE SA): a full half-open
///   table drops it unanswered;
/// - a refused IKE_AUTH request is always answered, with
///   AUTHENTICATION_FAILED when the error names no Notify (§2.21.2).
///
/// `None`: an IKE_SA_INIT request goes unanswered, a CREATE_CHILD_SA
/// request gets an empty answer.
fn refusal(exchange: ExchangeType, e: &Error) -> Option<Notify> {
    if exchange == ExchangeType::IkeAuth {
        let kind = e.notify().unwrap_or(NotifyType::AuthenticationFailed);
        return Some(Notify::new(kind, Vec::new()));
    }
    match e.notify_payload()? {
        Payload::Notify(n)
            if exchange == ExchangeType::IkeSaInit && n.kind == NotifyType::TemporaryFailure =>
        {
            None
        }
        Payload::Notify(n) => Some(n),
        _ => None,
    }
}

fn first_error_notify(payloads: &[Payload]) -> Option<&Notify> {
    payloads.notifies().find(|n| n.kind.is_error())
}

impl Endpoint {
    /// An endpoint with no facilities.
    pub fn new(config: Config) -> Endpoint {
        let rng = ChaCha20Rng::from_seed(config.rng_seed);
        Endpoint {
            config,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            disabled: HashMap::new(),
            sas: HashMap::new(),
            timer_queue: BinaryHeap::new(),
            half_open: HashMap::new(),
            half_open_per_ip: HashMap::new(),
            keep_ke: KeepKe::default(),
            cookies: CookieSecrets::default(),
            reply_tokens: (0.0, None),
            child_spis: HashSet::new(),
            new_ike_sas: NewIkeSas::Accept,
            wall_clock: None,
            rng,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ---- the table of IKE SAs ------------------------------------------

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

    fn transmit(&mut self, now: Instant, sa: &mut IkeSa, message: Vec<u8>) {
        sa.last_sent = now;
        let contents = nat::frame(sa.local.port() == self.config.natt_port, message);
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

    fn refuse(
        &mut self,
        remote: SocketAddr,
        peer: Option<String>,
        notify: NotifyType,
        reason: String,
    ) {
        // A stranger's refusals are only debug here: anyone can send them
        // at line rate, so the daemon logs them aggregated (one line, then
        // a count per interval) from the `Refused` events.
        match &peer {
            Some(p) => warn!(%remote, peer = %p, notify = %notify, "{reason}"),
            None => debug!(%remote, notify = %notify, "{reason}"),
        }
        self.events.push_back(Event::Refused {
            remote,
            peer,
            notify,
            reason,
        });
    }

    // ---- dispatch ------------------------------------------------------

    fn dispatch(&mut self, now: Instant, msg: Incoming<'_>) -> Result<(), Error> {
        let hdr = msg.hdr;
        if hdr.exchange == ExchangeType::IkeSaInit && !hdr.flags.response() {
            if hdr.spi_r != 0 || hdr.message_id != 0 || !hdr.flags.initiator() {
                return Err(Error::Missing(
                    "IKE_SA_INIT request with responder SPI or message ID",
                ));
            }
            let result = self.respond_init(now, msg);
            if let Err(e) = &result {
                self.reply_init_error(now, msg, e);
            }
            return result;
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
        let result = if theirs_matches {
            self.receive(now, &mut sa, msg)
        } else {
            Err(Error::Misbehaved("SPI or role mismatch".into()))
        };
        self.put_back(sa);
        result
    }

    /// A message of an existing IKE SA, opened once for every exchange:
    /// its message ID first (RFC 7296 §2.2), then decrypted and
    /// authenticated, or reassembled from fragments (RFC 7383), and handed
    /// to its exchange.
    fn receive(&mut self, now: Instant, sa: &mut IkeSa, msg: Incoming<'_>) -> Result<(), Error> {
        let Incoming {
            remote,
            local,
            hdr,
            data,
        } = msg;
        if hdr.flags.response() {
            if sa.pending.as_ref().map(|p| p.message_id) != Some(hdr.message_id) {
                return Err(Error::Misbehaved(format!(
                    "unexpected response {}",
                    hdr.message_id
                )));
            }
        } else if self.answer_retransmission(now, sa, hdr.message_id)? {
            return Ok(());
        }
        let payloads = if hdr.next_payload == PayloadType::Skf {
            match self.reassemble(now, sa, msg)? {
                Some(payloads) => payloads,
                None => return Ok(()),
            }
        } else {
            match self.open(sa, msg) {
                Ok(payloads) => payloads,
                Err(e) => return self.unopened(now, sa, msg, e),
            }
        };
        let msg = Message {
            remote,
            local,
            hdr,
            data,
            payloads,
        };
        if hdr.flags.response() {
            self.on_response(now, sa, &msg)
        } else {
            self.on_request(now, sa, &msg)
        }
    }

    /// The payloads of an unfragmented message: in the clear for the
    /// IKE_SA_INIT response, decrypted with the IKE SA's keys otherwise.
    fn open(&self, sa: &IkeSa, msg: Incoming<'_>) -> Result<Vec<Payload>, Error> {
        let Incoming { hdr, data, .. } = msg;
        let unexpected = || {
            let kind = if hdr.flags.response() {
                "response"
            } else {
                "request"
            };
            Error::Misbehaved(format!("unexpected {} {kind}", hdr.exchange))
        };
        if let State::InitSent(_) = sa.state {
            if hdr.exchange != ExchangeType::IkeSaInit || !hdr.flags.response() {
                return Err(unexpected());
            }
            let body = data.get(HEADER_LEN..).unwrap_or_default();
            return Ok(parse_chain(hdr.next_payload, body)?);
        }
        let keys = sa.state.keys().ok_or_else(unexpected)?;
        self.decrypt(keys, hdr, data)
    }

    /// A message that could not be opened is dropped; only an IKE_AUTH
    /// request that decrypts but does not parse is answered (with the
    /// Notify its error maps to), which ends the half-open IKE SA.
    fn unopened(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: Incoming<'_>,
        e: Error,
    ) -> Result<(), Error> {
        let hdr = msg.hdr;
        let answered = !hdr.flags.response()
            && hdr.exchange == ExchangeType::IkeAuth
            && !matches!(e, Error::Crypto(_));
        if answered {
            // Its error is a syntax error: INVALID_SYNTAX or
            // UNSUPPORTED_CRITICAL_PAYLOAD.
            if let Some(init) = sa.state.take_init_done() {
                self.reject_auth(now, sa, &init.keys, hdr.message_id, &e)?;
            }
        }
        Err(e)
    }

    fn on_request(&mut self, now: Instant, sa: &mut IkeSa, msg: &Message<'_>) -> Result<(), Error> {
        let hdr = msg.hdr;
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
        msg: &Message<'_>,
    ) -> Result<(), Error> {
        let hdr = msg.hdr;
        match (hdr.exchange, std::mem::replace(&mut sa.state, State::Gone)) {
            (ExchangeType::IkeSaInit, State::InitSent(init)) => {
                self.on_init_response(now, sa, msg, init)
            }
            (ExchangeType::IkeAuth, State::AuthSent(auth)) => {
                self.on_auth_response(now, sa, msg, auth)
            }
            (ExchangeType::Informational, State::Closing(_)) => {
                self.on_delete_ike_response(sa);
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

    fn on_established_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: &Message<'_>,
        mut est: Established,
    ) -> Result<(), Error> {
        self.heard_from(now, sa, &mut est, msg);
        let payloads = &msg.payloads;
        let Some(pending) = sa.pending.take() else {
            sa.state = State::Established(est);
            return Ok(());
        };
        sa.timers.stop(Timer::Retransmit);
        match pending.kind {
            PendingKind::Dpd | PendingKind::Handshake | PendingKind::DeleteIke => {}
            PendingKind::DeleteChildren(spis) => {
                self.on_delete_children_response(sa, &mut est, &spis);
            }
            PendingKind::Redirect(gateway) => {
                self.on_redirect_response(now, sa, &mut est, gateway);
            }
            PendingKind::RekeyChild {
                old_spi_in,
                new_spi_in,
                nonce_i,
                ke,
            } => {
                self.complete_child_rekey(
                    now, sa, &mut est, payloads, old_spi_in, new_spi_in, &nonce_i, ke,
                );
            }
            PendingKind::RekeyIke {
                new_spi,
                nonce_i,
                ke,
            } => {
                return self.complete_ike_rekey(now, sa, est, payloads, new_spi, &nonce_i, ke);
            }
        }
        sa.state = State::Established(est);
        self.pump(now, sa);
        Ok(())
    }

    /// An authenticated message on an established IKE SA: the facility
    /// counts as alive and is followed to its address.
    fn heard_from(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        msg: &Message<'_>,
    ) {
        est.last_received = now;
        self.follow_peer(sa, est, msg.remote, msg.local);
    }

    // ---- timers --------------------------------------------------------

    fn on_timer(&mut self, now: Instant, sa: &mut IkeSa, timer: Timer) {
        match timer {
            Timer::Retransmit => self.on_retransmit_timer(now, sa),
            Timer::Expire => match &sa.state {
                State::Established(e) if e.superseded => {
                    debug!(ike_sa = %sa.id, "rekeyed IKE SA was not deleted by the facility; dropping it");
                    sa.state = State::Gone;
                }
                State::InitDone(_) => {
                    debug!(ike_sa = %sa.id, remote = %sa.remote, "half-open IKE SA expired");
                    sa.state = State::Gone;
                }
                State::Established(e) if e.redirected_at.is_some() => {
                    self.close_sa(now, sa, api::REDIRECTED_BUT_KEPT);
                }
                State::Dead => sa.state = State::Gone,
                _ => {}
            },
            Timer::Rekey => self.on_rekey_timer(now, sa),
            Timer::Dpd => self.on_dpd_timer(now, sa),
            Timer::Work => self.pump(now, sa),
            Timer::Keepalive => self.on_keepalive_timer(now, sa),
        }
    }

    /// Sets the Rekey and Dpd timers of an established IKE SA.
    fn arm(&mut self, sa: &mut IkeSa) {
        let dpd = sa.peer.as_ref().map(|p| p.lifetimes.dpd);
        let State::Established(est) = &sa.state else {
            sa.timers.stop(Timer::Rekey);
            sa.timers.stop(Timer::Dpd);
            return;
        };
        if est.superseded {
            sa.timers.stop(Timer::Rekey);
            sa.timers.stop(Timer::Dpd);
            return;
        }
        let next_rekey = est
            .children
            .iter()
            .filter_map(ChildSa::deadline)
            .chain([est.rekey_at])
            .min();
        if let Some(at) = next_rekey {
            sa.timers.set(Timer::Rekey, at);
        }
        // While a request is in flight its retransmissions check liveness.
        match (sa.pending.is_some(), dpd) {
            (false, Some(d)) if !d.is_zero() => sa.timers.set(Timer::Dpd, est.last_received + d),
            _ => sa.timers.stop(Timer::Dpd),
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
}
