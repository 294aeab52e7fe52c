//! Reads: nodes, regions, domains (effective weights with reasons), status,
//! audit log, health; and `POST /sync`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use neutral_core::health;
use neutral_core::model::{GtmPolicy, Metrics, NodeMode, NodeStatus};
use neutral_core::quorum::Verdict;
use neutral_core::weights::DomainWeights;
use neutral_store::{AuditQuery, AuditRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::common::{require_admin, rfc3339};
use super::page::{self, Page};
use crate::app::App;
use crate::error::ApiError;
use crate::sync::SyncOutcome;
use crate::world::{NodeEntry, Vantage, now};

#[derive(Debug, Serialize)]
pub struct NodeView {
    id: String,
    region: String,
    address: String,
    status: NodeStatus,
    status_since: String,
    status_reason: String,
    mode: NodeMode,
    registered_at: String,
    last_heartbeat: Option<String>,
    metrics: Option<Metrics>,
    hostname: Option<String>,
    agent_version: Option<String>,
    /// What health alone says (before drain), for operators.
    health_detail: String,
    /// Among replicas (more than one live): what each vantage point sees
    /// of the node, this replica first (`health.quorum` counts them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vantage_points: Vec<Verdict>,
}

impl NodeView {
    /// The view of `entry`, with the other replicas' verdicts when
    /// `vantage` holds more than this replica.
    pub fn of(entry: &NodeEntry, vantage: Option<&Vantage>) -> NodeView {
        let node = &entry.record.node;
        let vantage_points = vantage
            .filter(|v| v.live > 1)
            .map(|v| v.verdicts_on(&node.id, entry.liveness.verdict(now(), &entry.settings)))
            .unwrap_or_default();
        NodeView {
            id: node.id.clone(),
            region: node.region.clone(),
            address: node.address.to_string(),
            status: node.status,
            status_since: rfc3339(node.status_since),
            status_reason: entry.record.status_reason.clone(),
            mode: node.mode,
            registered_at: rfc3339(entry.record.registered_at),
            last_heartbeat: node.last_heartbeat.map(rfc3339),
            metrics: node.metrics,
            hostname: entry.record.hostname.clone(),
            agent_version: entry.record.agent_version.clone(),
            health_detail: entry.liveness.detail.clone(),
            vantage_points,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeParams {
    region: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(params: QueryResult<T>) -> Result<T, ApiError> {
    params
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// Nodes by id; `?region=`, `?status=`, pages (see `page`).
pub async fn nodes(
    State(app): State<Arc<App>>,
    uri: Uri,
    params: QueryResult<NodeParams>,
) -> Result<(HeaderMap, Json<Vec<NodeView>>), ApiError> {
    let params = query(params)?;
    let page = Page::new(params.limit, params.cursor)?;
    let status = params
        .status
        .as_deref()
        .map(|s| {
            [NodeStatus::Up, NodeStatus::Down, NodeStatus::Drain]
                .into_iter()
                .find(|status| status.as_str() == s)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("status: `{s}` is not one of up, down, drain"))
                })
        })
        .transpose()?;
    let world = app.read_world();
    let after = page.cursor.as_deref().unwrap_or("");
    let mut views = Vec::new();
    let mut more = None;
    // The map is ordered by id: walk from the cursor, stop one past the page.
    for entry in world
        .nodes
        .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        .map(|(_, e)| e)
        .filter(|e| {
            params
                .region
                .as_ref()
                .is_none_or(|r| e.record.node.region == *r)
        })
        .filter(|e| status.is_none_or(|s| e.record.node.status == s))
    {
        if page.limit.is_some_and(|limit| views.len() >= limit) {
            more = views.last().map(|v: &NodeView| v.id.clone());
            break;
        }
        views.push(NodeView::of(entry, world.vantage.as_ref()));
    }
    Ok((page::next_headers(&uri, more.as_deref()), Json(views)))
}

pub async fn node(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let world = app.read_world();
    world
        .nodes
        .get(&id)
        .map(|e| Json(NodeView::of(e, world.vantage.as_ref())))
        .ok_or_else(|| ApiError::not_found("unknown_node", format!("no node `{id}`")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn regions(
    State(app): State<Arc<App>>,
    uri: Uri,
    params: QueryResult<ListParams>,
) -> Result<(HeaderMap, Json<Vec<Value>>), ApiError> {
    let params = query(params)?;
    let page = Page::new(params.limit, params.cursor)?;
    let world = app.read_world();
    // Every declared region has its status, by name.
    let statuses = health::capacity_statuses(
        &world.decl,
        world.nodes.values().map(|entry| &entry.record.node),
    );
    let views = world
        .decl
        .regions
        .values()
        .filter_map(|region| {
            let status = statuses.get(region.name.as_str())?;
            Some(json!({
                "name": region.name,
                "provider": region.provider,
                "state": region.state,
                "health": status.health,
                "health_reason": status.reason,
                "min_nodes": region.min_nodes,
                "max_nodes": region.max_nodes,
                "desired_nodes": world.decl.desired_nodes(&region.name),
                "ready": status.ready,
                "draining": status.draining,
                "down": status.down,
                "base_weight": region.base_weight,
                "failover": region.failover,
            }))
        })
        .collect();
    let (views, next) = page.cut(views, |v| v["name"].as_str().unwrap_or_default().to_owned());
    Ok((page::next_headers(&uri, next.as_deref()), Json(views)))
}

pub async fn domains(
    State(app): State<Arc<App>>,
    uri: Uri,
    params: QueryResult<ListParams>,
) -> Result<(HeaderMap, Json<Vec<String>>), ApiError> {
    let params = query(params)?;
    let page = Page::new(params.limit, params.cursor)?;
    let names: Vec<String> = app
        .read_world()
        .report()
        .domains
        .keys()
        .map(ToString::to_string)
        .collect();
    let (names, next) = page.cut(names, Clone::clone);
    Ok((page::next_headers(&uri, next.as_deref()), Json(names)))
}

#[derive(Debug, Serialize)]
pub struct DomainView {
    #[serde(flatten)]
    weights: std::sync::Arc<DomainWeights>,
    computed_at: String,
    commit: Option<String>,
    split_brain: Option<String>,
    /// The GTM policy the weights were computed for, so that a client (the
    /// Terraform provider) can tell whether they apply to its own record.
    policy: Option<GtmPolicy>,
    /// The published view these weights come from (see `?view=`).
    view: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainParams {
    /// A published view to read from (a Terraform run pins one); the live
    /// view when it is not (or no longer) held.
    view: Option<String>,
}

pub async fn domain(
    State(app): State<Arc<App>>,
    Path(domain): Path<String>,
    params: Result<Query<DomainParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DomainView>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let name = domain.trim_end_matches('.').to_ascii_lowercase();
    let world = app.read_world();
    // The weights and the policy they were computed for, from one view.
    let view = world.views.get_or_latest(params.view.as_deref());
    let weights = view
        .report
        .domains
        .get(name.as_str())
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found("unknown_domain", format!("no GTM policy declares `{name}`"))
        })?;
    Ok(Json(DomainView {
        weights,
        computed_at: rfc3339(view.at),
        commit: view.commit.clone(),
        split_brain: view.report.split_brain.as_ref().map(|g| g.message.clone()),
        policy: view.decl.gtm.get(&name).cloned(),
        view: view.id.clone(),
    }))
}

pub async fn status(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let sync_status = app.with_store(neutral_store::Store::sync_status).await?;
    let world = app.read_world();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in world.nodes.values() {
        *counts.entry(entry.record.node.status.as_str()).or_default() += 1;
    }
    let failing = sync_status.failing().map(|f| {
        json!({
            "commit": f.commit,
            "at": rfc3339(f.at),
            "errors": f.diagnostics.iter().filter(|d| d.is_error()).count(),
            "diagnostics": f.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    });
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": world.commit,
        "sync": {
            "repo": neutral_core::redact::redact(&app.settings.repo),
            "branch": app.settings.branch,
            "last_good": sync_status.last_good.as_ref().map(|c| json!({"commit": c.commit, "at": rfc3339(c.at)})),
            "last_seen": sync_status.last_seen.as_ref().map(|c| json!({"commit": c.commit, "at": rfc3339(c.at)})),
            "failing": failing,
            "last_attempt": world.sync.last_attempt.map(rfc3339),
            "last_error": world.sync.last_error,
        },
        "nodes": counts,
        "regions": world.decl.regions.len(),
        "domains": world.decl.gtm.len(),
        "split_brain": world.report().split_brain.as_ref().map(|g| g.message.clone()),
        "weights_computed_at": rfc3339(world.views.latest().at),
        "dns_degraded": app.dns.handle().degraded(),
        "leadership": leadership_view(&app),
    })))
}

/// This replica's id and role: `sole`, `leader` (with its term) or
/// `follower` (with the leader it last saw).
fn leadership_view(app: &App) -> Value {
    let mut view = serde_json::to_value(app.leadership.role()).unwrap_or(Value::Null);
    if let Some(map) = view.as_object_mut() {
        map.insert("replica".into(), json!(app.leadership.replica));
    }
    view
}

/// `GET /leader`: the leader lease as the shared store holds it now — the
/// same answer from every replica, read at the request, which is what the
/// pre-receive hook checks an autoscaler push's term against. Without
/// election (one replica) the lease was never taken: `holder` and `term`
/// are null.
pub async fn leader(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let lease = app
        .with_store(|s| s.leases().current(neutral_store::LEADER))
        .await?;
    Ok(Json(match lease {
        Some(lease) => json!({
            "holder": lease.holder,
            "term": lease.term,
            "expires_at": rfc3339(lease.expires_at),
            "lapsed": lease.lapsed,
        }),
        None => json!({ "holder": null, "term": null, "expires_at": null, "lapsed": true }),
    }))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    since_id: Option<i64>,
    kind: Option<String>,
    subject: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    #[serde(default)]
    newest_first: bool,
}

/// The audit log, oldest first (or `newest_first`), 100 entries unless
/// `limit` says otherwise; the cursor is the last id of the previous page.
pub async fn audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    params: QueryResult<AuditParams>,
) -> Result<(HeaderMap, Json<Vec<AuditRecord>>), ApiError> {
    require_admin(&app, &headers)?;
    let params = query(params)?;
    let page = Page::new(Some(params.limit.unwrap_or(100)), params.cursor)?;
    let cursor = page.cursor_id()?;
    let limit = params.limit.unwrap_or(100);
    let query = AuditQuery {
        since_id: if params.newest_first {
            params.since_id
        } else {
            cursor.max(params.since_id)
        },
        before_id: if params.newest_first { cursor } else { None },
        kind: params.kind,
        subject: params.subject,
        limit: limit.saturating_add(1),
        newest_first: params.newest_first,
    };
    let mut records = app.with_store(move |s| s.audit().list(&query)).await?;
    let next = if records.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        records.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok((page::next_headers(&uri, next.as_deref()), Json(records)))
}

pub async fn sync(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<SyncOutcome>, ApiError> {
    require_admin(&app, &headers)?;
    if !app.leadership.leads() {
        let leader = match app.leadership.role() {
            crate::leadership::Role::Follower {
                leader: Some(leader),
                ..
            } => format!("`{leader}`"),
            _ => "none yet".to_owned(),
        };
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            format!("this replica follows; the leader ({leader}) syncs: ask it"),
        )
        .with_retry_after(1));
    }
    app.audit(neutral_store::AuditEntry {
        at: now(),
        actor: "admin".into(),
        kind: "api.write".into(),
        subject: "sync".into(),
        message: "sync requested".into(),
        commit: None,
        data: Value::Null,
    })
    .await;
    app.request_sync(Duration::from_secs(120))
        .await
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "sync_unavailable",
                "the sync task did not answer (see GET /status)",
            )
        })
}

/// The autoscaler's latest decision per region, with reasons and numbers.
pub async fn autoscale(State(app): State<Arc<App>>) -> Json<Value> {
    let world = app.read_world();
    Json(json!({
        "enabled": app.settings.autoscale.enabled,
        "decided_at": world.decisions_at.map(rfc3339),
        "decisions": world.decisions,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    limit: Option<u32>,
    cursor: Option<String>,
    root: Option<String>,
    /// The node-pool workspace.
    region: Option<String>,
    status: Option<String>,
}

/// Recorded Terraform runs, newest first (50 unless `limit` says
/// otherwise), plus the queue and drift state.
pub async fn runs(
    State(app): State<Arc<App>>,
    uri: Uri,
    params: QueryResult<RunParams>,
) -> Result<(HeaderMap, Json<Value>), ApiError> {
    let params = query(params)?;
    let limit = params.limit.unwrap_or(50);
    let page = Page::new(Some(limit), params.cursor)?;
    let status = params
        .status
        .as_deref()
        .map(|s| {
            neutral_store::RunStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "status: `{s}` is not one of queued, running, succeeded, failed, cancelled, \
                     interrupted"
                ))
            })
        })
        .transpose()?;
    let run_query = neutral_store::RunQuery {
        limit: limit.saturating_add(1),
        before_id: page.cursor_id()?,
        root: params.root,
        workspace: params.region,
        status,
    };
    let mut runs = app
        .with_store(move |s| s.runs().list_page(&run_query))
        .await?;
    let next = if runs.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        runs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        runs.last().map(|r| r.id.to_string())
    } else {
        None
    };
    let (pending, drift) = match &app.scheduler {
        Some(scheduler) => (
            json!(scheduler.pending()),
            json!(scheduler
                .drift
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|(key, drift)| json!({ "root": key.root, "workspace": key.workspace, "drift": drift }))
                .collect::<Vec<_>>()),
        ),
        None => (json!([]), json!([])),
    };
    Ok((
        page::next_headers(&uri, next.as_deref()),
        Json(json!({
            "scheduler": app.scheduler.is_some(),
            "pending": pending,
            "drift": drift,
            "runs": runs,
        })),
    ))
}

/// One run with its log (admin: logs can name infrastructure details).
pub async fn run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&app, &headers)?;
    let run = app.with_store(move |s| s.runs().get_run(id)).await?;
    run.map(|r| Json(json!(r)))
        .ok_or_else(|| ApiError::not_found("unknown_run", format!("no run {id}")))
}
