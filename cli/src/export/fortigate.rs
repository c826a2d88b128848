//! `renkei export --format fortigate`: FortiOS CLI, following the FortiGate
//! reference §2b (route-based phase-1/phase-2 interfaces; the keywords are
//! in the FortiOS CLI reference, the sequence was tested on FortiOS 7.0)
//! and §2c for certificates.
//!
//! Everything the defaults get wrong is explicit (reference §4): IKEv2
//! (the default is IKEv1), the proposals and groups of both phases
//! (the defaults include SHA-1 and DH 5), an FQDN local ID (the default is
//! the WAN address, private behind NAT), forced NAT traversal, DPD, and
//! the firewall policies and route without which nothing passes even
//! with the SAs up.

use super::{check_router, group_number, header, suites, Input};
use crate::router::Router;
use anyhow::{bail, Result};
use pki::Identity;
use std::fmt::Write as _;

/// `localid-type` and `localid` for the facility's identity.
fn local_id(id: &Identity) -> Result<(&'static str, String)> {
    Ok(match id {
        Identity::Fqdn(f) => ("fqdn", f.clone()),
        Identity::Email(e) => ("user-fqdn", e.clone()),
        Identity::Addr(a) => ("address", a.to_string()),
        Identity::KeyId(k) if k.iter().all(u8::is_ascii_graphic) => {
            ("keyid", String::from_utf8_lossy(k).into_owned())
        }
        Identity::Dn(_) => ("asn1dn", String::new()),
        other => bail!("id: the FortiGate export cannot send {other} as the router's identity"),
    })
}

pub(super) fn render(input: &Input<'_>) -> Result<String> {
    check_router(Router::Fortigate, input)?;
    let (p, site) = (input.peer, input.site);
    let hub = input.hub_addr("FortiGate", false)?;
    let routes = input.hub_prefixes("FortiGate", false)?;
    let (id_type, id) = local_id(&p.id)?;
    let cert = matches!(p.auth, ike::PeerAuth::Cert);
    let wan = site.wan_interface.as_deref().unwrap_or("wan1");
    let lan = site.lan_interface.as_deref().unwrap_or("internal");
    let l = &p.lifetimes;
    // Phase 1: CBC names pair a cipher with its hash, GCM names with the
    // PRF (reference §3, §4.6).
    let mut p1 = Vec::new();
    let mut p1_groups = Vec::new();
    for s in suites(&p.ike) {
        for e in &s.encr {
            let cipher = e.replace("gcm16", "gcm");
            if s.is_aead() {
                for prf in &s.prf {
                    p1.push(format!("{cipher}-{prf}"));
                }
            } else {
                for i in &s.integ {
                    p1.push(format!("{cipher}-{i}"));
                }
            }
        }
        p1_groups.extend(s.ke.iter().filter_map(|k| group_number(k)));
    }
    let mut p2 = Vec::new();
    let mut p2_groups = Vec::new();
    for s in suites(&p.esp) {
        for e in &s.encr {
            if s.is_aead() {
                p2.push(e.replace("gcm16", "gcm"));
            } else {
                for i in &s.integ {
                    p2.push(format!("{e}-{i}"));
                }
            }
        }
        p2_groups.extend(s.ke.iter().filter_map(|k| group_number(k)));
    }
    let dedup = |v: &mut Vec<u16>| {
        let mut seen = Vec::new();
        v.retain(|g| {
            let new = !seen.contains(g);
            seen.push(*g);
            new
        });
    };
    dedup(&mut p1_groups);
    dedup(&mut p2_groups);
    let groups = |v: &[u16]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };

    let mut o = header(input, "#", "FortiGate configuration");
    o.push_str("# Follows the renkei FortiGate reference §2b (route-based IKEv2)");
    o.push_str(if cert {
        " and §2c (certificates).\n"
    } else {
        ".\n"
    });
    o.push_str("# Paste in the CLI console; check with `diagnose vpn tunnel list` and\n");
    o.push_str("# `get vpn ipsec tunnel summary`.\n");
    let _ = writeln!(
        o,
        "# Interfaces: WAN \"{wan}\", LAN \"{lan}\" (change with --wan-interface / --lan-interface)."
    );
    if site.wan_nat.is_some() {
        o.push_str("# The FortiGate's own NAT needs no exemption: IKE and ESP leave from its\n");
        o.push_str("# WAN address in UDP 4500 (nattraversal forced).\n");
    }
    if cert && input.facility_key_type()? == "ed25519" {
        bail!("cert: the facility's certificate key is ed25519; the FortiGate export signs with RSA or ECDSA only (issue one with `renkei cert issue {} --key ecdsa-p256`)", p.name);
    }
    if cert {
        o.push_str("# UNVERIFIED (reference §2c): certificate keywords from the CLI reference;\n");
        o.push_str("# no tested certificate example was found. Import this router's certificate\n");
        o.push_str("# (NAME.p12) as local certificate \"renkei\" and ca.pem as CA certificate\n");
        o.push_str("# \"renkei-ca\" (System > Certificates) before pasting.\n");
        o.push_str("# UNVERIFIED (inferred from reference §2c, which names the entry but not\n");
        o.push_str("# its keywords): the peer user that accepts certificates of the hub's CA.\n");
        o.push_str("config user peer\n    edit \"renkei-hub\"\n        set ca \"renkei-ca\"\n    next\nend\n");
    }
    o.push_str("config vpn ipsec phase1-interface\n    edit \"renkei\"\n");
    let _ = writeln!(o, "        set interface \"{wan}\"");
    o.push_str("        set ike-version 2\n");
    let _ = writeln!(o, "        set remote-gw {hub}");
    if cert {
        o.push_str("        set authmethod signature\n");
        o.push_str("        set certificate \"renkei\"\n");
        o.push_str("        set peertype peer\n        set peer \"renkei-hub\"\n");
        o.push_str("        set cert-id-validation enable\n");
        o.push_str("        set digital-signature-auth enable\n");
        o.push_str("        set signature-hash-alg sha2-256 sha2-384 sha2-512\n");
    } else {
        o.push_str("        set authmethod psk\n");
        match input.psk_text("FortiGate")? {
            Some(k) => {
                let _ = writeln!(o, "        set psksecret {k}");
            }
            None => {
                o.push_str("# Type the pre-shared key given to the hub for this facility\n");
                o.push_str("# (or export with --with-secret):\n");
                o.push_str("#       set psksecret <pre-shared key>\n");
            }
        }
        o.push_str(
            "# INFERRED (reference §2b): peertype one with peerid pins the hub's identity.\n",
        );
        o.push_str("        set peertype one\n");
        let _ = writeln!(o, "        set peerid \"{}\"", input.hub.id);
    }
    let _ = writeln!(o, "        set localid-type {id_type}");
    if !id.is_empty() {
        let _ = writeln!(o, "        set localid \"{id}\"");
    }
    let _ = writeln!(o, "        set proposal {}", p1.join(" "));
    let _ = writeln!(o, "        set dhgrp {}", groups(&p1_groups));
    let _ = writeln!(o, "        set keylife {}", l.ike.as_secs());
    o.push_str("        set nattraversal forced\n");
    o.push_str("        set keepalive 20\n");
    o.push_str("        set dpd on-idle\n");
    o.push_str("        set dpd-retrycount 3\n");
    o.push_str("        set dpd-retryinterval 10\n");
    o.push_str("        set net-device disable\n");
    o.push_str("        set add-route disable\n");
    o.push_str("        set auto-negotiate enable\n");
    o.push_str("    next\nend\n");
    o.push_str("config vpn ipsec phase2-interface\n    edit \"renkei\"\n");
    o.push_str("        set phase1name \"renkei\"\n");
    let _ = writeln!(o, "        set proposal {}", p2.join(" "));
    if p2_groups.is_empty() {
        o.push_str("        set pfs disable\n");
    } else {
        o.push_str("        set pfs enable\n");
        let _ = writeln!(o, "        set dhgrp {}", groups(&p2_groups));
    }
    let _ = writeln!(o, "        set keylifeseconds {}", l.child.as_secs());
    o.push_str("        set auto-negotiate enable\n");
    o.push_str("        set src-subnet 0.0.0.0 0.0.0.0\n");
    o.push_str("        set dst-subnet 0.0.0.0 0.0.0.0\n");
    o.push_str("    next\nend\n");
    o.push_str("config router static\n");
    for r in &routes {
        o.push_str("    edit 0\n");
        let _ = writeln!(
            o,
            "        set dst {} {}",
            r.addr(),
            super::ipv4_mask(r.prefix())
        );
        o.push_str("        set device \"renkei\"\n    next\n");
    }
    o.push_str("end\n");
    o.push_str("# Without these policies nothing passes, even with the SAs up; narrow the\n");
    o.push_str("# addresses and services to what the facility needs.\n");
    o.push_str("config firewall policy\n");
    for (name, from, to) in [
        ("lan-to-renkei", lan, "renkei"),
        ("renkei-to-lan", "renkei", lan),
    ] {
        o.push_str("    edit 0\n");
        let _ = writeln!(o, "        set name \"{name}\"");
        let _ = writeln!(o, "        set srcintf \"{from}\"");
        let _ = writeln!(o, "        set dstintf \"{to}\"");
        o.push_str("        set srcaddr \"all\"\n        set dstaddr \"all\"\n");
        o.push_str("        set action accept\n        set schedule \"always\"\n");
        o.push_str("        set service \"ALL\"\n    next\n");
    }
    o.push_str("end\n");
    Ok(o)
}
