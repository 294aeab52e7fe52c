//! End-to-end tests of the control plane: real `neutral serve` and `neutral
//! agent` processes, a real bare Git repository, real node services on their
//! own loopback addresses, and DNS queries over UDP and TCP.

use std::time::{Duration, Instant};

use neutral_e2e::cluster::{
    ADMIN_TOKEN, Agent, Daemon, JOIN_TOKEN, Repo, Service, fast_config, free_port, wait_for,
};
use neutral_e2e::dns::{self, Rcode, Type};
use neutral_e2e::http;
use serde_json::{Value, json};

const FAST: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--heartbeat-timeout",
    "2s",
    "--sync-interval",
    "1s",
    "--no-autoscale",
];

fn repo_with(dir: &std::path::Path, probe_port: u16) -> Repo {
    let files = fast_config(probe_port);
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    Repo::create(dir, &refs)
}

fn wait_for_commit(daemon: &Daemon, commit: Option<&str>) {
    wait_for(
        "the daemon to apply the repository",
        Duration::from_secs(20),
        || {
            let status = daemon.get("/status").json();
            let applied = status["commit"].as_str()?.to_owned();
            commit.is_none_or(|c| c == applied).then_some(())
        },
    );
}

fn domain(daemon: &Daemon) -> Value {
    let response = daemon.get("/domains/app.example.com");
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

fn effective(domain: &Value, region: &str) -> u64 {
    domain["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == region)
        .and_then(|r| r["effective"].as_u64())
        .unwrap_or_else(|| panic!("no region {region} in {domain}"))
}

fn answers(domain: &Value) -> Vec<(String, u64)> {
    let mut answers: Vec<(String, u64)> = domain["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["address"].as_str().unwrap().to_owned(),
                a["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    answers.sort();
    answers
}

fn wait_status(daemon: &Daemon, id: &str, status: &str, timeout: Duration) -> Value {
    wait_for(&format!("node {id} to be {status}"), timeout, || {
        daemon.node(id).filter(|n| n["status"] == status)
    })
}

/// Writes `app.example.com` into the embedded DNS as weighted A records.
fn write_app_rrset(daemon: &Daemon, records: &[(&str, u32)], ttl: u32) {
    let zone = daemon.admin(
        "POST",
        "/dns/zones",
        Some(r#"{"name": "example.com.", "kind": "Native", "nameservers": ["ns1.example.com."]}"#),
    );
    assert!(zone.status == 201 || zone.status == 409, "{}", zone.body);
    let records: Vec<Value> = records
        .iter()
        .map(|(address, weight)| json!({ "content": address, "disabled": false, "weight": weight }))
        .collect();
    let patch = json!({ "rrsets": [{
        "name": "app.example.com.", "type": "A", "ttl": ttl, "changetype": "REPLACE",
        "records": records,
        "comments": [{ "content": "managed by neutral", "account": "neutral" }],
    }]});
    let response = daemon.admin("PATCH", "/dns/zones/example.com.", Some(&patch.to_string()));
    assert_eq!(response.status, 204, "{}", response.body);
}

#[test]
fn agents_register_and_weights_follow_health_with_hysteresis() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = repo_with(dir.path(), port);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST);
    wait_for_commit(&daemon, None);
    let _services: Vec<Service> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|ip| Service::start(ip, port))
        .collect();
    let _jp_a = Agent::start(&daemon, dir.path(), "jp-a", "jp", "127.0.0.2");
    let mut jp_b = Agent::start(&daemon, dir.path(), "jp-b", "jp", "127.0.0.3");
    let _sg_a = Agent::start(&daemon, dir.path(), "sg-a", "sg", "127.0.0.4");
    let ids: Vec<String> = [&_jp_a, &jp_b, &_sg_a]
        .iter()
        .map(|a| a.node_id())
        .collect();
    for id in &ids {
        wait_status(&daemon, id, "up", Duration::from_secs(20));
    }
    write_app_rrset(
        &daemon,
        &[("127.0.0.2", 50), ("127.0.0.3", 50), ("127.0.0.4", 50)],
        30,
    );

    // Two of two jp nodes ready: jp at its full 100, split 50/50; sg 50.
    let d = domain(&daemon);
    assert_eq!(d["mode"], "normal", "{d}");
    assert_eq!(effective(&d, "jp"), 100, "{d}");
    assert_eq!(effective(&d, "sg"), 50, "{d}");
    assert_eq!(
        answers(&d),
        [
            ("127.0.0.2".to_owned(), 50),
            ("127.0.0.3".to_owned(), 50),
            ("127.0.0.4".to_owned(), 50)
        ]
    );
    let full_view = d["view"]
        .as_str()
        .expect("the published view's id")
        .to_owned();

    // Stop one jp agent: down within the heartbeat timeout (2 s) + 1 s.
    let stopped = Instant::now();
    jp_b.stop();
    let node = wait_status(&daemon, &ids[1], "down", Duration::from_secs(3));
    let took = stopped.elapsed();
    assert!(took <= Duration::from_secs(3), "down after {took:?}");
    assert!(
        node["status_reason"]
            .as_str()
            .unwrap()
            .contains("no heartbeat"),
        "{node}"
    );
    let d = domain(&daemon);
    assert_eq!(effective(&d, "jp"), 50, "one of two desired jp nodes: {d}");
    assert_eq!(
        answers(&d),
        [("127.0.0.2".to_owned(), 50), ("127.0.0.4".to_owned(), 50)]
    );
    // A run that pinned the earlier view still reads it (plan and apply of
    // one Terraform run agree); an unknown view reads the live one.
    assert_ne!(d["view"], full_view.as_str(), "{d}");
    let pinned = daemon
        .get(&format!("/domains/app.example.com?view={full_view}"))
        .json();
    assert_eq!(pinned["view"], full_view.as_str(), "{pinned}");
    assert_eq!(effective(&pinned, "jp"), 100, "{pinned}");
    assert_eq!(answers(&pinned).len(), 3, "{pinned}");
    let unknown = daemon.get("/domains/app.example.com?view=gone-1").json();
    assert_eq!(unknown["view"], d["view"], "{unknown}");
    assert_eq!(effective(&unknown, "jp"), 50, "{unknown}");
    let jp_reason = d["regions"][0]["reason"].as_str().unwrap().to_owned();
    assert!(
        jp_reason.contains(&format!("down {}", ids[1])),
        "{jp_reason}"
    );
    // The embedded DNS dropped it at once, before any Terraform run.
    for _ in 0..60 {
        let answer = dns::udp(daemon.dns, "app.example.com.", Type::A).unwrap();
        assert_eq!(answer.rcode, Rcode::NoError);
        assert_ne!(
            answer.addresses(),
            ["127.0.0.3"],
            "a down node was answered"
        );
    }

    // Restart it: the same identity, back only after `rise` (2) good probes.
    jp_b.restart();
    let node = wait_status(&daemon, &ids[1], "up", Duration::from_secs(10));
    assert_eq!(
        node["status_reason"], "2 consecutive successful probes (rise 2)",
        "{node}"
    );
    assert_eq!(jp_b.node_id(), ids[1]);
    let d = domain(&daemon);
    assert_eq!(effective(&d, "jp"), 100, "{d}");
    let seen: std::collections::BTreeSet<String> = (0..200)
        .flat_map(|_| {
            dns::udp(daemon.dns, "app.example.com.", Type::A)
                .unwrap()
                .addresses()
        })
        .collect();
    assert!(
        seen.contains("127.0.0.3"),
        "recovered node never answered: {seen:?}"
    );
}

#[test]
fn commits_change_weights_and_invalid_commits_are_rejected_keeping_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = repo_with(dir.path(), port);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST);
    wait_for_commit(&daemon, None);
    // The daemon re-executed itself with two malloc arenas and a fixed mmap
    // threshold (same process), unless this environment chose them already.
    let environ = std::fs::read(format!("/proc/{}/environ", daemon.pid())).unwrap();
    let variable = |name: &str| {
        let prefix = format!("{name}=");
        environ
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let arenas_chosen = std::env::var("MALLOC_ARENA_MAX").ok();
    let wanted = arenas_chosen.clone().unwrap_or_else(|| "2".to_owned());
    assert_eq!(variable("MALLOC_ARENA_MAX"), Some(wanted));
    if arenas_chosen.is_none() {
        let wanted =
            std::env::var("MALLOC_MMAP_THRESHOLD_").unwrap_or_else(|_| "131072".to_owned());
        assert_eq!(variable("MALLOC_MMAP_THRESHOLD_"), Some(wanted));
    }
    let _services = [
        Service::start("127.0.0.5", port),
        Service::start("127.0.0.6", port),
    ];
    let jp = Agent::start(&daemon, dir.path(), "jp", "jp", "127.0.0.5");
    let sg = Agent::start(&daemon, dir.path(), "sg", "sg", "127.0.0.6");
    for agent in [&jp, &sg] {
        wait_status(&daemon, &agent.node_id(), "up", Duration::from_secs(20));
    }
    assert_eq!(effective(&domain(&daemon), "sg"), 50);

    // sg's weight to 0: applied on POST /sync, and the audit log names the commit.
    let gtm = fast_config(port)
        .into_iter()
        .find(|(p, _)| *p == "platform-config/gtm/app.yaml")
        .unwrap()
        .1
        .replace("sg: 50", "sg: 0");
    repo.write("platform-config/gtm/app.yaml", &gtm);
    let commit = repo.commit_push("gtm: take sg out of app.example.com");
    let outcome = daemon.sync();
    assert_eq!(outcome["result"], "applied", "{outcome}");
    assert_eq!(outcome["commit"], commit.as_str());
    let d = domain(&daemon);
    assert_eq!(d["commit"], commit.as_str());
    assert_eq!(effective(&d, "sg"), 0, "{d}");
    // jp runs 1 of its 2 desired nodes: 100 × 1/2.
    assert_eq!(answers(&d), [("127.0.0.5".to_owned(), 50)]);
    let audit = daemon.admin("GET", "/audit?kind=sync.applied", None).json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["commit"] == commit.as_str()),
        "no sync.applied entry for {commit}: {audit}"
    );
    let weights = daemon
        .admin(
            "GET",
            "/audit?kind=gtm.weights&subject=app.example.com",
            None,
        )
        .json();
    assert!(
        weights
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["commit"] == commit.as_str()),
        "no gtm.weights entry for {commit}: {weights}"
    );

    // An invalid commit: rejected with file:line diagnostics, last good kept.
    repo.write(
        "platform-config/regions/sg.yaml",
        "name: sg\nprovider: local\nmin_nodes: 4\nmax_nodes: 2\nstate: degraded\n",
    );
    let bad = repo.commit_push("break sg");
    let outcome = daemon.sync();
    assert_eq!(outcome["result"], "rejected", "{outcome}");
    assert_eq!(outcome["commit"], bad.as_str());
    let status = daemon.get("/status").json();
    assert_eq!(
        status["commit"],
        commit.as_str(),
        "last good kept: {status}"
    );
    let failing = &status["sync"]["failing"];
    assert_eq!(failing["commit"], bad.as_str(), "{status}");
    let diagnostics: Vec<&str> = failing["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        diagnostics
            .iter()
            .any(|d| d.starts_with("platform-config/regions/sg.yaml:5:8: error: ")),
        "{diagnostics:#?}"
    );
    assert!(
        diagnostics.iter().any(|d| d.starts_with("platform-config/regions/sg.yaml:3:") && d.contains("min_nodes")),
        "{diagnostics:#?}"
    );
    assert_eq!(effective(&domain(&daemon), "sg"), 0);
    let metrics = daemon.get("/metrics").body;
    assert!(metrics.contains("\nneutral_sync_failing 1\n"), "{metrics}");
    assert!(
        metrics.contains("neutral_nodes{region=\"jp\",status=\"up\"} 1"),
        "{metrics}"
    );

    // Fixing it clears the failure.
    repo.write(
        "platform-config/regions/sg.yaml",
        "name: sg\nprovider: local\nmin_nodes: 1\nmax_nodes: 5\nbase_weight: 100\n",
    );
    let fixed = repo.commit_push("fix sg");
    assert_eq!(daemon.sync()["result"], "applied");
    let status = daemon.get("/status").json();
    assert_eq!(status["commit"], fixed.as_str());
    assert!(status["sync"]["failing"].is_null(), "{status}");
}

#[test]
fn kill_9_mid_sync_leaves_consistent_stores_and_nodes_keep_their_identity() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = repo_with(dir.path(), port);
    // The store's fault point: while `arm` exists, a sync stops inside its
    // transaction (every write done, nothing committed), says so with
    // `arm.reached`, and waits to be killed.
    let arm = dir.path().join("pause-inside-apply");
    let reached = dir.path().join("pause-inside-apply.reached");
    let mut daemon = Daemon::start_with_env(
        &repo.bare,
        &dir.path().join("data"),
        FAST,
        &[("NEUTRAL_FAULT_PAUSE_INSIDE_APPLY", arm.to_str().unwrap())],
    );
    let first = std::process::Command::new("git")
        .args(["-C", repo.work.to_str().unwrap(), "rev-parse", "HEAD"])
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&first.stdout).trim().to_owned();
    wait_for_commit(&daemon, Some(&first));
    let _service = Service::start("127.0.0.7", port);
    let agent = Agent::start(&daemon, dir.path(), "jp", "jp", "127.0.0.7");
    let id = agent.node_id();
    wait_status(&daemon, &id, "up", Duration::from_secs(20));

    let mut previous = first;
    for round in 0..3 {
        // A commit that changes every kind of object at once.
        let regions = 1 + round;
        repo.write(
            "infra/node-pool/jp.tfvars",
            &format!(
                "region        = \"jp\"\ndesired_nodes = {}\n",
                1 + round % 3
            ),
        );
        repo.write(
            &format!("platform-config/regions/x{round}.yaml"),
            &format!("name: x{round}\nprovider: local\nmin_nodes: 1\nmax_nodes: 2\n"),
        );
        std::fs::write(&arm, b"armed").unwrap();
        let commit = repo.commit_push(&format!("round {round}: {regions} more regions"));
        let api = daemon.api;
        let request = std::thread::spawn(move || {
            http::request(api, "POST", "/sync", Some(ADMIN_TOKEN), None).map(|r| r.status)
        });
        wait_for(
            "the sync to stop inside its transaction",
            Duration::from_secs(20),
            || reached.exists().then_some(()),
        );
        // kill -9 while the transaction is provably open.
        std::fs::remove_file(&reached).unwrap();
        daemon.kill9();
        let _ = request.join();
        // Still armed: the restarted daemon's first sync stops inside its
        // transaction too, so what it serves now is what the store held.
        daemon.restart();
        wait_for(
            "the restarted sync to stop inside its transaction",
            Duration::from_secs(20),
            || reached.exists().then_some(()),
        );
        // Nothing of the killed transaction is in the store: the previous
        // commit, whole.
        let status = daemon.admin("GET", "/status", None).json();
        let regions: Vec<String> = daemon
            .admin("GET", "/regions", None)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            status["commit"],
            previous.as_str(),
            "round {round}: {status}"
        );
        assert!(
            !regions.contains(&format!("x{round}")),
            "round {round}: half-applied? {regions:?}"
        );
        // Disarm, kill again (inside the second transaction), and restart.
        std::fs::remove_file(&arm).unwrap();
        std::fs::remove_file(&reached).unwrap();
        daemon.kill9();
        daemon.restart();
        // The daemon converges on the branch head.
        wait_for_commit(&daemon, Some(&commit));
        let regions = daemon.admin("GET", "/regions", None).json();
        assert!(
            regions.to_string().contains(&format!("\"x{round}\"")),
            "{regions}"
        );
        // The node kept its identity and comes back up.
        assert!(daemon.node(&id).is_some(), "node {id} lost after kill -9");
        wait_status(&daemon, &id, "up", Duration::from_secs(15));
        previous = commit;
    }
    assert_eq!(agent.node_id(), id);
    let nodes = daemon.get("/nodes").json();
    assert_eq!(
        nodes.as_array().unwrap().len(),
        1,
        "no duplicate registrations: {nodes}"
    );
}

#[test]
fn embedded_dns_serves_written_rrsets_by_weight_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), free_port());
    let mut daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST);
    write_app_rrset(&daemon, &[("192.0.2.1", 300), ("192.0.2.2", 100)], 42);

    let mut first = 0u32;
    for _ in 0..1000 {
        let answer = dns::udp(daemon.dns, "app.example.com.", Type::A).unwrap();
        assert_eq!(answer.rcode, Rcode::NoError);
        assert!(answer.authoritative);
        assert_eq!(
            answer.records.len(),
            1,
            "one weighted pick per query: {answer:?}"
        );
        assert_eq!(answer.records[0].1, 42, "TTL as stored");
        match answer.addresses()[0].as_str() {
            "192.0.2.1" => first += 1,
            "192.0.2.2" => {}
            other => panic!("unexpected answer {other}"),
        }
    }
    // 3:1 weights; the binomial standard deviation over 1,000 draws is ~13.7:
    // allow five of them either way.
    assert!(
        (682..=818).contains(&first),
        "192.0.2.1 answered {first}/1000 times"
    );
    let mut tcp_seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let answer = dns::tcp(daemon.dns, "app.example.com.", Type::A).unwrap();
        assert_eq!(answer.records[0].1, 42);
        tcp_seen.extend(answer.addresses());
    }
    assert_eq!(tcp_seen.len(), 2, "{tcp_seen:?}");

    let foreign = dns::udp(daemon.dns, "www.example.org.", Type::A).unwrap();
    assert_eq!(foreign.rcode, Rcode::Refused);
    let missing = dns::tcp(daemon.dns, "nope.example.com.", Type::A).unwrap();
    assert_eq!(missing.rcode, Rcode::NXDomain);
    assert_eq!(missing.authority, [Type::SOA]);
    let soa = dns::udp(daemon.dns, "example.com.", Type::SOA).unwrap();
    assert_eq!(soa.records.len(), 1);
    let ns = dns::udp(daemon.dns, "example.com.", Type::NS).unwrap();
    assert_eq!(ns.records[0].2, "ns1.example.com.");

    // An invalid PATCH changes nothing (all-or-nothing) and says why.
    let patch = json!({ "rrsets": [
        { "name": "ok.example.com.", "type": "A", "ttl": 60, "changetype": "REPLACE",
          "records": [{ "content": "192.0.2.9", "disabled": false }] },
        { "name": "bad.example.com.", "type": "A", "ttl": 60, "changetype": "REPLACE",
          "records": [{ "content": "300.1.1.1", "disabled": false }] },
    ]});
    let response = daemon.admin("PATCH", "/dns/zones/example.com.", Some(&patch.to_string()));
    assert_eq!(response.status, 422, "{}", response.body);
    assert!(
        response.body.contains("rrsets[1].records[0].content"),
        "{}",
        response.body
    );
    let ok = dns::udp(daemon.dns, "ok.example.com.", Type::A).unwrap();
    assert_eq!(
        ok.rcode,
        Rcode::NXDomain,
        "half of a rejected patch was applied"
    );

    // Zones are persisted: a restarted daemon serves the same records.
    daemon.stop();
    assert!(
        daemon.exit_status().unwrap().success(),
        "clean exit on SIGTERM"
    );
    daemon.restart();
    let answer = dns::udp(daemon.dns, "app.example.com.", Type::A).unwrap();
    assert_eq!(answer.records[0].1, 42);
    let zone = daemon.admin("GET", "/dns/zones/example.com", None).json();
    let owned = zone["rrsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "app.example.com.")
        .unwrap();
    assert_eq!(owned["comments"][0]["account"], "neutral");
}

#[test]
fn bad_requests_get_json_errors_and_the_server_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), free_port());
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST);
    wait_for_commit(&daemon, None);
    let api = daemon.api;
    let register = |token: Option<&str>, body: &str| {
        http::request(api, "POST", "/nodes/register", token, Some(body)).unwrap()
    };
    let ok_body = r#"{"region": "jp", "address": "127.0.0.9"}"#;
    let cases: Vec<(&str, http::Response, u16, &str)> = vec![
        (
            "malformed JSON",
            register(Some(JOIN_TOKEN), "{\"region\": "),
            400,
            "bad_json",
        ),
        (
            "missing token",
            register(None, ok_body),
            401,
            "unauthorized",
        ),
        (
            "wrong token",
            register(Some("not-the-join-token-at-all"), ok_body),
            401,
            "unauthorized",
        ),
        (
            "admin token is not a join token",
            register(Some(ADMIN_TOKEN), ok_body),
            401,
            "unauthorized",
        ),
        (
            "unknown region",
            register(
                Some(JOIN_TOKEN),
                r#"{"region": "mars", "address": "127.0.0.9"}"#,
            ),
            404,
            "unknown_region",
        ),
        (
            "unknown field",
            register(
                Some(JOIN_TOKEN),
                r#"{"region": "jp", "address": "127.0.0.9", "root": true}"#,
            ),
            400,
            "invalid_body",
        ),
        (
            "bad address",
            register(
                Some(JOIN_TOKEN),
                r#"{"region": "jp", "address": "999.1.1.1"}"#,
            ),
            400,
            "bad_request",
        ),
        (
            "broadcast address",
            register(
                Some(JOIN_TOKEN),
                r#"{"region": "jp", "address": "255.255.255.255"}"#,
            ),
            400,
            "bad_request",
        ),
        (
            "link-local address",
            register(
                Some(JOIN_TOKEN),
                r#"{"region": "jp", "address": "169.254.1.1"}"#,
            ),
            400,
            "bad_request",
        ),
        (
            "release image that is a path",
            http::post(
                api,
                "/nodes/jp-000000/release",
                Some(ADMIN_TOKEN),
                r#"{"image": "../../../../etc/passwd"}"#,
            ),
            400,
            "bad_request",
        ),
        (
            "oversized body",
            register(
                Some(JOIN_TOKEN),
                &format!(r#"{{"region": "{}"}}"#, "x".repeat(100_000)),
            ),
            413,
            "body_too_large",
        ),
        (
            "heartbeat of an unknown node",
            http::post(
                api,
                "/nodes/heartbeat",
                Some("whatever-token"),
                r#"{"node_id": "jp-000000"}"#,
            ),
            401,
            "unauthorized",
        ),
        (
            "drain without admin token",
            http::post(api, "/nodes/jp-000000/drain", None, ""),
            401,
            "unauthorized",
        ),
        (
            "sync with the join token",
            http::post(api, "/sync", Some(JOIN_TOKEN), ""),
            401,
            "unauthorized",
        ),
        ("unknown endpoint", daemon.get("/nope"), 404, "not_found"),
        (
            "unknown domain",
            daemon.get("/domains/nope.example.com"),
            404,
            "unknown_domain",
        ),
    ];
    for (name, response, status, code) in &cases {
        assert_eq!(response.status, *status, "{name}: {}", response.body);
        if name.contains("address") || name.contains("image") {
            let message = response.json()["message"].as_str().unwrap_or("").to_owned();
            let field = if name.contains("image") {
                "image: "
            } else {
                "address: "
            };
            assert!(
                message.starts_with(field),
                "{name}: the reason names the field: {message}"
            );
        }
        let body = response.json();
        assert_eq!(body["error"], *code, "{name}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {body}"
        );
    }

    // A real node, then heartbeats with bad metrics and a stolen node id.
    let created = register(Some(JOIN_TOKEN), ok_body);
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let (id, token) = (
        created["node_id"].as_str().unwrap(),
        created["node_token"].as_str().unwrap(),
    );
    let bad_metrics = http::post(
        api,
        "/nodes/heartbeat",
        Some(token),
        &format!(r#"{{"node_id": "{id}", "metrics": {{"cpu": 7.5}}}}"#),
    );
    assert_eq!(bad_metrics.status, 400);
    assert!(
        bad_metrics.body.contains("metrics.cpu"),
        "{}",
        bad_metrics.body
    );
    let other = register(
        Some(JOIN_TOKEN),
        r#"{"region": "sg", "address": "127.0.0.10"}"#,
    )
    .json();
    let stolen = http::post(
        api,
        "/nodes/heartbeat",
        Some(other["node_token"].as_str().unwrap()),
        &format!(r#"{{"node_id": "{id}"}}"#),
    );
    assert_eq!(stolen.status, 401, "another node's token must not work");
    let good = http::post(
        api,
        "/nodes/heartbeat",
        Some(token),
        &format!(
            r#"{{"node_id": "{id}", "metrics": {{"cpu": 0.5, "rtt_ms": 3, "error_rate": 0}}}}"#
        ),
    );
    assert_eq!(good.status, 200, "{}", good.body);

    // Garbage on the socket: deterministic pseudo-random bytes.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..20 {
        let len = 1 + (round * 97) % 3000;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let _ = http::raw(api, &bytes);
    }
    // A request that never finishes sending must not stall others.
    let slow = std::net::TcpStream::connect(api).unwrap();
    use std::io::Write as _;
    (&slow)
        .write_all(b"POST /nodes/register HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
        .unwrap();
    let health = daemon.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(
        register(
            Some(JOIN_TOKEN),
            r#"{"region": "jp", "address": "127.0.0.11"}"#
        )
        .status,
        201
    );
    drop(slow);
}

#[test]
fn the_api_serves_tls_and_agents_verify_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = repo_with(dir.path(), port);
    let pki = neutral_e2e::pki();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let mut args = FAST.to_vec();
    args.extend([
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), &args);
    let url = format!("https://127.0.0.1:{}", daemon.api.port());

    let _service = Service::start("127.0.0.12", port);
    let trusted = Agent::start_with(
        &url,
        dir.path(),
        "trusted",
        "jp",
        "127.0.0.12",
        &["--ca-file", ca.to_str().unwrap()],
    );
    let id = trusted.node_id();
    assert!(id.starts_with("jp-"), "{id}");
    // Its agent stream too: HTTP/2 chosen by ALPN, the same CA.
    wait_for("the agent stream over TLS", Duration::from_secs(10), || {
        trusted
            .log_text()
            .contains("agent stream open")
            .then_some(())
    });

    // Without the CA (system roots only) the agent refuses the server.
    let untrusted = Agent::start_with(&url, dir.path(), "untrusted", "jp", "127.0.0.13", &[]);
    wait_for(
        "the untrusted agent to report the certificate",
        Duration::from_secs(10),
        || {
            untrusted
                .log_text()
                .to_lowercase()
                .contains("certificate")
                .then_some(())
        },
    );
    assert!(
        !untrusted.state_file.exists(),
        "registered with an untrusted server"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = http::request(daemon.api, "GET", "/healthz", None, None);
    assert!(
        plain.map_or(true, |r| r.status != 200),
        "plain HTTP answered on the TLS port"
    );
}

#[test]
fn split_brain_guard_keeps_answers_when_most_nodes_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = repo_with(dir.path(), port);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST);
    wait_for_commit(&daemon, None);
    let ips = ["127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.23"];
    let mut services: Vec<Option<Service>> = ips
        .iter()
        .map(|ip| Some(Service::start(ip, port)))
        .collect();
    let agents: Vec<Agent> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let region = if i < 2 { "jp" } else { "sg" };
            Agent::start(&daemon, dir.path(), &format!("n{i}"), region, ip)
        })
        .collect();
    for agent in &agents {
        wait_status(&daemon, &agent.node_id(), "up", Duration::from_secs(20));
    }
    write_app_rrset(
        &daemon,
        &ips.iter().map(|ip| (*ip, 50)).collect::<Vec<_>>(),
        30,
    );
    let before = answers(&domain(&daemon));
    assert_eq!(before.len(), 4, "{before:?}");

    // Three of four services die together: the monitor is the suspect.
    for service in services.iter_mut().take(3) {
        service.take();
    }
    let status = wait_for("the split-brain guard", Duration::from_secs(10), || {
        let status = daemon.get("/status").json();
        status["split_brain"].is_string().then_some(status)
    });
    let message = status["split_brain"].as_str().unwrap();
    assert!(message.contains("3 of 4 nodes"), "{message}");
    let d = domain(&daemon);
    assert_eq!(d["mode"], "split_brain_hold", "{d}");
    assert_eq!(
        answers(&d),
        before,
        "answers from before the burst are kept"
    );
    let seen: std::collections::BTreeSet<String> = (0..300)
        .flat_map(|_| {
            dns::udp(daemon.dns, "app.example.com.", Type::A)
                .unwrap()
                .addresses()
        })
        .collect();
    assert_eq!(seen.len(), 4, "the data plane holds too: {seen:?}");
    let audit = daemon
        .admin("GET", "/audit?kind=gtm.split_brain", None)
        .json();
    assert!(
        !audit.as_array().unwrap().is_empty(),
        "the guard is audited"
    );

    // The services come back: the guard releases and health rules again.
    for (slot, ip) in services.iter_mut().zip(ips) {
        if slot.is_none() {
            *slot = Some(Service::start(ip, port));
        }
    }
    for agent in &agents {
        wait_status(&daemon, &agent.node_id(), "up", Duration::from_secs(20));
    }
    // The guard looks back one window (60 s by default); it releases once
    // nothing is down any more and weights are recomputed.
    wait_for("the guard to release", Duration::from_secs(10), || {
        daemon.get("/status").json()["split_brain"]
            .is_null()
            .then_some(())
    });
}

#[test]
fn a_second_daemon_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), free_port());
    let data = dir.path().join("data");
    let first = Daemon::start(&repo.bare, &data, FAST);
    // The same command again: refused at the lock, before it binds a port.
    let out = neutral_e2e::run_with_deadline(&mut first.command(), Duration::from_secs(30));
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("is in use by another neutral serve"),
        "{}",
        out.stderr
    );
    // The first one is unharmed.
    assert_eq!(first.get("/healthz").status, 200);
}

/// Registers a node at 127.0.0.9 in jp through the node API; returns
/// `{"node_id", "node_token", …}`.
fn register_jp_node(daemon: &Daemon) -> Value {
    let registered = http::request(
        daemon.api,
        "POST",
        "/nodes/register",
        Some(JOIN_TOKEN),
        Some(r#"{"region": "jp", "address": "127.0.0.9"}"#),
    )
    .unwrap();
    assert_eq!(registered.status, 201, "{}", registered.body);
    registered.json()
}

/// `count` heartbeats of `node`, 200 ms apart (up after `rise`, 2).
fn beat_up(daemon: &Daemon, node: &Value, count: usize) {
    for _ in 0..count {
        let heartbeat = http::request(
            daemon.api,
            "POST",
            "/nodes/heartbeat",
            node["node_token"].as_str(),
            Some(&json!({ "node_id": node["node_id"] }).to_string()),
        )
        .unwrap();
        assert_eq!(heartbeat.status, 200, "{}", heartbeat.body);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Opens `GET /events` on a raw connection and returns it with what was
/// read up to the first event (`open`).
fn open_events(daemon: &Daemon, token: &str) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(daemon.api).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: neutral\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !seen.contains("event: open") && !seen.contains("\r\n\r\n{") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    (stream, seen)
}

/// Reads from an event stream until `wanted` appears (10 s at most).
fn read_until(stream: &mut std::net::TcpStream, wanted: &str) -> String {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !seen.contains(wanted) {
        assert!(Instant::now() < deadline, "no {wanted:?} in {seen}");
        let n = stream
            .read(&mut buffer)
            .unwrap_or_else(|err| panic!("{err} waiting for {wanted:?}; read: {seen}"));
        assert!(n > 0, "stream closed before {wanted:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    seen
}

#[test]
fn events_stream_changes_to_readers_and_bound_their_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), free_port());
    let mut flags = neutral_e2e::cluster::FAST_NO_PROBES.to_vec();
    flags.extend(["--max-connections-per-ip", "600"]);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), &flags);
    wait_for_commit(&daemon, None);

    let anonymous = daemon.anonymous_get("/events");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    let (mut stream, head) = open_events(&daemon, ADMIN_TOKEN);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    // A commit that changes jp's weight: its declarations, then the domain.
    repo.write(
        "platform-config/gtm/app.yaml",
        &fast_config(free_port())[3].1.replace("jp: 100", "jp: 80"),
    );
    let commit = repo.commit_push("jp to 80");
    let seen = read_until(&mut stream, "event: declarations");
    assert!(seen.contains(&commit), "{seen}");
    // A node that registers and heartbeats comes up: its status, then the
    // domain's new answers.
    beat_up(&daemon, &register_jp_node(&daemon), 3);
    let seen = read_until(&mut stream, "regions [jp 40");
    assert!(seen.contains("event: node_status"), "{seen}");
    assert!(seen.contains("\"status\":\"up\""), "{seen}");
    assert!(seen.contains("\"domain\":\"app.example.com\""), "{seen}");

    // Streams that never read: the cap holds, the next is told why, and
    // the daemon keeps answering.
    let silent: Vec<_> = (1..256)
        .map(|_| open_events(&daemon, ADMIN_TOKEN).0)
        .collect();
    let refused = http::request(daemon.api, "GET", "/events", Some(ADMIN_TOKEN), None).unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(
        refused.json()["error"],
        "too_many_streams",
        "{}",
        refused.body
    );
    assert!(refused.header("retry-after").is_some());
    let started = Instant::now();
    assert_eq!(daemon.anonymous_get("/healthz").status, 200);
    assert_eq!(daemon.get("/status").status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Gone clients free their slots once an event finds them closed.
    drop(silent);
    drop(stream);
    repo.write(
        "platform-config/gtm/app.yaml",
        &fast_config(free_port())[3].1.replace("jp: 100", "jp: 60"),
    );
    repo.commit_push("jp to 60");
    wait_for("a free event stream slot", Duration::from_secs(20), || {
        let (stream, head) = open_events(&daemon, ADMIN_TOKEN);
        head.starts_with("HTTP/1.1 200").then_some(stream)
    });
}

/// A daemon (no probes) on the fast config with `all_down: last_known_good`,
/// its first commit applied.
fn last_known_good_daemon(dir: &std::path::Path) -> Daemon {
    let files: Vec<(&'static str, String)> = fast_config(free_port())
        .into_iter()
        .map(|(path, text)| {
            (
                path,
                text.replace("all_down: fail_open", "all_down: last_known_good"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir, &refs);
    let daemon = Daemon::start(
        &repo.bare,
        &dir.join("data"),
        neutral_e2e::cluster::FAST_NO_PROBES,
    );
    wait_for_commit(&daemon, None);
    daemon
}

#[test]
fn last_known_good_answers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = last_known_good_daemon(dir.path());
    // One node comes up with two heartbeats, then goes silent.
    beat_up(&daemon, &register_jp_node(&daemon), 2);
    wait_for(
        "the domain served normally",
        Duration::from_secs(10),
        || (domain(&daemon)["mode"] == "normal").then_some(()),
    );
    wait_for(
        "the silent node down: last known good",
        Duration::from_secs(10),
        || (domain(&daemon)["mode"] == "last_known_good").then_some(()),
    );
    let held = answers(&domain(&daemon));
    assert_eq!(held.len(), 1, "{held:?}");
    // Time for the report to be written, then a restart: the same answers,
    // still as last known good (without the stored report it would fail
    // open: no previous answers to keep).
    std::thread::sleep(Duration::from_secs(3));
    daemon.stop();
    daemon.restart();
    wait_for_commit(&daemon, None);
    let after = domain(&daemon);
    assert_eq!(after["mode"], "last_known_good", "{after}");
    assert_eq!(answers(&after), held);
}

/// Every address the embedded DNS answers for app.example.com A over 100
/// queries.
fn dns_answers(daemon: &Daemon) -> Vec<String> {
    let seen: std::collections::BTreeSet<String> = (0..100)
        .flat_map(|_| {
            dns::udp(daemon.dns, "app.example.com.", Type::A)
                .unwrap()
                .addresses()
        })
        .collect();
    seen.into_iter().collect()
}

#[test]
fn the_dns_data_planes_last_known_good_answers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = last_known_good_daemon(dir.path());
    let register = |address: &str| -> Value {
        let registered = http::request(
            daemon.api,
            "POST",
            "/nodes/register",
            Some(JOIN_TOKEN),
            Some(&json!({ "region": "jp", "address": address }).to_string()),
        )
        .unwrap();
        assert_eq!(registered.status, 201, "{}", registered.body);
        registered.json()
    };
    let (a, b) = (register("127.0.0.21"), register("127.0.0.22"));
    write_app_rrset(&daemon, &[("127.0.0.21", 50), ("127.0.0.22", 50)], 30);
    // Both up, then b silent (down) while a heartbeats: the data plane's
    // last known good set is a alone. Then a goes silent too.
    beat_up(&daemon, &b, 2);
    beat_up(&daemon, &a, 12);
    wait_status(
        &daemon,
        b["node_id"].as_str().unwrap(),
        "down",
        Duration::from_secs(10),
    );
    assert_eq!(dns_answers(&daemon), ["127.0.0.21"]);
    wait_status(
        &daemon,
        a["node_id"].as_str().unwrap(),
        "down",
        Duration::from_secs(10),
    );
    assert_eq!(dns_answers(&daemon), ["127.0.0.21"], "last known good");

    // Time for the memory to be stored (every 2 s), then a restart: the
    // restarted daemon knows both nodes down and answers with a, as before;
    // without the stored memory it had nothing to keep and failed open.
    std::thread::sleep(Duration::from_secs(3));
    daemon.stop();
    daemon.restart();
    wait_for_commit(&daemon, None);
    assert_eq!(dns_answers(&daemon), ["127.0.0.21"]);
    let metrics = daemon.admin("GET", "/metrics", None).body;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"neutral_dns_degraded_rrsets{mode="last_known_good"} 1"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("degraded_rrsets"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_trickled_body_is_cut_off_at_its_deadline_and_dns_tcp_limits_are_flags() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), free_port());
    let mut flags = FAST.to_vec();
    flags.extend([
        "--dns-tcp-max-per-ip",
        "2",
        "--dns-tcp-max-connections",
        "50",
    ]);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), &flags);
    wait_for_commit(&daemon, None);

    // A registration whose body comes one byte a second: the idle timeout
    // (150 s) never fires, the body deadline (10 s) does.
    let mut slow = std::net::TcpStream::connect(daemon.api).unwrap();
    write!(
        slow,
        "POST /nodes/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {JOIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{"
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(20) {
        match slow.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => {
                let _ = slow.write_all(b" ");
            }
        }
    }
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(daemon.anonymous_get("/healthz").status, 200);

    // DNS over TCP: two connections from this address are served, the third
    // is closed unserved (--dns-tcp-max-per-ip 2).
    let held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(daemon.dns).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = std::net::TcpStream::connect(daemon.dns).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let closed = third.read(&mut buffer);
    assert!(
        matches!(closed, Ok(0))
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the third connection was served: {closed:?}"
    );
    for mut stream in held {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let still_open = stream.read(&mut buffer);
        assert!(
            still_open
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "a served connection was closed: {still_open:?}"
        );
    }
    let metrics = http::request(daemon.api, "GET", "/metrics", Some(ADMIN_TOKEN), None).unwrap();
    assert!(
        metrics
            .body
            .contains("neutral_dns_dropped_total{reason=\"tcp_limit\"} 1"),
        "{}",
        metrics.body
    );
}

/// A registration storm is folded into recomputes at most one per tick
/// (100 ms or longer; issue 17), not one per registration: whatever the
/// machine's speed, the recomputes during the storm are bounded by its
/// length.
#[test]
fn a_registration_storm_folds_into_one_recompute_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let files = fast_config(free_port());
    let mut refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let big_region = "name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 400\nbase_weight: 100\n";
    refs.retain(|(path, _)| *path != "platform-config/regions/jp.yaml");
    refs.push(("platform-config/regions/jp.yaml", big_region));
    let repo = Repo::create(dir.path(), &refs);
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[
            "--no-autoscale",
            "--no-probes",
            "--register-rate",
            "10000",
            "--register-burst",
            "10000",
        ],
    );
    wait_for_commit(&daemon, None);
    let recomputes = || {
        daemon
            .get("/metrics")
            .body
            .lines()
            .find_map(|l| {
                l.strip_prefix("neutral_weight_recomputes_total ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let before = recomputes();
    let started = Instant::now();
    let api = daemon.api;
    let workers: Vec<_> = (0..8u8)
        .map(|worker| {
            std::thread::spawn(move || {
                for i in 0..40u8 {
                    let body = format!(
                        r#"{{"region": "jp", "address": "127.1.{worker}.{}"}}"#,
                        i + 1
                    );
                    let registered = http::request(
                        api,
                        "POST",
                        "/nodes/register",
                        Some(JOIN_TOKEN),
                        Some(&body),
                    )
                    .unwrap();
                    assert_eq!(registered.status, 201, "{}", registered.body);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let storm = started.elapsed();
    // The last request's recompute, at most one tick later.
    std::thread::sleep(Duration::from_millis(300));
    let counted = recomputes() - before;
    let elapsed = started.elapsed();
    // One per 100 ms tick, the 2 s clock-driven ones, and slack for the
    // heartbeat ticker's reconciles.
    let bound = elapsed.as_secs_f64() / 0.1 + elapsed.as_secs_f64() / 2.0 + 5.0;
    assert!(
        counted <= bound,
        "{counted} recomputes for 320 registrations in {storm:?} (bound {bound:.0})"
    );
    assert_eq!(
        daemon.get("/nodes").json().as_array().map(Vec::len),
        Some(320)
    );
    eprintln!("320 registrations in {storm:?}: {counted} recomputes");
}

/// Every audit record of the daemon (one page of up to 10,000).
fn audit_records(daemon: &Daemon) -> Vec<Value> {
    let page = daemon.admin("GET", "/audit?limit=10000", None);
    assert_eq!(page.status, 200, "{}", page.body);
    page.json().as_array().cloned().unwrap_or_default()
}

/// The records in the archive folder's files, and how many files there are.
fn archived_records(archive: &std::path::Path) -> (Vec<Value>, usize) {
    let Ok(files) = std::fs::read_dir(archive) else {
        return (Vec::new(), 0);
    };
    let mut names: Vec<_> = files.map(|f| f.unwrap().path()).collect();
    names.sort();
    let mut records = Vec::new();
    for name in &names {
        let file = name.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            file.starts_with("audit-") && file.ends_with(".jsonl"),
            "only batch files in the archive: {file}"
        );
        for line in std::fs::read_to_string(name).unwrap().lines() {
            records.push(serde_json::from_str::<Value>(line).unwrap());
        }
    }
    (records, names.len())
}

#[test]
fn audit_retention_archives_the_oldest_entries_before_it_prunes_them() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), free_port());
    let archive = dir.path().join("audit-archive");
    let mut args = FAST.to_vec();
    args.extend(["--audit-retention", "3s", "--audit-archive"]);
    args.push(archive.to_str().unwrap());
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), &args);
    wait_for_commit(&daemon, None);
    let node = register_jp_node(&daemon);
    let before = audit_records(&daemon);
    assert!(
        before.iter().any(|r| r["kind"] == "node.registered"),
        "{before:?}"
    );

    // Retention runs every second with a 3 s retention: the entries written
    // at start are pruned within a few seconds, after they were archived.
    let pruned = wait_for("an audit.pruned entry", Duration::from_secs(30), || {
        let notes = daemon.admin("GET", "/audit?kind=audit.pruned", None).json();
        notes.as_array().and_then(|n| n.first().cloned())
    });
    assert_eq!(pruned["actor"], "retention");
    assert!(
        pruned["message"]
            .as_str()
            .unwrap()
            .contains(archive.to_str().unwrap()),
        "{pruned}"
    );
    beat_up(&daemon, &node, 1);

    // Read the log, then the archive: an entry pruned between the two reads
    // is in both, and none may be in neither.
    let kept = audit_records(&daemon);
    let (archived, files) = archived_records(&archive);
    assert!(files >= 1);
    let ids = |records: &[Value]| -> Vec<i64> {
        records.iter().map(|r| r["id"].as_i64().unwrap()).collect()
    };
    let mut all: Vec<i64> = ids(&archived).into_iter().chain(ids(&kept)).collect();
    all.sort_unstable();
    all.dedup();
    let newest = *all.last().unwrap();
    assert_eq!(all, (1..=newest).collect::<Vec<_>>(), "no entry lost");
    let mut compared = 0;
    for record in &before {
        let id = record["id"].as_i64().unwrap();
        if let Some(copy) = archived.iter().find(|r| r["id"] == id) {
            assert_eq!(copy, record, "archived as GET /audit showed it");
            compared += 1;
        }
    }
    // The entries written at start were read before and pruned since.
    assert!(compared >= 1, "no entry read before was archived");
    let first_pruned = pruned["data"]["first_id"].as_i64().unwrap();
    assert!(
        kept.iter()
            .all(|r| r["id"].as_i64().unwrap() > first_pruned),
        "the pruned range is gone from the log: {kept:?}"
    );
    let metrics = daemon.admin("GET", "/metrics", None).body;
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("neutral_audit_entries_pruned_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(counted >= 1, "{metrics}");
}
