//! Cryptographic building blocks of IKEv2, limited to the CRYPTREC profile.
//!
//! HMAC, AES-GCM, AES-CBC, ECDH and SHA-1 (only for NAT detection hashes,
//! which RFC 7296 §2.23 fixes to SHA-1 and which protect nothing) come from
//! aws-lc-rs; Camellia-CBC from RustCrypto; MODP Diffie-Hellman is modular
//! exponentiation with crypto-bigint's constant-time Montgomery arithmetic,
//! because no maintained crate offers RFC 3526 groups.

mod ke;
mod sk;

pub use ke::KeyExchange;
pub use sk::SkCipher;

use crate::wire::{EncrId, IntegId, PrfId};
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// The integrity check or AEAD tag did not verify.
    Integrity,
    /// Ciphertext or padding has an impossible length.
    BadLength,
    /// A peer's key exchange value is invalid for its group.
    InvalidPublicValue,
    /// The algorithm is not in the profile.
    Unsupported,
    /// The crypto library failed internally.
    Internal,
}

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CryptoError::Integrity => "integrity check failed",
            CryptoError::BadLength => "bad ciphertext or padding length",
            CryptoError::InvalidPublicValue => "invalid key exchange public value",
            CryptoError::Unsupported => "algorithm not supported",
            CryptoError::Internal => "internal crypto failure",
        })
    }
}

impl std::error::Error for CryptoError {}

/// Pseudorandom functions of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256
    HmacSha256,
    /// PRF_HMAC_SHA2_384
    HmacSha384,
    /// PRF_HMAC_SHA2_512
    HmacSha512,
}

impl Prf {
    /// The profile's PRF for an IANA ID, if any.
    pub fn from_id(id: PrfId) -> Option<Prf> {
        match id {
            PrfId::HmacSha256 => Some(Prf::HmacSha256),
            PrfId::HmacSha384 => Some(Prf::HmacSha384),
            PrfId::HmacSha512 => Some(Prf::HmacSha512),
            _ => None,
        }
    }

    /// IANA ID.
    pub fn id(self) -> PrfId {
        match self {
            Prf::HmacSha256 => PrfId::HmacSha256,
            Prf::HmacSha384 => PrfId::HmacSha384,
            Prf::HmacSha512 => PrfId::HmacSha512,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Prf::HmacSha256 => hmac::HMAC_SHA256,
            Prf::HmacSha384 => hmac::HMAC_SHA384,
            Prf::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// Output length, which is also the preferred key length (RFC 7296 §2.13).
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    /// `prf(key, data[0] | data[1] | …)`.
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut ctx = hmac::Context::with_key(&key);
        for d in data {
            ctx.update(d);
        }
        Zeroizing::new(ctx.sign().as_ref().to_vec())
    }

    /// `prf+ (K, S)` of RFC 7296 §2.13, truncated to `len` bytes.
    ///
    /// ```text
    /// prf+ (K,S) = T1 | T2 | T3 | T4 | ...
    /// T1 = prf (K, S | 0x01), T2 = prf (K, T1 | S | 0x02), ...
    /// ```
    pub fn prf_plus(self, key: &[u8], seed: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut t: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
        let mut counter = 1u8;
        while out.len() < len {
            let mut ctx = hmac::Context::with_key(&key);
            ctx.update(&t);
            ctx.update(seed);
            ctx.update(&[counter]);
            t = Zeroizing::new(ctx.sign().as_ref().to_vec());
            out.extend_from_slice(&t);
            // RFC 7296 §2.13: prf+ is limited to 255 iterations.
            counter = counter.wrapping_add(1);
            if counter == 0 {
                break;
            }
        }
        out.truncate(len);
        out
    }
}

/// Integrity algorithms of the profile (used only with CBC ciphers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integ {
    /// AUTH_HMAC_SHA2_256_128
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256
    HmacSha512_256,
}

impl Integ {
    /// The profile's integrity algorithm for an IANA ID, if any.
    pub fn from_id(id: IntegId) -> Option<Integ> {
        match id {
            IntegId::HmacSha256_128 => Some(Integ::HmacSha256_128),
            IntegId::HmacSha384_192 => Some(Integ::HmacSha384_192),
            IntegId::HmacSha512_256 => Some(Integ::HmacSha512_256),
            _ => None,
        }
    }

    /// IANA ID.
    pub fn id(self) -> IntegId {
        match self {
            Integ::HmacSha256_128 => IntegId::HmacSha256_128,
            Integ::HmacSha384_192 => IntegId::HmacSha384_192,
            Integ::HmacSha512_256 => IntegId::HmacSha512_256,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Integ::HmacSha256_128 => hmac::HMAC_SHA256,
            Integ::HmacSha384_192 => hmac::HMAC_SHA384,
            Integ::HmacSha512_256 => hmac::HMAC_SHA512,
        }
    }

    /// Key length (RFC 4868 §2.1.1: the hash output length).
    pub fn key_len(self) -> usize {
        match self {
            Integ::HmacSha256_128 => 32,
            Integ::HmacSha384_192 => 48,
            Integ::HmacSha512_256 => 64,
        }
    }

    /// Length of the truncated checksum.
    pub fn icv_len(self) -> usize {
        self.key_len() / 2
    }

    /// The truncated checksum of `data[0] | data[1] | …`.
    pub fn compute(self, key: &[u8], data: &[&[u8]]) -> Vec<u8> {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut ctx = hmac::Context::with_key(&key);
        for d in data {
            ctx.update(d);
        }
        let tag = ctx.sign();
        tag.as_ref()[..self.icv_len()].to_vec()
    }
}

/// Encryption algorithms of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encr {
    /// ENCR_AES_GCM_16 with a 128- or 256-bit key (RFC 5282, RFC 4106).
    AesGcm16 {
        /// Key length in bits.
        bits: u16,
    },
    /// ENCR_AES_CBC with a 128- or 256-bit key (RFC 3602).
    AesCbc {
        /// Key length in bits.
        bits: u16,
    },
    /// ENCR_CAMELLIA_CBC with a 128- or 256-bit key (RFC 5529).
    CamelliaCbc {
        /// Key length in bits.
        bits: u16,
    },
}

impl Encr {
    /// The profile's cipher for an IANA ID and key length, if any.
    pub fn from_id(id: EncrId, bits: Option<u16>) -> Option<Encr> {
        let bits = bits.filter(|b| *b == 128 || *b == 256)?;
        match id {
            EncrId::AesGcm16 => Some(Encr::AesGcm16 { bits }),
            EncrId::AesCbc => Some(Encr::AesCbc { bits }),
            EncrId::CamelliaCbc => Some(Encr::CamelliaCbc { bits }),
            _ => None,
        }
    }

    /// IANA ID.
    pub fn id(self) -> EncrId {
        match self {
            Encr::AesGcm16 { .. } => EncrId::AesGcm16,
            Encr::AesCbc { .. } => EncrId::AesCbc,
            Encr::CamelliaCbc { .. } => EncrId::CamelliaCbc,
        }
    }

    /// Key length in bits.
    pub fn bits(self) -> u16 {
        match self {
            Encr::AesGcm16 { bits } | Encr::AesCbc { bits } | Encr::CamelliaCbc { bits } => bits,
        }
    }

    /// Whether this is an AEAD cipher (no separate integrity algorithm).
    pub fn is_aead(self) -> bool {
        matches!(self, Encr::AesGcm16 { .. })
    }

    /// Bytes of keying material: the key, plus a 4-byte salt for GCM
    /// (RFC 5282 §7.1, RFC 4106 §8.1).
    pub fn keymat_len(self) -> usize {
        let key = usize::from(self.bits()) / 8;
        if self.is_aead() {
            key + 4
        } else {
            key
        }
    }

    /// strongSwan's name for the cipher ("aes256gcm16", "aes128", "camellia256").
    pub fn swan_name(self) -> String {
        match self {
            Encr::AesGcm16 { bits } => format!("aes{bits}gcm16"),
            Encr::AesCbc { bits } => format!("aes{bits}"),
            Encr::CamelliaCbc { bits } => format!("camellia{bits}"),
        }
    }
}

/// The NAT detection hash of RFC 7296 §2.23: `SHA-1(SPIi | SPIr | IP | Port)`.
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: std::net::SocketAddr) -> Vec<u8> {
    use aws_lc_rs::digest;
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(a) => ctx.update(&a.octets()),
        std::net::IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

/// Constant-time comparison of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // NIST CAVP SP 800-135 IKEv2 KDF sample (SHA-256), as carried in NSS's
    // ike_sha256_vectors.h: SKEYSEED, prf+ keying material and the rekey
    // SKEYSEED.
    const GIR: &str = "0f4d257d7a58fc4545c7d7a88119eee5d5c9690c5b4c989171d3abbfd99d1d29";
    const NI: &str = "3f302be1abcb28e1";
    const NR: &str = "8c332ee006064c9b";
    const SPI_I: &str = "40dac39e1e1a8640";
    const SPI_R: &str = "8619a1cf9a6e4c07";
    const SKEYSEED: &str = "5f00d1bd2c58ec224b1e6b71fa0f19a1faa7a193952c444411b47c1a9d8ba6fe";
    const DKM: &str = concat!(
        "0b137d669b0947d7d026d593f0305ad401ff0c471357d695778a9c7f4b4869ec",
        "e98aca531188d16041b3bb936d2dbb3b4993a6e768a809160de45d0283f273a6",
        "cdf6854379e31be72b8d3d1fa990cf9c5b015ca9f918a7df6253c958114a09d4",
        "e1c19bdcd4db14b29d98db1a74ad405c588662c14a04d0d36aa4ab55e90f8986",
        "d12d4aad"
    );
    const GIR_NEW: &str = "25f3b12d6f282739256e39bf54eda53b60ffcf379bb7bcc90c27b4c4c578616c";
    const SKEYSEED_REKEY: &str = "2d63f6debc92048b4fef3889c4c99ca67d6496e0fac14a2bca9a2d6566ff2398";

    #[test]
    fn skeyseed_matches_nist_vector() {
        let (ni, nr) = (h(NI), h(NR));
        let skeyseed = Prf::HmacSha256.prf(&[ni, nr].concat(), &[&h(GIR)]);
        assert_eq!(hex::encode(&*skeyseed), SKEYSEED);
    }

    #[test]
    fn prf_plus_matches_nist_vector() {
        let seed = [h(NI), h(NR), h(SPI_I), h(SPI_R)].concat();
        for len in [15, 32, 132] {
            let dkm = Prf::HmacSha256.prf_plus(&h(SKEYSEED), &seed, len);
            assert_eq!(hex::encode(&*dkm), &DKM[..2 * len]);
        }
    }

    #[test]
    fn rekey_skeyseed_matches_nist_vector() {
        // RFC 7296 §2.18: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)
        let sk_d = &h(DKM)[..32];
        let s = Prf::HmacSha256.prf(sk_d, &[&h(GIR_NEW), &h(NI), &h(NR)]);
        assert_eq!(hex::encode(&*s), SKEYSEED_REKEY);
    }

    #[test]
    fn hmac_sha2_rfc4231_case2() {
        // RFC 4231 test case 2 ("Jefe"), truncated as RFC 4868 does.
        let tag = Integ::HmacSha256_128.compute(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(tag), "5bdcc146bf60754e6a042426089575c7");
        let full = Prf::HmacSha512.prf(b"Jefe", &[b"what do ya want for nothing?"]);
        assert!(hex::encode(&*full).starts_with("164b7a7bfcf819e2e395fbe73b56e0a3"));
    }
}
