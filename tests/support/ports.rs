//! Ports for the daemons the tests start, without the pick-then-bind race.
//!
//! A port taken from the kernel with `bind(:0)` and released again can be
//! handed to the next `bind(:0)` of a test running beside it before our
//! daemon binds it ("Address already in use"). So ports come from below
//! the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), where
//! `bind(:0)` and outgoing connections never land, and each is reserved
//! for the life of the test process by an advisory lock on a file named
//! after it: two test processes never get the same port. Only a program
//! outside the tests that binds a fixed port in that range could still
//! collide. This module owns the choice of ports; it must not start
//! anything.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;

/// The lowest port handed out: above the well-known and most registered
/// service ports a developer machine runs.
const FLOOR: u16 = 20_000;

/// The locks held for this process's lifetime (dropped at exit, which
/// releases the ports).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A TCP port free on every address (so also on loopback) and reserved for
/// this test process.
pub fn reserve_tcp() -> u16 {
    reserve(false)
}

/// A port free for both TCP and UDP (a DNS server's), reserved for this
/// test process.
pub fn reserve_tcp_and_udp() -> u16 {
    reserve(true)
}

fn reserve(udp_too: bool) -> u16 {
    let Some(ceiling) = ephemeral_floor().filter(|low| *low > FLOOR + 1_000) else {
        return kernel_pick(udp_too);
    };
    let dir = lock_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return kernel_pick(udp_too);
    }
    let span = u64::from(ceiling - FLOOR);
    let mut seed = RandomState::new().build_hasher();
    seed.write_u32(std::process::id());
    let mut state = seed.finish();
    for _ in 0..500 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let port = FLOOR + u16::try_from((state >> 33) % span).unwrap_or(0);
        let Ok(file) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        let tcp_free = TcpListener::bind(("0.0.0.0", port)).is_ok();
        let udp_free = !udp_too || UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if tcp_free && udp_free {
            HELD.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(file);
            return port;
        }
    }
    kernel_pick(udp_too)
}

/// The lower end of the kernel's ephemeral range, when it can be read.
fn ephemeral_floor() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("neutral-e2e-ports")
}

/// The old way, when no range below the ephemeral one can be used.
fn kernel_pick(udp_too: bool) -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = tcp.local_addr().expect("local address").port();
        if !udp_too || UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..20).map(|_| reserve_tcp_and_udp()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for port in &ports {
            TcpListener::bind(("127.0.0.1", *port)).unwrap();
            UdpSocket::bind(("127.0.0.1", *port)).unwrap();
            if let Some(low) = ephemeral_floor() {
                assert!(*port < low, "{port} is in the ephemeral range from {low}");
            }
        }
    }
}
