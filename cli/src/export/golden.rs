//! Golden files of the router exports: one per vendor and case, in
//! `cli/tests/golden/`. Each test names the section of the vendor
//! reference (`shared/routers/*.md`) its output follows. `RENKEI_BLESS=1`
//! rewrites the files after a deliberate change (review the diff).

use super::{render, Format, Input, Site};
use crate::registry::{validate, CertRecord, Hub, NewPeer, Peer};
use crate::router::Router;
use std::path::PathBuf;
use zeroize::Zeroizing;

const PSK: &[u8] = b"kyoto-hub-0123456789";

fn hub(addrs: &[&str]) -> Hub {
    Hub {
        id: pki::Identity::parse("vpn.example.jp").unwrap(),
        public_addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        profile: "cryptrec".into(),
    }
}

fn peer(router: Router, cert: bool, remote_ts: &str, local_ts: &str) -> Peer {
    let new = NewPeer {
        name: "kyoto".into(),
        id: "kyoto.example.jp".into(),
        cert,
        remote_ts: remote_ts.into(),
        local_ts: Some(local_ts.into()),
        router: Some(router),
        ..Default::default()
    };
    let key = (!cert).then(|| Zeroizing::new(PSK.to_vec()));
    validate(&new, key, "2026-11-30T00:00:00Z").unwrap()
}

fn certs() -> Vec<CertRecord> {
    let rec = |name: &str, key: &str| CertRecord {
        serial: format!("{name}01"),
        name: name.into(),
        identity: name.into(),
        key_type: key.into(),
        not_after: 2_000_000_000,
        issued: "2026-11-30T00:00:00Z".into(),
        revoked: None,
    };
    vec![rec("hub", "ecdsa-p384"), rec("kyoto", "ecdsa-p256")]
}

/// Renders and compares with (or, blessing, writes) `golden/<file>`.
fn golden(file: &str, format: Format, hub: &Hub, peer: &Peer, site: &Site, secret: bool) {
    let certs = certs();
    let out = render(
        format,
        &Input {
            hub,
            peer,
            with_secret: secret,
            site,
            certs: &certs,
        },
    )
    .unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    if std::env::var_os("RENKEI_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &out).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (RENKEI_BLESS=1 writes it)", path.display()));
    assert_eq!(out, want, "{file} differs from the export");
    // The secret appears only when asked for.
    let shown = out.contains(std::str::from_utf8(PSK).unwrap());
    assert_eq!(shown, secret, "{file}: secret shown: {shown}");
}

fn err(format: Format, hub: &Hub, peer: &Peer, site: &Site) -> String {
    render(
        format,
        &Input {
            hub,
            peer,
            with_secret: false,
            site,
            certs: &certs(),
        },
    )
    .unwrap_err()
    .to_string()
}

const LAN: &str = "192.168.10.0/24";
const HUB_NETS: &str = "10.20.0.0/16,172.16.5.0/24";

/// YAMAHA RTX reference §2c (template), §4 (mandatory lines), §2d (no
/// certificates), §2c NAT descriptor lines.
#[test]
fn yamaha() {
    let h = hub(&["203.0.113.1"]);
    let p = peer(Router::Yamaha, false, LAN, HUB_NETS);
    golden(
        "yamaha-psk.txt",
        Format::Yamaha,
        &h,
        &p,
        &Site::default(),
        true,
    );
    let nat = Site {
        local_addr: Some("192.168.10.1".parse().unwrap()),
        wan_nat: Some(1000),
        ..Site::default()
    };
    golden("yamaha-behind-nat.txt", Format::Yamaha, &h, &p, &nat, false);
    let e = err(
        Format::Yamaha,
        &h,
        &p,
        &Site {
            wan_nat: Some(0),
            ..nat.clone()
        },
    );
    assert!(
        e.starts_with("wan-nat: on a YAMAHA RTX give the number"),
        "{e}"
    );
    let e = err(
        Format::Yamaha,
        &h,
        &p,
        &Site {
            local_addr: None,
            ..nat.clone()
        },
    );
    assert!(
        e.starts_with("local-addr: --wan-nat on a YAMAHA RTX needs"),
        "{e}"
    );
    let out = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/yamaha-psk.txt"),
    )
    .unwrap();
    for line in [
        "  ipsec ike version 1 2\n",
        "  ipsec ike proposal-limitation 1 on\n",
        "  ipsec ike encryption 1 aes256-cbc\n",
        "  ipsec ike hash 1 sha256\n",
        "  ipsec ike group 1 modp2048\n",
        "  ipsec sa policy 101 1 esp aes256-cbc sha256-hmac\n",
        "  ipsec ike nat-traversal 1 on\n",
        "  ipsec ike keepalive use 1 on rfc4306 10 6\n",
        "  ipsec ike pfs 1 on\n",
        "  ipsec ike local name 1 kyoto.example.jp fqdn\n",
        "  ipsec ike remote name 1 vpn.example.jp fqdn\n",
        "ipsec auto refresh on\n",
        "ip route 10.20.0.0/16 gateway tunnel 1\n",
    ] {
        assert!(out.contains(line), "missing {line}");
    }
    // No IPv6 and no default route (route-based: it would carry the tunnel).
    let e = err(Format::Yamaha, &hub(&["2001:db8::1"]), &p, &Site::default());
    assert!(
        e.starts_with("hub-addr: the YAMAHA export connects over IPv4 only"),
        "{e}"
    );
    let all = peer(Router::Yamaha, false, LAN, "0.0.0.0/0");
    let e = err(Format::Yamaha, &h, &all, &Site::default());
    assert!(
        e.starts_with("local-ts: the hub-side prefixes include 0.0.0.0/0"),
        "{e}"
    );
    // A facility registered for another router is refused, naming the way.
    let fg = peer(Router::Fortigate, false, LAN, HUB_NETS);
    let e = err(Format::Yamaha, &h, &fg, &Site::default());
    assert!(
        e.starts_with("ike: a YAMAHA RTX cannot do 'aes256gcm16'"),
        "{e}"
    );
    assert!(e.contains("`renkei peer set kyoto --router yamaha`"), "{e}");
    // A certificate facility is refused saying why and what works.
    let mut cert = peer(Router::Other, true, LAN, HUB_NETS);
    cert.ike = p.ike.clone();
    cert.esp = p.esp.clone();
    let e = err(Format::Yamaha, &h, &cert, &Site::default());
    assert!(
        e.starts_with("cert: a YAMAHA RTX facility authenticates with a pre-shared key"),
        "{e}"
    );
}

/// Cisco IOS XE reference §2f (PSK template), §2e (certificates), §4.
#[test]
fn cisco() {
    let h = hub(&["203.0.113.1"]);
    let p = peer(Router::Cisco, false, LAN, HUB_NETS);
    golden(
        "cisco-psk.txt",
        Format::Cisco,
        &h,
        &p,
        &Site::default(),
        true,
    );
    let c = peer(Router::Cisco, true, LAN, HUB_NETS);
    golden(
        "cisco-cert.txt",
        Format::Cisco,
        &h,
        &c,
        &Site::default(),
        false,
    );
    let nat = Site {
        wan_nat: Some(1),
        wan_interface: Some("Dialer1".into()),
        ..Site::default()
    };
    golden("cisco-behind-nat.txt", Format::Cisco, &h, &p, &nat, false);
    let e = err(Format::Cisco, &hub(&["2001:db8::1"]), &p, &Site::default());
    assert!(
        e.starts_with("hub-addr: the Cisco export connects over IPv4 only"),
        "{e}"
    );
}

/// FortiGate reference §2b (PSK template), §2c (certificates), §4.
#[test]
fn fortigate() {
    let h = hub(&["203.0.113.1"]);
    let p = peer(Router::Fortigate, false, LAN, HUB_NETS);
    golden(
        "fortigate-psk.txt",
        Format::Fortigate,
        &h,
        &p,
        &Site::default(),
        true,
    );
    let c = peer(Router::Fortigate, true, LAN, HUB_NETS);
    golden(
        "fortigate-cert.txt",
        Format::Fortigate,
        &h,
        &c,
        &Site::default(),
        false,
    );
    let nat = Site {
        wan_nat: Some(1),
        ..Site::default()
    };
    golden(
        "fortigate-behind-nat.txt",
        Format::Fortigate,
        &h,
        &p,
        &nat,
        false,
    );
}

/// NEC IX reference §2d (template), §2c (IPv6 with strongSwan, N6), §2b
/// (NAPT exemptions); unverified lines are marked.
#[test]
fn nec() {
    let h = hub(&["203.0.113.1"]);
    let p = peer(Router::Nec, false, LAN, HUB_NETS);
    golden("nec-psk.txt", Format::Nec, &h, &p, &Site::default(), true);
    let h6 = hub(&["2001:db8::1"]);
    let p6 = peer(Router::Nec, false, "2001:db8:10::/48", "2001:db8:20::/48");
    golden(
        "nec-ipv6.txt",
        Format::Nec,
        &h6,
        &p6,
        &Site::default(),
        false,
    );
    let nat = Site {
        wan_nat: Some(1),
        ..Site::default()
    };
    golden("nec-behind-nat.txt", Format::Nec, &h, &p, &nat, false);
    let out = render(
        Format::Nec,
        &Input {
            hub: &h,
            peer: &p,
            with_secret: false,
            site: &Site::default(),
            certs: &[],
        },
    )
    .unwrap();
    // Every unverified keyword is preceded by its mark.
    for unverified in [
        " sa-proposal prf ",
        " local-authentication psk id fqdn",
        " ikev2 nat-traversal keepalive 20 force",
    ] {
        let i = out.find(unverified).unwrap();
        let before = out[..i].lines().last().unwrap_or("");
        let mark = out[..i]
            .lines()
            .rev()
            .find(|l| !l.starts_with("!   "))
            .unwrap_or("");
        assert!(
            mark.starts_with("! CHECK ON THE ROUTER:") || before.starts_with("! CHECK"),
            "{unverified} is not marked"
        );
    }
    let c = {
        let mut c = peer(Router::Other, true, LAN, HUB_NETS);
        c.ike = p.ike.clone();
        c.esp = p.esp.clone();
        c
    };
    let e = err(Format::Nec, &h, &c, &Site::default());
    assert!(
        e.starts_with("cert: a NEC IX facility authenticates with a pre-shared key"),
        "{e}"
    );
}
