//! Health across hosts: the control plane and every node on their own
//! Docker hosts (tests/support/testbed.rs), DNS asked from the test with a
//! DNS client, faults as a user meets them: a frozen host (silent: no
//! reset), added latency, packet loss, a region cut off from the control
//! plane, a killed host.
//!
//! Skipped with the reason when Docker is not there, failed when `CI` is
//! set. Figures go to the benchmark (`benches/hosts.rs`), not here: the one
//! time bound asserted is the detection bound the probe settings promise.

use std::time::{Duration, Instant};

use neutral_e2e::testbed::deploy::{Deployment, Options, Probe, Region};

/// What the detection bound allows beyond `interval × fall + timeout`: the
/// health ticker (200 ms) publishing the status, the prober noticing a due
/// probe (it sleeps at most 250 ms), the weights' recompute and the DNS view
/// swap, and this test's own DNS polling (≤ 100 ms per round).
const MARGIN: Duration = Duration::from_millis(1000);
/// Any one wait for the deployment to settle.
const SETTLE: Duration = Duration::from_secs(120);

fn probe(interval_ms: u64, timeout_ms: u64, rise: u32, fall: u32) -> Probe {
    Probe {
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        rise,
        fall,
    }
}

fn one_region(nodes: usize, probe: Probe) -> Options {
    let mut options = Options::two_regions(nodes, probe);
    options.regions.truncate(1);
    options.regions[0].failover = None;
    options
}

#[test]
fn a_frozen_node_leaves_the_answers_within_the_probe_bound_and_comes_back_after_rise() {
    let probe = probe(1000, 500, 2, 3);
    let Some(d) = Deployment::start("freeze", one_region(2, probe)) else {
        return;
    };
    d.wait_all_up(SETTLE);
    let [a, b] = [&d.nodes[0], &d.nodes[1]];
    let (a_ip, b_ip) = (a.ip.to_string(), b.ip.to_string());
    d.wait("both nodes in the answers", SETTLE, |d| {
        let seen = d.answers(20);
        (seen.contains(&a_ip) && seen.contains(&b_ip)).then_some(())
    });

    d.bed.freeze(&a.host);
    let frozen = Instant::now();
    let bound = probe.detection_bound() + MARGIN;
    d.wait("the frozen node to leave the answers", bound * 3, |d| {
        // One weighted answer per query: 40 without it rule out chance.
        let seen = d.answers(40);
        (!seen.contains(&a_ip) && seen.contains(&b_ip)).then_some(())
    });
    let excluded = frozen.elapsed();
    assert!(
        excluded <= bound,
        "a frozen node left the answers after {excluded:?}, beyond interval × fall + timeout \
         + margin = {bound:?}"
    );
    let view = d
        .view_of(a.ip)
        .expect("the frozen node is still registered");
    assert_eq!(view.status, "down");
    // Silent: the probes timed out, nothing reset the connections.
    let changes = d.status_changes(&view.id);
    let last = changes.last().cloned().unwrap_or_default();
    assert!(last.contains("timed out"), "last status change: {last}");

    d.bed.thaw(&a.host);
    d.wait("the thawed node back in the answers", SETTLE, |d| {
        d.answers(20).contains(&a_ip).then_some(())
    });
    assert_eq!(d.view_of(a.ip).expect("registered").status, "up");
}

#[test]
fn a_killed_host_is_taken_out_and_a_restarted_one_comes_back() {
    let probe = probe(1000, 500, 2, 3);
    let Some(d) = Deployment::start("kill", one_region(2, probe)) else {
        return;
    };
    d.wait_all_up(SETTLE);
    let a = &d.nodes[0];
    let a_ip = a.ip.to_string();
    let id = d.view_of(a.ip).expect("registered").id;
    d.bed.kill(&a.host);
    assert!(!d.bed.running(&a.host));
    d.wait("the killed node to leave the answers", SETTLE, |d| {
        (!d.answers(40).contains(&a_ip)).then_some(())
    });
    d.bed.start_again(&a.host);
    d.wait("the restarted node back in the answers", SETTLE, |d| {
        d.answers(20).contains(&a_ip).then_some(())
    });
    // It kept its identity (its state file survived the restart).
    assert_eq!(d.view_of(a.ip).expect("registered").id, id);
}

/// The delay is real: a TCP connect from the control plane's host to the
/// node's service takes at least `ms` (the SYN-ACK is held).
fn assert_delay_applies(d: &Deployment, node: &neutral_e2e::testbed::deploy::NodeHost, ms: u32) {
    let script = format!(
        "python3 -c 'import socket,time; t=time.monotonic(); socket.create_connection((\"{}\", 80), 5).close(); print(int((time.monotonic()-t)*1000))'",
        node.ip
    );
    let took: u32 = d
        .bed
        .exec_ok(&d.cp, &["sh", "-c", &script])
        .trim()
        .parse()
        .expect("milliseconds");
    assert!(
        took >= ms,
        "a connect to the delayed node took {took} ms, less than the {ms} ms delay"
    );
}

/// Watches node `id` for `period`: every status change and every round of
/// DNS answers without `ip`.
fn watch(d: &Deployment, id: &str, ip: &str, period: Duration) -> (Vec<String>, usize) {
    let before = d.status_changes(id).len();
    let start = Instant::now();
    let mut missing = 0;
    while start.elapsed() < period {
        if !d.answers(5).contains(ip) {
            missing += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let changes = d.status_changes(id);
    (changes[before.min(changes.len())..].to_vec(), missing)
}

#[test]
fn a_node_whose_probes_take_300ms_longer_with_a_500ms_timeout_stays_up() {
    // A probe is a fresh TCP connection and one request: two round trips.
    // Holding each packet the node sends for 150 ms makes every probe
    // 300 ms slower (the SYN-ACK and the answer are both held).
    let probe = probe(1000, 500, 2, 3);
    let Some(d) = Deployment::start("delay", one_region(1, probe)) else {
        return;
    };
    d.wait_all_up(SETTLE);
    let node = &d.nodes[0];
    let id = d.view_of(node.ip).expect("registered").id;
    d.bed.delay(&node.host, 150);
    assert_delay_applies(&d, node, 150);
    let (changes, missing) = watch(&d, &id, &node.ip.to_string(), Duration::from_secs(15));
    assert!(
        changes.is_empty(),
        "the slow node changed status: {changes:#?}\n{}",
        d.diagnosis()
    );
    assert_eq!(missing, 0, "rounds of DNS answers without the slow node");
    assert_eq!(d.view_of(node.ip).expect("registered").status, "up");
}

#[test]
fn a_node_behind_300ms_delay_fails_500ms_probes_because_a_probe_is_two_round_trips() {
    // The same node with each packet held 300 ms (netem `delay 300ms`): a
    // fresh-connection probe now needs ≥ 600 ms, beyond the 500 ms timeout,
    // so the node goes down. What the probe timeout has to cover is two
    // round trips, not one.
    let probe = probe(1000, 500, 2, 3);
    let Some(d) = Deployment::start("delay300", one_region(1, probe)) else {
        return;
    };
    d.wait_all_up(SETTLE);
    let node = &d.nodes[0];
    d.bed.delay(&node.host, 300);
    assert_delay_applies(&d, node, 300);
    d.wait("the node behind 300 ms to go down", SETTLE, |d| {
        (d.view_of(node.ip)?.status == "down").then_some(())
    });
    d.bed.clear_delay(&node.host);
    d.wait(
        "the node to come back once the delay is gone",
        SETTLE,
        |d| (d.view_of(node.ip)?.status == "up").then_some(()),
    );
}

#[test]
fn thirty_percent_loss_with_fall_3_does_not_flap() {
    // Timeout 1.5 s leaves room for one SYN retransmission (1 s), as a
    // lossy link needs; fall 3 absorbs the probes that lose both.
    let probe = probe(2000, 1500, 2, 3);
    let Some(d) = Deployment::start("loss", one_region(1, probe)) else {
        return;
    };
    d.wait_all_up(SETTLE);
    let node = &d.nodes[0];
    let id = d.view_of(node.ip).expect("registered").id;
    d.bed.loss(&node.host, 30);
    // The loss is real: about 30% of 300 pings from the control plane's
    // host get no answer (the node drops 30% of what it sends).
    let ping = d.bed.exec(
        &d.cp,
        &[
            "ping",
            "-q",
            "-n",
            "-c",
            "300",
            "-i",
            "0.01",
            "-W",
            "1",
            &node.ip.to_string(),
        ],
    );
    let lost: f64 = ping
        .stdout
        .split(',')
        .find_map(|part| part.trim().strip_suffix("% packet loss"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("ping said: {}{}", ping.stdout, ping.stderr));
    assert!(
        (15.0..=45.0).contains(&lost),
        "ping lost {lost}% with 30% loss set"
    );
    let (changes, _) = watch(&d, &id, &node.ip.to_string(), Duration::from_secs(40));
    assert!(
        changes.is_empty(),
        "the lossy node flapped: {changes:#?}\n{}",
        d.diagnosis()
    );
    assert_eq!(d.view_of(node.ip).expect("registered").status, "up");
}

#[test]
fn a_region_cut_off_from_the_control_plane_fails_over_and_returns_after_rise_with_slow_start() {
    let probe = probe(1000, 500, 2, 2);
    let mut options = Options::two_regions(1, probe);
    options.regions = vec![
        Region {
            name: "jp",
            nodes: 2,
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
    options.slow_start = Some("20s");
    // Two of three nodes going down at once is what the split-brain guard
    // holds answers for; this test is about one region's failure.
    options.split_brain_min_nodes = 100;
    let Some(d) = Deployment::start("cut", options) else {
        return;
    };
    d.wait_all_up(SETTLE);
    let jp: Vec<String> = d
        .region_nodes("jp")
        .iter()
        .map(|n| n.ip.to_string())
        .collect();
    let sg: Vec<String> = d
        .region_nodes("sg")
        .iter()
        .map(|n| n.ip.to_string())
        .collect();
    // Past the first slow start of every region.
    d.wait("every node in the answers at full weight", SETTLE, |d| {
        let weights = d.region_weights();
        let seen = d.answers(30);
        (jp.iter().chain(&sg).all(|ip| seen.contains(ip))
            && weights.get("jp") == Some(&100)
            && weights.get("sg") == Some(&100))
        .then_some(())
    });

    d.bed.cut(&d.cp, "jp");
    let cut = Instant::now();
    d.wait("only sg in the answers", SETTLE, |d| {
        let seen = d.answers(40);
        (!seen.is_empty() && seen.iter().all(|ip| sg.contains(ip))).then_some(())
    });
    eprintln!("region cut → failover in DNS: {:?}", cut.elapsed());
    for node in d.region_nodes("jp") {
        assert_eq!(d.view_of(node.ip).expect("registered").status, "down");
        // The nodes themselves kept running all along.
        assert!(d.bed.running(&node.host));
    }

    d.bed.heal(&d.cp, "jp");
    let healed = Instant::now();
    let back = d.wait("jp back in the answers", SETTLE, |d| {
        let seen = d.answers(20);
        jp.iter()
            .any(|ip| seen.contains(ip))
            .then(|| d.region_weights())
    });
    // Not before rise successful probes.
    assert!(healed.elapsed() >= probe.interval * (probe.rise - 1));
    // Slow start: jp comes back below its full weight and ramps up to it.
    let first = back.get("jp").copied().unwrap_or_default();
    assert!(first < 100, "jp returned at weight {first}, not ramping");
    d.wait("jp ramped to its full weight", SETTLE, |d| {
        (d.region_weights().get("jp") == Some(&100)).then_some(())
    });
}

/// The index (in `d.replicas`) of the replica whose `/status` says it leads.
fn leader(d: &Deployment) -> Option<usize> {
    d.replicas.iter().position(|cp| {
        neutral_e2e::http::request(
            d.api_of(cp),
            "GET",
            "/status",
            Some(neutral_e2e::cluster::ADMIN_TOKEN),
            None,
        )
        .ok()
        .is_some_and(|r| r.json()["leadership"]["role"] == "leader")
    })
}

#[test]
fn three_replicas_take_a_region_down_only_when_a_quorum_of_them_loses_it() {
    let probe = probe(1000, 500, 2, 2);
    let mut options = Options::two_regions(1, probe);
    // The control plane is under test here; busybox nodes serve the probes.
    options.full_nodes = false;
    options.replicas = 3;
    options.health = Some("{ quorum: majority }");
    options.split_brain_min_nodes = 100;
    let Some(d) = Deployment::start("quorum", options) else {
        return;
    };
    d.wait_all_up(SETTLE);
    let jp = d.region_nodes("jp")[0].clone();
    let sg = d.region_nodes("sg")[0].clone();
    let apis: Vec<_> = d.replicas.iter().map(|cp| d.api_of(cp)).collect();
    d.wait("every replica to see both nodes up", SETTLE, |d| {
        apis.iter()
            .all(|api| {
                let views = d.node_views_at(*api);
                views.len() == 2 && views.iter().all(|n| n.status == "up")
            })
            .then_some(())
    });
    d.wait("jp and sg in the answers", SETTLE, |d| {
        let seen = d.answers(30);
        (seen.contains(&jp.ip.to_string()) && seen.contains(&sg.ip.to_string())).then_some(())
    });

    // The leader itself loses jp: alone it would fail jp over.
    let first = d.wait("a leader", SETTLE, leader);
    d.bed.cut(&d.replicas[first], "jp");
    let cut = Instant::now();
    // It does see jp down (its own vantage point), and is outvoted.
    let leader_name = d.replicas[first].name.clone();
    let leader_api = apis[first];
    d.wait("the leader's own verdict: jp down", SETTLE, |d| {
        d.node_views_at(leader_api)
            .into_iter()
            .find(|n| n.address == jp.ip.to_string())
            .filter(|n| n.vantage.contains(&(leader_name.clone(), false)) && n.vantage.len() == 3)
    });
    // Well past the moment the leader's own probes call jp down.
    while cut.elapsed() < probe.detection_bound() * 2 + Duration::from_secs(2) {
        for api in &apis {
            let view = d
                .node_views_at(*api)
                .into_iter()
                .find(|n| n.address == jp.ip.to_string());
            assert_eq!(
                view.as_ref().map(|v| v.status.as_str()),
                Some("up"),
                "one replica cut off from jp took it down: {view:?}\n{}",
                d.diagnosis()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(d.answers(20).contains(&jp.ip.to_string()));

    // A second replica loses jp: two of three see it down.
    let second = (0..3).find(|i| *i != first).unwrap_or(1);
    d.bed.cut(&d.replicas[second], "jp");
    let cut = Instant::now();
    let down = d.wait("jp down by quorum", SETTLE, |d| {
        d.view_of(jp.ip).filter(|v| v.status == "down")
    });
    eprintln!("second replica cut → jp down: {:?}", cut.elapsed());
    assert!(
        down.reason.contains("down at 2 of 3 vantage points"),
        "{}",
        down.reason
    );
    for cp in [first, second] {
        let name = &d.replicas[cp].name;
        assert!(
            down.reason.contains(&format!("{name}: ")),
            "{name}: {}",
            down.reason
        );
    }
    d.wait("only sg in the answers", SETTLE, |d| {
        let seen = d.answers(30);
        (seen.len() == 1 && seen.contains(&sg.ip.to_string())).then_some(())
    });
    // Every replica serves the leader's decision.
    for api in &apis {
        d.wait("every replica to see jp down", SETTLE, |d| {
            d.node_views_at(*api)
                .into_iter()
                .find(|n| n.address == jp.ip.to_string())
                .filter(|n| n.status == "down")
        });
    }

    // Reconnected, jp comes back.
    d.bed.heal(&d.replicas[first], "jp");
    d.bed.heal(&d.replicas[second], "jp");
    d.wait("jp up again", SETTLE, |d| {
        d.view_of(jp.ip).filter(|v| v.status == "up")
    });
    d.wait("jp back in the answers", SETTLE, |d| {
        d.answers(30).contains(&jp.ip.to_string()).then_some(())
    });
}
