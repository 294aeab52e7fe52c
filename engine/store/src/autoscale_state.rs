//! The autoscaler's memory: the last action taken per region.
//!
//! This module owns the `autoscale_last_actions` table, one
//! [`LastAction`] per region stored as JSON. The autoscaler decides (in the
//! core); this store remembers, so cooldowns and in-flight actions survive a
//! restart. Every `put` appends an `autoscale.action` audit entry with the
//! reason in the same transaction.

use std::collections::BTreeMap;

use crate::db::{OptionalExtension, params};
use neutral_core::autoscale::LastAction;
use serde_json::json;

use crate::audit::{AuditEntry, append_in, kinds};
use crate::error::{During, Result};
use crate::store::{Store, decode, encode};

/// The autoscale state view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct AutoscaleStateStore<'a> {
    pub(crate) store: &'a Store,
}

impl AutoscaleStateStore<'_> {
    pub fn get(&self, region: &str) -> Result<Option<LastAction>> {
        const OP: &str = "get last autoscale action";
        self.store.read(OP, |tx| {
            let doc: Option<String> = tx
                .query_row(
                    "SELECT doc FROM autoscale_last_actions WHERE region = ?1",
                    params![region],
                    |row| row.get(0),
                )
                .optional()
                .during(OP)?;
            doc.map(|doc| decode(OP, &format!("last action of region `{region}`"), &doc))
                .transpose()
        })
    }

    /// Records `action` as the region's last action (replacing the previous
    /// one) and appends an `autoscale.action` audit entry with `reason` and
    /// `detail` (e.g. the decision's numbers). Returns the audit id.
    pub fn put(
        &self,
        region: &str,
        action: &LastAction,
        actor: &str,
        reason: &str,
        detail: &serde_json::Value,
    ) -> Result<i64> {
        const OP: &str = "put last autoscale action";
        let doc = encode(OP, "last action", action)?;
        self.store.write_fenced(OP, |tx| {
            tx.execute(
                "INSERT INTO autoscale_last_actions (region, at, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (region) DO UPDATE SET at = excluded.at, doc = excluded.doc",
                params![region, action.at.0, doc],
            )
            .during(OP)?;
            let state = if action.in_flight {
                "in flight"
            } else {
                "settled"
            };
            append_in(
                tx,
                &AuditEntry {
                    at: action.at,
                    actor: actor.to_owned(),
                    kind: kinds::AUTOSCALE_ACTION.to_owned(),
                    subject: region.to_owned(),
                    message: format!(
                        "region {region}: {} -> {} nodes ({state}): {reason}",
                        action.from, action.to
                    ),
                    commit: None,
                    data: json!({ "action": action, "detail": detail }),
                },
            )
        })
    }

    /// Every region's last action, keyed by region (the shape
    /// `neutral_core::autoscale::decide_all` takes).
    pub fn list(&self) -> Result<BTreeMap<String, LastAction>> {
        const OP: &str = "list last autoscale actions";
        self.store.read(OP, |tx| {
            let mut stmt = tx
                .prepare_cached("SELECT region, doc FROM autoscale_last_actions ORDER BY region")
                .during(OP)?;
            let rows = stmt
                .query_map(params![], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .during(OP)?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (region, doc) = row.during(OP)?;
                let action = decode(OP, &format!("last action of region `{region}`"), &doc)?;
                out.insert(region, action);
            }
            Ok(out)
        })
    }
}

impl Store {
    pub fn autoscale_state(&self) -> AutoscaleStateStore<'_> {
        AutoscaleStateStore { store: self }
    }
}

#[cfg(test)]
mod tests;
