//! Metrics fed by a file in the Prometheus text exposition format, the way
//! node_exporter's textfile collector reads them, so that operators and tests
//! can set what the agent reports.
//!
//! Three metrics are read: [`CPU_METRIC`] (ratio 0..1), [`RTT_METRIC`]
//! (seconds) and [`ERROR_METRIC`] (ratio 0..1). Comments, `HELP`/`TYPE` lines,
//! labels, timestamps and other metrics are tolerated. Any malformed line, a
//! non-finite value or a second sample of one of the three makes the whole file
//! bad (it is probably being rewritten in place): the caller then falls back to
//! measured values. Finite values out of range are clamped and reported.
//!
//! Parsing is pure; [`read_metrics_file`] is the one function that reads.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const CPU_METRIC: &str = "neutral_node_cpu_ratio";
pub const RTT_METRIC: &str = "neutral_node_rtt_seconds";
pub const ERROR_METRIC: &str = "neutral_node_error_ratio";

/// Files larger than this are rejected rather than read.
pub const MAX_METRICS_FILE_BYTES: u64 = 1 << 20;

/// The metrics a file provided; `None` where it had no sample.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct FileMetrics {
    pub cpu: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub error_rate: Option<f64>,
}

/// A value moved into its valid range.
#[derive(Clone, Debug, PartialEq)]
pub struct Clamped {
    pub line: usize,
    pub metric: &'static str,
    pub given: f64,
    pub used: f64,
}

impl fmt::Display for Clamped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} {} is out of range; using {}",
            self.line, self.metric, self.given, self.used
        )
    }
}

/// A successfully parsed file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    pub metrics: FileMetrics,
    /// Values that were out of range, for the caller to warn about.
    pub clamped: Vec<Clamped>,
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("expected a metric name, found `{0}`")]
    BadMetricName(String),
    #[error("malformed labels: {0}")]
    BadLabels(&'static str),
    #[error("missing value after `{0}`")]
    MissingValue(String),
    #[error("value `{text}` of {metric} is not a number")]
    BadValue { metric: String, text: String },
    #[error("value of {metric} must be finite, found `{text}`")]
    NotFinite { metric: String, text: String },
    #[error("timestamp `{0}` is not an integer")]
    BadTimestamp(String),
    #[error("unexpected text after the timestamp: `{0}`")]
    TrailingText(String),
    #[error("second sample of {metric} (the first is on line {first_line})")]
    Duplicate {
        metric: &'static str,
        first_line: usize,
    },
}

/// A line that made the file unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub problem: Problem,
}

/// Why a metrics file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MetricsFileError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: larger than {MAX_METRICS_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{}:{}: {}", path.display(), error.line, error.problem)]
    Parse { path: PathBuf, error: ParseError },
}

/// Reads and parses a metrics file.
pub fn read_metrics_file(path: &Path) -> Result<Parsed, MetricsFileError> {
    let read_error = |source| MetricsFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_METRICS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_METRICS_FILE_BYTES {
        return Err(MetricsFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| MetricsFileError::NotUtf8 {
        path: path.to_owned(),
    })?;
    parse(&text).map_err(|error| MetricsFileError::Parse {
        path: path.to_owned(),
        error,
    })
}

/// Parses the text of a metrics file.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed::default();
    let mut seen: [Option<usize>; 3] = [None; 3];
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let fail = |problem| ParseError { line, problem };
        let Some((name, value)) = parse_line(raw).map_err(fail)? else {
            continue;
        };
        let (slot, metric) = match name {
            CPU_METRIC => (0, CPU_METRIC),
            RTT_METRIC => (1, RTT_METRIC),
            ERROR_METRIC => (2, ERROR_METRIC),
            _ => continue,
        };
        if let Some(first_line) = seen.get(slot).copied().flatten() {
            return Err(fail(Problem::Duplicate { metric, first_line }));
        }
        if let Some(entry) = seen.get_mut(slot) {
            *entry = Some(line);
        }
        let (low, high) = if metric == RTT_METRIC {
            (0.0, f64::MAX)
        } else {
            (0.0, 1.0)
        };
        let used = value.clamp(low, high);
        if used != value {
            parsed.clamped.push(Clamped {
                line,
                metric,
                given: value,
                used,
            });
        }
        match metric {
            CPU_METRIC => parsed.metrics.cpu = Some(used),
            RTT_METRIC => parsed.metrics.rtt_ms = Some((used * 1000.0).min(f64::MAX)),
            _ => parsed.metrics.error_rate = Some(used),
        }
    }
    Ok(parsed)
}

/// One line: `None` for blank lines and comments, else the sample's metric
/// name and finite value (labels and timestamp are checked, then dropped).
fn parse_line(raw: &str) -> Result<Option<(&str, f64)>, Problem> {
    let line = raw.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    let (name, mut rest) = line.split_at(name_end);
    if name.is_empty() {
        return Err(Problem::BadMetricName(excerpt(line)));
    }
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = skip_labels(after_brace)?;
    } else if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(Problem::BadMetricName(excerpt(line)));
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let text = fields
        .next()
        .ok_or_else(|| Problem::MissingValue(excerpt(name)))?;
    let value: f64 = text.parse().map_err(|_| Problem::BadValue {
        metric: excerpt(name),
        text: excerpt(text),
    })?;
    if !value.is_finite() {
        return Err(Problem::NotFinite {
            metric: excerpt(name),
            text: excerpt(text),
        });
    }
    if let Some(timestamp) = fields.next()
        && timestamp.parse::<i64>().is_err()
    {
        return Err(Problem::BadTimestamp(excerpt(timestamp)));
    }
    if let Some(extra) = fields.next() {
        return Err(Problem::TrailingText(excerpt(extra)));
    }
    Ok(Some((name, value)))
}

/// Skips `name="value", ...}` and returns what follows the closing brace.
fn skip_labels(text: &str) -> Result<&str, Problem> {
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = rest
            .char_indices()
            .find(|&(i, c)| c == ':' || !is_name_char(c, i == 0))
            .map_or(rest.len(), |(i, _)| i);
        if name_end == 0 {
            return Err(Problem::BadLabels("expected a label name"));
        }
        rest = rest
            .get(name_end..)
            .unwrap_or_default()
            .trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .ok_or(Problem::BadLabels("expected `=` after the label name"))?
            .trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('"')
            .ok_or(Problem::BadLabels("expected a quoted label value"))?;
        rest = skip_quoted(rest)?.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(Problem::BadLabels("expected `,` or `}` after a label"));
        }
    }
}

/// Skips a label value up to its closing quote, honouring `\\`, `\"`, `\n`.
fn skip_quoted(text: &str) -> Result<&str, Problem> {
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '\\' | '"' | 'n')) => {}
                _ => return Err(Problem::BadLabels("bad escape in a label value")),
            },
            '"' => return Ok(text.get(i + 1..).unwrap_or_default()),
            _ => {}
        }
    }
    Err(Problem::BadLabels("unterminated label value"))
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

/// A bounded piece of input for an error message.
fn excerpt(text: &str) -> String {
    const LIMIT: usize = 60;
    let mut out: String = text.chars().take(LIMIT).collect();
    if text.chars().nth(LIMIT).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(text: &str) -> FileMetrics {
        parse(text).unwrap().metrics
    }

    fn problem(text: &str) -> ParseError {
        parse(text).unwrap_err()
    }

    #[test]
    fn textfile_collector_output_with_help_type_and_labels_parses() {
        let text = "\
# HELP neutral_node_cpu_ratio CPU utilisation of the node.
# TYPE neutral_node_cpu_ratio gauge
neutral_node_cpu_ratio 0.82
# TYPE neutral_node_rtt_seconds gauge
neutral_node_rtt_seconds{service=\"web\",colour=\"blue\"} 0.0031 1700000000000

neutral_node_error_ratio{path=\"/a,}\\\"b\"}\t0.05
node_textfile_scrape_error 0
";
        assert_eq!(
            metrics(text),
            FileMetrics {
                cpu: Some(0.82),
                rtt_ms: Some(3.1),
                error_rate: Some(0.05),
            }
        );
    }

    #[test]
    fn rtt_is_converted_from_seconds_to_milliseconds() {
        assert_eq!(
            metrics("neutral_node_rtt_seconds 0.25\n").rtt_ms,
            Some(250.0)
        );
        assert_eq!(metrics("neutral_node_rtt_seconds 2e-3\n").rtt_ms, Some(2.0));
    }

    #[test]
    fn missing_metrics_stay_unknown_and_empty_files_are_fine() {
        assert_eq!(metrics(""), FileMetrics::default());
        assert_eq!(metrics("# only a comment\n\n"), FileMetrics::default());
        let only_cpu = metrics("neutral_node_cpu_ratio 0.1");
        assert_eq!(only_cpu.cpu, Some(0.1));
        assert_eq!((only_cpu.rtt_ms, only_cpu.error_rate), (None, None));
    }

    #[test]
    fn out_of_range_values_are_clamped_and_reported() {
        let parsed = parse(
            "neutral_node_cpu_ratio 1.5\nneutral_node_error_ratio -0.2\nneutral_node_rtt_seconds -1\n",
        )
        .unwrap();
        assert_eq!(
            parsed.metrics,
            FileMetrics {
                cpu: Some(1.0),
                rtt_ms: Some(0.0),
                error_rate: Some(0.0),
            }
        );
        let lines: Vec<String> = parsed.clamped.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "line 1: neutral_node_cpu_ratio 1.5 is out of range; using 1",
                "line 2: neutral_node_error_ratio -0.2 is out of range; using 0",
                "line 3: neutral_node_rtt_seconds -1 is out of range; using 0",
            ]
        );
    }

    #[test]
    fn non_finite_values_make_the_file_bad() {
        for value in ["NaN", "+Inf", "-Inf", "inf"] {
            let err = problem(&format!("neutral_node_cpu_ratio {value}\n"));
            assert_eq!(err.line, 1);
            assert!(
                matches!(err.problem, Problem::NotFinite { .. }),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn malformed_lines_are_reported_with_their_line_number() {
        let cases = [
            (
                "neutral_node_cpu_ratio\n",
                "line 1: missing value after `neutral_node_cpu_ratio`",
            ),
            (
                "# ok\nneutral_node_cpu_ratio high\n",
                "line 2: value `high` of neutral_node_cpu_ratio is not a number",
            ),
            (
                "\n\n{x=\"1\"} 3\n",
                "line 3: expected a metric name, found `{x=\"1\"} 3`",
            ),
            (
                "neutral_node_cpu_ratio{a=1} 0.3\n",
                "line 1: malformed labels: expected a quoted label value",
            ),
            (
                "neutral_node_cpu_ratio{a=\"1\" 0.3\n",
                "line 1: malformed labels: expected `,` or `}` after a label",
            ),
            (
                "neutral_node_cpu_ratio{a=\"1} 0.3\n",
                "line 1: malformed labels: unterminated label value",
            ),
            (
                "neutral_node_cpu_ratio 0.3 soon\n",
                "line 1: timestamp `soon` is not an integer",
            ),
            (
                "neutral_node_cpu_ratio 0.3 17 extra\n",
                "line 1: unexpected text after the timestamp: `extra`",
            ),
            (
                "neutral_node_cpu_ratio-x 0.3\n",
                "line 1: expected a metric name, found `neutral_node_cpu_ratio-x 0.3`",
            ),
            (
                "neutral_node_cpu_ratio 0.3\nneutral_node_cpu_ratio{x=\"y\"} 0.4\n",
                "line 2: second sample of neutral_node_cpu_ratio (the first is on line 1)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(problem(text).to_string(), expected, "{text:?}");
        }
    }

    #[test]
    fn malformed_lines_of_other_metrics_still_make_the_file_bad() {
        let err = problem("neutral_node_cpu_ratio 0.3\nsomething else entirely\n");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn long_garbage_is_cut_in_messages() {
        let line = "x".repeat(10_000) + " y";
        let message = problem(&line).to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn hostile_input_never_panics() {
        let pieces = [
            "neutral_node_cpu_ratio",
            "{",
            "}",
            "\"",
            "\\",
            "=",
            ",",
            " ",
            "\t",
            "0.5",
            "é",
            "\n",
            "a",
            "#",
            "1e309",
            "-",
            "\r",
        ];
        // Every 3-piece combination: 4913 inputs.
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let _ = parse(&format!("{a}{b}{c}"));
                    let _ = parse(&format!("neutral_node_error_ratio{{{a}{b}{c} 0.1"));
                }
            }
        }
    }

    #[test]
    fn reading_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("neutral.prom");
        std::fs::write(
            &path,
            "neutral_node_cpu_ratio 0.5\nneutral_node_rtt_seconds ?\n",
        )
        .unwrap();
        let err = read_metrics_file(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: value `?` of neutral_node_rtt_seconds is not a number",
                path.display()
            )
        );
        std::fs::write(&path, b"neutral_node_cpu_ratio \xff\n").unwrap();
        assert!(matches!(
            read_metrics_file(&path),
            Err(MetricsFileError::NotUtf8 { .. })
        ));
        let big = vec![b'#'; usize::try_from(MAX_METRICS_FILE_BYTES).unwrap() + 1];
        std::fs::write(&path, big).unwrap();
        assert!(matches!(
            read_metrics_file(&path),
            Err(MetricsFileError::TooLarge { .. })
        ));
        let missing = dir.path().join("missing.prom");
        assert!(matches!(
            read_metrics_file(&missing),
            Err(MetricsFileError::Read { .. })
        ));
        std::fs::write(&path, "neutral_node_error_ratio 0.25\n").unwrap();
        assert_eq!(
            read_metrics_file(&path).unwrap().metrics.error_rate,
            Some(0.25)
        );
    }
}
