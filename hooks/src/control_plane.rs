//! The calls the hooks make to the control plane, each bounded by one total
//! deadline (connect, request and body together): `GET /nodes` for the
//! what-if checks, `GET /leader` for a leader's push and `POST /sync` after
//! a push.
//!
//! This module owns the HTTP client (reqwest on a current-thread tokio
//! runtime built per call: a hook is a short-lived process), TLS set-up
//! (rustls with ring, the system roots or one CA file) and turning the
//! control plane's JSON into core types. It must not decide what a failure
//! means for the push; callers do.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use neutral_core::model::{Metrics, Node, NodeMode, NodeStatus, Timestamp};
use serde::Deserialize;

/// Answers larger than this are not from a control plane.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Why a call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {}ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("unreadable answer: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Setup(String),
}

/// A control plane at a base URL.
#[derive(Debug)]
pub struct ControlPlane {
    base: String,
    http: reqwest::Client,
}

impl ControlPlane {
    /// A client for `base` (e.g. `http://127.0.0.1:7070`), trusting only
    /// `ca_file` when given.
    pub fn new(base: &str, ca_file: Option<&Path>) -> Result<ControlPlane, CallError> {
        // Err means a provider is already installed, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("neutral-hooks/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|err| {
                CallError::Setup(format!("reading CA file {}: {err}", path.display()))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    CallError::Setup(format!(
                        "CA file {} holds no PEM certificate",
                        path.display()
                    ))
                })?;
            builder = builder.tls_certs_only(certificates);
        }
        let http = builder
            .build()
            .map_err(|err| CallError::Setup(format!("building the HTTP client: {err}")))?;
        Ok(ControlPlane {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /nodes` with a viewer (or admin) token, as core nodes, within
    /// `deadline`.
    pub fn nodes(&self, token: Option<&str>, deadline: Duration) -> Result<Vec<Node>, CallError> {
        let mut request = self.http.get(format!("{}/nodes", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let body = self.call(request, deadline)?;
        let views: Vec<NodeView> = serde_json::from_slice(&body)
            .map_err(|err| CallError::BadAnswer(format!("GET /nodes: {err}")))?;
        views.into_iter().map(NodeView::into_node).collect()
    }

    /// `GET /leader` with a viewer (or admin) token: the leader lease as the
    /// control plane's store holds it now, within `deadline`.
    pub fn leader(
        &self,
        token: Option<&str>,
        deadline: Duration,
    ) -> Result<LeaderLease, CallError> {
        let mut request = self.http.get(format!("{}/leader", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let body = self.call(request, deadline)?;
        serde_json::from_slice(&body)
            .map_err(|err| CallError::BadAnswer(format!("GET /leader: {err}")))
    }

    /// `POST /sync` with the admin token, within `deadline`.
    pub fn sync(&self, admin_token: &str, deadline: Duration) -> Result<SyncReply, CallError> {
        let request = self
            .http
            .post(format!("{}/sync", self.base))
            .bearer_auth(admin_token);
        let body = self.call(request, deadline)?;
        serde_json::from_slice(&body)
            .map_err(|err| CallError::BadAnswer(format!("POST /sync: {err}")))
    }

    fn call(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| CallError::Setup(format!("starting the HTTP runtime: {err}")))?;
        runtime.block_on(async {
            tokio::time::timeout(deadline, exchange(request))
                .await
                .unwrap_or(Err(CallError::Timeout(deadline)))
        })
    }
}

async fn exchange(request: reqwest::RequestBuilder) -> Result<Vec<u8>, CallError> {
    let mut response = request
        .send()
        .await
        .map_err(|err| CallError::Transport(describe(&err)))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| CallError::Transport(describe(&err)))?
    {
        if body.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
            return Err(CallError::BadAnswer(format!(
                "answer larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return Ok(body);
    }
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|e| format!("{}: {}", e.error, e.message))
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
    Err(CallError::Rejected {
        status: status.as_u16(),
        message,
    })
}

/// The whole error chain, so "connection refused" or a certificate problem
/// is visible, not just "error sending request".
fn describe(error: &reqwest::Error) -> String {
    neutral_core::error_text::with_causes(error)
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

/// The leader lease, as `GET /leader` shows it; `term` is null while no
/// replica ever led (one control plane without election).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct LeaderLease {
    pub holder: Option<String>,
    pub term: Option<i64>,
    pub lapsed: bool,
}

/// The fields of `GET /nodes` the what-if checks need; others are ignored.
#[derive(Debug, Deserialize)]
struct NodeView {
    id: String,
    region: String,
    address: IpAddr,
    status: NodeStatus,
    status_since: String,
    #[serde(default)]
    mode: NodeMode,
    last_heartbeat: Option<String>,
    metrics: Option<Metrics>,
}

impl NodeView {
    fn into_node(self) -> Result<Node, CallError> {
        let status_since = timestamp(&self.status_since)?;
        let last_heartbeat = self.last_heartbeat.as_deref().map(timestamp).transpose()?;
        Ok(Node {
            id: self.id,
            region: self.region,
            address: self.address,
            status: self.status,
            status_since,
            mode: self.mode,
            last_heartbeat,
            metrics: self.metrics,
        })
    }
}

/// An RFC 3339 time as the control plane writes it.
fn timestamp(text: &str) -> Result<Timestamp, CallError> {
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|err| CallError::BadAnswer(format!("time {text:?}: {err}")))?;
    let millis = time
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Ok(Timestamp(millis))
}

/// `POST /sync`'s answer.
#[derive(Clone, Debug, Deserialize)]
pub struct SyncReply {
    /// `applied`, `unchanged`, `rejected` or `error`.
    pub result: String,
    pub commit: Option<String>,
    pub message: String,
    #[serde(default)]
    pub diagnostics: Vec<neutral_core::diag::Diagnostic>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_views_become_core_nodes() {
        let json = r#"[{"id": "jp-1", "region": "jp", "address": "127.0.0.2", "status": "up",
            "status_since": "2024-05-01T10:00:00.250Z", "status_reason": "probe ok",
            "mode": "containerd-only", "registered_at": "2024-05-01T09:59:00Z",
            "last_heartbeat": null, "metrics": {"cpu": 0.5, "rtt_ms": 3.0, "error_rate": 0.0},
            "hostname": null, "agent_version": "0.1.0", "health_detail": "ok"}]"#;
        let views: Vec<NodeView> = serde_json::from_str(json).unwrap();
        let nodes: Vec<Node> = views
            .into_iter()
            .map(NodeView::into_node)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(nodes[0].id, "jp-1");
        assert_eq!(nodes[0].status, NodeStatus::Up);
        assert_eq!(nodes[0].status_since, Timestamp(1_714_557_600_250));
        assert_eq!(nodes[0].metrics.map(|m| m.cpu), Some(0.5));
    }

    #[test]
    fn a_bad_time_is_an_unreadable_answer() {
        assert!(matches!(
            timestamp("yesterday"),
            Err(CallError::BadAnswer(_))
        ));
    }

    #[test]
    fn an_unreachable_control_plane_fails_within_the_deadline() {
        // A port nothing listens on: connection refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cp = ControlPlane::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let start = std::time::Instant::now();
        let err = cp.nodes(None, Duration::from_millis(500)).unwrap_err();
        assert!(matches!(err, CallError::Transport(_)), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_silent_control_plane_times_out() {
        // Accepts connections but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cp = ControlPlane::new(&format!("http://{addr}"), None).unwrap();
        let start = std::time::Instant::now();
        let err = cp.nodes(None, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, CallError::Timeout(_)), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(listener);
    }
}
