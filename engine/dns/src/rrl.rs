//! Response-rate limiting over UDP, per client prefix, in the manner of BIND's
//! RRL and dnsdist's `MaxQPSIPRule`: a token bucket per `/24` (IPv4) or
//! `/56` (IPv6) source prefix. Within the rate a query is answered; beyond it
//! most answers are dropped and every `slip`-th one is "slipped": sent as an
//! empty response with TC=1, so a real client behind a spoofed flood retries
//! over TCP (which is not limited) while the flood's victim receives at most
//! one small packet per `slip` queries.
//!
//! This module owns the buckets and the verdict. It is pure: the caller hands
//! in the time (milliseconds on any monotonic clock) and acts on the
//! [`Verdict`]; it never reads a clock or touches a socket. Memory is bounded
//! by [`RateLimit::max_tracked`] prefixes: when the table is full, prefixes
//! whose bucket has refilled are forgotten, and if none has, new prefixes
//! share one overflow bucket (so a flood over many prefixes is limited as a
//! whole rather than growing the table).

use std::collections::HashMap;
use std::net::IpAddr;

/// Settings of the limiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained UDP responses per second per prefix; 0 turns limiting off.
    pub responses_per_second: u32,
    /// Responses a quiet prefix may receive at once.
    pub burst: u32,
    /// Every `slip`-th limited response is sent truncated (TC=1) instead of
    /// dropped; 0 drops them all, 1 slips them all.
    pub slip: u32,
    /// Prefix length that groups IPv4 clients.
    pub ipv4_prefix: u8,
    /// Prefix length that groups IPv6 clients.
    pub ipv6_prefix: u8,
    /// Most prefixes tracked at once.
    pub max_tracked: usize,
    /// Never limit loopback sources (`127.0.0.0/8`, `::1`): the kernel drops
    /// packets with such a source arriving from outside, so they are local
    /// tools and tests, not spoofed floods.
    pub exempt_loopback: bool,
}

impl Default for RateLimit {
    /// 100 responses/s per prefix with a burst of 200, slip 2, `/24` and
    /// `/56` (BIND's and dnsdist's usual groupings), 100,000 prefixes,
    /// loopback exempt.
    fn default() -> Self {
        RateLimit {
            responses_per_second: 100,
            burst: 200,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            max_tracked: 100_000,
            exempt_loopback: true,
        }
    }
}

impl RateLimit {
    /// No limiting at all.
    pub fn off() -> Self {
        RateLimit {
            responses_per_second: 0,
            ..RateLimit::default()
        }
    }
}

/// What to do with one UDP query.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// Send an empty response with TC=1.
    Slip,
    Drop,
}

/// A client prefix: the family and the masked address bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    v6: bool,
    bits: u128,
}

impl Prefix {
    /// The prefix `address` falls in (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn of(address: IpAddr, settings: &RateLimit) -> Prefix {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match address {
            IpAddr::V4(v4) => Prefix {
                v6: false,
                bits: u128::from(u32::from(v4) & mask32(settings.ipv4_prefix)),
            },
            IpAddr::V6(v6) => Prefix {
                v6: true,
                bits: u128::from(v6) & mask128(settings.ipv6_prefix),
            },
        }
    }
}

fn mask32(len: u8) -> u32 {
    match u32::from(len.min(32)) {
        0 => 0,
        len => u32::MAX << (32 - len),
    }
}

fn mask128(len: u8) -> u128 {
    match u32::from(len.min(128)) {
        0 => 0,
        len => u128::MAX << (128 - len),
    }
}

#[derive(Clone, Debug)]
struct Bucket {
    /// Thousandths of a response.
    milli_tokens: u64,
    updated_ms: u64,
    /// Responses limited since the bucket last had a token.
    limited: u64,
}

/// The buckets; one per server.
#[derive(Debug)]
pub struct Limiter {
    settings: RateLimit,
    buckets: HashMap<Prefix, Bucket>,
    overflow: Bucket,
}

/// What [`Limiter::check`] did, for metrics.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub answered: u64,
    pub slipped: u64,
    pub dropped: u64,
}

impl Limiter {
    pub fn new(settings: RateLimit) -> Limiter {
        let full = u64::from(settings.burst.max(1)).saturating_mul(1000);
        Limiter {
            settings,
            buckets: HashMap::new(),
            overflow: Bucket {
                milli_tokens: full,
                updated_ms: 0,
                limited: 0,
            },
        }
    }

    pub fn settings(&self) -> &RateLimit {
        &self.settings
    }

    /// Prefixes tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn capacity(&self) -> u64 {
        u64::from(self.settings.burst.max(1)).saturating_mul(1000)
    }

    /// The verdict for one query from `address` at `now_ms`.
    pub fn check(&mut self, address: IpAddr, now_ms: u64) -> Verdict {
        if self.settings.responses_per_second == 0
            || (self.settings.exempt_loopback && address.to_canonical().is_loopback())
        {
            return Verdict::Answer;
        }
        let prefix = Prefix::of(address, &self.settings);
        let capacity = self.capacity();
        if !self.buckets.contains_key(&prefix) && self.buckets.len() >= self.settings.max_tracked {
            self.forget_refilled(now_ms);
        }
        let settings = self.settings.clone();
        let bucket =
            if self.buckets.len() < settings.max_tracked || self.buckets.contains_key(&prefix) {
                self.buckets.entry(prefix).or_insert(Bucket {
                    milli_tokens: capacity,
                    updated_ms: now_ms,
                    limited: 0,
                })
            } else {
                &mut self.overflow
            };
        take(bucket, &settings, capacity, now_ms)
    }

    /// Drops buckets that have refilled completely: their prefix is quiet,
    /// and a fresh bucket would be the same.
    fn forget_refilled(&mut self, now_ms: u64) {
        let capacity = self.capacity();
        let rate = u64::from(self.settings.responses_per_second);
        self.buckets.retain(|_, bucket| {
            let elapsed = now_ms.saturating_sub(bucket.updated_ms);
            bucket
                .milli_tokens
                .saturating_add(elapsed.saturating_mul(rate))
                < capacity
        });
    }
}

fn take(bucket: &mut Bucket, settings: &RateLimit, capacity: u64, now_ms: u64) -> Verdict {
    let elapsed = now_ms.saturating_sub(bucket.updated_ms);
    let refill = elapsed.saturating_mul(u64::from(settings.responses_per_second));
    bucket.milli_tokens = bucket.milli_tokens.saturating_add(refill).min(capacity);
    bucket.updated_ms = bucket.updated_ms.max(now_ms);
    if bucket.milli_tokens >= 1000 {
        bucket.milli_tokens -= 1000;
        bucket.limited = 0;
        return Verdict::Answer;
    }
    bucket.limited = bucket.limited.saturating_add(1);
    let slip = u64::from(settings.slip);
    if slip > 0 && bucket.limited.is_multiple_of(slip) {
        Verdict::Slip
    } else {
        Verdict::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn settings(rate: u32, burst: u32, slip: u32) -> RateLimit {
        RateLimit {
            responses_per_second: rate,
            burst,
            slip,
            exempt_loopback: false,
            ..RateLimit::default()
        }
    }

    fn run(limiter: &mut Limiter, address: &str, count: usize, now_ms: u64) -> [usize; 3] {
        let mut tally = [0; 3];
        for _ in 0..count {
            match limiter.check(ip(address), now_ms) {
                Verdict::Answer => tally[0] += 1,
                Verdict::Slip => tally[1] += 1,
                Verdict::Drop => tally[2] += 1,
            }
        }
        tally
    }

    #[test]
    fn a_burst_is_answered_then_limited_with_every_second_slipped() {
        let mut limiter = Limiter::new(settings(10, 5, 2));
        assert_eq!(run(&mut limiter, "192.0.2.1", 15, 0), [5, 5, 5]);
        // 100 ms later one token is back.
        assert_eq!(run(&mut limiter, "192.0.2.1", 3, 100), [1, 1, 1]);
        // A quiet second refills the burst, not more.
        assert_eq!(run(&mut limiter, "192.0.2.1", 7, 5_000), [5, 1, 1]);
    }

    #[test]
    fn prefixes_group_a_24_and_a_56() {
        let mut limiter = Limiter::new(settings(10, 2, 0));
        assert_eq!(run(&mut limiter, "192.0.2.1", 2, 0), [2, 0, 0]);
        assert_eq!(run(&mut limiter, "192.0.2.200", 1, 0), [0, 0, 1]);
        assert_eq!(run(&mut limiter, "192.0.3.1", 1, 0), [1, 0, 0]);
        assert_eq!(run(&mut limiter, "::ffff:192.0.2.9", 1, 0), [0, 0, 1]);
        assert_eq!(run(&mut limiter, "2001:db8:0:ab::1", 2, 0), [2, 0, 0]);
        assert_eq!(run(&mut limiter, "2001:db8:0:ff:1::1", 1, 0), [0, 0, 1]);
        assert_eq!(run(&mut limiter, "2001:db8:0:100::1", 1, 0), [1, 0, 0]);
    }

    #[test]
    fn slip_one_slips_all_and_zero_drops_all_and_rate_zero_is_off() {
        let mut limiter = Limiter::new(settings(10, 1, 1));
        assert_eq!(run(&mut limiter, "192.0.2.1", 4, 0), [1, 3, 0]);
        let mut limiter = Limiter::new(settings(10, 1, 0));
        assert_eq!(run(&mut limiter, "192.0.2.1", 4, 0), [1, 0, 3]);
        let mut limiter = Limiter::new(RateLimit::off());
        assert_eq!(run(&mut limiter, "192.0.2.1", 10_000, 0), [10_000, 0, 0]);
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_quiet_prefixes_are_forgotten() {
        let mut limiter = Limiter::new(RateLimit {
            max_tracked: 100,
            ..settings(10, 2, 0)
        });
        for i in 0..300u32 {
            let address = format!("10.{}.{}.1", i / 256, i % 256);
            limiter.check(ip(&address), 0);
        }
        assert_eq!(limiter.tracked(), 100);
        // Past the table, new prefixes share the overflow bucket (burst 2).
        assert_eq!(run(&mut limiter, "172.16.0.1", 1, 0), [0, 0, 1]);
        // Once the tracked prefixes have refilled, they make room.
        assert_eq!(run(&mut limiter, "172.16.1.1", 2, 10_000), [2, 0, 0]);
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn loopback_is_exempt_unless_asked_otherwise() {
        let mut limiter = Limiter::new(RateLimit {
            exempt_loopback: true,
            ..settings(1, 1, 0)
        });
        assert_eq!(run(&mut limiter, "127.0.0.1", 100, 0), [100, 0, 0]);
        assert_eq!(run(&mut limiter, "::1", 100, 0), [100, 0, 0]);
        assert_eq!(run(&mut limiter, "::ffff:127.0.0.2", 100, 0), [100, 0, 0]);
        assert_eq!(run(&mut limiter, "192.0.2.1", 3, 0), [1, 0, 2]);
        let mut limiter = Limiter::new(settings(1, 1, 0));
        assert_eq!(run(&mut limiter, "127.0.0.1", 3, 0), [1, 0, 2]);
    }

    #[test]
    fn time_going_backwards_or_to_the_end_never_panics() {
        let mut limiter = Limiter::new(settings(u32::MAX, u32::MAX, u32::MAX));
        for now in [u64::MAX, 0, 5, u64::MAX / 2] {
            limiter.check(ip("192.0.2.1"), now);
        }
        let mut limiter = Limiter::new(settings(1, 0, 3));
        assert_eq!(run(&mut limiter, "192.0.2.1", 4, u64::MAX), [1, 1, 2]);
    }
}
