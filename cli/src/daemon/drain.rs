//! `renkei drain`: hands this hub's facilities to the other hub before
//! planned maintenance (issue #17 item 5).
//!
//! ```text
//! Request::Drain ─▶ new IKE SAs: REDIRECT (RFC 5685 §3) or unanswered
//!                ─▶ plan: per facility with an IKE SA here, in name order
//!   paced, one facility per DRAIN_PACE:
//!     announced REDIRECT_SUPPORTED (and --to given) ─▶ Endpoint::redirect (§5)
//!         ─▶ Redirected (acknowledged) ─▶ IkeSaDown (its Delete, or ours after the grace)
//!         ─▶ outcome "redirected"
//!     otherwise ─▶ Endpoint::close (Delete) ─▶ outcome "deleted"; the
//!         facility reconnects to the address it knows, which keepalived
//!         has moved to the other hub
//!   --wait elapsed ─▶ facilities still here: "still_up"
//! ```
//!
//! Each facility's outcome is one `drain.facility` audit record, by the
//! operator who asked; the drain itself is `hub.drain` (and
//! `hub.undrain` when cancelled). While the hub drains it starts no
//! tunnel itself (reconnects wait) and `renkei status` says
//! `"draining": true`; once every facility has its outcome it also says
//! `"drained": true`, which is when the keepalived check script should
//! give the hub address up: the Deletes went out from that address, and
//! a facility that has not had its Delete yet would keep its SAs until
//! its own liveness check fails. A hub that restarts is not draining.

use super::Hub;
use ike::wire::GatewayIdentity;
use ike::{IkeSaId, NewIkeSas};
use rust_i18n::t;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Time between two facilities: 50 a second, so that a thousand are
/// handed over in 20 s without a storm of reconnects at the other hub.
pub(crate) const DRAIN_PACE: Duration = Duration::from_millis(20);

/// The longest `--wait` accepted (an hour).
pub(crate) const MAX_WAIT_SECS: u64 = 3600;

/// How a facility is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Method {
    /// An IKEv2 REDIRECT to the other hub (it announced support).
    Redirect,
    /// Its IKE SA deleted, so that it reconnects.
    Delete,
}

/// What became of a facility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// It acknowledged the REDIRECT and deleted its IKE SA here.
    Redirected,
    /// The hub deleted its SAs (at once, or 30 s after a REDIRECT the
    /// facility acknowledged but did not follow).
    Deleted,
    /// Its IKE SA went away without acknowledging the REDIRECT (no
    /// answer, or it failed otherwise).
    Lost,
    /// It still had an IKE SA here when the wait ended.
    StillUp,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Redirected => "redirected",
            Outcome::Deleted => "deleted",
            Outcome::Lost => "lost",
            Outcome::StillUp => "still_up",
        }
    }
}

/// One facility of the drain, as `status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DrainFacility {
    pub(crate) name: String,
    pub(crate) method: Method,
    /// None while it is being handed over.
    pub(crate) outcome: Option<Outcome>,
    /// Seconds from the start of the drain to the outcome.
    pub(crate) seconds: Option<f64>,
}

/// The drain under way or finished, in `renkei status --json` as
/// `hub.drain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DrainReport {
    /// Where facilities are redirected (an address or a DNS name), if
    /// anywhere.
    pub(crate) to: Option<String>,
    /// When the drain started (RFC 3339, UTC).
    pub(crate) started: String,
    pub(crate) wait_secs: u64,
    /// Every facility has an outcome.
    pub(crate) finished: bool,
    pub(crate) facilities: Vec<DrainFacility>,
}

struct Entry {
    method: Method,
    /// Its IKE SAs here still to go.
    ike_sas: BTreeSet<IkeSaId>,
    acknowledged: bool,
    outcome: Option<(Outcome, f64)>,
}

/// The daemon's drain state.
pub(super) struct Drain {
    to: Option<GatewayIdentity>,
    who: String,
    started: Instant,
    started_at: String,
    wait: Duration,
    /// Facilities not yet acted on, in order.
    queue: VecDeque<String>,
    next_at: Instant,
    facilities: BTreeMap<String, Entry>,
    finished: bool,
}

impl Drain {
    /// When the control loop must next call [`Hub::run_drain`].
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.finished {
            None
        } else if self.queue.is_empty() {
            Some(self.started + self.wait)
        } else {
            Some(self.next_at)
        }
    }

    /// Every facility has its outcome.
    pub(super) fn finished(&self) -> bool {
        self.finished
    }

    pub(super) fn report(&self) -> DrainReport {
        DrainReport {
            to: self.to.as_ref().map(ToString::to_string),
            started: self.started_at.clone(),
            wait_secs: self.wait.as_secs(),
            finished: self.finished,
            facilities: self
                .facilities
                .iter()
                .map(|(name, e)| DrainFacility {
                    name: name.clone(),
                    method: e.method,
                    outcome: e.outcome.map(|(o, _)| o),
                    seconds: e.outcome.map(|(_, s)| s),
                })
                .collect(),
        }
    }
}

impl Hub {
    /// `Request::Drain`: marks the hub draining and plans the hand-over.
    /// A drain under way must finish (or be cancelled) before another.
    pub(super) fn start_drain(
        &mut self,
        now: Instant,
        to: Option<&str>,
        wait_secs: u64,
        who: &str,
    ) -> Result<DrainReport, String> {
        if self.drain.as_ref().is_some_and(|d| !d.finished) {
            return Err(t!("drain.under_way").into_owned());
        }
        let to = match to {
            None => None,
            Some(to) => Some(
                GatewayIdentity::parse(to)
                    .map_err(|e| t!("drain.bad_to", to = to, reason = e).into_owned())?,
            ),
        };
        // Sending facilities back to this hub would only loop.
        if let Some(own) = to.as_ref().and_then(|g| {
            self.ike_sockets
                .iter()
                .map(|(a, _)| a.ip())
                .find(|ip| GatewayIdentity::from(*ip) == *g)
        }) {
            return Err(t!("drain.own_to", addr = own).into_owned());
        }
        if wait_secs == 0 || wait_secs > MAX_WAIT_SECS {
            return Err(t!("drain.bad_wait", secs = wait_secs, max = MAX_WAIT_SECS).into_owned());
        }
        // Which facilities have IKE SAs here, and whether every one of
        // them can be redirected.
        let mut plan: BTreeMap<String, Entry> = BTreeMap::new();
        for s in self.endpoint.status() {
            let Some(peer) = s.peer else { continue };
            let e = plan.entry(peer).or_insert(Entry {
                method: Method::Redirect,
                ike_sas: BTreeSet::new(),
                acknowledged: false,
                outcome: None,
            });
            e.ike_sas.insert(s.id);
            if to.is_none() || s.state != "established" || !s.redirect_supported || s.redirected {
                e.method = Method::Delete;
            }
        }
        self.endpoint.set_new_ike_sas(match &to {
            Some(g) => NewIkeSas::Redirect(g.clone()),
            None => NewIkeSas::Refuse,
        });
        let redirects = plan
            .values()
            .filter(|e| e.method == Method::Redirect)
            .count();
        self.audit.record(
            who,
            "hub.drain",
            json!({
                "to": to.as_ref().map(ToString::to_string),
                "wait_secs": wait_secs,
                "facilities": plan.len(),
                "redirect": redirects,
                "delete": plan.len() - redirects,
            }),
        );
        info!(
            to = to
                .as_ref()
                .map(ToString::to_string)
                .as_deref()
                .unwrap_or("-"),
            facilities = plan.len(),
            redirects,
            "draining: new IKE SAs are {}; handing facilities over",
            if to.is_some() {
                "redirected (or refused)"
            } else {
                "refused"
            }
        );
        let drain = Drain {
            to,
            who: who.to_string(),
            started: now,
            started_at: crate::registry::now_rfc3339(),
            wait: Duration::from_secs(wait_secs),
            queue: plan.keys().cloned().collect(),
            next_at: now,
            facilities: plan,
            finished: false,
        };
        let report = drain.report();
        self.drain = Some(drain);
        self.run_drain(now);
        Ok(report)
    }

    /// `Request::Undrain`: new IKE SAs are accepted again and the hub
    /// reconnects what it initiates; facilities still being handed over
    /// are left as they are.
    pub(super) fn cancel_drain(&mut self, who: &str) -> Result<DrainReport, String> {
        let Some(drain) = self.drain.take() else {
            return Err(t!("drain.not_draining").into_owned());
        };
        self.endpoint.set_new_ike_sas(NewIkeSas::Accept);
        let report = drain.report();
        let pending = report
            .facilities
            .iter()
            .filter(|f| f.outcome.is_none())
            .count();
        self.audit.record(
            who,
            "hub.undrain",
            json!({ "finished": report.finished, "pending": pending }),
        );
        info!("drain cancelled: new IKE SAs are accepted again");
        Ok(report)
    }

    /// Acts on the next facility when its turn comes, and ends the drain
    /// when every facility has an outcome or the wait is over.
    pub(super) fn run_drain(&mut self, now: Instant) {
        let Some(drain) = &mut self.drain else { return };
        if drain.finished {
            return;
        }
        while drain.next_at <= now {
            let Some(name) = drain.queue.pop_front() else {
                break;
            };
            drain.next_at = drain.next_at.max(now) + DRAIN_PACE;
            let Some(entry) = drain.facilities.get_mut(&name) else {
                continue;
            };
            if let (Method::Redirect, Some(gateway)) = (entry.method, drain.to.clone()) {
                let ids: Vec<IkeSaId> = entry.ike_sas.iter().copied().collect();
                let failed = ids
                    .iter()
                    .filter_map(|id| self.endpoint.redirect(now, *id, gateway.clone()).err())
                    .next();
                match failed {
                    None => continue,
                    Some(e) => {
                        // Gone or changed meanwhile: delete it instead.
                        warn!(facility = %name, "cannot redirect ({e}); deleting its SAs instead");
                        entry.method = Method::Delete;
                    }
                }
            }
            let ids: Vec<IkeSaId> = std::mem::take(&mut entry.ike_sas).into_iter().collect();
            let seconds = now.saturating_duration_since(drain.started).as_secs_f64();
            entry.outcome = Some((Outcome::Deleted, seconds));
            for id in ids {
                self.endpoint.close(now, id);
            }
            Self::record_outcome(
                &self.audit,
                &drain.who,
                &name,
                Method::Delete,
                Outcome::Deleted,
                seconds,
            );
        }
        let all_done =
            drain.queue.is_empty() && drain.facilities.values().all(|e| e.outcome.is_some());
        if all_done || now >= drain.started + drain.wait {
            let seconds = now.saturating_duration_since(drain.started).as_secs_f64();
            for (name, e) in drain.facilities.iter_mut() {
                if e.outcome.is_none() {
                    e.outcome = Some((Outcome::StillUp, seconds));
                    Self::record_outcome(
                        &self.audit,
                        &drain.who,
                        name,
                        e.method,
                        Outcome::StillUp,
                        seconds,
                    );
                }
            }
            drain.queue.clear();
            drain.finished = true;
            let report = drain.report();
            let count = |o: Outcome| {
                report
                    .facilities
                    .iter()
                    .filter(|f| f.outcome == Some(o))
                    .count()
            };
            info!(
                redirected = count(Outcome::Redirected),
                deleted = count(Outcome::Deleted),
                lost = count(Outcome::Lost),
                still_up = count(Outcome::StillUp),
                "drain finished; the hub stays draining until `renkei drain --cancel`"
            );
        }
    }

    fn record_outcome(
        audit: &crate::audit::Writer,
        who: &str,
        name: &str,
        method: Method,
        outcome: Outcome,
        seconds: f64,
    ) {
        audit.record(
            who,
            "drain.facility",
            json!({
                "facility": name,
                "method": method,
                "outcome": outcome,
                "seconds": (seconds * 1000.0).round() / 1000.0,
            }),
        );
    }

    /// The facility acknowledged our REDIRECT.
    pub(super) fn drain_redirected(&mut self, peer: &str) {
        if let Some(e) = self.drain.as_mut().and_then(|d| d.facilities.get_mut(peer)) {
            e.acknowledged = true;
        }
    }

    /// An IKE SA was rekeyed: the drain follows it to its successor.
    pub(super) fn drain_rekeyed(&mut self, peer: &str, old: IkeSaId, new: IkeSaId) {
        if let Some(e) = self.drain.as_mut().and_then(|d| d.facilities.get_mut(peer)) {
            if e.ike_sas.remove(&old) {
                e.ike_sas.insert(new);
            }
        }
    }

    /// An IKE SA went down: a redirected facility whose last IKE SA here
    /// is gone has its outcome. `kept`: it acknowledged but kept the SA,
    /// and the hub deleted it after the grace period.
    pub(super) fn drain_ike_down(&mut self, now: Instant, peer: &str, id: IkeSaId, kept: bool) {
        let Some(drain) = &mut self.drain else { return };
        let Some(e) = drain.facilities.get_mut(peer) else {
            return;
        };
        if !e.ike_sas.remove(&id) || !e.ike_sas.is_empty() || e.outcome.is_some() {
            return;
        }
        let outcome = match (e.acknowledged, kept) {
            (true, false) => Outcome::Redirected,
            (true, true) => Outcome::Deleted,
            (false, _) => Outcome::Lost,
        };
        let seconds = now.saturating_duration_since(drain.started).as_secs_f64();
        e.outcome = Some((outcome, seconds));
        info!(facility = %peer, outcome = outcome.as_str(), seconds, "drain: facility handed over");
        Self::record_outcome(&self.audit, &drain.who, peer, e.method, outcome, seconds);
    }
}
