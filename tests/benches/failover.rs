//! Leader failover among control-plane replicas on one PostgreSQL store,
//! printed, never asserted: two `neutral serve` replicas, the leader killed
//! with SIGKILL (or frozen with SIGSTOP), and the time until the other
//! reports itself the leader on `GET /status`; median and p90 of `TRIALS`
//! (default 10) per kind, with `--lease-ttl` `LEASE_TTL` (default 3s).
//!
//! `cargo bench -p neutral-e2e --bench failover` (needs Debian's
//! `postgresql` binaries, as the store tests do).

use std::process::Command;
use std::time::{Duration, Instant};

use neutral_e2e::bench::median_p90;
use neutral_e2e::cluster::{Daemon, FAST_NO_PROBES, fast_repo, wait_for};
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
}
