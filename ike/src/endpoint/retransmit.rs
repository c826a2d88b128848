//! Requests and responses of an IKE SA (RFC 7296 §2.1–§2.3): message IDs,
//! one request in flight (window size 1) with the rest queued as
//! [`Work`], retransmission with exponential backoff until the budget is
//! spent, and the cached response repeated for a retransmitted request.
//!
//! ```text
//! queue(Work) ─▶ pump ─▶ start_work ─▶ send_request ─▶ Pending ─(Retransmit timer)─▶ again … fail
//!                  ▲                                      │ response
//!                  └──────────── next Work ◀──────────────┘
//! ```

use super::sa::{Established, IkeSa, Pending, PendingKind, State, Timer, Work};
use super::Endpoint;
use crate::error::Error;
use crate::keys::IkeKeys;
use crate::wire::{ExchangeType, Payload};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Retransmission timeouts stop doubling here.
pub(super) const MAX_RETRANSMIT_INTERVAL: Duration = Duration::from_secs(30);

pub(super) fn queue(est: &mut Established, work: Work) {
    if !est.queue.contains(&work) {
        est.queue.push_back(work);
    }
}

impl Endpoint {
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        keys: &IkeKeys,
        exchange: ExchangeType,
        payloads: &[Payload],
        kind: PendingKind,
    ) -> Result<(), Error> {
        let id = sa.next_request_id;
        let messages = self.encrypted_messages(sa, keys, exchange, false, id, payloads)?;
        sa.next_request_id = id.wrapping_add(1);
        self.start_request(now, sa, id, messages, kind);
        Ok(())
    }

    pub(super) fn start_request(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        message_id: u32,
        messages: Vec<Vec<u8>>,
        kind: PendingKind,
    ) {
        sa.timers
            .set(Timer::Retransmit, now + self.config.retransmit_timeout);
        self.transmit_all(now, sa, &messages);
        sa.pending = Some(Pending {
            message_id,
            datagrams: messages,
            tries: 1,
            kind,
        });
    }

    pub(super) fn send_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        keys: &IkeKeys,
        exchange: ExchangeType,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<(), Error> {
        let messages = self.encrypted_messages(sa, keys, exchange, true, message_id, payloads)?;
        self.transmit_all(now, sa, &messages);
        sa.last_response = Some((message_id, messages));
        sa.expected_request_id = message_id.wrapping_add(1);
        Ok(())
    }

    /// Timer Retransmit: the request in flight again, after a doubled wait
    /// (RFC 7296 §2.1), or the IKE SA given up once the budget is spent.
    pub(super) fn on_retransmit_timer(&mut self, now: Instant, sa: &mut IkeSa) {
        let Some(p) = &mut sa.pending else {
            return;
        };
        if p.tries >= self.config.retransmit_tries {
            let tries = p.tries;
            self.fail(sa, format!("no answer after {tries} transmissions"));
            return;
        }
        p.tries += 1;
        let wait = self
            .config
            .retransmit_timeout
            .saturating_mul(1 << (p.tries - 1).min(16))
            .min(MAX_RETRANSMIT_INTERVAL);
        let datagrams = p.datagrams.clone();
        debug!(ike_sa = %sa.id, tries = p.tries, "retransmitting");
        sa.timers.set(Timer::Retransmit, now + wait);
        self.transmit_all(now, sa, &datagrams);
    }

    /// RFC 7296 §2.2: a retransmitted request gets the cached response
    /// (true); any request but the next expected one is refused.
    pub(super) fn answer_retransmission(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        message_id: u32,
    ) -> Result<bool, Error> {
        if let Some((id, messages)) = &sa.last_response {
            if *id == message_id {
                let messages = messages.clone();
                self.transmit_all(now, sa, &messages);
                return Ok(true);
            }
        }
        if message_id != sa.expected_request_id {
            return Err(Error::Misbehaved(format!(
                "request with message ID {} (expected {})",
                message_id, sa.expected_request_id
            )));
        }
        Ok(false)
    }

    /// Drops the request in flight, releasing what it reserved.
    pub(super) fn abandon_pending(&mut self, sa: &mut IkeSa) {
        if let Some(Pending {
            kind: PendingKind::RekeyChild { new_spi_in, .. },
            ..
        }) = sa.pending.take()
        {
            self.child_spis.remove(&new_spi_in);
        }
        sa.timers.stop(Timer::Retransmit);
    }

    /// Starts the next queued request if none is in flight.
    pub(super) fn pump(&mut self, now: Instant, sa: &mut IkeSa) {
        if sa.pending.is_none() {
            if let State::Established(mut est) = std::mem::replace(&mut sa.state, State::Gone) {
                while let Some(work) = est.queue.pop_front() {
                    match self.start_work(now, sa, &mut est, work) {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => warn!(ike_sa = %sa.id, "cannot start request: {e}"),
                    }
                }
                sa.state = State::Established(est);
            } else {
                // Not established: put nothing back that was not there.
                if matches!(sa.state, State::Gone) {
                    return;
                }
            }
        }
        self.arm(sa);
    }

    /// Sends the request for one piece of work; false if there was nothing
    /// left to do (e.g. the Child SA went away meanwhile).
    pub(super) fn start_work(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        work: Work,
    ) -> Result<bool, Error> {
        let peer = sa
            .peer
            .clone()
            .ok_or(Error::Missing("established IKE SA without peer"))?;
        match work {
            Work::Dpd => self.start_dpd(now, sa, est),
            Work::DeleteChildren(spis) => self.start_delete_children(now, sa, est, spis),
            Work::RekeyChild(old) => self.start_create_child(now, sa, est, &peer, Some(old)),
            Work::NewChild => self.start_create_child(now, sa, est, &peer, None),
            Work::RekeyIke => self.start_ike_rekey(now, sa, est, &peer),
            Work::Redirect(gateway) => self.start_redirect(now, sa, est, gateway),
        }
    }
}
