//! Soak of the real `neutral serve` (release build) under simulated churn,
//! for issue 14's "flat, not growing": RSS, open file descriptors and the
//! SQLite store's size, sampled at a fixed period.
//!
//! Starts the daemon on a scratch repository of four regions with autoscale
//! policies, registers `SOAK_NODES` simulated nodes and keeps them busy for
//! `SOAK_MINUTES`:
//!
//! - every live node heartbeats every 2 s with metrics that oscillate around
//!   the autoscale thresholds (CPU 0.75 ± 0.15, a 2-minute wave per region),
//!   so the autoscaler decides and commits in both directions;
//! - every 10 s, 2 % of the live nodes die (stop heartbeating) and 2 % are
//!   drained; a node dead for 30 s is deleted and a new one joins at a new
//!   address in its region; a drained node is undrained after 20 s.
//!
//! Every `SOAK_SAMPLE_SECONDS` it prints one row: elapsed minutes, RSS, file
//! descriptors, the store's files (database + WAL), nodes known to the
//! daemon, the rows of metric samples and of the audit log (with the
//! `sqlite3` tool; samples are kept `SOAK_RETENTION_MINUTES`, default 10,
//! and audit entries `SOAK_AUDIT_RETENTION_MINUTES`, default 10, archived to
//! a scratch folder, so both level off within the run; 0 keeps the audit log
//! whole), heartbeats answered and failed since the last row. At the end it
//! prints the first and last samples side by side, the audit archive's size
//! and the machine's load.
//! Every loop is bounded by the run's duration; requests time out after 5 s.
//!
//! `scripts/soak` (release build), or `cargo bench -p neutral-e2e --bench
//! soak`; tune with `SOAK_MINUTES` (60), `SOAK_NODES` (300),
//! `SOAK_SAMPLE_SECONDS` (60).

#[allow(dead_code)]
mod common;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    ADMIN_TOKEN, ConfigRepo, Daemon, DaemonSpec, Http, bearer, env_number, machine_load,
    neutral_bin, register, rss_mib,
};
use hyper::header::AUTHORIZATION;
use hyper::{Method, StatusCode};

const REGIONS: [&str; 4] = ["jp", "sg", "us", "eu"];
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const CHURN_EVERY: Duration = Duration::from_secs(10);
const DEAD_FOR: Duration = Duration::from_secs(30);
const DRAINED_FOR: Duration = Duration::from_secs(20);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTIONS: usize = 8;

#[derive(Debug)]
struct SimNode {
    id: String,
    region: usize,
    authorization: hyper::header::HeaderValue,
    /// Since when it stopped heartbeating, if it did.
    dead_since: Option<Instant>,
    drained_since: Option<Instant>,
}

/// One row of the report.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    minutes: f64,
    rss_mib: f64,
    fds: usize,
    store_mib: f64,
    nodes: usize,
    /// Rows of `samples` and `audit_log`, when the `sqlite3` tool is here.
    rows: Option<(u64, u64)>,
    heartbeats_ok: u64,
    heartbeats_failed: u64,
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The SQLite database with its WAL and shared-memory files, in MiB.
fn store_mib(data: &Path) -> f64 {
    let bytes: u64 = [
        "neutral.sqlite3",
        "neutral.sqlite3-wal",
        "neutral.sqlite3-shm",
    ]
    .iter()
    .filter_map(|f| std::fs::metadata(data.join(f)).ok())
    .map(|m| m.len())
    .sum();
    bytes as f64 / (1024.0 * 1024.0)
}

/// Rows of the metric samples and the audit log, read with the `sqlite3`
/// tool (read-only); `None` without it.
fn rows(data: &Path) -> Option<(u64, u64)> {
    let out = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(data.join("neutral.sqlite3"))
        .arg("SELECT (SELECT count(*) FROM samples) || ' ' || (SELECT count(*) FROM audit_log)")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (samples, audit) = text.trim().split_once(' ')?;
    Some((samples.parse().ok()?, audit.parse().ok()?))
}

/// A fresh loopback address for the `n`th registration.
fn address(n: u32) -> IpAddr {
    let d = u8::try_from(n % 250 + 1).unwrap_or(1);
    let c = u8::try_from((n / 250) % 256).unwrap_or(0);
    let b = u8::try_from(20 + (n / 64_000) % 200).unwrap_or(20);
    IpAddr::V4(Ipv4Addr::new(127, b, c, d))
}

fn files(nodes_per_region: u32) -> Vec<(String, String)> {
    let max = nodes_per_region * 2;
    let mut files = Vec::new();
    for region in REGIONS {
        files.push((
            format!("platform-config/regions/{region}.yaml"),
            format!(
                "name: {region}\nprovider: edge\nmin_nodes: 1\nmax_nodes: {max}\n\
                 base_weight: 100\nstate: up\nfailover: []\n"
            ),
        ));
        files.extend(common::autoscale_files(
            region,
            nodes_per_region,
            (0.8, 0.7),
            "20s",
            "30s",
        ));
    }
    let weights: Vec<String> = REGIONS.iter().map(|r| format!("{r}: 100")).collect();
    files.push((
        "platform-config/gtm/app.yaml".to_owned(),
        format!(
            "domain: app.example.com\nzone: example.com\ntype: A\nttl: 30\ndns: embedded\n\
             min_ready_nodes: 1\nregions: {{ {} }}\nall_down: fail_open\n\
             probe: {{ http: /healthz, port: 80, interval: 5s, timeout: 1s, rise: 2, fall: 2 }}\n",
            weights.join(", ")
        ),
    ));
    files
}

fn heartbeat_body(node: &SimNode, elapsed: Duration) -> Bytes {
    let phase = node.region as f64 * std::f64::consts::FRAC_PI_2;
    let wave = (elapsed.as_secs_f64() / 120.0 * std::f64::consts::TAU + phase).sin();
    let cpu = (0.75 + 0.15 * wave).clamp(0.0, 1.0);
    Bytes::from(format!(
        r#"{{"node_id":"{}","metrics":{{"cpu":{cpu:.3},"rtt_ms":{:.1},"error_rate":0.001}}}}"#,
        node.id,
        20.0 + 5.0 * wave
    ))
}

async fn admin_call(http: &mut Http, method: Method, path: &str) -> Option<StatusCode> {
    let authorization = bearer(ADMIN_TOKEN);
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        http.send(
            method,
            path,
            &[(AUTHORIZATION, &authorization)],
            Bytes::new(),
        ),
    )
    .await
    .ok()?
    .ok()
    .map(|(status, _)| status)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let minutes = env_number("SOAK_MINUTES", 60);
    let node_count = u32::try_from(env_number("SOAK_NODES", 300)).unwrap_or(300);
    let sample_every = Duration::from_secs(env_number("SOAK_SAMPLE_SECONDS", 60).max(1));
    let per_region = (node_count / 4).max(1);
    // Short enough that the samples reach their steady size within the run.
    let retention = format!("{}m", env_number("SOAK_RETENTION_MINUTES", 10).max(1));
    let audit_minutes = env_number("SOAK_AUDIT_RETENTION_MINUTES", 10);
    let archive = tempfile::tempdir().expect("temp dir");
    let mut extra: Vec<String> = [
        "--no-probes",
        "--sync-interval",
        "10s",
        "--autoscale-interval",
        "5s",
        "--sample-retention",
        &retention,
    ]
    .map(str::to_owned)
    .to_vec();
    if audit_minutes > 0 {
        extra.extend([
            "--audit-retention".to_owned(),
            format!("{audit_minutes}m"),
            "--audit-archive".to_owned(),
            archive.path().display().to_string(),
        ]);
    }
    let bin = neutral_bin();
    let repo = ConfigRepo::new(&files(per_region));
    let daemon = Daemon::start(
        &bin,
        &repo,
        &DaemonSpec {
            heartbeat_interval: "2s".to_owned(),
            heartbeat_timeout: "6s".to_owned(),
            extra,
        },
    );
    let pid = daemon.pid();
    let data = daemon.data_dir();
    println!(
        "soak: {minutes} min, {} nodes in {} regions, churn every {CHURN_EVERY:?}, {}",
        per_region * 4,
        REGIONS.len(),
        machine_load()
    );
    let mut admin = Http::connect(daemon.api).await.expect("connect");
    let (status, _) = admin
        .json(Method::POST, "/sync", Some(ADMIN_TOKEN), None)
        .await
        .expect("POST /sync");
    assert!(status.is_success(), "POST /sync: {status}");

    let mut next_address = 0u32;
    let mut nodes: Vec<SimNode> = Vec::new();
    for i in 0..per_region * 4 {
        let region = usize::try_from(i % 4).unwrap_or(0);
        let (id, token) = register(&mut admin, REGIONS[region], address(next_address)).await;
        next_address += 1;
        nodes.push(SimNode {
            id,
            region,
            authorization: bearer(&token),
            dead_since: None,
            drained_since: None,
        });
    }
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(Http::connect(daemon.api).await.expect("connect"));
    }

    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = started;
    let mut next_churn = started + CHURN_EVERY;
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut pick = 0usize;
    let mut deleted: VecDeque<usize> = VecDeque::new();
    println!(
        "{:>7} {:>9} {:>5} {:>10} {:>6} {:>9} {:>8} {:>12} {:>8}",
        "minutes",
        "RSS MiB",
        "FDs",
        "store MiB",
        "nodes",
        "samples",
        "audit",
        "heartbeats",
        "failed"
    );
    while Instant::now() < end {
        let round = Instant::now();
        // Heartbeats of every live node, spread over the connections.
        let elapsed = round - started;
        let mut batches: Vec<Vec<(hyper::header::HeaderValue, Bytes)>> =
            vec![Vec::new(); CONNECTIONS];
        for (i, node) in nodes.iter().filter(|n| n.dead_since.is_none()).enumerate() {
            batches[i % CONNECTIONS]
                .push((node.authorization.clone(), heartbeat_body(node, elapsed)));
        }
        let mut tasks = Vec::new();
        for (mut http, batch) in connections.drain(..).zip(batches) {
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                for (authorization, body) in batch {
                    let reply = tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        http.send(
                            Method::POST,
                            "/nodes/heartbeat",
                            &[(AUTHORIZATION, &authorization)],
                            body,
                        ),
                    )
                    .await;
                    match reply {
                        Ok(Ok((StatusCode::OK, _))) => ok += 1,
                        _ => failed += 1,
                    }
                }
                (http, ok, failed)
            }));
        }
        for task in tasks {
            let (http, o, f) = task.await.expect("heartbeat task");
            connections.push(http);
            ok += o;
            failed += f;
        }

        // Churn.
        let now = Instant::now();
        if now >= next_churn {
            next_churn = now + CHURN_EVERY;
            let live: Vec<usize> = (0..nodes.len())
                .filter(|&i| nodes[i].dead_since.is_none() && nodes[i].drained_since.is_none())
                .collect();
            let changes = (live.len() / 50).max(1);
            for k in 0..changes {
                pick = pick.wrapping_mul(1_103_515_245).wrapping_add(12_345 + k);
                if let Some(&i) = live.get(pick % live.len().max(1)) {
                    nodes[i].dead_since = Some(now);
                }
                pick = pick.wrapping_mul(1_103_515_245).wrapping_add(54_321 + k);
                if let Some(&i) = live.get(pick % live.len().max(1))
                    && nodes[i].dead_since.is_none()
                {
                    let path = format!("/nodes/{}/drain", nodes[i].id);
                    if admin_call(&mut admin, Method::POST, &path).await == Some(StatusCode::OK) {
                        nodes[i].drained_since = Some(now);
                    }
                }
            }
            for (i, node) in nodes.iter_mut().enumerate() {
                if node
                    .drained_since
                    .is_some_and(|since| now - since >= DRAINED_FOR)
                {
                    let path = format!("/nodes/{}/undrain", node.id);
                    let _ = admin_call(&mut admin, Method::POST, &path).await;
                    node.drained_since = None;
                }
                if node.dead_since.is_some_and(|since| now - since >= DEAD_FOR) {
                    let path = format!("/nodes/{}", node.id);
                    let _ = admin_call(&mut admin, Method::DELETE, &path).await;
                    deleted.push_back(i);
                }
            }
            // Each deleted node is replaced by a new one in its region.
            while let Some(i) = deleted.pop_front() {
                let region = nodes[i].region;
                let (id, token) =
                    register(&mut admin, REGIONS[region], address(next_address)).await;
                next_address += 1;
                nodes[i] = SimNode {
                    id,
                    region,
                    authorization: bearer(&token),
                    dead_since: None,
                    drained_since: None,
                };
            }
        }

        // A sample.
        if Instant::now() >= next_sample {
            next_sample += sample_every;
            let (status, listed) = admin
                .json(Method::GET, "/nodes?limit=10000", Some(ADMIN_TOKEN), None)
                .await
                .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, serde_json::Value::Null));
            let sample = Sample {
                minutes: started.elapsed().as_secs_f64() / 60.0,
                rss_mib: rss_mib(pid).0,
                fds: open_fds(pid),
                store_mib: store_mib(&data),
                nodes: if status == StatusCode::OK {
                    listed.as_array().map_or(0, Vec::len)
                } else {
                    0
                },
                rows: rows(&data),
                heartbeats_ok: ok,
                heartbeats_failed: failed,
            };
            (ok, failed) = (0, 0);
            let (sample_rows, audit_rows) = sample
                .rows
                .map_or(("-".to_owned(), "-".to_owned()), |(s, a)| {
                    (s.to_string(), a.to_string())
                });
            println!(
                "{:>7.1} {:>9.1} {:>5} {:>10.2} {:>6} {:>9} {:>8} {:>12} {:>8}",
                sample.minutes,
                sample.rss_mib,
                sample.fds,
                sample.store_mib,
                sample.nodes,
                sample_rows,
                audit_rows,
                sample.heartbeats_ok,
                sample.heartbeats_failed
            );
            samples.push(sample);
        }
        let spent = round.elapsed();
        if spent < HEARTBEAT_EVERY {
            tokio::time::sleep(HEARTBEAT_EVERY - spent).await;
        }
    }
    let last = Sample {
        minutes: started.elapsed().as_secs_f64() / 60.0,
        rss_mib: rss_mib(pid).0,
        fds: open_fds(pid),
        store_mib: store_mib(&data),
        ..Sample::default()
    };
    let first = samples.first().copied().unwrap_or_default();
    // The first minute still loads caches; growth is judged from the second.
    let settled = samples.get(1).copied().unwrap_or(first);
    println!(
        "soak done after {:.1} min, {} registrations",
        last.minutes, next_address
    );
    println!(
        "  RSS      start {:.1} MiB, after 1 sample {:.1} MiB, end {:.1} MiB",
        first.rss_mib, settled.rss_mib, last.rss_mib
    );
    println!(
        "  FDs      start {}, after 1 sample {}, end {}",
        first.fds, settled.fds, last.fds
    );
    println!(
        "  store    start {:.2} MiB, after 1 sample {:.2} MiB, end {:.2} MiB",
        first.store_mib, settled.store_mib, last.store_mib
    );
    let (files, bytes) = std::fs::read_dir(archive.path())
        .map(|entries| {
            entries.flatten().fold((0u64, 0u64), |(n, size), e| {
                (n + 1, size + e.metadata().map_or(0, |m| m.len()))
            })
        })
        .unwrap_or((0, 0));
    #[allow(clippy::cast_precision_loss)]
    let archive_mib = bytes as f64 / 1_048_576.0;
    println!("  audit archive {files} files, {archive_mib:.2} MiB");
    println!("  {}", machine_load());
    let warnings = daemon.warnings();
    println!("  daemon warnings/errors logged: {}", warnings.len());
    for line in warnings.iter().rev().take(5) {
        println!("    {line}");
    }
}
