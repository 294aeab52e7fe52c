//! The embedded DNS server as `neutral serve` runs it (not the bare library:
//! `engine/dns/benches/queries.rs` covers that) beside PowerDNS
//! Authoritative: queries/s and latency for one weighted A record — written
//! through the daemon's DNS API, and into PowerDNS as the provider writes it
//! (a `LUA` `pickwrandom` record), with PowerDNS' caches off and at their
//! defaults — under the same bounded loopback load, one server at a time.
//! PowerDNS is skipped, saying why, when it is not installed.
//!
//! N client threads, each with its own UDP socket (std, hickory-proto
//! encoding), send one query for app.example.com A and wait for its answer
//! before the next, for a fixed duration after a 1 s warm-up and up to a
//! capped total. A query unanswered within 1 s counts as lost and is left
//! out of the latencies. Prints the sustained rate (answered queries per
//! second of the measured window), latency percentiles, the answer shares
//! (expected 62.5 / 31.25 / 6.25 %), and the daemon's CPU and RSS.
//!
//! `cargo bench -p neutral-e2e --bench daemon_dns`; tune with `DNS_CLIENTS`
//! (16), `DNS_SECONDS` (10), `DNS_MAX_QUERIES` (5000000).

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ConfigRepo, Daemon, DaemonSpec, DnsAsker, Http, Pdns, env_number};
use hickory_proto::op::ResponseCode;
use neutral_e2e::bench::{LatencySummary, cores_used};

const WARM_UP: Duration = Duration::from_secs(1);
const WEIGHTS: [(IpAddr, u32); 3] = [
    (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 100),
    (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 50),
    (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), 10),
];

#[derive(Debug, Default)]
struct ClientResult {
    latencies_us: Vec<u64>,
    lost: u64,
    /// Answers that were not NOERROR with exactly one address.
    wrong: u64,
    answers: BTreeMap<IpAddr, u64>,
}

fn client(
    server: SocketAddr,
    measure_from: Instant,
    deadline: Instant,
    budget: &AtomicU64,
) -> ClientResult {
    let mut asker = DnsAsker::new(server, "app.example.com.", Duration::from_secs(1));
    let mut result = ClientResult::default();
    while Instant::now() < deadline {
        let started = Instant::now();
        let measured = started >= measure_from;
        if measured
            && budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_err()
        {
            break;
        }
        let answer = asker.ask();
        if !measured {
            continue;
        }
        match answer {
            Some(answer) => {
                result
                    .latencies_us
                    .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
                match answer.addresses.as_slice() {
                    [address] if answer.rcode == ResponseCode::NoError => {
                        *result.answers.entry(*address).or_default() += 1;
                    }
                    _ => result.wrong += 1,
                }
            }
            None => result.lost += 1,
        }
    }
    result
}

/// What one server did under the load.
#[derive(Debug)]
struct Report {
    name: String,
    rate: f64,
    latency: Option<LatencySummary>,
    lost: u64,
    cores: f64,
}

/// Runs the bounded load against `server` (process `pid`) and prints its
/// figures.
fn load(name: &str, server: SocketAddr, pid: u32, settings: (u64, u64, u64)) -> Report {
    let (clients, seconds, max_queries) = settings;
    let ticks_per_second = common::clock_ticks_per_second();
    let measure_from = Instant::now() + WARM_UP;
    let deadline = measure_from + Duration::from_secs(seconds);
    let budget = Arc::new(AtomicU64::new(max_queries));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || client(server, measure_from, deadline, &budget))
        })
        .collect();
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let server_before = common::cpu_ticks(pid);
    let generator_before = common::cpu_ticks(std::process::id());
    let mut total = ClientResult::default();
    for thread in threads {
        let Ok(result) = thread.join() else { continue };
        total.latencies_us.extend(result.latencies_us);
        total.lost += result.lost;
        total.wrong += result.wrong;
        for (address, n) in result.answers {
            *total.answers.entry(address).or_default() += n;
        }
    }
    let window = Instant::now()
        .min(deadline)
        .saturating_duration_since(measure_from);
    let cpu_window = measure_from.elapsed();
    let server_cores = cores_used(
        common::cpu_ticks(pid)
            .total()
            .saturating_sub(server_before.total()),
        ticks_per_second,
        cpu_window,
    );
    let generator_cores = cores_used(
        common::cpu_ticks(std::process::id())
            .total()
            .saturating_sub(generator_before.total()),
        ticks_per_second,
        cpu_window,
    );
    let (rss, peak) = common::rss_mib(pid);
    let answered = total.latencies_us.len();
    let rate = answered as f64 / window.as_secs_f64().max(1e-9);
    println!("{name}:");
    println!(
        "  answered: {answered}  lost: {}  wrong: {}  sustained: {rate:.0} queries/s over {:.2} s",
        total.lost,
        total.wrong,
        window.as_secs_f64()
    );
    let latency = LatencySummary::of(&mut total.latencies_us);
    if let Some(summary) = &latency {
        println!("  latency: {}", summary.millis_line());
    }
    let all: u64 = total.answers.values().sum();
    let shares: Vec<String> = WEIGHTS
        .iter()
        .map(|(address, _)| {
            let n = total.answers.get(address).copied().unwrap_or(0);
            format!("{address} {:.2}%", 100.0 * n as f64 / all.max(1) as f64)
        })
        .collect();
    println!(
        "  answer shares: {} (expected 62.50% / 31.25% / 6.25%)",
        shares.join(", ")
    );
    println!(
        "  server: CPU {server_cores:.2} cores, RSS {rss:.1} MiB (peak {peak:.1} MiB); \
         generator: CPU {generator_cores:.2} cores"
    );
    Report {
        name: name.to_owned(),
        rate,
        latency,
        lost: total.lost,
        cores: server_cores,
    }
}

/// The same weighted record in PowerDNS, as the provider writes it there: a
/// `LUA` `pickwrandom` record, weights divided by their gcd.
fn pdns_record() -> String {
    let gcd = WEIGHTS.iter().fold(0, |g, (_, w)| {
        let (mut a, mut b) = (g, *w);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    });
    let entries: Vec<String> = WEIGHTS
        .iter()
        .map(|(address, w)| format!("{{{},'{address}'}}", w / gcd.max(1)))
        .collect();
    format!("A \"pickwrandom({{{}}})\"", entries.join(","))
}

/// The record PowerDNS serves in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PdnsRecord {
    /// The weighted record, as the provider writes it.
    Weighted,
    /// A plain A rrset of the three addresses, all in every answer: not the
    /// same answer, PowerDNS' speed without Lua, for reference.
    Plain,
}

fn run_pdns(
    runtime: &tokio::runtime::Runtime,
    caches: bool,
    record: PdnsRecord,
    settings: (u64, u64, u64),
) -> Option<Report> {
    let extra = if caches { "" } else { common::PDNS_CACHES_OFF };
    let pdns = runtime.block_on(async {
        let pdns = Pdns::start(extra).await?;
        pdns.create_zone("example.com.").await?;
        match record {
            PdnsRecord::Weighted => {
                pdns.replace("example.com.", "app.example.com.", "LUA", &[pdns_record()])
                    .await?;
            }
            PdnsRecord::Plain => {
                let all: Vec<String> = WEIGHTS.iter().map(|(a, _)| a.to_string()).collect();
                pdns.replace("example.com.", "app.example.com.", "A", &all)
                    .await?;
            }
        }
        Ok::<Pdns, String>(pdns)
    });
    let mut pdns = match pdns {
        Ok(pdns) => pdns,
        Err(err) => {
            println!("PowerDNS: could not be set up: {err}");
            return None;
        }
    };
    let mut asker = DnsAsker::new(pdns.dns, "app.example.com.", Duration::from_secs(1));
    if asker.ask().is_none_or(|a| a.addresses.is_empty()) {
        println!("PowerDNS: no answer:\n{}", pdns.log_tail());
        return None;
    }
    let name = format!(
        "{} ({}, {})",
        common::pdns_version(),
        match record {
            PdnsRecord::Weighted => "LUA pickwrandom",
            PdnsRecord::Plain => "plain A of 3, unweighted: reference",
        },
        if caches {
            "default caches"
        } else {
            "caches off"
        }
    );
    let report = load(&name, pdns.dns, pdns.process.pid(), settings);
    let _ = pdns.process.terminate(Duration::from_secs(10));
    Some(report)
}

fn main() {
    let clients = env_number("DNS_CLIENTS", 16).clamp(1, 256);
    let seconds = env_number("DNS_SECONDS", 10).clamp(1, 300);
    let max_queries = env_number("DNS_MAX_QUERIES", 5_000_000).max(1);
    let settings = (clients, seconds, max_queries);
    println!(
        "DNS queries for one weighted A record (100/50/10): the embedded server under neutral \
         serve (release, written through PATCH /dns/zones) beside PowerDNS Authoritative \
         (the same weights as a LUA pickwrandom record); {clients} UDP clients (one query in \
         flight each), {seconds} s after {} s warm-up, cap {max_queries} queries per server",
        WARM_UP.as_secs()
    );
    println!("machine before: {}", common::machine_load());
    let bin = common::neutral_bin();
    let repo = ConfigRepo::new(&[
        common::region_file("jp", 5),
        common::gtm_file(
            &["jp"],
            "{ http: /healthz, port: 80, interval: 10s, timeout: 2s, rise: 2, fall: 3 }",
        ),
    ]);
    let spec = DaemonSpec {
        heartbeat_interval: "10s".into(),
        heartbeat_timeout: "30s".into(),
        extra: vec!["--no-probes".into()],
    };
    let mut daemon = Daemon::start(&bin, &repo, &spec);
    let api = daemon.api;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut http = Http::connect(api).await.expect("connect to the daemon");
        common::sync_and_check(&mut http, 1).await;
        common::create_zone(&mut http, "example.com.").await;
        common::put_weighted_a(&mut http, "example.com.", "app.example.com.", &WEIGHTS).await;
    });
    let mut reports = vec![load(
        "neutral embedded DNS (no answer cache)",
        daemon.dns,
        daemon.pid(),
        settings,
    )];
    let status = daemon.stop();
    println!("daemon stopped: {status:?}");
    match common::pdns_missing() {
        Some(missing) => println!("PowerDNS: skipped: {missing} (scripts/bench installs it)"),
        None => {
            for (caches, record) in [
                (false, PdnsRecord::Weighted),
                (true, PdnsRecord::Weighted),
                (true, PdnsRecord::Plain),
            ] {
                reports.extend(run_pdns(&runtime, caches, record, settings));
            }
        }
    }
    println!("\nside by side (same load, same machine):");
    println!(
        "  {:<78} {:>10} {:>8} {:>8} {:>5} {:>6}",
        "server", "queries/s", "p50 ms", "p99 ms", "lost", "cores"
    );
    for report in &reports {
        let (p50, p99) = report.latency.as_ref().map_or((f64::NAN, f64::NAN), |l| {
            (l.p50_us as f64 / 1000.0, l.p99_us as f64 / 1000.0)
        });
        println!(
            "  {:<78} {:>10.0} {:>8.3} {:>8.3} {:>5} {:>6.2}",
            report.name, report.rate, p50, p99, report.lost, report.cores
        );
    }
    println!("machine after: {}", common::machine_load());
}
