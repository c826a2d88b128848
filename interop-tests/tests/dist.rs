//! What `dist/` ships is checked here (issue #19): the Prometheus alert
//! rules with Debian's `promtool` (`check rules`, and `test rules` with
//! the unit tests beside them), and the Grafana dashboard and the rules
//! name only metrics the hub exports.
//!
//! `promtool` comes from Debian's `prometheus` package, installed by
//! `scripts/install-deps.sh`; without it these tests fail (they do not
//! skip), so a CI machine that lacks it is noticed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("dist/prometheus"))
        .output()
        .expect("promtool not found: run scripts/install-deps.sh (Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_the_alert_rules() {
    let out = promtool(&["check", "rules", "renkei-alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_of_the_alert_rules_pass() {
    let out = promtool(&["test", "rules", "renkei-alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every alert the rules define has a unit test that expects it to fire.
#[test]
fn every_alert_is_unit_tested() {
    let rules = std::fs::read_to_string(repo().join("dist/prometheus/renkei-alerts.yml")).unwrap();
    let tests =
        std::fs::read_to_string(repo().join("dist/prometheus/renkei-alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for alert in alerts {
        // A test block that expects alerts (not only `exp_alerts: []`).
        let fires = tests.split("- eval_time:").any(|block| {
            block.contains(&format!("alertname: {alert}\n"))
                && block.contains("exp_alerts:\n")
                && block.contains("exp_labels")
        });
        assert!(fires, "no unit test expects {alert} to fire");
    }
}

/// `renkei_…` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("renkei_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // `renkei_` inside a longer word (e.g. a file name) is not a metric.
        let before = rest[..i].chars().next_back();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The dashboard is valid JSON, every panel has a query, and it and the
/// rules name only metric families `cli/src/metrics.rs` declares (a typo
/// would be an always-empty panel or an alert that never fires).
#[test]
fn dashboard_and_rules_name_exported_metrics() {
    let dashboard =
        std::fs::read_to_string(repo().join("dist/grafana/renkei-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let panels = json["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut exprs = String::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            exprs.push_str(t["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    let source = std::fs::read_to_string(repo().join("cli/src/metrics.rs")).unwrap();
    let declared: BTreeSet<String> = metric_names(&source)
        .into_iter()
        .filter(|n| source.contains(&format!("\"{n}\"")))
        .collect();
    assert!(declared.contains("renkei_facility_state"), "{declared:?}");
    let rules = std::fs::read_to_string(repo().join("dist/prometheus/renkei-alerts.yml")).unwrap();
    let rule_exprs: String = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.contains("summary:"))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, text) in [("dashboard", &exprs), ("alert rules", &rule_exprs)] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{what} names no metric");
        for name in used {
            assert!(
                declared.contains(&name),
                "{what} uses {name}, which the hub does not export"
            );
        }
    }
}

/// The systemd unit's commands are ones the binary has (ExecReload is
/// `renkei reload`, tested live in reload.rs).
#[test]
fn the_systemd_unit_runs_existing_commands() {
    let unit = std::fs::read_to_string(repo().join("dist/renkei.service")).unwrap();
    let mut seen = Vec::new();
    for line in unit.lines() {
        let Some((key, cmd)) = line.split_once('=') else {
            continue;
        };
        if !matches!(key, "ExecStart" | "ExecReload") {
            continue;
        }
        let mut words = cmd.split_whitespace();
        assert_eq!(words.next(), Some("/usr/bin/renkei"), "{line}");
        let args: Vec<&str> = words.collect();
        let out = renkei_interop_tests::renkei_command()
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {out:?}");
        seen.push(key);
    }
    assert_eq!(seen, ["ExecStart", "ExecReload"]);
}

/// The release binary carries no debug info by default (the size in the
/// README is what is installed); `--profile profiling` keeps it.
#[test]
fn release_profile_strips_debug_info() {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let section = |name: &str| -> Vec<String> {
        manifest
            .split("\n[")
            .find(|s| s.starts_with(&format!("{name}]")))
            .unwrap_or_else(|| panic!("no [{name}]"))
            .lines()
            .skip(1)
            .map(|l| l.replace(' ', ""))
            .collect()
    };
    let release = section("profile.release");
    assert!(release.iter().any(|l| l == "debug=false"), "{release:?}");
    assert!(
        release
            .iter()
            .any(|l| l == "strip=\"debuginfo\"" || l == "strip=\"symbols\""),
        "{release:?}"
    );
    let profiling = section("profile.profiling");
    assert!(
        profiling.iter().any(|l| l == "inherits=\"release\""),
        "{profiling:?}"
    );
}
