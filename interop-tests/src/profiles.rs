//! Router profiles: strongSwan configured to behave on the wire as the
//! routers hospitals own do, as far as strongSwan can.
//!
//! Each [`RouterProfile`] is data taken from the vendor notes in
//! `../shared/routers/` (the section each value follows is named next to
//! it): the proposals the router sends with the configuration `renkei
//! export` gives it, its identity type, whether it proposes 0.0.0.0/0
//! selectors (route-based tunnels), its default lifetimes and rekey point,
//! its liveness interval, whether it fragments IKE messages (RFC 7383),
//! and whether it can authenticate with a certificate.
//!
//! What strongSwan cannot imitate: a router's own retry timers, its
//! exact payload order and vendor IDs, YAMAHA's `child-exchange type 1`
//! (re-running IKE_AUTH instead of CREATE_CHILD_SA), Cisco's on-demand
//! DPD (strongSwan probes after `dpd_delay` of silence, as on-idle does).

use crate::{Facility, Role, SITE_OUTER};

/// The identity type a router sends in IDi/IDr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdType {
    /// ID_FQDN (`kyoto.example`).
    Fqdn,
    /// ID_IPV4_ADDR: the router's own outer address.
    Ipv4Addr,
}

/// How a router behaves on the wire.
#[derive(Debug, Clone, Copy)]
pub struct RouterProfile {
    /// The `--router` name (`yamaha`, `cisco`, `fortigate`, `nec`).
    pub name: &'static str,
    /// Where the values come from.
    pub reference: &'static str,
    /// IKE proposal (strongSwan syntax): what the router offers with the
    /// exported configuration.
    pub ike: &'static str,
    /// ESP proposal; its key exchange method means PFS on rekey.
    pub esp: &'static str,
    pub id: IdType,
    /// Proposes 0.0.0.0/0 ↔ 0.0.0.0/0 (a route-based tunnel interface);
    /// otherwise its LAN and the hub's prefixes.
    pub route_based: bool,
    /// Default IKE SA and Child SA lifetimes (seconds) and the share of a
    /// lifetime after which the router rekeys (percent).
    pub ike_lifetime: u32,
    pub child_lifetime: u32,
    pub rekey_percent: u32,
    /// Seconds of silence after which it sends an empty INFORMATIONAL.
    pub liveness: u32,
    /// Fragments large IKE messages (RFC 7383).
    pub ike_fragmentation: bool,
    /// Can authenticate with a certificate (IKEv2).
    pub certificates: bool,
}

/// YAMAHA RTX with `proposal-limitation on`, aes256-cbc/sha256/modp2048,
/// `sa policy … esp aes256-cbc sha256-hmac`, `pfs on`, `local name …
/// fqdn`, `keepalive use … on rfc4306 10 6`, default `duration`.
pub const YAMAHA_RTX: RouterProfile = RouterProfile {
    name: "yamaha",
    reference: "../shared/routers/yamaha-rtx.md §2c, §3 (ike duration, keepalive use, group), §4.2, §4.7, §4.8, §4.14",
    ike: "aes256-sha256-modp2048",
    esp: "aes256-sha256-modp2048",
    id: IdType::Fqdn,
    // §4.14: with `ipsec tunnel` the RTX is expected to negotiate 0/0
    // [inferred there]; the hub must accept it either way.
    route_based: true,
    // §3: `ipsec ike duration` default 28800 s for both, rekey at 75 %.
    ike_lifetime: 28800,
    child_lifetime: 28800,
    rekey_percent: 75,
    // §4.7: an empty INFORMATIONAL every 10 s.
    liveness: 10,
    // No IKE fragmentation command exists on the RTX (§3).
    ike_fragmentation: false,
    certificates: true,
};

/// Cisco IOS-XE with the sVTI template (`tunnel mode ipsec ipv4`):
/// explicit proposal aes-cbc-256/sha256/group 14, transform set esp-aes 256
/// esp-sha256-hmac, `set pfs group14`, `identity local fqdn`, `dpd 10 3`.
pub const CISCO_IOSXE: RouterProfile = RouterProfile {
    name: "cisco",
    reference: "../shared/routers/cisco-iosxe.md §2f, §3, §4.3",
    ike: "aes256-sha256-modp2048",
    esp: "aes256-sha256-modp2048",
    id: IdType::Fqdn,
    // §4.3: the sVTI negotiates 0.0.0.0/0 selectors.
    route_based: true,
    // §2f: `lifetime 14400`, `set security-association lifetime seconds
    // 3600`; IOS rekeys ahead of expiry (90 % here).
    ike_lifetime: 14400,
    child_lifetime: 3600,
    rekey_percent: 90,
    // §2f: `dpd 10 3 on-demand`.
    liveness: 10,
    // `crypto ikev2 fragmentation` is not in the template: off.
    ike_fragmentation: false,
    certificates: true,
};

/// FortiGate phase1-/phase2-interface: `proposal aes256-sha256`, `dhgrp
/// 14`, `pfs enable`, `localid-type fqdn`, `dpd on-idle`, retry interval
/// 10 s, 0.0.0.0/0 subnets.
pub const FORTIGATE: RouterProfile = RouterProfile {
    name: "fortigate",
    reference: "../shared/routers/fortigate.md §2b, §3, §4.5",
    ike: "aes256-sha256-modp2048",
    esp: "aes256-sha256-modp2048",
    id: IdType::Fqdn,
    // §2b, §4.5: phase 2 src/dst-subnet default 0.0.0.0 0.0.0.0.
    route_based: true,
    // §2b: `keylife 14400`, `keylifeseconds 3600`.
    ike_lifetime: 14400,
    child_lifetime: 3600,
    rekey_percent: 90,
    // §2b: `dpd on-idle`, `dpd-retryinterval 10`.
    liveness: 10,
    // `set fragmentation` is not in the exported template: off.
    ike_fragmentation: false,
    certificates: true,
};

/// NEC UNIVERGE IX: `tunnel mode ipsec-ikev2` with `sa-proposal enc
/// aes-cbc-256`, `integrity sha2-256`, `dh 2048-bit`, `child-pfs
/// 2048-bit`, `psk id ipv4 <own address>`, `dpd interval 10`.
pub const NEC_IX: RouterProfile = RouterProfile {
    name: "nec",
    reference: "../shared/routers/nec-ix.md §2a, §2b, §2d",
    ike: "aes256-sha256-modp2048",
    esp: "aes256-sha256-modp2048",
    // §2a/§2b, the tested templates: `ikev2 authentication psk id ipv4
    // <address>` (§2d's `id fqdn` is only partly verified), so this
    // profile also exercises ID_IPV4_ADDR.
    id: IdType::Ipv4Addr,
    // A tunnel interface (route-based).
    route_based: true,
    // §2d: `sa-lifetime 14400`, `child-lifetime 3600`.
    ike_lifetime: 14400,
    child_lifetime: 3600,
    rekey_percent: 90,
    // §2a: `dpd interval 10`.
    liveness: 10,
    ike_fragmentation: false,
    // N1: PSK only for IKEv2.
    certificates: false,
};

/// Every router profile.
pub const ALL: [&RouterProfile; 4] = [&YAMAHA_RTX, &CISCO_IOSXE, &FORTIGATE, &NEC_IX];

/// How the facility authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Psk,
    /// A certificate from the hub's CA (ECDSA P-256).
    Cert,
}

impl RouterProfile {
    /// A strongSwan facility behaving as this router, `role` saying who
    /// initiates, with the router's default lifetimes. The hub is given
    /// the same proposals (`--ike`, `--esp`), so it rekeys with PFS too.
    pub fn facility(&self, role: Role, auth: Auth) -> Facility {
        self.facility_with_lifetimes(role, auth, self.ike_lifetime, self.child_lifetime)
    }

    /// As [`RouterProfile::facility`], with lifetimes of `ike` and `child`
    /// seconds (tests shorten them to see rekeys), rekeyed at the router's
    /// share of each.
    pub fn facility_with_lifetimes(
        &self,
        role: Role,
        auth: Auth,
        ike: u32,
        child: u32,
    ) -> Facility {
        assert!(
            auth == Auth::Psk || self.certificates,
            "{} cannot authenticate with a certificate",
            self.name
        );
        let mut f = Facility::new(self.ike, self.esp, role);
        let rekey = |life: u32| life * self.rekey_percent / 100;
        f.swan_conn = vec![
            format!("rekey_time = {}s", rekey(ike)),
            // A router rekeys its IKE SA; it does not reauthenticate.
            "reauth_time = 0".into(),
            format!("over_time = {}s", ike - rekey(ike)),
            format!("dpd_delay = {}s", self.liveness),
            format!(
                "fragmentation = {}",
                if self.ike_fragmentation { "yes" } else { "no" }
            ),
            // None of these routers speaks MOBIKE.
            "mobike = no".into(),
        ];
        f.swan_child = vec![
            format!("rekey_time = {}s", rekey(child)),
            format!("life_time = {}s", child),
            // A route-based router keeps its tunnel: it comes back up.
            "dpd_action = restart".into(),
            "close_action = none".into(),
        ];
        if self.route_based {
            f.swan_local_ts = Some("0.0.0.0/0".into());
            f.swan_remote_ts = Some("0.0.0.0/0".into());
        }
        if self.id == IdType::Ipv4Addr {
            f.id = Some(SITE_OUTER.into());
        }
        if auth == Auth::Cert {
            f.cert = Some("ecdsa-p256".into());
        }
        f.hub_peer_args = vec![
            "--ike".into(),
            self.ike.into(),
            "--esp".into(),
            self.esp.into(),
        ];
        f
    }
}
