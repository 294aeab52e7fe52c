//! `LogGate` from outside: the test needs a clock reading to start from,
//! which the pure core's own sources may not take (tests/no_io_dependencies.rs).

use std::time::{Duration, Instant};

use neutral_core::log_gate::LogGate;

#[test]
fn one_line_per_period_with_the_count_held_back() {
    let every = Duration::from_secs(5);
    let mut gate = LogGate::new(every);
    let start = Instant::now();
    assert_eq!(gate.pass(start), Some(0));
    assert_eq!(gate.pass(start + Duration::from_secs(1)), None);
    assert_eq!(gate.pass(start + Duration::from_secs(2)), None);
    assert_eq!(gate.pass(start + every), Some(2));
    assert_eq!(gate.pass(start + every), None);
}
