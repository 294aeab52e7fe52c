//! The `docker` launcher's hosts: one container per slot, on the region's
//! Docker network with the slot's address, running `neutral agent` from a
//! read-only mount of the folder holding the `neutral` binary. Driven
//! through the `docker` CLI (no Docker API crate: the CLI is what users
//! have, and it carries their Docker context and credentials).
//!
//! The slot's folder on this machine (see [`crate::launcher::SlotDir`]) is
//! mounted into the container at the same path, so the agent's identity
//! (`agent.json`), its log (`agent.log`) and any `{slot_dir}` file in
//! `agent_args` are where the local launcher keeps them; the file
//! `container` names the slot's container instead of a pid file.
//!
//! This module owns containers. It decides nothing about which slots exist
//! ([`crate::pool`] does), and it never touches containers it did not name.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use crate::slot::DockerTarget;
use crate::slot::{AgentLaunch, SlotDir, expand_args};

/// Where the binaries' folder appears inside every container.
pub const BIN_DIR: &str = "/opt/neutral/bin";
/// How long `docker stop` waits for the agent before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// The label every container of this launcher carries (its slot).
const SLOT_LABEL: &str = "org.neutral.slot";

/// The container a slot's file names.
pub fn container_of(slot: &SlotDir) -> Option<String> {
    let name = std::fs::read_to_string(slot.dir.join("container")).ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The container name of `slot` on `network`: both are DNS-label-like, so
/// the name is unique per network and slot and valid for Docker.
pub fn container_name(network: &str, slot: &str) -> String {
    format!("{network}-{slot}")
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker: {e} (is Docker installed?)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The `docker run` arguments of a slot's container.
pub fn run_args(
    slot: &SlotDir,
    launch: &AgentLaunch,
    target: &DockerTarget,
    name: &str,
) -> Vec<String> {
    let dir = slot.dir.display().to_string();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--init".into(),
        "--pull".into(),
        "never".into(),
        "--name".into(),
        name.into(),
        "--hostname".into(),
        launch.slot.clone(),
        "--label".into(),
        format!("{SLOT_LABEL}={}", launch.slot),
        "--network".into(),
        target.network.clone(),
        "--ip".into(),
        launch.address.to_string(),
        "--volume".into(),
        format!("{}:{BIN_DIR}:ro", target.binaries.display()),
        "--volume".into(),
        format!("{dir}:{dir}"),
        // The join token travels in the environment of the docker CLI,
        // never in its arguments.
        "--env".into(),
        "NEUTRAL_JOIN_TOKEN".into(),
        "--env".into(),
        "NEUTRAL_LOG".into(),
    ];
    args.extend(expand_args(
        &target.run_args,
        &launch.slot,
        launch.address,
        &slot.dir,
    ));
    args.push(target.image.clone());
    // The agent's output goes to the slot's log, as with the local launcher.
    args.extend([
        "sh".into(),
        "-c".into(),
        format!("exec \"$0\" \"$@\" >>'{}' 2>&1", slot.log_file().display()),
        format!("{BIN_DIR}/neutral"),
        "agent".into(),
        "--control-plane".into(),
        launch.control_plane.clone(),
        "--region".into(),
        launch.region.clone(),
        "--ip".into(),
        launch.address.to_string(),
        "--state-file".into(),
        slot.state_file().display().to_string(),
        "--hostname".into(),
        launch.slot.clone(),
    ]);
    args.extend(expand_args(
        &launch.extra_args,
        &launch.slot,
        launch.address,
        &slot.dir,
    ));
    args
}

/// Starts the slot's container; returns its name. A leftover container of
/// the same name (a slot key that came back) is removed first.
pub fn start(
    slot: &SlotDir,
    launch: &AgentLaunch,
    target: &DockerTarget,
) -> Result<String, String> {
    std::fs::create_dir_all(&slot.dir)
        .map_err(|e| format!("cannot create {}: {e}", slot.dir.display()))?;
    std::fs::write(slot.address_file(), format!("{}\n", launch.address))
        .map_err(|e| format!("cannot write {}: {e}", slot.address_file().display()))?;
    std::fs::write(slot.log_file(), b"")
        .map_err(|e| format!("cannot create {}: {e}", slot.log_file().display()))?;
    let name = container_name(&target.network, &launch.slot);
    let _ = docker(&["rm", "--force", &name]);
    let args = run_args(slot, launch, target, &name);
    let mut cmd = Command::new("docker");
    cmd.args(&args).stdin(Stdio::null());
    if let Some(token) = &launch.join_token {
        cmd.env("NEUTRAL_JOIN_TOKEN", token.expose());
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run docker: {e} (is Docker installed?)"))?;
    if !out.status.success() {
        return Err(format!(
            "docker run of slot {} (image {}, network {}): {}",
            launch.slot,
            target.image,
            target.network,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let staging = slot.dir.join(".container.tmp");
    std::fs::write(&staging, format!("{name}\n"))
        .and_then(|()| std::fs::rename(&staging, slot.dir.join("container")))
        .map_err(|e| format!("cannot record the container of {}: {e}", launch.slot))?;
    tracing::info!(slot = %launch.slot, container = %name, address = %launch.address, "container started");
    Ok(name)
}

/// Whether the container exists and runs (a paused one counts: it is a
/// host that froze, which the control plane's probes judge).
pub fn running(container: &str) -> bool {
    docker(&["inspect", "--format", "{{.State.Running}}", container])
        .is_ok_and(|state| state == "true")
}

/// Stops the container (SIGTERM to the agent, which drains the node and
/// exits; SIGKILL after [`STOP_GRACE`]) and removes it. Returns whether it
/// was running.
pub async fn stop(container: &str) -> bool {
    let was_running = running(container);
    let name = container.to_owned();
    let grace = STOP_GRACE.as_secs().to_string();
    let _ = tokio::task::spawn_blocking(move || {
        // A paused container cannot take the signal until it runs again.
        let _ = docker(&["unpause", &name]);
        let _ = docker(&["stop", "--time", &grace, &name]);
        let _ = docker(&["rm", "--force", "--volumes", &name]);
    })
    .await;
    tracing::info!(container, "container removed");
    was_running
}

/// The folder of the `neutral` binary the containers mount: `configured`,
/// else the folder of the binary the local launcher would run.
pub fn binaries_dir(configured: Option<&str>, binary: &Path) -> PathBuf {
    configured.map_or_else(
        || binary.parent().map(Path::to_path_buf).unwrap_or_default(),
        PathBuf::from,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_runs_the_agent_on_the_slots_address_with_its_files_mounted() {
        let slot = SlotDir::new(Path::new("/var/lib/pool"), "jp-2");
        let launch = AgentLaunch {
            binary: PathBuf::from("/opt/build/neutral"),
            control_plane: "http://198.18.4.10:7400".into(),
            region: "jp".into(),
            slot: "jp-2".into(),
            address: "198.18.5.12".parse().expect("address"),
            join_token: Some(crate::secret::Secret::new("secret-token")),
            extra_args: vec!["--metrics-file".into(), "{slot_dir}/m.prom".into()],
            docker: None,
        };
        let target = DockerTarget {
            image: "neutral-testbed:abc".into(),
            network: "ntb-1-jp".into(),
            binaries: PathBuf::from("/opt/build"),
            run_args: vec!["--env".into(), "NEUTRAL_HOST_HTTPD={address}:80".into()],
        };
        let name = container_name(&target.network, &launch.slot);
        assert_eq!(name, "ntb-1-jp-jp-2");
        let args = run_args(&slot, &launch, &target, &name).join(" ");
        for part in [
            "--network ntb-1-jp --ip 198.18.5.12",
            "--volume /opt/build:/opt/neutral/bin:ro",
            "--volume /var/lib/pool/jp-2:/var/lib/pool/jp-2",
            "--env NEUTRAL_HOST_HTTPD=198.18.5.12:80 neutral-testbed:abc",
            "/opt/neutral/bin/neutral agent --control-plane http://198.18.4.10:7400 --region jp",
            "--state-file /var/lib/pool/jp-2/agent.json --hostname jp-2",
            "--metrics-file /var/lib/pool/jp-2/m.prom",
        ] {
            assert!(args.contains(part), "`{part}` missing from: {args}");
        }
        assert!(!args.contains("secret-token"), "the token leaked: {args}");
    }
}
