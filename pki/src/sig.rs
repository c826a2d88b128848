//! Signature schemes, public keys and signing keys.
//!
//! Every scheme here is on the CRYPTREC list: ECDSA (P-256/P-384/P-521),
//! RSA (PKCS#1 v1.5 and PSS, 2048 bits or more), Ed25519, each with SHA-2.
//! SHA-1 and short RSA keys are refused with an error that says so, both in
//! certificates and in IKE AUTH payloads. The cryptography is aws-lc-rs; this
//! module only maps algorithm identifiers and key types onto it.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use x509_parser::der_parser::asn1_rs::{oid, FromDer, Oid};
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};
use zeroize::Zeroizing;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A SHA-2 hash, as used in signatures (and named in IKE's
/// SIGNATURE_HASH_ALGORITHMS notify, RFC 7427 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    /// SHA-256
    Sha256,
    /// SHA-384
    Sha384,
    /// SHA-512
    Sha512,
}

impl Hash {
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    fn from_oid(oid: &Oid<'_>) -> Result<Hash, SigError> {
        if *oid == oid!(2.16.840 .1 .101 .3 .4 .2 .1) {
            Ok(Hash::Sha256)
        } else if *oid == oid!(2.16.840 .1 .101 .3 .4 .2 .2) {
            Ok(Hash::Sha384)
        } else if *oid == oid!(2.16.840 .1 .101 .3 .4 .2 .3) {
            Ok(Hash::Sha512)
        } else if *oid == oid!(1.3.14 .3 .2 .26) {
            Err(SigError::Sha1)
        } else {
            Err(SigError::Unsupported(format!("hash {oid}")))
        }
    }
}

/// A signature scheme: key type, padding and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// ECDSA with a SHA-2 hash; the signature is a DER `ECDSA-Sig-Value`.
    Ecdsa(Hash),
    /// RSASSA-PKCS1-v1_5 with a SHA-2 hash.
    RsaPkcs1(Hash),
    /// RSASSA-PSS with a SHA-2 hash, MGF1 with the same hash, and a salt
    /// as long as the hash (RFC 4055 §3.1, the only form renkei makes or
    /// accepts).
    RsaPss(Hash),
    /// Ed25519 (RFC 8032), the message signed as it is.
    Ed25519,
}

// DER AlgorithmIdentifiers (RFC 7427 Appendix A, RFC 4055, RFC 8410),
// written out because they are fixed byte strings.
const AI_ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const AI_ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
const AI_ECDSA_SHA512: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
];
const AI_RSA_SHA256: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
const AI_RSA_SHA384: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
];
const AI_RSA_SHA512: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
];
const AI_ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// RSASSA-PSS-params for `hash` (RFC 4055 §3.1): hash, MGF1 with the same
/// hash, salt length = hash length, default trailer.
fn pss_identifier(hash: Hash) -> Vec<u8> {
    let hash_oid_last = match hash {
        Hash::Sha256 => 0x01,
        Hash::Sha384 => 0x02,
        Hash::Sha512 => 0x03,
    };
    // AlgorithmIdentifier of the hash: SEQUENCE { OID 2.16.840.1.101.3.4.2.x, NULL }
    let hash_ai = [
        0x30,
        0x0d,
        0x06,
        0x09,
        0x60,
        0x86,
        0x48,
        0x01,
        0x65,
        0x03,
        0x04,
        0x02,
        hash_oid_last,
        0x05,
        0x00,
    ];
    let mut mgf = vec![
        0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08,
    ];
    mgf.extend_from_slice(&hash_ai);
    let mut params = vec![0xa0, hash_ai.len() as u8];
    params.extend_from_slice(&hash_ai);
    params.extend_from_slice(&[0xa1, mgf.len() as u8]);
    params.extend_from_slice(&mgf);
    params.extend_from_slice(&[0xa2, 0x03, 0x02, 0x01, hash.output_len() as u8]);
    let mut seq = vec![0x30, params.len() as u8];
    seq.extend_from_slice(&params);
    let oid = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a,
    ];
    let mut ai = vec![0x30, (oid.len() + seq.len()) as u8];
    ai.extend_from_slice(&oid);
    ai.extend_from_slice(&seq);
    ai
}

impl Scheme {
    /// The DER AlgorithmIdentifier naming this scheme.
    pub fn algorithm_identifier(self) -> Vec<u8> {
        match self {
            Scheme::Ecdsa(Hash::Sha256) => AI_ECDSA_SHA256.to_vec(),
            Scheme::Ecdsa(Hash::Sha384) => AI_ECDSA_SHA384.to_vec(),
            Scheme::Ecdsa(Hash::Sha512) => AI_ECDSA_SHA512.to_vec(),
            Scheme::RsaPkcs1(Hash::Sha256) => AI_RSA_SHA256.to_vec(),
            Scheme::RsaPkcs1(Hash::Sha384) => AI_RSA_SHA384.to_vec(),
            Scheme::RsaPkcs1(Hash::Sha512) => AI_RSA_SHA512.to_vec(),
            Scheme::RsaPss(h) => pss_identifier(h),
            Scheme::Ed25519 => AI_ED25519.to_vec(),
        }
    }

    /// The hash this scheme signs with (`None` for Ed25519, which signs
    /// the message itself: "Identity" in RFC 8420).
    pub fn hash(self) -> Option<Hash> {
        match self {
            Scheme::Ecdsa(h) | Scheme::RsaPkcs1(h) | Scheme::RsaPss(h) => Some(h),
            Scheme::Ed25519 => None,
        }
    }

    /// Parses a DER AlgorithmIdentifier at the start of `der`, returning
    /// the scheme and how many bytes it took.
    pub fn from_algorithm_identifier(der: &[u8]) -> Result<(Scheme, usize), SigError> {
        let (rest, ai) = AlgorithmIdentifier::from_der(der)
            .map_err(|_| SigError::Malformed("signature algorithm identifier"))?;
        Ok((Scheme::from_parsed(&ai)?, der.len() - rest.len()))
    }

    fn from_parsed(ai: &AlgorithmIdentifier<'_>) -> Result<Scheme, SigError> {
        let a = &ai.algorithm;
        let scheme = if *a == oid!(1.2.840 .10045 .4 .3 .2) {
            Scheme::Ecdsa(Hash::Sha256)
        } else if *a == oid!(1.2.840 .10045 .4 .3 .3) {
            Scheme::Ecdsa(Hash::Sha384)
        } else if *a == oid!(1.2.840 .10045 .4 .3 .4) {
            Scheme::Ecdsa(Hash::Sha512)
        } else if *a == oid!(1.2.840 .113549 .1 .1 .11) {
            Scheme::RsaPkcs1(Hash::Sha256)
        } else if *a == oid!(1.2.840 .113549 .1 .1 .12) {
            Scheme::RsaPkcs1(Hash::Sha384)
        } else if *a == oid!(1.2.840 .113549 .1 .1 .13) {
            Scheme::RsaPkcs1(Hash::Sha512)
        } else if *a == oid!(1.3.101 .112) {
            Scheme::Ed25519
        } else if *a == oid!(1.2.840 .113549 .1 .1 .10) {
            let params = ai
                .parameters
                .as_ref()
                .ok_or(SigError::Malformed("RSASSA-PSS without parameters"))?;
            let params = RsaSsaPssParams::try_from(params)
                .map_err(|_| SigError::Malformed("RSASSA-PSS parameters"))?;
            let hash = Hash::from_oid(params.hash_algorithm_oid())?;
            let mgf = params
                .mask_gen_algorithm()
                .map_err(|_| SigError::Malformed("RSASSA-PSS mask generation"))?;
            if mgf.mgf != oid!(1.2.840 .113549 .1 .1 .8) || Hash::from_oid(&mgf.hash)? != hash {
                return Err(SigError::Unsupported(
                    "RSASSA-PSS whose MGF1 hash differs from the message hash".into(),
                ));
            }
            if params.salt_length() as usize != hash.output_len() {
                return Err(SigError::Unsupported(format!(
                    "RSASSA-PSS salt of {} bytes (only the hash length, {}, is accepted)",
                    params.salt_length(),
                    hash.output_len()
                )));
            }
            Scheme::RsaPss(hash)
        } else if *a == oid!(1.2.840 .113549 .1 .1 .5)
            || *a == oid!(1.2.840 .10045 .4 .1)
            || *a == oid!(1.3.14 .3 .2 .29)
        {
            return Err(SigError::Sha1);
        } else {
            return Err(SigError::Unsupported(format!("signature algorithm {a}")));
        };
        Ok(scheme)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = |h: &Hash| match h {
            Hash::Sha256 => "SHA-256",
            Hash::Sha384 => "SHA-384",
            Hash::Sha512 => "SHA-512",
        };
        match self {
            Scheme::Ecdsa(x) => write!(f, "ECDSA with {}", h(x)),
            Scheme::RsaPkcs1(x) => write!(f, "RSA PKCS#1 v1.5 with {}", h(x)),
            Scheme::RsaPss(x) => write!(f, "RSA-PSS with {}", h(x)),
            Scheme::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// Why a signature or key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// Anything signed with SHA-1 is refused (not on the CRYPTREC list for
    /// signatures).
    Sha1,
    /// An RSA key shorter than [`MIN_RSA_BITS`].
    WeakRsaKey(usize),
    /// An algorithm renkei does not accept.
    Unsupported(String),
    /// The scheme does not fit the key (e.g. ECDSA with an RSA key).
    WrongKeyType {
        /// The scheme the signature claims.
        scheme: Scheme,
        /// The key it would be checked with.
        key: String,
    },
    /// The signature does not verify.
    BadSignature,
    /// Unparsable input.
    Malformed(&'static str),
    /// The key could not sign (should not happen with a loaded key).
    SigningFailed,
}

impl fmt::Display for SigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigError::Sha1 => f.write_str("signed with SHA-1, which is refused"),
            SigError::WeakRsaKey(bits) => write!(
                f,
                "RSA key of {bits} bits is refused (at least {MIN_RSA_BITS} bits)"
            ),
            SigError::Unsupported(what) => write!(f, "{what} is not supported"),
            SigError::WrongKeyType { scheme, key } => {
                write!(f, "a {scheme} signature cannot come from an {key} key")
            }
            SigError::BadSignature => f.write_str("signature does not verify"),
            SigError::Malformed(what) => write!(f, "malformed {what}"),
            SigError::SigningFailed => f.write_str("signing failed"),
        }
    }
}

impl std::error::Error for SigError {}

/// An elliptic curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256
    P256,
    /// NIST P-384
    P384,
    /// NIST P-521
    P521,
}

/// What kind of key a public key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// ECDSA on a curve.
    Ecdsa(Curve),
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Ecdsa(Curve::P256) => f.write_str("ECDSA P-256"),
            KeyType::Ecdsa(Curve::P384) => f.write_str("ECDSA P-384"),
            KeyType::Ecdsa(Curve::P521) => f.write_str("ECDSA P-521"),
            KeyType::Rsa(bits) => write!(f, "RSA-{bits}"),
            KeyType::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

impl KeyType {
    /// The scheme renkei signs with for this key type, given whether the
    /// peer takes RSA-PSS (RSA keys sign PSS by preference, RFC 7427 §4)
    /// and which hashes it accepts.
    pub fn preferred_scheme(self, peer_hashes: &[Hash], allow_pss: bool) -> Option<Scheme> {
        match self {
            // aws-lc-rs signs with each NIST curve's own hash.
            KeyType::Ecdsa(c) => {
                let h = natural_hash(c);
                peer_hashes.contains(&h).then_some(Scheme::Ecdsa(h))
            }
            KeyType::Rsa(_) => {
                let h = *[Hash::Sha256, Hash::Sha384, Hash::Sha512]
                    .iter()
                    .find(|h| peer_hashes.contains(h))?;
                Some(if allow_pss {
                    Scheme::RsaPss(h)
                } else {
                    Scheme::RsaPkcs1(h)
                })
            }
            KeyType::Ed25519 => Some(Scheme::Ed25519),
        }
    }
}

/// A public key taken from a certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyType,
    /// For ECDSA the uncompressed point, for RSA the PKCS#1 RSAPublicKey,
    /// for Ed25519 the 32 bytes: what aws-lc-rs verifies with.
    raw: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.kind)
    }
}

impl PublicKey {
    /// Reads a certificate's SubjectPublicKeyInfo. RSA keys under
    /// [`MIN_RSA_BITS`] are refused here, so no such key is ever used.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, SigError> {
        let alg = &spki.algorithm.algorithm;
        let raw = spki.subject_public_key.data.to_vec();
        let kind = if *alg == oid!(1.2.840 .10045 .2 .1) {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or(SigError::Malformed("EC public key without a named curve"))?;
            if curve == oid!(1.2.840 .10045 .3 .1 .7) {
                KeyType::Ecdsa(Curve::P256)
            } else if curve == oid!(1.3.132 .0 .34) {
                KeyType::Ecdsa(Curve::P384)
            } else if curve == oid!(1.3.132 .0 .35) {
                KeyType::Ecdsa(Curve::P521)
            } else {
                return Err(SigError::Unsupported(format!("elliptic curve {curve}")));
            }
        } else if *alg == oid!(1.2.840 .113549 .1 .1 .1) {
            let parsed = spki
                .parsed()
                .map_err(|_| SigError::Malformed("RSA public key"))?;
            let bits = parsed.key_size();
            if bits < MIN_RSA_BITS {
                return Err(SigError::WeakRsaKey(bits));
            }
            KeyType::Rsa(bits)
        } else if *alg == oid!(1.3.101 .112) {
            if raw.len() != 32 {
                return Err(SigError::Malformed("Ed25519 public key"));
            }
            KeyType::Ed25519
        } else {
            return Err(SigError::Unsupported(format!("public key algorithm {alg}")));
        };
        Ok(PublicKey { kind, raw })
    }

    /// What kind of key this is.
    pub fn key_type(&self) -> KeyType {
        self.kind
    }

    /// Verifies `signature` over `message` under `scheme`.
    pub fn verify(&self, scheme: Scheme, message: &[u8], signature: &[u8]) -> Result<(), SigError> {
        let alg: &dyn sig::VerificationAlgorithm = match (self.kind, scheme) {
            (KeyType::Ecdsa(c), Scheme::Ecdsa(h)) => match (c, h) {
                (Curve::P256, Hash::Sha256) => &sig::ECDSA_P256_SHA256_ASN1,
                (Curve::P256, Hash::Sha384) => &sig::ECDSA_P256_SHA384_ASN1,
                (Curve::P256, Hash::Sha512) => &sig::ECDSA_P256_SHA512_ASN1,
                (Curve::P384, Hash::Sha256) => &sig::ECDSA_P384_SHA256_ASN1,
                (Curve::P384, Hash::Sha384) => &sig::ECDSA_P384_SHA384_ASN1,
                (Curve::P384, Hash::Sha512) => &sig::ECDSA_P384_SHA512_ASN1,
                (Curve::P521, Hash::Sha256) => &sig::ECDSA_P521_SHA256_ASN1,
                (Curve::P521, Hash::Sha384) => &sig::ECDSA_P521_SHA384_ASN1,
                (Curve::P521, Hash::Sha512) => &sig::ECDSA_P521_SHA512_ASN1,
            },
            (KeyType::Rsa(_), Scheme::RsaPkcs1(h)) => match h {
                Hash::Sha256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                Hash::Sha384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                Hash::Sha512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            },
            (KeyType::Rsa(_), Scheme::RsaPss(h)) => match h {
                Hash::Sha256 => &sig::RSA_PSS_2048_8192_SHA256,
                Hash::Sha384 => &sig::RSA_PSS_2048_8192_SHA384,
                Hash::Sha512 => &sig::RSA_PSS_2048_8192_SHA512,
            },
            (KeyType::Ed25519, Scheme::Ed25519) => &sig::ED25519,
            (key, scheme) => {
                return Err(SigError::WrongKeyType {
                    scheme,
                    key: key.to_string(),
                })
            }
        };
        sig::UnparsedPublicKey::new(alg, &self.raw)
            .verify(message, signature)
            .map_err(|_| SigError::BadSignature)
    }

    /// Verifies a fixed-length `r || s` ECDSA signature (IKEv2 AUTH methods
    /// 9, 10 and 11, RFC 4754), whose curve and hash are set by the method.
    pub fn verify_ecdsa_fixed(
        &self,
        curve: Curve,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SigError> {
        let alg: &dyn sig::VerificationAlgorithm = match (self.kind, curve) {
            (KeyType::Ecdsa(Curve::P256), Curve::P256) => &sig::ECDSA_P256_SHA256_FIXED,
            (KeyType::Ecdsa(Curve::P384), Curve::P384) => &sig::ECDSA_P384_SHA384_FIXED,
            (KeyType::Ecdsa(Curve::P521), Curve::P521) => &sig::ECDSA_P521_SHA512_FIXED,
            (key, _) => {
                return Err(SigError::WrongKeyType {
                    scheme: Scheme::Ecdsa(Hash::Sha256),
                    key: key.to_string(),
                })
            }
        };
        sig::UnparsedPublicKey::new(alg, &self.raw)
            .verify(message, signature)
            .map_err(|_| SigError::BadSignature)
    }
}

enum Signer {
    Ecdsa {
        curve: Curve,
        pkcs8: Zeroizing<Vec<u8>>,
    },
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key that signs (the hub's key). Never printed.
pub struct SigningKey {
    signer: Signer,
    kind: KeyType,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.kind)
    }
}

/// The signing algorithms aws-lc-rs has: each curve with its own hash
/// (and P-521 with any SHA-2).
fn ecdsa_signing(curve: Curve, hash: Hash) -> Option<&'static sig::EcdsaSigningAlgorithm> {
    Some(match (curve, hash) {
        (Curve::P256, Hash::Sha256) => &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
        (Curve::P384, Hash::Sha384) => &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        (Curve::P521, Hash::Sha256) => &sig::ECDSA_P521_SHA256_ASN1_SIGNING,
        (Curve::P521, Hash::Sha384) => &sig::ECDSA_P521_SHA384_ASN1_SIGNING,
        (Curve::P521, Hash::Sha512) => &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
        _ => return None,
    })
}

fn natural_hash(curve: Curve) -> Hash {
    match curve {
        Curve::P256 => Hash::Sha256,
        Curve::P384 => Hash::Sha384,
        Curve::P521 => Hash::Sha512,
    }
}

impl SigningKey {
    /// Loads a PKCS#8 private key (DER), of any type renkei issues.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, SigError> {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let Some(alg) = ecdsa_signing(curve, natural_hash(curve)) else {
                continue;
            };
            if EcdsaKeyPair::from_pkcs8(alg, der).is_ok() {
                return Ok(SigningKey {
                    signer: Signer::Ecdsa {
                        curve,
                        pkcs8: Zeroizing::new(der.to_vec()),
                    },
                    kind: KeyType::Ecdsa(curve),
                });
            }
        }
        if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            let bits = k.public_modulus_len() * 8;
            if bits < MIN_RSA_BITS {
                return Err(SigError::WeakRsaKey(bits));
            }
            return Ok(SigningKey {
                signer: Signer::Rsa(k),
                kind: KeyType::Rsa(bits),
            });
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Ok(SigningKey {
                signer: Signer::Ed25519(k),
                kind: KeyType::Ed25519,
            });
        }
        Err(SigError::Malformed(
            "private key (expected PKCS#8 ECDSA, RSA or Ed25519)",
        ))
    }

    /// What kind of key this is.
    pub fn key_type(&self) -> KeyType {
        self.kind
    }

    /// Signs `message` under `scheme`.
    pub fn sign(&self, scheme: Scheme, message: &[u8]) -> Result<Vec<u8>, SigError> {
        let rng = SystemRandom::new();
        let wrong = || SigError::WrongKeyType {
            scheme,
            key: self.kind.to_string(),
        };
        match (&self.signer, scheme) {
            (Signer::Ecdsa { curve, pkcs8 }, Scheme::Ecdsa(h)) => {
                let alg = ecdsa_signing(*curve, h).ok_or_else(wrong)?;
                let k =
                    EcdsaKeyPair::from_pkcs8(alg, pkcs8).map_err(|_| SigError::SigningFailed)?;
                let s = k.sign(&rng, message).map_err(|_| SigError::SigningFailed)?;
                Ok(s.as_ref().to_vec())
            }
            (Signer::Rsa(k), Scheme::RsaPkcs1(_) | Scheme::RsaPss(_)) => {
                let padding: &'static dyn sig::RsaEncoding = match scheme {
                    Scheme::RsaPkcs1(Hash::Sha256) => &sig::RSA_PKCS1_SHA256,
                    Scheme::RsaPkcs1(Hash::Sha384) => &sig::RSA_PKCS1_SHA384,
                    Scheme::RsaPkcs1(Hash::Sha512) => &sig::RSA_PKCS1_SHA512,
                    Scheme::RsaPss(Hash::Sha256) => &sig::RSA_PSS_SHA256,
                    Scheme::RsaPss(Hash::Sha384) => &sig::RSA_PSS_SHA384,
                    Scheme::RsaPss(Hash::Sha512) => &sig::RSA_PSS_SHA512,
                    _ => return Err(wrong()),
                };
                let mut out = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, message, &mut out)
                    .map_err(|_| SigError::SigningFailed)?;
                Ok(out)
            }
            (Signer::Ed25519(k), Scheme::Ed25519) => Ok(k.sign(message).as_ref().to_vec()),
            _ => Err(wrong()),
        }
    }

    /// The public half, as raw key bytes (for tests and key matching).
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match &self.signer {
            Signer::Ecdsa { curve, pkcs8 } => ecdsa_signing(*curve, natural_hash(*curve))
                .and_then(|alg| EcdsaKeyPair::from_pkcs8(alg, pkcs8).ok())
                .map(|k| k.public_key().as_ref().to_vec())
                .unwrap_or_default(),
            Signer::Rsa(k) => k.public_key().as_ref().to_vec(),
            Signer::Ed25519(k) => k.public_key().as_ref().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn algorithm_identifiers_round_trip() {
        let hashes = [Hash::Sha256, Hash::Sha384, Hash::Sha512];
        let mut all = vec![Scheme::Ed25519];
        for h in hashes {
            all.extend([Scheme::Ecdsa(h), Scheme::RsaPkcs1(h), Scheme::RsaPss(h)]);
        }
        for s in all {
            let mut der = s.algorithm_identifier();
            let len = der.len();
            der.extend_from_slice(b"signature follows");
            assert_eq!(Scheme::from_algorithm_identifier(&der), Ok((s, len)), "{s}");
        }
    }

    #[test]
    fn sha1_and_unknown_algorithms_are_refused() {
        // sha1WithRSAEncryption, ecdsa-with-SHA1
        let rsa_sha1 = [
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05,
            0x00,
        ];
        let ecdsa_sha1 = [
            0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01,
        ];
        assert_eq!(
            Scheme::from_algorithm_identifier(&rsa_sha1),
            Err(SigError::Sha1)
        );
        assert_eq!(
            Scheme::from_algorithm_identifier(&ecdsa_sha1),
            Err(SigError::Sha1)
        );
        // RSA-PSS with a salt that is not the hash length (the last byte).
        let mut pss = Scheme::RsaPss(Hash::Sha256).algorithm_identifier();
        *pss.last_mut().unwrap() = 20;
        assert!(matches!(
            Scheme::from_algorithm_identifier(&pss),
            Err(SigError::Unsupported(_))
        ));
        let sm2 = [
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75,
        ];
        assert!(matches!(
            Scheme::from_algorithm_identifier(&sm2),
            Err(SigError::Unsupported(_))
        ));
        assert!(Scheme::from_algorithm_identifier(&[0x30, 0x7f, 0x06]).is_err());
    }
}
