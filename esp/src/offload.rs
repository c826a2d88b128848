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
//! network stack.

/// Size of `struct virtio_net_hdr`, which prefixes every packet read from
/// or written to a TUN device opened with `IFF_VNET_HDR`.
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;
const IPPROTO_TCP: u8 = 6;

/// The parts of a virtio-net header the data plane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header (native byte order, as TUN uses by default).
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
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

/// RFC 1071 ones'-complement sum of `data`, added to `sum`.
pub(crate) fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

pub(crate) fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
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

/// Where the headers of a TCP/IP packet end: (IP header length, TCP header
/// length, whether IPv4).
fn tcp_layout(packet: &[u8]) -> Result<(usize, usize, bool), OffloadError> {
    let version = packet.first().ok_or(OffloadError::Malformed)? >> 4;
    let (ip_len, proto, v4) = match version {
        4 => (
            usize::from(packet[0] & 0x0f) * 4,
            *packet.get(9).ok_or(OffloadError::Malformed)?,
            true,
        ),
        // Extension headers are not produced for TSO'd TCP by Linux.
        6 => (40, *packet.get(6).ok_or(OffloadError::Malformed)?, false),
        _ => return Err(OffloadError::Malformed),
    };
    if proto != IPPROTO_TCP || ip_len < 20 {
        return Err(OffloadError::Malformed);
    }
    let off = *packet.get(ip_len + 12).ok_or(OffloadError::Malformed)?;
    let tcp_len = usize::from(off >> 4) * 4;
    if tcp_len < 20 || ip_len + tcp_len > packet.len() {
        return Err(OffloadError::Malformed);
    }
    Ok((ip_len, tcp_len, v4))
}

/// Writes the full TCP checksum of `seg` (a complete TCP/IP packet).
pub(crate) fn tcp_checksum(seg: &mut [u8], ip_len: usize, v4: bool) {
    let tcp = ip_len;
    seg[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
    let tcp_total = (seg.len() - ip_len) as u32;
    let mut acc = if v4 {
        sum(0, &seg[12..20])
    } else {
        sum(0, &seg[8..40])
    };
    acc += u32::from(IPPROTO_TCP) + tcp_total;
    acc = sum(acc, &seg[tcp..]);
    let c = !fold(acc);
    seg[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
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
    let (ip_len, tcp_len, v4) = tcp_layout(packet)?;
    if v4 != (gso == GSO_TCPV4) {
        return Err(OffloadError::Malformed);
    }
    let headers = ip_len + tcp_len;
    let mss = usize::from(hdr.gso_size);
    let payload = &packet[headers..];
    if mss == 0 || headers + mss > room {
        return Err(OffloadError::Malformed);
    }
    let count = payload.len().div_ceil(mss).max(1);
    if count > lens.len()
        || out.len() < (count - 1) * slot_size + offset + headers + mss.min(payload.len())
    {
        return Err(OffloadError::TooManySegments);
    }
    let seq = u32::from_be_bytes([
        packet[ip_len + 4],
        packet[ip_len + 5],
        packet[ip_len + 6],
        packet[ip_len + 7],
    ]);
    let ip_id = u16::from_be_bytes([packet[4], packet[5]]);
    let flags = packet[ip_len + 13];
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let start = i * slot_size + offset;
        let len = headers + chunk.len();
        let seg = &mut out[start..start + len];
        seg[..headers].copy_from_slice(&packet[..headers]);
        seg[headers..].copy_from_slice(chunk);
        let last = (i + 1) * mss >= payload.len();
        if v4 {
            seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            seg[4..6].copy_from_slice(&ip_id.wrapping_add(i as u16).to_be_bytes());
            seg[10..12].copy_from_slice(&[0, 0]);
            let c = !fold(sum(0, &seg[..ip_len]));
            seg[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            seg[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        }
        let s = seq.wrapping_add((i * mss) as u32);
        seg[ip_len + 4..ip_len + 8].copy_from_slice(&s.to_be_bytes());
        let mut f = flags;
        if !last {
            f &= !0x09; // FIN, PSH only on the last segment
        }
        if i > 0 {
            f &= !0x80; // CWR only on the first
        }
        seg[ip_len + 13] = f;
        tcp_checksum(seg, ip_len, v4);
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
fn intact(p: &[u8], ip_len: usize, v4: bool) -> bool {
    let claimed = if v4 {
        usize::from(u16::from_be_bytes([p[2], p[3]]))
    } else {
        40 + usize::from(u16::from_be_bytes([p[4], p[5]]))
    };
    if claimed != p.len() || (v4 && fold(sum(0, &p[..ip_len])) != 0xffff) {
        return false;
    }
    let pseudo = if v4 {
        sum(0, &p[12..20])
    } else {
        sum(0, &p[8..40])
    };
    let acc = sum(
        pseudo + u32::from(IPPROTO_TCP) + (p.len() - ip_len) as u32,
        &p[ip_len..],
    );
    fold(acc) == 0xffff
}

fn tcp_flags_plain(flags: u8) -> bool {
    // Only ACK, optionally PSH: no SYN, FIN, RST, URG, ECE, CWR.
    flags & !0x18 == 0 && flags & 0x10 != 0
}

impl Coalescer {
    /// Whether a super-packet is being built.
    pub fn is_empty(&self) -> bool {
        self.state.is_none()
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
                if self.joins(&st, packet) {
                    let headers = st.ip_len + st.tcp_len;
                    let payload = &packet[headers..];
                    let at = VNET_HDR_LEN + self.len;
                    self.buf[at..at + payload.len()].copy_from_slice(payload);
                    self.len += payload.len();
                    let flags = packet[st.ip_len + 13];
                    // PSH of a later segment carries over to the merged one.
                    self.buf[VNET_HDR_LEN + st.ip_len + 13] |= flags & 0x08;
                    self.state = Some(Joinable {
                        next_seq: st.next_seq.wrapping_add(payload.len() as u32),
                        count: st.count + 1,
                        closed: payload.len() < st.mss || flags & 0x08 != 0,
                        ..st
                    });
                    true
                } else {
                    false
                }
            }
        }
    }

    fn start(&mut self, packet: &[u8]) {
        let n = packet.len().min(self.buf.len() - VNET_HDR_LEN);
        self.buf[VNET_HDR_LEN..VNET_HDR_LEN + n].copy_from_slice(&packet[..n]);
        self.len = n;
        let joinable = (|| {
            let (ip_len, tcp_len, v4) = tcp_layout(packet).ok()?;
            if v4 && (ip_len != 20 || packet[6] & 0x3f != 0 || packet[7] != 0) {
                return None; // options, or a fragment
            }
            let payload = packet.len() - ip_len - tcp_len;
            let flags = packet[ip_len + 13];
            if payload == 0 || !tcp_flags_plain(flags) || !intact(packet, ip_len, v4) {
                return None;
            }
            let seq = u32::from_be_bytes(packet[ip_len + 4..ip_len + 8].try_into().ok()?);
            Some(Joinable {
                v4,
                ip_len,
                tcp_len,
                mss: payload,
                next_seq: seq.wrapping_add(payload as u32),
                count: 1,
                closed: flags & 0x08 != 0,
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

    fn joins(&self, st: &Joinable, p: &[u8]) -> bool {
        if st.closed || st.count >= MAX_COALESCE {
            return false;
        }
        let headers = st.ip_len + st.tcp_len;
        if p.len() <= headers || p.len() - headers > st.mss {
            return false;
        }
        if self.len + (p.len() - headers) > self.buf.len() - VNET_HDR_LEN {
            return false;
        }
        let Ok((ip_len, tcp_len, v4)) = tcp_layout(p) else {
            return false;
        };
        if (ip_len, tcp_len, v4) != (st.ip_len, st.tcp_len, st.v4) {
            return false;
        }
        let held = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + headers];
        let same_ip = if v4 {
            // Version..TOS, flags/fragment, TTL, protocol, addresses; not
            // length, ID or checksum.
            held[..2] == p[..2] && held[6..10] == p[6..10] && held[12..20] == p[12..20]
        } else {
            held[..4] == p[..4] && held[6..40] == p[6..40]
        };
        let t = ip_len;
        let seq = u32::from_be_bytes([p[t + 4], p[t + 5], p[t + 6], p[t + 7]]);
        same_ip
            && intact(p, ip_len, v4)
            && held[t..t + 4] == p[t..t + 4] // ports
            && seq == st.next_seq
            && held[t + 8..t + 13] == p[t + 8..t + 13] // ack, data offset
            && tcp_flags_plain(p[t + 13])
            && held[t + 14..t + 16] == p[t + 14..t + 16] // window
            && held[t + 18..t + tcp_len] == p[t + 18..t + tcp_len] // urgent ptr, options
    }

    /// Writes what is held (one packet, or one super-packet with its
    /// virtio-net header asking the kernel to take it as GSO) and empties
    /// the coalescer.
    pub fn flush(&mut self, write: &mut dyn FnMut(&[u8])) {
        let Some(st) = self.state.take() else {
            return;
        };
        let total = self.len;
        self.buf[..VNET_HDR_LEN].fill(0);
        if st.count > 1 {
            let pkt = &mut self.buf[VNET_HDR_LEN..VNET_HDR_LEN + total];
            let ip_len = st.ip_len;
            if st.v4 {
                pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                pkt[10..12].copy_from_slice(&[0, 0]);
                let c = !fold(sum(0, &pkt[..20]));
                pkt[10..12].copy_from_slice(&c.to_be_bytes());
            } else {
                pkt[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            }
            // A partial checksum: the pseudo-header sum, for the kernel to
            // treat like one from a NIC (it is not recomputed on delivery).
            let tcp_total = (total - ip_len) as u32;
            let pseudo = if st.v4 {
                sum(0, &pkt[12..20])
            } else {
                sum(0, &pkt[8..40])
            } + u32::from(IPPROTO_TCP)
                + tcp_total;
            pkt[ip_len + 16..ip_len + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
            let h = &mut self.buf[..VNET_HDR_LEN];
            h[0] = F_NEEDS_CSUM;
            h[1] = if st.v4 { GSO_TCPV4 } else { GSO_TCPV6 };
            h[2..4].copy_from_slice(&((ip_len + st.tcp_len) as u16).to_ne_bytes());
            h[4..6].copy_from_slice(&(st.mss as u16).to_ne_bytes());
            h[6..8].copy_from_slice(&(ip_len as u16).to_ne_bytes());
            h[8..10].copy_from_slice(&16u16.to_ne_bytes());
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
        p[9] = IPPROTO_TCP;
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
        tcp_checksum(&mut p, 20, true);
        p
    }

    fn valid(seg: &[u8]) -> bool {
        let ip_ok = fold(sum(0, &seg[..20])) == 0xffff;
        let mut acc = sum(0, &seg[12..20]) + u32::from(IPPROTO_TCP) + (seg.len() - 20) as u32;
        acc = sum(acc, &seg[20..]);
        ip_ok && fold(acc) == 0xffff
    }

    fn hdr(gso_type: u8, gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
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
        let pseudo = fold(sum(0, &partial[12..20]) + u32::from(IPPROTO_TCP) + 120);
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
        tcp_checksum(&mut p, 20, true);
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
