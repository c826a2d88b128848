//! The registry: an embedded SQLite database in the state directory holding
//! the hub's settings and every facility.
//!
//! Every change is validated completely before one transaction writes it,
//! so a refused command leaves the registry exactly as it was.
//!
//! ```text
//!  NewPeer (peer add) ──validate──┐
//!                                 ├─▶ Peer (typed) ─▶ store: checks against the
//!  PeerChange (peer set) ─apply───┘                   other facilities, one row written
//!  load: one row ─▶ Peer
//! ```
//!
//! [`validate`] and [`PeerChange::apply`] need no database: every field is
//! parsed and every bound checked there, once, so a bulk import can check
//! all its rows before it stores any. What needs the other facilities
//! (unique names and identities, overlapping selectors) is checked in the
//! transaction that writes.

use crate::db::{args, Db, Location, Row};
use crate::hostnet::HostNetworks;
use crate::router::Router;
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use ike::proposal::{ProposalSet, Protocol};
use ike::ts::{parse_subnets, Subnet};
use pki::Identity;
use rust_i18n::t;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

mod ha;
pub(crate) use ha::Lease;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS peers (
    name        TEXT PRIMARY KEY,
    identity    TEXT NOT NULL UNIQUE,
    auth        TEXT NOT NULL CHECK (auth IN ('psk', 'cert')),
    psk         BLOB,
    remote_ts   TEXT NOT NULL,
    local_ts    TEXT NOT NULL,
    remote_addr TEXT,
    start       INTEGER NOT NULL,
    ike         TEXT NOT NULL,
    esp         TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    created     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS last_known (
    name  TEXT PRIMARY KEY,
    addr  TEXT NOT NULL,
    port  INTEGER NOT NULL,
    up    INTEGER NOT NULL,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS certs (
    serial      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    identity    TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    not_after   INTEGER NOT NULL,
    issued      TEXT NOT NULL,
    revoked     INTEGER
);
CREATE TABLE IF NOT EXISTS ha_lease (
    name    TEXT PRIMARY KEY,
    holder  TEXT,
    epoch   BIGINT NOT NULL,
    expires BIGINT NOT NULL
);
INSERT INTO ha_lease (name, holder, epoch, expires)
    SELECT 'active', NULL, 0, 0
    WHERE NOT EXISTS (SELECT 1 FROM ha_lease WHERE name = 'active');
";

/// Columns added after the first schema: (name, definition). Opening an
/// older registry adds them with their defaults.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("ike_lifetime", "INTEGER NOT NULL DEFAULT 14400"),
    ("child_lifetime", "INTEGER NOT NULL DEFAULT 3600"),
    ("child_bytes", "INTEGER"),
    ("dpd", "INTEGER NOT NULL DEFAULT 30"),
    ("mtu", "INTEGER"),
    ("router", "TEXT NOT NULL DEFAULT 'other'"),
    // Issue #18: what operators call the facility (UTF-8), free notes,
    // and its 10-digit medical institution code; NULL when not given.
    ("display_name", "TEXT"),
    ("notes", "TEXT"),
    ("medical_code", "TEXT"),
];

/// Columns added to `certs` after the first schema, like [`ADDED_COLUMNS`].
/// `ca`: SHA-256 fingerprint (hex) of the CA certificate that issued it;
/// NULL for certificates from before CA rollovers existed (the first CA).
const ADDED_CERT_COLUMNS: &[(&str, &str)] = &[("ca", "TEXT")];

/// Bounds on a facility's tunnel MTU (`--mtu`): IPv4's minimum datagram
/// size that every host takes (RFC 791), and jumbo frames.
pub(crate) const MIN_MTU: u32 = 576;
pub(crate) const MAX_MTU: u32 = 9000;

/// Bounds on lifetimes an operator may set, in seconds.
const MIN_LIFETIME: u64 = 10;
const MAX_LIFETIME: u64 = 7 * 86_400;

/// The shortest PSK accepted, in bytes.
pub(crate) const MIN_PSK_LEN: usize = 16;
/// The hub side's selectors when `--local-ts` is not given: everything
/// behind the hub, with the kernel's routing deciding further.
pub(crate) const DEFAULT_LOCAL_TS: &str = "0.0.0.0/0,::/0";

/// Where the hub initiates to a facility (`--remote-addr`): an address, or
/// a DNS name (a clinic on a dynamic address with dynamic DNS), resolved
/// again by the daemon at every connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteAddr {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl RemoteAddr {
    /// The address, when it is one (not a name).
    pub(crate) fn ip(&self) -> Option<SocketAddr> {
        match self {
            RemoteAddr::Ip(a) => Some(*a),
            RemoteAddr::Name { .. } => None,
        }
    }
}

impl std::fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteAddr::Ip(a) => write!(f, "{a}"),
            RemoteAddr::Name { host, port: 500 } => f.write_str(host),
            RemoteAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// The hub's own settings.
#[derive(Debug, Clone)]
pub(crate) struct Hub {
    pub(crate) id: Identity,
    pub(crate) public_addrs: Vec<PublicAddr>,
    pub(crate) profile: String,
}

/// An address facilities reach the hub at (`hub set --public-addr`): an
/// IP address, or a DNS name kept as given and written into router
/// configurations as it is (the router resolves it when it connects).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum PublicAddr {
    Ip(IpAddr),
    Name(String),
}

impl std::fmt::Display for PublicAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicAddr::Ip(ip) => write!(f, "{ip}"),
            PublicAddr::Name(n) => f.write_str(n),
        }
    }
}

impl std::str::FromStr for PublicAddr {
    type Err = String;

    /// An IP address, or a DNS host name (RFC 1123 labels of letters,
    /// digits and hyphens, 1–63 bytes each, 253 in all, a trailing dot
    /// allowed, and not all digits in its last label so that a mistyped
    /// address is not taken for a name). A name in another script must
    /// be given in its ASCII (punycode, `xn--`) form.
    fn from_str(s: &str) -> Result<PublicAddr, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PublicAddr::Ip(ip));
        }
        if s.is_empty() {
            return Err(t!("registry.addr_empty").into_owned());
        }
        if !s.is_ascii() {
            return Err(t!("registry.addr_not_ascii", addr = s).into_owned());
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.is_empty() || name.len() > 253 {
            return Err(t!("registry.addr_not_dns", addr = s).into_owned());
        }
        let labels: Vec<&str> = name.split('.').collect();
        for label in &labels {
            let ok = (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(t!("registry.addr_bad_label", addr = s, label = label).into_owned());
            }
        }
        if labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(t!("registry.addr_numeric_tld", addr = s).into_owned());
        }
        Ok(PublicAddr::Name(s.to_string()))
    }
}

/// One facility as stored.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) name: String,
    pub(crate) id: Identity,
    pub(crate) auth: ike::PeerAuth,
    pub(crate) remote_ts: Vec<Subnet>,
    pub(crate) local_ts: Vec<Subnet>,
    pub(crate) remote_addr: Option<RemoteAddr>,
    pub(crate) start: bool,
    pub(crate) ike: ProposalSet,
    pub(crate) esp: ProposalSet,
    pub(crate) enabled: bool,
    pub(crate) created: String,
    pub(crate) lifetimes: ike::Lifetimes,
    /// Largest inner packet sent whole to this facility; `None`: the
    /// hub's default (`serve --mtu`).
    pub(crate) mtu: Option<u32>,
    /// The router the facility owns (`--router`).
    pub(crate) router: Router,
    /// Display name, notes and medical institution code.
    pub(crate) label: Label,
}

/// What people call a facility, as opposed to its ASCII name: its display
/// name and notes (UTF-8, e.g. Japanese) and its 10-digit medical
/// institution code (医療機関コード). None of it reaches the IKE layer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Label {
    pub(crate) display_name: Option<String>,
    pub(crate) notes: Option<String>,
    pub(crate) medical_code: Option<String>,
}

/// Longest display name and notes, in characters.
pub(crate) const MAX_DISPLAY_NAME: usize = 100;
pub(crate) const MAX_NOTES: usize = 2000;

impl Label {
    /// Empty strings become `None`; each field is checked.
    pub(crate) fn checked(self) -> Result<Label> {
        let none_if_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let l = Label {
            display_name: none_if_empty(self.display_name),
            notes: none_if_empty(self.notes),
            medical_code: none_if_empty(self.medical_code),
        };
        if let Some(d) = &l.display_name {
            if d.chars().count() > MAX_DISPLAY_NAME || d.chars().any(char::is_control) {
                bail!("display-name: at most {MAX_DISPLAY_NAME} characters on one line (UTF-8 is allowed)");
            }
        }
        if let Some(n) = &l.notes {
            if n.chars().count() > MAX_NOTES
                || n.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                bail!("notes: at most {MAX_NOTES} characters, without control characters other than newlines and tabs");
            }
        }
        if let Some(c) = &l.medical_code {
            check_medical_code(c)?;
        }
        Ok(l)
    }
}

/// A medical institution code (医療機関コード) as the Ministry of Health,
/// Labour and Welfare assigns it: 10 ASCII digits, the first two the
/// prefecture number (01-47, JIS X 0401). Only the form is checked: the
/// rule of its check digit is not published with enough authority to
/// refuse a code the prefectural bureau issued.
pub(crate) fn check_medical_code(c: &str) -> Result<()> {
    if c.len() != 10 || !c.bytes().all(|b| b.is_ascii_digit()) {
        bail!("medical-code: '{c}' is not 10 digits (half-width 0-9, no hyphens)");
    }
    let pref: u8 = c[..2].parse().unwrap_or(0);
    if !(1..=47).contains(&pref) {
        bail!("medical-code: '{c}' does not start with a prefecture number 01-47");
    }
    Ok(())
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// Whether a tunnel made under `self` would differ under `other`
    /// (identity, key, selectors, address or proposals; not lifetimes).
    pub(crate) fn tunnel_differs(&self, other: &Peer) -> bool {
        self.id != other.id
            || match (&self.auth, &other.auth) {
                (ike::PeerAuth::Psk(a), ike::PeerAuth::Psk(b)) => **a != **b,
                (ike::PeerAuth::Cert, ike::PeerAuth::Cert) => false,
                _ => true,
            }
            || self.remote_ts != other.remote_ts
            || self.local_ts != other.local_ts
            || self.remote_addr != other.remote_addr
            || self.ike != other.ike
            || self.esp != other.esp
    }

    /// The IKE layer's view of this facility.
    pub(crate) fn to_config(&self) -> ike::PeerConfig {
        ike::PeerConfig {
            name: self.name.clone(),
            remote_id: self.id.clone(),
            auth: self.auth.clone(),
            local_ts: self.local_ts.clone(),
            remote_ts: self.remote_ts.clone(),
            // A name is resolved by the daemon at each attempt
            // (`Endpoint::initiate_to`).
            remote_addr: self.remote_addr.as_ref().and_then(RemoteAddr::ip),
            ike: self.ike.clone(),
            esp: self.esp.clone(),
            lifetimes: self.lifetimes,
            ke_upgrade: self.router.ke_upgrade(),
        }
    }
}

/// A certificate issued by the hub's CA, as recorded.
#[derive(Debug, Clone)]
pub(crate) struct CertRecord {
    /// Serial number, lower-case hex.
    pub(crate) serial: String,
    /// The facility (or "hub") it was issued to.
    pub(crate) name: String,
    pub(crate) identity: String,
    pub(crate) key_type: String,
    /// notAfter, seconds since the epoch.
    pub(crate) not_after: i64,
    /// When it was issued (RFC 3339).
    pub(crate) issued: String,
    /// When it was revoked, seconds since the epoch.
    pub(crate) revoked: Option<i64>,
}

/// What `peer add` asks for, before validation.
#[derive(Debug, Default, Clone)]
pub(crate) struct NewPeer {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) psk_file: Option<PathBuf>,
    pub(crate) cert: bool,
    pub(crate) remote_ts: String,
    pub(crate) local_ts: Option<String>,
    pub(crate) remote_addr: Option<String>,
    pub(crate) start: bool,
    pub(crate) ike: Option<String>,
    pub(crate) esp: Option<String>,
    pub(crate) ike_lifetime: Option<u64>,
    pub(crate) child_lifetime: Option<u64>,
    pub(crate) child_bytes: Option<u64>,
    pub(crate) dpd: Option<u64>,
    pub(crate) mtu: Option<u32>,
    /// The router it owns; `None`: [`Router::Other`].
    pub(crate) router: Option<Router>,
    pub(crate) label: Label,
}

impl NewPeer {
    /// The pre-shared key from `psk_file`, if one is named: the one input
    /// [`validate`] does not find in the request itself.
    pub(crate) fn read_key(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        self.psk_file.as_deref().map(read_psk).transpose()
    }
}

/// What `peer set` asks for: each field given replaces the stored value,
/// `None` (or `false`) keeps it.
#[derive(Debug, Default, Clone)]
pub(crate) struct PeerChange {
    pub(crate) id: Option<String>,
    /// A new pre-shared key (switches a certificate facility to PSK).
    pub(crate) psk_file: Option<PathBuf>,
    /// Switch to certificate authentication.
    pub(crate) cert: bool,
    pub(crate) remote_ts: Option<String>,
    pub(crate) local_ts: Option<String>,
    pub(crate) remote_addr: Option<String>,
    /// Initiate and keep the tunnel up (`true`) or wait for the facility.
    pub(crate) start: Option<bool>,
    pub(crate) ike: Option<String>,
    pub(crate) esp: Option<String>,
    pub(crate) ike_lifetime: Option<u64>,
    pub(crate) child_lifetime: Option<u64>,
    pub(crate) child_bytes: Option<u64>,
    pub(crate) dpd: Option<u64>,
    pub(crate) mtu: Option<u32>,
    /// Another router: its defaults replace the proposals, lifetimes and
    /// liveness not given in the same change.
    pub(crate) router: Option<Router>,
    /// A new display name, notes, medical code; `Some("")` clears one.
    pub(crate) display_name: Option<String>,
    pub(crate) notes: Option<String>,
    pub(crate) medical_code: Option<String>,
}

impl PeerChange {
    /// The pre-shared key from `psk_file`, if one is named.
    pub(crate) fn read_key(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        self.psk_file.as_deref().map(read_psk).transpose()
    }

    /// `old` with this change applied, validated as [`validate`] validates
    /// a new facility; `key` is what `psk_file` holds. Needs no database.
    pub(crate) fn apply(&self, old: &Peer, key: Option<Zeroizing<Vec<u8>>>) -> Result<Peer> {
        let id = match &self.id {
            Some(id) => parse_id(id)?,
            None => old.id.clone(),
        };
        let auth = resolve_auth(&id, key, self.cert, Some(&old.auth))?;
        // A new router brings its defaults for what this change leaves out.
        let (router, reset) = match self.router {
            Some(r) => (r, Some(r.defaults())),
            None => (old.router, None),
        };
        let old_ike = match reset {
            Some(_) => crate::router::default_set(router, Protocol::Ike),
            None => old.ike.clone(),
        };
        let old_esp = match reset {
            Some(_) => crate::router::default_set(router, Protocol::Esp),
            None => old.esp.clone(),
        };
        let old_lifetimes = match reset {
            Some(d) => ike::Lifetimes {
                ike: d.ike_lifetime,
                child: d.child_lifetime,
                dpd: d.dpd,
                ..old.lifetimes
            },
            None => old.lifetimes,
        };
        let mut new = Peer {
            id,
            auth,
            remote_ts: match &self.remote_ts {
                Some(ts) => parse_remote_ts(ts)?,
                None => old.remote_ts.clone(),
            },
            local_ts: match &self.local_ts {
                Some(ts) => parse_local_ts(Some(ts))?,
                None => old.local_ts.clone(),
            },
            remote_addr: match &self.remote_addr {
                Some(a) => Some(parse_remote_addr(a)?),
                None => old.remote_addr.clone(),
            },
            start: self.start.unwrap_or(old.start),
            ike: match &self.ike {
                Some(ike) => parse_proposals(Some(ike), Protocol::Ike, router)?,
                None => old_ike,
            },
            esp: match &self.esp {
                Some(esp) => parse_proposals(Some(esp), Protocol::Esp, router)?,
                None => old_esp,
            },
            mtu: self.mtu.or(old.mtu),
            router,
            label: Label {
                display_name: self
                    .display_name
                    .clone()
                    .or_else(|| old.label.display_name.clone()),
                notes: self.notes.clone().or_else(|| old.label.notes.clone()),
                medical_code: self
                    .medical_code
                    .clone()
                    .or_else(|| old.label.medical_code.clone()),
            }
            .checked()?,
            ..old.clone()
        };
        new.lifetimes = ike::Lifetimes {
            ike: self
                .ike_lifetime
                .map_or(old_lifetimes.ike, Duration::from_secs),
            child: self
                .child_lifetime
                .map_or(old_lifetimes.child, Duration::from_secs),
            child_bytes: self.child_bytes.or(old_lifetimes.child_bytes),
            dpd: self.dpd.map_or(old_lifetimes.dpd, Duration::from_secs),
            ..old_lifetimes
        };
        check(&new)?;
        Ok(new)
    }
}

/// Validates a new facility completely: every field parsed, every bound
/// and combination checked. `key` is what `new.psk_file` holds
/// ([`NewPeer::read_key`]), `created` the time it is added (RFC 3339). A
/// pure function: it needs no database, file or clock; what depends on the
/// other facilities is checked when it is stored.
pub(crate) fn validate(
    new: &NewPeer,
    key: Option<Zeroizing<Vec<u8>>>,
    created: &str,
) -> Result<Peer> {
    check_name(&new.name)?;
    let id = parse_id(&new.id)?;
    let auth = resolve_auth(&id, key, new.cert, None)?;
    let router = new.router.unwrap_or_default();
    let r = router.defaults();
    let defaults = ike::Lifetimes {
        ike: r.ike_lifetime,
        child: r.child_lifetime,
        dpd: r.dpd,
        ..ike::Lifetimes::default()
    };
    let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
    let peer = Peer {
        name: new.name.clone(),
        auth,
        remote_ts: parse_remote_ts(&new.remote_ts)?,
        local_ts: parse_local_ts(new.local_ts.as_deref())?,
        remote_addr: new
            .remote_addr
            .as_deref()
            .map(parse_remote_addr)
            .transpose()?,
        start: new.start,
        ike: parse_proposals(new.ike.as_deref(), Protocol::Ike, router)?,
        esp: parse_proposals(new.esp.as_deref(), Protocol::Esp, router)?,
        enabled: true,
        created: created.to_string(),
        lifetimes: ike::Lifetimes {
            ike: secs(new.ike_lifetime, defaults.ike),
            child: secs(new.child_lifetime, defaults.child),
            child_bytes: new.child_bytes,
            dpd: secs(new.dpd, defaults.dpd),
            ..defaults
        },
        mtu: new.mtu,
        router,
        label: new.label.clone().checked()?,
        id,
    };
    check(&peer)?;
    Ok(peer)
}

fn parse_id(id: &str) -> Result<Identity> {
    Identity::parse(id)
        .map_err(|e| anyhow::anyhow!("{}", t!("registry.field_error", field = "id", error = e)))
}

fn parse_remote_ts(ts: &str) -> Result<Vec<Subnet>> {
    parse_subnets(ts).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            t!("registry.field_error", field = "remote-ts", error = e)
        )
    })
}

fn parse_local_ts(ts: Option<&str>) -> Result<Vec<Subnet>> {
    parse_subnets(ts.unwrap_or(DEFAULT_LOCAL_TS)).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            t!("registry.field_error", field = "local-ts", error = e)
        )
    })
}

/// Proposals in strongSwan syntax; `None`: the router's defaults (for
/// [`Router::Other`], the whole CRYPTREC profile).
fn parse_proposals(s: Option<&str>, protocol: Protocol, router: Router) -> Result<ProposalSet> {
    let d = router.defaults();
    let (default, field) = match protocol {
        Protocol::Ike => (d.ike, "ike"),
        Protocol::Esp => (d.esp, "esp"),
    };
    ProposalSet::parse(s.unwrap_or(default), protocol, false)
        .map_err(|e| anyhow::anyhow!("{}", t!("registry.field_error", field = field, error = e)))
}

/// The authentication a facility ends up with: a new key, a switch to
/// certificates, or (for a change) what it had.
fn resolve_auth(
    id: &Identity,
    key: Option<Zeroizing<Vec<u8>>>,
    cert: bool,
    kept: Option<&ike::PeerAuth>,
) -> Result<ike::PeerAuth> {
    let psk_wanted = key.is_some() || (!cert && matches!(kept, Some(ike::PeerAuth::Psk(_))));
    if matches!(id, Identity::Dn(_)) && psk_wanted && !cert {
        // RFC 4945 §3.1.5: an ID_DER_ASN1_DN identity is the subject of
        // the facility's certificate; with a pre-shared key there is none.
        bail!("{}", t!("registry.dn_needs_cert", id = id));
    }
    let auth = match (key, cert, kept) {
        (Some(_), true, _) => bail!("{}", t!("registry.cert_and_psk")),
        (Some(k), false, _) => ike::PeerAuth::Psk(k),
        (None, true, _) => {
            if matches!(id, Identity::KeyId(_)) {
                bail!("{}", t!("registry.cert_id_kind"));
            }
            ike::PeerAuth::Cert
        }
        (None, false, Some(kept)) => kept.clone(),
        (None, false, None) => {
            bail!("{}", t!("registry.psk_or_cert"))
        }
    };
    if matches!(auth, ike::PeerAuth::Cert) {
        // A certificate facility whose identity no certificate can carry
        // could never connect: refuse it now rather than at `cert issue`.
        pki::ca::certifiable(id).map_err(|e| {
            anyhow::anyhow!("{}", t!("registry.field_error", field = "id", error = e))
        })?;
    }
    Ok(auth)
}

/// The bounds and combinations every stored facility satisfies.
fn check(p: &Peer) -> Result<()> {
    check_name(&p.name)?;
    if p.start && p.remote_addr.is_none() {
        bail!("{}", t!("registry.start_needs_addr"));
    }
    for (field, v) in [
        ("ike-lifetime", p.lifetimes.ike),
        ("child-lifetime", p.lifetimes.child),
        ("dpd", p.lifetimes.dpd),
    ] {
        let v = v.as_secs();
        if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&v) {
            bail!(
                "{}",
                t!(
                    "registry.lifetime_range",
                    field = field,
                    value = v,
                    min = MIN_LIFETIME,
                    max = MAX_LIFETIME
                )
            );
        }
    }
    if let Some(m) = p.mtu {
        if !(MIN_MTU..=MAX_MTU).contains(&m) {
            bail!(
                "{}",
                t!("registry.mtu_range", mtu = m, min = MIN_MTU, max = MAX_MTU)
            );
        }
    }
    if let Some(b) = p.lifetimes.child_bytes {
        if b < 1_000_000 {
            bail!("{}", t!("registry.child_bytes_min", bytes = b));
        }
    }
    if matches!(p.auth, ike::PeerAuth::Cert) {
        p.router.check_cert()?;
    }
    p.router.check(&p.ike, &p.esp, &p.lifetimes)?;
    // A DNS name is checked by what it resolves to only when the hub
    // connects; an address is checked here.
    crate::hostnet::check_selectors(
        &p.remote_ts,
        &p.local_ts,
        p.remote_addr
            .as_ref()
            .and_then(RemoteAddr::ip)
            .map(|a| a.ip()),
    )?;
    Ok(())
}

fn join_subnets(v: &[Subnet]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) struct Registry {
    db: Db,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({})", self.db.describe())
    }
}

/// Removes the registry database of `state` (after a failed `init`).
pub(crate) fn remove_files(state: &StateDir) {
    let db = state.registry();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(state.registry_url_file());
}

/// Where `state`'s registry is: the URL given (`--registry`,
/// `RENKEI_REGISTRY`), else the one `init` remembered in
/// `STATE/registry.url`, else the SQLite file `STATE/registry.db`.
pub(crate) fn location(state: &StateDir) -> Result<Location> {
    if let Some(url) = state.registry_override() {
        crate::db::check_url(url)?;
        return Ok(Location::Postgres(url.to_string()));
    }
    let file = state.registry_url_file();
    if state.exists(&file, "reading the registry's location")? {
        let url = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let url = url.trim();
        crate::db::check_url(url).with_context(|| format!("{}", file.display()))?;
        return Ok(Location::Postgres(url.to_string()));
    }
    Ok(Location::Sqlite(state.registry()))
}

/// Refuses names that would be awkward in logs, file names and configs.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if !name.is_ascii() {
        bail!("{}", t!("registry.name_not_ascii", name = name));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with(['-', '.']);
    if !ok {
        bail!("{}", t!("registry.bad_name", name = name));
    }
    Ok(())
}

/// Parses `ADDR`, `ADDR:PORT`, `[ADDR]:PORT`, `NAME` or `NAME:PORT`
/// (default port 500); a name is kept as given.
pub(crate) fn parse_remote_addr(s: &str) -> Result<RemoteAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(RemoteAddr::Ip(a));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(RemoteAddr::Ip(SocketAddr::new(ip, 500)));
    }
    let bad = || anyhow::anyhow!("{}", t!("registry.bad_remote_addr", addr = s));
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        ),
        None => (s, 500),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let labels: Vec<&str> = host.split('.').collect();
    // RFC 1123 §2.1: a name's last label is not all digits (else it
    // would be a mistyped address).
    if host.is_empty()
        || host.len() > 253
        || !labels.iter().all(|l| label_ok(l))
        || labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    Ok(RemoteAddr::Name {
        host: host.to_string(),
        port,
    })
}

fn read_psk(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut data = Zeroizing::new(std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            t!("registry.psk_unreadable", path = path.display(), error = e)
        )
    })?);
    while data.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        data.pop();
    }
    if data.len() < MIN_PSK_LEN {
        bail!(
            "{}",
            t!(
                "registry.psk_short",
                path = path.display(),
                len = data.len(),
                min = MIN_PSK_LEN
            )
        );
    }
    Ok(data)
}

/// The registry's schema version. Each release that changes the schema
/// raises it; opening an older registry migrates it in one transaction,
/// and a newer one (made by a later renkei) is refused rather than
/// misread. 1: every registry made before versions were counted (columns
/// and constraints added on open); 2: the same tables, migrations counted;
/// 3: `last_known` (each facility's last address and whether it was up)
///    and the active hub's lease (`ha_lease`, [`ha`]).
pub(crate) const SCHEMA_VERSION: u32 = 3;

/// The schema version a registry records (`None`: a new, empty database).
fn stored_schema_version(db: &Db) -> Result<Option<u32>> {
    let has_meta = if db.is_postgres() {
        db.query_opt("SELECT 1 WHERE to_regclass('meta') IS NOT NULL", args![])?
    } else {
        db.query_opt(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            args![],
        )?
    }
    .is_some();
    if !has_meta {
        return Ok(None);
    }
    let v = db
        .query_opt(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            args![],
        )?
        .map(|r| r.text(0))
        .transpose()?;
    v.map(|v| {
        v.parse::<u32>()
            .map_err(|_| anyhow::anyhow!("schema_version '{v}' is not a number"))
    })
    .transpose()
}

/// The columns `table` has.
fn columns(db: &Db, table: &str) -> Result<Vec<String>> {
    let rows = if db.is_postgres() {
        db.query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1",
            args![table],
        )?
    } else {
        db.query("SELECT name FROM pragma_table_info(?1)", args![table])?
    };
    rows.iter().map(|r| r.text(0)).collect()
}

/// Brings a registry to [`SCHEMA_VERSION`]: all of it in one transaction
/// (SQLite `BEGIN IMMEDIATE`, PostgreSQL `SERIALIZABLE` after taking a
/// transaction-level advisory lock), so an interrupted upgrade leaves the
/// registry as it was and two processes (or hubs) never migrate at once.
/// The tables are written once in SQLite's dialect; [`Db::ddl`] gives
/// PostgreSQL its types.
fn migrate(db: &Db) -> Result<()> {
    let stored = stored_schema_version(db)?;
    if stored == Some(SCHEMA_VERSION) {
        return Ok(());
    }
    if let Some(v) = stored.filter(|v| *v > SCHEMA_VERSION) {
        bail!(
            "schema version {v} is newer than this renkei's ({SCHEMA_VERSION}): run the renkei that wrote it, or restore the backup taken before the upgrade (README \"Upgrade\")"
        );
    }
    db.transaction(|db| {
        if db.is_postgres() {
            // Serializes migrations of one database by several hubs (the
            // key is arbitrary, "renkei" in ASCII).
            db.execute(
                "SELECT pg_advisory_xact_lock(?1)",
                args![0x72656e6b6569_i64],
            )?;
        }
        // Another process may have migrated while this one waited for the lock.
        if stored_schema_version(db)? == Some(SCHEMA_VERSION) {
            return Ok(());
        }
        db.batch(&db.ddl(SCHEMA))?;
        for (table, added) in [("peers", ADDED_COLUMNS), ("certs", ADDED_CERT_COLUMNS)] {
            let existing = columns(db, table)?;
            for (name, def) in added {
                if !existing.iter().any(|c| c == name) {
                    db.batch(&db.ddl(&format!("ALTER TABLE {table} ADD COLUMN {name} {def}")))?;
                }
            }
        }
        if !db.is_postgres() {
            // Registries made before certificate support allow only 'psk'
            // in `auth`; SQLite cannot change a CHECK, so the table is
            // rebuilt (same columns and rows). PostgreSQL registries were
            // never made that way.
            let sql = db
                .query_opt(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'peers'",
                    args![],
                )?
                .context("registry: peers table definition")?
                .text(0)?;
            if sql.contains("IN ('psk'))") {
                let open = sql.find('(').context("registry: peers table definition")?;
                let new_sql = format!(
                    "CREATE TABLE peers_v2 {}",
                    sql[open..].replace("IN ('psk'))", "IN ('psk', 'cert'))")
                );
                db.batch(&format!(
                    "{new_sql};
                     INSERT INTO peers_v2 SELECT * FROM peers;
                     DROP TABLE peers;
                     ALTER TABLE peers_v2 RENAME TO peers;"
                ))?;
            }
        }
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            args![SCHEMA_VERSION.to_string()],
        )?;
        Ok(())
    })
}

impl Registry {
    /// Creates the state directory (0700) and the registry, refusing an
    /// existing one. With a PostgreSQL location, its URL is remembered in
    /// `STATE/registry.url` (never a password: that goes in a passfile),
    /// and a database that already holds a hub's registry is refused.
    pub(crate) fn init(state: &StateDir, hub: &Hub) -> Result<Registry> {
        let loc = location(state)?;
        for existing in [state.registry(), state.registry_url_file()] {
            if state.exists(&existing, &t!("cli.doing_create_registry"))? {
                bail!(
                    "{}",
                    t!("registry.already_initialised", dir = state.display())
                );
            }
        }
        let reg = match &loc {
            Location::Sqlite(path) => {
                state.create()?;
                Self::open_path(path)?
            }
            Location::Postgres(url) => {
                if crate::db::url_has_password(url)? {
                    bail!("{}", rust_i18n::t!("registry_db.password_in_url"));
                }
                let reg = Self::open_pg(url)?;
                if let Some(id) = reg
                    .db
                    .query_opt("SELECT value FROM meta WHERE key = 'hub_id'", args![])?
                {
                    bail!(
                        "{}",
                        rust_i18n::t!(
                            "registry_db.already_initialised",
                            db = reg.db.describe(),
                            hub = id.text(0)?
                        )
                    );
                }
                state.create()?;
                write_private(&state.registry_url_file(), &format!("{url}\n"))?;
                reg
            }
        };
        let public_addrs = hub
            .public_addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let written = reg.db.transaction(|db| {
            for (k, v) in [
                ("hub_id", hub.id.to_string()),
                ("public_addrs", public_addrs.clone()),
                ("profile", hub.profile.clone()),
            ] {
                db.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", args![k, v])?;
            }
            Ok(())
        });
        if let Err(e) = written {
            // Nothing half-made: a new `init` can start over.
            drop(reg);
            remove_files(state);
            return Err(e);
        }
        Ok(reg)
    }

    /// Undoes a failed `init`: the hub's rows in a PostgreSQL registry
    /// (nothing else was written there yet) and the files in `state`.
    pub(crate) fn discard_new(self, state: &StateDir) {
        if self.db.is_postgres() {
            let _ = self.db.transaction(|db| {
                for t in ["certs", "peers", "meta"] {
                    db.execute(&format!("DELETE FROM {t}"), args![])?;
                }
                Ok(())
            });
        }
        drop(self);
        remove_files(state);
    }

    /// Opens an existing registry, wherever [`location`] says it is.
    pub(crate) fn open(state: &StateDir) -> Result<Registry> {
        let path = match location(state)? {
            Location::Postgres(url) => {
                let reg = Self::open_pg(&url)?;
                if reg
                    .db
                    .query_opt("SELECT 1 FROM meta WHERE key = 'hub_id'", args![])?
                    .is_none()
                {
                    bail!(
                        "{}",
                        rust_i18n::t!("registry_db.no_hub", db = reg.db.describe())
                    );
                }
                return Ok(reg);
            }
            Location::Sqlite(path) => path,
        };
        if !state.exists(&path, &t!("cli.doing_open_registry"))? {
            bail!("{}", t!("registry.no_registry", dir = state.display()));
        }
        // A link whose file is gone: SQLite would make a new, empty
        // registry there.
        if let Err(e) = std::fs::metadata(&path) {
            if e.kind() == std::io::ErrorKind::NotFound {
                bail!(
                    "{}",
                    rust_i18n::t!("ha.registry_link_gone", path = path.display())
                );
            }
        }
        // SQLite would only say "unable to open database file".
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(crate::exit::denied(
                    state,
                    &rust_i18n::t!("cli.doing_open_registry"),
                    &path,
                ));
            }
        }
        Self::open_path(&path)
    }

    fn open_path(path: &Path) -> Result<Registry> {
        let db = Db::open_sqlite(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        migrate(&db).with_context(|| format!("registry {}", path.display()))?;
        Ok(Registry { db })
    }

    fn open_pg(url: &str) -> Result<Registry> {
        let db = Db::connect_pg(url)?;
        // Its errors name the database already.
        migrate(&db)?;
        Ok(Registry { db })
    }

    /// Where this registry is, for messages.
    pub(crate) fn describe(&self) -> String {
        self.db.describe()
    }

    /// Whether the registry lives in PostgreSQL.
    pub(crate) fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// The schema version this registry is at (after opening, always
    /// [`SCHEMA_VERSION`]).
    pub(crate) fn schema_version(&self) -> Result<u32> {
        stored_schema_version(&self.db)?.context("registry lacks schema_version")
    }

    pub(crate) fn hub(&self) -> Result<Hub> {
        let get = |k: &str| -> Result<String> {
            self.db
                .query_opt("SELECT value FROM meta WHERE key = ?1", args![k])?
                .with_context(|| format!("registry lacks {k}"))?
                .text(0)
        };
        let id =
            Identity::parse(&get("hub_id")?).map_err(|e| anyhow::anyhow!("stored hub id: {e}"))?;
        let public_addrs = get("public_addrs")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<PublicAddr>()
                    .map_err(|e| anyhow::anyhow!("stored public address: {e}"))
            })
            .collect::<Result<_>>()?;
        Ok(Hub {
            id,
            public_addrs,
            profile: get("profile")?,
        })
    }

    /// Validates and stores a facility, also against the host's own
    /// networks (`host`, read from the kernel by the caller, and the hub's
    /// public addresses). Refused input changes nothing.
    pub(crate) fn add_peer_on(&mut self, new: &NewPeer, host: &HostNetworks) -> Result<Peer> {
        self.add_peer_keyed(new, new.read_key()?, host)
    }

    /// [`Registry::add_peer_on`] with the key given (`peer add --psk generate`).
    pub(crate) fn add_peer_keyed(
        &mut self,
        new: &NewPeer,
        key: Option<Zeroizing<Vec<u8>>>,
        host: &HostNetworks,
    ) -> Result<Peer> {
        let peer = validate(new, key, &now_rfc3339())?;
        self.check_host(&peer, host)?;
        self.store_peer(&peer, false)
    }

    /// Changes a facility: the fields `change` gives replace the stored
    /// ones. Validated like `add_peer_on`; refused input changes nothing.
    pub(crate) fn change_peer_on(
        &mut self,
        name: &str,
        change: &PeerChange,
        host: &HostNetworks,
    ) -> Result<Peer> {
        let old = self.peer(name)?;
        let peer = change.apply(&old, change.read_key()?)?;
        self.check_host(&peer, host)?;
        self.store_peer(&peer, true)
    }

    /// [`Registry::add_peer_on`] on a host with no networks of its own.
    #[cfg(test)]
    pub(crate) fn add_peer(&mut self, new: &NewPeer) -> Result<Peer> {
        self.add_peer_on(new, &HostNetworks::default())
    }

    /// [`Registry::change_peer_on`] on a host with no networks of its own.
    #[cfg(test)]
    pub(crate) fn change_peer(&mut self, name: &str, change: &PeerChange) -> Result<Peer> {
        self.change_peer_on(name, change, &HostNetworks::default())
    }

    /// A facility's prefixes against the host's networks and the hub's
    /// public addresses (which facilities connect to).
    pub(crate) fn check_host(&self, peer: &Peer, host: &HostNetworks) -> Result<()> {
        let mut host = host.clone();
        // A public address given as a DNS name is checked where it
        // resolves: on the host's own interfaces.
        host.addrs.extend(
            self.hub()?
                .public_addrs
                .into_iter()
                .filter_map(|a| match a {
                    PublicAddr::Ip(ip) => Some(ip),
                    PublicAddr::Name(_) => None,
                }),
        );
        crate::hostnet::check_host(&peer.remote_ts, &host)
    }

    /// Inserts a new facility, or with `replacing` replaces the stored one
    /// of that name (keeping whether it is enabled and when it was made),
    /// after the checks against the other facilities.
    fn store_peer(&mut self, new: &Peer, replacing: bool) -> Result<Peer> {
        let id = &new.id;
        let (auth_kind, psk): (&str, Option<&[u8]>) = match &new.auth {
            ike::PeerAuth::Psk(k) => ("psk", Some(&k[..])),
            ike::PeerAuth::Cert => ("cert", None),
        };
        // One transaction reads the other facilities and writes: no
        // other command or hub can add an overlapping one in between.
        self.db.transaction(|tx| {
            if tx
                .query_opt("SELECT 1 FROM peers WHERE name = ?1", args![&new.name])?
                .is_some()
                != replacing
            {
                if replacing {
                    bail!("{}", t!("registry.no_facility", name = new.name));
                }
                bail!("{}", t!("registry.facility_exists", name = new.name));
            }
            if let Some(other) = tx.query_opt(
                "SELECT name FROM peers WHERE identity = ?1 AND name != ?2",
                args![id.to_string(), &new.name],
            )? {
                bail!(
                    "{}",
                    t!("registry.id_taken", id = id, other = other.text(0)?)
                );
            }
            if let Identity::Dn(_) = id {
                // DNs that differ in case or spacing are the same identity
                // (pki::dn), which the stored text does not show.
                for row in tx.query(
                    "SELECT name, identity FROM peers WHERE identity LIKE '%=%' AND name != ?1",
                    args![&new.name],
                )? {
                    let (other, theirs) = (row.text(0)?, row.text(1)?);
                    if Identity::parse(&theirs).is_ok_and(|t| t == *id) {
                        bail!(
                            "{}",
                            t!("registry.id_taken_as", id = id, other = other, theirs = theirs)
                        );
                    }
                }
            }
            // Only the other facilities' selectors are read: with thousands of
            // facilities, parsing every stored record per change is what
            // made adding them slow.
            for row in tx.query(
                "SELECT name, remote_ts FROM peers WHERE name != ?1",
                args![&new.name],
            )? {
                let (name, theirs) = (row.text(0)?, row.text(1)?);
                let theirs = parse_subnets(&theirs).map_err(|_| {
                    anyhow::anyhow!("registry: facility '{name}' has an invalid stored remote-ts")
                })?;
                for mine in &new.remote_ts {
                    if let Some(t) = theirs.iter().find(|t| t.overlaps(mine)) {
                        bail!(
                            "{}",
                            t!("registry.ts_overlap", mine = mine, theirs = t, name = name)
                        );
                    }
                }
            }
            // One statement for both: whether the name exists was checked above
            // in this transaction. A change keeps `enabled` and `created`.
            tx.execute(
                "INSERT INTO peers (name, identity, auth, psk, remote_ts, local_ts, remote_addr, start, ike, esp, enabled, created,
                                    ike_lifetime, child_lifetime, child_bytes, dpd, mtu, router,
                                    display_name, notes, medical_code)
                 VALUES (?1, ?2, ?15, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11, ?12, ?13, ?14, ?16, ?17, ?18, ?19, ?20)
                 ON CONFLICT (name) DO UPDATE SET
                     identity = excluded.identity, auth = excluded.auth, psk = excluded.psk, remote_ts = excluded.remote_ts,
                     local_ts = excluded.local_ts, remote_addr = excluded.remote_addr, start = excluded.start,
                     ike = excluded.ike, esp = excluded.esp, ike_lifetime = excluded.ike_lifetime,
                     child_lifetime = excluded.child_lifetime, child_bytes = excluded.child_bytes, dpd = excluded.dpd,
                     mtu = excluded.mtu, router = excluded.router, display_name = excluded.display_name,
                     notes = excluded.notes, medical_code = excluded.medical_code",
                args![
                    &new.name,
                    id.to_string(),
                    psk,
                    join_subnets(&new.remote_ts),
                    join_subnets(&new.local_ts),
                    new.remote_addr.as_ref().map(ToString::to_string),
                    new.start,
                    new.ike.to_string(),
                    new.esp.to_string(),
                    &new.created,
                    new.lifetimes.ike.as_secs(),
                    new.lifetimes.child.as_secs(),
                    new.lifetimes.child_bytes,
                    new.lifetimes.dpd.as_secs(),
                    auth_kind,
                    new.mtu,
                    new.router.as_str(),
                    new.label.display_name.as_deref(),
                    new.label.notes.as_deref(),
                    new.label.medical_code.as_deref()
                ],
            )?;
            Ok(())
        })?;
        self.peer(&new.name)
    }

    /// Writes a whole declared configuration (`renkei apply`) in one
    /// transaction: the hub's public addresses (when given), every facility
    /// of `upserts` added or replaced (with its `enabled` and `created`),
    /// and every one of `removes` deleted with its current certificates
    /// revoked at `now`. Returns the serials revoked, by facility. The
    /// caller has checked the resulting set as a whole (unique names and
    /// identities, no overlapping selectors); either all of it is written
    /// or nothing.
    pub(crate) fn write_declared(
        &mut self,
        public_addrs: Option<&[PublicAddr]>,
        upserts: &[Peer],
        removes: &[String],
        now: i64,
    ) -> Result<Vec<(String, Vec<String>)>> {
        self.db.transaction(|tx| {
            if let Some(addrs) = public_addrs {
                let value = addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('public_addrs', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    args![value],
                )?;
            }
            let mut revoked = Vec::new();
            for name in removes {
                if tx.execute("DELETE FROM peers WHERE name = ?1", args![name.as_str()])? == 0 {
                    bail!("{}", t!("registry.no_facility", name = name));
                }
                tx.execute("DELETE FROM last_known WHERE name = ?1", args![name.as_str()])?;
                let serials = Self::current_serials(tx, name)?;
                tx.execute(
                    "UPDATE certs SET revoked = ?2 WHERE name = ?1 AND revoked IS NULL",
                    args![name.as_str(), now],
                )?;
                if !serials.is_empty() {
                    revoked.push((name.clone(), serials));
                }
            }
            for p in upserts {
                check(p)?;
                let (auth_kind, psk): (&str, Option<&[u8]>) = match &p.auth {
                    ike::PeerAuth::Psk(k) => ("psk", Some(&k[..])),
                    ike::PeerAuth::Cert => ("cert", None),
                };
                tx.execute(
                    "INSERT INTO peers (name, identity, auth, psk, remote_ts, local_ts, remote_addr, start, ike, esp, enabled, created,
                                        ike_lifetime, child_lifetime, child_bytes, dpd, mtu, router,
                                        display_name, notes, medical_code)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)
                     ON CONFLICT (name) DO UPDATE SET
                         identity = excluded.identity, auth = excluded.auth, psk = excluded.psk, remote_ts = excluded.remote_ts,
                         local_ts = excluded.local_ts, remote_addr = excluded.remote_addr, start = excluded.start,
                         ike = excluded.ike, esp = excluded.esp, enabled = excluded.enabled,
                         ike_lifetime = excluded.ike_lifetime, child_lifetime = excluded.child_lifetime,
                         child_bytes = excluded.child_bytes, dpd = excluded.dpd, mtu = excluded.mtu, router = excluded.router,
                         display_name = excluded.display_name, notes = excluded.notes, medical_code = excluded.medical_code",
                    args![
                        p.name.as_str(),
                        p.id.to_string(),
                        auth_kind,
                        psk,
                        join_subnets(&p.remote_ts),
                        join_subnets(&p.local_ts),
                        p.remote_addr.as_ref().map(ToString::to_string),
                        p.start,
                        p.ike.to_string(),
                        p.esp.to_string(),
                        p.enabled,
                        p.created.as_str(),
                        p.lifetimes.ike.as_secs(),
                        p.lifetimes.child.as_secs(),
                        p.lifetimes.child_bytes,
                        p.lifetimes.dpd.as_secs(),
                        p.mtu,
                        p.router.as_str(),
                        p.label.display_name.as_deref(),
                        p.label.notes.as_deref(),
                        p.label.medical_code.as_deref()
                    ],
                )?;
            }
            Ok(revoked)
        })
    }

    pub(crate) fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<()> {
        if self.db.execute(
            "UPDATE peers SET enabled = ?2 WHERE name = ?1",
            args![name, enabled],
        )? == 0
        {
            bail!("{}", t!("registry.no_facility", name = name));
        }
        Ok(())
    }

    /// Records a certificate issued by the hub's CA.
    pub(crate) fn record_cert(&mut self, c: &CertRecord) -> Result<()> {
        self.db.execute(
            "INSERT INTO certs (serial, name, identity, key_type, not_after, issued, revoked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
            args![
                &c.serial,
                &c.name,
                &c.identity,
                &c.key_type,
                c.not_after,
                &c.issued
            ],
        )?;
        Ok(())
    }

    /// Records which CA (its certificate's SHA-256 fingerprint, hex)
    /// issued certificate `serial`.
    pub(crate) fn set_cert_ca(&mut self, serial: &str, ca: &str) -> Result<()> {
        self.db.execute(
            "UPDATE certs SET ca = ?2 WHERE serial = ?1",
            args![serial, ca],
        )?;
        Ok(())
    }

    /// Marks every certificate recorded without a CA as issued by `ca`
    /// (at a CA rollover: they all came from the CA being replaced).
    pub(crate) fn assign_unmarked_certs(&mut self, ca: &str) -> Result<()> {
        self.db
            .execute("UPDATE certs SET ca = ?1 WHERE ca IS NULL", args![ca])?;
        Ok(())
    }

    /// The issuing CA of each certificate, by serial (`None`: recorded
    /// before CA rollovers existed).
    pub(crate) fn cert_cas(&self) -> Result<std::collections::HashMap<String, Option<String>>> {
        self.db
            .query("SELECT serial, ca FROM certs", args![])?
            .iter()
            .map(|r| Ok((r.text(0)?, r.opt_text(1)?)))
            .collect()
    }

    /// Replaces the hub's public addresses.
    pub(crate) fn set_public_addrs(&mut self, addrs: &[PublicAddr]) -> Result<()> {
        let value = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('public_addrs', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            args![value],
        )?;
        Ok(())
    }

    /// Every certificate issued, oldest first.
    pub(crate) fn certs(&self) -> Result<Vec<CertRecord>> {
        self.db
            .query(
                "SELECT serial, name, identity, key_type, not_after, issued, revoked FROM certs
                 ORDER BY issued, serial",
                args![],
            )?
            .iter()
            .map(|r| {
                Ok(CertRecord {
                    serial: r.text(0)?,
                    name: r.text(1)?,
                    identity: r.text(2)?,
                    key_type: r.text(3)?,
                    not_after: r.int(4)?,
                    issued: r.text(5)?,
                    revoked: r.opt_int(6)?,
                })
            })
            .collect()
    }

    /// Marks the named unrevoked certificates of `name` revoked at `now`
    /// (all of them in one transaction, or none); returns their serials.
    /// A serial that is not a current certificate of `name` is refused.
    pub(crate) fn revoke_serials(
        &mut self,
        name: &str,
        serials: &[String],
        now: i64,
    ) -> Result<Vec<String>> {
        self.db.transaction(|tx| {
            for serial in serials {
                let serial = serial.to_ascii_lowercase();
                if tx.execute(
                    "UPDATE certs SET revoked = ?3 WHERE name = ?1 AND lower(serial) = ?2 AND revoked IS NULL",
                    args![name, &serial, now],
                )? == 0
                {
                    bail!(
                        "{}",
                        t!("registry.not_current_serial", serial = serial, name = name)
                    );
                }
            }
            Ok(())
        })?;
        Ok(serials.iter().map(|s| s.to_ascii_lowercase()).collect())
    }

    /// Removes a facility and revokes its current certificates at `now`,
    /// in one transaction; returns the serials revoked (none for a
    /// facility that never had a certificate).
    pub(crate) fn remove_peer_revoking(&mut self, name: &str, now: i64) -> Result<Vec<String>> {
        self.db.transaction(|tx| {
            if tx.execute("DELETE FROM peers WHERE name = ?1", args![name])? == 0 {
                bail!("{}", t!("registry.no_facility", name = name));
            }
            tx.execute("DELETE FROM last_known WHERE name = ?1", args![name])?;
            let serials = Self::current_serials(tx, name)?;
            tx.execute(
                "UPDATE certs SET revoked = ?2 WHERE name = ?1 AND revoked IS NULL",
                args![name, now],
            )?;
            Ok(serials)
        })
    }

    /// Marks every unrevoked certificate of `name` revoked at `now`;
    /// returns their serials. Refuses when there is none.
    pub(crate) fn revoke_certs(&mut self, name: &str, now: i64) -> Result<Vec<String>> {
        self.db.transaction(|tx| {
            let serials = Self::current_serials(tx, name)?;
            if serials.is_empty() {
                bail!("{}", t!("registry.nothing_to_revoke", name = name));
            }
            tx.execute(
                "UPDATE certs SET revoked = ?2 WHERE name = ?1 AND revoked IS NULL",
                args![name, now],
            )?;
            Ok(serials)
        })
    }

    /// The serials of `name`'s unrevoked certificates.
    fn current_serials(db: &Db, name: &str) -> Result<Vec<String>> {
        db.query(
            "SELECT serial FROM certs WHERE name = ?1 AND revoked IS NULL ORDER BY serial",
            args![name],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect()
    }

    pub(crate) fn peer(&self, name: &str) -> Result<Peer> {
        self.find_peer(name)?
            .ok_or_else(|| anyhow::anyhow!("{}", t!("registry.no_facility", name = name)))
    }

    /// One facility, read from its own row only.
    pub(crate) fn find_peer(&self, name: &str) -> Result<Option<Peer>> {
        Ok(Self::load_peers(&self.db, Some(name))?.pop())
    }

    pub(crate) fn peers(&self) -> Result<Vec<Peer>> {
        Self::load_peers(&self.db, None)
    }

    /// Every facility, or the one named.
    fn load_peers(db: &Db, name: Option<&str>) -> Result<Vec<Peer>> {
        let rows = db.query(
            "SELECT name, identity, auth, psk, remote_ts, local_ts, remote_addr, start, ike, esp, enabled, created,
                    ike_lifetime, child_lifetime, child_bytes, dpd, mtu, router,
                    display_name, notes, medical_code FROM peers
             WHERE CAST(?1 AS TEXT) IS NULL OR name = ?1 ORDER BY name",
            args![name],
        )?;
        let mut out = Vec::new();
        for r in &rows {
            let (
                name,
                id,
                (auth, psk),
                remote_ts,
                local_ts,
                remote_addr,
                start,
                ike_s,
                esp_s,
                enabled,
                created,
                (ike_l, child_l, child_b, dpd),
                mtu,
                router,
                label,
            ) = row_fields(r)?;
            let bad = |what: &str| {
                anyhow::anyhow!("registry: facility '{name}' has an invalid stored {what}")
            };
            out.push(Peer {
                id: Identity::parse(&id).map_err(|_| bad("identity"))?,
                auth: match (auth.as_str(), psk) {
                    ("cert", _) => ike::PeerAuth::Cert,
                    ("psk", Some(k)) => ike::PeerAuth::Psk(Zeroizing::new(k)),
                    _ => return Err(bad("authentication")),
                },
                remote_ts: parse_subnets(&remote_ts).map_err(|_| bad("remote-ts"))?,
                local_ts: parse_subnets(&local_ts).map_err(|_| bad("local-ts"))?,
                remote_addr: remote_addr
                    .as_deref()
                    .map(parse_remote_addr)
                    .transpose()
                    .map_err(|_| bad("remote-addr"))?,
                start,
                ike: ProposalSet::parse(&ike_s, Protocol::Ike, false)
                    .map_err(|_| bad("IKE proposal"))?,
                esp: ProposalSet::parse(&esp_s, Protocol::Esp, false)
                    .map_err(|_| bad("ESP proposal"))?,
                enabled,
                created,
                lifetimes: ike::Lifetimes {
                    ike: std::time::Duration::from_secs(ike_l),
                    child: std::time::Duration::from_secs(child_l),
                    child_bytes: child_b,
                    dpd: std::time::Duration::from_secs(dpd),
                    ..ike::Lifetimes::default()
                },
                mtu,
                router: Router::parse(&router).ok_or_else(|| bad("router"))?,
                label,
                name,
            });
        }
        Ok(out)
    }
}

/// One `peers` row's columns in the order `load_peers` selects them.
type PeerFields = (
    String,
    String,
    (String, Option<Vec<u8>>),
    String,
    String,
    Option<String>,
    bool,
    String,
    String,
    bool,
    String,
    (u64, u64, Option<u64>, u64),
    Option<u32>,
    String,
    Label,
);

fn row_fields(r: &Row) -> Result<PeerFields> {
    Ok((
        r.text(0)?,
        r.text(1)?,
        (r.text(2)?, r.opt_blob(3)?),
        r.text(4)?,
        r.text(5)?,
        r.opt_text(6)?,
        r.bool(7)?,
        r.text(8)?,
        r.text(9)?,
        r.bool(10)?,
        r.text(11)?,
        (r.uint(12)?, r.uint(13)?, r.opt_uint(14)?, r.uint(15)?),
        r.opt_uint(16)?,
        r.text(17)?,
        Label {
            display_name: r.opt_text(18)?,
            notes: r.opt_text(19)?,
            medical_code: r.opt_text(20)?,
        },
    ))
}

/// Writes a new file readable only by its owner (0600).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The current time as RFC 3339 UTC, without a date library.
/// Where a facility was last seen by a hub, and whether its tunnel was up
/// then: the outside address and port of its NAT mapping as the hub saw
/// them (`daemon::takeover` initiates there when a hub starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastKnown {
    pub(crate) name: String,
    pub(crate) remote: SocketAddr,
    pub(crate) up: bool,
    /// Unix seconds of the change.
    pub(crate) since: i64,
}

// The `last_known` table, kept together here. Plain SQL that SQLite and
// PostgreSQL both take (an upsert with ON CONFLICT, integers for flags).
impl Registry {
    /// Stores the newest state of several facilities in one transaction.
    /// A row of a facility no longer in `peers` is not stored.
    pub(crate) fn store_last_known(&mut self, rows: &[LastKnown]) -> Result<()> {
        self.db.transaction(|tx| {
            for r in rows {
                if tx
                    .query_opt("SELECT 1 FROM peers WHERE name = ?1", args![&r.name])?
                    .is_none()
                {
                    continue;
                }
                tx.execute(
                    "INSERT INTO last_known (name, addr, port, up, since)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (name) DO UPDATE SET
                         addr = excluded.addr, port = excluded.port,
                         up = excluded.up, since = excluded.since",
                    args![
                        &r.name,
                        r.remote.ip().to_string(),
                        i64::from(r.remote.port()),
                        i64::from(r.up),
                        r.since
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Every facility's last known state, by name.
    pub(crate) fn last_known(&self) -> Result<Vec<LastKnown>> {
        let mut out = Vec::new();
        for row in self.db.query(
            "SELECT name, addr, port, up, since FROM last_known ORDER BY name",
            args![],
        )? {
            let (name, addr, port, up, since) = (
                row.text(0)?,
                row.text(1)?,
                row.int(2)?,
                row.int(3)?,
                row.int(4)?,
            );
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| anyhow::anyhow!("last_known: {name}: bad address '{addr}'"))?;
            let port = u16::try_from(port)
                .map_err(|_| anyhow::anyhow!("last_known: {name}: bad port {port}"))?;
            out.push(LastKnown {
                name,
                remote: SocketAddr::new(ip, port),
                up: up != 0,
                since,
            });
        }
        Ok(out)
    }
}

pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Formats seconds since the epoch as RFC 3339 UTC (civil-from-days, after
/// Howard Hinnant's public-domain algorithm).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A new state directory; with `RENKEI_TEST_PG_URL` (a PostgreSQL
    /// database the tests may create schemas in), its registry is a new
    /// schema there, so the same tests run against both backends.
    pub(super) fn temp_state() -> StateDir {
        let state = temp_sqlite_state();
        let url = PG_URL
            .with(|u| u.borrow().clone())
            .or_else(|| std::env::var("RENKEI_TEST_PG_URL").ok());
        let Some(url) = url else {
            return state;
        };
        let schema = format!("rk_test_{}", rand_suffix());
        let db = Db::connect_pg(&url).unwrap();
        db.batch(&format!("CREATE SCHEMA {schema}")).unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        state.with_registry(Some(format!("{url}{sep}options=-csearch_path%3D{schema}")))
    }

    std::thread_local! {
        /// The PostgreSQL database [`temp_state`] makes schemas in, set by
        /// [`the_registry_tests_pass_on_postgresql`] for the tests it runs.
        static PG_URL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    }

    /// The registry's tests that do not look at SQLite's files, run
    /// again against a PostgreSQL 15 cluster of their own (Debian's
    /// binaries as the `postgres` user, which needs root: the suite runs
    /// as root; `scripts/install-deps.sh` installs PostgreSQL).
    #[test]
    fn the_registry_tests_pass_on_postgresql() {
        if !std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
        {
            eprintln!("skipped: starting PostgreSQL as the postgres user needs root");
            return;
        }
        let pg = renkei_interop_tests::postgres::PgCluster::start();
        PG_URL.with(|u| *u.borrow_mut() = Some(pg.url()));
        for test in [
            distinguished_names_are_for_certificate_facilities,
            certificate_facilities_and_revocations_are_recorded,
            changes_are_validated_like_additions,
            a_facility_mtu_is_bounded_stored_and_kept_by_changes,
            a_router_sets_its_defaults_and_refuses_what_it_cannot_do,
            a_remote_address_may_be_a_dns_name_kept_as_given,
            certificate_facilities_need_an_identity_a_certificate_can_carry,
        ] {
            test();
        }
        PG_URL.with(|u| *u.borrow_mut() = None);
        let schemas = pg.psql_in(
            "renkei",
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rk_test_%'",
        );
        assert_eq!(schemas.trim(), "7", "each test had a schema of its own");
        let tables = pg.psql_in(
            "renkei",
            "SELECT count(*) FROM information_schema.tables WHERE table_schema LIKE 'rk_test_%' AND table_name = 'peers'",
        );
        assert_eq!(tables.trim(), "7", "the registries were made in PostgreSQL");
    }

    /// A new state directory whose registry is the SQLite file.
    fn temp_sqlite_state() -> StateDir {
        let dir = std::env::temp_dir().join(format!(
            "renkei-reg-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir::new(dir)
    }

    fn rand_suffix() -> u64 {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        u64::from_ne_bytes(b)
    }

    fn psk_of(p: &Peer) -> &[u8] {
        match &p.auth {
            ike::PeerAuth::Psk(k) => k,
            ike::PeerAuth::Cert => panic!("{} has no PSK", p.name),
        }
    }

    #[test]
    fn last_known_states_are_upserted_read_back_and_go_with_their_facility() {
        let state = temp_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        let psk = state.as_ref().join("psk");
        std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
        reg.add_peer(&NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            psk_file: Some(psk),
            remote_ts: "198.51.100.0/26".into(),
            ..Default::default()
        })
        .unwrap();
        let row = |up, port, since| LastKnown {
            name: "kyoto".into(),
            remote: SocketAddr::new("203.0.113.7".parse().unwrap(), port),
            up,
            since,
        };
        // A name that is not a facility is not stored.
        let stranger = LastKnown {
            name: "nobody".into(),
            ..row(true, 4500, 1)
        };
        reg.store_last_known(&[row(true, 4500, 10), stranger])
            .unwrap();
        assert_eq!(reg.last_known().unwrap(), vec![row(true, 4500, 10)]);
        // The newest state replaces the row (the NAT gave another port).
        reg.store_last_known(&[row(false, 61001, 20)]).unwrap();
        assert_eq!(reg.last_known().unwrap(), vec![row(false, 61001, 20)]);
        // It survives reopening, and goes with the facility.
        drop(reg);
        let mut reg = Registry::open(&state).unwrap();
        assert_eq!(reg.last_known().unwrap().len(), 1);
        reg.remove_peer_revoking("kyoto", 0).unwrap();
        assert!(reg.last_known().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(state.as_ref());
    }

    #[test]
    fn distinguished_names_are_for_certificate_facilities() {
        let state = temp_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        let dn = NewPeer {
            name: "kyoto".into(),
            id: "C=JP, O=Kyoto, CN=kyoto".into(),
            cert: true,
            remote_ts: "198.51.100.0/26".into(),
            ..Default::default()
        };
        let p = reg.add_peer(&dn).unwrap();
        assert!(matches!(p.id, Identity::Dn(_)));
        assert!(matches!(p.auth, ike::PeerAuth::Cert));
        // Stored and read back in the written form.
        let back = reg.peer("kyoto").unwrap();
        assert_eq!(back.id.to_string(), "C=JP, O=Kyoto, CN=kyoto");
        assert_eq!(back.id, p.id);
        // The export's local id is the quoted DN.
        let conf = crate::export::swanctl(&hub(), &back, false).unwrap();
        assert!(
            conf.contains("      id = \"C=JP, O=Kyoto, CN=kyoto\"\n"),
            "{conf}"
        );
        // The same DN in other case and spacing is the same identity.
        let twin = NewPeer {
            name: "kyoto2".into(),
            id: "c=jp,o=KYOTO,  cn=Kyoto".into(),
            remote_ts: "198.51.100.64/26".into(),
            ..dn.clone()
        };
        let e = reg.add_peer(&twin).unwrap_err().to_string();
        assert!(e.contains("already belongs to facility 'kyoto'"), "{e}");
        // With a pre-shared key, a DN is refused, saying why.
        let psk = state.as_ref().join("psk");
        std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
        let with_psk = NewPeer {
            name: "nara".into(),
            id: "C=JP, O=Nara, CN=nara".into(),
            cert: false,
            psk_file: Some(psk.clone()),
            remote_ts: "198.51.100.128/26".into(),
            ..Default::default()
        };
        let e = reg.add_peer(&with_psk).unwrap_err().to_string();
        assert_eq!(
            e,
            "id: C=JP, O=Nara, CN=nara is a distinguished name, which only certificate facilities can have (use --cert, or an FQDN, email or address identity with --psk-file)"
        );
        // Switching the DN facility to a PSK is refused the same way, and
        // so is giving a PSK facility a DN.
        let to_psk = PeerChange {
            psk_file: Some(psk.clone()),
            ..Default::default()
        };
        let e = reg.change_peer("kyoto", &to_psk).unwrap_err().to_string();
        assert!(e.contains("is a distinguished name"), "{e}");
        let osaka = NewPeer {
            name: "osaka".into(),
            id: "osaka.example".into(),
            psk_file: Some(psk),
            remote_ts: "198.51.100.192/26".into(),
            ..Default::default()
        };
        reg.add_peer(&osaka).unwrap();
        let to_dn = PeerChange {
            id: Some("C=JP, CN=osaka".into()),
            ..Default::default()
        };
        let e = reg.change_peer("osaka", &to_dn).unwrap_err().to_string();
        assert!(e.contains("is a distinguished name"), "{e}");
        // An unknown attribute type is named.
        let bad = NewPeer {
            name: "kobe".into(),
            id: "C=JP, X=1, CN=kobe".into(),
            remote_ts: "203.0.113.0/26".into(),
            ..dn
        };
        let e = reg.add_peer(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("id: distinguished name: unknown attribute type 'X'"),
            "{e}"
        );
    }

    #[test]
    fn certificate_facilities_and_revocations_are_recorded() {
        let state = temp_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        let cert = NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            cert: true,
            remote_ts: "198.51.100.0/26".into(),
            ..Default::default()
        };
        let p = reg.add_peer(&cert).unwrap();
        assert!(matches!(p.auth, ike::PeerAuth::Cert));
        let psk = state.as_ref().join("psk");
        std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
        // Both at once is refused; switching either way works and keeps
        // the rest.
        let both = PeerChange {
            id: Some(cert.id.clone()),
            psk_file: Some(psk.clone()),
            cert: true,
            remote_ts: Some(cert.remote_ts.clone()),
            ..Default::default()
        };
        assert!(reg.change_peer("kyoto", &both).is_err());
        let to_psk = PeerChange {
            psk_file: Some(psk),
            ..Default::default()
        };
        let p = reg.change_peer("kyoto", &to_psk).unwrap();
        assert_eq!(psk_of(&p), b"0123456789abcdef0123");
        let to_cert = PeerChange {
            cert: true,
            ..Default::default()
        };
        let p = reg.change_peer("kyoto", &to_cert).unwrap();
        assert!(matches!(p.auth, ike::PeerAuth::Cert));
        assert!(!p.tunnel_differs(&reg.peer("kyoto").unwrap()));
        let record = |serial: &str| CertRecord {
            serial: serial.into(),
            name: "kyoto".into(),
            identity: "kyoto.example".into(),
            key_type: "ecdsa-p256".into(),
            not_after: 2_000_000_000,
            issued: now_rfc3339(),
            revoked: None,
        };
        reg.record_cert(&record("0a")).unwrap();
        reg.record_cert(&record("0b")).unwrap();
        assert!(
            reg.record_cert(&record("0a")).is_err(),
            "serials are unique"
        );
        assert_eq!(
            reg.revoke_certs("kyoto", 1_800_000_000).unwrap(),
            ["0a", "0b"]
        );
        assert!(
            reg.revoke_certs("kyoto", 1_800_000_001).is_err(),
            "nothing left"
        );
        assert!(reg
            .certs()
            .unwrap()
            .iter()
            .all(|c| c.revoked == Some(1_800_000_000)));
        let _ = std::fs::remove_dir_all(&state);
    }

    #[test]
    fn a_registry_from_before_certificates_is_migrated() {
        let state = temp_sqlite_state();
        drop(Registry::init(&state, &hub()).unwrap());
        let db = state.registry();
        {
            // Rebuild the peers table as the first version made it.
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch(
                "DROP TABLE peers;
                 CREATE TABLE peers (
                    name TEXT PRIMARY KEY, identity TEXT NOT NULL UNIQUE,
                    auth TEXT NOT NULL CHECK (auth IN ('psk')), psk BLOB,
                    remote_ts TEXT NOT NULL, local_ts TEXT NOT NULL, remote_addr TEXT,
                    start INTEGER NOT NULL, ike TEXT NOT NULL, esp TEXT NOT NULL,
                    enabled INTEGER NOT NULL DEFAULT 1, created TEXT NOT NULL);
                 INSERT INTO peers VALUES ('old', 'old.example', 'psk', x'30313233343536373839616263646566',
                    '198.51.100.128/26', '0.0.0.0/0', NULL, 0,
                    'aes256gcm16-prfsha256-ecp256', 'aes256gcm16', 1, '2026-01-01T00:00:00Z');",
            )
            .unwrap();
        }
        conn_set_version(&db, "1");
        let mut reg = Registry::open(&state).unwrap();
        assert_eq!(reg.schema_version().unwrap(), SCHEMA_VERSION);
        let old = reg.peer("old").unwrap();
        assert_eq!(psk_of(&old), b"0123456789abcdef");
        assert_eq!(old.lifetimes.child.as_secs(), 3600, "added columns");
        assert_eq!(old.router, Router::Other, "existing facilities: other");
        assert!(old.to_config().ke_upgrade);
        reg.add_peer(&NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            cert: true,
            remote_ts: "198.51.100.0/26".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(reg.peers().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&state);
    }

    fn conn_set_version(db: &Path, v: &str) {
        rusqlite::Connection::open(db)
            .unwrap()
            .execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                [v],
            )
            .unwrap();
    }

    #[test]
    fn a_registry_from_a_later_renkei_is_refused_and_left_alone() {
        let state = temp_sqlite_state();
        drop(Registry::init(&state, &hub()).unwrap());
        let db = state.registry();
        conn_set_version(&db, "99");
        let before = std::fs::read(&db).unwrap();
        let err = format!("{:#}", Registry::open(&state).err().unwrap());
        assert!(
            err.contains(&format!(
                "schema version 99 is newer than this renkei's ({SCHEMA_VERSION})"
            )),
            "{err}"
        );
        assert_eq!(std::fs::read(&db).unwrap(), before);
        let _ = std::fs::remove_dir_all(&state);
    }

    pub(super) fn hub() -> Hub {
        Hub {
            id: Identity::parse("hub.example").unwrap(),
            public_addrs: vec![PublicAddr::Ip("192.0.2.1".parse().unwrap())],
            profile: "cryptrec".into(),
        }
    }

    #[test]
    fn refused_input_leaves_the_registry_unchanged() {
        let state = temp_sqlite_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        let psk = state.as_ref().join("psk");
        std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
        let short = state.as_ref().join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let good = NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            psk_file: Some(psk.clone()),
            remote_ts: "198.51.100.0/26".into(),
            ..Default::default()
        };
        let p = reg.add_peer(&good).unwrap();
        assert_eq!(psk_of(&p), b"0123456789abcdef0123");
        // Each case is a valid second facility with one thing wrong.
        let osaka = NewPeer {
            name: "osaka".into(),
            id: "osaka.example".into(),
            remote_ts: "198.51.100.64/26".into(),
            psk_file: Some(psk.clone()),
            ..Default::default()
        };
        let but = |change: &dyn Fn(&mut NewPeer)| {
            let mut p = osaka.clone();
            change(&mut p);
            p
        };
        let cases: Vec<(NewPeer, &str)> = vec![
            (
                but(&|p| {
                    p.name = "kyoto".into();
                    p.id = "other.example".into();
                }),
                "already exists",
            ),
            (but(&|p| p.id = "KYOTO.example".into()), "already belongs"),
            (
                but(&|p| p.remote_ts = "198.51.100.32/27".into()),
                "overlaps",
            ),
            (
                but(&|p| p.remote_ts = "198.51.100.64/33".into()),
                "remote-ts",
            ),
            (but(&|p| p.psk_file = Some(short.clone())), "at least 16"),
            (
                but(&|p| p.psk_file = Some(state.as_ref().join("missing"))),
                "cannot read",
            ),
            (
                but(&|p| p.ike = Some("3des-sha1-modp1024".into())),
                "CRYPTREC",
            ),
            (
                but(&|p| p.remote_addr = Some("not an address".into())),
                "remote-addr",
            ),
            (but(&|p| p.start = true), "--start needs"),
            (but(&|p| p.name = "bad name".into()), "name"),
        ];
        for (np, expect) in cases {
            let err = reg.add_peer(&np).unwrap_err().to_string();
            assert!(err.contains(expect), "{err} should mention {expect}");
            assert!(!err.contains('\n'), "one line: {err}");
            assert_eq!(reg.peers().unwrap().len(), 1);
        }
        assert!(
            Registry::init(&state, &hub()).is_err(),
            "init refuses to overwrite"
        );
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(state.as_ref().join("registry.db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        reg.remove_peer_revoking("kyoto", 0).unwrap();
        assert!(reg.remove_peer_revoking("kyoto", 0).is_err());
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn changes_are_validated_like_additions() {
        let state = temp_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        let psk = state.as_ref().join("psk");
        std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
        for (name, id, ts) in [
            ("kyoto", "kyoto.example", "198.51.100.0/26"),
            ("osaka", "osaka.example", "198.51.100.64/26"),
        ] {
            reg.add_peer(&NewPeer {
                name: name.into(),
                id: id.into(),
                psk_file: Some(psk.clone()),
                remote_ts: ts.into(),
                ..Default::default()
            })
            .unwrap();
        }
        reg.set_enabled("osaka", false).unwrap();
        let created = reg.peer("osaka").unwrap().created;
        // Narrowing its own prefix is fine; taking another facility's is not.
        let p = reg
            .change_peer(
                "osaka",
                &PeerChange {
                    remote_ts: Some("198.51.100.64/27".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(p.remote_ts[0].to_string(), "198.51.100.64/27");
        assert_eq!(psk_of(&p), b"0123456789abcdef0123", "the key is kept");
        assert!(!p.enabled, "a change keeps a facility disabled");
        assert_eq!(p.created, created);
        let before = reg.peer("osaka").unwrap();
        for (change, expect) in [
            (
                PeerChange {
                    remote_ts: Some("198.51.100.0/25".into()),
                    ..Default::default()
                },
                "overlaps",
            ),
            (
                PeerChange {
                    id: Some("kyoto.example".into()),
                    ..Default::default()
                },
                "already belongs",
            ),
            (
                PeerChange {
                    esp: Some("3des-sha1".into()),
                    ..Default::default()
                },
                "CRYPTREC",
            ),
            (
                PeerChange {
                    dpd: Some(1),
                    ..Default::default()
                },
                "dpd",
            ),
        ] {
            let err = reg.change_peer("osaka", &change).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
            let after = reg.peer("osaka").unwrap();
            assert!(
                !before.tunnel_differs(&after) && before.lifetimes == after.lifetimes,
                "unchanged after: {err}"
            );
        }
        assert!(reg.change_peer("nagoya", &PeerChange::default()).is_err());
        let p = reg
            .change_peer(
                "osaka",
                &PeerChange {
                    child_lifetime: Some(28800),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(
            !before.tunnel_differs(&p),
            "a lifetime change does not restart the tunnel"
        );
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn a_facility_mtu_is_bounded_stored_and_kept_by_changes() {
        let state = temp_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        let psk = state.as_ref().join("psk");
        std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
        let new = |mtu| NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            psk_file: Some(psk.clone()),
            remote_ts: "198.51.100.0/26".into(),
            mtu,
            ..Default::default()
        };
        for bad in [100, 575, 9001] {
            let err = reg.add_peer(&new(Some(bad))).unwrap_err().to_string();
            assert!(err.starts_with("mtu: "), "{err}");
        }
        assert!(reg.peers().unwrap().is_empty(), "refused: nothing stored");
        assert_eq!(reg.add_peer(&new(Some(1280))).unwrap().mtu, Some(1280));
        let p = reg
            .change_peer(
                "kyoto",
                &PeerChange {
                    dpd: Some(20),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(p.mtu, Some(1280), "a change of something else keeps it");
        let err = reg
            .change_peer(
                "kyoto",
                &PeerChange {
                    mtu: Some(70000),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("mtu: "), "{err}");
        assert_eq!(reg.peer("kyoto").unwrap().mtu, Some(1280));
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn validation_needs_no_registry() {
        // The same checks as `add_peer`, on typed values, without a database.
        let new = NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            cert: true,
            remote_ts: "198.51.100.0/26".into(),
            child_lifetime: Some(28800),
            ..Default::default()
        };
        let p = validate(&new, None, "2026-11-30T00:00:00Z").unwrap();
        assert_eq!(p.remote_ts[0].to_string(), "198.51.100.0/26");
        assert_eq!(p.lifetimes.child.as_secs(), 28800);
        assert!(p.enabled);
        assert_eq!(p.created, "2026-11-30T00:00:00Z");
        let e = validate(
            &NewPeer {
                dpd: Some(1),
                ..new.clone()
            },
            None,
            "2026-11-30T00:00:00Z",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("dpd: "), "{e}");
        // A change is applied to the typed facility: fields not given keep
        // their values without being printed and parsed again.
        let change = PeerChange {
            remote_ts: Some("198.51.100.0/27".into()),
            start: Some(true),
            ..Default::default()
        };
        let e = change.apply(&p, None).unwrap_err().to_string();
        assert!(e.contains("--start needs"), "{e}");
        let changed = PeerChange {
            remote_addr: Some("192.0.2.7".into()),
            ..change
        }
        .apply(&p, None)
        .unwrap();
        assert_eq!(changed.remote_ts[0].to_string(), "198.51.100.0/27");
        assert_eq!(changed.id, p.id);
        assert_eq!(changed.lifetimes, p.lifetimes);
        assert!(changed.tunnel_differs(&p));
    }

    #[test]
    fn a_router_sets_its_defaults_and_refuses_what_it_cannot_do() {
        let state = temp_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        let psk = state.as_ref().join("psk");
        std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
        let yamaha = NewPeer {
            name: "kyoto".into(),
            id: "kyoto.example".into(),
            psk_file: Some(psk.clone()),
            remote_ts: "198.51.100.0/26".into(),
            router: Some(Router::Yamaha),
            ..Default::default()
        };
        // What a YAMAHA RTX lacks is refused, naming the suite that works;
        // nothing is stored.
        for (ike, esp, field, token) in [
            (
                Some("aes256gcm16-prfsha256-ecp256"),
                None,
                "ike",
                "aes256gcm16",
            ),
            (Some("aes256-sha256-ecp256"), None, "ike", "ecp256"),
            (Some("aes256-sha256-modp3072"), None, "ike", "modp3072"),
            (None, Some("aes256gcm16"), "esp", "aes256gcm16"),
            (None, Some("aes256-sha256-modp4096"), "esp", "modp4096"),
        ] {
            let e = reg
                .add_peer(&NewPeer {
                    ike: ike.map(Into::into),
                    esp: esp.map(Into::into),
                    ..yamaha.clone()
                })
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "{field}: a YAMAHA RTX cannot do '{token}' (it has no AES-GCM, no Camellia, no ECP groups, no MODP above 2048, and SHA-384/512 only on some models); use --{field} aes256-sha256-modp2048"
                )
            );
            assert!(reg.peers().unwrap().is_empty());
        }
        let e = reg
            .add_peer(&NewPeer {
                psk_file: None,
                cert: true,
                ..yamaha.clone()
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cert: a YAMAHA RTX facility authenticates with a pre-shared key"),
            "{e}"
        );
        let e = reg
            .add_peer(&NewPeer {
                child_lifetime: Some(100),
                ..yamaha.clone()
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("child-lifetime: a YAMAHA RTX takes lifetimes of 300..=691200 s"),
            "{e}"
        );
        // Its defaults: MODP-2048 everywhere, PFS, no KE upgrade.
        let p = reg.add_peer(&yamaha).unwrap();
        assert_eq!(p.router, Router::Yamaha);
        assert_eq!(p.ike.to_string(), "aes256-sha256-modp2048");
        assert_eq!(p.esp.to_string(), "aes256-sha256-modp2048");
        assert_eq!(p.ike.first_ke(), Some(ike::wire::KeId::Modp2048));
        assert!(!p.to_config().ke_upgrade);
        let back = reg.peer("kyoto").unwrap();
        assert_eq!(back.router, Router::Yamaha, "stored");
        // A proposal change is checked against the stored router.
        let e = reg
            .change_peer(
                "kyoto",
                &PeerChange {
                    ike: Some("aes256-sha256-ecp384".into()),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ike: a YAMAHA RTX cannot do 'ecp384'"), "{e}");
        assert_eq!(
            reg.peer("kyoto").unwrap().ike.to_string(),
            "aes256-sha256-modp2048"
        );
        // Another router brings its own defaults for what is not given.
        let p = reg
            .change_peer(
                "kyoto",
                &PeerChange {
                    router: Some(Router::Fortigate),
                    child_lifetime: Some(7200),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(p.router, Router::Fortigate);
        assert_eq!(p.ike.to_string(), "aes256gcm16-prfsha256-ecp384");
        assert_eq!(p.esp.to_string(), "aes256gcm16-ecp384");
        assert_eq!(p.lifetimes.child.as_secs(), 7200);
        assert!(p.to_config().ke_upgrade);
        // NEC: MODP only.
        let e = reg
            .change_peer(
                "kyoto",
                &PeerChange {
                    router: Some(Router::Nec),
                    esp: Some("aes256gcm16-ecp256".into()),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("esp: a NEC UNIVERGE IX cannot do 'ecp256'"),
            "{e}"
        );
        assert!(e.ends_with("use --esp aes256-sha256-modp2048"), "{e}");
        assert_eq!(reg.peer("kyoto").unwrap().router, Router::Fortigate);
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn a_remote_address_may_be_a_dns_name_kept_as_given() {
        for (given, shown, ip) in [
            ("192.0.2.7", "192.0.2.7:500", true),
            ("[2001:db8::7]:4500", "[2001:db8::7]:4500", true),
            (
                "Kyoto-Clinic.aa0.netvolante.jp",
                "Kyoto-Clinic.aa0.netvolante.jp",
                false,
            ),
            ("kyoto.example.jp:4500", "kyoto.example.jp:4500", false),
            ("localhost", "localhost", false),
        ] {
            let a = parse_remote_addr(given).unwrap();
            assert_eq!(a.to_string(), shown);
            assert_eq!(a.ip().is_some(), ip, "{given}");
            assert_eq!(parse_remote_addr(&a.to_string()).unwrap(), a, "round trip");
        }
        for bad in [
            "not an address",
            "-kyoto.example",
            "kyoto..example",
            "kyoto.example:0",
            "kyoto.example:99999",
            "192.0.2.300",
            "under_score.example",
            "",
        ] {
            let e = parse_remote_addr(bad).unwrap_err().to_string();
            assert!(e.starts_with("remote-addr: "), "{bad}: {e}");
        }
        // Stored as given; the IKE layer gets no address for a name (the
        // daemon resolves it at each attempt).
        let state = temp_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        let psk = state.as_ref().join("psk");
        std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
        let p = reg
            .add_peer(&NewPeer {
                name: "kyoto".into(),
                id: "kyoto.example".into(),
                psk_file: Some(psk),
                remote_ts: "198.51.100.0/26".into(),
                remote_addr: Some("Kyoto-Clinic.aa0.netvolante.jp".into()),
                start: true,
                router: Some(Router::Yamaha),
                ..Default::default()
            })
            .unwrap();
        let back = reg.peer("kyoto").unwrap();
        assert_eq!(back.remote_addr, p.remote_addr);
        assert_eq!(
            back.remote_addr.as_ref().unwrap().to_string(),
            "Kyoto-Clinic.aa0.netvolante.jp"
        );
        assert_eq!(back.to_config().remote_addr, None);
        std::fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_219_200), "2026-11-21T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    /// `peer add --cert` refuses an identity no certificate can carry and
    /// changes nothing; an internationalised domain name is stored in its
    /// ASCII form, which is what `cert issue` puts in the certificate.
    #[test]
    fn certificate_facilities_need_an_identity_a_certificate_can_carry() {
        let state = temp_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        for (id, why) in [
            ("看護@kyoto.example", "not ASCII"),
            ("C=JP, OU=a, OU=b, CN=kyoto", "appears twice"),
            ("\u{0301}a.example.jp", "internationalised domain name"),
        ] {
            let e = reg
                .add_peer(&NewPeer {
                    name: "kyoto".into(),
                    id: id.into(),
                    cert: true,
                    remote_ts: "198.51.100.0/26".into(),
                    ..Default::default()
                })
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("id: ") && e.contains(why), "{id}: {e}");
            assert!(reg.peers().unwrap().is_empty(), "{id}: stored");
        }
        let p = reg
            .add_peer(&NewPeer {
                name: "kyoto".into(),
                id: "京都.example.jp".into(),
                cert: true,
                remote_ts: "198.51.100.0/26".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(p.id.to_string(), "xn--1lqs03n.example.jp");
        // Switching to an identity no certificate can carry is refused too.
        let e = reg
            .change_peer(
                "kyoto",
                &PeerChange {
                    id: Some("看護@kyoto.example".into()),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("id: "), "{e}");
        assert_eq!(
            reg.peer("kyoto").unwrap().id.to_string(),
            "xn--1lqs03n.example.jp"
        );
    }
}
