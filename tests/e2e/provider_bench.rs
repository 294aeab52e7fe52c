//! Benchmark: plan and apply time for N `neutral_gtm_record`s (default 100)
//! in PowerDNS against a local control plane, median of several runs, and
//! the provider's own share of it.
//!
//! `cargo run -p neutral-e2e --example provider_bench -- [RECORDS] [RUNS]`
//!
//! Per run and phase it measures the wall time of the terraform command, the
//! CPU time of terraform with the provider (its waited-for children), the
//! provider's CPU time and its time waiting on HTTP (from the provider's
//! `NEUTRAL_PROVIDER_TIMINGS` lines), and the CPU time the control plane and
//! PowerDNS spent meanwhile (from `/proc/<pid>/stat`). Phases: plan of N
//! creates, apply of them, a plan with nothing to do (refresh of N), an
//! apply changing every record's weights, and destroy.

use std::collections::BTreeMap;
use std::time::Instant;

use neutral_e2e::services::{
    ControlPlane, Nodes, PDNS_API_KEY, PowerDns, Terraform, terraform_bin,
};

/// CPU time (user + system) of this process' waited-for children, in ms.
fn children_cpu_ms() -> u64 {
    stat_cpu_ms("/proc/self/stat", 13)
}

/// CPU time of a process in ms: fields 14+15 (own) or 16+17 (children) of
/// stat(5), at `first` after the name (11 for own, 13 for children).
fn stat_cpu_ms(path: &str, first: usize) -> u64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    (fields.get(first).copied().unwrap_or(0) + fields.get(first + 1).copied().unwrap_or(0)) * 10
}

fn pid_of(name: &str) -> Option<u32> {
    // The services we started are our children; find them by command name.
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == me && comm == name).then_some(pid)
        })
}

#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    wall_ms: f64,
    terraform_cpu_ms: f64,
    provider_cpu_ms: f64,
    provider_http_ms: f64,
    provider_calls_ms: f64,
    services_cpu_ms: f64,
}

/// Per provider process: last (http µs, cpu µs) totals, plus the sum of
/// call times.
fn provider_totals(path: &std::path::Path) -> (f64, f64, f64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut last: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut calls = 0u64;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [pid, _call, elapsed, http, cpu] = f.as_slice() {
            calls += elapsed.parse::<u64>().unwrap_or(0);
            last.insert(pid, (http.parse().unwrap_or(0), cpu.parse().unwrap_or(0)));
        }
    }
    let http: u64 = last.values().map(|v| v.0).sum();
    let cpu: u64 = last.values().map(|v| v.1).sum();
    (
        http as f64 / 1000.0,
        cpu as f64 / 1000.0,
        calls as f64 / 1000.0,
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let Some(terraform) = terraform_bin() else {
        eprintln!("no terraform: set TERRAFORM_BIN or run scripts/setup");
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let region = |name: &str| {
        format!(
            "name: {name}\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 100\nstate: up\nfailover: []\n"
        )
    };
    let (jp, sg) = (region("jp"), region("sg"));
    let cp = ControlPlane::start(
        &dir.path().join("cp"),
        &[
            ("platform-config/regions/jp.yaml", jp.as_bytes()),
            ("platform-config/regions/sg.yaml", sg.as_bytes()),
        ],
    );
    let _nodes = Nodes::start(
        &cp,
        &[
            ("jp", "127.0.0.11"),
            ("jp", "127.0.0.12"),
            ("sg", "127.0.0.21"),
        ],
    );
    let pdns = PowerDns::start(&dir.path().join("pdns"));
    let (status, body) = pdns.request(
        "POST",
        "/api/v1/servers/localhost/zones",
        Some(r#"{"name":"bench.example.org.","kind":"Native","nameservers":["ns1.bench.example.org."]}"#),
    );
    assert_eq!(status, 201, "{body}");
    let serve_pid = pid_of("neutral").expect("neutral serve pid");
    let pdns_pid = pid_of("pdns_server").expect("pdns_server pid");
    let services_cpu = || {
        stat_cpu_ms(&format!("/proc/{serve_pid}/stat"), 11)
            + stat_cpu_ms(&format!("/proc/{pdns_pid}/stat"), 11)
    };

    let tf = Terraform::new(terraform.clone(), &dir.path().join("tf"));
    let timings = dir.path().join("timings.txt");
    tf.write(
        "main.tf",
        &format!(
            r#"terraform {{
  required_providers {{
    neutral = {{ source = "neutral/neutral" }}
  }}
}}
variable "sg" {{
  type    = number
  default = 50
}}
provider "neutral" {{
  endpoint = "{endpoint}"
  powerdns {{
    url     = "{pdns}"
    api_key = "{PDNS_API_KEY}"
  }}
}}
resource "neutral_gtm_record" "r" {{
  count   = {records}
  domain  = "r${{count.index}}.bench.example.org"
  zone    = "bench.example.org"
  dns     = "powerdns"
  regions = {{ jp = 100, sg = var.sg }}
}}
"#,
            endpoint = cp.url,
            pdns = pdns.api,
        ),
    );
    // NEUTRAL_PROVIDER_TIMINGS reaches the provider through terraform's env.
    let phases: [(&str, &[&str]); 5] = [
        ("plan (create)", &["plan", "-no-color", "-input=false"]),
        ("apply (create)", &["apply", "-auto-approve", "-no-color"]),
        (
            "plan (no change)",
            &["plan", "-detailed-exitcode", "-no-color"],
        ),
        (
            "apply (update all)",
            &["apply", "-auto-approve", "-no-color", "-var", "sg=100"],
        ),
        (
            "destroy",
            &["destroy", "-auto-approve", "-no-color", "-var", "sg=100"],
        ),
    ];
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    println!(
        "terraform: {} ({})",
        terraform.display(),
        tf.run(&["version"]).stdout.lines().next().unwrap_or("")
    );
    println!("{records} neutral_gtm_record(s) in PowerDNS, {runs} run(s); times in ms");
    for run in 0..runs {
        for (phase, args) in phases {
            let _ = std::fs::remove_file(&timings);
            let (cpu_before, services_before) = (children_cpu_ms(), services_cpu());
            let start = Instant::now();
            let finished =
                tf.run_with_env(args, &[("NEUTRAL_PROVIDER_TIMINGS", timings.as_os_str())]);
            let wall = start.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(
                finished.code,
                Some(0),
                "{phase} failed: {}\n{}",
                finished.stdout,
                finished.stderr
            );
            let (http, cpu, calls) = provider_totals(&timings);
            let sample = Sample {
                wall_ms: wall,
                terraform_cpu_ms: (children_cpu_ms() - cpu_before) as f64,
                provider_cpu_ms: cpu,
                provider_http_ms: http,
                provider_calls_ms: calls,
                services_cpu_ms: (services_cpu() - services_before) as f64,
            };
            println!(
                "run {run} {phase:<20} wall {:>7.0}  terraform+provider cpu {:>6.0}  provider cpu {:>5.0}  provider calls {:>7.0} (http wait {:>6.0})  control plane+pdns cpu {:>5.0}",
                sample.wall_ms,
                sample.terraform_cpu_ms,
                sample.provider_cpu_ms,
                sample.provider_calls_ms,
                sample.provider_http_ms,
                sample.services_cpu_ms
            );
            samples.entry(phase).or_default().push(sample);
        }
    }
    println!("\nmedian of {runs} run(s), {records} records (ms):");
    println!(
        "| phase | wall | terraform+provider CPU | provider CPU | provider CPU / wall | provider call time (sum) | of which HTTP wait | control plane + PowerDNS CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (phase, _) in phases {
        let list = &samples[phase];
        let pick = |f: fn(&Sample) -> f64| median(&mut list.iter().map(f).collect::<Vec<_>>());
        let wall = pick(|s| s.wall_ms);
        let provider_cpu = pick(|s| s.provider_cpu_ms);
        println!(
            "| {phase} | {wall:.0} | {:.0} | {provider_cpu:.0} | {:.1}% | {:.0} | {:.0} | {:.0} |",
            pick(|s| s.terraform_cpu_ms),
            100.0 * provider_cpu / wall.max(1.0),
            pick(|s| s.provider_calls_ms),
            pick(|s| s.provider_http_ms),
            pick(|s| s.services_cpu_ms),
        );
    }
}
