//! Attempts refused before a facility was known (an IKE_SA_INIT whose
//! proposals the hub refuses, an IKE_AUTH with an identity no facility
//! has): counted by reason since the hub started, and the most recent
//! (source address, reason) pairs kept in a small table, so that
//! `status` and the metrics show them and not only the log.
//!
//! The table holds at most [`RECENT`] entries; a new pair evicts the one
//! seen longest ago. Whatever a sender does, the memory is bounded.

use ike::wire::NotifyType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// (source, reason) pairs kept at most.
pub(crate) const RECENT: usize = 32;

/// The longest detail kept per entry (the rest is cut).
const DETAIL_MAX: usize = 160;

/// Why an attempt was refused before a facility was known. The names
/// are the `reason` label of `renkei_refused_total` and the keys of
/// `status --json`'s `refused.total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RefusalReason {
    /// IKE_SA_INIT: none of the offered proposals is acceptable.
    NoProposalChosen,
    /// IKE_AUTH: no facility has the identity sent (a mistyped or
    /// unknown ID; the hub cannot check a key for an identity it does
    /// not know, so a wrong PSK with it lands here too).
    UnknownIdentity,
    /// A request the hub could not parse.
    InvalidSyntax,
    /// Anything else refused before the facility was known.
    Other,
}

impl RefusalReason {
    pub(crate) const ALL: [RefusalReason; 4] = [
        RefusalReason::NoProposalChosen,
        RefusalReason::UnknownIdentity,
        RefusalReason::InvalidSyntax,
        RefusalReason::Other,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            RefusalReason::NoProposalChosen => "no_proposal_chosen",
            RefusalReason::UnknownIdentity => "unknown_identity",
            RefusalReason::InvalidSyntax => "invalid_syntax",
            RefusalReason::Other => "other",
        }
    }

    /// The reason of a refusal that named no facility, from the Notify
    /// the hub answered with.
    pub(crate) fn of(notify: NotifyType) -> RefusalReason {
        match notify {
            NotifyType::NoProposalChosen => RefusalReason::NoProposalChosen,
            NotifyType::AuthenticationFailed => RefusalReason::UnknownIdentity,
            NotifyType::InvalidSyntax => RefusalReason::InvalidSyntax,
            _ => RefusalReason::Other,
        }
    }
}

struct Entry {
    source: IpAddr,
    reason: RefusalReason,
    count: u64,
    first: String,
    last: String,
    /// Order of the last sighting (larger: newer).
    seen: u64,
    detail: String,
}

/// The daemon's record of refusals before a facility was known.
#[derive(Default)]
pub(super) struct Refusals {
    total: BTreeMap<RefusalReason, u64>,
    recent: Vec<Entry>,
    seen: u64,
}

impl Refusals {
    /// Counts one refusal of `source` for `reason` at `time` (RFC 3339);
    /// `detail` is the log's explanation (cut to a bounded length).
    pub(super) fn note(&mut self, source: IpAddr, reason: RefusalReason, detail: &str, time: &str) {
        *self.total.entry(reason).or_default() += 1;
        self.seen += 1;
        let detail = cut(detail);
        if let Some(e) = self
            .recent
            .iter_mut()
            .find(|e| e.source == source && e.reason == reason)
        {
            e.count += 1;
            e.last = time.to_string();
            e.seen = self.seen;
            e.detail = detail;
            return;
        }
        if self.recent.len() >= RECENT {
            if let Some(oldest) = self
                .recent
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.seen)
                .map(|(i, _)| i)
            {
                self.recent.swap_remove(oldest);
            }
        }
        self.recent.push(Entry {
            source,
            reason,
            count: 1,
            first: time.to_string(),
            last: time.to_string(),
            seen: self.seen,
            detail,
        });
    }

    /// What `status` shows.
    pub(super) fn report(&self) -> RefusedReport {
        let mut recent: Vec<&Entry> = self.recent.iter().collect();
        recent.sort_by_key(|e| std::cmp::Reverse(e.seen));
        RefusedReport {
            total: RefusalReason::ALL
                .iter()
                .map(|r| {
                    (
                        r.name().to_string(),
                        self.total.get(r).copied().unwrap_or(0),
                    )
                })
                .collect(),
            recent: recent
                .into_iter()
                .map(|e| RecentRefusal {
                    source: e.source,
                    reason: e.reason.name().to_string(),
                    count: e.count,
                    first: e.first.clone(),
                    last: e.last.clone(),
                    detail: e.detail.clone(),
                })
                .collect(),
        }
    }
}

/// At most [`DETAIL_MAX`] characters, control characters replaced (the
/// text comes from what a stranger sent).
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

/// Attempts refused before a facility was known, as `status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefusedReport {
    /// Refusals since the hub started, by reason (every reason listed).
    pub(crate) total: BTreeMap<String, u64>,
    /// The most recently seen (source, reason) pairs, newest first; at
    /// most [`RECENT`].
    pub(crate) recent: Vec<RecentRefusal>,
}

impl RefusedReport {
    /// Refusals since the hub started for one reason.
    pub(crate) fn total(&self, reason: RefusalReason) -> u64 {
        self.total.get(reason.name()).copied().unwrap_or(0)
    }
}

/// One source refused for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecentRefusal {
    /// The address the attempts came from.
    pub(crate) source: IpAddr,
    /// A [`RefusalReason`] name.
    pub(crate) reason: String,
    /// Attempts from it for that reason since it entered the table.
    pub(crate) count: u64,
    /// First and last of them (RFC 3339).
    pub(crate) first: String,
    pub(crate) last: String,
    /// The latest explanation (what was offered, which identity).
    pub(crate) detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xc000_0200 + i))
    }

    #[test]
    fn counts_by_source_and_reason_and_evicts_the_oldest() {
        let mut r = Refusals::default();
        for _ in 0..3 {
            r.note(ip(1), RefusalReason::NoProposalChosen, "3DES", "t1");
        }
        r.note(ip(1), RefusalReason::UnknownIdentity, "kyoto.exmaple", "t2");
        let rep = r.report();
        assert_eq!(rep.total(RefusalReason::NoProposalChosen), 3);
        assert_eq!(rep.total(RefusalReason::UnknownIdentity), 1);
        assert_eq!(rep.total.len(), RefusalReason::ALL.len(), "every reason");
        assert_eq!(rep.recent.len(), 2);
        assert_eq!(rep.recent[0].reason, "unknown_identity", "newest first");
        assert_eq!(rep.recent[1].count, 3);
        assert_eq!(
            (rep.recent[1].first.as_str(), rep.recent[1].last.as_str()),
            ("t1", "t1")
        );

        // A flood from many sources: the table stays bounded, the totals count all.
        for i in 0..10_000 {
            r.note(ip(100 + i), RefusalReason::NoProposalChosen, "x", "t3");
        }
        let rep = r.report();
        assert_eq!(rep.recent.len(), RECENT);
        assert_eq!(rep.total(RefusalReason::NoProposalChosen), 10_003);
        assert!(
            rep.recent.iter().all(|e| e.source != ip(1)),
            "the oldest went"
        );
        assert_eq!(rep.recent[0].source, ip(100 + 9_999));
    }

    #[test]
    fn details_are_bounded_and_printable() {
        let mut r = Refusals::default();
        let long = format!("a\u{1b}[31m{}", "x".repeat(1000));
        r.note(ip(1), RefusalReason::Other, &long, "t");
        let d = &r.report().recent[0].detail;
        assert!(d.chars().count() <= DETAIL_MAX + 1);
        assert!(!d.chars().any(char::is_control));
    }

    #[test]
    fn reasons_follow_the_notify() {
        assert_eq!(
            RefusalReason::of(NotifyType::NoProposalChosen),
            RefusalReason::NoProposalChosen
        );
        assert_eq!(
            RefusalReason::of(NotifyType::AuthenticationFailed),
            RefusalReason::UnknownIdentity
        );
        assert_eq!(
            RefusalReason::of(NotifyType::Unknown(40000)),
            RefusalReason::Other
        );
    }
}
