//! The local launcher's processes: one `neutral agent` per slot, started
//! detached from Terraform and the provider, found again and stopped by
//! the files it leaves in the pool's state folder.
//!
//! Layout under the pool's `state_dir`, one folder per slot:
//!
//! - `<slot>/agent.pid` — the agent's pid (it leads its own process group);
//! - `<slot>/agent.json` — the agent's identity (`--state-file`: node id
//!   and node token, mode 0600), so a restarted agent keeps its node;
//! - `<slot>/agent.log` — the agent's stdout and stderr;
//! - `<slot>/address` — the address it was started with.
//!
//! An agent runs in its own process group with stdin from `/dev/null` and
//! its output in the log file: Terraform neither waits for it nor kills it
//! when the plugin exits. It gets a clean environment (no admin token):
//! `PATH`, `HOME`, locale, TLS and log settings, and the join token.
//!
//! This module owns processes and files. It decides nothing about which
//! slots exist; [`crate::pool`] does (with the core's rules).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::docker_launcher;
pub use crate::slot::{AgentLaunch, SlotDir, expand_args};

/// How long an agent gets to exit after SIGTERM before SIGKILL. Longer
/// than the agent's own bounded stop of a full node (nginx's graceful quit,
/// 30 s, then containerd, 10 s): nginx and containerd daemonize out of the
/// agent's process group, so a SIGKILL in the middle of that stop would
/// leave them running after the slot's folder is gone.
pub const STOP_GRACE: Duration = Duration::from_secs(45);
/// The environment variables an agent inherits from the provider.
const PASSED_ENV: [&str; 11] = [
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "NEUTRAL_LOG",
    "RUST_LOG",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NO_COLOR",
];
/// The agent flags the launcher sets itself; `agent_args` must not repeat
/// them.
pub const LAUNCHER_FLAGS: [&str; 5] = [
    "--control-plane",
    "--region",
    "--ip",
    "--state-file",
    "--hostname",
];

impl SlotDir {
    /// Whether the slot's recorded agent is alive (for the `docker`
    /// launcher: whether its container runs).
    pub fn running(&self) -> bool {
        if let Some(container) = docker_launcher::container_of(self) {
            return docker_launcher::running(&container);
        }
        self.pid().is_some_and(|pid| self.alive(pid))
    }

    /// Whether `pid` is this slot's agent and alive. An agent this process
    /// started is asked directly: right after `exec` its command line can
    /// still read empty (the kernel sets it up after the parent already
    /// resumed), so under load the `/proc` check alone took a starting agent
    /// for an exited one (and then did not stop it).
    fn alive(&self, pid: u32) -> bool {
        child_alive(pid).unwrap_or_else(|| self.is_our_agent(pid))
    }

    /// Whether `pid` is a live (not zombie) `neutral agent` using this
    /// slot's state file, so a reused pid is never mistaken for it.
    fn is_our_agent(&self, pid: u32) -> bool {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
            return false;
        };
        // `pid (comm) S ...`: the state follows the last `)`.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if matches!(state, Some("Z" | "X") | None) {
            return false;
        }
        let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
            return false;
        };
        let state_file = self.state_file();
        let state_file = state_file.as_os_str().as_encoded_bytes();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.contains(&b"agent".as_slice()) && args.contains(&state_file)
    }
}

/// Children this process started, kept so that a stopped one is reaped.
fn children() -> &'static Mutex<HashMap<u32, Child>> {
    static CHILDREN: OnceLock<Mutex<HashMap<u32, Child>>> = OnceLock::new();
    CHILDREN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Whether `pid`, if this process started it, is still running (`None`:
/// not one of its children).
fn child_alive(pid: u32) -> Option<bool> {
    let mut children = children()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let child = children.get_mut(&pid)?;
    Some(matches!(child.try_wait(), Ok(None)))
}

fn reap(pid: u32) {
    let mut children = children()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(child) = children.get_mut(&pid)
        && child.try_wait().ok().flatten().is_some()
    {
        children.remove(&pid);
    }
}

/// Starts the slot's agent, detached; returns its pid. The caller clears
/// the slot's folder first when the slot is new, so that a reused slot key
/// never takes over a removed node's identity.
pub fn start(slot: &SlotDir, launch: &AgentLaunch) -> Result<u32, String> {
    if let Some(target) = &launch.docker {
        return docker_launcher::start(slot, launch, target).map(|_| 0);
    }
    std::fs::create_dir_all(&slot.dir)
        .map_err(|e| format!("cannot create {}: {e}", slot.dir.display()))?;
    std::fs::write(slot.address_file(), format!("{}\n", launch.address))
        .map_err(|e| format!("cannot write {}: {e}", slot.address_file().display()))?;
    let log = File::create(slot.log_file())
        .map_err(|e| format!("cannot create {}: {e}", slot.log_file().display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", slot.log_file().display()))?;
    let mut cmd = Command::new(&launch.binary);
    cmd.arg("agent")
        .arg("--control-plane")
        .arg(&launch.control_plane)
        .arg("--region")
        .arg(&launch.region)
        .arg("--ip")
        .arg(launch.address.to_string())
        .arg("--state-file")
        .arg(slot.state_file())
        .arg("--hostname")
        .arg(&launch.slot)
        .args(expand_args(
            &launch.extra_args,
            &launch.slot,
            launch.address,
            &slot.dir,
        ))
        .env_clear()
        .envs(
            PASSED_ENV
                .iter()
                .filter_map(|name| Some((*name, std::env::var_os(name)?))),
        )
        .current_dir(&slot.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        // Its own process group: Terraform's signals to the plugin's group
        // do not reach it, and stopping it stops whatever it started.
        .process_group(0);
    if let Some(token) = &launch.join_token {
        cmd.env("NEUTRAL_JOIN_TOKEN", token.expose());
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", launch.binary.display()))?;
    let pid = child.id();
    children()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(pid, child);
    let staging = slot.dir.join(".agent.pid.tmp");
    std::fs::write(&staging, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&staging, slot.pid_file()))
        .map_err(|e| format!("cannot write {}: {e}", slot.pid_file().display()))?;
    tracing::info!(slot = %launch.slot, pid, address = %launch.address, "agent started");
    Ok(pid)
}

fn signal_group(pid: u32, signal: &str) {
    // `--` then `-<pgid>`: the whole process group the agent leads.
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops the slot's agent and its process group: SIGTERM, then SIGKILL
/// after [`STOP_GRACE`]. Returns whether an agent was running.
pub async fn stop(slot: &SlotDir) -> bool {
    if let Some(container) = docker_launcher::container_of(slot) {
        return docker_launcher::stop(&container).await;
    }
    let Some(pid) = slot.pid().filter(|pid| slot.alive(*pid)) else {
        return false;
    };
    signal_group(pid, "TERM");
    let start = Instant::now();
    while start.elapsed() < STOP_GRACE {
        reap(pid);
        if !slot.alive(pid) {
            tracing::info!(slot = %slot.dir.display(), pid, "agent stopped");
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal_group(pid, "KILL");
    for _ in 0..50 {
        reap(pid);
        if !slot.alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(slot = %slot.dir.display(), pid, "agent killed after the stop grace");
    true
}

/// Removes the slot's folder (identity, pid file, log).
pub fn forget(slot: &SlotDir) {
    if let Err(err) = std::fs::remove_dir_all(&slot.dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %slot.dir.display(), error = %err, "cannot remove the slot folder");
    }
}

/// The slot folders under `state_dir` (for destroy's sweep).
pub fn slot_dirs(state_dir: &Path) -> Vec<(String, SlotDir)> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let dir = SlotDir { dir: e.path() };
            Some((name, dir))
        })
        .collect()
}

/// The `neutral` binary: `configured` when given, else the one next to
/// this provider's binary, else `neutral` on `PATH`.
pub fn find_binary(configured: Option<&str>) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{} is not a file", path.display()))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("neutral")));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return Ok(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("neutral"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no `neutral` binary next to terraform-provider-neutral or on PATH; set \
             `neutral_binary`"
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_that_is_not_the_slots_agent_is_not_running() {
        let dir = std::env::temp_dir().join(format!("neutral-launcher-{}", std::process::id()));
        let slot = SlotDir::new(&dir, "jp-1");
        std::fs::create_dir_all(&slot.dir).expect("dir");
        // This test process is alive but is no agent of this slot.
        std::fs::write(slot.pid_file(), format!("{}\n", std::process::id())).expect("pid");
        assert_eq!(slot.pid(), Some(std::process::id()));
        assert!(!slot.running());
        assert!(slot.started_at().is_some());
        std::fs::write(slot.log_file(), "one\ntwo\n").expect("log");
        assert_eq!(slot.log_tail(), "one\ntwo");
        std::fs::write(
            slot.state_file(),
            r#"{"node_id":"jp-abc123","node_token":"t"}"#,
        )
        .expect("state");
        assert_eq!(slot.node_id().as_deref(), Some("jp-abc123"));
        assert_eq!(
            slot_dirs(&dir)
                .into_iter()
                .map(|(name, _)| name)
                .collect::<Vec<_>>(),
            ["jp-1"]
        );
        forget(&slot);
        assert!(!slot.dir.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_agent_this_process_started_runs_until_stopped_whatever_its_command_line_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("neutral-launcher-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // An "agent" whose command line soon reads `sleep 30`, not
        // `neutral agent … --state-file …`: only the child handle can tell
        // it still runs, as it must for one just after `exec`.
        let binary = dir.join("fake-agent");
        std::fs::write(&binary, "#!/bin/sh\nexec sleep 30\n").expect("script");
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("mode");
        let slot = SlotDir::new(&dir, "jp-1");
        let launch = AgentLaunch {
            binary,
            control_plane: "http://127.0.0.1:9".to_owned(),
            region: "jp".to_owned(),
            slot: "jp-1".to_owned(),
            address: "127.0.0.2".parse().expect("address"),
            join_token: None,
            extra_args: Vec::new(),
            docker: None,
        };
        let pid = start(&slot, &launch).expect("start");
        assert_eq!(slot.pid(), Some(pid));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!slot.is_our_agent(pid), "its command line reads `sleep 30`");
        assert!(slot.running(), "a child still running is running");
        assert!(stop(&slot).await, "stop finds it running");
        assert!(!slot.running(), "stopped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_configured_binary_must_exist() {
        assert!(find_binary(Some("/nonexistent/neutral")).is_err());
        assert!(find_binary(Some("/bin/sh")).is_ok());
    }
}

#[cfg(test)]
mod expand_tests {
    use super::*;

    #[test]
    fn placeholders_become_the_slots_own_values() {
        let args: Vec<String> = [
            "--node-dir",
            "{slot_dir}/node",
            "--containerd-namespace",
            "neutral-{slot}",
            "--workload-host",
            "{address}",
            "--nginx",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let out = expand_args(
            &args,
            "jp-2",
            "127.0.0.51".parse().unwrap(),
            Path::new("/var/lib/pool/jp-2"),
        );
        assert_eq!(
            out,
            [
                "--node-dir",
                "/var/lib/pool/jp-2/node",
                "--containerd-namespace",
                "neutral-jp-2",
                "--workload-host",
                "127.0.0.51",
                "--nginx"
            ]
        );
    }
}
