//! IKE_SA_INIT (RFC 7296 §1.2): the first exchange, unprotected, that
//! agrees on the IKE SA's suite and keys. As initiator: the request, and a
//! retry with a cookie (§2.6) or with the group the responder asked for
//! (INVALID_KE_PAYLOAD, §1.2). As responder: the answer, after the
//! defences of [`super::cookie`], preferring key exchange methods that
//! stay compliant after 2030 unless the facility keeps its own
//! ([`KeepKe`]).

use super::sa::{AuthSent, IkeSa, InitDone, InitSent, PendingKind, State, Timer, Timers};
use super::{auth, first_error_notify, Endpoint, IkeSaId, Incoming, Message, NewIkeSas, NONCE_LEN};
use crate::config::{PeerAuth, PeerConfig};
use crate::crypto::KeyExchange;
use crate::error::Error;
use crate::keys::IkeKeys;
use crate::proposal::{describe_offer, KeChoice};
use crate::wire::{
    parse_chain, ExchangeType, Flags, GatewayIdentity, KeId, Notify, NotifyType, Payload,
    PayloadsExt, Redirect, WireError, HEADER_LEN,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tracing::{debug, info};

/// The addresses of facilities whose [`PeerConfig::ke_upgrade`] is off:
/// their configured address and the one they last authenticated from. A
/// facility is known only by its address at IKE_SA_INIT (IDi comes in
/// IKE_AUTH), so this is how its setting reaches the responder's choice.
#[derive(Debug, Default)]
pub(super) struct KeepKe {
    /// Facility name → (configured address, last authenticated address).
    pub(super) by_peer: HashMap<String, (Option<IpAddr>, Option<IpAddr>)>,
    /// Address → how many of the above name it.
    pub(super) by_ip: HashMap<IpAddr, usize>,
}

impl KeepKe {
    /// Follows a facility's configuration; `seen` is an address it just
    /// authenticated from. A facility whose own proposals allow no group
    /// compliant after 2030 is kept too: asking it for one would only fail
    /// its IKE_AUTH.
    pub(super) fn update(&mut self, peer: &PeerConfig, seen: Option<IpAddr>) {
        let last = self.by_peer.get(&peer.name).and_then(|(_, s)| *s);
        self.remove(&peer.name);
        if peer.ke_upgrade && peer.ike.allows_compliant_ke() {
            return;
        }
        let entry = (peer.remote_addr.map(|a| a.ip()), seen.or(last));
        for ip in [entry.0, entry.1].into_iter().flatten() {
            *self.by_ip.entry(ip).or_default() += 1;
        }
        self.by_peer.insert(peer.name.clone(), entry);
    }

    pub(super) fn remove(&mut self, name: &str) {
        let Some((configured, seen)) = self.by_peer.remove(name) else {
            return;
        };
        for ip in [configured, seen].into_iter().flatten() {
            if let Some(n) = self.by_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }

    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        self.by_ip.contains_key(&ip)
    }
}

/// Whether an IKE_SA_INIT request announces that its sender follows
/// redirects: REDIRECT_SUPPORTED, or REDIRECTED_FROM, which a client sends
/// instead to the gateway it was redirected to (RFC 5685 §3, §9). A
/// REDIRECTED_FROM that does not parse is ignored, as strongSwan does.
fn redirect_announced(payloads: &[Payload]) -> bool {
    payloads.notifies().any(|n| match n.kind {
        NotifyType::RedirectSupported => true,
        NotifyType::RedirectedFrom => Redirect::parse(&n.data).is_ok(),
        _ => false,
    })
}

impl Endpoint {
    /// While the hub drains ([`NewIkeSas`]), a new IKE SA is refused:
    /// a facility that announced redirect support gets a REDIRECT with
    /// its nonce and no responder SPI (RFC 5685 §3), within the budget
    /// of unprotected replies; any other request goes unanswered, so the
    /// facility keeps retrying the address it knows (which keepalived
    /// moves to the other hub). `None`: not draining, go on.
    fn refuse_while_draining(
        &mut self,
        now: Instant,
        msg: Incoming<'_>,
        nonce_i: &[u8],
        redirect_supported: bool,
    ) -> Option<Result<(), Error>> {
        let gateway: Option<GatewayIdentity> = match &self.new_ike_sas {
            NewIkeSas::Accept => return None,
            NewIkeSas::Redirect(g) if redirect_supported => Some(g.clone()),
            NewIkeSas::Redirect(_) | NewIkeSas::Refuse => None,
        };
        let remote = msg.remote;
        if let Some(gateway) = gateway {
            let data = Redirect {
                gateway: gateway.clone(),
                nonce: nonce_i.to_vec(),
            }
            .emit();
            if let Ok(data) = data {
                if self.take_reply_token(now) {
                    self.send_init_notify(remote, msg.local, msg.hdr, NotifyType::Redirect, data);
                }
                self.refuse(
                    remote,
                    None,
                    NotifyType::Redirect,
                    format!("the hub is draining: IKE_SA_INIT answered with REDIRECT to {gateway}"),
                );
                return Some(Ok(()));
            }
        }
        self.refuse(
            remote,
            None,
            NotifyType::TemporaryFailure,
            "the hub is draining: IKE_SA_INIT dropped".into(),
        );
        // Unanswered: `refusal` gives an IKE_SA_INIT no TEMPORARY_FAILURE.
        Some(Err(Error::TemporaryFailure("the hub is draining")))
    }

    /// Whether an IKE_SA_INIT from `ip` may be answered with
    /// INVALID_KE_PAYLOAD to get a group compliant after 2030
    /// ([`PeerConfig::ke_upgrade`]).
    pub(super) fn ke_upgrade_from(&self, ip: IpAddr) -> bool {
        !self.keep_ke.contains(ip)
    }

    pub(super) fn send_init(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        group: KeId,
        cookie: Option<Vec<u8>>,
        retried_ke: bool,
        reuse: Option<(KeyExchange, Vec<u8>, Vec<u8>)>,
    ) -> Result<(), Error> {
        let peer = sa
            .peer
            .clone()
            .ok_or(Error::Missing("initiator without peer"))?;
        // A retry with a cookie keeps every other payload unchanged
        // (RFC 7296 §2.6): the responder's cookie covers our nonce.
        let (ke, public, nonce_i) = match reuse {
            Some(r) => r,
            None => {
                let (ke, public) = KeyExchange::generate(group, &mut self.rng)?;
                (ke, public, self.random(NONCE_LEN))
            }
        };
        let mut payloads = Vec::new();
        if let Some(c) = &cookie {
            payloads.push(Payload::Notify(Notify::new(NotifyType::Cookie, c.clone())));
        }
        payloads.push(Payload::Sa(peer.ike.to_wire(&[], true)));
        payloads.push(Payload::Ke {
            group,
            data: public.clone(),
        });
        payloads.push(Payload::Nonce(nonce_i.clone()));
        if self.config.nat_traversal {
            payloads.extend(self.nat_detection(sa.spi_i, 0, sa.local, sa.remote));
        }
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::Ikev2FragmentationSupported,
            vec![],
        )));
        if matches!(peer.auth, PeerAuth::Cert) {
            payloads.push(auth::SigHashes::announcement());
        }
        if self.config.test_announce_redirect_supported {
            payloads.push(Payload::Notify(Notify::new(
                NotifyType::RedirectSupported,
                vec![],
            )));
        }
        let message1 = Self::plain_message(
            sa.spi_i,
            0,
            ExchangeType::IkeSaInit,
            Flags::new(true, false),
            0,
            &payloads,
        )?;
        sa.state = State::InitSent(InitSent {
            ke,
            ke_public: public,
            nonce_i,
            message1: message1.clone(),
            cookie,
            retried_ke,
        });
        sa.next_request_id = 1;
        self.start_request(now, sa, 0, vec![message1], PendingKind::Handshake);
        Ok(())
    }

    pub(super) fn respond_init(&mut self, now: Instant, msg: Incoming<'_>) -> Result<(), Error> {
        let Incoming {
            remote,
            local,
            hdr,
            data,
        } = msg;
        if let Some(spi) = self.half_open.get(&(remote, hdr.spi_i)).copied() {
            if let Some(mut sa) = self.sas.remove(&spi) {
                if let Some((0, messages)) = sa.last_response.clone() {
                    self.transmit_all(now, &mut sa, &messages);
                }
                self.put_back(sa);
            }
            return Ok(());
        }
        let payloads = parse_chain(hdr.next_payload, &data[HEADER_LEN..])?;
        let offered = payloads.sa();
        let ke = payloads.ke();
        let nonce = payloads.nonce();
        let (Some(offered), Some((group, public)), Some(nonce_i)) = (offered, ke, nonce) else {
            return Err(Error::Missing("IKE_SA_INIT without SA, KE or Nonce"));
        };
        // RFC 7296 §2.10: nonces are at least 16 and at most 256 octets.
        if !(16..=256).contains(&nonce_i.len()) {
            return Err(Error::Missing("nonce length"));
        }
        let redirect_supported = redirect_announced(&payloads);
        if let Some(refused) = self.refuse_while_draining(now, msg, nonce_i, redirect_supported) {
            return refused;
        }
        // RFC 7296 §2.6: under load, spend no state and no Diffie-Hellman on
        // a source until it echoes a cookie (proof that it receives at its
        // address).
        self.rotate_cookie_secret(now);
        if self.half_open.len() >= self.config.max_half_open {
            debug!(%remote, "half-open table full; dropping IKE_SA_INIT");
            return Err(Error::TemporaryFailure("half-open table full"));
        }
        if self.half_open.len() >= self.config.cookie_threshold
            && !self.cookie_valid(&payloads, nonce_i, remote, hdr.spi_i)
        {
            let cookie = Self::cookie(
                self.cookies.version,
                &self.cookies.current,
                nonce_i,
                remote.ip(),
                hdr.spi_i,
            );
            self.send_init_notify(remote, local, hdr, NotifyType::Cookie, cookie);
            return Ok(());
        }
        if self
            .half_open_per_ip
            .get(&remote.ip())
            .copied()
            .unwrap_or(0)
            >= self.config.max_half_open_per_ip
        {
            debug!(%remote, "too many half-open IKE SAs from this address; dropping IKE_SA_INIT");
            return Err(Error::TemporaryFailure("half-open limit per source"));
        }
        let upgrade = self.ke_upgrade_from(remote.ip());
        let choice = self
            .config
            .ike_proposals
            .select_ike_for_ke(offered, group, upgrade);
        let Some(choice) = choice else {
            let offer = describe_offer(offered);
            self.refuse(
                remote,
                None,
                NotifyType::NoProposalChosen,
                format!("no acceptable IKE proposal; peer offered {offer}"),
            );
            return Err(Error::NoProposalChosen(offer));
        };
        let (suite, echo) = match choice {
            KeChoice::Accept(suite, echo) => (suite, echo),
            KeChoice::AskFor(wanted) => {
                // RFC 7296 §1.2: tell the initiator which group we chose —
                // another it offered, or one that stays compliant after
                // 2030 where it sent MODP-2048 first.
                debug!(%remote, offered = %group, %wanted, upgrade, "INVALID_KE_PAYLOAD");
                return Err(Error::InvalidKe(wanted));
            }
        };
        let (kx, our_public) = KeyExchange::generate(suite.ke, &mut self.rng)?;
        // A KE payload whose data is no public value of its group is
        // answered as malformed (INVALID_SYNTAX).
        let shared = kx
            .shared_secret(public)
            .map_err(|_| WireError::Malformed("KE payload: not a public value of its group"))?;
        let spi_r = self.new_ike_spi();
        let nonce_r = self.random(NONCE_LEN);
        let (remote_nat, local_nat, peer_does_natt) =
            self.nat_result(&payloads, hdr.spi_i, 0, local, remote);
        let mut reply = vec![
            Payload::Sa(vec![echo]),
            Payload::Ke {
                group: suite.ke,
                data: our_public,
            },
            Payload::Nonce(nonce_r.clone()),
        ];
        if peer_does_natt && self.config.nat_traversal {
            reply.extend(self.nat_detection(hdr.spi_i, spi_r, local, remote));
        }
        // RFC 7383 §2.3: announce fragmentation only to a peer that did.
        let peer_fragments = payloads
            .notifies()
            .any(|n| n.kind == NotifyType::Ikev2FragmentationSupported);
        if peer_fragments {
            reply.push(Payload::Notify(Notify::new(
                NotifyType::Ikev2FragmentationSupported,
                vec![],
            )));
        }
        if let Some(trust) = &self.config.trust {
            // Ask for the facility's certificate (strongSwan sends its own
            // only when asked) and say which signatures the hub checks.
            reply.push(Payload::CertReq {
                encoding: auth::CERT_X509_SIGNATURE,
                data: trust.certreq_data(),
            });
            reply.push(auth::SigHashes::announcement());
        }
        let message2 = Self::plain_message(
            hdr.spi_i,
            spi_r,
            ExchangeType::IkeSaInit,
            Flags::new(false, true),
            0,
            &reply,
        )?;
        let keys = IkeKeys::derive(suite, &shared, nonce_i, &nonce_r, hdr.spi_i, spi_r, false);
        let mut sa = IkeSa {
            id: IkeSaId(spi_r),
            initiator: false,
            spi_i: hdr.spi_i,
            spi_r,
            local,
            remote,
            peer: None,
            state: State::InitDone(InitDone {
                keys,
                nonce_i: nonce_i.clone(),
                nonce_r,
                message1: data.to_vec(),
                message2: message2.clone(),
            }),
            next_request_id: 0,
            expected_request_id: 1,
            last_response: Some((0, vec![message2.clone()])),
            pending: None,
            timers: Timers::default(),
            queued: None,
            encap: peer_does_natt && (remote_nat || local_nat || self.config.force_encap),
            remote_behind_nat: remote_nat,
            last_sent: now,
            half_open_key: Some((remote, hdr.spi_i)),
            fragmentation: peer_fragments,
            sig_hashes: auth::SigHashes::from_payloads(&payloads),
            reassembly: None,
            redirect_supported,
        };
        sa.timers
            .set(Timer::Expire, now + self.config.half_open_timeout);
        debug!(%remote, ike_sa = %sa.id, %suite, "IKE_SA_INIT answered");
        self.transmit(now, &mut sa, message2);
        self.half_open.insert((remote, hdr.spi_i), spi_r);
        *self.half_open_per_ip.entry(remote.ip()).or_default() += 1;
        self.store(sa);
        Ok(())
    }

    pub(super) fn on_init_response(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: &Message<'_>,
        init: InitSent,
    ) -> Result<(), Error> {
        let Message {
            remote,
            local,
            hdr,
            data,
            ref payloads,
        } = *msg;
        let peer = sa
            .peer
            .clone()
            .ok_or(Error::Missing("initiator without peer"))?;
        if let Some(n) = payloads.notifies().find(|n| n.kind == NotifyType::Cookie) {
            // RFC 7296 §2.6: repeat the request with the cookie in front.
            if init.cookie.is_none() && n.data.len() <= 64 {
                let group = init.ke.group();
                let cookie = Some(n.data.clone());
                let reuse = Some((init.ke, init.ke_public, init.nonce_i));
                return self.send_init(now, sa, group, cookie, init.retried_ke, reuse);
            }
        }
        if let Some(n) = payloads
            .notifies()
            .find(|n| n.kind == NotifyType::InvalidKePayload)
        {
            let wanted =
                <[u8; 2]>::try_from(n.data.as_slice()).map(|b| KeId::from(u16::from_be_bytes(b)));
            if let Ok(g) = wanted {
                if !init.retried_ke && peer.ike.allows_ke(g) && KeyExchange::supports(g) {
                    info!(peer = %peer.name, group = %g, "peer asks for another key exchange method; retrying");
                    return self.send_init(now, sa, g, init.cookie, true, None);
                }
            }
            self.refuse(
                remote,
                Some(peer.name.clone()),
                NotifyType::InvalidKePayload,
                "peer wants a key exchange method we do not offer".into(),
            );
            self.fail(sa, "INVALID_KE_PAYLOAD".into());
            return Ok(());
        }
        if let Some(n) = first_error_notify(payloads) {
            self.refuse(
                remote,
                Some(peer.name.clone()),
                n.kind,
                format!("peer answered IKE_SA_INIT with {}", n.kind),
            );
            self.fail(sa, format!("peer refused: {}", n.kind));
            return Ok(());
        }
        let result = (|| {
            // RFC 7296 §3.1: a responder that accepts fills in its SPI.
            // One YAMAHA RTX firmware answers a retry after
            // INVALID_KE_PAYLOAD with zero here: refused, as any
            // continuation would name an IKE SA the responder never made.
            if hdr.spi_r == 0 {
                return Err(Error::Misbehaved(format!(
                    "the responder accepted with a zero SPI{}",
                    if init.retried_ke {
                        " after INVALID_KE_PAYLOAD (a defect of some YAMAHA RTX firmware: \
                         configure the facility's own group first so that no retry is needed)"
                    } else {
                        ""
                    }
                )));
            }
            let Some(Payload::Sa(chosen)) = payloads.iter().find(|p| matches!(p, Payload::Sa(_)))
            else {
                return Err(Error::Missing("no SA payload"));
            };
            if chosen.len() != 1 {
                return Err(Error::Misbehaved(
                    "responder chose more than one proposal".into(),
                ));
            }
            let (suite, _) = peer.ike.select_ike(chosen).ok_or_else(|| {
                Error::Misbehaved("responder chose a proposal we did not offer".into())
            })?;
            let (group, public) = payloads.ke().ok_or(Error::Missing("no KE payload"))?;
            if group != suite.ke || group != init.ke.group() {
                return Err(Error::Misbehaved(
                    "KE payload does not match the chosen group".into(),
                ));
            }
            let nonce_r = payloads
                .nonce()
                .cloned()
                .ok_or(Error::Missing("no Nonce payload"))?;
            if !(16..=256).contains(&nonce_r.len()) {
                return Err(Error::Missing("nonce length"));
            }
            let shared = init.ke.shared_secret(public)?;
            Ok((suite, shared, nonce_r))
        })();
        let (suite, shared, nonce_r) = match result {
            Ok(r) => r,
            Err(e) => {
                self.fail(sa, format!("bad IKE_SA_INIT response: {e}"));
                return Ok(());
            }
        };
        sa.spi_r = hdr.spi_r;
        sa.pending = None;
        sa.timers.stop(Timer::Retransmit);
        let (remote_nat, local_nat, natt) =
            self.nat_result(payloads, sa.spi_i, sa.spi_r, local, remote);
        sa.remote_behind_nat = remote_nat;
        sa.fragmentation = payloads
            .notifies()
            .any(|n| n.kind == NotifyType::Ikev2FragmentationSupported);
        sa.sig_hashes = auth::SigHashes::from_payloads(payloads);
        sa.encap = natt && (remote_nat || local_nat || self.config.force_encap);
        if self.config.force_encap && self.config.nat_traversal && !natt {
            let reason = super::nat::NO_NAT_TRAVERSAL.to_string();
            self.refuse(
                remote,
                Some(peer.name.clone()),
                NotifyType::NoProposalChosen,
                reason.clone(),
            );
            self.fail(sa, reason);
            return Ok(());
        }
        if sa.encap && sa.local.port() != self.config.natt_port {
            // RFC 7296 §2.23: float to port 4500 from IKE_AUTH on (an SA
            // begun on port 4500 is already there, at the port it chose).
            sa.local = SocketAddr::new(sa.local.ip(), self.config.natt_port);
            sa.remote = SocketAddr::new(sa.remote.ip(), self.config.natt_port);
        }
        let keys = IkeKeys::derive(
            suite,
            &shared,
            &init.nonce_i,
            &nonce_r,
            sa.spi_i,
            sa.spi_r,
            true,
        );
        let child_spi = self.new_child_spi();
        let local_id = self.config.local_id.clone();
        let id_data = local_id.data();
        let proof = auth::make(
            &peer.auth,
            auth::pick_credentials(&self.config, payloads),
            sa.sig_hashes,
            &auth::AuthInput {
                prf: suite.prf,
                message: &init.message1,
                nonce: &nonce_r,
                sk_p: &keys.sk_pi,
                id_type: local_id.id_type(),
                id_reserved: [0; 3],
                id_data: &id_data,
            },
        );
        let proof = match proof {
            Ok(p) => p,
            Err(e) => {
                self.refuse(
                    sa.remote,
                    Some(peer.name.clone()),
                    NotifyType::AuthenticationFailed,
                    e.to_string(),
                );
                self.fail(sa, format!("cannot authenticate to the facility: {e}"));
                return Ok(());
            }
        };
        let mut payloads = vec![Payload::IdI {
            id_type: local_id.id_type(),
            reserved: [0; 3],
            data: id_data.clone(),
        }];
        if let (PeerAuth::Cert, Some(trust)) = (&peer.auth, &self.config.trust) {
            payloads.push(Payload::CertReq {
                encoding: auth::CERT_X509_SIGNATURE,
                data: trust.certreq_data(),
            });
        }
        payloads.push(Payload::IdR {
            id_type: peer.remote_id.id_type(),
            reserved: [0; 3],
            data: peer.remote_id.data(),
        });
        payloads.extend(proof);
        payloads.extend([
            Payload::Notify(Notify::new(NotifyType::InitialContact, vec![])),
            Payload::Sa(peer.esp.to_wire(&child_spi.to_be_bytes(), false)),
            Payload::TsI(peer.local_ts.iter().map(|s| s.to_selector()).collect()),
            Payload::TsR(peer.remote_ts.iter().map(|s| s.to_selector()).collect()),
        ]);
        if let Err(e) = self.send_request(
            now,
            sa,
            &keys,
            ExchangeType::IkeAuth,
            &payloads,
            PendingKind::Handshake,
        ) {
            self.child_spis.remove(&child_spi);
            self.fail(sa, format!("cannot build IKE_AUTH: {e}"));
            return Ok(());
        }
        sa.state = State::AuthSent(AuthSent {
            keys,
            nonce_i: init.nonce_i,
            nonce_r,
            message2: data.to_vec(),
            child_spi,
        });
        Ok(())
    }
}
