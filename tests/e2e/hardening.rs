//! End-to-end tests of issues 18, 19 and 14 (the API side): credentials never
//! reach an answer or the log, the data folder is private, a damaged store is
//! refused, registration identity / cap / rate limit, ghost registrations
//! expire, a deleted followed branch is reported, the API's error shape, and
//! pagination. Real `neutral serve` processes on loopback and a real bare
//! Git repository.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use neutral_e2e::cluster::{
    ADMIN_TOKEN, Daemon, FAST_NO_PROBES, JOIN_TOKEN, Repo, fast_config, fast_repo, free_port,
    wait_for,
};
use neutral_e2e::http;
use neutral_e2e::services::terraform_or_skip;
use serde_json::Value;

fn wait_for_commit(daemon: &Daemon) -> String {
    wait_for(
        "the daemon to apply the repository",
        Duration::from_secs(20),
        || {
            let status = admin_get(daemon, "/status");
            status["commit"].as_str().map(str::to_owned)
        },
    )
}

fn admin_get(daemon: &Daemon, path: &str) -> Value {
    let response = daemon.admin("GET", path, None);
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    response.json()
}

fn register(daemon: &Daemon, token: Option<&str>, body: &str) -> http::Response {
    http::request(daemon.api, "POST", "/nodes/register", token, Some(body)).unwrap()
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A loopback HTTP server that answers every request 401 with a
/// `WWW-Authenticate: Basic` challenge (a Git host refusing the
/// credentials), for `requests` requests at most.
fn refusing_git_host() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(500) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

#[test]
fn credentials_in_the_repo_url_never_reach_an_answer_or_the_log() {
    const SECRET: &str = "S3CRET-deploy-password";
    let dir = tempfile::tempdir().unwrap();
    let port = refusing_git_host();
    let url = format!("http://deploy:{SECRET}@127.0.0.1:{port}/x.git?token={SECRET}");
    let data = dir.path().join("data");
    let daemon = Daemon::start(std::path::Path::new(&url), &data, FAST_NO_PROBES);
    // The sync has failed at least twice (so the error reached /status and the log).
    wait_for("the sync to fail", Duration::from_secs(20), || {
        let status = admin_get(&daemon, "/status");
        status["sync"]["last_error"].as_str().map(str::to_owned)
    });
    daemon.admin("POST", "/sync", None);
    let mut answers = Vec::new();
    for path in [
        "/status",
        "/healthz",
        "/metrics",
        "/nodes",
        "/regions",
        "/domains",
        "/autoscale",
        "/runs",
        "/audit?limit=1000",
        "/dns/zones",
        "/nope",
        "/runs/..%2F..",
    ] {
        for token in [None, Some(ADMIN_TOKEN)] {
            let response = http::request(daemon.api, "GET", path, token, None).unwrap();
            answers.push((format!("GET {path} ({token:?})"), response));
        }
    }
    let sync = daemon.admin("POST", "/sync", None);
    answers.push(("POST /sync".into(), sync.clone()));
    let status = admin_get(&daemon, "/status");
    assert!(
        status["sync"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("http://***@127.0.0.1")),
        "the error still says which host failed: {status}"
    );
    for (what, response) in &answers {
        let headers = format!("{:?}", response.headers);
        assert!(
            !response.body.contains(SECRET) && !headers.contains(SECRET),
            "{what} leaks the secret: {} {headers}",
            response.body
        );
    }
    let log = daemon.log_text();
    assert!(log.contains("sync failed"), "{log}");
    assert!(!log.contains(SECRET), "the log leaks the secret:\n{log}");
}

#[test]
fn the_data_folder_is_private_and_a_group_writable_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let data = dir.path().join("data");
    let mut daemon = Daemon::start(&repo.bare, &data, FAST_NO_PROBES);
    wait_for_commit(&daemon);
    assert_eq!(mode_of(&data), 0o700);
    for file in [
        "neutral.sqlite3",
        "neutral.sqlite3-wal",
        "neutral.sqlite3-shm",
    ] {
        assert_eq!(mode_of(&data.join(file)), 0o600, "{file}");
    }
    daemon.stop();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = neutral_e2e::run_with_deadline(&mut daemon.command(), Duration::from_secs(30));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("writable by other users"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("chmod 700"), "{}", out.stderr);
}

#[test]
fn an_empty_store_is_refused_unless_init_and_a_fresh_folder_just_starts() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let data = dir.path().join("data");
    let mut daemon = Daemon::start(&repo.bare, &data, FAST_NO_PROBES);
    wait_for_commit(&daemon);
    let created = register(
        &daemon,
        Some(JOIN_TOKEN),
        r#"{"region": "jp", "address": "127.0.0.9"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    daemon.stop();
    // What a bad restore or a full disk leaves: the store truncated to 0 bytes.
    std::fs::write(data.join("neutral.sqlite3"), b"").unwrap();
    for companion in ["neutral.sqlite3-wal", "neutral.sqlite3-shm"] {
        let _ = std::fs::remove_file(data.join(companion));
    }
    let out = neutral_e2e::run_with_deadline(&mut daemon.command(), Duration::from_secs(30));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("the store is empty"), "{}", out.stderr);
    assert!(out.stderr.contains("--init"), "{}", out.stderr);
    assert_eq!(
        std::fs::metadata(data.join("neutral.sqlite3"))
            .unwrap()
            .len(),
        0
    );

    // The operator decides to start over.
    let init = Daemon::start(&repo.bare, &data, &[FAST_NO_PROBES, &["--init"]].concat());
    wait_for_commit(&init);
    let nodes = admin_get(&init, "/nodes");
    assert_eq!(
        nodes.as_array().unwrap().len(),
        0,
        "started from nothing: {nodes}"
    );
}

#[test]
fn the_join_token_may_not_be_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let mut cmd = std::process::Command::new(neutral_e2e::bin("neutral"));
    cmd.arg("serve")
        .arg("--repo")
        .arg(&repo.bare)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("NEUTRAL_JOIN_TOKEN", ADMIN_TOKEN)
        .env("NEUTRAL_ADMIN_TOKEN", ADMIN_TOKEN);
    let out = neutral_e2e::run_with_deadline(&mut cmd, Duration::from_secs(30));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the join token must differ from the admin token"),
        "{}",
        out.stderr
    );
}

#[test]
fn registration_identity_is_proven_never_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST_NO_PROBES);
    wait_for_commit(&daemon);
    let first = register(
        &daemon,
        Some(JOIN_TOKEN),
        r#"{"region": "jp", "address": "127.0.0.9"}"#,
    );
    assert_eq!(first.status, 201, "{}", first.body);
    let first = first.json();
    let (id, token) = (
        first["node_id"].as_str().unwrap().to_owned(),
        first["node_token"].as_str().unwrap().to_owned(),
    );
    let heartbeat = |token: &str| {
        http::post(
            daemon.api,
            "/nodes/heartbeat",
            Some(token),
            &format!(r#"{{"node_id": "{id}"}}"#),
        )
    };
    assert_eq!(heartbeat(&token).status, 200);
    wait_for("the node to be up", Duration::from_secs(10), || {
        assert_eq!(heartbeat(&token).status, 200);
        (admin_get(&daemon, &format!("/nodes/{id}"))["status"] == "up").then_some(())
    });

    // A join-token holder re-registering the node's id: refused, nothing changes.
    let takeover = register(
        &daemon,
        Some(JOIN_TOKEN),
        &format!(r#"{{"region": "jp", "address": "127.0.0.9", "node_id": "{id}"}}"#),
    );
    assert_eq!(takeover.status, 409, "{}", takeover.body);
    assert_eq!(takeover.json()["error"], "identity_conflict");
    assert_eq!(
        heartbeat(&token).status,
        200,
        "the real node keeps its token"
    );
    // The same address without an id, while the node is up: refused too.
    let twin = register(
        &daemon,
        Some(JOIN_TOKEN),
        r#"{"region": "jp", "address": "127.0.0.9"}"#,
    );
    assert_eq!(twin.status, 409, "{}", twin.body);
    let audit = admin_get(&daemon, "/audit?kind=node.identity_conflict&limit=100");
    assert_eq!(audit.as_array().unwrap().len(), 2, "{audit}");
    assert!(
        daemon
            .log_text()
            .contains("registration refused: identity conflict")
    );

    // With proof (the node's current token) the node keeps its id.
    let proven = register(
        &daemon,
        Some(JOIN_TOKEN),
        &format!(
            r#"{{"region": "jp", "address": "127.0.0.9", "node_id": "{id}", "node_token": "{token}"}}"#
        ),
    );
    assert_eq!(proven.status, 201, "{}", proven.body);
    let proven = proven.json();
    assert_eq!(proven["node_id"], id.as_str());
    let new_token = proven["node_token"].as_str().unwrap();
    assert_eq!(heartbeat(new_token).status, 200);
    assert_eq!(heartbeat(&token).status, 401, "the old token is replaced");

    // Three registrations of one never-heartbeated (region, address): one node.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let response = register(
            &daemon,
            Some(JOIN_TOKEN),
            r#"{"region": "sg", "address": "127.0.0.20"}"#,
        );
        assert_eq!(response.status, 201, "{}", response.body);
        ids.push(response.json()["node_id"].as_str().unwrap().to_owned());
    }
    let nodes = admin_get(&daemon, "/nodes?region=sg");
    let at_address: Vec<&Value> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["address"] == "127.0.0.20")
        .collect();
    assert_eq!(at_address.len(), 1, "{nodes}");
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
}

#[test]
fn registrations_are_capped_per_region_and_rate_limited_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[
            FAST_NO_PROBES,
            &["--register-rate", "1000", "--register-burst", "1000"],
        ]
        .concat(),
    );
    wait_for_commit(&daemon);
    // us: max_nodes 3, slack max(2, ⌈3/5⌉) = 2 → 5 nodes.
    let mut created = 0;
    let mut refused = None;
    for i in 0..10 {
        let response = register(
            &daemon,
            Some(JOIN_TOKEN),
            &format!(r#"{{"region": "us", "address": "127.0.1.{i}"}}"#),
        );
        match response.status {
            201 => created += 1,
            _ => {
                refused = Some(response);
                break;
            }
        }
    }
    assert_eq!(created, 5);
    let refused = refused.unwrap();
    assert_eq!(refused.status, 409, "{}", refused.body);
    let body = refused.json();
    assert_eq!(body["error"], "region_full");
    assert!(
        body["message"].as_str().unwrap().contains("max_nodes 3"),
        "{body}"
    );

    // Rate: a daemon with a burst of 5 and 1 per second.
    let limited = Daemon::start(
        &repo.bare,
        &dir.path().join("data2"),
        &[
            FAST_NO_PROBES,
            &["--register-rate", "1", "--register-burst", "5"],
        ]
        .concat(),
    );
    wait_for_commit(&limited);
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(
            register(
                &limited,
                Some(JOIN_TOKEN),
                &format!(r#"{{"region": "jp", "address": "127.0.2.{i}"}}"#),
            )
            .status,
        );
    }
    assert_eq!(&statuses[..5], &[201; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    let limited_response = register(
        &limited,
        Some(JOIN_TOKEN),
        r#"{"region": "jp", "address": "127.0.2.99"}"#,
    );
    assert_eq!(limited_response.status, 429);
    assert_eq!(limited_response.json()["error"], "rate_limited");
    assert!(limited_response.header("retry-after").is_some());
}

#[test]
fn registrations_that_never_heartbeat_expire_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[FAST_NO_PROBES, &["--registration-expiry", "3s"]].concat(),
    );
    wait_for_commit(&daemon);
    let ghost = register(
        &daemon,
        Some(JOIN_TOKEN),
        r#"{"region": "jp", "address": "127.0.0.30"}"#,
    )
    .json();
    let live = register(
        &daemon,
        Some(JOIN_TOKEN),
        r#"{"region": "jp", "address": "127.0.0.31"}"#,
    )
    .json();
    let (ghost_id, live_id) = (
        ghost["node_id"].as_str().unwrap(),
        live["node_id"].as_str().unwrap(),
    );
    let live_token = live["node_token"].as_str().unwrap();
    wait_for("the ghost to expire", Duration::from_secs(20), || {
        let beat = http::post(
            daemon.api,
            "/nodes/heartbeat",
            Some(live_token),
            &format!(r#"{{"node_id": "{live_id}"}}"#),
        );
        assert_eq!(beat.status, 200, "{}", beat.body);
        let found = daemon
            .admin("GET", &format!("/nodes/{ghost_id}"), None)
            .status;
        (found == 404).then_some(())
    });
    assert_eq!(
        daemon
            .admin("GET", &format!("/nodes/{live_id}"), None)
            .status,
        200
    );
    let metrics = daemon.get("/metrics").body;
    assert!(
        metrics.contains("neutral_registrations_expired_total 1"),
        "{metrics}"
    );
    let audit = admin_get(&daemon, "/audit?kind=node.deleted&limit=10");
    assert!(audit.to_string().contains("never heartbeated"), "{audit}");
}

#[test]
fn a_deleted_followed_branch_is_reported_and_the_last_good_declarations_stay() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST_NO_PROBES);
    let commit = wait_for_commit(&daemon);
    let status = std::process::Command::new("git")
        .args([
            "--git-dir",
            repo.bare.to_str().unwrap(),
            "update-ref",
            "-d",
            "refs/heads/main",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let outcome = daemon.sync();
    assert_eq!(outcome["result"], "error", "{outcome}");
    assert!(
        outcome["message"]
            .as_str()
            .unwrap()
            .contains("branch `main` not found"),
        "{outcome}"
    );
    let status = admin_get(&daemon, "/status");
    assert!(
        status["sync"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not found")),
        "{status}"
    );
    assert_eq!(
        status["commit"],
        commit.as_str(),
        "the last good commit stays"
    );
    let regions = admin_get(&daemon, "/regions");
    assert_eq!(regions.as_array().unwrap().len(), 3);
    let metrics = daemon.get("/metrics").body;
    assert!(metrics.contains("neutral_sync_failing 1"), "{metrics}");
}

#[test]
fn wrong_types_and_bad_paths_get_the_json_error_shape_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST_NO_PROBES);
    wait_for_commit(&daemon);
    let created = register(
        &daemon,
        Some(JOIN_TOKEN),
        r#"{"region": "jp", "address": "127.0.0.9"}"#,
    )
    .json();
    let (id, token) = (
        created["node_id"].as_str().unwrap().to_owned(),
        created["node_token"].as_str().unwrap().to_owned(),
    );
    let before = admin_get(&daemon, &format!("/nodes/{id}"));
    let typed = http::post(
        daemon.api,
        "/nodes/heartbeat",
        Some(&token),
        &format!(r#"{{"node_id": "{id}", "metrics": [0.5, 1, 0]}}"#),
    );
    assert_eq!(typed.status, 400, "{}", typed.body);
    let body = typed.json();
    assert_eq!(body["error"], "invalid_body");
    assert!(
        body["message"].as_str().unwrap().contains("metrics"),
        "{body}"
    );
    let after = admin_get(&daemon, &format!("/nodes/{id}"));
    assert_eq!(
        before["last_heartbeat"], after["last_heartbeat"],
        "nothing changed"
    );
    assert_eq!(before["status"], after["status"]);

    for (method, path) in [
        ("GET", "/runs/..%2F.."),
        ("GET", "/runs/not-a-number"),
        ("GET", "/runs/99999999999999999999999"),
        ("GET", "/audit?limit=lots"),
        ("GET", "/nodes?limit=-1"),
        ("DELETE", "/nodes/%ZZ"),
        ("PUT", "/nodes"),
    ] {
        let response = http::request(daemon.api, method, path, Some(ADMIN_TOKEN), None).unwrap();
        assert!(
            (400..600).contains(&response.status),
            "{method} {path}: {}",
            response.status
        );
        let json: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", response.body));
        assert!(json["error"].is_string(), "{method} {path}: {json}");
        assert!(json["message"].is_string(), "{method} {path}: {json}");
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
    }
}

#[test]
fn every_list_pages_with_one_shape_and_10000_nodes_are_walked_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = fast_config(free_port());
    files.push((
        "platform-config/regions/big.yaml",
        "name: big\nprovider: local\nmin_nodes: 1\nmax_nodes: 10000\nbase_weight: 10\n".to_owned(),
    ));
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &refs);
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[
            FAST_NO_PROBES,
            &["--register-rate", "100000", "--register-burst", "100000"],
        ]
        .concat(),
    );
    wait_for_commit(&daemon);
    const NODES: u32 = 10_000;
    for i in 0..NODES {
        let address = format!("10.0.{}.{}", i / 250, i % 250 + 1);
        let response = register(
            &daemon,
            Some(JOIN_TOKEN),
            &format!(r#"{{"region": "big", "address": "{address}"}}"#),
        );
        assert_eq!(
            response.status, 201,
            "node {i} {address}: {}",
            response.body
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/nodes?region=big&limit=700&cursor={c}"),
            None => "/nodes?region=big&limit=700".to_owned(),
        };
        let response = daemon.admin("GET", &path, None);
        assert_eq!(response.status, 200, "{}", response.body);
        pages += 1;
        for node in response.json().as_array().unwrap() {
            assert_eq!(node["region"], "big");
            assert!(
                seen.insert(node["id"].as_str().unwrap().to_owned()),
                "{} seen twice",
                node["id"]
            );
        }
        match response.header("x-next-cursor") {
            Some(next) => {
                assert!(
                    response
                        .header("link")
                        .is_some_and(|l| l.contains("rel=\"next\""))
                );
                cursor = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages < 100, "the walk does not end");
    }
    assert_eq!(seen.len(), NODES as usize);
    assert_eq!(pages, 15, "⌈10000 / 700⌉");

    // The same shape on the other lists, with their filters.
    let down = daemon.admin("GET", "/nodes?status=down&limit=5", None);
    assert_eq!(down.json().as_array().unwrap().len(), 5);
    assert!(down.header("x-next-cursor").is_some());
    for (path, more) in [
        ("/audit?limit=2", true),
        ("/regions?limit=2", true),
        ("/domains?limit=1", false),
        ("/runs?limit=2", false),
        ("/dns/zones?limit=2", false),
    ] {
        let response = daemon.admin("GET", path, None);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        assert_eq!(response.header("x-next-cursor").is_some(), more, "{path}");
    }
    let second = daemon
        .admin("GET", "/regions?limit=2&cursor=jp", None)
        .json();
    let names: Vec<&str> = second
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sg", "us"]);
    let bad = daemon.admin("GET", "/nodes?status=sleepy", None);
    assert_eq!(bad.status, 400);
    let bad = daemon.admin("GET", "/nodes?limit=0", None);
    assert_eq!(bad.status, 400);
}

#[test]
fn a_run_killed_with_the_daemon_is_marked_interrupted_and_its_root_planned_again() {
    if terraform_or_skip(
        "a_run_killed_with_the_daemon_is_marked_interrupted_and_its_root_planned_again",
    )
    .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = fast_config(free_port());
    files.retain(|(path, _)| !path.starts_with("infra/node-pool"));
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    files.push((
        "infra/gtm/main.tf",
        neutral_e2e::cluster::gtm_root_at(black_hole.local_addr().unwrap()),
    ));
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &refs);
    let mut daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[
            FAST_NO_PROBES,
            &["--run-terraform", "--drift-interval", "1h"],
        ]
        .concat(),
    );
    let running = wait_for("a running gtm run", Duration::from_secs(60), || {
        let runs = admin_get(&daemon, "/runs?root=infra/gtm&status=running");
        runs["runs"].as_array()?.first().cloned()
    });
    let id = running["id"].as_i64().unwrap();
    // Past `init`: the provider is running (and blocked on the black hole),
    // Terraform waiting on it without a word of output.
    let before = wait_for("the run's provider", Duration::from_secs(60), || {
        let running = neutral_e2e::cluster::processes_in(dir.path());
        running
            .iter()
            .any(|(_, cmd)| cmd.contains("terraform-provider-neutral"))
            .then_some(running)
    });
    eprintln!("run processes before the kill: {before:?}");
    daemon.kill9();
    // Terraform dies with the daemon, even a SIGKILLed one (setpriv
    // --pdeathsig), and the provider it started follows it: it exits once
    // Terraform is no longer its parent.
    let gone = std::time::Instant::now();
    while !neutral_e2e::cluster::processes_in(dir.path()).is_empty()
        && gone.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = neutral_e2e::cluster::processes_in(dir.path());
    assert!(
        left.is_empty(),
        "processes of the run left behind by the killed daemon: {left:?}"
    );
    eprintln!(
        "Terraform and its provider gone {:?} after the daemon's SIGKILL",
        gone.elapsed()
    );
    daemon.restart();
    let runs = admin_get(&daemon, "/runs?root=infra/gtm&limit=100");
    let killed = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap();
    assert_eq!(killed["status"], "interrupted", "{killed}");
    assert!(
        killed["finished_at"].is_number() || killed["finished_at"].is_string(),
        "{killed}"
    );
    let interrupted = admin_get(&daemon, "/runs?status=interrupted");
    assert_eq!(
        interrupted["runs"].as_array().unwrap().len(),
        1,
        "{interrupted}"
    );
    // The root is planned again by the restarted daemon.
    wait_for("a new run of the root", Duration::from_secs(60), || {
        let runs = admin_get(&daemon, "/runs?root=infra/gtm&limit=100");
        runs["runs"]
            .as_array()?
            .iter()
            .any(|r| r["id"].as_i64().is_some_and(|other| other > id))
            .then_some(())
    });
    let audit = admin_get(&daemon, "/audit?kind=run.interrupted");
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
    assert!(daemon.log_text().contains("marked interrupted"));
    let cli = neutral_e2e::run_with_deadline(
        std::process::Command::new(neutral_e2e::bin("neutral"))
            .args(["runs", "--control-plane", &format!("http://{}", daemon.api)])
            .env("NEUTRAL_ADMIN_TOKEN", ADMIN_TOKEN),
        Duration::from_secs(30),
    );
    assert!(
        cli.stdout.contains("interrupted"),
        "{}\n{}",
        cli.stdout,
        cli.stderr
    );
}
