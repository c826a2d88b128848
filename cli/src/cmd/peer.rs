//! `renkei peer …`: adding, changing, listing and removing facilities.

use super::{notify_daemon, pad};
use crate::args::PeerCommand;
use crate::audit;
use crate::hostnet::HostNetworks;
use crate::registry::{self, NewPeer, PeerChange, Registry};
use crate::state::StateDir;
use anyhow::Result;
use rust_i18n::t;
use serde::Serialize;
use serde_json::{json, Value};

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
    router: &'static str,
    display_name: Option<String>,
    medical_code: Option<String>,
    notes: Option<String>,
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
            remote_addr: p.remote_addr.as_ref().map(ToString::to_string),
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
            router: p.router.as_str(),
            display_name: p.label.display_name.clone(),
            medical_code: p.label.medical_code.clone(),
            notes: p.label.notes.clone(),
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
            ike::wire::KeId::Modp2048 => t!("peer.warn_modp2048").into_owned(),
            other => t!(
                "peer.warn_not_cryptrec",
                group = ike::proposal::ke_name(*other)
            )
            .into_owned(),
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

pub(crate) fn run(state: &StateDir, cmd: PeerCommand) -> Result<()> {
    match cmd {
        PeerCommand::Add(a) => {
            let mut reg = Registry::open(state)?;
            let host = HostNetworks::read(None)?;
            let new = NewPeer {
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
                router: a.tuning.router,
                label: registry::Label {
                    display_name: a.label.display_name,
                    notes: a.label.notes,
                    medical_code: a.label.medical_code,
                },
            };
            let generated = a.psk.is_some().then(crate::declare::generate_psk);
            let p = match &generated {
                Some(k) => reg.add_peer_keyed(
                    &new,
                    Some(zeroize::Zeroizing::new(k.as_bytes().to_vec())),
                    &host,
                )?,
                None => reg.add_peer_on(&new, &host)?,
            };
            println!("{}", t!("peer.added", name = p.name, id = p.id));
            if let Some(k) = &generated {
                println!(
                    "{}",
                    rust_i18n::t!("files.peer_generated_key", key = k.as_str())
                );
            }
            audit::append(
                state,
                &audit::actor(),
                "peer.add",
                serde_json::to_value(PeerView::from(&p))?,
            )?;
            for w in peer_warnings(&p) {
                println!("{}", t!("peer.warning", warning = w));
            }
            drop(reg);
            notify_daemon(state, &p.name, false);
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
                    "{} {} {} {} {} {}",
                    pad(&t!("peer.col_name"), 20),
                    pad(&t!("peer.col_id"), 28),
                    pad(&t!("peer.col_enabled"), 8),
                    pad(&t!("peer.col_remote_ts"), 32),
                    pad(&t!("peer.col_remote_addr"), 22),
                    t!("peer.col_display_name")
                );
                for p in peers {
                    let ts = p
                        .remote_ts
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    // The display name last: its width on a terminal
                    // (Japanese) would misalign the columns after it.
                    println!(
                        "{:<20} {:<28} {} {:<32} {:<22} {}",
                        p.name,
                        p.id.to_string(),
                        pad(
                            &if p.enabled {
                                t!("peer.yes")
                            } else {
                                t!("peer.no")
                            },
                            8
                        ),
                        ts,
                        p.remote_addr
                            .as_ref()
                            .map_or("-".into(), ToString::to_string),
                        p.label.display_name.as_deref().unwrap_or("-")
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
            let start = match (c.start, c.no_start) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let host = HostNetworks::read(None)?;
            let p = reg.change_peer_on(
                &c.name,
                &PeerChange {
                    id: c.id.clone(),
                    psk_file: c.psk_file.clone(),
                    cert: c.cert,
                    remote_ts: c.remote_ts.clone(),
                    local_ts: c.local_ts.clone(),
                    remote_addr: c.remote_addr.clone(),
                    start,
                    ike: c.tuning.ike.clone(),
                    esp: c.tuning.esp.clone(),
                    ike_lifetime: c.tuning.ike_lifetime,
                    child_lifetime: c.tuning.child_lifetime,
                    child_bytes: c.tuning.child_bytes,
                    dpd: c.tuning.dpd,
                    mtu: c.tuning.mtu,
                    router: c.tuning.router,
                    display_name: c.label.display_name.clone(),
                    notes: c.label.notes.clone(),
                    medical_code: c.label.medical_code.clone(),
                },
                &host,
            )?;
            println!("{}", t!("peer.changed", name = p.name));
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
            notify_daemon(state, &p.name, false);
        }
        PeerCommand::Remove { name } => {
            let revoked = crate::certs::remove_facility(state, &mut Registry::open(state)?, &name)?;
            println!("{}", t!("peer.removed", name = name));
            audit::append(
                state,
                &audit::actor(),
                "peer.remove",
                json!({ "name": name }),
            )?;
            if !revoked.is_empty() {
                println!(
                    "{}",
                    t!("peer.revoked_its_certs", serials = revoked.join(", "))
                );
                audit::append(
                    state,
                    &audit::actor(),
                    "cert.revoke",
                    json!({ "name": name, "serials": revoked, "reason": "peer.remove" }),
                )?;
            }
            notify_daemon(state, &name, !revoked.is_empty());
        }
        PeerCommand::Disable { name } => {
            Registry::open(state)?.set_enabled(&name, false)?;
            println!("{}", t!("peer.disabled", name = name));
            audit::append(
                state,
                &audit::actor(),
                "peer.disable",
                json!({ "name": name }),
            )?;
            notify_daemon(state, &name, false);
        }
        PeerCommand::Enable { name } => {
            Registry::open(state)?.set_enabled(&name, true)?;
            println!("{}", t!("peer.enabled", name = name));
            audit::append(
                state,
                &audit::actor(),
                "peer.enable",
                json!({ "name": name }),
            )?;
            notify_daemon(state, &name, false);
        }
    }
    Ok(())
}
