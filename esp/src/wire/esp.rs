//! The ESP header (RFC 4303 §2): SPI and sequence number; what follows
//! (IV, ciphertext, ICV) depends on the SA and is laid out by `packet`.

use super::{read_u32, write_u32, Error, Result};

mod field {
    use super::super::Field;
    /// Security Parameters Index (RFC 4303 §2.1).
    pub(super) const SPI: Field = 0..4;
    /// Sequence Number, the low 32 bits with ESN (RFC 4303 §2.2).
    pub(super) const SEQ_NUMBER: Field = 4..8;
}

/// Length of the ESP header.
pub const ESP_HEADER_LEN: usize = field::SEQ_NUMBER.end;

/// A view of an ESP packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspHeader<T> {
    /// Wraps a buffer without checking it (see [`Self::check_len`]).
    pub const fn new_unchecked(buffer: T) -> Self {
        EspHeader { buffer }
    }

    /// Wraps a buffer that holds at least the header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Whether the buffer holds the SPI and the sequence number.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < ESP_HEADER_LEN {
            return Err(Error);
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The SPI.
    #[inline]
    pub fn spi(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SPI)
    }

    /// The SPI as it is on the wire (for GCM's AAD, RFC 4106 §5).
    #[inline]
    pub fn spi_bytes(&self) -> [u8; 4] {
        self.spi().to_be_bytes()
    }

    /// The sequence number field (the low 32 bits with ESN).
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUMBER)
    }

    /// What follows the header: IV, ciphertext and ICV.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[ESP_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspHeader<T> {
    /// Sets the SPI.
    #[inline]
    pub fn set_spi(&mut self, spi: u32) {
        write_u32(self.buffer.as_mut(), field::SPI, spi);
    }

    /// Sets the sequence number field.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUMBER, seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_short_buffers_are_refused() {
        let mut b = [0u8; 12];
        let mut h = EspHeader::new_checked(&mut b[..]).expect("8 bytes");
        h.set_spi(0xc0ffee01);
        h.set_seq_number(7);
        assert_eq!((h.spi(), h.seq_number()), (0xc0ffee01, 7));
        assert_eq!(h.payload().len(), 4);
        assert_eq!(&b[..8], &[0xc0, 0xff, 0xee, 1, 0, 0, 0, 7]);
        for n in 0..8 {
            assert_eq!(EspHeader::new_checked(&b[..n]), Err(Error));
        }
    }
}
