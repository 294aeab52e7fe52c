//! The embedded DNS server's TCP side (RFC 7766): accepts connections up to
//! [`TCP_MAX_CONNECTIONS`] in all and [`TCP_MAX_PER_ADDRESS`] per client
//! address (a refused connection is closed at once, counted in
//! `neutral_dns_dropped_total{reason="tcp_limit"}` and logged at most once
//! per [`LOG_EVERY`]), reads length-prefixed queries — the 2-byte length
//! within [`TCP_IDLE_TIMEOUT`] (after connecting or after the last answer),
//! the query itself within [`TCP_READ_TIMEOUT`] — answers each in turn and
//! writes the answer within [`TCP_WRITE_TIMEOUT`]. A silent or trickling
//! client is closed by these timeouts; at most [`TCP_MAX_QUERIES`] queries
//! are answered per connection.
//!
//! This module owns the TCP socket IO and its limits only: what to answer
//! is the [`Answerer`]'s (the server's `DnsHandle::answer_tcp`, the same
//! `judge` as UDP); it must not look into the zones or the health, and must
//! not import `server` (which imports it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use neutral_core::log_gate::LogGate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the TCP side asks of the server.
pub(crate) trait Answerer: Clone + Send + Sync + 'static {
    /// The answer to one query, or `None` to send nothing.
    fn answer_tcp(&self, packet: &[u8]) -> Option<Vec<u8>>;
    /// A connection a cap refused.
    fn count_tcp_refused(&self);
    /// An answer that could not be written.
    fn count_send_failure(&self);
}

/// How long a connection may wait before sending (the length of) its next
/// query.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the rest of a query may take once its length arrived.
pub const TCP_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing one answer may take.
pub const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP connections open at once, all clients together.
pub const TCP_MAX_CONNECTIONS: usize = 256;
/// TCP connections open at once from one client address.
pub const TCP_MAX_PER_ADDRESS: usize = 16;
/// Queries answered on one connection before it is closed.
pub const TCP_MAX_QUERIES: usize = 10_000;
/// Refusals are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(5);
/// After an accept error (out of descriptors, say), wait this long.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Open connections, in all and per address.
#[derive(Debug)]
pub(crate) struct Slots {
    total: usize,
    per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One connection's slot, freed when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if let Some(count) = open.1.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

impl Slots {
    pub(crate) fn new(total: usize, per_address: usize) -> Arc<Slots> {
        Arc::new(Slots {
            total,
            per_address,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= self.total || from_ip >= self.per_address {
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(Slot {
            slots: Arc::clone(self),
            ip,
        })
    }
}

/// Accepts and serves TCP connections until `stopped` changes; then drops
/// every open connection.
pub(crate) async fn serve_tcp<A: Answerer>(
    listener: TcpListener,
    handle: A,
    slots: Arc<Slots>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut refusals_log = LogGate::new(LOG_EVERY);
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "DNS TCP accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(slot) = slots.take(peer.ip()) else {
            // Counted before the close, so a client that sees the close
            // also sees the count.
            handle.count_tcp_refused();
            drop(stream);
            if let Some(held_back) = refusals_log.pass(Instant::now()) {
                tracing::warn!(
                    client = %peer.ip(),
                    max_connections = slots.total,
                    max_per_address = slots.per_address,
                    refused_since_last_line = held_back + 1,
                    "DNS TCP connection refused: connection limit reached"
                );
            }
            continue;
        };
        connections.spawn(connection(stream, handle.clone(), slot));
    }
    connections.shutdown().await;
}

/// One connection: queries answered in turn until the client leaves, a
/// timeout passes, or [`TCP_MAX_QUERIES`] were answered.
async fn connection<A: Answerer>(mut stream: TcpStream, handle: A, slot: Slot) {
    let _slot = slot;
    let _ = stream.set_nodelay(true);
    for _ in 0..TCP_MAX_QUERIES {
        let mut length = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut length)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        let length = usize::from(u16::from_be_bytes(length));
        if length == 0 {
            return;
        }
        let mut packet = vec![0u8; length];
        match tokio::time::timeout(TCP_READ_TIMEOUT, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        // A response sent to the server (QR=1) gets nothing back.
        let Some(answer) = handle.answer_tcp(&packet) else {
            continue;
        };
        let Ok(answer_length) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&answer_length.to_be_bytes());
        framed.extend_from_slice(&answer);
        match tokio::time::timeout(TCP_WRITE_TIMEOUT, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                handle.count_send_failure();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_each_address_and_the_total_and_free_on_drop() {
        let slots = Slots::new(3, 2);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).is_none(), "per address");
        let _third = slots.take(b).unwrap();
        assert!(slots.take(b).is_none(), "total");
        drop(first);
        assert!(slots.take(a).is_some());
    }
}
