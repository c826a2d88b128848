//! `renkei apply FILE [--dry-run] [--csv] [--prune] [--secrets FILE]` and
//! `renkei dump`: configuration as files (issue #18). The format, the
//! plan and the checks are in [`crate::declare`].

use crate::args::ApplyArgs;
use crate::audit;
use crate::control::{self, Reloaded, Request};
use crate::declare::{self, Action, Current, Options, Problem};
use crate::hostnet::HostNetworks;
use crate::registry::Registry;
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use rust_i18n::t;
use serde_json::json;
use std::collections::HashMap;

/// Prints every problem (one line each) and fails.
fn refuse(file: &str, problems: Vec<Problem>) -> anyhow::Error {
    for p in &problems {
        eprintln!("{p}");
    }
    anyhow::anyhow!(
        "{}",
        t!(
            "files.problems_refused",
            file = file,
            count = problems.len()
        )
    )
}

pub(crate) fn run(state: &StateDir, a: ApplyArgs) -> Result<()> {
    let file = a.file.display().to_string();
    let bytes = std::fs::read(&a.file)
        .with_context(|| t!("files.cannot_read", file = file).into_owned())?;
    let declared = if a.csv {
        declare::csv::parse(&file, &bytes)
    } else {
        match String::from_utf8(bytes) {
            Ok(text) => declare::parse_toml(&file, &text),
            Err(_) => Err(vec![Problem {
                at: file.clone(),
                message: t!("files.not_utf8").into_owned(),
            }]),
        }
    }
    .map_err(|p| refuse(&file, p))?;
    let secrets_path = a.secrets.as_ref().map(|p| p.display().to_string());
    let secrets = match &secrets_path {
        Some(p) => declare::secrets::read(p).map_err(|e| refuse(p, e))?,
        None => HashMap::new(),
    };
    let mut reg = Registry::open(state)?;
    let hub = reg.hub()?;
    let peers = reg.peers()?;
    let host = HostNetworks::read(None)?;
    let now = crate::registry::now_rfc3339();
    let plan = {
        let check = declare::host_checker(&reg, &host);
        declare::plan(
            &declared,
            &Current {
                hub: &hub,
                peers: &peers,
            },
            &Options {
                prune: a.prune,
                secrets: &secrets,
                secrets_path: secrets_path.as_deref(),
                now: &now,
            },
            &check,
        )
        .map_err(|p| refuse(&file, p))?
    };
    print_plan(&plan, a.dry_run);
    if a.dry_run {
        println!("{}", t!("files.dry_run_done"));
        return Ok(());
    }
    if plan.is_empty() {
        println!("{}", t!("files.nothing_to_change"));
        return Ok(());
    }
    // Removing a facility with certificates rewrites the CRL: the CA is
    // loaded first, so that nothing is written when it cannot be.
    let removed: Vec<&str> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    let certs = reg.certs()?;
    let ca = if certs
        .iter()
        .any(|c| c.revoked.is_none() && removed.contains(&c.name.as_str()))
    {
        Some(crate::certs::load_ca(state)?)
    } else {
        None
    };
    let revoked = declare::write(&mut reg, &plan, crate::certs::unix_now())?;
    if let (Some(ca), false) = (&ca, revoked.is_empty()) {
        crate::certs::write_crl(state, &reg, ca)?;
    }
    // The audit log: one record per facility, then the apply itself.
    let actor = audit::actor();
    let mut records = Vec::new();
    let (mut added, mut changed, mut removed_n) = (0, 0, 0);
    for action in &plan.actions {
        let (event, details) = match action {
            Action::Add(p) => {
                added += 1;
                (
                    "peer.add",
                    json!({ "name": p.name, "via": "apply", "fields": declare::diff_from_nothing(p) }),
                )
            }
            Action::Change(p, d) => {
                changed += 1;
                (
                    "peer.change",
                    json!({ "name": p.name, "via": "apply", "changes": d }),
                )
            }
            Action::Remove(n) => {
                removed_n += 1;
                ("peer.remove", json!({ "name": n, "via": "apply" }))
            }
        };
        records.push((actor.clone(), event.to_string(), details));
    }
    for (name, serials) in &revoked {
        records.push((
            actor.clone(),
            "cert.revoke".to_string(),
            json!({ "name": name, "serials": serials, "reason": "apply --prune" }),
        ));
    }
    records.push((
        actor.clone(),
        "apply".to_string(),
        json!({
            "file": file,
            "csv": a.csv,
            "prune": a.prune,
            "added": added,
            "changed": changed,
            "removed": removed_n,
            "unchanged": plan.unchanged,
            "public_addrs": plan.public_addrs.as_ref().map(|(_, n)| n),
        }),
    ));
    audit::append_many(state, &records)?;
    println!(
        "{}",
        t!(
            "files.applied",
            added = added,
            changed = changed,
            removed = removed_n,
            unchanged = plan.unchanged
        )
    );
    for (name, key) in &plan.generated {
        println!(
            "{}",
            t!("files.generated_key", name = name, key = key.as_str())
        );
    }
    drop(reg);
    let req = Request::Reload {
        facility: None,
        certificates: !revoked.is_empty(),
    };
    match control::request_as::<Reloaded>(state, &req) {
        Ok(r) => println!("{}", t!("files.live", count = r.changes.len())),
        Err(_) => println!("{}", t!("files.not_running")),
    }
    Ok(())
}

/// The plan, facility by facility.
fn print_plan(plan: &declare::Plan, dry_run: bool) {
    let key = |wet: &'static str, dry: &'static str| if dry_run { dry } else { wet };
    if let Some((old, new)) = &plan.public_addrs {
        let j = |v: &[crate::registry::PublicAddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "{}",
            t!(
                key("files.plan_hub", "files.plan_hub_dry"),
                old = j(old),
                new = j(new)
            )
        );
    }
    for a in &plan.actions {
        match a {
            Action::Add(p) => {
                let shown = p
                    .label
                    .display_name
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                let generated = if plan.generated.iter().any(|(n, _)| *n == p.name) {
                    t!("files.plan_key_generated").into_owned()
                } else {
                    String::new()
                };
                let ts = p
                    .remote_ts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                println!(
                    "{}",
                    t!(
                        key("files.plan_add", "files.plan_add_dry"),
                        name = p.name,
                        shown = shown,
                        id = p.id,
                        ts = ts,
                        key = generated
                    )
                );
            }
            Action::Change(p, d) => {
                println!(
                    "{}",
                    t!(
                        key("files.plan_change", "files.plan_change_dry"),
                        name = p.name
                    )
                );
                for c in d {
                    println!("    {}: {} → {}", c.field, c.old, c.new);
                }
            }
            Action::Remove(n) => println!(
                "{}",
                t!(key("files.plan_remove", "files.plan_remove_dry"), name = n)
            ),
        }
    }
    println!("{}", t!("files.plan_unchanged", count = plan.unchanged));
    if !plan.kept.is_empty() {
        println!(
            "{}",
            t!(
                "files.plan_kept",
                count = plan.kept.len(),
                names = plan.kept.join(", ")
            )
        );
    }
}

pub(crate) fn dump(state: &StateDir, output: Option<&std::path::Path>) -> Result<()> {
    let reg = Registry::open(state)?;
    let text = declare::dump(&reg.hub()?, &reg.peers()?)?;
    match output {
        None => print!("{text}"),
        Some(path) => {
            if path.as_os_str().is_empty() {
                bail!("{}", t!("files.empty_output"));
            }
            std::fs::write(path, &text)
                .with_context(|| t!("cli.io_writing", path = path.display()).into_owned())?;
            eprintln!("{}", t!("files.wrote", path = path.display()));
        }
    }
    Ok(())
}
