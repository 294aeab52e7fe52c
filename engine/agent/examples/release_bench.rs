//! Release bench: a full node (private containerd, runc, nginx, the test
//! images) under a bounded loopback load — concurrency 8, a fresh connection
//! per request — while it releases back and forth between v1 and v2.
//!
//! For each release it prints the release duration (start to old colour
//! stopped), the requests started during the release and how many failed, and
//! the p99 latency of requests started during the switch (health check passed
//! to old nginx workers gone) against the p99 before the release.
//!
//!     cargo run -p neutral-agent --example release_bench [ROUNDS]
//!
//! Needs root and scripts/setup's packages.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

#[path = "../tests/support/node.rs"]
mod node_support;

use std::time::{Duration, Instant};

use neutral_agent::node::ReleaseRequest;
use node_support::{Load, TestNode, prerequisites};

const CONCURRENCY: usize = 8;
/// Requests before and after each release.
const WINDOW: usize = 1000;

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.2}", d.as_secs_f64() * 1000.0),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .clamp(1, 20);
    let Some(images) = prerequisites() else {
        std::process::exit(2);
    };
    let node = TestNode::start(images, None).await;
    node.boot_with("v1").await;
    let load = Load::start(node.listen, CONCURRENCY, "/version");
    println!(
        "round  image  duration_ms  healthy_ms  switched_ms  drained_ms  during_release  failed  p99_before_ms  p99_switch_ms  p99_release_ms"
    );
    let mut durations = Vec::new();
    for round in 0..rounds {
        let tag = if round % 2 == 0 { "v2" } else { "v1" };
        let before_from = Instant::now();
        load.wait_for_requests(load.snapshot().total() + WINDOW)
            .await;
        let started = Instant::now();
        let report = node
            .node
            .release(&ReleaseRequest {
                image: format!("neutral.test/web:{tag}"),
                ..ReleaseRequest::default()
            })
            .await
            .expect("release");
        let finished = Instant::now();
        load.wait_for_requests(load.snapshot().total() + WINDOW / 4)
            .await;
        let snapshot = load.snapshot();
        let switch_from = started + Duration::from_millis(report.healthy_ms);
        let switch_to = started + Duration::from_millis(report.drained_ms);
        let during: Vec<_> = snapshot
            .samples
            .iter()
            .filter(|s| s.started >= started && s.started < finished)
            .collect();
        let failed = during.iter().filter(|s| s.outcome.is_err()).count();
        println!(
            "{round:>5}  {tag:>5}  {:>11}  {:>10}  {:>11}  {:>10}  {:>14}  {failed:>6}  {:>13}  {:>13}  {:>14}",
            report.stopped_ms,
            report.healthy_ms,
            report.switched_ms,
            report.drained_ms,
            during.len(),
            ms(snapshot.latency_quantile(before_from, started, 0.99)),
            ms(snapshot.latency_quantile(switch_from, switch_to, 0.99)),
            ms(snapshot.latency_quantile(started, finished, 0.99)),
        );
        durations.push(report.stopped_ms);
    }
    let result = load.stop().await;
    node.stop().await;
    durations.sort_unstable();
    println!(
        "\ntotal requests {}, failed {}, release duration median {} ms, max {} ms",
        result.total(),
        result.failures,
        durations.get(durations.len() / 2).copied().unwrap_or(0),
        durations.last().copied().unwrap_or(0),
    );
    if result.failures > 0 {
        println!("failures: {:?}", result.failure_samples);
        std::process::exit(1);
    }
}
