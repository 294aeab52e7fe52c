//! RTT and error rate of the node's service as nginx saw them: the access
//! log (format [`super::nginx::LOG_FORMAT`]) is read from where the previous
//! read stopped, and the requests since then are summarised.
//!
//! [`parse_line`] and [`summarise`] are pure; [`AccessLogTail`] reads the file
//! and copes with truncation and rotation. It must not judge the node: a
//! summary is a measurement, the control plane decides.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::probe::ProbeSummary;

/// At most this much of the log is read per heartbeat (the newest part).
const MAX_READ: u64 = 8 << 20;
/// Once read this far, the log is truncated in place (nginx appends with
/// `O_APPEND`, so it carries on at the new end): the agent is its only reader.
pub const TRUNCATE_AFTER: u64 = 64 << 20;

/// One logged request.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LoggedRequest {
    pub status: u16,
    pub request_time_ms: f64,
}

/// A line of the access log; `None` for a line in another format.
pub fn parse_line(line: &str) -> Option<LoggedRequest> {
    let mut fields = line.split_whitespace();
    let _msec: f64 = fields.next()?.parse().ok()?;
    let status: u16 = fields.next()?.parse().ok()?;
    let seconds: f64 = fields.next()?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0 && (100..=599).contains(&status)).then_some(
        LoggedRequest {
            status,
            request_time_ms: seconds * 1000.0,
        },
    )
}

/// The median request time and the share of 5xx answers; `None` when no
/// request was logged. nginx's own 499 (client went away) is not an error of
/// the service.
pub fn summarise(requests: &[LoggedRequest]) -> Option<ProbeSummary> {
    if requests.is_empty() {
        return None;
    }
    let mut times: Vec<f64> = requests.iter().map(|r| r.request_time_ms).collect();
    times.sort_by(f64::total_cmp);
    let middle = times.len() / 2;
    let median = if times.len() % 2 == 1 {
        times.get(middle).copied()
    } else {
        let low = times.get(middle.checked_sub(1)?).copied()?;
        times.get(middle).map(|high| f64::midpoint(low, *high))
    }?;
    let errors = requests.iter().filter(|r| r.status >= 500).count();
    #[allow(clippy::cast_precision_loss)]
    let error_rate = errors as f64 / requests.len() as f64;
    Some(ProbeSummary {
        rtt_ms: median,
        error_rate,
    })
}

/// Reads what nginx appended to its access log since the last call.
#[derive(Debug)]
pub struct AccessLogTail {
    path: PathBuf,
    offset: u64,
    /// A partial last line kept for the next read.
    carry: String,
    truncate_after: u64,
}

impl AccessLogTail {
    /// Starts at the current end of the log: history before the agent does
    /// not count.
    pub fn new(path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        AccessLogTail {
            path,
            offset,
            carry: String::new(),
            truncate_after: TRUNCATE_AFTER,
        }
    }

    /// Truncates the log once `limit` bytes have been read.
    #[must_use]
    pub fn truncating_after(mut self, limit: u64) -> Self {
        self.truncate_after = limit;
        self
    }

    /// The requests logged since the previous call.
    pub fn read_new(&mut self) -> Vec<LoggedRequest> {
        let Ok(mut file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
        else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.carry.clear();
        }
        let start = self.offset.max(len.saturating_sub(MAX_READ));
        if start > self.offset {
            self.carry.clear();
        }
        if file.seek(SeekFrom::Start(start)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if (&mut file)
            .take(len.saturating_sub(start))
            .read_to_end(&mut bytes)
            .is_err()
        {
            return Vec::new();
        }
        self.offset = start.saturating_add(u64::try_from(bytes.len()).unwrap_or(0));
        let truncated = self.offset >= self.truncate_after && file.set_len(0).is_ok();
        if truncated {
            self.offset = 0;
        }
        let mut text = std::mem::take(&mut self.carry);
        text.push_str(&String::from_utf8_lossy(&bytes));
        let complete = text.rfind('\n').map_or(0, |i| i.saturating_add(1));
        self.carry = if truncated {
            String::new()
        } else {
            text.get(complete..).unwrap_or_default().to_owned()
        };
        text.get(..complete)
            .unwrap_or_default()
            .lines()
            .filter_map(parse_line)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_the_agents_format_parse_and_others_are_skipped() {
        assert_eq!(
            parse_line("1700000000.123 200 0.004 127.0.0.1:18080"),
            Some(LoggedRequest {
                status: 200,
                request_time_ms: 4.0
            })
        );
        assert_eq!(
            parse_line("1700000000.123 502 0.000 -").map(|r| r.status),
            Some(502)
        );
        assert_eq!(parse_line("127.0.0.1 - - [date] \"GET /\" 200"), None);
        assert_eq!(parse_line("1700000000.1 999 0.1 -"), None);
        assert_eq!(parse_line("1700000000.1 200 -1 -"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn the_summary_is_the_median_time_and_the_share_of_5xx() {
        let r = |status, ms| LoggedRequest {
            status,
            request_time_ms: ms,
        };
        let summary = summarise(&[r(200, 3.0), r(502, 0.0), r(200, 9.0), r(404, 5.0)]).unwrap();
        assert_eq!(summary.rtt_ms, 4.0);
        assert_eq!(summary.error_rate, 0.25);
        let summary = summarise(&[r(499, 1.0), r(200, 2.0), r(504, 30.0)]).unwrap();
        assert_eq!(summary.rtt_ms, 2.0);
        assert!((summary.error_rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(summarise(&[]), None);
    }

    #[test]
    fn the_tail_reads_only_new_complete_lines_and_survives_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "1.0 200 0.001 -\n").unwrap();
        let mut tail = AccessLogTail::new(path.clone());
        assert!(
            tail.read_new().is_empty(),
            "history before the agent is skipped"
        );
        let append = |text: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append("2.0 500 0.002 -\n3.0 200 0.0");
        let first = tail.read_new();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].status, 500);
        append("03 -\n");
        let second = tail.read_new();
        assert_eq!(second.len(), 1);
        assert!((second[0].request_time_ms - 3.0).abs() < 1e-9);
        std::fs::write(&path, "4.0 204 0.004 -\n").unwrap();
        let after_rotation = tail.read_new();
        assert_eq!(after_rotation.len(), 1);
        assert_eq!(after_rotation[0].status, 204);
        assert!(tail.read_new().is_empty());
    }

    #[test]
    fn a_log_read_past_the_limit_is_truncated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "").unwrap();
        let mut tail = AccessLogTail::new(path.clone()).truncating_after(40);
        std::fs::write(
            &path,
            "1.0 200 0.001 -
2.0 200 0.001 -
3.0 502 0.0",
        )
        .unwrap();
        assert_eq!(tail.read_new().len(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "truncated");
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"4.0 200 0.002 -\n").unwrap();
        }
        // The partial line before the cut is dropped with the cut, not glued on.
        let next = tail.read_new();
        assert_eq!(next.len(), 1, "{next:?}");
        assert_eq!(next[0].status, 200);
    }
}
