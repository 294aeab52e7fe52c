//! The pool's arguments and observation.

use std::collections::BTreeMap;
use std::time::Duration;

use neutral_core::model::Timestamp;
use neutral_core::pool::SlotStatus;

use super::observe::*;
use super::schema::*;
use crate::client::NodeView;
use crate::framework::{Diags, Path, Value};

fn config(entries: &[(&str, Value)]) -> Value {
    let mut value = Value::Map(BTreeMap::new());
    for (k, v) in entries {
        value.set(k, v.clone());
    }
    value
}

fn local() -> Value {
    config(&[
        ("region", "jp".into()),
        ("min_nodes", Value::Int(1)),
        ("max_nodes", Value::Int(3)),
        ("desired_nodes", Value::Int(2)),
        ("address_range", "127.0.0.50-127.0.0.59".into()),
        ("state_dir", "/var/lib/neutral/pool/jp".into()),
    ])
}

fn problems(config: &Value) -> Vec<String> {
    let mut diags = Diags::default();
    check(config, &mut diags);
    diags
        .0
        .iter()
        .map(|d| format!("{}: {}: {}", d.path, d.summary, d.detail))
        .collect()
}

fn node(id: &str, region: &str, status: &str, hostname: Option<&str>) -> NodeView {
    serde_json::from_value(serde_json::json!({
        "id": id, "region": region, "address": "127.0.0.50", "status": status,
        "status_since": "2024-01-01T00:01:00Z", "registered_at": "2024-01-01T00:00:00Z",
        "hostname": hostname,
    }))
    .expect("node view")
}

#[test]
fn a_local_pool_is_valid_and_gets_defaults() {
    assert_eq!(problems(&local()), Vec::<String>::new());
    let spec = spec_of(&with_defaults(&local())).expect("spec");
    assert_eq!(spec.launcher, Launcher::Local);
    assert_eq!(spec.drain_grace, Duration::from_secs(10));
    let settings = spec.local.expect("local settings");
    assert_eq!(settings.address_range.len(), 10);
    assert!(settings.agent_args.is_empty());
}

#[test]
fn bad_values_are_reported_at_their_attribute() {
    let mut bad = local();
    bad.set("region", "JP".into());
    bad.set("min_nodes", Value::Int(4));
    bad.set("drain_grace", "soon".into());
    bad.set("address_range", "127.0.0.50-127.0.0.51".into());
    bad.set("state_dir", "pool/jp".into());
    bad.set("control_plane", "cp:7400".into());
    bad.set(
        "agent_args",
        Value::List(vec![
            "--probe-count".into(),
            "2".into(),
            "--ip=10.0.0.1".into(),
        ]),
    );
    bad.set("slots", Value::List(Vec::new()));
    expect_test::expect![[r#"
        slots: `slots` is computed by the provider: Remove it from the configuration: its value is set by the provider.
        region: invalid region name: `JP`: label `JP` contains `J`; use a-z, 0-9 and `-`
        min_nodes: min_nodes above max_nodes: min_nodes 4 is greater than max_nodes 3
        drain_grace: invalid duration: `soon`: expected a number at `soon` (write e.g. `10s`, `1m30s`, `500ms`)
        control_plane: invalid URL: `cp:7400` is not an http:// or https:// URL
        state_dir: state_dir must be absolute: `pool/jp` is relative: Terraform runs in changing folders (the scheduler exports each commit), the pool's agents must be found again
        agent_args[2]: flag set by the launcher: `--ip` is set by the local launcher for every agent; remove it from agent_args
        address_range: address range smaller than max_nodes: `127.0.0.50-127.0.0.51` holds 2 addresses; max_nodes is 3"#]]
    .assert_eq(&problems(&bad).join("\n"));
}

#[test]
fn the_launchers_need_their_own_settings_only() {
    let mut bare = local();
    bare.set("address_range", Value::Null);
    bare.set("state_dir", Value::Null);
    let found = problems(&bare);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("address_range: `address_range` is required"));
    assert!(found[1].starts_with("state_dir: `state_dir` is required"));

    let mut external = local();
    external.set("launcher", "external".into());
    let found = problems(&external);
    assert_eq!(
        found
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["address_range", "state_dir"]
    );
    external.set("address_range", Value::Null);
    external.set("state_dir", Value::Null);
    external.set("agent_args", Value::List(Vec::new()));
    assert!(problems(&external).is_empty());
    let spec = spec_of(&with_defaults(&external)).expect("spec");
    assert_eq!(spec.local, None);
}

#[test]
fn unknown_arguments_leave_the_spec_unknown() {
    let mut later = local();
    later.set("desired_nodes", Value::Unknown);
    assert!(problems(&later).is_empty());
    assert_eq!(spec_of(&with_defaults(&later)), None);
}

#[test]
fn region_changes_replace_and_launcher_changes_only_once_known() {
    let state = with_defaults(&local());
    let mut prior = state.clone();
    prior.set("region", "sg".into());
    assert_eq!(replacing(&prior, &state), [Path::attr("region")]);
    let mut imported = state.clone();
    imported.set("launcher", Value::Null);
    imported.set("state_dir", Value::Null);
    assert!(replacing(&imported, &state).is_empty());
    let mut moved = state.clone();
    moved.set("state_dir", "/elsewhere".into());
    assert_eq!(replacing(&moved, &state), [Path::attr("state_dir")]);
}

#[test]
fn external_slots_take_nodes_by_hostname_then_unclaimed_oldest_first() {
    let live = vec![
        node("jp-bbb", "jp", "up", Some("jp-2")),
        node("jp-aaa", "jp", "up", Some("machine-a")),
        node("sg-ccc", "sg", "up", None),
    ];
    let observer = Observer {
        region: "jp",
        state_dir: None,
    };
    let slots = vec!["jp-1".to_owned(), "jp-2".to_owned(), "jp-3".to_owned()];
    let views = observer.observe(&slots, &BTreeMap::new(), &live, Timestamp::from_secs(0));
    let summary: Vec<String> = views
        .iter()
        .map(|v| format!("{}={}:{}", v.key, v.node_id().unwrap_or("-"), v.status))
        .collect();
    assert_eq!(
        summary,
        ["jp-1=jp-aaa:up", "jp-2=jp-bbb:up", "jp-3=-:pending"]
    );
}

#[test]
fn a_recorded_node_stays_with_its_slot_while_registered() {
    let live = vec![node("jp-aaa", "jp", "drain", None)];
    let observer = Observer {
        region: "jp",
        state_dir: None,
    };
    let recorded = BTreeMap::from([
        ("jp-1".to_owned(), "jp-gone".to_owned()),
        ("jp-2".to_owned(), "jp-aaa".to_owned()),
    ]);
    let slots = vec!["jp-1".to_owned(), "jp-2".to_owned()];
    let views = observer.observe(&slots, &recorded, &live, Timestamp::from_secs(0));
    assert_eq!(views[0].node_id(), None);
    assert_eq!(views[1].node_id(), Some("jp-aaa"));
    assert_eq!(views[1].status, SlotStatus::Drain);
    let value = views[1].value();
    assert_eq!(value.get("address"), &Value::string("127.0.0.50"));
}

fn docker_pool(launcher: &str, extra: &[(&str, Value)]) -> Value {
    let mut value = Value::Map(BTreeMap::new());
    for (k, v) in [
        ("region", Value::from("jp")),
        ("min_nodes", Value::Int(1)),
        ("max_nodes", Value::Int(3)),
        ("desired_nodes", Value::Int(2)),
        ("launcher", launcher.into()),
        ("drain_grace", "1s".into()),
        ("address_range", "198.18.5.50-198.18.5.59".into()),
        ("state_dir", "/var/lib/pool/jp".into()),
    ] {
        value.set(k, v);
    }
    for (k, v) in extra {
        value.set(k, v.clone());
    }
    value
}

fn docker_problems(config: &Value) -> Vec<String> {
    let mut diags = Diags::default();
    check(config, &mut diags);
    diags
        .0
        .iter()
        .map(|d| format!("{}: {}", d.path, d.summary))
        .collect()
}

#[test]
fn the_docker_launcher_needs_its_image_and_network_and_only_it_takes_them() {
    let found = docker_problems(&docker_pool("docker", &[]));
    assert!(
        found
            .iter()
            .any(|p| p.contains("docker_image") && p.contains("required")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("docker_network") && p.contains("required")),
        "{found:?}"
    );
    let docker = docker_pool(
        "docker",
        &[
            ("docker_image", "neutral-testbed:abc".into()),
            ("docker_network", "ntb-1-jp".into()),
            (
                "docker_args",
                Value::List(vec!["--env".into(), "A={address}".into()]),
            ),
        ],
    );
    assert_eq!(docker_problems(&docker), Vec::<String>::new());
    let spec = spec_of(&docker).expect("a valid docker pool");
    assert_eq!(spec.launcher, Launcher::Docker);
    let (target, binaries) = spec.local.and_then(|l| l.docker).expect("docker settings");
    assert_eq!(target.image, "neutral-testbed:abc");
    assert_eq!(target.network, "ntb-1-jp");
    assert_eq!(target.run_args, ["--env", "A={address}"]);
    assert_eq!(binaries, None);
    // A launcher not known yet (a module's input at validate time) decides
    // nothing: the docker settings wait for it.
    let mut undecided = docker_pool(
        "docker",
        &[
            ("docker_image", "neutral-testbed:abc".into()),
            ("docker_network", Value::Unknown),
        ],
    );
    undecided.set("launcher", Value::Unknown);
    assert_eq!(docker_problems(&undecided), Vec::<String>::new());
    // One operator setting names every region's network.
    let templated = docker_pool(
        "docker",
        &[
            ("docker_image", "neutral-testbed:abc".into()),
            ("docker_network", "edge-{region}".into()),
        ],
    );
    let spec = spec_of(&templated).expect("a valid docker pool");
    let (target, _) = spec.local.and_then(|l| l.docker).expect("docker settings");
    assert_eq!(target.network, "edge-jp");
    let local = docker_pool("local", &[("docker_image", "x".into())]);
    let found = docker_problems(&local);
    assert!(
        found
            .iter()
            .any(|p| p.contains("docker_image") && p.contains("docker launcher")),
        "{found:?}"
    );
}

#[test]
fn a_replaced_slot_stays_while_its_successor_failed_to_start() {
    let view = |key: &str, status: SlotStatus| SlotView {
        key: key.to_owned(),
        node: None,
        status,
    };
    let leaving = vec![
        view("jp-1", SlotStatus::Down),
        view("jp-2", SlotStatus::Drain),
        view("jp-3", SlotStatus::Up),
    ];
    let keys = |views: &[SlotView]| views.iter().map(|v| v.key.clone()).collect::<Vec<_>>();
    // Every successor ran: everything leaves.
    let (go, kept) = super::apply::keep_for_failed_successors(leaving.clone(), 0);
    assert_eq!(
        (keys(&go), kept),
        (vec!["jp-3".into(), "jp-1".into(), "jp-2".into()], vec![])
    );
    // One failed: the most useful leaving slot stays.
    let (go, kept) = super::apply::keep_for_failed_successors(leaving.clone(), 1);
    assert_eq!(
        (keys(&go), kept),
        (vec!["jp-1".into(), "jp-2".into()], vec!["jp-3".to_owned()])
    );
    // More failed than could stay: a drained slot leaves anyway.
    let (go, kept) = super::apply::keep_for_failed_successors(leaving, 3);
    assert_eq!(
        (keys(&go), kept),
        (
            vec!["jp-2".into()],
            vec!["jp-3".to_owned(), "jp-1".to_owned()]
        )
    );
}
