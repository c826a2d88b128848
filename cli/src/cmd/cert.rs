//! `renkei cert issue | revoke | list`: facility certificates from the
//! hub's CA.

use super::notify_daemon;
use crate::args::CertCommand;
use crate::registry::{self, Registry};
use crate::state::StateDir;
use crate::{audit, certs};
use anyhow::Result;
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
                "issued {key} certificate {} for {name}, valid until {}",
                issued.serial,
                pki::verify::iso(issued.not_after)
            );
            for f in &issued.files {
                println!("  {}", f.display());
            }
            if let Some(kept) = &issued.ca_kept {
                println!(
                    "  {} (already there, the same CA certificate: kept)",
                    kept.display()
                );
            }
            for c in &issued.still_valid {
                println!(
                    "note: the earlier certificate {} of {name} stays valid until {}; once the router uses the new one, revoke it with `renkei cert revoke {name} --serial {}`",
                    c.serial,
                    pki::verify::iso(c.not_after),
                    c.serial
                );
            }
            if !issued.revoked.is_empty() {
                println!(
                    "revoked the earlier certificate(s) of {name}: {}",
                    issued.revoked.join(", ")
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
        CertCommand::Revoke { name, serial } => {
            let mut reg = Registry::open(state)?;
            let serials = certs::revoke(state, &mut reg, &name, serial.as_deref())?;
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
            notify_daemon(state, &name, true);
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
