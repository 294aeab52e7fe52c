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

/// A running private containerd; stopped by [`PrivateContainerd::stop`], or
/// killed when dropped if this process started it.
#[derive(Debug)]
pub struct PrivateContainerd {
    process: Process,
    socket: PathBuf,
    log: PathBuf,
}

#[derive(Debug)]
enum Process {
    Started(Child),
    /// An instance a previous agent started (and did not stop: it was killed),
    /// found through the pid file.
    Adopted(u32),
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
        let pid_file = dir.join("containerd.pid");
        let log = dir.join("containerd.log");
        if let Some(pid) = live_containerd(&pid_file)
            && tokio::net::UnixStream::connect(&socket).await.is_ok()
        {
            tracing::info!(
                pid,
                "adopting the private containerd a previous agent left running"
            );
            return Ok(PrivateContainerd {
                process: Process::Adopted(pid),
                socket,
                log,
            });
        }
        let config = dir.join("config.toml");
        std::fs::write(&config, render_config(&root, &state, &socket)).map_err(files(&config))?;
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
        if let Some(pid) = child.id() {
            std::fs::write(&pid_file, format!("{pid}\n")).map_err(files(&pid_file))?;
        }
        let mut instance = PrivateContainerd {
            process: Process::Started(child),
            socket,
            log,
        };
        instance.wait_ready().await?;
        Ok(instance)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn wait_ready(&mut self) -> Result<(), ContainerdError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = match &mut self.process {
                Process::Started(child) => child.try_wait().ok().flatten(),
                Process::Adopted(_) => None,
            };
            if let Some(status) = exited {
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
    pub async fn stop(self, grace: Duration) {
        match self.process {
            Process::Started(mut child) => {
                if let Some(pid) = child.id() {
                    signal(pid, "TERM").await;
                    if tokio::time::timeout(grace, child.wait()).await.is_ok() {
                        return;
                    }
                }
                let _ = child.kill().await;
            }
            Process::Adopted(pid) => {
                signal(pid, "TERM").await;
                let deadline = Instant::now() + grace;
                while process_exists(pid) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if process_exists(pid) {
                    signal(pid, "KILL").await;
                }
            }
        }
    }
}

/// The pid in `pid_file` when it names a live `containerd` process.
fn live_containerd(pid_file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let program = cmdline.split(|b| *b == 0).next()?;
    String::from_utf8_lossy(program)
        .ends_with("containerd")
        .then_some(pid)
}

fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| super::nginx::parse_stat_parent(&stat))
        .is_some()
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
