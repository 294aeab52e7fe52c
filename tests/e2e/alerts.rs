//! The operators' Prometheus rules and Grafana dashboard (`deploy/`): promtool
//! checks the rules and runs their unit tests (every alert fires and resolves
//! from synthetic series); the dashboard's queries parse as PromQL; and every
//! metric the rules and the dashboard name exists in a live `neutral serve`'s
//! `/metrics`, so a renamed metric cannot silently blind an alert.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use neutral_e2e::cluster::{ADMIN_TOKEN, Daemon, Repo, fast_config, free_port, wait_for};
use neutral_e2e::{http, run_with_deadline, workspace_root};
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

/// `promtool` from Debian's `prometheus` package (scripts/setup installs
/// it). Missing, the test is skipped, except under CI where it fails.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing (Debian package `prometheus`; run scripts/setup)"
        );
        eprintln!("SKIPPED: promtool is missing (Debian package `prometheus`; run scripts/setup)");
    }
    found
}

fn promtool_run(promtool: &Path, args: &[&str]) -> String {
    let out = run_with_deadline(Command::new(promtool).args(args), Duration::from_secs(60));
    assert_eq!(
        out.code,
        Some(0),
        "promtool {args:?}:\n{}{}",
        out.stdout,
        out.stderr
    );
    format!("{}{}", out.stdout, out.stderr)
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(deploy("grafana/dashboards/neutral.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("a target's expr").to_owned())
        .collect()
}

/// Metric names (`neutral_…`) a text mentions. Recorded series
/// (`neutral:…`) and alert names (`Neutral…`) are not metrics.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("neutral_") {
        let before = rest[..at].chars().next_back();
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            names.insert(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    names
}

#[test]
fn metric_names_are_found_in_text() {
    let names = metric_names(
        "rate(neutral_dns_responses_total{rcode=\"x\"}[5m]) / neutral:dns:rate5m + my_neutral_x NeutralAlert neutral_up",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["neutral_dns_responses_total", "neutral_up"]
    );
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let Some(promtool) = promtool() else { return };
    let rules = deploy("prometheus/neutral.rules.yml");
    let out = promtool_run(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = deploy("prometheus/neutral.rules.test.yml");
    let out = promtool_run(&promtool, &["test", "rules", tests.to_str().unwrap()]);
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert of the rules file has a unit test.
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let tests_text = std::fs::read_to_string(&tests).unwrap();
    let alerts: Vec<&str> = rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests_text.contains(&format!("alertname: {alert}\n")),
            "{alert} has no firing case in neutral.rules.test.yml"
        );
    }
}

#[test]
fn dashboard_queries_are_promql_and_panels_are_well_formed() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels {
        assert!(panel["gridPos"]["w"].as_u64().unwrap() <= 24, "{panel}");
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
            assert!(!panel["targets"].as_array().unwrap().is_empty(), "{panel}");
        }
    }
    let Some(promtool) = promtool() else { return };
    // promtool parses PromQL in rule files: one recording rule per query,
    // Grafana's interval variables replaced by durations.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs(&dashboard).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h");
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let path = dir.path().join("dashboard.rules.yml");
    std::fs::write(&path, rules).unwrap();
    promtool_run(&promtool, &["check", "rules", path.to_str().unwrap()]);
}

#[test]
fn every_metric_in_rules_and_dashboard_exists_in_a_live_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let files = fast_config(free_port());
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &refs);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), &["--no-autoscale"]);
    wait_for("the first sync", Duration::from_secs(20), || {
        daemon.get("/status").json()["commit"].as_str().map(|_| ())
    });
    let scrape = http::request(daemon.api, "GET", "/metrics", Some(ADMIN_TOKEN), None).unwrap();
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    // A histogram's series are its name with `_bucket`, `_sum` and `_count`.
    let exposed: BTreeSet<String> = scrape
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap_or_default();
            let suffixes: &[&str] = match words.next() {
                Some("histogram") => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            suffixes
                .iter()
                .map(|suffix| format!("{name}{suffix}"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(exposed.contains("neutral_nodes"), "{}", scrape.body);
    assert!(
        exposed.contains("neutral_detection_seconds_bucket"),
        "{}",
        scrape.body
    );

    let rules = std::fs::read_to_string(deploy("prometheus/neutral.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/neutral.rules.test.yml")).unwrap();
    let dashboard = dashboard_exprs(&dashboard()).join("\n");
    let mut missing = Vec::new();
    for (source, text) in [
        ("neutral.rules.yml", &rules),
        ("neutral.rules.test.yml", &tests),
        ("dashboards/neutral.json", &dashboard),
    ] {
        let named = metric_names(text);
        assert!(!named.is_empty(), "{source} names no metric");
        missing.extend(
            named
                .into_iter()
                .filter(|name| !exposed.contains(name))
                .map(|name| format!("{source}: {name}")),
        );
    }
    assert!(
        missing.is_empty(),
        "metrics named but not in GET /metrics: {missing:#?}\nexposed: {exposed:#?}"
    );
}
