use super::*;
use crate::store::StoreOptions;
use crate::tests::{open_temp, open_temp_with};

fn new_run(root: &str) -> NewRun {
    NewRun {
        root: root.into(),
        workspace: "default".into(),
        trigger: "push".into(),
        commit: Some("0123456789abcdef".into()),
    }
}

fn succeeded(log: &str) -> RunOutcome {
    RunOutcome {
        status: RunStatus::Succeeded,
        adds: Some(1),
        changes: Some(0),
        destroys: Some(2),
        exit_code: Some(0),
        log: log.into(),
    }
}

#[test]
fn a_run_goes_from_queued_to_running_to_finished() {
    let (_dir, store) = open_temp();
    let runs = store.runs();
    let id = runs
        .create_run(&new_run("infra/node-pool"), Timestamp(1_000), "scheduler")
        .unwrap();
    let queued = runs.get_run(id).unwrap().unwrap();
    assert_eq!(queued.summary.status, RunStatus::Queued);
    assert_eq!(queued.summary.queued_at, Timestamp(1_000));
    assert_eq!(queued.log, "");

    runs.start_run(id, Timestamp(1_500)).unwrap();
    runs.finish_run(
        id,
        &succeeded("Apply complete!"),
        Timestamp(4_000),
        "scheduler",
    )
    .unwrap();
    let done = runs.get_run(id).unwrap().unwrap();
    assert_eq!(
        done.summary,
        RunSummary {
            id,
            root: "infra/node-pool".into(),
            workspace: "default".into(),
            trigger: "push".into(),
            commit: Some("0123456789abcdef".into()),
            status: RunStatus::Succeeded,
            adds: Some(1),
            changes: Some(0),
            destroys: Some(2),
            exit_code: Some(0),
            queued_at: Timestamp(1_000),
            started_at: Some(Timestamp(1_500)),
            finished_at: Some(Timestamp(4_000)),
            duration_ms: Some(2_500),
        }
    );
    assert_eq!(done.log, "Apply complete!");

    let audit = store
        .audit()
        .list(&crate::audit::AuditQuery::default())
        .unwrap();
    let kinds: Vec<_> = audit.iter().map(|r| r.entry.kind.as_str()).collect();
    assert_eq!(kinds, vec![kinds::RUN_QUEUED, kinds::RUN_FINISHED]);
    assert_eq!(
        audit[1].entry.message,
        format!("run {id} succeeded: +1 ~0 -2")
    );
    assert_eq!(audit[1].entry.commit.as_deref(), Some("0123456789abcdef"));
}

#[test]
fn invalid_transitions_are_refused_and_change_nothing() {
    let (_dir, store) = open_temp();
    let runs = store.runs();
    let id = runs
        .create_run(&new_run("infra/gtm"), Timestamp(0), "admin")
        .unwrap();
    let err = runs
        .finish_run(
            id,
            &RunOutcome {
                status: RunStatus::Running,
                ..succeeded("")
            },
            Timestamp(1),
            "admin",
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::RunTransition { .. }), "{err}");

    // A queued run may be cancelled without ever starting.
    runs.finish_run(
        id,
        &RunOutcome {
            status: RunStatus::Cancelled,
            adds: None,
            changes: None,
            destroys: None,
            exit_code: None,
            log: String::new(),
        },
        Timestamp(5),
        "admin",
    )
    .unwrap();
    let err = runs.start_run(id, Timestamp(6)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("start run: run {id} is cancelled, it cannot become running")
    );
    let err = runs
        .finish_run(id, &succeeded(""), Timestamp(7), "admin")
        .unwrap_err();
    assert!(matches!(err, StoreError::RunTransition { .. }));
    let run = runs.get_run(id).unwrap().unwrap();
    assert_eq!(run.summary.status, RunStatus::Cancelled);
    assert_eq!(run.summary.duration_ms, None);

    assert!(matches!(
        runs.start_run(999, Timestamp(0)).unwrap_err(),
        StoreError::RunNotFound { id: 999, .. }
    ));
    assert_eq!(runs.get_run(999).unwrap(), None);
}

#[test]
fn runs_list_newest_first_filtered_by_root() {
    let (_dir, store) = open_temp();
    let runs = store.runs();
    let ids: Vec<i64> = ["a", "b", "a", "a"]
        .iter()
        .enumerate()
        .map(|(i, root)| {
            runs.create_run(&new_run(root), Timestamp(i64::try_from(i).unwrap()), "t")
                .unwrap()
        })
        .collect();
    let a: Vec<i64> = runs
        .list_runs(2, Some("a"))
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(a, vec![ids[3], ids[2]]);
    assert_eq!(runs.list_runs(10, None).unwrap().len(), 4);
}

#[test]
fn pages_of_runs_walk_every_run_once_with_filters() {
    let (_dir, store) = open_temp();
    let runs = store.runs();
    for i in 0..25i64 {
        let mut run = new_run(if i % 2 == 0 { "a" } else { "b" });
        run.workspace = format!("w{}", i % 3);
        runs.create_run(&run, Timestamp(i), "t").unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = runs
            .list_page(&RunQuery {
                limit: 4,
                before_id: before,
                ..RunQuery::default()
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        seen.extend(page.iter().map(|r| r.id));
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "newest first, each once");
    assert_eq!(seen.len(), 25);
    let filtered = runs
        .list_page(&RunQuery {
            limit: 100,
            root: Some("a".into()),
            workspace: Some("w0".into()),
            status: Some(RunStatus::Queued),
            ..RunQuery::default()
        })
        .unwrap();
    assert_eq!(filtered.len(), 5, "i in 0, 6, 12, 18, 24");
    assert!(
        filtered
            .iter()
            .all(|r| r.root == "a" && r.workspace == "w0")
    );
    let none = runs
        .list_page(&RunQuery {
            limit: 100,
            status: Some(RunStatus::Failed),
            ..RunQuery::default()
        })
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn a_long_log_keeps_its_tail_within_the_limit() {
    let (_dir, store) = open_temp_with(StoreOptions {
        run_log_limit: 4096,
        ..StoreOptions::default()
    });
    let log: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let id = store
        .runs()
        .create_run(&new_run("r"), Timestamp(0), "t")
        .unwrap();
    store
        .runs()
        .finish_run(id, &succeeded(&log), Timestamp(1), "t")
        .unwrap();
    let stored = store.runs().get_run(id).unwrap().unwrap().log;
    assert!(stored.len() <= 4096, "{}", stored.len());
    assert!(stored.len() > 3900, "keeps nearly the whole limit");
    assert!(stored.ends_with("line 1999\n"));
    assert!(stored.starts_with("[... "), "{}", &stored[..40]);
    let dropped = log.len() - (stored.len() - stored.find('\n').unwrap() - 1);
    assert!(stored.contains(&format!("[... {dropped} earlier bytes")));
}

#[test]
fn runs_left_unfinished_by_a_killed_daemon_are_marked_interrupted_at_start() {
    let (dir, store) = open_temp();
    let (running, queued, done) = {
        let runs = store.runs();
        let running = runs
            .create_run(&new_run("infra/gtm"), Timestamp(1_000), "s")
            .unwrap();
        runs.start_run(running, Timestamp(2_000)).unwrap();
        let queued = runs
            .create_run(&new_run("infra/node-pool"), Timestamp(3_000), "s")
            .unwrap();
        let done = runs
            .create_run(&new_run("infra/gtm"), Timestamp(0), "s")
            .unwrap();
        runs.finish_run(done, &succeeded("ok"), Timestamp(500), "s")
            .unwrap();
        drop(store);
        (running, queued, done)
        // Dropped without finishing: what kill -9 leaves.
    };
    let store = crate::tests::reopen(dir.path(), StoreOptions::default()).unwrap();
    let marked = store
        .runs()
        .interrupt_unfinished(Timestamp(9_000), "start")
        .unwrap();
    let ids: Vec<i64> = marked.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![running, queued]);
    let run = store.runs().get_run(running).unwrap().unwrap();
    assert_eq!(run.summary.status, RunStatus::Interrupted);
    assert_eq!(run.summary.finished_at, Some(Timestamp(9_000)));
    assert_eq!(run.summary.duration_ms, Some(7_000));
    assert!(
        run.log
            .contains("[interrupted: the control plane stopped while this run was running"),
        "{}",
        run.log
    );
    let queued_run = store.runs().get_run(queued).unwrap().unwrap();
    assert_eq!(queued_run.summary.status, RunStatus::Interrupted);
    assert_eq!(queued_run.summary.duration_ms, None);
    assert_eq!(
        store.runs().get_run(done).unwrap().unwrap().summary.status,
        RunStatus::Succeeded
    );
    // Once is enough: nothing left to mark, and an interrupted run is final.
    assert!(
        store
            .runs()
            .interrupt_unfinished(Timestamp(9_500), "start")
            .unwrap()
            .is_empty()
    );
    assert!(store.runs().start_run(running, Timestamp(9_600)).is_err());
    let audit = store
        .audit()
        .list(&crate::audit::AuditQuery {
            kind: Some(kinds::RUN_INTERRUPTED.into()),
            ..crate::audit::AuditQuery::default()
        })
        .unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(
        audit[0].entry.message,
        format!("run {running} was running when the control plane stopped: interrupted")
    );
}

#[test]
fn log_tails_cut_on_character_boundaries() {
    let log = "é".repeat(100);
    for limit in 60..80 {
        let tail = bounded_tail(&log, limit);
        assert!(tail.len() <= limit, "{limit}");
        assert!(tail.ends_with('é'));
    }
    assert!(matches!(bounded_tail("short", 100), Cow::Borrowed("short")));
}

crate::tests::on_postgres!(
    a_run_goes_from_queued_to_running_to_finished,
    invalid_transitions_are_refused_and_change_nothing,
    runs_list_newest_first_filtered_by_root,
    pages_of_runs_walk_every_run_once_with_filters,
    a_long_log_keeps_its_tail_within_the_limit,
    runs_left_unfinished_by_a_killed_daemon_are_marked_interrupted_at_start,
);
