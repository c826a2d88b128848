//! The IPv6 header (RFC 8200 §3). Extension headers are not followed:
//! the data plane reads the fixed header's next header, as before.

use super::checksum::sum;
use super::{read_u16, write_u16, Error, Result};
use std::net::Ipv6Addr;

mod field {
    use super::super::Field;
    pub(super) const VER_TC_FLOW: Field = 0..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Field = 8..24;
    pub(super) const DST_ADDR: Field = 24..40;
}

/// Length of the IPv6 header.
pub const IPV6_HEADER_LEN: usize = field::DST_ADDR.end;

/// A view of an IPv6 packet. [`Self::check_len`] checks the fixed header;
/// the payload length field is checked by [`Self::payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it (see [`Self::check_len`]).
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer that holds the fixed IPv6 header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Whether the buffer holds the 40-byte fixed header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < IPV6_HEADER_LEN {
            return Err(Error);
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (6 for a packet that is one).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// The payload length field.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The next header field.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// The hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        Ipv6Addr::from(a)
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        Ipv6Addr::from(a)
    }

    /// The unfolded sum of the pseudo-header (RFC 8200 §8.1) of an
    /// upper-layer packet of `len` bytes with next header `protocol`:
    /// addresses, length, next header.
    #[inline]
    pub fn pseudo_header_sum(&self, protocol: u8, len: usize) -> u32 {
        let addrs = &self.buffer.as_ref()[field::SRC_ADDR.start..field::DST_ADDR.end];
        sum(0, addrs) + u32::from(protocol) + len as u32
    }

    /// The fixed header.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..IPV6_HEADER_LEN]
    }

    /// Everything after the fixed header to the end of the buffer,
    /// whatever the payload length says.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[IPV6_HEADER_LEN..]
    }

    /// The payload as the payload length has it; `None` if the buffer does
    /// not hold that much.
    #[inline]
    pub fn payload(&self) -> Option<&[u8]> {
        let end = IPV6_HEADER_LEN + usize::from(self.payload_len());
        self.buffer.as_ref().get(IPV6_HEADER_LEN..end)
    }

    /// Whether `other` could be a later segment of the same TCP flow sent
    /// with this header: every field equal but the payload length.
    pub fn same_but_length<U: AsRef<[u8]>>(&self, other: &Ipv6Packet<U>) -> bool {
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        a[field::VER_TC_FLOW] == b[field::VER_TC_FLOW]
            && a[field::NXT_HDR..field::DST_ADDR.end] == b[field::NXT_HDR..field::DST_ADDR.end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, with traffic class and flow label zero.
    #[inline]
    pub fn set_version(&mut self) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
    }

    /// Sets the payload length field.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the next header field.
    #[inline]
    pub fn set_next_header(&mut self, next: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = next;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hops;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Everything after the fixed header, to the end of the buffer.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[IPV6_HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[5] = 8;
        p[6] = 17;
        p[7] = 64;
        p[8..24].copy_from_slice(&"2001:db8:1::1".parse::<Ipv6Addr>().expect("v6").octets());
        p[24..40].copy_from_slice(&"2001:db8:2::1".parse::<Ipv6Addr>().expect("v6").octets());
        p
    }

    #[test]
    fn fields_read_as_laid_out_and_setters_write_them() {
        let b = packet();
        let p = Ipv6Packet::new_checked(&b[..]).expect("checked");
        assert_eq!((p.version(), p.payload_len(), p.next_header()), (6, 8, 17));
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(
            p.src_addr(),
            "2001:db8:1::1".parse::<Ipv6Addr>().expect("v6")
        );
        assert_eq!(
            p.dst_addr(),
            "2001:db8:2::1".parse::<Ipv6Addr>().expect("v6")
        );
        assert_eq!(p.payload(), Some(&b[40..]));
        let mut c = vec![0u8; 48];
        let mut q = Ipv6Packet::new_unchecked(&mut c[..]);
        q.set_version();
        q.set_payload_len(8);
        q.set_next_header(17);
        q.set_hop_limit(64);
        q.set_src_addr(p.src_addr());
        q.set_dst_addr(p.dst_addr());
        assert_eq!(c, b);
    }

    #[test]
    fn short_buffers_and_long_payload_lengths_are_refused() {
        let mut b = packet();
        for n in 0..40 {
            assert_eq!(Ipv6Packet::new_checked(&b[..n]), Err(Error));
        }
        b[5] = 9;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).map(|p| p.payload().is_none()),
            Ok(true)
        );
    }
}
