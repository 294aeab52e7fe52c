use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use neutral_core::diag::{Diagnostic, Pos};
use serde_json::json;

use super::*;
use crate::audit::AuditQuery;
use crate::db::Dialect;
use crate::store::StoreOptions;
use crate::tests::{declarations, on_postgres, open_temp};

fn audit_count(store: &Store) -> usize {
    store
        .audit()
        .list(&AuditQuery {
            limit: MAX_PAGE,
            ..AuditQuery::default()
        })
        .unwrap()
        .len()
}

const MAX_PAGE: u32 = crate::audit::MAX_AUDIT_PAGE;

#[test]
fn nothing_is_loaded_before_the_first_good_commit() {
    let (_dir, store) = open_temp();
    assert_eq!(store.load_declarations().unwrap(), None);
    assert_eq!(store.sync_status().unwrap(), SyncStatus::default());
    assert!(store.regions().list().unwrap().is_empty());
}

#[test]
fn applied_declarations_round_trip_through_every_store() {
    let (_dir, store) = open_temp();
    let decl = declarations(1, 3);
    let applied = store
        .apply_declarations("c1", &decl, Timestamp(100), "sync")
        .unwrap();
    assert_eq!(applied.changes.regions.added, vec!["r000", "r001", "r002"]);
    assert_eq!(applied.changes.gtm.added, vec!["app.example.com"]);

    assert_eq!(
        store.load_declarations().unwrap(),
        Some(("c1".to_owned(), decl.clone()))
    );
    let region = store.regions().get("r001").unwrap().unwrap();
    assert_eq!(region.value, decl.regions["r001"]);
    assert_eq!(
        (region.commit.as_str(), region.changed_in.as_str()),
        ("c1", "c1")
    );
    assert_eq!(store.regions().get("nope").unwrap(), None);
    assert_eq!(
        store
            .gtm_policies()
            .get("app.example.com")
            .unwrap()
            .unwrap()
            .value,
        decl.gtm["app.example.com"]
    );
    assert_eq!(store.autoscale_policies().list().unwrap().len(), 3);
    assert_eq!(
        store.node_pools().list().unwrap()[2].value,
        decl.node_pools["r002"]
    );

    let status = store.sync_status().unwrap();
    let good = CommitAt {
        commit: "c1".into(),
        at: Timestamp(100),
    };
    assert_eq!(status.last_good.as_ref(), Some(&good));
    assert_eq!(status.last_seen.as_ref(), Some(&good));
    assert_eq!(status.failing(), None);

    let audit = store.audit().list(&AuditQuery::default()).unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].id, applied.audit_id);
    assert_eq!(audit[0].entry.kind, kinds::SYNC_APPLIED);
    assert_eq!(audit[0].entry.commit.as_deref(), Some("c1"));
    assert_eq!(audit[0].entry.actor, "sync");
}

#[test]
fn a_new_commit_reports_what_changed_and_keeps_where_unchanged_objects_came_from() {
    let (_dir, store) = open_temp();
    let first = declarations(1, 3);
    store
        .apply_declarations("c1", &first, Timestamp(1), "sync")
        .unwrap();
    let mut second = first.clone();
    second.regions.remove("r002");
    second.autoscale.remove("r002");
    second.node_pools.remove("r002");
    second.regions.get_mut("r001").unwrap().base_weight = 0;
    let mut us = second.regions["r000"].clone();
    us.name = "us".into();
    second.regions.insert("us".into(), us);

    let applied = store
        .apply_declarations("c2", &second, Timestamp(2), "sync")
        .unwrap();
    assert_eq!(
        applied.changes.regions,
        ObjectChanges {
            added: vec!["us".into()],
            changed: vec!["r001".into()],
            removed: vec!["r002".into()],
        }
    );
    assert!(applied.changes.gtm.is_empty());
    assert_eq!(
        applied.changes.summary(),
        "regions +us ~r001 -r002; autoscale -r002; node pools -r002"
    );

    let r000 = store.regions().get("r000").unwrap().unwrap();
    assert_eq!(
        (r000.commit.as_str(), r000.changed_in.as_str()),
        ("c2", "c1")
    );
    let r001 = store.regions().get("r001").unwrap().unwrap();
    assert_eq!(r001.changed_in, "c2");
    assert_eq!(
        store.load_declarations().unwrap(),
        Some(("c2".into(), second))
    );

    let newest = &store
        .audit()
        .list(&AuditQuery {
            newest_first: true,
            limit: 1,
            ..AuditQuery::default()
        })
        .unwrap()[0];
    assert_eq!(newest.entry.subject, "c2");
    assert!(
        newest
            .entry
            .message
            .starts_with("applied commit c2: 3 regions, 1 domains"),
        "{}",
        newest.entry.message
    );
    assert_eq!(
        newest.entry.data["changes"]["regions"]["added"],
        json!(["us"])
    );
}

#[test]
fn a_statement_failing_mid_apply_leaves_the_previous_commit_whole() {
    let (dir, store) = open_temp();
    let first = declarations(1, 4);
    let mut second = declarations(2, 6);
    second.node_pools.insert(
        "boom".into(),
        neutral_core::model::NodePoolDecl {
            region: "boom".into(),
            desired_nodes: 1,
        },
    );
    {
        store
            .apply_declarations("c1", &first, Timestamp(1), "sync")
            .unwrap();
        // Failpoint: node pools are written after regions, GTM and autoscale
        // policies, so this aborts the apply after most of it has been done.
        store.with_writer(|conn| {
            let failpoint = match conn.dialect() {
                Dialect::Sqlite => {
                    "CREATE TEMP TRIGGER failpoint BEFORE INSERT ON main.node_pools
                     WHEN NEW.name = 'boom'
                     BEGIN SELECT RAISE(ABORT, 'failpoint: node pool boom'); END;"
                }
                Dialect::Postgres => {
                    "CREATE FUNCTION failpoint() RETURNS trigger LANGUAGE plpgsql AS $f$
                     BEGIN RAISE EXCEPTION 'failpoint: node pool boom'; END $f$;
                     CREATE TRIGGER failpoint BEFORE INSERT ON node_pools FOR EACH ROW
                     WHEN (NEW.name = 'boom') EXECUTE FUNCTION failpoint();"
                }
            };
            conn.execute_batch(failpoint).unwrap();
        });
        let err = store
            .apply_declarations("c2", &second, Timestamp(2), "sync")
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Database {
                    op: "apply declarations",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("failpoint"), "{err}");
        assert_consistent_at(&store, "c1", &first, 1);
        drop(store);
    }
    // And from disk, by a fresh process-like open.
    let store = crate::tests::reopen(dir.path(), StoreOptions::default()).unwrap();
    assert_consistent_at(&store, "c1", &first, 1);
}

fn assert_consistent_at(store: &Store, commit: &str, decl: &Declarations, audits: usize) {
    assert_eq!(
        store.load_declarations().unwrap(),
        Some((commit.to_owned(), decl.clone()))
    );
    let status = store.sync_status().unwrap();
    assert_eq!(status.last_good.unwrap().commit, commit);
    assert_eq!(status.last_seen.unwrap().commit, commit);
    assert_eq!(store.regions().list().unwrap().len(), decl.regions.len());
    assert_eq!(audit_count(store), audits);
}

#[test]
fn a_rejected_commit_keeps_the_last_good_declarations_and_shows_its_diagnostics() {
    let (_dir, store) = open_temp();
    let good = declarations(1, 2);
    store
        .apply_declarations("good1", &good, Timestamp(10), "sync")
        .unwrap();
    let diagnostics = vec![
        Diagnostic::warning("platform-config/gtm/app.yaml", Pos::new(2, 1), "odd"),
        Diagnostic::error(
            "platform-config/regions/jp.yaml",
            Pos::new(4, 12),
            "min_nodes 6 > max_nodes 5",
        ),
    ];
    store
        .record_sync_failure("bad2", &diagnostics, Timestamp(20), "sync")
        .unwrap();

    assert_eq!(
        store.load_declarations().unwrap(),
        Some(("good1".to_owned(), good.clone()))
    );
    let status = store.sync_status().unwrap();
    assert_eq!(status.last_good.as_ref().unwrap().commit, "good1");
    assert_eq!(status.last_seen.as_ref().unwrap().commit, "bad2");
    let failing = status.failing().unwrap();
    assert_eq!(failing.commit, "bad2");
    assert_eq!(failing.at, Timestamp(20));
    assert_eq!(failing.diagnostics, diagnostics);

    let rejected = &store
        .audit()
        .list(&AuditQuery {
            kind: Some(kinds::SYNC_REJECTED.into()),
            ..AuditQuery::default()
        })
        .unwrap()[0];
    assert_eq!(
        rejected.entry.message,
        "rejected commit bad2: 1 errors, 1 warnings; first: \
         platform-config/regions/jp.yaml:4:12: error: min_nodes 6 > max_nodes 5"
    );
    assert_eq!(rejected.entry.data["diagnostics"][1]["line"], json!(4));

    // A later good commit ends the failure but keeps it as history.
    store
        .apply_declarations("good3", &good, Timestamp(30), "sync")
        .unwrap();
    let status = store.sync_status().unwrap();
    assert_eq!(status.failing(), None);
    assert_eq!(status.last_failure.unwrap().commit, "bad2");
}

#[test]
fn diffs_name_added_changed_and_removed_objects() {
    let doc = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let old = doc(&[("a", "1"), ("b", "2"), ("c", "3")]);
    let new = doc(&[("b", "2"), ("c", "30"), ("d", "4")]);
    assert_eq!(
        diff_docs(&old, &new),
        ObjectChanges {
            added: vec!["d".into()],
            changed: vec!["c".into()],
            removed: vec!["a".into()],
        }
    );
    assert!(diff_docs(&new, &new).is_empty());
    assert_eq!(DeclChanges::default().summary(), "no changes");
}

#[test]
fn a_stored_document_from_another_version_is_a_named_decode_error() {
    let (_dir, store) = open_temp();
    store
        .apply_declarations("c1", &declarations(1, 1), Timestamp(1), "sync")
        .unwrap();
    store.with_writer(|conn| {
        conn.execute("UPDATE regions SET doc = '{\"name\": 5}'", params![])
            .unwrap();
    });
    let err = store.load_declarations().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("read declarations: stored region `r000` is not valid JSON"),
        "{err}"
    );
}

// ---- kill -9 ---------------------------------------------------------------

const CRASH_DB_ENV: &str = "NEUTRAL_STORE_CRASH_TEST_DB";
const CRASH_START_ENV: &str = "NEUTRAL_STORE_CRASH_TEST_START";
const CRASH_MARKER_ENV: &str = "NEUTRAL_STORE_CRASH_TEST_MARKER";
const CHILD_TEST: &str = "declarations::tests::crash_child_applies_declarations_until_killed";

/// Commit `i`'s declarations: sizes and values differ from one commit to the
/// next, so a mix of two commits cannot look like either.
fn crash_variant(i: u32) -> Declarations {
    declarations(i, 120 + i % 40)
}

fn crash_commit(i: u32) -> String {
    format!("commit-{i:08}")
}

/// Run by `apply_is_all_or_nothing_across_kill_9` as a child process:
/// applies three commits, then a fourth that stops at the
/// `pause_inside_apply` fault point — every write done, nothing committed —
/// and waits there to be killed.
#[test]
#[ignore = "child process of apply_is_all_or_nothing_across_kill_9"]
fn crash_child_applies_declarations_until_killed() {
    let Ok(path) = std::env::var(CRASH_DB_ENV) else {
        return;
    };
    let start: u32 = std::env::var(CRASH_START_ENV).unwrap().parse().unwrap();
    let marker = std::env::var(CRASH_MARKER_ENV).unwrap();
    {
        let store = Store::open_file(Path::new(&path), StoreOptions::default()).unwrap();
        for i in start..start + 3 {
            store
                .apply_declarations(
                    &crash_commit(i),
                    &crash_variant(i),
                    Timestamp(i.into()),
                    "crash",
                )
                .unwrap();
        }
    }
    let store = Store::open_file(
        Path::new(&path),
        StoreOptions {
            pause_inside_apply: Some(marker.into()),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let i = start + 3;
    let paused = store.apply_declarations(
        &crash_commit(i),
        &crash_variant(i),
        Timestamp(i.into()),
        "crash",
    );
    panic!("the fault point returned instead of being killed: {paused:?}");
}

#[test]
fn apply_is_all_or_nothing_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("neutral.sqlite3");
    let arm = dir.path().join("pause-inside-apply");
    let marker = dir.path().join("pause-inside-apply.reached");
    std::fs::write(&arm, b"armed").unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..3u32 {
        let start = round * 1_000_000;
        let _ = std::fs::remove_file(&marker);
        let mut child = Command::new(&exe)
            .args([CHILD_TEST, "--exact", "--ignored", "--test-threads=1"])
            .env(CRASH_DB_ENV, &path)
            .env(CRASH_START_ENV, start.to_string())
            .env(CRASH_MARKER_ENV, &arm)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait (bounded) until the child sits inside the fourth apply's
        // transaction, then kill it there.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !marker.exists() {
            assert!(
                Instant::now() < deadline,
                "child never reached the fault point"
            );
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let store = Store::open_file(&path, StoreOptions::default()).unwrap();
        let (commit, _) = store.load_declarations().unwrap().unwrap();
        assert_eq!(
            commit,
            crash_commit(start + 2),
            "round {round}: the killed transaction left a trace"
        );
        drop(store);
        let store = Store::open_file(&path, StoreOptions::default()).unwrap();
        let integrity: String = store.with_sqlite(|conn| {
            conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .unwrap()
        });
        assert_eq!(integrity, "ok");
        let (commit, decl) = store.load_declarations().unwrap().unwrap();
        let i: u32 = commit.trim_start_matches("commit-").parse().unwrap();
        assert_eq!(i, start + 2, "round {round}: {commit}");
        assert_eq!(decl, crash_variant(i), "round {round}: a mix of commits");
        let status = store.sync_status().unwrap();
        assert_eq!(status.last_seen.unwrap().commit, commit);
        let last_audit = &store
            .audit()
            .list(&AuditQuery {
                newest_first: true,
                limit: 1,
                ..AuditQuery::default()
            })
            .unwrap()[0];
        assert_eq!(last_audit.entry.commit.as_deref(), Some(commit.as_str()));
        for region in store.regions().list().unwrap() {
            assert_eq!(region.commit, commit);
        }
    }
}

on_postgres!(
    nothing_is_loaded_before_the_first_good_commit,
    applied_declarations_round_trip_through_every_store,
    a_new_commit_reports_what_changed_and_keeps_where_unchanged_objects_came_from,
    a_statement_failing_mid_apply_leaves_the_previous_commit_whole,
    a_rejected_commit_keeps_the_last_good_declarations_and_shows_its_diagnostics,
    diffs_name_added_changed_and_removed_objects,
    a_stored_document_from_another_version_is_a_named_decode_error,
);
