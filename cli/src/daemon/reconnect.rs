//! What the hub does on its own as time passes: re-initiating facilities
//! it keeps connected (with backoff; a facility given by DNS name is
//! resolved again for every attempt, off the event loop), asking again for
//! a refused Child SA, and rekeying Child SAs that carried their byte
//! lifetime.

use super::status::FacilityState;
use super::Hub;
use crate::registry::RemoteAddr;
use ike::IkeSaId;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The longest a DNS lookup of a facility's name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A finished lookup of a facility's name.
#[derive(Debug)]
pub(super) struct Resolved {
    pub(super) name: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) result: Result<SocketAddr, String>,
}

/// Resolves `host` with the system's resolver (`/etc/hosts`, DNS, as
/// nsswitch.conf says), bounded by [`RESOLVE_TIMEOUT`]; the first address.
pub(super) async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| "the name has no address".to_string()),
    }
}

/// When to try a facility again, and the wait after that.
pub(super) struct Reconnect {
    pub(super) at: Instant,
    pub(super) backoff: Duration,
}

/// The first wait; doubled after each failure up to [`RECONNECT_MAX`].
pub(super) const RECONNECT_MIN: Duration = Duration::from_secs(2);
pub(super) const RECONNECT_MAX: Duration = Duration::from_secs(60);

impl Hub {
    pub(super) fn run_reconnects(&mut self, now: Instant) {
        // A draining hub starts nothing: its facilities go to the other hub.
        if self.drain.is_some() {
            return;
        }
        let due: Vec<String> = self
            .reconnect
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(r) = self.reconnect.get_mut(&name) else {
                continue;
            };
            let backoff = r.backoff;
            r.at = now + backoff;
            r.backoff = (backoff * 2).min(RECONNECT_MAX);
            if !self.endpoint.ike_sas_of(&name).is_empty() {
                continue;
            }
            match self.start_initiate(now, &name) {
                Ok(Some(id)) => {
                    let st = self.status.entry(name.clone()).or_default();
                    st.state = FacilityState::Connecting;
                    st.ike_sa = Some(id);
                }
                Ok(None) => {}
                Err(e) => warn!(peer = %name, "cannot initiate: {e}"),
            }
        }
    }

    /// Starts an IKE SA to a facility: at once to an address; to a DNS
    /// name once a lookup (spawned here, never blocking the loop) reports
    /// to [`Hub::resolved`], which returns `None` here.
    pub(super) fn start_initiate(
        &mut self,
        now: Instant,
        name: &str,
    ) -> Result<Option<IkeSaId>, String> {
        let addr = self.peers.get(name).and_then(|p| p.remote_addr.clone());
        match addr {
            None => Err(format!("remote-addr: facility '{name}' has none")),
            Some(RemoteAddr::Ip(a)) => self
                .endpoint
                .initiate_to(now, name, a)
                .map(Some)
                .map_err(|e| e.to_string()),
            Some(RemoteAddr::Name { host, port }) => {
                if self.resolving.insert(name.to_string()) {
                    let tx = self.resolved_tx.clone();
                    let name = name.to_string();
                    tokio::spawn(async move {
                        let result = resolve(&host, port).await;
                        let _ = tx
                            .send(Resolved {
                                name,
                                host,
                                port,
                                result,
                            })
                            .await;
                    });
                }
                self.status.entry(name.to_string()).or_default().state = FacilityState::Connecting;
                Ok(None)
            }
        }
    }

    /// A lookup finished: initiate to the address, or report why not (the
    /// next attempt follows the facility's reconnect backoff).
    pub(super) fn resolved(&mut self, now: Instant, r: Resolved) {
        self.resolving.remove(&r.name);
        // The facility may have been changed, disabled or removed meanwhile.
        let wanted = RemoteAddr::Name {
            host: r.host.clone(),
            port: r.port,
        };
        let current = self
            .peers
            .get(&r.name)
            .filter(|p| p.enabled)
            .and_then(|p| p.remote_addr.as_ref());
        if current != Some(&wanted) {
            return;
        }
        match r.result {
            Ok(addr) => {
                if !self.endpoint.ike_sas_of(&r.name).is_empty() {
                    return;
                }
                // What `peer add` checks for an address, checked for what
                // the name resolves to now: not inside the facility's own
                // prefixes (its packets would be routed into the tunnel).
                if let Some(p) = self.peers.get(&r.name) {
                    if let Err(e) =
                        crate::hostnet::check_selectors(&p.remote_ts, &p.local_ts, Some(addr.ip()))
                    {
                        let msg = format!("{} resolves to {}: {e:#}", r.host, addr.ip());
                        warn!(peer = %r.name, "{msg}");
                        let st = self.status.entry(r.name).or_default();
                        st.state = FacilityState::Down;
                        st.last_error = Some(msg);
                        return;
                    }
                }
                info!(peer = %r.name, host = %r.host, %addr, "resolved the facility's name");
                match self.endpoint.initiate_to(now, &r.name, addr) {
                    Ok(id) => {
                        let st = self.status.entry(r.name).or_default();
                        st.state = FacilityState::Connecting;
                        st.ike_sa = Some(id);
                    }
                    Err(e) => warn!(peer = %r.name, "cannot initiate: {e}"),
                }
            }
            Err(e) => {
                let msg = format!("remote-addr: cannot resolve {}: {e}", r.host);
                warn!(peer = %r.name, "{msg}");
                let st = self.status.entry(r.name).or_default();
                if st.ike_sa.is_none() {
                    st.state = FacilityState::Down;
                }
                st.last_error = Some(msg);
            }
        }
    }

    /// Asks again for the Child SA of facilities the hub initiates to whose
    /// IKE SA lives without one (it was refused: a wrong selector or a
    /// proposal the router lacks), with the same backoff as reconnects.
    pub(super) fn run_child_retries(&mut self, now: Instant) {
        let due: Vec<String> = self
            .child_retry
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let st = self.status.get(&name);
            let ike_sa = st.filter(|s| s.children.is_empty()).and_then(|s| s.ike_sa);
            let Some(ike_sa) = ike_sa else {
                // It has one now, or no IKE SA to ask under.
                self.child_retry.remove(&name);
                continue;
            };
            if let Some(r) = self.child_retry.get_mut(&name) {
                r.at = now + r.backoff;
                r.backoff = (r.backoff * 2).min(RECONNECT_MAX);
            }
            info!(peer = %name, "asking the facility again for a Child SA");
            if let Err(e) = self.endpoint.create_child(now, ike_sa) {
                debug!(peer = %name, "cannot ask for a Child SA: {e}");
                self.child_retry.remove(&name);
            }
        }
    }

    /// Rekeys Child SAs that have carried their facility's byte lifetime.
    pub(super) fn check_byte_lifetimes(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (name, st) in &self.status {
            let Some(limit) = self.peers.get(name).and_then(|p| p.lifetimes.child_bytes) else {
                continue;
            };
            for c in &st.children {
                if self.table.sa_bytes(c.spi_in, c.spi_out) >= limit {
                    due.push(c.spi_in);
                }
            }
        }
        for spi in due {
            // Already rekeying or replaced: nothing to do.
            let _ = self.endpoint.rekey_child(now, spi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_resolved_by_the_system_resolver_and_failures_are_told() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // `localhost` is in every /etc/hosts: no DNS server involved.
            let a = resolve("localhost", 4500).await.unwrap();
            assert!(a.ip().is_loopback(), "{a}");
            assert_eq!(a.port(), 4500);
            // A name with no address: a message, not a panic (a name with
            // a NUL byte never reaches any resolver).
            let e = resolve("bad\0name", 500).await.unwrap_err();
            assert!(!e.is_empty());
        });
    }
}
