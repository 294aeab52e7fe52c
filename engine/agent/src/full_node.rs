//! A full node's processes around the agent: the private containerd (when
//! asked for), the node's nginx and workload ([`Node`]), and the local control
//! socket. Started before the agent registers, stopped after it ends.
//!
//! This module sequences start-up and shut-down only; releases are [`Node`]'s.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{ContainerdSource, NodeSetup};
use crate::node::containerd::PrivateContainerd;
use crate::node::control;
use crate::node::nginx::Nginx;
use crate::node::runtime::{Ctr, Runtime};
use crate::node::{BootError, Node};

/// How long nginx may take to finish its requests when the node stops.
const NGINX_QUIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a full node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeStartError {
    #[error("private containerd: {0}")]
    Containerd(#[from] crate::node::containerd::ContainerdError),
    #[error("containerd on {}: {source}", path.display())]
    NoContainerd {
        path: std::path::PathBuf,
        source: crate::node::runtime::RuntimeError,
    },
    #[error("importing {}: {source}", path.display())]
    Import {
        path: std::path::PathBuf,
        source: crate::node::runtime::RuntimeError,
    },
    #[error(transparent)]
    Setup(#[from] crate::node::ReleaseError),
    #[error(transparent)]
    Boot(BootError),
    #[error("control socket {}: {source}", path.display())]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The running processes of a full node.
#[derive(Debug)]
pub struct FullNode {
    pub node: Arc<Node<Ctr>>,
    containerd: Option<PrivateContainerd>,
    control: JoinHandle<()>,
    stop_control: watch::Sender<bool>,
}

impl FullNode {
    /// Starts containerd (if private), imports images, boots nginx and the
    /// workload, and opens the control socket.
    pub async fn start(setup: &NodeSetup) -> Result<Self, NodeStartError> {
        let (containerd, address) = match &setup.containerd {
            ContainerdSource::Socket(path) => (None, path.clone()),
            ContainerdSource::Private { binary, dir } => {
                let instance = PrivateContainerd::start(binary, dir).await?;
                let socket = instance.socket().to_owned();
                info!(socket = %socket.display(), "private containerd ready");
                (Some(instance), socket)
            }
        };
        let mut ctr = Ctr::new(address.clone(), setup.namespace.clone());
        ctr.binary.clone_from(&setup.ctr_binary);
        // Answering at all is the check that containerd is there.
        if let Err(source) = ctr.state("svc-blue").await {
            return Err(NodeStartError::NoContainerd {
                path: address,
                source,
            });
        }
        for archive in &setup.imports {
            let names = ctr
                .import(archive)
                .await
                .map_err(|source| NodeStartError::Import {
                    path: archive.clone(),
                    source,
                })?;
            info!(archive = %archive.display(), images = ?names, "imported");
        }
        let node = Arc::new(Node::new(
            ctr,
            Nginx::new(setup.nginx.clone()),
            setup.node.clone(),
        )?);
        match node.boot(setup.initial_image.as_deref()).await {
            Ok(()) => {}
            // The node still registers: its probes fail until a release works.
            Err(BootError::Release(err)) => {
                error!(error = %err, "the initial release failed; the node serves nothing until a release succeeds");
            }
            Err(err) => return Err(NodeStartError::Boot(err)),
        }
        let socket = setup.node.dir.join(control::SOCKET_NAME);
        let listener = control::bind(&socket).map_err(|source| NodeStartError::Socket {
            path: socket.clone(),
            source,
        })?;
        let (stop_control, mut stopped) = watch::channel(false);
        let control = tokio::spawn(control::serve(listener, Arc::clone(&node), async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
        info!(socket = %socket.display(), "control socket open");
        Ok(FullNode {
            node,
            containerd,
            control,
            stop_control,
        })
    }

    /// Stops taking work: the control socket closes, nginx finishes its
    /// requests and quits, the workload stops, then the private containerd.
    pub async fn stop(self) {
        let _ = self.stop_control.send(true);
        if let Err(err) = self.control.await {
            warn!(error = %err, "control socket task failed");
        }
        let _ = std::fs::remove_file(self.node.config().dir.join(control::SOCKET_NAME));
        self.node.shutdown(NGINX_QUIT_TIMEOUT).await;
        if let Some(containerd) = self.containerd {
            containerd.stop(Duration::from_secs(10)).await;
        }
    }
}
