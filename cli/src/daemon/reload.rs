//! Applying the registry to the running hub (`peer add/set/remove/…`,
//! `cert revoke`). A command names the facility it changed and only that
//! facility's row is read and applied; the trust store is rebuilt only
//! after a revocation. Other facilities are never touched.

use super::reconnect::{Reconnect, RECONNECT_MIN};
use super::Hub;
use crate::control::{Change, ChangeAction, Reloaded};
use crate::registry::{Peer, Registry};
use anyhow::Result;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;
use tracing::{info, warn};

/// Revoked serials in the registry, with the facility each belonged to.
pub(super) fn revoked_serials(registry: &Registry) -> Result<HashMap<String, String>> {
    Ok(registry
        .certs()?
        .into_iter()
        .filter(|c| c.revoked.is_some())
        .map(|c| (c.serial, c.name))
        .collect())
}

/// Everything a full reload applies, read from the registry in one go:
/// on the control loop for `renkei reload`, on a blocking thread for the
/// periodic catch-up with a PostgreSQL registry ([`Hub::catch_up`]).
pub(super) struct Snapshot {
    peers: Vec<Peer>,
    revoked: HashMap<String, String>,
    trust: Option<std::sync::Arc<pki::verify::TrustStore>>,
    /// [`Hub::reload_generation`] when the read began.
    pub(super) generation: u64,
}

impl Snapshot {
    pub(super) fn read(state: &crate::state::StateDir, generation: u64) -> Result<Snapshot> {
        let registry = Registry::open(state)?;
        Ok(Snapshot {
            peers: registry.peers()?,
            revoked: revoked_serials(&registry)?,
            trust: crate::certs::trust(state, &registry)?,
            generation,
        })
    }
}

impl Hub {
    /// Applies the registry to the running endpoint: new and changed
    /// facilities take effect for their next IKE SA; removed or disabled
    /// ones are torn down. With `facility`, only that one is read and
    /// applied (and revocations only with `certificates`); without, every
    /// facility and the revocations are.
    pub(super) fn reload(
        &mut self,
        now: Instant,
        facility: Option<&str>,
        certificates: bool,
    ) -> Result<Reloaded> {
        // A catch-up read before this change must not undo it.
        self.reload_generation += 1;
        let mut changes = Vec::new();
        match facility {
            Some(name) => {
                let registry = Registry::open(&self.state)?;
                let fresh = registry.find_peer(name)?;
                let revocations = if certificates {
                    Some((
                        revoked_serials(&registry)?,
                        crate::certs::trust(&self.state, &registry)?,
                    ))
                } else {
                    None
                };
                drop(registry);
                self.apply_facility(now, name, fresh, &mut changes);
                if let Some((revoked, trust)) = revocations {
                    self.apply_revocations(revoked, trust, now, &mut changes);
                }
            }
            None => {
                let snapshot = Snapshot::read(&self.state, self.reload_generation)?;
                self.apply_snapshot(now, snapshot, &mut changes);
            }
        }
        Ok(Reloaded { changes })
    }

    /// Applies a whole registry as read: what changed since the last
    /// reload takes effect, the rest is untouched.
    pub(super) fn apply_snapshot(
        &mut self,
        now: Instant,
        snapshot: Snapshot,
        changes: &mut Vec<Change>,
    ) {
        let mut fresh: HashMap<String, Peer> = snapshot
            .peers
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let names: BTreeSet<String> = self.peers.keys().chain(fresh.keys()).cloned().collect();
        // Facilities that go first, so that a new one may take
        // what they held.
        let (gone, kept): (Vec<String>, Vec<String>) = names
            .into_iter()
            .partition(|n| !fresh.get(n).is_some_and(|p| p.enabled));
        for name in gone.iter().chain(&kept) {
            let p = fresh.remove(name);
            let unchanged = match (self.peers.get(name), &p) {
                (Some(old), Some(new)) => {
                    old.enabled == new.enabled
                        && !old.tunnel_differs(new)
                        && old.lifetimes == new.lifetimes
                        && old.mtu == new.mtu
                        && old.start == new.start
                        && old.router == new.router
                        // What the status shows (display name, notes,
                        // medical code) is taken without touching the tunnel.
                        && old.label == new.label
                }
                (None, None) => true,
                _ => false,
            };
            if !unchanged {
                self.apply_facility(now, name, p, changes);
            }
        }
        self.apply_revocations(snapshot.revoked, snapshot.trust, now, changes);
    }

    /// A periodic catch-up read ([`Snapshot::read`] on a blocking thread)
    /// arrived: applied unless a reload came in between (then it may be
    /// older than what the hub has, and the next one is read afresh).
    pub(super) fn catch_up(&mut self, now: Instant, read: Result<Snapshot>) {
        match read {
            Err(e) => {
                if !self.catch_up_failing {
                    warn!("registry catch-up: {e:#} (the hub keeps its configuration and tries again)");
                    self.catch_up_failing = true;
                }
            }
            Ok(snapshot) => {
                if self.catch_up_failing {
                    info!("registry catch-up: the registry is reachable again");
                    self.catch_up_failing = false;
                }
                if snapshot.generation != self.reload_generation {
                    return;
                }
                let mut changes = Vec::new();
                self.apply_snapshot(now, snapshot, &mut changes);
                if !changes.is_empty() {
                    for c in &changes {
                        info!(peer = %c.name, action = ?c.action, "registry catch-up applied a change");
                    }
                    let names: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
                    self.audit.record(
                        &crate::audit::actor(),
                        "hub.catch_up",
                        serde_json::json!({ "facilities": names }),
                    );
                }
            }
        }
    }

    /// Takes the hub's certificates and trusted CAs from the state
    /// directory again (`hub renew-cert`, `ca rollover`, `ca retire-old`).
    /// Established IKE and Child SAs are kept as they are: they were
    /// authenticated already. The next IKE SA (a facility connecting or
    /// reauthenticating) signs with the new certificate.
    pub(super) fn reload_credentials(&mut self) -> Result<Reloaded> {
        let registry = Registry::open(&self.state)?;
        // A node of a pair takes them from the registry, sealed.
        let loaded = match &self.cluster_key {
            Some(key) => Some(crate::cluster::load(&registry, key)?),
            None => crate::certs::load(&self.state, &registry)?,
        };
        match loaded {
            Some(pki) => {
                let serial = pki::verify::describe(&pki.credentials.cert_der)
                    .map(|c| c.serial)
                    .unwrap_or_default();
                info!(
                    %serial,
                    rollover = !pki.by_ca.is_empty(),
                    "hub certificate and trusted CAs reloaded"
                );
                self.endpoint
                    .set_credentials(Some(pki.credentials), pki.by_ca);
                self.endpoint.set_trust(Some(pki.trust));
            }
            None => warn!("reload: the state directory has no CA; certificates unchanged"),
        }
        Ok(Reloaded::default())
    }

    /// Applies one facility as the registry now has it (`None`: removed).
    fn apply_facility(
        &mut self,
        now: Instant,
        name: &str,
        fresh: Option<Peer>,
        changes: &mut Vec<Change>,
    ) {
        let mut change = |action| {
            changes.push(Change {
                name: name.to_string(),
                action,
            })
        };
        let old = self.peers.get(name);
        let mtu_changed = old.zip(fresh.as_ref()).is_some_and(|(o, f)| o.mtu != f.mtu);
        let enabled = fresh.as_ref().filter(|p| p.enabled);
        // Gone from the registry, or disabled now (a facility that stays
        // disabled is no change).
        let was_enabled = old.is_some_and(|o| o.enabled);
        if old.is_some() && enabled.is_none() && (was_enabled || fresh.is_none()) {
            if self.endpoint.peer(name).is_some() {
                let _ = self.endpoint.remove_peer(now, name);
            }
            self.reconnect.remove(name);
            if fresh.is_none() {
                self.last_known.forget(name);
            }
            change(ChangeAction::Removed);
        }
        if let Some(p) = enabled {
            let old = old.filter(|old| old.enabled);
            let is_new = old.is_none();
            let restart = old.is_some_and(|old| old.tunnel_differs(p));
            match self.endpoint.set_peer(p.to_config()) {
                Err(e) => warn!(peer = %name, "cannot apply: {e}"),
                Ok(()) => {
                    if restart {
                        // Its tunnel was made under the old settings: renew it.
                        info!(peer = %name, "facility changed; restarting its tunnel");
                        for id in self.endpoint.ike_sas_of(name) {
                            self.endpoint.close(now, id);
                        }
                        change(ChangeAction::Changed);
                        if p.start {
                            self.reconnect.insert(
                                name.to_string(),
                                Reconnect {
                                    at: now + RECONNECT_MIN,
                                    backoff: RECONNECT_MIN,
                                },
                            );
                        }
                    }
                    if is_new {
                        change(ChangeAction::Added);
                        if p.start {
                            self.reconnect.insert(
                                name.to_string(),
                                Reconnect {
                                    at: now,
                                    backoff: RECONNECT_MIN,
                                },
                            );
                        }
                    }
                }
            }
        }
        // Disabled: refused by its name when it tries to connect.
        self.endpoint.set_disabled(
            name,
            fresh.as_ref().filter(|p| !p.enabled).map(|p| p.id.clone()),
        );
        match fresh {
            Some(p) => {
                self.peers.insert(name.to_string(), p);
            }
            None => {
                self.peers.remove(name);
                self.status.remove(name);
                let peers = &self.peers;
                self.evidence.retain(|n| peers.contains_key(n));
            }
        }
        if mtu_changed {
            self.table.mtu(name).configure(self.configured_mtu(name));
            self.set_route_mtus(name);
        }
    }

    /// Revocations: refuse the certificates from now on, and close the
    /// tunnels of facilities whose certificate was just revoked.
    fn apply_revocations(
        &mut self,
        revoked: HashMap<String, String>,
        trust: Option<std::sync::Arc<pki::verify::TrustStore>>,
        now: Instant,
        changes: &mut Vec<Change>,
    ) {
        self.endpoint.set_trust(trust);
        let newly: BTreeSet<&String> = revoked
            .iter()
            .filter(|(serial, _)| !self.revoked.contains_key(*serial))
            .map(|(_, name)| name)
            .collect();
        for name in newly {
            let ids = self.endpoint.ike_sas_of(name);
            if !ids.is_empty() {
                info!(peer = %name, "certificate revoked; closing its tunnel");
                for id in ids {
                    self.endpoint.close(now, id);
                }
                changes.push(Change {
                    name: name.clone(),
                    action: ChangeAction::Revoked,
                });
            }
        }
        self.revoked = revoked;
    }
}
