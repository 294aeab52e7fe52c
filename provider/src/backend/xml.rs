//! The little XML that Route53's REST API speaks: a reader that turns a
//! response into a tree of elements, and a writer for request bodies.
//!
//! Reading is `roxmltree`'s (a maintained, fuzzed parser: remote input is
//! not parsed by hand here); this module keeps only the tree Route53's code
//! walks: local names (namespaces dropped), trimmed text (entities,
//! character references and CDATA resolved) and child elements; attributes,
//! comments and processing instructions are left out. A `DOCTYPE` (so no
//! entity can expand) and nesting deeper than [`MAX_DEPTH`] are refused. It
//! never panics on input.

use std::fmt::Write as _;

/// The deepest nesting read; Route53's answers need fewer than ten levels.
pub const MAX_DEPTH: usize = 64;

/// One element: its local name, its text (the concatenation of its direct
/// text, trimmed) and its child elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid XML at byte {at}: {problem}")]
pub struct XmlError {
    pub at: usize,
    pub problem: String,
}

impl Element {
    pub fn new(name: &str) -> Element {
        Element {
            name: name.to_owned(),
            ..Element::default()
        }
    }

    /// An element holding only `text`.
    pub fn leaf(name: &str, text: impl Into<String>) -> Element {
        Element {
            name: name.to_owned(),
            text: text.into(),
            children: Vec::new(),
        }
    }

    #[must_use]
    pub fn with(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The element as XML, children in order, text escaped.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        let _ = write!(out, "<{}>", self.name);
        out.push_str(&escape(&self.text));
        for child in &self.children {
            child.write(out);
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Reads `xml` into a tree of elements (local names, trimmed direct text
/// including CDATA, child elements), with `roxmltree` as the parser: no
/// DTD (so no entity can expand), well-formedness and namespaces checked,
/// nesting deeper than [`MAX_DEPTH`] refused.
pub fn parse(xml: &str) -> Result<Element, XmlError> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        ..roxmltree::ParsingOptions::default()
    };
    let document = roxmltree::Document::parse_with_options(xml, options).map_err(|err| {
        let pos = err.pos();
        XmlError {
            at: document_offset(xml, pos.row, pos.col),
            problem: err.to_string(),
        }
    })?;
    element(document.root_element(), 1)
}

/// The byte offset of a 1-based row and column (in characters).
fn document_offset(xml: &str, row: u32, col: u32) -> usize {
    let mut lines = xml.split_inclusive('\n');
    let before: usize = lines
        .by_ref()
        .take(row.saturating_sub(1) as usize)
        .map(str::len)
        .sum();
    let within = lines.next().map_or(0, |line| {
        line.char_indices()
            .nth(col.saturating_sub(1) as usize)
            .map_or(line.len(), |(i, _)| i)
    });
    before + within
}

fn element(node: roxmltree::Node<'_, '_>, depth: usize) -> Result<Element, XmlError> {
    if depth > MAX_DEPTH {
        return Err(XmlError {
            at: node.range().start,
            problem: format!("nesting deeper than {MAX_DEPTH}"),
        });
    }
    let mut text = String::new();
    let mut children = Vec::new();
    for child in node.children() {
        if child.is_element() {
            children.push(element(child, depth + 1)?);
        } else if child.is_text()
            && let Some(part) = child.text()
        {
            text.push_str(part);
        }
    }
    Ok(Element {
        name: node.tag_name().name().to_owned(),
        text: text.trim().to_owned(),
        children,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn tags_whose_name_is_not_an_xml_name_are_refused() {
        // Found by the route53_xml fuzz target against the hand-written reader.
        let crash = "<source,e////\n\0\0\0\0\0\0\0////////////////////>ax.e";
        assert!(parse(crash).is_err());
        assert!(parse("<a,b/>").is_err());
        assert!(parse("<1a/>").is_err());
        let ok = parse("<Some-Name_1.x/>").unwrap();
        assert_eq!(parse(&ok.to_xml()).unwrap(), ok);
    }

    #[test]
    fn reads_a_route53_answer_with_entities_and_namespaces() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <ResourceRecordSets>
    <ResourceRecordSet>
      <Name>app.example.com.</Name><Type>TXT</Type><TTL>300</TTL>
      <ResourceRecords><ResourceRecord><Value>&quot;heritage=neutral&quot; &#34;x&#x22;</Value></ResourceRecord></ResourceRecords>
    </ResourceRecordSet>
    <!-- a comment -->
    <r53:Empty xmlns:r53="urn:example"/>
  </ResourceRecordSets>
  <IsTruncated>false</IsTruncated><Note><![CDATA[<raw> & text]]></Note>
</ListResourceRecordSetsResponse>"#;
        let root = parse(xml).expect("valid");
        assert_eq!(root.name, "ListResourceRecordSetsResponse");
        let sets = root.child("ResourceRecordSets").expect("sets");
        let set = sets.child("ResourceRecordSet").expect("set");
        assert_eq!(set.text_of("TTL"), Some("300"));
        let value = set
            .child("ResourceRecords")
            .and_then(|r| r.child("ResourceRecord"))
            .and_then(|r| r.text_of("Value"));
        assert_eq!(value, Some("\"heritage=neutral\" \"x\""));
        assert!(sets.child("Empty").is_some());
        assert_eq!(root.text_of("IsTruncated"), Some("false"));
        assert_eq!(root.text_of("Note"), Some("<raw> & text"));
    }

    #[test]
    fn bad_documents_are_errors_not_panics() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "</a>",
            "<a>&bogus;</a>",
            "<a>&amp</a>",
            "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            "<a></a><b></b>",
            "text<a></a>",
            "<a><![CDATA[x</a>",
            "<>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn written_elements_read_back() {
        let element = Element::new("Change")
            .with(Element::leaf("Action", "DELETE"))
            .with(Element::leaf("Value", "\"a<b>&'c'\""));
        let xml = element.to_xml();
        assert_eq!(
            xml,
            "<Change><Action>DELETE</Action><Value>&quot;a&lt;b&gt;&amp;&apos;c&apos;&quot;</Value></Change>"
        );
        assert_eq!(parse(&xml).expect("valid"), element);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_input_is_read_or_refused_without_panicking(input in ".{0,200}") {
            let _ = parse(&input);
        }

        #[test]
        fn any_xml_text_round_trips(text in "[^\\s\\p{Cc}\\x{FFFE}\\x{FFFF}]{0,40}") {
            let element = Element::new("a").with(Element::leaf("b", text.clone()));
            let back = parse(&element.to_xml()).expect("valid");
            prop_assert_eq!(back.text_of("b"), Some(text.as_str()));
        }
    }
}
