//! The agent's pacing on paused tokio time against an in-memory node API:
//! heartbeats at exactly the interval the control plane gives, retries
//! inside the backoff schedule's bounds, re-registration after a forgotten
//! node paced by the same schedule. Virtual time makes every gap exact and
//! the tests take no wall time.

use std::sync::Mutex;

use neutral_core::backoff::Backoff;
use reqwest::StatusCode;

use super::*;
use crate::config::AgentArgs;
use crate::protocol::{HeartbeatResponse, RegisterResponse};

/// One call the agent made, at virtual time since the test began.
#[derive(Clone, Debug, PartialEq)]
struct Call {
    at: Duration,
    kind: &'static str,
    /// The status the fake answered with.
    status: u16,
}

/// What the fake answers at a moment: the heartbeat interval it asks for,
/// and a failure status for heartbeats and registrations, if any.
#[derive(Clone, Copy, Debug)]
struct Answer {
    interval: Duration,
    heartbeat_failure: Option<u16>,
    register_failure: Option<u16>,
}

struct FakeControlPlane {
    base: reqwest::Url,
    start: Instant,
    script: Box<dyn Fn(Duration) -> Answer>,
    calls: Mutex<Vec<Call>>,
}

impl FakeControlPlane {
    fn new(script: impl Fn(Duration) -> Answer + 'static) -> Self {
        FakeControlPlane {
            base: "http://127.0.0.1:9/".parse().unwrap(),
            start: Instant::now(),
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
        }
    }

    fn answer(&self, kind: &'static str) -> (Answer, Result<(), CallError>) {
        let at = self.start.elapsed();
        let answer = (self.script)(at);
        let failure = match kind {
            "register" => answer.register_failure,
            _ => answer.heartbeat_failure,
        };
        self.calls.lock().unwrap().push(Call {
            at,
            kind,
            status: failure.unwrap_or(200),
        });
        let result = match failure {
            None => Ok(()),
            Some(code) => Err(CallError::Rejected {
                url: self.base.clone(),
                status: StatusCode::from_u16(code).unwrap(),
                code: "scripted".to_owned(),
                message: "scripted failure".to_owned(),
            }),
        };
        (answer, result)
    }

    fn calls(&self, kind: &str) -> Vec<Call> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.kind == kind).cloned().collect()
    }
}

impl NodeApi for FakeControlPlane {
    fn base(&self) -> &reqwest::Url {
        &self.base
    }

    async fn register(
        &self,
        _join_token: &str,
        _request: &RegisterRequest,
        _timeout: Duration,
    ) -> Result<RegisterResponse, CallError> {
        let (answer, result) = self.answer("register");
        result.map(|()| RegisterResponse {
            node_id: "jp-1".to_owned(),
            node_token: "token".to_owned(),
            heartbeat_interval_ms: millis(answer.interval),
            heartbeat_timeout_ms: None,
        })
    }

    async fn heartbeat(
        &self,
        _node_token: &str,
        _request: &HeartbeatRequest,
        _timeout: Duration,
    ) -> Result<HeartbeatResponse, CallError> {
        let (answer, result) = self.answer("heartbeat");
        result.map(|()| HeartbeatResponse {
            status: NodeStatus::Up,
            heartbeat_interval_ms: millis(answer.interval),
            release: None,
        })
    }
}

/// An agent whose metrics all come from a file, so no probe leaves the
/// process, with the backoff schedule `min..max`.
async fn agent(
    dir: &std::path::Path,
    min: Duration,
    max: Duration,
    fake: FakeControlPlane,
) -> Agent<FakeControlPlane> {
    let metrics = dir.join("neutral.prom");
    std::fs::write(
        &metrics,
        "neutral_node_cpu_ratio 0.25\nneutral_node_rtt_seconds 0.01\nneutral_node_error_ratio 0\n",
    )
    .unwrap();
    let args = AgentArgs {
        control_plane: fake.base.clone(),
        region: "jp".to_owned(),
        ip: Some("127.0.0.2".parse().unwrap()),
        metrics_file: Some(metrics),
        backoff_min: min,
        backoff_max: max,
        ..AgentArgs::default()
    };
    let config = AgentConfig::from_args_and_env(args, Some("join".to_owned()))
        .await
        .unwrap();
    Agent::with_client(config, None, fake).unwrap()
}

/// Runs the agent for `span` of virtual time and returns its fake.
async fn run_for(mut agent: Agent<FakeControlPlane>, span: Duration) -> FakeControlPlane {
    let outcome = tokio::time::timeout(span, agent.run()).await;
    assert!(outcome.is_err(), "the agent stopped early: {outcome:?}");
    agent.control_plane
}

fn gaps(calls: &[Call]) -> Vec<Duration> {
    calls.windows(2).map(|p| p[1].at - p[0].at).collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_the_interval_exactly_and_follow_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    // The control plane asks for 200 ms, then from 3 s on for 50 ms.
    let fake = FakeControlPlane::new(|at| Answer {
        interval: if at < Duration::from_secs(3) {
            ms(200)
        } else {
            ms(50)
        },
        heartbeat_failure: None,
        register_failure: None,
    });
    let agent = agent(dir.path(), ms(20), ms(200), fake).await;
    let fake = run_for(agent, Duration::from_secs(4)).await;
    assert_eq!(fake.calls("register").len(), 1);
    let beats = fake.calls("heartbeat");
    let before: Vec<Duration> = beats
        .iter()
        .filter(|c| c.at <= Duration::from_secs(3))
        .map(|c| c.at)
        .collect();
    // The first heartbeat goes out at once, then one every 200 ms exactly.
    assert_eq!(before.first(), Some(&Duration::ZERO));
    assert_eq!(before.len(), 16, "{before:?}");
    assert!(
        gaps(&beats[..before.len()]).iter().all(|g| *g == ms(200)),
        "{beats:?}"
    );
    // The first answer after 3 s asks for 50 ms; from then on every gap is 50 ms.
    let after: Vec<Call> = beats
        .iter()
        .filter(|c| c.at > Duration::from_secs(3))
        .cloned()
        .collect();
    assert!(gaps(&after).iter().all(|g| *g == ms(50)), "{after:?}");
    assert_eq!(after.len(), 20, "{after:?}");
}

#[tokio::test(start_paused = true)]
async fn failed_heartbeats_back_off_within_the_schedule_and_never_slower_than_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    // Heartbeats fail with 503 from 1 s to 20 s; the interval is 5 s, so the
    // retry cap (the interval) lies above the schedule's 100 ms..1.6 s.
    let fake = FakeControlPlane::new(|at| Answer {
        interval: Duration::from_secs(5),
        heartbeat_failure: (at >= Duration::from_secs(1) && at < Duration::from_secs(20))
            .then_some(503),
        register_failure: None,
    });
    let agent = agent(dir.path(), ms(100), ms(1600), fake).await;
    let backoff = Backoff::new(ms(100), ms(1600));
    let fake = run_for(agent, Duration::from_secs(30)).await;
    let beats = fake.calls("heartbeat");
    let failed: Vec<&Call> = beats.iter().filter(|c| c.status == 503).collect();
    assert!(failed.len() >= 10, "{beats:?}");
    // The n-th retry waits in [min, ceiling(n)]: 100 ms, then up to 200 ms,
    // 400 ms, 800 ms, 1.6 s and no more.
    for (n, pair) in failed.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let failures = u32::try_from(n + 1).unwrap();
        assert!(
            gap >= backoff.min() && gap <= backoff.ceiling(failures),
            "retry {failures} waited {gap:?}: {beats:?}"
        );
    }
    // The first retry waits exactly the floor.
    assert_eq!(failed[1].at - failed[0].at, ms(100));
    // The first success after the outage resets the pace to the interval.
    let recovered = beats
        .iter()
        .position(|c| c.status == 200 && c.at >= Duration::from_secs(20))
        .expect("a heartbeat after the outage");
    let after: Vec<Call> = beats[recovered..].to_vec();
    assert!(after.len() >= 2, "{beats:?}");
    assert!(gaps(&after).iter().all(|g| *g == Duration::from_secs(5)));
    assert_eq!(fake.calls("register").len(), 1, "a 503 is not a lost node");
}

#[tokio::test(start_paused = true)]
async fn a_control_plane_that_keeps_forgetting_the_node_is_asked_again_on_the_backoff_schedule() {
    let dir = tempfile::tempdir().unwrap();
    // Every heartbeat is refused as unknown (401) for 10 s: each session
    // ends at its first heartbeat, so re-registrations back off.
    let fake = FakeControlPlane::new(|at| Answer {
        interval: ms(100),
        heartbeat_failure: (at < Duration::from_secs(10)).then_some(401),
        register_failure: None,
    });
    let agent = agent(dir.path(), ms(50), ms(800), fake).await;
    let backoff = Backoff::new(ms(50), ms(800));
    let fake = run_for(agent, Duration::from_secs(12)).await;
    let registrations = fake.calls("register");
    let early: Vec<Call> = registrations
        .iter()
        .filter(|c| c.at < Duration::from_secs(10))
        .cloned()
        .collect();
    // 50 + ≤100 + ≤200 + ≤400 + ≤800 … : at least 12 rounds need more than
    // 10 s only if every wait is at its floor, so between 12 and 10 s / 50 ms.
    assert!(early.len() >= 12 && early.len() <= 200, "{early:?}");
    for (n, pair) in early.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let futile = u32::try_from(n + 1).unwrap();
        assert!(
            gap >= backoff.min() && gap <= backoff.ceiling(futile),
            "round {futile} waited {gap:?}"
        );
    }
    // Once the node is kept, heartbeats run at the interval again.
    let beats = fake.calls("heartbeat");
    let kept: Vec<Call> = beats.iter().filter(|c| c.status == 200).cloned().collect();
    assert!(kept.len() >= 5, "{beats:?}");
    assert!(gaps(&kept).iter().all(|g| *g == ms(100)), "{kept:?}");
}
