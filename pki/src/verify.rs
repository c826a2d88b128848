//! Validating a facility's certificate against the operating entity's CA.
//!
//! The hub trusts its own CA (and, during a CA rollover, the previous one
//! too), and facility certificates are issued directly by it, so a chain
//! is one link long. A certificate is accepted when all of these hold, and
//! refused with the reason otherwise:
//!
//! 1. it parses, is an X.509 v3 end-entity certificate (not a CA);
//! 2. its issuer is a trusted CA and that CA's key verifies its signature,
//!    which is not SHA-1;
//! 3. its key is acceptable (RSA at least 2048 bits, or ECDSA / Ed25519);
//! 4. the time is within its validity period;
//! 5. its serial number is not revoked;
//! 6. the identity the facility claims is in its subjectAltName (or, for
//!    a distinguished-name identity, is its subject, compared as
//!    [`crate::dn`] says, and it has no subjectAltName).

use std::collections::HashSet;
use std::fmt;

use aws_lc_rs::digest;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::sig::{PublicKey, Scheme, SigError};
use crate::Identity;

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    /// Not a DER X.509 certificate.
    Malformed,
    /// Issued by some other CA.
    UnknownIssuer(String),
    /// The CA's signature on it is missing, weak or wrong.
    Signature(SigError),
    /// The certificate's own key is refused.
    Key(SigError),
    /// Used before its notBefore.
    NotYetValid(i64),
    /// Used after its notAfter.
    Expired(i64),
    /// Listed as revoked.
    Revoked(String),
    /// A CA certificate where an end-entity one is needed.
    IsCa,
    /// The identity is not in the certificate.
    IdentityMismatch(String),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Malformed => f.write_str("certificate does not parse"),
            CertError::UnknownIssuer(i) => {
                write!(f, "certificate issued by \"{i}\", not by this hub's CA")
            }
            CertError::Signature(e) => write!(f, "certificate signature refused: {e}"),
            CertError::Key(e) => write!(f, "certificate key refused: {e}"),
            CertError::NotYetValid(t) => write!(f, "certificate not valid before {}", iso(*t)),
            CertError::Expired(t) => write!(f, "certificate expired at {}", iso(*t)),
            CertError::Revoked(s) => write!(f, "certificate serial {s} is revoked"),
            CertError::IsCa => f.write_str("a CA certificate cannot authenticate a facility"),
            CertError::IdentityMismatch(id) => {
                write!(f, "identity {id} is not in the certificate")
            }
        }
    }
}

impl std::error::Error for CertError {}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            d.month() as u8,
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => t.to_string(),
    }
}

/// A certificate that passed validation.
#[derive(Debug, Clone)]
pub struct ValidCert {
    /// Its public key, to verify the AUTH signature with.
    pub key: PublicKey,
    /// Serial number, hex.
    pub serial: String,
    /// notAfter, seconds since the epoch.
    pub not_after: i64,
}

/// One trusted CA certificate.
#[derive(Clone)]
struct Anchor {
    der: Vec<u8>,
    subject: Vec<u8>,
    key: PublicKey,
    spki_sha1: [u8; 20],
}

impl Anchor {
    fn new(ca_der: &[u8]) -> Result<Anchor, CertError> {
        let (_, ca) = X509Certificate::from_der(ca_der).map_err(|_| CertError::Malformed)?;
        let key = PublicKey::from_spki(ca.public_key()).map_err(CertError::Key)?;
        Ok(Anchor {
            der: ca_der.to_vec(),
            subject: ca.subject().as_raw().to_vec(),
            key,
            spki_sha1: certreq_hash_of(&ca),
        })
    }
}

/// RFC 7296 §3.7: a CERTREQ names a CA by the SHA-1 hash of its public
/// key. This is an identifier, not a signature.
fn certreq_hash_of(ca: &X509Certificate<'_>) -> [u8; 20] {
    let mut h = [0; 20];
    h.copy_from_slice(
        digest::digest(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            &ca.public_key().subject_public_key.data,
        )
        .as_ref(),
    );
    h
}

/// The CERTREQ hash (RFC 7296 §3.7) of the CA certificate `ca_der`, as
/// the hub sends it: SHA-1 of the CA's public key.
pub fn certreq_hash(ca_der: &[u8]) -> Result<[u8; 20], CertError> {
    let (_, ca) = X509Certificate::from_der(ca_der).map_err(|_| CertError::Malformed)?;
    Ok(certreq_hash_of(&ca))
}

/// Both forms a peer's CERTREQ may name the CA `ca_der` by: SHA-1 of its
/// public key (as the hub and many routers send), and SHA-1 of its whole
/// SubjectPublicKeyInfo (RFC 7296 §3.7 read literally, as strongSwan
/// sends).
pub fn certreq_hashes(ca_der: &[u8]) -> Result<[[u8; 20]; 2], CertError> {
    let (_, ca) = X509Certificate::from_der(ca_der).map_err(|_| CertError::Malformed)?;
    let mut info = [0; 20];
    info.copy_from_slice(
        digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, ca.public_key().raw).as_ref(),
    );
    Ok([certreq_hash_of(&ca), info])
}

/// The CAs the hub trusts (its own first; during a CA rollover also the
/// previous one), and what it has revoked.
#[derive(Clone)]
pub struct TrustStore {
    anchors: Vec<Anchor>,
    revoked: HashSet<String>,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field(
                "ca_keys",
                &self.anchors.iter().map(|a| &a.key).collect::<Vec<_>>(),
            )
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

/// Lower-case hex of a serial number as stored (leading zero bytes of the
/// DER integer removed).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let s: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    if s.is_empty() {
        "00".into()
    } else {
        s
    }
}

impl TrustStore {
    /// Trusts the CA certificate `ca_der`; `revoked` are serial numbers in
    /// [`serial_hex`] form.
    pub fn new(
        ca_der: &[u8],
        revoked: impl IntoIterator<Item = String>,
    ) -> Result<TrustStore, CertError> {
        TrustStore::with_cas(&[ca_der], revoked)
    }

    /// Trusts each of the CA certificates `cas` (DER; the hub's current CA
    /// first, then a previous one during a CA rollover); `revoked` are
    /// serial numbers in [`serial_hex`] form, of any of them.
    pub fn with_cas(
        cas: &[&[u8]],
        revoked: impl IntoIterator<Item = String>,
    ) -> Result<TrustStore, CertError> {
        if cas.is_empty() {
            return Err(CertError::Malformed);
        }
        Ok(TrustStore {
            anchors: cas
                .iter()
                .map(|der| Anchor::new(der))
                .collect::<Result<_, _>>()?,
            revoked: revoked
                .into_iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
        })
    }

    /// The (current) CA certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.anchors[0].der
    }

    /// The current CA's key identifier as a CERTREQ carries it (RFC 7296 §3.7).
    pub fn certreq_hash(&self) -> [u8; 20] {
        self.anchors[0].spki_sha1
    }

    /// The data of the hub's CERTREQ payload: the key identifiers of every
    /// trusted CA, concatenated (RFC 7296 §3.7).
    pub fn certreq_data(&self) -> Vec<u8> {
        self.anchors.iter().flat_map(|a| a.spki_sha1).collect()
    }

    /// The CERTREQ hash of the trusted CA whose name is `der`'s issuer, if
    /// one is (the signature is not checked here).
    pub fn issuer_hash(&self, der: &[u8]) -> Option<[u8; 20]> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        self.anchors
            .iter()
            .find(|a| a.subject == cert.issuer().as_raw())
            .map(|a| a.spki_sha1)
    }

    /// Validates `der` as the certificate of a facility claiming
    /// `identity`, at `now` (seconds since the epoch).
    pub fn validate(
        &self,
        der: &[u8],
        identity: &Identity,
        now: i64,
    ) -> Result<ValidCert, CertError> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|_| CertError::Malformed)?;
        if !rest.is_empty() {
            return Err(CertError::Malformed);
        }
        let issuers: Vec<&Anchor> = self
            .anchors
            .iter()
            .filter(|a| a.subject == cert.issuer().as_raw())
            .collect();
        if issuers.is_empty() {
            return Err(CertError::UnknownIssuer(cert.issuer().to_string()));
        }
        // The outer and inner signature algorithms must agree (RFC 5280
        // §4.1.1.2).
        if cert.signature_algorithm != cert.tbs_certificate.signature {
            return Err(CertError::Signature(SigError::Malformed(
                "certificate signature algorithm",
            )));
        }
        let (scheme, _) = Scheme::from_algorithm_identifier(
            cert_signature_algorithm_der(der).ok_or(CertError::Malformed)?,
        )
        .map_err(CertError::Signature)?;
        // CAs of the same name (not made by renkei, which names each CA
        // apart) are each tried.
        let mut verified = Err(SigError::Malformed("no issuer"));
        for a in issuers {
            verified = a.key.verify(
                scheme,
                cert.tbs_certificate.as_ref(),
                &cert.signature_value.data,
            );
            if verified.is_ok() {
                break;
            }
        }
        verified.map_err(CertError::Signature)?;
        if let Ok(Some(bc)) = cert.basic_constraints() {
            if bc.value.ca {
                return Err(CertError::IsCa);
            }
        }
        let key = PublicKey::from_spki(cert.public_key()).map_err(CertError::Key)?;
        let validity = cert.validity();
        let not_before = validity.not_before.timestamp();
        let not_after = validity.not_after.timestamp();
        if now < not_before {
            return Err(CertError::NotYetValid(not_before));
        }
        if now > not_after {
            return Err(CertError::Expired(not_after));
        }
        let serial = serial_hex(cert.raw_serial());
        if self.revoked.contains(&serial) {
            return Err(CertError::Revoked(serial));
        }
        if !identity_in(&cert, identity) {
            return Err(CertError::IdentityMismatch(identity.to_string()));
        }
        Ok(ValidCert {
            key,
            serial,
            not_after,
        })
    }
}

/// What an operator is shown of a certificate (`renkei hub show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, as x509-parser prints it (RFC 4514 order).
    pub subject: String,
    /// The issuer, likewise.
    pub issuer: String,
    /// subjectAltName entries as `DNS:…`, `IP:…`, `email:…`.
    pub san: Vec<String>,
    /// Serial number in [`serial_hex`] form.
    pub serial: String,
    /// notBefore and notAfter, seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the DER, lower-case hex with colons.
    pub sha256: String,
}

/// Describes the certificate `der`.
pub fn describe(der: &[u8]) -> Result<CertInfo, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertError::Malformed)?;
    let san = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::DNSName(n) => format!("DNS:{n}"),
                GeneralName::RFC822Name(n) => format!("email:{n}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => format!("IP:{}", std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        format!("IP:{}", std::net::Ipv6Addr::from(a))
                    }
                    _ => "IP:?".into(),
                },
                other => format!("{other}"),
            })
            .collect(),
        _ => Vec::new(),
    };
    let sha256 = digest::digest(&digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        san,
        serial: serial_hex(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sha256,
    })
}

/// Whether `identity` is one the certificate vouches for.
fn identity_in(cert: &X509Certificate<'_>, identity: &Identity) -> bool {
    if let Identity::Dn(dn) = identity {
        // RFC 7296 §3.5 and RFC 4945 §3.1.5: an ID_DER_ASN1_DN identity
        // must be the certificate's subject. RFC 4945 has the sender make
        // them binary-equal; they are compared as DNs (see `crate::dn`)
        // because strongSwan re-encodes a configured `id = "C=…"` itself.
        //
        // renkei's CA puts a subjectAltName in every certificate it issues
        // for an FQDN, email or address identity, and none in one it
        // issues for a DN. A DN identity is vouched for only by a
        // certificate without one, so that the certificate of
        // `kyoto.example` (subject `CN=kyoto.example`) cannot stand in for
        // a facility configured as the DN `CN=kyoto.example`.
        return !cert
            .extensions()
            .iter()
            .any(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME)
            && crate::DistinguishedName::from_x509_name(cert.subject())
                .is_ok_and(|subject| subject == *dn);
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|g| match (g, identity) {
        (GeneralName::DNSName(n), Identity::Fqdn(f)) => n.eq_ignore_ascii_case(f),
        (GeneralName::RFC822Name(n), Identity::Email(e)) => n.eq_ignore_ascii_case(e),
        (GeneralName::IPAddress(b), Identity::Addr(a)) => match a {
            std::net::IpAddr::V4(v4) => *b == v4.octets().as_slice(),
            std::net::IpAddr::V6(v6) => *b == v6.octets().as_slice(),
        },
        _ => false,
    })
}

/// The DER of a certificate's outer signatureAlgorithm, the second element
/// of the top-level SEQUENCE. x509-parser gives it parsed only, and the
/// scheme parser takes DER.
fn cert_signature_algorithm_der(der: &[u8]) -> Option<&[u8]> {
    fn header(b: &[u8]) -> Option<(usize, usize)> {
        // (header length, content length)
        let first = *b.get(1)?;
        if first < 0x80 {
            return Some((2, first as usize));
        }
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        Some((2 + n, len))
    }
    let (h, _) = header(der)?;
    let inner = der.get(h..)?;
    let (th, tl) = header(inner)?;
    let after_tbs = inner.get(th + tl..)?;
    let (ah, al) = header(after_tbs)?;
    after_tbs.get(..ah + al)
}
