//! Issue 14's fault matrix, the faults not covered elsewhere (the table in
//! docs/operations.md names the test of every fault): `kill -9` inside a
//! heartbeat batch's transaction and inside a DNS zone write's, the data
//! folder's disk full, and the Git remote gone. Each time the daemon is
//! restarted (or recovers by itself) and the test asserts what survives:
//! everything committed, nothing half-written, no duplicate node, and the
//! same identities.
//!
//! The kills land provably inside the transaction: the store's fault points
//! (`NEUTRAL_FAULT_PAUSE_INSIDE_*`, test-only) stop it with every write done
//! and nothing committed, and say so with `<arm>.reached`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use neutral_e2e::cluster::{ADMIN_TOKEN, Daemon, FAST_NO_PROBES, JOIN_TOKEN, fast_repo, wait_for};
use neutral_e2e::{dns, http};
use serde_json::{Value, json};

fn wait_for_commit(daemon: &Daemon) -> String {
    wait_for("the first sync", Duration::from_secs(30), || {
        daemon.get("/status").json()["commit"]
            .as_str()
            .map(str::to_owned)
    })
}

/// Registers a jp node at `address`; its id and token.
fn register(daemon: &Daemon, address: &str) -> (String, String) {
    let body = json!({ "region": "jp", "address": address }).to_string();
    let reply = http::request(
        daemon.api,
        "POST",
        "/nodes/register",
        Some(JOIN_TOKEN),
        Some(&body),
    )
    .expect("POST /nodes/register");
    assert_eq!(reply.status, 201, "{}", reply.body);
    let reply = reply.json();
    (
        reply["node_id"].as_str().unwrap().to_owned(),
        reply["node_token"].as_str().unwrap().to_owned(),
    )
}

fn heartbeat(daemon: &Daemon, id: &str, token: &str, cpu: f64) -> u16 {
    let body = json!({ "node_id": id, "metrics": { "cpu": cpu, "rtt_ms": 10, "error_rate": 0 } })
        .to_string();
    http::request(
        daemon.api,
        "POST",
        "/nodes/heartbeat",
        Some(token),
        Some(&body),
    )
    .map_or(0, |r| r.status)
}

fn node(daemon: &Daemon, id: &str) -> Value {
    daemon.get(&format!("/nodes/{id}")).json()
}

fn node_count(daemon: &Daemon) -> usize {
    daemon.get("/nodes").json().as_array().map_or(0, Vec::len)
}

/// Waits (bounded) for the fault point's `<arm>.reached`, then removes the
/// arm and the marker.
fn wait_reached(arm: &Path) {
    let mut reached = arm.as_os_str().to_owned();
    reached.push(".reached");
    let reached = std::path::PathBuf::from(reached);
    wait_for(
        "the transaction to stop at the fault point",
        Duration::from_secs(20),
        || reached.exists().then_some(()),
    );
    std::fs::remove_file(&reached).unwrap();
    std::fs::remove_file(arm).unwrap();
}

/// A daemon on the fast repository whose store fault point `fault` (an
/// env var) is the returned arm file (not created yet), synced once.
fn armed(fault: &str) -> (tempfile::TempDir, Daemon, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let arm = dir.path().join("fault.arm");
    let daemon = Daemon::start_with_env(
        &repo.bare,
        &dir.path().join("data"),
        FAST_NO_PROBES,
        &[(fault, arm.to_str().unwrap())],
    );
    wait_for_commit(&daemon);
    (dir, daemon, arm)
}

#[test]
fn kill_9_inside_a_heartbeat_batch_keeps_what_was_committed_and_every_identity() {
    let (_dir, mut daemon, arm) = armed("NEUTRAL_FAULT_PAUSE_INSIDE_HEARTBEATS");
    let (id, token) = register(&daemon, "127.0.0.31");
    for _ in 0..3 {
        assert_eq!(heartbeat(&daemon, &id, &token, 0.31), 200);
    }
    // A clean stop writes everything: 0.31 is committed.
    daemon.stop();
    daemon.restart();
    wait_for(
        "the committed metrics back",
        Duration::from_secs(20),
        || (node(&daemon, &id)["metrics"]["cpu"].as_f64() == Some(0.31)).then_some(()),
    );

    // The next batch stops inside its transaction; kill -9 there.
    std::fs::write(&arm, b"armed").unwrap();
    assert_eq!(
        heartbeat(&daemon, &id, &token, 0.77),
        200,
        "accepted in memory"
    );
    wait_reached(&arm);
    daemon.kill9();
    daemon.restart();

    // The killed batch is not in the store; what was committed is.
    let restored = node(&daemon, &id);
    assert_eq!(
        restored["metrics"]["cpu"].as_f64(),
        Some(0.31),
        "{restored}"
    );
    assert_eq!(restored["address"], "127.0.0.31");
    // The node's identity and token survive: it heartbeats on, no new
    // registration, and comes back up.
    assert_eq!(heartbeat(&daemon, &id, &token, 0.42), 200);
    wait_for("the node up again", Duration::from_secs(20), || {
        let _ = heartbeat(&daemon, &id, &token, 0.42);
        (node(&daemon, &id)["status"] == "up").then_some(())
    });
    assert_eq!(node_count(&daemon), 1, "no duplicate node");
}

#[test]
fn kill_9_inside_a_zone_write_leaves_the_old_zone_served_and_the_retry_applies_once() {
    let (_dir, mut daemon, arm) = armed("NEUTRAL_FAULT_PAUSE_INSIDE_ZONE_WRITE");
    let created = daemon.admin(
        "POST",
        "/dns/zones",
        Some(r#"{"name": "example.net.", "kind": "Native", "nameservers": ["ns1.example.net."]}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let patch = |address: &str| {
        json!({ "rrsets": [{ "name": "www.example.net.", "type": "A", "ttl": 30,
            "changetype": "REPLACE", "records": [{ "content": address, "disabled": false }] }] })
        .to_string()
    };
    let first = daemon.admin(
        "PATCH",
        "/dns/zones/example.net.",
        Some(&patch("192.0.2.1")),
    );
    assert_eq!(first.status, 204, "{}", first.body);
    let serial = |daemon: &Daemon| {
        daemon.admin("GET", "/dns/zones/example.net.", None).json()["serial"]
            .as_u64()
            .unwrap()
    };
    let before = serial(&daemon);
    let puts = |daemon: &Daemon| {
        let audit = daemon.admin("GET", "/audit?subject=example.net.&kind=dns.zone.put", None);
        audit.json().as_array().map_or(0, Vec::len)
    };
    let puts_before = puts(&daemon);

    // The next write stops inside its transaction; kill -9 there.
    std::fs::write(&arm, b"armed").unwrap();
    let api = daemon.api;
    let body = patch("192.0.2.2");
    let request = std::thread::spawn(move || {
        http::request(
            api,
            "PATCH",
            "/dns/zones/example.net.",
            Some(ADMIN_TOKEN),
            Some(&body),
        )
    });
    wait_reached(&arm);
    daemon.kill9();
    let _ = request.join();
    daemon.restart();

    // The old zone, whole: served, stored, audited once.
    assert_eq!(serial(&daemon), before);
    let answer = dns::udp(daemon.dns, "www.example.net.", RecordType::A).expect("DNS");
    assert_eq!(answer.addresses(), ["192.0.2.1"]);
    assert_eq!(
        puts(&daemon),
        puts_before,
        "an audit entry of the killed write"
    );
    // The retry applies once.
    let again = daemon.admin(
        "PATCH",
        "/dns/zones/example.net.",
        Some(&patch("192.0.2.2")),
    );
    assert_eq!(again.status, 204, "{}", again.body);
    assert_eq!(serial(&daemon), before + 1);
    let answer = dns::udp(daemon.dns, "www.example.net.", RecordType::A).expect("DNS");
    assert_eq!(answer.addresses(), ["192.0.2.2"]);
    assert_eq!(puts(&daemon), puts_before + 1);
}

/// A small filesystem for the data folder; unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_writes_cleanly_and_they_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let mount = dir.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs"])
        .arg(&mount)
        .output()
        .expect("run mount");
    if !mounted.status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    }
    let _tmpfs = Tmpfs(mount.clone());
    let data = mount.join("data");
    let mut daemon = Daemon::start(&repo.bare, &data, FAST_NO_PROBES);
    wait_for_commit(&daemon);
    let (id, token) = register(&daemon, "127.0.0.41");
    assert_eq!(heartbeat(&daemon, &id, &token, 0.2), 200);

    // Fill the filesystem.
    let filler = mount.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    // Writes fail, each answered with the JSON error shape; reads and the
    // DNS server go on; the failures are counted.
    let body = json!({ "region": "jp", "address": "127.0.0.42" }).to_string();
    let refused = wait_for("a refused write", Duration::from_secs(20), || {
        let reply = http::request(
            daemon.api,
            "POST",
            "/nodes/register",
            Some(JOIN_TOKEN),
            Some(&body),
        )
        .ok()?;
        (reply.status >= 500).then_some(reply)
    });
    assert!(refused.json()["error"].is_string(), "{}", refused.body);
    assert_eq!(daemon.anonymous_get("/healthz").status, 200);
    assert_eq!(daemon.get("/nodes").status, 200);
    let metrics = daemon.get("/metrics").body;
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("neutral_store_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "store errors not counted:\n{metrics}");

    // Space returns: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    let (second, _) = wait_for(
        "a write after space returned",
        Duration::from_secs(20),
        || {
            let reply = http::request(
                daemon.api,
                "POST",
                "/nodes/register",
                Some(JOIN_TOKEN),
                Some(&body),
            )
            .ok()?;
            (reply.status == 201).then(|| {
                let reply = reply.json();
                (reply["node_id"].as_str().unwrap().to_owned(), ())
            })
        },
    );
    // And everything is there after a restart: the store is whole.
    daemon.kill9();
    daemon.restart();
    let ids: Vec<String> = daemon
        .get("/nodes")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&id) && ids.contains(&second), "{ids:?}");
    assert_eq!(ids.len(), 2, "no duplicate: {ids:?}");
    assert_eq!(heartbeat(&daemon, &id, &token, 0.3), 200);
}

#[test]
fn the_git_remote_gone_keeps_the_last_good_config_and_the_next_commit_applies_on_its_return() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fast_repo(dir.path());
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST_NO_PROBES);
    let first = wait_for_commit(&daemon);
    let (id, token) = register(&daemon, "127.0.0.51");
    assert_eq!(heartbeat(&daemon, &id, &token, 0.2), 200);

    // The remote disappears.
    let away = dir.path().join("repo-away.git");
    std::fs::rename(&repo.bare, &away).unwrap();
    let error = wait_for("the sync to fail visibly", Duration::from_secs(30), || {
        let _ = daemon.admin("POST", "/sync", None);
        daemon.get("/status").json()["sync"]["last_error"]
            .as_str()
            .map(str::to_owned)
    });
    assert!(error.contains("repo.git"), "{error}");
    // The last good configuration stays in force; nodes and DNS go on.
    let status = daemon.get("/status").json();
    assert_eq!(status["commit"], first.as_str(), "{status}");
    assert_eq!(
        daemon.get("/regions").json().as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(heartbeat(&daemon, &id, &token, 0.2), 200);

    // It returns with a new commit: applied.
    std::fs::rename(&away, &repo.bare).unwrap();
    repo.write(
        "platform-config/regions/extra.yaml",
        "name: extra\nprovider: local\nmin_nodes: 1\nmax_nodes: 2\n",
    );
    let next = repo.commit_push("a region while the remote was away");
    wait_for("the next commit applied", Duration::from_secs(30), || {
        let _ = daemon.admin("POST", "/sync", None);
        (daemon.get("/status").json()["commit"] == next.as_str()).then_some(())
    });
    assert!(daemon.get("/status").json()["sync"]["last_error"].is_null());
    assert_eq!(
        daemon.get("/regions").json().as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(node_count(&daemon), 1);
}
