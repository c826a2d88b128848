//! `renkei export --format nec`: NEC UNIVERGE IX configuration, following
//! the NEC IX reference §2d. NEC's IKEv2 command reference could not be
//! read, so only the tested examples (IX2106/IX3315 Ver.10.2.16, IX2215
//! Ver.10.1.16) and real configurations support these lines; each line
//! they do not fully support is preceded by a `! CHECK ON THE ROUTER:`
//! comment saying what is unverified, for the person at the router.

use super::{check_router, header, suites, Input};
use crate::router::Router;
use anyhow::{bail, Result};
use pki::Identity;
use std::fmt::Write as _;

const CHECK: &str = "! CHECK ON THE ROUTER:";

/// `id <type> <value>` for an identity, and whether its type keyword is
/// unverified (reference §3: `ipv4` and `ipv6` are tested, `keyid` is in
/// real configurations, `fqdn` in none).
fn id(identity: &Identity, which: &str) -> Result<(String, bool)> {
    Ok(match identity {
        Identity::Addr(a) if a.is_ipv4() => (format!("ipv4 {a}"), false),
        Identity::Addr(a) => (format!("ipv6 {a}"), false),
        Identity::Fqdn(f) => (format!("fqdn {f}"), true),
        Identity::KeyId(k) if k.iter().all(u8::is_ascii_graphic) => {
            (format!("keyid {}", String::from_utf8_lossy(k)), false)
        }
        other => bail!("{which}: the NEC IX export cannot use {other} as an identity (it takes an address, an FQDN or a printable key ID)"),
    })
}

fn encryption(token: &str) -> &'static str {
    match token {
        "aes128" => "aes-cbc-128",
        "aes256" => "aes-cbc-256",
        "aes128gcm16" => "aes-gcm-128-16",
        _ => "aes-gcm-256-16",
    }
}

fn group(token: &str) -> &'static str {
    if token == "modp3072" {
        "3072-bit"
    } else {
        "2048-bit"
    }
}

fn integrity(token: &str) -> String {
    format!(
        "sha2-{}",
        token.trim_start_matches("prf").trim_start_matches("sha")
    )
}

pub(super) fn render(input: &Input<'_>) -> Result<String> {
    check_router(Router::Nec, input)?;
    let (p, site) = (input.peer, input.site);
    // Over IPv6 too: N6 ran an IX2215 against strongSwan over IPv6.
    let hub = input.hub_addr("NEC IX", true)?;
    let routes = input.hub_prefixes("NEC IX", true)?;
    let (own_id, own_unverified) = id(&p.id, "id")?;
    let (hub_id, hub_unverified) = id(&input.hub.id, "hub-id")?;
    let wan = site.wan_interface.as_deref().unwrap_or("GigaEthernet0.1");
    let lan = site.lan_interface.as_deref().unwrap_or("GigaEthernet1.0");
    let ike_suites = suites(&p.ike);
    let esp_suites = suites(&p.esp);
    let (Some(ike_s), Some(esp_s)) = (ike_suites.first(), esp_suites.first()) else {
        bail!("ike: the facility has no proposal");
    };
    let l = &p.lifetimes;
    let psk = input.psk_text("NEC IX")?;
    let key = |o: &mut String, id: &str, unverified: bool| {
        if unverified {
            let _ = writeln!(
                o,
                "{CHECK} the 'fqdn' identity keyword is in no tested example"
            );
        }
        match &psk {
            Some(k) => {
                let _ = writeln!(o, "ikev2 authentication psk id {id} key char {k}");
            }
            None => {
                let _ = writeln!(
                    o,
                    "! type the pre-shared key given to the hub (or export with --with-secret):\n!ikev2 authentication psk id {id} key char <pre-shared key>"
                );
            }
        }
    };

    let mut o = header(input, "!", "NEC UNIVERGE IX configuration");
    o.push_str("! Follows the renkei NEC IX reference §2d (IKEv2 tunnel interface, PSK).\n");
    o.push_str("! NEC's IKEv2 command reference could not be read: lines after a\n");
    o.push_str("! \"CHECK ON THE ROUTER\" comment are unverified. Paste in `configure` mode;\n");
    o.push_str("! check with `show ikev2 sa` and `show ikev2 child-sa`, then `write memory`.\n");
    let _ = writeln!(
        o,
        "! Interfaces: WAN {wan}, LAN {lan} (change with --wan-interface / --lan-interface)."
    );
    o.push_str("! Certificates: not exported for the IX (IX-R/IX-V support only PSK for\n");
    o.push_str("! IKEv2; no source shows certificates on other models).\n");
    o.push_str("! The key is registered under both identities (the IX picks it by ID).\n");
    key(&mut o, &hub_id, hub_unverified);
    key(&mut o, &own_id, own_unverified);
    o.push_str("!\nikev2 profile renkei\n");
    let enc: Vec<_> = ike_s.encr.iter().map(|e| encryption(e)).collect();
    let _ = writeln!(o, " sa-proposal enc {}", enc.join(" "));
    let prfs: Vec<String> = if ike_s.is_aead() {
        ike_s.prf.iter().map(|x| integrity(x)).collect()
    } else {
        let integ: Vec<_> = ike_s.integ.iter().map(|x| integrity(x)).collect();
        let _ = writeln!(o, " sa-proposal integrity {}", integ.join(" "));
        integ
    };
    let _ = writeln!(
        o,
        "{CHECK} 'sa-proposal prf' is only in a real configuration, not a tested one"
    );
    let _ = writeln!(o, " sa-proposal prf {}", prfs.join(" "));
    let dh: Vec<_> = ike_s.ke.iter().map(|k| group(k)).collect();
    let _ = writeln!(o, " sa-proposal dh {}", dh.join(" "));
    let enc: Vec<_> = esp_s.encr.iter().map(|e| encryption(e)).collect();
    let _ = writeln!(o, " child-proposal enc {}", enc.join(" "));
    if !esp_s.is_aead() {
        let integ: Vec<_> = esp_s.integ.iter().map(|x| integrity(x)).collect();
        let _ = writeln!(o, " child-proposal integrity {}", integ.join(" "));
    }
    match esp_s.ke.first() {
        Some(k) => {
            let _ = writeln!(o, " child-pfs {}", group(k));
        }
        None => o.push_str(" child-pfs off\n"),
    }
    let _ = writeln!(o, " sa-lifetime {}", l.ike.as_secs());
    let _ = writeln!(o, " child-lifetime {}", l.child.as_secs());
    o.push_str(" dpd interval 10\n");
    let _ = writeln!(
        o,
        "{CHECK} this spelling of the own identity varies between firmware versions\n!   (also seen: local-authentication id {own_id})"
    );
    let _ = writeln!(o, " local-authentication psk id {own_id}");
    o.push_str(" ipsec-mode tunnel\n!\n");
    if site.wan_nat.is_some() {
        o.push_str("! The IX masquerades its WAN: IKE, NAT-T and ESP to the router itself\n! stay out of its NAPT.\n");
        let _ = writeln!(o, "interface {wan}");
        let _ = writeln!(o, " ip napt static {wan} udp 500");
        let _ = writeln!(o, " ip napt static {wan} udp 4500");
        let _ = writeln!(o, " ip napt static {wan} 50");
        o.push_str("!\n");
    }
    o.push_str("interface Tunnel0.0\n tunnel mode ipsec-ikev2\n");
    let _ = writeln!(o, " ip unnumbered {lan}");
    o.push_str(" ip tcp adjust-mss auto\n ikev2 binding renkei\n ikev2 connect-type auto\n");
    o.push_str(" ikev2 ipsec pre-fragment\n");
    let _ = writeln!(
        o,
        "{CHECK} what 'force' does is undocumented (seen in configurations through CGNAT);\n!   NAT traversal for IKEv2 needs firmware 9.2 or later"
    );
    o.push_str(" ikev2 nat-traversal keepalive 20 force\n");
    let _ = writeln!(o, " ikev2 outgoing-interface {wan}");
    if hub_unverified {
        let _ = writeln!(
            o,
            "{CHECK} the 'fqdn' identity keyword is in no tested example"
        );
    }
    let _ = writeln!(o, " ikev2 peer {hub} authentication psk id {hub_id}");
    o.push_str(" no shutdown\n!\n");
    for r in &routes {
        if r.addr().is_ipv4() {
            let _ = writeln!(o, "ip route {r} Tunnel0.0");
        } else {
            let _ = writeln!(
                o,
                "{CHECK} an IPv6 route into an IKEv2 tunnel is in no example"
            );
            let _ = writeln!(o, "ipv6 route {r} Tunnel0.0");
        }
    }
    Ok(o)
}
