//! A stand-in for Alibaba Cloud DNS' RPC API (version 2015-01-09), from
//! its reference:
//!
//! - every request carries the common parameters and a signature v1
//!   (HMAC-SHA1 of `GET&%2F&<encoded canonical query>` keyed with
//!   `secret&`), checked here with an implementation of its own
//!   ([`signature`], known-answer tested against the reference's example);
//!   a wrong key id is `InvalidAccessKeyId.NotFound`, a wrong signature
//!   `SignatureDoesNotMatch`, a reused nonce `SignatureNonceUsed`, a
//!   timestamp more than 15 minutes off `InvalidTimeStamp.Expired`;
//! - `DescribeSubDomainRecords` pages of at most 500 (`PageSize`);
//!   `AddDomainRecord` refuses a duplicate (`DomainRecordDuplicate`),
//!   `UpdateDomainRecord` refuses an update that changes nothing (the same
//!   code), TTLs below 600 (the free edition's floor) are refused;
//! - weighted round robin: `SetDNSSLBStatus`, `DescribeDNSSLBSubDomains`,
//!   `UpdateDNSSLBWeight` (1..=100, only while it is open for the name),
//!   `SetDomainRecordStatus` (Enable/Disable);
//! - writes can be made to answer `Throttling.User`.

// Handlers answer errors as whole responses, as axum does.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Server, request_id, serve};

/// The free edition's lowest TTL.
pub const TTL_FLOOR: u32 = 600;
const SKEW: Duration = Duration::from_secs(15 * 60);

fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, byte) {
            (Some(decoded), _) => {
                out.push(decoded);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, other) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Signature v1 of `params` (without `Signature`) for a GET, as the
/// reference defines it.
pub fn signature(params: &BTreeMap<String, String>, secret: &str) -> String {
    let canonical: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let string_to_sign = format!("GET&{}&{}", encode("/"), encode(&canonical.join("&")));
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{secret}&").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, string_to_sign.as_bytes()).as_ref())
}

/// One record as the stand-in keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub domain: String,
    pub rr: String,
    pub rtype: String,
    pub value: String,
    pub ttl: u32,
    pub enabled: bool,
    pub weight: u32,
}

impl Record {
    /// The record's full name.
    pub fn name(&self) -> String {
        if self.rr == "@" {
            self.domain.clone()
        } else {
            format!("{}.{}", self.rr, self.domain)
        }
    }

    fn json(&self) -> Value {
        json!({
            "DomainName": self.domain, "RecordId": self.id.to_string(), "RR": self.rr,
            "Type": self.rtype, "Value": self.value, "TTL": self.ttl, "Line": "default",
            "Status": if self.enabled { "ENABLE" } else { "DISABLE" }, "Locked": false,
            "Weight": self.weight,
        })
    }
}

#[derive(Debug)]
pub struct AliDnsState {
    key_id: String,
    secret: String,
    domains: Vec<String>,
    pub records: BTreeMap<u64, Record>,
    next_id: u64,
    /// Full names with weighted round robin on.
    pub slb: HashSet<String>,
    nonces: HashSet<String>,
    /// Write calls let through before `throttle_writes` are refused.
    pub pass_writes: usize,
    pub throttle_writes: usize,
    pub write_calls: usize,
    pub read_calls: usize,
    /// `Action`s of the write calls, in order (throttled ones included).
    pub write_log: Vec<String>,
}

type Shared = Arc<Mutex<AliDnsState>>;

fn lock(state: &Shared) -> MutexGuard<'_, AliDnsState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn fail(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "RequestId": request_id(), "HostId": "alidns.aliyuncs.com",
        "Code": code, "Message": message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}"),
    });
    (status, axum::Json(body)).into_response()
}

fn ok(mut body: Value) -> Response {
    body["RequestId"] = Value::String(request_id());
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl AliDnsState {
    /// The hosted domain holding `name`, and `name`'s RR in it.
    fn split(&self, name: &str, domain: Option<&str>) -> Option<(String, String)> {
        let name = normalize(name);
        let domain = match domain {
            Some(domain) => self.domains.iter().find(|d| **d == normalize(domain))?,
            None => self
                .domains
                .iter()
                .filter(|d| name == **d || name.ends_with(&format!(".{d}")))
                .max_by_key(|d| d.len())?,
        };
        if name == *domain {
            return Some((domain.clone(), "@".to_owned()));
        }
        let rr = name.strip_suffix(&format!(".{domain}"))?;
        Some((domain.clone(), rr.to_owned()))
    }

    fn checked_value(rtype: &str, value: &str, ttl: u32) -> Result<(), Response> {
        let valid = match rtype {
            "A" => value.parse::<Ipv4Addr>().is_ok(),
            "AAAA" => value.parse::<Ipv6Addr>().is_ok(),
            "TXT" => !value.is_empty() && value.len() <= 512,
            _ => true,
        };
        if !valid {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "DomainRecordValueInvalid",
                &format!("The {rtype} record value is invalid."),
            ));
        }
        if ttl < TTL_FLOOR {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "TTLValueInvalid",
                &format!("The TTL must be at least {TTL_FLOOR} for this edition."),
            ));
        }
        Ok(())
    }

    fn duplicate_of(&self, candidate: &Record) -> bool {
        self.records.values().any(|r| {
            r.id != candidate.id
                && r.domain == candidate.domain
                && r.rr.eq_ignore_ascii_case(&candidate.rr)
                && r.rtype == candidate.rtype
                && r.value == candidate.value
        })
    }
}

/// Checks the common parameters and the signature; `Err(answer)` when the
/// request is refused.
fn authenticate(
    state: &mut AliDnsState,
    params: &BTreeMap<String, String>,
) -> Result<(), Response> {
    for required in [
        "Action",
        "Version",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
    ] {
        if !params.contains_key(required) {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                &format!("MissingParameter.{required}"),
                &format!(
                    "The input parameter \"{required}\" that is mandatory for processing this request is not supplied."
                ),
            ));
        }
    }
    if params.get("Version").map(String::as_str) != Some("2015-01-09") {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        ));
    }
    if params.get("SignatureMethod").map(String::as_str) != Some("HMAC-SHA1")
        || params.get("SignatureVersion").map(String::as_str) != Some("1.0")
    {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "InvalidSignatureMethod",
            "Specified signature method is not supported.",
        ));
    }
    if params.get("AccessKeyId") != Some(&state.key_id) {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    }
    let expected = signature(params, &state.secret);
    if params.get("Signature") != Some(&expected) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        ));
    }
    let stamp = params
        .get("Timestamp")
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    let fresh = stamp.is_some_and(|t| {
        let now = SystemTime::now();
        let off = now.duration_since(t).or_else(|_| t.duration_since(now));
        off.is_ok_and(|d| d <= SKEW)
    });
    if !fresh {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    let nonce = params.get("SignatureNonce").cloned().unwrap_or_default();
    if !state.nonces.insert(nonce) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    Ok(())
}

fn param<'p>(params: &'p BTreeMap<String, String>, name: &str) -> Result<&'p str, Response> {
    params.get(name).map(String::as_str).ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            &format!("MissingParameter.{name}"),
            &format!("The input parameter \"{name}\" is not supplied."),
        )
    })
}

fn record_of(state: &AliDnsState, params: &BTreeMap<String, String>) -> Result<Record, Response> {
    let id = param(params, "RecordId")?.parse::<u64>().unwrap_or(0);
    state.records.get(&id).cloned().ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            "DomainRecordNotBelongToUser",
            "The DNS record does not exist or does not belong to you.",
        )
    })
}

fn handle(
    state: &mut AliDnsState,
    params: &BTreeMap<String, String>,
) -> Result<Response, Response> {
    authenticate(state, params)?;
    let action = param(params, "Action")?.to_owned();
    let writes = !action.starts_with("Describe");
    if writes {
        state.write_calls += 1;
        state.write_log.push(action.clone());
        if state.pass_writes > 0 {
            state.pass_writes -= 1;
        } else if state.throttle_writes > 0 {
            state.throttle_writes -= 1;
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ));
        }
    } else {
        state.read_calls += 1;
    }
    let ttl = |params: &BTreeMap<String, String>| {
        params
            .get("TTL")
            .and_then(|t| t.parse::<u32>().ok())
            .unwrap_or(600)
    };
    match action.as_str() {
        "DescribeSubDomainRecords" => {
            let sub = param(params, "SubDomain")?;
            let Some((domain, rr)) = state.split(sub, params.get("DomainName").map(String::as_str))
            else {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "InvalidDomainName.NoExist",
                    "The specified domain name does not exist.",
                ));
            };
            let rtype = params.get("Type").map(|t| t.to_ascii_uppercase());
            let size = params
                .get("PageSize")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(20);
            if !(1..=500).contains(&size) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "InvalidPageSize",
                    "PageSize must be 1 to 500.",
                ));
            }
            let number = params
                .get("PageNumber")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(1)
                .max(1);
            let matching: Vec<&Record> = state
                .records
                .values()
                .filter(|r| r.domain == domain && r.rr.eq_ignore_ascii_case(&rr))
                .filter(|r| rtype.as_ref().is_none_or(|t| *t == r.rtype))
                .collect();
            let page: Vec<Value> = matching
                .iter()
                .skip((number - 1) * size)
                .take(size)
                .map(|r| r.json())
                .collect();
            Ok(ok(json!({
                "TotalCount": matching.len(), "PageNumber": number, "PageSize": size,
                "DomainRecords": { "Record": page },
            })))
        }
        "AddDomainRecord" => {
            let domain = normalize(param(params, "DomainName")?);
            if !state.domains.contains(&domain) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "InvalidDomainName.NoExist",
                    "The specified domain name does not exist.",
                ));
            }
            let rtype = param(params, "Type")?.to_ascii_uppercase();
            let value = param(params, "Value")?.to_owned();
            AliDnsState::checked_value(&rtype, &value, ttl(params))?;
            state.next_id += 1;
            let record = Record {
                id: state.next_id,
                domain,
                rr: param(params, "RR")?.to_ascii_lowercase(),
                rtype,
                value,
                ttl: ttl(params),
                enabled: true,
                weight: 1,
            };
            if state.duplicate_of(&record) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "DomainRecordDuplicate",
                    "The DNS record already exists.",
                ));
            }
            state.records.insert(record.id, record.clone());
            Ok(ok(json!({ "RecordId": record.id.to_string() })))
        }
        "UpdateDomainRecord" => {
            let existing = record_of(state, params)?;
            let rtype = param(params, "Type")?.to_ascii_uppercase();
            let value = param(params, "Value")?.to_owned();
            AliDnsState::checked_value(&rtype, &value, ttl(params))?;
            let updated = Record {
                rr: param(params, "RR")?.to_ascii_lowercase(),
                rtype,
                value,
                ttl: ttl(params),
                ..existing.clone()
            };
            if updated == existing || state.duplicate_of(&updated) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "DomainRecordDuplicate",
                    "The DNS record already exists.",
                ));
            }
            state.records.insert(updated.id, updated.clone());
            Ok(ok(json!({ "RecordId": updated.id.to_string() })))
        }
        "DeleteDomainRecord" => {
            let existing = record_of(state, params)?;
            state.records.remove(&existing.id);
            Ok(ok(json!({ "RecordId": existing.id.to_string() })))
        }
        "SetDomainRecordStatus" => {
            let mut existing = record_of(state, params)?;
            existing.enabled = match param(params, "Status")? {
                "Enable" => true,
                "Disable" => false,
                _ => {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "InvalidStatus",
                        "Status must be Enable or Disable.",
                    ));
                }
            };
            let status = if existing.enabled {
                "ENABLE"
            } else {
                "DISABLE"
            };
            state.records.insert(existing.id, existing);
            Ok(ok(json!({ "Status": status })))
        }
        "SetDNSSLBStatus" => {
            let sub = normalize(param(params, "SubDomain")?);
            let open = params.get("Open").is_none_or(|o| o == "true");
            if open {
                state.slb.insert(sub.clone());
            } else {
                state.slb.remove(&sub);
            }
            let count = state.records.values().filter(|r| r.name() == sub).count();
            Ok(ok(json!({ "RecordCount": count, "Open": open })))
        }
        "DescribeDNSSLBSubDomains" => {
            let domain = normalize(param(params, "DomainName")?);
            let mut names: BTreeMap<String, usize> = BTreeMap::new();
            for record in state.records.values().filter(|r| r.domain == domain) {
                *names.entry(record.name()).or_default() += 1;
            }
            let listed: Vec<Value> = names
                .iter()
                .filter(|(name, _)| state.slb.contains(*name))
                .map(|(name, count)| json!({ "SubDomain": name, "RecordCount": count, "Open": true, "Type": "A" }))
                .collect();
            Ok(ok(
                json!({ "TotalCount": listed.len(), "PageNumber": 1, "PageSize": 100, "SlbSubDomains": { "SlbSubDomain": listed } }),
            ))
        }
        "UpdateDNSSLBWeight" => {
            let mut existing = record_of(state, params)?;
            if !state.slb.contains(&existing.name()) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "DisableDNSSLB",
                    "Weighted round robin is not enabled for this subdomain.",
                ));
            }
            let weight = param(params, "Weight")?.parse::<u32>().unwrap_or(0);
            if !(1..=100).contains(&weight) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "InvalidWeight",
                    "Weight must be 1 to 100.",
                ));
            }
            existing.weight = weight;
            state.records.insert(existing.id, existing);
            Ok(ok(json!({})))
        }
        other => Err(fail(
            StatusCode::NOT_FOUND,
            "InvalidAction.NotFound",
            &format!("Specified api {other} is not found."),
        )),
    }
}

async fn rpc(State(state): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let params: BTreeMap<String, String> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect();
    let mut state = lock(&state);
    match handle(&mut state, &params) {
        Ok(answer) | Err(answer) => answer,
    }
}

/// The AliDNS stand-in.
#[derive(Debug)]
pub struct AliDns {
    server: Server,
    state: Shared,
}

impl AliDns {
    /// Hosts `domains` for the key `key_id` / `secret`.
    pub fn start(key_id: &str, secret: &str, domains: &[&str]) -> AliDns {
        let state = Arc::new(Mutex::new(AliDnsState {
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
            domains: domains.iter().map(|d| normalize(d)).collect(),
            records: BTreeMap::new(),
            next_id: 1000,
            slb: HashSet::new(),
            nonces: HashSet::new(),
            pass_writes: 0,
            throttle_writes: 0,
            write_calls: 0,
            read_calls: 0,
            write_log: Vec::new(),
        }));
        let router = Router::new()
            .route("/", get(rpc))
            .with_state(Arc::clone(&state));
        AliDns {
            server: serve(router),
            state,
        }
    }

    pub fn endpoint(&self) -> String {
        self.server.url.clone()
    }

    pub fn state(&self) -> MutexGuard<'_, AliDnsState> {
        lock(&self.state)
    }

    /// The records of full name `name`, sorted by type and value.
    pub fn records(&self, name: &str) -> Vec<Record> {
        let mut found: Vec<Record> = self
            .state()
            .records
            .values()
            .filter(|r| r.name() == normalize(name))
            .cloned()
            .collect();
        found.sort_by(|a, b| (&a.rtype, &a.value).cmp(&(&b.rtype, &b.value)));
        found
    }

    /// A record made by hand (not counted).
    pub fn add(&self, domain: &str, rr: &str, rtype: &str, value: &str) {
        let mut state = self.state();
        state.next_id += 1;
        let id = state.next_id;
        state.records.insert(
            id,
            Record {
                id,
                domain: normalize(domain),
                rr: rr.to_owned(),
                rtype: rtype.to_owned(),
                value: value.to_owned(),
                ttl: 600,
                enabled: true,
                weight: 1,
            },
        );
    }

    /// Changes the value of `name`'s record `from` by hand.
    pub fn edit(&self, name: &str, from: &str, to: &str) {
        let mut state = self.state();
        let record = state
            .records
            .values_mut()
            .find(|r| r.name() == normalize(name) && r.value == from)
            .expect("the record to edit");
        record.value = to.to_owned();
    }
}

/// Parses a query string the way the stand-in does (for tests).
pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}
