//! `renkei`: the IPsec/IKEv2 VPN hub of a regional medical-information
//! network, and every operator command.
//!
//! ```text
//!  renkei init / peer … ──▶ registry (state dir) ──reload──▶ renkei serve ──▶ ike + esp
//!  renkei status / sa … ──▶ control socket ───────────────────────┘
//! ```
#![forbid(unsafe_code)]

mod args;
mod audit;
mod certs;
mod cmd;
mod control;
mod daemon;
mod export;
mod hostnet;
mod metrics;
mod registry;
mod router;
mod state;

use anyhow::Result;
use args::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // An operator command whose output is cut short (`| head`) ends
        // quietly, as Unix tools do, instead of panicking on EPIPE.
        esp::sys::default_sigpipe();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("renkei: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses a log filter whose bare words are not levels: tracing reads a
/// bare word as a target to log at every level, so `--log warning` would
/// otherwise silently show nothing but a module named "warning".
fn check_log_filter(filter: &str) -> Result<()> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |w: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(w.trim()));
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.contains('[') {
            continue; // span filters: tracing checks those itself
        }
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !is_level(level) {
            anyhow::bail!(
                "log: '{directive}' is not a level (off, error, warn, info, debug, trace); \
                 a module's level is written as module=level, e.g. ike=debug"
            );
        }
    }
    Ok(())
}

fn init_logging(filter: &str) -> Result<()> {
    use std::io::IsTerminal;
    check_log_filter(filter)?;
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("log: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // Under systemd the journal stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let state = state::StateDir::new(cli.state);
    match cli.command {
        Command::Init {
            hub_id,
            public_addr,
            profile,
            ca_key,
        } => cmd::init::run(&state, &hub_id, public_addr, profile, ca_key),
        Command::Peer(c) => cmd::peer::run(&state, c),
        Command::Cert(c) => cmd::cert::run(&state, c),
        Command::Hub(c) => cmd::hub::run(&state, c),
        Command::Ca(c) => cmd::hub::run_ca(&state, c),
        Command::Serve(args) => {
            init_logging(&cli.log)?;
            cmd::serve::run(state, args)
        }
        Command::Status { json } => cmd::status::run(&state, json),
        Command::Sa(c) => cmd::sa::run(&state, c),
        Command::Export {
            name,
            format,
            with_secret,
            site,
        } => cmd::export::run(&state, &name, format, with_secret, site),
        Command::Compliance { json } => cmd::compliance::run(&state, json),
        Command::Audit(c) => cmd::audit::run(&state, c),
        Command::Reload => cmd::reload::run(&state),
        Command::Backup {
            out,
            passphrase_file,
        } => cmd::backup::backup(&state, &out, passphrase_file.as_deref()),
        Command::Restore {
            input,
            passphrase_file,
        } => cmd::backup::restore(&state, &input, passphrase_file.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_log_filter;

    #[test]
    fn log_filters_must_name_levels() {
        for good in [
            "info",
            "WARN",
            "ike=debug",
            "info,ike=trace",
            "renkei_esp=off",
            " debug , ",
        ] {
            assert!(check_log_filter(good).is_ok(), "{good}");
        }
        for bad in ["warning", "verbose", "info,ike=loud", "ike=", "quiet"] {
            let e = check_log_filter(bad).unwrap_err().to_string();
            assert!(e.starts_with("log: "), "{bad}: {e}");
        }
    }
}
