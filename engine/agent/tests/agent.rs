//! The agent against an in-test control plane that speaks the node API:
//! registration, heartbeats with file-fed and measured metrics, identity across
//! restarts, re-registration, backoff, TLS and shutdown.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use neutral_agent::{AgentError, CallError};
use support::*;

const INTERVAL_MS: u64 = 100;

fn heartbeat_metrics(state: &Shared) -> Vec<MetricsBody> {
    lock(state)
        .heartbeats
        .iter()
        .filter(|h| h.status == 200)
        .filter_map(|h| h.body.as_ref().and_then(|b| b.metrics))
        .collect()
}

fn ok_heartbeats(state: &Shared) -> usize {
    lock(state)
        .heartbeats
        .iter()
        .filter(|h| h.status == 200)
        .count()
}

fn registered_ids(state: &Shared) -> Vec<String> {
    lock(state)
        .registrations
        .iter()
        .filter_map(|r| r.node_id.clone())
        .collect()
}

const FILE_A: &str = "\
# HELP neutral_node_cpu_ratio CPU utilisation.
# TYPE neutral_node_cpu_ratio gauge
neutral_node_cpu_ratio 0.25
neutral_node_rtt_seconds{service=\"web\"} 0.012
neutral_node_error_ratio 0.01
";

const FILE_B: &str = "\
neutral_node_cpu_ratio 0.9
neutral_node_rtt_seconds 0.5
neutral_node_error_ratio 0.2
";

#[tokio::test]
async fn registers_and_heartbeats_with_the_metrics_file_reread_every_time() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    let metrics_path = dir.path().join("neutral.prom");
    write_metrics(&metrics_path, FILE_A);
    let mut args = args(&cp.url(), "jp", dir.path());
    args.metrics_file = Some(metrics_path.clone());
    let agent = RunningAgent::start(config(args).await);

    wait_until(Duration::from_secs(5), "metrics from file A", || {
        heartbeat_metrics(&state).iter().any(|m| m.cpu == 0.25)
    })
    .await;
    let first = heartbeat_metrics(&state)[0];
    assert_eq!(first.cpu, 0.25);
    assert!((first.rtt_ms - 12.0).abs() < 1e-9, "{first:?}");
    assert_eq!(first.error_rate, 0.01);
    {
        let cp_state = lock(&state);
        let registration = cp_state.registrations[0].body.clone().unwrap();
        assert_eq!(registration.region, "jp");
        assert_eq!(registration.address, "127.0.0.2");
        assert_eq!(registration.mode.as_deref(), Some("containerd-only"));
        assert_eq!(registration.hostname.as_deref(), Some("node-a"));
        assert_eq!(
            registration.agent_version.as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            registration.node_id, None,
            "a fresh agent asks for no identity"
        );
        let id = cp_state.registrations[0].node_id.clone().unwrap();
        assert!(
            cp_state
                .heartbeats
                .iter()
                .all(|h| h.body.as_ref().unwrap().node_id == id)
        );
    }

    write_metrics(&metrics_path, FILE_B);
    wait_until(Duration::from_secs(5), "metrics from file B", || {
        heartbeat_metrics(&state).iter().any(|m| m.cpu == 0.9)
    })
    .await;
    let last = *heartbeat_metrics(&state).last().unwrap();
    assert_eq!((last.cpu, last.rtt_ms, last.error_rate), (0.9, 500.0, 0.2));

    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn heartbeats_follow_the_interval_the_control_plane_gives() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], 200);
    let cp = TestControlPlane::start(state.clone()).await;
    let metrics_path = dir.path().join("neutral.prom");
    write_metrics(&metrics_path, FILE_A);
    let mut args = args(&cp.url(), "jp", dir.path());
    args.metrics_file = Some(metrics_path);
    let agent = RunningAgent::start(config(args).await);
    wait_until(Duration::from_secs(5), "six heartbeats", || {
        ok_heartbeats(&state) >= 6
    })
    .await;
    let gaps: Vec<Duration> = {
        let cp_state = lock(&state);
        cp_state
            .heartbeats
            .windows(2)
            .map(|pair| pair[1].at - pair[0].at)
            .collect()
    };
    // Each gap is the interval plus the difference of two request latencies;
    // their mean is the interval plus a vanishing term.
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_millis(100) && *gap <= Duration::from_millis(1000),
            "heartbeat gaps {gaps:?}"
        );
    }
    let mean = gaps.iter().sum::<Duration>() / u32::try_from(gaps.len()).unwrap();
    assert!(
        mean >= Duration::from_millis(180) && mean <= Duration::from_millis(400),
        "mean gap {mean:?} of {gaps:?}"
    );
    // The control plane asks for a faster pace: the agent follows.
    lock(&state).interval_ms = 50;
    let before = ok_heartbeats(&state);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = ok_heartbeats(&state);
    assert!(
        after - before >= 7,
        "only {} heartbeats in 600 ms at 50 ms",
        after - before
    );
    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn measured_metrics_come_from_proc_stat_and_the_probe_and_a_bad_file_falls_back_to_them() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    // A 1 s interval leaves each of the two probes 200 ms, ample on a busy machine.
    let state = new_state(&["jp"], 1000);
    let cp = TestControlPlane::start(state.clone()).await;
    let service = ProbeService::start().await;
    let metrics_path = dir.path().join("neutral.prom");
    write_metrics(
        &metrics_path,
        "neutral_node_cpu_ratio 0.25\nneutral_node_error_ratio zero\n",
    );
    let mut args = args(&cp.url(), "jp", dir.path());
    args.probe_url = Some(service.url.clone());
    args.metrics_file = Some(metrics_path.clone());
    let agent = RunningAgent::start(config(args).await);

    // Two probes per heartbeat against a service that alternates 200 and 500.
    wait_until(
        Duration::from_secs(10),
        "three heartbeats with metrics",
        || heartbeat_metrics(&state).len() >= 3,
    )
    .await;
    for m in heartbeat_metrics(&state) {
        assert_eq!(m.error_rate, 0.5, "{m:?}");
        assert!(m.rtt_ms > 0.0 && m.rtt_ms < 200.0, "{m:?}");
        assert!((0.0..=1.0).contains(&m.cpu), "{m:?}");
        assert_ne!(m.cpu, 0.25, "the bad file's cpu line must not be used");
    }
    assert!(*service.hits.lock().unwrap() >= 6);

    // Once the file is repaired, its values win again and the probe is no
    // longer needed for them.
    write_metrics(&metrics_path, FILE_A);
    wait_until(Duration::from_secs(10), "file metrics", || {
        heartbeat_metrics(&state)
            .last()
            .is_some_and(|m| m.cpu == 0.25)
    })
    .await;
    agent.stop().await.unwrap();
    service.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn an_unreachable_probe_reports_full_error_rate() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut args = args(&cp.url(), "jp", dir.path());
    args.probe_url = Some(format!("http://{closed}/healthz").parse().unwrap());
    let agent = RunningAgent::start(config(args).await);
    wait_until(Duration::from_secs(5), "heartbeats with metrics", || {
        heartbeat_metrics(&state).len() >= 2
    })
    .await;
    let m = heartbeat_metrics(&state)[1];
    assert_eq!(m.error_rate, 1.0);
    // The round's per-request timeout (200 ms, shortened to fit the interval).
    assert!(m.rtt_ms > 0.0 && m.rtt_ms <= 200.0, "{m:?}");
    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn registers_again_without_its_old_id_after_a_401() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    let state_file = dir.path().join("agent-state.json");
    let mut args = args(&cp.url(), "jp", dir.path());
    args.state_file = Some(state_file.clone());
    let agent = RunningAgent::start(config(args).await);
    wait_until(Duration::from_secs(5), "first heartbeat", || {
        ok_heartbeats(&state) >= 1
    })
    .await;
    let first_id = registered_ids(&state)[0].clone();

    // The operator deletes the node: its token no longer works.
    lock(&state).nodes.clear();
    wait_until(Duration::from_secs(5), "a second registration", || {
        registered_ids(&state).len() >= 2
    })
    .await;
    let (second_request, second_id) = {
        let cp_state = lock(&state);
        let seen = &cp_state.registrations[1];
        (seen.body.clone().unwrap(), seen.node_id.clone().unwrap())
    };
    assert_eq!(
        second_request.node_id, None,
        "re-registers without the old id"
    );
    assert_ne!(second_id, first_id);
    assert!(lock(&state).heartbeats.iter().any(|h| h.status == 401));
    wait_until(
        Duration::from_secs(5),
        "heartbeats under the new id",
        || {
            lock(&state)
                .heartbeats
                .iter()
                .any(|h| h.status == 200 && h.body.as_ref().is_some_and(|b| b.node_id == second_id))
        },
    )
    .await;
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(kept["node_id"], second_id.as_str());
    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn keeps_its_identity_across_a_restart_through_the_state_file() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    let state_file = dir.path().join("agent-state.json");
    let mut args = args(&cp.url(), "jp", dir.path());
    args.state_file = Some(state_file.clone());

    let agent = RunningAgent::start(config(args.clone()).await);
    wait_until(Duration::from_secs(5), "first heartbeat", || {
        ok_heartbeats(&state) >= 1
    })
    .await;
    agent.stop().await.unwrap();
    let first_id = registered_ids(&state)[0].clone();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the state file holds a token: owner only"
        );
        let text = std::fs::read_to_string(&state_file).unwrap();
        assert!(
            text.contains(&first_id) && text.contains("token-"),
            "{text}"
        );
    }

    let restarted = RunningAgent::start(config(args).await);
    wait_until(Duration::from_secs(5), "second registration", || {
        registered_ids(&state).len() >= 2
    })
    .await;
    let (asked, granted, proof) = {
        let cp_state = lock(&state);
        let seen = &cp_state.registrations[1];
        (
            seen.body.clone().unwrap().node_id,
            seen.node_id.clone().unwrap(),
            seen.body.clone().unwrap().node_token,
        )
    };
    assert_eq!(asked.as_deref(), Some(first_id.as_str()));
    assert!(
        proof.is_some_and(|t| !t.is_empty()),
        "the agent proves its identity with the token it was given"
    );
    assert_eq!(granted, first_id, "same region and address: identity kept");
    restarted.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn backs_off_while_the_control_plane_fails_and_resumes_with_the_same_id() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    // Heartbeat retries never wait longer than the interval: make it long
    // enough for the backoff to show.
    let state = new_state(&["jp"], 1000);
    let cp = TestControlPlane::start(state.clone()).await;
    let mut args = args(&cp.url(), "jp", dir.path());
    args.backoff_min = Duration::from_millis(50);
    args.backoff_max = Duration::from_millis(800);
    let agent = RunningAgent::start(config(args).await);
    wait_until(Duration::from_secs(5), "first heartbeat", || {
        ok_heartbeats(&state) >= 1
    })
    .await;

    lock(&state).failure = Some(StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts: Vec<_> = {
        let mut cp_state = lock(&state);
        cp_state.failure = None;
        cp_state
            .heartbeats
            .iter()
            .filter(|h| h.status == 503)
            .map(|h| h.at)
            .collect()
    };
    let gaps: Vec<Duration> = attempts.windows(2).map(|p| p[1] - p[0]).collect();
    // Without backoff a failing request is retried at once, hundreds of times
    // in 2 s; from 50 ms to 800 ms with jitter it is about 7 times.
    assert!(
        (3..=15).contains(&attempts.len()),
        "{} attempts in 2 s: {gaps:?}",
        attempts.len()
    );
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(30)),
        "{gaps:?}"
    );
    // The n-th retry waits at most min(800 ms, 50 ms × 2^(n-1)) (jitter
    // below that; the exact schedule is tested on paused time in
    // `agent::pacing_tests`), plus what a loaded machine adds.
    let backoff =
        neutral_core::backoff::Backoff::new(Duration::from_millis(50), Duration::from_millis(800));
    for (n, gap) in gaps.iter().enumerate() {
        let ceiling = backoff.ceiling(u32::try_from(n + 1).unwrap());
        assert!(
            *gap <= ceiling + Duration::from_millis(300),
            "retry {} waited {gap:?}, over its ceiling {ceiling:?}: {gaps:?}",
            n + 1
        );
    }

    let recovered_from = ok_heartbeats(&state);
    wait_until(Duration::from_secs(4), "heartbeats again", || {
        ok_heartbeats(&state) > recovered_from + 1
    })
    .await;
    assert_eq!(registered_ids(&state).len(), 1, "5xx is not a lost node");
    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn survives_the_control_plane_going_away_and_coming_back() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    let agent = RunningAgent::start(config(args(&cp.url(), "jp", dir.path())).await);
    wait_until(Duration::from_secs(5), "first heartbeat", || {
        ok_heartbeats(&state) >= 1
    })
    .await;

    let stopped = cp.stop().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !agent.is_finished(),
        "an unreachable control plane is not fatal"
    );
    let before = ok_heartbeats(&state);
    let cp = stopped.restart().await;
    wait_until(
        Duration::from_secs(3),
        "heartbeats after the restart",
        || ok_heartbeats(&state) > before + 2,
    )
    .await;
    assert_eq!(registered_ids(&state).len(), 1, "the node was not lost");
    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn keeps_trying_an_undeclared_region_until_it_is_declared() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    let agent = RunningAgent::start(config(args(&cp.url(), "sg", dir.path())).await);
    wait_until(
        Duration::from_secs(5),
        "three refused registrations",
        || {
            lock(&state)
                .registrations
                .iter()
                .filter(|r| r.status == 404)
                .count()
                >= 3
        },
    )
    .await;
    assert!(!agent.is_finished());
    lock(&state).regions.insert("sg".to_owned());
    wait_until(Duration::from_secs(5), "registration in sg", || {
        registered_ids(&state)
            .iter()
            .any(|id| id.starts_with("sg-"))
    })
    .await;
    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn a_wrong_join_token_stops_the_agent_with_the_reason() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    std::fs::write(dir.path().join("join-token"), "not-the-token\n").unwrap();
    let agent = RunningAgent::start(config(args(&cp.url(), "jp", dir.path())).await);
    let err = agent.finished(Duration::from_secs(5)).await.unwrap_err();
    let AgentError::RegistrationRefused(refusal) = &err else {
        panic!("unexpected error: {err:?}");
    };
    match refusal.as_ref() {
        CallError::Rejected { status, code, .. } => {
            assert_eq!(status.as_u16(), 401);
            assert_eq!(code, "unauthorized");
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert!(!err.is_usage());
    assert!(err.to_string().contains("401"), "{err}");
    cp.stop().await;
}

#[tokio::test]
async fn verifies_the_control_plane_with_the_ca_file() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start_tls(state.clone(), &pki.cert_pem, &pki.key_pem).await;
    assert_eq!(cp.url().scheme(), "https");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let mut args = args(&cp.url(), "jp", dir.path());
    args.ca_file = Some(ca_file);
    let agent = RunningAgent::start(config(args).await);
    wait_until(Duration::from_secs(5), "heartbeats over TLS", || {
        ok_heartbeats(&state) >= 2
    })
    .await;
    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn refuses_a_control_plane_whose_certificate_is_not_trusted() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let server_pki = pki();
    let other_ca = pki();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp =
        TestControlPlane::start_tls(state.clone(), &server_pki.cert_pem, &server_pki.key_pem).await;

    // Trusting another CA, and trusting only the system's roots.
    let ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&ca_file, &other_ca.ca_pem).unwrap();
    let mut with_other_ca = args(&cp.url(), "jp", dir.path());
    with_other_ca.ca_file = Some(ca_file);
    let system_roots = args(&cp.url(), "jp", dir.path());
    let agents = [
        RunningAgent::start(config(with_other_ca).await),
        RunningAgent::start(config(system_roots).await),
    ];
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        lock(&state).registrations.is_empty(),
        "no request may reach an untrusted server"
    );
    for agent in agents {
        assert!(
            !agent.is_finished(),
            "it keeps retrying: the certificate may be fixed"
        );
        agent.stop().await.unwrap();
    }
    cp.stop().await;
}

#[tokio::test]
async fn stops_within_a_second_even_with_a_request_in_flight() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    let agent = RunningAgent::start(config(args(&cp.url(), "jp", dir.path())).await);
    wait_until(Duration::from_secs(5), "first heartbeat", || {
        ok_heartbeats(&state) >= 1
    })
    .await;
    lock(&state).heartbeat_delay = Duration::from_secs(30);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    agent.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    cp.stop().await;
}

#[tokio::test]
async fn stops_within_a_second_while_backing_off() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    lock(&state).failure = Some(StatusCode::BAD_GATEWAY);
    let mut args = args(&cp.url(), "jp", dir.path());
    args.backoff_min = Duration::from_secs(20);
    args.backoff_max = Duration::from_secs(60);
    let agent = RunningAgent::start(config(args).await);
    wait_until(Duration::from_secs(5), "a failed registration", || {
        !lock(&state).registrations.is_empty()
    })
    .await;
    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn run_resolves_the_arguments_and_stops_on_the_shutdown_future() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    let mut args = args(&cp.url(), "jp", dir.path());
    args.ip = None;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(neutral_agent::run(args, async {
        let _ = rx.await;
    }));
    wait_until(Duration::from_secs(5), "a heartbeat", || {
        ok_heartbeats(&state) >= 1
    })
    .await;
    let address = lock(&state).registrations[0].body.clone().unwrap().address;
    assert_eq!(
        address, "127.0.0.1",
        "the route to a loopback control plane"
    );
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    cp.stop().await;
}

/// The body of the child process that the signal test starts: the agent as
/// `neutral agent` runs it, through `run_blocking`.
#[test]
#[ignore = "runs only as the child process of the signal test"]
fn child_process_running_the_agent() {
    let url = std::env::var("NEUTRAL_AGENT_TEST_URL").expect("started by the signal test");
    let dir = std::env::var("NEUTRAL_AGENT_TEST_DIR").expect("started by the signal test");
    let args = args(&url.parse().unwrap(), "jp", std::path::Path::new(&dir));
    let code = neutral_agent::run_blocking(args);
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

#[tokio::test]
async fn run_blocking_exits_zero_within_a_second_of_sigterm_or_sigint() {
    init_logs();
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let state = new_state(&["jp"], INTERVAL_MS);
        let cp = TestControlPlane::start(state.clone()).await;
        let _ = args(&cp.url(), "jp", dir.path()); // writes the join token file
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process_running_the_agent",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("NEUTRAL_AGENT_TEST_URL", cp.url().as_str())
            .env("NEUTRAL_AGENT_TEST_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let heartbeating = eventually(Duration::from_secs(10), || ok_heartbeats(&state) >= 2).await;
        if !heartbeating {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child agent never heartbeat");
        }
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the agent did not stop within a second of SIG{signal}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(status.success(), "SIG{signal}: {status}");
        cp.stop().await;
    }
}

#[tokio::test]
async fn cpu_is_the_proc_stat_delta_between_heartbeats() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    let cp = TestControlPlane::start(state.clone()).await;
    let stat = dir.path().join("stat");
    std::fs::write(&stat, "cpu  100 0 0 900 0 0 0 0 0 0\n").unwrap();
    let metrics_path = dir.path().join("neutral.prom");
    write_metrics(
        &metrics_path,
        "neutral_node_rtt_seconds 0.002\nneutral_node_error_ratio 0\n",
    );
    let mut args = args(&cp.url(), "jp", dir.path());
    args.metrics_file = Some(metrics_path);
    let mut config = config(args).await;
    config.proc_stat = stat.clone();
    let agent = RunningAgent::start(config);

    // Unchanged counters: no time passed as far as the agent can tell, so
    // heartbeats carry no metrics.
    wait_until(Duration::from_secs(5), "two heartbeats", || {
        ok_heartbeats(&state) >= 2
    })
    .await;
    assert!(heartbeat_metrics(&state).is_empty());
    // 60 busy jiffies out of 100: 0.6 for exactly one heartbeat.
    write_metrics(&stat, "cpu  150 5 5 940 0 0 0 0 0 0\n");
    wait_until(Duration::from_secs(5), "a heartbeat with CPU", || {
        !heartbeat_metrics(&state).is_empty()
    })
    .await;
    let m = heartbeat_metrics(&state)[0];
    assert!((m.cpu - 0.6).abs() < 1e-9, "{m:?}");
    assert_eq!((m.rtt_ms, m.error_rate), (2.0, 0.0));
    let seen = ok_heartbeats(&state);
    wait_until(Duration::from_secs(5), "two more heartbeats", || {
        ok_heartbeats(&state) >= seen + 2
    })
    .await;
    assert_eq!(heartbeat_metrics(&state).len(), 1);
    agent.stop().await.unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn a_control_plane_that_keeps_forgetting_the_node_is_not_hammered() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = new_state(&["jp"], INTERVAL_MS);
    lock(&state).heartbeat_failure = Some(StatusCode::UNAUTHORIZED);
    let cp = TestControlPlane::start(state.clone()).await;
    let mut args = args(&cp.url(), "jp", dir.path());
    args.backoff_min = Duration::from_millis(50);
    args.backoff_max = Duration::from_millis(400);
    let agent = RunningAgent::start(config(args).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let registrations = registered_ids(&state).len();
    // Registering and being refused at once costs ~1 ms; without backoff that
    // is hundreds of rounds a second. Backing off from 50 ms it is a handful.
    assert!(
        (2..=20).contains(&registrations),
        "{registrations} registrations in 1 s"
    );
    lock(&state).heartbeat_failure = None;
    let before = ok_heartbeats(&state);
    wait_until(
        Duration::from_secs(3),
        "heartbeats once the node is kept",
        || ok_heartbeats(&state) > before + 2,
    )
    .await;
    agent.stop().await.unwrap();
    cp.stop().await;
}
