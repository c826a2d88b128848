//! Credentials follow the facility's life (#15 item 5): removing a
//! facility revokes its certificates, so the old router cannot join a
//! facility added later with the same identity; `cert issue` never
//! overwrites a file and says what happens to earlier certificates;
//! internationalised identities take their ASCII form, and identities no
//! certificate can carry are refused at `peer add --cert`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{renkei_bin, renkei_command, Facility, Lab, Role};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const SUITE: (&str, &str) = ("aes256gcm16-prfsha384-ecp384", "aes256gcm16-ecp384");

fn renkei(state: &Path, args: &[&str]) -> Output {
    renkei_command()
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

fn must(state: &Path, args: &[&str]) -> String {
    let out = renkei(state, args);
    assert!(out.status.success(), "renkei {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The serials `openssl crl` finds in the CRL, after checking its
/// signature with the CA certificate.
fn crl_serials(state: &Path) -> String {
    let out = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-CAfile"])
        .arg(state.join("ca/ca.pem"))
        .arg("-in")
        .arg(state.join("ca/crl.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl crl: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("verify OK"));
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

fn serials_of(state: &Path, name: &str) -> Vec<(String, bool)> {
    let list: serde_json::Value =
        serde_json::from_str(&must(state, &["cert", "list", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .map(|c| {
            (
                c["serial"].as_str().unwrap().to_string(),
                !c["revoked"].is_null(),
            )
        })
        .collect()
}

/// A strongSwan facility with a certificate is connected; the operator
/// removes it and adds it again with the same identity (say, re-created
/// after a mistake): the old router's certificate was revoked with the
/// removal, so it is refused, and the removal is audited with the
/// serial.
#[test]
fn a_removed_facilitys_certificate_is_refused_when_its_identity_returns() {
    let mut f = Facility::new(SUITE.0, SUITE.1, Role::SwanInitiates);
    f.cert = Some("ecdsa-p256".into());
    let lab = Lab::start(f);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let state = lab.dir.join("hub");
    let show: serde_json::Value =
        serde_json::from_str(&must(&state, &["peer", "show", "kyoto", "--json"])).unwrap();
    let certs = serials_of(&state, "kyoto");
    let [(serial, false)] = certs.as_slice() else {
        panic!("one current certificate expected: {certs:?}");
    };
    let serial = serial.clone();
    let out = lab.renkei(&["peer", "remove", "kyoto"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("revoked its certificate(s)") && stdout.contains(&serial),
        "{stdout}"
    );
    lab.wait_for("the tunnel to close", Duration::from_secs(15), |lab| {
        lab.swan_sa_count() == 0
    });
    assert!(
        crl_serials(&state).contains(&serial),
        "serial not in the CRL"
    );
    let audit = must(&state, &["audit", "show", "--json"]);
    assert!(
        audit.lines().any(|l| l.contains("\"cert.revoke\"")
            && l.contains(&serial)
            && l.contains("peer.remove")),
        "the revocation is not audited:\n{audit}"
    );
    let join = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(",")
    };
    let out = lab.renkei(&[
        "peer",
        "add",
        "kyoto",
        "--id",
        show["id"].as_str().unwrap(),
        "--cert",
        "--remote-ts",
        &join(&show["remote_ts"]),
        "--local-ts",
        &join(&show["local_ts"]),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !lab.swan_initiate(),
        "the removed facility's router connected again"
    );
    assert_eq!(lab.swan_sa_count(), 0);
    let log = lab.hub_log();
    assert!(
        log.lines()
            .any(|l| l.contains("authentication failed") && l.contains("is revoked")),
        "the hub did not refuse the revoked certificate"
    );
}

/// `cert issue` never overwrites a file: an existing ca.pem that is not
/// this hub's CA refuses it (naming the file, nothing issued, the file
/// untouched); one of the same CA is kept. A second certificate says the
/// first stays valid and how to revoke it; `--revoke-previous` and
/// `cert revoke --serial` revoke only the earlier ones.
#[test]
fn cert_issue_never_overwrites_and_says_what_happens_to_the_first() {
    let dir = std::env::temp_dir().join(format!("renkei-creds-issue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    must(&state, &["init", "--hub-id", "hub.example"]);
    for (name, ts) in [("kyoto", "198.51.100.0/26"), ("osaka", "198.51.100.64/26")] {
        must(
            &state,
            &[
                "peer",
                "add",
                name,
                "--id",
                &format!("{name}.example"),
                "--cert",
                "--remote-ts",
                ts,
            ],
        );
    }
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("ca.pem"), "another CA\n").unwrap();
    let o = renkei(
        &state,
        &["cert", "issue", "kyoto", "--out", out.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr.contains(&out.join("ca.pem").display().to_string())
            && stderr.contains("never overwrites"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("ca.pem")).unwrap(),
        "another CA\n"
    );
    assert!(!out.join("kyoto.key").exists());
    assert!(serials_of(&state, "kyoto").is_empty(), "nothing issued");
    std::fs::remove_file(out.join("ca.pem")).unwrap();
    let first = must(
        &state,
        &["cert", "issue", "kyoto", "--out", out.to_str().unwrap()],
    );
    assert!(!first.contains("note:"), "{first}");
    // Another facility into the same directory keeps ca.pem.
    let osaka = must(
        &state,
        &["cert", "issue", "osaka", "--out", out.to_str().unwrap()],
    );
    assert!(osaka.contains("the same CA certificate: kept"), "{osaka}");
    // kyoto again into the same directory: its files are there.
    let key = std::fs::read(out.join("kyoto.key")).unwrap();
    let o = renkei(
        &state,
        &["cert", "issue", "kyoto", "--out", out.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("kyoto.key already exists"));
    assert_eq!(std::fs::read(out.join("kyoto.key")).unwrap(), key);
    // A second certificate elsewhere: the first stays valid, and it says so.
    let certs = serials_of(&state, "kyoto");
    let [(first_serial, false)] = certs.as_slice() else {
        panic!("one current certificate expected: {certs:?}");
    };
    let first_serial = first_serial.clone();
    let second = must(
        &state,
        &[
            "cert",
            "issue",
            "kyoto",
            "--out",
            dir.join("2").to_str().unwrap(),
        ],
    );
    assert!(
        second.contains(&format!(
            "the earlier certificate {first_serial} of kyoto stays valid"
        )) && second.contains(&format!("cert revoke kyoto --serial {first_serial}")),
        "{second}"
    );
    assert!(serials_of(&state, "kyoto")
        .iter()
        .all(|(_, revoked)| !revoked));
    // The documented way out: revoke only the first.
    must(
        &state,
        &["cert", "revoke", "kyoto", "--serial", &first_serial],
    );
    let now = serials_of(&state, "kyoto");
    assert_eq!(now.iter().filter(|(_, r)| *r).count(), 1);
    assert!(now.contains(&(first_serial.clone(), true)));
    assert!(crl_serials(&state).contains(&first_serial));
    // --revoke-previous revokes the second when a third is issued.
    let third = must(
        &state,
        &[
            "cert",
            "issue",
            "kyoto",
            "--revoke-previous",
            "--out",
            dir.join("3").to_str().unwrap(),
        ],
    );
    assert!(
        third.contains("revoked the earlier certificate(s) of kyoto"),
        "{third}"
    );
    let now = serials_of(&state, "kyoto");
    assert_eq!(
        now.iter().filter(|(_, r)| !*r).count(),
        1,
        "only the third is current"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An internationalised domain name is stored, issued and shown in its
/// ASCII (punycode) form, which is what the certificate carries; an
/// identity no certificate can carry is refused at `peer add --cert`
/// with one line naming the field, and nothing is stored.
#[test]
fn identities_take_a_form_a_certificate_can_carry() {
    let dir = std::env::temp_dir().join(format!("renkei-creds-idn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    must(&state, &["init", "--hub-id", "hub.example"]);
    let added = must(
        &state,
        &[
            "peer",
            "add",
            "kyoto",
            "--id",
            "京都.example.jp",
            "--cert",
            "--remote-ts",
            "198.51.100.0/26",
        ],
    );
    assert!(added.contains("xn--1lqs03n.example.jp"), "{added}");
    let out = dir.join("out");
    must(
        &state,
        &["cert", "issue", "kyoto", "--out", out.to_str().unwrap()],
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(out.join("kyoto.pem"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("DNS:xn--1lqs03n.example.jp"),
        "{text:?}"
    );
    // The same name written in ASCII is the same identity.
    let o = renkei(
        &state,
        &[
            "peer",
            "add",
            "kyoto2",
            "--id",
            "xn--1lqs03n.example.jp",
            "--cert",
            "--remote-ts",
            "198.51.100.64/26",
        ],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("already belongs to facility 'kyoto'"));
    for (id, why) in [
        ("看護@kyoto.example", "not ASCII"),
        ("C=JP, OU=a, OU=b, CN=osaka", "appears twice"),
        (
            "\u{0301}a.example.jp",
            "not a valid internationalised domain name",
        ),
    ] {
        let o = renkei(
            &state,
            &[
                "peer",
                "add",
                "osaka",
                "--id",
                id,
                "--cert",
                "--remote-ts",
                "198.51.100.128/26",
            ],
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{id}: {o:?}");
        assert!(
            stderr.starts_with("renkei: error: id: ") && stderr.contains(why),
            "{id}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1);
        assert_eq!(
            renkei(&state, &["peer", "show", "osaka"]).status.code(),
            Some(1),
            "{id}: stored"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hub started with a CRL past half its validity (it was stopped for
/// weeks, say) reissues it at once — same revocations, new dates — and
/// audits it; the hourly check is the same function on a timer.
#[test]
fn a_running_hub_reissues_a_stale_crl() {
    use std::process::Stdio;
    let dir = std::env::temp_dir().join(format!("renkei-creds-crl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    must(&state, &["init", "--hub-id", "hub.example"]);
    must(
        &state,
        &[
            "peer",
            "add",
            "kyoto",
            "--id",
            "kyoto.example",
            "--cert",
            "--remote-ts",
            "198.51.100.0/26",
        ],
    );
    must(
        &state,
        &[
            "cert",
            "issue",
            "kyoto",
            "--out",
            dir.join("out").to_str().unwrap(),
        ],
    );
    must(&state, &["cert", "revoke", "kyoto"]);
    let certs = serials_of(&state, "kyoto");
    let [(serial, true)] = certs.as_slice() else {
        panic!("one revoked certificate expected");
    };
    let serial = serial.clone();
    // The same CRL as issued 20 of its 30 days ago, signed by the hub's CA.
    let ca = pki::ca::Ca::load(
        &std::fs::read_to_string(state.join("ca/ca.key")).unwrap(),
        &std::fs::read_to_string(state.join("ca/ca.pem")).unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let stale = now - 20 * 86_400;
    let pem = ca
        .crl(
            &[pki::ca::Revoked {
                serial: serial.clone(),
                at: stale,
            }],
            stale as u64,
            stale,
            30,
        )
        .unwrap();
    std::fs::write(state.join("ca/crl.pem"), pem).unwrap();
    let ns = format!("renkei-crl-{}", std::process::id());
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["netns", "add", &ns]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    let log = dir.join("hub.log");
    let mut hub = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(renkei_bin())
        .arg("--state")
        .arg(&state)
        .args(["serve", "--listen", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut text = String::new();
    for _ in 0..300 {
        text = std::fs::read_to_string(&log).unwrap();
        if text.contains("renkei hub serving") && text.contains("reissued the CRL")
            || hub.try_wait().unwrap().is_some()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill").arg(hub.id().to_string()).status();
    let _ = hub.wait();
    ip(&["netns", "del", &ns]);
    assert!(text.contains("reissued the CRL"), "{text}");
    let (this_update, next_update) =
        pki::ca::crl_validity(&std::fs::read_to_string(state.join("ca/crl.pem")).unwrap()).unwrap();
    assert!(this_update >= now, "the CRL was not reissued");
    assert_eq!(next_update, Some(this_update + 30 * 86_400));
    assert!(
        crl_serials(&state).contains(&serial),
        "the revocation was lost"
    );
    assert!(must(&state, &["audit", "show", "--json"]).contains("\"crl.reissue\""));
    let _ = std::fs::remove_dir_all(&dir);
}
