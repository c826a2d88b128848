//! What the status page shows beyond the status report: each facility's
//! traffic over the last hours and the hub's recent events, kept in
//! memory with fixed bounds.
//!
//! ```text
//!  tick (1 s) ── every SAMPLE_EVERY ──▶ Traffic ring per facility (SAMPLES)
//!  audit records (record_mapped) ────▶ Events ring (EVENTS)
//!                         both ──▶ Arc<Mutex<History>> ──▶ web::serve
//! ```
//!
//! The daemon writes, the web server reads, each under the lock for a
//! copy: no request holds it while rendering. Memory is bounded: at most
//! [`SAMPLES`] samples of 24 bytes per registered facility (about 8.6 KB,
//! 8.6 MB for a thousand facilities) and [`EVENTS`] events; a removed
//! facility's samples are dropped at the next sample.

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One traffic sample per minute.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// Six hours of samples.
pub(crate) const SAMPLES: usize = 360;
/// Recent events kept for the page.
pub(crate) const EVENTS: usize = 200;
/// The longest detail text kept per event (characters).
const DETAIL_MAX: usize = 300;

/// Traffic through one facility's tunnel in one sample period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Sample {
    /// End of the period (seconds since the epoch).
    pub(crate) at: i64,
    /// Inner bytes received from the facility in the period.
    pub(crate) bytes_in: u64,
    /// Inner bytes sent to the facility in the period.
    pub(crate) bytes_out: u64,
}

/// One event the page lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Event {
    /// When (seconds since the epoch).
    pub(crate) at: i64,
    /// The facility, when known.
    pub(crate) facility: Option<String>,
    /// The audit record's kind (`sa.ike_up`, `refused.authentication`, …).
    pub(crate) kind: String,
    /// What the record says (reason, remote address), shortened.
    pub(crate) detail: String,
}

#[derive(Debug, Default)]
struct Traffic {
    samples: VecDeque<Sample>,
    /// When the last sample was taken and the counters then
    /// (cumulative), to take differences.
    last: Option<(i64, u64, u64)>,
}

/// Traffic history and recent events.
#[derive(Debug, Default)]
pub(crate) struct History {
    traffic: HashMap<String, Traffic>,
    events: VecDeque<Event>,
}

/// Shared between the daemon (writer) and the web server (reader).
pub(crate) type Shared = Arc<Mutex<History>>;

impl History {
    /// Records the cumulative counters of every facility at `at`:
    /// each gets a sample of what passed since the previous one (none
    /// the first time), facilities not in `counters` are forgotten.
    pub(crate) fn sample(&mut self, at: i64, counters: &[(String, u64, u64)]) {
        self.traffic
            .retain(|name, _| counters.iter().any(|(n, _, _)| n == name));
        for (name, bytes_in, bytes_out) in counters {
            let t = self.traffic.entry(name.clone()).or_default();
            if let Some((_, last_in, last_out)) = t.last {
                if t.samples.len() == SAMPLES {
                    t.samples.pop_front();
                }
                // Counters restart from zero when a facility's SA
                // counters are recreated; such a period counts from zero.
                t.samples.push_back(Sample {
                    at,
                    bytes_in: bytes_in.checked_sub(last_in).unwrap_or(*bytes_in),
                    bytes_out: bytes_out.checked_sub(last_out).unwrap_or(*bytes_out),
                });
            }
            t.last = Some((at, *bytes_in, *bytes_out));
        }
    }

    /// A facility's samples, oldest first, and when the last sample was
    /// taken with the counters then (for the rate since).
    pub(crate) fn traffic(&self, name: &str) -> (Vec<Sample>, Option<(i64, u64, u64)>) {
        self.traffic.get(name).map_or((Vec::new(), None), |t| {
            (t.samples.iter().copied().collect(), t.last)
        })
    }

    /// Adds an event from an audit record (`details` as the audit log
    /// has it), dropping the oldest beyond [`EVENTS`].
    pub(crate) fn event(&mut self, at: i64, kind: &str, details: &serde_json::Value) {
        let facility = details["facility"].as_str().map(str::to_string);
        let mut detail = String::new();
        if let Some(map) = details.as_object() {
            for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "facility") {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => continue,
                    other => other.to_string(),
                };
                if !detail.is_empty() {
                    detail.push_str(", ");
                }
                detail.push_str(k);
                detail.push('=');
                detail.push_str(&v);
            }
        }
        if detail.chars().count() > DETAIL_MAX {
            detail = detail.chars().take(DETAIL_MAX).collect::<String>() + "…";
        }
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at,
            facility,
            kind: kind.to_string(),
            detail,
        });
    }

    /// The recent events, newest first.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn samples_are_differences_and_bounded() {
        let mut h = History::default();
        h.sample(0, &[("kyoto".into(), 100, 10)]);
        assert!(
            h.traffic("kyoto").0.is_empty(),
            "no period before the first"
        );
        for i in 1..=(SAMPLES as i64 + 10) {
            h.sample(i * 60, &[("kyoto".into(), 100 + i as u64 * 1000, 10)]);
        }
        let (s, last) = h.traffic("kyoto");
        assert_eq!(s.len(), SAMPLES);
        assert_eq!(s[0].at, 11 * 60, "the oldest were dropped");
        assert!(s.iter().all(|s| s.bytes_in == 1000 && s.bytes_out == 0));
        assert_eq!(
            last,
            Some((
                (SAMPLES as i64 + 10) * 60,
                100 + (SAMPLES as u64 + 10) * 1000,
                10
            ))
        );
        // A counter that went back counts from zero; a removed facility
        // is forgotten.
        h.sample(99_999, &[("kyoto".into(), 5, 10)]);
        assert_eq!(h.traffic("kyoto").0.last().unwrap().bytes_in, 5);
        h.sample(100_000, &[]);
        assert_eq!(h.traffic("kyoto"), (Vec::new(), None));
    }

    #[test]
    fn events_are_bounded_newest_first() {
        let mut h = History::default();
        for i in 0..(EVENTS as i64 + 5) {
            h.event(
                i,
                "sa.ike_down",
                &json!({ "facility": "kyoto", "reason": "x".repeat(1000), "n": i }),
            );
        }
        let e = h.events();
        assert_eq!(e.len(), EVENTS);
        assert_eq!(e[0].at, EVENTS as i64 + 4);
        assert_eq!(e[0].facility.as_deref(), Some("kyoto"));
        assert!(e[0].detail.starts_with("n="), "{}", e[0].detail);
        assert!(e[0].detail.chars().count() <= DETAIL_MAX + 1);
    }
}
