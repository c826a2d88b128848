//! Configuration as files (issue #18): the declarative TOML file of
//! `renkei apply` and `renkei dump`, the CSV of `renkei apply --csv`, the
//! secrets file, and the plan (what would be added, changed, removed).
//!
//! ```text
//!  TOML file ─parse─┐                         ┌─ dry-run: print the plan
//!  CSV file ──parse─┼─▶ [Facility] + locations ─plan(registry)─▶ Plan
//!  secrets file ────┘   (every problem kept)  └─ apply: one registry transaction,
//!                                                audit, reload of the running hub
//! ```
//!
//! Nothing here writes: [`plan`] turns the declared facilities into
//! validated [`Peer`]s with [`registry::validate`] (the same function as
//! `peer add`), checks the resulting set as a whole (names, identities,
//! overlapping selectors, the host's networks) and collects *every*
//! problem with its location (`file:line` or `file:line, column`), so an
//! operator fixes a file in one pass. [`Registry::write_declared`] writes
//! a plan without problems in one transaction.

pub(crate) mod csv;
pub(crate) mod secrets;

use crate::hostnet::HostNetworks;
use crate::registry::{self, Label, NewPeer, Peer, PublicAddr, Registry};
use crate::router::Router;
use ike::proposal::Protocol;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use zeroize::Zeroizing;

/// The format version `renkei dump` writes and `apply` reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// What `psk` may say in a file: make a key (only for a facility that has
/// none yet).
pub(crate) const PSK_GENERATE: &str = "generate";

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    /// [`FORMAT_VERSION`]; absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hub: Option<HubEntry>,
    #[serde(default)]
    pub(crate) facility: Vec<Facility>,
}

/// `[hub]`: the hub's settings a file may state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HubEntry {
    /// The hub's identity: only checked (a file made for another hub is
    /// refused); it is set by `renkei init`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// Replaces `hub set --public-addr` when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) public_addrs: Option<Vec<String>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_true(b: &bool) -> bool {
    *b
}
fn yes() -> bool {
    true
}

/// Authentication of a facility in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Auth {
    Psk,
    Cert,
}

/// One `[[facility]]`: the same settings as `peer add`, with the same
/// defaults (a key left out takes the router's default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Facility {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) medical_code: Option<String>,
    pub(crate) id: String,
    pub(crate) auth: Auth,
    /// Only `"generate"`; keys live in the secrets file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) psk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) router: Option<String>,
    pub(crate) remote_ts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) local_ts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) remote_addr: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) start: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub(crate) enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ike: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) esp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ike_lifetime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) child_lifetime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) child_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dpd: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) notes: Option<String>,
}

/// Where a declared facility came from, to say where a problem is.
#[derive(Debug, Clone)]
pub(crate) enum Loc {
    /// A `[[facility]]` table: its text is `src[start..end]`.
    Toml {
        path: String,
        src: std::sync::Arc<str>,
        start: usize,
        end: usize,
    },
    /// A CSV record at `line`.
    Csv { path: String, line: u64 },
    /// No location (a file-wide problem).
    File { path: String },
}

/// 1-based line of byte `offset` in `src`.
pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

impl Loc {
    /// Where `field` (a key as the file spells it; `None`: the facility
    /// itself) is.
    pub(crate) fn at(&self, field: Option<&str>) -> String {
        match self {
            Loc::Toml {
                path,
                src,
                start,
                end,
            } => {
                let table = &src[*start..*end];
                let found = field.and_then(|f| {
                    let mut off = 0;
                    for l in table.split_inclusive('\n') {
                        let t = l.trim_start();
                        if t.strip_prefix(f)
                            .is_some_and(|rest| rest.trim_start().starts_with('='))
                        {
                            return Some(start + off + (l.len() - t.len()));
                        }
                        off += l.len();
                    }
                    None
                });
                format!("{path}:{}", line_of(src, found.unwrap_or(*start)))
            }
            Loc::Csv { path, line } => match field {
                Some(f) => format!("{path}:{line}, column {f}"),
                None => format!("{path}:{line}"),
            },
            Loc::File { path } => path.clone(),
        }
    }
}

/// One thing wrong with the input, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) at: String,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A problem from a validation error "field: reason", located at that
/// field of the facility (`psk-file` is the file's `psk`).
fn problem(loc: &Loc, facility: &str, e: &str) -> Problem {
    let field = e
        .split_once(':')
        .map(|(f, _)| f)
        .filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        .map(|f| match f {
            "psk-file" => "psk".to_string(),
            "cert" => "auth".to_string(),
            f => f.replace('-', "_"),
        });
    Problem {
        at: loc.at(field.as_deref()),
        message: format!("facility '{facility}': {e}"),
    }
}

/// Declared facilities with their locations, from a TOML file or a CSV.
#[derive(Debug, Default)]
pub(crate) struct Declared {
    pub(crate) hub: Option<HubEntry>,
    /// Where `[hub]` is (`file:line`).
    pub(crate) hub_at: String,
    /// Facilities that could not be read (an unknown key, a wrong type):
    /// reported with the problems [`plan`] finds in the others.
    pub(crate) problems: Vec<Problem>,
    pub(crate) facilities: Vec<(Facility, Loc)>,
}

/// Parses a TOML file. A syntax error, an unknown key or a wrong type
/// stops at the first (with its line and column, from the TOML parser);
/// each `[[facility]]` is read on its own, so every facility with an
/// unknown or mistyped key is reported.
pub(crate) fn parse_toml(path: &str, text: &str) -> Result<Declared, Vec<Problem>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        #[serde(default)]
        version: Option<u32>,
        #[serde(default)]
        hub: Option<HubEntry>,
        #[serde(default)]
        facility: Vec<toml::Spanned<toml::Table>>,
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let src: std::sync::Arc<str> = text.into();
    let file_problem = |e: toml::de::Error| {
        let at = match e.span() {
            Some(s) => format!("{path}:{}", line_of(text, s.start)),
            None => path.to_string(),
        };
        vec![Problem {
            at,
            message: e.message().trim().to_string(),
        }]
    };
    let raw: Raw = toml::from_str(text).map_err(file_problem)?;
    let mut problems = Vec::new();
    if let Some(v) = raw.version.filter(|v| *v != FORMAT_VERSION) {
        problems.push(Problem {
            at: Loc::File { path: path.into() }.at(None),
            message: format!(
                "version: {v} is not a format this renkei reads (it reads version {FORMAT_VERSION})"
            ),
        });
    }
    let hub_line = text
        .lines()
        .position(|l| l.trim_start().starts_with("[hub]"))
        .map_or(1, |i| i + 1);
    let mut out = Declared {
        hub_at: format!("{path}:{hub_line}"),
        hub: raw.hub,
        facilities: Vec::new(),
        problems: Vec::new(),
    };
    for t in raw.facility {
        let span = t.span();
        let loc = Loc::Toml {
            path: path.to_string(),
            src: src.clone(),
            start: span.start,
            end: span.end,
        };
        let table = t.into_inner();
        let name = table
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        match toml::Value::Table(table).try_into::<Facility>() {
            Ok(f) => out.facilities.push((f, loc)),
            Err(e) => {
                let msg = e.message().trim().to_string();
                // "unknown field `foo`, expected …": point at `foo`.
                let field = msg
                    .split('`')
                    .nth(1)
                    .filter(|_| msg.starts_with("unknown field"));
                problems.push(Problem {
                    at: loc.at(field),
                    message: format!("facility '{name}': {msg}"),
                });
            }
        }
    }
    out.problems = problems;
    Ok(out)
}

/// A field's change, for `--dry-run` and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FieldChange {
    pub(crate) field: &'static str,
    pub(crate) old: String,
    pub(crate) new: String,
}

/// What `apply` does to one facility.
#[derive(Debug)]
pub(crate) enum Action {
    Add(Box<Peer>),
    Change(Box<Peer>, Vec<FieldChange>),
    Remove(String),
}

/// What an apply would do: the facilities added, changed and removed (in
/// name order), the unchanged ones, and the hub's addresses.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) actions: Vec<Action>,
    pub(crate) unchanged: usize,
    /// Facilities in the registry but not in the file, kept (no `--prune`).
    pub(crate) kept: Vec<String>,
    /// New public addresses (old, new) when they change.
    pub(crate) public_addrs: Option<(Vec<PublicAddr>, Vec<PublicAddr>)>,
    /// Keys made for `psk = "generate"`: printed once after applying.
    pub(crate) generated: Vec<(String, Zeroizing<String>)>,
}

impl Plan {
    pub(crate) fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.public_addrs.is_none()
    }
}

/// Each field of a facility as `--dry-run` compares them (never the key).
fn fields(p: &Peer) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    vec![
        ("display_name", opt(p.label.display_name.clone())),
        ("medical_code", opt(p.label.medical_code.clone())),
        ("id", p.id.to_string()),
        (
            "auth",
            match p.auth {
                ike::PeerAuth::Psk(_) => "psk".into(),
                ike::PeerAuth::Cert => "cert".into(),
            },
        ),
        ("router", p.router.as_str().into()),
        ("remote_ts", join(&p.remote_ts)),
        ("local_ts", join(&p.local_ts)),
        (
            "remote_addr",
            opt(p.remote_addr.as_ref().map(ToString::to_string)),
        ),
        ("start", p.start.to_string()),
        ("enabled", p.enabled.to_string()),
        ("ike", p.ike.to_string()),
        ("esp", p.esp.to_string()),
        ("ike_lifetime", p.lifetimes.ike.as_secs().to_string()),
        ("child_lifetime", p.lifetimes.child.as_secs().to_string()),
        (
            "child_bytes",
            opt(p.lifetimes.child_bytes.map(|b| b.to_string())),
        ),
        ("dpd", p.lifetimes.dpd.as_secs().to_string()),
        ("mtu", opt(p.mtu.map(|m| m.to_string()))),
        ("notes", opt(p.label.notes.clone())),
    ]
}

fn join(v: &[ike::ts::Subnet]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The changes from `old` to `new`, field by field; a new key is one
/// change that shows no key.
pub(crate) fn diff(old: &Peer, new: &Peer) -> Vec<FieldChange> {
    let mut out: Vec<FieldChange> = fields(old)
        .into_iter()
        .zip(fields(new))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((field, old), (_, new))| FieldChange { field, old, new })
        .collect();
    if let (ike::PeerAuth::Psk(a), ike::PeerAuth::Psk(b)) = (&old.auth, &new.auth) {
        if **a != **b {
            out.push(FieldChange {
                field: "psk",
                old: "(key)".into(),
                new: "(new key)".into(),
            });
        }
    }
    out
}

/// A new facility's fields (for the audit log: `old` is "-").
pub(crate) fn diff_from_nothing(p: &Peer) -> Vec<FieldChange> {
    fields(p)
        .into_iter()
        .filter(|(_, v)| v != "-")
        .map(|(field, new)| FieldChange {
            field,
            old: "-".into(),
            new,
        })
        .collect()
}

/// A new pre-shared key for `psk = "generate"`: 32 characters of letters
/// and digits (about 190 bits), which every router's configuration takes
/// without quoting.
pub(crate) fn generate_psk() -> Zeroizing<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = Zeroizing::new(String::with_capacity(32));
    let mut buf = [0u8; 64];
    while out.len() < 32 {
        aws_lc_rs::rand::fill(&mut buf).expect("the system random generator");
        // Rejection sampling: no bias towards the first characters.
        let limit = 256 - 256 % ALPHABET.len();
        for b in buf {
            if (b as usize) < limit && out.len() < 32 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    buf.fill(0);
    out
}

/// What [`plan`] compares a file against.
pub(crate) struct Current<'a> {
    pub(crate) hub: &'a registry::Hub,
    pub(crate) peers: &'a [Peer],
}

/// Options of one apply.
pub(crate) struct Options<'a> {
    /// Remove facilities the file does not list.
    pub(crate) prune: bool,
    /// Keys from the secrets file, by facility.
    pub(crate) secrets: &'a HashMap<String, Zeroizing<Vec<u8>>>,
    /// Where the secrets came from (for messages).
    pub(crate) secrets_path: Option<&'a str>,
    /// The time added facilities are recorded as created.
    pub(crate) now: &'a str,
}

/// Compares `declared` with the registry: every facility validated as
/// `peer add` validates it, the set checked as a whole, and the host's
/// networks checked by `host_check`. Every problem is returned, each
/// with its location; with none, the plan.
pub(crate) fn plan(
    declared: &Declared,
    current: &Current<'_>,
    opts: &Options<'_>,
    host_check: &dyn Fn(&Peer) -> anyhow::Result<()>,
) -> Result<Plan, Vec<Problem>> {
    let mut problems = declared.problems.clone();
    let mut plan = Plan::default();
    let by_name: HashMap<&str, &Peer> =
        current.peers.iter().map(|p| (p.name.as_str(), p)).collect();
    // Hub settings.
    if let Some(h) = &declared.hub {
        if let Some(id) = &h.id {
            match pki::Identity::parse(id) {
                Ok(i) if i == current.hub.id => {}
                _ => problems.push(Problem {
                    at: declared.hub_at.clone(),
                    message: format!(
                        "id: this file is for hub '{id}', but this hub is '{}' (a hub's identity is set by `renkei init`)",
                        current.hub.id
                    ),
                }),
            }
        }
        if let Some(addrs) = &h.public_addrs {
            let mut parsed = Vec::new();
            for a in addrs {
                match a.parse::<PublicAddr>() {
                    Ok(p) => parsed.push(p),
                    Err(e) => problems.push(Problem {
                        at: declared.hub_at.clone(),
                        message: format!("public_addrs: {e}"),
                    }),
                }
            }
            if parsed != current.hub.public_addrs {
                plan.public_addrs = Some((current.hub.public_addrs.clone(), parsed));
            }
        }
    }
    // Each facility on its own.
    let mut seen: HashMap<&str, &Loc> = HashMap::new();
    let mut declared_peers: Vec<(Peer, &Loc)> = Vec::new();
    for (f, loc) in &declared.facilities {
        if let Some(first) = seen.insert(f.name.as_str(), loc) {
            problems.push(Problem {
                at: loc.at(Some("name")),
                message: format!(
                    "facility '{}' is declared twice (first at {})",
                    f.name,
                    first.at(Some("name"))
                ),
            });
            continue;
        }
        let old = by_name.get(f.name.as_str()).copied();
        match build(f, old, opts, &mut plan.generated) {
            Ok(p) => match host_check(&p) {
                Ok(()) => declared_peers.push((p, loc)),
                Err(e) => problems.push(problem(loc, &f.name, &e.to_string())),
            },
            Err(e) => problems.push(problem(loc, &f.name, &format!("{e:#}"))),
        }
    }
    // The resulting set: declared facilities, and without --prune the
    // others as they are.
    let declared_names: std::collections::HashSet<&str> = declared
        .facilities
        .iter()
        .map(|(f, _)| f.name.as_str())
        .collect();
    let kept: Vec<&Peer> = current
        .peers
        .iter()
        .filter(|p| !declared_names.contains(p.name.as_str()))
        .collect();
    set_checks(
        &declared_peers,
        if opts.prune { &[] } else { &kept[..] },
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut actions: BTreeMap<String, Action> = BTreeMap::new();
    for (p, _) in declared_peers {
        match by_name.get(p.name.as_str()) {
            None => {
                actions.insert(p.name.clone(), Action::Add(Box::new(p)));
            }
            Some(old) => {
                let d = diff(old, &p);
                if d.is_empty() {
                    plan.unchanged += 1;
                } else {
                    actions.insert(p.name.clone(), Action::Change(Box::new(p), d));
                }
            }
        }
    }
    for p in kept {
        if opts.prune {
            actions.insert(p.name.clone(), Action::Remove(p.name.clone()));
        } else {
            plan.kept.push(p.name.clone());
        }
    }
    plan.actions = actions.into_values().collect();
    Ok(plan)
}

/// One declared facility as a validated [`Peer`] (`old`: the stored one
/// of that name).
fn build(
    f: &Facility,
    old: Option<&Peer>,
    opts: &Options<'_>,
    generated: &mut Vec<(String, Zeroizing<String>)>,
) -> anyhow::Result<Peer> {
    registry::check_name(&f.name)?;
    let router = match &f.router {
        None => None,
        Some(r) => Some(Router::parse(r).ok_or_else(|| {
            anyhow::anyhow!(
                "router: '{r}' is not one of yamaha, cisco, fortigate, nec, strongswan, other"
            )
        })?),
    };
    if let Some(p) = f.psk.as_deref().filter(|p| *p != PSK_GENERATE) {
        let _ = p;
        anyhow::bail!("psk-file: the only value `psk` takes in this file is \"generate\"; keys go in the secrets file (--secrets), never in this file");
    }
    let key = match f.auth {
        Auth::Cert => {
            if f.psk.is_some() {
                anyhow::bail!("psk-file: psk = \"generate\" is for auth = \"psk\"");
            }
            None
        }
        Auth::Psk => match opts.secrets.get(&f.name) {
            Some(k) => Some(k.clone()),
            None => match old.map(|o| &o.auth) {
                Some(ike::PeerAuth::Psk(k)) => Some(k.clone()),
                _ if f.psk.as_deref() == Some(PSK_GENERATE) => {
                    let k = generate_psk();
                    let bytes = Zeroizing::new(k.as_bytes().to_vec());
                    generated.push((f.name.clone(), k));
                    Some(bytes)
                }
                _ => anyhow::bail!(
                    "psk-file: no pre-shared key for this facility: add it to the secrets file{} or write psk = \"generate\"",
                    opts.secrets_path
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_else(|| " (--secrets FILE)".into())
                ),
            },
        },
    };
    let new = NewPeer {
        name: f.name.clone(),
        id: f.id.clone(),
        psk_file: None,
        cert: f.auth == Auth::Cert,
        remote_ts: f.remote_ts.join(","),
        local_ts: f.local_ts.as_ref().map(|v| v.join(",")),
        remote_addr: f.remote_addr.clone(),
        start: f.start,
        ike: f.ike.clone(),
        esp: f.esp.clone(),
        ike_lifetime: f.ike_lifetime,
        child_lifetime: f.child_lifetime,
        child_bytes: f.child_bytes,
        dpd: f.dpd,
        mtu: f.mtu,
        router,
        label: Label {
            display_name: f.display_name.clone(),
            notes: f.notes.clone(),
            medical_code: f.medical_code.clone(),
        },
    };
    if f.remote_ts.is_empty() {
        anyhow::bail!("remote-ts: at least one prefix is required");
    }
    let created = old.map_or(opts.now, |o| o.created.as_str());
    let mut p = registry::validate(&new, key, created)?;
    p.enabled = f.enabled;
    Ok(p)
}

/// Checks across facilities: identities unique, selectors not overlapping
/// (the declared ones among themselves and against those kept). A
/// problem is reported at the later declared facility of a pair.
fn set_checks(declared: &[(Peer, &Loc)], kept: &[&Peer], problems: &mut Vec<Problem>) {
    let all: Vec<(&Peer, Option<&Loc>)> = declared
        .iter()
        .map(|(p, l)| (p, Some(*l)))
        .chain(kept.iter().map(|p| (*p, None)))
        .collect();
    // (reporting facility, the other one) of a pair, if one is declared.
    let pick = |i: usize, j: usize| {
        let (a, b) = (i.min(j), i.max(j));
        match (all[b].1, all[a].1) {
            (Some(l), _) => Some((b, a, l)),
            (None, Some(l)) => Some((a, b, l)),
            (None, None) => None,
        }
    };
    let mut report = |r: usize, field: &str, loc: &Loc, message: String| {
        problems.push(Problem {
            at: loc.at(Some(field)),
            message: format!("facility '{}': {field}: {message}", all[r].0.name),
        });
    };
    // Identities: exact text by hash; distinguished names pairwise (they
    // compare equal across case and spacing).
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (i, (p, _)) in all.iter().enumerate() {
        if let Some(j) = ids.insert(p.id.to_string(), i) {
            if let Some((r, o, loc)) = pick(i, j) {
                let msg = format!(
                    "identity {} already belongs to facility '{}'",
                    all[r].0.id, all[o].0.name
                );
                report(r, "id", loc, msg);
            }
        }
    }
    let dns: Vec<usize> = (0..all.len())
        .filter(|i| matches!(all[*i].0.id, pki::Identity::Dn(_)))
        .collect();
    for (x, &i) in dns.iter().enumerate() {
        for &j in &dns[x + 1..] {
            if all[i].0.id == all[j].0.id && all[i].0.id.to_string() != all[j].0.id.to_string() {
                if let Some((r, o, loc)) = pick(i, j) {
                    let msg = format!(
                        "identity {} already belongs to facility '{}' (as {})",
                        all[r].0.id, all[o].0.name, all[o].0.id
                    );
                    report(r, "id", loc, msg);
                }
            }
        }
    }
    // Selectors: sorted by first address, each compared with the ones
    // after it until they start beyond its end.
    let mut nets: Vec<(u128, u128, bool, usize, ike::ts::Subnet)> = Vec::new();
    for (i, (p, _)) in all.iter().enumerate() {
        for s in &p.remote_ts {
            let (lo, hi, v6) = range(s);
            nets.push((lo, hi, v6, i, *s));
        }
    }
    nets.sort_by_key(|n| (n.2, n.0, std::cmp::Reverse(n.1)));
    for (x, &(_, hi, v6, i, s)) in nets.iter().enumerate() {
        for &(lo2, _, v62, j, t) in &nets[x + 1..] {
            if v62 != v6 || lo2 > hi {
                break;
            }
            if i == j {
                continue;
            }
            if let Some((r, o, loc)) = pick(i, j) {
                let (mine, theirs) = if r == i { (s, t) } else { (t, s) };
                let msg = format!(
                    "{mine} overlaps {theirs} of facility '{}' (its traffic would be routed to the other)",
                    all[o].0.name
                );
                report(r, "remote_ts", loc, msg);
            }
        }
    }
}

/// The address range of a subnet, as numbers (IPv4 and IPv6 apart).
fn range(s: &ike::ts::Subnet) -> (u128, u128, bool) {
    let num = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    (num(s.first()), num(s.last()), s.addr().is_ipv6())
}

/// The registry as a file: what `renkei dump` writes. Facilities in name
/// order; a value equal to what `apply` would take when it is left out
/// (the router's default) is left out, so that the file says what was
/// chosen.
pub(crate) fn dump(hub: &registry::Hub, peers: &[Peer]) -> anyhow::Result<String> {
    let mut file = File {
        version: Some(FORMAT_VERSION),
        hub: Some(HubEntry {
            id: Some(hub.id.to_string()),
            public_addrs: Some(hub.public_addrs.iter().map(ToString::to_string).collect()),
        }),
        facility: Vec::new(),
    };
    let default_local =
        ike::ts::parse_subnets(registry::DEFAULT_LOCAL_TS).map_err(|e| anyhow::anyhow!("{e}"))?;
    for p in peers {
        let d = p.router.defaults();
        let not_default = |v: String, default: &str| (v != default).then_some(v);
        let ike_s = p.ike.to_string();
        let esp_s = p.esp.to_string();
        let ike_default = crate::router::default_set(p.router, Protocol::Ike).to_string();
        let esp_default = crate::router::default_set(p.router, Protocol::Esp).to_string();
        let secs =
            |v: std::time::Duration, def: std::time::Duration| (v != def).then_some(v.as_secs());
        file.facility.push(Facility {
            name: p.name.clone(),
            display_name: p.label.display_name.clone(),
            medical_code: p.label.medical_code.clone(),
            id: p.id.to_string(),
            auth: match p.auth {
                ike::PeerAuth::Psk(_) => Auth::Psk,
                ike::PeerAuth::Cert => Auth::Cert,
            },
            psk: None,
            router: (p.router != Router::default()).then(|| p.router.as_str().to_string()),
            remote_ts: p.remote_ts.iter().map(ToString::to_string).collect(),
            local_ts: (p.local_ts != default_local)
                .then(|| p.local_ts.iter().map(ToString::to_string).collect()),
            remote_addr: p.remote_addr.as_ref().map(ToString::to_string),
            start: p.start,
            enabled: p.enabled,
            ike: not_default(ike_s, &ike_default),
            esp: not_default(esp_s, &esp_default),
            ike_lifetime: secs(p.lifetimes.ike, d.ike_lifetime),
            child_lifetime: secs(p.lifetimes.child, d.child_lifetime),
            child_bytes: p.lifetimes.child_bytes,
            dpd: secs(p.lifetimes.dpd, d.dpd),
            mtu: p.mtu,
            notes: p.label.notes.clone(),
        });
    }
    let body = toml::to_string(&file)?;
    Ok(format!(
        "# renkei configuration (`renkei dump`; apply with `renkei apply FILE`).\n\
         # Pre-shared keys are never in this file: they stay in the registry, and\n\
         # new ones come from a secrets file (--secrets) or psk = \"generate\".\n\n{body}"
    ))
}

/// Applies [`Registry::write_declared`] for `plan`.
pub(crate) fn write(
    reg: &mut Registry,
    plan: &Plan,
    now: i64,
) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut upserts = Vec::new();
    let mut removes = Vec::new();
    for a in &plan.actions {
        match a {
            Action::Add(p) | Action::Change(p, _) => upserts.push((**p).clone()),
            Action::Remove(n) => removes.push(n.clone()),
        }
    }
    reg.write_declared(
        plan.public_addrs.as_ref().map(|(_, new)| &new[..]),
        &upserts,
        &removes,
        now,
    )
}

/// The host check of `peer add`, for [`plan`].
pub(crate) fn host_checker<'a>(
    reg: &'a Registry,
    host: &'a HostNetworks,
) -> impl Fn(&Peer) -> anyhow::Result<()> + 'a {
    move |p| reg.check_host(p, host)
}

#[cfg(test)]
mod tests;
