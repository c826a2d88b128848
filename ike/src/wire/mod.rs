//! The IKEv2 wire format (RFC 7296 §3).
//!
//! Fixed headers are views over a byte buffer ([`Header`]): after
//! [`Header::new_checked`] no accessor can panic. Payload chains are decoded
//! by a bounded [`Reader`] into plain representations ([`Payload`]) and
//! encoded again by [`emit_chain`]; every variable-length structure is read
//! through a sub-reader that must be consumed exactly, so trailing bytes are
//! an error rather than silently ignored. IANA registries are enums that keep
//! unknown values, so everything round-trips.

mod header;
mod payload;
mod proposal;
mod redirect;
mod registry;

pub use header::{Flags, Header, HeaderRepr, HEADER_LEN};
pub use payload::{emit_chain, parse_chain, Delete, Notify, Payload, PayloadsExt, TrafficSelector};
pub use proposal::{Attribute, Proposal, Transform};
pub use redirect::{GatewayIdentity, Redirect};
pub use registry::*;

use std::fmt;

/// What was wrong with a message on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends before a structure does.
    Truncated,
    /// A length field disagrees with the data around it, or a field holds a
    /// value the RFC forbids.
    Malformed(&'static str),
    /// A structure has bytes left over after its last field.
    TrailingBytes,
    /// An unknown payload carried the critical bit (RFC 7296 §2.5).
    UnsupportedCritical(u8),
    /// The major version is not 2 (RFC 7296 §2.5).
    InvalidMajorVersion(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("truncated"),
            WireError::Malformed(what) => write!(f, "malformed: {what}"),
            WireError::TrailingBytes => f.write_str("trailing bytes"),
            WireError::UnsupportedCritical(t) => {
                write!(f, "unsupported critical payload type {t}")
            }
            WireError::InvalidMajorVersion(v) => write!(f, "unsupported IKE major version {v}"),
        }
    }
}

impl std::error::Error for WireError {}

/// A bounded, borrowing reader. Every read checks bounds; nothing panics.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// A sub-reader over the next `n` bytes.
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, WireError> {
        self.take(n).map(Reader::new)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Fails unless everything was read.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// Converts a length to a 16-bit length field, refusing what does not fit.
pub fn len16(n: usize) -> Result<u16, WireError> {
    u16::try_from(n).map_err(|_| WireError::Malformed("structure longer than 65535 bytes"))
}
