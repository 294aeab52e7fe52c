//! Small named JSON documents the daemon keeps across restarts and shares
//! with its replicas — the weights report in force and the split-brain
//! guard's calm snapshot — each with the time it was written. What a
//! document means is the daemon's; this module stores, reads and dates it.

use crate::db::{OptionalExtension, params};
use crate::error::{During, Result};
use crate::store::Store;
use neutral_core::model::Timestamp;

/// The documents view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct DocStore<'a> {
    pub(crate) store: &'a Store,
}

impl DocStore<'_> {
    /// Sets document `key` to `doc` written at `at`.
    pub fn put(&self, key: &str, doc: &str, at: Timestamp) -> Result<()> {
        const OP: &str = "put document";
        self.store.write(OP, |tx| {
            tx.execute(
                "INSERT INTO docs (key, doc, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                params![key, doc, at.0],
            )
            .during(OP)?;
            Ok(())
        })
    }

    /// Document `key` and when it was written.
    pub fn get(&self, key: &str) -> Result<Option<(String, Timestamp)>> {
        const OP: &str = "get document";
        self.store.read(OP, |tx| {
            tx.query_row(
                "SELECT doc, updated_at FROM docs WHERE key = ?1",
                params![key],
                |row| Ok((row.get(0)?, Timestamp(row.get(1)?))),
            )
            .optional()
            .during(OP)
        })
    }
}

impl Store {
    pub fn docs(&self) -> DocStore<'_> {
        DocStore { store: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{open_temp, reopen};

    #[test]
    fn documents_are_replaced_whole_and_kept_over_a_reopen() {
        let (dir, store) = open_temp();
        assert_eq!(store.docs().get("weights").unwrap(), None);
        store
            .docs()
            .put("weights", "{\"a\":1}", Timestamp(1))
            .unwrap();
        store
            .docs()
            .put("weights", "{\"a\":2}", Timestamp(2))
            .unwrap();
        store.docs().put("calm", "[]", Timestamp(3)).unwrap();
        drop(store);
        let store = reopen(dir.path(), crate::store::StoreOptions::default()).unwrap();
        assert_eq!(
            store.docs().get("weights").unwrap(),
            Some(("{\"a\":2}".to_owned(), Timestamp(2)))
        );
        assert_eq!(
            store.docs().get("calm").unwrap(),
            Some(("[]".to_owned(), Timestamp(3)))
        );
    }

    crate::tests::on_postgres!(documents_are_replaced_whole_and_kept_over_a_reopen);
}
