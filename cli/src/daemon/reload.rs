//! Applying the registry to the running hub (`peer add/set/remove/…`,
//! `cert revoke`): only the facilities that changed are touched.

use super::reconnect::{Reconnect, RECONNECT_MIN};
use super::Hub;
use crate::control::{Change, ChangeAction, Reloaded};
use crate::registry::{Peer, Registry};
use anyhow::Result;
use std::collections::HashMap;
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

impl Hub {
    /// Applies the registry to the running endpoint: new and changed
    /// facilities take effect for their next IKE SA; removed or disabled
    /// ones are torn down. Other facilities are not touched.
    pub(super) fn reload(&mut self, now: Instant) -> Result<Reloaded> {
        let registry = Registry::open(&self.state)?;
        let fresh: HashMap<String, Peer> = registry
            .peers()?
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let mut changed = Vec::new();
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|n| !fresh.get(*n).is_some_and(|p| p.enabled))
            .cloned()
            .collect();
        for name in &gone {
            if self.endpoint.peer(name).is_some() {
                let _ = self.endpoint.remove_peer(now, name);
            }
            self.reconnect.remove(name);
            changed.push(Change {
                name: name.clone(),
                action: ChangeAction::Removed,
            });
        }
        for (name, p) in &fresh {
            if !p.enabled {
                continue;
            }
            let old = self.peers.get(name).filter(|old| old.enabled);
            let is_new = old.is_none();
            let restart = old.is_some_and(|old| old.tunnel_differs(p));
            if let Err(e) = self.endpoint.set_peer(p.to_config()) {
                warn!(peer = %name, "cannot apply: {e}");
                continue;
            }
            if restart {
                // Its tunnel was made under the old settings: renew it.
                info!(peer = %name, "facility changed; restarting its tunnel");
                for id in self.endpoint.ike_sas_of(name) {
                    self.endpoint.close(now, id);
                }
                changed.push(Change {
                    name: name.clone(),
                    action: ChangeAction::Changed,
                });
                if p.start {
                    self.reconnect.insert(
                        name.clone(),
                        Reconnect {
                            at: now + RECONNECT_MIN,
                            backoff: RECONNECT_MIN,
                        },
                    );
                }
            }
            if is_new {
                changed.push(Change {
                    name: name.clone(),
                    action: ChangeAction::Added,
                });
                if p.start {
                    self.reconnect.insert(
                        name.clone(),
                        Reconnect {
                            at: now,
                            backoff: RECONNECT_MIN,
                        },
                    );
                }
            }
        }
        // Revocations: refuse the certificates from now on, and close the
        // tunnels of facilities whose certificate was just revoked.
        let revoked = revoked_serials(&registry)?;
        self.endpoint
            .set_trust(crate::certs::trust(&self.state, &registry)?);
        let newly: std::collections::BTreeSet<&String> = revoked
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
                changed.push(Change {
                    name: name.clone(),
                    action: ChangeAction::Revoked,
                });
            }
        }
        self.revoked = revoked;
        let mtu_changed: Vec<String> = fresh
            .iter()
            .filter(|(n, p)| self.peers.get(*n).is_some_and(|old| old.mtu != p.mtu))
            .map(|(n, _)| n.clone())
            .collect();
        self.peers = fresh;
        for name in mtu_changed {
            self.table.mtu(&name).configure(self.configured_mtu(&name));
            self.set_route_mtus(&name);
        }
        for name in gone.iter().filter(|n| !self.peers.contains_key(*n)) {
            self.status.remove(name);
        }
        Ok(Reloaded { changes: changed })
    }
}
