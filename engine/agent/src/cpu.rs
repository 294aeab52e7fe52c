//! CPU utilisation from the Linux `/proc/stat` counters: parse the aggregate
//! `cpu` line into busy and total jiffies, and turn two readings into a ratio.
//!
//! Parsing and the delta are pure; [`read_proc_stat`] is the only IO here.

use std::path::Path;

/// Where the kernel publishes its CPU counters.
pub const PROC_STAT: &str = "/proc/stat";

/// Cumulative CPU time of the whole machine, in jiffies (USER_HZ ticks).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time not spent idle or waiting for IO.
    pub busy: u64,
    /// All accounted time: user, nice, system, idle, iowait, irq, softirq and
    /// steal. `guest` and `guest_nice` are already part of user and nice.
    pub total: u64,
}

/// Why `/proc/stat` could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum CpuStatError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no aggregate `cpu` line")]
    NoCpuLine,
    #[error("the `cpu` line has {found} counters, at least 4 are needed")]
    TooFewCounters { found: usize },
    #[error("counter {index} of the `cpu` line is not a number: `{text}`")]
    BadCounter { index: usize, text: String },
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Result<CpuTimes, CpuStatError> {
    let line = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some("cpu"))
        .ok_or(CpuStatError::NoCpuLine)?;
    let mut counters = [0u64; 8];
    let mut found = 0;
    for (index, field) in line.split_whitespace().skip(1).enumerate() {
        let value: u64 = field.parse().map_err(|_| CpuStatError::BadCounter {
            index: index + 1,
            text: field.chars().take(40).collect(),
        })?;
        if let Some(slot) = counters.get_mut(index) {
            *slot = value;
        }
        found = index + 1;
    }
    if found < 4 {
        return Err(CpuStatError::TooFewCounters { found });
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = counters;
    let total = [user, nice, system, idle, iowait, irq, softirq, steal]
        .into_iter()
        .fold(0u64, u64::saturating_add);
    let busy = total.saturating_sub(idle.saturating_add(iowait));
    Ok(CpuTimes { busy, total })
}

/// CPU utilisation between two readings, in `0..=1`; `None` when no time
/// passed between them or the counters went backwards (a reset).
pub fn utilisation(earlier: CpuTimes, later: CpuTimes) -> Option<f64> {
    if later.total < earlier.total || later.busy < earlier.busy {
        return None;
    }
    let total = later.total - earlier.total;
    if total == 0 {
        return None;
    }
    let busy = later.busy - earlier.busy;
    #[allow(clippy::cast_precision_loss)]
    let ratio = busy as f64 / total as f64;
    Some(ratio.clamp(0.0, 1.0))
}

/// Reads and parses a `/proc/stat`-format file (normally [`PROC_STAT`]).
pub fn read_proc_stat(path: &Path) -> Result<CpuTimes, CpuStatError> {
    let text = std::fs::read_to_string(path).map_err(|source| CpuStatError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_proc_stat(&text)
}

/// Keeps the previous reading so each call yields the utilisation since the
/// last one.
#[derive(Debug, Default)]
pub struct CpuMeter {
    previous: Option<CpuTimes>,
}

impl CpuMeter {
    /// Feeds a new reading; returns the utilisation since the previous one.
    pub fn observe(&mut self, now: CpuTimes) -> Option<f64> {
        let ratio = self.previous.and_then(|before| utilisation(before, now));
        self.previous = Some(now);
        ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
cpu  4705 356 584 3699 23 0 17 5 7 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0
intr 114930548 113199788 3 0 5 263 0 4 [... lots more numbers ...]
ctxt 1990473
";

    #[test]
    fn busy_excludes_idle_and_iowait_and_guest_is_not_counted_twice() {
        let times = parse_proc_stat(SAMPLE).unwrap();
        // user+nice+system+idle+iowait+irq+softirq+steal
        assert_eq!(times.total, 4705 + 356 + 584 + 3699 + 23 + 17 + 5);
        assert_eq!(times.busy, 4705 + 356 + 584 + 17 + 5);
    }

    #[test]
    fn old_kernels_with_four_counters_parse() {
        let times = parse_proc_stat("cpu 10 0 10 80\n").unwrap();
        assert_eq!(
            times,
            CpuTimes {
                busy: 20,
                total: 100
            }
        );
    }

    #[test]
    fn per_cpu_lines_are_not_mistaken_for_the_aggregate() {
        let err = parse_proc_stat("cpu0 1 2 3 4\n").unwrap_err();
        assert!(matches!(err, CpuStatError::NoCpuLine));
    }

    #[test]
    fn garbage_is_reported_with_the_counter() {
        let err = parse_proc_stat("cpu 1 2 x 4\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "counter 3 of the `cpu` line is not a number: `x`"
        );
        let err = parse_proc_stat("cpu 1 2\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the `cpu` line has 2 counters, at least 4 are needed"
        );
        assert!(parse_proc_stat("").is_err());
        let huge = format!("cpu {} 0 0 0\n", u64::MAX);
        let times = parse_proc_stat(&huge).unwrap();
        assert_eq!(times.total, u64::MAX);
    }

    #[test]
    fn utilisation_is_the_busy_share_of_elapsed_time() {
        let a = CpuTimes {
            busy: 100,
            total: 1000,
        };
        let b = CpuTimes {
            busy: 142,
            total: 1100,
        };
        assert_eq!(utilisation(a, b), Some(0.42));
        let idle = CpuTimes {
            busy: 100,
            total: 1200,
        };
        assert_eq!(utilisation(a, idle), Some(0.0));
        let saturated = CpuTimes {
            busy: 300,
            total: 1200,
        };
        assert_eq!(utilisation(a, saturated), Some(1.0));
    }

    #[test]
    fn utilisation_is_unknown_without_elapsed_time_or_after_a_reset() {
        let a = CpuTimes {
            busy: 100,
            total: 1000,
        };
        assert_eq!(utilisation(a, a), None);
        assert_eq!(utilisation(a, CpuTimes { busy: 5, total: 10 }), None);
        assert_eq!(
            utilisation(
                a,
                CpuTimes {
                    busy: 90,
                    total: 1100
                }
            ),
            None
        );
    }

    #[test]
    fn meter_reports_the_delta_since_the_previous_reading() {
        let mut meter = CpuMeter::default();
        assert_eq!(
            meter.observe(CpuTimes {
                busy: 0,
                total: 100
            }),
            None
        );
        assert_eq!(
            meter.observe(CpuTimes {
                busy: 50,
                total: 200
            }),
            Some(0.5)
        );
        assert_eq!(
            meter.observe(CpuTimes {
                busy: 50,
                total: 300
            }),
            Some(0.0)
        );
    }

    #[test]
    fn this_machine_has_a_readable_proc_stat() {
        let times = read_proc_stat(Path::new(PROC_STAT)).unwrap();
        assert!(times.total > 0 && times.busy <= times.total);
    }
}
