//! The daemon's own metrics for `/metrics`: counters and histograms any part
//! bumps or observes, registered once with a `prometheus-client` registry.
//! A leaf: it must not import any other module of the crate. What is
//! gathered at scrape time (nodes, weights, runs) is [`crate::metrics`]'s.

use std::time::Duration;

use neutral_core::backend_calls::{BackendCalls, Call, CallResult};
use neutral_core::model::DnsBackendKind;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Bucket bounds (seconds) for things that take milliseconds: recomputes,
/// heartbeat handling.
const FAST: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Bucket bounds (seconds) for things that take seconds: syncs, detection.
const SLOW: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Bucket bounds (seconds) for Terraform runs.
const RUNS: [f64; 10] = [1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0];

fn fast() -> Histogram {
    Histogram::new(FAST)
}

fn runs() -> Histogram {
    Histogram::new(RUNS)
}

/// A Terraform run's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub root: String,
    pub trigger: String,
    /// `succeeded` or `failed`.
    pub status: String,
}

/// A probe's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// A DNS backend request Terraform's provider reported.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendCallLabels {
    /// `embedded`, `powerdns`, `route53`, `cloudflare` or `alidns`.
    pub backend: &'static str,
    /// `read` or `write`.
    pub call: &'static str,
    /// `ok`, `throttled` or `error`.
    pub result: &'static str,
}

/// What happened to an agent stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// `opened`, `refused`, `replaced`, `broken`, `closed`, `silent`,
    /// `not_reading`, `refused_message` or `ended`.
    pub event: &'static str,
}

/// An autoscale decision's kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `none`, `scale_out`, `scale_in` or `replace`.
    pub kind: &'static str,
}

/// The daemon's counters and histograms.
#[derive(Debug)]
pub struct Counters {
    pub heartbeats: Counter,
    pub heartbeats_rejected: Counter,
    /// Heartbeats refused with `503 overloaded` (the writer's queue full
    /// and other replicas live, or the writer half a heartbeat timeout
    /// behind and a less behind replica live).
    pub heartbeats_shed: Counter,
    /// Heartbeats the writer left out, behind: a newer one of their node
    /// in the same batch was written (`ingest::newest_per_node`).
    pub heartbeats_coalesced: Counter,
    pub registrations: Counter,
    /// Registrations refused: identity conflict, region full, rate limited.
    pub registrations_refused: Counter,
    /// Registrations deleted because they never heartbeated.
    pub registrations_expired: Counter,
    /// Audit entries pruned by `--audit-retention` (archived first when
    /// `--audit-archive` is set).
    pub audit_pruned: Counter,
    pub status_changes: Counter,
    pub syncs_applied: Counter,
    pub syncs_rejected: Counter,
    pub sync_errors: Counter,
    pub probes: Family<ProbeLabels, Counter>,
    /// Agent streams opened, refused and ended, by event.
    pub node_streams: Family<StreamLabels, Counter>,
    pub recomputes: Counter,
    pub store_errors: Counter,
    pub autoscale_decisions: Family<DecisionLabels, Counter>,
    /// Requests to DNS backends, as the provider reports them.
    pub dns_backend_calls: Family<BackendCallLabels, Counter>,
    /// Unix time of the last sync that fetched the branch and found its
    /// newest commit valid (applied or already in force).
    pub last_good_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub recompute_seconds: Histogram,
    pub heartbeat_seconds: Histogram,
    pub sync_seconds: Histogram,
    /// From a node's last sign of life (heartbeat or passing probe) to the
    /// recompute that took it out of the answers.
    pub detection_seconds: Histogram,
    pub run_seconds: Family<RunLabels, Histogram, fn() -> Histogram>,
    registry: Registry,
}

/// A family listed by `/metrics` (its `# HELP` and `# TYPE`) even before its
/// first sample, so dashboards and rule checks can find it.
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> std::fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl Counters {
    pub fn new() -> Self {
        let mut counters = Counters {
            heartbeats: Counter::default(),
            heartbeats_rejected: Counter::default(),
            heartbeats_shed: Counter::default(),
            heartbeats_coalesced: Counter::default(),
            registrations: Counter::default(),
            registrations_refused: Counter::default(),
            registrations_expired: Counter::default(),
            audit_pruned: Counter::default(),
            status_changes: Counter::default(),
            syncs_applied: Counter::default(),
            syncs_rejected: Counter::default(),
            sync_errors: Counter::default(),
            probes: Family::default(),
            node_streams: Family::default(),
            recomputes: Counter::default(),
            store_errors: Counter::default(),
            autoscale_decisions: Family::default(),
            dns_backend_calls: Family::default(),
            last_good_sync: Gauge::default(),
            recompute_seconds: fast(),
            heartbeat_seconds: fast(),
            sync_seconds: Histogram::new(SLOW),
            detection_seconds: Histogram::new(SLOW),
            run_seconds: Family::new_with_constructor(runs),
            registry: Registry::default(),
        };
        counters.register();
        // Known label values start at 0, so a rate over them is defined
        // from the first scrape.
        for result in ["ok", "failed"] {
            counters
                .probes
                .get_or_create(&ProbeLabels { result })
                .inc_by(0);
        }
        for event in ["opened", "refused", "broken"] {
            counters
                .node_streams
                .get_or_create(&StreamLabels { event })
                .inc_by(0);
        }
        for kind in ["none", "scale_out", "scale_in", "replace"] {
            counters
                .autoscale_decisions
                .get_or_create(&DecisionLabels { kind })
                .inc_by(0);
        }
        for backend in DnsBackendKind::ALL {
            for result in CallResult::ALL {
                counters
                    .dns_backend_calls
                    .get_or_create(&BackendCallLabels {
                        backend: backend.as_str(),
                        call: Call::Write.as_str(),
                        result: result.as_str(),
                    })
                    .inc_by(0);
            }
        }
        counters
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        // Counter names get their `_total` from the encoder.
        for (name, help, counter) in [
            (
                "neutral_heartbeats",
                "Heartbeats accepted",
                &self.heartbeats,
            ),
            (
                "neutral_heartbeats_rejected",
                "Heartbeats rejected (token or node unknown)",
                &self.heartbeats_rejected,
            ),
            (
                "neutral_heartbeats_shed",
                "Heartbeats refused with 503 overloaded: the writer's queue was full, or it was behind and a less behind replica was live",
                &self.heartbeats_shed,
            ),
            (
                "neutral_heartbeats_coalesced",
                "Heartbeats accepted but not written, their writer 1 s or more behind: a newer heartbeat of the same node in the same batch was (liveness needs only the newest; their metric samples are lost)",
                &self.heartbeats_coalesced,
            ),
            (
                "neutral_registrations",
                "Node registrations",
                &self.registrations,
            ),
            (
                "neutral_registrations_refused",
                "Registrations refused (identity conflict, region full, rate limited)",
                &self.registrations_refused,
            ),
            (
                "neutral_registrations_expired",
                "Registrations deleted because they never heartbeated (--registration-expiry)",
                &self.registrations_expired,
            ),
            (
                "neutral_audit_entries_pruned",
                "Audit entries pruned by --audit-retention (archived first with --audit-archive)",
                &self.audit_pruned,
            ),
            (
                "neutral_node_status_changes",
                "Published node status changes",
                &self.status_changes,
            ),
            (
                "neutral_syncs_applied",
                "Commits whose declarations were applied",
                &self.syncs_applied,
            ),
            (
                "neutral_syncs_rejected",
                "Commits rejected by validation",
                &self.syncs_rejected,
            ),
            (
                "neutral_sync_errors",
                "Sync attempts that failed (fetch or store)",
                &self.sync_errors,
            ),
            (
                "neutral_weight_recomputes",
                "Effective weight recomputations",
                &self.recomputes,
            ),
            (
                "neutral_store_errors",
                "Store operations that failed",
                &self.store_errors,
            ),
        ] {
            r.register(name, help, counter.clone());
        }
        r.register(
            "neutral_node_streams",
            "Agent streams by event (opened, refused, replaced, broken, closed, silent, \
             not_reading, refused_message, ended)",
            self.node_streams.clone(),
        );
        r.register(
            "neutral_probes",
            "Node probes by result (ok, failed)",
            self.probes.clone(),
        );
        r.register(
            "neutral_autoscale_decisions",
            "Autoscale decisions by kind (none, scale_out, scale_in, replace), one per region and evaluation",
            self.autoscale_decisions.clone(),
        );
        r.register(
            "neutral_dns_backend_calls",
            "Requests Terraform's provider sent to DNS backends, by backend, call (read, write) and result (ok, throttled, error), as it reports them after each resource call",
            self.dns_backend_calls.clone(),
        );
        r.register(
            "neutral_sync_last_success_timestamp_seconds",
            "Unix time of the last sync that found the branch's newest commit valid (0: none since start)",
            self.last_good_sync.clone(),
        );
        r.register(
            "neutral_recompute_duration_seconds",
            "Time to recompute and publish effective weights",
            self.recompute_seconds.clone(),
        );
        r.register(
            "neutral_heartbeat_handling_seconds",
            "Time to handle an accepted heartbeat request",
            self.heartbeat_seconds.clone(),
        );
        r.register(
            "neutral_sync_duration_seconds",
            "Time of a sync attempt (fetch, validate, store, recompute)",
            self.sync_seconds.clone(),
        );
        r.register(
            "neutral_detection_seconds",
            "From a node's last sign of life (heartbeat or passing probe) to the recompute that took it out of the answers",
            self.detection_seconds.clone(),
        );
        r.register(
            "neutral_terraform_run_duration_seconds",
            "Terraform run duration by root, trigger and status",
            Listed(self.run_seconds.clone()),
        );
    }

    pub fn probe(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.probes.get_or_create(&ProbeLabels { result }).inc();
    }

    pub fn node_stream(&self, event: &'static str) {
        self.node_streams
            .get_or_create(&StreamLabels { event })
            .inc();
    }

    pub fn decision(&self, kind: &'static str) {
        self.autoscale_decisions
            .get_or_create(&DecisionLabels { kind })
            .inc();
    }

    /// Adds a provider's report of its DNS backend requests.
    pub fn backend_calls(&self, report: &BackendCalls) {
        for c in &report.calls {
            self.dns_backend_calls
                .get_or_create(&BackendCallLabels {
                    backend: c.backend.as_str(),
                    call: c.call.as_str(),
                    result: c.result.as_str(),
                })
                .inc_by(c.count);
        }
    }

    pub fn run_finished(&self, root: &str, trigger: &str, succeeded: bool, took: Duration) {
        let labels = RunLabels {
            root: root.to_owned(),
            trigger: trigger.to_owned(),
            status: if succeeded { "succeeded" } else { "failed" }.to_owned(),
        };
        self.run_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Appends every registered metric in the Prometheus text format 0.0.4.
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let counters = Counters::new();
        counters.heartbeats.inc();
        counters.probe(true);
        counters.probe(false);
        counters.probe(false);
        counters.recompute_seconds.observe(0.0003);
        counters.run_finished("infra/gtm", "push", true, Duration::from_millis(7_500));
        counters.backend_calls(&BackendCalls {
            calls: vec![neutral_core::backend_calls::CallCount {
                backend: DnsBackendKind::Alidns,
                call: Call::Write,
                result: CallResult::Throttled,
                count: 2,
            }],
        });
        let mut text = String::new();
        counters.encode(&mut text).unwrap();
        for line in [
            "# TYPE neutral_heartbeats_total counter",
            "neutral_heartbeats_total 1",
            "neutral_probes_total{result=\"ok\"} 1",
            "neutral_probes_total{result=\"failed\"} 2",
            "# TYPE neutral_recompute_duration_seconds histogram",
            "neutral_recompute_duration_seconds_bucket{le=\"0.00025\"} 0",
            "neutral_recompute_duration_seconds_bucket{le=\"0.0005\"} 1",
            "neutral_recompute_duration_seconds_count 1",
            "neutral_terraform_run_duration_seconds_bucket{root=\"infra/gtm\",trigger=\"push\",status=\"succeeded\",le=\"10\"} 1",
            "neutral_terraform_run_duration_seconds_bucket{root=\"infra/gtm\",trigger=\"push\",status=\"succeeded\",le=\"5\"} 0",
            "# HELP neutral_heartbeats_total Heartbeats accepted.",
            "neutral_dns_backend_calls_total{backend=\"alidns\",call=\"write\",result=\"throttled\"} 2",
            "neutral_dns_backend_calls_total{backend=\"route53\",call=\"write\",result=\"error\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains(".."),
            "help text doubled its period:\n{text}"
        );
    }
}
