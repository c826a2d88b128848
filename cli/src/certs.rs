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
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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
    let list = revoked(reg)?;
    let now = unix_now();
    // CRL numbers must increase (RFC 5280 §5.2.3): seconds do.
    let pem = ca
        .crl(&list, now as u64, now, CRL_DAYS)
        .map_err(|e| anyhow::anyhow!("CRL: {e}"))?;
    let path = state.crl();
    write_file(&path, pem.as_bytes(), 0o644)?;
    Ok(path)
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
}

/// `renkei cert issue`: a key and certificate for facility `name`.
pub(crate) fn issue(
    state: &StateDir,
    reg: &mut Registry,
    name: &str,
    kind: KeyKind,
    out: &Path,
    days: u32,
) -> Result<IssuedFiles> {
    if !(1..=3650).contains(&days) {
        bail!("days: {days} is outside 1..=3650");
    }
    let peer = reg.peer(name)?;
    let ca = load_ca(state)?;
    let now = unix_now();
    let issued = ca
        .issue(&peer.id, kind, now, days)
        .map_err(|e| anyhow::anyhow!("issuing: {e}"))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut password = [0u8; 18];
    aws_lc_rs::rand::fill(&mut password).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let password = zeroize::Zeroizing::new(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        password,
    ));
    let p12 = pki::ca::pkcs12(&issued, ca.cert_der(), name, &password)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let files: Vec<(PathBuf, Vec<u8>, u32)> = vec![
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
    ];
    for (path, _, _) in &files {
        if path.exists() {
            bail!(
                "out: {} already exists; move it away or choose another --out",
                path.display()
            );
        }
    }
    let mut written = Vec::new();
    let result = (|| -> Result<()> {
        for (path, data, mode) in &files {
            write_file(path, data, *mode)?;
            written.push(path.clone());
        }
        let ca_path = out.join("ca.pem");
        write_file(&ca_path, ca.cert_pem().as_bytes(), 0o644)?;
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
        written.push(ca_path);
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
    })
}

/// `renkei cert revoke`: revokes every current certificate of `name` and
/// rewrites the CRL. Returns the revoked serials.
pub(crate) fn revoke(state: &StateDir, reg: &mut Registry, name: &str) -> Result<Vec<String>> {
    if name == HUB_CERT_NAME {
        bail!(
            "name: the hub's own certificate is replaced with `renkei hub renew-cert`, not revoked"
        );
    }
    let ca = load_ca(state)?;
    let serials = reg.revoke_certs(name, unix_now())?;
    write_crl(state, reg, &ca)?;
    Ok(serials)
}
