//! Semantic checks across the decoded objects of a repository: references to
//! regions, node-count bounds, domains and zones, TTL floors, domains left
//! without traffic, failover cycles, flapping autoscale thresholds.
//!
//! This module owns every rule that needs more than one field's value, and
//! reports each problem at the place a person would fix it. It works on
//! whatever decoding could read: a field that failed to decode is skipped
//! (it has been reported already), so one mistake does not cascade into
//! misleading follow-up errors. It must not parse anything.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::diag::{Diagnostic, Severity};
use crate::model::{
    AutoscalePolicy, DeclaredRegionState, GtmPolicy, NodePoolDecl, Region, format_duration,
};

use super::decode::Decoded;

/// The decoded files of a repository, each list sorted by path.
#[derive(Debug, Default)]
pub struct Decls {
    pub regions: Vec<Decoded<Region>>,
    pub gtm: Vec<Decoded<GtmPolicy>>,
    pub autoscale: Vec<Decoded<AutoscalePolicy>>,
    pub pools: Vec<Decoded<NodePoolDecl>>,
}

/// What the checks found besides diagnostics.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Indexes into `Decls::gtm` of policies whose domain an earlier file
    /// already declared.
    pub duplicate_gtm: BTreeSet<usize>,
}

pub fn run(decls: &Decls, out: &mut Vec<Diagnostic>) -> Outcome {
    let regions: BTreeMap<&str, &Decoded<Region>> = decls
        .regions
        .iter()
        .map(|decoded| (decoded.stem.as_str(), decoded))
        .collect();
    let checker = Checker { regions, out };
    checker.run(decls)
}

struct Checker<'a, 'o> {
    /// Every region file by name, decoded or not: a reference to a region
    /// whose file is broken is not "unknown".
    regions: BTreeMap<&'a str, &'a Decoded<Region>>,
    out: &'o mut Vec<Diagnostic>,
}

fn unknown_region(name: &str) -> String {
    format!("unknown region `{name}`: there is no platform-config/regions/{name}.yaml")
}

impl<'a> Checker<'a, '_> {
    fn run(mut self, decls: &'a Decls) -> Outcome {
        for region in &decls.regions {
            self.region(region);
        }
        self.failover_cycles(&decls.regions);
        for pool in &decls.pools {
            self.node_pool(pool);
        }
        for policy in &decls.autoscale {
            self.autoscale(policy);
        }
        let mut outcome = Outcome::default();
        let mut domains: BTreeMap<&str, &str> = BTreeMap::new();
        for (index, policy) in decls.gtm.iter().enumerate() {
            if let Some(value) = policy.value.as_ref().filter(|_| policy.places.ok("domain")) {
                if let Some(first) = domains.get(value.domain.as_str()) {
                    self.out.push(Diagnostic::error(
                        &policy.path,
                        policy.places.at("domain"),
                        format!("domain `{}` is already declared in {first}", value.domain),
                    ));
                    outcome.duplicate_gtm.insert(index);
                } else {
                    domains.insert(&value.domain, &policy.path);
                }
            }
            self.gtm(policy);
        }
        outcome
    }

    /// The decoded region `name`, if its file held a mapping.
    fn region_value(&self, name: &str) -> Option<&'a Decoded<Region>> {
        self.regions
            .get(name)
            .copied()
            .filter(|decoded| decoded.value.is_some())
    }

    fn region(&mut self, decoded: &Decoded<Region>) {
        let Some(region) = &decoded.value else {
            return;
        };
        let places = &decoded.places;
        if places.ok("min_nodes") && places.ok("max_nodes") && region.min_nodes > region.max_nodes {
            self.out.push(Diagnostic::error(
                &decoded.path,
                places.at("min_nodes"),
                format!(
                    "`min_nodes` ({}) is greater than `max_nodes` ({})",
                    region.min_nodes, region.max_nodes
                ),
            ));
        }
        for target in &region.failover {
            if !self.regions.contains_key(target.as_str()) {
                self.out.push(Diagnostic::error(
                    &decoded.path,
                    places.at(&format!("failover.{target}")),
                    unknown_region(target),
                ));
            }
        }
    }

    /// Reports each strongly connected group of regions in the failover graph
    /// once, with its shortest cycle through its first region by name.
    fn failover_cycles(&mut self, regions: &[Decoded<Region>]) {
        let nodes: Vec<(&Decoded<Region>, &Region)> = regions
            .iter()
            .filter_map(|decoded| decoded.value.as_ref().map(|region| (decoded, region)))
            .collect();
        let index: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, (decoded, _))| (decoded.stem.as_str(), i))
            .collect();
        let edges: Vec<Vec<usize>> = nodes
            .iter()
            .map(|(_, region)| {
                region
                    .failover
                    .iter()
                    .filter_map(|target| index.get(target.as_str()).copied())
                    .collect()
            })
            .collect();
        for component in strongly_connected(&edges) {
            let self_loop = component.len() == 1
                && component.first().is_some_and(|&only| {
                    edges
                        .get(only)
                        .is_some_and(|targets| targets.contains(&only))
                });
            if component.len() < 2 && !self_loop {
                continue;
            }
            let Some(&start) = component
                .iter()
                .min_by_key(|&&i| nodes.get(i).map(|(decoded, _)| decoded.stem.as_str()))
            else {
                continue;
            };
            let members: BTreeSet<usize> = component.iter().copied().collect();
            let Some(cycle) = shortest_cycle(&edges, &members, start) else {
                continue;
            };
            let names: Vec<&str> = cycle
                .iter()
                .chain(cycle.first())
                .filter_map(|&i| nodes.get(i).map(|(decoded, _)| decoded.stem.as_str()))
                .collect();
            let Some((decoded, _)) = nodes.get(start) else {
                continue;
            };
            let next = names.get(1).copied().unwrap_or_default();
            let hint = if self_loop {
                " (a region cannot fail over to itself)"
            } else {
                ""
            };
            self.out.push(Diagnostic::error(
                &decoded.path,
                decoded
                    .places
                    .at_or(&format!("failover.{next}"), "failover"),
                format!("failover cycle: {}{hint}", names.join(" -> ")),
            ));
        }
    }

    fn node_pool(&mut self, decoded: &Decoded<NodePoolDecl>) {
        let Some(pool) = &decoded.value else {
            return;
        };
        if !decoded.places.ok("region") {
            return;
        }
        if !self.regions.contains_key(pool.region.as_str()) {
            self.out.push(Diagnostic::error(
                &decoded.path,
                decoded.places.at("region"),
                unknown_region(&pool.region),
            ));
            return;
        }
        let Some(region_file) = self.region_value(&pool.region) else {
            return;
        };
        let Some(region) = &region_file.value else {
            return;
        };
        let bounds_ok = decoded.places.ok("desired_nodes")
            && region_file.places.ok("min_nodes")
            && region_file.places.ok("max_nodes")
            && region.min_nodes <= region.max_nodes;
        let outside =
            pool.desired_nodes < region.min_nodes || pool.desired_nodes > region.max_nodes;
        if bounds_ok && outside {
            self.out.push(Diagnostic::error(
                &decoded.path,
                decoded.places.at("desired_nodes"),
                format!(
                    "`desired_nodes` ({}) is outside region {}'s bounds [min_nodes {}, max_nodes {}]",
                    pool.desired_nodes, region.name, region.min_nodes, region.max_nodes
                ),
            ));
        }
    }

    fn autoscale(&mut self, decoded: &Decoded<AutoscalePolicy>) {
        let Some(policy) = &decoded.value else {
            return;
        };
        if decoded.places.ok("region") && !self.regions.contains_key(policy.region.as_str()) {
            self.out.push(Diagnostic::error(
                &decoded.path,
                decoded.places.at("region"),
                unknown_region(&policy.region),
            ));
        }
        let up = &policy.scale_up;
        let down = &policy.scale_down;
        let pairs = [
            ("cpu_below", down.cpu_below, "cpu_above", up.cpu_above),
            (
                "rtt_ms_below",
                down.rtt_ms_below,
                "rtt_ms_above",
                up.rtt_ms_above,
            ),
            (
                "error_rate_below",
                down.error_rate_below,
                "error_rate_above",
                up.error_rate_above,
            ),
        ];
        for (below_name, below, above_name, above) in pairs {
            if let (Some(below), Some(above)) = (below, above)
                && below >= above
            {
                self.out.push(Diagnostic::error(
                        &decoded.path,
                        decoded.places.at(&format!("scale_down.{below_name}")),
                        format!(
                            "`scale_down.{below_name}` ({below}) must be below `scale_up.{above_name}` ({above}), or the region would flap between scaling up and down"
                        ),
                    ));
            }
        }
    }

    fn gtm(&mut self, decoded: &Decoded<GtmPolicy>) {
        let Some(policy) = &decoded.value else {
            return;
        };
        let places = &decoded.places;
        let path = decoded.path.as_str();
        if places.ok("domain")
            && places.ok("zone")
            && policy.domain != policy.zone
            && !policy.domain.ends_with(&format!(".{}", policy.zone))
        {
            self.out.push(Diagnostic::error(
                path,
                places.at("domain"),
                format!(
                    "domain `{}` is not in zone `{}`",
                    policy.domain, policy.zone
                ),
            ));
        }
        if places.ok("ttl") && places.ok("dns") {
            self.ttl(decoded, policy);
        }
        let probe = &policy.probe;
        if places.ok("probe.timeout")
            && places.ok("probe.interval")
            && probe.timeout >= probe.interval
        {
            self.out.push(Diagnostic::error(
                path,
                places.at_or("probe.timeout", "probe"),
                format!(
                    "`probe.timeout` ({}) must be shorter than `probe.interval` ({})",
                    format_duration(probe.timeout),
                    format_duration(probe.interval)
                ),
            ));
        }
        for (region, _) in policy
            .regions
            .iter()
            .filter(|(name, _)| !self.regions.contains_key(name.as_str()))
        {
            self.out.push(Diagnostic::error(
                path,
                places.at(&format!("regions.{region}")),
                unknown_region(region),
            ));
        }
        if places.ok("regions") && places.ok("domain") {
            self.serving_regions(decoded, policy);
        }
    }

    fn ttl(&mut self, decoded: &Decoded<GtmPolicy>, policy: &GtmPolicy) {
        let dns = policy.dns;
        let ttl = policy.ttl;
        let at = decoded.places.at_or("ttl", "dns");
        let defaulted = decoded.places.get("ttl").is_none();
        match dns.ttl_check(ttl, defaulted) {
            Some((Severity::Error, message)) => {
                self.out.push(Diagnostic::error(&decoded.path, at, message));
            }
            Some((Severity::Warning, message)) => {
                self.out
                    .push(Diagnostic::warning(&decoded.path, at, message));
            }
            None => {}
        }
    }

    /// A domain must have a region that can take traffic, and
    /// `min_ready_nodes` must be reachable in the regions it serves.
    fn serving_regions(&mut self, decoded: &Decoded<GtmPolicy>, policy: &GtmPolicy) {
        let path = decoded.path.as_str();
        let places = &decoded.places;
        let serving: Vec<&str> = if policy.regions.is_empty() {
            self.regions.keys().copied().collect()
        } else {
            policy
                .regions
                .keys()
                .map(String::as_str)
                .filter(|name| self.regions.contains_key(name))
                .collect()
        };
        if serving.is_empty() {
            if policy.regions.is_empty() {
                self.out.push(Diagnostic::error(
                    path,
                    places.start,
                    format!(
                        "domain `{}` has no region to serve it: no region is declared in platform-config/regions/",
                        policy.domain
                    ),
                ));
            }
            return;
        }
        let mut reasons = Vec::new();
        let mut any_traffic = false;
        let mut all_known = true;
        for name in &serving {
            let Some(region_file) = self.region_value(name) else {
                all_known = false;
                continue;
            };
            let Some(region) = &region_file.value else {
                continue;
            };
            let weight = policy
                .regions
                .get(*name)
                .copied()
                .unwrap_or(region.base_weight);
            let weight_known =
                policy.regions.contains_key(*name) || region_file.places.ok("base_weight");
            all_known &= weight_known && region_file.places.ok("state");
            if region.state == DeclaredRegionState::Down {
                reasons.push(format!("{name}: state down"));
            } else if weight == 0 {
                reasons.push(format!("{name}: weight 0"));
            } else {
                any_traffic = true;
            }
            let max_nodes_ok = region_file.places.ok("max_nodes");
            if places.ok("min_ready_nodes")
                && max_nodes_ok
                && policy.min_ready_nodes > region.max_nodes
            {
                self.out.push(Diagnostic::warning(
                    path,
                    places.at("min_ready_nodes"),
                    format!(
                        "`min_ready_nodes` ({}) is above region {name}'s max_nodes ({}): {name} can never serve {}",
                        policy.min_ready_nodes, region.max_nodes, policy.domain
                    ),
                ));
            }
        }
        if !any_traffic && all_known {
            self.out.push(Diagnostic::error(
                path,
                places.at("regions"),
                format!(
                    "domain `{}` would get no traffic: every region serving it has weight 0 or is declared down ({})",
                    policy.domain,
                    reasons.join(", ")
                ),
            ));
        }
    }
}

/// Tarjan's strongly connected components, iteratively (no recursion, so a
/// long failover chain cannot overflow the stack). `edges[v]` lists the
/// successors of `v`; out-of-range successors are ignored.
pub fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let count = edges.len();
    let mut order = vec![UNVISITED; count];
    let mut low = vec![0usize; count];
    let mut on_stack = vec![false; count];
    let mut stack: Vec<usize> = Vec::new();
    let mut next_order = 0usize;
    let mut components = Vec::new();
    for root in 0..count {
        if order.get(root) != Some(&UNVISITED) {
            continue;
        }
        // (vertex, index of its next edge to explore)
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        visit(root, &mut order, &mut low, &mut next_order);
        stack.push(root);
        set(&mut on_stack, root, true);
        while let Some(&(vertex, edge)) = calls.last() {
            let successor = edges
                .get(vertex)
                .and_then(|targets| targets.get(edge))
                .copied();
            if let Some(call) = calls.last_mut() {
                call.1 = edge.saturating_add(1);
            }
            match successor {
                Some(target) if target >= count => {}
                Some(target) if order.get(target) == Some(&UNVISITED) => {
                    visit(target, &mut order, &mut low, &mut next_order);
                    stack.push(target);
                    set(&mut on_stack, target, true);
                    calls.push((target, 0));
                }
                Some(target) => {
                    if on_stack.get(target) == Some(&true) {
                        let target_order = order.get(target).copied().unwrap_or(UNVISITED);
                        lower(&mut low, vertex, target_order);
                    }
                }
                None => {
                    calls.pop();
                    let vertex_low = low.get(vertex).copied().unwrap_or(0);
                    if let Some(&(parent, _)) = calls.last() {
                        lower(&mut low, parent, vertex_low);
                    }
                    if order.get(vertex) == Some(&vertex_low) {
                        let mut component = Vec::new();
                        while let Some(member) = stack.pop() {
                            set(&mut on_stack, member, false);
                            component.push(member);
                            if member == vertex {
                                break;
                            }
                        }
                        components.push(component);
                    }
                }
            }
        }
    }
    components
}

fn visit(vertex: usize, order: &mut [usize], low: &mut [usize], next_order: &mut usize) {
    if let Some(slot) = order.get_mut(vertex) {
        *slot = *next_order;
    }
    if let Some(slot) = low.get_mut(vertex) {
        *slot = *next_order;
    }
    *next_order = next_order.saturating_add(1);
}

fn set(flags: &mut [bool], index: usize, value: bool) {
    if let Some(flag) = flags.get_mut(index) {
        *flag = value;
    }
}

fn lower(low: &mut [usize], index: usize, value: usize) {
    if let Some(slot) = low.get_mut(index) {
        *slot = (*slot).min(value);
    }
}

/// The shortest cycle through `start` inside `members`, as the list of its
/// vertices starting at `start` (without repeating it at the end).
fn shortest_cycle(
    edges: &[Vec<usize>],
    members: &BTreeSet<usize>,
    start: usize,
) -> Option<Vec<usize>> {
    let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(vertex) = queue.pop_front() {
        for &target in edges.get(vertex).into_iter().flatten() {
            if target == start {
                let mut cycle = vec![vertex];
                let mut current = vertex;
                while current != start {
                    current = *parent.get(&current)?;
                    cycle.push(current);
                }
                cycle.reverse();
                return Some(cycle);
            }
            if members.contains(&target) && !parent.contains_key(&target) {
                parent.insert(target, vertex);
                queue.push_back(target);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut components: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
        for component in &mut components {
            component.sort_unstable();
        }
        components.sort();
        components
    }

    #[test]
    fn strongly_connected_components_group_mutual_reachability() {
        // 0 -> 1 -> 2 -> 0, 2 -> 3, 3 -> 3, 4 alone, 5 -> 9 (out of range)
        let edges = vec![vec![1], vec![2], vec![0, 3], vec![3], vec![], vec![9]];
        assert_eq!(
            sorted(strongly_connected(&edges)),
            vec![vec![0, 1, 2], vec![3], vec![4], vec![5]]
        );
    }

    #[test]
    fn long_chains_do_not_recurse() {
        let count = 100_000;
        let edges: Vec<Vec<usize>> = (0..count).map(|i| vec![(i + 1) % count]).collect();
        let components = strongly_connected(&edges);
        assert_eq!(components.len(), 1);
        assert_eq!(components[0].len(), count);
    }

    #[test]
    fn shortest_cycles_start_at_the_given_vertex() {
        // 0 -> 1 -> 2 -> 0 and 0 -> 2 -> 0
        let edges = vec![vec![1, 2], vec![2], vec![0]];
        let members: BTreeSet<usize> = [0, 1, 2].into();
        assert_eq!(shortest_cycle(&edges, &members, 0), Some(vec![0, 2]));
        assert_eq!(shortest_cycle(&edges, &members, 1), Some(vec![1, 2, 0]));
        let self_loop = vec![vec![0]];
        assert_eq!(shortest_cycle(&self_loop, &[0].into(), 0), Some(vec![0]));
    }
}
