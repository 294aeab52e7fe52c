//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4).

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
    let text = render(&app, failing);
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
        "1 while the newest commit is rejected.",
    );
    let _ = writeln!(
        out,
        "neutral_sync_failing {}",
        u8::from(failing_errors.is_some())
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
    app.dns.render_metrics(&mut out);
    out
}
