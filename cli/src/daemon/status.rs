//! What `renkei status` shows: the live state the daemon keeps per
//! facility, and the one typed report built from it.
//!
//! ```text
//!  ike events ─▶ PeerStatus ─┐
//!  esp counters, MTUs ───────┼─▶ HubStatus ─▶ control socket ─▶ status [--json], sa list, compliance
//!  ike endpoint ─────────────┘             └─▶ metrics endpoint (in process)
//! ```
//!
//! [`HubStatus`] serializes to the JSON of `renkei status --json`; its
//! field names are that JSON's keys, which scripts and the interop tests
//! read.

use super::Hub;
use ike::wire::TrafficSelector;
use ike::IkeSaId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// What the hub knows about a facility right now.
#[derive(Default)]
pub(super) struct PeerStatus {
    pub(super) state: FacilityState,
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
    /// Whether its IKE SA found a NAT between it and the hub.
    pub(super) behind_nat: bool,
}

pub(super) struct ChildStatus {
    pub(super) spi_in: u32,
    pub(super) spi_out: u32,
    pub(super) suite: String,
    pub(super) local_ts: Vec<TrafficSelector>,
    pub(super) remote_ts: Vec<TrafficSelector>,
    /// When it was installed (RFC 3339).
    pub(super) established: String,
}

/// A facility's tunnel as `status` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FacilityState {
    /// No IKE SA (never connected, or gone).
    #[default]
    Down,
    /// The hub is initiating.
    Connecting,
    /// A Child SA carries traffic.
    Up,
    /// An IKE SA without a Child SA: it carries nothing.
    Degraded,
    /// Disabled by the operator.
    Disabled,
}

impl FacilityState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FacilityState::Down => "down",
            FacilityState::Connecting => "connecting",
            FacilityState::Up => "up",
            FacilityState::Degraded => "degraded",
            FacilityState::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for FacilityState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Dropped packets by reason ([`esp::DropReason::name`]); only reasons
/// with drops appear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Drops(BTreeMap<String, u64>);

impl Drops {
    fn from_counters(drops: &[(&'static str, u64)]) -> Drops {
        Drops(drops.iter().map(|(k, v)| ((*k).to_string(), *v)).collect())
    }

    /// Drops for one reason.
    pub(crate) fn count(&self, reason: esp::DropReason) -> u64 {
        self.0.get(reason.name()).copied().unwrap_or(0)
    }

    /// `reason=count` pairs, comma-separated, in name order.
    pub(crate) fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The running hub, everything `renkei status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HubStatus {
    pub(crate) hub: HubSummary,
    /// Every registered facility, by name.
    pub(crate) facilities: Vec<FacilityStatus>,
    /// Attempts refused before a facility was known.
    #[serde(default)]
    pub(crate) refused: super::refusals::RefusedReport,
    /// In a pair of hubs (`serve --node`): role, VRRP state, lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ha: Option<super::ha::HaStatus>,
}

impl HubStatus {
    pub(crate) fn facility(&self, name: &str) -> Option<&FacilityStatus> {
        self.facilities.iter().find(|f| f.name == name)
    }
}

/// The hub as a whole.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HubSummary {
    /// When the hub started (RFC 3339).
    pub(crate) started: String,
    /// The TUN device.
    pub(crate) tun: String,
    /// The addresses the hub listens on.
    pub(crate) listen: Vec<IpAddr>,
    pub(crate) ike_sas: usize,
    pub(crate) half_open_ike_sas: usize,
    /// Child SAs installed in the data plane.
    pub(crate) child_sas: usize,
    /// Drops before a facility was known (no SA for the SPI, garbage).
    pub(crate) unattributed_drops: Drops,
    /// `renkei drain` was asked and not cancelled: new IKE SAs are
    /// redirected or refused (the keepalived check script reads this).
    #[serde(default)]
    pub(crate) draining: bool,
    /// The drain is finished: every facility has its outcome (handed
    /// over, or still up after `--wait`). The hub address may move to
    /// the other hub now: the Deletes it sent from that address are out
    /// (moved earlier, a facility whose SAs were not yet deleted would
    /// keep them until its own liveness check fails).
    #[serde(default)]
    pub(crate) drained: bool,
    /// The drain's progress and each facility's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) drain: Option<super::drain::DrainReport>,
}

/// One facility.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FacilityStatus {
    pub(crate) name: String,
    /// Its IKE identity, in the written form.
    pub(crate) id: String,
    /// What operators call it (UTF-8) and its medical institution code.
    #[serde(default)]
    pub(crate) display_name: Option<String>,
    #[serde(default)]
    pub(crate) medical_code: Option<String>,
    pub(crate) state: FacilityState,
    /// Since when it is in that state (RFC 3339).
    pub(crate) since: Option<String>,
    /// Its current address and port.
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) ike_suite: Option<String>,
    pub(crate) child_sas: Vec<ChildSaStatus>,
    pub(crate) bytes_in: u64,
    pub(crate) packets_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) packets_out: u64,
    pub(crate) drops: Drops,
    /// Its tunnel MTU now.
    pub(crate) mtu: u32,
    /// Whether the path lowered the tunnel MTU below the configured one.
    pub(crate) path_mtu_limited: bool,
    pub(crate) auth_failures: u64,
    pub(crate) handshakes: u64,
    /// When the facility was last heard from (RFC 3339).
    pub(crate) last_heard: Option<String>,
    pub(crate) child_rekeys: u64,
    pub(crate) ike_rekeys: u64,
    pub(crate) last_rekey: Option<String>,
    pub(crate) last_error: Option<String>,
    /// Its IKE SA here announced REDIRECT_SUPPORTED (RFC 5685), so
    /// `renkei drain` can redirect it.
    #[serde(default)]
    pub(crate) redirect_supported: bool,
    /// Whether a NAT lies between it and the hub (from its IKE SA's
    /// NAT detection).
    #[serde(default)]
    pub(crate) behind_nat: bool,
    /// The hub's SPI of its IKE SA, 16 hex digits.
    #[serde(default)]
    pub(crate) ike_spi: Option<String>,
    /// Seconds until the hub rekeys its IKE SA.
    #[serde(default)]
    pub(crate) ike_rekey_in: Option<u64>,
    /// Its last events, oldest first: only in the answer about one
    /// facility (`status NAME`, `diagnose NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) events: Vec<super::evidence::SeenEvent>,
}

/// One Child SA of a facility.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ChildSaStatus {
    /// Inbound SPI, 8 hex digits.
    pub(crate) spi_in: String,
    /// Outbound SPI, 8 hex digits.
    pub(crate) spi_out: String,
    pub(crate) suite: String,
    /// Hub-side selectors, as `ike::ts::describe` writes them.
    pub(crate) local_ts: String,
    /// Facility-side selectors.
    pub(crate) remote_ts: String,
    /// When it was installed (RFC 3339).
    #[serde(default)]
    pub(crate) established: String,
    /// Seconds until the hub rekeys it (none while a rekey runs).
    #[serde(default)]
    pub(crate) rekey_in: Option<u64>,
    /// What the data plane counted on it: inner bytes and packets
    /// received (inbound SPI) and sent (outbound SPI).
    #[serde(default)]
    pub(crate) bytes_in: u64,
    #[serde(default)]
    pub(crate) packets_in: u64,
    #[serde(default)]
    pub(crate) bytes_out: u64,
    #[serde(default)]
    pub(crate) packets_out: u64,
}

impl From<&ChildStatus> for ChildSaStatus {
    fn from(c: &ChildStatus) -> ChildSaStatus {
        ChildSaStatus {
            spi_in: format!("{:08x}", c.spi_in),
            spi_out: format!("{:08x}", c.spi_out),
            suite: c.suite.clone(),
            local_ts: ike::ts::describe(&c.local_ts),
            remote_ts: ike::ts::describe(&c.remote_ts),
            established: c.established.clone(),
            ..ChildSaStatus::default()
        }
    }
}

impl Hub {
    /// Everything about one facility: its status with its last events,
    /// and the hub's recent refusals of strangers (a diagnosis matches
    /// them to the facility's address).
    pub(super) fn facility_report(&self, name: &str) -> Result<HubStatus, String> {
        let mut all = self.status();
        let Some(i) = all.facilities.iter().position(|f| f.name == name) else {
            return Err(format!("no facility named {name}"));
        };
        let mut f = all.facilities.swap_remove(i);
        f.events = self.evidence.events(name);
        all.facilities = vec![f];
        Ok(all)
    }

    /// The status report, now.
    pub(super) fn status(&self) -> HubStatus {
        // When each facility last answered, as wall-clock time.
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let ike_sas = self.endpoint.status();
        let ike_sa_count = ike_sas.len();
        let redirect_supported: std::collections::HashSet<String> = ike_sas
            .iter()
            .filter(|s| s.state == "established" && s.redirect_supported)
            .filter_map(|s| s.peer.clone())
            .collect();
        let secs_until = |at: Instant| at.saturating_duration_since(now).as_secs();
        let mut rekey_in: HashMap<IkeSaId, u64> = HashMap::new();
        let mut child_rekey_in: HashMap<u32, u64> = HashMap::new();
        for s in &ike_sas {
            if let Some(at) = s.rekey_at {
                rekey_in.insert(s.id, secs_until(at));
            }
            for ((spi_in, _), at) in s.children.iter().zip(&s.children_rekey_at) {
                if let Some(at) = at {
                    child_rekey_in.insert(*spi_in, secs_until(*at));
                }
            }
        }
        let last_heard: HashMap<String, String> = ike_sas
            .into_iter()
            .filter_map(|s| {
                let at = wall.checked_sub(now.saturating_duration_since(s.last_received?))?;
                let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
                Some((s.peer?, crate::registry::rfc3339(secs)))
            })
            .collect();
        let mut names: Vec<&String> = self.peers.keys().collect();
        names.sort();
        let facilities = names
            .into_iter()
            .map(|name| {
                let p = &self.peers[name];
                let st = self.status.get(name);
                let counters = self.table.counters(name).snapshot();
                let state = if !p.enabled {
                    FacilityState::Disabled
                } else {
                    st.map_or(FacilityState::Down, |s| match s.state {
                        // "up" means a Child SA carries traffic: an IKE SA
                        // alone carries none.
                        FacilityState::Up if s.children.is_empty() => FacilityState::Degraded,
                        state => state,
                    })
                };
                let configured_mtu = self.configured_mtu(name);
                let tunnel_mtu = self.table.mtu(name);
                FacilityStatus {
                    name: name.clone(),
                    id: p.id.to_string(),
                    display_name: p.label.display_name.clone(),
                    medical_code: p.label.medical_code.clone(),
                    state,
                    since: st.map(|s| s.since.clone()).filter(|s| !s.is_empty()),
                    remote: st.and_then(|s| s.remote),
                    ike_suite: st.and_then(|s| s.ike_suite.clone()),
                    child_sas: st
                        .map(|s| {
                            s.children
                                .iter()
                                .map(|c| {
                                    let counted = self.table.sa_counters(c.spi_in, c.spi_out);
                                    ChildSaStatus {
                                        rekey_in: child_rekey_in.get(&c.spi_in).copied(),
                                        bytes_in: counted.bytes_in,
                                        packets_in: counted.packets_in,
                                        bytes_out: counted.bytes_out,
                                        packets_out: counted.packets_out,
                                        ..ChildSaStatus::from(c)
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    bytes_in: counters.bytes_in,
                    packets_in: counters.packets_in,
                    bytes_out: counters.bytes_out,
                    packets_out: counters.packets_out,
                    drops: Drops::from_counters(&counters.drops),
                    mtu: tunnel_mtu.get().min(configured_mtu),
                    path_mtu_limited: tunnel_mtu.learned().is_some_and(|l| l < configured_mtu),
                    auth_failures: st.map_or(0, |s| s.auth_failures),
                    handshakes: st.map_or(0, |s| s.handshakes),
                    last_heard: last_heard.get(name.as_str()).cloned(),
                    child_rekeys: st.map_or(0, |s| s.child_rekeys),
                    ike_rekeys: st.map_or(0, |s| s.ike_rekeys),
                    last_rekey: st.and_then(|s| s.last_rekey.clone()),
                    last_error: st.and_then(|s| s.last_error.clone()),
                    redirect_supported: redirect_supported.contains(name.as_str()),
                    behind_nat: st.is_some_and(|s| s.behind_nat && s.ike_sa.is_some()),
                    ike_spi: st.and_then(|s| s.ike_sa).map(|id| id.to_string()),
                    ike_rekey_in: st
                        .and_then(|s| s.ike_sa)
                        .and_then(|id| rekey_in.get(&id).copied()),
                    events: Vec::new(),
                }
            })
            .collect();
        let global = self.table.global.snapshot();
        HubStatus {
            hub: HubSummary {
                started: self.started.clone(),
                tun: self.tun.name().to_string(),
                listen: self.ike_sockets.iter().map(|(a, _)| a.ip()).collect(),
                ike_sas: ike_sa_count,
                half_open_ike_sas: self.endpoint.half_open_count(),
                child_sas: self.table.snapshot().len(),
                unattributed_drops: Drops::from_counters(&global.drops),
                draining: self.drain.is_some(),
                drained: self
                    .drain
                    .as_ref()
                    .is_some_and(super::drain::Drain::finished),
                drain: self.drain.as_ref().map(super::drain::Drain::report),
            },
            facilities,
            refused: self.refusals.report(),
            ha: self.ha.as_ref().map(super::ha::Ha::status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON keys scripts and the interop tests read stay what they were.
    #[test]
    fn the_json_keeps_its_keys() {
        let mut f = FacilityStatus {
            name: "kyoto".into(),
            state: FacilityState::Degraded,
            remote: Some("[2001:db8::2]:4500".parse().unwrap()),
            child_sas: vec![ChildSaStatus::default()],
            ..FacilityStatus::default()
        };
        f.drops.0.insert("replay".into(), 3);
        let v = serde_json::to_value(HubStatus {
            hub: HubSummary {
                listen: vec!["0.0.0.0".parse().unwrap()],
                ..HubSummary::default()
            },
            facilities: vec![f],
            refused: super::super::refusals::RefusedReport::default(),
            ha: None,
        })
        .unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&v), ["facilities", "hub", "refused"]);
        assert_eq!(keys(&v["refused"]), ["recent", "total"]);
        assert_eq!(
            keys(&v["hub"]),
            [
                "child_sas",
                "drained",
                "draining",
                "half_open_ike_sas",
                "ike_sas",
                "listen",
                "started",
                "tun",
                "unattributed_drops"
            ]
        );
        let f = &v["facilities"][0];
        assert_eq!(
            keys(f),
            [
                "auth_failures",
                "behind_nat",
                "bytes_in",
                "bytes_out",
                "child_rekeys",
                "child_sas",
                "display_name",
                "drops",
                "handshakes",
                "id",
                "ike_rekey_in",
                "ike_rekeys",
                "ike_spi",
                "ike_suite",
                "last_error",
                "last_heard",
                "last_rekey",
                "medical_code",
                "mtu",
                "name",
                "packets_in",
                "packets_out",
                "path_mtu_limited",
                "redirect_supported",
                "remote",
                "since",
                "state"
            ]
        );
        assert_eq!(
            keys(&f["child_sas"][0]),
            [
                "bytes_in",
                "bytes_out",
                "established",
                "local_ts",
                "packets_in",
                "packets_out",
                "rekey_in",
                "remote_ts",
                "spi_in",
                "spi_out",
                "suite"
            ]
        );
        assert_eq!(f["state"], "degraded");
        assert_eq!(f["remote"], "[2001:db8::2]:4500");
        assert_eq!(f["drops"]["replay"], 3);
        assert_eq!(v["hub"]["listen"][0], "0.0.0.0");
        assert!(f["since"].is_null(), "absent values are null, as before");
        let back: HubStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back.facilities[0].drops.count(esp::DropReason::Replay), 3);
    }
}
