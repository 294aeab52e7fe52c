//! A neutral deployment on the test bed, without Terraform: `neutral serve`
//! on its own host (core network, attached to every region's network), and
//! nodes on their regions' hosts, each a `neutral agent` — a full node
//! (private containerd + nginx, blue/green, docs/node.md) when
//! [`Options::full_nodes`] says so, else an agent beside busybox httpd as
//! the workload. The test asks DNS from its own process with a DNS client
//! and reads `GET /nodes` and the audit log, as a user would.
//!
//! The configuration repository is a bare Git repository in a folder of the
//! test process, bind-mounted read-only into the control plane's host.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::Value;

use super::{Host, HostSpec, Testbed};
use crate::cluster::{ADMIN_TOKEN, JOIN_TOKEN, Repo};
use crate::{dns, http, workspace_root};

/// The domain every deployment serves.
pub const DOMAIN: &str = "app.example.com";
/// The control plane's API and DNS ports inside its host.
pub const API_PORT: u16 = 7400;
pub const DNS_PORT: u16 = 53;
/// The port nodes serve (and are probed) on.
pub const SERVICE_PORT: u16 = 80;

/// The domain's probe settings.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Probe {
    /// The longest a silent node can stay in the answers: the next probe is
    /// due within one interval, and `fall` failures one interval apart each
    /// take `timeout` to fail.
    pub fn detection_bound(&self) -> Duration {
        self.interval * self.fall + self.timeout
    }
}

/// One region: its nodes and weight, and where it fails over to.
#[derive(Clone, Debug)]
pub struct Region {
    pub name: &'static str,
    pub nodes: usize,
    pub weight: u32,
    pub failover: Option<&'static str>,
}

/// What a deployment starts from.
#[derive(Clone, Debug)]
pub struct Options {
    pub regions: Vec<Region>,
    pub probe: Probe,
    /// The domain's `slow_start` (e.g. `"6s"`).
    pub slow_start: Option<&'static str>,
    /// `--heartbeat-interval` / `--heartbeat-timeout` of `neutral serve`.
    pub heartbeat_interval: &'static str,
    pub heartbeat_timeout: &'static str,
    /// Full nodes (containerd + nginx) rather than agent + busybox httpd.
    pub full_nodes: bool,
    /// `--split-brain-min-nodes` (the guard holds answers when most nodes
    /// fail at once; a test of one region's failure raises it).
    pub split_brain_min_nodes: u32,
    /// Control-plane replicas: 1 is one `neutral serve` on SQLite; more run
    /// that many on one PostgreSQL store (a server of the test process,
    /// reached over the core network), hosts `cp`, `cp2`, `cp3`, ….
    pub replicas: usize,
    /// The domain's `health:` block (e.g. `{ quorum: majority }`), if any.
    pub health: Option<&'static str>,
}

impl Options {
    /// Two regions `jp` (fails over to `sg`) and `sg`, `nodes` each.
    pub fn two_regions(nodes: usize, probe: Probe) -> Options {
        Options {
            regions: vec![
                Region {
                    name: "jp",
                    nodes,
                    weight: 100,
                    failover: Some("sg"),
                },
                Region {
                    name: "sg",
                    nodes,
                    weight: 100,
                    failover: None,
                },
            ],
            probe,
            slow_start: None,
            heartbeat_interval: "500ms",
            heartbeat_timeout: "30s",
            full_nodes: full_nodes_wanted(),
            split_brain_min_nodes: 3,
            replicas: 1,
            health: None,
        }
    }
}

/// Whether nodes should be full nodes: yes unless `NEUTRAL_TESTBED_LITE` is
/// set (full nodes need nested containerd in privileged hosts).
pub fn full_nodes_wanted() -> bool {
    std::env::var_os("NEUTRAL_TESTBED_LITE").is_none()
}

/// A node's host.
#[derive(Clone, Debug)]
pub struct NodeHost {
    pub host: Host,
    pub region: String,
    pub ip: Ipv4Addr,
}

/// A node as `GET /nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub region: String,
    pub address: String,
    pub status: String,
    /// Why it has that status (`status_reason`).
    pub reason: String,
    /// Among replicas: each vantage point's name and whether it sees the
    /// node ready (`vantage_points`).
    pub vantage: Vec<(String, bool)>,
}

/// A control plane and its nodes on a test bed.
#[derive(Debug)]
pub struct Deployment {
    /// The first control plane (the one the agents and [`Deployment::api`]
    /// talk to).
    pub cp: Host,
    /// Every control-plane replica, `cp` first.
    pub replicas: Vec<Host>,
    pub nodes: Vec<NodeHost>,
    pub api: SocketAddr,
    pub dns: SocketAddr,
    pub options: Options,
    pub repo: Repo,
    // Last: the hosts go before the store they use and the folder they mount.
    pub bed: Testbed,
    _store: Option<neutral_store::pg_testing::PgServer>,
    dir: tempfile::TempDir,
}

fn platform_config(options: &Options) -> Vec<(String, String)> {
    let p = &options.probe;
    let probe = format!(
        "probe: {{ http: /healthz, port: {SERVICE_PORT}, interval: {}ms, timeout: {}ms, rise: {}, fall: {} }}",
        p.interval.as_millis(),
        p.timeout.as_millis(),
        p.rise,
        p.fall
    );
    let mut files = Vec::new();
    let mut weights = Vec::new();
    for region in &options.regions {
        let failover = region
            .failover
            .map(|f| format!("failover: [{f}]\n"))
            .unwrap_or_default();
        files.push((
            format!("platform-config/regions/{}.yaml", region.name),
            format!(
                "name: {}\nprovider: edge\nmin_nodes: 1\nmax_nodes: 5\nbase_weight: {}\nstate: up\n{failover}",
                region.name, region.weight
            ),
        ));
        files.push((
            format!("infra/node-pool/{}.tfvars", region.name),
            format!(
                "region        = \"{}\"\ndesired_nodes = {}\n",
                region.name,
                region.nodes.max(1)
            ),
        ));
        weights.push(format!("{}: {}", region.name, region.weight));
    }
    let mut slow_start = options
        .slow_start
        .map(|s| format!("slow_start: {s}\n"))
        .unwrap_or_default();
    if let Some(health) = options.health {
        slow_start.push_str(&format!("health: {health}\n"));
    }
    files.push((
        "platform-config/gtm/app.yaml".to_owned(),
        format!(
            "domain: {DOMAIN}\nzone: example.com\ntype: A\nttl: 1\ndns: embedded\nmin_ready_nodes: 1\n\
             regions: {{ {} }}\nall_down: fail_open\n{slow_start}{probe}\n",
            weights.join(", ")
        ),
    ));
    files
}

impl Deployment {
    /// The control plane and every region's nodes, each on its own host, or
    /// `None` when the test bed cannot be had (the test is skipped).
    pub fn start(test: &str, options: Options) -> Option<Deployment> {
        let regions: Vec<&str> = options.regions.iter().map(|r| r.name).collect();
        let bed = Testbed::new(test, &regions)?;
        let dir = tempfile::tempdir().expect("tempdir");
        let files = platform_config(&options);
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let repo = Repo::create(dir.path(), &refs);
        if options.full_nodes {
            let out = Command::new(workspace_root().join("tests/images/build-test-image.sh"))
                .arg("v1")
                .arg(dir.path().join("web-v1.tar"))
                .output()
                .expect("run build-test-image.sh");
            assert!(
                out.status.success(),
                "build-test-image.sh: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let (store, store_args) = if options.replicas > 1 {
            let core = bed.network("core");
            let server = neutral_store::pg_testing::PgServer::start_also_on(
                core.gateway().into(),
                &core.subnet(),
            )
            .unwrap_or_else(|e| panic!("a PostgreSQL server for the replicas: {e}"));
            let url = server
                .create_database()
                .expect("a database for the replicas")
                .replace("@127.0.0.1:", &format!("@{}:", core.gateway()));
            (Some(server), format!(" --store {url} --lease-ttl 3s"))
        } else {
            (None, String::new())
        };
        let mut replicas = Vec::new();
        for n in 1..=options.replicas.max(1) {
            let name = if n == 1 {
                "cp".to_owned()
            } else {
                format!("cp{n}")
            };
            let serve = format!(
                "exec {} serve --repo /bed/repo.git --data /var/lib/neutral --listen 0.0.0.0:{API_PORT} \
                 --dns-listen 0.0.0.0:{DNS_PORT} --heartbeat-interval {} --heartbeat-timeout {} \
                 --sync-interval 1s --autoscale-interval 1h --split-brain-min-nodes {}{}",
                Testbed::bin("neutral"),
                options.heartbeat_interval,
                options.heartbeat_timeout,
                options.split_brain_min_nodes,
                if store.is_some() {
                    format!("{store_args} --replica-id {name}")
                } else {
                    String::new()
                },
            );
            let mut spec = bed.control_plane_host(&name, vec!["sh".into(), "-c".into(), serve]);
            spec.env = vec![
                ("NEUTRAL_JOIN_TOKEN".into(), JOIN_TOKEN.into()),
                ("NEUTRAL_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
                ("NEUTRAL_LOG".into(), "info,hickory_server=warn".into()),
            ];
            spec.mounts = vec![(dir.path().to_path_buf(), "/bed".into())];
            replicas.push(bed.start(spec));
        }
        let cp = replicas[0].clone();
        let api = SocketAddr::from((cp.ip("core"), API_PORT));
        let dns = SocketAddr::from((cp.ip("core"), DNS_PORT));
        let mut deployment = Deployment {
            cp,
            replicas,
            nodes: Vec::new(),
            api,
            dns,
            options,
            repo,
            bed,
            _store: store,
            dir,
        };
        deployment.wait(
            "the control plane's /healthz",
            Duration::from_secs(60),
            |d| {
                http::request(d.api, "GET", "/healthz", None, None)
                    .ok()
                    .filter(|r| r.status == 200)
            },
        );
        // The configuration must have been accepted.
        deployment.wait("the configuration applied", Duration::from_secs(60), |d| {
            let status = http::request(d.api, "GET", "/status", Some(ADMIN_TOKEN), None)
                .ok()?
                .json();
            let failing = &status["sync"]["failing"];
            assert!(
                failing.is_null(),
                "the control plane rejected the configuration: {failing}"
            );
            status["commit"].as_str().map(|_| ())
        });
        let regions: Vec<(&'static str, usize)> = deployment
            .options
            .regions
            .iter()
            .map(|r| (r.name, r.nodes))
            .collect();
        for (region, nodes) in regions {
            for _ in 0..nodes {
                deployment.add_node(region);
            }
        }
        deployment.publish_records();
        Some(deployment)
    }

    /// Writes the domain's A records, one per node, into the embedded DNS
    /// server through its zone API: what `neutral_gtm_record` does after a
    /// Terraform apply. From then on the server's data plane takes down
    /// nodes out of the answers by itself, without any further write.
    pub fn publish_records(&self) {
        if self.nodes.is_empty() {
            return;
        }
        let admin = |method: &str, path: &str, body: &str| {
            http::request(self.api, method, path, Some(ADMIN_TOKEN), Some(body))
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        };
        let zone = admin(
            "POST",
            "/dns/zones",
            r#"{"name": "example.com.", "kind": "Native", "nameservers": ["ns1.example.com."]}"#,
        );
        assert!(zone.status == 201 || zone.status == 409, "{}", zone.body);
        let records: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| serde_json::json!({ "content": n.ip.to_string(), "disabled": false, "weight": 100 }))
            .collect();
        let patch = serde_json::json!({ "rrsets": [{
            "name": format!("{DOMAIN}."), "type": "A", "ttl": 1, "changetype": "REPLACE",
            "records": records,
            "comments": [{ "content": "managed by neutral", "account": "neutral" }],
        }]});
        let response = admin("PATCH", "/dns/zones/example.com.", &patch.to_string());
        assert_eq!(response.status, 204, "{}", response.body);
    }

    /// Starts one more node in `region` on a host of its own.
    pub fn add_node(&mut self, region: &str) -> NodeHost {
        let ip = self.bed.next_addr(region);
        let number = self.nodes.iter().filter(|n| n.region == region).count() + 1;
        let name = format!("{region}-{number}");
        let cp = self.cp.ip(region);
        let mut command: Vec<String> = [
            Testbed::bin("neutral").as_str(),
            "agent",
            "--control-plane",
            &format!("http://{cp}:{API_PORT}"),
            "--region",
            region,
            "--ip",
            &ip.to_string(),
            "--hostname",
            &name,
            "--state-file",
            "/root/agent.json",
            "--backoff-min",
            "100ms",
            "--backoff-max",
            "1s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // The other replicas, which the agent moves to when its own fails.
        for replica in self.replicas.iter().skip(1) {
            command.push("--control-plane-replica".into());
            command.push(format!("http://{}:{API_PORT}", replica.ip(region)));
        }
        let mut spec = HostSpec {
            name: name.clone(),
            networks: vec![(region.to_owned(), ip)],
            env: vec![("NEUTRAL_JOIN_TOKEN".into(), JOIN_TOKEN.into())],
            mounts: vec![(self.dir.path().to_path_buf(), "/bed".into())],
            ..HostSpec::default()
        };
        if self.options.full_nodes {
            // Nested containerd (see testbed::NESTED_CONTAINERS), its state
            // on a tmpfs (the native snapshotter copies layers; nothing on
            // Docker's fuse-overlayfs). The namespace is distinct per node
            // and test bed, as docs/node.md asks.
            spec.nested_containers = true;
            // /run is a tmpfs as on a real machine: a restart clears runc's
            // state there along with containerd's on the other tmpfs.
            spec.tmpfs = vec![
                "/var/lib/neutral:exec,mode=0755".into(),
                "/run:exec,mode=0755".into(),
            ];
            let ns = format!("{}{name}", self.bed.prefix);
            let listen = format!("{ip}:{SERVICE_PORT}");
            command.extend(
                [
                    "--runtime",
                    "containerd",
                    "--nginx",
                    "--containerd-private",
                    "--node-dir",
                    "/var/lib/neutral/node",
                    "--containerd-namespace",
                    &ns,
                    "--listen",
                    &listen,
                    "--image",
                    "neutral.test/web:v1",
                    "--import",
                    "/bed/web-v1.tar",
                ]
                .iter()
                .map(|s| (*s).to_owned()),
            );
        } else {
            // The workload: busybox httpd serving /healthz on the node's
            // address (the image's entrypoint starts it), beside the agent.
            spec.env
                .push(("NEUTRAL_HOST_HTTPD".into(), format!("{ip}:{SERVICE_PORT}")));
        }
        spec.command = command;
        let host = self.bed.start(spec);
        let node = NodeHost {
            host,
            region: region.to_owned(),
            ip,
        };
        self.nodes.push(node.clone());
        node
    }

    /// The nodes of `region`.
    pub fn region_nodes(&self, region: &str) -> Vec<NodeHost> {
        self.nodes
            .iter()
            .filter(|n| n.region == region)
            .cloned()
            .collect()
    }

    /// `GET /nodes` of the first control plane.
    pub fn node_views(&self) -> Vec<NodeView> {
        self.node_views_at(self.api)
    }

    /// The API address of control-plane `host` (on the core network).
    pub fn api_of(&self, host: &Host) -> SocketAddr {
        SocketAddr::from((host.ip("core"), API_PORT))
    }

    /// `GET /nodes` of the control plane at `api`.
    pub fn node_views_at(&self, api: SocketAddr) -> Vec<NodeView> {
        let Ok(response) = http::request(api, "GET", "/nodes", Some(ADMIN_TOKEN), None) else {
            return Vec::new();
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        serde_json::from_str::<Value>(&response.body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|n| NodeView {
                id: text(&n["id"]),
                region: text(&n["region"]),
                address: text(&n["address"]),
                status: text(&n["status"]),
                reason: text(&n["status_reason"]),
                vantage: n["vantage_points"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| (text(&v["replica"]), v["ready"].as_bool().unwrap_or(false)))
                    .collect(),
            })
            .collect()
    }

    /// The node registered from `ip`.
    pub fn view_of(&self, ip: Ipv4Addr) -> Option<NodeView> {
        let address = ip.to_string();
        self.node_views().into_iter().find(|n| n.address == address)
    }

    /// Waits until every node is registered and up; full nodes must also
    /// serve the workload (the test image's `/version`, `v1`) through their
    /// nginx on the node's address.
    pub fn wait_all_up(&self, timeout: Duration) {
        let want = self.nodes.len();
        self.wait(&format!("{want} nodes up"), timeout, |d| {
            let up = d.node_views().iter().filter(|n| n.status == "up").count();
            (up == want).then_some(())
        });
        if self.options.full_nodes {
            for node in &self.nodes {
                let addr = SocketAddr::from((node.ip, SERVICE_PORT));
                let response = http::request(addr, "GET", "/version", None, None)
                    .unwrap_or_else(|e| panic!("GET http://{addr}/version: {e}"));
                assert_eq!(
                    (response.status, response.body.trim()),
                    (200, "v1"),
                    "the workload of full node {}",
                    node.host.name
                );
            }
        }
    }

    /// The addresses `samples` DNS queries of the domain answered.
    pub fn answers(&self, samples: usize) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for _ in 0..samples {
            if let Ok(answer) = dns::udp(self.dns, &format!("{DOMAIN}."), RecordType::A) {
                seen.extend(answer.addresses());
            }
        }
        seen
    }

    /// The domain's effective weight per region (`GET /domains/<domain>`).
    pub fn region_weights(&self) -> std::collections::BTreeMap<String, u64> {
        let path = format!("/domains/{DOMAIN}");
        let Ok(response) = http::request(self.api, "GET", &path, Some(ADMIN_TOKEN), None) else {
            return std::collections::BTreeMap::new();
        };
        let doc: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
        doc["regions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| Some((r["region"].as_str()?.to_owned(), r["effective"].as_u64()?)))
            .collect()
    }

    /// `GET /audit?kind=node.status` for node `id`: `(status, detail)` per
    /// change, oldest first.
    pub fn status_changes(&self, id: &str) -> Vec<String> {
        let path = format!("/audit?kind=node.status&subject={id}&limit=1000");
        let Ok(response) = http::request(self.api, "GET", &path, Some(ADMIN_TOKEN), None) else {
            return Vec::new();
        };
        let doc: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
        let entries = doc
            .get("entries")
            .and_then(Value::as_array)
            .or_else(|| doc.as_array())
            .cloned()
            .unwrap_or_default();
        entries.iter().map(Value::to_string).collect()
    }

    /// Polls `check` every 50 ms until it answers, or fails after `timeout`
    /// with what the deployment looked like.
    #[track_caller]
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Deployment) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.diagnosis()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What to read when a wait fails: nodes, and the hosts' logs.
    pub fn diagnosis(&self) -> String {
        let mut out = format!("nodes: {:#?}\n", self.node_views());
        for cp in &self.replicas {
            out.push_str(&format!(
                "--- control plane {} log (tail)\n{}\n",
                cp.name,
                tail(&self.bed.logs(cp), 40)
            ));
        }
        for node in &self.nodes {
            out.push_str(&format!(
                "--- {} log (tail)\n{}\n",
                node.host.name,
                tail(&self.bed.logs(&node.host), 15)
            ));
        }
        out
    }

    /// The folder mounted at `/bed` in the hosts.
    pub fn shared_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
