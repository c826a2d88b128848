//! IKE_AUTH (RFC 7296 §1.2): the second exchange, under SK, that
//! authenticates both sides ([`super::auth`]: PSK §2.15, signatures RFC
//! 7427) and makes the first Child SA. A Child SA that cannot be made does
//! not fail the IKE SA (§1.2: it is reported as `ChildSaFailed`).

use super::create_child_sa::{accept_narrowed, narrow_to_peer};
use super::sa::{AuthSent, ChildSa, Established, IkeSa, InitDone, State, Timer, Timers, LINGER};
use super::{auth, first_error_notify, refusal, Endpoint, Event, Message};
use crate::config::PeerConfig;
use crate::error::Error;
use crate::keys::{derive_child, IkeKeys};
use crate::proposal::describe_offer;
use crate::wire::{ExchangeType, HeaderRepr, Notify, NotifyType, Payload, PayloadsExt, Proposal};
use crate::ChildSaInfo;
use pki::Identity;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tracing::info;

impl Endpoint {
    pub(super) fn respond_auth(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: &Message<'_>,
        init: InitDone,
    ) -> Result<(), Error> {
        let Message {
            remote,
            local,
            hdr,
            ref payloads,
            ..
        } = *msg;
        // An authenticated message: follow the peer's address (RFC 7296 §2.23).
        sa.remote = remote;
        sa.local = local;
        self.forget_half_open(sa);
        match self.authenticate_initiator(now, payloads, &init) {
            Ok(peer) => {
                if !peer.ke_upgrade || !peer.ike.allows_compliant_ke() {
                    self.keep_ke.update(&peer, Some(remote.ip()));
                }
                sa.peer = Some(peer.clone());
                self.complete_responder_auth(now, sa, hdr, payloads, init, peer)
            }
            Err((e, peer_name)) => {
                self.refuse(remote, peer_name, Self::auth_notify(&e), e.to_string());
                self.reject_auth(now, sa, &init.keys, hdr.message_id, &e)
            }
        }
    }

    /// Answers a refused IKE_AUTH request with the Notify its error maps
    /// to ([`refusal`]); the SA then only lingers to repeat that answer to
    /// retransmissions.
    pub(super) fn reject_auth(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        keys: &IkeKeys,
        message_id: u32,
        e: &Error,
    ) -> Result<(), Error> {
        let reply: Vec<Payload> = refusal(ExchangeType::IkeAuth, e)
            .map(Payload::Notify)
            .into_iter()
            .collect();
        let sent = self.send_response(now, sa, keys, ExchangeType::IkeAuth, message_id, &reply);
        sa.state = State::Dead;
        sa.timers = Timers::default();
        sa.timers.set(Timer::Expire, now + LINGER);
        sent
    }

    /// The Notify a refused IKE_AUTH request gets ([`refusal`]).
    pub(super) fn auth_notify(e: &Error) -> NotifyType {
        refusal(ExchangeType::IkeAuth, e).map_or(NotifyType::AuthenticationFailed, |n| n.kind)
    }

    pub(super) fn authenticate_initiator(
        &self,
        now: Instant,
        payloads: &[Payload],
        init: &InitDone,
    ) -> Result<Arc<PeerConfig>, (Error, Option<String>)> {
        let (id_type, id_reserved, id_data) = payloads
            .id_i()
            .ok_or((Error::Missing("no IDi payload"), None))?;
        let identity = Identity::from_wire(id_type, id_data)
            .map_err(|e| (Error::AuthenticationFailed(format!("identity: {e}")), None))?;
        let peer = self
            .by_id
            .get(&identity)
            .and_then(|name| self.peers.get(name))
            .cloned()
            .ok_or_else(|| match self.disabled.get(&identity) {
                Some(name) => (
                    Error::AuthenticationFailed(format!(
                        "facility {name} ({identity}) is disabled"
                    )),
                    Some(name.clone()),
                ),
                None => (
                    Error::AuthenticationFailed(format!("no facility has identity {identity}")),
                    None,
                ),
            })?;
        let name = Some(peer.name.clone());
        let suite = init.keys.suite;
        if !peer.ike.accepts_ike(&suite) {
            return Err((
                Error::AuthenticationFailed(format!(
                    "IKE suite {suite} is not allowed for {}",
                    peer.name
                )),
                name,
            ));
        }
        auth::verify(
            &peer.auth,
            self.config.trust.as_deref(),
            self.unix_now(now),
            &identity,
            payloads,
            &auth::AuthInput {
                prf: suite.prf,
                message: &init.message1,
                nonce: &init.nonce_r,
                sk_p: &init.keys.sk_pi,
                // RFC 7296 §2.15: the peer's IDi as it was sent.
                id_type,
                id_reserved,
                id_data,
            },
        )
        .map_err(|e| (e, name))?;
        Ok(peer)
    }

    pub(super) fn complete_responder_auth(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        hdr: &HeaderRepr,
        payloads: &[Payload],
        init: InitDone,
        peer: Arc<PeerConfig>,
    ) -> Result<(), Error> {
        let local_id = &self.config.local_id;
        let proof = auth::make(
            &peer.auth,
            auth::pick_credentials(&self.config, payloads),
            sa.sig_hashes,
            &auth::AuthInput {
                prf: init.keys.suite.prf,
                message: &init.message2,
                nonce: &init.nonce_i,
                sk_p: &init.keys.sk_pr,
                id_type: local_id.id_type(),
                id_reserved: [0; 3],
                id_data: &local_id.data(),
            },
        );
        let proof = match proof {
            Ok(p) => p,
            Err(e) => {
                // auth::make fails only with AuthenticationFailed.
                let n = Self::auth_notify(&e);
                self.refuse(sa.remote, Some(peer.name.clone()), n, e.to_string());
                return self.reject_auth(now, sa, &init.keys, hdr.message_id, &e);
            }
        };
        let mut reply = vec![Payload::IdR {
            id_type: local_id.id_type(),
            reserved: [0; 3],
            data: local_id.data(),
        }];
        reply.extend(proof);
        let child = self.negotiate_first_child(sa, payloads, &init, &peer);
        let mut installed = None;
        let mut failed = None;
        match child {
            Ok((info, echo)) => {
                reply.push(Payload::Sa(vec![echo]));
                reply.push(Payload::TsI(info.remote_ts.clone()));
                reply.push(Payload::TsR(info.local_ts.clone()));
                installed = Some(info);
            }
            Err(e) => {
                let n = e.reported_notify();
                let reason = format!("first Child SA refused: {e}");
                self.refuse(sa.remote, Some(peer.name.clone()), n, reason.clone());
                reply.push(Payload::Notify(Notify::new(n, vec![])));
                failed = Some((n, false, reason));
            }
        }
        self.send_response(
            now,
            sa,
            &init.keys,
            ExchangeType::IkeAuth,
            hdr.message_id,
            &reply,
        )?;
        sa.timers.stop(Timer::Expire);
        self.established(now, sa, &peer, init.keys, installed);
        self.child_failed(sa.id, &peer.name, failed);
        Ok(())
    }

    pub(super) fn negotiate_first_child(
        &mut self,
        sa: &IkeSa,
        payloads: &[Payload],
        init: &InitDone,
        peer: &PeerConfig,
    ) -> Result<(ChildSaInfo, Proposal), Error> {
        if self.config.force_encap && self.config.nat_traversal && !sa.encap {
            return Err(Error::NotPossible(super::nat::NO_NAT_TRAVERSAL.into()));
        }
        let offered = payloads
            .sa()
            .ok_or(Error::Missing("no SA payload for the Child SA"))?;
        let tsi = payloads.ts_i().ok_or(Error::Missing("no TSi"))?;
        let tsr = payloads.ts_r().ok_or(Error::Missing("no TSr"))?;
        let spi_in = self.new_child_spi();
        let Some((suite, spi_out, echo)) = peer.esp.select_esp(offered, true, None, spi_in) else {
            self.child_spis.remove(&spi_in);
            return Err(Error::NoProposalChosen(describe_offer(offered)));
        };
        let (remote_ts, local_ts) = match narrow_to_peer(peer, tsi, tsr) {
            Ok(r) => r,
            Err(e) => {
                self.child_spis.remove(&spi_in);
                return Err(e);
            }
        };
        let keys = derive_child(
            init.keys.suite.prf,
            &init.keys.sk_d,
            &suite,
            None,
            &init.nonce_i,
            &init.nonce_r,
            false,
        );
        Ok((
            ChildSaInfo {
                spi_in,
                spi_out,
                suite,
                keys,
                local_ts,
                remote_ts,
                remote: sa.remote,
                encap: sa.encap,
            },
            echo,
        ))
    }

    pub(super) fn on_auth_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: &Message<'_>,
        auth: AuthSent,
    ) -> Result<(), Error> {
        let payloads = &msg.payloads;
        let peer = sa
            .peer
            .clone()
            .ok_or(Error::Missing("initiator without peer"))?;
        sa.pending = None;
        sa.timers.stop(Timer::Retransmit);
        let has_auth = payloads.iter().any(|p| matches!(p, Payload::Auth { .. }));
        if let (false, Some(n)) = (has_auth, first_error_notify(payloads)) {
            self.child_spis.remove(&auth.child_spi);
            self.refuse(
                sa.remote,
                Some(peer.name.clone()),
                n.kind,
                format!("facility answered IKE_AUTH with {}", n.kind),
            );
            self.fail(sa, format!("facility refused IKE_AUTH: {}", n.kind));
            return Ok(());
        }
        let verified = (|| {
            let (id_type, id_reserved, id_data) =
                payloads.id_r().ok_or(Error::Missing("no IDr"))?;
            let identity = Identity::from_wire(id_type, id_data)
                .map_err(|e| Error::AuthenticationFailed(e.to_string()))?;
            if identity != peer.remote_id {
                return Err(Error::AuthenticationFailed(format!(
                    "facility identified as {identity}, expected {}",
                    peer.remote_id
                )));
            }
            let now_unix = self.unix_now(now);
            auth::verify(
                &peer.auth,
                self.config.trust.as_deref(),
                now_unix,
                &identity,
                payloads,
                &auth::AuthInput {
                    prf: auth.keys.suite.prf,
                    message: &auth.message2,
                    nonce: &auth.nonce_i,
                    sk_p: &auth.keys.sk_pr,
                    // RFC 7296 §2.15: the peer's IDr as it was sent.
                    id_type,
                    id_reserved,
                    id_data,
                },
            )?;
            Ok(())
        })();
        if let Err(e) = verified {
            self.child_spis.remove(&auth.child_spi);
            self.refuse(
                sa.remote,
                Some(peer.name.clone()),
                NotifyType::AuthenticationFailed,
                e.to_string(),
            );
            self.fail(sa, e.to_string());
            return Ok(());
        }
        let mut installed = None;
        let mut failed = None;
        match self.accept_first_child(sa, payloads, &auth, &peer) {
            Ok(info) => installed = Some(info),
            Err(e) => {
                self.child_spis.remove(&auth.child_spi);
                let n = e.reported_notify();
                let reason = format!("first Child SA failed: {e}");
                self.refuse(sa.remote, Some(peer.name.clone()), n, reason.clone());
                failed = Some((n, matches!(e, Error::RefusedByPeer(_)), reason));
            }
        }
        sa.expected_request_id = 0;
        self.established(now, sa, &peer, auth.keys, installed);
        self.child_failed(sa.id, &peer.name, failed);
        Ok(())
    }

    pub(super) fn accept_first_child(
        &mut self,
        sa: &IkeSa,
        payloads: &[Payload],
        auth: &AuthSent,
        peer: &PeerConfig,
    ) -> Result<ChildSaInfo, Error> {
        if let Some(n) = first_error_notify(payloads) {
            return Err(Error::RefusedByPeer(n.kind));
        }
        let chosen = payloads.sa().ok_or(Error::Missing("no SA payload"))?;
        if chosen.len() != 1 {
            return Err(Error::Misbehaved(
                "responder chose more than one proposal".into(),
            ));
        }
        let (suite, spi_out) = peer
            .esp
            .accept_esp(chosen, true, auth.child_spi, false)
            .ok_or_else(|| {
                Error::Misbehaved("responder chose an ESP proposal we did not offer".into())
            })?;
        let (tsi, tsr) = accept_narrowed(peer, payloads)?;
        let keys = derive_child(
            auth.keys.suite.prf,
            &auth.keys.sk_d,
            &suite,
            None,
            &auth.nonce_i,
            &auth.nonce_r,
            true,
        );
        Ok(ChildSaInfo {
            spi_in: auth.child_spi,
            spi_out,
            suite,
            keys,
            local_ts: tsi,
            remote_ts: tsr,
            remote: sa.remote,
            encap: sa.encap,
        })
    }

    /// Common completion of IKE_AUTH: events, keepalives, and one IKE SA per
    /// facility (an older one is replaced).
    pub(super) fn established(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        peer: &PeerConfig,
        keys: IkeKeys,
        child: Option<ChildSaInfo>,
    ) {
        let suite = keys.suite;
        let lifetimes = peer.lifetimes;
        let mut est = Established {
            keys,
            children: Vec::new(),
            rekey_at: self.jittered(now, lifetimes.ike, lifetimes.jitter_percent),
            queue: VecDeque::new(),
            last_received: now,
            superseded: false,
            redirected_at: None,
        };
        if let Some(c) = &child {
            let rekey_at = self.jittered(now, lifetimes.child, lifetimes.jitter_percent);
            est.children.push(ChildSa::new(c, rekey_at));
        }
        sa.state = State::Established(est);
        info!(peer = %peer.name, ike_sa = %sa.id, remote = %sa.remote, %suite, initiator = sa.initiator, "IKE SA established");
        self.events.push_back(Event::IkeSaUp {
            ike_sa: sa.id,
            peer: peer.name.clone(),
            remote: sa.remote,
            suite,
            initiator: sa.initiator,
            remote_behind_nat: sa.remote_behind_nat,
        });
        if let Some(child) = child {
            self.child_up(sa.id, &peer.name, child, None, !sa.initiator);
        }
        // One IKE SA per facility: a reconnecting facility replaces its old
        // SAs, reported down only after the new Child SA is up.
        for old in self.sas_of(&peer.name) {
            if old != sa.id {
                info!(peer = %peer.name, old = %old, new = %sa.id, "replacing older IKE SA of the facility");
                if let Some(mut o) = self.sas.remove(&old.0) {
                    self.fail(
                        &mut o,
                        "replaced by a new IKE SA of the same facility".into(),
                    );
                    self.put_back(o);
                }
            }
        }
        if sa.encap {
            sa.timers
                .set(Timer::Keepalive, now + self.config.keepalive_interval);
        }
        self.arm(sa);
    }
}
