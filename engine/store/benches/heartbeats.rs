//! Heartbeat ingest into the store, printed as figures (run with
//! `cargo bench -p neutral-store --bench heartbeats`).
//!
//! 10,000 registered nodes heartbeat every 2 s (5,000 heartbeats/s of
//! simulated time), written as batches of 500 with `record_heartbeats`, each
//! with metrics so each one also appends a sample. Phases:
//! 1. fill: from empty until the retention window is full (pruning starts);
//! 2. steady: window full, every batch appends and prunes;
//! 3. steady with a reader: as 2, while another thread reads the samples of
//!    the last 10 minutes (the autoscaler's query) once a second.
//!
//! Throughout, a third thread calls `Store::checkpoint` once a second, as the
//! daemon does, so commits do not pay for WAL checkpoints.
//!
//! Figures: heartbeats/s (heartbeats over the time spent in
//! `record_heartbeats`) and per-batch latency (p50, p99, max). Target: at least
//! 5,000 heartbeats/s, i.e. one 500-heartbeat batch well under 100 ms.
//!
//! `NEUTRAL_BENCH_RETENTION_S` sets the retention window (default 300 s; the
//! daemon's default is 3,600 s, which only makes the fill phase longer).
//! `NEUTRAL_BENCH_BATCHES` sets the batches of the steady phase (default
//! 2,000; the reader phase runs half as many), `NEUTRAL_BENCH_BATCH_SIZE`
//! the heartbeats of a batch (default 500; a daemon writing every 100 ms
//! at 1,000 heartbeats/s writes batches of 100).
//!
//! `NEUTRAL_BENCH_STORE=postgres` runs the same on PostgreSQL: a throwaway
//! server on loopback (`neutral_store::pg_testing`, with `fsync` off as in
//! the tests, so the figure is an upper bound for a durable server).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use neutral_core::model::{Metrics, NodeMode, NodeStatus};
use neutral_store::{Heartbeat, NewNode, Store, StoreOptions, Timestamp, TokenHash};

const NODES: usize = 10_000;

/// Heartbeats per batch: `NEUTRAL_BENCH_BATCH_SIZE`, default 500.
fn batch_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::env::var("NEUTRAL_BENCH_BATCH_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|size| (1..=NODES).contains(size))
            .unwrap_or(500)
    })
}
const INTERVAL_MS: i64 = 2_000;
const START: i64 = 1_800_000_000_000;

fn main() {
    let retention_s: u64 = std::env::var("NEUTRAL_BENCH_RETENTION_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let steady_batches: usize = std::env::var("NEUTRAL_BENCH_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let reader_batches = steady_batches / 2;
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StoreOptions {
        sample_retention: Duration::from_secs(retention_s),
        ..StoreOptions::default()
    };
    let on_postgres = std::env::var("NEUTRAL_BENCH_STORE").is_ok_and(|v| v == "postgres");
    let server = on_postgres.then(|| {
        neutral_store::pg_testing::PgServer::start().unwrap_or_else(|err| panic!("{err}"))
    });
    let store = Arc::new(match &server {
        Some(server) => {
            let url = server.create_database().expect("create database");
            println!("backend: PostgreSQL (throwaway server, fsync off)");
            Store::open_postgres(&url, options).expect("open store")
        }
        None => {
            println!("backend: SQLite");
            Store::open(dir.path(), options).expect("open store")
        }
    });

    let started = Instant::now();
    for i in 0..NODES {
        store
            .nodes()
            .register(
                &NewNode {
                    id: node_id(i),
                    region: format!("r{:02}", i % 20),
                    address: std::net::IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]),
                    mode: NodeMode::ContainerdOnly,
                    hostname: None,
                    agent_version: Some("0.1.0".into()),
                    token_hash: TokenHash::of(&format!("token-{i}")),
                    status: NodeStatus::Up,
                    at: Timestamp(START),
                },
                "bench",
            )
            .expect("register");
    }
    println!(
        "register {NODES} nodes (one transaction each): {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let stop_checkpoints = Arc::new(AtomicBool::new(false));
    let checkpointer = {
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop_checkpoints);
        std::thread::spawn(move || {
            let mut checkpoints = 0u32;
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                pause(&stop, Duration::from_secs(1));
                let started = Instant::now();
                store.checkpoint().expect("checkpoint");
                slowest = slowest.max(started.elapsed());
                checkpoints += 1;
            }
            (checkpoints, slowest)
        })
    };

    let ids: Vec<String> = (0..NODES).map(node_id).collect();
    let mut clock = Clock {
        batch: 0,
        ids: &ids,
    };
    let batches_per_window =
        (retention_s as usize * 1000) / (INTERVAL_MS as usize) * NODES / batch_size();

    let fill = run(
        &store,
        &mut clock,
        batches_per_window + NODES / batch_size(),
    );
    report("fill (window filling, no pruning yet)", &fill);

    let steady = run(&store, &mut clock, steady_batches);
    report("steady (window full, append + prune)", &steady);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop);
        let since = Timestamp(clock.now().0 - 600_000);
        std::thread::spawn(move || {
            let mut reads = 0u32;
            let mut rows = 0usize;
            let mut busy = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                rows = store.samples().samples_since(since).expect("read").len();
                busy += started.elapsed();
                reads += 1;
                pause(&stop, Duration::from_secs(1));
            }
            (reads, rows, busy)
        })
    };
    let with_reader = run(&store, &mut clock, reader_batches);
    stop.store(true, Ordering::Relaxed);
    let (reads, rows, read_time) = reader.join().expect("reader");
    report(
        "steady with a concurrent samples_since reader",
        &with_reader,
    );
    println!(
        "  reader: {reads} reads of ~{rows} samples, {:.0} ms each",
        read_time.as_secs_f64() * 1e3 / f64::from(reads.max(1))
    );

    stop_checkpoints.store(true, Ordering::Relaxed);
    let (checkpoints, slowest) = checkpointer.join().expect("checkpointer");
    println!(
        "  checkpoints: {checkpoints}, slowest {:.0} ms",
        slowest.as_secs_f64() * 1e3
    );

    let samples = store.samples().count().expect("count");
    let file = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    println!(
        "store: {samples} samples ({:.1} per node), db {:.1} MiB + wal {:.1} MiB; retention {retention_s} s",
        samples as f64 / NODES as f64,
        file("neutral.sqlite3") as f64 / 1048576.0,
        file("neutral.sqlite3-wal") as f64 / 1048576.0,
    );
    let all = [fill, steady, with_reader].concat();
    let total: Duration = all.iter().sum();
    let rate = (all.len() * batch_size()) as f64 / total.as_secs_f64();
    let verdict = if rate >= 5_000.0 { "meets" } else { "MISSES" };
    println!("overall: {rate:.0} heartbeats/s; target 5,000/s: {verdict}");
}

/// Sleeps up to `total` in short steps, returning early once `stop` is set.
fn pause(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}

fn node_id(i: usize) -> String {
    format!("r{:02}-{i:05}", i % 20)
}

/// Simulated time: batch `b` holds the heartbeats of nodes
/// `(b * size) % NODES ..`, received at `START + b * (INTERVAL_MS * size / NODES)`
/// (`size`: [`batch_size`]).
struct Clock<'a> {
    batch: usize,
    ids: &'a [String],
}

impl Clock<'_> {
    fn now(&self) -> Timestamp {
        Timestamp(START + self.batch as i64 * INTERVAL_MS * batch_size() as i64 / NODES as i64)
    }

    fn next_batch(&mut self) -> Vec<Heartbeat> {
        let at = self.now();
        let first = (self.batch * batch_size()) % NODES;
        let batch = (first..first + batch_size())
            .map(|i| Heartbeat {
                node_id: self.ids[i % NODES].clone(),
                at,
                metrics: Some(Metrics {
                    cpu: ((i * 7 + self.batch) % 100) as f64 / 100.0,
                    rtt_ms: ((i + self.batch) % 50) as f64,
                    error_rate: 0.0,
                }),
            })
            .collect();
        self.batch += 1;
        batch
    }
}

fn run(store: &Store, clock: &mut Clock<'_>, batches: usize) -> Vec<Duration> {
    (0..batches)
        .map(|_| {
            let batch = clock.next_batch();
            let started = Instant::now();
            let outcome = store.samples().record_heartbeats(&batch).expect("ingest");
            let elapsed = started.elapsed();
            assert_eq!(outcome.applied, batch_size());
            elapsed
        })
        .collect()
}

fn report(phase: &str, latencies: &[Duration]) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let total: Duration = sorted.iter().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{phase}: {} batches of {}: {:.0} heartbeats/s; per batch p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sorted.len(),
        batch_size(),
        (sorted.len() * batch_size()) as f64 / total.as_secs_f64(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(sorted[sorted.len() - 1]),
    );
}
