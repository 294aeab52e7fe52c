//! Pages of lists: one shape for every list endpoint. `?limit=` (1..=10000)
//! and `?cursor=` in; the body stays what the endpoint answers without
//! pages, and when there is more the answer carries `X-Next-Cursor` and a
//! `Link: <…>; rel="next"` header. Without `limit` a list is answered whole.
//!
//! This module only cuts and labels pages; each endpoint decides its order
//! (a stable key) and its filters.

use axum::http::{HeaderMap, HeaderValue, Uri, header};

use crate::error::ApiError;

/// The largest page.
pub const MAX_LIMIT: u32 = 10_000;

/// A request's page: how many and after which key.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl Page {
    pub fn new(limit: Option<u32>, cursor: Option<String>) -> Result<Page, ApiError> {
        if let Some(limit) = limit
            && !(1..=MAX_LIMIT).contains(&limit)
        {
            return Err(ApiError::bad_request(format!(
                "limit: {limit} is outside 1..={MAX_LIMIT}"
            )));
        }
        if cursor.as_deref().is_some_and(str::is_empty) {
            return Err(ApiError::bad_request("cursor: empty"));
        }
        Ok(Page {
            limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            cursor,
        })
    }

    /// The cursor as a number (lists ordered by id).
    pub fn cursor_id(&self) -> Result<Option<i64>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("cursor: `{c}` is not one of ours")))
            })
            .transpose()
    }

    /// Cuts `items` — already filtered and sorted by `key` ascending — to
    /// the page after the cursor; returns it and the next cursor.
    pub fn cut<T>(&self, items: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
        let mut items: Vec<T> = match &self.cursor {
            Some(cursor) => items
                .into_iter()
                .filter(|item| key(item).as_str() > cursor.as_str())
                .collect(),
            None => items,
        };
        match self.limit {
            Some(limit) if items.len() > limit => {
                items.truncate(limit);
                let next = items.last().map(&key);
                (items, next)
            }
            _ => (items, None),
        }
    }
}

/// `X-Next-Cursor` and `Link: <uri with cursor>; rel="next"` when there is
/// a next page.
pub fn next_headers(uri: &Uri, next: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let Some(next) = next else {
        return headers;
    };
    let encoded = encode(next);
    let mut query: Vec<String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("cursor="))
        .map(str::to_owned)
        .collect();
    query.push(format!("cursor={encoded}"));
    let link = format!("<{}?{}>; rel=\"next\"", uri.path(), query.join("&"));
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("x-next-cursor", value);
    }
    if let Ok(value) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, value);
    }
    headers
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_every_item_once_and_say_when_there_is_more() {
        let items: Vec<String> = (0..10).map(|i| format!("n{i:02}")).collect();
        let mut cursor = None;
        let mut seen = Vec::new();
        loop {
            let page = Page::new(Some(3), cursor.clone()).unwrap();
            let (got, next) = page.cut(items.clone(), Clone::clone);
            seen.extend(got);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, items);
        let whole = Page::new(None, None)
            .unwrap()
            .cut(items.clone(), Clone::clone);
        assert_eq!(whole, (items, None));
        assert!(Page::new(Some(0), None).is_err());
        assert!(Page::new(Some(10_001), None).is_err());
        assert!(Page::new(None, Some(String::new())).is_err());
    }

    #[test]
    fn the_link_keeps_the_filters_and_replaces_the_cursor() {
        let uri: Uri = "/nodes?region=jp&limit=2&cursor=old".parse().unwrap();
        let headers = next_headers(&uri, Some("jp 1/x"));
        assert_eq!(headers["x-next-cursor"], "jp%201%2Fx");
        assert_eq!(
            headers[header::LINK],
            "</nodes?region=jp&limit=2&cursor=jp%201%2Fx>; rel=\"next\""
        );
        assert!(next_headers(&uri, None).is_empty());
    }
}
