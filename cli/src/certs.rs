//! The CA's files in the state directory and the `renkei cert` commands.
//!
//! ```text
//!  STATE/ca/ca.key   CA private key (PKCS#8 PEM, 0600)
//!  STATE/ca/ca.pem   CA certificate
//!  STATE/ca/crl.pem  revocation list, rewritten on every `cert revoke`
//!  STATE/hub.key     the hub's private key (0600)
//!  STATE/hub.pem     the hub's certificate (its identity in subjectAltName)
//! ```
//!
//! The registry's `certs` table records every certificate issued and
//! revoked; the hub's trust store is built from it and the CA certificate.

use anyhow::{bail, Context, Result};
use pki::ca::{Ca, KeyKind, Revoked};
use pki::sig::SigningKey;
use pki::verify::TrustStore;
use pki::Identity;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::registry::{now_rfc3339, CertRecord, Registry};
use crate::state::StateDir;

/// Validity of the CA certificate.
pub(crate) const CA_DAYS: u32 = 20 * 365;
/// Validity of the hub's certificate.
pub(crate) const HUB_DAYS: u32 = 5 * 365;
/// A CRL is reissued on every revocation and says the next one comes
/// within this many days; strongSwan and routers warn after that.
const CRL_DAYS: u32 = 30;
/// The registry name the hub's own certificate is recorded under (not a
/// valid facility name, so the two cannot clash).
pub(crate) const HUB_CERT_NAME: &str = "(hub)";

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes `contents` to `path` through a temporary file and a rename, so a
/// reader never sees half a file, with `mode` from the start.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = write_tmp(path, contents, mode)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes `contents` to a new temporary file beside `path`, named for
/// this process so that two writers (`cert revoke` and the daemon
/// reissuing the CRL) never share one.
fn write_tmp(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(contents)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Writes a file that must not exist yet: whole or not at all (through a
/// temporary file and a hard link, which fails rather than replace), so
/// that no file of the operator's is ever overwritten.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = write_tmp(path, contents, mode)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "out: {} already exists; renkei never overwrites a file: move it away or choose another --out",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// Creates the CA and the hub's certificate for a new hub. Returns the
/// files written so `init` can take them back if a later step fails.
pub(crate) fn create(
    state: &StateDir,
    reg: &mut Registry,
    hub_id: &Identity,
    kind: KeyKind,
) -> Result<Vec<PathBuf>> {
    if !matches!(
        kind,
        KeyKind::EcdsaP384 | KeyKind::EcdsaP256 | KeyKind::Rsa3072
    ) {
        bail!("ca-key: the CA key is ecdsa-p384 (default), ecdsa-p256 or rsa-3072, not {kind}");
    }
    let now = unix_now();
    let ca = Ca::create(kind, &format!("renkei {hub_id}"), now, CA_DAYS)
        .map_err(|e| anyhow::anyhow!("creating the CA: {e}"))?;
    let hub = ca
        .issue(hub_id, kind, now, HUB_DAYS)
        .map_err(|e| anyhow::anyhow!("hub certificate: {e}"))?;
    let dir = state.ca_dir();
    let mut written = Vec::new();
    let result = (|| -> Result<()> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        written.push(dir.clone());
        for (path, data, mode) in [
            (state.ca_key(), ca.key_pem().as_bytes().to_vec(), 0o600),
            (state.ca_cert(), ca.cert_pem().as_bytes().to_vec(), 0o644),
            (state.hub_key(), hub.key_pem.as_bytes().to_vec(), 0o600),
            (state.hub_cert(), hub.cert_pem.as_bytes().to_vec(), 0o644),
        ] {
            write_file(&path, &data, mode)?;
            written.push(path);
        }
        reg.record_cert(&CertRecord {
            serial: hub.serial.clone(),
            name: HUB_CERT_NAME.into(),
            identity: hub_id.to_string(),
            key_type: kind.to_string(),
            not_after: hub.not_after,
            issued: now_rfc3339(),
            revoked: None,
        })?;
        reg.set_cert_ca(&hub.serial, &fingerprint(ca.cert_der()))?;
        written.push(write_crl(state, reg, &ca)?);
        Ok(())
    })();
    match result {
        Ok(()) => Ok(written),
        Err(e) => {
            remove_all(&written);
            Err(e)
        }
    }
}

use std::os::unix::fs::DirBuilderExt;

/// Removes files (and then directories) written by a failed step.
pub(crate) fn remove_all(paths: &[PathBuf]) {
    for p in paths.iter().rev() {
        if p.is_dir() {
            let _ = std::fs::remove_dir(p);
        } else {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(crate) fn load_ca(state: &StateDir) -> Result<Ca> {
    let dir = state.ca_dir();
    let key = std::fs::read_to_string(state.ca_key()).with_context(|| {
        format!(
            "no CA in {} (this state directory was made before certificate support; create one with `renkei ca rollover`)",
            dir.display()
        )
    })?;
    let cert = std::fs::read_to_string(state.ca_cert())
        .with_context(|| format!("reading {}", state.ca_cert().display()))?;
    Ca::load(&key, &cert).map_err(|e| anyhow::anyhow!("loading the CA: {e}"))
}

pub(crate) fn pem_der(text: &str, what: &Path) -> Result<Vec<u8>> {
    Ok(pem::parse(text)
        .with_context(|| format!("{} is not PEM", what.display()))?
        .contents()
        .to_vec())
}

/// The revoked serials the registry lists.
fn revoked(reg: &Registry) -> Result<Vec<Revoked>> {
    Ok(reg
        .certs()?
        .into_iter()
        .filter_map(|c| {
            c.revoked.map(|at| Revoked {
                serial: c.serial,
                at,
            })
        })
        .collect())
}

/// Rewrites the CRL from the registry; returns its path.
pub(crate) fn write_crl(state: &StateDir, reg: &Registry, ca: &Ca) -> Result<PathBuf> {
    write_crl_at(state, reg, ca, unix_now())
}

/// Rewrites the CRL as issued at `now` (valid [`CRL_DAYS`] from then).
fn write_crl_at(state: &StateDir, reg: &Registry, ca: &Ca, now: i64) -> Result<PathBuf> {
    let list = revoked(reg)?;
    // CRL numbers must increase (RFC 5280 §5.2.3): seconds do.
    let pem = ca
        .crl(&list, now.max(0) as u64, now, CRL_DAYS)
        .map_err(|e| anyhow::anyhow!("CRL: {e}"))?;
    let path = state.crl();
    write_file(&path, pem.as_bytes(), 0o644)?;
    Ok(path)
}

/// How often the running hub checks whether the CRL is due.
pub(crate) const CRL_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether a CRL issued at `this_update` and valid until `next_update`
/// is due for reissue at `now`: once less than half its validity is left
/// (so routers that fetch it daily or weekly never hold an expired one),
/// or when it has no `nextUpdate`.
pub(crate) fn crl_due(this_update: i64, next_update: Option<i64>, now: i64) -> bool {
    match next_update {
        Some(next) => now >= this_update + (next - this_update) / 2,
        None => true,
    }
}

/// The running hub's timer: reissues the CRL (same revocations, new
/// dates) when [`crl_due`] says so, or when it is missing or unreadable.
/// Returns the new CRL's `nextUpdate` when it reissued one; `Ok(None)`
/// when the CRL is not due or the state directory has no CA.
pub(crate) fn renew_crl_if_due(state: &StateDir, now: i64) -> Result<Option<i64>> {
    if !state.ca_key().exists() {
        return Ok(None);
    }
    let due = match std::fs::read_to_string(state.crl()) {
        Ok(text) => match pki::ca::crl_validity(&text) {
            Ok((this, next)) => crl_due(this, next, now),
            Err(_) => true,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("reading {}", state.crl().display())),
    };
    if !due {
        return Ok(None);
    }
    let reg = Registry::open(state)?;
    let ca = load_ca(state)?;
    write_crl_at(state, &reg, &ca, now)?;
    Ok(Some(now + i64::from(CRL_DAYS) * 86_400))
}

/// SHA-256 of a certificate's DER, lower-case hex: how the registry names
/// the CA that issued a certificate.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hub's credentials for certificate facilities.
pub(crate) struct Pki {
    /// From the current CA.
    pub(crate) credentials: Arc<ike::Credentials>,
    /// During a CA rollover: from each CA, current first (else empty).
    pub(crate) by_ca: Vec<ike::CaCredentials>,
    pub(crate) trust: Arc<TrustStore>,
}

/// Reads a key and certificate pair.
fn read_credentials(key_path: &Path, cert_path: &Path) -> Result<ike::Credentials> {
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(key_path)
            .with_context(|| format!("reading {}", key_path.display()))?,
    );
    let key_der = zeroize::Zeroizing::new(pem_der(&key_pem, key_path)?);
    let key = SigningKey::from_pkcs8(&key_der)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
    let cert_der = pem_der(
        &std::fs::read_to_string(cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?,
        cert_path,
    )?;
    Ok(ike::Credentials { key, cert_der })
}

/// A key and certificate pair from PEM texts (`what` names them in errors).
pub(crate) fn credentials_from_pem(
    key_pem: &str,
    cert_pem: &str,
    what: &str,
) -> Result<ike::Credentials> {
    let key_der = zeroize::Zeroizing::new(pem_der(key_pem, Path::new(what))?);
    let key = SigningKey::from_pkcs8(&key_der).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let cert_der = pem_der(cert_pem, Path::new(what))?;
    Ok(ike::Credentials { key, cert_der })
}

/// Whether a CA rollover is under way (the previous CA is still trusted).
pub(crate) fn rollover_under_way(state: &StateDir) -> bool {
    state.ca_old_cert().exists()
}

/// The hub's credentials and trust store, or `None` for a state directory
/// without a CA (certificate facilities then cannot connect). During a CA
/// rollover both CAs are trusted and the hub has a certificate from each.
pub(crate) fn load(state: &StateDir, reg: &Registry) -> Result<Option<Pki>> {
    if !state.ca_cert().exists() {
        return Ok(None);
    }
    let credentials = Arc::new(read_credentials(&state.hub_key(), &state.hub_cert())?);
    let mut by_ca = Vec::new();
    if rollover_under_way(state) {
        let ca_hashes = |path: &Path| -> Result<[[u8; 20]; 2]> {
            let der = pem_der(&std::fs::read_to_string(path)?, path)?;
            pki::verify::certreq_hashes(&der)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        };
        by_ca.push(ike::CaCredentials {
            ca_hashes: ca_hashes(&state.ca_cert())?,
            credentials: credentials.clone(),
        });
        by_ca.push(ike::CaCredentials {
            ca_hashes: ca_hashes(&state.ca_old_cert())?,
            credentials: Arc::new(read_credentials(
                &state.hub_old_key(),
                &state.hub_old_cert(),
            )?),
        });
    }
    Ok(Some(Pki {
        credentials,
        by_ca,
        trust: trust(state, reg)?.context("CA certificate vanished")?,
    }))
}

/// The trust store: the CA certificate (and the previous one during a CA
/// rollover) and the registry's revocations.
pub(crate) fn trust(state: &StateDir, reg: &Registry) -> Result<Option<Arc<TrustStore>>> {
    let path = state.ca_cert();
    if !path.exists() {
        return Ok(None);
    }
    let mut cas = vec![pem_der(&std::fs::read_to_string(&path)?, &path)?];
    let old = state.ca_old_cert();
    if old.exists() {
        cas.push(pem_der(&std::fs::read_to_string(&old)?, &old)?);
    }
    let refs: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
    let store = TrustStore::with_cas(&refs, revoked(reg)?.into_iter().map(|r| r.serial))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(Arc::new(store)))
}

/// What `cert issue` wrote.
#[derive(Debug)]
pub(crate) struct IssuedFiles {
    pub(crate) serial: String,
    pub(crate) not_after: i64,
    pub(crate) files: Vec<PathBuf>,
    /// `DIR/ca.pem` was there already with the same CA certificate and
    /// was left as it was.
    pub(crate) ca_kept: Option<PathBuf>,
    /// The facility's earlier certificates that stay valid (until they
    /// expire or are revoked).
    pub(crate) still_valid: Vec<CertRecord>,
    /// The earlier certificates revoked (`--revoke-previous`).
    pub(crate) revoked: Vec<String>,
}

/// `renkei cert issue`: a key and certificate for facility `name`.
///
/// The facility's earlier certificates stay valid until they expire, so
/// that its router can be switched to the new one without an outage;
/// with `revoke_previous` they are revoked once the new one is written.
/// No file in `out` is ever overwritten: an existing `ca.pem` holding the
/// same CA certificate is kept, any other existing file refuses the
/// command before anything is issued.
pub(crate) fn issue(
    state: &StateDir,
    reg: &mut Registry,
    name: &str,
    kind: KeyKind,
    out: &Path,
    days: u32,
    revoke_previous: bool,
) -> Result<IssuedFiles> {
    if !(1..=3650).contains(&days) {
        bail!("days: {days} is outside 1..=3650");
    }
    let peer = reg.peer(name)?;
    let ca = load_ca(state)?;
    let now = unix_now();
    let ca_path = out.join("ca.pem");
    let ca_kept = match std::fs::read(&ca_path) {
        Ok(existing) if existing == ca.cert_pem().as_bytes() => Some(ca_path.clone()),
        Ok(_) => bail!(
            "out: {} already exists and is not this hub's CA certificate; renkei never overwrites a file: move it away or choose another --out",
            ca_path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", ca_path.display())),
    };
    refuse_existing(out, name)?;
    let previous: Vec<CertRecord> = reg
        .certs()?
        .into_iter()
        .filter(|c| c.name == name && c.revoked.is_none() && c.not_after > now)
        .collect();
    let issued = ca
        .issue(&peer.id, kind, now, days)
        .map_err(|e| anyhow::anyhow!("issuing: {e}"))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = credential_files(out, name, &issued, &ca)?;
    if ca_kept.is_none() {
        files.push((ca_path, ca.cert_pem().as_bytes().to_vec(), 0o644));
    }
    let mut written = Vec::new();
    let mut revoked_serials = Vec::new();
    let result = (|| -> Result<()> {
        for (path, data, mode) in &files {
            write_new(path, data, *mode)?;
            written.push(path.clone());
        }
        reg.record_cert(&CertRecord {
            serial: issued.serial.clone(),
            name: name.into(),
            identity: peer.id.to_string(),
            key_type: kind.to_string(),
            not_after: issued.not_after,
            issued: now_rfc3339(),
            revoked: None,
        })?;
        reg.set_cert_ca(&issued.serial, &fingerprint(ca.cert_der()))?;
        if revoke_previous && !previous.is_empty() {
            let serials: Vec<String> = previous.iter().map(|c| c.serial.clone()).collect();
            revoked_serials = reg.revoke_serials(name, &serials, now)?;
            write_crl(state, reg, &ca)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        remove_all(&written);
        return Err(e);
    }
    Ok(IssuedFiles {
        serial: issued.serial,
        not_after: issued.not_after,
        files: written,
        ca_kept,
        still_valid: if revoke_previous {
            Vec::new()
        } else {
            previous
        },
        revoked: revoked_serials,
    })
}

/// `renkei cert revoke`: revokes every current certificate of `name` and
/// rewrites the CRL. Returns the revoked serials.
/// With `serial`, only that certificate of `name` is revoked.
pub(crate) fn revoke(
    state: &StateDir,
    reg: &mut Registry,
    name: &str,
    serial: Option<&str>,
) -> Result<Vec<String>> {
    if name == HUB_CERT_NAME {
        bail!(
            "name: the hub's own certificate is replaced with `renkei hub renew-cert`, not revoked"
        );
    }
    let ca = load_ca(state)?;
    let serials = match serial {
        Some(s) => reg.revoke_serials(name, &[s.to_string()], unix_now())?,
        None => reg.revoke_certs(name, unix_now())?,
    };
    write_crl(state, reg, &ca)?;
    Ok(serials)
}

/// `renkei peer remove`: removes the facility and revokes its current
/// certificates (so that a later facility with the same identity is not
/// joined by the old router), rewriting the CRL when there were any.
/// Returns the serials revoked.
pub(crate) fn remove_facility(
    state: &StateDir,
    reg: &mut Registry,
    name: &str,
) -> Result<Vec<String>> {
    let had_certs = reg
        .certs()?
        .iter()
        .any(|c| c.name == name && c.revoked.is_none());
    // The CA is loaded first: nothing is removed when the CRL cannot be
    // rewritten.
    let ca = if had_certs {
        Some(load_ca(state)?)
    } else {
        None
    };
    let serials = reg.remove_peer_revoking(name, unix_now())?;
    if let (Some(ca), false) = (ca, serials.is_empty()) {
        write_crl(state, reg, &ca)?;
    }
    Ok(serials)
}

/// The four files of an issued certificate `NAME.{key,pem,p12,p12.password}`
/// in `out`: refuses when any exists (renkei never overwrites a file).
pub(crate) fn refuse_existing(out: &Path, name: &str) -> Result<()> {
    for ext in ["key", "pem", "p12", "p12.password"] {
        let path = out.join(format!("{name}.{ext}"));
        if path.symlink_metadata().is_ok() {
            bail!(
                "out: {} already exists; renkei never overwrites a file: move it away or choose another --out",
                path.display()
            );
        }
    }
    Ok(())
}

/// What to write for an issued certificate, with modes: its key (0600),
/// certificate (0644), a PKCS#12 bundle for browsers and routers (0600)
/// and that bundle's random password (0600). Used for facilities
/// (`cert issue`) and operators (`cert issue-operator`).
pub(crate) fn credential_files(
    out: &Path,
    name: &str,
    issued: &pki::ca::Issued,
    ca: &pki::ca::Ca,
) -> Result<Vec<(PathBuf, Vec<u8>, u32)>> {
    let mut password = [0u8; 18];
    aws_lc_rs::rand::fill(&mut password).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let password = zeroize::Zeroizing::new(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        password,
    ));
    let p12 = pki::ca::pkcs12(issued, ca.cert_der(), name, &password)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(vec![
        (
            out.join(format!("{name}.key")),
            issued.key_pem.as_bytes().to_vec(),
            0o600,
        ),
        (
            out.join(format!("{name}.pem")),
            issued.cert_pem.as_bytes().to_vec(),
            0o644,
        ),
        (out.join(format!("{name}.p12")), p12, 0o600),
        (
            out.join(format!("{name}.p12.password")),
            format!("{}\n", *password).into_bytes(),
            0o600,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Hub, NewPeer};

    fn hub_state(tag: &str) -> (StateDir, Registry, PathBuf) {
        let dir = std::env::temp_dir().join(format!("renkei-certs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::new(dir.join("state"));
        let id = Identity::parse("hub.example").unwrap();
        let mut reg = Registry::init(
            &state,
            &Hub {
                id: id.clone(),
                public_addrs: vec![],
                profile: "cryptrec".into(),
            },
        )
        .unwrap();
        create(&state, &mut reg, &id, KeyKind::EcdsaP256).unwrap();
        reg.add_peer(&NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            cert: true,
            remote_ts: "198.51.100.0/26".into(),
            ..Default::default()
        })
        .unwrap();
        (state, reg, dir)
    }

    fn crl_dates(state: &StateDir) -> (i64, Option<i64>) {
        pki::ca::crl_validity(&std::fs::read_to_string(state.crl()).unwrap()).unwrap()
    }

    #[test]
    fn a_crl_is_due_once_half_its_validity_has_passed() {
        let day = 86_400;
        assert!(!crl_due(0, Some(30 * day), 0));
        assert!(!crl_due(0, Some(30 * day), 15 * day - 1));
        assert!(crl_due(0, Some(30 * day), 15 * day));
        assert!(crl_due(0, Some(30 * day), 40 * day));
        assert!(crl_due(0, None, 0));
    }

    /// The hub's timer reissues a CRL written 20 of its 30 days ago, with
    /// the same revocations and new dates, and leaves a fresh one alone;
    /// a missing CRL is written again. (The clock is passed in: no
    /// waiting.)
    #[test]
    fn the_running_hub_reissues_a_crl_before_it_expires() {
        let (state, mut reg, dir) = hub_state("renew");
        let out = dir.join("out");
        issue(
            &state,
            &mut reg,
            "kyoto",
            KeyKind::EcdsaP256,
            &out,
            30,
            false,
        )
        .unwrap();
        let serials = revoke(&state, &mut reg, "kyoto", None).unwrap();
        let now = unix_now();
        let day = 86_400;
        let ca = load_ca(&state).unwrap();
        write_crl_at(&state, &reg, &ca, now - 10 * day).unwrap();
        assert_eq!(renew_crl_if_due(&state, now).unwrap(), None, "not due");
        assert_eq!(crl_dates(&state).0, now - 10 * day);
        write_crl_at(&state, &reg, &ca, now - 20 * day).unwrap();
        let next = renew_crl_if_due(&state, now).unwrap().expect("due");
        assert_eq!(crl_dates(&state), (now, Some(next)));
        assert_eq!(next, now + i64::from(CRL_DAYS) * day);
        let text = std::fs::read_to_string(state.crl()).unwrap();
        let der = pem::parse(&text).unwrap().contents().to_vec();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        let listed: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| pki::verify::serial_hex(r.raw_serial()))
            .collect();
        assert_eq!(listed, serials, "the revocations are kept");
        assert_eq!(renew_crl_if_due(&state, now).unwrap(), None);
        std::fs::remove_file(state.crl()).unwrap();
        assert!(renew_crl_if_due(&state, now).unwrap().is_some());
        assert!(state.crl().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `cert issue` never overwrites: an existing file refuses it before
    /// anything is issued; an existing ca.pem of the same CA is kept (so
    /// several facilities can share a directory), another one refuses.
    /// A second certificate leaves the first valid, or revokes it with
    /// `revoke_previous`.
    #[test]
    fn issuing_never_overwrites_and_says_what_happens_to_the_first_certificate() {
        let (state, mut reg, dir) = hub_state("issue");
        reg.add_peer(&NewPeer {
            name: "osaka".into(),
            id: "osaka.example".into(),
            cert: true,
            remote_ts: "198.51.100.64/26".into(),
            ..Default::default()
        })
        .unwrap();
        let out = dir.join("out");
        let first = issue(
            &state,
            &mut reg,
            "kyoto",
            KeyKind::EcdsaP256,
            &out,
            30,
            false,
        )
        .unwrap();
        assert!(first.still_valid.is_empty() && first.ca_kept.is_none());
        // The same directory again: kyoto.key is there.
        let key = std::fs::read(out.join("kyoto.key")).unwrap();
        let e = issue(
            &state,
            &mut reg,
            "kyoto",
            KeyKind::EcdsaP256,
            &out,
            30,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&out.join("kyoto.key").display().to_string())
                && e.contains("never overwrites"),
            "{e}"
        );
        assert_eq!(std::fs::read(out.join("kyoto.key")).unwrap(), key);
        assert_eq!(
            reg.certs().unwrap().len(),
            2,
            "nothing issued (hub + kyoto)"
        );
        // Another facility into the same directory keeps ca.pem.
        let osaka = issue(
            &state,
            &mut reg,
            "osaka",
            KeyKind::EcdsaP256,
            &out,
            30,
            false,
        )
        .unwrap();
        assert_eq!(osaka.ca_kept, Some(out.join("ca.pem")));
        // A ca.pem that is not this CA's is never replaced.
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("ca.pem"), "someone else's CA\n").unwrap();
        let e = issue(
            &state,
            &mut reg,
            "kyoto",
            KeyKind::EcdsaP256,
            &other,
            30,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ca.pem") && e.contains("not this hub's CA"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(other.join("ca.pem")).unwrap(),
            "someone else's CA\n"
        );
        assert!(!other.join("kyoto.key").exists());
        // A second certificate: the first stays valid and is named.
        let second = issue(
            &state,
            &mut reg,
            "kyoto",
            KeyKind::EcdsaP256,
            &dir.join("2"),
            30,
            false,
        )
        .unwrap();
        assert_eq!(
            second
                .still_valid
                .iter()
                .map(|c| &c.serial)
                .collect::<Vec<_>>(),
            vec![&first.serial]
        );
        let trust = trust(&state, &reg).unwrap().unwrap();
        let kyoto = Identity::parse("kyoto.example").unwrap();
        let der = |dir: &Path| {
            pem::parse(std::fs::read_to_string(dir.join("kyoto.pem")).unwrap())
                .unwrap()
                .contents()
                .to_vec()
        };
        trust.validate(&der(&out), &kyoto, unix_now()).unwrap();
        // A third with revoke_previous revokes both earlier ones.
        let third = issue(
            &state,
            &mut reg,
            "kyoto",
            KeyKind::EcdsaP256,
            &dir.join("3"),
            30,
            true,
        )
        .unwrap();
        let mut revoked = third.revoked.clone();
        revoked.sort();
        let mut want = vec![first.serial.clone(), second.serial.clone()];
        want.sort();
        assert_eq!(revoked, want);
        assert!(third.still_valid.is_empty());
        let trust = super::trust(&state, &reg).unwrap().unwrap();
        assert!(trust.validate(&der(&out), &kyoto, unix_now()).is_err());
        trust
            .validate(&der(&dir.join("3")), &kyoto, unix_now())
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Removing a facility revokes its current certificates and lists them
    /// in the CRL; a facility without certificates is removed as before.
    #[test]
    fn removing_a_facility_revokes_its_certificates() {
        let (state, mut reg, dir) = hub_state("remove");
        let issued = issue(
            &state,
            &mut reg,
            "kyoto",
            KeyKind::EcdsaP256,
            &dir.join("out"),
            30,
            false,
        )
        .unwrap();
        let serials = remove_facility(&state, &mut reg, "kyoto").unwrap();
        assert_eq!(serials, vec![issued.serial.clone()]);
        assert!(reg.find_peer("kyoto").unwrap().is_none());
        let text = std::fs::read_to_string(state.crl()).unwrap();
        let der = pem::parse(&text).unwrap().contents().to_vec();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        assert!(crl
            .iter_revoked_certificates()
            .any(|r| pki::verify::serial_hex(r.raw_serial()) == issued.serial));
        assert!(remove_facility(&state, &mut reg, "kyoto").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
