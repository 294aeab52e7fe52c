//! Figures for the `/ui` status page (issue 16): page weight, the JSON one
//! refresh reads, time to first render in headless Chromium, redraw time,
//! and the daemon's CPU with 0, 1 and 5 open pages, and with `PAGES` (default 50) simulated live
//! pages — against a control
//! plane with 1,000 nodes in 10 regions and 100 domains.
//!
//! `cargo run -p neutral-e2e --example ui_bench -- [NODES] [DOMAINS]`.
//! It runs the dev-profile `neutral` (the one the tests build); nodes are
//! simulated through the node API (`POST /nodes/register`, two heartbeats
//! each with `--no-probes`), so no agent processes run. Figures are printed,
//! never asserted.

use std::time::{Duration, Instant};

use neutral_e2e::bench::{cores_used, parse_proc_stat};
use neutral_e2e::browser::Browser;
use neutral_e2e::cluster::{ADMIN_TOKEN, Daemon, JOIN_TOKEN, Repo, wait_for};
use neutral_e2e::http;
use serde_json::{Value, json};

const REGIONS: usize = 10;

fn config(nodes: usize, domains: usize) -> Vec<(String, String)> {
    let per_region = nodes.div_ceil(REGIONS).max(1);
    let mut files = Vec::new();
    for r in 0..REGIONS {
        files.push((
            format!("platform-config/regions/r{r:02}.yaml"),
            format!(
                "name: r{r:02}\nprovider: local\nmin_nodes: 1\nmax_nodes: {}\nbase_weight: 100\n{}",
                per_region * 2,
                // Pairs fail over to each other's neighbour without a cycle.
                if r % 2 == 0 {
                    format!("failover: [r{:02}]\n", r + 1)
                } else {
                    String::new()
                }
            ),
        ));
        files.push((
            format!("infra/node-pool/r{r:02}.tfvars"),
            format!("region        = \"r{r:02}\"\ndesired_nodes = {per_region}\n"),
        ));
    }
    for d in 0..domains {
        files.push((
            format!("platform-config/gtm/d{d:03}.yaml"),
            format!(
                "domain: d{d:03}.example.com\nzone: example.com\nttl: 30\nmin_ready_nodes: 1\n\
                 regions: {{ r{:02}: 100, r{:02}: 50 }}\nall_down: fail_open\n",
                d % REGIONS,
                (d + 1) % REGIONS
            ),
        ));
    }
    files
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_proc_stat(&t))
        .map_or(0, neutral_e2e::bench::CpuTicks::total)
}

fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The daemon's cores used over `window`.
fn daemon_cores(daemon: &Daemon, window: Duration) -> f64 {
    let before = cpu_ticks(daemon.pid());
    std::thread::sleep(window);
    let after = cpu_ticks(daemon.pid());
    cores_used(after.saturating_sub(before), ticks_per_second(), window)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let domains: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let files = config(nodes, domains);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let repo = Repo::create(dir.path(), &refs);
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[
            "--no-probes",
            "--no-autoscale",
            "--heartbeat-interval",
            "30s",
            "--heartbeat-timeout",
            "30m",
            "--registration-expiry",
            "2h",
            "--register-rate",
            "100000",
            "--register-burst",
            "100000",
            "--sync-interval",
            "5s",
        ],
    );
    wait_for("the first sync", Duration::from_secs(60), || {
        daemon.get("/status").json()["commit"].as_str().map(|_| ())
    });

    // Register the nodes and bring them up with two heartbeats each.
    let start = Instant::now();
    let mut tokens = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let body = json!({
            "region": format!("r{:02}", i % REGIONS),
            "address": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256 + 1, i % 256),
            "hostname": format!("node-{i}"),
        });
        let response = http::post(
            daemon.api,
            "/nodes/register",
            Some(JOIN_TOKEN),
            &body.to_string(),
        );
        assert_eq!(response.status, 201, "{}", response.body);
        let doc = response.json();
        tokens.push((
            doc["node_id"].as_str().unwrap().to_owned(),
            doc["node_token"].as_str().unwrap().to_owned(),
        ));
    }
    for round in 0..2 {
        for (i, (id, token)) in tokens.iter().enumerate() {
            let body = json!({"node_id": id, "metrics": {
                "cpu": (i % 97) as f64 / 100.0, "rtt_ms": 2.0 + (i % 13) as f64, "error_rate": 0.0 }});
            let response = http::post(
                daemon.api,
                "/nodes/heartbeat",
                Some(token),
                &body.to_string(),
            );
            assert_eq!(response.status, 200, "round {round}: {}", response.body);
        }
    }
    wait_for("every node up", Duration::from_secs(60), || {
        let list = daemon.get("/nodes").json();
        let up = list
            .as_array()?
            .iter()
            .filter(|n| n["status"] == "up")
            .count();
        (up == nodes).then_some(())
    });
    println!(
        "ui bench: neutral serve (dev profile), {nodes} nodes in {REGIONS} regions, {domains} domains; set up in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // Page weight: the document and its two assets, uncompressed.
    let mut weight = 0;
    for path in ["/ui", "/ui/app.js", "/ui/app.css"] {
        let response = daemon.get(path);
        assert_eq!(response.status, 200);
        println!("  {path:<12} {:>7} bytes", response.body.len());
        weight += response.body.len();
    }
    println!("  page weight  {weight:>7} bytes (no external resources)");

    // What one refresh reads.
    let names = daemon.get("/domains").json();
    let mut paths: Vec<String> = [
        "/status",
        "/regions",
        "/domains",
        "/nodes",
        "/runs?limit=10",
        "/autoscale",
        "/audit?limit=40&newest_first=true",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    paths.extend(
        names
            .as_array()
            .unwrap()
            .iter()
            .map(|n| format!("/domains/{}", n.as_str().unwrap())),
    );
    let mut bytes = 0;
    let refresh = Instant::now();
    for path in &paths {
        let response = http::request(daemon.api, "GET", path, Some(ADMIN_TOKEN), None).unwrap();
        assert_eq!(response.status, 200, "{path}");
        bytes += response.body.len();
    }
    println!(
        "  one refresh: {} requests, {bytes} bytes of JSON (sequentially {:.0} ms from this client)",
        paths.len(),
        refresh.elapsed().as_secs_f64() * 1000.0
    );

    let idle = daemon_cores(&daemon, Duration::from_secs(10));
    println!("  daemon CPU, no page open: {idle:.3} cores (10 s)");

    // PAGES (default 50) live pages as the daemon sees them, without a
    // browser (one headless Chromium cannot keep 50 tabs of 1,000 rows
    // live on 2 cores): each holds GET /events open and, as app.js does
    // between changes, reads the 7 lists every 5 s and every domain's
    // details once a minute (on events otherwise; none come here).
    let pages: usize = std::env::var("PAGES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(50);
    if pages > 0 {
        let (cores, streams) = simulated_pages(&daemon, &paths, pages);
        println!(
            "  daemon CPU, {pages} simulated live pages ({streams} GET /events streams; lists every 5 s, domain details every 60 s): {cores:.3} cores (20 s)"
        );
    }

    let Some(browser) = Browser::start() else {
        println!("  (no chromium: browser figures skipped)");
        return;
    };
    let url = format!("http://{}/ui", daemon.api);
    browser.goto(&url);
    browser.eval(
        "sessionStorage.setItem('neutral.token', arguments[0]); return true;",
        &json!([ADMIN_TOKEN]),
    );
    let mut firsts = Vec::new();
    for _ in 0..3 {
        browser.goto(&url);
        browser.wait_true(
            "the first render",
            Duration::from_secs(60),
            "return performance.getEntriesByName('neutral:first-render').length > 0;",
            &json!([]),
        );
        let doc = browser.eval(
            "return { first: performance.getEntriesByName('neutral:first-render')[0].startTime, \
                      render: performance.getEntriesByName('neutral:render')[0].duration, \
                      rows: document.querySelectorAll('tr[data-node]').length };",
            &json!([]),
        );
        assert_eq!(doc["rows"].as_u64(), Some(nodes as u64), "{doc}");
        firsts.push(doc);
    }
    for doc in &firsts {
        println!(
            "  time to first render: {:.0} ms after navigation start (that redraw: {:.0} ms)",
            doc["first"].as_f64().unwrap_or(0.0),
            doc["render"].as_f64().unwrap_or(0.0)
        );
    }
    std::thread::sleep(Duration::from_secs(5));
    let steady: Value = browser.eval(
        "return performance.getEntriesByName('neutral:render')[0].duration;",
        &json!([]),
    );
    println!(
        "  steady redraw of {nodes} rows and {domains} domain cards: {:.0} ms",
        steady.as_f64().unwrap_or(0.0)
    );
    let one = daemon_cores(&daemon, Duration::from_secs(10));
    println!("  daemon CPU, 1 page open: {one:.3} cores (10 s)");
    for _ in 0..4 {
        browser.session_call("POST", "/window/new", Some(&json!({"type": "tab"})));
    }
    let handles = browser.session_call("GET", "/window/handles", None);
    for handle in handles.as_array().unwrap() {
        browser.session_call("POST", "/window", Some(&json!({ "handle": handle })));
        open_page(&browser, &url);
    }
    std::thread::sleep(Duration::from_secs(3));
    let five = daemon_cores(&daemon, Duration::from_secs(10));
    println!(
        "  daemon CPU, {} pages open (tabs of one headless browser): {five:.3} cores (10 s)",
        handles.as_array().unwrap().len()
    );
}

/// Runs `pages` simulated pages for 20 s; returns the daemon's CPU (cores)
/// over that window and the event streams it had open.
fn simulated_pages(daemon: &Daemon, paths: &[String], pages: usize) -> (f64, String) {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for page in 0..pages {
        let stop = Arc::clone(&stop);
        let paths = paths.to_vec();
        let api = daemon.api;
        threads.push(std::thread::spawn(move || {
            let Ok(mut events) = std::net::TcpStream::connect(api) else {
                return;
            };
            let _ = write!(
                events,
                "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
            );
            let _ = events.set_read_timeout(Some(Duration::from_millis(100)));
            // Pages start spread over the 5 s period, and their minute-long
            // domain period, as real ones would.
            let offset =
                |period: u64| Duration::from_millis((page as u64 * period) / pages.max(1) as u64);
            let mut next = Instant::now() + offset(5000);
            let mut next_all = Instant::now() + offset(60_000);
            let (lists, details) = paths.split_at(paths.len().min(7));
            let mut buffer = [0u8; 8192];
            while !stop.load(Ordering::Relaxed) {
                let _ = events.read(&mut buffer);
                if Instant::now() >= next {
                    for path in lists {
                        let _ = http::request(api, "GET", path, Some(ADMIN_TOKEN), None);
                    }
                    next += Duration::from_secs(5);
                }
                if Instant::now() >= next_all {
                    for path in details {
                        let _ = http::request(api, "GET", path, Some(ADMIN_TOKEN), None);
                    }
                    next_all += Duration::from_secs(60);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(6));
    let streams = event_streams(daemon);
    let cores = daemon_cores(daemon, Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    (cores, streams)
}

/// Opens the page in the current tab with the token (sessionStorage is per
/// tab, so each tab gets it before the page reads it).
fn open_page(browser: &Browser, url: &str) {
    browser.goto(url);
    browser.eval(
        "sessionStorage.setItem('neutral.token', arguments[0]); return true;",
        &json!([ADMIN_TOKEN]),
    );
    browser.goto(url);
}

/// `GET /events` streams the daemon has open (`neutral_event_streams_open`).
fn event_streams(daemon: &Daemon) -> String {
    let metrics = http::request(daemon.api, "GET", "/metrics", Some(ADMIN_TOKEN), None)
        .map(|r| r.body)
        .unwrap_or_default();
    metrics
        .lines()
        .find(|l| l.starts_with("neutral_event_streams_open "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned()
}
