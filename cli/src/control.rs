//! The control socket: newline-delimited JSON over a Unix socket in the
//! state directory, mode 0600, and only peers with the daemon's own user ID
//! (root) are answered.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// A request from the CLI to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Is a daemon there?
    Ping,
    /// Everything `renkei status` shows.
    Status,
    /// Re-read the registry.
    Reload,
    /// Initiate a facility's tunnel now.
    SaUp { name: String },
    /// Tear a facility's tunnel down.
    SaDown { name: String },
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Response {
    pub(crate) ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl Response {
    pub(crate) fn ok(data: Value) -> Response {
        Response {
            ok: true,
            data: Some(data),
            error: None,
        }
    }
    pub(crate) fn err(e: String) -> Response {
        Response {
            ok: false,
            data: None,
            error: Some(e),
        }
    }
}

pub(crate) fn socket_path(state: &Path) -> PathBuf {
    state.join("renkei.sock")
}

/// Binds the control socket, replacing a stale one.
pub(crate) fn bind(state: &Path) -> Result<tokio::net::UnixListener> {
    let path = socket_path(state);
    if path.exists() {
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections and hands each request to the control loop.
pub(crate) async fn serve(
    listener: tokio::net::UnixListener,
    tx: mpsc::Sender<(Request, u32, oneshot::Sender<Response>)>,
) {
    let own_uid = own_uid();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        let allowed = uid.is_some_and(|u| u == own_uid || u == 0);
        let uid = uid.unwrap_or(u32::MAX);
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let resp = if !allowed {
                    Response::err("permission denied".into())
                } else {
                    match serde_json::from_str::<Request>(&line) {
                        Ok(req) => {
                            let (otx, orx) = oneshot::channel();
                            if tx.send((req, uid, otx)).await.is_err() {
                                return;
                            }
                            orx.await
                                .unwrap_or_else(|_| Response::err("daemon is shutting down".into()))
                        }
                        Err(e) => Response::err(format!("bad request: {e}")),
                    }
                };
                let mut out = serde_json::to_vec(&resp).unwrap_or_default();
                out.push(b'\n');
                if w.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The daemon's user ID, read without FFI (the owner of /proc/self).
fn own_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

/// Sends one request to the running daemon and returns its data.
pub(crate) fn request(state: &Path, req: &Request) -> Result<Value> {
    let path = socket_path(state);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        anyhow::anyhow!(
            "renkei is not running for {} ({}: {e})",
            state.display(),
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    let resp: Response = serde_json::from_str(&reply).context("reading the daemon's answer")?;
    if !resp.ok {
        bail!("{}", resp.error.unwrap_or_else(|| "request failed".into()));
    }
    Ok(resp.data.unwrap_or(Value::Null))
}
