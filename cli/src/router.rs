//! The router a facility owns (`peer add --router`): its working defaults
//! (proposals, lifetimes, liveness), the algorithms it can negotiate, and
//! the export format that configures it.
//!
//! Every fact here follows the vendor references the exports follow
//! (`shared/routers/*.md` in the design material, summarised in
//! `docs/routers/`): what a router cannot do is refused when the facility
//! is registered, naming the suite that works, so that no export ever
//! carries a keyword the router lacks.

use anyhow::{bail, Result};
use ike::proposal::{ProposalSet, Protocol};
use rust_i18n::t;
use std::time::Duration;

/// The kinds of router a facility may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Router {
    /// YAMAHA RTX / NVR / vRX (route-based IKEv2 tunnel).
    Yamaha,
    /// Cisco IOS / IOS XE (FlexVPN static VTI).
    Cisco,
    /// Fortinet FortiGate (FortiOS 6.2 to 7.6, route-based).
    Fortigate,
    /// NEC UNIVERGE IX (IKEv2 tunnel interface).
    Nec,
    /// strongSwan (swanctl).
    Strongswan,
    /// Anything else: the whole CRYPTREC profile, no default export.
    #[default]
    Other,
}

/// What a router kind starts with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    /// IKE proposals (strongSwan syntax).
    pub(crate) ike: &'static str,
    /// ESP proposals (strongSwan syntax); a group turns PFS on.
    pub(crate) esp: &'static str,
    pub(crate) ike_lifetime: Duration,
    pub(crate) child_lifetime: Duration,
    /// The hub's liveness check after this much silence.
    pub(crate) dpd: Duration,
}

/// The algorithms a router can negotiate, as strongSwan proposal tokens.
struct Capability {
    /// Tokens it can do, for IKE and for ESP.
    ike: &'static [&'static str],
    esp: &'static [&'static str],
    /// One line naming what it lacks, for the refusal.
    lacks: &'static str,
}

const YAMAHA: Capability = Capability {
    // RTX reference §3: encryption aes-cbc | aes256-cbc, hash sha256
    // (sha384/512 are model-dependent [CONFLICT]), group up to modp2048.
    ike: &["aes128", "aes256", "sha256", "prfsha256", "modp2048"],
    esp: &["aes128", "aes256", "sha256", "modp2048", "noesn"],
    lacks: "it has no AES-GCM, no Camellia, no ECP groups, no MODP above 2048, and SHA-384/512 only on some models",
};

const CISCO: Capability = Capability {
    // Cisco reference §3 (IOS XE YANG enumerations).
    ike: &[
        "aes128",
        "aes256",
        "aes128gcm16",
        "aes256gcm16",
        "sha256",
        "sha384",
        "sha512",
        "prfsha256",
        "prfsha384",
        "prfsha512",
        "ecp256",
        "ecp384",
        "ecp521",
        "modp2048",
        "modp3072",
        "modp4096",
    ],
    esp: &[
        "aes128",
        "aes256",
        "aes128gcm16",
        "aes256gcm16",
        "sha256",
        "sha384",
        "sha512",
        "ecp256",
        "ecp384",
        "ecp521",
        "modp2048",
        "modp3072",
        "modp4096",
        "noesn",
    ],
    lacks: "it has no Camellia",
};

const FORTIGATE: Capability = Capability {
    // FortiGate reference §3 (phase-1/phase-2 proposal and dhgrp lists).
    ike: CISCO.ike,
    esp: &[
        "aes128",
        "aes256",
        "aes128gcm16",
        "aes256gcm16",
        "sha256",
        "sha384",
        "sha512",
        "ecp256",
        "ecp384",
        "ecp521",
        "modp2048",
        "modp3072",
        "modp4096",
        "noesn",
    ],
    lacks: "it has no Camellia (its proposal names pair one cipher with one hash)",
};

const NEC: Capability = Capability {
    // NEC IX reference §3: aes-cbc-128/256, aes-gcm-128/256-16, sha2-*,
    // 2048-bit and 3072-bit groups; no ECP keyword anywhere.
    ike: &[
        "aes128",
        "aes256",
        "aes128gcm16",
        "aes256gcm16",
        "sha256",
        "sha384",
        "sha512",
        "prfsha256",
        "prfsha384",
        "prfsha512",
        "modp2048",
        "modp3072",
    ],
    esp: &[
        "aes128",
        "aes256",
        "aes128gcm16",
        "aes256gcm16",
        "sha256",
        "sha384",
        "sha512",
        "modp2048",
        "modp3072",
        "noesn",
    ],
    lacks: "no ECP group, MODP-4096 or Camellia is known to work on it",
};

impl Router {
    /// The name stored in the registry and shown to the operator.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Router::Yamaha => "yamaha",
            Router::Cisco => "cisco",
            Router::Fortigate => "fortigate",
            Router::Nec => "nec",
            Router::Strongswan => "strongswan",
            Router::Other => "other",
        }
    }

    /// Parses a stored or typed name.
    pub(crate) fn parse(s: &str) -> Option<Router> {
        [
            Router::Yamaha,
            Router::Cisco,
            Router::Fortigate,
            Router::Nec,
            Router::Strongswan,
            Router::Other,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// The product, for messages.
    pub(crate) fn product(self) -> &'static str {
        match self {
            Router::Yamaha => "a YAMAHA RTX",
            Router::Cisco => "a Cisco IOS XE router",
            Router::Fortigate => "a FortiGate",
            Router::Nec => "a NEC UNIVERGE IX",
            Router::Strongswan => "strongSwan",
            Router::Other => "this router",
        }
    }

    /// Its working defaults.
    pub(crate) fn defaults(self) -> Defaults {
        let base = Defaults {
            ike: ike::proposal::DEFAULT_IKE,
            esp: ike::proposal::DEFAULT_ESP,
            ike_lifetime: Duration::from_secs(14_400),
            child_lifetime: Duration::from_secs(3600),
            dpd: Duration::from_secs(30),
        };
        match self {
            // RTX reference §4.2: the one combination it shares with the
            // CRYPTREC profile; PFS with the same group.
            Router::Yamaha => Defaults {
                ike: "aes256-sha256-modp2048",
                esp: "aes256-sha256-modp2048",
                ..base
            },
            // Cisco reference §2b: AES-CBC-256, SHA-256, group 20 and
            // `set pfs group20`, tested on IOS XE 17.03.
            Router::Cisco => Defaults {
                ike: "aes256-sha256-ecp384",
                esp: "aes256-sha256-ecp384",
                ..base
            },
            // FortiGate reference §2a: aes256gcm-prfsha256 with dhgrp 20
            // in both phases, tested on FortiOS 7.0.
            Router::Fortigate => Defaults {
                ike: "aes256gcm16-prfsha256-ecp384",
                esp: "aes256gcm16-ecp384",
                ..base
            },
            // NEC IX reference §2d: MODP only, 2048-bit on every model
            // (the IX2105 goes no higher).
            Router::Nec => Defaults {
                ike: "aes256-sha256-modp2048",
                esp: "aes256-sha256-modp2048",
                ..base
            },
            Router::Strongswan | Router::Other => base,
        }
    }

    /// The export format `renkei export` uses when none is given.
    pub(crate) fn export_format(self) -> Option<crate::export::Format> {
        use crate::export::Format;
        match self {
            Router::Yamaha => Some(Format::Yamaha),
            Router::Cisco => Some(Format::Cisco),
            Router::Fortigate => Some(Format::Fortigate),
            Router::Nec => Some(Format::Nec),
            Router::Strongswan => Some(Format::Swanctl),
            Router::Other => None,
        }
    }

    /// Whether the hub, as responder, may answer a MODP-2048 KE with
    /// INVALID_KE_PAYLOAD asking for a stronger group
    /// ([`ike::PeerConfig::ke_upgrade`]): not for routers without such
    /// groups, nor for those whose recovery from it is not known to work
    /// (RTX reference §4.3: one firmware answers the retry with a zero
    /// responder SPI).
    pub(crate) fn ke_upgrade(self) -> bool {
        !matches!(self, Router::Yamaha | Router::Nec)
    }

    /// Whether certificate authentication is offered for this router: only
    /// where the reference shows a working configuration syntax.
    pub(crate) fn check_cert(self) -> Result<()> {
        match self {
            Router::Yamaha => bail!("{}", t!("registry.yamaha_cert")),
            Router::Nec => bail!("{}", t!("registry.nec_cert")),
            _ => Ok(()),
        }
    }

    /// Lifetimes the router itself can be configured with (its export
    /// carries them).
    fn lifetime_range(self) -> Option<(u64, u64)> {
        match self {
            // `ipsec ike duration`: 300..691200 s (RTX reference §3).
            Router::Yamaha => Some((300, 691_200)),
            // `keylife` / `keylifeseconds`: 120..172800 s (FortiGate §3).
            Router::Fortigate => Some((120, 172_800)),
            _ => None,
        }
    }

    fn capability(self) -> Option<&'static Capability> {
        match self {
            Router::Yamaha => Some(&YAMAHA),
            Router::Cisco => Some(&CISCO),
            Router::Fortigate => Some(&FORTIGATE),
            Router::Nec => Some(&NEC),
            Router::Strongswan | Router::Other => None,
        }
    }

    /// Refuses proposals the router cannot negotiate, naming the suite that
    /// works, and lifetimes it cannot be configured with.
    pub(crate) fn check(
        self,
        ike_set: &ProposalSet,
        esp_set: &ProposalSet,
        lifetimes: &ike::Lifetimes,
    ) -> Result<()> {
        if let Some(cap) = self.capability() {
            let d = self.defaults();
            for (field, set, allowed, works) in [
                ("ike", ike_set, cap.ike, d.ike),
                ("esp", esp_set, cap.esp, d.esp),
            ] {
                for t in proposal_tokens(set).into_iter().flatten() {
                    if !allowed.contains(&t.as_str()) {
                        bail!(
                            "{}",
                            t!(
                                "registry.router_cannot",
                                field = field,
                                router = self.product(),
                                token = t,
                                lacks = cap.lacks,
                                works = works
                            )
                        );
                    }
                }
            }
        }
        if let Some((lo, hi)) = self.lifetime_range() {
            for (field, v) in [
                ("ike-lifetime", lifetimes.ike),
                ("child-lifetime", lifetimes.child),
            ] {
                let v = v.as_secs();
                if !(lo..=hi).contains(&v) {
                    bail!(
                        "{}",
                        t!(
                            "registry.router_lifetime",
                            field = field,
                            router = self.product(),
                            min = lo,
                            max = hi,
                            value = v
                        )
                    );
                }
            }
        }
        Ok(())
    }
}

/// A validated proposal set's proposals as lists of lower-case tokens.
pub(crate) fn proposal_tokens(set: &ProposalSet) -> Vec<Vec<String>> {
    set.to_string()
        .split(',')
        .map(|p| {
            p.trim()
                .to_ascii_lowercase()
                .split('-')
                .map(|t| match t {
                    // The parser's aliases, under one name.
                    "aes128gcm128" => "aes128gcm16".to_string(),
                    "aes256gcm128" => "aes256gcm16".to_string(),
                    "sha2_256" => "sha256".to_string(),
                    "sha2_384" => "sha384".to_string(),
                    "sha2_512" => "sha512".to_string(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect()
}

/// The router's default proposals, parsed.
pub(crate) fn default_set(router: Router, protocol: Protocol) -> ProposalSet {
    let d = router.defaults();
    let s = match protocol {
        Protocol::Ike => d.ike,
        Protocol::Esp => d.esp,
    };
    ProposalSet::parse(s, protocol, false).expect("router defaults are valid proposals")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_router_accepts_its_own_defaults() {
        for r in [
            Router::Yamaha,
            Router::Cisco,
            Router::Fortigate,
            Router::Nec,
            Router::Strongswan,
            Router::Other,
        ] {
            let (i, e) = (default_set(r, Protocol::Ike), default_set(r, Protocol::Esp));
            r.check(&i, &e, &ike::Lifetimes::default()).unwrap();
            assert_eq!(Router::parse(r.as_str()), Some(r));
        }
        // YAMAHA's first (and only) key exchange is MODP-2048, so the hub
        // initiating to it needs no INVALID_KE_PAYLOAD round.
        assert_eq!(
            default_set(Router::Yamaha, Protocol::Ike).first_ke(),
            Some(ike::wire::KeId::Modp2048)
        );
    }
}
