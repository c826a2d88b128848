//! `renkei export`: a facility router's configuration, generated from the
//! registry so that it matches what the hub will accept.
//!
//! | format | file | follows |
//! |---|---|---|
//! | `swanctl` | [`swanctl`] | strongSwan's swanctl.conf |
//! | `yamaha` | [`yamaha`] | YAMAHA RTX reference §2c (route-based IKEv2, PSK) |
//! | `cisco` | [`cisco`] | Cisco IOS XE reference §2f (FlexVPN sVTI), §2e (certificates) |
//! | `fortigate` | [`fortigate`] | FortiGate reference §2b (route-based), §2c (certificates) |
//! | `nec` | [`nec`] | NEC IX reference §2d (IKEv2 tunnel interface, PSK) |
//!
//! The references (`shared/routers/*.md` of the design material) mark each
//! fact as verified (vendor manual, tested third-party configuration) or
//! inferred; a line the exports take from an inferred or unverified fact
//! carries a comment saying so, for the person at the router to check.
//! The router exports are route-based: the hub-side prefixes are routed
//! into the tunnel, so a default route there is refused (it would carry
//! the tunnel's own packets).

mod cisco;
mod fortigate;
mod nec;
mod swanctl;
mod yamaha;

pub(crate) use swanctl::swanctl;

use crate::registry::{CertRecord, Hub, Peer};
use anyhow::{bail, Result};
use ike::ts::Subnet;
use std::net::IpAddr;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// strongSwan's swanctl.conf.
    Swanctl,
    /// YAMAHA RTX / NVR / vRX command lines.
    Yamaha,
    /// Cisco IOS / IOS XE configuration (FlexVPN static VTI).
    Cisco,
    /// FortiGate CLI (FortiOS 6.2 to 7.6).
    Fortigate,
    /// NEC UNIVERGE IX configuration.
    Nec,
}

impl Format {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::Swanctl => "swanctl",
            Format::Yamaha => "yamaha",
            Format::Cisco => "cisco",
            Format::Fortigate => "fortigate",
            Format::Nec => "nec",
        }
    }
}

/// What the registry does not know about the facility's router, from
/// `renkei export`'s options.
#[derive(Debug, Clone, Default)]
pub(crate) struct Site {
    /// The router's WAN interface (Cisco, FortiGate, NEC).
    pub(crate) wan_interface: Option<String>,
    /// The router's LAN interface (FortiGate policies, Cisco and NEC
    /// unnumbered tunnel).
    pub(crate) lan_interface: Option<String>,
    /// The router's own address for IKE (YAMAHA `ipsec ike local address`).
    pub(crate) local_addr: Option<IpAddr>,
    /// The router masquerades (NAPT) its own WAN: IKE, NAT-T and ESP to
    /// the router itself are exempted. For YAMAHA, the NAT descriptor's
    /// number (0: not given, refused there).
    pub(crate) wan_nat: Option<u32>,
    /// Which of the hub's public addresses the router connects to.
    pub(crate) hub_addr: Option<IpAddr>,
}

/// Everything an export is made from.
pub(crate) struct Input<'a> {
    pub(crate) hub: &'a Hub,
    pub(crate) peer: &'a Peer,
    pub(crate) with_secret: bool,
    pub(crate) site: &'a Site,
    /// Certificates issued by the hub's CA (the facility's key type, and
    /// the hub's).
    pub(crate) certs: &'a [CertRecord],
}

/// The configuration in `format`.
pub(crate) fn render(format: Format, input: &Input<'_>) -> Result<String> {
    match format {
        Format::Swanctl => swanctl(input.hub, input.peer, input.with_secret),
        Format::Yamaha => yamaha::render(input),
        Format::Cisco => cisco::render(input),
        Format::Fortigate => fortigate::render(input),
        Format::Nec => nec::render(input),
    }
}

/// An IPv4 prefix length as the dotted netmask Cisco and FortiGate
/// configurations write (`/26` → `255.255.255.192`).
fn ipv4_mask(prefix: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

impl Input<'_> {
    /// The hub address the router connects to: `--hub-addr` (one of the
    /// hub's public addresses), else the first IPv4 one, else (where the
    /// router's export supports it) the first.
    fn hub_addr(&self, vendor: &str, ipv6: bool) -> Result<IpAddr> {
        // Router exports name the hub by address: the references give
        // tested configurations with an address only (a DNS name is used in
        // the swanctl export).
        let addrs: Vec<IpAddr> = self
            .hub
            .public_addrs
            .iter()
            .filter_map(|a| match a {
                crate::registry::PublicAddr::Ip(ip) => Some(*ip),
                crate::registry::PublicAddr::Name(_) => None,
            })
            .collect();
        if addrs.is_empty() {
            bail!("public-addr: the {vendor} export needs the hub's public IP address and the hub has none (set it with `renkei hub set --public-addr`)");
        }
        let addr = match self.site.hub_addr {
            Some(a) if addrs.contains(&a) => a,
            Some(a) => bail!(
                "hub-addr: {a} is not one of the hub's public addresses ({})",
                addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => addrs
                .iter()
                .copied()
                .find(IpAddr::is_ipv4)
                .unwrap_or(addrs[0]),
        };
        if addr.is_ipv6() && !ipv6 {
            bail!("hub-addr: the {vendor} export connects over IPv4 only (no tested IPv6 configuration is in its reference); the hub needs an IPv4 public address");
        }
        Ok(addr)
    }

    /// The hub-side prefixes, routed into the tunnel.
    fn hub_prefixes(&self, vendor: &str, ipv6: bool) -> Result<Vec<Subnet>> {
        let p = self.peer;
        for s in &p.local_ts {
            if s.prefix() == 0 {
                bail!(
                    "local-ts: the hub-side prefixes include {s} (everything); the {vendor} export routes them into the tunnel, which would carry the tunnel's own packets — name the hub-side networks with `renkei peer set {} --local-ts CIDR,…`",
                    p.name
                );
            }
            if s.addr().is_ipv6() && !ipv6 {
                bail!("local-ts: {s} is IPv6; the {vendor} export carries IPv4 only (no tested IPv6 configuration is in its reference)");
            }
        }
        if !ipv6 {
            if let Some(s) = p.remote_ts.iter().find(|s| s.addr().is_ipv6()) {
                bail!("remote-ts: {s} is IPv6; the {vendor} export carries IPv4 only (no tested IPv6 configuration is in its reference)");
            }
        }
        Ok(p.local_ts.clone())
    }

    /// The pre-shared key as text a router's CLI takes: printable ASCII
    /// without spaces or quotes. `None` with `--with-secret` off.
    fn psk_text(&self, vendor: &str) -> Result<Option<String>> {
        let ike::PeerAuth::Psk(k) = &self.peer.auth else {
            return Ok(None);
        };
        if !self.with_secret {
            return Ok(None);
        }
        if !k
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b'?'))
        {
            bail!(
                "psk: the facility's key has bytes the {vendor} command line cannot take as text (spaces, quotes, '?', '\\' or non-ASCII); give it a printable key with `renkei peer set {} --psk-file FILE`",
                self.peer.name
            );
        }
        Ok(Some(String::from_utf8_lossy(k).into_owned()))
    }

    /// The newest unrevoked certificate of `name` (the facility, or "hub").
    fn cert_of(&self, name: &str) -> Option<&CertRecord> {
        self.certs
            .iter()
            .rev()
            .find(|c| c.name == name && c.revoked.is_none())
    }

    /// The facility's certificate key type, refusing when none is issued.
    fn facility_key_type(&self) -> Result<&str> {
        let name = &self.peer.name;
        self.cert_of(name).map(|c| c.key_type.as_str()).ok_or_else(|| {
            anyhow::anyhow!("cert: no certificate has been issued to '{name}' yet (run `renkei cert issue {name} --out DIR` first: the export names its key type)")
        })
    }

    /// The hub certificate's key type (the CA's, `init --ca-key`).
    fn hub_key_type(&self) -> &str {
        self.cert_of("hub")
            .map_or("ecdsa-p384", |c| c.key_type.as_str())
    }
}

/// One proposal's algorithms, by strongSwan token.
#[derive(Debug, Default)]
struct Suite {
    encr: Vec<String>,
    integ: Vec<String>,
    prf: Vec<String>,
    ke: Vec<String>,
}

impl Suite {
    fn is_aead(&self) -> bool {
        self.encr.iter().any(|e| e.contains("gcm"))
    }
}

/// The proposals of a validated set, token by token.
fn suites(set: &ike::proposal::ProposalSet) -> Vec<Suite> {
    crate::router::proposal_tokens(set)
        .into_iter()
        .map(|tokens| {
            let mut s = Suite::default();
            for t in tokens {
                let v = if t.starts_with("aes") || t.starts_with("camellia") {
                    &mut s.encr
                } else if t.starts_with("prf") {
                    &mut s.prf
                } else if t.starts_with("sha") {
                    &mut s.integ
                } else if t.starts_with("ecp") || t.starts_with("modp") || t == "x25519" {
                    &mut s.ke
                } else {
                    continue; // esn / noesn
                };
                v.push(t);
            }
            s
        })
        .collect()
}

/// The IANA number of a key exchange group (Cisco `group`, FortiGate
/// `dhgrp`).
fn group_number(ke: &str) -> Option<u16> {
    Some(match ke {
        "modp2048" => 14,
        "modp3072" => 15,
        "modp4096" => 16,
        "ecp256" => 19,
        "ecp384" => 20,
        "ecp521" => 21,
        _ => return None,
    })
}

/// Refuses a facility whose proposals, lifetimes or authentication the
/// format's router cannot take (a facility registered for another router).
fn check_router(router: crate::router::Router, input: &Input<'_>) -> Result<()> {
    let p = input.peer;
    let checked = (|| {
        if matches!(p.auth, ike::PeerAuth::Cert) {
            router.check_cert()?;
        }
        router.check(&p.ike, &p.esp, &p.lifetimes)
    })();
    checked.map_err(|e| {
        anyhow::anyhow!(
            "{e} (the facility is registered for router '{}'; `renkei peer set {} --router {}` sets that router's working defaults)",
            p.router.as_str(),
            p.name,
            router.as_str()
        )
    })
}

/// The export's first line: what it is and where it came from.
/// With a display name or medical institution code, a second comment line
/// gives them (the vendors' comment lines take any text; nothing else in
/// the configuration depends on them).
fn header(input: &Input<'_>, comment: &str, what: &str) -> String {
    let mut out = format!(
        "{comment} {what} for facility '{}', exported by renkei {} from hub {}.\n",
        input.peer.name,
        env!("CARGO_PKG_VERSION"),
        input.hub.id
    );
    let label = &input.peer.label;
    if let Some(d) = &label.display_name {
        out.push_str(&format!("{comment} {d}\n"));
    }
    if let Some(c) = &label.medical_code {
        out.push_str(&format!("{comment} medical institution code {c}\n"));
    }
    out
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    #[test]
    fn ipv4_masks_at_both_ends_and_between() {
        for (len, mask) in [
            (0, "0.0.0.0"),
            (16, "255.255.0.0"),
            (26, "255.255.255.192"),
            (32, "255.255.255.255"),
        ] {
            assert_eq!(super::ipv4_mask(len).to_string(), mask);
        }
    }
}
