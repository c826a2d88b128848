//! Protection of the Encrypted payload (RFC 7296 §3.14, RFC 5282).
//!
//! ```text
//! AEAD (AES-GCM):  IV(8) | E(inner | pad | pad-length) | ICV(16)
//!                  nonce = salt(4) | IV, AAD = IKE header .. SK generic header
//! CBC + HMAC:      IV(16) | E(inner | pad | pad-length) | ICV(trunc)
//!                  ICV over IKE header .. end of ciphertext
//! ```

use super::{constant_time_eq, CryptoError, Encr, Integ};
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use rand_core::RngCore;
use zeroize::Zeroizing;

const GCM_IV: usize = 8;
const GCM_ICV: usize = 16;
const CBC_BLOCK: usize = 16;

/// Keys protecting the Encrypted payload in one direction.
pub struct SkCipher {
    encr: Encr,
    integ: Option<Integ>,
    ek: Zeroizing<Vec<u8>>,
    ak: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkCipher")
            .field("encr", &self.encr)
            .field("integ", &self.integ)
            .finish_non_exhaustive()
    }
}

impl SkCipher {
    /// Keys for one direction: `ek` is SK_e (key and, for GCM, salt), `ak`
    /// is SK_a (empty for AEAD).
    pub fn new(
        encr: Encr,
        integ: Option<Integ>,
        ek: Zeroizing<Vec<u8>>,
        ak: Zeroizing<Vec<u8>>,
    ) -> Self {
        SkCipher {
            encr,
            integ,
            ek,
            ak,
        }
    }

    fn iv_len(&self) -> usize {
        if self.encr.is_aead() {
            GCM_IV
        } else {
            CBC_BLOCK
        }
    }

    fn icv_len(&self) -> usize {
        match (self.encr.is_aead(), self.integ) {
            (true, _) => GCM_ICV,
            (false, Some(i)) => i.icv_len(),
            (false, None) => 0,
        }
    }

    fn padded_len(&self, plain: usize) -> usize {
        if self.encr.is_aead() {
            plain + 1
        } else {
            (plain + 1).div_ceil(CBC_BLOCK) * CBC_BLOCK
        }
    }

    /// Length of the SK payload body for `plain` bytes of inner payloads.
    pub fn sealed_len(&self, plain: usize) -> usize {
        self.iv_len() + self.padded_len(plain) + self.icv_len()
    }

    /// Seals `inner` into an SK payload body. `prefix` is the message from
    /// its first byte through the SK generic payload header, already final
    /// (its lengths count [`SkCipher::sealed_len`]).
    pub fn seal(
        &self,
        prefix: &[u8],
        inner: &[u8],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<u8>, CryptoError> {
        let iv_len = self.iv_len();
        let padded = self.padded_len(inner.len());
        let mut body = vec![0u8; self.sealed_len(inner.len())];
        rng.fill_bytes(&mut body[..iv_len]);
        let pt = &mut body[iv_len..iv_len + padded];
        pt[..inner.len()].copy_from_slice(inner);
        let pad = padded - inner.len() - 1;
        pt[padded - 1] = u8::try_from(pad).map_err(|_| CryptoError::BadLength)?;
        let (iv, rest) = body.split_at_mut(iv_len);
        let (ct, icv) = rest.split_at_mut(padded);
        match self.encr {
            Encr::AesGcm16 { .. } => {
                let key = self.aead_key()?;
                let tag = key
                    .seal_in_place_separate_tag(self.nonce(iv)?, Aad::from(prefix), ct)
                    .map_err(|_| CryptoError::Internal)?;
                icv.copy_from_slice(tag.as_ref());
            }
            Encr::AesCbc { .. } | Encr::CamelliaCbc { .. } => {
                cbc_encrypt(self.encr, &self.ek, iv, ct)?;
                let integ = self.integ.ok_or(CryptoError::Unsupported)?;
                icv.copy_from_slice(&integ.compute(&self.ak, &[prefix, iv, ct]));
            }
        }
        Ok(body)
    }

    /// Opens an SK payload body, returning the inner payload bytes.
    pub fn open(&self, prefix: &[u8], body: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (iv_len, icv_len) = (self.iv_len(), self.icv_len());
        if body.len() < iv_len + icv_len + 1 {
            return Err(CryptoError::BadLength);
        }
        let (iv, rest) = body.split_at(iv_len);
        let (ct, icv) = rest.split_at(rest.len() - icv_len);
        let mut pt = ct.to_vec();
        match self.encr {
            Encr::AesGcm16 { .. } => {
                let key = self.aead_key()?;
                key.open_in_place_separate_tag(self.nonce(iv)?, Aad::from(prefix), icv, &mut pt)
                    .map_err(|_| CryptoError::Integrity)?;
            }
            Encr::AesCbc { .. } | Encr::CamelliaCbc { .. } => {
                let integ = self.integ.ok_or(CryptoError::Unsupported)?;
                if !constant_time_eq(&integ.compute(&self.ak, &[prefix, iv, ct]), icv) {
                    return Err(CryptoError::Integrity);
                }
                if ct.len() % CBC_BLOCK != 0 {
                    return Err(CryptoError::BadLength);
                }
                cbc_decrypt(self.encr, &self.ek, iv, &mut pt)?;
            }
        }
        let pad = usize::from(*pt.last().ok_or(CryptoError::BadLength)?);
        if pad + 1 > pt.len() {
            return Err(CryptoError::BadLength);
        }
        pt.truncate(pt.len() - pad - 1);
        Ok(pt)
    }

    fn aead_key(&self) -> Result<LessSafeKey, CryptoError> {
        let key_len = usize::from(self.encr.bits()) / 8;
        let alg = if key_len == 16 {
            &aead::AES_128_GCM
        } else {
            &aead::AES_256_GCM
        };
        let key = self.ek.get(..key_len).ok_or(CryptoError::BadLength)?;
        Ok(LessSafeKey::new(
            UnboundKey::new(alg, key).map_err(|_| CryptoError::Internal)?,
        ))
    }

    fn nonce(&self, iv: &[u8]) -> Result<Nonce, CryptoError> {
        let key_len = usize::from(self.encr.bits()) / 8;
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(
            self.ek
                .get(key_len..key_len + 4)
                .ok_or(CryptoError::BadLength)?,
        );
        n[4..].copy_from_slice(iv);
        Ok(Nonce::assume_unique_for_key(n))
    }
}

/// CBC-encrypts whole blocks in place (no padding: IKE and ESP pad
/// themselves).
fn cbc_encrypt(encr: Encr, key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
    let iv: [u8; 16] = iv.try_into().map_err(|_| CryptoError::BadLength)?;
    match encr {
        Encr::AesCbc { bits } => {
            let alg = if bits == 128 {
                &cipher::AES_128
            } else {
                &cipher::AES_256
            };
            let key = EncryptingKey::cbc(
                UnboundCipherKey::new(alg, key).map_err(|_| CryptoError::Internal)?,
            )
            .map_err(|_| CryptoError::Internal)?;
            key.less_safe_encrypt(buf, EncryptionContext::Iv128(iv.into()))
                .map_err(|_| CryptoError::Internal)?;
            Ok(())
        }
        Encr::CamelliaCbc { bits } => camellia_cbc(bits, key, iv, buf, true),
        Encr::AesGcm16 { .. } => Err(CryptoError::Unsupported),
    }
}

fn cbc_decrypt(encr: Encr, key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
    let iv: [u8; 16] = iv.try_into().map_err(|_| CryptoError::BadLength)?;
    match encr {
        Encr::AesCbc { bits } => {
            let alg = if bits == 128 {
                &cipher::AES_128
            } else {
                &cipher::AES_256
            };
            let key = DecryptingKey::cbc(
                UnboundCipherKey::new(alg, key).map_err(|_| CryptoError::Internal)?,
            )
            .map_err(|_| CryptoError::Internal)?;
            key.decrypt(buf, DecryptionContext::Iv128(iv.into()))
                .map_err(|_| CryptoError::Internal)?;
            Ok(())
        }
        Encr::CamelliaCbc { bits } => camellia_cbc(bits, key, iv, buf, false),
        Encr::AesGcm16 { .. } => Err(CryptoError::Unsupported),
    }
}

fn camellia_cbc(
    bits: u16,
    key: &[u8],
    iv: [u8; 16],
    buf: &mut [u8],
    encrypt: bool,
) -> Result<(), CryptoError> {
    use cbc::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
    let len = buf.len();
    let r = match (bits, encrypt) {
        (128, true) => cbc::Encryptor::<camellia::Camellia128>::new_from_slices(key, &iv)
            .map_err(|_| CryptoError::BadLength)?
            .encrypt_padded_mut::<NoPadding>(buf, len)
            .map(|_| ())
            .map_err(|_| CryptoError::BadLength),
        (128, false) => cbc::Decryptor::<camellia::Camellia128>::new_from_slices(key, &iv)
            .map_err(|_| CryptoError::BadLength)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map(|_| ())
            .map_err(|_| CryptoError::BadLength),
        (256, true) => cbc::Encryptor::<camellia::Camellia256>::new_from_slices(key, &iv)
            .map_err(|_| CryptoError::BadLength)?
            .encrypt_padded_mut::<NoPadding>(buf, len)
            .map(|_| ())
            .map_err(|_| CryptoError::BadLength),
        (256, false) => cbc::Decryptor::<camellia::Camellia256>::new_from_slices(key, &iv)
            .map_err(|_| CryptoError::BadLength)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map(|_| ())
            .map_err(|_| CryptoError::BadLength),
        _ => Err(CryptoError::Unsupported),
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn cipher(encr: Encr, integ: Option<Integ>) -> SkCipher {
        let ek = Zeroizing::new((0..encr.keymat_len() as u8).collect());
        let ak = Zeroizing::new(vec![0x42; integ.map_or(0, |i| i.key_len())]);
        SkCipher::new(encr, integ, ek, ak)
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let suites = [
            (Encr::AesGcm16 { bits: 128 }, None),
            (Encr::AesGcm16 { bits: 256 }, None),
            (Encr::AesCbc { bits: 128 }, Some(Integ::HmacSha256_128)),
            (Encr::AesCbc { bits: 256 }, Some(Integ::HmacSha512_256)),
            (Encr::CamelliaCbc { bits: 128 }, Some(Integ::HmacSha384_192)),
            (Encr::CamelliaCbc { bits: 256 }, Some(Integ::HmacSha256_128)),
        ];
        for (encr, integ) in suites {
            let c = cipher(encr, integ);
            for len in [0usize, 1, 15, 16, 17, 100] {
                let inner: Vec<u8> = (0..len as u8).collect();
                let prefix = [7u8; 32];
                let body = c.seal(&prefix, &inner, &mut rng).unwrap();
                assert_eq!(body.len(), c.sealed_len(len));
                assert_eq!(c.open(&prefix, &body).unwrap(), inner, "{encr:?}");
                let mut bad = body.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert_eq!(c.open(&prefix, &bad), Err(CryptoError::Integrity));
                assert_eq!(c.open(&[8u8; 32], &body), Err(CryptoError::Integrity));
                assert!(c.open(&prefix, &body[..3]).is_err());
            }
        }
    }

    #[test]
    fn aes_cbc_rfc3602_case1() {
        // RFC 3602 §4 case #1: AES-128-CBC, one block.
        let key = hex::decode("06a9214036b8a15b512e03d534120006").unwrap();
        let iv = hex::decode("3dafba429d9eb430b422da802c9fac41").unwrap();
        let mut buf = b"Single block msg".to_vec();
        cbc_encrypt(Encr::AesCbc { bits: 128 }, &key, &iv, &mut buf).unwrap();
        assert_eq!(hex::encode(&buf), "e353779c1079aeb82708942dbe77181a");
    }
}
