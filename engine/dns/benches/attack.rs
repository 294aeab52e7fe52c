//! The embedded DNS server under attack, on loopback; prints figures.
//!
//! 1. Amplification at EDNS 4096: bytes answered per byte asked, for `ANY`
//!    at a fat apex (SOA, NS and 40 TXT records) and for a normal `A` query.
//!    "Before" is the answer `ANY` used to get (every RRset at the name),
//!    encoded from the same records; "now" is what the server sends.
//! 2. A flood: one client (127.0.8.1) sends `ANY` queries as fast as it can
//!    for `DNS_ATTACK_SECONDS` (default 10 s, at most 5,000,000 packets)
//!    while another client (127.0.9.1, another /24) sends 15 `A` queries
//!    spread over the flood. Run twice: with the default rate limit and
//!    with the limit off (what the server did before). Reported: the other
//!    client's queries lost at the first try (1 s timeout) and lost after
//!    three tries (as `dig +time=1 +tries=3`), and the bytes the flooded
//!    address received per byte it "sent" (the reflection factor).
//!
//! `cargo bench -p neutral-dns --bench attack`. Loopback only; every loop
//! and wait is bounded.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use neutral_dns::{
    DnsServer, RateLimit, Record, RrSetChange, Zone, ZonePatch, ZoneRules, ZoneSet, apply_patch,
};
use tokio::net::UdpSocket;

const MAX_FLOOD_PACKETS: u64 = 5_000_000;
const OTHER_QUERIES: u16 = 15;

fn zone() -> Zone {
    let zone =
        Zone::create("example.com.", &["ns1.example.com.", "ns2.example.com."]).expect("zone");
    let txt: Vec<Record> = (0..40)
        .map(|i| {
            Record::new(format!(
                "\"v=spf1 include:_spf{i}.example.net ~all padding padding\""
            ))
        })
        .collect();
    apply_patch(
        &zone,
        &ZonePatch {
            rrsets: vec![
                RrSetChange::replace("example.com.", "TXT", 300, txt),
                RrSetChange::replace(
                    "app.example.com.",
                    "A",
                    30,
                    vec![
                        Record::new("192.0.2.1").weighted(100),
                        Record::new("192.0.2.2").weighted(50),
                    ],
                ),
            ],
        },
    )
    .expect("patch")
}

fn query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_str(name).expect("name"), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    message.edns = Some(edns);
    message.to_vec().expect("encode")
}

async fn socket_on(ip: &str, server: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(format!("{ip}:0")).await.expect("bind");
    socket.connect(server).await.expect("connect");
    socket
}

async fn ask(socket: &UdpSocket, packet: &[u8], wait: Duration) -> Option<Message> {
    socket.send(packet).await.ok()?;
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let mut buf = vec![0u8; 65535];
    let until = Instant::now() + wait;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let len = tokio::time::timeout(left, socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        if let Ok(message) = Message::from_vec(&buf[..len])
            && message.metadata.id == id
        {
            return Some(message);
        }
    }
    None
}

async fn amplification(server: SocketAddr) {
    let client = socket_on("127.0.10.1", server).await;
    let any = query(1, "example.com.", RecordType::ANY);
    let reply = ask(&client, &any, Duration::from_secs(2))
        .await
        .expect("ANY answered");
    let now = reply.to_vec().expect("encode").len();
    // Before: every RRset at the name in one answer.
    let mut full = reply.clone();
    full.answers.clear();
    for (i, rtype) in [RecordType::SOA, RecordType::NS, RecordType::TXT]
        .into_iter()
        .enumerate()
    {
        let part = ask(
            &client,
            &query(10 + i as u16, "example.com.", rtype),
            Duration::from_secs(2),
        )
        .await
        .expect("answered");
        full.answers.extend(part.answers);
    }
    let before = full.to_vec().expect("encode").len();
    let a = query(2, "app.example.com.", RecordType::A);
    let a_reply = ask(&client, &a, Duration::from_secs(2))
        .await
        .expect("A answered");
    let a_len = a_reply.to_vec().expect("encode").len();
    println!("amplification at EDNS 4096 (bytes answered / bytes asked):");
    println!(
        "  ANY example.com (SOA, 2 NS, 40 TXT): query {} B; before {} B = x{:.1}; now {} B = x{:.2} ({})",
        any.len(),
        before,
        before as f64 / any.len() as f64,
        now,
        now as f64 / any.len() as f64,
        reply
            .answers
            .first()
            .map_or("nothing".to_owned(), |r| format!(
                "{} {}",
                r.record_type(),
                r.data
            )),
    );
    println!(
        "  A app.example.com: query {} B; answer {} B = x{:.2}",
        a.len(),
        a_len,
        a_len as f64 / a.len() as f64
    );
}

struct FloodResult {
    seconds: f64,
    sent: u64,
    sent_bytes: u64,
    received: u64,
    received_bytes: u64,
    first_try_lost: u16,
    lost: u16,
    server_dropped: u64,
    server_slipped: u64,
}

async fn flood(limit: RateLimit, seconds: u64) -> FloodResult {
    let zones: ZoneSet = [zone()].into_iter().collect();
    let server = DnsServer::bind_with("127.0.0.1:0".parse().expect("addr"), zones, limit)
        .await
        .expect("bind");
    let addr = server.local_addr();
    let flooder = Arc::new(socket_on("127.0.8.1", addr).await);
    let packet = query(1, "example.com.", RecordType::ANY);
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let received_bytes = Arc::new(AtomicU64::new(0));
    let reader = {
        let (flooder, stop, received, received_bytes) = (
            flooder.clone(),
            stop.clone(),
            received.clone(),
            received_bytes.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Ok(len)) =
                    tokio::time::timeout(Duration::from_millis(200), flooder.recv(&mut buf)).await
                {
                    received.fetch_add(1, Ordering::Relaxed);
                    received_bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let started = Instant::now();
    let flood_for = Duration::from_secs(seconds);
    let writer = {
        let flooder = flooder.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            while started.elapsed() < flood_for && sent < MAX_FLOOD_PACKETS {
                if flooder.send(&packet).await.is_ok() {
                    sent += 1;
                }
                if sent.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            (sent, sent * packet.len() as u64)
        })
    };
    let other = socket_on("127.0.9.1", addr).await;
    let spacing = flood_for / u32::from(OTHER_QUERIES + 1);
    let (mut first_try_lost, mut lost) = (0u16, 0u16);
    for i in 0..OTHER_QUERIES {
        tokio::time::sleep(spacing).await;
        let packet = query(100 + i, "app.example.com.", RecordType::A);
        let mut answered = false;
        for attempt in 0..3 {
            let reply = ask(&other, &packet, Duration::from_secs(1)).await;
            if reply.is_some_and(|m| m.answers.len() == 1) {
                answered = true;
                break;
            }
            if attempt == 0 {
                first_try_lost += 1;
            }
        }
        lost += u16::from(!answered);
    }
    let (sent, sent_bytes) = writer.await.expect("writer");
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.expect("reader");
    let counts = server.handle().metrics().counts;
    server.shutdown().await.expect("shutdown");
    FloodResult {
        seconds,
        sent,
        sent_bytes,
        received: received.load(Ordering::Relaxed),
        received_bytes: received_bytes.load(Ordering::Relaxed),
        first_try_lost,
        lost,
        server_dropped: counts.rate_limited_dropped,
        server_slipped: counts.rate_limited_slipped,
    }
}

fn print_flood(label: &str, r: &FloodResult) {
    println!("{label}:");
    println!(
        "  flood: {} ANY queries in {:.1} s ({:.0}/s), {} B; the flooded address got {} packets, {} B = x{:.3} of what was sent",
        r.sent,
        r.seconds,
        r.sent as f64 / r.seconds,
        r.sent_bytes,
        r.received,
        r.received_bytes,
        r.received_bytes as f64 / r.sent_bytes.max(1) as f64,
    );
    println!(
        "  server: {} dropped, {} slipped (TC=1) by the rate limit",
        r.server_dropped, r.server_slipped
    );
    println!(
        "  other client (another /24): {} of {OTHER_QUERIES} lost at the first try, {} of {OTHER_QUERIES} lost after 3 tries",
        r.first_try_lost, r.lost
    );
}

fn main() {
    let seconds = std::env::var("DNS_ATTACK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10u64)
        .clamp(1, 120);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let zones: ZoneSet = [zone()].into_iter().collect();
        let server = DnsServer::bind("127.0.0.1:0".parse().expect("addr"), zones)
            .await
            .expect("bind");
        amplification(server.local_addr()).await;
        server.shutdown().await.expect("shutdown");
        let limited = RateLimit {
            exempt_loopback: false,
            ..RateLimit::default()
        };
        println!(
            "flood of {seconds} s, rate limit {}/s per /24, burst {}, slip {}:",
            limited.responses_per_second, limited.burst, limited.slip
        );
        let with_limit = flood(limited, seconds).await;
        print_flood("with the rate limit (now)", &with_limit);
        let without = flood(RateLimit::off(), seconds).await;
        print_flood("without a rate limit (ANY still minimal)", &without);
    });
}
