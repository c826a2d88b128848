//! `renkei apply` on a running hub (issue #18 item 1): a file that changes
//! one facility's selectors, another's display name only, and adds a
//! third is checked with --dry-run (nothing changes), refused whole when
//! it has a bad entry, then applied: the changed facility's tunnel is
//! renewed under its new selectors, the other's SAs keep their SPIs, and
//! `renkei dump` gives back the applied file byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role, Topology};
use std::time::Duration;

/// The SPIs of site `i`'s strongSwan IKE and Child SAs: the same list
/// means the same SAs.
fn spis(lab: &Lab, i: usize) -> Vec<String> {
    let out = lab.swanctl_of(i, &["--list-sas", "--raw"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut v: Vec<String> = text
        .split([' ', '{', '}'])
        .filter(|t| {
            ["initiator-spi=", "responder-spi=", "spi-in=", "spi-out="]
                .iter()
                .any(|k| t.starts_with(k))
        })
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn run_ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.renkei(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn dump(lab: &Lab) -> String {
    run_ok(lab, &["dump"])
}

/// `text` with the first line of facility `name` starting with `key =`
/// replaced by `line` (or, with `key` empty, `line` added after `name`).
fn edit(text: &str, name: &str, key: &str, line: &str) -> String {
    let marker = format!("name = \"{name}\"\n");
    let at = text.find(&marker).expect("facility in the dump") + marker.len();
    let (head, tail) = text.split_at(at);
    if key.is_empty() {
        return format!("{head}{line}\n{tail}");
    }
    let start = tail
        .find(&format!("\n{key} = "))
        .map(|i| i + 1)
        .or_else(|| tail.starts_with(&format!("{key} = ")).then_some(0))
        .expect("key in the facility");
    let end = start + tail[start..].find('\n').unwrap();
    format!("{head}{}{line}{}", &tail[..start], &tail[end..])
}

#[test]
fn apply_changes_only_what_the_file_changes_on_a_running_hub() {
    let swan = || {
        Facility::new(
            "aes256gcm16-prfsha256-ecp256",
            "aes256gcm16",
            Role::SwanInitiates,
        )
    };
    let lab = Lab::start_sites(Topology::Nat, vec![swan(), swan()]);
    assert!(lab.swan_initiate_of(0));
    assert!(lab.swan_initiate_of(1));
    lab.wait_up_of(0, Duration::from_secs(30));
    lab.wait_up_of(1, Duration::from_secs(30));
    let kyoto_spis = spis(&lab, 0);
    let osaka_spis = spis(&lab, 1);
    assert!(!kyoto_spis.is_empty() && !osaka_spis.is_empty());

    let before = dump(&lab);
    assert!(before.contains("name = \"kyoto\"\n") && before.contains("name = \"osaka\"\n"));
    // kyoto: a display name and a medical code only (no tunnel change);
    // osaka: narrower selectors (its tunnel is renewed); nara: added.
    let mut wanted = edit(
        &before,
        "kyoto",
        "",
        "display_name = \"京都中央クリニック\"\nmedical_code = \"2612345678\"",
    );
    wanted = edit(
        &wanted,
        "osaka",
        "remote_ts",
        "remote_ts = [\"198.51.100.64/27\"]",
    );
    // In name order, as dump writes it: before osaka.
    wanted = wanted.replacen(
        "[[facility]]\nname = \"osaka\"",
        "[[facility]]\nname = \"nara\"\ndisplay_name = \"奈良歯科医院\"\nid = \"nara.example\"\nauth = \"cert\"\nremote_ts = [\"10.77.0.0/24\"]\n\n[[facility]]\nname = \"osaka\"",
        1,
    );
    let file = lab.dir.join("network.toml");
    std::fs::write(&file, &wanted).unwrap();
    let file_s = file.to_str().unwrap();

    // --dry-run: field by field, and nothing changes.
    let plan = run_ok(&lab, &["apply", file_s, "--dry-run"]);
    assert!(plan.contains("~ would change kyoto:\n    display_name: - → 京都中央クリニック\n    medical_code: - → 2612345678\n"), "{plan}");
    assert!(
        plan.contains("~ would change osaka:\n    remote_ts: "),
        "{plan}"
    );
    assert!(plan.contains(" → 198.51.100.64/27\n"), "{plan}");
    assert!(plan.contains("+ would add nara (奈良歯科医院)"), "{plan}");
    assert!(plan.contains("dry run: nothing was changed"), "{plan}");
    assert_eq!(dump(&lab), before);

    // A bad entry anywhere: refused whole, with its line; nothing changes.
    let bad = wanted.replace(
        "remote_ts = [\"10.77.0.0/24\"]",
        "remote_ts = [\"10.77.0.0/24\"]\nike = \"3des-sha1-modp1024\"",
    );
    let bad_file = lab.dir.join("bad.toml");
    std::fs::write(&bad_file, &bad).unwrap();
    let out = lab.renkei(&["apply", bad_file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = bad
        .lines()
        .position(|l| l.starts_with("ike = \"3des"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("bad.toml:{line}: facility 'nara': ike: ")),
        "{err}"
    );
    assert!(err.contains("1 problem(s); nothing was changed"), "{err}");
    assert_eq!(dump(&lab), before);

    // Applied: live on the hub.
    let said = run_ok(&lab, &["apply", file_s]);
    assert!(
        said.contains("applied: 1 added, 2 changed, 0 removed, 0 unchanged"),
        "{said}"
    );
    assert!(said.contains("applied to the running hub"), "{said}");
    // The registry now says what the file says, byte for byte.
    assert_eq!(dump(&lab), wanted);
    // osaka's tunnel was closed; it comes back under the new selectors.
    lab.wait_for("osaka's old SAs gone", Duration::from_secs(20), |lab| {
        spis(lab, 1) != osaka_spis
    });
    assert!(lab.swan_initiate_of(1));
    lab.wait_up_of(1, Duration::from_secs(30));
    assert_eq!(
        lab.status_of("osaka")["child_sas"][0]["remote_ts"],
        "198.51.100.64/27"
    );
    // kyoto's SAs are the same ones, and it still carries traffic.
    assert_eq!(spis(&lab, 0), kyoto_spis, "kyoto's SAs were replaced");
    assert_eq!(lab.status_of("kyoto")["state"], "up");
    assert!(lab.ping(false, 56, 3));
    assert_eq!(lab.status_of("kyoto")["display_name"], "京都中央クリニック");
    // Applying the same file again changes nothing.
    let again = run_ok(&lab, &["apply", file_s]);
    assert!(again.contains("nothing to change"), "{again}");
    assert_eq!(spis(&lab, 0), kyoto_spis);
    // Audited: one record per facility and one for the apply.
    let audit = run_ok(&lab, &["audit", "show", "--json"]);
    for event in ["\"peer.add\"", "\"peer.change\"", "\"apply\""] {
        assert!(audit.contains(event), "{event}: {audit}");
    }
}
