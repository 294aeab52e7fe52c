//! Who may register: the rules the node API applies before a registration
//! is stored — the identity rule (an existing identity is proven, never
//! taken over), the per-region cap, and the per-client rate limit.
//!
//! Everything here decides from values handed in (the nodes of the world,
//! the time); it stores nothing and answers no request itself. A leaf: it
//! imports no other module of the crate.
//!
//! - **Identity.** A node is its `node_id`, and one `(region, address)` is
//!   one node. Re-registering an existing `node_id` — or registering an
//!   address a node of that region already has — must carry proof: the
//!   node's current token (body field `node_token`) or the admin token. With
//!   proof the existing node gets a new token and keeps its id; without it
//!   the answer is 409 and nothing changes.
//! - **Cap.** A region accepts at most `max_nodes + slack` nodes, slack =
//!   max(2, ⌈max_nodes / 5⌉). Counted: every registered node of the region
//!   except those that were up once and are now down (they wait to be
//!   replaced, and their replacements must fit). Registrations that never
//!   heartbeated count until they expire.
//! - **Rate.** Each client address has a token bucket of `burst`
//!   registrations refilled at `per_second`.
//! - **One at a time per address.** While a registration of `(region,
//!   address)` is being decided and stored, a second one of the same pair
//!   is refused (409), so two at the same instant cannot both pass the
//!   identity rule.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The extra registrations a region accepts above its `max_nodes`.
pub fn region_slack(max_nodes: u32) -> u32 {
    max_nodes.div_ceil(5).max(2)
}

/// The most nodes a region with `max_nodes` holds at once.
pub fn region_cap(max_nodes: u32) -> u32 {
    max_nodes.saturating_add(region_slack(max_nodes))
}

/// Per-client token buckets for registrations, bounded in size (the oldest
/// idle buckets go first when it is full).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept at most; a full bucket is forgotten first (it is the
/// default a new client gets anyway).
const MAX_BUCKETS: usize = 65_536;

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: per_second.max(0.0),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one registration from `client`'s bucket at `now`; when it is
    /// empty, how long until the next one is allowed.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&client) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| refill(b, now, per_second, burst) < burst);
            if buckets.len() >= MAX_BUCKETS {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = refill(bucket, now, self.per_second, self.burst);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            let wait = if self.per_second > 0.0 {
                (1.0 - tokens) / self.per_second
            } else {
                3600.0
            };
            Err(Duration::from_secs_f64(wait.clamp(0.001, 3600.0)))
        }
    }
}

fn refill(bucket: &Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

/// The `(region, address)` pairs whose registration is in progress.
#[derive(Debug, Default)]
pub struct InFlight {
    claimed: Mutex<HashSet<(String, IpAddr)>>,
}

/// A claimed `(region, address)`; released when dropped.
#[derive(Debug)]
pub struct Claim<'a> {
    set: &'a InFlight,
    key: (String, IpAddr),
}

impl InFlight {
    /// Claims the pair, or `None` while another registration holds it.
    pub fn claim(&self, region: &str, address: IpAddr) -> Option<Claim<'_>> {
        let key = (region.to_owned(), address);
        let mut claimed = self
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // `then`, not `then_some`: a `Claim` built for a refused pair would be
        // dropped here, and its `Drop` would lock this mutex again.
        let fresh = claimed.insert(key.clone());
        drop(claimed);
        fresh.then(|| Claim { set: self, key })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claimed = self
            .set
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        claimed.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_is_a_fifth_of_max_nodes_and_at_least_two() {
        assert_eq!(region_cap(1), 3);
        assert_eq!(region_cap(5), 7);
        assert_eq!(region_cap(10), 12);
        assert_eq!(region_cap(11), 14);
        assert_eq!(region_cap(100), 120);
        assert_eq!(region_cap(u32::MAX), u32::MAX);
    }

    #[test]
    fn a_client_gets_its_burst_then_the_refill_rate_and_others_are_not_affected() {
        let limiter = RateLimiter::new(2.0, 3);
        let start = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.take(a, start).is_ok());
        }
        let wait = limiter.take(a, start).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(
            limiter.take(b, start).is_ok(),
            "another client has its own bucket"
        );
        // Half a second later one more (2 per second).
        assert!(limiter.take(a, start + Duration::from_millis(500)).is_ok());
        assert!(limiter.take(a, start + Duration::from_millis(500)).is_err());
        // Long idle: the bucket is full again, never fuller.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.take(a, later).is_ok());
        }
        assert!(limiter.take(a, later).is_err());
    }

    #[test]
    fn one_registration_of_an_address_at_a_time() {
        let in_flight = InFlight::default();
        let address: IpAddr = "192.0.2.7".parse().unwrap();
        let first = in_flight.claim("jp", address).expect("free");
        assert!(in_flight.claim("jp", address).is_none());
        assert!(in_flight.claim("sg", address).is_some());
        drop(first);
        assert!(in_flight.claim("jp", address).is_some());
    }
}
