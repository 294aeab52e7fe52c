//! Figures of the multi-host test bed (tests/support/testbed.rs), printed,
//! never asserted:
//!
//! - silent node death → DNS exclusion: a node's host is frozen (`docker
//!   pause`) and the time until it leaves the answers is measured, at the
//!   same moment, for neutral's embedded DNS (on the control plane's host)
//!   and for PowerDNS with an `ifurlup` LUA record (on a host of its own),
//!   both checking every 2 s with a 1 s timeout and one failure to go down
//!   (PowerDNS 4.7 has no rise/fall); median and p90 of N trials;
//! - region cut → failover: the control plane loses the region's network;
//!   time until only the other region answers; then the same with three
//!   replicas on PostgreSQL deciding by quorum, two of them cut (detection
//!   with a quorum next to without);
//! - test-bed start: image reuse (`scripts/hosts`), and a deployment from
//!   nothing to every node up.
//!
//! `cargo bench -p neutral-e2e --bench hosts` (root, Docker). `TRIALS`
//! (default 10) sets the trials per figure. The image's cold build is
//! printed by `scripts/hosts` itself (`scripts/hosts clean && scripts/hosts`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use neutral_e2e::bench::{exclusion_index, median_p90};
use neutral_e2e::dns;
use neutral_e2e::testbed::HostSpec;
use neutral_e2e::testbed::deploy::{DOMAIN, Deployment, Options, Probe, Region};

const WAIT: Duration = Duration::from_secs(120);
const PDNS_DOMAIN: &str = "www.example.org";

fn trials() -> usize {
    std::env::var("TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(10)
        .max(1)
}

fn answers(server: SocketAddr, name: &str, samples: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..samples {
        if let Ok(answer) = dns::udp(server, &format!("{name}."), RecordType::A) {
            seen.extend(answer.addresses());
        }
    }
    seen
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Answers one query at a time from each server and returns, per server,
/// when `ip` left its answers: the first of [`RUN`] consecutive answers
/// without it, [`SAMPLE_EVERY`] apart (a server picks one weighted answer per
/// query, so one answer without it proves nothing).
fn exclusion(servers: &[(SocketAddr, &str)], ip: &str, since: Instant) -> Vec<Duration> {
    let mut seen: Vec<Vec<(Duration, bool)>> = vec![Vec::new(); servers.len()];
    loop {
        assert!(since.elapsed() < WAIT, "{ip} stayed in the answers");
        let mut done = Vec::new();
        for ((server, name), samples) in servers.iter().zip(seen.iter_mut()) {
            let present: Vec<bool> = samples.iter().map(|(_, p)| *p).collect();
            match exclusion_index(&present, RUN) {
                Some(index) => done.push(samples[index].0),
                None => {
                    if let Ok(answer) = dns::udp(*server, &format!("{name}."), RecordType::A) {
                        let addresses = answer.addresses();
                        // An empty answer is no evidence either way.
                        if !addresses.is_empty() {
                            samples.push((since.elapsed(), addresses.iter().any(|a| a == ip)));
                        }
                    }
                }
            }
        }
        if done.len() == servers.len() {
            return done;
        }
        // One round of queries every 25 ms: the 40 answers of a run then
        // span a second. Faster, a server's answer for a moment (one weighted
        // pick, repeated) could make a run of misses out of one unlucky pick.
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// How often the servers are asked while waiting for an exclusion.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);

/// Runs `measure` while the `docker` commands run, each on a thread of its
/// own (they must all succeed).
fn during<T>(commands: &[Vec<String>], measure: impl FnOnce() -> T) -> T {
    std::thread::scope(|scope| {
        let running: Vec<_> = commands
            .iter()
            .map(|args| {
                scope.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    neutral_e2e::testbed::docker_ok(&args);
                })
            })
            .collect();
        let value = measure();
        for command in running {
            command.join().expect("a docker command failed");
        }
        value
    })
}

/// Consecutive answers without an address that count as its exclusion.
const RUN: usize = 40;

fn line(name: &str, samples: &[Duration]) {
    match median_p90(samples) {
        Some((median, p90)) => println!(
            "  {name:<44} median {:>6} ms   p90 {:>6} ms   ({} trials)",
            median.as_millis(),
            p90.as_millis(),
            samples.len()
        ),
        None => println!("  {name:<44} no samples"),
    }
}

/// PowerDNS on its own host (core + the region's network, from where it
/// checks the nodes), serving `www.example.org` as an `ifurlup` record over
/// `addresses`.
fn start_powerdns(d: &Deployment, region: &str, addresses: &[String]) -> SocketAddr {
    let core = d.bed.next_addr("core");
    let inner = d.bed.next_addr(region);
    let list = addresses
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(",");
    let lua =
        format!("A \"ifurlup('http://{PDNS_DOMAIN}/healthz', {{{{{list}}}}}, {{timeout=1}})\"");
    let script = "set -e; dir=/var/lib/pdns-bench; mkdir -p $dir; \
         sqlite3 $dir/pdns.db </usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql; \
         printf '%s\\n' launch=gsqlite3 gsqlite3-database=$dir/pdns.db local-address=0.0.0.0 \
           local-port=53 enable-lua-records=yes lua-health-checks-interval=2 \
           lua-health-checks-expire-delay=3600 cache-ttl=0 query-cache-ttl=0 \
           negquery-cache-ttl=0 socket-dir=$dir guardian=no daemon=no >$dir/pdns.conf; \
         pdnsutil --config-dir=$dir create-zone example.org ns1.example.org >/dev/null; \
         pdnsutil --config-dir=$dir add-record example.org www LUA 1 \"$LUA\" >/dev/null; \
         exec pdns_server --config-dir=$dir"
        .to_owned();
    let host = d.bed.start(HostSpec {
        name: "pdns".into(),
        networks: vec![("core".into(), core), (region.into(), inner)],
        command: vec!["sh".into(), "-c".into(), script],
        env: vec![("LUA".into(), lua)],
        ..HostSpec::default()
    });
    let server = SocketAddr::from((core, 53));
    let all: BTreeSet<String> = addresses.iter().cloned().collect();
    let start = Instant::now();
    while answers(server, PDNS_DOMAIN, 5) != all {
        assert!(
            start.elapsed() < WAIT,
            "PowerDNS never answered every node:\n{}",
            d.bed.logs(&host)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

fn silent_death(trials: usize) {
    let probe = Probe {
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        rise: 1,
        fall: 1,
    };
    let mut options = Options::two_regions(2, probe);
    options.regions.truncate(1);
    options.regions[0].failover = None;
    let started = Instant::now();
    let Some(d) = Deployment::start("benchdeath", options) else {
        return;
    };
    d.wait_all_up(WAIT);
    let warm = started.elapsed();
    let ips: Vec<String> = d.nodes.iter().map(|n| n.ip.to_string()).collect();
    let pdns = start_powerdns(&d, "jp", &ips);
    let mut neutral = Vec::new();
    let mut powerdns = Vec::new();
    for trial in 0..trials {
        let node = &d.nodes[trial % d.nodes.len()];
        let ip = node.ip.to_string();
        // Steadily (twice, a check cycle and more apart): a thawed host may
        // miss a check or two before its neighbours reach it again.
        let all: BTreeSet<String> = ips.iter().cloned().collect();
        let every = || d.answers(40) == all && answers(pdns, PDNS_DOMAIN, 40) == all;
        wait_until("both servers answering every node steadily", || {
            every() && {
                std::thread::sleep(probe.interval * 2);
                every()
            }
        });
        // Start at a random point of the check cycles.
        std::thread::sleep(Duration::from_millis(137 * (trial as u64 % 15)));
        // The clock starts when the fault is asked for, and the answers are
        // sampled while `docker pause` runs (the host stops somewhere within
        // it).
        let frozen = Instant::now();
        let at = during(
            &[vec!["pause".to_owned(), node.host.container.clone()]],
            || exclusion(&[(d.dns, DOMAIN), (pdns, PDNS_DOMAIN)], &ip, frozen),
        );
        neutral.push(at[0]);
        powerdns.push(at[1]);
        d.bed.thaw(&node.host);
    }
    println!(
        "silent node death (docker pause) → DNS exclusion, interval 2 s, timeout 1 s, one failure:"
    );
    line("neutral embedded DNS (probe fall 1)", &neutral);
    line("PowerDNS 4.7 ifurlup (own host)", &powerdns);
    println!(
        "test bed: deployment with 2 full nodes up in {} ms (image reused)",
        warm.as_millis()
    );
}

/// A region cut off from the control plane: with one replica, from it;
/// with three (PostgreSQL, `health.quorum: majority`), from two of them at
/// once — what it takes to fail a region over with a quorum.
fn region_cut(trials: usize, replicas: usize) {
    let probe = Probe {
        interval: Duration::from_millis(1000),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 2,
    };
    let mut options = Options::two_regions(1, probe);
    options.regions = vec![
        Region {
            name: "jp",
            nodes: 1,
            weight: 100,
            failover: Some("sg"),
        },
        Region {
            name: "sg",
            nodes: 1,
            weight: 100,
            failover: None,
        },
    ];
    options.split_brain_min_nodes = 100;
    options.replicas = replicas;
    if replicas > 1 {
        options.full_nodes = false;
        options.health = Some("{ quorum: majority }");
    }
    let Some(d) = Deployment::start("benchcut", options) else {
        return;
    };
    let cut_off: Vec<_> = d
        .replicas
        .iter()
        .take(replicas.div_ceil(2).max(1))
        .cloned()
        .collect();
    d.wait_all_up(WAIT);
    let jp = d.region_nodes("jp")[0].ip.to_string();
    let sg = d.region_nodes("sg")[0].ip.to_string();
    let mut failover = Vec::new();
    let mut back = Vec::new();
    for _ in 0..trials {
        // Steadily: a reconnected host's neighbours may still hold its old
        // link-layer address for a moment, and a probe or two fail then.
        let both = || {
            let seen = d.answers(40);
            seen.contains(&jp) && seen.contains(&sg)
        };
        wait_until("both regions answering steadily", || {
            both() && {
                std::thread::sleep(probe.interval * (probe.fall + 1));
                both()
            }
        });
        // With replicas: every vantage point sees jp up again (a healed
        // replica may take a while), so each cut starts from the same place.
        if replicas > 1 {
            wait_until("every vantage point seeing jp up", || {
                d.node_views().iter().any(|n| {
                    n.address == jp
                        && n.vantage.len() == replicas
                        && n.vantage.iter().all(|(_, ready)| *ready)
                })
            });
        }
        // From when the cut is asked for, sampling while `docker network
        // disconnect` runs (the cut happens somewhere within it).
        let network = d.bed.network("jp").name.clone();
        let cuts: Vec<Vec<String>> = cut_off
            .iter()
            .map(|cp| {
                ["network", "disconnect", &network, &cp.container]
                    .map(str::to_owned)
                    .to_vec()
            })
            .collect();
        let cut = Instant::now();
        failover.extend(during(&cuts, || exclusion(&[(d.dns, DOMAIN)], &jp, cut)));
        let healed = Instant::now();
        for cp in &cut_off {
            d.bed.heal(cp, "jp");
        }
        wait_until("jp back", || d.answers(10).contains(&jp));
        back.push(healed.elapsed());
    }
    println!(
        "region cut off from {} of {replicas} control-plane replica(s) (docker network disconnect), interval 1 s, timeout 500 ms, fall 2, rise 2:",
        cut_off.len()
    );
    line("cut → only the failover region answers", &failover);
    line("reconnect → the region answers again", &back);
}

fn image_reuse() {
    let start = Instant::now();
    match neutral_e2e::testbed::image() {
        Ok(tag) => println!(
            "test bed: image {tag} ready in {} ms (reused; cold build: see scripts/hosts)",
            start.elapsed().as_millis()
        ),
        Err(reason) => println!("test bed: no image: {reason}"),
    }
}

fn main() {
    let trials = trials();
    if let Err(reason) = neutral_e2e::testbed::image() {
        println!("SKIPPED: {reason}");
        return;
    }
    image_reuse();
    silent_death(trials);
    region_cut(trials, 1);
    region_cut(trials, 3);
}
