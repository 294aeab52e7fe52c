//! `neutral demo`: the minimal deployment of `examples/minimal`, end to end
//! on this machine, then a short story told as a timeline with the DNS
//! answers at each step.
//!
//! Everything is real and driven only through public surfaces: a Git
//! repository with neutral's hooks installed, `neutral serve` with the
//! embedded DNS server and the Terraform scheduler, nodes started by the
//! provider's local launcher (full containerd + nginx nodes when this machine
//! can run them, plain agents otherwise), `git push` for people's changes,
//! agents' metrics files for load, killing processes for failures, and a DNS
//! client for what users see. The demo only watches and narrates; it cleans
//! up every process and file it made.

mod common;
mod dns;
mod hosts;
mod world;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use crate::common::{DOMAIN, DemoArgs};
use crate::world::World;

pub fn run_blocking(args: DemoArgs) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let mut world = match World::start(&args).await {
            Ok(world) => world,
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::from(2);
            }
        };
        let result = story(&mut world).await;
        if let Err(err) = &result {
            world.say(&format!("FAILED: {err:#}"));
            world.print_log_tails();
        }
        world.stop().await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        }
    })
}

const STEP: Duration = Duration::from_secs(180);

/// The story: bootstrap, people add a failover region, load rises and the
/// region scales out, a node dies and is replaced, the region goes down and
/// traffic fails over (with failover capacity), the region comes back.
async fn story(w: &mut World) -> Result<()> {
    let mut figures: BTreeMap<&str, Duration> = BTreeMap::new();

    w.step("1. bootstrap: terraform apply creates the first node of region `local`");
    let first = w.wait_ready("local", 1, STEP).await?;
    w.wait_answers("the first node answers", STEP, |a| {
        a.contains_key(&first[0].1)
    })
    .await?;
    w.dig(40).await?;

    w.step("2. people push: region `backup` (failover target of `local`, with failover capacity) and demo timings");
    let pushed = w.push_demo_config()?;
    let push_at = Instant::now();
    w.say(&format!("git push: {pushed}"));
    let backup = w.wait_ready("backup", 1, STEP).await?;
    w.wait_answers("backup joins the answers", STEP, |a| {
        a.contains_key(&backup[0].1)
    })
    .await?;
    figures.insert("push to DNS answer from a new region", push_at.elapsed());
    w.dig(60).await?;

    w.step("3. load rises: local's node reports CPU 0.85");
    w.set_region_cpu("local", 0.85)?;
    let load_at = Instant::now();
    let commit = w.wait_commit("autoscale(local): 1 -> 2", STEP).await?;
    w.say(&format!("the autoscaler's commit: {commit}"));
    let decided = Instant::now();
    figures.insert("sustained load to autoscale commit", load_at.elapsed());
    w.set_region_cpu("local", 0.5)?;
    let local = w.wait_ready("local", 2, STEP).await?;
    figures.insert(
        "autoscale commit to registered, ready node",
        decided.elapsed(),
    );
    w.wait_answers("the new node answers", STEP, |a| {
        local.iter().all(|(_, ip)| a.contains_key(ip))
    })
    .await?;
    w.dig(60).await?;

    w.step("4. a node dies: everything of local's newest node is killed");
    let (victim, victim_ip) = local.last().cloned().context("no local node")?;
    w.kill_node(&victim)?;
    let died = Instant::now();
    w.wait_status(&victim, "down", STEP).await?;
    w.wait_answers("DNS drops the dead node", STEP, |a| {
        !a.contains_key(&victim_ip)
    })
    .await?;
    figures.insert("node death to DNS exclusion", died.elapsed());
    let healed = w
        .wait_until("a replacement node is ready", STEP, |nodes| {
            let ready: Vec<_> = nodes
                .iter()
                .filter(|n| n.region == "local" && n.status == "up" && n.id != victim)
                .collect();
            (ready.len() >= 2).then(|| {
                ready
                    .iter()
                    .map(|n| (n.id.clone(), n.address.clone()))
                    .collect::<Vec<_>>()
            })
        })
        .await?;
    figures.insert("node death to replacement ready", died.elapsed());
    w.wait_answers("the replacement answers", STEP, |a| {
        healed.iter().all(|(_, ip)| a.contains_key(ip))
    })
    .await?;
    w.dig(60).await?;

    w.step("5. region `local` goes down (people push state: down): traffic fails over to `backup`");
    let pushed = w.push_region_state("local", "down")?;
    w.say(&format!("git push: {pushed}"));
    let down_at = Instant::now();
    let backup_ips: Vec<String> = backup.iter().map(|(_, ip)| ip.clone()).collect();
    w.wait_answers("only backup answers", STEP, |a| {
        !a.is_empty() && a.keys().all(|ip| backup_ips.contains(ip))
    })
    .await?;
    figures.insert("push of state: down to failover in DNS", down_at.elapsed());
    w.dig(40).await?;
    let commit = w.wait_commit("autoscale(backup): 1 -> ", STEP).await?;
    w.say(&format!("failover capacity: {commit}"));
    let grown = scaled_to(&commit).context("the failover commit names no target")?;
    w.wait_ready("backup", grown, STEP).await?;
    w.dig(40).await?;

    w.step("6. region `local` recovers: traffic returns, the extra capacity is released");
    let pushed = w.push_region_state("local", "up")?;
    w.say(&format!("git push: {pushed}"));
    let local_ips: Vec<String> = healed.iter().map(|(_, ip)| ip.clone()).collect();
    w.wait_answers("local answers again", STEP, |a| {
        local_ips.iter().any(|ip| a.contains_key(ip))
    })
    .await?;
    w.dig(60).await?;
    let commit = w
        .wait_commit(&format!("autoscale(backup): {grown} -> 1"), STEP)
        .await?;
    w.say(&format!("release: {commit}"));
    w.wait_until("backup back to one node", STEP, |nodes| {
        (nodes.iter().filter(|n| n.region == "backup").count() == 1).then_some(())
    })
    .await?;
    w.dig(60).await?;

    w.step("done");
    w.print_runs().await?;
    println!();
    println!("figures (this machine, this run):");
    for (name, took) in &figures {
        println!("  {name:<44} {:>6.1} s", took.as_secs_f64());
    }
    Ok(())
}

/// The `N` of a commit subject `autoscale(r): M -> N, ...`.
fn scaled_to(commit: &str) -> Option<usize> {
    let after = commit.split(" -> ").nth(1)?;
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
