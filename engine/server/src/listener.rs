//! The API's serving loop: accepts TCP connections, admits them through the
//! connection limits ([`crate::connlimit`]), optionally completes a TLS
//! handshake, and serves HTTP/1.1 — or HTTP/2, which the agent stream's
//! gRPC needs — with hyper on each, until told to stop. Requests with a
//! gRPC content type go to the gRPC router, all others to the API's.
//!
//! The protocol is chosen by ALPN with TLS (`h2`, else HTTP/1.1), and
//! without TLS by the first bytes: HTTP/2's connection preface (prior
//! knowledge, as gRPC clients send it) or else HTTP/1.1. Without TLS one
//! header-read timeout, counted from the accept, covers both the choice and
//! the first request head: a client whose first bytes look like the preface
//! and then diverge gets no second timeout.
//!
//! What it enforces, per connection:
//! - **Limits.** A connection a limit refuses is accepted and closed at once
//!   (so the kernel's backlog never fills with it), counted, and logged at
//!   most once per [`LOG_EVERY`] per limit with the number left unlogged.
//! - **TLS handshake timeout.** A handshake not done within it ends the
//!   connection.
//! - **Header-read timeout** (hyper's): a request head not complete within
//!   it ends the connection. hyper starts it whenever it waits for a head —
//!   on a new connection and between keep-alive requests — so silent,
//!   one-byte-at-a-time and idle keep-alive connections are all evicted by
//!   it.
//! - **Idle timeout**: no byte read or written for this long, at any stage
//!   (a stalled body upload, a client that stops reading its answer), ends
//!   the connection ([`IdleIo`]).
//! - **HTTP/2**: at most [`H2_STREAMS_PER_CONNECTION`] concurrent streams
//!   per connection (more are refused by HTTP/2 itself), request heads of at
//!   most 16 KiB, and a keep-alive ping every header-read timeout that must
//!   be answered within it, so a peer that vanished without a word is found.
//!
//! It also raises the process's open-file soft limit to the hard limit
//! ([`raise_fd_limit`]). It must not know the API's routes or the world:
//! it is handed a router and a [`ConnTable`].

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use neutral_core::log_gate::LogGate;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::connlimit::{ConnTable, Permit, Refusal};

/// A limit's refusals are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(5);
/// After an accept error (e.g. out of file descriptors) the loop waits this
/// long before accepting again, instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Connections still open this long after the stop are dropped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The listen backlog.
const BACKLOG: u32 = 1024;
/// Concurrent HTTP/2 streams per connection: an agent needs one.
pub const H2_STREAMS_PER_CONNECTION: u32 = 16;
/// HTTP/2's connection preface, which a client speaking HTTP/2 without TLS
/// sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The routers a connection's requests go to.
#[derive(Clone, Debug)]
pub struct Routers {
    /// The JSON API (and the status page).
    pub api: Router,
    /// gRPC services (`content-type: application/grpc…`).
    pub grpc: Router,
}

impl Routers {
    fn route(&self, request: &hyper::Request<Incoming>) -> Router {
        let grpc = request
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if grpc {
            self.grpc.clone()
        } else {
            self.api.clone()
        }
    }
}

/// The timeouts each connection is served with.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
    pub tls_handshake: Duration,
}

/// Binds `addr` with a backlog of [`BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The process's open-file limits before and after [`raise_fd_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimits {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the open-file soft limit to the hard limit (a process may always
/// do so) and says what it was and is.
pub fn raise_fd_limit() -> io::Result<FdLimits> {
    let (soft_before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft_before < hard {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
    }
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    Ok(FdLimits {
        soft_before,
        soft,
        hard,
    })
}

/// Serves `router` on `listener` until `stop` turns true, then lets open
/// connections finish for at most [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Routers,
    table: Arc<ConnTable>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let (mut per_ip_log, mut total_log, mut error_log) = (
        LogGate::new(LOG_EVERY),
        LogGate::new(LOG_EVERY),
        LogGate::new(LOG_EVERY),
    );
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                if let Some(held_back) = error_log.pass(Instant::now()) {
                    tracing::warn!(%error, held_back, "API: cannot accept a connection");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let permit = match table.admit(peer.ip(), Instant::now()) {
            Ok(permit) => permit,
            Err(refusal) => {
                drop(stream);
                log_refusal(refusal, peer.ip(), &table, &mut per_ip_log, &mut total_log);
                continue;
            }
        };
        connections.spawn(connection(
            stream,
            peer,
            tls.clone(),
            router.clone(),
            permit,
            timeouts,
            stop.clone(),
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "API connections still open after {DRAIN_TIMEOUT:?}: closed"
        );
        connections.shutdown().await;
    }
}

fn log_refusal(
    refusal: Refusal,
    client: IpAddr,
    table: &ConnTable,
    per_ip_log: &mut LogGate,
    total_log: &mut LogGate,
) {
    let now = Instant::now();
    match refusal {
        Refusal::PerIp { open, limit } => {
            if let Some(held_back) = per_ip_log.pass(now) {
                tracing::warn!(
                    %client,
                    open,
                    limit,
                    refused_since_last_line = held_back + 1,
                    "API connection refused: per-client connection limit reached \
                     (--max-connections-per-ip)"
                );
            }
        }
        Refusal::Total {
            open,
            limit,
            reserved,
        } => {
            if let Some(held_back) = total_log.pass(now) {
                tracing::warn!(
                    %client,
                    open,
                    limit,
                    node_reserve = table.limits().reserve,
                    only_node_reserve_left = reserved,
                    refused_since_last_line = held_back + 1,
                    "API connection refused: connection limit reached (--max-connections)"
                );
            }
        }
    }
}

/// One connection: TLS handshake (bounded), then HTTP/1.1 or HTTP/2 until
/// the client leaves, a timeout ends it, or the daemon stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Routers,
    permit: Permit,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
) {
    let _permit = permit;
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let h2 = match tokio::time::timeout(timeouts.header_read, speaks_h2(&stream)).await {
                Ok(Ok(h2)) => h2,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "API connection ended before a request");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no request within the header-read timeout");
                    return;
                }
            };
            let io = IdleIo::new(stream, timeouts.idle);
            let first_head_by = tokio::time::Instant::from_std(accepted + timeouts.header_read);
            http(io, h2, Some(first_head_by), peer, router, timeouts, stop).await;
        }
        Some(acceptor) => {
            let io = IdleIo::new(stream, timeouts.idle);
            match tokio::time::timeout(timeouts.tls_handshake, acceptor.accept(io)).await {
                Ok(Ok(stream)) => {
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    http(stream, h2, None, peer, router, timeouts, stop).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Whether a plain-text client opened with HTTP/2's preface: waits (the
/// caller bounds how long) until the bytes it sent tell, without consuming
/// them.
async fn speaks_h2(stream: &TcpStream) -> io::Result<bool> {
    let mut seen = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut seen).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a request",
            ));
        }
        let (got, want) = (
            seen.get(..n).unwrap_or(&[]),
            H2_PREFACE.get(..n).unwrap_or(&[]),
        );
        if got != want {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface (clients send it in one write; this is rare):
        // look again shortly.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves one connection. `first_head_by`, when given, is when the first
/// request's head must have arrived; hyper's own header-read timeout then
/// bounds every later one.
async fn http<I>(
    io: I,
    h2: bool,
    first_head_by: Option<tokio::time::Instant>,
    peer: SocketAddr,
    router: Routers,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The client's address reaches the handlers (registration rate limit,
    // the node reserve) as axum's `ConnectInfo`.
    let head_seen = Arc::new(AtomicBool::new(false));
    let seen_by_service = Arc::clone(&head_seen);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        seen_by_service.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.route(&request);
        router.call(request)
    });
    let io = TokioIo::new(io);
    let result = if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_STREAMS_PER_CONNECTION)
            .max_header_list_size(16 * 1024)
            .keep_alive_interval(Some(timeouts.header_read))
            .keep_alive_timeout(timeouts.header_read);
        until_stopped(builder.serve_connection(io, service), &mut stop).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header_read)
            .keep_alive(true);
        let served = until_stopped(builder.serve_connection(io, service), &mut stop);
        tokio::select! {
            result = served => result,
            () = first_head_missed(first_head_by, &head_seen) => {
                tracing::debug!(%peer, "no request head within the header-read timeout");
                Ok(())
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "API connection ended");
    }
}

/// Ready once `by` passed without a request head seen; never otherwise.
async fn first_head_missed(by: Option<tokio::time::Instant>, head_seen: &AtomicBool) {
    match by {
        Some(by) => {
            tokio::time::sleep_until(by).await;
            if head_seen.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Serves `conn` until it ends, or shuts it down gracefully once `stop`
/// changes (HTTP/1 and HTTP/2 alike).
async fn until_stopped<C: GracefulConnection>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), C::Error> {
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// A stream that fails with `TimedOut` once no byte was read or written for
/// `timeout`.
#[derive(Debug)]
pub struct IdleIo<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleIo<S> {
    pub fn new(inner: S, timeout: Duration) -> IdleIo<S> {
        IdleIo {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn progress(&mut self) {
        let next = tokio::time::Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// A write's outcome: bytes written are progress; `Pending` waits unless
    /// the deadline passed.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    self.progress();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.expired(cx).map(Err),
        }
    }

    /// `Pending` unless the deadline passed (then the error to return).
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.progress();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        this.after_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.expired(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.expired(cx).map(Err),
            ready => ready,
        }
    }
}

/// Loads a PEM certificate chain and key into a TLS acceptor speaking
/// HTTP/2 or HTTP/1.1 (ALPN `h2`, `http/1.1`).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("key: {0}")]
    Key(String),
    #[error("certificate and key: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_times_out_and_a_talking_one_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let mut server = IdleIo::new(server, Duration::from_millis(300));
        let mut client = client;
        let talker = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                client.write_all(b"x").await?;
            }
            // Then silence, connection kept open.
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, io::Error>(client)
        });
        let started = tokio::time::Instant::now();
        let mut received = 0;
        let mut buf = [0u8; 8];
        let error = loop {
            match server.read(&mut buf).await {
                Ok(0) => panic!("closed, not timed out"),
                Ok(n) => received += n,
                Err(error) => break error,
            }
        };
        assert_eq!(received, 5, "every byte arrived before the timeout");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let elapsed = started.elapsed();
        // Paused time: the last byte at 500 ms, the timeout 300 ms later.
        assert_eq!(elapsed, Duration::from_millis(800));
        talker.abort();
    }

    /// A client whose first byte looks like HTTP/2's preface and whose next
    /// ones trickle in gets one header-read timeout from its accept, not one
    /// for the protocol choice and a second for the request head.
    #[tokio::test]
    async fn a_preface_lookalike_trickling_in_gets_one_header_read_timeout() {
        use crate::connlimit::ConnLimits;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let header_read = Duration::from_millis(1000);
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let table = ConnTable::new(ConnLimits {
            total: 16,
            per_ip: 16,
            reserve: 0,
        });
        let routers = Routers {
            api: Router::new(),
            grpc: Router::new(),
        };
        let timeouts = Timeouts {
            header_read,
            idle: Duration::from_secs(30),
            tls_handshake: Duration::from_secs(5),
        };
        let server = tokio::spawn(serve(listener, None, routers, table, timeouts, stop));

        let mut client = TcpStream::connect(addr).await.unwrap();
        let opened = Instant::now();
        // "P" matches the preface, "O" (at 900 ms) does not: HTTP/1.1.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"P").await.unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        client.write_all(b"O").await.unwrap();
        let mut buf = [0u8; 64];
        let closed_after = loop {
            match tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break opened.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => {
                    assert!(opened.elapsed() < Duration::from_secs(5), "never closed");
                    if client.write_all(b"S").await.is_err() {
                        break opened.elapsed();
                    }
                }
            }
        };
        // One timeout ends it at ~1,000 ms; a second would have run to ~1,900
        // (the margin is for a loaded machine's timers).
        assert!(
            closed_after >= Duration::from_millis(900)
                && closed_after < Duration::from_millis(1800),
            "closed after {closed_after:?}"
        );
        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }
}
