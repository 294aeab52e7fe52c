//! Node API writes: registration and heartbeats (node-authenticated), drain
//! and delete (admin).

use std::net::IpAddr;
use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use neutral_core::liveness::Liveness;
use neutral_core::model::{MetricSample, Metrics, NodeMode, NodeStatus};
use neutral_store::{AuditEntry, Heartbeat, NewNode, StoreError, TokenHash};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::read;
use crate::admission;
use crate::app::App;
use crate::auth;
use crate::error::{ApiError, JsonBody};
use crate::world::{NodeEntry, now};

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
    /// Proof of `node_id`'s identity: that node's current token (or the
    /// admin token). See docs/api.md, "Identity rule".
    #[serde(default)]
    node_token: Option<String>,
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

/// A node proved a token from this client address: its connections may use
/// the node reserve (`connlimit`).
pub fn trust_client(app: &App, connect: Option<&Extension<ConnectInfo<SocketAddr>>>) {
    if let Some(Extension(ConnectInfo(client))) = connect {
        app.connections
            .trust(client.ip(), std::time::Instant::now());
    }
}

/// What the identity rule decided for a registration.
enum Place {
    /// A new node (a fresh id).
    New,
    /// The existing node with this id keeps it, with a new token.
    Existing { id: String, drained: bool },
}

pub async fn register(
    State(app): State<Arc<App>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    match auth::bearer(&headers) {
        None => {
            return Err(ApiError::unauthorized(
                "missing `Authorization: Bearer <join token>`",
            ));
        }
        // The daemon's join token, or one minted for this region.
        Some(token)
            if !app.join_token.matches(token)
                && app.grants.join_region(token).as_deref() != Some(request.region.as_str()) =>
        {
            return Err(ApiError::unauthorized("invalid join token"));
        }
        Some(_) => {}
    }
    if let Some(Extension(ConnectInfo(client))) = &connect
        && let Err(wait) = app
            .registrations
            .take(client.ip(), std::time::Instant::now())
    {
        app.counters.registrations_refused.inc();
        let seconds = wait.as_secs_f64().ceil().max(1.0);
        tracing::warn!(client = %client.ip(), retry_after_s = seconds, "registration refused: rate limited");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many registrations from {}: retry in {seconds} s",
                client.ip()
            ),
        )
        .with_retry_after(seconds as u64));
    }
    let address: IpAddr = request.address.trim().parse().map_err(|_| {
        ApiError::bad_request(format!(
            "address: `{}` is not an IP address",
            request.address
        ))
    })?;
    if let Err(problem) = neutral_core::address::check_node_address(address) {
        return Err(ApiError::bad_request(format!("address: {problem}")));
    }
    let Some(_claim) = app.registering.claim(&request.region, address) else {
        let message = format!(
            "a registration of {address} in region {} is in progress; retry",
            request.region
        );
        return Err(identity_conflict(&app, &request.region, address, message).await);
    };
    check_text("hostname", request.hostname.as_ref(), 253)?;
    check_text("agent_version", request.agent_version.as_ref(), 64)?;
    check_text("node_id", request.node_id.as_ref(), 64)?;
    check_text("node_token", request.node_token.as_ref(), 256)?;
    // Under one read of the world: the region, who the caller is, and room.
    let place = {
        let world = app.read_world();
        let Some(region) = world.decl.regions.get(&request.region) else {
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
        };
        // Proof of an identity: the node's current token, or the admin token.
        let proves = |entry: &NodeEntry| {
            request
                .node_token
                .as_deref()
                .is_some_and(|t| entry.token.matches(t) || app.admin_token.matches(t))
        };
        let here = |entry: &&NodeEntry| {
            entry.record.node.region == request.region && entry.record.node.address == address
        };
        let by_id = request.node_id.as_ref().and_then(|id| world.nodes.get(id));
        let at_address = world.nodes.at_place(&request.region, address).next();
        let place = match (by_id, at_address) {
            (Some(entry), _) if !proves(entry) => Err(format!(
                "node `{}` exists: re-registering it needs its current token in `node_token`",
                entry.record.node.id
            )),
            (Some(entry), _) if here(&entry) => Ok(Place::Existing {
                id: entry.record.node.id.clone(),
                drained: entry.liveness.drained,
            }),
            (_, Some(entry)) if proves(entry) || entry.record.node.status == NodeStatus::Down => {
                Ok(Place::Existing {
                    id: entry.record.node.id.clone(),
                    drained: entry.liveness.drained,
                })
            }
            (_, Some(entry)) => Err(format!(
                "{address} is node `{}` of region {} (status {}): one address is one node per \
                 region; re-register it with its `node_id` and current `node_token`",
                entry.record.node.id,
                request.region,
                entry.record.node.status.as_str()
            )),
            (_, None) => Ok(Place::New),
        };
        if let Ok(Place::New) = &place {
            let cap =
                usize::try_from(admission::region_cap(region.max_nodes)).unwrap_or(usize::MAX);
            // Walk the region's nodes only when all of them together could
            // reach the cap.
            let counted = if world.nodes.in_region(&request.region) < cap {
                0
            } else {
                world
                    .nodes
                    .values()
                    .filter(|e| e.record.node.region == request.region)
                    // Nodes that were up once and are now down wait for their
                    // replacement; they do not hold its place.
                    .filter(|e| {
                        !(e.record.node.status == NodeStatus::Down
                            && e.record.node.last_heartbeat.is_some())
                    })
                    .count()
            };
            if counted >= cap {
                app.counters.registrations_refused.inc();
                tracing::warn!(region = %request.region, %address, nodes = counted, cap, "registration refused: region full");
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "region_full",
                    format!(
                        "region {} holds {counted} nodes, its limit: max_nodes {} + slack {} \
                         (nodes that were up and are down do not count)",
                        request.region,
                        region.max_nodes,
                        admission::region_slack(region.max_nodes)
                    ),
                ));
            }
        }
        place
    };
    let place = match place {
        Ok(place) => place,
        Err(message) => {
            return Err(identity_conflict(&app, &request.region, address, message).await);
        }
    };
    let (previous_drained, reuse_id) = match place {
        Place::New => (false, None),
        Place::Existing { id, drained } => (drained, Some(id)),
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
    {
        let mut world = app.write_world();
        let decl = Arc::clone(&world.decl);
        let entry = NodeEntry::new(
            record,
            TokenHash::of(&token),
            liveness,
            &app.settings.liveness,
            &decl,
            at,
        );
        world.nodes.insert(id.clone(), entry);
    }
    app.counters.registrations.inc();
    tracing::info!(node = %id, region = %request.region, %address, reused = reuse_id.is_some(), "node registered");
    app.probe_wakeup.notify_one();
    // A new node is `down` until its checks pass, so the weights rarely
    // change (only under `fail_open`); a storm of registrations folds into
    // one recompute instead of waiting for one each.
    app.recompute_soon.notify_one();
    trust_client(&app, connect.as_ref());
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

/// Refuses a registration that would take over an existing node: logged,
/// audited (`node.identity_conflict`) and counted.
async fn identity_conflict(app: &App, region: &str, address: IpAddr, message: String) -> ApiError {
    app.counters.registrations_refused.inc();
    tracing::warn!(%region, %address, reason = %message, "registration refused: identity conflict");
    app.audit(AuditEntry {
        at: now(),
        actor: "join".into(),
        kind: "node.identity_conflict".into(),
        subject: address.to_string(),
        message: message.clone(),
        commit: None,
        data: json!({ "region": region, "address": address.to_string() }),
    })
    .await;
    ApiError::new(StatusCode::CONFLICT, "identity_conflict", message)
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
    /// Checked by [`metrics_of`]: an object only (serde would also take a
    /// struct from an array).
    metrics: Option<serde_json::Value>,
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

/// The heartbeat's `metrics`: absent or `null` for none, else an object
/// with the documented fields and ranges. Anything else is a 400 naming the
/// field, before anything changes.
fn metrics_of(value: Option<&serde_json::Value>) -> Result<Option<Metrics>, ApiError> {
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    };
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(object @ serde_json::Value::Object(_)) => {
            let body: MetricsBody = serde_json::from_value(object.clone()).map_err(|err| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("metrics: {err}"),
                )
            })?;
            body.check().map(Some)
        }
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "metrics: expected an object {{\"cpu\", \"rtt_ms\", \"error_rate\"}}, got {}",
                kind(other)
            ),
        )),
    }
}

/// The documented ranges of a heartbeat's metrics, for the agent stream
/// (the HTTP API checks the JSON body with [`metrics_of`]).
pub fn check_metrics(metrics: Metrics) -> Result<Metrics, ApiError> {
    MetricsBody {
        cpu: metrics.cpu,
        rtt_ms: metrics.rtt_ms,
        error_rate: metrics.error_rate,
    }
    .check()
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
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let Some(token) = auth::bearer(&headers) else {
        app.counters.heartbeats_rejected.inc();
        return Err(ApiError::unauthorized(
            "missing `Authorization: Bearer <node token>`",
        ));
    };
    let metrics = metrics_of(request.metrics.as_ref())?;
    let answer = match accept_heartbeat(
        &app,
        request.node_id,
        token,
        metrics,
        request.release.as_ref(),
    )
    .await
    {
        Ok(answer) => answer,
        Err(HeartbeatRefused::Unknown) => {
            return Err(ApiError::unauthorized(
                "unknown node or invalid node token; register again",
            ));
        }
        Err(HeartbeatRefused::Overloaded) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "this replica's heartbeat writer is behind; send heartbeats to another replica",
            )
            .with_retry_after(1));
        }
    };
    trust_client(&app, connect.as_ref());
    Ok(Json(HeartbeatResponse {
        status: answer.status,
        heartbeat_interval_ms: millis(app.settings.heartbeat_interval),
        release: answer.release,
    }))
}

/// What a node is told in answer to a heartbeat (and on its stream when
/// something changes).
#[derive(Debug)]
pub struct HeartbeatAnswer {
    pub status: NodeStatus,
    /// A release the node should do (until it reports the result).
    pub release: Option<crate::releases::ReleaseOrder>,
}

/// Why [`accept_heartbeat`] changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatRefused {
    /// The node is unknown or the token is not its token (counted as
    /// rejected): the agent registers again.
    Unknown,
    /// The heartbeat writer's queue is full while other replicas are live
    /// (counted as shed): the agent sends to another replica. A heartbeat
    /// held only in this replica's memory would never reach the leader,
    /// which reads the others' heartbeats from the store.
    Overloaded,
}

/// A node's heartbeat, whichever way it came (`POST /nodes/heartbeat` or
/// the agent stream), with its metrics already checked: liveness, metrics,
/// the release exchange and the batched write. Refused, changing nothing,
/// when the node is unknown or `token` is not its token, or when this
/// replica cannot store it and another replica could.
pub async fn accept_heartbeat(
    app: &App,
    node_id: String,
    token: &str,
    metrics: Option<Metrics>,
    release: Option<&crate::releases::ReleaseResult>,
) -> Result<HeartbeatAnswer, HeartbeatRefused> {
    let started = std::time::Instant::now();
    // A place in the writer's queue first: a heartbeat this replica cannot
    // store is refused before it changes anything, when another replica
    // can take it. So is one it would store too late: the other replicas
    // see a heartbeat only once it is stored, and a writer behind by half
    // the heartbeat timeout (plus the agent's interval and the replicas'
    // half-second read) would soon have them count live nodes as silent
    // (under a load the store could not take, a long queue did just that).
    // It is refused only when another live replica's writer is less behind:
    // when every writer is behind, the least behind keeps taking them
    // rather than every replica refusing every node at once (the others
    // then judge silence only up to what it had stored, `world.rs`).
    // A lone replica's memory is the whole truth: it keeps the heartbeat
    // and loses only the stored sample.
    let at = now();
    let reserved = app.heartbeats.try_reserve();
    let lag = app.heartbeat_backlog.lag(at);
    let behind = lag > app.settings.liveness.heartbeat_timeout / 2
        && app.less_behind_replica_is_live(lag, at);
    let shed = match &reserved {
        Ok(_) => behind,
        Err(tokio::sync::mpsc::error::TrySendError::Full(())) => app.others_are_live(),
        Err(_) => false,
    };
    if shed {
        app.counters.heartbeats_shed.inc();
        return Err(HeartbeatRefused::Overloaded);
    }
    let slot = reserved.ok();
    let outcome = {
        let mut guard = app.write_world();
        let world = &mut *guard;
        match world
            .nodes
            .get_mut(&node_id)
            .filter(|e| e.token.matches(token))
        {
            None => None,
            Some(mut entry) => {
                let entry = &mut *entry;
                entry.liveness.heartbeat(at, &entry.settings);
                entry.record.node.last_heartbeat = Some(at);
                if let Some(m) = metrics {
                    entry.record.node.metrics = Some(m);
                    entry.record.metrics_at = Some(at);
                    world.samples.note(
                        &node_id,
                        &entry.record.node.region,
                        MetricSample { at, metrics: m },
                    );
                }
                let status = entry.record.node.status;
                Some((
                    status,
                    entry.liveness.current(at, &entry.settings) != status,
                ))
            }
        }
    };
    let Some((status, changed)) = outcome else {
        app.counters.heartbeats_rejected.inc();
        return Err(HeartbeatRefused::Unknown);
    };
    app.counters.heartbeats.inc();
    let (release, finished) = app.releases.exchange(&node_id, release, at);
    if let Some(finished) = finished {
        super::releases::persist(app, &node_id, &finished).await;
        super::releases::record_finished(app, &node_id, &finished).await;
    }
    let heartbeat = Heartbeat {
        node_id,
        at,
        metrics,
    };
    match slot {
        Some(slot) => slot.send(heartbeat),
        // The writer is behind: the in-memory view is updated, only this
        // sample is lost.
        None => {
            app.counters.store_errors.inc();
        }
    }
    if changed {
        // The health ticker reconciles at once; a burst of heartbeats that
        // change liveness (thousands of nodes coming up) folds into few runs.
        app.reconcile_soon.notify_one();
    }
    app.counters
        .heartbeat_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(HeartbeatAnswer { status, release })
}

/// What `node` would be told now without a heartbeat (pushed on its agent
/// stream): its status and pending order. `None` when it is gone.
pub fn current_answer(app: &App, node: &str) -> Option<HeartbeatAnswer> {
    let status = app.read_world().nodes.get(node)?.record.node.status;
    let (release, _) = app.releases.exchange(node, None, now());
    Some(HeartbeatAnswer { status, release })
}

/// Admin, or a run token whose scope holds the node's region: 401 for
/// any other token, then 404 for an unknown node, then 403 outside scope.
/// Returns the actor the audit log names (`admin`, `terraform-run:<grant>`).
fn require_node_writer(app: &App, headers: &HeaderMap, id: &str) -> Result<String, ApiError> {
    super::common::require_writer(app, headers, None)?;
    let region = app
        .read_world()
        .nodes
        .get(id)
        .map(|entry| entry.record.node.region.clone())
        .ok_or_else(|| ApiError::not_found("unknown_node", format!("no node `{id}`")))?;
    super::common::require_writer(app, headers, Some(&region)).map(|caller| match caller {
        super::common::Caller::Run(scope) => format!("terraform-run:{}", scope.grant),
        _ => "admin".to_owned(),
    })
}

async fn set_drained(
    app: &Arc<App>,
    headers: &HeaderMap,
    id: &str,
    drained: bool,
) -> Result<Json<read::NodeView>, ApiError> {
    let actor = require_node_writer(app, headers, id)?;
    {
        let mut world = app.write_world();
        let mut entry = world
            .nodes
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("unknown_node", format!("no node `{id}`")))?;
        entry.liveness.drained = drained;
    }
    let verb = if drained { "drain" } else { "undrain" };
    app.audit(AuditEntry {
        at: now(),
        actor: actor.clone(),
        kind: "api.write".into(),
        subject: id.to_owned(),
        message: format!("{verb} node {id}"),
        commit: None,
        data: json!({ "endpoint": format!("POST /nodes/{id}/{verb}") }),
    })
    .await;
    app.reconcile(&actor).await;
    let world = app.read_world();
    let entry = world
        .nodes
        .get(id)
        .ok_or_else(|| ApiError::not_found("unknown_node", format!("no node `{id}`")))?;
    Ok(Json(read::NodeView::of(entry, world.vantage.as_ref())))
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
    let actor = require_node_writer(&app, &headers, &id)?;
    super::releases::forget(&app, &id).await;
    if app.write_world().nodes.remove(&id).is_none() {
        return Err(ApiError::not_found(
            "unknown_node",
            format!("no node `{id}`"),
        ));
    }
    let at = now();
    let node = id.clone();
    app.with_store(move |s| s.nodes().delete(&node, at, &actor))
        .await?;
    app.recompute("node deleted").await;
    Ok(Json(json!({ "deleted": id })))
}

/// Deletes registrations that never sent a heartbeat within
/// `--registration-expiry` of registering — a node whose registration
/// answer never reached it (the daemon was killed at that moment), or a
/// client that registered and vanished — so they hold no place in their
/// region's cap and no address. Checks every second until shutdown.
pub async fn expire_registrations(app: Arc<App>, mut shutdown: crate::shutdown::Shutdown) {
    let expiry = app.settings.registration.expiry;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        let at = now();
        let expired: Vec<String> = app
            .read_world()
            .nodes
            .values()
            .filter(|e| {
                e.record.node.last_heartbeat.is_none() && at.since(e.record.registered_at) >= expiry
            })
            .map(|e| e.record.node.id.clone())
            .collect();
        if expired.is_empty() {
            continue;
        }
        for id in expired {
            // Still a ghost under the write lock (a heartbeat may have come).
            let removed = {
                let mut world = app.write_world();
                let ghost = world
                    .nodes
                    .get(&id)
                    .is_some_and(|e| e.record.node.last_heartbeat.is_none());
                ghost && world.nodes.remove(&id).is_some()
            };
            if !removed {
                continue;
            }
            super::releases::forget(&app, &id).await;
            app.counters.registrations_expired.inc();
            let reason = format!(
                "registered and never heartbeated within {}",
                humantime::format_duration(expiry)
            );
            tracing::warn!(node = %id, %reason, "registration expired");
            let node = id.clone();
            if let Err(err) = app
                .with_store(move |s| s.nodes().delete_because(&node, at, "expiry", Some(&reason)))
                .await
            {
                tracing::error!(node = %id, error = %format!("{err:#}"), "cannot delete the expired registration");
            }
        }
        app.recompute("registrations expired").await;
    }
}
