//! What each event of the IKE endpoint does: Child SAs installed and
//! removed, the facility's live status, reconnects and Child SA retries
//! scheduled, and a record in the audit log.

use super::reconnect::{Reconnect, RECONNECT_MAX, RECONNECT_MIN};
use super::status::FacilityState;
use super::Hub;
use ike::Event;
use std::time::Instant;
use tracing::{debug, info, warn};

impl Hub {
    /// Keeps what `status NAME` and `diagnose NAME` show of a registered
    /// facility's event ([`super::evidence`]).
    fn note_evidence(&mut self, event: &Event, now: &str) {
        use super::evidence::{Cause, EventKind};
        let (peer, kind, cause, notify, remote, detail) = match event {
            Event::IkeSaUp {
                peer,
                remote,
                suite,
                remote_behind_nat,
                initiator,
                ..
            } => (
                peer,
                EventKind::IkeUp,
                None,
                None,
                Some(*remote),
                format!(
                    "{suite}; {} initiated{}",
                    if *initiator { "hub" } else { "facility" },
                    if *remote_behind_nat {
                        "; behind NAT"
                    } else {
                        ""
                    }
                ),
            ),
            Event::IkeSaDown {
                peer: Some(peer),
                reason,
                ..
            } => (peer, EventKind::IkeDown, None, None, None, reason.clone()),
            Event::ChildSaUp {
                peer,
                child,
                rekey_of,
                ..
            } => (
                peer,
                if rekey_of.is_some() {
                    EventKind::Rekeyed
                } else {
                    EventKind::ChildUp
                },
                None,
                None,
                Some(child.remote),
                format!(
                    "{:08x}/{:08x} {} {} === {}",
                    child.spi_in,
                    child.spi_out,
                    child.suite,
                    ike::ts::describe(&child.local_ts),
                    ike::ts::describe(&child.remote_ts)
                ),
            ),
            Event::IkeSaRekeyed { peer, suite, .. } => (
                peer,
                EventKind::Rekeyed,
                None,
                None,
                None,
                format!("IKE SA {suite}"),
            ),
            Event::PeerMoved { peer, remote, .. } => (
                peer,
                EventKind::Moved,
                None,
                None,
                Some(*remote),
                String::new(),
            ),
            Event::ChildSaFailed {
                peer,
                notify,
                reason,
                ..
            } => (
                peer,
                EventKind::ChildFailed,
                Some(Cause::of(*notify, reason, false)),
                Some(*notify),
                None,
                reason.clone(),
            ),
            Event::Refused {
                remote,
                peer: Some(peer),
                notify,
                reason,
            } => {
                let disabled = self.peers.get(peer).is_some_and(|p| !p.enabled);
                (
                    peer,
                    EventKind::Refused,
                    Some(Cause::of(*notify, reason, disabled)),
                    Some(*notify),
                    Some(*remote),
                    reason.clone(),
                )
            }
            _ => return,
        };
        if !self.peers.contains_key(peer) {
            return;
        }
        self.evidence
            .note(peer, now, kind, cause, notify, remote, &detail);
    }

    /// Writes records of the audit map. Refusals of strangers reach the
    /// log as the audit log gets them: the first at once, then a count
    /// per minute (the endpoint logs each only at debug level).
    pub(super) fn record_mapped(&mut self, records: Vec<super::audit_map::Record>) {
        for (kind, details) in records {
            if kind.starts_with("refused") && details["facility"].is_null() {
                warn!(event = %kind, %details, "refused before the facility was known");
            }
            self.note_event(&kind, &details);
            self.audit.record("renkei", &kind, details);
        }
    }

    /// Adds an audited event to the status page's recent events.
    fn note_event(&self, kind: &str, details: &serde_json::Value) {
        if let Ok(mut h) = self.history.lock() {
            h.event(crate::certs::unix_now(), kind, details);
        }
    }

    /// Takes a traffic sample of every facility for the status page.
    pub(super) fn sample_traffic(&self) {
        let counters: Vec<(String, u64, u64)> = self
            .peers
            .keys()
            .map(|name| {
                let c = self.table.counters(name).snapshot();
                (name.clone(), c.bytes_in, c.bytes_out)
            })
            .collect();
        if let Ok(mut h) = self.history.lock() {
            h.sample(crate::certs::unix_now(), &counters);
        }
    }

    pub(super) fn apply(&mut self, event: Event) {
        let note = super::takeover::Note::of(&event);
        self.apply_event(event);
        if let Some(note) = note {
            self.takeover_event(note);
        }
    }

    fn apply_event(&mut self, event: Event) {
        let now = crate::registry::now_rfc3339();
        let peers = &self.peers;
        let disabled = |name: &str| peers.get(name).is_some_and(|p| !p.enabled);
        let mut records = self.audit_map.event(&event, Instant::now(), &disabled);
        // A Child SA is audited as up once it is installed: one the hub
        // refuses is `sa.child_refused` alone.
        let child_up = match &event {
            Event::ChildSaUp { .. } => records
                .iter()
                .position(|(kind, _)| kind == "sa.child_up")
                .map(|i| records.remove(i)),
            _ => None,
        };
        self.record_mapped(records);
        self.note_evidence(&event, &now);
        match event {
            Event::PeerMoved {
                peer,
                remote,
                spis_out,
                ..
            } => {
                for spi in &spis_out {
                    self.table.update_remote(*spi, remote);
                }
                info!(%peer, %remote, child_sas = spis_out.len(), "facility moved; ESP follows");
                self.status.entry(peer).or_default().remote = Some(remote);
            }
            Event::Redirected { peer, gateway, .. } => {
                info!(%peer, %gateway, "facility redirected");
                self.drain_redirected(&peer);
            }
            // The endpoint has logged it.
            Event::IkeSaRekeyed {
                old,
                new,
                peer,
                suite,
            } => {
                self.drain_rekeyed(&peer, old, new);
                let st = self.status.entry(peer).or_default();
                st.ike_sa = Some(new);
                st.ike_suite = Some(suite.to_string());
                st.ike_rekeys += 1;
                st.last_rekey = Some(now);
            }
            Event::IkeSaUp {
                ike_sa,
                peer,
                remote,
                suite,
                initiator,
                remote_behind_nat,
            } => {
                info!(%peer, %remote, %suite, initiator, remote_behind_nat, "facility up");
                let st = self.status.entry(peer.clone()).or_default();
                st.state = FacilityState::Up;
                st.since = now;
                st.remote = Some(remote);
                st.ike_suite = Some(suite.to_string());
                st.ike_sa = Some(ike_sa);
                st.last_error = None;
                st.handshakes += 1;
                st.behind_nat = remote_behind_nat;
                if let Some(r) = self.reconnect.get_mut(&peer) {
                    r.backoff = RECONNECT_MIN;
                    r.at = Instant::now() + RECONNECT_MAX;
                }
            }
            Event::ChildSaUp {
                peer,
                child,
                rekey_of,
                answered,
                ..
            } => {
                if rekey_of.is_some() {
                    let st = self.status.entry(peer.clone()).or_default();
                    st.child_rekeys += 1;
                    st.last_rekey = Some(now);
                }
                // A rekey the facility initiated: it has no inbound SA for
                // the new SPI until our answer reaches it, so keep sending
                // on the old SA until the facility deletes it.
                let replacing = rekey_of.filter(|_| answered);
                if rekey_of.is_none() {
                    // A Child SA made: the latest attempt succeeded.
                    self.child_retry.remove(&peer);
                    if let Some(st) = self.status.get_mut(&peer) {
                        st.last_error = None;
                    }
                }
                let spi_in = child.spi_in;
                if self.install_child(&peer, child, replacing) {
                    if let Some((kind, details)) = child_up {
                        self.note_event(&kind, &details);
                        self.audit.record("renkei", &kind, details);
                    }
                } else {
                    self.audit_map.child_refused(spi_in);
                }
            }
            Event::ChildSaFailed {
                peer,
                notify,
                by_peer,
                reason,
                ..
            } => {
                let who = if by_peer { "the facility" } else { "the hub" };
                warn!(%peer, %notify, "IKE SA up without a Child SA: {who} refused it ({reason})");
                let st = self.status.entry(peer.clone()).or_default();
                st.last_error = Some(format!("{notify} ({who} refused the Child SA): {reason}"));
                if st.children.is_empty()
                    && self.peers.get(&peer).is_some_and(|p| p.enabled && p.start)
                {
                    let r = self.child_retry.entry(peer).or_insert(Reconnect {
                        at: Instant::now(),
                        backoff: RECONNECT_MIN,
                    });
                    r.at = Instant::now() + r.backoff;
                }
            }
            Event::ChildSaDown {
                peer,
                spi_in,
                spi_out,
                ..
            } => self.remove_child(&peer, spi_in, spi_out),
            Event::IkeSaDown {
                ike_sa,
                peer,
                reason,
            } => {
                let Some(peer) = peer else { return };
                info!(%peer, %reason, "facility down");
                self.drain_ike_down(
                    Instant::now(),
                    &peer,
                    ike_sa,
                    reason == ike::REDIRECTED_BUT_KEPT,
                );
                self.child_retry.remove(&peer);
                let st = self.status.entry(peer.clone()).or_default();
                if st.ike_sa == Some(ike_sa) || st.ike_sa.is_none() {
                    st.state = FacilityState::Down;
                    st.since = now;
                    st.ike_sa = None;
                    st.last_error = Some(reason);
                }
                if self.peers.get(&peer).is_some_and(|p| p.enabled && p.start) {
                    let r = self.reconnect.entry(peer).or_insert(Reconnect {
                        at: Instant::now(),
                        backoff: RECONNECT_MIN,
                    });
                    r.at = Instant::now() + r.backoff;
                }
            }
            Event::Refused {
                remote,
                peer,
                notify,
                reason,
            } => {
                match peer {
                    Some(peer) if self.peers.get(&peer).is_some_and(|p| !p.enabled) => {
                        // Refused by its name: the operator disabled it.
                        warn!(%peer, %remote, "a disabled facility tried to connect; refused (renkei peer enable {peer})");
                        let st = self.status.entry(peer.clone()).or_default();
                        st.last_error = Some(format!(
                            "{remote} tried to connect and was refused: the facility is disabled (renkei peer enable {peer})"
                        ));
                    }
                    Some(peer) => {
                        let st = self.status.entry(peer).or_default();
                        if notify == ike::wire::NotifyType::AuthenticationFailed {
                            st.auth_failures += 1;
                        }
                        st.last_error = Some(format!("{notify}: {reason}"));
                    }
                    None => {
                        let why = super::refusals::RefusalReason::of(notify);
                        debug!(%remote, %notify, reason = why.name(), "refused before a facility was known");
                        self.refusals.note(remote.ip(), why, &reason, &now);
                    }
                }
            }
        }
    }
}
