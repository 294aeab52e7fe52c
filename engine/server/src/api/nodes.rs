//! Node API writes: registration and heartbeats (node-authenticated), drain
//! and delete (admin).

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use neutral_core::liveness::Liveness;
use neutral_core::model::{Metrics, NodeMode, NodeStatus};
use neutral_store::{AuditEntry, Heartbeat, NewNode, StoreError, TokenHash};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::common::require_admin;
use super::read;
use crate::app::App;
use crate::auth;
use crate::counters::Counters;
use crate::error::{ApiError, JsonBody};
use crate::world::{NodeEntry, liveness_for, now};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    region: String,
    address: String,
    #[serde(default)]
    mode: Option<NodeMode>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    agent_version: Option<String>,
    #[serde(default)]
    node_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RegisterResponse {
    node_id: String,
    node_token: String,
    heartbeat_interval_ms: u64,
    heartbeat_timeout_ms: u64,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn check_text(field: &str, value: Option<&String>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > max || v.chars().any(char::is_control) => {
            Err(ApiError::bad_request(format!(
                "{field}: 1 to {max} characters without control characters"
            )))
        }
        _ => Ok(()),
    }
}

pub async fn register(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    match auth::bearer(&headers) {
        None => {
            return Err(ApiError::unauthorized(
                "missing `Authorization: Bearer <join token>`",
            ));
        }
        Some(token) if !app.join_token.matches(token) => {
            return Err(ApiError::unauthorized("invalid join token"));
        }
        Some(_) => {}
    }
    let address: IpAddr = request.address.trim().parse().map_err(|_| {
        ApiError::bad_request(format!(
            "address: `{}` is not an IP address",
            request.address
        ))
    })?;
    if address.is_unspecified() || address.is_multicast() {
        return Err(ApiError::bad_request(format!(
            "address: {address} cannot serve traffic (unspecified or multicast)"
        )));
    }
    check_text("hostname", request.hostname.as_ref(), 253)?;
    check_text("agent_version", request.agent_version.as_ref(), 64)?;
    check_text("node_id", request.node_id.as_ref(), 64)?;
    let (settings, probe, previous_drained, reuse_id) = {
        let world = app.read_world();
        if !world.decl.regions.contains_key(&request.region) {
            let known: Vec<&str> = world.decl.regions.keys().map(String::as_str).collect();
            return Err(ApiError::not_found(
                "unknown_region",
                format!(
                    "region: `{}` is not declared in platform-config (declared: {})",
                    request.region,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        let (settings, probe) = liveness_for(&app.settings.liveness, &world.decl, &request.region);
        let old = request.node_id.as_ref().and_then(|id| world.nodes.get(id));
        let reuse = old
            .filter(|e| e.record.node.region == request.region && e.record.node.address == address);
        (
            settings,
            probe,
            reuse.is_some_and(|e| e.liveness.drained),
            reuse.map(|e| e.record.node.id.clone()),
        )
    };
    let at = now();
    let token = auth::new_token();
    let mut id = reuse_id
        .clone()
        .unwrap_or_else(|| new_node_id(&request.region));
    let mut attempts = 0;
    let record = loop {
        let node = NewNode {
            id: id.clone(),
            region: request.region.clone(),
            address,
            mode: request.mode.unwrap_or_default(),
            hostname: request.hostname.clone(),
            agent_version: request.agent_version.clone(),
            token_hash: TokenHash::of(&token),
            status: if previous_drained {
                NodeStatus::Drain
            } else {
                NodeStatus::Down
            },
            at,
        };
        let actor = format!("node:{id}");
        match app
            .with_store(move |s| s.nodes().register(&node, &actor))
            .await
        {
            Ok(record) => break record,
            Err(err)
                if attempts < 3
                    && matches!(
                        err.downcast_ref::<StoreError>(),
                        Some(StoreError::NodeIdTaken { .. })
                    ) =>
            {
                attempts += 1;
                id = new_node_id(&request.region);
            }
            Err(err) => return Err(ApiError::internal(&err)),
        }
    };
    let mut liveness = Liveness::registered(at);
    liveness.drained = previous_drained;
    app.write_world().nodes.insert(
        id.clone(),
        NodeEntry {
            record,
            token: TokenHash::of(&token),
            liveness,
            settings,
            probe,
            next_probe: at,
            probe_in_flight: false,
        },
    );
    Counters::bump(&app.counters.registrations);
    tracing::info!(node = %id, region = %request.region, %address, reused = reuse_id.is_some(), "node registered");
    app.probe_wakeup.notify_one();
    app.recompute("node registered").await;
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            node_id: id,
            node_token: token,
            heartbeat_interval_ms: millis(app.settings.heartbeat_interval),
            heartbeat_timeout_ms: millis(app.settings.liveness.heartbeat_timeout),
        }),
    ))
}

fn new_node_id(region: &str) -> String {
    use rand::Rng;
    format!(
        "{region}-{:06x}",
        rand::rng().random_range(0..0x100_0000u32)
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    node_id: String,
    #[serde(default)]
    metrics: Option<MetricsBody>,
    /// The result of a release the node was ordered to do.
    #[serde(default)]
    release: Option<crate::releases::ReleaseResult>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsBody {
    cpu: f64,
    #[serde(default)]
    rtt_ms: f64,
    #[serde(default)]
    error_rate: f64,
}

impl MetricsBody {
    fn check(&self) -> Result<Metrics, ApiError> {
        let ratio = |name: &str, v: f64| {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(ApiError::bad_request(format!(
                    "metrics.{name}: {v} is outside 0..=1"
                )))
            }
        };
        if !(self.rtt_ms.is_finite() && (0.0..=3_600_000.0).contains(&self.rtt_ms)) {
            return Err(ApiError::bad_request(format!(
                "metrics.rtt_ms: {} is outside 0..=3600000",
                self.rtt_ms
            )));
        }
        Ok(Metrics {
            cpu: ratio("cpu", self.cpu)?,
            rtt_ms: self.rtt_ms,
            error_rate: ratio("error_rate", self.error_rate)?,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct HeartbeatResponse {
    status: NodeStatus,
    heartbeat_interval_ms: u64,
    /// A release the node should do (until it reports the result).
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<crate::releases::ReleaseOrder>,
}

pub async fn heartbeat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let Some(token) = auth::bearer(&headers) else {
        Counters::bump(&app.counters.heartbeats_rejected);
        return Err(ApiError::unauthorized(
            "missing `Authorization: Bearer <node token>`",
        ));
    };
    let metrics = request
        .metrics
        .as_ref()
        .map(MetricsBody::check)
        .transpose()?;
    let at = now();
    let outcome = {
        let mut world = app.write_world();
        match world
            .nodes
            .get_mut(&request.node_id)
            .filter(|e| e.token.matches(token))
        {
            None => None,
            Some(entry) => {
                entry.liveness.heartbeat(at, &entry.settings);
                entry.record.node.last_heartbeat = Some(at);
                if let Some(m) = metrics {
                    entry.record.node.metrics = Some(m);
                    entry.record.metrics_at = Some(at);
                }
                let status = entry.record.node.status;
                Some((
                    status,
                    entry.liveness.status(at, &entry.settings).0 != status,
                ))
            }
        }
    };
    let Some((status, changed)) = outcome else {
        Counters::bump(&app.counters.heartbeats_rejected);
        return Err(ApiError::unauthorized(
            "unknown node or invalid node token; register again",
        ));
    };
    Counters::bump(&app.counters.heartbeats);
    let (release, finished) = app
        .releases
        .exchange(&request.node_id, request.release.as_ref());
    if let Some(finished) = finished {
        super::releases::record_finished(&app, &request.node_id, &finished).await;
    }
    app.enqueue_heartbeat(Heartbeat {
        node_id: request.node_id,
        at,
        metrics,
    });
    if changed {
        // The health ticker reconciles at once; a burst of heartbeats that
        // change liveness (thousands of nodes coming up) folds into few runs.
        app.reconcile_soon.notify_one();
    }
    Ok(Json(HeartbeatResponse {
        status,
        heartbeat_interval_ms: millis(app.settings.heartbeat_interval),
        release,
    }))
}

async fn set_drained(
    app: &Arc<App>,
    headers: &HeaderMap,
    id: &str,
    drained: bool,
) -> Result<Json<read::NodeView>, ApiError> {
    require_admin(app, headers)?;
    {
        let mut world = app.write_world();
        let entry = world
            .nodes
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("unknown_node", format!("no node `{id}`")))?;
        entry.liveness.drained = drained;
    }
    let verb = if drained { "drain" } else { "undrain" };
    app.audit(AuditEntry {
        at: now(),
        actor: "admin".into(),
        kind: "api.write".into(),
        subject: id.to_owned(),
        message: format!("{verb} node {id}"),
        commit: None,
        data: json!({ "endpoint": format!("POST /nodes/{id}/{verb}") }),
    })
    .await;
    app.reconcile("admin").await;
    let world = app.read_world();
    let entry = world
        .nodes
        .get(id)
        .ok_or_else(|| ApiError::not_found("unknown_node", format!("no node `{id}`")))?;
    Ok(Json(read::NodeView::of(entry)))
}

pub async fn drain(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<read::NodeView>, ApiError> {
    set_drained(&app, &headers, &id, true).await
}

pub async fn undrain(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<read::NodeView>, ApiError> {
    set_drained(&app, &headers, &id, false).await
}

pub async fn delete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&app, &headers)?;
    app.releases.forget(&id);
    if app.write_world().nodes.remove(&id).is_none() {
        return Err(ApiError::not_found(
            "unknown_node",
            format!("no node `{id}`"),
        ));
    }
    let at = now();
    let node = id.clone();
    app.with_store(move |s| s.nodes().delete(&node, at, "admin"))
        .await?;
    app.recompute("node deleted").await;
    Ok(Json(json!({ "deleted": id })))
}
