//! `renkei export`: a facility router's configuration.

use crate::registry::Registry;
use crate::{audit, export};
use anyhow::Result;
use serde_json::json;
use std::path::Path;

pub(crate) fn run(
    state: &Path,
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
