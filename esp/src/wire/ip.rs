//! Either IP version behind one view, and the port words of transport
//! headers.

use super::{read_u16, Error, Ipv4Packet, Ipv6Packet, Result};
use std::net::IpAddr;

mod field {
    use super::super::Field;
    /// The version nibble, where IPv4 and IPv6 both have it.
    pub(super) const VERSION: usize = 0;
    /// Source and destination ports of TCP, UDP, SCTP and UDP-Lite.
    pub(super) const SRC_PORT: Field = 0..2;
    pub(super) const DST_PORT: Field = 2..4;
}

/// The IP version of a packet (the high nibble of its first byte).
#[inline]
pub fn version(packet: &[u8]) -> Option<u8> {
    packet.get(field::VERSION).map(|b| b >> 4)
}

/// An IPv4 or IPv6 packet, by its version nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpPacket<T: AsRef<[u8]>> {
    /// IPv4.
    V4(Ipv4Packet<T>),
    /// IPv6.
    V6(Ipv6Packet<T>),
}

impl<T: AsRef<[u8]>> IpPacket<T> {
    /// Wraps a buffer that holds a whole IPv4 or IPv6 header (see
    /// [`Ipv4Packet::check_len`], [`Ipv6Packet::check_len`]).
    pub fn new_checked(buffer: T) -> Result<Self> {
        match version(buffer.as_ref()) {
            Some(4) => Ipv4Packet::new_checked(buffer).map(IpPacket::V4),
            Some(6) => Ipv6Packet::new_checked(buffer).map(IpPacket::V6),
            _ => Err(Error),
        }
    }

    /// Whether IPv4.
    #[inline]
    pub fn is_v4(&self) -> bool {
        matches!(self, IpPacket::V4(_))
    }

    /// The header length (IPv6: the fixed header).
    #[inline]
    pub fn header_len(&self) -> usize {
        match self {
            IpPacket::V4(p) => p.header_len(),
            IpPacket::V6(_) => super::IPV6_HEADER_LEN,
        }
    }

    /// The protocol (IPv6: the fixed header's next header).
    #[inline]
    pub fn protocol(&self) -> u8 {
        match self {
            IpPacket::V4(p) => p.protocol(),
            IpPacket::V6(p) => p.next_header(),
        }
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> IpAddr {
        match self {
            IpPacket::V4(p) => p.src_addr().into(),
            IpPacket::V6(p) => p.src_addr().into(),
        }
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> IpAddr {
        match self {
            IpPacket::V4(p) => p.dst_addr().into(),
            IpPacket::V6(p) => p.dst_addr().into(),
        }
    }

    /// The packet's length as its header says (IPv4 total length, IPv6
    /// fixed header plus payload length).
    #[inline]
    pub fn claimed_len(&self) -> usize {
        match self {
            IpPacket::V4(p) => usize::from(p.total_len()),
            IpPacket::V6(p) => super::IPV6_HEADER_LEN + usize::from(p.payload_len()),
        }
    }

    /// Whether the header checksum verifies (IPv6 has none).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        match self {
            IpPacket::V4(p) => p.verify_checksum(),
            IpPacket::V6(_) => true,
        }
    }

    /// The unfolded pseudo-header sum for an upper-layer packet of `len`
    /// bytes and protocol `protocol`.
    #[inline]
    pub fn pseudo_header_sum(&self, protocol: u8, len: usize) -> u32 {
        match self {
            IpPacket::V4(p) => p.pseudo_header_sum(protocol, len),
            IpPacket::V6(p) => p.pseudo_header_sum(protocol, len),
        }
    }

    /// Everything after the header to the end of the buffer.
    #[inline]
    pub fn body(&self) -> &[u8] {
        match self {
            IpPacket::V4(p) => p.body(),
            IpPacket::V6(p) => p.body(),
        }
    }

    /// The payload as the length field has it (see [`Ipv4Packet::payload`]).
    #[inline]
    pub fn payload(&self) -> Option<&[u8]> {
        match self {
            IpPacket::V4(p) => p.payload(),
            IpPacket::V6(p) => p.payload(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IpPacket<T> {
    /// Sets the length field for a packet of `len` bytes (IPv4: the total
    /// length; IPv6: the payload length, `len` less the fixed header).
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        match self {
            IpPacket::V4(p) => p.set_total_len(len as u16),
            IpPacket::V6(p) => p.set_payload_len(len.saturating_sub(super::IPV6_HEADER_LEN) as u16),
        }
    }

    /// Everything after the header, to the end of the buffer.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        match self {
            IpPacket::V4(p) => p.body_mut(),
            IpPacket::V6(p) => p.body_mut(),
        }
    }
}

/// A view of the source and destination ports that TCP, UDP, SCTP and
/// UDP-Lite all carry in their first four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ports<T> {
    /// Wraps the start of a transport header that holds both ports.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < field::DST_PORT.end {
            return Err(Error);
        }
        Ok(Ports { buffer })
    }

    /// The source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// The destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_nibble_picks_the_view() {
        let mut v4 = [0u8; 24];
        v4[0] = 0x45;
        assert!(IpPacket::new_checked(&v4[..]).is_ok_and(|p| p.is_v4() && p.body().len() == 4));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        assert!(IpPacket::new_checked(&v6[..]).is_ok_and(|p| !p.is_v4()));
        assert_eq!(IpPacket::new_checked(&v6[..39]), Err(Error));
        v6[0] = 0x50;
        assert_eq!(IpPacket::new_checked(&v6[..]), Err(Error));
        assert_eq!(IpPacket::new_checked(&[0u8; 0][..]), Err(Error));
        assert_eq!(version(&[]), None);
    }

    #[test]
    fn ports_need_four_bytes() {
        let p = Ports::new_checked(&[0x03, 0xe8, 0, 53][..]).expect("4 bytes");
        assert_eq!((p.src_port(), p.dst_port()), (1000, 53));
        assert!(Ports::new_checked(&[0u8; 3][..]).is_err());
    }
}
