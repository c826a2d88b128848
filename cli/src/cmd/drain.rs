//! `renkei drain [--to ADDR] [--wait SECS] | --cancel`: planned
//! maintenance. The daemon does the work (`daemon/drain.rs`); this asks
//! for it, follows its progress in the status report and prints each
//! facility's outcome.

use crate::args::DrainArgs;
use crate::control::{self, Request};
use crate::daemon::drain::{DrainReport, Outcome, MAX_WAIT_SECS};
use crate::state::StateDir;
use anyhow::{bail, Result};
use rust_i18n::t;
use std::time::{Duration, Instant};

pub(crate) fn run(state: &StateDir, args: &DrainArgs) -> Result<()> {
    if args.cancel {
        // Asked first, so the error is in the operator's language.
        if !control::status(state)?.hub.draining {
            bail!("{}", t!("drain.not_draining"));
        }
        let report: DrainReport = control::request_as(state, &Request::Undrain)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("{}", t!("drain.cancelled"));
        }
        return Ok(());
    }
    if let Some(to) = &args.to {
        if let Err(e) = ike::wire::GatewayIdentity::parse(to) {
            bail!("{}", t!("drain.bad_to", to = to, reason = e));
        }
    }
    if args.wait == 0 || args.wait > MAX_WAIT_SECS {
        bail!(
            "{}",
            t!("drain.bad_wait", secs = args.wait, max = MAX_WAIT_SECS)
        );
    }
    if control::status(state)?
        .hub
        .drain
        .is_some_and(|d| !d.finished)
    {
        bail!("{}", t!("drain.under_way"));
    }
    let started: DrainReport = control::request_as(
        state,
        &Request::Drain {
            to: args.to.clone(),
            wait_secs: args.wait,
        },
    )?;
    if !args.json {
        let count = started.facilities.len();
        match &started.to {
            Some(to) => println!("{}", t!("drain.started_to", count = count, to = to)),
            None => println!("{}", t!("drain.started_no_to", count = count)),
        }
    }
    // The daemon ends the drain by --wait at the latest; a little more
    // here covers the control loop's turn.
    let give_up = Instant::now() + Duration::from_secs(args.wait + 10);
    let report = loop {
        let status = control::status(state)?;
        match status.hub.drain {
            Some(r) if r.finished => break r,
            Some(_) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Some(_) => bail!("{}", t!("drain.timed_out", secs = args.wait + 10)),
            None => bail!("{}", t!("drain.cancelled_while_waiting")),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let still_up = report
        .facilities
        .iter()
        .filter(|f| f.outcome == Some(Outcome::StillUp))
        .count();
    if still_up > 0 {
        bail!(
            "{}",
            t!("drain.still_up", count = still_up, secs = report.wait_secs)
        );
    }
    Ok(())
}

fn print_report(report: &DrainReport) {
    println!("{}", t!("drain.header"));
    for f in &report.facilities {
        let method = match f.method {
            crate::daemon::drain::Method::Redirect => "redirect",
            crate::daemon::drain::Method::Delete => "delete",
        };
        println!(
            "{:<16} {:<9} {:<11} {}",
            f.name,
            method,
            f.outcome.map_or("-", Outcome::as_str),
            f.seconds.map_or("-".into(), |s| format!("{s:.1}"))
        );
    }
    let count = |o: Outcome| {
        report
            .facilities
            .iter()
            .filter(|f| f.outcome == Some(o))
            .count()
    };
    println!(
        "{}",
        t!(
            "drain.summary",
            total = report.facilities.len(),
            redirected = count(Outcome::Redirected),
            deleted = count(Outcome::Deleted),
            lost = count(Outcome::Lost),
            still_up = count(Outcome::StillUp)
        )
    );
}
