//! The embedded DNS backend's zone API, modelled on PowerDNS'
//! (`/api/v1/servers/localhost/zones`): list, create, read, PATCH rrsets with
//! `changetype: REPLACE|DELETE` (all-or-nothing), delete. Every write is
//! persisted in SQLite before the DNS server serves it. Admin token (or a
//! Terraform run's) required. Also the provider's reports of the requests it
//! sent to DNS backends (`/dns/backend-calls`), which only add to counters.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use neutral_core::backend_calls::BackendCalls;
use neutral_dns::zone::zone_key;
use neutral_dns::{Zone, ZonePatch, ZoneRules, apply_patch, read_strict};
use neutral_store::ZoneBase;
use serde::Deserialize;
use serde_json::{Value, json};

use super::common::require_writer;
use crate::app::App;
use crate::error::{ApiError, JsonBody};
use crate::world::now;

fn zone_error(err: &neutral_dns::ZoneError) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_zone_change",
        err.to_string(),
    )
}

fn no_zone(name: &str) -> ApiError {
    ApiError::not_found("unknown_zone", format!("no zone `{name}`"))
}

/// `POST /dns/backend-calls` (admin or a run's token): Terraform's provider
/// reports the requests it sent to DNS backends since its last report,
/// counted in `neutral_dns_backend_calls_total`. Nothing else changes.
pub async fn backend_calls(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(report): JsonBody<BackendCalls>,
) -> Result<StatusCode, ApiError> {
    require_writer(&app, &headers, None)?;
    if let Some(problem) = report.problem() {
        return Err(ApiError::bad_request(problem));
    }
    app.counters.backend_calls(&report);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Zones by name, in pages (see `page`).
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    params: Result<axum::extract::Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(HeaderMap, Json<Vec<Value>>), ApiError> {
    require_writer(&app, &headers, None)?;
    let axum::extract::Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let page = super::page::Page::new(params.limit, params.cursor)?;
    let zones = app.dns.handle().zones();
    let mut views: Vec<Value> = zones
        .iter()
        .map(|z| json!({ "id": z.id, "name": z.name, "kind": z.kind, "serial": z.serial }))
        .collect();
    let name = |v: &Value| v["name"].as_str().unwrap_or_default().to_owned();
    views.sort_by_key(name);
    let (views, next) = page.cut(views, name);
    Ok((
        super::page::next_headers(&uri, next.as_deref()),
        Json(views),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateZone {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    nameservers: Vec<String>,
}

pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateZone>,
) -> Result<(StatusCode, Json<Zone>), ApiError> {
    require_writer(&app, &headers, None)?;
    if let Some(kind) = request
        .kind
        .as_deref()
        .filter(|k| !k.eq_ignore_ascii_case("native"))
    {
        return Err(ApiError::bad_request(format!(
            "kind: only `Native` zones are served here, not `{kind}`"
        )));
    }
    let servers: Vec<&str> = request.nameservers.iter().map(String::as_str).collect();
    let zone = Zone::create(&request.name, &servers).map_err(|e| zone_error(&e))?;
    let _guard = app.dns.zone_writes.lock().await;
    let exists = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "zone_exists",
            format!("zone `{}` already exists", zone.name),
        )
    };
    if app.dns.handle().zone(&zone.name).is_some() {
        return Err(exists());
    }
    if !persist(&app, &zone, ZoneBase::Absent, json!({ "op": "create" })).await? {
        // Created on another replica a moment ago.
        reload(&app, &zone.name).await?;
        return Err(exists());
    }
    app.dns.handle().upsert_zone(zone.clone());
    Ok((StatusCode::CREATED, Json(zone)))
}

pub async fn get(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Zone>, ApiError> {
    require_writer(&app, &headers, None)?;
    app.dns
        .handle()
        .zone(&zone_key(&name))
        .map(Json)
        .ok_or_else(|| no_zone(&name))
}

pub async fn patch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    require_writer(&app, &headers, None)?;
    // The shared PowerDNS types read leniently; this API refuses what they
    // would skip, so a misspelt field is an error, not a silent no-op.
    let mut request: ZonePatch = read_strict(body)
        .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message))?;
    let at = now();
    request.stamp_comments(at.millis() / 1000);
    let _guard = app.dns.zone_writes.lock().await;
    let changes: Vec<Value> = request
        .rrsets
        .iter()
        .map(|c| json!({ "name": c.name, "type": c.rtype, "changetype": c.changetype }))
        .collect();
    let key = zone_key(&name);
    // Another replica may have patched the zone since this one last read it:
    // the write is made on the serial it was computed from, and computed
    // again on the newer zone when that serial is gone.
    for _ in 0..PATCH_ATTEMPTS {
        let current = app.dns.handle().zone(&key).ok_or_else(|| no_zone(&name))?;
        let patched = apply_patch(&current, &request).map_err(|e| zone_error(&e))?;
        let detail = json!({ "op": "patch", "rrsets": changes });
        if persist(&app, &patched, ZoneBase::Serial(current.serial), detail).await? {
            app.dns.handle().upsert_zone(patched);
            return Ok(StatusCode::NO_CONTENT);
        }
        reload(&app, &key).await?;
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "zone_busy",
        format!("zone `{key}` kept changing on other replicas; try again"),
    ))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_writer(&app, &headers, None)?;
    let key = zone_key(&name);
    let _guard = app.dns.zone_writes.lock().await;
    if app.dns.handle().zone(&key).is_none() {
        return Err(no_zone(&name));
    }
    let at = now();
    let stored = key.clone();
    app.with_store(move |s| s.zones().delete_zone(&stored, at, "admin"))
        .await?;
    app.dns.handle().remove_zone(&key);
    Ok(StatusCode::NO_CONTENT)
}

/// Times a PATCH is computed again on a zone another replica changed.
const PATCH_ATTEMPTS: usize = 5;

/// Stores `zone` if the stored one is still `base`; returns whether it did.
async fn persist(app: &App, zone: &Zone, base: ZoneBase, detail: Value) -> Result<bool, ApiError> {
    let at = now();
    let zone = zone.clone();
    let written = app
        .with_store(move |s| {
            s.zones()
                .put_zone_if(&zone.name, base, zone.serial, &zone, at, "admin", &detail)
        })
        .await?;
    Ok(written)
}

/// Serves zone `key` as stored (another replica changed or removed it).
/// The caller holds the zone write lock.
async fn reload(app: &App, key: &str) -> anyhow::Result<()> {
    let name = key.to_owned();
    let stored = app
        .with_store(move |s| s.zones().get_zone::<Zone>(&name))
        .await?;
    match stored {
        Some(stored) => {
            app.dns.handle().upsert_zone(stored.zone);
        }
        None => {
            app.dns.handle().remove_zone(key);
        }
    }
    Ok(())
}

/// Serves the zones as stored, when another replica changed them: reads
/// every zone's serial and loads only the zones whose serial differs from
/// the one served (and drops zones deleted elsewhere). Replicas call it
/// every exchange; returns how many zones it changed.
pub async fn mirror_zones(app: &App) -> anyhow::Result<usize> {
    let _guard = app.dns.zone_writes.lock().await;
    let stored: BTreeMap<String, u32> = app
        .with_store(|s| s.zones().serials())
        .await?
        .into_iter()
        .collect();
    let served = app.dns.handle().zone_serials();
    if served == stored {
        return Ok(0);
    }
    let mut changed = 0;
    for (name, serial) in &stored {
        if served.get(name) != Some(serial) {
            reload(app, name).await?;
            changed += 1;
        }
    }
    for name in served.keys().filter(|name| !stored.contains_key(*name)) {
        app.dns.handle().remove_zone(name);
        changed += 1;
    }
    Ok(changed)
}
