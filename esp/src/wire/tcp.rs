//! The TCP header (RFC 9293 §3.1) and its MSS option (§3.2).

use super::checksum::adjust;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Result};

mod field {
    use super::super::Field;
    pub(super) const SRC_PORT: Field = 0..2;
    pub(super) const DST_PORT: Field = 2..4;
    pub(super) const SEQ_NUM: Field = 4..8;
    pub(super) const ACK_NUM: Field = 8..12;
    /// Data offset (high nibble) and reserved bits.
    pub(super) const DATA_OFF: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WIN_SIZE: Field = 14..16;
    pub(super) const CHECKSUM: Field = 16..18;
    pub(super) const URGENT: Field = 18..20;

    /// Option kinds (RFC 9293 §3.2).
    pub(super) const OPT_END: u8 = 0;
    pub(super) const OPT_NOP: u8 = 1;
    pub(super) const OPT_MSS: u8 = 2;
    /// Length of the MSS option: kind, length, 16-bit value.
    pub(super) const OPT_MSS_LEN: usize = 4;
}

/// Length of the TCP header without options.
pub const TCP_HEADER_LEN: usize = field::URGENT.end;

/// Where the checksum field lies from the start of the TCP header (for a
/// virtio-net `csum_offset`).
pub const TCP_CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// The flag bits of [`TcpHeader::flags`].
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// A view of a TCP segment: header, options and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpHeader<T> {
    /// Wraps a buffer without checking it (see [`Self::check_len`]).
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpHeader { buffer }
    }

    /// Wraps a buffer that holds a whole TCP header, options included.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Whether the buffer holds the fixed header, the data offset is at
    /// least 5 and the options it announces fit the buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < TCP_HEADER_LEN {
            return Err(Error);
        }
        let header = self.header_len();
        if header < TCP_HEADER_LEN || header > len {
            return Err(Error);
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
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

    /// The sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// The acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header length in bytes, options included (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The eight flag bits (CWR … FIN; see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The window.
    #[inline]
    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The whole segment: header, options and payload.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The options.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[TCP_HEADER_LEN..self.header_len()]
    }

    /// The payload: everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Where the value of the MSS option lies from the start of the
    /// header, if the options are well formed up to it (RFC 9293 §3.2:
    /// end of list, no-op, or kind-length-value with a length that fits).
    fn mss_at(&self) -> Option<usize> {
        let options = self.options();
        let mut at = 0;
        while at < options.len() {
            match options[at] {
                field::OPT_END => return None,
                field::OPT_NOP => at += 1,
                kind => {
                    let len = usize::from(*options.get(at + 1)?);
                    if len < 2 || at + len > options.len() {
                        return None;
                    }
                    if kind == field::OPT_MSS && len == field::OPT_MSS_LEN {
                        return Some(TCP_HEADER_LEN + at + 2);
                    }
                    at += len;
                }
            }
        }
        None
    }

    /// The MSS option's value, if there is one and the options before it
    /// are well formed.
    pub fn mss(&self) -> Option<u16> {
        let at = self.mss_at()?;
        Some(read_u16(self.buffer.as_ref(), at..at + 2))
    }

    /// Whether `other` could follow this segment in one GRO super-packet:
    /// the same ports, acknowledgment number, data offset, window, urgent
    /// pointer and options (all but the sequence number, flags and
    /// checksum, which the caller judges).
    pub fn same_but_seq_flags_checksum<U: AsRef<[u8]>>(&self, other: &TcpHeader<U>) -> bool {
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        let (ha, hb) = (self.header_len(), other.header_len());
        ha == hb
            && a[field::SRC_PORT.start..field::DST_PORT.end]
                == b[field::SRC_PORT.start..field::DST_PORT.end]
            && a[field::ACK_NUM.start..=field::DATA_OFF]
                == b[field::ACK_NUM.start..=field::DATA_OFF]
            && a[field::WIN_SIZE] == b[field::WIN_SIZE]
            && a[field::URGENT.start..ha] == b[field::URGENT.start..hb]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpHeader<T> {
    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, seq);
    }

    /// Sets the flag bits.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Sets the MSS option's value; false (and nothing written) if there
    /// is no MSS option that [`Self::mss`] would read.
    pub fn set_mss(&mut self, mss: u16) -> bool {
        let Some(at) = self.mss_at() else {
            return false;
        };
        write_u16(self.buffer.as_mut(), at..at + 2, mss);
        true
    }

    /// Lowers the MSS option to `max` if it is above it, updating the
    /// checksum incrementally (RFC 1624 eqn. 3), in one walk of the
    /// options; returns the value it had when it changed it.
    pub fn clamp_mss(&mut self, max: u16) -> Option<u16> {
        let at = self.mss_at()?;
        let old = read_u16(self.buffer.as_ref(), at..at + 2);
        if old <= max {
            return None;
        }
        write_u16(self.buffer.as_mut(), at..at + 2, max);
        let sum = adjust(self.checksum(), old, max);
        self.set_checksum(sum);
        Some(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN 40000 → 443 with window scale, MSS 1460 and SACK-permitted.
    fn syn() -> Vec<u8> {
        let mut t = vec![0u8; 28];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&443u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[12] = 7 << 4;
        t[13] = 0x02;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t[20..28].copy_from_slice(&[1, 3, 3, 7, 2, 4, 0x05, 0xb4]);
        t
    }

    #[test]
    fn fields_and_the_mss_option_read_and_write() {
        let mut b = syn();
        let mut t = TcpHeader::new_checked(&mut b[..]).expect("checked");
        assert_eq!(
            (t.src_port(), t.dst_port(), t.seq_number()),
            (40000, 443, 1000)
        );
        assert_eq!(
            (t.header_len(), t.flags(), t.window()),
            (28, flags::SYN, 64240)
        );
        assert_eq!(t.mss(), Some(1460));
        assert!(t.set_mss(1318));
        t.set_seq_number(7);
        t.set_flags(flags::ACK);
        assert_eq!(t.mss(), Some(1318));
        // Clamping fixes the checksum as RFC 1624 has it.
        t.set_checksum(0x1234);
        assert_eq!((t.clamp_mss(1400), t.clamp_mss(1200)), (None, Some(1318)));
        assert_eq!(t.checksum(), adjust(0x1234, 1318, 1200));
        assert!(t.set_mss(1318));
        t.set_checksum(0);
        assert_eq!((&b[4..8], b[13]), (&7u32.to_be_bytes()[..], 0x10));
    }

    #[test]
    fn malformed_options_hide_the_mss() {
        for (at, v) in [(21, 0u8), (22, 200), (25, 0), (25, 9), (20, 0), (24, 3)] {
            let mut b = syn();
            b[at] = v;
            let mut t = TcpHeader::new_checked(&mut b[..]).expect("checked");
            assert_eq!(t.mss(), None, "byte {at} = {v}");
            assert!(!t.set_mss(1));
        }
    }

    #[test]
    fn short_buffers_and_data_offsets_are_refused() {
        let b = syn();
        for n in 0..28 {
            assert_eq!(TcpHeader::new_checked(&b[..n]), Err(Error), "{n}");
        }
        for off in [0u8, 4, 8] {
            let mut c = syn();
            c[12] = off << 4;
            assert_eq!(TcpHeader::new_checked(&c[..]), Err(Error), "offset {off}");
        }
    }
}
