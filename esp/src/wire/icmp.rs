//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages as far as the data plane
//! reads and writes them: the type, and the "fragmentation needed" /
//! "packet too big" errors it sends.

use super::{write_u16, write_u32, Error, Result};

mod field {
    use super::super::Field;
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Field = 2..4;
    /// RFC 1191 §4: the next-hop MTU in the low half of the second word
    /// of a "fragmentation needed" message.
    pub(super) const NEXT_HOP_MTU: Field = 6..8;
    /// RFC 4443 §3.2: the MTU of a "packet too big" message.
    pub(super) const MTU: Field = 4..8;
}

/// Length of the ICMP and ICMPv6 header: type, code, checksum and the
/// 32-bit word every message has after them (RFC 792, RFC 4443 §2.1).
pub const ICMP_HEADER_LEN: usize = field::MTU.end;

/// The type of an ICMP or ICMPv6 message, however short the rest of it;
/// `None` for no bytes at all.
#[inline]
pub fn icmp_type(message: &[u8]) -> Option<u8> {
    message.get(field::TYPE).copied()
}

/// A view of an ICMP or ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps a buffer without checking it (see [`Self::check_len`]).
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps a buffer that holds the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Whether the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < ICMP_HEADER_LEN {
            return Err(Error);
        }
        Ok(())
    }

    /// The message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The message: everything from the type on.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the type and code.
    #[inline]
    pub fn set_type_and_code(&mut self, msg_type: u8, code: u8) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = msg_type;
        b[field::CODE] = code;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the next-hop MTU of an ICMP "fragmentation needed" (RFC 1191).
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        write_u16(self.buffer.as_mut(), field::NEXT_HOP_MTU, mtu);
    }

    /// Sets the MTU of an ICMPv6 "packet too big" (RFC 4443 §3.2).
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        write_u32(self.buffer.as_mut(), field::MTU, mtu);
    }

    /// What follows the header (the quoted datagram of an error).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[ICMP_HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_written_where_the_rfcs_put_them() {
        let mut b = [0u8; 10];
        let mut m = IcmpPacket::new_checked(&mut b[..]).expect("checked");
        m.set_type_and_code(3, 4);
        m.set_next_hop_mtu(1214);
        m.set_checksum(0xabcd);
        m.data_mut().copy_from_slice(&[9, 9]);
        assert_eq!((m.msg_type(), m.code()), (3, 4));
        assert_eq!(b, [3, 4, 0xab, 0xcd, 0, 0, 0x04, 0xbe, 9, 9]);
        let mut m = IcmpPacket::new_checked(&mut b[..]).expect("checked");
        m.set_mtu(1280);
        assert_eq!(&b[4..8], &[0, 0, 5, 0]);
        for n in 0..8 {
            assert_eq!(IcmpPacket::new_checked(&b[..n]), Err(Error));
        }
        assert_eq!((icmp_type(&b[..1]), icmp_type(&[])), (Some(3), None));
    }
}
