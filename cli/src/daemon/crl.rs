//! Keeping the CRL current: routers and strongSwan that fetch
//! `STATE/ca/crl.pem` refuse every certificate once its `nextUpdate`
//! has passed, so the running hub reissues it (same revocations, new
//! dates) well before then — see [`crate::certs::crl_due`].

use super::Hub;
use serde_json::json;
use tracing::{info, warn};

impl Hub {
    /// Reissues the CRL when it is due; called on the hub's hourly timer
    /// (and once at start).
    pub(super) fn renew_crl(&mut self) {
        match crate::certs::renew_crl_if_due(&self.state, crate::certs::unix_now()) {
            Ok(None) => {}
            Ok(Some(next)) => {
                let next = pki::verify::iso(next);
                info!(next_update = %next, "reissued the CRL");
                self.audit.record(
                    &crate::audit::actor(),
                    "crl.reissue",
                    json!({ "next_update": next }),
                );
            }
            Err(e) => warn!(
                "cannot reissue the CRL {}: {e:#} (routers refuse certificates once it expires)",
                self.state.crl().display()
            ),
        }
    }
}
