//! The hub's own routing is untouchable (issue #15): a facility's
//! `--remote-ts` may not take the hub's addresses, connected networks,
//! routes it did not make, loopback or a default route — refused at
//! `peer add`/`peer set` with the registry unchanged, and again when a
//! Child SA is installed — and a route the hub did not make is never
//! replaced or deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{must, Facility, Lab, Role, Topology, SITE_NET, SITE_OUTER};
use std::process::Command;
use std::time::Duration;

fn swan() -> Facility {
    Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    )
}

/// `ip -n <hub> ARGS`.
fn hub_ip(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["-n", lab.hub_ns.as_str()];
    all.extend_from_slice(args);
    must(Command::new("ip").args(&all))
}

/// The hub's routes to `prefix` (`ip route show exact PREFIX`), all tables
/// but local, one per line.
fn routes_to(lab: &Lab, prefix: &str) -> String {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    hub_ip(lab, &[family, "route", "show", "exact", prefix])
}

/// Runs a `renkei` command that must be refused: non-zero exit, a one-line
/// error containing `expect`.
fn refused(lab: &Lab, args: &[&str], expect: &str) {
    let out = lab.renkei(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted: {out:?}");
    assert!(err.contains(expect), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn peer_add_and_set_refuse_the_hubs_own_routing() {
    let lab = Lab::start(swan());
    // A route the hub did not make, towards something else.
    hub_ip(
        &lab,
        &[
            "route",
            "add",
            "10.66.0.0/16",
            "via",
            SITE_OUTER,
            "proto",
            "static",
        ],
    );
    let registry = || {
        let out = lab.renkei(&["peer", "list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    let before = registry();
    let psk = lab.dir.join("psk");
    let psk = psk.to_str().unwrap();
    for (ts, extra, expect) in [
        // The hub's link to the facilities (a connected network).
        (
            "192.0.2.0/24",
            &[][..],
            "contains 192.0.2.1, an address of the hub itself",
        ),
        (
            "192.0.2.128/25",
            &[],
            "overlaps 192.0.2.0/24 (dev rkh",
        ),
        ("192.0.2.2/32", &[], "a network the hub is connected to"),
        ("0.0.0.0/0", &[], "0.0.0.0/0 is a default route"),
        ("::/0", &[], "::/0 is a default route"),
        ("198.51.100.64/26,::/0", &[], "::/0 is a default route"),
        ("127.0.0.0/8", &[], "(loopback)"),
        ("169.254.0.0/16", &[], "(link-local)"),
        ("224.0.0.0/4", &[], "(multicast)"),
        // The hub's own address (on lo, no connected network of its own).
        (
            "203.0.113.1/32",
            &[],
            "contains 203.0.113.1, an address of the hub itself",
        ),
        (
            "10.66.1.0/24",
            &[],
            "the hub's route to 10.66.0.0/16 (dev rkh",
        ),
        // The hub side of the tunnel.
        (
            "198.51.100.64/26",
            &["--local-ts", "198.51.100.0/25"],
            "overlaps the hub side's local-ts 198.51.100.0/25",
        ),
        // The README's old osaka-clinic: a routing loop.
        (
            "198.51.100.128/26",
            &["--remote-addr", "198.51.100.130", "--start"],
            "remote-addr: 198.51.100.130 lies inside the facility's own remote-ts 198.51.100.128/26",
        ),
    ] {
        let mut args = vec![
            "peer",
            "add",
            "osaka",
            "--id",
            "osaka.example",
            "--psk-file",
            psk,
            "--remote-ts",
            ts,
        ];
        args.extend_from_slice(extra);
        refused(&lab, &args, expect);
        assert_eq!(registry(), before, "{ts}: the registry is unchanged");
        // The same prefix given to an existing facility.
        let mut set = vec!["peer", "set", "kyoto", "--remote-ts", ts];
        set.extend_from_slice(extra);
        // kyoto's hub side is 203.0.113.0/25, which says so first.
        let expect = if ts == "203.0.113.1/32" {
            "overlaps the hub side's local-ts 203.0.113.0/25"
        } else {
            expect
        };
        refused(&lab, &set, expect);
        assert_eq!(registry(), before, "{ts}: the registry is unchanged");
    }
    // An ordinary second facility is still accepted.
    let out = lab.renkei(&[
        "peer",
        "add",
        "osaka",
        "--id",
        "osaka.example",
        "--psk-file",
        psk,
        "--remote-ts",
        "198.51.100.64/26",
    ]);
    assert!(out.status.success(), "{out:?}");
    // The hub's own routing is as it was.
    assert!(routes_to(&lab, "192.0.2.0/24").contains("proto kernel"));
    assert!(routes_to(&lab, "10.66.0.0/16").contains("proto static"));
}

#[test]
fn routes_the_hub_did_not_make_are_never_replaced_or_deleted() {
    let lab = Lab::start(swan());
    let tun = lab.tun.clone();
    let elsewhere = hub_ip(&lab, &["route", "add", "10.66.0.0/16", "via", SITE_OUTER]);
    assert!(elsewhere.is_empty());
    let connected = routes_to(&lab, "192.0.2.0/24");
    let foreign = routes_to(&lab, "10.66.0.0/16");
    assert!(!connected.is_empty() && !foreign.is_empty());

    // The facility's route is the hub's: its own protocol, on its TUN.
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let own = routes_to(&lab, SITE_NET);
    assert!(
        own.contains(&format!("dev {tun} proto 157")),
        "the hub's route: {own}"
    );
    // Someone adds their own route to the same prefix (another metric)
    // while the tunnel is up; the tunnel goes down.
    hub_ip(
        &lab,
        &["route", "add", SITE_NET, "via", SITE_OUTER, "metric", "100"],
    );
    let out = lab.renkei(&["sa", "down", "kyoto"]);
    assert!(out.status.success(), "{out:?}");
    lab.wait_for("kyoto's route removed", Duration::from_secs(10), |lab| {
        !routes_to(lab, SITE_NET).contains(&tun)
    });
    // Only the hub's route went.
    assert_eq!(
        routes_to(&lab, SITE_NET).trim(),
        format!("{SITE_NET} via {SITE_OUTER} dev rkh{} metric 100", lab.id)
    );
    assert_eq!(routes_to(&lab, "192.0.2.0/24"), connected);
    assert_eq!(routes_to(&lab, "10.66.0.0/16"), foreign);

    // A route the hub did not make to exactly the facility's prefix: the
    // Child SA is refused, and the route is neither replaced nor deleted
    // when the SA comes and goes.
    hub_ip(&lab, &["route", "del", SITE_NET, "metric", "100"]);
    hub_ip(&lab, &["route", "add", SITE_NET, "via", SITE_OUTER]);
    let theirs = routes_to(&lab, SITE_NET);
    let _ = lab.swan_initiate();
    lab.wait_for("the Child SA refused", Duration::from_secs(30), |lab| {
        let f = lab.status_of("kyoto");
        f["state"] == "degraded"
            && f["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("Child SA refused by the hub"))
    });
    let f = lab.status_of("kyoto");
    let err = f["last_error"].as_str().unwrap();
    assert!(
        err.contains(&format!(
            "remote-ts: {SITE_NET} overlaps the hub's route to {SITE_NET}"
        )),
        "{err}"
    );
    assert!(f["child_sas"].as_array().unwrap().is_empty(), "{f}");
    assert_eq!(routes_to(&lab, SITE_NET), theirs, "not replaced");
    let out = lab.renkei(&["sa", "down", "kyoto"]);
    assert!(out.status.success(), "{out:?}");
    lab.wait_for("kyoto down", Duration::from_secs(10), |lab| {
        lab.status_of("kyoto")["state"] == "down"
    });
    assert_eq!(routes_to(&lab, SITE_NET), theirs, "not deleted");
    assert_eq!(routes_to(&lab, "192.0.2.0/24"), connected);
    assert_eq!(routes_to(&lab, "10.66.0.0/16"), foreign);
    assert!(
        lab.hub_log().contains("Child SA refused"),
        "the refusal is logged"
    );
}

#[test]
fn a_network_the_hub_gained_after_peer_add_refuses_the_child_sa() {
    let lab = Lab::start(swan());
    // After `peer add`, the hub is connected to part of kyoto's prefix.
    let link = format!("rkd{}", lab.id);
    let other_end = format!("rke{}", lab.id);
    hub_ip(
        &lab,
        &[
            "link", "add", &link, "type", "veth", "peer", "name", &other_end,
        ],
    );
    hub_ip(&lab, &["addr", "add", "198.51.100.33/27", "dev", &link]);
    hub_ip(&lab, &["link", "set", &link, "up"]);
    hub_ip(&lab, &["link", "set", &other_end, "up"]);
    let connected = routes_to(&lab, "198.51.100.32/27");
    assert!(connected.contains("proto kernel"), "{connected}");

    let _ = lab.swan_initiate();
    lab.wait_for("the Child SA refused", Duration::from_secs(30), |lab| {
        let f = lab.status_of("kyoto");
        f["state"] == "degraded" && f["last_error"].as_str().is_some()
    });
    let f = lab.status_of("kyoto");
    let err = f["last_error"].as_str().unwrap();
    assert!(
        err.starts_with("Child SA refused by the hub: remote-ts: 198.51.100.0/26 contains 198.51.100.33, an address of the hub itself"),
        "{err}"
    );
    assert!(f["child_sas"].as_array().unwrap().is_empty(), "{f}");
    assert!(!lab.hub_route_present(), "no route to the facility");
    assert_eq!(routes_to(&lab, "198.51.100.32/27"), connected);
    // The facility was asked to delete the Child SA: it has none.
    lab.wait_for(
        "strongSwan without the Child SA",
        Duration::from_secs(10),
        |lab| {
            let out = lab.swanctl(&["--list-sas", "--raw"]);
            !String::from_utf8_lossy(&out.stdout).contains("state=INSTALLED")
        },
    );
    assert!(!lab.ping(false, 56, 1), "nothing is carried");
    // The audit log says refused, and never that this Child SA was up or
    // went down: it never carried traffic.
    let out = lab.renkei(&["audit", "show", "--facility", "kyoto", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(audit.contains("sa.child_refused"), "{audit}");
    assert!(!audit.contains("sa.child_up"), "{audit}");
    assert!(!audit.contains("sa.child_down"), "{audit}");

    // Once the hub's network is gone, the facility connects as usual.
    hub_ip(&lab, &["link", "del", &link]);
    let out = lab.renkei(&["sa", "down", "kyoto"]);
    assert!(out.status.success(), "{out:?}");
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3));
    assert_eq!(
        lab.status_of("kyoto")["last_error"],
        serde_json::Value::Null
    );
}

/// The kernel is the last guard: a route to the facility's prefix that the
/// check takes for the hub's (renkei's protocol on its TUN device) but the
/// hub did not make — as one made between the check and the install would
/// be — is not replaced: the hub's add is refused (`EEXIST`), and so is
/// the Child SA.
#[test]
fn an_existing_route_is_never_replaced_even_past_the_check() {
    let lab = Lab::start(swan());
    let tun = lab.tun.clone();
    hub_ip(
        &lab,
        &[
            "route", "add", SITE_NET, "dev", &tun, "proto", "157", "mtu", "1111",
        ],
    );
    let theirs = routes_to(&lab, SITE_NET);
    assert!(theirs.contains("mtu 1111"), "{theirs}");
    let _ = lab.swan_initiate();
    lab.wait_for("the Child SA refused", Duration::from_secs(30), |lab| {
        let f = lab.status_of("kyoto");
        f["state"] == "degraded" && f["last_error"].as_str().is_some()
    });
    let err = lab.status_of("kyoto")["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!(
            "the route to {SITE_NET} exists and is not the hub's; it is left alone"
        )),
        "{err}"
    );
    assert_eq!(routes_to(&lab, SITE_NET), theirs, "not replaced");
    let out = lab.renkei(&["sa", "down", "kyoto"]);
    assert!(out.status.success(), "{out:?}");
    lab.wait_for("kyoto down", Duration::from_secs(10), |lab| {
        lab.status_of("kyoto")["state"] == "down"
    });
    assert_eq!(routes_to(&lab, SITE_NET), theirs, "not deleted");
}

/// A path MTU the data plane learns is set on the hub's own route (the
/// route is looked up first, so only the hub's is ever changed).
#[test]
fn a_learned_path_mtu_reaches_the_hubs_own_route() {
    let lab = Lab::start_sites(
        Topology::Path {
            mtu: 1280,
            icmp: true,
            v6: false,
        },
        vec![swan()],
    );
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let before = routes_to(&lab, SITE_NET);
    assert!(before.contains("proto 157"), "{before}");
    // The hub learns the path when the kernel refuses a GSO train larger
    // than the path (EMSGSIZE); a packet sent on its own is fragmented by
    // the kernel instead, and on a busy machine a transfer can go by in
    // batches of one packet per facility. Transfers until a train is
    // refused (every byte arrives either way).
    let mut f = lab.facility_status();
    for _ in 0..5 {
        let (sent, received, bytes) = lab.transfer_server(true, 4 << 20);
        assert_eq!((bytes, &sent), (4 << 20, &received));
        f = lab.facility_status();
        if f["path_mtu_limited"] == true {
            break;
        }
    }
    assert_eq!(f["path_mtu_limited"], true, "{f}");
    let mtu = f["mtu"].as_u64().unwrap();
    lab.wait_for("the route's MTU", Duration::from_secs(10), |lab| {
        routes_to(lab, SITE_NET).contains(&format!("mtu {mtu}"))
    });
    assert!(!before.contains(&format!("mtu {mtu}")), "{before}");
}
