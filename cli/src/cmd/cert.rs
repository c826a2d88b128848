//! `renkei cert issue | revoke | list`: facility certificates from the
//! hub's CA.

use super::{notify_daemon, pad};
use crate::args::CertCommand;
use crate::i18n::{local_time, local_time_rfc3339};
use crate::registry::{self, Registry};
use crate::state::StateDir;
use crate::{audit, certs};
use anyhow::Result;
use rust_i18n::t;
use serde::Serialize;
use serde_json::json;

pub(crate) fn run(state: &StateDir, cmd: CertCommand) -> Result<()> {
    match cmd {
        CertCommand::Issue {
            name,
            key,
            out,
            days,
            revoke_previous,
        } => {
            let mut reg = Registry::open(state)?;
            let issued = certs::issue(state, &mut reg, &name, key, &out, days, revoke_previous)?;
            println!(
                "{}",
                t!(
                    "cert.issued",
                    key = key,
                    serial = issued.serial,
                    name = name,
                    until = local_time(issued.not_after)
                )
            );
            for f in &issued.files {
                println!("{}", t!("cert.file", file = f.display()));
            }
            if let Some(kept) = &issued.ca_kept {
                println!("{}", t!("cert.ca_kept", file = kept.display()));
            }
            for c in &issued.still_valid {
                println!(
                    "{}",
                    t!(
                        "cert.still_valid",
                        serial = c.serial,
                        name = name,
                        until = local_time(c.not_after)
                    )
                );
            }
            if !issued.revoked.is_empty() {
                println!(
                    "{}",
                    t!(
                        "cert.revoked_earlier",
                        name = name,
                        serials = issued.revoked.join(", ")
                    )
                );
            }
            audit::append(
                state,
                &audit::actor(),
                "cert.issue",
                json!({ "name": name, "serial": issued.serial, "key": key.to_string(), "not_after": pki::verify::iso(issued.not_after),
                        "still_valid": issued.still_valid.iter().map(|c| &c.serial).collect::<Vec<_>>() }),
            )?;
            if !issued.revoked.is_empty() {
                audit::append(
                    state,
                    &audit::actor(),
                    "cert.revoke",
                    json!({ "name": name, "serials": issued.revoked, "reason": "superseded" }),
                )?;
                drop(reg);
                notify_daemon(state, &name, true);
            }
        }
        CertCommand::IssueOperator { name, out, days } => {
            let mut reg = Registry::open(state)?;
            let issued = crate::web::issue_operator(state, &mut reg, &name, &out, days)?;
            println!(
                "{}",
                rust_i18n::t!(
                    "web.operator_issued",
                    serial = issued.serial,
                    name = name,
                    until = crate::i18n::local_time(issued.not_after)
                )
            );
            for f in &issued.files {
                println!("  {}", f.display());
            }
            audit::append(
                state,
                &audit::actor(),
                "cert.issue_operator",
                json!({ "name": name, "serial": issued.serial, "not_after": pki::verify::iso(issued.not_after) }),
            )?;
        }
        CertCommand::Revoke { name, serial } => {
            let mut reg = Registry::open(state)?;
            let serials = certs::revoke(state, &mut reg, &name, serial.as_deref())?;
            let joined = serials.join(", ");
            println!(
                "{}",
                if serials.len() == 1 {
                    t!("cert.revoked_one", name = name, serials = joined)
                } else {
                    t!("cert.revoked_many", name = name, serials = joined)
                }
            );
            audit::append(
                state,
                &audit::actor(),
                "cert.revoke",
                json!({ "name": name, "serials": serials }),
            )?;
            drop(reg);
            notify_daemon(state, &name, true);
        }
        CertCommand::List { json } => {
            let reg = Registry::open(state)?;
            let list: Vec<CertView> = reg.certs()?.iter().map(CertView::from).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{} {} {} {} {} {}",
                    pad(&t!("cert.col_serial"), 34),
                    pad(&t!("cert.col_name"), 16),
                    pad(&t!("cert.col_identity"), 28),
                    pad(&t!("cert.col_key"), 11),
                    pad(&t!("cert.col_not_after"), 23),
                    t!("cert.col_revoked")
                );
                for c in &list {
                    println!(
                        "{:<34} {:<16} {:<28} {:<11} {:<23} {}",
                        c.serial,
                        c.name,
                        c.identity,
                        c.key,
                        local_time_rfc3339(&c.not_after),
                        c.revoked.as_deref().map_or("-".into(), local_time_rfc3339)
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
