//! What a tunnel router does about packet sizes (RFC 4459): a facility's
//! tunnel MTU, TCP MSS clamping, and ICMP "fragmentation needed" /
//! "packet too big" for inner packets that no longer fit.
//!
//! ```text
//!  TUN ─▶ inner > tunnel MTU? ── DF or IPv6 ─▶ ICMP back to the sender (TUN), drop
//!         TCP SYN? ─▶ MSS ≤ tunnel MTU − 40 (IPv4) / − 60 (IPv6) ─▶ seal ─▶ UDP
//!  UDP ─▶ open ─▶ TCP SYN? ─▶ the same clamp ─▶ TUN
//! ```
//!
//! The tunnel MTU of a facility is what the operator configured, lowered
//! while the path to the facility is known to be smaller (the kernel's
//! path MTU, learned when a send fails with `EMSGSIZE`; see
//! `datapath`). Written by hand: a few fixed header fields, read and
//! written through [`crate::wire`]; no crate does this for a userspace
//! tunnel.

use crate::wire::checksum::{fold, sum};
use crate::wire::{
    icmp_type, protocol, tcp_flags, IcmpPacket, IpPacket, Ipv4Packet, Ipv6Packet, TcpHeader,
    ICMP_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};
use std::sync::atomic::{AtomicU32, Ordering};

/// The smallest MTU IPv6 links must carry (RFC 8200 §5): IPv6 inner
/// packets up to this size are always sent (the outer datagram is then
/// fragmented), and "packet too big" never says less.
pub const IPV6_MIN_MTU: u32 = 1280;

/// The tunnel MTU of one facility, shared by its SAs and the workers.
#[derive(Debug)]
pub struct TunnelMtu {
    /// What the operator configured (or the TUN device's MTU).
    configured: AtomicU32,
    /// The largest inner packet the path carries, as last learned (0: not
    /// known to be smaller than configured).
    learned: AtomicU32,
}

impl Default for TunnelMtu {
    fn default() -> Self {
        TunnelMtu {
            configured: AtomicU32::new(u32::MAX),
            learned: AtomicU32::new(0),
        }
    }
}

impl TunnelMtu {
    /// Largest inner packet sent whole now.
    pub fn get(&self) -> u32 {
        let configured = self.configured.load(Ordering::Relaxed);
        match self.learned.load(Ordering::Relaxed) {
            0 => configured,
            learned => learned.min(configured),
        }
    }

    /// The configured tunnel MTU.
    pub fn configured(&self) -> u32 {
        self.configured.load(Ordering::Relaxed)
    }

    /// The learned path limit, if any.
    pub fn learned(&self) -> Option<u32> {
        Some(self.learned.load(Ordering::Relaxed)).filter(|m| *m != 0)
    }

    /// Sets the configured tunnel MTU.
    pub fn configure(&self, mtu: u32) {
        self.configured.store(mtu, Ordering::Relaxed);
    }

    /// Records that the path carries inner packets of at most `mtu` bytes;
    /// true if that changes the tunnel MTU (to be reported; two workers
    /// learning at once may both report it).
    pub fn learn(&self, mtu: u32) -> bool {
        let before = self.get();
        self.learned.store(mtu, Ordering::Relaxed);
        self.get() != before
    }

    /// Forgets the learned limit (it expired, as the kernel's does).
    pub fn forget(&self) {
        self.learned.store(0, Ordering::Relaxed);
    }
}

/// The largest inner packet whose ESP-in-UDP datagram fits `path_mtu`,
/// given the IP and UDP header length of the outer datagram and the ESP
/// overhead for an inner packet of a given size.
pub fn inner_fit(path_mtu: u32, outer_headers: u32, overhead: impl Fn(usize) -> usize) -> u32 {
    let mut inner = path_mtu.saturating_sub(outer_headers);
    // Overhead varies by a padding block at most: walk down to the fit.
    while inner > 0
        && inner as usize + overhead(inner as usize) + outer_headers as usize > path_mtu as usize
    {
        inner -= 1;
    }
    inner
}

/// Clamps the MSS option of a TCP SYN in `packet` (a complete IPv4 or
/// IPv6 packet with valid checksums) to what fits a tunnel MTU of `mtu`,
/// fixing the TCP checksum (RFC 1624). Returns true if it changed the
/// packet. Anything that is not an unfragmented TCP SYN with an MSS option
/// is left alone.
pub fn clamp_mss(packet: &mut [u8], mtu: u32) -> bool {
    let Ok(mut ip) = IpPacket::new_checked(packet) else {
        return false;
    };
    // Neither a later fragment nor one with more to come.
    if ip.protocol() != protocol::TCP || matches!(&ip, IpPacket::V4(v4) if v4.is_fragment()) {
        return false;
    }
    let max = mtu
        .saturating_sub(if ip.is_v4() { 40 } else { 60 })
        .min(0xffff) as u16;
    let Ok(mut tcp) = TcpHeader::new_checked(ip.body_mut()) else {
        return false;
    };
    if tcp.flags() & tcp_flags::SYN == 0 {
        return false;
    }
    tcp.clamp_mss(max).is_some()
}

/// Whether an inner packet larger than the tunnel MTU must be refused with
/// an ICMP error rather than sent in a fragmented outer datagram: IPv4 with
/// DF set, or IPv6 larger than the IPv6 minimum MTU (RFC 8200 §5: links
/// below 1280 fragment beneath IPv6). `packet` is one that
/// [`crate::selector::Flow::parse`] accepted; anything else is not refused.
pub fn must_not_fragment(packet: &[u8]) -> bool {
    match IpPacket::new_checked(packet) {
        Ok(IpPacket::V4(v4)) => v4.dont_frag(),
        Ok(IpPacket::V6(_)) => packet.len() > IPV6_MIN_MTU as usize,
        Err(_) => false,
    }
}

/// The most bytes of the offending packet an ICMPv4 error quotes (a 576-
/// byte datagram in all, as RFC 1812 §4.3.2.3 allows).
const ICMP4_QUOTE: usize = 576 - IPV4_HEADER_LEN - ICMP_HEADER_LEN;
/// The most an ICMPv6 error quotes (RFC 4443 §2.4 (c): within 1280 bytes).
const ICMP6_QUOTE: usize = 1280 - IPV6_HEADER_LEN - ICMP_HEADER_LEN;
/// Room an ICMP reply needs in the caller's buffer.
pub const ICMP_REPLY_MAX: usize = 1280;
/// RFC 792: an error quotes the header and "the first 64 bits of the
/// original datagram's data"; a packet without them is not answered.
const QUOTED_DATA: usize = 8;
/// ICMP destination unreachable (RFC 792), code "fragmentation needed and
/// DF set"; ICMPv6 packet too big (RFC 4443 §3.2).
const ICMP_UNREACHABLE: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMP error types (RFC 1122 §3.2.2: no error about one): unreachable,
/// source quench, redirect, time exceeded, parameter problem. ICMPv6 error
/// types are those below 128 (RFC 4443 §2.1).
const ICMP_ERRORS: [u8; 5] = [3, 4, 5, 11, 12];
const ICMPV6_INFO_MIN: u8 = 128;
/// TTL / hop limit of the replies.
const REPLY_TTL: u8 = 64;

/// Writes into `out` the ICMP "fragmentation needed" (RFC 792, RFC 1191)
/// or ICMPv6 "packet too big" (RFC 4443 §3.2) that tells the sender of
/// `packet` to send at most `mtu` bytes. Its source is the packet's
/// destination, so that the hub's kernel accepts it from the TUN device
/// (a reverse-path check sees a facility address there) and forwards or
/// delivers it to the sender. Returns its length; `None` when no error
/// may be sent (RFC 1122 §3.2.2 / RFC 4443 §2.4 (e): not about an ICMP
/// error, a non-first fragment, or a multicast or unspecified source).
pub fn too_big_reply(packet: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    match IpPacket::new_checked(packet).ok()? {
        IpPacket::V4(ip) => {
            if ip.body().len() < QUOTED_DATA {
                return None;
            }
            let src = ip.src_addr();
            let is_error = ip.protocol() == protocol::ICMP
                && icmp_type(ip.body()).is_some_and(|t| ICMP_ERRORS.contains(&t));
            if ip.frag_offset() != 0
                || is_error
                || src.is_multicast()
                || src.is_broadcast()
                || src.is_unspecified()
            {
                return None;
            }
            let quote = packet.len().min(ICMP4_QUOTE);
            let icmp_len = ICMP_HEADER_LEN + quote;
            let total = IPV4_HEADER_LEN + icmp_len;
            let out = out.get_mut(..total)?;
            out.fill(0);
            let mut reply = Ipv4Packet::new_unchecked(&mut *out);
            reply.set_version_and_header_len(IPV4_HEADER_LEN);
            reply.set_total_len(total as u16);
            reply.set_ttl(REPLY_TTL);
            reply.set_protocol(protocol::ICMP);
            reply.set_src_addr(ip.dst_addr());
            reply.set_dst_addr(src);
            reply.fill_checksum();
            let mut icmp = IcmpPacket::new_unchecked(reply.body_mut());
            icmp.set_type_and_code(ICMP_UNREACHABLE, ICMP_FRAG_NEEDED);
            icmp.set_next_hop_mtu(mtu.min(0xffff) as u16);
            icmp.data_mut().copy_from_slice(&packet[..quote]);
            let icmp_sum = !fold(sum(0, icmp.as_bytes()));
            icmp.set_checksum(icmp_sum);
            Some(total)
        }
        IpPacket::V6(ip) => {
            let src = ip.src_addr();
            let is_error = ip.next_header() == protocol::ICMPV6
                && icmp_type(ip.body()).is_some_and(|t| t < ICMPV6_INFO_MIN);
            if is_error || src.is_multicast() || src.is_unspecified() {
                return None;
            }
            let quote = packet.len().min(ICMP6_QUOTE);
            let icmp_len = ICMP_HEADER_LEN + quote;
            let total = IPV6_HEADER_LEN + icmp_len;
            let out = out.get_mut(..total)?;
            out.fill(0);
            let mut reply = Ipv6Packet::new_unchecked(&mut *out);
            reply.set_version();
            reply.set_payload_len(icmp_len as u16);
            reply.set_next_header(protocol::ICMPV6);
            reply.set_hop_limit(REPLY_TTL);
            reply.set_src_addr(ip.dst_addr());
            reply.set_dst_addr(src);
            // Pseudo-header (RFC 8200 §8.1): addresses, length, next header.
            let pseudo = reply.pseudo_header_sum(protocol::ICMPV6, icmp_len);
            let mut icmp = IcmpPacket::new_unchecked(reply.body_mut());
            icmp.set_type_and_code(ICMPV6_PACKET_TOO_BIG, 0);
            icmp.set_mtu(mtu.max(IPV6_MIN_MTU));
            icmp.data_mut().copy_from_slice(&packet[..quote]);
            let icmp_sum = !fold(sum(pseudo, icmp.as_bytes()));
            icmp.set_checksum(icmp_sum);
            Some(total)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A TCP/IPv4 SYN with MSS `mss`, window scale and SACK options, and
    /// correct checksums.
    fn syn4(mss: u16, df: bool) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&48u16.to_be_bytes());
        p[6] = if df { 0x40 } else { 0 };
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[203, 0, 113, 1]);
        p[16..20].copy_from_slice(&[198, 51, 100, 1]);
        let ip = !fold(sum(0, &p[..20]));
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&443u16.to_be_bytes());
        t[12] = 7 << 4;
        t[13] = 0x02;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t[20..28].copy_from_slice(&[1, 3, 3, 7, 2, 4, 0, 0]);
        t[24..26].copy_from_slice(&[2, 4]);
        t[26..28].copy_from_slice(&mss.to_be_bytes());
        assert!(crate::offload::tcp_checksum(&mut p));
        p
    }

    fn tcp_ok(p: &[u8]) -> bool {
        let mut acc = sum(0, &p[12..20]);
        acc += 6 + (p.len() - 20) as u32;
        fold(sum(acc, &p[20..])) == 0xffff
    }

    #[test]
    fn syn_mss_is_clamped_with_a_valid_checksum() {
        let mut p = syn4(1460, true);
        assert!(tcp_ok(&p));
        assert!(clamp_mss(&mut p, 1358));
        assert_eq!(u16::from_be_bytes([p[46], p[47]]), 1318);
        assert!(tcp_ok(&p), "checksum still valid");
        // Already small enough: untouched.
        let mut q = syn4(1200, true);
        assert!(!clamp_mss(&mut q, 1358));
        assert_eq!(q, syn4(1200, true));
        // Not a SYN: untouched.
        let mut r = syn4(1460, true);
        r[33] = 0x10;
        assert!(!clamp_mss(&mut r, 1358));
    }

    #[test]
    fn hostile_tcp_headers_are_left_alone_without_panicking() {
        let base = syn4(1460, true);
        for cut in 0..base.len() {
            let mut p = base[..cut].to_vec();
            let _ = clamp_mss(&mut p, 1358);
        }
        // Option lengths that run past the header, zero-length options.
        for (at, v) in [
            (41, 0u8),
            (41, 200),
            (45, 0),
            (45, 9),
            (32, 0xf0),
            (32, 0x10),
        ] {
            let mut p = base.clone();
            p[at] = v;
            let _ = clamp_mss(&mut p, 1358);
        }
    }

    #[test]
    fn icmp_fragmentation_needed_quotes_the_packet() {
        let mut big = syn4(1460, true);
        big.resize(1400, 0);
        big[2..4].copy_from_slice(&1400u16.to_be_bytes());
        assert!(must_not_fragment(&big));
        assert!(!must_not_fragment(&syn4(1460, false)));
        let mut out = [0u8; ICMP_REPLY_MAX];
        let n = too_big_reply(&big, 1214, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(n, 576);
        assert_eq!(fold(sum(0, &r[..20])), 0xffff, "IP checksum");
        assert_eq!(fold(sum(0, &r[20..])), 0xffff, "ICMP checksum");
        assert_eq!((r[20], r[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([r[26], r[27]]), 1214);
        assert_eq!(&r[12..16], &big[16..20], "from the destination");
        assert_eq!(&r[16..20], &big[12..16], "to the sender");
        assert_eq!(&r[28..48], &big[..20]);
        // Never about an ICMP error.
        let mut err = r.to_vec();
        err[6] |= 0x40;
        assert!(too_big_reply(&err, 1214, &mut out).is_none());
    }

    #[test]
    fn icmpv6_packet_too_big_never_says_less_than_1280() {
        let mut p = vec![0u8; 1400];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&1360u16.to_be_bytes());
        p[6] = 17;
        p[8..24].copy_from_slice(
            &"2001:db8:1::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        p[24..40].copy_from_slice(
            &"2001:db8:2::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        assert!(must_not_fragment(&p));
        assert!(!must_not_fragment(&p[..1280]));
        let mut out = [0u8; ICMP_REPLY_MAX];
        let n = too_big_reply(&p, 1200, &mut out).unwrap();
        assert_eq!(n, 1280);
        assert_eq!(out[40], 2);
        assert_eq!(
            u32::from_be_bytes([out[44], out[45], out[46], out[47]]),
            1280
        );
        let mut acc = sum(0, &out[8..40]);
        acc += (n - 40) as u32 + 58;
        assert_eq!(fold(sum(acc, &out[40..n])), 0xffff, "ICMPv6 checksum");
    }

    #[test]
    fn inner_fit_leaves_room_for_the_worst_padding() {
        // AES-CBC with a 32-byte ICV: 8 + 16 IV + padding to 16 + 32.
        let cbc = |len: usize| 8 + 16 + ((len + 2).div_ceil(16) * 16 - len) + 32;
        assert_eq!(inner_fit(1454, 28, cbc), 1358);
        let gcm = |len: usize| 8 + 8 + ((len + 2).div_ceil(4) * 4 - len) + 16;
        assert_eq!(inner_fit(1280, 48, gcm), 1198);
        for mtu in 600..1500 {
            let fit = inner_fit(mtu, 28, cbc) as usize;
            assert!(fit + cbc(fit) + 28 <= mtu as usize);
            assert!(fit + 1 + cbc(fit + 1) + 28 > mtu as usize);
        }
    }

    #[test]
    fn learned_limits_lower_and_expire() {
        let m = TunnelMtu::default();
        m.configure(1358);
        assert_eq!(m.get(), 1358);
        assert!(m.learn(1214));
        assert!(!m.learn(1214), "reported once");
        assert_eq!(m.get(), 1214);
        assert!(m.learn(1400), "a larger path raises it back");
        assert_eq!(m.get(), 1358, "but never above the configured MTU");
        m.forget();
        assert_eq!((m.get(), m.learned()), (1358, None));
    }
}
