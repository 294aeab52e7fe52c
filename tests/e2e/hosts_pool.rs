//! `neutral_node_pool` with `launcher = "docker"`: real Terraform and the
//! real provider create nodes as Docker hosts on the region's network of the
//! test bed (tests/support/testbed.rs), where `neutral serve` runs on its own
//! host. Apply 2 → two containers with their slots' addresses, both nodes up;
//! scale to 1 → the drained node's container is gone and its node deleted; a
//! host that dies (`docker kill` in one test, `docker pause` in the other)
//! goes down and the next apply replaces it with a new container; destroy →
//! no container, no node.
//!
//! Skipped without Docker or Terraform; failed without Docker when `CI` is
//! set.

use std::ffi::OsString;
use std::time::Duration;

use neutral_e2e::cluster::{ADMIN_TOKEN, JOIN_TOKEN};
use neutral_e2e::services::{Terraform, terraform_or_skip};
use neutral_e2e::testbed::deploy::{Deployment, NodeView, Options, Probe};
use neutral_e2e::testbed::docker;

const SETTLE: Duration = Duration::from_secs(120);

/// The containers the pool's launcher runs: `(name, address, running)`.
fn pool_containers(network: &str) -> Vec<(String, String, bool)> {
    let filter = format!("name=^{network}-jp-");
    let ids = docker(&["ps", "-aq", "--filter", &filter]).stdout;
    ids.split_whitespace()
        .map(|id| {
            let format = format!(
                "{{{{.Name}}}} {{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}} {{{{.State.Running}}}}"
            );
            let out = docker(&["inspect", "--format", &format, id]).stdout;
            let mut parts = out.split_whitespace();
            (
                parts.next().unwrap_or_default().trim_start_matches('/').to_owned(),
                parts.next().unwrap_or_default().to_owned(),
                parts.next() == Some("true"),
            )
        })
        .collect()
}

/// How the pool's last host dies.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// `docker kill`: the host is gone; the launcher sees its container
    /// stopped.
    Kill,
    /// `docker pause`: the host is silent; only the control plane's probes
    /// notice.
    Freeze,
}

#[test]
fn the_docker_launcher_creates_scales_and_replaces_a_killed_host() {
    lifecycle(Death::Kill);
}

#[test]
fn the_docker_launcher_creates_scales_and_replaces_a_frozen_host() {
    lifecycle(Death::Freeze);
}

fn lifecycle(death: Death) {
    let Some(terraform) = terraform_or_skip("hosts_pool") else {
        return;
    };
    let probe = Probe {
        interval: Duration::from_millis(1000),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 2,
    };
    let mut options = Options::two_regions(0, probe);
    options.regions.truncate(1);
    options.regions[0].failover = None;
    // Plain agents: the image's entrypoint serves /healthz beside them.
    options.full_nodes = false;
    let name = format!("pool{death:?}");
    let Some(d) = Deployment::start(&name, options) else {
        return;
    };
    let network = d.bed.network("jp").clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let tf = Terraform::new(terraform, dir.path());
    let state_dir = dir.path().join("pool");
    let first = network.addr(50);
    let last = network.addr(59);
    let docker_args = [
        "--env".to_owned(),
        format!(
            "NEUTRAL_HOST_HTTPD={{address}}:{}",
            neutral_e2e::testbed::deploy::SERVICE_PORT
        ),
        // The test bed's labels: its teardown removes these containers too.
        "--label".to_owned(),
        format!("org.neutral.testbed.pid={}", std::process::id()),
        "--label".to_owned(),
        format!("org.neutral.testbed.bed={}", d.bed.prefix),
    ];
    let docker_args = docker_args
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let main_tf = |desired: u32| {
        format!(
            r#"terraform {{
  required_providers {{
    neutral = {{ source = "neutral/neutral" }}
  }}
}}

provider "neutral" {{}}

resource "neutral_node_pool" "jp" {{
  region         = "jp"
  min_nodes      = 0
  max_nodes      = 3
  desired_nodes  = {desired}
  launcher       = "docker"
  drain_grace    = "1s"
  control_plane  = "http://{cp}:7400"
  address_range  = "{first}-{last}"
  state_dir      = "{state}"
  agent_args     = ["--backoff-min", "100ms", "--backoff-max", "1s"]
  docker_image   = "{image}"
  docker_network = "{network}"
  docker_args    = [{docker_args}]
}}

output "slots" {{
  value = neutral_node_pool.jp.slots
}}
"#,
            cp = d.cp.ip("jp"),
            state = state_dir.display(),
            image = d.bed.image,
            network = network.name,
        )
    };
    let endpoint = OsString::from(format!("http://{}", d.api));
    let token = OsString::from(ADMIN_TOKEN);
    let join = OsString::from(JOIN_TOKEN);
    let env: [(&str, &std::ffi::OsStr); 3] = [
        ("NEUTRAL_ENDPOINT", endpoint.as_os_str()),
        ("NEUTRAL_TOKEN", token.as_os_str()),
        ("NEUTRAL_JOIN_TOKEN", join.as_os_str()),
    ];
    let apply = |desired: u32| {
        tf.write("main.tf", &main_tf(desired));
        let out = tf.run_with_env(&["apply", "-auto-approve", "-no-color"], &env);
        assert_eq!(
            out.code,
            Some(0),
            "terraform apply (desired {desired}):\n{}\n{}\n{}",
            out.stdout,
            out.stderr,
            d.diagnosis()
        );
        out.stdout
    };
    let up_nodes = |d: &Deployment| -> Vec<NodeView> {
        d.node_views()
            .into_iter()
            .filter(|n| n.status == "up")
            .collect()
    };

    // Two hosts.
    apply(2);
    let containers = pool_containers(&network.name);
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert!(containers.iter().all(|(_, _, running)| *running));
    d.wait("both pool nodes up", SETTLE, |d| {
        let up = up_nodes(d);
        let mut addresses: Vec<String> = up.iter().map(|n| n.address.clone()).collect();
        addresses.sort();
        let mut expected: Vec<String> = containers.iter().map(|(_, ip, _)| ip.clone()).collect();
        expected.sort();
        (addresses == expected).then_some(())
    });
    // An empty plan on a steady pool.
    tf.write("main.tf", &main_tf(2));
    let plan = tf.run_with_env(&["plan", "-detailed-exitcode", "-no-color"], &env);
    assert_eq!(plan.code, Some(0), "{}{}", plan.stdout, plan.stderr);

    // Scale in: one container and its node go.
    apply(1);
    let left = pool_containers(&network.name);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(d.node_views().len(), 1, "{:#?}", d.node_views());

    // The remaining host dies: down, then the next apply replaces it.
    let (frozen_name, frozen_ip, _) = left[0].clone();
    let verb = match death {
        Death::Kill => "kill",
        Death::Freeze => "pause",
    };
    assert_eq!(docker(&[verb, &frozen_name]).code, Some(0));
    d.wait("the dead pool node down", SETTLE, |d| {
        d.node_views()
            .iter()
            .any(|n| n.address == frozen_ip && n.status == "down")
            .then_some(())
    });
    apply(1);
    let replaced = pool_containers(&network.name);
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_ne!(
        replaced[0].0, frozen_name,
        "the frozen host was not replaced"
    );
    d.wait("the replacement up", SETTLE, |d| {
        (up_nodes(d).len() == 1 && d.node_views().len() == 1).then_some(())
    });

    // Destroy: nothing left.
    let out = tf.run_with_env(&["destroy", "-auto-approve", "-no-color"], &env);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(pool_containers(&network.name).is_empty());
    assert!(d.node_views().is_empty(), "{:#?}", d.node_views());
}
