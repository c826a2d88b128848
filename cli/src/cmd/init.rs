//! `renkei init`: the state directory, registry, CA and hub certificate.

use crate::registry::{self, Hub, Registry};
use crate::state::StateDir;
use crate::{audit, certs};
use anyhow::{bail, Result};
use pki::Identity;
use rust_i18n::t;
use serde_json::json;

pub(crate) fn run(
    state: &StateDir,
    hub_id: &str,
    public_addr: Vec<registry::PublicAddr>,
    profile: String,
    ca_key: pki::ca::KeyKind,
) -> Result<()> {
    if profile != "cryptrec" {
        bail!("{}", t!("init.unknown_profile", profile = profile));
    }
    let id =
        Identity::parse(hub_id).map_err(|e| anyhow::anyhow!("{}", t!("init.hub_id", error = e)))?;
    let mut reg = Registry::init(
        state,
        &Hub {
            id: id.clone(),
            public_addrs: public_addr.clone(),
            profile: profile.clone(),
        },
    )?;
    if let Err(e) = certs::create(state, &mut reg, &id, ca_key) {
        // Nothing half-made stays behind: without the registry a
        // new `renkei init` can start over.
        reg.discard_new(state);
        return Err(e);
    }
    audit::append(
        state,
        &audit::actor(),
        "hub.init",
        json!({ "hub_id": id.to_string(), "public_addrs": public_addr, "profile": profile }),
    )?;
    println!(
        "{}",
        t!(
            "init.done",
            id = id,
            dir = state.display(),
            key = ca_key,
            ca = state.ca_cert().display()
        )
    );
    Ok(())
}
