//! Configuration handed to the [`Endpoint`](crate::Endpoint): the hub's own
//! settings and one [`PeerConfig`] per facility.

use crate::proposal::{ProposalSet, Protocol};
use crate::ts::Subnet;
use pki::Identity;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Settings of the local endpoint.
#[derive(Debug, Clone)]
pub struct Config {
    /// The hub's own identity (IDi/IDr).
    pub local_id: Identity,
    /// UDP port of IKE (500).
    pub ike_port: u16,
    /// UDP port of NAT-T (4500); datagrams on it carry the non-ESP marker.
    pub natt_port: u16,
    /// Make peers encapsulate ESP in UDP even without NAT, by sending NAT
    /// detection data that does not match (as strongSwan's `encap = yes`).
    pub force_encap: bool,
    /// Offer NAT traversal: send NAT_DETECTION notifications (RFC 7296
    /// §2.23). Always on for a hub; off only to play a router whose NAT
    /// traversal is off (YAMAHA RTX's default), which the hub refuses.
    pub nat_traversal: bool,
    /// Tests only: as initiator, announce REDIRECT_SUPPORTED (RFC 5685
    /// §3) in IKE_SA_INIT, so a test endpoint can play a facility the hub
    /// may redirect. The endpoint acknowledges a REDIRECT it receives (as
    /// any INFORMATIONAL) but does not follow it.
    #[doc(hidden)]
    pub test_announce_redirect_supported: bool,
    /// IKE proposals accepted in IKE_SA_INIT, before the peer is known.
    pub ike_proposals: ProposalSet,
    /// First retransmission timeout; doubled on each retry.
    pub retransmit_timeout: Duration,
    /// Transmissions of one request before the peer is given up.
    pub retransmit_tries: u32,
    /// How long a half-open (responder) IKE SA waits for IKE_AUTH.
    pub half_open_timeout: Duration,
    /// Interval of NAT keepalives (RFC 3948 §4) while ESP is encapsulated.
    pub keepalive_interval: Duration,
    /// Seed for the endpoint's CSPRNG (SPIs, nonces, key exchange, IVs).
    pub rng_seed: [u8; 32],
    /// Half-open IKE SAs from which on IKE_SA_INIT requests must carry a
    /// cookie (RFC 7296 §2.6): until then no state and no Diffie-Hellman
    /// work is spent on a source that has not proven its address.
    pub cookie_threshold: usize,
    /// Half-open IKE SAs kept at most; requests beyond are dropped.
    pub max_half_open: usize,
    /// Half-open IKE SAs kept at most per source address.
    pub max_half_open_per_ip: usize,
    /// Unprotected error replies (to IKE_SA_INIT) sent per second at most,
    /// so that the hub cannot be used to reflect traffic.
    pub error_replies_per_sec: u32,
    /// Largest IP datagram (IP and UDP headers included, as strongSwan's
    /// `fragment_size`) an IKE message may take when the peer supports
    /// fragmentation (RFC 7383); larger encrypted messages are fragmented
    /// so that no fragment needs IP fragmentation on a path of this MTU.
    pub fragment_size: usize,
    /// The hub's key and certificate, for facilities that authenticate
    /// with certificates. Without them such facilities cannot connect.
    pub credentials: Option<Arc<Credentials>>,
    /// During a CA rollover: the hub's credentials from each CA it has,
    /// current CA first, with that CA's CERTREQ key hash (RFC 7296 §3.7).
    /// A facility is answered with the certificate of a CA it names in
    /// its CERTREQ, else of the CA that issued the facility's own
    /// certificate, else with [`Config::credentials`]. Empty outside a
    /// rollover. Replaced at run time by
    /// [`Endpoint::set_credentials`](crate::Endpoint::set_credentials).
    pub credentials_by_ca: Vec<CaCredentials>,
    /// The CA facility certificates must chain to, with its revocations.
    /// Replaced at run time by [`Endpoint::set_trust`](crate::Endpoint::set_trust).
    pub trust: Option<Arc<pki::verify::TrustStore>>,
}

/// The hub's own certificate credentials.
#[derive(Debug)]
pub struct Credentials {
    /// The private key (its Debug output is redacted).
    pub key: pki::sig::SigningKey,
    /// The hub's certificate, DER, with the hub's identity in its
    /// subjectAltName.
    pub cert_der: Vec<u8>,
}

/// The hub's credentials from one CA (see [`Config::credentials_by_ca`]).
#[derive(Debug, Clone)]
pub struct CaCredentials {
    /// The issuing CA as a CERTREQ may name it (RFC 7296 §3.7): SHA-1 of
    /// its public key, and SHA-1 of its SubjectPublicKeyInfo
    /// ([`pki::verify::certreq_hashes`]).
    pub ca_hashes: [[u8; 20]; 2],
    pub credentials: Arc<Credentials>,
}

/// How a facility authenticates (and how the hub authenticates to it).
#[derive(Clone)]
pub enum PeerAuth {
    /// Both sides prove the same pre-shared key (RFC 7296 §2.15).
    Psk(Zeroizing<Vec<u8>>),
    /// Both sides sign with keys certified by the hub's CA (RFC 7427).
    Cert,
}

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAuth::Psk(_) => f.write_str("Psk(<redacted>)"),
            PeerAuth::Cert => f.write_str("Cert"),
        }
    }
}

impl Config {
    /// Defaults for a hub with identity `local_id`; `rng_seed` must come from
    /// the operating system's CSPRNG outside of tests.
    pub fn new(local_id: Identity, rng_seed: [u8; 32]) -> Config {
        Config {
            local_id,
            ike_port: 500,
            natt_port: 4500,
            force_encap: true,
            nat_traversal: true,
            test_announce_redirect_supported: false,
            ike_proposals: ProposalSet::default_for(Protocol::Ike),
            retransmit_timeout: Duration::from_secs(2),
            retransmit_tries: 5,
            half_open_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(20),
            rng_seed,
            cookie_threshold: 50,
            max_half_open: 20_000,
            max_half_open_per_ip: 64,
            error_replies_per_sec: 100,
            fragment_size: 1280,
            credentials: None,
            credentials_by_ca: Vec::new(),
            trust: None,
        }
    }
}

/// When a facility's SAs are renewed and how its liveness is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Rekey the IKE SA after this long.
    pub ike: Duration,
    /// Rekey each Child SA after this long.
    pub child: Duration,
    /// Rekey a Child SA once it has carried this many bytes (both
    /// directions together), if set. Counted by the data plane, which calls
    /// [`Endpoint::rekey_child`](crate::Endpoint::rekey_child).
    pub child_bytes: Option<u64>,
    /// Rekeys happen up to this fraction (percent) earlier, at random, so
    /// that both ends rarely rekey at once (RFC 7296 §2.8.1).
    pub jitter_percent: u8,
    /// Send a liveness check (empty INFORMATIONAL) after this long without
    /// any IKE message from the facility.
    pub dpd: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ike: Duration::from_secs(4 * 3600),
            child: Duration::from_secs(3600),
            child_bytes: None,
            jitter_percent: 10,
            dpd: Duration::from_secs(30),
        }
    }
}

/// One facility.
#[derive(Clone)]
pub struct PeerConfig {
    /// The operator's name for the facility (unique).
    pub name: String,
    /// The identity the facility authenticates as (unique).
    pub remote_id: Identity,
    /// How it authenticates.
    pub auth: PeerAuth,
    /// The hub side's prefixes (TSr when the facility initiates).
    pub local_ts: Vec<Subnet>,
    /// The facility's prefixes (TSi when the facility initiates).
    pub remote_ts: Vec<Subnet>,
    /// Where to reach the facility when the hub initiates.
    pub remote_addr: Option<SocketAddr>,
    /// IKE proposals allowed for this facility.
    pub ike: ProposalSet,
    /// ESP proposals allowed for this facility; key exchange methods in
    /// them turn on PFS for rekeyed and additional Child SAs.
    pub esp: ProposalSet,
    /// Rekeying and liveness.
    pub lifetimes: Lifetimes,
    /// Whether the hub, as responder, may answer an IKE_SA_INIT whose KE
    /// payload is MODP-2048 with INVALID_KE_PAYLOAD asking for a group
    /// that stays compliant after 2030, when the facility offered one
    /// (one more round trip; RFC 7296 §1.2). On by default; turn it off
    /// for routers that mishandle that recovery — the hub then takes the
    /// KE payload's group whenever it is acceptable at all. The facility
    /// is only known by its address at IKE_SA_INIT, so "off" applies to
    /// IKE_SA_INITs from its `remote_addr` and from the address it last
    /// authenticated from (as does a facility whose `ike` proposals allow
    /// no group compliant after 2030).
    pub ke_upgrade: bool,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("remote_id", &self.remote_id)
            .field("auth", &self.auth)
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("remote_addr", &self.remote_addr)
            .field("ike", &self.ike.to_string())
            .field("esp", &self.esp.to_string())
            .field("lifetimes", &self.lifetimes)
            .field("ke_upgrade", &self.ke_upgrade)
            .finish()
    }
}
