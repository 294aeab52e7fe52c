//! How often one kind of warning may be logged: at most once per period,
//! with the number held back since the last line. The API's and the DNS
//! server's connection limits both log through it, so a flood of refusals
//! makes a few lines, not thousands. Pure: the caller passes the time; this
//! module logs nothing itself.

use std::time::{Duration, Instant};

/// Rate-limits one kind of log line.
#[derive(Debug)]
pub struct LogGate {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LogGate {
    /// A gate letting one line through per `every`.
    pub fn new(every: Duration) -> LogGate {
        LogGate {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(held back since the last line)` when a line may be logged at
    /// `now`; else `None`, and the line counts as held back.
    pub fn pass(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held_back = self.held_back.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}
