//! The audit log: append-only JSON lines in the state directory, each
//! record carrying the SHA-256 of the line before it, so that an edited,
//! removed or inserted record breaks the chain (`renkei audit verify`).
//!
//! ```text
//! {"seq":7,"time":"…","actor":"ops (uid 1000)","event":"peer.add","details":{…},
//!  "prev":"<sha256 of line 6>","hash":"<sha256 of this record without hash>"}
//! ```
//!
//! Operator commands append from their own process and the daemon from a
//! writer thread; an exclusive lock on the file orders them. The chain
//! proves integrity up to its head: keep the head hash `verify` prints
//! somewhere else to detect a rewrite of the newest records.
//!
//! **Segments.** `renkei audit rotate` renames the live log to
//! `audit.log.N` (N one more than the highest there) and starts a new
//! `audit.log` whose first record, `audit.rotated`, continues the chain:
//! its `prev` is the hash of the old segment's last line and its `seq`
//! follows on. `verify` walks `audit.log.1, audit.log.2, …, audit.log` as
//! one chain. Old segments may be moved to an archive: then the oldest
//! one left starts from a hash `verify` cannot check unless the operator
//! gives it (`--anchor HASH`, the head `verify` printed before they were
//! moved away).
//!
//! ```text
//!  audit.log.1: seq 1 (prev 000…) … seq 900 ─┐ hash H
//!  audit.log:   seq 901 audit.rotated (prev H) … head
//! ```

use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// A record to write: actor, event, details.
type Record = (String, String, Value);

/// The hash standing in for "no previous record".
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn sha256_hex(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A user as the audit log names it: `name (uid N)`.
pub(crate) fn user(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
        })
    });
    format!("{} (uid {uid})", name.unwrap_or_else(|| "?".into()))
}

/// The login UID of a process (`/proc/PID/loginuid`): the user who
/// logged in, whatever `su -` or `sudo` made of the process since; `None`
/// when unset (4294967295: a service, or a system without audit).
fn login_uid(pid: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/loginuid")).ok()?;
    match text.trim().parse::<u32>() {
        Ok(u32::MAX) | Err(_) => None,
        Ok(uid) => Some(uid),
    }
}

/// An acting user as the audit log names it: the user the process runs
/// as and, when another user logged in (an operator who ran `su -` or
/// `sudo`), that one too: `root (uid 0) logged in as ops (uid 1000)`.
pub(crate) fn acting(uid: u32, login: Option<u32>) -> String {
    match login {
        Some(login) if login != uid => format!("{} logged in as {}", user(uid), user(login)),
        _ => user(uid),
    }
}

/// Who runs this process: its user and the login UID; without a login
/// UID, who invoked it through sudo, if anyone.
pub(crate) fn actor() -> String {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(u32::MAX);
    let login = login_uid("self");
    let mut who = acting(uid, login);
    if login.is_none() {
        if let Ok(sudo) = std::env::var("SUDO_USER") {
            who.push_str(&format!(" via sudo by {sudo}"));
        }
    }
    who
}

/// The user of a control-socket client, from its credentials: its user
/// ID and its process's login UID.
pub(crate) fn client(uid: u32, pid: Option<i32>) -> String {
    acting(uid, pid.and_then(|p| login_uid(&p.to_string())))
}

/// The hash of a record: SHA-256 over its JSON without the `hash` field,
/// keys in the order written.
fn record_hash(record: &Map<String, Value>) -> String {
    let mut without = record.clone();
    without.remove("hash");
    sha256_hex(Value::Object(without).to_string().as_bytes())
}

/// The last line of the file, read backwards from the end in 64 KiB
/// steps until the newline before it is found (a record may be long: an
/// `apply` of many facilities). Only whole lines are decoded, so a step
/// that starts inside a multi-byte character (Japanese display names)
/// never makes the log look like anything but UTF-8.
fn last_line(file: &mut File) -> Result<Option<String>> {
    const STEP: u64 = 64 * 1024;
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        let from = start.saturating_sub(STEP);
        let mut chunk = vec![0u8; usize::try_from(start - from)?];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        start = from;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if let Some(nl) = body.iter().rposition(|&c| c == b'\n') {
            let line = std::str::from_utf8(&body[nl + 1..]).context("audit log is not UTF-8")?;
            return Ok(Some(line.to_string()));
        }
        if start == 0 {
            let line = std::str::from_utf8(body).context("audit log is not UTF-8")?;
            return Ok(Some(line.to_string()));
        }
    }
}

/// Appends one record under an exclusive lock.
pub(crate) fn append(state: &StateDir, actor: &str, event: &str, details: Value) -> Result<()> {
    append_many(state, &[(actor.to_string(), event.to_string(), details)])
}

/// The live log, opened for appending and locked. A rotation may rename
/// the file between opening and locking: then the lock is on a segment,
/// and the live file is opened again.
fn open_live(state: &StateDir) -> Result<File> {
    let p = state.audit_log();
    loop {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", p.display()))?;
        let held = file.metadata()?;
        if let Ok(now) = std::fs::metadata(&p) {
            if now.ino() == held.ino() && now.dev() == held.dev() {
                return Ok(file);
            }
        }
    }
}

/// The sequence number and hash of a log's last line (0 and [`GENESIS`]
/// for an empty one).
fn head_of(file: &mut File) -> Result<(u64, String)> {
    Ok(match last_line(file)? {
        Some(line) => {
            let last: Value = serde_json::from_str(&line)
                .context("the last audit record is not JSON; run `renkei audit verify`")?;
            let seq = serde_json::from_value::<Line>(last)
                .ok()
                .and_then(|l| l.seq);
            (seq.unwrap_or(0), sha256_hex(line.as_bytes()))
        }
        None => (0, GENESIS.to_string()),
    })
}

/// The lines that continue a chain whose last record has `seq` and hash
/// `prev`.
fn chain_lines(mut seq: u64, mut prev: String, records: &[Record]) -> String {
    let mut out = String::new();
    for (actor, event, details) in records {
        seq += 1;
        let mut r = Map::new();
        r.insert("seq".into(), json!(seq));
        r.insert("time".into(), json!(crate::registry::now_rfc3339()));
        r.insert("actor".into(), json!(actor));
        r.insert("event".into(), json!(event));
        r.insert("details".into(), details.clone());
        r.insert("prev".into(), json!(prev));
        let hash = record_hash(&r);
        r.insert("hash".into(), json!(hash));
        let line = Value::Object(r).to_string();
        prev = sha256_hex(line.as_bytes());
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub(crate) fn append_many(state: &StateDir, records: &[Record]) -> Result<()> {
    let mut file = open_live(state)?;
    let (seq, prev) = head_of(&mut file)?;
    file.write_all(chain_lines(seq, prev, records).as_bytes())?;
    file.sync_data()?;
    Ok(())
}

/// `audit.log.N` segments present, by N.
fn numbered_segments(state: &StateDir) -> Result<Vec<(u64, PathBuf)>> {
    let live = state.audit_log();
    let dir = live.parent().unwrap_or(Path::new("."));
    let prefix = format!(
        "{}.",
        live.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("audit.log")
    );
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((n, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Every segment present, oldest first, the live log last (if there).
pub(crate) fn segments(state: &StateDir) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = numbered_segments(state)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if state.audit_log().exists() {
        out.push(state.audit_log());
    }
    Ok(out)
}

/// What `rotate` did.
#[derive(Debug)]
pub(crate) struct Rotated {
    /// The segment the live log became.
    pub(crate) segment: PathBuf,
    /// The hash its last line has (the new log's first record continues
    /// from it).
    pub(crate) head: String,
}

/// Closes the live log as the next `audit.log.N` segment and starts a new
/// one whose first record (`audit.rotated`, by `actor`) continues the
/// chain. Writers wait on the lock and then append to the new log.
pub(crate) fn rotate(state: &StateDir, actor: &str) -> Result<Rotated> {
    let live = state.audit_log();
    if !live.exists() {
        bail!(
            "audit: {} does not exist: nothing to rotate",
            live.display()
        );
    }
    let mut file = open_live(state)?;
    let (seq, head) = head_of(&mut file)?;
    if seq == 0 && head == GENESIS {
        bail!("audit: {} is empty: nothing to rotate", live.display());
    }
    let n = numbered_segments(state)?.last().map_or(1, |(n, _)| n + 1);
    let segment = PathBuf::from(format!("{}.{n}", live.display()));
    // The old records keep their inode under the new name; the new log
    // is written whole under a temporary name and then takes the live
    // name in one rename, so no writer ever finds the live name missing
    // or a new log without its first record. (The lock on the old file
    // keeps other writers and rotations out meanwhile.)
    std::fs::hard_link(&live, &segment)
        .with_context(|| format!("linking {} to {}", live.display(), segment.display()))?;
    let name = segment
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let first = chain_lines(
        seq,
        head.clone(),
        &[(
            actor.to_string(),
            "audit.rotated".to_string(),
            json!({ "previous_segment": name, "previous_head": head }),
        )],
    );
    let tmp = PathBuf::from(format!("{}.rotating", live.display()));
    let mut new = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    new.write_all(first.as_bytes())?;
    new.sync_all()?;
    std::fs::rename(&tmp, &live)
        .with_context(|| format!("renaming {} to {}", tmp.display(), live.display()))?;
    if let Some(dir) = live.parent() {
        File::open(dir)?.sync_all()?;
    }
    drop(file);
    Ok(Rotated { segment, head })
}

/// A record as `audit show` reads it: every field optional, so that a
/// damaged line still shows what it has (`audit verify` judges it).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Line {
    pub(crate) seq: Option<u64>,
    pub(crate) time: Option<String>,
    pub(crate) actor: Option<String>,
    pub(crate) event: Option<String>,
    #[serde(default)]
    pub(crate) details: Value,
}

impl Line {
    /// Reads one line; one that is not a JSON record shows as empty.
    pub(crate) fn parse(line: &str) -> Line {
        serde_json::from_str(line).unwrap_or_default()
    }
}

/// What `verify` found.
#[derive(Debug)]
pub(crate) struct Verified {
    /// Records checked, in every segment.
    pub(crate) records: u64,
    /// Segments checked (the live log included).
    pub(crate) segments: usize,
    pub(crate) head: String,
}

/// Checks the whole chain across its segments, oldest first; the error
/// names the segment and the first bad record. `anchor`: the hash the
/// oldest segment present continues from, when older ones were moved
/// away (without it, the oldest must start the chain).
pub(crate) fn verify(state: &StateDir, anchor: Option<&str>) -> Result<Verified> {
    let live = state.audit_log();
    let initialised = state.registry().exists() || state.registry_url_file().exists();
    match std::fs::metadata(&live) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if initialised {
                bail!(
                    "audit: {} is missing, but this hub was initialised (its registry is there): the log was deleted or moved away; restore it (or its segments) from a backup",
                    live.display()
                );
            }
            bail!(
                "audit: no audit log in {}: not an initialised hub (run renkei init)",
                state.display()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", live.display())),
        Ok(m) if m.len() == 0 => bail!(
            "audit: {} is empty, but every initialised hub's log has records: it was truncated; restore it from a backup",
            live.display()
        ),
        Ok(_) => {}
    }
    if let Some(a) = anchor {
        if a.len() != 64 || !a.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--anchor: not a SHA-256 hash (64 hexadecimal digits): {a}");
        }
    }
    let numbered = numbered_segments(state)?;
    let mut files: Vec<PathBuf> = numbered.iter().map(|(_, p)| p.clone()).collect();
    files.push(live);
    // A gap in the numbering is named with the break it causes.
    let gap_before = |i: usize| {
        if i > 0 && i < numbered.len() && numbered[i].0 != numbered[i - 1].0 + 1 {
            format!(" (audit.log.{} is missing)", numbered[i - 1].0 + 1)
        } else {
            String::new()
        }
    };
    let mut prev = anchor
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| GENESIS.to_string());
    let mut expected_seq: Option<u64> = if anchor.is_some() { None } else { Some(1) };
    let mut records = 0u64;
    for (i, path) in files.iter().enumerate() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for (j, line) in BufReader::new(file).lines().enumerate() {
            let n = j + 1;
            let line = line.with_context(|| format!("{name} line {n}: unreadable"))?;
            let v: Value = serde_json::from_str(&line)
                .map_err(|_| anyhow::anyhow!("{name} line {n}: not a JSON record"))?;
            let Value::Object(r) = &v else {
                bail!("{name} line {n}: not a JSON object")
            };
            let seq = r.get("seq").and_then(Value::as_u64);
            if r.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
                if records == 0 && anchor.is_none() {
                    bail!(
                        "{name} line 1: the log continues from an earlier segment that is not here (moved to an archive?); verify with --anchor HASH, the head `renkei audit verify` printed before it was moved"
                    );
                }
                if records == 0 {
                    bail!("{name} line 1: does not continue from the anchor given");
                }
                bail!(
                    "{name} line {n}: chain broken: a record before it was edited, removed or inserted{}",
                    if n == 1 { gap_before(i) } else { String::new() }
                );
            }
            let want = expected_seq.or(seq).unwrap_or(0);
            if seq != Some(want) {
                bail!("{name} line {n}: sequence number is not {want}");
            }
            if r.get("hash").and_then(Value::as_str) != Some(record_hash(r).as_str()) {
                bail!("{name} line {n}: record was edited (its hash does not match)");
            }
            prev = sha256_hex(line.as_bytes());
            expected_seq = Some(want + 1);
            records += 1;
        }
    }
    Ok(Verified {
        records,
        segments: files.len(),
        head: prev,
    })
}

/// Which records `audit show` prints.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filter {
    /// Records about this facility (`details.facility` or `details.name`).
    pub(crate) facility: Option<String>,
    /// This event, or the events under it (`refused` matches
    /// `refused.authentication`).
    pub(crate) event: Option<String>,
    /// At or after (seconds since the epoch).
    pub(crate) since: Option<i64>,
    /// At or before.
    pub(crate) until: Option<i64>,
}

/// Seconds since the epoch of an RFC 3339 time.
pub(crate) fn parse_time(text: &str) -> Result<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(time::OffsetDateTime::unix_timestamp)
        .map_err(|_| {
            anyhow::anyhow!(
                "not an RFC 3339 time (e.g. 2026-11-30T09:00:00+09:00 or 2026-11-30T00:00:00Z): {text}"
            )
        })
}

impl Filter {
    pub(crate) fn matches(&self, r: &Line) -> bool {
        if let Some(f) = &self.facility {
            let named = |k: &str| r.details.get(k).and_then(Value::as_str) == Some(f.as_str());
            if !named("facility") && !named("name") {
                return false;
            }
        }
        if let Some(e) = &self.event {
            let ev = r.event.as_deref().unwrap_or_default();
            if ev != e && !ev.starts_with(&format!("{e}.")) {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = r.time.as_deref().and_then(|t| parse_time(t).ok()) else {
                return false;
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }
}

/// How long the writer gathers records after the first of a batch, so
/// that a burst (thousands of facilities coming up) costs one `fdatasync`
/// per batch instead of one per few records.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// The daemon's audit writer: events go through a channel to a thread, so
/// the control loop never waits for the disk. [`Writer::finish`] waits
/// until everything recorded is on disk.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Record>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn start(state: &StateDir) -> Writer {
        let (tx, rx) = mpsc::channel::<Record>();
        let state = state.clone();
        let thread = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    let until = std::time::Instant::now() + GATHER;
                    // Gather until the window closes or the daemon is
                    // done recording (then write what came and stop).
                    let mut open = true;
                    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                        match rx.recv_timeout(left) {
                            Ok(r) => batch.push(r),
                            Err(mpsc::RecvTimeoutError::Timeout) => break,
                            Err(mpsc::RecvTimeoutError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    if let Err(e) = append_many(&state, &batch) {
                        tracing::error!("audit log write failed: {e:#}");
                    }
                    if !open {
                        break;
                    }
                }
            })
            .map_err(|e| tracing::error!("cannot start the audit writer: {e}"))
            .ok();
        Writer {
            tx: Some(tx),
            thread,
        }
    }

    pub(crate) fn record(&self, actor: &str, event: &str, details: Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((actor.to_string(), event.to_string(), details));
        }
    }

    /// Writes out everything recorded so far and stops the writer (at
    /// shutdown: nothing recorded is lost with the process).
    pub(crate) fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whatever way the daemon ends (an error return included), what it
/// recorded is written before the writer goes.
impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> StateDir {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        let d = std::env::temp_dir().join(format!("renkei-audit-{}", u64::from_ne_bytes(b)));
        std::fs::create_dir_all(&d).unwrap();
        StateDir::new(d)
    }

    /// Japanese text puts multi-byte characters across every 64 KiB step
    /// from the end, and a last line longer than one step is read whole
    /// (found with `renkei apply` of 1,000 facilities with Japanese
    /// display names: the next append said the log was not UTF-8).
    #[test]
    fn the_last_line_is_read_whole_across_multibyte_characters() {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        let path = std::env::temp_dir().join(format!("renkei-lastline-{}", u64::from_ne_bytes(b)));
        for (first, last) in [
            ("施".repeat(40_000), "設".repeat(10)),
            ("a".repeat(10), "設".repeat(50_000)),
            (String::new(), "x".to_string()),
        ] {
            let text = if first.is_empty() {
                format!("{last}\n")
            } else {
                format!("{first}\n{last}\n")
            };
            for shift in 0..3 {
                let body = if shift == 0 {
                    text.clone()
                } else {
                    format!("{}\n{text}", "b".repeat(shift))
                };
                std::fs::write(&path, body).unwrap();
                let mut f = File::open(&path).unwrap();
                assert_eq!(last_line(&mut f).unwrap().as_deref(), Some(last.as_str()));
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    fn lines(s: &StateDir) -> Vec<String> {
        std::fs::read_to_string(s.audit_log())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write(s: &StateDir, lines: &[String]) {
        std::fs::write(
            s.audit_log(),
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    #[test]
    fn tampering_is_detected() {
        let s = state();
        for i in 0..5 {
            append(&s, "tester", "peer.add", json!({ "name": format!("f{i}") })).unwrap();
        }
        let v = verify(&s, None).unwrap();
        assert_eq!(v.records, 5);
        let good = lines(&s);

        let mut edited = good.clone();
        edited[2] = edited[2].replace("f2", "fX");
        write(&s, &edited);
        assert!(verify(&s, None)
            .unwrap_err()
            .to_string()
            .starts_with("audit.log line 3"));

        let mut removed = good.clone();
        removed.remove(1);
        write(&s, &removed);
        assert!(verify(&s, None)
            .unwrap_err()
            .to_string()
            .starts_with("audit.log line 2"));

        let mut inserted = good.clone();
        inserted.insert(3, good[3].clone());
        write(&s, &inserted);
        assert!(verify(&s, None).is_err());

        let mut last = good.clone();
        last[4] = last[4].replace("f4", "f9");
        write(&s, &last);
        assert!(verify(&s, None).unwrap_err().to_string().contains("edited"));

        write(&s, &good);
        assert_eq!(verify(&s, None).unwrap().head, v.head);
        let mode = std::fs::metadata(s.audit_log()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&s).unwrap();
    }

    #[test]
    fn concurrent_writers_keep_one_chain() {
        let s = state();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        append(&s, "tester", "x", json!({ "t": t, "i": i })).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut w = Writer::start(&s);
        for i in 0..10 {
            w.record("daemon", "sa.up", json!({ "i": i }));
        }
        // Finishing waits for the disk: every record is there at once.
        w.finish();
        assert_eq!(verify(&s, None).unwrap().records, 110);
        w.record("daemon", "sa.up", json!({ "late": true }));
        assert_eq!(verify(&s, None).unwrap().records, 110);
        // Dropping a writer (an error return) writes out what it holds too.
        let w = Writer::start(&s);
        w.record("daemon", "hub.stop", json!({}));
        drop(w);
        assert_eq!(verify(&s, None).unwrap().records, 111);
        std::fs::remove_dir_all(&s).unwrap();
    }

    #[test]
    fn rotated_segments_verify_as_one_chain_and_an_archive_needs_its_anchor() {
        let s = state();
        for i in 0..3 {
            append(&s, "tester", "peer.add", json!({ "name": format!("f{i}") })).unwrap();
        }
        let before = verify(&s, None).unwrap();
        let r = rotate(&s, "ops (uid 1000)").unwrap();
        assert_eq!(
            r.head, before.head,
            "the new log continues from the old head"
        );
        assert!(r.segment.ends_with("audit.log.1"));
        for i in 3..5 {
            append(&s, "tester", "peer.add", json!({ "name": format!("f{i}") })).unwrap();
        }
        let r2 = rotate(&s, "ops (uid 1000)").unwrap();
        assert!(r2.segment.ends_with("audit.log.2"));
        append(&s, "tester", "peer.add", json!({ "name": "f5" })).unwrap();
        let v = verify(&s, None).unwrap();
        // 6 records and 2 rotation records, in 3 segments.
        assert_eq!((v.records, v.segments), (8, 3));
        let first = Line::parse(&lines(&s)[0]);
        assert_eq!(first.event.as_deref(), Some("audit.rotated"));
        assert_eq!(first.seq, Some(7), "sequence numbers go on");

        // The oldest segment archived: refused without an anchor, accepted
        // with the head the operator kept.
        let archived =
            std::env::temp_dir().join(format!("renkei-audit-archive-{}", std::process::id()));
        std::fs::rename(s.as_ref().join("audit.log.1"), &archived).unwrap();
        let e = verify(&s, None).unwrap_err().to_string();
        assert!(
            e.contains("audit.log.2 line 1") && e.contains("--anchor"),
            "{e}"
        );
        let v = verify(&s, Some(&before.head)).unwrap();
        assert_eq!((v.records, v.segments), (5, 2));
        let wrong = "1".repeat(64);
        assert!(verify(&s, Some(&wrong))
            .unwrap_err()
            .to_string()
            .contains("anchor"));
        assert!(verify(&s, Some("xyz")).is_err());
        // A segment missing from the middle breaks the chain, named.
        std::fs::rename(&archived, s.as_ref().join("audit.log.1")).unwrap();
        std::fs::remove_file(s.as_ref().join("audit.log.2")).unwrap();
        let e = verify(&s, None).unwrap_err().to_string();
        assert!(e.starts_with("audit.log line 1: chain broken"), "{e}");
        std::fs::remove_dir_all(&s).unwrap();
    }

    #[test]
    fn writers_keep_one_chain_across_a_rotation() {
        let s = state();
        append(&s, "tester", "start", json!({})).unwrap();
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..40 {
                        append(&s, "tester", "x", json!({ "t": t, "i": i })).unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..5 {
            rotate(&s, "ops").unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
        let v = verify(&s, None).unwrap();
        assert_eq!(v.records, 1 + 120 + 5);
        assert_eq!(v.segments, 6);
        std::fs::remove_dir_all(&s).unwrap();
    }

    #[test]
    fn a_missing_or_empty_log_of_an_initialised_hub_fails() {
        let s = state();
        let e = verify(&s, None).unwrap_err().to_string();
        assert!(e.contains("not an initialised hub"), "{e}");
        std::fs::write(s.registry(), b"").unwrap();
        let e = verify(&s, None).unwrap_err().to_string();
        assert!(e.contains("is missing") && e.contains("initialised"), "{e}");
        std::fs::write(s.audit_log(), b"").unwrap();
        let e = verify(&s, None).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        assert!(rotate(&s, "ops").is_err(), "nothing to rotate");
        std::fs::remove_dir_all(&s).unwrap();
    }

    #[test]
    fn show_filters_by_facility_event_and_time() {
        let line = |time: &str, event: &str, details: Value| Line {
            seq: Some(1),
            time: Some(time.into()),
            actor: None,
            event: Some(event.into()),
            details,
        };
        let a = line(
            "2026-11-30T01:00:00Z",
            "refused.authentication",
            json!({ "facility": "kyoto" }),
        );
        let b = line(
            "2026-11-30T02:00:00Z",
            "peer.add",
            json!({ "name": "kyoto" }),
        );
        let c = line(
            "2026-11-30T03:00:00Z",
            "sa.ike_up",
            json!({ "facility": "osaka" }),
        );
        let f = Filter {
            facility: Some("kyoto".into()),
            ..Filter::default()
        };
        assert!(f.matches(&a) && f.matches(&b) && !f.matches(&c));
        let f = Filter {
            event: Some("refused".into()),
            ..Filter::default()
        };
        assert!(f.matches(&a) && !f.matches(&b));
        let f = Filter {
            event: Some("refused.auth".into()),
            ..Filter::default()
        };
        assert!(!f.matches(&a), "whole names only");
        // 10:30 in Tokyo is 01:30 UTC.
        let f = Filter {
            since: Some(parse_time("2026-11-30T10:30:00+09:00").unwrap()),
            until: Some(parse_time("2026-11-30T02:00:00Z").unwrap()),
            ..Filter::default()
        };
        assert!(!f.matches(&a) && f.matches(&b) && !f.matches(&c));
        assert!(parse_time("yesterday").is_err());
        assert!(Filter::default().matches(&c));
    }

    #[test]
    fn the_login_user_is_named_beside_the_user() {
        assert_eq!(acting(0, None), "root (uid 0)");
        assert_eq!(acting(0, Some(0)), "root (uid 0)");
        let both = acting(0, Some(4_000_123));
        assert!(
            both.starts_with("root (uid 0) logged in as ") && both.ends_with("(uid 4000123)"),
            "{both}"
        );
    }
}
