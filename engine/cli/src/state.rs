//! The observed-state file read by `neutral explain`: nodes with their status
//! and metric samples, the last autoscale action per region, and optionally
//! the previous answers (for `last_known_good` and the split-brain guard).
//!
//! Times are RFC 3339 strings (`2026-11-28T10:00:00Z`), integers
//! (milliseconds since the Unix epoch), or offsets before `now` (`-90s`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use neutral_core::autoscale::{LastAction, NodeSample};
use neutral_core::model::{
    MetricSample, Metrics, Node, NodeMode, NodeStatus, Timestamp, parse_duration,
};
use neutral_core::weights::DomainWeights;
use serde::Deserialize;

/// A time as written in the file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeText {
    Millis(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    now: Option<TimeText>,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    last_actions: BTreeMap<String, RawLastAction>,
    #[serde(default)]
    previous: BTreeMap<Arc<str>, Arc<DomainWeights>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    region: String,
    ip: String,
    status: NodeStatus,
    /// When `status` last changed; left out, "since forever" (a down node
    /// without it counts as never ready, as the control plane sees one).
    status_since: Option<TimeText>,
    last_heartbeat: Option<TimeText>,
    #[serde(default)]
    mode: NodeMode,
    #[serde(default)]
    metrics: Vec<RawSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    at: TimeText,
    cpu: f64,
    #[serde(default)]
    rtt_ms: f64,
    #[serde(default)]
    error_rate: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLastAction {
    at: TimeText,
    from: u32,
    to: u32,
    #[serde(default)]
    in_flight: bool,
    #[serde(default)]
    failover_extra: u32,
}

/// The observed state, with every time resolved.
#[derive(Debug)]
pub struct ObservedState {
    pub now: Timestamp,
    pub nodes: Vec<Node>,
    pub samples: Vec<NodeSample>,
    pub last_actions: BTreeMap<String, LastAction>,
    pub previous: BTreeMap<Arc<str>, Arc<DomainWeights>>,
}

pub fn read(path: &Path) -> Result<ObservedState> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text, wall_clock()).with_context(|| format!("invalid state file {}", path.display()))
}

fn wall_clock() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp(millis)
}

/// Parses a state document; `clock` is used when the file has no `now`.
pub fn parse(text: &str, clock: Timestamp) -> Result<ObservedState> {
    let raw: RawState = serde_json::from_str(text)?;
    let now = match &raw.now {
        Some(t) => resolve(t, clock).context("now")?,
        None => clock,
    };
    let mut nodes = Vec::with_capacity(raw.nodes.len());
    let mut samples = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, node) in raw.nodes.iter().enumerate() {
        let at = |field: &str| format!("nodes[{i}] ({}).{field}", node.id);
        if !seen.insert(node.id.clone()) {
            bail!("{}: duplicate node id", at("id"));
        }
        let address: IpAddr = node
            .ip
            .parse()
            .map_err(|_| anyhow!("{}: `{}` is not an IP address", at("ip"), node.ip))?;
        let status_since = match &node.status_since {
            Some(t) => resolve(t, now).with_context(|| at("status_since"))?,
            None => Timestamp::SINCE_FOREVER,
        };
        let last_heartbeat = match &node.last_heartbeat {
            Some(t) => Some(resolve(t, now).with_context(|| at("last_heartbeat"))?),
            None => None,
        };
        let mut latest: Option<MetricSample> = None;
        for (j, sample) in node.metrics.iter().enumerate() {
            let sample = MetricSample {
                at: resolve(&sample.at, now).with_context(|| at(&format!("metrics[{j}].at")))?,
                metrics: Metrics {
                    cpu: sample.cpu,
                    rtt_ms: sample.rtt_ms,
                    error_rate: sample.error_rate,
                },
            };
            if latest.is_none_or(|l| l.at <= sample.at) {
                latest = Some(sample);
            }
            samples.push(NodeSample {
                node_id: node.id.as_str().into(),
                sample,
            });
        }
        nodes.push(Node {
            id: node.id.clone(),
            region: node.region.clone(),
            address,
            status: node.status,
            status_since,
            mode: node.mode,
            last_heartbeat,
            metrics: latest.map(|s| s.metrics),
        });
    }
    let mut last_actions = BTreeMap::new();
    for (region, action) in &raw.last_actions {
        let at = resolve(&action.at, now).with_context(|| format!("last_actions.{region}.at"))?;
        last_actions.insert(
            region.clone(),
            LastAction {
                at,
                from: action.from,
                to: action.to,
                in_flight: action.in_flight,
                failover_extra: action.failover_extra,
            },
        );
    }
    Ok(ObservedState {
        now,
        nodes,
        samples,
        last_actions,
        previous: raw.previous,
    })
}

fn resolve(time: &TimeText, now: Timestamp) -> Result<Timestamp> {
    match time {
        TimeText::Millis(ms) => Ok(Timestamp(*ms)),
        TimeText::Text(text) => {
            if let Some(offset) = text.strip_prefix('-') {
                let d = parse_duration(offset).map_err(|e| anyhow!("`{text}`: {e}"))?;
                return Ok(now.minus(d));
            }
            let t = humantime::parse_rfc3339_weak(text).map_err(|e| {
                anyhow!("`{text}` is neither RFC 3339 nor an offset like `-90s`: {e}")
            })?;
            let millis = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
            };
            Ok(Timestamp(millis))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    #[test]
    fn times_may_be_rfc3339_millis_or_offsets() {
        let state = parse(
            r#"{"now": "2026-11-28T10:00:00Z", "nodes": [
                {"id": "a", "region": "jp", "ip": "127.0.0.2", "status": "up", "status_since": "-90s",
                 "metrics": [{"at": 1000, "cpu": 0.5}, {"at": "-10s", "cpu": 0.8}]}]}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(state.now, Timestamp(1_795_860_000_000));
        assert_eq!(
            state.nodes[0].status_since,
            Timestamp(1_795_860_000_000 - 90_000)
        );
        assert_eq!(state.nodes[0].metrics.unwrap().cpu, 0.8);
        assert_eq!(state.samples.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse(
            r#"{"nodes": [{"id": "a", "region": "jp", "ip": "nope", "status": "up"}]}"#,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "nodes[0] (a).ip: `nope` is not an IP address"
        );
        let err = parse(r#"{"nodes": [], "extra": 1}"#, NOW).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `extra`"),
            "{err:#}"
        );
        let err = parse(
            r#"{"nodes": [{"id": "a", "region": "jp", "ip": "127.0.0.1", "status": "up", "status_since": "yesterday"}]}"#,
            NOW,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("nodes[0] (a).status_since: `yesterday`"),
            "{err:#}"
        );
    }
}
