//! `renkei export`: a facility router's configuration.

use crate::args::ExportSite;
use crate::registry::Registry;
use crate::state::StateDir;
use crate::{audit, export};
use anyhow::Result;
use rust_i18n::t;
use serde_json::json;

pub(crate) fn run(
    state: &StateDir,
    name: &str,
    format: Option<export::Format>,
    with_secret: bool,
    site: ExportSite,
) -> Result<()> {
    let reg = Registry::open(state)?;
    let (hub, peer, certs) = (reg.hub()?, reg.peer(name)?, reg.certs()?);
    let Some(format) = format.or(peer.router.export_format()) else {
        anyhow::bail!("{}", t!("export.no_format", name = name));
    };
    let site = export::Site {
        wan_interface: site.wan_interface,
        lan_interface: site.lan_interface,
        local_addr: site.local_addr,
        wan_nat: site.wan_nat,
        hub_addr: site.hub_addr,
    };
    let text = export::render(
        format,
        &export::Input {
            hub: &hub,
            peer: &peer,
            with_secret,
            site: &site,
            certs: &certs,
        },
    )?;
    print!("{text}");
    if with_secret {
        audit::append(
            state,
            &audit::actor(),
            "peer.export_secret",
            json!({ "name": name, "format": format.as_str() }),
        )?;
    }
    Ok(())
}
