//! Detection latency: the time from a node's death to its exclusion from the
//! answers of the embedded DNS server of the real `neutral serve`, side by
//! side with PowerDNS Authoritative 4.7 and a Lua `ifurlup` record.
//!
//! Each node's service is a real HTTP server in its own process (this bench
//! binary re-executed with `--serve-http <addr>`) on its own loopback address;
//! the victim is 127.0.0.2, the survivor 127.0.0.3, on the same port.
//!
//! **neutral**: heartbeat timeout 1 s (nodes heartbeat every 250 ms), probe
//! `{ interval: 1s, timeout: 500ms, rise: 1, fall: 1 }`. The rrset
//! app.example.com A is written through the daemon's DNS API (`POST
//! /dns/zones`, `PATCH /dns/zones/example.com.`) with weights victim 99,
//! survivor 1, so that almost every answer names the victim while it is up.
//! Three kinds of death are measured: `stream` (the node's agent stream and
//! its service live in one process, which is SIGKILLed: the stream breaks,
//! the control plane probes at once), `node` (the service is SIGKILLed and
//! the node's HTTP heartbeats stop at the same instant) and `service` (only
//! the service dies; heartbeats go on, so only the probe can notice).
//!
//! **PowerDNS**: `pdns_server` with the gsqlite3 backend on loopback,
//! `lua-health-checks-interval=1`, the packet and query caches off (the
//! embedded server has none), and a LUA record
//! `A "ifurlup('http://127.0.0.2:<port>/healthz', {{'127.0.0.2','127.0.0.3'}},
//! {selector='all', timeout='1'})"`, so that answers name every address that
//! is up. The service is SIGKILLed.
//!
//! Both are measured the same way: from just before the kill, a UDP query
//! (std socket, hickory-proto encoding) every millisecond, bounded in count
//! and time, until `RUN` consecutive answers lack the victim; the detection
//! time is the receive time of the first of them. After each trial the
//! service (and heartbeats) restart and the bench waits for the victim to be
//! answered again.
//!
//! When the kill falls decides most of the figure, since both servers check
//! once a second: so each series runs in two phases.
//! - **after a check**: the service reports every request it answers; the
//!   kill comes right after a passing check, so the next check is a whole
//!   interval away. This is the worst case, nearly deterministic (check
//!   interval + reaction time), and the one the 10% target compares.
//! - **random**: the kill comes after a random pause of 0–1 s; detection is
//!   then uniform over one interval, and medians of a dozen trials differ by
//!   tens of percent from run to run for either server.
//!
//! `cargo bench -p neutral-e2e --bench detection_latency`; `DETECT_TRIALS`
//! (default 12) trials per series; `DETECT_ONLY=neutral|pdns` runs one side;
//! `DETECT_PDNS_CACHES=1` keeps PowerDNS' default packet and query caches. PowerDNS is skipped, with the reason, when
//! `pdns_server`, its SQLite schema or `sqlite3` is missing (`scripts/bench`
//! installs them).

#[allow(dead_code)]
mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{
    ChildGuard, ConfigRepo, Daemon, DaemonSpec, DnsAsker, Http, PDNS_CACHES_OFF, Pdns, env_number,
    pdns_missing, pdns_version,
};
use hickory_proto::op::ResponseCode;
use hyper::{Method, StatusCode};
use neutral_e2e::bench::{exclusion_index, median_p90, ratio};
use rand::Rng as _;

const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const SURVIVOR: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// Consecutive answers without the victim that count as its exclusion. With
/// weights 99:1 a live victim is missing from 4 answers in a row with
/// probability 1e-8.
const RUN: usize = 4;
const POLL_EVERY: Duration = Duration::from_millis(1);
/// A trial gives up after this long (or this many queries).
const TRIAL_LIMIT: Duration = Duration::from_secs(15);
const TRIAL_MAX_QUERIES: usize = 15_000;
const RECOVER_WITHIN: Duration = Duration::from_secs(20);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// A service process exits by itself after this long, whatever happens.
const SERVICE_LIFETIME: Duration = Duration::from_secs(1800);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|a| a == "--serve-http") {
        let addr = args.get(position + 1).expect("--serve-http <addr>");
        let stream = args.iter().position(|a| a == "--stream").map(|at| {
            let arg = |i: usize| {
                args.get(at + i)
                    .cloned()
                    .expect("--stream <api> <id> <token>")
            };
            (
                arg(1).parse().expect("--stream api address"),
                arg(2),
                arg(3),
            )
        });
        if let Some((api, id, token)) = stream {
            std::thread::spawn(move || stream_heartbeats(api, &id, &token));
        }
        serve_http(addr.parse().expect("--serve-http address"));
        return;
    }
    let trials = usize::try_from(env_number("DETECT_TRIALS", 12).clamp(1, 200)).unwrap_or(12);
    println!(
        "detection latency: node death → excluded from DNS answers; {trials} trials per series, \
         polling every {POLL_EVERY:?}, exclusion = first of {RUN} consecutive answers without the victim"
    );
    println!("machine before: {}", common::machine_load());
    let port = common_port();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let only = std::env::var("DETECT_ONLY").unwrap_or_default();
    let neutral = if only == "pdns" {
        Vec::new()
    } else {
        run_neutral(&runtime, port, trials)
    };
    let pdns = match pdns_missing() {
        _ if only == "neutral" => None,
        Some(reason) => {
            println!("\nPowerDNS: skipped ({reason}); run scripts/bench to install it");
            None
        }
        None => run_pdns(&runtime, port, trials),
    };
    drop(runtime);

    println!("\nmachine after: {}", common::machine_load());
    println!("\nsummary (median / p90 / max):");
    let mut medians = Vec::new();
    for series in neutral.iter().chain(pdns.iter().flatten()) {
        if let Some((median, p90)) = median_p90(&series.detections) {
            let max = series.detections.iter().max().copied().unwrap_or_default();
            println!(
                "  {:<76} {:>6.3} s / {:>6.3} s / {:>6.3} s  ({}/{} detected)",
                series.name,
                median.as_secs_f64(),
                p90.as_secs_f64(),
                max.as_secs_f64(),
                series.detections.len(),
                series.trials
            );
            medians.push((series.name.clone(), series.phase, median, p90));
        } else {
            println!(
                "  {:<76} no detection in {} trials",
                series.name, series.trials
            );
        }
    }
    for phase in [Phase::AfterCheck, Phase::Random] {
        let pdns_row = medians
            .iter()
            .find(|(n, p, _, _)| *p == phase && n.starts_with("PowerDNS"));
        let Some((_, _, pdns_median, pdns_p90)) = pdns_row else {
            continue;
        };
        for (name, _, median, p90) in medians
            .iter()
            .filter(|(n, p, _, _)| *p == phase && n.starts_with("neutral"))
        {
            let r50 = ratio(*median, *pdns_median).unwrap_or(f64::NAN);
            let r90 = ratio(*p90, *pdns_p90).unwrap_or(f64::NAN);
            let verdict = match (phase, r50 <= 1.10) {
                (Phase::AfterCheck, true) => "within 10% of PowerDNS (or faster)",
                (Phase::AfterCheck, false) => "SLOWER than PowerDNS by more than 10%",
                (Phase::Random, _) => "random phase: indicative only",
            };
            println!("  ratio {name} / PowerDNS: median {r50:.3}, p90 {r90:.3} → {verdict}");
        }
    }
}

/// One series of trials.
#[derive(Debug)]
struct Series {
    name: String,
    phase: Phase,
    trials: usize,
    detections: Vec<Duration>,
}

/// A port free on both the victim's and the survivor's address.
fn common_port() -> u16 {
    for _ in 0..50 {
        let port = common::free_tcp_port(VICTIM);
        if TcpListener::bind((SURVIVOR, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both {VICTIM} and {SURVIVOR}");
}

// ---------------------------------------------------------------------------
// The node's service: a minimal HTTP server in its own process.

/// Child mode: answers every request with `200 ok` and closes the
/// connection. Exits when its stdin closes (the bench died) or after
/// `SERVICE_LIFETIME`.
fn serve_http(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).expect("bind the service");
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    std::thread::spawn(|| {
        std::thread::sleep(SERVICE_LIFETIME);
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while request.len() < 16 * 1024 && !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        }
        if !request.windows(4).any(|w| w == b"\r\n\r\n") {
            continue; // a bare connect (the bench's readiness check)
        }
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
        );
        drop(stream);
        // Tell the bench when a check passed (Unix microseconds).
        println!("{}", unix_micros());
    }
}

/// Child mode, beside the service: the node's agent stream, a heartbeat
/// every `HEARTBEAT_EVERY`, opened again whenever it breaks. It dies with
/// the process.
fn stream_heartbeats(api: SocketAddr, id: &str, token: &str) {
    use neutral_proto::v1::node_stream_client::NodeStreamClient;
    use neutral_proto::v1::{Heartbeat, NodeMessage};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let until = Instant::now() + SERVICE_LIFETIME;
        while Instant::now() < until {
            let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{api}"))
            else {
                return;
            };
            let Ok(channel) = endpoint.connect().await else {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                continue;
            };
            let (sender, queued) = tokio::sync::mpsc::channel(4);
            let mut request =
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(queued));
            let metadata = request.metadata_mut();
            if let (Ok(id), Ok(bearer)) = (id.parse(), format!("Bearer {token}").parse()) {
                metadata.insert(neutral_proto::NODE_ID_METADATA, id);
                metadata.insert("authorization", bearer);
            }
            let Ok(response) = NodeStreamClient::new(channel).connect(request).await else {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                continue;
            };
            let mut answers = response.into_inner();
            let mut sequence = 0u64;
            loop {
                sequence += 1;
                let message = NodeMessage {
                    sequence,
                    heartbeat: Some(Heartbeat::default()),
                };
                if sender.send(message).await.is_err() {
                    break;
                }
                let until_next = tokio::time::sleep(HEARTBEAT_EVERY);
                tokio::pin!(until_next);
                // Read what comes until the next heartbeat is due.
                let broken = loop {
                    tokio::select! {
                        () = &mut until_next => break false,
                        message = answers.message() => {
                            if !matches!(message, Ok(Some(_))) {
                                break true;
                            }
                        }
                    }
                };
                if broken {
                    break;
                }
            }
        }
    });
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A node's service process on its own address, and the time of the last
/// request it answered (a passing check), as it reports them on stdout.
#[derive(Debug)]
struct Service {
    addr: SocketAddr,
    process: ChildGuard,
    last_check_us: Arc<AtomicU64>,
    /// The node's agent stream held by the same process: `(api, id, token)`.
    stream: Option<(SocketAddr, String, String)>,
}

impl Service {
    /// Starts the service on `addr` and waits (bounded) until it accepts.
    fn start(addr: SocketAddr) -> Service {
        let last_check_us = Arc::new(AtomicU64::new(0));
        let process = spawn_service(addr, &last_check_us, None);
        Service {
            addr,
            process,
            last_check_us,
            stream: None,
        }
    }

    fn kill(&mut self) {
        self.process.kill();
    }

    fn restart(&mut self) {
        self.process = spawn_service(self.addr, &self.last_check_us, self.stream.as_ref());
    }

    /// Waits (up to 3 s) for a check after now; how long ago it passed.
    fn wait_for_check(&self) -> Option<Duration> {
        let seen = self.last_check_us.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let last = self.last_check_us.load(Ordering::SeqCst);
            if last > seen {
                return Some(Duration::from_micros(unix_micros().saturating_sub(last)));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        None
    }
}

fn spawn_service(
    addr: SocketAddr,
    last_check_us: &Arc<AtomicU64>,
    stream: Option<&(SocketAddr, String, String)>,
) -> ChildGuard {
    let mut command = Command::new(std::env::current_exe().expect("current exe"));
    command.args(["--serve-http", &addr.to_string()]);
    if let Some((api, id, token)) = stream {
        command.args(["--stream", &api.to_string(), id, token]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the service");
    if let Some(stdout) = child.stdout.take() {
        let last = Arc::clone(last_check_us);
        // Ends when the service exits (EOF).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(at) = line.trim().parse::<u64>() {
                    last.fetch_max(at, Ordering::SeqCst);
                }
            }
        });
    }
    let mut guard = ChildGuard::new(child, format!("service {addr}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return guard;
        }
        assert!(guard.is_running(), "service {addr} exited at start");
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("service {addr} did not accept within 5 s");
}

// ---------------------------------------------------------------------------
// The measurement, the same for both servers.

#[derive(Debug)]
struct Detection {
    after: Option<Duration>,
    queries: usize,
    unanswered: usize,
}

/// Polls `dns` from `killed_at` until the victim has left the answers
/// (bounded by `TRIAL_LIMIT` and `TRIAL_MAX_QUERIES`).
fn poll_until_excluded(dns: &mut DnsAsker, killed_at: Instant) -> Detection {
    let mut present = Vec::new();
    let mut received = Vec::new();
    let mut unanswered = 0;
    let mut absent_in_a_row = 0;
    while killed_at.elapsed() < TRIAL_LIMIT && present.len() + unanswered < TRIAL_MAX_QUERIES {
        match dns.ask() {
            Some(answer)
                if answer.rcode == ResponseCode::NoError && !answer.addresses.is_empty() =>
            {
                let seen = answer.addresses.contains(&VICTIM);
                received.push(killed_at.elapsed());
                present.push(seen);
                absent_in_a_row = if seen { 0 } else { absent_in_a_row + 1 };
                if absent_in_a_row >= RUN {
                    break;
                }
            }
            _ => unanswered += 1,
        }
        std::thread::sleep(POLL_EVERY);
    }
    let after = exclusion_index(&present, RUN).and_then(|i| received.get(i).copied());
    Detection {
        after,
        queries: present.len() + unanswered,
        unanswered,
    }
}

/// Polls until the victim is answered again; how long it took.
fn poll_until_included(dns: &mut DnsAsker, since: Instant) -> Option<Duration> {
    let deadline = since + RECOVER_WITHIN;
    while Instant::now() < deadline {
        if dns.ask().is_some_and(|a| a.addresses.contains(&VICTIM)) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn random_pause() {
    let millis = rand::rng().random_range(0..1000);
    std::thread::sleep(Duration::from_millis(millis));
}

/// When in the check schedule a trial kills the victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AfterCheck,
    Random,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::AfterCheck => "after a check",
            Phase::Random => "random phase",
        }
    }
}

/// What a series does besides killing and restarting the service.
struct Hooks<'a> {
    /// Right after the kill (stop the node's heartbeats).
    on_kill: &'a mut dyn FnMut(),
    /// Right after the restart (resume them).
    on_restart: &'a mut dyn FnMut(),
    /// A note on the trial once the victim is out (the node's status reason).
    note: &'a mut dyn FnMut() -> String,
}

/// Runs `trials` trials: kill the victim at `phase`, poll until it has left
/// the answers, restart it, wait until it is answered again.
fn run_series(
    name: String,
    trials: usize,
    phase: Phase,
    victim: &mut Service,
    dns: &mut DnsAsker,
    hooks: &mut Hooks<'_>,
) -> Series {
    println!("{name}:");
    let mut series = Series {
        name,
        phase,
        trials,
        detections: Vec::new(),
    };
    for trial in 0..trials {
        let mut note = String::new();
        match phase {
            Phase::Random => random_pause(),
            Phase::AfterCheck => {
                note = match victim.wait_for_check() {
                    Some(ago) => format!(
                        " [killed {:.1} ms after a passing check]",
                        ago.as_secs_f64() * 1000.0
                    ),
                    None => " [no check seen within 3 s]".to_owned(),
                };
            }
        }
        let killed_at = Instant::now();
        victim.kill();
        (hooks.on_kill)();
        let detection = poll_until_excluded(dns, killed_at);
        let extra = (hooks.note)();
        if !extra.is_empty() {
            note.push_str(&format!(" [{extra}]"));
        }
        victim.restart();
        (hooks.on_restart)();
        let recovered = poll_until_included(dns, Instant::now());
        print_trial(&series.name, trial, &detection, recovered, &note);
        if let Some(after) = detection.after {
            series.detections.push(after);
        }
        if recovered.is_none() {
            println!("  the victim did not come back; stopping this series");
            break;
        }
        // Let the rise streak settle before the next kill.
        std::thread::sleep(Duration::from_millis(200));
    }
    series
}

fn print_trial(
    series: &str,
    trial: usize,
    detection: &Detection,
    recovered: Option<Duration>,
    note: &str,
) {
    println!(
        "  {series} trial {:>2}: excluded after {}  ({} queries, {} unanswered){note}; answered again {}",
        trial + 1,
        detection
            .after
            .map_or("NEVER".to_owned(), |d| format!("{:.3} s", d.as_secs_f64())),
        detection.queries,
        detection.unanswered,
        recovered.map_or("NEVER".to_owned(), |d| format!(
            "after {:.3} s",
            d.as_secs_f64()
        )),
    );
}

// ---------------------------------------------------------------------------
// neutral

fn run_neutral(runtime: &tokio::runtime::Runtime, port: u16, trials: usize) -> Vec<Series> {
    println!(
        "\nneutral serve (release): heartbeat interval 250ms, timeout 1s; probe GET /healthz :{port} \
         interval 1s, timeout 500ms, rise 1, fall 1; rrset via the DNS API, weights victim 99 / survivor 1"
    );
    let bin = common::neutral_bin();
    let repo = ConfigRepo::new(&[
        common::region_file("jp", 5),
        common::gtm_file(
            &["jp"],
            &format!(
                "{{ http: /healthz, port: {port}, interval: 1s, timeout: 500ms, rise: 1, fall: 1 }}"
            ),
        ),
    ]);
    let spec = DaemonSpec {
        heartbeat_interval: "250ms".into(),
        heartbeat_timeout: "1s".into(),
        extra: Vec::new(),
    };
    let mut victim = Service::start(SocketAddr::new(VICTIM, port));
    let _survivor = Service::start(SocketAddr::new(SURVIVOR, port));
    let daemon = Daemon::start(&bin, &repo, &spec);
    let api = daemon.api;
    let victim_alive = Arc::new(AtomicBool::new(true));
    let stop_heartbeats = Arc::new(AtomicBool::new(false));

    let (victim_id, victim_token, heartbeats) = runtime.block_on(async {
        let mut http = Http::connect(api).await.expect("connect to the daemon");
        common::sync_and_check(&mut http, 1).await;
        let victim_node = common::register(&mut http, "jp", VICTIM).await;
        let survivor_node = common::register(&mut http, "jp", SURVIVOR).await;
        let mut heartbeats = Vec::new();
        for ((id, token), alive) in [
            (victim_node.clone(), Arc::clone(&victim_alive)),
            (survivor_node, Arc::new(AtomicBool::new(true))),
        ] {
            heartbeats.push(tokio::spawn(heartbeat_loop(
                api,
                id,
                token,
                alive,
                Arc::clone(&stop_heartbeats),
            )));
        }
        common::create_zone(&mut http, "example.com.").await;
        common::put_weighted_a(
            &mut http,
            "example.com.",
            "app.example.com.",
            &[(VICTIM, 99), (SURVIVOR, 1)],
        )
        .await;
        (victim_node.0, victim_node.1, heartbeats)
    });

    let mut dns = DnsAsker::new(daemon.dns, "app.example.com.", Duration::from_secs(1));
    let ready = poll_until_included(&mut dns, Instant::now());
    assert!(
        ready.is_some(),
        "the victim never appeared in the embedded DNS answers:\n{}",
        daemon.log_tail(20)
    );
    wait_both_up(runtime, api, trials);

    let mut all = Vec::new();
    for phase in [Phase::AfterCheck, Phase::Random] {
        // The stream series: the victim's heartbeats move onto an agent
        // stream held by its service's process.
        victim_alive.store(false, Ordering::SeqCst);
        victim.stream = Some((api, victim_id.clone(), victim_token.clone()));
        victim.kill();
        victim.restart();
        wait_stream_open(runtime, api);
        let series = run_series(
            format!(
                "neutral, stream death (service + its agent stream killed), {}",
                phase.label()
            ),
            trials,
            phase,
            &mut victim,
            &mut dns,
            &mut Hooks {
                on_kill: &mut || {},
                on_restart: &mut || {},
                note: &mut || runtime.block_on(status_reason(api, &victim_id)),
            },
        );
        all.push(series);
        victim.stream = None;
        victim_alive.store(true, Ordering::SeqCst);
        victim.kill();
        victim.restart();
        wait_both_up(runtime, api, trials);
        for (kind, stop_heartbeats_too) in [("node", true), ("service", false)] {
            let name = format!(
                "neutral, {kind} death ({}), {}",
                if stop_heartbeats_too {
                    "service killed, HTTP heartbeats stop"
                } else {
                    "service killed, heartbeats go on"
                },
                phase.label()
            );
            let alive = Arc::clone(&victim_alive);
            let resume = Arc::clone(&victim_alive);
            let series = run_series(
                name,
                trials,
                phase,
                &mut victim,
                &mut dns,
                &mut Hooks {
                    on_kill: &mut || {
                        if stop_heartbeats_too {
                            alive.store(false, Ordering::SeqCst);
                        }
                    },
                    on_restart: &mut || resume.store(true, Ordering::SeqCst),
                    note: &mut || runtime.block_on(status_reason(api, &victim_id)),
                },
            );
            all.push(series);
        }
    }
    stop_heartbeats.store(true, Ordering::SeqCst);
    runtime.block_on(async {
        for task in heartbeats {
            let _ = task.await;
        }
    });
    let mut daemon = daemon;
    let status = daemon.stop();
    println!("neutral serve stopped: {status:?}");
    all
}

/// Heartbeats every `HEARTBEAT_EVERY` while `alive` (bounded: stops when
/// asked or after an hour).
async fn heartbeat_loop(
    api: SocketAddr,
    id: String,
    token: String,
    alive: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let Ok(mut http) = Http::connect(api).await else {
        return;
    };
    let body = serde_json::json!({ "node_id": id, "metrics": { "cpu": 0.2, "rtt_ms": 1.0, "error_rate": 0.0 } });
    let until = Instant::now() + Duration::from_secs(3600);
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        if alive.load(Ordering::SeqCst) {
            let _ = http
                .json(Method::POST, "/nodes/heartbeat", Some(&token), Some(&body))
                .await;
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

fn wait_both_up(runtime: &tokio::runtime::Runtime, api: SocketAddr, _trials: usize) {
    runtime.block_on(async {
        let mut http = Http::connect(api).await.expect("connect");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let (_, nodes) = http
                .json(Method::GET, "/nodes", Some(common::ADMIN_TOKEN), None)
                .await
                .expect("GET /nodes");
            let up = nodes
                .as_array()
                .map_or(0, |n| n.iter().filter(|n| n["status"] == "up").count());
            if up == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the two nodes did not come up within 20 s");
    });
}

/// Waits (bounded) until the daemon counts one agent stream open.
fn wait_stream_open(runtime: &tokio::runtime::Runtime, api: SocketAddr) {
    runtime.block_on(async {
        let mut http = Http::connect(api).await.expect("connect");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(text) = http.metrics().await
                && common::metric_sum(&text, "neutral_node_streams_open", &[]) >= 1.0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the victim's agent stream did not open within 20 s");
    });
}

async fn status_reason(api: SocketAddr, id: &str) -> String {
    let Ok(mut http) = Http::connect(api).await else {
        return "?".into();
    };
    match http
        .json(
            Method::GET,
            &format!("/nodes/{id}"),
            Some(common::ADMIN_TOKEN),
            None,
        )
        .await
    {
        Ok((StatusCode::OK, node)) => format!(
            "{}: {}",
            node["status"].as_str().unwrap_or("?"),
            node["status_reason"].as_str().unwrap_or("?")
        ),
        Ok((status, _)) => format!("GET /nodes/{id}: {status}"),
        Err(err) => err,
    }
}

// ---------------------------------------------------------------------------
// PowerDNS

fn run_pdns(runtime: &tokio::runtime::Runtime, port: u16, trials: usize) -> Option<Vec<Series>> {
    // DETECT_PDNS_CACHES=1 keeps PowerDNS' default packet and query caches.
    let keep_caches = env_number("DETECT_PDNS_CACHES", 0) == 1;
    let extra = format!(
        "lua-health-checks-interval=1\n{}",
        if keep_caches { "" } else { PDNS_CACHES_OFF }
    );
    let pdns = match runtime.block_on(Pdns::start(&extra)) {
        Ok(pdns) => pdns,
        Err(err) => {
            println!("PowerDNS: could not be started: {err}");
            return None;
        }
    };
    let dns_addr = pdns.dns;
    let log_tail = || pdns.log_tail();
    println!(
        "\nPowerDNS Authoritative ({}), gsqlite3, lua-health-checks-interval=1, {}; \
         LUA A ifurlup('http://{VICTIM}:{port}/healthz', {{{{'{VICTIM}','{SURVIVOR}'}}}}, {{selector='all', timeout='1'}})",
        pdns_version(),
        if keep_caches {
            "default caches"
        } else {
            "caches off"
        }
    );
    let mut victim = Service::start(SocketAddr::new(VICTIM, port));
    let _survivor = Service::start(SocketAddr::new(SURVIVOR, port));
    let ready = runtime.block_on(async {
        pdns.create_zone("example.com.").await?;
        let lua = format!(
            "A \"ifurlup('http://{VICTIM}:{port}/healthz', {{{{'{VICTIM}','{SURVIVOR}'}}}}, \
             {{selector='all', timeout='1'}})\""
        );
        pdns.replace("example.com.", "app.example.com.", "LUA", &[lua])
            .await
    });
    if let Err(err) = ready {
        println!("PowerDNS: could not be set up: {err}");
        return None;
    }
    let mut dns = DnsAsker::new(dns_addr, "app.example.com.", Duration::from_secs(1));
    // The first query registers the checks; wait until both addresses are up.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut both = false;
    while Instant::now() < deadline {
        if let Some(answer) = dns.ask()
            && answer.addresses.contains(&VICTIM)
            && answer.addresses.contains(&SURVIVOR)
        {
            both = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !both {
        println!(
            "PowerDNS: never answered with both addresses within 15 s:\n{}",
            log_tail()
        );
        return None;
    }
    let name = if keep_caches {
        "PowerDNS ifurlup (caches), service death"
    } else {
        "PowerDNS ifurlup, service death"
    };
    let mut all = Vec::new();
    for phase in [Phase::AfterCheck, Phase::Random] {
        all.push(run_series(
            format!("{name}, {}", phase.label()),
            trials,
            phase,
            &mut victim,
            &mut dns,
            &mut Hooks {
                on_kill: &mut || {},
                on_restart: &mut || {},
                note: &mut String::new,
            },
        ));
    }
    let mut pdns = pdns;
    let status = pdns.process.terminate(Duration::from_secs(10));
    println!("pdns_server stopped: {status:?}");
    Some(all)
}
