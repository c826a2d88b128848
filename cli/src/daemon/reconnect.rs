//! What the hub does on its own as time passes: re-initiating facilities
//! it keeps connected (with backoff), asking again for a refused Child SA,
//! and rekeying Child SAs that carried their byte lifetime.

use super::status::FacilityState;
use super::Hub;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

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
            match self.endpoint.initiate(now, &name) {
                Ok(id) => {
                    let st = self.status.entry(name.clone()).or_default();
                    st.state = FacilityState::Connecting;
                    st.ike_sa = Some(id);
                }
                Err(e) => warn!(peer = %name, "cannot initiate: {e}"),
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
