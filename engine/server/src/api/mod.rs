//! The HTTP API: the node API, admin writes, reads for people and tools, and
//! the embedded DNS backend's zone API. JSON everywhere; bodies capped at
//! 64 KiB; unknown fields rejected; every failure a JSON error.

mod common;
mod dns;
mod nodes;
mod page;
mod read;
pub mod releases;

/// The request bodies, for the fuzz targets (`fuzz/`).
pub use dns::CreateZone;
pub use nodes::{HeartbeatRequest, RegisterRequest};
pub use nodes::expire_registrations;

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
        .route("/dns/zones", get(dns::list).post(dns::create))
        .route(
            "/dns/zones/{zone}",
            get(dns::get).patch(dns::patch).delete(dns::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(app)
}

/// Every 4xx/5xx in the documented JSON shape: answers axum made itself
/// (a path or query that does not parse, say) carry plain text; they are
/// rewritten here with a code for their status and their text, redacted,
/// as the message.
async fn json_errors(response: axum::response::Response) -> axum::response::Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let retry_after = response
        .headers()
        .get(axum::http::header::RETRY_AFTER)
        .cloned();
    let text = axum::body::to_bytes(response.into_body(), MAX_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        neutral_core::redact::redact(&text).into_owned()
    };
    let mut error = ApiError::new(status, code, message);
    error.retry_after = retry_after.and_then(|v| v.to_str().ok().and_then(|v| v.parse().ok()));
    axum::response::IntoResponse::into_response(error)
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
