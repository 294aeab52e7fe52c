//! What the API's handlers share: the role checks (admin, viewer, a
//! Terraform run's token; see `auth`) and the time format.
//! A leaf of `api`: it must not import the handlers' modules.

use axum::http::HeaderMap;

use crate::app::App;
use crate::auth;
use crate::error::ApiError;

/// Checks the admin token of a request.
pub fn require_admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    match auth::bearer(headers) {
        None => Err(ApiError::unauthorized(
            "missing `Authorization: Bearer <admin token>`",
        )),
        Some(token) if app.admin_token.matches(token) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("invalid admin token")),
    }
}

/// Who a request's bearer token says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Viewer,
    /// A Terraform run's token (see `auth::Grants`).
    Run(auth::RunScope),
}

/// The caller behind a request's token, among admin, viewer and run
/// tokens; 401 without a token or with any other.
pub fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(token) = auth::bearer(headers) else {
        return Err(ApiError::unauthorized(
            "missing `Authorization: Bearer <token>` (a viewer or admin token)",
        ));
    };
    if app.admin_token.matches(token) {
        return Ok(Caller::Admin);
    }
    if app.viewer_token.as_ref().is_some_and(|v| v.matches(token)) {
        return Ok(Caller::Viewer);
    }
    match app.grants.run_scope(token) {
        Some(scope) => Ok(Caller::Run(scope)),
        None => Err(ApiError::unauthorized("invalid or expired token")),
    }
}

/// Reads: admin, viewer or a live run token.
pub fn require_read(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    caller(app, headers)
}

/// Writes Terraform's provider makes: admin, or a live run token — scoped
/// to `region` when the write concerns one (draining or deleting a node,
/// minting a join token). A viewer gets 403.
pub fn require_writer(
    app: &App,
    headers: &HeaderMap,
    region: Option<&str>,
) -> Result<Caller, ApiError> {
    let caller = caller(app, headers)?;
    match &caller {
        Caller::Admin => Ok(caller),
        Caller::Viewer => Err(forbidden("the viewer token is read-only")),
        Caller::Run(scope) => match region {
            Some(region) if !scope.regions.contains(region) => Err(forbidden(format!(
                "this run's token may act only on region(s) {:?}, not `{region}`",
                scope.regions
            ))),
            _ => Ok(caller),
        },
    }
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(axum::http::StatusCode::FORBIDDEN, "forbidden", message)
}

/// RFC 3339 text of a timestamp, in UTC with milliseconds.
pub fn rfc3339(t: neutral_core::model::Timestamp) -> String {
    let millis = u64::try_from(t.millis()).unwrap_or(0);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
    humantime::format_rfc3339_millis(time).to_string()
}
