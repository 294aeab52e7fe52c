//! The agent stream's wire protocol: the messages, client and server that
//! `tonic-build` generates from `proto/stream.proto`, the metadata keys,
//! and conversions between the wire's metrics and the core's.
//!
//! It owns the protocol's shape only. It must not decide anything (what a
//! heartbeat means is the control plane's, when to send one the agent's)
//! nor open connections.

/// Generated from `proto/stream.proto` (package `neutral.node.v1`).
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("neutral.node.v1");
}

use neutral_core::model::Metrics;

/// The request metadata naming the node a stream belongs to.
pub const NODE_ID_METADATA: &str = "neutral-node-id";

/// The gRPC path prefix of the service (`/<package>.<service>/`): what a
/// server routes to it.
pub const SERVICE_PATH: &str = "/neutral.node.v1.NodeStream/";

/// The largest message either end accepts: a heartbeat or an answer is a few
/// hundred bytes; anything near this is not from a node or a control plane.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

impl From<Metrics> for v1::Metrics {
    fn from(metrics: Metrics) -> Self {
        v1::Metrics {
            cpu: metrics.cpu,
            rtt_ms: metrics.rtt_ms,
            error_rate: metrics.error_rate,
        }
    }
}

impl From<v1::Metrics> for Metrics {
    fn from(metrics: v1::Metrics) -> Self {
        Metrics {
            cpu: metrics.cpu,
            rtt_ms: metrics.rtt_ms,
            error_rate: metrics.error_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_heartbeat_round_trips_and_garbage_is_an_error() {
        let message = v1::NodeMessage {
            sequence: 7,
            heartbeat: Some(v1::Heartbeat {
                metrics: Some(v1::Metrics::from(Metrics {
                    cpu: 0.5,
                    rtt_ms: 3.0,
                    error_rate: 0.01,
                })),
                release: None,
            }),
        };
        let bytes = message.encode_to_vec();
        let back = v1::NodeMessage::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, message);
        assert_eq!(
            Metrics::from(back.heartbeat.unwrap().metrics.unwrap()).cpu,
            0.5
        );
        // A field tagged with wire type 7 (which does not exist).
        assert!(v1::NodeMessage::decode(&[0x0f_u8, 0x01][..]).is_err());
    }
}
