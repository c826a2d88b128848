//! `renkei status`: the running hub's status report, as a table or JSON.

use crate::control;
use crate::daemon::status::{ChildSaStatus, HubStatus};
use crate::state::StateDir;
use anyhow::Result;

pub(crate) fn run(state: &StateDir, json: bool) -> Result<()> {
    let status = control::status(state)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    Ok(())
}

pub(crate) fn print_children(children: &[ChildSaStatus], indent: &str) {
    for c in children {
        println!(
            "{indent}child {}/{} {} {} === {}",
            c.spi_in, c.spi_out, c.suite, c.local_ts, c.remote_ts
        );
    }
}

fn print_status(status: &HubStatus) {
    let hub = &status.hub;
    println!(
        "hub: tun {} listening on {} since {}; {} IKE SAs, {} Child SAs",
        hub.tun,
        hub.listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        hub.started,
        hub.ike_sas,
        hub.child_sas
    );
    println!(
        "{:<16} {:<10} {:<21} {:<22} {:<36} {:>12} {:>12} DROPS",
        "FACILITY", "STATE", "SINCE", "REMOTE", "SUITE (IKE)", "IN", "OUT"
    );
    for f in &status.facilities {
        println!(
            "{:<16} {:<10} {:<21} {:<22} {:<36} {:>12} {:>12} {}",
            f.name,
            f.state,
            f.since.as_deref().unwrap_or("-"),
            f.remote.map_or("-".into(), |a| a.to_string()),
            f.ike_suite.as_deref().unwrap_or("-"),
            format!("{}p/{}B", f.packets_in, f.bytes_in),
            format!("{}p/{}B", f.packets_out, f.bytes_out),
            if f.drops.is_empty() {
                "-".into()
            } else {
                f.drops.describe()
            }
        );
        print_children(&f.child_sas, "    ");
        if f.path_mtu_limited {
            println!(
                "    tunnel MTU {} (lowered: the path to the facility is smaller)",
                f.mtu
            );
        }
        if let Some(e) = &f.last_error {
            println!("    last error: {e}");
        }
    }
    print_refused(&status.refused);
}

/// Attempts refused before a facility was known: totals by reason, then
/// the recent sources.
fn print_refused(refused: &crate::daemon::refusals::RefusedReport) {
    let totals: Vec<String> = refused
        .total
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    if totals.is_empty() {
        println!("refused before a facility was known: none");
        return;
    }
    println!(
        "refused before a facility was known: {} (recent sources below, newest first)",
        totals.join(",")
    );
    println!(
        "    {:<40} {:<20} {:>8} {:<21} DETAIL",
        "SOURCE", "REASON", "COUNT", "LAST"
    );
    for r in &refused.recent {
        println!(
            "    {:<40} {:<20} {:>8} {:<21} {}",
            r.source.to_string(),
            r.reason,
            r.count,
            r.last,
            r.detail
        );
    }
}
