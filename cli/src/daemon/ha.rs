//! Active/standby (`serve --node NAME`): which of two hubs answers IKE and
//! holds Child SAs.
//!
//! ```text
//!  keepalived ── notify master|backup|fault ──▶ control socket ──▶ Ha::vrrp
//!  registry ◀── lease: acquire / renew every second / release ───▶ Ha::held
//!  active  ⇔  VRRP master  ∧  lease held
//! ```
//!
//! A node starts standby: it drops IKE datagrams, initiates nothing and
//! holds no Child SA. It becomes active when keepalived has made it VRRP
//! master and it took the registry's lease; the active hub renews the
//! lease every second. It steps down — closes every IKE SA, which
//! removes its Child SAs and routes — when keepalived makes it backup or
//! faulty, or when a renewal finds the lease taken by another node.
//!
//! An unreachable registry alone changes nothing: the active hub keeps its
//! tunnels, since no other node can take the lease either, and renews
//! once the registry answers again (ARCHITECTURE.md "Two hubs" has the
//! partition cases). Registry work runs on the blocking pool, one
//! operation at a time, so a slow registry never stalls the event loop.

use super::Hub;
use crate::registry::{Lease, Registry};
use crate::state::StateDir;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How long a lease runs without renewal: after a SIGKILL the other node
/// waits at most this long for it (keepalived's own failover takes about
/// as long).
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(3);

/// How long a node told MASTER may lack the virtual address before the hub
/// takes it as BACKUP (`Hub::vrrp_from_address`).
const NOTIFY_GRACE: Duration = Duration::from_secs(2);

/// What keepalived last told this node (`renkei ha notify`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Vrrp {
    /// Nothing since the hub started. keepalived was in FAULT while the
    /// hub was down (its check failed) and tells it when it leaves FAULT;
    /// a hub restarted faster than the check noticed finds the virtual
    /// address on its host instead ([`Hub::ha_tick`]).
    #[default]
    Unknown,
    Master,
    Backup,
    Fault,
}

impl Vrrp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Vrrp::Unknown => "unknown",
            Vrrp::Master => "master",
            Vrrp::Backup => "backup",
            Vrrp::Fault => "fault",
        }
    }
}

/// This hub's part in the pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// Answers IKE, initiates, holds Child SAs.
    Active,
    /// Does none of that.
    #[default]
    Standby,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// What `renkei status` shows of the pair (`ha` in its JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HaStatus {
    /// This hub's node name (`serve --node`).
    pub(crate) node: String,
    pub(crate) role: Role,
    /// Since when it has that role (RFC 3339).
    pub(crate) since: String,
    pub(crate) vrrp: Vrrp,
    /// The node holding the lease, as the registry last said.
    pub(crate) lease_holder: Option<String>,
    pub(crate) lease_epoch: i64,
    /// Until when (RFC 3339).
    pub(crate) lease_expires: Option<String>,
    /// When the registry last answered (RFC 3339).
    pub(crate) registry_checked: Option<String>,
    /// Why the registry did not answer the last time, if it did not.
    pub(crate) registry_error: Option<String>,
}

/// A lease operation for the blocking pool.
#[derive(Debug, Clone, Copy)]
enum Op {
    Acquire,
    Renew(i64),
    Release(i64),
    Read,
}

/// A finished lease operation.
pub(super) struct LeaseDone {
    op: Op,
    result: Result<Lease, String>,
}

/// The node's HA state, kept by the hub.
pub(super) struct Ha {
    node: String,
    vrrp: Vrrp,
    role: Role,
    since: String,
    /// The epoch of the lease this node holds.
    held: Option<i64>,
    lease: Option<Lease>,
    checked: Option<String>,
    error: Option<String>,
    /// A lease operation is under way.
    busy: bool,
    done: mpsc::Sender<LeaseDone>,
    /// Since when the told VRRP state and the virtual address disagree.
    disagree_since: Option<Instant>,
}

impl Ha {
    pub(super) fn new(node: String, done: mpsc::Sender<LeaseDone>) -> Ha {
        Ha {
            node,
            vrrp: Vrrp::Unknown,
            role: Role::Standby,
            since: crate::registry::now_rfc3339(),
            held: None,
            lease: None,
            checked: None,
            error: None,
            busy: false,
            done,
            disagree_since: None,
        }
    }

    pub(super) fn is_active(&self) -> bool {
        self.role == Role::Active
    }

    pub(super) fn node(&self) -> &str {
        &self.node
    }

    pub(super) fn status(&self) -> HaStatus {
        let lease = self.lease.clone().unwrap_or_default();
        HaStatus {
            node: self.node.clone(),
            role: self.role,
            since: self.since.clone(),
            vrrp: self.vrrp,
            lease_holder: lease.holder.clone(),
            lease_epoch: lease.epoch,
            lease_expires: (lease.expires_ms > 0)
                .then(|| crate::registry::rfc3339((lease.expires_ms / 1000) as u64)),
            registry_checked: self.checked.clone(),
            registry_error: self.error.clone(),
        }
    }

    /// What to ask the registry next.
    fn next_op(&self) -> Op {
        match (self.vrrp == Vrrp::Master, self.held) {
            (true, Some(e)) => Op::Renew(e),
            (true, None) => Op::Acquire,
            (false, Some(e)) => Op::Release(e),
            (false, None) => Op::Read,
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn run_op(state: &StateDir, node: &str, op: Op) -> anyhow::Result<Lease> {
    let reg = Registry::open(state)?;
    let ttl = LEASE_TTL.as_millis() as i64;
    match op {
        Op::Acquire => reg.lease_acquire(node, unix_ms(), ttl),
        Op::Renew(epoch) => reg.lease_renew(node, epoch, unix_ms(), ttl),
        Op::Release(epoch) => reg.lease_release(node, epoch),
        Op::Read => reg.lease(),
    }
}

impl Hub {
    /// Whether this hub answers IKE and holds Child SAs: always for a
    /// single hub, only when active in a pair.
    pub(super) fn is_active(&self) -> bool {
        self.ha.as_ref().is_none_or(Ha::is_active)
    }

    /// Starts the next lease operation unless one is under way: every
    /// second (the hub's tick), and at once when
    /// keepalived tells the node something.
    pub(super) fn ha_tick(&mut self) {
        let state = self.state.clone();
        if self.ha.as_ref().is_some_and(|h| h.vrrp == Vrrp::Unknown) && self.holds_listen_address()
        {
            // keepalived adds the virtual address only in MASTER: it made
            // this node master before the hub (re)started, and will not
            // say so again until something changes.
            info!("the virtual address is on this node: keepalived made it master before the hub started");
            let _ = self.ha_notify(Instant::now(), Vrrp::Master, "renkei");
            return;
        }
        if let Some(vrrp) = self.vrrp_from_address() {
            let _ = self.ha_notify(Instant::now(), vrrp, "renkei");
            return;
        }
        let Some(ha) = self.ha.as_mut() else {
            return;
        };
        if ha.busy {
            return;
        }
        ha.busy = true;
        let op = ha.next_op();
        let (node, done) = (ha.node.clone(), ha.done.clone());
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || run_op(&state, &node, op))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| format!("{e:#}")));
            let _ = done.send(LeaseDone { op, result }).await;
        });
    }

    /// At a clean stop: gives the lease back (once, briefly blocking; a
    /// registry that does not answer lets it expire instead).
    pub(super) fn ha_release_at_exit(&mut self) {
        let Some(ha) = self.ha.as_mut() else {
            return;
        };
        let Some(epoch) = ha.held.take() else {
            return;
        };
        match Registry::open(&self.state).and_then(|r| r.lease_release(&ha.node, epoch)) {
            Ok(_) => info!(node = %ha.node, epoch, "lease released"),
            Err(e) => {
                warn!(node = %ha.node, "could not release the lease (it expires by itself): {e:#}")
            }
        }
    }

    /// keepalived runs each notify hook as a process of its own, so two
    /// changes in quick succession can reach the hub in the wrong order:
    /// when both nodes start together, both go MASTER and one goes back to
    /// BACKUP within milliseconds; if its "backup" arrives before its
    /// "master", the hub believes itself master and holds the lease while
    /// the other node has the virtual address, and no hub answers the
    /// facilities (seen in `two_hubs` under load). keepalived removes the
    /// virtual address before its BACKUP hook runs, so a node told MASTER
    /// that has not held the address for [`NOTIFY_GRACE`] is in fact
    /// BACKUP. (The reverse, a "backup" overtaking a later "master", is
    /// not corrected: a hub listening on an address every node has, as
    /// in tests on loopback, could not tell; keepalived's next change, or
    /// a restart of keepalived, sets it right.)
    fn vrrp_from_address(&mut self) -> Option<Vrrp> {
        if self.ha.as_ref()?.vrrp != Vrrp::Master {
            self.ha.as_mut()?.disagree_since = None;
            return None;
        }
        // A hub listening on every address has no virtual address to read.
        let specific = self
            .ike_sockets
            .iter()
            .any(|(a, _)| !a.ip().is_unspecified());
        let holds = self.holds_listen_address();
        let ha = self.ha.as_mut()?;
        if !specific || holds {
            ha.disagree_since = None;
            return None;
        }
        let since = *ha.disagree_since.get_or_insert_with(Instant::now);
        if since.elapsed() < NOTIFY_GRACE {
            return None;
        }
        ha.disagree_since = None;
        warn!(
            node = %ha.node,
            "keepalived said MASTER but this node has not held the virtual address for \
             {} s (its notifications can arrive out of order): taking this node as BACKUP",
            NOTIFY_GRACE.as_secs()
        );
        Some(Vrrp::Backup)
    }

    /// Whether an address the hub listens on (in a pair: the virtual
    /// address) is an address of this host now.
    fn holds_listen_address(&self) -> bool {
        let listen: Vec<std::net::IpAddr> = self
            .ike_sockets
            .iter()
            .map(|(a, _)| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        !listen.is_empty()
            && esp::sys::local_addresses()
                .unwrap_or_default()
                .iter()
                .any(|a| listen.contains(a))
    }

    /// A lease operation finished: become active, stay, or step down.
    pub(super) fn ha_lease_done(&mut self, now: Instant, d: LeaseDone) {
        let Some(ha) = self.ha.as_mut() else {
            return;
        };
        ha.busy = false;
        let lease = match d.result {
            Ok(lease) => lease,
            Err(e) => {
                // The registry is away: nothing changes (module docs).
                if ha.error.is_none() {
                    warn!(node = %ha.node, role = ha.role.as_str(), "the registry does not answer; keeping the current role: {e}");
                }
                ha.error = Some(e);
                return;
            }
        };
        if ha.error.take().is_some() {
            info!(node = %ha.node, "the registry answers again");
        }
        ha.checked = Some(crate::registry::now_rfc3339());
        ha.lease = Some(lease.clone());
        let node = ha.node.clone();
        match d.op {
            Op::Acquire if lease.holder.as_deref() == Some(&node) => {
                ha.held = Some(lease.epoch);
                if ha.vrrp == Vrrp::Master {
                    self.become_active(now, lease.epoch);
                } else {
                    // keepalived changed its mind meanwhile: give it back.
                    self.ha_tick();
                }
            }
            Op::Renew(epoch) if !lease.held_by(&node, epoch) => {
                ha.held = None;
                let by = lease.holder.as_deref().unwrap_or("nobody");
                let reason = format!("the lease was taken by {by} (epoch {})", lease.epoch);
                self.step_down(now, &reason);
            }
            Op::Release(epoch) => {
                if !lease.held_by(&node, epoch) {
                    ha.held = None;
                }
            }
            Op::Acquire | Op::Renew(_) | Op::Read => {}
        }
        // keepalived told the node something while this operation ran:
        // the operation it calls for now starts at once.
        if let Some(ha) = self.ha.as_ref() {
            if std::mem::discriminant(&ha.next_op()) != std::mem::discriminant(&d.op) {
                self.ha_tick();
            }
        }
    }

    /// `renkei ha notify STATE` from keepalived's notify hook.
    pub(super) fn ha_notify(
        &mut self,
        now: Instant,
        vrrp: Vrrp,
        who: &str,
    ) -> Result<HaStatus, String> {
        let Some(ha) = self.ha.as_mut() else {
            return Err(rust_i18n::t!("ha.alone_notify").into_owned());
        };
        let before = ha.vrrp;
        ha.vrrp = vrrp;
        let node = ha.node.clone();
        if before != vrrp {
            info!(%node, from = before.as_str(), to = vrrp.as_str(), "keepalived changed this node's VRRP state");
            self.audit.record(
                who,
                "ha.vrrp",
                json!({ "node": node, "from": before.as_str(), "to": vrrp.as_str() }),
            );
        }
        if vrrp != Vrrp::Master && self.is_active() {
            self.step_down(now, &format!("keepalived made this node {}", vrrp.as_str()));
        }
        // Take or release the lease now rather than at the next tick.
        self.ha_tick();
        Ok(self.ha.as_ref().map(Ha::status).unwrap_or_default())
    }

    fn become_active(&mut self, now: Instant, epoch: i64) {
        let Some(ha) = self.ha.as_mut() else {
            return;
        };
        if ha.role == Role::Active {
            return;
        }
        ha.role = Role::Active;
        ha.since = crate::registry::now_rfc3339();
        let node = ha.node.clone();
        info!(%node, epoch, "this node is now the active hub");
        self.audit.record(
            "renkei",
            "ha.active",
            json!({ "node": node, "epoch": epoch }),
        );
        self.on_become_active(now);
    }

    /// What a node does the moment it becomes the active hub.
    ///
    /// The credentials are read again, the facilities the registry says
    /// were up (written by whichever node was active) are initiated to at
    /// their last known address and port, paced and with INITIAL_CONTACT
    /// (`daemon::takeover`), and the facilities the hub keeps up
    /// (`--start`) are started, as a single hub does at start. The one
    /// registry read here is short and happens once per role change.
    pub(super) fn on_become_active(&mut self, now: Instant) {
        // The other node may have renewed the hub's certificate meanwhile.
        if let Err(e) = self.reload_credentials() {
            warn!("becoming active: keeping the credentials loaded at start: {e:#}");
        }
        match crate::registry::Registry::open(&self.state).and_then(|r| r.last_known()) {
            Ok(rows) => self.reinitiate(now, rows),
            Err(e) => warn!(
                "becoming active: the facilities' last known addresses cannot be read ({e:#}); they reconnect by themselves"
            ),
        }
        for p in self.peers.values() {
            if p.enabled && p.start {
                self.reconnect.insert(
                    p.name.clone(),
                    super::reconnect::Reconnect {
                        at: now,
                        backoff: super::reconnect::RECONNECT_MIN,
                    },
                );
            }
        }
    }

    /// Stops being the active hub: nothing is initiated any more and
    /// every IKE SA is closed, which removes the Child SAs from the data
    /// plane and their routes from the kernel (the events do, in the
    /// next flush). The Deletes go out from this node's own address, if
    /// at all; a facility that still hears them reconnects to the virtual
    /// address, now on the other node.
    fn step_down(&mut self, now: Instant, reason: &str) {
        let Some(ha) = self.ha.as_mut() else {
            return;
        };
        if ha.role == Role::Standby {
            return;
        }
        ha.role = Role::Standby;
        ha.since = crate::registry::now_rfc3339();
        let node = ha.node.clone();
        warn!(%node, "this node is now standby: {reason}");
        self.audit.record(
            "renkei",
            "ha.standby",
            json!({ "node": node, "reason": reason }),
        );
        self.reconnect.clear();
        self.child_retry.clear();
        self.endpoint.close_all(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_lease_operation_follows_vrrp_and_the_lease_held() {
        let (tx, _rx) = mpsc::channel(1);
        let mut ha = Ha::new("a".into(), tx);
        assert!(matches!(ha.next_op(), Op::Read));
        ha.vrrp = Vrrp::Master;
        assert!(matches!(ha.next_op(), Op::Acquire));
        ha.held = Some(7);
        assert!(matches!(ha.next_op(), Op::Renew(7)));
        ha.vrrp = Vrrp::Fault;
        assert!(matches!(ha.next_op(), Op::Release(7)));
        assert!(!ha.is_active());
    }

    #[test]
    fn the_status_json_names_role_vrrp_and_lease() {
        let (tx, _rx) = mpsc::channel(1);
        let mut ha = Ha::new("a".into(), tx);
        ha.lease = Some(Lease {
            holder: Some("b".into()),
            epoch: 4,
            expires_ms: 1_700_000_000_000,
        });
        let v = serde_json::to_value(ha.status()).unwrap();
        assert_eq!(v["node"], "a");
        assert_eq!(v["role"], "standby");
        assert_eq!(v["vrrp"], "unknown");
        assert_eq!(v["lease_holder"], "b");
        assert_eq!(v["lease_epoch"], 4);
        assert_eq!(v["lease_expires"], "2023-11-14T22:13:20Z");
    }
}
