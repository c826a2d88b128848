//! Bringing facilities back when a hub starts (after a crash, or when it
//! becomes the active node of a pair), instead of waiting minutes for their
//! dead-peer detection.
//!
//! ```text
//!  events ─▶ LastKnownLog (newest per facility, in memory) ─tick─▶ spawn_blocking ─▶ registry.last_known
//!  start  ─▶ registry.last_known ─▶ Hub::reinitiate ─▶ queue ─paced─▶ Endpoint::initiate_natt / initiate_to
//! ```
//!
//! Each facility's last known address and port (the outside of its NAT
//! mapping, as the hub saw it) and whether its tunnel was up are written to
//! the registry off the event loop, coalesced per facility and batched once
//! a second. When the registry cannot be written the newest state stays in
//! memory (one entry per configured facility, so bounded) and the next
//! batch carries it.
//!
//! [`Hub::reinitiate`] queues every facility that was up; the queue is
//! drained at a token-bucket rate with a bound on attempts in flight
//! (`serve --reinitiate-rate`, `--reinitiate-concurrency`). A facility
//! that connected by itself meanwhile is skipped (one IKE SA per facility).
//! Each facility gets one attempt, with INITIAL_CONTACT in IKE_AUTH (the
//! `ike` crate sends it in every IKE_AUTH it initiates), so the router
//! drops the SAs it still holds with the old hub. A refused or unanswered
//! attempt is not repeated: the facility's own reconnect brings it back, as
//! before, and its status says so.

use super::status::FacilityState;
use super::Hub;
use crate::registry::{LastKnown, Registry};
use ike::{Event, IkeSaId};
use rust_i18n::t;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Default pace of initiations at start, per second (also the burst).
pub(crate) const DEFAULT_RATE: u32 = 200;
/// Default bound on initiations at start not yet answered.
pub(crate) const DEFAULT_CONCURRENCY: u32 = 256;

/// How fast [`Hub::reinitiate`] initiates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Initiations per second, and the most at once after a pause.
    pub(crate) rate: u32,
    /// Initiations not yet answered, at most.
    pub(crate) concurrency: u32,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            rate: DEFAULT_RATE,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// The facilities a hub initiates to because they were up, paced.
pub(super) struct Takeover {
    pace: Pace,
    queue: VecDeque<(String, SocketAddr)>,
    in_flight: HashMap<IkeSaId, (String, SocketAddr)>,
    tokens: f64,
    refilled: Instant,
    started: Option<Instant>,
    up: usize,
    failed: usize,
    skipped: usize,
}

impl Takeover {
    pub(super) fn new(pace: Pace, now: Instant) -> Takeover {
        Takeover {
            pace,
            queue: VecDeque::new(),
            in_flight: HashMap::new(),
            tokens: f64::from(pace.rate),
            refilled: now,
            started: None,
            up: 0,
            failed: 0,
            skipped: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        let rate = f64::from(self.pace.rate);
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
    }

    /// Whether another initiation may start now (a token is taken).
    fn take(&mut self, now: Instant) -> bool {
        if self.pace.rate == 0 || self.in_flight.len() >= self.pace.concurrency as usize {
            return false;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the loop must wake to initiate more (`None`: nothing waits, or
    /// only for answers).
    pub(super) fn next_at(&self, now: Instant) -> Option<Instant> {
        if self.queue.is_empty()
            || self.pace.rate == 0
            || self.in_flight.len() >= self.pace.concurrency as usize
        {
            return None;
        }
        let missing = (1.0 - self.tokens).max(0.0);
        Some(now + Duration::from_secs_f64(missing / f64::from(self.pace.rate)))
    }

    fn finished(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }
}

/// What [`Hub::takeover_event`] needs of an `ike` event.
pub(super) enum Note {
    Up {
        ike_sa: IkeSaId,
        peer: String,
        remote: SocketAddr,
    },
    Moved {
        peer: String,
        remote: SocketAddr,
    },
    Down {
        ike_sa: IkeSaId,
        peer: String,
        reason: String,
    },
}

impl Note {
    pub(super) fn of(event: &Event) -> Option<Note> {
        Some(match event {
            Event::IkeSaUp {
                ike_sa,
                peer,
                remote,
                ..
            } => Note::Up {
                ike_sa: *ike_sa,
                peer: peer.clone(),
                remote: *remote,
            },
            Event::PeerMoved { peer, remote, .. } => Note::Moved {
                peer: peer.clone(),
                remote: *remote,
            },
            Event::IkeSaDown {
                ike_sa,
                peer: Some(peer),
                reason,
            } => Note::Down {
                ike_sa: *ike_sa,
                peer: peer.clone(),
                reason: reason.clone(),
            },
            _ => return None,
        })
    }
}

impl Hub {
    /// Initiates to every facility of `last_known` that was up, at its
    /// last known address and port: through its NAT mapping from UDP 4500
    /// (non-ESP marker) when that is how it reached the hub, else to UDP
    /// 500 of its address. Paced; one attempt each; facilities with an IKE
    /// SA by then, disabled or removed ones and those the hub keeps
    /// connected itself (`--start`) are skipped. Called at start, and the
    /// entry point for a node that becomes active.
    pub(super) fn reinitiate(&mut self, now: Instant, last_known: Vec<LastKnown>) {
        let mut queued = 0;
        let mut waiting: std::collections::HashSet<String> =
            self.takeover.queue.iter().map(|(n, _)| n.clone()).collect();
        for lk in last_known.into_iter().filter(|lk| lk.up) {
            let Some(p) = self.peers.get(&lk.name) else {
                continue;
            };
            if !p.enabled || p.start && p.remote_addr.is_some() {
                continue;
            }
            if !waiting.insert(lk.name.clone()) {
                continue;
            }
            self.takeover.queue.push_back((lk.name, lk.remote));
            queued += 1;
        }
        if queued == 0 {
            return;
        }
        self.takeover.started = Some(now);
        (
            self.takeover.up,
            self.takeover.failed,
            self.takeover.skipped,
        ) = (0, 0, 0);
        info!(
            facilities = queued,
            rate = self.takeover.pace.rate,
            concurrency = self.takeover.pace.concurrency,
            "initiating to the facilities that were up"
        );
        self.audit.record(
            "renkei",
            "hub.reinitiate",
            json!({ "facilities": queued, "rate": self.takeover.pace.rate, "concurrency": self.takeover.pace.concurrency }),
        );
    }

    /// Starts the initiations the pace allows now.
    pub(super) fn run_takeover(&mut self, now: Instant) {
        let ike_port = self.endpoint.config().ike_port;
        while !self.takeover.queue.is_empty() && self.takeover.take(now) {
            let Some((name, remote)) = self.takeover.queue.pop_front() else {
                break;
            };
            let wanted = self.peers.get(&name).is_some_and(|p| p.enabled);
            if !wanted || !self.endpoint.ike_sas_of(&name).is_empty() {
                // Removed or disabled meanwhile, or it connected by itself.
                self.takeover.tokens += 1.0;
                self.takeover.skipped += 1;
                continue;
            }
            // A facility that reached the hub on UDP 500 (no NAT, no
            // encapsulation) is reached there; any other port is the
            // outside of a NAT mapping towards the hub's UDP 4500.
            let natt = remote.port() != ike_port;
            let result = if !natt {
                self.endpoint.initiate_to(now, &name, remote)
            } else {
                self.endpoint.initiate_natt(now, &name, remote)
            };
            match result {
                Ok(id) => {
                    self.takeover.in_flight.insert(id, (name.clone(), remote));
                    let st = self.status.entry(name.clone()).or_default();
                    st.state = FacilityState::Connecting;
                    st.ike_sa = Some(id);
                    self.audit.record(
                        "renkei",
                        "sa.reinitiate",
                        json!({ "facility": name, "remote": remote.to_string(), "natt": natt }),
                    );
                }
                Err(e) => {
                    warn!(peer = %name, "cannot initiate: {e}");
                    self.takeover.failed += 1;
                }
            }
        }
        self.takeover_done(now);
    }

    fn takeover_done(&mut self, now: Instant) {
        if !self.takeover.finished() {
            return;
        }
        let Some(started) = self.takeover.started.take() else {
            return;
        };
        let t = &self.takeover;
        let secs = now.saturating_duration_since(started).as_secs_f64();
        info!(
            up = t.up,
            failed = t.failed,
            skipped = t.skipped,
            seconds = secs,
            "initiations at start finished"
        );
        self.audit.record(
            "renkei",
            "hub.reinitiate_done",
            json!({ "up": t.up, "failed": t.failed, "connected_themselves": t.skipped, "seconds": (secs * 1000.0).round() / 1000.0 }),
        );
    }

    /// What an `ike` event means for the initiations at start and the last
    /// known states. Runs after the event was applied.
    pub(super) fn takeover_event(&mut self, note: Note) {
        let now = Instant::now();
        match note {
            Note::Up {
                ike_sa,
                peer,
                remote,
            } => {
                if self.takeover.in_flight.remove(&ike_sa).is_some() {
                    self.takeover.up += 1;
                }
                self.note_last_known(&peer, remote, true);
            }
            Note::Moved { peer, remote } => self.note_last_known(&peer, remote, true),
            Note::Down {
                ike_sa,
                peer,
                reason,
            } => {
                let ours = self.takeover.in_flight.remove(&ike_sa);
                let alive = !self.endpoint.ike_sas_of(&peer).is_empty();
                if alive {
                    // Replaced by the facility's own IKE SA (or a newer one).
                    if ours.is_some() {
                        self.takeover.skipped += 1;
                    }
                } else if let Some((_, remote)) = ours {
                    self.takeover.failed += 1;
                    let msg = t!(
                        "takeover.initiation_failed",
                        remote = remote,
                        reason = reason
                    )
                    .to_string();
                    warn!(%peer, "{msg}");
                    if let Some(st) = self.status.get_mut(&peer) {
                        st.last_error = Some(msg);
                    }
                    self.audit.record(
                        "renkei",
                        "sa.reinitiate_failed",
                        json!({ "facility": peer, "remote": remote.to_string(), "reason": reason }),
                    );
                    self.note_last_known(&peer, remote, false);
                } else if let Some(remote) = self.last_known.remote_of(&peer) {
                    self.note_last_known(&peer, remote, false);
                }
            }
        }
        self.takeover_done(now);
    }

    fn note_last_known(&mut self, name: &str, remote: SocketAddr, up: bool) {
        // Only configured facilities: the log holds at most one entry each.
        if self.peers.contains_key(name) {
            self.last_known.note(LastKnown {
                name: name.to_string(),
                remote,
                up,
                since: crate::certs::unix_now(),
            });
        }
    }

    /// Starts writing the states noted since the last batch, off the loop.
    pub(super) fn write_last_known(&mut self) {
        if let Some(batch) = self.last_known.take_batch() {
            let state = self.state.clone();
            let tx = self.last_known.done_tx.clone();
            tokio::task::spawn_blocking(move || {
                let result = Registry::open(&state)
                    .and_then(|mut r| r.store_last_known(&batch))
                    .map_err(|e| format!("{e:#}"));
                let _ = tx.blocking_send((batch, result));
            });
        }
    }

    /// A batch was written, or not (then it is kept for the next).
    pub(super) fn last_known_written(&mut self, batch: Vec<LastKnown>, result: Result<(), String>) {
        if let Some(e) = self.last_known.written(batch, result) {
            warn!("{}", t!("takeover.registry_unavailable", error = e));
        }
    }

    /// At shutdown: waits for the batch being written, then writes the rest
    /// here (the facilities the stop took down).
    pub(super) async fn finish_last_known(
        &mut self,
        done_rx: &mut mpsc::Receiver<(Vec<LastKnown>, Result<(), String>)>,
    ) {
        if self.last_known.writing {
            match tokio::time::timeout(Duration::from_secs(10), done_rx.recv()).await {
                Ok(Some((batch, result))) => self.last_known_written(batch, result),
                _ => return,
            }
        }
        if let Some(batch) = self.last_known.take_batch() {
            let state = self.state.clone();
            let result = tokio::task::spawn_blocking(move || {
                Registry::open(&state).and_then(|mut r| r.store_last_known(&batch))
            })
            .await;
            if let Ok(Err(e)) = result {
                warn!(
                    "{}",
                    t!("takeover.registry_at_stop", error = format!("{e:#}"))
                );
            }
        }
    }
}

/// The newest state of each facility not yet in the registry, and whether
/// a batch is being written.
pub(super) struct LastKnownLog {
    pending: HashMap<String, LastKnown>,
    /// The newest address of each facility, written or not (for a down
    /// state, which has no address of its own).
    remotes: HashMap<String, SocketAddr>,
    writing: bool,
    /// Whether the last write failed (warned once per outage).
    failing: bool,
    done_tx: mpsc::Sender<(Vec<LastKnown>, Result<(), String>)>,
}

impl LastKnownLog {
    pub(super) fn new(done_tx: mpsc::Sender<(Vec<LastKnown>, Result<(), String>)>) -> Self {
        LastKnownLog {
            pending: HashMap::new(),
            remotes: HashMap::new(),
            writing: false,
            failing: false,
            done_tx,
        }
    }

    fn note(&mut self, lk: LastKnown) {
        self.remotes.insert(lk.name.clone(), lk.remote);
        self.pending.insert(lk.name.clone(), lk);
    }

    fn remote_of(&self, name: &str) -> Option<SocketAddr> {
        self.remotes.get(name).copied()
    }

    /// Forgets a removed facility.
    pub(super) fn forget(&mut self, name: &str) {
        self.pending.remove(name);
        self.remotes.remove(name);
    }

    /// What to write now: nothing while a batch is being written.
    fn take_batch(&mut self) -> Option<Vec<LastKnown>> {
        if self.writing || self.pending.is_empty() {
            return None;
        }
        self.writing = true;
        Some(self.pending.drain().map(|(_, v)| v).collect())
    }

    /// A batch finished; a failed one goes back, under states noted
    /// meanwhile (those are newer). The error, the first time in a row.
    fn written(&mut self, batch: Vec<LastKnown>, result: Result<(), String>) -> Option<String> {
        self.writing = false;
        match result {
            Ok(()) => {
                debug!(
                    facilities = batch.len(),
                    "recorded the facilities' last known addresses"
                );
                if self.failing {
                    info!("{}", t!("takeover.registry_back"));
                }
                self.failing = false;
                None
            }
            Err(e) => {
                for lk in batch {
                    if self.remotes.contains_key(&lk.name) {
                        self.pending.entry(lk.name.clone()).or_insert(lk);
                    }
                }
                let first = !self.failing;
                self.failing = true;
                first.then_some(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lk(name: &str, port: u16, up: bool) -> LastKnown {
        LastKnown {
            name: name.into(),
            remote: SocketAddr::new("203.0.113.7".parse().unwrap(), port),
            up,
            since: 0,
        }
    }

    #[test]
    fn states_are_coalesced_per_facility_and_a_failed_batch_is_kept_under_newer_ones() {
        let (tx, _rx) = mpsc::channel(1);
        let mut log = LastKnownLog::new(tx);
        log.note(lk("kyoto", 4500, true));
        log.note(lk("kyoto", 61000, true));
        log.note(lk("nara", 4500, true));
        let mut batch = log.take_batch().unwrap();
        batch.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            batch,
            vec![lk("kyoto", 61000, true), lk("nara", 4500, true)]
        );
        // One batch at a time.
        log.note(lk("nara", 4500, false));
        assert!(log.take_batch().is_none());
        // The registry is unavailable: the batch comes back, but nara's
        // newer state wins; the error is told once per outage.
        assert!(log.written(batch, Err("locked".into())).is_some());
        let mut batch = log.take_batch().unwrap();
        batch.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            batch,
            vec![lk("kyoto", 61000, true), lk("nara", 4500, false)]
        );
        assert!(log.written(batch, Err("locked".into())).is_none());
        // A removed facility's state is dropped, not retried forever.
        log.forget("kyoto");
        let batch = log.take_batch().unwrap();
        assert_eq!(batch, vec![lk("nara", 4500, false)]);
        assert!(log.written(batch, Ok(())).is_none());
        assert!(log.take_batch().is_none());
    }

    #[test]
    fn the_pace_allows_its_rate_and_no_more_than_its_concurrency() {
        let now = Instant::now();
        let mut t = Takeover::new(
            Pace {
                rate: 10,
                concurrency: 4,
            },
            now,
        );
        for i in 0..20 {
            t.queue
                .push_back((format!("f{i}"), "192.0.2.1:4500".parse().unwrap()));
        }
        // Four at once (the concurrency), then none until answers come.
        let mut started = 0;
        while t.take(now) {
            t.in_flight.insert(
                IkeSaId(started),
                ("x".into(), "192.0.2.1:4500".parse().unwrap()),
            );
            started += 1;
        }
        assert_eq!(started, 4);
        assert_eq!(t.next_at(now), None);
        // Answers free room; the bucket (10 a second) has 6 tokens left.
        t.in_flight.clear();
        let mut more = 0;
        while t.take(now) {
            more += 1;
            if more == 4 {
                break;
            }
        }
        assert_eq!(more, 4);
        t.in_flight.clear();
        let mut rest = 0;
        while t.take(now) {
            rest += 1;
        }
        assert_eq!(rest, 2, "the burst is the rate");
        // The next token is a tenth of a second away.
        let next = t.next_at(now).unwrap();
        assert!(next > now && next <= now + Duration::from_millis(101));
        assert!(t.take(now + Duration::from_millis(100)));
    }
}
