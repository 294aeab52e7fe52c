//! What-if checks: what a configuration change would do to live traffic.
//!
//! Static validation ([`crate::config`]) judges a tree on its own. This module
//! judges a *change* against the nodes the control plane sees right now: given
//! the declarations before and after the change and the live nodes, it
//! projects the world the change converges to and reports a change that would
//! take away a domain's last traffic. The Git hooks call it for a push or a
//! commit when the control plane answered. It must not fetch nodes, read a
//! clock or decide whether a push is accepted: the caller hands in the nodes
//! and `now`, and acts on the diagnostics.
//!
//! # Rules
//!
//! 1. **Projection.** For each region whose node pool is declared
//!    (`infra/node-pool/<region>.tfvars`), Terraform converges the pool to
//!    `desired_nodes`: ready nodes beyond that count are treated as drained
//!    (the last ones by id; which ones does not change any count). Nodes a
//!    larger count would add are not counted: they are not ready yet.
//!    Regions without a declared pool keep their nodes as they are.
//! 2. **Weights** before and after are [`weights::compute`] over the
//!    projected nodes, with no previous answers (so `last_known_good` and the
//!    split-brain guard cannot hide a region at 0).
//! 3. **Reported:** a domain declared both before and after, with positive
//!    effective weight in some region before and every region at weight 0
//!    after. The error is placed at the change that took each of those
//!    regions out: `state: down` in the region file, its weight (the domain's
//!    `regions.<r>` or the region's `base_weight`), its removal from the
//!    domain's `regions`, or `desired_nodes` of its node pool when the
//!    projection leaves it below `min_ready_nodes`. A change that is not
//!    about one region (e.g. a higher `min_ready_nodes`, another record type)
//!    is reported at that field of the domain's policy. When one region
//!    carried the domain's traffic before, the message says the change drains
//!    the domain's last ready region.
//! 4. **Not reported:** new domains and domains without traffic before. A
//!    change cannot take away traffic that is not there, and the first push of
//!    a deployment declares domains before any node exists.
//! 5. **Never servable,** whatever the nodes: a domain (new or not) whose
//!    `min_ready_nodes` is above the `max_nodes` of every region that can take
//!    its traffic would only ever be served by its `all_down` policy. This is
//!    static validation's rule ([`checks::never_servable`]), checked here too
//!    so a caller that runs the what-if alone refuses it as well; reported
//!    at the domain's `min_ready_nodes` instead of rule 3's message.
//!
//! The checks assume `after` passed static validation: objects whose files
//! failed to decode are missing from [`Declarations`], which would look like
//! removed regions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::config::{self, FileRole, ObjectKind, RepoFile, checks};
use crate::diag::{Diagnostic, Pos};
use crate::health;
use crate::model::{Declarations, DeclaredRegionState, GtmPolicy, Node, NodeStatus, Timestamp};
use crate::weights::{self, DomainWeights, RegionWeight, WeightSettings};

/// A configuration change and the world it lands in.
#[derive(Copy, Clone, Debug)]
pub struct Change<'a> {
    /// What is declared now (the branch tip before a push; `HEAD` for a
    /// commit). Empty for a new branch or repository.
    pub before: &'a Declarations,
    /// What the change declares; must have passed static validation.
    pub after: &'a Declarations,
    /// The files `after` was loaded from, to place diagnostics.
    pub after_files: &'a [RepoFile],
}

/// Why a region that served a domain before serves it with weight 0 after.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cause {
    /// The region file is gone.
    RegionRemoved,
    /// `state: down`.
    DeclaredDown,
    /// The domain no longer lists the region.
    LeftDomain,
    /// Its weight for the domain is 0: the domain's `regions.<r>` when it
    /// overrides, else the region's `base_weight`.
    WeightZero { in_policy: bool },
    /// Its node pool shrinks below what the domain needs ready.
    PoolShrunk { desired: u32 },
    /// Something about the domain, not the region.
    Domain,
}

/// Checks `change` against the live `nodes`; see the [module docs](self).
/// Diagnostics come sorted as [`config::load`]'s do.
pub fn check(
    change: &Change<'_>,
    nodes: &[Node],
    now: Timestamp,
    settings: &WeightSettings,
) -> Vec<Diagnostic> {
    let no_previous = BTreeMap::new();
    let before_nodes = project(change.before, nodes);
    let after_nodes = project(change.after, nodes);
    let before = weights::compute(change.before, &before_nodes, &no_previous, now, settings);
    let after = weights::compute(change.after, &after_nodes, &no_previous, now, settings);
    let mut diagnostics = Vec::new();
    let mut never = BTreeSet::new();
    for policy in change.after.gtm.values() {
        if let Some(message) = never_servable(change.after, policy) {
            let path = object_path(change.after_files, ObjectKind::Gtm, &policy.name)
                .unwrap_or_else(|| format!("platform-config/gtm/{}.yaml", policy.name));
            let pos =
                config::locate(change.after_files, &path, "min_ready_nodes").unwrap_or(Pos::START);
            diagnostics.push(Diagnostic::error(path, pos, message));
            never.insert(policy.domain.as_str());
        }
    }
    for (domain, after_weights) in &after.domains {
        if after_weights.regions.iter().any(|r| r.effective > 0) || never.contains(&**domain) {
            continue;
        }
        let Some(before_weights) = before.domains.get(domain) else {
            continue;
        };
        let lost: Vec<&RegionWeight> = before_weights
            .regions
            .iter()
            .filter(|r| r.effective > 0)
            .collect();
        if lost.is_empty() {
            continue;
        }
        let Some(policy) = change.after.gtm.get(&**domain) else {
            continue;
        };
        let context = DomainContext {
            change,
            policy,
            before_policy: change.before.gtm.get(&**domain),
            nodes,
            after_nodes: &after_nodes,
        };
        let causes: Vec<(&RegionWeight, Cause)> = lost
            .iter()
            .map(|r| (*r, context.cause(&r.region)))
            .collect();
        let message = message(change.after, &causes, after_weights);
        let places: BTreeSet<(String, Pos)> = causes
            .iter()
            .map(|(region, cause)| context.place(&region.region, cause))
            .collect();
        for (path, pos) in places {
            diagnostics.push(Diagnostic::error(path, pos, message.clone()));
        }
    }
    config::sort_diagnostics(&mut diagnostics);
    diagnostics
}

/// Rule 5: the static rule [`checks::never_servable`] on `decl`: every
/// region that can take the domain's traffic has fewer `max_nodes` than its
/// `min_ready_nodes`.
fn never_servable(decl: &Declarations, policy: &GtmPolicy) -> Option<String> {
    let limits: Vec<(&str, u32)> = decl
        .regions
        .values()
        .filter(|r| {
            r.state != DeclaredRegionState::Down
                && health::serves(decl, policy, &r.name)
                && decl.base_weight(policy, &r.name) > 0
        })
        .map(|r| (r.name.as_str(), r.max_nodes))
        .collect();
    checks::never_servable(&policy.domain, policy.min_ready_nodes, &limits)
}

/// Rule 1: the nodes as they will be once every declared pool is at its
/// `desired_nodes`.
fn project(decl: &Declarations, nodes: &[Node]) -> Vec<Node> {
    let mut by_region: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        if node.status == NodeStatus::Up {
            by_region
                .entry(node.region.as_str())
                .or_default()
                .push(index);
        }
    }
    let mut projected = nodes.to_vec();
    for (region, mut ready) in by_region {
        let Some(pool) = decl.node_pools.get(region) else {
            continue;
        };
        ready.sort_by(|&a, &b| {
            let key = |i: usize| nodes.get(i).map(|n| (n.id.as_str(), n.address));
            key(a).cmp(&key(b))
        });
        let keep = usize::try_from(pool.desired_nodes).unwrap_or(usize::MAX);
        for index in ready.into_iter().skip(keep) {
            if let Some(node) = projected.get_mut(index) {
                node.status = NodeStatus::Drain;
            }
        }
    }
    projected
}

/// What one reported domain's causes are judged against.
struct DomainContext<'a> {
    change: &'a Change<'a>,
    policy: &'a GtmPolicy,
    before_policy: Option<&'a GtmPolicy>,
    nodes: &'a [Node],
    after_nodes: &'a [Node],
}

impl DomainContext<'_> {
    fn cause(&self, region: &str) -> Cause {
        let after = self.change.after;
        let Some(declared) = after.regions.get(region) else {
            return Cause::RegionRemoved;
        };
        if declared.state == DeclaredRegionState::Down {
            return Cause::DeclaredDown;
        }
        if !health::serves(after, self.policy, region) {
            return Cause::LeftDomain;
        }
        if after.base_weight(self.policy, region) == 0 {
            return Cause::WeightZero {
                in_policy: self.policy.regions.contains_key(region),
            };
        }
        let ready = |nodes: &[Node]| {
            nodes
                .iter()
                .filter(|n| n.region == region && n.status == NodeStatus::Up)
                .count()
        };
        let ready_after = ready(self.after_nodes);
        let shrunk = ready_after < ready(self.nodes)
            && u32::try_from(ready_after).unwrap_or(u32::MAX) < self.policy.min_ready_nodes;
        match after.node_pools.get(region) {
            Some(pool) if shrunk => Cause::PoolShrunk {
                desired: pool.desired_nodes,
            },
            _ => Cause::Domain,
        }
    }

    /// The file and position a cause of `region` is reported at.
    fn place(&self, region: &str, cause: &Cause) -> (String, Pos) {
        let files = self.change.after_files;
        let region_file = |kind| object_path(files, kind, region);
        let gtm_file = || object_path(files, ObjectKind::Gtm, &self.policy.name);
        let (path, field) = match cause {
            Cause::DeclaredDown => (region_file(ObjectKind::Region), "state".to_owned()),
            Cause::WeightZero { in_policy: false } => {
                (region_file(ObjectKind::Region), "base_weight".to_owned())
            }
            Cause::PoolShrunk { .. } => (
                region_file(ObjectKind::NodePool),
                "desired_nodes".to_owned(),
            ),
            Cause::WeightZero { in_policy: true } => (gtm_file(), format!("regions.{region}")),
            Cause::RegionRemoved | Cause::LeftDomain => (gtm_file(), "regions".to_owned()),
            Cause::Domain => (gtm_file(), self.changed_domain_field().to_owned()),
        };
        let path = path
            .or_else(gtm_file)
            .unwrap_or_else(|| format!("platform-config/gtm/{}.yaml", self.policy.name));
        let pos = config::locate(files, &path, &field).unwrap_or(Pos::START);
        (path, pos)
    }

    /// The field of the domain's policy that changed and can zero every
    /// region at once.
    fn changed_domain_field(&self) -> &'static str {
        let Some(before) = self.before_policy else {
            return "regions";
        };
        if before.min_ready_nodes != self.policy.min_ready_nodes {
            "min_ready_nodes"
        } else if before.record_type != self.policy.record_type {
            "type"
        } else {
            "regions"
        }
    }
}

/// The path of the file declaring object `name` of `kind` in `files`.
fn object_path(files: &[RepoFile], kind: ObjectKind, name: &str) -> Option<String> {
    files
        .iter()
        .find(|f| config::file_role(&f.path) == FileRole::Object { kind, name })
        .map(|f| f.path.clone())
}

fn message(
    after: &Declarations,
    causes: &[(&RegionWeight, Cause)],
    after_weights: &DomainWeights,
) -> String {
    let domain = &after_weights.domain;
    let mut live = String::new();
    for (region, cause) in causes {
        if !live.is_empty() {
            live.push_str(", ");
        }
        let _ = write!(
            live,
            "{} {} -> 0 ({})",
            region.region,
            region.effective,
            cause_text(&region.region, cause)
        );
    }
    for region in &after_weights.regions {
        if causes.iter().any(|(lost, _)| lost.region == region.region) {
            continue;
        }
        let _ = write!(live, ", {} 0 ({})", region.region, zero_text(after, region));
    }
    match causes {
        [(region, _)] => format!(
            "this change drains `{}`, the last ready region of `{domain}`: every region would be at weight 0 with the nodes live now ({live})",
            region.region
        ),
        _ => format!(
            "this change leaves `{domain}` with every region at weight 0 with the nodes live now ({live})"
        ),
    }
}

fn cause_text(region: &str, cause: &Cause) -> String {
    match cause {
        Cause::RegionRemoved => format!("region {region} removed"),
        Cause::DeclaredDown => "declared state: down".to_owned(),
        Cause::LeftDomain => "no longer in the domain's regions".to_owned(),
        Cause::WeightZero { .. } => "weight 0".to_owned(),
        Cause::PoolShrunk { desired } => format!("desired_nodes = {desired}"),
        Cause::Domain => "the domain's policy changed".to_owned(),
    }
}

/// Why a region that had no traffic before is at 0 after.
fn zero_text(after: &Declarations, region: &RegionWeight) -> String {
    let declared_down = after
        .regions
        .get(&*region.region)
        .is_some_and(|r| r.state == DeclaredRegionState::Down);
    if declared_down {
        "declared state: down".to_owned()
    } else if region.base == 0 {
        "weight 0".to_owned()
    } else {
        format!(
            "{}, {} of {} ready",
            region.health.as_str(),
            region.ready,
            region.expected
        )
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use proptest::prelude::*;

    use super::*;
    use crate::config::FileContent;
    use crate::model::NodeMode;

    const NOW: i64 = 1_000_000;

    fn jp(extra: &str) -> String {
        format!("name: jp\nprovider: local\nmin_nodes: 0\nmax_nodes: 5\nbase_weight: 100\n{extra}")
    }

    fn sg(extra: &str) -> String {
        format!("name: sg\nprovider: local\nmin_nodes: 1\nmax_nodes: 5\nbase_weight: 50\n{extra}")
    }

    fn app(extra: &str) -> String {
        format!("domain: app.example.com\nzone: example.com\nttl: 30\n{extra}")
    }

    fn pool(region: &str, desired: u32) -> String {
        format!("region        = \"{region}\"\ndesired_nodes = {desired}\n")
    }

    /// jp (100) and sg (50), one node each wanted, and `app.example.com`
    /// served by both.
    fn base_tree() -> Vec<(String, String)> {
        vec![
            ("platform-config/regions/jp.yaml".into(), jp("")),
            ("platform-config/regions/sg.yaml".into(), sg("")),
            (
                "platform-config/gtm/app.yaml".into(),
                app("regions: { jp: 100, sg: 50 }\n"),
            ),
            ("infra/node-pool/jp.tfvars".into(), pool("jp", 1)),
            ("infra/node-pool/sg.tfvars".into(), pool("sg", 1)),
        ]
    }

    fn with(tree: &[(String, String)], path: &str, text: &str) -> Vec<(String, String)> {
        let mut tree: Vec<(String, String)> =
            tree.iter().filter(|(p, _)| p != path).cloned().collect();
        tree.push((path.to_owned(), text.to_owned()));
        tree
    }

    fn without(tree: &[(String, String)], path: &str) -> Vec<(String, String)> {
        tree.iter().filter(|(p, _)| p != path).cloned().collect()
    }

    fn files(tree: &[(String, String)]) -> Vec<RepoFile> {
        tree.iter()
            .map(|(path, text)| RepoFile {
                path: path.clone(),
                content: FileContent::Bytes(text.clone().into_bytes()),
            })
            .collect()
    }

    fn node(id: &str, region: &str, address: &str, status: NodeStatus) -> Node {
        Node {
            id: id.to_owned(),
            region: region.to_owned(),
            address: address.parse().unwrap(),
            status,
            status_since: Timestamp(0),
            mode: NodeMode::ContainerdOnly,
            last_heartbeat: None,
            metrics: None,
        }
    }

    /// jp has one ready node, sg's only node is down.
    fn live() -> Vec<Node> {
        vec![
            node("jp-1", "jp", "192.0.2.1", NodeStatus::Up),
            node("sg-1", "sg", "192.0.2.2", NodeStatus::Down),
        ]
    }

    fn run(before: &[(String, String)], after: &[(String, String)], nodes: &[Node]) -> String {
        let before = config::load(&files(before));
        let after_files = files(after);
        let after = config::load(&after_files);
        assert!(before.is_valid(), "{:?}", before.diagnostics);
        assert!(after.is_valid(), "{:?}", after.diagnostics);
        let change = Change {
            before: &before.declarations,
            after: &after.declarations,
            after_files: &after_files,
        };
        check(&change, nodes, Timestamp(NOW), &WeightSettings::default())
            .iter()
            .map(|d| format!("{d}\n"))
            .collect()
    }

    fn check_change(after: &[(String, String)], nodes: &[Node], expected: &Expect) {
        expected.assert_eq(&run(&base_tree(), after, nodes));
    }

    #[test]
    fn a_domain_that_can_never_be_served_normally_is_refused_like_static_validation() {
        // min_ready_nodes 9 with jp and sg at max_nodes 5: traffic before, and
        // new domains too (rule 5 does not need traffic before).
        let after = with(
            &with(
                &base_tree(),
                "platform-config/gtm/app.yaml",
                &app("min_ready_nodes: 9\nregions: { jp: 100, sg: 50 }\n"),
            ),
            "platform-config/gtm/new.yaml",
            "domain: new.example.com\nzone: example.com\nmin_ready_nodes: 6\n",
        );
        let before = config::load(&files(&base_tree()));
        let after_files = files(&after);
        let loaded = config::load(&after_files);
        let change = Change {
            before: &before.declarations,
            after: &loaded.declarations,
            after_files: &after_files,
        };
        let found: String = check(&change, &live(), Timestamp(NOW), &WeightSettings::default())
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        expect![[r#"
            platform-config/gtm/app.yaml:4:18: error: `min_ready_nodes` (9) is above the max_nodes of every region serving `app.example.com` (jp max_nodes 5, sg max_nodes 5): it could never be served normally, only by its all_down policy
            platform-config/gtm/new.yaml:3:18: error: `min_ready_nodes` (6) is above the max_nodes of every region serving `new.example.com` (jp max_nodes 5, sg max_nodes 5): it could never be served normally, only by its all_down policy
        "#]]
        .assert_eq(&found);
        let statically: String = loaded
            .diagnostics
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        assert_eq!(found, statically);
        // Lowering min_ready_nodes to what one region can reach is fine.
        let fine = with(
            &base_tree(),
            "platform-config/gtm/app.yaml",
            &app("min_ready_nodes: 5\nregions: { jp: 100, sg: 50 }\n"),
        );
        let loaded = config::load(&files(&fine));
        assert!(
            loaded
                .declarations
                .gtm
                .values()
                .all(|p| never_servable(&loaded.declarations, p).is_none())
        );
    }

    #[test]
    fn declaring_the_last_ready_region_down_drains_it() {
        let after = with(
            &base_tree(),
            "platform-config/regions/jp.yaml",
            &jp("state: down\n"),
        );
        check_change(
            &after,
            &live(),
            &expect![[r#"
                platform-config/regions/jp.yaml:6:8: error: this change drains `jp`, the last ready region of `app.example.com`: every region would be at weight 0 with the nodes live now (jp 100 -> 0 (declared state: down), sg 0 (down, 0 of 1 ready))
            "#]],
        );
    }

    #[test]
    fn a_change_that_leaves_another_ready_region_is_not_reported() {
        let after = with(
            &base_tree(),
            "platform-config/regions/jp.yaml",
            &jp("state: down\n"),
        );
        let nodes = vec![
            node("jp-1", "jp", "192.0.2.1", NodeStatus::Up),
            node("sg-1", "sg", "192.0.2.2", NodeStatus::Up),
        ];
        check_change(&after, &nodes, &expect![""]);
    }

    #[test]
    fn a_domain_without_traffic_before_is_not_reported() {
        // Bootstrap: the domain exists, no node is ready yet.
        let after = with(
            &base_tree(),
            "platform-config/regions/jp.yaml",
            &jp("state: down\n"),
        );
        let nodes = vec![node("sg-1", "sg", "192.0.2.2", NodeStatus::Down)];
        check_change(&after, &nodes, &expect![""]);
        check_change(&after, &[], &expect![""]);
    }

    #[test]
    fn a_new_domain_without_ready_nodes_is_not_reported() {
        let before = without(&base_tree(), "platform-config/gtm/app.yaml");
        let after = with(
            &base_tree(),
            "platform-config/regions/jp.yaml",
            &jp("state: down\n"),
        );
        expect![""].assert_eq(&run(&before, &after, &live()));
    }

    #[test]
    fn a_zero_weight_in_the_domain_is_reported_at_that_region_key() {
        let after = with(
            &base_tree(),
            "platform-config/gtm/app.yaml",
            &app("regions: { jp: 0, sg: 50 }\n"),
        );
        check_change(
            &after,
            &live(),
            &expect![[r#"
                platform-config/gtm/app.yaml:4:12: error: this change drains `jp`, the last ready region of `app.example.com`: every region would be at weight 0 with the nodes live now (jp 100 -> 0 (weight 0), sg 0 (down, 0 of 1 ready))
            "#]],
        );
    }

    #[test]
    fn a_zero_base_weight_is_reported_in_the_region_file() {
        let before = with(
            &base_tree(),
            "platform-config/gtm/app.yaml",
            &app("regions: {}\n"),
        );
        let after = with(
            &before,
            "platform-config/regions/jp.yaml",
            &jp("").replace("base_weight: 100", "base_weight: 0"),
        );
        expect![[r#"
            platform-config/regions/jp.yaml:5:14: error: this change drains `jp`, the last ready region of `app.example.com`: every region would be at weight 0 with the nodes live now (jp 100 -> 0 (weight 0), sg 0 (down, 0 of 1 ready))
        "#]]
        .assert_eq(&run(&before, &after, &live()));
    }

    #[test]
    fn removing_the_region_from_the_domain_is_reported_at_regions() {
        let after = with(
            &base_tree(),
            "platform-config/gtm/app.yaml",
            &app("regions: { sg: 50 }\n"),
        );
        check_change(
            &after,
            &live(),
            &expect![[r#"
                platform-config/gtm/app.yaml:4:10: error: this change drains `jp`, the last ready region of `app.example.com`: every region would be at weight 0 with the nodes live now (jp 100 -> 0 (no longer in the domain's regions), sg 0 (down, 0 of 1 ready))
            "#]],
        );
    }

    #[test]
    fn shrinking_the_last_ready_pool_to_zero_is_reported_at_desired_nodes() {
        let after = with(&base_tree(), "infra/node-pool/jp.tfvars", &pool("jp", 0));
        check_change(
            &after,
            &live(),
            &expect![[r#"
                infra/node-pool/jp.tfvars:2:17: error: this change drains `jp`, the last ready region of `app.example.com`: every region would be at weight 0 with the nodes live now (jp 100 -> 0 (desired_nodes = 0), sg 0 (down, 0 of 1 ready))
            "#]],
        );
    }

    #[test]
    fn shrinking_a_pool_that_keeps_ready_nodes_is_not_reported() {
        let after = with(&base_tree(), "infra/node-pool/jp.tfvars", &pool("jp", 1));
        let nodes = vec![
            node("jp-1", "jp", "192.0.2.1", NodeStatus::Up),
            node("jp-2", "jp", "192.0.2.3", NodeStatus::Up),
        ];
        let before = with(&base_tree(), "infra/node-pool/jp.tfvars", &pool("jp", 2));
        expect![""].assert_eq(&run(&before, &after, &nodes));
    }

    #[test]
    fn losing_several_regions_at_once_is_reported_at_each_change() {
        let nodes = vec![
            node("jp-1", "jp", "192.0.2.1", NodeStatus::Up),
            node("sg-1", "sg", "192.0.2.2", NodeStatus::Up),
        ];
        let after = with(
            &with(&base_tree(), "infra/node-pool/jp.tfvars", &pool("jp", 0)),
            "platform-config/gtm/app.yaml",
            &app("regions: { jp: 100, sg: 0 }\n"),
        );
        check_change(
            &after,
            &nodes,
            &expect![[r#"
                infra/node-pool/jp.tfvars:2:17: error: this change leaves `app.example.com` with every region at weight 0 with the nodes live now (jp 100 -> 0 (desired_nodes = 0), sg 50 -> 0 (weight 0))
                platform-config/gtm/app.yaml:4:21: error: this change leaves `app.example.com` with every region at weight 0 with the nodes live now (jp 100 -> 0 (desired_nodes = 0), sg 50 -> 0 (weight 0))
            "#]],
        );
    }

    #[test]
    fn a_domain_wide_change_is_reported_at_the_changed_field() {
        let after = with(
            &base_tree(),
            "platform-config/gtm/app.yaml",
            &app("regions: { jp: 100, sg: 50 }\nmin_ready_nodes: 2\n"),
        );
        check_change(
            &after,
            &live(),
            &expect![[r#"
                platform-config/gtm/app.yaml:5:18: error: this change drains `jp`, the last ready region of `app.example.com`: every region would be at weight 0 with the nodes live now (jp 100 -> 0 (the domain's policy changed), sg 0 (down, 0 of 1 ready))
            "#]],
        );
    }

    #[test]
    fn projection_drains_ready_nodes_beyond_desired_nodes_only_for_declared_pools() {
        let mut decl = Declarations::default();
        decl.node_pools.insert(
            "jp".into(),
            crate::model::NodePoolDecl {
                region: "jp".into(),
                desired_nodes: 1,
            },
        );
        let nodes = vec![
            node("jp-2", "jp", "192.0.2.2", NodeStatus::Up),
            node("jp-1", "jp", "192.0.2.1", NodeStatus::Up),
            node("jp-0", "jp", "192.0.2.9", NodeStatus::Down),
            node("sg-1", "sg", "192.0.2.3", NodeStatus::Up),
            node("sg-2", "sg", "192.0.2.4", NodeStatus::Up),
        ];
        let statuses: Vec<(String, &str)> = project(&decl, &nodes)
            .into_iter()
            .map(|n| (n.id, n.status.as_str()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("jp-2".to_owned(), "drain"),
                ("jp-1".to_owned(), "up"),
                ("jp-0".to_owned(), "down"),
                ("sg-1".to_owned(), "up"),
                ("sg-2".to_owned(), "up"),
            ]
        );
    }

    fn status() -> impl Strategy<Value = NodeStatus> {
        prop_oneof![
            Just(NodeStatus::Up),
            Just(NodeStatus::Down),
            Just(NodeStatus::Drain)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn an_unchanged_tree_is_never_reported(
            statuses in proptest::collection::vec((any::<bool>(), status()), 0..8),
            jp_down in any::<bool>(),
        ) {
            let tree = if jp_down {
                with(&base_tree(), "platform-config/regions/jp.yaml", &jp("state: down\n"))
            } else {
                base_tree()
            };
            let nodes: Vec<Node> = statuses
                .iter()
                .enumerate()
                .map(|(i, &(in_jp, status))| {
                    let region = if in_jp { "jp" } else { "sg" };
                    node(&format!("{region}-{i}"), region, &format!("192.0.2.{}", i + 1), status)
                })
                .collect();
            prop_assert_eq!(run(&tree, &tree, &nodes), "");
        }

        #[test]
        fn reports_only_domains_left_without_weight(
            statuses in proptest::collection::vec((any::<bool>(), status()), 0..8),
            jp_down in any::<bool>(),
            sg_weight in 0u32..3,
            jp_desired in 0u32..3,
        ) {
            // Static validation already rejects a domain declared without traffic.
            prop_assume!(!(jp_down && sg_weight == 0));
            let nodes: Vec<Node> = statuses
                .iter()
                .enumerate()
                .map(|(i, &(in_jp, status))| {
                    let region = if in_jp { "jp" } else { "sg" };
                    node(&format!("{region}-{i}"), region, &format!("192.0.2.{}", i + 1), status)
                })
                .collect();
            let mut after = with(
                &base_tree(),
                "platform-config/gtm/app.yaml",
                &app(&format!("regions: {{ jp: 100, sg: {sg_weight} }}\n")),
            );
            after = with(&after, "infra/node-pool/jp.tfvars", &pool("jp", jp_desired));
            if jp_down {
                after = with(&after, "platform-config/regions/jp.yaml", &jp("state: down\n"));
            }
            let reported = !run(&base_tree(), &after, &nodes).is_empty();
            let ready = |region: &str| nodes.iter().filter(|n| n.region == region && n.status == NodeStatus::Up).count();
            let jp_ready_after = ready("jp").min(jp_desired as usize);
            let had_traffic = ready("jp") > 0 || ready("sg") > 0;
            let traffic_after = (!jp_down && jp_ready_after > 0) || (sg_weight > 0 && ready("sg") > 0);
            prop_assert_eq!(reported, had_traffic && !traffic_after);
        }
    }
}
