//! API errors: every failed request gets a 4xx/5xx with a JSON body
//! `{"error": "<code>", "message": "<what was wrong>"}`, and request bodies go
//! through [`JsonBody`], which turns every JSON problem (syntax, type, unknown
//! field, size) into such an error instead of axum's plain-text rejection.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A 500 naming what failed, redacted (an error text may carry a URL).
    pub fn internal(err: &anyhow::Error) -> Self {
        let message = neutral_core::redact::redact(&format!("{err:#}")).into_owned();
        tracing::error!(error = %message, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.code, "message": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        ApiError::internal(&err)
    }
}

/// A JSON request body; rejections become [`ApiError`]s naming the problem.
/// The whole body must arrive within [`BODY_DEADLINE`] (`408 body_timeout`
/// otherwise): the idle timeout alone would let a client trickle one byte
/// every few seconds and hold a handler for as long as it likes.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// How long a request body may take to arrive (bodies are at most 64 KiB).
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match tokio::time::timeout(BODY_DEADLINE, Json::<T>::from_request(req, state)).await {
            Ok(Ok(Json(value))) => Ok(JsonBody(value)),
            Ok(Err(rejection)) => Err(json_rejection(&rejection)),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_DEADLINE.as_secs()
                ),
            )),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        _ => "bad_json",
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body exceeds 65536 bytes".to_owned(),
        _ => rejection.body_text(),
    };
    // Keep the status family but report schema problems as 400: the body was
    // JSON, just not the JSON this endpoint takes.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(status, code, message)
}
