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

use crate::crypto::{Encr, Integ, KeyExchange, Prf};
use crate::wire::{
    EncrId, EsnId, IntegId, KeId, PrfId, Proposal, ProtocolId, Transform, TransformType,
};
use std::fmt;

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

/// What a responder does with the group of the peer's KE payload
/// ([`ProposalSet::select_ike_for_ke`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeChoice {
    /// Take this suite (its group is the KE payload's) and answer with
    /// this proposal.
    Accept(IkeSuite, Proposal),
    /// Answer INVALID_KE_PAYLOAD naming this group (RFC 7296 §1.2, §1.3).
    AskFor(KeId),
}

/// Which key exchange methods one pass of a selection takes.
#[derive(Debug, Clone, Copy)]
enum KePass {
    /// Only this one (the group of the peer's KE payload).
    Exactly(KeId),
    /// Only those compliant after 2030.
    Compliant,
    /// Any the profile accepts.
    Any,
}

impl KePass {
    fn admits(self, k: KeId) -> bool {
        match self {
            KePass::Exactly(g) => k == g,
            KePass::Compliant => compliant_after_2030(k),
            KePass::Any => true,
        }
    }
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

    /// Whether a negotiated IKE suite is one of ours.
    pub fn accepts_ike(&self, s: &IkeSuite) -> bool {
        self.templates.iter().any(|t| {
            t.encr.contains(&s.encr)
                && t.prf.contains(&s.prf)
                && t.ke.contains(&s.ke)
                && match s.integ {
                    Some(i) => t.integ.contains(&i),
                    None => s.encr.is_aead(),
                }
        })
    }

    /// The peer's first proposal that one of ours accepts with a key
    /// exchange method `pass` admits, and within it the peer's first
    /// acceptable transform of each type (RFC 7296 §2.7).
    fn first_ike(&self, offered: &[Proposal], pass: KePass) -> Option<(IkeSuite, Proposal)> {
        for p in offered.iter().filter(|p| p.protocol == ProtocolId::Ike) {
            if !well_formed(p) {
                continue;
            }
            for t in &self.templates {
                let Some(encr) = pick(p, TransformType::Encr, |x| {
                    Encr::from_id(EncrId::from(x.id), x.key_length()).filter(|e| t.encr.contains(e))
                }) else {
                    continue;
                };
                let Some(prf) = pick(p, TransformType::Prf, |x| {
                    Prf::from_id(PrfId::from(x.id)).filter(|f| t.prf.contains(f))
                }) else {
                    continue;
                };
                let Some(integ) = pick_integ(p, encr, &t.integ) else {
                    continue;
                };
                let Some(ke) = pick(p, TransformType::Ke, |x| {
                    let k = KeId::from(x.id);
                    (t.ke.contains(&k) && KeyExchange::supports(k) && pass.admits(k)).then_some(k)
                }) else {
                    continue;
                };
                if p.transforms.iter().any(|x| x.kind == TransformType::Esn) {
                    continue;
                }
                let suite = IkeSuite {
                    encr,
                    prf,
                    integ,
                    ke,
                };
                return Some((
                    suite,
                    chosen(
                        p.number,
                        ProtocolId::Ike,
                        Vec::new(),
                        encr,
                        Some(prf),
                        integ,
                        Some(ke),
                        None,
                    ),
                ));
            }
        }
        None
    }

    /// Chooses an IKE suite from a peer's SA payload: the peer's first
    /// proposal that one of ours accepts with a key exchange method
    /// compliant after 2030, and within it the peer's first such method;
    /// only if there is none, the peer's first acceptable proposal. Within
    /// the proposal, the peer's first acceptable transform of each type
    /// (RFC 7296 §2.7: the responder chooses). Returns the suite and the
    /// proposal to send back.
    pub fn select_ike(&self, offered: &[Proposal]) -> Option<(IkeSuite, Proposal)> {
        self.first_ike(offered, KePass::Compliant)
            .or_else(|| self.first_ike(offered, KePass::Any))
    }

    /// Chooses an IKE suite as a responder that has the peer's KE payload,
    /// of group `sent` (RFC 7296 §1.2, §2.7). The group as sent is taken
    /// when it is acceptable and either compliant after 2030, or nothing
    /// compliant was offered, or `upgrade` is off; otherwise the answer is
    /// INVALID_KE_PAYLOAD naming the group [`Self::select_ike`] prefers —
    /// with `upgrade` that asks a peer that sent MODP-2048 but also offered
    /// a compliant group for the compliant one, at the cost of one round
    /// trip. None: nothing acceptable (NO_PROPOSAL_CHOSEN).
    pub fn select_ike_for_ke(
        &self,
        offered: &[Proposal],
        sent: KeId,
        upgrade: bool,
    ) -> Option<KeChoice> {
        let (preferred, echo) = self.select_ike(offered)?;
        if preferred.ke == sent {
            return Some(KeChoice::Accept(preferred, echo));
        }
        let keep_sent =
            !upgrade || compliant_after_2030(sent) || !compliant_after_2030(preferred.ke);
        match self.first_ike(offered, KePass::Exactly(sent)) {
            Some((suite, echo)) if keep_sent => Some(KeChoice::Accept(suite, echo)),
            _ => Some(KeChoice::AskFor(preferred.ke)),
        }
    }

    /// Chooses an ESP suite from a peer's SA payload. With `ignore_ke` (the
    /// first Child SA, created in IKE_AUTH) key exchange transforms are
    /// ignored (RFC 7296 §1.2) and the peer's first acceptable proposal is
    /// taken. Otherwise (CREATE_CHILD_SA) a proposal that takes `sent`, the
    /// group of the peer's KE payload, comes first — no INVALID_KE_PAYLOAD
    /// round trip for a rekey — then, as [`Self::select_ike`], one with a
    /// group compliant after 2030, then any. Returns the suite, the peer's
    /// SPI and the proposal to send back with `our_spi`.
    ///
    /// Extended Sequence Numbers are chosen whenever the peer offers them
    /// and the proposal allows them (by default it does): a 64-bit counter
    /// never runs out, so such an SA never has to be rekeyed for it (RFC
    /// 4303 §2.2.1). A peer offering only 32-bit numbers gets them.
    pub fn select_esp(
        &self,
        offered: &[Proposal],
        ignore_ke: bool,
        sent: Option<KeId>,
        our_spi: u32,
    ) -> Option<(EspSuite, u32, Proposal)> {
        let passes: &[KePass] = match sent {
            _ if ignore_ke => &[KePass::Any],
            Some(g) => &[KePass::Exactly(g), KePass::Compliant, KePass::Any],
            None => &[KePass::Compliant, KePass::Any],
        };
        passes
            .iter()
            .find_map(|pass| self.first_esp(offered, ignore_ke, *pass, our_spi))
    }

    /// One pass of [`Self::select_esp`]: the peer's first proposal that one
    /// of ours accepts with a key exchange method `pass` admits (or, except
    /// for [`KePass::Exactly`], without PFS where both sides allow that).
    fn first_esp(
        &self,
        offered: &[Proposal],
        ignore_ke: bool,
        pass: KePass,
        our_spi: u32,
    ) -> Option<(EspSuite, u32, Proposal)> {
        self.choose_esp(offered, ignore_ke, pass, our_spi, EsnUse::Accept)
    }

    /// Checks the ESP proposal a responder chose from our offer: the
    /// suite and the responder's SPI, or `None` if it is not one we
    /// offered (RFC 7296 §2.7: the responder picks among what was
    /// offered), ESN included. `rekeying_esn`: the offer was
    /// [`Self::to_wire_rekeying`] for an SA using ESN.
    pub fn accept_esp(
        &self,
        chosen: &[Proposal],
        ignore_ke: bool,
        our_spi: u32,
        rekeying_esn: bool,
    ) -> Option<(EspSuite, u32)> {
        self.choose_esp(
            chosen,
            ignore_ke,
            KePass::Any,
            our_spi,
            offer_use(rekeying_esn),
        )
        .map(|(suite, spi, _)| (suite, spi))
    }

    fn choose_esp(
        &self,
        offered: &[Proposal],
        ignore_ke: bool,
        pass: KePass,
        our_spi: u32,
        esn_use: EsnUse,
    ) -> Option<(EspSuite, u32, Proposal)> {
        for p in offered.iter().filter(|p| p.protocol == ProtocolId::Esp) {
            if !well_formed(p) {
                continue;
            }
            let Ok(peer_spi) = <[u8; 4]>::try_from(p.spi.as_slice()) else {
                continue;
            };
            for t in &self.templates {
                let Some(encr) = pick(p, TransformType::Encr, |x| {
                    Encr::from_id(EncrId::from(x.id), x.key_length()).filter(|e| t.encr.contains(e))
                }) else {
                    continue;
                };
                let Some(integ) = pick_integ(p, encr, &t.integ) else {
                    continue;
                };
                let offered_ke: Vec<KeId> = p
                    .transforms
                    .iter()
                    .filter(|x| x.kind == TransformType::Ke)
                    .map(|x| KeId::from(x.id))
                    .collect();
                // PFS: a proposal that lists key exchange methods requires
                // one of them; one that lists none accepts any method of the
                // profile the peer asks for, or none.
                let wanted = offered_ke
                    .iter()
                    .copied()
                    .filter(|k| *k != KeId::None && pass.admits(*k))
                    .find(|k| (t.ke.is_empty() || t.ke.contains(k)) && KeyExchange::supports(*k));
                let ke = if ignore_ke {
                    None
                } else if let Some(k) = wanted {
                    Some(k)
                } else if t.ke.is_empty()
                    && !matches!(pass, KePass::Exactly(_))
                    && (offered_ke.is_empty() || offered_ke.contains(&KeId::None))
                {
                    None
                } else {
                    continue;
                };
                // RFC 7296 §3.3.2: ESN is transform type 5, with values
                // NO_EXT_SEQ and EXT_SEQ; a proposal without one is read as
                // 32-bit numbers (it is mandatory for ESP, but lenient
                // peers omit it). ESN when offered and allowed, otherwise
                // 32-bit numbers when offered and allowed.
                let mut esn_transforms = p
                    .transforms
                    .iter()
                    .filter(|x| x.kind == TransformType::Esn)
                    .map(|x| EsnId::from(x.id));
                let with = esn_transforms.clone().any(|e| e == EsnId::Esn);
                let without = p.transforms.iter().all(|x| x.kind != TransformType::Esn)
                    || esn_transforms.any(|e| e == EsnId::NoEsn);
                let allowed = t.esn(esn_use);
                let esn = if with && allowed.contains(&true) {
                    true
                } else if without && allowed.contains(&false) {
                    false
                } else {
                    continue;
                };
                if p.transforms.iter().any(|x| x.kind == TransformType::Prf) {
                    continue;
                }
                let suite = EspSuite {
                    encr,
                    integ,
                    ke,
                    esn,
                };
                let echo = chosen(
                    p.number,
                    ProtocolId::Esp,
                    our_spi.to_be_bytes().to_vec(),
                    encr,
                    None,
                    integ,
                    if ignore_ke { None } else { ke },
                    Some(esn),
                );
                return Some((suite, u32::from_be_bytes(peer_spi), echo));
            }
        }
        None
    }
}

/// A proposal is usable only if every transform type is one of the five and
/// every transform carries no attribute but Key Length (RFC 7296 §3.3.6).
fn well_formed(p: &Proposal) -> bool {
    p.transforms
        .iter()
        .all(|t| !matches!(t.kind, TransformType::Unknown(_)) && !t.has_unknown_attributes())
}

fn pick<T>(p: &Proposal, kind: TransformType, f: impl Fn(&Transform) -> Option<T>) -> Option<T> {
    p.transforms.iter().filter(|t| t.kind == kind).find_map(f)
}

/// Integrity: required with CBC; with AEAD absent or NONE (RFC 5282 §8).
fn pick_integ(p: &Proposal, encr: Encr, allowed: &[Integ]) -> Option<Option<Integ>> {
    let offered: Vec<IntegId> = p
        .transforms
        .iter()
        .filter(|t| t.kind == TransformType::Integ)
        .map(|t| IntegId::from(t.id))
        .collect();
    if encr.is_aead() {
        return offered.iter().all(|i| *i == IntegId::None).then_some(None);
    }
    offered
        .iter()
        .find_map(|i| Integ::from_id(*i).filter(|g| allowed.contains(g)))
        .map(Some)
}

#[allow(clippy::too_many_arguments)]
fn chosen(
    number: u8,
    protocol: ProtocolId,
    spi: Vec<u8>,
    encr: Encr,
    prf: Option<Prf>,
    integ: Option<Integ>,
    ke: Option<KeId>,
    esn: Option<bool>,
) -> Proposal {
    let mut transforms = vec![Transform::with_key_length(
        TransformType::Encr,
        encr.id().into(),
        encr.bits(),
    )];
    if let Some(p) = prf {
        transforms.push(Transform::new(TransformType::Prf, p.id().into()));
    }
    if let Some(i) = integ {
        transforms.push(Transform::new(TransformType::Integ, i.id().into()));
    }
    if let Some(k) = ke {
        transforms.push(Transform::new(TransformType::Ke, k.into()));
    }
    if let Some(e) = esn {
        transforms.push(Transform::new(TransformType::Esn, esn_id(e).into()));
    }
    Proposal {
        number,
        protocol,
        spi,
        transforms,
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

    #[test]
    fn selection_follows_the_peer_and_the_profile() {
        let ours = ProposalSet::default_for(Protocol::Ike);
        // A YAMAHA-style offer.
        let yamaha = ike("aes256-sha256-modp2048").to_wire(&[], true);
        let (suite, echo) = ours.select_ike(&yamaha).unwrap();
        assert_eq!(suite.to_string(), "aes256-sha256-prfsha256-modp2048");
        assert_eq!(echo.transforms.len(), 4);
        // A weak offer is refused.
        let weak = vec![Proposal {
            number: 1,
            protocol: ProtocolId::Ike,
            spi: vec![],
            transforms: vec![
                Transform::new(TransformType::Encr, EncrId::TripleDes.into()),
                Transform::new(TransformType::Integ, IntegId::HmacSha1_96.into()),
                Transform::new(TransformType::Prf, PrfId::HmacSha1.into()),
                Transform::new(TransformType::Ke, KeId::Modp1024.into()),
            ],
        }];
        assert!(ours.select_ike(&weak).is_none());
        assert_eq!(
            describe_offer(&weak),
            "IKE:3DES_CBC/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024"
        );
        // A peer-restricted set refuses what it does not list.
        let only_gcm = ike("aes256gcm16-prfsha384-ecp384");
        assert!(only_gcm.select_ike(&yamaha).is_none());
        assert!(only_gcm.accepts_ike(&IkeSuite {
            encr: Encr::AesGcm16 { bits: 256 },
            prf: Prf::HmacSha384,
            integ: None,
            ke: KeId::Ecp384
        }));
    }

    #[test]
    fn pfs_is_accepted_by_default_and_required_when_configured() {
        let default = ProposalSet::default_for(Protocol::Esp);
        let pfs_offer = ProposalSet::parse("aes256gcm16-ecp256", Protocol::Esp, false)
            .unwrap()
            .to_wire(&[0, 0, 0, 9], true);
        let plain_offer = ProposalSet::parse("aes256gcm16", Protocol::Esp, false)
            .unwrap()
            .to_wire(&[0, 0, 0, 9], true);
        assert_eq!(
            default.select_esp(&pfs_offer, false, None, 1).unwrap().0.ke,
            Some(KeId::Ecp256)
        );
        assert_eq!(
            default
                .select_esp(&plain_offer, false, None, 1)
                .unwrap()
                .0
                .ke,
            None
        );
        let required = ProposalSet::parse("aes256gcm16-modp3072", Protocol::Esp, false).unwrap();
        assert!(required.select_esp(&plain_offer, false, None, 1).is_none());
        assert!(
            required.select_esp(&pfs_offer, false, None, 1).is_none(),
            "another group"
        );
        assert_eq!(required.first_ke(), Some(KeId::Modp3072));
        assert_eq!(
            default.first_ke(),
            None,
            "the hub's own rekeys use no PFS by default"
        );
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
    fn esn_is_chosen_when_offered() {
        let ours = ProposalSet::default_for(Protocol::Esp);
        for (offer, esn) in [
            ("aes256gcm16-esn", true),
            ("aes256gcm16-noesn-esn", true),
            ("aes256gcm16-esn-noesn", true),
            ("aes256gcm16", false),
            ("aes256-sha256-esn", true),
        ] {
            let wire = esp(offer).to_wire(&[0, 0, 0, 9], false);
            let (suite, spi, echo) = ours.select_esp(&wire, true, None, 7).unwrap();
            assert_eq!((suite.esn, spi), (esn, 9), "{offer}");
            let expect = if esn { EsnId::Esn } else { EsnId::NoEsn };
            assert_eq!(esn_values(&echo), [expect], "one ESN transform echoed");
            // The initiator accepts the answer only if it offered that.
            let answer = [echo];
            let theirs = esp(offer);
            assert_eq!(theirs.accept_esp(&answer, true, 9, false), Some((suite, 7)));
        }
        let suite = ours
            .select_esp(
                &esp("aes256gcm16-esn").to_wire(&[0; 4], false),
                true,
                None,
                1,
            )
            .unwrap()
            .0;
        assert_eq!(suite.to_string(), "aes256gcm16-esn");
        let pfs = esp("aes128-sha256-ecp256-esn").to_wire(&[0; 4], true);
        assert_eq!(
            ours.select_esp(&pfs, false, None, 1).unwrap().0.to_string(),
            "aes128-sha256-ecp256-esn"
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

    #[test]
    fn esp_selection_ignores_ke_in_ike_auth() {
        let ours = ProposalSet::default_for(Protocol::Esp);
        let offer = ProposalSet::parse("aes128gcm16-ecp256", Protocol::Esp, false)
            .unwrap()
            .to_wire(&[0, 0, 0, 9], true);
        let (suite, spi, echo) = ours.select_esp(&offer, true, None, 0x1234).unwrap();
        assert_eq!((suite.to_string().as_str(), spi), ("aes128gcm16", 9));
        assert_eq!(echo.spi, vec![0, 0, 0x12, 0x34]);
        assert!(echo.transforms.iter().all(|t| t.kind != TransformType::Ke));
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

    #[test]
    fn the_responder_prefers_groups_compliant_after_2030() {
        let ours = ProposalSet::default_for(Protocol::Ike);
        // MODP-2048 listed first, ECP-256 in a later proposal.
        let mut offer = ike("aes256-sha256-modp2048").to_wire(&[], true);
        offer.extend(ike("aes256gcm16-prfsha384-ecp256").to_wire(&[], true));
        offer[1].number = 2;
        assert_eq!(ke_order(&offer[0]), vec![KeId::Modp2048]);
        let (suite, echo) = ours.select_ike(&offer).unwrap();
        assert_eq!(suite.to_string(), "aes256gcm16-prfsha384-ecp256");
        assert_eq!(echo.number, 2);
        // KE payload MODP-2048: ask for ECP-256, unless told not to.
        assert_eq!(
            ours.select_ike_for_ke(&offer, KeId::Modp2048, true),
            Some(KeChoice::AskFor(KeId::Ecp256))
        );
        match ours.select_ike_for_ke(&offer, KeId::Modp2048, false) {
            Some(KeChoice::Accept(s, echo)) => {
                assert_eq!(s.to_string(), "aes256-sha256-prfsha256-modp2048");
                assert_eq!(echo.number, 1);
            }
            other => panic!("{other:?}"),
        }
        // A compliant group in the KE payload is taken as sent: no round
        // trip for another compliant one.
        let both = ike("aes256gcm16-prfsha256-ecp384-modp3072").to_wire(&[], true);
        match ours.select_ike_for_ke(&both, KeId::Modp3072, true) {
            Some(KeChoice::Accept(s, _)) => assert_eq!(s.ke, KeId::Modp3072),
            other => panic!("{other:?}"),
        }
        // A group that is not offered or not acceptable: ask for ours.
        assert_eq!(
            ours.select_ike_for_ke(&both, KeId::Ecp521, false),
            Some(KeChoice::AskFor(KeId::Ecp384))
        );
        // Only MODP-2048 offered: accepted whatever the setting.
        let yamaha = ike("aes256-sha256-modp2048").to_wire(&[], true);
        for upgrade in [true, false] {
            assert!(matches!(
                ours.select_ike_for_ke(&yamaha, KeId::Modp2048, upgrade),
                Some(KeChoice::Accept(s, _)) if s.ke == KeId::Modp2048
            ));
        }
        assert!(ike("aes256gcm16-prfsha256-ecp256")
            .select_ike_for_ke(&yamaha, KeId::Modp2048, true)
            .is_none());
    }

    #[test]
    fn create_child_sa_takes_the_pfs_group_sent() {
        let ours = ProposalSet::default_for(Protocol::Esp);
        // As a peer lists them: MODP-2048 first.
        let p = vec![Proposal {
            number: 1,
            protocol: ProtocolId::Esp,
            spi: vec![0, 0, 0, 9],
            transforms: vec![
                Transform::with_key_length(TransformType::Encr, EncrId::AesGcm16.into(), 256),
                Transform::new(TransformType::Ke, KeId::Modp2048.into()),
                Transform::new(TransformType::Ke, KeId::Ecp256.into()),
                Transform::new(TransformType::Esn, EsnId::NoEsn.into()),
            ],
        }];
        assert_eq!(ke_order(&p[0]), vec![KeId::Modp2048, KeId::Ecp256]);
        let pick = |sent| ours.select_esp(&p, false, sent, 1).unwrap().0.ke;
        // The group of the KE payload, whichever it is: no round trip.
        assert_eq!(pick(Some(KeId::Modp2048)), Some(KeId::Modp2048));
        assert_eq!(pick(Some(KeId::Ecp256)), Some(KeId::Ecp256));
        // Without a usable KE payload, the compliant group is preferred.
        assert_eq!(pick(Some(KeId::Ecp521)), Some(KeId::Ecp256));
        assert_eq!(pick(None), Some(KeId::Ecp256));
        // The first Child SA ignores key exchange altogether.
        assert_eq!(ours.select_esp(&p, true, None, 1).unwrap().0.ke, None);
    }
}
