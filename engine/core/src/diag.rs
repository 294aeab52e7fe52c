//! Diagnostics: one problem found in a file, with its place and severity.
//!
//! Every check in the core reports through [`Diagnostic`], and every check
//! collects all of its findings instead of stopping at the first. This module
//! owns the type, its `path:line:col: severity: message` rendering and the
//! mapping from byte offsets to 1-based lines and columns. It must not decide
//! what is wrong with a file; the checks do.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A problem at a place in a repository file. `line` and `col` are 1-based;
/// `col` counts characters, not bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    pub path: String,
    pub line: u32,
    pub col: u32,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.into(),
            line: pos.line,
            col: pos.col,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    pub fn warning(path: impl Into<String>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(path, pos, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.path,
            self.line,
            self.col,
            self.severity.as_str(),
            self.message
        )
    }
}

/// A 1-based line and column.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// The start of a file.
    pub const START: Pos = Pos { line: 1, col: 1 };

    pub fn new(line: u32, col: u32) -> Self {
        Pos { line, col }
    }

    /// The line and column of byte `offset` in `text`. Offsets past the end
    /// map to the end; offsets inside a multi-byte character map to that
    /// character.
    pub fn of_offset(text: &str, offset: usize) -> Pos {
        let offset = offset.min(text.len());
        let mut line: u32 = 1;
        let mut col: u32 = 1;
        for (i, c) in text.char_indices() {
            if i >= offset {
                break;
            }
            if c == '\n' {
                line = line.saturating_add(1);
                col = 1;
            } else {
                col = col.saturating_add(1);
            }
        }
        Pos { line, col }
    }
}

/// Whether any diagnostic in `diagnostics` is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_lines_and_character_columns() {
        let text = "ab\nçd\n";
        assert_eq!(Pos::of_offset(text, 0), Pos::new(1, 1));
        assert_eq!(Pos::of_offset(text, 1), Pos::new(1, 2));
        assert_eq!(Pos::of_offset(text, 3), Pos::new(2, 1));
        // `d` follows the two-byte `ç`.
        assert_eq!(Pos::of_offset(text, 5), Pos::new(2, 2));
        assert_eq!(Pos::of_offset(text, 999), Pos::new(3, 1));
    }

    #[test]
    fn diagnostics_render_as_path_line_col_severity_message() {
        let d = Diagnostic::warning("a/b.yaml", Pos::new(3, 7), "odd");
        assert_eq!(d.to_string(), "a/b.yaml:3:7: warning: odd");
    }
}
