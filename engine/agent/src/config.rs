//! `neutral agent`'s command-line arguments and their resolution into an
//! [`AgentConfig`]: the join token from a file or the environment, the node's
//! address from the route to the control plane, the default probe URL.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use neutral_core::model::NodeMode;
use reqwest::Url;

use crate::node::NodeConfig;
use crate::node::nginx::NginxSettings;
use crate::node::release::{ColourPorts, check_health_path, check_image_ref};
use crate::node::runtime::PullPolicy;
use neutral_core::backoff::{self, Backoff};

/// The environment variable holding the join token when no file is given.
pub const JOIN_TOKEN_ENV: &str = "NEUTRAL_JOIN_TOKEN";
/// Join token files larger than this are refused.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;
/// How long finding the route to the control plane may take.
const ROUTE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `neutral agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// Control plane base URL, http:// or https://.
    #[arg(long, value_name = "URL", value_parser = parse_control_plane)]
    pub control_plane: Url,
    /// Another replica of the control plane (repeatable): when the one in
    /// use stops answering, the next call goes to the next.
    #[arg(long = "control-plane-replica", value_name = "URL", value_parser = parse_control_plane)]
    pub control_plane_replicas: Vec<Url>,
    /// Region this node serves (must be declared in platform-config).
    #[arg(long, value_parser = parse_region)]
    pub region: String,
    /// The node's service address [default: the source address of the route
    /// to the control plane, else 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub ip: Option<IpAddr>,
    /// Prometheus text file with neutral_node_cpu_ratio, neutral_node_rtt_seconds
    /// and neutral_node_error_ratio, re-read at every heartbeat; overrides the
    /// measured values it provides.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// File holding the join token [default: the NEUTRAL_JOIN_TOKEN variable].
    #[arg(long, value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the control plane's certificate; the
    /// only trust root when given [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Local service probed for RTT and error rate [default:
    /// http://<ip>:80/healthz].
    #[arg(long, value_name = "URL", value_parser = parse_probe_url)]
    pub probe_url: Option<Url>,
    /// Where the node id and token are kept across restarts (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// How the node runs workloads: containerd-only or k3s-worker.
    #[arg(long, value_name = "MODE", default_value = "containerd-only", value_parser = parse_mode)]
    pub mode: NodeMode,
    /// Host name reported to the control plane [default: the kernel's].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Shortest delay before retrying an unreachable or failing control plane.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub backoff_min: Duration,
    /// Longest delay before retrying an unreachable or failing control plane.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,
    /// Probe requests per heartbeat.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub probe_count: u32,
    /// Timeout of one probe request (shortened to fit half the heartbeat interval).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// Once the control plane answers `drain`, keep serving for the DNS TTL
    /// plus this long, then stop nginx and the workload and exit 0 [default:
    /// never exit on drain].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub drain_grace: Option<Duration>,
    /// node_exporter's metrics URL: CPU comes from its
    /// node_cpu_seconds_total counters instead of /proc/stat.
    #[arg(long, value_name = "URL", value_parser = parse_probe_url)]
    pub node_exporter: Option<Url>,
    /// The TTL of the node's DNS answers, for --drain-grace.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub dns_ttl: Duration,
    /// How the agent writes its log on stderr: `text` for people, `json`
    /// (one object per line) for log shippers.
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Heartbeat over plain HTTP requests only, without the agent stream
    /// (gRPC over HTTP/2; docs/api.md). With the stream, the control plane
    /// pushes orders at once and notices a crashed node within one probe.
    #[arg(long)]
    pub no_stream: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// The agent's log format (`--log-format`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The container runtime that runs the node's workload.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// No workload: the agent only registers and heartbeats.
    #[default]
    None,
    /// containerd (through `ctr`), with blue/green colours behind nginx.
    Containerd,
}

/// How a full node runs its workload (`--runtime containerd --nginx`).
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Node runtime")]
pub struct NodeArgs {
    /// Run the node's workload: `containerd` makes a full node (needs --nginx).
    #[arg(long, value_enum, default_value_t)]
    pub runtime: RuntimeKind,
    /// Run the node's own nginx in front of the workload.
    #[arg(long)]
    pub nginx: bool,
    /// The node's folder: release state, nginx prefix, logs, control socket.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_NODE_DIR)]
    pub node_dir: PathBuf,
    /// Where nginx listens [default: <ip>:80].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// containerd's socket [default: /run/containerd/containerd.sock].
    #[arg(long, value_name = "PATH", conflicts_with = "containerd_private")]
    pub containerd_address: Option<PathBuf>,
    /// Start a private containerd under <node-dir>/containerd.
    #[arg(long)]
    pub containerd_private: bool,
    /// containerd namespace of the node's containers.
    #[arg(long, value_name = "NAME", default_value = "neutral")]
    pub containerd_namespace: String,
    /// Port of the blue colour (on 127.0.0.1).
    /// Address the workload containers bind (`$BIND`); default 127.0.0.1.
    /// Give each node on a shared machine its own (e.g. its `--ip`) so the
    /// colour ports do not collide.
    #[arg(long, value_name = "IP")]
    pub workload_host: Option<std::net::IpAddr>,
    #[arg(long, value_name = "PORT", default_value_t = 18080)]
    pub blue_port: u16,

    /// Port of the green colour (on 127.0.0.1).
    #[arg(long, value_name = "PORT", default_value_t = 28080)]
    pub green_port: u16,
    /// Image released at start when the node has no active colour yet.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Image tarball (OCI layout or Docker) imported at start; repeatable.
    #[arg(long, value_name = "FILE")]
    pub import: Vec<PathBuf>,
    /// Health-check path of the workload.
    #[arg(long, value_name = "PATH", default_value = "/healthz")]
    pub health_path: String,
    /// How long a new colour may take to become healthy.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub health_timeout: Duration,
    /// How long old nginx workers may take to finish requests after a switch.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a colour stops.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub stop_grace: Duration,
    /// Pull images missing from containerd's store: `missing` or `never`.
    #[arg(long, value_name = "POLICY", default_value = "missing", value_parser = parse_pull)]
    pub pull: PullPolicy,
    /// nginx snippet included in the node's `server` block.
    #[arg(long, value_name = "FILE")]
    pub nginx_include: Option<PathBuf>,
    #[arg(long, value_name = "PATH", default_value = "nginx")]
    pub nginx_bin: PathBuf,
    #[arg(long, value_name = "PATH", default_value = "ctr")]
    pub ctr_bin: PathBuf,
    #[arg(long, value_name = "PATH", default_value = "containerd")]
    pub containerd_bin: PathBuf,
}

/// The default node folder.
pub const DEFAULT_NODE_DIR: &str = "/var/lib/neutral/node";
/// The system containerd's socket.
pub const SYSTEM_CONTAINERD: &str = "/run/containerd/containerd.sock";

impl Default for NodeArgs {
    fn default() -> Self {
        NodeArgs {
            runtime: RuntimeKind::None,
            nginx: false,
            node_dir: PathBuf::from(DEFAULT_NODE_DIR),
            listen: None,
            containerd_address: None,
            containerd_private: false,
            containerd_namespace: "neutral".to_owned(),
            workload_host: None,
            blue_port: 18080,

            green_port: 28080,
            image: None,
            import: Vec::new(),
            health_path: "/healthz".to_owned(),
            health_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            pull: PullPolicy::Missing,
            nginx_include: None,
            nginx_bin: PathBuf::from("nginx"),
            ctr_bin: PathBuf::from("ctr"),
            containerd_bin: PathBuf::from("containerd"),
        }
    }
}

/// Where a full node's containerd comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerdSource {
    /// An instance already running on this socket.
    Socket(PathBuf),
    /// A private instance the agent starts under this folder.
    Private { binary: PathBuf, dir: PathBuf },
}

/// A full node's resolved settings.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    pub node: NodeConfig,
    pub nginx: NginxSettings,
    pub containerd: ContainerdSource,
    pub ctr_binary: PathBuf,
    pub namespace: String,
    pub initial_image: Option<String>,
    pub imports: Vec<PathBuf>,
}

impl NodeSetup {
    /// The full-node settings of `args`, or `None` without `--runtime`;
    /// `address` is the node's service address.
    pub fn from_args(args: &NodeArgs, address: IpAddr) -> Result<Option<Self>, ConfigError> {
        if args.runtime == RuntimeKind::None {
            if args.nginx {
                return Err(ConfigError::Node(
                    "--nginx needs --runtime containerd".to_owned(),
                ));
            }
            return Ok(None);
        }
        if !args.nginx {
            return Err(ConfigError::Node(
                "--runtime containerd needs --nginx (blue/green switches through the node's nginx)"
                    .to_owned(),
            ));
        }
        if args.blue_port == args.green_port || args.blue_port == 0 || args.green_port == 0 {
            return Err(ConfigError::Node(
                "--blue-port and --green-port must be two different non-zero ports".to_owned(),
            ));
        }
        check_health_path(&args.health_path).map_err(ConfigError::Node)?;
        if let Some(image) = &args.image {
            check_image_ref(image).map_err(ConfigError::Node)?;
        }
        let dir = absolute(&args.node_dir)?;
        let listen = args.listen.unwrap_or(SocketAddr::new(address, 80));
        let ports = ColourPorts {
            blue: args.blue_port,
            green: args.green_port,
        };
        let mut node = NodeConfig::new(dir.clone());
        node.ports = ports;
        if let Some(host) = args.workload_host {
            node.workload_host = host;
        }
        node.health_path = args.health_path.clone();
        node.health_timeout = args.health_timeout;
        node.stop_grace = args.stop_grace;
        node.pull = args.pull;
        if [ports.blue, ports.green]
            .iter()
            .any(|port| SocketAddr::new(node.workload_host, *port) == listen)
        {
            return Err(ConfigError::Node(format!(
                "nginx cannot listen on {listen}: a colour uses that port"
            )));
        }
        let nginx = NginxSettings {
            binary: args.nginx_bin.clone(),
            prefix: dir.join("nginx"),
            listen,
            include: args.nginx_include.as_deref().map(absolute).transpose()?,
            worker_processes: 1,
            shutdown_timeout: args.drain_timeout,
        };
        let containerd = if args.containerd_private {
            ContainerdSource::Private {
                binary: args.containerd_bin.clone(),
                dir: dir.join("containerd"),
            }
        } else {
            ContainerdSource::Socket(
                args.containerd_address
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(SYSTEM_CONTAINERD)),
            )
        };
        Ok(Some(NodeSetup {
            node,
            nginx,
            containerd,
            ctr_binary: args.ctr_bin.clone(),
            namespace: args.containerd_namespace.clone(),
            initial_image: args.image.clone(),
            imports: args
                .import
                .iter()
                .map(|p| absolute(p))
                .collect::<Result<_, _>>()?,
        }))
    }
}

fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path).map_err(|source| ConfigError::Path {
        path: path.to_owned(),
        source,
    })
}

fn parse_pull(text: &str) -> Result<PullPolicy, String> {
    match text {
        "missing" => Ok(PullPolicy::Missing),
        "never" => Ok(PullPolicy::Never),
        other => Err(format!("unknown pull policy `{other}` (missing or never)")),
    }
}

/// Everything the agent runs with, resolved and checked.
#[derive(Clone)]
pub struct AgentConfig {
    pub control_plane: Url,
    /// The control plane's other replicas, in the order tried.
    pub control_plane_replicas: Vec<Url>,
    pub region: String,
    pub address: IpAddr,
    pub join_token: String,
    pub ca_file: Option<PathBuf>,
    pub probe_url: Url,
    pub probe_count: u32,
    pub probe_timeout: Duration,
    pub metrics_file: Option<PathBuf>,
    pub state_file: Option<PathBuf>,
    pub mode: NodeMode,
    pub hostname: Option<String>,
    pub backoff: Backoff,
    /// Where CPU counters are read (`/proc/stat`).
    pub proc_stat: PathBuf,
    pub drain_grace: Option<Duration>,
    pub dns_ttl: Duration,
    pub node_exporter: Option<Url>,
    /// Set for a full node (`--runtime containerd --nginx`).
    pub node: Option<NodeSetup>,
    /// Whether heartbeats go over the agent stream when the control plane
    /// offers it (`--no-stream` turns it off).
    pub stream: bool,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("control_plane", &self.control_plane.as_str())
            .field(
                "control_plane_replicas",
                &self
                    .control_plane_replicas
                    .iter()
                    .map(Url::as_str)
                    .collect::<Vec<_>>(),
            )
            .field("region", &self.region)
            .field("address", &self.address)
            .field("join_token", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("probe_url", &self.probe_url.as_str())
            .field("probe_count", &self.probe_count)
            .field("probe_timeout", &self.probe_timeout)
            .field("metrics_file", &self.metrics_file)
            .field("state_file", &self.state_file)
            .field("mode", &self.mode)
            .field("hostname", &self.hostname)
            .field("backoff", &self.backoff)
            .field("drain_grace", &self.drain_grace)
            .field("node", &self.node)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Why the arguments could not be turned into a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no join token: set {JOIN_TOKEN_ENV} or pass --join-token-file")]
    MissingJoinToken,
    #[error("reading join token file {}: {source}", path.display())]
    JoinTokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("join token file {} is {problem}", path.display())]
    BadJoinTokenFile {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("{JOIN_TOKEN_ENV} is set but empty")]
    EmptyJoinTokenEnv,
    #[error("{0}")]
    Node(String),
    #[error("{}: {source}", path.display())]
    Path {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AgentConfig {
    /// Resolves `args`, taking the join token from [`JOIN_TOKEN_ENV`] when no
    /// file is given.
    pub async fn from_args(args: AgentArgs) -> Result<Self, ConfigError> {
        let env_token = std::env::var(JOIN_TOKEN_ENV).ok();
        Self::from_args_and_env(args, env_token).await
    }

    /// Resolves `args` with `env_token` standing for the environment variable.
    pub async fn from_args_and_env(
        args: AgentArgs,
        env_token: Option<String>,
    ) -> Result<Self, ConfigError> {
        let join_token = match &args.join_token_file {
            Some(path) => read_token_file(path)?,
            None => match env_token {
                None => return Err(ConfigError::MissingJoinToken),
                Some(token) if token.trim().is_empty() => {
                    return Err(ConfigError::EmptyJoinTokenEnv);
                }
                Some(token) => token.trim().to_owned(),
            },
        };
        let address = match args.ip {
            Some(ip) => ip,
            None => route_source_address(&args.control_plane)
                .await
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        let node = NodeSetup::from_args(&args.node, address)?;
        let probe_url = match (args.probe_url, &node) {
            (Some(url), _) => url,
            // A full node measures its service through its own nginx.
            (None, Some(setup)) => probe_url_at(setup.nginx.listen),
            (None, None) => default_probe_url(address),
        };
        let hostname = args.hostname.or_else(kernel_hostname);
        Ok(AgentConfig {
            control_plane: args.control_plane,
            control_plane_replicas: args.control_plane_replicas,
            region: args.region,
            address,
            join_token,
            ca_file: args.ca_file,
            probe_url,
            probe_count: args.probe_count.max(1),
            probe_timeout: args.probe_timeout,
            metrics_file: args.metrics_file,
            state_file: args.state_file,
            mode: args.mode,
            hostname,
            backoff: Backoff::new(args.backoff_min, args.backoff_max),
            proc_stat: PathBuf::from(crate::cpu::PROC_STAT),
            drain_grace: args.drain_grace,
            dns_ttl: args.dns_ttl,
            node_exporter: args.node_exporter,
            node,
            stream: !args.no_stream,
        })
    }
}

impl Default for AgentArgs {
    /// Defaults for everything but the control plane (loopback) and region
    /// (empty), for building arguments in code.
    fn default() -> Self {
        AgentArgs {
            control_plane: Url::parse("http://127.0.0.1:7400/").unwrap_or_else(|_| unreachable!()),
            control_plane_replicas: Vec::new(),
            region: String::new(),
            ip: None,
            metrics_file: None,
            join_token_file: None,
            ca_file: None,
            probe_url: None,
            state_file: None,
            mode: NodeMode::default(),
            hostname: None,
            backoff_min: backoff::DEFAULT_MIN,
            backoff_max: backoff::DEFAULT_MAX,
            probe_count: 3,
            probe_timeout: Duration::from_secs(1),
            drain_grace: None,
            dns_ttl: Duration::from_secs(30),
            node_exporter: None,
            log_format: LogFormat::default(),
            no_stream: false,
            node: NodeArgs::default(),
        }
    }
}

fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::JoinTokenFile {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_TOKEN_FILE_BYTES {
        return Err(ConfigError::BadJoinTokenFile {
            path: path.to_owned(),
            problem: "too large for a token",
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    let text = String::from_utf8(bytes).map_err(|_| ConfigError::BadJoinTokenFile {
        path: path.to_owned(),
        problem: "not UTF-8 text",
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::BadJoinTokenFile {
            path: path.to_owned(),
            problem: "empty",
        });
    }
    Ok(token.to_owned())
}

/// `http://<address>:80/healthz`.
pub fn default_probe_url(address: IpAddr) -> Url {
    probe_url_at(SocketAddr::new(address, 80))
}

/// `http://<listen>/healthz`.
pub fn probe_url_at(listen: SocketAddr) -> Url {
    let text = format!("http://{listen}/healthz");
    Url::parse(&text).unwrap_or_else(|_| unreachable!("a socket address always forms a URL"))
}

/// The local address the kernel would use to reach the control plane: a UDP
/// socket is "connected" (no packet is sent) and asked for its local address.
pub async fn route_source_address(control_plane: &Url) -> Option<IpAddr> {
    let host = control_plane.host_str()?;
    let port = control_plane.port_or_known_default()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let targets: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let lookup = tokio::net::lookup_host((bare, port));
            tokio::time::timeout(ROUTE_LOOKUP_TIMEOUT, lookup)
                .await
                .ok()?
                .ok()?
                .collect()
        }
    };
    for target in targets {
        let local: SocketAddr = if target.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = tokio::net::UdpSocket::bind(local).await else {
            continue;
        };
        if socket.connect(target).await.is_err() {
            continue;
        }
        if let Ok(found) = socket.local_addr()
            && !found.ip().is_unspecified()
        {
            return Some(found.ip());
        }
    }
    None
}

fn kernel_hostname() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = text.trim();
    (!name.is_empty() && name.len() <= 253).then(|| name.to_owned())
}

fn parse_control_plane(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|err| format!("not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not `{}`",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".to_owned());
    }
    Ok(url)
}

fn parse_probe_url(text: &str) -> Result<Url, String> {
    parse_control_plane(text)
}

fn parse_region(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err("a region name is 1-63 characters of a-z, 0-9, `-` and `_`".to_owned())
    }
}

fn parse_mode(text: &str) -> Result<NodeMode, String> {
    match text {
        "containerd-only" => Ok(NodeMode::ContainerdOnly),
        "k3s-worker" => Ok(NodeMode::K3sWorker),
        other => Err(format!(
            "unknown mode `{other}` (containerd-only or k3s-worker)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied())).map(|c| c.agent)
    }

    #[test]
    fn the_documented_command_line_parses_with_defaults() {
        let args = parse(&[
            "--control-plane",
            "http://127.0.0.1:7400",
            "--region",
            "jp",
            "--ip",
            "127.0.0.2",
            "--metrics-file",
            "m.prom",
        ])
        .unwrap();
        assert_eq!(args.control_plane.as_str(), "http://127.0.0.1:7400/");
        assert_eq!(args.region, "jp");
        assert_eq!(args.ip, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(args.mode, NodeMode::ContainerdOnly);
        assert_eq!(args.backoff_min, Duration::from_millis(500));
        assert_eq!(args.backoff_max, Duration::from_secs(30));
        assert_eq!(args.probe_count, 3);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let base = ["--control-plane", "http://127.0.0.1:7400", "--region", "jp"];
        assert!(parse(&["--control-plane", "ftp://x", "--region", "jp"]).is_err());
        assert!(parse(&["--control-plane", "not a url", "--region", "jp"]).is_err());
        assert!(parse(&["--control-plane", "http://x", "--region", "J P"]).is_err());
        assert!(parse(&[&base[..], &["--mode", "vm"]].concat()).is_err());
        assert!(parse(&[&base[..], &["--probe-count", "0"]].concat()).is_err());
        assert!(parse(&[&base[..], &["--backoff-min", "soon"]].concat()).is_err());
        let k3s = parse(&[&base[..], &["--mode", "k3s-worker"]].concat()).unwrap();
        assert_eq!(k3s.mode, NodeMode::K3sWorker);
    }

    #[tokio::test]
    async fn join_token_comes_from_the_file_before_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join-token");
        std::fs::write(&path, "  file-token\n").unwrap();
        let args = AgentArgs {
            region: "jp".into(),
            ip: Some("127.0.0.2".parse().unwrap()),
            join_token_file: Some(path.clone()),
            ..AgentArgs::default()
        };
        let config = AgentConfig::from_args_and_env(args.clone(), Some("env-token".into()))
            .await
            .unwrap();
        assert_eq!(config.join_token, "file-token");
        assert!(!format!("{config:?}").contains("file-token"));
        let from_env = AgentArgs {
            join_token_file: None,
            ..args.clone()
        };
        let config = AgentConfig::from_args_and_env(from_env.clone(), Some("env-token\n".into()))
            .await
            .unwrap();
        assert_eq!(config.join_token, "env-token");
        assert!(matches!(
            AgentConfig::from_args_and_env(from_env.clone(), None).await,
            Err(ConfigError::MissingJoinToken)
        ));
        assert!(matches!(
            AgentConfig::from_args_and_env(from_env, Some(" ".into())).await,
            Err(ConfigError::EmptyJoinTokenEnv)
        ));
        std::fs::write(&path, "\n").unwrap();
        let err = AgentConfig::from_args_and_env(args, None)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("join token file {} is empty", path.display())
        );
    }

    #[tokio::test]
    async fn address_defaults_to_the_route_towards_the_control_plane() {
        let args = AgentArgs {
            control_plane: "http://127.0.0.1:7400".parse().unwrap(),
            region: "jp".into(),
            ..AgentArgs::default()
        };
        let config = AgentConfig::from_args_and_env(args, Some("t".into()))
            .await
            .unwrap();
        assert_eq!(config.address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(config.probe_url.as_str(), "http://127.0.0.1/healthz");
        let localhost: Url = "http://localhost:7400".parse().unwrap();
        let found = route_source_address(&localhost).await.unwrap();
        assert!(found.is_loopback(), "{found}");
    }

    fn node_args() -> NodeArgs {
        NodeArgs {
            runtime: RuntimeKind::Containerd,
            nginx: true,
            node_dir: "/var/lib/neutral/node".into(),
            ..NodeArgs::default()
        }
    }

    #[test]
    fn a_full_node_resolves_its_listen_address_ports_and_containerd() {
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        assert!(
            NodeSetup::from_args(&NodeArgs::default(), ip)
                .unwrap()
                .is_none()
        );
        let setup = NodeSetup::from_args(&node_args(), ip).unwrap().unwrap();
        assert_eq!(setup.nginx.listen, "127.0.0.7:80".parse().unwrap());
        assert_eq!(
            setup.nginx.prefix,
            PathBuf::from("/var/lib/neutral/node/nginx")
        );
        assert_eq!(setup.node.ports, ColourPorts::default());
        assert_eq!(
            setup.containerd,
            ContainerdSource::Socket(PathBuf::from(SYSTEM_CONTAINERD))
        );
        let private = NodeArgs {
            containerd_private: true,
            ..node_args()
        };
        assert_eq!(
            NodeSetup::from_args(&private, ip)
                .unwrap()
                .unwrap()
                .containerd,
            ContainerdSource::Private {
                binary: "containerd".into(),
                dir: "/var/lib/neutral/node/containerd".into()
            }
        );
    }

    #[test]
    fn inconsistent_full_node_flags_are_refused() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let cases = [
            (
                NodeArgs {
                    nginx: false,
                    ..node_args()
                },
                "--runtime containerd needs --nginx",
            ),
            (
                NodeArgs {
                    runtime: RuntimeKind::None,
                    ..node_args()
                },
                "--nginx needs --runtime containerd",
            ),
            (
                NodeArgs {
                    green_port: 18080,
                    ..node_args()
                },
                "two different non-zero ports",
            ),
            (
                NodeArgs {
                    listen: Some("127.0.0.1:28080".parse().unwrap()),
                    ..node_args()
                },
                "a colour uses that port",
            ),
            (
                NodeArgs {
                    health_path: "healthz".into(),
                    ..node_args()
                },
                "must start with `/`",
            ),
            (
                NodeArgs {
                    image: Some("web v1".into()),
                    ..node_args()
                },
                "holds ' '",
            ),
        ];
        for (args, expected) in cases {
            let err = NodeSetup::from_args(&args, ip).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} (expected {expected})");
        }
    }

    #[tokio::test]
    async fn a_full_node_probes_through_its_own_nginx() {
        let args = AgentArgs {
            region: "jp".into(),
            ip: Some("127.0.0.7".parse().unwrap()),
            node: NodeArgs {
                listen: Some("127.0.0.7:8080".parse().unwrap()),
                ..node_args()
            },
            ..AgentArgs::default()
        };
        let config = AgentConfig::from_args_and_env(args, Some("t".into()))
            .await
            .unwrap();
        assert_eq!(config.probe_url.as_str(), "http://127.0.0.7:8080/healthz");
    }

    #[test]
    fn default_probe_url_brackets_ipv6() {
        assert_eq!(
            default_probe_url("::1".parse().unwrap()).as_str(),
            "http://[::1]/healthz"
        );
        assert_eq!(
            default_probe_url("127.0.0.2".parse().unwrap()).as_str(),
            "http://127.0.0.2/healthz"
        );
    }
}
