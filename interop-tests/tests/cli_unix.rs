//! The `renkei` commands behave as Unix tools: output cut short by a
//! closed pipe ends the command quietly (no panic), and the daemon refuses
//! a log filter it would misread rather than log nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::renkei_bin;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn renkei(state: &Path, args: &[&str]) -> Output {
    Command::new(renkei_bin())
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
    let out = Command::new(renkei_bin())
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
