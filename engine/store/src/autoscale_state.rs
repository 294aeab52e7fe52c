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
use crate::{Store, decode, encode};

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
        self.store.write(OP, |tx| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::open_temp;
    use crate::{AuditQuery, Timestamp};

    fn action(at: i64, from: u32, to: u32, in_flight: bool) -> LastAction {
        LastAction {
            at: Timestamp(at),
            from,
            to,
            in_flight,
            failover_extra: 1,
        }
    }

    #[test]
    fn last_actions_round_trip_and_replace_per_region() {
        let (_dir, store) = open_temp();
        let state = store.autoscale_state();
        assert_eq!(state.get("jp").unwrap(), None);
        state
            .put(
                "jp",
                &action(10, 1, 2, true),
                "autoscaler",
                "cpu 0.82 > 0.75 for 60s",
                &json!({"cpu": 0.82}),
            )
            .unwrap();
        state
            .put(
                "sg",
                &action(11, 3, 2, true),
                "autoscaler",
                "cpu 0.1 < 0.3 for 300s",
                &json!(null),
            )
            .unwrap();
        state
            .put(
                "jp",
                &action(20, 1, 2, false),
                "autoscaler",
                "commit applied",
                &json!(null),
            )
            .unwrap();
        assert_eq!(state.get("jp").unwrap(), Some(action(20, 1, 2, false)));
        let all = state.list().unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["jp", "sg"]);
        assert_eq!(all["sg"], action(11, 3, 2, true));

        let audit = store
            .audit()
            .list(&AuditQuery {
                subject: Some("jp".into()),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(
            audit[0].entry.message,
            "region jp: 1 -> 2 nodes (in flight): cpu 0.82 > 0.75 for 60s"
        );
        assert_eq!(audit[0].entry.data["detail"]["cpu"], json!(0.82));
        assert_eq!(audit[0].entry.kind, kinds::AUTOSCALE_ACTION);
    }

    crate::tests::on_postgres!(last_actions_round_trip_and_replace_per_region,);
}
