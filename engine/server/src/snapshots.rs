//! Writes the weights report in force and the split-brain guard's calm
//! snapshot to the store (`world::REPORT_DOC`, `world::CALM_DOC`) when they
//! change, at most every [`EVERY`], so a restart or a new leader starts from
//! them (`world::restore`): `last_known_good` answers and the guard's hold
//! survive. Runs on the leader (or the sole control plane) only; followers
//! compute the same reports from the same inputs. It must not compute
//! anything: it copies what `App::recompute` published.

use std::sync::Arc;
use std::time::Duration;

use neutral_core::weights::WeightsReport;

use crate::app::App;
use crate::shutdown::Shutdown;
use crate::world::{CALM_DOC, REPORT_DOC, StoredReport, now};

/// How often the documents are compared with what is published.
pub const EVERY: Duration = Duration::from_secs(2);

pub async fn run(app: Arc<App>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written_report: Option<Arc<WeightsReport>> = None;
    let mut written_calm: Option<Arc<WeightsReport>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => break,
        }
        written_report = write_if_new(&app, Kind::Report, written_report).await;
        written_calm = write_if_new(&app, Kind::Calm, written_calm).await;
    }
    // The last state before stopping.
    let _ = write_if_new(&app, Kind::Report, written_report).await;
}

#[derive(Clone, Copy)]
enum Kind {
    Report,
    Calm,
}

/// Writes the current report (or calm snapshot) unless it is the one
/// written last; returns what is now written.
async fn write_if_new(
    app: &Arc<App>,
    kind: Kind,
    written: Option<Arc<WeightsReport>>,
) -> Option<Arc<WeightsReport>> {
    let (report, at, nodes, commit) = {
        let world = app.read_world();
        match kind {
            Kind::Report => {
                let latest = world.views.latest();
                (
                    Some(Arc::clone(&latest.report)),
                    latest.at,
                    Arc::default(),
                    latest.commit.clone(),
                )
            }
            Kind::Calm => match &world.calm {
                Some((report, nodes)) => (
                    Some(Arc::clone(report)),
                    now(),
                    Arc::clone(nodes),
                    world.commit.clone(),
                ),
                None => (None, now(), Arc::default(), world.commit.clone()),
            },
        }
    };
    let report = report?;
    if written.as_ref().is_some_and(|w| Arc::ptr_eq(w, &report)) {
        return written;
    }
    let key = match kind {
        Kind::Report => REPORT_DOC,
        Kind::Calm => CALM_DOC,
    };
    let stored = StoredReport {
        commit,
        at,
        report: &*report,
        nodes: Vec::clone(&nodes),
    };
    let Ok(doc) = serde_json::to_string(&stored) else {
        return written;
    };
    match app
        .with_store(move |s| s.docs().put(key, &doc, now()))
        .await
    {
        Ok(()) => Some(report),
        Err(err) => {
            tracing::warn!(document = key, error = %format!("{err:#}"), "cannot store the weights document; a restart would start without it");
            written
        }
    }
}
