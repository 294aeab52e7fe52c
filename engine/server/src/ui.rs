//! The operators' status page at `GET /ui`: one HTML document with its
//! stylesheet and script, compiled into the binary (`include_str!`, no CDN,
//! no build step).
//!
//! This module serves static bytes only. The page carries no data: its
//! script reads the JSON read API (`/status`, `/regions`, `/domains`,
//! `/nodes`, `/runs`, `/autoscale`, `/audit`) with the token the user enters,
//! so whatever guards those endpoints guards the page's data too. It must not
//! grow endpoints of its own that bypass those guards. A strict
//! Content-Security-Policy allows only same-origin scripts, styles and
//! fetches.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Same-origin script, style and fetches only; no framing, no plugins, no
/// form posts, no inline script or style elements.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The page's routes, merged into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Small, and must change with the binary: revalidate every time.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// Bytes of the page and its assets (for the figures in docs/operations.md).
pub fn weight() -> usize {
    INDEX.len() + SCRIPT.len() + STYLE.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> (axum::http::HeaderMap, String) {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn assets_are_served_with_their_types_and_a_strict_policy() {
        for (response, kind, marker) in [
            (index().await, "text/html", "<!doctype html>"),
            (script().await, "text/javascript", "\"use strict\""),
            (style().await, "text/css", ":root"),
        ] {
            let (headers, text) = body(response).await;
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with(kind)
            );
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(text.contains(marker), "{kind}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for text in [INDEX, SCRIPT, STYLE] {
            for pattern in [
                "src=\"http",
                "href=\"http",
                "@import",
                "url(",
                "//cdn",
                "eval(",
            ] {
                assert!(!text.contains(pattern), "{pattern}");
            }
        }
        // Its only resources are its own assets.
        assert!(INDEX.contains("src=\"/ui/app.js\""));
        assert!(INDEX.contains("href=\"/ui/app.css\""));
        // No inline script or style (the policy would block them).
        assert_eq!(INDEX.matches("<script").count(), 1);
        assert!(!INDEX.contains("<style") && !INDEX.contains(" style=\""));
        // Data is never parsed as HTML.
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("insertAdjacentHTML"));
        // Every fetch carries the token.
        assert_eq!(
            SCRIPT.matches("fetch(").count(),
            2,
            "the reads and the event stream"
        );
        assert_eq!(
            SCRIPT.matches("Authorization: `Bearer ${token}`").count(),
            SCRIPT.matches("fetch(").count()
        );
        assert!(weight() < 64 * 1024, "{}", weight());
    }
}
