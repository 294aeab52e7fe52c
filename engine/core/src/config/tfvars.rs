//! `infra/node-pool/<region>.tfvars`: the node count of one region, in HCL.
//!
//! This module owns reading a tfvars file with `hcl-edit` (which keeps spans,
//! so the autoscaler can later rewrite `desired_nodes` in place, preserving
//! comments): `region` and `desired_nodes` are read as literals, other
//! variables are tolerated with a warning, blocks and syntax errors are
//! errors. It must not compare the pool with its region; `checks` does.

use std::collections::HashSet;
use std::ops::Range;

use hcl_edit::Span;
use hcl_edit::expr::Expression;
use hcl_edit::structure::Structure;

use crate::diag::Pos;
use crate::model::NodePoolDecl;

use super::decode::{Decoder, dns_label_problem};

/// The variables neutral reads from a node-pool tfvars file.
pub const NODE_POOL_VARIABLES: &[&str] = &["region", "desired_nodes"];

fn pos_at(text: &str, span: Option<Range<usize>>) -> Pos {
    span.map_or(Pos::START, |span| Pos::of_offset(text, span.start))
}

/// The source text of `span`, cut to fit in a message.
fn source(text: &str, span: Option<Range<usize>>) -> String {
    const MAX_CHARS: usize = 40;
    let raw = span.and_then(|span| text.get(span)).unwrap_or_default();
    let flat: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_CHARS {
        flat
    } else {
        let cut: String = flat.chars().take(MAX_CHARS).collect();
        format!("{cut}…")
    }
}

/// The node-pool file of `region`: `infra/node-pool/<region>.tfvars`.
pub fn node_pool_path(region: &str) -> String {
    format!("infra/node-pool/{region}.tfvars")
}

/// The `desired_nodes` a node-pool file of `region` declares; `None` when
/// the text has an error.
pub fn desired_nodes_in(text: &str, region: &str) -> Option<u32> {
    let path = node_pool_path(region);
    let mut diagnostics = Vec::new();
    let mut decoder = Decoder::new(&path, &mut diagnostics);
    let pool = node_pool(&mut decoder, text, region)?;
    (!decoder.has_errors()).then_some(pool.desired_nodes)
}

/// Decodes `infra/node-pool/<stem>.tfvars`. Broken variables are reported,
/// marked broken and replaced by placeholders, as in `schema`.
pub fn node_pool(d: &mut Decoder<'_>, text: &str, stem: &str) -> Option<NodePoolDecl> {
    let body = match hcl_edit::parser::parse_body(text) {
        Ok(body) => body,
        Err(error) => {
            let location = error.location();
            let pos = Pos::new(
                u32::try_from(location.line()).unwrap_or(u32::MAX),
                u32::try_from(location.column()).unwrap_or(u32::MAX),
            );
            d.error(pos, format!("HCL syntax error: {}", error.message()));
            return None;
        }
    };
    let file = d.path().rsplit('/').next().unwrap_or_default().to_owned();
    let mut seen: HashSet<String> = HashSet::new();
    let mut region = None;
    let mut desired_nodes = None;
    for structure in &body {
        let attribute = match structure {
            Structure::Attribute(attribute) => attribute,
            Structure::Block(block) => {
                d.error(
                    pos_at(text, block.span()),
                    format!(
                        "blocks are not allowed in a .tfvars file (found `{}`)",
                        block.ident.as_str()
                    ),
                );
                continue;
            }
        };
        let key = attribute.key.as_str();
        let key_pos = pos_at(text, attribute.key.span());
        let value_pos = pos_at(text, attribute.value.span());
        // hcl-edit rejects a repeated attribute as a syntax error.
        seen.insert(key.to_owned());
        d.places.record(key, value_pos);
        let found = || source(text, attribute.value.span());
        match key {
            "region" => {
                let Expression::String(value) = &attribute.value else {
                    d.broken(
                        key,
                        value_pos,
                        format!(
                            "`region` must be a quoted region name such as \"{stem}\", found `{}`",
                            found()
                        ),
                    );
                    continue;
                };
                let name = value.as_str();
                if let Some(problem) = dns_label_problem(name) {
                    d.broken(
                        key,
                        value_pos,
                        format!("`region` must be a region name (a DNS label): {problem}"),
                    );
                } else if name != stem {
                    d.broken(
                        key,
                        value_pos,
                        format!(
                            "`region` is `{name}` but the file is {file}; one node pool per file, named after its region"
                        ),
                    );
                } else {
                    region = Some(name.to_owned());
                }
            }
            "desired_nodes" => {
                let count = match &attribute.value {
                    Expression::Number(number) => number
                        .as_u64()
                        .filter(|_| !number.is_f64())
                        .and_then(|n| u32::try_from(n).ok()),
                    _ => None,
                };
                if count.is_none() {
                    d.broken(
                        key,
                        value_pos,
                        format!(
                            "`desired_nodes` must be a whole number of nodes (0 to {}), found `{}`",
                            u32::MAX,
                            found()
                        ),
                    );
                }
                desired_nodes = count;
            }
            other => d.warning(
                key_pos,
                format!(
                    "unknown variable `{other}` is ignored; neutral reads {}",
                    NODE_POOL_VARIABLES.join(" and ")
                ),
            ),
        }
    }
    for name in NODE_POOL_VARIABLES {
        if !seen.contains(*name) {
            d.broken(
                name,
                Pos::START,
                format!("missing required variable `{name}`"),
            );
        }
    }
    Some(NodePoolDecl {
        region: region.unwrap_or_else(|| stem.to_owned()),
        desired_nodes: desired_nodes.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> (Option<NodePoolDecl>, Vec<String>) {
        let mut diagnostics = Vec::new();
        let mut decoder = Decoder::new("infra/node-pool/jp.tfvars", &mut diagnostics);
        let pool = node_pool(&mut decoder, text, "jp");
        let rendered = diagnostics.iter().map(ToString::to_string).collect();
        (pool, rendered)
    }

    #[test]
    fn a_plain_node_pool_decodes_with_comments_and_extra_variables() {
        let (pool, diags) = decode(
            "# written by people and the autoscaler\nregion        = \"jp\"\ndesired_nodes = 2 # scaled\ninstance_type = \"small\"\n",
        );
        assert_eq!(
            pool,
            Some(NodePoolDecl {
                region: "jp".into(),
                desired_nodes: 2
            })
        );
        assert_eq!(
            diags,
            [
                "infra/node-pool/jp.tfvars:4:1: warning: unknown variable `instance_type` is ignored; neutral reads region and desired_nodes"
            ]
        );
    }

    #[test]
    fn values_must_be_literals_of_the_right_type() {
        let (pool, diags) = decode("region = var.region\ndesired_nodes = 1.5\n");
        // Placeholders stand in for the broken values; the file is not clean.
        assert_eq!(
            pool,
            Some(NodePoolDecl {
                region: "jp".into(),
                desired_nodes: 0
            })
        );
        assert_eq!(
            diags,
            [
                "infra/node-pool/jp.tfvars:1:10: error: `region` must be a quoted region name such as \"jp\", found `var.region`",
                "infra/node-pool/jp.tfvars:2:17: error: `desired_nodes` must be a whole number of nodes (0 to 4294967295), found `1.5`",
            ]
        );
        let (_, diags) = decode("region = \"sg\"\ndesired_nodes = -1\n");
        assert_eq!(
            diags,
            [
                "infra/node-pool/jp.tfvars:1:10: error: `region` is `sg` but the file is jp.tfvars; one node pool per file, named after its region",
                "infra/node-pool/jp.tfvars:2:17: error: `desired_nodes` must be a whole number of nodes (0 to 4294967295), found `-1`",
            ]
        );
    }

    #[test]
    fn missing_variables_and_blocks_are_reported() {
        let (_, diags) = decode("pool {\n}\nregion = \"jp\"\n");
        assert_eq!(
            diags,
            [
                "infra/node-pool/jp.tfvars:1:1: error: blocks are not allowed in a .tfvars file (found `pool`)",
                "infra/node-pool/jp.tfvars:1:1: error: missing required variable `desired_nodes`",
            ]
        );
    }

    #[test]
    fn repeated_variables_are_syntax_errors_at_the_second() {
        let (_, diags) = decode("region = \"jp\"\nregion = \"jp\"\ndesired_nodes = 1\n");
        assert_eq!(
            diags,
            [
                "infra/node-pool/jp.tfvars:2:1: error: HCL syntax error: invalid attribute; expected unique attribute key; found redefined attribute"
            ]
        );
    }

    #[test]
    fn syntax_errors_are_reported_at_the_parser_location() {
        let (pool, diags) = decode("region = \"jp\"\ndesired_nodes = \n");
        assert_eq!(pool, None);
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].starts_with("infra/node-pool/jp.tfvars:2:")
                && diags[0].contains("HCL syntax error"),
            "{diags:?}"
        );
    }
}

/// Why [`set_desired_nodes`] would not rewrite a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TfvarsEditError {
    #[error("{line}:{col}: HCL syntax error: {message}")]
    Syntax {
        line: usize,
        col: usize,
        message: String,
    },
    #[error("desired_nodes is `{found}`, not a literal whole number; not rewriting it")]
    NotALiteral { found: String },
}

/// Rewrites the `desired_nodes` value of a node-pool tfvars file to
/// `desired`, changing nothing else: every other line, comment and space is
/// kept byte for byte. A file without `desired_nodes` gets it appended.
pub fn set_desired_nodes(text: &str, desired: u32) -> Result<String, TfvarsEditError> {
    let body = hcl_edit::parser::parse_body(text).map_err(|error| TfvarsEditError::Syntax {
        line: error.location().line(),
        col: error.location().column(),
        message: error.message().to_owned(),
    })?;
    let Some(attribute) = body.get_attribute("desired_nodes") else {
        let mut out = text.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("desired_nodes = {desired}\n"));
        return Ok(out);
    };
    let span = attribute.value.span();
    let literal = matches!(&attribute.value, Expression::Number(n) if n.as_u64().is_some());
    match span {
        Some(span) if literal => {
            let (Some(before), Some(after)) = (text.get(..span.start), text.get(span.end..)) else {
                return Err(TfvarsEditError::NotALiteral {
                    found: source(text, Some(span)),
                });
            };
            Ok(format!("{before}{desired}{after}"))
        }
        span => Err(TfvarsEditError::NotALiteral {
            found: source(text, span),
        }),
    }
}

#[cfg(test)]
mod edit_tests {
    use super::*;

    #[test]
    fn rewriting_desired_nodes_keeps_every_other_byte() {
        let text = "# jp pool — edited by people and the autoscaler\nregion        = \"jp\"   # keep\ndesired_nodes = 1 # was 1\nextra = [1, 2]\n";
        let out = set_desired_nodes(text, 12).unwrap();
        assert_eq!(
            out,
            "# jp pool — edited by people and the autoscaler\nregion        = \"jp\"   # keep\ndesired_nodes = 12 # was 1\nextra = [1, 2]\n"
        );
        assert_eq!(set_desired_nodes(&out, 1).unwrap(), text);
    }

    #[test]
    fn desired_nodes_is_read_back_and_a_broken_file_reads_as_none() {
        let text = "region = \"jp\"\ndesired_nodes = 3 # autoscaler\n";
        assert_eq!(desired_nodes_in(text, "jp"), Some(3));
        assert_eq!(
            desired_nodes_in(&set_desired_nodes(text, 7).unwrap(), "jp"),
            Some(7)
        );
        assert_eq!(desired_nodes_in("desired_nodes = \"x\"\n", "jp"), None);
        assert_eq!(desired_nodes_in("desired_nodes = 3 {", "jp"), None);
        assert_eq!(
            desired_nodes_in("region = \"sg\"\ndesired_nodes = 2\n", "jp"),
            None
        );
    }

    #[test]
    fn a_missing_desired_nodes_is_appended() {
        assert_eq!(
            set_desired_nodes("region = \"jp\"", 2).unwrap(),
            "region = \"jp\"\ndesired_nodes = 2\n"
        );
    }

    #[test]
    fn expressions_and_syntax_errors_are_refused() {
        assert_eq!(
            set_desired_nodes("desired_nodes = var.x + 1\n", 2),
            Err(TfvarsEditError::NotALiteral {
                found: "var.x + 1".to_owned()
            })
        );
        assert!(matches!(
            set_desired_nodes("desired_nodes = \n", 2),
            Err(TfvarsEditError::Syntax { .. })
        ));
    }
}
