//! `renkei status`: the running hub's status report, as a table or JSON.

use super::pad;
use crate::control;
use crate::daemon::status::{ChildSaStatus, FacilityState, FacilityStatus, HubStatus};
use crate::i18n::local_time_rfc3339;
use crate::state::StateDir;
use anyhow::Result;
use rust_i18n::t;
use std::borrow::Cow;

pub(crate) fn run(
    state: &StateDir,
    name: Option<&str>,
    only: Option<FacilityState>,
    json: bool,
) -> Result<()> {
    // One facility by its exact name: everything about it.
    if let Some(name) = name.filter(|n| !n.contains(['*', '?'])) {
        let report = control::facility(state, name)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else if let Some(f) = report.facilities.first() {
            print_facility(state, f);
        }
        return Ok(());
    }
    let mut status = control::status(state)?;
    let summary = summary(&status.facilities);
    status
        .facilities
        .retain(|f| only.is_none_or(|s| f.state == s) && name.is_none_or(|p| glob(p, &f.name)));
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print_status(&status);
    println!("{summary}");
    if let (Some(p), true) = (name, status.facilities.is_empty()) {
        anyhow::bail!("{}", t!("status.no_match", pattern = p));
    }
    Ok(())
}

/// A facility's state in the operator's language.
pub(crate) fn state_text(state: FacilityState) -> Cow<'static, str> {
    match state {
        FacilityState::Up => t!("status.state_up"),
        FacilityState::Down => t!("status.state_down"),
        FacilityState::Connecting => t!("status.state_connecting"),
        FacilityState::Degraded => t!("status.state_degraded"),
        FacilityState::Disabled => t!("status.state_disabled"),
    }
}

/// The summary line: how many facilities are in each state.
pub(crate) fn summary(facilities: &[FacilityStatus]) -> String {
    let n = |s: FacilityState| facilities.iter().filter(|f| f.state == s).count();
    t!(
        "status.summary",
        up = n(FacilityState::Up),
        degraded = n(FacilityState::Degraded),
        down = n(FacilityState::Down) + n(FacilityState::Connecting),
        disabled = n(FacilityState::Disabled),
        total = facilities.len()
    )
    .into_owned()
}

/// Shell-style matching: `*` any run of characters, `?` one.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matcher with one backtrack point (linear in practice).
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// A duration in seconds, the way an operator reads it: `1h02m`, `4m10s`.
pub(crate) fn span(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Seconds since an RFC 3339 time (0 if it does not parse).
pub(crate) fn since(rfc3339: &str) -> u64 {
    let Ok(t) = rfc3339.parse::<jiff::Timestamp>() else {
        return 0;
    };
    u64::try_from(jiff::Timestamp::now().as_second() - t.as_second()).unwrap_or(0)
}

fn or_never(v: Option<&str>) -> String {
    v.map_or_else(|| t!("status.never").into_owned(), local_time_rfc3339)
}

/// `status NAME`: everything about one facility.
fn print_facility(state: &StateDir, f: &FacilityStatus) {
    println!(
        "{}",
        t!(
            "status.facility",
            name = f.name,
            id = f.id,
            state = state_text(f.state),
            since = or_never(f.since.as_deref())
        )
    );
    if f.display_name.is_some() || f.medical_code.is_some() {
        println!(
            "  {}",
            rust_i18n::t!(
                "files.status_label",
                display_name = f.display_name.as_deref().unwrap_or("-"),
                medical_code = f.medical_code.as_deref().unwrap_or("-")
            )
        );
    }
    if let Some(r) = f.remote {
        let nat = if f.behind_nat {
            t!("status.behind_nat").into_owned()
        } else {
            String::new()
        };
        println!("{}", t!("status.address", remote = r, nat = nat));
    }
    if let (Some(spi), Some(suite)) = (&f.ike_spi, &f.ike_suite) {
        println!(
            "{}",
            t!(
                "status.ike",
                spi = spi,
                suite = suite,
                rekey = f.ike_rekey_in.map_or("-".into(), span)
            )
        );
    }
    print_children(&f.child_sas, "  ");
    println!(
        "{}",
        t!(
            "status.counters",
            pin = f.packets_in,
            bin = f.bytes_in,
            pout = f.packets_out,
            bout = f.bytes_out,
            drops = if f.drops.is_empty() {
                "-".into()
            } else {
                f.drops.describe()
            }
        )
    );
    println!(
        "{}",
        t!(
            "status.handshakes",
            hs = f.handshakes,
            ike = f.ike_rekeys,
            child = f.child_rekeys,
            last = or_never(f.last_rekey.as_deref()),
            auth = f.auth_failures
        )
    );
    println!(
        "{}",
        t!("status.last_heard", at = or_never(f.last_heard.as_deref()))
    );
    print_certificate(state, &f.name);
    if let Some(e) = &f.last_error {
        println!("{}", t!("status.facility_last_error", error = e));
    }
    if f.events.is_empty() {
        println!("{}", t!("status.no_events"));
    } else {
        println!("{}", t!("status.events"));
        for e in &f.events {
            let repeated = if e.count > 1 {
                t!(
                    "status.event_repeated",
                    count = e.count,
                    first = local_time_rfc3339(&e.first)
                )
                .into_owned()
            } else {
                String::new()
            };
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            println!(
                "    {} {kind}{}{} {}{repeated}",
                local_time_rfc3339(&e.time),
                e.notify.as_ref().map_or(String::new(), |n| format!(" {n}")),
                e.remote.map_or(String::new(), |r| format!(" {r}")),
                e.detail
            );
        }
    }
}

/// The facility's newest certificate from the registry, if it has one
/// (read-only; nothing is shown when the registry cannot be read).
fn print_certificate(state: &StateDir, name: &str) {
    let Ok(reg) = crate::registry::Registry::open(state) else {
        return;
    };
    let Ok(certs) = reg.certs() else { return };
    match certs.iter().rev().find(|c| c.name == name) {
        Some(c) => println!(
            "{}",
            t!(
                "status.certificate",
                serial = c.serial,
                expires = crate::i18n::local_time(c.not_after),
                revoked = if c.revoked.is_some() {
                    t!("status.revoked").into_owned()
                } else {
                    String::new()
                }
            )
        ),
        None => println!("{}", t!("status.no_certificate")),
    }
}

pub(crate) fn print_children(children: &[ChildSaStatus], indent: &str) {
    for c in children {
        println!(
            "{}",
            t!(
                "status.child",
                indent = indent,
                spi_in = c.spi_in,
                spi_out = c.spi_out,
                suite = c.suite,
                local_ts = c.local_ts,
                remote_ts = c.remote_ts
            )
        );
    }
}

fn print_status(status: &HubStatus) {
    let hub = &status.hub;
    println!(
        "{}",
        t!(
            "status.hub_line",
            tun = hub.tun,
            listen = hub
                .listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            since = local_time_rfc3339(&hub.started),
            ike = hub.ike_sas,
            child = hub.child_sas
        )
    );
    if let Some(ha) = &status.ha {
        let nobody = rust_i18n::t!("ha.nobody");
        println!(
            "{}",
            rust_i18n::t!(
                "ha.status",
                node = ha.node,
                role = ha.role.as_str(),
                since = crate::i18n::local_time_rfc3339(&ha.since),
                vrrp = ha.vrrp.as_str(),
                holder = ha.lease_holder.as_deref().unwrap_or(&nobody),
                epoch = ha.lease_epoch,
                expires = ha
                    .lease_expires
                    .as_deref()
                    .map_or_else(|| "-".to_string(), crate::i18n::local_time_rfc3339)
            )
        );
        if let Some(e) = &ha.registry_error {
            println!("{}", rust_i18n::t!("ha.status_registry_error", error = e));
        }
    }
    if hub.draining {
        let what = match hub.drain.as_ref().and_then(|d| d.to.as_deref()) {
            Some(to) => rust_i18n::t!("drain.status_redirected_to", to = to),
            None => rust_i18n::t!("drain.status_refused"),
        };
        if hub.drained {
            println!("{}", rust_i18n::t!("drain.status_handed_over", what = what));
        } else {
            println!(
                "{}",
                rust_i18n::t!("drain.status_handing_over", what = what)
            );
        }
    }
    println!(
        "{} {} {} {} {} {:>12} {:>12} {}",
        pad(&t!("status.col_facility"), 16),
        pad(&t!("status.col_state"), 10),
        pad(&t!("status.col_since"), 23),
        pad(&t!("status.col_remote"), 22),
        pad(&t!("status.col_suite"), 36),
        t!("status.col_in"),
        t!("status.col_out"),
        t!("status.col_drops")
    );
    for f in &status.facilities {
        println!(
            "{:<16} {} {:<23} {:<22} {:<36} {:>12} {:>12} {}",
            f.name,
            pad(&state_text(f.state), 10),
            f.since.as_deref().map_or("-".into(), local_time_rfc3339),
            f.remote.map_or("-".into(), |a| a.to_string()),
            f.ike_suite.as_deref().unwrap_or("-"),
            format!("{}p/{}B", f.packets_in, f.bytes_in),
            format!("{}p/{}B", f.packets_out, f.bytes_out),
            if f.drops.is_empty() {
                "-".into()
            } else {
                f.drops.describe()
            }
        );
        if f.display_name.is_some() || f.medical_code.is_some() {
            println!(
                "    {}",
                rust_i18n::t!(
                    "files.status_label",
                    display_name = f.display_name.as_deref().unwrap_or("-"),
                    medical_code = f.medical_code.as_deref().unwrap_or("-")
                )
            );
        }
        print_children(&f.child_sas, "    ");
        if f.path_mtu_limited {
            println!("{}", t!("status.mtu_lowered", mtu = f.mtu));
        }
        if let Some(e) = &f.last_error {
            println!("{}", t!("status.last_error", error = e));
        }
    }
    print_refused(&status.refused);
}

/// Attempts refused before a facility was known: totals by reason, then
/// the recent sources.
fn print_refused(refused: &crate::daemon::refusals::RefusedReport) {
    let totals: Vec<String> = refused
        .total
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    if totals.is_empty() {
        println!("{}", t!("status.refused_none"));
        return;
    }
    println!("{}", t!("status.refused", totals = totals.join(",")));
    println!(
        "    {} {} {:>8} {} {}",
        pad(&t!("status.col_source"), 40),
        pad(&t!("status.col_reason"), 20),
        t!("status.col_count"),
        pad(&t!("status.col_last"), 23),
        t!("status.col_detail")
    );
    for r in &refused.recent {
        println!(
            "    {:<40} {:<20} {:>8} {:<23} {}",
            r.source.to_string(),
            r.reason,
            r.count,
            local_time_rfc3339(&r.last),
            r.detail
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status --only` beside the global `--state DIR`.
    #[test]
    fn the_state_filter_parses_beside_the_state_directory() {
        use clap::Parser;
        let cli = crate::args::Cli::try_parse_from([
            "renkei", "--state", "/x", "status", "--only", "down", "kyo*",
        ])
        .unwrap();
        let crate::args::Command::Status { name, only, json } = cli.command else {
            panic!("not status");
        };
        assert_eq!(
            (name.as_deref(), only, json),
            (Some("kyo*"), Some(FacilityState::Down), false)
        );
        <crate::args::Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn globs_and_spans() {
        assert!(glob("kyoto*", "kyoto-east"));
        assert!(glob("*east", "kyoto-east"));
        assert!(glob("k?oto", "kyoto"));
        assert!(!glob("kyoto", "kyoto-east"));
        assert!(!glob("osaka*", "kyoto"));
        assert!(glob("*", ""));
        assert_eq!(span(59), "59s");
        assert_eq!(span(3_725), "1h02m");
        assert_eq!(span(250), "4m10s");
    }

    #[test]
    fn the_summary_counts_each_state() {
        let f = |state| FacilityStatus {
            state,
            ..FacilityStatus::default()
        };
        let all = [
            f(FacilityState::Up),
            f(FacilityState::Up),
            f(FacilityState::Degraded),
            f(FacilityState::Connecting),
            f(FacilityState::Down),
            f(FacilityState::Disabled),
        ];
        assert_eq!(
            t!(
                "status.summary",
                locale = "en",
                up = 2,
                degraded = 1,
                down = 2,
                disabled = 1,
                total = 6
            ),
            summary(&all),
            "in the test's locale (en)"
        );
        assert!(summary(&all).starts_with("2 up / 1 degraded / 2 down / 1 disabled"));
    }
}
