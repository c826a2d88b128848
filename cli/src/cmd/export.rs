//! `renkei export`: a facility router's configuration.

use crate::registry::Registry;
use crate::state::StateDir;
use crate::{audit, export};
use anyhow::Result;
use serde_json::json;

pub(crate) fn run(
    state: &StateDir,
    name: &str,
    format: export::Format,
    with_secret: bool,
) -> Result<()> {
    let reg = Registry::open(state)?;
    let (hub, peer) = (reg.hub()?, reg.peer(name)?);
    let text = match format {
        export::Format::Swanctl => export::swanctl(&hub, &peer, with_secret)?,
    };
    print!("{text}");
    if with_secret {
        audit::append(
            state,
            &audit::actor(),
            "peer.export_secret",
            json!({ "name": name, "format": "swanctl" }),
        )?;
    }
    Ok(())
}
