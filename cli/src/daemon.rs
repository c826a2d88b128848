//! `renkei serve`: drives the IKE endpoint with sockets and timers, installs
//! Child SAs in the data plane, routes facility prefixes to the TUN device,
//! and answers the control socket.
//!
//! ```text
//!  UDP 500 (tokio) ─┐                        ┌─▶ UDP 500 / 4500 sends
//!  UDP 4500 IKE ────┼─▶ control loop ─ ike ──┤
//!  (esp workers)    │   (one thread)         └─▶ events ─▶ SaTable, routes, status
//!  control socket ──┘
//! ```

use crate::control::{self, Request, Response};
use crate::registry::{Peer, Registry};
use anyhow::{bail, Context, Result};
use esp::sys::Tun;
use esp::{ChildSaSpec, DataPlane, SaTable, Selector};
use ike::crypto::{Encr, Integ};
use ike::wire::TrafficSelector;
use ike::{ChildSaInfo, Endpoint, Event, IkeSaId};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// Options of `renkei serve`.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    pub(crate) state: PathBuf,
    pub(crate) listen: Vec<IpAddr>,
    pub(crate) tun: String,
    pub(crate) mtu: u32,
    /// First IKE retransmission timeout (doubled per try).
    pub(crate) retransmit_timeout: Duration,
    /// Transmissions of a request before the facility is given up.
    pub(crate) retransmit_tries: u32,
    /// IKE fragment size (RFC 7383).
    pub(crate) ike_fragment_size: usize,
    /// Where to serve Prometheus metrics, if anywhere.
    pub(crate) metrics: Option<SocketAddr>,
    /// Data-plane workers each way (TUN queues, NAT-T sockets per address).
    pub(crate) workers: usize,
}

struct Datagram {
    remote: SocketAddr,
    local: SocketAddr,
    data: Vec<u8>,
}

/// What the hub knows about a facility right now.
#[derive(Default)]
struct PeerStatus {
    state: &'static str,
    since: String,
    remote: Option<SocketAddr>,
    ike_suite: Option<String>,
    ike_sa: Option<IkeSaId>,
    children: Vec<ChildStatus>,
    last_error: Option<String>,
    auth_failures: u64,
    child_rekeys: u64,
    ike_rekeys: u64,
    last_rekey: Option<String>,
    handshakes: u64,
}

struct ChildStatus {
    spi_in: u32,
    spi_out: u32,
    suite: String,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
}

struct Reconnect {
    at: Instant,
    backoff: Duration,
}

const RECONNECT_MIN: Duration = Duration::from_secs(2);
/// How long a path MTU learned from ICMP holds: the kernel's own default
/// (`net.ipv4.route.mtu_expires`, 600 s), after which the path is tried at
/// the configured MTU again.
const PATH_MTU_EXPIRES: Duration = Duration::from_secs(600);
const RECONNECT_MAX: Duration = Duration::from_secs(60);

struct Hub {
    endpoint: Endpoint,
    table: Arc<SaTable>,
    tun: Arc<Tun>,
    /// The IKE sockets and, for IKE over NAT-T, the first socket of each
    /// address's NAT-T group, each with its local address (known once
    /// bound, so a transmit asks the kernel nothing).
    ike_sockets: Vec<(SocketAddr, Arc<tokio::net::UdpSocket>)>,
    natt_sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    peers: HashMap<String, Peer>,
    status: HashMap<String, PeerStatus>,
    reconnect: HashMap<String, Reconnect>,
    /// Facilities the hub initiates to whose IKE SA is up without a Child
    /// SA (it was refused): when to ask for one again.
    child_retry: HashMap<String, Reconnect>,
    /// Routes installed, with how many Child SAs need each and the
    /// source address each was given.
    routes: HashMap<(IpAddr, u8), (usize, Option<IpAddr>)>,
    /// Facilities whose tunnel MTU the path lowered, since when (the
    /// lower value is forgotten after [`PATH_MTU_EXPIRES`]).
    mtu_learned: HashMap<String, Instant>,
    /// The routes each installed Child SA (by inbound SPI) needs.
    child_routes: HashMap<u32, Vec<(IpAddr, u8)>>,
    state: PathBuf,
    started: String,
    audit: crate::audit::Writer,
    /// Revoked certificate serials and whose they were, as last applied.
    revoked: HashMap<String, String>,
}

/// Revoked serials in the registry, with the facility each belonged to.
fn revoked_serials(registry: &Registry) -> Result<HashMap<String, String>> {
    Ok(registry
        .certs()?
        .into_iter()
        .filter(|c| c.revoked.is_some())
        .map(|c| (c.serial, c.name))
        .collect())
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

fn rng_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    aws_lc_rs::rand::fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(seed)
}

/// Runs the hub until SIGINT or SIGTERM.
pub(crate) fn serve(opts: ServeOptions) -> Result<()> {
    let registry = Registry::open(&opts.state)?;
    let hub_cfg = registry.hub()?;
    let peers = registry.peers()?;
    let pki = crate::certs::load(&opts.state, &registry)?;
    let revoked = revoked_serials(&registry)?;
    drop(registry);
    let sock_path = control::socket_path(&opts.state);
    if control::request(&opts.state, &Request::Ping).is_ok() {
        bail!(
            "state: another renkei is already serving {} (control socket {})",
            opts.state.display(),
            sock_path.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(opts, hub_cfg, peers, pki, revoked))
}

type Pki = Option<(Arc<ike::Credentials>, Arc<pki::verify::TrustStore>)>;

async fn run(
    opts: ServeOptions,
    hub_cfg: crate::registry::Hub,
    peers: Vec<Peer>,
    pki: Pki,
    revoked: HashMap<String, String>,
) -> Result<()> {
    let mut config = ike::Config::new(hub_cfg.id.clone(), rng_seed()?);
    if let Some((credentials, trust)) = pki {
        config.credentials = Some(credentials);
        config.trust = Some(trust);
    } else if peers.iter().any(|p| matches!(p.auth, ike::PeerAuth::Cert)) {
        warn!(
            "this state directory has no CA: facilities configured for certificates cannot connect"
        );
    }
    config.retransmit_timeout = opts.retransmit_timeout;
    config.retransmit_tries = opts.retransmit_tries;
    config.fragment_size = opts.ike_fragment_size;
    let (ike_port, natt_port) = (config.ike_port, config.natt_port);
    let mut endpoint = Endpoint::new(config);
    for p in peers.iter().filter(|p| p.enabled) {
        endpoint
            .set_peer(p.to_config())
            .map_err(|e| anyhow::anyhow!("facility {}: {e}", p.name))?;
    }
    let tun = Arc::new(
        Tun::create(&opts.tun, opts.mtu, opts.workers)
            .with_context(|| format!("creating TUN device {}", opts.tun))?,
    );
    let (tx, mut rx) = mpsc::channel::<Datagram>(4096);
    let mut ike_sockets = Vec::new();
    let mut natt_sockets = Vec::new();
    // Every NAT-T socket, for the data plane's workers.
    let mut natt_group = Vec::new();
    for ip in &opts.listen {
        let s500 = bind_udp(*ip, ike_port, false)?;
        s500.set_nonblocking(true)?;
        ike_sockets.push((
            s500.local_addr()?,
            Arc::new(tokio::net::UdpSocket::from_std(s500)?),
        ));
        for i in 0..opts.workers {
            let s = Arc::new(bind_udp(*ip, natt_port, true)?);
            if i == 0 {
                natt_sockets.push((s.local_addr()?, s.clone()));
            }
            natt_group.push(s);
        }
    }
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<(Request, u32, oneshot::Sender<Response>)>(64);
    let listener = control::bind(&opts.state)?;
    let metrics = match opts.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics: binding {addr}"))?,
        ),
        None => None,
    };
    // Everything privileged is done but routes: keep CAP_NET_ADMIN only,
    // before any thread starts (capabilities are per thread).
    drop_privileges()?;
    let table = Arc::new(SaTable::new());
    let sink_tx = tx.clone();
    let on_ike: esp::IkeSink = Arc::new(move |remote, local, data: &[u8]| {
        // A full queue drops the datagram: IKE retransmits, the data plane must not wait.
        let _ = sink_tx.try_send(Datagram {
            remote,
            local,
            data: data.to_vec(),
        });
    });
    // Tunnel MTUs the data plane learned from the path, for the routes.
    let (mtu_tx, mut mtu_rx) = mpsc::channel::<(String, u32)>(256);
    let on_mtu: esp::datapath::MtuSink = Arc::new(move |peer: &str, mtu| {
        let _ = mtu_tx.try_send((peer.to_string(), mtu));
    });
    let dataplane = DataPlane::start(tun.clone(), natt_group, table.clone(), on_ike, on_mtu)?;
    for (local, s) in &ike_sockets {
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
    if let Some(metrics) = metrics {
        info!(addr = ?metrics.local_addr().ok(), "serving Prometheus metrics at /metrics");
        tokio::spawn(crate::metrics::serve(metrics, ctl_tx.clone()));
    }
    tokio::spawn(control::serve(listener, ctl_tx));

    let mut hub = Hub {
        endpoint,
        table,
        tun,
        ike_sockets,
        natt_sockets,
        peers: peers.into_iter().map(|p| (p.name.clone(), p)).collect(),
        status: HashMap::new(),
        reconnect: HashMap::new(),
        child_retry: HashMap::new(),
        routes: HashMap::new(),
        mtu_learned: HashMap::new(),
        child_routes: HashMap::new(),
        state: opts.state.clone(),
        started: crate::registry::now_rfc3339(),
        audit: crate::audit::Writer::start(&opts.state),
        revoked,
    };
    hub.audit.record(
        &crate::audit::actor(),
        "hub.start",
        json!({ "listen": opts.listen, "tun": hub.tun.name(), "facilities": hub.peers.len() }),
    );
    let now = Instant::now();
    for p in hub.peers.values() {
        if p.enabled && p.start {
            hub.reconnect.insert(
                p.name.clone(),
                Reconnect {
                    at: now,
                    backoff: RECONNECT_MIN,
                },
            );
        }
    }
    info!(
        hub_id = %hub_cfg.id,
        tun = hub.tun.name(),
        listen = ?opts.listen,
        workers = opts.workers,
        facilities = hub.peers.len(),
        "renkei hub serving {}",
        hub.state.display()
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        // The endpoint has no clock; certificate validity needs the time.
        hub.endpoint
            .set_wall_clock(Instant::now(), crate::certs::unix_now());
        hub.run_reconnects(Instant::now());
        hub.run_child_retries(Instant::now());
        hub.flush().await;
        let deadline = [
            hub.endpoint.poll_timeout(),
            hub.reconnect.values().map(|r| r.at).min(),
            hub.child_retry.values().map(|r| r.at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(d) = rx.recv() => {
                hub.endpoint.handle_datagram(Instant::now(), d.remote, d.local, &d.data);
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                hub.endpoint.handle_timeout(Instant::now());
            }
            Some((req, uid, reply)) = ctl_rx.recv() => {
                let resp = hub.handle_request(req, uid);
                let _ = reply.send(resp);
            }
            Some((peer, mtu)) = mtu_rx.recv() => hub.tunnel_mtu_changed(&peer, mtu, Instant::now()),
            _ = tick.tick() => {
                hub.check_byte_lifetimes(Instant::now());
                hub.expire_path_mtus(Instant::now());
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    info!("shutting down: deleting IKE SAs");
    hub.audit
        .record(&crate::audit::actor(), "hub.stop", json!({}));
    hub.endpoint.close_all(Instant::now());
    hub.flush().await;
    dataplane.stop();
    let _ = std::fs::remove_file(control::socket_path(&hub.state));
    // The last records (facilities down, hub.stop) reach the disk first.
    hub.audit.finish();
    info!("stopped");
    Ok(())
}

impl Hub {
    /// Sends what the endpoint wants sent and applies its events.
    async fn flush(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            self.send(&t).await;
        }
        while let Some(e) = self.endpoint.poll_event() {
            self.apply(e);
        }
        // Applying events may have queued more (e.g. nothing today, but keep
        // the order documented in ike: transmits, then events).
        while let Some(t) = self.endpoint.poll_transmit() {
            self.send(&t).await;
        }
    }

    /// Sends one IKE datagram. On the IKE port this waits for the socket
    /// to be writable: tokio knows a socket's readiness only once its
    /// reactor has polled it, so a `try_send_to` right after binding fails
    /// with "operation would block" (the first IKE_SA_INIT after start was
    /// lost that way, delaying every hub-initiated facility by a
    /// retransmission).
    async fn send(&self, t: &ike::Transmit) {
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

    fn run_reconnects(&mut self, now: Instant) {
        let due: Vec<String> = self
            .reconnect
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(r) = self.reconnect.get_mut(&name) else {
                continue;
            };
            let backoff = r.backoff;
            r.at = now + backoff;
            r.backoff = (backoff * 2).min(RECONNECT_MAX);
            if !self.endpoint.ike_sas_of(&name).is_empty() {
                continue;
            }
            match self.endpoint.initiate(now, &name) {
                Ok(id) => {
                    let st = self.status.entry(name.clone()).or_default();
                    st.state = "connecting";
                    st.ike_sa = Some(id);
                }
                Err(e) => warn!(peer = %name, "cannot initiate: {e}"),
            }
        }
    }

    /// Asks again for the Child SA of facilities the hub initiates to whose
    /// IKE SA lives without one (it was refused: a wrong selector or a
    /// proposal the router lacks), with the same backoff as reconnects.
    fn run_child_retries(&mut self, now: Instant) {
        let due: Vec<String> = self
            .child_retry
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let st = self.status.get(&name);
            let ike_sa = st.filter(|s| s.children.is_empty()).and_then(|s| s.ike_sa);
            let Some(ike_sa) = ike_sa else {
                // It has one now, or no IKE SA to ask under.
                self.child_retry.remove(&name);
                continue;
            };
            if let Some(r) = self.child_retry.get_mut(&name) {
                r.at = now + r.backoff;
                r.backoff = (r.backoff * 2).min(RECONNECT_MAX);
            }
            info!(peer = %name, "asking the facility again for a Child SA");
            if let Err(e) = self.endpoint.create_child(now, ike_sa) {
                debug!(peer = %name, "cannot ask for a Child SA: {e}");
                self.child_retry.remove(&name);
            }
        }
    }

    /// Rekeys Child SAs that have carried their facility's byte lifetime.
    fn check_byte_lifetimes(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (name, st) in &self.status {
            let Some(limit) = self.peers.get(name).and_then(|p| p.lifetimes.child_bytes) else {
                continue;
            };
            for c in &st.children {
                if self.table.sa_bytes(c.spi_in, c.spi_out) >= limit {
                    due.push(c.spi_in);
                }
            }
        }
        for spi in due {
            // Already rekeying or replaced: nothing to do.
            let _ = self.endpoint.rekey_child(now, spi);
        }
    }

    fn apply(&mut self, event: Event) {
        let now = crate::registry::now_rfc3339();
        let (kind, details) = audit_record(&event);
        self.audit.record("renkei", kind, details);
        match event {
            Event::PeerMoved {
                peer,
                remote,
                spis_out,
                ..
            } => {
                for spi in &spis_out {
                    self.table.update_remote(*spi, remote);
                }
                info!(%peer, %remote, child_sas = spis_out.len(), "facility moved; ESP follows");
                self.status.entry(peer).or_default().remote = Some(remote);
            }
            // The endpoint has logged it.
            Event::IkeSaRekeyed {
                new, peer, suite, ..
            } => {
                let st = self.status.entry(peer).or_default();
                st.ike_sa = Some(new);
                st.ike_suite = Some(suite.to_string());
                st.ike_rekeys += 1;
                st.last_rekey = Some(now);
            }
            Event::IkeSaUp {
                ike_sa,
                peer,
                remote,
                suite,
                initiator,
                remote_behind_nat,
            } => {
                info!(%peer, %remote, %suite, initiator, remote_behind_nat, "facility up");
                let st = self.status.entry(peer.clone()).or_default();
                st.state = "up";
                st.since = now;
                st.remote = Some(remote);
                st.ike_suite = Some(suite.to_string());
                st.ike_sa = Some(ike_sa);
                st.last_error = None;
                st.handshakes += 1;
                if let Some(r) = self.reconnect.get_mut(&peer) {
                    r.backoff = RECONNECT_MIN;
                    r.at = Instant::now() + RECONNECT_MAX;
                }
            }
            Event::ChildSaUp {
                peer,
                child,
                rekey_of,
                answered,
                ..
            } => {
                if rekey_of.is_some() {
                    let st = self.status.entry(peer.clone()).or_default();
                    st.child_rekeys += 1;
                    st.last_rekey = Some(now);
                }
                // A rekey the facility initiated: it has no inbound SA for
                // the new SPI until our answer reaches it, so keep sending
                // on the old SA until the facility deletes it.
                let replacing = rekey_of.filter(|_| answered);
                if rekey_of.is_none() {
                    // A Child SA made: the latest attempt succeeded.
                    self.child_retry.remove(&peer);
                    if let Some(st) = self.status.get_mut(&peer) {
                        st.last_error = None;
                    }
                }
                self.install_child(&peer, child, replacing);
            }
            Event::ChildSaFailed {
                peer,
                notify,
                by_peer,
                reason,
                ..
            } => {
                let who = if by_peer { "the facility" } else { "the hub" };
                warn!(%peer, %notify, "IKE SA up without a Child SA: {who} refused it ({reason})");
                let st = self.status.entry(peer.clone()).or_default();
                st.last_error = Some(format!("{notify} ({who} refused the Child SA): {reason}"));
                if st.children.is_empty()
                    && self.peers.get(&peer).is_some_and(|p| p.enabled && p.start)
                {
                    let r = self.child_retry.entry(peer).or_insert(Reconnect {
                        at: Instant::now(),
                        backoff: RECONNECT_MIN,
                    });
                    r.at = Instant::now() + r.backoff;
                }
            }
            Event::ChildSaDown {
                peer,
                spi_in,
                spi_out,
                ..
            } => self.remove_child(&peer, spi_in, spi_out),
            Event::IkeSaDown {
                ike_sa,
                peer,
                reason,
            } => {
                let Some(peer) = peer else { return };
                info!(%peer, %reason, "facility down");
                self.child_retry.remove(&peer);
                let st = self.status.entry(peer.clone()).or_default();
                if st.ike_sa == Some(ike_sa) || st.ike_sa.is_none() {
                    st.state = "down";
                    st.since = now;
                    st.ike_sa = None;
                    st.last_error = Some(reason);
                }
                if self.peers.get(&peer).is_some_and(|p| p.enabled && p.start) {
                    let r = self.reconnect.entry(peer).or_insert(Reconnect {
                        at: Instant::now(),
                        backoff: RECONNECT_MIN,
                    });
                    r.at = Instant::now() + r.backoff;
                }
            }
            Event::Refused {
                remote,
                peer,
                notify,
                reason,
            } => {
                if let Some(peer) = peer {
                    let st = self.status.entry(peer).or_default();
                    if notify == ike::wire::NotifyType::AuthenticationFailed {
                        st.auth_failures += 1;
                    }
                    st.last_error = Some(format!("{notify}: {reason}"));
                } else {
                    debug!(%remote, %notify, "refused unknown peer");
                }
            }
        }
    }

    fn install_child(&mut self, peer: &str, child: ChildSaInfo, replacing: Option<u32>) {
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
        let tunnel_mtu = self.table.mtu(peer);
        tunnel_mtu.configure(self.configured_mtu(peer));
        let mtu = tunnel_mtu.get();
        let installed = match replacing {
            Some(old_spi_in) => self.table.install_replacing(&spec, old_spi_in),
            None => self.table.install(&spec),
        };
        if let Err(e) = installed {
            error!(%peer, "cannot install Child SA: {e}");
            return;
        }
        let src = self.route_source(&spec.local_ts);
        let mut routes = Vec::new();
        for sel in &spec.remote_ts {
            for (addr, len) in sel.prefixes() {
                let family_src = src.iter().copied().find(|s| s.is_ipv4() == addr.is_ipv4());
                let (count, _) = self.routes.entry((addr, len)).or_insert((0, family_src));
                if *count == 0 {
                    let mtu = Some(route_mtu(mtu, addr));
                    match esp::sys::add_route(addr, len, self.tun.index(), family_src, mtu) {
                        Ok(()) => {
                            info!(%peer, route = %format!("{addr}/{len}"), dev = self.tun.name(), "route added")
                        }
                        Err(e) => {
                            error!(%peer, route = %format!("{addr}/{len}"), "cannot add route: {e}")
                        }
                    }
                }
                *count += 1;
                routes.push((addr, len));
            }
        }
        self.child_routes.insert(child.spi_in, routes);
        let st = self.status.entry(peer.to_string()).or_default();
        st.children.push(ChildStatus {
            spi_in: child.spi_in,
            spi_out: child.spi_out,
            suite: child.suite.to_string(),
            local_ts: child.local_ts,
            remote_ts: child.remote_ts,
        });
    }

    fn remove_child(&mut self, peer: &str, spi_in: u32, spi_out: u32) {
        self.table.remove(spi_in, spi_out);
        if let Some(st) = self.status.get_mut(peer) {
            st.children.retain(|c| c.spi_in != spi_in);
        }
        for key in self.child_routes.remove(&spi_in).unwrap_or_default() {
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
    fn configured_mtu(&self, peer: &str) -> u32 {
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
    fn tunnel_mtu_changed(&mut self, peer: &str, mtu: u32, now: Instant) {
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
    fn expire_path_mtus(&mut self, now: Instant) {
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
    fn set_route_mtus(&self, peer: &str) {
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
            let mtu = Some(route_mtu(mtu, addr));
            if let Err(e) = esp::sys::add_route(addr, len, self.tun.index(), *src, mtu) {
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

    fn handle_request(&mut self, req: Request, uid: u32) -> Response {
        let now = Instant::now();
        let who = crate::audit::user(uid);
        match &req {
            Request::SaUp { name } => {
                self.audit
                    .record(&who, "sa.up_requested", json!({ "facility": name }))
            }
            Request::SaDown { name } => {
                self.audit
                    .record(&who, "sa.down_requested", json!({ "facility": name }))
            }
            Request::Reload => self.audit.record(&who, "hub.reload", json!({})),
            Request::Ping | Request::Status => {}
        }
        match req {
            Request::Ping => Response::ok(json!("pong")),
            Request::Status => Response::ok(self.status_json()),
            Request::Reload => match self.reload(now) {
                Ok(v) => Response::ok(v),
                Err(e) => Response::err(e.to_string()),
            },
            Request::SaUp { name } => {
                if !self.peers.get(&name).is_some_and(|p| p.enabled) {
                    return Response::err(format!("name: no enabled facility named '{name}'"));
                }
                match self.endpoint.initiate(now, &name) {
                    Ok(id) => Response::ok(json!({ "ike_sa": id.to_string() })),
                    Err(e) => Response::err(e.to_string()),
                }
            }
            Request::SaDown { name } => {
                let ids = self.endpoint.ike_sas_of(&name);
                if ids.is_empty() {
                    return Response::err(format!("name: facility '{name}' has no IKE SA"));
                }
                self.reconnect.remove(&name);
                for id in &ids {
                    self.endpoint.close(now, *id);
                }
                Response::ok(json!({ "closed": ids.len() }))
            }
        }
    }

    /// Applies the registry to the running endpoint: new and changed
    /// facilities take effect for their next IKE SA; removed or disabled
    /// ones are torn down. Other facilities are not touched.
    fn reload(&mut self, now: Instant) -> Result<Value> {
        let registry = Registry::open(&self.state)?;
        let fresh: HashMap<String, Peer> = registry
            .peers()?
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let mut changed = Vec::new();
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|n| !fresh.get(*n).is_some_and(|p| p.enabled))
            .cloned()
            .collect();
        for name in &gone {
            if self.endpoint.peer(name).is_some() {
                let _ = self.endpoint.remove_peer(now, name);
            }
            self.reconnect.remove(name);
            changed.push(json!({ "name": name, "action": "removed" }));
        }
        for (name, p) in &fresh {
            if !p.enabled {
                continue;
            }
            let old = self.peers.get(name).filter(|old| old.enabled);
            let is_new = old.is_none();
            let restart = old.is_some_and(|old| old.tunnel_differs(p));
            if let Err(e) = self.endpoint.set_peer(p.to_config()) {
                warn!(peer = %name, "cannot apply: {e}");
                continue;
            }
            if restart {
                // Its tunnel was made under the old settings: renew it.
                info!(peer = %name, "facility changed; restarting its tunnel");
                for id in self.endpoint.ike_sas_of(name) {
                    self.endpoint.close(now, id);
                }
                changed.push(json!({ "name": name, "action": "changed" }));
                if p.start {
                    self.reconnect.insert(
                        name.clone(),
                        Reconnect {
                            at: now + RECONNECT_MIN,
                            backoff: RECONNECT_MIN,
                        },
                    );
                }
            }
            if is_new {
                changed.push(json!({ "name": name, "action": "added" }));
                if p.start {
                    self.reconnect.insert(
                        name.clone(),
                        Reconnect {
                            at: now,
                            backoff: RECONNECT_MIN,
                        },
                    );
                }
            }
        }
        // Revocations: refuse the certificates from now on, and close the
        // tunnels of facilities whose certificate was just revoked.
        let revoked = revoked_serials(&registry)?;
        self.endpoint
            .set_trust(crate::certs::trust(&self.state, &registry)?);
        let newly: std::collections::BTreeSet<&String> = revoked
            .iter()
            .filter(|(serial, _)| !self.revoked.contains_key(*serial))
            .map(|(_, name)| name)
            .collect();
        for name in newly {
            let ids = self.endpoint.ike_sas_of(name);
            if !ids.is_empty() {
                info!(peer = %name, "certificate revoked; closing its tunnel");
                for id in ids {
                    self.endpoint.close(now, id);
                }
                changed.push(json!({ "name": name, "action": "revoked" }));
            }
        }
        self.revoked = revoked;
        let mtu_changed: Vec<String> = fresh
            .iter()
            .filter(|(n, p)| self.peers.get(*n).is_some_and(|old| old.mtu != p.mtu))
            .map(|(n, _)| n.clone())
            .collect();
        self.peers = fresh;
        for name in mtu_changed {
            self.table.mtu(&name).configure(self.configured_mtu(&name));
            self.set_route_mtus(&name);
        }
        for name in gone.iter().filter(|n| !self.peers.contains_key(*n)) {
            self.status.remove(name);
        }
        Ok(json!({ "changes": changed }))
    }

    fn status_json(&self) -> Value {
        // When each facility last answered, as wall-clock time.
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let last_heard: HashMap<String, String> = self
            .endpoint
            .status()
            .into_iter()
            .filter_map(|s| {
                let at = wall.checked_sub(now.saturating_duration_since(s.last_received?))?;
                let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
                Some((s.peer?, crate::registry::rfc3339(secs)))
            })
            .collect();
        let mut facilities = Vec::new();
        let mut names: Vec<&String> = self.peers.keys().collect();
        names.sort();
        for name in names {
            let p = &self.peers[name];
            let st = self.status.get(name);
            let counters = self.table.counters(name).snapshot();
            let state = if !p.enabled {
                "disabled"
            } else {
                st.map_or("down", |s| match s.state {
                    "" => "down",
                    // "up" means a Child SA carries traffic: an IKE SA
                    // alone carries none.
                    "up" if s.children.is_empty() => "degraded",
                    state => state,
                })
            };
            facilities.push(json!({
                "name": name,
                "id": p.id.to_string(),
                "state": state,
                "since": st.map(|s| s.since.clone()).filter(|s| !s.is_empty()),
                "remote": st.and_then(|s| s.remote).map(|a| a.to_string()),
                "ike_suite": st.and_then(|s| s.ike_suite.clone()),
                "child_sas": st.map(|s| s.children.iter().map(|c| json!({
                    "spi_in": format!("{:08x}", c.spi_in),
                    "spi_out": format!("{:08x}", c.spi_out),
                    "suite": c.suite,
                    "local_ts": ike::ts::describe(&c.local_ts),
                    "remote_ts": ike::ts::describe(&c.remote_ts),
                })).collect::<Vec<_>>()).unwrap_or_default(),
                "bytes_in": counters.bytes_in,
                "packets_in": counters.packets_in,
                "bytes_out": counters.bytes_out,
                "packets_out": counters.packets_out,
                "drops": counters.drops.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "mtu": self.table.mtu(name).get().min(self.configured_mtu(name)),
                "path_mtu_limited": self.table.mtu(name).learned().is_some_and(|l| l < self.configured_mtu(name)),
                "auth_failures": st.map_or(0, |s| s.auth_failures),
                "handshakes": st.map_or(0, |s| s.handshakes),
                "last_heard": last_heard.get(name.as_str()).cloned(),
                "child_rekeys": st.map_or(0, |s| s.child_rekeys),
                "ike_rekeys": st.map_or(0, |s| s.ike_rekeys),
                "last_rekey": st.and_then(|s| s.last_rekey.clone()),
                "last_error": st.and_then(|s| s.last_error.clone()),
            }));
        }
        let global = self.table.global.snapshot();
        json!({
            "hub": {
                "started": self.started,
                "tun": self.tun.name(),
                "listen": self.ike_sockets.iter().map(|(a, _)| a.ip().to_string()).collect::<Vec<_>>(),
                "ike_sas": self.endpoint.status().len(),
                "half_open_ike_sas": self.endpoint.half_open_count(),
                "child_sas": self.table.snapshot().len(),
                "unattributed_drops": global.drops.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            },
            "facilities": facilities,
        })
    }
}

/// What the audit log keeps of an IKE event (never keys).
fn audit_record(event: &Event) -> (&'static str, Value) {
    match event {
        Event::IkeSaUp {
            ike_sa,
            peer,
            remote,
            suite,
            initiator,
            remote_behind_nat,
        } => (
            "sa.ike_up",
            json!({ "facility": peer, "ike_sa": ike_sa.to_string(), "remote": remote.to_string(), "suite": suite.to_string(), "hub_initiated": initiator, "behind_nat": remote_behind_nat }),
        ),
        Event::ChildSaUp {
            peer,
            child,
            rekey_of,
            ..
        } => (
            "sa.child_up",
            json!({
                "facility": peer,
                "spi_in": format!("{:08x}", child.spi_in),
                "spi_out": format!("{:08x}", child.spi_out),
                "suite": child.suite.to_string(),
                "local_ts": ike::ts::describe(&child.local_ts),
                "remote_ts": ike::ts::describe(&child.remote_ts),
                "rekey_of": rekey_of.map(|s| format!("{s:08x}")),
            }),
        ),
        Event::ChildSaDown {
            peer,
            spi_in,
            spi_out,
            ..
        } => (
            "sa.child_down",
            json!({ "facility": peer, "spi_in": format!("{spi_in:08x}"), "spi_out": format!("{spi_out:08x}") }),
        ),
        Event::IkeSaDown {
            ike_sa,
            peer,
            reason,
        } => (
            "sa.ike_down",
            json!({ "facility": peer, "ike_sa": ike_sa.to_string(), "reason": reason }),
        ),
        Event::IkeSaRekeyed {
            old,
            new,
            peer,
            suite,
        } => (
            "sa.ike_rekeyed",
            json!({ "facility": peer, "old": old.to_string(), "new": new.to_string(), "suite": suite.to_string() }),
        ),
        Event::ChildSaFailed {
            ike_sa,
            peer,
            notify,
            by_peer,
            reason,
        } => (
            "sa.child_failed",
            json!({ "facility": peer, "ike_sa": ike_sa.to_string(), "notify": notify.to_string(), "refused_by": if *by_peer { "facility" } else { "hub" }, "reason": reason }),
        ),
        Event::PeerMoved { peer, remote, .. } => (
            "sa.moved",
            json!({ "facility": peer, "remote": remote.to_string() }),
        ),
        Event::Refused {
            remote,
            peer,
            notify,
            reason,
        } => (
            if *notify == ike::wire::NotifyType::AuthenticationFailed {
                "refused.authentication"
            } else {
                "refused"
            },
            json!({ "facility": peer, "remote": remote.to_string(), "notify": notify.to_string(), "reason": reason }),
        ),
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

/// Drops every capability but CAP_NET_ADMIN (needed for routes) from the
/// calling thread, and from the bounding set so none comes back.
fn drop_privileges() -> Result<()> {
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
