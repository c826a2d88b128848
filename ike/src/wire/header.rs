//! The IKE header (RFC 7296 §3.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Initiator's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Responder's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Payload | MjVer | MnVer | Exchange Type |     Flags     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          Message ID                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                            Length                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::{ExchangeType, PayloadType, WireError};
use std::ops::Range;

/// Length of the fixed IKE header.
pub const HEADER_LEN: usize = 28;

mod field {
    use std::ops::Range;
    pub(super) const SPI_I: Range<usize> = 0..8;
    pub(super) const SPI_R: Range<usize> = 8..16;
    pub(super) const NEXT: usize = 16;
    pub(super) const VERSION: usize = 17;
    pub(super) const EXCHANGE: usize = 18;
    pub(super) const FLAGS: usize = 19;
    pub(super) const MESSAGE_ID: Range<usize> = 20..24;
    pub(super) const LENGTH: Range<usize> = 24..28;
}

/// Header flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// Set by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// Set in responses.
    pub const RESPONSE: u8 = 0x20;

    /// Whether the initiator bit is set.
    pub fn initiator(self) -> bool {
        self.0 & Self::INITIATOR != 0
    }

    /// Whether the response bit is set.
    pub fn response(self) -> bool {
        self.0 & Self::RESPONSE != 0
    }

    /// Flags for a message sent by the original initiator or responder.
    pub fn new(initiator: bool, response: bool) -> Flags {
        let mut f = 0;
        if initiator {
            f |= Self::INITIATOR;
        }
        if response {
            f |= Self::RESPONSE;
        }
        Flags(f)
    }
}

/// A read-only view of an IKE header over a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

fn u64_at(b: &[u8], r: Range<usize>) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[r]);
    u64::from_be_bytes(a)
}

fn u32_at(b: &[u8], r: Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_be_bytes(a)
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps a buffer after checking it can hold a header; after this, no
    /// accessor panics.
    pub fn new_checked(buffer: T) -> Result<Header<T>, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Header { buffer })
    }

    /// Initiator's SPI.
    pub fn spi_i(&self) -> u64 {
        u64_at(self.buffer.as_ref(), field::SPI_I)
    }

    /// Responder's SPI.
    pub fn spi_r(&self) -> u64 {
        u64_at(self.buffer.as_ref(), field::SPI_R)
    }

    /// Type of the first payload.
    pub fn next_payload(&self) -> PayloadType {
        self.buffer.as_ref()[field::NEXT].into()
    }

    /// Major version (upper nibble).
    pub fn major_version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION] >> 4
    }

    /// Exchange type.
    pub fn exchange(&self) -> ExchangeType {
        self.buffer.as_ref()[field::EXCHANGE].into()
    }

    /// Flags.
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }

    /// Message ID.
    pub fn message_id(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::MESSAGE_ID)
    }

    /// Length of the whole message, as claimed by the header.
    pub fn length(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::LENGTH)
    }
}

/// The plain representation of an IKE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// Initiator's SPI.
    pub spi_i: u64,
    /// Responder's SPI (zero in the first IKE_SA_INIT request).
    pub spi_r: u64,
    /// Type of the first payload.
    pub next_payload: PayloadType,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags.
    pub flags: Flags,
    /// Message ID.
    pub message_id: u32,
    /// Length of the whole message.
    pub length: u32,
}

impl HeaderRepr {
    /// Parses and validates a header at the start of `buf`: the version must
    /// be 2.x and the length must match the datagram (RFC 7296 §3.1).
    pub fn parse(buf: &[u8]) -> Result<HeaderRepr, WireError> {
        let h = Header::new_checked(buf)?;
        if h.major_version() != 2 {
            return Err(WireError::InvalidMajorVersion(h.major_version()));
        }
        if h.length() as usize != buf.len() {
            return Err(WireError::Malformed(
                "header length differs from datagram length",
            ));
        }
        Ok(HeaderRepr {
            spi_i: h.spi_i(),
            spi_r: h.spi_r(),
            next_payload: h.next_payload(),
            exchange: h.exchange(),
            flags: h.flags(),
            message_id: h.message_id(),
            length: h.length(),
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(self.next_payload.into());
        out.push(0x20);
        out.push(self.exchange.into());
        out.push(self.flags.0);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_are_refused() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Header::new_checked(&[0u8; HEADER_LEN][..n]).err(),
                Some(WireError::Truncated)
            );
        }
    }

    #[test]
    fn round_trip() {
        let h = HeaderRepr {
            spi_i: 0x0102030405060708,
            spi_r: 0,
            next_payload: PayloadType::Sa,
            exchange: ExchangeType::IkeSaInit,
            flags: Flags::new(true, false),
            message_id: 0,
            length: HEADER_LEN as u32,
        };
        let mut out = Vec::new();
        h.emit(&mut out);
        assert_eq!(HeaderRepr::parse(&out).unwrap(), h);
        out[17] = 0x10;
        assert_eq!(
            HeaderRepr::parse(&out),
            Err(WireError::InvalidMajorVersion(1))
        );
    }
}
