//! A located YAML tree built from `saphyr-parser`'s event stream, with limits.
//!
//! This module owns turning text into [`Node`]s that remember where they start
//! and the limits that keep hostile input cheap: nesting depth (checked as each
//! collection opens, so a 10,000-deep `[[[[` stops at the limit without
//! recursion), a total node budget that counts alias expansions (a "billion
//! laughs" bomb stops at the first alias that would cross it, before copying
//! anything), and one document per file. It also resolves plain scalars by the
//! YAML 1.2 core schema. It must not interpret a tree against a schema: that is
//! `decode`'s job.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use crate::diag::Pos;

/// How much structure one file may hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Collections nested inside each other, aliases expanded.
    pub max_depth: usize,
    /// Scalars and collections in the document, aliases expanded.
    pub max_nodes: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_depth: 64,
        max_nodes: 10_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A YAML node and where it starts (its anchor or tag if it has one).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A scalar's text. `plain` is false for quoted and block scalars and for
    /// scalars tagged `!!str`: those are strings whatever they look like.
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    /// Entries in document order; a duplicated key keeps its first entry.
    Mapping(Vec<(Node, Node)>),
}

/// What a scalar means under the YAML 1.2 core schema.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// Saturates at the `i128` range; callers range-check anyway.
    Int(i128),
    Float(f64),
    Str(&'a str),
}

impl Node {
    /// The scalar's text, whatever its type.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The scalar resolved by the core schema; `None` for collections.
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        match &self.kind {
            NodeKind::Scalar { text, plain: true } => Some(resolve_plain(text)),
            NodeKind::Scalar { text, plain: false } => Some(Scalar::Str(text)),
            _ => None,
        }
    }

    /// "a mapping", "the integer `5`", ...: how an error message names what it
    /// found.
    pub fn describe(&self) -> String {
        match (&self.kind, self.scalar()) {
            (NodeKind::Sequence(_), _) => "a sequence".to_owned(),
            (NodeKind::Mapping(_), _) => "a mapping".to_owned(),
            (_, Some(Scalar::Null)) => "null".to_owned(),
            (_, Some(Scalar::Bool(_))) => format!("the boolean `{}`", self.short_text()),
            (_, Some(Scalar::Int(_))) => format!("the integer `{}`", self.short_text()),
            (_, Some(Scalar::Float(_))) => format!("the number `{}`", self.short_text()),
            (_, Some(Scalar::Str(_)) | None) => format!("the string `{}`", self.short_text()),
        }
    }

    /// The scalar text cut to a length that fits in a message.
    pub fn short_text(&self) -> String {
        const MAX_CHARS: usize = 40;
        let text = self.scalar_text().unwrap_or_default();
        if text.chars().count() <= MAX_CHARS {
            text.to_owned()
        } else {
            let cut: String = text.chars().take(MAX_CHARS).collect();
            format!("{cut}…")
        }
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
pub fn resolve_plain(text: &str) -> Scalar<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    if let Some(int) = resolve_int(text) {
        return Scalar::Int(int);
    }
    if looks_like_float(text)
        && let Ok(value) = text.parse::<f64>()
    {
        return Scalar::Float(value);
    }
    Scalar::Str(text)
}

fn resolve_int(text: &str) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..)?),
        Some(b'+') => (false, text.get(1..)?),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(hex) = text.strip_prefix("0x") {
        (16, hex)
    } else if let Some(octal) = text.strip_prefix("0o") {
        (8, octal)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let value = i128::from_str_radix(digits, radix).unwrap_or(i128::MAX);
    Some(if negative {
        value.saturating_neg()
    } else {
        value
    })
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn looks_like_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (body.get(..at).unwrap_or(""), body.get(at + 1..)),
        None => (body, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match fraction {
        None => !whole.is_empty() && all_digits(whole),
        Some(fraction) => {
            all_digits(whole) && all_digits(fraction) && !(whole.is_empty() && fraction.is_empty())
        }
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

/// A problem found while building the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    pub message: String,
}

/// The tree of a file's (first) document and every problem met on the way.
///
/// `root` is `None` for an empty file and when a fatal problem (a syntax
/// error, a crossed limit) stopped the build before the document was
/// complete.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    pub root: Option<Node>,
    pub problems: Vec<Problem>,
}

/// Builds the located tree of `text`, stopping at the first fatal problem.
pub fn parse(text: &str, limits: Limits) -> Parsed {
    // At the end of input the parser may point one line past the text (an
    // empty node, an error at EOF); positions are kept inside the file.
    let end = end_of(text);
    let mut builder = Builder::new(limits);
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let flow = match next {
            Ok((event, span)) => builder.on_event(event, span_pos(span).min(end)),
            Err(error) => {
                let marker = error.marker();
                let pos = pos_of(marker.line(), marker.col()).min(end);
                // The scanner reads ahead through flow collections and gives up
                // at 255 levels, before the tree builder sees the opening events.
                let message = if error.info() == "recursion limit exceeded" {
                    too_deep(limits.max_depth)
                } else {
                    format!("YAML syntax error: {}", error.info())
                };
                builder.problem(pos, message);
                Flow::Stop
            }
        };
        if flow == Flow::Stop {
            break;
        }
    }
    Parsed {
        root: builder.root,
        problems: builder.problems,
    }
}

/// The position just past the last character, counting line breaks the way
/// YAML does (`\r\n`, `\r` or `\n`).
fn end_of(text: &str) -> Pos {
    let mut line: u32 = 1;
    let mut col: u32 = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let line_break = c == '\n' || (c == '\r' && chars.peek() != Some(&'\n'));
        if line_break {
            line = line.saturating_add(1);
            col = 1;
        } else if c != '\r' {
            col = col.saturating_add(1);
        }
    }
    Pos::new(line, col)
}

fn too_deep(max_depth: usize) -> String {
    format!("nesting deeper than {max_depth} levels; platform-config files are shallow")
}

fn pos_of(line: usize, zero_based_col: usize) -> Pos {
    Pos::new(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(zero_based_col.saturating_add(1)).unwrap_or(u32::MAX),
    )
}

fn span_pos(span: Span) -> Pos {
    pos_of(span.start.line(), span.start.col())
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// A finished node with the numbers the limits need.
struct Built {
    node: Node,
    /// Nodes in the subtree, itself included.
    size: usize,
    /// Collections on the longest path down from this node, itself included.
    height: usize,
}

/// A collection whose end event has not come yet.
struct Open {
    pos: Pos,
    anchor: usize,
    size: usize,
    height: usize,
    body: OpenBody,
}

enum OpenBody {
    Sequence(Vec<Node>),
    Mapping {
        entries: Vec<(Node, Node)>,
        /// The key waiting for its value, and whether it repeats an earlier key
        /// (its entry is then dropped once the value is complete).
        key: Option<(Node, bool)>,
        /// First line of each scalar key seen so far.
        seen: HashMap<String, u32>,
    },
}

struct Builder {
    limits: Limits,
    stack: Vec<Open>,
    anchors: HashMap<usize, Built>,
    nodes: usize,
    documents: usize,
    root: Option<Node>,
    problems: Vec<Problem>,
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            limits,
            stack: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            documents: 0,
            root: None,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, pos: Pos, message: String) {
        self.problems.push(Problem { pos, message });
    }

    fn on_event(&mut self, event: Event<'_>, pos: Pos) -> Flow {
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {
                Flow::Continue
            }
            Event::DocumentStart(_) => {
                self.documents = self.documents.saturating_add(1);
                if self.documents > 1 {
                    self.problem(
                        pos,
                        "a second YAML document: platform-config holds one object per file"
                            .to_owned(),
                    );
                    return Flow::Stop;
                }
                Flow::Continue
            }
            Event::Scalar(text, style, anchor, tag) => {
                if self.count_nodes(1, pos) == Flow::Stop {
                    return Flow::Stop;
                }
                let forced_string = tag.as_deref().is_some_and(is_str_tag);
                self.check_tag(tag.as_deref(), pos);
                let node = Node {
                    pos,
                    kind: NodeKind::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain && !forced_string,
                    },
                };
                self.finish(
                    Built {
                        node,
                        size: 1,
                        height: 0,
                    },
                    anchor,
                );
                Flow::Continue
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), pos);
                self.open(pos, anchor, OpenBody::Sequence(Vec::new()))
            }
            Event::MappingStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), pos);
                self.open(
                    pos,
                    anchor,
                    OpenBody::Mapping {
                        entries: Vec::new(),
                        key: None,
                        seen: HashMap::new(),
                    },
                )
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.stack.pop() {
                    let kind = match open.body {
                        OpenBody::Sequence(items) => NodeKind::Sequence(items),
                        OpenBody::Mapping { entries, .. } => NodeKind::Mapping(entries),
                    };
                    self.finish(
                        Built {
                            node: Node {
                                pos: open.pos,
                                kind,
                            },
                            size: open.size,
                            height: open.height,
                        },
                        open.anchor,
                    );
                }
                Flow::Continue
            }
            Event::Alias(anchor) => self.alias(anchor, pos),
        }
    }

    fn count_nodes(&mut self, added: usize, pos: Pos) -> Flow {
        self.nodes = self.nodes.saturating_add(added);
        if self.nodes > self.limits.max_nodes {
            self.problem(
                pos,
                format!(
                    "the document has more than {} nodes (aliases expanded); platform-config files are small",
                    self.limits.max_nodes
                ),
            );
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn check_tag(&mut self, tag: Option<&Tag>, pos: Pos) {
        if let Some(tag) = tag
            && !tag.is_yaml_core_schema()
        {
            self.problem(
                pos,
                format!("unsupported YAML tag `{tag}`; platform-config uses plain values"),
            );
        }
    }

    fn open(&mut self, pos: Pos, anchor: usize, body: OpenBody) -> Flow {
        if self.count_nodes(1, pos) == Flow::Stop {
            return Flow::Stop;
        }
        if self.stack.len() >= self.limits.max_depth {
            self.problem(pos, too_deep(self.limits.max_depth));
            return Flow::Stop;
        }
        self.stack.push(Open {
            pos,
            anchor,
            size: 1,
            height: 1,
            body,
        });
        Flow::Continue
    }

    fn alias(&mut self, anchor: usize, pos: Pos) -> Flow {
        let Some(target) = self.anchors.get(&anchor) else {
            self.problem(
                pos,
                "alias to an anchor that encloses it (a recursive alias)".to_owned(),
            );
            return Flow::Stop;
        };
        let (size, height) = (target.size, target.height);
        if self.nodes.saturating_add(size) > self.limits.max_nodes {
            self.problem(
                pos,
                format!(
                    "alias expansion would exceed {} nodes; is this a YAML alias bomb?",
                    self.limits.max_nodes
                ),
            );
            return Flow::Stop;
        }
        if self.stack.len().saturating_add(height) > self.limits.max_depth {
            self.problem(
                pos,
                format!(
                    "alias expansion nests deeper than {} levels",
                    self.limits.max_depth
                ),
            );
            return Flow::Stop;
        }
        self.nodes = self.nodes.saturating_add(size);
        let mut node = target.node.clone();
        node.pos = pos;
        self.finish(Built { node, size, height }, 0);
        Flow::Continue
    }

    /// Files a finished node under its anchor and into its parent (or as the
    /// document root).
    fn finish(&mut self, built: Built, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Built {
                    node: built.node.clone(),
                    size: built.size,
                    height: built.height,
                },
            );
        }
        let Some(parent) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(built.node);
            }
            return;
        };
        parent.size = parent.size.saturating_add(built.size);
        parent.height = parent.height.max(built.height.saturating_add(1));
        let mut duplicate = None;
        match &mut parent.body {
            OpenBody::Sequence(items) => items.push(built.node),
            OpenBody::Mapping { entries, key, seen } => match key.take() {
                Some((key, repeated)) => {
                    if !repeated {
                        entries.push((key, built.node));
                    }
                }
                None => {
                    let mut repeated = false;
                    if let NodeKind::Scalar { text, .. } = &built.node.kind {
                        if let Some(first_line) = seen.get(text) {
                            repeated = true;
                            duplicate = Some(format!(
                                "duplicate key `{}` (first defined on line {first_line})",
                                built.node.short_text()
                            ));
                        } else {
                            seen.insert(text.clone(), built.node.pos.line);
                        }
                    }
                    let key_pos = built.node.pos;
                    *key = Some((built.node, repeated));
                    if let Some(message) = duplicate.take() {
                        self.problems.push(Problem {
                            pos: key_pos,
                            message,
                        });
                    }
                }
            },
        }
    }
}

fn is_str_tag(tag: &Tag) -> bool {
    tag.is_yaml_core_schema() && tag.suffix == "str"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Node {
        let parsed = parse(text, Limits::DEFAULT);
        assert_eq!(parsed.problems, vec![], "{text}");
        parsed.root.unwrap()
    }

    fn problems(text: &str, limits: Limits) -> Vec<String> {
        parse(text, limits)
            .problems
            .into_iter()
            .map(|p| format!("{}:{}: {}", p.pos.line, p.pos.col, p.message))
            .collect()
    }

    fn entries(node: &Node) -> &[(Node, Node)] {
        match &node.kind {
            NodeKind::Mapping(entries) => entries,
            other => panic!("not a mapping: {other:?}"),
        }
    }

    #[test]
    fn nodes_carry_one_based_line_and_character_column() {
        let root = tree("# c\nname: jp\nfailover: [sg, \"us\"]\nzone:  ça\n");
        assert_eq!(root.pos, Pos::new(2, 1));
        let e = entries(&root);
        assert_eq!(e[0].0.pos, Pos::new(2, 1));
        assert_eq!(e[0].1.pos, Pos::new(2, 7));
        assert_eq!(e[1].1.pos, Pos::new(3, 11));
        let NodeKind::Sequence(items) = &e[1].1.kind else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos::new(3, 12));
        assert_eq!(items[1].pos, Pos::new(3, 16));
        assert_eq!(
            items[1].kind,
            NodeKind::Scalar {
                text: "us".into(),
                plain: false
            }
        );
        assert_eq!(e[2].1.pos, Pos::new(4, 8));
    }

    #[test]
    fn plain_scalars_resolve_by_the_core_schema() {
        assert_eq!(resolve_plain("~"), Scalar::Null);
        assert_eq!(resolve_plain(""), Scalar::Null);
        assert_eq!(resolve_plain("True"), Scalar::Bool(true));
        assert_eq!(resolve_plain("no"), Scalar::Str("no"));
        assert_eq!(resolve_plain("-12"), Scalar::Int(-12));
        assert_eq!(resolve_plain("0x1F"), Scalar::Int(31));
        assert_eq!(resolve_plain("0o17"), Scalar::Int(15));
        assert_eq!(resolve_plain("1.5"), Scalar::Float(1.5));
        assert_eq!(resolve_plain(".5"), Scalar::Float(0.5));
        assert_eq!(resolve_plain("1e3"), Scalar::Float(1000.0));
        assert_eq!(resolve_plain("-.inf"), Scalar::Float(f64::NEG_INFINITY));
        assert_eq!(resolve_plain("inf"), Scalar::Str("inf"));
        assert_eq!(resolve_plain("10s"), Scalar::Str("10s"));
        assert_eq!(resolve_plain("1.2.3"), Scalar::Str("1.2.3"));
        assert_eq!(resolve_plain("."), Scalar::Str("."));
        assert_eq!(
            resolve_plain("99999999999999999999999999999999999999999999"),
            Scalar::Int(i128::MAX)
        );
    }

    #[test]
    fn quoted_and_str_tagged_scalars_are_strings() {
        let root = tree("a: '5'\nb: !!str 5\nc: 5\n");
        let e = entries(&root);
        assert_eq!(e[0].1.scalar(), Some(Scalar::Str("5")));
        assert_eq!(e[1].1.scalar(), Some(Scalar::Str("5")));
        assert_eq!(e[2].1.scalar(), Some(Scalar::Int(5)));
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second_and_the_first_is_kept() {
        let parsed = parse("a: 1\nb: 2\na: 3\n", Limits::DEFAULT);
        assert_eq!(
            parsed.problems,
            vec![Problem {
                pos: Pos::new(3, 1),
                message: "duplicate key `a` (first defined on line 1)".into()
            }]
        );
        let root = parsed.root.unwrap();
        let e = entries(&root);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].1.scalar(), Some(Scalar::Int(1)));
    }

    #[test]
    fn aliases_expand_to_copies_placed_at_the_alias() {
        let root = tree("base: &b {x: 1}\ncopy: *b\n");
        let e = entries(&root);
        assert_eq!(e[1].1.pos, Pos::new(2, 7));
        assert_eq!(entries(&e[1].1).len(), 1);
    }

    #[test]
    fn alias_bombs_stop_at_the_node_budget() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let prev = (b'a' + level - 1) as char;
            let name = (b'a' + level) as char;
            text.push_str(&format!("{name}: &{name} [*{prev}"));
            text.push_str(&format!(", *{prev}").repeat(9));
            text.push_str("]\n");
        }
        let found = problems(&text, Limits::DEFAULT);
        assert_eq!(
            found,
            vec![
                "4:36: alias expansion would exceed 10000 nodes; is this a YAML alias bomb?"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn recursive_aliases_are_rejected() {
        let found = problems("a: &a [*a]\n", Limits::DEFAULT);
        assert_eq!(
            found,
            vec!["1:8: alias to an anchor that encloses it (a recursive alias)".to_owned()]
        );
    }

    #[test]
    fn nesting_stops_as_soon_as_the_depth_limit_is_crossed() {
        let deep = "[".repeat(10_000);
        let limits = Limits {
            max_depth: 3,
            max_nodes: 100,
        };
        assert_eq!(
            problems(&deep, limits),
            vec![
                "1:256: nesting deeper than 3 levels; platform-config files are shallow".to_owned()
            ]
        );
        assert_eq!(
            problems(&"[".repeat(20), limits),
            vec!["1:4: nesting deeper than 3 levels; platform-config files are shallow".to_owned()]
        );
        assert_eq!(problems("[[[1]]]", limits), Vec::<String>::new());
        let mappings = "{a: ".repeat(10_000);
        assert_eq!(
            problems(&mappings, Limits::DEFAULT),
            vec![
                "1:1021: nesting deeper than 64 levels; platform-config files are shallow"
                    .to_owned()
            ]
        );
        let block: String = (0..70).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        assert_eq!(
            problems(&block, Limits::DEFAULT),
            vec![
                "65:65: nesting deeper than 64 levels; platform-config files are shallow"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn alias_expansion_counts_towards_depth() {
        let limits = Limits {
            max_depth: 3,
            max_nodes: 100,
        };
        assert_eq!(
            problems("a: &x [[1]]\nb: [*x]\n", limits),
            vec!["2:5: alias expansion nests deeper than 3 levels".to_owned()]
        );
    }

    #[test]
    fn the_node_budget_counts_every_node() {
        let limits = Limits {
            max_depth: 8,
            max_nodes: 4,
        };
        assert_eq!(problems("[1, 2, 3]", limits), Vec::<String>::new());
        assert_eq!(
            problems("[1, 2, 3, 4]", limits),
            vec![
                "1:11: the document has more than 4 nodes (aliases expanded); platform-config files are small"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn a_second_document_is_reported_and_the_first_kept() {
        let parsed = parse("a: 1\n---\nb: 2\n", Limits::DEFAULT);
        assert_eq!(parsed.problems.len(), 1);
        assert_eq!(parsed.problems[0].pos, Pos::new(2, 1));
        assert!(parsed.root.is_some());
    }

    #[test]
    fn syntax_errors_are_reported_at_the_parser_marker() {
        let parsed = parse("a: [1, 2\nb: 3\n", Limits::DEFAULT);
        assert_eq!(parsed.root, None);
        assert_eq!(parsed.problems.len(), 1);
        assert!(
            parsed.problems[0]
                .message
                .starts_with("YAML syntax error: "),
            "{:?}",
            parsed.problems
        );
    }

    #[test]
    fn errors_at_the_end_of_input_stay_inside_the_text() {
        let parsed = parse("[", Limits::DEFAULT);
        assert_eq!(parsed.problems.len(), 1);
        assert_eq!(parsed.problems[0].pos, Pos::new(1, 2));
    }

    #[test]
    fn empty_nodes_at_the_end_of_input_stay_inside_the_text() {
        let root = parse("? ", Limits::DEFAULT).root.unwrap();
        let e = entries(&root);
        assert!(e[0].0.pos <= Pos::new(1, 3), "{:?}", e[0].0.pos);
        assert!(e[0].1.pos <= Pos::new(1, 3), "{:?}", e[0].1.pos);
    }

    #[test]
    fn the_end_position_counts_every_kind_of_line_break() {
        assert_eq!(end_of(""), Pos::new(1, 1));
        assert_eq!(end_of("ab"), Pos::new(1, 3));
        assert_eq!(end_of("a\r\nb\rc\n"), Pos::new(4, 1));
        assert_eq!(end_of("é"), Pos::new(1, 2));
    }

    #[test]
    fn empty_input_has_no_root_and_no_problem() {
        assert_eq!(parse("", Limits::DEFAULT), Parsed::default());
        assert_eq!(
            parse("# only a comment\n", Limits::DEFAULT),
            Parsed::default()
        );
    }

    #[test]
    fn custom_tags_are_reported() {
        assert_eq!(
            problems("a: !secret x\n", Limits::DEFAULT),
            vec![
                "1:4: unsupported YAML tag `!secret`; platform-config uses plain values".to_owned()
            ]
        );
    }
}
