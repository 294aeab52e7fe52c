//! A small control plane speaking the node API (node-api.md) on loopback,
//! with knobs to make it fail, forget nodes, stall or disappear, plus helpers
//! to run an agent and wait for conditions with a deadline.
//!
//! It is written from the API document, independently of the agent's own
//! protocol types, so that a mistake there shows up here.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use neutral_agent::{AgentArgs, AgentConfig, AgentError};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const JOIN_TOKEN: &str = "join-secret";

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub region: String,
    pub address: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub agent_version: Option<String>,
    #[serde(default)]
    pub node_id: Option<String>,
    /// Proof of `node_id`: the token the agent was given for it.
    #[serde(default)]
    pub node_token: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsBody {
    pub cpu: f64,
    pub rtt_ms: f64,
    pub error_rate: f64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    pub node_id: String,
    #[serde(default)]
    pub metrics: Option<MetricsBody>,
}

#[derive(Clone, Debug)]
pub struct NodeRecord {
    pub region: String,
    pub address: IpAddr,
    pub token: String,
}

/// A request the control plane received, with the status it answered.
#[derive(Clone, Debug)]
pub struct Seen<T> {
    pub at: Instant,
    pub status: u16,
    pub body: Option<T>,
    /// For registrations: the id handed out.
    pub node_id: Option<String>,
}

#[derive(Debug)]
pub struct CpState {
    pub regions: BTreeSet<String>,
    pub interval_ms: u64,
    pub nodes: BTreeMap<String, NodeRecord>,
    pub registrations: Vec<Seen<RegisterBody>>,
    pub heartbeats: Vec<Seen<HeartbeatBody>>,
    /// When set, every node API request is answered with this status.
    pub failure: Option<StatusCode>,
    /// When set, heartbeats (only) are answered with this status.
    pub heartbeat_failure: Option<StatusCode>,
    /// Heartbeats are answered only after this long.
    pub heartbeat_delay: Duration,
    next_id: u64,
}

pub type Shared = Arc<Mutex<CpState>>;

pub fn new_state(regions: &[&str], interval_ms: u64) -> Shared {
    Arc::new(Mutex::new(CpState {
        regions: regions.iter().map(|r| (*r).to_owned()).collect(),
        interval_ms,
        nodes: BTreeMap::new(),
        registrations: Vec::new(),
        heartbeats: Vec::new(),
        failure: None,
        heartbeat_failure: None,
        heartbeat_delay: Duration::ZERO,
        next_id: 0x7f3a90,
    }))
}

pub fn lock(state: &Shared) -> MutexGuard<'_, CpState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message })),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn register(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut cp = lock(&state);
    let now = Instant::now();
    let parsed: Option<RegisterBody> = serde_json::from_slice(&body).ok();
    let (status, response, node_id) = register_answer(&mut cp, &headers, parsed.as_ref());
    cp.registrations.push(Seen {
        at: now,
        status: status.as_u16(),
        body: parsed,
        node_id,
    });
    response
}

fn register_answer(
    cp: &mut CpState,
    headers: &HeaderMap,
    body: Option<&RegisterBody>,
) -> (StatusCode, Response, Option<String>) {
    let fail = |status: StatusCode, code: &str, message: &str| {
        (status, error(status, code, message), None)
    };
    if let Some(status) = cp.failure {
        return fail(status, "unavailable", "the test says so");
    }
    if bearer(headers) != Some(JOIN_TOKEN) {
        return fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "bad or missing join token",
        );
    }
    if !is_json(headers) {
        return fail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "send application/json",
        );
    }
    let Some(body) = body else {
        return fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body is not a register request",
        );
    };
    if !cp.regions.contains(&body.region) {
        return fail(
            StatusCode::NOT_FOUND,
            "unknown_region",
            "region is not declared",
        );
    }
    let Ok(address) = body.address.parse::<IpAddr>() else {
        return fail(
            StatusCode::BAD_REQUEST,
            "bad_address",
            "address is not an IP",
        );
    };
    if let Some(mode) = &body.mode
        && mode != "containerd-only"
        && mode != "k3s-worker"
    {
        return fail(StatusCode::BAD_REQUEST, "bad_mode", "mode");
    }
    let kept = body.node_id.as_ref().filter(|id| {
        cp.nodes
            .get(*id)
            .is_some_and(|n| n.region == body.region && n.address == address)
    });
    let node_id = match kept {
        Some(id) => id.clone(),
        None => {
            cp.next_id += 1;
            format!("{}-{:x}", body.region, cp.next_id)
        }
    };
    let token = format!("token-{node_id}-{}", cp.registrations.len());
    cp.nodes.insert(
        node_id.clone(),
        NodeRecord {
            region: body.region.clone(),
            address,
            token: token.clone(),
        },
    );
    let response = (
        StatusCode::CREATED,
        axum::Json(json!({
            "node_id": node_id,
            "node_token": token,
            "heartbeat_interval_ms": cp.interval_ms,
            "heartbeat_timeout_ms": cp.interval_ms * 3,
        })),
    )
        .into_response();
    (StatusCode::CREATED, response, Some(node_id))
}

async fn heartbeat(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let delay = lock(&state).heartbeat_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut cp = lock(&state);
    let parsed: Option<HeartbeatBody> = serde_json::from_slice(&body).ok();
    let (status, response) = heartbeat_answer(&cp, &headers, parsed.as_ref());
    cp.heartbeats.push(Seen {
        at: Instant::now(),
        status: status.as_u16(),
        body: parsed,
        node_id: None,
    });
    response
}

fn heartbeat_answer(
    cp: &CpState,
    headers: &HeaderMap,
    body: Option<&HeartbeatBody>,
) -> (StatusCode, Response) {
    let fail =
        |status: StatusCode, code: &str, message: &str| (status, error(status, code, message));
    if let Some(status) = cp.failure.or(cp.heartbeat_failure) {
        return fail(status, "unavailable", "the test says so");
    }
    if !is_json(headers) {
        return fail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "send application/json",
        );
    }
    let Some(body) = body else {
        return fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body is not a heartbeat",
        );
    };
    let known = cp.nodes.get(&body.node_id);
    if known.is_none_or(|node| bearer(headers) != Some(node.token.as_str())) {
        return fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown node or bad token",
        );
    }
    if let Some(m) = body.metrics {
        let ok = (0.0..=1.0).contains(&m.cpu)
            && (0.0..=1.0).contains(&m.error_rate)
            && m.rtt_ms >= 0.0
            && m.rtt_ms.is_finite();
        if !ok {
            return fail(
                StatusCode::BAD_REQUEST,
                "bad_metrics",
                "metrics out of range",
            );
        }
    }
    let response = (
        StatusCode::OK,
        axum::Json(json!({ "status": "up", "heartbeat_interval_ms": cp.interval_ms })),
    )
        .into_response();
    (StatusCode::OK, response)
}

fn app(state: Shared) -> Router {
    Router::new()
        .route("/nodes/register", post(register))
        .route("/nodes/heartbeat", post(heartbeat))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// The control plane's server, HTTP or HTTPS, on a loopback port.
pub struct TestControlPlane {
    pub state: Shared,
    pub addr: SocketAddr,
    tls: Option<RustlsConfig>,
    handle: Handle<SocketAddr>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestControlPlane {
    pub async fn start(state: Shared) -> Self {
        Self::serve(state, "127.0.0.1:0".parse().unwrap(), None).await
    }

    pub async fn start_tls(state: Shared, cert_pem: &str, key_pem: &str) -> Self {
        neutral_agent::install_crypto_provider();
        let tls = RustlsConfig::from_pem(cert_pem.as_bytes().to_vec(), key_pem.as_bytes().to_vec())
            .await
            .unwrap();
        Self::serve(state, "127.0.0.1:0".parse().unwrap(), Some(tls)).await
    }

    async fn serve(state: Shared, addr: SocketAddr, tls: Option<RustlsConfig>) -> Self {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = Handle::new();
        let service = app(state.clone()).into_make_service();
        let task = match tls.clone() {
            None => {
                let server = axum_server::from_tcp(listener)
                    .unwrap()
                    .handle(handle.clone());
                tokio::spawn(server.serve(service))
            }
            Some(config) => {
                let server = axum_server::tls_rustls::from_tcp_rustls(listener, config)
                    .unwrap()
                    .handle(handle.clone());
                tokio::spawn(server.serve(service))
            }
        };
        TestControlPlane {
            state,
            addr,
            tls,
            handle,
            task,
        }
    }

    pub fn url(&self) -> reqwest::Url {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr).parse().unwrap()
    }

    /// Stops accepting and drops every connection.
    pub async fn stop(self) -> StoppedControlPlane {
        self.handle.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        StoppedControlPlane {
            state: self.state,
            addr: self.addr,
            tls: self.tls,
        }
    }
}

/// A stopped control plane that remembers its nodes and port.
pub struct StoppedControlPlane {
    pub state: Shared,
    pub addr: SocketAddr,
    tls: Option<RustlsConfig>,
}

impl StoppedControlPlane {
    pub async fn restart(self) -> TestControlPlane {
        TestControlPlane::serve(self.state, self.addr, self.tls).await
    }
}

/// A plain local service for the agent to probe: `/healthz` answers 200 and
/// 500 in turn.
pub struct ProbeService {
    pub url: reqwest::Url,
    pub hits: Arc<Mutex<u64>>,
    handle: Handle<SocketAddr>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ProbeService {
    pub async fn start() -> Self {
        let hits = Arc::new(Mutex::new(0u64));
        let counter = hits.clone();
        let app = Router::new().route(
            "/healthz",
            axum::routing::get(move || {
                let counter = counter.clone();
                async move {
                    let mut n = counter.lock().unwrap();
                    *n += 1;
                    if *n % 2 == 1 {
                        StatusCode::OK
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = Handle::new();
        let server = axum_server::from_tcp(listener)
            .unwrap()
            .handle(handle.clone());
        let task = tokio::spawn(server.serve(app.into_make_service()));
        ProbeService {
            url: format!("http://{addr}/healthz").parse().unwrap(),
            hits,
            handle,
            task,
        }
    }

    pub async fn stop(self) {
        self.handle.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// An agent running in a task until told to stop.
pub struct RunningAgent {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    pub fn start(config: AgentConfig) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(neutral_agent::run_with_config(config, async {
            let _ = rx.await;
        }));
        RunningAgent {
            shutdown: Some(tx),
            task,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Signals shutdown and checks that the agent is gone within a second.
    pub async fn stop(mut self) -> Result<(), AgentError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(1), self.task)
            .await
            .expect("the agent stops within a second of shutdown")
            .expect("the agent task does not panic")
    }

    /// Waits for the agent to end on its own.
    pub async fn finished(self, within: Duration) -> Result<(), AgentError> {
        tokio::time::timeout(within, self.task)
            .await
            .expect("the agent ended in time")
            .expect("the agent task does not panic")
    }
}

/// Agent arguments for a test: explicit address, join token file in `dir`,
/// fast backoff, short probes.
pub fn args(url: &reqwest::Url, region: &str, dir: &Path) -> AgentArgs {
    let token_file = dir.join("join-token");
    if !token_file.exists() {
        std::fs::write(&token_file, format!("{JOIN_TOKEN}\n")).unwrap();
    }
    AgentArgs {
        control_plane: url.clone(),
        region: region.to_owned(),
        ip: Some("127.0.0.2".parse().unwrap()),
        join_token_file: Some(token_file),
        hostname: Some("node-a".to_owned()),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        probe_count: 2,
        probe_timeout: Duration::from_millis(200),
        ..AgentArgs::default()
    }
}

pub async fn config(args: AgentArgs) -> AgentConfig {
    AgentConfig::from_args_and_env(args, None).await.unwrap()
}

/// Polls `condition` every 10 ms until it holds or `within` passes.
pub async fn wait_until(within: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        eventually(within, condition).await,
        "timed out after {within:?} waiting for {what}"
    );
}

/// Polls `condition` every 10 ms; whether it held within `within`.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes a metrics file atomically (temporary file + rename), as the
/// textfile collector convention asks.
pub fn write_metrics(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

pub use neutral_e2e::pki;

/// Logs to the test's output when RUST_LOG asks for it.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
