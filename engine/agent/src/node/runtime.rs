//! The container runtime behind one trait, [`Runtime`], and its containerd
//! implementation, [`Ctr`], which drives containerd through its own CLI,
//! `ctr` (shipped with Debian's containerd package).
//!
//! Every container runs with host networking; which port it serves is the
//! caller's business (it passes `PORT` in the environment). Parsing `ctr`'s
//! output and classifying its failures are pure functions; the rest runs
//! `ctr` with a deadline. This module must not decide anything about
//! releases: it starts, inspects and stops one container at a time.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

/// What a container runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container (and task) id, e.g. `svc-blue`.
    pub name: String,
    /// The image reference as stored in containerd.
    pub image: String,
    /// Environment added to the image's own.
    pub env: Vec<(String, String)>,
    /// Where the container's stdout and stderr go.
    pub log_file: Option<PathBuf>,
}

/// The state of one container's task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Neither a container nor a task of that name exists.
    Absent,
    /// A container exists without a task (never started, or its task deleted).
    Created,
    Running {
        pid: u32,
    },
    /// The task exited (or was killed) and awaits deletion.
    Stopped,
    /// A status `ctr` reports that the agent does not act on (paused, …).
    Other(String),
}

impl TaskState {
    pub fn is_running(&self) -> bool {
        matches!(self, TaskState::Running { .. })
    }
}

/// When a missing image may be pulled from a registry.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull images that are not in the store (the default).
    #[default]
    Missing,
    /// Never pull: images come from `import` only.
    Never,
}

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` took longer than {}", humantime::format_duration(*timeout))]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` failed: {message}")]
    Failed { command: String, message: String },
    #[error("image `{image}` is not in containerd's store{}", pull_note(.pull))]
    ImageNotFound { image: String, pull: Option<String> },
    #[error("container `{name}` is still running; stop it first")]
    StillRunning { name: String },
    #[error("container `{name}` did not stop within {}", humantime::format_duration(*waited))]
    WouldNotStop { name: String, waited: Duration },
    #[error("importing {}: {message}", archive.display())]
    Import { archive: PathBuf, message: String },
}

fn pull_note(pull: &Option<String>) -> String {
    match pull {
        None => " (pulling is disabled: import it first)".to_owned(),
        Some(why) => format!(" and pulling it failed: {why}"),
    }
}

/// A container runtime, as the node needs it.
pub trait Runtime: Send + Sync {
    /// Imports an OCI image layout (or Docker) tarball; returns the image
    /// references it held.
    fn import(
        &self,
        archive: &Path,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
    /// Makes sure `image` is in the store, pulling it as `policy` allows.
    fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Creates and starts a container with host networking. A stopped
    /// leftover of the same name is removed first; a running one is an error.
    fn start(&self, spec: &ContainerSpec) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn state(&self, name: &str) -> impl Future<Output = Result<TaskState, RuntimeError>> + Send;
    /// Stops a container (SIGTERM, SIGKILL after `grace`) and removes it and
    /// its snapshot. Stopping an absent container succeeds.
    fn stop(
        &self,
        name: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// containerd through `ctr`, in one namespace, with one snapshotter.
#[derive(Clone, Debug)]
pub struct Ctr {
    pub binary: PathBuf,
    /// containerd's gRPC socket.
    pub address: PathBuf,
    pub namespace: String,
    pub snapshotter: String,
    /// Deadline of one `ctr` call (pulls and imports get ten times as long).
    pub timeout: Duration,
}

/// How often a stopping container is looked at.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a SIGKILLed task may take to be reported stopped.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Ctr {
    pub fn new(address: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        Ctr {
            binary: PathBuf::from("ctr"),
            address: address.into(),
            namespace: namespace.into(),
            snapshotter: "native".to_owned(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Runs `ctr -a <address> -n <namespace> <args>`; `Ok` holds stdout of a
    /// successful run, `Err` a failure with `ctr`'s own message.
    async fn run(&self, args: &[OsString], timeout: Duration) -> Result<String, RuntimeError> {
        let mut command = Command::new(&self.binary);
        command
            .arg("-a")
            .arg(&self.address)
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = describe_command(args);
        let child = command.spawn().map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let output = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| RuntimeError::Timeout {
                command: shown.clone(),
                timeout,
            })?
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(RuntimeError::Failed {
                command: shown,
                message: ctr_message(&String::from_utf8_lossy(&output.stderr))
                    .unwrap_or_else(|| format!("exit status {}", output.status)),
            })
        }
    }

    async fn ctr(&self, args: &[&str]) -> Result<String, RuntimeError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        self.run(&args, self.timeout).await
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        let listed = self.ctr(&["images", "ls", "-q"]).await?;
        Ok(listed.lines().any(|line| line.trim() == image))
    }

    /// Deletes the task (if any) and the container (if any); "not found" is
    /// success.
    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        for args in [
            ["tasks", "delete", name].as_slice(),
            ["containers", "delete", name].as_slice(),
        ] {
            match self.ctr(args).await {
                Ok(_) => {}
                Err(RuntimeError::Failed { message, .. }) if is_not_found(&message) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    async fn wait_stopped(&self, name: &str, within: Duration) -> Result<bool, RuntimeError> {
        let deadline = Instant::now() + within;
        loop {
            if !self.state(name).await?.is_running() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    async fn kill(&self, name: &str, signal: &str) -> Result<(), RuntimeError> {
        match self.ctr(&["tasks", "kill", "--signal", signal, name]).await {
            Ok(_) => Ok(()),
            // The task went away between the look and the kill.
            Err(RuntimeError::Failed { message, .. })
                if is_not_found(&message) || message.contains("process already finished") =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

impl Runtime for Ctr {
    async fn import(&self, archive: &Path) -> Result<Vec<String>, RuntimeError> {
        let args = [
            OsString::from("images"),
            OsString::from("import"),
            OsString::from("--snapshotter"),
            OsString::from(&self.snapshotter),
            archive.as_os_str().to_owned(),
        ];
        let out = self
            .run(&args, self.timeout.saturating_mul(10))
            .await
            .map_err(|err| RuntimeError::Import {
                archive: archive.to_owned(),
                message: match err {
                    RuntimeError::Failed { message, .. } => message,
                    other => other.to_string(),
                },
            })?;
        let names = parse_import_output(&out);
        if names.is_empty() {
            return Err(RuntimeError::Import {
                archive: archive.to_owned(),
                message: "the archive named no image (no io.containerd.image.name or \
                          org.opencontainers.image.ref.name annotation)"
                    .to_owned(),
            });
        }
        Ok(names)
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), RuntimeError> {
        if self.image_present(image).await? {
            return Ok(());
        }
        if policy == PullPolicy::Never {
            return Err(RuntimeError::ImageNotFound {
                image: image.to_owned(),
                pull: None,
            });
        }
        let args: Vec<OsString> = ["images", "pull", "--snapshotter", &self.snapshotter, image]
            .iter()
            .map(OsString::from)
            .collect();
        match self.run(&args, self.timeout.saturating_mul(10)).await {
            Ok(_) => Ok(()),
            Err(err) => Err(RuntimeError::ImageNotFound {
                image: image.to_owned(),
                pull: Some(match err {
                    RuntimeError::Failed { message, .. } => message,
                    other => other.to_string(),
                }),
            }),
        }
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        match self.state(&spec.name).await? {
            TaskState::Absent => {}
            TaskState::Running { .. } => {
                return Err(RuntimeError::StillRunning {
                    name: spec.name.clone(),
                });
            }
            TaskState::Created | TaskState::Stopped | TaskState::Other(_) => {
                self.remove(&spec.name).await?;
            }
        }
        let args = run_args(spec, &self.snapshotter);
        self.run(&args, self.timeout).await?;
        Ok(())
    }

    async fn state(&self, name: &str) -> Result<TaskState, RuntimeError> {
        let tasks = self.ctr(&["tasks", "ls"]).await?;
        if let Some(state) = parse_task_list(&tasks, name) {
            return Ok(state);
        }
        let containers = self.ctr(&["containers", "ls", "-q"]).await?;
        Ok(if containers.lines().any(|line| line.trim() == name) {
            TaskState::Created
        } else {
            TaskState::Absent
        })
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        if self.state(name).await?.is_running() {
            self.kill(name, "SIGTERM").await?;
            if !self.wait_stopped(name, grace).await? {
                tracing::warn!(
                    container = name,
                    grace_ms = grace.as_millis(),
                    "container ignored SIGTERM; killing it"
                );
                self.kill(name, "SIGKILL").await?;
                if !self.wait_stopped(name, KILL_WAIT).await? {
                    return Err(RuntimeError::WouldNotStop {
                        name: name.to_owned(),
                        waited: grace.saturating_add(KILL_WAIT),
                    });
                }
            }
        }
        self.remove(name).await
    }
}

/// The arguments of `ctr run` for `spec`: detached, host network.
pub fn run_args(spec: &ContainerSpec, snapshotter: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "run",
        "--detach",
        "--net-host",
        "--snapshotter",
        snapshotter,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    for (key, value) in &spec.env {
        args.push("--env".into());
        args.push(format!("{key}={value}").into());
    }
    if let Some(log) = &spec.log_file {
        args.push("--log-uri".into());
        let mut uri = OsString::from("file://");
        uri.push(log.as_os_str());
        args.push(uri);
    }
    args.push(spec.image.clone().into());
    args.push(spec.name.clone().into());
    args
}

/// The state of task `name` in `ctr tasks ls` output (`TASK PID STATUS`
/// lines after a header); `None` when it is not listed.
pub fn parse_task_list(output: &str, name: &str) -> Option<TaskState> {
    output.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()? != name {
            return None;
        }
        let pid = fields.next().and_then(|p| p.parse::<u32>().ok());
        let status = fields.next().unwrap_or_default();
        Some(match (status, pid) {
            ("RUNNING", Some(pid)) => TaskState::Running { pid },
            ("STOPPED", _) => TaskState::Stopped,
            ("CREATED", _) => TaskState::Created,
            (other, _) => TaskState::Other(other.to_owned()),
        })
    })
}

/// Image names from `ctr images import` output (`unpacking NAME (sha256:…)…done`).
pub fn parse_import_output(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("unpacking ")?;
            let name = rest.split_whitespace().next()?;
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// The message of a failed `ctr` run: its `ctr: …` line, else the last
/// `msg="…"`/`error="…"` of its log lines, else the last non-empty line.
pub fn ctr_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(line) = lines.iter().rev().find_map(|l| l.strip_prefix("ctr: ")) {
        return Some(line.to_owned());
    }
    lines.last().map(|l| (*l).to_owned())
}

fn is_not_found(message: &str) -> bool {
    message.contains("not found") || message.contains("no running task")
}

fn describe_command(args: &[OsString]) -> String {
    let mut text = String::from("ctr");
    for arg in args {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASKS: &str = "\
TASK         PID      STATUS    
svc-blue     22086    RUNNING
svc-green    22775    STOPPED
svc-odd      0        PAUSED
";

    #[test]
    fn task_list_lines_give_each_tasks_state() {
        assert_eq!(
            parse_task_list(TASKS, "svc-blue"),
            Some(TaskState::Running { pid: 22086 })
        );
        assert_eq!(
            parse_task_list(TASKS, "svc-green"),
            Some(TaskState::Stopped)
        );
        assert_eq!(
            parse_task_list(TASKS, "svc-odd"),
            Some(TaskState::Other("PAUSED".into()))
        );
        assert_eq!(parse_task_list(TASKS, "svc"), None);
        assert_eq!(parse_task_list("TASK PID STATUS\n", "svc-blue"), None);
        // The header is never a task, even one named TASK.
        assert_eq!(parse_task_list(TASKS, "TASK"), None);
    }

    #[test]
    fn import_output_names_every_unpacked_image() {
        let out = "unpacking neutral.test/web:v1 (sha256:ebb9bf1d)...done\n\
                   unpacking docker.io/library/x:2 (sha256:aa)...done\n";
        assert_eq!(
            parse_import_output(out),
            ["neutral.test/web:v1", "docker.io/library/x:2"]
        );
        assert!(parse_import_output("").is_empty());
    }

    #[test]
    fn ctr_failures_are_reduced_to_their_message() {
        let stderr = "time=\"2026\" level=error msg=\"failed to load task\" error=\"x\"\n\
                      ctr: container \"nosuch\" in namespace \"neutral\": not found\n";
        assert_eq!(
            ctr_message(stderr).as_deref(),
            Some("container \"nosuch\" in namespace \"neutral\": not found")
        );
        assert_eq!(ctr_message("  \n").as_deref(), None);
        assert_eq!(ctr_message("plain\n").as_deref(), Some("plain"));
    }

    #[test]
    fn run_arguments_use_host_networking_and_the_spec() {
        let spec = ContainerSpec {
            name: "svc-green".into(),
            image: "neutral.test/web:v2".into(),
            env: vec![("PORT".into(), "28080".into())],
            log_file: Some("/var/log/svc-green.log".into()),
        };
        let args: Vec<String> = run_args(&spec, "native")
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "run",
                "--detach",
                "--net-host",
                "--snapshotter",
                "native",
                "--env",
                "PORT=28080",
                "--log-uri",
                "file:///var/log/svc-green.log",
                "neutral.test/web:v2",
                "svc-green"
            ]
        );
    }

    #[test]
    fn a_missing_image_says_how_to_get_it() {
        let never = RuntimeError::ImageNotFound {
            image: "neutral.test/web:nope".into(),
            pull: None,
        };
        assert_eq!(
            never.to_string(),
            "image `neutral.test/web:nope` is not in containerd's store (pulling is disabled: import it first)"
        );
    }
}
