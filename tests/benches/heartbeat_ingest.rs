//! Heartbeat ingest of the real `neutral serve` (release build) over loopback.
//!
//! Starts the daemon on a scratch bare Git repository declaring four regions
//! and one GTM domain, registers N simulated nodes through
//! `POST /nodes/register`, brings them `up` with a warm-up round of
//! heartbeats, then runs two bounded load phases over keep-alive HTTP/1.1
//! connections (hyper), each for a fixed duration and a capped request count:
//!
//! - **paced**: the connections together send one heartbeat (with metrics)
//!   every `1 / rate` seconds, at the target rate of 10,000 nodes at a 2 s
//!   interval (5,000/s);
//! - **max**: every connection sends its next heartbeat as soon as the last
//!   one was answered ("as fast as possible").
//!
//! For each phase it prints the sustained rate (heartbeats answered 200 per
//! second of the measured window), latency percentiles (send → full response;
//! for the paced phase also scheduled time → full response, which includes
//! any time the generator fell behind), the daemon's CPU (from
//! `/proc/<pid>/stat` over the window) and RSS, and the generator's own CPU,
//! which competes for the same two cores.
//!
//! Probes are off (`--no-probes`): the simulated nodes serve nothing to probe,
//! and heartbeats alone keep them `up` (rise 2, heartbeat timeout 6 s).
//!
//! `cargo bench -p neutral-e2e --bench heartbeat_ingest`; tune with
//! `INGEST_NODES` (10000), `INGEST_CONCURRENCY` (64; 384 with replicas), `INGEST_SECONDS` (20),
//! `INGEST_RATE` (5000), `INGEST_MAX_REQUESTS` (2000000 per phase), `INGEST_INTERVAL`
//! (2: the nodes' heartbeat interval in seconds; issue 17's 100,000 nodes at 10,000/s
//! is `INGEST_NODES=100000 INGEST_RATE=10000 INGEST_INTERVAL=10`).
//!
//! `INGEST_AUTOSCALE=1` declares an autoscale policy for every region
//! (one-minute windows at thresholds the bench's CPU never holds for a
//! minute, so the autoscaler reads every node's samples each
//! `--autoscale-interval` of 15 s and decides nothing), and prints the
//! samples the leader holds in memory after the paced phase.
//!
//! `INGEST_REPLICAS=3` (issue 13) runs three replicas on one PostgreSQL
//! database (a throwaway server on loopback, fsync off, as the store's own
//! bench) instead of one daemon on SQLite: nodes register with the first,
//! the load's connections are spread over all of them, CPU, RSS and the
//! phases' counters are their sums (the nodes up, the first replica's).
//! Every connection sends its nodes' heartbeats one after another, so one
//! slow answer delays all of them, where agents wait each for its own: with
//! replicas the default is 384 connections (26 nodes each at 10,000 nodes)
//! rather than 64. As agents do, a heartbeat refused with 503, timed out or
//! lost moves to the next replica.

#[allow(dead_code)]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ConfigRepo, Daemon, DaemonSpec, Http, bearer, env_number, metric_sum};
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{Method, StatusCode};
use neutral_e2e::bench::{LatencySummary, cores_used, scheduled_offset};

const REGIONS: [&str; 4] = ["jp", "sg", "us", "eu"];
const REGISTER_CONNECTIONS: usize = 16;
const REGISTER_WITHIN: Duration = Duration::from_secs(600);
const ALL_UP_WITHIN: Duration = Duration::from_secs(60);
/// Rounds of heartbeats before measuring: `rise` (2) successes bring a node up.
const WARM_UP_ROUNDS: usize = 2;
/// A request unanswered this long counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
struct Settings {
    nodes: usize,
    connections: usize,
    seconds: u64,
    rate: f64,
    max_requests: u64,
    /// The nodes' heartbeat interval; the daemon's timeout is three of
    /// them. 10,000 nodes at 5,000/s beat every 2 s; 100,000 at 10,000/s,
    /// every 10 s (`INGEST_INTERVAL=10`).
    interval: Duration,
}

impl Settings {
    fn heartbeat_timeout(self) -> Duration {
        self.interval * 3
    }
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            nodes: usize::try_from(env_number("INGEST_NODES", 10_000).clamp(1, 100_000))
                .unwrap_or(10_000),
            // A connection's nodes wait behind each other's answers; with
            // replicas more connections keep that closer to agents.
            connections: usize::try_from(
                env_number(
                    "INGEST_CONCURRENCY",
                    if env_number("INGEST_REPLICAS", 1) > 1 {
                        384
                    } else {
                        64
                    },
                )
                .clamp(1, 1024),
            )
            .unwrap_or(64),
            seconds: env_number("INGEST_SECONDS", 20).clamp(1, 600),
            rate: env_number("INGEST_RATE", 5_000).clamp(1, 1_000_000) as f64,
            max_requests: env_number("INGEST_MAX_REQUESTS", 2_000_000).max(1),
            interval: Duration::from_secs(env_number("INGEST_INTERVAL", 2).clamp(1, 60)),
        }
    }
}

/// A registered simulated node: its id and ready-made `Authorization`.
#[derive(Debug)]
struct SimNode {
    id: String,
    authorization: HeaderValue,
}

/// Node `index`'s loopback address: 127.1.0.1, 127.1.0.2, …
fn node_address(index: usize) -> IpAddr {
    let offset = u32::try_from(index).unwrap_or(0).saturating_add(1);
    IpAddr::V4(Ipv4Addr::from(0x7F01_0000u32.saturating_add(offset)))
}

fn heartbeat_body(node: &SimNode, sequence: u64) -> Bytes {
    // Metrics that vary from beat to beat, as real ones do.
    let cpu = (sequence % 100) as f64 / 100.0;
    let rtt = 1.0 + (sequence % 37) as f64 / 4.0;
    let errors = if sequence.is_multiple_of(50) {
        0.01
    } else {
        0.0
    };
    Bytes::from(format!(
        r#"{{"node_id":"{}","metrics":{{"cpu":{cpu},"rtt_ms":{rtt},"error_rate":{errors}}}}}"#,
        node.id
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Paced,
    Max,
}

#[derive(Debug, Default)]
struct WorkerResult {
    ok: u64,
    /// 503s answered to a heartbeat that was then sent to the next replica.
    shed: u64,
    /// Timeouts and lost connections after which the heartbeat was sent to
    /// the next replica.
    moved_on_error: u64,
    http_errors: u64,
    transport_errors: u64,
    /// Send → full response, microseconds.
    service_us: Vec<u64>,
    /// Scheduled time → full response (paced phase only), microseconds.
    scheduled_us: Vec<u64>,
    last_done: Option<Instant>,
    /// Per node of this connection, the longest time between two of its
    /// heartbeats' answers (from the phase's start to its first, from its
    /// last to the phase's end): how long the node was silent, as the
    /// control plane saw it, give or take one answer's latency.
    longest_silences: Vec<Duration>,
}

struct Phase {
    mode: Mode,
    rate: f64,
    connections: usize,
    start: Instant,
    end: Instant,
    budget: Arc<AtomicU64>,
    /// Each worker stops after this many rounds over its nodes (warm-up).
    rounds: Option<u64>,
}

/// One keep-alive connection's load, to `apis[worker_index % len]`; as an
/// agent does, a heartbeat refused with 503 (the replica sheds load) is sent
/// again to the next replica, at most once to each.
async fn worker(
    apis: Arc<Vec<SocketAddr>>,
    nodes: Arc<Vec<SimNode>>,
    worker_index: usize,
    phase: Arc<Phase>,
) -> WorkerResult {
    let mut result = WorkerResult::default();
    let mut current = worker_index % apis.len().max(1);
    let api_at = |index: usize| apis.get(index).copied().unwrap_or(apis[0]);
    let mut api = api_at(current);
    let Ok(mut http) = Http::connect(api).await else {
        result.transport_errors += 1;
        return result;
    };
    let mine: Vec<&SimNode> = nodes
        .iter()
        .skip(worker_index)
        .step_by(phase.connections)
        .collect();
    if mine.is_empty() {
        return result;
    }
    let workers = phase.connections as u64;
    let me = worker_index as u64;
    let mut last_answered = vec![phase.start; mine.len()];
    result.longest_silences = vec![Duration::ZERO; mine.len()];
    let mut sequence: u64 = 0;
    let limit = phase
        .rounds
        .map_or(u64::MAX, |r| r.saturating_mul(mine.len() as u64));
    while sequence < limit {
        let due = match phase.mode {
            Mode::Paced => phase.start + scheduled_offset(me, sequence, workers, phase.rate),
            Mode::Max => Instant::now(),
        };
        if due >= phase.end || Instant::now() >= phase.end {
            break;
        }
        if phase
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_err()
        {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let slot = (sequence as usize) % mine.len();
        let Some(node) = mine.get(slot) else {
            break;
        };
        let body = heartbeat_body(node, sequence.wrapping_mul(workers).wrapping_add(me));
        sequence += 1;
        let sent = Instant::now();
        let mut tries = 0;
        let reply = loop {
            let reply = tokio::time::timeout(
                REQUEST_TIMEOUT,
                http.send(
                    Method::POST,
                    "/nodes/heartbeat",
                    &[(AUTHORIZATION, &node.authorization)],
                    body.clone(),
                ),
            )
            .await;
            tries += 1;
            // As an agent does, a 503, a timeout or a lost connection moves
            // on to the next replica, once to each.
            let moved = match &reply {
                Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, _))) => Some(&mut result.shed),
                Ok(Ok(_)) => None,
                Ok(Err(_)) | Err(_) => Some(&mut result.moved_on_error),
            };
            let Some(moved) = moved.filter(|_| tries < apis.len()) else {
                break reply;
            };
            *moved += 1;
            current = (current + 1) % apis.len();
            api = api_at(current);
            match Http::connect(api).await {
                Ok(fresh) => http = fresh,
                Err(_) => break reply,
            }
        };
        let done = Instant::now();
        match reply {
            Ok(Ok((StatusCode::OK, _))) => {
                result.ok += 1;
                if let (Some(last), Some(longest)) = (
                    last_answered.get_mut(slot),
                    result.longest_silences.get_mut(slot),
                ) {
                    *longest = (*longest).max(done.saturating_duration_since(*last));
                    *last = done;
                }
                result.service_us.push(micros(done - sent));
                if phase.mode == Mode::Paced {
                    result
                        .scheduled_us
                        .push(micros(done.saturating_duration_since(due)));
                }
                result.last_done = Some(done);
            }
            Ok(Ok((status, body))) => {
                result.http_errors += 1;
                if result.http_errors <= 3 {
                    eprintln!(
                        "heartbeat {}: HTTP {status}: {}",
                        node.id,
                        String::from_utf8_lossy(&body)
                    );
                }
            }
            Ok(Err(err)) => {
                result.transport_errors += 1;
                if result.transport_errors <= 3 {
                    eprintln!("heartbeat {}: {err}", node.id);
                }
                match Http::connect(api).await {
                    Ok(fresh) => http = fresh,
                    Err(_) => break,
                }
            }
            Err(_) => {
                result.transport_errors += 1;
                match Http::connect(api).await {
                    Ok(fresh) => http = fresh,
                    Err(_) => break,
                }
            }
        }
    }
    let stopped = Instant::now().min(phase.end);
    for (last, longest) in last_answered.iter().zip(result.longest_silences.iter_mut()) {
        *longest = (*longest).max(stopped.saturating_duration_since(*last));
    }
    result
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct PhaseReport {
    mode: Mode,
    window: Duration,
    ok: u64,
    shed: u64,
    moved_on_error: u64,
    http_errors: u64,
    transport_errors: u64,
    service: Option<LatencySummary>,
    scheduled: Option<LatencySummary>,
    daemon_cores: f64,
    generator_cores: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    counted: f64,
    /// Heartbeats a writer behind left out, a newer one of their node
    /// written in the same batch.
    coalesced: f64,
    store_errors: f64,
    status_changes: f64,
    recomputes: f64,
    up_after: f64,
    /// Per replica, its gauges once a second.
    replica_series: Vec<ReplicaSeries>,
    /// Per node, the longest it went without an answered heartbeat.
    longest_silences: Vec<Duration>,
}

/// One replica's gauges, read once a second through a phase (a failed read
/// counts as 0).
#[derive(Clone, Debug, Default)]
struct ReplicaSeries {
    /// `neutral_heartbeat_writer_lag_seconds`: how long its oldest
    /// unstored heartbeat has waited (a writer behind by more than the
    /// timeout is what the others cannot see past).
    writer_lag: Vec<f64>,
    /// `neutral_health_judged_behind_seconds`: how far behind now it
    /// judges silence.
    judged_behind: Vec<f64>,
}

impl PhaseReport {
    fn sustained(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

async fn run_phase(
    apis: &[SocketAddr],
    daemon_pids: &[u32],
    nodes: &Arc<Vec<SimNode>>,
    settings: Settings,
    mode: Mode,
    admin: &mut Http,
) -> PhaseReport {
    let ticks_per_second = common::clock_ticks_per_second();
    let before = every_replicas_metrics(apis).await;
    let start = Instant::now() + Duration::from_millis(100);
    let phase = Arc::new(Phase {
        mode,
        rate: settings.rate,
        connections: settings.connections,
        start,
        end: start + Duration::from_secs(settings.seconds),
        budget: Arc::new(AtomicU64::new(settings.max_requests)),
        rounds: None,
    });
    let apis = Arc::new(apis.to_vec());
    let tasks: Vec<_> = (0..settings.connections)
        .map(|w| {
            tokio::spawn(worker(
                Arc::clone(&apis),
                Arc::clone(nodes),
                w,
                Arc::clone(&phase),
            ))
        })
        .collect();
    let sampler = (apis.len() > 1).then(|| {
        let apis = Arc::clone(&apis);
        let end = phase.end;
        tokio::spawn(async move { replica_series(&apis, end).await })
    });
    tokio::time::sleep_until(start.into()).await;
    let daemon_ticks_now = || -> u64 {
        daemon_pids
            .iter()
            .map(|pid| common::cpu_ticks(*pid).total())
            .sum()
    };
    let daemon_before = daemon_ticks_now();
    let generator_before = common::cpu_ticks(std::process::id());
    let measured_from = Instant::now();
    let mut total = WorkerResult::default();
    for task in tasks {
        let Ok(result) = task.await else { continue };
        total.ok += result.ok;
        total.shed += result.shed;
        total.moved_on_error += result.moved_on_error;
        total.http_errors += result.http_errors;
        total.transport_errors += result.transport_errors;
        total.service_us.extend(result.service_us);
        total.scheduled_us.extend(result.scheduled_us);
        total.last_done = total.last_done.max(result.last_done);
        total.longest_silences.extend(result.longest_silences);
    }
    let cpu_window = measured_from.elapsed();
    let replica_series = match sampler {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let daemon_ticks = daemon_ticks_now().saturating_sub(daemon_before);
    let generator_ticks = common::cpu_ticks(std::process::id())
        .total()
        .saturating_sub(generator_before.total());
    let (rss_mib, peak_rss_mib) = daemon_pids
        .iter()
        .map(|pid| common::rss_mib(*pid))
        .fold((0.0, 0.0), |(r, p), (r1, p1)| (r + r1, p + p1));
    let window = total
        .last_done
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(start));
    let after = every_replicas_metrics(&apis).await;
    // Counters summed over the replicas: a status change is counted by the
    // replica that published it, a heartbeat by the one that took it.
    let delta = |name| -> f64 {
        after
            .iter()
            .zip(&before)
            .map(|(after, before)| metric_sum(after, name, &[]) - metric_sum(before, name, &[]))
            .sum()
    };
    let up_text = admin.metrics().await.unwrap_or_default();
    PhaseReport {
        mode,
        window,
        ok: total.ok,
        shed: total.shed,
        moved_on_error: total.moved_on_error,
        http_errors: total.http_errors,
        transport_errors: total.transport_errors,
        service: LatencySummary::of(&mut total.service_us),
        scheduled: LatencySummary::of(&mut total.scheduled_us),
        daemon_cores: cores_used(daemon_ticks, ticks_per_second, cpu_window),
        generator_cores: cores_used(generator_ticks, ticks_per_second, cpu_window),
        rss_mib,
        peak_rss_mib,
        counted: delta("neutral_heartbeats_total"),
        coalesced: delta("neutral_heartbeats_coalesced_total"),
        store_errors: delta("neutral_store_errors_total"),
        status_changes: delta("neutral_node_status_changes_total"),
        recomputes: delta("neutral_weight_recomputes_total"),
        up_after: metric_sum(&up_text, "neutral_nodes", &["status=\"up\""]),
        replica_series,
        longest_silences: total.longest_silences,
    }
}

/// Each replica's [`ReplicaSeries`], read once a second until `end`.
async fn replica_series(apis: &[SocketAddr], end: Instant) -> Vec<ReplicaSeries> {
    let mut series = vec![ReplicaSeries::default(); apis.len()];
    while Instant::now() < end {
        let texts = every_replicas_metrics(apis).await;
        for (text, replica) in texts.iter().zip(series.iter_mut()) {
            let gauge = |name| metric_sum(text, name, &[]);
            replica
                .writer_lag
                .push(gauge("neutral_heartbeat_writer_lag_seconds"));
            replica
                .judged_behind
                .push(gauge("neutral_health_judged_behind_seconds"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    series
}

/// Each replica's `/metrics` (empty where it cannot be read), in `apis`
/// order.
async fn every_replicas_metrics(apis: &[SocketAddr]) -> Vec<String> {
    let mut texts = Vec::with_capacity(apis.len());
    for api in apis {
        let text = match Http::connect(*api).await {
            Ok(mut http) => http.metrics().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        texts.push(text);
    }
    texts
}

fn print_phase(report: &PhaseReport, settings: Settings) {
    let title = match report.mode {
        Mode::Paced => format!("paced at {:.0}/s", settings.rate),
        Mode::Max => "as fast as possible".to_owned(),
    };
    println!(
        "\n{title}, {} keep-alive connections, {:.2} s window (cap {} requests):",
        settings.connections,
        report.window.as_secs_f64(),
        settings.max_requests
    );
    println!(
        "  answered 200: {}  503 and sent to the next replica: {}  timed out or lost and sent \
         to the next: {}  HTTP errors: {}  transport errors/timeouts: {}  sustained: {:.0} \
         heartbeats/s",
        report.ok,
        report.shed,
        report.moved_on_error,
        report.http_errors,
        report.transport_errors,
        report.sustained()
    );
    if let Some(s) = &report.service {
        println!("  latency send→response:      {}", s.millis_line());
    }
    if let Some(s) = &report.scheduled {
        println!("  latency scheduled→response: {}", s.millis_line());
    }
    for (index, replica) in report.replica_series.iter().enumerate() {
        for (what, values) in [
            ("writer lag", &replica.writer_lag),
            ("judges behind now by", &replica.judged_behind),
        ] {
            let max = values.iter().copied().fold(0.0, f64::max);
            let each: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
            println!(
                "  replica {} {what}: max {max:.1} s; each second: {}",
                index + 1,
                each.join(" ")
            );
        }
    }
    let timeout = settings.heartbeat_timeout();
    let longest = report
        .longest_silences
        .iter()
        .max()
        .copied()
        .unwrap_or_default();
    let silent_for = |at_least: Duration| {
        report
            .longest_silences
            .iter()
            .filter(|silence| **silence >= at_least)
            .count()
    };
    println!(
        "  nodes' silences (between answered heartbeats): longest {:.1} s; nodes silent for the \
         timeout ({} s) or longer: {}; for {} s or longer: {}",
        longest.as_secs_f64(),
        timeout.as_secs(),
        silent_for(timeout),
        timeout.as_secs() - 1,
        silent_for(timeout.saturating_sub(Duration::from_secs(1)))
    );
    println!(
        "  daemon: CPU {:.2} cores ({:.0}% of the machine), RSS {:.1} MiB (peak {:.1} MiB); \
         generator: CPU {:.2} cores",
        report.daemon_cores,
        100.0 * report.daemon_cores / cores() as f64,
        report.rss_mib,
        report.peak_rss_mib,
        report.generator_cores
    );
    println!(
        "  daemon counters over the phase: {:.0} heartbeats ({:.0} coalesced by a writer behind), \
         {:.0} store errors, {:.0} status changes, {:.0} weight recomputes; \
         nodes up after: {:.0}",
        report.counted,
        report.coalesced,
        report.store_errors,
        report.status_changes,
        report.recomputes,
        report.up_after
    );
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

async fn register_all(api: SocketAddr, settings: Settings, admin: &mut Http) -> Vec<SimNode> {
    let before = admin.metrics().await.unwrap_or_default();
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + REGISTER_WITHIN;
    let started = Instant::now();
    let tasks: Vec<_> = (0..REGISTER_CONNECTIONS)
        .map(|_| {
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut http = Http::connect(api).await.expect("connect for registration");
                let mut mine = Vec::new();
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= settings.nodes {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "registration did not finish within {REGISTER_WITHIN:?}"
                    );
                    let region = REGIONS[index % REGIONS.len()];
                    let sent = Instant::now();
                    let (id, token) =
                        common::register(&mut http, region, node_address(index)).await;
                    latencies.push(micros(sent.elapsed()));
                    mine.push((
                        index,
                        SimNode {
                            id,
                            authorization: bearer(&token),
                        },
                    ));
                }
                (mine, latencies)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(settings.nodes);
    let mut latencies = Vec::with_capacity(settings.nodes);
    for task in tasks {
        let (mine, lat) = task.await.expect("registration task");
        all.extend(mine);
        latencies.extend(lat);
    }
    let elapsed = started.elapsed();
    all.sort_by_key(|(index, _)| *index);
    println!(
        "registration: {} nodes in {:.1} s ({:.0}/s over {REGISTER_CONNECTIONS} connections)",
        all.len(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    if let Some(s) = LatencySummary::of(&mut latencies) {
        println!("  latency: {}", s.millis_line());
    }
    let after = admin.metrics().await.unwrap_or_default();
    let name = "neutral_weight_recomputes_total";
    println!(
        "  weight recomputes during registration: {:.0}",
        metric_sum(&after, name, &[]) - metric_sum(&before, name, &[])
    );
    all.into_iter().map(|(_, node)| node).collect()
}

/// Heartbeats every node `WARM_UP_ROUNDS` times, `gap` apart, over `apis`
/// as the phases do (a 503 sent on to the next replica, as agents do: a
/// heartbeat refused and not sent on is lost, and its node may time out
/// later), then waits (bounded) until the first daemon reports them all
/// `up`. Replicas need a gap
/// longer than their mirror interval (500 ms): a replica counts the
/// heartbeats another received as it reads them, so two that arrive
/// between two reads count once there, and `rise` is counted by each.
async fn warm_up(
    apis: &[SocketAddr],
    nodes: &Arc<Vec<SimNode>>,
    settings: Settings,
    gap: Duration,
    admin: &mut Http,
) {
    let before = admin.metrics().await.unwrap_or_default();
    let started = Instant::now();
    let apis = Arc::new(apis.to_vec());
    let mut ok = 0;
    let mut sent_in = Duration::ZERO;
    let deadline = started + ALL_UP_WITHIN;
    let mut up = 0.0;
    let mut text = String::new();
    let mut rounds = 0;
    // `WARM_UP_ROUNDS` rounds, then (replicas) a round every `gap` while
    // waiting, so no node's heartbeats stop before the paced phase takes
    // over.
    while Instant::now() < deadline {
        if rounds < WARM_UP_ROUNDS || !gap.is_zero() {
            if rounds > 0 {
                tokio::time::sleep(gap).await;
            }
            ok += heartbeat_round(&apis, nodes, settings).await;
            rounds += 1;
            sent_in = started.elapsed();
        }
        if rounds < WARM_UP_ROUNDS {
            continue;
        }
        text = admin.metrics().await.unwrap_or_default();
        up = metric_sum(&text, "neutral_nodes", &["status=\"up\""]);
        if up >= nodes.len() as f64 {
            break;
        }
        if gap.is_zero() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let delta = |name| metric_sum(&text, name, &[]) - metric_sum(&before, name, &[]);
    println!(
        "warm-up: {ok} heartbeats in {:.1} s; {up:.0}/{} nodes up after {:.1} s \
         ({:.0} status changes, {:.0} weight recomputes)",
        sent_in.as_secs_f64(),
        nodes.len(),
        started.elapsed().as_secs_f64(),
        delta("neutral_node_status_changes_total"),
        delta("neutral_weight_recomputes_total"),
    );
}

/// Heartbeats every node once as fast as the connections go: the number
/// answered 200.
async fn heartbeat_round(
    apis: &Arc<Vec<SocketAddr>>,
    nodes: &Arc<Vec<SimNode>>,
    settings: Settings,
) -> u64 {
    let phase = Arc::new(Phase {
        mode: Mode::Max,
        rate: 0.0,
        connections: settings.connections,
        start: Instant::now(),
        end: Instant::now() + Duration::from_secs(300),
        budget: Arc::new(AtomicU64::new(nodes.len() as u64)),
        rounds: Some(1),
    });
    let tasks: Vec<_> = (0..settings.connections)
        .map(|w| {
            tokio::spawn(worker(
                Arc::clone(apis),
                Arc::clone(nodes),
                w,
                Arc::clone(&phase),
            ))
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += task.await.map_or(0, |r| r.ok);
    }
    ok
}

/// `GET path` on the first daemon as the admin; `None`, saying why under
/// `what`, when it does not answer 200 with JSON.
async fn admin_get(admin: &mut Http, path: &str, what: &str) -> Option<serde_json::Value> {
    match admin
        .json(Method::GET, path, Some(common::ADMIN_TOKEN), None)
        .await
    {
        Ok((StatusCode::OK, value)) => Some(value),
        Ok((status, _)) => {
            println!("  {what}: GET {path} answered {status}");
            None
        }
        Err(err) => {
            println!("  {what}: GET {path} failed: {err}");
            None
        }
    }
}

/// Reasons counted together when they differ only in their figures (digits
/// shown as `#`), cut at `width` characters.
struct Reasons {
    width: usize,
    counts: std::collections::BTreeMap<String, usize>,
}

impl Reasons {
    fn new(width: usize) -> Self {
        Reasons {
            width,
            counts: std::collections::BTreeMap::new(),
        }
    }

    fn count(&mut self, reason: Option<&str>) {
        let reason: String = reason
            .unwrap_or("(none)")
            .chars()
            .take(self.width)
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        *self.counts.entry(reason).or_default() += 1;
    }

    /// The three commonest, each as `{count} {label}: {reason}`.
    fn print_commonest(self, label: &str) {
        let mut common: Vec<(String, usize)> = self.counts.into_iter().collect();
        common.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        for (reason, count) in common.iter().take(3) {
            println!("  {count} {label}: {reason}");
        }
    }
}

/// Why the nodes that are not up are not, as the first daemon tells it
/// (`GET /nodes`): the three most common reasons.
async fn print_down_reasons(admin: &mut Http) {
    let Some(nodes) = admin_get(admin, "/nodes", "why nodes are down").await else {
        return;
    };
    let mut reasons = Reasons::new(160);
    let mut first = true;
    for node in nodes.as_array().into_iter().flatten() {
        if node["status"] == "up" {
            continue;
        }
        if first {
            println!("  one of them: {node}");
            first = false;
        }
        reasons.count(node["status_reason"].as_str());
    }
    reasons.print_commonest("nodes not up");
}

/// The newest audit entry's id on the first daemon (0 when there is none
/// or it cannot be read).
async fn newest_audit_id(admin: &mut Http) -> i64 {
    admin_get(
        admin,
        "/audit?newest_first=true&limit=1",
        "the newest audit id",
    )
    .await
    .and_then(|page| page[0]["id"].as_i64())
    .unwrap_or(0)
}

/// The status changes a phase made, as the leader's audit log tells them
/// (`node.status` entries after `since_id`, up to 10,000): how many of each
/// kind (`up -> down`, …), within how long, and the three most common
/// reasons a node went down.
async fn print_status_changes(admin: &mut Http, since_id: i64) {
    let path = format!("/audit?kind=node.status&since_id={since_id}&limit=10000");
    let Some(entries) = admin_get(admin, &path, "status changes").await else {
        return;
    };
    let entries = entries.as_array().cloned().unwrap_or_default();
    let mut kinds: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut reasons = Reasons::new(200);
    for entry in &entries {
        let data = &entry["data"];
        let kind = format!(
            "{} -> {}",
            data["from"].as_str().unwrap_or("?"),
            data["to"].as_str().unwrap_or("?")
        );
        *kinds.entry(kind).or_default() += 1;
        if data["to"] == "down" {
            reasons.count(data["reason"].as_str());
        }
    }
    let times: Vec<i64> = entries.iter().filter_map(|e| e["at"].as_i64()).collect();
    let span_ms = times.last().unwrap_or(&0) - times.first().unwrap_or(&0);
    println!(
        "  status changes in the audit log: {} ({:?}) within {span_ms} ms",
        entries.len(),
        kinds,
    );
    reasons.print_commonest("went down");
}

/// Waits (bounded) until every replica holds all `count` nodes registered
/// through the first: a node unknown to a replica is refused there.
async fn all_replicas_know(apis: &[SocketAddr], count: usize) {
    let started = Instant::now();
    for api in apis {
        let Ok(mut http) = Http::connect(*api).await else {
            println!("replica {api}: cannot connect");
            continue;
        };
        loop {
            let text = http.metrics().await.unwrap_or_default();
            let known = metric_sum(&text, "neutral_nodes", &[]);
            if known >= count as f64 {
                break;
            }
            if started.elapsed() > REGISTER_WITHIN {
                println!("replica {api}: knows {known:.0} of {count} nodes; going on");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "every replica knows the {count} nodes {:.1} s after registration",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let settings = Settings::from_env();
    let interval = settings.interval.as_secs();
    println!(
        "heartbeat ingest: neutral serve (release), {} simulated nodes in {} regions, \
         --no-probes, heartbeat interval {interval}s, timeout {}s",
        settings.nodes,
        REGIONS.len(),
        settings.heartbeat_timeout().as_secs()
    );
    println!("machine before: {}", common::machine_load());
    let bin = common::neutral_bin();
    let max_nodes = u32::try_from(settings.nodes).unwrap_or(u32::MAX).max(1);
    let mut files: Vec<(String, String)> = REGIONS
        .iter()
        .map(|r| common::region_file(r, max_nodes))
        .collect();
    files.push(common::gtm_file(
        &REGIONS,
        "{ http: /healthz, port: 80, interval: 10s, timeout: 2s, rise: 2, fall: 3 }",
    ));
    let autoscale = env_number("INGEST_AUTOSCALE", 0) != 0;
    if autoscale {
        let per_region = max_nodes.div_ceil(REGIONS.len() as u32);
        for region in REGIONS {
            files.extend(common::autoscale_files(
                region,
                per_region,
                (0.999, 0.001),
                "60s",
                "60s",
            ));
        }
        println!("autoscale: a policy for every region (60 s windows, nothing to decide)");
    }
    let repo = ConfigRepo::new(&files);
    let mut spec = DaemonSpec {
        heartbeat_interval: format!("{interval}s"),
        heartbeat_timeout: format!("{}s", settings.heartbeat_timeout().as_secs()),
        extra: vec!["--no-probes".into()],
    };
    if autoscale {
        spec.extra
            .extend(["--autoscale-interval".to_owned(), "15s".to_owned()]);
    }
    let replicas = usize::try_from(env_number("INGEST_REPLICAS", 1).clamp(1, 5)).unwrap_or(1);
    // Kept for the bench's life: the replicas' database.
    let mut postgres = None;
    if replicas > 1 {
        let Some(server) = neutral_store::pg_testing::start_or_skip() else {
            return;
        };
        let url = server.create_database().expect("a database");
        spec.extra.extend([
            "--store".to_owned(),
            url,
            "--lease-ttl".to_owned(),
            "2s".to_owned(),
            // Every connection comes from 127.0.0.1, and agents moving on
            // gather on one replica.
            "--max-connections-per-ip".to_owned(),
            "1024".to_owned(),
        ]);
        postgres = Some(server);
        println!("store: {replicas} replicas on one PostgreSQL database (loopback, fsync off)");
    } else {
        println!("store: SQLite (one daemon)");
    }
    let mut daemons: Vec<Daemon> = (0..replicas)
        .map(|_| Daemon::start(&bin, &repo, &spec))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let apis: Vec<SocketAddr> = daemons.iter().map(|d| d.api).collect();
    let pids: Vec<u32> = daemons.iter().map(Daemon::pid).collect();
    let (api, pid) = (apis[0], pids[0]);
    println!("daemon pids {pids:?}, APIs {apis:?}");
    let reports = runtime.block_on(async move {
        let mut admin = Http::connect(api).await.expect("connect to the daemon");
        common::sync_and_check(&mut admin, REGIONS.len()).await;
        let nodes = Arc::new(register_all(api, settings, &mut admin).await);
        if apis.len() > 1 {
            all_replicas_know(&apis, nodes.len()).await;
        }
        let gap = if apis.len() > 1 {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        warm_up(&apis, &nodes, settings, gap, &mut admin).await;
        let (rss, peak) = common::rss_mib(pid);
        println!("daemon after warm-up: RSS {rss:.1} MiB (peak {peak:.1} MiB)");
        let since = newest_audit_id(&mut admin).await;
        let paced = run_phase(&apis, &pids, &nodes, settings, Mode::Paced, &mut admin).await;
        print_phase(&paced, settings);
        if paced.status_changes > 0.0 {
            print_status_changes(&mut admin, since).await;
            print_down_reasons(&mut admin).await;
        }
        if autoscale {
            let text = admin.metrics().await.unwrap_or_default();
            println!(
                "autoscaler: {:.0} samples of {:.0} nodes in memory; {:.0} evaluations",
                metric_sum(&text, "neutral_autoscale_samples_in_memory", &[]),
                metric_sum(&text, "neutral_autoscale_sampled_nodes", &[]),
                metric_sum(&text, "neutral_autoscale_decisions_total", &[]) / REGIONS.len() as f64,
            );
        }
        let since = newest_audit_id(&mut admin).await;
        let max = run_phase(&apis, &pids, &nodes, settings, Mode::Max, &mut admin).await;
        print_phase(&max, settings);
        if max.status_changes > 0.0 {
            print_status_changes(&mut admin, since).await;
            print_down_reasons(&mut admin).await;
        }
        (paced, max)
    });
    drop(runtime);
    println!("\nmachine after: {}", common::machine_load());
    let (paced, max) = reports;
    let paced_p99 = paced
        .service
        .map_or(f64::INFINITY, |s| s.p99_us as f64 / 1000.0);
    let met = paced.sustained() >= settings.rate * 0.99
        && paced_p99 < 20.0
        && paced.http_errors + paced.transport_errors == 0;
    println!(
        "target ≥ {:.0} heartbeats/s with p99 < 20 ms: {} (paced: {:.0}/s, p99 {paced_p99:.3} ms; \
         max: {:.0}/s)",
        settings.rate,
        if met { "MET" } else { "MISSED" },
        paced.sustained(),
        max.sustained()
    );
    for daemon in &mut daemons {
        let warnings = daemon.warnings();
        if !warnings.is_empty() {
            println!("daemon log: {} WARN/ERROR lines, last:", warnings.len());
            for line in warnings.iter().rev().take(5).rev() {
                println!("  {line}");
            }
        }
        let status = daemon.stop();
        println!("daemon stopped: {status:?}");
        if !status.is_some_and(|s| s.success()) {
            let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
            match log.find("panicked at") {
                Some(at) => {
                    let lines: Vec<&str> = log[at..].lines().take(12).collect();
                    println!("its first panic:\n{}", lines.join("\n"));
                }
                None => println!("its log ends:\n{}", daemon.log_tail(12)),
            }
        }
    }
    drop(postgres);
}
