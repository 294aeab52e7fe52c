//! The DNS data plane's side of one node's status change (issue 17: "one
//! node's status change → answers updated"), printed, never asserted.
//!
//! The embedded zone holds `HEALTH_DOMAINS` weighted A rrsets (1,000), each
//! of `HEALTH_RECORDS` records (300: three regions of 100 nodes, as the
//! `status_change` bench's domains), over a pool of `HEALTH_NODES`
//! addresses (10,000), as the Terraform provider writes them. Every node is
//! up; then, `HEALTH_TRIALS` times (50), one node goes down and comes back,
//! and each of the two changes is timed as the daemon makes it:
//! - building the health view of every node (`HealthView`, what
//!   `DnsBridge::set_health` builds from the node list on every recompute);
//! - `DnsHandle::set_health`: every rrset's answer set made again from the
//!   view, and the new snapshot swapped in.
//!
//! `cargo bench -p neutral-dns --bench health`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

mod common;

use neutral_core::model::NodeStatus;
use neutral_dns::{
    DnsServer, HealthView, Record, RrSetChange, Zone, ZonePatch, ZoneRules, ZoneSet, apply_patch,
};

/// [`common::env_number`] as a count.
fn env_count(name: &str, default: usize) -> usize {
    let default = u64::try_from(default).unwrap_or(u64::MAX);
    usize::try_from(common::env_number(name, default)).unwrap_or(usize::MAX)
}

fn address(index: usize) -> IpAddr {
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | index))
}

/// Domain `d`'s records: `records` consecutive nodes of the pool from a
/// start that moves with `d`.
fn rrsets(domains: usize, records: usize, nodes: usize) -> Vec<RrSetChange> {
    (0..domains)
        .map(|d| {
            let start = (d * 37 * 100) % nodes;
            let records = (0..records)
                .map(|i| Record::new(address((start + i) % nodes).to_string()).weighted(10))
                .collect();
            RrSetChange::replace(&format!("d{d:04}.example.com."), "A", 30, records)
        })
        .collect()
}

fn view(nodes: usize, down: Option<usize>) -> HealthView {
    let mut view = HealthView::new();
    for i in 0..nodes {
        let status = if Some(i) == down {
            NodeStatus::Down
        } else {
            NodeStatus::Up
        };
        view.set_node(address(i), status);
    }
    view
}

fn median_p90(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    (at(50), at(90))
}

fn main() {
    let domains = env_count("HEALTH_DOMAINS", 1000).clamp(1, 5000);
    let records = env_count("HEALTH_RECORDS", 300).clamp(1, 1000);
    let nodes = env_count("HEALTH_NODES", 10_000).clamp(records, 100_000);
    let trials = env_count("HEALTH_TRIALS", 50).clamp(1, 1000);

    let started = Instant::now();
    let zone = Zone::create("example.com.", &["ns1.example.com."]).expect("zone");
    let zone = apply_patch(
        &zone,
        &ZonePatch {
            rrsets: rrsets(domains, records, nodes),
        },
    )
    .expect("patch");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = runtime.block_on(async {
        let zones: ZoneSet = [zone].into_iter().collect();
        DnsServer::bind("127.0.0.1:0".parse().expect("addr"), zones)
            .await
            .expect("bind")
    });
    let handle = server.handle();
    handle.set_health(view(nodes, None));
    println!(
        "DNS data plane: {domains} weighted A rrsets x {records} records over {nodes} nodes, \
         loaded and first health view in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut build = Vec::new();
    let mut publish = Vec::new();
    for trial in 0..trials {
        let node = (trial * 7919) % nodes;
        for down in [Some(node), None] {
            let started = Instant::now();
            let health = view(nodes, down);
            build.push(started.elapsed());
            let started = Instant::now();
            handle.set_health(health);
            publish.push(started.elapsed());
        }
    }
    let (build_median, build_p90) = median_p90(build);
    let (publish_median, publish_p90) = median_p90(publish);
    println!(
        "one node's status change, {} changes:\n  \
         health view of every node: median {:.3} ms, p90 {:.3} ms\n  \
         set_health (the touched rrsets' answers again, snapshot swapped): median {:.3} ms, p90 {:.3} ms",
        trials * 2,
        build_median.as_secs_f64() * 1e3,
        build_p90.as_secs_f64() * 1e3,
        publish_median.as_secs_f64() * 1e3,
        publish_p90.as_secs_f64() * 1e3,
    );
    drop(server);
}
