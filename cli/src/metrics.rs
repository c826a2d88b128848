//! The Prometheus text endpoint (`serve --metrics ADDR`), rendered from the
//! same snapshot as `renkei status --json`.
//!
//! The HTTP side is a few lines by hand: one path, `GET /metrics`, bounded
//! reads, `Connection: close` — a web framework would be far more surface
//! than this needs.

use crate::control::{Asked, Reply, Request};
use crate::daemon::status::{FacilityState, FacilityStatus, HubStatus};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

type Requests = mpsc::Sender<Asked>;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A per-facility counter read from the status report.
type Field = fn(&FacilityStatus) -> u64;

/// Renders the status report in the Prometheus text format (0.0.4).
pub(crate) fn render(status: &HubStatus) -> String {
    let mut out = String::new();
    let facilities = &status.facilities;
    family(
        &mut out,
        "renkei_facility_up",
        "gauge",
        "1 while a Child SA of the facility carries traffic (0 when down, connecting, degraded or disabled).",
    );
    for f in facilities {
        let up = u8::from(f.state == FacilityState::Up);
        let _ = writeln!(out, "renkei_facility_up{{facility=\"{}\"}} {up}", f.name);
    }
    let bytes: [(&str, Field); 2] = [("in", |f| f.bytes_in), ("out", |f| f.bytes_out)];
    let packets: [(&str, Field); 2] = [("in", |f| f.packets_in), ("out", |f| f.packets_out)];
    for (metric, help, fields) in [
        (
            "renkei_facility_bytes_total",
            "Inner bytes through the tunnel.",
            bytes,
        ),
        (
            "renkei_facility_packets_total",
            "Packets through the tunnel.",
            packets,
        ),
    ] {
        family(&mut out, metric, "counter", help);
        for f in facilities {
            for (direction, field) in fields {
                let _ = writeln!(
                    out,
                    "{metric}{{facility=\"{}\",direction=\"{direction}\"}} {}",
                    f.name,
                    field(f)
                );
            }
        }
    }
    family(
        &mut out,
        "renkei_facility_drops_total",
        "counter",
        "Packets dropped, by reason.",
    );
    for f in facilities {
        for reason in esp::DropReason::ALL {
            let _ = writeln!(
                out,
                "renkei_facility_drops_total{{facility=\"{}\",reason=\"{}\"}} {}",
                f.name,
                reason.name(),
                f.drops.count(reason)
            );
        }
    }
    let counters: [(&str, &str, Field); 2] = [
        (
            "renkei_facility_handshakes_total",
            "IKE SAs established.",
            |f| f.handshakes,
        ),
        (
            "renkei_facility_auth_failures_total",
            "Failed authentications.",
            |f| f.auth_failures,
        ),
    ];
    for (metric, help, field) in counters {
        family(&mut out, metric, "counter", help);
        for f in facilities {
            let _ = writeln!(out, "{metric}{{facility=\"{}\"}} {}", f.name, field(f));
        }
    }
    family(
        &mut out,
        "renkei_facility_rekeys_total",
        "counter",
        "Rekeys, by kind of SA.",
    );
    for f in facilities {
        for (kind, count) in [("child", f.child_rekeys), ("ike", f.ike_rekeys)] {
            let _ = writeln!(
                out,
                "renkei_facility_rekeys_total{{facility=\"{}\",kind=\"{kind}\"}} {count}",
                f.name
            );
        }
    }
    family(
        &mut out,
        "renkei_unattributed_drops_total",
        "counter",
        "Packets dropped before a facility was known, by reason.",
    );
    for reason in esp::DropReason::ALL {
        let _ = writeln!(
            out,
            "renkei_unattributed_drops_total{{reason=\"{}\"}} {}",
            reason.name(),
            status.hub.unattributed_drops.count(reason)
        );
    }
    family(
        &mut out,
        "renkei_refused_total",
        "counter",
        "IKE attempts refused before a facility was known, by reason.",
    );
    for reason in crate::daemon::refusals::RefusalReason::ALL {
        let _ = writeln!(
            out,
            "renkei_refused_total{{reason=\"{}\"}} {}",
            reason.name(),
            status.refused.total(reason)
        );
    }
    family(&mut out, "renkei_ike_sas", "gauge", "IKE SAs.");
    let _ = writeln!(out, "renkei_ike_sas {}", status.hub.ike_sas);
    family(
        &mut out,
        "renkei_child_sas",
        "gauge",
        "Child SAs installed.",
    );
    let _ = writeln!(out, "renkei_child_sas {}", status.hub.child_sas);
    out
}

/// Serves `GET /metrics` on `listener` until the daemon stops.
pub(crate) async fn serve(listener: tokio::net::TcpListener, requests: Requests) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let (status, body) =
                if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                    let (tx, rx) = oneshot::channel();
                    let body = match requests
                        .send((Request::Status, "metrics".to_string(), tx))
                        .await
                    {
                        Ok(()) => match rx.await {
                            Ok(Ok(Reply::Status(status))) => Some(render(&status)),
                            _ => None,
                        },
                        Err(_) => None,
                    };
                    match body {
                        Some(b) => ("200 OK", b),
                        None => ("503 Service Unavailable", "shutting down\n".to_string()),
                    }
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_every_family() {
        let status: HubStatus = serde_json::from_value(json!({
            "hub": { "started": "2026-11-30T00:00:00Z", "tun": "renkei0", "listen": ["0.0.0.0"],
                     "ike_sas": 1, "half_open_ike_sas": 0, "child_sas": 1, "unattributed_drops": { "no_sa": 4 } },
            "facilities": [{ "name": "kyoto", "id": "kyoto.example", "state": "up", "since": null, "remote": null,
                             "ike_suite": null, "child_sas": [], "mtu": 1358, "path_mtu_limited": false,
                             "bytes_in": 10, "bytes_out": 20, "packets_in": 1, "packets_out": 2,
                             "drops": { "replay": 3 }, "handshakes": 1, "auth_failures": 0, "child_rekeys": 5, "ike_rekeys": 1,
                             "last_heard": null, "last_rekey": null, "last_error": null },
                           { "name": "osaka", "id": "osaka.example", "state": "degraded", "since": null, "remote": null,
                             "ike_suite": null, "child_sas": [], "mtu": 1358, "path_mtu_limited": false,
                             "bytes_in": 0, "bytes_out": 0, "packets_in": 0, "packets_out": 0,
                             "drops": {}, "handshakes": 1, "auth_failures": 0, "child_rekeys": 0, "ike_rekeys": 0,
                             "last_heard": null, "last_rekey": null, "last_error": "TS_UNACCEPTABLE (the facility refused the Child SA)" }],
            "refused": { "total": { "no_proposal_chosen": 3000, "unknown_identity": 2 }, "recent": [] }
        }))
        .unwrap();
        let text = render(&status);
        for line in [
            "renkei_facility_up{facility=\"kyoto\"} 1",
            "renkei_facility_bytes_total{facility=\"kyoto\",direction=\"out\"} 20",
            "renkei_facility_drops_total{facility=\"kyoto\",reason=\"replay\"} 3",
            "renkei_facility_drops_total{facility=\"kyoto\",reason=\"policy\"} 0",
            "renkei_facility_rekeys_total{facility=\"kyoto\",kind=\"child\"} 5",
            "renkei_unattributed_drops_total{reason=\"no_sa\"} 4",
            "renkei_ike_sas 1",
            "renkei_facility_up{facility=\"osaka\"} 0",
            "renkei_refused_total{reason=\"no_proposal_chosen\"} 3000",
            "renkei_refused_total{reason=\"unknown_identity\"} 2",
            "renkei_refused_total{reason=\"other\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        // Every sample belongs to a declared family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} undeclared"
            );
        }
    }
}
