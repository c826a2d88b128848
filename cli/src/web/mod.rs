//! The hub's HTTP server (`serve --http ADDR`, old name `--metrics`): the
//! read-only status page at `/`, its live part at `/fragment`, the same
//! data as JSON at `/api/status`, and the Prometheus text at `/metrics`.
//!
//! ```text
//!  TCP accept ─ connection permit ─┬─ loopback: plain HTTP
//!                                  └─ otherwise: TLS, client certificate from the hub's CA,
//!                                     and its serial an unrevoked operator certificate in the registry
//!        ─▶ hyper (header timeout) ─▶ axum router (request timeout, security headers)
//!        ─▶ Request::Status over the in-process control channel + daemon::history
//! ```
//!
//! Pages are rendered by minijinja with HTML autoescaping, so every
//! string from the registry or from facilities (identities, errors an
//! attempt caused, event details) is escaped in one place; the page's
//! script only fetches the server-rendered fragment and swaps it in.
//! Everything is bounded: [`MAX_CONNECTIONS`] connections (more are
//! closed at once), a TLS handshake and request headers within
//! [`HANDSHAKE_TIMEOUT`], a response within [`REQUEST_TIMEOUT`], a
//! connection for at most [`CONNECTION_LIFETIME`]; no state is kept per
//! client.

mod page;
mod tls;

use crate::control::{Asked, Reply, Request};
use crate::daemon::history;
use crate::daemon::status::HubStatus;
use crate::state::StateDir;
use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

pub(crate) use tls::issue_operator;

/// Connections served at once; more are closed as they arrive.
const MAX_CONNECTIONS: usize = 64;
/// Requests answered at once (across connections).
const MAX_REQUESTS: usize = 16;
/// For the TLS handshake and for a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// For a response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a connection stays open (a browser then opens another).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// The Content-Security-Policy: scripts and styles only from the hub's
/// own files (no inline script), requests only back to the hub.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A bound listener, with TLS when it is not on loopback.
#[derive(Debug)]
pub(crate) struct Server {
    listener: tokio::net::TcpListener,
    tls: Option<tls::Tls>,
}

#[derive(Clone)]
struct App {
    requests: mpsc::Sender<Asked>,
    history: history::Shared,
    state: StateDir,
    limit: Arc<Semaphore>,
}

impl Server {
    /// Binds `addr`. Off loopback, HTTPS with operator certificates is
    /// set up first, and its absence refuses the start.
    pub(crate) async fn bind(addr: SocketAddr, state: &StateDir) -> Result<Server> {
        let tls = if addr.ip().is_loopback() {
            None
        } else {
            Some(tls::Tls::load(addr, state)?)
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("http: binding {addr}"))?;
        Ok(Server { listener, tls })
    }

    /// Where the page is, for the log.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.listener.local_addr() {
            Ok(a) => format!("{scheme}://{a}/"),
            Err(_) => format!("{scheme}://?/"),
        }
    }

    /// Serves until the daemon stops.
    pub(crate) async fn serve(
        self,
        requests: mpsc::Sender<Asked>,
        history: history::Shared,
        state: StateDir,
    ) {
        let app = App {
            requests,
            history,
            state,
            limit: Arc::new(Semaphore::new(MAX_REQUESTS)),
        };
        let router = router(app.clone());
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let tls = self.tls.map(Arc::new);
        loop {
            let Ok((stream, peer)) = self.listener.accept().await else {
                // EMFILE and the like: let the table drain a moment.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "http: too many connections; closed");
                continue;
            };
            let (router, tls, state) = (router.clone(), tls.clone(), app.state.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let service = TowerToHyperService::new(router);
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(HANDSHAKE_TIMEOUT);
                let served = match tls {
                    None => {
                        let conn = http.serve_connection(TokioIo::new(stream), service);
                        tokio::time::timeout(CONNECTION_LIFETIME, conn).await
                    }
                    Some(tls) => {
                        let Some((stream, allowed)) = tls.accept(stream, peer, &state).await else {
                            return;
                        };
                        if !allowed {
                            let conn = http.serve_connection(
                                TokioIo::new(stream),
                                TowerToHyperService::new(forbidden()),
                            );
                            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn).await;
                            return;
                        }
                        let conn = http.serve_connection(TokioIo::new(stream), service);
                        tokio::time::timeout(CONNECTION_LIFETIME, conn).await
                    }
                };
                if let Ok(Err(e)) = served {
                    tracing::debug!(%peer, "http: {e}");
                }
            });
        }
    }
}

/// What a certificate of the hub's CA that is not an operator's gets.
fn forbidden() -> Router {
    Router::new().fallback(|| async {
        (
            StatusCode::FORBIDDEN,
            [(header::CONNECTION, "close")],
            "this certificate is not an operator certificate of the hub (renkei cert issue-operator)\n",
        )
    })
}

fn router(app: App) -> Router {
    use tower_http::set_header::SetResponseHeaderLayer;
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    let mut r = Router::new()
        .route("/", get(index))
        .route("/fragment", get(fragment))
        .route("/api/status", get(api_status))
        .route("/metrics", get(metrics))
        .route("/static/status.js", get(script))
        .route("/static/status.css", get(style))
        .with_state(app)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024));
    for (name, value) in headers {
        r = r.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    r
}

/// `?lang=ja|en`.
#[derive(Debug, serde::Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

/// The language: `?lang=` if it names one, else the first of the
/// browser's Accept-Language (by q) that renkei speaks, else English.
fn language(query: &LangQuery, headers: &HeaderMap) -> &'static str {
    if let Some(l) = query.lang.as_deref() {
        if let Some(known) = crate::i18n::LANGUAGES.iter().find(|k| **k == l) {
            return known;
        }
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut tags: Vec<(f32, &str)> = accept
        .split(',')
        .take(32)
        .filter_map(|part| {
            let mut it = part.split(';');
            let tag = it.next()?.trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            Some((q, tag))
        })
        .filter(|(q, _)| *q > 0.0)
        .collect();
    // Stable: equal weights keep the browser's order.
    tags.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, tag) in tags {
        let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
        if let Some(known) = crate::i18n::LANGUAGES.iter().find(|k| **k == primary) {
            return known;
        }
    }
    "en"
}

/// Asks the daemon for its status report, one request at a time per
/// [`MAX_REQUESTS`].
async fn status(app: &App) -> Result<HubStatus, Response> {
    let unavailable = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the hub is shutting down\n",
        )
            .into_response()
    };
    let Ok(_permit) = app.limit.acquire().await else {
        return Err(unavailable());
    };
    let (tx, rx) = oneshot::channel();
    if app
        .requests
        .send((Request::Status, "web".to_string(), tx))
        .await
        .is_err()
    {
        return Err(unavailable());
    }
    match rx.await {
        Ok(Ok(Reply::Status(s))) => Ok(*s),
        _ => Err(unavailable()),
    }
}

fn html(body: Result<String>) -> Response {
    match body {
        Ok(b) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], b).into_response(),
        Err(e) => {
            tracing::warn!("status page: {e:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render\n",
            )
                .into_response()
        }
    }
}

async fn index(State(app): State<App>, Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let lang = language(&q, &headers);
    match status(&app).await {
        Ok(s) => html(page::render_page(&page::View::new(&s, &app.history, lang))),
        Err(r) => r,
    }
}

async fn fragment(
    State(app): State<App>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = language(&q, &headers);
    match status(&app).await {
        Ok(s) => html(page::render_fragment(&page::View::new(
            &s,
            &app.history,
            lang,
        ))),
        Err(r) => r,
    }
}

/// The status report as `renkei status --json` has it, with each
/// facility's traffic samples and the recent events.
async fn api_status(State(app): State<App>) -> Response {
    match status(&app).await {
        Ok(s) => {
            let (traffic, events) = {
                let h = app.history.lock().unwrap_or_else(|e| e.into_inner());
                let traffic: serde_json::Map<String, serde_json::Value> = s
                    .facilities
                    .iter()
                    .map(|f| {
                        let samples = h.traffic(&f.name).0;
                        (f.name.clone(), serde_json::json!(samples))
                    })
                    .collect();
                (traffic, h.events())
            };
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            v["traffic"] = serde_json::Value::Object(traffic);
            v["events"] = serde_json::json!(events);
            axum::Json(v).into_response()
        }
        Err(r) => r,
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let s = match status(&app).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match crate::metrics::scrape(s, app.state.clone()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!("metrics: {e:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response()
        }
    }
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("status.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("status.css"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(query: Option<&str>, accept: Option<&str>) -> &'static str {
        let mut h = HeaderMap::new();
        if let Some(a) = accept {
            h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(a).unwrap());
        }
        language(
            &LangQuery {
                lang: query.map(str::to_string),
            },
            &h,
        )
    }

    #[test]
    fn language_from_query_then_accept_language() {
        assert_eq!(lang(None, None), "en");
        assert_eq!(lang(None, Some("ja,en-US;q=0.9,en;q=0.8")), "ja");
        assert_eq!(lang(None, Some("ja-JP")), "ja");
        assert_eq!(lang(None, Some("fr, en;q=0.5, ja;q=0.7")), "ja");
        assert_eq!(lang(None, Some("fr, de")), "en");
        assert_eq!(lang(None, Some("ja;q=0")), "en");
        assert_eq!(lang(Some("en"), Some("ja")), "en");
        assert_eq!(lang(Some("ja"), None), "ja");
        assert_eq!(
            lang(Some("<x>"), Some("ja")),
            "ja",
            "unknown ?lang= is ignored"
        );
    }
}
