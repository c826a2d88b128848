//! The control socket: newline-delimited JSON over a Unix socket in the
//! state directory, mode 0600, and only peers with the daemon's own user ID
//! (root) are answered.

use crate::daemon::status::HubStatus;
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
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
    /// Re-read the registry: only the facility named when one is (and
    /// the CA's revocations with `certificates`), else everything.
    Reload {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        facility: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        certificates: bool,
    },
    /// Re-read the hub's own certificates and the CAs it trusts (after
    /// `hub renew-cert` or a CA rollover); established SAs are kept.
    ReloadCredentials,
    /// Initiate a facility's tunnel now.
    SaUp { name: String },
    /// Tear a facility's tunnel down.
    SaDown { name: String },
}

/// The daemon's answer to a request, typed; [`Response`] is its form on
/// the wire.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// To [`Request::Ping`].
    Pong,
    /// To [`Request::Status`].
    Status(Box<HubStatus>),
    /// To [`Request::Reload`].
    Reloaded(Reloaded),
    /// To [`Request::SaUp`].
    Initiated(Initiated),
    /// To [`Request::SaDown`].
    Closed(Closed),
}

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Reloaded {
    pub(crate) changes: Vec<Change>,
}

/// One facility a reload touched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Change {
    pub(crate) name: String,
    pub(crate) action: ChangeAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChangeAction {
    Added,
    Changed,
    Removed,
    Revoked,
}

/// The IKE SA `sa up` started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Initiated {
    pub(crate) ike_sa: String,
}

/// How many IKE SAs `sa down` closed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Closed {
    pub(crate) closed: usize,
}

/// What the control loop answers: a reply, or an error for the operator.
pub(crate) type Answer = std::result::Result<Reply, String>;

/// A request on its way to the control loop, with the asking user as the
/// audit log names it ([`crate::audit::client`]) and where the answer goes.
pub(crate) type Asked = (Request, String, oneshot::Sender<Answer>);

/// The daemon's answer on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Response {
    pub(crate) ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl From<Answer> for Response {
    fn from(answer: Answer) -> Response {
        let data = match answer {
            Ok(Reply::Pong) => serde_json::to_value("pong"),
            Ok(Reply::Status(s)) => serde_json::to_value(s),
            Ok(Reply::Reloaded(r)) => serde_json::to_value(r),
            Ok(Reply::Initiated(i)) => serde_json::to_value(i),
            Ok(Reply::Closed(c)) => serde_json::to_value(c),
            Err(e) => return Response::err(e),
        };
        match data {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(format!("cannot encode the answer: {e}")),
        }
    }
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

/// The daemon's answer to a user other than its own or root.
const DENIED: &str = "permission denied";

/// Binds the control socket, replacing a stale one.
pub(crate) fn bind(state: &StateDir) -> Result<tokio::net::UnixListener> {
    let path = state.control_socket();
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
pub(crate) async fn serve(listener: tokio::net::UnixListener, tx: mpsc::Sender<Asked>) {
    let own_uid = own_uid();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let cred = stream.peer_cred().ok();
        let uid = cred.map(|c| c.uid());
        let allowed = uid.is_some_and(|u| u == own_uid || u == 0);
        let who = crate::audit::client(uid.unwrap_or(u32::MAX), cred.and_then(|c| c.pid()));
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let resp = if !allowed {
                    Response::err(DENIED.into())
                } else {
                    match serde_json::from_str::<Request>(&line) {
                        Ok(req) => {
                            let (otx, orx) = oneshot::channel();
                            if tx.send((req, who.clone(), otx)).await.is_err() {
                                return;
                            }
                            orx.await.map_or_else(
                                |_| Response::err("daemon is shutting down".into()),
                                Response::from,
                            )
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

/// Sends one request to the running daemon and reads its answer as `T`.
pub(crate) fn request_as<T: DeserializeOwned>(state: &StateDir, req: &Request) -> Result<T> {
    serde_json::from_value(request(state, req)?).context("reading the daemon's answer")
}

/// The running hub's status report.
pub(crate) fn status(state: &StateDir) -> Result<HubStatus> {
    request_as(state, &Request::Status)
}

/// Sends one request to the running daemon and returns its data.
pub(crate) fn request(state: &StateDir, req: &Request) -> Result<Value> {
    let path = state.control_socket();
    let mut stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            crate::exit::denied(state, "connecting to the hub's control socket", &path)
        }
        // No socket, or one no daemon listens on (left by a crash).
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            anyhow::Error::new(crate::exit::NotRunning(format!(
                "renkei is not running for {} ({}: {e})",
                state.display(),
                path.display()
            )))
        }
        _ => anyhow::anyhow!("connecting to {}: {e}", path.display()),
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    let resp: Response = serde_json::from_str(&reply).context("reading the daemon's answer")?;
    if !resp.ok {
        let error = resp.error.unwrap_or_else(|| "request failed".into());
        if error == DENIED {
            return Err(crate::exit::denied(state, "asking the hub through", &path));
        }
        bail!("{error}");
    }
    Ok(resp.data.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_the_facility_and_an_old_one_still_parses() {
        let all: Request = serde_json::from_str(r#"{"cmd":"reload"}"#).unwrap();
        assert!(matches!(
            all,
            Request::Reload {
                facility: None,
                certificates: false
            }
        ));
        let one = Request::Reload {
            facility: Some("kyoto".into()),
            certificates: true,
        };
        let line = serde_json::to_string(&one).unwrap();
        assert_eq!(
            line,
            r#"{"cmd":"reload","facility":"kyoto","certificates":true}"#
        );
        let everything = Request::Reload {
            facility: None,
            certificates: false,
        };
        assert_eq!(
            serde_json::to_string(&everything).unwrap(),
            r#"{"cmd":"reload"}"#
        );
    }
}
