//! Node pools: which slots a region's pool keeps, adds, removes and replaces
//! ([`plan_slots`]), what a slot's node is doing ([`slot_status`]), which
//! addresses a local pool's new nodes take ([`AddressRange`]) and how long a
//! drained node must stay before it is stopped ([`drain_wait`]).
//!
//! This module owns those rules. It must not start, stop or drain anything,
//! read a clock or look at processes: the Terraform provider observes the
//! slots (control plane and agent processes), calls these functions, and
//! carries out the result.
//!
//! # Slots
//!
//! A slot is one place for a node, named by a stable key `<region>-<n>`
//! ([`slot_key`]). A key never changes while its slot exists; new slots
//! take numbers above every current one, so a plan never reuses a key that
//! is still in the pool (a key may come back after its slot was removed).
//! Slots are ordered by number: a higher number is a newer slot.
//!
//! # The plan ([`plan_slots`])
//!
//! The pool size is `desired_nodes` clamped to `[min_nodes, max_nodes]`.
//!
//! 1. **Scale in.** With more slots than that, the excess is removed in
//!    this order: drained nodes, down nodes, slots without a node yet,
//!    starting nodes, then ready nodes — newest first within each group.
//!    So a ready node is never removed while a drained or down one exists,
//!    and nodes the operator or the autoscaler drained go first.
//! 2. **Self-heal.** Every down node left gets a new slot that replaces it.
//!    Drained nodes are not replaced: drain is not a failure.
//! 3. **Scale out.** With fewer slots than the size, new slots are added.
//!
//! Every change carries its reason, naming the slot and its node.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{NodeStatus, Timestamp};

/// What a slot's node is doing.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// Its node is `up`: it serves traffic.
    Up,
    /// Its node was started and is not ready yet: not registered, or
    /// registered and waiting for its first successful checks.
    Starting,
    /// No node has registered for it (external launcher: its machine is
    /// still being created).
    Pending,
    /// Its node is drained: out of the answers, to be removed.
    Drain,
    /// Its node failed: `down` after being ready, its agent exited, or it
    /// never became ready within the starting grace.
    Down,
}

impl SlotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Up => "up",
            SlotStatus::Starting => "starting",
            SlotStatus::Pending => "pending",
            SlotStatus::Drain => "drain",
            SlotStatus::Down => "down",
        }
    }

    /// Removal order on scale-in: lower goes first.
    fn removal_rank(self) -> u8 {
        match self {
            SlotStatus::Drain => 0,
            SlotStatus::Down => 1,
            SlotStatus::Pending => 2,
            SlotStatus::Starting => 3,
            SlotStatus::Up => 4,
        }
    }

    /// Why a slot of this status goes at this point of a scale-in.
    fn removal_note(self) -> &'static str {
        match self {
            SlotStatus::Drain => "drained nodes go first",
            SlotStatus::Down => "down nodes go right after drained ones",
            SlotStatus::Pending => "no node has registered for it",
            SlotStatus::Starting => "not serving yet",
            SlotStatus::Up => "no drained, down or starting node is left, so the newest goes",
        }
    }
}

impl fmt::Display for SlotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key of slot number `index` of `region`'s pool.
pub fn slot_key(region: &str, index: u64) -> String {
    format!("{region}-{index}")
}

/// The number in a slot key of `region`'s pool; `None` for a key of
/// another form.
pub fn slot_index(region: &str, key: &str) -> Option<u64> {
    let digits = key.strip_prefix(region)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One slot of the pool as it is now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentSlot {
    pub key: String,
    pub status: SlotStatus,
    /// The id of its node, when one registered.
    pub node: Option<String>,
}

/// A slot the plan removes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    pub key: String,
    pub node: Option<String>,
    /// Its status when the plan was made.
    pub status: SlotStatus,
    /// The slot that takes its place (self-heal), if any.
    pub replaced_by: Option<String>,
}

/// What [`plan_slots`] decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotPlan {
    /// The pool size: `desired_nodes` clamped to `[min_nodes, max_nodes]`.
    pub size: u32,
    /// Every slot after the plan, oldest first.
    pub slots: Vec<String>,
    /// Current slots that stay.
    pub keep: Vec<String>,
    /// New slots, in the order they are numbered.
    pub add: Vec<String>,
    /// Slots that go: scale-in removals first (in removal order), then
    /// replaced down nodes.
    pub remove: Vec<Removal>,
    /// One line per decision, naming slots, nodes and numbers.
    pub reasons: Vec<String>,
}

impl SlotPlan {
    /// Whether the plan adds or removes anything.
    pub fn changes(&self) -> bool {
        !self.add.is_empty() || !self.remove.is_empty()
    }

    /// `(down slot, new slot)` for every replacement.
    pub fn replacements(&self) -> impl Iterator<Item = (&str, &str)> {
        self.remove
            .iter()
            .filter_map(|r| Some((r.key.as_str(), r.replaced_by.as_deref()?)))
    }
}

/// The largest pool [`plan_slots`] plans.
pub const MAX_NODES: u32 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("min_nodes ({min}) is greater than max_nodes ({max})")]
    MinAboveMax { min: u32, max: u32 },
    #[error("max_nodes ({0}) is above {MAX_NODES}")]
    TooLarge(u32),
    #[error("no slot number is left above {0}")]
    KeysExhausted(u64),
}

fn node_phrase(slot: &CurrentSlot) -> String {
    match (&slot.node, slot.status) {
        (Some(node), SlotStatus::Drain) => format!("its node {node} is drained"),
        (Some(node), status) => format!("its node {node} is {status}"),
        (None, SlotStatus::Pending) => "no node has registered for it".to_owned(),
        (None, status) => format!("it has no registered node ({status})"),
    }
}

fn plural(count: u32, one: &str, many: &str) -> String {
    if count == 1 {
        format!("{count} {one}")
    } else {
        format!("{count} {many}")
    }
}

/// Plans `region`'s slots: keeps, removes, replaces and adds so that the
/// pool holds `desired` clamped to `[min, max]` slots with no down node.
/// See the [module docs](self) for the rules. `current` is taken in any
/// order; a repeated key counts once (its first entry).
pub fn plan_slots(
    region: &str,
    current: &[CurrentSlot],
    desired: u32,
    min: u32,
    max: u32,
) -> Result<SlotPlan, PoolError> {
    if min > max {
        return Err(PoolError::MinAboveMax { min, max });
    }
    if max > MAX_NODES {
        return Err(PoolError::TooLarge(max));
    }
    let size = desired.clamp(min, max);
    let mut seen = BTreeSet::new();
    let mut slots: Vec<(u64, &CurrentSlot)> = current
        .iter()
        .filter(|slot| seen.insert(slot.key.as_str()))
        .map(|slot| (slot_index(region, &slot.key).unwrap_or(0), slot))
        .collect();
    slots.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.key.cmp(&y.key)));
    let count = u32::try_from(slots.len()).unwrap_or(u32::MAX);
    let mut next_index = slots.iter().map(|(index, _)| *index).max().unwrap_or(0);
    let mut new_key = || -> Result<String, PoolError> {
        next_index = next_index
            .checked_add(1)
            .ok_or(PoolError::KeysExhausted(next_index))?;
        Ok(slot_key(region, next_index))
    };

    let mut reasons = vec![if desired > max {
        format!(
            "desired_nodes {desired} is above max_nodes {max}: {}",
            plural(size, "slot", "slots")
        )
    } else if desired < min {
        format!(
            "desired_nodes {desired} is below min_nodes {min}: {}",
            plural(size, "slot", "slots")
        )
    } else {
        format!(
            "desired_nodes {desired} within [{min}, {max}]: {}",
            plural(size, "slot", "slots")
        )
    }];

    // 1. Scale in: the excess in removal order.
    let excess = usize::try_from(count.saturating_sub(size)).unwrap_or(usize::MAX);
    let mut by_removal: Vec<&(u64, &CurrentSlot)> = slots.iter().collect();
    by_removal.sort_by(|(a, x), (b, y)| {
        x.status
            .removal_rank()
            .cmp(&y.status.removal_rank())
            .then_with(|| b.cmp(a))
            .then_with(|| y.key.cmp(&x.key))
    });
    let mut remove: Vec<Removal> = Vec::new();
    let mut removed: BTreeSet<&str> = BTreeSet::new();
    for (_, slot) in by_removal.into_iter().take(excess) {
        reasons.push(format!(
            "remove {}: scale in {count} → {size}; {} ({})",
            slot.key,
            node_phrase(slot),
            slot.status.removal_note()
        ));
        removed.insert(&slot.key);
        remove.push(Removal {
            key: slot.key.clone(),
            node: slot.node.clone(),
            status: slot.status,
            replaced_by: None,
        });
    }

    // 2. Self-heal: a new slot for every down node left.
    let mut add = Vec::new();
    let mut keep = Vec::new();
    for (_, slot) in &slots {
        if removed.contains(slot.key.as_str()) {
            continue;
        }
        if slot.status == SlotStatus::Down {
            let key = new_key()?;
            reasons.push(format!(
                "replace {} by {key}: {}",
                slot.key,
                node_phrase(slot)
            ));
            add.push(key.clone());
            remove.push(Removal {
                key: slot.key.clone(),
                node: slot.node.clone(),
                status: slot.status,
                replaced_by: Some(key),
            });
        } else {
            keep.push(slot.key.clone());
        }
    }

    // 3. Scale out.
    let serving = keep.len().saturating_add(add.len());
    let missing = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .saturating_sub(serving);
    for _ in 0..missing {
        let key = new_key()?;
        reasons.push(format!("add {key}: scale out {count} → {size}"));
        add.push(key);
    }

    if add.is_empty() && remove.is_empty() {
        reasons.push(format!(
            "no change: {}, none down",
            plural(count, "slot", "slots")
        ));
    }
    let mut all: Vec<String> = keep.iter().chain(add.iter()).cloned().collect();
    all.sort_by_key(|key| (slot_index(region, key).unwrap_or(0), key.clone()));
    Ok(SlotPlan {
        size,
        slots: all,
        keep,
        add,
        remove,
        reasons,
    })
}

// ---- what a slot's node is doing ----

/// A slot's node as the control plane reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNode {
    pub status: NodeStatus,
    pub status_since: Timestamp,
    pub registered_at: Option<Timestamp>,
}

/// How a slot's node was started.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Launch {
    /// Someone else runs its machine (the external launcher).
    External,
    /// The local launcher started an agent process for it.
    Local {
        running: bool,
        /// When the agent was started, if known.
        started_at: Option<Timestamp>,
    },
}

/// What a slot's node is doing at `now`. A node that has been `down` since
/// it registered is still starting during `starting_grace`, and so is a
/// running local agent that has not registered yet; after that they are
/// down. A local agent that is not running is down (a drained node stays
/// drained). Without a node, an external slot is pending.
pub fn slot_status(
    node: Option<&ObservedNode>,
    launch: Launch,
    now: Timestamp,
    starting_grace: Duration,
) -> SlotStatus {
    let young = |since: Option<Timestamp>| since.is_none_or(|at| now.since(at) < starting_grace);
    match (node, launch) {
        (Some(node), _) if node.status == NodeStatus::Drain => SlotStatus::Drain,
        (_, Launch::Local { running: false, .. }) => SlotStatus::Down,
        (None, Launch::External) => SlotStatus::Pending,
        (None, Launch::Local { started_at, .. }) => {
            if young(started_at) {
                SlotStatus::Starting
            } else {
                SlotStatus::Down
            }
        }
        (Some(node), _) => match node.status {
            NodeStatus::Up => SlotStatus::Up,
            NodeStatus::Drain => SlotStatus::Drain,
            NodeStatus::Down => {
                let never_ready = node.registered_at == Some(node.status_since);
                if never_ready && young(node.registered_at) {
                    SlotStatus::Starting
                } else {
                    SlotStatus::Down
                }
            }
        },
    }
}

// ---- drain timing ----

/// How much longer a drained node must keep serving before it is stopped:
/// the longest TTL of the records that may still name it (resolvers cache
/// answers given before the drain that long), plus `grace`, minus the time
/// it has already been drained.
pub fn drain_wait(ttls: &[u32], grace: Duration, drained_for: Duration) -> Duration {
    let ttl = ttls.iter().copied().max().unwrap_or(0);
    Duration::from_secs(u64::from(ttl))
        .saturating_add(grace)
        .saturating_sub(drained_for)
}

// ---- addresses of a local pool ----

/// A contiguous range of addresses of one family: `192.0.2.10`,
/// `192.0.2.10-192.0.2.19` or a CIDR block (`192.0.2.16/28`; an IPv4 block of
/// 4 or more addresses leaves out its network and broadcast addresses).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddressRange {
    first: IpAddr,
    last: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("empty address range")]
    Empty,
    #[error("`{0}` is not an IP address")]
    BadAddress(String),
    #[error("`{0}` is not a prefix length for this address family")]
    BadPrefix(String),
    #[error("the range mixes IPv4 and IPv6")]
    MixedFamilies,
    #[error("the range ends ({last}) before it starts ({first})")]
    Reversed { first: IpAddr, last: IpAddr },
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(bits: u128, like: IpAddr) -> Option<IpAddr> {
    match like {
        IpAddr::V4(_) => u32::try_from(bits)
            .ok()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        IpAddr::V6(_) => Some(IpAddr::V6(Ipv6Addr::from(bits))),
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, RangeError> {
    text.trim()
        .parse()
        .map_err(|_| RangeError::BadAddress(text.trim().to_owned()))
}

impl FromStr for AddressRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<AddressRange, RangeError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(RangeError::Empty);
        }
        if let Some((address, prefix)) = text.split_once('/') {
            let base = parse_ip(address)?;
            let width: u32 = if base.is_ipv4() { 32 } else { 128 };
            let bad_prefix = || RangeError::BadPrefix(prefix.trim().to_owned());
            let length: u32 = prefix.trim().parse().map_err(|_| bad_prefix())?;
            if length > width {
                return Err(bad_prefix());
            }
            let host_bits = width.saturating_sub(length);
            let host_mask: u128 = if host_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << host_bits).saturating_sub(1)
            };
            let network = to_bits(base) & !host_mask;
            let broadcast = network | host_mask;
            let (first, last) = if base.is_ipv4() && host_bits >= 2 {
                (network.saturating_add(1), broadcast.saturating_sub(1))
            } else {
                (network, broadcast)
            };
            return Ok(AddressRange {
                first: from_bits(first, base).ok_or_else(bad_prefix)?,
                last: from_bits(last, base).ok_or_else(bad_prefix)?,
            });
        }
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (parse_ip(first)?, parse_ip(last)?),
            None => {
                let only = parse_ip(text)?;
                (only, only)
            }
        };
        if first.is_ipv4() != last.is_ipv4() {
            return Err(RangeError::MixedFamilies);
        }
        if to_bits(first) > to_bits(last) {
            return Err(RangeError::Reversed { first, last });
        }
        Ok(AddressRange { first, last })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl AddressRange {
    pub fn first(&self) -> IpAddr {
        self.first
    }

    pub fn last(&self) -> IpAddr {
        self.last
    }

    /// How many addresses the range holds (saturating at `u128::MAX`).
    pub fn len(&self) -> u128 {
        to_bits(self.last)
            .saturating_sub(to_bits(self.first))
            .saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4()
            && (to_bits(self.first)..=to_bits(self.last)).contains(&to_bits(ip))
    }

    /// The first `count` addresses of the range not in `used`, lowest
    /// first; fewer when the range runs out.
    pub fn free(&self, used: &BTreeSet<IpAddr>, count: usize) -> Vec<IpAddr> {
        let mut found = Vec::new();
        let last = to_bits(self.last);
        let mut bits = to_bits(self.first);
        // Every address skipped is in `used`, so this loop runs at most
        // `count + used.len()` times.
        while found.len() < count {
            if let Some(ip) = from_bits(bits, self.first)
                && !used.contains(&ip)
            {
                found.push(ip);
            }
            if bits >= last {
                break;
            }
            bits = bits.saturating_add(1);
        }
        found
    }
}

/// Assigns each new slot an address of `range` that neither the pool's
/// other slots nor any other registered node uses: `(slot, address)` for as
/// many slots as there are free addresses, in slot order.
pub fn assign_addresses(
    range: &AddressRange,
    new_slots: &[String],
    used: &BTreeSet<IpAddr>,
) -> BTreeMap<String, IpAddr> {
    new_slots
        .iter()
        .cloned()
        .zip(range.free(used, new_slots.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn slot(key: &str, status: SlotStatus, node: &str) -> CurrentSlot {
        CurrentSlot {
            key: key.to_owned(),
            status,
            node: (!node.is_empty()).then(|| node.to_owned()),
        }
    }

    fn plan(current: &[CurrentSlot], desired: u32, min: u32, max: u32) -> SlotPlan {
        plan_slots("jp", current, desired, min, max).expect("plan")
    }

    fn removed(plan: &SlotPlan) -> Vec<&str> {
        plan.remove.iter().map(|r| r.key.as_str()).collect()
    }

    #[test]
    fn slot_keys_carry_the_region_and_a_number() {
        assert_eq!(slot_key("jp", 3), "jp-3");
        assert_eq!(slot_index("jp", "jp-3"), Some(3));
        assert_eq!(slot_index("jp", "jp-"), None);
        assert_eq!(slot_index("jp", "jp-x1"), None);
        assert_eq!(slot_index("jp", "sg-1"), None);
        assert_eq!(slot_index("jp-east", "jp-east-2"), Some(2));
    }

    #[test]
    fn an_empty_pool_scales_out_to_the_clamped_size() {
        let p = plan(&[], 7, 1, 3);
        assert_eq!(p.slots, ["jp-1", "jp-2", "jp-3"]);
        assert_eq!(p.add, p.slots);
        expect_test::expect![[r#"
            desired_nodes 7 is above max_nodes 3: 3 slots
            add jp-1: scale out 0 → 3
            add jp-2: scale out 0 → 3
            add jp-3: scale out 0 → 3"#]]
        .assert_eq(&p.reasons.join("\n"));
        let p = plan(&[], 0, 1, 3);
        assert_eq!(p.slots, ["jp-1"]);
        assert_eq!(p.reasons[0], "desired_nodes 0 is below min_nodes 1: 1 slot");
    }

    #[test]
    fn scale_in_removes_the_drained_node_first_even_when_older() {
        let current = [
            slot("jp-1", SlotStatus::Drain, "jp-aaaaaa"),
            slot("jp-2", SlotStatus::Up, "jp-bbbbbb"),
        ];
        let p = plan(&current, 1, 1, 3);
        assert_eq!(removed(&p), ["jp-1"]);
        assert_eq!(p.slots, ["jp-2"]);
        expect_test::expect![[r#"
            desired_nodes 1 within [1, 3]: 1 slot
            remove jp-1: scale in 2 → 1; its node jp-aaaaaa is drained (drained nodes go first)"#]]
        .assert_eq(&p.reasons.join("\n"));
    }

    #[test]
    fn scale_in_without_drained_or_down_nodes_removes_the_newest() {
        let current = [
            slot("jp-2", SlotStatus::Up, "jp-bbbbbb"),
            slot("jp-1", SlotStatus::Up, "jp-aaaaaa"),
            slot("jp-3", SlotStatus::Up, "jp-cccccc"),
        ];
        let p = plan(&current, 1, 1, 3);
        assert_eq!(removed(&p), ["jp-3", "jp-2"]);
        assert_eq!(p.slots, ["jp-1"]);
    }

    #[test]
    fn scale_in_order_is_drained_down_pending_starting_then_ready() {
        let current = [
            slot("jp-1", SlotStatus::Up, "a"),
            slot("jp-2", SlotStatus::Starting, "b"),
            slot("jp-3", SlotStatus::Pending, ""),
            slot("jp-4", SlotStatus::Down, "d"),
            slot("jp-5", SlotStatus::Drain, "e"),
            slot("jp-6", SlotStatus::Up, "f"),
        ];
        let p = plan(&current, 1, 0, 10);
        assert_eq!(removed(&p), ["jp-5", "jp-4", "jp-3", "jp-2", "jp-6"]);
        assert_eq!(p.slots, ["jp-1"]);
    }

    #[test]
    fn down_nodes_are_replaced_by_new_slots() {
        let current = [
            slot("jp-1", SlotStatus::Down, "jp-aaaaaa"),
            slot("jp-2", SlotStatus::Up, "jp-bbbbbb"),
        ];
        let p = plan(&current, 2, 1, 3);
        assert_eq!(p.add, ["jp-3"]);
        assert_eq!(p.replacements().collect::<Vec<_>>(), [("jp-1", "jp-3")]);
        assert_eq!(p.slots, ["jp-2", "jp-3"]);
        expect_test::expect![[r#"
            desired_nodes 2 within [1, 3]: 2 slots
            replace jp-1 by jp-3: its node jp-aaaaaa is down"#]]
        .assert_eq(&p.reasons.join("\n"));
    }

    #[test]
    fn a_down_node_is_removed_rather_than_replaced_when_scaling_in() {
        let current = [
            slot("jp-1", SlotStatus::Up, "a"),
            slot("jp-2", SlotStatus::Down, "b"),
        ];
        let p = plan(&current, 1, 1, 3);
        assert_eq!(removed(&p), ["jp-2"]);
        assert!(p.add.is_empty());
    }

    #[test]
    fn drained_nodes_are_kept_when_the_size_holds() {
        let current = [
            slot("jp-1", SlotStatus::Drain, "a"),
            slot("jp-2", SlotStatus::Up, "b"),
        ];
        let p = plan(&current, 2, 1, 3);
        assert!(!p.changes());
        assert_eq!(p.reasons[1], "no change: 2 slots, none down");
    }

    #[test]
    fn min_above_max_is_an_error() {
        assert_eq!(
            plan_slots("jp", &[], 1, 3, 2),
            Err(PoolError::MinAboveMax { min: 3, max: 2 })
        );
        assert_eq!(
            plan_slots("jp", &[], 1, 0, u32::MAX),
            Err(PoolError::TooLarge(u32::MAX))
        );
    }

    #[test]
    fn keys_of_another_form_are_kept_and_never_collide() {
        let current = [slot("legacy", SlotStatus::Down, "x")];
        let p = plan(&current, 1, 1, 1);
        assert_eq!(p.add, ["jp-1"]);
        assert_eq!(p.slots, ["jp-1"]);
        let exhausted = [slot(&slot_key("jp", u64::MAX), SlotStatus::Up, "y")];
        assert_eq!(
            plan_slots("jp", &exhausted, 2, 0, 2),
            Err(PoolError::KeysExhausted(u64::MAX))
        );
    }

    #[test]
    fn a_slot_is_starting_until_its_node_was_ever_ready_or_the_grace_ends() {
        let grace = Duration::from_secs(60);
        let now = Timestamp::from_secs(1_000);
        let local = Launch::Local {
            running: true,
            started_at: Some(Timestamp::from_secs(990)),
        };
        let node = |status, since: i64, registered: i64| ObservedNode {
            status,
            status_since: Timestamp::from_secs(since),
            registered_at: Some(Timestamp::from_secs(registered)),
        };
        let status = |n: Option<&ObservedNode>, launch| slot_status(n, launch, now, grace);
        assert_eq!(status(None, local), SlotStatus::Starting);
        assert_eq!(
            status(Some(&node(NodeStatus::Down, 995, 995)), local),
            SlotStatus::Starting
        );
        assert_eq!(
            status(Some(&node(NodeStatus::Down, 900, 900)), local),
            SlotStatus::Down,
            "never ready within the grace"
        );
        assert_eq!(
            status(Some(&node(NodeStatus::Down, 998, 995)), local),
            SlotStatus::Down,
            "was ready, then went down"
        );
        assert_eq!(
            status(Some(&node(NodeStatus::Up, 998, 995)), local),
            SlotStatus::Up
        );
        let exited = Launch::Local {
            running: false,
            started_at: None,
        };
        assert_eq!(
            status(Some(&node(NodeStatus::Up, 998, 995)), exited),
            SlotStatus::Down,
            "an exited agent is down before the control plane notices"
        );
        assert_eq!(
            status(Some(&node(NodeStatus::Drain, 998, 995)), exited),
            SlotStatus::Drain
        );
        assert_eq!(status(None, Launch::External), SlotStatus::Pending);
        let old_local = Launch::Local {
            running: true,
            started_at: Some(Timestamp::from_secs(100)),
        };
        assert_eq!(status(None, old_local), SlotStatus::Down);
    }

    #[test]
    fn the_drain_wait_is_ttl_plus_grace_minus_time_drained() {
        let grace = Duration::from_secs(5);
        assert_eq!(
            drain_wait(&[30, 60], grace, Duration::ZERO),
            Duration::from_secs(65)
        );
        assert_eq!(
            drain_wait(&[30], grace, Duration::from_secs(20)),
            Duration::from_secs(15)
        );
        assert_eq!(
            drain_wait(&[30], grace, Duration::from_secs(99)),
            Duration::ZERO
        );
        assert_eq!(drain_wait(&[], grace, Duration::ZERO), grace);
    }

    #[test]
    fn address_ranges_parse_in_three_forms() {
        let range: AddressRange = "127.0.0.50-127.0.0.59".parse().expect("range");
        assert_eq!(range.len(), 10);
        assert_eq!(range.to_string(), "127.0.0.50-127.0.0.59");
        let block: AddressRange = "192.0.2.16/28".parse().expect("cidr");
        assert_eq!(block.to_string(), "192.0.2.17-192.0.2.30");
        let one: AddressRange = "2001:db8::1".parse().expect("single");
        assert_eq!(one.len(), 1);
        let pair: AddressRange = "192.0.2.8/31".parse().expect("/31");
        assert_eq!(pair.len(), 2);
        let all: AddressRange = "::/0".parse().expect("all of IPv6");
        assert_eq!(all.len(), u128::MAX);
        for (bad, message) in [
            ("", "empty address range"),
            (
                "127.0.0.9-127.0.0.1",
                "the range ends (127.0.0.1) before it starts (127.0.0.9)",
            ),
            ("127.0.0.1-::1", "the range mixes IPv4 and IPv6"),
            (
                "10.0.0.0/33",
                "`33` is not a prefix length for this address family",
            ),
            ("host-1", "`host` is not an IP address"),
        ] {
            assert_eq!(
                bad.parse::<AddressRange>().map_err(|e| e.to_string()),
                Err(message.to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn new_slots_take_the_lowest_free_addresses() {
        let range: AddressRange = "127.0.0.50-127.0.0.53".parse().expect("range");
        let used: BTreeSet<IpAddr> = ["127.0.0.50", "127.0.0.52", "10.0.0.1"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        let slots = vec!["jp-3".to_owned(), "jp-4".to_owned(), "jp-5".to_owned()];
        let assigned = assign_addresses(&range, &slots, &used);
        let text: Vec<String> = assigned.iter().map(|(s, a)| format!("{s}={a}")).collect();
        assert_eq!(text, ["jp-3=127.0.0.51", "jp-4=127.0.0.53"]);
        assert!(range.contains("127.0.0.53".parse().expect("ip")));
        assert!(!range.contains("::1".parse().expect("ip")));
    }

    fn arb_status() -> impl Strategy<Value = SlotStatus> {
        prop_oneof![
            Just(SlotStatus::Up),
            Just(SlotStatus::Starting),
            Just(SlotStatus::Pending),
            Just(SlotStatus::Drain),
            Just(SlotStatus::Down),
        ]
    }

    fn arb_pool() -> impl Strategy<Value = Vec<CurrentSlot>> {
        prop::collection::btree_map(1u64..40, arb_status(), 0..12).prop_map(|slots| {
            slots
                .into_iter()
                .map(|(index, status)| CurrentSlot {
                    key: slot_key("jp", index),
                    status,
                    node: Some(format!("node-{index}")),
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_pool_ends_within_bounds_with_stable_unique_keys(
            current in arb_pool(),
            desired in 0u32..20,
            min in 0u32..8,
            extra in 0u32..8,
        ) {
            let max = min + extra;
            let p = plan_slots("jp", &current, desired, min, max).expect("plan");
            let size = usize::try_from(p.size).expect("size");
            prop_assert!((min..=max).contains(&p.size));
            prop_assert_eq!(p.slots.len(), size);
            let keys: BTreeSet<&str> = current.iter().map(|s| s.key.as_str()).collect();
            let unique: BTreeSet<&String> = p.slots.iter().collect();
            prop_assert_eq!(unique.len(), p.slots.len());
            // Kept slots keep their keys; new keys are new.
            for key in &p.keep {
                prop_assert!(keys.contains(key.as_str()));
            }
            for key in &p.add {
                prop_assert!(!keys.contains(key.as_str()));
            }
            // Every current slot is kept or removed, never both.
            for slot in &current {
                let kept = p.keep.contains(&slot.key);
                let gone = p.remove.iter().any(|r| r.key == slot.key);
                prop_assert!(kept != gone, "{} kept {} removed {}", slot.key, kept, gone);
            }
            // No down node is left.
            for slot in current.iter().filter(|s| p.keep.contains(&s.key)) {
                prop_assert_ne!(slot.status, SlotStatus::Down);
            }
        }

        #[test]
        fn a_ready_node_is_never_removed_while_a_drained_or_down_one_stays(
            current in arb_pool(),
            desired in 0u32..20,
        ) {
            let p = plan_slots("jp", &current, desired, 0, 20).expect("plan");
            let removes_ready = p.remove.iter().any(|r| r.status == SlotStatus::Up);
            let keeps_drained_or_down = current.iter().any(|s| {
                p.keep.contains(&s.key) && matches!(s.status, SlotStatus::Drain | SlotStatus::Down)
            });
            prop_assert!(!(removes_ready && keeps_drained_or_down));
            // Drained nodes go first: as many as the scale-in removes.
            let excess = current.len().saturating_sub(usize::try_from(p.size).expect("size"));
            let drained = current.iter().filter(|s| s.status == SlotStatus::Drain).count();
            let drained_removed = p.remove.iter().filter(|r| r.status == SlotStatus::Drain).count();
            prop_assert_eq!(drained_removed, excess.min(drained));
        }

        #[test]
        fn planning_again_after_the_plan_changes_nothing(
            current in arb_pool(),
            desired in 0u32..20,
            min in 0u32..8,
            extra in 0u32..8,
        ) {
            let max = min + extra;
            let p = plan_slots("jp", &current, desired, min, max).expect("plan");
            let after: Vec<CurrentSlot> = p
                .slots
                .iter()
                .map(|key| {
                    current
                        .iter()
                        .find(|s| &s.key == key)
                        .cloned()
                        .unwrap_or(CurrentSlot {
                            key: key.clone(),
                            status: SlotStatus::Starting,
                            node: None,
                        })
                })
                .collect();
            let again = plan_slots("jp", &after, desired, min, max).expect("plan");
            prop_assert!(!again.changes(), "{:?}", again.reasons);
            prop_assert_eq!(again.slots, p.slots);
        }

        #[test]
        fn free_addresses_are_in_range_unused_and_distinct(
            start in 0u32..1000,
            len in 1u32..64,
            used in prop::collection::btree_set(0u32..1100, 0..40),
            count in 0usize..80,
        ) {
            let first = Ipv4Addr::from(0x0a00_0000 + start);
            let last = Ipv4Addr::from(0x0a00_0000 + start + len - 1);
            let range: AddressRange = format!("{first}-{last}").parse().expect("range");
            let used: BTreeSet<IpAddr> = used
                .into_iter()
                .map(|u| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + u)))
                .collect();
            let free = range.free(&used, count);
            let available = (0..len)
                .filter(|i| !used.contains(&IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + start + i))))
                .count();
            prop_assert_eq!(free.len(), count.min(available));
            let distinct: BTreeSet<&IpAddr> = free.iter().collect();
            prop_assert_eq!(distinct.len(), free.len());
            for ip in &free {
                prop_assert!(range.contains(*ip));
                prop_assert!(!used.contains(ip));
            }
        }
    }
}
