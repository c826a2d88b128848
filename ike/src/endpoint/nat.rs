//! NAT traversal: NAT detection (RFC 7296 §2.23), following a facility
//! whose NAT mapping changed (§2.23), and UDP encapsulation on port 4500
//! (RFC 3948): the non-ESP marker (§2.2) and NAT keepalives (§2.3).
//!
//! Everything about the non-ESP marker lives in the first lines of this
//! file: [`NON_ESP_MARKER_LEN`], [`strip_non_esp_marker`], [`frame`].

use super::sa::{Established, IkeSa, State, Timer};
use super::{Endpoint, Event, Transmit};
use crate::crypto::nat_detection_hash;
use crate::wire::{Notify, NotifyType, Payload, PayloadsExt};
use std::net::SocketAddr;
use std::time::Instant;
use tracing::{debug, info};

// ---- RFC 3948: the non-ESP marker and keepalives ----------------------
// Telling them apart on receipt is `natt`'s, shared with the data plane.

/// In front of an IKE message on the NAT-T port, where ESP has a non-zero
/// SPI (RFC 3948 §2.2).
const NON_ESP_MARKER: [u8; 4] = natt::NON_ESP_MARKER;

/// Bytes the non-ESP marker adds in front of an IKE message on port 4500.
pub(super) const NON_ESP_MARKER_LEN: usize = NON_ESP_MARKER.len();

/// A NAT keepalive (RFC 3948 §2.3): one 0xFF byte.
pub(super) const NAT_KEEPALIVE: [u8; 1] = natt::KEEPALIVE;

/// What is left of a datagram received on the NAT-T port for IKE: the
/// message after its non-ESP marker. `None` for a NAT keepalive and for
/// anything without the marker (ESP, which is not ours).
pub(super) fn strip_non_esp_marker(data: &[u8]) -> Option<&[u8]> {
    match natt::classify(data) {
        natt::Datagram::Ike(message) => Some(message),
        _ => None,
    }
}

/// An IKE message as sent: with the non-ESP marker in front when it goes
/// out of the NAT-T port (`natt`).
pub(super) fn frame(natt: bool, message: Vec<u8>) -> Vec<u8> {
    if natt {
        let mut framed = Vec::with_capacity(message.len() + NON_ESP_MARKER_LEN);
        framed.extend_from_slice(&NON_ESP_MARKER);
        framed.extend_from_slice(&message);
        framed
    } else {
        message
    }
}

// ---- RFC 7296 §2.23: NAT detection and following the facility ---------

/// Why the hub refuses a facility that does not do NAT traversal: the hub
/// carries ESP only in UDP (RFC 3948, `Config::force_encap`), so a
/// facility that sent no NAT_DETECTION notification would send ESP as IP
/// protocol 50, which nothing on the hub receives, while the tunnel looked
/// up. `renkei diagnose` recognises this text.
pub const NO_NAT_TRAVERSAL: &str =
    "the facility does not do NAT traversal (no NAT_DETECTION notification in IKE_SA_INIT): \
     the hub carries ESP only in UDP on port 4500 (RFC 3948); enable NAT traversal on the router";

impl Endpoint {
    /// NAT_DETECTION_SOURCE_IP and _DESTINATION_IP (RFC 7296 §2.23). With
    /// `force_encap` the source hash is random, so the peer sees "NAT" and
    /// encapsulates ESP in UDP.
    pub(super) fn nat_detection(
        &mut self,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> [Payload; 2] {
        let src = if self.config.force_encap {
            self.random(20)
        } else {
            nat_detection_hash(spi_i, spi_r, local)
        };
        [
            Payload::Notify(Notify::new(NotifyType::NatDetectionSourceIp, src)),
            Payload::Notify(Notify::new(
                NotifyType::NatDetectionDestinationIp,
                nat_detection_hash(spi_i, spi_r, remote),
            )),
        ]
    }

    /// Reads the peer's NAT detection notifies: (peer behind NAT, we appear
    /// behind NAT, whether the peer sent any).
    pub(super) fn nat_result(
        &self,
        payloads: &[Payload],
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> (bool, bool, bool) {
        let src: Vec<&Notify> = payloads
            .notifies()
            .filter(|n| n.kind == NotifyType::NatDetectionSourceIp)
            .collect();
        let dst = payloads
            .notifies()
            .find(|n| n.kind == NotifyType::NatDetectionDestinationIp);
        if src.is_empty() && dst.is_none() {
            return (false, false, false);
        }
        let expect_remote = nat_detection_hash(spi_i, spi_r, remote);
        let remote_nat = !src.iter().any(|n| n.data == expect_remote);
        // Behind a wildcard socket our own address is unknown; that counts
        // as "NAT", which only makes us encapsulate.
        let local_nat = local.ip().is_unspecified()
            || dst.is_none_or(|n| n.data != nat_detection_hash(spi_i, spi_r, local));
        (remote_nat, local_nat, true)
    }

    /// After an authenticated message: a facility behind NAT whose mapping
    /// changed is followed to its new address (RFC 7296 §2.23).
    pub(super) fn follow_peer(
        &mut self,
        sa: &mut IkeSa,
        est: &Established,
        remote: SocketAddr,
        local: SocketAddr,
    ) {
        sa.local = local;
        if sa.remote == remote {
            return;
        }
        if !sa.remote_behind_nat {
            debug!(ike_sa = %sa.id, %remote, "message from another address of a peer not behind NAT; not following");
            return;
        }
        info!(ike_sa = %sa.id, old = %sa.remote, new = %remote, "facility's NAT mapping changed; following it");
        sa.remote = remote;
        if let (Some(peer), false) = (sa.peer_name(), est.superseded) {
            self.events.push_back(Event::PeerMoved {
                ike_sa: sa.id,
                peer,
                remote,
                spis_out: est.children.iter().map(|c| c.spi_out).collect(),
            });
        }
    }

    /// Timer Keepalive: a NAT keepalive (RFC 3948 §2.3) when nothing was
    /// sent to an encapsulating facility for a keepalive interval.
    pub(super) fn on_keepalive_timer(&mut self, now: Instant, sa: &mut IkeSa) {
        if matches!(sa.state, State::Established(_)) && sa.encap {
            let interval = self.config.keepalive_interval;
            if now.saturating_duration_since(sa.last_sent) >= interval {
                sa.last_sent = now;
                self.transmits.push_back(Transmit {
                    local: SocketAddr::new(sa.local.ip(), self.config.natt_port),
                    remote: sa.remote,
                    contents: NAT_KEEPALIVE.to_vec(),
                });
            }
            sa.timers.set(Timer::Keepalive, sa.last_sent + interval);
        }
    }
}
