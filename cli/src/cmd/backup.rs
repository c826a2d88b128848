//! `renkei backup` and `renkei restore`: the whole state directory as one
//! passphrase-encrypted file.
//!
//! ```text
//!  backup:  registry.db ──SQLite online backup──┐
//!           ca/*, hub.*, audit.log* ────────────┼─▶ tar ─▶ age (scrypt passphrase) ─▶ FILE (0600)
//!           renkei-backup.json (manifest) ──────┘
//!  restore: FILE ─▶ age ─▶ tar ─▶ DIR.restoring/ ─▶ check (registry opens) ─▶ rename to DIR
//! ```
//!
//! The backup is taken while the hub runs: the registry through SQLite's
//! backup API (a consistent snapshot even mid-write), the audit log up to
//! its last complete line (a prefix of the hash chain verifies). Restore
//! never overwrites: the target must not exist or be empty, and it appears
//! only complete (unpacked beside it, then renamed).

use crate::registry::Registry;
use crate::state::StateDir;
use crate::{audit, registry};
use age::secrecy::SecretString;
use anyhow::{bail, Context, Result};
use rust_i18n::t;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The manifest's name inside the archive (its first entry).
const MANIFEST: &str = "renkei-backup.json";
/// The archive layout this version writes and reads.
const FORMAT: u32 = 1;
/// A passphrase shorter than this is refused when writing a backup.
const MIN_PASSPHRASE: usize = 10;
/// Largest file restored (a registry of 10,000 facilities is a few MB;
/// audit segments are rotated).
const MAX_ENTRY: u64 = 4 << 30;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// The renkei version that wrote it.
    renkei: String,
    /// When (RFC 3339).
    created: String,
    /// The hub's identity.
    hub_id: String,
    /// Facilities in the registry.
    facilities: usize,
    /// Every file, relative to the state directory.
    files: Vec<String>,
}

/// The passphrase: the first line of `file`, or asked on the terminal
/// (twice when `confirm`).
fn passphrase(file: Option<&Path>, confirm: bool) -> Result<SecretString> {
    let text = match file {
        Some(path) => {
            let text =
                zeroize::Zeroizing::new(fs::read_to_string(path).with_context(|| {
                    t!("backup.reading_passphrase_file", path = path.display())
                })?);
            zeroize::Zeroizing::new(text.lines().next().unwrap_or("").to_string())
        }
        None => {
            let first = zeroize::Zeroizing::new(
                rpassword::prompt_password(t!("backup.prompt"))
                    .context(t!("backup.no_terminal"))?,
            );
            if confirm {
                let again = zeroize::Zeroizing::new(
                    rpassword::prompt_password(t!("backup.prompt_again"))
                        .context(t!("backup.passphrase"))?,
                );
                if *again != *first {
                    bail!("{}", t!("backup.passphrases_differ"));
                }
            }
            first
        }
    };
    if text.is_empty() {
        bail!("{}", t!("backup.passphrase_empty"));
    }
    if confirm && text.chars().count() < MIN_PASSPHRASE {
        bail!("{}", t!("backup.passphrase_short", min = MIN_PASSPHRASE));
    }
    Ok(SecretString::from(text.to_string()))
}

/// `path` relative to the state directory, as stored in the archive.
fn relative(root: &Path, path: &Path) -> Result<String> {
    let rel = path.strip_prefix(root)?;
    rel.to_str()
        .map(str::to_string)
        .with_context(|| t!("backup.not_utf8", path = path.display()))
}

/// Every regular file of the state directory but the registry (taken
/// through SQLite) and temporary files; the control socket is skipped.
fn state_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            fs::read_dir(&dir).with_context(|| t!("cli.io_reading", path = dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file()
                && !(dir == root && name.starts_with("registry.db"))
                && !name.ends_with(".tmp")
            {
                out.push(path);
            } else if !kind.is_socket() && !kind.is_file() {
                tracing::debug!(path = %path.display(), "not backed up (not a regular file)");
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A file's contents; an audit log segment up to its last complete
/// record (the hub may be appending one).
fn snapshot(path: &Path) -> Result<Vec<u8>> {
    let mut data = fs::read(path).with_context(|| t!("cli.io_reading", path = path.display()))?;
    let is_audit = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("audit.log"));
    if is_audit {
        let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        data.truncate(end);
    }
    Ok(data)
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    data: &[u8],
    mode: u32,
    mtime: u64,
) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(mode & 0o777);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
        .with_context(|| t!("backup.archiving", name = name))?;
    Ok(())
}

/// `renkei backup --out FILE`.
pub(crate) fn backup(state: &StateDir, out: &Path, passphrase_file: Option<&Path>) -> Result<()> {
    let reg = Registry::open(state)?;
    if reg.is_postgres() {
        bail!(
            "{}",
            rust_i18n::t!("registry_db.backup_refused", db = reg.describe())
        );
    }
    let hub = reg.hub()?;
    let facilities = reg.peers()?.len();
    drop(reg);
    let pass = passphrase(passphrase_file, true)?;
    let root = state.root();

    // The registry: SQLite's online backup into a private temporary copy.
    let tmp = tempdir_beside(out)?;
    let db_copy = tmp.0.join("registry.db");
    let result = (|| -> Result<()> {
        let src = rusqlite::Connection::open_with_flags(
            state.registry(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| t!("cli.io_opening", path = state.registry().display()))?;
        src.busy_timeout(std::time::Duration::from_secs(10))?;
        src.backup(rusqlite::DatabaseName::Main, &db_copy, None)
            .context(t!("backup.online_backup"))?;
        let now = crate::certs::unix_now().max(0) as u64;
        let files = state_files(root)?;
        let mut names = vec!["registry.db".to_string()];
        for f in &files {
            names.push(relative(root, f)?);
        }
        let manifest = Manifest {
            format: FORMAT,
            renkei: env!("CARGO_PKG_VERSION").to_string(),
            created: registry::now_rfc3339(),
            hub_id: hub.id.to_string(),
            facilities,
            files: names,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .with_context(|| t!("backup.out_creating", path = out.display()))?;
        let written = (|| -> Result<()> {
            let encrypted = age::Encryptor::with_user_passphrase(pass)
                .wrap_output(std::io::BufWriter::new(&file))
                .context(t!("backup.out_encrypting"))?;
            let mut tar = tar::Builder::new(encrypted);
            append(
                &mut tar,
                MANIFEST,
                &serde_json::to_vec_pretty(&manifest)?,
                0o600,
                now,
            )?;
            append(&mut tar, "registry.db", &fs::read(&db_copy)?, 0o600, now)?;
            for f in &files {
                let meta = fs::metadata(f)?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(now, |d| d.as_secs());
                append(
                    &mut tar,
                    &relative(root, f)?,
                    &snapshot(f)?,
                    meta.permissions().mode(),
                    mtime,
                )?;
            }
            let encrypted = tar.into_inner().context(t!("backup.out_writing"))?;
            let mut buffered = encrypted.finish().context(t!("backup.out_writing"))?;
            buffered.flush().context(t!("backup.out_writing"))?;
            drop(buffered);
            file.sync_all().context(t!("backup.out_writing"))?;
            Ok(())
        })();
        if written.is_err() {
            let _ = fs::remove_file(out);
        }
        written?;
        let size = fs::metadata(out)?.len();
        println!(
            "{}",
            t!(
                "backup.done",
                state = state.display(),
                facilities = facilities,
                files = manifest.files.len(),
                out = out.display(),
                bytes = size
            )
        );
        audit::append(
            state,
            &audit::actor(),
            "hub.backup",
            json!({ "file": out.display().to_string(), "files": manifest.files.len(), "bytes": size }),
        )?;
        Ok(())
    })();
    drop(tmp);
    result
}

/// A private (0700) temporary directory beside `path`, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tempdir_beside(path: &Path) -> Result<TempDir> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or("renkei".into(), |n| n.to_string_lossy().into_owned());
    let dir = parent.join(format!(".{name}.{}.partial", std::process::id()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| t!("cli.io_creating", path = dir.display()))?;
    Ok(TempDir(dir))
}

/// An archive path that stays inside the state directory: relative, no
/// `..`, at most one directory deep.
fn safe_path(name: &Path) -> Result<()> {
    let parts: Vec<_> = name.components().collect();
    let ok = !parts.is_empty()
        && parts.len() <= 2
        && parts.iter().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        bail!("{}", t!("backup.outside", name = name.display()));
    }
    Ok(())
}

/// `renkei restore --in FILE` into `state`.
pub(crate) fn restore(
    state: &StateDir,
    input: &Path,
    passphrase_file: Option<&Path>,
) -> Result<()> {
    let root = state.root();
    if state.registry_override().is_some() {
        bail!("{}", rust_i18n::t!("registry_db.restore_refused"));
    }
    if root.exists() {
        let mut entries = fs::read_dir(root)
            .with_context(|| t!("backup.state_reading", path = root.display()))?;
        if entries.next().is_some() {
            if state.registry().exists() {
                bail!("{}", t!("backup.state_holds_hub", path = root.display()));
            }
            bail!("{}", t!("backup.state_not_empty", path = root.display()));
        }
    }
    let file =
        File::open(input).with_context(|| t!("backup.in_opening", path = input.display()))?;
    let decryptor = age::Decryptor::new(std::io::BufReader::new(file)).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            t!("backup.not_a_backup", path = input.display(), error = e)
        )
    })?;
    if !decryptor.is_scrypt() {
        bail!("{}", t!("backup.not_passphrase", path = input.display()));
    }
    let pass = passphrase(passphrase_file, false)?;
    let identity = age::scrypt::Identity::new(pass);
    let reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                anyhow::anyhow!("{}", t!("backup.wrong_passphrase", path = input.display()))
            }
            e => anyhow::anyhow!(
                "{}",
                t!("backup.in_error", path = input.display(), error = e)
            ),
        })?;

    // Unpack beside the target, then rename: the target appears complete
    // or not at all.
    let parent = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .create(&parent)
        .with_context(|| t!("backup.state_creating", path = parent.display()))?;
    let staging = tempdir_beside(root)?;
    let manifest = unpack(reader, &staging.0)?;
    let staged = StateDir::new(&staging.0);
    let reg = Registry::open(&staged).context(t!("backup.registry_does_not_open"))?;
    let facilities = reg.peers()?.len();
    let hub_id = reg.hub()?.id.to_string();
    drop(reg);
    let verified = audit::verify(&staged, None);
    if root.exists() {
        fs::remove_dir(root).with_context(|| t!("backup.state_path", path = root.display()))?;
    }
    fs::rename(&staging.0, root)
        .with_context(|| t!("backup.state_creating", path = root.display()))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
    println!(
        "{}",
        t!(
            "backup.restored",
            hub = hub_id,
            facilities = facilities,
            files = manifest.files.len(),
            created = crate::i18n::local_time_rfc3339(&manifest.created),
            version = manifest.renkei,
            path = root.display()
        )
    );
    match verified {
        Ok(_) => println!("{}", t!("backup.audit_verifies")),
        Err(e) => println!("{}", t!("backup.audit_problem", error = format!("{e:#}"))),
    }
    println!("{}", t!("backup.start_hub"));
    let _ = audit::append(
        state,
        &audit::actor(),
        "hub.restore",
        json!({ "file": input.display().to_string(), "created": manifest.created }),
    );
    Ok(())
}

/// Unpacks the archive into `dir`; checks the manifest comes first and
/// lists exactly what follows.
fn unpack(reader: impl Read, dir: &Path) -> Result<Manifest> {
    let mut archive = tar::Archive::new(reader);
    let mut manifest: Option<Manifest> = None;
    let mut seen = Vec::new();
    for entry in archive.entries().context(t!("backup.reading_backup"))? {
        let mut entry = entry.context(t!("backup.reading_backup"))?;
        let name = entry.path().context(t!("backup.entry_name"))?.into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            bail!("{}", t!("backup.not_a_file", name = name.display()));
        }
        let size = entry.header().size()?;
        if size > MAX_ENTRY {
            bail!(
                "{}",
                t!("backup.too_large", name = name.display(), size = size)
            );
        }
        if manifest.is_none() {
            if name != Path::new(MANIFEST) {
                bail!("{}", t!("backup.no_manifest"));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            let m: Manifest = serde_json::from_slice(&text).context(t!("backup.manifest"))?;
            if m.format != FORMAT {
                bail!(
                    "{}",
                    t!("backup.format", format = m.format, supported = FORMAT)
                );
            }
            manifest = Some(m);
            continue;
        }
        safe_path(&name)?;
        let target = dir.join(&name);
        if let Some(p) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(p)?;
        }
        let mode = entry.header().mode()? & 0o700;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.max(0o600))
            .open(&target)
            .with_context(|| t!("backup.state_writing", path = target.display()))?;
        std::io::copy(&mut entry, &mut out)
            .with_context(|| t!("backup.cut_short", name = name.display()))?;
        out.sync_all()?;
        seen.push(name.to_string_lossy().into_owned());
    }
    let manifest = manifest.context(t!("backup.empty"))?;
    let mut listed = manifest.files.clone();
    listed.sort();
    seen.sort();
    if listed != seen {
        bail!("{}", t!("backup.incomplete"));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crafted archive cannot write outside the state directory.
    #[test]
    fn entries_stay_inside_the_state_directory() {
        for good in ["registry.db", "ca/ca.key", "audit.log.3"] {
            assert!(safe_path(Path::new(good)).is_ok(), "{good}");
        }
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "ca/../../x",
            "a/b/c",
            "",
            "./.",
        ] {
            assert!(safe_path(Path::new(bad)).is_err(), "{bad}");
        }
    }

    /// The audit log is taken up to its last complete record.
    #[test]
    fn audit_snapshot_ends_at_a_record() {
        let dir = std::env::temp_dir().join(format!("renkei-backup-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("audit.log");
        fs::write(&log, b"{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        assert_eq!(snapshot(&log).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        let other = dir.join("hub.pem");
        fs::write(&other, b"no newline").unwrap();
        assert_eq!(snapshot(&other).unwrap(), b"no newline");
        fs::remove_dir_all(&dir).unwrap();
    }
}
