//! The agent stream: gRPC `neutral.node.v1.NodeStream/Connect` (docs/api.md,
//! "Agent stream"). A registered node's agent keeps one stream open; each
//! heartbeat on it is handled exactly as `POST /nodes/heartbeat` is
//! ([`super::nodes::accept_heartbeat`]) and answered on it, and the control
//! plane pushes the node's status and orders as soon as they change instead
//! of waiting for the next heartbeat.
//!
//! When a stream breaks — the agent's process or machine died, the
//! connection was reset — the node is probed at once
//! ([`crate::health::confirm`]) and taken down if that probe fails. A
//! broken stream alone never takes a node down.
//!
//! Bounds: a stream opens only with the node's id and current token; one
//! per node (a newer one ends the older) and `--max-node-streams` in all
//! (`node_streams`); messages over [`MAX_MESSAGE_BYTES`] or that do not
//! decode end the stream; a stream silent for twice the heartbeat timeout
//! is ended; a client that does not read what is pushed to it fills a small
//! outbox and its stream is ended. Each ending is logged with its reason.
//! This module owns the stream's protocol; it must not decide liveness
//! (the core's) or hold state beyond a stream's life.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use neutral_core::log_gate::LogGate;
use neutral_core::model::Metrics;
use neutral_proto::v1::node_stream_server::{NodeStream, NodeStreamServer};
use neutral_proto::v1::{self, ControlMessage, NodeMessage};
use neutral_proto::{MAX_MESSAGE_BYTES, NODE_ID_METADATA, SERVICE_PATH};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::nodes::{
    HeartbeatAnswer, HeartbeatRefused, accept_heartbeat, check_metrics, current_answer,
};
use crate::app::App;
use crate::node_streams::Opened;
use crate::releases::ReleaseResult;

/// Messages waiting to be sent on one stream; a client that leaves this
/// many unread is not reading.
const OUTBOX: usize = 8;
/// Refusals are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The gRPC router the API's listener sends `application/grpc` requests to.
pub fn router(app: Arc<App>) -> Router {
    let service = NodeStreamServer::new(StreamService {
        app,
        refusals: Arc::new(std::sync::Mutex::new(LogGate::new(LOG_EVERY))),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    Router::new().route_service(&format!("{SERVICE_PATH}{{*method}}"), service)
}

#[derive(Clone, Debug)]
struct StreamService {
    app: Arc<App>,
    refusals: Arc<std::sync::Mutex<LogGate>>,
}

impl StreamService {
    /// Counts and logs (at most every [`LOG_EVERY`]) a refused stream.
    fn refuse(&self, status: Status, peer: Option<SocketAddr>) -> Status {
        self.app.counters.node_stream("refused");
        let pass = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pass(Instant::now());
        if let Some(held_back) = pass {
            tracing::warn!(
                client = ?peer.map(|p| p.ip()),
                reason = %status.message(),
                refused_since_last_line = held_back + 1,
                "agent stream refused"
            );
        }
        status
    }
}

#[tonic::async_trait]
impl NodeStream for StreamService {
    type ConnectStream = ReceiverStream<Result<ControlMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let app = &self.app;
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let metadata = request.metadata();
        let node = metadata
            .get(NODE_ID_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers = metadata.clone().into_headers();
        let token = crate::auth::bearer(&headers).map(str::to_owned);
        let (Some(node), Some(token)) = (node, token) else {
            return Err(self.refuse(
                Status::unauthenticated(format!(
                    "missing `{NODE_ID_METADATA}` or `authorization: Bearer <node token>` metadata"
                )),
                peer,
            ));
        };
        let known = app
            .read_world()
            .nodes
            .get(&node)
            .is_some_and(|e| e.token.matches(&token));
        if !known {
            return Err(self.refuse(
                Status::unauthenticated("unknown node or invalid node token; register again"),
                peer,
            ));
        }
        let opened = match app.node_streams.open(&node) {
            Ok(opened) => opened,
            Err(full) => {
                return Err(self.refuse(Status::resource_exhausted(full.to_string()), peer));
            }
        };
        app.counters.node_stream("opened");
        if opened.replaced_one {
            app.counters.node_stream("replaced");
            tracing::info!(node = %node, "agent stream replaced by a newer one");
        } else {
            tracing::debug!(node = %node, "agent stream opened");
        }
        if let Some(peer) = peer {
            app.connections.trust(peer.ip(), Instant::now());
        }
        let (outbox, sent) = mpsc::channel(OUTBOX);
        tokio::spawn(serve_stream(
            Arc::clone(app),
            node,
            token,
            opened,
            request.into_inner(),
            outbox,
        ));
        Ok(Response::new(ReceiverStream::new(sent)))
    }
}

/// How a stream ended.
enum End {
    /// The client went away or broke the stream: the node may be gone.
    Broken(String),
    /// The client ended its side: the agent is leaving.
    Closed,
    /// Nothing from the client for this long.
    Silent(Duration),
    /// The client does not read what is sent to it.
    NotReading,
    /// The client sent something refused (the node's token no longer
    /// valid, metrics out of range).
    Refused(String),
    /// A newer stream of the same node replaced this one.
    Replaced,
    /// The daemon is stopping.
    Stopping,
}

impl End {
    /// Why the node should be probed now, if this ending may mean it died.
    fn probe_because(&self) -> Option<String> {
        match self {
            End::Broken(detail) => Some(format!("its agent stream broke ({detail})")),
            End::Closed => Some("its agent closed its stream".to_owned()),
            _ => None,
        }
    }

    fn reason(&self) -> String {
        match self {
            End::Broken(detail) => format!("broken: {detail}"),
            End::Closed => "closed by the agent".to_owned(),
            End::Silent(after) => format!("no message for {}s", after.as_secs()),
            End::NotReading => format!("the client left {OUTBOX} messages unread"),
            End::Refused(reason) => format!("refused a message: {reason}"),
            End::Replaced => "replaced by a newer stream of the node".to_owned(),
            End::Stopping => "the control plane is stopping".to_owned(),
        }
    }

    fn event(&self) -> &'static str {
        match self {
            End::Broken(_) => "broken",
            End::Closed => "closed",
            End::Silent(_) => "silent",
            End::NotReading => "not_reading",
            End::Refused(_) => "refused_message",
            End::Replaced | End::Stopping => "ended",
        }
    }
}

/// One stream's life: heartbeats in, answers and pushes out, until it ends.
async fn serve_stream(
    app: Arc<App>,
    node: String,
    token: String,
    mut opened: Opened,
    mut incoming: Streaming<NodeMessage>,
    outbox: mpsc::Sender<Result<ControlMessage, Status>>,
) {
    let silent_after = (app.settings.liveness.heartbeat_timeout * 2).max(Duration::from_secs(10));
    let interval_ms =
        u64::try_from(app.settings.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
    let end = loop {
        tokio::select! {
            message = tokio::time::timeout(silent_after, incoming.message()) => match message {
                Err(_) => {
                    let _ = outbox.try_send(Err(Status::cancelled(format!(
                        "no message for {}s",
                        silent_after.as_secs()
                    ))));
                    break End::Silent(silent_after);
                }
                Ok(Ok(Some(message))) => {
                    match heartbeat(&app, &node, &token, message).await {
                        Ok((sequence, answer)) => {
                            if !send(&outbox, control(sequence, &answer, interval_ms)) {
                                break End::NotReading;
                            }
                        }
                        Err(status) => {
                            let reason = status.message().to_owned();
                            let _ = outbox.try_send(Err(status));
                            break End::Refused(reason);
                        }
                    }
                }
                Ok(Ok(None)) => break End::Closed,
                Ok(Err(status)) => {
                    // Unreadable input (the client may still be there to hear it).
                    let reason = status.message().to_owned();
                    let _ = outbox.try_send(Err(status));
                    break End::Broken(reason);
                }
            },
            () = opened.signals.nudge.notified() => {
                if let Some(answer) = current_answer(&app, &node)
                    && !send(&outbox, control(0, &answer, interval_ms))
                {
                    break End::NotReading;
                }
            }
            () = opened.signals.replaced.notified() => break End::Replaced,
            _ = opened.stop.changed() => break End::Stopping,
            () = outbox.closed() => break End::Broken("the client went away".to_owned()),
        }
    };
    let current = app.node_streams.close(&node, opened.id);
    app.counters.node_stream(end.event());
    let reason = end.reason();
    match &end {
        End::Replaced | End::Stopping => {
            tracing::debug!(node = %node, %reason, "agent stream ended");
        }
        End::Broken(_) | End::Closed => {
            tracing::info!(node = %node, %reason, "agent stream ended");
        }
        End::Silent(_) | End::NotReading | End::Refused(_) => {
            tracing::warn!(node = %node, %reason, "agent stream ended by the control plane");
        }
    }
    if current && let Some(why) = end.probe_because() {
        crate::health::confirm(&app, &node, &why).await;
    }
}

/// Queues `message`; `false` when the client has left this many unread.
fn send(outbox: &mpsc::Sender<Result<ControlMessage, Status>>, message: ControlMessage) -> bool {
    match outbox.try_send(Ok(message)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Handles one message: `(its sequence, the answer)`, or the status that
/// ends the stream.
async fn heartbeat(
    app: &App,
    node: &str,
    token: &str,
    message: NodeMessage,
) -> Result<(u64, HeartbeatAnswer), Status> {
    let heartbeat = message.heartbeat.unwrap_or_default();
    let metrics = match heartbeat.metrics {
        None => None,
        Some(metrics) => Some(
            check_metrics(Metrics::from(metrics))
                .map_err(|err| Status::invalid_argument(err.message))?,
        ),
    };
    let release = heartbeat.release.map(|r| ReleaseResult {
        id: r.id,
        ok: r.ok,
        message: r.message,
        duration_ms: r.duration_ms,
    });
    let answer = accept_heartbeat(app, node.to_owned(), token, metrics, release.as_ref())
        .await
        .map_err(|refused| match refused {
            HeartbeatRefused::Unknown => {
                Status::unauthenticated("unknown node or invalid node token; register again")
            }
            HeartbeatRefused::Overloaded => Status::unavailable(
                "this replica's heartbeat writer is behind; send heartbeats to another replica",
            ),
        })?;
    Ok((message.sequence, answer))
}

fn control(answers: u64, answer: &HeartbeatAnswer, interval_ms: u64) -> ControlMessage {
    ControlMessage {
        answers,
        status: answer.status.as_str().to_owned(),
        heartbeat_interval_ms: interval_ms,
        release: answer.release.as_ref().map(|order| v1::ReleaseOrder {
            id: order.id.clone(),
            image: order.image.clone(),
            health_path: order.health_path.clone(),
            timeout_ms: order.timeout_ms,
        }),
    }
}
