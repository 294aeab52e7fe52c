//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! [`operations_text`] adds what the alert rules and the dashboard in
//! `deploy/` need beyond the counters: region health, per-node up, the last
//! sync attempt, in-flight autoscale actions and Terraform runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

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

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render(app: &App, failing_errors: Option<usize>) -> String {
    let mut out = String::new();
    let world = app.read_world();

    family(
        &mut out,
        "neutral_nodes",
        "gauge",
        "Registered nodes by region and status.",
    );
    let mut counts: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for entry in world.nodes.values() {
        let node = &entry.record.node;
        *counts
            .entry((node.region.clone(), node.status.as_str()))
            .or_default() += 1;
    }
    for ((region, status), n) in &counts {
        let _ = writeln!(
            out,
            "neutral_nodes{{region=\"{}\",status=\"{status}\"}} {n}",
            escape(region)
        );
    }

    family(
        &mut out,
        "neutral_region_effective_weight",
        "gauge",
        "Effective weight of a region for a domain.",
    );
    for (domain, weights) in &world.report().domains {
        for region in &weights.regions {
            let _ = writeln!(
                out,
                "neutral_region_effective_weight{{domain=\"{}\",region=\"{}\"}} {}",
                escape(domain),
                escape(&region.region),
                region.effective
            );
        }
    }
    family(
        &mut out,
        "neutral_domain_answers",
        "gauge",
        "Answers a domain serves.",
    );
    for (domain, weights) in &world.report().domains {
        let _ = writeln!(
            out,
            "neutral_domain_answers{{domain=\"{}\",mode=\"{}\"}} {}",
            escape(domain),
            weights.mode.as_str(),
            weights.answers.len()
        );
    }
    family(
        &mut out,
        "neutral_split_brain_active",
        "gauge",
        "1 while the split-brain guard holds answers.",
    );
    let _ = writeln!(
        out,
        "neutral_split_brain_active {}",
        u8::from(world.report().split_brain.is_some())
    );

    family(
        &mut out,
        "neutral_sync_failing",
        "gauge",
        "1 while the newest commit is rejected or the branch cannot be fetched (unreachable, \
         deleted); GET /status says why.",
    );
    let _ = writeln!(
        out,
        "neutral_sync_failing {}",
        u8::from(failing_errors.is_some() || world.sync.last_error.is_some())
    );
    family(
        &mut out,
        "neutral_config_errors",
        "gauge",
        "Error diagnostics of the rejected newest commit.",
    );
    let _ = writeln!(out, "neutral_config_errors {}", failing_errors.unwrap_or(0));
    drop(world);

    let c = &app.counters;
    for (name, help, value) in [
        (
            "neutral_heartbeats_total",
            "Heartbeats accepted.",
            &c.heartbeats,
        ),
        (
            "neutral_heartbeats_rejected_total",
            "Heartbeats rejected (token or node unknown).",
            &c.heartbeats_rejected,
        ),
        (
            "neutral_registrations_total",
            "Node registrations.",
            &c.registrations,
        ),
        (
            "neutral_registrations_refused_total",
            "Registrations refused (identity conflict, region full, rate limited).",
            &c.registrations_refused,
        ),
        (
            "neutral_registrations_expired_total",
            "Registrations deleted because they never heartbeated (--registration-expiry).",
            &c.registrations_expired,
        ),
        (
            "neutral_node_status_changes_total",
            "Published node status changes.",
            &c.status_changes,
        ),
        (
            "neutral_syncs_applied_total",
            "Commits whose declarations were applied.",
            &c.syncs_applied,
        ),
        (
            "neutral_syncs_rejected_total",
            "Commits rejected by validation.",
            &c.syncs_rejected,
        ),
        (
            "neutral_sync_errors_total",
            "Sync attempts that failed (fetch or store).",
            &c.sync_errors,
        ),
        (
            "neutral_probes_ok_total",
            "Successful node probes.",
            &c.probes_ok,
        ),
        (
            "neutral_probes_failed_total",
            "Failed node probes.",
            &c.probes_failed,
        ),
        (
            "neutral_weight_recomputes_total",
            "Effective weight recomputations.",
            &c.recomputes,
        ),
        (
            "neutral_store_errors_total",
            "Store operations that failed.",
            &c.store_errors,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    let (per_ip, total) = app.connections.refused();
    family(
        &mut out,
        "neutral_api_connections_refused_total",
        "counter",
        "API connections closed unserved by a limit (per_ip: --max-connections-per-ip; total: --max-connections or its node reserve).",
    );
    let _ = writeln!(
        out,
        "neutral_api_connections_refused_total{{reason=\"per_ip\"}} {per_ip}"
    );
    let _ = writeln!(
        out,
        "neutral_api_connections_refused_total{{reason=\"total\"}} {total}"
    );
    family(
        &mut out,
        "neutral_api_connections_open",
        "gauge",
        "API connections open now.",
    );
    let _ = writeln!(
        out,
        "neutral_api_connections_open {}",
        app.connections.open()
    );
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
        let nodes = world.node_list();
        for region in world.decl.regions.values() {
            let status = neutral_core::health::capacity_status(&world.decl, region, &nodes);
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
        ops.nodes = nodes
            .iter()
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
    let mut out = String::new();
    family(
        &mut out,
        "neutral_region_health",
        "gauge",
        "1 for a region's computed health (up, degraded, down), 0 for the others; state is the declared state.",
    );
    for (region, state, health, _) in &ops.regions {
        for candidate in ["up", "degraded", "down"] {
            let _ = writeln!(
                out,
                "neutral_region_health{{region=\"{}\",state=\"{state}\",health=\"{candidate}\"}} {}",
                escape(region),
                u8::from(candidate == *health)
            );
        }
    }
    family(
        &mut out,
        "neutral_region_desired_nodes",
        "gauge",
        "Nodes a region's node pool declares (desired_nodes).",
    );
    for (region, _, _, desired) in &ops.regions {
        let _ = writeln!(
            out,
            "neutral_region_desired_nodes{{region=\"{}\"}} {desired}",
            escape(region)
        );
    }
    family(
        &mut out,
        "neutral_node_up",
        "gauge",
        "1 while a node's published status is up, else 0 (down or drain).",
    );
    for (node, region, up) in &ops.nodes {
        let _ = writeln!(
            out,
            "neutral_node_up{{node=\"{}\",region=\"{}\"}} {}",
            escape(node),
            escape(region),
            u8::from(*up)
        );
    }
    family(
        &mut out,
        "neutral_sync_last_attempt_failed",
        "gauge",
        "1 while the latest sync attempt failed (fetching or storing the configuration).",
    );
    let _ = writeln!(
        out,
        "neutral_sync_last_attempt_failed {}",
        u8::from(ops.last_sync_failed)
    );
    family(
        &mut out,
        "neutral_autoscale_in_flight_timeout_seconds",
        "gauge",
        "How long an autoscale action may stay in flight before it no longer blocks new ones.",
    );
    let _ = writeln!(
        out,
        "neutral_autoscale_in_flight_timeout_seconds {}",
        ops.in_flight_timeout.as_secs_f64()
    );
    family(
        &mut out,
        "neutral_autoscale_in_flight_seconds",
        "gauge",
        "Age of a region's autoscale action still in flight (its commit not applied or its nodes not settled).",
    );
    for (region, age) in &ops.in_flight {
        let _ = writeln!(
            out,
            "neutral_autoscale_in_flight_seconds{{region=\"{}\"}} {}",
            escape(region),
            age.as_secs_f64()
        );
    }
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
    family(
        &mut out,
        "neutral_terraform_last_run",
        "gauge",
        "1 labelled with the status of the latest finished Terraform run of a root and workspace (of the last 200 runs).",
    );
    for ((root, workspace), status) in &last {
        let _ = writeln!(
            out,
            "neutral_terraform_last_run{{root=\"{}\",workspace=\"{}\",status=\"{status}\"}} 1",
            escape(root),
            escape(workspace)
        );
    }
    family(
        &mut out,
        "neutral_terraform_run_age_seconds",
        "gauge",
        "Age of the oldest queued or running Terraform run of a root and workspace.",
    );
    for ((root, workspace, status), age) in &open {
        let _ = writeln!(
            out,
            "neutral_terraform_run_age_seconds{{root=\"{}\",workspace=\"{}\",status=\"{status}\"}} {age}",
            escape(root),
            escape(workspace)
        );
    }
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
