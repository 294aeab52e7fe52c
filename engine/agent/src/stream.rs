//! The agent stream's client (docs/api.md, "Agent stream"): one long-lived
//! gRPC stream to the control plane over HTTP/2 (TLS with the same trust as
//! the HTTP client: the `--ca-file` CA only, else the system's roots).
//! Heartbeats go up numbered; each answer names the heartbeat it answers,
//! and what the control plane pushes on its own (a status change, an order)
//! comes between them.
//!
//! It owns the wire and its timeouts only. When to heartbeat, and falling
//! back to plain HTTP heartbeats when the stream cannot be had, is the
//! agent loop's (`agent.rs`).

use std::time::Duration;

use neutral_core::model::NodeStatus;
use neutral_proto::v1::node_stream_client::NodeStreamClient;
use neutral_proto::v1::{self, ControlMessage, NodeMessage};
use neutral_proto::{MAX_MESSAGE_BYTES, NODE_ID_METADATA};
use reqwest::Url;
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Streaming};

use crate::client::TrustedCa;
use crate::protocol::{HeartbeatRequest, HeartbeatResponse, ReleaseOrder};

/// Opening a stream (connection, TLS, the answer's headers) takes at most this long.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings while the stream is quiet, so a control plane that vanished
/// without a word is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Why a stream could not be opened or broke.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{url}: {message}")]
    Open { url: String, message: String },
    #[error("the stream broke: {0}")]
    Broken(String),
    #[error("the control plane refused: {0}")]
    Refused(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the control plane ended the stream")]
    Ended,
    #[error("unreadable message from the control plane: {0}")]
    BadMessage(String),
}

/// Opens streams to whichever replica the agent uses.
#[derive(Debug)]
pub struct StreamOpener {
    ca: Option<Certificate>,
}

impl StreamOpener {
    /// With `ca` as the only trust root when given (the HTTP client has
    /// checked it already), else the system's.
    pub fn new(ca: Option<&TrustedCa>) -> StreamOpener {
        StreamOpener {
            ca: ca.map(|ca| Certificate::from_pem(&ca.pem)),
        }
    }

    fn channel(&self, base: &Url) -> Result<Channel, StreamError> {
        let open_error = |message: String| StreamError::Open {
            url: base.to_string(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(base.as_str().trim_end_matches('/').to_owned())
            .map_err(|e| open_error(e.to_string()))?
            .connect_timeout(OPEN_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .keep_alive_while_idle(true)
            .user_agent(concat!("neutral-agent/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| open_error(e.to_string()))?;
        if base.scheme() == "https" {
            let tls = match &self.ca {
                Some(ca) => ClientTlsConfig::new().ca_certificate(ca.clone()),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| open_error(neutral_core::error_text::with_causes(&e)))?;
        }
        Ok(endpoint.connect_lazy())
    }

    /// Opens `node_id`'s stream on the control plane at `base`.
    pub async fn open(
        &self,
        base: &Url,
        node_id: &str,
        node_token: &str,
    ) -> Result<StreamLink, StreamError> {
        let channel = self.channel(base)?;
        let mut client = NodeStreamClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (outgoing, queued) = mpsc::channel(4);
        let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(queued));
        let metadata = request.metadata_mut();
        let refused = |what: &str| StreamError::Open {
            url: base.to_string(),
            message: format!("{what} cannot be sent as metadata"),
        };
        metadata.insert(
            NODE_ID_METADATA,
            node_id.parse().map_err(|_| refused("the node id"))?,
        );
        metadata.insert(
            "authorization",
            format!("Bearer {node_token}")
                .parse()
                .map_err(|_| refused("the node token"))?,
        );
        let response = tokio::time::timeout(OPEN_TIMEOUT, client.connect(request))
            .await
            .map_err(|_| StreamError::Timeout(OPEN_TIMEOUT))?
            .map_err(|status| match status.code() {
                tonic::Code::Unauthenticated
                | tonic::Code::ResourceExhausted
                | tonic::Code::InvalidArgument => StreamError::Refused(status.message().to_owned()),
                _ => StreamError::Open {
                    url: base.to_string(),
                    message: describe(&status),
                },
            })?;
        Ok(StreamLink {
            outgoing,
            incoming: response.into_inner(),
            sequence: 0,
        })
    }
}

fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&neutral_core::error_text::with_causes(source));
    }
    text
}

/// An open stream.
#[derive(Debug)]
pub struct StreamLink {
    outgoing: mpsc::Sender<NodeMessage>,
    incoming: Streaming<ControlMessage>,
    sequence: u64,
}

impl StreamLink {
    /// Sends `request` and waits at most `timeout` for its answer. What the
    /// control plane pushed before the answer is superseded by it.
    pub async fn heartbeat(
        &mut self,
        request: &HeartbeatRequest,
        timeout: Duration,
    ) -> Result<HeartbeatResponse, StreamError> {
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let sequence = self.sequence;
        let message = NodeMessage {
            sequence,
            heartbeat: Some(v1::Heartbeat {
                metrics: request.metrics.map(v1::Metrics::from),
                release: request.release.as_ref().map(|r| v1::ReleaseResult {
                    id: r.id.clone(),
                    ok: r.ok,
                    message: r.message.clone(),
                    duration_ms: r.duration_ms,
                }),
            }),
        };
        let exchange = async {
            self.outgoing
                .send(message)
                .await
                .map_err(|_| StreamError::Broken("the request stream is closed".into()))?;
            loop {
                let answer = self.next().await?;
                if answer.answers == sequence {
                    return response_of(answer);
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| StreamError::Timeout(timeout))?
    }

    /// The next message the control plane pushes on its own. Safe to cancel
    /// (the agent waits for it beside its heartbeat timer).
    pub async fn pushed(&mut self) -> Result<HeartbeatResponse, StreamError> {
        loop {
            let message = self.next().await?;
            // A late answer to a heartbeat that timed out is stale.
            if message.answers == 0 {
                return response_of(message);
            }
        }
    }

    async fn next(&mut self) -> Result<ControlMessage, StreamError> {
        match self.incoming.message().await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(StreamError::Ended),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                Err(StreamError::Refused(status.message().to_owned()))
            }
            Err(status) => Err(StreamError::Broken(describe(&status))),
        }
    }
}

/// A control message as the HTTP heartbeat's answer, which the agent loop
/// acts on either way.
fn response_of(message: ControlMessage) -> Result<HeartbeatResponse, StreamError> {
    let status = match message.status.as_str() {
        "up" => NodeStatus::Up,
        "down" => NodeStatus::Down,
        "drain" => NodeStatus::Drain,
        other => {
            return Err(StreamError::BadMessage(format!(
                "status `{}`",
                other.chars().take(32).collect::<String>()
            )));
        }
    };
    Ok(HeartbeatResponse {
        status,
        heartbeat_interval_ms: message.heartbeat_interval_ms,
        release: message.release.map(|order| ReleaseOrder {
            id: order.id,
            image: order.image,
            health_path: order.health_path,
            timeout_ms: order.timeout_ms,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_read_as_heartbeat_answers() {
        let answer = response_of(ControlMessage {
            answers: 3,
            status: "drain".into(),
            heartbeat_interval_ms: 2000,
            release: Some(v1::ReleaseOrder {
                id: "rel-1".into(),
                image: "web:v2".into(),
                health_path: None,
                timeout_ms: Some(5000),
            }),
        })
        .unwrap();
        assert_eq!(answer.status, NodeStatus::Drain);
        assert_eq!(answer.heartbeat_interval_ms, 2000);
        assert_eq!(answer.release.unwrap().image, "web:v2");
        let bad = response_of(ControlMessage {
            status: "sideways".into(),
            ..ControlMessage::default()
        });
        assert!(matches!(bad, Err(StreamError::BadMessage(m)) if m.contains("sideways")));
    }
}
