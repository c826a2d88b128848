//! INFORMATIONAL (RFC 7296 §1.4): deleting Child SAs and the IKE SA
//! (Delete payloads, §3.11), both as requester and as responder. An empty
//! INFORMATIONAL is a liveness check ([`super::liveness`]).

use super::sa::{
    spi_pairs, Established, IkeSa, PendingKind, State, Timer, Timers, LINGER, REDIRECT_GRACE,
};
use super::{Endpoint, Event, Message};
use crate::error::Error;
use crate::wire::{Delete, ExchangeType, GatewayIdentity, Payload, ProtocolId, Redirect};
use std::time::Instant;
use tracing::{debug, info};

impl Endpoint {
    pub(super) fn respond_informational(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: &Message<'_>,
        mut est: Established,
    ) -> Result<(), Error> {
        let hdr = msg.hdr;
        self.heard_from(now, sa, &mut est, msg);
        let payloads = &msg.payloads;
        let mut delete_ike = false;
        let mut ours = Vec::new();
        let mut gone = Vec::new();
        for p in payloads {
            let Payload::Delete(d) = p else { continue };
            match d.protocol {
                ProtocolId::Ike => delete_ike = true,
                ProtocolId::Esp => {
                    for spi in &d.spis {
                        let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                            continue;
                        };
                        let spi_out = u32::from_be_bytes(b);
                        if let Some(i) = est.children.iter().position(|c| c.spi_out == spi_out) {
                            let c = est.children.remove(i);
                            ours.push(c.spi_in.to_be_bytes().to_vec());
                            gone.push((c.spi_in, c.spi_out));
                        }
                    }
                }
                _ => {}
            }
        }
        let peer = sa.peer_name().unwrap_or_default();
        if delete_ike {
            self.send_response(
                now,
                sa,
                &est.keys,
                ExchangeType::Informational,
                hdr.message_id,
                &[],
            )?;
            self.children_gone(sa, &spi_pairs(&est.children));
            if est.superseded {
                debug!(%peer, ike_sa = %sa.id, "rekeyed IKE SA deleted by the facility");
            } else {
                info!(%peer, ike_sa = %sa.id, "IKE SA deleted by the facility");
                self.events.push_back(Event::IkeSaDown {
                    ike_sa: sa.id,
                    peer: sa.peer_name(),
                    reason: "deleted by the facility".into(),
                });
            }
            sa.state = State::Dead;
            sa.timers = Timers::default();
            sa.timers.set(Timer::Expire, now + LINGER);
            return Ok(());
        }
        let reply: Vec<Payload> = if ours.is_empty() {
            Vec::new()
        } else {
            vec![Payload::Delete(Delete {
                protocol: ProtocolId::Esp,
                spi_size: 4,
                spis: ours,
            })]
        };
        let result = self.send_response(
            now,
            sa,
            &est.keys,
            ExchangeType::Informational,
            hdr.message_id,
            &reply,
        );
        for (spi_in, _) in &gone {
            info!(%peer, spi_in = format_args!("{spi_in:08x}"), "Child SA deleted by the facility");
        }
        self.children_gone(sa, &gone);
        sa.state = State::Established(est);
        self.arm(sa);
        result
    }

    /// Our Delete of the IKE SA was answered: it is gone.
    pub(super) fn on_delete_ike_response(&mut self, sa: &mut IkeSa) {
        sa.pending = None;
        sa.state = State::Gone;
    }

    /// Asks the facility to delete Child SAs (those still there).
    pub(super) fn start_delete_children(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        spis: Vec<u32>,
    ) -> Result<bool, Error> {
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
        Ok(true)
    }

    /// Sends the facility to another gateway: `HDR, SK {N(REDIRECT,
    /// New_GW_ID)}`, without Nonce Data (RFC 5685 §5).
    pub(super) fn start_redirect(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        gateway: GatewayIdentity,
    ) -> Result<bool, Error> {
        if est.redirected_at.is_some() || est.superseded {
            return Ok(false);
        }
        let notify = Redirect {
            gateway: gateway.clone(),
            nonce: Vec::new(),
        }
        .to_notify()?;
        info!(peer = sa.peer_name().as_deref().unwrap_or("-"), ike_sa = %sa.id, %gateway, "redirecting the facility");
        self.send_request(
            now,
            sa,
            &est.keys,
            ExchangeType::Informational,
            &[Payload::Notify(notify)],
            PendingKind::Redirect(gateway),
        )?;
        Ok(true)
    }

    /// The facility acknowledged the REDIRECT (an empty response, RFC 5685
    /// §5). It should now set its SAs up with the other gateway and delete
    /// this IKE SA; if it has not after [`REDIRECT_GRACE`], the hub does
    /// (the gateway "MAY also decide to delete the security associations
    /// without any signaling from the client", after sufficient time).
    pub(super) fn on_redirect_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        est: &mut Established,
        gateway: GatewayIdentity,
    ) {
        est.redirected_at = Some(now);
        sa.timers.set(Timer::Expire, now + REDIRECT_GRACE);
        let peer = sa.peer_name().unwrap_or_default();
        info!(%peer, ike_sa = %sa.id, %gateway, "the facility acknowledged the REDIRECT");
        self.events.push_back(Event::Redirected {
            ike_sa: sa.id,
            peer,
            gateway,
        });
    }

    /// The facility answered our Delete of Child SAs: they are gone.
    pub(super) fn on_delete_children_response(
        &mut self,
        sa: &IkeSa,
        est: &mut Established,
        spis: &[u32],
    ) {
        let gone = Self::take_children(est.children.as_mut(), |c| spis.contains(&c.spi_in));
        est.children.retain(|c| !spis.contains(&c.spi_in));
        self.children_gone(sa, &gone);
    }
}
