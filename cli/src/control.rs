//! The control socket: newline-delimited JSON over a Unix socket in the
//! state directory, mode 0600, and only peers with the daemon's own user ID
//! (root) are answered.

use crate::daemon::status::HubStatus;
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use rust_i18n::t;
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
    /// Everything about one facility (`status NAME`, `diagnose NAME`):
    /// the status report with only that facility, its last events
    /// included.
    Facility { name: String },
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
    /// keepalived's notify hook: this node's VRRP state now.
    HaNotify { state: crate::daemon::ha::Vrrp },
    /// Hand the facilities to the other hub (`renkei drain`).
    Drain {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        wait_secs: u64,
    },
    /// Stop draining (`renkei drain --cancel`).
    Undrain,
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
    /// To [`Request::HaNotify`]: the node's HA state after it.
    Ha(crate::daemon::ha::HaStatus),
    /// To [`Request::Drain`] and [`Request::Undrain`].
    Drain(Box<crate::daemon::drain::DrainReport>),
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
            Ok(Reply::Ha(h)) => serde_json::to_value(h),
            Ok(Reply::Drain(d)) => serde_json::to_value(d),
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

/// One facility's report (the hub summary and recent refusals, and only
/// that facility, with its events).
pub(crate) fn facility(state: &StateDir, name: &str) -> Result<HubStatus> {
    request_as(
        state,
        &Request::Facility {
            name: name.to_string(),
        },
    )
}

/// Sends one request to the running daemon and returns its data.
pub(crate) fn request(state: &StateDir, req: &Request) -> Result<Value> {
    let path = state.control_socket();
    let mut stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            crate::exit::denied(state, &t!("cli.doing_connect_socket"), &path)
        }
        // No socket, or one no daemon listens on (left by a crash).
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            anyhow::Error::new(crate::exit::NotRunning(
                t!(
                    "cli.not_running",
                    state = state.display(),
                    socket = path.display(),
                    error = e
                )
                .into_owned(),
            ))
        }
        _ => anyhow::anyhow!(
            "{}",
            t!("cli.connecting", socket = path.display(), error = e)
        ),
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    let resp: Response = serde_json::from_str(&reply).context(t!("cli.reading_answer"))?;
    if !resp.ok {
        let error = resp
            .error
            .unwrap_or_else(|| t!("cli.request_failed").into_owned());
        if error == DENIED {
            return Err(crate::exit::denied(state, &t!("cli.doing_ask_hub"), &path));
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

    #[test]
    fn drain_requests_on_the_wire() {
        let d = Request::Drain {
            to: Some("192.0.2.2".into()),
            wait_secs: 60,
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"cmd":"drain","to":"192.0.2.2","wait_secs":60}"#
        );
        let none: Request = serde_json::from_str(r#"{"cmd":"drain","wait_secs":5}"#).unwrap();
        assert!(matches!(
            none,
            Request::Drain {
                to: None,
                wait_secs: 5
            }
        ));
        assert_eq!(
            serde_json::to_string(&Request::Undrain).unwrap(),
            r#"{"cmd":"undrain"}"#
        );
    }
}
