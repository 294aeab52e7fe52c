//! DESIGN.md's five flows, end to end, each on a deployment of its own
//! ([`crate::stack`]): bootstrap, scale out, scale in, node failure
//! self-heal, region failure with GSLB failover. The same flows run on
//! loopback (`tests/e2e/flows.rs`) and across hosts of the test bed
//! (`tests/e2e/hosts_flows.rs`); the stack decides what a machine's death
//! and a region's failure are.
//!
//! Each flow drives only public surfaces — `git push` through the installed
//! hooks, the agents' metrics files, killing processes or hosts, cutting a
//! region's network — and checks what a user would: DNS answers from a real
//! DNS client (the embedded server, and PowerDNS in the bootstrap and
//! self-heal flows), the autoscaler's commits in `git log`, the Terraform
//! runs the scheduler recorded, the nodes running. Each finishes in bounded
//! time and leaves no process or host behind. The latencies they see are
//! printed (`--nocapture`) for the record; the figures themselves are the
//! benches' business.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::Value;

use crate::cluster::now_millis;

use crate::stack::{
    DRAIN_GRACE_SECS, Death, EMBEDDED_DOMAIN, Node, POWERDNS_DOMAIN, Stack, StackOptions, TTL_SECS,
};

fn addresses(nodes: &[Node]) -> BTreeSet<String> {
    nodes.iter().map(|n| n.address.clone()).collect()
}

fn figure(flow: &str, what: &str, took: Duration) {
    eprintln!("figure: {flow}: {what}: {:.2} s", took.as_secs_f64());
}

/// Milliseconds since the epoch of an API timestamp (RFC 3339 text or
/// integer milliseconds).
fn millis(value: &Value) -> i64 {
    if let Some(ms) = value.as_i64() {
        return ms;
    }
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {value}"));
    let time = humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .unwrap_or_else(|e| panic!("timestamp {text}: {e}"));
    i64::try_from(time.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Whether `run` was (also) triggered by `trigger`: coalesced runs list
/// every trigger, `push+health`.
fn has_trigger(run: &Value, trigger: &str) -> bool {
    run["trigger"]
        .as_str()
        .is_some_and(|t| t.split('+').any(|part| part == trigger))
}

/// Fails with the run's log unless it succeeded.
fn succeeded(stack: &Stack, run: &Value) {
    if run["status"] != "succeeded" {
        let id = run["id"].as_i64().unwrap_or(0);
        let detail = stack.get(&format!("/runs/{id}"));
        panic!(
            "run {id} did not succeed: {run}\n{}",
            detail["log"].as_str().unwrap_or_default()
        );
    }
}

fn last_run_id(stack: &Stack) -> i64 {
    stack
        .runs()
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .max()
        .unwrap_or(0)
}

/// The `N` of `autoscale(r): M -> N, ...`.
fn scaled_to(subject: &str) -> usize {
    subject
        .split(" -> ")
        .nth(1)
        .and_then(|after| after.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no target in `{subject}`"))
}

/// The flow's stack: on loopback net `net`, or across hosts when `hosts`
/// says how a node dies; `None` when it cannot run here (skipped).
fn start(net: u8, jp_nodes: u32, powerdns: bool, hosts: Option<Death>) -> Option<Stack> {
    Stack::start(StackOptions {
        net,
        jp_nodes,
        powerdns,
        hosts,
    })
}

/// `jp_nodes` of jp and one of sg up, and exactly those in the embedded
/// DNS answers; returns jp's and sg's nodes.
fn bootstrapped(stack: &Stack, jp_nodes: usize) -> (Vec<Node>, Vec<Node>) {
    let jp = stack.wait_up("jp", jp_nodes);
    let sg = stack.wait_up("sg", 1);
    let all: BTreeSet<String> = addresses(&jp).union(&addresses(&sg)).cloned().collect();
    stack.wait_answers(
        "every node answers",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| *a == all,
    );
    (jp, sg)
}

pub fn bootstrap(net: u8, hosts: Option<Death>) {
    let Some(stack) = start(net, 1, true, hosts) else {
        return;
    };
    // The first commit: the scheduler applies the node-pool root per region
    // and the GTM root; the provider's local launcher starts the agents.
    let jp = stack.wait_up("jp", 1);
    let sg = stack.wait_up("sg", 1);
    let up_after = stack.started.elapsed();
    for region in ["jp", "sg"] {
        let run = stack.wait_run(&format!("{region}'s first node-pool run"), |r| {
            r["root"] == "infra/node-pool" && r["workspace"] == region && has_trigger(r, "push")
        });
        succeeded(&stack, &run);
        assert!(run["adds"].as_u64() >= Some(1), "{run}");
    }
    let gtm = stack.wait_run("the first GTM run", |r| {
        r["root"] == "infra/gtm" && has_trigger(r, "push")
    });
    succeeded(&stack, &gtm);
    assert_eq!(jp.len(), 1, "{jp:?}");
    assert!(stack.node_running(&jp[0].id), "jp's node runs");

    // DNS answers with the node's address: the embedded server at once…
    let expected = addresses(&jp).union(&addresses(&sg)).cloned().collect();
    let (answers, _) = stack.wait_answers(
        "jp's and sg's nodes answer",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| *a == expected,
    );
    figure(
        "bootstrap",
        "control plane start to DNS answer",
        stack.started.elapsed(),
    );
    figure("bootstrap", "control plane start to nodes up", up_after);
    assert!(answers.contains(&jp[0].address));
    // …and PowerDNS once Terraform wrote the record.
    stack.wait_answers(
        "PowerDNS answers with the nodes",
        stack.powerdns_dns(),
        POWERDNS_DOMAIN,
        |a| *a == expected,
    );
    let zone = stack.powerdns_zone("example.org");
    let owned = crate::services::rrsets(&zone, POWERDNS_DOMAIN);
    assert!(
        owned
            .iter()
            .any(|r| r["comments"].to_string().contains("neutral")),
        "the record is marked as neutral's: {owned:?}"
    );

    // People change a weight: sg off. The embedded DNS follows the sync,
    // PowerDNS the GTM run of that commit.
    let (sha, said) = stack.push_edit(
        "platform-config/gtm/www.yaml",
        |t| {
            t.replace(
                "regions: { jp: 100, sg: 50 }",
                "regions: { jp: 100, sg: 0 }",
            )
        },
        "www: sg off",
    );
    let pushed = Instant::now();
    assert!(said.contains("neutral"), "the hooks spoke: {said}");
    let jp_only: BTreeSet<String> = addresses(&jp);
    let (_, in_dns) = stack.wait_answers(
        "only jp answers in PowerDNS",
        stack.powerdns_dns(),
        POWERDNS_DOMAIN,
        |a| *a == jp_only,
    );
    figure(
        "bootstrap",
        "push of a weight change to PowerDNS answers",
        in_dns - pushed,
    );
    let run = stack.wait_run("the GTM run of the weight change", |r| {
        r["root"] == "infra/gtm" && r["commit"] == sha.as_str() && has_trigger(r, "push")
    });
    succeeded(&stack, &run);
    assert!(run["changes"].as_u64() >= Some(1), "{run}");
    // The other domain did not change.
    stack.wait_answers(
        "the embedded domain still answers with both",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| *a == expected,
    );
    // Regions that were still starting were no failures: in all this time
    // (the autoscaler decides every 500 ms) nobody scaled.
    let commits = stack.commits();
    assert!(
        !commits.iter().any(|(_, _, s)| s.starts_with("autoscale")),
        "{commits:?}"
    );
    stack.shut_down();
}

pub fn scale_out(net: u8, hosts: Option<Death>) {
    let Some(stack) = start(net, 1, false, hosts) else {
        return;
    };
    let (jp, _) = bootstrapped(&stack, 1);

    // CPU 0.82 sustained on jp's node.
    stack.set_cpu("jp", 0.82);
    let (sha, author, subject) = stack.wait_commit("autoscale(jp): ");
    let decided = Instant::now();
    // Keep the load where it is once the capacity arrives.
    stack.set_cpu("jp", 0.5);
    assert!(
        subject.starts_with("autoscale(jp): 1 -> 2, cpu 0.82 > 0.75 for 2s"),
        "{subject}"
    );
    assert_eq!(author, "neutral autoscaler");
    let tfvars = stack.show(&sha, "infra/node-pool/jp.tfvars");
    assert_eq!(
        tfvars,
        "# jp's node pool: people and the autoscaler edit it.\nregion        = \"jp\"\ndesired_nodes = 2\n",
        "only the value changed"
    );

    // The scheduler applies that commit; the new node registers.
    let grown = stack.wait_up("jp", 2);
    figure(
        "scale out",
        "autoscale decision (commit seen) to registered, ready node",
        decided.elapsed(),
    );
    let run = stack.wait_run("the node-pool run of the autoscaler's commit", |r| {
        r["root"] == "infra/node-pool" && r["workspace"] == "jp" && r["commit"] == sha.as_str()
    });
    succeeded(&stack, &run);
    // The pool is one resource, updated in place: 1 -> 2 slots.
    assert_eq!(
        (run["adds"].as_u64(), run["changes"].as_u64()),
        (Some(0), Some(1)),
        "{run}"
    );
    assert!(
        grown.iter().any(|n| n.id == jp[0].id),
        "the first node stays"
    );

    // It joins DNS, and the weights are recomputed over both nodes.
    let jp_addresses = addresses(&grown);
    stack.wait_answers(
        "both jp nodes answer",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| jp_addresses.is_subset(a),
    );
    let domain = stack.get(&format!("/domains/{EMBEDDED_DOMAIN}"));
    let answers = domain["answers"].as_array().cloned().unwrap_or_default();
    for node in &grown {
        assert!(
            answers
                .iter()
                .any(|a| a["address"] == node.address.as_str() && a["weight"].as_f64() > Some(0.0)),
            "{} has a weight: {domain}",
            node.address
        );
    }
    // One action, not two: the second node's arrival ended it.
    let actions = stack
        .commits()
        .iter()
        .filter(|(_, _, s)| s.starts_with("autoscale(jp)"))
        .count();
    assert_eq!(actions, 1, "{:?}", stack.commits());
    stack.shut_down();
}

pub fn scale_in(net: u8, hosts: Option<Death>) {
    let Some(stack) = start(net, 2, false, hosts) else {
        return;
    };
    let (jp, _) = bootstrapped(&stack, 2);
    assert_eq!(jp.len(), 2);

    stack.set_cpu("jp", 0.1);
    let (sha, author, subject) = stack.wait_commit("autoscale(jp): ");
    assert!(
        subject.starts_with("autoscale(jp): 2 -> 1, cpu"),
        "{subject}"
    );
    assert_eq!(author, "neutral autoscaler");
    // The autoscaler marked one node drain before it committed.
    let drained = stack.wait_nodes("a drained jp node", |nodes| {
        nodes
            .iter()
            .find(|n| n.region == "jp" && n.status == "drain")
            .cloned()
    });
    let kept = jp.iter().find(|n| n.id != drained.id).unwrap().clone();
    let drained_at = millis(&stack.node(&drained.id).expect("drained node")["status_since"]);
    assert!(stack.node_running(&kept.id), "the kept node runs");

    // DNS drops it while it still runs (it serves out the TTL).
    stack.wait_answers(
        "the drained node leaves DNS",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| !a.contains(&drained.address) && a.contains(&kept.address),
    );
    assert!(
        stack.node_running(&drained.id),
        "the drained node still runs"
    );

    // Terraform destroys exactly that node, after TTL plus grace.
    let run = stack.wait_run("the node-pool run of the scale-in commit", |r| {
        r["root"] == "infra/node-pool" && r["workspace"] == "jp" && r["commit"] == sha.as_str()
    });
    succeeded(&stack, &run);
    assert_eq!(
        (run["changes"].as_u64(), run["destroys"].as_u64()),
        (Some(1), Some(0)),
        "{run}"
    );
    let stopped_at = stack.wait("the drained agent to stop", || {
        (!stack.node_running(&drained.id)).then(now_millis)
    });
    assert!(
        stopped_at - drained_at >= i64::try_from((TTL_SECS + DRAIN_GRACE_SECS) * 1000).unwrap(),
        "the drained node got TTL + grace: drained at {drained_at}, stopped by {stopped_at}"
    );
    let remaining = stack.wait_nodes("jp back to min_nodes", |nodes| {
        let jp: Vec<Node> = nodes.iter().filter(|n| n.region == "jp").cloned().collect();
        (jp.len() == 1).then_some(jp)
    });
    assert_eq!(remaining[0].id, kept.id, "the other node stays");
    assert_eq!(remaining[0].status, "up");
    assert!(stack.node_running(&kept.id), "the kept node runs");
    stack.shut_down();
}

pub fn self_heal(net: u8, hosts: Option<Death>) {
    let Some(stack) = start(net, 1, true, hosts) else {
        return;
    };
    let (jp, sg) = bootstrapped(&stack, 1);
    let victim = jp[0].clone();
    stack.wait_answers(
        "PowerDNS answers with jp's node",
        stack.powerdns_dns(),
        POWERDNS_DOMAIN,
        |a| a.contains(&victim.address),
    );
    let before = last_run_id(&stack);

    // The machine dies: agent killed, its service gone.
    let killed = now_millis();
    stack.kill_node(&victim);
    let died = Instant::now();
    let (answers, dropped) = stack.wait_answers(
        "the dead node leaves the embedded DNS",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| !a.contains(&victim.address) && !a.is_empty(),
    );
    let sg_now: BTreeSet<String> = stack
        .nodes()
        .iter()
        .filter(|n| n.region == "sg")
        .map(|n| n.address.clone())
        .collect();
    assert!(sg.iter().all(|n| sg_now.contains(&n.address)));
    assert!(answers.is_subset(&sg_now), "only sg answers: {answers:?}");
    figure(
        "self-heal",
        "node death to embedded DNS exclusion",
        dropped - died,
    );
    // It went down (a frozen host's node may already be gone: the run that
    // replaced it removed it).
    stack.wait("the dead node down in the audit log", || {
        let entries = stack.get(&format!(
            "/audit?kind=node.status&subject={}&limit=50",
            victim.id
        ));
        entries
            .as_array()?
            .iter()
            .any(|e| e["data"]["to"] == "down")
            .then_some(())
    });
    // Detection: the first weight change of the domain after the kill.
    let detected = stack.wait("the detection in the audit log", || {
        let entries = stack.get(&format!(
            "/audit?kind=gtm.weights&subject={POWERDNS_DOMAIN}&newest_first=true&limit=50"
        ));
        entries
            .as_array()?
            .iter()
            .map(|e| millis(&e["at"]))
            .filter(|at| *at >= killed)
            .min()
    });

    // The health-triggered run of the GTM root writes PowerDNS.
    let (_, pdns_dropped) = stack.wait_answers(
        "the dead node leaves PowerDNS",
        stack.powerdns_dns(),
        POWERDNS_DOMAIN,
        |a| !a.contains(&victim.address) && !a.is_empty(),
    );
    figure(
        "self-heal",
        "node death to PowerDNS exclusion",
        pdns_dropped - died,
    );
    // The run that applied it: the first (oldest) health-triggered run of
    // the GTM root that changed the records and finished after the
    // detection (its plan read live health; one queued just before may
    // carry it).
    let health = stack.wait("the health-triggered GTM run", || {
        stack
            .runs()
            .into_iter()
            .filter(|r| {
                r["id"].as_i64() > Some(before)
                    && r["root"] == "infra/gtm"
                    && has_trigger(r, "health")
                    && r["status"] == "succeeded"
                    && r["changes"].as_u64() >= Some(1)
                    && millis(&r["finished_at"]) >= detected
            })
            .min_by_key(|r| r["id"].as_i64())
    });
    let applied = millis(&health["finished_at"]);
    figure(
        "self-heal",
        "detection to applied health run",
        Duration::from_millis(u64::try_from(applied - detected).unwrap_or(0)),
    );

    // jp is below min_nodes: Terraform starts a replacement.
    let replacement = stack.wait_nodes("a replacement in jp", |nodes| {
        nodes
            .iter()
            .find(|n| n.region == "jp" && n.status == "up" && n.id != victim.id)
            .cloned()
    });
    figure("self-heal", "node death to replacement up", died.elapsed());
    let pool = stack.wait_run("the node-pool run that replaced it", |r| {
        r["id"].as_i64() > Some(before) && r["root"] == "infra/node-pool" && r["workspace"] == "jp"
    });
    succeeded(&stack, &pool);
    assert!(pool["changes"].as_u64() >= Some(1), "{pool}");
    stack.wait_answers(
        "the replacement answers",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| a.contains(&replacement.address) && !a.contains(&victim.address),
    );
    stack.wait_answers(
        "the replacement answers in PowerDNS",
        stack.powerdns_dns(),
        POWERDNS_DOMAIN,
        |a| a.contains(&replacement.address) && !a.contains(&victim.address),
    );
    stack.shut_down();
}

pub fn region_failover(net: u8, hosts: Option<Death>) {
    let Some(stack) = start(net, 1, false, hosts) else {
        return;
    };
    let (jp, sg) = bootstrapped(&stack, 1);

    // jp fails: people declare it down (on loopback), or it is cut off
    // from the control plane (across hosts).
    let before = last_run_id(&stack);
    stack.fail_region("jp");
    let failed = Instant::now();
    let sg_addresses = addresses(&sg);
    let (_, failed_over) = stack.wait_answers(
        "only sg answers",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| !a.is_empty() && a.is_subset(&sg_addresses),
    );
    figure(
        "failover",
        &format!("{} to failover in DNS", stack.region_failure()),
        failed_over - failed,
    );

    // sg takes jp's capacity.
    let (_, author, subject) = stack.wait_commit("autoscale(sg): 1 -> ");
    assert_eq!(author, "neutral autoscaler");
    let grown = scaled_to(&subject);
    assert!(grown >= 2, "{subject}");
    let sg_grown = stack.wait_up("sg", grown);
    let sg_all = addresses(&sg_grown);
    stack.wait_answers(
        "sg's new nodes answer",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| *a == sg_all,
    );

    if stack.on_hosts() {
        // Cut off, jp's node looks dead to the control plane, which asks
        // for its replacement. The new host cannot register, so that run
        // fails — and the old node stays (a replaced node goes only once its
        // successor runs): jp is still a failed region, not one with no
        // node that reads as starting, and sg keeps jp's capacity.
        let run = stack.wait_run("jp's replacement run", |r| {
            r["id"].as_i64() > Some(before)
                && r["root"] == "infra/node-pool"
                && r["workspace"] == "jp"
                && has_trigger(r, "autoscale")
        });
        assert_eq!(run["status"], "failed", "{run}");
        let old = stack
            .node(&jp[0].id)
            .expect("jp's old node is still listed");
        assert_eq!(old["status"], "down", "{old}");
        let shrunk = stack.commits().into_iter().find(|(_, _, s)| {
            // A scale-in from the grown size; a further scale-out (the
            // failover share can need more than one step) is no give-up.
            s.strip_prefix(&format!("autoscale(sg): {grown} -> "))
                .and_then(|rest| rest.split(',').next()?.trim().parse::<usize>().ok())
                .is_some_and(|to| to < grown)
        });
        assert!(
            shrunk.is_none(),
            "sg gave jp's capacity up while jp was cut off: {shrunk:?}"
        );
    }

    // jp recovers: traffic returns and sg shrinks back.
    stack.recover_region("jp");
    let recovered = Instant::now();
    let (_, back) = stack.wait_answers(
        "jp answers again",
        stack.embedded_dns(),
        EMBEDDED_DOMAIN,
        |a| {
            stack
                .nodes()
                .iter()
                .any(|n| n.region == "jp" && n.status == "up" && a.contains(&n.address))
        },
    );
    figure("failover", "recovery to jp in DNS", back - recovered);
    let (sha, _, subject) = stack.wait_commit(&format!("autoscale(sg): {grown} -> 1"));
    assert!(subject.contains("failover"), "{subject}");
    let run = stack.wait_run("sg's shrinking run", |r| {
        r["root"] == "infra/node-pool" && r["workspace"] == "sg" && r["commit"] == sha.as_str()
    });
    succeeded(&stack, &run);
    stack.wait_nodes("sg back to one node", |nodes| {
        (nodes.iter().filter(|n| n.region == "sg").count() == 1).then_some(())
    });
    stack.shut_down();
}
