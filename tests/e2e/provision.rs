//! From a bare machine to a node (issue 15): a fresh Debian 12 machine on the
//! test bed (systemd as PID 1, sshd, python3; tests/support/provision.rs) is
//! configured by `ansible-playbook` with `config/playbooks/node.yml`, run from
//! this process over real SSH against the machine's own address, as an
//! operator's controller would. The packages come from a local apt
//! repository the controller serves on the region's network.
//!
//! Asserted: the node registers with its slot name, serves its workload
//! through nginx from the blue or green colour, node_exporter answers, the
//! unit carries its hardening, comes back after `docker restart` of the host,
//! and a second run changes nothing. Bad input (no join token, a wrong
//! checksum, an unreachable control plane) fails naming the cause and leaves
//! no agent unit behind.
//!
//! Figures (provisioning time, re-run time) are printed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use neutral_e2e::cluster::ADMIN_TOKEN;
use neutral_e2e::http;
use neutral_e2e::provision::{Provisioning, sha256_hex};
use neutral_e2e::testbed::deploy::SERVICE_PORT;

/// Any one wait for the node to settle.
const SETTLE: Duration = Duration::from_secs(120);

/// The node registered from `ip`, as `GET /nodes` shows it (raw JSON).
fn node_json(p: &Provisioning, ip: std::net::Ipv4Addr) -> Option<serde_json::Value> {
    let response = http::request(p.d.api, "GET", "/nodes", Some(ADMIN_TOKEN), None).ok()?;
    let all: serde_json::Value = serde_json::from_str(&response.body).ok()?;
    all.as_array()?
        .iter()
        .find(|n| n["address"].as_str() == Some(&ip.to_string()))
        .cloned()
}

/// `GET http://ip:80/version` through the node's nginx.
fn version(ip: std::net::Ipv4Addr) -> Option<String> {
    let addr = SocketAddr::from((ip, SERVICE_PORT));
    http::request(addr, "GET", "/version", None, None)
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.body.trim().to_owned())
}

/// What to read when a wait fails: the node as the control plane sees it,
/// and the agent's journal.
fn diagnosis(
    p: &Provisioning,
    host: &neutral_e2e::testbed::Host,
    ip: std::net::Ipv4Addr,
) -> String {
    let journal =
        p.d.bed
            .exec(
                host,
                &[
                    "journalctl",
                    "-u",
                    "neutral-agent",
                    "-n",
                    "40",
                    "--no-pager",
                ],
            )
            .stdout;
    format!(
        "node: {:?}\n--- agent journal\n{journal}\n--- control plane\n{}",
        node_json(p, ip),
        p.d.diagnosis()
    )
}

/// Polls `check` every 100 ms until it holds; fails after `SETTLE` with
/// the diagnosis.
#[track_caller]
fn settle(
    p: &Provisioning,
    host: &neutral_e2e::testbed::Host,
    ip: std::net::Ipv4Addr,
    what: &str,
    mut check: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < SETTLE,
            "timed out after {SETTLE:?} waiting for {what}\n{}",
            diagnosis(p, host, ip)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent's unit on `host` as the role writes it: restart policy,
/// hardening, enabled, the flags in `flags`; the join token only in its
/// 0600 file, never in the unit.
fn assert_agent_unit(p: &Provisioning, host: &neutral_e2e::testbed::Host, flags: &[&str]) {
    let show = p.d.bed.exec_ok(
        host,
        &[
            "systemctl",
            "show",
            "neutral-agent",
            "-p",
            "Restart,NoNewPrivileges,ProtectSystem,ProtectHome,PrivateTmp,UnitFileState,ExecStart",
        ],
    );
    for want in [
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "UnitFileState=enabled",
    ]
    .iter()
    .chain(flags)
    {
        assert!(show.contains(want), "{want} not in:\n{show}");
    }
    let token_mode =
        p.d.bed
            .exec_ok(host, &["stat", "-c", "%a", "/etc/neutral/join-token"]);
    assert_eq!(token_mode.trim(), "600");
    assert!(!show.contains(neutral_e2e::cluster::JOIN_TOKEN));
}

#[test]
fn a_fresh_debian_host_becomes_a_serving_node_that_survives_a_restart_and_reruns_unchanged() {
    let Some(p) = Provisioning::start("provision") else {
        return;
    };
    let (host, ip) = p.fresh_machine("jp-1");
    // systemd is the machine's init, as on a VM.
    let init = p.d.bed.exec_ok(&host, &["cat", "/proc/1/comm"]);
    assert_eq!(init.trim(), "systemd");
    // Fresh: nothing of the node is there yet.
    let before =
        p.d.bed
            .exec(&host, &["sh", "-c", "command -v containerd nginx neutral"]);
    assert!(
        before.stdout.trim().is_empty(),
        "not fresh: {}",
        before.stdout
    );

    let start = Instant::now();
    let run = p.playbook("jp-1", ip, &p.node_vars());
    assert!(run.ok, "the first playbook run failed:\n{}", run.output);
    assert!(run.changed("jp-1").unwrap_or(0) > 0, "{}", run.output);
    let first_run = run.elapsed;

    // Registered, with the slot name as its host name, and up.
    settle(&p, &host, ip, "the node up in GET /nodes", || {
        node_json(&p, ip).is_some_and(|n| n["status"] == "up")
    });
    let node = node_json(&p, ip).expect("registered");
    assert_eq!(node["hostname"], "jp-1", "{node}");
    assert_eq!(node["region"], "jp", "{node}");
    let id = node["id"].as_str().expect("id").to_owned();
    settle(&p, &host, ip, "the workload through nginx", || {
        version(ip).as_deref() == Some("v1")
    });
    let ready = start.elapsed();

    // nginx proxies to the blue (18080) or green (28080) colour, and that
    // colour answers on the host's loopback.
    let upstream = p.d.bed.exec_ok(
        &host,
        &[
            "sh",
            "-c",
            "cat /var/lib/neutral/node/nginx/*upstream*.conf",
        ],
    );
    let port = ["18080", "28080"]
        .into_iter()
        .find(|port| upstream.contains(&format!("127.0.0.1:{port}")))
        .unwrap_or_else(|| panic!("upstream is neither blue nor green: {upstream}"));
    let direct = p.d.bed.exec_ok(
        &host,
        &[
            "python3",
            "-c",
            &format!("import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{port}/version',timeout=5).read().decode())"),
        ],
    );
    assert_eq!(direct.trim(), "v1");

    // node_exporter and blackbox_exporter from Debian, answering.
    let metrics = http::request(SocketAddr::from((ip, 9100)), "GET", "/metrics", None, None)
        .expect("GET :9100/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("node_cpu_seconds_total"));
    let blackbox = http::request(SocketAddr::from((ip, 9115)), "GET", "/metrics", None, None)
        .expect("GET :9115/metrics");
    assert_eq!(blackbox.status, 200);

    // The unit as written: restart policy, hardening, slot name.
    assert_agent_unit(&p, &host, &["--hostname jp-1"]);

    // A second run changes nothing.
    let again = p.playbook("jp-1", ip, &p.node_vars());
    assert!(again.ok, "the second run failed:\n{}", again.output);
    assert_eq!(again.changed("jp-1"), Some(0), "{}", again.output);

    // The host restarts: the unit comes back by itself, same node.
    let invocation = |p: &Provisioning| {
        p.d.bed
            .exec(
                &host,
                &["systemctl", "show", "-p", "InvocationID", "neutral-agent"],
            )
            .stdout
    };
    let first = invocation(&p);
    let restarted = Instant::now();
    p.d.bed.restart(&host);
    settle(&p, &host, ip, "the agent active after the restart", || {
        p.agent_state(&host) == "active"
    });
    assert_ne!(invocation(&p), first, "the agent did not start anew");
    settle(
        &p,
        &host,
        ip,
        "the workload through nginx after the restart",
        || version(ip).as_deref() == Some("v1"),
    );
    settle(&p, &host, ip, "the node up after the restart", || {
        node_json(&p, ip).is_some_and(|n| n["status"] == "up")
    });
    let back = restarted.elapsed();
    assert_eq!(node_json(&p, ip).expect("registered")["id"], id.as_str());

    // A blue/green release through the control plane, under load: v2
    // reaches the node as an image archive (no registry here), the release
    // goes through `neutral release`, and no request fails meanwhile.
    let v2 = p.d.shared_dir().join("web-v2.tar");
    let built = std::process::Command::new(
        neutral_e2e::workspace_root().join("tests/images/build-test-image.sh"),
    )
    .arg("v2")
    .arg(&v2)
    .output()
    .expect("run build-test-image.sh");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let copied = neutral_e2e::testbed::docker(&[
        "cp",
        v2.to_str().unwrap(),
        &format!("{}:/var/lib/neutral/images/web-v2.tar", host.container),
    ]);
    assert_eq!(copied.code, Some(0), "{}", copied.stderr);
    p.d.bed.exec_ok(
        &host,
        &[
            "ctr",
            "-n",
            "neutral",
            "images",
            "import",
            "/var/lib/neutral/images/web-v2.tar",
        ],
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut ok, mut failed, mut seen) = (0u32, 0u32, std::collections::BTreeSet::new());
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                match version(ip) {
                    Some(v) => {
                        ok += 1;
                        seen.insert(v);
                    }
                    None => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed, seen)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let released = neutral_e2e::run_with_deadline(
        std::process::Command::new(neutral_e2e::bin("neutral"))
            .args(["release", "--node", &id, "--image", "neutral.test/web:v2"])
            .arg("--control-plane")
            .arg(format!("http://{}", p.d.api))
            .args(["--timeout", "60s"])
            .env("NEUTRAL_ADMIN_TOKEN", ADMIN_TOKEN),
        Duration::from_secs(90),
    );
    assert_eq!(
        released.code,
        Some(0),
        "{}\n{}\n{}",
        released.stdout,
        released.stderr,
        diagnosis(&p, &host, ip)
    );
    settle(&p, &host, ip, "v2 through nginx", || {
        version(ip).as_deref() == Some("v2")
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (served, failed, seen) = load.join().expect("the load thread");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the release",
        served + failed
    );
    assert!(seen.contains("v1") && seen.contains("v2"), "{seen:?}");

    eprintln!(
        "FIGURES provision: fresh host -> ready node {:.1}s (first playbook run {:.1}s); \
         re-run (changed=0) {:.1}s; docker restart -> serving again {:.1}s; \
         blue/green release through the control plane: {served} requests, 0 failed",
        ready.as_secs_f64(),
        first_run.as_secs_f64(),
        again.elapsed.as_secs_f64(),
        back.as_secs_f64()
    );
}

#[test]
fn bad_input_fails_naming_the_cause_and_leaves_no_agent_unit() {
    let Some(p) = Provisioning::start("provbad") else {
        return;
    };
    let (host, ip) = p.fresh_machine("jp-bad");
    let no_unit = |p: &Provisioning, case: &str| {
        assert_ne!(p.agent_state(&host), "active", "{case}: an agent runs");
        let unit = p.d.bed.exec(
            &host,
            &["test", "-e", "/etc/systemd/system/neutral-agent.service"],
        );
        assert_ne!(unit.code, Some(0), "{case}: a unit file was left");
    };
    let with = |changes: &[(&str, Option<String>)]| {
        let mut vars = p.node_vars();
        for (name, value) in changes {
            vars.retain(|(n, _)| n != name);
            if let Some(value) = value {
                vars.push(((*name).to_owned(), value.clone()));
            }
        }
        vars
    };

    // 1. No join token.
    let run = p.playbook("jp-bad", ip, &with(&[("neutral_join_token", None)]));
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.output.contains("neutral_join_token is not set"),
        "{}",
        run.output
    );
    no_unit(&p, "no token");

    // 2. A wrong checksum for the downloaded binary.
    let binary = neutral_e2e::bin("neutral");
    let right = sha256_hex(&binary);
    let wrong: String = right
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let url = format!("http://{}/bin/neutral", p.http_addr);
    let run = p.playbook(
        "jp-bad",
        ip,
        &with(&[
            ("neutral_node_binary_src", None),
            ("neutral_node_binary_url", Some(url)),
            ("neutral_node_binary_sha256", Some(wrong.clone())),
        ]),
    );
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.output.contains(&format!(
            "its sha256 checksum does not match neutral_node_binary_sha256 {wrong}"
        )),
        "{}",
        run.output
    );
    let installed =
        p.d.bed
            .exec(&host, &["test", "-e", "/usr/local/bin/neutral"]);
    assert_ne!(
        installed.code,
        Some(0),
        "a binary with a wrong checksum was installed"
    );
    no_unit(&p, "wrong checksum");

    // 3. A control plane nobody answers for.
    let unreachable = format!("http://{}:7999", p.d.cp.ip("jp"));
    let run = p.playbook(
        "jp-bad",
        ip,
        &with(&[("neutral_control_plane", Some(unreachable.clone()))]),
    );
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.output.contains(&format!(
            "the control plane {unreachable} is unreachable from jp-bad"
        )),
        "{}",
        run.output
    );
    no_unit(&p, "unreachable control plane");
}

/// `ansible-lint` from `scripts/setup`'s virtualenv, else from PATH.
fn ansible_lint() -> Option<std::path::PathBuf> {
    let venv = neutral_e2e::workspace_root().join(".build/ansible-lint/venv/bin/ansible-lint");
    if venv.is_file() {
        return Some(venv);
    }
    std::process::Command::new("ansible-lint")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "ansible-lint".into())
}

#[test]
fn config_passes_syntax_check_and_ansible_lint() {
    if let Err(reason) = neutral_e2e::provision::ansible_available() {
        neutral_e2e::testbed::skip::<()>(&reason);
        return;
    }
    let config = neutral_e2e::workspace_root().join("config");
    let inventories = std::fs::read_dir(config.join("inventories")).expect("config/inventories");
    let mut checked = 0;
    for inventory in inventories {
        let inventory = inventory.expect("entry").path();
        for playbook in ["playbooks/node.yml", "playbooks/control-plane.yml"] {
            let mut cmd = std::process::Command::new("ansible-playbook");
            cmd.current_dir(&config)
                .env("ANSIBLE_CONFIG", config.join("ansible.cfg"))
                .arg("--syntax-check")
                .arg("-i")
                .arg(&inventory)
                .arg(playbook);
            let out = neutral_e2e::run_with_deadline(&mut cmd, Duration::from_secs(120));
            assert_eq!(
                out.code,
                Some(0),
                "--syntax-check of {playbook} with {}: {}{}",
                inventory.display(),
                out.stdout,
                out.stderr
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "an example inventory per region and the control plane's"
    );

    let Some(lint) = ansible_lint() else {
        neutral_e2e::testbed::skip::<()>(
            "ansible-lint is not installed (scripts/setup installs it into .build/ansible-lint)",
        );
        return;
    };
    let mut cmd = std::process::Command::new(lint);
    cmd.current_dir(&config)
        .env("ANSIBLE_CONFIG", config.join("ansible.cfg"))
        .args(["--offline", "--strict", "--format=pep8"])
        .args(["playbooks/", "roles/"]);
    let out = neutral_e2e::run_with_deadline(&mut cmd, Duration::from_secs(300));
    assert_eq!(
        out.code,
        Some(0),
        "ansible-lint on config/:\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// `git daemon` serving the deployment's configuration repository on the
/// region's network (as a Git server the control plane's VM would clone
/// from); killed on drop.
struct GitServer {
    child: std::process::Child,
    url: String,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git_server(p: &Provisioning) -> GitServer {
    let bare = &p.d.repo.bare;
    let base = bare.parent().expect("the bare repository's folder");
    let name = bare
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    let gateway = p.d.bed.network(neutral_e2e::provision::REGION).gateway();
    let port = std::net::TcpListener::bind((gateway, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = std::process::Command::new("git")
        .args(["daemon", "--reuseaddr", "--export-all"])
        .arg(format!("--base-path={}", base.display()))
        .arg(format!("--listen={gateway}"))
        .arg(format!("--port={port}"))
        .arg(base)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start git daemon");
    let addr = SocketAddr::from((gateway, port));
    neutral_e2e::provision::wait_for("git daemon", Duration::from_secs(20), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    GitServer {
        child,
        url: format!("git://{addr}/{name}"),
    }
}

/// The variables of a control-plane host that should provision cleanly.
fn control_plane_vars(repo: &str) -> Vec<(String, String)> {
    [
        ("neutral_control_plane_repo", repo.to_owned()),
        ("neutral_admin_token", ADMIN_TOKEN.to_owned()),
        (
            "neutral_join_token",
            neutral_e2e::cluster::JOIN_TOKEN.to_owned(),
        ),
        (
            "neutral_control_plane_viewer_token",
            neutral_e2e::cluster::VIEWER_TOKEN.to_owned(),
        ),
        (
            "neutral_control_plane_binary_src",
            neutral_e2e::bin("neutral").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[test]
fn a_fresh_debian_host_becomes_a_control_plane_that_a_provisioned_node_joins() {
    let Some(p) = Provisioning::start("provision-cp") else {
        return;
    };
    let git = git_server(&p);
    let (cp, cp_ip) = p.fresh_machine("cp-1");
    let vars = control_plane_vars(&git.url);
    let start = Instant::now();
    let run = p.control_plane_playbook("cp-1", cp_ip, &vars);
    assert!(run.ok, "the control-plane playbook failed:\n{}", run.output);
    let provisioned = start.elapsed();

    // It serves the API and has the repository's tip in force.
    let api = SocketAddr::from((cp_ip, neutral_e2e::testbed::deploy::API_PORT));
    let health = http::request(api, "GET", "/healthz", None, None).expect("GET /healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    let status = http::request(api, "GET", "/status", Some(ADMIN_TOKEN), None).expect("/status");
    let head = std::process::Command::new("git")
        .arg("-C")
        .arg(&p.d.repo.bare)
        .args(["rev-parse", "main"])
        .output()
        .expect("git rev-parse");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let status: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    assert_eq!(status["commit"], head.as_str(), "{status}");
    // Anonymous reads are refused; the viewer token reads.
    assert_eq!(
        http::request(api, "GET", "/nodes", None, None)
            .unwrap()
            .status,
        401
    );
    let viewer = neutral_e2e::cluster::VIEWER_TOKEN;
    assert_eq!(
        http::request(api, "GET", "/nodes", Some(viewer), None)
            .unwrap()
            .status,
        200
    );

    // An unprivileged daemon, hardened, its secrets out of the unit, DNS on 53.
    let show = p.d.bed.exec_ok(
        &cp,
        &[
            "systemctl",
            "show",
            "neutral-serve",
            "-p",
            "User,Restart,NoNewPrivileges,ProtectSystem,UnitFileState,ExecStart,ActiveState",
        ],
    );
    for want in [
        "User=neutral",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "UnitFileState=enabled",
        "ActiveState=active",
        "--dns-listen 0.0.0.0:53",
    ] {
        assert!(show.contains(want), "{want} not in:\n{show}");
    }
    assert!(!show.contains(ADMIN_TOKEN) && !show.contains(neutral_e2e::cluster::JOIN_TOKEN));
    let owner = p.d.bed.exec_ok(
        &cp,
        &[
            "stat",
            "-c",
            "%U %a",
            "/var/lib/neutral",
            "/etc/neutral/admin-token",
        ],
    );
    assert_eq!(owner.trim(), "neutral 700\nroot 640", "{owner}");
    let listening =
        p.d.bed
            .exec_ok(&cp, &["sh", "-c", "cat /proc/net/udp /proc/net/udp6"]);
    assert!(
        listening.contains(":0035 "),
        "nothing on UDP 53:\n{listening}"
    );

    // A second run changes nothing.
    let again = p.control_plane_playbook("cp-1", cp_ip, &vars);
    assert!(again.ok, "the second run failed:\n{}", again.output);
    assert_eq!(again.changed("cp-1"), Some(0), "{}", again.output);

    // A node provisioned against it joins it.
    let (node, node_ip) = p.fresh_machine("jp-1");
    let mut node_vars = p.node_vars();
    for (name, value) in &mut node_vars {
        if name == "neutral_control_plane" {
            *value = format!("http://{api}");
        }
    }
    let joined = p.playbook("jp-1", node_ip, &node_vars);
    assert!(joined.ok, "the node playbook failed:\n{}", joined.output);
    let registered = || -> Option<serde_json::Value> {
        let nodes = http::request(api, "GET", "/nodes", Some(ADMIN_TOKEN), None).ok()?;
        let nodes: serde_json::Value = serde_json::from_str(&nodes.body).ok()?;
        nodes
            .as_array()?
            .iter()
            .find(|n| n["address"].as_str() == Some(&node_ip.to_string()))
            .cloned()
    };
    settle(
        &p,
        &node,
        node_ip,
        "the node up at the provisioned control plane",
        || registered().is_some_and(|n| n["status"] == "up" && n["hostname"] == "jp-1"),
    );
    eprintln!(
        "FIGURES provision-cp: fresh host -> control plane serving its repository {:.1}s \
         (playbook {:.1}s); re-run (changed=0) {:.1}s",
        provisioned.as_secs_f64(),
        run.elapsed.as_secs_f64(),
        again.elapsed.as_secs_f64()
    );
}

#[test]
fn a_control_plane_with_bad_input_fails_naming_the_cause_and_is_not_left_running() {
    let Some(p) = Provisioning::start("provision-cp-bad") else {
        return;
    };
    let git = git_server(&p);
    let (cp, cp_ip) = p.fresh_machine("cp-bad");
    let unit_exists = |p: &Provisioning| {
        p.d.bed
            .exec(
                &cp,
                &["test", "-e", "/etc/systemd/system/neutral-serve.service"],
            )
            .code
            == Some(0)
    };

    // The join token equal to the admin token: refused before anything.
    let mut same = control_plane_vars(&git.url);
    for (name, value) in &mut same {
        if name == "neutral_join_token" {
            *value = ADMIN_TOKEN.to_owned();
        }
    }
    let run = p.control_plane_playbook("cp-bad", cp_ip, &same);
    assert!(!run.ok, "{}", run.output);
    assert!(run.output.contains("and differ"), "{}", run.output);
    assert!(!unit_exists(&p), "a unit was written");

    // A repository that cannot be reached: the daemon never syncs, the
    // role stops it and says why, with its log.
    let mut unreachable = control_plane_vars("git://127.0.0.1:9/nowhere.git");
    unreachable.push((
        "neutral_control_plane_start_timeout".to_owned(),
        "10".to_owned(),
    ));
    let run = p.control_plane_playbook("cp-bad", cp_ip, &unreachable);
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.output.contains("did not answer with a synced commit"),
        "{}",
        run.output
    );
    assert!(run.output.contains("nowhere.git"), "{}", run.output);
    let state =
        p.d.bed
            .exec(&cp, &["systemctl", "is-active", "neutral-serve"])
            .stdout;
    assert_ne!(state.trim(), "active", "left running");
}

/// Renders `output "user_data"` of a root calling `modules/<module>` with
/// `inputs` (HCL lines), with real Terraform; the text.
fn render_user_data(terraform: &std::path::Path, module: &str, inputs: &str, key: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    // A relative source, as a repository's roots use it (an absolute one is
    // copied into .terraform/ without the role's template beside it).
    let up = "../".repeat(root.path().components().count().saturating_sub(1));
    let source = format!(
        "{up}{}",
        neutral_e2e::workspace_root()
            .join("modules")
            .join(module)
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    let config = format!(
        "module \"m\" {{\n  source = \"{source}\"\n{inputs}}}\n\n\
         output \"user_data\" {{\n  value     = module.m.user_data{key}\n  sensitive = true\n}}\n"
    );
    std::fs::write(root.path().join("main.tf"), config).unwrap();
    let tf = |args: &[&str]| {
        let out = neutral_e2e::run_with_deadline(
            std::process::Command::new(terraform)
                .args(args)
                .current_dir(root.path())
                .env("TF_IN_AUTOMATION", "1")
                .env("CHECKPOINT_DISABLE", "1"),
            Duration::from_secs(120),
        );
        assert_eq!(
            out.code,
            Some(0),
            "terraform {args:?}: {}{}",
            out.stdout,
            out.stderr
        );
        out.stdout
    };
    tf(&["init", "-input=false", "-no-color"]);
    tf(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    let user_data = tf(&["output", "-raw", "user_data"]);
    assert!(
        user_data.starts_with("## template: jinja\n#cloud-config\n"),
        "{user_data}"
    );
    user_data
}

/// What a cloud image has (Debian's cloud-init, installed here from the
/// local repository `apt`) and a NoCloud seed of `user_data`; then every
/// cloud-init stage, each of which must succeed. How long the stages took.
fn run_cloud_init(
    p: &Provisioning,
    host: &neutral_e2e::testbed::Host,
    apt: &str,
    user_data: &str,
) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("user-data");
    std::fs::write(&seed, user_data).unwrap();
    let meta = dir.path().join("meta-data");
    std::fs::write(
        &meta,
        format!("instance-id: {0}\nlocal-hostname: {0}\n", host.name),
    )
    .unwrap();
    let script = format!(
        "rm -f /etc/apt/sources.list.d/* && printf '%s' '{}' > /etc/apt/sources.list && \
         apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cloud-init \
         >/dev/null && mkdir -p /var/lib/cloud/seed/nocloud && \
         printf 'datasource_list: [ NoCloud, None ]\\nlocale: C.UTF-8\\n' \
         > /etc/cloud/cloud.cfg.d/99-seed.cfg",
        apt.trim_end()
    );
    let out = p.d.bed.exec(host, &["sh", "-c", &script]);
    assert_eq!(out.code, Some(0), "{script}:\n{}{}", out.stdout, out.stderr);
    for (file, target) in [(&seed, "user-data"), (&meta, "meta-data")] {
        let copied = neutral_e2e::testbed::docker(&[
            "cp",
            file.to_str().unwrap(),
            &format!("{}:/var/lib/cloud/seed/nocloud/{target}", host.container),
        ]);
        assert_eq!(copied.code, Some(0), "{}", copied.stderr);
    }
    let started = Instant::now();
    for stage in [
        "cloud-init init --local",
        "cloud-init init",
        "cloud-init modules --mode=config",
        "cloud-init modules --mode=final",
    ] {
        let out = p.d.bed.exec(host, &["sh", "-c", stage]);
        assert_eq!(
            out.code,
            Some(0),
            "{stage}:\n{}{}\n{}",
            out.stdout,
            out.stderr,
            p.d.bed
                .exec(
                    host,
                    &["tail", "-n", "60", "/var/log/cloud-init-output.log"]
                )
                .stdout
        );
    }
    started.elapsed()
}

/// cloud-init (issue 15): `modules/node` renders a slot's user-data with
/// real Terraform; a fresh machine that ships cloud-init runs it from a
/// NoCloud seed — cloud-init itself, every stage — and becomes the same node
/// the role makes: registered with its slot name, up, serving the first
/// release through nginx, under the role's own unit (one template for both).
#[test]
fn cloud_init_user_data_from_modules_node_makes_the_same_node_as_the_role() {
    let Some(terraform) = neutral_e2e::services::terraform_or_skip("cloud_init_user_data") else {
        return;
    };
    let Some(p) = Provisioning::start("provision-cloud-init") else {
        return;
    };
    let binary = neutral_e2e::bin("neutral");
    let binary_url = p.serve_file("bin/neutral", &binary);
    let archive_url = p.serve_file("images/web-v1.tar", &p.d.shared_dir().join("web-v1.tar"));
    let apt = format!("deb [trusted=yes] http://{}/apt/ ./\n", p.http_addr);
    let inputs = format!(
        "  region            = \"jp\"\n  slots             = [\"jp-3\"]\n  \
         control_plane     = \"{cp}\"\n  join_token        = \"{token}\"\n  \
         binary_url        = \"{binary_url}\"\n  binary_sha256     = \"{sha}\"\n  \
         image             = \"{image}\"\n  image_archive_url = \"{archive_url}\"\n  \
         apt_sources_list  = {apt_json}\n",
        cp = p.control_plane_url(),
        token = neutral_e2e::cluster::JOIN_TOKEN,
        sha = sha256_hex(&binary),
        image = neutral_e2e::provision::IMAGE,
        apt_json = serde_json::to_string(&apt).unwrap(),
    );
    let user_data = render_user_data(&terraform, "node", &inputs, "[\"jp-3\"]");
    assert!(
        user_data.contains("neutral-agent.service.j2"),
        "the role's template is the unit's one source:\n{user_data}"
    );
    let (host, ip) = p.fresh_machine("jp-3");
    let started = Instant::now();
    let stages = run_cloud_init(&p, &host, &apt, &user_data);

    // The same node as the role's: registered by slot name, up, serving v1.
    settle(
        &p,
        &host,
        ip,
        "the cloud-init node up in GET /nodes",
        || node_json(&p, ip).is_some_and(|n| n["status"] == "up" && n["hostname"] == "jp-3"),
    );
    settle(&p, &host, ip, "the workload through nginx", || {
        version(ip).as_deref() == Some("v1")
    });
    let ready = started.elapsed();
    assert_agent_unit(
        &p,
        &host,
        &[
            "--hostname jp-3",
            "--runtime containerd --nginx",
            "--image neutral.test/web:v1",
        ],
    );
    eprintln!(
        "FIGURES provision-cloud-init: cloud-init stages {:.1}s; node up and serving {:.1}s \
         after the first stage started",
        stages.as_secs_f64(),
        ready.as_secs_f64()
    );
}

/// cloud-init for the control plane: `modules/control-plane`'s user-data,
/// run by cloud-init on a fresh machine, makes the control plane the role
/// makes — unprivileged, following the repository, answering with its tip.
#[test]
fn cloud_init_user_data_from_modules_control_plane_makes_the_same_control_plane_as_the_role() {
    let Some(terraform) = neutral_e2e::services::terraform_or_skip("cloud_init_control_plane")
    else {
        return;
    };
    let Some(p) = Provisioning::start("provision-cloud-init-cp") else {
        return;
    };
    let git = git_server(&p);
    let binary = neutral_e2e::bin("neutral");
    let binary_url = p.serve_file("bin/neutral", &binary);
    let apt = format!("deb [trusted=yes] http://{}/apt/ ./\n", p.http_addr);
    let inputs = format!(
        "  repo             = \"{repo}\"\n  admin_token      = \"{admin}\"\n  \
         join_token       = \"{join}\"\n  viewer_token     = \"{viewer}\"\n  \
         binary_url       = \"{binary_url}\"\n  binary_sha256    = \"{sha}\"\n  \
         apt_sources_list = {apt_json}\n",
        repo = git.url,
        admin = ADMIN_TOKEN,
        join = neutral_e2e::cluster::JOIN_TOKEN,
        viewer = neutral_e2e::cluster::VIEWER_TOKEN,
        sha = sha256_hex(&binary),
        apt_json = serde_json::to_string(&apt).unwrap(),
    );
    let user_data = render_user_data(&terraform, "control-plane", &inputs, "");
    assert!(
        user_data.contains("neutral-serve.service.j2"),
        "{user_data}"
    );
    let (cp, cp_ip) = p.fresh_machine("cp-3");
    let stages = run_cloud_init(&p, &cp, &apt, &user_data);

    let api = SocketAddr::from((cp_ip, neutral_e2e::testbed::deploy::API_PORT));
    let head = std::process::Command::new("git")
        .arg("-C")
        .arg(&p.d.repo.bare)
        .args(["rev-parse", "main"])
        .output()
        .expect("git rev-parse");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    settle(
        &p,
        &cp,
        cp_ip,
        "the control plane serving the repository's tip",
        || {
            http::request(api, "GET", "/status", Some(ADMIN_TOKEN), None)
                .ok()
                .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
                .is_some_and(|s| s["commit"] == head.as_str())
        },
    );
    let viewer = neutral_e2e::cluster::VIEWER_TOKEN;
    assert_eq!(
        http::request(api, "GET", "/nodes", Some(viewer), None)
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        http::request(api, "GET", "/nodes", None, None)
            .unwrap()
            .status,
        401
    );
    let show = p.d.bed.exec_ok(
        &cp,
        &[
            "systemctl",
            "show",
            "neutral-serve",
            "-p",
            "User,Restart,NoNewPrivileges,ProtectSystem,UnitFileState,ActiveState,ExecStart",
        ],
    );
    for want in [
        "User=neutral",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "UnitFileState=enabled",
        "ActiveState=active",
        "--viewer-token-file /etc/neutral/viewer-token",
    ] {
        assert!(show.contains(want), "{want} not in:\n{show}");
    }
    assert!(!show.contains(ADMIN_TOKEN));
    let modes = p.d.bed.exec_ok(
        &cp,
        &[
            "stat",
            "-c",
            "%U:%G %a",
            "/var/lib/neutral",
            "/etc/neutral/admin-token",
        ],
    );
    assert_eq!(
        modes.trim(),
        "neutral:neutral 700\nroot:neutral 640",
        "{modes}"
    );
    eprintln!(
        "FIGURES provision-cloud-init-cp: cloud-init stages {:.1}s",
        stages.as_secs_f64()
    );
}
