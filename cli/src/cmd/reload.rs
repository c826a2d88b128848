//! `renkei reload`: the running hub re-reads the whole registry (what
//! `systemctl reload renkei` runs).

use crate::control::{self, Reloaded, Request};
use crate::state::StateDir;
use anyhow::{Context, Result};
use rust_i18n::t;

pub(crate) fn run(state: &StateDir) -> Result<()> {
    let req = Request::Reload {
        facility: None,
        certificates: true,
    };
    let reloaded: Reloaded = control::request_as(state, &req).context(t!("reload.failed"))?;
    if reloaded.changes.is_empty() {
        println!("{}", t!("reload.nothing"));
    }
    for c in &reloaded.changes {
        let action = serde_json::to_value(c.action)?;
        let changed = t!("reload.changed");
        println!(
            "{}",
            t!(
                "reload.change",
                name = c.name,
                action = action.as_str().unwrap_or(&changed)
            )
        );
    }
    Ok(())
}
