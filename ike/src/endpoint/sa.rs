//! The state an IKE SA keeps (RFC 7296 §2): its exchange state, its Child
//! SAs, the request in flight and the work waiting, and its timers.
//!
//! ```text
//! initiator:  InitSent ─IKE_SA_INIT─▶ AuthSent ─IKE_AUTH─▶ Established ─Delete─▶ Closing ─▶ Gone
//! responder:  (none) ──IKE_SA_INIT─▶ InitDone ─IKE_AUTH─▶ Established
//! failed / deleted: Dead (lingers to answer retransmissions) ─▶ Gone
//! ```
//!
//! Each transition consumes the previous state. Timers are a table indexed
//! by [`Timer`]; the endpoint keeps one deadline per IKE SA in its queue.

use super::auth::SigHashes;
use super::fragment::Reassembly;
use super::{ChildSaInfo, IkeSaId};
use crate::config::PeerConfig;
use crate::crypto::KeyExchange;
use crate::keys::IkeKeys;
use crate::wire::{GatewayIdentity, TrafficSelector};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a failed or deleted IKE SA lingers to answer retransmissions.
pub(super) const LINGER: Duration = Duration::from_secs(10);

/// How long a replaced Child SA waits for its deletion before we delete it
/// ourselves. The initiator of a rekey should delete the old SA at once
/// (RFC 7296 §2.8) and the hub keeps sending on it until then, so a peer
/// that never does must not leave it (and the hub's traffic) there.
pub(super) const REPLACED_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
pub(super) enum Timer {
    Retransmit = 0,
    Expire = 1,
    Keepalive = 2,
    Rekey = 3,
    Dpd = 4,
    Work = 5,
}

pub(super) const TIMER_COUNT: usize = 6;

pub(super) const TIMERS: [Timer; TIMER_COUNT] = [
    Timer::Retransmit,
    Timer::Expire,
    Timer::Keepalive,
    Timer::Rekey,
    Timer::Dpd,
    Timer::Work,
];

#[derive(Default)]
pub(super) struct Timers([Option<Instant>; TIMER_COUNT]);

impl Timers {
    pub(super) fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    pub(super) fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    pub(super) fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }
    pub(super) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

pub(super) struct InitSent {
    pub(super) ke: KeyExchange,
    pub(super) ke_public: Vec<u8>,
    pub(super) nonce_i: Vec<u8>,
    pub(super) message1: Vec<u8>,
    pub(super) cookie: Option<Vec<u8>>,
    pub(super) retried_ke: bool,
}

pub(super) struct AuthSent {
    pub(super) keys: IkeKeys,
    pub(super) nonce_i: Vec<u8>,
    pub(super) nonce_r: Vec<u8>,
    pub(super) message2: Vec<u8>,
    pub(super) child_spi: u32,
}

pub(super) struct InitDone {
    pub(super) keys: IkeKeys,
    pub(super) nonce_i: Vec<u8>,
    pub(super) nonce_r: Vec<u8>,
    pub(super) message1: Vec<u8>,
    pub(super) message2: Vec<u8>,
}

pub(super) struct ChildSa {
    pub(super) spi_in: u32,
    pub(super) spi_out: u32,
    pub(super) local_ts: Vec<TrafficSelector>,
    pub(super) remote_ts: Vec<TrafficSelector>,
    /// Where it is in its life.
    pub(super) state: ChildState,
    /// It uses Extended Sequence Numbers (our rekey offers them again).
    pub(super) esn: bool,
}

/// The life of a Child SA, rekeys included (RFC 7296 §1.3.3, §2.8):
///
/// ```text
/// Installed ──rekey due / asked──▶ Rekeying ──ours done────────────▶ Replaced ──deleted──▶ (gone)
///    │ ▲                              │ peer rekeys it too (§2.8.1)      ▲
///    │ └──ours fails (retry later)────┤                                  │
///    │                                ▼                                  │
///    │                            Colliding ──ours done (§2.8.1: the ────┤
///    │                                        lowest nonce's SA deleted) │
///    └──the peer rekeys it───────────────────────────────────────────────┘
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChildState {
    /// Carrying traffic; we rekey it at `rekey_at`.
    Installed {
        /// When we rekey it.
        rekey_at: Instant,
    },
    /// Our own rekey of it is queued or in flight.
    Rekeying,
    /// Our rekey is in flight and the peer rekeyed it too (RFC 7296
    /// §2.8.1): settled when ours completes.
    Colliding {
        /// The lower nonce of the peer's exchange.
        lowest_nonce: Vec<u8>,
        /// The inbound SPI of the Child SA the peer's exchange made.
        theirs: u32,
    },
    /// A newer Child SA replaced it at `at`. It stays installed until
    /// deleted, so packets in flight on it are still accepted
    /// (make-before-break); if whoever should delete it has not done so
    /// [`REPLACED_GRACE`] later, we do.
    Replaced {
        /// When it was replaced (or last asked to be deleted).
        at: Instant,
    },
}

impl ChildSa {
    pub(super) fn new(info: &ChildSaInfo, rekey_at: Instant) -> ChildSa {
        ChildSa {
            spi_in: info.spi_in,
            spi_out: info.spi_out,
            local_ts: info.local_ts.clone(),
            remote_ts: info.remote_ts.clone(),
            state: ChildState::Installed { rekey_at },
            esn: info.suite.esn,
        }
    }

    /// A newer Child SA replaced it: it only waits to be deleted.
    pub(super) fn is_replaced(&self) -> bool {
        matches!(self.state, ChildState::Replaced { .. })
    }

    /// Our rekey of it is queued or in flight.
    pub(super) fn is_rekeying(&self) -> bool {
        matches!(
            self.state,
            ChildState::Rekeying | ChildState::Colliding { .. }
        )
    }

    /// When its Rekey timer must fire: its rekey, or the end of its grace
    /// as a replaced Child SA; none while our rekey runs.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.state {
            ChildState::Installed { rekey_at } => Some(rekey_at),
            ChildState::Replaced { at } => Some(at + REPLACED_GRACE),
            ChildState::Rekeying | ChildState::Colliding { .. } => None,
        }
    }
}

/// Something an established IKE SA still has to do; one request is in
/// flight at a time (window size 1), the rest wait here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Work {
    RekeyChild(u32),
    /// An additional Child SA over the facility's configured selectors.
    NewChild,
    RekeyIke,
    Dpd,
    DeleteChildren(Vec<u32>),
    /// Send the facility to another gateway (RFC 5685 §5).
    Redirect(GatewayIdentity),
}

/// How long a redirected facility has to set up its SAs with the other
/// gateway and delete this IKE SA before the hub deletes it (RFC 5685 §5:
/// "sufficient time for the client to set up the required security
/// associations with the new gateway"; strongSwan waits 30 s).
pub(super) const REDIRECT_GRACE: Duration = Duration::from_secs(30);

pub(super) struct Established {
    pub(super) keys: IkeKeys,
    pub(super) children: Vec<ChildSa>,
    pub(super) rekey_at: Instant,
    pub(super) queue: VecDeque<Work>,
    pub(super) last_received: Instant,
    /// Rekeyed into a new IKE SA: it only waits to be deleted.
    pub(super) superseded: bool,
    /// When the facility acknowledged a REDIRECT (RFC 5685 §5): it only
    /// waits to be deleted, by the facility or after [`REDIRECT_GRACE`].
    pub(super) redirected_at: Option<Instant>,
}

pub(super) enum State {
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
    /// The state of a half-open responder, taken out (leaving `Dead`); any
    /// other state stays.
    pub(super) fn take_init_done(&mut self) -> Option<InitDone> {
        match std::mem::replace(self, State::Dead) {
            State::InitDone(init) => Some(init),
            other => {
                *self = other;
                None
            }
        }
    }

    pub(super) fn keys(&self) -> Option<&IkeKeys> {
        match self {
            State::AuthSent(s) => Some(&s.keys),
            State::InitDone(s) => Some(&s.keys),
            State::Established(s) | State::Closing(s) => Some(&s.keys),
            _ => None,
        }
    }
}

pub(super) struct Pending {
    pub(super) message_id: u32,
    /// The request as sent: one datagram, or its fragments.
    pub(super) datagrams: Vec<Vec<u8>>,
    pub(super) tries: u32,
    pub(super) kind: PendingKind,
}

/// What an outstanding request of an established IKE SA was for.
pub(super) enum PendingKind {
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
    /// A REDIRECT to this gateway (RFC 5685 §5).
    Redirect(GatewayIdentity),
}

pub(super) struct IkeSa {
    pub(super) id: IkeSaId,
    pub(super) initiator: bool,
    pub(super) spi_i: u64,
    pub(super) spi_r: u64,
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) peer: Option<Arc<PeerConfig>>,
    pub(super) state: State,
    pub(super) next_request_id: u32,
    pub(super) expected_request_id: u32,
    pub(super) last_response: Option<(u32, Vec<Vec<u8>>)>,
    pub(super) pending: Option<Pending>,
    pub(super) timers: Timers,
    /// The deadline this SA has in the endpoint's timer queue: its
    /// `timers.next()` when it was last stored.
    pub(super) queued: Option<Instant>,
    pub(super) encap: bool,
    pub(super) remote_behind_nat: bool,
    pub(super) last_sent: Instant,
    /// A responder's entry in the half-open table, until IKE_AUTH.
    pub(super) half_open_key: Option<(SocketAddr, u64)>,
    /// Both sides announced IKE fragmentation (RFC 7383).
    pub(super) fragmentation: bool,
    /// The signature hashes the peer announced (RFC 7427).
    pub(super) sig_hashes: SigHashes,
    /// A fragmented message being received.
    pub(super) reassembly: Option<Reassembly>,
    /// The facility announced REDIRECT_SUPPORTED (or REDIRECTED_FROM) in
    /// the IKE_SA_INIT that made this IKE SA, or the one it was rekeyed
    /// from (RFC 5685 §3: the gateway keeps track of which clients did).
    /// Never set where the hub initiated: only a responder redirects.
    pub(super) redirect_supported: bool,
}

impl IkeSa {
    pub(super) fn peer_name(&self) -> Option<String> {
        self.peer.as_ref().map(|p| p.name.clone())
    }
}

pub(super) fn spi_pairs(children: &[ChildSa]) -> Vec<(u32, u32)> {
    children.iter().map(|c| (c.spi_in, c.spi_out)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(state: ChildState) -> ChildSa {
        ChildSa {
            spi_in: 0x1000,
            spi_out: 0x2000,
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            state,
            esn: false,
        }
    }

    #[test]
    fn the_rekey_timer_follows_the_child_sa_state() {
        let now = Instant::now();
        let later = now + Duration::from_secs(3600);
        let installed = child(ChildState::Installed { rekey_at: later });
        assert_eq!(installed.deadline(), Some(later));
        assert!(!installed.is_rekeying() && !installed.is_replaced());
        // While our rekey runs, its retransmissions are the only timer.
        let rekeying = child(ChildState::Rekeying);
        assert_eq!(rekeying.deadline(), None);
        assert!(rekeying.is_rekeying());
        let colliding = child(ChildState::Colliding {
            lowest_nonce: vec![1; 32],
            theirs: 0x3000,
        });
        assert_eq!(colliding.deadline(), None);
        assert!(colliding.is_rekeying() && !colliding.is_replaced());
        // A replaced Child SA is deleted by us when its grace runs out.
        let replaced = child(ChildState::Replaced { at: now });
        assert_eq!(replaced.deadline(), Some(now + REPLACED_GRACE));
        assert!(replaced.is_replaced() && !replaced.is_rekeying());
    }
}
