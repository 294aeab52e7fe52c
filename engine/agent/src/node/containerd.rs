//! A private containerd instance: its own root, state and socket under one
//! folder, started as a child process, for nodes that do not use the
//! system's containerd and for tests.
//!
//! It owns the instance's configuration file and process; it must not touch
//! the system containerd. The CRI plugin is disabled so the instance opens
//! no TCP port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a starting containerd may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a private containerd could not start.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("preparing {}: {source}", path.display())]
    Files {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("containerd exited at start ({status}); its log {} ends: {tail}", log.display())]
    Exited {
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("containerd did not answer on {} within {}", socket.display(), humantime::format_duration(*waited))]
    NoAnswer { socket: PathBuf, waited: Duration },
}

/// The configuration file of a private instance.
pub fn render_config(root: &Path, state: &Path, socket: &Path) -> String {
    format!(
        "# Written by neutral agent: a private containerd for one node.\n\
         version = 2\n\
         root = {root:?}\n\
         state = {state:?}\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = {socket:?}\n\
         [ttrpc]\n  address = \"{}.ttrpc\"\n",
        socket.display()
    )
}

/// A running private containerd; stopped by [`PrivateContainerd::stop`] or
/// killed when dropped.
#[derive(Debug)]
pub struct PrivateContainerd {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl PrivateContainerd {
    /// Starts `containerd` with everything under `dir`, and waits until it
    /// answers on its socket.
    pub async fn start(binary: &Path, dir: &Path) -> Result<Self, ContainerdError> {
        let files = |path: &Path| {
            let path = path.to_owned();
            move |source| ContainerdError::Files { path, source }
        };
        let root = dir.join("root");
        let state = dir.join("state");
        for folder in [dir, &root, &state] {
            std::fs::create_dir_all(folder).map_err(files(folder))?;
        }
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, render_config(&root, &state, &socket)).map_err(files(&config))?;
        let log = dir.join("containerd.log");
        let log_file = std::fs::File::create(&log).map_err(files(&log))?;
        let log_clone = log_file.try_clone().map_err(files(&log))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_clone)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ContainerdError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        let mut instance = PrivateContainerd { child, socket, log };
        instance.wait_ready().await?;
        Ok(instance)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn wait_ready(&mut self) -> Result<(), ContainerdError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                return Err(ContainerdError::Exited {
                    status,
                    log: self.log.clone(),
                    tail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                });
            }
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ContainerdError::NoAnswer {
                    socket: self.socket.clone(),
                    waited: START_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Containers' shims outlive
    /// containerd: stop the containers first.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM").await;
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// Sends a signal with `kill(1)` (the crate forbids unsafe code, so no libc).
pub async fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_keeps_everything_under_the_folder_and_disables_cri() {
        let text = render_config(
            Path::new("/n/root"),
            Path::new("/n/state"),
            Path::new("/n/containerd.sock"),
        );
        assert_eq!(
            text,
            "# Written by neutral agent: a private containerd for one node.\n\
             version = 2\n\
             root = \"/n/root\"\n\
             state = \"/n/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"/n/containerd.sock\"\n\
             [ttrpc]\n  address = \"/n/containerd.sock.ttrpc\"\n"
        );
    }
}
