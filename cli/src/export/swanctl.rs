//! `renkei export --format swanctl`: strongSwan's swanctl.conf.

use crate::registry::{Hub, Peer};
use anyhow::{bail, Result};
use base64::Engine as _;
use std::fmt::Write as _;

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// An identity as swanctl.conf takes it. A distinguished name is quoted
/// (it has spaces and commas), in strongSwan's own `C=…, O=…, CN=…` form
/// when strongSwan parses that back to the same name, else as its DER in
/// hex behind `asn1dn:#`, which strongSwan also reads.
fn swanctl_id(id: &pki::Identity) -> String {
    match id {
        pki::Identity::Dn(dn) if dn.strongswan_writable() => format!("\"{dn}\""),
        pki::Identity::Dn(dn) => {
            let hex: String = dn.der().iter().map(|b| format!("{b:02x}")).collect();
            format!("\"asn1dn:#{hex}\"")
        }
        other => other.to_string(),
    }
}

/// The facility's side of the tunnel as a complete swanctl.conf.
pub(crate) fn swanctl(hub: &Hub, p: &Peer, with_secret: bool) -> Result<String> {
    if hub.public_addrs.is_empty() {
        bail!(
            "public-addr: the hub has no public address (set it with `renkei hub set --public-addr`)"
        );
    }
    let mut out = String::new();
    let l = &p.lifetimes;
    let _ = writeln!(
        out,
        "# swanctl.conf for facility '{}', exported by renkei {} from hub {}.",
        p.name,
        env!("CARGO_PKG_VERSION"),
        hub.id
    );
    if matches!(p.auth, ike::PeerAuth::Cert) {
        let _ = writeln!(
            out,
            "# Save it in the swanctl directory (e.g. /etc/swanctl/swanctl.conf): the\n# certificate and key below are found relative to it. Then: swanctl --load-all"
        );
    } else {
        let _ = writeln!(out, "# Load with: swanctl --load-all --file <this file>");
    }
    let _ = writeln!(out, "connections {{");
    let _ = writeln!(out, "  renkei-hub {{");
    let _ = writeln!(out, "    version = 2");
    let _ = writeln!(out, "    remote_addrs = {}", join(&hub.public_addrs));
    let _ = writeln!(out, "    proposals = {}", p.ike);
    let _ = writeln!(out, "    rekey_time = {}s", l.ike.as_secs());
    let _ = writeln!(out, "    dpd_delay = {}s", l.dpd.as_secs());
    let _ = writeln!(out, "    encap = yes");
    let cert = matches!(p.auth, ike::PeerAuth::Cert);
    if cert {
        let _ = writeln!(
            out,
            "    # From `renkei cert issue {n}`: {n}.pem in x509/, {n}.key in private/,\n    # ca.pem in x509ca/ of the swanctl directory.",
            n = p.name
        );
        let _ = writeln!(
            out,
            "    local {{\n      auth = pubkey\n      certs = {}.pem\n      id = {}\n    }}",
            p.name,
            swanctl_id(&p.id)
        );
        let _ = writeln!(
            out,
            "    remote {{\n      auth = pubkey\n      cacerts = ca.pem\n      id = {}\n    }}",
            swanctl_id(&hub.id)
        );
    } else {
        let _ = writeln!(
            out,
            "    local {{\n      auth = psk\n      id = {}\n    }}",
            swanctl_id(&p.id)
        );
        let _ = writeln!(
            out,
            "    remote {{\n      auth = psk\n      id = {}\n    }}",
            swanctl_id(&hub.id)
        );
    }
    let _ = writeln!(out, "    children {{");
    let _ = writeln!(out, "      hub {{");
    let _ = writeln!(out, "        local_ts = {}", join(&p.remote_ts));
    let _ = writeln!(out, "        remote_ts = {}", join(&p.local_ts));
    let _ = writeln!(out, "        esp_proposals = {}", p.esp);
    let _ = writeln!(out, "        rekey_time = {}s", l.child.as_secs());
    let _ = writeln!(out, "        dpd_action = restart");
    let _ = writeln!(out, "        close_action = start");
    // When the hub keeps the tunnel up itself, the facility only answers.
    let _ = writeln!(
        out,
        "        start_action = {}",
        if p.start { "none" } else { "start" }
    );
    let _ = writeln!(out, "      }}\n    }}\n  }}\n}}");
    let ike::PeerAuth::Psk(psk) = &p.auth else {
        // The private key is a file of its own (private/), not a secret here.
        return Ok(out);
    };
    let _ = writeln!(
        out,
        "secrets {{\n  ike-renkei-hub {{\n    id-1 = {}\n    id-2 = {}",
        swanctl_id(&p.id),
        swanctl_id(&hub.id)
    );
    if with_secret {
        // strongSwan takes any secret as base64 behind `0s`.
        let _ = writeln!(
            out,
            "    secret = 0s{}",
            base64::engine::general_purpose::STANDARD.encode(&psk[..])
        );
    } else {
        let _ = writeln!(
            out,
            "    # secret = the pre-shared key given to the hub for this facility"
        );
        let _ = writeln!(out, "    # (or export with --with-secret)");
    }
    let _ = writeln!(out, "  }}\n}}");
    Ok(out)
}
