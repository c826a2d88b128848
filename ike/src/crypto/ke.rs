//! Key exchange: ECP groups (RFC 5903) through aws-lc-rs, MODP groups
//! (RFC 3526) with crypto-bigint.

use super::CryptoError;
use crate::wire::KeId;
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use rand_core::RngCore;
use zeroize::{Zeroize, Zeroizing};

/// Bits of the secret exponent for each MODP group: twice the group's
/// security strength (NIST SP 800-56A rev 3 §5.6.1.1.1 / RFC 3526 §8).
fn modp_exponent_bits(group: KeId) -> u32 {
    match group {
        KeId::Modp2048 => 256,
        KeId::Modp3072 => 256,
        _ => 320,
    }
}

/// Our half of one key exchange, for one group.
pub struct KeyExchange {
    group: KeId,
    secret: Secret,
}

impl std::fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyExchange({})", self.group)
    }
}

enum Secret {
    Ecdh(PrivateKey),
    Modp { exponent: BoxedUint, bits: u32 },
}

impl Drop for KeyExchange {
    fn drop(&mut self) {
        if let Secret::Modp { exponent, .. } = &mut self.secret {
            exponent.zeroize();
        }
    }
}

fn ecdh_algorithm(group: KeId) -> Option<&'static agreement::Algorithm> {
    match group {
        KeId::Ecp256 => Some(&agreement::ECDH_P256),
        KeId::Ecp384 => Some(&agreement::ECDH_P384),
        KeId::Ecp521 => Some(&agreement::ECDH_P521),
        _ => None,
    }
}

fn modp_prime(group: KeId) -> Option<&'static str> {
    match group {
        KeId::Modp2048 => Some(MODP_2048),
        KeId::Modp3072 => Some(MODP_3072),
        KeId::Modp4096 => Some(MODP_4096),
        _ => None,
    }
}

fn modp_params(prime_hex: &str) -> Result<(BoxedMontyParams, u32), CryptoError> {
    let bytes = decode_hex(prime_hex).ok_or(CryptoError::Internal)?;
    let bits = u32::try_from(bytes.len() * 8).map_err(|_| CryptoError::Internal)?;
    let p = BoxedUint::from_be_slice(&bytes, bits).map_err(|_| CryptoError::Internal)?;
    let odd = Option::<Odd<BoxedUint>>::from(Odd::new(p)).ok_or(CryptoError::Internal)?;
    Ok((BoxedMontyParams::new(odd), bits))
}

impl KeyExchange {
    /// Whether the group is one renkei can compute.
    pub fn supports(group: KeId) -> bool {
        ecdh_algorithm(group).is_some() || modp_prime(group).is_some()
    }

    /// The group.
    pub fn group(&self) -> KeId {
        self.group
    }

    /// Generates a key pair from `rng`; returns it with the public value as
    /// carried in a KE payload.
    pub fn generate(
        group: KeId,
        rng: &mut dyn RngCore,
    ) -> Result<(KeyExchange, Vec<u8>), CryptoError> {
        if let Some(alg) = ecdh_algorithm(group) {
            let len = match group {
                KeId::Ecp256 => 32,
                KeId::Ecp384 => 48,
                _ => 66,
            };
            // A random scalar is out of range (zero or ≥ n) with negligible
            // probability; P-521's top byte keeps only its one used bit.
            for _ in 0..16 {
                let mut scalar = Zeroizing::new(vec![0u8; len]);
                rng.fill_bytes(&mut scalar);
                if group == KeId::Ecp521 {
                    scalar[0] &= 0x01;
                }
                let Ok(key) = PrivateKey::from_private_key(alg, &scalar) else {
                    continue;
                };
                let public = key
                    .compute_public_key()
                    .map_err(|_| CryptoError::Internal)?;
                // RFC 5903 §7: the KE payload carries x | y without the
                // SEC1 0x04 prefix.
                let public = public
                    .as_ref()
                    .get(1..)
                    .ok_or(CryptoError::Internal)?
                    .to_vec();
                return Ok((
                    KeyExchange {
                        group,
                        secret: Secret::Ecdh(key),
                    },
                    public,
                ));
            }
            return Err(CryptoError::Internal);
        }
        let prime = modp_prime(group).ok_or(CryptoError::Unsupported)?;
        let (params, bits) = modp_params(prime)?;
        let exp_bits = modp_exponent_bits(group);
        let mut raw = Zeroizing::new(vec![0u8; exp_bits as usize / 8]);
        rng.fill_bytes(&mut raw);
        raw[0] |= 0x80;
        let exponent = BoxedUint::from_be_slice(&raw, 512).map_err(|_| CryptoError::Internal)?;
        let g = BoxedMontyForm::new(
            BoxedUint::from_be_slice(&[2], bits).map_err(|_| CryptoError::Internal)?,
            params,
        );
        let public = g.pow_bounded_exp(&exponent, exp_bits).retrieve();
        Ok((
            KeyExchange {
                group,
                secret: Secret::Modp {
                    exponent,
                    bits: exp_bits,
                },
            },
            fixed_be(&public, bits as usize / 8),
        ))
    }

    /// The shared secret `g^ir` from the peer's public value: the
    /// x-coordinate for ECP (RFC 5903 §7), the full-length value for MODP
    /// (RFC 7296 §2.14 pads it to the length of the modulus).
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match &self.secret {
            Secret::Ecdh(key) => {
                let mut sec1 = Vec::with_capacity(peer.len() + 1);
                sec1.push(0x04);
                sec1.extend_from_slice(peer);
                let public = UnparsedPublicKey::new(key.algorithm(), sec1);
                agreement::agree(key, public, CryptoError::InvalidPublicValue, |k| {
                    Ok(Zeroizing::new(k.to_vec()))
                })
            }
            Secret::Modp { exponent, bits } => {
                let prime = modp_prime(self.group).ok_or(CryptoError::Unsupported)?;
                let (params, pbits) = modp_params(prime)?;
                let plen = pbits as usize / 8;
                if peer.len() != plen {
                    return Err(CryptoError::InvalidPublicValue);
                }
                let y = BoxedUint::from_be_slice(peer, pbits)
                    .map_err(|_| CryptoError::InvalidPublicValue)?;
                // RFC 6989 §2.1: refuse 0, 1, p-1 and anything ≥ p.
                let one =
                    BoxedUint::from_be_slice(&[1], pbits).map_err(|_| CryptoError::Internal)?;
                let p_minus_1 = params.modulus().as_ref().wrapping_sub(&one);
                if y <= one || y >= p_minus_1 {
                    return Err(CryptoError::InvalidPublicValue);
                }
                let base = BoxedMontyForm::new(y, params);
                let shared = base.pow_bounded_exp(exponent, *bits).retrieve();
                Ok(Zeroizing::new(fixed_be(&shared, plen)))
            }
        }
    }
}

fn fixed_be(n: &BoxedUint, len: usize) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut out = vec![0u8; len];
    let take = bytes.len().min(len);
    out[len - take..].copy_from_slice(&bytes[bytes.len() - take..]);
    out
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// RFC 3526 MODP group prime, 2048 bits (derived from its defining formula
/// and checked against OpenSSL's named group when this file was written).
const MODP_2048: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
);

/// RFC 3526 MODP group prime, 3072 bits (derived from its defining formula
/// and checked against OpenSSL's named group when this file was written).
const MODP_3072: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
);

/// RFC 3526 MODP group prime, 4096 bits (derived from its defining formula
/// and checked against OpenSSL's named group when this file was written).
const MODP_4096: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7",
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8",
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2",
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9",
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
);

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn both_sides_agree_in_every_group() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for group in [
            KeId::Ecp256,
            KeId::Ecp384,
            KeId::Ecp521,
            KeId::Modp2048,
            KeId::Modp3072,
            KeId::Modp4096,
        ] {
            let (a, pa) = KeyExchange::generate(group, &mut rng).unwrap();
            let (b, pb) = KeyExchange::generate(group, &mut rng).unwrap();
            let sa = a.shared_secret(&pb).unwrap();
            let sb = b.shared_secret(&pa).unwrap();
            assert_eq!(*sa, *sb, "{group}");
            let expected = match group {
                KeId::Ecp256 => (64, 32),
                KeId::Ecp384 => (96, 48),
                KeId::Ecp521 => (132, 66),
                KeId::Modp2048 => (256, 256),
                KeId::Modp3072 => (384, 384),
                _ => (512, 512),
            };
            assert_eq!((pa.len(), sa.len()), expected, "{group}");
        }
    }

    #[test]
    fn primes_have_the_rfc3526_shape() {
        // 64 leading and 64 trailing one bits, per RFC 3526's definition.
        for p in [MODP_2048, MODP_3072, MODP_4096] {
            assert!(p.starts_with("FFFFFFFFFFFFFFFFC90FDAA22168C234"));
            assert!(p.ends_with("FFFFFFFFFFFFFFFF"));
        }
        assert_eq!(MODP_2048.len() * 4, 2048);
        assert_eq!(MODP_3072.len() * 4, 3072);
        assert_eq!(MODP_4096.len() * 4, 4096);
    }

    #[test]
    fn invalid_public_values_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (a, _) = KeyExchange::generate(KeId::Modp2048, &mut rng).unwrap();
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert_eq!(
            a.shared_secret(&one).err(),
            Some(CryptoError::InvalidPublicValue)
        );
        assert_eq!(
            a.shared_secret(&[0xff; 256]).err(),
            Some(CryptoError::InvalidPublicValue)
        );
        assert_eq!(
            a.shared_secret(&[2; 10]).err(),
            Some(CryptoError::InvalidPublicValue)
        );
        let (e, _) = KeyExchange::generate(KeId::Ecp256, &mut rng).unwrap();
        assert_eq!(
            e.shared_secret(&[1; 64]).err(),
            Some(CryptoError::InvalidPublicValue)
        );
        assert_eq!(
            e.shared_secret(&[]).err(),
            Some(CryptoError::InvalidPublicValue)
        );
    }
}
