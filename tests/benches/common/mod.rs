//! The IO edge of the control-plane benchmarks: building and starting the
//! real `neutral serve` on loopback with a scratch Git repository, a lean
//! keep-alive HTTP/1.1 client (hyper), UDP DNS queries over std sockets
//! (hickory-proto encoding), guards for child processes and readings of
//! `/proc/<pid>`. Every process started here is stopped when its guard drops,
//! also on panic; every wait is bounded in count and time. The arithmetic
//! lives in `neutral_e2e::bench`, where it is unit-tested.

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use neutral_e2e::bench::{CpuTicks, parse_proc_stat, parse_status_kib};
use tempfile::TempDir;

pub const JOIN_TOKEN: &str = "bench-join-token-5f0c8a9e2b7d4c61";
pub const ADMIN_TOKEN: &str = "bench-admin-token-93e1d7a4c2f85b06";

/// How long a started daemon may take to answer `/healthz`.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The release build of `neutral` beside this bench binary
/// (`target/release/neutral`), built now unless `NEUTRAL_BIN` names one.
pub fn neutral_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NEUTRAL_BIN") {
        return PathBuf::from(path);
    }
    eprintln!("building the daemon: cargo build --release --bin neutral");
    let mut command = neutral_e2e::cargo();
    let status = command
        .args(["build", "--release", "--quiet", "--bin", "neutral"])
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --release --bin neutral failed"
    );
    let exe = std::env::current_exe().expect("current exe");
    // target/release/deps/<bench> -> target/release/neutral
    exe.parent()
        .and_then(Path::parent)
        .expect("bench binary lives in target/<profile>/deps")
        .join("neutral")
}

/// A free TCP port on `ip` (bound, then released).
pub fn free_tcp_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free TCP port")
        .port()
}

/// A port free for both UDP and TCP on 127.0.0.1 (DNS listens on both).
pub fn free_dns_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("UDP address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP after 50 tries");
}

fn run_git(dir: &Path, args: &[&str]) {
    let finished = neutral_e2e::run_with_deadline(
        Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
            .args(args),
        Duration::from_secs(60),
    );
    assert_eq!(finished.code, Some(0), "git {args:?}: {}", finished.stderr);
}

/// A temporary bare Git repository holding one commit of `files` on `main`.
#[derive(Debug)]
pub struct ConfigRepo {
    _dir: TempDir,
    pub bare: PathBuf,
}

impl ConfigRepo {
    pub fn new(files: &[(String, String)]) -> ConfigRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("create work tree");
        for (path, contents) in files {
            let path = work.join(path);
            std::fs::create_dir_all(path.parent().expect("file has a folder"))
                .expect("create folder");
            std::fs::write(&path, contents).expect("write config file");
        }
        run_git(&work, &["init", "-q", "-b", "main"]);
        run_git(&work, &["add", "-A"]);
        run_git(&work, &["commit", "-q", "-m", "bench platform-config"]);
        let bare = dir.path().join("config.git");
        run_git(
            dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                "work",
                bare.to_str().expect("UTF-8 path"),
            ],
        );
        ConfigRepo { _dir: dir, bare }
    }
}

/// `infra/node-pool/<region>.tfvars` declaring `desired` nodes, and
/// `autoscale/<region>.yaml` scaling out above `cpu_above` and in below
/// `cpu_below`, each held for `window`, one node at a time.
pub fn autoscale_files(
    region: &str,
    desired: u32,
    (cpu_above, cpu_below): (f64, f64),
    window: &str,
    cooldown: &str,
) -> [(String, String); 2] {
    [
        (
            format!("infra/node-pool/{region}.tfvars"),
            format!("region        = \"{region}\"\ndesired_nodes = {desired}\n"),
        ),
        (
            format!("platform-config/autoscale/{region}.yaml"),
            format!(
                "region: {region}\nscale_up: {{ cpu_above: {cpu_above}, for: {window}, step: 1 }}\n\
                 scale_down: {{ cpu_below: {cpu_below}, for: {window}, step: 1 }}\n\
                 cooldown: {cooldown}\n"
            ),
        ),
    ]
}

/// `regions/<name>.yaml` for a plain edge region.
pub fn region_file(name: &str, max_nodes: u32) -> (String, String) {
    (
        format!("platform-config/regions/{name}.yaml"),
        format!(
            "name: {name}\nprovider: edge\nmin_nodes: 1\nmax_nodes: {max_nodes}\n\
             base_weight: 100\nstate: up\nfailover: []\n"
        ),
    )
}

/// `gtm/app.yaml`: app.example.com over `regions` with `probe`
/// (flow-style YAML, e.g. `{ http: /healthz, port: 80, interval: 1s, … }`).
pub fn gtm_file(regions: &[&str], probe: &str) -> (String, String) {
    let weights: Vec<String> = regions.iter().map(|r| format!("{r}: 100")).collect();
    (
        "platform-config/gtm/app.yaml".to_owned(),
        format!(
            "domain: app.example.com\nzone: example.com\ntype: A\nttl: 30\ndns: embedded\n\
             min_ready_nodes: 1\nregions: {{ {} }}\nall_down: fail_open\nprobe: {probe}\n",
            weights.join(", ")
        ),
    )
}

/// A child process that is killed when the guard drops.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    pub what: String,
}

impl ChildGuard {
    pub fn new(child: Child, what: impl Into<String>) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            what: what.into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        eprintln!(
            "{} did not stop within {within:?} of SIGTERM; killing it",
            self.what
        );
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings of one `neutral serve`.
#[derive(Clone, Debug)]
pub struct DaemonSpec {
    pub heartbeat_interval: String,
    pub heartbeat_timeout: String,
    pub extra: Vec<String>,
}

/// A running `neutral serve` on loopback, with its data directory and log.
#[derive(Debug)]
pub struct Daemon {
    process: ChildGuard,
    pub api: SocketAddr,
    pub dns: SocketAddr,
    pub log: PathBuf,
    _data: TempDir,
}

impl Daemon {
    /// Starts the daemon on free loopback ports and waits (bounded) until it
    /// answers `/healthz`.
    pub fn start(bin: &Path, repo: &ConfigRepo, spec: &DaemonSpec) -> Daemon {
        let data = tempfile::tempdir().expect("temp dir");
        let api = SocketAddr::from(([127, 0, 0, 1], free_tcp_port([127, 0, 0, 1].into())));
        let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
        let log = data.path().join("serve.log");
        let log_file = std::fs::File::create(&log).expect("create daemon log");
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg("--repo")
            .arg(&repo.bare)
            .args(["--branch", "main"])
            .arg("--data")
            .arg(data.path().join("data"))
            .args(["--listen", &api.to_string()])
            .args(["--dns-listen", &dns.to_string()])
            .args(["--heartbeat-interval", &spec.heartbeat_interval])
            .args(["--heartbeat-timeout", &spec.heartbeat_timeout])
            // The load generators register thousands of nodes from one
            // loopback address: no per-client registration limit.
            .args(["--register-rate", "1000000", "--register-burst", "1000000"])
            .args(&spec.extra)
            .env("NEUTRAL_JOIN_TOKEN", JOIN_TOKEN)
            .env("NEUTRAL_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = command.spawn().expect("spawn neutral serve");
        let mut daemon = Daemon {
            process: ChildGuard::new(child, "neutral serve"),
            api,
            dns,
            log,
            _data: data,
        };
        daemon.wait_healthy();
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The daemon's `--data` folder.
    pub fn data_dir(&self) -> PathBuf {
        self._data.path().join("data")
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            assert!(
                self.process.is_running(),
                "neutral serve exited at start:\n{}",
                self.log_tail(30)
            );
            if healthz(self.api) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "neutral serve did not answer /healthz within {READY_WITHIN:?}:\n{}",
            self.log_tail(30)
        );
    }

    /// The last `lines` lines of the daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Log lines at WARN or ERROR, for the report.
    pub fn warnings(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }

    /// Stops the daemon with SIGTERM (SIGKILL after 10 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.process.terminate(STOP_WITHIN)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One blocking `GET /healthz` with `Connection: close`.
fn healthz(api: SocketAddr) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&api, Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// A keep-alive HTTP/1.1 connection (hyper), reconnected when the server
/// closed it.
#[derive(Debug)]
pub struct Http {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Http {
    pub async fn connect(addr: SocketAddr) -> Result<Http, String> {
        let sender = handshake(addr).await?;
        Ok(Http { addr, sender })
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, &HeaderValue)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        if self.sender.is_closed() {
            self.sender = handshake(self.addr).await?;
        }
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "127.0.0.1");
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(name, (*value).clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("build request: {e}"))?;
        if self.sender.ready().await.is_err() {
            // Closed by the server between requests (nothing was sent yet).
            self.sender = handshake(self.addr).await?;
            self.sender
                .ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
        }
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("read body: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// A JSON request; the response body parsed as JSON (`Null` when empty).
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let authorization = token.map(bearer);
        let headers: Vec<(HeaderName, &HeaderValue)> =
            authorization.iter().map(|v| (AUTHORIZATION, v)).collect();
        self.json_with(method, path, &headers, body).await
    }

    /// A JSON request with any headers (PowerDNS' `X-API-Key`, say).
    pub async fn json_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, &HeaderValue)],
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let (status, bytes) = self.send(method, path, headers, body).await?;
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            })
        };
        Ok((status, value))
    }

    /// `GET /metrics` as text (with the admin token: reads need one).
    pub async fn metrics(&mut self) -> Result<String, String> {
        let authorization = bearer(ADMIN_TOKEN);
        let (status, bytes) = self
            .send(
                Method::GET,
                "/metrics",
                &[(AUTHORIZATION, &authorization)],
                Bytes::new(),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(format!("GET /metrics: HTTP {status}"));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

async fn handshake(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `Bearer <token>` as a header value.
pub fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("token is header-safe")
}

/// The sum of a Prometheus metric's samples whose labels contain every
/// `label="value"` pair of `labels` (no labels: every sample of the name).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            labels
                .iter()
                .all(|l| rest.contains(l))
                .then(|| value.parse::<f64>().ok())?
        })
        .fold(0.0, |sum, v| sum + v)
}

/// Syncs the daemon with its repository (`POST /sync`) and checks that the
/// declarations hold `regions` regions.
pub async fn sync_and_check(http: &mut Http, regions: usize) {
    let (status, outcome) = http
        .json(Method::POST, "/sync", Some(ADMIN_TOKEN), None)
        .await
        .expect("POST /sync");
    assert!(status.is_success(), "POST /sync: {status} {outcome}");
    let (status, listed) = http
        .json(Method::GET, "/regions", Some(ADMIN_TOKEN), None)
        .await
        .expect("GET /regions");
    let count = listed.as_array().map_or(0, Vec::len);
    assert!(
        status.is_success() && count == regions,
        "expected {regions} regions after sync ({outcome}), GET /regions: {status} {listed}"
    );
}

/// Registers a node; returns its id and token.
pub async fn register(http: &mut Http, region: &str, address: IpAddr) -> (String, String) {
    let body = serde_json::json!({ "region": region, "address": address.to_string(),
                                   "hostname": format!("bench-{address}"), "agent_version": "bench" });
    let (status, reply) = http
        .json(
            Method::POST,
            "/nodes/register",
            Some(JOIN_TOKEN),
            Some(&body),
        )
        .await
        .expect("POST /nodes/register");
    assert_eq!(status, StatusCode::CREATED, "register {address}: {reply}");
    let id = reply["node_id"].as_str().expect("node_id").to_owned();
    let token = reply["node_token"].as_str().expect("node_token").to_owned();
    (id, token)
}

/// Creates `zone` in the embedded DNS backend (admin API).
pub async fn create_zone(http: &mut Http, zone: &str) {
    let body = serde_json::json!({ "name": zone, "kind": "Native", "nameservers": [format!("ns1.{zone}")] });
    let (status, reply) = http
        .json(Method::POST, "/dns/zones", Some(ADMIN_TOKEN), Some(&body))
        .await
        .expect("POST /dns/zones");
    assert_eq!(status, StatusCode::CREATED, "create zone {zone}: {reply}");
}

/// Replaces the A rrset `name` of `zone` with weighted records.
pub async fn put_weighted_a(http: &mut Http, zone: &str, name: &str, records: &[(IpAddr, u32)]) {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|(ip, w)| serde_json::json!({ "content": ip.to_string(), "disabled": false, "weight": w }))
        .collect();
    let body = serde_json::json!({ "rrsets": [{ "name": name, "type": "A", "ttl": 30,
        "changetype": "REPLACE", "records": records }] });
    let (status, reply) = http
        .json(
            Method::PATCH,
            &format!("/dns/zones/{zone}"),
            Some(ADMIN_TOKEN),
            Some(&body),
        )
        .await
        .expect("PATCH /dns/zones");
    assert_eq!(status, StatusCode::NO_CONTENT, "patch {zone}: {reply}");
}

/// A DNS answer as the benches judge it.
#[derive(Clone, Debug)]
pub struct DnsAnswer {
    pub rcode: ResponseCode,
    pub addresses: Vec<IpAddr>,
}

/// Asks one server one A question over UDP, again and again (std socket,
/// hickory-proto encoding).
#[derive(Debug)]
pub struct DnsAsker {
    socket: UdpSocket,
    query: Vec<u8>,
    id: u16,
    buf: Vec<u8>,
}

impl DnsAsker {
    pub fn new(server: SocketAddr, name: &str, timeout: Duration) -> DnsAsker {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS client");
        socket.connect(server).expect("connect DNS client");
        socket
            .set_read_timeout(Some(timeout))
            .expect("set DNS read timeout");
        let mut message = Message::query();
        message.add_query(Query::query(
            Name::from_str(name).expect("DNS name"),
            RecordType::A,
        ));
        DnsAsker {
            socket,
            query: message.to_vec().expect("encode DNS query"),
            id: rand::random(),
            buf: vec![0u8; 4096],
        }
    }

    /// Sends the query and waits for the answer with its id; `None` when none
    /// came within the timeout (or the socket failed).
    pub fn ask(&mut self) -> Option<DnsAnswer> {
        self.id = self.id.wrapping_add(1);
        let id = self.id.to_be_bytes();
        self.query.get_mut(..2)?.copy_from_slice(&id);
        self.socket.send(&self.query).ok()?;
        // Stale answers to earlier, timed-out queries are skipped (bounded).
        for _ in 0..16 {
            let len = self.socket.recv(&mut self.buf).ok()?;
            let reply = self.buf.get(..len)?;
            if reply.get(..2) != Some(&id[..]) {
                continue;
            }
            let message = Message::from_vec(reply).ok()?;
            let addresses = message
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            return Some(DnsAnswer {
                rcode: message.metadata.response_code,
                addresses,
            });
        }
        None
    }
}

/// CPU ticks of process `pid` (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> CpuTicks {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_proc_stat(&t))
        .unwrap_or_default()
}

/// Resident set size and its peak (VmRSS, VmHWM) of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mib = |key| parse_status_kib(&status, key).map_or(f64::NAN, |k| k as f64 / 1024.0);
    (mib("VmRSS"), mib("VmHWM"))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when unknown).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The machine's load averages and core count, for the report.
pub fn machine_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = load.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mut out = String::new();
    let _ = write!(out, "load average {} on {cores} cores", fields.join(" "));
    out
}

// ---------------------------------------------------------------------------
// PowerDNS Authoritative, for the side-by-side figures

/// A program on PATH, or in /usr/sbin or /usr/bin.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

pub const PDNS_SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";
pub const PDNS_API_KEY: &str = "bench-pdns-api-key";
/// PowerDNS settings that turn its packet, query and negative caches off
/// (the embedded server caches no answers).
pub const PDNS_CACHES_OFF: &str = "cache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0\n";

/// Why PowerDNS cannot run here, if it cannot.
pub fn pdns_missing() -> Option<String> {
    if which("pdns_server").is_none() {
        return Some("pdns_server not found (Debian pdns-server)".into());
    }
    if !Path::new(PDNS_SCHEMA).is_file() {
        return Some(format!(
            "{PDNS_SCHEMA} not found (Debian pdns-backend-sqlite3)"
        ));
    }
    if which("sqlite3").is_none() {
        return Some("sqlite3 not found (Debian sqlite3)".into());
    }
    None
}

/// `PowerDNS Authoritative Server 4.7.3`, as the installed server says.
pub fn pdns_version() -> String {
    let Some(bin) = which("pdns_server") else {
        return "unknown version".into();
    };
    let output = Command::new(bin).arg("--version").output();
    let text = output
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.find("PowerDNS Authoritative Server")
                .map(|i| l[i..].to_owned())
        })
        .and_then(|l| l.split(" (C)").next().map(str::to_owned))
        .unwrap_or_else(|| "unknown version".into())
}

/// A running `pdns_server` (gsqlite3 backend, HTTP API on) on loopback.
#[derive(Debug)]
pub struct Pdns {
    pub process: ChildGuard,
    pub dns: SocketAddr,
    pub api: SocketAddr,
    dir: TempDir,
}

impl Pdns {
    /// Starts PowerDNS with `extra` settings (lines of `pdns.conf`) and waits
    /// (bounded) until its API answers; `Err` says why not, with its log.
    pub async fn start(extra: &str) -> Result<Pdns, String> {
        if let Some(missing) = pdns_missing() {
            return Err(missing);
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let db = dir.path().join("pdns.db");
        let schema =
            std::fs::File::open(PDNS_SCHEMA).map_err(|e| format!("open {PDNS_SCHEMA}: {e}"))?;
        let sqlite3 = which("sqlite3").ok_or("sqlite3 not found")?;
        let made = Command::new(sqlite3)
            .arg(&db)
            .stdin(schema)
            .status()
            .map_err(|e| format!("run sqlite3: {e}"))?;
        if !made.success() {
            return Err("sqlite3 could not load the PowerDNS schema".into());
        }
        let dns_port = free_dns_port();
        let api_port = free_tcp_port([127, 0, 0, 1].into());
        let config = format!(
            "launch=gsqlite3\ngsqlite3-database={db}\nlocal-address=127.0.0.1\nlocal-port={dns_port}\n\
             api=yes\napi-key={PDNS_API_KEY}\nwebserver=yes\nwebserver-address=127.0.0.1\n\
             webserver-port={api_port}\nwebserver-allow-from=127.0.0.0/8\nenable-lua-records=yes\n\
             socket-dir={dir}\nguardian=no\ndaemon=no\nloglevel=4\n{extra}",
            db = db.display(),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("pdns.conf"), config)
            .map_err(|e| format!("write pdns.conf: {e}"))?;
        let log = std::fs::File::create(dir.path().join("pdns.log"))
            .map_err(|e| format!("create pdns.log: {e}"))?;
        let out = log.try_clone().map_err(|e| format!("log handle: {e}"))?;
        let child = Command::new(which("pdns_server").ok_or("pdns_server not found")?)
            .arg(format!("--config-dir={}", dir.path().display()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn pdns_server: {e}"))?;
        let pdns = Pdns {
            process: ChildGuard::new(child, "pdns_server"),
            dns: SocketAddr::from(([127, 0, 0, 1], dns_port)),
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((StatusCode::OK, _)) = pdns.call(Method::GET, "", None).await {
                return Ok(pdns);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the PowerDNS API did not answer within 20 s:\n{}",
                    pdns.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One API call to `/api/v1/servers/localhost{path}` on a connection of
    /// its own (PowerDNS' web server may close connections after answering).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let key = HeaderValue::from_static(PDNS_API_KEY);
        let headers = [(HeaderName::from_static("x-api-key"), &key)];
        let mut http = Http::connect(self.api).await?;
        http.json_with(
            method,
            &format!("/api/v1/servers/localhost{path}"),
            &headers,
            body,
        )
        .await
    }

    /// Creates `zone` (absolute name) with one name server.
    pub async fn create_zone(&self, zone: &str) -> Result<(), String> {
        let body = serde_json::json!({ "name": zone, "kind": "Native", "nameservers": [format!("ns1.{zone}")] });
        match self.call(Method::POST, "/zones", Some(&body)).await? {
            (StatusCode::CREATED, _) => Ok(()),
            (status, reply) => Err(format!("create zone {zone}: {status} {reply}")),
        }
    }

    /// Replaces the rrset `name`/`rtype` of `zone` with `contents`.
    pub async fn replace(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
        contents: &[String],
    ) -> Result<(), String> {
        let records: Vec<serde_json::Value> = contents
            .iter()
            .map(|c| serde_json::json!({ "content": c, "disabled": false }))
            .collect();
        let body = serde_json::json!({ "rrsets": [{ "name": name, "type": rtype, "ttl": 30,
            "changetype": "REPLACE", "records": records }] });
        match self
            .call(Method::PATCH, &format!("/zones/{zone}"), Some(&body))
            .await?
        {
            (StatusCode::NO_CONTENT, _) => Ok(()),
            (status, reply) => Err(format!("patch zone {zone}: {status} {reply}")),
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}
