//! Provisioning on the test bed: fresh Debian 12 machines (`scripts/fresh-host
//! image`: systemd as PID 1, sshd, python3, nothing of neutral's) that this
//! test process configures with `ansible-playbook` over real SSH, as an
//! operator's controller would, with `config/` (roles, playbooks).
//!
//! The controller (this process) owns an SSH key pair it generates, a
//! `known_hosts` file (host keys are accepted on first contact, made by the
//! machine at its first boot), and an HTTP server on the region network's
//! gateway address serving the local apt repository (`scripts/fresh-host
//! repo`: the node's packages, downloaded on this machine, because the test
//! bed's networks cannot reach Debian's mirrors) and the build's `neutral`
//! binary for the download-with-checksum path.
//!
//! Skipped with the reason when Docker or Ansible is missing, failed when
//! `CI` is set.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::testbed::deploy::{Deployment, Options, Probe};
use crate::testbed::{Host, HostSpec, skip};
use crate::{bin, run_with_deadline, workspace_root};

/// How long one `ansible-playbook` run may take (a cold node installs ~70
/// packages from the local repository).
const PLAYBOOK_DEADLINE: Duration = Duration::from_secs(600);

/// Runs `scripts/fresh-host <what>` once per process; its last line.
fn fresh_host(what: &'static str) -> Result<String, String> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    static REPO: OnceLock<Result<String, String>> = OnceLock::new();
    let cell = if what == "image" { &IMAGE } else { &REPO };
    cell.get_or_init(|| {
        let mut cmd = Command::new(workspace_root().join("scripts/fresh-host"));
        cmd.arg(what);
        let out = run_with_deadline(&mut cmd, Duration::from_secs(900));
        eprint!("{}", out.stderr);
        match (out.code, out.stdout.lines().last()) {
            (Some(0), Some(line)) => Ok(line.to_owned()),
            _ => Err(format!(
                "scripts/fresh-host {what} failed: {}",
                out.stderr.trim()
            )),
        }
    })
    .clone()
}

/// Whether `ansible-playbook` runs here; the reason when it does not.
pub fn ansible_available() -> Result<(), String> {
    match Command::new("ansible-playbook")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err(
            "ansible-playbook is not installed (scripts/setup installs Debian's ansible)".into(),
        ),
    }
}

/// One `ansible-playbook` run.
#[derive(Debug)]
pub struct PlaybookRun {
    pub ok: bool,
    pub output: String,
    pub elapsed: Duration,
}

impl PlaybookRun {
    /// `changed=N` of the host's `PLAY RECAP` line.
    pub fn changed(&self, host: &str) -> Option<u32> {
        let line = self
            .output
            .lines()
            .rev()
            .find(|l| l.starts_with(host) && l.contains("changed="))?;
        let rest = line.split("changed=").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    }
}

/// A control plane on the test bed plus the controller that provisions
/// fresh machines in its region `jp`.
#[derive(Debug)]
pub struct Provisioning {
    pub d: Deployment,
    pub machine_image: String,
    dir: tempfile::TempDir,
    key: PathBuf,
    http: Child,
    /// The HTTP server's address (the `jp` network's gateway).
    pub http_addr: SocketAddr,
}

impl Drop for Provisioning {
    fn drop(&mut self) {
        let _ = self.http.kill();
        let _ = self.http.wait();
    }
}

/// The region every provisioning test uses.
pub const REGION: &str = "jp";
/// The first release's image (built by `tests/images/build-test-image.sh`).
pub const IMAGE: &str = "neutral.test/web:v1";

impl Provisioning {
    /// The control plane (no nodes yet), a key pair, and the HTTP server;
    /// `None` when the test is skipped.
    pub fn start(test: &str) -> Option<Provisioning> {
        if let Err(reason) = ansible_available() {
            return skip(&reason);
        }
        if let Err(reason) = crate::testbed::docker_available() {
            return skip(&reason);
        }
        let machine_image = match fresh_host("image") {
            Ok(tag) => tag,
            Err(reason) => return skip(&reason),
        };
        let repo = match fresh_host("repo") {
            Ok(dir) => PathBuf::from(dir),
            Err(reason) => return skip(&reason),
        };
        let probe = Probe {
            interval: Duration::from_millis(1000),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        };
        let mut options = Options::two_regions(0, probe);
        options.regions.truncate(1);
        options.regions[0].failover = None;
        // The first release's image tarball is built into the shared folder.
        options.full_nodes = true;
        let d = Deployment::start(test, options)?;

        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "neutral-e2e", "-f"])
            .arg(&key)
            .output()
            .expect("run ssh-keygen");
        assert!(out.status.success(), "ssh-keygen: {out:?}");

        // What the HTTP server serves: the apt repository and the binary.
        let www = dir.path().join("www");
        std::fs::create_dir_all(www.join("bin")).expect("www");
        std::os::unix::fs::symlink(&repo, www.join("apt")).expect("link the repository");
        std::os::unix::fs::symlink(bin("neutral"), www.join("bin/neutral")).expect("link neutral");
        let gateway = d.bed.network(REGION).gateway();
        let port = free_port(gateway);
        let http = Command::new("python3")
            .args(["-m", "http.server", "--bind", &gateway.to_string()])
            .arg(port.to_string())
            .arg("--directory")
            .arg(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let http_addr = SocketAddr::from((gateway, port));
        let p = Provisioning {
            d,
            machine_image,
            dir,
            key,
            http,
            http_addr,
        };
        wait_for(
            "the controller's HTTP server",
            Duration::from_secs(20),
            || TcpStream::connect_timeout(&http_addr, Duration::from_millis(200)).is_ok(),
        );
        Some(p)
    }

    /// Serves `file` at `http://<http_addr>/<name>` from now on.
    pub fn serve_file(&self, name: &str, file: &Path) -> String {
        let link = self.dir.path().join("www").join(name);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).expect("a folder of the HTTP server");
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(file, &link).expect("link a served file");
        format!("http://{}/{name}", self.http_addr)
    }

    /// A fresh machine `name` in the region, booted (systemd) and answering
    /// SSH with the controller's key.
    pub fn fresh_machine(&self, name: &str) -> (Host, Ipv4Addr) {
        let ip = self.d.bed.next_addr(REGION);
        let authorized = self.dir.path().join(format!("{name}.authorized_keys"));
        std::fs::copy(self.key.with_extension("pub"), &authorized).expect("authorized_keys");
        let host = self.d.bed.start(HostSpec {
            name: name.to_owned(),
            networks: vec![(REGION.to_owned(), ip)],
            // What a cloud's metadata service gives a VM: the operator's key.
            mounts: vec![(authorized, "/root/.ssh/authorized_keys".into())],
            machine: Some(self.machine_image.clone()),
            ..HostSpec::default()
        });
        let ssh = SocketAddr::from((ip, 22));
        let start = Instant::now();
        while TcpStream::connect_timeout(&ssh, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{name} did not answer SSH on {ssh} within 90 s:\n{}\n{}",
                self.d.bed.logs(&host),
                self.d
                    .bed
                    .exec(&host, &["systemctl", "--no-pager", "status"])
                    .stdout
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        (host, ip)
    }

    /// The control plane's URL as the region's hosts reach it.
    pub fn control_plane_url(&self) -> String {
        format!(
            "http://{}:{}",
            self.d.cp.ip(REGION),
            crate::testbed::deploy::API_PORT
        )
    }

    /// The variables of a node host that should provision cleanly: the
    /// binary copied from the controller, the local apt repository as the
    /// only source, the first release from a tarball.
    pub fn node_vars(&self) -> Vec<(String, String)> {
        let shared = self.d.shared_dir();
        [
            ("neutral_control_plane", self.control_plane_url()),
            ("neutral_region", REGION.to_owned()),
            ("neutral_join_token", crate::cluster::JOIN_TOKEN.to_owned()),
            (
                "neutral_node_binary_src",
                bin("neutral").display().to_string(),
            ),
            (
                "neutral_node_apt_mirror",
                format!("http://{}/apt/ ./", self.http_addr),
            ),
            ("neutral_node_apt_mirror_trusted", "true".to_owned()),
            ("neutral_node_apt_mirror_only", "true".to_owned()),
            ("neutral_node_image", IMAGE.to_owned()),
            (
                "neutral_node_image_archive",
                shared.join("web-v1.tar").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Runs `config/playbooks/node.yml` against `host` at `ip` with `vars`
    /// (an inventory written for it), over SSH with the controller's key.
    pub fn playbook(&self, host: &str, ip: Ipv4Addr, vars: &[(String, String)]) -> PlaybookRun {
        self.run_playbook("node.yml", "neutral_nodes", host, ip, vars)
    }

    /// Runs `config/playbooks/control-plane.yml` against `host` at `ip`.
    pub fn control_plane_playbook(
        &self,
        host: &str,
        ip: Ipv4Addr,
        vars: &[(String, String)],
    ) -> PlaybookRun {
        self.run_playbook(
            "control-plane.yml",
            "neutral_control_planes",
            host,
            ip,
            vars,
        )
    }

    /// Runs `config/playbooks/<playbook>` against `host` at `ip`, the only
    /// member of `group`, with `vars` (an inventory written for it), over
    /// SSH with the controller's key.
    fn run_playbook(
        &self,
        playbook: &str,
        group: &str,
        host: &str,
        ip: Ipv4Addr,
        vars: &[(String, String)],
    ) -> PlaybookRun {
        let inventory = self.dir.path().join(format!("{host}.inventory.yml"));
        let mut text = format!(
            "{group}:\n  hosts:\n    {host}:\n      ansible_host: {ip}\n  vars:\n    ansible_user: root\n"
        );
        for (name, value) in vars {
            text.push_str(&format!("    {name}: {}\n", yaml_string(value)));
        }
        std::fs::write(&inventory, text).expect("write the inventory");
        let config = workspace_root().join("config");
        let ssh_args = format!(
            "-o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new -o ConnectTimeout=10",
            self.dir.path().join("known_hosts").display()
        );
        let mut cmd = Command::new("ansible-playbook");
        cmd.current_dir(&config)
            .env("ANSIBLE_CONFIG", config.join("ansible.cfg"))
            .env("ANSIBLE_ROLES_PATH", config.join("roles"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("ansible-tmp"))
            .env(
                "ANSIBLE_SSH_ARGS",
                "-o ControlMaster=auto -o ControlPersist=30s",
            )
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", self.dir.path().join("cp"))
            .env("ANSIBLE_PIPELINING", "True")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .arg("-i")
            .arg(&inventory)
            .arg("--private-key")
            .arg(&self.key)
            .arg("--ssh-common-args")
            .arg(ssh_args)
            .arg(config.join("playbooks").join(playbook));
        let out = run_with_deadline(&mut cmd, PLAYBOOK_DEADLINE);
        PlaybookRun {
            ok: out.code == Some(0),
            output: format!("{}{}", out.stdout, out.stderr),
            elapsed: out.elapsed,
        }
    }

    /// `systemctl is-active neutral-agent` in `host`.
    pub fn agent_state(&self, host: &Host) -> String {
        self.d
            .bed
            .exec(host, &["systemctl", "is-active", "neutral-agent"])
            .stdout
            .trim()
            .to_owned()
    }
}

/// A YAML double-quoted scalar.
fn yaml_string(value: &str) -> String {
    serde_json::to_string(value).expect("a JSON string is a YAML string")
}

/// A port free on `ip` right now.
fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on the gateway address")
}

/// Polls `check` every 100 ms until it holds, failing after `timeout`.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sha256 of `path`, hex.
pub fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
