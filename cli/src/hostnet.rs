//! The hub's own routing, which no facility's `--remote-ts` may take.
//!
//! A facility's prefixes are routed to the TUN device while its Child SA
//! is up. A prefix that is the hub's own (one of its addresses, a network
//! it is connected to, a route someone else made, loopback, a default
//! route…) would cut the hub off from it or loop the tunnel into itself.
//! Such prefixes are refused twice:
//!
//! ```text
//!  peer add / peer set ──┐                          ┌─ check_selectors (pure: ranges,
//!                        ├─▶ HostNetworks::read ───▶│    --local-ts, --remote-addr)
//!  Child SA installed ───┘   (kernel, netlink)      └─ check_host (pure: addresses, routes)
//! ```
//!
//! The checks are pure functions of typed values so they are tested
//! without a kernel; [`HostNetworks::read`] is the only part that asks the
//! kernel. Routes the hub made itself (routing protocol
//! [`esp::sys::RTPROT_RENKEI`]) are facilities', checked against each other
//! by the registry, and are not the hub's own.

use anyhow::{bail, Context, Result};
use ike::ts::Subnet;
use rust_i18n::t;
use std::net::IpAddr;

/// Ranges that are never a facility's network, with what they are.
const SPECIAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "the unspecified address range"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "the broadcast address"),
    ("::/128", "the unspecified address"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// A route of the hub's main routing table that the hub did not make.
#[derive(Debug, Clone)]
pub(crate) struct HostRoute {
    pub(crate) net: Subnet,
    /// Its device's name, for messages.
    pub(crate) dev: Option<String>,
    /// A directly connected network (no next hop).
    pub(crate) connected: bool,
}

/// What of the host's routing a facility may not take: its addresses and
/// the routes of the main table it did not make (default routes aside:
/// every prefix is inside them, and a more specific route to a facility is
/// what the hub adds).
#[derive(Debug, Clone, Default)]
pub(crate) struct HostNetworks {
    pub(crate) addrs: Vec<IpAddr>,
    pub(crate) routes: Vec<HostRoute>,
}

impl HostNetworks {
    /// Reads the host's addresses and main-table routes from the kernel.
    /// `tun`: the hub's TUN device, when the running hub asks — its own
    /// routes there are skipped. Without it (the `peer` commands, which do
    /// not know the device), every route of renkei's protocol is skipped.
    pub(crate) fn read(tun: Option<u32>) -> Result<HostNetworks> {
        let addrs = esp::sys::local_addresses().context("reading the host's addresses")?;
        let routes = esp::sys::routes().context("reading the host's routes (netlink)")?;
        let routes = routes
            .into_iter()
            .filter(|r| r.table == u32::from(libc::RT_TABLE_MAIN) && r.prefix > 0)
            .filter(|r| match tun {
                Some(tun) => !r.is_renkei_on(tun),
                None => r.protocol != esp::sys::RTPROT_RENKEI,
            })
            .filter_map(|r| {
                Some(HostRoute {
                    net: Subnet::new(r.dst, r.prefix).ok()?,
                    dev: r.oif.and_then(esp::sys::interface_name),
                    connected: r.is_connected(),
                })
            })
            .collect();
        Ok(HostNetworks { addrs, routes })
    }
}

/// The host's networks as the running hub last read them, read again only
/// when the kernel reports a change other than the hub's own routes (a
/// Child SA install must not cost a full routing-table dump when thousands
/// of facilities reconnect at once).
#[derive(Debug)]
pub(crate) struct HostWatch {
    watch: esp::sys::RouteWatch,
    tun: u32,
    cache: Option<HostNetworks>,
}

impl HostWatch {
    /// Follows the host's changes from now; `tun` is the hub's TUN device.
    pub(crate) fn new(tun: u32) -> Result<HostWatch> {
        Ok(HostWatch {
            watch: esp::sys::RouteWatch::new(tun)
                .context("subscribing to the host's route changes (netlink)")?,
            tun,
            cache: None,
        })
    }

    /// The host's networks now.
    pub(crate) fn current(&mut self) -> Result<&HostNetworks> {
        if self.watch.changed() {
            self.cache = None;
        }
        let host = match self.cache.take() {
            Some(h) => h,
            None => HostNetworks::read(Some(self.tun))?,
        };
        Ok(self.cache.insert(host))
    }
}

/// The checks that need nothing but the facility itself: no default
/// route, no special range, nothing of the hub side's `--local-ts`
/// (entries other than a default, which means "whatever the hub routes"),
/// and the facility's own address (`remote_addr`: configured, or where it
/// connects from) outside its prefixes.
pub(crate) fn check_selectors(
    remote_ts: &[Subnet],
    local_ts: &[Subnet],
    remote_addr: Option<IpAddr>,
) -> Result<()> {
    for r in remote_ts {
        if r.prefix() == 0 {
            bail!("{}", t!("registry.default_route", net = r));
        }
        for (range, what) in SPECIAL {
            let range: Subnet = range.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            if r.overlaps(&range) {
                bail!(
                    "{}",
                    t!(
                        "registry.special_range",
                        net = r,
                        range = range,
                        what = what
                    )
                );
            }
        }
        if let Some(l) = local_ts.iter().find(|l| l.prefix() > 0 && l.overlaps(r)) {
            bail!("{}", t!("registry.overlaps_local_ts", net = r, local = l));
        }
        if let Some(a) = remote_addr.filter(|a| r.contains(*a)) {
            bail!("{}", t!("registry.addr_in_ts", addr = a, net = r));
        }
    }
    Ok(())
}

/// The checks against the host: no prefix may contain one of the hub's
/// addresses, overlap a network it is connected to, or overlap a route it
/// did not make.
pub(crate) fn check_host(remote_ts: &[Subnet], host: &HostNetworks) -> Result<()> {
    for r in remote_ts {
        if let Some(a) = host.addrs.iter().find(|a| r.contains(**a)) {
            bail!("{}", t!("registry.contains_hub_addr", net = r, addr = a));
        }
        if let Some(route) = host.routes.iter().find(|h| h.net.overlaps(r)) {
            let dev = route
                .dev
                .as_deref()
                .map(|d| t!("registry.dev", dev = d).into_owned())
                .unwrap_or_default();
            if route.connected {
                bail!(
                    "{}",
                    t!(
                        "registry.overlaps_connected",
                        net = r,
                        route = route.net,
                        dev = dev
                    )
                );
            }
            bail!(
                "{}",
                t!(
                    "registry.overlaps_route",
                    net = r,
                    route = route.net,
                    dev = dev
                )
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &str) -> Vec<Subnet> {
        ike::ts::parse_subnets(s).unwrap()
    }

    fn refused(remote_ts: &str, local_ts: &str, remote_addr: Option<&str>) -> String {
        let e = check_selectors(
            &nets(remote_ts),
            &nets(local_ts),
            remote_addr.map(|a| a.parse().unwrap()),
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn ranges_that_are_never_a_facility_are_refused() {
        let any = "0.0.0.0/0,::/0";
        for (ts, expect) in [
            ("0.0.0.0/0", "0.0.0.0/0 is a default route"),
            ("::/0", "::/0 is a default route"),
            ("198.51.100.0/26,::/0", "::/0 is a default route"),
            ("127.0.0.0/8", "(loopback)"),
            ("127.0.0.1/32", "(loopback)"),
            ("::1/128", "(loopback)"),
            ("0.0.0.0/1", "(the unspecified address range)"),
            ("0.0.0.0/32", "(the unspecified address range)"),
            ("::/128", "(the unspecified address)"),
            ("::/1", "(the unspecified address)"),
            ("169.254.0.0/16", "(link-local)"),
            ("169.254.7.0/24", "(link-local)"),
            ("fe80::/64", "(link-local)"),
            ("224.0.0.0/24", "(multicast)"),
            ("239.1.0.0/16", "(multicast)"),
            ("ff02::/16", "(multicast)"),
            ("255.255.255.255/32", "(the broadcast address)"),
        ] {
            let e = refused(ts, any, None);
            assert!(e.starts_with("remote-ts: "), "{e}");
            assert!(e.contains(expect), "{ts}: {e}");
        }
        // Ordinary networks pass, with the default (any) hub side.
        for ts in [
            "198.51.100.0/26",
            "10.0.0.0/8",
            "2001:db8:2::/64",
            "192.0.2.7/32",
        ] {
            check_selectors(&nets(ts), &nets(any), None).unwrap();
        }
    }

    #[test]
    fn the_hub_side_and_the_facility_address_are_not_its_networks() {
        let e = refused("192.0.2.0/25", "192.0.2.0/24", None);
        assert!(
            e.contains("overlaps the hub side's local-ts 192.0.2.0/24"),
            "{e}"
        );
        let e = refused("10.0.0.0/8", "10.1.0.0/16,2001:db8::/32", None);
        assert!(e.contains("local-ts 10.1.0.0/16"), "{e}");
        // A default hub side means "whatever the hub routes": no conflict.
        check_selectors(&nets("10.0.0.0/8"), &nets("0.0.0.0/0,2001:db8::/32"), None).unwrap();
        // The README's old osaka-clinic: it connects from inside its LAN.
        let e = refused("198.51.100.128/26", "0.0.0.0/0", Some("198.51.100.130"));
        assert!(
            e.starts_with("remote-addr: 198.51.100.130 lies inside the facility's own remote-ts 198.51.100.128/26"),
            "{e}"
        );
        let e = refused("2001:db8:2::/64", "::/0", Some("2001:db8:2::1"));
        assert!(e.contains("routing loop"), "{e}");
        check_selectors(
            &nets("198.51.100.128/26"),
            &nets("0.0.0.0/0"),
            Some("192.0.2.130".parse().unwrap()),
        )
        .unwrap();
    }

    #[test]
    fn the_hubs_addresses_networks_and_routes_are_refused() {
        let route = |net: &str, dev: &str, connected| HostRoute {
            net: net.parse().unwrap(),
            dev: Some(dev.into()),
            connected,
        };
        let host = HostNetworks {
            addrs: vec![
                "203.0.113.1".parse().unwrap(),
                "2001:db8:1::1".parse().unwrap(),
            ],
            routes: vec![
                route("192.0.2.0/24", "eth0", true),
                route("2001:db8:ff::/64", "eth1", true),
                route("10.20.0.0/16", "eth0", false),
            ],
        };
        for (ts, expect) in [
            (
                "203.0.113.0/24",
                "contains 203.0.113.1, an address of the hub itself",
            ),
            ("203.0.113.1/32", "an address of the hub itself"),
            ("2001:db8:1::/48", "contains 2001:db8:1::1"),
            (
                "192.0.2.0/24",
                "overlaps 192.0.2.0/24 (dev eth0), a network the hub is connected to",
            ),
            ("192.0.2.128/25", "a network the hub is connected to"),
            ("192.0.0.0/16", "a network the hub is connected to"),
            (
                "2001:db8:ff::/64",
                "(dev eth1), a network the hub is connected to",
            ),
            (
                "10.20.30.0/24",
                "the hub's route to 10.20.0.0/16 (dev eth0), which renkei did not make",
            ),
            ("10.0.0.0/8", "which renkei did not make"),
        ] {
            let e = check_host(&nets(ts), &host).unwrap_err().to_string();
            assert!(e.starts_with("remote-ts: "), "{e}");
            assert!(e.contains(expect), "{ts}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        for ts in [
            "198.51.100.0/26",
            "10.21.0.0/16",
            "2001:db8:2::/64",
            "203.0.114.0/24",
        ] {
            check_host(&nets(ts), &host).unwrap();
        }
        // Nothing known about the host: nothing to conflict with.
        check_host(&nets("192.0.2.0/24"), &HostNetworks::default()).unwrap();
    }

    /// `peer add` and `peer set` refuse every class through the registry,
    /// with the hub's public address counted as its own, and store nothing.
    #[test]
    fn the_registry_refuses_the_hubs_routing_and_stays_unchanged() {
        use crate::registry::{Hub, NewPeer, PeerChange, Registry};
        let dir = std::env::temp_dir().join(format!(
            "renkei-hostnet-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let state = crate::state::StateDir::new(dir.clone());
        let mut reg = Registry::init(
            &state,
            &Hub {
                id: pki::Identity::parse("hub.example").unwrap(),
                public_addrs: vec!["192.0.2.1".parse().unwrap()],
                profile: "cryptrec".into(),
            },
        )
        .unwrap();
        let host = HostNetworks {
            addrs: vec!["203.0.113.1".parse().unwrap()],
            routes: vec![HostRoute {
                net: "10.9.0.0/24".parse().unwrap(),
                dev: Some("eth1".into()),
                connected: true,
            }],
        };
        let kyoto = NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            cert: true,
            remote_ts: "198.51.100.0/26".into(),
            ..Default::default()
        };
        reg.add_peer_on(&kyoto, &host).unwrap();
        for (ts, addr, expect) in [
            (
                "192.0.2.0/24",
                None,
                "contains 192.0.2.1, an address of the hub itself",
            ),
            ("203.0.113.0/24", None, "contains 203.0.113.1"),
            ("10.9.0.0/24", None, "a network the hub is connected to"),
            ("::/0", None, "default route"),
            ("127.0.0.0/8", None, "loopback"),
            ("198.51.100.128/26", Some("198.51.100.130"), "routing loop"),
        ] {
            let osaka = NewPeer {
                name: "osaka".into(),
                id: "osaka.example".into(),
                remote_ts: ts.into(),
                remote_addr: addr.map(Into::into),
                ..kyoto.clone()
            };
            let e = reg.add_peer_on(&osaka, &host).unwrap_err().to_string();
            assert!(e.contains(expect), "{ts}: {e}");
            assert_eq!(reg.peers().unwrap().len(), 1, "nothing stored: {e}");
            let change = PeerChange {
                remote_ts: Some(ts.into()),
                remote_addr: addr.map(Into::into),
                ..Default::default()
            };
            let e = reg
                .change_peer_on("kyoto", &change, &host)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{ts}: {e}");
            let stored = reg.peer("kyoto").unwrap();
            assert_eq!(stored.remote_ts[0].to_string(), "198.51.100.0/26");
            assert_eq!(stored.remote_addr, None);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
