//! HTTPS for the status page off loopback: who may look.
//!
//! The server presents the hub's own certificate (`STATE/hub.pem`, its
//! key `STATE/hub.key`) and requires a client certificate that chains to
//! the hub's CA (`STATE/ca/ca.pem`, and `ca-old.pem` during a rollover),
//! checked by rustls's WebPKI verifier. The same CA signs the facilities'
//! router certificates, so a chain alone would let any hospital's router
//! key open the page: after the handshake the certificate's serial must
//! also be recorded in the registry as an operator certificate
//! (`operator:NAME`, made by `renkei cert issue-operator`) and not be
//! revoked (`renkei cert revoke operator:NAME` takes effect at the next
//! connection). Anything else gets 403 and the connection is closed.

use super::HANDSHAKE_TIMEOUT;
use crate::certs;
#[cfg(test)]
use crate::daemon::history;
use crate::registry::{now_rfc3339, CertRecord, Registry};
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The registry name prefix of operator certificates (a facility name
/// cannot hold ':').
pub(crate) const OPERATOR_PREFIX: &str = "operator:";

/// The TLS side of the server.
pub(super) struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// An operator certificate whose serial is `serial`, recorded and not
/// revoked nor expired: its name.
fn operator_of(records: &[CertRecord], serial: &str, now: i64) -> Option<String> {
    records
        .iter()
        .find(|c| {
            c.serial.eq_ignore_ascii_case(serial)
                && c.name.starts_with(OPERATOR_PREFIX)
                && c.revoked.is_none()
                && c.not_after > now
        })
        .map(|c| c.name.clone())
}

impl Tls {
    /// Reads the CA, the hub's certificate and key; refuses when any is
    /// missing or when no operator certificate exists to log in with.
    pub(super) fn load(addr: SocketAddr, state: &StateDir) -> Result<Tls> {
        let why = format!(
            "http: {addr} is not a loopback address, so the status page is served over HTTPS to operator certificates of the hub's CA only"
        );
        let ca = state.ca_cert();
        if !ca.exists() {
            bail!(
                "{why}, and this state directory has no CA ({}): serve it on 127.0.0.1 and reach it through an SSH tunnel",
                ca.display()
            );
        }
        let reg = Registry::open(state)?;
        let now = certs::unix_now();
        if !reg.certs()?.iter().any(|c| {
            c.name.starts_with(OPERATOR_PREFIX) && c.revoked.is_none() && c.not_after > now
        }) {
            bail!(
                "{why}, and no operator certificate is issued: make one with `renkei cert issue-operator NAME --out DIR` first"
            );
        }
        drop(reg);
        let mut roots = rustls::RootCertStore::empty();
        for path in [ca, state.ca_old_cert()] {
            if !path.exists() {
                continue;
            }
            for cert in read_certs(&path)? {
                roots
                    .add(cert)
                    .with_context(|| format!("http: {}", path.display()))?;
            }
        }
        let mut chain = read_certs(&state.hub_cert())?;
        chain.extend(read_certs(&state.ca_cert())?);
        let key_path = state.hub_key();
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| anyhow::anyhow!("http: {}: {e}", key_path.display()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| anyhow::anyhow!("http: client certificate verifier: {e}"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("http: TLS: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| anyhow::anyhow!("http: the hub's certificate and key: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The TLS handshake (within [`HANDSHAKE_TIMEOUT`]) and the operator
    /// check: the stream and whether its certificate may see the page.
    pub(super) async fn accept(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        state: &StateDir,
    ) -> Option<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, bool)> {
        let stream =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, "http: TLS handshake refused: {e}");
                    return None;
                }
                Err(_) => return None,
            };
        let serial = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
            .map(|(_, c)| pki::verify::serial_hex(c.raw_serial()))?;
        let state = state.clone();
        let lookup = serial.clone();
        let operator = tokio::task::spawn_blocking(move || -> Result<Option<String>> {
            let reg = Registry::open(&state)?;
            Ok(operator_of(&reg.certs()?, &lookup, certs::unix_now()))
        })
        .await;
        match operator {
            Ok(Ok(Some(name))) => {
                tracing::debug!(%peer, %name, "http: operator connected");
                Some((stream, true))
            }
            Ok(Ok(None)) => {
                tracing::warn!(%peer, %serial, "http: refused a certificate of the hub's CA that is not a current operator certificate");
                Some((stream, false))
            }
            Ok(Err(e)) => {
                tracing::warn!(%peer, "http: reading the registry: {e:#}");
                None
            }
            Err(_) => None,
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("http: {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("http: {} holds no certificate", path.display());
    }
    Ok(certs)
}

/// What `issue_operator` wrote.
#[derive(Debug)]
pub(crate) struct IssuedOperator {
    pub(crate) serial: String,
    pub(crate) not_after: i64,
    pub(crate) files: Vec<PathBuf>,
}

/// `renkei cert issue-operator NAME --out DIR`: a client certificate for
/// an operator's browser or curl, from the hub's CA, recorded as
/// `operator:NAME`: NAME.key (0600), NAME.pem, ca.pem, and NAME.p12 with
/// its password in NAME.p12.password (0600) for a browser. No file is
/// overwritten.
pub(crate) fn issue_operator(
    state: &StateDir,
    reg: &mut Registry,
    name: &str,
    out: &Path,
    days: u32,
) -> Result<IssuedOperator> {
    crate::registry::check_name(name)?;
    if !(1..=3650).contains(&days) {
        bail!("days: {days} is outside 1..=3650");
    }
    let ca = certs::load_ca(state)?;
    let identity = pki::Identity::parse(&format!("CN={name}, OU=renkei operator"))
        .map_err(|e| anyhow::anyhow!("name: {e}"))?;
    let kind = pki::ca::KeyKind::EcdsaP256;
    let now = certs::unix_now();
    certs::refuse_existing(out, name)?;
    let ca_path = out.join("ca.pem");
    let write_ca = match std::fs::read(&ca_path) {
        Ok(existing) if existing == ca.cert_pem().as_bytes() => false,
        Ok(_) => bail!(
            "out: {} already exists and is not this hub's CA certificate; move it away or choose another --out",
            ca_path.display()
        ),
        Err(_) => true,
    };
    let issued = ca
        .issue(&identity, kind, now, days)
        .map_err(|e| anyhow::anyhow!("issuing: {e}"))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = certs::credential_files(out, name, &issued, &ca)?;
    if write_ca {
        files.push((ca_path, ca.cert_pem().as_bytes().to_vec(), 0o644));
    }
    let mut written = Vec::new();
    let result = (|| -> Result<()> {
        for (path, data, mode) in &files {
            certs::write_new(path, data, *mode)?;
            written.push(path.clone());
        }
        reg.record_cert(&CertRecord {
            serial: issued.serial.clone(),
            name: format!("{OPERATOR_PREFIX}{name}"),
            identity: identity.to_string(),
            key_type: kind.to_string(),
            not_after: issued.not_after,
            issued: now_rfc3339(),
            revoked: None,
        })?;
        reg.set_cert_ca(&issued.serial, &certs::fingerprint(ca.cert_der()))?;
        Ok(())
    })();
    if let Err(e) = result {
        certs::remove_all(&written);
        return Err(e);
    }
    Ok(IssuedOperator {
        serial: issued.serial,
        not_after: issued.not_after,
        files: written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, serial: &str, not_after: i64, revoked: Option<i64>) -> CertRecord {
        CertRecord {
            serial: serial.into(),
            name: name.into(),
            identity: String::new(),
            key_type: "ecdsa-p256".into(),
            not_after,
            issued: String::new(),
            revoked,
        }
    }

    /// A facility's certificate or the hub's chains to the same CA but
    /// does not open the page; a revoked or expired operator's neither.
    #[test]
    fn only_current_operator_certificates_open_the_page() {
        let records = [
            rec("kyoto", "0a", 1000, None),
            rec(crate::certs::HUB_CERT_NAME, "0b", 1000, None),
            rec("operator:alice", "0c", 1000, None),
            rec("operator:bob", "0d", 1000, Some(5)),
            rec("operator:carol", "0e", 10, None),
        ];
        assert_eq!(
            operator_of(&records, "0C", 100).as_deref(),
            Some("operator:alice")
        );
        for refused in ["0a", "0b", "0d", "0e", "ff"] {
            assert_eq!(operator_of(&records, refused, 100), None, "{refused}");
        }
    }
}

/// A hub's state directory with its CA, a certificate facility "kyoto"
/// with a certificate in `dir/kyoto`.
#[cfg(test)]
fn test_hub(tag: &str) -> (StateDir, Registry, PathBuf) {
    use crate::registry::{Hub, NewPeer};
    let dir = std::env::temp_dir().join(format!("renkei-web-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = StateDir::new(dir.join("state"));
    let id = pki::Identity::parse("hub.example").expect("identity");
    let mut reg = Registry::init(
        &state,
        &Hub {
            id: id.clone(),
            public_addrs: vec![],
            profile: "cryptrec".into(),
        },
    )
    .expect("init");
    certs::create(&state, &mut reg, &id, pki::ca::KeyKind::EcdsaP256).expect("CA");
    reg.add_peer(&NewPeer {
        name: "kyoto".into(),
        id: "kyoto.example".into(),
        cert: true,
        remote_ts: "198.51.100.0/26".into(),
        ..Default::default()
    })
    .expect("peer");
    certs::issue(
        &state,
        &mut reg,
        "kyoto",
        pki::ca::KeyKind::EcdsaP256,
        &dir.join("kyoto"),
        30,
        false,
    )
    .expect("facility certificate");
    (state, reg, dir)
}

#[cfg(test)]
mod handshake {
    use super::*;
    use crate::control::Reply;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// GET `path` over TLS as the holder of `cert` (files NAME.pem and
    /// NAME.key), or without a certificate: the response, or the error.
    async fn get(port: u16, ca: &Path, cert: Option<&Path>, path: &str) -> Result<String, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(ca).map_err(|e| e.to_string())? {
            roots.add(c).map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match cert {
            Some(stem) => builder
                .with_client_auth_cert(
                    read_certs(&stem.with_extension("pem")).map_err(|e| e.to_string())?,
                    PrivateKeyDer::from_pem_file(stem.with_extension("key"))
                        .map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?,
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls_pki_types::ServerName::try_from("hub.example").map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: hub.example\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Off loopback the server is HTTPS: no client certificate, a
    /// facility's certificate from the same CA, a revoked operator
    /// certificate are all refused; a current operator certificate gets
    /// the page and the metrics.
    #[test]
    fn off_loopback_only_operator_certificates_get_in() {
        let (state, mut reg, dir) = test_hub("tls");
        // Refused at start while no operator certificate exists.
        let unspecified: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        let e = Tls::load(unspecified, &state).expect_err("no operator certificate");
        assert!(
            e.to_string()
                .contains("renkei cert issue-operator NAME --out DIR"),
            "{e}"
        );
        let ops = dir.join("ops");
        issue_operator(&state, &mut reg, "alice", &ops, 30).expect("operator");
        // No file is ever overwritten.
        let again = issue_operator(&state, &mut reg, "alice", &ops, 30).expect_err("again");
        assert!(again.to_string().contains("already exists"), "{again}");
        drop(reg);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let server = super::super::Server::bind(unspecified, &state)
                .await
                .expect("bind");
            assert!(server.url().starts_with("https://"), "{}", server.url());
            let port = server.listener.local_addr().expect("addr").port();
            // The daemon's side of the control channel.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::control::Asked>(4);
            tokio::spawn(async move {
                while let Some((_, _, reply)) = rx.recv().await {
                    let _ = reply.send(Ok(Reply::Status(Box::default())));
                }
            });
            tokio::spawn(server.serve(tx, history::Shared::default(), state.clone()));
            let ca = ops.join("ca.pem");

            let none = get(port, &ca, None, "/metrics").await;
            assert!(
                !none.as_deref().unwrap_or("").contains("200 OK"),
                "without a certificate: {none:?}"
            );
            let facility = get(port, &ca, Some(&dir.join("kyoto/kyoto")), "/metrics")
                .await
                .expect("a facility's certificate completes TLS");
            assert!(facility.starts_with("HTTP/1.1 403"), "{facility}");
            assert!(!facility.contains("renkei_build_info"), "{facility}");

            let alice = Some(ops.join("alice"));
            let metrics = get(port, &ca, alice.as_deref(), "/metrics")
                .await
                .expect("operator");
            assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
            assert!(metrics.contains("renkei_build_info"), "{metrics}");
            let page = get(port, &ca, alice.as_deref(), "/").await.expect("page");
            assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
            assert!(page.contains("<html lang=\"en\">"), "{page}");

            // Revoked: shut out from the next connection on.
            let mut reg = Registry::open(&state).expect("registry");
            certs::revoke(&state, &mut reg, "operator:alice", None).expect("revoke");
            drop(reg);
            let revoked = get(port, &ca, alice.as_deref(), "/metrics")
                .await
                .expect("TLS");
            assert!(revoked.starts_with("HTTP/1.1 403"), "{revoked}");
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
