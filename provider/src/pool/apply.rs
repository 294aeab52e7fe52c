//! Applying a pool's plan: what starting new local agents needs (checked at
//! plan time too), starting them, and removing slots (drain, wait out the
//! TTLs and grace, stop, delete).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path as FsPath;
use std::time::{Duration, Instant};

use neutral_core::model::format_duration;
use neutral_core::pool::{self, SlotStatus};

use crate::client::{ControlPlane, NodeView, parse_time};
use crate::context::{Clients, now};
use crate::docker_launcher::{self, DockerTarget};
use crate::framework::{Diags, Path, Value};
use crate::launcher::{self, AgentLaunch, SlotDir};
use crate::secret::Secret;

use super::observe::{Observer, SlotView, live, set_observed, strings};
use super::schema::{ENV_JOIN_TOKEN, LocalSettings, PoolSpec, REGISTER_TIMEOUT};

pub(super) fn check_can_start(
    local: &LocalSettings,
    count: usize,
    used: &BTreeSet<IpAddr>,
    diags: &mut Diags,
) {
    if let Err(message) = launcher::find_binary(local.neutral_binary.as_deref()) {
        diags.error(
            Path::attr("neutral_binary"),
            "no neutral binary to start agents with",
            message,
        );
    }
    let free = local.address_range.free(used, count).len();
    if free < count {
        diags.error(
            Path::attr("address_range"),
            "not enough free addresses",
            format!(
                "{count} new nodes need addresses, {free} of {} are free (the others are \
                 taken by registered nodes or this pool's agents)",
                local.address_range
            ),
        );
    }
}

pub(super) fn join_token(local: &LocalSettings) -> Option<Secret> {
    local.join_token.clone().or_else(|| {
        std::env::var(ENV_JOIN_TOKEN)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(Secret::new)
    })
}

pub(super) fn has_token_file(local: &LocalSettings) -> bool {
    local
        .agent_args
        .iter()
        .any(|a| a == "--join-token-file" || a.starts_with("--join-token-file="))
}

/// Addresses new local agents must not take: every registered node's and
/// every running agent's of the pool.
pub(super) fn used_addresses(live: &[NodeView], state_dir: &FsPath) -> BTreeSet<IpAddr> {
    let mut used: BTreeSet<IpAddr> = live.iter().filter_map(|n| n.address.parse().ok()).collect();
    for (_, dir) in launcher::slot_dirs(state_dir) {
        if dir.running()
            && let Some(address) = dir.address()
        {
            used.insert(address);
        }
    }
    used
}

/// The TTLs of the domains `region` serves, from the control plane.
pub(super) async fn serving_ttls(
    control_plane: &ControlPlane,
    region: &str,
) -> Result<Vec<u32>, String> {
    let names = control_plane
        .domain_names()
        .await
        .map_err(|e| e.to_string())?;
    let mut ttls = Vec::new();
    for name in names {
        if let Some(view) = control_plane
            .domain(&name)
            .await
            .map_err(|e| e.to_string())?
        {
            let serves = view.weights.regions.iter().any(|r| &*r.region == region)
                || view
                    .policy
                    .as_ref()
                    .is_some_and(|p| p.regions.contains_key(region));
            if serves {
                ttls.push(view.weights.ttl);
            }
        }
    }
    Ok(ttls)
}

/// Starts an agent for each new slot and waits until all registered.
/// Returns the slots that failed (stopped and forgotten again).
pub(super) async fn start_slots(
    spec: &PoolSpec,
    local: &LocalSettings,
    clients: &Clients,
    added: &[String],
    diags: &mut Diags,
) -> Vec<String> {
    if added.is_empty() {
        return Vec::new();
    }
    let fail_all = |diags: &mut Diags, path: &str, summary: &str, detail: String| {
        diags.error(Path::attr(path), summary.to_owned(), detail);
        added.to_vec()
    };
    let binary = match launcher::find_binary(local.neutral_binary.as_deref()) {
        Ok(binary) => binary,
        Err(message) => {
            return fail_all(diags, "neutral_binary", "no neutral binary", message);
        }
    };
    // A configured join token, else one minted for this region with the
    // provider's token (`POST /join-tokens`): how the scheduler's runs
    // start agents without the daemon's join token.
    let mut token = join_token(local);
    if token.is_none() && !has_token_file(local) {
        match clients.control_plane.mint_join_token(&spec.region).await {
            Ok(minted) => token = Some(minted),
            Err(err) => {
                return fail_all(
                    diags,
                    "join_token",
                    "no join token for the agents",
                    format!(
                        "Set `join_token` or env {ENV_JOIN_TOKEN}, or give the provider a \
                         token that may mint one for region {} (POST /join-tokens): {err}",
                        spec.region
                    ),
                );
            }
        }
    }
    let Some(live) = live(&clients.control_plane, diags).await else {
        return added.to_vec();
    };
    let used = used_addresses(&live, &local.state_dir);
    let addresses = pool::assign_addresses(&local.address_range, added, &used);
    let control_plane = local
        .control_plane
        .clone()
        .unwrap_or_else(|| clients.control_plane.endpoint().to_owned());
    let mut failed = Vec::new();
    let mut waiting = Vec::new();
    for slot in added {
        let dir = SlotDir::new(&local.state_dir, slot);
        let Some(address) = addresses.get(slot).copied() else {
            diags.error(
                Path::attr("address_range"),
                format!("no free address for slot {slot}"),
                format!("every address of {} is taken", local.address_range),
            );
            failed.push(slot.clone());
            continue;
        };
        // A slot key can come back after its slot was removed: nothing
        // of the old slot may survive into the new one.
        launcher::stop(&dir).await;
        launcher::forget(&dir);
        let launch = AgentLaunch {
            binary: binary.clone(),
            control_plane: control_plane.clone(),
            region: spec.region.clone(),
            slot: slot.clone(),
            address,
            join_token: token.clone(),
            extra_args: local.agent_args.clone(),
            docker: local
                .docker
                .as_ref()
                .map(|(target, binaries)| DockerTarget {
                    binaries: docker_launcher::binaries_dir(binaries.as_deref(), &binary),
                    ..target.clone()
                }),
        };
        match launcher::start(&dir, &launch) {
            Ok(_) => waiting.push((slot.clone(), dir)),
            Err(message) => {
                diags.error(
                    Path::root(),
                    format!("cannot start the agent of slot {slot}"),
                    message,
                );
                failed.push(slot.clone());
            }
        }
    }
    // Wait until every started agent registered.
    let start = Instant::now();
    while !waiting.is_empty() {
        let live = clients.control_plane.nodes().await.unwrap_or_default();
        let registered: BTreeSet<&str> = live.iter().map(|n| n.id.as_str()).collect();
        let mut still = Vec::new();
        for (slot, dir) in waiting {
            if dir
                .node_id()
                .is_some_and(|id| registered.contains(id.as_str()))
            {
                tracing::info!(%slot, "agent registered");
                continue;
            }
            let exited = !dir.running();
            if exited || start.elapsed() > REGISTER_TIMEOUT {
                let why = if exited {
                    "its agent exited".to_owned()
                } else {
                    format!(
                        "it did not register within {}",
                        format_duration(REGISTER_TIMEOUT)
                    )
                };
                diags.error(
                    Path::root(),
                    format!(
                        "slot {slot} of region {} failed to start: {why}",
                        spec.region
                    ),
                    format!(
                        "The agent's log ({}) ends with:\n{}",
                        dir.log_file().display(),
                        dir.log_tail()
                    ),
                );
                launcher::stop(&dir).await;
                if let Some(id) = dir.node_id() {
                    let _ = clients.control_plane.delete_node(&id).await;
                }
                launcher::forget(&dir);
                failed.push(slot);
            } else {
                still.push((slot, dir));
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    failed
}

/// A replaced node goes only once its successor runs: when `failed` new
/// slots did not start (their hosts never registered: a region cut off from
/// the control plane, a broken image), as many leaving slots stay, the most
/// useful first (up, starting, pending, down; never a drained one, which
/// leaves on purpose). Returns the slots still to remove and the keys kept.
///
/// A down node that stays keeps its region counted as failed (a failover
/// source) instead of leaving it with no node at all, which reads as a
/// region still starting; the next run replaces it again.
pub(super) fn keep_for_failed_successors(
    mut leaving: Vec<SlotView>,
    failed: usize,
) -> (Vec<SlotView>, Vec<String>) {
    let usefulness = |status: SlotStatus| match status {
        SlotStatus::Up => 0,
        SlotStatus::Starting => 1,
        SlotStatus::Pending => 2,
        SlotStatus::Down => 3,
        SlotStatus::Drain => 4,
    };
    leaving.sort_by_key(|view| usefulness(view.status));
    let keep = leaving
        .iter()
        .take(failed)
        .take_while(|view| view.status != SlotStatus::Drain)
        .count();
    let kept = leaving.drain(..keep).map(|view| view.key).collect();
    (leaving, kept)
}

/// Removes slots: drains their serving nodes, waits out the TTL and
/// grace, stops their agents (local) and deletes their nodes. Returns
/// the slots that could not be removed.
pub(super) async fn remove_slots(
    spec: &PoolSpec,
    clients: &Clients,
    views: &[SlotView],
    diags: &mut Diags,
) -> Vec<String> {
    if views.is_empty() {
        return Vec::new();
    }
    let control_plane = &clients.control_plane;
    let mut failed = Vec::new();
    let mut drained_for = Vec::new();
    let at = now();
    for view in views {
        let Some(node) = &view.node else { continue };
        match view.status {
            SlotStatus::Up => match control_plane.drain_node(&node.id).await {
                Ok(()) => {
                    tracing::info!(slot = %view.key, node = %node.id, "drained");
                    drained_for.push(Duration::ZERO);
                }
                Err(err) => {
                    diags.error(
                        Path::root(),
                        format!("cannot drain node {} of slot {}", node.id, view.key),
                        err.to_string(),
                    );
                    failed.push(view.key.clone());
                }
            },
            SlotStatus::Drain => {
                let since = parse_time(&node.status_since).unwrap_or(at);
                drained_for.push(at.since(since));
            }
            // Not serving: nothing to wait for.
            _ => {}
        }
    }
    if let Some(shortest_drained) = drained_for.iter().min().copied() {
        let ttls = match serving_ttls(control_plane, &spec.region).await {
            Ok(ttls) => ttls,
            Err(message) => {
                diags.error(
                    Path::root(),
                    "cannot read the TTLs of the region's domains",
                    message,
                );
                return views.iter().map(|v| v.key.clone()).collect();
            }
        };
        let wait = pool::drain_wait(&ttls, spec.drain_grace, shortest_drained);
        tracing::info!(
            region = %spec.region,
            ttl = ttls.iter().max().copied().unwrap_or(0),
            grace = %format_duration(spec.drain_grace),
            wait = %format_duration(wait),
            "waiting for drained nodes to leave resolver caches"
        );
        tokio::time::sleep(wait).await;
    }
    let undrained: BTreeSet<String> = failed.iter().cloned().collect();
    for view in views.iter().filter(|v| !undrained.contains(&v.key)) {
        if let Some(local) = &spec.local {
            launcher::stop(&SlotDir::new(&local.state_dir, &view.key)).await;
        }
        if let Some(id) = view.node_id() {
            if let Err(err) = control_plane.delete_node(id).await {
                diags.error(
                    Path::root(),
                    format!("cannot delete node {id} of slot {}", view.key),
                    err.to_string(),
                );
                failed.push(view.key.clone());
                continue;
            }
            tracing::info!(slot = %view.key, node = %id, "node removed");
        }
        if let Some(local) = &spec.local {
            launcher::forget(&SlotDir::new(&local.state_dir, &view.key));
        }
    }
    failed
}

/// The state after an apply: `planned` with the slots that exist and
/// their nodes as they are now.
pub(super) async fn settled(
    planned: &Value,
    slots: &[String],
    recorded: &BTreeMap<String, String>,
    clients: &Clients,
    diags: &mut Diags,
) -> Value {
    let mut state = planned.clone();
    state.set("slots", strings(slots));
    let live = live(&clients.control_plane, diags)
        .await
        .unwrap_or_default();
    if let Some(observer) = Observer::of(planned) {
        let views = observer.observe(slots, recorded, &live, now());
        set_observed(&mut state, &views);
    }
    state
}
