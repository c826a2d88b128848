//! `renkei compliance`: every facility's configured and negotiated
//! algorithms against the CRYPTREC profile, with the end-of-2030 deadline
//! for 112-bit ones.

use super::pad;
use crate::registry::Registry;
use crate::state::StateDir;
use crate::{certs, control};
use anyhow::Result;
use rust_i18n::t;
use serde::Serialize;

pub(crate) fn run(state: &StateDir, json: bool) -> Result<()> {
    let report = compliance(state)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.summary);
        println!("{}", t!("compliance.hub", cert = report.hub_certificate));
        for note in &report.hub_findings {
            println!("    - {note}");
        }
        for f in &report.facilities {
            println!("{:<16} {} {}", f.name, pad(&f.status.text(), 22), f.auth);
            for note in &f.findings {
                println!("    - {note}");
            }
        }
    }
    Ok(())
}

/// Certificates expiring within this many days are reported.
const CERT_EXPIRY_WARNING_DAYS: i64 = 30;

/// The end of 2030 (2031-01-01T00:00:00Z): 112-bit security (MODP-2048,
/// RSA-2048) is acceptable until then under CRYPTREC's key-length criteria.
const END_OF_2030: u64 = 1_924_992_000;

/// `renkei compliance`: every facility's configured and negotiated
/// algorithms against the CRYPTREC profile.
#[derive(Debug, Serialize)]
struct ComplianceReport {
    profile: &'static str,
    summary: String,
    hub_certificate: String,
    hub_findings: Vec<String>,
    facilities: Vec<FacilityCompliance>,
}

/// One facility in the compliance report.
#[derive(Debug, Serialize)]
struct FacilityCompliance {
    name: String,
    status: Compliance,
    auth: String,
    ike_proposals: String,
    esp_proposals: String,
    negotiated_ike: Option<String>,
    negotiated_esp: Vec<String>,
    findings: Vec<String>,
}

/// A facility's standing against the CRYPTREC profile, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
enum Compliance {
    #[serde(rename = "compliant")]
    Compliant,
    /// 112-bit algorithms: acceptable until the end of 2030.
    #[serde(rename = "compliant until 2030")]
    Until2030,
    #[serde(rename = "non-compliant")]
    NonCompliant,
}

impl Compliance {
    /// The standing in the operator's language (JSON keeps the English).
    fn text(self) -> std::borrow::Cow<'static, str> {
        match self {
            Compliance::Compliant => t!("compliance.compliant"),
            Compliance::Until2030 => t!("compliance.until_2030"),
            Compliance::NonCompliant => t!("compliance.non_compliant"),
        }
    }
}

impl std::fmt::Display for Compliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Compliance::Compliant => "compliant",
            Compliance::Until2030 => "compliant until 2030",
            Compliance::NonCompliant => "non-compliant",
        })
    }
}

/// The compliance report: configuration from the registry, negotiated
/// suites from the running hub when there is one.
fn compliance(state: &StateDir) -> Result<ComplianceReport> {
    let reg = Registry::open(state)?;
    let live = control::status(state).ok();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days_left = END_OF_2030.saturating_sub(now) / 86_400;
    let mut facilities = Vec::new();
    let (mut ok, mut until_2030, mut bad) = (0, 0, 0);
    let certs = reg.certs()?;
    // The newest unrevoked certificate of `name`, with notes on its expiry.
    let cert_of = |name: &str, findings: &mut Vec<String>, level: &mut Compliance| -> String {
        let Some(c) = certs
            .iter()
            .filter(|c| c.name == name && c.revoked.is_none())
            .max_by_key(|c| c.not_after)
        else {
            findings.push(t!("compliance.no_cert").into_owned());
            return t!("compliance.none_issued").into_owned();
        };
        let left = (c.not_after - now as i64).div_euclid(86_400);
        if left < 0 {
            findings.push(
                t!(
                    "compliance.expired",
                    serial = c.serial,
                    date = pki::verify::iso(c.not_after)
                )
                .into_owned(),
            );
            *level = Compliance::NonCompliant;
        } else if left < CERT_EXPIRY_WARNING_DAYS {
            findings.push(
                t!(
                    "compliance.expires",
                    serial = c.serial,
                    date = pki::verify::iso(c.not_after),
                    days = left
                )
                .into_owned(),
            );
        }
        t!(
            "compliance.cert",
            serial = c.serial,
            key = c.key_type,
            date = pki::verify::iso(c.not_after)
        )
        .into_owned()
    };
    let mut hub_findings = Vec::new();
    let hub_cert = cert_of(
        certs::HUB_CERT_NAME,
        &mut hub_findings,
        &mut Compliance::Compliant,
    );
    for p in reg.peers()? {
        let mut findings = Vec::new();
        let mut level = Compliance::Compliant;
        let auth = match p.auth {
            ike::PeerAuth::Psk(_) => t!("compliance.psk").into_owned(),
            ike::PeerAuth::Cert => cert_of(&p.name, &mut findings, &mut level),
        };
        if p.ike.weak_groups().contains(&ike::wire::KeId::Modp2048) {
            findings.push(t!("compliance.ike_modp2048", days = days_left).into_owned());
            level = level.max(Compliance::Until2030);
        }
        if p.esp.weak_groups().contains(&ike::wire::KeId::Modp2048) {
            findings.push(t!("compliance.esp_modp2048", days = days_left).into_owned());
            level = level.max(Compliance::Until2030);
        }
        let f = live.as_ref().and_then(|l| l.facility(&p.name));
        let negotiated_ike = f.and_then(|f| f.ike_suite.clone());
        let negotiated_esp: Vec<String> = f
            .map(|f| f.child_sas.iter().map(|c| c.suite.clone()).collect())
            .unwrap_or_default();
        for suite in negotiated_ike.iter().chain(negotiated_esp.iter()) {
            if suite.contains("modp2048") {
                findings.push(
                    t!(
                        "compliance.negotiated_modp2048",
                        suite = suite,
                        days = days_left
                    )
                    .into_owned(),
                );
                level = level.max(Compliance::Until2030);
            }
            if suite.contains("x25519") {
                findings.push(t!("compliance.negotiated_x25519", suite = suite).into_owned());
                level = Compliance::NonCompliant;
            }
        }
        if now >= END_OF_2030 && level == Compliance::Until2030 {
            level = Compliance::NonCompliant;
        }
        match level {
            Compliance::Compliant => ok += 1,
            Compliance::Until2030 => until_2030 += 1,
            Compliance::NonCompliant => bad += 1,
        }
        facilities.push(FacilityCompliance {
            ike_proposals: p.ike.to_string(),
            esp_proposals: p.esp.to_string(),
            name: p.name,
            status: level,
            auth,
            negotiated_ike,
            negotiated_esp,
            findings,
        });
    }
    let summary = t!(
        "compliance.summary",
        ok = ok,
        until_2030 = until_2030,
        bad = bad,
        note = if live.is_none() {
            t!("compliance.not_running")
        } else {
            "".into()
        }
    )
    .into_owned();
    Ok(ComplianceReport {
        profile: "cryptrec",
        summary,
        hub_certificate: hub_cert,
        hub_findings,
        facilities,
    })
}
