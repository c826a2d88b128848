//! What two hubs sharing one registry keep in it for each other: the
//! lease that says which node may be the active hub, and the hub's key
//! material sealed for the second node ([`crate::cluster`]).
//!
//! ```text
//!  ha_lease: name='active' │ holder │ epoch │ expires (unix ms, the holder's clock)
//!  acquire: UPDATE … SET holder=me, epoch=epoch+1, expires=now+ttl WHERE holder IS NULL OR expires < now
//!  renew:   UPDATE … SET expires=now+ttl WHERE holder=me AND epoch=mine
//!  release: UPDATE … SET holder=NULL, expires=0 WHERE holder=me AND epoch=mine
//! ```
//!
//! Each is one conditional `UPDATE` in a transaction with the read of the
//! row after it, in SQL both SQLite and PostgreSQL take as written (no
//! `INSERT OR …`, no `RETURNING`): the row exists from the migration
//! that made the table, so no statement ever has to create it. The
//! epoch grows by one with every new holder, so a holder that lost the
//! lease (another took it while this one could not renew) finds out at
//! its next renewal, even if the other node released it meanwhile.

use super::Registry;
use crate::db::{args, Db, Value};
use anyhow::{Context, Result};

/// The lease as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Lease {
    /// The node holding it (`None`: released, or never taken).
    pub(crate) holder: Option<String>,
    /// Grows by one with every acquisition.
    pub(crate) epoch: i64,
    /// Until when the holder may keep it without renewing (unix ms).
    pub(crate) expires_ms: i64,
}

impl Lease {
    /// Whether `node` holds it with `epoch`.
    pub(crate) fn held_by(&self, node: &str, epoch: i64) -> bool {
        self.holder.as_deref() == Some(node) && self.epoch == epoch
    }
}

const READ: &str = "SELECT holder, epoch, expires FROM ha_lease WHERE name = 'active'";

impl Registry {
    /// The lease now.
    pub(crate) fn lease(&self) -> Result<Lease> {
        read_lease(&self.db)
    }

    /// Takes the lease for `node` if nobody holds it or its holder let it
    /// expire (by `now_ms`); it then runs until `now_ms + ttl_ms`. Returns
    /// the lease after the attempt (held by `node` when it succeeded).
    pub(crate) fn lease_acquire(&self, node: &str, now_ms: i64, ttl_ms: i64) -> Result<Lease> {
        self.lease_update(
            "UPDATE ha_lease SET holder = ?1, epoch = epoch + 1, expires = ?2
             WHERE name = 'active' AND (holder IS NULL OR expires < ?3)",
            args![node, now_ms + ttl_ms, now_ms],
        )
    }

    /// Extends the lease `node` holds with `epoch` to `now_ms + ttl_ms`
    /// (also when it ran out meanwhile, as long as nobody took it).
    /// Returns the lease after the attempt: not held by `node` with
    /// `epoch` when another node took it.
    pub(crate) fn lease_renew(
        &self,
        node: &str,
        epoch: i64,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Lease> {
        self.lease_update(
            "UPDATE ha_lease SET expires = ?1
             WHERE name = 'active' AND holder = ?2 AND epoch = ?3",
            args![now_ms + ttl_ms, node, epoch],
        )
    }

    /// Gives the lease up at once (a node stepping down), so the other
    /// node need not wait for it to expire; a lease another node took
    /// since is left alone.
    pub(crate) fn lease_release(&self, node: &str, epoch: i64) -> Result<Lease> {
        self.lease_update(
            "UPDATE ha_lease SET holder = NULL, expires = 0
             WHERE name = 'active' AND holder = ?1 AND epoch = ?2",
            args![node, epoch],
        )
    }

    fn lease_update(&self, sql: &str, params: &[Value]) -> Result<Lease> {
        self.db.transaction(|tx| {
            tx.execute(sql, params)?;
            read_lease(tx)
        })
    }

    /// A value of the `meta` table.
    pub(crate) fn meta(&self, key: &str) -> Result<Option<String>> {
        self.db
            .query_opt("SELECT value FROM meta WHERE key = ?1", args![key])?
            .map(|r| r.text(0))
            .transpose()
    }

    /// Sets values of the `meta` table, all in one transaction.
    pub(crate) fn set_meta(&mut self, values: &[(&str, &str)]) -> Result<()> {
        self.db.transaction(|tx| {
            for (k, v) in values {
                // Portable upsert: update, then insert what was not there.
                let n = tx.execute("UPDATE meta SET value = ?2 WHERE key = ?1", args![*k, *v])?;
                if n == 0 {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                        args![*k, *v],
                    )?;
                }
            }
            Ok(())
        })
    }
}

fn read_lease(db: &Db) -> Result<Lease> {
    let row = db
        .query_opt(READ, args![])?
        .context("registry: the ha_lease row is missing")?;
    Ok(Lease {
        holder: row.opt_text(0)?,
        epoch: row.int(1)?,
        expires_ms: row.int(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{hub, temp_state};
    use super::*;

    /// Two nodes on one registry: only one holds the lease; the other
    /// gets it once it expired or was released; a holder whose lease was
    /// taken cannot renew it (the epoch moved on), even after the taker
    /// released it again.
    #[test]
    fn one_node_holds_the_lease_and_a_taken_lease_cannot_be_renewed() {
        let state = temp_state();
        let reg = Registry::init(&state, &hub()).unwrap();
        let other = Registry::open(&state).unwrap();
        assert_eq!(reg.lease().unwrap(), Lease::default());

        let a = reg.lease_acquire("a", 1_000, 3_000).unwrap();
        assert!(a.held_by("a", 1), "{a:?}");
        assert_eq!(a.expires_ms, 4_000);
        // b cannot take a lease that runs.
        let b = other.lease_acquire("b", 2_000, 3_000).unwrap();
        assert!(!b.held_by("b", b.epoch), "{b:?}");
        assert_eq!(b, a, "a refused acquisition changes nothing");
        // a renews; b still cannot take it.
        assert!(reg
            .lease_renew("a", 1, 3_500, 3_000)
            .unwrap()
            .held_by("a", 1));
        assert!(other
            .lease_acquire("b", 5_000, 3_000)
            .unwrap()
            .held_by("a", 1));
        // a's lease expires (it could not renew): b takes it with a new epoch.
        let b = other.lease_acquire("b", 6_600, 3_000).unwrap();
        assert!(b.held_by("b", 2), "{b:?}");
        // a's renewal fails and a's release leaves b's lease alone.
        assert!(!reg
            .lease_renew("a", 1, 6_700, 3_000)
            .unwrap()
            .held_by("a", 1));
        assert!(reg.lease_release("a", 1).unwrap().held_by("b", 2));
        // b releases: a may take it at once, with a new epoch, and b's
        // old epoch is dead.
        assert_eq!(other.lease_release("b", 2).unwrap().holder, None);
        let a = reg.lease_acquire("a", 6_800, 3_000).unwrap();
        assert!(a.held_by("a", 3), "{a:?}");
        assert!(!other
            .lease_renew("b", 2, 6_900, 3_000)
            .unwrap()
            .held_by("b", 2));
    }

    /// A renewal after a registry outage longer than the lease keeps the
    /// lease as long as nobody took it.
    #[test]
    fn a_lapsed_lease_nobody_took_is_renewed() {
        let state = temp_state();
        let reg = Registry::init(&state, &hub()).unwrap();
        assert!(reg.lease_acquire("a", 0, 3_000).unwrap().held_by("a", 1));
        assert!(reg
            .lease_renew("a", 1, 60_000, 3_000)
            .unwrap()
            .held_by("a", 1));
    }

    #[test]
    fn meta_values_are_set_and_replaced() {
        let state = temp_state();
        let mut reg = Registry::init(&state, &hub()).unwrap();
        assert_eq!(reg.meta("sealed_hub").unwrap(), None);
        reg.set_meta(&[("sealed_hub", "x"), ("sealed_for", "y")])
            .unwrap();
        reg.set_meta(&[("sealed_hub", "z")]).unwrap();
        assert_eq!(reg.meta("sealed_hub").unwrap().as_deref(), Some("z"));
        assert_eq!(reg.meta("sealed_for").unwrap().as_deref(), Some("y"));
    }
}
