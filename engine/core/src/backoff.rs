//! The one backoff schedule: exponential growth from a floor to a cap
//! ([`Backoff::ceiling`]), with full jitter over the span above the floor
//! ([`Backoff::delay`]). The agent retries the control plane with it, the
//! provider's DNS backends pause between refused calls with it, and the
//! scheduler spaces Terraform retries with it.
//!
//! Pure: the random draw comes in as a number in `0..1`, so the schedule can be
//! tested exactly. Sleeping and drawing happen at the edges.

use std::time::Duration;

/// Default floor of a retry delay.
pub const DEFAULT_MIN: Duration = Duration::from_millis(500);
/// Default cap of a retry delay.
pub const DEFAULT_MAX: Duration = Duration::from_secs(30);
/// The smallest floor accepted: a zero floor would retry in a hot loop.
pub const MIN_FLOOR: Duration = Duration::from_millis(1);

/// Exponential backoff with full jitter, bounded by `[min, max]`.
///
/// After `n` consecutive failures the delay is drawn uniformly from
/// `[min, ceiling(n)]` with `ceiling(n) = min(max, min × 2^(n-1))`: the first
/// retry waits exactly `min`, later ones spread over a doubling window, which
/// keeps many agents that lost the control plane at the same moment from
/// coming back in lock step.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: DEFAULT_MIN,
            max: DEFAULT_MAX,
        }
    }
}

impl Backoff {
    /// A schedule from `min` to `max`; `min` is raised to [`MIN_FLOOR`] and
    /// `max` to `min` when given smaller.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(MIN_FLOOR);
        Backoff {
            min,
            max: max.max(min),
        }
    }

    pub fn min(&self) -> Duration {
        self.min
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The same schedule with no delay longer than `cap` (nor a floor above
    /// it). Heartbeat retries use the heartbeat interval as the cap: retrying
    /// no slower than the normal pace means a control plane that comes back
    /// hears from the node before its heartbeat timeout, and costs it no more
    /// than regular heartbeats would.
    #[must_use]
    pub fn capped_at(&self, cap: Duration) -> Self {
        Backoff::new(self.min.min(cap), self.max.min(cap))
    }

    /// The longest delay after `failures` consecutive failures (counted from
    /// 1; 0 is treated as 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(40);
        let factor = 1u128 << doublings;
        let nanos = self.min.as_nanos().saturating_mul(factor);
        let capped = nanos.min(self.max.as_nanos());
        Duration::from_nanos(u64::try_from(capped).unwrap_or(u64::MAX)).clamp(self.min, self.max)
    }

    /// The delay after `failures` consecutive failures for a uniform `draw`
    /// in `0..1` (values outside are clamped; NaN counts as 0).
    pub fn delay(&self, failures: u32, draw: f64) -> Duration {
        let ceiling = self.ceiling(failures);
        let span = ceiling.saturating_sub(self.min);
        let draw = if draw.is_nan() {
            0.0
        } else {
            draw.clamp(0.0, 1.0)
        };
        // span ≤ max, so the product fits comfortably in u64 nanoseconds.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let extra = (span.as_nanos() as f64 * draw) as u64;
        (self.min + Duration::from_nanos(extra)).min(ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceiling_doubles_from_the_floor_up_to_the_cap() {
        let b = Backoff::new(ms(500), Duration::from_secs(30));
        let ceilings: Vec<u128> = (1..=9).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.ceiling(0), ms(500));
    }

    #[test]
    fn ceiling_never_overflows_for_huge_failure_counts() {
        let b = Backoff::new(ms(500), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
        let wide = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        assert!(wide.ceiling(u32::MAX) >= wide.min());
    }

    #[test]
    fn delay_spans_floor_to_ceiling_with_the_draw() {
        let b = Backoff::new(ms(500), Duration::from_secs(30));
        assert_eq!(b.delay(1, 0.0), ms(500));
        assert_eq!(
            b.delay(1, 0.99),
            ms(500),
            "first retry waits exactly the floor"
        );
        assert_eq!(b.delay(3, 0.0), ms(500));
        assert_eq!(b.delay(3, 0.5), ms(1250));
        assert_eq!(b.delay(3, 1.0), ms(2000));
        assert_eq!(b.delay(20, 0.5), ms(15250));
    }

    #[test]
    fn delay_stays_within_bounds_for_any_draw() {
        let b = Backoff::new(ms(50), ms(800));
        for failures in 0..64 {
            for draw in [
                -1.0,
                0.0,
                0.25,
                0.999_999,
                1.0,
                7.0,
                f64::NAN,
                f64::INFINITY,
            ] {
                let d = b.delay(failures, draw);
                assert!(d >= b.min(), "{failures} {draw}: {d:?}");
                assert!(d <= b.ceiling(failures), "{failures} {draw}: {d:?}");
                assert!(d <= b.max(), "{failures} {draw}: {d:?}");
            }
        }
    }

    #[test]
    fn capping_bounds_every_delay_by_the_cap() {
        let b = Backoff::new(ms(500), Duration::from_secs(30));
        let capped = b.capped_at(Duration::from_secs(10));
        assert_eq!(
            (capped.min(), capped.max()),
            (ms(500), Duration::from_secs(10))
        );
        assert_eq!(capped.delay(100, 1.0), Duration::from_secs(10));
        let tight = b.capped_at(ms(100));
        assert_eq!((tight.min(), tight.max()), (ms(100), ms(100)));
        assert_eq!(b.capped_at(Duration::from_secs(60)), b);
    }

    #[test]
    fn nonsensical_bounds_are_repaired() {
        let zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.min(), MIN_FLOOR);
        assert_eq!(zero.max(), MIN_FLOOR);
        let inverted = Backoff::new(ms(900), ms(100));
        assert_eq!((inverted.min(), inverted.max()), (ms(900), ms(900)));
        assert_eq!(inverted.delay(5, 0.7), ms(900));
    }

    proptest::proptest! {
        #[test]
        fn any_schedule_stays_within_its_bounds_and_never_shrinks(
            min_ms in 0u64..100_000,
            max_ms in 0u64..10_000_000,
            failures in 0u32..200,
            draw in proptest::num::f64::ANY,
        ) {
            let b = Backoff::new(ms(min_ms), ms(max_ms));
            let d = b.delay(failures, draw);
            proptest::prop_assert!(b.min() <= d && d <= b.ceiling(failures));
            proptest::prop_assert!(b.ceiling(failures) <= b.max());
            proptest::prop_assert!(b.ceiling(failures) <= b.ceiling(failures.saturating_add(1)));
        }
    }
}
