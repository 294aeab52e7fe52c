//! Cloudflare as a backend: its v4 REST API with a bearer token.
//!
//! - **Records**: one plain `A`/`AAAA` record per address whose weight is
//!   positive. Cloudflare's DNS has no weights: every record is answered
//!   alike, so the weights only decide which nodes are in (documented in
//!   the resource's docs). Records are never proxied. TTL 1 means
//!   "automatic"; otherwise 60 and up.
//! - **Ownership**: each record's `comment` reads
//!   `heritage=neutral,owner=<owner id>` ([`marker`]); records with any
//!   other comment are never changed. The policy an import needs lives in
//!   the TXT registry record `_neutral-<type>.<domain>`, itself marked.
//! - **Listing**: `GET /zones?name=` once per zone and process, then
//!   `GET /zones/{id}/dns_records?name=&type=` page by page.
//! - **Writes**: `POST /zones/{id}/dns_records/batch`, which Cloudflare runs
//!   in one transaction as deletes → patches → puts → posts; the core's
//!   write order is packed into batches of at most the plan's batch size
//!   (200 on the Free plan, 3,500 on the others); a record replaced by
//!   another of the same name is patched rather than deleted and posted,
//!   one operation instead of two. A record is posted only
//!   when no record of its address exists, so an identical record is never
//!   posted. A 429 is retried after its `Retry-After`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use neutral_core::backend_calls::Call;
use neutral_core::dnsplan::batch::{self, BatchLimits};
use neutral_core::dnsplan::{Change, DnsPlan, RecordKey, RecordSet, normalize_name};
use neutral_core::model::DnsBackendKind;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{
    Applied, BackendError, DnsBackend, Listing, Native, Request, RetryPolicy, Target, Try,
    with_retries,
};
use crate::client::ClientError;
use crate::records;
use crate::secret::Secret;

pub const DEFAULT_API_URL: &str = "https://api.cloudflare.com/client/v4";
/// The Free plan's batch size; Pro and up take 3,500.
pub const DEFAULT_BATCH_SIZE: usize = 200;
/// Records asked for per page of a listing.
const PAGE: usize = 500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudflareConfig {
    /// Base URL of the v4 API, without a trailing slash.
    pub api_url: String,
    pub api_token: Secret,
    /// The most operations one batch call may hold (the zone plan's limit).
    pub batch_size: usize,
    pub owner_id: String,
}

/// The ownership comment of a record written for `owner`.
pub fn marker(owner: &str) -> String {
    format!("heritage=neutral,owner={owner}")
}

/// The owner a record's comment names, if it is neutral's marker.
pub fn marker_owner(comment: &str) -> Option<&str> {
    let rest = comment.trim().strip_prefix("heritage=neutral,owner=")?;
    let owner = rest.split(',').next().unwrap_or(rest).trim();
    (!owner.is_empty()).then_some(owner)
}

/// A DNS record as the API returns it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CfRecord {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub content: String,
    #[serde(default)]
    pub ttl: u32,
    #[serde(default)]
    pub comment: Option<String>,
}

/// What a listing keeps for writing: the zone id and the record id of each
/// listed set.
#[derive(Clone, Debug)]
pub struct Listed {
    zone_id: String,
    ids: BTreeMap<RecordKey, String>,
}

#[derive(Clone, Debug)]
pub struct Cloudflare {
    config: Arc<CloudflareConfig>,
    http: reqwest::Client,
    retry: RetryPolicy,
    zone_ids: Arc<Mutex<HashMap<String, String>>>,
}

/// The API's envelope.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Json,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct ResultInfo {
    #[serde(default)]
    total_pages: u64,
}

fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A listed record as the core's record set: keyed by its content, which
/// for the registry record is its text without quotes.
fn record_set(record: &CfRecord, rtype_registry: bool) -> RecordSet {
    let content = if rtype_registry {
        records::unquote_txt(&record.content)
    } else {
        record.content.clone()
    };
    RecordSet {
        name: normalize_name(&record.name),
        rtype: record.rtype.to_ascii_uppercase(),
        set_id: (!rtype_registry).then(|| content.clone()),
        ttl: record.ttl,
        values: vec![content],
        weight: None,
        owner: None,
    }
}

impl Cloudflare {
    pub fn new(config: CloudflareConfig) -> Result<Cloudflare, ClientError> {
        Ok(Cloudflare {
            config: Arc::new(config),
            http: super::http_client()?,
            retry: RetryPolicy::default(),
            zone_ids: Arc::default(),
        })
    }

    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Cloudflare {
        self.retry = retry;
        self
    }

    /// One request, tried again on 429 and 5xx; the envelope and the
    /// number of tries.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> (Result<Envelope, BackendError>, usize) {
        let url = format!("{}{path}", self.config.api_url);
        let what = format!("{method} {path}");
        let request = Request {
            backend: DnsBackendKind::Cloudflare,
            call: if method == reqwest::Method::GET {
                Call::Read
            } else {
                Call::Write
            },
            what: &what,
        };
        with_retries(request, self.retry, || async {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.config.api_token.expose());
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = match super::send(request, &url).await {
                Ok(answer) => answer,
                Err(error) => return Try::Failed(error.into()),
            };
            let envelope: Option<Envelope> = serde_json::from_str(&answer.body).ok();
            let ok = (200..300).contains(&answer.status);
            match envelope {
                Some(envelope) if ok && envelope.success => Try::Done(envelope),
                envelope => {
                    let errors: Vec<String> = envelope
                        .map(|e| e.errors)
                        .unwrap_or_default()
                        .iter()
                        .map(|e| format!("{} {}", e.code, e.message))
                        .collect();
                    let detail = if errors.is_empty() {
                        super::excerpt(&answer.body)
                    } else {
                        errors.join("; ")
                    };
                    let error = BackendError::Api(format!(
                        "Cloudflare refused {what}: {} {detail}",
                        answer.status
                    ));
                    if answer.status == 429 || answer.status >= 500 {
                        Try::Again {
                            error,
                            after: answer.retry_after,
                        }
                    } else {
                        Try::Failed(error)
                    }
                }
            }
        })
        .await
    }

    async fn zone_id(&self, zone: &str) -> Result<Option<String>, BackendError> {
        let cached = self
            .zone_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(zone)
            .cloned();
        if let Some(id) = cached {
            return Ok(Some(id));
        }
        let path = format!("/zones?name={}", query_value(zone));
        let envelope = self.call(reqwest::Method::GET, &path, None).await.0?;
        let id = envelope
            .result
            .as_array()
            .and_then(|zones| {
                zones.iter().find(|z| {
                    z["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(zone))
                })
            })
            .and_then(|z| z["id"].as_str())
            .map(str::to_owned);
        if let Some(id) = &id {
            self.zone_ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(zone.to_owned(), id.clone());
        }
        Ok(id)
    }

    /// Every record of `name` and `rtype`, page by page.
    async fn records(
        &self,
        zone_id: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<CfRecord>, BackendError> {
        let mut all = Vec::new();
        let mut page: u64 = 1;
        loop {
            let path = format!(
                "/zones/{}/dns_records?name={}&type={rtype}&per_page={PAGE}&page={page}",
                query_value(zone_id),
                query_value(name)
            );
            let envelope = self.call(reqwest::Method::GET, &path, None).await.0?;
            let records: Vec<CfRecord> = serde_json::from_value(envelope.result).map_err(|e| {
                BackendError::Api(format!("Cloudflare listed records it cannot read: {e}"))
            })?;
            let empty = records.is_empty();
            all.extend(
                records
                    .into_iter()
                    .filter(|r| normalize_name(&r.name) == normalize_name(name))
                    .filter(|r| r.rtype.eq_ignore_ascii_case(rtype)),
            );
            let pages = envelope.result_info.map_or(1, |i| i.total_pages);
            if empty || page >= pages {
                return Ok(all);
            }
            page += 1;
        }
    }

    /// A record as the API writes it.
    fn body_of(&self, record: &RecordSet) -> Json {
        let content = record.values.first().cloned().unwrap_or_default();
        let mut body = json!({
            "name": normalize_name(&record.name),
            "type": record.rtype.to_ascii_uppercase(),
            "content": content,
            "ttl": record.ttl,
            "comment": marker(&self.config.owner_id),
        });
        if !records::is_registry(record) {
            body["proxied"] = Json::Bool(false);
        }
        body
    }
}

#[async_trait]
impl DnsBackend for Cloudflare {
    fn kind(&self) -> DnsBackendKind {
        DnsBackendKind::Cloudflare
    }

    fn owner(&self) -> &str {
        &self.config.owner_id
    }

    fn desired(&self, target: &Target<'_>, records: Vec<RecordSet>) -> Vec<RecordSet> {
        super::with_registry(self.kind(), self.owner(), target, records)
    }

    async fn list(&self, target: &Target<'_>) -> Result<Option<Listing>, BackendError> {
        let Some(zone_id) = self.zone_id(target.zone).await? else {
            return Ok(None);
        };
        let registry_name = records::registry_name(target.domain, target.rtype);
        let registry_records = self.records(&zone_id, &registry_name, "TXT").await?;
        let records = self
            .records(&zone_id, target.domain, target.rtype.as_str())
            .await?;
        let mut sets = Vec::new();
        let mut ids = BTreeMap::new();
        let mut policy = None;
        for record in &registry_records {
            let mut set = record_set(record, true);
            let said = set
                .values
                .first()
                .and_then(|v| records::parse_registry(v, target.rtype));
            let marked = record.comment.as_deref().and_then(marker_owner);
            // Neutral's when the comment and the text name the same owner.
            set.owner = match (&said, marked) {
                (Some(registry), Some(owner)) if registry.owner == owner => Some(owner.to_owned()),
                _ => None,
            };
            if set.owner.as_deref() == Some(self.owner()) && policy.is_none() {
                policy = said.and_then(|r| r.policy);
            }
            if ids.insert(set.key(), record.id.clone()).is_none() {
                sets.push(set);
            }
        }
        for record in &records {
            let mut set = record_set(record, false);
            set.owner = record
                .comment
                .as_deref()
                .and_then(marker_owner)
                .map(str::to_owned);
            if ids.contains_key(&set.key()) {
                // A second record of one address: keyed apart, so the plan
                // deletes it when it is ours.
                set.set_id = Some(format!("{} {}", record.content, record.id));
            }
            ids.insert(set.key(), record.id.clone());
            sets.push(set);
        }
        Ok(Some(Listing {
            sets,
            policy,
            native: Native::of(Listed { zone_id, ids }),
        }))
    }

    async fn apply(
        &self,
        target: &Target<'_>,
        listing: &Listing,
        plan: &DnsPlan,
        _desired: &[RecordSet],
    ) -> Result<Applied, BackendError> {
        if plan.is_empty() {
            return Ok(Applied::default());
        }
        let Some(listed) = listing.native.get::<Listed>() else {
            return Err(BackendError::Api(
                "a Cloudflare apply needs a Cloudflare listing".to_owned(),
            ));
        };
        let registry = super::registry_key(target);
        let ordered =
            batch::pair_replacements(&batch::write_order(plan, Some(&registry)), Some(&registry));
        let limits = BatchLimits::changes(self.config.batch_size.max(1));
        let calls = batch::batches(&ordered, &limits)?;
        let lock = super::zone_lock(self.kind(), &listed.zone_id);
        let _held = lock.lock().await;
        let path = format!("/zones/{}/dns_records/batch", query_value(&listed.zone_id));
        let mut applied = Applied::default();
        for changes in calls {
            let (mut deletes, mut patches, mut posts) = (Vec::new(), Vec::new(), Vec::new());
            for change in &changes {
                let id = |key: &RecordKey| {
                    listed.ids.get(key).cloned().ok_or_else(|| {
                        BackendError::Api(format!("no listed Cloudflare record for {key}"))
                    })
                };
                match change {
                    Change::Create { record } => posts.push(self.body_of(record)),
                    Change::Update { from, to } => {
                        let mut body = self.body_of(to);
                        body["id"] = Json::String(id(&from.key())?);
                        patches.push(body);
                    }
                    Change::Delete { record } => deletes.push(json!({ "id": id(&record.key())? })),
                }
            }
            let body = json!({ "deletes": deletes, "patches": patches, "posts": posts });
            let (result, tries) = self.call(reqwest::Method::POST, &path, Some(&body)).await;
            applied.write_calls = applied.write_calls.saturating_add(tries);
            result?;
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_its_owner_and_nothing_else_passes() {
        assert_eq!(marker("prod"), "heritage=neutral,owner=prod");
        assert_eq!(marker_owner(&marker("prod")), Some("prod"));
        assert_eq!(marker_owner("heritage=neutral,owner="), None);
        assert_eq!(marker_owner("made by hand"), None);
        assert_eq!(marker_owner("heritage=external-dns,owner=prod"), None);
    }

    #[test]
    fn listed_records_are_keyed_by_address_and_registries_by_name() {
        let record = CfRecord {
            id: "r1".into(),
            name: "App.Example.com".into(),
            rtype: "A".into(),
            content: "192.0.2.1".into(),
            ttl: 60,
            comment: None,
        };
        let set = record_set(&record, false);
        assert_eq!(set.key().to_string(), "app.example.com A [192.0.2.1]");
        let registry = CfRecord {
            id: "r2".into(),
            name: "_neutral-a.app.example.com".into(),
            rtype: "TXT".into(),
            content: "\"heritage=neutral,owner=prod\"".into(),
            ttl: 300,
            comment: None,
        };
        let set = record_set(&registry, true);
        assert_eq!(set.set_id, None);
        assert_eq!(set.values, ["heritage=neutral,owner=prod"]);
    }
}
