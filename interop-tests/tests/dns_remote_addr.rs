//! A facility given to the hub by DNS name (`--remote-addr NAME`, as a
//! clinic on a dynamic address with its router's dynamic DNS): the running
//! hub resolves the name at every connection attempt with the system's
//! resolver, reports a name that does not resolve as the facility's last
//! error, keeps trying with its backoff, refuses an address inside the
//! facility's own prefixes as `peer add` refuses such an address, and
//! connects once the name resolves to the facility (issue #16 item 3).
//!
//! The name is unique to the test and resolved through an `/etc/hosts`
//! entry the test adds and removes: no DNS server is involved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{Facility, Lab, Role};
use std::time::Duration;

const HOSTS: &str = "/etc/hosts";

/// An `/etc/hosts` line, removed again when dropped (also on panic).
struct HostsEntry {
    line: String,
}

impl HostsEntry {
    fn add(name: &str, addr: &str) -> HostsEntry {
        let line = format!("{addr} {name} # renkei interop test {}", std::process::id());
        let mut text = std::fs::read_to_string(HOSTS).unwrap();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        std::fs::write(HOSTS, text).unwrap();
        HostsEntry { line }
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(HOSTS) {
            let kept: String = text
                .lines()
                .filter(|l| *l != self.line)
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write(HOSTS, kept);
        }
    }
}

#[test]
fn the_hub_connects_to_a_facility_by_dns_name_resolved_at_each_attempt() {
    let lab = Lab::start(Facility::new(
        "aes256-sha256-modp2048",
        "aes256-sha256-modp2048",
        Role::SwanInitiates,
    ));
    let site = lab.sites[0].name.clone();
    let name = format!("rk-{}-{}.renkei-test", std::process::id(), lab.id);
    // Not resolvable yet: the hub says so and keeps the facility down.
    let out = lab.renkei(&["peer", "set", &site, "--remote-addr", &name, "--start"]);
    assert!(out.status.success(), "peer set: {out:?}");
    let shown = lab.renkei(&["peer", "show", &site, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["remote_addr"], name.as_str(), "stored as given");
    let prefix = format!("remote-addr: cannot resolve {name}: ");
    lab.wait_for(
        "the lookup failure in status",
        Duration::from_secs(60),
        |l| {
            l.facility_status()["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with(&prefix))
        },
    );
    assert_ne!(lab.facility_status()["state"], "up");
    // A name that resolves inside the facility's own prefixes is refused
    // as `peer add` refuses such an address (a routing loop).
    let net: std::net::Ipv4Addr = lab.sites[0].net.split('/').next().unwrap().parse().unwrap();
    let inside = std::net::Ipv4Addr::from(u32::from(net) + 1).to_string();
    let entry = HostsEntry::add(&name, &inside);
    let loop_error = format!("{name} resolves to {inside}: remote-addr: {inside} lies inside");
    lab.wait_for(
        "the routing-loop refusal in status",
        Duration::from_secs(120),
        |l| {
            l.facility_status()["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with(&loop_error))
        },
    );
    drop(entry);
    // The name now resolves to the facility: a later attempt connects,
    // without the hub being told anything.
    let _entry = HostsEntry::add(&name, &lab.sites[0].outer);
    lab.wait_up(Duration::from_secs(120));
    let f = lab.facility_status();
    assert_eq!(
        f["remote"].as_str().unwrap(),
        format!("{}:4500", lab.sites[0].outer),
        "{f}"
    );
    assert!(lab.ping(true, 56, 3), "hub → facility ping");
    assert!(
        lab.hub_log().contains("resolved the facility's name"),
        "the hub logs the lookup"
    );
}
