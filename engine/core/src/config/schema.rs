//! The platform-config YAML schemas: regions, GTM policies and autoscale
//! policies, with their defaults.
//!
//! This module owns what each object's fields are called, which are required,
//! their types, ranges and defaults, and the checks that need only the one
//! file (a region's `name` matches its file name, `scale_up` has a threshold).
//! It must not look at other files: references between objects and every rule
//! that spans files live in `checks`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{
    AllDownPolicy, AutoscalePolicy, CloudProvider, DeclaredRegionState, DnsBackendKind, GtmPolicy,
    HealthPolicy, MAX_BASE_WEIGHT, Probe, RecordType, Region, ScaleDownRule, ScaleUpRule,
};
use crate::quorum::Quorum;

use super::decode::{Decoder, Fields, dns_label_problem};
use super::yaml::{Node, NodeKind, Scalar};

/// The largest `health.quorum` number accepted (more replicas than any
/// deployment runs).
const MAX_QUORUM: u32 = 100;

pub const REGION_FIELDS: &[&str] = &[
    "name",
    "provider",
    "min_nodes",
    "max_nodes",
    "base_weight",
    "state",
    "failover",
];

pub const GTM_FIELDS: &[&str] = &[
    "domain",
    "zone",
    "type",
    "ttl",
    "dns",
    "min_ready_nodes",
    "regions",
    "all_down",
    "probe",
    "slow_start",
    "health",
];

pub const HEALTH_FIELDS: &[&str] = &["quorum"];

pub const PROBE_FIELDS: &[&str] = &["http", "port", "interval", "timeout", "rise", "fall"];

pub const AUTOSCALE_FIELDS: &[&str] = &[
    "region",
    "scale_up",
    "scale_down",
    "cooldown",
    "failover_capacity",
];

pub const SCALE_UP_FIELDS: &[&str] = &[
    "cpu_above",
    "rtt_ms_above",
    "error_rate_above",
    "for",
    "step",
];

pub const SCALE_DOWN_FIELDS: &[&str] = &[
    "cpu_below",
    "rtt_ms_below",
    "error_rate_below",
    "for",
    "step",
];

/// Region defaults.
pub const DEFAULT_MIN_NODES: u32 = 1;
pub const DEFAULT_BASE_WEIGHT: u32 = 100;
/// GTM defaults.
pub const DEFAULT_TTL: u32 = 30;
pub const DEFAULT_MIN_READY_NODES: u32 = 1;
/// The largest TTL DNS allows (RFC 2181, section 8).
pub const MAX_TTL: u32 = 2_147_483_647;
/// Autoscale defaults.
pub const DEFAULT_SCALE_UP_FOR: Duration = Duration::from_secs(60);
pub const DEFAULT_SCALE_DOWN_FOR: Duration = Duration::from_secs(300);
pub const DEFAULT_STEP: u32 = 1;
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);

const PROVIDERS: [(&str, CloudProvider); 6] = [
    ("aws", CloudProvider::Aws),
    ("alicloud", CloudProvider::Alicloud),
    ("tencent", CloudProvider::Tencent),
    ("ucloud", CloudProvider::Ucloud),
    ("edge", CloudProvider::Edge),
    ("local", CloudProvider::Local),
];

const STATES: [(&str, DeclaredRegionState); 2] = [
    ("up", DeclaredRegionState::Up),
    ("down", DeclaredRegionState::Down),
];

/// Reads optional field `name` with `read`, or gives `default` when it is
/// absent or broken (a broken field has been reported already).
fn optional<'n, 'd, T>(
    d: &mut Decoder<'d>,
    fields: &Fields<'n>,
    name: &str,
    default: T,
    read: impl FnOnce(&mut Decoder<'d>, &'n Node, &str) -> Option<T>,
) -> T {
    match fields.get(name) {
        Some(node) => read(d, node, &fields.path(name)).unwrap_or(default),
        None => default,
    }
}

/// Reads required field `name` with `read`.
fn required<'n, 'd, T>(
    d: &mut Decoder<'d>,
    fields: &Fields<'n>,
    name: &str,
    read: impl FnOnce(&mut Decoder<'d>, &'n Node, &str) -> Option<T>,
) -> Option<T> {
    let node = d.required(fields, name)?;
    read(d, node, &fields.path(name))
}

/// A string that must equal the file's stem (`name` of a region, `region`
/// of an autoscale policy).
fn file_name(d: &mut Decoder<'_>, node: &Node, field: &str, stem: &str) -> Option<String> {
    let name = d.string(node, field)?;
    if let Some(problem) = dns_label_problem(&name) {
        d.broken(
            field,
            node.pos,
            format!(
                "`{field}` must be a region name (a DNS label), found `{}`: {problem}",
                node.short_text()
            ),
        );
        return None;
    }
    if name != stem {
        let path = d.path().rsplit('/').next().unwrap_or_default().to_owned();
        d.broken(
            field,
            node.pos,
            format!(
                "`{field}` is `{name}` but the file is {path}; one object per file, named after the file"
            ),
        );
        return None;
    }
    Some(name)
}

/// Decodes `platform-config/regions/<stem>.yaml`.
///
/// Like every decoder here, it returns an object whenever the file holds a
/// mapping: fields that failed (required or not) are reported, marked broken
/// in the decoder's places and replaced by a placeholder that the checks
/// never read.
pub fn region(d: &mut Decoder<'_>, text: &str, stem: &str) -> Option<Region> {
    let root = d.root(text, "a region")?;
    let fields = d.fields(&root, "", "region", REGION_FIELDS)?;
    let name = required(d, &fields, "name", |d, n, f| file_name(d, n, f, stem));
    let provider = required(d, &fields, "provider", |d, n, f| d.choice(n, f, &PROVIDERS));
    let min_nodes = optional(d, &fields, "min_nodes", DEFAULT_MIN_NODES, |d, n, f| {
        d.integer(n, f, 0..=u32::MAX)
    });
    let max_nodes = required(d, &fields, "max_nodes", |d, n, f| {
        d.integer(n, f, 1..=u32::MAX)
    });
    let base_weight = optional(d, &fields, "base_weight", DEFAULT_BASE_WEIGHT, |d, n, f| {
        d.integer(n, f, 0..=MAX_BASE_WEIGHT)
    });
    let state = optional(d, &fields, "state", DeclaredRegionState::Up, declared_state);
    let failover = optional(d, &fields, "failover", Vec::new(), region_list);
    Some(Region {
        name: name.unwrap_or_else(|| stem.to_owned()),
        provider: provider.unwrap_or(CloudProvider::Local),
        min_nodes,
        max_nodes: max_nodes.unwrap_or(0),
        base_weight,
        state,
        failover,
    })
}

fn declared_state(d: &mut Decoder<'_>, node: &Node, field: &str) -> Option<DeclaredRegionState> {
    if node.scalar_text() == Some("degraded") {
        d.broken(
            field,
            node.pos,
            "`state: degraded` cannot be declared: degraded is computed from node health; declare up or down",
        );
        return None;
    }
    d.choice(node, field, &STATES)
}

/// A list of region names; each entry's place is recorded as
/// `<field>.<name>`. Entries that are not strings or repeat are reported and
/// left out.
fn region_list(d: &mut Decoder<'_>, node: &Node, field: &str) -> Option<Vec<String>> {
    let items = d.sequence(node, field)?;
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Some(name) = d.string(item, field) else {
            continue;
        };
        let entry = format!("{field}.{name}");
        if let Some(first) = d.places.get(&entry) {
            d.error(
                item.pos,
                format!(
                    "region `{}` is listed twice in `{field}` (first on line {})",
                    item.short_text(),
                    first.line
                ),
            );
            continue;
        }
        d.places.record(&entry, item.pos);
        names.push(name);
    }
    Some(names)
}

/// Decodes `platform-config/gtm/<stem>.yaml`.
pub fn gtm(d: &mut Decoder<'_>, text: &str, stem: &str) -> Option<GtmPolicy> {
    let root = d.root(text, "a GTM policy")?;
    let fields = d.fields(&root, "", "GTM policy", GTM_FIELDS)?;
    let domain = required(d, &fields, "domain", Decoder::dns_name);
    let zone = required(d, &fields, "zone", Decoder::dns_name);
    let record_type = optional(d, &fields, "type", RecordType::A, |d, n, f| {
        d.choice(n, f, &RecordType::choices())
    });
    let ttl = optional(d, &fields, "ttl", DEFAULT_TTL, |d, n, f| {
        d.integer(n, f, 1..=MAX_TTL)
    });
    let dns = optional(d, &fields, "dns", DnsBackendKind::Embedded, |d, n, f| {
        d.choice(n, f, &DnsBackendKind::choices())
    });
    let min_ready_nodes = optional(
        d,
        &fields,
        "min_ready_nodes",
        DEFAULT_MIN_READY_NODES,
        |d, n, f| d.integer(n, f, 1..=u32::MAX),
    );
    let regions = optional(d, &fields, "regions", BTreeMap::new(), region_weights);
    let all_down = optional(
        d,
        &fields,
        "all_down",
        AllDownPolicy::FailOpen,
        |d, n, f| d.choice(n, f, &AllDownPolicy::choices()),
    );
    let probe = optional(d, &fields, "probe", Probe::default(), probe);
    let slow_start = optional(d, &fields, "slow_start", None, |d, n, f| {
        d.duration(n, f).map(Some)
    });
    let health = optional(d, &fields, "health", HealthPolicy::default(), health);
    Some(GtmPolicy {
        name: stem.to_owned(),
        domain: domain.unwrap_or_default(),
        zone: zone.unwrap_or_default(),
        record_type,
        ttl,
        dns,
        min_ready_nodes,
        regions,
        all_down,
        probe,
        slow_start,
        health,
    })
}

/// `health: { quorum: majority | <n> }`.
fn health(d: &mut Decoder<'_>, node: &Node, field: &str) -> Option<HealthPolicy> {
    let fields = d.fields(node, field, "health", HEALTH_FIELDS)?;
    let quorum = optional(d, &fields, "quorum", Quorum::default(), |d, n, f| {
        if let Some(Scalar::Int(_)) = n.scalar() {
            d.integer(n, f, 1..=MAX_QUORUM).map(Quorum::AtLeast)
        } else {
            d.choice(n, f, &[("majority", Quorum::Majority)])
        }
    });
    Some(HealthPolicy { quorum })
}

/// `regions: { jp: 100, sg: 50 }`; each key's place is recorded as
/// `regions.<name>`.
fn region_weights(d: &mut Decoder<'_>, node: &Node, field: &str) -> Option<BTreeMap<String, u32>> {
    let NodeKind::Mapping(entries) = &node.kind else {
        d.broken(
            field,
            node.pos,
            format!(
                "`{field}` must be a mapping of region name to weight, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut weights = BTreeMap::new();
    for (key, value) in entries {
        let Some(name) = d.string(key, field) else {
            continue;
        };
        let entry = format!("{field}.{name}");
        d.places.record(&entry, key.pos);
        if let Some(weight) = d.integer(value, &entry, 0..=MAX_BASE_WEIGHT) {
            weights.insert(name, weight);
        }
    }
    Some(weights)
}

fn probe(d: &mut Decoder<'_>, node: &Node, field: &str) -> Option<Probe> {
    let fields = d.fields(node, field, "probe", PROBE_FIELDS)?;
    let default = Probe::default();
    let http = optional(d, &fields, "http", default.http, |d, n, f| {
        let path = d.string(n, f)?;
        if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
            d.broken(
                f,
                n.pos,
                format!(
                    "`{f}` must be an HTTP path starting with `/` and without spaces, found `{}`",
                    n.short_text()
                ),
            );
            return None;
        }
        Some(path)
    });
    let port = optional(d, &fields, "port", default.port, |d, n, f| {
        d.integer(n, f, 1..=u32::from(u16::MAX))
            .and_then(|port| u16::try_from(port).ok())
    });
    let interval = optional(d, &fields, "interval", default.interval, positive_duration);
    let timeout = optional(d, &fields, "timeout", default.timeout, positive_duration);
    let rise = optional(d, &fields, "rise", default.rise, |d, n, f| {
        d.integer(n, f, 1..=u32::MAX)
    });
    let fall = optional(d, &fields, "fall", default.fall, |d, n, f| {
        d.integer(n, f, 1..=u32::MAX)
    });
    Some(Probe {
        http,
        port,
        interval,
        timeout,
        rise,
        fall,
    })
}

fn positive_duration(d: &mut Decoder<'_>, node: &Node, field: &str) -> Option<Duration> {
    let duration = d.duration(node, field)?;
    if duration.is_zero() {
        d.broken(field, node.pos, format!("`{field}` must be longer than 0"));
        return None;
    }
    Some(duration)
}

/// Decodes `platform-config/autoscale/<stem>.yaml`.
pub fn autoscale(d: &mut Decoder<'_>, text: &str, stem: &str) -> Option<AutoscalePolicy> {
    let root = d.root(text, "an autoscale policy")?;
    let fields = d.fields(&root, "", "autoscale policy", AUTOSCALE_FIELDS)?;
    let region = required(d, &fields, "region", |d, n, f| file_name(d, n, f, stem));
    let scale_up = required(d, &fields, "scale_up", scale_up);
    let scale_down = required(d, &fields, "scale_down", scale_down);
    let cooldown = optional(d, &fields, "cooldown", DEFAULT_COOLDOWN, |d, n, f| {
        d.duration(n, f)
    });
    let failover_capacity = optional(d, &fields, "failover_capacity", false, |d, n, f| {
        d.boolean(n, f)
    });
    Some(AutoscalePolicy {
        region: region.unwrap_or_else(|| stem.to_owned()),
        scale_up: scale_up.unwrap_or(ScaleUpRule {
            cpu_above: None,
            rtt_ms_above: None,
            error_rate_above: None,
            for_: DEFAULT_SCALE_UP_FOR,
            step: DEFAULT_STEP,
        }),
        scale_down: scale_down.unwrap_or(ScaleDownRule {
            cpu_below: None,
            rtt_ms_below: None,
            error_rate_below: None,
            for_: DEFAULT_SCALE_DOWN_FOR,
            step: DEFAULT_STEP,
        }),
        cooldown,
        failover_capacity,
    })
}

/// Reads a scale rule's three thresholds (CPU share, RTT in ms, error rate)
/// plus `for` and `step`, and insists on at least one threshold.
fn thresholds_and_timing(
    d: &mut Decoder<'_>,
    fields: &Fields<'_>,
    names: [&str; 3],
    default_for: Duration,
) -> ([Option<f64>; 3], Duration, u32) {
    let [cpu, rtt, errors] = names;
    let share = |d: &mut Decoder<'_>, n: &Node, f: &str| d.number(n, f, 0.0, Some(1.0)).map(Some);
    let values = [
        optional(d, fields, cpu, None, share),
        optional(d, fields, rtt, None, |d, n, f| {
            d.number(n, f, 0.0, None).map(Some)
        }),
        optional(d, fields, errors, None, share),
    ];
    if names.iter().all(|name| fields.get(name).is_none()) {
        let field = fields.path("");
        let field = field.trim_end_matches('.');
        d.broken(
            field,
            fields.pos,
            format!("`{field}` needs at least one threshold: {cpu}, {rtt} or {errors}"),
        );
    }
    let for_ = optional(d, fields, "for", default_for, Decoder::duration);
    let step = optional(d, fields, "step", DEFAULT_STEP, |d, n, f| {
        d.integer(n, f, 1..=u32::MAX)
    });
    (values, for_, step)
}

fn scale_up(d: &mut Decoder<'_>, node: &Node, field: &str) -> Option<ScaleUpRule> {
    let fields = d.fields(node, field, "scale_up", SCALE_UP_FIELDS)?;
    let ([cpu_above, rtt_ms_above, error_rate_above], for_, step) = thresholds_and_timing(
        d,
        &fields,
        ["cpu_above", "rtt_ms_above", "error_rate_above"],
        DEFAULT_SCALE_UP_FOR,
    );
    Some(ScaleUpRule {
        cpu_above,
        rtt_ms_above,
        error_rate_above,
        for_,
        step,
    })
}

fn scale_down(d: &mut Decoder<'_>, node: &Node, field: &str) -> Option<ScaleDownRule> {
    let fields = d.fields(node, field, "scale_down", SCALE_DOWN_FIELDS)?;
    let ([cpu_below, rtt_ms_below, error_rate_below], for_, step) = thresholds_and_timing(
        d,
        &fields,
        ["cpu_below", "rtt_ms_below", "error_rate_below"],
        DEFAULT_SCALE_DOWN_FOR,
    );
    Some(ScaleDownRule {
        cpu_below,
        rtt_ms_below,
        error_rate_below,
        for_,
        step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Diagnostic;

    fn decode<T>(
        text: &str,
        read: impl FnOnce(&mut Decoder<'_>, &str) -> Option<T>,
    ) -> (Option<T>, Vec<String>) {
        let mut diagnostics: Vec<Diagnostic> = Vec::new();
        let mut decoder = Decoder::new("platform-config/x/jp.yaml", &mut diagnostics);
        let value = read(&mut decoder, text);
        (value, diagnostics.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn region_defaults_fill_everything_but_name_provider_and_max_nodes() {
        let (region, diags) = decode("name: jp\nprovider: edge\nmax_nodes: 5\n", |d, t| {
            region(d, t, "jp")
        });
        assert_eq!(diags, Vec::<String>::new());
        assert_eq!(
            region,
            Some(Region {
                name: "jp".into(),
                provider: CloudProvider::Edge,
                min_nodes: 1,
                max_nodes: 5,
                base_weight: 100,
                state: DeclaredRegionState::Up,
                failover: vec![],
            })
        );
    }

    #[test]
    fn gtm_defaults_match_the_design_and_names_are_normalised() {
        let (policy, diags) = decode("domain: App.Example.com.\nzone: EXAMPLE.com\n", |d, t| {
            gtm(d, t, "app")
        });
        assert_eq!(diags, Vec::<String>::new());
        let policy = policy.unwrap();
        assert_eq!(policy.name, "app");
        assert_eq!(policy.domain, "app.example.com");
        assert_eq!(policy.zone, "example.com");
        assert_eq!(policy.record_type, RecordType::A);
        assert_eq!(policy.ttl, 30);
        assert_eq!(policy.dns, DnsBackendKind::Embedded);
        assert_eq!(policy.min_ready_nodes, 1);
        assert!(policy.regions.is_empty());
        assert_eq!(policy.all_down, AllDownPolicy::FailOpen);
        assert_eq!(policy.probe, Probe::default());
        assert_eq!(policy.slow_start, None);
        assert_eq!(policy.health.quorum, Quorum::Majority);
    }

    #[test]
    fn health_quorum_is_majority_or_a_number_and_anything_else_is_named() {
        let quorum = |text: &str| {
            let (policy, diags) = decode(
                &format!("domain: a.example.com\nzone: example.com\nhealth: {text}\n"),
                |d, t| gtm(d, t, "a"),
            );
            (policy.map(|p| p.health.quorum), diags)
        };
        assert_eq!(
            quorum("{ quorum: majority }"),
            (Some(Quorum::Majority), vec![])
        );
        assert_eq!(quorum("{ quorum: 2 }"), (Some(Quorum::AtLeast(2)), vec![]));
        assert_eq!(quorum("{}"), (Some(Quorum::Majority), vec![]));
        expect_test::expect![[r#"
            [
                "platform-config/x/jp.yaml:3:19: error: `health.quorum` must be between 1 and 100, found 0",
                "platform-config/x/jp.yaml:3:19: error: `health.quorum` must be one of: majority; found `most`",
                "platform-config/x/jp.yaml:3:11: error: unknown field `quorom` in health, expected one of: quorum",
            ]
        "#]]
        .assert_debug_eq(
            &["{ quorum: 0 }", "{ quorum: most }", "{ quorom: 2 }"]
                .iter()
                .flat_map(|t| quorum(t).1)
                .collect::<Vec<_>>(),
        );
    }

    #[test]
    fn a_partial_probe_keeps_the_other_defaults() {
        let (policy, _) = decode(
            "domain: a.example.com\nzone: example.com\nprobe: { port: 8080, timeout: 500ms }\n",
            |d, t| gtm(d, t, "a"),
        );
        let probe = policy.unwrap().probe;
        assert_eq!(probe.port, 8080);
        assert_eq!(probe.timeout, Duration::from_millis(500));
        assert_eq!(probe.http, "/healthz");
        assert_eq!(probe.interval, Duration::from_secs(10));
        assert_eq!((probe.rise, probe.fall), (2, 3));
    }

    #[test]
    fn autoscale_defaults_are_60s_up_300s_down_step_1_cooldown_300s() {
        let (policy, diags) = decode(
            "region: jp\nscale_up: { rtt_ms_above: 250 }\nscale_down: { error_rate_below: 0.01 }\n",
            |d, t| autoscale(d, t, "jp"),
        );
        assert_eq!(diags, Vec::<String>::new());
        let policy = policy.unwrap();
        assert_eq!(policy.scale_up.rtt_ms_above, Some(250.0));
        assert_eq!(policy.scale_up.cpu_above, None);
        assert_eq!(policy.scale_up.for_, Duration::from_secs(60));
        assert_eq!(policy.scale_down.for_, Duration::from_secs(300));
        assert_eq!((policy.scale_up.step, policy.scale_down.step), (1, 1));
        assert_eq!(policy.cooldown, Duration::from_secs(300));
        assert!(!policy.failover_capacity);
    }

    #[test]
    fn broken_required_fields_leave_placeholders_marked_broken() {
        let mut diagnostics = Vec::new();
        let mut decoder = Decoder::new("platform-config/regions/jp.yaml", &mut diagnostics);
        let region = region(&mut decoder, "name: jp\nmax_nodes: lots\n", "jp").unwrap();
        assert_eq!(region.name, "jp");
        assert!(!decoder.places.ok("max_nodes"));
        assert!(!decoder.places.ok("provider"));
        assert!(decoder.places.ok("min_nodes"));
        assert!(decoder.has_errors());
    }

    #[test]
    fn repeated_failover_entries_are_reported_once_kept_once() {
        let (region, diags) = decode(
            "name: jp\nprovider: edge\nmax_nodes: 5\nfailover: [sg, us, sg]\n",
            |d, t| region(d, t, "jp"),
        );
        assert_eq!(region.unwrap().failover, ["sg", "us"]);
        assert_eq!(
            diags,
            [
                "platform-config/x/jp.yaml:4:20: error: region `sg` is listed twice in `failover` (first on line 4)"
            ]
        );
    }
}
