//! The autoscaler: every `--autoscale-interval`, the core's decision per
//! region from the heartbeat metrics, carried out the GitOps way.
//!
//! A scale-in first marks the chosen nodes `drain` (DNS drops them at once);
//! then the autoscaler rewrites `infra/node-pool/<region>.tfvars` (only the
//! `desired_nodes` value; every other byte kept), commits it as the
//! autoscaler with the reason and numbers in the message, and pushes to the
//! configuration repository (fetch and re-apply on a non-fast-forward, never
//! force; the remote's hooks validate it like any push). The action stays in
//! flight until the change is applied and the nodes registered (or gone), or
//! until the in-flight timeout; no second action for that region meanwhile.
//! A replacement of down nodes changes nothing in Git: it asks for a
//! node-pool run. Decisions are the core's; this module only acts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use neutral_core::autoscale::{self, Action, AutoscaleSettings, Decision, LastAction, NodeSample};
use neutral_core::config::{desired_nodes_in, node_pool_path, set_desired_nodes};
use neutral_core::model::{Declarations, Node, NodeStatus, Timestamp};
use neutral_git::{Author, LEADER_TERM_PUSH_OPTION, Pushed};
use neutral_store::AuditEntry;
use serde_json::json;

use crate::app::App;
use crate::leadership::Role;
use crate::sample_rings::{Cover, Readiness};
use crate::shutdown::Shutdown;
use crate::world::{ChangeEvent, now};

pub async fn run(app: Arc<App>, mut shutdown: Shutdown) {
    if !app.settings.autoscale.enabled {
        tracing::info!("autoscaler off (--no-autoscale)");
        return;
    }
    let mut interval = tokio::time::interval(app.settings.autoscale.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => evaluate(&app).await,
            () = shutdown.wait() => break,
        }
    }
    // The term ended: the next leader (this replica too) reads the store.
    app.write_world().samples.stop();
}

/// How far back metric samples are read: twice the longest window of any
/// policy of a declared region (the core looks back one window before the
/// window start, and reads no sample of an undeclared region).
fn lookback(decl: &Declarations) -> Duration {
    decl.autoscale
        .values()
        .filter(|p| decl.regions.contains_key(&p.region))
        .map(|p| p.scale_up.for_.max(p.scale_down.for_))
        .max()
        .unwrap_or(Duration::ZERO)
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(30))
}

/// The declared regions with an autoscale policy: only their nodes' samples
/// are read (the core reads no sample of a region without one).
fn regions_with_policy(decl: &Declarations) -> BTreeSet<Arc<str>> {
    decl.autoscale
        .keys()
        .filter(|region| decl.regions.contains_key(*region))
        .map(|region| Arc::from(region.as_str()))
        .collect()
}

/// Whether an in-flight action has taken effect: the declarations in force
/// carry its `to`, and the region's registered nodes match it (enough
/// non-drained nodes after growing; the drained ones gone after shrinking;
/// no down node left after a replacement).
pub fn completed(action: &LastAction, region: &str, decl: &Declarations, nodes: &[Node]) -> bool {
    let members: Vec<&Node> = nodes.iter().filter(|n| n.region == region).collect();
    let serving = members
        .iter()
        .filter(|n| n.status != NodeStatus::Drain)
        .count();
    let ready = members
        .iter()
        .filter(|n| n.status == NodeStatus::Up)
        .count();
    let down = members
        .iter()
        .filter(|n| n.status == NodeStatus::Down)
        .count();
    let to = usize::try_from(action.to).unwrap_or(usize::MAX);
    let declared = decl.desired_nodes(region) == action.to;
    if action.to > action.from {
        declared && serving >= to && ready >= to
    } else if action.to < action.from {
        declared && members.len() <= to
    } else {
        down == 0 || ready >= usize::try_from(decl.desired_nodes(region)).unwrap_or(usize::MAX)
    }
}

/// The first line of the commit message: `autoscale(jp): 1 -> 2, cpu 0.82 >
/// 0.75 for 60s`.
pub fn commit_subject(decision: &Decision, from: u32, to: u32) -> String {
    let why = decision
        .reason
        .split("; scale ")
        .next()
        .unwrap_or(&decision.reason)
        .trim();
    format!("autoscale({}): {from} -> {to}, {why}", decision.region)
}

fn commit_message(decision: &Decision, from: u32, to: u32) -> String {
    let mut message = commit_subject(decision, from, to);
    message.push_str("\n\n");
    message.push_str(&decision.reason);
    message.push('\n');
    if !decision.numbers.is_empty() {
        message.push('\n');
        for (key, value) in &decision.numbers {
            message.push_str(&format!("{key}: {value}\n"));
        }
    }
    message.push_str("\nDecided-by: neutral autoscaler\n");
    message
}

/// The metric samples since `since` of the nodes of `wanted`'s regions,
/// from the world's rings (`sample_rings.rs`); the store is read only when
/// they do not cover `wanted` yet (the first evaluation of a term, a longer
/// window, a new region with a policy).
async fn read_samples(
    app: &App,
    wanted: &Cover,
    since: Timestamp,
) -> anyhow::Result<Vec<NodeSample>> {
    let readiness = {
        let mut world = app.write_world();
        let readiness = world.samples.readiness(wanted);
        if readiness == Readiness::Seed {
            world.samples.begin_seed(wanted.clone());
        }
        readiness
    };
    if readiness == Readiness::Seed {
        let regions: BTreeSet<String> = wanted.regions.iter().map(ToString::to_string).collect();
        let stored = app
            .with_store(move |s| s.samples().regional_samples_of(since, Some(&regions)))
            .await?;
        let mut world = app.write_world();
        world.samples.finish_seed(wanted, stored);
        let (nodes, samples) = world.samples.size();
        drop(world);
        tracing::info!(nodes, samples, "autoscaler: samples read from the store");
    }
    // One pointer per node under the lock; the samples are copied after.
    let snapshot = app.write_world().samples.snapshot_since(since);
    Ok(snapshot.samples())
}

pub async fn evaluate(app: &Arc<App>) {
    let at = now();
    let (decl, observed, commit) = {
        let world = app.read_world();
        (
            Arc::clone(&world.decl),
            world.nodes_for_engine(),
            world.commit.clone(),
        )
    };
    if commit.is_none() {
        return;
    }
    let wanted = Cover {
        regions: regions_with_policy(&decl),
        keep: lookback(&decl),
    };
    let since = at.minus(wanted.keep);
    let samples = match read_samples(app, &wanted, since).await {
        Ok(samples) => samples,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "autoscaler cannot read its samples");
            return;
        }
    };
    let mut last = match app.with_store(|s| s.autoscale_state().list()).await {
        Ok(last) => last,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "autoscaler cannot read its inputs");
            return;
        }
    };
    // The engine's view differs from the table's only in a never-ready
    // node's `status_since`, which settling does not read.
    settle_in_flight(app, &mut last, &decl, &observed).await;
    abandon_unpushed(app, &mut last, &decl, at).await;
    let settings = AutoscaleSettings {
        in_flight_timeout: app.settings.autoscale.in_flight_timeout,
    };
    let decisions = autoscale::decide_all(&decl, &observed, &samples, &last, at, &settings);
    {
        let mut world = app.write_world();
        world.decisions.clone_from(&decisions);
        world.decisions_at = Some(at);
    }

    for decision in decisions.values() {
        app.counters.decision(match &decision.action {
            Action::None => "none",
            Action::ScaleOut { .. } => "scale_out",
            Action::ScaleIn { .. } => "scale_in",
            Action::Replace { .. } => "replace",
        });
        let previous = last.get(&decision.region);
        match &decision.action {
            Action::None => {
                if let Some(previous) =
                    previous.filter(|p| p.failover_extra != decision.failover_extra)
                {
                    let updated = LastAction {
                        failover_extra: decision.failover_extra,
                        ..previous.clone()
                    };
                    record(app, &decision.region, updated, &decision.reason, json!({})).await;
                }
            }
            Action::ScaleOut { from, to } => scale(app, decision, *from, *to, &[], at).await,
            Action::ScaleIn { from, to, drain } => {
                scale(app, decision, *from, *to, drain, at).await;
            }
            Action::Replace { nodes: down } => {
                let desired = decl.desired_nodes(&decision.region);
                let action = LastAction {
                    at,
                    from: desired,
                    to: desired,
                    in_flight: true,
                    failover_extra: decision.failover_extra,
                };
                record(
                    app,
                    &decision.region,
                    action,
                    &decision.reason,
                    json!({ "replace": down }),
                )
                .await;
                let _ = app.events.send(ChangeEvent::Autoscale {
                    region: decision.region.clone(),
                    commit: None,
                    summary: format!("replace [{}]: {}", down.join(", "), decision.reason),
                    at,
                });
            }
        }
    }
}

async fn settle_in_flight(
    app: &App,
    last: &mut BTreeMap<String, LastAction>,
    decl: &Declarations,
    nodes: &[Node],
) {
    for (region, action) in last.iter_mut() {
        if action.in_flight && completed(action, region, decl, nodes) {
            action.in_flight = false;
            let reason = format!("{} -> {} took effect", action.from, action.to);
            record(
                app,
                region,
                action.clone(),
                &reason,
                json!({ "completed": true }),
            )
            .await;
        }
    }
}

/// Ends the in-flight scale actions that can never take effect: their `to`
/// is neither declared nor in the node-pool file at the Git tip. A leader
/// records an action before it pushes; one killed or deposed in between (or
/// whose push the remote refused) leaves such an action behind, which would
/// otherwise hold the region until the in-flight timeout. A pushed action is
/// undeclared too until the next sync applies it, so only actions older
/// than two sync intervals are looked up in Git: the remote is fetched only
/// for an action that is already late, not after every push.
async fn abandon_unpushed(
    app: &App,
    last: &mut BTreeMap<String, LastAction>,
    decl: &Declarations,
    now: Timestamp,
) {
    let late =
        i64::try_from(app.settings.sync_interval.saturating_mul(2).as_millis()).unwrap_or(i64::MAX);
    let pending: Vec<String> = last
        .iter()
        .filter(|(region, a)| {
            a.in_flight
                && a.from != a.to
                && decl.desired_nodes(region) != a.to
                && now.millis().saturating_sub(a.at.millis()) >= late
        })
        .map(|(region, _)| region.clone())
        .collect();
    if pending.is_empty() {
        return;
    }
    let mirror = Arc::clone(&app.mirror);
    let read = tokio::task::spawn_blocking(move || {
        let mirror = mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending
            .into_iter()
            .map(|region| {
                let text = mirror.file_at_tip(&node_pool_path(&region));
                (region, text)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(tips) = read else {
        return;
    };
    for (region, text) in tips {
        let at_tip = match text {
            Ok(text) => text.and_then(|t| desired_nodes_in(&t, &region)),
            Err(err) => {
                tracing::warn!(%region, "cannot read the Git tip to settle an in-flight action: {err}");
                continue;
            }
        };
        let Some(action) = last.get_mut(&region) else {
            continue;
        };
        if at_tip == Some(action.to) {
            continue;
        }
        let reason = format!(
            "{} -> {} was recorded but never reached Git (the tip declares {}): abandoned",
            action.from,
            action.to,
            at_tip.map_or_else(|| "no readable count".to_owned(), |n| n.to_string())
        );
        tracing::warn!(%region, "{reason}");
        action.in_flight = false;
        action.to = action.from;
        record(
            app,
            &region,
            action.clone(),
            &reason,
            json!({ "abandoned": true, "at_tip": at_tip }),
        )
        .await;
    }
}

async fn record(
    app: &App,
    region: &str,
    action: LastAction,
    reason: &str,
    detail: serde_json::Value,
) {
    let (region, reason) = (region.to_owned(), reason.to_owned());
    let result = app
        .with_store(move |s| {
            s.autoscale_state()
                .put(&region, &action, "autoscaler", &reason, &detail)
        })
        .await;
    if let Err(err) = result {
        tracing::error!(error = %format!("{err:#}"), "cannot record an autoscale action");
    }
}

/// Env var naming an arm file (crash tests only): while the file exists, the
/// autoscaler waits (at most a minute) between a push and what it records
/// after it, so a test can kill the leader exactly there.
pub const FAULT_PAUSE_AFTER_PUSH: &str = "NEUTRAL_FAULT_PAUSE_AFTER_AUTOSCALE_PUSH";
/// The same, between the intent it records and its push, so a test can
/// freeze the leader there.
pub const FAULT_PAUSE_BEFORE_PUSH: &str = "NEUTRAL_FAULT_PAUSE_BEFORE_AUTOSCALE_PUSH";

/// Waits while the arm file `var` names exists (crash tests only).
async fn fault_pause(var: &str, when: &str) {
    let Some(arm) = std::env::var_os(var) else {
        return;
    };
    let arm = std::path::PathBuf::from(arm);
    if !arm.exists() {
        return;
    }
    tracing::warn!(arm = %arm.display(), "fault point: pausing {when} an autoscale push");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while arm.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records `action` before it is carried out; whether it was stored. The
/// write is fenced: a replica that no longer leads is refused, and takes no
/// action.
async fn record_intent(app: &App, region: &str, action: LastAction, reason: &str) -> bool {
    let (region, reason) = (region.to_owned(), reason.to_owned());
    let result = app
        .with_store(move |s| {
            s.autoscale_state().put(
                &region,
                &action,
                "autoscaler",
                &reason,
                &json!({ "intent": true }),
            )
        })
        .await;
    match result {
        Ok(_) => true,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "autoscale action not taken: it could not be recorded first");
            false
        }
    }
}

async fn set_drained(app: &App, ids: &[String], drained: bool) {
    {
        let mut world = app.write_world();
        for id in ids {
            if let Some(mut entry) = world.nodes.get_mut(id) {
                entry.liveness.drained = drained;
            }
        }
    }
    app.reconcile("autoscaler").await;
}

async fn scale(
    app: &Arc<App>,
    decision: &Decision,
    from: u32,
    to: u32,
    drain: &[String],
    at: Timestamp,
) {
    let region = decision.region.clone();
    // The term this leader decides under; the store's fence and the remote's
    // hook both hold its writes to it.
    let term = match app.leadership.role() {
        Role::Leader { term } => Some(term),
        Role::Sole => None,
        Role::Follower { .. } => return,
    };
    // Recorded ahead, in flight, through the store's fence: a leader deposed
    // meanwhile (frozen past its lease) stops here instead of draining and
    // pushing, and a leader killed after its push leaves the action in
    // flight, so its successor waits for the change instead of deciding the
    // same one again (a second commit).
    let intent = LastAction {
        at,
        from,
        to,
        in_flight: true,
        failover_extra: decision.failover_extra,
    };
    let subject = commit_subject(decision, from, to);
    if !record_intent(app, &region, intent, &format!("{subject}: committing")).await {
        return;
    }
    if !drain.is_empty() {
        set_drained(app, drain, true).await;
        app.audit(AuditEntry {
            at,
            actor: "autoscaler".into(),
            kind: "autoscale.drain".into(),
            subject: region.clone(),
            message: format!("drain [{}] before {from} -> {to}", drain.join(", ")),
            commit: None,
            data: json!({ "nodes": drain }),
        })
        .await;
    }
    let path = node_pool_path(&region);
    let message = commit_message(decision, from, to);
    let author = Author {
        name: app.settings.autoscale.author_name.clone(),
        email: app.settings.autoscale.author_email.clone(),
    };
    fault_pause(FAULT_PAUSE_BEFORE_PUSH, "before").await;
    if let Some(term) = term
        && app.leadership.role() != (Role::Leader { term })
    {
        tracing::warn!(%region, term, "deposed before pushing; not pushing: {subject}");
        if !drain.is_empty() {
            set_drained(app, drain, false).await;
        }
        return;
    }
    // The remote's hook refuses the push unless the term still leads: a
    // leader frozen between the check above and its push lands nothing.
    let push_options: Vec<String> = term
        .map(|term| format!("{LEADER_TERM_PUSH_OPTION}={term}"))
        .into_iter()
        .collect();
    let mirror = Arc::clone(&app.mirror);
    let edit_region = region.clone();
    let pushed = tokio::task::spawn_blocking(move || {
        let mirror = mirror.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        mirror.commit_file_and_push(
            &path,
            |text| match text {
                Some(text) => set_desired_nodes(text, to).map(Some).map_err(|e| e.to_string()),
                None => Ok(Some(format!(
                    "# Node pool of region {edit_region}; desired_nodes is also written by the autoscaler.\nregion        = \"{edit_region}\"\ndesired_nodes = {to}\n"
                ))),
            },
            &message,
            &author,
            5,
            &push_options,
        )
    })
    .await;
    let outcome = match pushed {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(format!("autoscaler task failed: {err}")),
    };
    match outcome {
        Ok(Pushed::Commit {
            sha,
            attempts,
            options_dropped,
        }) => {
            tracing::info!(%region, %sha, attempts, "{subject}");
            if options_dropped {
                tracing::warn!(
                    "the configuration repository does not take push options, so its hook \
                     cannot refuse a deposed leader's push; `neutral hooks install` sets \
                     receive.advertisePushOptions"
                );
            }
            fault_pause(FAULT_PAUSE_AFTER_PUSH, "after").await;
            let action = LastAction {
                at,
                from,
                to,
                in_flight: true,
                failover_extra: decision.failover_extra,
            };
            let detail = json!({ "commit": sha, "numbers": decision.numbers, "drain": drain });
            record(app, &region, action, &subject, detail).await;
            let _ = app.events.send(ChangeEvent::Autoscale {
                region: region.clone(),
                commit: Some(sha),
                summary: subject,
                at,
            });
            // Apply the new desired count at once rather than at the next tick.
            let app = Arc::clone(app);
            tokio::spawn(async move {
                let _ = app.request_sync(Duration::from_secs(60)).await;
            });
        }
        Ok(Pushed::Unchanged { head }) => {
            tracing::info!(%region, %head, "node pool already at {to}; nothing to commit");
            let action = LastAction {
                at,
                from,
                to,
                in_flight: true,
                failover_extra: decision.failover_extra,
            };
            record(
                app,
                &region,
                action,
                &format!("{subject} (already committed)"),
                json!({ "commit": head }),
            )
            .await;
        }
        Err(error) => {
            tracing::error!(%region, %error, "autoscale push failed: {subject}");
            if !drain.is_empty() {
                set_drained(app, drain, false).await;
            }
            // Hold off for a cooldown instead of retrying every interval.
            let action = LastAction {
                at,
                from,
                to: from,
                in_flight: false,
                failover_extra: decision.failover_extra,
            };
            record(
                app,
                &region,
                action,
                &format!("{subject}: push failed"),
                json!({ "error": error }),
            )
            .await;
            app.audit(AuditEntry {
                at,
                actor: "autoscaler".into(),
                kind: "autoscale.failed".into(),
                subject: region,
                message: format!("{subject}: {error}"),
                commit: None,
                data: serde_json::Value::Null,
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neutral_core::model::{CloudProvider, DeclaredRegionState, NodeMode, NodePoolDecl, Region};

    fn decl(desired: u32) -> Declarations {
        let mut decl = Declarations::default();
        decl.regions.insert(
            "jp".into(),
            Region {
                name: "jp".into(),
                provider: CloudProvider::Local,
                min_nodes: 1,
                max_nodes: 5,
                base_weight: 100,
                state: DeclaredRegionState::Up,
                failover: vec![],
            },
        );
        decl.node_pools.insert(
            "jp".into(),
            NodePoolDecl {
                region: "jp".into(),
                desired_nodes: desired,
            },
        );
        decl
    }

    fn node(id: &str, status: NodeStatus) -> Node {
        Node {
            id: id.into(),
            region: "jp".into(),
            address: "127.0.0.2".parse().unwrap(),
            status,
            status_since: Timestamp(0),
            mode: NodeMode::ContainerdOnly,
            last_heartbeat: None,
            metrics: None,
        }
    }

    fn action(from: u32, to: u32) -> LastAction {
        LastAction {
            at: Timestamp(0),
            from,
            to,
            in_flight: true,
            failover_extra: 0,
        }
    }

    fn policy(region: &str, window_secs: u64) -> neutral_core::model::AutoscalePolicy {
        use neutral_core::model::{AutoscalePolicy, ScaleDownRule, ScaleUpRule};
        AutoscalePolicy {
            region: region.into(),
            scale_up: ScaleUpRule {
                cpu_above: Some(0.75),
                rtt_ms_above: None,
                error_rate_above: None,
                for_: Duration::from_secs(window_secs),
                step: 1,
            },
            scale_down: ScaleDownRule {
                cpu_below: Some(0.3),
                rtt_ms_below: None,
                error_rate_below: None,
                for_: Duration::from_secs(window_secs / 2),
                step: 1,
            },
            cooldown: Duration::from_secs(60),
            failover_capacity: false,
        }
    }

    #[test]
    fn samples_are_read_back_twice_the_longest_window_of_a_declared_regions_policy() {
        let mut decl = decl(1);
        assert_eq!(lookback(&decl), Duration::from_secs(30), "no policy");
        decl.autoscale.insert("jp".into(), policy("jp", 60));
        assert_eq!(lookback(&decl), Duration::from_secs(150));
        // A policy whose region is not declared reads no sample.
        decl.autoscale.insert("gone".into(), policy("gone", 3600));
        assert_eq!(lookback(&decl), Duration::from_secs(150));
        assert_eq!(
            regions_with_policy(&decl),
            BTreeSet::from([Arc::from("jp")])
        );
    }

    #[test]
    fn a_scale_out_completes_once_applied_and_the_new_nodes_are_ready() {
        let one = [node("a", NodeStatus::Up)];
        let two = [node("a", NodeStatus::Up), node("b", NodeStatus::Up)];
        let registering = [node("a", NodeStatus::Up), node("b", NodeStatus::Down)];
        assert!(
            !completed(&action(1, 2), "jp", &decl(1), &two),
            "commit not applied yet"
        );
        assert!(!completed(&action(1, 2), "jp", &decl(2), &one));
        assert!(!completed(&action(1, 2), "jp", &decl(2), &registering));
        assert!(completed(&action(1, 2), "jp", &decl(2), &two));
    }

    #[test]
    fn a_scale_in_completes_when_the_drained_node_is_gone() {
        let draining = [node("a", NodeStatus::Up), node("b", NodeStatus::Drain)];
        let gone = [node("a", NodeStatus::Up)];
        assert!(!completed(&action(2, 1), "jp", &decl(1), &draining));
        assert!(completed(&action(2, 1), "jp", &decl(1), &gone));
    }

    #[test]
    fn a_replacement_completes_when_nothing_is_down() {
        let down = [node("a", NodeStatus::Down)];
        let replaced = [node("b", NodeStatus::Up)];
        assert!(!completed(&action(1, 1), "jp", &decl(1), &down));
        assert!(completed(&action(1, 1), "jp", &decl(1), &replaced));
    }

    #[test]
    fn commit_subjects_carry_the_reason_and_numbers() {
        let decision = Decision {
            region: "jp".into(),
            action: Action::ScaleOut { from: 1, to: 2 },
            reason: "cpu 0.82 > 0.75 for 60s; scale out 1 -> 2".into(),
            numbers: BTreeMap::from([("cpu".to_owned(), 0.82), ("cpu_above".to_owned(), 0.75)]),
            failover_extra: 0,
        };
        assert_eq!(
            commit_subject(&decision, 1, 2),
            "autoscale(jp): 1 -> 2, cpu 0.82 > 0.75 for 60s"
        );
        let message = commit_message(&decision, 1, 2);
        assert!(
            message.contains("\ncpu: 0.82\ncpu_above: 0.75\n"),
            "{message}"
        );
    }
}
