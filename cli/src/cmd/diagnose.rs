//! `renkei diagnose NAME`: why a facility cannot connect, from what the
//! running hub saw (its events, `daemon::evidence`, and the refusals of
//! strangers by source address, `daemon::refusals`), in plain language.
//!
//! Each finding says what was seen, when, what it means and what to do;
//! a proposal mismatch also gives the router's commands, cut from the
//! facility's own `renkei export` (the same tables), so the fix and the
//! export never disagree.

use crate::control;
use crate::daemon::evidence::{Cause, EventKind};
use crate::daemon::status::{FacilityState, HubStatus};
use crate::i18n::local_time_rfc3339;
use crate::registry::{Peer, Registry, RemoteAddr};
use crate::state::StateDir;
use crate::{export, router::Router};
use anyhow::Result;
use rust_i18n::t;
use serde::Serialize;
use std::net::IpAddr;

/// One finding.
#[derive(Debug, Serialize)]
pub(crate) struct Finding {
    /// Stable name of the cause (`wrong_psk`, `proposal_mismatch`, …).
    pub(crate) cause: &'static str,
    pub(crate) title: String,
    /// What the hub saw.
    pub(crate) seen: String,
    /// When (RFC 3339, UTC): the latest sighting.
    pub(crate) at: Option<String>,
    /// How many times.
    pub(crate) count: u64,
    pub(crate) meaning: String,
    pub(crate) action: String,
    /// Router commands that fix it, from the facility's export.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) router_commands: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Diagnosis<'a> {
    facility: &'a str,
    id: String,
    router: &'static str,
    state: FacilityState,
    findings: Vec<Finding>,
}

pub(crate) fn run(state: &StateDir, name: &str, json: bool) -> Result<()> {
    let peer = Registry::open(state)?.peer(name)?;
    let report = control::facility(state, name)?;
    let export = export_text(state, &peer);
    let findings = diagnose(&peer, &report, &export);
    let f = &report.facilities[0];
    if json {
        let d = Diagnosis {
            facility: name,
            id: peer.id.to_string(),
            router: peer.router.as_str(),
            state: f.state,
            findings,
        };
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    println!(
        "{}",
        t!(
            "diagnose.title",
            name = name,
            id = peer.id,
            router = peer.router.as_str(),
            state = f.state
        )
    );
    for (i, x) in findings.iter().enumerate() {
        println!();
        println!("{}. {}", i + 1, x.title);
        println!("{}", t!("diagnose.seen", what = x.seen));
        if let Some(at) = &x.at {
            let count = if x.count > 1 {
                t!("diagnose.count", count = x.count).into_owned()
            } else {
                String::new()
            };
            println!(
                "{}",
                t!("diagnose.when", at = local_time_rfc3339(at), count = count)
            );
        }
        println!("{}", t!("diagnose.means", text = x.meaning));
        println!("{}", t!("diagnose.todo", text = x.action));
        if matches!(
            x.cause,
            "proposal_mismatch" | "child_proposal_mismatch" | "nat_traversal_off"
        ) {
            match &export {
                Ok(_) => {
                    println!("{}", t!("diagnose.fix", name = name));
                    for l in &x.router_commands {
                        println!("    {l}");
                    }
                }
                Err(why) => println!("{}", t!("diagnose.no_fix", why = why)),
            }
        }
    }
    Ok(())
}

/// The facility's export for its router (without its key): the fixes are
/// cut from it.
fn export_text(state: &StateDir, peer: &Peer) -> Result<String, String> {
    let format = peer.router.export_format().ok_or_else(|| {
        t!("diagnose.no_export_format", router = peer.router.as_str()).into_owned()
    })?;
    let reg = Registry::open(state).map_err(|e| e.to_string())?;
    let (hub, certs) = (
        reg.hub().map_err(|e| e.to_string())?,
        reg.certs().map_err(|e| e.to_string())?,
    );
    let text = export::render(
        format,
        &export::Input {
            hub: &hub,
            peer,
            with_secret: false,
            site: &export::Site::default(),
            certs: &certs,
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    Ok(text)
}

/// The lines of an export that set proposals (with the block headers
/// they belong to), per router.
pub(crate) fn proposal_lines(router: Router, export: &str) -> Vec<String> {
    let keep: &[&str] = match router {
        Router::Yamaha => &[
            "tunnel select",
            "ipsec sa policy",
            "ipsec ike encryption",
            "ipsec ike hash",
            "ipsec ike group",
            "ipsec ike pfs",
        ],
        Router::Cisco => &[
            "crypto ikev2 proposal",
            "encryption ",
            "integrity ",
            "prf ",
            "group ",
            "crypto ipsec transform-set",
            "crypto ipsec profile",
            "set transform-set",
            "set pfs",
        ],
        Router::Fortigate => &[
            "config vpn ipsec phase1-interface",
            "config vpn ipsec phase2-interface",
            "edit \"",
            "set proposal",
            "set dhgrp",
            "set pfs",
        ],
        Router::Nec => &[
            "ikev2 proposal",
            "ipsec ikev2 proposal",
            "sa-proposal",
            "child-proposal",
            "child-pfs",
        ],
        Router::Strongswan | Router::Other => &["proposals", "esp_proposals"],
    };
    commands_of(export, keep)
}

/// The lines of an export that turn NAT traversal on, with the block
/// headers before them, per router.
pub(crate) fn natt_lines(router: Router, export: &str) -> Vec<String> {
    let (keep, command): (&[&str], &str) = match router {
        Router::Yamaha => (&["tunnel select"], "ipsec ike nat-traversal"),
        Router::Cisco => (&["crypto ikev2 profile"], "nat force-encap"),
        Router::Fortigate => (
            &["config vpn ipsec phase1-interface", "edit \""],
            "set nattraversal",
        ),
        Router::Nec => (&["interface Tunnel"], "ikev2 nat-traversal"),
        Router::Strongswan | Router::Other => (&["connections", "renkei-hub"], "encap"),
    };
    let mut lines = commands_of(export, &[keep, &[command]].concat());
    // Up to the command itself: later blocks' headers are not part of it.
    match lines
        .iter()
        .rposition(|l| l.trim_start().starts_with(command))
    {
        Some(last) => lines.truncate(last + 1),
        None => lines.clear(),
    }
    lines
}

/// The lines of `export` that start with one of `keep` (comments left out).
fn commands_of(export: &str, keep: &[&str]) -> Vec<String> {
    export
        .lines()
        .filter(|l| !l.trim_start().starts_with(['#', '!']))
        .filter(|l| keep.iter().any(|k| l.trim_start().starts_with(k)))
        .map(str::to_string)
        .collect()
}

/// The address the facility is expected from: its `--remote-addr` or
/// where it was last seen.
fn expected_ip(peer: &Peer, report: &HubStatus) -> Option<IpAddr> {
    match &peer.remote_addr {
        Some(RemoteAddr::Ip(a)) => Some(a.ip()),
        _ => report.facilities.first()?.remote.map(|r| r.ip()),
    }
}

fn finding(cause: &'static str, key: &str, name: &str) -> Finding {
    Finding {
        cause,
        title: t!(format!("diagnose.{key}.title")).into_owned(),
        seen: String::new(),
        at: None,
        count: 0,
        meaning: t!(format!("diagnose.{key}.means")).into_owned(),
        action: t!(format!("diagnose.{key}.todo"), name = name).into_owned(),
        router_commands: Vec::new(),
    }
}

/// The findings, most useful first. Pure: from the registry's facility
/// and the daemon's report.
pub(crate) fn diagnose(
    peer: &Peer,
    report: &HubStatus,
    export: &Result<String, String>,
) -> Vec<Finding> {
    let name = peer.name.as_str();
    let f = &report.facilities[0];
    let commands = export
        .as_ref()
        .map(|e| proposal_lines(peer.router, e))
        .unwrap_or_default();
    let mut out = Vec::new();
    if f.state == FacilityState::Disabled {
        out.push(Finding {
            seen: t!("diagnose.disabled.title").into_owned(),
            ..finding("disabled", "disabled", name)
        });
    }
    // The facility's own refusals, newest of each cause.
    let mut causes: Vec<Cause> = Vec::new();
    for e in f.events.iter().rev() {
        let Some(cause) = e.cause else { continue };
        if !matches!(e.kind, EventKind::Refused | EventKind::ChildFailed)
            || causes.contains(&cause)
            || cause == Cause::Disabled
        {
            continue;
        }
        causes.push(cause);
        let (code, key) = match cause {
            Cause::WrongPsk => ("wrong_psk", "psk"),
            Cause::RefusedByFacility => ("refused_by_facility", "refused_by_facility"),
            Cause::AuthMethod => ("auth_method", "auth_method"),
            Cause::CertUnknownCa => ("certificate_unknown_ca", "cert_ca"),
            Cause::CertExpired => ("certificate_expired", "cert_expired"),
            Cause::CertRevoked => ("certificate_revoked", "cert_revoked"),
            Cause::CertIdentity => ("certificate_identity", "cert_identity"),
            Cause::CertOther => ("certificate", "cert_other"),
            Cause::TsMismatch => ("traffic_selectors", "ts"),
            Cause::ChildProposal => ("child_proposal_mismatch", "child_proposal"),
            Cause::NoNatTraversal => ("nat_traversal_off", "natt"),
            Cause::Disabled | Cause::Other => ("other", "other"),
        };
        let mut x = finding(code, key, name);
        x.seen = format!(
            "{}{}: {}",
            e.remote.map_or(String::new(), |r| format!("{r} ")),
            e.notify.as_deref().unwrap_or(""),
            e.detail
        );
        x.at = Some(e.time.clone());
        x.count = e.count;
        let remote_ts = peer
            .remote_ts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let local_ts = peer
            .local_ts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        match cause {
            Cause::TsMismatch => {
                x.meaning = t!("diagnose.ts.means", remote = remote_ts, local = local_ts).into();
                x.action = t!(
                    "diagnose.ts.todo",
                    remote = remote_ts,
                    local = local_ts,
                    name = name
                )
                .into();
            }
            Cause::ChildProposal => {
                x.meaning = t!("diagnose.child_proposal.means", accepts = peer.esp).into();
                x.action = t!("diagnose.proposal.todo", name = name).into();
                x.router_commands = commands.clone();
            }
            Cause::NoNatTraversal => {
                x.router_commands = export
                    .as_ref()
                    .map(|e| natt_lines(peer.router, e))
                    .unwrap_or_default();
            }
            _ => {}
        }
        out.push(x);
    }
    // Refusals before any facility was known, from its address (or from
    // anywhere, marked as possibly another's, when it has no fixed
    // address and was never seen).
    let ip = expected_ip(peer, report);
    for r in &report.refused.recent {
        if ip.is_some_and(|ip| ip != r.source) {
            continue;
        }
        let source = if ip.is_none() {
            t!("diagnose.maybe", source = r.source).into_owned()
        } else {
            r.source.to_string()
        };
        let mut x = match r.reason.as_str() {
            "no_proposal_chosen" => {
                let offered = r
                    .detail
                    .split_once("offered ")
                    .map_or(r.detail.as_str(), |(_, o)| o);
                let mut x = finding("proposal_mismatch", "proposal", name);
                x.seen = t!(
                    "diagnose.proposal.seen",
                    source = source,
                    offered = offered,
                    accepts = format!("IKE {} / ESP {}", peer.ike, peer.esp)
                )
                .into();
                x.router_commands = commands.clone();
                x
            }
            "unknown_identity" => {
                let sent = r
                    .detail
                    .split_once("identity ")
                    .map_or(r.detail.as_str(), |(_, i)| i);
                let mut x = finding("unknown_identity", "identity", name);
                x.seen = t!(
                    "diagnose.identity.seen",
                    source = source,
                    sent = sent,
                    configured = peer.id
                )
                .into();
                x.action = t!("diagnose.identity.todo", configured = peer.id, name = name).into();
                x
            }
            _ => {
                let mut x = finding("other", "other", name);
                x.seen = format!("{source}: {} {}", r.reason, r.detail);
                x
            }
        };
        x.at = Some(r.last.clone());
        x.count = r.count;
        out.push(x);
    }
    match f.state {
        FacilityState::Up | FacilityState::Degraded if f.behind_nat => {
            let mut x = finding("behind_nat", "nat", name);
            x.seen = t!("diagnose.nat.seen").into();
            out.push(x);
        }
        _ => {}
    }
    if f.state == FacilityState::Up {
        let mut x = finding("up", "up", name);
        x.seen = t!(
            "diagnose.up.seen",
            children = f.child_sas.len(),
            since = f.since.as_deref().map_or("-".into(), local_time_rfc3339)
        )
        .into();
        x.at = f.since.clone();
        out.insert(0, x);
    } else if out.is_empty() && f.last_heard.is_none() && f.events.is_empty() {
        let mut x = finding("never_heard", "never", name);
        let addr = ip.map_or(String::new(), |a| {
            t!("diagnose.never.addr", addr = a).into_owned()
        });
        x.seen = t!(
            "diagnose.never.seen",
            addr = addr,
            started = local_time_rfc3339(&report.hub.started)
        )
        .into();
        out.push(x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_is_the_exports_proposal_lines() {
        let yamaha = include_str!("../../tests/golden/yamaha-psk.txt");
        let lines = proposal_lines(Router::Yamaha, yamaha);
        assert!(lines
            .iter()
            .any(|l| l.trim() == "ipsec ike encryption 1 aes256-cbc"));
        assert!(lines
            .iter()
            .any(|l| l.trim() == "ipsec ike group 1 modp2048"));
        assert!(
            lines.iter().all(|l| !l.contains("pre-shared-key")),
            "{lines:?}"
        );
        let cisco = include_str!("../../tests/golden/cisco-psk.txt");
        let lines = proposal_lines(Router::Cisco, cisco);
        assert!(lines
            .iter()
            .any(|l| l == "crypto ikev2 proposal RENKEI-IKE-1"));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("crypto ipsec transform-set")));
        assert!(lines.iter().all(|l| !l.contains("pre-shared-key")));
    }

    #[test]
    fn the_nat_traversal_fix_is_the_exports_line_per_router() {
        let cases = [
            (
                Router::Yamaha,
                include_str!("../../tests/golden/yamaha-psk.txt"),
                "ipsec ike nat-traversal 1 on",
            ),
            (
                Router::Cisco,
                include_str!("../../tests/golden/cisco-psk.txt"),
                "nat force-encap",
            ),
            (
                Router::Fortigate,
                include_str!("../../tests/golden/fortigate-psk.txt"),
                "set nattraversal forced",
            ),
            (
                Router::Nec,
                include_str!("../../tests/golden/nec-psk.txt"),
                "ikev2 nat-traversal keepalive 20 force",
            ),
        ];
        for (router, export, command) in cases {
            let lines = natt_lines(router, export);
            assert_eq!(
                lines.last().map(|l| l.trim()),
                Some(command),
                "{router:?}: {lines:?}"
            );
            assert!(lines.len() >= 2, "{router:?}: a header first: {lines:?}");
            assert!(lines.iter().all(|l| !l.contains("pre-shared-key")));
        }
    }

    /// Every key of `locales/diagnose.yml` has both languages.
    #[test]
    fn every_message_is_in_english_and_japanese() {
        let keys: Vec<&str> = include_str!("../../locales/diagnose.yml")
            .lines()
            .filter(|l| !l.starts_with([' ', '_']) && l.ends_with(':'))
            .map(|l| l.trim_end_matches(':'))
            .collect();
        assert!(keys.len() > 50, "{}", keys.len());
        for key in keys {
            for lang in crate::i18n::LANGUAGES {
                let text = t!(key, locale = lang);
                assert_ne!(text, key, "{key} lacks {lang}");
            }
            assert_ne!(t!(key, locale = "ja"), t!(key, locale = "en"), "{key}");
        }
    }
}
