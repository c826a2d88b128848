//! `renkei export --format yamaha`: command lines for a YAMAHA RTX / NVR /
//! vRX, following the YAMAHA RTX reference §2c (a route-based IKEv2 tunnel
//! with a pre-shared key; every line is in YAMAHA's command reference or in
//! the configurations tested on RTX840/RTX1300 Rev.23 and RTX830/RTX1210).
//!
//! Lines the RTX must always carry (reference §4): `ipsec ike version … 2`
//! (the default is IKEv1 only), `proposal-limitation on` with explicit
//! encryption, hash, group and `sa policy` (otherwise it offers DES and
//! MD5 too), `nat-traversal … on` (the hub sends ESP in UDP), `keepalive
//! use … on rfc4306` (`auto` never sends), `pfs on`, `local name` /
//! `remote name` with an explicit type (IKEv2 matches value and type),
//! `ipsec auto refresh on` (global default off: it would never initiate),
//! the routes to the hub-side networks, and with `--wan-nat` the NAT
//! descriptor entries that keep IKE, NAT-T and ESP to the router itself out
//! of its masquerade.

use super::{check_router, header, suites, Input};
use crate::router::Router;
use anyhow::{bail, Result};
use pki::Identity;
use std::fmt::Write as _;

/// An identity as `ipsec ike local name` / `remote name` take it.
fn name(id: &Identity, which: &str) -> Result<String> {
    Ok(match id {
        Identity::Fqdn(f) => format!("{f} fqdn"),
        Identity::Addr(a) if a.is_ipv4() => format!("{a} ipv4-addr"),
        Identity::Addr(a) => format!("{a} ipv6-addr"),
        Identity::Email(e) => format!("{e} user-fqdn"),
        Identity::KeyId(k) if k.iter().all(u8::is_ascii_graphic) => {
            format!("{} key-id", String::from_utf8_lossy(k))
        }
        other => bail!("{which}: the RTX cannot be given {other} as an IKE name (it takes an FQDN, address, user@domain or printable key ID)"),
    })
}

fn encryption(token: &str) -> &'static str {
    if token == "aes128" {
        "aes-cbc"
    } else {
        "aes256-cbc"
    }
}

pub(super) fn render(input: &Input<'_>) -> Result<String> {
    check_router(Router::Yamaha, input)?;
    let (p, site) = (input.peer, input.site);
    let hub = input.hub_addr("YAMAHA", false)?;
    let routes = input.hub_prefixes("YAMAHA", false)?;
    let local = name(&p.id, "id")?;
    let remote = name(&input.hub.id, "hub-id")?;
    if site.wan_nat == Some(0) {
        bail!("wan-nat: on a YAMAHA RTX give the number of the NAT descriptor that masquerades its WAN (--wan-nat N, as in `nat descriptor type N masquerade`)");
    }
    if site.wan_nat.is_some() && site.local_addr.is_none() {
        bail!("local-addr: --wan-nat on a YAMAHA RTX needs the router's own address (--local-addr): the NAT descriptor's static entries name it");
    }
    // One combination (proposal-limitation on): the first of each kind;
    // the router's checks let only what the RTX has through.
    let ike_suites = suites(&p.ike);
    let esp_suites = suites(&p.esp);
    let (Some(ike_s), Some(esp_s)) = (ike_suites.first(), esp_suites.first()) else {
        bail!("ike: the facility has no proposal");
    };
    let first = |v: &[String], what: &str| -> Result<String> {
        v.first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{what}: the first proposal names none"))
    };
    let ike_enc = encryption(&first(&ike_s.encr, "ike")?);
    let ike_hash = first(&ike_s.integ, "ike")?;
    let group = first(&ike_s.ke, "ike")?;
    let esp_enc = encryption(&first(&esp_s.encr, "esp")?);
    let esp_auth = format!("{}-hmac", first(&esp_s.integ, "esp")?);
    let pfs = if esp_s.ke.is_empty() { "off" } else { "on" };
    let l = &p.lifetimes;

    let mut o = header(input, "#", "YAMAHA RTX configuration");
    o.push_str("# Follows the renkei YAMAHA RTX reference §2c (route-based IKEv2, PSK).\n");
    o.push_str("# Paste in administrator mode (`administrator`), check with `show ipsec sa`\n");
    o.push_str("# and `show status tunnel 1`, then `save`. Tunnel 1 and policy 101 are\n");
    o.push_str("# examples: change them if the router already uses them.\n");
    o.push_str("# Certificates: not exported for the RTX (no tested certificate\n");
    o.push_str("# configuration is known); the tunnel uses the pre-shared key.\n");
    o.push_str("tunnel select 1\n");
    o.push_str(" ipsec tunnel 101\n");
    let _ = writeln!(o, "  ipsec sa policy 101 1 esp {esp_enc} {esp_auth}");
    o.push_str("  ipsec ike version 1 2\n");
    o.push_str("  ipsec ike auth method 1 pre-shared-key\n");
    match input.psk_text("YAMAHA")? {
        Some(k) => {
            let _ = writeln!(o, "  ipsec ike pre-shared-key 1 text {k}");
        }
        None => {
            o.push_str("# Type the pre-shared key given to the hub for this facility\n");
            o.push_str("# (or export with --with-secret):\n");
            o.push_str("#  ipsec ike pre-shared-key 1 text <pre-shared key>\n");
        }
    }
    if let Some(a) = site.local_addr {
        let _ = writeln!(o, "  ipsec ike local address 1 {a}");
    }
    let _ = writeln!(o, "  ipsec ike local name 1 {local}");
    let _ = writeln!(o, "  ipsec ike remote address 1 {hub}");
    let _ = writeln!(o, "  ipsec ike remote name 1 {remote}");
    o.push_str("  ipsec ike proposal-limitation 1 on\n");
    let _ = writeln!(o, "  ipsec ike encryption 1 {ike_enc}");
    let _ = writeln!(o, "  ipsec ike hash 1 {ike_hash}");
    let _ = writeln!(o, "  ipsec ike group 1 {group}");
    let _ = writeln!(o, "  ipsec ike pfs 1 {pfs}");
    let _ = writeln!(o, "  ipsec ike duration ike-sa 1 {}", l.ike.as_secs());
    let _ = writeln!(o, "  ipsec ike duration child-sa 1 {}", l.child.as_secs());
    o.push_str("  ipsec ike nat-traversal 1 on\n");
    o.push_str("  ipsec ike keepalive use 1 on rfc4306 10 6\n");
    o.push_str("  ipsec ike keepalive log 1 off\n");
    o.push_str("# INFERRED (reference §4.9): CREATE_CHILD_SA for every rekey; RTX1210 needs\n");
    o.push_str("# Rev.14.01.11 or later, other models are expected to have it on current\n");
    o.push_str("# firmware: leave this line out if the router refuses it.\n");
    o.push_str("  ipsec ike child-exchange type 1 2\n");
    o.push_str(" ip tunnel tcp mss limit auto\n");
    o.push_str(" tunnel enable 1\n");
    o.push_str("ipsec auto refresh on\n");
    for r in &routes {
        let _ = writeln!(o, "ip route {r} gateway tunnel 1");
    }
    if let (Some(n), Some(own)) = (site.wan_nat, site.local_addr) {
        let _ = writeln!(
            o,
            "# The RTX masquerades its WAN with NAT descriptor {n}: IKE, NAT-T and ESP\n# to the router itself stay out of it (entries 1-3: renumber if taken)."
        );
        let _ = writeln!(o, "nat descriptor masquerade static {n} 1 {own} udp 500");
        let _ = writeln!(o, "nat descriptor masquerade static {n} 2 {own} udp 4500");
        let _ = writeln!(o, "nat descriptor masquerade static {n} 3 {own} esp");
    }
    Ok(o)
}
