//! What the audit log keeps of each IKE event: who, where, which suite
//! and why, never a key.

use ike::Event;
use serde_json::{json, Value};

/// What the audit log keeps of an IKE event (never keys).
pub(super) fn audit_record(event: &Event) -> (&'static str, Value) {
    match event {
        Event::IkeSaUp {
            ike_sa,
            peer,
            remote,
            suite,
            initiator,
            remote_behind_nat,
        } => (
            "sa.ike_up",
            json!({ "facility": peer, "ike_sa": ike_sa.to_string(), "remote": remote.to_string(), "suite": suite.to_string(), "hub_initiated": initiator, "behind_nat": remote_behind_nat }),
        ),
        Event::ChildSaUp {
            peer,
            child,
            rekey_of,
            ..
        } => (
            "sa.child_up",
            json!({
                "facility": peer,
                "spi_in": format!("{:08x}", child.spi_in),
                "spi_out": format!("{:08x}", child.spi_out),
                "suite": child.suite.to_string(),
                "local_ts": ike::ts::describe(&child.local_ts),
                "remote_ts": ike::ts::describe(&child.remote_ts),
                "rekey_of": rekey_of.map(|s| format!("{s:08x}")),
            }),
        ),
        Event::ChildSaDown {
            peer,
            spi_in,
            spi_out,
            ..
        } => (
            "sa.child_down",
            json!({ "facility": peer, "spi_in": format!("{spi_in:08x}"), "spi_out": format!("{spi_out:08x}") }),
        ),
        Event::IkeSaDown {
            ike_sa,
            peer,
            reason,
        } => (
            "sa.ike_down",
            json!({ "facility": peer, "ike_sa": ike_sa.to_string(), "reason": reason }),
        ),
        Event::IkeSaRekeyed {
            old,
            new,
            peer,
            suite,
        } => (
            "sa.ike_rekeyed",
            json!({ "facility": peer, "old": old.to_string(), "new": new.to_string(), "suite": suite.to_string() }),
        ),
        Event::ChildSaFailed {
            ike_sa,
            peer,
            notify,
            by_peer,
            reason,
        } => (
            "sa.child_failed",
            json!({ "facility": peer, "ike_sa": ike_sa.to_string(), "notify": notify.to_string(), "refused_by": if *by_peer { "facility" } else { "hub" }, "reason": reason }),
        ),
        Event::PeerMoved { peer, remote, .. } => (
            "sa.moved",
            json!({ "facility": peer, "remote": remote.to_string() }),
        ),
        Event::Refused {
            remote,
            peer,
            notify,
            reason,
        } => (
            if *notify == ike::wire::NotifyType::AuthenticationFailed {
                "refused.authentication"
            } else {
                "refused"
            },
            json!({ "facility": peer, "remote": remote.to_string(), "notify": notify.to_string(), "reason": reason }),
        ),
    }
}
