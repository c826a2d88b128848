//! `renkei serve`: checks the options and runs the daemon.

use crate::args::ServeArgs;
use crate::daemon;
use crate::state::StateDir;
use anyhow::{bail, Result};
use rust_i18n::t;

pub(crate) fn run(state: StateDir, args: ServeArgs) -> Result<()> {
    let ServeArgs {
        listen,
        tun,
        mtu,
        retransmit_timeout,
        retransmit_tries,
        ike_fragment_size,
        http,
        metrics,
        workers,
        registry_poll,
        reinitiate_rate,
        reinitiate_concurrency,
        node,
        cluster_key,
    } = args;
    let node = match node {
        Some(n) => {
            check_node(&n)?;
            Some((n, cluster_key.unwrap_or_else(|| state.cluster_key())))
        }
        None => None,
    };
    if http.is_some() && metrics.is_some() {
        bail!("{}", t!("web.http_and_metrics"));
    }
    if !(0.1..=60.0).contains(&retransmit_timeout) {
        bail!(
            "{}",
            t!("serve.retransmit_timeout", value = retransmit_timeout)
        );
    }
    let listen = if listen.is_empty() {
        daemon::default_listen()
    } else {
        listen
    };
    daemon::serve(daemon::ServeOptions {
        state,
        listen,
        tun,
        mtu,
        retransmit_timeout: std::time::Duration::from_secs_f64(retransmit_timeout),
        retransmit_tries,
        ike_fragment_size: ike_fragment_size as usize,
        http: http.or(metrics),
        workers: match workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(64)),
            n => usize::from(n),
        },
        registry_poll: std::time::Duration::from_secs(registry_poll),
        reinitiate: daemon::takeover::Pace {
            rate: reinitiate_rate,
            concurrency: reinitiate_concurrency,
        },
        node,
    })
}

/// A node name: what the lease, the status and the audit log name it by.
fn check_node(name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        bail!("{}", rust_i18n::t!("ha.node_invalid", name = name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_names_are_short_plain_words() {
        for good in ["a", "hub-1", "tokyo_dc.b"] {
            assert!(super::check_node(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "ノード", &"x".repeat(64)] {
            let e = super::check_node(bad).unwrap_err().to_string();
            assert!(e.starts_with("node: "), "{e}");
        }
    }
}
