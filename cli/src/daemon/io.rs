//! The hub's sockets and privileges: binding the IKE and NAT-T ports,
//! receiving IKE datagrams, sending the endpoint's transmits, and dropping
//! every capability but `CAP_NET_ADMIN` once all is bound.

use super::{Datagram, Hub};
use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// A bound socket with its local address (known once bound, so a transmit
/// asks the kernel nothing).
pub(super) type Bound<S> = (SocketAddr, Arc<S>);

/// The hub's UDP sockets on every listening address.
pub(super) struct Sockets {
    /// The IKE port (500), one socket per address.
    pub(super) ike: Vec<Bound<tokio::net::UdpSocket>>,
    /// The first socket of each address's NAT-T group, for IKE over NAT-T.
    pub(super) natt: Vec<Bound<UdpSocket>>,
    /// Every NAT-T socket, for the data plane's workers.
    pub(super) natt_group: Vec<Arc<UdpSocket>>,
}

impl Sockets {
    /// Binds the IKE port alone and a `SO_REUSEPORT` group of `workers`
    /// NAT-T sockets on each address.
    pub(super) fn bind(
        listen: &[IpAddr],
        ike_port: u16,
        natt_port: u16,
        workers: usize,
    ) -> Result<Sockets> {
        let mut out = Sockets {
            ike: Vec::new(),
            natt: Vec::new(),
            natt_group: Vec::new(),
        };
        for ip in listen {
            let s500 = bind_udp(*ip, ike_port, false)?;
            s500.set_nonblocking(true)?;
            out.ike.push((
                s500.local_addr()?,
                Arc::new(tokio::net::UdpSocket::from_std(s500)?),
            ));
            for i in 0..workers {
                let s = Arc::new(bind_udp(*ip, natt_port, true)?);
                if i == 0 {
                    out.natt.push((s.local_addr()?, s.clone()));
                }
                out.natt_group.push(s);
            }
        }
        Ok(out)
    }
}

/// One task per IKE socket, feeding what arrives to the control loop.
pub(super) fn spawn_receivers(
    sockets: &[Bound<tokio::net::UdpSocket>],
    tx: &mpsc::Sender<Datagram>,
) {
    for (local, s) in sockets {
        let (local, s, tx) = (*local, s.clone(), tx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                match s.recv_from(&mut buf).await {
                    Ok((n, remote)) => {
                        if tx
                            .send(Datagram {
                                remote,
                                local,
                                data: buf[..n].to_vec(),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        debug!("UDP {local}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
}

/// Binds a UDP socket. `shared`: one of a `SO_REUSEPORT` group on the
/// NAT-T port, over which the kernel spreads facilities (by address and
/// port, so each facility's packets stay in order on one worker). The IKE
/// port is bound alone, so a second hub on the same addresses fails here
/// before it could join the group.
fn bind_udp(ip: IpAddr, port: u16, shared: bool) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if ip.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if shared {
        s.set_reuse_port(true)?;
    }
    s.bind(&SocketAddr::new(ip, port).into())
        .with_context(|| format!("binding UDP {}", SocketAddr::new(ip, port)))?;
    Ok(s.into())
}

impl Hub {
    /// Sends one IKE datagram. On the IKE port this waits for the socket
    /// to be writable: tokio knows a socket's readiness only once its
    /// reactor has polled it, so a `try_send_to` right after binding fails
    /// with "operation would block" (the first IKE_SA_INIT after start was
    /// lost that way, delaying every hub-initiated facility by a
    /// retransmission).
    pub(super) async fn send(&self, t: &ike::Transmit) {
        let matches = |a: SocketAddr| {
            a.port() == t.local.port()
                && a.is_ipv4() == t.remote.is_ipv4()
                && (t.local.ip().is_unspecified()
                    || a.ip() == t.local.ip()
                    || a.ip().is_unspecified())
        };
        let result = if t.local.port() == self.endpoint.config().natt_port {
            self.natt_sockets
                .iter()
                .find(|(a, _)| matches(*a))
                .map(|(_, s)| s.send_to(&t.contents, t.remote).map(drop))
        } else {
            match self.ike_sockets.iter().find(|(a, _)| matches(*a)) {
                Some((_, s)) => Some(s.send_to(&t.contents, t.remote).await.map(drop)),
                None => None,
            }
        };
        match result {
            Some(Ok(())) => {}
            Some(Err(e)) => warn!(remote = %t.remote, "send failed: {e}"),
            None => warn!(remote = %t.remote, local = %t.local, "no socket to send from"),
        }
    }
}

/// Drops every capability but CAP_NET_ADMIN (needed for routes) from the
/// calling thread, and from the bounding set so none comes back.
pub(super) fn drop_privileges() -> Result<()> {
    use caps::{CapSet, Capability, CapsHashSet};
    if !caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_ADMIN).unwrap_or(false) {
        bail!("serve needs CAP_NET_ADMIN (run as root or under the systemd unit)");
    }
    let keep: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            if cap != Capability::CAP_NET_ADMIN {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(|e| anyhow::anyhow!("dropping {cap} from the bounding set: {e}"))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| anyhow::anyhow!("clearing ambient capabilities: {e}"))?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .map_err(|e| anyhow::anyhow!("clearing inheritable capabilities: {e}"))?;
    caps::set(None, CapSet::Effective, &keep)
        .map_err(|e| anyhow::anyhow!("setting effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(|e| anyhow::anyhow!("setting permitted capabilities: {e}"))?;
    info!("privileges dropped to CAP_NET_ADMIN");
    Ok(())
}

/// Default listen addresses: every IPv4 address, and every IPv6 address
/// when the host has IPv6.
pub(crate) fn default_listen() -> Vec<IpAddr> {
    let mut v = vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
    if Path::new("/proc/net/if_inet6").exists()
        && UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).is_ok()
    {
        v.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
    v
}
