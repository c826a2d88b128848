//! ESP packets sealed and opened in place (RFC 4303, RFC 4106, RFC 4868).
//!
//! ```text
//! outbound buffer:  [ headroom | inner packet | tailroom ]
//! after seal:       [ .. | SPI | Seq | IV | E(inner | pad | padlen | nh) | ICV | .. ]
//! ```
//!
//! Nothing here allocates: keys are prepared once per SA, the buffer is the
//! caller's, and the result is a range inside it.

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
const ESP_HEADER: usize = 8;
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
    /// GCM), `integ` the HMAC key for CBC suites.
    pub fn new(
        cipher: Cipher,
        integrity: Option<Integrity>,
        encr: &[u8],
        integ: &[u8],
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
        Ok(SaCrypto { engine })
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
    /// and `buf` must have [`TAILROOM`] bytes after `inner.end`.
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
        buf[start..start + 4].copy_from_slice(&spi.to_be_bytes());
        buf[start + 4..start + 8].copy_from_slice(&(seq as u32).to_be_bytes());
        let iv = start + ESP_HEADER..inner.start;
        match &self.engine {
            Engine::Gcm { key, salt } => {
                // RFC 4106 §3.1: the IV only has to be unique per key; the
                // 64-bit sequence number is.
                buf[iv.clone()].copy_from_slice(&seq.to_be_bytes());
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(salt);
                nonce[4..].copy_from_slice(&seq.to_be_bytes());
                let mut aad = [0u8; 8];
                aad.copy_from_slice(&buf[start..start + 8]);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
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
                let tag = hmac::sign(&k.mac, &buf[start..ct.end]);
                buf[ct.end..end].copy_from_slice(&tag.as_ref()[..k.integ.icv_len()]);
            }
            Engine::CamelliaCbc { key, mac, integ } => {
                iv_source(&mut buf[iv.clone()])?;
                let mut ivb = [0u8; 16];
                ivb.copy_from_slice(&buf[iv]);
                camellia(key, &ivb, &mut buf[ct.clone()], true)?;
                let tag = hmac::sign(mac, &buf[start..ct.end]);
                buf[ct.end..end].copy_from_slice(&tag.as_ref()[..integ.icv_len()]);
            }
        }
        Ok(start..end)
    }

    /// Verifies and decrypts an ESP packet in place; returns the inner
    /// packet's range and the next-header value.
    pub fn open(&self, packet: &mut [u8]) -> Result<(Range<usize>, u8), DropReason> {
        let (iv_len, block, icv_len) = self.layout();
        let ct_start = ESP_HEADER + iv_len;
        if packet.len() < ct_start + icv_len + block.max(4) {
            return Err(DropReason::Malformed);
        }
        let ct = ct_start..packet.len() - icv_len;
        if ct.len() % block != 0 {
            return Err(DropReason::Malformed);
        }
        match &self.engine {
            Engine::Gcm { key, salt } => {
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(salt);
                nonce[4..].copy_from_slice(&packet[ESP_HEADER..ct_start]);
                let mut aad = [0u8; 8];
                aad.copy_from_slice(&packet[..8]);
                let (body, tag) = packet.split_at_mut(ct.end);
                key.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    tag,
                    &mut body[ct.clone()],
                )
                .map_err(|_| DropReason::Integrity)?;
            }
            Engine::AesCbc(k) => {
                verify_hmac(&k.mac, &packet[..ct.end], &packet[ct.end..])?;
                let mut ivb = [0u8; 16];
                ivb.copy_from_slice(&packet[ESP_HEADER..ct_start]);
                k.dec
                    .decrypt(
                        &mut packet[ct.clone()],
                        DecryptionContext::Iv128(ivb.into()),
                    )
                    .map_err(|_| DropReason::Crypto)?;
            }
            Engine::CamelliaCbc { key, mac, .. } => {
                verify_hmac(mac, &packet[..ct.end], &packet[ct.end..])?;
                let mut ivb = [0u8; 16];
                ivb.copy_from_slice(&packet[ESP_HEADER..ct_start]);
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

fn verify_hmac(key: &hmac::Key, data: &[u8], icv: &[u8]) -> Result<(), DropReason> {
    let tag = hmac::sign(key, data);
    aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..icv.len()], icv)
        .map_err(|_| DropReason::Integrity)
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

/// The sequence number in an ESP header.
pub fn header_seq(packet: &[u8]) -> Option<u32> {
    packet
        .get(4..8)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The SPI in an ESP header.
pub fn header_spi(packet: &[u8]) -> Option<u32> {
    packet
        .get(0..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
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
                assert_eq!(c.open(&mut tampered), Err(DropReason::Integrity));
                let (range, nh) = c.open(&mut pkt).unwrap();
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
            )
            .unwrap();
            for n in 0..80 {
                let mut p = vec![0u8; n];
                assert!(c.open(&mut p).is_err());
            }
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(SaCrypto::new(Cipher::AesGcm16(256), None, &[0; 32], &[]).is_err());
        assert!(SaCrypto::new(Cipher::AesCbc(256), None, &[0; 32], &[]).is_err());
        assert!(SaCrypto::new(
            Cipher::CamelliaCbc(192),
            Some(Integrity::HmacSha256_128),
            &[0; 24],
            &[0; 32]
        )
        .is_err());
    }
}
