//! Distinguished names as IKE identities (`ID_DER_ASN1_DN`, RFC 7296 §3.5).
//!
//! ```text
//!  "C=JP, O=Kyoto Hospital, CN=kyoto.example.jp" ──parse──▶ DistinguishedName ──der()──▶ IDi/IDr data
//!  ID payload data / certificate subject (DER) ──from_der / from_x509_name──▶ DistinguishedName
//!  DistinguishedName ──Display──▶ "C=JP, O=Kyoto Hospital, CN=kyoto.example.jp"
//! ```
//!
//! **Written form.** As strongSwan writes DNs (and as the operator writes
//! them in `peer add --id`): `TYPE=value` pairs separated by commas, in the
//! order of the DER encoding (most significant RDN first, so `C=` usually
//! comes first). This is the reverse of RFC 4514's order; the escaping
//! follows RFC 4514 §2.4 (`\,`, `\\`, `\+`, `\"`, `\=`, `\ `, `\HH`).
//! Attribute types: `C`, `ST`, `L`, `O`, `OU`, `CN`, `DC`,
//! `E`/`Email`/`emailAddress` and `serialNumber`, case-insensitive; any
//! other type is refused. Display prints the same form with `, ` between
//! RDNs, so what `status` shows can be pasted back.
//!
//! **Encoding.** As strongSwan encodes a written DN: `E` as IA5String,
//! every other value as PrintableString when it fits that alphabet and as
//! UTF8String otherwise.
//!
//! **Matching.** Two DNs are equal when they have the same sequence of
//! RDNs, each with the same set of attribute types and values. Values of
//! the attribute types above are compared as strings whatever their
//! ASN.1 string type, after RFC 4518 §2.6.1 insignificant-space handling
//! (leading and trailing spaces removed, inner runs of spaces made one)
//! and ASCII case folding: X.520 gives all of them caseIgnoreMatch (or
//! caseIgnoreIA5Match for `DC` and `E`), and RFC 5280 §7.1 asks for that
//! comparison. Non-ASCII letters are compared exactly (no Unicode case
//! folding). Values of any other attribute type are compared by their DER
//! bytes. strongSwan's own comparison is stricter (case-insensitive only
//! between two PrintableStrings), so whatever it accepts, this does too.

use std::fmt;
use std::hash::{Hash, Hasher};

use x509_cert::attr::AttributeTypeAndValue as DerAtv;
use x509_cert::der::asn1::Utf8StringRef;
use x509_cert::der::asn1::{Any, Ia5StringRef, ObjectIdentifier, PrintableStringRef, SetOfVec};
use x509_cert::der::Encode;
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
use x509_parser::der_parser::asn1_rs::{Any as ParsedAny, BmpString, Tag};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// How an attribute's value is encoded when renkei writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alphabet {
    /// PrintableString only (`C`, `serialNumber`).
    Printable,
    /// IA5String (`E`).
    Ia5,
    /// PrintableString when the value fits, UTF8String otherwise.
    Directory,
}

/// An attribute type renkei knows by name.
#[derive(Debug)]
struct Known {
    /// The name Display uses.
    name: &'static str,
    /// Other names the parser accepts.
    aliases: &'static [&'static str],
    oid: &'static str,
    alphabet: Alphabet,
    /// A fixed length in characters (`C` is two letters, X.520).
    len: Option<usize>,
}

const KNOWN: &[Known] = &[
    Known {
        name: "C",
        aliases: &[],
        oid: "2.5.4.6",
        alphabet: Alphabet::Printable,
        len: Some(2),
    },
    Known {
        name: "ST",
        aliases: &[],
        oid: "2.5.4.8",
        alphabet: Alphabet::Directory,
        len: None,
    },
    Known {
        name: "L",
        aliases: &[],
        oid: "2.5.4.7",
        alphabet: Alphabet::Directory,
        len: None,
    },
    Known {
        name: "O",
        aliases: &[],
        oid: "2.5.4.10",
        alphabet: Alphabet::Directory,
        len: None,
    },
    Known {
        name: "OU",
        aliases: &[],
        oid: "2.5.4.11",
        alphabet: Alphabet::Directory,
        len: None,
    },
    Known {
        name: "CN",
        aliases: &[],
        oid: "2.5.4.3",
        alphabet: Alphabet::Directory,
        len: None,
    },
    Known {
        name: "DC",
        aliases: &[],
        oid: "0.9.2342.19200300.100.1.25",
        alphabet: Alphabet::Directory,
        len: None,
    },
    Known {
        name: "E",
        aliases: &["Email", "emailAddress"],
        oid: "1.2.840.113549.1.9.1",
        alphabet: Alphabet::Ia5,
        len: None,
    },
    Known {
        name: "serialNumber",
        aliases: &[],
        oid: "2.5.4.5",
        alphabet: Alphabet::Printable,
        len: None,
    },
];

/// The longest DN renkei writes (DER bytes); its printed form, escapes
/// and all, stays under [`MAX_TEXT_LEN`], so what is printed parses back.
pub const MAX_DER_LEN: usize = 1024;

/// The longest written DN accepted.
pub const MAX_TEXT_LEN: usize = 4096;

const TYPE_LIST: &str = "C, ST, L, O, OU, CN, DC, E, serialNumber";

fn known_by_name(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| {
        k.name.eq_ignore_ascii_case(name) || k.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

fn known_by_oid(oid: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.oid == oid)
}

/// PrintableString's alphabet (X.680 §41.4).
fn is_printable(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))
}

/// Why a distinguished name was refused; one line, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnError(pub String);

impl fmt::Display for DnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DnError {}

fn err(msg: impl Into<String>) -> DnError {
    DnError(msg.into())
}

/// One attribute of an RDN.
#[derive(Clone, Debug)]
pub struct Attribute {
    oid: String,
    known: Option<&'static Known>,
    /// The value as text, for the known types.
    text: Option<String>,
    /// The value's DER (tag, length, contents).
    value_der: Vec<u8>,
}

impl Attribute {
    /// The attribute type, dotted.
    pub fn oid(&self) -> &str {
        &self.oid
    }

    /// The attribute type's name (`CN`, …) if renkei knows it.
    pub fn name(&self) -> Option<&'static str> {
        self.known.map(|k| k.name)
    }

    /// The value as text, for the attribute types renkei knows.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// Whether renkei writes this value as an IA5String.
    pub fn is_ia5(&self) -> bool {
        self.known.map(|k| k.alphabet) == Some(Alphabet::Ia5)
    }

    /// Whether renkei writes this value as a PrintableString.
    pub fn is_printable(&self) -> bool {
        !self.is_ia5() && self.text.as_deref().is_some_and(is_printable)
    }

    /// The comparison key of this attribute (see the module doc).
    fn key(&self) -> (String, Vec<u8>) {
        match &self.text {
            Some(t) => (self.oid.clone(), prepare(t).into_bytes()),
            None => (self.oid.clone(), self.value_der.clone()),
        }
    }
}

/// RFC 4518 §2.6.1 insignificant space handling and ASCII case folding.
fn prepare(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    out
}

/// A distinguished name: its DER and its RDNs.
#[derive(Clone)]
pub struct DistinguishedName {
    der: Vec<u8>,
    rdns: Vec<Vec<Attribute>>,
    key: Vec<Vec<(String, Vec<u8>)>>,
}

impl PartialEq for DistinguishedName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for DistinguishedName {}

impl Hash for DistinguishedName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Debug for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DistinguishedName({self})")
    }
}

impl DistinguishedName {
    fn new(der: Vec<u8>, rdns: Vec<Vec<Attribute>>) -> DistinguishedName {
        let key = rdns
            .iter()
            .map(|rdn| {
                // An RDN is a SET: the order of its attributes is not
                // significant (X.501).
                let mut k: Vec<_> = rdn.iter().map(Attribute::key).collect();
                k.sort();
                k
            })
            .collect();
        DistinguishedName { der, rdns, key }
    }

    /// Parses a DN as an operator writes it (see the module doc).
    pub fn parse(s: &str) -> Result<DistinguishedName, DnError> {
        if s.len() > MAX_TEXT_LEN {
            return Err(err(format!("longer than {MAX_TEXT_LEN} characters")));
        }
        let mut rdns = Vec::new();
        let mut der_rdns = Vec::new();
        for part in split_unescaped(s, b',')? {
            let (ty, value) = split_type(part)?;
            let ty = ty.trim();
            let known = known_by_name(ty).ok_or_else(|| {
                err(format!(
                    "unknown attribute type '{ty}' (known: {TYPE_LIST})"
                ))
            })?;
            let value = unescape(value).map_err(|why| err(format!("{}: {why}", known.name)))?;
            if value.is_empty() {
                return Err(err(format!("{}: empty value", known.name)));
            }
            if value.chars().any(char::is_control) {
                return Err(err(format!("{}: contains control characters", known.name)));
            }
            match known.alphabet {
                Alphabet::Printable if !is_printable(&value) => {
                    return Err(err(format!(
                        "{}: '{value}' has characters outside PrintableString",
                        known.name
                    )))
                }
                Alphabet::Ia5 if !value.is_ascii() => {
                    return Err(err(format!("{}: '{value}' is not ASCII", known.name)))
                }
                _ => {}
            }
            if let Some(n) = known.len {
                if value.chars().count() != n {
                    return Err(err(format!(
                        "{}: '{value}' must be {n} characters",
                        known.name
                    )));
                }
            }
            let oid = ObjectIdentifier::new(known.oid)
                .map_err(|_| err(format!("{}: bad object identifier", known.name)))?;
            let any = encode_value(known.alphabet, &value)
                .map_err(|e| err(format!("{}: cannot encode: {e}", known.name)))?;
            let value_der = any
                .to_der()
                .map_err(|e| err(format!("{}: cannot encode: {e}", known.name)))?;
            let atv = DerAtv { oid, value: any };
            let set = SetOfVec::try_from(vec![atv])
                .map_err(|e| err(format!("{}: cannot encode: {e}", known.name)))?;
            der_rdns.push(RelativeDistinguishedName::from(set));
            rdns.push(vec![Attribute {
                oid: known.oid.to_string(),
                known: Some(known),
                text: Some(value),
                value_der,
            }]);
        }
        if rdns.is_empty() {
            return Err(err("no attributes"));
        }
        let der = RdnSequence::from(der_rdns)
            .to_der()
            .map_err(|e| err(format!("cannot encode: {e}")))?;
        if der.len() > MAX_DER_LEN {
            return Err(err(format!(
                "its encoding of {} bytes is longer than {MAX_DER_LEN}",
                der.len()
            )));
        }
        Ok(DistinguishedName::new(der, rdns))
    }

    /// Parses the DER of an X.501 Name, as an `ID_DER_ASN1_DN` payload
    /// carries it (RFC 7296 §3.5). Trailing bytes are refused.
    pub fn from_der(der: &[u8]) -> Result<DistinguishedName, DnError> {
        let (rest, name) = X509Name::from_der(der).map_err(|_| err("not a DER X.501 Name"))?;
        if !rest.is_empty() {
            return Err(err("trailing bytes after the X.501 Name"));
        }
        DistinguishedName::from_x509_name(&name)
    }

    /// Converts a name parsed by x509-parser (a certificate's subject).
    pub fn from_x509_name(name: &X509Name<'_>) -> Result<DistinguishedName, DnError> {
        let mut rdns = Vec::new();
        for rdn in name.iter_rdn() {
            let mut attrs = Vec::new();
            for atv in rdn.iter() {
                let oid = atv.attr_type().to_id_string();
                let known = known_by_oid(&oid);
                let value = atv.attr_value();
                let text = match known {
                    Some(k) => Some(value_text(value).ok_or_else(|| {
                        err(format!("{}: value is not a character string", k.name))
                    })?),
                    None => None,
                };
                let mut value_der = Vec::new();
                value_to_der(value, &mut value_der);
                attrs.push(Attribute {
                    oid,
                    known,
                    text,
                    value_der,
                });
            }
            if attrs.is_empty() {
                return Err(err("an RDN has no attributes"));
            }
            rdns.push(attrs);
        }
        if rdns.is_empty() {
            return Err(err("no RDNs"));
        }
        Ok(DistinguishedName::new(name.as_raw().to_vec(), rdns))
    }

    /// The DER encoding (as parsed, or as renkei encoded it).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The RDNs in DER order, each a set of attributes.
    pub fn rdns(&self) -> impl Iterator<Item = &[Attribute]> {
        self.rdns.iter().map(Vec::as_slice)
    }

    /// Whether strongSwan's DN parser (`atodn()`) reads this DN's written
    /// form back as the same DN, inside a quoted swanctl.conf value: it
    /// knows no escapes, so a value with a comma, quote or backslash, a
    /// leading space or `=`, a trailing space, a multi-valued RDN or an
    /// unnamed attribute type does not survive.
    pub fn strongswan_writable(&self) -> bool {
        self.rdns.iter().all(|rdn| {
            rdn.len() == 1
                && rdn.iter().all(|a| {
                    a.known.is_some()
                        && a.text.as_deref().is_some_and(|t| {
                            !t.contains([',', '"', '\\'])
                                && !t.starts_with([' ', '='])
                                && !t.ends_with(' ')
                        })
                })
        })
    }
}

impl fmt::Display for DistinguishedName {
    /// strongSwan's written form (DER order, `, ` between RDNs), escaped
    /// as RFC 4514 §2.4 says so that [`DistinguishedName::parse`] reads
    /// it back; attribute types renkei does not know are printed as
    /// dotted OIDs with the value's DER in hex (RFC 4514 §2.4 `#`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            for (j, a) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str(" + ")?;
                }
                match (a.known, &a.text) {
                    (Some(k), Some(t)) => {
                        write!(f, "{}=", k.name)?;
                        write_escaped(f, t)?;
                    }
                    _ => {
                        write!(f, "{}=#", a.oid)?;
                        a.value_der.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, t: &str) -> fmt::Result {
    let last = t.chars().count().saturating_sub(1);
    for (i, c) in t.chars().enumerate() {
        match c {
            // Only what the parser would read otherwise: it takes `+`,
            // `=`, `"` and `#` literally, as strongSwan does.
            ',' | '\\' => write!(f, "\\{c}")?,
            ' ' if i == 0 || i == last => f.write_str("\\ ")?,
            c if c.is_control() => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    write!(f, "\\{b:02x}")?;
                }
            }
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

/// Splits at unescaped `sep`, keeping escapes in the parts.
fn split_unescaped(s: &str, sep: u8) -> Result<Vec<&str>, DnError> {
    let b = s.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == sep => {
                parts.push(&s[start..i]);
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if i > b.len() {
        return Err(err("ends with a lone backslash"));
    }
    parts.push(&s[start..]);
    if parts.iter().any(|p| p.trim().is_empty()) {
        return Err(err("empty attribute (two commas, or a comma at an end)"));
    }
    Ok(parts)
}

/// `TYPE=value`, split at the first `=`.
fn split_type(part: &str) -> Result<(&str, &str), DnError> {
    part.split_once('=')
        .ok_or_else(|| err(format!("'{}' is not TYPE=value", part.trim())))
}

/// Removes unescaped spaces around the value and resolves RFC 4514 §2.4
/// escapes (`\` followed by a special character or two hex digits).
fn unescape(raw: &str) -> Result<String, String> {
    let raw = raw.trim_start_matches(' ');
    let b = raw.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    // Length of `out` up to the last byte that is not an unescaped space.
    let mut keep = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let Some(&next) = b.get(i + 1) else {
                return Err("ends with a lone backslash".into());
            };
            let hex = |x: u8| (x as char).to_digit(16);
            match (hex(next), b.get(i + 2).and_then(|&x| hex(x))) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ if b" \"#+,;<=>\\".contains(&next) => {
                    out.push(next);
                    i += 2;
                }
                _ => return Err(format!("unknown escape '\\{}'", next as char)),
            }
            keep = out.len();
        } else {
            out.push(b[i]);
            if b[i] != b' ' {
                keep = out.len();
            }
            i += 1;
        }
    }
    out.truncate(keep);
    String::from_utf8(out).map_err(|_| "escapes do not make UTF-8".to_string())
}

fn encode_value(alphabet: Alphabet, value: &str) -> Result<Any, x509_cert::der::Error> {
    match alphabet {
        Alphabet::Ia5 => Any::encode_from(&Ia5StringRef::new(value)?),
        Alphabet::Printable => Any::encode_from(&PrintableStringRef::new(value)?),
        Alphabet::Directory if is_printable(value) => {
            Any::encode_from(&PrintableStringRef::new(value)?)
        }
        Alphabet::Directory => Any::encode_from(&Utf8StringRef::new(value)?),
    }
}

/// A character string value as text; `None` for anything else.
fn value_text(v: &ParsedAny<'_>) -> Option<String> {
    match v.tag() {
        Tag::PrintableString
        | Tag::Utf8String
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        // TeletexString is taken as UTF-8 when it is (common practice;
        // T.61 proper is not decoded).
        | Tag::TeletexString => std::str::from_utf8(v.data).ok().map(str::to_string),
        Tag::BmpString => BmpString::try_from(v.clone()).ok().map(|s| s.string()),
        Tag::UniversalString => {
            if !v.data.len().is_multiple_of(4) {
                return None;
            }
            v.data
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// The DER of a parsed value (tag, length, contents).
fn value_to_der(v: &ParsedAny<'_>, out: &mut Vec<u8>) {
    use x509_parser::der_parser::asn1_rs::ToDer;
    if v.write_der(out).is_err() {
        // Not expected for a value that just parsed; fall back to its
        // contents so that it still compares by something.
        out.clear();
        out.extend_from_slice(v.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DistinguishedName {
        DistinguishedName::parse(s).unwrap()
    }

    #[test]
    fn parses_strongswan_form() {
        let d = dn("C=JP, O=Kyoto Hospital, CN=kyoto.example.jp");
        assert_eq!(d.to_string(), "C=JP, O=Kyoto Hospital, CN=kyoto.example.jp");
        let names: Vec<_> = d.rdns().map(|r| r[0].name().unwrap()).collect();
        assert_eq!(names, ["C", "O", "CN"], "DER order is the written order");
        // Spaces around separators and '=' are not significant; type
        // names are case-insensitive; aliases map to one name.
        let e = dn(" c = JP ,o=Kyoto Hospital,   cn=kyoto.example.jp ");
        assert_eq!(d, e);
        assert_eq!(e.to_string(), d.to_string());
        let all = dn("C=JP, ST=Kyoto, L=Kyoto-shi, O=H, OU=IT, OU=Net, DC=example, DC=jp, emailAddress=it@kyoto.example, serialNumber=1234, CN=x");
        assert_eq!(
            all.to_string(),
            "C=JP, ST=Kyoto, L=Kyoto-shi, O=H, OU=IT, OU=Net, DC=example, DC=jp, E=it@kyoto.example, serialNumber=1234, CN=x"
        );
        assert_eq!(dn("Email=a@b"), dn("E=a@b"));
    }

    #[test]
    fn escapes() {
        let d = dn(r"C=JP, O=Kyoto\, Inc., CN=a\\b\2Bc\ ");
        let values: Vec<_> = d.rdns().map(|r| r[0].text().unwrap().to_string()).collect();
        assert_eq!(values, ["JP", "Kyoto, Inc.", r"a\b+c "]);
        // Display escapes what parse needs escaped.
        assert_eq!(d.to_string(), r"C=JP, O=Kyoto\, Inc., CN=a\\b+c\ ");
        assert_eq!(dn(&d.to_string()), d);
        assert_eq!(dn(&d.to_string()).der(), d.der());
        // UTF-8 through hex escapes, and as is.
        assert_eq!(dn(r"O=\e4\ba\ac\e9\83\bd"), dn("O=京都"));
        assert!(!d.strongswan_writable());
        assert!(dn("C=JP, O=Kyoto Hospital, CN=k").strongswan_writable());
    }

    #[test]
    fn refuses_bad_names() {
        let e = |s: &str| DistinguishedName::parse(s).unwrap_err().to_string();
        assert_eq!(
            e("C=JP, XX=foo"),
            format!("unknown attribute type 'XX' (known: {TYPE_LIST})")
        );
        assert_eq!(e("C=JPN"), "C: 'JPN' must be 2 characters");
        assert_eq!(e("C=JP, CN="), "CN: empty value");
        assert!(e("C=JP,,CN=x").contains("empty attribute"));
        assert!(e("C=JP, CN=x,").contains("empty attribute"));
        assert!(e("C=JP, justtext").contains("not TYPE=value"));
        assert_eq!(e(r"CN=a\q"), r"CN: unknown escape '\q'");
        assert!(e(r"CN=a\").contains("lone backslash"));
        assert!(e("serialNumber=a_b").contains("outside PrintableString"));
        assert!(e("E=京@x").contains("not ASCII"));
        assert!(e("CN=a\u{7}b").contains("control"));
        for s in ["C=JP, XX=foo", "C=JPN", "CN=", r"CN=a\q"] {
            assert!(!e(s).contains('\n'), "one line: {s}");
        }
    }

    #[test]
    fn encodes_as_strongswan() {
        // As strongSwan's atodn() encodes it: PrintableStrings throughout.
        let d = dn("C=JP, O=Kyoto Hospital, CN=kyoto");
        let expected: &[u8] = &[
            0x30, 0x36, //
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'J', b'P', //
            0x31, 0x17, 0x30, 0x15, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x13, 0x0e, b'K', b'y', b'o',
            b't', b'o', b' ', b'H', b'o', b's', b'p', b'i', b't', b'a', b'l', //
            0x31, 0x0e, 0x30, 0x0c, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x05, b'k', b'y', b'o',
            b't', b'o',
        ];
        assert_eq!(d.der(), expected);
        assert_eq!(DistinguishedName::from_der(expected).unwrap(), d);
        // Not printable: UTF8String (tag 12); E: IA5String (tag 22).
        let u = dn("O=京都, E=a@b");
        let parsed = X509Name::from_der(u.der()).unwrap().1;
        let tags: Vec<_> = parsed
            .iter_attributes()
            .map(|a| a.attr_value().tag())
            .collect();
        assert_eq!(tags, [Tag::Utf8String, Tag::Ia5String]);
    }

    #[test]
    fn matching_rules() {
        let d = dn("C=JP, O=Kyoto Hospital, CN=kyoto.example.jp");
        // ASCII case and insignificant spaces do not matter.
        assert_eq!(d, dn("C=jp, O=KYOTO  hospital, CN=Kyoto.Example.JP"));
        // Order, values and attribute types do.
        assert_ne!(d, dn("O=Kyoto Hospital, C=JP, CN=kyoto.example.jp"));
        assert_ne!(d, dn("C=JP, O=Kyoto Hospital, CN=nara.example.jp"));
        assert_ne!(d, dn("C=JP, OU=Kyoto Hospital, CN=kyoto.example.jp"));
        assert_ne!(d, dn("C=JP, O=Kyoto Hospital"));
        assert_ne!(d, dn("C=JP, O=Kyoto Hospital, CN=kyoto.example.jp, CN=x"));
        // Non-ASCII is compared exactly.
        assert_ne!(dn("O=Ä"), dn("O=ä"));
        // The same name as UTF8String compares equal to the PrintableString.
        let utf8: &[u8] = &[
            0x30, 0x0d, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x0c, 0x02, b'j',
            b'p',
        ];
        assert_eq!(DistinguishedName::from_der(utf8).unwrap(), dn("C=JP"));
        // Equal DNs hash alike, so a HashMap finds the facility.
        let mut m = std::collections::HashMap::new();
        m.insert(d.clone(), 1);
        assert_eq!(
            m.get(&dn("c=JP,o=kyoto hospital,cn=KYOTO.example.jp")),
            Some(&1)
        );
    }

    #[test]
    fn from_der_refuses_garbage() {
        let d = dn("C=JP, CN=x");
        let mut trailing = d.der().to_vec();
        trailing.push(0);
        assert!(DistinguishedName::from_der(&trailing).is_err());
        assert!(DistinguishedName::from_der(&d.der()[..d.der().len() - 1]).is_err());
        assert!(DistinguishedName::from_der(b"kyoto.example").is_err());
        assert!(DistinguishedName::from_der(&[]).is_err());
        // A CN that is not a string.
        let int_cn: &[u8] = &[
            0x30, 0x0c, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x02, 0x01, 0x05,
        ];
        assert!(DistinguishedName::from_der(int_cn).is_err());
    }

    #[test]
    fn unknown_types_from_the_wire() {
        // UID (0.9.2342.19200300.100.1.1), which the parser does not know:
        // kept, compared by DER, printed as OID=#hex.
        let der: &[u8] = &[
            0x30, 0x12, 0x31, 0x10, 0x30, 0x0e, 0x06, 0x0a, 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2,
            0x2c, 0x64, 0x01, 0x01, 0x0c, 0x00,
        ];
        let d = DistinguishedName::from_der(der).unwrap();
        assert_eq!(d.to_string(), "0.9.2342.19200300.100.1.1=#0c00");
        assert!(!d.strongswan_writable());
    }
}
