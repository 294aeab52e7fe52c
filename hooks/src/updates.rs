//! The ref updates git hands a `pre-receive` or `post-receive` hook on stdin,
//! one `<old> <new> <ref>` line each, and what the hooks do with each one.
//!
//! This module owns parsing those lines and deciding, per update, whether it
//! is checked: only branches the control plane follows are, and of those only
//! updates that leave the branch pointing at a commit. It must not read
//! objects or talk to anyone.

use std::fmt;

/// A 40 (SHA-1) or 64 (SHA-256) hex digit object name; all zeros means "no
/// object" (a ref created or deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectName(String);

impl ObjectName {
    fn parse(text: &str) -> Option<ObjectName> {
        let valid = matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| ObjectName(text.to_ascii_lowercase()))
    }

    /// Whether this is the all-zero name git uses for a missing side.
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 7 digits, as git abbreviates.
    pub fn short(&self) -> &str {
        self.0.get(..7).unwrap_or(&self.0)
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One line of hook input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: ObjectName,
    pub new: ObjectName,
    /// The full ref name, e.g. `refs/heads/main`.
    pub name: String,
}

/// A line git should never send.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: expected `<old> <new> <ref>`, got {text:?}")]
pub struct BadLine {
    pub line: usize,
    pub text: String,
}

/// Parses every non-empty line of `input`.
pub fn parse(input: &str) -> Result<Vec<RefUpdate>, BadLine> {
    input
        .lines()
        .enumerate()
        .filter(|(_, text)| !text.trim().is_empty())
        .map(|(index, text)| {
            let bad = || BadLine {
                line: index.saturating_add(1),
                text: text.chars().take(200).collect(),
            };
            let mut parts = text.split_whitespace();
            let (Some(old), Some(new), Some(name), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            Ok(RefUpdate {
                old: ObjectName::parse(old).ok_or_else(bad)?,
                new: ObjectName::parse(new).ok_or_else(bad)?,
                name: name.to_owned(),
            })
        })
        .collect()
}

/// What a hook does with one update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Not a followed branch (another branch, a tag, a note...): accepted
    /// without a look.
    Unrelated,
    /// A followed branch is deleted: nothing to validate.
    Delete,
    /// A followed branch moves to (or is created at) `new`; `old` is `None`
    /// for a new branch.
    Check {
        old: Option<ObjectName>,
        new: ObjectName,
    },
}

impl RefUpdate {
    /// The plan for this update when the control plane follows `branches`
    /// (short names such as `main`).
    pub fn plan(&self, branches: &[String]) -> Plan {
        let followed = self
            .name
            .strip_prefix("refs/heads/")
            .is_some_and(|branch| branches.iter().any(|b| b == branch));
        if !followed {
            Plan::Unrelated
        } else if self.new.is_zero() {
            Plan::Delete
        } else {
            Plan::Check {
                old: (!self.old.is_zero()).then(|| self.old.clone()),
                new: self.new.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: &str = "0000000000000000000000000000000000000000";
    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn update(old: &str, new: &str, name: &str) -> RefUpdate {
        parse(&format!("{old} {new} {name}\n")).unwrap().remove(0)
    }

    fn main_only() -> Vec<String> {
        vec!["main".to_owned()]
    }

    #[test]
    fn parses_every_line_and_skips_blank_ones() {
        let input = format!("{A} {B} refs/heads/main\n\n{ZERO} {A} refs/tags/v1\n");
        let updates = parse(&input).unwrap();
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].old.as_str(), A);
        assert_eq!(updates[0].new.short(), "2222222");
        assert_eq!(updates[1].name, "refs/tags/v1");
    }

    #[test]
    fn accepts_sha256_names() {
        let long = "a".repeat(64);
        let zero64 = "0".repeat(64);
        let updates = parse(&format!("{zero64} {long} refs/heads/main")).unwrap();
        assert!(updates[0].old.is_zero());
    }

    #[test]
    fn malformed_lines_name_their_number() {
        let err = parse(&format!("{A} {B} refs/heads/main\n{A} refs/heads/x\n")).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(parse(&format!("{A} {B} refs/heads/main extra")).is_err());
        assert!(parse(&format!("{A} xyz refs/heads/main")).is_err());
    }

    #[test]
    fn only_followed_branches_are_checked() {
        assert_eq!(
            update(A, B, "refs/heads/feature").plan(&main_only()),
            Plan::Unrelated
        );
        assert_eq!(
            update(A, B, "refs/tags/main").plan(&main_only()),
            Plan::Unrelated
        );
        assert_eq!(
            update(A, B, "refs/heads/main").plan(&main_only()),
            Plan::Check {
                old: ObjectName::parse(A),
                new: ObjectName::parse(B).unwrap()
            }
        );
        let several = vec!["main".to_owned(), "prod".to_owned()];
        assert!(matches!(
            update(A, B, "refs/heads/prod").plan(&several),
            Plan::Check { .. }
        ));
    }

    #[test]
    fn deletes_are_not_checked_and_new_branches_check_their_tip() {
        assert_eq!(
            update(A, ZERO, "refs/heads/main").plan(&main_only()),
            Plan::Delete
        );
        assert_eq!(
            update(ZERO, B, "refs/heads/main").plan(&main_only()),
            Plan::Check {
                old: None,
                new: ObjectName::parse(B).unwrap()
            }
        );
    }
}
