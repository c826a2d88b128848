//! `renkei init`: the state directory, registry, CA and hub certificate.

use crate::registry::{self, Hub, Registry};
use crate::state::StateDir;
use crate::{audit, certs};
use anyhow::{bail, Result};
use pki::Identity;
use serde_json::json;

pub(crate) fn run(
    state: &StateDir,
    hub_id: &str,
    public_addr: Vec<registry::PublicAddr>,
    profile: String,
    ca_key: pki::ca::KeyKind,
) -> Result<()> {
    if profile != "cryptrec" {
        bail!("profile: '{profile}' is unknown; the only profile is 'cryptrec'");
    }
    let id = Identity::parse(hub_id).map_err(|e| anyhow::anyhow!("hub-id: {e}"))?;
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
        drop(reg);
        registry::remove_files(state);
        return Err(e);
    }
    audit::append(
        state,
        &audit::actor(),
        "hub.init",
        json!({ "hub_id": id.to_string(), "public_addrs": public_addr, "profile": profile }),
    )?;
    println!(
        "initialized hub {id} in {} (CA key {ca_key}; CA certificate {})",
        state.display(),
        state.ca_cert().display()
    );
    Ok(())
}
