//! ESP packets sealed and opened in place (RFC 4303, RFC 4106, RFC 4868).
//!
//! ```text
//! outbound buffer:  [ headroom | inner packet | tailroom ]
//! after seal:       [ .. | SPI | Seq | IV | E(inner | pad | padlen | nh) | ICV | .. ]
//! ```
//!
//! With Extended Sequence Numbers (RFC 4303 §2.2.1) the header carries the
//! low 32 bits of a 64-bit number; the high 32 bits are authenticated but
//! never sent: in GCM's AAD (RFC 4106 §5), after the packet in the HMAC
//! input of CBC suites (RFC 4303 §2.2.1, §3.3.2.1).
//!
//! Nothing here allocates: keys are prepared once per SA, the buffer is the
//! caller's, and the result is a range inside it.

use crate::wire::{EspHeader, ESP_HEADER_LEN};
use crate::DropReason;
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use aws_lc_rs::hmac;
use std::ops::Range;
use zeroize::Zeroizing;

/// Bytes an outbound buffer needs before the inner packet.
pub const HEADROOM: usize = 32;
/// Bytes an outbound buffer needs after the inner packet.
pub const TAILROOM: usize = 64;
const ESP_HEADER: usize = ESP_HEADER_LEN;
const GCM_IV: usize = 8;
const CBC_IV: usize = 16;
const GCM_ICV: usize = 16;

/// ESP encryption of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-GCM with a 16-byte ICV (RFC 4106); key bits 128 or 256.
    AesGcm16(u16),
    /// AES-CBC (RFC 3602); key bits 128 or 256.
    AesCbc(u16),
    /// Camellia-CBC (RFC 4312); key bits 128 or 256.
    CamelliaCbc(u16),
}

/// ESP integrity of the profile (CBC only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// HMAC-SHA-256-128 (RFC 4868).
    HmacSha256_128,
    /// HMAC-SHA-384-192.
    HmacSha384_192,
    /// HMAC-SHA-512-256.
    HmacSha512_256,
}

impl Integrity {
    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Integrity::HmacSha256_128 => hmac::HMAC_SHA256,
            Integrity::HmacSha384_192 => hmac::HMAC_SHA384,
            Integrity::HmacSha512_256 => hmac::HMAC_SHA512,
        }
    }

    fn icv_len(self) -> usize {
        match self {
            Integrity::HmacSha256_128 => 16,
            Integrity::HmacSha384_192 => 24,
            Integrity::HmacSha512_256 => 32,
        }
    }
}

/// Why keys could not be prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyError(pub &'static str);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for KeyError {}

struct AesCbcKeys {
    enc: EncryptingKey,
    dec: DecryptingKey,
    mac: hmac::Key,
    integ: Integrity,
}

// One Engine lives inside each SA behind an Arc and is never moved on the
// packet path, so variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Gcm {
        key: LessSafeKey,
        salt: [u8; 4],
    },
    AesCbc(Box<AesCbcKeys>),
    CamelliaCbc {
        key: Zeroizing<Vec<u8>>,
        mac: hmac::Key,
        integ: Integrity,
    },
}

/// The prepared keys of one SA direction.
pub struct SaCrypto {
    engine: Engine,
    /// Extended Sequence Numbers negotiated (RFC 4303 §2.2.1).
    esn: bool,
}

impl std::fmt::Debug for SaCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.engine {
            Engine::Gcm { .. } => "SaCrypto(AES-GCM)",
            Engine::AesCbc(_) => "SaCrypto(AES-CBC)",
            Engine::CamelliaCbc { .. } => "SaCrypto(Camellia-CBC)",
        })
    }
}

impl SaCrypto {
    /// Prepares keys: `encr` is the cipher key (plus the 4-byte salt for
    /// GCM), `integ` the HMAC key for CBC suites; `esn` whether the SA
    /// uses Extended Sequence Numbers.
    pub fn new(
        cipher: Cipher,
        integrity: Option<Integrity>,
        encr: &[u8],
        integ: &[u8],
        esn: bool,
    ) -> Result<SaCrypto, KeyError> {
        let engine = match cipher {
            Cipher::AesGcm16(bits) => {
                let klen = usize::from(bits) / 8;
                if encr.len() != klen + 4 {
                    return Err(KeyError("GCM key material length"));
                }
                let alg = if bits == 128 {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                let key = LessSafeKey::new(
                    UnboundKey::new(alg, &encr[..klen]).map_err(|_| KeyError("GCM key"))?,
                );
                let mut salt = [0u8; 4];
                salt.copy_from_slice(&encr[klen..]);
                Engine::Gcm { key, salt }
            }
            Cipher::AesCbc(bits) | Cipher::CamelliaCbc(bits) => {
                let integ_alg = integrity.ok_or(KeyError("CBC needs an integrity algorithm"))?;
                if encr.len() != usize::from(bits) / 8 || !(bits == 128 || bits == 256) {
                    return Err(KeyError("CBC key length"));
                }
                let mac = hmac::Key::new(integ_alg.algorithm(), integ);
                if matches!(cipher, Cipher::AesCbc(_)) {
                    let alg = if bits == 128 {
                        &cipher::AES_128
                    } else {
                        &cipher::AES_256
                    };
                    let enc = EncryptingKey::cbc(
                        UnboundCipherKey::new(alg, encr).map_err(|_| KeyError("AES key"))?,
                    )
                    .map_err(|_| KeyError("AES key"))?;
                    let dec = DecryptingKey::cbc(
                        UnboundCipherKey::new(alg, encr).map_err(|_| KeyError("AES key"))?,
                    )
                    .map_err(|_| KeyError("AES key"))?;
                    Engine::AesCbc(Box::new(AesCbcKeys {
                        enc,
                        dec,
                        mac,
                        integ: integ_alg,
                    }))
                } else {
                    Engine::CamelliaCbc {
                        key: Zeroizing::new(encr.to_vec()),
                        mac,
                        integ: integ_alg,
                    }
                }
            }
        };
        Ok(SaCrypto { engine, esn })
    }

    /// Whether the SA uses Extended Sequence Numbers.
    pub fn esn(&self) -> bool {
        self.esn
    }

    /// The additional authenticated data of GCM (RFC 4106 §5): SPI and
    /// 32-bit sequence number (8 bytes), or SPI and 64-bit extended
    /// sequence number (12 bytes). Returned with its length.
    fn gcm_aad(&self, spi: [u8; 4], seq: u64) -> ([u8; 12], usize) {
        let mut aad = [0u8; 12];
        aad[..4].copy_from_slice(&spi);
        if self.esn {
            aad[4..].copy_from_slice(&seq.to_be_bytes());
            (aad, 12)
        } else {
            aad[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
            (aad, 8)
        }
    }

    /// The ICV of CBC suites: over the packet from the SPI to the Next
    /// Header, then, with ESN, the high 32 bits of the sequence number,
    /// which are not sent (RFC 4303 §2.2.1, §3.3.2.1).
    fn hmac(&self, key: &hmac::Key, packet: &[u8], seq: u64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(packet);
        if self.esn {
            ctx.update(&((seq >> 32) as u32).to_be_bytes());
        }
        ctx.sign()
    }

    fn layout(&self) -> (usize, usize, usize) {
        // (IV length, padding block, ICV length)
        match &self.engine {
            Engine::Gcm { .. } => (GCM_IV, 4, GCM_ICV),
            Engine::AesCbc(k) => (CBC_IV, 16, k.integ.icv_len()),
            Engine::CamelliaCbc { integ, .. } => (CBC_IV, 16, integ.icv_len()),
        }
    }

    /// Bytes ESP adds to an inner packet of `len` bytes (for MTU planning).
    pub fn overhead(&self, len: usize) -> usize {
        let (iv, block, icv) = self.layout();
        let padded = (len + 2).div_ceil(block) * block;
        ESP_HEADER + iv + (padded - len) + icv
    }

    /// Seals the inner packet at `buf[inner]` into an ESP packet in place
    /// and returns its range. `inner.start` must be at least [`HEADROOM`]
    /// and `buf` must have [`TAILROOM`] bytes after `inner.end`. `seq` is
    /// the full sequence number: its low 32 bits go in the header, and
    /// with ESN its high 32 bits into the ICV.
    /// `iv_source` feeds CBC IVs, which must be unpredictable: if it fails,
    /// the packet is dropped rather than sent with a weak IV.
    pub fn seal(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        spi: u32,
        seq: u64,
        next_header: u8,
        iv_source: &mut dyn FnMut(&mut [u8]) -> Result<(), DropReason>,
    ) -> Result<Range<usize>, DropReason> {
        if !self.esn && seq > u64::from(u32::MAX) {
            // RFC 4303 §3.3.3: without ESN the counter must not cycle.
            return Err(DropReason::SeqExhausted);
        }
        let (iv_len, block, icv_len) = self.layout();
        let len = inner.len();
        let padded = (len + 2).div_ceil(block) * block;
        let start = inner
            .start
            .checked_sub(ESP_HEADER + iv_len)
            .ok_or(DropReason::Malformed)?;
        let ct = inner.start..inner.start + padded;
        let end = ct.end + icv_len;
        if end > buf.len() {
            return Err(DropReason::TooBig);
        }
        // RFC 4303 §2.4: padding bytes 1, 2, 3, …; then pad length, next header.
        let pad = padded - len - 2;
        for (i, b) in buf[inner.end..inner.end + pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        buf[ct.end - 2] = pad as u8;
        buf[ct.end - 1] = next_header;
        // `start + ESP_HEADER <= inner.start < end <= buf.len()`: the header fits.
        let mut header = EspHeader::new_unchecked(&mut buf[start..]);
        header.set_spi(spi);
        header.set_seq_number(seq as u32);
        let iv = start + ESP_HEADER..inner.start;
        match &self.engine {
            Engine::Gcm { key, salt } => {
                // RFC 4106 §3.1: the IV only has to be unique per key; the
                // 64-bit sequence number is.
                buf[iv.clone()].copy_from_slice(&seq.to_be_bytes());
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(salt);
                nonce[4..].copy_from_slice(&seq.to_be_bytes());
                let (aad, aad_len) = self.gcm_aad(spi.to_be_bytes(), seq);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad[..aad_len]),
                        &mut buf[ct.clone()],
                    )
                    .map_err(|_| DropReason::Crypto)?;
                buf[ct.end..end].copy_from_slice(tag.as_ref());
            }
            Engine::AesCbc(k) => {
                iv_source(&mut buf[iv.clone()])?;
                let mut ivb = [0u8; 16];
                ivb.copy_from_slice(&buf[iv]);
                k.enc
                    .less_safe_encrypt(&mut buf[ct.clone()], EncryptionContext::Iv128(ivb.into()))
                    .map_err(|_| DropReason::Crypto)?;
                let tag = self.hmac(&k.mac, &buf[start..ct.end], seq);
                buf[ct.end..end].copy_from_slice(&tag.as_ref()[..k.integ.icv_len()]);
            }
            Engine::CamelliaCbc { key, mac, integ } => {
                iv_source(&mut buf[iv.clone()])?;
                let mut ivb = [0u8; 16];
                ivb.copy_from_slice(&buf[iv]);
                camellia(key, &ivb, &mut buf[ct.clone()], true)?;
                let tag = self.hmac(mac, &buf[start..ct.end], seq);
                buf[ct.end..end].copy_from_slice(&tag.as_ref()[..integ.icv_len()]);
            }
        }
        Ok(start..end)
    }

    /// Verifies and decrypts an ESP packet in place; returns the inner
    /// packet's range and the next-header value. `seq` is the packet's
    /// full sequence number: with ESN, the one reconstructed from the
    /// header's low 32 bits (RFC 4303 Appendix A2.2), whose high 32 bits
    /// the ICV must verify with; without, the header's.
    pub fn open(&self, packet: &mut [u8], seq: u64) -> Result<(Range<usize>, u8), DropReason> {
        let (iv_len, block, icv_len) = self.layout();
        let ct_start = ESP_HEADER + iv_len;
        if packet.len() < ct_start + icv_len + block.max(4) {
            return Err(DropReason::Malformed);
        }
        let ct = ct_start..packet.len() - icv_len;
        if ct.len() % block != 0 {
            return Err(DropReason::Malformed);
        }
        let header = EspHeader::new_checked(&packet[..]).map_err(|_| DropReason::Malformed)?;
        // The header's sequence number is the low half of `seq`, or the
        // ICV would vouch for a number the packet does not carry.
        if header.seq_number() != seq as u32 || (!self.esn && seq > u64::from(u32::MAX)) {
            return Err(DropReason::Malformed);
        }
        let spi = header.spi_bytes();
        let iv = header
            .payload()
            .get(..iv_len)
            .ok_or(DropReason::Malformed)?;
        match &self.engine {
            Engine::Gcm { key, salt } => {
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(salt);
                nonce[4..].copy_from_slice(iv);
                let (aad, aad_len) = self.gcm_aad(spi, seq);
                let (body, tag) = packet.split_at_mut(ct.end);
                key.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad[..aad_len]),
                    tag,
                    &mut body[ct.clone()],
                )
                .map_err(|_| DropReason::Integrity)?;
            }
            Engine::AesCbc(k) => {
                self.verify_hmac(&k.mac, packet, ct.end, seq)?;
                let mut ivb = [0u8; 16];
                ivb.copy_from_slice(iv);
                k.dec
                    .decrypt(
                        &mut packet[ct.clone()],
                        DecryptionContext::Iv128(ivb.into()),
                    )
                    .map_err(|_| DropReason::Crypto)?;
            }
            Engine::CamelliaCbc { key, mac, .. } => {
                self.verify_hmac(mac, packet, ct.end, seq)?;
                let mut ivb = [0u8; 16];
                ivb.copy_from_slice(iv);
                camellia(key, &ivb, &mut packet[ct.clone()], false)?;
            }
        }
        let next_header = packet[ct.end - 1];
        let pad = usize::from(packet[ct.end - 2]);
        if pad + 2 > ct.len() {
            return Err(DropReason::Malformed);
        }
        Ok((ct.start..ct.end - 2 - pad, next_header))
    }
}

impl SaCrypto {
    /// Checks the ICV at `packet[icv_at..]` (RFC 4303 §3.4.4).
    fn verify_hmac(
        &self,
        key: &hmac::Key,
        packet: &[u8],
        icv_at: usize,
        seq: u64,
    ) -> Result<(), DropReason> {
        let tag = self.hmac(key, &packet[..icv_at], seq);
        let icv = &packet[icv_at..];
        aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..icv.len()], icv)
            .map_err(|_| DropReason::Integrity)
    }
}

fn camellia(key: &[u8], iv: &[u8; 16], buf: &mut [u8], encrypt: bool) -> Result<(), DropReason> {
    use cbc::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
    let len = buf.len();
    let bad = |_| DropReason::Crypto;
    match (key.len(), encrypt) {
        (16, true) => cbc::Encryptor::<camellia::Camellia128>::new_from_slices(key, iv)
            .map_err(|_| DropReason::Crypto)?
            .encrypt_padded_mut::<NoPadding>(buf, len)
            .map(drop)
            .map_err(bad),
        (16, false) => cbc::Decryptor::<camellia::Camellia128>::new_from_slices(key, iv)
            .map_err(|_| DropReason::Crypto)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map(drop)
            .map_err(|_| DropReason::Crypto),
        (32, true) => cbc::Encryptor::<camellia::Camellia256>::new_from_slices(key, iv)
            .map_err(|_| DropReason::Crypto)?
            .encrypt_padded_mut::<NoPadding>(buf, len)
            .map(drop)
            .map_err(bad),
        (32, false) => cbc::Decryptor::<camellia::Camellia256>::new_from_slices(key, iv)
            .map_err(|_| DropReason::Crypto)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map(drop)
            .map_err(|_| DropReason::Crypto),
        _ => Err(DropReason::Crypto),
    }
}

/// The sequence number in an ESP header; `None` if there is no whole
/// header.
pub fn header_seq(packet: &[u8]) -> Option<u32> {
    EspHeader::new_checked(packet).ok().map(|h| h.seq_number())
}

/// The SPI in an ESP header; `None` if there is no whole header.
pub fn header_spi(packet: &[u8]) -> Option<u32> {
    EspHeader::new_checked(packet).ok().map(|h| h.spi())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites() -> Vec<(Cipher, Option<Integrity>, usize)> {
        vec![
            (Cipher::AesGcm16(128), None, 20),
            (Cipher::AesGcm16(256), None, 36),
            (Cipher::AesCbc(128), Some(Integrity::HmacSha256_128), 16),
            (Cipher::AesCbc(256), Some(Integrity::HmacSha384_192), 32),
            (
                Cipher::CamelliaCbc(128),
                Some(Integrity::HmacSha512_256),
                16,
            ),
            (
                Cipher::CamelliaCbc(256),
                Some(Integrity::HmacSha256_128),
                32,
            ),
        ]
    }

    #[test]
    fn seal_open_round_trip_in_place() {
        for (cipher, integ, klen) in suites() {
            let key: Vec<u8> = (0..klen as u8).collect();
            let c = SaCrypto::new(
                cipher,
                integ,
                &key,
                &[9; 64][..integ.map_or(0, |i| i.icv_len() * 2)],
                false,
            )
            .unwrap();
            for len in [1usize, 20, 63, 64, 1400] {
                let mut buf = vec![0u8; HEADROOM + len + TAILROOM];
                let inner: Vec<u8> = (0..len).map(|i| i as u8).collect();
                buf[HEADROOM..HEADROOM + len].copy_from_slice(&inner);
                let mut counter = 0u8;
                let out = c
                    .seal(
                        &mut buf,
                        HEADROOM..HEADROOM + len,
                        0x1234,
                        7,
                        4,
                        &mut |iv| {
                            counter += 1;
                            iv.fill(counter);
                            Ok(())
                        },
                    )
                    .unwrap();
                assert_eq!(out.len(), len + c.overhead(len), "{cipher:?}");
                let mut pkt = buf[out].to_vec();
                assert_eq!(header_spi(&pkt), Some(0x1234));
                assert_eq!(header_seq(&pkt), Some(7));
                let mut tampered = pkt.clone();
                let n = tampered.len();
                tampered[n / 2] ^= 1;
                assert_eq!(c.open(&mut tampered, 7), Err(DropReason::Integrity));
                let (range, nh) = c.open(&mut pkt, 7).unwrap();
                assert_eq!((&pkt[range], nh), (&inner[..], 4));
            }
        }
    }

    #[test]
    fn short_or_misaligned_packets_are_malformed() {
        for (cipher, integ, klen) in suites() {
            let c = SaCrypto::new(
                cipher,
                integ,
                &vec![1; klen],
                &[2; 64][..integ.map_or(0, |i| i.icv_len() * 2)],
                false,
            )
            .unwrap();
            for n in 0..80 {
                let mut p = vec![0u8; n];
                assert!(c.open(&mut p, 0).is_err());
            }
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(SaCrypto::new(Cipher::AesGcm16(256), None, &[0; 32], &[], false).is_err());
        assert!(SaCrypto::new(Cipher::AesCbc(256), None, &[0; 32], &[], true).is_err());
        assert!(SaCrypto::new(
            Cipher::CamelliaCbc(192),
            Some(Integrity::HmacSha256_128),
            &[0; 24],
            &[0; 32],
            false
        )
        .is_err());
    }

    fn crypto(cipher: Cipher, integ: Option<Integrity>, klen: usize, esn: bool) -> SaCrypto {
        let key: Vec<u8> = (0..klen as u8).collect();
        let ikey = &[9; 64][..integ.map_or(0, |i| i.icv_len() * 2)];
        SaCrypto::new(cipher, integ, &key, ikey, esn).unwrap()
    }

    fn seal_one(c: &SaCrypto, inner: &[u8], seq: u64) -> Result<Vec<u8>, DropReason> {
        let mut buf = vec![0u8; HEADROOM + inner.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + inner.len()].copy_from_slice(inner);
        let out = c.seal(
            &mut buf,
            HEADROOM..HEADROOM + inner.len(),
            0xabcd,
            seq,
            4,
            &mut |iv| {
                iv.fill(0x5a);
                Ok(())
            },
        )?;
        Ok(buf[out].to_vec())
    }

    /// Every suite with ESN, on both sides of the 2^32 boundary: the
    /// header carries the low 32 bits, the ICV covers the high ones, and a
    /// packet opened with other high bits fails integrity.
    #[test]
    fn esn_round_trip_across_the_32_bit_boundary() {
        let inner: Vec<u8> = (0..300).map(|i| i as u8).collect();
        for (cipher, integ, klen) in suites() {
            let c = crypto(cipher, integ, klen, true);
            for seq in [
                1,
                u64::from(u32::MAX),
                1 << 32,
                (1 << 32) + 1,
                (5 << 32) + 7,
                u64::MAX,
            ] {
                let pkt = seal_one(&c, &inner, seq).unwrap();
                assert_eq!(header_seq(&pkt), Some(seq as u32), "{cipher:?}");
                for wrong in [seq.wrapping_add(1 << 32), seq.wrapping_sub(1 << 32)] {
                    assert_eq!(
                        c.open(&mut pkt.clone(), wrong),
                        Err(DropReason::Integrity),
                        "{cipher:?} {seq} opened as {wrong}"
                    );
                }
                assert_eq!(
                    c.open(&mut pkt.clone(), seq ^ 1),
                    Err(DropReason::Malformed)
                );
                let mut p = pkt.clone();
                let (range, nh) = c.open(&mut p, seq).unwrap();
                assert_eq!((&p[range], nh), (&inner[..], 4), "{cipher:?} {seq}");
            }
            // Without ESN the same keys refuse to go past 2^32 - 1, and an
            // SA with ESN does not interoperate with one without, even
            // below 2^32: the ICV input differs.
            let plain = crypto(cipher, integ, klen, false);
            assert_eq!(
                seal_one(&plain, &inner, 1 << 32),
                Err(DropReason::SeqExhausted)
            );
            let mut p = seal_one(&c, &inner, 9).unwrap();
            assert_eq!(plain.open(&mut p, 9), Err(DropReason::Integrity));
            let mut p = seal_one(&plain, &inner, 9).unwrap();
            assert_eq!(c.open(&mut p, 9), Err(DropReason::Integrity));
        }
    }

    /// The ICV input with ESN, checked with the primitives directly:
    /// GCM's AAD is SPI || 64-bit sequence number (RFC 4106 §5); HMAC runs
    /// over the packet and then the high 32 bits (RFC 4303 §2.2.1).
    #[test]
    fn esn_icv_input_is_as_the_rfcs_say() {
        let inner = [0x45u8; 40];
        let seq = (3u64 << 32) | 0x10;
        let gcm = crypto(Cipher::AesGcm16(128), None, 20, true);
        let mut pkt = seal_one(&gcm, &inner, seq).unwrap();
        let key: Vec<u8> = (0..20u8).collect();
        let k = LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &key[..16]).unwrap());
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&key[16..]);
        nonce[4..].copy_from_slice(&pkt[8..16]);
        let mut aad = [0u8; 12];
        aad[..4].copy_from_slice(&0xabcdu32.to_be_bytes());
        aad[4..].copy_from_slice(&seq.to_be_bytes());
        let n = pkt.len();
        let (body, tag) = pkt.split_at_mut(n - 16);
        k.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            tag,
            &mut body[16..],
        )
        .unwrap();
        assert_eq!(&body[16..56], &inner[..]);

        let integ = Integrity::HmacSha256_128;
        let cbc = crypto(Cipher::AesCbc(128), Some(integ), 16, true);
        let pkt = seal_one(&cbc, &inner, seq).unwrap();
        let mac = hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]);
        let mut input = pkt[..pkt.len() - 16].to_vec();
        input.extend_from_slice(&3u32.to_be_bytes());
        assert_eq!(
            &hmac::sign(&mac, &input).as_ref()[..16],
            &pkt[pkt.len() - 16..]
        );
    }
}
