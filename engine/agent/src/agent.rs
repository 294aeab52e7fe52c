//! The agent's life: register (keeping the identity in the state file),
//! heartbeat at the interval the control plane gives, measure or read the
//! metrics for each heartbeat, back off while the control plane is away, and
//! register anew when it has forgotten the node.
//!
//! Decisions are delegated to pure functions ([`crate::backoff::Backoff`], [`combine_metrics`],
//! [`clamp_interval`], [`CallError::on_heartbeat`]); this module sequences IO.

use std::future::Future;
use std::time::Duration;

use neutral_core::model::{Metrics, NodeMode, NodeStatus};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use std::sync::Arc;

use crate::client::{CallError, ControlPlane, Disposition, NodeApi, TlsSetupError, TrustedCa};
use crate::config::{AgentConfig, ConfigError};
use crate::cpu::{CpuMeter, read_proc_stat};
use crate::drain::{DrainStep, DrainTracker};
use crate::full_node::FullNode;
use crate::metrics_file::{FileMetrics, read_metrics_file};
use crate::node::Node;
use crate::node::ReleaseRequest;
use crate::node::access_log::{AccessLogTail, summarise as summarise_access_log};
use crate::node::runtime::Ctr;
use crate::node_exporter::NodeExporter;
use crate::orders::Orders;
use crate::probe::{ProbeSummary, Prober};
use crate::protocol::{
    HeartbeatRequest, HeartbeatResponse, RegisterRequest, ReleaseOrder, ReleaseResult,
};
use crate::state::{self, Identity};
use crate::stream::{StreamError, StreamLink, StreamOpener};

/// Heartbeat intervals outside this range are clamped: a zero interval from
/// a broken control plane must not become a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
pub const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// Timeout of a registration request.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("probe client: {0}")]
    ProbeClient(#[source] reqwest::Error),
    #[error("the control plane refused the registration: {0}")]
    RegistrationRefused(#[source] Box<CallError>),
    #[error("the node could not start: {0}")]
    Node(#[source] Box<crate::full_node::NodeStartError>),
}

impl AgentError {
    /// Whether the error is in the agent's arguments or files (exit code 2)
    /// rather than the control plane's answer (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, AgentError::Config(_) | AgentError::Tls(_))
    }
}

/// The heartbeat interval actually used for an interval the control plane
/// asked for.
pub fn clamp_interval(interval_ms: u64) -> Duration {
    Duration::from_millis(interval_ms).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Per-request timeout of a heartbeat: the interval, within 1 s .. 10 s.
pub fn heartbeat_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// The metrics of one heartbeat: the file's values where it has them, else
/// measured ones; `None` unless all three are known. Values are clamped to
/// their ranges and non-finite ones count as unknown.
pub fn combine_metrics(
    file: FileMetrics,
    measured_cpu: Option<f64>,
    probe: Option<ProbeSummary>,
) -> Option<Metrics> {
    let finite = |v: f64| v.is_finite().then_some(v);
    let cpu = file.cpu.or(measured_cpu).and_then(finite)?;
    let rtt_ms = file.rtt_ms.or(probe.map(|p| p.rtt_ms)).and_then(finite)?;
    let error_rate = file
        .error_rate
        .or(probe.map(|p| p.error_rate))
        .and_then(finite)?;
    Some(Metrics {
        cpu: cpu.clamp(0.0, 1.0),
        rtt_ms: rtt_ms.max(0.0),
        error_rate: error_rate.clamp(0.0, 1.0),
    })
}

/// Runs the agent until `shutdown` completes (then returns `Ok`, aborting any
/// request in flight) or the control plane refuses the registration.
pub async fn run_with_config(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let full_node = match &config.node {
        None => None,
        Some(setup) => tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            started = FullNode::start(setup) => {
                Some(started.map_err(|err| AgentError::Node(Box::new(err)))?)
            }
        },
    };
    let node = full_node.as_ref().map(|full| Arc::clone(&full.node));
    let result = match Agent::new(config, node) {
        Ok(mut agent) => tokio::select! {
            biased;
            () = &mut shutdown => {
                info!("shutting down");
                Ok(())
            }
            result = agent.run() => result,
        },
        Err(err) => Err(err),
    };
    if let Some(full) = full_node {
        full.stop().await;
    }
    result
}

/// A registration in force.
struct Session {
    node_id: String,
    node_token: String,
    interval: Duration,
}

struct Agent<C = ControlPlane> {
    config: AgentConfig,
    control_plane: C,
    prober: Prober,
    cpu: CpuMeter,
    /// The node id to ask for at the next registration.
    remembered_id: Option<String>,
    /// The token of `remembered_id`, proof of that identity when registering.
    remembered_token: Option<String>,
    /// A full node's workload, and what its nginx logged since the last look.
    node: Option<(Arc<Node<Ctr>>, AccessLogTail)>,
    drain: DrainTracker,
    /// The origin of the drain countdown's clock.
    origin: Instant,
    /// Releases ordered through the control plane (shared with their tasks).
    orders: Arc<std::sync::Mutex<Orders>>,
    node_exporter: Option<NodeExporter>,
    /// Opens the agent stream (unless `--no-stream`); `None` in the pacing
    /// tests, whose control plane is in memory.
    streams: Option<StreamOpener>,
}

/// What the agent keeps from the control plane's answers.
struct Answers {
    interval: Duration,
    last_status: Option<NodeStatus>,
}

/// The next message pushed on the stream; never, without one.
async fn next_push(link: &mut Option<StreamLink>) -> Result<HeartbeatResponse, StreamError> {
    match link {
        Some(link) => link.pushed().await,
        None => std::future::pending().await,
    }
}

/// How a registration ended.
enum SessionEnd {
    /// The control plane forgot the node after accepting this many heartbeats.
    Lost { accepted: u64 },
    /// The node drained and its grace ran out.
    Drained,
}

impl Agent {
    fn new(config: AgentConfig, node: Option<Arc<Node<Ctr>>>) -> Result<Self, AgentError> {
        warn_about_plain_http(&config);
        let ca = config.ca_file.as_deref().map(TrustedCa::read).transpose()?;
        let control_plane = ControlPlane::with_replicas(
            &config.control_plane,
            &config.control_plane_replicas,
            ca.as_ref(),
        )?;
        let streams = config.stream.then(|| StreamOpener::new(ca.as_ref()));
        let mut agent = Agent::with_client(config, node, control_plane)?;
        agent.streams = streams;
        Ok(agent)
    }
}

impl<C: NodeApi> Agent<C> {
    fn with_client(
        config: AgentConfig,
        node: Option<Arc<Node<Ctr>>>,
        control_plane: C,
    ) -> Result<Self, AgentError> {
        let prober = Prober::new(
            config.probe_url.clone(),
            config.probe_count,
            config.probe_timeout,
        )
        .map_err(AgentError::ProbeClient)?;
        let remembered = config
            .state_file
            .as_deref()
            .and_then(|path| match state::load(path) {
                Ok(identity) => identity.map(|identity| (identity.node_id, identity.node_token)),
                Err(err) => {
                    warn!(error = %err, "ignoring the state file; registering as a new node");
                    None
                }
            });
        let node = node.map(|node| {
            let tail = AccessLogTail::new(node.nginx().settings().access_log_path());
            (node, tail)
        });
        let drain = DrainTracker::new(config.drain_grace, config.dns_ttl);
        let node_exporter = config
            .node_exporter
            .clone()
            .map(NodeExporter::new)
            .transpose()
            .map_err(AgentError::ProbeClient)?;
        let mut agent = Agent {
            config,
            control_plane,
            prober,
            cpu: CpuMeter::default(),
            remembered_id: remembered.as_ref().map(|(id, _)| id.clone()),
            remembered_token: remembered.map(|(_, token)| token),
            node,
            drain,
            origin: Instant::now(),
            orders: Arc::default(),
            node_exporter,
            streams: None,
        };
        // A first reading, so the first heartbeat can already report CPU.
        agent.measure_cpu();
        Ok(agent)
    }

    async fn run(&mut self) -> Result<(), AgentError> {
        info!(
            control_plane = %self.config.control_plane,
            region = %self.config.region,
            address = %self.config.address,
            mode = mode_name(self.config.mode),
            "agent starting"
        );
        // Sessions lost before a single heartbeat got through: a control
        // plane that keeps forgetting the node must not get a hot loop.
        let mut futile_sessions = 0u32;
        loop {
            let session = self.register().await?;
            let accepted = match self.heartbeat_until_lost(&session).await {
                SessionEnd::Lost { accepted } => accepted,
                SessionEnd::Drained => {
                    info!(node_id = %session.node_id, "drained: DNS TTL and grace have passed; stopping");
                    return Ok(());
                }
            };
            self.forget_identity();
            if accepted > 0 {
                futile_sessions = 0;
            } else {
                futile_sessions = futile_sessions.saturating_add(1);
                let delay = self.config.backoff.delay(futile_sessions, rand::random());
                warn!(
                    futile_sessions,
                    retry_in_ms = millis(delay),
                    "the new registration was refused at once; waiting before the next"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// Registers, retrying with backoff until the control plane accepts or
    /// refuses for good.
    async fn register(&mut self) -> Result<Session, AgentError> {
        let mut failures = 0u32;
        loop {
            let request = RegisterRequest {
                region: self.config.region.clone(),
                address: self.config.address,
                mode: self.config.mode,
                hostname: self.config.hostname.clone(),
                agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                node_id: self.remembered_id.clone(),
                node_token: self
                    .remembered_id
                    .as_ref()
                    .and(self.remembered_token.clone()),
            };
            let result = self
                .control_plane
                .register(&self.config.join_token, &request, REGISTER_TIMEOUT)
                .await;
            match result {
                Ok(response) => {
                    let session = Session {
                        interval: clamp_interval(response.heartbeat_interval_ms),
                        node_id: response.node_id,
                        node_token: response.node_token,
                    };
                    let kept = self.remembered_id.as_deref() == Some(session.node_id.as_str());
                    info!(
                        node_id = %session.node_id,
                        kept_identity = kept,
                        heartbeat_interval_ms = response.heartbeat_interval_ms,
                        "registered"
                    );
                    self.remember_identity(&session);
                    return Ok(session);
                }
                Err(err) => match err.on_register() {
                    Disposition::Refused => {
                        return Err(AgentError::RegistrationRefused(Box::new(err)));
                    }
                    Disposition::Retry | Disposition::Reregister => {
                        failures = failures.saturating_add(1);
                        let delay = self.config.backoff.delay(failures, rand::random());
                        warn!(error = %err, failures, retry_in_ms = millis(delay), "registration failed");
                        tokio::time::sleep(delay).await;
                    }
                },
            }
        }
    }

    /// Heartbeats until the control plane no longer knows the node, or the
    /// node has drained. Heartbeats go over the agent stream while it is
    /// open (`stream.rs`), else over HTTP; a stream that cannot be opened is
    /// tried again with backoff, and a heartbeat whose stream broke is sent
    /// again over HTTP at once.
    async fn heartbeat_until_lost(&mut self, session: &Session) -> SessionEnd {
        let mut accepted = 0u64;
        let mut answers = Answers {
            interval: session.interval,
            last_status: None,
        };
        let mut failures = 0u32;
        let mut next = Instant::now();
        let mut link: Option<StreamLink> = None;
        let mut stream_due = Instant::now();
        let mut stream_failures = 0u32;
        loop {
            let wake = self
                .drain
                .deadline()
                .and_then(|deadline| self.origin.checked_add(deadline))
                .map_or(next, |deadline| deadline.min(next));
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                pushed = next_push(&mut link) => {
                    match pushed {
                        Ok(response) => {
                            debug!(node_id = %session.node_id, status = response.status.as_str(), "pushed by the control plane");
                            self.on_answer(session, &response, &mut answers);
                        }
                        Err(err) => {
                            warn!(error = %err, "agent stream lost; heartbeats go over HTTP until it is back");
                            link = None;
                            stream_due = Instant::now();
                        }
                    }
                    continue;
                }
            }
            if self.drain.step(self.origin.elapsed()) == DrainStep::Exit {
                return SessionEnd::Drained;
            }
            let started = Instant::now();
            let request = HeartbeatRequest {
                node_id: session.node_id.clone(),
                metrics: self.collect_metrics(answers.interval).await,
                release: lock_orders(&self.orders).to_report(),
            };
            let timeout = heartbeat_timeout(answers.interval);
            if link.is_none()
                && started >= stream_due
                && let Some(opener) = &self.streams
            {
                match opener
                    .open(
                        self.control_plane.base(),
                        &session.node_id,
                        &session.node_token,
                    )
                    .await
                {
                    Ok(opened) => {
                        info!(node_id = %session.node_id, control_plane = %self.control_plane.base(), "agent stream open");
                        link = Some(opened);
                        stream_failures = 0;
                    }
                    Err(err) => {
                        stream_failures = stream_failures.saturating_add(1);
                        let delay = self.config.backoff.delay(stream_failures, rand::random());
                        stream_due = Instant::now() + delay;
                        warn!(error = %err, retry_in_ms = millis(delay), "cannot open the agent stream; heartbeats go over HTTP");
                    }
                }
            }
            let mut on_stream = None;
            if let Some(open) = &mut link {
                match open.heartbeat(&request, timeout).await {
                    Ok(response) => on_stream = Some(response),
                    Err(err) => {
                        warn!(error = %err, "agent stream lost; this heartbeat goes over HTTP");
                        link = None;
                        stream_due = Instant::now();
                    }
                }
            }
            let result = match on_stream {
                Some(response) => Ok(response),
                None => {
                    self.control_plane
                        .heartbeat(&session.node_token, &request, timeout)
                        .await
                }
            };
            match result {
                Ok(response) => {
                    accepted = accepted.saturating_add(1);
                    if failures > 0 {
                        info!(failures, "control plane reachable again");
                    }
                    failures = 0;
                    self.on_answer(session, &response, &mut answers);
                    debug!(node_id = %session.node_id, metrics = ?request.metrics, "heartbeat sent");
                    next = started + answers.interval;
                }
                Err(err) => match err.on_heartbeat() {
                    Disposition::Reregister => {
                        warn!(error = %err, node_id = %session.node_id, "the control plane no longer knows this node; registering again");
                        return SessionEnd::Lost { accepted };
                    }
                    Disposition::Retry => {
                        failures = failures.saturating_add(1);
                        let backoff = self.config.backoff.capped_at(answers.interval);
                        let delay = backoff.delay(failures, rand::random());
                        warn!(error = %err, failures, retry_in_ms = millis(delay), "heartbeat failed");
                        next = Instant::now() + delay;
                    }
                    Disposition::Refused => {
                        error!(error = %err, "heartbeat refused; trying again at the next interval");
                        next = started + answers.interval;
                    }
                },
            }
        }
    }

    /// Acts on what the control plane said — a heartbeat's answer or a push
    /// on the stream: a release order, the node's status (drain), the
    /// heartbeat interval.
    fn on_answer(
        &mut self,
        session: &Session,
        response: &HeartbeatResponse,
        answers: &mut Answers,
    ) {
        let order = lock_orders(&self.orders).on_answer(response.release.as_ref());
        if let Some(order) = order {
            self.start_ordered_release(order);
        }
        if answers.last_status != Some(response.status) {
            info!(node_id = %session.node_id, status = response.status.as_str(), "node status");
            answers.last_status = Some(response.status);
            let step = self.drain.observe(response.status, self.origin.elapsed());
            if let DrainStep::Wait { deadline } = step {
                info!(
                    stop_in_ms = millis(deadline.saturating_sub(self.origin.elapsed())),
                    "draining: serving until DNS answers without this node have expired"
                );
            }
        }
        let asked = clamp_interval(response.heartbeat_interval_ms);
        if asked != answers.interval {
            info!(
                heartbeat_interval_ms = millis(asked),
                "heartbeat interval changed"
            );
            answers.interval = asked;
        }
    }

    async fn collect_metrics(&mut self, interval: Duration) -> Option<Metrics> {
        let proc_cpu = self.measure_cpu();
        let measured_cpu = match &mut self.node_exporter {
            Some(exporter) => exporter.measure().await.or(proc_cpu),
            None => proc_cpu,
        };
        let file = match &self.config.metrics_file {
            None => FileMetrics::default(),
            Some(path) => match read_metrics_file(path) {
                Ok(parsed) => {
                    for clamped in &parsed.clamped {
                        warn!(file = %path.display(), "{clamped}");
                    }
                    parsed.metrics
                }
                Err(err) => {
                    warn!("metrics file unusable, using measured values: {err}");
                    FileMetrics::default()
                }
            },
        };
        let mut probe = if file.rtt_ms.is_none() || file.error_rate.is_none() {
            self.prober.measure(interval).await
        } else {
            None
        };
        // A full node's nginx logged every request, the probes' included:
        // that is the better measurement when there is one.
        if let Some((_, tail)) = &mut self.node
            && let Some(logged) = summarise_access_log(&tail.read_new())
        {
            probe = Some(logged);
        }
        let metrics = combine_metrics(file, measured_cpu, probe);
        if metrics.is_none() {
            debug!(
                ?file,
                ?measured_cpu,
                ?probe,
                "metrics incomplete; heartbeat carries none"
            );
        }
        metrics
    }

    /// Runs a release the control plane ordered in its own task; its result
    /// goes out with the next heartbeats.
    fn start_ordered_release(&self, order: ReleaseOrder) {
        info!(release = %order.id, image = %order.image, "release ordered by the control plane");
        let orders = Arc::clone(&self.orders);
        let Some((node, _)) = &self.node else {
            lock_orders(&orders).finished(ReleaseResult {
                id: order.id,
                ok: false,
                message:
                    "this node runs no workload (start its agent with --runtime containerd --nginx)"
                        .to_owned(),
                duration_ms: None,
            });
            return;
        };
        let node = Arc::clone(node);
        tokio::spawn(async move {
            let request = ReleaseRequest {
                image: order.image,
                archive: None,
                health_path: order.health_path,
                timeout_ms: order.timeout_ms,
                id: Some(order.id.clone()),
            };
            let result = match node.release(&request).await {
                Ok(report) => ReleaseResult {
                    id: order.id,
                    ok: true,
                    message: format!(
                        "released {} on {} (old requests {})",
                        report.image,
                        report.colour,
                        if report.drained { "drained" } else { "cut off" }
                    ),
                    duration_ms: Some(report.stopped_ms),
                },
                Err(err) => ReleaseResult {
                    id: order.id,
                    ok: false,
                    message: err.to_string(),
                    duration_ms: None,
                },
            };
            lock_orders(&orders).finished(result);
        });
    }

    fn measure_cpu(&mut self) -> Option<f64> {
        match read_proc_stat(&self.config.proc_stat) {
            Ok(times) => self.cpu.observe(times),
            Err(err) => {
                debug!(error = %err, "CPU counters unavailable");
                None
            }
        }
    }

    fn remember_identity(&mut self, session: &Session) {
        self.remembered_id = Some(session.node_id.clone());
        self.remembered_token = Some(session.node_token.clone());
        let Some(path) = &self.config.state_file else {
            return;
        };
        let identity = Identity {
            node_id: session.node_id.clone(),
            node_token: session.node_token.clone(),
            region: self.config.region.clone(),
            address: self.config.address,
            control_plane: self.control_plane.base().to_string(),
        };
        if let Err(err) = state::save(path, &identity) {
            error!(error = %err, "could not keep the node identity; a restart will register a new node");
        }
    }

    fn forget_identity(&mut self) {
        self.remembered_id = None;
        self.remembered_token = None;
        if let Some(path) = &self.config.state_file
            && let Err(err) = state::forget(path)
        {
            warn!(error = %err, "could not remove the stale identity");
        }
    }
}

fn warn_about_plain_http(config: &AgentConfig) {
    let url = &config.control_plane;
    if url.scheme() != "http" {
        return;
    }
    if config.ca_file.is_some() {
        warn!(control_plane = %url, "--ca-file is ignored: the control plane URL is plain http");
    }
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        warn!(control_plane = %url, "plain http to a remote control plane: tokens travel unencrypted; use https");
    }
}

fn lock_orders(orders: &std::sync::Mutex<Orders>) -> std::sync::MutexGuard<'_, Orders> {
    orders
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn mode_name(mode: NodeMode) -> &'static str {
    match mode {
        NodeMode::ContainerdOnly => "containerd-only",
        NodeMode::K3sWorker => "k3s-worker",
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod pacing_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_win_and_measured_values_fill_the_gaps() {
        let probe = Some(ProbeSummary {
            rtt_ms: 4.0,
            error_rate: 0.5,
        });
        let file = FileMetrics {
            cpu: Some(0.9),
            rtt_ms: None,
            error_rate: Some(0.01),
        };
        assert_eq!(
            combine_metrics(file, Some(0.2), probe),
            Some(Metrics {
                cpu: 0.9,
                rtt_ms: 4.0,
                error_rate: 0.01
            })
        );
        assert_eq!(
            combine_metrics(FileMetrics::default(), Some(0.2), probe),
            Some(Metrics {
                cpu: 0.2,
                rtt_ms: 4.0,
                error_rate: 0.5
            })
        );
    }

    #[test]
    fn heartbeats_carry_metrics_only_when_all_three_are_known() {
        let probe = Some(ProbeSummary {
            rtt_ms: 4.0,
            error_rate: 0.0,
        });
        assert_eq!(combine_metrics(FileMetrics::default(), None, probe), None);
        assert_eq!(
            combine_metrics(FileMetrics::default(), Some(0.1), None),
            None
        );
        let nan_cpu = FileMetrics {
            cpu: Some(f64::NAN),
            ..FileMetrics::default()
        };
        assert_eq!(combine_metrics(nan_cpu, None, probe), None);
    }

    #[test]
    fn combined_values_are_clamped_to_their_ranges() {
        let file = FileMetrics {
            cpu: Some(3.0),
            rtt_ms: Some(-2.0),
            error_rate: Some(1.5),
        };
        assert_eq!(
            combine_metrics(file, None, None),
            Some(Metrics {
                cpu: 1.0,
                rtt_ms: 0.0,
                error_rate: 1.0
            })
        );
    }

    #[test]
    fn intervals_from_the_control_plane_are_bounded() {
        assert_eq!(clamp_interval(0), MIN_INTERVAL);
        assert_eq!(clamp_interval(10_000), Duration::from_secs(10));
        assert_eq!(clamp_interval(u64::MAX), MAX_INTERVAL);
        assert_eq!(
            heartbeat_timeout(Duration::from_millis(100)),
            Duration::from_secs(1)
        );
        assert_eq!(
            heartbeat_timeout(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
    }
}
