//! `neutral validate` end to end on a generated 1,000-file platform-config
//! tree (target: under 200 ms per run, process start included). Prints the
//! median of several runs; run with `cargo bench -p neutral-cli`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const REGIONS: usize = 300;
const DOMAINS: usize = 100;

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// 300 regions, 300 node pools, 300 autoscale policies and 100 domains.
fn generate(root: &Path) -> usize {
    for r in 0..REGIONS {
        let failover = if r + 1 < REGIONS {
            format!("[r{:03}]", r + 1)
        } else {
            "[]".to_owned()
        };
        write(
            root,
            &format!("platform-config/regions/r{r:03}.yaml"),
            &format!(
                "name: r{r:03}\nprovider: edge\nmin_nodes: 1\nmax_nodes: 5\nbase_weight: {}\nstate: up\nfailover: {failover}\n",
                100 + r % 50
            ),
        );
        write(
            root,
            &format!("infra/node-pool/r{r:03}.tfvars"),
            &format!(
                "# pool of r{r:03}\nregion        = \"r{r:03}\"\ndesired_nodes = {}\n",
                1 + r % 5
            ),
        );
        write(
            root,
            &format!("platform-config/autoscale/r{r:03}.yaml"),
            &format!(
                "region: r{r:03}\nscale_up:   {{ cpu_above: 0.75, rtt_ms_above: 250, error_rate_above: 0.05, for: 60s, step: 1 }}\nscale_down: {{ cpu_below: 0.30, for: 300s, step: 1 }}\ncooldown: 300s\nfailover_capacity: true\n"
            ),
        );
    }
    for d in 0..DOMAINS {
        let mut regions = String::new();
        for k in 0..3 {
            let _ = write!(
                regions,
                "{}r{:03}: {}",
                if k == 0 { "" } else { ", " },
                (d * 7 + k * 91) % REGIONS,
                50 + k * 25
            );
        }
        write(
            root,
            &format!("platform-config/gtm/d{d:03}.yaml"),
            &format!(
                "domain: d{d:03}.example.com\nzone: example.com\ntype: A\nttl: 30\ndns: embedded\nmin_ready_nodes: 1\nregions: {{ {regions} }}\nall_down: fail_open\nprobe: {{ http: /healthz, port: 80, interval: 10s, timeout: 2s, rise: 2, fall: 3 }}\n"
            ),
        );
    }
    3 * REGIONS + DOMAINS
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = generate(dir.path());
    let neutral = env!("CARGO_BIN_EXE_neutral");
    let run = || {
        let start = Instant::now();
        let out = Command::new(neutral)
            .arg("validate")
            .arg(dir.path())
            .output()
            .expect("run neutral");
        let elapsed = start.elapsed();
        assert!(
            out.status.success(),
            "validate failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        elapsed
    };
    run();
    let mut times: Vec<Duration> = (0..11).map(|_| run()).collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = times[times.len() / 2];
    println!(
        "neutral validate, {files} files: median {:.1} ms (min {:.1}, max {:.1}); target 200 ms: {}",
        ms(median),
        ms(times[0]),
        ms(times[times.len() - 1]),
        if median <= Duration::from_millis(200) {
            "meets"
        } else {
            "MISSES"
        }
    );
}
