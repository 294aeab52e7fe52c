//! Pre-receive cost: real `git push`es of 1, 100 and 1,000 changed files to
//! a bare repository whose hooks `neutral hooks install` wrote, against a
//! tip holding 1,000 regions, 1,000 node pools and one domain.
//!
//! Reported per case: the hook process's wall time (measured by a wrapper
//! around the installed script: exec, reading the tip, validation, and the
//! what-if checks), the time the hook reports itself, and the whole push.
//! Two settings: static validation only, and with a real `neutral serve`
//! answering `GET /nodes` (200 registered nodes) for the what-if checks.
//!
//! `cargo bench -p neutral-hooks --bench pre_receive` (optimised), or
//! `cargo test -p neutral-hooks --bench pre_receive` (dev profile, quicker
//! to build). Set `NEUTRAL_BIN` to use an already built `neutral`.

#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REGIONS: usize = 1000;
const NODES: usize = 200;
const ROUNDS: usize = 5;
const ADMIN_TOKEN: &str = "bench-admin-token";
const JOIN_TOKEN: &str = "bench-join-token";

fn main() {
    // `cargo test --benches` passes harness flags; a bench without a harness
    // ignores them.
    let neutral = neutral_binary();
    println!("neutral binary: {}", neutral.display());
    println!(
        "tip: {REGIONS} regions + {REGIONS} node pools + 1 domain ({} config files); {ROUNDS} pushes per case",
        2 * REGIONS + 1
    );
    for live in [false, true] {
        let setting = if live {
            format!("what-if against neutral serve ({NODES} nodes)")
        } else {
            "static validation only".to_owned()
        };
        println!("\n{setting}");
        println!(
            "{:>14} {:>16} {:>16} {:>16}",
            "changed files", "hook wall (ms)", "hook says (ms)", "git push (ms)"
        );
        for changed in [1, 100, 1000] {
            let stats = run_case(&neutral, changed, live);
            println!(
                "{changed:>14} {:>16} {:>16} {:>16}",
                stats.hook_wall.summary(),
                stats.hook_self.summary(),
                stats.push.summary()
            );
        }
    }
}

/// Median and maximum of a few samples.
#[derive(Default)]
struct Samples(Vec<u128>);

impl Samples {
    fn summary(&self) -> String {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
        let max = sorted.last().copied().unwrap_or_default();
        format!("{median} (max {max})")
    }
}

#[derive(Default)]
struct Stats {
    hook_wall: Samples,
    hook_self: Samples,
    push: Samples,
}

fn run_case(neutral: &Path, changed: usize, live: bool) -> Stats {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("work");
    let bare = dir.path().join("repo.git");
    std::fs::create_dir_all(&work).expect("work dir");
    git(&work, &["init", "-q", "-b", "main"]);
    write_tree(&work, 0);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "initial"]);
    git(
        dir.path(),
        &["clone", "-q", "--bare", path_str(&work), path_str(&bare)],
    );
    git(&work, &["remote", "add", "origin", path_str(&bare)]);

    let _daemon = live.then(|| Daemon::start(neutral, &bare, &dir.path().join("data")));
    let mut install = Command::new(neutral);
    install.args(["hooks", "install", "--repo", path_str(&bare)]);
    if let Some(daemon) = &_daemon {
        install.args(["--control-plane", &format!("http://{}", daemon.api)]);
    }
    let done = install.output().expect("run neutral hooks install");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // Only pre-receive is measured.
    std::fs::remove_file(bare.join("hooks/post-receive")).expect("remove post-receive");
    wrap_with_timer(&bare.join("hooks/pre-receive"));

    let mut stats = Stats::default();
    for round in 1..=ROUNDS {
        change_files(&work, changed, round);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", &format!("round {round}")]);
        let start = Instant::now();
        let push = Command::new("git")
            .current_dir(&work)
            .args(["push", "-q", "origin", "main"])
            .output()
            .expect("git push");
        let elapsed = start.elapsed().as_millis();
        let stderr = String::from_utf8_lossy(&push.stderr);
        assert!(push.status.success(), "push failed:\n{stderr}");
        if live {
            assert!(
                stderr.contains(&format!("what-if checked against {NODES} live nodes")),
                "{stderr}"
            );
        }
        stats.push.0.push(elapsed);
        stats.hook_wall.0.push(number_after(&stderr, "hook wall "));
        stats.hook_self.0.push(reported_ms(&stderr));
    }
    stats
}

/// 1,000 regions and their node pools (every file valid); `round` varies
/// the base weights so each round changes the files it touches.
fn write_tree(work: &Path, round: usize) {
    for i in 0..REGIONS {
        write_region(work, i, round);
        let pool = work.join(format!("infra/node-pool/r{i:04}.tfvars"));
        std::fs::create_dir_all(pool.parent().expect("parent")).expect("folder");
        std::fs::write(
            pool,
            format!("region        = \"r{i:04}\"\ndesired_nodes = 1\n"),
        )
        .expect("write pool");
    }
    let gtm = work.join("platform-config/gtm/app.yaml");
    std::fs::create_dir_all(gtm.parent().expect("parent")).expect("folder");
    std::fs::write(
        gtm,
        "domain: app.example.com\nzone: example.com\nttl: 30\nmin_ready_nodes: 1\nall_down: fail_open\n",
    )
    .expect("write gtm");
}

fn write_region(work: &Path, index: usize, round: usize) {
    let path = work.join(format!("platform-config/regions/r{index:04}.yaml"));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
    let weight = 100 + round;
    std::fs::write(
        path,
        format!(
            "name: r{index:04}\nprovider: local\nmin_nodes: 1\nmax_nodes: 5\nbase_weight: {weight}\n# a comment to give the file some body\nstate: up\n"
        ),
    )
    .expect("write region");
}

fn change_files(work: &Path, changed: usize, round: usize) {
    for index in 0..changed.min(REGIONS) {
        write_region(work, index, round);
    }
}

/// Replaces the installed script by one that times the same command.
fn wrap_with_timer(hook: &Path) {
    let script = std::fs::read_to_string(hook).expect("read hook");
    let exec = script
        .lines()
        .find_map(|l| l.strip_prefix("exec "))
        .expect("an exec line");
    let wrapped = format!(
        "#!/bin/sh\nstart=$(date +%s%N)\n{exec}\nstatus=$?\nend=$(date +%s%N)\necho \"hook wall $(( (end - start) / 1000000 )) ms\" >&2\nexit $status\n"
    );
    std::fs::write(hook, wrapped).expect("write hook");
}

fn number_after(text: &str, marker: &str) -> u128 {
    text.lines()
        .find_map(|l| l.split(marker).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{marker}` in:\n{text}"))
}

/// The `(NN ms)` at the end of the hook's summary line.
fn reported_ms(text: &str) -> u128 {
    text.lines()
        .filter(|l| l.contains("neutral: ok: "))
        .find_map(|l| l.rsplit('(').next())
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in:\n{text}"))
}

fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `NEUTRAL_BIN`, else the workspace's `neutral` built with the bench's own
/// profile.
fn neutral_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NEUTRAL_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("bench binary lives in target/<profile>/deps");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["build", "--quiet", "-p", "neutral-cli", "--bin", "neutral"]);
    if release {
        build.arg("--release");
    }
    assert!(build.status().expect("run cargo build").success());
    profile_dir.join("neutral")
}

/// A real control plane following the bare repository, with registered
/// nodes.
struct Daemon {
    child: Child,
    api: SocketAddr,
}

impl Daemon {
    fn start(neutral: &Path, bare: &Path, data: &Path) -> Daemon {
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(neutral)
            .args(["serve", "--repo", path_str(bare), "--data", path_str(data)])
            .args([
                "--listen",
                &api.to_string(),
                "--dns-listen",
                &dns.to_string(),
            ])
            .env("NEUTRAL_JOIN_TOKEN", JOIN_TOKEN)
            .env("NEUTRAL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("NEUTRAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start neutral serve");
        let daemon = Daemon { child, api };
        let start = Instant::now();
        // Wait until it applied the repository (its regions exist).
        while !http(api, "GET", "/status", "").contains("\"domains\":1") {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "neutral serve did not sync"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for i in 0..NODES {
            let body = format!(
                "{{\"region\": \"r{:04}\", \"address\": \"127.1.{}.{}\"}}",
                i % REGIONS,
                i / 250,
                i % 250 + 1
            );
            let answer = http(api, "POST", "/nodes/register", &body);
            assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One HTTP/1.1 exchange; the raw answer ("" when nothing answers).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {JOIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}
