//! The HTTP API: the node API, admin writes, reads for people and tools, and
//! the embedded DNS backend's zone API. JSON everywhere; bodies capped at
//! 64 KiB; unknown fields rejected; every failure a JSON error.

mod dns;
mod nodes;
mod read;
pub mod releases;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use crate::auth;
use crate::error::ApiError;
use crate::world::Shared;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/nodes/register", post(nodes::register))
        .route("/nodes/heartbeat", post(nodes::heartbeat))
        .route("/nodes", get(read::nodes))
        .route("/nodes/{id}", get(read::node).delete(nodes::delete))
        .route("/nodes/{id}/drain", post(nodes::drain))
        .route("/nodes/{id}/undrain", post(nodes::undrain))
        .route(
            "/nodes/{id}/release",
            get(releases::latest).post(releases::request),
        )
        .route("/sync", post(read::sync))
        .route("/regions", get(read::regions))
        .route("/autoscale", get(read::autoscale))
        .route("/runs", get(read::runs))
        .route("/runs/{id}", get(read::run))
        .route("/domains", get(read::domains))
        .route("/domains/{domain}", get(read::domain))
        .route("/status", get(read::status))
        .route("/audit", get(read::audit))
        .route("/healthz", get(read::healthz))
        .route("/metrics", get(crate::metrics::handler))
        .merge(crate::ui::routes())
        .route("/dns/zones", get(dns::list).post(dns::create))
        .route(
            "/dns/zones/{zone}",
            get(dns::get).patch(dns::patch).delete(dns::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// Checks the admin token of a request.
pub fn require_admin(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    match auth::bearer(headers) {
        None => Err(ApiError::unauthorized(
            "missing `Authorization: Bearer <admin token>`",
        )),
        Some(token) if shared.admin_token.matches(token) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("invalid admin token")),
    }
}

/// RFC 3339 text of a timestamp, in UTC with milliseconds.
pub fn rfc3339(t: neutral_core::model::Timestamp) -> String {
    let millis = u64::try_from(t.millis()).unwrap_or(0);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
    humantime::format_rfc3339_millis(time).to_string()
}
