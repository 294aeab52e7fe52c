//! HTTP clients: the control plane's API (live health, domains, regions, and
//! its embedded DNS zone API) and PowerDNS' HTTP API, which share one zone
//! JSON shape.
//!
//! This module owns requests, timeouts and the JSON shapes on the wire, read
//! leniently (unknown fields ignored, so a newer server does not break an
//! older provider). It must not decide anything: the resources decide what
//! to read and write. Errors name the URL and status but never a secret.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use neutral_core::backend_calls::BackendCalls;
use neutral_core::model::{
    CloudProvider, DeclaredRegionState, GtmPolicy, Metrics, Node, NodeMode, NodeStatus,
    RegionHealth, Timestamp,
};
use neutral_core::weights::DomainWeights;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::secret::Secret;

/// The longest any one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered with unexpected JSON: {message}")]
    Decode { url: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Setup(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
enum Auth {
    None,
    Bearer(Secret),
    ApiKey(Secret),
}

#[derive(Clone, Debug)]
struct Http {
    client: reqwest::Client,
    base: String,
    auth: Auth,
}

/// The error text of a body, cut short.
fn excerpt(body: &str) -> String {
    const MAX: usize = 500;
    let trimmed = body.trim();
    match trimmed.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

impl Http {
    fn new(base: &str, auth: Auth) -> Result<Http, ClientError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!(
                "terraform-provider-neutral/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Http {
            client,
            base: base.to_owned(),
            auth,
        })
    }

    /// Sends a request; `Ok(None)` on 404.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Option<String>, ClientError> {
        let url = format!("{}{path}", self.base);
        let method_name = match method {
            reqwest::Method::GET => "GET",
            reqwest::Method::POST => "POST",
            reqwest::Method::PATCH => "PATCH",
            reqwest::Method::DELETE => "DELETE",
            _ => "request",
        };
        let mut request = self.client.request(method, &url);
        request = match &self.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
            Auth::ApiKey(key) => request.header("X-API-Key", key.expose()),
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let _waited = Waited(std::time::Instant::now());
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            message: without_url(&e),
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                message: without_url(&e),
            })?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(ClientError::Status {
                method: method_name,
                url,
                status: status.as_u16(),
                body: excerpt(&text),
            });
        }
        Ok(Some(text))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ClientError> {
        match self.send(reqwest::Method::GET, path, None).await? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ClientError::Decode {
                    url: format!("{}{path}", self.base),
                    message: e.to_string(),
                }),
        }
    }

    /// A write; a 404 is an error naming the path.
    async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), ClientError> {
        match self.send(method.clone(), path, Some(body)).await? {
            Some(_) => Ok(()),
            None => Err(ClientError::Status {
                method: match method {
                    reqwest::Method::POST => "POST",
                    reqwest::Method::DELETE => "DELETE",
                    _ => "PATCH",
                },
                url: format!("{}{path}", self.base),
                status: 404,
                body: "not found".to_owned(),
            }),
        }
    }
}

/// Counts a request's time as HTTP wait for [`crate::timing`], however the
/// request ends.
struct Waited(std::time::Instant);

impl Drop for Waited {
    fn drop(&mut self) {
        crate::timing::add_http(self.0.elapsed());
    }
}

/// reqwest's error text without its URL (which the caller adds once), with
/// its causes.
fn without_url(err: &reqwest::Error) -> String {
    let mut text = match err.url() {
        Some(url) => err.to_string().replace(&format!(" for url ({url})"), ""),
        None => err.to_string(),
    };
    neutral_core::error_text::push_causes(&mut text, std::error::Error::source(err));
    text
}

/// Percent-encodes one path segment (zone and domain names are plain, but
/// never trust that).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---- zones (PowerDNS' JSON shape, shared with the embedded server) ----

/// Read leniently: a field a newer PowerDNS adds is skipped.
pub use neutral_core::pdns_api::{ChangeType, Comment, Record, RrSet, RrSetChange, Zone};

// ---- the control plane ----

/// `GET /domains/{domain}`: the engine's effective weights with reasons.
#[derive(Clone, Debug, Deserialize)]
pub struct DomainView {
    #[serde(flatten)]
    pub weights: DomainWeights,
    #[serde(default)]
    pub split_brain: Option<String>,
    /// The GTM policy the weights were computed for (newer control planes).
    #[serde(default)]
    pub policy: Option<GtmPolicy>,
    #[serde(default)]
    pub commit: Option<String>,
}

/// `GET /regions`, one entry.
#[derive(Clone, Debug, Deserialize)]
pub struct RegionView {
    pub name: String,
    pub provider: CloudProvider,
    pub state: DeclaredRegionState,
    pub health: RegionHealth,
    #[serde(default)]
    pub health_reason: String,
    pub min_nodes: u32,
    pub max_nodes: u32,
    pub desired_nodes: u32,
    pub ready: u32,
    #[serde(default)]
    pub draining: u32,
    #[serde(default)]
    pub down: u32,
    pub base_weight: u32,
    #[serde(default)]
    pub failover: Vec<String>,
}

/// `GET /nodes`, one entry.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeView {
    pub id: String,
    pub region: String,
    pub address: String,
    pub status: NodeStatus,
    pub status_since: String,
    #[serde(default)]
    pub mode: NodeMode,
    #[serde(default)]
    pub last_heartbeat: Option<String>,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub registered_at: Option<String>,
    /// What the node registered as (the local launcher registers its
    /// agents as their slot key).
    #[serde(default)]
    pub hostname: Option<String>,
}

/// An RFC 3339 time as a [`Timestamp`].
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let since = time.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok().map(Timestamp)
}

impl NodeView {
    /// The node as the core models it; `None` when the control plane sent an
    /// address or time it cannot parse.
    pub fn to_node(&self) -> Option<Node> {
        Some(Node {
            id: self.id.clone(),
            region: self.region.clone(),
            address: self.address.parse::<IpAddr>().ok()?,
            status: self.status,
            status_since: parse_time(&self.status_since)?,
            mode: self.mode,
            last_heartbeat: self.last_heartbeat.as_deref().and_then(parse_time),
            metrics: self.metrics,
        })
    }
}

#[derive(Clone, Debug)]
pub struct ControlPlane {
    http: Http,
    /// The published health view to read weights from (`?view=`), when
    /// pinned; the control plane answers from its live view when it no
    /// longer holds that one.
    view: Option<String>,
}

impl ControlPlane {
    pub fn new(endpoint: &str, token: Option<Secret>) -> Result<ControlPlane, ClientError> {
        let auth = token.map_or(Auth::None, Auth::Bearer);
        Ok(ControlPlane {
            http: Http::new(endpoint, auth)?,
            view: None,
        })
    }

    /// Reads weights from the published view `view` (see
    /// [`crate::config::ENV_HEALTH_VIEW`]).
    #[must_use]
    pub fn pinned_to(mut self, view: Option<String>) -> ControlPlane {
        self.view = view;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.http.base
    }

    /// `None` when no GTM policy declares `domain`.
    pub async fn domain(&self, domain: &str) -> Result<Option<DomainView>, ClientError> {
        let path = match &self.view {
            Some(view) => format!("/domains/{}?view={}", segment(domain), segment(view)),
            None => format!("/domains/{}", segment(domain)),
        };
        self.http.get(&path).await
    }

    pub async fn regions(&self) -> Result<Vec<RegionView>, ClientError> {
        Ok(self.http.get("/regions").await?.unwrap_or_default())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        Ok(self.http.get("/nodes").await?.unwrap_or_default())
    }

    /// The domains the control plane computes weights for.
    pub async fn domain_names(&self) -> Result<Vec<String>, ClientError> {
        Ok(self.http.get("/domains").await?.unwrap_or_default())
    }

    /// `POST /nodes/{id}/drain` (admin): out of the answers at once.
    pub async fn drain_node(&self, id: &str) -> Result<(), ClientError> {
        self.http
            .write(
                reqwest::Method::POST,
                &format!("/nodes/{}/drain", segment(id)),
                &serde_json::json!({}),
            )
            .await
    }

    /// `POST /join-tokens`: a short-lived join token for `region`, minted
    /// with this client's token (a scheduler run's token may mint them for
    /// its own region only). The agents the local launcher starts get it,
    /// so the daemon's own join token never passes through Terraform.
    pub async fn mint_join_token(&self, region: &str) -> Result<Secret, ClientError> {
        let url = format!("{}/join-tokens", self.http.base);
        let body = self
            .http
            .send(
                reqwest::Method::POST,
                "/join-tokens",
                Some(&serde_json::json!({ "region": region })),
            )
            .await?
            .ok_or_else(|| ClientError::Decode {
                url: url.clone(),
                message: "no such endpoint (a control plane older than join tokens)".to_owned(),
            })?;
        let value: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| ClientError::Decode {
                url: url.clone(),
                message: e.to_string(),
            })?;
        value["token"]
            .as_str()
            .map(|t| Secret::new(t.to_owned()))
            .ok_or_else(|| ClientError::Decode {
                url,
                message: "no `token` in the answer".to_owned(),
            })
    }

    /// `DELETE /nodes/{id}` (admin); `false` when the node was not there.
    pub async fn delete_node(&self, id: &str) -> Result<bool, ClientError> {
        let path = format!("/nodes/{}", segment(id));
        Ok(self
            .http
            .send(reqwest::Method::DELETE, &path, None)
            .await?
            .is_some())
    }

    /// `POST /dns/backend-calls` (admin or a run's token): the requests this
    /// process sent to DNS backends since its last report.
    pub async fn report_backend_calls(&self, report: &BackendCalls) -> Result<(), ClientError> {
        let body = serde_json::to_value(report).map_err(|e| ClientError::Decode {
            url: format!("{}/dns/backend-calls", self.http.base),
            message: e.to_string(),
        })?;
        self.http
            .write(reqwest::Method::POST, "/dns/backend-calls", &body)
            .await
    }

    /// `None` when the zone does not exist.
    pub async fn zone(&self, zone: &str) -> Result<Option<Zone>, ClientError> {
        self.http
            .get(&format!("/dns/zones/{}", segment(zone)))
            .await
    }

    pub async fn create_zone(&self, zone: &str, nameservers: &[String]) -> Result<(), ClientError> {
        let body =
            serde_json::json!({ "name": zone, "kind": "Native", "nameservers": nameservers });
        self.http
            .write(reqwest::Method::POST, "/dns/zones", &body)
            .await
    }

    pub async fn patch_zone(&self, zone: &str, changes: &[RrSetChange]) -> Result<(), ClientError> {
        let body = serde_json::json!({ "rrsets": changes });
        self.http
            .write(
                reqwest::Method::PATCH,
                &format!("/dns/zones/{}", segment(zone)),
                &body,
            )
            .await
    }
}

// ---- PowerDNS ----

#[derive(Clone, Debug)]
pub struct PowerDns {
    http: Http,
    server_id: String,
}

impl PowerDns {
    pub fn new(url: &str, api_key: Secret, server_id: &str) -> Result<PowerDns, ClientError> {
        Ok(PowerDns {
            http: Http::new(url, Auth::ApiKey(api_key))?,
            server_id: server_id.to_owned(),
        })
    }

    fn zone_path(&self, zone: &str) -> String {
        format!(
            "/api/v1/servers/{}/zones/{}",
            segment(&self.server_id),
            segment(zone)
        )
    }

    /// `None` when the zone does not exist. PowerDNS answers 422 rather than
    /// 404 for some unknown zones; both mean "no such zone".
    pub async fn zone(&self, zone: &str) -> Result<Option<Zone>, ClientError> {
        match self.http.get(&self.zone_path(zone)).await {
            Err(err) if err.status() == Some(422) => Ok(None),
            other => other,
        }
    }

    pub async fn patch_zone(&self, zone: &str, changes: &[RrSetChange]) -> Result<(), ClientError> {
        let body = serde_json::json!({ "rrsets": changes });
        self.http
            .write(reqwest::Method::PATCH, &self.zone_path(zone), &body)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("example.com."), "example.com.");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn rfc3339_times_become_timestamps() {
        assert_eq!(
            parse_time("1970-01-01T00:00:01.500Z"),
            Some(Timestamp(1500))
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn comments_without_a_time_let_the_server_stamp_them() {
        let comment = Comment {
            content: "x".into(),
            account: "neutral".into(),
            modified_at: 0,
        };
        assert_eq!(
            serde_json::to_string(&comment).expect("json"),
            r#"{"content":"x","account":"neutral"}"#
        );
    }

    #[test]
    fn node_views_become_core_nodes() {
        let view: NodeView = serde_json::from_value(serde_json::json!({
            "id": "jp-1", "region": "jp", "address": "192.0.2.1", "status": "up",
            "status_since": "2024-01-01T00:00:00Z", "mode": "containerd-only",
            "registered_at": "2024-01-01T00:00:00Z", "health_detail": "ok",
        }))
        .expect("view");
        let node = view.to_node().expect("node");
        assert_eq!(node.status, NodeStatus::Up);
        assert_eq!(node.status_since, Timestamp(1_704_067_200_000));
    }
}
