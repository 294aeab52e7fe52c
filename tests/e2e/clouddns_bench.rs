//! Write calls and wall time of applying a change to 1, 100 and 1,000
//! records of one domain, per cloud DNS backend, against its local
//! stand-in: Route53 on moto (behind the counting proxy), Cloudflare and
//! AliDNS on the stand-ins of `support/cloud`.
//!
//! Each sample starts from a domain of 1,000 records (nodes of equal weight)
//! written by the same backend, then applies a change to the first N:
//! - *replace*: N nodes leave and N new nodes (new ids and addresses) come,
//!   for every backend;
//! - *reweigh*: N nodes drop to half weight, for the backends with weights
//!   (Route53, AliDNS); N is at most 999, since halving every weight keeps
//!   the ratios and changes no record.
//!
//! The apply is the provider's own
//! (`backend::sync`: list, plan with the core, write the difference); write
//! calls are counted by the server side, reads too. Wall time is the whole
//! apply on loopback, reads included.
//!
//! `cargo run -p neutral-e2e --example clouddns_bench` (dev profile: the
//! dependencies are optimised there already).

use std::time::Instant;

use neutral_e2e::cloud::alidns::AliDns;
use neutral_e2e::cloud::cloudflare::Cloudflare;
use neutral_e2e::cloud::route53::{Moto, Route53Proxy};
use neutral_e2e::cloud::{self, AnswerRow, answers, changed, replaced, sync};
use terraform_provider_neutral::backend::DnsBackend;

const DOMAIN_RECORDS: usize = 1_000;
const CHANGES: [usize; 3] = [1, 100, 1_000];
const REWEIGHS: [usize; 3] = [1, 100, 999];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Replace,
    Reweigh,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Replace => "replace",
            Change::Reweigh => "reweigh",
        }
    }

    fn sizes(self) -> [usize; 3] {
        match self {
            Change::Replace => CHANGES,
            Change::Reweigh => REWEIGHS,
        }
    }

    fn apply(self, backend: &dyn DnsBackend, nodes: &[AnswerRow], n: usize) -> Vec<AnswerRow> {
        match self {
            Change::Replace => replaced(nodes, n),
            Change::Reweigh => changed(backend.kind(), nodes, n),
        }
    }
}

struct Row {
    backend: String,
    change: Change,
    changed: usize,
    plan: (usize, usize, usize),
    write_calls: usize,
    read_calls: usize,
    millis: f64,
}

/// Creates the domain, then applies the change; returns the plan, the
/// write and read calls the server counted for the change, and its time.
async fn sample(
    backend: &dyn DnsBackend,
    zone: &str,
    domain: &str,
    ttl: u32,
    (change, changed_records): (Change, usize),
    counts: &dyn Fn() -> (usize, usize),
) -> ((usize, usize, usize), usize, usize, f64) {
    let nodes = answers(DOMAIN_RECORDS);
    sync(backend, zone, domain, ttl, &nodes)
        .await
        .expect("create the domain");
    let after = change.apply(backend, &nodes, changed_records);
    let (writes_before, reads_before) = counts();
    let started = Instant::now();
    let synced = sync(backend, zone, domain, ttl, &after)
        .await
        .expect("apply the change");
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    let (writes, reads) = counts();
    assert_eq!(
        synced.applied.write_calls,
        writes - writes_before,
        "client and server agree"
    );
    (
        synced.counts,
        writes - writes_before,
        reads - reads_before,
        millis,
    )
}

/// Every sample of the backends with weights.
fn both() -> Vec<(Change, usize)> {
    [Change::Replace, Change::Reweigh]
        .into_iter()
        .flat_map(|c| c.sizes().into_iter().map(move |n| (c, n)))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut rows = Vec::new();

    let dir = tempfile::tempdir().expect("tempdir");
    match Moto::start(dir.path()) {
        None => eprintln!("no moto_server (run scripts/setup): Route53 skipped"),
        Some(moto) => {
            let proxy = Route53Proxy::start(&moto);
            let backend = cloud::route53(&proxy.url());
            for (change, n) in both() {
                let zone = format!("{}{n}.example.net", change.name());
                moto.create_zone(&zone);
                let counts = || {
                    let state = proxy.state();
                    (state.write_calls, state.read_calls)
                };
                let domain = format!("app.{zone}");
                let (plan, writes, reads, millis) =
                    sample(&backend, &zone, &domain, 30, (change, n), &counts).await;
                rows.push(Row {
                    backend: "route53 (moto)".into(),
                    change,
                    changed: n,
                    plan,
                    write_calls: writes,
                    read_calls: reads,
                    millis,
                });
            }
        }
    }

    for batch_size in [200, 3_500] {
        let cf = Cloudflare::start(cloud::CLOUDFLARE_TOKEN, &["example.dev"]);
        {
            let mut state = cf.state();
            state.batch_limit = batch_size;
            state.page_max = 1_000;
        }
        let backend = cloud::cloudflare(&cf.api_url(), batch_size);
        for n in CHANGES {
            let counts = || {
                let state = cf.state();
                (state.write_calls, state.read_calls)
            };
            let domain = format!("c{n}.example.dev");
            let (plan, writes, reads, millis) = sample(
                &backend,
                "example.dev",
                &domain,
                60,
                (Change::Replace, n),
                &counts,
            )
            .await;
            rows.push(Row {
                backend: format!("cloudflare (batch {batch_size})"),
                change: Change::Replace,
                changed: n,
                plan,
                write_calls: writes,
                read_calls: reads,
                millis,
            });
        }
    }

    let ali = AliDns::start(cloud::ALIDNS_KEY_ID, cloud::ALIDNS_SECRET, &["example.cn"]);
    let backend = cloud::alidns(&ali.endpoint());
    for (change, n) in both() {
        let counts = || {
            let state = ali.state();
            (state.write_calls, state.read_calls)
        };
        let domain = format!("{}{n}.example.cn", change.name());
        let (plan, writes, reads, millis) =
            sample(&backend, "example.cn", &domain, 600, (change, n), &counts).await;
        rows.push(Row {
            backend: "alidns".into(),
            change,
            changed: n,
            plan,
            write_calls: writes,
            read_calls: reads,
            millis,
        });
    }

    println!(
        "Applying a change to N of a domain's {DOMAIN_RECORDS} records (loopback stand-ins)\n"
    );
    println!(
        "| backend | change | N | plan (create/update/delete) | write calls | read calls | wall time |"
    );
    println!("|---|---|---:|---|---:|---:|---:|");
    for row in &rows {
        let (c, u, d) = row.plan;
        println!(
            "| {} | {} | {} | {c}/{u}/{d} | {} | {} | {:.0} ms |",
            row.backend,
            row.change.name(),
            row.changed,
            row.write_calls,
            row.read_calls,
            row.millis
        );
    }
}
