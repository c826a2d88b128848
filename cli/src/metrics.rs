//! The Prometheus text at `/metrics` of the hub's HTTP server
//! (`serve --http ADDR`, [`crate::web`]), rendered from the
//! same snapshot as `renkei status --json`, plus what only the state
//! directory knows (certificate expiry).
//!
//! The exposition text is written by the `prometheus` crate (a fresh
//! registry per scrape, filled from the snapshot), which escapes label
//! values as the format requires: a facility's identity may be a
//! distinguished name with quotes and backslashes in it.

use crate::daemon::status::{FacilityState, FacilityStatus, HubStatus};
use crate::registry::{CertRecord, Registry};
use crate::state::StateDir;
use anyhow::{Context, Result};
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, TextEncoder};
use std::collections::BTreeMap;

/// The git commit the binary was built from (`build.rs`), or "unknown".
pub(crate) const GIT_COMMIT: &str = env!("RENKEI_GIT_COMMIT");

/// The end of 2030 (2031-01-01T00:00:00Z), after which MODP-2048 (112-bit
/// security) no longer meets the CRYPTREC criteria.
const MODP2048_DEADLINE: i64 = 1_924_992_000;

/// Certificate expiry the hub knows: its CA's, its own, and the newest
/// unrevoked certificate it issued to each facility.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CertExpiry {
    /// The CA certificate's notAfter (seconds since the epoch).
    pub(crate) ca: Option<i64>,
    /// The hub certificate's notAfter.
    pub(crate) hub: Option<i64>,
    /// Each facility's newest unrevoked certificate's notAfter.
    pub(crate) facilities: BTreeMap<String, i64>,
}

impl CertExpiry {
    /// Reads the CA certificate and the registry's certificate records.
    /// A state directory without a CA (pre-shared keys only) has none.
    pub(crate) fn read(state: &StateDir) -> Result<CertExpiry> {
        let mut out = CertExpiry::default();
        let ca_path = state.ca_cert();
        if ca_path.exists() {
            let text = std::fs::read_to_string(&ca_path)
                .with_context(|| format!("reading {}", ca_path.display()))?;
            let block = pem::parse(text.as_bytes())
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca_path.display()))?;
            let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca_path.display()))?;
            out.ca = Some(cert.validity().not_after.timestamp());
        }
        let reg = Registry::open(state)?;
        out.add_records(&reg.certs()?);
        Ok(out)
    }

    fn add_records(&mut self, records: &[CertRecord]) {
        for c in records.iter().filter(|c| c.revoked.is_none()) {
            let slot = if c.name == crate::certs::HUB_CERT_NAME {
                &mut self.hub
            } else {
                match self.facilities.get_mut(&c.name) {
                    Some(t) => {
                        *t = (*t).max(c.not_after);
                        continue;
                    }
                    None => {
                        self.facilities.insert(c.name.clone(), c.not_after);
                        continue;
                    }
                }
            };
            *slot = Some(slot.map_or(c.not_after, |t| t.max(c.not_after)));
        }
    }
}

/// Seconds since the epoch of an RFC 3339 time, as `status` writes them.
fn unix_time(rfc3339: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// The key exchange group of a negotiated IKE suite
/// (`aes256gcm16-prfsha256-ecp256` → `ecp256`).
fn ke_group(suite: &str) -> Option<&str> {
    suite.rsplit('-').next().filter(|g| !g.is_empty())
}

/// One scrape's registry: families are registered as they are declared.
struct Families(prometheus::Registry);

impl Families {
    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
        let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(vec.clone()))?;
        Ok(vec)
    }

    fn float_gauge(&self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec> {
        let vec = GaugeVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(vec.clone()))?;
        Ok(vec)
    }

    /// A counter family; the values are the daemon's own monotonic
    /// counters, copied into this scrape's fresh registry.
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
        let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(vec.clone()))?;
        Ok(vec)
    }
}

/// A per-facility counter read from the status report.
type Field = fn(&FacilityStatus) -> u64;

const STATES: [FacilityState; 5] = [
    FacilityState::Down,
    FacilityState::Connecting,
    FacilityState::Up,
    FacilityState::Degraded,
    FacilityState::Disabled,
];

/// Renders the status report and certificate expiry in the Prometheus
/// text format (0.0.4).
pub(crate) fn render(status: &HubStatus, certs: &CertExpiry) -> Result<String> {
    let m = Families(prometheus::Registry::new());
    let facilities = &status.facilities;

    m.gauge(
        "renkei_build_info",
        "Always 1; the version and git commit of the running binary.",
        &["version", "git"],
    )?
    .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_COMMIT])
    .set(1);

    let up = m.gauge(
        "renkei_facility_up",
        "1 while a Child SA of the facility carries traffic (0 when down, connecting, degraded or disabled).",
        &["facility"],
    )?;
    let enabled = m.gauge(
        "renkei_facility_enabled",
        "1 for an enabled facility, 0 for one disabled by the operator (peer disable).",
        &["facility"],
    )?;
    let state = m.gauge(
        "renkei_facility_state",
        "1 for the facility's current state (down, connecting, up, degraded, disabled), 0 for the others.",
        &["facility", "state"],
    )?;
    let info = m.gauge(
        "renkei_facility_info",
        "Always 1; the facility's IKE identity.",
        &["facility", "identity"],
    )?;
    let last_heard = m.float_gauge(
        "renkei_facility_last_heard_timestamp_seconds",
        "When the facility was last heard from (seconds since the epoch); absent before it ever was.",
        &["facility"],
    )?;
    let ke = m.gauge(
        "renkei_facility_ike_ke_group",
        "Always 1 while the facility has an IKE SA; the key exchange group it negotiated.",
        &["facility", "group"],
    )?;
    for f in facilities {
        let name = f.name.as_str();
        up.with_label_values(&[name])
            .set(i64::from(f.state == FacilityState::Up));
        enabled
            .with_label_values(&[name])
            .set(i64::from(f.state != FacilityState::Disabled));
        for s in STATES {
            state
                .with_label_values(&[name, s.as_str()])
                .set(i64::from(f.state == s));
        }
        info.with_label_values(&[name, f.id.as_str()]).set(1);
        if let Some(t) = f.last_heard.as_deref().and_then(unix_time) {
            last_heard.with_label_values(&[name]).set(t);
        }
        let has_ike_sa = matches!(f.state, FacilityState::Up | FacilityState::Degraded);
        if let Some(group) = f
            .ike_suite
            .as_deref()
            .and_then(ke_group)
            .filter(|_| has_ike_sa)
        {
            ke.with_label_values(&[name, group]).set(1);
        }
    }
    m.gauge(
        "renkei_ke_group_deadline_timestamp_seconds",
        "When a key exchange group stops meeting the CRYPTREC criteria (seconds since the epoch): MODP-2048 at the end of 2030.",
        &["group"],
    )?
    .with_label_values(&["modp2048"])
    .set(MODP2048_DEADLINE);

    // Expiry as a timestamp, as Prometheus names units (seconds): days
    // left is `(… - time()) / 86400` in a query, as the alert rules do.
    let hub_certs = m.gauge(
        "renkei_hub_certificate_expiry_timestamp_seconds",
        "When the hub's CA certificate (certificate=\"ca\") or its own certificate (certificate=\"hub\") expires (notAfter, seconds since the epoch).",
        &["certificate"],
    )?;
    for (which, not_after) in [("ca", certs.ca), ("hub", certs.hub)] {
        if let Some(t) = not_after {
            hub_certs.with_label_values(&[which]).set(t);
        }
    }
    let facility_certs = m.gauge(
        "renkei_facility_certificate_expiry_timestamp_seconds",
        "When the newest unrevoked certificate the hub issued to the facility expires (notAfter, seconds since the epoch); absent for a facility without one.",
        &["facility"],
    )?;
    for f in facilities {
        if let Some(t) = certs.facilities.get(&f.name) {
            facility_certs.with_label_values(&[f.name.as_str()]).set(*t);
        }
    }

    let bytes: [(&str, Field); 2] = [("in", |f| f.bytes_in), ("out", |f| f.bytes_out)];
    let packets: [(&str, Field); 2] = [("in", |f| f.packets_in), ("out", |f| f.packets_out)];
    for (metric, help, fields) in [
        (
            "renkei_facility_bytes_total",
            "Inner bytes through the tunnel.",
            bytes,
        ),
        (
            "renkei_facility_packets_total",
            "Packets through the tunnel.",
            packets,
        ),
    ] {
        let c = m.counter(metric, help, &["facility", "direction"])?;
        for f in facilities {
            for (direction, field) in fields {
                c.with_label_values(&[f.name.as_str(), direction])
                    .inc_by(field(f));
            }
        }
    }
    let drops = m.counter(
        "renkei_facility_drops_total",
        "Packets dropped, by reason.",
        &["facility", "reason"],
    )?;
    for f in facilities {
        for reason in esp::DropReason::ALL {
            drops
                .with_label_values(&[f.name.as_str(), reason.name()])
                .inc_by(f.drops.count(reason));
        }
    }
    let counters: [(&str, &str, Field); 2] = [
        (
            "renkei_facility_handshakes_total",
            "IKE SAs established.",
            |f| f.handshakes,
        ),
        (
            "renkei_facility_auth_failures_total",
            "Failed authentications.",
            |f| f.auth_failures,
        ),
    ];
    for (metric, help, field) in counters {
        let c = m.counter(metric, help, &["facility"])?;
        for f in facilities {
            c.with_label_values(&[f.name.as_str()]).inc_by(field(f));
        }
    }
    let rekeys = m.counter(
        "renkei_facility_rekeys_total",
        "Rekeys, by kind of SA.",
        &["facility", "kind"],
    )?;
    for f in facilities {
        for (kind, count) in [("child", f.child_rekeys), ("ike", f.ike_rekeys)] {
            rekeys
                .with_label_values(&[f.name.as_str(), kind])
                .inc_by(count);
        }
    }
    let unattributed = m.counter(
        "renkei_unattributed_drops_total",
        "Packets dropped before a facility was known, by reason.",
        &["reason"],
    )?;
    for reason in esp::DropReason::ALL {
        unattributed
            .with_label_values(&[reason.name()])
            .inc_by(status.hub.unattributed_drops.count(reason));
    }
    let refused = m.counter(
        "renkei_refused_total",
        "IKE attempts refused before a facility was known, by reason.",
        &["reason"],
    )?;
    for reason in crate::daemon::refusals::RefusalReason::ALL {
        refused
            .with_label_values(&[reason.name()])
            .inc_by(status.refused.total(reason));
    }
    for (name, help, value) in [
        ("renkei_ike_sas", "IKE SAs.", status.hub.ike_sas),
        (
            "renkei_child_sas",
            "Child SAs installed.",
            status.hub.child_sas,
        ),
    ] {
        let g = prometheus::IntGauge::new(name, help)?;
        m.0.register(Box::new(g.clone()))?;
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    let mut out = Vec::new();
    TextEncoder::new().encode(&m.0.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}
/// One scrape: the status snapshot and what the state directory says
/// about certificates (read off the daemon's event loop).
pub(crate) async fn scrape(status: HubStatus, state: StateDir) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let certs = CertExpiry::read(&state)?;
        render(&status, &certs)
    })
    .await
    .context("metrics: the scrape task failed")?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-11-30T00:00:00Z.
    const NOW: i64 = 1_795_996_800;

    fn facility(name: &str, id: &str, state: FacilityState) -> FacilityStatus {
        FacilityStatus {
            name: name.into(),
            id: id.into(),
            state,
            ..FacilityStatus::default()
        }
    }

    /// A facility identity is operator text (a DN may hold quotes and
    /// backslashes): label values are escaped as the text format says,
    /// so one odd identity cannot break the whole scrape.
    #[test]
    fn label_values_are_escaped() {
        let status = HubStatus {
            facilities: vec![facility(
                "nara",
                "CN=Nara \\\"East\", O=Clinic\nTwo",
                FacilityState::Disabled,
            )],
            ..HubStatus::default()
        };
        let text = render(&status, &CertExpiry::default()).unwrap();
        let line = "renkei_facility_info{facility=\"nara\",identity=\"CN=Nara \\\\\\\"East\\\", O=Clinic\\nTwo\"} 1";
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        assert!(text
            .lines()
            .any(|l| l == "renkei_facility_enabled{facility=\"nara\"} 0"));
        assert!(text
            .lines()
            .any(|l| l == "renkei_facility_state{facility=\"nara\",state=\"disabled\"} 1"));
    }

    /// The newest unrevoked certificate counts; revoked ones and other
    /// facilities' do not.
    #[test]
    fn certificate_expiry_from_records() {
        let rec = |name: &str, not_after: i64, revoked: Option<i64>| CertRecord {
            serial: format!("{not_after:x}"),
            name: name.into(),
            identity: String::new(),
            key_type: "ecdsa-p256".into(),
            not_after,
            issued: String::new(),
            revoked,
        };
        let mut e = CertExpiry::default();
        e.add_records(&[
            rec(crate::certs::HUB_CERT_NAME, 500, None),
            rec("kyoto", 100, None),
            rec("kyoto", 300, None),
            rec("kyoto", 900, Some(50)),
            rec("osaka", 700, Some(60)),
        ]);
        assert_eq!(e.hub, Some(500));
        assert_eq!(e.facilities.get("kyoto"), Some(&300));
        assert_eq!(e.facilities.get("osaka"), None);
    }

    #[test]
    fn renders_every_family() {
        let status: HubStatus = serde_json::from_value(json!({
            "hub": { "started": "2026-11-30T00:00:00Z", "tun": "renkei0", "listen": ["0.0.0.0"],
                     "ike_sas": 1, "half_open_ike_sas": 0, "child_sas": 1, "unattributed_drops": { "no_sa": 4 } },
            "facilities": [{ "name": "kyoto", "id": "kyoto.example", "state": "up", "since": null, "remote": null,
                             "ike_suite": "aes256gcm16-prfsha256-modp2048", "child_sas": [], "mtu": 1358, "path_mtu_limited": false,
                             "bytes_in": 10, "bytes_out": 20, "packets_in": 1, "packets_out": 2,
                             "drops": { "replay": 3 }, "handshakes": 1, "auth_failures": 0, "child_rekeys": 5, "ike_rekeys": 1,
                             "last_heard": "2026-11-30T00:00:10Z", "last_rekey": null, "last_error": null },
                           { "name": "osaka", "id": "osaka.example", "state": "degraded", "since": null, "remote": null,
                             "ike_suite": null, "child_sas": [], "mtu": 1358, "path_mtu_limited": false,
                             "bytes_in": 0, "bytes_out": 0, "packets_in": 0, "packets_out": 0,
                             "drops": {}, "handshakes": 1, "auth_failures": 0, "child_rekeys": 0, "ike_rekeys": 0,
                             "last_heard": null, "last_rekey": null, "last_error": "TS_UNACCEPTABLE (the facility refused the Child SA)" }],
            "refused": { "total": { "no_proposal_chosen": 3000, "unknown_identity": 2 }, "recent": [] }
        }))
        .unwrap();
        let certs = CertExpiry {
            ca: Some(NOW + 7300 * 86_400),
            hub: Some(NOW + 20 * 86_400 + 43_200),
            facilities: [("kyoto".to_string(), NOW - 86_400)].into_iter().collect(),
        };
        let text = render(&status, &certs).unwrap();
        for line in [
            "renkei_facility_up{facility=\"kyoto\"} 1",
            "renkei_facility_bytes_total{direction=\"out\",facility=\"kyoto\"} 20",
            "renkei_facility_drops_total{facility=\"kyoto\",reason=\"replay\"} 3",
            "renkei_facility_drops_total{facility=\"kyoto\",reason=\"policy\"} 0",
            "renkei_facility_rekeys_total{facility=\"kyoto\",kind=\"child\"} 5",
            "renkei_unattributed_drops_total{reason=\"no_sa\"} 4",
            "renkei_ike_sas 1",
            "renkei_facility_up{facility=\"osaka\"} 0",
            "renkei_refused_total{reason=\"no_proposal_chosen\"} 3000",
            "renkei_refused_total{reason=\"unknown_identity\"} 2",
            "renkei_refused_total{reason=\"other\"} 0",
            "renkei_facility_enabled{facility=\"kyoto\"} 1",
            "renkei_facility_state{facility=\"osaka\",state=\"degraded\"} 1",
            "renkei_facility_state{facility=\"osaka\",state=\"up\"} 0",
            "renkei_facility_last_heard_timestamp_seconds{facility=\"kyoto\"} 1795996810",
            "renkei_facility_ike_ke_group{facility=\"kyoto\",group=\"modp2048\"} 1",
            "renkei_ke_group_deadline_timestamp_seconds{group=\"modp2048\"} 1924992000",
            "renkei_hub_certificate_expiry_timestamp_seconds{certificate=\"ca\"} 2426716800",
            "renkei_hub_certificate_expiry_timestamp_seconds{certificate=\"hub\"} 1797768000",
            "renkei_facility_certificate_expiry_timestamp_seconds{facility=\"kyoto\"} 1795910400",
            "renkei_child_sas 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        let build = format!(
            "renkei_build_info{{git=\"{GIT_COMMIT}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.lines().any(|l| l == build), "missing {build}");
        // osaka has no certificate, no last-heard time and no IKE suite.
        for absent in [
            "renkei_facility_certificate_expiry_timestamp_seconds{facility=\"osaka\"}",
            "renkei_facility_last_heard_timestamp_seconds{facility=\"osaka\"}",
            "renkei_facility_ike_ke_group{facility=\"osaka\"",
        ] {
            assert!(!text.contains(absent), "{absent} should be absent");
        }
        // Every sample belongs to a declared family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} undeclared"
            );
        }
    }
}
