//! The arithmetic of the control-plane benchmarks in `tests/benches/`:
//! latency summaries, the pacing schedule of the load generator, the reading
//! of `/proc/<pid>` files, and the rule that decides when a dead node has
//! left DNS answers. Pure functions only, so they are unit-tested here; the
//! benches own every socket, process and clock.
//!
//! Definitions the reports use:
//! - A percentile is the nearest-rank one: the smallest sample such that at
//!   least p% of the samples are at or below it (p100 is the maximum).
//! - "Sustained" throughput is the number of requests answered with success
//!   during the measured window divided by the window's length.
//! - A dead address has left the answers at the first answer of the first
//!   run of `run` consecutive answers that do not contain it.

use std::time::Duration;

/// Latency percentiles of one run, from samples in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: usize,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
}

impl LatencySummary {
    /// Summarizes `samples` (sorted in place); `None` without samples.
    pub fn of(samples: &mut [u64]) -> Option<LatencySummary> {
        samples.sort_unstable();
        let count = samples.len();
        let total: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        let mean = total.checked_div(count as u128)?;
        Some(LatencySummary {
            count,
            p50_us: percentile(samples, 50.0)?,
            p90_us: percentile(samples, 90.0)?,
            p99_us: percentile(samples, 99.0)?,
            p999_us: percentile(samples, 99.9)?,
            max_us: *samples.last()?,
            mean_us: u64::try_from(mean).unwrap_or(u64::MAX),
        })
    }

    /// `p50 1.234 ms  p90 …  p99 …  p99.9 …  max …`
    pub fn millis_line(&self) -> String {
        format!(
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (mean {:.3} ms, n={})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            ms(self.mean_us),
            self.count
        )
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Nearest-rank percentile of `sorted` (ascending); `None` when empty or
/// `p` is outside 0..=100.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

/// Median and p90 (nearest rank) of durations, for the few-sample
/// detection runs.
pub fn median_p90(samples: &[Duration]) -> Option<(Duration, Duration)> {
    let mut micros: Vec<u64> = samples
        .iter()
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .collect();
    micros.sort_unstable();
    let median = percentile(&micros, 50.0)?;
    let p90 = percentile(&micros, 90.0)?;
    Some((Duration::from_micros(median), Duration::from_micros(p90)))
}

/// When the `index`-th request of `worker` (0-based, of `workers`) is due,
/// counted from the start of a run paced at `rate` requests per second: the
/// workers interleave so that together they send one request every
/// `1 / rate` seconds.
pub fn scheduled_offset(worker: u64, index: u64, workers: u64, rate: f64) -> Duration {
    let slot = index.saturating_mul(workers).saturating_add(worker);
    if rate <= 0.0 || !rate.is_finite() {
        return Duration::MAX;
    }
    Duration::from_secs_f64(slot as f64 / rate)
}

/// CPU time of a process as `/proc/<pid>/stat` reports it: user and system
/// clock ticks (fields 14 and 15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

impl CpuTicks {
    pub fn total(self) -> u64 {
        self.user.saturating_add(self.system)
    }
}

/// Parses the contents of `/proc/<pid>/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after the last
/// `)`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTicks> {
    let after = text.get(text.rfind(')')? + 1..)?;
    let mut fields = after.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let user = fields.nth(11)?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// The value in KiB of a `Key:   1234 kB` line of `/proc/<pid>/status`.
pub fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Cores used on average: CPU ticks spent over a wall-clock window.
pub fn cores_used(ticks: u64, ticks_per_second: u64, window: Duration) -> f64 {
    let seconds = window.as_secs_f64();
    if seconds <= 0.0 || ticks_per_second == 0 {
        return 0.0;
    }
    ticks as f64 / ticks_per_second as f64 / seconds
}

/// The index of the answer at which a dead address counts as gone: the first
/// of `run` consecutive answers without it (`present[i]` tells whether answer
/// `i` contained it). `None` while no such run has been seen.
pub fn exclusion_index(present: &[bool], run: usize) -> Option<usize> {
    let run = run.max(1);
    let mut absent_since = None;
    for (index, &seen) in present.iter().enumerate() {
        if seen {
            absent_since = None;
            continue;
        }
        let start = *absent_since.get_or_insert(index);
        if index + 1 - start >= run {
            return Some(start);
        }
    }
    None
}

/// `a / b` as a ratio for reports; `None` when `b` is zero.
pub fn ratio(a: Duration, b: Duration) -> Option<f64> {
    (!b.is_zero()).then(|| a.as_secs_f64() / b.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(50));
        assert_eq!(percentile(&sorted, 99.0), Some(99));
        assert_eq!(percentile(&sorted, 100.0), Some(100));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&sorted, 101.0), None);
    }

    #[test]
    fn latency_summary_sorts_and_averages() {
        let mut samples = vec![30, 10, 20, 40];
        let summary = LatencySummary::of(&mut samples).unwrap();
        assert_eq!(summary.count, 4);
        assert_eq!(summary.p50_us, 20);
        assert_eq!(summary.p99_us, 40);
        assert_eq!(summary.max_us, 40);
        assert_eq!(summary.mean_us, 25);
        assert!(LatencySummary::of(&mut []).is_none());
        assert!(summary.millis_line().starts_with("p50 0.020 ms"));
    }

    #[test]
    fn median_and_p90_of_ten_durations() {
        let samples: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let (median, p90) = median_p90(&samples).unwrap();
        assert_eq!(median, Duration::from_millis(5));
        assert_eq!(p90, Duration::from_millis(9));
        assert!(median_p90(&[]).is_none());
    }

    #[test]
    fn paced_workers_interleave_evenly() {
        // 4 workers at 1000/s: one request per millisecond across workers.
        let offsets: Vec<Duration> = (0..2)
            .flat_map(|index| (0..4).map(move |worker| scheduled_offset(worker, index, 4, 1000.0)))
            .collect();
        let expected: Vec<Duration> = (0..8).map(Duration::from_millis).collect();
        for (got, want) in offsets.iter().zip(&expected) {
            assert!(
                got.abs_diff(*want) < Duration::from_micros(1),
                "{got:?} vs {want:?}"
            );
        }
        assert_eq!(scheduled_offset(0, 1, 1, 0.0), Duration::MAX);
    }

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (neutral (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    731 129 0 0 20 0 5 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(
            parse_proc_stat(text),
            Some(CpuTicks {
                user: 731,
                system: 129
            })
        );
        assert_eq!(parse_proc_stat(text).unwrap().total(), 860);
        assert_eq!(parse_proc_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_proc_stat("no parenthesis"), None);
    }

    #[test]
    fn status_lines_give_kib() {
        let text = "Name:\tneutral\nVmHWM:\t  51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(40960));
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(51200));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn cores_used_divides_ticks_by_the_window() {
        let used = cores_used(150, 100, Duration::from_secs(1));
        assert!((used - 1.5).abs() < 1e-9);
        assert!(cores_used(10, 100, Duration::ZERO).abs() < f64::EPSILON);
    }

    #[test]
    fn exclusion_is_the_start_of_the_first_long_enough_absent_run() {
        let t = true;
        let f = false;
        // A lone miss at 2 (a weighted pick of the survivor) does not count.
        assert_eq!(exclusion_index(&[t, t, f, t, f, f, f, f], 3), Some(4));
        assert_eq!(exclusion_index(&[t, f, f], 3), None);
        assert_eq!(exclusion_index(&[f], 1), Some(0));
        assert_eq!(exclusion_index(&[t, f], 0), Some(1));
        assert_eq!(exclusion_index(&[], 3), None);
    }

    #[test]
    fn ratio_of_durations() {
        let r = ratio(Duration::from_millis(550), Duration::from_millis(500)).unwrap();
        assert!((r - 1.1).abs() < 1e-9);
        assert!(ratio(Duration::from_secs(1), Duration::ZERO).is_none());
    }
}
