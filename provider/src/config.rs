//! The `provider "neutral" { … }` block: the control plane's endpoint and
//! admin token, and the optional PowerDNS server, with environment
//! fallbacks (`NEUTRAL_ENDPOINT`, `NEUTRAL_TOKEN`, `PDNS_API_KEY`).
//!
//! This module owns parsing and checking that block. Secrets are kept in
//! [`Secret`], whose `Debug` and `Display` print a placeholder, so no log
//! line or error message can carry them. It does no network IO.

use std::fmt;

use crate::framework::{Attribute, Block, Constraint, Diags, NestedBlock, Path, Type, Value};

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7400";
pub const DEFAULT_POWERDNS_SERVER_ID: &str = "localhost";
pub const ENV_ENDPOINT: &str = "NEUTRAL_ENDPOINT";
pub const ENV_TOKEN: &str = "NEUTRAL_TOKEN";
pub const ENV_POWERDNS_API_KEY: &str = "PDNS_API_KEY";

/// A secret value; prints as `(sensitive)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for an HTTP header. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

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
}

pub fn schema() -> Block {
    Block {
        description: "Talks to neutral's control plane (live node health, the embedded DNS \
                      backend) and, optionally, to a PowerDNS Authoritative server.",
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
        blocks: vec![NestedBlock {
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
        }],
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
    if let Value::String(text) = config.get("endpoint") {
        if let Err(problem) = base_url(text) {
            diags.error(Path::attr("endpoint"), "invalid endpoint", problem);
        }
    }
    if let Some(blocks) = config.get("powerdns").as_list() {
        for (index, block) in blocks.iter().enumerate() {
            if let Value::String(text) = block.get("url") {
                if let Err(problem) = base_url(text) {
                    diags.error(
                        Path::attr("powerdns").index(index).then("url"),
                        "invalid PowerDNS URL",
                        problem,
                    );
                }
            }
            if let Value::String(id) = block.get("server_id") {
                if id.is_empty() || id.contains('/') {
                    diags.error(
                        Path::attr("powerdns").index(index).then("server_id"),
                        "invalid PowerDNS server id",
                        format!("`{id}` must be non-empty and without `/`"),
                    );
                }
            }
        }
    }
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
    if diags.has_errors() {
        return None;
    }
    Some(ProviderConfig {
        endpoint,
        token,
        powerdns,
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
