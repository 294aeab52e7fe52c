//! The `neutral_gtm_record` resource: one domain's `A` or `AAAA` records,
//! weighted by live health, in the embedded DNS backend, PowerDNS, Route53,
//! Cloudflare or AliDNS (each behind [`DnsBackend`]).
//!
//! - **Plan** reads live health and computes the answers with the core
//!   ([`live`]), so the plan shows the new `answers`, `effective_weights`,
//!   `reasons` and backend `records`. Changing `zone`, `domain`, `type` or
//!   `dns` forces a new resource.
//! - **Apply** writes exactly the planned answers, and only what differs
//!   from the backend (the core's [`dnsplan`]), marking the records as
//!   owned (a comment, or the cloud backends' TXT registry record).
//! - **Read** puts the backend's records and TTL into the state, so a hand
//!   edit shows up as a difference in the next plan.
//! - **Import** by `<zone>/<domain>/<type>` (optionally `/<dns>`): the
//!   policy arguments come back from the ownership marker.
//! - **Destroy** removes only owned records.
//!
//! This module owns the resource's schema, argument checks and the
//! translation between Terraform values and the core's types. Weights come
//! from the core; record shapes from [`records`].

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use neutral_core::backend_calls::BackendCalls;
use neutral_core::config::{dns_label_problem, normalize_dns_name};
use neutral_core::diag::Severity;
use neutral_core::dnsplan;
use neutral_core::model::{AllDownPolicy, DnsBackendKind, MAX_BASE_WEIGHT, RecordType};

use crate::backend::embedded::Embedded;
use crate::backend::powerdns::PowerDnsBackend;
use crate::backend::tally::Tally;
use crate::backend::{self, DnsBackend, Listing, SyncError, Target};
use crate::context::{Configured, now};
use crate::framework::{
    Attribute, Block, Constraint, Diags, Opened, Opening, Path, PlanArguments, Planned,
    ResourceImpl, Type, Value, known_choice, known_int, open_plan,
};
use crate::live::{self, Outcome, Previous, RecordSpec};
use crate::records::{self, AnswerRow, Policy};

pub const DEFAULT_TYPE: &str = "A";
pub const DEFAULT_TTL: u32 = 30;
pub const DEFAULT_DNS: &str = "embedded";
pub const DEFAULT_MIN_READY_NODES: u32 = 1;
pub const DEFAULT_ALL_DOWN: &str = "fail_open";
/// The largest TTL (RFC 2181 §8).
pub const MAX_TTL: u32 = 2_147_483_647;
pub const MAX_MIN_READY_NODES: u32 = 10_000;

/// Arguments whose change replaces the resource.
const REPLACING: [&str; 4] = ["zone", "domain", "type", "dns"];
const COMPUTED: [&str; 6] = [
    "id",
    "mode",
    "effective_weights",
    "answers",
    "reasons",
    "records",
];

fn answer_type() -> Type {
    Type::Object(vec![
        ("node", Type::String),
        ("region", Type::String),
        ("address", Type::String),
        ("weight", Type::Number),
    ])
}

pub fn schema() -> Block {
    use Constraint::{Computed, OptionalComputed, Required};
    Block {
        description: "One domain's `A` or `AAAA` records, weighted by live node health: the \
                      plan computes the answers from the control plane's health with neutral's \
                      engine, the apply writes only what differs to the DNS backend.",
        attributes: vec![
            Attribute::new(
                "id",
                Type::String,
                Computed,
                "`<zone>/<domain>/<type>`, e.g. `example.com/app.example.com/A`.",
            ),
            Attribute::new(
                "domain",
                Type::String,
                Required,
                "The name the records answer for, lowercase without the trailing dot; inside \
                 `zone`. Changing it replaces the resource.",
            ),
            Attribute::new(
                "zone",
                Type::String,
                Required,
                "The zone holding the records, lowercase without the trailing dot. Changing it \
                 replaces the resource.",
            ),
            Attribute::new(
                "type",
                Type::String,
                OptionalComputed,
                "`A` or `AAAA` (default `A`). Only nodes of the matching address family are \
                 answers. Changing it replaces the resource.",
            ),
            Attribute::new(
                "ttl",
                Type::Number,
                OptionalComputed,
                "TTL of the records in seconds, 1 to 2147483647 (default 30).",
            ),
            Attribute::new(
                "dns",
                Type::String,
                OptionalComputed,
                "The DNS backend: `embedded` (the control plane's DNS server; default), \
                 `powerdns`, `route53`, `cloudflare` or `alidns` (each needs its block in the \
                 provider configuration). Changing it replaces the resource.",
            ),
            Attribute::new(
                "min_ready_nodes",
                Type::Number,
                OptionalComputed,
                "Per region: with fewer ready nodes the region's weight is 0 (default 1).",
            ),
            Attribute::new(
                "regions",
                Type::Map(Box::new(Type::Number)),
                Required,
                "Base weight per region, 0 to 1000. Regions not listed do not serve the domain; \
                 at least one weight must be positive.",
            ),
            Attribute::new(
                "all_down",
                Type::String,
                OptionalComputed,
                "What to answer when every region's weight is 0: `fail_open` (every \
                 non-drained node at base weight; default) or `last_known_good` (the last \
                 applied answers).",
            ),
            Attribute::new(
                "mode",
                Type::String,
                Computed,
                "How the answers were chosen: `normal`, `fail_open`, `last_known_good`, \
                 `split_brain_hold` or `empty`.",
            ),
            Attribute::new(
                "effective_weights",
                Type::Map(Box::new(Type::Number)),
                Computed,
                "Effective weight per serving region (0 to 1000) from live health.",
            ),
            Attribute::new(
                "answers",
                Type::List(Box::new(answer_type())),
                Computed,
                "The nodes answered: `node` id, `region`, `address` and `weight` (the node's \
                 share of its region's effective weight).",
            ),
            Attribute::new(
                "reasons",
                Type::List(Box::new(Type::String)),
                Computed,
                "Why: where the weights were computed, each region's rule with its numbers, \
                 and each answer's share.",
            ),
            Attribute::new(
                "records",
                Type::List(Box::new(Type::String)),
                Computed,
                "The records in the backend, `<type> <content>`: `A 192.0.2.1 weight=100` \
                 (embedded), `A 192.0.2.1` or `LUA A \"pickwrandom({{2,'192.0.2.1'},…})\"` \
                 (PowerDNS), `A 192.0.2.1 weight=255 id=jp-1` (Route53), `A 192.0.2.1` \
                 (Cloudflare), `A 192.0.2.1 weight=100` (AliDNS). Read from the backend on \
                 refresh, so hand edits show as drift.",
            ),
        ],
        blocks: Vec::new(),
    }
}

// ---- arguments ----

fn known_name(value: &Value, path: &Path, diags: &mut Diags) -> Option<String> {
    let text = value.as_str()?;
    match normalize_dns_name(text) {
        Ok(name) if name == text => Some(name),
        Ok(name) => {
            diags.error(
                path.clone(),
                "write DNS names lowercase without the trailing dot",
                format!("write `{name}` instead of `{text}`"),
            );
            None
        }
        Err(problem) => {
            diags.error(
                path.clone(),
                "invalid DNS name",
                format!("`{text}`: {problem}"),
            );
            None
        }
    }
}

fn known_backend(value: &Value, diags: &mut Diags) -> Option<DnsBackendKind> {
    known_choice(value, &Path::attr("dns"), &DnsBackendKind::choices(), diags)
}

fn known_regions(value: &Value, diags: &mut Diags) -> Option<BTreeMap<String, u32>> {
    let path = Path::attr("regions");
    let entries = value.as_map()?;
    if entries.is_empty() {
        diags.error(
            path,
            "no regions",
            "List at least one region with a positive base weight.",
        );
        return None;
    }
    let mut regions = BTreeMap::new();
    let mut all_known = true;
    for (name, weight) in entries {
        let entry_path = path.clone().key(name);
        if let Some(problem) = dns_label_problem(name) {
            diags.error(
                entry_path.clone(),
                "invalid region name",
                format!("`{name}`: {problem}"),
            );
        }
        match known_int(weight, &entry_path, 0, MAX_BASE_WEIGHT, diags) {
            Some(w) => {
                regions.insert(name.clone(), w);
            }
            None => all_known = false,
        }
    }
    if all_known && regions.values().all(|w| *w == 0) {
        diags.error(
            path,
            "every region has weight 0",
            "The domain would never be answered; give at least one region a positive weight.",
        );
        return None;
    }
    all_known.then_some(regions)
}

/// Checks the known values of a configuration (or a state), each problem at
/// its attribute.
pub fn check(config: &Value, diags: &mut Diags) {
    schema().reject_computed_in_config(config, diags);
    let domain = known_name(config.get("domain"), &Path::attr("domain"), diags);
    let zone = known_name(config.get("zone"), &Path::attr("zone"), diags);
    if let (Some(domain), Some(zone)) = (&domain, &zone)
        && domain != zone
        && !domain.ends_with(&format!(".{zone}"))
    {
        diags.error(
            Path::attr("domain"),
            "domain outside its zone",
            format!("`{domain}` is not inside the zone `{zone}`"),
        );
    }
    known_choice(
        config.get("type"),
        &Path::attr("type"),
        &RecordType::choices(),
        diags,
    );
    let dns = known_backend(config.get("dns"), diags);
    // The core's rule, as `neutral validate` reports it (the default TTL
    // included, at `dns` then).
    let defaulted = config.get("ttl").is_null();
    let ttl = if defaulted {
        Some(DEFAULT_TTL)
    } else {
        known_int(config.get("ttl"), &Path::attr("ttl"), 1, MAX_TTL, diags)
    };
    if let (Some(ttl), Some(dns)) = (ttl, dns)
        && let Some((severity, message)) = dns.ttl_check(ttl, defaulted)
    {
        let at = Path::attr(if defaulted { "dns" } else { "ttl" });
        match severity {
            Severity::Error => diags.error(at, "TTL below the backend's minimum", message),
            Severity::Warning => {
                diags.warning(at, "TTL below the backend's usual minimum", message);
            }
        }
    }

    known_int(
        config.get("min_ready_nodes"),
        &Path::attr("min_ready_nodes"),
        1,
        MAX_MIN_READY_NODES,
        diags,
    );
    known_regions(config.get("regions"), diags);
    known_choice(
        config.get("all_down"),
        &Path::attr("all_down"),
        &AllDownPolicy::choices(),
        diags,
    );
}

/// The configuration with defaults for the optional arguments it leaves out,
/// and only the arguments (computed attributes null).
fn with_defaults(config: &Value) -> Value {
    let mut state = Value::Map(BTreeMap::new());
    for name in [
        "domain",
        "zone",
        "type",
        "ttl",
        "dns",
        "min_ready_nodes",
        "regions",
        "all_down",
    ] {
        let value = match (name, config.get(name)) {
            ("type", Value::Null) => Value::string(DEFAULT_TYPE),
            ("ttl", Value::Null) => DEFAULT_TTL.into(),
            ("dns", Value::Null) => Value::string(DEFAULT_DNS),
            ("min_ready_nodes", Value::Null) => DEFAULT_MIN_READY_NODES.into(),
            ("all_down", Value::Null) => Value::string(DEFAULT_ALL_DOWN),
            (_, value) => value.clone(),
        };
        state.set(name, value);
    }
    state
}

/// The record's arguments, when every one is known and valid.
fn spec_of(state: &Value) -> Option<RecordSpec> {
    let mut ignored = Diags::default();
    let diags = &mut ignored;
    let spec = RecordSpec {
        domain: known_name(state.get("domain"), &Path::root(), diags)?,
        zone: known_name(state.get("zone"), &Path::root(), diags)?,
        rtype: known_choice(
            state.get("type"),
            &Path::root(),
            &RecordType::choices(),
            diags,
        )?,
        ttl: known_int(state.get("ttl"), &Path::root(), 1, MAX_TTL, diags)?,
        dns: known_choice(
            state.get("dns"),
            &Path::root(),
            &DnsBackendKind::choices(),
            diags,
        )?,
        policy: Policy {
            all_down: known_choice(
                state.get("all_down"),
                &Path::root(),
                &AllDownPolicy::choices(),
                diags,
            )?,
            min_ready_nodes: known_int(
                state.get("min_ready_nodes"),
                &Path::root(),
                1,
                MAX_MIN_READY_NODES,
                diags,
            )?,
            regions: known_regions(state.get("regions"), diags)?,
        },
    };
    (!diags.has_errors()).then_some(spec)
}

pub fn id_of(zone: &str, domain: &str, rtype: RecordType) -> String {
    format!("{zone}/{domain}/{}", rtype.as_str())
}

fn answer_value(answer: &AnswerRow) -> Value {
    let mut value = Value::Map(BTreeMap::new());
    value.set("node", answer.node.clone().into());
    value.set("region", answer.region.clone().into());
    value.set("address", answer.address.to_string().into());
    value.set("weight", answer.weight.into());
    value
}

fn answers_of(value: &Value) -> Option<Vec<AnswerRow>> {
    value
        .as_list()?
        .iter()
        .map(|item| {
            Some(AnswerRow {
                node: item.get("node").as_str()?.to_owned(),
                region: item.get("region").as_str()?.to_owned(),
                address: item.get("address").as_str()?.parse().ok()?,
                weight: match item.get("weight") {
                    Value::Int(w) => u32::try_from(*w).ok()?,
                    _ => return None,
                },
            })
        })
        .collect()
}

fn strings(items: &[String]) -> Value {
    Value::List(items.iter().map(|s| Value::string(s.as_str())).collect())
}

/// Sets the computed attributes of `state` from `outcome` and `records`.
fn fill(state: &mut Value, spec: &RecordSpec, outcome: &Outcome, records: &[String]) {
    state.set("id", id_of(&spec.zone, &spec.domain, spec.rtype).into());
    state.set("mode", outcome.mode.as_str().into());
    state.set(
        "effective_weights",
        Value::Map(
            outcome
                .effective_weights
                .iter()
                .map(|(region, weight)| (region.clone(), (*weight).into()))
                .collect(),
        ),
    );
    state.set(
        "answers",
        Value::List(outcome.answers.iter().map(answer_value).collect()),
    );
    state.set("reasons", strings(&outcome.reasons));
    state.set("records", strings(records));
}

fn desired_presentation(spec: &RecordSpec, answers: &[AnswerRow]) -> Vec<String> {
    records::presentation(&records::desired_sets(
        spec.dns,
        &spec.domain,
        spec.rtype,
        spec.ttl,
        answers,
    ))
}

// ---- the resource ----

#[derive(Debug)]
pub struct GtmRecord {
    configured: Configured,
}

impl GtmRecord {
    pub fn new(configured: Configured) -> GtmRecord {
        GtmRecord { configured }
    }

    fn backend(&self, dns: DnsBackendKind, diags: &mut Diags) -> Option<Arc<dyn DnsBackend>> {
        let clients = self.configured.get(diags)?;
        let missing = |diags: &mut Diags, block: &str| -> Option<Arc<dyn DnsBackend>> {
            diags.error(
                Path::attr("dns"),
                format!("no {block} backend configured"),
                format!(
                    "`dns = \"{}\"` needs a `{block} {{ … }}` block in the provider \
                     configuration.",
                    dns.as_str()
                ),
            );
            None
        };
        let backend: Arc<dyn DnsBackend> = match dns {
            DnsBackendKind::Embedded if !clients.has_token => {
                diags.error(
                    Path::attr("dns"),
                    "no admin token for the embedded DNS backend",
                    "The control plane's zone API needs its admin token: set the provider's \
                     `token` or env NEUTRAL_TOKEN.",
                );
                return None;
            }
            DnsBackendKind::Embedded => Arc::new(Embedded::new(clients.control_plane.clone())),
            DnsBackendKind::Powerdns => match &clients.powerdns {
                Some(pdns) => Arc::new(PowerDnsBackend::new(pdns.clone())),
                None => return missing(diags, "powerdns"),
            },
            DnsBackendKind::Route53 => match &clients.route53 {
                Some(client) => Arc::new(client.clone()),
                None => return missing(diags, "route53"),
            },
            DnsBackendKind::Cloudflare => match &clients.cloudflare {
                Some(client) => Arc::new(client.clone()),
                None => return missing(diags, "cloudflare"),
            },
            DnsBackendKind::Alidns => match &clients.alidns {
                Some(client) => Arc::new(client.clone()),
                None => return missing(diags, "alidns"),
            },
        };
        Some(backend)
    }

    async fn outcome(
        &self,
        spec: &RecordSpec,
        previous: Option<&Previous>,
        diags: &mut Diags,
    ) -> Option<Outcome> {
        let clients = self.configured.get(diags)?;
        match live::compute(&clients.control_plane, spec, previous, now()).await {
            Ok(outcome) => Some(outcome),
            Err(message) => {
                diags.error(
                    Path::root(),
                    format!("cannot compute the answers for {}", spec.domain),
                    message,
                );
                None
            }
        }
    }

    /// What `backend` holds for `target`; `None` when the zone is missing.
    async fn list(
        backend: &dyn DnsBackend,
        target: &Target<'_>,
        diags: &mut Diags,
    ) -> Result<Option<Listing>, ()> {
        backend.list(target).await.map_err(|err| {
            diags.error(
                Path::root(),
                format!(
                    "cannot read {} {} from the {} backend",
                    target.domain,
                    target.rtype.as_str(),
                    backend.kind().as_str()
                ),
                err.to_string(),
            );
        })
    }

    /// Plans and writes the changes that make `backend` hold `records`
    /// (with its ownership marker); `records` empty removes what is ours.
    async fn write(
        backend: &dyn DnsBackend,
        spec: &RecordSpec,
        records: &[dnsplan::RecordSet],
        diags: &mut Diags,
    ) -> Option<()> {
        let target = Target {
            zone: &spec.zone,
            domain: &spec.domain,
            rtype: spec.rtype,
            policy: (!records.is_empty()).then_some(&spec.policy),
        };
        match backend::sync(backend, &target, records).await {
            Ok(synced) => {
                let (creates, updates, deletes) = synced.counts;
                tracing::info!(
                    domain = %spec.domain,
                    dns = spec.dns.as_str(),
                    creates, updates, deletes,
                    write_calls = synced.applied.write_calls,
                    "records written"
                );
                Some(())
            }
            Err(SyncError::Conflicts(conflicts)) => {
                let owner = backend.owner();
                for conflict in &conflicts {
                    diags.error(
                        Path::attr("domain"),
                        format!("{} is not this deployment's", conflict.key),
                        format!(
                            "{}. Records without the ownership marker of `{owner}` are never \
                             changed: remove them by hand, or pick another name.",
                            conflict.reason
                        ),
                    );
                }
                None
            }
            Err(SyncError::Zone(message)) => {
                diags.error(Path::attr("zone"), "zone unavailable", message);
                None
            }
            Err(SyncError::Backend(err)) => {
                diags.error(
                    Path::root(),
                    format!("cannot write the records of {}", spec.domain),
                    err.to_string(),
                );
                None
            }
        }
    }
}

fn parse_import_id(
    id: &str,
    diags: &mut Diags,
) -> Option<(String, String, RecordType, Option<DnsBackendKind>)> {
    let parts: Vec<&str> = id.split('/').collect();
    let (zone, domain, rtype, dns) = match parts.as_slice() {
        [zone, domain, rtype] => (*zone, *domain, *rtype, None),
        [zone, domain, rtype, dns] => (*zone, *domain, *rtype, Some(*dns)),
        _ => {
            diags.error(
                Path::root(),
                "invalid import id",
                format!("`{id}`: expected `<zone>/<domain>/<type>`, optionally `/<dns>`"),
            );
            return None;
        }
    };
    let zone = known_name(&Value::string(zone), &Path::root(), diags)?;
    let domain = known_name(&Value::string(domain), &Path::root(), diags)?;
    let rtype = known_choice(
        &Value::string(rtype),
        &Path::root(),
        &RecordType::choices(),
        diags,
    )?;
    let dns = match dns {
        Some(dns) => Some(known_choice(
            &Value::string(dns),
            &Path::root(),
            &DnsBackendKind::choices(),
            diags,
        )?),
        None => None,
    };
    Some((zone, domain, rtype, dns))
}

impl PlanArguments for GtmRecord {
    type Spec = RecordSpec;
    const COMPUTED_LATER: &'static [&'static str] = &COMPUTED;

    fn check(config: &Value, diags: &mut Diags) {
        check(config, diags);
    }

    fn with_defaults(config: &Value) -> Value {
        with_defaults(config)
    }

    fn replacing(prior: &Value, state: &Value) -> Vec<Path> {
        REPLACING
            .iter()
            .filter(|name| state.get(name) != prior.get(name))
            .map(|name| Path::attr(name))
            .collect()
    }

    fn spec_of(state: &Value) -> Option<RecordSpec> {
        spec_of(state)
    }
}

#[async_trait]
impl ResourceImpl for GtmRecord {
    fn schema(&self) -> Block {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diags) {
        check(config, diags);
    }

    async fn plan(
        &self,
        prior: Option<&Value>,
        config: &Value,
        diags: &mut Diags,
    ) -> Option<Planned> {
        let Opened {
            mut state,
            requires_replace,
            prior,
            spec,
        } = match open_plan::<Self>(prior, config, diags) {
            Opening::Open(opened) => opened,
            Opening::Done(planned) => return planned,
        };
        // Fail at plan time, at `dns`, when the backend cannot be written.
        self.backend(spec.dns, diags)?;
        let previous = prior.and_then(|prior| {
            Some(Previous {
                mode: live::parse_mode(prior.get("mode").as_str()?)?,
                answers: answers_of(prior.get("answers"))?,
            })
        });
        let outcome = self.outcome(&spec, previous.as_ref(), diags).await?;
        let records = desired_presentation(&spec, &outcome.answers);
        fill(&mut state, &spec, &outcome, &records);
        Some(Planned {
            state,
            requires_replace,
        })
    }

    async fn apply(
        &self,
        _prior: Option<&Value>,
        planned: &Value,
        diags: &mut Diags,
    ) -> Option<Value> {
        let (Some(spec), Some(answers)) = (spec_of(planned), answers_of(planned.get("answers")))
        else {
            diags.error(
                Path::root(),
                "the planned record is incomplete",
                "An argument or the answers are unknown at apply time (a bug: the plan should \
                 have computed them).",
            );
            return None;
        };
        let desired = records::desired_sets(spec.dns, &spec.domain, spec.rtype, spec.ttl, &answers);
        let planned_records: Option<Vec<String>> = planned.get("records").as_list().map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        });
        if planned_records.as_ref() != Some(&records::presentation(&desired)) {
            diags.error(
                Path::attr("records"),
                "planned records do not match the planned answers",
                "This is a bug in the provider; nothing was written.",
            );
            return None;
        }
        let backend = self.backend(spec.dns, diags)?;
        Self::write(backend.as_ref(), &spec, &desired, diags).await?;
        Some(planned.clone())
    }

    async fn destroy(&self, prior: &Value, diags: &mut Diags) -> Option<()> {
        let Some(spec) = spec_of(prior) else {
            diags.error(
                Path::root(),
                "the state of this record is unreadable",
                "Remove it with `terraform state rm` and delete its records by hand.",
            );
            return None;
        };
        let backend = self.backend(spec.dns, diags)?;
        Self::write(backend.as_ref(), &spec, &[], diags).await
    }

    async fn read(&self, state: &Value, diags: &mut Diags) -> Result<Option<Value>, ()> {
        let Some(spec) = spec_of(state) else {
            diags.error(
                Path::root(),
                "the state of this record is unreadable",
                "Remove it with `terraform state rm` and import it again.",
            );
            return Err(());
        };
        let backend = self.backend(spec.dns, diags).ok_or(())?;
        let had_records = state
            .get("records")
            .as_list()
            .is_some_and(|r| !r.is_empty());
        let target = Target {
            zone: &spec.zone,
            domain: &spec.domain,
            rtype: spec.rtype,
            policy: None,
        };
        let Some(listing) = Self::list(backend.as_ref(), &target, diags).await? else {
            return Ok((!had_records).then(|| state.clone()));
        };
        let owned: Vec<dnsplan::RecordSet> = listing
            .owned(backend.owner())
            .into_iter()
            .filter(|s| !records::is_registry(s))
            .collect();
        if owned.is_empty() {
            if !had_records {
                return Ok(Some(state.clone()));
            }
            if !listing.sets.is_empty() {
                diags.warning(
                    Path::root(),
                    format!(
                        "{} {} is no longer this deployment's",
                        spec.domain,
                        spec.rtype.as_str()
                    ),
                    "Its records lost the ownership marker; Terraform plans to create them \
                     again and will stop at the conflict until they are removed by hand.",
                );
            }
            return Ok(None);
        }
        let mut refreshed = state.clone();
        refreshed.set("records", strings(&records::presentation(&owned)));
        if let Some(first) = owned.first() {
            refreshed.set("ttl", first.ttl.into());
        }
        Ok(Some(refreshed))
    }

    async fn import(&self, id: &str, diags: &mut Diags) -> Option<Value> {
        let (zone_name, domain, rtype, only) = parse_import_id(id, diags)?;
        let mut found = Vec::new();
        for kind in DnsBackendKind::ALL {
            if only.is_some_and(|k| k != kind) {
                continue;
            }
            // Backends that are not configured are not searched.
            let mut quiet = Diags::default();
            let Some(backend) = self.backend(kind, &mut quiet) else {
                continue;
            };
            let target = Target {
                zone: &zone_name,
                domain: &domain,
                rtype,
                policy: None,
            };
            let Some(listing) = Self::list(backend.as_ref(), &target, diags).await.ok()? else {
                continue;
            };
            let owned: Vec<dnsplan::RecordSet> = listing
                .owned(backend.owner())
                .into_iter()
                .filter(|s| !records::is_registry(s))
                .collect();
            if let (Some(policy), Some(first)) = (listing.policy.clone(), owned.first()) {
                let ttl = first.ttl;
                found.push((kind, policy, ttl, records::presentation(&owned)));
            }
        }
        let (dns, policy, ttl, present) = match found.len() {
            0 => {
                diags.error(
                    Path::root(),
                    format!("no record of neutral's at {domain} {}", rtype.as_str()),
                    format!(
                        "Import adopts only records carrying this deployment's ownership \
                         marker (a comment with account `neutral`, or a `_neutral-<type>` \
                         TXT registry record naming its owner id) in zone {zone_name}; none \
                         was found in the configured backends."
                    ),
                );
                return None;
            }
            1 => found.remove(0),
            _ => {
                diags.error(
                    Path::root(),
                    "the record exists in more than one backend",
                    format!(
                        "Import it as `{zone_name}/{domain}/{}/<dns>`.",
                        rtype.as_str()
                    ),
                );
                return None;
            }
        };
        let spec = RecordSpec {
            domain,
            zone: zone_name,
            rtype,
            ttl,
            dns,
            policy,
        };
        let outcome = self.outcome(&spec, None, diags).await?;
        let mut state = Value::Map(BTreeMap::new());
        state.set("domain", spec.domain.clone().into());
        state.set("zone", spec.zone.clone().into());
        state.set("type", spec.rtype.as_str().into());
        state.set("ttl", spec.ttl.into());
        state.set("dns", spec.dns.as_str().into());
        state.set("min_ready_nodes", spec.policy.min_ready_nodes.into());
        state.set(
            "regions",
            Value::Map(
                spec.policy
                    .regions
                    .iter()
                    .map(|(r, w)| (r.clone(), (*w).into()))
                    .collect(),
            ),
        );
        state.set("all_down", spec.policy.all_down.as_str().into());
        fill(&mut state, &spec, &outcome, &present);
        Some(state)
    }

    /// Reports the requests this process sent to DNS backends since the
    /// last report to the control plane, which counts them for `/metrics`;
    /// a failed report keeps them for the next one and fails nothing.
    async fn after_call(&self) {
        let tally = Tally::global();
        let calls = tally.take();
        if calls.is_empty() {
            return;
        }
        let clients = self.configured.get(&mut Diags::default());
        let Some(clients) = clients.filter(|c| c.has_token) else {
            tally.restore(calls);
            return;
        };
        let report = BackendCalls { calls };
        if let Err(err) = clients.control_plane.report_backend_calls(&report).await {
            tracing::warn!("cannot report the DNS backend calls to the control plane: {err}");
            tally.restore(report.calls);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entries: &[(&str, Value)]) -> Value {
        let mut value = Value::Map(BTreeMap::new());
        for (k, v) in entries {
            value.set(k, v.clone());
        }
        value
    }

    fn regions(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn valid() -> Value {
        config(&[
            ("domain", "app.example.com".into()),
            ("zone", "example.com".into()),
            (
                "regions",
                regions(&[("jp", Value::Int(100)), ("sg", Value::Int(50))]),
            ),
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

    #[test]
    fn a_minimal_configuration_is_valid_and_gets_defaults() {
        assert_eq!(problems(&valid()), Vec::<String>::new());
        let spec = spec_of(&with_defaults(&valid())).expect("spec");
        assert_eq!(spec.rtype, RecordType::A);
        assert_eq!(spec.ttl, DEFAULT_TTL);
        assert_eq!(spec.dns, DnsBackendKind::Embedded);
        assert_eq!(spec.policy.min_ready_nodes, 1);
        assert_eq!(spec.policy.all_down, AllDownPolicy::FailOpen);
    }

    #[test]
    fn out_of_range_values_are_reported_at_their_attribute() {
        let mut bad = valid();
        bad.set("ttl", Value::Int(0));
        bad.set("min_ready_nodes", Value::Int(-1));
        bad.set("type", "MX".into());
        bad.set("dns", "bind9".into());
        bad.set("all_down", "panic".into());
        bad.set(
            "regions",
            regions(&[("jp", Value::Int(1001)), ("Bad_Name", Value::Float(1.5))]),
        );
        let found = problems(&bad);
        expect_test::expect![[r#"
            type: unsupported value: must be one of: A, AAAA; found `MX`
            dns: unsupported value: must be one of: embedded, powerdns, route53, cloudflare, alidns; found `bind9`
            ttl: value out of range: 0 is outside 1..=2147483647
            min_ready_nodes: value out of range: -1 is outside 1..=10000
            regions["Bad_Name"]: invalid region name: `Bad_Name`: label `Bad_Name` contains `B`; use a-z, 0-9 and `-`
            regions["Bad_Name"]: not a whole number: 1.5 must be a whole number in 0..=1000
            regions["jp"]: value out of range: 1001 is outside 0..=1000
            all_down: unsupported value: must be one of: fail_open, last_known_good; found `panic`"#]]
        .assert_eq(&found.join("\n"));
    }

    #[test]
    fn names_must_be_normal_and_the_domain_inside_its_zone() {
        let mut bad = valid();
        bad.set("domain", "App.Example.com.".into());
        bad.set("zone", "example.org".into());
        assert_eq!(
            problems(&bad),
            [
                "domain: write DNS names lowercase without the trailing dot: write `app.example.com` instead of `App.Example.com.`"
            ]
        );
        bad.set("domain", "app.example.com".into());
        assert_eq!(
            problems(&bad),
            [
                "domain: domain outside its zone: `app.example.com` is not inside the zone `example.org`"
            ]
        );
    }

    #[test]
    fn computed_attributes_and_all_zero_weights_are_rejected() {
        let mut bad = valid();
        bad.set("answers", Value::List(Vec::new()));
        bad.set("regions", regions(&[("jp", Value::Int(0))]));
        assert_eq!(
            problems(&bad),
            [
                "answers: `answers` is computed by the provider: Remove it from the configuration: its value is set by the provider.",
                "regions: every region has weight 0: The domain would never be answered; give at least one region a positive weight."
            ]
        );
    }

    #[test]
    fn the_backend_ttl_floor_applies() {
        let mut ok = valid();
        ok.set("ttl", Value::Int(1));
        ok.set("dns", "powerdns".into());
        assert!(problems(&ok).is_empty());
        ok.set("dns", "cloudflare".into());
        assert!(problems(&ok).is_empty(), "1 is Cloudflare's automatic TTL");
        ok.set("ttl", Value::Int(30));
        assert_eq!(
            problems(&ok),
            [
                "ttl: TTL below the backend's minimum: ttl 30 is below cloudflare's minimum of 60; \
                 cloudflare also accepts 1, meaning automatic"
            ]
        );
    }

    /// `terraform plan` (this check) and `neutral validate` (the core's
    /// load) say the same about the same record type, backend, policy and
    /// TTL: the same message, at the same severity.
    #[test]
    fn the_provider_and_neutral_validate_report_the_same_problems() {
        use neutral_core::config::{FileContent, RepoFile, load};
        use neutral_core::diag::Severity as CoreSeverity;

        use crate::framework::Severity;

        let region = "name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 100\n\
                      state: up\nfailover: []\n";
        let cases: [(&str, &str, Option<i64>, &str); 8] = [
            ("A", "cloudflare", Some(30), "fail_open"),
            ("A", "cloudflare", Some(1), "fail_open"),
            ("A", "alidns", Some(60), "fail_open"),
            ("A", "alidns", None, "fail_open"),
            ("A", "alidns", Some(600), "last_known_good"),
            ("AAAA", "route53", Some(1), "fail_open"),
            ("MX", "embedded", Some(30), "fail_open"),
            ("A", "bind", Some(30), "sometimes"),
        ];
        for (rtype, dns, ttl, all_down) in cases {
            // The provider.
            let mut config = valid();
            config.set("type", rtype.into());
            config.set("dns", dns.into());
            config.set("all_down", all_down.into());
            if let Some(ttl) = ttl {
                config.set("ttl", Value::Int(ttl));
            }
            let mut diags = Diags::default();
            check(&config, &mut diags);
            let mut provider: Vec<(bool, String)> = diags
                .0
                .iter()
                .map(|d| (d.severity == Severity::Error, d.detail.clone()))
                .collect();
            // The core.
            let ttl_line = ttl.map(|t| format!("ttl: {t}\n")).unwrap_or_default();
            let gtm = format!(
                "domain: app.example.com\nzone: example.com\ntype: {rtype}\n{ttl_line}\
                 dns: {dns}\nregions: {{ jp: 100 }}\nall_down: {all_down}\n"
            );
            let file = |path: &str, text: &str| RepoFile {
                path: path.to_owned(),
                content: FileContent::Bytes(text.as_bytes().to_vec()),
            };
            let loaded = load(&[
                file("platform-config/regions/jp.yaml", region),
                file("platform-config/gtm/app.yaml", &gtm),
            ]);
            let mut core: Vec<(bool, String)> = loaded
                .diagnostics
                .iter()
                .map(|d| (d.severity == CoreSeverity::Error, d.message.clone()))
                .collect();
            provider.sort();
            core.sort();
            // The core names the field in choice messages; compare the
            // substance: each provider message appears in the core's.
            assert_eq!(
                provider.len(),
                core.len(),
                "{rtype} {dns} {ttl:?} {all_down}: provider {provider:?}, core {core:?}"
            );
            for (p_error, p_message) in &provider {
                assert!(
                    core.iter().any(|(c_error, c_message)| c_error == p_error
                        && c_message.contains(p_message.as_str())),
                    "{rtype} {dns} {ttl:?}: provider says `{p_message}`, core says {core:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_values_are_not_errors_and_leave_the_spec_unknown() {
        let mut later = valid();
        later.set("ttl", Value::Unknown);
        later.set("regions", regions(&[("jp", Value::Unknown)]));
        assert!(problems(&later).is_empty());
        assert_eq!(spec_of(&with_defaults(&later)), None);
    }

    #[test]
    fn import_ids_name_zone_domain_type_and_optionally_the_backend() {
        let mut diags = Diags::default();
        let parsed = parse_import_id("example.com/app.example.com/AAAA/powerdns", &mut diags);
        assert_eq!(
            parsed,
            Some((
                "example.com".to_owned(),
                "app.example.com".to_owned(),
                RecordType::Aaaa,
                Some(DnsBackendKind::Powerdns)
            ))
        );
        assert!(parse_import_id("example.com/app", &mut diags).is_none());
        assert!(diags.has_errors());
    }

    #[test]
    fn answers_survive_the_state() {
        let rows = vec![AnswerRow {
            node: "jp-1".into(),
            region: "jp".into(),
            address: "192.0.2.1".parse().expect("ip"),
            weight: 100,
        }];
        let value = Value::List(rows.iter().map(answer_value).collect());
        assert_eq!(answers_of(&value), Some(rows));
    }
}
