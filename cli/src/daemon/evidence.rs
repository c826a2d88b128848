//! What the hub saw of each facility, kept for `renkei status NAME` and
//! `renkei diagnose NAME`: per facility, a ring of its last [`EVENTS`]
//! events (up, down, Child SAs, rekeys, refusals), each classified into a
//! [`Cause`] a diagnosis can explain. Attempts refused before a facility
//! was known are kept per source address by [`super::refusals`].
//!
//! Bounds: only registered facilities have a ring (a removed one's goes
//! with it), a ring holds at most [`EVENTS`] entries, a repeat of the
//! newest entry (a router retrying the same mistake every few seconds)
//! only counts, and every detail is cut to a bounded length. Whatever a
//! facility or a stranger sends, the memory stays bounded.

use ike::wire::NotifyType;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Events kept per facility.
pub(crate) const EVENTS: usize = 32;

/// The longest detail kept per event.
const DETAIL_MAX: usize = 240;

/// What kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventKind {
    /// An IKE SA was authenticated.
    IkeUp,
    /// The IKE SA went down.
    IkeDown,
    /// A Child SA was installed.
    ChildUp,
    /// An IKE SA came up without a Child SA.
    ChildFailed,
    /// A rekey (IKE or Child SA).
    Rekeyed,
    /// The facility's NAT mapping changed.
    Moved,
    /// An attempt was refused (by the hub or by the facility).
    Refused,
}

/// Why an attempt failed, as far as the hub can tell from what it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Cause {
    /// The facility's AUTH does not match its pre-shared key.
    WrongPsk,
    /// The facility refused the hub's AUTH (its key, or the hub's
    /// identity or certificate, is not what it expects).
    RefusedByFacility,
    /// The facility authenticated with another method than configured.
    AuthMethod,
    /// Its certificate is from another CA.
    CertUnknownCa,
    /// Its certificate expired (or is not valid yet).
    CertExpired,
    /// Its certificate is revoked.
    CertRevoked,
    /// Its identity is not in its certificate.
    CertIdentity,
    /// Any other certificate problem.
    CertOther,
    /// Its traffic selectors are not what it is configured with.
    TsMismatch,
    /// Its Child SA (ESP) proposals are not acceptable.
    ChildProposal,
    /// It does not do NAT traversal (sent no NAT_DETECTION), so its ESP
    /// would not come in UDP, the only ESP the hub carries.
    NoNatTraversal,
    /// The facility is disabled.
    Disabled,
    /// Anything else.
    Other,
}

impl Cause {
    /// Classifies a refusal the endpoint reported for a known facility,
    /// from its notification and the explanation the `ike` and `pki`
    /// crates wrote (their texts are tested against this below).
    pub(crate) fn of(notify: NotifyType, reason: &str, disabled: bool) -> Cause {
        if disabled {
            return Cause::Disabled;
        }
        if reason.contains("does not do NAT traversal") {
            return Cause::NoNatTraversal;
        }
        match notify {
            NotifyType::TsUnacceptable => return Cause::TsMismatch,
            NotifyType::NoProposalChosen => return Cause::ChildProposal,
            NotifyType::AuthenticationFailed => {}
            _ => return Cause::Other,
        }
        if reason.contains("pre-shared key of") {
            Cause::WrongPsk
        } else if reason.contains("answered IKE_AUTH with") {
            Cause::RefusedByFacility
        } else if reason.contains("not by this hub's CA")
            || reason.contains("certificate signature refused")
        {
            // A CA of the same name but another key (another hub's
            // `renkei init`) shows as a signature that does not verify.
            Cause::CertUnknownCa
        } else if reason.contains("certificate expired") || reason.contains("not valid before") {
            Cause::CertExpired
        } else if reason.contains("is revoked") {
            Cause::CertRevoked
        } else if reason.contains("is not in the certificate") {
            Cause::CertIdentity
        } else if reason.contains("certificate") {
            Cause::CertOther
        } else if reason.contains("authentication; it is configured for") {
            Cause::AuthMethod
        } else {
            Cause::Other
        }
    }
}

/// One thing the hub saw of a facility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SeenEvent {
    /// When (RFC 3339, UTC); the last time for a repeated event.
    pub(crate) time: String,
    /// When it was first seen, for a repeated event.
    pub(crate) first: String,
    pub(crate) kind: EventKind,
    /// The cause, for refusals.
    #[serde(default)]
    pub(crate) cause: Option<Cause>,
    /// The notification exchanged, if any.
    #[serde(default)]
    pub(crate) notify: Option<String>,
    /// The facility's address.
    #[serde(default)]
    pub(crate) remote: Option<SocketAddr>,
    /// The explanation (what was offered, which suite, why).
    pub(crate) detail: String,
    /// How many times in a row.
    pub(crate) count: u64,
}

/// Events of every registered facility.
#[derive(Default)]
pub(super) struct Evidence {
    rings: HashMap<String, VecDeque<SeenEvent>>,
}

impl Evidence {
    /// Records an event of `name`, at `time` (RFC 3339). A repeat of the
    /// newest event (same kind, cause, notification and detail) is
    /// counted in it; otherwise the oldest beyond [`EVENTS`] goes.
    #[allow(clippy::too_many_arguments)] // one event's fields, named at each call
    pub(super) fn note(
        &mut self,
        name: &str,
        time: &str,
        kind: EventKind,
        cause: Option<Cause>,
        notify: Option<NotifyType>,
        remote: Option<SocketAddr>,
        detail: &str,
    ) {
        let ring = match self.rings.get_mut(name) {
            Some(r) => r,
            None => self.rings.entry(name.to_string()).or_default(),
        };
        let detail = cut(detail);
        let notify = notify.map(|n| n.to_string());
        if let Some(last) = ring.back_mut() {
            if last.kind == kind
                && last.cause == cause
                && last.notify == notify
                && last.detail == detail
            {
                last.count += 1;
                last.time = time.to_string();
                last.remote = remote.or(last.remote);
                return;
            }
        }
        if ring.len() >= EVENTS {
            ring.pop_front();
        }
        ring.push_back(SeenEvent {
            time: time.to_string(),
            first: time.to_string(),
            kind,
            cause,
            notify,
            remote,
            detail,
            count: 1,
        });
    }

    /// A facility's events, oldest first.
    pub(super) fn events(&self, name: &str) -> Vec<SeenEvent> {
        self.rings
            .get(name)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets facilities no longer registered.
    pub(super) fn retain(&mut self, registered: impl Fn(&str) -> bool) {
        self.rings.retain(|name, _| registered(name));
    }

    #[cfg(test)]
    fn facilities(&self) -> usize {
        self.rings.len()
    }
}

/// At most [`DETAIL_MAX`] characters, control characters replaced (the
/// text may quote what a facility sent).
fn cut(detail: &str) -> String {
    let mut out: String = detail
        .chars()
        .take(DETAIL_MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if detail.chars().nth(DETAIL_MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pki::verify::CertError;

    fn refused(e: &mut Evidence, name: &str, detail: &str) {
        e.note(
            name,
            "t",
            EventKind::Refused,
            Some(Cause::WrongPsk),
            Some(NotifyType::AuthenticationFailed),
            None,
            detail,
        );
    }

    #[test]
    fn a_ring_is_bounded_and_repeats_only_count() {
        let mut e = Evidence::default();
        for _ in 0..10_000 {
            refused(&mut e, "kyoto", "same");
        }
        let ev = e.events("kyoto");
        assert_eq!(ev.len(), 1, "a repeat is counted, not stored");
        assert_eq!(ev[0].count, 10_000);
        for i in 0..10_000 {
            refused(&mut e, "kyoto", &format!("different {i}"));
        }
        let ev = e.events("kyoto");
        assert_eq!(ev.len(), EVENTS);
        assert_eq!(ev[EVENTS - 1].detail, "different 9999", "newest kept");
        assert_eq!(ev[0].detail, format!("different {}", 10_000 - EVENTS));
    }

    #[test]
    fn details_are_cut_and_printable_and_removed_facilities_forgotten() {
        let mut e = Evidence::default();
        refused(
            &mut e,
            "kyoto",
            &format!("\u{1b}[31m{}", "x".repeat(100_000)),
        );
        let d = &e.events("kyoto")[0].detail;
        assert!(d.chars().count() <= DETAIL_MAX + 1);
        assert!(!d.chars().any(char::is_control));
        for i in 0..100 {
            refused(&mut e, &format!("f{i}"), "x");
        }
        e.retain(|n| n == "kyoto");
        assert_eq!(e.facilities(), 1);
    }

    /// The causes follow the texts the `ike` and `pki` crates write.
    #[test]
    fn causes_follow_the_endpoints_texts() {
        let auth = |why: String| ike::Error::AuthenticationFailed(why).to_string();
        let af = NotifyType::AuthenticationFailed;
        let cases = [
            (
                auth("pre-shared key of fqdn:kyoto.example does not match".into()),
                Cause::WrongPsk,
            ),
            (
                "facility answered IKE_AUTH with AUTHENTICATION_FAILED".into(),
                Cause::RefusedByFacility,
            ),
            (
                auth(format!(
                    "certificate of x refused: {}",
                    CertError::UnknownIssuer("CN=Other".into())
                )),
                Cause::CertUnknownCa,
            ),
            (
                auth(format!(
                    "certificate of x refused: {}",
                    CertError::Signature(pki::sig::SigError::BadSignature)
                )),
                Cause::CertUnknownCa,
            ),
            (
                auth(format!(
                    "certificate of x refused: {}",
                    CertError::Expired(0)
                )),
                Cause::CertExpired,
            ),
            (
                auth(format!(
                    "certificate of x refused: {}",
                    CertError::Revoked("01".into())
                )),
                Cause::CertRevoked,
            ),
            (
                auth(format!(
                    "certificate of x refused: {}",
                    CertError::IdentityMismatch("fqdn:a".into())
                )),
                Cause::CertIdentity,
            ),
            (
                auth("x used RSA authentication; it is configured for a pre-shared key".into()),
                Cause::AuthMethod,
            ),
        ];
        for (text, cause) in cases {
            assert_eq!(Cause::of(af, &text, false), cause, "{text}");
        }
        assert_eq!(
            Cause::of(NotifyType::TsUnacceptable, "", false),
            Cause::TsMismatch
        );
        assert_eq!(
            Cause::of(NotifyType::NoProposalChosen, "", false),
            Cause::ChildProposal
        );
        assert_eq!(Cause::of(af, "", true), Cause::Disabled);
        let no_natt = ike::Error::NotPossible(ike::NO_NAT_TRAVERSAL.into()).to_string();
        for n in [NotifyType::NoProposalChosen, af] {
            assert_eq!(
                Cause::of(n, &format!("first Child SA refused: {no_natt}"), false),
                Cause::NoNatTraversal
            );
        }
    }
}
