//! CREATE_CHILD_SA for Child SAs (RFC 7296 §1.3): additional Child SAs
//! (§1.3.1) and rekeyed ones (§1.3.3, §2.8), as requester and as
//! responder, with simultaneous rekeys settled as §2.8.1 says; the traffic
//! selectors both sides agree on (§2.9); and the Child SA events. Which
//! CREATE_CHILD_SA a request is goes by its SA payload: one for the IKE SA
//! goes to [`super::ike_rekey`].
//!
//! ```text
//! timer Rekey ─▶ queue RekeyChild / RekeyIke ─┐
//! operator    ─▶ queue NewChild ──────────────┼─▶ pump (retransmit.rs): one request in flight
//! rekey done  ─▶ queue DeleteChildren(old) ───┘     ─▶ on_established_response ─▶ complete_*
//! ```
//!
//! Make-before-break: a rekeyed Child SA is reported up (and installed)
//! before the old one is deleted; the old one is reported down only when
//! its deletion completes.

use super::retransmit::queue;
use super::sa::{
    ChildSa, ChildState, Established, IkeSa, PendingKind, State, Work, REPLACED_GRACE,
};
use super::{refusal, ChildSaInfo, Endpoint, Event, IkeSaId, Message, NONCE_LEN};
use crate::config::PeerConfig;
use crate::crypto::KeyExchange;
use crate::error::Error;
use crate::keys::derive_child;
use crate::proposal::describe_offer;
use crate::ts::{all_within, describe, narrow};
use crate::wire::{
    ExchangeType, Notify, NotifyType, Payload, PayloadsExt, ProtocolId, TrafficSelector,
};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// After a refused or failed rekey, try again between one and two times
/// this much later (random, so that two colliding ends drift apart).
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(10);

pub(super) fn spi4(b: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(b).ok().map(u32::from_be_bytes)
}

/// As responder: the facility's proposed selectors narrowed to its
/// configuration (RFC 7296 §2.9), as (its side, the hub's side).
pub(super) fn narrow_to_peer(
    peer: &PeerConfig,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), Error> {
    let remote_allowed: Vec<TrafficSelector> =
        peer.remote_ts.iter().map(|s| s.to_selector()).collect();
    let local_allowed: Vec<TrafficSelector> =
        peer.local_ts.iter().map(|s| s.to_selector()).collect();
    let remote_ts = narrow(tsi, &remote_allowed);
    let local_ts = narrow(tsr, &local_allowed);
    if remote_ts.is_empty() || local_ts.is_empty() {
        return Err(Error::TsUnacceptable(format!(
            "facility proposed TSi {} TSr {}; configured {} === {}",
            describe(tsi),
            describe(tsr),
            describe(&remote_allowed),
            describe(&local_allowed)
        )));
    }
    Ok((remote_ts, local_ts))
}

/// As initiator: the responder's selectors, which may only narrow what we
/// proposed, as (our side, the facility's side).
pub(super) fn accept_narrowed(
    peer: &PeerConfig,
    payloads: &[Payload],
) -> Result<(Vec<TrafficSelector>, Vec<TrafficSelector>), Error> {
    let tsi = payloads.ts_i().cloned().ok_or(Error::Missing("no TSi"))?;
    let tsr = payloads.ts_r().cloned().ok_or(Error::Missing("no TSr"))?;
    let local_allowed: Vec<TrafficSelector> =
        peer.local_ts.iter().map(|s| s.to_selector()).collect();
    let remote_allowed: Vec<TrafficSelector> =
        peer.remote_ts.iter().map(|s| s.to_selector()).collect();
    if tsi.is_empty()
        || tsr.is_empty()
        || !all_within(&tsi, &local_allowed)
        || !all_within(&tsr, &remote_allowed)
    {
        return Err(Error::TsUnacceptable(
            "responder widened the traffic selectors".into(),
        ));
    }
    Ok((tsi, tsr))
}

impl Endpoint {
    /// The SPI pairs of the Child SAs matching `f`.
    pub(super) fn take_children(
        children: &mut [ChildSa],
        f: impl Fn(&ChildSa) -> bool,
    ) -> Vec<(u32, u32)> {
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

    pub(super) fn report_children_down(&mut self, sa: &IkeSa, children: &[(u32, u32)]) {
        let peer = sa.peer_name().unwrap_or_default();
        for (spi_in, spi_out) in children {
            self.events.push_back(Event::ChildSaDown {
                ike_sa: sa.id,
                peer: peer.clone(),
                spi_in: *spi_in,
                spi_out: *spi_out,
            });
        }
    }

    /// Reports a new Child SA for installation.
    pub(super) fn child_up(
        &mut self,
        ike_sa: IkeSaId,
        peer: &str,
        child: ChildSaInfo,
        rekey_of: Option<u32>,
        answered: bool,
    ) {
        info!(
            %peer,
            spi_in = format_args!("{:08x}", child.spi_in),
            spi_out = format_args!("{:08x}", child.spi_out),
            suite = %child.suite,
            local_ts = %describe(&child.local_ts),
            remote_ts = %describe(&child.remote_ts),
            rekey_of = ?rekey_of.map(|s| format!("{s:08x}")),
            "Child SA established"
        );
        self.events.push_back(Event::ChildSaUp {
            ike_sa,
            peer: peer.to_string(),
            child,
            rekey_of,
            answered,
        });
    }

    /// Reports a Child SA that could not be made under a live IKE SA.
    pub(super) fn child_failed(
        &mut self,
        ike_sa: IkeSaId,
        peer: &str,
        failed: Option<(NotifyType, bool, String)>,
    ) {
        if let Some((notify, by_peer, reason)) = failed {
            self.events.push_back(Event::ChildSaFailed {
                ike_sa,
                peer: peer.to_string(),
                notify,
                by_peer,
                reason,
            });
        }
    }

    pub(super) fn retry_at(&mut self, now: Instant) -> Instant {
        self.jittered(now, RETRY_AFTER * 2, 50)
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
                .filter(
                    |c| matches!(c.state, ChildState::Installed { rekey_at } if rekey_at <= now),
                )
                .map(|c| {
                    c.state = ChildState::Rekeying;
                    c.spi_in
                })
                .collect();
            for spi in due {
                queue(est, Work::RekeyChild(spi));
            }
            let overdue: Vec<u32> = est
                .children
                .iter_mut()
                .filter(|c| matches!(c.state, ChildState::Replaced { at } if at + REPLACED_GRACE <= now))
                .map(|c| {
                    // Asked again after another grace period if this fails.
                    c.state = ChildState::Replaced { at: now };
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

    /// Requests a new Child SA (RFC 7296 §1.3.1) or the rekey of `old`
    /// (§1.3.3); false if `old` went away meanwhile.
    pub(super) fn start_create_child(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        peer: &PeerConfig,
        old: Option<u32>,
    ) -> Result<bool, Error> {
        // A rekey keeps the Child SA's selectors; a new Child SA asks
        // for the facility's configured ones.
        let (old, local_ts, remote_ts, esn) = match old {
            Some(old) => {
                let Some(child) = est
                    .children
                    .iter()
                    .find(|c| c.spi_in == old && !c.is_replaced())
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
            None => (
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
        Ok(true)
    }

    // ---- CREATE_CHILD_SA as responder -----------------------------------

    pub(super) fn respond_create_child(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: &Message<'_>,
        mut est: Established,
    ) -> Result<(), Error> {
        let hdr = msg.hdr;
        self.heard_from(now, sa, &mut est, msg);
        let payloads = &msg.payloads;
        let rekeys_ike = payloads
            .sa()
            .and_then(|v| v.first())
            .is_some_and(|p| p.protocol == ProtocolId::Ike);
        let result = if est.superseded {
            Err(Error::TemporaryFailure("IKE SA is being replaced"))
        } else if rekeys_ike {
            self.respond_ike_rekey(now, sa, &mut est, payloads)
        } else {
            self.respond_child(now, sa, &mut est, payloads)
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
                refusal(ExchangeType::CreateChildSa, &e)
                    .map(Payload::Notify)
                    .into_iter()
                    .collect()
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
    pub(super) fn respond_child(
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
            old.state = if old.is_rekeying() {
                // We are rekeying it too (RFC 7296 §2.8.1): settle it when
                // our own exchange completes.
                ChildState::Colliding {
                    lowest_nonce: nonce_i.clone().min(nonce_r),
                    theirs: new_spi_in,
                }
            } else {
                // The peer deletes the old one once this one is up.
                ChildState::Replaced { at: now }
            };
        }
        let lifetimes = peer.lifetimes;
        let rekey_at = self.jittered(now, lifetimes.child, lifetimes.jitter_percent);
        est.children.push(ChildSa::new(&info, rekey_at));
        self.child_up(sa.id, &peer.name, info, rekey_of, true);
        Ok(reply)
    }

    // ---- responses to our requests ----------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub(super) fn complete_child_rekey(
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
            if let Some(c) = est
                .children
                .iter_mut()
                .find(|c| c.spi_in == old_spi_in && !c.is_replaced())
            {
                c.state = ChildState::Installed { rekey_at: retry_at };
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
        est.children.push(ChildSa::new(&info, rekey_at));
        self.child_up(sa.id, &peer.name, info, old.map(|_| old_spi_in), false);
        let Some(i) = old else { return };
        let collision =
            match std::mem::replace(&mut est.children[i].state, ChildState::Replaced { at: now }) {
                ChildState::Colliding {
                    lowest_nonce,
                    theirs,
                } => Some((lowest_nonce, theirs)),
                _ => None,
            };
        match collision {
            Some((their_lowest, _)) if nonce_i.min(&nonce_r[..]) < &their_lowest[..] => {
                // RFC 7296 §2.8.1: ours holds the lowest nonce, so we delete
                // it; the peer's replaces the old one, which the peer deletes.
                info!(ike_sa = %sa.id, "simultaneous Child SA rekey: deleting our redundant Child SA");
                if let Some(c) = est.children.iter_mut().find(|c| c.spi_in == new_spi_in) {
                    c.state = ChildState::Replaced { at: now };
                }
                queue(est, Work::DeleteChildren(vec![new_spi_in]));
            }
            Some((_, their_new)) => {
                // The peer deletes the one it made; ours replaces the old.
                info!(ike_sa = %sa.id, "simultaneous Child SA rekey: the facility deletes its redundant Child SA");
                if let Some(c) = est.children.iter_mut().find(|c| c.spi_in == their_new) {
                    c.state = ChildState::Replaced { at: now };
                }
                queue(est, Work::DeleteChildren(vec![old_spi_in]));
            }
            None => queue(est, Work::DeleteChildren(vec![old_spi_in])),
        }
    }
}
