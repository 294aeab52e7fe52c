//! The `provider "neutral" { … }` block: the control plane's endpoint and
//! admin token, and the optional DNS backends — PowerDNS, Route53,
//! Cloudflare, AliDNS — with environment fallbacks for every credential
//! (`NEUTRAL_ENDPOINT`, `NEUTRAL_TOKEN`, `PDNS_API_KEY`, `AWS_ACCESS_KEY_ID`,
//! `CLOUDFLARE_API_TOKEN`, `ALIBABA_CLOUD_ACCESS_KEY_ID`, …).
//!
//! This module owns parsing and checking that block. Secrets are kept in
//! [`Secret`], whose `Debug` and `Display` print a placeholder, so no log
//! line or error message can carry them. It does no network IO.

use crate::backend::alidns::{self, AliDnsConfig};
use crate::backend::cloudflare::{self, CloudflareConfig};
use crate::backend::route53::{self, AwsCredentials, Route53Config};
use crate::framework::{Attribute, Block, Constraint, Diags, NestedBlock, Path, Type, Value};
use crate::secret::Secret;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7400";
pub const DEFAULT_POWERDNS_SERVER_ID: &str = "localhost";
pub const ENV_ENDPOINT: &str = "NEUTRAL_ENDPOINT";
pub const ENV_TOKEN: &str = "NEUTRAL_TOKEN";
/// A published health view of the control plane to plan against (set by
/// the scheduler for both `plan` and `apply` of one run, so the apply-time
/// re-plan sees the same health as the plan did).
pub const ENV_HEALTH_VIEW: &str = "NEUTRAL_HEALTH_VIEW";
pub const ENV_POWERDNS_API_KEY: &str = "PDNS_API_KEY";
pub const ENV_AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const ENV_AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const ENV_AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// AWS' own variable for a service's endpoint.
pub const ENV_ROUTE53_ENDPOINT: &str = "AWS_ENDPOINT_URL_ROUTE_53";
pub const ENV_CLOUDFLARE_API_TOKEN: &str = "CLOUDFLARE_API_TOKEN";
pub const ENV_ALIDNS_ACCESS_KEY_ID: [&str; 2] =
    ["ALIBABA_CLOUD_ACCESS_KEY_ID", "ALICLOUD_ACCESS_KEY"];
pub const ENV_ALIDNS_ACCESS_KEY_SECRET: [&str; 2] =
    ["ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALICLOUD_SECRET_KEY"];
/// The owner id the cloud backends' ownership markers name by default.
pub const DEFAULT_OWNER_ID: &str = "neutral";
/// Cloudflare's largest batch (Pro plans and up).
pub const MAX_CLOUDFLARE_BATCH_SIZE: usize = 3_500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerDnsConfig {
    /// Base URL of the PowerDNS HTTP API, without a trailing slash.
    pub url: String,
    pub api_key: Secret,
    pub server_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Base URL of the control plane's API, without a trailing slash.
    pub endpoint: String,
    /// The control plane's admin token.
    pub token: Option<Secret>,
    pub powerdns: Option<PowerDnsConfig>,
    pub route53: Option<Route53Config>,
    pub cloudflare: Option<CloudflareConfig>,
    pub alidns: Option<AliDnsConfig>,
}

fn owner_id_attribute() -> Attribute {
    Attribute::new(
        "owner_id",
        Type::String,
        Constraint::Optional,
        "Who this deployment is in the ownership markers: only records marked with this id are \
         ever changed or deleted. a-z, 0-9, `-`, `_`, `.`. Default: `neutral`.",
    )
}

fn route53_block() -> NestedBlock {
    NestedBlock {
        name: "route53",
        block: Block {
            description: "AWS Route53 for records with `dns = \"route53\"`.",
            attributes: vec![
                Attribute::new(
                    "access_key_id",
                    Type::String,
                    Constraint::Optional,
                    "AWS access key id. Default: env `AWS_ACCESS_KEY_ID`.",
                ),
                Attribute::new(
                    "secret_access_key",
                    Type::String,
                    Constraint::Optional,
                    "AWS secret access key. Default: env `AWS_SECRET_ACCESS_KEY`. Sensitive.",
                )
                .sensitive(),
                Attribute::new(
                    "session_token",
                    Type::String,
                    Constraint::Optional,
                    "AWS session token for temporary credentials. Default: env \
                     `AWS_SESSION_TOKEN`. Sensitive.",
                )
                .sensitive(),
                Attribute::new(
                    "region",
                    Type::String,
                    Constraint::Optional,
                    "The region requests are signed for. Default: `us-east-1` (Route53 is global).",
                ),
                Attribute::new(
                    "endpoint",
                    Type::String,
                    Constraint::Optional,
                    "Base URL of the Route53 API. Default: env `AWS_ENDPOINT_URL_ROUTE_53`, else \
                     `https://route53.amazonaws.com`.",
                ),
                Attribute::new(
                    "wait_for_sync",
                    Type::Bool,
                    Constraint::Optional,
                    "Wait until each change is `INSYNC` on Route53's name servers before the \
                     apply returns. Default: false.",
                ),
                owner_id_attribute(),
            ],
            blocks: Vec::new(),
        },
    }
}

fn cloudflare_block() -> NestedBlock {
    NestedBlock {
        name: "cloudflare",
        block: Block {
            description: "Cloudflare DNS for records with `dns = \"cloudflare\"`.",
            attributes: vec![
                Attribute::new(
                    "api_token",
                    Type::String,
                    Constraint::Optional,
                    "An API token with DNS edit permission (`Authorization: Bearer`). Default: \
                     env `CLOUDFLARE_API_TOKEN`. Sensitive.",
                )
                .sensitive(),
                Attribute::new(
                    "api_url",
                    Type::String,
                    Constraint::Optional,
                    "Base URL of the v4 API. Default: `https://api.cloudflare.com/client/v4`.",
                ),
                Attribute::new(
                    "batch_size",
                    Type::Number,
                    Constraint::Optional,
                    "The most record operations one batch call may hold: the zone plan's limit, \
                     200 on Free, 3500 on Pro and up. Default: 200.",
                ),
                owner_id_attribute(),
            ],
            blocks: Vec::new(),
        },
    }
}

fn alidns_block() -> NestedBlock {
    NestedBlock {
        name: "alidns",
        block: Block {
            description: "Alibaba Cloud DNS for records with `dns = \"alidns\"`.",
            attributes: vec![
                Attribute::new(
                    "access_key_id",
                    Type::String,
                    Constraint::Optional,
                    "AccessKey id. Default: env `ALIBABA_CLOUD_ACCESS_KEY_ID`, else \
                     `ALICLOUD_ACCESS_KEY`.",
                ),
                Attribute::new(
                    "access_key_secret",
                    Type::String,
                    Constraint::Optional,
                    "AccessKey secret. Default: env `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, else \
                     `ALICLOUD_SECRET_KEY`. Sensitive.",
                )
                .sensitive(),
                Attribute::new(
                    "endpoint",
                    Type::String,
                    Constraint::Optional,
                    "Base URL of the RPC API. Default: `https://alidns.aliyuncs.com`.",
                ),
                owner_id_attribute(),
            ],
            blocks: Vec::new(),
        },
    }
}

pub fn schema() -> Block {
    Block {
        description: "Talks to neutral's control plane (live node health, the embedded DNS \
                      backend) and, optionally, to PowerDNS, Route53, Cloudflare and AliDNS.",
        attributes: vec![
            Attribute::new(
                "endpoint",
                Type::String,
                Constraint::Optional,
                "Base URL of the control plane's API. Default: env `NEUTRAL_ENDPOINT`, \
                 else `http://127.0.0.1:7400`.",
            ),
            Attribute::new(
                "token",
                Type::String,
                Constraint::Optional,
                "The control plane's admin token (`Authorization: Bearer`), needed by the \
                 embedded DNS backend. Default: env `NEUTRAL_TOKEN`. Sensitive.",
            )
            .sensitive(),
        ],
        blocks: vec![
            NestedBlock {
                name: "powerdns",
                block: Block {
                    description: "A PowerDNS Authoritative server for records with `dns = \"powerdns\"`.",
                    attributes: vec![
                        Attribute::new(
                            "url",
                            Type::String,
                            Constraint::Required,
                            "Base URL of the PowerDNS HTTP API, e.g. `http://127.0.0.1:8081`.",
                        ),
                        Attribute::new(
                            "api_key",
                            Type::String,
                            Constraint::Optional,
                            "The API key (`X-API-Key`). Default: env `PDNS_API_KEY`. Sensitive.",
                        )
                        .sensitive(),
                        Attribute::new(
                            "server_id",
                            Type::String,
                            Constraint::Optional,
                            "The PowerDNS server id. Default: `localhost`.",
                        ),
                    ],
                    blocks: Vec::new(),
                },
            },
            route53_block(),
            cloudflare_block(),
            alidns_block(),
        ],
    }
}

/// Checks an `http://` or `https://` base URL; returns it without trailing
/// slashes.
pub(crate) fn base_url(text: &str) -> Result<String, String> {
    let trimmed = text.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| format!("`{text}` is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{text}` has no host"));
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{text}` contains whitespace"));
    }
    Ok(trimmed.to_owned())
}

fn known_string<'v>(value: &'v Value, path: &Path, diags: &mut Diags) -> Option<&'v str> {
    match value {
        Value::String(text) => Some(text),
        Value::Null => None,
        Value::Unknown => {
            diags.error(
                path.clone(),
                "value must be known when the provider is configured",
                "Provider settings cannot depend on values known only after apply.",
            );
            None
        }
        _ => {
            diags.error(path.clone(), "expected a string", "");
            None
        }
    }
}

/// Checks what can be checked before values are known (for `validate`).
pub fn validate(config: &Value, diags: &mut Diags) {
    if let Value::String(text) = config.get("endpoint")
        && let Err(problem) = base_url(text)
    {
        diags.error(Path::attr("endpoint"), "invalid endpoint", problem);
    }
    if let Some(blocks) = config.get("powerdns").as_list() {
        for (index, block) in blocks.iter().enumerate() {
            if let Value::String(text) = block.get("url")
                && let Err(problem) = base_url(text)
            {
                diags.error(
                    Path::attr("powerdns").index(index).then("url"),
                    "invalid PowerDNS URL",
                    problem,
                );
            }
            if let Value::String(id) = block.get("server_id")
                && (id.is_empty() || id.contains('/'))
            {
                diags.error(
                    Path::attr("powerdns").index(index).then("server_id"),
                    "invalid PowerDNS server id",
                    format!("`{id}` must be non-empty and without `/`"),
                );
            }
        }
    }
    validate_cloud(config, diags);
}

/// The one block named `name`, if given.
fn block<'v>(config: &'v Value, name: &str) -> Option<&'v Value> {
    config.get(name).as_list().and_then(<[Value]>::first)
}

/// Checks the URL attribute `attr` of block `name`, when known.
fn validate_url(config: &Value, name: &str, attr: &str, diags: &mut Diags) {
    if let Some(Value::String(text)) = block(config, name).map(|b| b.get(attr))
        && let Err(problem) = base_url(text)
    {
        diags.error(
            Path::attr(name).index(0).then(attr),
            format!("invalid {name} {attr}"),
            problem,
        );
    }
}

/// Checks the cloud blocks' known values.
fn validate_cloud(config: &Value, diags: &mut Diags) {
    validate_url(config, "route53", "endpoint", diags);
    validate_url(config, "cloudflare", "api_url", diags);
    validate_url(config, "alidns", "endpoint", diags);
    for name in ["route53", "cloudflare", "alidns"] {
        if let Some(Value::String(id)) = block(config, name).map(|b| b.get("owner_id"))
            && let Some(problem) = crate::backend::owner_id_problem(id)
        {
            diags.error(
                Path::attr(name).index(0).then("owner_id"),
                "invalid owner id",
                problem,
            );
        }
    }
    if let Some(size) = block(config, "cloudflare").map(|b| b.get("batch_size")) {
        let fits = match size {
            Value::Int(n) => {
                usize::try_from(*n).is_ok_and(|n| (1..=MAX_CLOUDFLARE_BATCH_SIZE).contains(&n))
            }
            Value::Null | Value::Unknown => true,
            _ => false,
        };
        if !fits {
            diags.error(
                Path::attr("cloudflare").index(0).then("batch_size"),
                "invalid batch size",
                format!("a whole number from 1 to {MAX_CLOUDFLARE_BATCH_SIZE}"),
            );
        }
    }
}

/// A string attribute of a block, else the first of `vars` set in `env`;
/// empty values count as unset.
fn string_or_env(
    block: &Value,
    path: &Path,
    attr: &str,
    vars: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<String> {
    known_string(block.get(attr), &path.clone().then(attr), diags)
        .map(str::to_owned)
        .filter(|v| !v.is_empty())
        .or_else(|| {
            vars.iter()
                .find_map(|var| env(var).filter(|v| !v.is_empty()))
        })
}

/// A required credential: from the block or the environment, else an error
/// at the attribute naming both.
fn credential(
    block: &Value,
    path: &Path,
    attr: &str,
    vars: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<String> {
    let found = string_or_env(block, path, attr, vars, env, diags);
    if found.is_none() {
        diags.error(
            path.clone().then(attr),
            format!("missing {attr}"),
            format!("Set `{attr}` in the block or env {}.", vars.join(" or ")),
        );
    }
    found
}

fn owner_id(block: &Value, path: &Path, diags: &mut Diags) -> String {
    known_string(block.get("owner_id"), &path.clone().then("owner_id"), diags)
        .unwrap_or(DEFAULT_OWNER_ID)
        .to_owned()
}

fn parse_route53(
    config: &Value,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<Route53Config> {
    let block = block(config, "route53")?;
    let path = Path::attr("route53").index(0);
    let access_key_id = credential(
        block,
        &path,
        "access_key_id",
        &[ENV_AWS_ACCESS_KEY_ID],
        env,
        diags,
    );
    let secret = credential(
        block,
        &path,
        "secret_access_key",
        &[ENV_AWS_SECRET_ACCESS_KEY],
        env,
        diags,
    );
    let session_token = string_or_env(
        block,
        &path,
        "session_token",
        &[ENV_AWS_SESSION_TOKEN],
        env,
        diags,
    );
    let endpoint = string_or_env(
        block,
        &path,
        "endpoint",
        &[ENV_ROUTE53_ENDPOINT],
        env,
        diags,
    )
    .unwrap_or_else(|| route53::DEFAULT_ENDPOINT.to_owned());
    let endpoint = match base_url(&endpoint) {
        Ok(endpoint) => endpoint,
        Err(problem) => {
            diags.error(
                path.clone().then("endpoint"),
                "invalid route53 endpoint",
                problem,
            );
            return None;
        }
    };
    let region = known_string(block.get("region"), &path.clone().then("region"), diags)
        .unwrap_or(route53::DEFAULT_REGION)
        .to_owned();
    let wait_for_sync = matches!(block.get("wait_for_sync"), Value::Bool(true));
    Some(Route53Config {
        endpoint,
        region,
        credentials: AwsCredentials {
            access_key_id: access_key_id?,
            secret_access_key: Secret::new(secret?),
            session_token: session_token.map(Secret::new),
        },
        wait_for_sync,
        owner_id: owner_id(block, &path, diags),
    })
}

fn parse_cloudflare(
    config: &Value,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<CloudflareConfig> {
    let block = block(config, "cloudflare")?;
    let path = Path::attr("cloudflare").index(0);
    let token = credential(
        block,
        &path,
        "api_token",
        &[ENV_CLOUDFLARE_API_TOKEN],
        env,
        diags,
    );
    let api_url = known_string(block.get("api_url"), &path.clone().then("api_url"), diags)
        .and_then(|u| base_url(u).ok())
        .unwrap_or_else(|| cloudflare::DEFAULT_API_URL.to_owned());
    let batch_size = match block.get("batch_size") {
        Value::Int(n) => usize::try_from(*n).unwrap_or(cloudflare::DEFAULT_BATCH_SIZE),
        _ => cloudflare::DEFAULT_BATCH_SIZE,
    };
    Some(CloudflareConfig {
        api_url,
        api_token: Secret::new(token?),
        batch_size,
        owner_id: owner_id(block, &path, diags),
    })
}

fn parse_alidns(
    config: &Value,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<AliDnsConfig> {
    let block = block(config, "alidns")?;
    let path = Path::attr("alidns").index(0);
    let key_id = credential(
        block,
        &path,
        "access_key_id",
        &ENV_ALIDNS_ACCESS_KEY_ID,
        env,
        diags,
    );
    let secret = credential(
        block,
        &path,
        "access_key_secret",
        &ENV_ALIDNS_ACCESS_KEY_SECRET,
        env,
        diags,
    );
    let endpoint = known_string(block.get("endpoint"), &path.clone().then("endpoint"), diags)
        .and_then(|u| base_url(u).ok())
        .unwrap_or_else(|| alidns::DEFAULT_ENDPOINT.to_owned());
    Some(AliDnsConfig {
        endpoint,
        access_key_id: key_id?,
        access_key_secret: Secret::new(secret?),
        owner_id: owner_id(block, &path, diags),
    })
}

/// The provider's settings from its block and, for what the block leaves
/// out, `env` (a lookup of environment variables).
pub fn parse(
    config: &Value,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diags,
) -> Option<ProviderConfig> {
    validate(config, diags);
    if diags.has_errors() {
        return None;
    }
    let endpoint_path = Path::attr("endpoint");
    let endpoint = known_string(config.get("endpoint"), &endpoint_path, diags)
        .map(str::to_owned)
        .or_else(|| env(ENV_ENDPOINT).filter(|e| !e.is_empty()))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    let endpoint = match base_url(&endpoint) {
        Ok(endpoint) => endpoint,
        Err(problem) => {
            diags.error(endpoint_path, "invalid endpoint", problem);
            return None;
        }
    };
    let token = known_string(config.get("token"), &Path::attr("token"), diags)
        .map(str::to_owned)
        .or_else(|| env(ENV_TOKEN))
        .filter(|t| !t.is_empty())
        .map(Secret::new);

    let powerdns = match config.get("powerdns").as_list().and_then(<[Value]>::first) {
        None => None,
        Some(block) => {
            let path = Path::attr("powerdns").index(0);
            let url = known_string(block.get("url"), &path.clone().then("url"), diags)
                .and_then(|u| base_url(u).ok());
            let api_key = known_string(block.get("api_key"), &path.clone().then("api_key"), diags)
                .map(str::to_owned)
                .or_else(|| env(ENV_POWERDNS_API_KEY))
                .filter(|k| !k.is_empty());
            let server_id = known_string(
                block.get("server_id"),
                &path.clone().then("server_id"),
                diags,
            )
            .unwrap_or(DEFAULT_POWERDNS_SERVER_ID)
            .to_owned();
            if api_key.is_none() {
                diags.error(
                    path.clone().then("api_key"),
                    "missing PowerDNS API key",
                    format!("Set `api_key` in the powerdns block or env {ENV_POWERDNS_API_KEY}."),
                );
            }
            match (url, api_key) {
                (Some(url), Some(api_key)) => Some(PowerDnsConfig {
                    url,
                    api_key: Secret::new(api_key),
                    server_id,
                }),
                _ => None,
            }
        }
    };
    let route53 = parse_route53(config, env, diags);
    let cloudflare = parse_cloudflare(config, env, diags);
    let alidns = parse_alidns(config, env, diags);
    if diags.has_errors() {
        return None;
    }
    Some(ProviderConfig {
        endpoint,
        token,
        powerdns,
        route53,
        cloudflare,
        alidns,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn object(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn secrets_never_print() {
        let config = ProviderConfig {
            endpoint: "http://cp".into(),
            token: Some(Secret::new("admin-secret")),
            powerdns: Some(PowerDnsConfig {
                url: "http://pdns".into(),
                api_key: Secret::new("pdns-secret"),
                server_id: "localhost".into(),
            }),
            route53: None,
            cloudflare: None,
            alidns: None,
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("admin-secret"), "{printed}");
        assert!(!printed.contains("pdns-secret"), "{printed}");
        assert!(printed.contains("(sensitive)"));
    }

    #[test]
    fn environment_fills_in_what_the_block_leaves_out() {
        let env = |name: &str| match name {
            ENV_ENDPOINT => Some("https://cp.example:7400/".to_owned()),
            ENV_TOKEN => Some("t0k".to_owned()),
            ENV_POWERDNS_API_KEY => Some("k3y".to_owned()),
            _ => None,
        };
        let config = object(&[(
            "powerdns",
            Value::List(vec![object(&[("url", "http://127.0.0.1:8081".into())])]),
        )]);
        let mut diags = Diags::default();
        let parsed = parse(&config, &env, &mut diags).expect("valid");
        assert_eq!(parsed.endpoint, "https://cp.example:7400");
        assert_eq!(parsed.token, Some(Secret::new("t0k")));
        let powerdns = parsed.powerdns.expect("powerdns");
        assert_eq!(powerdns.api_key, Secret::new("k3y"));
        assert_eq!(powerdns.server_id, "localhost");
    }

    #[test]
    fn the_block_wins_over_the_environment_and_defaults_apply() {
        let env = |name: &str| (name == ENV_ENDPOINT).then(|| "http://other:1".to_owned());
        let config = object(&[("endpoint", "http://cp:7400".into())]);
        let mut diags = Diags::default();
        let parsed = parse(&config, &env, &mut diags).expect("valid");
        assert_eq!(parsed.endpoint, "http://cp:7400");
        assert_eq!(parsed.token, None);
        assert_eq!(parsed.powerdns, None);
        let parsed = parse(&object(&[]), &no_env, &mut diags).expect("valid");
        assert_eq!(parsed.endpoint, DEFAULT_ENDPOINT);
    }

    #[test]
    fn cloud_blocks_take_their_credentials_from_the_environment() {
        let env = |name: &str| match name {
            ENV_AWS_ACCESS_KEY_ID => Some("AKID".to_owned()),
            ENV_AWS_SECRET_ACCESS_KEY => Some("aws-secret".to_owned()),
            ENV_CLOUDFLARE_API_TOKEN => Some("cf-token".to_owned()),
            "ALICLOUD_ACCESS_KEY" => Some("ali-id".to_owned()),
            "ALICLOUD_SECRET_KEY" => Some("ali-secret".to_owned()),
            _ => None,
        };
        let config = object(&[
            (
                "route53",
                Value::List(vec![object(&[("wait_for_sync", Value::Bool(true))])]),
            ),
            (
                "cloudflare",
                Value::List(vec![object(&[
                    ("batch_size", Value::Int(3500)),
                    ("owner_id", "prod".into()),
                ])]),
            ),
            ("alidns", Value::List(vec![object(&[])])),
        ]);
        let mut diags = Diags::default();
        let parsed = parse(&config, &env, &mut diags).expect("valid");
        let route53 = parsed.route53.expect("route53");
        assert_eq!(route53.endpoint, route53::DEFAULT_ENDPOINT);
        assert_eq!(route53.region, "us-east-1");
        assert_eq!(route53.credentials.access_key_id, "AKID");
        assert!(route53.wait_for_sync);
        assert_eq!(route53.owner_id, DEFAULT_OWNER_ID);
        let cloudflare = parsed.cloudflare.expect("cloudflare");
        assert_eq!(cloudflare.api_token, Secret::new("cf-token"));
        assert_eq!(
            (cloudflare.batch_size, cloudflare.owner_id.as_str()),
            (3500, "prod")
        );
        let alidns = parsed.alidns.expect("alidns");
        assert_eq!(alidns.access_key_id, "ali-id");
        assert_eq!(alidns.access_key_secret, Secret::new("ali-secret"));
        for secret in ["aws-secret", "cf-token", "ali-secret"] {
            let printed = format!("{route53:?}{cloudflare:?}{alidns:?}");
            assert!(!printed.contains(secret), "{printed}");
        }
    }

    #[test]
    fn cloud_blocks_without_credentials_or_with_bad_values_say_where() {
        let config = object(&[
            (
                "route53",
                Value::List(vec![object(&[("endpoint", "localhost:5000".into())])]),
            ),
            (
                "cloudflare",
                Value::List(vec![object(&[
                    ("batch_size", Value::Int(0)),
                    ("owner_id", "Prod Team".into()),
                ])]),
            ),
            ("alidns", Value::List(vec![object(&[])])),
        ]);
        let mut diags = Diags::default();
        assert!(parse(&config, &no_env, &mut diags).is_none());
        let paths: Vec<String> = diags.0.iter().map(|d| d.path.to_string()).collect();
        assert_eq!(
            paths,
            [
                "route53[0].endpoint",
                "cloudflare[0].owner_id",
                "cloudflare[0].batch_size",
            ]
        );
        let config = object(&[
            ("route53", Value::List(vec![object(&[])])),
            ("cloudflare", Value::List(vec![object(&[])])),
            ("alidns", Value::List(vec![object(&[])])),
        ]);
        let mut diags = Diags::default();
        assert!(parse(&config, &no_env, &mut diags).is_none());
        let paths: Vec<String> = diags.0.iter().map(|d| d.path.to_string()).collect();
        assert_eq!(
            paths,
            [
                "route53[0].access_key_id",
                "route53[0].secret_access_key",
                "cloudflare[0].api_token",
                "alidns[0].access_key_id",
                "alidns[0].access_key_secret",
            ]
        );
    }

    #[test]
    fn bad_urls_and_a_missing_api_key_point_at_their_attributes() {
        let config = object(&[
            ("endpoint", "ftp://cp".into()),
            (
                "powerdns",
                Value::List(vec![object(&[("url", "localhost:8081".into())])]),
            ),
        ]);
        let mut diags = Diags::default();
        assert!(parse(&config, &no_env, &mut diags).is_none());
        let paths: Vec<String> = diags.0.iter().map(|d| d.path.to_string()).collect();
        assert_eq!(paths, ["endpoint", "powerdns[0].url"]);

        let config = object(&[(
            "powerdns",
            Value::List(vec![object(&[("url", "http://127.0.0.1:8081".into())])]),
        )]);
        let mut diags = Diags::default();
        assert!(parse(&config, &no_env, &mut diags).is_none());
        assert_eq!(diags.0[0].path.to_string(), "powerdns[0].api_key");
    }
}
