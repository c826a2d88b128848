//! "Why can't this hospital connect?" (issue #18 item 2), on the real
//! network stack with strongSwan as the facility: each common mistake is
//! made for real and `renkei diagnose` names it from what the hub saw;
//! `renkei status NAME` and `renkei sa list` agree with strongSwan's own
//! `swanctl --list-sas` and with the data plane's counters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{renkei_bin, run, CertFault, Facility, Lab, Role};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

/// A YAMAHA RTX as strongSwan imitates it (its working defaults).
fn yamaha(ike: &str, esp: &str) -> Facility {
    let mut f = Facility::new(ike, esp, Role::SwanInitiates);
    f.hub_peer_args = vec!["--router".into(), "yamaha".into()];
    f
}

/// `renkei ARGS` in the hub's namespace under a locale (`C` or
/// `ja_JP.UTF-8`) and a time zone.
fn renkei_in(lab: &Lab, locale: &str, args: &[&str]) -> Output {
    run(Command::new("ip")
        .args(["netns", "exec", &lab.hub_ns, "env"])
        .arg(format!("LC_ALL={locale}"))
        .arg("TZ=Asia/Tokyo")
        .arg(renkei_bin())
        .arg("--state")
        .arg(lab.dir.join("hub"))
        .args(args))
}

fn text(lab: &Lab, args: &[&str]) -> String {
    let out = renkei_in(lab, "C", args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn diagnosis(lab: &Lab) -> Value {
    serde_json::from_str(&text(lab, &["diagnose", "kyoto", "--json"])).unwrap()
}

fn causes(d: &Value) -> Vec<String> {
    d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["cause"].as_str().unwrap().to_string())
        .collect()
}

fn finding<'a>(d: &'a Value, cause: &str) -> &'a Value {
    d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["cause"] == cause)
        .unwrap_or_else(|| panic!("no {cause} in {d:#}"))
}

/// Waits until the diagnosis names `cause`, then prints it (the README
/// copies these) and returns it.
fn diagnosed(lab: &Lab, cause: &str) -> Value {
    lab.wait_for(cause, Duration::from_secs(30), |l| {
        causes(&diagnosis(l)).iter().any(|c| c == cause)
    });
    println!(
        "$ renkei diagnose kyoto\n{}",
        text(lab, &["diagnose", "kyoto"])
    );
    diagnosis(lab)
}

#[test]
fn never_heard_then_a_proposal_mismatch_with_the_yamaha_fix() {
    let lab = Lab::start(yamaha("3des-sha256-modp2048", "aes256-sha256-modp2048"));
    let d = diagnosis(&lab);
    assert_eq!(causes(&d), ["never_heard"], "{d:#}");
    println!(
        "$ renkei diagnose kyoto\n{}",
        text(&lab, &["diagnose", "kyoto"])
    );
    assert!(!lab.swan_initiate(), "the hub refuses 3DES");
    let d = diagnosed(&lab, "proposal_mismatch");
    let f = finding(&d, "proposal_mismatch");
    let seen = f["seen"].as_str().unwrap();
    assert!(seen.contains("3DES"), "what was offered, named: {seen}");
    assert!(seen.contains(&lab.sites[0].outer), "{seen}");
    assert!(f["at"].as_str().unwrap().ends_with('Z'), "JSON is UTC: {f}");
    let cmds: Vec<&str> = f["router_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        cmds.iter()
            .any(|c| c.trim() == "ipsec ike encryption 1 aes256-cbc")
            && cmds.iter().any(|c| c.trim().starts_with("ipsec sa policy")),
        "the YAMAHA commands of its export: {cmds:?}"
    );
    // In Japanese, times in JST.
    let ja = renkei_in(&lab, "ja_JP.UTF-8", &["diagnose", "kyoto"]);
    let ja = String::from_utf8(ja.stdout).unwrap();
    assert!(
        ja.contains("暗号方式の提案が一致しません") && ja.contains("JST"),
        "{ja}"
    );
    // The Cisco fix for the same facility, from the same tables.
    let out = renkei_in(&lab, "C", &["peer", "set", "kyoto", "--router", "cisco"]);
    if out.status.success() {
        let d = diagnosis(&lab);
        let cmds = finding(&d, "proposal_mismatch")["router_commands"].to_string();
        assert!(cmds.contains("crypto ikev2 proposal"), "{cmds}");
    }
}

#[test]
fn wrong_psk_unknown_identity_selectors_and_certificate_are_diagnosed() {
    // A wrong pre-shared key.
    let mut f = yamaha("aes256-sha256-modp2048", "aes256-sha256-modp2048");
    f.psk = "not-the-hubs-key-0123456789".into();
    let lab = Lab::start(f);
    assert!(!lab.swan_initiate());
    let d = diagnosed(&lab, "wrong_psk");
    assert!(finding(&d, "wrong_psk")["seen"]
        .as_str()
        .unwrap()
        .contains("AUTHENTICATION_FAILED"));
    let st = text(&lab, &["status", "kyoto"]);
    assert!(
        st.contains("authentication failures 1") || st.contains("authentication failures"),
        "{st}"
    );
    assert!(st.contains("last events"), "{st}");
    drop(lab);

    // The router sends another identity than the one registered.
    let lab = Lab::start(yamaha("aes256-sha256-modp2048", "aes256-sha256-modp2048"));
    let out = renkei_in(
        &lab,
        "C",
        &["peer", "set", "kyoto", "--id", "kyoto-new.example"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(!lab.swan_initiate());
    let d = diagnosed(&lab, "unknown_identity");
    let seen = finding(&d, "unknown_identity")["seen"].as_str().unwrap();
    assert!(
        seen.contains("kyoto.example") && seen.contains("kyoto-new.example"),
        "sent and configured: {seen}"
    );
    drop(lab);

    // The router's LAN is not the registered one.
    let mut f = yamaha("aes256-sha256-modp2048", "aes256-sha256-modp2048");
    f.swan_local_ts = Some("198.51.100.128/26".into());
    let lab = Lab::start(f);
    let _ = lab.swan_initiate();
    let d = diagnosed(&lab, "traffic_selectors");
    let ts = finding(&d, "traffic_selectors");
    assert!(
        ts["seen"].as_str().unwrap().contains("198.51.100.128/26"),
        "{ts}"
    );
    assert!(
        ts["meaning"].as_str().unwrap().contains(&lab.sites[0].net),
        "{ts}"
    );
    drop(lab);

    // A certificate from another CA.
    let mut f = Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    );
    f.cert = Some("ecdsa-p256".into());
    f.cert_fault = CertFault::OtherCa;
    let lab = Lab::start(f);
    assert!(!lab.swan_initiate());
    diagnosed(&lab, "certificate_unknown_ca");
}

/// `swanctl --list-sas` of the facility, one line per field.
fn swan_sas(lab: &Lab) -> String {
    String::from_utf8(lab.swanctl(&["--list-sas"]).stdout).unwrap()
}

#[test]
fn status_and_sa_list_match_strongswan_and_the_data_plane() {
    let lab = Lab::start(yamaha("aes256-sha256-modp2048", "aes256-sha256-modp2048"));
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let list = |lab: &Lab| -> Value {
        serde_json::from_str(&text(lab, &["sa", "list", "--json"])).unwrap()
    };
    let sas = list(&lab);
    let child = &sas[0]["child_sas"][0];
    let (spi_in, spi_out) = (
        child["spi_in"].as_str().unwrap().to_string(),
        child["spi_out"].as_str().unwrap().to_string(),
    );
    // strongSwan's inbound SPI is the hub's outbound one, and back.
    let swan = swan_sas(&lab);
    assert!(
        swan.contains(&format!("in  {spi_out}")) && swan.contains(&format!("out {spi_in}")),
        "hub in {spi_in} out {spi_out}; strongSwan:\n{swan}"
    );
    assert!(child["rekey_in"].as_u64().is_some_and(|s| s > 0), "{child}");
    assert!(sas[0]["ike_rekey_in"].as_u64().is_some(), "{sas}");
    assert!(sas[0]["ike_spi"].as_str().is_some_and(|s| s.len() == 16));

    let before = (
        child["packets_in"].as_u64().unwrap(),
        child["packets_out"].as_u64().unwrap(),
        child["bytes_in"].as_u64().unwrap(),
    );
    assert!(lab.ping(false, 100, 5));
    let sas = list(&lab);
    let child = &sas[0]["child_sas"][0];
    assert!(
        child["packets_in"].as_u64().unwrap() >= before.0 + 5
            && child["packets_out"].as_u64().unwrap() >= before.1 + 5
            && child["bytes_in"].as_u64().unwrap() >= before.2 + 5 * 128,
        "five 128-byte pings each way counted on the SA: {child}"
    );
    // The SA's counters are the facility's (one Child SA, no rekey yet).
    let st = lab.facility_status();
    assert_eq!(child["packets_in"], st["packets_in"], "{st}");
    assert_eq!(child["bytes_out"], st["bytes_out"], "{st}");

    let out = text(&lab, &["sa", "list"]);
    println!("$ renkei sa list\n{out}");
    assert!(
        out.contains(&format!("in  SPI {spi_in}")) && out.contains(&format!("out SPI {spi_out}"))
    );
    let out = text(&lab, &["status", "kyoto"]);
    println!("$ renkei status kyoto\n{out}");
    assert!(
        out.contains("facility kyoto (kyoto.example): up since "),
        "{out}"
    );
    assert!(
        out.contains("last events") && out.contains("child_up"),
        "{out}"
    );
    let out = text(&lab, &["status"]);
    assert!(
        out.contains("1 up / 0 degraded / 0 down / 0 disabled (1 facilities)"),
        "{out}"
    );
    let out = text(&lab, &["status", "--only", "down"]);
    assert!(!out.lines().any(|l| l.starts_with("kyoto")), "{out}");
    let out = renkei_in(&lab, "C", &["status", "osaka*"]);
    assert!(
        !out.status.success(),
        "a pattern matching nothing fails: {out:?}"
    );
    let d = diagnosis(&lab);
    assert_eq!(causes(&d)[0], "up", "{d:#}");
}
