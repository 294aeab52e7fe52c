//! End-to-end test of issue 14's last item: idle and slow connections must
//! not exhaust the daemon. A real `neutral serve` under `prlimit
//! --nofile=1024:1024` takes 2,000 silent and 2,000 one-byte-a-second
//! connections (reconnecting when closed) from 20 loopback addresses while
//! three nodes heartbeat over fresh connections and an admin reads
//! `/status`; every one of those must succeed, every attacking connection
//! must be closed by the server within the header-read timeout, and the
//! limits must be logged and counted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use neutral_e2e::cluster::{ADMIN_TOKEN, Daemon, Repo, fast_config, free_port, wait_for};
use neutral_e2e::http;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
const PER_IP: usize = 100;
/// How long the attack lasts.
const ATTACK: Duration = Duration::from_secs(10);
/// Attacking source addresses: 127.0.0.10 ..= 127.0.0.29.
const ATTACKERS: u8 = 20;
const IDLE: usize = 2_000;
const SLOW: usize = 2_000;

/// What the attacking connections saw.
#[derive(Debug, Default)]
struct Seen {
    /// Connections made.
    connected: AtomicUsize,
    /// Closed by the server at once (refused by a limit): within 500 ms.
    closed_at_once: AtomicUsize,
    /// Closed by the server after 1.5 s or more (evicted by a timeout).
    evicted: AtomicUsize,
    /// The longest a connection stayed open, in milliseconds.
    longest_ms: AtomicUsize,
    /// Connections still open when the attack ended.
    open_at_end: AtomicUsize,
}

impl Seen {
    fn closed(&self, lived: Duration) {
        let ms = usize::try_from(lived.as_millis()).unwrap_or(usize::MAX);
        self.longest_ms.fetch_max(ms, Ordering::Relaxed);
        if lived < Duration::from_millis(500) {
            self.closed_at_once.fetch_add(1, Ordering::Relaxed);
        } else if lived >= Duration::from_millis(1500) {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One attacking connection, again and again until `end`: connect from
/// `source`, then either say nothing (`slow` false) or send one byte of a
/// request head every second, until the server closes it; pause 1 s.
async fn attacker(api: SocketAddr, source: IpAddr, slow: bool, end: Instant, seen: Arc<Seen>) {
    while Instant::now() < end {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            return;
        };
        if socket.bind(SocketAddr::new(source, 0)).is_err() {
            return;
        }
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(5), socket.connect(api)).await
        else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        seen.connected.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let head = b"POST /nodes/heartbeat HTTP/1.1\r\nHost: x\r\n";
        let mut buf = [0u8; 512];
        let mut sent = 0;
        let closed = loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            let wait = if slow {
                left.min(Duration::from_secs(1))
            } else {
                left
            };
            match tokio::time::timeout(wait, stream.read(&mut buf)).await {
                // EOF, reset, or an error answer: the server is done with it.
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(_)) => continue,
                Err(_) if slow => {
                    let byte = head
                        .get(sent % head.len()..=sent % head.len())
                        .unwrap_or(b"x");
                    sent += 1;
                    if stream.write_all(byte).await.is_err() {
                        break true;
                    }
                }
                Err(_) => {}
            }
        };
        if closed {
            seen.closed(opened.elapsed());
        } else {
            seen.open_at_end.fetch_add(1, Ordering::Relaxed);
            seen.longest_ms.fetch_max(
                usize::try_from(opened.elapsed().as_millis()).unwrap_or(usize::MAX),
                Ordering::Relaxed,
            );
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The daemon's log without terminal colours.
fn plain_log(daemon: &Daemon) -> String {
    let log = daemon.log_text();
    let mut out = String::with_capacity(log.len());
    let mut rest = log.as_str();
    while let Some(at) = rest.find('\u{1b}') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// The value of a metric sample line, e.g.
/// `neutral_api_connections_refused_total{reason="per_ip"}`.
fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
}

#[test]
fn idle_and_slow_connections_do_not_starve_heartbeats_or_status() {
    // The attack holds 4,000+ sockets of this process.
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert!(
        hard >= 6_000,
        "this test needs 6,000 open files (hard limit {hard})"
    );
    if soft < hard {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let files = fast_config(free_port());
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &refs);
    let per_ip = PER_IP.to_string();
    let daemon = Daemon::start_under(
        &["prlimit", "--nofile=1024:1024", "--"],
        &repo.bare,
        &dir.path().join("data"),
        &[
            "--heartbeat-interval",
            "500ms",
            "--heartbeat-timeout",
            "5s",
            "--sync-interval",
            "1s",
            "--no-autoscale",
            "--no-probes",
            "--header-read-timeout",
            "2s",
            "--max-connections-per-ip",
            &per_ip,
            "--node-connection-reserve",
            "64",
        ],
        &[],
    );
    let log = plain_log(&daemon);
    assert!(
        log.contains("open-file limit") && log.contains("soft=1024") && log.contains("hard=1024"),
        "{log}"
    );
    // 1,024 files − 256 reserved = 768 connections, 64 of them for nodes.
    assert!(log.contains("max_connections=768"), "{log}");
    wait_for("the first sync", Duration::from_secs(20), || {
        let status = daemon.admin("GET", "/status", None).json();
        status["commit"].as_str().map(str::to_owned)
    });

    // Three nodes register (from 127.0.0.1, which makes it a node address).
    let nodes: Vec<(String, String)> = (1..=3)
        .map(|i| daemon.register_node("jp", &format!("127.0.3.{i}")))
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The per-address cap: 150 connections from one address, 50 refused.
    let one = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    let single = Arc::new(Seen::default());
    let single_end = Instant::now() + Duration::from_secs(1);
    runtime.block_on(async {
        let tasks: Vec<_> = (0..150)
            .map(|_| {
                tokio::spawn(attacker(
                    daemon.api,
                    one,
                    false,
                    single_end,
                    Arc::clone(&single),
                ))
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let metrics = daemon.admin("GET", "/metrics", None).body;
    assert_eq!(
        metric(
            &metrics,
            r#"neutral_api_connections_refused_total{reason="per_ip"}"#
        ),
        50,
        "{single:?}"
    );
    assert_eq!(
        single.closed_at_once.load(Ordering::Relaxed),
        50,
        "{single:?}"
    );

    // The attack, with heartbeats and /status reads alongside.
    let seen = Arc::new(Seen::default());
    let started = Instant::now();
    let end = started + ATTACK;
    let attack = {
        let seen = Arc::clone(&seen);
        let api = daemon.api;
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..IDLE + SLOW)
                    .map(|n| {
                        let last = 10 + u8::try_from(n % usize::from(ATTACKERS)).unwrap();
                        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
                        tokio::spawn(attacker(api, source, n >= IDLE, end, Arc::clone(&seen)))
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
        })
    };
    let mut heartbeats = Vec::new();
    let mut statuses = Vec::new();
    let mut round = 0;
    while Instant::now() < end {
        for (id, token) in &nodes {
            let at = started.elapsed();
            let result = http::request(
                daemon.api,
                "POST",
                "/nodes/heartbeat",
                Some(token),
                Some(&format!(r#"{{"node_id": "{id}"}}"#)),
            );
            heartbeats.push((at, result.map(|r| r.status).map_err(|e| e.to_string())));
        }
        if round % 3 == 0 {
            let at = started.elapsed();
            let result = http::request(daemon.api, "GET", "/status", Some(ADMIN_TOKEN), None);
            statuses.push((at, result.map(|r| r.status).map_err(|e| e.to_string())));
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    attack.join().unwrap();
    eprintln!(
        "attack: {seen:?}; {} heartbeats, {} /status reads",
        heartbeats.len(),
        statuses.len()
    );

    let failed: Vec<_> = heartbeats.iter().filter(|(_, r)| *r != Ok(200)).collect();
    assert!(failed.is_empty(), "heartbeats failed: {failed:?}");
    assert!(heartbeats.len() >= 30, "{}", heartbeats.len());
    let failed: Vec<_> = statuses.iter().filter(|(_, r)| *r != Ok(200)).collect();
    assert!(failed.is_empty(), "/status failed: {failed:?}");
    assert!(statuses.len() >= 4, "{}", statuses.len());
    // The limits refused the excess, the timeouts evicted the rest: no
    // attacking connection outlived the header-read timeout by much.
    let connected = seen.connected.load(Ordering::Relaxed);
    assert!(connected >= IDLE + SLOW, "{seen:?}");
    assert!(seen.closed_at_once.load(Ordering::Relaxed) > 0, "{seen:?}");
    assert!(seen.evicted.load(Ordering::Relaxed) >= 500, "{seen:?}");
    let longest = Duration::from_millis(seen.longest_ms.load(Ordering::Relaxed) as u64);
    assert!(
        longest < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "a connection stayed open {longest:?}: {seen:?}"
    );

    let log = plain_log(&daemon);
    assert!(
        log.contains("API connection refused: connection limit reached"),
        "{log}"
    );
    assert!(
        log.contains("API connection refused: per-client connection limit reached"),
        "{log}"
    );
    // Rate-limited: thousands refused, a handful of lines.
    let lines = log.matches("API connection refused").count();
    let metrics = daemon.admin("GET", "/metrics", None).body;
    let refused_total = metric(
        &metrics,
        r#"neutral_api_connections_refused_total{reason="total"}"#,
    );
    let refused_per_ip = metric(
        &metrics,
        r#"neutral_api_connections_refused_total{reason="per_ip"}"#,
    );
    eprintln!("refused: total {refused_total}, per address {refused_per_ip}; {lines} log lines");
    assert!(refused_total > 0 && refused_per_ip >= 50);
    assert!(
        lines <= 2 * (ATTACK.as_secs() as usize / 5 + 2) + 1,
        "{lines} lines"
    );
    // The daemon is still whole: the nodes are up, nothing is left open.
    for (id, _) in &nodes {
        assert_eq!(daemon.node_status(id).as_deref(), Some("up"));
    }
    wait_for(
        "the attack's connections to be gone",
        Duration::from_secs(10),
        || {
            let metrics = daemon.admin("GET", "/metrics", None).body;
            (metric(&metrics, "neutral_api_connections_open") <= 1).then_some(())
        },
    );
}
