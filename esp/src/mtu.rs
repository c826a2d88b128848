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
//! `datapath`). Written by hand: a few fixed header fields, no crate does
//! this for a userspace tunnel.

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
    let Some((ip_len, v4)) = tcp_offset(packet) else {
        return false;
    };
    let max = mtu.saturating_sub(if v4 { 40 } else { 60 }).min(0xffff) as u16;
    let Some(tcp) = packet.get_mut(ip_len..) else {
        return false;
    };
    // SYN set (flags byte 13, bit 1).
    if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
        return false;
    }
    let header = usize::from(tcp[12] >> 4) * 4;
    if header < 20 || header > tcp.len() {
        return false;
    }
    let mut at = 20;
    while at < header {
        match tcp[at] {
            0 => return false, // end of options
            1 => at += 1,      // no-op
            kind => {
                let Some(&len) = tcp.get(at + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || at + len > header {
                    return false;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([tcp[at + 2], tcp[at + 3]]);
                    if old <= max {
                        return false;
                    }
                    tcp[at + 2..at + 4].copy_from_slice(&max.to_be_bytes());
                    let sum = u16::from_be_bytes([tcp[16], tcp[17]]);
                    tcp[16..18].copy_from_slice(&adjust(sum, old, max).to_be_bytes());
                    return true;
                }
                at += len;
            }
        }
    }
    false
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed.
fn adjust(sum: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Where the TCP header of an unfragmented TCP packet starts, and whether
/// the packet is IPv4.
fn tcp_offset(packet: &[u8]) -> Option<(usize, bool)> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
            // Neither a later fragment nor one with more to come.
            (ihl >= 20 && *packet.get(9)? == 6 && frag & 0x3fff == 0).then_some((ihl, true))
        }
        6 => (*packet.get(6)? == 6).then_some((40, false)),
        _ => None,
    }
}

/// Whether an inner packet larger than the tunnel MTU must be refused with
/// an ICMP error rather than sent in a fragmented outer datagram: IPv4 with
/// DF set, or IPv6 larger than the IPv6 minimum MTU (RFC 8200 §5: links
/// below 1280 fragment beneath IPv6).
pub fn must_not_fragment(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(6).is_some_and(|b| b & 0x40 != 0),
        Some(6) => packet.len() > IPV6_MIN_MTU as usize,
        _ => false,
    }
}

/// The most bytes of the offending packet an ICMPv4 error quotes (a 576-
/// byte datagram in all, as RFC 1812 §4.3.2.3 allows).
const ICMP4_QUOTE: usize = 576 - 28;
/// The most an ICMPv6 error quotes (RFC 4443 §2.4 (c): within 1280 bytes).
const ICMP6_QUOTE: usize = 1280 - 48;
/// Room an ICMP reply needs in the caller's buffer.
pub const ICMP_REPLY_MAX: usize = 1280;

/// Writes into `out` the ICMP "fragmentation needed" (RFC 792, RFC 1191)
/// or ICMPv6 "packet too big" (RFC 4443 §3.2) that tells the sender of
/// `packet` to send at most `mtu` bytes. Its source is the packet's
/// destination, so that the hub's kernel accepts it from the TUN device
/// (a reverse-path check sees a facility address there) and forwards or
/// delivers it to the sender. Returns its length; `None` when no error
/// may be sent (RFC 1122 §3.2.2 / RFC 4443 §2.4 (e): not about an ICMP
/// error, a non-first fragment, or a multicast or unspecified source).
pub fn too_big_reply(packet: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if ihl < 20 || packet.len() < ihl + 8 {
                return None;
            }
            let frag = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            let src = std::net::Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
            let is_error = packet[9] == 1 && matches!(packet[ihl], 3 | 4 | 5 | 11 | 12);
            if frag != 0
                || is_error
                || src.is_multicast()
                || src.is_broadcast()
                || src.is_unspecified()
            {
                return None;
            }
            let quote = packet.len().min(ICMP4_QUOTE);
            let total = 28 + quote;
            let out = out.get_mut(..total)?;
            out.fill(0);
            out[0] = 0x45;
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            out[8] = 64; // TTL
            out[9] = 1; // ICMP
            out[12..16].copy_from_slice(&packet[16..20]);
            out[16..20].copy_from_slice(&packet[12..16]);
            let ip_sum = !fold(sum(0, &out[..20]));
            out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            out[20] = 3; // destination unreachable
            out[21] = 4; // fragmentation needed and DF set
            out[26..28].copy_from_slice(&(mtu.min(0xffff) as u16).to_be_bytes());
            out[28..].copy_from_slice(&packet[..quote]);
            let icmp_sum = !fold(sum(0, &out[20..]));
            out[22..24].copy_from_slice(&icmp_sum.to_be_bytes());
            Some(total)
        }
        6 => {
            if packet.len() < 40 {
                return None;
            }
            let src = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?);
            let is_error = packet[6] == 58 && packet.get(40).is_some_and(|t| *t < 128);
            if is_error || src.is_multicast() || src.is_unspecified() {
                return None;
            }
            let quote = packet.len().min(ICMP6_QUOTE);
            let total = 48 + quote;
            let out = out.get_mut(..total)?;
            out.fill(0);
            out[0] = 0x60;
            out[4..6].copy_from_slice(&((8 + quote) as u16).to_be_bytes());
            out[6] = 58; // ICMPv6
            out[7] = 64; // hop limit
            out[8..24].copy_from_slice(&packet[24..40]);
            out[24..40].copy_from_slice(&packet[8..24]);
            out[40] = 2; // packet too big
            out[44..48].copy_from_slice(&mtu.max(IPV6_MIN_MTU).to_be_bytes());
            out[48..].copy_from_slice(&packet[..quote]);
            // Pseudo-header (RFC 8200 §8.1): addresses, length, next header.
            let mut acc = sum(0, &out[8..40]);
            acc += (8 + quote) as u32 + 58;
            let icmp_sum = !fold(sum(acc, &out[40..]));
            out[42..44].copy_from_slice(&icmp_sum.to_be_bytes());
            Some(total)
        }
        _ => None,
    }
}

use crate::offload::{fold, sum};

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
        crate::offload::tcp_checksum(&mut p, 20, true);
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
