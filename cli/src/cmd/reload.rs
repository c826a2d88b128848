//! `renkei reload`: the running hub re-reads the whole registry (what
//! `systemctl reload renkei` runs).

use crate::control::{self, Reloaded, Request};
use crate::state::StateDir;
use anyhow::{Context, Result};

pub(crate) fn run(state: &StateDir) -> Result<()> {
    let req = Request::Reload {
        facility: None,
        certificates: true,
    };
    let reloaded: Reloaded =
        control::request_as(state, &req).context("reload: the hub did not reload")?;
    if reloaded.changes.is_empty() {
        println!("reloaded: nothing changed");
    }
    for c in &reloaded.changes {
        let action = serde_json::to_value(c.action)?;
        println!("{}: {}", c.name, action.as_str().unwrap_or("changed"));
    }
    Ok(())
}
