//! Releases through the control plane: an operator asks for a release on a
//! node (`POST /nodes/{id}/release`, admin); the order rides on the node's
//! heartbeat answers until the agent reports the result in a heartbeat; both
//! ends go to the audit log. `GET /nodes/{id}/release` shows the latest.
//!
//! Orders live in memory only ([`crate::releases::Releases`]): after a
//! restart of the control plane an unfinished order is gone and must be
//! asked for again (the agent's own history keeps what it did). This module
//! must not touch node health.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use neutral_store::AuditEntry;
use serde::Deserialize;
use serde_json::json;

use super::common::require_admin;
use crate::app::App;
use crate::error::{ApiError, JsonBody};
use crate::releases::{ReleaseOrder, ReleaseView};
use crate::world::now;

pub const RELEASE_REQUESTED: &str = "node.release.requested";
pub const RELEASE_FINISHED: &str = "node.release.finished";

/// `POST /nodes/{id}/release`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    image: String,
    #[serde(default)]
    health_path: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn check_body(body: &ReleaseBody) -> Result<(), ApiError> {
    if let Err(error) = neutral_core::image_ref::parse(&body.image) {
        return Err(ApiError::bad_request(format!(
            "image: not an OCI image reference (registry/name:tag or name@digest): {error}"
        )));
    }
    if let Some(path) = &body.health_path
        && (!path.starts_with('/')
            || path.len() > 1024
            || !path.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(ApiError::bad_request(
            "health_path: an absolute path of printable ASCII without spaces",
        ));
    }
    if body.timeout_ms.is_some_and(|t| t == 0 || t > 3_600_000) {
        return Err(ApiError::bad_request("timeout_ms: 1..=3600000"));
    }
    Ok(())
}

pub async fn request(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReleaseBody>,
) -> Result<(StatusCode, Json<ReleaseView>), ApiError> {
    require_admin(&app, &headers)?;
    check_body(&body)?;
    if !app.read_world().nodes.contains_key(&id) {
        return Err(ApiError::not_found(
            "unknown_node",
            format!("no node `{id}`"),
        ));
    }
    let order = ReleaseOrder {
        id: new_release_id(),
        image: body.image,
        health_path: body.health_path,
        timeout_ms: body.timeout_ms,
    };
    let view = app.releases.begin(&id, order, now()).map_err(|existing| {
        ApiError::new(
            StatusCode::CONFLICT,
            "release_pending",
            format!(
                "release {} of {} is still pending on {id}",
                existing.order.id, existing.order.image
            ),
        )
    })?;
    app.audit(AuditEntry {
        at: now(),
        actor: "admin".into(),
        kind: RELEASE_REQUESTED.into(),
        subject: id.clone(),
        message: format!(
            "release {} of {} requested on {id}",
            view.order.id, view.order.image
        ),
        commit: None,
        data: json!({ "release": view.order }),
    })
    .await;
    persist(&app, &id, &view).await;
    // On the node's agent stream at once; otherwise with its next heartbeat.
    app.node_streams.nudge(&id);
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Writes `node`'s release to the store (the cache has it already), where a
/// restart and the other replicas find it.
pub async fn persist(app: &App, node: &str, view: &ReleaseView) {
    let Ok(doc) = serde_json::to_string(view) else {
        return;
    };
    let (node, at) = (node.to_owned(), view.updated_at);
    if let Err(err) = app
        .with_store(move |s| s.releases().put(&node, &doc, at))
        .await
    {
        tracing::error!(error = %format!("{err:#}"), "cannot store a release; a restart or another replica will not see this change");
    }
}

/// Forgets `node`'s release, in the cache and the store (the node is gone).
pub async fn forget(app: &App, node: &str) {
    app.releases.forget(node);
    let node = node.to_owned();
    if let Err(err) = app.with_store(move |s| s.releases().delete(&node)).await {
        tracing::warn!(error = %format!("{err:#}"), "cannot delete a gone node's release");
    }
}

/// Loads the stored releases into the cache (at start, and on replicas
/// every mirror tick); unreadable documents are skipped with a warning.
pub async fn load(app: &App) {
    let Ok(stored) = app.with_store(|s| s.releases().list()).await else {
        return;
    };
    let views = stored.into_iter().filter_map(|r| {
        match serde_json::from_str::<ReleaseView>(&r.doc) {
            Ok(view) => Some((r.node_id, view)),
            Err(err) => {
                tracing::warn!(node = %r.node_id, error = %err, "skipping an unreadable stored release");
                None
            }
        }
    });
    app.releases.adopt(views.collect::<Vec<_>>());
}

pub async fn latest(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<ReleaseView>, ApiError> {
    app.releases
        .latest(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no_release", format!("no release asked for on `{id}`")))
}

/// Audits a release the agent reported finished.
pub async fn record_finished(app: &App, node: &str, view: &ReleaseView) {
    app.audit(AuditEntry {
        at: now(),
        actor: format!("node:{node}"),
        kind: RELEASE_FINISHED.into(),
        subject: node.to_owned(),
        message: format!(
            "release {} of {} on {node} {}: {}",
            view.order.id,
            view.order.image,
            view.state.as_str(),
            view.message.as_deref().unwrap_or("")
        ),
        commit: None,
        data: json!({ "release": view }),
    })
    .await;
}

fn new_release_id() -> String {
    use rand::Rng;
    format!("rel-{:08x}", rand::rng().random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_are_refused() {
        let body = |image: &str, path: Option<&str>, timeout: Option<u64>| ReleaseBody {
            image: image.into(),
            health_path: path.map(Into::into),
            timeout_ms: timeout,
        };
        assert!(check_body(&body("web:v2", Some("/healthz"), Some(30_000))).is_ok());
        assert!(check_body(&body("", None, None)).is_err());
        assert!(check_body(&body("web v2", None, None)).is_err());
        for hostile in [
            "../../../../etc/passwd",
            "/etc/passwd",
            "-v",
            "web;rm",
            "WEB",
        ] {
            assert!(check_body(&body(hostile, None, None)).is_err(), "{hostile}");
        }
        assert!(check_body(&body("registry.example.com:5000/team/web:v2", None, None)).is_ok());
        assert!(check_body(&body("web", Some("healthz"), None)).is_err());
        assert!(check_body(&body("web", None, Some(0))).is_err());
    }
}
