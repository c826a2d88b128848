//! TUN offloads: with `IFF_VNET_HDR` and TSO turned on, the kernel hands
//! the data plane TCP "super-packets" of up to 64 KiB (one `read` instead
//! of dozens) and packets whose checksum it left for the device to finish.
//! This module does what a NIC would: finishes checksums and cuts
//! super-packets into MSS-sized segments, each a valid IP packet, before
//! they are sealed one ESP packet each.
//!
//! Written by hand: the virtio-net header and TCP segmentation are a few
//! dozen lines of well-specified arithmetic (virtio spec §5.1.6, RFC 1071
//! checksums), and no maintained crate does it outside a full userspace
//! network stack. IP and TCP headers are read and written through
//! [`crate::wire`].

use crate::wire::checksum::{fold, sum};
use crate::wire::{protocol, tcp_flags, IpPacket, TcpHeader, IPV4_HEADER_LEN, TCP_CHECKSUM_OFFSET};

/// Size of `struct virtio_net_hdr`, which prefixes every packet read from
/// or written to a TUN device opened with `IFF_VNET_HDR`.
pub const VNET_HDR_LEN: usize = field::CSUM_OFFSET.end;

/// `struct virtio_net_hdr` (virtio spec §5.1.6), in native byte order as
/// TUN uses it by default.
mod field {
    use std::ops::Range;
    pub(super) const FLAGS: usize = 0;
    pub(super) const GSO_TYPE: usize = 1;
    pub(super) const HDR_LEN: Range<usize> = 2..4;
    pub(super) const GSO_SIZE: Range<usize> = 4..6;
    pub(super) const CSUM_START: Range<usize> = 6..8;
    pub(super) const CSUM_OFFSET: Range<usize> = 8..10;
}

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

/// The parts of a virtio-net header the data plane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header (native byte order, as TUN uses by default).
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |f: std::ops::Range<usize>| u16::from_ne_bytes([b[f.start], b[f.start + 1]]);
        Some(VnetHdr {
            flags: b[field::FLAGS],
            gso_type: b[field::GSO_TYPE],
            hdr_len: u16_at(field::HDR_LEN),
            gso_size: u16_at(field::GSO_SIZE),
            csum_start: u16_at(field::CSUM_START),
            csum_offset: u16_at(field::CSUM_OFFSET),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `b`.
    fn emit(&self, b: &mut [u8; VNET_HDR_LEN]) {
        b[field::FLAGS] = self.flags;
        b[field::GSO_TYPE] = self.gso_type;
        b[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[field::CSUM_START].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// Why a packet from the TUN device could not be prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// Headers or offsets that do not fit the packet.
    Malformed,
    /// More segments than the caller has room for.
    TooManySegments,
}

/// Finishes a checksum the kernel left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`):
/// the sum from `csum_start` to the end, which already includes the
/// pseudo-header sum the kernel stored in the checksum field.
fn finish_partial(hdr: &VnetHdr, packet: &mut [u8]) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > packet.len() {
        return Err(OffloadError::Malformed);
    }
    let c = !fold(sum(0, &packet[start..]));
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// The IP and TCP views of a TCP/IP packet whose headers fit it.
fn tcp_segment<T: AsRef<[u8]>>(packet: T) -> Result<(IpPacket<T>, usize), OffloadError> {
    let ip = IpPacket::new_checked(packet).map_err(|_| OffloadError::Malformed)?;
    // Extension headers are not produced for TSO'd TCP by Linux.
    if ip.protocol() != protocol::TCP {
        return Err(OffloadError::Malformed);
    }
    let tcp_len = TcpHeader::new_checked(ip.body())
        .map_err(|_| OffloadError::Malformed)?
        .header_len();
    Ok((ip, tcp_len))
}

/// The TCP header of a packet [`tcp_segment`] accepted.
fn tcp<T: AsRef<[u8]>>(ip: &IpPacket<T>) -> TcpHeader<&[u8]> {
    TcpHeader::new_unchecked(ip.body())
}

/// Writes the full TCP checksum of a TCP/IP packet [`tcp_segment`]
/// accepted.
fn fill_tcp_checksum<T: AsRef<[u8]> + AsMut<[u8]>>(ip: &mut IpPacket<T>) {
    let pseudo = ip.pseudo_header_sum(protocol::TCP, ip.body().len());
    let mut tcp = TcpHeader::new_unchecked(ip.body_mut());
    tcp.set_checksum(0);
    let c = !fold(sum(pseudo, tcp.as_bytes()));
    tcp.set_checksum(c);
}

/// Writes the full TCP checksum of `packet`, a TCP/IP packet; false if it
/// is not one.
#[cfg(test)]
pub(crate) fn tcp_checksum(packet: &mut [u8]) -> bool {
    match tcp_segment(packet) {
        Ok((mut ip, _)) => {
            fill_tcp_checksum(&mut ip);
            true
        }
        Err(_) => false,
    }
}

/// Prepares a packet read from the TUN device (after its virtio-net
/// header) for sealing, writing each resulting IP packet into `out` at
/// `slot_size` intervals, starting `offset` bytes into each slot, with at
/// most `room` bytes per packet and `lens.len()` packets. Returns how many
/// packets were written; their lengths are in `lens`.
pub fn prepare(
    hdr: &VnetHdr,
    packet: &mut [u8],
    out: &mut [u8],
    slot_size: usize,
    offset: usize,
    room: usize,
    lens: &mut [usize],
) -> Result<usize, OffloadError> {
    let gso = hdr.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            finish_partial(hdr, packet)?;
        }
        if packet.len() > room || lens.is_empty() || out.len() < offset + packet.len() {
            return Err(OffloadError::TooManySegments);
        }
        out[offset..offset + packet.len()].copy_from_slice(packet);
        lens[0] = packet.len();
        return Ok(1);
    }
    if gso != GSO_TCPV4 && gso != GSO_TCPV6 {
        return Err(OffloadError::Malformed);
    }
    let (ip, tcp_len) = tcp_segment(&*packet)?;
    let v4 = ip.is_v4();
    if v4 != (gso == GSO_TCPV4) {
        return Err(OffloadError::Malformed);
    }
    let headers = ip.header_len() + tcp_len;
    let mss = usize::from(hdr.gso_size);
    let (seq, flags, payload) = {
        let t = tcp(&ip);
        (t.seq_number(), t.flags(), &packet[headers..])
    };
    let ip_id = match &ip {
        IpPacket::V4(p) => p.ident(),
        IpPacket::V6(_) => 0,
    };
    if mss == 0 || headers + mss > room {
        return Err(OffloadError::Malformed);
    }
    let count = payload.len().div_ceil(mss).max(1);
    if count > lens.len()
        || out.len() < (count - 1) * slot_size + offset + headers + mss.min(payload.len())
    {
        return Err(OffloadError::TooManySegments);
    }
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let start = i * slot_size + offset;
        let len = headers + chunk.len();
        let seg = &mut out[start..start + len];
        seg[..headers].copy_from_slice(&packet[..headers]);
        seg[headers..].copy_from_slice(chunk);
        let last = (i + 1) * mss >= payload.len();
        // The headers are the super-packet's, which tcp_segment accepted.
        let (mut ip, _) = tcp_segment(seg)?;
        ip.set_len(len);
        if let IpPacket::V4(p) = &mut ip {
            p.set_ident(ip_id.wrapping_add(i as u16));
            p.fill_checksum();
        }
        let mut f = flags;
        if !last {
            // FIN, PSH only on the last segment
            f &= !(tcp_flags::FIN | tcp_flags::PSH);
        }
        if i > 0 {
            f &= !tcp_flags::CWR; // CWR only on the first
        }
        let mut t = TcpHeader::new_unchecked(ip.body_mut());
        t.set_seq_number(seq.wrapping_add((i * mss) as u32));
        t.set_flags(f);
        fill_tcp_checksum(&mut ip);
        lens[i] = len;
        if last {
            return Ok(i + 1);
        }
    }
    Ok(count)
}

/// The most segments merged into one super-packet (as Linux's GRO).
const MAX_COALESCE: usize = 64;

/// What a TCP segment must share with the super-packet it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Joinable {
    v4: bool,
    ip_len: usize,
    tcp_len: usize,
    /// Payload size of the first segment (the GSO size).
    mss: usize,
    /// The sequence number the next segment must start at.
    next_seq: u32,
    /// Segments merged.
    count: usize,
    /// The last segment was short or had PSH: nothing may follow it.
    closed: bool,
}

/// Merges consecutive TCP segments of one flow, decrypted from one train
/// of ESP packets, into a super-packet written to the TUN device with one
/// `write` and handed to the kernel's TCP as one buffer, as a NIC's GRO
/// would (virtio spec §5.1.6.2: `VIRTIO_NET_HDR_GSO_TCPV4/6`).
///
/// Segments merge only when nothing is lost by it: same addresses, ports,
/// IP fields, TCP header and options byte for byte except the sequence
/// number, contiguous sequence numbers, only ACK (and PSH on the last)
/// set, and equal sizes but for a shorter last one. Anything else is
/// written as it came.
#[derive(Debug)]
pub struct Coalescer {
    /// virtio-net header, then the super-packet.
    buf: Vec<u8>,
    len: usize,
    state: Option<Joinable>,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: vec![0; VNET_HDR_LEN + 65535],
            len: 0,
            state: None,
        }
    }
}

/// Whether a TCP/IP packet is exactly as long as its IP header says and
/// its IPv4 header and TCP checksums verify: only such packets may merge,
/// since the merged one gets new checksums (a NIC's GRO, too, merges only
/// what it verified).
fn intact<T: AsRef<[u8]>>(ip: &IpPacket<T>) -> bool {
    let body = ip.body();
    if ip.claimed_len() != ip.header_len() + body.len() || !ip.verify_checksum() {
        return false;
    }
    fold(sum(ip.pseudo_header_sum(protocol::TCP, body.len()), body)) == 0xffff
}

fn tcp_flags_plain(flags: u8) -> bool {
    // Only ACK, optionally PSH: no SYN, FIN, RST, URG, ECE, CWR.
    flags & !(tcp_flags::ACK | tcp_flags::PSH) == 0 && flags & tcp_flags::ACK != 0
}

impl Coalescer {
    /// Whether a super-packet is being built.
    pub fn is_empty(&self) -> bool {
        self.state.is_none()
    }

    /// The packet held, after the room for its virtio-net header.
    fn held(&self) -> &[u8] {
        &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.len]
    }

    /// Adds a complete IP packet (checksums valid). Returns false when it
    /// cannot join what is held: the caller flushes and pushes it again.
    /// A packet that can never merge is taken as it is (flushed alone).
    pub fn push(&mut self, packet: &[u8]) -> bool {
        match self.state {
            None => {
                self.start(packet);
                true
            }
            Some(st) => {
                let Some((payload, flags)) = self.joins(&st, packet) else {
                    return false;
                };
                let at = VNET_HDR_LEN + self.len;
                self.buf[at..at + payload.len()].copy_from_slice(payload);
                self.len += payload.len();
                if flags & tcp_flags::PSH != 0 {
                    // PSH of a later segment carries over to the merged one.
                    let held = &mut self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.len];
                    if let Ok((mut ip, _)) = tcp_segment(held) {
                        let mut t = TcpHeader::new_unchecked(ip.body_mut());
                        t.set_flags(t.flags() | tcp_flags::PSH);
                    }
                }
                self.state = Some(Joinable {
                    next_seq: st.next_seq.wrapping_add(payload.len() as u32),
                    count: st.count + 1,
                    closed: payload.len() < st.mss || flags & tcp_flags::PSH != 0,
                    ..st
                });
                true
            }
        }
    }

    fn start(&mut self, packet: &[u8]) {
        let n = packet.len().min(self.buf.len() - VNET_HDR_LEN);
        self.buf[VNET_HDR_LEN..VNET_HDR_LEN + n].copy_from_slice(&packet[..n]);
        self.len = n;
        let joinable = (|| {
            let (ip, tcp_len) = tcp_segment(packet).ok()?;
            if let IpPacket::V4(p) = &ip {
                if p.header_len() != IPV4_HEADER_LEN || p.is_fragment() {
                    return None; // options, or a fragment
                }
            }
            let t = tcp(&ip);
            let payload = t.payload().len();
            let flags = t.flags();
            if payload == 0 || !tcp_flags_plain(flags) || !intact(&ip) {
                return None;
            }
            Some(Joinable {
                v4: ip.is_v4(),
                ip_len: ip.header_len(),
                tcp_len,
                mss: payload,
                next_seq: t.seq_number().wrapping_add(payload as u32),
                count: 1,
                closed: flags & tcp_flags::PSH != 0,
            })
        })();
        // A packet that cannot merge is still held (alone) until flushed.
        self.state = Some(joinable.unwrap_or(Joinable {
            v4: false,
            ip_len: 0,
            tcp_len: 0,
            mss: 0,
            next_seq: 0,
            count: 1,
            closed: true,
        }));
    }

    /// If `p` may join what is held: its payload and TCP flags.
    fn joins<'p>(&self, st: &Joinable, p: &'p [u8]) -> Option<(&'p [u8], u8)> {
        if st.closed || st.count >= MAX_COALESCE {
            return None;
        }
        let (ip, tcp_len) = tcp_segment(p).ok()?;
        if (ip.header_len(), tcp_len, ip.is_v4()) != (st.ip_len, st.tcp_len, st.v4) {
            return None;
        }
        let headers = st.ip_len + st.tcp_len;
        let payload = &p[headers..];
        if payload.is_empty()
            || payload.len() > st.mss
            || self.len + payload.len() > self.buf.len() - VNET_HDR_LEN
        {
            return None;
        }
        // What is held was accepted by start() (it is not closed).
        let (held, _) = tcp_segment(self.held()).ok()?;
        let same_ip = match (&held, &ip) {
            // Version..TOS, flags/fragment, TTL, protocol, addresses; not
            // length, ID or checksum.
            (IpPacket::V4(a), IpPacket::V4(b)) => a.same_but_length_ident_checksum(b),
            (IpPacket::V6(a), IpPacket::V6(b)) => a.same_but_length(b),
            _ => false,
        };
        let t = tcp(&ip);
        let joins = same_ip
            && t.seq_number() == st.next_seq
            && tcp_flags_plain(t.flags())
            // ports, ack, data offset, window, urgent pointer, options
            && tcp(&held).same_but_seq_flags_checksum(&t)
            && intact(&ip);
        joins.then_some((payload, t.flags()))
    }

    /// Writes what is held (one packet, or one super-packet with its
    /// virtio-net header asking the kernel to take it as GSO) and empties
    /// the coalescer.
    pub fn flush(&mut self, write: &mut dyn FnMut(&[u8])) {
        let Some(st) = self.state.take() else {
            return;
        };
        let total = self.len;
        let (vnet, pkt) = self.buf.split_at_mut(VNET_HDR_LEN);
        let vnet: &mut [u8; VNET_HDR_LEN] = match vnet.try_into() {
            Ok(v) => v,
            Err(_) => return,
        };
        vnet.fill(0);
        if st.count > 1 {
            if let Ok((mut ip, _)) = tcp_segment(&mut pkt[..total]) {
                ip.set_len(total);
                if let IpPacket::V4(p) = &mut ip {
                    p.fill_checksum();
                }
                // A partial checksum: the pseudo-header sum, for the kernel
                // to treat like one from a NIC (it is not recomputed on
                // delivery).
                let pseudo = ip.pseudo_header_sum(protocol::TCP, total - st.ip_len);
                TcpHeader::new_unchecked(ip.body_mut()).set_checksum(fold(pseudo));
                VnetHdr {
                    flags: F_NEEDS_CSUM,
                    gso_type: if st.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
                    hdr_len: (st.ip_len + st.tcp_len) as u16,
                    gso_size: st.mss as u16,
                    csum_start: st.ip_len as u16,
                    csum_offset: TCP_CHECKSUM_OFFSET as u16,
                }
                .emit(vnet);
            }
        }
        write(&self.buf[..VNET_HDR_LEN + total]);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 packet with `payload` bytes and correct checksums.
    fn tcp4(payload: usize, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[8] = 64;
        p[9] = protocol::TCP;
        p[12..16].copy_from_slice(&[203, 0, 113, 1]);
        p[16..20].copy_from_slice(&[198, 51, 100, 1]);
        p[20..22].copy_from_slice(&5201u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        p[24..28].copy_from_slice(&1000u32.to_be_bytes());
        p[32] = 0x50;
        p[33] = flags;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let c = !fold(sum(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(tcp_checksum(&mut p));
        p
    }

    fn valid(seg: &[u8]) -> bool {
        let ip_ok = fold(sum(0, &seg[..20])) == 0xffff;
        let mut acc = sum(0, &seg[12..20]) + u32::from(protocol::TCP) + (seg.len() - 20) as u32;
        acc = sum(acc, &seg[20..]);
        ip_ok && fold(acc) == 0xffff
    }

    fn hdr(gso_type: u8, gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: 0,
            gso_size,
            csum_start: 20,
            csum_offset: 16,
        }
    }

    #[test]
    fn a_super_packet_becomes_valid_segments_that_reassemble_to_it() {
        let mut big = tcp4(5000, 0x18); // PSH|ACK
        let original = big.clone();
        let slot = 2000;
        let mut out = vec![0u8; slot * 8];
        let mut lens = [0usize; 8];
        let n = prepare(
            &hdr(GSO_TCPV4, 1400),
            &mut big,
            &mut out,
            slot,
            100,
            1500,
            &mut lens,
        )
        .unwrap();
        assert_eq!(n, 4);
        assert_eq!(&lens[..4], &[1440, 1440, 1440, 840]);
        let mut payload = Vec::new();
        for (i, len) in lens[..n].iter().enumerate() {
            let seg = &out[i * slot + 100..i * slot + 100 + len];
            assert!(valid(seg), "segment {i} checksums");
            let seq = u32::from_be_bytes([seg[24], seg[25], seg[26], seg[27]]);
            assert_eq!(seq, 1000 + 1400 * i as u32);
            assert_eq!(u16::from_be_bytes([seg[4], seg[5]]), 0x1234 + i as u16);
            assert_eq!(seg[33] & 0x08 != 0, i == 3, "PSH only on the last");
            payload.extend_from_slice(&seg[40..]);
        }
        assert_eq!(payload, original[40..]);
    }

    #[test]
    fn partial_checksums_are_finished() {
        let full = tcp4(100, 0x10);
        let mut partial = full.clone();
        // What the kernel leaves: the pseudo-header sum, not complemented.
        let pseudo = fold(sum(0, &partial[12..20]) + u32::from(protocol::TCP) + 120);
        partial[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let mut out = vec![0u8; 400];
        let mut lens = [0usize; 1];
        let n = prepare(
            &hdr(GSO_NONE, 0),
            &mut partial,
            &mut out,
            400,
            10,
            1500,
            &mut lens,
        )
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(&out[10..10 + lens[0]], &full[..]);
    }

    #[test]
    fn hostile_headers_are_refused_not_panicked_on() {
        let mut out = vec![0u8; 4000];
        let mut lens = [0usize; 2];
        let mut short = vec![0x45u8; 30];
        assert!(prepare(
            &hdr(GSO_TCPV4, 1400),
            &mut short,
            &mut out,
            2000,
            0,
            1500,
            &mut lens
        )
        .is_err());
        let mut big = tcp4(5000, 0x10);
        assert_eq!(
            prepare(
                &hdr(GSO_TCPV4, 1400),
                &mut big,
                &mut out,
                2000,
                0,
                1500,
                &mut lens
            ),
            Err(OffloadError::TooManySegments)
        );
        let mut p = tcp4(10, 0x10);
        let bad = VnetHdr {
            csum_start: 60,
            ..hdr(GSO_NONE, 0)
        };
        assert!(prepare(&bad, &mut p, &mut out, 2000, 0, 1500, &mut lens).is_err());
        assert!(prepare(
            &hdr(GSO_TCPV4, 0),
            &mut tcp4(10, 0),
            &mut out,
            2000,
            0,
            1500,
            &mut lens
        )
        .is_err());
        assert!(prepare(
            &hdr(GSO_TCPV6, 100),
            &mut tcp4(300, 0),
            &mut out,
            2000,
            0,
            1500,
            &mut lens
        )
        .is_err());
    }

    fn seg(seq: u32, payload: usize, flags: u8) -> Vec<u8> {
        let mut p = tcp4(payload, flags);
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        // IP IDs count up per segment, as a sender's GSO makes them.
        let id = 0x1234u16.wrapping_add(((seq - 1000) / 1400) as u16);
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = !fold(sum(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(tcp_checksum(&mut p));
        p
    }

    #[test]
    fn contiguous_segments_merge_and_split_back_to_the_same_bytes() {
        let segs: Vec<Vec<u8>> = (0..4u32)
            .map(|i| {
                seg(
                    1000 + i * 1400,
                    if i == 3 { 500 } else { 1400 },
                    if i == 3 { 0x18 } else { 0x10 },
                )
            })
            .collect();
        let mut c = Coalescer::default();
        for s in &segs {
            assert!(c.push(s));
        }
        // After a short (or PSH) segment nothing more joins.
        assert!(!c.push(&seg(1000 + 3 * 1400 + 500, 1400, 0x10)));
        let mut written = Vec::new();
        c.flush(&mut |b| written.push(b.to_vec()));
        assert_eq!(written.len(), 1);
        let w = &written[0];
        let h = VnetHdr::parse(w).unwrap();
        assert_eq!(
            (h.gso_type, h.gso_size, h.flags),
            (GSO_TCPV4, 1400, F_NEEDS_CSUM)
        );
        // What the kernel does with it: cut it up again, finishing checksums.
        let mut big = w[VNET_HDR_LEN..].to_vec();
        assert_eq!(big.len(), 40 + 3 * 1400 + 500);
        let mut out = vec![0u8; 2000 * 4];
        let mut lens = [0usize; 4];
        let n = prepare(&h, &mut big, &mut out, 2000, 0, 1500, &mut lens).unwrap();
        assert_eq!(n, 4);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(&out[i * 2000..i * 2000 + lens[i]], &s[..], "segment {i}");
        }
    }

    #[test]
    fn what_may_not_merge_is_written_as_it_came() {
        let mut c = Coalescer::default();
        let mut written = Vec::new();
        let a = seg(1000, 1400, 0x10);
        for other in [
            seg(1000 + 1401, 1400, 0x10), // a gap
            seg(1000 + 1400, 1400, 0x11), // FIN
            seg(1000 + 1400, 1500, 0x10), // longer than the first
            {
                let mut p = seg(1000 + 1400, 1400, 0x10);
                p[19] = 2; // another destination
                p
            },
            {
                let mut p = seg(1000 + 1400, 1400, 0x10);
                p[500] ^= 1; // a TCP checksum that does not verify
                p
            },
            {
                let mut p = seg(1000 + 1400, 1400, 0x10);
                p.extend_from_slice(&[0; 7]); // bytes beyond the IP length
                p
            },
        ] {
            assert!(c.push(&a));
            assert!(!c.push(&other));
            c.flush(&mut |b| written.push(b.to_vec()));
            assert!(c.push(&other));
            c.flush(&mut |b| written.push(b.to_vec()));
        }
        for w in &written {
            assert_eq!(&w[..VNET_HDR_LEN], &[0; VNET_HDR_LEN], "no offload asked");
        }
        assert_eq!(written[0][VNET_HDR_LEN..], a[..]);
        // A SYN is held alone and flushed as it is.
        let syn = seg(1000, 0, 0x02);
        assert!(c.push(&syn));
        assert!(!c.push(&seg(1001, 100, 0x10)));
        let mut last = Vec::new();
        c.flush(&mut |b| last = b.to_vec());
        assert_eq!(last[VNET_HDR_LEN..], syn[..]);
        assert!(c.is_empty());
    }
}
