//! Health checking: a ticker that publishes heartbeat timeouts, and an active
//! HTTP prober that checks each node per its domain's `probe` settings. Both
//! only feed [`neutral_core::liveness`]; the status decision is the core's,
//! and publishing it is [`App::reconcile`](crate::app::App::reconcile)'s.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use neutral_core::model::{Probe, Timestamp};
use tokio::sync::Semaphore;

use crate::app::App;
use crate::shutdown::Shutdown;
use crate::world::now;

/// How often heartbeat timeouts are checked.
pub const TICK: Duration = Duration::from_millis(200);
/// At most this many probes run at once.
const MAX_CONCURRENT_PROBES: usize = 512;

/// Weights depend on time too (slow start ramps, the split-brain window), so
/// they are recomputed this often even when nothing else happens.
pub const RECOMPUTE_EVERY: Duration = Duration::from_secs(2);

pub async fn run_ticker(app: Arc<App>, mut shutdown: Shutdown) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recompute = tokio::time::interval(RECOMPUTE_EVERY);
    recompute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => app.reconcile("health").await,
            () = app.reconcile_soon.notified() => app.reconcile("heartbeat").await,
            _ = recompute.tick() => app.recompute("time").await,
            () = shutdown.wait() => break,
        }
    }
}

/// Requested recomputes start at most this often: a registration storm is
/// one recompute per tick, not one per registration.
pub const RECOMPUTE_REQUEST_TICK: Duration = Duration::from_millis(100);

/// Serves [`App::recompute_soon`](crate::app::App): requests made within
/// one tick fold into one recompute (every replica). The tick is
/// [`RECOMPUTE_REQUEST_TICK`], or three times the last recompute's length
/// when that is longer, so that with 100,000 nodes a storm of registrations
/// keeps recomputes to a quarter of a core.
pub async fn run_recompute_requests(app: Arc<App>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = app.recompute_soon.notified() => {}
            () = shutdown.wait() => break,
        }
        let started = tokio::time::Instant::now();
        app.recompute("node registered").await;
        let tick = RECOMPUTE_REQUEST_TICK.max(started.elapsed() * 3);
        tokio::select! {
            () = tokio::time::sleep_until(started + tick) => {}
            () = shutdown.wait() => break,
        }
    }
}

/// The probes' HTTP client: a fresh connection per probe, no proxy.
pub fn probe_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .user_agent(concat!("neutral-probe/", env!("CARGO_PKG_VERSION")))
        .build()
}

pub async fn run_prober(app: Arc<App>, mut shutdown: Shutdown) {
    let client = app.probe_client.clone();
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
    loop {
        let at = now();
        let due = take_due_probes(&app, at);
        for (node_id, address, probe) in due {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let app = Arc::clone(&app);
            let client = client.clone();
            tokio::spawn(async move {
                let result = probe_once(&client, address, &probe).await;
                drop(permit);
                note_probe(&app, &node_id, &result, None).await;
            });
        }
        let until_next = next_probe_in(&app, now());
        tokio::select! {
            () = tokio::time::sleep(until_next) => {}
            () = app.probe_wakeup.notified() => {}
            () = shutdown.wait() => break,
        }
    }
}

/// How long until the earliest probe is due (at most 250 ms, so new nodes
/// and changed settings are noticed).
fn next_probe_in(app: &App, at: Timestamp) -> Duration {
    let world = app.read_world();
    let earliest = world
        .nodes
        .values()
        .filter(|e| e.probe.is_some() && !e.probe_in_flight && !e.liveness.drained)
        .map(|e| e.next_probe)
        .min();
    earliest.map_or(Duration::from_millis(250), |due| {
        due.since(at).min(Duration::from_millis(250))
    })
}

/// Marks the nodes whose next probe is due as in flight and returns them.
fn take_due_probes(app: &App, at: Timestamp) -> Vec<(String, IpAddr, Probe)> {
    let mut world = app.write_world();
    let mut due = Vec::new();
    world.nodes.for_each_mut(|id, entry| {
        let Some(probe) = &entry.probe else { return };
        if entry.probe_in_flight || entry.next_probe > at || entry.liveness.drained {
            return;
        }
        entry.probe_in_flight = true;
        // Keep the cadence: the next probe is due one interval after this one
        // was due, not after the loop happened to notice it.
        let cadence = entry.next_probe.plus(probe.interval);
        entry.next_probe = if cadence > at {
            cadence
        } else {
            at.plus(probe.interval)
        };
        due.push((id.clone(), entry.record.node.address, probe.clone()));
    });
    due
}

/// What one probe found.
#[derive(Debug)]
struct ProbeResult {
    ok: bool,
    /// The connection was refused or unreachable (not a timeout): nothing
    /// listens there any more — what a dead process leaves behind.
    refused: bool,
    detail: String,
}

async fn probe_once(client: &reqwest::Client, address: IpAddr, probe: &Probe) -> ProbeResult {
    let url = format!(
        "http://{}{}",
        SocketAddr::new(address, probe.port),
        probe.http
    );
    let (ok, refused, detail) = match client.get(&url).timeout(probe.timeout).send().await {
        Ok(response) if response.status().is_success() || response.status().is_redirection() => (
            true,
            false,
            format!("GET {url}: {}", response.status().as_u16()),
        ),
        Ok(response) => (
            false,
            false,
            format!("GET {url}: HTTP {}", response.status().as_u16()),
        ),
        Err(err) if err.is_timeout() => (
            false,
            false,
            format!("GET {url}: timed out after {:?}", probe.timeout),
        ),
        Err(err) if err.is_connect() => (false, true, format!("GET {url}: connection failed")),
        Err(err) => (false, false, format!("GET {url}: {err}")),
    };
    ProbeResult {
        ok,
        refused,
        detail,
    }
}

/// Probes `node_id` at once because its agent stream ended (`why`): a
/// refused connection takes it down without waiting for `fall`
/// ([`neutral_core::liveness::Liveness::confirming_probe`]); a success
/// changes nothing but the probe count. A drained node, or one no probe
/// applies to (heartbeats alone count for its region), is left to its
/// heartbeat timeout. Returns whether a probe was sent.
pub async fn confirm(app: &App, node_id: &str, why: &str) -> bool {
    let target = {
        let world = app.read_world();
        world
            .nodes
            .get(node_id)
            .filter(|e| !e.liveness.drained)
            .and_then(|e| e.probe.clone().map(|p| (e.record.node.address, p)))
    };
    let Some((address, probe)) = target else {
        tracing::debug!(node = %node_id, %why, "no probe applies: left to the heartbeat timeout");
        return false;
    };
    let result = probe_once(&app.probe_client, address, &probe).await;
    tracing::info!(node = %node_id, %why, ok = result.ok, refused = result.refused, detail = %result.detail, "confirming probe");
    note_probe(app, node_id, &result, Some(why)).await;
    true
}

/// Feeds a finished probe to the node's liveness — a scheduled one, or
/// (`confirming`: why it was sent) the one after a broken agent stream —
/// and publishes what changed. Only a refused connection confirms a
/// broken stream; a confirming probe that timed out or got an error answer
/// counts as an ordinary failed probe (towards `fall`), so a lossy link
/// that breaks the stream does not flap the node.
async fn note_probe(app: &App, node_id: &str, result: &ProbeResult, confirming: Option<&str>) {
    let (ok, detail) = (result.ok, result.detail.as_str());
    let at = now();
    let changed = {
        let mut world = app.write_world();
        let Some(mut entry) = world.nodes.get_mut(node_id) else {
            return;
        };
        let entry = &mut *entry;
        if ok {
            entry.last_passing_probe = Some(at);
        }
        let was_ready = entry.liveness.ready;
        match confirming {
            Some(why) if ok || result.refused => {
                entry.liveness.confirming_probe(ok, why, detail);
            }
            Some(_) => entry.liveness.probe(at, ok, detail, &entry.settings),
            None => {
                entry.probe_in_flight = false;
                entry.liveness.probe(at, ok, detail, &entry.settings);
            }
        }
        if entry.liveness.ready != was_ready {
            app.verdict_changed.notify_one();
        }
        entry.liveness.status(at, &entry.settings).0 != entry.record.node.status
    };
    app.counters.probe(ok);
    if changed {
        app.reconcile(if confirming.is_some() {
            "agent stream"
        } else {
            "probe"
        })
        .await;
    }
}
