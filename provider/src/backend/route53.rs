//! AWS Route53 as a backend: its REST/XML API (`2013-04-01`), every request
//! signed with SigV4 by the official `aws-sigv4` crate.
//!
//! - **Records**: one weighted record set per answering node
//!   (`SetIdentifier` = node id, `Weight` 0..=255 from the core's scaling).
//! - **Ownership**: a TXT registry record `_neutral-<type>.<domain>`
//!   ([`crate::records::registry_text`]); Route53 record sets carry no
//!   comment. While the registry says this deployment owns the name and
//!   type, every record set of that name and type is its own, so a set
//!   added by hand there is drift the next apply removes; without it, none
//!   is, and nothing there is ever changed.
//! - **Listing**: `ListHostedZonesByName` once per zone and process, then
//!   `ListResourceRecordSets` from the name and type on, page by page
//!   (`NextRecordIdentifier`), stopping at the first other name or type.
//! - **Writes**: `ChangeResourceRecordSets`, the core's write order packed
//!   into batches within Route53's limits (1,000 `ResourceRecord` elements
//!   and 32,000 `Value` characters, an `UPSERT` counting twice); each batch
//!   is all-or-nothing. Creates are `CREATE`, updates `UPSERT`, deletes
//!   `DELETE` repeating the listed record set exactly. `Throttling` and
//!   `PriorRequestNotComplete` (and a 5xx) are retried with backoff; with
//!   `wait_for_sync` each batch is followed to `INSYNC` through `GetChange`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use neutral_core::backend_calls::Call;
use neutral_core::dnsplan::batch::{self, BatchLimits};
use neutral_core::dnsplan::{Change, DnsPlan, RecordKey, RecordSet, normalize_name};
use neutral_core::model::DnsBackendKind;

use super::xml::{self, Element};
use super::{
    Applied, BackendError, DnsBackend, Listing, Native, Request, RetryPolicy, Target, Try,
    with_retries,
};
use crate::client::ClientError;
use crate::records::{self, fqdn};
use crate::secret::Secret;

pub const DEFAULT_ENDPOINT: &str = "https://route53.amazonaws.com";
/// Route53 is global; its requests are signed for `us-east-1`.
pub const DEFAULT_REGION: &str = "us-east-1";
pub const SERVICE: &str = "route53";
const API: &str = "/2013-04-01";
const NAMESPACE: &str = "https://route53.amazonaws.com/doc/2013-04-01/";
/// `ListResourceRecordSets` returns at most 300 record sets a page.
const PAGE: usize = 300;
/// The longest wait for `INSYNC`.
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);

/// AWS credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route53Config {
    /// Base URL of the API, without a trailing slash.
    pub endpoint: String,
    /// The region requests are signed for.
    pub region: String,
    pub credentials: AwsCredentials,
    /// Follow each change to `INSYNC` before the apply returns.
    pub wait_for_sync: bool,
    /// The owner id written into the registry records.
    pub owner_id: String,
}

/// The headers that sign a request: `method` on `url` with `headers` and
/// `body`, at `time`, for `service` in `region`. Adds `x-amz-date`,
/// `authorization` and, with a session token, `x-amz-security-token`.
pub fn sign_request(
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
    request: (&str, &str, &[(&str, &str)], &[u8]),
) -> Result<Vec<(String, String)>, String> {
    let (method, url, headers, body) = request;
    let identity = Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.expose().to_owned(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        None,
        "terraform-provider-neutral",
    )
    .into();
    let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign: {e}"))?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign {url}: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("cannot sign {url}: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// What a listing keeps for writing: the zone id and every listed record
/// set as Route53 sent it, so a `DELETE` repeats it exactly.
#[derive(Clone, Debug)]
pub struct Listed {
    zone_id: String,
    elements: BTreeMap<RecordKey, Element>,
}

#[derive(Clone, Debug)]
pub struct Route53 {
    config: Arc<Route53Config>,
    http: reqwest::Client,
    retry: RetryPolicy,
    zone_ids: Arc<Mutex<HashMap<String, String>>>,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
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

/// The code and message of an error answer.
fn error_of(body: &str) -> (String, String) {
    let Ok(root) = xml::parse(body) else {
        return (String::new(), super::excerpt(body));
    };
    if let Some(error) = root.child("Error") {
        return (
            error.text_of("Code").unwrap_or("").to_owned(),
            error.text_of("Message").unwrap_or("").to_owned(),
        );
    }
    let messages: Vec<&str> = root
        .child("Messages")
        .map(|m| m.all("Message").map(|m| m.text.as_str()).collect())
        .unwrap_or_default();
    (root.name.clone(), messages.join("; "))
}

/// Whether a refusal is worth another try.
fn is_transient(status: u16, code: &str) -> bool {
    status == 429
        || status >= 500
        || matches!(
            code,
            "Throttling"
                | "ThrottlingException"
                | "RequestThrottled"
                | "PriorRequestNotComplete"
                | "ServiceUnavailable"
        )
}

/// A record set as Route53's XML.
fn set_element(record: &RecordSet) -> Element {
    let mut element = Element::new("ResourceRecordSet")
        .with(Element::leaf("Name", fqdn(&record.name)))
        .with(Element::leaf("Type", record.rtype.to_ascii_uppercase()));
    if let Some(id) = &record.set_id {
        element = element.with(Element::leaf("SetIdentifier", id.clone()));
    }
    if let Some(weight) = record.weight {
        element = element.with(Element::leaf("Weight", weight.to_string()));
    }
    let mut values = Element::new("ResourceRecords");
    for value in &record.values {
        values =
            values.with(Element::new("ResourceRecord").with(Element::leaf("Value", value.clone())));
    }
    element
        .with(Element::leaf("TTL", record.ttl.to_string()))
        .with(values)
}

/// A listed record set as the core's record set (owner left out).
fn record_of(element: &Element) -> Option<RecordSet> {
    let values: Vec<String> = element
        .child("ResourceRecords")
        .map(|r| {
            r.all("ResourceRecord")
                .filter_map(|r| r.text_of("Value"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(RecordSet {
        name: normalize_name(element.text_of("Name")?),
        rtype: element.text_of("Type")?.to_ascii_uppercase(),
        set_id: element.text_of("SetIdentifier").map(str::to_owned),
        ttl: element
            .text_of("TTL")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        values,
        weight: element.text_of("Weight").and_then(|w| w.parse().ok()),
        owner: None,
    })
}

impl Route53 {
    pub fn new(config: Route53Config) -> Result<Route53, ClientError> {
        Ok(Route53 {
            config: Arc::new(config),
            http: super::http_client()?,
            retry: RetryPolicy::default(),
            zone_ids: Arc::default(),
        })
    }

    /// The same backend with another retry policy (tests use short pauses).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Route53 {
        self.retry = retry;
        self
    }

    /// One signed request; the answer whatever its status.
    async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: &str,
    ) -> Result<super::Answer, BackendError> {
        let url = format!("{}{path_and_query}", self.config.endpoint);
        let content_type = [("content-type", "application/xml")];
        let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &content_type };
        let signed = sign_request(
            &self.config.credentials,
            &self.config.region,
            SERVICE,
            SystemTime::now(),
            (method, &url, headers, body.as_bytes()),
        )
        .map_err(BackendError::Api)?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| BackendError::Api(e.to_string()))?;
        let mut request = self.http.request(method, &url);
        for (name, value) in headers.iter().copied() {
            request = request.header(name, value);
        }
        for (name, value) in &signed {
            request = request.header(name.as_str(), value.as_str());
        }
        if !body.is_empty() {
            request = request.body(body.to_owned());
        }
        Ok(super::send(request, &url).await?)
    }

    /// A request tried again while Route53 refuses it for now; the parsed
    /// answer and the number of tries.
    async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: &str,
    ) -> (Result<Element, BackendError>, usize) {
        let what = format!("{method} {path_and_query}");
        let request = Request {
            backend: DnsBackendKind::Route53,
            call: if method == "GET" {
                Call::Read
            } else {
                Call::Write
            },
            what: &what,
        };
        with_retries(request, self.retry, || async {
            let answer = match self.request(method, path_and_query, body).await {
                Ok(answer) => answer,
                Err(error) => return Try::Failed(error),
            };
            if (200..300).contains(&answer.status) {
                return match xml::parse(&answer.body) {
                    Ok(root) => Try::Done(root),
                    Err(err) => Try::Failed(BackendError::Api(format!(
                        "Route53 answered {what} with unreadable XML: {err}"
                    ))),
                };
            }
            let (code, message) = error_of(&answer.body);
            let error = BackendError::Api(format!(
                "Route53 refused {what}: {} {code}: {message}",
                answer.status
            ));
            if is_transient(answer.status, &code) {
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

    /// The hosted zone id of `zone` (`None` when there is none), looked up
    /// once per process. A public zone wins over a private one of the same
    /// name; two public ones are an error.
    async fn zone_id(&self, zone: &str) -> Result<Option<String>, BackendError> {
        let name = fqdn(zone);
        let cached = self
            .zone_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&name)
            .cloned();
        if let Some(id) = cached {
            return Ok(Some(id));
        }
        let path = format!(
            "{API}/hostedzonesbyname?dnsname={}&maxitems=100",
            query_value(&name)
        );
        let root = self.call("GET", &path, "").await.0?;
        let zones: Vec<(String, bool)> = root
            .child("HostedZones")
            .map(|z| {
                z.all("HostedZone")
                    .filter(|z| {
                        z.text_of("Name")
                            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
                    })
                    .filter_map(|z| {
                        let id = z
                            .text_of("Id")?
                            .trim_start_matches("/hostedzone/")
                            .to_owned();
                        let private = z
                            .child("Config")
                            .and_then(|c| c.text_of("PrivateZone"))
                            .is_some_and(|p| p == "true");
                        Some((id, private))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let public: Vec<&(String, bool)> = zones.iter().filter(|(_, p)| !p).collect();
        let id = match (public.as_slice(), zones.first()) {
            ([one], _) => one.0.clone(),
            ([], Some(private)) => private.0.clone(),
            ([], None) => return Ok(None),
            _ => {
                return Err(BackendError::Api(format!(
                    "Route53 has {} public hosted zones named {name}; neutral cannot tell \
                     which to use",
                    public.len()
                )));
            }
        };
        self.zone_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, id.clone());
        Ok(Some(id))
    }

    /// Every record set of `name` and `rtype`, page by page. A server that
    /// pages through the sets of one name and type without
    /// `NextRecordIdentifier` (moto) is asked again for larger pages.
    async fn list_sets(
        &self,
        zone_id: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Vec<Element>, BackendError> {
        let wanted = normalize_name(name);
        let mut page = PAGE;
        'pages: loop {
            let mut found = Vec::new();
            let mut identifier: Option<String> = None;
            loop {
                let mut path = format!(
                    "{API}/hostedzone/{}/rrset?name={}&type={rtype}&maxitems={page}",
                    query_value(zone_id),
                    query_value(&fqdn(name))
                );
                if let Some(id) = &identifier {
                    path.push_str(&format!("&identifier={}", query_value(id)));
                }
                let root = self.call("GET", &path, "").await.0?;
                let mut other = false;
                if let Some(sets) = root.child("ResourceRecordSets") {
                    for set in sets.all("ResourceRecordSet") {
                        let same = set.text_of("Name").map(normalize_name).as_deref()
                            == Some(wanted.as_str())
                            && set
                                .text_of("Type")
                                .is_some_and(|t| t.eq_ignore_ascii_case(rtype));
                        if same {
                            found.push(set.clone());
                        } else {
                            other = true;
                        }
                    }
                }
                let truncated = root.text_of("IsTruncated") == Some("true");
                let next_same = root
                    .text_of("NextRecordName")
                    .map(normalize_name)
                    .as_deref()
                    == Some(wanted.as_str())
                    && root
                        .text_of("NextRecordType")
                        .is_some_and(|t| t.eq_ignore_ascii_case(rtype));
                if other || !truncated || !next_same {
                    return Ok(found);
                }
                match root.text_of("NextRecordIdentifier") {
                    Some(next) => identifier = Some(next.to_owned()),
                    None if page < 100_000 => {
                        page = page.saturating_mul(10);
                        continue 'pages;
                    }
                    None => {
                        return Err(BackendError::Api(format!(
                            "Route53 pages the record sets of {name} {rtype} without \
                             NextRecordIdentifier"
                        )));
                    }
                }
            }
        }
    }

    /// Follows a change to `INSYNC`.
    async fn wait_for_sync(&self, change_id: &str) -> Result<(), BackendError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(500);
        loop {
            let path = format!("{API}/change/{}", query_value(change_id));
            let root = self.call("GET", &path, "").await.0?;
            let status = root
                .child("ChangeInfo")
                .and_then(|c| c.text_of("Status"))
                .unwrap_or("");
            if status == "INSYNC" {
                return Ok(());
            }
            if started.elapsed() > SYNC_TIMEOUT {
                return Err(BackendError::Api(format!(
                    "Route53 change {change_id} is still {status} after {SYNC_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

#[async_trait]
impl DnsBackend for Route53 {
    fn kind(&self) -> DnsBackendKind {
        DnsBackendKind::Route53
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
        let rtype = target.rtype.as_str();
        let registry_name = records::registry_name(target.domain, target.rtype);
        let registry_elements = self.list_sets(&zone_id, &registry_name, "TXT").await?;
        let record_elements = self.list_sets(&zone_id, target.domain, rtype).await?;

        let mut registry = None;
        let mut sets = Vec::new();
        let mut elements = BTreeMap::new();
        for element in &registry_elements {
            let Some(mut set) = record_of(element) else {
                continue;
            };
            let found = set
                .values
                .iter()
                .find_map(|v| records::parse_registry(v, target.rtype));
            set.owner = found.as_ref().map(|r| r.owner.clone());
            if found.is_some() && registry.is_none() {
                registry = found;
            }
            elements.insert(set.key(), element.clone());
            sets.push(set);
        }
        let owner = registry.as_ref().map(|r| r.owner.clone());
        for element in &record_elements {
            let Some(mut set) = record_of(element) else {
                continue;
            };
            set.owner.clone_from(&owner);
            elements.insert(set.key(), element.clone());
            sets.push(set);
        }
        let policy = registry
            .filter(|r| r.owner == self.config.owner_id)
            .and_then(|r| r.policy);
        Ok(Some(Listing {
            sets,
            policy,
            native: Native::of(Listed { zone_id, elements }),
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
                "a Route53 apply needs a Route53 listing".to_owned(),
            ));
        };
        let ordered = batch::write_order(plan, Some(&super::registry_key(target)));
        let calls = batch::batches(&ordered, &BatchLimits::ROUTE53)?;
        let lock = super::zone_lock(self.kind(), &listed.zone_id);
        let _held = lock.lock().await;
        let mut applied = Applied::default();
        let path = format!("{API}/hostedzone/{}/rrset/", query_value(&listed.zone_id));
        for changes in calls {
            let mut list = Element::new("Changes");
            for change in &changes {
                let (action, set) = match change {
                    Change::Create { record } => ("CREATE", set_element(record)),
                    Change::Update { to, .. } => ("UPSERT", set_element(to)),
                    Change::Delete { record } => (
                        "DELETE",
                        listed
                            .elements
                            .get(&record.key())
                            .cloned()
                            .unwrap_or_else(|| set_element(record)),
                    ),
                };
                list = list.with(
                    Element::new("Change")
                        .with(Element::leaf("Action", action))
                        .with(set),
                );
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                 <ChangeResourceRecordSetsRequest xmlns=\"{NAMESPACE}\">{}</ChangeResourceRecordSetsRequest>",
                Element::new("ChangeBatch")
                    .with(Element::leaf(
                        "Comment",
                        format!(
                            "neutral_gtm_record {} {}",
                            target.domain,
                            target.rtype.as_str()
                        ),
                    ))
                    .with(list)
                    .to_xml()
            );
            let (result, tries) = self.call("POST", &path, &body).await;
            applied.write_calls = applied.write_calls.saturating_add(tries);
            let root = result?;
            if self.config.wait_for_sync
                && let Some(id) = root.child("ChangeInfo").and_then(|c| c.text_of("Id"))
            {
                self.wait_for_sync(id.trim_start_matches("/change/"))
                    .await?;
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS' published Signature Version 4 example (IAM `ListUsers`, the
    /// example credentials, 2015-08-30T12:36:00Z).
    #[test]
    fn sigv4_matches_the_aws_documentation_example() {
        let credentials = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
        };
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let headers = sign_request(
            &credentials,
            "us-east-1",
            "iam",
            time,
            (
                "GET",
                "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                b"",
            ),
        )
        .expect("signed");
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            )
        );
        assert!(
            !format!("{credentials:?}").contains("EXAMPLEKEY"),
            "the secret never prints"
        );
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let credentials = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: Secret::new("secret"),
            session_token: Some(Secret::new("token")),
        };
        let headers = sign_request(
            &credentials,
            DEFAULT_REGION,
            SERVICE,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            (
                "POST",
                "http://127.0.0.1:5000/2013-04-01/hostedzone/Z1/rrset/",
                &[],
                b"<x/>",
            ),
        )
        .expect("signed");
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"x-amz-security-token"), "{names:?}");
        let authorization = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .expect("authorization")
            .1;
        assert!(authorization.contains("/us-east-1/route53/aws4_request"));
        assert!(authorization.contains("x-amz-security-token"));
    }

    #[test]
    fn record_sets_render_in_route53_order_and_read_back() {
        let record = RecordSet {
            name: "app.example.com".to_owned(),
            rtype: "A".to_owned(),
            set_id: Some("jp-1".to_owned()),
            ttl: 30,
            values: vec!["192.0.2.1".to_owned()],
            weight: Some(255),
            owner: None,
        };
        let element = set_element(&record);
        assert_eq!(
            element.to_xml(),
            "<ResourceRecordSet><Name>app.example.com.</Name><Type>A</Type>\
             <SetIdentifier>jp-1</SetIdentifier><Weight>255</Weight><TTL>30</TTL>\
             <ResourceRecords><ResourceRecord><Value>192.0.2.1</Value></ResourceRecord>\
             </ResourceRecords></ResourceRecordSet>"
        );
        assert_eq!(record_of(&element), Some(record));
    }

    #[test]
    fn errors_name_their_code_and_throttling_is_transient() {
        let throttled = "<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
            <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>\
            </Error><RequestId>r</RequestId></ErrorResponse>";
        let (code, message) = error_of(throttled);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("Throttling", "Rate exceeded")
        );
        assert!(is_transient(400, &code));
        assert!(is_transient(400, "PriorRequestNotComplete"));
        let invalid = "<InvalidChangeBatch><Messages><Message>Tried to create resource record \
            set but it already exists</Message></Messages></InvalidChangeBatch>";
        let (code, message) = error_of(invalid);
        assert_eq!(code, "InvalidChangeBatch");
        assert!(message.contains("already exists"));
        assert!(!is_transient(400, &code));
    }
}
