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
use crate::{Store, Timestamp, decode, encode, stored_u32};

/// A stored zone, decoded into the caller's type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredZone<T> {
    pub name: String,
    pub serial: u32,
    pub zone: T,
    pub updated_at: Timestamp,
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
        const OP: &str = "put DNS zone";
        let doc = encode(OP, &format!("zone `{name}`"), zone)?;
        self.store.write(OP, |tx| {
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
            Ok(())
        })
    }

    pub fn get_zone<T: DeserializeOwned>(&self, name: &str) -> Result<Option<StoredZone<T>>> {
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
    pub fn list_zones<T: DeserializeOwned>(&self) -> Result<Vec<StoredZone<T>>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditQuery;
    use crate::tests::open_temp;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Zone {
        rrsets: Vec<(String, String, u32, Vec<String>)>,
    }

    fn zone(ip: &str) -> Zone {
        Zone {
            rrsets: vec![("app.example.com.".into(), "A".into(), 30, vec![ip.into()])],
        }
    }

    #[test]
    fn zones_round_trip_replace_and_delete_with_audit() {
        let (_dir, store) = open_temp();
        let zones = store.zones();
        assert_eq!(zones.get_zone::<Zone>("example.com.").unwrap(), None);
        zones
            .put_zone(
                "example.com.",
                1,
                &zone("192.0.2.1"),
                Timestamp(5),
                "admin",
                &json!({"rrsets": 1}),
            )
            .unwrap();
        zones
            .put_zone(
                "example.org.",
                7,
                &zone("192.0.2.9"),
                Timestamp(6),
                "admin",
                &json!(null),
            )
            .unwrap();
        zones
            .put_zone(
                "example.com.",
                u32::MAX,
                &zone("192.0.2.2"),
                Timestamp(8),
                "admin",
                &json!(null),
            )
            .unwrap();
        let stored = zones.get_zone::<Zone>("example.com.").unwrap().unwrap();
        assert_eq!(
            stored,
            StoredZone {
                name: "example.com.".into(),
                serial: u32::MAX,
                zone: zone("192.0.2.2"),
                updated_at: Timestamp(8),
            }
        );
        // Opaque: any JSON shape reads back.
        let raw = zones.list_zones::<serde_json::Value>().unwrap();
        assert_eq!(raw.len(), 2);
        assert_eq!(raw[1].name, "example.org.");
        assert_eq!(raw[1].zone["rrsets"][0][3][0], "192.0.2.9");

        assert!(
            zones
                .delete_zone("example.org.", Timestamp(9), "admin")
                .unwrap()
        );
        assert!(
            !zones
                .delete_zone("example.org.", Timestamp(9), "admin")
                .unwrap()
        );
        assert_eq!(zones.list_zones::<Zone>().unwrap().len(), 1);

        let audit = store.audit().list(&AuditQuery::default()).unwrap();
        let kinds: Vec<_> = audit.iter().map(|r| r.entry.kind.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                kinds::DNS_ZONE_PUT,
                kinds::DNS_ZONE_PUT,
                kinds::DNS_ZONE_PUT,
                kinds::DNS_ZONE_DELETED
            ]
        );
        assert_eq!(
            audit[0].entry.data,
            json!({"serial": 1, "detail": {"rrsets": 1}})
        );
        assert_eq!(
            audit[3].entry.message,
            "zone example.org. deleted (was at serial 7)"
        );
    }

    #[test]
    fn a_zone_that_does_not_decode_is_a_named_error() {
        let (_dir, store) = open_temp();
        store
            .zones()
            .put_zone(
                "example.com.",
                1,
                &json!({"other": true}),
                Timestamp(0),
                "admin",
                &json!(null),
            )
            .unwrap();
        let err = store.zones().get_zone::<Zone>("example.com.").unwrap_err();
        assert!(err.to_string().contains("zone `example.com.`"), "{err}");
    }

    crate::tests::on_postgres!(
        zones_round_trip_replace_and_delete_with_audit,
        a_zone_that_does_not_decode_is_a_named_error,
    );
}
