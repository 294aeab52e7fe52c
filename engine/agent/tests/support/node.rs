//! A full node for tests and the release bench: a private containerd, the
//! node's nginx and the test images built by tests/images/build-test-image.sh,
//! plus a bounded loopback load generator that records every request.
//! Everything runs for real; nothing is faked.
#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use neutral_agent::node::containerd::PrivateContainerd;
use neutral_agent::node::nginx::{Nginx, NginxSettings};
use neutral_agent::node::release::ColourPorts;
use neutral_agent::node::runtime::{Ctr, PullPolicy, Runtime};
use neutral_agent::node::{Node, NodeConfig, ReleaseError, ReleaseRequest};

/// The versions built; `v3` is built from version `bad3`, which has no
/// `/healthz`.
pub const VERSIONS: [(&str, &str); 3] = [("v1", "v1"), ("v2", "v2"), ("v3", "bad3")];
/// runc keeps its state per containerd namespace under /run/containerd/runc,
/// shared by every containerd on the machine: each node needs its own.
fn unique_namespace() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "neutral-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The test images, built once per process.
#[derive(Debug)]
pub struct Images {
    pub dir: tempfile::TempDir,
    pub tarballs: Vec<PathBuf>,
}

impl Images {
    pub fn image(&self, tag: &str) -> String {
        format!("neutral.test/web:{tag}")
    }
}

/// The images when this machine can run a node (root, containerd, runc,
/// nginx, busybox-static), else `None` after saying loudly why not.
pub fn prerequisites() -> Option<&'static Images> {
    static IMAGES: OnceLock<Option<Images>> = OnceLock::new();
    IMAGES
        .get_or_init(|| {
            if let Some(missing) = missing_prerequisite() {
                eprintln!(
                    "\n!!!!!!!!\n!!! SKIPPED: node tests need {missing} (run scripts/setup as root)\n!!!!!!!!\n"
                );
                return None;
            }
            Some(build_images())
        })
        .as_ref()
}

fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
    if !root {
        return Some("root".to_owned());
    }
    for tool in ["containerd", "ctr", "runc", "nginx"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}`"));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox (busybox-static)".to_owned());
    }
    None
}

fn build_images() -> Images {
    let dir = tempfile::tempdir().unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/images/build-test-image.sh");
    let mut tarballs = Vec::new();
    for (tag, version) in VERSIONS {
        let out = dir.path().join(format!("web-{tag}.tar"));
        let status = Command::new("bash")
            .arg(&script)
            .arg(version)
            .arg(&out)
            .arg(format!("neutral.test/web:{tag}"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "building test image {tag}");
        tarballs.push(out);
    }
    Images { dir, tarballs }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node: private containerd, nginx on a free loopback port, colours on two
/// more.
#[derive(Debug)]
pub struct TestNode {
    pub node: Node<Ctr>,
    pub listen: SocketAddr,
    pub ports: ColourPorts,
    pub dir: tempfile::TempDir,
    containerd: Option<PrivateContainerd>,
    socket: PathBuf,
    namespace: String,
    stopped: bool,
}

impl TestNode {
    pub async fn start(images: &Images, include: Option<PathBuf>) -> TestNode {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::start_listening(images, include, listen).await
    }

    /// A node whose nginx listens on `listen`.
    pub async fn start_listening(
        images: &Images,
        include: Option<PathBuf>,
        listen: SocketAddr,
    ) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let containerd =
            PrivateContainerd::start(Path::new("containerd"), &dir.path().join("containerd"))
                .await
                .unwrap();
        let socket = containerd.socket().to_owned();
        let namespace = unique_namespace();
        let mut ctr = Ctr::new(socket.clone(), namespace.clone());
        ctr.timeout = Duration::from_secs(60);
        for tarball in &images.tarballs {
            ctr.import(tarball).await.unwrap();
        }
        let ports = ColourPorts {
            blue: free_port(),
            green: free_port(),
        };
        let node_dir = dir.path().join("node");
        let nginx = Nginx::new(NginxSettings {
            binary: "nginx".into(),
            prefix: node_dir.join("nginx"),
            listen,
            include,
            worker_processes: 1,
            shutdown_timeout: Duration::from_secs(10),
        });
        let mut config = NodeConfig::new(node_dir);
        config.ports = ports;
        config.pull = PullPolicy::Never;
        config.health_timeout = Duration::from_secs(15);
        config.stop_grace = Duration::from_secs(5);
        let node = Node::new(ctr, nginx, config).unwrap();
        TestNode {
            node,
            listen,
            ports,
            dir,
            containerd: Some(containerd),
            socket,
            namespace,
            stopped: false,
        }
    }

    pub async fn boot_with(&self, tag: &str) {
        self.node
            .boot(Some(&format!("neutral.test/web:{tag}")))
            .await
            .unwrap();
    }

    pub async fn release_ok(&self, tag: &str) {
        self.node
            .release(&ReleaseRequest {
                image: format!("neutral.test/web:{tag}"),
                ..ReleaseRequest::default()
            })
            .await
            .unwrap();
    }

    pub async fn release_err(&self, image: &str) -> ReleaseError {
        self.node
            .release(&ReleaseRequest {
                image: image.to_owned(),
                timeout_ms: Some(3000),
                ..ReleaseRequest::default()
            })
            .await
            .unwrap_err()
    }

    /// One request through the node's nginx.
    pub async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let listen = self.listen;
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || http_get(listen, &path))
            .await
            .unwrap()
            .map(|sample| (sample.0, sample.1))
    }

    /// Runs `ctr` against the node's containerd.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", &self.namespace])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn stop(mut self) {
        self.node.shutdown(Duration::from_secs(10)).await;
        if let Some(containerd) = self.containerd.take() {
            containerd.stop(Duration::from_secs(10)).await;
        }
        // runc's (now empty) state folder for the namespace.
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
        self.stopped = true;
    }
}

impl Drop for TestNode {
    /// After a failed test: kill what is left, without async.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        for name in ["svc-blue", "svc-green"] {
            for args in [
                vec!["tasks", "kill", "--signal", "SIGKILL", name],
                vec!["tasks", "delete", "--force", name],
                vec!["containers", "delete", name],
            ] {
                let _ = Command::new("ctr")
                    .arg("-a")
                    .arg(&self.socket)
                    .args(["-n", &self.namespace])
                    .args(&args)
                    .output();
            }
        }
        if let Some(pid) = self.node.nginx().master_pid() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// One HTTP/1.1 GET on a fresh connection (`Connection: close`): status,
/// trimmed body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: node.test\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, body.trim().to_owned()))
}

/// One request of a load run.
#[derive(Clone, Debug)]
pub struct Sample {
    pub started: Instant,
    pub latency: Duration,
    /// `Ok(body)` for a 200, `Err(what)` otherwise.
    pub outcome: Result<String, String>,
}

/// What a load run saw.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub samples: Vec<Sample>,
    pub failures: usize,
    pub failure_samples: Vec<String>,
}

impl LoadResult {
    pub fn total(&self) -> usize {
        self.samples.len()
    }

    pub fn count(&self, body: &str) -> usize {
        self.samples
            .iter()
            .filter(|s| s.outcome.as_deref() == Ok(body))
            .count()
    }

    /// Bodies of requests that started at or after `at`.
    pub fn bodies_started_after(&self, at: Instant) -> Vec<String> {
        self.samples
            .iter()
            .filter(|s| s.started >= at)
            .map(|s| s.outcome.clone().unwrap_or_else(|e| e))
            .collect()
    }

    /// Bodies of requests that finished before `at`.
    pub fn bodies_finished_before(&self, at: Instant) -> Vec<String> {
        self.samples
            .iter()
            .filter(|s| s.started + s.latency < at)
            .map(|s| s.outcome.clone().unwrap_or_else(|e| e))
            .collect()
    }

    /// The `q` quantile (0..=1) of latencies of requests started in
    /// `[from, to)`.
    pub fn latency_quantile(&self, from: Instant, to: Instant, q: f64) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.started >= from && s.started < to)
            .map(|s| s.latency)
            .collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies.get(index).copied()
    }

    pub fn started_between(&self, from: Instant, to: Instant) -> usize {
        self.samples
            .iter()
            .filter(|s| s.started >= from && s.started < to)
            .count()
    }
}

/// A bounded load: `concurrency` threads sending GETs on fresh connections
/// until stopped, at most [`Load::MAX_REQUESTS`] requests or
/// [`Load::MAX_DURATION`].
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub const MAX_REQUESTS: usize = 50_000;
    pub const MAX_DURATION: Duration = Duration::from_secs(180);

    pub fn start(addr: SocketAddr, concurrency: usize, path: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let begun = Instant::now();
        let threads = (0..concurrency)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let samples = Arc::clone(&samples);
                let path = path.to_owned();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && begun.elapsed() < Self::MAX_DURATION {
                        let started = Instant::now();
                        let outcome = match http_get(addr, &path) {
                            Ok((200, body)) => Ok(body),
                            Ok((status, body)) => Err(format!("HTTP {status}: {body}")),
                            Err(err) => Err(err.to_string()),
                        };
                        let sample = Sample {
                            started,
                            latency: started.elapsed(),
                            outcome,
                        };
                        let mut all = samples.lock().unwrap();
                        all.push(sample);
                        if all.len() >= Self::MAX_REQUESTS {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            threads,
        }
    }

    pub fn snapshot(&self) -> LoadResult {
        result_of(self.samples.lock().unwrap().clone())
    }

    pub async fn wait_for_requests(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.samples.lock().unwrap().len() < count {
            assert!(
                Instant::now() < deadline,
                "load did not reach {count} requests"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        let threads = self.threads;
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                thread.join().unwrap();
            }
        })
        .await
        .unwrap();
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        result_of(samples)
    }
}

fn result_of(samples: Vec<Sample>) -> LoadResult {
    let failure_samples: Vec<String> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().err().cloned())
        .take(10)
        .collect();
    let failures = samples.iter().filter(|s| s.outcome.is_err()).count();
    LoadResult {
        samples,
        failures,
        failure_samples,
    }
}

/// Polls `check` every 50 ms until true, or panics after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
