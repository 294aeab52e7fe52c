//! The HTTP API: the node API, admin writes, reads for people and tools, and
//! the embedded DNS backend's zone API. JSON everywhere; bodies capped at
//! 64 KiB; unknown fields rejected; every failure a JSON error.

mod common;
mod dns;
mod nodes;
mod read;
pub mod releases;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::app::App;
use crate::error::ApiError;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

pub fn router(app: Arc<App>) -> Router {
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
        .with_state(app)
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
