//! Leader failover among control-plane replicas on one PostgreSQL store,
//! printed, never asserted: two `neutral serve` replicas, the leader killed
//! with SIGKILL (or frozen with SIGSTOP), and the time until the other
//! reports itself the leader on `GET /status`; median and p90 of `TRIALS`
//! (default 10) per kind, with `--lease-ttl` `LEASE_TTL` (default 3s).
//!
//! Then DNS convergence across replicas: two agents serve one domain, whose
//! records both replicas' DNS servers hold (written through one of them);
//! an agent stops, the leader takes its node down when its heartbeats time
//! out, and the time from the leader's DNS dropping the node to the
//! follower's doing so is printed (median and p90 of `TRIALS`).
//!
//! `cargo bench -p neutral-e2e --bench failover` (needs Debian's
//! `postgresql` binaries, as the store tests do).

use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use neutral_e2e::bench::{exclusion_index, median_p90};
use neutral_e2e::cluster::{Agent, Daemon, FAST_NO_PROBES, fast_repo, wait_for};
use neutral_store::pg_testing::start_or_skip;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn role(daemon: &Daemon) -> String {
    daemon.get("/status").json()["leadership"]["role"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn signal(daemon: &Daemon, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &daemon.pid().to_string()])
        .status();
}

fn main() {
    let Some(server) = start_or_skip() else {
        eprintln!("no PostgreSQL: install Debian's postgresql package (scripts/setup does)");
        std::process::exit(2);
    };
    let trials: usize = env_or("TRIALS", 10).max(1);
    let ttl: String = env_or("LEASE_TTL", "3s".to_owned());
    let url = server.create_database().expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = fast_repo(dir.path());
    let mut args: Vec<&str> = FAST_NO_PROBES.to_vec();
    args.extend(["--store", &url, "--lease-ttl", &ttl]);
    let mut replicas = [
        Daemon::start(&repo.bare, &dir.path().join("a"), &args),
        Daemon::start(&repo.bare, &dir.path().join("b"), &args),
    ];
    let leader_of = |replicas: &[Daemon; 2]| {
        wait_for("a leader", Duration::from_secs(30), || {
            replicas.iter().position(|r| role(r) == "leader")
        })
    };
    for kind in ["SIGKILL", "SIGSTOP"] {
        let mut took = Vec::new();
        for _ in 0..trials {
            let leader = leader_of(&replicas);
            let other = 1 - leader;
            // The follower must have seen the leader before the failure.
            wait_for("a follower", Duration::from_secs(30), || {
                (role(&replicas[other]) == "follower").then_some(())
            });
            let started = Instant::now();
            match kind {
                "SIGKILL" => replicas[leader].kill9(),
                _ => signal(&replicas[leader], "STOP"),
            }
            wait_for("the other replica to lead", Duration::from_secs(30), || {
                (role(&replicas[other]) == "leader").then_some(())
            });
            took.push(started.elapsed());
            match kind {
                "SIGKILL" => replicas[leader].restart(),
                _ => signal(&replicas[leader], "CONT"),
            }
            wait_for("the old leader to follow", Duration::from_secs(30), || {
                (role(&replicas[leader]) == "follower").then_some(())
            });
        }
        let (median, p90) = median_p90(&took).unwrap_or_default();
        println!(
            "leader failover after {kind}, --lease-ttl {ttl}: median {median:?}, p90 {p90:?} ({trials} trials)"
        );
    }
    convergence(&replicas, dir.path(), trials, leader_of(&replicas));
}

/// Whether `ip` is among the answers of `samples` queries to `daemon`'s DNS.
fn answered(daemon: &Daemon, ip: &str, samples: usize) -> bool {
    (0..samples).any(|_| {
        neutral_e2e::dns::udp(daemon.dns, "app.example.com.", RecordType::A)
            .is_ok_and(|answer| answer.addresses().iter().any(|a| a == ip))
    })
}

/// Consecutive answers without an address that count as its exclusion, and
/// how far apart they are asked.
const RUN: usize = 20;
const SAMPLE_EVERY: Duration = Duration::from_millis(25);

fn convergence(replicas: &[Daemon; 2], dir: &std::path::Path, trials: usize, leader: usize) {
    let (lead, follow) = (&replicas[leader], &replicas[1 - leader]);
    let zone = lead.admin(
        "POST",
        "/dns/zones",
        Some(r#"{"name": "example.com.", "kind": "Native", "nameservers": ["ns1.example.com."]}"#),
    );
    assert!(zone.status == 201 || zone.status == 409, "{}", zone.body);
    let records = r#"{"rrsets": [{"name": "app.example.com.", "type": "A", "ttl": 1, "changetype": "REPLACE", "records": [{"content": "127.0.0.2", "disabled": false}, {"content": "127.0.0.3", "disabled": false}]}]}"#;
    let patched = lead.admin("PATCH", "/dns/zones/example.com.", Some(records));
    assert_eq!(patched.status, 204, "{}", patched.body);
    let replica = format!("http://{}", follow.api);
    let extra = ["--control-plane-replica", replica.as_str()];
    let lead_url = format!("http://{}", lead.api);
    let _steady = Agent::start_with(&lead_url, dir, "conv-a", "jp", "127.0.0.2", &extra);
    let mut leaving = Agent::start_with(&lead_url, dir, "conv-b", "jp", "127.0.0.3", &extra);
    let mut lag = Vec::new();
    let mut detection = Vec::new();
    for _ in 0..trials {
        wait_for(
            "both replicas answering both nodes",
            Duration::from_secs(60),
            || {
                [lead, follow]
                    .iter()
                    .all(|d| answered(d, "127.0.0.2", 30) && answered(d, "127.0.0.3", 30))
                    .then_some(())
            },
        );
        let stopped = Instant::now();
        leaving.stop();
        // Both servers asked in turn; per server, when 127.0.0.3 left.
        let mut seen: [Vec<(Duration, bool)>; 2] = [Vec::new(), Vec::new()];
        let mut out: [Option<Duration>; 2] = [None, None];
        while out.iter().any(Option::is_none) {
            assert!(
                stopped.elapsed() < Duration::from_secs(60),
                "the node stayed in the answers"
            );
            for (i, daemon) in [lead, follow].iter().enumerate() {
                if out[i].is_some() {
                    continue;
                }
                if let Ok(answer) =
                    neutral_e2e::dns::udp(daemon.dns, "app.example.com.", RecordType::A)
                    && !answer.addresses().is_empty()
                {
                    let present = answer.addresses().iter().any(|a| a == "127.0.0.3");
                    seen[i].push((stopped.elapsed(), present));
                }
                let present: Vec<bool> = seen[i].iter().map(|(_, p)| *p).collect();
                out[i] = exclusion_index(&present, RUN).map(|index| seen[i][index].0);
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
        let (at_leader, at_follower) = (out[0].unwrap_or_default(), out[1].unwrap_or_default());
        detection.push(at_leader);
        lag.push(at_follower.saturating_sub(at_leader));
        leaving.restart();
    }
    let (median, p90) = median_p90(&detection).unwrap_or_default();
    println!(
        "node stopped -> out of the leader's DNS (heartbeat timeout 2 s): median {median:?}, p90 {p90:?} ({trials} trials)"
    );
    let (median, p90) = median_p90(&lag).unwrap_or_default();
    println!(
        "leader's DNS -> follower's DNS without the node (convergence across replicas): median {median:?}, p90 {p90:?} ({trials} trials)"
    );
}
