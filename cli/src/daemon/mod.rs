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
//!
//! This module holds the [`Hub`] and its event loop; the rest is split by
//! concern:
//!
//! | module | what it owns |
//! |---|---|
//! | [`io`] | sockets, sending IKE datagrams, dropping privileges |
//! | [`events`] | what each `ike` event does to SAs, routes and status |
//! | [`install`] | Child SA installation (ike → esp), route refcounts, tunnel and path MTUs |
//! | [`reconnect`] | reconnect backoff, Child SA retries, byte lifetimes |
//! | [`reload`] | applying registry changes to the running endpoint |
//! | [`status`] | the live per-facility state and the typed status report |
//! | [`audit_map`] | what the audit log keeps of an `ike` event, repeats aggregated |
//! | [`refusals`] | attempts refused before a facility was known |
//! | [`takeover`] | last known addresses in the registry; initiating to the facilities that were up at start |
//! | [`ha`] | active/standby in a pair of hubs: keepalived's state and the registry's lease |
//! | [`evidence`] | each facility's last events, classified for `diagnose` |
//! | [`history`] | traffic samples and recent events for the status page |

mod audit_map;
mod crl;
pub(crate) mod drain;
mod events;
pub(crate) mod evidence;
pub(crate) mod ha;
pub(crate) mod history;
mod install;
mod io;
mod reconnect;
pub(crate) mod refusals;
mod reload;
pub(crate) mod status;
pub(crate) mod takeover;

pub(crate) use io::default_listen;

use crate::control::{self, Answer, Asked, Closed, Initiated, Reply, Request};
use crate::registry::{Peer, Registry};
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use esp::sys::Tun;
use esp::{DataPlane, SaTable};
use ike::Endpoint;
use reconnect::{Reconnect, RECONNECT_MIN};
use serde_json::json;
use status::PeerStatus;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Options of `renkei serve`.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    pub(crate) state: StateDir,
    pub(crate) listen: Vec<IpAddr>,
    pub(crate) tun: String,
    pub(crate) mtu: u32,
    /// First IKE retransmission timeout (doubled per try).
    pub(crate) retransmit_timeout: Duration,
    /// Transmissions of a request before the facility is given up.
    pub(crate) retransmit_tries: u32,
    /// IKE fragment size (RFC 7383).
    pub(crate) ike_fragment_size: usize,
    /// Where to serve the status page and Prometheus metrics, if anywhere
    /// (`serve --http`, alias `--metrics`).
    pub(crate) http: Option<SocketAddr>,
    /// Data-plane workers each way (TUN queues, NAT-T sockets per address).
    pub(crate) workers: usize,
    /// How often a hub whose registry is in PostgreSQL re-reads it to
    /// catch up with changes made elsewhere (another hub's operators, or
    /// while it could not be told).
    pub(crate) registry_poll: Duration,
    /// How fast the facilities that were up are initiated to at start.
    pub(crate) reinitiate: takeover::Pace,
    /// This hub's node name in an active/standby pair (`--node`), and
    /// the cluster key that opens the hub's sealed key.
    pub(crate) node: Option<(String, std::path::PathBuf)>,
}

struct Datagram {
    remote: SocketAddr,
    local: SocketAddr,
    data: Vec<u8>,
}

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
    /// lower value is forgotten after [`install::PATH_MTU_EXPIRES`]).
    mtu_learned: HashMap<String, Instant>,
    /// The routes each installed Child SA (by inbound SPI) needs.
    child_routes: HashMap<u32, Vec<(IpAddr, u8)>>,
    state: StateDir,
    started: String,
    audit: crate::audit::Writer,
    /// What the audit log keeps of IKE events, with repeats aggregated.
    audit_map: audit_map::AuditMap,
    /// Attempts refused before a facility was known.
    refusals: refusals::Refusals,
    evidence: evidence::Evidence,
    /// Revoked certificate serials and whose they were, as last applied.
    revoked: HashMap<String, String>,
    /// Counts reloads, so that a catch-up read that began before one is
    /// not applied after it ([`reload::Snapshot::generation`]).
    reload_generation: u64,
    /// Whether the last catch-up failed (logged once per outage).
    catch_up_failing: bool,
    /// The host's own addresses and routes, which no facility may take.
    host: crate::hostnet::HostWatch,
    /// Facilities whose DNS name is being resolved (one lookup at a time).
    resolving: std::collections::HashSet<String>,
    /// Where finished lookups report (`reconnect::resolve`).
    resolved_tx: mpsc::Sender<reconnect::Resolved>,
    /// Facilities initiated to at start because they were up.
    takeover: takeover::Takeover,
    /// Last known addresses and states not yet in the registry.
    last_known: takeover::LastKnownLog,
    /// In a pair of hubs (`--node`): this node's role and lease.
    ha: Option<ha::Ha>,
    /// In a pair: the cluster key the credentials are unsealed with.
    cluster_key: Option<std::path::PathBuf>,
    /// `renkei drain`: under way or finished, until cancelled.
    drain: Option<drain::Drain>,
    /// Traffic samples and recent events for the status page.
    history: history::Shared,
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
    let catch_up = registry.is_postgres().then_some(opts.registry_poll);
    let hub_cfg = registry.hub()?;
    let peers = registry.peers()?;
    let pki = match &opts.node {
        // Both hubs of a pair present the certificate sealed in the
        // registry: a wrong or missing cluster key stops the start here.
        Some((_, key)) => Some(crate::cluster::load(&registry, key)?),
        None => crate::certs::load(&opts.state, &registry)?,
    };
    let revoked = reload::revoked_serials(&registry)?;
    let last_known = registry.last_known()?;
    drop(registry);
    let sock_path = opts.state.control_socket();
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
    rt.block_on(run(
        opts, hub_cfg, peers, pki, revoked, catch_up, last_known,
    ))
}

type Pki = Option<crate::certs::Pki>;

async fn run(
    opts: ServeOptions,
    hub_cfg: crate::registry::Hub,
    peers: Vec<Peer>,
    pki: Pki,
    revoked: HashMap<String, String>,
    catch_up: Option<Duration>,
    last_known: Vec<crate::registry::LastKnown>,
) -> Result<()> {
    let mut config = ike::Config::new(hub_cfg.id.clone(), rng_seed()?);
    if let Some(pki) = pki {
        config.credentials = Some(pki.credentials);
        config.credentials_by_ca = pki.by_ca;
        config.trust = Some(pki.trust);
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
    // A disabled facility that tries to connect is refused by its name.
    for p in peers.iter().filter(|p| !p.enabled) {
        endpoint.set_disabled(&p.name, Some(p.id.clone()));
    }
    // Bound (and, off loopback, its TLS set up) before anything else is
    // created: a refusal leaves nothing half started.
    let http = match opts.http {
        Some(addr) => Some(crate::web::Server::bind(addr, &opts.state).await?),
        None => None,
    };
    let tun = Arc::new(
        Tun::create(&opts.tun, opts.mtu, opts.workers)
            .with_context(|| format!("creating TUN device {}", opts.tun))?,
    );
    let host = crate::hostnet::HostWatch::new(tun.index())?;
    let (tx, mut rx) = mpsc::channel::<Datagram>(4096);
    let io::Sockets {
        ike: ike_sockets,
        natt: natt_sockets,
        natt_group,
    } = io::Sockets::bind(&opts.listen, ike_port, natt_port, opts.workers)?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Asked>(64);
    let listener = control::bind(&opts.state)?;

    // Everything privileged is done but routes: keep CAP_NET_ADMIN only,
    // before any thread starts (capabilities are per thread).
    io::drop_privileges()?;
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
    io::spawn_receivers(&ike_sockets, &tx);
    let history = history::Shared::default();
    if let Some(http) = http {
        info!(url = %http.url(), "serving the status page at / and Prometheus metrics at /metrics");
        tokio::spawn(http.serve(ctl_tx.clone(), history.clone(), opts.state.clone()));
    }
    tokio::spawn(control::serve(listener, ctl_tx));
    let (resolved_tx, mut resolved_rx) = mpsc::channel::<reconnect::Resolved>(64);
    // One batch of last known states is written at a time.
    let (written_tx, mut written_rx) = mpsc::channel(1);
    let (lease_tx, mut lease_rx) = mpsc::channel::<ha::LeaseDone>(4);
    let (ha, cluster_key) = match opts.node.clone() {
        Some((node, key)) => (Some(ha::Ha::new(node, lease_tx)), Some(key)),
        None => (None, None),
    };

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
        audit_map: audit_map::AuditMap::default(),
        refusals: refusals::Refusals::default(),
        evidence: evidence::Evidence::default(),
        revoked,
        reload_generation: 0,
        catch_up_failing: false,
        host,
        resolving: std::collections::HashSet::new(),
        resolved_tx,
        takeover: takeover::Takeover::new(opts.reinitiate, Instant::now()),
        last_known: takeover::LastKnownLog::new(written_tx),
        ha,
        cluster_key,
        drain: None,
        history,
    };
    hub.audit.record(
        &crate::audit::actor(),
        "hub.start",
        json!({ "listen": opts.listen, "tun": hub.tun.name(), "facilities": hub.peers.len(), "node": hub.ha.as_ref().map(ha::Ha::node) }),
    );
    let now = Instant::now();
    // A node of a pair starts standby: it initiates once active.
    for p in hub.peers.values().filter(|_| hub.ha.is_none()) {
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
    // Facilities that were up when this hub (or the node before it) last
    // saw them are initiated to now, not left to their dead-peer detection.
    // A node of a pair does this when it becomes active (`ha.rs`), with
    // what the registry says then.
    if hub.ha.is_none() {
        hub.reinitiate(now, last_known);
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
    // The first tick is at once: a CRL that went stale while the hub was
    // stopped is reissued at start.
    let mut crl_tick = tokio::time::interval(crate::certs::CRL_CHECK_INTERVAL);
    crl_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // With a PostgreSQL registry: re-read it now and then on a blocking
    // thread (never on this loop, which an outage must not stall), and
    // apply what changed. One read at a time.
    let poll = catch_up.unwrap_or(Duration::from_secs(86_400 * 365));
    let mut catch_up_tick = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    catch_up_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (snap_tx, mut snap_rx) = mpsc::channel::<Result<reload::Snapshot>>(1);
    let mut reading = false;
    // Traffic for the status page's graphs; the first sample at once.
    let mut sample_tick = tokio::time::interval(history::SAMPLE_EVERY);
    sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        // The endpoint has no clock; certificate validity needs the time.
        hub.endpoint
            .set_wall_clock(Instant::now(), crate::certs::unix_now());
        hub.run_drain(Instant::now());
        if hub.is_active() {
            hub.run_reconnects(Instant::now());
            hub.run_child_retries(Instant::now());
            hub.run_takeover(Instant::now());
        }
        hub.flush().await;
        let deadline = [
            hub.endpoint.poll_timeout(),
            hub.takeover.next_at(Instant::now()),
            hub.drain.as_ref().and_then(drain::Drain::deadline),
            hub.reconnect.values().map(|r| r.at).min(),
            hub.child_retry.values().map(|r| r.at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(d) = rx.recv() => {
                // A standby hub answers no IKE (not even while keepalived
                // gives both nodes the address, in a split).
                if hub.is_active() {
                    hub.endpoint.handle_datagram(Instant::now(), d.remote, d.local, &d.data);
                }
            }
            Some(done) = lease_rx.recv() => hub.ha_lease_done(Instant::now(), done),
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                hub.endpoint.handle_timeout(Instant::now());
            }
            Some((req, who, reply)) = ctl_rx.recv() => {
                let resp = hub.handle_request(req, &who);
                let _ = reply.send(resp);
            }
            Some((peer, mtu)) = mtu_rx.recv() => hub.tunnel_mtu_changed(&peer, mtu, Instant::now()),
            Some(r) = resolved_rx.recv() => hub.resolved(Instant::now(), r),
            Some((batch, result)) = written_rx.recv() => hub.last_known_written(batch, result),
            _ = tick.tick() => {
                hub.ha_tick();
                hub.check_byte_lifetimes(Instant::now());
                hub.expire_path_mtus(Instant::now());
                let records = hub.audit_map.tick(Instant::now());
                hub.record_mapped(records);
                hub.write_last_known();
            }
            _ = crl_tick.tick() => hub.renew_crl(),
            _ = catch_up_tick.tick(), if catch_up.is_some() && !reading => {
                reading = true;
                let (state, generation, tx) = (hub.state.clone(), hub.reload_generation, snap_tx.clone());
                tokio::task::spawn_blocking(move || {
                    let _ = tx.blocking_send(reload::Snapshot::read(&state, generation));
                });
            }
            Some(read) = snap_rx.recv() => {
                reading = false;
                hub.catch_up(Instant::now(), read);
            }
            _ = sample_tick.tick() => hub.sample_traffic(),
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    info!("shutting down: deleting IKE SAs");
    hub.audit
        .record(&crate::audit::actor(), "hub.stop", json!({}));
    hub.endpoint.close_all(Instant::now());
    hub.flush().await;
    // Facilities this stop took down are not initiated to at the next
    // start: they were told (a Delete) and reconnect by themselves.
    hub.finish_last_known(&mut written_rx).await;
    // The other hub of a pair need not wait for the lease to run out.
    hub.ha_release_at_exit();
    // Repeats counted and not yet written are written too.
    let records = hub.audit_map.finish();
    hub.record_mapped(records);
    dataplane.stop();
    let _ = std::fs::remove_file(hub.state.control_socket());
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
        let records = self.audit_map.end_of_batch();
        self.record_mapped(records);
        // Applying events may have queued more (e.g. nothing today, but keep
        // the order documented in ike: transmits, then events).
        while let Some(t) = self.endpoint.poll_transmit() {
            self.send(&t).await;
        }
    }

    /// Answers one control request (from `renkei` commands or the
    /// metrics endpoint), auditing what changes something.
    fn handle_request(&mut self, req: Request, who: &str) -> Answer {
        let now = Instant::now();
        match &req {
            Request::SaUp { name } => {
                self.audit
                    .record(who, "sa.up_requested", json!({ "facility": name }))
            }
            Request::SaDown { name } => {
                self.audit
                    .record(who, "sa.down_requested", json!({ "facility": name }))
            }
            Request::Reload { .. } => self.audit.record(who, "hub.reload", json!({})),
            Request::ReloadCredentials => {
                self.audit.record(who, "hub.reload_credentials", json!({}))
            }
            // Audited by what they do (`hub.drain`, `hub.undrain`).
            Request::Ping
            | Request::Status
            | Request::Facility { .. }
            | Request::HaNotify { .. }
            | Request::Drain { .. }
            | Request::Undrain => {}
        }
        match req {
            Request::Ping => Ok(Reply::Pong),
            Request::Status => Ok(Reply::Status(Box::new(self.status()))),
            Request::Facility { name } => self
                .facility_report(&name)
                .map(|s| Reply::Status(Box::new(s))),
            Request::Reload {
                facility,
                certificates,
            } => self
                .reload(now, facility.as_deref(), certificates)
                .map(Reply::Reloaded)
                .map_err(|e| e.to_string()),
            Request::ReloadCredentials => self
                .reload_credentials()
                .map(Reply::Reloaded)
                .map_err(|e| e.to_string()),
            Request::HaNotify { state } => self.ha_notify(now, state, who).map(Reply::Ha),
            Request::SaUp { name } => {
                if let Some(ha) = self.ha.as_ref().filter(|h| !h.is_active()) {
                    return Err(
                        rust_i18n::t!("ha.standby_sa_up", node = ha.node(), name = name)
                            .into_owned(),
                    );
                }
                if !self.peers.get(&name).is_some_and(|p| p.enabled) {
                    return Err(format!("name: no enabled facility named '{name}'"));
                }
                match self.start_initiate(now, &name) {
                    Ok(id) => Ok(Reply::Initiated(Initiated {
                        // A name is resolved first: no IKE SA yet.
                        ike_sa: id.map_or_else(|| "-".to_string(), |id| id.to_string()),
                    })),
                    Err(e) => Err(e),
                }
            }
            Request::Drain { to, wait_secs } => self
                .start_drain(now, to.as_deref(), wait_secs, who)
                .map(|r| Reply::Drain(Box::new(r))),
            Request::Undrain => self.cancel_drain(who).map(|r| Reply::Drain(Box::new(r))),
            Request::SaDown { name } => {
                let ids = self.endpoint.ike_sas_of(&name);
                if ids.is_empty() {
                    return Err(format!("name: facility '{name}' has no IKE SA"));
                }
                self.reconnect.remove(&name);
                for id in &ids {
                    self.endpoint.close(now, *id);
                }
                Ok(Reply::Closed(Closed { closed: ids.len() }))
            }
        }
    }
}
