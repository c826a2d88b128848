//! The status page's content: a [`View`] built from the status report and
//! the history, rendered by minijinja templates (`templates/*.html`,
//! HTML-autoescaped) with text from `cli/locales/web.yml`.

use crate::daemon::history::{self, Sample};
use crate::daemon::status::{FacilityState, HubStatus};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The span the graphs show.
const WINDOW: i64 = history::SAMPLES as i64 * history::SAMPLE_EVERY.as_secs() as i64;
/// Graph size in SVG user units.
const GRAPH_W: f64 = 240.0;
const GRAPH_H: f64 = 40.0;

/// Every label the templates use (`web.KEY` in web.yml).
const LABELS: &[&str] = &[
    "title",
    "hub",
    "started",
    "updated",
    "facilities",
    "summary_up",
    "summary_degraded",
    "summary_down",
    "summary_connecting",
    "summary_disabled",
    "col_state",
    "col_since",
    "col_name",
    "col_identity",
    "col_address",
    "col_suite",
    "col_traffic",
    "col_error",
    "col_time",
    "col_event",
    "col_detail",
    "traffic_in",
    "traffic_out",
    "peak",
    "events",
    "no_facilities",
    "no_events",
    "other_language",
    "stale",
    "unknown_facility",
    "graph_hours",
];

fn text(key: &str, lang: &str) -> String {
    rust_i18n::t!(key, locale = lang).into_owned()
}

/// A state's words in `lang`.
fn state_text(state: FacilityState, lang: &str) -> String {
    text(&format!("web.state_{}", state.as_str()), lang)
}

/// An audit record kind in `lang` (`sa.ike_up` → `web.event_sa_ike_up`),
/// the kind itself when it has no translation.
fn event_text(kind: &str, lang: &str) -> String {
    let key = format!("web.event_{}", kind.replace('.', "_"));
    let t = text(&key, lang);
    if t == key {
        kind.to_string()
    } else {
        t
    }
}

/// A rate in bits per second, as people read it.
fn rate(bits: f64) -> String {
    let (v, unit) = if bits >= 1e9 {
        (bits / 1e9, "Gbit/s")
    } else if bits >= 1e6 {
        (bits / 1e6, "Mbit/s")
    } else if bits >= 1e3 {
        (bits / 1e3, "kbit/s")
    } else {
        return format!("{bits:.0} bit/s");
    };
    format!("{v:.1} {unit}")
}

/// One facility's traffic graph: SVG polyline points (numbers only).
#[derive(Debug, Default, Serialize)]
struct Graph {
    points_in: String,
    points_out: String,
    peak: String,
    now_in: String,
    now_out: String,
}

impl Graph {
    /// From the samples of the last [`WINDOW`], plus the rate since the
    /// last sample from the counters now.
    fn new(
        samples: &[Sample],
        last: Option<(i64, u64, u64)>,
        counters: (u64, u64),
        now: i64,
    ) -> Graph {
        let period = history::SAMPLE_EVERY.as_secs_f64();
        let mut points: Vec<(i64, f64, f64)> = samples
            .iter()
            .filter(|s| s.at > now - WINDOW)
            .map(|s| {
                (
                    s.at,
                    s.bytes_in as f64 * 8.0 / period,
                    s.bytes_out as f64 * 8.0 / period,
                )
            })
            .collect();
        let mut current = (0.0, 0.0);
        if let Some((at, b_in, b_out)) = last {
            let secs = (now - at).max(1) as f64;
            current = (
                counters.0.saturating_sub(b_in) as f64 * 8.0 / secs,
                counters.1.saturating_sub(b_out) as f64 * 8.0 / secs,
            );
            if now > at {
                points.push((now, current.0, current.1));
            }
        }
        let peak = points.iter().map(|p| p.1.max(p.2)).fold(0.0_f64, f64::max);
        let scale = if peak > 0.0 { GRAPH_H / peak } else { 0.0 };
        let xy = |at: i64, v: f64| {
            let x = GRAPH_W * ((at - (now - WINDOW)) as f64 / WINDOW as f64);
            format!("{x:.1},{:.1}", GRAPH_H - v * scale)
        };
        let line = |pick: fn(&(i64, f64, f64)) -> f64| {
            points
                .iter()
                .map(|p| xy(p.0, pick(p)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        Graph {
            points_in: line(|p| p.1),
            points_out: line(|p| p.2),
            peak: rate(peak),
            now_in: rate(current.0),
            now_out: rate(current.1),
        }
    }
}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    state: &'static str,
    state_text: String,
    since: Option<String>,
    identity: String,
    address: Option<String>,
    suite: Option<String>,
    child_suites: Vec<String>,
    graph: Graph,
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct EventRow {
    time: String,
    facility: Option<String>,
    kind: String,
    text: String,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Count {
    state: &'static str,
    label: String,
    count: usize,
}

/// Everything one rendering of the page shows.
#[derive(Debug, Serialize)]
pub(super) struct View {
    lang: &'static str,
    other_lang: &'static str,
    t: BTreeMap<&'static str, String>,
    hub_started: String,
    updated: String,
    summary: Vec<Count>,
    facilities: Vec<Row>,
    events: Vec<EventRow>,
}

impl View {
    pub(super) fn new(status: &HubStatus, history: &history::Shared, lang: &'static str) -> View {
        let now = crate::certs::unix_now();
        let (traffic, events): (Vec<_>, _) = {
            let h = history.lock().unwrap_or_else(|e| e.into_inner());
            (
                status
                    .facilities
                    .iter()
                    .map(|f| h.traffic(&f.name))
                    .collect(),
                h.events(),
            )
        };
        let facilities = status
            .facilities
            .iter()
            .zip(traffic)
            .map(|(f, (samples, last))| Row {
                name: f.name.clone(),
                state: f.state.as_str(),
                state_text: state_text(f.state, lang),
                since: f.since.as_deref().map(crate::i18n::local_time_rfc3339),
                identity: f.id.clone(),
                address: f.remote.map(|r| r.ip().to_string()),
                suite: f.ike_suite.clone(),
                child_suites: f.child_sas.iter().map(|c| c.suite.clone()).collect(),
                graph: Graph::new(&samples, last, (f.bytes_in, f.bytes_out), now),
                last_error: f.last_error.clone(),
            })
            .collect();
        let states = [
            FacilityState::Up,
            FacilityState::Degraded,
            FacilityState::Connecting,
            FacilityState::Down,
            FacilityState::Disabled,
        ];
        let summary = states
            .iter()
            .map(|s| Count {
                state: s.as_str(),
                label: text(&format!("web.summary_{}", s.as_str()), lang),
                count: status.facilities.iter().filter(|f| f.state == *s).count(),
            })
            .collect();
        let events = events
            .into_iter()
            .map(|e| EventRow {
                time: crate::i18n::local_time(e.at),
                text: event_text(&e.kind, lang),
                facility: e.facility,
                kind: e.kind,
                detail: e.detail,
            })
            .collect();
        View {
            lang,
            other_lang: if lang == "ja" { "en" } else { "ja" },
            t: LABELS
                .iter()
                .map(|k| (*k, text(&format!("web.{k}"), lang)))
                .collect(),
            hub_started: crate::i18n::local_time_rfc3339(&status.hub.started),
            updated: crate::i18n::local_time(now),
            summary,
            facilities,
            events,
        }
    }
}

fn env() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        // `.html` templates are autoescaped (minijinja's default).
        for (name, source) in [
            ("page.html", include_str!("templates/page.html")),
            ("fragment.html", include_str!("templates/fragment.html")),
        ] {
            if let Err(e) = env.add_template(name, source) {
                // The templates are part of the binary; the unit tests
                // render both, so this is never reached in a release.
                tracing::error!("status page template {name}: {e}");
            }
        }
        env
    })
}

fn render(name: &str, view: &View) -> Result<String> {
    let tmpl = env().get_template(name)?;
    Ok(tmpl.render(view)?)
}

/// The whole page.
pub(super) fn render_page(view: &View) -> Result<String> {
    render("page.html", view)
}

/// The part the page's script refreshes.
pub(super) fn render_fragment(view: &View) -> Result<String> {
    render("fragment.html", view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::status::{ChildSaStatus, FacilityStatus};

    fn status() -> HubStatus {
        HubStatus {
            facilities: vec![
                FacilityStatus {
                    name: "kyoto".into(),
                    id: "CN=<script>alert(1)</script>, O=\"Kyoto\" & Sons".into(),
                    state: FacilityState::Up,
                    since: Some("2026-11-30T00:00:00Z".into()),
                    remote: Some("192.0.2.7:4500".parse().unwrap()),
                    ike_suite: Some("aes256gcm16-prfsha256-ecp256".into()),
                    child_sas: vec![ChildSaStatus {
                        suite: "aes256gcm16".into(),
                        ..ChildSaStatus::default()
                    }],
                    bytes_in: 10_000,
                    last_error: Some("<img src=x onerror=alert(2)>".into()),
                    ..FacilityStatus::default()
                },
                FacilityStatus {
                    name: "osaka".into(),
                    id: "osaka.example".into(),
                    state: FacilityState::Down,
                    ..FacilityStatus::default()
                },
            ],
            ..HubStatus::default()
        }
    }

    /// Identities, errors and event details come from the registry and
    /// from facilities: markup in them is shown as text, never run.
    #[test]
    fn hostile_text_is_escaped() {
        let history = history::Shared::default();
        history.lock().unwrap().event(
            1_796_000_000,
            "refused",
            &serde_json::json!({ "identity": "<script>alert(3)</script>", "remote": "198.51.100.1" }),
        );
        for lang in ["en", "ja"] {
            let view = View::new(&status(), &history, lang);
            for html in [render_page(&view).unwrap(), render_fragment(&view).unwrap()] {
                assert!(!html.contains("<script>alert"), "{html}");
                assert!(!html.contains("<img"), "{html}");
                assert!(
                    html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
                    "{html}"
                );
                assert!(
                    html.contains("&lt;img src=x onerror=alert(2)&gt;"),
                    "{html}"
                );
                assert!(
                    html.contains("&lt;script&gt;alert(3)&lt;&#x2f;script&gt;"),
                    "{html}"
                );
                assert!(html.contains("&amp; Sons"), "{html}");
                assert!(
                    html.contains("data-facility=\"kyoto\" data-state=\"up\""),
                    "{html}"
                );
                assert!(
                    html.contains("data-facility=\"osaka\" data-state=\"down\""),
                    "{html}"
                );
            }
            let page = render_page(&view).unwrap();
            // No inline script (the CSP forbids it): only the file.
            assert_eq!(page.matches("<script").count(), 1, "{page}");
            assert!(page.contains("<script src=\"/static/status.js\" defer></script>"));
            assert!(page.contains(&format!("<html lang=\"{lang}\">")));
        }
    }

    #[test]
    fn both_languages_have_every_label() {
        let keys: Vec<String> = LABELS
            .iter()
            .map(|k| format!("web.{k}"))
            .chain(
                ["up", "down", "connecting", "degraded", "disabled"]
                    .iter()
                    .flat_map(|s| [format!("web.state_{s}"), format!("web.summary_{s}")]),
            )
            .collect();
        for lang in crate::i18n::LANGUAGES {
            for k in &keys {
                assert_ne!(&text(k, lang), k, "{lang} lacks {k}");
            }
        }
        assert_eq!(state_text(FacilityState::Up, "ja"), "接続");
        assert_eq!(event_text("sa.ike_up", "en"), "IKE SA up");
        assert_eq!(event_text("sa.something_new", "ja"), "sa.something_new");
        let view = View::new(&status(), &history::Shared::default(), "ja");
        let page = render_page(&view).unwrap();
        assert!(page.contains("href=\"?lang=en\""), "{page}");
        assert!(page.contains("切断"), "{page}");
    }

    #[test]
    fn graphs_scale_to_their_peak() {
        let now = 1_796_000_000;
        let samples = [
            Sample {
                at: now - 120,
                bytes_in: 7_500,
                bytes_out: 0,
            },
            Sample {
                at: now - 60,
                bytes_in: 15_000,
                bytes_out: 750,
            },
        ];
        // 15 000 bytes a minute is 2 kbit/s; since the last sample, 30 s
        // of 3 750 bytes is 1 kbit/s.
        let g = Graph::new(&samples, Some((now - 30, 100, 0)), (3_850, 0), now);
        assert_eq!(g.peak, "2.0 kbit/s");
        assert_eq!(g.now_in, "1.0 kbit/s");
        assert_eq!(g.points_in, "238.7,20.0 239.3,0.0 240.0,20.0");
        assert_eq!(g.points_out.split(' ').count(), 3);
        assert_eq!(rate(999.0), "999 bit/s");
        assert_eq!(rate(1.25e9), "1.2 Gbit/s");
        // Nothing yet: empty lines, no division by zero.
        let g = Graph::new(&[], None, (0, 0), now);
        assert_eq!((g.points_in.as_str(), g.peak.as_str()), ("", "0 bit/s"));
    }
}
