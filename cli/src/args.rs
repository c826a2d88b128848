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
#[command(
    name = "renkei",
    version,
    propagate_version = true,
    after_help = crate::exit::HELP
)]
pub(crate) struct Cli {
    /// State directory: registry database, control socket.
    #[arg(
        long,
        global = true,
        env = "RENKEI_STATE",
        default_value = "/var/lib/renkei"
    )]
    pub(crate) state: PathBuf,
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
    #[arg(long, conflicts_with = "cert", required_unless_present = "cert")]
    pub(crate) psk_file: Option<PathBuf>,
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
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9810).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Data-plane workers in each direction: TUN queues, and NAT-T
    /// sockets per listening address (the kernel spreads facilities
    /// over them). 0: one per CPU core.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub(crate) workers: u16,
}
