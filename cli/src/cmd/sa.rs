//! `renkei sa list | up | down`: the running hub's security associations.

use super::status::print_children;
use crate::args::SaCommand;
use crate::control::{self, Request};
use crate::daemon::status::{ChildSaStatus, FacilityState};
use crate::state::StateDir;
use anyhow::Result;
use serde::Serialize;

/// One facility's line of `sa list --json`.
#[derive(Debug, Serialize)]
struct SaListEntry<'a> {
    name: &'a str,
    state: FacilityState,
    remote: Option<std::net::SocketAddr>,
    ike_suite: Option<&'a str>,
    child_sas: &'a [ChildSaStatus],
}

pub(crate) fn run(state: &StateDir, cmd: SaCommand) -> Result<()> {
    match cmd {
        SaCommand::List { json } => {
            let status = control::status(state)?;
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
        SaCommand::Up { name } => {
            control::request(state, &Request::SaUp { name: name.clone() })?;
            println!("initiating {name}");
            Ok(())
        }
        SaCommand::Down { name } => {
            control::request(state, &Request::SaDown { name: name.clone() })?;
            println!("closed {name}");
            Ok(())
        }
    }
}
