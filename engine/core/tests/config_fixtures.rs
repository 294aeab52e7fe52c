//! Snapshot tests of `config::load` over a corpus of repository trees, one
//! file per case under `tests/fixtures/config/*.case`.
//!
//! A case file holds a description, the whole tree and the expected
//! diagnostics:
//!
//! ```text
//! # min_nodes above max_nodes is reported at min_nodes
//! === platform-config/regions/jp.yaml
//! name: jp
//! ...
//! === platform-config/evil.yaml (symlink) -> ../../etc/passwd
//! === platform-config/gtm/x.yaml (hex) 61 3a ff fe
//! === platform-config/gtm/big.yaml (oversized) 52428800
//! === platform-config/gtm/deep.yaml (generate) repeat 10000 "[" + "1" + repeat 10000 "]"
//! === expected
//! platform-config/regions/jp.yaml:3:12: error: ...
//! ```
//!
//! A plain `=== <path>` header is followed by the file's lines (each ends with
//! a newline). Generators build contents that cannot be written literally:
//! parts joined by ` + `, each `"text"` (escapes `\n`, `\t`, `\\`, `\"`),
//! `repeat N "text"`, or `nest N "text"` (N lines, line i indented by i
//! spaces). `UPDATE_EXPECT=1 cargo test` rewrites the expected sections.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use neutral_core::config::{FileContent, RepoFile, load};

/// Every case must load well within this, even in a debug build.
const TIME_LIMIT: Duration = Duration::from_secs(1);
const MIN_CASES: usize = 35;

struct Case {
    /// The text before the expected section, kept verbatim for rewrites.
    head: String,
    files: Vec<RepoFile>,
    expected: String,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn unescape(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or_else(|| format!("expected a quoted string, found {quoted}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            other => return Err(format!("unknown escape \\{other:?} in {quoted}")),
        }
    }
    Ok(out)
}

fn generate(spec: &str) -> Result<Vec<u8>, String> {
    let mut out = String::new();
    for part in spec.split(" + ") {
        let part = part.trim();
        if let Some(rest) = part.strip_prefix("repeat ") {
            let (count, text) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad repeat: {part}"))?;
            let count: usize = count.parse().map_err(|_| format!("bad count: {part}"))?;
            out.push_str(&unescape(text)?.repeat(count));
        } else if let Some(rest) = part.strip_prefix("nest ") {
            let (count, text) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad nest: {part}"))?;
            let count: usize = count.parse().map_err(|_| format!("bad count: {part}"))?;
            let text = unescape(text)?;
            for depth in 0..count {
                out.push_str(&" ".repeat(depth));
                out.push_str(&text);
                out.push('\n');
            }
        } else {
            out.push_str(&unescape(part)?);
        }
    }
    Ok(out.into_bytes())
}

fn hex(spec: &str) -> Result<Vec<u8>, String> {
    spec.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).map_err(|_| format!("bad hex byte {byte}")))
        .collect()
}

/// Parses a `=== ...` file header into its path and, for special files, the
/// content (plain files get theirs from the following lines).
fn header(line: &str) -> Result<(String, Option<FileContent>), String> {
    let rest = line.trim_start_matches("=== ").trim();
    let Some((path, special)) = rest.split_once(" (") else {
        return Ok((rest.to_owned(), None));
    };
    let (kind, argument) = special
        .split_once(')')
        .ok_or_else(|| format!("unclosed ( in header: {line}"))?;
    let argument = argument.trim();
    let content = match kind {
        "symlink" => FileContent::Symlink(
            argument
                .strip_prefix("-> ")
                .ok_or_else(|| format!("symlink header needs `-> target`: {line}"))?
                .to_owned(),
        ),
        "hex" => FileContent::Bytes(hex(argument)?),
        "oversized" => FileContent::Oversized(
            argument
                .parse()
                .map_err(|_| format!("bad size in header: {line}"))?,
        ),
        "generate" => FileContent::Bytes(generate(argument)?),
        other => return Err(format!("unknown file kind ({other}) in: {line}")),
    };
    Ok((path.to_owned(), Some(content)))
}

fn parse_case(text: &str) -> Result<Case, String> {
    let (head, expected) = text
        .split_once("\n=== expected\n")
        .map(|(head, expected)| (head, Some(expected)))
        .or_else(|| {
            text.strip_suffix("\n=== expected")
                .map(|head| (head, Some("")))
        })
        .ok_or("missing `=== expected` section")?;
    let expected = expected.unwrap_or_default().to_owned();
    if !head.starts_with("# ") {
        return Err("a case starts with a `# description` line".into());
    }
    let mut files: Vec<RepoFile> = Vec::new();
    let mut current: Option<(String, String)> = None;
    let flush = |current: &mut Option<(String, String)>, files: &mut Vec<RepoFile>| {
        if let Some((path, body)) = current.take() {
            files.push(RepoFile {
                path,
                content: FileContent::Bytes(body.into_bytes()),
            });
        }
    };
    for line in head.lines() {
        if line.starts_with("=== ") {
            flush(&mut current, &mut files);
            let (path, content) = header(line)?;
            match content {
                Some(content) => files.push(RepoFile { path, content }),
                None => current = Some((path, String::new())),
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            return Err(format!("text before the first file: {line}"));
        }
    }
    flush(&mut current, &mut files);
    if files.is_empty() {
        return Err("a case needs at least one file".into());
    }
    Ok(Case {
        head: head.to_owned(),
        files,
        expected,
    })
}

#[test]
fn the_fixture_format_round_trips_special_files() {
    let case = parse_case(
        "# demo\n=== a/b.yaml\nx: 1\n\n=== a/c (hex) 61 ff\n=== a/d (symlink) -> ../e\n=== a/f (oversized) 7\n=== a/g (generate) \"{\" + repeat 2 \"[\" + nest 2 \"k:\"\n=== a/h\n=== expected\nsome line\n",
    )
    .unwrap();
    let contents: Vec<_> = case
        .files
        .iter()
        .map(|f| (f.path.as_str(), &f.content))
        .collect();
    assert_eq!(
        contents,
        vec![
            ("a/b.yaml", &FileContent::Bytes(b"x: 1\n\n".to_vec())),
            ("a/c", &FileContent::Bytes(vec![0x61, 0xff])),
            ("a/d", &FileContent::Symlink("../e".into())),
            ("a/f", &FileContent::Oversized(7)),
            ("a/g", &FileContent::Bytes(b"{[[k:\n k:\n".to_vec())),
            ("a/h", &FileContent::Bytes(Vec::new())),
        ]
    );
    assert_eq!(case.expected, "some line\n");
}

/// Peak resident memory of this process, where the OS tells.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn config_fixtures_match_their_expected_diagnostics() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures folder")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "case"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= MIN_CASES,
        "only {} cases; the corpus must hold at least {MIN_CASES}",
        paths.len()
    );
    let mut failures = String::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).expect("readable case");
        let case = match parse_case(&text) {
            Ok(case) => case,
            Err(error) => {
                writeln!(failures, "{name}: bad case file: {error}").unwrap();
                continue;
            }
        };
        let started = Instant::now();
        let loaded = load(&case.files);
        let elapsed = started.elapsed();
        if elapsed > TIME_LIMIT {
            writeln!(failures, "{name}: load took {elapsed:?}").unwrap();
        }
        let actual: String = loaded
            .diagnostics
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        if actual == case.expected {
            continue;
        }
        if update {
            let rewritten = format!("{}\n=== expected\n{actual}", case.head);
            std::fs::write(path, rewritten).expect("rewrite case");
        } else {
            writeln!(
                failures,
                "{name}: diagnostics differ\n--- expected\n{}--- actual\n{actual}",
                case.expected
            )
            .unwrap();
        }
    }
    // The peak includes the corpus itself (one case holds a 50 MB file).
    if let Some(peak) = peak_rss_bytes() {
        assert!(
            peak < 200 << 20,
            "peak memory {} MiB while loading the corpus",
            peak >> 20
        );
    }
    assert!(
        failures.is_empty(),
        "{failures}(run with UPDATE_EXPECT=1 to accept the actual output)"
    );
}
