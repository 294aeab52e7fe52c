//! Connection accounting for the API listener: how many connections are
//! open in all and per client address, which client addresses may use the
//! node reserve, and how many connections each limit refused.
//!
//! The rule ([`ConnTable::admit`]): a client address holds at most
//! `per_ip` connections; all clients together hold at most `total`, of
//! which the last `reserve` slots are open only to *trusted* addresses —
//! ones a node registration or heartbeat was accepted from within
//! [`TRUST_TTL`] (the API handlers call [`ConnTable::trust`]), and the
//! operator's own networks (`--connection-reserve-for`: load balancers'
//! health checkers, monitoring). So a flood
//! from addresses that never proved a node token fills the general slots
//! only, and nodes keep getting in until the flood's silent connections are
//! evicted by the header-read timeout.
//!
//! A leaf: plain counting behind a mutex taken for a few instructions, no
//! IO, no clock of its own (`now` is a parameter); it must not import any
//! other module of the crate. The listener (`listener.rs`) does the IO and
//! the logging.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long an address stays trusted after its last accepted node request.
pub const TRUST_TTL: Duration = Duration::from_secs(10 * 60);
/// At most this many trusted addresses are remembered (expired ones are
/// dropped first when full; past that, new ones are not added).
pub const TRUST_MAX: usize = 65_536;

/// The limits, as configured (see `neutral serve --max-connections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, all clients together.
    pub total: usize,
    /// Connections open at once from one client address.
    pub per_ip: usize,
    /// Of `total`, slots only trusted (node) addresses may take.
    pub reserve: usize,
}

impl ConnLimits {
    /// Slots any client may take: `total - reserve`.
    pub fn general(&self) -> usize {
        self.total.saturating_sub(self.reserve)
    }
}

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client address already holds `limit` connections.
    PerIp { open: usize, limit: usize },
    /// All clients together hold `limit` connections (`reserved`: the
    /// general slots are full and the address is not trusted to use the
    /// node reserve).
    Total {
        open: usize,
        limit: usize,
        reserved: bool,
    },
}

impl Refusal {
    /// The `reason` label of `neutral_api_connections_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::PerIp { .. } => "per_ip",
            Refusal::Total { .. } => "total",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
    trusted: HashMap<IpAddr, Instant>,
}

/// The open connections and the refusal counters, shared by the listener
/// (admits), the node API (trusts) and `/metrics` (reads).
#[derive(Debug)]
pub struct ConnTable {
    limits: ConnLimits,
    /// Networks whose addresses may always use the reserve.
    reserved_for: Vec<IpNet>,
    state: Mutex<State>,
    refused_per_ip: AtomicU64,
    refused_total: AtomicU64,
}

/// One admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Permit {
    table: Arc<ConnTable>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.table.lock();
        state.open = state.open.saturating_sub(1);
        if let Some(count) = state.per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.per_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnTable {
    pub fn new(limits: ConnLimits) -> Arc<ConnTable> {
        Self::reserving_for(limits, Vec::new())
    }

    /// A table whose reserve is open to `networks` too, always.
    pub fn reserving_for(limits: ConnLimits, networks: Vec<IpNet>) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            limits,
            reserved_for: networks,
            state: Mutex::new(State::default()),
            refused_per_ip: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for a connection from `ip`, or says which limit refuses
    /// it (and counts the refusal).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Permit, Refusal> {
        let limits = self.limits;
        let mut state = self.lock();
        let from_ip = state.per_ip.get(&ip).copied().unwrap_or(0);
        let refusal = if from_ip >= limits.per_ip {
            Some(Refusal::PerIp {
                open: from_ip,
                limit: limits.per_ip,
            })
        } else if state.open >= limits.total {
            Some(Refusal::Total {
                open: state.open,
                limit: limits.total,
                reserved: false,
            })
        } else if state.open >= limits.general()
            && state
                .trusted
                .get(&ip)
                .is_none_or(|at| now.saturating_duration_since(*at) >= TRUST_TTL)
            && !self.reserved_for.iter().any(|net| net.contains(&ip))
        {
            Some(Refusal::Total {
                open: state.open,
                limit: limits.general(),
                reserved: true,
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(state);
            let counter = match refusal {
                Refusal::PerIp { .. } => &self.refused_per_ip,
                Refusal::Total { .. } => &self.refused_total,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        state.open += 1;
        *state.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Permit {
            table: Arc::clone(self),
            ip,
        })
    }

    /// Marks `ip` as a node's address (a registration or heartbeat from it
    /// was accepted): it may use the reserve for [`TRUST_TTL`].
    pub fn trust(&self, ip: IpAddr, now: Instant) {
        let mut state = self.lock();
        if state.trusted.len() >= TRUST_MAX && !state.trusted.contains_key(&ip) {
            state
                .trusted
                .retain(|_, at| now.saturating_duration_since(*at) < TRUST_TTL);
            if state.trusted.len() >= TRUST_MAX {
                return;
            }
        }
        state.trusted.insert(ip, now);
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// Connections refused so far: (per-address limit, total limit).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_per_ip.load(Ordering::Relaxed),
            self.refused_total.load(Ordering::Relaxed),
        )
    }
}

/// The connection cap for a process allowed `fd_limit` open files:
/// `wanted` (or everything above the reserve when `None`), never more
/// than `fd_limit - fd_reserve`, and at least 1.
pub fn cap_for_fd_limit(wanted: Option<usize>, fd_limit: u64, fd_reserve: usize) -> usize {
    let room = usize::try_from(fd_limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(fd_reserve)
        .max(1);
    wanted.map_or(room, |wanted| wanted.min(room)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_per_address_cap_refuses_the_excess_and_a_closed_connection_frees_its_slot() {
        let table = ConnTable::new(ConnLimits {
            total: 100,
            per_ip: 3,
            reserve: 0,
        });
        let now = Instant::now();
        let mut held: Vec<Permit> = (0..3).map(|_| table.admit(ip(2), now).unwrap()).collect();
        assert_eq!(
            table.admit(ip(2), now).unwrap_err(),
            Refusal::PerIp { open: 3, limit: 3 }
        );
        // Another address is not affected.
        let other = table.admit(ip(3), now).unwrap();
        assert_eq!(table.open(), 4);
        held.pop();
        assert_eq!(table.open(), 3);
        held.push(table.admit(ip(2), now).unwrap());
        drop(other);
        drop(held);
        assert_eq!(table.open(), 0);
        assert_eq!(table.refused(), (1, 0));
        assert!(table.lock().per_ip.is_empty(), "no address left behind");
    }

    #[test]
    fn the_reserve_is_only_for_trusted_addresses_until_trust_expires() {
        let table = ConnTable::new(ConnLimits {
            total: 4,
            per_ip: 10,
            reserve: 2,
        });
        let now = Instant::now();
        let _a = table.admit(ip(10), now).unwrap();
        let _b = table.admit(ip(11), now).unwrap();
        // General slots (2) are full: a stranger is refused...
        assert_eq!(
            table.admit(ip(12), now).unwrap_err(),
            Refusal::Total {
                open: 2,
                limit: 2,
                reserved: true
            }
        );
        // ...a node's address gets in, up to the total.
        table.trust(ip(1), now);
        let _c = table.admit(ip(1), now).unwrap();
        let _d = table.admit(ip(1), now).unwrap();
        assert_eq!(
            table.admit(ip(1), now).unwrap_err(),
            Refusal::Total {
                open: 4,
                limit: 4,
                reserved: false
            }
        );
        drop(_d);
        // Trust ends TRUST_TTL after the last accepted node request.
        let later = now + TRUST_TTL;
        assert!(matches!(
            table.admit(ip(1), later),
            Err(Refusal::Total { reserved: true, .. })
        ));
        table.trust(ip(1), later);
        assert!(table.admit(ip(1), later).is_ok());
        assert_eq!(table.refused(), (0, 3));
    }

    #[test]
    fn the_operators_networks_may_always_use_the_reserve() {
        let table = ConnTable::reserving_for(
            ConnLimits {
                total: 3,
                per_ip: 10,
                reserve: 2,
            },
            vec!["10.9.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()],
        );
        let now = Instant::now();
        let _a = table.admit(ip(10), now).unwrap();
        // The general slot is full: a stranger is refused, a health checker
        // of the configured network gets in, never trusted by a node token.
        assert!(matches!(
            table.admit(ip(12), now),
            Err(Refusal::Total { reserved: true, .. })
        ));
        let checker: IpAddr = "10.9.3.4".parse().unwrap();
        let _b = table.admit(checker, now).unwrap();
        let _c = table.admit("::1".parse().unwrap(), now).unwrap();
        // Up to the total, as for nodes.
        assert!(matches!(
            table.admit(checker, now),
            Err(Refusal::Total {
                reserved: false,
                ..
            })
        ));
    }

    #[test]
    fn the_trusted_set_is_bounded_and_drops_expired_addresses_first() {
        let table = ConnTable::new(ConnLimits {
            total: 1,
            per_ip: 1,
            reserve: 1,
        });
        let start = Instant::now();
        for n in 0..TRUST_MAX {
            let n = u32::try_from(n).unwrap();
            table.trust(IpAddr::from(n.to_be_bytes()), start);
        }
        let newcomer = ip(200);
        table.trust(newcomer, start + Duration::from_secs(1));
        assert!(
            !table.lock().trusted.contains_key(&newcomer),
            "full: not added"
        );
        table.trust(newcomer, start + TRUST_TTL);
        let state = table.lock();
        assert_eq!(state.trusted.len(), 1, "the expired ones were dropped");
        assert!(state.trusted.contains_key(&newcomer));
    }

    #[test]
    fn the_cap_stays_below_the_fd_limit() {
        assert_eq!(cap_for_fd_limit(None, 1024, 256), 768);
        assert_eq!(cap_for_fd_limit(Some(10_000), 1024, 256), 768);
        assert_eq!(cap_for_fd_limit(Some(100), 1024, 256), 100);
        assert_eq!(cap_for_fd_limit(None, 100, 256), 1);
        assert_eq!(cap_for_fd_limit(Some(0), 1024, 256), 1);
        assert_eq!(cap_for_fd_limit(None, u64::MAX, 256), usize::MAX - 256);
    }
}
