//! The demo's world: the repositories, `neutral serve`, the nodes the
//! provider starts, and the watching and narrating the story needs. Every
//! process started here (directly or through Terraform) is stopped by
//! [`World::stop`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use neutral_terraform::Terraform;
use serde_json::Value;

use crate::common::{DOMAIN, DemoArgs, preflight, timeout};
use crate::dns;
use crate::hosts::DockerHosts;

/// A node as `GET /nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    pub address: String,
    pub status: String,
    pub reason: String,
    pub slot: String,
    pub registered_at: String,
}

#[derive(Debug)]
pub struct World {
    start: Instant,
    temp: Option<tempfile::TempDir>,
    keep: bool,
    root: PathBuf,
    origin: PathBuf,
    work: PathBuf,
    data: PathBuf,
    serve: Option<std::process::Child>,
    log: PathBuf,
    api: String,
    dns: SocketAddr,
    client: reqwest::Client,
    admin: String,
    full: bool,
    /// The containerd namespace of slot `s` is this followed by `s`: the
    /// demo's process id keeps two demos on one machine (the test suite runs
    /// two at once) from stopping each other's containers.
    namespace_prefix: String,
    /// With `--hosts`: the networks and containers of the nodes.
    hosts: Option<DockerHosts>,
    neutral: PathBuf,
    cpu: BTreeMap<String, f64>,
    nodes_seen: BTreeMap<String, String>,
    runs_seen: BTreeSet<i64>,
    commits_seen: BTreeSet<String>,
    query_id: u16,
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args([
        "-c",
        "user.name=Demo Operator",
        "-c",
        "user.email=operator@example.test",
    ]);
    cmd
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("demo-{nanos:x}-{:x}", std::process::id())
}

/// Sends `signal` to the process group led by `pid`.
fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stderr(Stdio::null())
        .status();
}

fn signal_pid(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Stops whatever a full node left running: its containers (through its own
/// containerd when it still answers, then with `runc` directly, which needs
/// no containerd), the containers' shims, its nginx and its containerd.
fn stop_node_processes(node_dir: &Path, namespace: &str) {
    let socket = node_dir.join("containerd/containerd.sock");
    let names = ["svc-blue", "svc-green"];
    if socket.exists() {
        for name in names {
            for args in [
                vec!["tasks", "kill", "--signal", "SIGKILL", name],
                vec!["tasks", "delete", "--force", name],
                vec!["containers", "delete", name],
            ] {
                let _ = Command::new("timeout")
                    .arg("5")
                    .arg("ctr")
                    .arg("-a")
                    .arg(&socket)
                    .args(["-n", namespace])
                    .args(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    // runc keeps each namespace's containers under /run/containerd/runc/<ns>.
    let runc_root = Path::new("/run/containerd/runc").join(namespace);
    for name in names {
        let _ = Command::new("timeout")
            .arg("5")
            .arg("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["delete", "--force", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir(&runc_root);
    let _ = Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("containerd-shim-runc-v2 -namespace {namespace} "),
        ])
        .status();
    for pid_file in [
        node_dir.join("nginx/logs/nginx.pid"),
        node_dir.join("containerd/containerd.pid"),
    ] {
        if let Some(pid) = read_pid(&pid_file) {
            signal_pid(pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                signal_pid(pid, "KILL");
            }
        }
    }
}

impl World {
    /// The containerd namespace of the full node in slot `slot`.
    fn namespace(&self, slot: &str) -> String {
        format!("{}{slot}", self.namespace_prefix)
    }

    pub async fn start(args: &DemoArgs) -> Result<World> {
        let start = Instant::now();
        let source = std::fs::canonicalize(&args.source)
            .with_context(|| format!("cannot find the source tree {}", args.source.display()))?;
        preflight(&source)?;
        let neutral = std::env::current_exe().context("cannot locate the neutral binary")?;
        let bin_dir = neutral
            .parent()
            .context("the neutral binary has no folder")?
            .to_path_buf();
        if !bin_dir.join("terraform-provider-neutral").is_file() {
            bail!(
                "terraform-provider-neutral is not next to {}: build both with `cargo build --bins`",
                neutral.display()
            );
        }
        let terraform = Terraform::find(None, &[source.join(".build/terraform/bin/terraform")])
            .context("no terraform: scripts/setup installs one (or set TERRAFORM_BIN)")?;
        let full = !args.lite
            && !args.hosts
            && is_root()
            && ["ctr", "containerd", "runc", "nginx"]
                .iter()
                .all(|p| on_path(p))
            && Path::new("/bin/busybox").is_file();

        let (temp, root) = match &args.workdir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                (None, std::fs::canonicalize(dir)?)
            }
            None => {
                let temp = tempfile::Builder::new().prefix("neutral-demo-").tempdir()?;
                let root = temp.path().to_path_buf();
                (Some(temp), root)
            }
        };
        let work = root.join("work");
        let origin = root.join("origin.git");
        let data = root.join("data");
        if work.exists() || origin.exists() || data.exists() {
            bail!("{} is not empty: give a new --workdir", root.display());
        }
        let admin = token();
        let join = token();
        let admin_file = root.join("admin.token");
        std::fs::write(&admin_file, &admin)?;
        let log = root.join("serve.log");
        let mut world = World {
            start,
            temp,
            keep: args.keep,
            root: root.clone(),
            origin: origin.clone(),
            work: work.clone(),
            data: data.clone(),
            serve: None,
            log: log.clone(),
            api: format!("http://{}", args.listen),
            dns: args.dns_listen,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            admin: admin.clone(),
            full,
            namespace_prefix: format!("neutral-demo-{}-", std::process::id()),
            hosts: None,
            neutral: neutral.clone(),
            cpu: BTreeMap::new(),
            nodes_seen: BTreeMap::new(),
            runs_seen: BTreeSet::new(),
            commits_seen: BTreeSet::new(),
            query_id: 1,
        };
        world.say(&format!("work folder {}", root.display()));
        if args.hosts {
            world.hosts = Some(DockerHosts::create(&source, &["local", "backup"])?);
        }
        world.say(&format!(
            "nodes: {}",
            if let Some(hosts) = &world.hosts {
                hosts.describe()
            } else if full {
                "full nodes (containerd + nginx, blue/green), one per loopback address".to_owned()
            } else if args.lite {
                "plain agents (--lite): no workload, heartbeats decide liveness".to_owned()
            } else {
                "plain agents: full nodes need root, containerd, runc, nginx and busybox-static (scripts/setup installs them)".to_owned()
            }
        ));

        // The configuration repository: examples/minimal, with hooks.
        run(
            Command::new(source.join("examples/minimal/assemble")).arg(&work),
            "examples/minimal/assemble",
        )?;
        run(
            Command::new("git")
                .args(["clone", "-q", "--bare"])
                .arg(&work)
                .arg(&origin),
            "git clone --bare",
        )?;
        run(
            git(&work).args(["remote", "add", "origin"]).arg(&origin),
            "git remote add",
        )?;
        run(git(&work).args(["fetch", "-q", "origin"]), "git fetch")?;
        run(
            git(&work).args(["branch", "-q", "--set-upstream-to=origin/main", "main"]),
            "git branch",
        )?;
        run(
            Command::new(&neutral)
                .args(["hooks", "install", "--repo"])
                .arg(&origin)
                .arg("--control-plane")
                .arg(&world.api)
                .arg("--token-file")
                .arg(&admin_file),
            "neutral hooks install",
        )?;
        world.say("configuration repository: examples/minimal in origin.git, pre-receive and post-receive hooks installed");

        let mut agent_args: Vec<String> =
            vec!["--metrics-file".into(), "{slot_dir}/metrics.prom".into()];
        if full {
            let image = root.join("images/web-v1.tar");
            std::fs::create_dir_all(root.join("images"))?;
            run(
                Command::new(source.join("tests/images/build-test-image.sh"))
                    .arg("v1")
                    .arg(&image)
                    .arg("neutral.demo/web:v1"),
                "building the demo image",
            )?;
            for arg in [
                "--runtime",
                "containerd",
                "--nginx",
                "--containerd-private",
                "--node-dir",
                "{slot_dir}/node",
                "--containerd-namespace",
                &format!("{}{{slot}}", world.namespace_prefix),
                "--workload-host",
                "{address}",
                "--image",
                "neutral.demo/web:v1",
                "--drain-grace",
                "2s",
                "--dns-ttl",
                "10s",
            ] {
                agent_args.push(arg.into());
            }
            agent_args.push("--import".into());
            agent_args.push(image.display().to_string());
        }

        let log_file = std::fs::File::create(&log)?;
        // The regions' networks reach the API at this machine's address on
        // each of them.
        let listen = if world.hosts.is_some() {
            SocketAddr::from(([0, 0, 0, 0], args.listen.port()))
        } else {
            args.listen
        };
        let mut serve = Command::new(&neutral);
        serve
            .arg("serve")
            .arg("--repo")
            .arg(&origin)
            .arg("--data")
            .arg(&data)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--dns-listen")
            .arg(args.dns_listen.to_string())
            .args([
                "--run-terraform",
                "--heartbeat-interval",
                "1s",
                "--heartbeat-timeout",
                "3s",
                "--sync-interval",
                "5s",
                "--autoscale-interval",
                "1s",
                "--drift-interval",
                "1h",
            ])
            .env("NEUTRAL_JOIN_TOKEN", &join)
            .env("NEUTRAL_ADMIN_TOKEN", &admin)
            .env("TERRAFORM_BIN", &terraform.bin)
            .env("TF_VAR_agent_args", serde_json::to_string(&agent_args)?)
            .env(
                "TF_VAR_address_ranges",
                r#"{"local": "127.0.0.50-127.0.0.59", "backup": "127.0.0.60-127.0.0.69"}"#,
            )
            .env("TF_VAR_drain_grace", "2s")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file));
        if let Some(hosts) = &world.hosts {
            // After the loopback ranges above: the last setting wins.
            serve.envs(hosts.serve_env(&bin_dir, args.listen.port()));
        } else if !full {
            serve.arg("--no-probes");
        }
        world.serve = Some(serve.spawn().context("cannot start neutral serve")?);
        let healthy = async {
            for _ in 0..300 {
                if world
                    .client
                    .get(format!("{}/healthz", world.api))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        };
        if !healthy.await {
            world.print_log_tails();
            world.stop().await;
            bail!("neutral serve did not come up on {}", args.listen);
        }
        world.say(&format!(
            "control plane up: API {}, embedded DNS {}, Terraform scheduler on ({})",
            world.api,
            world.dns,
            terraform.bin.display()
        ));
        Ok(world)
    }

    pub fn say(&self, message: &str) {
        println!("[{:>6.1}s] {message}", self.start.elapsed().as_secs_f64());
    }

    pub fn step(&self, title: &str) {
        println!();
        println!("== {title}");
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let response = self
            .client
            .get(format!("{}{path}", self.api))
            .bearer_auth(&self.admin)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        response
            .json()
            .await
            .with_context(|| format!("GET {path}: not JSON"))
    }

    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Ok(self
            .get("/nodes")
            .await?
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|n| NodeInfo {
                id: text(&n["id"]),
                region: text(&n["region"]),
                address: text(&n["address"]),
                status: text(&n["status"]),
                reason: text(&n["status_reason"]),
                slot: text(&n["hostname"]),
                registered_at: text(&n["registered_at"]),
            })
            .collect())
    }

    fn slot_dir(&self, region: &str, slot: &str) -> PathBuf {
        self.data.join("nodes").join(region).join(slot)
    }

    fn write_metrics(&self, region: &str, slot: &str, cpu: f64) {
        let dir = self.slot_dir(region, slot);
        if dir.is_dir() {
            // Whole or not at all: an agent reading a half-written file
            // reports the machine's own CPU instead.
            let staging = dir.join(".metrics.prom.tmp");
            let _ = std::fs::write(
                &staging,
                format!(
                    "# written by neutral demo\nneutral_node_cpu_ratio {cpu}\nneutral_node_rtt_seconds 0.004\nneutral_node_error_ratio 0\n"
                ),
            )
            .and_then(|()| std::fs::rename(&staging, dir.join("metrics.prom")));
        }
    }

    /// Prints what changed since the last look: node statuses, finished
    /// Terraform runs, new commits; gives new nodes their metrics files.
    async fn observe(&mut self) -> Result<Vec<NodeInfo>> {
        let nodes = self.nodes().await?;
        for node in &nodes {
            let key = format!("{}:{}", node.status, node.reason);
            if self.nodes_seen.get(&node.id) != Some(&key) {
                if !self.nodes_seen.contains_key(&node.id) {
                    let cpu = self.cpu.get(&node.region).copied().unwrap_or(0.5);
                    self.write_metrics(&node.region, &node.slot, cpu);
                }
                self.say(&format!(
                    "node {} ({}, slot {}) is {}: {}",
                    node.id, node.address, node.slot, node.status, node.reason
                ));
                self.nodes_seen.insert(node.id.clone(), key);
            }
        }
        let gone: Vec<String> = self
            .nodes_seen
            .keys()
            .filter(|id| !nodes.iter().any(|n| &n.id == *id))
            .cloned()
            .collect();
        for id in gone {
            self.say(&format!("node {id} was removed (Terraform destroyed it)"));
            self.nodes_seen.remove(&id);
        }
        let runs = self.get("/runs?limit=30").await?;
        let mut finished: Vec<&Value> = runs["runs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|r| matches!(r["status"].as_str(), Some("succeeded" | "failed")))
            .collect();
        finished.sort_by_key(|r| r["id"].as_i64());
        for run in finished {
            let Some(id) = run["id"].as_i64() else {
                continue;
            };
            if self.runs_seen.insert(id) {
                self.say(&format!(
                    "terraform {} [{}] ({}): +{} ~{} -{}, {} in {:.1}s",
                    run["root"].as_str().unwrap_or("?"),
                    run["workspace"].as_str().unwrap_or("?"),
                    run["trigger"].as_str().unwrap_or("?"),
                    run["adds"],
                    run["changes"],
                    run["destroys"],
                    run["status"].as_str().unwrap_or("?"),
                    run["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0
                ));
            }
        }
        let log = run(
            git(&self.origin).args(["log", "--reverse", "--format=%h%x09%an%x09%s", "main"]),
            "git log",
        )?;
        for line in log.lines() {
            let mut parts = line.splitn(3, '\t');
            let (Some(sha), Some(author), Some(subject)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if self.commits_seen.insert(sha.to_owned()) && self.commits_seen.len() > 1 {
                self.say(&format!("commit {sha} by {author}: {subject}"));
            }
        }
        Ok(nodes)
    }

    /// Polls until `check` holds (printing what happens meanwhile).
    pub async fn wait_until<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&[NodeInfo]) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            let nodes = self.observe().await?;
            if let Some(value) = check(&nodes) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                return Err(timeout(what, limit));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The ids and addresses of at least `count` ready nodes of `region`,
    /// oldest first.
    pub async fn wait_ready(
        &mut self,
        region: &str,
        count: usize,
        limit: Duration,
    ) -> Result<Vec<(String, String)>> {
        self.wait_until(
            &format!("{count} ready node(s) in {region}"),
            limit,
            |nodes| {
                let mut ready: Vec<&NodeInfo> = nodes
                    .iter()
                    .filter(|n| n.region == region && n.status == "up")
                    .collect();
                ready.sort_by(|a, b| a.registered_at.cmp(&b.registered_at));
                (ready.len() >= count).then(|| {
                    ready
                        .iter()
                        .map(|n| (n.id.clone(), n.address.clone()))
                        .collect()
                })
            },
        )
        .await
    }

    pub async fn wait_status(&mut self, id: &str, status: &str, limit: Duration) -> Result<()> {
        self.wait_until(&format!("node {id} to be {status}"), limit, |nodes| {
            nodes
                .iter()
                .any(|n| n.id == id && n.status == status)
                .then_some(())
        })
        .await
    }

    async fn sample(&mut self, queries: usize) -> Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for _ in 0..queries {
            self.query_id = self.query_id.wrapping_add(1);
            for address in dns::addresses(self.dns, DOMAIN, self.query_id).await? {
                *counts.entry(address).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Waits until the DNS answers satisfy `check` (20 queries per look).
    pub async fn wait_answers(
        &mut self,
        what: &str,
        limit: Duration,
        check: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.observe().await?;
            let answers = self.sample(20).await?;
            if check(&answers) {
                self.say(&format!("DNS: {what}"));
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(timeout(
                    &format!("DNS: {what} (last answers {answers:?})"),
                    limit,
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Prints what `queries` lookups of the domain answered.
    pub async fn dig(&mut self, queries: usize) -> Result<()> {
        let answers = self.sample(queries).await?;
        let nodes = self.nodes().await?;
        let parts: Vec<String> = answers
            .iter()
            .map(|(ip, count)| {
                let who = nodes
                    .iter()
                    .find(|n| &n.address == ip)
                    .map_or_else(String::new, |n| format!(" ({} {})", n.region, n.slot));
                format!("{ip}{who} ×{count}")
            })
            .collect();
        self.say(&format!(
            "dig {} ×{queries} @{} → {}",
            DOMAIN.trim_end_matches('.'),
            self.dns,
            if parts.is_empty() {
                "no answer".to_owned()
            } else {
                parts.join(", ")
            }
        ));
        Ok(())
    }

    /// The first commit on the branch whose subject starts with `prefix`.
    pub async fn wait_commit(&mut self, prefix: &str, limit: Duration) -> Result<String> {
        let origin = self.origin.clone();
        let deadline = Instant::now() + limit;
        loop {
            self.observe().await?;
            let log = run(
                git(&origin).args(["log", "--format=%h %s", "main"]),
                "git log",
            )?;
            if let Some(line) = log.lines().find(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, s)| s.starts_with(prefix))
            }) {
                return Ok(line.to_owned());
            }
            if Instant::now() > deadline {
                return Err(timeout(&format!("a commit `{prefix}…`"), limit));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sets the CPU the region's nodes report (through their metrics files).
    pub fn set_region_cpu(&mut self, region: &str, cpu: f64) -> Result<()> {
        self.cpu.insert(region.to_owned(), cpu);
        let dir = self.data.join("nodes").join(region);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry?;
            if entry.path().join("agent.pid").exists() || entry.path().join("container").exists() {
                self.write_metrics(region, &entry.file_name().to_string_lossy(), cpu);
            }
        }
        Ok(())
    }

    /// Commits what a person changed in the working clone and pushes it;
    /// returns the commit and what the hooks said.
    fn commit_push(&self, message: &str) -> Result<String> {
        run(git(&self.work).args(["add", "-A"]), "git add")?;
        run(
            git(&self.work).args(["commit", "-q", "-m", message]),
            "git commit",
        )?;
        let output = run(git(&self.work).args(["push", "origin", "main"]), "git push")?;
        let sha = run(
            git(&self.work).args(["rev-parse", "--short", "HEAD"]),
            "git rev-parse",
        )?;
        let remote: Vec<&str> = output
            .lines()
            .filter(|l| l.starts_with("remote:"))
            .map(|l| l.trim_start_matches("remote:").trim())
            .filter(|l| !l.is_empty())
            .collect();
        Ok(format!(
            "{} {message} — hooks: {}",
            sha.trim(),
            remote.join(" / ")
        ))
    }

    fn pull(&self) -> Result<()> {
        run(
            git(&self.work).args(["pull", "-q", "--rebase", "origin", "main"]),
            "git pull",
        )?;
        Ok(())
    }

    /// A second region `backup` that takes over when `local` is down, and
    /// timings short enough for a demo.
    pub fn push_demo_config(&self) -> Result<String> {
        self.pull()?;
        let write = |path: &str, text: &str| -> Result<()> {
            let path = self.work.join(path);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write(
            "platform-config/regions/local.yaml",
            "# Region local: this machine, nodes on 127.0.0.50 and up.\nname: local\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 100\nstate: up\nfailover: [backup]\n",
        )?;
        write(
            "platform-config/regions/backup.yaml",
            "# Region backup: takes local's traffic and capacity when local is down.\nname: backup\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 50\nstate: up\nfailover: []\n",
        )?;
        write(
            "platform-config/gtm/app.yaml",
            "domain: app.example.test\nzone: example.test\ntype: A\nttl: 10\ndns: embedded\nmin_ready_nodes: 1\nregions: { local: 100, backup: 25 }\nall_down: fail_open\nprobe: { http: /healthz, port: 80, interval: 1s, timeout: 500ms, rise: 2, fall: 2 }\n",
        )?;
        write(
            "platform-config/autoscale/local.yaml",
            "region: local\nscale_up:   { cpu_above: 0.75, for: 5s, step: 1 }\nscale_down: { cpu_below: 0.30, for: 30s, step: 1 }\ncooldown: 5s\nfailover_capacity: false\n",
        )?;
        write(
            "platform-config/autoscale/backup.yaml",
            "region: backup\nscale_up:   { cpu_above: 0.75, for: 5s, step: 1 }\nscale_down: { cpu_below: 0.30, for: 10s, step: 1 }\ncooldown: 5s\nfailover_capacity: true\n",
        )?;
        write(
            "infra/node-pool/backup.tfvars",
            "# Node pool of region backup.\nregion        = \"backup\"\ndesired_nodes = 1\n",
        )?;
        self.commit_push("regions: add backup as local's failover region; demo timings")
    }

    /// A person declares `region` up or down.
    pub fn push_region_state(&self, region: &str, state: &str) -> Result<String> {
        self.pull()?;
        let path = self
            .work
            .join(format!("platform-config/regions/{region}.yaml"));
        let text = std::fs::read_to_string(&path)?;
        let changed: String = text
            .lines()
            .map(|l| {
                if l.starts_with("state:") {
                    format!("state: {state}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        std::fs::write(&path, changed)?;
        self.commit_push(&format!("{region}: state: {state}"))
    }

    /// Kills everything of one node, as if its machine died.
    pub fn kill_node(&mut self, id: &str) -> Result<()> {
        let needle = format!("\"{id}\"");
        let region_dirs = std::fs::read_dir(self.data.join("nodes"))?;
        for region in region_dirs.flatten() {
            for slot_dir in std::fs::read_dir(region.path())?.flatten() {
                let state =
                    std::fs::read_to_string(slot_dir.path().join("agent.json")).unwrap_or_default();
                if !state.contains(&needle) {
                    continue;
                }
                let name = slot_dir.file_name().to_string_lossy().into_owned();
                if let Some(hosts) = &self.hosts {
                    let container = hosts.kill(&slot_dir.path())?;
                    self.say(&format!("killed node {id}: docker kill {container}"));
                    return Ok(());
                }
                if let Some(pid) = read_pid(&slot_dir.path().join("agent.pid")) {
                    signal_group(pid, "KILL");
                }
                if self.full {
                    stop_node_processes(&slot_dir.path().join("node"), &self.namespace(&name));
                }
                self.say(&format!("killed node {id} (everything of slot {name})"));
                return Ok(());
            }
        }
        bail!("no slot folder holds node {id}")
    }

    pub async fn print_runs(&self) -> Result<()> {
        let out = run(
            Command::new(&self.neutral)
                .args(["runs", "--limit", "100", "--control-plane", &self.api])
                // Reads need a token (the demo is the operator).
                .env("NEUTRAL_ADMIN_TOKEN", &self.admin),
            "neutral runs",
        )?;
        println!();
        println!("neutral runs:");
        print!("{out}");
        Ok(())
    }

    pub fn print_log_tails(&self) {
        if let Ok(text) = std::fs::read_to_string(&self.log) {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {}:", self.log.display());
            for line in lines.iter().skip(lines.len().saturating_sub(30)) {
                eprintln!("{line}");
            }
        }
    }

    /// Stops the control plane and every node, then removes the work folder
    /// (unless --keep).
    pub async fn stop(&mut self) {
        if let Some(mut serve) = self.serve.take() {
            signal_pid(serve.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(15);
            while serve.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = serve.kill();
            let _ = serve.wait();
        }
        let mut stopped = 0;
        if let Ok(regions) = std::fs::read_dir(self.data.join("nodes")) {
            for region in regions.flatten() {
                let Ok(slots) = std::fs::read_dir(region.path()) else {
                    continue;
                };
                for slot in slots.flatten() {
                    let name = slot.file_name().to_string_lossy().into_owned();
                    if let Some(pid) =
                        read_pid(&slot.path().join("agent.pid")).filter(|p| alive(*p))
                    {
                        signal_group(pid, "TERM");
                        // A full node stops its workload and nginx first.
                        let deadline = Instant::now() + Duration::from_secs(30);
                        while alive(pid) && Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        signal_group(pid, "KILL");
                        stopped += 1;
                    }
                    if self.full {
                        stop_node_processes(&slot.path().join("node"), &self.namespace(&name));
                    }
                }
            }
        }
        if let Some(mut hosts) = self.hosts.take() {
            stopped += hosts.remove();
        }
        self.say(&format!("stopped neutral serve and {stopped} node(s)"));
        match self.temp.take() {
            Some(temp) if self.keep => {
                let path = temp.keep();
                self.say(&format!("kept {}", path.display()));
            }
            Some(temp) => drop(temp),
            None => self.say(&format!("files left in {}", self.root.display())),
        }
    }
}
