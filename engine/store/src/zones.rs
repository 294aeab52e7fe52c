//! Zones of the embedded DNS backend.
//!
//! The zone model (rrsets, SOA, changetypes) belongs to `neutral-dns`; this
//! module owns only the `dns_zones` table, where each zone is an opaque JSON
//! document stored with its SOA serial. Every write is one transaction with
//! its audit entry, so a PATCH the DNS API accepted is either stored and
//! audited or neither. Names are stored exactly as given: the DNS crate
//! decides their canonical form.

use crate::db::{OptionalExtension, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{AuditEntry, append_in, kinds};
use crate::error::{During, Result};
use crate::store::{Store, decode, encode, stored_u32};
use neutral_core::model::Timestamp;

/// A stored zone, decoded into the caller's type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredZone<T> {
    pub name: String,
    pub serial: u32,
    pub zone: T,
    pub updated_at: Timestamp,
}

/// What a conditional zone write ([`ZoneStore::put_zone_if`]) expects the
/// stored zone to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneBase {
    /// Anything: the write always happens.
    Any,
    /// No zone of that name (a create).
    Absent,
    /// The zone at this serial (the one the change was made on).
    Serial(u32),
}

/// The DNS zone view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct ZoneStore<'a> {
    pub(crate) store: &'a Store,
}

impl ZoneStore<'_> {
    /// Creates or replaces zone `name` with `zone` at `serial`, and appends a
    /// `dns.zone.put` audit entry whose data carries `detail` (e.g. the
    /// rrset changes of the request).
    pub fn put_zone<T: Serialize>(
        &self,
        name: &str,
        serial: u32,
        zone: &T,
        at: Timestamp,
        actor: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        self.put_zone_if(name, ZoneBase::Any, serial, zone, at, actor, detail)
            .map(|_| ())
    }

    /// [`ZoneStore::put_zone`], only when the stored zone is still `base`
    /// (compare-and-swap on the serial, so two replicas patching the same
    /// zone never lose one another's change). Returns whether it wrote.
    #[allow(clippy::too_many_arguments)]
    pub fn put_zone_if<T: Serialize>(
        &self,
        name: &str,
        base: ZoneBase,
        serial: u32,
        zone: &T,
        at: Timestamp,
        actor: &str,
        detail: &serde_json::Value,
    ) -> Result<bool> {
        const OP: &str = "put DNS zone";
        let doc = encode(OP, &format!("zone `{name}`"), zone)?;
        self.store.write(OP, |tx| {
            if base != ZoneBase::Any {
                let current: Option<i64> = tx
                    .query_row(
                        "SELECT serial FROM dns_zones WHERE name = ?1",
                        params![name],
                        |row| row.get(0),
                    )
                    .optional()
                    .during(OP)?;
                let as_expected = match base {
                    ZoneBase::Absent => current.is_none(),
                    ZoneBase::Serial(expected) => current == Some(i64::from(expected)),
                    ZoneBase::Any => true,
                };
                if !as_expected {
                    return Ok(false);
                }
            }
            tx.execute(
                "INSERT INTO dns_zones (name, serial, doc, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET serial = excluded.serial, doc = excluded.doc,
                 updated_at = excluded.updated_at",
                params![name, serial, doc, at.0],
            )
            .during(OP)?;
            append_in(
                tx,
                &AuditEntry {
                    at,
                    actor: actor.to_owned(),
                    kind: kinds::DNS_ZONE_PUT.to_owned(),
                    subject: name.to_owned(),
                    message: format!("zone {name} stored at serial {serial}"),
                    commit: None,
                    data: json!({ "serial": serial, "detail": detail }),
                },
            )?;
            crate::store::fault_point(
                self.store.options.pause_inside_zone_write.as_deref(),
                "pause_inside_zone_write",
            )?;
            Ok(true)
        })
    }

    /// Every stored zone's name and serial (cheap: no documents), by name.
    pub fn serials(&self) -> Result<Vec<(String, u32)>> {
        const OP: &str = "list DNS zone serials";
        self.store.read(OP, |tx| {
            let rows: Vec<(String, i64)> = tx
                .query_map(
                    "SELECT name, serial FROM dns_zones ORDER BY name",
                    params![],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .and_then(Iterator::collect)
                .during(OP)?;
            rows.into_iter()
                .map(|(name, serial)| Ok((name, stored_u32(OP, "serial", serial)?)))
                .collect()
        })
    }

    pub fn get_zone<T: DeserializeOwned + Send>(
        &self,
        name: &str,
    ) -> Result<Option<StoredZone<T>>> {
        const OP: &str = "get DNS zone";
        self.store.read(OP, |tx| {
            let row: Option<(i64, String, i64)> = tx
                .query_row(
                    "SELECT serial, doc, updated_at FROM dns_zones WHERE name = ?1",
                    params![name],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .during(OP)?;
            row.map(|(serial, doc, updated_at)| {
                zone_from(OP, name.to_owned(), serial, &doc, updated_at)
            })
            .transpose()
        })
    }

    /// Every zone, by name.
    pub fn list_zones<T: DeserializeOwned + Send>(&self) -> Result<Vec<StoredZone<T>>> {
        const OP: &str = "list DNS zones";
        self.store.read(OP, |tx| {
            let mut stmt = tx
                .prepare_cached("SELECT name, serial, doc, updated_at FROM dns_zones ORDER BY name")
                .during(OP)?;
            let rows = stmt
                .query_map(params![], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .during(OP)?;
            let mut out = Vec::new();
            for row in rows {
                let (name, serial, doc, updated_at) = row.during(OP)?;
                out.push(zone_from(OP, name, serial, &doc, updated_at)?);
            }
            Ok(out)
        })
    }

    /// Deletes zone `name`; returns whether it existed. Appends
    /// `dns.zone.deleted` when it did.
    pub fn delete_zone(&self, name: &str, at: Timestamp, actor: &str) -> Result<bool> {
        const OP: &str = "delete DNS zone";
        self.store.write(OP, |tx| {
            let serial: Option<i64> = tx
                .query_row(
                    "DELETE FROM dns_zones WHERE name = ?1 RETURNING serial",
                    params![name],
                    |row| row.get(0),
                )
                .optional()
                .during(OP)?;
            let Some(serial) = serial else {
                return Ok(false);
            };
            append_in(
                tx,
                &AuditEntry {
                    at,
                    actor: actor.to_owned(),
                    kind: kinds::DNS_ZONE_DELETED.to_owned(),
                    subject: name.to_owned(),
                    message: format!("zone {name} deleted (was at serial {serial})"),
                    commit: None,
                    data: json!({ "serial": serial }),
                },
            )?;
            Ok(true)
        })
    }
}

fn zone_from<T: DeserializeOwned>(
    op: &'static str,
    name: String,
    serial: i64,
    doc: &str,
    updated_at: i64,
) -> Result<StoredZone<T>> {
    Ok(StoredZone {
        serial: stored_u32(op, &format!("serial of zone `{name}`"), serial)?,
        zone: decode(op, &format!("zone `{name}`"), doc)?,
        name,
        updated_at: Timestamp(updated_at),
    })
}

impl Store {
    pub fn zones(&self) -> ZoneStore<'_> {
        ZoneStore { store: self }
    }
}

#[cfg(test)]
mod tests;
