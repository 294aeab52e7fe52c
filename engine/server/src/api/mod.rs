//! The HTTP API: the node API, admin writes, reads for people and tools, and
//! the embedded DNS backend's zone API. JSON everywhere; bodies capped at
//! 64 KiB; unknown fields rejected; every failure a JSON error. Only
//! `/healthz` and the node API answer without a viewer, admin or run token
//! (roles: `auth`, docs/api.md).

mod common;
mod dns;
pub mod events;
mod nodes;
mod page;
mod read;
pub mod releases;
pub mod stream;
mod tokens;

/// The request bodies, for the fuzz targets (`fuzz/`).
pub use common::rfc3339;
pub use dns::CreateZone;
/// The replicas' zone mirror (`replicas.rs`).
pub use dns::mirror_zones;
pub use nodes::expire_registrations;
pub use nodes::{HeartbeatRequest, RegisterRequest};

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};

use crate::app::App;
use crate::error::ApiError;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

pub fn router(app: Arc<App>) -> Router {
    // Every route here needs a viewer, admin or run token (the layer
    // answers 401 otherwise); writes check their own role on top.
    let protected = Router::new()
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
        .route("/leader", get(read::leader))
        .route("/audit", get(read::audit))
        .route("/events", get(events::stream))
        .route("/metrics", get(crate::metrics::handler))
        .route("/join-tokens", post(tokens::mint_join))
        .route("/dns/zones", get(dns::list).post(dns::create))
        .route("/dns/backend-calls", post(dns::backend_calls))
        .route(
            "/dns/zones/{zone}",
            get(dns::get).patch(dns::patch).delete(dns::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            require_token,
        ));
    // Public: liveness, the status page's static assets, and the node API (join and node tokens, checked by
    // the handlers).
    Router::new()
        .route("/healthz", get(read::healthz))
        .route("/nodes/register", post(nodes::register))
        .route("/nodes/heartbeat", post(nodes::heartbeat))
        // The status page: static bytes; its script reads with the user's token.
        .merge(crate::ui::routes())
        .merge(protected)
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

/// The layer of the protected routes: a viewer, admin or live run token.
async fn require_token(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
    match common::require_read(&app, request.headers()) {
        // The viewer is refused every write before its body is even read.
        Ok(common::Caller::Viewer) if !read_only => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the viewer token is read-only",
        )
        .into_response(),
        // A run's write, under the leader term its run started with.
        Ok(common::Caller::Run(crate::auth::RunScope {
            term: Some(term), ..
        })) if !read_only => match fence_run(&app, term).await {
            Ok(()) => next.run(request).await,
            Err(err) => err.into_response(),
        },
        Ok(_) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// A write of a Terraform run started under leader `term`: refused (409
/// `fenced`) unless that term still holds a live leader lease, read from
/// the store now. A leader frozen past its lease (its Terraform, in a
/// process group of its own, going on meanwhile) thus writes nothing
/// through its API once it wakes, before it notices and stops the run. The
/// check and the write are two steps, as at the Git remote.
async fn fence_run(app: &Arc<App>, term: i64) -> Result<(), ApiError> {
    let lease = app
        .with_store(|s| s.leases().current(neutral_store::LEADER))
        .await?;
    match run_fence_refusal(term, lease.as_ref()) {
        None => Ok(()),
        Some(message) => Err(ApiError::new(StatusCode::CONFLICT, "fenced", message)),
    }
}

/// Why a run started under `term` may not write, given the leader lease as
/// the store holds it (`None`: it may).
fn run_fence_refusal(term: i64, lease: Option<&neutral_store::LeaseHolder>) -> Option<String> {
    let now = match lease {
        Some(lease) if lease.term == term && !lease.lapsed => return None,
        Some(lease) if lease.lapsed => format!("lapsed at term {}", lease.term),
        Some(lease) => format!("at term {}, held by {}", lease.term, lease.holder),
        None => "not held".to_owned(),
    };
    Some(format!(
        "refused: this Terraform run was started by the leader of term {term}, but the leader \
         lease is {now}: a deposed leader's run writes nothing"
    ))
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

#[cfg(test)]
mod fence_tests {
    use neutral_store::{LeaseHolder, Timestamp};

    use super::run_fence_refusal;

    fn lease(term: i64, lapsed: bool) -> LeaseHolder {
        LeaseHolder {
            holder: "cp2".to_owned(),
            term,
            expires_at: Timestamp(0),
            lapsed,
        }
    }

    #[test]
    fn a_run_writes_only_while_its_term_holds_a_live_lease() {
        assert_eq!(run_fence_refusal(4, Some(&lease(4, false))), None);
        expect_test::expect![[r#"
            refused: this Terraform run was started by the leader of term 4, but the leader lease is at term 5, held by cp2: a deposed leader's run writes nothing
        "#]]
        .assert_eq(&format!("{}\n", run_fence_refusal(4, Some(&lease(5, false))).unwrap()));
        expect_test::expect![[r#"
            refused: this Terraform run was started by the leader of term 4, but the leader lease is lapsed at term 4: a deposed leader's run writes nothing
        "#]]
        .assert_eq(&format!("{}\n", run_fence_refusal(4, Some(&lease(4, true))).unwrap()));
        assert!(run_fence_refusal(4, None).is_some_and(|m| m.contains("not held")));
    }
}
