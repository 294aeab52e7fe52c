//! The policy file, `.neutral/terraform-policy.yaml`: what a repository
//! allows beyond the defaults. Every field is optional; without the file the
//! defaults hold (neutral's provider and Terraform's built-in one, local
//! modules only).
//!
//! ```yaml
//! # Provider source addresses allowed besides neutral/neutral and the
//! # built-in terraform provider.
//! providers: [hashicorp/random]
//! # Prefixes of module sources allowed besides local paths below infra/
//! # and modules/.
//! module_sources: ["git::https://git.example.com/platform/"]
//! ```
//!
//! This module owns the schema and its validation (every problem reported
//! with its place, under the `policy` rule). It must not judge `.tf` files.

use std::collections::BTreeSet;

use crate::config::decode::Decoder;
use crate::config::yaml::{Node, Scalar};
use crate::config::{FileContent, RepoFile};
use crate::diag::{Diagnostic, Pos};

use super::rules::{BUILTIN_PROVIDER, NEUTRAL_PROVIDER, POLICY_FILE, Rule, normalize_source};

/// Providers no policy can allow: they run programs by design.
const NEVER: [&str; 2] = [
    "registry.terraform.io/hashicorp/external",
    "registry.terraform.io/hashicorp/null",
];

/// What a repository allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Full provider source addresses.
    pub providers: BTreeSet<String>,
    /// Allowed prefixes of non-local module sources.
    pub module_sources: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            providers: BTreeSet::from([NEUTRAL_PROVIDER.to_owned(), BUILTIN_PROVIDER.to_owned()]),
            module_sources: Vec::new(),
        }
    }
}

impl Policy {
    pub fn allows_provider(&self, source: &str) -> bool {
        self.providers.contains(source)
    }

    pub fn allows_module_source(&self, source: &str) -> bool {
        self.module_sources.iter().any(|p| source.starts_with(p))
    }

    /// The allowed providers, for messages.
    pub fn allowed_list(&self) -> String {
        self.providers
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads the policy file (`None`: the defaults), reporting every problem
    /// into `diagnostics` under the `policy` rule. Entries with a problem
    /// are left out; the rest apply.
    pub fn load(file: Option<&RepoFile>, diagnostics: &mut Vec<Diagnostic>) -> Policy {
        let mut policy = Policy::default();
        let Some(file) = file else {
            return policy;
        };
        let problem = |diagnostics: &mut Vec<Diagnostic>, pos: Pos, message: String| {
            diagnostics.push(Diagnostic::error(
                POLICY_FILE,
                pos,
                format!("[{}] {message}", Rule::Policy.name()),
            ));
        };
        let text = match &file.content {
            FileContent::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => text.to_owned(),
                Err(_) => {
                    problem(diagnostics, Pos::START, "invalid UTF-8".to_owned());
                    return policy;
                }
            },
            FileContent::Symlink(target) => {
                problem(
                    diagnostics,
                    Pos::START,
                    format!("symbolic link to `{target}`: the policy must be a regular file"),
                );
                return policy;
            }
            FileContent::Oversized(size) => {
                problem(
                    diagnostics,
                    Pos::START,
                    format!("{size} bytes is too large for a policy file"),
                );
                return policy;
            }
        };
        let mut found = Vec::new();
        {
            let mut d = Decoder::new(POLICY_FILE, &mut found);
            let Some(root) = d.root(&text, "a Terraform policy") else {
                drop(d);
                tag(&mut found);
                diagnostics.extend(found);
                return policy;
            };
            if let Some(fields) = d.fields(
                &root,
                "",
                "the Terraform policy",
                &["providers", "module_sources"],
            ) {
                if let Some(node) = fields.get("providers")
                    && let Some(items) = d.sequence(node, "providers")
                {
                    for item in items {
                        let Some(text) = string(&mut d, item, "providers") else {
                            continue;
                        };
                        match normalize_source(&text) {
                            Ok(source) if NEVER.contains(&source.as_str()) => d.error(
                                item.pos,
                                format!("provider `{text}` runs programs on the control plane's machine; it cannot be allowed"),
                            ),
                            Ok(source) => {
                                policy.providers.insert(source);
                            }
                            Err(message) => d.error(item.pos, message),
                        }
                    }
                }
                if let Some(node) = fields.get("module_sources")
                    && let Some(items) = d.sequence(node, "module_sources")
                {
                    for item in items {
                        let Some(text) = string(&mut d, item, "module_sources") else {
                            continue;
                        };
                        if text.trim().is_empty() {
                            d.error(item.pos, "an empty prefix would allow every module source");
                        } else if text.starts_with('.') || text.starts_with('/') {
                            d.error(
                                item.pos,
                                format!("`{text}` is a local path: local modules must stay below infra/ or modules/"),
                            );
                        } else {
                            policy.module_sources.push(text);
                        }
                    }
                }
            }
        }
        tag(&mut found);
        diagnostics.extend(found);
        policy
    }
}

fn string(d: &mut Decoder<'_>, node: &Node, field: &str) -> Option<String> {
    match node.scalar() {
        Some(Scalar::Str(text)) => Some(text.to_owned()),
        _ => {
            d.error(
                node.pos,
                format!(
                    "`{field}` entries must be strings, found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// Prefixes the decoder's messages with the rule.
fn tag(found: &mut [Diagnostic]) {
    for diagnostic in found {
        if !diagnostic.message.starts_with('[') {
            diagnostic.message = format!("[{}] {}", Rule::Policy.name(), diagnostic.message);
        }
    }
}
