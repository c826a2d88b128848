//! `renkei backup` and `renkei restore` end to end (issue #19, item 3):
//! a backup taken while the hub runs, the hub stopped and its state
//! directory gone, the backup restored into a fresh directory, and the
//! same strongSwan facility — authenticating with a certificate from the
//! hub's CA, so the CA, the hub's key and the registry must all come
//! back — connects again. Restore refuses to overwrite a hub and a wrong
//! passphrase, leaving nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{renkei_command, run, Facility, Lab, Role};
use std::time::Duration;

fn renkei_at(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    run(renkei_command().arg("--state").arg(state).args(args))
}

#[test]
fn backup_restore_onto_a_fresh_state_directory_and_reconnect() {
    let mut f = Facility::new(
        "aes256gcm16-prfsha384-ecp384",
        "aes256gcm16-ecp384",
        Role::SwanInitiates,
    );
    f.cert = Some("ecdsa-p256".into());
    let mut lab = Lab::start(f);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3));

    // Online: the hub keeps running during the backup.
    let pass = lab.dir.join("backup.pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let file = lab.dir.join("hub.backup");
    let out = lab.renkei(&[
        "backup",
        "--out",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "backup: {out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 facilities"), "{said}");
    eprintln!("{}", said.trim());
    assert!(lab.hub_pid().is_some(), "the hub still runs");
    assert_eq!(lab.facility_status()["state"], "up");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Encrypted: no key material or identity in the clear.
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    for clear in [&b"PRIVATE KEY"[..], b"kyoto.example", b"SQLite format"] {
        assert!(
            !bytes.windows(clear.len()).any(|w| w == clear),
            "clear text in the backup"
        );
    }
    // An existing file is never overwritten.
    let again = lab.renkei(&[
        "backup",
        "--out",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // Restore refuses the live hub's directory.
    let hub_dir = lab.dir.join("hub");
    let refused = renkei_at(
        &hub_dir,
        &[
            "restore",
            "--in",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("already holds a hub"), "{err}");

    // The machine is lost: stop the hub, move its state away.
    lab.stop_hub();
    let old = lab.dir.join("hub.lost");
    std::fs::rename(&hub_dir, &old).unwrap();

    // A wrong passphrase: refused, nothing created.
    let wrong = lab.dir.join("wrong.pass");
    std::fs::write(&wrong, "not the passphrase at all\n").unwrap();
    let out = renkei_at(
        &hub_dir,
        &[
            "restore",
            "--in",
            file.to_str().unwrap(),
            "--passphrase-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("renkei: error: passphrase: wrong"), "{err}");
    assert!(!hub_dir.exists(), "a refused restore leaves nothing");
    let leftovers: Vec<_> = std::fs::read_dir(&lab.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let out = renkei_at(
        &hub_dir,
        &[
            "restore",
            "--in",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "restore: {out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", said.trim());
    assert!(
        said.contains("1 facilities") && said.contains("the chain verifies"),
        "{said}"
    );
    for f in [
        "registry.db",
        "ca/ca.key",
        "ca/ca.pem",
        "hub.key",
        "hub.pem",
        "audit.log",
    ] {
        assert_eq!(
            std::fs::read(old.join(f)).is_ok(),
            hub_dir.join(f).exists(),
            "{f}"
        );
    }
    for f in ["ca/ca.key", "ca/ca.pem", "hub.key", "hub.pem"] {
        assert_eq!(
            std::fs::read(old.join(f)).unwrap(),
            std::fs::read(hub_dir.join(f)).unwrap(),
            "{f}"
        );
    }
    let verify = renkei_at(&hub_dir, &["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");

    // The restored hub starts and the facility (its certificate from the
    // restored CA) connects again.
    lab.restart_hub();
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3));
    let log = lab.hub_log();
    assert!(
        log.contains("certificate accepted"),
        "the facility authenticated with its certificate"
    );
}
