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
        let registry = Registry::open(&self.state)?;
        let mut changes = Vec::new();
        match facility {
            Some(name) => {
                let fresh = registry.find_peer(name)?;
                self.apply_facility(now, name, fresh, &mut changes);
                if certificates {
                    self.apply_revocations(&registry, now, &mut changes)?;
                }
            }
            None => {
                let mut fresh: HashMap<String, Peer> = registry
                    .peers()?
                    .into_iter()
                    .map(|p| (p.name.clone(), p))
                    .collect();
                let names: BTreeSet<String> =
                    self.peers.keys().chain(fresh.keys()).cloned().collect();
                // Facilities that go first, so that a new one may take
                // what they held.
                let (gone, kept): (Vec<String>, Vec<String>) = names
                    .into_iter()
                    .partition(|n| !fresh.get(n).is_some_and(|p| p.enabled));
                for name in gone.iter().chain(&kept) {
                    let p = fresh.remove(name);
                    self.apply_facility(now, name, p, &mut changes);
                }
                self.apply_revocations(&registry, now, &mut changes)?;
            }
        }
        Ok(Reloaded { changes })
    }

    /// Takes the hub's certificates and trusted CAs from the state
    /// directory again (`hub renew-cert`, `ca rollover`, `ca retire-old`).
    /// Established IKE and Child SAs are kept as they are: they were
    /// authenticated already. The next IKE SA (a facility connecting or
    /// reauthenticating) signs with the new certificate.
    pub(super) fn reload_credentials(&mut self) -> Result<Reloaded> {
        let registry = Registry::open(&self.state)?;
        match crate::certs::load(&self.state, &registry)? {
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
        if old.is_some() && enabled.is_none() {
            if self.endpoint.peer(name).is_some() {
                let _ = self.endpoint.remove_peer(now, name);
            }
            self.reconnect.remove(name);
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
        registry: &Registry,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let revoked = revoked_serials(registry)?;
        self.endpoint
            .set_trust(crate::certs::trust(&self.state, registry)?);
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
        Ok(())
    }
}
