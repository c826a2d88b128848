//! The IPv4 header (RFC 791 §3.1).

use super::checksum::{fold, sum};
use super::{read_u16, write_u16, Error, Result};
use std::net::Ipv4Addr;

mod field {
    use super::super::Field;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const LENGTH: Field = 2..4;
    pub(super) const IDENT: Field = 4..6;
    pub(super) const FLG_OFF: Field = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Field = 10..12;
    pub(super) const SRC_ADDR: Field = 12..16;
    pub(super) const DST_ADDR: Field = 16..20;
}

/// Length of the IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = field::DST_ADDR.end;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
///
/// [`Self::check_len`] checks the header alone (IHL at least 5, the
/// buffer holding the header and its options); the total length field is
/// checked by [`Self::payload`], so the header of a TSO super-packet or of
/// a packet being quoted can be read whatever that field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it (see [`Self::check_len`]).
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer that holds a whole IPv4 header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Whether the buffer holds the fixed header, the IHL is at least 5
    /// (RFC 791: "the minimum value for a correct header is 5") and the
    /// options it announces fit the buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < IPV4_HEADER_LEN {
            return Err(Error);
        }
        let header = self.header_len();
        if header < IPV4_HEADER_LEN || header > len {
            return Err(Error);
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for a packet that is one).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes, options included (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The total length field.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't Fragment.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More Fragments.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// The fragment offset field, in units of 8 bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK
    }

    /// Whether this is a fragment: a later one, or one with more to come.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// The protocol field.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Whether the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        fold(sum(0, self.header())) == 0xffff
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The unfolded sum of the pseudo-header (RFC 9293 §3.1) of an
    /// upper-layer packet of `len` bytes and protocol `protocol` in this
    /// packet: addresses, protocol, length.
    #[inline]
    pub fn pseudo_header_sum(&self, protocol: u8, len: usize) -> u32 {
        let addrs = &self.buffer.as_ref()[field::SRC_ADDR.start..field::DST_ADDR.end];
        sum(0, addrs) + u32::from(protocol) + len as u32
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Everything after the header to the end of the buffer, whatever the
    /// total length says.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The payload as the total length has it; `None` if the buffer does
    /// not hold that much or the total length is shorter than the header.
    /// Bytes after it (link padding) are not part of it.
    #[inline]
    pub fn payload(&self) -> Option<&[u8]> {
        let total = usize::from(self.total_len());
        self.buffer.as_ref().get(self.header_len()..total)
    }

    /// Whether `other` could be a later segment of the same TCP flow sent
    /// with this header: every field equal but the total length, the
    /// identification and the checksum (and options, which GRO refuses).
    pub fn same_but_length_ident_checksum<U: AsRef<[u8]>>(&self, other: &Ipv4Packet<U>) -> bool {
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        a[field::VER_IHL..=field::DSCP_ECN] == b[field::VER_IHL..=field::DSCP_ECN]
            && a[field::FLG_OFF.start..=field::PROTOCOL]
                == b[field::FLG_OFF.start..=field::PROTOCOL]
            && a[field::SRC_ADDR.start..field::DST_ADDR.end]
                == b[field::SRC_ADDR.start..field::DST_ADDR.end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and a header of `header_len` bytes (a multiple of 4,
    /// at least 20).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets the total length field.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol field.
    #[inline]
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes and sets the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = !fold(sum(0, self.header()));
        self.set_checksum(c);
    }

    /// Everything after the header, to the end of the buffer.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 791-shaped UDP packet 198.51.100.1 → 203.0.113.1, DF, ID 0x1234.
    const PACKET: [u8; 28] = [
        0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 198, 51, 100, 1, 203, 0, 113, 1, 0x03,
        0xe8, 0, 53, 0, 8, 0, 0,
    ];

    #[test]
    fn fields_read_as_laid_out() {
        let mut b = PACKET;
        let mut p = Ipv4Packet::new_checked(&mut b[..]).expect("checked");
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!((p.version(), p.header_len(), p.total_len()), (4, 20, 28));
        assert_eq!(
            (p.ident(), p.dont_frag(), p.more_frags()),
            (0x1234, true, false)
        );
        assert_eq!((p.frag_offset(), p.protocol()), (0, 17));
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!(p.payload(), Some(&PACKET[20..]));
        assert_eq!(p.body(), &PACKET[20..]);
        assert!(!p.is_fragment());
    }

    #[test]
    fn headers_that_do_not_fit_are_refused() {
        for n in 0..20 {
            assert_eq!(Ipv4Packet::new_checked(&PACKET[..n]), Err(Error));
        }
        let mut b = PACKET;
        for ihl in [0u8, 4] {
            b[0] = 0x40 | ihl;
            assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(Error), "IHL {ihl}");
        }
        b[0] = 0x48; // 32-byte header in 28 bytes
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(Error));
        // The header alone is checked; the total length is payload()'s.
        let mut b = PACKET;
        b[3] = 200;
        let p = Ipv4Packet::new_checked(&b[..]).expect("header fits");
        assert_eq!(p.payload(), None);
        b[3] = 10;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).map(|p| p.payload().is_none()),
            Ok(true)
        );
    }

    #[test]
    fn setters_write_their_fields() {
        let mut b = [0u8; 20];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version_and_header_len(20);
        p.set_total_len(20);
        p.set_ident(0x1234);
        p.set_ttl(64);
        p.set_protocol(1);
        p.set_src_addr(Ipv4Addr::new(203, 0, 113, 1));
        p.set_dst_addr(Ipv4Addr::new(198, 51, 100, 1));
        p.fill_checksum();
        assert!(p.check_len().is_ok() && p.verify_checksum());
        let expect = [
            0x45, 0, 0, 20, 0x12, 0x34, 0, 0, 64, 1, 0, 0, 203, 0, 113, 1, 198, 51, 100, 1,
        ];
        assert_eq!(b[..10], expect[..10]);
        assert_eq!(b[12..], expect[12..]);
    }
}
