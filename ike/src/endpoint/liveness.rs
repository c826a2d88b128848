//! Liveness checks (RFC 7296 §1.4, §2.4): when a facility has been silent
//! for its `dpd` interval and nothing else is in flight, an empty
//! INFORMATIONAL request; unanswered through the retransmission budget
//! ([`super::retransmit`]), the IKE SA is declared down.

use super::retransmit::queue;
use super::sa::{Established, IkeSa, PendingKind, State, Work};
use super::Endpoint;
use crate::error::Error;
use crate::wire::ExchangeType;
use std::time::Instant;
use tracing::debug;

impl Endpoint {
    pub(super) fn on_dpd_timer(&mut self, now: Instant, sa: &mut IkeSa) {
        if let State::Established(est) = &mut sa.state {
            if !est.superseded && sa.pending.is_none() && est.queue.is_empty() {
                debug!(ike_sa = %sa.id, "facility silent: liveness check");
                queue(est, Work::Dpd);
            }
        }
        self.pump(now, sa);
    }

    /// Sends the liveness check: an empty INFORMATIONAL request.
    pub(super) fn start_dpd(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &Established,
    ) -> Result<bool, Error> {
        self.send_request(
            now,
            sa,
            &est.keys,
            ExchangeType::Informational,
            &[],
            PendingKind::Dpd,
        )?;
        Ok(true)
    }
}
