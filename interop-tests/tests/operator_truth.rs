//! What the operator is told is true (issue #15, items 2 and 3), on the
//! real network stack: refusals before a facility is known are counted
//! and shown, bounded; a disabled facility is named as such; a refused
//! Child SA is `degraded`, not `up`; the audit log aggregates what
//! strangers and offline facilities repeat, writes one record per SA
//! down, rotates without breaking its chain and names the login user.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{must, renkei_bin, run, Facility, Lab, Role, HUB_OUTER};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn swan() -> Facility {
    Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    )
}

fn rk_raw() -> std::path::PathBuf {
    renkei_interop_tests::xfer_bin().with_file_name("rk-raw")
}

/// The metrics, scraped inside the hub's namespace (`--metrics
/// 127.0.0.1:9810`).
fn scrape(lab: &Lab) -> String {
    must(Command::new("ip").args([
        "netns",
        "exec",
        &lab.hub_ns,
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/9810 && printf 'GET /metrics HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3",
    ]))
}

/// The live audit log's records.
fn audit(lab: &Lab) -> Vec<Value> {
    std::fs::read_to_string(lab.dir.join("hub/audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events<'a>(records: &'a [Value], event: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == event).collect()
}

/// `renkei ARGS` in the hub's namespace, from a process whose login UID
/// is `login` (as after an operator's `su -`).
fn renkei_logged_in_as(lab: &Lab, login: u32, args: &[&str]) -> std::process::Output {
    let state = lab.dir.join("hub");
    let mut cmd = format!(
        "echo {login} > /proc/self/loginuid && exec ip netns exec {} {} --state {}",
        lab.hub_ns,
        renkei_bin().display(),
        state.display()
    );
    for a in args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    run(Command::new("sh").arg("-c").arg(cmd).env("LC_ALL", "C"))
}

fn refused_total(lab: &Lab, reason: &str) -> u64 {
    lab.status()["refused"]["total"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// 3,000 spoofed IKE_SA_INIT requests offering a PRF the hub refuses
/// (the flood: 3,000 audit records, 1.25 MB) are counted in
/// `status` and the metrics by reason, shown as a bounded table of recent
/// sources, and reach the audit log as one record and one summary.
#[test]
fn a_flood_of_refused_strangers_is_counted_bounded_and_aggregated() {
    let mut f = swan();
    f.serve_args = vec!["--metrics".into(), "127.0.0.1:9810".into()];
    let mut lab = Lab::start(f);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    // From 128 spoofed addresses of the link, through the facility's
    // namespace.
    let flood = must(
        Command::new("ip")
            .args(["netns", "exec", &lab.site_ns])
            .arg(rk_raw())
            .args([
                "flood",
                HUB_OUTER,
                "192.0.2.128/25",
                "3000",
                "1000",
                "refused",
            ]),
    );
    lab.wait_for("the flood counted", Duration::from_secs(30), |l| {
        refused_total(l, "no_proposal_chosen") >= 1000
    });
    // Until the hub has taken everything that arrived.
    let mut total = refused_total(&lab, "no_proposal_chosen");
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = refused_total(&lab, "no_proposal_chosen");
        if now == total {
            break;
        }
        total = now;
    }
    let status = lab.status();
    let recent = status["refused"]["recent"].as_array().unwrap();
    eprintln!(
        "flood {}; refused {total}, {} sources in the table",
        flood.trim(),
        recent.len()
    );
    assert!(
        !recent.is_empty() && recent.len() <= 32,
        "bounded: {}",
        recent.len()
    );
    for r in recent {
        assert_eq!(r["reason"], "no_proposal_chosen", "{r}");
        let source: std::net::Ipv4Addr = r["source"].as_str().unwrap().parse().unwrap();
        assert!(
            source.octets()[..3] == [192, 0, 2] && source.octets()[3] >= 128,
            "{r}"
        );
        assert!(
            r["detail"].as_str().unwrap().contains("PRF_HMAC_MD5"),
            "what was offered: {r}"
        );
        assert!(r["count"].as_u64().unwrap() >= 1 && r["last"].as_str().is_some());
    }
    assert_eq!(status["refused"]["total"]["unknown_identity"], 0);
    let text = String::from_utf8(lab.renkei(&["status"]).stdout).unwrap();
    assert!(
        text.contains(&format!(
            "refused before a facility was known: no_proposal_chosen={total}"
        )),
        "{text}"
    );
    let metrics = scrape(&lab);
    for line in [
        format!("renkei_refused_total{{reason=\"no_proposal_chosen\"}} {total}"),
        "renkei_refused_total{reason=\"unknown_identity\"} 0".to_string(),
        "renkei_facility_up{facility=\"kyoto\"} 1".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    // The audit log took one record for it, not one per packet.
    let flood_records: Vec<String> = std::fs::read_to_string(lab.dir.join("hub/audit.log"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"event\":\"refused"))
        .map(str::to_string)
        .collect();
    let bytes: usize = flood_records.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "audit log for the flood: {} records, {bytes} bytes",
        flood_records.len()
    );
    assert!(
        flood_records.len() == 1 && bytes < 1024,
        "{flood_records:?}"
    );
    assert!(lab.ping(false, 56, 3), "the facility kept its tunnel");
    // The hub's log is bounded the same way: one line above debug level,
    // not one per packet.
    let log = lab.hub_log();
    let lines = log
        .lines()
        .filter(|l| !l.contains("DEBUG") && l.contains("PRF_HMAC_MD5"))
        .count();
    assert_eq!(lines, 1, "log lines naming the refused offer");
    // At shutdown the count not yet written goes in: one record and one
    // summary carry every refusal.
    lab.stop_hub();
    let records = audit(&lab);
    let first = events(&records, "refused");
    let summary = events(&records, "refused.repeated");
    assert_eq!((first.len(), summary.len()), (1, 1), "{records:?}");
    assert_eq!(first[0]["details"]["refusal"], "no_proposal_chosen");
    assert_eq!(summary[0]["details"]["count"].as_u64().unwrap() + 1, total);
    assert!(summary[0]["details"]["sources"].as_array().unwrap().len() <= 5);
    let verify = lab.renkei(&["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
    // The log of an initialised hub gone, or emptied: verify says so.
    let log = lab.dir.join("hub/audit.log");
    let kept = lab.dir.join("audit.log.kept");
    std::fs::rename(&log, &kept).unwrap();
    let verify = lab.renkei(&["audit", "verify"]);
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !verify.status.success() && said.contains("is missing") && said.contains("initialised"),
        "{verify:?}"
    );
    std::fs::write(&log, b"").unwrap();
    let verify = lab.renkei(&["audit", "verify"]);
    assert!(!verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stderr).contains("is empty"));
}

/// A disabled facility that tries to connect is shown as disabled, with
/// that as its last error (not as an unknown identity); enabled again, it
/// connects and the error is gone. The operator's changes name the login
/// user, also when the daemon records them. A router that reboots and
/// connects anew replaces its old IKE SA: the log does not end on "down".
#[test]
fn a_disabled_facility_is_named_and_success_clears_the_last_error() {
    let mut lab = Lab::start(swan());
    let out = renkei_logged_in_as(&lab, 1000, &["peer", "disable", "kyoto"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!lab.swan_initiate(), "a disabled facility cannot connect");
    lab.wait_for("the refusal in status", Duration::from_secs(10), |l| {
        l.facility_status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("disabled"))
    });
    let st = lab.facility_status();
    assert_eq!(st["state"], "disabled", "{st}");
    assert_eq!(st["auth_failures"], 0, "not a failed authentication: {st}");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("renkei peer enable kyoto"),
        "{st}"
    );
    let status = lab.status();
    assert_eq!(
        status["refused"]["total"]["unknown_identity"], 0,
        "{status}"
    );
    assert!(lab
        .hub_log()
        .contains("a disabled facility tried to connect"));
    let text = String::from_utf8(lab.renkei(&["status"]).stdout).unwrap();
    assert!(text.contains("last error: ") && text.contains("the facility is disabled"));

    let records = audit(&lab);
    let refused = events(&records, "refused.facility_disabled");
    assert_eq!(refused.len(), 1, "{records:?}");
    assert_eq!(refused[0]["details"]["facility"], "kyoto");
    assert!(events(&records, "refused.authentication").is_empty());
    // The login user, from the command and from the daemon it asked.
    for event in ["peer.disable", "hub.reload"] {
        let r = events(&records, event);
        let actor = r.last().unwrap()["actor"].as_str().unwrap();
        assert!(
            actor.starts_with("root (uid 0) logged in as ") && actor.ends_with("(uid 1000)"),
            "{event}: {actor}"
        );
    }

    let out = renkei_logged_in_as(&lab, 1000, &["peer", "enable", "kyoto"]);
    assert!(out.status.success(), "{out:?}");
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let st = lab.facility_status();
    assert!(st["last_error"].is_null(), "success clears it: {st}");

    // The router reboots (no Delete) and connects again: its new IKE SA
    // replaces the old one.
    lab.kill_charon();
    lab.start_charon();
    assert!(lab.swan_initiate());
    lab.wait_for("the old IKE SA replaced", Duration::from_secs(30), |l| {
        !events(&audit(l), "sa.ike_replaced").is_empty()
    });
    lab.wait_up(Duration::from_secs(10));
    let records = audit(&lab);
    assert!(events(&records, "sa.ike_down").is_empty(), "{records:?}");
    let last = records
        .iter()
        .rev()
        .find(|r| r["details"]["facility"] == "kyoto")
        .unwrap();
    assert_ne!(last["event"], "sa.ike_down");
    assert_eq!(lab.facility_status()["state"], "up");
}

/// A facility whose Child SA the hub refuses (a router left at 3DES for
/// ESP: NO_PROPOSAL_CHOSEN; a wrong LAN prefix: TS_UNACCEPTABLE) has an
/// IKE SA and no tunnel: `degraded`, with the refusal as its error, and
/// `renkei_facility_up` 0.
#[test]
fn a_child_sa_refused_by_the_hub_is_degraded_not_up() {
    for (esp, local_ts, notify) in [
        ("3des-sha1", None, "NO_PROPOSAL_CHOSEN"),
        ("aes256gcm16", Some("198.51.100.128/26"), "TS_UNACCEPTABLE"),
    ] {
        let mut f = Facility::new("aes256gcm16-prfsha256-ecp256", esp, Role::SwanInitiates);
        f.swan_local_ts = local_ts.map(str::to_string);
        f.serve_args = vec!["--metrics".into(), "127.0.0.1:9810".into()];
        let lab = Lab::start(f);
        let _ = lab.swan_initiate();
        lab.wait_for(
            "an IKE SA without a Child SA",
            Duration::from_secs(30),
            |l| l.facility_status()["state"] == "degraded",
        );
        let st = lab.facility_status();
        let error = st["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(notify) && error.contains("the hub refused"),
            "{notify}: {st}"
        );
        assert!(st["child_sas"].as_array().unwrap().is_empty());
        let metrics = scrape(&lab);
        assert!(
            metrics
                .lines()
                .any(|l| l == "renkei_facility_up{facility=\"kyoto\"} 0"),
            "{notify}: {metrics}"
        );
        let text = String::from_utf8(lab.renkei(&["status"]).stdout).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("kyoto") && l.contains("degraded")),
            "{text}"
        );
        let records = audit(&lab);
        let failed = events(&records, "sa.child_failed");
        assert_eq!(failed.len(), 1, "{records:?}");
        assert_eq!(failed[0]["details"]["notify"], notify);
        assert_eq!(failed[0]["details"]["refused_by"], "hub");
    }
}

/// A hub-initiated facility that stops answering fails again and again:
/// one audit record when it starts failing, the rest counted into one
/// summary written when it comes back. The log rotates meanwhile without
/// breaking the chain, and `audit show` filters by facility, event and
/// time.
#[test]
fn an_offline_facility_is_one_audit_record_until_it_answers() {
    let mut f = Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::RenkeiInitiates,
    );
    f.serve_args = vec![
        "--retransmit-timeout".into(),
        "0.5".into(),
        "--retransmit-tries".into(),
        "2".into(),
    ];
    let lab = Lab::start(f);
    lab.wait_up(Duration::from_secs(30));
    // The facility moves to an address where nobody answers.
    let out = lab.renkei(&["peer", "set", "kyoto", "--remote-addr", "192.0.2.3:500"]);
    assert!(out.status.success(), "{out:?}");
    // The tunnel closed by the change, then four failed attempts.
    lab.wait_for("four failed attempts", Duration::from_secs(90), |l| {
        l.hub_log().matches("facility down").count() >= 5
    });
    let records = audit(&lab);
    // The tunnel the change closed: one record, its Child SA in it.
    let downs = events(&records, "sa.ike_down");
    assert_eq!(downs.len(), 1, "{records:?}");
    assert_eq!(
        downs[0]["details"]["child_sas"].as_array().unwrap().len(),
        1
    );
    assert!(events(&records, "sa.child_down").is_empty(), "{records:?}");
    assert_eq!(
        events(&records, "sa.attempt_failed").len(),
        1,
        "{records:?}"
    );
    assert!(events(&records, "sa.attempt_failed.repeated").is_empty());

    // Rotated while the hub writes.
    let out = lab.renkei(&["audit", "rotate"]);
    assert!(out.status.success(), "{out:?}");
    assert!(lab.dir.join("hub/audit.log.1").exists());

    let out = lab.renkei(&["peer", "set", "kyoto", "--remote-addr", "192.0.2.2:500"]);
    assert!(out.status.success(), "{out:?}");
    lab.wait_up(Duration::from_secs(30));

    let verify = lab.renkei(&["audit", "verify"]);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && said.contains("in 2 segments"),
        "{verify:?}"
    );
    // Across both segments, only kyoto's records.
    let show = lab.renkei(&[
        "audit",
        "show",
        "--facility",
        "kyoto",
        "--tail",
        "1000",
        "--json",
    ]);
    let kyoto: Vec<Value> = String::from_utf8(show.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(kyoto
        .iter()
        .all(|r| r["details"]["facility"] == "kyoto" || r["details"]["name"] == "kyoto"));
    assert!(kyoto.iter().any(|r| r["event"] == "peer.add"));
    let first = kyoto
        .iter()
        .position(|r| r["event"] == "sa.attempt_failed")
        .unwrap();
    let summary = kyoto
        .iter()
        .position(|r| r["event"] == "sa.attempt_failed.repeated")
        .expect("the failures counted");
    let up = kyoto
        .iter()
        .rposition(|r| r["event"] == "sa.child_up")
        .unwrap();
    assert!(first < summary && summary < up, "{kyoto:?}");
    assert!(kyoto[summary]["details"]["count"].as_u64().unwrap() >= 3);
    let sa_records: Vec<&Value> = kyoto
        .iter()
        .filter(|r| r["event"].as_str().unwrap().starts_with("sa."))
        .collect();
    assert_eq!(
        sa_records.last().unwrap()["event"],
        "sa.child_up",
        "ends on up"
    );
    // By event (and the events under it), and by time.
    let show = lab.renkei(&["audit", "show", "--event", "sa.attempt_failed", "--json"]);
    let lines = String::from_utf8(show.stdout).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    let show = lab.renkei(&["audit", "show", "--since", "2100-01-01T00:00:00+09:00"]);
    assert!(show.status.success() && show.stdout.is_empty());
    let show = lab.renkei(&["audit", "show", "--since", "yesterday"]);
    assert!(!show.status.success());
    assert!(String::from_utf8_lossy(&show.stderr).contains("RFC 3339"));
}
