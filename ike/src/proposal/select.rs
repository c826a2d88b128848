//! Choosing among what a peer offers (RFC 7296 §2.7, §3.3.6): the
//! peer's order decides, except that key exchange methods compliant after
//! 2030 come before MODP-2048 ([`KeChoice`], the responder's answer to a
//! KE payload, RFC 7296 §1.2, §1.3); and checking what a responder chose
//! against what the hub offered.

use super::{compliant_after_2030, esn_id, offer_use, EsnUse, EspSuite, IkeSuite, ProposalSet};
use crate::crypto::{Encr, Integ, KeyExchange, Prf};
use crate::wire::{
    EncrId, EsnId, IntegId, KeId, PrfId, Proposal, ProtocolId, Transform, TransformType,
};

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

impl ProposalSet {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposal::{describe_offer, Protocol};

    fn ike(s: &str) -> ProposalSet {
        ProposalSet::parse(s, Protocol::Ike, false).unwrap()
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

    fn ke_order(p: &Proposal) -> Vec<KeId> {
        p.transforms
            .iter()
            .filter(|t| t.kind == TransformType::Ke)
            .map(|t| KeId::from(t.id))
            .collect()
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
