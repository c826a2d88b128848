//! What the audit log keeps of each IKE event: who, where, which suite
//! and why, never a key — and never one record per packet a stranger
//! sends.
//!
//! ```text
//!  ike events ─▶ AuditMap::event ─┬─ once: sa.ike_up, sa.child_up, sa.ike_down (children in it), …
//!                                 └─ repeats: the first at once, then one `….repeated` summary
//!                                    per window (count, first/last time, sample sources)
//!  end of a batch ─▶ Child SAs gone alone ─▶ sa.child_down (deleted) / sa.child_replaced (rekeyed)
//! ```
//!
//! - **Repeats.** Refusals before a facility is known are counted per
//!   reason in windows of [`STRANGER_WINDOW`]; a facility's failed
//!   attempts, refusals and refused Child SAs per facility in windows of
//!   [`FACILITY_WINDOW`] (a hub-initiated facility that is offline fails
//!   every minute or two: one record when it starts failing, then one an
//!   hour), until its tunnel carries traffic again. The first of a series
//!   is written at once; a window without any closes the series. Keys are
//!   bounded (reasons × facilities), so are the records per window.
//! - **Downs.** An IKE SA that goes down is one record, `sa.ike_down`,
//!   with its reason and the Child SAs that went with it. An older IKE SA
//!   a facility replaced while its new one is up is `sa.ike_replaced`,
//!   not a down: the log never ends on "down" for a facility that is up.
//!   A Child SA that goes alone is `sa.child_down` (reason `deleted`), or
//!   `sa.child_replaced` when a rekey replaced it (with its successor).

use ike::{Event, IkeSaId};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The window over which refusals before a facility is known are
/// counted into one record per reason.
pub(super) const STRANGER_WINDOW: Duration = Duration::from_secs(60);

/// The window over which one facility's repeated failures are counted
/// into one record.
pub(super) const FACILITY_WINDOW: Duration = Duration::from_secs(3600);

/// Sample source addresses kept per summary.
const SAMPLES: usize = 5;

/// One audit record: its event name and details.
pub(super) type Record = (String, Value);

/// What repeats: refusals of strangers by reason, or one kind of failure
/// of one facility.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Stranger(&'static str),
    Facility(String, &'static str),
}

impl Key {
    fn window(&self) -> Duration {
        match self {
            Key::Stranger(_) => STRANGER_WINDOW,
            Key::Facility(..) => FACILITY_WINDOW,
        }
    }
}

struct Series {
    /// The event of the series' first record (the summary is
    /// `<event>.repeated`).
    event: String,
    window_start: Instant,
    from: String,
    until: String,
    /// Occurrences in this window not written as their own record.
    count: u64,
    sources: BTreeSet<String>,
    last_reason: Value,
}

/// The daemon's mapping of IKE events to audit records.
#[derive(Default)]
pub(super) struct AuditMap {
    /// Established IKE SAs and their facility.
    established: HashMap<IkeSaId, String>,
    /// Each facility's newest established IKE SA.
    current: HashMap<String, IkeSaId>,
    /// Child SAs replaced by a rekey (inbound SPI → the new one's), until
    /// they go down.
    rekeyed: HashMap<u32, u32>,
    /// Child SAs reported down in this batch: (IKE SA, facility, in, out).
    children_down: Vec<(IkeSaId, String, u32, u32)>,
    /// Child SAs the hub refused to install (inbound SPI): never up, so
    /// their deletion is no down (`sa.child_refused` said it).
    refused: std::collections::HashSet<u32>,
    series: HashMap<Key, Series>,
}

fn spi(s: u32) -> String {
    format!("{s:08x}")
}

impl AuditMap {
    /// The records an event makes now. `disabled` tells whether a
    /// facility is disabled by the operator.
    pub(super) fn event(
        &mut self,
        event: &Event,
        now: Instant,
        disabled: &dyn Fn(&str) -> bool,
    ) -> Vec<Record> {
        let mut out = Vec::new();
        match event {
            // `drain.facility` records the outcome.
            Event::Redirected { .. } => {}
            Event::IkeSaUp {
                ike_sa,
                peer,
                remote,
                suite,
                initiator,
                remote_behind_nat,
            } => {
                self.established.insert(*ike_sa, peer.clone());
                self.current.insert(peer.clone(), *ike_sa);
                out.push((
                    "sa.ike_up".into(),
                    json!({ "facility": peer, "ike_sa": ike_sa.to_string(), "remote": remote.to_string(), "suite": suite.to_string(), "hub_initiated": initiator, "behind_nat": remote_behind_nat }),
                ));
            }
            Event::ChildSaUp {
                peer,
                child,
                rekey_of,
                ..
            } => {
                match rekey_of {
                    Some(old) => {
                        self.rekeyed.insert(*old, child.spi_in);
                    }
                    // Traffic again: the facility's series of failures ends.
                    None => self.end_facility_series(peer, &mut out),
                }
                out.push((
                    "sa.child_up".into(),
                    json!({
                        "facility": peer,
                        "spi_in": spi(child.spi_in),
                        "spi_out": spi(child.spi_out),
                        "suite": child.suite.to_string(),
                        "local_ts": ike::ts::describe(&child.local_ts),
                        "remote_ts": ike::ts::describe(&child.remote_ts),
                        "rekey_of": rekey_of.map(spi),
                    }),
                ));
            }
            Event::ChildSaDown {
                ike_sa,
                peer,
                spi_in,
                spi_out,
            } => {
                // Held until the batch ends: if its IKE SA goes down too,
                // it is part of that one record.
                self.children_down
                    .push((*ike_sa, peer.clone(), *spi_in, *spi_out));
            }
            Event::IkeSaDown {
                ike_sa,
                peer,
                reason,
            } => {
                let mut children = Vec::new();
                let rekeyed = &mut self.rekeyed;
                self.children_down.retain(|(id, _, i, o)| {
                    if id == ike_sa {
                        rekeyed.remove(i);
                        children.push(json!({ "spi_in": spi(*i), "spi_out": spi(*o) }));
                        false
                    } else {
                        true
                    }
                });
                let established = self.established.remove(ike_sa).is_some();
                let details = json!({ "facility": peer, "ike_sa": ike_sa.to_string(), "reason": reason, "child_sas": children });
                match peer {
                    Some(p) if established => {
                        if self.current.get(p) == Some(ike_sa) {
                            self.current.remove(p);
                            out.push(("sa.ike_down".into(), details));
                        } else {
                            // The facility is up on a newer IKE SA.
                            let mut details = details;
                            details["replaced_by"] = json!(self.current.get(p).map(|id| id.to_string()));
                            out.push(("sa.ike_replaced".into(), details));
                        }
                    }
                    // Never established: an attempt that failed (a
                    // hub-initiated facility that does not answer).
                    Some(p) => self.repeat(
                        Key::Facility(p.clone(), "attempt_failed"),
                        "sa.attempt_failed",
                        details,
                        None,
                        json!(reason),
                        now,
                        &mut out,
                    ),
                    None => self.repeat(
                        Key::Stranger("ike_sa_down"),
                        "sa.ike_down",
                        details,
                        None,
                        json!(reason),
                        now,
                        &mut out,
                    ),
                }
            }
            Event::IkeSaRekeyed {
                old,
                new,
                peer,
                suite,
            } => {
                self.established.remove(old);
                self.established.insert(*new, peer.clone());
                if self.current.get(peer) == Some(old) {
                    self.current.insert(peer.clone(), *new);
                }
                out.push((
                    "sa.ike_rekeyed".into(),
                    json!({ "facility": peer, "old": old.to_string(), "new": new.to_string(), "suite": suite.to_string() }),
                ));
            }
            Event::ChildSaFailed {
                ike_sa,
                peer,
                notify,
                by_peer,
                reason,
            } => self.repeat(
                Key::Facility(peer.clone(), "child_failed"),
                "sa.child_failed",
                json!({ "facility": peer, "ike_sa": ike_sa.to_string(), "notify": notify.to_string(), "refused_by": if *by_peer { "facility" } else { "hub" }, "reason": reason }),
                None,
                json!(format!("{notify}: {reason}")),
                now,
                &mut out,
            ),
            Event::PeerMoved { peer, remote, .. } => out.push((
                "sa.moved".into(),
                json!({ "facility": peer, "remote": remote.to_string() }),
            )),
            Event::Refused {
                remote,
                peer,
                notify,
                reason,
            } => {
                let details = json!({ "facility": peer, "remote": remote.to_string(), "notify": notify.to_string(), "reason": reason });
                let source = Some(remote.ip().to_string());
                let why = json!(format!("{notify}: {reason}"));
                match peer {
                    None => {
                        let label = super::refusals::RefusalReason::of(*notify).name();
                        let event = if *notify == ike::wire::NotifyType::AuthenticationFailed {
                            "refused.authentication"
                        } else {
                            "refused"
                        };
                        let mut details = details;
                        details["refusal"] = json!(label);
                        self.repeat(
                            Key::Stranger(label),
                            event,
                            details,
                            source,
                            why,
                            now,
                            &mut out,
                        );
                    }
                    Some(p) => {
                        let event = if disabled(p) {
                            "refused.facility_disabled"
                        } else if *notify == ike::wire::NotifyType::AuthenticationFailed {
                            "refused.authentication"
                        } else {
                            "refused"
                        };
                        self.repeat(
                            Key::Facility(p.clone(), "refused"),
                            event,
                            details,
                            source,
                            why,
                            now,
                            &mut out,
                        );
                    }
                }
            }
        }
        out
    }

    /// One occurrence of a repeating event: written at once when it
    /// starts a series, else counted into the series' summary.
    #[allow(clippy::too_many_arguments)]
    fn repeat(
        &mut self,
        key: Key,
        event: &str,
        details: Value,
        source: Option<String>,
        reason: Value,
        now: Instant,
        out: &mut Vec<Record>,
    ) {
        let time = crate::registry::now_rfc3339();
        match self.series.get_mut(&key) {
            Some(s) => {
                if s.count == 0 {
                    s.from = time.clone();
                }
                s.count += 1;
                s.until = time;
                s.last_reason = reason;
                if let Some(src) = source {
                    if s.sources.len() < SAMPLES {
                        s.sources.insert(src);
                    }
                }
            }
            None => {
                out.push((event.to_string(), details));
                self.series.insert(
                    key,
                    Series {
                        event: event.to_string(),
                        window_start: now,
                        from: time.clone(),
                        until: time,
                        count: 0,
                        sources: BTreeSet::new(),
                        last_reason: reason,
                    },
                );
            }
        }
    }

    fn summary(key: &Key, s: &Series) -> Record {
        let (facility, what) = match key {
            Key::Stranger(r) => (None, *r),
            Key::Facility(f, w) => (Some(f.clone()), *w),
        };
        (
            format!("{}.repeated", s.event),
            json!({
                "facility": facility,
                "what": what,
                "count": s.count,
                "from": s.from,
                "until": s.until,
                "sources": s.sources,
                "last_reason": s.last_reason,
                "window_secs": key.window().as_secs(),
            }),
        )
    }

    /// A facility carries traffic again: its series end, with a summary
    /// of what was counted and not yet written.
    fn end_facility_series(&mut self, peer: &str, out: &mut Vec<Record>) {
        let keys: Vec<Key> = self
            .series
            .keys()
            .filter(|k| matches!(k, Key::Facility(f, _) if f == peer))
            .cloned()
            .collect();
        for k in keys {
            if let Some(s) = self.series.remove(&k) {
                if s.count > 0 {
                    out.push(Self::summary(&k, &s));
                }
            }
        }
    }

    /// A Child SA the hub refused to install: its `sa.child_up` is not
    /// written (the caller holds it back) and its deletion is no down.
    pub(super) fn child_refused(&mut self, spi_in: u32) {
        self.refused.insert(spi_in);
    }

    /// The records of Child SAs that went down alone in the batch just
    /// applied (their IKE SA lives on).
    pub(super) fn end_of_batch(&mut self) -> Vec<Record> {
        let refused = &mut self.refused;
        std::mem::take(&mut self.children_down)
            .into_iter()
            .filter(|(_, _, i, _)| !refused.remove(i))
            .map(|(_, peer, i, o)| {
                let mut details = json!({ "facility": peer, "spi_in": spi(i), "spi_out": spi(o) });
                match self.rekeyed.remove(&i) {
                    // Its successor carries the traffic: no down.
                    Some(new) => {
                        details["reason"] = json!("rekeyed");
                        details["replaced_by"] = json!(spi(new));
                        ("sa.child_replaced".to_string(), details)
                    }
                    None => {
                        details["reason"] = json!("deleted");
                        ("sa.child_down".to_string(), details)
                    }
                }
            })
            .collect()
    }

    /// Summaries of windows that ended by `now`; a series whose window
    /// passed without a repeat ends.
    pub(super) fn tick(&mut self, now: Instant) -> Vec<Record> {
        let mut out = Vec::new();
        let mut ended = Vec::new();
        for (k, s) in &mut self.series {
            if now.saturating_duration_since(s.window_start) < k.window() {
                continue;
            }
            if s.count == 0 {
                ended.push(k.clone());
            } else {
                out.push(Self::summary(k, s));
                s.count = 0;
                s.sources.clear();
                s.window_start = now;
            }
        }
        for k in ended {
            self.series.remove(&k);
        }
        out
    }

    /// Everything counted and not yet written (at shutdown).
    pub(super) fn finish(&mut self) -> Vec<Record> {
        let mut out = self.end_of_batch();
        for (k, s) in self.series.drain() {
            if s.count > 0 {
                out.push(Self::summary(&k, &s));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ike::wire::NotifyType;
    use std::net::SocketAddr;

    fn refused(remote: &str, peer: Option<&str>, notify: NotifyType) -> Event {
        Event::Refused {
            remote: remote.parse().unwrap(),
            peer: peer.map(str::to_string),
            notify,
            reason: "because".into(),
        }
    }

    fn up(id: u64, peer: &str) -> Event {
        Event::IkeSaUp {
            ike_sa: IkeSaId(id),
            peer: peer.into(),
            remote: "192.0.2.2:4500".parse::<SocketAddr>().unwrap(),
            suite: ike::IkeSuite {
                encr: ike::crypto::Encr::AesGcm16 { bits: 256 },
                prf: ike::crypto::Prf::HmacSha256,
                integ: None,
                ke: ike::wire::KeId::Ecp256,
            },
            initiator: false,
            remote_behind_nat: false,
        }
    }

    fn down(id: u64, peer: &str, reason: &str) -> Event {
        Event::IkeSaDown {
            ike_sa: IkeSaId(id),
            peer: Some(peer.into()),
            reason: reason.into(),
        }
    }

    fn child_down(id: u64, peer: &str, spi_in: u32) -> Event {
        Event::ChildSaDown {
            ike_sa: IkeSaId(id),
            peer: peer.into(),
            spi_in,
            spi_out: spi_in + 1,
        }
    }

    fn no(_: &str) -> bool {
        false
    }

    fn events(records: &[Record]) -> Vec<&str> {
        records.iter().map(|(e, _)| e.as_str()).collect()
    }

    #[test]
    fn a_flood_of_strangers_is_one_record_then_one_summary_per_window() {
        let mut m = AuditMap::default();
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..3000u32 {
            let remote = format!("198.51.100.{}:500", i % 200);
            written.extend(m.event(
                &refused(&remote, None, NotifyType::NoProposalChosen),
                t0,
                &no,
            ));
            written.extend(m.end_of_batch());
        }
        assert_eq!(events(&written), ["refused"]);
        assert_eq!(written[0].1["refusal"], "no_proposal_chosen");
        assert!(m.tick(t0 + Duration::from_secs(59)).is_empty());
        let s = m.tick(t0 + STRANGER_WINDOW);
        assert_eq!(events(&s), ["refused.repeated"]);
        assert_eq!(s[0].1["count"], 2999);
        assert_eq!(s[0].1["what"], "no_proposal_chosen");
        assert_eq!(s[0].1["sources"].as_array().unwrap().len(), SAMPLES);
        // A quiet window ends the series; the next one starts a new one.
        assert!(m.tick(t0 + 2 * STRANGER_WINDOW).is_empty());
        let again = m.event(
            &refused("198.51.100.1:500", None, NotifyType::NoProposalChosen),
            t0 + 3 * STRANGER_WINDOW,
            &no,
        );
        assert_eq!(events(&again), ["refused"]);
        // Another reason is its own series.
        let other = m.event(
            &refused("198.51.100.1:500", None, NotifyType::AuthenticationFailed),
            t0 + 3 * STRANGER_WINDOW,
            &no,
        );
        assert_eq!(events(&other), ["refused.authentication"]);
        assert_eq!(other[0].1["refusal"], "unknown_identity");
    }

    #[test]
    fn an_offline_facility_is_one_record_until_it_comes_back() {
        let mut m = AuditMap::default();
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..20 {
            let t = t0 + Duration::from_secs(90 * i);
            written.extend(m.event(&down(100 + i, "kyoto", "no answer"), t, &no));
            written.extend(m.tick(t));
        }
        assert_eq!(events(&written), ["sa.attempt_failed"]);
        assert_eq!(written[0].1["reason"], "no answer");
        // An hour on: one summary.
        let s = m.tick(t0 + FACILITY_WINDOW);
        assert_eq!(events(&s), ["sa.attempt_failed.repeated"]);
        assert_eq!(s[0].1["facility"], "kyoto");
        // It comes back: the rest is summed up before it is up.
        m.event(&down(200, "kyoto", "no answer"), t0 + FACILITY_WINDOW, &no);
        m.event(&up(201, "kyoto"), t0 + FACILITY_WINDOW, &no);
        let back = m.event(&child_up_event("kyoto", 7, None), t0 + FACILITY_WINDOW, &no);
        assert_eq!(events(&back), ["sa.attempt_failed.repeated", "sa.child_up"]);
        assert_eq!(back[0].1["count"], 1);
        // Failing again later is a new first record.
        m.event(&down(201, "kyoto", "no answer"), t0 + FACILITY_WINDOW, &no);
        let again = m.event(&down(202, "kyoto", "no answer"), t0 + FACILITY_WINDOW, &no);
        assert_eq!(events(&again), ["sa.attempt_failed"]);
    }

    fn child_up_event(peer: &str, spi_in: u32, rekey_of: Option<u32>) -> Event {
        let suite = ike::EspSuite {
            encr: ike::crypto::Encr::AesGcm16 { bits: 256 },
            integ: None,
            ke: None,
            esn: false,
        };
        let key = || zeroize::Zeroizing::new(Vec::new());
        Event::ChildSaUp {
            ike_sa: IkeSaId(1),
            peer: peer.into(),
            child: ike::ChildSaInfo {
                spi_in,
                spi_out: spi_in + 1,
                keys: ike::ChildKeys {
                    encr_in: key(),
                    integ_in: key(),
                    encr_out: key(),
                    integ_out: key(),
                },
                suite,
                local_ts: Vec::new(),
                remote_ts: Vec::new(),
                remote: "192.0.2.2:4500".parse().unwrap(),
                encap: true,
            },
            rekey_of,
            answered: false,
        }
    }

    #[test]
    fn one_sa_down_is_one_record_and_a_replaced_one_is_no_down() {
        let mut m = AuditMap::default();
        let t = Instant::now();
        m.event(&up(1, "kyoto"), t, &no);
        // Deleted by the facility: its Child SAs and the IKE SA, one record.
        let mut r = m.event(&child_down(1, "kyoto", 300), t, &no);
        r.extend(m.event(&child_down(1, "kyoto", 400), t, &no));
        r.extend(m.event(&down(1, "kyoto", "deleted by the facility"), t, &no));
        r.extend(m.end_of_batch());
        assert_eq!(events(&r), ["sa.ike_down"]);
        assert_eq!(r[0].1["reason"], "deleted by the facility");
        assert_eq!(r[0].1["child_sas"].as_array().unwrap().len(), 2);

        // A facility reconnects: the new IKE SA is up before the old one
        // goes; the old one is "replaced", and the log ends on up.
        m.event(&up(2, "kyoto"), t, &no);
        m.event(&up(3, "kyoto"), t, &no);
        let mut r = m.event(&child_down(2, "kyoto", 500), t, &no);
        r.extend(m.event(
            &down(2, "kyoto", "replaced by a new IKE SA of the same facility"),
            t,
            &no,
        ));
        r.extend(m.end_of_batch());
        assert_eq!(events(&r), ["sa.ike_replaced"]);
        assert_eq!(r[0].1["replaced_by"], IkeSaId(3).to_string());

        // A rekeyed Child SA going is not a down of the facility.
        m.event(&child_up_event("kyoto", 600, Some(500)), t, &no);
        m.event(&child_down(3, "kyoto", 500), t, &no);
        let r = m.end_of_batch();
        assert_eq!(events(&r), ["sa.child_replaced"]);
        assert_eq!(r[0].1["reason"], "rekeyed");
        assert_eq!(r[0].1["replaced_by"], "00000258");
        m.event(&child_down(3, "kyoto", 600), t, &no);
        let r = m.end_of_batch();
        assert_eq!(events(&r), ["sa.child_down"]);
        assert_eq!(r[0].1["reason"], "deleted");

        // A rekeyed Child SA that goes with its IKE SA leaves nothing behind.
        m.event(&child_up_event("kyoto", 700, Some(600)), t, &no);
        m.event(&child_down(3, "kyoto", 600), t, &no);
        m.event(&child_down(3, "kyoto", 700), t, &no);
        let r = m.event(&down(3, "kyoto", "deleted by the facility"), t, &no);
        assert_eq!(events(&r), ["sa.ike_down"]);
        assert!(m.end_of_batch().is_empty());
        assert!(m.rekeyed.is_empty() && m.established.is_empty() && m.current.is_empty());
    }

    #[test]
    fn a_child_sa_the_hub_refused_is_no_down_when_it_is_deleted() {
        let mut m = AuditMap::default();
        let t = Instant::now();
        m.event(&up(1, "kyoto"), t, &no);
        m.event(&child_up_event("kyoto", 800, None), t, &no);
        m.child_refused(800);
        m.event(&child_down(1, "kyoto", 800), t, &no);
        assert!(m.end_of_batch().is_empty());
        assert!(m.refused.is_empty());
        // Another Child SA of the facility deleted alone still is a down.
        m.event(&child_down(1, "kyoto", 900), t, &no);
        assert_eq!(events(&m.end_of_batch()), ["sa.child_down"]);
    }

    #[test]
    fn a_disabled_facility_is_named_as_such_and_shutdown_writes_what_was_counted() {
        let mut m = AuditMap::default();
        let t = Instant::now();
        let disabled = |p: &str| p == "osaka";
        let r = m.event(
            &refused(
                "192.0.2.9:500",
                Some("osaka"),
                NotifyType::AuthenticationFailed,
            ),
            t,
            &disabled,
        );
        assert_eq!(events(&r), ["refused.facility_disabled"]);
        for _ in 0..5 {
            assert!(m
                .event(
                    &refused(
                        "192.0.2.9:500",
                        Some("osaka"),
                        NotifyType::AuthenticationFailed
                    ),
                    t,
                    &disabled
                )
                .is_empty());
        }
        let last = m.finish();
        assert_eq!(events(&last), ["refused.facility_disabled.repeated"]);
        assert_eq!(last[0].1["count"], 5);
        assert_eq!(last[0].1["sources"][0], "192.0.2.9");
    }
}
