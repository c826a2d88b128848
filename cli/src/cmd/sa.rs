//! `renkei sa list | up | down`: the running hub's security associations.

use super::status::{since, span};
use crate::args::SaCommand;
use crate::control::{self, Request};
use crate::daemon::status::{ChildSaStatus, FacilityState};
use crate::state::StateDir;
use anyhow::Result;
use rust_i18n::t;
use serde::Serialize;

/// One facility's SAs, as `swanctl --list-sas` would show them.
fn print_sa(s: &SaListEntry<'_>) {
    let dash = || "-".to_string();
    println!(
        "{}",
        t!(
            "sa.header",
            name = s.name,
            state = s.state,
            remote = s.remote.map_or_else(dash, |a| a.to_string()),
            spi = s.ike_spi.unwrap_or("-"),
            suite = s.ike_suite.unwrap_or("-"),
            ago = s.ike_established.map_or_else(dash, |t| span(since(t))),
            rekey = s.ike_rekey_in.map_or_else(dash, span)
        )
    );
    for c in s.child_sas {
        println!(
            "{}",
            t!(
                "sa.child",
                suite = c.suite,
                ago = span(since(&c.established)),
                rekey = c.rekey_in.map_or_else(dash, span),
                spi_in = c.spi_in,
                bin = c.bytes_in,
                pin = c.packets_in,
                spi_out = c.spi_out,
                bout = c.bytes_out,
                pout = c.packets_out,
                local = c.local_ts,
                remote = c.remote_ts
            )
        );
    }
}

/// One facility's line of `sa list --json`.
#[derive(Debug, Serialize)]
struct SaListEntry<'a> {
    name: &'a str,
    state: FacilityState,
    remote: Option<std::net::SocketAddr>,
    ike_suite: Option<&'a str>,
    /// The hub's SPI of the IKE SA.
    ike_spi: Option<&'a str>,
    /// When the IKE SA was established (RFC 3339).
    ike_established: Option<&'a str>,
    /// Seconds until the hub rekeys the IKE SA.
    ike_rekey_in: Option<u64>,
    /// Whether ESP travels in UDP 4500 because of a NAT.
    behind_nat: bool,
    child_sas: &'a [ChildSaStatus],
}

pub(crate) fn run(state: &StateDir, cmd: SaCommand) -> Result<()> {
    match cmd {
        SaCommand::List { json } => {
            let status = control::status(state)?;
            let sas: Vec<SaListEntry<'_>> = status
                .facilities
                .iter()
                .filter(|f| {
                    matches!(
                        f.state,
                        FacilityState::Up | FacilityState::Connecting | FacilityState::Degraded
                    )
                })
                .map(|f| SaListEntry {
                    name: &f.name,
                    state: f.state,
                    remote: f.remote,
                    ike_suite: f.ike_suite.as_deref(),
                    ike_spi: f.ike_spi.as_deref(),
                    ike_established: f.since.as_deref(),
                    ike_rekey_in: f.ike_rekey_in,
                    behind_nat: f.behind_nat,
                    child_sas: &f.child_sas,
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&sas)?);
            } else if sas.is_empty() {
                println!("{}", t!("sa.none"));
            } else {
                for s in &sas {
                    print_sa(s);
                }
            }
            Ok(())
        }
        SaCommand::Up { name } => {
            control::request(state, &Request::SaUp { name: name.clone() })?;
            println!("{}", t!("status.sa_initiating", name = name));
            Ok(())
        }
        SaCommand::Down { name } => {
            control::request(state, &Request::SaDown { name: name.clone() })?;
            println!("{}", t!("status.sa_closed", name = name));
            Ok(())
        }
    }
}
