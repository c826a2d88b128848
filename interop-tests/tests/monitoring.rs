//! The metrics a person sets monitoring up with (issue #19, item 4), from
//! a live hub against strongSwan: build information, when the facility's
//! certificate and the hub's certificates expire, last heard as a
//! timestamp, the negotiated key exchange group, enabled, and a scrape
//! that Prometheus's own linter (`promtool check metrics`) accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{must, Facility, Lab, Role};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// GET `path` from the hub's HTTP server (`serve --http`), inside its
/// namespace: the response's head and body.
fn get(lab: &Lab, path: &str) -> (String, String) {
    let out = must(Command::new("ip").args([
        "netns",
        "exec",
        &lab.hub_ns,
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/127.0.0.1/9811 && printf 'GET {path} HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3"),
    ]));
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_string())
}

fn scrape(lab: &Lab) -> String {
    let (head, body) = get(lab, "/metrics");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    body
}

/// The value of the sample `series` (name and labels as written).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn live_metrics_for_monitoring() {
    // A certificate facility negotiating MODP-2048 (the 2030 deadline).
    let mut f = Facility::new(
        "aes256gcm16-prfsha256-modp2048",
        "aes256gcm16",
        Role::SwanInitiates,
    );
    f.cert = Some("ecdsa-p256".into());
    // The status page's server, which serves the metrics too
    // (`--metrics`, its old name, is tested in operator_truth.rs).
    f.serve_args = vec!["--http".into(), "127.0.0.1:9811".into()];
    let lab = Lab::start(f);
    let started = now();
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3));
    let text = scrape(&lab);

    // The build: this crate's version and the commit the binary was
    // built from — a commit of this repository (the binary may be older
    // than HEAD), or "unknown" outside a git checkout.
    let build = text
        .lines()
        .find(|l| l.starts_with("renkei_build_info{"))
        .unwrap_or_else(|| panic!("no renkei_build_info in\n{text}"));
    let git = build
        .split("git=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    assert_eq!(
        build,
        format!(
            "renkei_build_info{{git=\"{git}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )
    );
    let in_git = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        assert_eq!(git.len(), 12, "{build}");
        let known = Command::new("git")
            .args(["cat-file", "-e", &format!("{git}^{{commit}}")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(known.success(), "{git} is not a commit of this repository");
    } else {
        assert_eq!(git, "unknown");
    }

    // Certificate expiry: the facility's (825 days by default), the hub's
    // (5 years) and the CA's (20 years), issued during this test.
    let days_left = |series: &str| (value(&text, series) - now()) / 86_400.0;
    let facility =
        days_left("renkei_facility_certificate_expiry_timestamp_seconds{facility=\"kyoto\"}");
    assert!((824.0..=825.0).contains(&facility), "{facility}");
    let hub = days_left("renkei_hub_certificate_expiry_timestamp_seconds{certificate=\"hub\"}");
    assert!((5.0 * 365.0 - 1.0..=5.0 * 365.0).contains(&hub), "{hub}");
    let ca = days_left("renkei_hub_certificate_expiry_timestamp_seconds{certificate=\"ca\"}");
    assert!((20.0 * 365.0 - 1.0..=20.0 * 365.0).contains(&ca), "{ca}");

    // Last heard: a timestamp since the test started.
    let heard = value(
        &text,
        "renkei_facility_last_heard_timestamp_seconds{facility=\"kyoto\"}",
    );
    assert!(
        heard >= started.floor() - 1.0 && heard <= now() + 1.0,
        "{heard}"
    );

    // The negotiated group and its deadline; enabled; up.
    assert_eq!(
        value(
            &text,
            "renkei_facility_ike_ke_group{facility=\"kyoto\",group=\"modp2048\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "renkei_ke_group_deadline_timestamp_seconds{group=\"modp2048\"}"
        ),
        1_924_992_000.0
    );
    assert_eq!(
        value(&text, "renkei_facility_enabled{facility=\"kyoto\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "renkei_facility_state{facility=\"kyoto\",state=\"up\"}"
        ),
        1.0
    );

    // Prometheus's own linter accepts the exposition text.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: run scripts/install-deps.sh");
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The status page from the same server: the facility up, with the
    // security headers; the JSON the same.
    let (head, page) = get(&lab, "/");
    for h in [
        "content-type: text/html; charset=utf-8",
        "cache-control: no-store",
        "x-content-type-options: nosniff",
        "content-security-policy: default-src 'none'; script-src 'self';",
        "x-frame-options: deny",
    ] {
        assert!(head.contains(h), "missing {h} in {head}");
    }
    assert!(
        page.contains("data-facility=\"kyoto\" data-state=\"up\""),
        "{page}"
    );
    let (_, json) = get(&lab, "/api/status");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["facilities"][0]["name"], "kyoto", "{v}");
    assert_eq!(v["facilities"][0]["state"], "up", "{v}");
    assert!(v["traffic"]["kyoto"].is_array(), "{v}");
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "sa.ike_up" && e["facility"] == "kyoto"),
        "{v}"
    );

    // Disabled: enabled 0, state disabled, no KE group any more.
    lab.renkei(&["peer", "disable", "kyoto"]);
    lab.wait_for("kyoto disabled", Duration::from_secs(20), |lab| {
        scrape(lab)
            .lines()
            .any(|l| l == "renkei_facility_state{facility=\"kyoto\",state=\"disabled\"} 1")
    });
    let text = scrape(&lab);
    assert_eq!(
        value(&text, "renkei_facility_enabled{facility=\"kyoto\"}"),
        0.0
    );
    assert!(!text.contains("renkei_facility_ike_ke_group{"), "{text}");
}
