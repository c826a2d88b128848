//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// The ones'-complement sum of `data` as big-endian 16-bit words (an odd
/// last byte padded with zero), added to `acc`, not yet folded.
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (end-around carry).
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from `old`
/// to `new`.
pub fn adjust(sum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!sum) + u32::from(!old) + u32::from(new))
}
