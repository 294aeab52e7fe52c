//! The embedded authoritative DNS server: UDP and TCP sockets (hickory-server
//! on tokio), the current [`Snapshot`], and the handle the daemon updates it
//! through.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record as DnsRecord};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::Rng as _;
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};

use crate::content::RrType;
use crate::health::{HealthView, ServeMode};
use crate::metrics::{Counters, DnsMetrics, Transport};
use crate::snapshot::{CompiledZone, ServedZone, Skipped, Snapshot};
use crate::zone::{Zone, ZoneSet, zone_key};

/// How long an idle TCP connection stays open.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: usize = 20;
/// How long [`DnsServer::shutdown`] waits for the socket tasks to end.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

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
    server: Server<Handler>,
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
    modes: BTreeMap<(String, RrType), ServeMode>,
}

struct Handler {
    shared: Arc<Shared>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: one free port for both) and starts
    /// serving `initial`. Must be called inside a tokio runtime.
    pub async fn bind(addr: SocketAddr, initial: ZoneSet) -> Result<DnsServer, DnsError> {
        let (udp, tcp, local_addr) = bind_sockets(addr).await?;
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            state: Mutex::new(State::default()),
            counters: Counters::default(),
        });
        let handle = DnsHandle { shared };
        // Problems in `initial` are logged as the zones compile.
        let report = handle.set_zones(initial);
        let mut server = Server::new(Handler {
            shared: handle.shared.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(%local_addr, zones = report.zones, "embedded DNS server listening (UDP and TCP)");
        Ok(DnsServer {
            local_addr,
            handle,
            server,
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
    /// the socket tasks to end.
    pub async fn shutdown(mut self) -> Result<(), DnsError> {
        let addr = self.local_addr;
        let result =
            tokio::time::timeout(SHUTDOWN_TIMEOUT, self.server.shutdown_gracefully()).await;
        match result {
            Ok(Ok(())) => {
                tracing::info!(%addr, "embedded DNS server stopped");
                Ok(())
            }
            Ok(Err(error)) => Err(DnsError::Shutdown {
                addr,
                message: error.to_string(),
            }),
            Err(_) => Err(DnsError::Shutdown {
                addr,
                message: format!("socket tasks still running after {SHUTDOWN_TIMEOUT:?}"),
            }),
        }
    }
}

async fn bind_sockets(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    let bind_error = |protocol, addr, source| DnsError::Bind {
        protocol,
        addr,
        source,
    };
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_error("UDP", addr, e))?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| bind_error("TCP", addr, e))?;
        return Ok((udp, tcp, addr));
    }
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_error("UDP", addr, e))?;
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

    /// Replaces the health view; answers change when this returns.
    pub fn set_health(&self, health: HealthView) {
        let mut state = lock(&self.shared.state);
        state.health = health;
        self.publish(&mut state);
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
        let State {
            compiled,
            health,
            last_known_good,
            modes,
            ..
        } = state;
        let mut served = Vec::with_capacity(compiled.len());
        let mut next_modes = BTreeMap::new();
        for zone in compiled.values() {
            let answers = zone.answer_sets(health, last_known_good);
            for ((owner, rtype), set) in zone.address_rrsets().zip(&answers) {
                next_modes.insert((owner.to_owned(), rtype), set.mode);
            }
            served.push(ServedZone {
                compiled: zone.clone(),
                answers,
            });
        }
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
        last_known_good.retain(|key, _| next_modes.contains_key(key));
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

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let counters = &self.shared.counters;
        counters.query(match request.protocol() {
            Protocol::Udp => Transport::Udp,
            Protocol::Tcp => Transport::Tcp,
            #[allow(unreachable_patterns)]
            _ => Transport::Other,
        });

        let mut response_edns = None;
        if let Some(request_edns) = &request.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(request_edns.max_payload().max(512));
            edns.set_version(0);
            if request_edns.version() > 0 {
                return self
                    .send_error(request, ResponseCode::BADVERS, Some(&edns), response_handle)
                    .await;
            }
            response_edns = Some(edns);
        }
        let edns = response_edns.as_ref();

        if request.metadata.message_type != MessageType::Query {
            return self
                .send_error(request, ResponseCode::FormErr, edns, response_handle)
                .await;
        }
        if request.metadata.op_code != OpCode::Query {
            return self
                .send_error(request, ResponseCode::NotImp, edns, response_handle)
                .await;
        }
        let Ok(info) = request.request_info() else {
            return self
                .send_error(request, ResponseCode::FormErr, edns, response_handle)
                .await;
        };
        if info.query.query_class() != DNSClass::IN {
            return self
                .send_error(request, ResponseCode::Refused, edns, response_handle)
                .await;
        }

        let snapshot = self.shared.snapshot();
        let resolution = {
            let mut rng = rand::rng();
            snapshot.resolve(info.query.name(), info.query.query_type(), &mut |total| {
                rng.random_range(0..total)
            })
        };
        if let Some(mode) = resolution.fallback {
            counters.fallback(mode);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = resolution.authoritative;
        metadata.recursion_available = false;
        metadata.response_code = resolution.rcode;
        let response = MessageResponseBuilder::new(&request.queries, edns).build(
            metadata,
            resolution.answers.iter().copied(),
            resolution.authorities.iter().copied(),
            std::iter::empty::<&DnsRecord>(),
            resolution.additionals.iter().copied(),
        );
        self.sent(request, response_handle.send_response(response).await)
    }
}

impl Handler {
    async fn send_error<R: ResponseHandler>(
        &self,
        request: &Request,
        rcode: ResponseCode,
        edns: Option<&Edns>,
        mut response_handle: R,
    ) -> ResponseInfo {
        let response =
            MessageResponseBuilder::new(&request.queries, edns).error_msg(&request.metadata, rcode);
        self.sent(request, response_handle.send_response(response).await)
    }

    /// Counts a sent response (or a failure to send one).
    fn sent(
        &self,
        request: &Request,
        result: Result<ResponseInfo, hickory_server::net::NetError>,
    ) -> ResponseInfo {
        match result {
            Ok(info) => {
                self.shared.counters.response(u16::from(info.response_code));
                info
            }
            Err(error) => {
                self.shared.counters.send_failure();
                tracing::debug!(%error, src = %request.src(), "could not send DNS response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
