//! Bounded loopback load on the embedded DNS server: N concurrent UDP clients,
//! each sending one query for a weighted A record and waiting for its answer
//! before the next, for a fixed duration after a short warm-up. Prints
//! queries/s and latency percentiles, and the answer shares as a sanity check
//! of the weighted pick.
//!
//! `cargo bench -p neutral-dns --bench queries`; tune with the environment:
//! `DNS_BENCH_CLIENTS` (default 16), `DNS_BENCH_SECONDS` (default 5),
//! `DNS_BENCH_MAX_QUERIES` (default 5,000,000). "Sustained" here means the
//! mean rate over the measured window, warm-up excluded; a query unanswered
//! within 1 s counts as lost and is excluded from the latencies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use neutral_dns::{
    DnsServer, Record, RrSetChange, Zone, ZonePatch, ZoneRules, ZoneSet, apply_patch,
};
use tokio::net::UdpSocket;

mod common;
use common::env_number;

const WARM_UP: Duration = Duration::from_secs(1);
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

fn zone() -> Zone {
    let zone = Zone::create("example.com.", &["ns1.example.com."]).expect("zone");
    apply_patch(
        &zone,
        &ZonePatch {
            rrsets: vec![RrSetChange::replace(
                "app.example.com.",
                "A",
                30,
                vec![
                    Record::new("192.0.2.1").weighted(100),
                    Record::new("192.0.2.2").weighted(50),
                    Record::new("192.0.2.3").weighted(10),
                ],
            )],
        },
    )
    .expect("patch")
}

struct ClientResult {
    latencies_us: Vec<u32>,
    lost: u64,
    /// Answers that were not NOERROR with exactly one record.
    wrong: u64,
    answers: BTreeMap<String, u64>,
}

async fn client(
    server: SocketAddr,
    query: Vec<u8>,
    measure_from: Instant,
    deadline: Instant,
    budget: Arc<AtomicU64>,
) -> ClientResult {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.connect(server).await.expect("connect client");
    let mut result = ClientResult {
        latencies_us: Vec::new(),
        lost: 0,
        wrong: 0,
        answers: BTreeMap::new(),
    };
    let mut buf = vec![0u8; 1500];
    let mut query = query;
    let mut id: u16 = 0;
    while Instant::now() < deadline {
        id = id.wrapping_add(1);
        query[..2].copy_from_slice(&id.to_be_bytes());
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
        socket.send(&query).await.expect("send");
        let answered = loop {
            match tokio::time::timeout(QUERY_TIMEOUT, socket.recv(&mut buf)).await {
                Ok(Ok(len)) if len >= 2 && buf[..2] == id.to_be_bytes() => break Some(len),
                Ok(Ok(_)) => continue, // a late answer to an earlier, lost query
                Ok(Err(_)) | Err(_) => break None,
            }
        };
        if !measured {
            continue;
        }
        match answered {
            Some(len) => {
                let elapsed = started.elapsed().as_micros();
                result
                    .latencies_us
                    .push(u32::try_from(elapsed).unwrap_or(u32::MAX));
                match Message::from_vec(&buf[..len]) {
                    Ok(message)
                        if message.metadata.response_code == ResponseCode::NoError
                            && message.answers.len() == 1 =>
                    {
                        for record in &message.answers {
                            *result.answers.entry(record.data.to_string()).or_default() += 1;
                        }
                    }
                    _ => result.wrong += 1,
                }
            }
            None => result.lost += 1,
        }
    }
    result
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

fn main() {
    let clients = env_number("DNS_BENCH_CLIENTS", 16).max(1);
    let seconds = env_number("DNS_BENCH_SECONDS", 5).clamp(1, 300);
    let max_queries = env_number("DNS_BENCH_MAX_QUERIES", 5_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let zones: ZoneSet = [zone()].into_iter().collect();
        let server = DnsServer::bind("127.0.0.1:0".parse().expect("addr"), zones)
            .await
            .expect("bind server");
        let addr = server.local_addr();
        let mut message = Message::query();
        message.add_query(Query::query(
            Name::from_str("app.example.com.").expect("name"),
            RecordType::A,
        ));
        let query = message.to_vec().expect("encode");

        let measure_from = Instant::now() + WARM_UP;
        let deadline = measure_from + Duration::from_secs(seconds);
        let budget = Arc::new(AtomicU64::new(max_queries));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                tokio::spawn(client(
                    addr,
                    query.clone(),
                    measure_from,
                    deadline,
                    budget.clone(),
                ))
            })
            .collect();
        let mut latencies = Vec::new();
        let mut lost = 0;
        let mut wrong = 0;
        let mut answers: BTreeMap<String, u64> = BTreeMap::new();
        for task in tasks {
            let result = task.await.expect("client task");
            latencies.extend(result.latencies_us);
            lost += result.lost;
            wrong += result.wrong;
            for (address, n) in result.answers {
                *answers.entry(address).or_default() += n;
            }
        }
        let window = deadline.min(Instant::now()).duration_since(measure_from);
        let metrics = server.handle().metrics();
        server.shutdown().await.expect("shutdown");

        latencies.sort_unstable();
        let answered = latencies.len() as f64;
        println!(
            "embedded DNS, weighted A (100/50/10), {clients} concurrent UDP clients, \
             {:.1} s measured after {} s warm-up",
            window.as_secs_f64(),
            WARM_UP.as_secs()
        );
        println!(
            "  queries answered: {}  lost: {lost}  wrong: {wrong}  rate: {:.0} queries/s",
            latencies.len(),
            answered / window.as_secs_f64()
        );
        println!(
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            percentile(&latencies, 50.0),
            percentile(&latencies, 90.0),
            percentile(&latencies, 99.0),
            percentile(&latencies, 99.9),
            percentile(&latencies, 100.0),
        );
        let total: u64 = answers.values().sum();
        let shares: Vec<String> = answers
            .iter()
            .map(|(address, n)| {
                format!("{address} {:.1}%", 100.0 * *n as f64 / total.max(1) as f64)
            })
            .collect();
        println!(
            "  answer shares: {} (expected 62.5% / 31.2% / 6.2%)",
            shares.join(", ")
        );
        println!(
            "  server counted {} UDP queries (warm-up included)",
            metrics.counts.queries_udp
        );
    });
}
