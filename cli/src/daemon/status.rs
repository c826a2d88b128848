//! What `renkei status` shows: the live state the daemon keeps per
//! facility, and the report built from it.

use super::Hub;
use ike::wire::TrafficSelector;
use ike::IkeSaId;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// What the hub knows about a facility right now.
#[derive(Default)]
pub(super) struct PeerStatus {
    pub(super) state: &'static str,
    pub(super) since: String,
    pub(super) remote: Option<SocketAddr>,
    pub(super) ike_suite: Option<String>,
    pub(super) ike_sa: Option<IkeSaId>,
    pub(super) children: Vec<ChildStatus>,
    pub(super) last_error: Option<String>,
    pub(super) auth_failures: u64,
    pub(super) child_rekeys: u64,
    pub(super) ike_rekeys: u64,
    pub(super) last_rekey: Option<String>,
    pub(super) handshakes: u64,
}

pub(super) struct ChildStatus {
    pub(super) spi_in: u32,
    pub(super) spi_out: u32,
    pub(super) suite: String,
    pub(super) local_ts: Vec<TrafficSelector>,
    pub(super) remote_ts: Vec<TrafficSelector>,
}

impl Hub {
    pub(super) fn status_json(&self) -> Value {
        // When each facility last answered, as wall-clock time.
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let last_heard: HashMap<String, String> = self
            .endpoint
            .status()
            .into_iter()
            .filter_map(|s| {
                let at = wall.checked_sub(now.saturating_duration_since(s.last_received?))?;
                let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
                Some((s.peer?, crate::registry::rfc3339(secs)))
            })
            .collect();
        let mut facilities = Vec::new();
        let mut names: Vec<&String> = self.peers.keys().collect();
        names.sort();
        for name in names {
            let p = &self.peers[name];
            let st = self.status.get(name);
            let counters = self.table.counters(name).snapshot();
            let state = if !p.enabled {
                "disabled"
            } else {
                st.map_or("down", |s| match s.state {
                    "" => "down",
                    // "up" means a Child SA carries traffic: an IKE SA
                    // alone carries none.
                    "up" if s.children.is_empty() => "degraded",
                    state => state,
                })
            };
            facilities.push(json!({
                "name": name,
                "id": p.id.to_string(),
                "state": state,
                "since": st.map(|s| s.since.clone()).filter(|s| !s.is_empty()),
                "remote": st.and_then(|s| s.remote).map(|a| a.to_string()),
                "ike_suite": st.and_then(|s| s.ike_suite.clone()),
                "child_sas": st.map(|s| s.children.iter().map(|c| json!({
                    "spi_in": format!("{:08x}", c.spi_in),
                    "spi_out": format!("{:08x}", c.spi_out),
                    "suite": c.suite,
                    "local_ts": ike::ts::describe(&c.local_ts),
                    "remote_ts": ike::ts::describe(&c.remote_ts),
                })).collect::<Vec<_>>()).unwrap_or_default(),
                "bytes_in": counters.bytes_in,
                "packets_in": counters.packets_in,
                "bytes_out": counters.bytes_out,
                "packets_out": counters.packets_out,
                "drops": counters.drops.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "mtu": self.table.mtu(name).get().min(self.configured_mtu(name)),
                "path_mtu_limited": self.table.mtu(name).learned().is_some_and(|l| l < self.configured_mtu(name)),
                "auth_failures": st.map_or(0, |s| s.auth_failures),
                "handshakes": st.map_or(0, |s| s.handshakes),
                "last_heard": last_heard.get(name.as_str()).cloned(),
                "child_rekeys": st.map_or(0, |s| s.child_rekeys),
                "ike_rekeys": st.map_or(0, |s| s.ike_rekeys),
                "last_rekey": st.and_then(|s| s.last_rekey.clone()),
                "last_error": st.and_then(|s| s.last_error.clone()),
            }));
        }
        let global = self.table.global.snapshot();
        json!({
            "hub": {
                "started": self.started,
                "tun": self.tun.name(),
                "listen": self.ike_sockets.iter().map(|(a, _)| a.ip().to_string()).collect::<Vec<_>>(),
                "ike_sas": self.endpoint.status().len(),
                "half_open_ike_sas": self.endpoint.half_open_count(),
                "child_sas": self.table.snapshot().len(),
                "unattributed_drops": global.drops.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            },
            "facilities": facilities,
        })
    }
}
