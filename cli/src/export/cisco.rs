//! `renkei export --format cisco`: IOS / IOS XE configuration, following
//! the Cisco reference §2f (FlexVPN static VTI with PSK; tested sequences
//! on IOS XE 17.03 and IOS 15.4) and §2e for certificates.
//!
//! Everything is explicit (reference §4): an IKEv2 proposal is only used
//! when a policy names it, and the default proposals and transform set
//! differ between releases. The tunnel is pure IPsec (`tunnel mode ipsec
//! ipv4`, 0.0.0.0/0 selectors the hub narrows), UDP encapsulation is
//! forced from the first packet (`nat force-encap`), and the profile
//! checks the hub's liveness (`dpd`).

use super::{check_router, group_number, header, suites, Input};
use crate::router::Router;
use anyhow::{bail, Result};
use pki::Identity;
use std::fmt::Write as _;

/// `match identity remote …` for the hub's identity.
fn remote_match(id: &Identity) -> Result<String> {
    Ok(match id {
        Identity::Fqdn(f) => format!("fqdn {f}"),
        Identity::Addr(a) if a.is_ipv4() => format!("address {a} 255.255.255.255"),
        Identity::Email(e) => format!("email {e}"),
        other => bail!("hub-id: the Cisco export cannot match the hub's identity {other} (it takes an FQDN, IPv4 address or user@domain)"),
    })
}

/// `identity local …` for the facility's identity.
fn local_identity(id: &Identity) -> Result<String> {
    Ok(match id {
        Identity::Fqdn(f) => format!("fqdn {f}"),
        Identity::Addr(a) if a.is_ipv4() => format!("address {a}"),
        Identity::Email(e) => format!("email {e}"),
        Identity::KeyId(k) if k.iter().all(u8::is_ascii_graphic) => {
            format!("key-id {}", String::from_utf8_lossy(k))
        }
        Identity::Dn(_) => "dn".to_string(),
        other => bail!("id: the Cisco export cannot send {other} as the router's identity"),
    })
}

fn encryption(token: &str) -> &'static str {
    match token {
        "aes128" => "aes-cbc-128",
        "aes256" => "aes-cbc-256",
        "aes128gcm16" => "aes-gcm-128",
        _ => "aes-gcm-256",
    }
}

/// `authentication … rsa-sig | ecdsa-sig` for a certificate key type.
fn signature(key_type: &str, whose: &str) -> Result<&'static str> {
    Ok(match key_type {
        t if t.starts_with("rsa") => "rsa-sig",
        t if t.starts_with("ecdsa") => "ecdsa-sig",
        t => bail!("cert: the {whose} certificate's key is {t}; a Cisco router verifies RSA and ECDSA signatures only"),
    })
}

pub(super) fn render(input: &Input<'_>) -> Result<String> {
    check_router(Router::Cisco, input)?;
    let (p, site) = (input.peer, input.site);
    let hub = input.hub_addr("Cisco", false)?;
    let routes = input.hub_prefixes("Cisco", false)?;
    let remote = remote_match(&input.hub.id)?;
    let local = local_identity(&p.id)?;
    let cert = matches!(p.auth, ike::PeerAuth::Cert);
    let wan = site
        .wan_interface
        .as_deref()
        .unwrap_or("GigabitEthernet0/0/0");
    let lan = site
        .lan_interface
        .as_deref()
        .unwrap_or("GigabitEthernet0/0/1");
    let l = &p.lifetimes;

    let mut o = header(input, "!", "Cisco IOS XE configuration");
    o.push_str("! Follows the renkei Cisco IOS XE reference §2f (FlexVPN static VTI)");
    o.push_str(if cert {
        " and §2e (certificates).\n"
    } else {
        ".\n"
    });
    o.push_str("! Paste in configuration mode (`configure terminal`), then `end` and\n");
    o.push_str("! `write memory`; check with `show crypto ikev2 sa` and `show crypto ipsec sa`.\n");
    let _ = writeln!(
        o,
        "! Interfaces: WAN {wan}, LAN {lan} (change with --wan-interface / --lan-interface)."
    );
    if site.wan_nat.is_some() {
        o.push_str("! The router's own NAT needs no exemption: IKE and ESP leave from its WAN\n");
        o.push_str("! address in UDP 4500 from the first packet (nat force-encap).\n");
    }
    o.push_str("!\n");
    let mut names = Vec::new();
    for (i, s) in suites(&p.ike).iter().enumerate() {
        let name = format!("RENKEI-IKE-{}", i + 1);
        let _ = writeln!(o, "crypto ikev2 proposal {name}");
        let enc: Vec<_> = s.encr.iter().map(|e| encryption(e)).collect();
        let _ = writeln!(o, " encryption {}", enc.join(" "));
        if !s.is_aead() {
            let _ = writeln!(o, " integrity {}", s.integ.join(" "));
        }
        if !s.prf.is_empty() {
            let prf: Vec<_> = s.prf.iter().map(|x| x.trim_start_matches("prf")).collect();
            let _ = writeln!(o, " prf {}", prf.join(" "));
        }
        let groups: Vec<_> =
            s.ke.iter()
                .filter_map(|k| group_number(k))
                .map(|g| g.to_string())
                .collect();
        let _ = writeln!(o, " group {}", groups.join(" "));
        o.push_str("!\n");
        names.push(name);
    }
    o.push_str("crypto ikev2 policy RENKEI-IKE\n match fvrf any\n");
    for n in &names {
        let _ = writeln!(o, " proposal {n}");
    }
    o.push_str("!\n");
    if cert {
        o.push_str("! The hub's CA (ca.pem from `renkei cert issue`), and this router's key and\n");
        o.push_str("! certificate: `crypto pki import RENKEI-CA pem terminal` and paste them.\n");
        o.push_str(
            "crypto pki trustpoint RENKEI-CA\n enrollment terminal\n revocation-check none\n!\n",
        );
    } else {
        o.push_str("crypto ikev2 keyring RENKEI-KR\n peer RENKEI-HUB\n");
        let _ = writeln!(o, "  address {hub}");
        match input.psk_text("Cisco")? {
            Some(k) => {
                let _ = writeln!(o, "  pre-shared-key local {k}");
                let _ = writeln!(o, "  pre-shared-key remote {k}");
            }
            None => {
                o.push_str("! Type the pre-shared key given to the hub for this facility\n");
                o.push_str("! (or export with --with-secret):\n");
                o.push_str("!  pre-shared-key local <pre-shared key>\n");
                o.push_str("!  pre-shared-key remote <pre-shared key>\n");
            }
        }
        o.push_str("!\n");
    }
    o.push_str("crypto ikev2 profile RENKEI-PROF\n");
    let _ = writeln!(o, " match identity remote {remote}");
    let _ = writeln!(o, " identity local {local}");
    if cert {
        let theirs = signature(input.hub_key_type(), "hub's")?;
        let ours = signature(input.facility_key_type()?, "facility's")?;
        if theirs == "ecdsa-sig" || ours == "ecdsa-sig" {
            o.push_str(
                "! UNVERIFIED (reference §2e): Cisco's requirements for ECDSA certificates\n",
            );
            o.push_str("! were not read in a vendor document; check the IKE_AUTH on the router.\n");
        }
        let _ = writeln!(o, " authentication remote {theirs}");
        let _ = writeln!(o, " authentication local {ours}");
        o.push_str(" pki trustpoint RENKEI-CA\n");
    } else {
        o.push_str(" authentication remote pre-share\n authentication local pre-share\n");
        o.push_str(" keyring local RENKEI-KR\n");
    }
    let _ = writeln!(o, " lifetime {}", l.ike.as_secs());
    o.push_str(" dpd 10 3 on-demand\n nat force-encap\n no config-exchange request\n!\n");
    o.push_str("crypto ikev2 nat keepalive 20\n!\n");
    let mut sets = Vec::new();
    for s in suites(&p.esp) {
        for e in &s.encr {
            let transforms: Vec<String> = match e.as_str() {
                "aes128gcm16" => vec!["esp-gcm".into()],
                "aes256gcm16" => vec!["esp-gcm 256".into()],
                cbc => {
                    let bits = cbc.trim_start_matches("aes");
                    s.integ
                        .iter()
                        .map(|i| format!("esp-aes {bits} esp-{i}-hmac"))
                        .collect()
                }
            };
            for t in transforms {
                let name = format!("RENKEI-ESP-{}", sets.len() + 1);
                let _ = writeln!(o, "crypto ipsec transform-set {name} {t}\n mode tunnel\n!");
                sets.push(name);
            }
        }
    }
    o.push_str("crypto ipsec profile RENKEI-IPSEC\n");
    let _ = writeln!(o, " set transform-set {}", sets.join(" "));
    let pfs = suites(&p.esp)
        .iter()
        .flat_map(|s| s.ke.first().cloned())
        .next();
    if let Some(g) = pfs.as_deref().and_then(group_number) {
        let _ = writeln!(o, " set pfs group{g}");
    }
    let _ = writeln!(
        o,
        " set security-association lifetime seconds {}",
        l.child.as_secs()
    );
    o.push_str(" set ikev2-profile RENKEI-PROF\n!\n");
    let mtu = p.mtu.unwrap_or(1400).min(1400);
    o.push_str("interface Tunnel10\n");
    let _ = writeln!(o, " ip unnumbered {lan}");
    let _ = writeln!(o, " ip mtu {mtu}");
    let _ = writeln!(o, " ip tcp adjust-mss {}", mtu - 40);
    let _ = writeln!(o, " tunnel source {wan}");
    o.push_str(" tunnel mode ipsec ipv4\n");
    let _ = writeln!(o, " tunnel destination {hub}");
    o.push_str(" tunnel protection ipsec profile RENKEI-IPSEC\n!\n");
    for r in &routes {
        let _ = writeln!(
            o,
            "ip route {} {} Tunnel10",
            r.addr(),
            super::ipv4_mask(r.prefix())
        );
    }
    Ok(o)
}
