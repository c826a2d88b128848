//! Identities, signatures and the operating entity's CA.
//!
//! - [`Identity`]: how a facility or the hub names itself in IKE.
//! - [`dn`]: distinguished names (`C=JP, O=…, CN=…`) as identities.
//! - [`sig`]: signature schemes, public and signing keys (CRYPTREC-listed
//!   only; SHA-1 and RSA under 2048 bits refused).
//! - [`ca`]: creating the CA, issuing and revoking certificates, CRLs,
//!   PKCS#12.
//! - [`verify`]: validating a facility's certificate against the CA.
//!
//! ```text
//!  operator string ──Identity::parse──▶ Identity ──id_type()/data()──▶ IKE ID payload
//!  IKE ID payload  ──Identity::from_wire──▶ Identity ──Display──▶ logs, status
//! ```
//!
//! Identities are typed the way strongSwan types them, so that a facility's
//! router configuration and the hub's registry agree on what an ID means:
//! an IP address is an `ID_IPV4_ADDR`/`ID_IPV6_ADDR`, a string with `=` a
//! distinguished name, one with `@` in the middle an `ID_RFC822_ADDR`, a
//! leading `@` forces `ID_FQDN`, and anything else is an `ID_FQDN`.
#![forbid(unsafe_code)]

pub mod ca;
pub mod dn;
pub mod sig;
pub mod verify;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use dn::DistinguishedName;

/// IKEv2 identification types (RFC 7296 §3.5) that renkei understands.
pub mod id_type {
    /// `ID_IPV4_ADDR`
    pub const IPV4_ADDR: u8 = 1;
    /// `ID_FQDN`
    pub const FQDN: u8 = 2;
    /// `ID_RFC822_ADDR`
    pub const RFC822_ADDR: u8 = 3;
    /// `ID_IPV6_ADDR`
    pub const IPV6_ADDR: u8 = 5;
    /// `ID_DER_ASN1_DN`
    pub const DER_ASN1_DN: u8 = 9;
    /// `ID_KEY_ID`
    pub const KEY_ID: u8 = 11;
}

/// The longest identity string accepted from an operator or a peer.
pub const MAX_IDENTITY_LEN: usize = 255;

/// A typed IKE identity.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// `ID_IPV4_ADDR` or `ID_IPV6_ADDR`.
    Addr(IpAddr),
    /// `ID_FQDN`: a host name, compared case-insensitively (stored lower-case).
    Fqdn(String),
    /// `ID_RFC822_ADDR`: `user@domain`.
    Email(String),
    /// `ID_KEY_ID`: opaque bytes.
    KeyId(Vec<u8>),
    /// `ID_DER_ASN1_DN`: an X.501 distinguished name, compared as
    /// [`dn`] describes (equal names hash alike, whatever their encoding).
    Dn(DistinguishedName),
}

/// Why an identity string or payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// Empty identity.
    Empty,
    /// Longer than [`MAX_IDENTITY_LEN`].
    TooLong,
    /// Contains control characters or spaces where none may be.
    BadCharacter,
    /// A distinguished name that does not parse (the message names the
    /// attribute).
    BadDistinguishedName(dn::DnError),
    /// An ID payload whose data does not fit its type.
    Malformed(&'static str),
    /// An ID type renkei does not accept.
    UnsupportedType(u8),
    /// A non-ASCII domain name that is not a valid internationalised
    /// domain name (UTS #46), so it has no ASCII (punycode) form.
    BadDomain(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Empty => f.write_str("identity is empty"),
            IdentityError::TooLong => write!(f, "identity is longer than {MAX_IDENTITY_LEN} bytes"),
            IdentityError::BadCharacter => {
                f.write_str("identity contains whitespace or control characters")
            }
            IdentityError::BadDistinguishedName(e) => write!(f, "distinguished name: {e}"),
            IdentityError::Malformed(why) => write!(f, "malformed identity: {why}"),
            IdentityError::UnsupportedType(t) => write!(f, "unsupported identity type {t}"),
            IdentityError::BadDomain(d) => write!(
                f,
                "'{d}' is not a valid internationalised domain name (it has no ASCII form)"
            ),
        }
    }
}

impl std::error::Error for IdentityError {}

impl Identity {
    /// Parses an operator-supplied identity string, typed as strongSwan types it.
    pub fn parse(s: &str) -> Result<Identity, IdentityError> {
        if s.is_empty() {
            return Err(IdentityError::Empty);
        }
        // The limit is on the identity; a type prefix may come on top.
        // A distinguished name has limits of its own (dn::MAX_DER_LEN).
        let dn = s.contains('=')
            && !s.starts_with(['@'])
            && !s.starts_with("fqdn:")
            && !s.starts_with("email:");
        if !dn && s.len() > MAX_IDENTITY_LEN + "email:".len() {
            return Err(IdentityError::TooLong);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Identity::Addr(ip));
        }
        let clean = |rest: &str| -> Result<(), IdentityError> {
            if rest.is_empty() {
                return Err(IdentityError::Empty);
            }
            if rest.len() > MAX_IDENTITY_LEN {
                return Err(IdentityError::TooLong);
            }
            if rest.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(IdentityError::BadCharacter);
            }
            Ok(())
        };
        // Explicit types first: `fqdn:`/`email:` as strongSwan writes them,
        // `@#` for a key ID and a leading `@` forcing an FQDN.
        if let Some(rest) = s.strip_prefix("fqdn:") {
            clean(rest)?;
            return Ok(Identity::Fqdn(ascii_domain(rest)?));
        }
        if let Some(rest) = s.strip_prefix("email:") {
            clean(rest)?;
            return Ok(Identity::Email(ascii_email(rest)?));
        }
        if let Some(rest) = s.strip_prefix("@#") {
            let bytes = decode_hex(rest).ok_or(IdentityError::Malformed("key id is not hex"))?;
            if bytes.is_empty() {
                return Err(IdentityError::Empty);
            }
            return Ok(Identity::KeyId(bytes));
        }
        if let Some(rest) = s.strip_prefix('@') {
            clean(rest)?;
            return Ok(Identity::Fqdn(ascii_domain(rest)?));
        }
        if dn {
            return DistinguishedName::parse(s)
                .map(Identity::Dn)
                .map_err(IdentityError::BadDistinguishedName);
        }
        clean(s)?;
        if s.contains('@') {
            return Ok(Identity::Email(ascii_email(s)?));
        }
        Ok(Identity::Fqdn(ascii_domain(s)?))
    }

    /// Builds an identity from an ID payload's type and data (RFC 7296 §3.5).
    pub fn from_wire(kind: u8, data: &[u8]) -> Result<Identity, IdentityError> {
        if data.is_empty() {
            return Err(IdentityError::Empty);
        }
        if data.len() > 4096 {
            return Err(IdentityError::TooLong);
        }
        let text = |data: &[u8]| -> Result<String, IdentityError> {
            let s = std::str::from_utf8(data).map_err(|_| IdentityError::Malformed("not UTF-8"))?;
            if s.len() > MAX_IDENTITY_LEN {
                return Err(IdentityError::TooLong);
            }
            if s.chars().any(|c| c.is_control()) {
                return Err(IdentityError::BadCharacter);
            }
            Ok(s.to_string())
        };
        match kind {
            id_type::IPV4_ADDR => <[u8; 4]>::try_from(data)
                .map(|b| Identity::Addr(IpAddr::V4(Ipv4Addr::from(b))))
                .map_err(|_| IdentityError::Malformed("IPv4 identity is not 4 bytes")),
            id_type::IPV6_ADDR => <[u8; 16]>::try_from(data)
                .map(|b| Identity::Addr(IpAddr::V6(Ipv6Addr::from(b))))
                .map_err(|_| IdentityError::Malformed("IPv6 identity is not 16 bytes")),
            // A router that sends an internationalised name in UTF-8 is
            // matched by its ASCII form, as the registry stores it; one
            // without an ASCII form is kept as sent (and matches nothing).
            id_type::FQDN => {
                let t = text(data)?;
                Ok(Identity::Fqdn(
                    ascii_domain(&t).unwrap_or_else(|_| t.to_lowercase()),
                ))
            }
            id_type::RFC822_ADDR => {
                let t = text(data)?;
                Ok(Identity::Email(ascii_email(&t).unwrap_or(t)))
            }
            id_type::KEY_ID => Ok(Identity::KeyId(data.to_vec())),
            id_type::DER_ASN1_DN => DistinguishedName::from_der(data)
                .map(Identity::Dn)
                .map_err(IdentityError::BadDistinguishedName),
            other => Err(IdentityError::UnsupportedType(other)),
        }
    }

    /// The ID payload type of this identity.
    pub fn id_type(&self) -> u8 {
        match self {
            Identity::Addr(IpAddr::V4(_)) => id_type::IPV4_ADDR,
            Identity::Addr(IpAddr::V6(_)) => id_type::IPV6_ADDR,
            Identity::Fqdn(_) => id_type::FQDN,
            Identity::Email(_) => id_type::RFC822_ADDR,
            Identity::KeyId(_) => id_type::KEY_ID,
            Identity::Dn(_) => id_type::DER_ASN1_DN,
        }
    }

    /// The ID payload data of this identity.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Identity::Addr(IpAddr::V4(a)) => a.octets().to_vec(),
            Identity::Addr(IpAddr::V6(a)) => a.octets().to_vec(),
            Identity::Fqdn(s) | Identity::Email(s) => s.as_bytes().to_vec(),
            Identity::KeyId(b) => b.clone(),
            Identity::Dn(d) => d.der().to_vec(),
        }
    }
}

impl fmt::Display for Identity {
    /// The form [`Identity::parse`] reads back as the same identity: bare
    /// where that is unambiguous, else with a `fqdn:`/`email:` type prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Addr(ip) => write!(f, "{ip}"),
            Identity::Fqdn(s) | Identity::Email(s) => {
                if Identity::parse(s).as_ref() == Ok(self) {
                    f.write_str(s)
                } else if matches!(self, Identity::Fqdn(_)) {
                    write!(f, "fqdn:{s}")
                } else {
                    write!(f, "email:{s}")
                }
            }
            Identity::KeyId(b) => {
                f.write_str("@#")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Identity::Dn(d) => write!(f, "{d}"),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

/// A domain name in the ASCII form certificates and routers use: lower
/// case, and an internationalised name (`京都.example.jp`) converted to
/// punycode (`xn--1lqs03n.example.jp`) by UTS #46 (the `idna` crate, as
/// browsers and `url` do). An ASCII name is only lower-cased, so that
/// identities such as `router_1.example` that are not host names stay
/// accepted as they were.
fn ascii_domain(name: &str) -> Result<String, IdentityError> {
    if name.is_ascii() {
        return Ok(name.to_ascii_lowercase());
    }
    let ascii = idna::domain_to_ascii_strict(name)
        .map_err(|_| IdentityError::BadDomain(name.to_string()))?;
    if ascii.is_empty() || ascii.len() > MAX_IDENTITY_LEN {
        return Err(IdentityError::BadDomain(name.to_string()));
    }
    Ok(ascii)
}

/// `user@domain` with its domain in ASCII form ([`ascii_domain`]); the
/// user part is kept as written.
fn ascii_email(s: &str) -> Result<String, IdentityError> {
    match s.rsplit_once('@') {
        Some((user, domain)) if !domain.is_ascii() => {
            let email = format!("{user}@{}", ascii_domain(domain)?);
            // Punycode is longer than what was typed: the identity as
            // stored must still fit (found by fuzzing operator_input).
            if email.len() > MAX_IDENTITY_LEN {
                return Err(IdentityError::TooLong);
            }
            Ok(email)
        }
        _ => Ok(s.to_string()),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_whose_punycode_domain_is_too_long_is_refused() {
        // Each label "aaaaaaaaaaé" (12 bytes) becomes "xn--aaaaaaaaaa-…"
        // (18 bytes).
        let user = "u".repeat(150);
        let domain = ["aaaaaaaaaaé"; 7].join(".");
        let s = format!("{user}@{domain}");
        assert!(s.len() <= MAX_IDENTITY_LEN);
        assert_eq!(Identity::parse(&s), Err(IdentityError::TooLong));
    }

    #[test]
    fn typed_like_strongswan() {
        assert_eq!(
            Identity::parse("192.0.2.1").unwrap().id_type(),
            id_type::IPV4_ADDR
        );
        assert_eq!(
            Identity::parse("2001:db8::1").unwrap().id_type(),
            id_type::IPV6_ADDR
        );
        assert_eq!(
            Identity::parse("hub.example.jp").unwrap(),
            Identity::Fqdn("hub.example.jp".into())
        );
        assert_eq!(
            Identity::parse("@Hub.Example.jp").unwrap(),
            Identity::Fqdn("hub.example.jp".into())
        );
        assert_eq!(
            Identity::parse("vpn@hospital.example").unwrap(),
            Identity::Email("vpn@hospital.example".into())
        );
        assert_eq!(
            Identity::parse("@#0a0b").unwrap(),
            Identity::KeyId(vec![10, 11])
        );
        // Longer than other identities may be, and printed back whole.
        let long = format!("C=JP, O={}, CN={}", "o".repeat(300), "c".repeat(300));
        let id = Identity::parse(&long).unwrap();
        assert_eq!(Identity::parse(&id.to_string()).unwrap(), id);
        assert!(Identity::parse(&format!("CN={}", "c".repeat(1100))).is_err());
        let dn = Identity::parse("C=JP, O=Kyoto Hospital, CN=kyoto.example.jp").unwrap();
        assert_eq!(dn.id_type(), id_type::DER_ASN1_DN);
        assert_eq!(
            dn.to_string(),
            "C=JP, O=Kyoto Hospital, CN=kyoto.example.jp"
        );
        assert_eq!(
            Identity::parse("C=JP, XX=y").unwrap_err().to_string(),
            "distinguished name: unknown attribute type 'XX' (known: C, ST, L, O, OU, CN, DC, E, serialNumber)"
        );
        // A leading '@' still forces an FQDN.
        assert_eq!(
            Identity::parse("@x=y").unwrap(),
            Identity::Fqdn("x=y".into())
        );
        assert_eq!(Identity::parse(""), Err(IdentityError::Empty));
        assert_eq!(Identity::parse("a b"), Err(IdentityError::BadCharacter));
    }

    #[test]
    fn display_parses_back_to_the_same_identity() {
        // Found by fuzzing: an FQDN with an '@' used to print as an email.
        for s in [
            "@a@b.example",
            "@10.0.0.1",
            "@x=y",
            "fqdn:#weird",
            "email:@start",
            "email:plain",
            "hub.example",
            "u@h.example",
            "C=JP,O=a+b=c\"d#,CN=#x",
            "CN=\\ lead and trail\\ ,Email=a@b",
            "O=\\,\\\\\\2c,OU=\\e4\\ba\\ac x",
            "CN=\\ ",
        ] {
            let id = Identity::parse(s).unwrap();
            assert_eq!(Identity::parse(&id.to_string()).unwrap(), id, "{s} -> {id}");
        }
        assert_eq!(
            Identity::parse("@a@b.example").unwrap().to_string(),
            "fqdn:a@b.example"
        );
        assert_eq!(
            Identity::parse("hub.example").unwrap().to_string(),
            "hub.example"
        );
        let long = format!("@{}@x", "a".repeat(MAX_IDENTITY_LEN - 2));
        let id = Identity::parse(&long).unwrap();
        assert_eq!(
            Identity::parse(&id.to_string()).unwrap(),
            id,
            "a prefix does not push it over the limit"
        );
        assert_eq!(
            Identity::parse(&"a".repeat(MAX_IDENTITY_LEN + 1)),
            Err(IdentityError::TooLong)
        );
        for s in ["a\u{0}b", "é@x"] {
            if let Ok(id) = Identity::from_wire(id_type::RFC822_ADDR, s.as_bytes()) {
                assert_eq!(Identity::parse(&id.to_string()).unwrap(), id);
            }
        }
    }

    #[test]
    fn wire_round_trip() {
        for s in [
            "198.51.100.7",
            "2001:db8::7",
            "a.example",
            "x@y.example",
            "@#beef",
            "C=JP, O=Kyoto\\, Inc., CN=kyoto",
        ] {
            let id = Identity::parse(s).unwrap();
            let back = Identity::from_wire(id.id_type(), &id.data()).unwrap();
            assert_eq!(id, back);
        }
        assert!(Identity::from_wire(id_type::IPV4_ADDR, &[1, 2, 3]).is_err());
        assert!(Identity::from_wire(id_type::FQDN, &[0xff, 0xfe]).is_err());
        assert!(Identity::from_wire(id_type::FQDN, b"a\nb").is_err());
        assert!(Identity::from_wire(200, b"x").is_err());
        // ID_DER_ASN1_DN data must be an X.501 Name (RFC 7296 §3.5).
        assert!(matches!(
            Identity::from_wire(id_type::DER_ASN1_DN, b"CN=kyoto"),
            Err(IdentityError::BadDistinguishedName(_))
        ));
    }

    /// An internationalised domain name becomes its punycode form (what a
    /// certificate's subjectAltName and a router's ID carry), typed the
    /// same whichever way it is written or arrives; a non-ASCII string
    /// with no such form is refused with a message.
    #[test]
    fn internationalised_names_take_their_ascii_form() {
        let kyoto = Identity::Fqdn("xn--1lqs03n.example.jp".into());
        for s in [
            "京都.example.jp",
            "@京都.EXAMPLE.jp",
            "fqdn:京都.example.jp",
            "xn--1lqs03n.example.jp",
        ] {
            assert_eq!(Identity::parse(s).unwrap(), kyoto, "{s}");
        }
        assert_eq!(kyoto.to_string(), "xn--1lqs03n.example.jp");
        assert_eq!(
            Identity::from_wire(id_type::FQDN, "京都.example.jp".as_bytes()).unwrap(),
            kyoto
        );
        assert_eq!(
            Identity::parse("vpn@京都.example.jp").unwrap(),
            Identity::Email("vpn@xn--1lqs03n.example.jp".into())
        );
        // Not a valid IDN (a label cannot start with a combining mark,
        // nor hold a full-width symbol such as U+FF01).
        for bad in ["\u{0301}a.example.jp", "a\u{ff01}b.example.jp"] {
            let e = Identity::parse(bad).unwrap_err();
            assert!(matches!(e, IdentityError::BadDomain(_)), "{bad}: {e:?}");
            assert!(e.to_string().contains("internationalised domain name"));
        }
        // ASCII names are only lower-cased, as before.
        assert_eq!(
            Identity::parse("Router_1.Example").unwrap(),
            Identity::Fqdn("router_1.example".into())
        );
    }
}
