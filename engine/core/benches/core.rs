//! Benchmarks of the core, printed as figures (run with
//! `cargo bench -p neutral-core --bench core`):
//! - effective weights for 1,000 domains over 100 regions × 100 nodes, each
//!   domain served by 3 of them, full recompute (target < 50 ms);
//! - the worst case: every domain served by all 100 regions, full recompute
//!   (target < 100 ms), and the same with the report's drop not timed;
//!   once at the regions' base weights (`full-100`: domains share
//!   each region's answers) and once at weights of each domain's own
//!   (`full-own`: no two domains share a region's answers, 8.8 million
//!   answers made);
//! - the worst case with every node down at once (`held-100`): the
//!   split-brain guard holds every domain's previous answers;
//! - one node's status change, incremental recompute
//!   (`weights::compute_incremental`, and `compute_incremental_in` over a
//!   node set), 1,000 domains × 3 of 100 regions (target < 1 ms), and for
//!   reference with every domain served by all 100
//!   regions (then every domain serves the node's region);
//! - DNS plan over 10,000 records with 1% changed (target < 10 ms);
//! - an autoscale decision for a region of 25,000 ready nodes with samples
//!   every 10 s over its look-back (a one-minute scale-up window that holds,
//!   so every sample time in it is checked): a figure, no target.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use neutral_core::dnsplan::{self, RecordSet};
use neutral_core::model::{
    AllDownPolicy, CloudProvider, Declarations, DeclaredRegionState, DnsBackendKind, GtmPolicy,
    Node, NodeMode, NodePoolDecl, NodeStatus, Probe, RecordType, Region, Timestamp,
};
use neutral_core::weights::incremental::{
    Changes, Recomputed, compute_incremental, compute_incremental_in,
};
use neutral_core::weights::node_set::NodeSet;
use neutral_core::weights::{self, WeightSettings};

const NOW: Timestamp = Timestamp(1_800_000_000_000);

fn median_of(runs: usize, mut f: impl FnMut()) -> (Duration, Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[runs / 2], times[runs - 1])
}

/// Like [`median_of`], timing only `run` on what `setup` returns.
fn median_with_setup<T, R>(
    runs: usize,
    mut setup: impl FnMut() -> T,
    mut run: impl FnMut(T) -> R,
) -> (Duration, Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let input = setup();
            let start = Instant::now();
            let output = black_box(run(input));
            let elapsed = start.elapsed();
            drop(output);
            elapsed
        })
        .collect();
    times.sort();
    (times[0], times[runs / 2], times[runs - 1])
}

/// [`report`] without a target: a figure to compare the others with.
fn reference(name: &str, (min, median, max): (Duration, Duration, Duration)) {
    println!(
        "{name}: median {:.2} ms (min {:.2}, max {:.2})",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
}

fn report(name: &str, target: Duration, (min, median, max): (Duration, Duration, Duration)) {
    let verdict = if median <= target { "meets" } else { "MISSES" };
    println!(
        "{name}: median {:.2} ms (min {:.2}, max {:.2}); target {} ms: {verdict}",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        target.as_millis()
    );
}

/// How the domains of the weights fixture weigh their regions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Weighting {
    /// `regions_per_domain` regions (all of them when 100) at the regions'
    /// base weights when all, at the domain's own weights otherwise.
    Serving(u32),
    /// All 100 regions, each domain at weights of its own (`100 + d` for
    /// every region of domain `d`): no two domains evaluate a region alike.
    AllOwnWeights,
}

impl Weighting {
    fn name(self) -> String {
        match self {
            Weighting::Serving(regions) => format!("{regions} regions per domain"),
            Weighting::AllOwnWeights => {
                "100 regions per domain, each at the domain's own weight".into()
            }
        }
    }

    fn regions_per_domain(self) -> u32 {
        match self {
            Weighting::Serving(regions) => regions,
            Weighting::AllOwnWeights => 100,
        }
    }
}

/// 100 regions × 100 nodes (1 in 17 down, 1 in 17 drained) and 1,000
/// domains, each serving regions as `weighting` says.
fn weights_fixture(weighting: Weighting) -> (Declarations, Vec<Node>) {
    let regions_per_domain = weighting.regions_per_domain();
    let mut decl = Declarations::default();
    let mut nodes = Vec::new();
    for r in 0..100u32 {
        let name = format!("r{r:03}");
        decl.regions.insert(
            name.clone(),
            Region {
                name: name.clone(),
                provider: CloudProvider::Edge,
                min_nodes: 1,
                max_nodes: 200,
                base_weight: 100 + r,
                state: DeclaredRegionState::Up,
                failover: vec![],
            },
        );
        decl.node_pools.insert(
            name.clone(),
            NodePoolDecl {
                region: name.clone(),
                desired_nodes: 100,
            },
        );
        for n in 0..100u32 {
            let status = match (r + n) % 17 {
                0 => NodeStatus::Down,
                1 => NodeStatus::Drain,
                _ => NodeStatus::Up,
            };
            nodes.push(Node {
                id: format!("{name}-{n:03}"),
                region: name.clone(),
                address: IpAddr::V4(Ipv4Addr::new(
                    10,
                    r as u8,
                    (n / 250) as u8,
                    (n % 250) as u8 + 1,
                )),
                status,
                status_since: Timestamp(NOW.0 - 3_600_000),
                mode: NodeMode::ContainerdOnly,
                last_heartbeat: Some(NOW),
                metrics: None,
            });
        }
    }
    for d in 0..1000u32 {
        let domain = format!("d{d:04}.example.com");
        decl.gtm.insert(
            domain.clone(),
            GtmPolicy {
                name: format!("d{d:04}"),
                domain,
                zone: "example.com".to_owned(),
                record_type: RecordType::A,
                ttl: 30,
                dns: DnsBackendKind::Embedded,
                min_ready_nodes: 1,
                regions: if weighting == Weighting::AllOwnWeights {
                    (0..100u32).map(|r| (format!("r{r:03}"), 100 + d)).collect()
                } else if regions_per_domain >= 100 {
                    BTreeMap::new()
                } else {
                    (0..regions_per_domain)
                        .map(|k| {
                            (
                                format!("r{:03}", (d * 7 + k * 33) % 100),
                                50 + (d + k) % 100,
                            )
                        })
                        .collect()
                },
                all_down: AllDownPolicy::FailOpen,
                probe: Probe::default(),
                slow_start: None,
                health: neutral_core::model::HealthPolicy::default(),
            },
        );
    }
    (decl, nodes)
}

fn dns_fixture() -> (Vec<RecordSet>, Vec<RecordSet>) {
    let owner = Some("neutral:bench".to_owned());
    let current: Vec<RecordSet> = (0..10_000u32)
        .map(|i| RecordSet {
            name: format!("d{:04}.example.com", i / 10),
            rtype: "A".to_owned(),
            set_id: Some(format!("node-{}", i % 10)),
            ttl: 30,
            values: vec![format!("10.0.{}.{}", i / 250, i % 250)],
            weight: Some(100),
            owner: owner.clone(),
        })
        .collect();
    let mut desired = current.clone();
    for (i, record) in desired.iter_mut().enumerate() {
        if i % 100 == 0 {
            record.weight = Some(50);
        }
    }
    (desired, current)
}

fn bench_weights(weighting: Weighting) {
    let regions_per_domain = weighting.regions_per_domain();
    let name = weighting.name();
    let (decl, nodes) = weights_fixture(weighting);
    let previous = BTreeMap::new();
    let settings = WeightSettings::default();
    let sample = weights::compute(&decl, &nodes, &previous, NOW, &settings);
    let answers: usize = sample.domains.values().map(|d| d.answers.len()).sum();
    // Answers are held in runs shared by the domains that evaluate a region
    // alike; the answers actually made are those of the distinct runs.
    let made = answers_made(&sample);
    println!(
        "weights fixture: 1000 domains x {name}, 100 regions x 100 nodes -> {answers} answers, {made} of them made (the rest shared)"
    );
    let target = if regions_per_domain >= 100 { 100 } else { 50 };
    report(
        &format!("weights: full recompute, {name}"),
        Duration::from_millis(target),
        median_of(7, || {
            black_box(weights::compute(
                black_box(&decl),
                &nodes,
                &previous,
                NOW,
                &settings,
            ));
        }),
    );
    if regions_per_domain < 100 {
        return;
    }
    // What the worst case is made of: the answers made, without their drop.
    reference(
        &format!("weights: full recompute, {name}, the report's drop not timed"),
        median_with_setup(
            7,
            || (),
            |()| weights::compute(black_box(&decl), &nodes, &previous, NOW, &settings),
        ),
    );
}

/// The answers made in `report`: those of its distinct runs (the rest are
/// shared).
fn answers_made(report: &weights::WeightsReport) -> usize {
    let mut runs = std::collections::HashSet::new();
    report
        .domains
        .values()
        .flat_map(|d| d.answers.runs())
        .filter(|run| runs.insert(std::sync::Arc::as_ptr(run).cast::<()>()))
        .map(|run| run.len())
        .sum()
}

/// The worst case world (1,000 domains over all 100 regions) where every
/// node goes down at once: the split-brain guard trips and every domain
/// keeps the previous report's answers (`split_brain_hold`, what
/// `last_known_good` does too).
fn bench_held() {
    let (decl, nodes) = weights_fixture(Weighting::Serving(100));
    let settings = WeightSettings::default();
    let before = weights::compute(&decl, &nodes, &BTreeMap::new(), NOW, &settings);
    let down: Vec<Node> = nodes
        .iter()
        .cloned()
        .map(|mut n| {
            if n.status == NodeStatus::Up {
                n.status = NodeStatus::Down;
                n.status_since = NOW;
            }
            n
        })
        .collect();
    let later = Timestamp(NOW.0 + 1_000);
    let sample = weights::compute(&decl, &down, &before.domains, later, &settings);
    let answers: usize = sample.domains.values().map(|d| d.answers.len()).sum();
    println!(
        "held fixture: every node of the worst case down at once, guard tripped: {} -> {answers} answers, {} of them made",
        sample.split_brain.is_some(),
        answers_made(&sample)
    );
    report(
        "weights: full recompute, every node down, answers held, 1,000 domains x 100 regions",
        Duration::from_millis(100),
        median_of(7, || {
            black_box(weights::compute(
                black_box(&decl),
                &down,
                &before.domains,
                later,
                &settings,
            ));
        }),
    );
}

/// One node of region r042 goes down (then, in the next run, the same from
/// the same previous report): an incremental recompute.
fn bench_incremental(regions_per_domain: u32, runs: usize) {
    let (decl, nodes) = weights_fixture(Weighting::Serving(regions_per_domain));
    let settings = WeightSettings::default();
    let previous_now = Timestamp(NOW.0 - 10_000);
    let previous = weights::compute(&decl, &nodes, &BTreeMap::new(), previous_now, &settings);
    let mut after = nodes.clone();
    let index = after
        .iter()
        .position(|n| n.region == "r042" && n.status == NodeStatus::Up)
        .expect("an up node in r042");
    let before = after[index].clone();
    after[index].status = NodeStatus::Down;
    after[index].status_since = NOW;
    let mut changes = Changes::new(previous_now);
    changes.node(Some(&before), Some(&after[index]));

    let incremental =
        compute_incremental(&decl, &after, previous.clone(), &changes, NOW, &settings);
    let full = weights::compute(&decl, &after, &previous.domains, NOW, &settings);
    assert!(incremental.report == full, "incremental differs from full");
    let recomputed = match &incremental.recomputed {
        Recomputed::All(why) => format!("all ({why})"),
        Recomputed::Domains(domains) => domains.len().to_string(),
    };
    println!(
        "incremental fixture: 1000 domains x {regions_per_domain} regions each, one node of r042 down -> {recomputed} domains recomputed"
    );
    let target = if regions_per_domain >= 100 { 100 } else { 1 };
    report(
        &format!(
            "weights: one node status change, incremental, 1,000 domains x {regions_per_domain} of 100 regions"
        ),
        Duration::from_millis(target),
        median_with_setup(
            runs,
            || previous.clone(),
            |previous| {
                compute_incremental(black_box(&decl), &after, previous, &changes, NOW, &settings)
            },
        ),
    );
    // The same over a node set kept between recomputes, as the daemon
    // keeps one: only the regions read are walked.
    let set = NodeSet::new(after.iter().cloned().map(std::sync::Arc::new));
    assert!(
        compute_incremental_in(&decl, &set, previous.clone(), &changes, NOW, &settings)
            == incremental,
        "in a node set differs"
    );
    report(
        &format!(
            "weights: one node status change, incremental over a node set, 1,000 domains x {regions_per_domain} of 100 regions"
        ),
        Duration::from_millis(target),
        median_with_setup(
            runs,
            || previous.clone(),
            |previous| {
                compute_incremental_in(black_box(&decl), &set, previous, &changes, NOW, &settings)
            },
        ),
    );
    // `compute_incremental` takes the previous report by value; a caller
    // that shares it (an `Arc` readers hold) copies it first.
    reference(
        &format!(
            "reference: copying the previous report (1,000 domains x {regions_per_domain} regions)"
        ),
        median_with_setup(runs.min(21), || (), |()| previous.clone()),
    );
}

fn main() {
    // `cargo bench -p neutral-core --bench core -- incremental` runs only the
    // benchmarks whose name contains `incremental` (names: full-3, full-100,
    // full-own, held-100, incremental-3, incremental-100, dnsplan, autoscale).
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wanted("full-3") {
        bench_weights(Weighting::Serving(3));
    }
    if wanted("full-100") {
        bench_weights(Weighting::Serving(100));
    }
    if wanted("full-own") {
        bench_weights(Weighting::AllOwnWeights);
    }
    if wanted("held-100") {
        bench_held();
    }
    if wanted("incremental-3") {
        bench_incremental(3, 301);
    }
    if wanted("incremental-100") {
        bench_incremental(100, 7);
    }
    if wanted("dnsplan") {
        bench_dnsplan();
    }
    if wanted("autoscale") {
        // `BENCH_AUTOSCALE_NODES` sets the region's size (25,000).
        let nodes = std::env::var("BENCH_AUTOSCALE_NODES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(25_000);
        bench_autoscale(nodes);
    }
}

/// One region of `nodes` ready nodes whose CPU (0.80 to 0.89) stays above a
/// scale-up threshold of 0.75 for 60 s, samples every 10 s over the
/// look-back the daemon reads (twice the longest window, 300 s, plus 30 s),
/// each node at its own phase.
fn bench_autoscale(nodes: u32) {
    use neutral_core::autoscale::{AutoscaleSettings, NodeSample, decide_all};
    use neutral_core::model::{AutoscalePolicy, MetricSample, Metrics, ScaleDownRule, ScaleUpRule};
    let mut decl = Declarations::default();
    decl.regions.insert(
        "jp".to_owned(),
        Region {
            name: "jp".to_owned(),
            provider: CloudProvider::Edge,
            min_nodes: 1,
            max_nodes: nodes * 2,
            base_weight: 100,
            state: DeclaredRegionState::Up,
            failover: vec![],
        },
    );
    decl.node_pools.insert(
        "jp".to_owned(),
        NodePoolDecl {
            region: "jp".to_owned(),
            desired_nodes: nodes,
        },
    );
    decl.autoscale.insert(
        "jp".to_owned(),
        AutoscalePolicy {
            region: "jp".to_owned(),
            scale_up: ScaleUpRule {
                cpu_above: Some(0.75),
                rtt_ms_above: None,
                error_rate_above: None,
                for_: Duration::from_secs(60),
                step: 1,
            },
            scale_down: ScaleDownRule {
                cpu_below: Some(0.3),
                rtt_ms_below: None,
                error_rate_below: None,
                for_: Duration::from_secs(300),
                step: 1,
            },
            cooldown: Duration::from_secs(60),
            failover_capacity: false,
        },
    );
    let members: Vec<Node> = (0..nodes)
        .map(|n| Node {
            id: format!("jp-{n:05}"),
            region: "jp".to_owned(),
            address: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)),
            status: NodeStatus::Up,
            status_since: Timestamp(NOW.0 - 3_600_000),
            mode: NodeMode::ContainerdOnly,
            last_heartbeat: Some(NOW),
            metrics: None,
        })
        .collect();
    let lookback_ms = 630_000;
    let mut samples: Vec<NodeSample> = Vec::new();
    for (n, node) in members.iter().enumerate() {
        let phase = i64::try_from(n % 10_000).unwrap_or(0);
        let mut at = NOW.0 - lookback_ms + phase;
        while at <= NOW.0 {
            samples.push(NodeSample {
                node_id: node.id.as_str().into(),
                sample: MetricSample {
                    at: Timestamp(at),
                    metrics: Metrics {
                        cpu: 0.8 + f64::from(u32::try_from(at % 10).unwrap_or(0)) / 100.0,
                        rtt_ms: 20.0,
                        error_rate: 0.0,
                    },
                },
            });
            at += 10_000;
        }
    }
    samples.sort_by_key(|s| s.sample.at);
    let settings = AutoscaleSettings::default();
    let decisions = decide_all(&decl, &members, &samples, &BTreeMap::new(), NOW, &settings);
    println!(
        "autoscale fixture: {nodes} ready nodes, {} samples; decision: {}",
        samples.len(),
        decisions.get("jp").map_or("none", |d| d.reason.as_str())
    );
    reference(
        &format!("autoscale: one decision, {nodes} ready nodes, 60 s window held"),
        median_of(5, || {
            black_box(decide_all(
                black_box(&decl),
                &members,
                &samples,
                &BTreeMap::new(),
                NOW,
                &settings,
            ));
        }),
    );
}

fn bench_dnsplan() {
    let (desired, current) = dns_fixture();
    let plan = dnsplan::plan("neutral:bench", &desired, &current);
    println!(
        "dns plan fixture: 10000 records, {} changes",
        plan.changes.len()
    );
    report(
        "dnsplan: 10,000 records, 1% changed",
        Duration::from_millis(10),
        median_of(21, || {
            black_box(dnsplan::plan(
                "neutral:bench",
                black_box(&desired),
                &current,
            ));
        }),
    );
}
