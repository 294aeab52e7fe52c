//! End-to-end tests of `neutral serve --store postgres://…`: a real
//! PostgreSQL server started by the test on loopback (Debian's `postgresql`
//! binaries; skipped with a printed reason when they are missing, a failure
//! under `CI`), a real daemon, a real agent, and restarts.

use std::process::{Command, Stdio};
use std::time::Duration;

use neutral_e2e::bin;
use neutral_e2e::cluster::{Agent, Daemon, FAST_NO_PROBES, fast_repo, free_port, wait_for};
use neutral_store::pg_testing::{PgServer, start_or_skip};

fn audit_kinds(daemon: &Daemon, subject: &str) -> Vec<String> {
    let response = daemon.admin("GET", &format!("/audit?subject={subject}"), None);
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    let entries = body
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no entries in {body}"));
    entries
        .iter()
        .filter_map(|e| {
            e.get("entry")
                .unwrap_or(e)
                .get("kind")
                .and_then(|k| k.as_str())
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn nodes_and_the_audit_log_survive_a_daemon_restart_on_postgres() {
    let Some(server): Option<PgServer> = start_or_skip() else {
        return;
    };
    let url = server.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let data = dir.path().join("data");
    let mut args: Vec<&str> = FAST_NO_PROBES.to_vec();
    args.extend(["--store", &url]);
    let mut daemon = Daemon::start(&repo.bare, &data, &args);
    assert!(
        daemon.log_text().contains("store open"),
        "{}",
        daemon.log_text()
    );
    let mut agent = Agent::start(&daemon, dir.path(), "jp-a", "jp", "127.0.0.2");
    let id = registered(&agent, &daemon);
    wait_for("the node to be up", Duration::from_secs(20), || {
        daemon.node(&id).filter(|n| n["status"] == "up")
    });
    agent.stop();
    assert!(audit_kinds(&daemon, &id).contains(&"node.registered".to_owned()));

    // Nothing of the store is in --data: the SQLite file was never made.
    assert!(!data.join("neutral.sqlite3").exists());

    daemon.stop();
    // A clean stop: the store's connections close off the async runtime
    // (closing one on it panicked, and the panic in a destructor aborted).
    let stopped = daemon.exit_status();
    assert!(
        stopped.is_some_and(|s| s.success()),
        "{stopped:?}\n{}",
        daemon.log_text()
    );
    daemon.restart();
    let node = daemon.node(&id).expect("the node is still registered");
    assert_eq!(node["address"], "127.0.0.2", "{node}");
    assert_eq!(node["region"], "jp", "{node}");
    assert!(
        audit_kinds(&daemon, &id).contains(&"node.registered".to_owned()),
        "the audit log survived"
    );
    // The rows really are in PostgreSQL.
    let mut client = postgres_client(&server, &url);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM nodes WHERE id = $1", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    // And the agent comes back to the same identity.
    agent.restart();
    assert_eq!(agent.node_id(), id);
    wait_for("the node to be up again", Duration::from_secs(20), || {
        daemon.node(&id).filter(|n| n["status"] == "up")
    });
}

/// The agent's node id once it registered; the logs when it does not.
fn registered(agent: &Agent, daemon: &Daemon) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(id) = std::fs::read_to_string(&agent.state_file)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|doc| doc["node_id"].as_str().map(str::to_owned))
        {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not register within 20 s\nagent:\n{}\ndaemon:\n{}",
            agent.log_text(),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn postgres_client(server: &PgServer, url: &str) -> postgres::Client {
    let _ = server;
    url.parse::<postgres::Config>()
        .unwrap()
        .connect(postgres::NoTls)
        .unwrap()
}

/// `neutral serve` with this `--store` must fail at start: returns its
/// exit status and output.
fn serve_fails(store: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let mut child = Command::new(bin("neutral"))
        .arg("serve")
        .arg("--repo")
        .arg(&repo.bare)
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--dns-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--store")
        .arg(store)
        .env("NEUTRAL_JOIN_TOKEN", neutral_e2e::cluster::JOIN_TOKEN)
        .env("NEUTRAL_ADMIN_TOKEN", neutral_e2e::cluster::ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for("neutral serve to exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (status, text)
}

#[test]
fn an_unreachable_or_malformed_store_url_fails_at_start_naming_the_flag() {
    let dead = free_port();
    for (url, cause) in [
        (
            format!("postgres://neutral:hunter2@127.0.0.1:{dead}/neutral"),
            "cannot connect to PostgreSQL",
        ),
        (
            "mysql://neutral:hunter2@127.0.0.1/neutral".to_owned(),
            "must start with postgres://",
        ),
        (
            "postgres://neutral:hunter2@127.0.0.1:99999/neutral".to_owned(),
            "not a PostgreSQL URL",
        ),
        (
            "postgres://neutral:hunter2@127.0.0.1".to_owned(),
            "names no database",
        ),
    ] {
        let (status, text) = serve_fails(&url);
        assert!(!status.success(), "{url}: {text}");
        assert!(text.contains("--store"), "{url}: {text}");
        assert!(text.contains(cause), "{url}: {text}");
        assert!(
            !text.contains("hunter2"),
            "{url}: the password leaked: {text}"
        );
        assert!(!text.contains("panicked"), "{url}: {text}");
    }
}

/// A replica's `/status` leadership: (role, term, the leader it names).
fn leadership(daemon: &Daemon) -> (String, i64, Option<String>) {
    let status = daemon.get("/status").json();
    let view = &status["leadership"];
    (
        view["role"].as_str().unwrap_or_default().to_owned(),
        view["term"].as_i64().unwrap_or(0),
        view["leader"].as_str().map(str::to_owned),
    )
}

fn replica_id(daemon: &Daemon) -> String {
    daemon.get("/status").json()["leadership"]["replica"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn signal(daemon: &Daemon, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Waits until `daemon` leads and returns its term and how long it took.
fn wait_to_lead(daemon: &Daemon, within: Duration) -> (i64, Duration) {
    let started = std::time::Instant::now();
    let term = wait_for("a replica to lead", within, || {
        let (role, term, _) = leadership(daemon);
        (role == "leader").then_some(term)
    });
    (term, started.elapsed())
}

#[test]
fn replicas_elect_one_leader_and_a_killed_or_frozen_one_is_replaced_and_fenced() {
    let Some(server): Option<PgServer> = start_or_skip() else {
        return;
    };
    let url = server.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let mut args: Vec<&str> = FAST_NO_PROBES.to_vec();
    args.extend(["--store", &url, "--lease-ttl", "2s"]);
    let mut a = Daemon::start(&repo.bare, &dir.path().join("a"), &args);
    let (first_term, _) = wait_to_lead(&a, Duration::from_secs(10));
    let b = Daemon::start(&repo.bare, &dir.path().join("b"), &args);
    let a_id = replica_id(&a);
    // b follows a, names it, and serves the declarations a stored.
    wait_for("b to follow a", Duration::from_secs(10), || {
        let (role, term, leader) = leadership(&b);
        (role == "follower" && term == first_term && leader.as_deref() == Some(a_id.as_str()))
            .then_some(())
    });
    let commit = a.get("/status").json()["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("b to serve a's commit", Duration::from_secs(10), || {
        (b.get("/status").json()["commit"] == commit.as_str()).then_some(())
    });
    // Only the leader syncs; a follower says who does.
    let refused = b.admin("POST", "/sync", None);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"], "not_leader");
    assert!(refused.body.contains(&a_id), "{}", refused.body);

    // kill -9 the leader: b leads within the bound (TTL 2 s, renewals every
    // 2/3 s) and applies the next commit.
    a.kill9();
    let (second_term, took) = wait_to_lead(&b, Duration::from_secs(10));
    eprintln!("leader killed -> new leader in {took:?}");
    assert!(second_term > first_term);
    assert!(took <= Duration::from_secs(5), "failover took {took:?}");
    repo.write(
        "infra/node-pool/sg.tfvars",
        "region        = \"sg\"\ndesired_nodes = 2\n",
    );
    let next = repo.commit_push("sg to 2");
    wait_for(
        "the new leader to apply the next commit",
        Duration::from_secs(10),
        || (b.get("/status").json()["commit"] == next.as_str()).then_some(()),
    );

    // a comes back as a follower; then the leader b freezes past its lease:
    // a takes over, and b, thawed, steps down (its writes carry a dead term).
    a.restart();
    wait_for("a to follow b", Duration::from_secs(10), || {
        (leadership(&a).0 == "follower").then_some(())
    });
    signal(&b, "STOP");
    let (third_term, took) = wait_to_lead(&a, Duration::from_secs(10));
    eprintln!("leader frozen -> new leader in {took:?}");
    assert!(third_term > second_term);
    signal(&b, "CONT");
    wait_for(
        "the thawed replica to step down",
        Duration::from_secs(10),
        || {
            let (role, term, _) = leadership(&b);
            (role == "follower" && term >= third_term).then_some(())
        },
    );
    assert!(
        b.log_text().contains("no longer leading"),
        "{}",
        b.log_text()
    );
    assert_eq!(leadership(&a).0, "leader");
    drop(a);
    drop(b);
}

/// Two replicas on one fresh PostgreSQL database (lease 2 s): `a` leads,
/// `b` follows. `None` when PostgreSQL is missing (and `CI` is not set).
struct Replicas {
    _server: PgServer,
    /// The database's URL.
    url: String,
    dir: tempfile::TempDir,
    a: Daemon,
    b: Daemon,
}

fn two_replicas() -> Option<Replicas> {
    two_replicas_with(&[], &[])
}

/// [`two_replicas`], `b` started with `b_extra` more arguments and the
/// environment `b_env`.
fn two_replicas_with(b_extra: &[&str], b_env: &[(&str, &str)]) -> Option<Replicas> {
    let server = start_or_skip()?;
    let url = server.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let mut args: Vec<&str> = FAST_NO_PROBES.to_vec();
    args.extend(["--store", &url, "--lease-ttl", "2s"]);
    let a = Daemon::start(&repo.bare, &dir.path().join("a"), &args);
    wait_to_lead(&a, Duration::from_secs(10));
    args.extend(b_extra);
    let b = Daemon::start_with_env(&repo.bare, &dir.path().join("b"), &args, b_env);
    wait_for("b to follow", Duration::from_secs(10), || {
        (leadership(&b).0 == "follower").then_some(())
    });
    Some(Replicas {
        _server: server,
        url,
        dir,
        a,
        b,
    })
}

/// The node ids `app.example.com` answers with on `daemon`.
fn answer_ids(daemon: &Daemon) -> Vec<String> {
    let domain = daemon.get("/domains/app.example.com").json();
    let mut ids: Vec<String> = domain["answers"]
        .as_array()
        .map(|answers| {
            answers
                .iter()
                .filter_map(|a| a["node_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn a_node_heartbeating_to_a_follower_is_judged_by_the_leader_and_served_by_both() {
    let Some(Replicas {
        _server, dir, a, b, ..
    }) = two_replicas()
    else {
        return;
    };
    // The agent knows only the follower.
    let mut agent = Agent::start(&b, dir.path(), "jp-a", "jp", "127.0.0.2");
    let id = registered(&agent, &b);
    let started = std::time::Instant::now();
    wait_for(
        "the leader to judge the node up",
        Duration::from_secs(20),
        || a.node(&id).filter(|n| n["status"] == "up"),
    );
    wait_for(
        "both replicas to answer with it",
        Duration::from_secs(10),
        || (answer_ids(&a) == [id.clone()] && answer_ids(&b) == [id.clone()]).then_some(()),
    );
    eprintln!(
        "registered on the follower -> answered by both in {:?}",
        started.elapsed()
    );
    // The agent stops: the leader notices the missing heartbeats (timeout 2 s)
    // and the follower follows its verdict.
    agent.stop();
    wait_for(
        "the node down on both replicas",
        Duration::from_secs(20),
        || {
            (a.node(&id).is_some_and(|n| n["status"] == "down")
                && b.node(&id).is_some_and(|n| n["status"] == "down"))
            .then_some(())
        },
    );
    assert_eq!(
        leadership(&b).0,
        "follower",
        "the follower never decided anything itself"
    );
}

/// One plain heartbeat of node `id` with `token` to `daemon`: its status.
fn heartbeat_status(daemon: &Daemon, id: &str, token: &str) -> u16 {
    heartbeat_answer(daemon, id, token).status
}

#[test]
fn a_node_registered_again_or_deleted_through_one_replica_is_known_so_by_the_other() {
    let Some(Replicas {
        _server,
        dir: _dir,
        a,
        b,
        ..
    }) = two_replicas()
    else {
        return;
    };
    let (id, first_token) = a.register_node("jp", "127.0.0.2");
    wait_for(
        "the follower to learn the node",
        Duration::from_secs(5),
        || (heartbeat_status(&b, &id, &first_token) == 200).then_some(()),
    );
    // Registered again through the follower: a new token, which the leader
    // must accept (and the old one no longer).
    let body = serde_json::json!({
        "region": "jp", "address": "127.0.0.2", "node_id": id, "node_token": first_token,
    })
    .to_string();
    let again = neutral_e2e::http::request(
        b.api,
        "POST",
        "/nodes/register",
        Some(neutral_e2e::cluster::JOIN_TOKEN),
        Some(&body),
    )
    .unwrap();
    assert_eq!(again.status, 201, "{}", again.body);
    let doc = again.json();
    assert_eq!(doc["node_id"], id.as_str(), "the same identity");
    let second_token = doc["node_token"].as_str().unwrap().to_owned();
    assert_ne!(second_token, first_token);
    wait_for(
        "the leader to accept the new token",
        Duration::from_secs(5),
        || (heartbeat_status(&a, &id, &second_token) == 200).then_some(()),
    );
    assert_eq!(heartbeat_status(&a, &id, &first_token), 401);

    // Deleted through the follower: gone from the leader too, and its
    // heartbeats refused there.
    let deleted = b.admin("DELETE", &format!("/nodes/{id}"), None);
    assert!(deleted.status < 300, "{}", deleted.body);
    wait_for(
        "the leader to forget the node",
        Duration::from_secs(5),
        || a.node(&id).is_none().then_some(()),
    );
    assert_ne!(heartbeat_status(&a, &id, &second_token), 200);
}

/// One plain heartbeat of node `id` with `token` to `daemon`: the answer.
fn heartbeat_answer(daemon: &Daemon, id: &str, token: &str) -> neutral_e2e::http::Response {
    let body = serde_json::json!({ "node_id": id }).to_string();
    neutral_e2e::http::request(
        daemon.api,
        "POST",
        "/nodes/heartbeat",
        Some(token),
        Some(&body),
    )
    .unwrap()
}

/// A counter's value in `daemon`'s `/metrics`.
fn counter(daemon: &Daemon, name: &str) -> f64 {
    let scrape = daemon.admin("GET", "/metrics", None);
    scrape
        .body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Two replicas on one database, `a` leading, and a node registered through
/// `a` that `b` knows; `b`'s heartbeat writer is held while `hold` exists
/// (`b_extra` added to its arguments).
struct HeldWriter {
    _replicas: (PgServer, tempfile::TempDir),
    _hold_dir: tempfile::TempDir,
    a: Daemon,
    b: Daemon,
    hold: std::path::PathBuf,
    id: String,
    token: String,
}

impl HeldWriter {
    fn start(b_extra: &[&str]) -> Option<HeldWriter> {
        let hold_dir = tempfile::tempdir().unwrap();
        let hold = hold_dir.path().join("hold-writer");
        let Replicas {
            _server, dir, a, b, ..
        } = two_replicas_with(
            b_extra,
            &[(
                "NEUTRAL_FAULT_HOLD_HEARTBEAT_WRITER",
                hold.to_str().unwrap(),
            )],
        )?;
        let (id, token) = a.register_node("jp", "127.0.0.2");
        wait_for("b to know the node", Duration::from_secs(10), || {
            (heartbeat_status(&b, &id, &token) == 200).then_some(())
        });
        Some(HeldWriter {
            _replicas: (_server, dir),
            _hold_dir: hold_dir,
            a,
            b,
            hold,
            id,
            token,
        })
    }

    fn status_at(&self, daemon: &Daemon) -> u16 {
        heartbeat_status(daemon, &self.id, &self.token)
    }

    /// Heartbeats to `b`, `pause` apart, until one is refused with `503
    /// overloaded`: that answer, and how many were accepted before it.
    fn until_refused(&self, pause: Duration) -> (neutral_e2e::http::Response, usize) {
        let mut accepted = 0;
        let refused = wait_for("b to refuse a heartbeat", Duration::from_secs(10), || {
            let answer = heartbeat_answer(&self.b, &self.id, &self.token);
            if answer.status == 200 {
                accepted += 1;
                std::thread::sleep(pause);
                return None;
            }
            Some(answer)
        });
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert_eq!(refused.json()["error"], "overloaded", "{}", refused.body);
        assert!(counter(&self.b, "neutral_heartbeats_shed_total") >= 1.0);
        // The other replica takes the node's heartbeats.
        assert_eq!(self.status_at(&self.a), 200);
        (refused, accepted)
    }
}

#[test]
fn a_replica_whose_heartbeat_writer_is_behind_sends_nodes_to_another_but_a_lone_one_keeps_them() {
    // b's queue holds 4.
    let Some(mut held) = HeldWriter::start(&["--heartbeat-queue", "4"]) else {
        return;
    };
    std::fs::write(&held.hold, "").unwrap();
    // A batch the writer was gathering when the file appeared (it gathers
    // for up to 100 ms after its first heartbeat) is still written; the
    // next heartbeat it takes, it holds.
    std::thread::sleep(Duration::from_millis(400));
    let (refused, accepted) = held.until_refused(Duration::ZERO);
    assert!(
        refused
            .headers
            .iter()
            .any(|(name, value)| name.eq_ignore_ascii_case("retry-after") && value == "1"),
        "{:?}",
        refused.headers
    );
    // The heartbeat the held writer took and the queue (4) were accepted;
    // no more.
    assert!(
        accepted <= 5,
        "{accepted} heartbeats accepted into a full queue"
    );

    // Alone (a stopped, its verdicts withdrawn), b keeps heartbeats in
    // memory rather than refuse the only place a node can go.
    held.a.stop();
    wait_for(
        "b alone to accept heartbeats again",
        Duration::from_secs(15),
        || (held.status_at(&held.b) == 200).then_some(()),
    );
    // The writer released, everything flows to the store again.
    std::fs::remove_file(&held.hold).unwrap();
    for _ in 0..20 {
        assert_eq!(held.status_at(&held.b), 200);
    }
}

#[test]
fn a_replica_whose_heartbeats_would_reach_the_store_too_late_sends_nodes_to_another() {
    // b's queue is the default, 50,000: it never fills here.
    let Some(held) = HeldWriter::start(&[]) else {
        return;
    };
    std::fs::write(&held.hold, "").unwrap();
    let since = std::time::Instant::now();
    let (_, accepted) = held.until_refused(Duration::from_millis(50));
    // Refused once its oldest unwritten heartbeat is half the heartbeat
    // timeout (2 s) old, not when its queue is full.
    let waited = since.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "refused only after {waited:?}"
    );
    assert!(accepted < 200, "{accepted} heartbeats accepted");
    // a judges silence no later than what b has stored: behind now by
    // more and more, but never by more than the heartbeat timeout (2 s)
    // and its own read's age.
    let judged_behind = |daemon: &Daemon| counter(daemon, "neutral_health_judged_behind_seconds");
    let behind = wait_for(
        "a to judge behind b's held writer",
        Duration::from_secs(5),
        || Some(judged_behind(&held.a)).filter(|behind| *behind >= 1.0),
    );
    assert!(behind <= 3.0, "a judges {behind} s behind now");

    // The writer released, b takes heartbeats again, and a judges up to
    // about now again.
    std::fs::remove_file(&held.hold).unwrap();
    wait_for(
        "b to accept heartbeats again",
        Duration::from_secs(10),
        || (held.status_at(&held.b) == 200).then_some(()),
    );
    wait_for(
        "a to judge up to about now again",
        Duration::from_secs(10),
        || (judged_behind(&held.a) < 1.0).then_some(()),
    );
    // The held batch was seconds behind when written: only the node's
    // newest heartbeats of it were.
    assert!(accepted >= 3, "{accepted} heartbeats accepted");
    let coalesced = counter(&held.b, "neutral_heartbeats_coalesced_total");
    assert!(
        coalesced >= 1.0 && coalesced <= accepted as f64,
        "{coalesced} of {accepted} heartbeats coalesced"
    );
}

/// The replicas whose presence the store dates within the last 3 s (the
/// daemon's window for counting a replica live).
fn present_replicas(client: &mut postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT replica FROM vantage_points
             WHERE seen_at >= (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - 3000
             ORDER BY replica",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn replicas_stay_live_to_each_other_while_the_stores_writes_wait_behind_a_heartbeat_batch() {
    let arm_dir = tempfile::tempdir().unwrap();
    let arm = arm_dir.path().join("pause-inside-heartbeats");
    let Some(Replicas {
        _server,
        url,
        dir: _dir,
        a,
        mut b,
    }) = two_replicas_with(
        &[],
        &[(
            "NEUTRAL_FAULT_PAUSE_INSIDE_HEARTBEATS",
            arm.to_str().unwrap(),
        )],
    )
    else {
        return;
    };
    let (id, token) = a.register_node("jp", "127.0.0.2");
    wait_for("b to know the node", Duration::from_secs(10), || {
        (heartbeat_status(&b, &id, &token) == 200).then_some(())
    });
    let mut client = postgres_client(&_server, &url);
    let both = present_replicas(&mut client);
    assert_eq!(both.len(), 2, "{both:?}");

    // b's next heartbeat batch stops inside its transaction, holding the
    // store's write lock: every serialized write of both replicas (their
    // verdict exchanges among them) waits behind it, as behind a long batch
    // under load.
    std::fs::write(&arm, "armed").unwrap();
    assert_eq!(heartbeat_status(&b, &id, &token), 200);
    let mut reached = arm.as_os_str().to_owned();
    reached.push(".reached");
    wait_for(
        "b's batch to stop inside its transaction",
        Duration::from_secs(10),
        || std::path::Path::new(&reached).exists().then_some(()),
    );
    std::fs::remove_file(&arm).unwrap();
    // Twice the window later, both are still present: each renews its
    // presence beside the queue, so neither judges without the other.
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(present_replicas(&mut client), both);
    }
    assert!(
        !a.log_text()
            .contains("cannot renew this replica's presence"),
        "{}",
        a.log_text()
    );
    // Stuck for longer than 10 s, an exchange no longer keeps its replica
    // present: its last verdicts would count however stale.
    wait_for(
        "the stuck replicas' presence to lapse",
        Duration::from_secs(15),
        || present_replicas(&mut client).is_empty().then_some(()),
    );
    // The batch's transaction ends with b; a's exchange gets through and
    // renews its presence again.
    b.kill9();
    let a_alone = wait_for("a present again", Duration::from_secs(15), || {
        Some(present_replicas(&mut client)).filter(|present| present.len() == 1)
    });
    assert!(both.contains(&a_alone[0]), "{a_alone:?} of {both:?}");
}

#[test]
fn an_agent_moves_to_another_replica_when_its_own_dies_and_its_node_stays_up() {
    let Some(Replicas {
        _server,
        dir,
        a,
        mut b,
        ..
    }) = two_replicas()
    else {
        return;
    };
    // The agent talks to the follower first, the leader as its replica.
    let agent = agent_of_both(&b, &a, dir.path(), "jp-a", "127.0.0.2");
    let id = registered(&agent, &b);
    wait_for("the node up", Duration::from_secs(20), || {
        a.node(&id).filter(|n| n["status"] == "up")
    });
    b.kill9();
    // Heartbeats time out after 2 s: the node must stay up on the leader
    // through the move, and keep heartbeating there.
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        let node = a.node(&id).unwrap();
        seen.push(node["status"].as_str().unwrap_or_default().to_owned());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen.iter().all(|s| s == "up"), "{seen:?}");
    assert!(
        agent.log_text().contains("moving to the next"),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        std::fs::read_to_string(&agent.state_file)
            .unwrap()
            .matches(&id)
            .count(),
        1,
        "the same identity"
    );
}

/// An agent of region jp on `ip` that talks to `first` and moves to
/// `replica` when `first` does not answer.
fn agent_of_both(
    first: &Daemon,
    replica: &Daemon,
    dir: &std::path::Path,
    name: &str,
    ip: &str,
) -> Agent {
    let replica = format!("http://{}", replica.api);
    Agent::start_with(
        &format!("http://{}", first.api),
        dir,
        name,
        "jp",
        ip,
        &["--control-plane-replica", &replica],
    )
}

/// One heartbeat of node `node` (`{"node_id", "node_token"}`) to `daemon`,
/// with a release result when given; returns the answer.
fn heartbeat(
    daemon: &Daemon,
    node: &serde_json::Value,
    release: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut body = serde_json::json!({ "node_id": node["node_id"] });
    if let Some(release) = release {
        body["release"] = release;
    }
    let answer = neutral_e2e::http::request(
        daemon.api,
        "POST",
        "/nodes/heartbeat",
        node["node_token"].as_str(),
        Some(&body.to_string()),
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

#[test]
fn a_release_asked_of_one_replica_reaches_its_node_through_another_and_outlives_a_restart() {
    let Some(Replicas {
        _server,
        dir: _dir,
        mut a,
        b,
        ..
    }) = two_replicas()
    else {
        return;
    };
    let registered = neutral_e2e::http::request(
        b.api,
        "POST",
        "/nodes/register",
        Some(neutral_e2e::cluster::JOIN_TOKEN),
        Some(r#"{"region": "jp", "address": "127.0.0.9"}"#),
    )
    .unwrap();
    assert_eq!(registered.status, 201, "{}", registered.body);
    let node = registered.json();
    let id = node["node_id"].as_str().unwrap().to_owned();
    wait_for("a to know the node", Duration::from_secs(10), || {
        a.node(&id)
    });

    // Asked of a; the node heartbeats only to b and finds the order there.
    let asked = a.admin(
        "POST",
        &format!("/nodes/{id}/release"),
        Some(r#"{"image": "registry.example/web:v2"}"#),
    );
    assert_eq!(asked.status, 202, "{}", asked.body);
    let release = asked.json()["id"].as_str().unwrap().to_owned();
    wait_for(
        "the order in b's heartbeat answer",
        Duration::from_secs(10),
        || {
            let answer = heartbeat(&b, &node, None);
            (answer["release"]["id"] == release.as_str()).then_some(())
        },
    );
    // The agent reports to b; a shows the result.
    let result =
        serde_json::json!({ "id": release, "ok": true, "message": "released web:v2 on green" });
    let answer = heartbeat(&b, &node, Some(result));
    assert!(answer["release"].is_null(), "{answer}");
    wait_for("a to show it released", Duration::from_secs(10), || {
        let view = a.get(&format!("/nodes/{id}/release")).json();
        (view["state"] == "released").then_some(())
    });
    // A restart reads it back from the store.
    a.stop();
    a.restart();
    let view = a.get(&format!("/nodes/{id}/release")).json();
    assert_eq!(view["id"], release.as_str(), "{view}");
    assert_eq!(view["state"], "released", "{view}");
    assert_eq!(view["message"], "released web:v2 on green", "{view}");
}

#[test]
fn zones_written_through_one_replica_are_served_by_both_and_no_patch_is_lost() {
    use hickory_proto::rr::RecordType;
    use neutral_e2e::dns;
    let Some(Replicas {
        _server,
        dir: _dir,
        a,
        b,
        ..
    }) = two_replicas()
    else {
        return;
    };
    let zone = r#"{"name": "example.com.", "kind": "Native", "nameservers": ["ns1.example.com."]}"#;
    let created = b.admin("POST", "/dns/zones", Some(zone));
    assert_eq!(created.status, 201, "{}", created.body);
    // The zone exists in the store: creating it through the other replica
    // is a conflict, whether or not that replica serves it yet.
    let again = a.admin("POST", "/dns/zones", Some(zone));
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["error"], "zone_exists", "{}", again.body);
    // One record through each replica, back to back: the second replica
    // may still serve the zone before the first patch, and must not lose it.
    let record = |name: &str, ip: &str| {
        format!(
            r#"{{"rrsets": [{{"name": "{name}.example.com.", "type": "A", "ttl": 60, "changetype": "REPLACE", "records": [{{"content": "{ip}", "disabled": false}}]}}]}}"#
        )
    };
    let patched = a.admin(
        "PATCH",
        "/dns/zones/example.com.",
        Some(&record("x", "192.0.2.1")),
    );
    assert_eq!(patched.status, 204, "{}", patched.body);
    let patched = b.admin(
        "PATCH",
        "/dns/zones/example.com.",
        Some(&record("y", "192.0.2.2")),
    );
    assert_eq!(patched.status, 204, "{}", patched.body);
    for daemon in [&a, &b] {
        for (name, ip) in [("x", "192.0.2.1"), ("y", "192.0.2.2")] {
            let fqdn = format!("{name}.example.com.");
            wait_for(
                &format!("{fqdn} answered by {}", daemon.api),
                Duration::from_secs(10),
                || {
                    dns::udp(daemon.dns, &fqdn, RecordType::A)
                        .ok()
                        .filter(|answer| answer.addresses() == [ip])
                },
            );
        }
    }
    // Deleted through one replica, gone from the other's answers.
    let deleted = a.admin("DELETE", "/dns/zones/example.com.", None);
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    wait_for("the zone gone from b", Duration::from_secs(10), || {
        (b.admin("GET", "/dns/zones/example.com.", None).status == 404).then_some(())
    });
}

/// An HTTP gate between Terraform's provider and the replicas: every request
/// is forwarded (one per connection, `Connection: close`) to the replica it
/// is pointed at, except that writes (`PATCH`, `POST`, `PUT`, `DELETE`) are
/// held while it is closed — a Terraform apply then hangs exactly at its
/// first write. Opening it drops what it held (those requests belong to the
/// run that was killed) and lets later ones through.
struct Gate {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<(std::sync::Mutex<GateState>, std::sync::Condvar)>,
}

#[derive(Default)]
struct GateState {
    open: bool,
    target: Option<std::net::SocketAddr>,
    held: usize,
    /// Bumped when opened: held requests of an earlier epoch are dropped.
    epoch: u64,
    /// The answers to held writes that were let through, as received.
    released_answers: Vec<String>,
}

impl Gate {
    fn start() -> Gate {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new((
            std::sync::Mutex::new(GateState::default()),
            std::sync::Condvar::new(),
        ));
        let shared = std::sync::Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = std::sync::Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = Gate::serve(stream, &shared);
                });
            }
        });
        Gate { addr, state }
    }

    fn serve(
        mut client: std::net::TcpStream,
        shared: &(std::sync::Mutex<GateState>, std::sync::Condvar),
    ) -> std::io::Result<()> {
        use std::io::{Read, Write};
        client.set_read_timeout(Some(Duration::from_secs(30)))?;
        // The request: headers, then Content-Length bytes of body.
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = client.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            request.extend_from_slice(&buf[..n]);
            if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&request[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while request.len() < head_end + length {
            let n = client.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            request.extend_from_slice(&buf[..n]);
        }
        let write = ["PATCH ", "POST ", "PUT ", "DELETE "]
            .iter()
            .any(|m| head.starts_with(m));
        let target = {
            let (lock, wake) = shared;
            let mut state = lock.lock().unwrap();
            while state.target.is_none() {
                state = wake.wait(state).unwrap();
            }
            if write && !state.open {
                state.held += 1;
                let epoch = state.epoch;
                while !state.open {
                    state = wake.wait(state).unwrap();
                }
                if state.epoch != epoch {
                    // Held for a run that is gone: dropped, never forwarded.
                    return Ok(());
                }
                (state.target, true)
            } else {
                (state.target, false)
            }
        };
        let (target, was_held) = target;
        let Some(target) = target else { return Ok(()) };
        // Forwarded with `Connection: close`, so the answer closes too.
        let head = head
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\r\n");
        let mut upstream = std::net::TcpStream::connect(target)?;
        upstream.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())?;
        upstream.write_all(&request[head_end..])?;
        let mut answer = Vec::new();
        upstream.read_to_end(&mut answer)?;
        if was_held {
            let (lock, _) = shared;
            lock.lock()
                .unwrap()
                .released_answers
                .push(String::from_utf8_lossy(&answer).into_owned());
        }
        client.write_all(&answer)?;
        Ok(())
    }

    /// Where requests go (writes still held while closed).
    fn point_to(&self, target: std::net::SocketAddr) {
        let (lock, wake) = &*self.state;
        lock.lock().unwrap().target = Some(target);
        wake.notify_all();
    }

    fn held(&self) -> usize {
        self.state.0.lock().unwrap().held
    }

    /// Points the gate at `target` and lets writes pass, the held ones too.
    fn release_to(&self, target: std::net::SocketAddr) {
        let (lock, wake) = &*self.state;
        let mut state = lock.lock().unwrap();
        state.target = Some(target);
        state.open = true;
        wake.notify_all();
    }

    /// The answers to the held writes [`Gate::release_to`] let through.
    fn released_answers(&self) -> Vec<String> {
        self.state.0.lock().unwrap().released_answers.clone()
    }

    /// Points the gate at `target`, drops what it held and lets writes pass.
    fn open_to(&self, target: std::net::SocketAddr) {
        let (lock, wake) = &*self.state;
        let mut state = lock.lock().unwrap();
        state.target = Some(target);
        state.open = true;
        state.epoch += 1;
        wake.notify_all();
    }
}

#[test]
fn a_leader_frozen_mid_apply_and_woken_has_its_runs_writes_refused_by_the_fence() {
    // a's run applies; its first write (the run's token, minted under a's
    // term) is held at the gate.
    let Some(ApplyingPair {
        _server,
        dir: _dir,
        gate,
        a,
        b,
        term,
        _agent,
        ..
    }) = ApplyingPair::start(
        "a_leader_frozen_mid_apply_and_woken_has_its_runs_writes_refused_by_the_fence",
    )
    else {
        return;
    };
    // a freezes past its lease; b takes it over under a new term.
    signal(&a, "STOP");
    let (new_term, _) = wait_to_lead(&b, Duration::from_secs(15));
    assert!(new_term > term, "{new_term} after {term}");
    // a wakes, and its run's held write reaches its API at once, before a
    // has noticed: the fence refuses it.
    signal(&a, "CONT");
    gate.release_to(a.api);
    let answer = wait_for("the held write's answer", Duration::from_secs(15), || {
        gate.released_answers().into_iter().next()
    });
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(
        answer.contains("\"fenced\"") && answer.contains(&format!("term {term}")),
        "{answer}"
    );
    wait_for("a to follow", Duration::from_secs(10), || {
        (leadership(&a).0 == "follower").then_some(())
    });
}

fn gtm_runs(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .admin("GET", "/runs?root=infra/gtm&limit=100", None)
        .json()["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Two replicas on PostgreSQL running Terraform with its state there too
/// (`a` leading under `term`, `b` following), the GTM root's provider
/// pointed at a [`Gate`] in front of `a`, the record's zone created and a
/// node up: `a`'s run has planned and its apply's first write is held.
/// `None` when Terraform or PostgreSQL is missing (and `CI` is not set).
struct ApplyingPair {
    _server: PgServer,
    dir: tempfile::TempDir,
    gate: Gate,
    a: Daemon,
    b: Daemon,
    term: i64,
    node: String,
    _agent: Agent,
    repo: neutral_e2e::cluster::Repo,
}

impl ApplyingPair {
    fn start(test: &str) -> Option<ApplyingPair> {
        neutral_e2e::services::terraform_or_skip(test)?;
        let server = start_or_skip()?;
        let store = server.create_database().unwrap();
        let state = format!("{}?sslmode=disable", server.create_database().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let gate = Gate::start();
        let mut files = neutral_e2e::cluster::fast_config(free_port());
        files.retain(|(path, _)| !path.starts_with("infra/node-pool"));
        let root = neutral_e2e::cluster::gtm_root_at(gate.addr);
        files.push(("infra/gtm/main.tf", root));
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let repo = neutral_e2e::cluster::Repo::create(dir.path(), &refs);
        let replica = |name: &str| {
            let mut args: Vec<&str> = FAST_NO_PROBES.to_vec();
            args.extend([
                "--store",
                &store,
                "--lease-ttl",
                "2s",
                "--replica-id",
                name,
                "--run-terraform",
                "--terraform-state",
                &state,
                "--drift-interval",
                "1h",
            ]);
            Daemon::start(&repo.bare, &dir.path().join(name), &args)
        };
        let a = replica("a");
        gate.point_to(a.api);
        let (term, _) = wait_to_lead(&a, Duration::from_secs(10));
        let b = replica("b");
        // The record's zone, served by both replicas.
        let zone = a.admin(
            "POST",
            "/dns/zones",
            Some(r#"{"name": "example.com.", "kind": "Native", "nameservers": ["ns1.example.com."]}"#),
        );
        assert_eq!(zone.status, 201, "{}", zone.body);
        // A node: its record is what the health-triggered run writes (the
        // first run, with no node up, writes no record).
        let agent = agent_of_both(&a, &b, dir.path(), "jp-a", "127.0.0.2");
        let node = registered(&agent, &a);
        // A run plans and starts applying; its first write is held.
        wait_for("the apply's first write", Duration::from_secs(90), || {
            (gate.held() > 0).then_some(())
        });
        Some(ApplyingPair {
            _server: server,
            dir,
            gate,
            a,
            b,
            term,
            node,
            _agent: agent,
            repo,
        })
    }
}

#[test]
fn a_leader_killed_during_a_terraform_apply_is_replaced_and_the_change_applied_once() {
    let Some(ApplyingPair {
        _server,
        dir,
        gate,
        mut a,
        b,
        node,
        _agent,
        repo,
        ..
    }) = ApplyingPair::start(
        "a_leader_killed_during_a_terraform_apply_is_replaced_and_the_change_applied_once",
    )
    else {
        return;
    };
    let running: Vec<serde_json::Value> = gtm_runs(&a)
        .into_iter()
        .filter(|r| r["status"] == "running")
        .collect();
    assert_eq!(running.len(), 1, "{running:?}");
    let killed_run = running[0]["id"].as_i64().unwrap();
    a.kill9();
    let killed = std::time::Instant::now();
    // Terraform died with the leader; what it started may not have.
    for (pid, _) in neutral_e2e::cluster::processes_in(&dir.path().join("a-terraform")) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    gate.open_to(b.api);

    wait_to_lead(&b, Duration::from_secs(10));
    eprintln!(
        "leader killed mid-apply -> b leads in {:?}",
        killed.elapsed()
    );
    let later = |b: &Daemon| -> Vec<serde_json::Value> {
        gtm_runs(b)
            .into_iter()
            .filter(|r| r["id"].as_i64().is_some_and(|id| id > killed_run))
            .collect()
    };
    let applied = wait_for("b's run of the root", Duration::from_secs(120), || {
        later(&b)
            .into_iter()
            .rev()
            .find(|r| matches!(r["status"].as_str(), Some("succeeded" | "failed")))
    });
    let log = b
        .admin("GET", &format!("/runs/{}", applied["id"]), None)
        .json()["log"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The killed run never wrote (its write was held and dropped): the new
    // leader found the state lock free, and made the change itself, once.
    assert_eq!(applied["status"], "succeeded", "{applied}\n{log}");
    // (The record's create, or its update when a first run created it
    // before the node was up: one change either way.)
    let made = applied["adds"].as_i64().unwrap_or(0) + applied["changes"].as_i64().unwrap_or(0);
    assert_eq!(made, 1, "{applied}\n{log}");
    eprintln!(
        "leader killed mid-apply -> the change applied by the new leader {:?} later",
        killed.elapsed()
    );
    let old = gtm_runs(&b)
        .into_iter()
        .find(|r| r["id"] == killed_run)
        .unwrap();
    assert_eq!(old["status"], "interrupted", "{old}");
    assert!(
        later(&b).iter().all(|r| r["status"] != "failed"),
        "{:?}",
        later(&b)
    );
    // The record is served: the node's address, from the new leader's DNS.
    wait_for("the record in b's DNS", Duration::from_secs(10), || {
        neutral_e2e::dns::udp(b.dns, "app.example.com.", hickory_proto::rr::RecordType::A)
            .ok()
            .filter(|answer| answer.addresses() == ["127.0.0.2"])
    });
    assert!(b.node(&node).is_some_and(|n| n["status"] == "up"));

    // And nothing left to do: the next commit's plan of the root finds no
    // change.
    repo.write("infra/gtm/note.tf", "# planned again after the takeover\n");
    let sha = repo.commit_push("touch the gtm root");
    let again = wait_for("the follow-up plan", Duration::from_secs(60), || {
        gtm_runs(&b).into_iter().find(|r| {
            r["commit"] == sha.as_str()
                && matches!(r["status"].as_str(), Some("succeeded" | "failed"))
        })
    });
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["adds"], 0, "{again}");
    assert_eq!(again["changes"], 0, "{again}");
}

/// Two replicas on PostgreSQL following a repository whose jp pool (one
/// node) scales out within a second of high CPU: `a` leads with the test
/// fault point `fault` armed (its arm file exists), `b` follows, and one jp
/// agent that knows both is up.
struct AutoscalePair {
    _server: PgServer,
    dir: tempfile::TempDir,
    repo: neutral_e2e::cluster::Repo,
    a: Daemon,
    b: Daemon,
    agent: Agent,
    /// `a`'s term.
    term: i64,
    arm: std::path::PathBuf,
}

fn autoscale_pair(fault: &str) -> Option<AutoscalePair> {
    let server = start_or_skip()?;
    let store = server.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = neutral_e2e::cluster::fast_config(free_port());
    files.retain(|(path, _)| *path != "infra/node-pool/jp.tfvars");
    files.push((
        "infra/node-pool/jp.tfvars",
        "region        = \"jp\"\ndesired_nodes = 1\n".to_owned(),
    ));
    files.push((
        "platform-config/autoscale/jp.yaml",
        "region: jp\nscale_up: { cpu_above: 0.75, for: 1s, step: 1 }\nscale_down: { cpu_below: 0.05, for: 60s, step: 1 }\ncooldown: 1s\n".to_owned(),
    ));
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = neutral_e2e::cluster::Repo::create(dir.path(), &refs);
    let args: Vec<&str> = vec![
        "--heartbeat-interval",
        "300ms",
        "--heartbeat-timeout",
        "3s",
        "--sync-interval",
        "1s",
        "--autoscale-interval",
        "500ms",
        "--no-probes",
        "--store",
        &store,
        "--lease-ttl",
        "2s",
    ];
    let arm = dir.path().join("fault-arm");
    std::fs::write(&arm, "").unwrap();
    let arm_env = arm.display().to_string();
    let a = Daemon::start_with_env(
        &repo.bare,
        &dir.path().join("a"),
        &args,
        &[(fault, arm_env.as_str())],
    );
    let (term, _) = wait_to_lead(&a, Duration::from_secs(10));
    let b = Daemon::start(&repo.bare, &dir.path().join("b"), &args);
    let agent = agent_of_both(&a, &b, dir.path(), "jp-1", "127.0.0.2");
    let node = registered(&agent, &a);
    wait_for("jp-1 up", Duration::from_secs(20), || {
        a.node(&node).filter(|n| n["status"] == "up")
    });
    Some(AutoscalePair {
        _server: server,
        dir,
        repo,
        a,
        b,
        agent,
        term,
        arm,
    })
}

/// The autoscaler's commit subjects for jp on the bare repository, newest
/// first.
fn autoscale_commits(bare: &std::path::Path) -> Vec<String> {
    subjects(bare)
        .into_iter()
        .filter(|s| s.starts_with("autoscale(jp)"))
        .collect()
}

#[test]
fn a_leader_killed_right_after_an_autoscaler_push_is_not_followed_by_a_second_scale_out() {
    // The leader stops between its push and what it records after it.
    let Some(AutoscalePair {
        _server,
        dir: _dir,
        repo,
        mut a,
        b,
        agent,
        ..
    }) = autoscale_pair("NEUTRAL_FAULT_PAUSE_AFTER_AUTOSCALE_PUSH")
    else {
        return;
    };
    let autoscale_commits = || autoscale_commits(&repo.bare);

    // CPU stays high: the leader pushes 1 -> 2, then stops at the fault point.
    agent.set_metrics(0.9, 5.0, 0.0);
    wait_for(
        "the leader's push, paused after",
        Duration::from_secs(30),
        || {
            a.log_text()
                .contains("fault point: pausing after an autoscale push")
                .then_some(())
        },
    );
    assert_eq!(autoscale_commits().len(), 1, "{:?}", autoscale_commits());
    a.kill9();
    wait_to_lead(&b, Duration::from_secs(10));
    // CPU is still high and the new node never comes, but the action the
    // killed leader recorded before its push is in flight: no second one.
    std::thread::sleep(Duration::from_secs(6));
    let commits = autoscale_commits();
    assert_eq!(
        commits.len(),
        1,
        "the new leader scaled out again: {commits:?}\n{}",
        b.log_text()
    );
    assert!(
        commits[0].starts_with("autoscale(jp): 1 -> 2"),
        "{commits:?}"
    );
    wait_for("b serving desired_nodes 2", Duration::from_secs(10), || {
        let regions = b.get("/regions").json();
        regions
            .as_array()?
            .iter()
            .any(|r| r["name"] == "jp" && r["desired_nodes"] == 2)
            .then_some(())
    });
    drop(agent);
}

/// The status page of a replica shows what each vantage point sees of a
/// node (`vantage_points`): both replicas see it ready while it heartbeats,
/// and both see it not ready once its agent stops.
#[test]
fn the_status_page_shows_each_replicas_view_of_a_node() {
    let Some(browser) = neutral_e2e::browser::Browser::start() else {
        return;
    };
    let Some(Replicas {
        _server, dir, a, b, ..
    }) = two_replicas()
    else {
        return;
    };
    let mut agent = Agent::start(&a, dir.path(), "jp-a", "jp", "127.0.0.2");
    let id = registered(&agent, &a);
    let (ra, rb) = (replica_id(&a), replica_id(&b));
    let mut both = [ra.clone(), rb.clone()];
    both.sort();
    let shown = |ready: bool| {
        both.iter()
            .map(|r| format!("{r}={ready}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    browser.goto(&format!("http://{}/ui", a.api));
    browser.type_into("#token", neutral_e2e::cluster::ADMIN_TOKEN);
    browser.click("#login-form button[type=submit]");
    // The node's row lists each replica with its verdict.
    const SEEN: &str = "return Array.from(document.querySelectorAll('tr[data-node=\"' + arguments[0] + '\"] [data-replica]')).map(e => e.getAttribute('data-replica') + '=' + e.getAttribute('data-ready')).sort().join(',') === arguments[1];";
    browser.wait_true(
        "both replicas seeing the node ready on the page",
        Duration::from_secs(30),
        SEEN,
        &serde_json::json!([id, shown(true)]),
    );
    agent.stop();
    browser.wait_true(
        "both replicas seeing the node not ready on the page",
        Duration::from_secs(30),
        SEEN,
        &serde_json::json!([id, shown(false)]),
    );
    let text = browser.eval(
        "return document.querySelector('tr[data-node=\"' + arguments[0] + '\"] .vantage-points').innerText;",
        &serde_json::json!([id]),
    );
    assert!(
        text.as_str()
            .is_some_and(|t| t.starts_with("Seen by") && t.contains(&ra) && t.contains(&rb)),
        "{text}"
    );
}

/// Installs the server-side hooks on `bare`, checking leader terms (and
/// live health) against `control_plane` with the viewer token.
fn install_hooks_checking(bare: &std::path::Path, control_plane: &Daemon, dir: &std::path::Path) {
    let token_file = dir.join("viewer-token");
    std::fs::write(&token_file, neutral_e2e::cluster::VIEWER_TOKEN).unwrap();
    let out = Command::new(bin("neutral"))
        .args(["hooks", "install", "--repo"])
        .arg(bare)
        .arg("--control-plane")
        .arg(format!("http://{}", control_plane.api))
        .arg("--read-token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hooks install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `<kind>: <message>` of the audit entries about `subject`, oldest first.
fn audit_messages(daemon: &Daemon, subject: &str) -> Vec<String> {
    let response = daemon.admin("GET", &format!("/audit?subject={subject}"), None);
    assert_eq!(response.status, 200, "{}", response.body);
    response
        .json()
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let e = e.get("entry").unwrap_or(e);
                    format!(
                        "{}: {}",
                        e["kind"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The commit subjects on the bare repository's `main`, newest first.
fn subjects(bare: &std::path::Path) -> Vec<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["log", "--format=%s", "main"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The remote's pre-receive hook refuses a push that claims a leader term
/// the lease no longer holds (a deposed leader's late push), whichever
/// replica the hook asks; pushes claiming no term are judged as before.
#[test]
fn the_remote_refuses_a_push_whose_leader_term_no_longer_holds_the_lease() {
    let Some(Replicas {
        _server,
        dir,
        mut a,
        b,
        ..
    }) = two_replicas()
    else {
        return;
    };
    let repo = neutral_e2e::cluster::Repo {
        bare: dir.path().join("repo.git"),
        work: dir.path().join("work"),
    };
    install_hooks_checking(&repo.bare, &b, dir.path());
    let (term, _) = wait_to_lead(&a, Duration::from_secs(10));
    let mut n = 0;
    let mut push = |options: &[String]| -> (bool, String) {
        n += 1;
        repo.write("README.md", &format!("change {n}\n"));
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(&repo.work)
                .args(args)
                .output()
                .unwrap()
        };
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", &format!("change {n}")]);
        let mut args = vec!["push".to_owned()];
        for option in options {
            args.push(format!("--push-option={option}"));
        }
        args.extend(["origin".to_owned(), "main".to_owned()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = git(&refs);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            git(&["reset", "-q", "--hard", "origin/main"]);
        }
        (out.status.success(), text)
    };
    let claim = |term: i64| vec![format!("neutral-leader-term={term}")];

    let (ok, text) = push(&claim(term));
    assert!(ok, "the leader's own term is refused:\n{text}");
    assert!(
        text.contains(&format!("leader term {term} holds the lease")),
        "{text}"
    );
    let (ok, text) = push(&claim(term + 1));
    assert!(!ok, "a term nobody holds was accepted:\n{text}");
    assert!(
        text.contains(&format!("the leader lease is at term {term}")),
        "{text}"
    );
    let (ok, text) = push(&["neutral-leader-term=soon".to_owned()]);
    assert!(!ok && text.contains("positive integer"), "{text}");

    // a dies; b leads under a new term; a's term is now a deposed one.
    a.kill9();
    let (new_term, _) = wait_to_lead(&b, Duration::from_secs(10));
    assert!(new_term > term, "{new_term} after {term}");
    let before = subjects(&repo.bare);
    let (ok, text) = push(&claim(term));
    assert!(!ok, "a deposed leader's push landed:\n{text}");
    assert!(text.contains("a deposed leader's push"), "{text}");
    assert_eq!(subjects(&repo.bare), before, "nothing landed");
    let (ok, text) = push(&claim(new_term));
    assert!(ok, "{text}");
    let (ok, text) = push(&[]);
    assert!(ok, "a push without a claim is judged as before:\n{text}");
    assert_eq!(subjects(&repo.bare).len(), before.len() + 2);
}

/// A leader frozen between recording an autoscale action and pushing it
/// lands nothing when it wakes after another replica took over: the new
/// leader finds the recorded action absent from Git and abandons it at once
/// (not after the in-flight timeout), and the old leader's late push is
/// refused (by its own check of its term, or by the remote's hook when it
/// wakes in between) and never reaches Git.
#[test]
fn a_leader_frozen_before_its_autoscaler_push_lands_nothing_and_its_action_is_abandoned() {
    let Some(AutoscalePair {
        _server,
        dir,
        repo,
        a,
        b,
        agent,
        term,
        arm,
    }) = autoscale_pair("NEUTRAL_FAULT_PAUSE_BEFORE_AUTOSCALE_PUSH")
    else {
        return;
    };
    install_hooks_checking(&repo.bare, &b, dir.path());
    let autoscale_commits = || autoscale_commits(&repo.bare);

    // CPU high: a records 1 -> 2 in flight and stops before its push.
    agent.set_metrics(0.9, 5.0, 0.0);
    wait_for(
        "a's intent, paused before its push",
        Duration::from_secs(30),
        || {
            a.log_text()
                .contains("fault point: pausing before an autoscale push")
                .then_some(())
        },
    );
    let recorded = audit_messages(&b, "jp");
    assert!(
        recorded.iter().any(|m| m
            .starts_with("autoscale.action: region jp: 1 -> 2 nodes (in flight)")
            && m.ends_with(": committing")),
        "{recorded:?}"
    );
    // CPU back to normal, so the new leader has nothing to decide itself.
    agent.set_metrics(0.3, 5.0, 0.0);
    std::thread::sleep(Duration::from_secs(2));
    signal(&a, "STOP");
    let (new_term, _) = wait_to_lead(&b, Duration::from_secs(15));
    assert!(new_term > term);
    // b abandons a's action at once: it never reached Git.
    let abandoned = wait_for(
        "b to abandon the action that never reached Git",
        Duration::from_secs(10),
        || {
            let log = b.log_text();
            log.lines()
                .find(|l| l.contains("was recorded but never reached Git"))
                .map(str::to_owned)
        },
    );
    assert!(abandoned.contains("1 -> 2"), "{abandoned}");
    // The audit entry follows the log line: the region's last action.
    wait_for(
        "the abandonment as the region's last audited action",
        Duration::from_secs(10),
        || {
            audit_messages(&b, "jp")
                .last()
                .is_some_and(|m| m.contains("never reached Git"))
                .then_some(())
        },
    );

    // a wakes and goes on from its fault point with its old term.
    std::fs::remove_file(&arm).unwrap();
    signal(&a, "CONT");
    let refused = wait_for("a's push refused", Duration::from_secs(15), || {
        let log = a.log_text();
        log.lines()
            .find(|l| l.contains("deposed before pushing") || l.contains("a deposed leader's push"))
            .map(str::to_owned)
    });
    eprintln!("refused: {refused}");
    wait_for("a to follow", Duration::from_secs(10), || {
        (leadership(&a).0 == "follower").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        autoscale_commits(),
        Vec::<String>::new(),
        "the frozen leader's push landed ({refused})\n{}",
        a.log_text()
    );
    let regions = b.get("/regions").json();
    assert!(
        regions.as_array().is_some_and(|r| r
            .iter()
            .any(|r| r["name"] == "jp" && r["desired_nodes"] == 1)),
        "{regions}"
    );
    // The region is free to scale again now, not after the in-flight
    // timeout (10 minutes): b pushes the scale-out itself, once.
    agent.set_metrics(0.9, 5.0, 0.0);
    let commits = wait_for("b's own scale-out", Duration::from_secs(20), || {
        let commits = autoscale_commits();
        (!commits.is_empty()).then_some(commits)
    });
    assert_eq!(commits.len(), 1, "{commits:?}");
    assert!(
        commits[0].starts_with("autoscale(jp): 1 -> 2"),
        "{commits:?}"
    );
    drop(agent);
}

/// Issue 13: heartbeats spread over two replicas, one of them restarted
/// (SIGTERM, then started again) in the middle of the load. Every heartbeat
/// a replica acknowledged is in the store afterwards: each node's stored
/// `last_heartbeat` is at least the time its last acknowledged heartbeat was
/// sent (the replicas stamp a heartbeat when they accept it; one clock). A
/// client whose replica does not answer sends to the other, as agents do.
#[test]
fn heartbeats_spread_over_replicas_survive_one_restarting_under_load() {
    restart_under_load(Restart::Term);
}

/// The same with the replica killed (`kill -9`): what it held in memory and
/// had not written yet (its last batch, at most 100 ms when not behind) is
/// gone, and the nodes' next heartbeats replace it. The store keeps every
/// node once, every identity, and every heartbeat acknowledged by the
/// survivor or by the replica after it came back.
#[test]
fn heartbeats_spread_over_replicas_survive_one_killed_under_load() {
    restart_under_load(Restart::Kill9);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Restart {
    Term,
    Kill9,
}

fn restart_under_load(how: Restart) {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;

    const NODES: usize = 120;
    const THREADS: usize = 6;
    let Some(server) = start_or_skip() else {
        return;
    };
    let url = server.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, String)> = neutral_e2e::cluster::fast_config(free_port())
        .into_iter()
        .map(|(path, text)| (path, text.replace("max_nodes: 5", "max_nodes: 1000")))
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = neutral_e2e::cluster::Repo::create(dir.path(), &refs);
    let mut args: Vec<&str> = FAST_NO_PROBES.to_vec();
    args.extend([
        "--store",
        &url,
        "--lease-ttl",
        "2s",
        "--register-rate",
        "100000",
        "--register-burst",
        "100000",
    ]);
    let a = Daemon::start(&repo.bare, &dir.path().join("a"), &args);
    wait_to_lead(&a, Duration::from_secs(10));
    let mut b = Daemon::start(&repo.bare, &dir.path().join("b"), &args);

    let nodes: Vec<(String, String)> = (0..NODES)
        .map(|i| a.register_node("jp", &format!("127.0.6.{}", i + 1)))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let moved = Arc::new(AtomicU64::new(0));
    let apis = [a.api, b.api];
    let nodes = Arc::new(nodes);
    let started = Instant::now();
    let load: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, acknowledged, moved, nodes) = (
                Arc::clone(&stop),
                Arc::clone(&acknowledged),
                Arc::clone(&moved),
                Arc::clone(&nodes),
            );
            std::thread::spawn(move || {
                // node index -> send time of its last acknowledged heartbeat
                let mut last: BTreeMap<usize, i64> = BTreeMap::new();
                let mine: Vec<usize> = (t..NODES).step_by(THREADS).collect();
                let mut round = 0usize;
                while !stop.load(Ordering::Relaxed) && round < 10_000 {
                    for &n in &mine {
                        let (id, token) = &nodes[n];
                        let body = format!(r#"{{"node_id": "{id}"}}"#);
                        let first = n % 2;
                        for attempt in 0..2 {
                            let api = apis[(first + attempt) % 2];
                            let sent = neutral_e2e::cluster::now_millis();
                            let answer = neutral_e2e::http::request(
                                api,
                                "POST",
                                "/nodes/heartbeat",
                                Some(token),
                                Some(&body),
                            );
                            if answer.as_ref().is_ok_and(|r| r.status == 200) {
                                last.insert(n, sent);
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                                if attempt > 0 {
                                    moved.fetch_add(1, Ordering::Relaxed);
                                }
                                break;
                            }
                        }
                    }
                    round += 1;
                }
                last
            })
        })
        .collect();

    // b restarts in the middle of the load.
    std::thread::sleep(Duration::from_secs(2));
    let before_restart = acknowledged.load(Ordering::Relaxed);
    match how {
        Restart::Term => b.stop(),
        Restart::Kill9 => b.kill9(),
    }
    std::thread::sleep(Duration::from_millis(500));
    b.restart();
    wait_for("b to answer again", Duration::from_secs(20), || {
        neutral_e2e::http::request(b.api, "GET", "/healthz", None, None)
            .ok()
            .filter(|r| r.status == 200)
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut last: BTreeMap<usize, i64> = BTreeMap::new();
    for thread in load {
        last.extend(thread.join().unwrap());
    }
    let elapsed = started.elapsed();
    let total = acknowledged.load(Ordering::Relaxed);
    eprintln!(
        "{total} heartbeats acknowledged in {elapsed:?} ({:.0}/s; {before_restart} before the \
         restart), {} sent to the other replica when the first did not answer",
        total as f64 / elapsed.as_secs_f64(),
        moved.load(Ordering::Relaxed)
    );
    assert!(moved.load(Ordering::Relaxed) > 0, "b's clients never moved");
    assert_eq!(last.len(), NODES, "every node was acknowledged");

    // The replicas write their queued heartbeats in batches, later than
    // they acknowledge them (by 100 ms when idle, longer under load): wait,
    // bounded, until the store holds every acknowledged one. A lost
    // heartbeat never arrives.
    let mut client = postgres_client(&server, &url);
    let deadline = Instant::now() + Duration::from_secs(15);
    let lost = loop {
        let stored: BTreeMap<String, i64> = client
            .query("SELECT id, last_heartbeat FROM nodes", &[])
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row.get::<_, String>(0),
                    row.get::<_, Option<i64>>(1).unwrap_or(0),
                )
            })
            .collect();
        let lost: Vec<String> = last
            .iter()
            .filter_map(|(&n, &sent)| {
                let id = &nodes[n].0;
                let at = stored.get(id).copied().unwrap_or(0);
                (at < sent).then(|| format!("{id}: stored {at}, last acknowledged sent at {sent}"))
            })
            .collect();
        if lost.is_empty() || Instant::now() > deadline {
            break lost;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(lost.is_empty(), "acknowledged heartbeats lost: {lost:?}");
    // Every node once, registered once, whatever stopped.
    let rows: i64 = client
        .query_one("SELECT count(*) FROM nodes", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, i64::try_from(NODES).unwrap());
    let registered: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE kind = 'node.registered'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(registered, i64::try_from(NODES).unwrap());
}
