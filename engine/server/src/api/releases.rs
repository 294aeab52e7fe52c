//! Releases through the control plane: an operator asks for a release on a
//! node (`POST /nodes/{id}/release`, admin); the order rides on the node's
//! heartbeat answers until the agent reports the result in a heartbeat; both
//! ends go to the audit log. `GET /nodes/{id}/release` shows the latest.
//!
//! Orders live in memory only: after a restart of the control plane an
//! unfinished order is gone and must be asked for again (the agent's own
//! history keeps what it did). This module must not touch node health.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use neutral_store::AuditEntry;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::require_admin;
use crate::error::{ApiError, JsonBody};
use crate::world::{Shared, now};

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

/// The order an agent finds in its heartbeat answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseOrder {
    pub id: String,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// What an agent reports in a heartbeat once a release ended.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseResult {
    pub id: String,
    pub ok: bool,
    pub message: String,
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// The latest release of one node, for `GET /nodes/{id}/release`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseView {
    #[serde(flatten)]
    pub order: ReleaseOrder,
    /// `pending` until the agent reports, then `released` or `failed`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// The latest release per node.
#[derive(Debug, Default)]
pub struct Releases(Mutex<HashMap<String, ReleaseView>>);

impl Releases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReleaseView>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The order to put in `node`'s heartbeat answer, after taking the
    /// result the agent reported (returned when it finished a pending order).
    pub fn exchange(
        &self,
        node: &str,
        result: Option<&ReleaseResult>,
    ) -> (Option<ReleaseOrder>, Option<ReleaseView>) {
        let mut releases = self.lock();
        let Some(view) = releases.get_mut(node) else {
            return (None, None);
        };
        let mut finished = None;
        if let Some(result) = result
            && view.state == "pending"
            && result.id == view.order.id
        {
            view.state = if result.ok { "released" } else { "failed" };
            view.message = Some(result.message.chars().take(2000).collect());
            view.duration_ms = result.duration_ms;
            finished = Some(view.clone());
        }
        let order = (view.state == "pending").then(|| view.order.clone());
        (order, finished)
    }

    pub fn forget(&self, node: &str) {
        self.lock().remove(node);
    }
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
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReleaseBody>,
) -> Result<(StatusCode, Json<ReleaseView>), ApiError> {
    require_admin(&shared, &headers)?;
    check_body(&body)?;
    if !shared.read_world().nodes.contains_key(&id) {
        return Err(ApiError::not_found(
            "unknown_node",
            format!("no node `{id}`"),
        ));
    }
    let view = {
        let mut releases = shared.releases.lock();
        if let Some(existing) = releases.get(&id).filter(|v| v.state == "pending") {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "release_pending",
                format!(
                    "release {} of {} is still pending on {id}",
                    existing.order.id, existing.order.image
                ),
            ));
        }
        let view = ReleaseView {
            order: ReleaseOrder {
                id: new_release_id(),
                image: body.image,
                health_path: body.health_path,
                timeout_ms: body.timeout_ms,
            },
            state: "pending",
            message: None,
            duration_ms: None,
        };
        releases.insert(id.clone(), view.clone());
        view
    };
    shared
        .audit(AuditEntry {
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
    Ok((StatusCode::ACCEPTED, Json(view)))
}

pub async fn latest(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<ReleaseView>, ApiError> {
    shared
        .releases
        .lock()
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no_release", format!("no release asked for on `{id}`")))
}

/// Audits a release the agent reported finished.
pub async fn record_finished(shared: &Shared, node: &str, view: &ReleaseView) {
    shared
        .audit(AuditEntry {
            at: now(),
            actor: format!("node:{node}"),
            kind: RELEASE_FINISHED.into(),
            subject: node.to_owned(),
            message: format!(
                "release {} of {} on {node} {}: {}",
                view.order.id,
                view.order.image,
                view.state,
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

    fn pending(id: &str) -> ReleaseView {
        ReleaseView {
            order: ReleaseOrder {
                id: id.into(),
                image: "web:v2".into(),
                health_path: None,
                timeout_ms: None,
            },
            state: "pending",
            message: None,
            duration_ms: None,
        }
    }

    #[test]
    fn an_order_rides_on_heartbeats_until_its_result_comes_back() {
        let releases = Releases::default();
        assert_eq!(releases.exchange("n1", None), (None, None));
        releases.lock().insert("n1".into(), pending("rel-1"));
        let (order, finished) = releases.exchange("n1", None);
        assert_eq!(order.map(|o| o.id).as_deref(), Some("rel-1"));
        assert!(finished.is_none());
        // A result for another release changes nothing.
        let stale = ReleaseResult {
            id: "rel-0".into(),
            ok: true,
            message: "done".into(),
            duration_ms: None,
        };
        assert!(releases.exchange("n1", Some(&stale)).0.is_some());
        let result = ReleaseResult {
            id: "rel-1".into(),
            ok: false,
            message: "health check failed".into(),
            duration_ms: Some(1500),
        };
        let (order, finished) = releases.exchange("n1", Some(&result));
        assert!(order.is_none());
        let finished = finished.unwrap();
        assert_eq!(finished.state, "failed");
        assert_eq!(finished.duration_ms, Some(1500));
        // Reported twice: recorded once.
        assert_eq!(releases.exchange("n1", Some(&result)), (None, None));
    }

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
