//! The embedded authoritative DNS server: UDP and TCP sockets, the current
//! [`Snapshot`], and the handle the daemon updates it through.
//!
//! TCP is served by [`crate::tcp`] (connection caps, idle and read
//! timeouts) with this module's answers. UDP is served by this module's own
//! socket loop, because UDP is where source addresses are spoofed and the server
//! must decide before anything is decoded or sent: a packet with QR=1 (a
//! response: reflection or a loop between two servers) is dropped unread,
//! and every query passes the per-prefix response-rate limiter
//! ([`crate::rrl`]) first, which answers, drops, or "slips" an empty TC=1
//! response so a real client retries over TCP (not limited). Both transports
//! share [`judge`]: EDNS version (anything but 0 gets BADVERS, RFC 6891),
//! opcode, class, then [`Snapshot::resolve`]. UDP answers are cut to the
//! client's EDNS payload size (512 without EDNS, at most 4096) with TC=1.
//!
//! This module owns the IO edge: binding, per-query request handling, the
//! swap of immutable snapshots, the last-known-good memory between health
//! changes, metrics and shutdown. Answer rules live in [`crate::snapshot`] and
//! [`crate::health`]; zone rules in [`crate::zone`].
//!
//! Concurrency: a query takes a read lock only long enough to clone an
//! `Arc<Snapshot>`, then answers from that immutable snapshot. Writers
//! (`set_zones`, `set_health`, …) serialize on a mutex, build the next
//! snapshot off to the side and swap it in; a query sees either the old or
//! the new snapshot, never a mix. A health change re-derives answer sets only
//! (zones stay compiled), so a node marked down leaves the answers as soon as
//! `set_health` returns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{
    Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode, emit_message_parts,
};
use hickory_proto::rr::{DNSClass, LowerName, Record as DnsRecord, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use rand::Rng as _;
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::content::RrType;
use crate::health::{HealthMove, HealthView, ServeMode};
use crate::metrics::{Counters, DnsMetrics, Transport};
pub use crate::rrl::RateLimit;
use crate::rrl::{Limiter, Verdict};
use crate::snapshot::{CompiledZone, Memory, Resolution, ServedZone, Skipped, Snapshot};
use crate::zone::{Zone, ZoneSet, zone_key};

/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: usize = 20;
/// How long [`DnsServer::shutdown`] waits for the socket tasks to end.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// UDP answers never exceed this, whatever payload size a client offers.
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// UDP answers to clients without EDNS (RFC 1035).
const CLASSIC_UDP_PAYLOAD: u16 = 512;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot bind DNS {protocol} socket on {addr}: {source}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("no port on {ip} was free for both UDP and TCP after {attempts} attempts")]
    NoCommonPort { ip: IpAddr, attempts: usize },
    #[error("DNS server on {addr} did not stop cleanly: {message}")]
    Shutdown { addr: SocketAddr, message: String },
}

/// What a zone load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Zones now served.
    pub zones: usize,
    /// What was left out, and why.
    pub skipped: Vec<Skipped>,
}

/// An A/AAAA rrset not answering from healthy records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DegradedRrSet {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    /// `fail_open`, `last_known_good` or `empty`.
    pub mode: String,
}

/// A running server. Dropping it aborts its socket tasks; [`DnsServer::shutdown`]
/// stops them gracefully.
pub struct DnsServer {
    local_addr: SocketAddr,
    handle: DnsHandle,
    udp: UdpTask,
}

/// The socket loops (UDP, and the TCP accept loop last); aborted when dropped.
struct UdpTask {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for UdpTask {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// Cheap to clone; updates what the server answers.
#[derive(Clone, Debug)]
pub struct DnsHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    state: Mutex<State>,
    counters: Counters,
}

/// The writer side: sources of the snapshot and the memory between snapshots.
#[derive(Debug, Default)]
struct State {
    zones: ZoneSet,
    compiled: BTreeMap<String, Arc<CompiledZone>>,
    skipped: BTreeMap<String, Vec<Skipped>>,
    health: HealthView,
    last_known_good: HashMap<(String, RrType), BTreeSet<IpAddr>>,
    /// Whether a health view was given ([`DnsHandle::set_health`]). Before
    /// one, every record counts as healthy for want of knowing better, and
    /// that is not remembered as last known good.
    health_known: bool,
    /// Moves on every change of `last_known_good`, so a caller that keeps a
    /// copy of it (the daemon, in its store) knows when to write it again.
    last_known_good_generation: u64,
    modes: BTreeMap<(String, RrType), ServeMode>,
}

/// One A/AAAA rrset's last known good addresses (the all-down policy
/// `last_known_good`), as kept across a restart.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RememberedSet {
    /// The owner name as the zone's rrset gives it, with the trailing dot.
    pub name: String,
    /// `A` or `AAAA`.
    #[serde(rename = "type")]
    pub rtype: String,
    pub addresses: Vec<IpAddr>,
}

/// How many DNS-over-TCP connections are served at once, in all and from
/// one client address; more are closed unserved, counted in
/// `neutral_dns_dropped_total{reason="tcp_limit"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    pub connections: usize,
    pub per_address: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            connections: crate::tcp::TCP_MAX_CONNECTIONS,
            per_address: crate::tcp::TCP_MAX_PER_ADDRESS,
        }
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: one free port for both) and starts
    /// serving `initial`, with the default [`RateLimit`]. Must be called
    /// inside a tokio runtime.
    pub async fn bind(addr: SocketAddr, initial: ZoneSet) -> Result<DnsServer, DnsError> {
        DnsServer::bind_with(addr, initial, RateLimit::default()).await
    }

    /// [`DnsServer::bind`] with explicit UDP response-rate limits.
    pub async fn bind_with(
        addr: SocketAddr,
        initial: ZoneSet,
        limit: RateLimit,
    ) -> Result<DnsServer, DnsError> {
        DnsServer::bind_with_limits(addr, initial, limit, TcpLimits::default()).await
    }

    /// [`DnsServer::bind`] with explicit UDP response-rate and TCP
    /// connection limits.
    pub async fn bind_with_limits(
        addr: SocketAddr,
        initial: ZoneSet,
        limit: RateLimit,
        tcp_limits: TcpLimits,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp, local_addr) = bind_sockets(addr).await?;
        // Problems in `initial` are logged as the zones compile.
        let (handle, report) = DnsHandle::detached(initial);
        let (stop, stopped) = watch::channel(false);
        let udp = Arc::new(udp);
        let limiter = Arc::new(Mutex::new(Limiter::new(limit.clone())));
        let started = tokio::time::Instant::now();
        // One loop per core (at most 4) on the same socket: a flood is read
        // and dropped as fast as it comes, so other clients' queries are not
        // lost in a full socket buffer.
        let loops = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
        let mut tasks: Vec<JoinHandle<()>> = (0..loops)
            .map(|_| {
                tokio::spawn(serve_udp(
                    udp.clone(),
                    handle.clone(),
                    limiter.clone(),
                    started,
                    stopped.clone(),
                ))
            })
            .collect();
        tasks.push(tokio::spawn(crate::tcp::serve_tcp(
            tcp,
            handle.clone(),
            crate::tcp::Slots::new(tcp_limits.connections, tcp_limits.per_address),
            stopped.clone(),
        )));
        tracing::info!(
            %local_addr,
            zones = report.zones,
            rate_limit_per_prefix = limit.responses_per_second,
            burst = limit.burst,
            slip = limit.slip,
            tcp_connections = tcp_limits.connections,
            tcp_per_address = tcp_limits.per_address,
            "embedded DNS server listening (UDP and TCP)"
        );
        Ok(DnsServer {
            local_addr,
            handle,
            udp: UdpTask { stop, tasks },
        })
    }

    /// The bound address (UDP and TCP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn handle(&self) -> DnsHandle {
        self.handle.clone()
    }

    /// Stops accepting queries and waits (at most [`SHUTDOWN_TIMEOUT`]) for
    /// the socket tasks to end (open TCP connections are closed).
    pub async fn shutdown(mut self) -> Result<(), DnsError> {
        let addr = self.local_addr;
        let _ = self.udp.stop.send(true);
        for task in self.udp.tasks.drain(..) {
            if tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await.is_err() {
                return Err(DnsError::Shutdown {
                    addr,
                    message: format!("socket task still running after {SHUTDOWN_TIMEOUT:?}"),
                });
            }
        }
        tracing::info!(%addr, "embedded DNS server stopped");
        Ok(())
    }
}

impl crate::tcp::Answerer for DnsHandle {
    fn answer_tcp(&self, packet: &[u8]) -> Option<Vec<u8>> {
        DnsHandle::answer_tcp(self, packet)
    }

    fn count_tcp_refused(&self) {
        self.shared.counters.tcp_refused();
    }

    fn count_send_failure(&self) {
        self.shared.counters.send_failure();
    }
}

/// The UDP receive buffer asked for (the kernel caps it at
/// `net.core.rmem_max`): a burst of a flood queues instead of pushing other
/// clients' queries out.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// A UDP socket on `addr` with a large receive buffer.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(%error, "could not enlarge the DNS UDP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn bind_sockets(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    let bind_error = |protocol, addr, source| DnsError::Bind {
        protocol,
        addr,
        source,
    };
    if addr.port() != 0 {
        let udp = bind_udp(addr).map_err(|e| bind_error("UDP", addr, e))?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| bind_error("TCP", addr, e))?;
        return Ok((udp, tcp, addr));
    }
    for _ in 0..BIND_ATTEMPTS {
        let udp = bind_udp(addr).map_err(|e| bind_error("UDP", addr, e))?;
        let bound = udp.local_addr().map_err(|e| bind_error("UDP", addr, e))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_error("TCP", bound, e)),
        }
    }
    Err(DnsError::NoCommonPort {
        ip: addr.ip(),
        attempts: BIND_ATTEMPTS,
    })
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave `State` half-updated in a
    // way that matters: every field is replaced whole.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DnsHandle {
    /// A handle serving `zones` without any socket: packets are answered in
    /// process by [`DnsHandle::answer_udp`] (the fuzz targets, tools).
    /// [`DnsServer::bind`] starts from one.
    pub fn detached(zones: ZoneSet) -> (DnsHandle, LoadReport) {
        let handle = DnsHandle {
            shared: Arc::new(Shared {
                snapshot: RwLock::new(Arc::new(Snapshot::default())),
                state: Mutex::new(State::default()),
                counters: Counters::default(),
            }),
        };
        let report = handle.set_zones(zones);
        (handle, report)
    }

    /// Replaces every zone. Rrsets and records that break the zone rules are
    /// left out and reported; the rest is served.
    pub fn set_zones(&self, zones: ZoneSet) -> LoadReport {
        let mut state = lock(&self.shared.state);
        state.compiled.clear();
        state.skipped.clear();
        for zone in zones.iter() {
            compile_into(&mut state, zone);
        }
        state.zones = zones;
        self.publish(&mut state);
        load_report(&state)
    }

    /// Adds or replaces one zone (after a PATCH), recompiling only it.
    pub fn upsert_zone(&self, zone: Zone) -> LoadReport {
        let mut state = lock(&self.shared.state);
        compile_into(&mut state, &zone);
        state.zones.insert(zone);
        self.publish(&mut state);
        load_report(&state)
    }

    /// Stops serving a zone; `false` when it was not served.
    pub fn remove_zone(&self, name: &str) -> bool {
        let mut state = lock(&self.shared.state);
        let key = zone_key(name);
        let removed = state.zones.remove(&key).is_some();
        state.compiled.remove(&key);
        state.skipped.remove(&key);
        self.publish(&mut state);
        removed
    }

    /// The zone as last given, if held.
    pub fn zone(&self, name: &str) -> Option<Zone> {
        lock(&self.shared.state).zones.get(name).cloned()
    }

    pub fn zones(&self) -> ZoneSet {
        lock(&self.shared.state).zones.clone()
    }

    /// Every held zone's name and serial, without copying the zones.
    pub fn zone_serials(&self) -> std::collections::BTreeMap<String, u32> {
        lock(&self.shared.state)
            .zones
            .iter()
            .map(|zone| (zone.name.clone(), zone.serial))
            .collect()
    }

    /// Replaces the health view; answers change when this returns.
    pub fn set_health(&self, health: HealthView) {
        self.replace_health(health, true);
    }

    /// Moves nodes in the health view in force ([`HealthView::apply`]) and
    /// publishes the answers of the rrsets holding an address whose status
    /// changed; the rest keep theirs. `false`, changing nothing, when no
    /// view was set yet ([`DnsHandle::set_health`] first).
    pub fn move_health(&self, moves: &[HealthMove]) -> bool {
        let mut state = lock(&self.shared.state);
        if !state.health_known {
            return false;
        }
        let touched = state.health.apply(moves);
        if !touched.is_empty() {
            self.publish_touched(&mut state, Some(&touched));
        }
        true
    }

    /// Replaces the health view and publishes; with `diff`, only the rrsets
    /// holding an address whose status changed are made again (without, as
    /// the tests compare with, every rrset is).
    fn replace_health(&self, health: HealthView, diff: bool) {
        let mut state = lock(&self.shared.state);
        // Diffing the views costs a pass over every address: worth it only
        // when some rrset's answers would otherwise all be made again.
        let answers_to_keep = state
            .compiled
            .values()
            .any(|zone| zone.address_rrsets().next().is_some());
        let touched = if diff && state.health_known && answers_to_keep {
            state.health.changed_addresses(&health)
        } else {
            None
        };
        state.health = health;
        state.health_known = true;
        self.publish_touched(&mut state, touched.as_ref());
    }

    /// The last-known-good memory (every A/AAAA rrset's last healthy
    /// addresses) in a stable order, and its generation, which moves
    /// whenever the memory changes.
    pub fn last_known_good(&self) -> (u64, Vec<RememberedSet>) {
        let state = lock(&self.shared.state);
        let mut sets: Vec<RememberedSet> = state
            .last_known_good
            .iter()
            .map(|((name, rtype), addresses)| RememberedSet {
                name: name.clone(),
                rtype: rtype.as_str().to_owned(),
                addresses: addresses.iter().copied().collect(),
            })
            .collect();
        sets.sort_by(|a, b| (&a.name, &a.rtype).cmp(&(&b.name, &b.rtype)));
        (state.last_known_good_generation, sets)
    }

    /// Puts back a memory [`DnsHandle::last_known_good`] gave an earlier
    /// process, for the rrsets served now (the others are ignored; an
    /// unknown type too), and answers by it from now on: for a daemon
    /// starting, so that an rrset whose nodes are all down answers with
    /// the addresses that were healthy last before the restart, not with
    /// every record as `fail_open` would.
    pub fn restore_last_known_good(&self, sets: Vec<RememberedSet>) -> usize {
        let mut state = lock(&self.shared.state);
        let mut restored = 0;
        for set in sets {
            let Some(rtype) = RrType::parse(&set.rtype).filter(|t| t.is_address()) else {
                continue;
            };
            let key = (set.name, rtype);
            if !state.modes.contains_key(&key) {
                continue;
            }
            state
                .last_known_good
                .insert(key, set.addresses.into_iter().collect());
            restored += 1;
        }
        self.publish(&mut state);
        restored
    }

    /// A/AAAA rrsets currently answering from an all-down fallback or with
    /// nothing to answer.
    pub fn degraded(&self) -> Vec<DegradedRrSet> {
        lock(&self.shared.state)
            .modes
            .iter()
            .filter(|(_, mode)| **mode != ServeMode::Healthy)
            .map(|((name, rtype), mode)| DegradedRrSet {
                name: name.clone(),
                rtype: rtype.as_str().to_owned(),
                mode: mode.as_str().to_owned(),
            })
            .collect()
    }

    pub fn metrics(&self) -> DnsMetrics {
        let counts = self.shared.counters.read();
        let state = lock(&self.shared.state);
        let count_mode = |wanted: ServeMode| state.modes.values().filter(|m| **m == wanted).count();
        DnsMetrics {
            counts,
            zones: state.compiled.len(),
            rrsets_fail_open: count_mode(ServeMode::FailOpen),
            rrsets_last_known_good: count_mode(ServeMode::LastKnownGood),
            rrsets_empty: count_mode(ServeMode::Empty),
            skipped: state.skipped.values().map(Vec::len).sum(),
        }
    }

    /// Derives answer sets from the compiled zones and health, swaps the new
    /// snapshot in, and logs rrsets whose serve mode changed.
    fn publish(&self, state: &mut State) {
        self.publish_touched(state, None);
    }

    /// Makes every zone's answers under the current health and serves them.
    /// With `touched` (the addresses whose status alone changed since the
    /// last publish), a zone compiled as then keeps its other rrsets'
    /// answers and makes again only those of the rrsets holding one.
    fn publish_touched(&self, state: &mut State, touched: Option<&HashSet<IpAddr>>) {
        let State {
            compiled,
            health,
            last_known_good,
            last_known_good_generation,
            health_known,
            modes,
            ..
        } = state;
        // The answers in force: a zone compiled as then keeps those of the
        // rrsets no touched address is in.
        let before = self.shared.snapshot();
        let remembered_before = last_known_good.len();
        let mut memory = Memory {
            sets: last_known_good,
            learn: *health_known,
            changed: false,
        };
        let mut served = Vec::with_capacity(compiled.len());
        let mut next_modes = BTreeMap::new();
        for zone in compiled.values() {
            let answers = match (touched, before.answers_of(zone)) {
                (Some(touched), Some(answers)) => {
                    let mut answers = answers.to_vec();
                    let sets: BTreeSet<usize> = touched
                        .iter()
                        .flat_map(|address| zone.sets_holding(*address).iter().copied())
                        .collect();
                    for index in sets {
                        if let (Some(slot), Some(set)) = (
                            answers.get_mut(index),
                            zone.answer_set_at(index, health, &mut memory),
                        ) {
                            *slot = set;
                        }
                    }
                    answers
                }
                _ => zone.answer_sets(health, &mut memory),
            };
            for ((owner, rtype), set) in zone.address_rrsets().zip(&answers) {
                next_modes.insert((owner.to_owned(), rtype), set.mode);
            }
            served.push(ServedZone {
                compiled: zone.clone(),
                answers,
            });
        }
        let mut remembered_changed = memory.changed;
        for (key, mode) in &next_modes {
            let before = modes.get(key).copied().unwrap_or(ServeMode::Healthy);
            if before == *mode {
                continue;
            }
            let (name, rtype) = key;
            if *mode == ServeMode::Healthy {
                tracing::info!(%name, %rtype, from = before.as_str(), "rrset answers from healthy records again");
            } else {
                tracing::warn!(%name, %rtype, mode = mode.as_str(), "no healthy record left; rrset answers by its all-down policy");
            }
        }
        let last_known_good = memory.sets;
        last_known_good.retain(|key, _| next_modes.contains_key(key));
        remembered_changed |= last_known_good.len() != remembered_before;
        if remembered_changed {
            *last_known_good_generation = last_known_good_generation.wrapping_add(1);
        }
        *modes = next_modes;
        let snapshot = Arc::new(Snapshot::new(served));
        let mut current = self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *current = snapshot;
    }
}

fn compile_into(state: &mut State, zone: &Zone) {
    let key = zone_key(&zone.name);
    let (compiled, skipped) = CompiledZone::compile(zone);
    for problem in &skipped {
        tracing::warn!(zone = %problem.zone, "{}", problem.message);
    }
    match compiled {
        Some(compiled) => {
            state.compiled.insert(key.clone(), Arc::new(compiled));
        }
        None => {
            state.compiled.remove(&key);
        }
    }
    state.skipped.insert(key, skipped);
}

fn load_report(state: &State) -> LoadReport {
    LoadReport {
        zones: state.compiled.len(),
        skipped: state.skipped.values().flatten().cloned().collect(),
    }
}

impl Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// What one query gets, whatever the transport. Lives on the stack for one
/// query only, so the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Judged<'s> {
    /// A response with this code and no records.
    Error(ResponseCode),
    Answer(Resolution<'s>),
}

/// The response's EDNS record and what to answer: an EDNS version other than
/// 0 gets BADVERS (RFC 6891 section 6.1.3, with an OPT record of version 0),
/// anything but a query FORMERR, another opcode NOTIMP, not exactly one
/// question FORMERR, another class than IN REFUSED; the rest is resolved in
/// `snapshot`.
fn judge<'s>(
    snapshot: &'s Snapshot,
    counters: &Counters,
    metadata: &Metadata,
    request_edns: Option<&Edns>,
    question: Option<(&LowerName, RecordType, DNSClass)>,
) -> (Option<Edns>, Judged<'s>) {
    let mut response_edns = None;
    if let Some(request_edns) = request_edns {
        let mut edns = Edns::new();
        edns.set_max_payload(request_edns.max_payload().max(CLASSIC_UDP_PAYLOAD));
        edns.set_version(0);
        if request_edns.version() > 0 {
            return (Some(edns), Judged::Error(ResponseCode::BADVERS));
        }
        response_edns = Some(edns);
    }
    if metadata.message_type != MessageType::Query {
        return (response_edns, Judged::Error(ResponseCode::FormErr));
    }
    if metadata.op_code != OpCode::Query {
        return (response_edns, Judged::Error(ResponseCode::NotImp));
    }
    let Some((name, qtype, class)) = question else {
        return (response_edns, Judged::Error(ResponseCode::FormErr));
    };
    if class != DNSClass::IN {
        return (response_edns, Judged::Error(ResponseCode::Refused));
    }
    let resolution = {
        let mut rng = rand::rng();
        snapshot.resolve(name, qtype, &mut |total| rng.random_range(0..total))
    };
    if let Some(mode) = resolution.fallback {
        counters.fallback(mode);
    }
    (response_edns, Judged::Answer(resolution))
}

fn answer_metadata(request: &Metadata, resolution: &Resolution<'_>) -> Metadata {
    let mut metadata = Metadata::response_from_request(request);
    metadata.authoritative = resolution.authoritative;
    metadata.recursion_available = false;
    metadata.response_code = resolution.rcode;
    metadata
}

/// The UDP socket loop: rate limit, answer, send; until `stopped`.
async fn serve_udp(
    socket: Arc<UdpSocket>,
    handle: DnsHandle,
    limiter: Arc<Mutex<Limiter>>,
    started: tokio::time::Instant,
    mut stopped: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let received = tokio::select! {
            _ = stopped.changed() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, src) = match received {
            Ok(received) => received,
            Err(error) => {
                // E.g. an ICMP error for an earlier answer; the socket is fine.
                tracing::debug!(%error, "UDP receive failed");
                continue;
            }
        };
        let Some(packet) = buf.get(..len) else {
            continue;
        };
        let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Some(reply) = handle.answer_udp_limited(packet, src.ip(), &limiter, now_ms) else {
            continue;
        };
        if let Err(error) = socket.send_to(&reply, src).await {
            handle.shared.counters.send_failure();
            tracing::debug!(%error, %src, "could not send DNS response");
        }
    }
}

impl DnsHandle {
    /// The bytes to send back for one UDP packet, or `None` when nothing must
    /// be sent: shorter than a DNS header, or a response (QR=1), which is
    /// never answered (reflection, loops between servers). No rate limit;
    /// the socket loop applies it first. Public for the fuzz targets.
    pub fn answer_udp(&self, packet: &[u8]) -> Option<Vec<u8>> {
        self.answer(packet, Transport::Udp)
    }

    /// [`DnsHandle::answer_udp`] for a query that came over TCP: the same
    /// rules, the answer only bounded by DNS' 64 KiB. Public for the fuzz
    /// targets.
    pub fn answer_tcp(&self, packet: &[u8]) -> Option<Vec<u8>> {
        self.answer(packet, Transport::Tcp)
    }

    fn answer(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let counters = &self.shared.counters;
        if !is_query_header(packet) {
            if packet.len() >= HEADER_LEN {
                counters.dropped_response();
            }
            return None;
        }
        counters.query(transport);
        let Ok(message) = Message::from_vec(packet) else {
            counters.response(u16::from(ResponseCode::FormErr));
            return Some(header_reply(packet, ResponseCode::FormErr, false, &[]));
        };
        let snapshot = self.shared.snapshot();
        let lower = match message.queries.as_slice() {
            [query] => Some((
                LowerName::from(query.name()),
                query.query_type(),
                query.query_class(),
            )),
            _ => None,
        };
        let question = lower
            .as_ref()
            .map(|(name, qtype, class)| (name, *qtype, *class));
        let (edns, judged) = judge(
            &snapshot,
            counters,
            &message.metadata,
            message.edns.as_ref(),
            question,
        );
        let max = match transport {
            Transport::Udp => message.edns.as_ref().map_or(CLASSIC_UDP_PAYLOAD, |e| {
                e.max_payload().clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
            }),
            Transport::Tcp => u16::MAX,
        };
        let encoded = match &judged {
            Judged::Error(rcode) => {
                let mut metadata = Metadata::response_from_request(&message.metadata);
                metadata.response_code = *rcode;
                encode(
                    &metadata,
                    &message.queries,
                    &[],
                    None,
                    &[],
                    &[],
                    edns.as_ref(),
                    max,
                )
            }
            Judged::Answer(resolution) => encode(
                &answer_metadata(&message.metadata, resolution),
                &message.queries,
                &resolution.answers,
                resolution.synthesized.as_ref(),
                &resolution.authorities,
                &resolution.additionals,
                edns.as_ref(),
                max,
            ),
        };
        match encoded {
            Ok((bytes, rcode)) => {
                counters.response(rcode);
                Some(bytes)
            }
            Err(error) => {
                counters.send_failure();
                tracing::debug!(%error, "could not encode a DNS response");
                None
            }
        }
    }

    /// [`DnsHandle::answer_udp`] behind the rate limiter.
    fn answer_udp_limited(
        &self,
        packet: &[u8],
        source: IpAddr,
        limiter: &Mutex<Limiter>,
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        if !is_query_header(packet) {
            return self.answer_udp(packet);
        }
        let verdict = limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(source, now_ms);
        match verdict {
            Verdict::Answer => self.answer_udp(packet),
            Verdict::Drop => {
                self.shared.counters.rate_limited(false);
                None
            }
            Verdict::Slip => {
                self.shared.counters.rate_limited(true);
                Some(header_reply(
                    packet,
                    ResponseCode::NoError,
                    true,
                    question_bytes(packet).unwrap_or_default(),
                ))
            }
        }
    }
}

const HEADER_LEN: usize = 12;

/// At least a header, and QR=0 (a query, not a response).
fn is_query_header(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN && packet.get(2).is_some_and(|flags| flags & 0x80 == 0)
}

/// A reply built from the query's header alone (id, opcode, RD): QR=1, the
/// given code, TC when `truncated`, and `question` (the query's own question
/// bytes, or nothing) as the only section. Never larger than the query.
fn header_reply(packet: &[u8], rcode: ResponseCode, truncated: bool, question: &[u8]) -> Vec<u8> {
    let byte = |i: usize| packet.get(i).copied().unwrap_or(0);
    let opcode_and_rd = byte(2) & 0x79;
    let mut flags = 0x80 | opcode_and_rd;
    if truncated {
        flags |= 0x02;
    }
    let low_code = u8::try_from(u16::from(rcode) & 0x0f).unwrap_or(0);
    let mut out = vec![
        byte(0),
        byte(1),
        flags,
        low_code,
        0,
        u8::from(!question.is_empty()),
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    out.extend_from_slice(question);
    out
}

/// The raw question section of a query with exactly one question whose name
/// is uncompressed (as queries' are); `None` otherwise.
fn question_bytes(packet: &[u8]) -> Option<&[u8]> {
    if packet.get(4..6)? != [0, 1] {
        return None;
    }
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 || at - HEADER_LEN > 255 {
            return None;
        }
        at = at.checked_add(len)?.checked_add(1)?;
    }
    packet.get(HEADER_LEN..at.checked_add(5)?)
}

/// Encodes a response within `max` bytes: records that do not fit are left
/// out and TC is set (the client retries over TCP). Returns the bytes and the
/// full response code.
#[allow(clippy::too_many_arguments)]
fn encode(
    metadata: &Metadata,
    queries: &[Query],
    answers: &[&DnsRecord],
    synthesized: Option<&DnsRecord>,
    authorities: &[&DnsRecord],
    additionals: &[&DnsRecord],
    edns: Option<&Edns>,
    max: u16,
) -> Result<(Vec<u8>, u16), hickory_proto::ProtoError> {
    let mut bytes = Vec::with_capacity(usize::from(CLASSIC_UDP_PAYLOAD));
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    let header = emit_message_parts(
        metadata,
        &mut queries.iter(),
        &mut answers.iter().copied().chain(synthesized),
        &mut authorities.iter().copied(),
        &mut additionals.iter().copied(),
        edns,
        None,
        &mut encoder,
    )?;
    Ok((bytes, u16::from(header.metadata.response_code)))
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod publish_tests;
