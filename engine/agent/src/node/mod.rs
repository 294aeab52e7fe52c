//! A full node: the workload in containerd on two colours, the node's nginx in
//! front, and blue/green releases between them.
//!
//! [`Node`] sequences IO; the decisions are pure functions in [`release`]
//! (colours, history, health verdicts), [`nginx`] (configuration) and
//! [`runtime`] (parsing `ctr`). One release runs at a time; a failed one
//! leaves the serving colour and nginx as they were and says why.

pub mod access_log;
pub mod containerd;
pub mod control;
pub mod nginx;
pub mod release;
pub mod runtime;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

use self::nginx::{Nginx, NginxError};
use self::release::{
    Active, Colour, ColourPorts, HealthCheck, NodeState, Outcome, ReleaseRecord, check_health_path,
    check_image_ref, judge_health_status,
};
use self::runtime::{ContainerSpec, PullPolicy, Runtime, RuntimeError};

/// How often a starting workload's health is asked.
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// Timeout of one health-check request.
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How the node runs its workload.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Holds the state file and the containers' logs.
    pub dir: PathBuf,
    pub ports: ColourPorts,
    /// Where the workloads listen (host network); loopback by default.
    pub workload_host: IpAddr,
    pub health_path: String,
    pub health_timeout: Duration,
    /// Consecutive successful health checks that make a colour healthy.
    pub health_rise: u32,
    /// How long a stopping container gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    pub pull: PullPolicy,
}

impl NodeConfig {
    pub fn new(dir: PathBuf) -> Self {
        NodeConfig {
            dir,
            ports: ColourPorts::default(),
            workload_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            health_path: "/healthz".to_owned(),
            health_timeout: Duration::from_secs(30),
            health_rise: 2,
            stop_grace: Duration::from_secs(10),
            pull: PullPolicy::Missing,
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("release.json")
    }

    fn log_path(&self, colour: Colour) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", colour.container()))
    }

    pub fn address(&self, colour: Colour) -> SocketAddr {
        SocketAddr::new(self.workload_host, self.ports.of(colour))
    }
}

/// What to release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub image: String,
    /// An image tarball to import first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The control plane's id of the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// What a successful release did, with its timings from its start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReport {
    pub image: String,
    pub colour: Colour,
    pub previous: Option<Active>,
    pub started_unix_ms: u64,
    pub healthy_ms: u64,
    pub switched_ms: u64,
    /// Whether nginx's old workers finished every request before the old
    /// colour stopped.
    pub drained: bool,
    pub drained_ms: u64,
    /// The release's duration: until the old colour was stopped.
    pub stopped_ms: u64,
}

/// Why a release did not happen; the serving colour is untouched.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("another release is in progress")]
    Busy,
    #[error("{0}")]
    BadRequest(String),
    #[error("{colour} port {port} is in use by another process")]
    PortInUse { colour: Colour, port: u16 },
    #[error("importing the image: {0}")]
    Import(#[source] RuntimeError),
    #[error(transparent)]
    Image(RuntimeError),
    #[error("starting {colour}: {source}")]
    Start {
        colour: Colour,
        #[source]
        source: RuntimeError,
    },
    #[error("{image} on {colour} failed its health check {path} within {}: {summary}", humantime::format_duration(*waited))]
    Unhealthy {
        image: String,
        colour: Colour,
        path: String,
        waited: Duration,
        summary: String,
    },
    #[error("{image} on {colour} exited during its health check; its log ends: {log_tail}")]
    Exited {
        image: String,
        colour: Colour,
        log_tail: String,
    },
    #[error("switching nginx to {colour}: {source}")]
    Switch {
        colour: Colour,
        #[source]
        source: NginxError,
    },
    #[error("keeping the node state in {}: {source}", path.display())]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A node's view for `neutral agent status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub active: Option<Active>,
    pub listen: SocketAddr,
    pub upstream: Option<SocketAddr>,
    pub nginx_running: bool,
    /// Each colour's port and container state.
    pub colours: Vec<ColourView>,
    pub releasing: bool,
    pub history: Vec<ReleaseRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColourView {
    pub colour: Colour,
    pub port: u16,
    pub container: String,
    pub state: String,
}

/// The workload and nginx of one node.
#[derive(Debug)]
pub struct Node<R> {
    runtime: R,
    nginx: Nginx,
    config: NodeConfig,
    state: std::sync::Mutex<NodeState>,
    releasing: Mutex<()>,
    http: reqwest::Client,
}

impl<R: Runtime> Node<R> {
    /// A node with the state kept in `config.dir` (loaded now; a damaged
    /// file is reported and replaced by an empty state).
    pub fn new(runtime: R, nginx: Nginx, config: NodeConfig) -> Result<Self, ReleaseError> {
        let files = |path: &Path| {
            let path = path.to_owned();
            move |source| ReleaseError::State { path, source }
        };
        let logs = config.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(files(&logs))?;
        let state = match std::fs::read_to_string(config.state_path()) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|err| {
                warn!(error = %err, path = %config.state_path().display(), "node state unreadable; starting without an active colour");
                NodeState::default()
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => NodeState::default(),
            Err(err) => return Err(files(&config.state_path())(err)),
        };
        crate::client::install_crypto_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HEALTH_REQUEST_TIMEOUT)
            .build()
            .map_err(|err| ReleaseError::BadRequest(format!("health-check client: {err}")))?;
        Ok(Node {
            runtime,
            nginx,
            config,
            state: std::sync::Mutex::new(state),
            releasing: Mutex::new(()),
            http,
        })
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn nginx(&self) -> &Nginx {
        &self.nginx
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    pub fn active(&self) -> Option<Active> {
        self.lock_state().active.clone()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Brings the node up: nginx listening and pointed at the active colour
    /// (restarting the active colour's container when it is not running, as
    /// after a reboot), or, on a fresh node, at blue, releasing
    /// `initial_image` when given.
    pub async fn boot(&self, initial_image: Option<&str>) -> Result<(), BootError> {
        let active = self.active();
        let colour = active.as_ref().map_or(Colour::Blue, |a| a.colour);
        if let Some(active) = &active {
            let state = self
                .runtime
                .state(active.colour.container())
                .await
                .map_err(BootError::Runtime)?;
            if !state.is_running() {
                info!(colour = %active.colour, image = %active.image, "restarting the active colour");
                self.runtime
                    .start(&self.spec(active.colour, &active.image))
                    .await
                    .map_err(BootError::Runtime)?;
            }
        }
        self.nginx
            .start(self.config.address(colour))
            .await
            .map_err(BootError::Nginx)?;
        info!(listen = %self.nginx.settings().listen, upstream = %self.config.address(colour), "nginx serving");
        if let (None, Some(image)) = (active, initial_image) {
            let request = ReleaseRequest {
                image: image.to_owned(),
                ..ReleaseRequest::default()
            };
            self.release(&request).await.map_err(BootError::Release)?;
        }
        Ok(())
    }

    /// Blue/green release: start the idle colour, wait for its health check,
    /// switch nginx, wait for old requests to drain, stop the old colour.
    pub async fn release(&self, request: &ReleaseRequest) -> Result<ReleaseReport, ReleaseError> {
        let Ok(_guard) = self.releasing.try_lock() else {
            return Err(ReleaseError::Busy);
        };
        let started = Instant::now();
        let started_unix_ms = unix_ms();
        let (previous, colour) = {
            let state = self.lock_state();
            (state.active.clone(), state.target_colour())
        };
        info!(image = %request.image, colour = %colour, previous = ?previous.as_ref().map(|a| &a.image), "release starting");
        let result = self
            .release_steps(request, colour, previous.as_ref(), started)
            .await;
        let duration_ms = millis(started.elapsed());
        let mut state = self.lock_state();
        let record = ReleaseRecord {
            id: request.id.clone(),
            image: request.image.clone(),
            colour,
            started_unix_ms,
            duration_ms,
            outcome: if result.is_ok() {
                Outcome::Released
            } else {
                Outcome::Failed
            },
            reason: match &result {
                Ok(report) if !report.drained => {
                    Some("old nginx workers were cut off by the drain timeout".to_owned())
                }
                Ok(_) => None,
                Err(err) => Some(err.to_string()),
            },
        };
        state.record(record);
        let result = result.map(|mut report| {
            report.started_unix_ms = started_unix_ms;
            report.previous = previous.clone();
            report
        });
        if let Err(err) = self.save(&state) {
            // The release itself stands; only its history entry may be lost.
            warn!(error = %err, "could not keep the release history");
        }
        drop(state);
        match &result {
            Ok(report) => {
                info!(image = %report.image, colour = %report.colour, duration_ms = report.stopped_ms, drained = report.drained, "release done");
            }
            Err(err) => {
                warn!(image = %request.image, error = %err, "release failed; the serving colour is untouched");
            }
        }
        result
    }

    async fn release_steps(
        &self,
        request: &ReleaseRequest,
        colour: Colour,
        previous: Option<&Active>,
        started: Instant,
    ) -> Result<ReleaseReport, ReleaseError> {
        check_image_ref(&request.image).map_err(ReleaseError::BadRequest)?;
        let health_path = request
            .health_path
            .clone()
            .unwrap_or_else(|| self.config.health_path.clone());
        check_health_path(&health_path).map_err(ReleaseError::BadRequest)?;
        let timeout = request
            .timeout_ms
            .map_or(self.config.health_timeout, Duration::from_millis);
        if let Some(archive) = &request.archive {
            let names = self
                .runtime
                .import(archive)
                .await
                .map_err(ReleaseError::Import)?;
            info!(archive = %archive.display(), images = ?names, "imported");
        }
        self.runtime
            .ensure_image(&request.image, self.config.pull)
            .await
            .map_err(ReleaseError::Image)?;
        // A leftover on the idle colour (a failed release, a crash) goes first.
        self.runtime
            .stop(colour.container(), self.config.stop_grace)
            .await
            .map_err(|source| ReleaseError::Start { colour, source })?;
        let port = self.config.ports.of(colour);
        if !port_free(self.config.workload_host, port) {
            return Err(ReleaseError::PortInUse { colour, port });
        }
        self.runtime
            .start(&self.spec(colour, &request.image))
            .await
            .map_err(|source| ReleaseError::Start { colour, source })?;
        if let Err(err) = self
            .wait_healthy(colour, &request.image, &health_path, timeout)
            .await
        {
            self.stop_quietly(colour).await;
            return Err(err);
        }
        let healthy_ms = millis(started.elapsed());
        let switch = match self.nginx.switch(self.config.address(colour)).await {
            Ok(switch) => switch,
            Err(source) => {
                self.stop_quietly(colour).await;
                return Err(ReleaseError::Switch { colour, source });
            }
        };
        let switched_ms = healthy_ms.saturating_add(millis(switch.switched_after));
        let drained_ms = healthy_ms.saturating_add(millis(switch.drained_after));
        {
            let mut state = self.lock_state();
            state.active = Some(Active {
                colour,
                image: request.image.clone(),
                since_unix_ms: unix_ms(),
            });
            // nginx already serves the new colour: a lost write must not
            // turn the release into a failure (the next write catches up).
            if let Err(err) = self.save(&state) {
                warn!(error = %err, "could not record the new active colour");
            }
        }
        if let Some(old) = previous
            && let Err(err) = self
                .runtime
                .stop(old.colour.container(), self.config.stop_grace)
                .await
        {
            warn!(colour = %old.colour, error = %err, "the old colour did not stop cleanly");
        }
        Ok(ReleaseReport {
            image: request.image.clone(),
            colour,
            previous: None,
            started_unix_ms: 0,
            healthy_ms,
            switched_ms,
            drained: switch.drained,
            drained_ms,
            stopped_ms: millis(started.elapsed()),
        })
    }

    async fn wait_healthy(
        &self,
        colour: Colour,
        image: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<(), ReleaseError> {
        let url = format!("http://{}{path}", self.config.address(colour));
        let deadline = Instant::now() + timeout;
        let mut check = HealthCheck::new(self.config.health_rise);
        let mut attempts = 0u32;
        loop {
            let result = match self.http.get(&url).send().await {
                Ok(response) => judge_health_status(response.status().as_u16()),
                Err(err) => Err(describe_request_error(&err)),
            };
            if check.observe(result) {
                return Ok(());
            }
            attempts = attempts.saturating_add(1);
            if attempts.is_multiple_of(5) {
                let state = self.runtime.state(colour.container()).await;
                if matches!(&state, Ok(s) if !s.is_running()) {
                    return Err(ReleaseError::Exited {
                        image: image.to_owned(),
                        colour,
                        log_tail: log_tail(&self.config.log_path(colour)),
                    });
                }
            }
            if Instant::now() + HEALTH_POLL > deadline {
                return Err(ReleaseError::Unhealthy {
                    image: image.to_owned(),
                    colour,
                    path: path.to_owned(),
                    waited: timeout,
                    summary: check.failure_summary(),
                });
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    async fn stop_quietly(&self, colour: Colour) {
        if let Err(err) = self
            .runtime
            .stop(colour.container(), self.config.stop_grace)
            .await
        {
            warn!(colour = %colour, error = %err, "could not stop the failed colour");
        }
    }

    fn spec(&self, colour: Colour, image: &str) -> ContainerSpec {
        ContainerSpec {
            name: colour.container().to_owned(),
            image: image.to_owned(),
            env: vec![
                ("PORT".to_owned(), self.config.ports.of(colour).to_string()),
                ("BIND".to_owned(), self.config.workload_host.to_string()),
                ("NEUTRAL_COLOUR".to_owned(), colour.as_str().to_owned()),
            ],
            log_file: Some(self.config.log_path(colour)),
        }
    }

    fn save(&self, state: &NodeState) -> Result<(), ReleaseError> {
        let path = self.config.state_path();
        let text = serde_json::to_string_pretty(state).unwrap_or_default();
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|source| ReleaseError::State { path, source })
    }

    /// What `neutral agent status` shows.
    pub async fn view(&self) -> NodeView {
        let (active, history) = {
            let state = self.lock_state();
            (
                state.active.clone(),
                state.history.iter().cloned().collect(),
            )
        };
        let mut colours = Vec::new();
        for colour in [Colour::Blue, Colour::Green] {
            let state = match self.runtime.state(colour.container()).await {
                Ok(state) => format!("{state:?}").to_lowercase(),
                Err(err) => format!("unknown: {err}"),
            };
            colours.push(ColourView {
                colour,
                port: self.config.ports.of(colour),
                container: colour.container().to_owned(),
                state,
            });
        }
        NodeView {
            active,
            listen: self.nginx.settings().listen,
            upstream: self.nginx.written_upstream(),
            nginx_running: self.nginx.master_pid().is_some(),
            colours,
            releasing: self.releasing.try_lock().is_err(),
            history,
        }
    }

    /// Stops taking work: nginx quits gracefully (finishing its requests),
    /// then both colours stop.
    pub async fn shutdown(&self, timeout: Duration) {
        let _guard = self.releasing.lock().await;
        self.nginx.quit(timeout).await;
        for colour in [Colour::Blue, Colour::Green] {
            self.stop_quietly(colour).await;
        }
        info!("node stopped: nginx and workloads");
    }
}

/// Why a node could not come up.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("container runtime: {0}")]
    Runtime(#[source] RuntimeError),
    #[error("nginx: {0}")]
    Nginx(#[source] NginxError),
    #[error("initial release: {0}")]
    Release(#[source] ReleaseError),
}

/// Whether nothing listens on `host:port` (a bind succeeds).
pub fn port_free(host: IpAddr, port: u16) -> bool {
    std::net::TcpListener::bind((host, port)).is_ok()
}

fn describe_request_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection refused".to_owned()
    } else {
        err.to_string()
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    if tail.is_empty() {
        "(empty)".to_owned()
    } else {
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, millis)
}
