//! The hub's key and certificates for the second hub of a pair: sealed in
//! the shared registry with age under a cluster key (an X25519 identity)
//! that the operator copies once to each hub's state directory.
//!
//! ```text
//!  first hub:  hub.key, hub.pem, ca/ca.pem (+ the previous ones during a rollover)
//!              ─▶ JSON ─▶ age (to the cluster key's public key) ─▶ registry meta 'sealed_hub'
//!  every hub:  renkei serve --node N: cluster.key + registry ─▶ the same credentials, in memory
//! ```
//!
//! The CA's private key is never sealed: it stays on the hub where
//! `renkei init` made it (ARCHITECTURE.md "Two hubs": why).

use crate::certs::Pki;
use crate::registry::Registry;
use crate::state::StateDir;
use age::secrecy::ExposeSecret;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use rust_i18n::t;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroize;

/// The `meta` key of the sealed bundle (base64 of the age file).
const SEALED: &str = "sealed_hub";
/// The `meta` key of the public key it is sealed to (for messages).
const SEALED_FOR: &str = "sealed_hub_for";
/// When it was sealed (RFC 3339).
const SEALED_AT: &str = "sealed_hub_at";

/// What is sealed: PEM texts as the state directory holds them.
#[derive(Serialize, Deserialize)]
struct Bundle {
    hub_key: String,
    hub_cert: String,
    ca_cert: String,
    /// During a CA rollover: the hub's key and certificate from the
    /// previous CA, and that CA's certificate.
    #[serde(default)]
    hub_old_key: Option<String>,
    #[serde(default)]
    hub_old_cert: Option<String>,
    #[serde(default)]
    ca_old_cert: Option<String>,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        self.hub_key.zeroize();
        if let Some(k) = &mut self.hub_old_key {
            k.zeroize();
        }
    }
}

/// What `renkei hub seal` did.
#[derive(Debug)]
pub(crate) struct Sealed {
    /// The cluster key file was written now (else an existing one was used).
    pub(crate) created_key: bool,
    /// Its public key (age1…).
    pub(crate) recipient: String,
}

/// Reads a cluster key file: `#` comment lines and one `AGE-SECRET-KEY-1…`.
fn read_key(path: &Path) -> Result<age::x25519::Identity> {
    let text = zeroize::Zeroizing::new(match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}", t!("ha.key_missing", path = path.display()))
        }
        Err(e) => bail!(
            "{}",
            t!("ha.key_unreadable", path = path.display(), error = e)
        ),
    });
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    line.parse::<age::x25519::Identity>()
        .map_err(|_| anyhow::anyhow!("{}", t!("ha.key_malformed", path = path.display())))
}

/// Writes a new cluster key file (0600); never replaces one.
fn create_key(path: &Path) -> Result<age::x25519::Identity> {
    let id = age::x25519::Identity::generate();
    let text = zeroize::Zeroizing::new(format!(
        "# {}\n# public key: {}\n{}\n",
        t!("ha.key_header"),
        id.to_public(),
        id.to_string().expose_secret()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cluster-key: creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(id)
}

fn read_pem(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `renkei hub seal`: seals this state directory's hub key and
/// certificates into the registry under the cluster key at `key_path`,
/// creating that file when it does not exist. Run again after `hub
/// renew-cert` or a CA rollover (those commands do it themselves when
/// the cluster key is in the state directory).
pub(crate) fn seal(state: &StateDir, reg: &mut Registry, key_path: &Path) -> Result<Sealed> {
    let bundle = Bundle {
        hub_key: read_pem(&state.hub_key()).context(t!("ha.no_hub_key"))?,
        hub_cert: read_pem(&state.hub_cert())?,
        ca_cert: read_pem(&state.ca_cert())?,
        hub_old_key: read_optional(&state.hub_old_key())?,
        hub_old_cert: read_optional(&state.hub_old_cert())?,
        ca_old_cert: read_optional(&state.ca_old_cert())?,
    };
    // Checked before anything is written: what is sealed must load.
    pki_of(&bundle, reg)?;
    let (id, created_key) = if key_path.exists() {
        (read_key(key_path)?, false)
    } else {
        (create_key(key_path)?, true)
    };
    let recipient = id.to_public();
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(&bundle)?);
    let mut sealed = Vec::new();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| anyhow::anyhow!("sealing: {e}"))?;
    let mut w = encryptor.wrap_output(&mut sealed)?;
    w.write_all(&plain)?;
    w.finish()?;
    let stored = reg.set_meta(&[
        (
            SEALED,
            &base64::engine::general_purpose::STANDARD.encode(&sealed),
        ),
        (SEALED_FOR, &recipient.to_string()),
        (SEALED_AT, &crate::registry::now_rfc3339()),
    ]);
    if let Err(e) = stored {
        if created_key {
            let _ = std::fs::remove_file(key_path);
        }
        return Err(e);
    }
    Ok(Sealed {
        created_key,
        recipient: recipient.to_string(),
    })
}

/// Whether the registry holds a sealed hub key.
pub(crate) fn is_sealed(reg: &Registry) -> Result<bool> {
    Ok(reg.meta(SEALED)?.is_some())
}

/// The hub's credentials and trust store from the registry, opened with
/// the cluster key at `key_path`: what `serve --node` runs with, on every
/// hub of the pair, so that both present the same certificate.
pub(crate) fn load(reg: &Registry, key_path: &Path) -> Result<Pki> {
    let Some(sealed) = reg.meta(SEALED)? else {
        bail!("{}", t!("ha.not_sealed"));
    };
    let id = read_key(key_path)?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed.trim())
        .context(t!("ha.sealed_damaged"))?;
    let decryptor = age::Decryptor::new(&sealed[..])
        .map_err(|e| anyhow::anyhow!("{} ({e})", t!("ha.sealed_damaged")))?;
    let mut plain = zeroize::Zeroizing::new(Vec::new());
    match decryptor.decrypt(std::iter::once(&id as &dyn age::Identity)) {
        Ok(mut r) => {
            r.read_to_end(&mut plain).context(t!("ha.sealed_damaged"))?;
        }
        Err(age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed) => {
            let sealed_for = reg.meta(SEALED_FOR)?.unwrap_or_else(|| "?".into());
            bail!(
                "{}",
                t!(
                    "ha.key_wrong",
                    path = key_path.display(),
                    public = id.to_public(),
                    sealed_for = sealed_for
                )
            );
        }
        Err(e) => bail!("registry: the sealed hub key cannot be opened: {e}"),
    }
    let bundle: Bundle = serde_json::from_slice(&plain).context(t!("ha.sealed_damaged"))?;
    pki_of(&bundle, reg)
}

/// The credentials and trust store a bundle makes (with the registry's
/// revocations).
fn pki_of(b: &Bundle, reg: &Registry) -> Result<Pki> {
    let credentials = Arc::new(crate::certs::credentials_from_pem(
        &b.hub_key,
        &b.hub_cert,
        "the hub's key",
    )?);
    let der = |pem: &str, what: &str| crate::certs::pem_der(pem, Path::new(what));
    let mut cas = vec![der(&b.ca_cert, "the CA certificate")?];
    let mut by_ca = Vec::new();
    if let (Some(old_ca), Some(old_key), Some(old_cert)) =
        (&b.ca_old_cert, &b.hub_old_key, &b.hub_old_cert)
    {
        let old_der = der(old_ca, "the previous CA certificate")?;
        let hashes = |d: &[u8]| {
            pki::verify::certreq_hashes(d).map_err(|e| anyhow::anyhow!("CA certificate: {e}"))
        };
        by_ca.push(ike::CaCredentials {
            ca_hashes: hashes(&cas[0])?,
            credentials: credentials.clone(),
        });
        by_ca.push(ike::CaCredentials {
            ca_hashes: hashes(&old_der)?,
            credentials: Arc::new(crate::certs::credentials_from_pem(
                old_key,
                old_cert,
                "the hub's key from the previous CA",
            )?),
        });
        cas.push(old_der);
    }
    let revoked = reg
        .certs()?
        .into_iter()
        .filter(|c| c.revoked.is_some())
        .map(|c| c.serial);
    let refs: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
    let trust = pki::verify::TrustStore::with_cas(&refs, revoked)
        .map_err(|e| anyhow::anyhow!("CA certificate: {e}"))?;
    Ok(Pki {
        credentials,
        by_ca,
        trust: Arc::new(trust),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        let d = std::env::temp_dir().join(format!(
            "renkei-cluster-{tag}-{}-{}",
            std::process::id(),
            u64::from_ne_bytes(b)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn init(dir: &Path) -> (StateDir, Registry) {
        let state = StateDir::new(dir);
        let mut reg = Registry::init(
            &state,
            &crate::registry::Hub {
                id: pki::Identity::parse("hub.example").unwrap(),
                public_addrs: vec![],
                profile: "cryptrec".into(),
            },
        )
        .unwrap();
        crate::certs::create(
            &state,
            &mut reg,
            &pki::Identity::parse("hub.example").unwrap(),
            pki::ca::KeyKind::EcdsaP256,
        )
        .unwrap();
        (state, reg)
    }

    /// Sealed on one hub, opened with the copied key anywhere; a missing,
    /// malformed or foreign key is refused by name, and an unsealed
    /// registry says what to run.
    #[test]
    fn the_hub_key_opens_only_with_its_cluster_key() {
        let dir = temp_dir("a");
        let (state, mut reg) = init(&dir);
        let key = state.cluster_key();
        let e = load(&reg, &key).err().unwrap().to_string();
        assert!(e.contains("renkei hub seal"), "{e}");
        assert!(!is_sealed(&reg).unwrap());

        let sealed = seal(&state, &mut reg, &key).unwrap();
        assert!(sealed.created_key);
        assert!(sealed.recipient.starts_with("age1"), "{sealed:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let pki = load(&reg, &key).unwrap();
        let on_disk = std::fs::read_to_string(state.hub_cert()).unwrap();
        assert_eq!(
            pki.credentials.cert_der,
            crate::certs::pem_der(&on_disk, Path::new("hub.pem")).unwrap()
        );
        // Sealing again keeps the key file.
        let again = seal(&state, &mut reg, &key).unwrap();
        assert!(!again.created_key);
        assert_eq!(again.recipient, sealed.recipient);

        let missing = dir.join("nowhere.key");
        let e = load(&reg, &missing).err().unwrap().to_string();
        assert!(
            e.starts_with("cluster-key: ") && e.contains("does not exist"),
            "{e}"
        );
        let garbage = dir.join("garbage.key");
        std::fs::write(&garbage, "AGE-SECRET-KEY-1NOPE\n").unwrap();
        let e = load(&reg, &garbage).err().unwrap().to_string();
        assert!(e.contains("is not a cluster key"), "{e}");
        let foreign = dir.join("foreign.key");
        create_key(&foreign).unwrap();
        let e = load(&reg, &foreign).err().unwrap().to_string();
        assert!(
            e.starts_with("cluster-key: ") && e.contains(&sealed.recipient),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
