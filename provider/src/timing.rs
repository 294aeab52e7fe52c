//! Optional timings for benchmarks. With `NEUTRAL_PROVIDER_TIMINGS=<file>`
//! set, every Terraform call appends one line to the file:
//! `<pid> <call> <elapsed µs> <http µs so far> <cpu µs so far>`, where the
//! running totals are this process' time waiting on HTTP (control plane,
//! PowerDNS) and its CPU time (user + system, from `/proc/self/stat`,
//! assuming 100 clock ticks per second as on Linux). Off by default; it
//! never records values, only durations.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const ENV: &str = "NEUTRAL_PROVIDER_TIMINGS";

static SINK: OnceLock<Option<Mutex<File>>> = OnceLock::new();
static HTTP_MICROS: AtomicU64 = AtomicU64::new(0);

fn sink() -> Option<&'static Mutex<File>> {
    SINK.get_or_init(|| {
        let path = std::env::var_os(ENV)?;
        File::options()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    })
    .as_ref()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Counts `elapsed` as time spent waiting on an HTTP request.
pub fn add_http(elapsed: Duration) {
    HTTP_MICROS.fetch_add(micros(elapsed), Ordering::Relaxed);
}

/// This process' CPU time so far, in µs (0 where `/proc` is unavailable).
fn cpu_micros() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of stat(5); `state` (3) is the
    // first after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    ticks.saturating_mul(10_000)
}

/// Times one call from creation to drop.
#[derive(Debug)]
pub struct Span {
    call: &'static str,
    start: Instant,
}

impl Span {
    pub fn new(call: &'static str) -> Span {
        Span {
            call,
            start: Instant::now(),
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(sink) = sink() else {
            return;
        };
        let line = format!(
            "{} {} {} {} {}\n",
            std::process::id(),
            self.call,
            micros(self.start.elapsed()),
            HTTP_MICROS.load(Ordering::Relaxed),
            cpu_micros()
        );
        if let Ok(mut file) = sink.lock() {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_from_proc() {
        let mut spin = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        assert!(cpu_micros() > 0);
    }
}
