//! IKE fragmentation (RFC 7383), both ways. Sending (§2.5): a message
//! that would not fit the fragment size is cut into pieces, each sealed in
//! its own Encrypted Fragment payload ([`Endpoint::pieces`], framed in
//! [`super::framing`]). Receiving (§2.6): fragments are authenticated one
//! by one and reassembled under hard bounds, so that a peer cannot make the
//! hub hold memory.
//!
//! ```text
//! SKF 1/3 ─┐ open (integrity) ─▶ piece 1 ┐
//! SKF 3/3 ─┤ open            ─▶ piece 3 ├─ all pieces ─▶ parse chain ─▶ Message (mod.rs: receive)
//! SKF 2/3 ─┘ open            ─▶ piece 2 ┘
//! ```
//! At most one message is reassembled per IKE SA (the window is one), of at
//! most [`MAX_FRAGMENTS`] fragments and [`MAX_REASSEMBLY_BYTES`] bytes, and
//! a reassembly older than [`REASSEMBLY_TIMEOUT`] is started afresh.

use super::nat::NON_ESP_MARKER_LEN;
use super::sa::IkeSa;
use super::{Endpoint, Incoming};
use crate::error::Error;
use crate::keys::IkeKeys;
use crate::wire::{parse_chain, Payload, PayloadType, HEADER_LEN};
use std::time::{Duration, Instant};
use tracing::debug;

/// Fragments one message may have.
pub(super) const MAX_FRAGMENTS: u16 = 32;
/// Decrypted bytes one reassembly may hold.
pub(super) const MAX_REASSEMBLY_BYTES: usize = 64 * 1024;
/// A reassembly older than this is abandoned when the next fragment comes.
pub(super) const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A message being put back together.
pub(super) struct Reassembly {
    message_id: u32,
    response: bool,
    total: u16,
    first_inner: PayloadType,
    pieces: Vec<Option<Vec<u8>>>,
    bytes: usize,
    started: Instant,
}

impl Endpoint {
    /// The pieces an encrypted message's inner payloads are sent in: one,
    /// or — when the peer supports it and the message is larger than the
    /// fragment size — RFC 7383 fragments, each to be encrypted on its own.
    pub(super) fn pieces<'a>(&self, sa: &IkeSa, keys: &IkeKeys, inner: &'a [u8]) -> Vec<&'a [u8]> {
        let marker = if sa.local.port() == self.config.natt_port {
            NON_ESP_MARKER_LEN
        } else {
            0
        };
        // The size counts the whole IP datagram, as strongSwan's
        // `fragment_size` does: a fragment must pass a path of that MTU
        // without IP fragmentation, which RFC 7383 §1 exists to avoid.
        let ip_udp = if sa.remote.is_ipv4() { 20 + 8 } else { 40 + 8 };
        let limit = self.config.fragment_size;
        let whole = ip_udp + marker + HEADER_LEN + 4 + keys.outbound.sealed_len(inner.len());
        // RFC 7383 §2.5.1: fragment only what would not fit. Each fragment
        // carries the IKE header, the SKF header (8 bytes) and its own IV,
        // padding and ICV: the largest piece whose datagram fits.
        let fixed = ip_udp + marker + HEADER_LEN + 8;
        let mut per_fragment = limit.saturating_sub(fixed + keys.outbound.sealed_len(0));
        while per_fragment > 0 && fixed + keys.outbound.sealed_len(per_fragment) > limit {
            per_fragment -= 1;
        }
        if sa.fragmentation && whole > limit && per_fragment >= 32 {
            inner.chunks(per_fragment).collect()
        } else {
            vec![inner]
        }
    }

    /// Takes one fragment (its message ID already checked): the payloads
    /// of the whole message once its last fragment is in, else `None`.
    pub(super) fn reassemble(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        msg: Incoming<'_>,
    ) -> Result<Option<Vec<Payload>>, Error> {
        let Incoming { hdr, data, .. } = msg;
        let response = hdr.flags.response();
        let outer = parse_chain(hdr.next_payload, data.get(HEADER_LEN..).unwrap_or_default())?;
        let Some(Payload::Skf {
            first_inner,
            number,
            total,
            data: body,
        }) = outer.last()
        else {
            return Err(Error::Missing("no Encrypted Fragment payload"));
        };
        let (first_inner, number, total) = (*first_inner, *number, *total);
        if number == 0 || number > total || total > MAX_FRAGMENTS {
            return Err(Error::Missing("fragment number out of range"));
        }
        // RFC 7383 §2.5: only the first fragment names the first payload.
        if (number == 1) == (first_inner == PayloadType::NoNext) {
            return Err(Error::Missing("fragment's next payload"));
        }
        let plain = {
            let keys = sa
                .state
                .keys()
                .ok_or(Error::Missing("fragment before keys exist"))?;
            let prefix = &data[..data.len() - body.len()];
            // Only authenticated fragments are kept.
            keys.inbound.open(prefix, body)?
        };
        let fresh = match &sa.reassembly {
            Some(r)
                if r.message_id == hdr.message_id
                    && r.response == response
                    && now.saturating_duration_since(r.started) <= REASSEMBLY_TIMEOUT =>
            {
                // RFC 7383 §2.6.2: more fragments than before means the
                // sender re-fragmented smaller; fewer are stale.
                if total < r.total {
                    return Ok(None);
                }
                total > r.total
            }
            _ => true,
        };
        if fresh {
            sa.reassembly = Some(Reassembly {
                message_id: hdr.message_id,
                response,
                total,
                first_inner: PayloadType::NoNext,
                pieces: vec![None; usize::from(total)],
                bytes: 0,
                started: now,
            });
        }
        let Some(r) = sa.reassembly.as_mut() else {
            return Ok(None);
        };
        let slot = &mut r.pieces[usize::from(number) - 1];
        if slot.is_some() {
            return Ok(None);
        }
        if r.bytes + plain.len() > MAX_REASSEMBLY_BYTES {
            sa.reassembly = None;
            return Err(Error::Misbehaved("fragmented message too large".into()));
        }
        r.bytes += plain.len();
        if number == 1 {
            r.first_inner = first_inner;
        }
        *slot = Some(plain);
        if !r.pieces.iter().all(Option::is_some) {
            return Ok(None);
        }
        let Some(r) = sa.reassembly.take() else {
            return Ok(None);
        };
        debug!(ike_sa = %sa.id, fragments = r.total, bytes = r.bytes, "message reassembled");
        let inner: Vec<u8> = r.pieces.into_iter().flatten().flatten().collect();
        Ok(Some(parse_chain(r.first_inner, &inner)?))
    }
}
