//! The vocabulary every other part of neutral speaks: declared intent (regions,
//! GTM policies, autoscale policies, node pools) and observed state (nodes, their
//! status and metrics), plus time as plain values.
//!
//! This module owns plain data and the small, total conversions on it (parsing a
//! duration, naming an enum). It must not compute policy: effective weights live
//! in `weights`, scaling decisions in `autoscale`, record diffs in `dnsplan`.
//! Nothing here reads a clock or touches the outside world; a point in time is a
//! [`Timestamp`] handed in by the caller.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diag::Severity;

/// A point in time: milliseconds since the Unix epoch, UTC.
///
/// The core never reads a clock; callers pass `now` in as one of these.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// "Since forever": the `status_since` of a down node that was never
    /// ready (just registered, still proving itself), as opposed to a node
    /// that went down at a known time.
    pub const SINCE_FOREVER: Timestamp = Timestamp(0);

    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    pub const fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating at the representable range.
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// `self - d`, saturating at the representable range.
    #[must_use]
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// Time elapsed from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let diff = self.0.saturating_sub(earlier.0);
        Duration::from_millis(u64::try_from(diff).unwrap_or(0))
    }
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Where a region's machines come from. Purely descriptive for the engine;
/// launchers and HCL modules use it to pick their resources.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudProvider {
    Aws,
    Alicloud,
    Tencent,
    Ucloud,
    Edge,
    Local,
}

impl CloudProvider {
    pub const ALL: [CloudProvider; 6] = [
        CloudProvider::Aws,
        CloudProvider::Alicloud,
        CloudProvider::Tencent,
        CloudProvider::Ucloud,
        CloudProvider::Edge,
        CloudProvider::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloudProvider::Aws => "aws",
            CloudProvider::Alicloud => "alicloud",
            CloudProvider::Tencent => "tencent",
            CloudProvider::Ucloud => "ucloud",
            CloudProvider::Edge => "edge",
            CloudProvider::Local => "local",
        }
    }
}

/// The operator's declared state of a region. `degraded` is never declared: it
/// is computed (see [`RegionHealth`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclaredRegionState {
    #[default]
    Up,
    Down,
}

/// A region's computed health.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionHealth {
    /// Ready nodes ≥ desired nodes.
    Up,
    /// Ready < desired, but ≥ `min_ready_nodes`.
    Degraded,
    /// Ready < `min_ready_nodes`, or declared `state: down`.
    Down,
}

impl RegionHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionHealth::Up => "up",
            RegionHealth::Degraded => "degraded",
            RegionHealth::Down => "down",
        }
    }
}

/// `platform-config/regions/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    pub provider: CloudProvider,
    pub min_nodes: u32,
    pub max_nodes: u32,
    /// 0..=1000.
    pub base_weight: u32,
    pub state: DeclaredRegionState,
    /// Regions that take over traffic and capacity when this one is down.
    pub failover: Vec<String>,
}

/// Upper bound of `base_weight` and of per-domain region weights.
pub const MAX_BASE_WEIGHT: u32 = 1000;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
}

impl RecordType {
    pub const ALL: [RecordType; 2] = [RecordType::A, RecordType::Aaaa];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
        }
    }

    /// Whether `addr` can be served in a record of this type.
    pub fn accepts(self, addr: IpAddr) -> bool {
        matches!(
            (self, addr),
            (RecordType::A, IpAddr::V4(_)) | (RecordType::Aaaa, IpAddr::V6(_))
        )
    }
}

/// Which DNS service serves a domain's records.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsBackendKind {
    Embedded,
    Powerdns,
    Route53,
    Cloudflare,
    Alidns,
}

impl DnsBackendKind {
    pub const ALL: [DnsBackendKind; 5] = [
        DnsBackendKind::Embedded,
        DnsBackendKind::Powerdns,
        DnsBackendKind::Route53,
        DnsBackendKind::Cloudflare,
        DnsBackendKind::Alidns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DnsBackendKind::Embedded => "embedded",
            DnsBackendKind::Powerdns => "powerdns",
            DnsBackendKind::Route53 => "route53",
            DnsBackendKind::Cloudflare => "cloudflare",
            DnsBackendKind::Alidns => "alidns",
        }
    }

    /// The lowest TTL (seconds) the backend accepts for a record we manage.
    ///
    /// Cloudflare also accepts the special value 1 ("automatic"); see
    /// [`DnsBackendKind::ttl_is_allowed`].
    pub fn ttl_floor(self) -> u32 {
        match self {
            DnsBackendKind::Embedded | DnsBackendKind::Powerdns | DnsBackendKind::Route53 => 1,
            DnsBackendKind::Cloudflare => 60,
            // AliDNS' free edition floor; paid editions go lower (see `ttl_is_allowed`).
            DnsBackendKind::Alidns => 600,
        }
    }

    pub fn ttl_is_allowed(self, ttl: u32) -> bool {
        match self {
            DnsBackendKind::Cloudflare => ttl == 1 || ttl >= self.ttl_floor(),
            DnsBackendKind::Alidns => ttl >= 1,
            _ => ttl >= self.ttl_floor(),
        }
    }

    /// The one rule on a record's TTL on this backend, as every front end
    /// (`neutral validate`, the Terraform provider) reports it: an error
    /// below the floor, a warning below AliDNS' free-edition minimum.
    /// `defaulted`: the TTL was not written (the message says so).
    pub fn ttl_check(self, ttl: u32, defaulted: bool) -> Option<(Severity, String)> {
        let default_note = if defaulted { " (the default)" } else { "" };
        if !self.ttl_is_allowed(ttl) {
            let special = if self == DnsBackendKind::Cloudflare {
                "; cloudflare also accepts 1, meaning automatic"
            } else {
                ""
            };
            Some((
                Severity::Error,
                format!(
                    "ttl {ttl}{default_note} is below {}'s minimum of {}{special}",
                    self.as_str(),
                    self.ttl_floor()
                ),
            ))
        } else if self == DnsBackendKind::Alidns && ttl < self.ttl_floor() {
            Some((
                Severity::Warning,
                format!(
                    "ttl {ttl}{default_note} is below {}'s free-edition minimum of {}; it needs a paid edition",
                    self.as_str(),
                    self.ttl_floor()
                ),
            ))
        } else {
            None
        }
    }
}

/// What a domain answers when every region's effective weight is 0.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDownPolicy {
    /// Serve every non-drained node at its region's base weight.
    #[default]
    FailOpen,
    /// Keep serving the last answers that had a positive weight.
    LastKnownGood,
}

impl AllDownPolicy {
    pub const ALL: [AllDownPolicy; 2] = [AllDownPolicy::FailOpen, AllDownPolicy::LastKnownGood];

    pub fn as_str(self) -> &'static str {
        match self {
            AllDownPolicy::FailOpen => "fail_open",
            AllDownPolicy::LastKnownGood => "last_known_good",
        }
    }
}

/// Active HTTP health probe settings of a domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Path probed over HTTP, starting with `/`.
    pub http: String,
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes before a down node is up again.
    pub rise: u32,
    /// Consecutive failures before an up node is down.
    pub fall: u32,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            http: "/healthz".to_owned(),
            port: 80,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

/// `platform-config/gtm/<name>.yaml`: one domain's global traffic policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GtmPolicy {
    /// The file stem the policy was declared in.
    pub name: String,
    /// Fully qualified, lowercase, without trailing dot.
    pub domain: String,
    /// Fully qualified, lowercase, without trailing dot.
    pub zone: String,
    pub record_type: RecordType,
    pub ttl: u32,
    pub dns: DnsBackendKind,
    /// Per region: fewer ready nodes means region weight 0.
    pub min_ready_nodes: u32,
    /// Base weight per region for this domain; overrides the region's
    /// `base_weight`. Regions not listed here do not serve this domain.
    pub regions: BTreeMap<String, u32>,
    pub all_down: AllDownPolicy,
    pub probe: Probe,
    /// Ramp a recovering region from 0 to full weight over this long; `None`
    /// (the default) jumps straight to full weight.
    pub slow_start: Option<Duration>,
    /// How control-plane replicas agree on its nodes' health.
    #[serde(default)]
    pub health: HealthPolicy,
}

/// `health:` of a GTM policy: how the control plane's replicas, each probing
/// from where it stands, agree on a node's status (see [`crate::quorum`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// Down verdicts needed among the live replicas (`majority`, or a number).
    pub quorum: crate::quorum::Quorum,
}

/// Thresholds that make a region grow. Any one sustained for `for_` is enough.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleUpRule {
    pub cpu_above: Option<f64>,
    pub rtt_ms_above: Option<f64>,
    pub error_rate_above: Option<f64>,
    #[serde(rename = "for")]
    pub for_: Duration,
    pub step: u32,
}

/// Thresholds that let a region shrink. All the given ones must hold, sustained
/// for `for_` (the stabilization window), and no scale-up threshold may hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleDownRule {
    pub cpu_below: Option<f64>,
    pub rtt_ms_below: Option<f64>,
    pub error_rate_below: Option<f64>,
    #[serde(rename = "for")]
    pub for_: Duration,
    pub step: u32,
}

/// `platform-config/autoscale/<region>.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoscalePolicy {
    pub region: String,
    pub scale_up: ScaleUpRule,
    pub scale_down: ScaleDownRule,
    pub cooldown: Duration,
    /// Grow this region when a region that fails over to it goes down.
    pub failover_capacity: bool,
}

/// `infra/node-pool/<region>.tfvars`: the node count people and the autoscaler
/// ask Terraform for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePoolDecl {
    pub region: String,
    pub desired_nodes: u32,
}

/// Everything declared in a repository, after validation. Keys are object
/// names (region name, domain, region name, region name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Declarations {
    pub regions: BTreeMap<String, Region>,
    /// Keyed by domain.
    pub gtm: BTreeMap<String, GtmPolicy>,
    /// Keyed by region.
    pub autoscale: BTreeMap<String, AutoscalePolicy>,
    /// Keyed by region.
    pub node_pools: BTreeMap<String, NodePoolDecl>,
}

impl Declarations {
    /// The node count a region is expected to run: its node pool's
    /// `desired_nodes`, else its `min_nodes`.
    pub fn desired_nodes(&self, region: &str) -> u32 {
        match self.node_pools.get(region) {
            Some(pool) => pool.desired_nodes,
            None => self.regions.get(region).map_or(0, |r| r.min_nodes),
        }
    }

    /// The base weight of `region` for `domain`: the domain's override, else the
    /// region's own `base_weight`.
    pub fn base_weight(&self, policy: &GtmPolicy, region: &str) -> u32 {
        policy
            .regions
            .get(region)
            .copied()
            .or_else(|| self.regions.get(region).map(|r| r.base_weight))
            .unwrap_or(0)
    }
}

/// A node's lifecycle status as the control plane sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Ready: serves traffic.
    Up,
    /// Failed heartbeats or probes; counts as a failure.
    Down,
    /// Removed from answers by the operator or the autoscaler; not a failure.
    Drain,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Up => "up",
            NodeStatus::Down => "down",
            NodeStatus::Drain => "drain",
        }
    }
}

/// How a node runs its workloads.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeMode {
    /// containerd + nginx + `neutral agent`; the default and the minimal form.
    #[default]
    ContainerdOnly,
    /// Joins a k3s cluster as a worker.
    K3sWorker,
}

/// One heartbeat's metrics.
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// CPU utilisation, 0..=1.
    pub cpu: f64,
    /// Round-trip time to the node's service, milliseconds.
    pub rtt_ms: f64,
    /// Share of failed requests, 0..=1.
    pub error_rate: f64,
}

/// A metric sample with the time it was taken.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    pub at: Timestamp,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// A node as the control plane observes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub region: String,
    pub address: IpAddr,
    pub status: NodeStatus,
    /// When `status` last changed; [`Timestamp::SINCE_FOREVER`] for a down
    /// node that was never ready.
    pub status_since: Timestamp,
    pub mode: NodeMode,
    pub last_heartbeat: Option<Timestamp>,
    /// The latest metrics, if any heartbeat carried them.
    pub metrics: Option<Metrics>,
}

impl Node {
    pub fn is_ready(&self) -> bool {
        self.status == NodeStatus::Up
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("expected a number at `{0}`")]
    MissingNumber(String),
    #[error("unknown unit `{0}` (use ms, s, m or h)")]
    UnknownUnit(String),
    #[error("missing unit after `{0}` (use ms, s, m or h, e.g. `{0}s`)")]
    MissingUnit(String),
    #[error("duration too large")]
    Overflow,
}

/// Parses durations as written in platform-config: one or more
/// `<integer><unit>` groups with units `ms`, `s`, `m`, `h`, e.g. `300s`,
/// `1m30s`, `500ms`. A bare `0` is accepted as zero.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError::MissingNumber(rest.to_owned()));
        }
        let (number, after) = rest.split_at(digits);
        let value: u64 = number.parse().map_err(|_| DurationError::Overflow)?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let factor: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(DurationError::MissingUnit(number.to_owned())),
            other => return Err(DurationError::UnknownUnit(other.to_owned())),
        };
        let ms = value.checked_mul(factor).ok_or(DurationError::Overflow)?;
        total_ms = total_ms.checked_add(ms).ok_or(DurationError::Overflow)?;
        rest = next;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse_duration`] reads it, shortest form:
/// `90s` → `1m30s`, `1500ms` → `1500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    let hours = secs / 3600;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
        secs %= 3600;
    }
    let minutes = secs / 60;
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
        secs %= 60;
    }
    if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// A value not among an enumeration's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    pub value: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not one of: {}", self.value, self.expected)
    }
}

impl std::error::Error for UnknownName {}

/// `FromStr` by [`as_str`] over `ALL`, and `choices()`: the (name, value)
/// table every front end checks a written value against.
macro_rules! named {
    ($($kind:ty),*) => {$(
        impl $kind {
            /// Every value with its name, in declaration order.
            pub fn choices() -> Vec<(&'static str, $kind)> {
                <$kind>::ALL.iter().map(|k| (k.as_str(), *k)).collect()
            }
        }

        impl std::str::FromStr for $kind {
            type Err = UnknownName;
            fn from_str(text: &str) -> Result<$kind, UnknownName> {
                <$kind>::ALL
                    .iter()
                    .copied()
                    .find(|k| k.as_str() == text)
                    .ok_or_else(|| UnknownName {
                        value: text.to_owned(),
                        expected: <$kind>::ALL
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    )*};
}

named!(RecordType, DnsBackendKind, AllDownPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_combination() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_reject_garbage_with_a_reason() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_duration("10d"),
            Err(DurationError::UnknownUnit("d".into()))
        );
        assert_eq!(
            parse_duration("s"),
            Err(DurationError::MissingNumber("s".into()))
        );
        assert_eq!(
            parse_duration("-5s"),
            Err(DurationError::MissingNumber("-5s".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("9999999999999999h"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn durations_format_round_trips() {
        for text in ["1h1m1s", "1500ms", "30s", "5m", "0s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }

    #[test]
    fn timestamps_saturate_instead_of_overflowing() {
        let t = Timestamp::from_millis(i64::MAX - 1);
        assert_eq!(t.plus(Duration::from_secs(10)), Timestamp(i64::MAX));
        assert_eq!(Timestamp(5).since(Timestamp(10)), Duration::ZERO);
        assert_eq!(
            Timestamp(10_000).since(Timestamp(4_000)),
            Duration::from_secs(6)
        );
    }

    #[test]
    fn record_types_accept_only_their_address_family() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(RecordType::A.accepts(v4));
        assert!(!RecordType::A.accepts(v6));
        assert!(RecordType::Aaaa.accepts(v6));
    }
}
