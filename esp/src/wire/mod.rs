//! Typed views of the headers the data plane reads and writes: the ESP
//! header ([`EspHeader`]), IPv4 ([`Ipv4Packet`]), IPv6 ([`Ipv6Packet`]),
//! either of them ([`IpPacket`]), TCP ([`TcpHeader`]), the port words that
//! TCP, UDP, SCTP and UDP-Lite share ([`Ports`]) and ICMP errors
//! ([`IcmpPacket`]), with RFC 1071 checksums ([`checksum`]).
//!
//! ```text
//!  &[u8] / &mut [u8] ──new_checked──▶ view ──accessors / setters──▶ fields
//!                    (check_len: lengths  (field ranges declared once,
//!                     and length fields)   never a panic after the check)
//! ```
//!
//! Each view wraps a buffer (`&[u8]`, `&mut [u8]`) and names its fields by
//! byte ranges declared once, in its `field` module. `new_checked` (or
//! `new_unchecked` followed by `check_len`) makes sure the buffer holds
//! every field the view can reach; after that, no accessor or setter can
//! panic. Views copy nothing and allocate nothing, so the hot path stays
//! as it was. Nothing outside this module indexes into a header.
//!
//! # Why not smoltcp
//!
//! These views have smoltcp's shape (`Packet<T: AsRef<[u8]>>`,
//! `new_unchecked`/`new_checked`/`check_len`, private `field` ranges), and
//! smoltcp's `wire` module (with `proto-ipv4`, `proto-ipv6`, `medium-ip`)
//! was the first choice. It was checked and does not fit, so these are
//! written by hand:
//!
//! - smoltcp 0.13, whose IPv4 `check_len` refuses an IHL below 5, needs
//!   Rust 1.91 (the workspace's MSRV is 1.89); 0.12 accepts IHL < 5, so a
//!   checked IPv4 view there could still give a header shorter than 20
//!   bytes.
//! - Its IPv4 `check_len` is one check of the whole packet against the
//!   total-length field. The TSO path reads the headers of a super-packet
//!   and MSS clamping and ICMP quoting read headers whatever the total
//!   length says (as before); they need the header check alone, which
//!   [`Ipv4Packet::check_len`] is, with [`Ipv4Packet::payload`] for the
//!   length field.
//! - Its field ranges are private: GRO's "the same header but for length,
//!   identification and checksum" and the TCP equivalent could not be
//!   said through it, and would be hand-indexed again beside it.
//! - Its ESP view's setters are private (sealing could not write the
//!   header) and need another feature, `proto-ipsec-esp`; there is no TCP
//!   MSS setter for an in-place clamp.
//! - `medium-ip` turns on its `socket` feature: an interface and socket
//!   layer compiled for nothing, plus `managed`, `heapless`, `byteorder`,
//!   `bitflags` and `cfg-if`, for what is here a few hundred lines of views.

pub mod checksum;
mod esp;
mod icmp;
mod ip;
mod ipv4;
mod ipv6;
mod tcp;

pub use esp::{EspHeader, ESP_HEADER_LEN};
pub use icmp::{icmp_type, IcmpPacket, ICMP_HEADER_LEN};
pub use ip::{version, IpPacket, Ports};
pub use ipv4::{Ipv4Packet, IPV4_HEADER_LEN};
pub use ipv6::{Ipv6Packet, IPV6_HEADER_LEN};
pub use tcp::{flags as tcp_flags, TcpHeader, TCP_CHECKSUM_OFFSET, TCP_HEADER_LEN};

use std::ops::Range;

/// IANA protocol numbers the data plane looks at.
pub mod protocol {
    /// ICMP (RFC 792).
    pub const ICMP: u8 = 1;
    /// IPv4 in IP, the next header of an ESP packet carrying IPv4.
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 in IP, the next header of an ESP packet carrying IPv6.
    pub const IPV6: u8 = 41;
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// UDP-Lite.
    pub const UDPLITE: u8 = 136;
}

/// A buffer too short for the header it is viewed as, or a length field
/// that does not fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("truncated or inconsistent header")
    }
}

impl std::error::Error for Error {}

/// The result of a length check.
pub type Result<T> = std::result::Result<T, Error>;

/// A field: the bytes it occupies, from the start of its header.
type Field = Range<usize>;

#[inline]
fn read_u16(data: &[u8], field: Field) -> u16 {
    let b = &data[field];
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
fn read_u32(data: &[u8], field: Field) -> u32 {
    let b = &data[field];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
fn write_u16(data: &mut [u8], field: Field, value: u16) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

#[inline]
fn write_u32(data: &mut [u8], field: Field, value: u32) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every accessor of every view, after its check passed.
    fn read_everything(b: &[u8]) {
        if let Ok(h) = EspHeader::new_checked(b) {
            let _ = (h.spi(), h.spi_bytes(), h.seq_number(), h.payload());
        }
        if let Ok(p) = IpPacket::new_checked(b) {
            let _ = (p.header_len(), p.protocol(), p.src_addr(), p.dst_addr());
            let _ = (p.claimed_len(), p.verify_checksum(), p.body(), p.payload());
            let _ = p.pseudo_header_sum(protocol::TCP, p.body().len());
            if let IpPacket::V4(v4) = &p {
                let _ = (v4.version(), v4.total_len(), v4.ident(), v4.dont_frag());
                let _ = (v4.is_fragment(), v4.checksum(), v4.header());
                let _ = v4.same_but_length_ident_checksum(v4);
            }
            if let IpPacket::V6(v6) = &p {
                let _ = (
                    v6.version(),
                    v6.hop_limit(),
                    v6.header(),
                    v6.same_but_length(v6),
                );
            }
            if let Ok(t) = TcpHeader::new_checked(p.body()) {
                let _ = (t.src_port(), t.dst_port(), t.seq_number(), t.ack_number());
                let _ = (
                    t.flags(),
                    t.window(),
                    t.checksum(),
                    t.options(),
                    t.payload(),
                );
                let _ = (t.mss(), t.same_but_seq_flags_checksum(&t));
            }
            if let Ok(m) = IcmpPacket::new_checked(p.body()) {
                let _ = (m.msg_type(), m.code());
            }
            if let Ok(ports) = Ports::new_checked(p.body()) {
                let _ = (ports.src_port(), ports.dst_port());
            }
        }
    }

    /// The no-panic contract: whatever the bytes, a view that passed its
    /// check can be read in full, and its MSS setter stays inside it.
    #[test]
    fn no_accessor_panics_after_the_check() {
        let mut syn = vec![
            0x45, 0, 0, 48, 0, 0, 0x40, 0, 64, 6, 0, 0, 203, 0, 113, 1, 198, 51, 100, 1,
        ];
        syn.extend_from_slice(&[
            0x9c, 0x40, 1, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x70, 2, 0xfa, 0,
        ]);
        syn.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 7, 2, 4, 0x05, 0xb4]);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
        v6.extend_from_slice(&[0x20; 32]);
        v6.extend_from_slice(&[2, 0, 0, 0, 0, 0, 5, 0]);
        let mut state = 0x2545_f491_u32;
        for base in [syn, v6] {
            for cut in 0..=base.len() {
                read_everything(&base[..cut]);
            }
            // Every byte of the headers set to values that stress lengths.
            for at in 0..base.len() {
                for v in [0u8, 1, 2, 4, 0x0f, 0x40, 0x4f, 0x5f, 0x60, 0xf0, 0xff] {
                    let mut b = base.clone();
                    b[at] = v;
                    read_everything(&b);
                    if let Ok(mut p) = IpPacket::new_checked(&mut b[..]) {
                        if let Ok(mut t) = TcpHeader::new_checked(p.body_mut()) {
                            t.set_mss(1);
                        }
                    }
                }
            }
            // And arbitrary bytes (xorshift), at every length up to the base's.
            for _ in 0..2000 {
                let mut b = base.clone();
                for x in b.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    *x = state as u8;
                }
                b[0] = base[0];
                let n = (state as usize >> 8) % (b.len() + 1);
                read_everything(&b[..n]);
            }
        }
    }
}
