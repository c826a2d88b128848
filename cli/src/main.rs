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
mod cluster;
mod cmd;
mod control;
mod daemon;
mod db;
mod declare;
mod exit;
mod export;
mod help;
mod hostnet;
mod i18n;
#[cfg(test)]
mod i18n_check;
mod metrics;
mod registry;
mod router;
mod state;
mod web;

// Every operator-facing message: `t!("area.key", ...)`, the text in
// cli/locales/<area>.yml (English and Japanese side by side).
rust_i18n::i18n!("locales", fallback = "en");

use anyhow::Result;
use args::{Cli, Command};
use clap::{CommandFactory, FromArgMatches};
use rust_i18n::t;
use std::process::ExitCode;

fn main() -> ExitCode {
    i18n::init();
    // `--help` in the operator's language (help.rs), then clap's parse.
    let matches = help::localize(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !matches!(cli.command, Command::Serve(_)) {
        // An operator command whose output is cut short (`| head`) ends
        // quietly, as Unix tools do, instead of panicking on EPIPE.
        esp::sys::default_sigpipe();
    }
    let state = state::StateDir::new(cli.state.clone()).with_registry(cli.registry.clone());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let status = exit::status(&e);
            let mut msg = format!("{e:#}").replace('\n', " ");
            if status == exit::DENIED && !exit::advised(&e) {
                msg = t!("cli.denied", msg = msg, advice = exit::advice(&state)).into_owned();
            }
            eprintln!("renkei: {}: {msg}", t!("common.error"));
            ExitCode::from(status)
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
            anyhow::bail!("{}", t!("cli.log_not_level", directive = directive));
        }
    }
    Ok(())
}

fn init_logging(filter: &str) -> Result<()> {
    use std::io::IsTerminal;
    check_log_filter(filter)?;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("{}", t!("cli.log_invalid", error = e)))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if stderr_is_journal() {
        // The journal stamps every line itself, and reads its priority
        // from the sd-daemon prefix (`journalctl -p warning`).
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_target(false)
            .with_ansi(false);
        builder
            .with_ansi(false)
            .event_format(JournalPriority(format))
            .init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM`
/// to its `DEVICE:INODE` (systemd.exec(5)); a process that inherited the
/// variable but writes elsewhere (a shell started from a unit, `2>file`)
/// keeps plain lines.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino())
}

/// The sd-daemon(3) priority prefix for a level: `<3>` error, `<4>`
/// warning, `<6>` info, `<7>` debug and trace.
fn journal_priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// A log line format that starts every line with its sd-daemon priority
/// (`<4>WARN …`), which journald turns into the record's PRIORITY.
/// Chosen over a native journald layer (tracing-journald) because the
/// hub keeps writing plain stderr, which the unit's `StandardError=`
/// may send anywhere, needs no journal socket, and keeps one order of
/// lines; a message of several lines gets the prefix on each.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        let prio = journal_priority(*event.metadata().level());
        for l in line.lines() {
            writeln!(writer, "<{prio}>{l}")?;
        }
        Ok(())
    }
}

fn run(cli: Cli) -> Result<()> {
    let state = state::StateDir::new(cli.state).with_registry(cli.registry);
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
        Command::Status { name, only, json } => {
            cmd::status::run(&state, name.as_deref(), only, json)
        }
        Command::Diagnose { name, json } => cmd::diagnose::run(&state, &name, json),
        Command::Sa(c) => cmd::sa::run(&state, c),
        Command::Drain(args) => cmd::drain::run(&state, &args),
        Command::Export {
            name,
            format,
            with_secret,
            site,
        } => cmd::export::run(&state, &name, format, with_secret, site),
        Command::Compliance { json } => cmd::compliance::run(&state, json),
        Command::Audit(c) => cmd::audit::run(&state, c),
        Command::Reload => cmd::reload::run(&state),
        Command::Ha(c) => cmd::ha::run(&state, c),
        Command::Apply(a) => cmd::apply::run(&state, a),
        Command::Dump { output } => cmd::apply::dump(&state, output.as_deref()),
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
