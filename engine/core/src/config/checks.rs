//! Semantic checks across the decoded objects of a repository: references to
//! regions, node-count bounds, domains and zones, TTL floors, domains left
//! without traffic, a region failing over to itself, flapping autoscale
//! thresholds. Failover cycles are valid (see [`crate::failover`]).
//!
//! This module owns every rule that needs more than one field's value, and
//! reports each problem at the place a person would fix it. It works on
//! whatever decoding could read: a field that failed to decode is skipped
//! (it has been reported already), so one mistake does not cascade into
//! misleading follow-up errors. It must not parse anything.

use std::collections::{BTreeMap, BTreeSet};

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
            if *target == region.name {
                self.out.push(Diagnostic::error(
                    &decoded.path,
                    places.at(&format!("failover.{target}")),
                    format!(
                        "region `{target}` lists itself in `failover`: a region cannot fail over to itself"
                    ),
                ));
            } else if !self.regions.contains_key(target.as_str()) {
                self.out.push(Diagnostic::error(
                    &decoded.path,
                    places.at(&format!("failover.{target}")),
                    unknown_region(target),
                ));
            }
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
        let mut all_limits_known = true;
        // Regions that can take traffic, with their max_nodes.
        let mut limits: Vec<(&str, u32)> = Vec::new();
        let mut too_small = Vec::new();
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
            all_limits_known &= max_nodes_ok;
            if region.state != DeclaredRegionState::Down && weight > 0 {
                limits.push((*name, region.max_nodes));
            }
            if places.ok("min_ready_nodes")
                && max_nodes_ok
                && policy.min_ready_nodes > region.max_nodes
            {
                too_small.push(Diagnostic::warning(
                    path,
                    places.at("min_ready_nodes"),
                    format!(
                        "`min_ready_nodes` ({}) is above region {name}'s max_nodes ({}): {name} can never serve {}",
                        policy.min_ready_nodes, region.max_nodes, policy.domain
                    ),
                ));
            }
        }
        let never = (places.ok("min_ready_nodes") && all_known && all_limits_known)
            .then(|| never_servable(&policy.domain, policy.min_ready_nodes, &limits))
            .flatten();
        if let Some(message) = never {
            self.out.push(Diagnostic::error(
                path,
                places.at("min_ready_nodes"),
                message,
            ));
        } else {
            self.out.append(&mut too_small);
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

/// A domain that can never be served normally: `min_ready_nodes` above the
/// `max_nodes` of every region that can take its traffic (`limits`: name and
/// `max_nodes` of each serving region with weight above 0 not declared
/// down), so it would live in its `all_down` policy forever. The message
/// names the field and every region's limit; `None` when some region can
/// reach `min_ready_nodes`, or when no region takes traffic (reported as
/// "no traffic" instead). Shared with the what-if checks.
pub fn never_servable(
    domain: &str,
    min_ready_nodes: u32,
    limits: &[(&str, u32)],
) -> Option<String> {
    if limits.is_empty() || limits.iter().any(|(_, max)| *max >= min_ready_nodes) {
        return None;
    }
    let listed: Vec<String> = limits
        .iter()
        .map(|(name, max)| format!("{name} max_nodes {max}"))
        .collect();
    Some(format!(
        "`min_ready_nodes` ({min_ready_nodes}) is above the max_nodes of every region serving `{domain}` ({}): it could never be served normally, only by its all_down policy",
        listed.join(", ")
    ))
}

#[cfg(test)]
mod tests;
