//! A node-pool slot's vocabulary, shared by both launchers: the slot's
//! folder and the files in it, what starting an agent needs, and where a
//! `docker` slot's container goes. A leaf: it reads files, starts nothing,
//! and names neither launcher.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use neutral_core::model::Timestamp;

use crate::secret::Secret;

/// One slot's folder.
#[derive(Clone, Debug)]
pub struct SlotDir {
    pub dir: PathBuf,
}

impl SlotDir {
    pub fn new(state_dir: &Path, slot: &str) -> SlotDir {
        SlotDir {
            dir: state_dir.join(slot),
        }
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("agent.pid")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("agent.json")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    pub fn address_file(&self) -> PathBuf {
        self.dir.join("address")
    }

    /// The address the slot's agent was started with.
    pub fn address(&self) -> Option<IpAddr> {
        std::fs::read_to_string(self.address_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The pid recorded for the slot, if any.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// When the recorded agent was started (the pid file's time, or the
    /// container file's for the `docker` launcher).
    pub fn started_at(&self) -> Option<Timestamp> {
        let modified = std::fs::metadata(self.pid_file())
            .or_else(|_| std::fs::metadata(self.dir.join("container")))
            .ok()?
            .modified()
            .ok()?;
        let since = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
        i64::try_from(since.as_millis()).ok().map(Timestamp)
    }

    /// The node id the agent registered as, from its state file.
    pub fn node_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.state_file()).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
        doc.get("node_id")?.as_str().map(str::to_owned)
    }

    /// The last lines of the agent's log, for error messages.
    pub fn log_tail(&self) -> String {
        const MAX_BYTES: u64 = 4096;
        const MAX_LINES: usize = 15;
        let Ok(mut file) = File::open(self.log_file()) else {
            return "(no log)".to_owned();
        };
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(length.saturating_sub(MAX_BYTES)));
        let mut bytes = Vec::new();
        let _ = file.take(MAX_BYTES).read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines
            .get(lines.len().saturating_sub(MAX_LINES)..)
            .unwrap_or_default()
            .join("\n");
        if tail.trim().is_empty() {
            "(empty log)".to_owned()
        } else {
            tail
        }
    }
}

/// Everything needed to start one slot's agent.
#[derive(Clone, Debug)]
pub struct AgentLaunch {
    pub binary: PathBuf,
    pub control_plane: String,
    pub region: String,
    pub slot: String,
    pub address: IpAddr,
    pub join_token: Option<Secret>,
    pub extra_args: Vec<String>,
    /// `Some` for the `docker` launcher: the agent runs in a container.
    pub docker: Option<DockerTarget>,
}

/// Where a slot's containers go and what they run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerTarget {
    /// The image (it must hold what the agent needs; no registry is asked
    /// for it: `--pull never`).
    pub image: String,
    /// The region's Docker network; the slot's address must be in its
    /// subnet.
    pub network: String,
    /// The folder holding the `neutral` binary, mounted read-only.
    pub binaries: PathBuf,
    /// Extra `docker run` flags (placeholders `{slot}`, `{address}`,
    /// `{slot_dir}` filled in), e.g. capabilities or environment.
    pub run_args: Vec<String>,
}

/// `agent_args` with the per-slot placeholders filled in: `{slot}` (the
/// slot key), `{address}` (the slot's IP) and `{slot_dir}` (its folder), so
/// one list can give every node its own node folder, containerd namespace
/// and workload address.
pub fn expand_args(args: &[String], slot: &str, address: IpAddr, dir: &Path) -> Vec<String> {
    args.iter()
        .map(|arg| {
            arg.replace("{slot}", slot)
                .replace("{address}", &address.to_string())
                .replace("{slot_dir}", &dir.display().to_string())
        })
        .collect()
}
