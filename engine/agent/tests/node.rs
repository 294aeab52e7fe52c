//! A full node against real containerd (a private instance), runc and nginx:
//! blue/green releases under load, a release whose health check fails, a
//! killed workload, and bad input. Needs root and Debian's containerd, runc,
//! nginx and busybox-static (scripts/setup installs them); without them each
//! test says so loudly and passes without running.

#[path = "support/node.rs"]
mod node_support;

use std::sync::Arc;
use std::time::Duration;

use neutral_agent::node::access_log::{AccessLogTail, summarise};
use neutral_agent::node::nginx::NginxError;
use neutral_agent::node::release::{Colour, Outcome};
use neutral_agent::node::runtime::{Runtime, TaskState};
use neutral_agent::node::{BootError, ReleaseError, ReleaseRequest};
use node_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_under_load_switches_versions_without_a_failed_request() {
    let Some(images) = prerequisites() else {
        return;
    };
    let node = TestNode::start(images, None).await;
    node.boot_with("v1").await;
    assert_eq!(node.get("/version").await.unwrap(), (200, "v1".to_owned()));

    let load = Load::start(node.listen, 8, "/version");
    load.wait_for_requests(600).await;
    let before = load.snapshot();
    let release_started = std::time::Instant::now();
    let report = node
        .node
        .release(&ReleaseRequest {
            image: images.image("v2"),
            ..ReleaseRequest::default()
        })
        .await
        .unwrap();
    let release_done = std::time::Instant::now();
    let during = load.snapshot();
    load.wait_for_requests(during.total() + 600).await;
    let result = load.stop().await;

    assert_eq!(report.colour, Colour::Green);
    assert!(report.drained, "{report:?}");
    assert!(result.total() >= 2000, "{result:?}");
    assert_eq!(
        result.failures, 0,
        "failed requests: {:?}",
        result.failure_samples
    );
    assert!(
        result.count("v1") > 0 && result.count("v2") > 0,
        "{result:?}"
    );
    let early = result.bodies_finished_before(release_started);
    assert!(
        !early.is_empty() && early.iter().all(|b| b == "v1"),
        "before the release: v1 only"
    );
    let late = result.bodies_started_after(release_done);
    assert!(
        late.len() >= 500 && late.iter().all(|b| b == "v2"),
        "after the release: v2 only"
    );
    assert!(
        during.total() > before.total(),
        "load kept flowing during the release"
    );
    assert_eq!(
        node.node.runtime().state("svc-blue").await.unwrap(),
        TaskState::Absent,
        "the old colour is gone"
    );
    assert_eq!(node.get("/version").await.unwrap(), (200, "v2".to_owned()));
    let view = node.node.view().await;
    assert_eq!(
        view.active.as_ref().map(|a| a.image.clone()),
        Some(images.image("v2"))
    );
    assert_eq!(view.history.len(), 2);
    assert!(view.history.iter().all(|r| r.outcome == Outcome::Released));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_its_health_check_leaves_the_old_colour_serving() {
    let Some(images) = prerequisites() else {
        return;
    };
    let node = TestNode::start(images, None).await;
    node.boot_with("v1").await;
    node.release_ok("v2").await;
    let load = Load::start(node.listen, 8, "/version");
    let mut request = ReleaseRequest {
        image: images.image("v3"),
        timeout_ms: Some(1500),
        ..ReleaseRequest::default()
    };
    let err = node.node.release(&request).await.unwrap_err();
    let result = load.stop().await;
    assert!(matches!(err, ReleaseError::Unhealthy { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("failed its health check /healthz"),
        "{message}"
    );
    assert!(message.contains("HTTP 404"), "{message}");
    assert_eq!(result.failures, 0, "{:?}", result.failure_samples);
    assert_eq!(result.count("v3"), 0);
    assert_eq!(node.get("/version").await.unwrap(), (200, "v2".to_owned()));
    assert_eq!(node.node.active().unwrap().image, images.image("v2"));
    assert_eq!(
        node.node.runtime().state("svc-blue").await.unwrap(),
        TaskState::Absent,
        "the failed colour was removed"
    );
    let last = node.node.view().await.history.last().cloned().unwrap();
    assert_eq!(last.outcome, Outcome::Failed);
    assert!(last.reason.unwrap().contains("health check"));

    // Another health path that the image does serve makes the same image pass.
    request.health_path = Some("/version".to_owned());
    node.node.release(&request).await.unwrap();
    assert_eq!(
        node.get("/version").await.unwrap(),
        (200, "bad3".to_owned())
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workload_shows_in_the_metrics_and_the_next_release_recovers() {
    let Some(images) = prerequisites() else {
        return;
    };
    let node = TestNode::start(images, None).await;
    node.boot_with("v1").await;
    let mut tail = AccessLogTail::new(node.node.nginx().settings().access_log_path());
    for _ in 0..5 {
        node.get("/version").await.unwrap();
    }
    let healthy = summarise(&tail.read_new()).unwrap();
    assert_eq!(healthy.error_rate, 0.0);

    node.ctr(&["tasks", "kill", "--signal", "SIGKILL", "svc-blue"]);
    wait_until(Duration::from_secs(10), "the workload to die", || async {
        !node
            .node
            .runtime()
            .state("svc-blue")
            .await
            .unwrap()
            .is_running()
    })
    .await;
    for _ in 0..5 {
        assert_eq!(node.get("/version").await.unwrap().0, 502);
    }
    let broken = summarise(&tail.read_new()).unwrap();
    assert_eq!(
        broken.error_rate, 1.0,
        "nginx logged the failures: {broken:?}"
    );

    let report = node
        .node
        .release(&ReleaseRequest {
            image: images.image("v2"),
            ..ReleaseRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(report.colour, Colour::Green);
    assert_eq!(node.get("/version").await.unwrap(), (200, "v2".to_owned()));
    assert_eq!(
        node.node.runtime().state("svc-blue").await.unwrap(),
        TaskState::Absent
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_the_serving_colour_is_untouched() {
    let Some(images) = prerequisites() else {
        return;
    };
    let include = images
        .dir
        .path()
        .join(format!("site-{}.conf", std::process::id()));
    std::fs::write(&include, "add_header X-Node test;\n").unwrap();
    let node = TestNode::start(images, Some(include.clone())).await;
    node.boot_with("v1").await;
    let serving = || async { node.get("/version").await.unwrap() };

    // An image that does not exist.
    let err = node.release_err("neutral.test/web:nope").await;
    assert!(matches!(err, ReleaseError::Image(_)), "{err}");
    assert!(
        err.to_string().contains("is not in containerd's store"),
        "{err}"
    );
    assert_eq!(serving().await, (200, "v1".to_owned()));

    // A malformed reference never reaches containerd.
    let err = node.release_err("web v2").await;
    assert!(matches!(err, ReleaseError::BadRequest(_)), "{err}");

    // The idle colour's port taken by another process.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", node.ports.green)).unwrap();
    let err = node.release_err(&images.image("v2")).await;
    assert!(
        matches!(err, ReleaseError::PortInUse { colour: Colour::Green, port } if port == node.ports.green),
        "{err}"
    );
    assert!(err.to_string().contains("is in use"), "{err}");
    drop(squatter);
    assert_eq!(serving().await, (200, "v1".to_owned()));

    // nginx configuration that fails `nginx -t` (the operator's snippet broke).
    std::fs::write(&include, "this_is_not_a_directive on;\n").unwrap();
    let err = node.release_err(&images.image("v2")).await;
    assert!(
        matches!(
            err,
            ReleaseError::Switch {
                source: NginxError::ConfigRejected(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("this_is_not_a_directive"), "{err}");
    assert_eq!(serving().await, (200, "v1".to_owned()));
    assert_eq!(
        node.node.runtime().state("svc-green").await.unwrap(),
        TaskState::Absent,
        "the new colour was stopped"
    );
    assert_eq!(
        node.node.nginx().written_upstream(),
        Some(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            node.ports.blue
        ))),
        "the previous upstream file is back"
    );

    // Fixed, the same release goes through.
    std::fs::write(&include, "add_header X-Node test;\n").unwrap();
    node.release_ok("v2").await;
    let history = node.node.view().await.history;
    let failed = history
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .count();
    assert_eq!(failed, 4, "{history:?}");

    // Two releases at once: the second is refused, not queued.
    let node = Arc::new(node);
    let first = {
        let node = Arc::clone(&node);
        let image = images.image("v1");
        tokio::spawn(async move {
            node.node
                .release(&ReleaseRequest {
                    image,
                    ..ReleaseRequest::default()
                })
                .await
        })
    };
    wait_until(
        Duration::from_secs(5),
        "the first release to start",
        || async { node.node.view().await.releasing },
    )
    .await;
    let err = node.release_err(&images.image("v1")).await;
    assert!(matches!(err, ReleaseError::Busy), "{err}");
    first.await.unwrap().unwrap();
    Arc::try_unwrap(node).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_service_address_is_taken_does_not_start_and_says_why() {
    let Some(images) = prerequisites() else {
        return;
    };
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = squatter.local_addr().unwrap();
    let node = TestNode::start_listening(images, None, listen).await;
    let err = node
        .node
        .boot(Some("neutral.test/web:v1"))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, BootError::Nginx(NginxError::StartFailed(_))),
        "{message}"
    );
    assert!(message.contains("Address already in use"), "{message}");
    assert!(node.node.active().is_none(), "nothing was released");
    drop(squatter);
    // Once the address is free the same node boots.
    node.node.boot(Some("neutral.test/web:v1")).await.unwrap();
    assert_eq!(node.get("/version").await.unwrap(), (200, "v1".to_owned()));
    node.stop().await;
}
