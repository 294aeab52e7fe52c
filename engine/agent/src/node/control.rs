//! The agent's local control socket: `neutral agent release` and `neutral
//! agent status` talk to the running agent through a Unix socket in the node
//! folder (mode 0600, so only root or the agent's user), one JSON line each
//! way.
//!
//! The running agent is the only owner of nginx and the containers, so a
//! release asked locally is serialised with releases from the control plane
//! and recorded in the same history. This module must not release anything
//! itself: it hands requests to [`Node`].

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::runtime::Runtime;
use super::{Node, NodeView, ReleaseReport, ReleaseRequest};

/// The socket's name in the node folder.
pub const SOCKET_NAME: &str = "agent.sock";
/// Requests longer than this are refused.
const MAX_REQUEST: u64 = 64 * 1024;

/// One request on the socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ControlRequest {
    Release(ReleaseRequest),
    Status,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum ControlResponse {
    Released(ReleaseReport),
    Status(Box<NodeView>),
    Error { message: String },
}

/// Why talking to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no agent answers on {} ({source}); is `neutral agent --runtime containerd` running with this --node-dir?", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the agent on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent gave no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the agent's answer is not understood: {0}")]
    BadAnswer(String),
}

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until `shutdown` completes; each connection in its own
/// task.
pub async fn serve<R: Runtime + 'static>(
    listener: UnixListener,
    node: Arc<Node<R>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let node = Arc::clone(&node);
                    tokio::spawn(async move {
                        if let Err(err) = answer(stream, &node).await {
                            tracing::debug!(error = %err, "control connection failed");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn answer<R: Runtime>(stream: UnixStream, node: &Node<R>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<ControlRequest>(&line) {
        Err(err) => ControlResponse::Error {
            message: format!("bad request: {err}"),
        },
        Ok(ControlRequest::Status) => ControlResponse::Status(Box::new(node.view().await)),
        Ok(ControlRequest::Release(request)) => match node.release(&request).await {
            Ok(report) => ControlResponse::Released(report),
            Err(err) => ControlResponse::Error {
                message: err.to_string(),
            },
        },
    };
    let mut text = serde_json::to_string(&response).unwrap_or_default();
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// Sends one request to the agent listening on `path` and waits up to
/// `timeout` for its answer.
pub async fn request(
    path: &Path,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlResponse, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut text = serde_json::to_string(request).unwrap_or_default();
        text.push('\n');
        write.write_all(text.as_bytes()).await.map_err(io)?;
        let mut line = String::new();
        BufReader::new(read.take(16 << 20))
            .read_line(&mut line)
            .await
            .map_err(io)?;
        serde_json::from_str(&line).map_err(|err| ControlError::BadAnswer(err.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControlError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_tagged_json_object() {
        let release = ControlRequest::Release(ReleaseRequest {
            image: "neutral.test/web:v2".into(),
            health_path: Some("/ready".into()),
            timeout_ms: Some(30_000),
            ..ReleaseRequest::default()
        });
        let text = serde_json::to_string(&release).unwrap();
        assert_eq!(
            text,
            r#"{"op":"release","image":"neutral.test/web:v2","health_path":"/ready","timeout_ms":30000}"#
        );
        assert_eq!(
            serde_json::from_str::<ControlRequest>(&text).unwrap(),
            release
        );
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"op":"status"}"#).unwrap(),
            ControlRequest::Status
        );
        assert!(serde_json::from_str::<ControlRequest>(r#"{"op":"release"}"#).is_err());
        assert!(serde_json::from_str::<ControlRequest>(r#"{"op":"reboot"}"#).is_err());
        assert!(
            serde_json::from_str::<ControlRequest>(r#"{"op":"release","image":"x","force":true}"#)
                .is_err()
        );
    }
}
