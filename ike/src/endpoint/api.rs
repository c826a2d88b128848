//! The endpoint's public face: what the driver puts in (`handle_*`,
//! `initiate`, `close`, `rekey_*`, configuration), what it takes out
//! (`poll_*`, [`Event`], [`Transmit`]) and the handles and summaries it
//! holds ([`IkeSaId`], [`ChildSaInfo`], [`IkeSaStatus`]).
//!
//! Drive it like this, after every input, in this order:
//!
//! ```text
//! handle_datagram(now, remote, local, bytes) / handle_timeout(now) / initiate / close
//!     └─▶ while let Some(t) = poll_transmit()  → send t.contents from t.local to t.remote
//!     └─▶ while let Some(e) = poll_event()     → install/remove SAs, routes, status
//!     └─▶ poll_timeout()                       → when to call handle_timeout next
//! ```

use super::auth::SigHashes;
use super::nat::strip_non_esp_marker;
use super::retransmit::queue;
use super::sa::{
    spi_pairs, ChildState, Established, IkeSa, PendingKind, State, Timers, Work, TIMERS,
};
use super::{Endpoint, Incoming};
use crate::config::{Config, PeerConfig};
use crate::error::Error;
use crate::keys::ChildKeys;
use crate::proposal::{EspSuite, IkeSuite};
use crate::wire::{
    Delete, ExchangeType, GatewayIdentity, HeaderRepr, NotifyType, Payload, ProtocolId,
    TrafficSelector,
};
use pki::Identity;
use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, info, warn};

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

/// The reason of the [`Event::IkeSaDown`] of a redirected IKE SA the
/// facility kept past the grace period, which the hub then deleted.
pub const REDIRECTED_BUT_KEPT: &str = "redirected; the facility did not delete its IKE SA in time";

/// Whether the endpoint accepts new IKE SAs from facilities
/// ([`Endpoint::set_new_ike_sas`]); established ones are not touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewIkeSas {
    /// Answer IKE_SA_INIT requests as usual.
    Accept,
    /// Leave IKE_SA_INIT requests unanswered (the hub is draining and has
    /// nowhere to send facilities).
    Refuse,
    /// Answer an IKE_SA_INIT request that announced REDIRECT_SUPPORTED
    /// with a REDIRECT to this gateway (RFC 5685 §3); leave the others
    /// unanswered.
    Redirect(GatewayIdentity),
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
    /// The facility acknowledged a REDIRECT ([`Endpoint::redirect`]): it
    /// now connects to `gateway` and should delete this IKE SA itself; if
    /// it has not after a grace period, the hub deletes it (an
    /// [`Event::IkeSaDown`] follows either way).
    Redirected {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// Facility name.
        peer: String,
        /// Where it was sent.
        gateway: GatewayIdentity,
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
    /// The facility announced REDIRECT_SUPPORTED when it set this IKE SA
    /// up (RFC 5685 §3), so [`Endpoint::redirect`] can move it.
    pub redirect_supported: bool,
    /// The facility acknowledged a REDIRECT on this IKE SA.
    pub redirected: bool,
    /// When the hub rekeys this IKE SA, once established.
    pub rekey_at: Option<Instant>,
    /// When the hub rekeys each Child SA of `children` (same order):
    /// `None` while a rekey runs or once it was replaced.
    pub children_rekey_at: Vec<Option<Instant>>,
}

pub(super) fn unspecified_like(addr: SocketAddr, port: u16) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    }
}

impl Endpoint {
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

    pub(super) fn unix_now(&self, now: Instant) -> Option<i64> {
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

    /// Replaces the hub's own certificate credentials (after `renkei hub
    /// renew-cert` or a CA rollover). Established SAs are not touched: they
    /// were authenticated already; new IKE SAs sign with these.
    pub fn set_credentials(
        &mut self,
        credentials: Option<Arc<crate::Credentials>>,
        by_ca: Vec<crate::CaCredentials>,
    ) {
        self.config.credentials = credentials;
        self.config.credentials_by_ca = by_ca;
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

    /// Marks `name`, with identity `id`, as a facility the operator
    /// disabled (`None`: forgets it). An IKE_AUTH claiming that identity
    /// is still refused (AUTHENTICATION_FAILED, nothing is checked), but
    /// its [`Event::Refused`] names the facility and says it is
    /// disabled, instead of calling the identity unknown. A facility is
    /// either configured with [`Endpoint::set_peer`] or disabled; the
    /// configured one wins.
    pub fn set_disabled(&mut self, name: &str, id: Option<Identity>) {
        self.disabled.retain(|_, n| n != name);
        if let Some(id) = id {
            self.disabled.insert(id, name.to_string());
        }
    }

    /// A facility's configuration.
    pub fn peer(&self, name: &str) -> Option<&PeerConfig> {
        self.peers.get(name).map(|p| &**p)
    }

    pub(super) fn sas_of(&self, name: &str) -> Vec<IkeSaId> {
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
                    redirect_supported: sa.redirect_supported,
                    redirected: matches!(&sa.state, State::Established(e) | State::Closing(e) if e.redirected_at.is_some()),
                    rekey_at: match &sa.state {
                        State::Established(e) => Some(e.rekey_at),
                        _ => None,
                    },
                    children_rekey_at: match &sa.state {
                        State::Established(e) | State::Closing(e) => e
                            .children
                            .iter()
                            .map(|c| match c.state {
                                ChildState::Installed { rekey_at } => Some(rekey_at),
                                _ => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    },
                })
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Accepts new IKE SAs, refuses them, or redirects those that can be
    /// (while the hub drains). Established IKE SAs are not touched.
    pub fn set_new_ike_sas(&mut self, policy: NewIkeSas) {
        self.new_ike_sas = policy;
    }

    /// Whether new IKE SAs are accepted.
    pub fn new_ike_sas(&self) -> &NewIkeSas {
        &self.new_ike_sas
    }

    /// Half-open (responder) IKE SAs waiting for IKE_AUTH.
    pub fn half_open_count(&self) -> usize {
        self.half_open.len()
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
        let remote = self
            .peers
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("facility {name}")))?
            .remote_addr
            .ok_or_else(|| Error::NotFound(format!("remote address of {name}")))?;
        self.initiate_to(now, name, remote)
    }

    /// Starts an IKE SA to a facility at `remote`: where its configured
    /// address is a DNS name, the caller resolves it for each attempt.
    pub fn initiate_to(
        &mut self,
        now: Instant,
        name: &str,
        remote: SocketAddr,
    ) -> Result<IkeSaId, Error> {
        self.initiate_from(now, name, remote, self.config.ike_port)
    }

    /// Starts an IKE SA to a facility at `remote` from the NAT-T port, with
    /// the non-ESP marker (RFC 7296 §2.23 lets an initiator start there):
    /// the way through a facility's NAT mapping, whose outside port the
    /// facility's own traffic opened towards the hub's port 4500. The SA
    /// stays at `remote` (it does not float to port 4500 of that address).
    pub fn initiate_natt(
        &mut self,
        now: Instant,
        name: &str,
        remote: SocketAddr,
    ) -> Result<IkeSaId, Error> {
        self.initiate_from(now, name, remote, self.config.natt_port)
    }

    fn initiate_from(
        &mut self,
        now: Instant,
        name: &str,
        remote: SocketAddr,
        local_port: u16,
    ) -> Result<IkeSaId, Error> {
        let peer = self
            .peers
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("facility {name}")))?;
        let group = peer
            .ike
            .first_ke()
            .ok_or_else(|| Error::NoProposalChosen("no key exchange method configured".into()))?;
        let spi_i = self.new_ike_spi();
        let local = unspecified_like(remote, local_port);
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
            sig_hashes: SigHashes::default(),
            reassembly: None,
            redirect_supported: false,
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
        self.close_sa(now, &mut sa, "closed by the hub");
        self.put_back(sa);
    }

    /// [`Endpoint::close`] on an SA taken out of the table.
    pub(super) fn close_sa(&mut self, now: Instant, sa: &mut IkeSa, reason: &str) {
        self.abandon_pending(sa);
        match std::mem::replace(&mut sa.state, State::Gone) {
            State::Established(mut est) => {
                let gone = spi_pairs(&est.children);
                est.children.clear();
                self.children_gone(sa, &gone);
                let payloads = [Payload::Delete(Delete {
                    protocol: ProtocolId::Ike,
                    spi_size: 0,
                    spis: vec![],
                })];
                match self.send_request(
                    now,
                    sa,
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
                    reason: reason.into(),
                });
            }
            State::Closing(est) => sa.state = State::Closing(est),
            State::Dead | State::Gone => {}
            _ => self.events.push_back(Event::IkeSaDown {
                ike_sa: sa.id,
                peer: sa.peer_name(),
                reason: format!("{reason} before it was established"),
            }),
        }
    }

    /// Sends the facility of an established IKE SA to another gateway: an
    /// INFORMATIONAL request with a REDIRECT notification and no nonce
    /// (RFC 5685 §5). Only a facility that announced REDIRECT_SUPPORTED
    /// when it set the IKE SA up can be redirected, and only by the hub as
    /// responder; once it acknowledges, [`Event::Redirected`] follows and
    /// the IKE SA waits for the facility's Delete (or the hub's, after a
    /// grace period). Refused when the SA is not established, already
    /// redirected or rekeyed away, or the facility did not announce support.
    pub fn redirect(
        &mut self,
        now: Instant,
        id: IkeSaId,
        gateway: GatewayIdentity,
    ) -> Result<(), Error> {
        let sa = self
            .sas
            .get(&id.0)
            .ok_or_else(|| Error::NotFound(format!("IKE SA {id}")))?;
        if !sa.redirect_supported {
            return Err(Error::NotPossible(format!(
                "IKE SA {id}: the facility did not announce REDIRECT_SUPPORTED"
            )));
        }
        if matches!(&sa.state, State::Established(e) if e.redirected_at.is_some()) {
            return Err(Error::NotPossible(format!(
                "IKE SA {id} is already redirected"
            )));
        }
        self.with_established(now, id.0, |est| queue(est, Work::Redirect(gateway)))
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
            match strip_non_esp_marker(data) {
                Some(d) => d,
                None => return,
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

    /// Rekeys the Child SA whose inbound SPI is `spi_in` now (for byte
    /// lifetimes, counted by the data plane, and for operators).
    pub fn rekey_child(&mut self, now: Instant, spi_in: u32) -> Result<(), Error> {
        let id = self
            .sas
            .iter()
            .find(|(_, sa)| matches!(&sa.state, State::Established(e) if !e.superseded && e.children.iter().any(|c| c.spi_in == spi_in && !c.is_replaced())))
            .map(|(id, _)| *id)
            .ok_or_else(|| Error::NotFound(format!("Child SA {spi_in:08x}")))?;
        self.with_established(now, id, |est| {
            if let Some(c) = est
                .children
                .iter_mut()
                .find(|c| c.spi_in == spi_in && matches!(c.state, ChildState::Installed { .. }))
            {
                c.state = ChildState::Rekeying;
                queue(est, Work::RekeyChild(spi_in));
            }
        })
    }

    /// Deletes the Child SA whose inbound SPI is `spi_in` (an
    /// INFORMATIONAL with a Delete payload, RFC 7296 §1.4.1), e.g. one the
    /// driver could not install; its `ChildSaDown` follows the answer. The
    /// IKE SA stays.
    pub fn delete_child(&mut self, now: Instant, spi_in: u32) -> Result<(), Error> {
        let id = self
            .sas
            .iter()
            .find(|(_, sa)| matches!(&sa.state, State::Established(e) if e.children.iter().any(|c| c.spi_in == spi_in)))
            .map(|(id, _)| *id)
            .ok_or_else(|| Error::NotFound(format!("Child SA {spi_in:08x}")))?;
        self.with_established(now, id, |est| {
            queue(est, Work::DeleteChildren(vec![spi_in]));
        })
    }

    /// Creates an additional Child SA over the facility's configured
    /// selectors (RFC 7296 §1.3.1).
    pub fn create_child(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.with_established(now, id.0, |est| queue(est, Work::NewChild))
    }

    /// Rekeys an IKE SA now.
    pub fn rekey_ike(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.with_established(now, id.0, |est| queue(est, Work::RekeyIke))
    }

    pub(super) fn with_established(
        &mut self,
        now: Instant,
        id: u64,
        f: impl FnOnce(&mut Established),
    ) -> Result<(), Error> {
        let mut sa = self
            .sas
            .remove(&id)
            .ok_or_else(|| Error::NotFound(format!("IKE SA {id:016x}")))?;
        let result = match &mut sa.state {
            State::Established(est) if !est.superseded => {
                f(est);
                Ok(())
            }
            _ => Err(Error::NotFound(format!("established IKE SA {id:016x}"))),
        };
        self.pump(now, &mut sa);
        self.put_back(sa);
        result
    }
}
