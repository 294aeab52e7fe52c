//! The little XML that Route53's REST API speaks: a reader that turns a
//! response into a tree of elements, and a writer for request bodies.
//!
//! This module owns only the syntax. It reads elements, text, the five
//! predefined entities, character references and CDATA; it skips the XML
//! declaration, comments and processing instructions, drops namespace
//! prefixes and attributes (Route53's answers carry only `xmlns`), and
//! refuses a `DOCTYPE` (so no entity can expand) and nesting deeper than
//! [`MAX_DEPTH`]. It never panics on input.

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

fn fail<T>(at: usize, problem: impl Into<String>) -> Result<T, XmlError> {
    Err(XmlError {
        at,
        problem: problem.into(),
    })
}

/// The text of one entity or character reference (`amp`, `#38`, `#x26`).
fn entity(name: &str, at: usize) -> Result<char, XmlError> {
    let code = match name {
        "amp" => return Ok('&'),
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "quot" => return Ok('"'),
        "apos" => return Ok('\''),
        _ => match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => name.strip_prefix('#').and_then(|d| d.parse().ok()),
        },
    };
    match code.and_then(char::from_u32) {
        Some(c) => Ok(c),
        None => fail(at, format!("unknown entity `&{name};`")),
    }
}

/// Appends `raw` text with its references resolved.
fn push_text(out: &mut String, raw: &str, at: usize) -> Result<(), XmlError> {
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let after = rest.get(amp + 1..).unwrap_or("");
        let Some(semi) = after.find(';') else {
            return fail(at, "`&` without `;`");
        };
        out.push(entity(after.get(..semi).unwrap_or(""), at)?);
        rest = after.get(semi + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(())
}

/// An XML element name (after its prefix): a letter or `_`, then letters,
/// digits, `-`, `.` or `_`. A tag such as `<a,b//>` is refused rather than
/// read as an element its writer could not write back.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

fn local_name(tag: &str) -> &str {
    let name = tag.split(|c: char| c.is_whitespace()).next().unwrap_or("");
    name.rsplit(':').next().unwrap_or(name)
}

/// Reads a document into its root element.
pub fn parse(xml: &str) -> Result<Element, XmlError> {
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut at = 0;
    while at < xml.len() {
        let rest = xml.get(at..).unwrap_or("");
        let Some(open) = rest.find('<') else {
            if !rest.trim().is_empty() && !stack.is_empty() {
                return fail(at, "text after the last tag");
            }
            break;
        };
        if let Some(current) = stack.last_mut() {
            push_text(&mut current.text, rest.get(..open).unwrap_or(""), at)?;
        } else if !rest.get(..open).unwrap_or("").trim().is_empty() {
            return fail(at, "text outside the root element");
        }
        at += open;
        let rest = xml.get(at..).unwrap_or("");
        let skip_to = |end: &str, what: &str| -> Result<usize, XmlError> {
            match rest.find(end) {
                Some(i) => Ok(at + i + end.len()),
                None => fail(at, format!("unterminated {what}")),
            }
        };
        if rest.starts_with("<?") {
            at = skip_to("?>", "processing instruction")?;
        } else if rest.starts_with("<!--") {
            at = skip_to("-->", "comment")?;
        } else if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            let Some(end) = cdata.find("]]>") else {
                return fail(at, "unterminated CDATA");
            };
            match stack.last_mut() {
                Some(current) => current.text.push_str(cdata.get(..end).unwrap_or("")),
                None => return fail(at, "CDATA outside the root element"),
            }
            at += "<![CDATA[".len() + end + 3;
        } else if rest.starts_with("<!") {
            return fail(at, "DOCTYPE and declarations are not accepted");
        } else {
            let Some(close) = rest.find('>') else {
                return fail(at, "unterminated tag");
            };
            let tag = rest.get(1..close).unwrap_or("");
            at += close + 1;
            if let Some(name) = tag.strip_prefix('/') {
                let Some(mut done) = stack.pop() else {
                    return fail(at, format!("`</{name}>` closes nothing"));
                };
                if local_name(name.trim()) != done.name {
                    return fail(at, format!("`</{name}>` closes `<{}>`", done.name));
                }
                done.text = done.text.trim().to_owned();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None if root.is_none() => root = Some(done),
                    None => return fail(at, "a second root element"),
                }
            } else {
                let self_closing = tag.ends_with('/');
                let name = local_name(tag.trim_end_matches('/').trim()).to_owned();
                if name.is_empty() {
                    return fail(at, "a tag without a name");
                }
                if !is_name(&name) {
                    return fail(
                        at,
                        format!("`{}` is not an element name", name.escape_debug()),
                    );
                }
                if stack.len() >= MAX_DEPTH {
                    return fail(at, format!("nested deeper than {MAX_DEPTH}"));
                }
                let element = Element::new(&name);
                if self_closing {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None if root.is_none() => root = Some(element),
                        None => return fail(at, "a second root element"),
                    }
                } else {
                    stack.push(element);
                }
            }
        }
    }
    if let Some(open) = stack.last() {
        return fail(xml.len(), format!("`<{}>` is never closed", open.name));
    }
    match root {
        Some(root) => Ok(root),
        None => fail(0, "no root element"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Found by `scripts/fuzz` (target route53_xml): a self-closing tag whose
    /// name held `,` and `/` was read, and written back as XML that did not
    /// read again.
    #[test]
    fn tags_whose_name_is_not_an_xml_name_are_refused() {
        let crash = "<source,e////\n\0\0\0\0\0\0\0////////////////////>ax.e";
        let error = parse(crash).unwrap_err();
        assert!(error.problem.contains("is not an element name"), "{error}");
        assert!(parse("<a,b/>").is_err());
        assert!(parse("<1a/>").is_err());
        let ok = parse("<r53:Some-Name_1.x/>").unwrap();
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
    <r53:Empty/>
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
        fn any_text_round_trips(text in "[^\\s]{0,40}") {
            let element = Element::new("a").with(Element::leaf("b", text.clone()));
            let back = parse(&element.to_xml()).expect("valid");
            prop_assert_eq!(back.text_of("b"), Some(text.as_str()));
        }
    }
}
