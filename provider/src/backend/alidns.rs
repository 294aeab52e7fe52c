//! Alibaba Cloud DNS (AliDNS) as a backend: its RPC API version
//! `2015-01-09`, every request signed with signature v1 (HMAC-SHA1 over the
//! canonical query, [`signature`]).
//!
//! - **Records**: one record per address, its weight scaled by the core to
//!   1..=100 for weighted round robin (`UpdateDNSSLBWeight`); weight 0 is a
//!   disabled record (`SetDomainRecordStatus`). Weighted round robin is
//!   switched on for the name (`SetDNSSLBStatus`) before the first weight is
//!   written, when it is off.
//! - **Ownership**: the TXT registry record `_neutral-<type>.<domain>`
//!   ([`crate::records::registry_text`]); AliDNS records carry a remark only
//!   through a separate call per record, so the registry is the marker.
//!   While it says this deployment owns the name and type, every record of
//!   that name and type is its own; without it, none is.
//! - **Listing**: `DescribeSubDomainRecords` page by page.
//! - **Writes**: one call per record and attribute, as the API has no batch
//!   of these: `AddDomainRecord`, `UpdateDomainRecord` (only when the value
//!   or TTL changed: AliDNS refuses an update that changes nothing),
//!   `DeleteDomainRecord`, `SetDomainRecordStatus`, `UpdateDNSSLBWeight`
//!   (only when the weight changed). A record replaced by another of the
//!   same name is updated in place (its weight kept), not deleted and added.
//!   Throttling answers are retried with backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use neutral_core::backend_calls::Call;
use neutral_core::dnsplan::batch;
use neutral_core::dnsplan::{Change, DnsPlan, RecordKey, RecordSet, normalize_name};
use neutral_core::model::DnsBackendKind;
use serde::Deserialize;
use serde_json::Value as Json;

use super::{
    Applied, BackendError, DnsBackend, Listing, Native, Request, RetryPolicy, Target, Try,
    with_retries,
};
use crate::client::ClientError;
use crate::records;
use crate::secret::Secret;

pub const DEFAULT_ENDPOINT: &str = "https://alidns.aliyuncs.com";
pub const VERSION: &str = "2015-01-09";
/// `DescribeSubDomainRecords` returns at most 500 records a page.
const PAGE: usize = 500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliDnsConfig {
    /// Base URL of the RPC API, without a trailing slash.
    pub endpoint: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub owner_id: String,
}

/// RFC 3986 percent-encoding as signature v1 wants it: unreserved
/// characters stay, everything else is `%XY` (a space is `%20`).
pub fn percent_encode(text: &str) -> String {
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

/// The canonicalized query string: parameters sorted by name, names and
/// values percent-encoded, joined with `&`.
pub fn canonical_query(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .filter(|(name, _)| name.as_str() != "Signature")
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Signature v1 of a request with `params` sent by `method`:
/// `Base64(HMAC-SHA1(secret + "&", method + "&%2F&" + encode(canonical)))`.
pub fn signature(method: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
    let string_to_sign = format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    );
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{secret}&").as_bytes(),
    );
    let tag = ring::hmac::sign(&key, string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// A record as `DescribeSubDomainRecords` returns it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct AliRecord {
    pub record_id: String,
    #[serde(rename = "RR")]
    pub rr: String,
    #[serde(rename = "Type")]
    pub rtype: String,
    pub value: String,
    #[serde(rename = "TTL", default)]
    pub ttl: u32,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub weight: Option<u32>,
}

impl AliRecord {
    fn enabled(&self) -> bool {
        !self.status.eq_ignore_ascii_case("DISABLE")
    }
}

/// What a listing keeps for writing: each listed set's record.
#[derive(Clone, Debug)]
pub struct Listed {
    records: BTreeMap<RecordKey, AliRecord>,
}

#[derive(Clone, Debug)]
pub struct AliDns {
    config: Arc<AliDnsConfig>,
    http: reqwest::Client,
    retry: RetryPolicy,
}

/// The relative name of `domain` in `zone` (`@` for the apex).
fn rr_of(domain: &str, zone: &str) -> String {
    let domain = normalize_name(domain);
    let zone = normalize_name(zone);
    if domain == zone {
        return "@".to_owned();
    }
    domain
        .strip_suffix(&format!(".{zone}"))
        .unwrap_or(&domain)
        .to_owned()
}

/// Error codes that mean "not now".
fn is_throttling(status: u16, code: &str) -> bool {
    status == 429 || status == 503 || code.starts_with("Throttling") || code == "ServiceUnavailable"
}

/// A unique `SignatureNonce`: the time, the process and a counter.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl AliDns {
    pub fn new(config: AliDnsConfig) -> Result<AliDns, ClientError> {
        Ok(AliDns {
            config: Arc::new(config),
            http: super::http_client()?,
            retry: RetryPolicy::default(),
        })
    }

    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> AliDns {
        self.retry = retry;
        self
    }

    /// One action with its parameters, signed afresh on every try; the
    /// answer and the number of tries.
    async fn call(
        &self,
        action: &str,
        params: &[(&str, String)],
    ) -> (Result<Json, BackendError>, usize) {
        let request = Request {
            backend: DnsBackendKind::Alidns,
            call: if action.starts_with("Describe") {
                Call::Read
            } else {
                Call::Write
            },
            what: action,
        };
        with_retries(request, self.retry, || async {
            let mut query: BTreeMap<String, String> = params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            for (name, value) in [
                ("Action", action.to_owned()),
                ("Format", "JSON".to_owned()),
                ("Version", VERSION.to_owned()),
                ("AccessKeyId", self.config.access_key_id.clone()),
                ("SignatureMethod", "HMAC-SHA1".to_owned()),
                ("SignatureVersion", "1.0".to_owned()),
                ("SignatureNonce", nonce()),
                (
                    "Timestamp",
                    humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                ),
            ] {
                query.insert(name.to_owned(), value);
            }
            let signed = signature("GET", &query, self.config.access_key_secret.expose());
            let url = format!(
                "{}/?{}&Signature={}",
                self.config.endpoint,
                canonical_query(&query),
                percent_encode(&signed)
            );
            let shown = format!("{}/?Action={action}", self.config.endpoint);
            let answer = match super::send(self.http.get(&url), &shown).await {
                Ok(answer) => answer,
                Err(error) => return Try::Failed(error.into()),
            };
            let body: Json = serde_json::from_str(&answer.body).unwrap_or(Json::Null);
            if (200..300).contains(&answer.status) {
                return Try::Done(body);
            }
            let code = body["Code"].as_str().unwrap_or("").to_owned();
            let error = BackendError::Api(format!(
                "AliDNS refused {action}: {} {code}: {}",
                answer.status,
                body["Message"]
                    .as_str()
                    .map_or_else(|| super::excerpt(&answer.body), str::to_owned)
            ));
            if is_throttling(answer.status, &code) {
                Try::Again {
                    error,
                    after: answer.retry_after,
                }
            } else {
                Try::Failed(error)
            }
        })
        .await
    }

    /// A write call; its tries are counted in `applied`.
    async fn write(
        &self,
        applied: &mut Applied,
        action: &str,
        params: &[(&str, String)],
    ) -> Result<Json, BackendError> {
        let (result, tries) = self.call(action, params).await;
        applied.write_calls = applied.write_calls.saturating_add(tries);
        result
    }

    /// Every record of `domain` and `rtype` in `zone`; `None` when AliDNS
    /// does not host the zone.
    async fn records(
        &self,
        zone: &str,
        domain: &str,
        rtype: &str,
    ) -> Result<Option<Vec<AliRecord>>, BackendError> {
        let mut all = Vec::new();
        let mut page = 1usize;
        loop {
            let params = [
                ("DomainName", normalize_name(zone)),
                ("SubDomain", normalize_name(domain)),
                ("Type", rtype.to_owned()),
                ("PageNumber", page.to_string()),
                ("PageSize", PAGE.to_string()),
            ];
            let body = match self.call("DescribeSubDomainRecords", &params).await.0 {
                Ok(body) => body,
                Err(BackendError::Api(message))
                    if message.contains("InvalidDomainName.NoExist")
                        || message.contains("IncorrectDomainUser") =>
                {
                    return Ok(None);
                }
                Err(err) => return Err(err),
            };
            let listed: Vec<AliRecord> =
                serde_json::from_value(body["DomainRecords"]["Record"].clone()).unwrap_or_default();
            let count = listed.len();
            let want = rr_of(domain, zone);
            all.extend(
                listed
                    .into_iter()
                    .filter(|r| r.rr.eq_ignore_ascii_case(&want))
                    .filter(|r| r.rtype.eq_ignore_ascii_case(rtype)),
            );
            let total = body["TotalCount"].as_u64().unwrap_or(0);
            let seen = u64::try_from(page.saturating_mul(PAGE)).unwrap_or(u64::MAX);
            if count == 0 || seen >= total {
                return Ok(Some(all));
            }
            page += 1;
        }
    }

    /// Whether weighted round robin is on for `domain`.
    async fn slb_open(&self, zone: &str, domain: &str) -> Result<bool, BackendError> {
        let mut page = 1usize;
        loop {
            let params = [
                ("DomainName", normalize_name(zone)),
                ("PageNumber", page.to_string()),
                ("PageSize", "100".to_owned()),
            ];
            let body = self.call("DescribeDNSSLBSubDomains", &params).await.0?;
            let listed = body["SlbSubDomains"]["SlbSubDomain"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let name = normalize_name(domain);
            if let Some(found) = listed
                .iter()
                .find(|s| s["SubDomain"].as_str().map(normalize_name).as_deref() == Some(&name))
            {
                return Ok(found["Open"].as_bool().unwrap_or(false));
            }
            let total = body["TotalCount"].as_u64().unwrap_or(0);
            if listed.is_empty() || u64::try_from(page * 100).unwrap_or(u64::MAX) >= total {
                return Ok(false);
            }
            page += 1;
        }
    }
}

/// A listed record as the core's record set: keyed by its value; a
/// disabled `A`/`AAAA` record has weight 0.
fn record_set(record: &AliRecord, name: &str, registry: bool) -> RecordSet {
    RecordSet {
        name: normalize_name(name),
        rtype: record.rtype.to_ascii_uppercase(),
        set_id: (!registry).then(|| record.value.clone()),
        ttl: record.ttl,
        values: vec![record.value.clone()],
        weight: (!registry).then(|| {
            if record.enabled() {
                record.weight.unwrap_or(1)
            } else {
                0
            }
        }),
        owner: None,
    }
}

#[async_trait]
impl DnsBackend for AliDns {
    fn kind(&self) -> DnsBackendKind {
        DnsBackendKind::Alidns
    }

    fn owner(&self) -> &str {
        &self.config.owner_id
    }

    fn desired(&self, target: &Target<'_>, records: Vec<RecordSet>) -> Vec<RecordSet> {
        super::with_registry(self.kind(), self.owner(), target, records)
    }

    async fn list(&self, target: &Target<'_>) -> Result<Option<Listing>, BackendError> {
        let registry_name = records::registry_name(target.domain, target.rtype);
        let Some(registry_records) = self.records(target.zone, &registry_name, "TXT").await? else {
            return Ok(None);
        };
        let listed = self
            .records(target.zone, target.domain, target.rtype.as_str())
            .await?
            .unwrap_or_default();
        let mut registry = None;
        let mut sets = Vec::new();
        let mut by_key = BTreeMap::new();
        for record in &registry_records {
            let mut set = record_set(record, &registry_name, true);
            let found = records::parse_registry(&record.value, target.rtype);
            set.owner = found.as_ref().map(|r| r.owner.clone());
            if found.is_some() && registry.is_none() {
                registry = found;
            }
            if by_key.insert(set.key(), record.clone()).is_none() {
                sets.push(set);
            }
        }
        let owner = registry.as_ref().map(|r| r.owner.clone());
        for record in &listed {
            let mut set = record_set(record, target.domain, false);
            set.owner.clone_from(&owner);
            by_key.insert(set.key(), record.clone());
            sets.push(set);
        }
        let policy = registry
            .filter(|r| r.owner == self.config.owner_id)
            .and_then(|r| r.policy);
        Ok(Some(Listing {
            sets,
            policy,
            native: Native::of(Listed { records: by_key }),
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
                "an AliDNS apply needs an AliDNS listing".to_owned(),
            ));
        };
        let lock = super::zone_lock(self.kind(), target.zone);
        let _held = lock.lock().await;
        let mut applied = Applied::default();
        let mut slb: Option<bool> = None;
        let zone = normalize_name(target.zone);
        let registry = super::registry_key(target);
        let ordered =
            batch::pair_replacements(&batch::write_order(plan, Some(&registry)), Some(&registry));
        for change in ordered {
            let (record, native) = match &change {
                Change::Create { record } => (record, None),
                Change::Update { from, to } => (to, listed.records.get(&from.key())),
                Change::Delete { record } => {
                    let Some(native) = listed.records.get(&record.key()) else {
                        continue;
                    };
                    self.write(
                        &mut applied,
                        "DeleteDomainRecord",
                        &[("RecordId", native.record_id.clone())],
                    )
                    .await?;
                    continue;
                }
            };
            let value = record.values.first().cloned().unwrap_or_default();
            let rr = rr_of(&record.name, &zone);
            let id = match native {
                None => {
                    let answer = self
                        .write(
                            &mut applied,
                            "AddDomainRecord",
                            &[
                                ("DomainName", zone.clone()),
                                ("RR", rr),
                                ("Type", record.rtype.clone()),
                                ("Value", value),
                                ("TTL", record.ttl.to_string()),
                            ],
                        )
                        .await?;
                    answer["RecordId"].as_str().unwrap_or("").to_owned()
                }
                Some(native) => {
                    if native.value != value || native.ttl != record.ttl {
                        self.write(
                            &mut applied,
                            "UpdateDomainRecord",
                            &[
                                ("RecordId", native.record_id.clone()),
                                ("RR", rr),
                                ("Type", record.rtype.clone()),
                                ("Value", value),
                                ("TTL", record.ttl.to_string()),
                            ],
                        )
                        .await?;
                    }
                    native.record_id.clone()
                }
            };
            let Some(weight) = record.weight else {
                continue;
            };
            let (was_enabled, was_weight) =
                native.map_or((true, 1), |n| (n.enabled(), n.weight.unwrap_or(1)));
            if weight == 0 {
                if was_enabled {
                    self.write(
                        &mut applied,
                        "SetDomainRecordStatus",
                        &[("RecordId", id.clone()), ("Status", "Disable".to_owned())],
                    )
                    .await?;
                }
                continue;
            }
            if !was_enabled {
                self.write(
                    &mut applied,
                    "SetDomainRecordStatus",
                    &[("RecordId", id.clone()), ("Status", "Enable".to_owned())],
                )
                .await?;
            }
            if was_weight != weight {
                if slb.is_none() {
                    slb = Some(self.slb_open(&zone, target.domain).await?);
                }
                if slb == Some(false) {
                    self.write(
                        &mut applied,
                        "SetDNSSLBStatus",
                        &[
                            ("DomainName", zone.clone()),
                            ("SubDomain", normalize_name(target.domain)),
                            ("Type", record.rtype.clone()),
                            ("Open", "true".to_owned()),
                        ],
                    )
                    .await?;
                    slb = Some(true);
                }
                self.write(
                    &mut applied,
                    "UpdateDNSSLBWeight",
                    &[("RecordId", id), ("Weight", weight.to_string())],
                )
                .await?;
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature example of Alibaba Cloud DNS' API reference
    /// (`DescribeDomainRecords` for example.com, key `testid`, secret
    /// `testsecret`).
    #[test]
    fn signature_v1_matches_the_alidns_documentation_example() {
        let params: BTreeMap<String, String> = [
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeDomainRecords"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("DomainName", "example.com"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "f59ed6a9-83fc-473b-9cc6-99c95df3856e"),
            ("Version", "2015-01-09"),
            ("Timestamp", "2016-03-24T16:41:54Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            canonical_query(&params),
            "AccessKeyId=testid&Action=DescribeDomainRecords&DomainName=example.com&Format=XML\
             &SignatureMethod=HMAC-SHA1&SignatureNonce=f59ed6a9-83fc-473b-9cc6-99c95df3856e\
             &SignatureVersion=1.0&Timestamp=2016-03-24T16%3A41%3A54Z&Version=2015-01-09"
        );
        assert_eq!(
            signature("GET", &params, "testsecret"),
            "uRpHwaSEt3J+6KQD//svCh/x+pI="
        );
    }

    #[test]
    fn encoding_follows_rfc_3986() {
        assert_eq!(percent_encode("a b*~+/é"), "a%20b%2A~%2B%2F%C3%A9");
    }

    #[test]
    fn relative_names_and_disabled_records() {
        assert_eq!(rr_of("app.example.com", "example.com"), "app");
        assert_eq!(rr_of("example.com", "example.com"), "@");
        assert_eq!(
            rr_of("_neutral-a.app.example.com", "example.com"),
            "_neutral-a.app"
        );
        let record = AliRecord {
            record_id: "1".into(),
            rr: "app".into(),
            rtype: "A".into(),
            value: "192.0.2.1".into(),
            ttl: 600,
            status: "DISABLE".into(),
            weight: Some(40),
        };
        let set = record_set(&record, "app.example.com", false);
        assert_eq!(set.weight, Some(0));
        assert_eq!(set.set_id.as_deref(), Some("192.0.2.1"));
    }

    #[test]
    fn throttling_codes_are_transient() {
        assert!(is_throttling(400, "Throttling.User"));
        assert!(is_throttling(503, ""));
        assert!(!is_throttling(400, "DomainRecordDuplicate"));
    }
}
