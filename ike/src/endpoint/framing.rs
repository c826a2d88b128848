//! Messages on the wire: unprotected ones (IKE_SA_INIT) and the Encrypted
//! payload SK (RFC 7296 §3.14) around everything after it, sealed and
//! opened with the IKE SA's keys ([`crate::crypto::sk`]).
//!
//! ```text
//! payloads ─emit_chain─▶ inner ─(fragment::pieces, RFC 7383)─▶ IKE header | SK or SKF header | seal(piece)
//! datagram ─parse_chain─▶ … SK ─open─▶ inner ─parse_chain─▶ payloads
//! ```

use super::sa::IkeSa;
use super::Endpoint;
use crate::error::Error;
use crate::keys::IkeKeys;
use crate::wire::{
    emit_chain, parse_chain, ExchangeType, Flags, HeaderRepr, Payload, PayloadType, HEADER_LEN,
};

impl Endpoint {
    pub(super) fn plain_message(
        spi_i: u64,
        spi_r: u64,
        exchange: ExchangeType,
        flags: Flags,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<Vec<u8>, Error> {
        let (first, body) = emit_chain(payloads)?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        HeaderRepr {
            spi_i,
            spi_r,
            next_payload: first,
            exchange,
            flags,
            message_id,
            length: u32::try_from(HEADER_LEN + body.len())
                .map_err(|_| Error::Missing("message too long"))?,
        }
        .emit(&mut out);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// An encrypted message, as one datagram or — when the peer supports
    /// it and the message is larger than the fragment size — as RFC 7383
    /// fragments, each encrypted on its own.
    pub(super) fn encrypted_messages(
        &mut self,
        sa: &IkeSa,
        keys: &IkeKeys,
        exchange: ExchangeType,
        response: bool,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<Vec<Vec<u8>>, Error> {
        let (first, inner) = emit_chain(payloads)?;
        let pieces = self.pieces(sa, keys, &inner);
        let fragmented = pieces.len() > 1;
        let total_fragments = u16::try_from(pieces.len())
            .map_err(|_| Error::Missing("message too large to fragment"))?;
        let mut out = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            let extra = if fragmented { 4 } else { 0 };
            let body_len = keys.outbound.sealed_len(piece.len());
            let total = HEADER_LEN + 4 + extra + body_len;
            let mut m = Vec::with_capacity(total);
            HeaderRepr {
                spi_i: sa.spi_i,
                spi_r: sa.spi_r,
                next_payload: if fragmented {
                    PayloadType::Skf
                } else {
                    PayloadType::Sk
                },
                exchange,
                flags: Flags::new(sa.initiator, response),
                message_id,
                length: u32::try_from(total).map_err(|_| Error::Missing("message too long"))?,
            }
            .emit(&mut m);
            // The first fragment names the first inner payload; the others 0.
            m.push(if i == 0 { first.into() } else { 0 });
            m.push(0);
            m.extend_from_slice(&crate::wire::len16(4 + extra + body_len)?.to_be_bytes());
            if fragmented {
                m.extend_from_slice(&u16::try_from(i + 1).unwrap_or(u16::MAX).to_be_bytes());
                m.extend_from_slice(&total_fragments.to_be_bytes());
            }
            let body = keys.outbound.seal(&m, piece, &mut self.rng)?;
            m.extend_from_slice(&body);
            out.push(m);
        }
        Ok(out)
    }

    /// The inner payloads of an encrypted message.
    pub(super) fn decrypt(
        &self,
        keys: &IkeKeys,
        hdr: &HeaderRepr,
        data: &[u8],
    ) -> Result<Vec<Payload>, Error> {
        let outer = parse_chain(hdr.next_payload, data.get(HEADER_LEN..).unwrap_or_default())?;
        let Some(Payload::Sk {
            first_inner,
            data: body,
        }) = outer.last()
        else {
            return Err(Error::Missing("no Encrypted payload"));
        };
        let prefix = &data[..data.len() - body.len()];
        let inner = keys.inbound.open(prefix, body)?;
        Ok(parse_chain(*first_inner, &inner)?)
    }
}
