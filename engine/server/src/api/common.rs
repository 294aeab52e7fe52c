//! What the API's handlers share: the admin check and the time format.
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

/// RFC 3339 text of a timestamp, in UTC with milliseconds.
pub fn rfc3339(t: neutral_core::model::Timestamp) -> String {
    let millis = u64::try_from(t.millis()).unwrap_or(0);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
    humantime::format_rfc3339_millis(time).to_string()
}
