//! The operating entity's CA: creating it, issuing facility and hub
//! certificates, revocation lists and PKCS#12 bundles.
//!
//! Everything here returns bytes and PEM text; the CLI decides where they
//! are written and with which permissions. Certificates and CRLs are made
//! by rcgen, keys by aws-lc-rs (through rcgen), PKCS#12 by p12-keystore.

use std::fmt;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    RsaKeySize, SanType, SerialNumber,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::verify::serial_hex;
use crate::Identity;

/// Key types renkei issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ECDSA on P-256 (certificates signed by the CA; signs with SHA-256).
    EcdsaP256,
    /// ECDSA on P-384 (the CA's default).
    EcdsaP384,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [KeyKind; 4] = [
        KeyKind::EcdsaP256,
        KeyKind::EcdsaP384,
        KeyKind::Rsa3072,
        KeyKind::Ed25519,
    ];

    fn generate(self) -> Result<KeyPair, CaError> {
        let r = match self {
            KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyKind::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyKind::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
            KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        };
        r.map_err(|e| CaError(format!("generating a {self} key: {e}")))
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::EcdsaP256 => "ecdsa-p256",
            KeyKind::EcdsaP384 => "ecdsa-p384",
            KeyKind::Rsa3072 => "rsa-3072",
            KeyKind::Ed25519 => "ed25519",
        })
    }
}

impl FromStr for KeyKind {
    type Err = CaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| {
                CaError(format!(
                    "unknown key type '{s}' (one of ecdsa-p256, ecdsa-p384, rsa-3072, ed25519)"
                ))
            })
    }
}

/// A CA operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaError(pub String);

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CaError {}

/// A key and certificate made by [`Ca::issue`].
pub struct Issued {
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
    /// The private key, PKCS#8 DER.
    pub key_der: Zeroizing<Vec<u8>>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Serial number in [`serial_hex`] form.
    pub serial: String,
    /// notAfter, seconds since the epoch.
    pub not_after: i64,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A revoked certificate, for the CRL.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// Serial number in [`serial_hex`] form.
    pub serial: String,
    /// When it was revoked, seconds since the epoch.
    pub at: i64,
}

/// The CA: its key and certificate.
pub struct Ca {
    key: KeyPair,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ca(<redacted>)")
    }
}

fn to_time(secs: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| CaError(format!("time: {e}")))
}

/// A random positive serial number of 16 bytes (RFC 5280 §4.1.2.2 allows
/// up to 20).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| CaError("no randomness for a serial".into()))?;
    b[0] = (b[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&b))
}

fn san_for(identity: &Identity) -> Result<SanType, CaError> {
    let ia5 = |s: &str| {
        s.to_string().try_into().map_err(|_| {
            CaError(format!(
                "identity {s} is not ASCII, which a certificate's subjectAltName requires"
            ))
        })
    };
    Ok(match identity {
        Identity::Fqdn(f) => SanType::DnsName(ia5(f)?),
        Identity::Email(e) => SanType::Rfc822Name(ia5(e)?),
        Identity::Addr(a) => SanType::IpAddress(*a),
        other => {
            return Err(CaError(format!(
                "identity {other} cannot be put in a certificate (use an FQDN, email or address identity)"
            )))
        }
    })
}

/// `subject` for rcgen, each value in the string type
/// [`crate::DistinguishedName::parse`] gives it, so that the certificate's
/// subject is the DER a facility sends as its `ID_DER_ASN1_DN`.
fn rcgen_dn(subject: &crate::DistinguishedName) -> Result<DistinguishedName, CaError> {
    let mut dn = DistinguishedName::new();
    for rdn in subject.rdns() {
        let [attr] = rdn else {
            return Err(CaError(format!(
                "identity {subject}: a multi-valued RDN cannot be put in a certificate"
            )));
        };
        let (Some(name), Some(text)) = (attr.name(), attr.text()) else {
            return Err(CaError(format!(
                "identity {subject}: attribute {} cannot be put in a certificate",
                attr.oid()
            )));
        };
        let oid = attr
            .oid()
            .split('.')
            .map(str::parse)
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|_| CaError(format!("identity {subject}: bad attribute type {name}")))?;
        let ty = DnType::CustomDnType(oid);
        // rcgen keeps one value per attribute type.
        if dn.get(&ty).is_some() {
            return Err(CaError(format!(
                "identity {subject}: {name} appears twice; renkei's CA (rcgen) can put each attribute type in a subject only once"
            )));
        }
        let bad = |_| CaError(format!("identity {subject}: {name} cannot be encoded"));
        let value = if attr.is_ia5() {
            DnValue::Ia5String(text.try_into().map_err(bad)?)
        } else if attr.is_printable() {
            DnValue::PrintableString(text.try_into().map_err(bad)?)
        } else {
            DnValue::Utf8String(text.to_string())
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

/// Whether a certificate can carry `identity` (an address, an FQDN or
/// email address in ASCII, or a distinguished name rcgen can encode);
/// the error says why not. `peer add --cert` asks this first, so that a
/// facility is never registered with an identity it can never prove.
pub fn certifiable(identity: &Identity) -> Result<(), CaError> {
    match identity {
        Identity::Dn(subject) => rcgen_dn(subject).map(|_| ()),
        other => san_for(other).map(|_| ()),
    }
}

impl Ca {
    /// Creates a CA named `name` valid from `now` for `days`.
    pub fn create(kind: KeyKind, name: &str, now: i64, days: u32) -> Result<Ca, CaError> {
        let key = kind.generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, name);
        dn.push(DnType::CommonName, format!("{name} CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_time(now - 300)?;
        params.not_after = to_time(now + i64::from(days) * 86_400)?;
        params.serial_number = Some(random_serial()?);
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError(format!("self-signing the CA: {e}")))?;
        Ok(Ca {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads a CA from its PKCS#8 key and certificate, both PEM.
    pub fn load(key_pem: &str, cert_pem: &str) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError(format!("CA key: {e}")))?;
        let parsed = pem::parse(cert_pem).map_err(|e| CaError(format!("CA certificate: {e}")))?;
        Ok(Ca {
            key,
            cert_der: parsed.contents().to_vec(),
            cert_pem: cert_pem.to_string(),
        })
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CaError> {
        Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &self.key)
            .map_err(|e| CaError(format!("CA certificate: {e}")))
    }

    /// Issues a certificate for `identity` (in its subjectAltName, and as
    /// the subject's common name; a distinguished-name identity is the
    /// subject itself, RFC 4945 §3.1.5, and there is no subjectAltName)
    /// with a new key of `kind`, valid from `now` for `days`.
    pub fn issue(
        &self,
        identity: &Identity,
        kind: KeyKind,
        now: i64,
        days: u32,
    ) -> Result<Issued, CaError> {
        let key = kind.generate()?;
        let mut params = CertificateParams::default();
        if let Identity::Dn(subject) = identity {
            params.distinguished_name = rcgen_dn(subject)?;
        } else {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, identity.to_string());
            params.distinguished_name = dn;
            params.subject_alt_names = vec![san_for(identity)?];
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = to_time(now - 300)?;
        params.not_after = to_time(now + i64::from(days) * 86_400)?;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| CaError(format!("signing the certificate: {e}")))?;
        Ok(Issued {
            key_pem: Zeroizing::new(key.serialize_pem()),
            key_der: Zeroizing::new(key.serialize_der()),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            serial: serial_hex(serial.as_ref()),
            not_after: params.not_after.unix_timestamp(),
        })
    }

    /// A CRL listing `revoked`, numbered `number`, valid from `now` for
    /// `days`, PEM.
    pub fn crl(
        &self,
        revoked: &[Revoked],
        number: u64,
        now: i64,
        days: u32,
    ) -> Result<String, CaError> {
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                let bytes = hex_to_bytes(&r.serial)
                    .ok_or_else(|| CaError(format!("stored serial '{}' is not hex", r.serial)))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: to_time(r.at)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let params = CertificateRevocationListParams {
            this_update: to_time(now)?,
            next_update: to_time(now + i64::from(days) * 86_400)?,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer()?)
            .and_then(|c| c.pem())
            .map_err(|e| CaError(format!("signing the CRL: {e}")))
    }
}

/// When a CRL (PEM) was issued and when it says the next one comes
/// (`thisUpdate`, `nextUpdate`), in Unix seconds; `None` for a CRL
/// without a `nextUpdate`.
pub fn crl_validity(pem_text: &str) -> Result<(i64, Option<i64>), CaError> {
    let der = pem::parse(pem_text).map_err(|e| CaError(format!("CRL is not PEM: {e}")))?;
    let (_, crl) = x509_parser::parse_x509_crl(der.contents())
        .map_err(|e| CaError(format!("CRL does not parse: {e}")))?;
    Ok((
        crl.last_update().timestamp(),
        crl.next_update().map(|t| t.timestamp()),
    ))
}

fn hex_to_bytes(s: &str) -> Option<Vec<u8>> {
    let s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_string()
    };
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A PKCS#12 bundle of `issued`'s key and certificate with the CA
/// certificate, encrypted with `password` (PBES2, AES-256, HMAC-SHA-256).
pub fn pkcs12(
    issued: &Issued,
    ca_der: &[u8],
    alias: &str,
    password: &str,
) -> Result<Vec<u8>, CaError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let err = |e: p12_keystore::error::Error| CaError(format!("PKCS#12: {e}"));
    let key = PrivateKey::from_der(&issued.key_der).map_err(err)?;
    let certs = [
        Certificate::from_der(&issued.cert_der).map_err(err)?,
        Certificate::from_der(ca_der).map_err(err)?,
    ];
    let mut id = [0u8; 20];
    id[..issued.serial.len().min(20)]
        .copy_from_slice(&issued.serial.as_bytes()[..issued.serial.len().min(20)]);
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(id.to_vec(), key, certs)),
    );
    store.writer(password).write().map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sig::{Hash, Scheme, SigningKey};
    use crate::verify::{CertError, TrustStore};

    const NOW: i64 = 1_790_000_000;

    fn ca() -> Ca {
        Ca::create(KeyKind::EcdsaP384, "Test Network", NOW, 3650).unwrap()
    }

    /// The SubjectPublicKeyInfo of an RSA-1024 key (made with `openssl genrsa 1024`).
    const RSA_1024_SPKI: &str = concat!(
        "30819f300d06092a864886f70d010101050003818d0030818902818100be2b3e3ff6a8559d51dbc4",
        "4c0741de88a3a9719fb1b913349576eaff667e245f23c325d03af5d770231b95ba3c3cfbee9b0f39",
        "4a4bba652498957110f4dabe7ce43a53e6e8340fc221edb36178850e9023a87ffebc73f480caa144",
        "54b178cec5ed84dde77e7bfddb01d26cd642bb0d45ea8f09f939d7e139274305308eb4e49f020301",
        "0001",
    );

    #[test]
    fn a_certificate_with_an_rsa_key_under_2048_bits_is_refused() {
        let ca = ca();
        let spki: Vec<u8> = (0..RSA_1024_SPKI.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&RSA_1024_SPKI[i..i + 2], 16).unwrap())
            .collect();
        let key = rcgen::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        let id = Identity::parse("kyoto.example").unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san_for(&id).unwrap()];
        params.not_before = to_time(NOW - 10).unwrap();
        params.not_after = to_time(NOW + 86_400).unwrap();
        let cert = params.signed_by(&key, &ca.issuer().unwrap()).unwrap();
        let store = TrustStore::new(ca.cert_der(), []).unwrap();
        let err = store.validate(cert.der(), &id, NOW).unwrap_err();
        assert_eq!(err, CertError::Key(crate::sig::SigError::WeakRsaKey(1024)));
        assert!(err.to_string().contains("RSA key of 1024 bits is refused"));
    }

    #[test]
    fn issued_certificates_validate_and_sign_for_every_key_kind() {
        let ca = ca();
        let store = TrustStore::new(ca.cert_der(), []).unwrap();
        let id = Identity::parse("kyoto.example").unwrap();
        for kind in KeyKind::ALL {
            let issued = ca.issue(&id, kind, NOW, 365).unwrap();
            let valid = store.validate(&issued.cert_der, &id, NOW + 10).unwrap();
            let key = SigningKey::from_pkcs8(&issued.key_der).unwrap();
            let scheme = key
                .key_type()
                .preferred_scheme(&[Hash::Sha256, Hash::Sha384, Hash::Sha512], true)
                .unwrap();
            let sig = key.sign(scheme, b"octets").unwrap();
            valid.key.verify(scheme, b"octets", &sig).unwrap();
            assert_eq!(
                valid.key.verify(scheme, b"other octets", &sig),
                Err(crate::sig::SigError::BadSignature),
                "{kind}"
            );
            if kind == KeyKind::Rsa3072 {
                let sig = key.sign(Scheme::RsaPkcs1(Hash::Sha256), b"m").unwrap();
                valid
                    .key
                    .verify(Scheme::RsaPkcs1(Hash::Sha256), b"m", &sig)
                    .unwrap();
            }
            let p12 = pkcs12(&issued, ca.cert_der(), "kyoto", "secret").unwrap();
            let back =
                p12_keystore::KeyStore::from_pkcs12(&p12, "secret", Default::default()).unwrap();
            let (_, chain) = back.private_key_chain().unwrap();
            assert_eq!(chain.key().as_der(), &issued.key_der[..]);
            assert_eq!(chain.certs()[0].as_der(), &issued.cert_der[..]);
        }
    }

    #[test]
    fn refusals_say_why() {
        let ca = ca();
        let id = Identity::parse("kyoto.example").unwrap();
        let issued = ca.issue(&id, KeyKind::EcdsaP256, NOW, 30).unwrap();
        let store = TrustStore::new(ca.cert_der(), []).unwrap();
        assert!(matches!(
            store.validate(&issued.cert_der, &id, NOW + 31 * 86_400),
            Err(CertError::Expired(_))
        ));
        assert!(matches!(
            store.validate(&issued.cert_der, &id, NOW - 3600),
            Err(CertError::NotYetValid(_))
        ));
        let other = Identity::parse("osaka.example").unwrap();
        assert_eq!(
            store.validate(&issued.cert_der, &other, NOW).unwrap_err(),
            CertError::IdentityMismatch("osaka.example".into())
        );
        let revoking = TrustStore::new(ca.cert_der(), [issued.serial.clone()]).unwrap();
        assert_eq!(
            revoking.validate(&issued.cert_der, &id, NOW).unwrap_err(),
            CertError::Revoked(issued.serial.clone())
        );
        let foreign = Ca::create(KeyKind::EcdsaP384, "Test Network", NOW, 3650).unwrap();
        let forged = foreign.issue(&id, KeyKind::EcdsaP256, NOW, 30).unwrap();
        // Same CA name, different key: the signature gives it away.
        assert!(matches!(
            store.validate(&forged.cert_der, &id, NOW),
            Err(CertError::Signature(crate::sig::SigError::BadSignature))
        ));
        let named = Ca::create(KeyKind::EcdsaP256, "Other Network", NOW, 3650).unwrap();
        let stranger = named.issue(&id, KeyKind::EcdsaP256, NOW, 30).unwrap();
        assert!(matches!(
            store.validate(&stranger.cert_der, &id, NOW),
            Err(CertError::UnknownIssuer(_))
        ));
        assert_eq!(
            store.validate(ca.cert_der(), &id, NOW).unwrap_err(),
            CertError::IsCa
        );
        assert_eq!(
            store
                .validate(&issued.cert_der[..50], &id, NOW)
                .unwrap_err(),
            CertError::Malformed
        );
    }

    #[test]
    fn a_distinguished_name_identity_is_the_certificate_subject() {
        let ca = ca();
        let store = TrustStore::new(ca.cert_der(), []).unwrap();
        let id = Identity::parse("C=JP, O=Kyoto Hospital, OU=IT, CN=kyoto.example.jp").unwrap();
        let issued = ca.issue(&id, KeyKind::EcdsaP256, NOW, 30).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.cert_der).unwrap();
        // The subject is the DN, byte for byte as renkei would send it as
        // IDi, and nothing else is in the certificate to match.
        assert_eq!(cert.subject().as_raw(), id.data().as_slice());
        assert!(cert.subject_alternative_name().unwrap().is_none());
        store.validate(&issued.cert_der, &id, NOW).unwrap();
        // The ID payload as a facility sends it (the subject's DER), in
        // other case or spacing, matches too (RFC 4945 §3.1.5, crate::dn).
        let wire =
            Identity::from_wire(crate::id_type::DER_ASN1_DN, cert.subject().as_raw()).unwrap();
        assert_eq!(wire, id);
        store.validate(&issued.cert_der, &wire, NOW).unwrap();
        let shouted =
            Identity::parse("C=jp, O=KYOTO HOSPITAL, OU=it,  CN=Kyoto.Example.JP").unwrap();
        store.validate(&issued.cert_der, &shouted, NOW).unwrap();
        // A different DN, a shorter one, and the CN as an FQDN are not it.
        for other in [
            "C=JP, O=Nara Hospital, OU=IT, CN=kyoto.example.jp",
            "C=JP, O=Kyoto Hospital, CN=kyoto.example.jp",
            "kyoto.example.jp",
        ] {
            let other = Identity::parse(other).unwrap();
            assert!(
                matches!(
                    store.validate(&issued.cert_der, &other, NOW),
                    Err(CertError::IdentityMismatch(_))
                ),
                "{other}"
            );
        }
        assert_eq!(
            store
                .validate(
                    &issued.cert_der,
                    &Identity::parse("C=JP, CN=osaka").unwrap(),
                    NOW
                )
                .unwrap_err()
                .to_string(),
            "identity C=JP, CN=osaka is not in the certificate"
        );
        // An FQDN certificate does not vouch for a DN made of its subject
        // (CN=kyoto.example): it has a subjectAltName.
        let fqdn = ca
            .issue(
                &Identity::parse("kyoto.example").unwrap(),
                KeyKind::EcdsaP256,
                NOW,
                30,
            )
            .unwrap();
        assert!(store
            .validate(
                &fqdn.cert_der,
                &Identity::parse("CN=kyoto.example").unwrap(),
                NOW
            )
            .is_err());
        // rcgen keeps one value per type.
        let twice = Identity::parse("DC=example, DC=jp, CN=x").unwrap();
        assert!(ca
            .issue(&twice, KeyKind::EcdsaP256, NOW, 30)
            .unwrap_err()
            .to_string()
            .contains("DC appears twice"));
        // Non-printable values as UTF8String, E as IA5String, as parsed.
        let jp = Identity::parse("C=JP, O=京都病院, E=it@kyoto.example, CN=k").unwrap();
        let issued = ca.issue(&jp, KeyKind::EcdsaP256, NOW, 30).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.cert_der).unwrap();
        assert_eq!(cert.subject().as_raw(), jp.data().as_slice());
    }

    #[test]
    fn crl_lists_revoked_serials_and_is_signed_by_the_ca() {
        let ca = Ca::create(KeyKind::Rsa3072, "Test Network", NOW, 3650).unwrap();
        let id = Identity::parse("kyoto@example.jp").unwrap();
        let issued = ca.issue(&id, KeyKind::Ed25519, NOW, 30).unwrap();
        let pem = ca
            .crl(
                &[Revoked {
                    serial: issued.serial.clone(),
                    at: NOW,
                }],
                7,
                NOW,
                7,
            )
            .unwrap();
        let der = pem::parse(&pem).unwrap().contents().to_vec();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| serial_hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![issued.serial.clone()]);
        assert_eq!(crl_validity(&pem).unwrap(), (NOW, Some(NOW + 7 * 86_400)));
        assert!(crl_validity("not a CRL").is_err());
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        crl.verify_signature(ca_cert.public_key()).unwrap();
        let loaded = Ca::load(&ca.key_pem(), ca.cert_pem()).unwrap();
        let store = TrustStore::new(loaded.cert_der(), []).unwrap();
        let again = loaded.issue(&id, KeyKind::EcdsaP384, NOW, 30).unwrap();
        store.validate(&again.cert_der, &id, NOW).unwrap();
    }

    /// During a CA rollover the hub trusts both CAs: a certificate from
    /// either validates, one from a third CA of the same name does not.
    #[test]
    fn a_trust_store_of_two_cas_accepts_either() {
        let old = ca();
        let new = Ca::create(KeyKind::EcdsaP256, "Test Network 2", NOW, 3650).unwrap();
        let stranger = Ca::create(KeyKind::EcdsaP256, "Test Network 2", NOW, 3650).unwrap();
        let id = Identity::parse("kyoto.example").unwrap();
        let store = TrustStore::with_cas(&[new.cert_der(), old.cert_der()], []).unwrap();
        let only_new = TrustStore::new(new.cert_der(), []).unwrap();
        let from_old = old.issue(&id, KeyKind::EcdsaP256, NOW, 30).unwrap();
        let from_new = new.issue(&id, KeyKind::EcdsaP256, NOW, 30).unwrap();
        let forged = stranger.issue(&id, KeyKind::EcdsaP256, NOW, 30).unwrap();
        store.validate(&from_old.cert_der, &id, NOW).unwrap();
        store.validate(&from_new.cert_der, &id, NOW).unwrap();
        assert!(matches!(
            only_new.validate(&from_old.cert_der, &id, NOW),
            Err(CertError::UnknownIssuer(_))
        ));
        assert!(matches!(
            store.validate(&forged.cert_der, &id, NOW),
            Err(CertError::Signature(_))
        ));
        assert_eq!(
            store.issuer_hash(&from_old.cert_der),
            Some(crate::verify::certreq_hash(old.cert_der()).unwrap())
        );
        assert_eq!(
            store.certreq_hash(),
            crate::verify::certreq_hash(new.cert_der()).unwrap()
        );
        let d = crate::verify::describe(&from_new.cert_der).unwrap();
        assert_eq!(d.san, vec!["DNS:kyoto.example".to_string()]);
        assert_eq!(d.serial, from_new.serial);
        assert_eq!(d.not_after, from_new.not_after);
        assert_eq!(d.sha256.len(), 32 * 3 - 1);
    }
}
