//! A stand-in for Cloudflare's v4 DNS records API, from its reference:
//!
//! - every request needs `Authorization: Bearer <token>` (else 403, code
//!   10000 "Authentication error"), as the reference's example shows;
//! - `GET /zones?name=`, `GET /zones/{id}/dns_records?name=&type=&page=&
//!   per_page=` with `result_info` (pages of at most `page_max` records);
//! - `POST /zones/{id}/dns_records` (one record), `PATCH`/`DELETE
//!   /zones/{id}/dns_records/{record}`;
//! - `POST /zones/{id}/dns_records/batch`: deletes, then patches, then puts,
//!   then posts, in one transaction — any error and nothing changes; more
//!   operations than the plan's batch size are refused;
//! - a record identical to an existing one (name, type, content) is
//!   refused with code 81058; `A`/`AAAA` content must be an address of the
//!   family; TTL is 1 (automatic) or 60..=86400; comments hold at most 100
//!   characters (the Free plan's limit);
//! - writes can be made to answer 429 with `Retry-After` (code 971).
//!
//! The envelope is always `{success, errors, messages, result}`.

// Handlers answer errors as whole responses, as axum does.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

use super::{Server, serve};

/// One DNS record as the stand-in keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub rtype: String,
    pub content: String,
    pub ttl: u32,
    pub proxied: bool,
    pub comment: Option<String>,
}

impl Record {
    fn json(&self, zone_name: &str) -> Value {
        json!({
            "id": self.id, "zone_id": self.zone_id, "zone_name": zone_name,
            "name": self.name, "type": self.rtype, "content": self.content,
            "ttl": self.ttl, "proxied": self.proxied, "proxiable": true,
            "comment": self.comment, "tags": [], "meta": {},
            "created_on": "2024-01-01T00:00:00Z", "modified_on": "2024-01-01T00:00:00Z",
        })
    }
}

/// What the stand-in holds and counts.
#[derive(Debug)]
pub struct CloudflareState {
    token: String,
    /// zone id → zone name.
    zones: BTreeMap<String, String>,
    pub records: BTreeMap<String, Record>,
    next_id: u64,
    /// Most records in one page of a listing.
    pub page_max: usize,
    /// Most operations in one batch (the plan's batch size).
    pub batch_limit: usize,
    /// Write calls let through before `throttle_writes` are answered 429.
    pub pass_writes: usize,
    /// Write calls still to be answered 429.
    pub throttle_writes: usize,
    /// Seconds in the `Retry-After` of a 429.
    pub retry_after: u64,
    /// Calls that changed (or tried to change) records, 429s included.
    pub write_calls: usize,
    pub read_calls: usize,
    /// The bodies of the batch calls that succeeded.
    pub batches: Vec<Value>,
}

type Shared = Arc<Mutex<CloudflareState>>;

fn lock(state: &Shared) -> MutexGuard<'_, CloudflareState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn envelope(status: StatusCode, result: Value, extra: Option<Value>) -> Response {
    let mut body = json!({ "success": true, "errors": [], "messages": [] });
    body["result"] = result;
    if let Some(info) = extra {
        body["result_info"] = info;
    }
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "success": false,
        "errors": [{ "code": code, "message": message }],
        "messages": [],
        "result": null,
    });
    (status, axum::Json(body)).into_response()
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Checks the bearer token; `Some(answer)` when it is wrong.
fn unauthorized(state: &CloudflareState, headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bearer {}", state.token);
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (given != expected).then(|| error(StatusCode::FORBIDDEN, 10000, "Authentication error"))
}

/// Counts a write; `Some(answer)` when it is throttled.
fn count_write(state: &mut CloudflareState) -> Option<Response> {
    state.write_calls += 1;
    if state.pass_writes > 0 {
        state.pass_writes -= 1;
        return None;
    }
    if state.throttle_writes == 0 {
        return None;
    }
    state.throttle_writes -= 1;
    let mut answer = error(
        StatusCode::TOO_MANY_REQUESTS,
        971,
        "Please wait and consider throttling your request speed",
    );
    if let Ok(value) = HeaderValue::from_str(&state.retry_after.to_string()) {
        answer.headers_mut().insert("retry-after", value);
    }
    Some(answer)
}

/// Why a record may not be stored, as Cloudflare's code and message.
fn invalid(record: &Record, others: &BTreeMap<String, Record>) -> Option<(u32, String)> {
    let family_ok = match record.rtype.as_str() {
        "A" => record.content.parse::<Ipv4Addr>().is_ok(),
        "AAAA" => record.content.parse::<Ipv6Addr>().is_ok(),
        "TXT" => record.content.len() <= 2048,
        _ => true,
    };
    if !family_ok {
        return Some((
            9005,
            format!("Content for {} record is invalid.", record.rtype),
        ));
    }
    if record.ttl != 1 && !(60..=86_400).contains(&record.ttl) {
        return Some((
            9003,
            "Invalid 'ttl' setting: must be 1 (automatic) or between 60 and 86400".to_owned(),
        ));
    }
    if record
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > 100)
    {
        return Some((
            9004,
            "DNS record comment is too long (at most 100)".to_owned(),
        ));
    }
    let identical = others.values().any(|o| {
        o.id != record.id
            && o.zone_id == record.zone_id
            && o.name == record.name
            && o.rtype == record.rtype
            && o.content == record.content
    });
    identical.then(|| (81058, "An identical record already exists.".to_owned()))
}

/// A record from a request body (for a post, or over `base` for a patch).
fn record_from(body: &Value, base: Option<&Record>, zone_id: &str, id: String) -> Option<Record> {
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(Record {
        id,
        zone_id: zone_id.to_owned(),
        name: text("name")
            .map(|n| normalize(&n))
            .or_else(|| base.map(|b| b.name.clone()))?,
        rtype: text("type")
            .map(|t| t.to_ascii_uppercase())
            .or_else(|| base.map(|b| b.rtype.clone()))?,
        content: text("content").or_else(|| base.map(|b| b.content.clone()))?,
        ttl: body
            .get("ttl")
            .and_then(Value::as_u64)
            .and_then(|t| u32::try_from(t).ok())
            .or_else(|| base.map(|b| b.ttl))
            .unwrap_or(1),
        proxied: body
            .get("proxied")
            .and_then(Value::as_bool)
            .or_else(|| base.map(|b| b.proxied))
            .unwrap_or(false),
        comment: match body.get("comment") {
            Some(Value::String(c)) => Some(c.clone()),
            Some(Value::Null) => None,
            _ => base.and_then(|b| b.comment.clone()),
        },
    })
}

impl CloudflareState {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:032x}", self.next_id)
    }
}

async fn list_zones(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut state = lock(&state);
    if let Some(denied) = unauthorized(&state, &headers) {
        return denied;
    }
    state.read_calls += 1;
    let wanted = query.get("name").map(|n| normalize(n));
    let zones: Vec<Value> = state
        .zones
        .iter()
        .filter(|(_, name)| wanted.as_ref().is_none_or(|w| w == *name))
        .map(|(id, name)| json!({ "id": id, "name": name, "status": "active" }))
        .collect();
    let count = zones.len();
    envelope(
        StatusCode::OK,
        Value::Array(zones),
        Some(
            json!({ "page": 1, "per_page": 20, "count": count, "total_count": count, "total_pages": 1 }),
        ),
    )
}

async fn list_records(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(zone_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut state = lock(&state);
    if let Some(denied) = unauthorized(&state, &headers) {
        return denied;
    }
    state.read_calls += 1;
    let Some(zone_name) = state.zones.get(&zone_id).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            7003,
            "Could not route to /zones, perhaps your object identifier is invalid?",
        );
    };
    let name = query.get("name").map(|n| normalize(n));
    let rtype = query.get("type").map(|t| t.to_ascii_uppercase());
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(5, state.page_max.max(5));
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let matching: Vec<&Record> = state
        .records
        .values()
        .filter(|r| r.zone_id == zone_id)
        .filter(|r| name.as_ref().is_none_or(|n| *n == r.name))
        .filter(|r| rtype.as_ref().is_none_or(|t| *t == r.rtype))
        .collect();
    let total = matching.len();
    let shown: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| r.json(&zone_name))
        .collect();
    let count = shown.len();
    envelope(
        StatusCode::OK,
        Value::Array(shown),
        Some(json!({
            "page": page, "per_page": per_page, "count": count, "total_count": total,
            "total_pages": total.div_ceil(per_page).max(1),
        })),
    )
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            9207,
            &format!("Request body is invalid: {e}"),
        )
    })
}

async fn create_record(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> Response {
    let mut state = lock(&state);
    if let Some(denied) = unauthorized(&state, &headers) {
        return denied;
    }
    if let Some(throttled) = count_write(&mut state) {
        return throttled;
    }
    let Some(zone_name) = state.zones.get(&zone_id).cloned() else {
        return error(StatusCode::NOT_FOUND, 7003, "no such zone");
    };
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let id = state.new_id();
    let Some(record) = record_from(&body, None, &zone_id, id) else {
        return error(
            StatusCode::BAD_REQUEST,
            9000,
            "name, type and content are required",
        );
    };
    if let Some((code, message)) = invalid(&record, &state.records) {
        return error(StatusCode::BAD_REQUEST, code, &message);
    }
    let answer = record.json(&zone_name);
    state.records.insert(record.id.clone(), record);
    envelope(StatusCode::OK, answer, None)
}

async fn change_record(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((zone_id, record_id)): Path<(String, String)>,
    method: axum::http::Method,
    body: Bytes,
) -> Response {
    let mut state = lock(&state);
    if let Some(denied) = unauthorized(&state, &headers) {
        return denied;
    }
    if let Some(throttled) = count_write(&mut state) {
        return throttled;
    }
    let Some(zone_name) = state.zones.get(&zone_id).cloned() else {
        return error(StatusCode::NOT_FOUND, 7003, "no such zone");
    };
    let Some(existing) = state
        .records
        .get(&record_id)
        .filter(|r| r.zone_id == zone_id)
        .cloned()
    else {
        return error(StatusCode::NOT_FOUND, 81044, "Record does not exist.");
    };
    if method == axum::http::Method::DELETE {
        state.records.remove(&record_id);
        return envelope(StatusCode::OK, json!({ "id": record_id }), None);
    }
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let Some(record) = record_from(&body, Some(&existing), &zone_id, record_id.clone()) else {
        return error(StatusCode::BAD_REQUEST, 9000, "invalid record");
    };
    if let Some((code, message)) = invalid(&record, &state.records) {
        return error(StatusCode::BAD_REQUEST, code, &message);
    }
    let answer = record.json(&zone_name);
    state.records.insert(record_id, record);
    envelope(StatusCode::OK, answer, None)
}

/// One operation of a batch against `records`; the error of the first
/// operation that fails.
fn batch_op(
    records: &mut BTreeMap<String, Record>,
    zone_id: &str,
    kind: &str,
    body: &Value,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Value, (u32, String)> {
    let id = body.get("id").and_then(Value::as_str).map(str::to_owned);
    let existing = |records: &BTreeMap<String, Record>, id: &Option<String>| {
        id.as_ref()
            .and_then(|id| records.get(id))
            .filter(|r| r.zone_id == zone_id)
            .cloned()
            .ok_or((81044, "Record does not exist.".to_owned()))
    };
    match kind {
        "deletes" => {
            let record = existing(records, &id)?;
            records.remove(&record.id);
            Ok(json!({ "id": record.id }))
        }
        "patches" | "puts" => {
            let base = existing(records, &id)?;
            // A put replaces the whole record: what it leaves out is unset.
            let record = if kind == "puts" {
                record_from(body, None, zone_id, base.id.clone())
            } else {
                record_from(body, Some(&base), zone_id, base.id.clone())
            }
            .ok_or((9000, "name, type and content are required".to_owned()))?;
            if let Some(problem) = invalid(&record, records) {
                return Err(problem);
            }
            records.insert(record.id.clone(), record.clone());
            Ok(json!({ "id": record.id }))
        }
        _ => {
            let record = record_from(body, None, zone_id, new_id())
                .ok_or((9000, "name, type and content are required".to_owned()))?;
            if let Some(problem) = invalid(&record, records) {
                return Err(problem);
            }
            records.insert(record.id.clone(), record.clone());
            Ok(json!({ "id": record.id }))
        }
    }
}

async fn batch(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> Response {
    let mut state = lock(&state);
    if let Some(denied) = unauthorized(&state, &headers) {
        return denied;
    }
    if let Some(throttled) = count_write(&mut state) {
        return throttled;
    }
    if !state.zones.contains_key(&zone_id) {
        return error(StatusCode::NOT_FOUND, 7003, "no such zone");
    }
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    const ORDER: [&str; 4] = ["deletes", "patches", "puts", "posts"];
    let operations: usize = ORDER
        .iter()
        .map(|k| body.get(*k).and_then(Value::as_array).map_or(0, Vec::len))
        .sum();
    if operations > state.batch_limit {
        return error(
            StatusCode::BAD_REQUEST,
            81063,
            &format!(
                "The batch holds {operations} operations; this zone's plan allows {}",
                state.batch_limit
            ),
        );
    }
    // One transaction: work on a copy, keep it only when every operation
    // succeeded, in the documented order.
    let mut records = state.records.clone();
    let mut next = state.next_id;
    let mut result = json!({});
    for kind in ORDER {
        let mut done = Vec::new();
        for op in body
            .get(kind)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut new_id = || {
                next += 1;
                format!("{next:032x}")
            };
            match batch_op(&mut records, &zone_id, kind, op, &mut new_id) {
                Ok(value) => done.push(value),
                Err((code, message)) => {
                    return error(StatusCode::BAD_REQUEST, code, &format!("{kind}: {message}"));
                }
            }
        }
        result[kind] = Value::Array(done);
    }
    state.records = records;
    state.next_id = next;
    state.batches.push(body);
    envelope(StatusCode::OK, result, None)
}

/// The Cloudflare stand-in.
#[derive(Debug)]
pub struct Cloudflare {
    server: Server,
    state: Shared,
}

impl Cloudflare {
    /// Serves `zones` to holders of `token`.
    pub fn start(token: &str, zones: &[&str]) -> Cloudflare {
        let mut state = CloudflareState {
            token: token.to_owned(),
            zones: BTreeMap::new(),
            records: BTreeMap::new(),
            next_id: 0,
            page_max: 100,
            batch_limit: 200,
            pass_writes: 0,
            throttle_writes: 0,
            retry_after: 1,
            write_calls: 0,
            read_calls: 0,
            batches: Vec::new(),
        };
        for zone in zones {
            let id = state.new_id();
            state.zones.insert(id, normalize(zone));
        }
        let state = Arc::new(Mutex::new(state));
        let router = Router::new()
            .route("/client/v4/zones", get(list_zones))
            .route(
                "/client/v4/zones/{zone}/dns_records",
                get(list_records).post(create_record),
            )
            .route("/client/v4/zones/{zone}/dns_records/batch", post(batch))
            .route(
                "/client/v4/zones/{zone}/dns_records/{record}",
                patch(change_record)
                    .put(change_record)
                    .delete(change_record),
            )
            .with_state(Arc::clone(&state));
        Cloudflare {
            server: serve(router),
            state,
        }
    }

    /// The API's base URL (`…/client/v4`).
    pub fn api_url(&self) -> String {
        format!("{}/client/v4", self.server.url)
    }

    /// The stand-in's state, for counting and hand edits.
    pub fn state(&self) -> MutexGuard<'_, CloudflareState> {
        lock(&self.state)
    }

    pub fn zone_id(&self, zone: &str) -> String {
        let state = self.state();
        state
            .zones
            .iter()
            .find(|(_, name)| **name == normalize(zone))
            .map(|(id, _)| id.clone())
            .expect("a zone of the stand-in")
    }

    /// The records of `name`, sorted by type and content.
    pub fn records(&self, name: &str) -> Vec<Record> {
        let mut found: Vec<Record> = self
            .state()
            .records
            .values()
            .filter(|r| r.name == normalize(name))
            .cloned()
            .collect();
        found.sort_by(|a, b| (&a.rtype, &a.content).cmp(&(&b.rtype, &b.content)));
        found
    }

    /// A record made by hand (not counted as a write call).
    pub fn add(&self, zone: &str, name: &str, rtype: &str, content: &str, comment: Option<&str>) {
        let zone_id = self.zone_id(zone);
        let mut state = self.state();
        let id = state.new_id();
        state.records.insert(
            id.clone(),
            Record {
                id,
                zone_id,
                name: normalize(name),
                rtype: rtype.to_owned(),
                content: content.to_owned(),
                ttl: 300,
                proxied: false,
                comment: comment.map(str::to_owned),
            },
        );
    }

    /// Changes the content of `name`'s record `from` by hand.
    pub fn edit(&self, name: &str, from: &str, to: &str) {
        let mut state = self.state();
        let record = state
            .records
            .values_mut()
            .find(|r| r.name == normalize(name) && r.content == from)
            .expect("the record to edit");
        record.content = to.to_owned();
    }
}
