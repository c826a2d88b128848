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
mod metrics;
mod registry;
mod state;

use anyhow::Result;
use args::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("renkei: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) -> Result<()> {
    use std::io::IsTerminal;
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
        Command::Serve {
            listen,
            tun,
            mtu,
            retransmit_timeout,
            retransmit_tries,
            ike_fragment_size,
            metrics,
            workers,
        } => {
            init_logging(&cli.log)?;
            cmd::serve::run(
                state,
                cmd::serve::Given {
                    listen,
                    tun,
                    mtu,
                    retransmit_timeout,
                    retransmit_tries,
                    ike_fragment_size,
                    metrics,
                    workers,
                },
            )
        }
        Command::Status { json } => cmd::status::run(&state, json),
        Command::Sa(c) => cmd::sa::run(&state, c),
        Command::Export {
            name,
            format,
            with_secret,
        } => cmd::export::run(&state, &name, format, with_secret),
        Command::Compliance { json } => cmd::compliance::run(&state, json),
        Command::Audit(c) => cmd::audit::run(&state, c),
    }
}
