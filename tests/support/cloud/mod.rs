//! Local stand-ins for the cloud DNS APIs that cannot be reached from here,
//! and the launcher of the one that can be run for real (moto's Route53).
//!
//! - [`cloudflare`]: Cloudflare's v4 DNS records API as its reference
//!   describes it — bearer tokens, pagination, the batch endpoint's order
//!   and transaction, identical-record errors, 429 with `Retry-After`.
//! - [`alidns`]: Alibaba Cloud DNS' RPC API 2015-01-09 — signature v1
//!   checked on every request, nonces, pagination, duplicate errors,
//!   weighted round robin, throttling answers.
//! - [`route53`]: `moto_server` (PyPI `moto[server]`) started on loopback,
//!   behind a small proxy that counts write calls and can answer
//!   `Throttling` / `PriorRequestNotComplete` like Route53 does.
//!
//! Each stand-in runs an axum server on its own thread and runtime, on a
//! free loopback port, and stops when dropped. Tests reach into its state
//! to make hand edits and to count calls.

pub mod alidns;
pub mod cloudflare;
pub mod route53;

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

/// An axum server on its own thread; stopped when dropped.
#[derive(Debug)]
pub struct Server {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Serves `router` on a free loopback port.
pub fn serve(router: axum::Router) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("stand-in runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            tokio::select! {
                _ = axum::serve(listener, router) => {}
                _ = stopped => {}
            }
        });
    });
    Server {
        url,
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A request id, as every vendor answers with one.
pub(crate) fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("req-{:08}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// ---- driving the provider's backends against the stand-ins ----

use std::time::Duration;

use neutral_core::model::{AllDownPolicy, DnsBackendKind, RecordType};
use terraform_provider_neutral::backend::alidns::{AliDns, AliDnsConfig};
use terraform_provider_neutral::backend::cloudflare::{Cloudflare, CloudflareConfig};
use terraform_provider_neutral::backend::route53::{AwsCredentials, Route53, Route53Config};
use terraform_provider_neutral::backend::{
    self, DnsBackend, RetryPolicy, SyncError, Synced, Target,
};
pub use terraform_provider_neutral::records::AnswerRow;
use terraform_provider_neutral::records::{self, Policy};
use terraform_provider_neutral::secret::Secret;

pub const AWS_ACCESS_KEY_ID: &str = "AKIDTEST";
pub const AWS_SECRET_ACCESS_KEY: &str = "aws-secret-for-tests";
pub const CLOUDFLARE_TOKEN: &str = "cf-token-for-tests-0123456789";
pub const ALIDNS_KEY_ID: &str = "ali-key-for-tests";
pub const ALIDNS_SECRET: &str = "ali-secret-for-tests";

/// Short pauses, so refused calls are retried quickly in tests.
pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 8,
        base: Duration::from_millis(50),
        cap: Duration::from_secs(2),
    }
}

pub fn route53(endpoint: &str) -> Route53 {
    Route53::new(Route53Config {
        endpoint: endpoint.to_owned(),
        region: "us-east-1".to_owned(),
        credentials: AwsCredentials {
            access_key_id: AWS_ACCESS_KEY_ID.to_owned(),
            secret_access_key: Secret::new(AWS_SECRET_ACCESS_KEY),
            session_token: None,
        },
        wait_for_sync: true,
        owner_id: "neutral".to_owned(),
    })
    .expect("route53 client")
    .with_retry(quick_retry())
}

pub fn cloudflare(api_url: &str, batch_size: usize) -> Cloudflare {
    Cloudflare::new(CloudflareConfig {
        api_url: api_url.to_owned(),
        api_token: Secret::new(CLOUDFLARE_TOKEN),
        batch_size,
        owner_id: "neutral".to_owned(),
    })
    .expect("cloudflare client")
    .with_retry(quick_retry())
}

pub fn alidns(endpoint: &str) -> AliDns {
    AliDns::new(AliDnsConfig {
        endpoint: endpoint.to_owned(),
        access_key_id: ALIDNS_KEY_ID.to_owned(),
        access_key_secret: Secret::new(ALIDNS_SECRET),
        owner_id: "neutral".to_owned(),
    })
    .expect("alidns client")
    .with_retry(quick_retry())
}

/// `count` nodes of region jp, weight 100 each, addresses from
/// 198.18.0.0/15 (the benchmarking range).
pub fn answers(count: usize) -> Vec<AnswerRow> {
    (0..count)
        .map(|i| AnswerRow {
            node: format!("jp-{i:04}"),
            region: "jp".to_owned(),
            address: std::net::IpAddr::from([
                198,
                18,
                u8::try_from(i / 250).unwrap_or(255),
                u8::try_from(i % 250 + 1).unwrap_or(255),
            ]),
            weight: 100,
        })
        .collect()
}

/// `answers` with a change to the first `changed`: half weight where the
/// backend has weights, another address where it has none (Cloudflare).
pub fn changed(kind: DnsBackendKind, answers: &[AnswerRow], changed: usize) -> Vec<AnswerRow> {
    answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut a = a.clone();
            if i < changed {
                if kind == DnsBackendKind::Cloudflare {
                    a.address = std::net::IpAddr::from([
                        198,
                        19,
                        u8::try_from(i / 250).unwrap_or(255),
                        u8::try_from(i % 250 + 1).unwrap_or(255),
                    ]);
                } else {
                    a.weight = 50;
                }
            }
            a
        })
        .collect()
}

pub fn policy() -> Policy {
    Policy {
        all_down: AllDownPolicy::FailOpen,
        min_ready_nodes: 1,
        regions: [("jp".to_owned(), 100)].into(),
    }
}

/// Makes `backend` hold `answers` for `domain` in `zone` (TTL `ttl`), as
/// an apply of `neutral_gtm_record` does.
pub async fn sync(
    backend: &dyn DnsBackend,
    zone: &str,
    domain: &str,
    ttl: u32,
    answers: &[AnswerRow],
) -> Result<Synced, SyncError> {
    let policy = policy();
    let target = Target {
        zone,
        domain,
        rtype: RecordType::A,
        policy: (!answers.is_empty()).then_some(&policy),
    };
    let records = records::desired_sets(backend.kind(), domain, RecordType::A, ttl, answers);
    backend::sync(backend, &target, &records).await
}

/// `answers` with the first `replaced` nodes replaced by new nodes (new ids,
/// addresses from 198.19.0.0/16).
pub fn replaced(answers: &[AnswerRow], replaced: usize) -> Vec<AnswerRow> {
    answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i >= replaced {
                return a.clone();
            }
            AnswerRow {
                node: format!("jp-new-{i:04}"),
                region: a.region.clone(),
                address: std::net::IpAddr::from([
                    198,
                    19,
                    u8::try_from(i / 250).unwrap_or(255),
                    u8::try_from(i % 250 + 1).unwrap_or(255),
                ]),
                weight: a.weight,
            }
        })
        .collect()
}
