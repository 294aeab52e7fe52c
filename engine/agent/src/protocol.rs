//! The node API as the agent speaks it (see the node API brief): request and
//! response bodies of `POST /nodes/register` and `POST /nodes/heartbeat`, and
//! the error body every 4xx/5xx carries.
//!
//! Requests carry exactly the documented fields (the control plane rejects
//! unknown ones). Responses tolerate fields added later, so a newer control
//! plane does not break older agents.

use std::net::IpAddr;

use neutral_core::model::{Metrics, NodeMode, NodeStatus};
use serde::{Deserialize, Serialize};

pub const REGISTER_PATH: &str = "nodes/register";
pub const HEARTBEAT_PATH: &str = "nodes/heartbeat";

/// `POST /nodes/register`, authorised by the join token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub region: String,
    pub address: IpAddr,
    pub mode: NodeMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The identity an agent held before a restart; the control plane keeps it
    /// only for the same region and address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Proof of `node_id`: the node's current token (the control plane
    /// refuses to hand an existing identity to anyone without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_token: Option<String>,
}

impl std::fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("region", &self.region)
            .field("address", &self.address)
            .field("mode", &self.mode)
            .field("hostname", &self.hostname)
            .field("agent_version", &self.agent_version)
            .field("node_id", &self.node_id)
            .field(
                "node_token",
                &self.node_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// 201 answer to a registration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: String,
    pub node_token: String,
    pub heartbeat_interval_ms: u64,
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
}

impl std::fmt::Debug for RegisterResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterResponse")
            .field("node_id", &self.node_id)
            .field("node_token", &"<redacted>")
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("heartbeat_timeout_ms", &self.heartbeat_timeout_ms)
            .finish()
    }
}

/// `POST /nodes/heartbeat`, authorised by the node token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub node_id: String,
    /// Absent when the agent could not measure all three metrics; the
    /// heartbeat still proves liveness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// The result of the release the control plane ordered, repeated until
    /// the answer no longer carries the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseResult>,
}

/// 200 answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub status: NodeStatus,
    pub heartbeat_interval_ms: u64,
    /// A release to do (`POST /nodes/{id}/release`), repeated until the node
    /// reports its result.
    #[serde(default)]
    pub release: Option<ReleaseOrder>,
}

/// A release ordered through the control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOrder {
    pub id: String,
    pub image: String,
    #[serde(default)]
    pub health_path: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// How an ordered release ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseResult {
    pub id: String,
    pub ok: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// The body of every error answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_request_matches_the_documented_shape() {
        let request = RegisterRequest {
            region: "jp".into(),
            address: "127.0.0.2".parse().unwrap(),
            mode: NodeMode::ContainerdOnly,
            hostname: Some("node-a".into()),
            agent_version: Some("0.1.0".into()),
            node_id: Some("jp-7f3a9c".into()),
            node_token: Some("proof-token".into()),
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({ "region": "jp", "address": "127.0.0.2", "mode": "containerd-only",
                "hostname": "node-a", "agent_version": "0.1.0", "node_id": "jp-7f3a9c",
                "node_token": "proof-token" })
        );
        assert!(!format!("{request:?}").contains("proof-token"));
        let fresh = RegisterRequest {
            node_id: None,
            node_token: None,
            hostname: None,
            mode: NodeMode::K3sWorker,
            ..request
        };
        assert_eq!(
            serde_json::to_value(&fresh).unwrap(),
            serde_json::json!({ "region": "jp", "address": "127.0.0.2", "mode": "k3s-worker",
                "agent_version": "0.1.0" })
        );
    }

    #[test]
    fn heartbeat_request_matches_the_documented_shape() {
        let with = HeartbeatRequest {
            release: None,
            node_id: "jp-7f3a9c".into(),
            metrics: Some(Metrics {
                cpu: 0.42,
                rtt_ms: 3.1,
                error_rate: 0.0,
            }),
        };
        assert_eq!(
            serde_json::to_value(&with).unwrap(),
            serde_json::json!({ "node_id": "jp-7f3a9c",
                "metrics": { "cpu": 0.42, "rtt_ms": 3.1, "error_rate": 0.0 } })
        );
        let without = HeartbeatRequest {
            metrics: None,
            ..with.clone()
        };
        assert_eq!(
            serde_json::to_value(&without).unwrap(),
            serde_json::json!({ "node_id": "jp-7f3a9c" })
        );
    }

    #[test]
    fn responses_from_the_documentation_decode_and_tolerate_new_fields() {
        let register: RegisterResponse = serde_json::from_str(
            r#"{ "node_id": "jp-7f3a9c", "node_token": "abc", "heartbeat_interval_ms": 10000,
                 "heartbeat_timeout_ms": 30000, "later_field": 1 }"#,
        )
        .unwrap();
        assert_eq!(register.heartbeat_interval_ms, 10_000);
        assert!(
            !format!("{register:?}").contains("abc"),
            "token must not be logged"
        );
        let heartbeat: HeartbeatResponse =
            serde_json::from_str(r#"{ "status": "drain", "heartbeat_interval_ms": 10000 }"#)
                .unwrap();
        assert_eq!(heartbeat.status, NodeStatus::Drain);
        assert_eq!(heartbeat.release, None);
        let ordered: HeartbeatResponse = serde_json::from_str(
            r#"{ "status": "up", "heartbeat_interval_ms": 10000,
                 "release": { "id": "rel-1", "image": "web:v2", "timeout_ms": 5000 } }"#,
        )
        .unwrap();
        assert_eq!(
            ordered.release,
            Some(ReleaseOrder {
                id: "rel-1".into(),
                image: "web:v2".into(),
                health_path: None,
                timeout_ms: Some(5000),
            })
        );
    }

    #[test]
    fn a_release_result_rides_on_the_heartbeat() {
        let request = HeartbeatRequest {
            node_id: "jp-1".into(),
            metrics: None,
            release: Some(ReleaseResult {
                id: "rel-1".into(),
                ok: false,
                message: "health check failed".into(),
                duration_ms: None,
            }),
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({ "node_id": "jp-1",
                "release": { "id": "rel-1", "ok": false, "message": "health check failed" } })
        );
    }
}
