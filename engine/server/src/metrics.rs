//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! [`operations_text`] adds what the alert rules and the dashboard in
//! `deploy/` need beyond the counters: region health, per-node up, the last
//! sync attempt, in-flight autoscale actions and Terraform runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::app::App;

pub async fn handler(State(app): State<Arc<App>>) -> impl IntoResponse {
    let failing = app
        .with_store(neutral_store::Store::sync_status)
        .await
        .ok()
        .and_then(|s| {
            s.failing()
                .map(|f| f.diagnostics.iter().filter(|d| d.is_error()).count())
        });
    let mut text = render(&app, failing);
    render_operations(&app, &mut text).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Gauges gathered at scrape time, registered in a registry made for the
/// scrape and encoded with the same Prometheus text encoder as the
/// counters.
#[derive(Debug, Default)]
struct Scrape {
    registry: Registry,
}

type Labels = Vec<(String, String)>;

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// One metric's samples in the order given (a `Family` would encode them in
/// hash order): scrapes read the same way every time and diff cleanly.
#[derive(Debug)]
struct Samples {
    kind: MetricType,
    rows: Vec<(Labels, f64)>,
}

/// Whole numbers print without a fraction (`3`, not `3.0`).
fn encode_value(encoder: &mut MetricEncoder<'_>, kind: MetricType, value: f64) -> std::fmt::Result {
    #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
    let whole = (value.fract() == 0.0 && value.abs() < 9.0e15).then_some(value as i64);
    match (kind, whole) {
        (MetricType::Counter, Some(v)) => {
            encoder.encode_counter::<NoLabelSet, _, f64>(&u64::try_from(v).unwrap_or(0), None)
        }
        (MetricType::Counter, None) => encoder.encode_counter::<NoLabelSet, _, f64>(&value, None),
        (_, Some(v)) => encoder.encode_gauge(&v),
        (_, None) => encoder.encode_gauge(&value),
    }
}

impl EncodeMetric for Samples {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> std::fmt::Result {
        for (labels, value) in &self.rows {
            if labels.is_empty() {
                encode_value(&mut encoder, self.kind, *value)?;
            } else {
                encode_value(&mut encoder.encode_family(labels)?, self.kind, *value)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

impl Scrape {
    /// A metric with one sample per label set, in the order given. `help`
    /// ends without a period: the encoder adds it. A counter's name gets
    /// its `_total` from the encoder.
    fn samples(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let rows = rows.into_iter().collect();
        self.registry.register(name, help, Samples { kind, rows });
    }

    fn gauges(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, f64)>) {
        self.samples(MetricType::Gauge, name, help, rows);
    }

    /// A gauge without labels.
    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.gauges(name, help, [(Vec::new(), value)]);
    }

    fn encode(&self, out: &mut String) {
        let _ = prometheus_client::encoding::prometheus_text::encode(out, &self.registry);
    }
}

fn render(app: &App, failing_errors: Option<usize>) -> String {
    let mut scrape = Scrape::default();
    let world = app.read_world();

    let mut counts: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for entry in world.nodes.values() {
        let node = &entry.record.node;
        *counts
            .entry((node.region.clone(), node.status.as_str()))
            .or_default() += 1;
    }
    scrape.gauges(
        "neutral_nodes",
        "Registered nodes by region and status",
        counts.iter().map(|((region, status), n)| {
            (labels([("region", region), ("status", status)]), *n as f64)
        }),
    );
    let now = crate::world::now();
    scrape.gauge(
        "neutral_health_judged_behind_seconds",
        "How far behind now this replica judges nodes' silence: up to where it has read the heartbeats the other replicas stored (0 alone); a node is down once silent for its heartbeat timeout before that moment",
        now.since(world.judged_at(now)).as_secs_f64(),
    );
    let report = world.report();
    scrape.gauges(
        "neutral_region_effective_weight",
        "Effective weight of a region for a domain",
        report.domains.iter().flat_map(|(domain, weights)| {
            weights.regions.iter().map(move |region| {
                (
                    labels([("domain", domain), ("region", &region.region)]),
                    f64::from(region.effective),
                )
            })
        }),
    );
    scrape.gauges(
        "neutral_domain_answers",
        "Answers a domain serves",
        report.domains.iter().map(|(domain, weights)| {
            (
                labels([("domain", domain), ("mode", weights.mode.as_str())]),
                weights.answers.len() as f64,
            )
        }),
    );
    scrape.gauge(
        "neutral_split_brain_active",
        "1 while the split-brain guard holds answers",
        f64::from(u8::from(report.split_brain.is_some())),
    );
    scrape.gauge(
        "neutral_sync_failing",
        "1 while the newest commit is rejected or the branch cannot be fetched (unreachable, \
         deleted); GET /status says why",
        f64::from(u8::from(
            failing_errors.is_some() || world.sync.last_error.is_some(),
        )),
    );
    scrape.gauge(
        "neutral_config_errors",
        "Error diagnostics of the rejected newest commit",
        failing_errors.unwrap_or(0) as f64,
    );
    drop(world);

    let (per_ip, total) = app.connections.refused();
    scrape.samples(
        MetricType::Counter,
        "neutral_api_connections_refused",
        "API connections closed unserved by a limit (per_ip: --max-connections-per-ip; total: --max-connections or its node reserve)",
        [
            (labels([("reason", "per_ip")]), per_ip as f64),
            (labels([("reason", "total")]), total as f64),
        ],
    );
    scrape.gauge(
        "neutral_api_connections_open",
        "API connections open now",
        app.connections.open() as f64,
    );
    scrape.gauge(
        "neutral_event_streams_open",
        "GET /events streams open now (at most 256)",
        app.event_streams.open() as f64,
    );
    scrape.gauge(
        "neutral_node_streams_open",
        "Agent streams open now on this replica (at most --max-node-streams)",
        app.node_streams.open_count() as f64,
    );
    scrape.gauge(
        "neutral_heartbeat_writer_lag_seconds",
        "How long the oldest heartbeat this replica accepted and has not stored yet has waited (0 when none waits); other replicas see a heartbeat only once stored",
        app.heartbeat_backlog.lag(crate::world::now()).as_secs_f64(),
    );
    let (ringed_nodes, ringed_samples) = app.read_world().samples.size();
    scrape.gauge(
        "neutral_autoscale_samples_in_memory",
        "Metric samples the leader's autoscaler holds in memory (regions with a policy, as far back as their windows need)",
        ringed_samples as f64,
    );
    scrape.gauge(
        "neutral_autoscale_sampled_nodes",
        "Nodes whose metric samples the leader's autoscaler holds in memory",
        ringed_nodes as f64,
    );
    let mut out = String::new();
    scrape.encode(&mut out);
    let _ = app.counters.encode(&mut out);
    app.dns.render_metrics(&mut out);
    out
}

/// What [`operations_text`] renders, gathered from the world, the settings
/// and the store.
#[derive(Debug, Default)]
struct Operations {
    /// (region, declared state, computed health, desired nodes).
    regions: Vec<(String, &'static str, &'static str, u32)>,
    /// (node, region, up).
    nodes: Vec<(String, String, bool)>,
    last_sync_failed: bool,
    in_flight_timeout: std::time::Duration,
    /// Region → age of its in-flight autoscale action.
    in_flight: Vec<(String, std::time::Duration)>,
    /// Recent Terraform runs, newest first.
    runs: Vec<neutral_store::RunSummary>,
    now: neutral_core::model::Timestamp,
}

async fn render_operations(app: &App, out: &mut String) {
    let now = crate::world::now();
    // A store that cannot answer leaves those families without samples;
    // neutral_store_errors_total counts the failure.
    let (actions, runs) = app
        .with_store(|s| Ok((s.autoscale_state().list()?, s.runs().list_runs(200, None)?)))
        .await
        .unwrap_or_default();
    let mut ops = Operations {
        in_flight_timeout: app.settings.autoscale.in_flight_timeout,
        in_flight: actions
            .into_iter()
            .filter(|(_, action)| action.in_flight)
            .map(|(region, action)| (region, now.since(action.at)))
            .collect(),
        runs,
        now,
        ..Operations::default()
    };
    {
        let world = app.read_world();
        let nodes = || world.nodes.values().map(|entry| &entry.record.node);
        let statuses = neutral_core::health::capacity_statuses(&world.decl, nodes());
        for region in world.decl.regions.values() {
            let Some(status) = statuses.get(region.name.as_str()) else {
                continue;
            };
            let state = match region.state {
                neutral_core::model::DeclaredRegionState::Up => "up",
                neutral_core::model::DeclaredRegionState::Down => "down",
            };
            ops.regions.push((
                region.name.clone(),
                state,
                status.health.as_str(),
                world.decl.desired_nodes(&region.name),
            ));
        }
        ops.nodes = nodes()
            .map(|n| {
                (
                    n.id.clone(),
                    n.region.clone(),
                    n.status == neutral_core::model::NodeStatus::Up,
                )
            })
            .collect();
        ops.last_sync_failed = world.sync.last_error.is_some();
    }
    out.push_str(&operations_text(&ops));
}

fn operations_text(ops: &Operations) -> String {
    let mut scrape = Scrape::default();
    scrape.gauges(
        "neutral_region_health",
        "1 for a region's computed health (up, degraded, down), 0 for the others; state is the declared state",
        ops.regions.iter().flat_map(|(region, state, health, _)| {
            ["up", "degraded", "down"].into_iter().map(move |candidate| {
                (
                    labels([("region", region), ("state", state), ("health", candidate)]),
                    f64::from(u8::from(candidate == *health)),
                )
            })
        }),
    );
    scrape.gauges(
        "neutral_region_desired_nodes",
        "Nodes a region's node pool declares (desired_nodes)",
        ops.regions
            .iter()
            .map(|(region, _, _, desired)| (labels([("region", region)]), f64::from(*desired))),
    );
    scrape.gauges(
        "neutral_node_up",
        "1 while a node's published status is up, else 0 (down or drain)",
        ops.nodes.iter().map(|(node, region, up)| {
            (
                labels([("node", node), ("region", region)]),
                f64::from(u8::from(*up)),
            )
        }),
    );
    scrape.gauge(
        "neutral_sync_last_attempt_failed",
        "1 while the latest sync attempt failed (fetching or storing the configuration)",
        f64::from(u8::from(ops.last_sync_failed)),
    );
    scrape.gauge(
        "neutral_autoscale_in_flight_timeout_seconds",
        "How long an autoscale action may stay in flight before it no longer blocks new ones",
        ops.in_flight_timeout.as_secs_f64(),
    );
    scrape.gauges(
        "neutral_autoscale_in_flight_seconds",
        "Age of a region's autoscale action still in flight (its commit not applied or its nodes not settled)",
        ops.in_flight
            .iter()
            .map(|(region, age)| (labels([("region", region)]), age.as_secs_f64())),
    );
    // Runs come newest first: the first finished run of a workspace is its
    // latest; for unfinished ones the oldest (largest age) is kept.
    let mut last: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    let mut open: BTreeMap<(&str, &str, &str), f64> = BTreeMap::new();
    for run in &ops.runs {
        let key = (run.root.as_str(), run.workspace.as_str());
        if run.status.is_terminal() {
            last.entry(key).or_insert(run.status.as_str());
        } else {
            let since = match run.status {
                neutral_store::RunStatus::Running => run.started_at.unwrap_or(run.queued_at),
                _ => run.queued_at,
            };
            let age = ops.now.since(since).as_secs_f64();
            let entry = open
                .entry((key.0, key.1, run.status.as_str()))
                .or_insert(age);
            *entry = entry.max(age);
        }
    }
    scrape.gauges(
        "neutral_terraform_last_run",
        "1 labelled with the status of the latest finished Terraform run of a root and workspace (of the last 200 runs)",
        last.iter().map(|((root, workspace), status)| {
            (
                labels([("root", root), ("workspace", workspace), ("status", status)]),
                1.0,
            )
        }),
    );
    scrape.gauges(
        "neutral_terraform_run_age_seconds",
        "Age of the oldest queued or running Terraform run of a root and workspace",
        open.iter().map(|((root, workspace, status), age)| {
            (
                labels([("root", root), ("workspace", workspace), ("status", status)]),
                *age,
            )
        }),
    );
    let mut out = String::new();
    scrape.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use neutral_core::model::Timestamp;
    use neutral_store::{RunStatus, RunSummary};
    use std::time::Duration;

    fn run(id: i64, root: &str, workspace: &str, status: RunStatus, queued: i64) -> RunSummary {
        RunSummary {
            id,
            root: root.into(),
            workspace: workspace.into(),
            trigger: "push".into(),
            commit: None,
            status,
            adds: None,
            changes: None,
            destroys: None,
            exit_code: None,
            queued_at: Timestamp::from_millis(queued),
            started_at: (status != RunStatus::Queued)
                .then(|| Timestamp::from_millis(queued + 1_000)),
            finished_at: None,
            duration_ms: None,
        }
    }

    #[test]
    fn operations_metrics_render_health_nodes_sync_autoscale_and_runs() {
        let ops = Operations {
            regions: vec![
                ("jp".into(), "up", "degraded", 2),
                ("us".into(), "down", "down", 1),
            ],
            nodes: vec![
                ("jp-a".into(), "jp".into(), true),
                ("jp-\"b\"".into(), "jp".into(), false),
            ],
            last_sync_failed: true,
            in_flight_timeout: Duration::from_secs(600),
            in_flight: vec![("jp".into(), Duration::from_millis(90_500))],
            runs: vec![
                run(5, "infra/gtm", "default", RunStatus::Running, 100_000),
                run(4, "infra/gtm", "default", RunStatus::Failed, 50_000),
                run(3, "infra/gtm", "default", RunStatus::Succeeded, 40_000),
                run(2, "infra/node-pool", "jp", RunStatus::Queued, 70_000),
                run(1, "infra/node-pool", "jp", RunStatus::Queued, 10_000),
            ],
            now: Timestamp::from_millis(160_000),
        };
        expect_test::expect![[r##"
            # HELP neutral_region_health 1 for a region's computed health (up, degraded, down), 0 for the others; state is the declared state.
            # TYPE neutral_region_health gauge
            neutral_region_health{region="jp",state="up",health="up"} 0
            neutral_region_health{region="jp",state="up",health="degraded"} 1
            neutral_region_health{region="jp",state="up",health="down"} 0
            neutral_region_health{region="us",state="down",health="up"} 0
            neutral_region_health{region="us",state="down",health="degraded"} 0
            neutral_region_health{region="us",state="down",health="down"} 1
            # HELP neutral_region_desired_nodes Nodes a region's node pool declares (desired_nodes).
            # TYPE neutral_region_desired_nodes gauge
            neutral_region_desired_nodes{region="jp"} 2
            neutral_region_desired_nodes{region="us"} 1
            # HELP neutral_node_up 1 while a node's published status is up, else 0 (down or drain).
            # TYPE neutral_node_up gauge
            neutral_node_up{node="jp-a",region="jp"} 1
            neutral_node_up{node="jp-\"b\"",region="jp"} 0
            # HELP neutral_sync_last_attempt_failed 1 while the latest sync attempt failed (fetching or storing the configuration).
            # TYPE neutral_sync_last_attempt_failed gauge
            neutral_sync_last_attempt_failed 1
            # HELP neutral_autoscale_in_flight_timeout_seconds How long an autoscale action may stay in flight before it no longer blocks new ones.
            # TYPE neutral_autoscale_in_flight_timeout_seconds gauge
            neutral_autoscale_in_flight_timeout_seconds 600
            # HELP neutral_autoscale_in_flight_seconds Age of a region's autoscale action still in flight (its commit not applied or its nodes not settled).
            # TYPE neutral_autoscale_in_flight_seconds gauge
            neutral_autoscale_in_flight_seconds{region="jp"} 90.5
            # HELP neutral_terraform_last_run 1 labelled with the status of the latest finished Terraform run of a root and workspace (of the last 200 runs).
            # TYPE neutral_terraform_last_run gauge
            neutral_terraform_last_run{root="infra/gtm",workspace="default",status="failed"} 1
            # HELP neutral_terraform_run_age_seconds Age of the oldest queued or running Terraform run of a root and workspace.
            # TYPE neutral_terraform_run_age_seconds gauge
            neutral_terraform_run_age_seconds{root="infra/gtm",workspace="default",status="running"} 59
            neutral_terraform_run_age_seconds{root="infra/node-pool",workspace="jp",status="queued"} 150
        "##]]
        .assert_eq(&operations_text(&ops));
    }
}
