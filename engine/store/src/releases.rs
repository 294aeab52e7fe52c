//! The release queue's memory: the latest release asked for per node, as a
//! JSON document the daemon owns (`neutral_server::releases`), with the time
//! it last changed. In the store, not only in a daemon's memory, so an order
//! survives a restart and reaches its node through whichever replica the node
//! heartbeats to. This module stores and lists documents; what they mean is
//! the daemon's.

use crate::db::params;
use crate::error::{During, Result};
use crate::store::Store;
use neutral_core::model::Timestamp;

/// One node's stored release document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRelease {
    pub node_id: String,
    pub doc: String,
    pub updated_at: Timestamp,
}

/// The release view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct ReleaseStore<'a> {
    pub(crate) store: &'a Store,
}

impl ReleaseStore<'_> {
    /// Sets `node`'s release document, unless the stored one changed later
    /// than `at` (a replica that saw a newer state wrote it). Returns whether
    /// it was written.
    pub fn put(&self, node: &str, doc: &str, at: Timestamp) -> Result<bool> {
        const OP: &str = "put release";
        self.store.write(OP, |tx| {
            let written = tx
                .execute(
                    "INSERT INTO releases (node_id, doc, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (node_id) DO UPDATE SET doc = excluded.doc,
                         updated_at = excluded.updated_at
                     WHERE releases.updated_at <= excluded.updated_at",
                    params![node, doc, at.0],
                )
                .during(OP)?;
            Ok(written > 0)
        })
    }

    /// Every node's release document, by node id.
    pub fn list(&self) -> Result<Vec<StoredRelease>> {
        const OP: &str = "list releases";
        self.store.read(OP, |tx| {
            tx.query_map(
                "SELECT node_id, doc, updated_at FROM releases ORDER BY node_id",
                params![],
                |row| {
                    Ok(StoredRelease {
                        node_id: row.get(0)?,
                        doc: row.get(1)?,
                        updated_at: Timestamp(row.get(2)?),
                    })
                },
            )
            .and_then(Iterator::collect)
            .during(OP)
        })
    }

    /// Forgets `node`'s release (the node was deleted).
    pub fn delete(&self, node: &str) -> Result<()> {
        const OP: &str = "delete release";
        self.store.write(OP, |tx| {
            tx.execute("DELETE FROM releases WHERE node_id = ?1", params![node])
                .during(OP)?;
            Ok(())
        })
    }
}

impl Store {
    pub fn releases(&self) -> ReleaseStore<'_> {
        ReleaseStore { store: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{open_temp, reopen};

    #[test]
    fn the_newest_document_wins_and_survives_a_reopen() {
        let (dir, store) = open_temp();
        let releases = store.releases();
        assert!(releases.list().unwrap().is_empty());
        assert!(releases.put("n1", "{\"v\":1}", Timestamp(10)).unwrap());
        assert!(releases.put("n1", "{\"v\":2}", Timestamp(20)).unwrap());
        // An older state arriving late is not written over a newer one.
        assert!(!releases.put("n1", "{\"v\":0}", Timestamp(15)).unwrap());
        assert!(releases.put("n2", "{\"v\":9}", Timestamp(5)).unwrap());
        drop(store);
        let store = reopen(dir.path(), crate::store::StoreOptions::default()).unwrap();
        let listed = store.releases().list().unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|r| (r.node_id.as_str(), r.doc.as_str(), r.updated_at.0))
                .collect::<Vec<_>>(),
            [("n1", "{\"v\":2}", 20), ("n2", "{\"v\":9}", 5)]
        );
        store.releases().delete("n1").unwrap();
        assert_eq!(store.releases().list().unwrap().len(), 1);
    }

    crate::tests::on_postgres!(the_newest_document_wins_and_survives_a_reopen);
}
