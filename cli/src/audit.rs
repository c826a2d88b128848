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

use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc;

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

/// Who runs this process: the user, and who invoked it through sudo.
pub(crate) fn actor() -> String {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(u32::MAX);
    let mut who = user(uid);
    if let Ok(sudo) = std::env::var("SUDO_USER") {
        who.push_str(&format!(" via sudo by {sudo}"));
    }
    who
}

/// The hash of a record: SHA-256 over its JSON without the `hash` field,
/// keys in the order written.
fn record_hash(record: &Map<String, Value>) -> String {
    let mut without = record.clone();
    without.remove("hash");
    sha256_hex(Value::Object(without).to_string().as_bytes())
}

/// The last line of the file (records are short; read from the end).
fn last_line(file: &mut File) -> Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)
        .context("audit log is not UTF-8")?;
    Ok(tail
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .map(str::to_string))
}

/// Appends one record under an exclusive lock.
pub(crate) fn append(state: &StateDir, actor: &str, event: &str, details: Value) -> Result<()> {
    append_many(state, &[(actor.to_string(), event.to_string(), details)])
}

fn append_many(state: &StateDir, records: &[(String, String, Value)]) -> Result<()> {
    let p = state.audit_log();
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", p.display()))?;
    let (mut seq, mut prev) = match last_line(&mut file)? {
        Some(line) => {
            let last: Value = serde_json::from_str(&line)
                .context("the last audit record is not JSON; run `renkei audit verify`")?;
            let seq = serde_json::from_value::<Line>(last)
                .ok()
                .and_then(|l| l.seq);
            (seq.unwrap_or(0), sha256_hex(line.as_bytes()))
        }
        None => (0, GENESIS.to_string()),
    };
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
    file.write_all(out.as_bytes())?;
    file.sync_data()?;
    Ok(())
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
    pub(crate) records: u64,
    pub(crate) head: String,
}

/// Checks the whole chain; the error names the first bad record.
pub(crate) fn verify(state: &StateDir) -> Result<Verified> {
    let p = state.audit_log();
    let file = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Verified {
                records: 0,
                head: GENESIS.into(),
            })
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", p.display())),
    };
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1u64;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("line {n}: unreadable"))?;
        let v: Value = serde_json::from_str(&line)
            .map_err(|_| anyhow::anyhow!("line {n}: not a JSON record"))?;
        let Value::Object(r) = &v else {
            bail!("line {n}: not a JSON object")
        };
        if r.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            bail!("line {n}: chain broken: a record before it was edited, removed or inserted");
        }
        if r.get("seq").and_then(Value::as_u64) != Some(expected_seq) {
            bail!("line {n}: sequence number is not {expected_seq}");
        }
        if r.get("hash").and_then(Value::as_str) != Some(record_hash(r).as_str()) {
            bail!("line {n}: record was edited (its hash does not match)");
        }
        prev = sha256_hex(line.as_bytes());
        expected_seq += 1;
    }
    Ok(Verified {
        records: expected_seq - 1,
        head: prev,
    })
}

/// How long the writer gathers records after the first of a batch, so
/// that a burst (thousands of facilities coming up) costs one `fdatasync`
/// per batch instead of one per few records.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

type Record = (String, String, Value);

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
        let v = verify(&s).unwrap();
        assert_eq!(v.records, 5);
        let good = lines(&s);

        let mut edited = good.clone();
        edited[2] = edited[2].replace("f2", "fX");
        write(&s, &edited);
        assert!(verify(&s).unwrap_err().to_string().starts_with("line 3"));

        let mut removed = good.clone();
        removed.remove(1);
        write(&s, &removed);
        assert!(verify(&s).unwrap_err().to_string().starts_with("line 2"));

        let mut inserted = good.clone();
        inserted.insert(3, good[3].clone());
        write(&s, &inserted);
        assert!(verify(&s).is_err());

        let mut last = good.clone();
        last[4] = last[4].replace("f4", "f9");
        write(&s, &last);
        assert!(verify(&s).unwrap_err().to_string().contains("edited"));

        write(&s, &good);
        assert_eq!(verify(&s).unwrap().head, v.head);
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
        assert_eq!(verify(&s).unwrap().records, 110);
        w.record("daemon", "sa.up", json!({ "late": true }));
        assert_eq!(verify(&s).unwrap().records, 110);
        // Dropping a writer (an error return) writes out what it holds too.
        let w = Writer::start(&s);
        w.record("daemon", "hub.stop", json!({}));
        drop(w);
        assert_eq!(verify(&s).unwrap().records, 111);
        std::fs::remove_dir_all(&s).unwrap();
    }
}
