//! Keeping established IKE SAs alive: CREATE_CHILD_SA (RFC 7296 §1.3) for
//! rekeying Child SAs and the IKE SA and for additional Child SAs, with the
//! collision rules of §2.8.1 and §2.25, deletes, and liveness checks (§1.4).
//!
//! ```text
//! timer Rekey ─▶ queue RekeyChild / RekeyIke ─┐
//! timer Dpd   ─▶ queue Dpd ───────────────────┼─▶ pump: one request in flight
//! rekey done  ─▶ queue DeleteChildren(old) ───┘     ─▶ on_established_response
//! ```
//!
//! Make-before-break: a rekeyed Child SA is reported up (and installed)
//! before the old one is deleted; the old one is reported down only when
//! its deletion completes.

use super::{
    accept_narrowed, narrow_to_peer, ChildSa, ChildSaInfo, Endpoint, Established, Event, IkeSa,
    IkeSaId, Incoming, PendingKind, State, Timer, Timers, Work, NONCE_LEN, REPLACED_GRACE,
};
use crate::crypto::KeyExchange;
use crate::error::Error;
use crate::keys::{derive_child, IkeKeys};
use crate::proposal::{describe_offer, KeChoice};
use crate::wire::{Delete, ExchangeType, Notify, NotifyType, Payload, PayloadsExt, ProtocolId};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// After a refused or failed rekey, try again between one and two times
/// this much later (random, so that two colliding ends drift apart).
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// A superseded IKE SA the peer does not delete is dropped after this.
const SUPERSEDED_LINGER: Duration = Duration::from_secs(60);

fn queue(est: &mut Established, work: Work) {
    if !est.queue.contains(&work) {
        est.queue.push_back(work);
    }
}

fn spi4(b: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(b).ok().map(u32::from_be_bytes)
}

fn spi8(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

impl Endpoint {
    /// The SPI pairs of the Child SAs matching `f`.
    fn take_children(children: &mut [ChildSa], f: impl Fn(&ChildSa) -> bool) -> Vec<(u32, u32)> {
        children
            .iter()
            .filter(|c| f(c))
            .map(|c| (c.spi_in, c.spi_out))
            .collect()
    }

    /// Frees the SPIs of deleted Child SAs and reports them down.
    pub(super) fn children_gone(&mut self, sa: &IkeSa, gone: &[(u32, u32)]) {
        for (spi_in, _) in gone {
            self.child_spis.remove(spi_in);
        }
        self.report_children_down(sa, gone);
    }

    fn retry_at(&mut self, now: Instant) -> Instant {
        self.jittered(now, RETRY_AFTER * 2, 50)
    }

    // ---- operator / data-plane requests ----------------------------------

    /// Rekeys the Child SA whose inbound SPI is `spi_in` now (for byte
    /// lifetimes, counted by the data plane, and for operators).
    pub fn rekey_child(&mut self, now: Instant, spi_in: u32) -> Result<(), Error> {
        let id = self
            .sas
            .iter()
            .find(|(_, sa)| matches!(&sa.state, State::Established(e) if !e.superseded && e.children.iter().any(|c| c.spi_in == spi_in && c.replaced.is_none())))
            .map(|(id, _)| *id)
            .ok_or_else(|| Error::NotFound(format!("Child SA {spi_in:08x}")))?;
        self.with_established(now, id, |est| {
            if let Some(c) = est
                .children
                .iter_mut()
                .find(|c| c.spi_in == spi_in && !c.rekeying)
            {
                c.rekeying = true;
                queue(est, Work::RekeyChild(spi_in));
            }
        })
    }

    /// Creates an additional Child SA over the facility's configured
    /// selectors (RFC 7296 §1.3.1).
    pub fn create_child(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.with_established(now, id.0, |est| queue(est, Work::NewChild))
    }

    /// Rekeys an IKE SA now.
    pub fn rekey_ike(&mut self, now: Instant, id: IkeSaId) -> Result<(), Error> {
        self.with_established(now, id.0, |est| queue(est, Work::RekeyIke))
    }

    fn with_established(
        &mut self,
        now: Instant,
        id: u64,
        f: impl FnOnce(&mut Established),
    ) -> Result<(), Error> {
        let mut sa = self
            .sas
            .remove(&id)
            .ok_or_else(|| Error::NotFound(format!("IKE SA {id:016x}")))?;
        let result = match &mut sa.state {
            State::Established(est) if !est.superseded => {
                f(est);
                Ok(())
            }
            _ => Err(Error::NotFound(format!("established IKE SA {id:016x}"))),
        };
        self.pump(now, &mut sa);
        self.put_back(sa);
        result
    }

    // ---- timers ------------------------------------------------------------

    /// Sets the Rekey and Dpd timers of an established IKE SA.
    pub(super) fn arm(&mut self, sa: &mut IkeSa) {
        let dpd = sa.peer.as_ref().map(|p| p.lifetimes.dpd);
        let State::Established(est) = &sa.state else {
            sa.timers.stop(Timer::Rekey);
            sa.timers.stop(Timer::Dpd);
            return;
        };
        if est.superseded {
            sa.timers.stop(Timer::Rekey);
            sa.timers.stop(Timer::Dpd);
            return;
        }
        let next_rekey = est
            .children
            .iter()
            .filter_map(|c| match c.replaced {
                Some(at) => Some(at + REPLACED_GRACE),
                None => (!c.rekeying).then_some(c.rekey_at),
            })
            .chain([est.rekey_at])
            .min();
        if let Some(at) = next_rekey {
            sa.timers.set(Timer::Rekey, at);
        }
        // While a request is in flight its retransmissions check liveness.
        match (sa.pending.is_some(), dpd) {
            (false, Some(d)) if !d.is_zero() => sa.timers.set(Timer::Dpd, est.last_received + d),
            _ => sa.timers.stop(Timer::Dpd),
        }
    }

    pub(super) fn on_rekey_timer(&mut self, now: Instant, sa: &mut IkeSa) {
        let ike_lifetime = sa
            .peer
            .as_ref()
            .map_or(Duration::from_secs(3600), |p| p.lifetimes.ike);
        if let State::Established(est) = &mut sa.state {
            if est.superseded {
                return;
            }
            let due: Vec<u32> = est
                .children
                .iter_mut()
                .filter(|c| !c.rekeying && c.replaced.is_none() && c.rekey_at <= now)
                .map(|c| {
                    c.rekeying = true;
                    c.spi_in
                })
                .collect();
            for spi in due {
                queue(est, Work::RekeyChild(spi));
            }
            let overdue: Vec<u32> = est
                .children
                .iter_mut()
                .filter(|c| c.replaced.is_some_and(|at| at + REPLACED_GRACE <= now))
                .map(|c| {
                    // Asked again after another grace period if this fails.
                    c.replaced = Some(now);
                    c.spi_in
                })
                .collect();
            if !overdue.is_empty() {
                info!(ike_sa = %sa.id, child_sas = overdue.len(), "replaced Child SA not deleted by the facility: deleting it");
                queue(est, Work::DeleteChildren(overdue));
            }
            if est.rekey_at <= now {
                // Pushed back so that the timer does not fire again while
                // the rekey waits or runs; a failure brings it forward.
                est.rekey_at = now + ike_lifetime;
                queue(est, Work::RekeyIke);
            }
        }
        self.pump(now, sa);
    }

    pub(super) fn on_dpd_timer(&mut self, now: Instant, sa: &mut IkeSa) {
        if let State::Established(est) = &mut sa.state {
            if !est.superseded && sa.pending.is_none() && est.queue.is_empty() {
                debug!(ike_sa = %sa.id, "facility silent: liveness check");
                queue(est, Work::Dpd);
            }
        }
        self.pump(now, sa);
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
    fn start_work(
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
            Work::Dpd => {
                self.send_request(
                    now,
                    sa,
                    &est.keys,
                    ExchangeType::Informational,
                    &[],
                    PendingKind::Dpd,
                )?;
            }
            Work::DeleteChildren(spis) => {
                let spis: Vec<u32> = spis
                    .into_iter()
                    .filter(|s| est.children.iter().any(|c| c.spi_in == *s))
                    .collect();
                if spis.is_empty() {
                    return Ok(false);
                }
                let payload = Payload::Delete(Delete {
                    protocol: ProtocolId::Esp,
                    spi_size: 4,
                    spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
                });
                self.send_request(
                    now,
                    sa,
                    &est.keys,
                    ExchangeType::Informational,
                    &[payload],
                    PendingKind::DeleteChildren(spis),
                )?;
            }
            Work::RekeyChild(_) | Work::NewChild => {
                // A rekey keeps the Child SA's selectors; a new Child SA asks
                // for the facility's configured ones.
                let (old, local_ts, remote_ts, esn) = match work {
                    Work::RekeyChild(old) => {
                        let Some(child) = est
                            .children
                            .iter()
                            .find(|c| c.spi_in == old && c.replaced.is_none())
                        else {
                            return Ok(false);
                        };
                        (
                            Some(old),
                            child.local_ts.clone(),
                            child.remote_ts.clone(),
                            child.esn,
                        )
                    }
                    _ => (
                        None,
                        peer.local_ts.iter().map(|s| s.to_selector()).collect(),
                        peer.remote_ts.iter().map(|s| s.to_selector()).collect(),
                        false,
                    ),
                };
                let new_spi_in = self.new_child_spi();
                let nonce_i = self.random(NONCE_LEN);
                let pfs = peer.esp.first_ke();
                let mut payloads = Vec::new();
                if let Some(old) = old {
                    payloads.push(Payload::Notify(Notify {
                        protocol: ProtocolId::Esp,
                        spi: old.to_be_bytes().to_vec(),
                        kind: NotifyType::RekeySa,
                        data: vec![],
                    }));
                }
                payloads.push(Payload::Sa(peer.esp.to_wire_rekeying(
                    &new_spi_in.to_be_bytes(),
                    pfs.is_some(),
                    esn,
                )));
                payloads.push(Payload::Nonce(nonce_i.clone()));
                let ke = match pfs {
                    Some(group) => {
                        let (ke, public) = KeyExchange::generate(group, &mut self.rng)?;
                        payloads.push(Payload::Ke {
                            group,
                            data: public,
                        });
                        Some(ke)
                    }
                    None => None,
                };
                payloads.push(Payload::TsI(local_ts));
                payloads.push(Payload::TsR(remote_ts));
                debug!(ike_sa = %sa.id, old = ?old.map(|o| format!("{o:08x}")), "creating Child SA");
                // SPI 0 is never a Child SA's: "replaces nothing".
                let kind = PendingKind::RekeyChild {
                    old_spi_in: old.unwrap_or(0),
                    new_spi_in,
                    nonce_i,
                    ke,
                };
                if let Err(e) = self.send_request(
                    now,
                    sa,
                    &est.keys,
                    ExchangeType::CreateChildSa,
                    &payloads,
                    kind,
                ) {
                    self.child_spis.remove(&new_spi_in);
                    return Err(e);
                }
            }
            Work::RekeyIke => {
                let new_spi = self.new_ike_spi();
                let nonce_i = self.random(NONCE_LEN);
                let group = est.keys.suite.ke;
                let (ke, public) = KeyExchange::generate(group, &mut self.rng)?;
                let payloads = [
                    Payload::Sa(peer.ike.to_wire(&new_spi.to_be_bytes(), true)),
                    Payload::Nonce(nonce_i.clone()),
                    Payload::Ke {
                        group,
                        data: public,
                    },
                ];
                debug!(ike_sa = %sa.id, "rekeying IKE SA");
                self.send_request(
                    now,
                    sa,
                    &est.keys,
                    ExchangeType::CreateChildSa,
                    &payloads,
                    PendingKind::RekeyIke {
                        new_spi,
                        nonce_i,
                        ke,
                    },
                )?;
            }
        }
        Ok(true)
    }

    // ---- CREATE_CHILD_SA as responder -----------------------------------

    pub(super) fn respond_create_child(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: Incoming<'_>,
        est: Established,
    ) -> Result<(), Error> {
        let hdr = msg.hdr;
        let (mut est, payloads) = self.open_established(now, sa, est, msg)?;
        let rekeys_ike = payloads
            .sa()
            .and_then(|v| v.first())
            .is_some_and(|p| p.protocol == ProtocolId::Ike);
        let result = if est.superseded {
            Err(Error::TemporaryFailure("IKE SA is being replaced"))
        } else if rekeys_ike {
            self.respond_ike_rekey(now, sa, &mut est, &payloads)
        } else {
            self.respond_child(now, sa, &mut est, &payloads)
        };
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                let peer = sa.peer_name();
                if matches!(e, Error::TemporaryFailure(_)) {
                    debug!(ike_sa = %sa.id, "answering CREATE_CHILD_SA with {e}");
                } else if let Some(n) = e.notify() {
                    self.refuse(sa.remote, peer, n, format!("CREATE_CHILD_SA refused: {e}"));
                }
                e.notify_payload().into_iter().collect()
            }
        };
        let sent = self.send_response(
            now,
            sa,
            &est.keys,
            ExchangeType::CreateChildSa,
            hdr.message_id,
            &reply,
        );
        sa.state = State::Established(est);
        self.arm(sa);
        sent
    }

    /// A new or rekeyed Child SA requested by the peer.
    fn respond_child(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        payloads: &[Payload],
    ) -> Result<Vec<Payload>, Error> {
        let peer = sa
            .peer
            .clone()
            .ok_or(Error::Missing("established IKE SA without peer"))?;
        // RFC 7296 §1.3.3: the REKEY_SA notify names the Child SA being
        // rekeyed by the SPI its sender receives on (our outbound SPI).
        let rekey_spi = payloads
            .notifies()
            .find(|n| n.kind == NotifyType::RekeySa && n.protocol == ProtocolId::Esp)
            .map(|n| spi4(&n.spi).ok_or(Error::Missing("REKEY_SA SPI")))
            .transpose()?;
        let old_index = match rekey_spi {
            Some(spi) => Some(
                est.children
                    .iter()
                    .position(|c| c.spi_out == spi || c.spi_in == spi)
                    .ok_or(Error::ChildSaNotFound(spi))?,
            ),
            None => None,
        };
        let offered = payloads.sa().ok_or(Error::Missing("no SA payload"))?;
        let nonce_i = payloads.nonce().ok_or(Error::Missing("no Nonce payload"))?;
        if !(16..=256).contains(&nonce_i.len()) {
            return Err(Error::Missing("nonce length"));
        }
        let tsi = payloads.ts_i().ok_or(Error::Missing("no TSi"))?;
        let tsr = payloads.ts_r().ok_or(Error::Missing("no TSr"))?;
        let new_spi_in = self.new_child_spi();
        let result = (|| {
            let (suite, spi_out, echo) = peer
                .esp
                .select_esp(offered, false, payloads.ke().map(|(g, _)| g), new_spi_in)
                .ok_or_else(|| Error::NoProposalChosen(describe_offer(offered)))?;
            let (shared, ke_reply) = match suite.ke {
                Some(group) => {
                    let (their_group, public) = payloads.ke().ok_or(Error::InvalidKe(group))?;
                    if their_group != group {
                        return Err(Error::InvalidKe(group));
                    }
                    let (ke, ours) = KeyExchange::generate(group, &mut self.rng)?;
                    let shared = ke.shared_secret(public)?;
                    (Some(shared), Some(Payload::Ke { group, data: ours }))
                }
                None => (None, None),
            };
            let (remote_ts, local_ts) = narrow_to_peer(&peer, tsi, tsr)?;
            let nonce_r = self.random(NONCE_LEN);
            let keys = derive_child(
                est.keys.suite.prf,
                &est.keys.sk_d,
                &suite,
                shared.as_deref().map(|s| &s[..]),
                nonce_i,
                &nonce_r,
                false,
            );
            let mut reply = vec![Payload::Sa(vec![echo]), Payload::Nonce(nonce_r.clone())];
            reply.extend(ke_reply);
            reply.push(Payload::TsI(remote_ts.clone()));
            reply.push(Payload::TsR(local_ts.clone()));
            let info = ChildSaInfo {
                spi_in: new_spi_in,
                spi_out,
                suite,
                keys,
                local_ts,
                remote_ts,
                remote: sa.remote,
                encap: sa.encap,
            };
            Ok((info, reply, nonce_r))
        })();
        let (info, reply, nonce_r) = match result {
            Ok(r) => r,
            Err(e) => {
                self.child_spis.remove(&new_spi_in);
                return Err(e);
            }
        };
        let rekey_of = old_index.map(|i| est.children[i].spi_in);
        if let Some(i) = old_index {
            let old = &mut est.children[i];
            if old.rekeying {
                // We are rekeying it too (RFC 7296 §2.8.1): settle it when
                // our own exchange completes.
                let lowest = nonce_i.clone().min(nonce_r);
                old.peer_rekey = Some((lowest, new_spi_in));
            } else {
                // The peer deletes the old one once this one is up.
                old.replaced = Some(now);
            }
        }
        let lifetimes = peer.lifetimes;
        let rekey_at = self.jittered(now, lifetimes.child, lifetimes.jitter_percent);
        est.children.push(ChildSa::new(&info, rekey_at));
        self.child_up(sa.id, &peer.name, info, rekey_of, true);
        Ok(reply)
    }

    /// The peer rekeys the IKE SA: answer on this SA, move every Child SA to
    /// the new one, and wait for the peer to delete this one.
    fn respond_ike_rekey(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        payloads: &[Payload],
    ) -> Result<Vec<Payload>, Error> {
        if sa.pending.as_ref().is_some_and(|p| {
            matches!(
                p.kind,
                PendingKind::RekeyIke { .. } | PendingKind::RekeyChild { .. }
            )
        }) {
            // RFC 7296 §2.25: the exchanges collide; the peer retries later.
            return Err(Error::TemporaryFailure("another rekey is in progress"));
        }
        let peer = sa
            .peer
            .clone()
            .ok_or(Error::Missing("established IKE SA without peer"))?;
        let offered = payloads.sa().ok_or(Error::Missing("no SA payload"))?;
        let sent = payloads.ke().map(|(g, _)| g);
        // RFC 7296 §1.3.2: the KE payload's group is taken if acceptable,
        // so a rekey costs no INVALID_KE_PAYLOAD round trip.
        let choice = match sent {
            Some(g) => peer.ike.select_ike_for_ke(offered, g, false),
            None => peer
                .ike
                .select_ike(offered)
                .map(|(suite, _)| KeChoice::AskFor(suite.ke)),
        };
        let (suite, mut echo) = match choice {
            Some(KeChoice::Accept(suite, echo)) => (suite, echo),
            Some(KeChoice::AskFor(group)) => return Err(Error::InvalidKe(group)),
            None => return Err(Error::NoProposalChosen(describe_offer(offered))),
        };
        let their_spi = offered
            .iter()
            .find(|p| p.number == echo.number && p.protocol == ProtocolId::Ike)
            .and_then(|p| spi8(&p.spi))
            .filter(|s| *s != 0)
            .ok_or(Error::Missing("IKE rekey proposal without an 8-byte SPI"))?;
        let (group, public) = payloads.ke().ok_or(Error::InvalidKe(suite.ke))?;
        if group != suite.ke {
            return Err(Error::InvalidKe(suite.ke));
        }
        let nonce_i = payloads.nonce().ok_or(Error::Missing("no Nonce payload"))?;
        if !(16..=256).contains(&nonce_i.len()) {
            return Err(Error::Missing("nonce length"));
        }
        let (ke, ours) = KeyExchange::generate(group, &mut self.rng)?;
        let shared = ke.shared_secret(public)?;
        let new_spi = self.new_ike_spi();
        echo.spi = new_spi.to_be_bytes().to_vec();
        let nonce_r = self.random(NONCE_LEN);
        let keys = IkeKeys::derive_rekey(
            &est.keys, suite, &shared, nonce_i, &nonce_r, their_spi, new_spi, false,
        );
        self.replace_ike_sa(now, sa, est, keys, false, their_spi, new_spi);
        // Until the peer deletes it, the old SA only answers.
        sa.timers = Timers::default();
        sa.timers.set(Timer::Expire, now + SUPERSEDED_LINGER);
        Ok(vec![
            Payload::Sa(vec![echo]),
            Payload::Nonce(nonce_r),
            Payload::Ke { group, data: ours },
        ])
    }

    /// Creates the IKE SA that replaces `sa`, moving its Child SAs.
    #[allow(clippy::too_many_arguments)]
    fn replace_ike_sa(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        keys: IkeKeys,
        initiator: bool,
        spi_i: u64,
        spi_r: u64,
    ) {
        let Some(peer) = sa.peer.clone() else { return };
        let suite = keys.suite;
        let id = if initiator { spi_i } else { spi_r };
        let rekey_at = self.jittered(now, peer.lifetimes.ike, peer.lifetimes.jitter_percent);
        let mut new = IkeSa {
            id: IkeSaId(id),
            initiator,
            spi_i,
            spi_r,
            local: sa.local,
            remote: sa.remote,
            peer: Some(peer.clone()),
            state: State::Established(Established {
                keys,
                children: std::mem::take(&mut est.children),
                rekey_at,
                queue: est
                    .queue
                    .drain(..)
                    .filter(|w| !matches!(w, Work::RekeyIke | Work::Dpd))
                    .collect::<VecDeque<_>>(),
                last_received: now,
                superseded: false,
            }),
            next_request_id: 0,
            expected_request_id: 0,
            last_response: None,
            pending: None,
            timers: Timers::default(),
            queued: None,
            encap: sa.encap,
            remote_behind_nat: sa.remote_behind_nat,
            last_sent: now,
            half_open_key: None,
            fragmentation: sa.fragmentation,
            sig_hashes: sa.sig_hashes,
            reassembly: None,
        };
        est.superseded = true;
        if new.encap {
            new.timers
                .set(Timer::Keepalive, now + self.config.keepalive_interval);
        }
        info!(peer = %peer.name, old = %sa.id, new = %new.id, %suite, "IKE SA rekeyed");
        self.events.push_back(Event::IkeSaRekeyed {
            old: sa.id,
            new: new.id,
            peer: peer.name.clone(),
            suite,
        });
        self.pump(now, &mut new);
        self.store(new);
    }

    // ---- responses to our requests ----------------------------------------

    pub(super) fn on_established_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: Incoming<'_>,
        est: Established,
    ) -> Result<(), Error> {
        let (mut est, payloads) = self.open_established(now, sa, est, msg)?;
        let Some(pending) = sa.pending.take() else {
            sa.state = State::Established(est);
            return Ok(());
        };
        sa.timers.stop(Timer::Retransmit);
        match pending.kind {
            PendingKind::Dpd | PendingKind::Handshake | PendingKind::DeleteIke => {}
            PendingKind::DeleteChildren(spis) => {
                let gone = Self::take_children(est.children.as_mut(), |c| spis.contains(&c.spi_in));
                est.children.retain(|c| !spis.contains(&c.spi_in));
                self.children_gone(sa, &gone);
            }
            PendingKind::RekeyChild {
                old_spi_in,
                new_spi_in,
                nonce_i,
                ke,
            } => {
                self.complete_child_rekey(
                    now, sa, &mut est, &payloads, old_spi_in, new_spi_in, &nonce_i, ke,
                );
            }
            PendingKind::RekeyIke {
                new_spi,
                nonce_i,
                ke,
            } => {
                return self.complete_ike_rekey(now, sa, est, &payloads, new_spi, &nonce_i, ke);
            }
        }
        sa.state = State::Established(est);
        self.pump(now, sa);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn complete_child_rekey(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        payloads: &[Payload],
        old_spi_in: u32,
        new_spi_in: u32,
        nonce_i: &[u8],
        ke: Option<KeyExchange>,
    ) {
        let Some(peer) = sa.peer.clone() else { return };
        let retry_at = self.retry_at(now);
        let retry_later = |est: &mut Established| {
            if let Some(c) = est.children.iter_mut().find(|c| c.spi_in == old_spi_in) {
                c.rekeying = false;
                c.peer_rekey = None;
                c.rekey_at = retry_at;
            }
        };
        if let Some(n) = payloads.notifies().find(|n| n.kind.is_error()) {
            self.child_spis.remove(&new_spi_in);
            if old_spi_in == 0 {
                // A new Child SA (SPI 0 replaces nothing) the facility refused.
                let reason = format!("Child SA refused: {}", Error::RefusedByPeer(n.kind));
                self.refuse(sa.remote, Some(peer.name.clone()), n.kind, reason.clone());
                self.child_failed(sa.id, &peer.name, Some((n.kind, true, reason)));
            } else if n.kind == NotifyType::ChildSaNotFound {
                // The peer no longer has it: forget it here too.
                let gone = Self::take_children(est.children.as_mut(), |c| c.spi_in == old_spi_in);
                est.children.retain(|c| c.spi_in != old_spi_in);
                self.children_gone(sa, &gone);
            } else {
                info!(ike_sa = %sa.id, notify = %n.kind, "Child SA rekey refused; retrying later");
                retry_later(est);
            }
            return;
        }
        let result = (|| {
            let chosen = payloads.sa().ok_or(Error::Missing("no SA payload"))?;
            if chosen.len() != 1 {
                return Err(Error::Misbehaved("more than one proposal chosen".into()));
            }
            let esn = est.children.iter().any(|c| c.spi_in == old_spi_in && c.esn);
            let (suite, spi_out) = peer
                .esp
                .accept_esp(chosen, false, new_spi_in, esn)
                .ok_or_else(|| {
                    Error::Misbehaved("responder chose an ESP proposal we did not offer".into())
                })?;
            let shared = match (suite.ke, &ke) {
                (Some(group), Some(ours)) if ours.group() == group => {
                    let (g, public) = payloads.ke().ok_or(Error::Missing("no KE payload"))?;
                    if g != group {
                        return Err(Error::Misbehaved("KE payload of another group".into()));
                    }
                    Some(ours.shared_secret(public)?)
                }
                (None, _) => None,
                _ => {
                    return Err(Error::Misbehaved(
                        "responder chose a PFS group we did not send".into(),
                    ))
                }
            };
            let nonce_r = payloads
                .nonce()
                .ok_or(Error::Missing("no Nonce payload"))?
                .clone();
            let (tsi, tsr) = accept_narrowed(&peer, payloads)?;
            let keys = derive_child(
                est.keys.suite.prf,
                &est.keys.sk_d,
                &suite,
                shared.as_deref().map(|s| &s[..]),
                nonce_i,
                &nonce_r,
                true,
            );
            Ok((
                ChildSaInfo {
                    spi_in: new_spi_in,
                    spi_out,
                    suite,
                    keys,
                    local_ts: tsi,
                    remote_ts: tsr,
                    remote: sa.remote,
                    encap: sa.encap,
                },
                nonce_r,
            ))
        })();
        let (info, nonce_r) = match result {
            Ok(r) => r,
            Err(e) => {
                self.child_spis.remove(&new_spi_in);
                if old_spi_in == 0 {
                    let reason = format!("Child SA failed: {e}");
                    let n = e.reported_notify();
                    self.refuse(sa.remote, Some(peer.name.clone()), n, reason.clone());
                    self.child_failed(sa.id, &peer.name, Some((n, false, reason)));
                } else {
                    warn!(ike_sa = %sa.id, "Child SA rekey failed: {e}");
                    retry_later(est);
                }
                return;
            }
        };
        let rekey_at = self.jittered(now, peer.lifetimes.child, peer.lifetimes.jitter_percent);
        let old = est.children.iter().position(|c| c.spi_in == old_spi_in);
        let collision = old.and_then(|i| est.children[i].peer_rekey.take());
        est.children.push(ChildSa::new(&info, rekey_at));
        self.child_up(sa.id, &peer.name, info, old.map(|_| old_spi_in), false);
        let Some(i) = old else { return };
        est.children[i].rekeying = false;
        est.children[i].replaced = Some(now);
        match collision {
            Some((their_lowest, _)) if nonce_i.min(&nonce_r[..]) < &their_lowest[..] => {
                // RFC 7296 §2.8.1: ours holds the lowest nonce, so we delete
                // it; the peer's replaces the old one, which the peer deletes.
                info!(ike_sa = %sa.id, "simultaneous Child SA rekey: deleting our redundant Child SA");
                if let Some(c) = est.children.iter_mut().find(|c| c.spi_in == new_spi_in) {
                    c.replaced = Some(now);
                }
                queue(est, Work::DeleteChildren(vec![new_spi_in]));
            }
            Some((_, their_new)) => {
                // The peer deletes the one it made; ours replaces the old.
                info!(ike_sa = %sa.id, "simultaneous Child SA rekey: the facility deletes its redundant Child SA");
                if let Some(c) = est.children.iter_mut().find(|c| c.spi_in == their_new) {
                    c.replaced = Some(now);
                }
                queue(est, Work::DeleteChildren(vec![old_spi_in]));
            }
            None => queue(est, Work::DeleteChildren(vec![old_spi_in])),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn complete_ike_rekey(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        mut est: Established,
        payloads: &[Payload],
        new_spi: u64,
        nonce_i: &[u8],
        ke: KeyExchange,
    ) -> Result<(), Error> {
        let Some(peer) = sa.peer.clone() else {
            sa.state = State::Established(est);
            return Ok(());
        };
        let result = (|| {
            if let Some(n) = payloads.notifies().find(|n| n.kind.is_error()) {
                return Err(Error::Misbehaved(format!("facility answered {}", n.kind)));
            }
            let chosen = payloads.sa().ok_or(Error::Missing("no SA payload"))?;
            if chosen.len() != 1 {
                return Err(Error::Misbehaved("more than one proposal chosen".into()));
            }
            let (suite, _) = peer.ike.select_ike(chosen).ok_or_else(|| {
                Error::Misbehaved("responder chose an IKE proposal we did not offer".into())
            })?;
            let their_spi = spi8(&chosen[0].spi)
                .filter(|s| *s != 0)
                .ok_or(Error::Missing("no responder SPI"))?;
            let (group, public) = payloads.ke().ok_or(Error::Missing("no KE payload"))?;
            if group != suite.ke || group != ke.group() {
                return Err(Error::Misbehaved(
                    "KE payload does not match the chosen group".into(),
                ));
            }
            let nonce_r = payloads.nonce().ok_or(Error::Missing("no Nonce payload"))?;
            let shared = ke.shared_secret(public)?;
            Ok(IkeKeys::derive_rekey(
                &est.keys, suite, &shared, nonce_i, nonce_r, new_spi, their_spi, true,
            ))
            .map(|k| (k, their_spi))
        })();
        let (keys, their_spi) = match result {
            Ok(r) => r,
            Err(e) => {
                info!(ike_sa = %sa.id, "IKE SA rekey not done ({e}); retrying later");
                est.rekey_at = self.retry_at(now);
                sa.state = State::Established(est);
                self.pump(now, sa);
                return Ok(());
            }
        };
        self.replace_ike_sa(now, sa, &mut est, keys, true, new_spi, their_spi);
        // We made the new SA, so we delete the old one (RFC 7296 §1.3.2).
        let delete = [Payload::Delete(Delete {
            protocol: ProtocolId::Ike,
            spi_size: 0,
            spis: vec![],
        })];
        sa.timers = Timers::default();
        let sent = self.send_request(
            now,
            sa,
            &est.keys,
            ExchangeType::Informational,
            &delete,
            PendingKind::DeleteIke,
        );
        sa.state = State::Closing(est);
        sent
    }
}
