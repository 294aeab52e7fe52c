//! Typed decoding of a located YAML tree, one field at a time, with a
//! diagnostic at the field's own line and column for every problem.
//!
//! This module owns the generic readers (mappings with a fixed set of fields,
//! integers in a range, numbers, durations, enums, DNS names) and the record of
//! where each field was written ([`Places`]) that the semantic checks use to
//! point at the right spot. A reader that fails reports, marks its field broken
//! and returns `None`; the caller falls back to the default and carries on, so
//! every problem of a file is found in one pass. It must not know the shape of
//! a region or a GTM policy (that is `schema`) nor compare objects with each
//! other (that is `checks`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::diag::{Diagnostic, Pos};
use crate::model::parse_duration;

use super::yaml::{self, Limits, Node, NodeKind, Scalar};

/// Where each field of one object was written, and which fields failed to
/// decode. Field names are paths such as `min_nodes`, `probe.port`,
/// `regions.jp` (a map key) or `failover.sg` (a list entry).
#[derive(Clone, Debug)]
pub struct Places {
    /// The object's mapping (or the start of the file).
    pub start: Pos,
    at: HashMap<String, Pos>,
    broken: HashSet<String>,
}

impl Default for Places {
    fn default() -> Self {
        Places {
            start: Pos::START,
            at: HashMap::new(),
            broken: HashSet::new(),
        }
    }
}

impl Places {
    /// Where `field` was written, if it was.
    pub fn get(&self, field: &str) -> Option<Pos> {
        self.at.get(field).copied()
    }

    /// Where `field` was written, else where the object starts.
    pub fn at(&self, field: &str) -> Pos {
        self.get(field).unwrap_or(self.start)
    }

    /// Where `field` was written, else where `fallback` was, else the start.
    pub fn at_or(&self, field: &str, fallback: &str) -> Pos {
        self.get(field).unwrap_or_else(|| self.at(fallback))
    }

    /// Whether `field` decoded (or was absent and took its default).
    pub fn ok(&self, field: &str) -> bool {
        !self.broken.contains(field)
    }

    pub fn record(&mut self, field: &str, pos: Pos) {
        self.at.entry(field.to_owned()).or_insert(pos);
    }

    pub fn mark_broken(&mut self, field: &str) {
        self.broken.insert(field.to_owned());
    }
}

/// One decoded file: the object if its required fields could be read, where
/// its fields are, and whether the file had no errors at all.
#[derive(Clone, Debug)]
pub struct Decoded<T> {
    pub path: String,
    /// The file name without its extension: the object's name.
    pub stem: String,
    pub value: Option<T>,
    pub places: Places,
    /// No error was reported while decoding this file.
    pub clean: bool,
}

/// Decodes one file: collects its diagnostics and the places of its fields.
#[derive(Debug)]
pub struct Decoder<'d> {
    path: &'d str,
    diagnostics: &'d mut Vec<Diagnostic>,
    errors: usize,
    pub places: Places,
}

/// The fields of a mapping that has a fixed set of them.
#[derive(Debug)]
pub struct Fields<'n> {
    /// How messages name the object: `region`, `probe`, ...
    object: &'static str,
    /// Prepended to field names: `` or `probe.`.
    prefix: String,
    pub pos: Pos,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value)
    }

    /// The full path of field `name`, e.g. `probe.port`.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl<'d> Decoder<'d> {
    pub fn new(path: &'d str, diagnostics: &'d mut Vec<Diagnostic>) -> Self {
        Decoder {
            path,
            diagnostics,
            errors: 0,
            places: Places::default(),
        }
    }

    pub fn path(&self) -> &str {
        self.path
    }

    /// Whether an error was reported through this decoder.
    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors = self.errors.saturating_add(1);
        self.diagnostics
            .push(Diagnostic::error(self.path, pos, message));
    }

    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::warning(self.path, pos, message));
    }

    /// Reports a problem with `field` and marks it broken.
    pub fn broken(&mut self, field: &str, pos: Pos, message: impl Into<String>) {
        self.places.mark_broken(field);
        self.error(pos, message);
    }

    /// Parses `text` and returns its top-level mapping, reporting YAML
    /// problems, an empty file and a top level that is not a mapping.
    pub fn root(&mut self, text: &str, object: &str) -> Option<Node> {
        let parsed = yaml::parse(text, Limits::DEFAULT);
        for problem in parsed.problems {
            self.error(problem.pos, problem.message);
        }
        let Some(root) = parsed.root else {
            if !self.has_errors() {
                self.error(
                    Pos::START,
                    format!("empty file: expected {object} (a YAML mapping)"),
                );
            }
            return None;
        };
        if !matches!(root.kind, NodeKind::Mapping(_)) {
            self.error(
                root.pos,
                format!(
                    "expected {object} (a YAML mapping) at the top level, found {}",
                    root.describe()
                ),
            );
            return None;
        }
        self.places.start = root.pos;
        Some(root)
    }

    /// Reads `node` as a mapping whose keys must be among `allowed`. `field`
    /// is the mapping's own path (`` for the top level) and `object` how
    /// messages name it.
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        object: &'static str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let prefix = if field.is_empty() {
            String::new()
        } else {
            format!("{field}.")
        };
        let NodeKind::Mapping(pairs) = &node.kind else {
            self.broken(
                field,
                node.pos,
                format!("`{field}` must be a mapping, found {}", node.describe()),
            );
            return None;
        };
        let mut entries = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let Some(name) = key_name(key) else {
                self.error(
                    key.pos,
                    format!("keys must be strings, found {}", key.describe()),
                );
                continue;
            };
            if !allowed.contains(&name) {
                let full = format!("{prefix}{name}");
                if name == "<<" {
                    self.broken(
                        &full,
                        key.pos,
                        "YAML merge keys (`<<`) are not supported; write the fields out",
                    );
                } else {
                    self.broken(
                        &full,
                        key.pos,
                        format!(
                            "unknown field `{}` in {object}, expected one of: {}",
                            key.short_text(),
                            allowed.join(", ")
                        ),
                    );
                }
                continue;
            }
            self.places.record(&format!("{prefix}{name}"), value.pos);
            entries.push((name, value));
        }
        Some(Fields {
            object,
            prefix,
            pos: node.pos,
            entries,
        })
    }

    /// The value of a required field, reporting it missing at the mapping.
    pub fn required<'n>(&mut self, fields: &Fields<'n>, name: &str) -> Option<&'n Node> {
        let value = fields.get(name);
        if value.is_none() {
            let full = fields.path(name);
            self.broken(
                &full,
                fields.pos,
                format!("missing required field `{full}` in {}", fields.object),
            );
        }
        value
    }

    fn wrong_type(&mut self, field: &str, node: &Node, expected: &str) {
        self.broken(
            field,
            node.pos,
            format!("`{field}` must be {expected}, found {}", node.describe()),
        );
    }

    pub fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        if let Some(Scalar::Str(text)) = node.scalar() {
            Some(text.to_owned())
        } else {
            self.wrong_type(field, node, "a string");
            None
        }
    }

    /// An integer in `range`.
    pub fn integer(
        &mut self,
        node: &Node,
        field: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Option<u32> {
        let Some(Scalar::Int(value)) = node.scalar() else {
            self.wrong_type(field, node, "an integer");
            return None;
        };
        let in_range = u32::try_from(value)
            .ok()
            .filter(|value| range.contains(value));
        if in_range.is_none() {
            let bounds = if *range.end() == u32::MAX {
                format!("at least {}", range.start())
            } else {
                format!("between {} and {}", range.start(), range.end())
            };
            self.broken(
                field,
                node.pos,
                format!("`{field}` must be {bounds}, found {}", node.short_text()),
            );
        }
        in_range
    }

    /// A finite number at least `min` and at most `max` (if given).
    pub fn number(&mut self, node: &Node, field: &str, min: f64, max: Option<f64>) -> Option<f64> {
        let value = match node.scalar() {
            Some(Scalar::Float(value)) => value,
            Some(Scalar::Int(value)) => value as f64,
            _ => {
                self.wrong_type(field, node, "a number");
                return None;
            }
        };
        let above_min = value >= min;
        let below_max = max.is_none_or(|max| value <= max);
        if value.is_finite() && above_min && below_max {
            return Some(value);
        }
        let bounds = match max {
            Some(max) => format!("between {min} and {max}"),
            None => format!("at least {min}"),
        };
        self.broken(
            field,
            node.pos,
            format!("`{field}` must be {bounds}, found {}", node.short_text()),
        );
        None
    }

    pub fn boolean(&mut self, node: &Node, field: &str) -> Option<bool> {
        if let Some(Scalar::Bool(value)) = node.scalar() {
            Some(value)
        } else {
            self.wrong_type(field, node, "true or false");
            None
        }
    }

    /// A duration such as `10s`, `1m30s` or `500ms`.
    pub fn duration(&mut self, node: &Node, field: &str) -> Option<Duration> {
        let text = match node.scalar() {
            Some(Scalar::Str(_) | Scalar::Int(_)) => node.scalar_text().unwrap_or_default(),
            _ => {
                self.wrong_type(field, node, "a duration such as `10s` or `1m30s`");
                return None;
            }
        };
        match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(error) => {
                self.broken(
                    field,
                    node.pos,
                    format!(
                        "`{field}` is not a valid duration (`{}`): {error}",
                        node.short_text()
                    ),
                );
                None
            }
        }
    }

    /// One of the named `options`.
    pub fn choice<T: Copy>(
        &mut self,
        node: &Node,
        field: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let names = || {
            options
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(Scalar::Str(text)) = node.scalar() else {
            let expected = format!("one of: {}", names());
            self.wrong_type(field, node, &expected);
            return None;
        };
        let found = options
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, value)| *value);
        if found.is_none() {
            self.broken(
                field,
                node.pos,
                format!(
                    "`{field}` must be one of: {}; found `{}`",
                    names(),
                    node.short_text()
                ),
            );
        }
        found
    }

    pub fn sequence<'n>(&mut self, node: &'n Node, field: &str) -> Option<&'n [Node]> {
        if let NodeKind::Sequence(items) = &node.kind {
            Some(items)
        } else {
            self.wrong_type(field, node, "a list");
            None
        }
    }

    /// A DNS name, lowercased and without its trailing dot.
    pub fn dns_name(&mut self, node: &Node, field: &str) -> Option<String> {
        let text = self.string(node, field)?;
        match normalize_dns_name(&text) {
            Ok(name) => Some(name),
            Err(reason) => {
                self.broken(
                    field,
                    node.pos,
                    format!(
                        "`{field}` is not a valid DNS name (`{}`): {reason}",
                        node.short_text()
                    ),
                );
                None
            }
        }
    }
}

/// A mapping key's text when it is a string (quoted or plain, any type).
fn key_name(key: &Node) -> Option<&str> {
    match key.scalar() {
        Some(Scalar::Null) | None => None,
        Some(_) => key.scalar_text(),
    }
}

/// The longest DNS name, without the trailing dot.
pub const MAX_DNS_NAME_LEN: usize = 253;
/// The longest DNS label.
pub const MAX_DNS_LABEL_LEN: usize = 63;

/// Why `label` is not a DNS label (1 to 63 of `[a-z0-9-]`, not starting or
/// ending with `-`), or `None` when it is one.
pub fn dns_label_problem(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("empty label".to_owned());
    }
    if label.len() > MAX_DNS_LABEL_LEN {
        return Some(format!(
            "label `{label}` is longer than {MAX_DNS_LABEL_LEN} characters"
        ));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "label `{label}` contains `{bad}`; use a-z, 0-9 and `-`"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some(format!("label `{label}` starts or ends with `-`"));
    }
    None
}

/// Lowercases `text`, strips one trailing dot and checks the result is a DNS
/// name: labels per [`dns_label_problem`], at most 253 characters in all.
pub fn normalize_dns_name(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("empty name".to_owned());
    }
    if name.len() > MAX_DNS_NAME_LEN {
        return Err(format!(
            "longer than {MAX_DNS_NAME_LEN} characters ({})",
            name.len()
        ));
    }
    if let Some(problem) = name.split('.').find_map(dns_label_problem) {
        return Err(problem);
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<T>(text: &str, read: impl FnOnce(&mut Decoder<'_>, &Node) -> T) -> (T, Vec<String>) {
        let mut diagnostics = Vec::new();
        let mut decoder = Decoder::new("f.yaml", &mut diagnostics);
        let root = decoder.root(text, "a thing").expect("a mapping");
        let out = read(&mut decoder, &root);
        let rendered = diagnostics.iter().map(ToString::to_string).collect();
        (out, rendered)
    }

    fn value<'n>(root: &'n Node, key: &str) -> &'n Node {
        let NodeKind::Mapping(entries) = &root.kind else {
            panic!()
        };
        &entries
            .iter()
            .find(|(k, _)| k.scalar_text() == Some(key))
            .unwrap()
            .1
    }

    #[test]
    fn integers_are_range_checked_at_the_value() {
        let (out, diags) = decode("a: 5\nb: 1001\nc: -1\nd: '5'\ne: 2.5\n", |d, root| {
            [
                d.integer(value(root, "a"), "a", 0..=1000),
                d.integer(value(root, "b"), "b", 0..=1000),
                d.integer(value(root, "c"), "c", 1..=u32::MAX),
                d.integer(value(root, "d"), "d", 0..=10),
                d.integer(value(root, "e"), "e", 0..=10),
            ]
        });
        assert_eq!(out, [Some(5), None, None, None, None]);
        assert_eq!(
            diags,
            [
                "f.yaml:2:4: error: `b` must be between 0 and 1000, found 1001",
                "f.yaml:3:4: error: `c` must be at least 1, found -1",
                "f.yaml:4:4: error: `d` must be an integer, found the string `5`",
                "f.yaml:5:4: error: `e` must be an integer, found the number `2.5`",
            ]
        );
    }

    #[test]
    fn numbers_accept_integers_and_reject_infinity() {
        let (out, diags) = decode("a: 1\nb: 0.25\nc: .inf\nd: 1.5\n", |d, root| {
            [
                d.number(value(root, "a"), "a", 0.0, Some(1.0)),
                d.number(value(root, "b"), "b", 0.0, Some(1.0)),
                d.number(value(root, "c"), "c", 0.0, None),
                d.number(value(root, "d"), "d", 0.0, Some(1.0)),
            ]
        });
        assert_eq!(out, [Some(1.0), Some(0.25), None, None]);
        assert_eq!(
            diags,
            [
                "f.yaml:3:4: error: `c` must be at least 0, found .inf",
                "f.yaml:4:4: error: `d` must be between 0 and 1, found 1.5",
            ]
        );
    }

    #[test]
    fn durations_report_the_parse_error_at_the_value() {
        let (out, diags) = decode("a: 1m30s\nb: 10\nc: [1]\n", |d, root| {
            [
                d.duration(value(root, "a"), "a"),
                d.duration(value(root, "b"), "b"),
                d.duration(value(root, "c"), "c"),
            ]
        });
        assert_eq!(out, [Some(Duration::from_secs(90)), None, None]);
        assert_eq!(
            diags,
            [
                "f.yaml:2:4: error: `b` is not a valid duration (`10`): missing unit after `10` (use ms, s, m or h, e.g. `10s`)",
                "f.yaml:3:4: error: `c` must be a duration such as `10s` or `1m30s`, found a sequence",
            ]
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_all_reported() {
        let (_, diags) = decode("name: x\nsize: 3\n<<: {}\n", |d, root| {
            let fields = d.fields(root, "", "thing", &["name", "kind"]).unwrap();
            d.required(&fields, "kind");
            d.places.ok("kind")
        });
        assert_eq!(
            diags,
            [
                "f.yaml:2:1: error: unknown field `size` in thing, expected one of: name, kind",
                "f.yaml:3:1: error: YAML merge keys (`<<`) are not supported; write the fields out",
                "f.yaml:1:1: error: missing required field `kind` in thing",
            ]
        );
    }

    #[test]
    fn choices_list_the_options() {
        let (out, diags) = decode("a: up\nb: degraded\n", |d, root| {
            let options = [("up", 1), ("down", 2)];
            [
                d.choice(value(root, "a"), "a", &options),
                d.choice(value(root, "b"), "b", &options),
            ]
        });
        assert_eq!(out, [Some(1), None]);
        assert_eq!(
            diags,
            ["f.yaml:2:4: error: `b` must be one of: up, down; found `degraded`"]
        );
    }

    #[test]
    fn places_remember_fields_and_fall_back_to_the_start() {
        let (places, _) = decode("\n\nx: 1\ny: {z: 2}\n", |d, root| {
            let fields = d.fields(root, "", "thing", &["x", "y"]).unwrap();
            let y = fields.get("y").unwrap();
            d.fields(y, "y", "y", &["z"]);
            d.places.clone()
        });
        assert_eq!(places.start, Pos::new(3, 1));
        assert_eq!(places.get("x"), Some(Pos::new(3, 4)));
        assert_eq!(places.get("y.z"), Some(Pos::new(4, 8)));
        assert_eq!(places.at("nope"), Pos::new(3, 1));
    }

    #[test]
    fn dns_names_are_lowercased_and_lose_the_trailing_dot() {
        assert_eq!(
            normalize_dns_name("App.Example.COM."),
            Ok("app.example.com".into())
        );
        assert!(normalize_dns_name("a..b").is_err());
        assert!(normalize_dns_name("-a.b").is_err());
        assert!(normalize_dns_name("a_b.c").is_err());
        assert!(normalize_dns_name(".").is_err());
        assert!(normalize_dns_name(&"a".repeat(64)).is_err());
        let long = ["a".repeat(63).as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(normalize_dns_name(&long).is_err());
        assert!(normalize_dns_name(&long[2..]).is_ok());
    }

    #[test]
    fn empty_files_and_non_mappings_are_reported() {
        for (text, expected) in [
            (
                "",
                "f.yaml:1:1: error: empty file: expected a thing (a YAML mapping)",
            ),
            (
                "\n- a\n",
                "f.yaml:2:1: error: expected a thing (a YAML mapping) at the top level, found a sequence",
            ),
            (
                "just text\n",
                "f.yaml:1:1: error: expected a thing (a YAML mapping) at the top level, found the string `just text`",
            ),
        ] {
            let mut diagnostics = Vec::new();
            let mut decoder = Decoder::new("f.yaml", &mut diagnostics);
            assert_eq!(decoder.root(text, "a thing"), None);
            assert_eq!(diagnostics[0].to_string(), expected);
        }
    }
}
