//! Exit statuses, for scripts and monitoring checks (README "Exit
//! statuses"; `renkei --help` lists them too):
//!
//! | status | meaning                                                   |
//! |--------|-----------------------------------------------------------|
//! | 0      | done                                                      |
//! | 1      | an error (refused input, a failed change, a broken state) |
//! | 2      | the command line is wrong (from clap)                     |
//! | 3      | the hub is not running (as LSB `status` says it)          |
//! | 4      | permission denied (run as root)                           |
//!
//! The errors are typed ([`NotRunning`], [`PermissionDenied`]) where they
//! arise, and `main` reads the status off the error chain; an I/O
//! "permission denied" from anywhere else counts as 4 too.

use crate::state::StateDir;
use rust_i18n::t;
use std::fmt;
use std::path::Path;

pub(crate) const ERROR: u8 = 1;
pub(crate) const NOT_RUNNING: u8 = 3;
pub(crate) const DENIED: u8 = 4;

/// The hub a command needs is not running.
#[derive(Debug)]
pub(crate) struct NotRunning(pub(crate) String);

impl fmt::Display for NotRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotRunning {}

/// This user may not read or change what the command needs.
#[derive(Debug)]
pub(crate) struct PermissionDenied(pub(crate) String);

impl fmt::Display for PermissionDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PermissionDenied {}

/// The user (or group) named for a numeric ID in `/etc/passwd` (or
/// `/etc/group`).
fn name_of(db: &str, id: u32) -> String {
    std::fs::read_to_string(db)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&id.to_string().as_str())).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

/// What to do about a permission problem in `state`: who may use it, read
/// off the directory's owner, group and mode.
pub(crate) fn advice(state: &StateDir) -> String {
    use std::os::unix::fs::MetadataExt;
    let dir: &Path = state.as_ref();
    let Ok(m) = std::fs::metadata(dir) else {
        return t!("cli.advice_no_dir", dir = dir.display()).into_owned();
    };
    let owner = if m.uid() == 0 {
        t!("cli.advice_root")
    } else {
        t!("cli.advice_user", user = name_of("/etc/passwd", m.uid()))
    };
    let group = if m.mode() & 0o070 != 0 {
        t!("cli.advice_group", group = name_of("/etc/group", m.gid())).into_owned()
    } else {
        String::new()
    };
    t!(
        "cli.advice",
        owner = owner,
        group = group,
        dir = dir.display(),
        mode = format!("{:04o}", m.mode() & 0o7777)
    )
    .into_owned()
}

/// The error for `path` that this user may not use (`doing` says what
/// for, in the operator's language, e.g. `t!("cli.doing_open_registry")`).
pub(crate) fn denied(state: &StateDir, doing: &str, path: &Path) -> anyhow::Error {
    anyhow::Error::new(PermissionDenied(
        t!(
            "cli.denied_doing",
            doing = doing,
            path = path.display(),
            advice = advice(state)
        )
        .into_owned(),
    ))
}

/// The exit status for an error.
pub(crate) fn status(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<NotRunning>() {
            return NOT_RUNNING;
        }
        if cause.is::<PermissionDenied>() {
            return DENIED;
        }
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return DENIED;
        }
    }
    ERROR
}

/// Whether the message already says what to do about a denied permission.
pub(crate) fn advised(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<PermissionDenied>())
}
