//! `neutral status`: the control plane's picture in a terminal — regions,
//! domains with their answers and reasons, nodes, the autoscaler's latest
//! decisions and the Terraform runs — read from the public read API
//! (`/status`, `/regions`, `/domains`, `/domains/{d}`, `/nodes`, `/runs`,
//! `/autoscale`).
//!
//! Fetching is IO; [`render`] is a pure function of a fetched [`Snapshot`]
//! and the time it is rendered at, so the picture is tested by snapshot. This
//! module decides nothing: every number it prints comes from the control
//! plane's answers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::output::{Format, Outcome};

/// The variable holding a viewer (read-only) token, as the hooks read it.
pub const TOKEN_ENV: &str = "NEUTRAL_VIEWER_TOKEN";
/// Read when [`TOKEN_ENV`] is not set: the admin token may read too.
pub const ADMIN_TOKEN_ENV: &str = "NEUTRAL_ADMIN_TOKEN";

/// What `neutral status` was asked for.
#[derive(Debug)]
pub struct Options {
    pub control_plane: String,
    pub token_file: Option<PathBuf>,
    pub format: Format,
    /// Refresh every this many seconds instead of printing once.
    pub watch: Option<u64>,
    /// With `watch`: stop after this many pictures.
    pub count: Option<u64>,
    /// Terraform runs to show.
    pub runs: u32,
}

/// Everything one picture is drawn from, as the control plane answered it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub endpoint: String,
    pub status: Value,
    pub regions: Value,
    /// One `GET /domains/{domain}` answer per domain, in name order.
    pub domains: Vec<Value>,
    pub nodes: Value,
    pub autoscale: Value,
    pub runs: Value,
}

impl Snapshot {
    /// The `--format json` document.
    pub fn to_json(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "status": self.status,
            "regions": self.regions,
            "domains": self.domains,
            "nodes": self.nodes,
            "autoscale": self.autoscale,
            "runs": self.runs,
        })
    }
}

/// Runs `neutral status`.
pub fn run(options: &Options) -> Result<Outcome> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = read_token(options.token_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        let base = options.control_plane.trim_end_matches('/');
        let Some(every) = options.watch else {
            let snapshot = fetch(&client, base, token.as_deref(), options.runs).await?;
            print_snapshot(&snapshot, options.format)?;
            return Ok(Outcome::Ok);
        };
        let every = Duration::from_secs(every.max(1));
        let mut shown = 0u64;
        loop {
            let picture = fetch(&client, base, token.as_deref(), options.runs).await;
            if options.format == Format::Text {
                // Clear the screen and home the cursor: one picture at a time.
                print!("\x1b[H\x1b[2J");
                println!(
                    "neutral status: every {}s, ctrl-c to stop\n",
                    every.as_secs()
                );
            }
            match picture {
                Ok(snapshot) => print_snapshot(&snapshot, options.format)?,
                // A control plane that does not answer is news, not the end
                // of watching it.
                Err(err) => println!("error: {err:#} (trying again in {}s)", every.as_secs()),
            }
            shown += 1;
            if options.count.is_some_and(|count| shown >= count) {
                return Ok(Outcome::Ok);
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = tokio::signal::ctrl_c() => return Ok(Outcome::Ok),
            }
        }
    })
}

fn print_snapshot(snapshot: &Snapshot, format: Format) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&snapshot.to_json())?),
        Format::Text => print!("{}", render(snapshot, SystemTime::now())),
    }
    Ok(())
}

/// The read token: `--token-file`, else `$NEUTRAL_VIEWER_TOKEN`, else
/// `$NEUTRAL_ADMIN_TOKEN`, else none (a control plane whose reads are open).
fn read_token(file: Option<&Path>) -> Result<Option<String>> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?,
        None => std::env::var(TOKEN_ENV)
            .or_else(|_| std::env::var(ADMIN_TOKEN_ENV))
            .unwrap_or_default(),
    };
    let token = token.trim();
    if token.is_empty() {
        if let Some(path) = file {
            bail!("token file {} is empty", path.display());
        }
        return Ok(None);
    }
    Ok(Some(token.to_owned()))
}

async fn get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Value> {
    let url = format!("{base}{path}");
    let mut request = client.get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the control plane at {base}"))?;
    let status = response.status();
    let text = response.text().await.context("reading the answer")?;
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "GET {url}: HTTP {status}: the control plane wants a read token \
             (set {TOKEN_ENV} or pass --token-file): {text}"
        );
    }
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("GET {url} did not answer JSON"))
}

/// Reads one picture's worth of the read API.
pub async fn fetch(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    runs: u32,
) -> Result<Snapshot> {
    let status = get(client, base, "/status", token).await?;
    let regions = get(client, base, "/regions", token).await?;
    let names = get(client, base, "/domains", token).await?;
    let mut domains = Vec::new();
    for name in names.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(name) = name.as_str() else { continue };
        domains.push(get(client, base, &format!("/domains/{}", encode(name)), token).await?);
    }
    let nodes = get(client, base, "/nodes", token).await?;
    let autoscale = get(client, base, "/autoscale", token).await?;
    let runs = get(client, base, &format!("/runs?limit={runs}"), token).await?;
    Ok(Snapshot {
        endpoint: base.to_owned(),
        status,
        regions,
        domains,
        nodes,
        autoscale,
        runs,
    })
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn short_commit(v: &Value) -> String {
    v.as_str()
        .map_or_else(|| "-".to_owned(), |c| c.chars().take(10).collect())
}

/// `12s`, `4m05s`, `3h12m`, `2d04h` since an RFC 3339 time; `-` without one.
fn age(at: &Value, now: SystemTime) -> String {
    let Some(at) = at.as_str().and_then(|s| humantime::parse_rfc3339(s).ok()) else {
        return "-".to_owned();
    };
    let Ok(elapsed) = now.duration_since(at) else {
        return "0s".to_owned();
    };
    let s = elapsed.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Lays out rows under a header, columns padded to their widest cell.
fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{indent}{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A 20-character bar of `share` (0..=1).
fn bar(share: f64) -> String {
    const WIDTH: usize = 20;
    let filled = (share.clamp(0.0, 1.0) * WIDTH as f64).round() as usize;
    format!("{}{}", "#".repeat(filled), ".".repeat(WIDTH - filled))
}

/// The picture, as text. Pure: the same snapshot and `now` give the same
/// text.
pub fn render(snapshot: &Snapshot, now: SystemTime) -> String {
    let mut out = String::new();
    render_header(&mut out, snapshot, now);
    render_regions(&mut out, snapshot);
    render_domains(&mut out, snapshot, now);
    render_nodes(&mut out, snapshot, now);
    out.push_str("\nRUNS\n");
    out.push_str(&crate::runs::render(&snapshot.runs));
    out
}

fn render_header(out: &mut String, snapshot: &Snapshot, now: SystemTime) {
    let status = &snapshot.status;
    let sync = &status["sync"];
    let _ = writeln!(
        out,
        "control plane {} (neutral {}), commit {}, weights computed {} ago",
        snapshot.endpoint,
        text(&status["version"]),
        short_commit(&status["commit"]),
        age(&status["weights_computed_at"], now),
    );
    let counts: Vec<String> = status["nodes"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{v} {k}")).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} regions, {} domains, nodes: {}",
        text(&status["regions"]),
        text(&status["domains"]),
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "sync: {} {}, last good {} ({} ago), last attempt {} ago",
        text(&sync["repo"]),
        text(&sync["branch"]),
        short_commit(&sync["last_good"]["commit"]),
        age(&sync["last_good"]["at"], now),
        age(&sync["last_attempt"], now),
    );
    if !sync["last_error"].is_null() {
        let _ = writeln!(out, "SYNC ERROR: {}", text(&sync["last_error"]));
    }
    let failing = &sync["failing"];
    if !failing.is_null() {
        let _ = writeln!(
            out,
            "CONFIG INVALID at {} ({} error(s), since {} ago; the last good commit stays in force):",
            short_commit(&failing["commit"]),
            text(&failing["errors"]),
            age(&failing["at"], now),
        );
        for diagnostic in list(&failing["diagnostics"]) {
            let _ = writeln!(out, "  {}", text(diagnostic));
        }
    }
    if !status["split_brain"].is_null() {
        let _ = writeln!(out, "SPLIT-BRAIN HOLD: {}", text(&status["split_brain"]));
    }
    for degraded in list(&status["dns_degraded"]) {
        let _ = writeln!(out, "DNS degraded: {}", text(degraded));
    }
}

fn render_regions(out: &mut String, snapshot: &Snapshot) {
    out.push_str("\nREGIONS\n");
    let decisions = &snapshot.autoscale["decisions"];
    let rows: Vec<Vec<String>> = list(&snapshot.regions)
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default();
            let weights: Vec<String> = snapshot
                .domains
                .iter()
                .filter_map(|d| {
                    let region = list(&d["regions"]).iter().find(|x| x["region"] == name)?;
                    Some(format!(
                        "{} {}",
                        text(&d["domain"]),
                        text(&region["effective"])
                    ))
                })
                .collect();
            let failover = list(&r["failover"])
                .iter()
                .map(text)
                .collect::<Vec<_>>()
                .join(",");
            let decision = &decisions[name];
            let autoscale = match decision["action"]["kind"].as_str() {
                Some(kind) => kind.to_owned(),
                None => "-".to_owned(),
            };
            vec![
                name.to_owned(),
                text(&r["state"]),
                text(&r["health"]),
                format!("{}/{}", text(&r["ready"]), text(&r["desired_nodes"])),
                text(&r["draining"]),
                text(&r["down"]),
                if failover.is_empty() {
                    "-".to_owned()
                } else {
                    failover
                },
                autoscale,
                if weights.is_empty() {
                    "-".to_owned()
                } else {
                    weights.join(", ")
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("(no regions declared)\n");
        return;
    }
    table(
        out,
        "",
        &[
            "REGION",
            "STATE",
            "HEALTH",
            "READY/DESIRED",
            "DRAINING",
            "DOWN",
            "FAILOVER",
            "AUTOSCALE",
            "EFFECTIVE WEIGHTS",
        ],
        &rows,
    );
    for r in list(&snapshot.regions) {
        let name = r["name"].as_str().unwrap_or_default();
        if r["health"] != "up" {
            let _ = writeln!(out, "  {name}: {}", text(&r["health_reason"]));
        }
        let decision = &decisions[name];
        if decision["action"]["kind"]
            .as_str()
            .is_some_and(|k| k != "none")
        {
            let _ = writeln!(out, "  {name} autoscale: {}", text(&decision["reason"]));
        }
    }
}

fn render_domains(out: &mut String, snapshot: &Snapshot, now: SystemTime) {
    out.push_str("\nDOMAINS\n");
    if snapshot.domains.is_empty() {
        out.push_str("(no domains declared)\n");
    }
    for d in &snapshot.domains {
        let _ = writeln!(
            out,
            "{} {} ttl {} via {}: {} (view {}, computed {} ago)",
            text(&d["domain"]),
            text(&d["record_type"]),
            text(&d["ttl"]),
            text(&d["dns"]),
            text(&d["mode"]),
            text(&d["view"]),
            age(&d["computed_at"], now),
        );
        for region in list(&d["regions"]) {
            let _ = writeln!(out, "  {}", text(&region["reason"]));
        }
        for reason in list(&d["reasons"]) {
            let _ = writeln!(out, "  {}", text(reason));
        }
        if !d["split_brain"].is_null() {
            let _ = writeln!(out, "  SPLIT-BRAIN HOLD: {}", text(&d["split_brain"]));
        }
        let answers = list(&d["answers"]);
        if answers.is_empty() {
            out.push_str("  (no answers)\n");
            continue;
        }
        let total: u64 = answers.iter().filter_map(|a| a["weight"].as_u64()).sum();
        let rows: Vec<Vec<String>> = answers
            .iter()
            .map(|a| {
                let weight = a["weight"].as_u64().unwrap_or(0);
                let share = if total == 0 {
                    0.0
                } else {
                    weight as f64 / total as f64
                };
                vec![
                    text(&a["address"]),
                    text(&a["node_id"]),
                    text(&a["region"]),
                    weight.to_string(),
                    format!("{} {:>3.0}%", bar(share), share * 100.0),
                    text(&a["reason"]),
                ]
            })
            .collect();
        table(
            out,
            "  ",
            &["ANSWER", "NODE", "REGION", "WEIGHT", "SHARE", "REASON"],
            &rows,
        );
    }
}

fn render_nodes(out: &mut String, snapshot: &Snapshot, now: SystemTime) {
    out.push_str("\nNODES\n");
    let nodes = list(&snapshot.nodes);
    if nodes.is_empty() {
        out.push_str("(no nodes registered)\n");
        return;
    }
    let metric = |n: &Value, key: &str, scale: f64, unit: &str, digits: usize| {
        n["metrics"][key].as_f64().map_or_else(
            || "-".to_owned(),
            |v| format!("{:.digits$}{unit}", v * scale),
        )
    };
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let mut reason = text(&n["status_reason"]);
            if n["status"] != "up"
                && let Some(detail) = n["health_detail"]
                    .as_str()
                    .filter(|d| !d.is_empty() && Some(*d) != n["status_reason"].as_str())
            {
                reason = format!("{reason}; health: {detail}");
            }
            vec![
                text(&n["id"]),
                text(&n["region"]),
                text(&n["address"]),
                text(&n["status"]),
                age(&n["status_since"], now),
                metric(n, "cpu", 100.0, "%", 0),
                metric(n, "rtt_ms", 1.0, "ms", 1),
                metric(n, "error_rate", 100.0, "%", 1),
                age(&n["last_heartbeat"], now),
                reason,
            ]
        })
        .collect();
    table(
        out,
        "",
        &[
            "NODE",
            "REGION",
            "ADDRESS",
            "STATUS",
            "SINCE",
            "CPU",
            "RTT",
            "ERRORS",
            "HEARTBEAT",
            "REASON",
        ],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            endpoint: "http://127.0.0.1:7400".into(),
            status: json!({
                "version": "0.1.0", "commit": "146d8d143de4d12dbb14e400f2b9bc71812cebee",
                "dns_degraded": [], "domains": 1, "regions": 2,
                "nodes": {"down": 1, "up": 2}, "split_brain": null,
                "weights_computed_at": "2026-12-05T16:50:58.000Z",
                "sync": {"repo": "/srv/config.git", "branch": "main", "last_error": null,
                         "last_attempt": "2026-12-05T16:50:59.000Z",
                         "last_good": {"at": "2026-12-05T16:40:00.000Z", "commit": "146d8d143de4d12dbb14e400f2b9bc71812cebee"},
                         "failing": {"commit": "99aa00bb11cc", "at": "2026-12-05T16:45:00.000Z", "errors": 1,
                                     "diagnostics": ["platform-config/regions/jp.yaml:3:12: error: min_nodes must be at least 0"]}},
            }),
            regions: json!([
                {"name": "jp", "provider": "local", "state": "up", "health": "degraded",
                 "health_reason": "1 ready < 2 desired", "min_nodes": 1, "max_nodes": 5,
                 "desired_nodes": 2, "ready": 1, "draining": 0, "down": 1, "base_weight": 100,
                 "failover": ["sg"]},
                {"name": "sg", "provider": "local", "state": "up", "health": "up",
                 "health_reason": "1 ready >= 1 desired", "min_nodes": 1, "max_nodes": 5,
                 "desired_nodes": 1, "ready": 1, "draining": 0, "down": 0, "base_weight": 100,
                 "failover": []},
            ]),
            domains: vec![json!({
                "domain": "app.example.com", "zone": "example.com", "record_type": "A", "ttl": 30,
                "dns": "embedded", "mode": "normal",
                "regions": [
                    {"region": "jp", "health": "degraded", "base": 100, "ready": 1, "expected": 2,
                     "effective": 50, "reason": "jp: degraded (1 of 2 ready) -> 50"},
                    {"region": "sg", "health": "up", "base": 50, "ready": 1, "expected": 1,
                     "effective": 50, "reason": "sg: up -> 50"},
                ],
                "answers": [
                    {"node_id": "jp-a", "region": "jp", "address": "127.0.0.2", "weight": 50,
                     "reason": "jp 50 over 1 ready node"},
                    {"node_id": "sg-a", "region": "sg", "address": "127.0.0.4", "weight": 25,
                     "reason": "sg 25 over 1 ready node"},
                ],
                "reasons": ["normal: 2 regions serve"],
                "computed_at": "2026-12-05T16:50:58.000Z", "commit": "146d8d1", "split_brain": null,
                "view": "abc-5",
            })],
            nodes: json!([
                {"id": "jp-a", "region": "jp", "address": "127.0.0.2", "status": "up",
                 "status_since": "2026-12-05T16:49:00.000Z", "status_reason": "probe ok",
                 "last_heartbeat": "2026-12-05T16:50:59.500Z",
                 "metrics": {"cpu": 0.42, "rtt_ms": 5.25, "error_rate": 0.0},
                 "health_detail": "ok"},
                {"id": "jp-b", "region": "jp", "address": "127.0.0.3", "status": "down",
                 "status_since": "2026-12-05T16:50:57.000Z", "status_reason": "heartbeat timeout",
                 "last_heartbeat": "2026-12-05T16:50:55.000Z", "metrics": null,
                 "health_detail": "no heartbeat for 2s"},
                {"id": "sg-a", "region": "sg", "address": "127.0.0.4", "status": "drain",
                 "status_since": "2026-12-05T14:00:00.000Z", "status_reason": "drained by admin",
                 "last_heartbeat": "2026-12-05T16:51:00.000Z",
                 "metrics": {"cpu": 0.05, "rtt_ms": 12.0, "error_rate": 0.015}, "health_detail": "ok"},
            ]),
            autoscale: json!({"enabled": true, "decided_at": "2026-12-05T16:50:58.000Z", "decisions": {
                "jp": {"action": {"kind": "replace", "nodes": ["jp-b"]},
                       "reason": "1 node(s) down (jp-b) and 1 ready < 2 desired; replace them"},
                "sg": {"action": {"kind": "none"}, "reason": "within bounds"},
            }}),
            runs: json!({"scheduler": true, "pending": [], "drift": [], "runs": [
                {"id": 3, "root": "infra/gtm", "workspace": "default", "trigger": "health",
                 "commit": "146d8d143de4", "status": "running", "adds": null, "changes": null,
                 "destroys": null, "exit_code": null, "duration_ms": null},
            ]}),
        }
    }

    #[test]
    fn renders_regions_domains_nodes_and_runs() {
        let now = at("2026-12-05T16:51:00Z");
        expect_test::expect![[r#"
            control plane http://127.0.0.1:7400 (neutral 0.1.0), commit 146d8d143d, weights computed 2s ago
            2 regions, 1 domains, nodes: 1 down, 2 up
            sync: /srv/config.git main, last good 146d8d143d (11m00s ago), last attempt 1s ago
            CONFIG INVALID at 99aa00bb11 (1 error(s), since 6m00s ago; the last good commit stays in force):
              platform-config/regions/jp.yaml:3:12: error: min_nodes must be at least 0

            REGIONS
            REGION  STATE  HEALTH    READY/DESIRED  DRAINING  DOWN  FAILOVER  AUTOSCALE  EFFECTIVE WEIGHTS
            jp      up     degraded  1/2            0         1     sg        replace    app.example.com 50
            sg      up     up        1/1            0         0     -         none       app.example.com 50
              jp: 1 ready < 2 desired
              jp autoscale: 1 node(s) down (jp-b) and 1 ready < 2 desired; replace them

            DOMAINS
            app.example.com A ttl 30 via embedded: normal (view abc-5, computed 2s ago)
              jp: degraded (1 of 2 ready) -> 50
              sg: up -> 50
              normal: 2 regions serve
              ANSWER     NODE  REGION  WEIGHT  SHARE                      REASON
              127.0.0.2  jp-a  jp      50      #############.......  67%  jp 50 over 1 ready node
              127.0.0.4  sg-a  sg      25      #######.............  33%  sg 25 over 1 ready node

            NODES
            NODE  REGION  ADDRESS    STATUS  SINCE  CPU  RTT     ERRORS  HEARTBEAT  REASON
            jp-a  jp      127.0.0.2  up      2m00s  42%  5.2ms   0.0%    0s         probe ok
            jp-b  jp      127.0.0.3  down    3s     -    -       -       5s         heartbeat timeout; health: no heartbeat for 2s
            sg-a  sg      127.0.0.4  drain   2h51m  5%   12.0ms  1.5%    0s         drained by admin; health: ok

            RUNS
            ID  ROOT       WORKSPACE  TRIGGER  COMMIT      STATUS   PLAN      EXIT  TOOK
            3   infra/gtm  default    health   146d8d143d  running  +- ~- --  -     -
        "#]]
        .assert_eq(&render(&snapshot(), now));
    }

    #[test]
    fn an_empty_control_plane_says_so() {
        let snapshot = Snapshot {
            endpoint: "http://cp".into(),
            status: json!({"version": "0.1.0", "commit": null, "nodes": {}, "regions": 0,
                           "domains": 0, "sync": {}}),
            runs: json!({"scheduler": false, "runs": []}),
            ..Snapshot::default()
        };
        expect_test::expect![[r#"
            control plane http://cp (neutral 0.1.0), commit -, weights computed - ago
            0 regions, 0 domains, nodes: none
            sync: - -, last good - (- ago), last attempt - ago

            REGIONS
            (no regions declared)

            DOMAINS
            (no domains declared)

            NODES
            (no nodes registered)

            RUNS
            the scheduler is off (neutral serve without --run-terraform): runs happen in external CI
            ID  ROOT  WORKSPACE  TRIGGER  COMMIT  STATUS  PLAN  EXIT  TOOK
            (no runs yet)
        "#]]
        .assert_eq(&render(&snapshot, SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn ages_and_bars() {
        let now = at("2026-12-05T16:51:00Z");
        assert_eq!(age(&json!("2026-12-05T16:50:59.999Z"), now), "0s");
        assert_eq!(age(&json!("2026-12-04T12:00:00Z"), now), "1d04h");
        assert_eq!(age(&json!("2026-12-05T16:52:00Z"), now), "0s", "future");
        assert_eq!(age(&json!("yesterday"), now), "-");
        assert_eq!(bar(0.0), "....................");
        assert_eq!(bar(1.5), "####################");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
