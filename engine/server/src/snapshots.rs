//! Writes the weights report in force, the split-brain guard's calm
//! snapshot (`world::REPORT_DOC`, `world::CALM_DOC`) and the embedded DNS
//! server's last-known-good memory ([`DNS_MEMORY_DOC`]) to the store when
//! they change, at most every [`EVERY`], so a restart or a new leader starts
//! from them (`world::restore`, [`restore_dns_memory`]): `last_known_good`
//! answers, in the weights and in the DNS data plane, and the guard's hold
//! survive. Runs on the leader (or the sole control plane) only; followers
//! compute the same reports from the same inputs. It must not compute
//! anything: it copies what `App::recompute` published.

use std::sync::Arc;
use std::time::Duration;

use neutral_core::weights::WeightsReport;
use neutral_core::weights::packed::PackedReport;

use crate::app::App;
use crate::shutdown::Shutdown;
use crate::world::{CALM_DOC, EngineNodes, REPORT_DOC, StoredReport, now};

/// How often the documents are compared with what is published.
pub const EVERY: Duration = Duration::from_secs(2);

pub async fn run(app: Arc<App>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written_report: Option<Written> = None;
    let mut written_calm: Option<Written> = None;
    let mut written_memory: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => break,
        }
        written_report = write_if_new(&app, Kind::Report, written_report).await;
        written_calm = write_if_new(&app, Kind::Calm, written_calm).await;
        written_memory = write_dns_memory_if_new(&app, written_memory).await;
    }
    // The last state before stopping.
    let _ = write_if_new(&app, Kind::Report, written_report).await;
    let _ = write_dns_memory_if_new(&app, written_memory).await;
}

/// The embedded DNS server's last-known-good memory (each A/AAAA rrset's
/// last healthy addresses), restored at start so an rrset whose nodes are
/// all down keeps answering with them across a restart or a new leader.
pub const DNS_MEMORY_DOC: &str = "dns.last_known_good";

/// Writes the DNS server's last-known-good memory unless the generation
/// written last is still current; returns the generation now written.
async fn write_dns_memory_if_new(app: &Arc<App>, written: Option<u64>) -> Option<u64> {
    let (generation, sets) = app.dns.handle().last_known_good();
    if written == Some(generation) || !put(app, DNS_MEMORY_DOC, &sets).await {
        return written;
    }
    Some(generation)
}

/// Gives the DNS server the memory a previous process (or leader) stored;
/// a missing or unreadable document leaves it empty, saying so.
pub async fn restore_dns_memory(app: &Arc<App>) {
    let stored = app.with_store(|s| s.docs().get(DNS_MEMORY_DOC)).await;
    let doc = match stored {
        Ok(Some((doc, _))) => doc,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(document = DNS_MEMORY_DOC, error = %format!("{err:#}"), "cannot read the DNS last-known-good memory; starting without it");
            return;
        }
    };
    match serde_json::from_str::<Vec<neutral_dns::RememberedSet>>(&doc) {
        Ok(sets) => {
            let restored = app.dns.handle().restore_last_known_good(sets);
            tracing::info!(rrsets = restored, "DNS last-known-good memory restored");
        }
        Err(err) => {
            tracing::warn!(document = DNS_MEMORY_DOC, error = %err, "unreadable DNS last-known-good memory; starting without it");
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Report,
    Calm,
}

/// A report document as last written: its report and (the calm snapshot)
/// its nodes, by `Arc` — the world keeps both the same `Arc`s while they do
/// not change.
#[derive(Clone)]
struct Written {
    report: Arc<WeightsReport>,
    nodes: Option<EngineNodes>,
}

impl Written {
    fn is(&self, report: &Arc<WeightsReport>, nodes: Option<&EngineNodes>) -> bool {
        Arc::ptr_eq(&self.report, report)
            && match (&self.nodes, nodes) {
                (Some(written), Some(nodes)) => Arc::ptr_eq(written, nodes),
                (None, None) => true,
                _ => false,
            }
    }
}

/// Writes the current report (or calm snapshot) unless it is the one
/// written last; returns what is now written.
async fn write_if_new(app: &Arc<App>, kind: Kind, written: Option<Written>) -> Option<Written> {
    let (report, at, nodes, commit) = {
        let world = app.read_world();
        match kind {
            Kind::Report => {
                let latest = world.views.latest();
                (
                    Some(Arc::clone(&latest.report)),
                    latest.at,
                    None,
                    latest.commit.clone(),
                )
            }
            Kind::Calm => match &world.calm {
                Some((report, nodes)) => (
                    Some(Arc::clone(report)),
                    now(),
                    Some(Arc::clone(nodes)),
                    world.commit.clone(),
                ),
                None => (None, now(), None, world.commit.clone()),
            },
        }
    };
    let report = report?;
    if written
        .as_ref()
        .is_some_and(|w| w.is(&report, nodes.as_ref()))
    {
        return written;
    }
    let key = match kind {
        Kind::Report => REPORT_DOC,
        Kind::Calm => CALM_DOC,
    };
    let stored = StoredReport {
        commit,
        at,
        report: PackedReport::pack(&report),
        nodes: nodes
            .iter()
            .flat_map(|nodes| nodes.iter().cloned())
            .collect(),
    };
    if put(app, key, &stored).await {
        Some(Written { report, nodes })
    } else {
        written
    }
}

/// Stores `value` as the document `key`; `false` (said in the log) when it
/// could not be.
async fn put(app: &Arc<App>, key: &'static str, value: &impl serde::Serialize) -> bool {
    let doc = match serde_json::to_string(value) {
        Ok(doc) => doc,
        Err(err) => {
            tracing::warn!(document = key, error = %err, "cannot encode a document to store");
            return false;
        }
    };
    match app
        .with_store(move |s| s.docs().put(key, &doc, now()))
        .await
    {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(document = key, error = %format!("{err:#}"), "cannot store the document; a restart would start without it");
            false
        }
    }
}
