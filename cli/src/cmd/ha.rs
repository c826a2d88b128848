//! A pair of hubs: `renkei hub seal` (the hub's key into the registry for
//! the second hub) and keepalived's hooks, `renkei ha notify` and `renkei
//! ha check` (dist/keepalived/).

use crate::args::{HaCommand, VrrpState};
use crate::control::{self, Request};
use crate::daemon::ha::{HaStatus, Vrrp};
use crate::registry::Registry;
use crate::state::StateDir;
use crate::{audit, cluster};
use anyhow::{bail, Result};
use rust_i18n::t;
use serde_json::json;
use std::path::PathBuf;

pub(crate) fn run(state: &StateDir, cmd: HaCommand) -> Result<()> {
    match cmd {
        HaCommand::Notify { vrrp } => {
            let vrrp = match vrrp {
                VrrpState::Master => Vrrp::Master,
                VrrpState::Backup => Vrrp::Backup,
                VrrpState::Fault | VrrpState::Stop => Vrrp::Fault,
            };
            let st: HaStatus = control::request_as(state, &Request::HaNotify { state: vrrp })?;
            let nobody = t!("ha.nobody");
            println!(
                "{}",
                t!(
                    "ha.notified",
                    node = st.node,
                    role = st.role.as_str(),
                    vrrp = st.vrrp.as_str(),
                    holder = st.lease_holder.as_deref().unwrap_or(&nobody)
                )
            );
        }
        HaCommand::Check => {
            let status = control::request(state, &Request::Status)?;
            let verdict = check(&status)?;
            println!("{verdict}");
        }
    }
    Ok(())
}

/// keepalived's check: whether this node may hold the virtual address.
fn check(status: &serde_json::Value) -> Result<String> {
    let ha = &status["ha"];
    if ha.is_null() {
        bail!("{}", t!("ha.alone"));
    }
    // `renkei drain` marks the hub `draining` at once and `drained` when
    // every facility has its outcome: the address moves only then, so the
    // Deletes to facilities without REDIRECT still leave from it.
    if status["hub"]["drained"] == true {
        bail!("{}", t!("ha.draining"));
    }
    Ok(t!(
        "ha.check_ok",
        node = ha["node"].as_str().unwrap_or("?"),
        role = ha["role"].as_str().unwrap_or("?"),
        vrrp = ha["vrrp"].as_str().unwrap_or("?")
    )
    .into_owned())
}

/// `renkei hub seal`.
pub(crate) fn seal(state: &StateDir, cluster_key: Option<PathBuf>) -> Result<()> {
    let key = cluster_key.unwrap_or_else(|| state.cluster_key());
    let mut reg = Registry::open(state)?;
    let sealed = cluster::seal(state, &mut reg, &key)?;
    audit::append(
        state,
        &audit::actor(),
        "hub.seal",
        json!({ "cluster_key": sealed.recipient, "created_key": sealed.created_key }),
    )?;
    let what = if sealed.created_key {
        "ha.sealed_new"
    } else {
        "ha.sealed"
    };
    println!(
        "{}",
        t!(what, path = key.display(), public = sealed.recipient)
    );
    println!("{}", t!("ha.seal_next", path = key.display()));
    Ok(())
}

/// After `hub renew-cert` and CA rollovers: seals the new credentials
/// when the registry holds sealed ones, with the cluster key in this
/// state directory; says what to run when that key is not here.
pub(crate) fn reseal(state: &StateDir) {
    let result = (|| -> Result<bool> {
        let mut reg = Registry::open(state)?;
        if !cluster::is_sealed(&reg)? {
            return Ok(false);
        }
        cluster::seal(state, &mut reg, &state.cluster_key())?;
        Ok(true)
    })();
    match result {
        Ok(false) => {}
        Ok(true) => println!("{}", t!("ha.resealed")),
        Err(e) => eprintln!("{}", t!("ha.reseal_failed", error = format!("{e:#}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message of `cli/locales/ha.yml` is there in both languages.
    #[test]
    fn every_ha_message_is_in_english_and_japanese() {
        let yml = include_str!("../../locales/ha.yml");
        let keys: Vec<&str> = yml
            .lines()
            .filter(|l| l.starts_with("ha.") && l.ends_with(':'))
            .map(|l| l.trim_end_matches(':'))
            .collect();
        assert!(keys.len() > 20, "{keys:?}");
        for key in keys {
            for lang in crate::i18n::LANGUAGES {
                let text = t!(key, locale = lang);
                assert_ne!(text, key, "{lang} lacks {key}");
            }
            assert_ne!(t!(key, locale = "ja"), t!(key, locale = "en"), "{key}");
        }
    }

    /// keepalived's hook lines parse (a positional once clashed with the
    /// global --state).
    #[test]
    fn the_hook_command_lines_parse() {
        use clap::Parser;
        for state in ["master", "backup", "fault", "stop"] {
            let cli = crate::args::Cli::try_parse_from([
                "renkei", "--state", "/tmp/x", "ha", "notify", state,
            ])
            .unwrap();
            assert!(matches!(
                cli.command,
                crate::args::Command::Ha(HaCommand::Notify { .. })
            ));
        }
        assert!(crate::args::Cli::try_parse_from(["renkei", "ha", "notify", "up"]).is_err());
        crate::args::Cli::try_parse_from(["renkei", "ha", "check"]).unwrap();
    }

    #[test]
    fn the_check_passes_a_node_of_a_pair_that_is_not_draining() {
        let ok = json!({ "hub": {}, "ha": { "node": "a", "role": "active", "vrrp": "master" } });
        assert_eq!(check(&ok).unwrap(), "ok: node a is active (VRRP master)");
        let standby =
            json!({ "hub": {}, "ha": { "node": "b", "role": "standby", "vrrp": "backup" } });
        assert!(check(&standby).is_ok());
        let alone = json!({ "hub": {} });
        assert!(check(&alone).unwrap_err().to_string().starts_with("node: "));
        // A hub just started passes: keepalived, in FAULT while it was
        // down, then leaves FAULT and tells it its state.
        let unknown =
            json!({ "hub": {}, "ha": { "node": "a", "role": "standby", "vrrp": "unknown" } });
        assert!(check(&unknown).is_ok());
        let draining = json!({ "hub": { "draining": true, "drained": false }, "ha": { "node": "a", "role": "active", "vrrp": "master" } });
        assert!(check(&draining).is_ok(), "the address stays until drained");
        let drained = json!({ "hub": { "draining": true, "drained": true }, "ha": { "node": "a", "role": "active", "vrrp": "master" } });
        assert!(check(&drained)
            .unwrap_err()
            .to_string()
            .starts_with("draining: "));
    }
}
