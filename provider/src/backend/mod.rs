//! The DNS backends a `neutral_gtm_record` can live in, behind one trait,
//! [`DnsBackend`]: *list* the record sets of a name and type with their
//! owners, and *apply* a plan the core computed from them
//! ([`dnsplan::plan`]), so every backend receives only the difference.
//!
//! - [`embedded`]: the control plane's zone API; a missing zone is created.
//! - [`powerdns`]: PowerDNS' HTTP API; the zone must exist.
//! - [`route53`]: AWS Route53's REST/XML API, SigV4-signed.
//! - [`cloudflare`]: Cloudflare's v4 REST API with a bearer token.
//! - [`alidns`]: Alibaba Cloud DNS' RPC API 2015-01-09, signature v1.
//!
//! This module owns the trait, the shapes passed through it and what the
//! backends share: one write lock per zone, retries with backoff, and the
//! HTTP client settings. Zones are the DNS operator's: only the embedded
//! backend creates one.

pub mod alidns;
pub mod cloudflare;
pub mod embedded;
pub mod powerdns;
pub mod route53;
pub mod tally;
pub mod xml;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use neutral_core::backend_calls::{Call, CallResult};
use neutral_core::backoff::Backoff;
use neutral_core::dnsplan::batch::TooLarge;
use neutral_core::dnsplan::{self, Conflict, DnsPlan, RecordKey, RecordSet};
use neutral_core::model::{DnsBackendKind, RecordType};

use crate::client::{self, ClientError, RrSetChange, Zone};
use crate::records::{self, Policy, fqdn};

/// The record of one domain and type that a resource manages.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Lowercase, without the trailing dot.
    pub zone: &'a str,
    /// Lowercase, without the trailing dot.
    pub domain: &'a str,
    pub rtype: RecordType,
    /// The policy to keep in the ownership marker; `None` when destroying.
    pub policy: Option<&'a Policy>,
}

/// What a backend holds for a [`Target`].
#[derive(Clone, Debug)]
pub struct Listing {
    /// The record sets a resource of this name and type may manage, with
    /// their owners (the backend's ownership records included).
    pub sets: Vec<RecordSet>,
    /// The policy in this deployment's ownership marker, if any.
    pub policy: Option<Policy>,
    pub(crate) native: Native,
}

/// The backend's own view of what it listed, for writing the difference.
/// A cloud backend keeps its own type here ([`Native::of`], read back with
/// [`Native::get`]), so this module never names a backend.
#[derive(Clone)]
pub(crate) enum Native {
    /// A zone that does not exist yet (and was just created).
    Empty,
    /// A PowerDNS-API zone (PowerDNS, the embedded server).
    Zone(Zone),
    /// What one cloud backend listed (zone ids, record ids).
    Backend(Arc<dyn Any + Send + Sync>),
}

impl Native {
    pub(crate) fn of<T: Any + Send + Sync>(listed: T) -> Native {
        Native::Backend(Arc::new(listed))
    }

    /// The backend's own listing, if this is one of type `T`.
    pub(crate) fn get<T: Any>(&self) -> Option<&T> {
        match self {
            Native::Backend(listed) => listed.downcast_ref(),
            Native::Empty | Native::Zone(_) => None,
        }
    }
}

impl fmt::Debug for Native {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Native::Empty => f.write_str("Empty"),
            Native::Zone(zone) => f.debug_tuple("Zone").field(zone).finish(),
            Native::Backend(_) => f.write_str("Backend(..)"),
        }
    }
}

impl Listing {
    /// A listing of nothing, for a zone that was just created.
    pub fn empty() -> Listing {
        Listing {
            sets: Vec::new(),
            policy: None,
            native: Native::Empty,
        }
    }

    /// The sets `owner` owns.
    pub fn owned(&self, owner: &str) -> Vec<RecordSet> {
        self.sets
            .iter()
            .filter(|s| s.owner.as_deref() == Some(owner))
            .cloned()
            .collect()
    }
}

/// What an apply cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Calls that change the backend (retries of a refused call included).
    pub write_calls: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The API refused a request; the text names the call and its answer.
    #[error("{0}")]
    Api(String),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

/// One DNS backend.
#[async_trait]
pub trait DnsBackend: fmt::Debug + Send + Sync {
    fn kind(&self) -> DnsBackendKind;

    /// Who this backend writes records as: the owner in plans.
    fn owner(&self) -> &str;

    /// `records` with the ownership records the backend keeps beside them.
    fn desired(&self, _target: &Target<'_>, records: Vec<RecordSet>) -> Vec<RecordSet> {
        records
    }

    /// The record sets of the target's name and type; `None` when the zone
    /// does not exist.
    async fn list(&self, target: &Target<'_>) -> Result<Option<Listing>, BackendError>;

    /// Creates a missing zone, where the backend allows it.
    async fn create_zone(&self, zone: &str) -> Result<(), String> {
        Err(format!(
            "zone {zone} does not exist in {}; create it first: Terraform manages records, \
             the DNS operator manages zones",
            self.kind().as_str()
        ))
    }

    /// Writes `plan` (planned from `desired` and `listing`) and nothing else.
    async fn apply(
        &self,
        target: &Target<'_>,
        listing: &Listing,
        plan: &DnsPlan,
        desired: &[RecordSet],
    ) -> Result<Applied, BackendError>;
}

/// Why [`sync`] wrote nothing (or not all).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Desired records collide with records this deployment does not own.
    #[error("{} record set(s) are not this deployment's", .0.len())]
    Conflicts(Vec<Conflict>),
    #[error("zone unavailable: {0}")]
    Zone(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What [`sync`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// `(creates, updates, deletes)` of the plan.
    pub counts: (usize, usize, usize),
    pub applied: Applied,
}

/// Makes `backend` hold `records` for `target` (with its ownership marker),
/// writing only the difference: list, plan with the core, apply. `records`
/// empty removes what this deployment owns there. A missing zone is created
/// where the backend allows it.
pub async fn sync(
    backend: &dyn DnsBackend,
    target: &Target<'_>,
    records: &[RecordSet],
) -> Result<Synced, SyncError> {
    let listing = match backend.list(target).await? {
        Some(listing) => listing,
        None if records.is_empty() => return Ok(Synced::default()),
        None => {
            backend
                .create_zone(target.zone)
                .await
                .map_err(SyncError::Zone)?;
            Listing::empty()
        }
    };
    let desired = backend.desired(target, records.to_vec());
    let plan = dnsplan::plan(backend.owner(), &desired, &listing.sets);
    if !plan.conflicts.is_empty() {
        return Err(SyncError::Conflicts(plan.conflicts));
    }
    let applied = backend.apply(target, &listing, &plan, &desired).await?;
    Ok(Synced {
        counts: plan.counts(),
        applied,
    })
}

/// The ownership registry record's key of a target, for the backends that
/// keep one.
pub fn registry_key(target: &Target<'_>) -> RecordKey {
    RecordKey {
        name: records::registry_name(target.domain, target.rtype),
        rtype: "TXT".to_owned(),
        set_id: None,
    }
}

/// `records` plus the target's registry record, when there are records and
/// a policy to keep.
pub(crate) fn with_registry(
    kind: DnsBackendKind,
    owner: &str,
    target: &Target<'_>,
    mut records: Vec<RecordSet>,
) -> Vec<RecordSet> {
    if let (Some(policy), false) = (target.policy, records.is_empty()) {
        records.push(records::registry_set(
            kind,
            target.domain,
            target.rtype,
            owner,
            policy,
        ));
    }
    records
}

// ---- the zone APIs (embedded, PowerDNS) ----

/// A listing from a PowerDNS-shaped zone.
pub(crate) fn zone_listing(kind: DnsBackendKind, zone: Zone, target: &Target<'_>) -> Listing {
    let sets = records::current_sets(kind, &zone, target.domain, target.rtype);
    let name = fqdn(target.domain);
    let policy = zone
        .rrsets
        .iter()
        .filter(|r| r.name.eq_ignore_ascii_case(&name))
        .find_map(|r| records::policy_of(r, target.rtype));
    Listing {
        sets,
        policy,
        native: Native::Zone(zone),
    }
}

/// The rrset changes that apply `plan` to a zone listing.
pub(crate) fn zone_changes(
    listing: &Listing,
    target: &Target<'_>,
    plan: &DnsPlan,
    desired: &[RecordSet],
) -> Vec<RrSetChange> {
    let empty = Zone::default();
    let zone = match &listing.native {
        Native::Zone(zone) => zone,
        _ => &empty,
    };
    let comment = target
        .policy
        .filter(|_| !desired.is_empty())
        .map(|policy| records::policy_comment(target.rtype, policy));
    records::patch(
        zone,
        target.domain,
        target.rtype,
        plan,
        desired,
        comment.as_ref(),
    )
}

/// `result` of one request to a zone API, counted in the [`tally`] (these
/// backends take no retries for throttling: an error is an error).
pub(crate) fn counted<T, E>(
    backend: DnsBackendKind,
    call: Call,
    result: Result<T, E>,
) -> Result<T, E> {
    let outcome = if result.is_ok() {
        CallResult::Ok
    } else {
        CallResult::Error
    };
    tally::record(backend, call, outcome);
    result
}

/// Sends one zone `PATCH` under the zone's lock; a 5xx is retried twice
/// after a short pause (PowerDNS' SQLite backend fails concurrent writers).
pub(crate) async fn patch_zone<F, Fut>(
    kind: DnsBackendKind,
    zone: &str,
    changes: &[RrSetChange],
    send: F,
) -> Result<Applied, BackendError>
where
    F: Fn() -> Fut + Send,
    Fut: Future<Output = Result<(), ClientError>> + Send,
{
    if changes.is_empty() {
        return Ok(Applied::default());
    }
    let name = fqdn(zone);
    let lock = zone_lock(kind, &name);
    let _held = lock.lock().await;
    let mut attempt = 0;
    loop {
        match counted(kind, Call::Write, send().await) {
            Err(err) if attempt < 2 && err.status().is_some_and(|s| s >= 500) => {
                attempt += 1;
                tracing::warn!(zone = %name, attempt, "zone PATCH failed; retrying: {err}");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(err) => return Err(err.into()),
            Ok(()) => {
                return Ok(Applied {
                    write_calls: usize::try_from(attempt).unwrap_or(usize::MAX) + 1,
                });
            }
        }
    }
}

type ZoneLocks = Mutex<HashMap<(DnsBackendKind, String), Arc<tokio::sync::Mutex<()>>>>;

/// One async lock per backend and zone, for the life of the process: the
/// writes of one zone are serialized within the provider (Terraform applies
/// up to ten records at once).
pub(crate) fn zone_lock(kind: DnsBackendKind, zone: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<ZoneLocks> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(locks.entry((kind, zone.to_owned())).or_default())
}

// ---- what the cloud backends share ----

/// How often and how long a refused call is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The pause after the first refusal; it doubles after each.
    pub base: Duration,
    /// The longest pause, also the cap on a server's `Retry-After`.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause before try `attempt + 1` (after `attempt` refusals), or
    /// the server's own wish, capped.
    pub fn pause(&self, attempt: u32, server: Option<Duration>) -> Duration {
        let doubled = Backoff::new(self.base, self.cap).ceiling(attempt);
        server.unwrap_or(doubled).min(self.cap)
    }
}

/// How one try of a call ended.
#[derive(Debug)]
pub(crate) enum Try<T> {
    Done(T),
    /// Refused for now (throttled, busy): try again, after the server's
    /// `Retry-After` when it sent one.
    Again {
        error: BackendError,
        after: Option<Duration>,
    },
    Failed(BackendError),
}

/// What a request to a backend is, for logs and the [`tally`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    pub backend: DnsBackendKind,
    pub call: Call,
    /// The method and path, or the action, for log lines.
    pub what: &'a str,
}

/// Runs `call` until it is done, fails, or `policy` has no tries left,
/// counting each try in the [`tally`]; returns its result and how many
/// tries it took.
pub(crate) async fn with_retries<T, F, Fut>(
    request: Request<'_>,
    policy: RetryPolicy,
    mut call: F,
) -> (Result<T, BackendError>, usize)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Try<T>>,
{
    let Request {
        backend,
        call: kind,
        what,
    } = request;
    let mut tries: u32 = 0;
    loop {
        tries = tries.saturating_add(1);
        let count = usize::try_from(tries).unwrap_or(usize::MAX);
        let outcome = call().await;
        let result = match &outcome {
            Try::Done(_) => CallResult::Ok,
            Try::Again { .. } => CallResult::Throttled,
            Try::Failed(_) => CallResult::Error,
        };
        tally::record(backend, kind, result);
        match outcome {
            Try::Done(value) => return (Ok(value), count),
            Try::Failed(error) => return (Err(error), count),
            Try::Again { error, after } => {
                if tries >= policy.attempts {
                    return (Err(error), count);
                }
                let pause = policy.pause(tries, after);
                tracing::warn!(what, tries, ?pause, "refused for now; retrying: {error}");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The HTTP client the cloud backends use: the same timeouts and user agent
/// as the control plane's, TLS through rustls with ring.
pub(crate) fn http_client() -> Result<reqwest::Client, ClientError> {
    // The plugin installs ring at start; a library user (tests, benches)
    // may not have: ring, never aws-lc. A provider already set stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(client::REQUEST_TIMEOUT)
        .connect_timeout(client::CONNECT_TIMEOUT)
        .user_agent(concat!(
            "terraform-provider-neutral/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| ClientError::Setup(e.to_string()))
}

/// A response's status, headers and body, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

/// Sends `request` and reads the answer; the time counts as HTTP wait for
/// [`crate::timing`]. Errors name `url` but never a credential.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<Answer, ClientError> {
    let started = Instant::now();
    let result = async {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: url.to_owned(),
            message: e.without_url().to_string(),
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .text()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.to_owned(),
                message: e.without_url().to_string(),
            })?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
    .await;
    crate::timing::add_http(started.elapsed());
    result
}

/// The text of a body for an error message, cut short.
pub(crate) fn excerpt(body: &str) -> String {
    const MAX: usize = 300;
    let trimmed = body.trim();
    match trimmed.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", trimmed.get(..cut).unwrap_or(trimmed)),
        None => trimmed.to_owned(),
    }
}

/// Whether `id` may name an owner in ownership markers.
pub fn owner_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > 63 {
        return Some(format!("`{id}` must be 1 to 63 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some(format!("`{id}` may hold only a-z, 0-9, `-`, `_` and `.`"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_honour_the_server() {
        let policy = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        let pauses: Vec<u128> = (1..=5).map(|a| policy.pause(a, None).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000]);
        assert_eq!(
            policy.pause(1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            policy.pause(1, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn owner_ids_are_plain() {
        assert_eq!(owner_id_problem("prod-eu_1.a"), None);
        assert!(owner_id_problem("").is_some());
        assert!(owner_id_problem("Prod").is_some());
        assert!(owner_id_problem("a,b").is_some());
    }

    const TEST_REQUEST: Request<'static> = Request {
        backend: DnsBackendKind::Route53,
        call: Call::Write,
        what: "test",
    };

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn retries_stop_when_done_or_out_of_tries() {
        let policy = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        };
        let mut refusals = 1;
        let (result, tries) = with_retries(TEST_REQUEST, policy, || {
            let again = refusals > 0;
            refusals -= 1;
            async move {
                if again {
                    Try::Again {
                        error: BackendError::Api("busy".into()),
                        after: None,
                    }
                } else {
                    Try::Done(7)
                }
            }
        })
        .await;
        assert_eq!((result.ok(), tries), (Some(7), 2));
        let (result, tries) = with_retries(TEST_REQUEST, policy, || async {
            Try::<()>::Again {
                error: BackendError::Api("busy".into()),
                after: None,
            }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(tries, 3);
    }
}
