//! The multi-host test bed: hosts are Docker containers with addresses of
//! their own, on networks the test creates, running the build's `neutral`
//! binaries (bind-mounted read-only) in the one image `scripts/hosts`
//! builds from Debian's packages.
//!
//! Layout of one test bed (names start with `ntb-<pid>-<n>-`, so beds of
//! concurrent tests never collide and leftovers can be swept):
//!
//! - a **core** network (`<prefix>core`) for the control plane and the
//!   test's other servers (PowerDNS, …);
//! - one network per **region** (`<prefix><region>`), each holding that
//!   region's nodes;
//! - every network is an `--internal` bridge with an EXPLICIT /24 from
//!   198.18.0.0/15 (RFC 2544's benchmarking range, never Docker's 172.x
//!   pools), picked anew until Docker accepts one no other network uses. The
//!   test process itself sits on every bridge (the gateway, `.1`), so it
//!   reaches every host directly; internal bridges route nowhere else.
//!
//! **Where the control plane runs:** in a host on the core network that is
//! also attached to every region's network ([`Testbed::control_plane_host`]),
//! so it talks to a region's nodes over that region's network only. Cutting
//! a region off ([`Testbed::cut`]) disconnects the control plane from that
//! region's network: the nodes lose the control plane and the control plane
//! loses them (heartbeats and probes both fail), while the nodes keep
//! running and the test still sees both sides. [`Testbed::heal`] reconnects
//! it with the same address.
//!
//! **Faults** are functions of the test bed, each what a user meets:
//! [`Testbed::kill`] (`docker kill`), [`Testbed::freeze`]/[`Testbed::thaw`]
//! (`docker pause`/`unpause`: the host goes silent, no reset),
//! [`Testbed::cut`]/[`Testbed::heal`], [`Testbed::delay`] and
//! [`Testbed::loss`] (latency and loss on a host's interfaces), and
//! [`Testbed::restart`].
//!
//! Dropping the test bed removes every container and network it made, also
//! when the test panicked; a new test bed first removes what test processes
//! that are gone left behind (`scripts/hosts sweep` removes all of it).
//!
//! When Docker is missing the test bed is not built: the test is skipped
//! with the reason, or fails when `CI` is set.

pub mod deploy;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{Finished, bin, run_with_deadline, workspace_root};

/// Every test-bed object's name starts with this.
pub const NAME_PREFIX: &str = "ntb-";
/// The label carrying the pid of the test process that made an object.
pub const PID_LABEL: &str = "org.neutral.testbed.pid";
/// The label carrying the test bed's prefix.
pub const BED_LABEL: &str = "org.neutral.testbed.bed";
/// Where the build's binaries appear inside every host.
pub const BIN_DIR: &str = "/opt/neutral/bin";
/// Where `tests/images/` (the test image builder, `netdelay`) appears
/// inside every host.
pub const IMAGES_DIR: &str = "/opt/neutral/images";
/// What a host that runs containers itself (nested containerd + runc)
/// gets. Not `--privileged`: on this machine kind the capability bounding
/// set lacks CAP_SYS_RESOURCE (`CapBnd: 000001fffeffffff`), so a privileged
/// container fails with "unable to apply caps: operation not permitted".
/// Instead every capability Docker knows but that one, no seccomp or
/// AppArmor filter, /proc and /sys unmasked, and a cgroup namespace of its
/// own: what it starts stays under its own cgroup, so a freeze, kill or
/// removal of the host takes its nested containers along.
pub const NESTED_CONTAINERS: [&str; 12] = [
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "systempaths=unconfined",
    "--cgroupns",
    "private",
];
/// How long one `docker` command may take.
const DOCKER_DEADLINE: Duration = Duration::from_secs(120);

/// Skips the calling test (returns `None`) with `reason`, or fails it when
/// `CI` is set: on CI every multi-host test must run.
pub fn skip<T>(reason: &str) -> Option<T> {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set, so this multi-host test may not be skipped: {reason}"
    );
    eprintln!("SKIPPED: {reason}");
    None
}

/// Runs `docker args…` to completion (bounded).
pub fn docker(args: &[&str]) -> Finished {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run_with_deadline(&mut cmd, DOCKER_DEADLINE)
}

/// Runs `docker args…` and fails the test unless it succeeded; returns its
/// standard output, trimmed.
#[track_caller]
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert_eq!(
        out.code,
        Some(0),
        "docker {}: {}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stdout.trim().to_owned()
}

/// Whether the Docker daemon answers; the reason when it does not.
pub fn docker_available() -> Result<(), String> {
    let found = Command::new("docker")
        .arg("version")
        .arg("--format")
        .arg("{{.Server.Version}}")
        .stdin(Stdio::null())
        .output();
    match found {
        Err(_) => {
            Err("docker is not installed (the multi-host test bed needs Docker Engine)".into())
        }
        Ok(out) if !out.status.success() => Err(format!(
            "the Docker daemon does not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// The test bed's image tag, built (or reused) by `scripts/hosts` once per
/// test process; the reason when it cannot be had.
pub fn image() -> Result<String, String> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            docker_available()?;
            let mut cmd = Command::new(workspace_root().join("scripts/hosts"));
            cmd.arg("build");
            // A cold build fetches Debian packages: minutes, not hours.
            let out = run_with_deadline(&mut cmd, Duration::from_secs(900));
            eprint!("{}", out.stderr);
            if out.code == Some(0) {
                out.stdout
                    .lines()
                    .last()
                    .map(str::to_owned)
                    .ok_or_else(|| "scripts/hosts printed no image tag".to_owned())
            } else {
                Err(format!(
                    "scripts/hosts could not build the test-bed image: {}",
                    out.stderr.trim()
                ))
            }
        })
        .clone()
}

/// Whether `pid` is a live process.
fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes containers and networks whose test process is gone.
fn sweep_orphans() {
    let filter = format!("label={PID_LABEL}");
    let format = format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}");
    let containers = docker(&["ps", "-a", "--filter", &filter, "--format", &format]);
    let networks = docker(&["network", "ls", "--filter", &filter, "--format", &format]);
    let dead = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .filter_map(|line| {
                let (id, pid) = line.split_once(' ')?;
                let pid: u32 = pid.trim().parse().ok()?;
                (!pid_alive(pid)).then(|| id.to_owned())
            })
            .collect()
    };
    for id in dead(&containers.stdout) {
        let _ = docker(&["rm", "-f", &id]);
    }
    for id in dead(&networks.stdout) {
        let _ = docker(&["network", "rm", &id]);
    }
}

/// A network of the test bed: a /24 of 198.18.0.0/15.
#[derive(Debug, Clone)]
pub struct Network {
    /// Docker's name for it.
    pub name: String,
    /// The first three octets of its /24.
    pub base: [u8; 3],
}

impl Network {
    /// The address `.n` of this network.
    pub fn addr(&self, n: u8) -> Ipv4Addr {
        let [a, b, c] = self.base;
        Ipv4Addr::new(a, b, c, n)
    }

    /// The test process's own address on it (the bridge's gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        self.addr(1)
    }

    pub fn subnet(&self) -> String {
        format!("{}/24", self.addr(0))
    }
}

/// What a host runs and where.
#[derive(Debug, Clone, Default)]
pub struct HostSpec {
    /// Its short name (the container is `<prefix><name>`, hostname `<name>`).
    pub name: String,
    /// Networks (by test-bed name: `core` or a region) and its address on
    /// each; the first is its primary network.
    pub networks: Vec<(String, Ipv4Addr)>,
    /// The command it runs (its init reaps zombies and forwards signals).
    pub command: Vec<String>,
    /// Extra `-e NAME=VALUE`.
    pub env: Vec<(String, String)>,
    /// Extra read-only bind mounts `(host path, container path)`.
    pub mounts: Vec<(PathBuf, String)>,
    /// Extra writable bind mounts `(host path, container path)`.
    pub writable: Vec<(PathBuf, String)>,
    /// The host runs containers itself (a full node's containerd): see
    /// [`NESTED_CONTAINERS`]; the image's entrypoint makes its cgroup
    /// hierarchies writable (`NEUTRAL_HOST_NESTED=1`).
    pub nested_containers: bool,
    /// tmpfs mounts inside the host.
    pub tmpfs: Vec<String>,
    /// A machine image that boots its own init (systemd as PID 1, e.g.
    /// `scripts/fresh-host image`) instead of the test bed's image and
    /// command: no `--init`, none of the build's binaries mounted, the
    /// nested-container privileges (systemd and containerd make cgroups),
    /// `/run` and `/run/lock` on tmpfs as on a real machine. `command` may
    /// stay empty (the image's own).
    pub machine: Option<String>,
}

/// A running host.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub container: String,
    /// Its address per network (test-bed names).
    pub addrs: BTreeMap<String, Ipv4Addr>,
}

impl Host {
    /// Its address on `network`.
    #[track_caller]
    pub fn ip(&self, network: &str) -> Ipv4Addr {
        *self
            .addrs
            .get(network)
            .unwrap_or_else(|| panic!("host {} is not on network {network}", self.name))
    }
}

/// One test's hosts and networks (see the module docs).
#[derive(Debug)]
pub struct Testbed {
    pub prefix: String,
    pub image: String,
    networks: BTreeMap<String, Network>,
    hosts: RefCell<BTreeMap<String, Host>>,
    /// Per network, the next host number handed out.
    next: RefCell<BTreeMap<String, u8>>,
    bin_dir: PathBuf,
    pub started: Instant,
}

/// The candidate /24 blocks of 198.18.0.0/15, in the order this test bed
/// tries them (spread by pid, so concurrent tests rarely try the same).
fn candidate_blocks(seed: u32) -> impl Iterator<Item = [u8; 3]> {
    (0..512u32).map(move |i| {
        let index = (seed.wrapping_mul(97).wrapping_add(i)) % 512;
        let b = 18 + u8::try_from(index / 256).unwrap_or(0);
        let c = u8::try_from(index % 256).unwrap_or(0);
        [198, b, c]
    })
}

impl Testbed {
    /// A test bed named after `test` with a core network and one network per
    /// region; `None` (the test is skipped) when Docker or the image is not
    /// there, unless `CI` is set.
    pub fn new(test: &str, regions: &[&str]) -> Option<Testbed> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let image = match image() {
            Ok(image) => image,
            Err(reason) => return skip(&reason),
        };
        sweep_orphans();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let short: String = test
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let prefix = format!("{NAME_PREFIX}{pid}-{n}-{short}-");
        let started = Instant::now();
        let neutral = bin("neutral");
        let bin_dir = neutral
            .parent()
            .expect("the neutral binary has a folder")
            .to_path_buf();
        let mut bed = Testbed {
            prefix,
            image,
            networks: BTreeMap::new(),
            hosts: RefCell::new(BTreeMap::new()),
            next: RefCell::new(BTreeMap::new()),
            bin_dir,
            started,
        };
        let seed = pid.wrapping_mul(31).wrapping_add(n.wrapping_mul(7));
        for name in std::iter::once("core").chain(regions.iter().copied()) {
            let network = bed.create_network(name, seed);
            bed.networks.insert(name.to_owned(), network);
        }
        Some(bed)
    }

    fn create_network(&self, name: &str, seed: u32) -> Network {
        let docker_name = format!("{}{name}", self.prefix);
        let pid = std::process::id().to_string();
        let mut last = String::new();
        for base in candidate_blocks(seed.wrapping_add(self.networks.len() as u32)) {
            let network = Network {
                name: docker_name.clone(),
                base,
            };
            let out = docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--internal",
                "--subnet",
                &network.subnet(),
                "--gateway",
                &network.gateway().to_string(),
                "--label",
                &format!("{PID_LABEL}={pid}"),
                "--label",
                &format!("{BED_LABEL}={}", self.prefix),
                &docker_name,
            ]);
            if out.code == Some(0) {
                return network;
            }
            last = out.stderr;
            // Another network (another test's) holds this block: next one.
            if !last.contains("overlaps") {
                break;
            }
        }
        panic!("cannot create network {docker_name} in 198.18.0.0/15: {last}");
    }

    /// The network called `name` (`core` or a region).
    #[track_caller]
    pub fn network(&self, name: &str) -> &Network {
        self.networks
            .get(name)
            .unwrap_or_else(|| panic!("the test bed has no network {name}"))
    }

    /// A fresh address on `network` (hosts start at `.10`).
    pub fn next_addr(&self, network: &str) -> Ipv4Addr {
        let net = self.network(network);
        let mut next = self.next.borrow_mut();
        let n = next.entry(network.to_owned()).or_insert(10);
        let addr = net.addr(*n);
        *n = n.checked_add(1).expect("at most 245 hosts per network");
        addr
    }

    /// The folder of the build's binaries on this machine.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The path of a build binary (`neutral`, …) inside every host.
    pub fn bin(name: &str) -> String {
        format!("{BIN_DIR}/{name}")
    }

    /// Starts a host: created on its first network, connected to the others,
    /// then started, so its command sees every interface from the start.
    pub fn start(&self, spec: HostSpec) -> Host {
        let container = format!("{}{}", self.prefix, spec.name);
        let (first, rest) = spec
            .networks
            .split_first()
            .expect("a host is on at least one network");
        let pid = std::process::id().to_string();
        let machine = spec.machine.is_some();
        let mut args: Vec<String> = [
            "create",
            "--name",
            &container,
            "--hostname",
            &spec.name,
            "--label",
            &format!("{PID_LABEL}={pid}"),
            "--label",
            &format!("{BED_LABEL}={}", self.prefix),
            "--network",
            &self.network(&first.0).name,
            "--ip",
            &first.1.to_string(),
            "--cap-add",
            "NET_ADMIN",
            "--stop-timeout",
            "5",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if machine {
            // systemd shuts down cleanly on SIGRTMIN+3 (`docker stop`/`restart`).
            args.extend(
                [
                    "--tmpfs",
                    "/run:exec,mode=0755",
                    "--tmpfs",
                    "/run/lock",
                    "--stop-signal",
                    "SIGRTMIN+3",
                ]
                .map(String::from),
            );
            args.extend(NESTED_CONTAINERS.iter().map(|s| (*s).to_owned()));
        } else {
            args.push("--init".into());
            args.extend([
                "-v".to_owned(),
                format!("{}:{BIN_DIR}:ro", self.bin_dir.display()),
                "-v".to_owned(),
                format!(
                    "{}:{IMAGES_DIR}:ro",
                    workspace_root().join("tests/images").display()
                ),
            ]);
        }
        if spec.nested_containers && !machine {
            args.extend(NESTED_CONTAINERS.iter().map(|s| (*s).to_owned()));
            args.extend(["-e".to_owned(), "NEUTRAL_HOST_NESTED=1".to_owned()]);
        }
        for (name, value) in &spec.env {
            args.push("-e".into());
            args.push(format!("{name}={value}"));
        }
        for (from, to) in &spec.mounts {
            args.push("-v".into());
            args.push(format!("{}:{to}:ro", from.display()));
        }
        for (from, to) in &spec.writable {
            args.push("-v".into());
            args.push(format!("{}:{to}", from.display()));
        }
        for tmpfs in &spec.tmpfs {
            args.push("--tmpfs".into());
            args.push(tmpfs.clone());
        }
        args.push(spec.machine.clone().unwrap_or_else(|| self.image.clone()));
        args.extend(spec.command.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&refs);
        let rest = rest.to_vec();
        let host = Host {
            name: spec.name.clone(),
            container: container.clone(),
            addrs: spec.networks.into_iter().collect(),
        };
        // Recorded before anything else can fail, so drop removes it.
        self.hosts.borrow_mut().insert(spec.name, host.clone());
        for (network, ip) in rest {
            docker_ok(&[
                "network",
                "connect",
                "--ip",
                &ip.to_string(),
                &self.network(&network).name,
                &container,
            ]);
        }
        docker_ok(&["start", &container]);
        host
    }

    /// The host called `name`.
    #[track_caller]
    pub fn host(&self, name: &str) -> Host {
        self.hosts
            .borrow()
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("the test bed has no host {name}"))
    }

    /// The spec of the control plane's host: on `core` and on every region's
    /// network, running `command`.
    pub fn control_plane_host(&self, name: &str, command: Vec<String>) -> HostSpec {
        let mut networks = vec![("core".to_owned(), self.next_addr("core"))];
        for network in self.networks.keys().filter(|n| *n != "core") {
            networks.push((network.clone(), self.next_addr(network)));
        }
        HostSpec {
            name: name.to_owned(),
            networks,
            command,
            ..HostSpec::default()
        }
    }

    /// `docker exec` in `host` (bounded); the finished process.
    pub fn exec(&self, host: &Host, args: &[&str]) -> Finished {
        let mut all = vec!["exec", host.container.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Like [`Testbed::exec`], failing the test unless it succeeded.
    #[track_caller]
    pub fn exec_ok(&self, host: &Host, args: &[&str]) -> String {
        let out = self.exec(host, args);
        assert_eq!(
            out.code,
            Some(0),
            "in {}: {}: {}{}",
            host.name,
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// The host's output so far (its command's stdout and stderr).
    pub fn logs(&self, host: &Host) -> String {
        let out = docker(&["logs", "--tail", "200", &host.container]);
        format!("{}{}", out.stdout, out.stderr)
    }

    /// Whether the host's container is running (paused counts as running).
    pub fn running(&self, host: &Host) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &host.container])
            .stdout
            .trim()
            == "true"
    }

    // ---- faults -------------------------------------------------------

    /// The host dies at once (`docker kill`: SIGKILL to everything in it).
    pub fn kill(&self, host: &Host) {
        docker_ok(&["kill", &host.container]);
    }

    /// The host freezes (`docker pause`): every process stops where it is;
    /// packets to it are neither answered nor reset.
    pub fn freeze(&self, host: &Host) {
        docker_ok(&["pause", &host.container]);
    }

    /// A frozen host runs again.
    pub fn thaw(&self, host: &Host) {
        docker_ok(&["unpause", &host.container]);
    }

    /// The host restarts (its command starts again; its files stay).
    pub fn restart(&self, host: &Host) {
        docker_ok(&["restart", "-t", "5", &host.container]);
    }

    /// Starts a killed host again (same command and files).
    pub fn start_again(&self, host: &Host) {
        docker_ok(&["start", &host.container]);
    }

    /// Cuts region `region` off from the control plane host `cp`: `cp` leaves
    /// the region's network. The region's nodes keep running.
    pub fn cut(&self, cp: &Host, region: &str) {
        docker_ok(&[
            "network",
            "disconnect",
            &self.network(region).name,
            &cp.container,
        ]);
    }

    /// Undoes [`Testbed::cut`]: `cp` joins the region's network again with
    /// its old address. Docker gives it a new link-layer address, which a
    /// real host would announce (gratuitous ARP); the region's other hosts
    /// forget the old one here instead, or their answers to `cp` would go
    /// to a dead address until their neighbour entries expire (seen: probes
    /// failing 8 s after a heal).
    pub fn heal(&self, cp: &Host, region: &str) {
        let ip = cp.ip(region).to_string();
        docker_ok(&[
            "network",
            "connect",
            "--ip",
            &ip,
            &self.network(region).name,
            &cp.container,
        ]);
        let neighbours: Vec<Host> = self
            .hosts
            .borrow()
            .values()
            .filter(|h| h.name != cp.name && h.addrs.contains_key(region))
            .cloned()
            .collect();
        for host in neighbours {
            let _ = self.exec(&host, &["ip", "neigh", "flush", "to", &ip]);
        }
    }

    /// Every packet the host sends is held `ms` milliseconds first (what
    /// `tc qdisc add dev eth0 root netem delay <ms>ms` does on the host's
    /// interfaces). This kernel has no sch_netem, so the kernel queues the
    /// packets with iptables' NFQUEUE and `tests/images/netdelay` releases
    /// each one after the delay. Replaces an earlier delay.
    pub fn delay(&self, host: &Host, ms: u32) {
        self.clear_delay(host);
        let script = format!(
            "{IMAGES_DIR}/netdelay 7 {ms} >/tmp/netdelay.log 2>&1 & echo $! >/tmp/netdelay.pid; \
             for i in $(seq 50); do grep -q queue /tmp/netdelay.log && break; sleep 0.05; done; \
             grep -q queue /tmp/netdelay.log || {{ cat /tmp/netdelay.log; exit 1; }}; \
             iptables -w -I OUTPUT 1 ! -o lo -m comment --comment ntb-delay -j NFQUEUE --queue-num 7 --queue-bypass"
        );
        self.exec_ok(host, &["sh", "-c", &script]);
    }

    /// Removes [`Testbed::delay`]'s delay.
    pub fn clear_delay(&self, host: &Host) {
        let script = "while iptables -w -D OUTPUT ! -o lo -m comment --comment ntb-delay -j NFQUEUE --queue-num 7 --queue-bypass 2>/dev/null; do :; done; \
                      [ -f /tmp/netdelay.pid ] && kill $(cat /tmp/netdelay.pid) 2>/dev/null; rm -f /tmp/netdelay.pid; true";
        self.exec_ok(host, &["sh", "-c", script]);
    }

    /// Each packet the host sends (loopback aside) is dropped with
    /// probability `percent`/100, independently: what `tc qdisc add dev eth0
    /// root netem loss <percent>%` does, with iptables' `statistic` match
    /// (this kernel has no sch_netem). Replaces an earlier loss.
    pub fn loss(&self, host: &Host, percent: u32) {
        self.clear_loss(host);
        let p = f64::from(percent) / 100.0;
        let script = format!(
            "iptables -w -I OUTPUT 1 ! -o lo -m comment --comment ntb-loss -m statistic --mode random --probability {p} -j DROP"
        );
        self.exec_ok(host, &["sh", "-c", &script]);
    }

    /// Removes [`Testbed::loss`]'s loss.
    pub fn clear_loss(&self, host: &Host) {
        let script = "for chain in INPUT OUTPUT; do \
                        while n=$(iptables -w -L $chain --line-numbers -n | awk '/ntb-loss/ {print $1; exit}'); [ -n \"$n\" ]; do iptables -w -D $chain $n; done; \
                      done";
        self.exec_ok(host, &["sh", "-c", script]);
    }

    /// Removes every container and network of this test bed.
    pub fn tear_down(&self) {
        let filter = format!("label={BED_LABEL}={}", self.prefix);
        let ids = docker(&["ps", "-aq", "--filter", &filter]).stdout;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            // Paused containers cannot be killed until they run again.
            let mut unpause = vec!["unpause"];
            unpause.extend(&ids);
            let _ = docker(&unpause);
            let mut rm = vec!["rm", "-f", "-v"];
            rm.extend(&ids);
            let _ = docker(&rm);
        }
        for network in self.networks.values() {
            let _ = docker(&["network", "rm", &network.name]);
        }
        self.hosts.borrow_mut().clear();
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.tear_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_blocks_stay_in_the_benchmarking_range_and_cover_it() {
        let blocks: std::collections::BTreeSet<[u8; 3]> = candidate_blocks(12345).collect();
        assert_eq!(blocks.len(), 512);
        assert!(
            blocks
                .iter()
                .all(|[a, b, _]| *a == 198 && (*b == 18 || *b == 19))
        );
    }
}
