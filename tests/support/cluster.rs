//! Real processes for end-to-end tests: Git repositories (with the real `git`
//! CLI), a `neutral serve` daemon, `neutral agent`s, and a node's service (a
//! tiny HTTP server on the node's own loopback address). Everything is
//! stopped when its handle drops, and every wait is bounded.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{bin, http};

pub const JOIN_TOKEN: &str = "join-token-for-e2e-tests";
pub const ADMIN_TOKEN: &str = "admin-token-for-e2e-tests";
pub const VIEWER_TOKEN: &str = "viewer-token-for-e2e-tests";

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what`
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port free on every address, reserved for this test process
/// (`ports`).
pub fn free_port() -> u16 {
    crate::ports::reserve_tcp()
}

/// A port free for both UDP and TCP (for DNS), reserved for this test
/// process (`ports`).
pub fn free_dns_port() -> u16 {
    crate::ports::reserve_tcp_and_udp()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare repository (what the daemon follows) and a clone to commit from.
#[derive(Debug)]
pub struct Repo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    /// Creates `<dir>/repo.git` holding `files` in one commit on `main`.
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> Repo {
        let bare = dir.join("repo.git");
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        let repo = Repo { bare, work };
        for (path, text) in files {
            repo.write(path, text);
        }
        git(&repo.work, &["add", "-A"]);
        git(
            &repo.work,
            &["commit", "-q", "-m", "initial platform config"],
        );
        git(
            dir,
            &[
                "clone",
                "-q",
                "--bare",
                repo.work.to_str().unwrap(),
                repo.bare.to_str().unwrap(),
            ],
        );
        git(
            &repo.work,
            &["remote", "add", "origin", repo.bare.to_str().unwrap()],
        );
        repo
    }

    pub fn write(&self, path: &str, text: &str) {
        let path = self.work.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Commits everything and pushes to the bare repository; returns the SHA.
    pub fn commit_push(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("create log");
    let err = out.try_clone().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

fn terminate(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let start = Instant::now();
    while start.elapsed() < grace {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `neutral serve`.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub api: SocketAddr,
    pub dns: SocketAddr,
    pub data: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    repo: PathBuf,
    /// A program the daemon runs under (`prlimit --nofile=…`), if any.
    wrapper: Vec<String>,
}

impl Daemon {
    /// Starts the daemon on free loopback ports with the test tokens and
    /// waits until it answers `/healthz`.
    pub fn start(repo: &Path, data: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(repo, data, extra, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables (for the
    /// Terraform runs of its scheduler, say).
    pub fn start_with_env(
        repo: &Path,
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_under(&[], repo, data, extra, env)
    }

    /// Like [`Daemon::start_with_env`], run by `wrapper` (a program that
    /// execs its arguments, e.g. `prlimit --nofile=1024:1024 --`).
    pub fn start_under(
        wrapper: &[&str],
        repo: &Path,
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
        let mut daemon = Daemon {
            child: Command::new("true").spawn().unwrap(),
            api,
            dns,
            data: data.to_path_buf(),
            log: data.with_extension("log"),
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            repo: repo.to_path_buf(),
            wrapper: wrapper.iter().map(|s| (*s).to_owned()).collect(),
        };
        daemon.spawn();
        daemon
    }

    /// The `neutral serve` command this daemon runs (same repository,
    /// data, ports, flags and environment), not started.
    pub fn command(&self) -> Command {
        let mut cmd = match self.wrapper.split_first() {
            None => Command::new(bin("neutral")),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin("neutral"));
                cmd
            }
        };
        cmd.arg("serve")
            .arg("--repo")
            .arg(&self.repo)
            .arg("--data")
            .arg(&self.data)
            .arg("--listen")
            .arg(self.api.to_string())
            .arg("--dns-listen")
            .arg(self.dns.to_string())
            .args(&self.args)
            .env("NEUTRAL_JOIN_TOKEN", JOIN_TOKEN)
            .env("NEUTRAL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("NEUTRAL_VIEWER_TOKEN", VIEWER_TOKEN)
            .env("NEUTRAL_LOG", "info,hickory_server=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn spawn(&mut self) {
        let _ = self.child.wait();
        let mut cmd = self.command();
        let log = self.log.clone();
        // Keep earlier runs' logs: append a run marker by renaming.
        if log.exists() {
            let _ = std::fs::rename(&log, log.with_extension(format!("log.{}", self.child.id())));
        }
        self.child = spawn_logged(&mut cmd, &log);
        let api = self.api;
        let tls = self.args.iter().any(|a| a == "--tls-cert");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("neutral serve exited with {status}:\n{}", self.log_text());
            }
            let ready = if tls {
                // Plain HTTP cannot ask a TLS listener; accepting is enough.
                std::net::TcpStream::connect(api).is_ok()
            } else {
                http::request(api, "GET", "/healthz", None, None).is_ok_and(|r| r.status == 200)
            };
            if ready {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "neutral serve did not answer on {api} within 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded).
    pub fn stop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(15));
    }

    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Starts it again with the same ports, data and flags.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// A read with the viewer token (reads need one).
    pub fn get(&self, path: &str) -> http::Response {
        http::request(self.api, "GET", path, Some(VIEWER_TOKEN), None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// A read without any token.
    pub fn anonymous_get(&self, path: &str) -> http::Response {
        http::get(self.api, path)
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> http::Response {
        http::request(self.api, method, path, Some(ADMIN_TOKEN), body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `POST /sync`, returning its JSON outcome.
    pub fn sync(&self) -> serde_json::Value {
        let response = self.admin("POST", "/sync", None);
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()
    }

    /// The node with `id` from `GET /nodes`.
    /// Registers a node of `region` at `address` with the join token, as a
    /// bare client would (from 127.0.0.1); panics unless it is created.
    /// Returns `(node id, node token)`.
    pub fn register_node(&self, region: &str, address: &str) -> (String, String) {
        let body = format!(r#"{{"region": "{region}", "address": "{address}"}}"#);
        let response = http::request(
            self.api,
            "POST",
            "/nodes/register",
            Some(JOIN_TOKEN),
            Some(&body),
        )
        .unwrap();
        assert_eq!(response.status, 201, "{}", response.body);
        let doc = response.json();
        (
            doc["node_id"].as_str().unwrap().to_owned(),
            doc["node_token"].as_str().unwrap().to_owned(),
        )
    }

    pub fn node(&self, id: &str) -> Option<serde_json::Value> {
        let nodes = self.get("/nodes").json();
        nodes.as_array()?.iter().find(|n| n["id"] == id).cloned()
    }

    pub fn node_status(&self, id: &str) -> Option<String> {
        self.node(id)
            .and_then(|n| n["status"].as_str().map(str::to_owned))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// A running `neutral agent`.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    pub ip: IpAddr,
    pub state_file: PathBuf,
    pub metrics_file: PathBuf,
    pub log: PathBuf,
    cmd_args: Vec<String>,
}

impl Agent {
    /// Starts an agent for `region` on `ip`, its metrics fed from a file and
    /// its identity kept in a state file, both under `dir`.
    pub fn start(daemon: &Daemon, dir: &Path, name: &str, region: &str, ip: &str) -> Agent {
        Agent::start_with(
            &format!("http://{}", daemon.api),
            dir,
            name,
            region,
            ip,
            &[],
        )
    }

    /// Like [`Agent::start`] against any control-plane URL, with extra flags.
    pub fn start_with(
        control_plane: &str,
        dir: &Path,
        name: &str,
        region: &str,
        ip: &str,
        extra: &[&str],
    ) -> Agent {
        let state_file = dir.join(format!("{name}.state.json"));
        let metrics_file = dir.join(format!("{name}.prom"));
        std::fs::write(
            &metrics_file,
            "neutral_node_cpu_ratio 0.2\nneutral_node_rtt_seconds 0.005\nneutral_node_error_ratio 0\n",
        )
        .unwrap();
        let mut cmd_args = vec![
            "agent".to_owned(),
            "--control-plane".to_owned(),
            control_plane.to_owned(),
            "--region".to_owned(),
            region.to_owned(),
            "--ip".to_owned(),
            ip.to_owned(),
            "--metrics-file".to_owned(),
            metrics_file.to_str().unwrap().to_owned(),
            "--state-file".to_owned(),
            state_file.to_str().unwrap().to_owned(),
            "--backoff-min".to_owned(),
            "100ms".to_owned(),
            "--backoff-max".to_owned(),
            "1s".to_owned(),
        ];
        cmd_args.extend(extra.iter().map(|s| (*s).to_owned()));
        let log = dir.join(format!("{name}.log"));
        let mut agent = Agent {
            child: Command::new("true").spawn().unwrap(),
            ip: ip.parse().unwrap(),
            state_file,
            metrics_file,
            log,
            cmd_args,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let _ = self.child.wait();
        let mut cmd = Command::new(bin("neutral"));
        cmd.args(&self.cmd_args)
            .env("NEUTRAL_JOIN_TOKEN", JOIN_TOKEN);
        self.child = spawn_logged(&mut cmd, &self.log);
    }

    /// The node id the agent registered as (from its state file).
    pub fn node_id(&self) -> String {
        wait_for("the agent to register", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&self.state_file).ok()?;
            let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
            doc["node_id"].as_str().map(str::to_owned)
        })
    }

    pub fn set_metrics(&self, cpu: f64, rtt_ms: f64, error_rate: f64) {
        std::fs::write(
            &self.metrics_file,
            format!(
                "neutral_node_cpu_ratio {cpu}\nneutral_node_rtt_seconds {}\nneutral_node_error_ratio {error_rate}\n",
                rtt_ms / 1000.0
            ),
        )
        .unwrap();
    }

    pub fn stop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }

    /// SIGKILL, as a crashed process or machine: the kernel closes its
    /// connections, nothing else is said.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// A node's service: answers every HTTP request with 200 `ok` on `addr`
/// until dropped. The control plane's probes hit it.
#[derive(Debug)]
pub struct Service {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    pub fn start(ip: &str, port: u16) -> Service {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 2048];
                        let _ = stream.read(&mut buf);
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Service {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `neutral serve` flags for tests that drive nodes through the node API
/// themselves: fast heartbeats and sync, no autoscaler, no HTTP probes.
pub const FAST_NO_PROBES: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--heartbeat-timeout",
    "2s",
    "--sync-interval",
    "1s",
    "--no-autoscale",
    "--no-probes",
];

/// A repository holding [`fast_config`] (probes on a free port).
pub fn fast_repo(dir: &Path) -> Repo {
    let files = fast_config(free_port());
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    Repo::create(dir, &refs)
}

/// A platform-config for daemon tests: regions jp, sg (and us), one domain
/// `app.example.com` probed on `probe_port` with fast settings.
pub fn fast_config(probe_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("platform-config/regions/jp.yaml", "name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 5\nbase_weight: 100\nfailover: [sg]\n".to_owned()),
        ("platform-config/regions/sg.yaml", "name: sg\nprovider: local\nmin_nodes: 1\nmax_nodes: 5\nbase_weight: 100\n".to_owned()),
        ("platform-config/regions/us.yaml", "name: us\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 50\n".to_owned()),
        (
            "platform-config/gtm/app.yaml",
            format!(
                "domain: app.example.com\nzone: example.com\nttl: 30\nmin_ready_nodes: 1\nregions: {{ jp: 100, sg: 50 }}\nall_down: fail_open\nprobe: {{ http: /healthz, port: {probe_port}, interval: 300ms, timeout: 250ms, rise: 2, fall: 2 }}\n"
            ),
        ),
        ("infra/node-pool/jp.tfvars", "region        = \"jp\"\ndesired_nodes = 2\n".to_owned()),
        ("infra/node-pool/sg.tfvars", "region        = \"sg\"\ndesired_nodes = 1\n".to_owned()),
    ]
}

/// A GTM root with one `neutral_gtm_record` (`app.example.com`, jp 100)
/// whose provider talks to `endpoint` instead of the scheduler's default:
/// a listener that never answers makes the run hang, a gate that holds
/// writes makes its apply hang.
pub fn gtm_root_at(endpoint: std::net::SocketAddr) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    neutral = {{ source = "neutral/neutral" }}
  }}
}}

provider "neutral" {{
  endpoint = "http://{endpoint}"
}}

resource "neutral_gtm_record" "app" {{
  domain  = "app.example.com"
  zone    = "example.com"
  regions = {{ jp = 100 }}
}}
"#
    )
}

/// Processes (pid and command line) whose working folder is inside `dir`:
/// a run's Terraform and the provider it started work in the run's root.
/// Zombies (no command line, holding nothing) are left out.
pub fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(dir) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !cmdline.trim().is_empty() {
                found.push((pid, cmdline));
            }
        }
    }
    found
}

/// Milliseconds since the Unix epoch on this machine's clock (the daemons'
/// timestamps are on the same clock).
pub fn now_millis() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}
