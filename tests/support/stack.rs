//! The whole deployment of DESIGN.md's five flows, from real processes on
//! loopback: a bare Git repository with neutral's hooks installed holding
//! the platform config, the repository's own Terraform roots and modules;
//! `neutral serve` with its scheduler running real Terraform and the real
//! provider, whose local launcher starts `neutral agent`s; a node service on
//! every address the launcher may hand out (the control plane probes it);
//! optionally PowerDNS with a zone for a second domain.
//!
//! The same deployment also runs across hosts ([`StackOptions::hosts`],
//! `stack/hosts.rs`): `neutral serve` on its own host of the multi-host test
//! bed, each node a host of its region's network that the provider's
//! `docker` launcher creates, PowerDNS on a host of its own; node death is
//! `docker kill` or `docker pause`, region failure a network cut.
//!
//! A flow drives only public surfaces through it (`git push`, the agents'
//! metrics files, killing processes or hosts, cutting networks) and looks
//! at what a user would: DNS answers, `git log` of the bare repository,
//! `GET /runs`, `GET /nodes`. Dropping it stops the daemon, every agent the
//! provider started and every service or host; every wait is bounded.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::cluster::{ADMIN_TOKEN, Daemon, Repo, Service, free_port};
use crate::services::{PDNS_API_KEY, PowerDns, terraform_or_skip};
use crate::testbed::{Host, Testbed};
use crate::{bin, dns, http, workspace_root};

mod hosts;

/// The domain served by the embedded DNS server.
pub const EMBEDDED_DOMAIN: &str = "app.example.com";
/// The domain served by PowerDNS (when the stack has it).
pub const POWERDNS_DOMAIN: &str = "www.example.org";
/// Records' TTL and the pools' drain grace, in seconds.
pub const TTL_SECS: u64 = 2;
pub const DRAIN_GRACE_SECS: u64 = 1;
/// How long any one step of a flow may take.
pub const STEP: Duration = Duration::from_secs(120);

/// What a flow starts from.
#[derive(Clone, Copy, Debug)]
pub struct StackOptions {
    /// A unique number per test (a loopback /24 of its own: 127.0.N.0).
    pub net: u8,
    /// `desired_nodes` of jp in the first commit (sg has 1).
    pub jp_nodes: u32,
    /// Also declare a domain served by PowerDNS.
    pub powerdns: bool,
    /// Across hosts of the test bed, nodes dying as this says; `None`:
    /// processes on loopback.
    pub hosts: Option<Death>,
}

/// How a node's machine dies in a flow across hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    /// `docker kill`: the host is gone at once.
    Kill,
    /// `docker pause`: the host goes silent (no reset); only probes and
    /// missing heartbeats tell.
    Freeze,
}

/// A node as `GET /nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub region: String,
    pub address: String,
    pub status: String,
    pub slot: String,
}

#[derive(Debug)]
pub struct Stack {
    pub started: Instant,
    pub repo: Repo,
    /// The control plane's API and embedded DNS server.
    api: SocketAddr,
    dns: SocketAddr,
    /// PowerDNS' API URL and DNS address, when the stack has it.
    powerdns: Option<(String, SocketAddr)>,
    ground: Ground,
    cpu: RefCell<BTreeMap<String, f64>>,
    nodes_dir: PathBuf,
    // Last: the folder outlives everything that writes into it.
    dir: tempfile::TempDir,
}

/// Where the stack runs.
#[derive(Debug)]
enum Ground {
    /// Processes of this machine on loopback.
    Loopback {
        daemon: Daemon,
        pdns: Option<PowerDns>,
        services: RefCell<BTreeMap<String, Service>>,
    },
    /// Hosts of the multi-host test bed.
    Hosts {
        cp: Host,
        death: Death,
        // Last: the hosts go before the folder they mount.
        bed: Testbed,
    },
}

/// `first-last` addresses of a region's nodes in the stack's /24.
fn range(net: u8, region: &str) -> (String, Vec<String>) {
    let base = if region == "jp" { 10 } else { 20 };
    let all: Vec<String> = (base..base + 10)
        .map(|i| format!("127.0.{net}.{i}"))
        .collect();
    (format!("{}-{}", all[0], all[9]), all)
}

fn platform_config(probe_port: u16, options: StackOptions) -> Vec<(String, String)> {
    let probe = format!(
        "probe: {{ http: /healthz, port: {probe_port}, interval: 300ms, timeout: 250ms, rise: 2, fall: 2 }}"
    );
    let mut files = vec![
        (
            "platform-config/regions/jp.yaml".to_owned(),
            "name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 100\nstate: up\nfailover: [sg]\n".to_owned(),
        ),
        (
            "platform-config/regions/sg.yaml".to_owned(),
            "name: sg\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 50\nstate: up\n".to_owned(),
        ),
        (
            "platform-config/gtm/app.yaml".to_owned(),
            format!(
                "domain: {EMBEDDED_DOMAIN}\nzone: example.com\ntype: A\nttl: {TTL_SECS}\ndns: embedded\n\
                 min_ready_nodes: 1\nregions: {{ jp: 100, sg: 50 }}\nall_down: fail_open\n{probe}\n"
            ),
        ),
        (
            "platform-config/autoscale/jp.yaml".to_owned(),
            "region: jp\nscale_up:   { cpu_above: 0.75, for: 2s, step: 1 }\nscale_down: { cpu_below: 0.30, for: 3s, step: 1 }\ncooldown: 2s\nfailover_capacity: false\n".to_owned(),
        ),
        (
            "platform-config/autoscale/sg.yaml".to_owned(),
            "region: sg\nscale_up:   { cpu_above: 0.75, for: 2s, step: 1 }\nscale_down: { cpu_below: 0.30, for: 3s, step: 1 }\ncooldown: 2s\nfailover_capacity: true\n".to_owned(),
        ),
        (
            "infra/node-pool/jp.tfvars".to_owned(),
            format!(
                "# jp's node pool: people and the autoscaler edit it.\nregion        = \"jp\"\ndesired_nodes = {}\n",
                options.jp_nodes
            ),
        ),
        (
            "infra/node-pool/sg.tfvars".to_owned(),
            "region        = \"sg\"\ndesired_nodes = 1\n".to_owned(),
        ),
        (
            ".gitignore".to_owned(),
            ".terraform/\n.terraform.lock.hcl\n*.tfstate\n*.tfstate.backup\n".to_owned(),
        ),
    ];
    if options.powerdns {
        files.push((
            "platform-config/gtm/www.yaml".to_owned(),
            format!(
                "domain: {POWERDNS_DOMAIN}\nzone: example.org\ntype: A\nttl: {TTL_SECS}\ndns: powerdns\n\
                 min_ready_nodes: 1\nregions: {{ jp: 100, sg: 50 }}\nall_down: fail_open\n{probe}\n"
            ),
        ));
    }
    files
}

/// The repository's Terraform roots and modules, as `examples/minimal/assemble`
/// puts them in a configuration repository.
fn terraform_files() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in [
        "infra/gtm",
        "infra/node-pool",
        "modules/gtm",
        "modules/region",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).expect("list a Terraform folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "tf") {
                let name = path.file_name().expect("name").to_string_lossy();
                let text = std::fs::read_to_string(&path).expect("read a .tf file");
                files.push((format!("{dir}/{name}"), text));
            }
        }
    }
    files
}

/// Writes `<dir>/terraform-wrapper`: it saves its environment in
/// `<dir>/terraform-env/<pid>` and execs `terraform` (an absolute path:
/// [`crate::services::terraform_bin`]).
fn record_environments(dir: &Path, terraform: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let envs = dir.join("terraform-env");
    std::fs::create_dir_all(&envs).expect("terraform-env folder");
    let wrapper = dir.join("terraform-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n/usr/bin/env > '{}/'$$\nexec '{}' \"$@\"\n",
            envs.display(),
            terraform.display()
        ),
    )
    .expect("write the terraform wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the terraform wrapper");
    wrapper
}

/// The operator's flags for every agent the provider starts: the metrics
/// file the flows write CPU into, and quick reconnects.
fn agent_args() -> Value {
    serde_json::json!([
        "--metrics-file",
        "{slot_dir}/metrics.prom",
        "--backoff-min",
        "100ms",
        "--backoff-max",
        "1s"
    ])
}

/// Installs neutral's hooks in the stack's bare repository: they ask the
/// control plane at `api` for live health (what-if checks) and tell its
/// scheduler about pushes.
fn install_hooks(repo: &Repo, api: SocketAddr, token_file: &Path) {
    let out = Command::new(bin("neutral"))
        .args(["hooks", "install", "--repo"])
        .arg(&repo.bare)
        .arg("--control-plane")
        .arg(format!("http://{api}"))
        .arg("--token-file")
        .arg(token_file)
        .output()
        .expect("run neutral hooks install");
    assert!(
        out.status.success(),
        "neutral hooks install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `git` in `dir` as a person; its standard output, trimmed.
fn git_out(dir: &Path, args: &[&str]) -> String {
    git_raw(dir, args).trim().to_owned()
}

/// `git` in `dir` as a person; its standard output as it is.
fn git_raw(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Platform Person",
            "-c",
            "user.email=person@example.com",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `pid` is a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Pids of live processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if pid != me && String::from_utf8_lossy(&cmdline).contains(needle) && alive(pid) {
            found.push(pid);
        }
    }
    found
}

impl Stack {
    /// Everything up, or `None` (with a note) when this machine has no
    /// Terraform.
    pub fn start(options: StackOptions) -> Option<Stack> {
        if let Some(death) = options.hosts {
            return hosts::start(options, death);
        }
        let terraform = terraform_or_skip("the demo stack")?;
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let probe_port = free_port();
        let mut services = BTreeMap::new();
        let mut ranges = serde_json::Map::new();
        for region in ["jp", "sg"] {
            let (span, addresses) = range(options.net, region);
            ranges.insert(region.to_owned(), Value::String(span));
            for address in addresses {
                let service = Service::start(&address, probe_port);
                services.insert(address, service);
            }
        }

        let pdns = options.powerdns.then(|| {
            let pdns = PowerDns::start(&dir.path().join("pdns"));
            let (status, body) = pdns.request(
                "POST",
                "/api/v1/servers/localhost/zones",
                Some(
                    r#"{"name":"example.org.","kind":"Native","nameservers":["ns1.example.org."]}"#,
                ),
            );
            assert_eq!(status, 201, "create zone example.org: {body}");
            pdns
        });

        let mut files = platform_config(probe_port, options);
        files.extend(terraform_files());
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let repo = Repo::create(dir.path(), &refs);

        let token_file = dir.path().join("admin.token");
        std::fs::write(&token_file, ADMIN_TOKEN).expect("token file");
        let agent_args = agent_args().to_string();
        let ranges = Value::Object(ranges).to_string();
        // Terraform through a wrapper that records the environment of every
        // command the scheduler runs (`Stack::terraform_environments`).
        let terraform = record_environments(dir.path(), &terraform);
        let terraform = terraform.display().to_string();
        let drain_grace = format!("{DRAIN_GRACE_SECS}s");
        let mut env = vec![
            ("TERRAFORM_BIN", terraform.as_str()),
            ("TF_VAR_agent_args", agent_args.as_str()),
            ("TF_VAR_address_ranges", ranges.as_str()),
            ("TF_VAR_drain_grace", drain_grace.as_str()),
        ];
        let pdns_url = pdns.as_ref().map(|p| p.api.clone());
        if let Some(url) = &pdns_url {
            env.push(("TF_VAR_powerdns_url", url.as_str()));
            env.push(("PDNS_API_KEY", PDNS_API_KEY));
        }
        let daemon = Daemon::start_with_env(
            &repo.bare,
            &dir.path().join("data"),
            &[
                "--run-terraform",
                "--heartbeat-interval",
                "300ms",
                "--heartbeat-timeout",
                "1500ms",
                "--sync-interval",
                "2s",
                "--autoscale-interval",
                "500ms",
                "--drift-interval",
                "1h",
            ],
            &env,
        );
        install_hooks(&repo, daemon.api, &token_file);
        let nodes_dir = dir.path().join("data/nodes");
        let stack = Stack {
            started,
            repo,
            api: daemon.api,
            dns: daemon.dns,
            powerdns: pdns.as_ref().map(|p| {
                (
                    p.api.clone(),
                    SocketAddr::from(([127, 0, 0, 1], p.dns_port)),
                )
            }),
            ground: Ground::Loopback {
                daemon,
                pdns,
                services: RefCell::new(services),
            },
            cpu: initial_cpu(),
            nodes_dir,
            dir,
        };
        Some(stack)
    }

    /// The daemon of a stack on loopback.
    #[track_caller]
    pub fn daemon(&self) -> &Daemon {
        match &self.ground {
            Ground::Loopback { daemon, .. } => daemon,
            Ground::Hosts { .. } => panic!("a stack across hosts has no local daemon"),
        }
    }

    /// A read of the API with the admin token.
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> http::Response {
        http::request(self.api, method, path, Some(ADMIN_TOKEN), body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path` as JSON (admin token).
    pub fn get(&self, path: &str) -> Value {
        self.admin("GET", path, None).json()
    }

    /// The node with `id` from `GET /nodes`.
    pub fn node(&self, id: &str) -> Option<Value> {
        let nodes = self.get("/nodes");
        nodes.as_array()?.iter().find(|n| n["id"] == id).cloned()
    }

    /// `GET /nodes`, as plain values.
    pub fn nodes(&self) -> Vec<Node> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let nodes: Vec<Node> = self
            .get("/nodes")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|n| Node {
                id: text(&n["id"]),
                region: text(&n["region"]),
                address: text(&n["address"]),
                status: text(&n["status"]),
                slot: text(&n["hostname"]),
            })
            .collect();
        nodes
    }

    /// The live slot folders of `region` (an agent pid file in each, or
    /// the name of its host's container).
    fn slot_dirs(&self, region: &str) -> Vec<PathBuf> {
        self.slot_folders(region)
            .into_iter()
            .filter(|p| p.join("agent.pid").exists() || p.join("container").exists())
            .collect()
    }

    /// Every folder of `region`'s slots, its agent or container marked or
    /// not yet.
    fn slot_folders(&self, region: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.nodes_dir.join(region))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes each region's CPU into its slots' metrics files: every slot
    /// folder, also one whose agent or container is not marked yet (an
    /// agent without the file reports the machine's own CPU, which under a
    /// busy test run held above the scale-out threshold for 2 s: a
    /// scale-out "cpu 1" on the test bed).
    fn feed_metrics(&self, overwrite: bool) {
        for (region, cpu) in self.cpu.borrow().iter() {
            for slot in self.slot_folders(region) {
                let file = slot.join("metrics.prom");
                if overwrite || !file.exists() {
                    // Whole or not at all: an agent reading a half-written
                    // file reports the machine's own CPU instead (seen: a
                    // scale-out "cpu 0.95" under a busy test run).
                    let staging = slot.join(".metrics.prom.tmp");
                    let _ = std::fs::write(
                        &staging,
                        format!(
                            "neutral_node_cpu_ratio {cpu}\nneutral_node_rtt_seconds 0.004\nneutral_node_error_ratio 0\n"
                        ),
                    )
                    .and_then(|()| std::fs::rename(&staging, &file));
                }
            }
        }
    }

    /// Every node of `region` reports `cpu` from now on (new ones too).
    pub fn set_cpu(&self, region: &str, cpu: f64) {
        self.cpu.borrow_mut().insert(region.to_owned(), cpu);
        self.feed_metrics(true);
    }

    /// Polls `check` every 100 ms for up to [`STEP`], giving new nodes
    /// their metrics files meanwhile; on timeout, fails naming `what`, what
    /// `check` last said, and the stack's state.
    fn wait_with<T>(&self, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
        let start = Instant::now();
        loop {
            let last = match check() {
                Ok(value) => return value,
                Err(last) => last,
            };
            self.feed_metrics(false);
            assert!(
                start.elapsed() < STEP,
                "timed out after {STEP:?} waiting for {what} {last}\n{}",
                self.diagnosis()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `check` (see [`Stack::wait_with`]) until it returns `Some`.
    pub fn wait<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        self.wait_with(what, || check().ok_or_else(String::new))
    }

    /// Waits for `check` over the nodes.
    pub fn wait_nodes<T>(&self, what: &str, check: impl Fn(&[Node]) -> Option<T>) -> T {
        self.wait(what, || check(&self.nodes()))
    }

    /// At least `count` up nodes of `region`, returned.
    pub fn wait_up(&self, region: &str, count: usize) -> Vec<Node> {
        self.wait_nodes(&format!("{count} up node(s) in {region}"), |nodes| {
            let up: Vec<Node> = nodes
                .iter()
                .filter(|n| n.region == region && n.status == "up")
                .cloned()
                .collect();
            (up.len() >= count).then_some(up)
        })
    }

    /// The addresses `samples` A queries of `domain` at `server` answered.
    pub fn answers(server: SocketAddr, domain: &str, samples: usize) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for _ in 0..samples {
            if let Ok(answer) = dns::udp(server, &format!("{domain}."), RecordType::A) {
                seen.extend(answer.addresses());
            }
        }
        seen
    }

    /// The embedded DNS server's address.
    pub fn embedded_dns(&self) -> SocketAddr {
        self.dns
    }

    /// PowerDNS' DNS address (the stack must have it).
    #[track_caller]
    pub fn powerdns_dns(&self) -> SocketAddr {
        self.powerdns.as_ref().expect("a stack with PowerDNS").1
    }

    /// A request to PowerDNS' API (the stack must have it).
    #[track_caller]
    pub fn powerdns_request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let api = &self.powerdns.as_ref().expect("a stack with PowerDNS").0;
        crate::services::http(
            method,
            &format!("{api}{path}"),
            &[("X-API-Key", PDNS_API_KEY)],
            body,
        )
    }

    /// PowerDNS' zone `zone` (without the final dot) as JSON.
    pub fn powerdns_zone(&self, zone: &str) -> Value {
        let (status, body) = self.powerdns_request(
            "GET",
            &format!("/api/v1/servers/localhost/zones/{zone}."),
            None,
        );
        assert_eq!(status, 200, "GET zone: {body}");
        serde_json::from_str(&body).expect("PowerDNS' zone is JSON")
    }

    /// Waits until 40 queries of `domain` at `server` answer a set for which
    /// `check` holds; returns it and when it was seen.
    pub fn wait_answers(
        &self,
        what: &str,
        server: SocketAddr,
        domain: &str,
        check: impl Fn(&BTreeSet<String>) -> bool,
    ) -> (BTreeSet<String>, Instant) {
        self.wait_with(&format!("DNS: {what}"), || {
            let seen = Stack::answers(server, domain, 40);
            if check(&seen) {
                Ok((seen, Instant::now()))
            } else {
                Err(format!("(last answers {seen:?})"))
            }
        })
    }

    /// The environment of every Terraform command the scheduler ran so
    /// far, one `NAME=value` per line each.
    pub fn terraform_environments(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("terraform-env")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }

    /// `GET /runs` (newest first).
    pub fn runs(&self) -> Vec<Value> {
        self.get("/runs?limit=200")["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits for a finished run for which `pick` holds.
    pub fn wait_run(&self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        self.wait(what, || {
            self.runs()
                .into_iter()
                .find(|r| pick(r) && matches!(r["status"].as_str(), Some("succeeded" | "failed")))
        })
    }

    /// Runs (id, root, workspace) whose log shows a plan gone stale before
    /// its apply ("Provider produced inconsistent final plan").
    pub fn stale_plans(&self) -> Vec<(i64, String, String)> {
        self.runs()
            .iter()
            .filter(|r| matches!(r["status"].as_str(), Some("succeeded" | "failed")))
            .filter_map(|r| {
                let id = r["id"].as_i64()?;
                let detail = self.get(&format!("/runs/{id}"));
                detail["log"]
                    .as_str()?
                    .contains("inconsistent final plan")
                    .then(|| (id, r["root"].to_string(), r["workspace"].to_string()))
            })
            .collect()
    }

    /// The commit `sha`'s version of `path` in the bare repository.
    pub fn show(&self, sha: &str, path: &str) -> String {
        git_raw(&self.repo.bare, &["show", &format!("{sha}:{path}")])
    }

    /// `git log` subjects of the bare repository's main, newest first.
    pub fn commits(&self) -> Vec<(String, String, String)> {
        git_out(
            &self.repo.bare,
            &["log", "--format=%H%x09%an%x09%s", "main"],
        )
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
            ))
        })
        .collect()
    }

    /// Waits for a commit whose subject starts with `prefix`; returns
    /// `(sha, author, subject)`.
    pub fn wait_commit(&self, prefix: &str) -> (String, String, String) {
        self.wait(&format!("a commit `{prefix}…`"), || {
            self.commits()
                .into_iter()
                .find(|(_, _, s)| s.starts_with(prefix))
        })
    }

    /// A person edits `path` in their clone (after pulling) and pushes
    /// through the hooks; returns the new commit and what the hooks said.
    pub fn push_edit(
        &self,
        path: &str,
        edit: impl Fn(&str) -> String,
        message: &str,
    ) -> (String, String) {
        let work = &self.repo.work;
        git_out(work, &["pull", "-q", "--rebase", "origin", "main"]);
        let file = work.join(path);
        let text = std::fs::read_to_string(&file).expect("read the file to edit");
        std::fs::write(&file, edit(&text)).expect("write the edit");
        git_out(work, &["commit", "-q", "-am", message]);
        let out = Command::new("git")
            .arg("-C")
            .arg(work)
            .args(["push", "origin", "main"])
            .output()
            .expect("git push");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "git push was rejected:\n{said}");
        (git_out(work, &["rev-parse", "HEAD"]), said)
    }

    /// The slot folder whose agent state names node `id`.
    fn slot_of(&self, id: &str) -> Option<PathBuf> {
        let needle = format!("\"{id}\"");
        ["jp", "sg"]
            .iter()
            .flat_map(|region| self.slot_dirs(region))
            .find(|slot| {
                std::fs::read_to_string(slot.join("agent.json"))
                    .unwrap_or_default()
                    .contains(&needle)
            })
    }

    /// The pid of node `id`'s agent (a stack on loopback).
    pub fn agent_pid(&self, id: &str) -> Option<u32> {
        std::fs::read_to_string(self.slot_of(id)?.join("agent.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The container of node `id`'s host (a stack across hosts).
    fn container_of(&self, id: &str) -> Option<String> {
        let name = std::fs::read_to_string(self.slot_of(id)?.join("container")).ok()?;
        Some(name.trim().to_owned()).filter(|n| !n.is_empty())
    }

    /// Whether node `id`'s machine runs: its agent process, or its host's
    /// container (a frozen one counts: it is still there).
    pub fn node_running(&self, id: &str) -> bool {
        match &self.ground {
            Ground::Loopback { .. } => self.agent_pid(id).is_some_and(alive),
            Ground::Hosts { .. } => self.container_of(id).is_some_and(|c| {
                crate::testbed::docker(&["inspect", "-f", "{{.State.Running}}", &c])
                    .stdout
                    .trim()
                    == "true"
            }),
        }
    }

    /// Node `node`'s machine dies: on loopback its agent (SIGKILL to its
    /// process group) and the service on its address; across hosts its
    /// host, killed or frozen as the stack's [`Death`] says.
    pub fn kill_node(&self, node: &Node) {
        match &self.ground {
            Ground::Loopback { services, .. } => {
                let pid = self.agent_pid(&node.id).unwrap_or_else(|| {
                    panic!("no agent pid for node {}\n{}", node.id, self.diagnosis())
                });
                let status = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status()
                    .expect("kill");
                assert!(status.success(), "kill the agent of {}", node.id);
                services.borrow_mut().remove(&node.address);
            }
            Ground::Hosts { death, .. } => {
                let container = self.container_of(&node.id).unwrap_or_else(|| {
                    panic!("no container for node {}\n{}", node.id, self.diagnosis())
                });
                let verb = match death {
                    Death::Kill => "kill",
                    Death::Freeze => "pause",
                };
                crate::testbed::docker_ok(&[verb, &container]);
            }
        }
    }

    /// Region `region` fails as a whole: on loopback people declare it down
    /// (a push of `state: down` through the hooks); across hosts it is cut
    /// off from the control plane (its network disconnected).
    pub fn fail_region(&self, region: &str) {
        match &self.ground {
            Ground::Loopback { .. } => {
                let (_, said) = self.push_edit(
                    &format!("platform-config/regions/{region}.yaml"),
                    |t| t.replace("state: up", "state: down"),
                    &format!("{region}: state: down"),
                );
                assert!(said.contains("neutral"), "the hooks spoke: {said}");
            }
            Ground::Hosts { bed, cp, .. } => bed.cut(cp, region),
        }
    }

    /// Undoes [`Stack::fail_region`].
    pub fn recover_region(&self, region: &str) {
        match &self.ground {
            Ground::Loopback { .. } => {
                self.push_edit(
                    &format!("platform-config/regions/{region}.yaml"),
                    |t| t.replace("state: down", "state: up"),
                    &format!("{region}: state: up"),
                );
            }
            Ground::Hosts { bed, cp, .. } => bed.heal(cp, region),
        }
    }

    /// Whether the stack runs across hosts of the test bed.
    pub fn on_hosts(&self) -> bool {
        matches!(self.ground, Ground::Hosts { .. })
    }

    /// What a region failure is in this stack, for the figures.
    pub fn region_failure(&self) -> &'static str {
        match &self.ground {
            Ground::Loopback { .. } => "push of state: down",
            Ground::Hosts { .. } => "network cut",
        }
    }

    /// Everything worth reading when a wait fails.
    pub fn diagnosis(&self) -> String {
        let runs: Vec<String> = self
            .runs()
            .iter()
            .map(|r| {
                format!(
                    "{} {} [{}] {} {} +{} ~{} -{}",
                    r["id"],
                    r["root"],
                    r["workspace"],
                    r["trigger"],
                    r["status"],
                    r["adds"],
                    r["changes"],
                    r["destroys"]
                )
            })
            .collect();
        let log = match &self.ground {
            Ground::Loopback { daemon, .. } => daemon.log_text(),
            Ground::Hosts { bed, cp, .. } => bed.logs(cp),
        };
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let failed = self
            .runs()
            .into_iter()
            .find(|r| r["status"] == "failed")
            .and_then(|r| r["id"].as_i64())
            .map(|id| {
                let log = self.get(&format!("/runs/{id}"))["log"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let start = log.len().saturating_sub(3000);
                let start = (start..log.len())
                    .find(|i| log.is_char_boundary(*i))
                    .unwrap_or(start);
                format!(
                    "\nthe newest failed run ({id}), its log's end:\n{}",
                    &log[start..]
                )
            })
            .unwrap_or_default();
        format!(
            "nodes: {:#?}\nruns:\n{}\ncommits: {:#?}\nserve log (last lines, newest first):\n{}{failed}",
            self.nodes(),
            runs.join("\n"),
            self.commits(),
            tail.join("\n")
        )
    }

    /// Checks that no run's plan went stale, stops the daemon and every
    /// agent and checks that nothing of the stack keeps running.
    pub fn shut_down(mut self) {
        // Each run pins one published health view for its plan and apply,
        // so moving health never makes a saved plan inconsistent.
        let stale = self.stale_plans();
        assert!(stale.is_empty(), "runs whose plan went stale: {stale:?}");
        self.stop_everything();
        let left = processes_mentioning(&self.dir.path().to_string_lossy());
        assert!(left.is_empty(), "processes left running: {left:?}");
        if let Ground::Hosts { bed, .. } = &self.ground {
            let left = crate::testbed::docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label={}={}", crate::testbed::BED_LABEL, bed.prefix),
            ])
            .stdout;
            assert!(left.trim().is_empty(), "hosts left: {left}");
        }
    }

    fn stop_everything(&mut self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let slots: Vec<PathBuf> = ["jp", "sg"]
            .iter()
            .flat_map(|region| self.slot_dirs(region))
            .collect();
        match &mut self.ground {
            Ground::Loopback {
                daemon,
                pdns,
                services,
            } => {
                daemon.stop();
                for slot in &slots {
                    stop_agent(slot);
                }
                for pid in processes_mentioning(&dir) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                services.borrow_mut().clear();
                pdns.take();
            }
            // The control plane first, so that no run starts another host
            // while the rest go.
            Ground::Hosts { bed, cp, .. } => {
                let _ = crate::testbed::docker(&["kill", &cp.container]);
                bed.tear_down();
            }
        }
    }
}

/// Stops the agent of a local slot (its process group): SIGTERM, SIGKILL
/// after 5 s.
fn stop_agent(slot: &Path) {
    let Some(pid) = std::fs::read_to_string(slot.join("agent.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .filter(|pid| alive(*pid))
    else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Every region's nodes report CPU 0.5 until a flow says otherwise.
fn initial_cpu() -> RefCell<BTreeMap<String, f64>> {
    RefCell::new(BTreeMap::from([
        ("jp".to_owned(), 0.5),
        ("sg".to_owned(), 0.5),
    ]))
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_everything();
    }
}
