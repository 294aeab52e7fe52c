//! The agent stream (issue 17): real `neutral serve` and `neutral agent`
//! processes on loopback. A node whose agent and service die (kill -9, as a
//! crashed machine) leaves the answers within one probe round-trip, long
//! before its probe interval or heartbeat timeout would notice; a node whose
//! agent alone died stays up (the probe after the broken stream passes);
//! a drain reaches the agent on its stream at once, not at its next
//! heartbeat; and hostile streams (strangers, floods of streams, garbage,
//! oversized messages, a client that never reads) are refused or ended with
//! a reason while a real node keeps heartbeating.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use neutral_e2e::cluster::{ADMIN_TOKEN, Agent, Daemon, Repo, Service, free_port, wait_for};
use neutral_e2e::http;
use neutral_proto::v1::node_stream_client::NodeStreamClient;
use neutral_proto::v1::{ControlMessage, Heartbeat, Metrics, NodeMessage};
use serde_json::Value;

/// Probes every 20 s (fall 3) and a 30 s heartbeat timeout: without the
/// stream, a dead node stays in the answers for 30 s or more.
fn slow_probe_repo(dir: &std::path::Path, probe_port: u16) -> Repo {
    Repo::create(
        dir,
        &[
            (
                "platform-config/regions/jp.yaml",
                "name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 20\nbase_weight: 100\n",
            ),
            (
                "platform-config/gtm/app.yaml",
                &format!(
                    "domain: app.example.com\nzone: example.com\nttl: 30\nmin_ready_nodes: 1\n\
                     regions: {{ jp: 100 }}\nall_down: fail_open\n\
                     probe: {{ http: /healthz, port: {probe_port}, interval: 20s, timeout: 500ms, rise: 1, fall: 3 }}\n"
                ),
            ),
        ],
    )
}

const SLOW_DETECTION: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--heartbeat-timeout",
    "30s",
    "--sync-interval",
    "1s",
    "--no-autoscale",
];

fn wait_status(daemon: &Daemon, id: &str, status: &str, timeout: Duration) -> Value {
    wait_for(&format!("node {id} to be {status}"), timeout, || {
        daemon.node(id).filter(|n| n["status"] == status)
    })
}

fn answer_addresses(daemon: &Daemon) -> Vec<String> {
    let domain = daemon.get("/domains/app.example.com").json();
    domain["answers"]
        .as_array()
        .map(|answers| {
            answers
                .iter()
                .filter_map(|a| a["address"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of a sample line of `/metrics` (0 when absent).
fn metric(daemon: &Daemon, sample: &str) -> u64 {
    let text = daemon.get("/metrics").body;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn streams_open(daemon: &Daemon) -> u64 {
    metric(daemon, "neutral_node_streams_open ")
}

fn stream_events(daemon: &Daemon, event: &str) -> u64 {
    metric(
        daemon,
        &format!("neutral_node_streams_total{{event=\"{event}\"}} "),
    )
}

#[test]
fn a_crashed_node_leaves_the_answers_within_one_probe_and_a_crashed_agent_alone_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = slow_probe_repo(dir.path(), port);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), SLOW_DETECTION);
    let mut crashing_service = Some(Service::start("127.0.0.71", port));
    let _service = Service::start("127.0.0.72", port);
    let mut crashing = Agent::start(&daemon, dir.path(), "a", "jp", "127.0.0.71");
    let mut restarted = Agent::start(&daemon, dir.path(), "b", "jp", "127.0.0.72");
    let (crashing_id, restarted_id) = (crashing.node_id(), restarted.node_id());
    for id in [&crashing_id, &restarted_id] {
        wait_status(&daemon, id, "up", Duration::from_secs(20));
    }
    wait_for("both agents to stream", Duration::from_secs(10), || {
        (streams_open(&daemon) == 2).then_some(())
    });

    // The agent alone dies: the probe after the broken stream passes, the
    // node stays up and in the answers.
    let probes_before = metric(&daemon, "neutral_probes_total{result=\"ok\"} ");
    restarted.kill9();
    wait_for("the confirming probe", Duration::from_secs(5), || {
        (metric(&daemon, "neutral_probes_total{result=\"ok\"} ") > probes_before).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        daemon.node(&restarted_id).unwrap()["status"],
        "up",
        "{}",
        daemon.log_text()
    );
    assert!(answer_addresses(&daemon).contains(&"127.0.0.72".to_owned()));
    assert!(stream_events(&daemon, "broken") + stream_events(&daemon, "closed") >= 1);
    // It comes back on the same identity and streams again.
    restarted.restart();
    wait_for(
        "the restarted agent to stream",
        Duration::from_secs(10),
        || (streams_open(&daemon) == 2).then_some(()),
    );
    assert_eq!(restarted.node_id(), restarted_id);

    // The whole node dies (its service, then its agent, as one machine):
    // out of the answers at once, 20 s before its next probe and 30 s
    // before its heartbeat timeout would have said so.
    drop(crashing_service.take());
    let killed = Instant::now();
    crashing.kill9();
    let node = wait_status(&daemon, &crashing_id, "down", Duration::from_secs(5));
    let detected = killed.elapsed();
    assert!(
        detected < Duration::from_secs(5),
        "took {detected:?}: {node}"
    );
    let reason = node["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("agent stream") && reason.contains("probe that followed failed"),
        "{node}"
    );
    wait_for(
        "the dead node to leave the answers",
        Duration::from_secs(2),
        || (!answer_addresses(&daemon).contains(&"127.0.0.71".to_owned())).then_some(()),
    );
    assert_eq!(daemon.node(&restarted_id).unwrap()["status"], "up");
    eprintln!("crashed node out of the answers after {detected:?}");
}

#[test]
fn a_drain_is_pushed_to_the_agent_on_its_stream_not_at_its_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = slow_probe_repo(dir.path(), port);
    // Heartbeats every 10 s: an answer-borne drain would take up to 10 s.
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[
            "--heartbeat-interval",
            "10s",
            "--heartbeat-timeout",
            "30s",
            "--sync-interval",
            "1s",
            "--no-autoscale",
        ],
    );
    let _service = Service::start("127.0.0.73", port);
    let agent = Agent::start(&daemon, dir.path(), "c", "jp", "127.0.0.73");
    let id = agent.node_id();
    wait_status(&daemon, &id, "up", Duration::from_secs(20));
    wait_for("the agent to stream", Duration::from_secs(15), || {
        (streams_open(&daemon) == 1).then_some(())
    });
    // Past the heartbeat the stream opened with, so the next is ~10 s away.
    std::thread::sleep(Duration::from_millis(300));
    let drained = daemon.admin("POST", &format!("/nodes/{id}/drain"), None);
    assert_eq!(drained.status, 200, "{}", drained.body);
    let asked = Instant::now();
    wait_for(
        "the agent to hear of the drain",
        Duration::from_secs(5),
        || agent.log_text().contains("\"drain\"").then_some(()),
    );
    let heard = asked.elapsed();
    assert!(heard < Duration::from_secs(3), "took {heard:?}");
    eprintln!("the agent heard of the drain after {heard:?}");
}

async fn client(api: SocketAddr) -> NodeStreamClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{api}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    NodeStreamClient::new(channel)
}

fn heartbeat(sequence: u64) -> NodeMessage {
    NodeMessage {
        sequence,
        heartbeat: Some(Heartbeat {
            metrics: Some(Metrics {
                cpu: 0.2,
                rtt_ms: 3.0,
                error_rate: 0.0,
            }),
            release: None,
        }),
    }
}

/// Opens `node`'s stream with `token`, sending `messages` then keeping
/// the request side open while the returned sender lives.
async fn open(
    client: &mut NodeStreamClient<tonic::transport::Channel>,
    node: &str,
    token: &str,
    messages: Vec<NodeMessage>,
) -> Result<
    (
        tonic::Streaming<ControlMessage>,
        tokio::sync::mpsc::Sender<NodeMessage>,
    ),
    tonic::Status,
> {
    let (sender, queued) = tokio::sync::mpsc::channel(messages.len().max(1) + 1);
    for message in messages {
        sender.try_send(message).unwrap();
    }
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(queued));
    request
        .metadata_mut()
        .insert("neutral-node-id", node.parse().unwrap());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let response = client.connect(request).await?;
    Ok((response.into_inner(), sender))
}

/// A raw gRPC request (HTTP/2, prior knowledge) whose body is `frame`:
/// the gRPC status the daemon answers with.
async fn raw_grpc(api: SocketAddr, node: &str, token: &str, frame: Vec<u8>) -> Option<String> {
    use http_body_util::{BodyExt, Full};
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(api).await.ok()?);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .ok()?;
    tokio::spawn(connection);
    let request = hyper::Request::post(format!("http://{api}/neutral.node.v1.NodeStream/Connect"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("neutral-node-id", node)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(bytes::Bytes::from(frame)))
        .ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .ok()?
        .ok()?;
    let headers = response.headers().clone();
    let collected = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .ok()?
        .ok()?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    trailers
        .get("grpc-status")
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn hostile_streams_are_refused_or_ended_and_a_real_node_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = slow_probe_repo(dir.path(), port);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), SLOW_DETECTION);
    let _service = Service::start("127.0.0.74", port);
    let agent = Agent::start(&daemon, dir.path(), "d", "jp", "127.0.0.74");
    let real = agent.node_id();
    wait_status(&daemon, &real, "up", Duration::from_secs(20));
    let (node, token) = daemon.register_node("jp", "127.0.0.75");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = daemon.api;

    runtime.block_on(async {
        let mut grpc = client(api).await;
        // A stranger, a wrong token, no metadata: refused at once.
        let stranger = open(&mut grpc, "jp-nobody", &token, vec![])
            .await
            .unwrap_err();
        assert_eq!(stranger.code(), tonic::Code::Unauthenticated, "{stranger}");
        let wrong = open(&mut grpc, &node, "not-the-token", vec![])
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong}");

        // 10,000 streams, 32 at a time over 4 connections (within HTTP/2's
        // 16 per connection): the strangers are refused, the node's own
        // replace each other (one open at most).
        let started = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(client(api).await);
        }
        let mut refused = 0u32;
        let mut accepted = 0u32;
        for round in 0..10_000_usize.div_ceil(32) {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..32usize {
                let mut grpc = clients[i % clients.len()].clone();
                let (node, token) = (node.clone(), token.clone());
                let own = i % 8 == 0;
                set.spawn(async move {
                    let token = if own {
                        token
                    } else {
                        format!("guess-{round}-{i}")
                    };
                    open(&mut grpc, &node, &token, vec![]).await.map(drop)
                });
            }
            while let Some(result) = set.join_next().await {
                match result.unwrap() {
                    Ok(()) => accepted += 1,
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
                        refused += 1;
                    }
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "10,000 streams took too long"
            );
        }
        assert!(
            refused >= 8_000 && accepted >= 1_000,
            "{refused} refused, {accepted} accepted"
        );
    });
    assert!(
        streams_open(&daemon) <= 2,
        "open: {}",
        streams_open(&daemon)
    );
    assert!(stream_events(&daemon, "refused") >= 8_000);
    let status = daemon.get("/status");
    assert_eq!(status.status, 200);
    assert_eq!(daemon.node(&real).unwrap()["status"], "up");

    runtime.block_on(async {
        // Garbage where a message should be, and a message over the limit:
        // the stream ends with an error status, the daemon carries on.
        let garbage = raw_grpc(api, &node, &token, grpc_frame(&[0x0f, 0xff, 0xff, 0xff])).await;
        assert!(
            garbage.as_deref().is_some_and(|code| code != "0"),
            "{garbage:?}"
        );
        let oversized = raw_grpc(api, &node, &token, grpc_frame(&vec![0u8; 64 * 1024])).await;
        assert!(
            oversized.as_deref().is_some_and(|code| code != "0"),
            "{oversized:?}"
        );

        // A client that sends heartbeats and never reads the answers: once
        // HTTP/2's window and the small outbox are full, the stream ends.
        let mut grpc = client(api).await;
        let messages: Vec<NodeMessage> = (1..=20_000).map(heartbeat).collect();
        let (unread, keep_open) = open(&mut grpc, &node, &token, messages).await.unwrap();
        wait_for(
            "the unread stream to be ended",
            Duration::from_secs(20),
            || {
                let text = http::request(api, "GET", "/metrics", Some(ADMIN_TOKEN), None)
                    .ok()?
                    .body;
                text.contains("neutral_node_streams_total{event=\"not_reading\"} 1")
                    .then_some(())
            },
        );
        drop((unread, keep_open));
    });
    assert!(
        daemon
            .log_text()
            .contains("agent stream ended by the control plane")
    );
    assert_eq!(daemon.get("/status").status, 200);
    wait_status(&daemon, &real, "up", Duration::from_secs(2));
    assert!(!daemon.log_text().contains("panicked"));
}
