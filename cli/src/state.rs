//! The state directory (`--state DIR`): everything an instance keeps, and
//! where. No other module joins a file name to the directory.
//!
//! ```text
//!  STATE/                 0700
//!  ├── registry.db        the registry (SQLite, 0600), or
//!  ├── registry.url       where it is in PostgreSQL (its URL, 0600)
//!  ├── ca/ca.key          CA private key (0600)
//!  ├── ca/ca.pem          CA certificate
//!  ├── ca/crl.pem         revocation list
//!  ├── ca/ca-old.key, ca/ca-old.pem  the previous CA, during a CA rollover
//!  ├── hub.key, hub.pem   the hub's key (0600) and certificate
//!  ├── hub-old.key, hub-old.pem  its certificate from the previous CA (rollover)
//!  ├── retired/           every key and certificate the hub replaced,
//!  │                      as NAME.YYYYMMDDTHHMMSSZ (0700)
//!  ├── cluster.key        the key that opens the hub's key sealed in the
//!  │                      registry, on both hubs of a pair (0600)
//!  ├── audit.log          append-only audit log (0600)
//!  ├── audit.log.N        its closed segments (`renkei audit rotate`)
//!  └── renkei.sock        control socket (0600)
//! ```

use anyhow::{Context, Result};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One instance's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateDir {
    root: PathBuf,
    /// The registry URL given on the command line or in the environment
    /// (`--registry`, `RENKEI_REGISTRY`), which overrides
    /// [`StateDir::registry_url_file`].
    registry: Option<String>,
}

impl StateDir {
    pub(crate) fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir {
            root: root.into(),
            registry: None,
        }
    }

    /// This directory with the registry at `url` (a `postgresql://` URL
    /// given as `--registry` or `RENKEI_REGISTRY`).
    pub(crate) fn with_registry(mut self, url: Option<String>) -> StateDir {
        self.registry = url.filter(|u| !u.is_empty());
        self
    }

    /// The registry URL given for this run, if any.
    pub(crate) fn registry_override(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    /// For messages.
    pub(crate) fn display(&self) -> std::path::Display<'_> {
        self.root.display()
    }

    /// The directory itself, for `backup` and `restore`, which copy all of
    /// it (every other module names files through the methods below).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory (and its parents), mode 0700.
    pub(crate) fn create(&self) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))?;
        Ok(())
    }

    /// Whether `path` (in this directory) exists. A user who may not look
    /// is told so and what to do ([`crate::exit::denied`]), rather than
    /// that the file is missing.
    pub(crate) fn exists(&self, path: &Path, doing: &str) -> Result<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(crate::exit::denied(self, doing, path))
            }
            Err(e) => Err(e).with_context(|| format!("{doing} {}", path.display())),
        }
    }

    /// The registry database (SQLite adds `-wal` and `-shm` beside it).
    pub(crate) fn registry(&self) -> PathBuf {
        self.root.join("registry.db")
    }

    /// Where a PostgreSQL registry is (its URL, without a password), as
    /// `init --registry` remembered it (0600).
    pub(crate) fn registry_url_file(&self) -> PathBuf {
        self.root.join("registry.url")
    }

    /// The CA's directory.
    pub(crate) fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    pub(crate) fn ca_key(&self) -> PathBuf {
        self.ca_dir().join("ca.key")
    }

    pub(crate) fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }

    /// The CRL, rewritten on every revocation.
    pub(crate) fn crl(&self) -> PathBuf {
        self.ca_dir().join("crl.pem")
    }

    pub(crate) fn hub_key(&self) -> PathBuf {
        self.root.join("hub.key")
    }

    pub(crate) fn hub_cert(&self) -> PathBuf {
        self.root.join("hub.pem")
    }

    /// The previous CA's key and certificate during a CA rollover.
    pub(crate) fn ca_old_key(&self) -> PathBuf {
        self.ca_dir().join("ca-old.key")
    }

    pub(crate) fn ca_old_cert(&self) -> PathBuf {
        self.ca_dir().join("ca-old.pem")
    }

    /// The hub's key and certificate from the previous CA, during a CA
    /// rollover.
    pub(crate) fn hub_old_key(&self) -> PathBuf {
        self.root.join("hub-old.key")
    }

    pub(crate) fn hub_old_cert(&self) -> PathBuf {
        self.root.join("hub-old.pem")
    }

    /// Where replaced keys and certificates are kept.
    pub(crate) fn retired_dir(&self) -> PathBuf {
        self.root.join("retired")
    }

    /// The cluster key (`renkei hub seal`), an age X25519 identity.
    pub(crate) fn cluster_key(&self) -> PathBuf {
        self.root.join("cluster.key")
    }

    pub(crate) fn audit_log(&self) -> PathBuf {
        self.root.join("audit.log")
    }

    pub(crate) fn control_socket(&self) -> PathBuf {
        self.root.join("renkei.sock")
    }
}

impl AsRef<Path> for StateDir {
    fn as_ref(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout is a contract: the README, the systemd unit and the
    /// interop tests name these files.
    #[test]
    fn the_layout_is_fixed() {
        let s = StateDir::new("/var/lib/renkei");
        for (path, want) in [
            (s.registry(), "registry.db"),
            (s.registry_url_file(), "registry.url"),
            (s.ca_key(), "ca/ca.key"),
            (s.ca_cert(), "ca/ca.pem"),
            (s.crl(), "ca/crl.pem"),
            (s.hub_key(), "hub.key"),
            (s.hub_cert(), "hub.pem"),
            (s.ca_old_key(), "ca/ca-old.key"),
            (s.ca_old_cert(), "ca/ca-old.pem"),
            (s.hub_old_key(), "hub-old.key"),
            (s.hub_old_cert(), "hub-old.pem"),
            (s.retired_dir(), "retired"),
            (s.cluster_key(), "cluster.key"),
            (s.audit_log(), "audit.log"),
            (s.control_socket(), "renkei.sock"),
        ] {
            assert_eq!(path, Path::new("/var/lib/renkei").join(want));
        }
    }
}
