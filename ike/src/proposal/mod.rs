//! The CRYPTREC profile: proposal strings in strongSwan's syntax, what the
//! hub offers, and how it chooses among what a peer offers.
//!
//! ```text
//! "aes256gcm16-prfsha384-ecp384,aes256-sha256-modp2048"
//!        │ ProposalSet::parse (refuses anything outside the profile)
//!        ▼
//! ProposalSet ──to_wire──▶ SA payload we offer (initiator)
//!             ──select_ike / select_esp(offered)──▶ IkeSuite / EspSuite (responder)
//!             ──select_ike_for_ke(offered, KE)──▶ KeChoice: accept, or INVALID_KE_PAYLOAD
//! ```
//!
//! Key exchange methods that stay on the CRYPTREC list after 2030
//! ([`compliant_after_2030`]) come first both ways: the hub offers them
//! first and, as responder, takes them over MODP-2048 (112-bit, usable only
//! until 2030-12-31) whatever the peer's order; otherwise the peer's order
//! decides (RFC 7296 §2.7).
//!
//! This file parses proposal strings and makes the hub's offers;
//! `select.rs` chooses among a peer's.

use crate::crypto::{Encr, Integ, Prf};
use crate::wire::{EsnId, KeId, Proposal, ProtocolId, Transform, TransformType};
use std::fmt;

mod select;

pub use select::KeChoice;

/// The default IKE proposals: every CRYPTREC-listed combination, AEAD first,
/// 128-bit-strength groups before MODP-2048.
pub const DEFAULT_IKE: &str = "aes256gcm16-aes128gcm16-prfsha256-prfsha384-prfsha512-ecp256-ecp384-ecp521-modp3072-modp4096-modp2048,\
aes256-aes128-camellia256-camellia128-sha256-sha384-sha512-ecp256-ecp384-ecp521-modp3072-modp4096-modp2048";

/// The default ESP proposals. They name no key exchange method, so PFS is
/// accepted whenever a facility asks for it (with any method of the
/// profile) but not required, and the hub's own rekeys use none. Nor do
/// they name `esn` or `noesn`: the hub offers 32-bit sequence numbers, as
/// strongSwan does by default, and accepts Extended Sequence Numbers too,
/// preferring them (see [`ProposalSet::select_esp`]).
pub const DEFAULT_ESP: &str =
    "aes256gcm16-aes128gcm16,aes256-aes128-camellia256-camellia128-sha256-sha384-sha512";

/// Which protocol a proposal string is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// IKE SA proposals (need a PRF and a key exchange method).
    Ike,
    /// ESP Child SA proposals (key exchange optional: PFS).
    Esp,
}

/// Why a proposal string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalError {
    /// An algorithm the CRYPTREC profile refuses.
    Refused(String),
    /// A token that names no algorithm.
    Unknown(String),
    /// A proposal missing a required transform type.
    Incomplete(String),
    /// Empty string or empty proposal.
    Empty,
}

impl fmt::Display for ProposalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposalError::Refused(t) => write!(f, "'{t}' is outside the CRYPTREC profile"),
            ProposalError::Unknown(t) => write!(f, "'{t}' is not a known algorithm"),
            ProposalError::Incomplete(why) => f.write_str(why),
            ProposalError::Empty => f.write_str("empty proposal"),
        }
    }
}

impl std::error::Error for ProposalError {}

/// A negotiated IKE SA suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeSuite {
    /// Encryption.
    pub encr: Encr,
    /// Pseudorandom function.
    pub prf: Prf,
    /// Integrity (None with AEAD).
    pub integ: Option<Integ>,
    /// Key exchange method.
    pub ke: KeId,
}

/// A negotiated ESP suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspSuite {
    /// Encryption.
    pub encr: Encr,
    /// Integrity (None with AEAD).
    pub integ: Option<Integ>,
    /// PFS group, if any.
    pub ke: Option<KeId>,
    /// Extended (64-bit) Sequence Numbers (RFC 4303 §2.2.1, RFC 7296
    /// §3.3.2 transform type 5).
    pub esn: bool,
}

fn integ_name(i: Integ) -> &'static str {
    match i {
        Integ::HmacSha256_128 => "sha256",
        Integ::HmacSha384_192 => "sha384",
        Integ::HmacSha512_256 => "sha512",
    }
}

fn prf_name(p: Prf) -> &'static str {
    match p {
        Prf::HmacSha256 => "prfsha256",
        Prf::HmacSha384 => "prfsha384",
        Prf::HmacSha512 => "prfsha512",
    }
}

/// Whether a key exchange method stays acceptable under the CRYPTREC
/// criteria after 2030 (128-bit security or more): ECP-256/384/521 and
/// MODP-3072/4096. MODP-2048 (112-bit) is usable only until 2030-12-31;
/// x25519 is not on the list at all.
pub fn compliant_after_2030(k: KeId) -> bool {
    matches!(
        k,
        KeId::Ecp256 | KeId::Ecp384 | KeId::Ecp521 | KeId::Modp3072 | KeId::Modp4096
    )
}

/// strongSwan's name for a key exchange method.
pub fn ke_name(k: KeId) -> String {
    match k {
        KeId::Ecp256 => "ecp256".into(),
        KeId::Ecp384 => "ecp384".into(),
        KeId::Ecp521 => "ecp521".into(),
        KeId::Modp2048 => "modp2048".into(),
        KeId::Modp3072 => "modp3072".into(),
        KeId::Modp4096 => "modp4096".into(),
        KeId::Curve25519 => "x25519".into(),
        other => other.to_string(),
    }
}

impl fmt::Display for IkeSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.encr.swan_name())?;
        if let Some(i) = self.integ {
            write!(f, "-{}", integ_name(i))?;
        }
        write!(f, "-{}-{}", prf_name(self.prf), ke_name(self.ke))
    }
}

impl fmt::Display for EspSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.encr.swan_name())?;
        if let Some(i) = self.integ {
            write!(f, "-{}", integ_name(i))?;
        }
        if let Some(k) = self.ke {
            write!(f, "-{}", ke_name(k))?;
        }
        if self.esn {
            f.write_str("-esn")?;
        }
        Ok(())
    }
}

/// One proposal: the algorithms acceptable for each transform type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    encr: Vec<Encr>,
    prf: Vec<Prf>,
    integ: Vec<Integ>,
    /// For ESP, `KeId::None` in the list means "no PFS" is acceptable.
    ke: Vec<KeId>,
    /// For ESP, `esn` / `noesn` as written (true: ESN); empty when neither
    /// is named.
    esn: Vec<bool>,
}

/// Which sequence numbers a proposal that names neither `esn` nor
/// `noesn` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EsnUse {
    /// Our offer: 32-bit numbers only, strongSwan's default.
    Offer,
    /// Our offer to rekey a Child SA that uses ESN: ESN first, then 32-bit
    /// numbers, so that a peer accepting only ESN carries on with it.
    OfferKeepingEsn,
    /// What we accept as responder: either.
    Accept,
}

impl Template {
    /// The ESN transform values this proposal stands for, in order (true:
    /// ESN).
    fn esn(&self, role: EsnUse) -> &[bool] {
        match (self.esn.is_empty(), role) {
            (false, _) => &self.esn,
            (true, EsnUse::Offer) => &[false],
            (true, EsnUse::OfferKeepingEsn | EsnUse::Accept) => &[true, false],
        }
    }
}

/// A parsed, validated list of proposals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalSet {
    protocol: Protocol,
    templates: Vec<Template>,
    text: String,
}

impl fmt::Display for ProposalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

enum Token {
    Encr(Encr),
    Integ(Integ),
    Prf(Prf),
    Ke(KeId),
    Esn(bool),
}

fn token(t: &str, allow_x25519: bool) -> Result<Token, ProposalError> {
    let refused = || Err(ProposalError::Refused(t.to_string()));
    Ok(match t {
        "aes128" => Token::Encr(Encr::AesCbc { bits: 128 }),
        "aes256" => Token::Encr(Encr::AesCbc { bits: 256 }),
        "aes128gcm16" | "aes128gcm128" => Token::Encr(Encr::AesGcm16 { bits: 128 }),
        "aes256gcm16" | "aes256gcm128" => Token::Encr(Encr::AesGcm16 { bits: 256 }),
        "camellia128" => Token::Encr(Encr::CamelliaCbc { bits: 128 }),
        "camellia256" => Token::Encr(Encr::CamelliaCbc { bits: 256 }),
        "sha256" | "sha2_256" => Token::Integ(Integ::HmacSha256_128),
        "sha384" | "sha2_384" => Token::Integ(Integ::HmacSha384_192),
        "sha512" | "sha2_512" => Token::Integ(Integ::HmacSha512_256),
        "prfsha256" => Token::Prf(Prf::HmacSha256),
        "prfsha384" => Token::Prf(Prf::HmacSha384),
        "prfsha512" => Token::Prf(Prf::HmacSha512),
        "ecp256" => Token::Ke(KeId::Ecp256),
        "ecp384" => Token::Ke(KeId::Ecp384),
        "ecp521" => Token::Ke(KeId::Ecp521),
        "modp2048" => Token::Ke(KeId::Modp2048),
        "modp3072" => Token::Ke(KeId::Modp3072),
        "modp4096" => Token::Ke(KeId::Modp4096),
        "x25519" | "curve25519" if allow_x25519 => Token::Ke(KeId::Curve25519),
        "esn" => Token::Esn(true),
        "noesn" => Token::Esn(false),
        "des" | "3des" | "md5" | "sha1" | "sha" | "modp768" | "modp1024" | "modp1536"
        | "modp1024s160" | "modp2048s224" | "modp2048s256" | "ecp192" | "ecp224" | "null"
        | "chacha20poly1305" | "aesxcbc" | "aescmac" | "prfmd5" | "prfsha1" | "prfaesxcbc"
        | "aes192" | "aes192gcm16" | "x25519" | "curve25519" | "x448" | "curve448"
        | "aes128ccm16" | "aes256ccm16" | "aes128ctr" | "aes256ctr" | "aes128gcm8"
        | "aes256gcm8" | "aes128gcm12" | "aes256gcm12" | "blowfish" | "cast128" => {
            return refused()
        }
        _ => return Err(ProposalError::Unknown(t.to_string())),
    })
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

impl ProposalSet {
    /// Parses a comma-separated list of proposals in strongSwan's syntax.
    /// Proposals that mix AEAD and non-AEAD ciphers are split in two, as
    /// strongSwan does; `allow_x25519` is the operator's explicit opt-in to
    /// Curve25519, which is not on the CRYPTREC list.
    pub fn parse(
        s: &str,
        protocol: Protocol,
        allow_x25519: bool,
    ) -> Result<ProposalSet, ProposalError> {
        let mut templates = Vec::new();
        let s = s.trim();
        if s.is_empty() {
            return Err(ProposalError::Empty);
        }
        for prop in s.split(',') {
            let prop = prop.trim().to_ascii_lowercase();
            if prop.is_empty() {
                return Err(ProposalError::Empty);
            }
            let (mut aead, mut cbc) = (Vec::new(), Vec::new());
            let mut t = Template {
                encr: vec![],
                prf: vec![],
                integ: vec![],
                ke: vec![],
                esn: vec![],
            };
            for tok in prop.split('-') {
                match token(tok, allow_x25519)? {
                    Token::Encr(e) if e.is_aead() => push_unique(&mut aead, e),
                    Token::Encr(e) => push_unique(&mut cbc, e),
                    Token::Integ(i) => push_unique(&mut t.integ, i),
                    Token::Prf(p) => push_unique(&mut t.prf, p),
                    Token::Ke(k) => push_unique(&mut t.ke, k),
                    Token::Esn(e) => push_unique(&mut t.esn, e),
                }
            }
            if aead.is_empty() && cbc.is_empty() {
                return Err(ProposalError::Incomplete(format!(
                    "'{prop}' names no encryption algorithm"
                )));
            }
            if protocol == Protocol::Ike {
                if t.esn.contains(&true) {
                    return Err(ProposalError::Incomplete(format!(
                        "'{prop}': ESN is for ESP proposals"
                    )));
                }
                // `noesn` is harmless (strongSwan accepts it) and ignored.
                t.esn.clear();
                if t.ke.is_empty() {
                    return Err(ProposalError::Incomplete(format!(
                        "'{prop}' names no key exchange method"
                    )));
                }
                if t.prf.is_empty() {
                    // strongSwan derives the PRFs from the integrity algorithms.
                    t.prf = t
                        .integ
                        .iter()
                        .map(|i| match i {
                            Integ::HmacSha256_128 => Prf::HmacSha256,
                            Integ::HmacSha384_192 => Prf::HmacSha384,
                            Integ::HmacSha512_256 => Prf::HmacSha512,
                        })
                        .collect();
                }
                if t.prf.is_empty() {
                    return Err(ProposalError::Incomplete(format!("'{prop}' names no PRF")));
                }
            } else {
                if !t.prf.is_empty() {
                    return Err(ProposalError::Incomplete(format!(
                        "'{prop}': ESP proposals take no PRF"
                    )));
                }
                if !t.ke.is_empty() && t.ke.contains(&KeId::None) {
                    return Err(ProposalError::Incomplete(format!(
                        "'{prop}': bad PFS group"
                    )));
                }
            }
            if !cbc.is_empty() {
                if t.integ.is_empty() {
                    return Err(ProposalError::Incomplete(format!(
                        "'{prop}': CBC ciphers need an integrity algorithm"
                    )));
                }
                templates.push(Template {
                    encr: cbc,
                    ..t.clone()
                });
            }
            if !aead.is_empty() {
                templates.push(Template {
                    encr: aead,
                    integ: vec![],
                    ..t
                });
            }
        }
        Ok(ProposalSet {
            protocol,
            templates,
            text: s.to_ascii_lowercase(),
        })
    }

    /// The profile's default for a protocol.
    pub fn default_for(protocol: Protocol) -> ProposalSet {
        let text = match protocol {
            Protocol::Ike => DEFAULT_IKE,
            Protocol::Esp => DEFAULT_ESP,
        };
        // The defaults are constants checked by a unit test.
        Self::parse(text, protocol, false).unwrap_or(ProposalSet {
            protocol,
            templates: Vec::new(),
            text: String::new(),
        })
    }

    /// Whether any proposal uses a key exchange method outside the 128-bit
    /// set (MODP-2048: usable only until the end of 2030) or outside the
    /// list altogether (x25519).
    pub fn weak_groups(&self) -> Vec<KeId> {
        let mut v = Vec::new();
        for t in &self.templates {
            for k in &t.ke {
                if matches!(k, KeId::Modp2048 | KeId::Curve25519) {
                    push_unique(&mut v, *k);
                }
            }
        }
        v
    }

    /// The key exchange method an initiator puts in its KE payload: the
    /// first of the first proposal as offered ([`Self::to_wire`]), so one
    /// compliant after 2030 whenever one is configured, and MODP-2048 for
    /// a facility that lists nothing else (YAMAHA RTX).
    pub fn first_ke(&self) -> Option<KeId> {
        self.offer_order(true)
            .iter()
            .flat_map(|t| t.ke.iter())
            .copied()
            .next()
    }

    /// The proposals in the order the hub offers them: within each, key
    /// exchange methods compliant after 2030 before the others, and
    /// proposals with such a method before those without (each stable, so
    /// the operator's order decides otherwise). Without key exchange
    /// transforms (`with_ke` false for ESP) the order is the operator's.
    fn offer_order(&self, with_ke: bool) -> Vec<Template> {
        let mut templates = self.templates.clone();
        if self.protocol == Protocol::Ike || with_ke {
            for t in &mut templates {
                t.ke.sort_by_key(|k| !compliant_after_2030(*k));
            }
            templates.sort_by_key(|t| !t.ke.iter().any(|k| compliant_after_2030(*k)));
        }
        templates
    }

    /// Whether any proposal has a key exchange method compliant after 2030.
    pub fn allows_compliant_ke(&self) -> bool {
        self.templates
            .iter()
            .any(|t| t.ke.iter().any(|k| compliant_after_2030(*k)))
    }

    /// Whether `ke` appears in any proposal.
    pub fn allows_ke(&self, ke: KeId) -> bool {
        self.templates.iter().any(|t| t.ke.contains(&ke))
    }

    /// Our proposals as SA payload substructures, in the order the hub
    /// offers them (groups compliant after 2030 first). For the first
    /// Child SA (`with_ke = false`) key exchange transforms are left out,
    /// as RFC 7296 §1.2 has them negotiated only in CREATE_CHILD_SA.
    pub fn to_wire(&self, spi: &[u8], with_ke: bool) -> Vec<Proposal> {
        self.offer(spi, with_ke, EsnUse::Offer)
    }

    /// Our proposals to rekey a Child SA, as [`Self::to_wire`]; when the SA
    /// uses ESN (`esn`), proposals that name neither `esn` nor `noesn`
    /// offer ESN first, so that a peer that accepts only ESN accepts the
    /// rekey too.
    pub fn to_wire_rekeying(&self, spi: &[u8], with_ke: bool, esn: bool) -> Vec<Proposal> {
        self.offer(spi, with_ke, offer_use(esn))
    }

    fn offer(&self, spi: &[u8], with_ke: bool, esn_use: EsnUse) -> Vec<Proposal> {
        let mut out = Vec::new();
        for (i, t) in self.offer_order(with_ke).iter().enumerate() {
            let mut transforms = Vec::new();
            for e in &t.encr {
                transforms.push(Transform::with_key_length(
                    TransformType::Encr,
                    e.id().into(),
                    e.bits(),
                ));
            }
            if self.protocol == Protocol::Ike {
                for p in &t.prf {
                    transforms.push(Transform::new(TransformType::Prf, p.id().into()));
                }
            }
            for g in &t.integ {
                transforms.push(Transform::new(TransformType::Integ, g.id().into()));
            }
            if self.protocol == Protocol::Ike || with_ke {
                for k in &t.ke {
                    transforms.push(Transform::new(TransformType::Ke, (*k).into()));
                }
            }
            if self.protocol == Protocol::Esp {
                for &e in t.esn(esn_use) {
                    transforms.push(Transform::new(TransformType::Esn, esn_id(e).into()));
                }
            }
            out.push(Proposal {
                number: u8::try_from(i + 1).unwrap_or(u8::MAX),
                protocol: match self.protocol {
                    Protocol::Ike => ProtocolId::Ike,
                    Protocol::Esp => ProtocolId::Esp,
                },
                spi: spi.to_vec(),
                transforms,
            });
        }
        out
    }
}

fn offer_use(keep_esn: bool) -> EsnUse {
    if keep_esn {
        EsnUse::OfferKeepingEsn
    } else {
        EsnUse::Offer
    }
}

fn esn_id(esn: bool) -> EsnId {
    if esn {
        EsnId::Esn
    } else {
        EsnId::NoEsn
    }
}

/// What a peer offered, for the log line that accompanies
/// NO_PROPOSAL_CHOSEN: `IKE:3DES_CBC/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024, …`.
pub fn describe_offer(offered: &[Proposal]) -> String {
    offered
        .iter()
        .map(|p| {
            let names: Vec<String> = p.transforms.iter().map(Transform::name).collect();
            format!("{}:{}", p.protocol, names.join("/"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ike(s: &str) -> ProposalSet {
        ProposalSet::parse(s, Protocol::Ike, false).unwrap()
    }

    #[test]
    fn defaults_parse() {
        assert_eq!(ProposalSet::default_for(Protocol::Ike).templates.len(), 2);
        assert_eq!(ProposalSet::default_for(Protocol::Esp).templates.len(), 2);
    }

    #[test]
    fn refuses_what_the_profile_refuses() {
        for s in [
            "3des-sha1-modp1024",
            "aes256-md5-modp2048",
            "aes256-sha256-modp1024",
            "chacha20poly1305-prfsha256-ecp256",
            "aes256gcm16-prfsha256-x25519",
        ] {
            assert!(
                matches!(
                    ProposalSet::parse(s, Protocol::Ike, false),
                    Err(ProposalError::Refused(_))
                ),
                "{s}"
            );
        }
        assert!(ProposalSet::parse("aes256gcm16-prfsha256-x25519", Protocol::Ike, true).is_ok());
        assert!(matches!(
            ProposalSet::parse("aes256-foo-modp2048", Protocol::Ike, false),
            Err(ProposalError::Unknown(_))
        ));
        assert!(matches!(
            ProposalSet::parse("aes256-modp2048", Protocol::Ike, false),
            Err(ProposalError::Incomplete(_))
        ));
        assert!(matches!(
            ProposalSet::parse("aes256gcm16-ecp256", Protocol::Ike, false),
            Err(ProposalError::Incomplete(_))
        ));
        assert!(matches!(
            ProposalSet::parse("aes256-sha256", Protocol::Ike, false),
            Err(ProposalError::Incomplete(_))
        ));
        assert!(matches!(
            ProposalSet::parse("", Protocol::Esp, false),
            Err(ProposalError::Empty)
        ));
        assert!(ProposalSet::parse("aes256-sha256", Protocol::Esp, false).is_ok());
    }

    fn esp(s: &str) -> ProposalSet {
        ProposalSet::parse(s, Protocol::Esp, false).unwrap()
    }

    fn esn_values(p: &Proposal) -> Vec<EsnId> {
        p.transforms
            .iter()
            .filter(|t| t.kind == TransformType::Esn)
            .map(|t| EsnId::from(t.id))
            .collect()
    }

    #[test]
    fn esn_tokens_parse_and_are_offered_as_written() {
        let offer = |s: &str| esn_values(&esp(s).to_wire(&[0, 0, 0, 1], false)[0]);
        // strongSwan's default: 32-bit sequence numbers only.
        assert_eq!(offer("aes256gcm16"), [EsnId::NoEsn]);
        assert_eq!(
            esn_values(&ProposalSet::default_for(Protocol::Esp).to_wire(&[0; 4], false)[1]),
            [EsnId::NoEsn]
        );
        assert_eq!(offer("aes256gcm16-esn"), [EsnId::Esn]);
        assert_eq!(offer("aes256gcm16-noesn"), [EsnId::NoEsn]);
        assert_eq!(offer("aes256gcm16-esn-noesn"), [EsnId::Esn, EsnId::NoEsn]);
        assert_eq!(offer("aes256-sha256-noesn-esn"), [EsnId::NoEsn, EsnId::Esn]);
        // Rekeying an SA that uses ESN keeps offering it unless told not to.
        let rekey = |s: &str| esn_values(&esp(s).to_wire_rekeying(&[0; 4], true, true)[0]);
        assert_eq!(rekey("aes256gcm16"), [EsnId::Esn, EsnId::NoEsn]);
        assert_eq!(rekey("aes256gcm16-esn"), [EsnId::Esn]);
        assert_eq!(rekey("aes256gcm16-noesn"), [EsnId::NoEsn]);
        assert!(matches!(
            ProposalSet::parse("aes256gcm16-prfsha256-ecp256-esn", Protocol::Ike, false),
            Err(ProposalError::Incomplete(_))
        ));
        assert!(
            ProposalSet::parse("aes256gcm16-prfsha256-ecp256-noesn", Protocol::Ike, false).is_ok()
        );
        // No ESN transform in IKE proposals (RFC 7296 §3.3.3).
        assert!(
            esn_values(&ike("aes256gcm16-prfsha256-ecp256-noesn").to_wire(&[], true)[0]).is_empty()
        );
    }

    #[test]
    fn esn_follows_the_operators_proposal() {
        let esn_only = esp("aes256gcm16-esn").to_wire(&[0, 0, 0, 9], false);
        let plain_only = esp("aes256gcm16-noesn").to_wire(&[0, 0, 0, 9], false);
        // An operator who wrote `noesn` refuses ESN, and the other way round.
        assert!(esp("aes256gcm16-noesn")
            .select_esp(&esn_only, true, None, 1)
            .is_none());
        assert!(esp("aes256gcm16-esn")
            .select_esp(&plain_only, true, None, 1)
            .is_none());
        assert!(
            esp("aes256gcm16-esn")
                .select_esp(&esn_only, true, None, 1)
                .unwrap()
                .0
                .esn
        );
        // The hub as initiator with the defaults offered 32-bit numbers
        // only: a responder answering with ESN misbehaves.
        let ours = ProposalSet::default_for(Protocol::Esp);
        let (_, _, echo) = esp("aes256gcm16-esn")
            .select_esp(&esn_only, true, None, 5)
            .unwrap();
        assert!(ours
            .accept_esp(std::slice::from_ref(&echo), true, 9, false)
            .is_none());
        // Unless it rekeys an SA that uses ESN.
        assert!(ours.accept_esp(&[echo], true, 9, true).unwrap().0.esn);
        let (_, _, echo) = ours.select_esp(&plain_only, true, None, 5).unwrap();
        assert!(!ours.accept_esp(&[echo], true, 9, false).unwrap().0.esn);
        // An ESN transform of an unknown value is not ESN; with nothing
        // else it is nothing we can accept.
        let mut odd = esn_only.clone();
        for t in &mut odd[0].transforms {
            if t.kind == TransformType::Esn {
                t.id = 7;
            }
        }
        assert!(ours.select_esp(&odd, true, None, 1).is_none());
    }

    fn ke_order(p: &Proposal) -> Vec<KeId> {
        p.transforms
            .iter()
            .filter(|t| t.kind == TransformType::Ke)
            .map(|t| KeId::from(t.id))
            .collect()
    }

    #[test]
    fn the_hub_offers_groups_compliant_after_2030_first() {
        // The operator listed MODP-2048 first; the hub still leads with
        // ECP-384, in the proposal and in the KE payload.
        let set = ike("aes256-sha256-modp2048-ecp384");
        assert_eq!(set.first_ke(), Some(KeId::Ecp384));
        let wire = set.to_wire(&[], true);
        assert_eq!(ke_order(&wire[0]), vec![KeId::Ecp384, KeId::Modp2048]);
        // A proposal with only MODP-2048 goes after one with a compliant
        // group; the numbers follow the new order.
        let set = ike("aes256-sha256-modp2048,aes256gcm16-prfsha256-ecp256");
        let wire = set.to_wire(&[], true);
        assert_eq!(ke_order(&wire[0]), vec![KeId::Ecp256]);
        assert_eq!((wire[0].number, wire[1].number), (1, 2));
        assert_eq!(set.first_ke(), Some(KeId::Ecp256));
        assert_eq!(
            set.to_string(),
            "aes256-sha256-modp2048,aes256gcm16-prfsha256-ecp256"
        );
        // YAMAHA RTX: MODP-2048 is all there is, so it is sent first.
        assert_eq!(
            ike("aes256-sha256-modp2048").first_ke(),
            Some(KeId::Modp2048)
        );
        // The defaults already lead with ECP-256.
        assert_eq!(
            ProposalSet::default_for(Protocol::Ike).first_ke(),
            Some(KeId::Ecp256)
        );
        // The same for PFS groups in CREATE_CHILD_SA.
        let esp =
            ProposalSet::parse("aes256gcm16-modp2048-modp3072", Protocol::Esp, false).unwrap();
        assert_eq!(esp.first_ke(), Some(KeId::Modp3072));
        assert_eq!(
            ke_order(&esp.to_wire(&[0, 0, 0, 1], true)[0]),
            vec![KeId::Modp3072, KeId::Modp2048]
        );
    }
}
