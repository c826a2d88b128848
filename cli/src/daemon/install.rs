//! Child SAs into the data plane: the ike → esp translation, the routes
//! each Child SA needs (counted, since Child SAs of one facility may share
//! a prefix) and the MTU those routes carry, including a smaller path
//! learned from ICMP.

use super::status::ChildStatus;
use super::Hub;
use crate::hostnet;
use esp::{ChildSaSpec, Selector};
use ike::crypto::{Encr, Integ};
use ike::ts::Subnet;
use ike::wire::TrafficSelector;
use ike::ChildSaInfo;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How long a path MTU learned from ICMP holds: the kernel's own default
/// (`net.ipv4.route.mtu_expires`, 600 s), after which the path is tried at
/// the configured MTU again.
pub(super) const PATH_MTU_EXPIRES: Duration = Duration::from_secs(600);

fn to_selector(ts: &TrafficSelector) -> Selector {
    Selector {
        start: ts.start,
        end: ts.end,
        protocol: ts.ip_protocol,
        start_port: ts.start_port,
        end_port: ts.end_port,
    }
}

fn esp_suite(info: &ChildSaInfo) -> (esp::Cipher, Option<esp::Integrity>) {
    let cipher = match info.suite.encr {
        Encr::AesGcm16 { bits } => esp::Cipher::AesGcm16(bits),
        Encr::AesCbc { bits } => esp::Cipher::AesCbc(bits),
        Encr::CamelliaCbc { bits } => esp::Cipher::CamelliaCbc(bits),
    };
    let integ = info.suite.integ.map(|i| match i {
        Integ::HmacSha256_128 => esp::Integrity::HmacSha256_128,
        Integ::HmacSha384_192 => esp::Integrity::HmacSha384_192,
        Integ::HmacSha512_256 => esp::Integrity::HmacSha512_256,
    });
    (cipher, integ)
}

impl Hub {
    /// Installs a negotiated Child SA: its routes, then the data plane.
    /// False when the hub refused it (see [`Hub::refuse_child`]).
    pub(super) fn install_child(
        &mut self,
        peer: &str,
        child: ChildSaInfo,
        replacing: Option<u32>,
    ) -> bool {
        let (cipher, integrity) = esp_suite(&child);
        let spec = ChildSaSpec {
            peer: peer.to_string(),
            spi_in: child.spi_in,
            spi_out: child.spi_out,
            cipher,
            integrity,
            esn: child.suite.esn,
            encr_in: child.keys.encr_in,
            integ_in: child.keys.integ_in,
            encr_out: child.keys.encr_out,
            integ_out: child.keys.integ_out,
            local_ts: child.local_ts.iter().map(to_selector).collect(),
            remote_ts: child.remote_ts.iter().map(to_selector).collect(),
            remote: child.remote,
        };
        let prefixes: Vec<(IpAddr, u8)> =
            spec.remote_ts.iter().flat_map(Selector::prefixes).collect();
        if let Err(e) = self.check_routes(peer, &prefixes, spec.remote.ip()) {
            self.refuse_child(peer, child.spi_in, &format!("{e:#}"));
            return false;
        }
        let tunnel_mtu = self.table.mtu(peer);
        tunnel_mtu.configure(self.configured_mtu(peer));
        let mtu = tunnel_mtu.get();
        let src = self.route_source(&spec.local_ts);
        let mut routes = Vec::new();
        for (addr, len) in prefixes {
            let family_src = src.iter().copied().find(|s| s.is_ipv4() == addr.is_ipv4());
            let count = self.routes.get(&(addr, len)).map_or(0, |(c, _)| *c);
            if count == 0 {
                // Never over a route someone else made (EEXIST): the
                // kernel refuses, and so does the hub, for the whole SA.
                let mtu = Some(route_mtu(mtu, addr));
                if let Err(e) = esp::sys::add_route(addr, len, self.tun.index(), family_src, mtu) {
                    let why = if e.raw_os_error() == Some(libc::EEXIST) {
                        format!("the route to {addr}/{len} exists and is not the hub's; it is left alone")
                    } else {
                        format!("cannot add the route to {addr}/{len}: {e}")
                    };
                    self.release_routes(peer, routes);
                    self.refuse_child(peer, child.spi_in, &why);
                    return false;
                }
                info!(%peer, route = %format!("{addr}/{len}"), dev = self.tun.name(), "route added");
            }
            self.routes.entry((addr, len)).or_insert((0, family_src)).0 += 1;
            routes.push((addr, len));
        }
        let installed = match replacing {
            Some(old_spi_in) => self.table.install_replacing(&spec, old_spi_in),
            None => self.table.install(&spec),
        };
        if let Err(e) = installed {
            self.release_routes(peer, routes);
            self.refuse_child(
                peer,
                child.spi_in,
                &format!("cannot install it in the data plane: {e}"),
            );
            return false;
        }
        self.child_routes.insert(child.spi_in, routes);
        let st = self.status.entry(peer.to_string()).or_default();
        st.children.push(ChildStatus {
            spi_in: child.spi_in,
            spi_out: child.spi_out,
            suite: child.suite.to_string(),
            local_ts: child.local_ts,
            remote_ts: child.remote_ts,
            established: crate::registry::now_rfc3339(),
        });
        true
    }

    /// Checks a Child SA's prefixes against the hub's own routing as it is
    /// now (its networks may have changed since `peer add`), the
    /// facility's configured hub side, and the address it connects from.
    fn check_routes(
        &mut self,
        peer: &str,
        prefixes: &[(IpAddr, u8)],
        remote: IpAddr,
    ) -> anyhow::Result<()> {
        let nets = prefixes
            .iter()
            .map(|(a, l)| Subnet::new(*a, *l))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("remote-ts: {e}"))?;
        let local = self
            .peers
            .get(peer)
            .map(|p| p.local_ts.clone())
            .unwrap_or_default();
        hostnet::check_selectors(&nets, &local, Some(remote))?;
        hostnet::check_host(&nets, self.host.current()?)
    }

    /// Refuses a negotiated Child SA the hub cannot route: nothing is
    /// installed, the facility is asked to delete it, and the reason is
    /// logged, audited and shown as the facility's last error (its state
    /// is `degraded` while no Child SA carries traffic).
    fn refuse_child(&mut self, peer: &str, spi_in: u32, reason: &str) {
        error!(%peer, spi_in = format_args!("{spi_in:08x}"), "Child SA refused: {reason}");
        self.audit.record(
            "renkei",
            "sa.child_refused",
            serde_json::json!({ "facility": peer, "spi_in": format!("{spi_in:08x}"), "reason": reason }),
        );
        self.status.entry(peer.to_string()).or_default().last_error =
            Some(format!("Child SA refused by the hub: {reason}"));
        if let Err(e) = self.endpoint.delete_child(Instant::now(), spi_in) {
            warn!(%peer, "cannot delete the refused Child SA: {e}");
        }
    }

    pub(super) fn remove_child(&mut self, peer: &str, spi_in: u32, spi_out: u32) {
        self.table.remove(spi_in, spi_out);
        if let Some(st) = self.status.get_mut(peer) {
            st.children.retain(|c| c.spi_in != spi_in);
        }
        let routes = self.child_routes.remove(&spi_in).unwrap_or_default();
        self.release_routes(peer, routes);
    }

    /// Drops a Child SA's claim on its routes; a route no Child SA needs
    /// any more is deleted (only ever the hub's own: see
    /// [`esp::sys::delete_route`]).
    fn release_routes(&mut self, peer: &str, routes: Vec<(IpAddr, u8)>) {
        for key in routes {
            if let Some((count, _)) = self.routes.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.routes.remove(&key);
                    match esp::sys::delete_route(key.0, key.1, self.tun.index()) {
                        Ok(()) => {
                            info!(%peer, route = %format!("{}/{}", key.0, key.1), "route removed")
                        }
                        Err(e) => warn!(%peer, "cannot remove route {}/{}: {e}", key.0, key.1),
                    }
                }
            }
        }
    }

    /// The tunnel MTU the operator set for a facility (`peer add --mtu`),
    /// never above the TUN device's (`serve --mtu`, the default).
    pub(super) fn configured_mtu(&self, peer: &str) -> u32 {
        let tun = self.tun.mtu();
        self.peers
            .get(peer)
            .and_then(|p| p.mtu)
            .map_or(tun, |m| m.min(tun))
    }

    /// The data plane found the path to a facility smaller (or larger
    /// again) than its tunnel: its routes get the new MTU, so the kernel
    /// fragments or answers with ICMP before packets reach the TUN device
    /// and the hub's own TCP sizes its segments to fit.
    pub(super) fn tunnel_mtu_changed(&mut self, peer: &str, mtu: u32, now: Instant) {
        if self.table.mtu(peer).learned().is_some() {
            self.mtu_learned.insert(peer.to_string(), now);
        } else {
            self.mtu_learned.remove(peer);
        }
        info!(%peer, tunnel_mtu = mtu, "setting the facility's routes to its tunnel MTU");
        self.set_route_mtus(peer);
    }

    /// Forgets path MTUs learned longer ago than [`PATH_MTU_EXPIRES`], as
    /// the kernel forgets its own: if the path is still small, the next
    /// large packet finds out again.
    pub(super) fn expire_path_mtus(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .mtu_learned
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= PATH_MTU_EXPIRES)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in expired {
            self.mtu_learned.remove(&peer);
            self.table.mtu(&peer).forget();
            info!(%peer, "learned path MTU expired; back to the configured tunnel MTU");
            self.set_route_mtus(&peer);
        }
    }

    /// Gives every route of a facility's Child SAs its tunnel MTU now.
    pub(super) fn set_route_mtus(&self, peer: &str) {
        let mtu = self.table.mtu(peer).get();
        let Some(st) = self.status.get(peer) else {
            return;
        };
        let keys: std::collections::BTreeSet<(IpAddr, u8)> = st
            .children
            .iter()
            .filter_map(|c| self.child_routes.get(&c.spi_in))
            .flatten()
            .copied()
            .collect();
        for (addr, len) in keys {
            let Some((_, src)) = self.routes.get(&(addr, len)) else {
                continue;
            };
            let mtu = route_mtu(mtu, addr);
            if let Err(e) = esp::sys::set_route_mtu(addr, len, self.tun.index(), *src, mtu) {
                warn!(%peer, route = %format!("{addr}/{len}"), "cannot set the route's MTU: {e}");
            }
        }
    }

    /// A host address inside the hub-side selectors, so that traffic the hub
    /// itself originates carries a source the facility accepts.
    fn route_source(&self, local: &[Selector]) -> Vec<IpAddr> {
        let addrs = esp::sys::local_addresses().unwrap_or_default();
        let usable = |a: &IpAddr| {
            !a.is_loopback()
                && !a.is_unspecified()
                && !matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
        };
        let mut out = Vec::new();
        for want_v4 in [true, false] {
            let narrow = local
                .iter()
                .filter(|s| s.start.is_ipv4() == want_v4)
                .all(|s| s.prefixes().iter().all(|(_, l)| *l > 0));
            // With 0.0.0.0/0 on the hub side any address would do; let the
            // kernel choose rather than guess.
            if !narrow {
                continue;
            }
            if let Some(a) = addrs.iter().find(|a| {
                a.is_ipv4() == want_v4 && usable(a) && local.iter().any(|s| s.matches(**a, 0, None))
            }) {
                out.push(*a);
            }
        }
        out
    }
}

/// The MTU of a route to a facility's prefix: its tunnel MTU, but for IPv6
/// never below 1280 (RFC 8200 §5: the tunnel fragments beneath IPv6; the
/// data plane sends such packets in a fragmented outer datagram).
fn route_mtu(mtu: u32, addr: IpAddr) -> u32 {
    if addr.is_ipv6() {
        mtu.max(esp::mtu::IPV6_MIN_MTU)
    } else {
        mtu
    }
}
