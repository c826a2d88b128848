//! `renkei hub show | set | renew-cert` and `renkei ca rollover |
//! retire-old`: changing the hub after `init`.
//!
//! Every key or certificate these commands replace is kept first in
//! `STATE/retired/` as `NAME.YYYYMMDDTHHMMSSZ` (a hard link, so the kept
//! file is the very one that was in use); new files are written through a
//! temporary file and a rename; a step that fails puts the previous files
//! back. Each change is audited, and a running hub is told to take the new
//! certificates (`ReloadCredentials`), which keeps established SAs.

use super::pad;
use crate::args::{CaCommand, HubCommand};
use crate::audit;
use crate::certs::{self, fingerprint, unix_now, write_file, HUB_CERT_NAME};
use crate::control::{self, Request};
use crate::i18n::local_time_rfc3339;
use crate::registry::{now_rfc3339, CertRecord, PublicAddr, Registry};
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use pki::ca::{Ca, KeyKind};
use rust_i18n::t;
use serde::Serialize;
use serde_json::json;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub(crate) fn run(state: &StateDir, cmd: HubCommand) -> Result<()> {
    match cmd {
        HubCommand::Show { json } => {
            let reg = Registry::open(state)?;
            let view = show(state, &reg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", view.text());
            }
        }
        HubCommand::Set { public_addr } => {
            let mut reg = Registry::open(state)?;
            let old = reg.hub()?.public_addrs;
            set_public_addrs(&mut reg, &public_addr)?;
            audit::append(
                state,
                &audit::actor(),
                "hub.set",
                json!({ "public_addrs": public_addr, "previous_public_addrs": old }),
            )?;
            println!("{}", t!("hub.public_addrs_set", addrs = join(&public_addr)));
        }
        HubCommand::Seal { cluster_key } => super::ha::seal(state, cluster_key)?,
        HubCommand::RenewCert { days } => {
            let mut reg = Registry::open(state)?;
            let r = renew_cert(state, &mut reg, days)?;
            audit::append(
                state,
                &audit::actor(),
                "hub.renew_cert",
                json!({ "serial": r.serial, "previous_serial": r.previous_serial,
                        "not_after": pki::verify::iso(r.not_after), "kept": r.kept }),
            )?;
            println!(
                "{}",
                t!(
                    "hub.renewed",
                    serial = r.serial,
                    until = crate::i18n::local_time(r.not_after),
                    previous = r.previous_serial.as_deref().unwrap_or("-"),
                    dir = state.retired_dir().display()
                )
            );
            drop(reg);
            notify_credentials(state);
        }
    }
    Ok(())
}

pub(crate) fn run_ca(state: &StateDir, cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Rollover { key } => {
            let mut reg = Registry::open(state)?;
            let r = rollover(state, &mut reg, key)?;
            audit::append(
                state,
                &audit::actor(),
                "ca.rollover",
                json!({ "ca": r.ca, "previous_ca": r.previous_ca, "hub_serial": r.hub_serial,
                        "key": r.key.to_string(), "kept": r.kept }),
            )?;
            match &r.previous_ca {
                Some(prev) => println!(
                    "{}",
                    t!(
                        "hub.rolled_over",
                        ca = r.ca,
                        key = r.key,
                        serial = r.hub_serial,
                        previous = prev
                    )
                ),
                None => println!(
                    "{}",
                    t!(
                        "hub.ca_created",
                        ca = r.ca,
                        key = r.key,
                        serial = r.hub_serial
                    )
                ),
            }
            drop(reg);
            notify_credentials(state);
        }
        CaCommand::RetireOld => {
            let reg = Registry::open(state)?;
            let r = retire_old(state, &reg)?;
            audit::append(
                state,
                &audit::actor(),
                "ca.retire_old",
                json!({ "retired_ca": r.retired_ca, "kept": r.kept }),
            )?;
            println!(
                "{}",
                t!(
                    "hub.retired",
                    ca = r.retired_ca,
                    dir = state.retired_dir().display()
                )
            );
            drop(reg);
            notify_credentials(state);
        }
    }
    Ok(())
}

/// Tells a running hub to take its certificates and CAs again.
fn notify_credentials(state: &StateDir) {
    // A pair of hubs takes its credentials from the registry: seal the
    // new ones there first.
    super::ha::reseal(state);
    match control::request(state, &Request::ReloadCredentials) {
        Ok(_) => println!("{}", t!("hub.applied")),
        Err(_) => println!("{}", t!("cli.not_running_later")),
    }
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `hub set --public-addr`: refuses an address given twice; refused input
/// changes nothing.
pub(crate) fn set_public_addrs(reg: &mut Registry, addrs: &[PublicAddr]) -> Result<()> {
    if addrs.is_empty() {
        bail!("{}", t!("hub.no_public_addr"));
    }
    for (i, a) in addrs.iter().enumerate() {
        if addrs[..i]
            .iter()
            .any(|b| b.to_string().eq_ignore_ascii_case(&a.to_string()))
        {
            bail!("{}", t!("hub.public_addr_twice", addr = a));
        }
    }
    reg.set_public_addrs(addrs)
}

// ---- files ------------------------------------------------------------

/// `YYYYMMDDTHHMMSSZ` for now: the suffix of kept files.
fn stamp() -> String {
    now_rfc3339().replace(['-', ':'], "")
}

/// A file about to be replaced or created: its path, its new contents and
/// mode, and (for rolling back) what it held before.
struct Change {
    path: PathBuf,
    data: Vec<u8>,
    mode: u32,
    before: Option<zeroize::Zeroizing<Vec<u8>>>,
}

/// Replaces or creates files as one step: each existing one is first kept
/// in STATE/retired/ (hard link), then every file is written (temporary
/// file and rename). If a write fails, the files already written are put
/// back as they were. Returns the kept paths and the changes (for
/// [`undo`] if a later step fails).
fn apply(
    state: &StateDir,
    files: Vec<(PathBuf, Vec<u8>, u32)>,
) -> Result<(Vec<PathBuf>, Vec<Change>)> {
    let retired = state.retired_dir();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&retired)
        .with_context(|| t!("cli.io_creating", path = retired.display()))?;
    let stamp = stamp();
    let mut changes = Vec::new();
    for (path, data, mode) in files {
        let before = match std::fs::read(&path) {
            Ok(b) => Some(zeroize::Zeroizing::new(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| t!("cli.io_reading", path = path.display())),
        };
        changes.push(Change {
            path,
            data,
            mode,
            before,
        });
    }
    let mut kept = Vec::new();
    for c in changes.iter().filter(|c| c.before.is_some()) {
        let name = c
            .path
            .file_name()
            .context(t!("cli.io_file_name"))?
            .to_string_lossy();
        let to = retired.join(format!("{name}.{stamp}"));
        if let Err(e) = std::fs::hard_link(&c.path, &to) {
            for k in &kept {
                let _ = std::fs::remove_file(k);
            }
            return Err(e)
                .with_context(|| t!("cli.io_keeping", path = c.path.display(), to = to.display()));
        }
        kept.push(to);
    }
    for (i, c) in changes.iter().enumerate() {
        if let Err(e) = write_file(&c.path, &c.data, c.mode) {
            undo(&changes[..i]);
            return Err(e);
        }
    }
    Ok((kept, changes))
}

/// Puts files written by [`apply`] back as they were.
fn undo(changes: &[Change]) {
    for c in changes.iter().rev() {
        match &c.before {
            Some(b) => {
                let _ = write_file(&c.path, b, c.mode);
            }
            None => {
                let _ = std::fs::remove_file(&c.path);
            }
        }
    }
}

fn read_der(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| t!("cli.io_reading", path = path.display()))?;
    certs::pem_der(&text, path)
}

/// The key type of the hub's current certificate, as recorded.
fn hub_key_kind(reg: &Registry) -> KeyKind {
    reg.certs()
        .ok()
        .and_then(|c| {
            c.into_iter()
                .rev()
                .find(|c| c.name == HUB_CERT_NAME)
                .and_then(|c| c.key_type.parse().ok())
        })
        .unwrap_or(KeyKind::EcdsaP384)
}

// ---- renew-cert ----------------------------------------------------------

#[derive(Debug)]
pub(crate) struct Renewed {
    pub(crate) serial: String,
    pub(crate) previous_serial: Option<String>,
    pub(crate) not_after: i64,
    pub(crate) kept: Vec<PathBuf>,
}

/// `hub renew-cert`: a new key and certificate for the hub's identity from
/// the current CA.
pub(crate) fn renew_cert(state: &StateDir, reg: &mut Registry, days: u32) -> Result<Renewed> {
    if !(1..=3650).contains(&days) {
        bail!("{}", t!("hub.days_range", days = days));
    }
    let hub = reg.hub()?;
    let ca = certs::load_ca(state)?;
    let previous_serial = read_der(&state.hub_cert())
        .ok()
        .and_then(|d| pki::verify::describe(&d).ok())
        .map(|c| c.serial);
    let kind = hub_key_kind(reg);
    let now = unix_now();
    let issued = ca
        .issue(&hub.id, kind, now, days)
        .map_err(|e| anyhow::anyhow!("{}", t!("hub.hub_certificate", error = e)))?;
    let (kept, changes) = apply(
        state,
        vec![
            (state.hub_key(), issued.key_pem.as_bytes().to_vec(), 0o600),
            (state.hub_cert(), issued.cert_pem.as_bytes().to_vec(), 0o644),
        ],
    )?;
    let recorded = (|| -> Result<()> {
        reg.record_cert(&CertRecord {
            serial: issued.serial.clone(),
            name: HUB_CERT_NAME.into(),
            identity: hub.id.to_string(),
            key_type: kind.to_string(),
            not_after: issued.not_after,
            issued: now_rfc3339(),
            revoked: None,
        })?;
        reg.set_cert_ca(&issued.serial, &fingerprint(ca.cert_der()))
    })();
    if let Err(e) = recorded {
        undo(&changes);
        return Err(e);
    }
    Ok(Renewed {
        serial: issued.serial,
        previous_serial,
        not_after: issued.not_after,
        kept,
    })
}

// ---- CA rollover -----------------------------------------------------------

#[derive(Debug)]
pub(crate) struct RolledOver {
    /// SHA-256 fingerprints of the new and the previous CA certificate.
    pub(crate) ca: String,
    pub(crate) previous_ca: Option<String>,
    pub(crate) hub_serial: String,
    pub(crate) key: KeyKind,
    pub(crate) kept: Vec<PathBuf>,
}

/// `ca rollover`: a new CA and a hub certificate from it; the previous CA
/// and the hub's certificate from it move to ca-old.* and hub-old.*, still
/// used until [`retire_old`]. A state directory without a CA gets its
/// first one.
pub(crate) fn rollover(
    state: &StateDir,
    reg: &mut Registry,
    key: Option<KeyKind>,
) -> Result<RolledOver> {
    let hub = reg.hub()?;
    let kind = key.unwrap_or_else(|| hub_key_kind(reg));
    if !matches!(
        kind,
        KeyKind::EcdsaP384 | KeyKind::EcdsaP256 | KeyKind::Rsa3072
    ) {
        bail!("{}", t!("hub.ca_key_kind", kind = kind));
    }
    if certs::rollover_under_way(state) {
        bail!(
            "{}",
            t!(
                "hub.rollover_under_way",
                file = state.ca_old_cert().display()
            )
        );
    }
    if !state.ca_cert().exists() {
        certs::create(state, reg, &hub.id, kind)?;
        let ca = read_der(&state.ca_cert())?;
        let hub_cert = pki::verify::describe(&read_der(&state.hub_cert())?)
            .map_err(|e| anyhow::anyhow!("{}", t!("hub.hub_certificate", error = e)))?;
        return Ok(RolledOver {
            ca: fingerprint(&ca),
            previous_ca: None,
            hub_serial: hub_cert.serial,
            key: kind,
            kept: Vec::new(),
        });
    }
    for p in [
        state.hub_old_key(),
        state.hub_old_cert(),
        state.ca_old_key(),
    ] {
        if p.exists() {
            bail!(
                "{}",
                t!(
                    "hub.stray_old_file",
                    file = p.display(),
                    old_ca = state.ca_old_cert().display()
                )
            );
        }
    }
    let old = certs::load_ca(state)?;
    let old_fp = fingerprint(old.cert_der());
    let now = unix_now();
    let new = Ca::create(
        kind,
        &format!("renkei {} {}", hub.id, stamp()),
        now,
        certs::CA_DAYS,
    )
    .map_err(|e| anyhow::anyhow!("{}", t!("hub.creating_ca", error = e)))?;
    let new_fp = fingerprint(new.cert_der());
    let issued = new
        .issue(&hub.id, kind, now, certs::HUB_DAYS)
        .map_err(|e| anyhow::anyhow!("{}", t!("hub.hub_certificate", error = e)))?;
    let read =
        |p: PathBuf| std::fs::read(&p).with_context(|| t!("cli.io_reading", path = p.display()));
    let (kept, changes) = apply(
        state,
        vec![
            (state.ca_old_key(), read(state.ca_key())?, 0o600),
            (state.ca_old_cert(), read(state.ca_cert())?, 0o644),
            (state.hub_old_key(), read(state.hub_key())?, 0o600),
            (state.hub_old_cert(), read(state.hub_cert())?, 0o644),
            (state.ca_key(), new.key_pem().as_bytes().to_vec(), 0o600),
            (state.ca_cert(), new.cert_pem().as_bytes().to_vec(), 0o644),
            (state.hub_key(), issued.key_pem.as_bytes().to_vec(), 0o600),
            (state.hub_cert(), issued.cert_pem.as_bytes().to_vec(), 0o644),
        ],
    )?;
    let recorded = (|| -> Result<()> {
        reg.assign_unmarked_certs(&old_fp)?;
        reg.record_cert(&CertRecord {
            serial: issued.serial.clone(),
            name: HUB_CERT_NAME.into(),
            identity: hub.id.to_string(),
            key_type: kind.to_string(),
            not_after: issued.not_after,
            issued: now_rfc3339(),
            revoked: None,
        })?;
        reg.set_cert_ca(&issued.serial, &new_fp)?;
        certs::write_crl(state, reg, &new)?;
        Ok(())
    })();
    if let Err(e) = recorded {
        undo(&changes);
        return Err(e);
    }
    Ok(RolledOver {
        ca: new_fp,
        previous_ca: Some(old_fp),
        hub_serial: issued.serial,
        key: kind,
        kept,
    })
}

/// Certificate facilities with no valid (unrevoked, unexpired) certificate
/// from the current CA: those that still depend on the previous one.
pub(crate) fn on_previous_ca(state: &StateDir, reg: &Registry) -> Result<Vec<String>> {
    let current = fingerprint(&read_der(&state.ca_cert())?);
    let cas = reg.cert_cas()?;
    let certs = reg.certs()?;
    let now = unix_now();
    Ok(reg
        .peers()?
        .into_iter()
        .filter(|p| matches!(p.auth, ike::PeerAuth::Cert))
        .filter(|p| {
            !certs.iter().any(|c| {
                c.name == p.name
                    && c.revoked.is_none()
                    && c.not_after > now
                    && cas.get(&c.serial).cloned().flatten().as_deref() == Some(current.as_str())
            })
        })
        .map(|p| p.name)
        .collect())
}

#[derive(Debug)]
pub(crate) struct Retired {
    pub(crate) retired_ca: String,
    pub(crate) kept: Vec<PathBuf>,
}

/// `ca retire-old`: ends a rollover, refusing while a facility depends on
/// the previous CA. The previous CA's and the hub's old files move to
/// STATE/retired/.
pub(crate) fn retire_old(state: &StateDir, reg: &Registry) -> Result<Retired> {
    if !certs::rollover_under_way(state) {
        bail!("{}", t!("hub.no_rollover"));
    }
    let stuck = on_previous_ca(state, reg)?;
    if !stuck.is_empty() {
        let names = stuck.join(", ");
        if stuck.len() == 1 {
            bail!("{}", t!("hub.still_on_previous_one", names = names));
        }
        bail!("{}", t!("hub.still_on_previous_many", names = names));
    }
    let retired_ca = fingerprint(&read_der(&state.ca_old_cert())?);
    let retired = state.retired_dir();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&retired)
        .with_context(|| t!("cli.io_creating", path = retired.display()))?;
    let stamp = stamp();
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    for p in [
        state.hub_old_cert(),
        state.hub_old_key(),
        state.ca_old_key(),
        // Last: while it is there, the rollover is under way.
        state.ca_old_cert(),
    ] {
        if !p.exists() {
            continue;
        }
        let name = p
            .file_name()
            .context(t!("cli.io_file_name"))?
            .to_string_lossy();
        let to = retired.join(format!("{name}.{stamp}"));
        if to.exists() {
            bail!("{}", t!("hub.retired_exists", file = to.display()));
        }
        if let Err(e) = std::fs::rename(&p, &to) {
            for (from, to) in moved.iter().rev() {
                let _ = std::fs::rename(to, from);
            }
            return Err(e)
                .with_context(|| t!("cli.io_moving", path = p.display(), to = to.display()));
        }
        moved.push((p, to));
    }
    Ok(Retired {
        retired_ca,
        kept: moved.into_iter().map(|(_, to)| to).collect(),
    })
}

// ---- show ----------------------------------------------------------------

/// What `hub show` prints.
#[derive(Debug, Serialize)]
pub(crate) struct HubView {
    identity: String,
    profile: String,
    /// The registry's schema version (`registry::SCHEMA_VERSION`).
    schema_version: u32,
    /// Where the registry is: "SQLite PATH" or "PostgreSQL HOST:PORT/DB
    /// as USER" (never a password).
    registry: String,
    public_addrs: Vec<AddrView>,
    hub_certificate: Option<CertView>,
    ca: Option<CertView>,
    /// During a CA rollover.
    rollover: Option<RolloverView>,
}

#[derive(Debug, Serialize)]
struct AddrView {
    addr: PublicAddr,
    kind: &'static str,
    /// For a DNS name: what it resolves to now, from this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    resolves_to: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolve_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct CertView {
    subject: String,
    issuer: String,
    san: Vec<String>,
    serial: String,
    not_before: String,
    not_after: String,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct RolloverView {
    previous_ca: CertView,
    previous_hub_certificate: Option<CertView>,
    /// Certificate facilities without a valid certificate from the new CA.
    facilities_on_previous_ca: Vec<String>,
}

fn cert_view(path: &Path) -> Result<Option<CertView>> {
    if !path.exists() {
        return Ok(None);
    }
    let c = pki::verify::describe(&read_der(path)?).map_err(|e| {
        anyhow::anyhow!("{}", t!("hub.cert_file", path = path.display(), error = e))
    })?;
    Ok(Some(CertView {
        subject: c.subject,
        issuer: c.issuer,
        san: c.san,
        serial: c.serial,
        not_before: pki::verify::iso(c.not_before),
        not_after: pki::verify::iso(c.not_after),
        sha256: c.sha256,
    }))
}

pub(crate) fn show(state: &StateDir, reg: &Registry) -> Result<HubView> {
    let hub = reg.hub()?;
    let public_addrs = hub
        .public_addrs
        .into_iter()
        .map(|addr| match &addr {
            PublicAddr::Ip(_) => AddrView {
                addr,
                kind: "ip",
                resolves_to: None,
                resolve_error: None,
            },
            PublicAddr::Name(n) => {
                use std::net::ToSocketAddrs;
                let (resolves_to, resolve_error) = match (n.as_str(), 500).to_socket_addrs() {
                    Ok(a) => {
                        let mut ips: Vec<String> = a.map(|s| s.ip().to_string()).collect();
                        ips.dedup();
                        (Some(ips), None)
                    }
                    Err(e) => (None, Some(e.to_string())),
                };
                AddrView {
                    addr,
                    kind: "dns",
                    resolves_to,
                    resolve_error,
                }
            }
        })
        .collect();
    let rollover = match cert_view(&state.ca_old_cert())? {
        Some(previous_ca) => Some(RolloverView {
            previous_ca,
            previous_hub_certificate: cert_view(&state.hub_old_cert())?,
            facilities_on_previous_ca: on_previous_ca(state, reg)?,
        }),
        None => None,
    };
    Ok(HubView {
        identity: hub.id.to_string(),
        profile: hub.profile,
        schema_version: reg.schema_version()?,
        registry: reg.describe(),
        public_addrs,
        hub_certificate: cert_view(&state.hub_cert())?,
        ca: cert_view(&state.ca_cert())?,
        rollover,
    })
}

impl CertView {
    fn text(&self, out: &mut String, title: &str) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "{title}");
        let _ = writeln!(
            out,
            "  {} {}",
            pad(&t!("hub.show_subject"), 12),
            self.subject
        );
        if !self.san.is_empty() {
            let _ = writeln!(
                out,
                "  {} {}",
                pad(&t!("hub.show_altnames"), 12),
                self.san.join(", ")
            );
        }
        let _ = writeln!(out, "  {} {}", pad(&t!("hub.show_issuer"), 12), self.issuer);
        let _ = writeln!(out, "  {} {}", pad(&t!("hub.show_serial"), 12), self.serial);
        let _ = writeln!(
            out,
            "  {} {}",
            pad(&t!("hub.show_valid"), 12),
            t!(
                "hub.show_valid_range",
                from = local_time_rfc3339(&self.not_before),
                to = local_time_rfc3339(&self.not_after)
            )
        );
        let _ = writeln!(out, "  {} {}", pad("SHA-256", 12), self.sha256);
    }
}

impl HubView {
    fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {}",
            pad(&t!("hub.show_identity"), 14),
            self.identity
        );
        let _ = writeln!(out, "{} {}", pad(&t!("hub.show_profile"), 14), self.profile);
        let _ = writeln!(
            out,
            "{} {}",
            pad(&t!("hub.show_schema"), 14),
            self.schema_version
        );
        let _ = writeln!(
            out,
            "{} {}",
            pad(&t!("hub.show_registry"), 14),
            self.registry
        );
        if self.public_addrs.is_empty() {
            let _ = writeln!(out, "{}", t!("hub.show_no_public_addr"));
        }
        for a in &self.public_addrs {
            let detail = match (&a.resolves_to, &a.resolve_error) {
                (Some(ips), _) => t!("hub.show_resolves", ips = ips.join(", ")).into_owned(),
                (None, Some(e)) => t!("hub.show_no_resolve", error = e).into_owned(),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{} {}{detail}",
                pad(&t!("hub.show_public_addr"), 14),
                a.addr
            );
        }
        match &self.hub_certificate {
            Some(c) => c.text(&mut out, &t!("hub.show_hub_cert")),
            None => {
                let _ = writeln!(out, "{}", t!("hub.show_no_hub_cert"));
            }
        }
        match &self.ca {
            Some(c) => c.text(&mut out, &t!("hub.show_ca")),
            None => {
                let _ = writeln!(out, "{}", t!("hub.show_no_ca"));
            }
        }
        if let Some(r) = &self.rollover {
            let _ = writeln!(out, "{}", t!("hub.show_rollover"));
            r.previous_ca.text(&mut out, &t!("hub.show_previous_ca"));
            if let Some(c) = &r.previous_hub_certificate {
                c.text(&mut out, &t!("hub.show_previous_hub_cert"));
            }
            let _ = writeln!(
                out,
                "{}",
                t!(
                    "hub.show_on_previous_ca",
                    names = if r.facilities_on_previous_ca.is_empty() {
                        t!("hub.show_none").into_owned()
                    } else {
                        r.facilities_on_previous_ca.join(", ")
                    }
                )
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Hub, NewPeer};

    /// A hub made as `renkei init` makes it, with certificate facility
    /// kyoto and PSK facility nara.
    fn hub() -> (StateDir, Registry) {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        let dir = std::env::temp_dir().join(format!("renkei-hubset-{}", u64::from_ne_bytes(b)));
        let state = StateDir::new(dir);
        let mut reg = Registry::init(
            &state,
            &Hub {
                id: pki::Identity::parse("hub.example").unwrap(),
                public_addrs: vec!["192.0.2.1".parse().unwrap()],
                profile: "cryptrec".into(),
            },
        )
        .unwrap();
        let id = reg.hub().unwrap().id;
        certs::create(&state, &mut reg, &id, KeyKind::EcdsaP256).unwrap();
        reg.add_peer(&NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            cert: true,
            remote_ts: "198.51.100.0/26".into(),
            ..Default::default()
        })
        .unwrap();
        let psk = std::env::temp_dir().join(format!("renkei-hubset-psk-{}", u64::from_ne_bytes(b)));
        std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
        reg.add_peer(&NewPeer {
            name: "nara".into(),
            id: "nara.example".into(),
            psk_file: Some(psk),
            remote_ts: "198.51.100.64/26".into(),
            ..Default::default()
        })
        .unwrap();
        (state, reg)
    }

    fn issue(state: &StateDir, reg: &mut Registry, out: &str) -> String {
        let out = std::env::temp_dir().join(format!("{}-{out}", state.display()));
        certs::issue(state, reg, "kyoto", KeyKind::EcdsaP256, &out, 30, false)
            .unwrap()
            .serial
    }

    /// Every file under the state directory with its contents.
    fn snapshot(state: &StateDir) -> Vec<(PathBuf, Vec<u8>)> {
        let mut all = Vec::new();
        let mut dirs = vec![state.as_ref().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if !p.to_string_lossy().contains("registry.db") {
                    all.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        all.sort();
        all
    }

    #[test]
    fn public_addresses_take_ips_and_dns_names_and_refuse_the_rest() {
        let (state, mut reg) = hub();
        let addrs: Vec<PublicAddr> = ["vpn.example.jp", "2001:db8::1", "xn--u9j.example."]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        set_public_addrs(&mut reg, &addrs).unwrap();
        assert_eq!(reg.hub().unwrap().public_addrs, addrs);
        assert_eq!(
            addrs[0],
            PublicAddr::Name("vpn.example.jp".into()),
            "a name is stored as given"
        );
        for bad in [
            "vpn..example",
            "-vpn.example",
            "vpn_example.jp",
            "192.0.2.300",
            "10.0.0",
            "京都.example.jp",
            "",
        ] {
            assert!(bad.parse::<PublicAddr>().is_err(), "{bad}");
        }
        let twice: Vec<PublicAddr> = ["192.0.2.1", "192.0.2.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            set_public_addrs(&mut reg, &twice).unwrap_err().to_string(),
            "public-addr: 192.0.2.1 is given twice"
        );
        assert_eq!(reg.hub().unwrap().public_addrs, addrs, "refused: unchanged");
        let view = show(&state, &reg).unwrap();
        assert_eq!(view.public_addrs[0].kind, "dns");
        assert_eq!(view.public_addrs[1].kind, "ip");
        // The export writes the name itself, for the router to resolve.
        let peer = reg.peer("kyoto").unwrap();
        let conf = crate::export::swanctl(&reg.hub().unwrap(), &peer, false).unwrap();
        assert!(
            conf.contains("remote_addrs = vpn.example.jp,2001:db8::1,xn--u9j.example."),
            "{conf}"
        );
    }

    #[test]
    fn renew_cert_keeps_the_identity_and_the_previous_files() {
        let (state, mut reg) = hub();
        let before = show(&state, &reg).unwrap();
        let old_pem = std::fs::read(state.hub_cert()).unwrap();
        let old_key = std::fs::read(state.hub_key()).unwrap();
        let r = renew_cert(&state, &mut reg, 400).unwrap();
        let after = show(&state, &reg).unwrap();
        let (b, a) = (
            before.hub_certificate.unwrap(),
            after.hub_certificate.unwrap(),
        );
        assert_eq!(a.serial, r.serial);
        assert_eq!(Some(b.serial.clone()), r.previous_serial);
        assert_ne!(a.serial, b.serial);
        assert_eq!(a.subject, b.subject);
        assert_eq!(a.san, vec!["DNS:hub.example".to_string()]);
        assert_eq!(a.issuer, b.issuer, "same CA");
        assert_ne!(std::fs::read(state.hub_key()).unwrap(), old_key);
        // The previous key and certificate are kept, byte for byte.
        assert_eq!(r.kept.len(), 2);
        let kept: Vec<Vec<u8>> = r.kept.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert!(kept.contains(&old_pem) && kept.contains(&old_key));
        // The new certificate validates under the CA, for the hub's identity.
        let pki = certs::load(&state, &reg).unwrap().unwrap();
        pki.trust
            .validate(
                &pki.credentials.cert_der,
                &pki::Identity::parse("hub.example").unwrap(),
                unix_now(),
            )
            .unwrap();
        assert!(pki.by_ca.is_empty());
        assert!(reg
            .certs()
            .unwrap()
            .iter()
            .any(|c| c.serial == r.serial && c.name == HUB_CERT_NAME));
        // Refused input changes nothing.
        let files = snapshot(&state);
        assert_eq!(
            renew_cert(&state, &mut reg, 0).unwrap_err().to_string(),
            "days: 0 is outside 1..=3650"
        );
        assert_eq!(snapshot(&state), files);
    }

    #[test]
    fn rollover_trusts_both_cas_until_every_facility_is_reissued() {
        let (state, mut reg) = hub();
        let old_serial = issue(&state, &mut reg, "old");
        let old_hub = std::fs::read(state.hub_cert()).unwrap();
        let old_ca = std::fs::read(state.ca_cert()).unwrap();
        let r = rollover(&state, &mut reg, None).unwrap();
        assert_eq!(r.key, KeyKind::EcdsaP256, "the hub certificate's key type");
        assert_eq!(std::fs::read(state.ca_old_cert()).unwrap(), old_ca);
        assert_eq!(std::fs::read(state.hub_old_cert()).unwrap(), old_hub);
        assert_ne!(std::fs::read(state.ca_cert()).unwrap(), old_ca);
        // Both CAs are trusted: the facility's old certificate and one
        // from the new CA validate; the hub has a certificate from each,
        // the current one first.
        let new_serial = {
            // Before reissue, kyoto depends on the previous CA.
            assert_eq!(on_previous_ca(&state, &reg).unwrap(), ["kyoto"]);
            let files = snapshot(&state);
            let err = retire_old(&state, &reg).unwrap_err().to_string();
            assert!(
                err.starts_with("ca: a facility still uses the previous CA: kyoto ("),
                "{err}"
            );
            assert_eq!(snapshot(&state), files, "refused: nothing moved");
            issue(&state, &mut reg, "new")
        };
        let cas = reg.cert_cas().unwrap();
        assert_eq!(cas[&old_serial].as_deref(), r.previous_ca.as_deref());
        assert_eq!(cas[&new_serial].as_deref(), Some(r.ca.as_str()));
        let pki = certs::load(&state, &reg).unwrap().unwrap();
        assert_eq!(pki.by_ca.len(), 2);
        assert_eq!(
            pki.by_ca[1].credentials.cert_der,
            pem::parse(&old_hub).unwrap().contents()
        );
        assert_eq!(pki.trust.certreq_data().len(), 40);
        // A second rollover waits for this one.
        assert!(rollover(&state, &mut reg, None)
            .unwrap_err()
            .to_string()
            .contains("already under way"));
        let view = show(&state, &reg).unwrap();
        assert!(view.rollover.unwrap().facilities_on_previous_ca.is_empty());
        let done = retire_old(&state, &reg).unwrap();
        assert_eq!(Some(done.retired_ca), r.previous_ca);
        assert_eq!(done.kept.len(), 4);
        assert!(!state.ca_old_cert().exists() && !state.hub_old_key().exists());
        let pki = certs::load(&state, &reg).unwrap().unwrap();
        assert!(pki.by_ca.is_empty());
        assert!(show(&state, &reg).unwrap().rollover.is_none());
        // An Ed25519 CA is refused before anything is written.
        let files = snapshot(&state);
        assert!(rollover(&state, &mut reg, Some(KeyKind::Ed25519))
            .unwrap_err()
            .to_string()
            .starts_with("key: "));
        assert_eq!(snapshot(&state), files);
    }
}
