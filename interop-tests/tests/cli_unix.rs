//! The `renkei` commands behave as Unix tools: output cut short by a
//! closed pipe ends the command quietly (no panic), and the daemon refuses
//! a log filter it would misread rather than log nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{renkei_bin, renkei_command};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn renkei(state: &Path, args: &[&str]) -> Output {
    renkei_command()
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = std::env::temp_dir().join(format!("renkei-pipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    assert!(renkei(&state, &["init", "--hub-id", "hub.example"])
        .status
        .success());
    let psk = dir.join("psk");
    std::fs::write(&psk, "a pre-shared key of enough length\n").unwrap();
    for i in 0..3 {
        let out = renkei(
            &state,
            &[
                "peer",
                "add",
                &format!("f{i}"),
                "--id",
                &format!("f{i}.example"),
                "--psk-file",
                psk.to_str().unwrap(),
                "--remote-ts",
                &format!("198.51.100.{}/30", 4 * i),
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    // A pipe whose reader is already gone, as after `| head -1` exits:
    // every write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = renkei_command()
        .arg("--state")
        .arg(&state)
        .args(["peer", "list"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "renkei panicked: {stderr}");
    assert_ne!(out.status.code(), Some(101), "exit status of a panic");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "ended by SIGPIPE as Unix tools are: {:?}",
        out.status
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_log_filter_that_names_no_level_is_refused() {
    let dir = std::env::temp_dir().join(format!("renkei-log-{}", std::process::id()));
    let out = renkei(&dir.join("state"), &["--log", "warning", "serve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("log: 'warning' is not a level"),
        "a one-line error naming the field: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh hub in `dir/state` with one PSK facility, `f0`.
fn hub_with_a_facility(dir: &Path) -> std::path::PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let state = dir.join("state");
    let out = renkei(&state, &["init", "--hub-id", "hub.example"]);
    assert!(out.status.success(), "{out:?}");
    let psk = dir.join("psk");
    std::fs::write(&psk, "a pre-shared key of enough length\n").unwrap();
    let out = renkei(
        &state,
        &[
            "peer",
            "add",
            "f0",
            "--id",
            "f0.example",
            "--psk-file",
            psk.to_str().unwrap(),
            "--remote-ts",
            "198.51.100.0/30",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    state
}

/// Exit statuses are distinct for monitoring checks: 0 done, 1 error,
/// 2 wrong command line, 3 hub not running (as LSB status), and `--help`
/// lists them.
#[test]
fn exit_statuses_tell_not_running_from_an_error() {
    let dir = std::env::temp_dir().join(format!("renkei-exit-{}", std::process::id()));
    let state = hub_with_a_facility(&dir);
    let code = |args: &[&str]| renkei(&state, args).status.code();
    assert_eq!(code(&["peer", "list"]), Some(0));
    assert_eq!(code(&["status"]), Some(3), "status of a stopped hub");
    assert_eq!(code(&["status", "--json"]), Some(3));
    assert_eq!(code(&["sa", "list"]), Some(3));
    assert_eq!(code(&["sa", "up", "f0"]), Some(3));
    assert_eq!(code(&["peer", "show", "no-such"]), Some(1), "an error");
    assert_eq!(code(&["status", "--no-such-flag"]), Some(2), "usage");
    // A control socket left by a crashed hub: still "not running".
    std::os::unix::net::UnixListener::bind(state.join("renkei.sock")).unwrap();
    let out = renkei(&state, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("renkei is not running"));
    // A state directory with no hub at all is an error, not "not running".
    assert_eq!(
        renkei(&dir.join("none"), &["peer", "list"]).status.code(),
        Some(1)
    );
    let help = renkei(&state, &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "Exit status:",
        "3  the hub is not running",
        "4  permission denied",
    ] {
        assert!(help.contains(line), "--help lacks '{line}':\n{help}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A user who may not read the state directory is told "permission
/// denied" and what to do, by every command that opens the state
/// directory, the registry, the control socket or the audit log — not
/// that there is no registry or that the hub is not running.
#[test]
fn a_user_without_access_is_told_permission_denied() {
    let dir = std::env::temp_dir().join(format!("renkei-perm-{}", std::process::id()));
    let state = hub_with_a_facility(&dir);
    let out_dir = dir.join("out");
    let state_s = state.to_str().unwrap().to_string();
    let out_s = out_dir.to_str().unwrap().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["peer", "list"],
        vec!["peer", "show", "f0"],
        vec![
            "peer",
            "add",
            "f1",
            "--id",
            "f1.example",
            "--cert",
            "--remote-ts",
            "198.51.100.8/30",
        ],
        vec!["peer", "remove", "f0"],
        vec!["peer", "disable", "f0"],
        vec!["status"],
        vec!["sa", "list"],
        vec!["sa", "down", "f0"],
        vec!["audit", "verify"],
        vec!["audit", "show"],
        vec!["cert", "list"],
        vec!["cert", "issue", "f0", "--out", &out_s],
        vec!["export", "f0", "--format", "swanctl"],
        vec!["compliance"],
        vec!["init", "--hub-id", "hub.example"],
        vec!["serve"],
    ];
    for args in commands {
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(renkei_bin())
            .arg("--state")
            .arg(&state_s)
            .args(&args)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {out:?}");
        assert!(
            stderr.contains("permission denied") && stderr.contains("run renkei as root"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("run `renkei init`") && !stderr.contains("not running"),
            "{args:?} misleads: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    }
    // Nothing changed.
    let list = renkei(&state, &["peer", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("f0"));
    assert!(!out_dir.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `renkei serve` in a new network namespace with stderr into
/// `log` and `JOURNAL_STREAM` set to `journal_stream(log)`, until it has
/// said it serves; returns what it wrote.
fn serve_log(state: &Path, log: &Path, journal_stream: impl Fn(&Path) -> String) -> String {
    let ns = format!(
        "renkei-jrnl-{}-{}",
        std::process::id(),
        log.file_name().unwrap().to_string_lossy()
    );
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&["netns", "add", &ns]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    let file = std::fs::File::create(log).unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(renkei_bin())
        .arg("--state")
        .arg(state)
        .args(["serve", "--listen", "127.0.0.1"])
        .env("JOURNAL_STREAM", journal_stream(log))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut text = String::new();
    for _ in 0..300 {
        text = std::fs::read_to_string(log).unwrap();
        if text.contains("renkei hub serving") || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // SIGTERM to the hub (the child of `ip netns exec`, which execs it).
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    ip(&["netns", "del", &ns]);
    text
}

/// Under journald (stderr is the stream `JOURNAL_STREAM` names) every log
/// line starts with its sd-daemon priority, so `journalctl -p warning`
/// finds the warnings; elsewhere the lines stay plain.
#[test]
fn under_journald_log_lines_carry_their_priority() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("renkei-jrnl-{}", std::process::id()));
    let state = hub_with_a_facility(&dir);
    // A certificate facility in a hub whose CA certificate is gone: the
    // hub warns at start that it cannot connect.
    let out = renkei(
        &state,
        &[
            "peer",
            "add",
            "f1",
            "--id",
            "f1.example",
            "--cert",
            "--remote-ts",
            "198.51.100.8/30",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_file(state.join("ca/ca.pem")).unwrap();
    let journal = serve_log(&state, &dir.join("journal.log"), |log| {
        let m = std::fs::metadata(log).unwrap();
        format!("{}:{}", m.dev(), m.ino())
    });
    assert!(journal.contains("renkei hub serving"), "{journal}");
    for line in journal.lines() {
        let prio = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(p, _)| p);
        assert!(
            matches!(prio, Some("3" | "4" | "6" | "7")),
            "no priority prefix: {line}"
        );
    }
    assert!(
        journal
            .lines()
            .any(|l| l.starts_with("<4>") && l.contains("WARN") && l.contains("no CA")),
        "the warning is not at priority 4:\n{journal}"
    );
    assert!(journal
        .lines()
        .any(|l| l.starts_with("<6>") && l.contains("renkei hub serving")));
    // JOURNAL_STREAM inherited while stderr goes elsewhere: plain lines.
    let plain = serve_log(&state, &dir.join("plain.log"), |_| "0:0".into());
    assert!(plain.contains("renkei hub serving"), "{plain}");
    assert!(plain.lines().all(|l| !l.starts_with('<')), "{plain}");
    let _ = std::fs::remove_dir_all(&dir);
}
