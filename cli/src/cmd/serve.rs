//! `renkei serve`: checks the options and runs the daemon.

use crate::args::ServeArgs;
use crate::daemon;
use crate::state::StateDir;
use anyhow::{bail, Result};

pub(crate) fn run(state: StateDir, args: ServeArgs) -> Result<()> {
    let ServeArgs {
        listen,
        tun,
        mtu,
        retransmit_timeout,
        retransmit_tries,
        ike_fragment_size,
        metrics,
        workers,
    } = args;
    if !(0.1..=60.0).contains(&retransmit_timeout) {
        bail!("retransmit-timeout: {retransmit_timeout} s is outside 0.1..=60 s");
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
        metrics,
        workers: match workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(64)),
            n => usize::from(n),
        },
    })
}
