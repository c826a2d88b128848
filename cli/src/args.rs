//! The command line: everything `renkei` accepts, as clap definitions.
//! What each command does is in [`crate::cmd`].

use crate::export;
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;

/// renkei: an IPsec/IKEv2 VPN hub for medical-information networks.
///
/// Facilities' routers (YAMAHA RTX, NEC IX, Cisco, FortiGate, strongSwan)
/// connect with IKEv2 and ESP-in-UDP; only CRYPTREC-listed algorithms are
/// negotiated. Everything an instance keeps lives in its state directory.
#[derive(Debug, Parser)]
#[command(name = "renkei", version, propagate_version = true)]
pub(crate) struct Cli {
    /// State directory: registry database, control socket.
    #[arg(
        long,
        global = true,
        env = "RENKEI_STATE",
        default_value = "/var/lib/renkei"
    )]
    pub(crate) state: PathBuf,
    /// Where the registry is, when it is not the SQLite file in the state
    /// directory: a PostgreSQL URL (postgresql://USER@HOST[:PORT]/DB, with
    /// sslmode=require|verify-ca|verify-full and sslrootcert=FILE for TLS;
    /// the password in a passfile, never in the URL `init` remembers).
    /// `init --registry URL` remembers it in STATE/registry.url, so other
    /// commands and the daemon need not repeat it.
    #[arg(long, global = true, env = "RENKEI_REGISTRY", value_name = "URL")]
    pub(crate) registry: Option<String>,
    /// Log filter for the daemon (error, warn, info, debug, trace, or
    /// tracing directives such as "ike=debug").
    #[arg(long, global = true, env = "RENKEI_LOG", default_value = "info")]
    pub(crate) log: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create the state directory and registry for a new hub.
    Init {
        /// The hub's IKE identity (an IP, an FQDN, or user@domain).
        #[arg(long)]
        hub_id: String,
        /// Address(es) facilities use to reach the hub (for exported
        /// configs): IP addresses or DNS names, repeated or comma-separated.
        /// Change them later with `renkei hub set --public-addr`.
        #[arg(long = "public-addr", value_name = "ADDR", value_delimiter = ',')]
        public_addr: Vec<crate::registry::PublicAddr>,
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
    /// The hub's own settings after `init`: show them, change its public
    /// addresses, renew its certificate.
    #[command(subcommand)]
    Hub(HubCommand),
    /// Roll the hub's CA over to a new key, then retire the previous one.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Add, list, show, remove, enable or disable facilities.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Run the hub until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Live state of every facility, from the running hub; with NAME,
    /// everything about one facility (its SAs, counters, certificate and
    /// last events).
    Status {
        /// One facility by name, or a pattern (`*`, `?`) for a filtered
        /// table.
        name: Option<String>,
        /// Only facilities in this state (`--state` is the state
        /// directory).
        #[arg(long, value_enum)]
        only: Option<crate::daemon::status::FacilityState>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Why a facility cannot connect: what the hub saw of it (refusals,
    /// proposals offered, identities sent, selectors), in plain language,
    /// with what to change.
    Diagnose {
        /// The facility.
        name: String,
        /// Print JSON (times in UTC) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Security associations of the running hub.
    #[command(subcommand)]
    Sa(SaCommand),
    /// Planned maintenance: hand this hub's facilities to the other hub.
    ///
    /// Facilities that announced REDIRECT_SUPPORTED are sent an IKEv2
    /// REDIRECT (RFC 5685) to `--to`; the others have their SAs deleted, so
    /// that they reconnect to the hub address (which keepalived moves to the
    /// other hub once `renkei status` says drained). New IKE SAs are
    /// redirected or refused until `renkei drain --cancel`. Prints each
    /// facility's outcome: redirected, deleted, lost or still_up.
    Drain(DrainArgs),
    /// The append-only audit log of operator changes and tunnel events.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a facility router's configuration, matching what the hub accepts.
    Export {
        /// The facility.
        name: String,
        /// Configuration format (default: the one of the facility's
        /// `--router`; needed for router "other").
        #[arg(long, value_enum)]
        format: Option<export::Format>,
        /// Include the pre-shared key (otherwise a comment marks its place).
        #[arg(long)]
        with_secret: bool,
        #[command(flatten)]
        site: ExportSite,
    },
    /// Every facility's configured and negotiated algorithms against the
    /// CRYPTREC profile, with the end-of-2030 deadline for 112-bit ones.
    Compliance {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the running hub re-read the whole registry and apply what
    /// changed (added, changed, removed, disabled facilities and
    /// revocations), as `systemctl reload renkei` does. Commands that
    /// change the registry already tell the hub; this is for changes it
    /// missed (e.g. made while its control socket was unreachable).
    Reload,
    /// Make the registry match a configuration file (TOML, kept in
    /// version control; `renkei dump` writes one) or a CSV of facilities:
    /// every problem is reported with its line, and nothing changes
    /// unless the whole file is valid. Facilities the file does not list
    /// are kept unless --prune is given. A running hub takes the changes
    /// at once; facilities whose entries did not change are not touched.
    Apply(ApplyArgs),
    /// Write the registry (hub settings and every facility, never keys) in
    /// the format `renkei apply` reads.
    Dump {
        /// Write to this file instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write an encrypted backup of the whole state directory (registry,
    /// CA, hub key and certificate, CRL, audit log) while the hub runs:
    /// the registry through SQLite's online backup, the audit log up to
    /// its last complete record. Encrypted with a passphrase (age, scrypt).
    Backup {
        /// The backup file to write (0600; an existing file is refused).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Read the passphrase from this file (first line) instead of
        /// asking for it twice on the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Active/standby with keepalived (README "Two hubs"): the hooks
    /// keepalived runs.
    #[command(subcommand)]
    Ha(HaCommand),
    /// Restore a backup into the state directory (--state), which must not
    /// exist or be empty: an existing hub is never overwritten. Stop no
    /// hub for it; start `renkei serve` afterwards.
    Restore {
        /// The backup file (`renkei backup --out`).
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Read the passphrase from this file (first line) instead of
        /// asking for it on the terminal.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

/// What the registry does not know about a facility's router, for
/// `renkei export`.
#[derive(Debug, Args)]
pub(crate) struct ExportSite {
    /// The router's WAN interface (cisco: GigabitEthernet0/0/0, fortigate:
    /// wan1, nec: GigaEthernet0.1 unless given).
    #[arg(long, value_name = "IFACE")]
    pub(crate) wan_interface: Option<String>,
    /// The router's LAN interface (cisco: GigabitEthernet0/0/1, fortigate:
    /// internal, nec: GigaEthernet1.0 unless given).
    #[arg(long, value_name = "IFACE")]
    pub(crate) lan_interface: Option<String>,
    /// The router's own address for IKE (yamaha: `ipsec ike local
    /// address`; needed with --wan-nat).
    #[arg(long, value_name = "ADDR")]
    pub(crate) local_addr: Option<IpAddr>,
    /// The router masquerades (NAPT) its own WAN: exempt IKE, NAT-T and ESP
    /// to the router itself. For yamaha, N (required) is its NAT
    /// descriptor's number; the other routers need no N.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    pub(crate) wan_nat: Option<u32>,
    /// The hub public address the router connects to (default: the first
    /// IPv4 one given to `renkei init --public-addr` or `renkei hub set --public-addr`).
    #[arg(long, value_name = "ADDR")]
    pub(crate) hub_addr: Option<IpAddr>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Issue a key and certificate for a facility: writes NAME.key (0600),
    /// NAME.pem, ca.pem, and NAME.p12 with its password in
    /// NAME.p12.password (both 0600) into DIR. The facility's identity goes
    /// in the certificate's subjectAltName. No file is ever overwritten
    /// (an existing ca.pem of this hub's CA is kept). The facility's
    /// earlier certificates stay valid until they expire, so its router
    /// can be switched without an outage; --revoke-previous revokes them.
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
        /// Revoke the facility's earlier certificates once this one is
        /// written (its router must then switch to the new one before it
        /// next connects).
        #[arg(long)]
        revoke_previous: bool,
    },
    /// Revoke every current certificate of a facility: the CRL
    /// (STATE/ca/crl.pem) is rewritten, the running hub refuses the
    /// certificates from now on and closes the facility's tunnel.
    Revoke {
        /// The facility.
        name: String,
        /// Revoke only this certificate (a serial from `cert list`), e.g.
        /// the earlier one once the router uses its new certificate.
        #[arg(long, value_name = "SERIAL")]
        serial: Option<String>,
    },
    /// List issued certificates.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Issue a client certificate for an operator to open the status page
    /// when `serve --http` is bound to a non-loopback address: writes
    /// NAME.key (0600), NAME.pem, ca.pem, and NAME.p12 with its password in
    /// NAME.p12.password (both 0600, for a browser) into DIR. Recorded as
    /// operator:NAME; `renkei cert revoke operator:NAME` shuts it out.
    IssueOperator {
        /// The operator (letters, digits, '-', '_', '.').
        name: String,
        /// Directory to write the files to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum HubCommand {
    /// The hub's identity, public addresses, profile, its certificate
    /// (subject, subjectAltName, validity, SHA-256 fingerprint) and CA,
    /// and a CA rollover under way.
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change the hub's settings; options not given keep their values.
    Set {
        /// The addresses facilities reach the hub at, replacing the stored
        /// ones: IP addresses or DNS names (stored as given; a name goes
        /// into exported router configurations as it is and is resolved by
        /// the router when it connects), repeated or comma-separated. Only
        /// exported configurations use them; running tunnels are not touched.
        #[arg(
            long = "public-addr",
            value_name = "ADDR[,ADDR…]",
            value_delimiter = ',',
            required = true
        )]
        public_addr: Vec<crate::registry::PublicAddr>,
    },
    /// Issue the hub a new key and certificate from its CA, for the same
    /// identity. The previous files are kept in STATE/retired/. A running
    /// hub takes the new certificate at once: established tunnels stay up,
    /// new IKE SAs authenticate with it.
    RenewCert {
        /// Validity in days.
        #[arg(long, default_value_t = 5 * 365)]
        days: u32,
    },
    /// For a pair of hubs: seal the hub's key and certificates into the
    /// registry under a cluster key, which is created when the file does
    /// not exist. Copy that file once to the other hub's state directory
    /// as cluster.key; both hubs then run with `serve --node`. The CA's
    /// key is not sealed: certificates are issued and revoked on this hub.
    Seal {
        /// The cluster key file (an age X25519 identity, 0600).
        /// Default: STATE/cluster.key.
        #[arg(long, value_name = "FILE")]
        cluster_key: Option<PathBuf>,
    },
}

/// keepalived's hooks for a pair of hubs (dist/keepalived/).
#[derive(Debug, Subcommand)]
pub(crate) enum HaCommand {
    /// Tell the running hub its VRRP state (keepalived's notify_master,
    /// notify_backup, notify_fault, notify_stop). Master: it takes the
    /// registry's lease and becomes active; any other state: it steps
    /// down to standby at once (its tunnels close) and releases the lease.
    Notify {
        /// The state keepalived entered.
        #[arg(value_enum, value_name = "STATE")]
        vrrp: VrrpState,
    },
    /// keepalived's check script: exits 0 when the hub runs as a node of
    /// a pair (`serve --node`) and is not draining; otherwise prints why
    /// and exits non-zero, so keepalived moves the addresses away.
    Check,
}

/// A VRRP state keepalived reports.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum VrrpState {
    Master,
    Backup,
    Fault,
    /// keepalived is stopping (treated as fault).
    Stop,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Make a new CA and reissue the hub's certificate from it. Until
    /// `ca retire-old`, the previous CA stays trusted (facility
    /// certificates it issued keep working) and the hub keeps its
    /// certificate from it for facilities that trust only the previous CA.
    /// `cert issue` issues from the new CA from now on.
    Rollover {
        /// Key type of the new CA and the hub's new certificate (default:
        /// that of the hub's current certificate).
        #[arg(long, value_name = "ecdsa-p384|ecdsa-p256|rsa-3072")]
        key: Option<pki::ca::KeyKind>,
    },
    /// End a CA rollover: stop trusting the previous CA and stop using the
    /// hub's certificate from it. Refused, listing them, while a
    /// certificate facility has no valid certificate from the new CA.
    RetireOld,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check that no record was edited, removed or inserted, across every
    /// segment (audit.log.1, audit.log.2, …, audit.log); prints the number
    /// of records and the head hash (keep it elsewhere to detect a rewrite
    /// of the newest records). Fails when the log of an initialised hub is
    /// missing or empty.
    Verify {
        /// The hash the oldest segment present continues from, when older
        /// segments were moved to an archive: the head `audit verify`
        /// printed before they were moved.
        #[arg(long, value_name = "HASH")]
        anchor: Option<String>,
    },
    /// Close the live log as the next segment (audit.log.N) and start a
    /// new one whose first record continues the chain; safe while the hub
    /// runs. Prints the segment and its head hash.
    Rotate,
    /// Print the newest records (from every segment), optionally only
    /// some.
    Show {
        /// How many records (the newest that match).
        #[arg(long, default_value_t = 50)]
        tail: usize,
        /// Print the raw JSON lines.
        #[arg(long)]
        json: bool,
        /// Only records about this facility.
        #[arg(long, value_name = "NAME")]
        facility: Option<String>,
        /// Only this event, or the events under it (`refused` also shows
        /// `refused.authentication`).
        #[arg(long, value_name = "EVENT")]
        event: Option<String>,
        /// Only records at or after this time (RFC 3339, e.g.
        /// 2026-11-30T09:00:00+09:00).
        #[arg(long, value_name = "TIME", value_parser = crate::audit::parse_time)]
        since: Option<i64>,
        /// Only records at or before this time (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = crate::audit::parse_time)]
        until: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PeerCommand {
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
    /// Remove a facility: its tunnel is torn down and its certificates
    /// are revoked (the CRL is rewritten), so that a facility added later
    /// with the same identity is not joined by the old router.
    Remove { name: String },
    /// Disable a facility (its tunnel is torn down and refused).
    Disable { name: String },
    /// Enable a disabled facility.
    Enable { name: String },
}

#[derive(Debug, Args)]
pub(crate) struct PeerAdd {
    /// The facility's name in the registry (letters, digits, - _ .).
    pub(crate) name: String,
    /// The identity the facility's router authenticates as: an address,
    /// user@domain, an FQDN, or (with --cert) a distinguished name such as
    /// "C=JP, O=Kyoto Hospital, CN=kyoto.example.jp".
    #[arg(long)]
    pub(crate) id: String,
    /// File holding the pre-shared key (at least 16 bytes; a trailing
    /// newline is ignored).
    #[arg(long, conflicts_with = "cert", required_unless_present_any = ["cert", "psk"])]
    pub(crate) psk_file: Option<PathBuf>,
    /// `--psk generate`: make a new pre-shared key (32 letters and
    /// digits) and print it once, for the facility's router.
    #[arg(long, value_parser = ["generate"], conflicts_with_all = ["cert", "psk_file"])]
    pub(crate) psk: Option<String>,
    /// Authenticate with a certificate from the hub's CA (issue it with
    /// `renkei cert issue NAME`); the hub answers with its own certificate.
    #[arg(long)]
    pub(crate) cert: bool,
    /// The facility's prefixes, comma-separated CIDRs. Refused if one
    /// overlaps another facility's, the hub's own addresses, networks or
    /// routes, --local-ts, --remote-addr, loopback, link-local, multicast
    /// or a default route.
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    pub(crate) remote_ts: String,
    /// The hub-side prefixes the facility may reach (default: any).
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    pub(crate) local_ts: Option<String>,
    /// The facility's address, for the hub to initiate to: ADDR,
    /// ADDR:PORT, or a DNS name (NAME or NAME:PORT; e.g. the router's
    /// dynamic DNS name), which is stored as given and resolved again at
    /// every connection attempt.
    #[arg(long)]
    pub(crate) remote_addr: Option<String>,
    /// Initiate and keep the tunnel up (needs --remote-addr).
    #[arg(long)]
    pub(crate) start: bool,
    #[command(flatten)]
    pub(crate) tuning: Tuning,
    #[command(flatten)]
    pub(crate) label: LabelArgs,
}

/// Proposals, lifetimes and liveness: the same options for `peer add` and
/// `peer set` (where one not given keeps its stored value).
#[derive(Debug, Args)]
pub(crate) struct Tuning {
    /// The router the facility owns: sets that router's working proposals,
    /// lifetimes and liveness (options given with it still apply), refuses
    /// algorithms it cannot negotiate, and chooses `renkei export`'s
    /// format. yamaha: IKE and ESP aes256-sha256-modp2048 (PFS); cisco:
    /// aes256-sha256-ecp384; fortigate: aes256gcm16-prfsha256-ecp384 /
    /// aes256gcm16-ecp384; nec: aes256-sha256-modp2048; strongswan and
    /// other (the default): the whole CRYPTREC profile.
    #[arg(long, value_enum, value_name = "ROUTER")]
    pub(crate) router: Option<crate::router::Router>,
    /// IKE proposals in strongSwan syntax (default: the whole CRYPTREC profile).
    #[arg(long, value_name = "PROPOSALS")]
    pub(crate) ike: Option<String>,
    /// ESP proposals in strongSwan syntax (default: the whole CRYPTREC
    /// profile). A key exchange method (e.g. `aes256-sha256-modp2048`)
    /// turns on PFS for rekeyed Child SAs.
    #[arg(long, value_name = "PROPOSALS")]
    pub(crate) esp: Option<String>,
    /// Rekey the IKE SA after this many seconds (default 14400).
    #[arg(long, value_name = "SECS")]
    pub(crate) ike_lifetime: Option<u64>,
    /// Rekey each Child SA after this many seconds (default 3600; YAMAHA
    /// routers default to 28800).
    #[arg(long, value_name = "SECS")]
    pub(crate) child_lifetime: Option<u64>,
    /// Also rekey a Child SA once it has carried this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub(crate) child_bytes: Option<u64>,
    /// Check the facility's liveness after this many silent seconds (default 30).
    #[arg(long, value_name = "SECS")]
    pub(crate) dpd: Option<u64>,
    /// Tunnel MTU of this facility: the largest inner packet sent to it
    /// whole (default: `serve --mtu`, which fits PPPoE and IPv6 IPoE
    /// paths). Lower it for smaller paths (e.g. 1280 for IPv6 over PPPoE
    /// or where ICMP is filtered); it cannot exceed `serve --mtu`.
    #[arg(long, value_name = "BYTES")]
    pub(crate) mtu: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct PeerSet {
    /// The facility to change.
    pub(crate) name: String,
    /// A new identity.
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// A new pre-shared key file (switches a certificate facility to PSK).
    #[arg(long, conflicts_with = "cert")]
    pub(crate) psk_file: Option<PathBuf>,
    /// Switch to certificate authentication.
    #[arg(long)]
    pub(crate) cert: bool,
    /// New prefixes of the facility (checked as `peer add` checks them).
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    pub(crate) remote_ts: Option<String>,
    /// New hub-side prefixes.
    #[arg(long, value_name = "CIDR[,CIDR…]")]
    pub(crate) local_ts: Option<String>,
    /// A new address of the facility (ADDR[:PORT] or a DNS name
    /// NAME[:PORT], resolved at every connection attempt).
    #[arg(long)]
    pub(crate) remote_addr: Option<String>,
    /// Initiate and keep the tunnel up.
    #[arg(long, conflicts_with = "no_start")]
    pub(crate) start: bool,
    /// Stop initiating; wait for the facility.
    #[arg(long)]
    pub(crate) no_start: bool,
    #[command(flatten)]
    pub(crate) tuning: Tuning,
    #[command(flatten)]
    pub(crate) label: LabelArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SaCommand {
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

/// The options of `renkei serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on for IKE (UDP 500) and NAT-T (UDP 4500);
    /// repeat for several. Default: all IPv4 and IPv6 addresses.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Vec<IpAddr>,
    /// Name of the TUN device the facilities' prefixes are routed to.
    #[arg(long, default_value = "renkei0")]
    pub(crate) tun: String,
    /// Tunnel MTU: the largest inner packet sent to a facility whole,
    /// and the TUN device's MTU. The default, 1358, is the largest
    /// whose ESP-in-UDP datagram fits a 1454-byte PPPoE path (NTT
    /// FLET'S) and a 1460-byte IPv6 IPoE tunnel (DS-Lite, MAP-E) over
    /// IPv4 with every CRYPTREC suite (AES-CBC with SHA-512 adds the
    /// most: 86 bytes). `peer add --mtu` lowers it per facility; a
    /// smaller path is also learned from ICMP while the hub runs.
    #[arg(long, default_value_t = 1358, value_parser = clap::value_parser!(u32).range(576..=9000))]
    pub(crate) mtu: u32,
    /// First IKE retransmission timeout in seconds; doubled on each try.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub(crate) retransmit_timeout: f64,
    /// Transmissions of an IKE request (including liveness checks)
    /// before the facility is declared dead.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) retransmit_tries: u32,
    /// Largest IP datagram (IP and UDP headers included) an IKE message
    /// may take towards facilities that support IKE fragmentation (RFC
    /// 7383); larger messages are fragmented, so that no fragment needs IP
    /// fragmentation on a path of this MTU.
    #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(200..=65000))]
    pub(crate) ike_fragment_size: u32,
    /// Serve the read-only status page at http://ADDR/ and Prometheus
    /// metrics at http://ADDR/metrics (e.g. 127.0.0.1:9810). On a
    /// loopback address it is plain HTTP; on any other address it is
    /// HTTPS and every client must present an operator certificate from
    /// the hub's CA (`renkei cert issue-operator`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) http: Option<std::net::SocketAddr>,
    /// The old name of --http (the same server, status page included).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Data-plane workers in each direction: TUN queues, and NAT-T
    /// sockets per listening address (the kernel spreads facilities
    /// over them). 0: one per CPU core.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub(crate) workers: u16,
    /// With the registry in PostgreSQL: how often the hub re-reads it and
    /// applies changes made without telling it (by another hub's
    /// operators, or while the database was down), in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) registry_poll: u64,
    /// At start, the hub initiates to every facility whose tunnel was up
    /// (at its last known address, through its NAT mapping) instead of
    /// waiting for the facility's dead-peer detection: at most this many
    /// new attempts a second. 0: do not initiate; facilities reconnect by
    /// themselves.
    #[arg(long, default_value_t = crate::daemon::takeover::DEFAULT_RATE, value_name = "PER_SEC", value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub(crate) reinitiate_rate: u32,
    /// At most this many of those attempts unanswered at once.
    #[arg(long, default_value_t = crate::daemon::takeover::DEFAULT_CONCURRENCY, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) reinitiate_concurrency: u32,
    /// This hub's node name in an active/standby pair (README "Two
    /// hubs"): letters, digits, '-', '_' and '.', up to 63. The hub then
    /// starts standby and is active only while keepalived makes it VRRP
    /// master (`renkei ha notify`) and it holds the registry's lease; its
    /// key and certificate come sealed from the registry (`hub seal`).
    #[arg(long, env = "RENKEI_NODE", value_name = "NAME")]
    pub(crate) node: Option<String>,
    /// With --node: the cluster key that opens the hub's sealed key.
    /// Default: STATE/cluster.key.
    #[arg(long, value_name = "FILE", requires = "node")]
    pub(crate) cluster_key: Option<PathBuf>,
}

/// `renkei drain`.
#[derive(Debug, Args)]
pub(crate) struct DrainArgs {
    /// The other hub: an IP address or a DNS name the facilities can
    /// reach. Without it nobody is redirected: every facility's SAs are
    /// deleted and new IKE SAs go unanswered.
    #[arg(long, value_name = "ADDR|NAME", conflicts_with = "cancel")]
    pub(crate) to: Option<String>,
    /// Seconds to wait for the facilities to leave before reporting those
    /// still up (1–3600). A redirected facility that has not left is
    /// deleted by the hub 30 s after it acknowledged.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        conflicts_with = "cancel"
    )]
    pub(crate) wait: u64,
    /// Stop draining: accept new IKE SAs again (facilities already handed
    /// over stay where they are).
    #[arg(long, visible_alias = "undrain")]
    pub(crate) cancel: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// The configuration file (TOML; with --csv, a CSV of facilities).
    pub(crate) file: PathBuf,
    /// Print what would be added, changed (field by field) and removed;
    /// change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Read FILE as CSV (one facility per row, first row naming the
    /// columns; UTF-8, with or without Excel's byte-order mark).
    #[arg(long)]
    pub(crate) csv: bool,
    /// Also remove the facilities the file does not list (their tunnels
    /// are torn down and their certificates revoked). Without it they
    /// are kept and listed.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) prune: bool,
    /// The secrets file: pre-shared keys by facility ([psk] name = "key"),
    /// mode 0600, owned by the user running renkei or root.
    #[arg(long, value_name = "FILE")]
    pub(crate) secrets: Option<PathBuf>,
}

/// What people call a facility: `peer add` and `peer set` (where an empty
/// value clears one).
#[derive(Debug, Args)]
pub(crate) struct LabelArgs {
    /// The name operators know the facility by, in UTF-8 (e.g. Japanese:
    /// "京都中央クリニック"); shown in listings, status and exports.
    #[arg(long, value_name = "TEXT")]
    pub(crate) display_name: Option<String>,
    /// Free notes (UTF-8): contact, contract, router location…
    #[arg(long, value_name = "TEXT")]
    pub(crate) notes: Option<String>,
    /// The facility's 10-digit medical institution code (医療機関コード).
    #[arg(long, value_name = "CODE")]
    pub(crate) medical_code: Option<String>,
}
