//! What each command does, one module per command group; the arguments
//! are in [`crate::args`].

pub(crate) mod audit;
pub(crate) mod cert;
pub(crate) mod compliance;
pub(crate) mod export;
pub(crate) mod hub;
pub(crate) mod init;
pub(crate) mod peer;
pub(crate) mod sa;
pub(crate) mod serve;
pub(crate) mod status;

use crate::control::{self, Request};
use crate::state::StateDir;

/// Tells a running daemon that `facility` changed (and with
/// `certificates`, that certificates were revoked).
pub(crate) fn notify_daemon(state: &StateDir, facility: &str, certificates: bool) {
    let reload = Request::Reload {
        facility: Some(facility.to_string()),
        certificates,
    };
    match control::request(state, &reload) {
        Ok(_) => println!("applied to the running hub"),
        Err(_) => println!("(the hub is not running; this takes effect when it starts)"),
    }
}
