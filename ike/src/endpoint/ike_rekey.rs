//! Rekeying the IKE SA with CREATE_CHILD_SA (RFC 7296 §1.3.2): as
//! requester (we make the new IKE SA, so we delete the old one) and as
//! responder (the Child SAs move to the new IKE SA; the old one waits for
//! the facility to delete it), with collisions refused as §2.25 says.
//!
//! ```text
//! Rekey timer ─▶ Work::RekeyIke ─▶ start_ike_rekey ─▶ … ─▶ complete_ike_rekey ─▶ replace_ike_sa ─▶ Delete old
//! facility's request ─▶ respond_ike_rekey ─▶ replace_ike_sa ─▶ old superseded, waits for its Delete
//! ```

use super::sa::{Established, IkeSa, PendingKind, State, Timer, Timers, Work};
use super::{Endpoint, Event, IkeSaId, NONCE_LEN};
use crate::config::PeerConfig;
use crate::crypto::KeyExchange;
use crate::error::Error;
use crate::keys::IkeKeys;
use crate::proposal::{describe_offer, KeChoice};
use crate::wire::{Delete, ExchangeType, Payload, PayloadsExt, ProtocolId};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// A superseded IKE SA the peer does not delete is dropped after this.
pub(super) const SUPERSEDED_LINGER: Duration = Duration::from_secs(60);

pub(super) fn spi8(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

impl Endpoint {
    /// Requests the rekey of the IKE SA (RFC 7296 §1.3.2).
    pub(super) fn start_ike_rekey(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &Established,
        peer: &PeerConfig,
    ) -> Result<bool, Error> {
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
        Ok(true)
    }

    /// The peer rekeys the IKE SA: answer on this SA, move every Child SA to
    /// the new one, and wait for the peer to delete this one.
    pub(super) fn respond_ike_rekey(
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
    pub(super) fn replace_ike_sa(
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
                redirected_at: None,
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
            redirect_supported: sa.redirect_supported,
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn complete_ike_rekey(
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
