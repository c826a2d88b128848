//! `renkei`: the IPsec/IKEv2 VPN hub of a regional medical-information
//! network, and every operator command.
//!
//! ```text
//!  renkei init / peer … ──▶ registry (state dir) ──reload──▶ renkei serve ──▶ ike + esp
//!  renkei status / sa … ──▶ control socket ───────────────────────┘
//! ```
#![forbid(unsafe_code)]

mod audit;
mod certs;
mod control;
mod daemon;
mod export;
mod metrics;
mod registry;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use control::Request;
use daemon::status::{ChildSaStatus, FacilityState, HubStatus};
use pki::Identity;
use registry::{Hub, NewPeer, Registry};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// renkei: an IPsec/IKEv2 VPN hub for medical-information networks.
///
/// Facilities' routers (YAMAHA RTX, NEC IX, Cisco, FortiGate, strongSwan)
/// connect with IKEv2 and ESP-in-UDP; only CRYPTREC-listed algorithms are
/// negotiated. Everything an instance keeps lives in its state directory.
#[derive(Debug, Parser)]
#[command(name = "renkei", version, propagate_version = true)]
struct Cli {
    /// State directory: registry database, control socket.
    #[arg(
        long,
        global = true,
        env = "RENKEI_STATE",
        default_value = "/var/lib/renkei"
    )]
    state: PathBuf,
    /// Log filter for the daemon (error, warn, info, debug, trace, or
    /// tracing directives such as "ike=debug").
    #[arg(long, global = true, env = "RENKEI_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the state directory and registry for a new hub.
    Init {
        /// The hub's IKE identity (an IP, an FQDN, or user@domain).
        #[arg(long)]
        hub_id: String,
        /// Address(es) facilities use to reach the hub (for exported configs).
        #[arg(long = "public-addr", value_name = "ADDR")]
        public_addr: Vec<IpAddr>,
        /// Cryptographic profile; only "cryptrec" exists.
        #[arg(long, default_value = "cryptrec")]
        profile: String,
        /// Key type of the CA and of the hub's certificate: ecdsa-p384,
        /// ecdsa-p256 (about half the hub's CPU per certificate handshake,
        /// for hubs with very many facilities) or rsa-3072 (for routers
        /// that only take RSA certificates).
        #[arg(long, default_value = "ecdsa-p384", value_name = "KEY")]
        ca_key: pki::ca::KeyKind,
    },
    /// Issue, revoke and list facility certificates from the hub's CA.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Add, list, show, remove, enable or disable facilities.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Run the hub until SIGINT or SIGTERM.
    Serve {
        /// Address to listen on for IKE (UDP 500) and NAT-T (UDP 4500);
        /// repeat for several. Default: all IPv4 and IPv6 addresses.
        #[arg(long, value_name = "ADDR")]
        listen: Vec<IpAddr>,
        /// Name of the TUN device the facilities' prefixes are routed to.
        #[arg(long, default_value = "renkei0")]
        tun: String,
        /// Tunnel MTU: the largest inner packet sent to a facility whole,
        /// and the TUN device's MTU. The default, 1358, is the largest
        /// whose ESP-in-UDP datagram fits a 1454-byte PPPoE path (NTT
        /// FLET'S) and a 1460-byte IPv6 IPoE tunnel (DS-Lite, MAP-E) over
        /// IPv4 with every CRYPTREC suite (AES-CBC with SHA-512 adds the
        /// most: 86 bytes). `peer add --mtu` lowers it per facility; a
        /// smaller path is also learned from ICMP while the hub runs.
        #[arg(long, default_value_t = 1358, value_parser = clap::value_parser!(u32).range(576..=9000))]
        mtu: u32,
        /// First IKE retransmission timeout in seconds; doubled on each try.
        #[arg(long, default_value_t = 2.0, value_name = "SECS")]
        retransmit_timeout: f64,
        /// Transmissions of an IKE request (including liveness checks)
        /// before the facility is declared dead.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
        retransmit_tries: u32,
        /// Largest IKE datagram towards facilities that support IKE
        /// fragmentation (RFC 7383); larger messages are fragmented.
        #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(200..=65000))]
        ike_fragment_size: u32,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9810).
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<std::net::SocketAddr>,
        /// Data-plane workers in each direction: TUN queues, and NAT-T
        /// sockets per listening address (the kernel spreads facilities
        /// over them). 0: one per CPU core.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
        workers: u16,
    },
    /// Live state of every facility, from the running hub.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Security associations of the running hub.
    #[command(subcommand)]
    Sa(SaCommand),
    /// The append-only audit log of operator changes and tunnel events.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a facility router's configuration, matching what the hub accepts.
    Export {
        /// The facility.
        name: String,
        /// Configuration format.
        #[arg(long, value_enum)]
        format: export::Format,
        /// Include the pre-shared key (otherwise a comment marks its place).
        #[arg(long)]
        with_secret: bool,
    },
    /// Every facility's configured and negotiated algorithms against the
    /// CRYPTREC profile, with the end-of-2030 deadline for 112-bit ones.
    Compliance {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Issue a key and certificate for a facility: writes NAME.key (0600),
    /// NAME.pem, ca.pem, and NAME.p12 with its password in
    /// NAME.p12.password (both 0600) into DIR. The facility's identity goes
    /// in the certificate's subjectAltName.
    Issue {
        /// The facility (as registered with `peer add`).
        name: String,
        /// Key type.
        #[arg(
            long,
            default_value = "ecdsa-p256",
            value_name = "ecdsa-p256|ecdsa-p384|rsa-3072|ed25519"
        )]
        key: pki::ca::KeyKind,
        /// Directory to write the files to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Revoke every current certificate of a facility: the CRL
    /// (STATE/ca/crl.pem) is rewritten, the running hub refuses the
    /// certificates from now on and closes the facility's tunnel.
    Revoke {
        /// The facility.
        name: String,
    },
    /// List issued certificates.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check that no record was edited, removed or inserted; prints the
    /// number of records and the head hash (keep it elsewhere to detect a
    /// rewrite of the newest records).
    Verify,
    /// Print the newest records.
    Show {
        /// How many records.
        #[arg(long, default_value_t = 50)]
        tail: usize,
        /// Print the raw JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Register a facility.
    Add(Box<PeerAdd>),
    /// List facilities.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one facility's configuration.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a facility; options not given keep their values. A change to
    /// identity, key, selectors, address or proposals restarts its tunnel;
    /// lifetimes apply to its next SAs. Other facilities are not touched.
    Set(Box<PeerSet>),
    /// Remove a facility (its tunnel is torn down).
    Remove { name: String },
    /// Disable a facility (its tunnel is torn down and refused).
    Disable { name: String },
    /// Enable a disabled facility.
    Enable { name: String },
}

#[derive(Debug, Args)]
struct PeerAdd {
    /// The facility's name in the registry (letters, digits, - _ .).
    name: String,
    /// The identity the facility's router authenticates as: an address,
    /// user@domain, an FQDN, or (with --cert) a distinguished name such as
    /// "C=JP, O=Kyoto Hospital, CN=kyoto.example.jp".
    #[arg(long)]
    id: String,
    /// File holding the pre-shared key (at least 16 bytes; a trailing
    /// newline is ignored).
    #[arg(long, conflicts_with = "cert", required_unless_present = "cert")]
    psk_file: Option<PathBuf>,
    /// Authenticate with a certificate from the hub's CA (issue it with
    /// `renkei cert issue NAME`); the hub answers with its own certificate.
    #[arg(long)]
    cert: bool,
    /// The facility's prefixes, comma-separated CIDRs.
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    remote_ts: String,
    /// The hub-side prefixes the facility may reach (default: any).
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    local_ts: Option<String>,
    /// The facility's address, for the hub to initiate to (ADDR or ADDR:PORT).
    #[arg(long)]
    remote_addr: Option<String>,
    /// Initiate and keep the tunnel up (needs --remote-addr).
    #[arg(long)]
    start: bool,
    #[command(flatten)]
    tuning: Tuning,
}

/// Proposals, lifetimes and liveness: the same options for `peer add` and
/// `peer set` (where one not given keeps its stored value).
#[derive(Debug, Args)]
struct Tuning {
    /// IKE proposals in strongSwan syntax (default: the whole CRYPTREC profile).
    #[arg(long, value_name = "PROPOSALS")]
    ike: Option<String>,
    /// ESP proposals in strongSwan syntax (default: the whole CRYPTREC
    /// profile). A key exchange method (e.g. `aes256-sha256-modp2048`)
    /// turns on PFS for rekeyed Child SAs.
    #[arg(long, value_name = "PROPOSALS")]
    esp: Option<String>,
    /// Rekey the IKE SA after this many seconds (default 14400).
    #[arg(long, value_name = "SECS")]
    ike_lifetime: Option<u64>,
    /// Rekey each Child SA after this many seconds (default 3600; YAMAHA
    /// routers default to 28800).
    #[arg(long, value_name = "SECS")]
    child_lifetime: Option<u64>,
    /// Also rekey a Child SA once it has carried this many bytes.
    #[arg(long, value_name = "BYTES")]
    child_bytes: Option<u64>,
    /// Check the facility's liveness after this many silent seconds (default 30).
    #[arg(long, value_name = "SECS")]
    dpd: Option<u64>,
    /// Tunnel MTU of this facility: the largest inner packet sent to it
    /// whole (default: `serve --mtu`, which fits PPPoE and IPv6 IPoE
    /// paths). Lower it for smaller paths (e.g. 1280 for IPv6 over PPPoE
    /// or where ICMP is filtered); it cannot exceed `serve --mtu`.
    #[arg(long, value_name = "BYTES")]
    mtu: Option<u32>,
}

#[derive(Debug, Args)]
struct PeerSet {
    /// The facility to change.
    name: String,
    /// A new identity.
    #[arg(long)]
    id: Option<String>,
    /// A new pre-shared key file (switches a certificate facility to PSK).
    #[arg(long, conflicts_with = "cert")]
    psk_file: Option<PathBuf>,
    /// Switch to certificate authentication.
    #[arg(long)]
    cert: bool,
    /// New prefixes of the facility.
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    remote_ts: Option<String>,
    /// New hub-side prefixes.
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    local_ts: Option<String>,
    /// A new address of the facility.
    #[arg(long)]
    remote_addr: Option<String>,
    /// Initiate and keep the tunnel up.
    #[arg(long, conflicts_with = "no_start")]
    start: bool,
    /// Stop initiating; wait for the facility.
    #[arg(long)]
    no_start: bool,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Debug, Subcommand)]
enum SaCommand {
    /// List IKE and Child SAs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Initiate a facility's tunnel now.
    Up { name: String },
    /// Tear a facility's tunnel down (it may reconnect).
    Down { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("renkei: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) -> Result<()> {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("log: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // Under systemd the journal stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let state = cli.state.clone();
    match cli.command {
        Command::Init {
            hub_id,
            public_addr,
            profile,
            ca_key,
        } => {
            if profile != "cryptrec" {
                bail!("profile: '{profile}' is unknown; the only profile is 'cryptrec'");
            }
            let id = Identity::parse(&hub_id).map_err(|e| anyhow::anyhow!("hub-id: {e}"))?;
            let mut reg = Registry::init(
                &state,
                &Hub {
                    id: id.clone(),
                    public_addrs: public_addr.clone(),
                    profile: profile.clone(),
                },
            )?;
            if let Err(e) = certs::create(&state, &mut reg, &id, ca_key) {
                // Nothing half-made stays behind: without the registry a
                // new `renkei init` can start over.
                drop(reg);
                registry::remove_files(&state);
                return Err(e);
            }
            audit::append(
                &state,
                &audit::actor(),
                "hub.init",
                json!({ "hub_id": id.to_string(), "public_addrs": public_addr, "profile": profile }),
            )?;
            println!(
                "initialized hub {id} in {} (CA key {ca_key}; CA certificate {})",
                state.display(),
                state.join("ca/ca.pem").display()
            );
            Ok(())
        }
        Command::Peer(cmd) => peer(&state, cmd),
        Command::Cert(cmd) => cert(&state, cmd),
        Command::Serve {
            listen,
            tun,
            mtu,
            retransmit_timeout,
            retransmit_tries,
            ike_fragment_size,
            metrics,
            workers,
        } => {
            init_logging(&cli.log)?;
            if !(0.1..=60.0).contains(&retransmit_timeout) {
                bail!("retransmit-timeout: {retransmit_timeout} s is outside 0.1..=60 s");
            }
            let listen = if listen.is_empty() {
                daemon::default_listen()
            } else {
                listen
            };
            daemon::serve(daemon::ServeOptions {
                state,
                listen,
                tun,
                mtu,
                retransmit_timeout: std::time::Duration::from_secs_f64(retransmit_timeout),
                retransmit_tries,
                ike_fragment_size: ike_fragment_size as usize,
                metrics,
                workers: match workers {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(64)),
                    n => usize::from(n),
                },
            })
        }
        Command::Status { json } => {
            let status = control::status(&state)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }
        Command::Sa(SaCommand::List { json }) => {
            let status = control::status(&state)?;
            let sas: Vec<SaListEntry<'_>> = status
                .facilities
                .iter()
                .filter(|f| matches!(f.state, FacilityState::Up | FacilityState::Connecting))
                .map(|f| SaListEntry {
                    name: &f.name,
                    state: f.state,
                    remote: f.remote,
                    ike_suite: f.ike_suite.as_deref(),
                    child_sas: &f.child_sas,
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&sas)?);
            } else {
                for s in &sas {
                    println!(
                        "{} {} {} {}",
                        s.name,
                        s.state,
                        s.remote.map_or("-".into(), |a| a.to_string()),
                        s.ike_suite.unwrap_or("-")
                    );
                    print_children(s.child_sas, "  ");
                }
            }
            Ok(())
        }
        Command::Sa(SaCommand::Up { name }) => {
            control::request(&state, &Request::SaUp { name: name.clone() })?;
            println!("initiating {name}");
            Ok(())
        }
        Command::Sa(SaCommand::Down { name }) => {
            control::request(&state, &Request::SaDown { name: name.clone() })?;
            println!("closed {name}");
            Ok(())
        }
        Command::Export {
            name,
            format,
            with_secret,
        } => {
            let reg = Registry::open(&state)?;
            let (hub, peer) = (reg.hub()?, reg.peer(&name)?);
            let text = match format {
                export::Format::Swanctl => export::swanctl(&hub, &peer, with_secret)?,
            };
            print!("{text}");
            if with_secret {
                audit::append(
                    &state,
                    &audit::actor(),
                    "peer.export_secret",
                    json!({ "name": name, "format": "swanctl" }),
                )?;
            }
            Ok(())
        }
        Command::Compliance { json } => {
            let report = compliance(&state)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", report.summary);
                println!("hub: {}", report.hub_certificate);
                for note in &report.hub_findings {
                    println!("    - {note}");
                }
                for f in &report.facilities {
                    println!("{:<16} {:<22} {}", f.name, f.status, f.auth);
                    for note in &f.findings {
                        println!("    - {note}");
                    }
                }
            }
            Ok(())
        }
        Command::Audit(AuditCommand::Verify) => {
            let v = audit::verify(&state)?;
            println!("audit log intact: {} records, head {}", v.records, v.head);
            Ok(())
        }
        Command::Audit(AuditCommand::Show { tail, json }) => {
            let text = std::fs::read_to_string(audit::path(&state)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(tail)..] {
                if json {
                    println!("{line}");
                } else {
                    let r = audit::Line::parse(line);
                    println!(
                        // The sequence number unpadded, as before (the
                        // width was never applied to a JSON value).
                        "{} {} {:<24} {:<22} {}",
                        r.seq.map_or("null".into(), |n| n.to_string()),
                        r.time.as_deref().unwrap_or("?"),
                        r.actor.as_deref().unwrap_or("?"),
                        r.event.as_deref().unwrap_or("?"),
                        r.details
                    );
                }
            }
            Ok(())
        }
    }
}

/// Certificates expiring within this many days are reported.
const CERT_EXPIRY_WARNING_DAYS: i64 = 30;

/// The end of 2030 (2031-01-01T00:00:00Z): 112-bit security (MODP-2048,
/// RSA-2048) is acceptable until then under CRYPTREC's key-length criteria.
const END_OF_2030: u64 = 1_924_992_000;

/// `renkei compliance`: every facility's configured and negotiated
/// algorithms against the CRYPTREC profile.
#[derive(Debug, Serialize)]
struct ComplianceReport {
    profile: &'static str,
    summary: String,
    hub_certificate: String,
    hub_findings: Vec<String>,
    facilities: Vec<FacilityCompliance>,
}

/// One facility in the compliance report.
#[derive(Debug, Serialize)]
struct FacilityCompliance {
    name: String,
    status: Compliance,
    auth: String,
    ike_proposals: String,
    esp_proposals: String,
    negotiated_ike: Option<String>,
    negotiated_esp: Vec<String>,
    findings: Vec<String>,
}

/// A facility's standing against the CRYPTREC profile, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
enum Compliance {
    #[serde(rename = "compliant")]
    Compliant,
    /// 112-bit algorithms: acceptable until the end of 2030.
    #[serde(rename = "compliant until 2030")]
    Until2030,
    #[serde(rename = "non-compliant")]
    NonCompliant,
}

impl std::fmt::Display for Compliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Compliance::Compliant => "compliant",
            Compliance::Until2030 => "compliant until 2030",
            Compliance::NonCompliant => "non-compliant",
        })
    }
}

/// One Child SA line of `sa list --json`.
#[derive(Debug, Serialize)]
struct SaListEntry<'a> {
    name: &'a str,
    state: FacilityState,
    remote: Option<std::net::SocketAddr>,
    ike_suite: Option<&'a str>,
    child_sas: &'a [ChildSaStatus],
}

/// The compliance report: configuration from the registry, negotiated
/// suites from the running hub when there is one.
fn compliance(state: &std::path::Path) -> Result<ComplianceReport> {
    let reg = Registry::open(state)?;
    let live = control::status(state).ok();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days_left = END_OF_2030.saturating_sub(now) / 86_400;
    let mut facilities = Vec::new();
    let (mut ok, mut until_2030, mut bad) = (0, 0, 0);
    let certs = reg.certs()?;
    // The newest unrevoked certificate of `name`, with notes on its expiry.
    let cert_of = |name: &str, findings: &mut Vec<String>, level: &mut Compliance| -> String {
        let Some(c) = certs
            .iter()
            .filter(|c| c.name == name && c.revoked.is_none())
            .max_by_key(|c| c.not_after)
        else {
            findings.push("no current certificate (issue one with `renkei cert issue`)".into());
            return "certificate (none issued)".into();
        };
        let left = (c.not_after - now as i64).div_euclid(86_400);
        if left < 0 {
            findings.push(format!(
                "certificate {} expired on {}",
                c.serial,
                pki::verify::iso(c.not_after)
            ));
            *level = Compliance::NonCompliant;
        } else if left < CERT_EXPIRY_WARNING_DAYS {
            findings.push(format!(
                "certificate {} expires on {} ({left} days left)",
                c.serial,
                pki::verify::iso(c.not_after)
            ));
        }
        format!(
            "certificate {} ({}, until {})",
            c.serial,
            c.key_type,
            pki::verify::iso(c.not_after)
        )
    };
    let mut hub_findings = Vec::new();
    let hub_cert = cert_of(
        certs::HUB_CERT_NAME,
        &mut hub_findings,
        &mut Compliance::Compliant,
    );
    for p in reg.peers()? {
        let mut findings = Vec::new();
        let mut level = Compliance::Compliant;
        let auth = match p.auth {
            ike::PeerAuth::Psk(_) => "pre-shared key".to_string(),
            ike::PeerAuth::Cert => cert_of(&p.name, &mut findings, &mut level),
        };
        if p.ike.weak_groups().contains(&ike::wire::KeId::Modp2048) {
            findings.push(format!("IKE proposals allow MODP-2048 (112-bit): acceptable until 2030-12-31, {days_left} days left"));
            level = level.max(Compliance::Until2030);
        }
        if p.esp.weak_groups().contains(&ike::wire::KeId::Modp2048) {
            findings.push(format!("ESP PFS allows MODP-2048 (112-bit): acceptable until 2030-12-31, {days_left} days left"));
            level = level.max(Compliance::Until2030);
        }
        let f = live.as_ref().and_then(|l| l.facility(&p.name));
        let negotiated_ike = f.and_then(|f| f.ike_suite.clone());
        let negotiated_esp: Vec<String> = f
            .map(|f| f.child_sas.iter().map(|c| c.suite.clone()).collect())
            .unwrap_or_default();
        for suite in negotiated_ike.iter().chain(negotiated_esp.iter()) {
            if suite.contains("modp2048") {
                findings.push(format!("negotiated {suite}: MODP-2048 is 112-bit, acceptable until 2030-12-31 ({days_left} days left)"));
                level = level.max(Compliance::Until2030);
            }
            if suite.contains("x25519") {
                findings.push(format!(
                    "negotiated {suite}: X25519 is not on the CRYPTREC list"
                ));
                level = Compliance::NonCompliant;
            }
        }
        if now >= END_OF_2030 && level == Compliance::Until2030 {
            level = Compliance::NonCompliant;
        }
        match level {
            Compliance::Compliant => ok += 1,
            Compliance::Until2030 => until_2030 += 1,
            Compliance::NonCompliant => bad += 1,
        }
        facilities.push(FacilityCompliance {
            ike_proposals: p.ike.to_string(),
            esp_proposals: p.esp.to_string(),
            name: p.name,
            status: level,
            auth,
            negotiated_ike,
            negotiated_esp,
            findings,
        });
    }
    let summary = format!(
        "CRYPTREC profile (LS-0001-2022): {ok} compliant, {until_2030} compliant only until 2030-12-31, {bad} non-compliant{}",
        if live.is_none() { " (hub not running: configuration only)" } else { "" }
    );
    Ok(ComplianceReport {
        profile: "cryptrec",
        summary,
        hub_certificate: hub_cert,
        hub_findings,
        facilities,
    })
}

/// Tells a running daemon to re-read the registry.
fn notify_daemon(state: &std::path::Path) {
    match control::request(state, &Request::Reload) {
        Ok(_) => println!("applied to the running hub"),
        Err(_) => println!("(the hub is not running; this takes effect when it starts)"),
    }
}

/// A facility's configuration as `peer show --json` and the audit log
/// show it (never its key).
#[derive(Debug, Serialize)]
struct PeerView {
    name: String,
    id: String,
    auth: &'static str,
    remote_ts: Vec<String>,
    local_ts: Vec<String>,
    remote_addr: Option<String>,
    start: bool,
    ike: String,
    esp: String,
    enabled: bool,
    created: String,
    ike_lifetime: u64,
    child_lifetime: u64,
    child_bytes: Option<u64>,
    dpd: u64,
    mtu: Option<u32>,
}

impl From<&registry::Peer> for PeerView {
    fn from(p: &registry::Peer) -> PeerView {
        PeerView {
            name: p.name.clone(),
            id: p.id.to_string(),
            auth: match p.auth {
                ike::PeerAuth::Psk(_) => "psk",
                ike::PeerAuth::Cert => "cert",
            },
            remote_ts: p.remote_ts.iter().map(ToString::to_string).collect(),
            local_ts: p.local_ts.iter().map(ToString::to_string).collect(),
            remote_addr: p.remote_addr.map(|a| a.to_string()),
            start: p.start,
            ike: p.ike.to_string(),
            esp: p.esp.to_string(),
            enabled: p.enabled,
            created: p.created.clone(),
            ike_lifetime: p.lifetimes.ike.as_secs(),
            child_lifetime: p.lifetimes.child.as_secs(),
            child_bytes: p.lifetimes.child_bytes,
            dpd: p.lifetimes.dpd.as_secs(),
            mtu: p.mtu,
        }
    }
}

/// `peer list --json` and `peer show`: the configuration and warnings
/// about it.
#[derive(Debug, Serialize)]
struct PeerListing {
    #[serde(flatten)]
    peer: PeerView,
    warnings: Vec<String>,
}

impl From<&registry::Peer> for PeerListing {
    fn from(p: &registry::Peer) -> PeerListing {
        PeerListing {
            peer: PeerView::from(p),
            warnings: peer_warnings(p),
        }
    }
}

/// The audit record of `peer set`.
#[derive(Debug, Serialize)]
struct PeerChanged {
    #[serde(flatten)]
    peer: PeerView,
    psk_changed: bool,
}

/// What `peer show` and `peer add` warn about.
fn peer_warnings(p: &registry::Peer) -> Vec<String> {
    explicit_weak_groups(p)
        .iter()
        .map(|g| match g {
            ike::wire::KeId::Modp2048 => {
                "MODP-2048 (112-bit) is acceptable only until the end of 2030".to_string()
            }
            other => format!(
                "{} is not on the CRYPTREC list",
                ike::proposal::ke_name(*other)
            ),
        })
        .collect()
}

/// Weak groups in proposals the operator chose (the default profile lists
/// MODP-2048 only so that YAMAHA routers can connect, and is not flagged).
fn explicit_weak_groups(p: &registry::Peer) -> Vec<ike::wire::KeId> {
    let mut v = Vec::new();
    if p.ike.to_string() != ike::proposal::DEFAULT_IKE {
        v.extend(p.ike.weak_groups());
    }
    if p.esp.to_string() != ike::proposal::DEFAULT_ESP {
        v.extend(p.esp.weak_groups());
    }
    v.dedup();
    v
}

fn peer(state: &std::path::Path, cmd: PeerCommand) -> Result<()> {
    match cmd {
        PeerCommand::Add(a) => {
            let mut reg = Registry::open(state)?;
            let p = reg.add_peer(&NewPeer {
                name: a.name,
                id: a.id,
                psk_file: a.psk_file,
                cert: a.cert,
                remote_ts: a.remote_ts,
                local_ts: a.local_ts,
                remote_addr: a.remote_addr,
                start: a.start,
                ike: a.tuning.ike,
                esp: a.tuning.esp,
                ike_lifetime: a.tuning.ike_lifetime,
                child_lifetime: a.tuning.child_lifetime,
                child_bytes: a.tuning.child_bytes,
                dpd: a.tuning.dpd,
                mtu: a.tuning.mtu,
                no_start: false,
            })?;
            println!("added facility {} ({})", p.name, p.id);
            audit::append(
                state,
                &audit::actor(),
                "peer.add",
                serde_json::to_value(PeerView::from(&p))?,
            )?;
            for w in peer_warnings(&p) {
                println!("warning: {w}");
            }
            drop(reg);
            notify_daemon(state);
        }
        PeerCommand::List { json } => {
            let reg = Registry::open(state)?;
            let peers = reg.peers()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &peers.iter().map(PeerListing::from).collect::<Vec<_>>()
                    )?
                );
            } else {
                println!(
                    "{:<20} {:<28} {:<8} {:<32} REMOTE-ADDR",
                    "NAME", "ID", "ENABLED", "REMOTE-TS"
                );
                for p in peers {
                    let ts = p
                        .remote_ts
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    println!(
                        "{:<20} {:<28} {:<8} {:<32} {}",
                        p.name,
                        p.id.to_string(),
                        p.enabled,
                        ts,
                        p.remote_addr.map_or("-".into(), |a| a.to_string())
                    );
                }
            }
        }
        PeerCommand::Show { name, json } => {
            let reg = Registry::open(state)?;
            let listing = PeerListing::from(&reg.peer(&name)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else if let Value::Object(fields) = serde_json::to_value(&listing)? {
                // One line per field, in name order.
                for (k, val) in &fields {
                    let shown = match val {
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    println!("{k:<12} {shown}");
                }
            }
        }
        PeerCommand::Set(c) => {
            let mut reg = Registry::open(state)?;
            let p = reg.change_peer(
                &c.name,
                &NewPeer {
                    name: c.name.clone(),
                    id: c.id.clone().unwrap_or_default(),
                    psk_file: c.psk_file.clone(),
                    cert: c.cert,
                    remote_ts: c.remote_ts.clone().unwrap_or_default(),
                    local_ts: c.local_ts.clone(),
                    remote_addr: c.remote_addr.clone(),
                    start: c.start,
                    no_start: c.no_start,
                    ike: c.tuning.ike.clone(),
                    esp: c.tuning.esp.clone(),
                    ike_lifetime: c.tuning.ike_lifetime,
                    child_lifetime: c.tuning.child_lifetime,
                    child_bytes: c.tuning.child_bytes,
                    dpd: c.tuning.dpd,
                    mtu: c.tuning.mtu,
                },
            )?;
            println!("changed facility {}", p.name);
            let details = PeerChanged {
                peer: PeerView::from(&p),
                psk_changed: c.psk_file.is_some(),
            };
            audit::append(
                state,
                &audit::actor(),
                "peer.change",
                serde_json::to_value(details)?,
            )?;
            drop(reg);
            notify_daemon(state);
        }
        PeerCommand::Remove { name } => {
            Registry::open(state)?.remove_peer(&name)?;
            println!("removed facility {name}");
            audit::append(
                state,
                &audit::actor(),
                "peer.remove",
                json!({ "name": name }),
            )?;
            notify_daemon(state);
        }
        PeerCommand::Disable { name } => {
            Registry::open(state)?.set_enabled(&name, false)?;
            println!("disabled facility {name}");
            audit::append(
                state,
                &audit::actor(),
                "peer.disable",
                json!({ "name": name }),
            )?;
            notify_daemon(state);
        }
        PeerCommand::Enable { name } => {
            Registry::open(state)?.set_enabled(&name, true)?;
            println!("enabled facility {name}");
            audit::append(
                state,
                &audit::actor(),
                "peer.enable",
                json!({ "name": name }),
            )?;
            notify_daemon(state);
        }
    }
    Ok(())
}

fn cert(state: &std::path::Path, cmd: CertCommand) -> Result<()> {
    match cmd {
        CertCommand::Issue {
            name,
            key,
            out,
            days,
        } => {
            let mut reg = Registry::open(state)?;
            let issued = certs::issue(state, &mut reg, &name, key, &out, days)?;
            println!(
                "issued {key} certificate {} for {name}, valid until {}",
                issued.serial,
                pki::verify::iso(issued.not_after)
            );
            for f in &issued.files {
                println!("  {}", f.display());
            }
            audit::append(
                state,
                &audit::actor(),
                "cert.issue",
                json!({ "name": name, "serial": issued.serial, "key": key.to_string(), "not_after": pki::verify::iso(issued.not_after) }),
            )?;
        }
        CertCommand::Revoke { name } => {
            let mut reg = Registry::open(state)?;
            let serials = certs::revoke(state, &mut reg, &name)?;
            println!(
                "revoked {} of {name}: {}",
                if serials.len() == 1 {
                    "the certificate"
                } else {
                    "the certificates"
                },
                serials.join(", ")
            );
            audit::append(
                state,
                &audit::actor(),
                "cert.revoke",
                json!({ "name": name, "serials": serials }),
            )?;
            drop(reg);
            notify_daemon(state);
        }
        CertCommand::List { json } => {
            let reg = Registry::open(state)?;
            let list: Vec<CertView> = reg.certs()?.iter().map(CertView::from).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<34} {:<16} {:<28} {:<11} {:<21} REVOKED",
                    "SERIAL", "NAME", "IDENTITY", "KEY", "NOT-AFTER"
                );
                for c in &list {
                    println!(
                        "{:<34} {:<16} {:<28} {:<11} {:<21} {}",
                        c.serial,
                        c.name,
                        c.identity,
                        c.key,
                        c.not_after,
                        c.revoked.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    }
    Ok(())
}

/// A certificate as `cert list` shows it.
#[derive(Debug, Serialize)]
struct CertView {
    serial: String,
    name: String,
    identity: String,
    key: String,
    not_after: String,
    issued: String,
    revoked: Option<String>,
}

impl From<&registry::CertRecord> for CertView {
    fn from(c: &registry::CertRecord) -> CertView {
        CertView {
            serial: c.serial.clone(),
            name: c.name.clone(),
            identity: c.identity.clone(),
            key: c.key_type.clone(),
            not_after: pki::verify::iso(c.not_after),
            issued: c.issued.clone(),
            revoked: c.revoked.map(pki::verify::iso),
        }
    }
}

fn print_children(children: &[ChildSaStatus], indent: &str) {
    for c in children {
        println!(
            "{indent}child {}/{} {} {} === {}",
            c.spi_in, c.spi_out, c.suite, c.local_ts, c.remote_ts
        );
    }
}

fn print_status(status: &HubStatus) {
    let hub = &status.hub;
    println!(
        "hub: tun {} listening on {} since {}; {} IKE SAs, {} Child SAs",
        hub.tun,
        hub.listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        hub.started,
        hub.ike_sas,
        hub.child_sas
    );
    println!(
        "{:<16} {:<10} {:<21} {:<22} {:<36} {:>12} {:>12} DROPS",
        "FACILITY", "STATE", "SINCE", "REMOTE", "SUITE (IKE)", "IN", "OUT"
    );
    for f in &status.facilities {
        println!(
            "{:<16} {:<10} {:<21} {:<22} {:<36} {:>12} {:>12} {}",
            f.name,
            f.state,
            f.since.as_deref().unwrap_or("-"),
            f.remote.map_or("-".into(), |a| a.to_string()),
            f.ike_suite.as_deref().unwrap_or("-"),
            format!("{}p/{}B", f.packets_in, f.bytes_in),
            format!("{}p/{}B", f.packets_out, f.bytes_out),
            if f.drops.is_empty() {
                "-".into()
            } else {
                f.drops.describe()
            }
        );
        print_children(&f.child_sas, "    ");
        if f.path_mtu_limited {
            println!(
                "    tunnel MTU {} (lowered: the path to the facility is smaller)",
                f.mtu
            );
        }
        if let Some(e) = &f.last_error {
            println!("    last error: {e}");
        }
    }
}
