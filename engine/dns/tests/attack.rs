//! The embedded server under hostile traffic, on loopback: responses sent to
//! it (reflection), `ANY` amplification, a flood from one client prefix
//! while another client asks, and EDNS versions it does not speak. Clients
//! bind distinct 127.x source addresses so that they fall in different
//! rate-limit prefixes. Every wait is bounded.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use neutral_dns::server::RateLimit;
use neutral_dns::{
    DnsServer, Record, RrSetChange, Zone, ZonePatch, ZoneRules, ZoneSet, apply_patch,
};
use tokio::net::UdpSocket;

/// A zone with a fat apex (many TXT records), like the one the outside test
/// used to measure `ANY` amplification.
fn zone() -> Zone {
    let zone = Zone::create("example.com.", &["ns1.example.com.", "ns2.example.com."]).unwrap();
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
                        Record::new("127.0.0.11").weighted(100),
                        Record::new("127.0.0.12").weighted(50),
                    ],
                ),
                RrSetChange::replace("app.example.com.", "TXT", 30, vec![Record::new("\"hi\"")]),
                RrSetChange::replace(
                    "www.example.com.",
                    "CNAME",
                    300,
                    vec![Record::new("app.example.com.")],
                ),
            ],
        },
    )
    .unwrap()
}

async fn start(limit: RateLimit) -> DnsServer {
    let set: ZoneSet = [zone()].into_iter().collect();
    DnsServer::bind_with("127.0.0.1:0".parse().unwrap(), set, limit)
        .await
        .unwrap()
}

fn query(id: u16, name: &str, rtype: RecordType, edns: Option<(u16, u8)>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    if let Some((payload, version)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e.set_version(version);
        message.edns = Some(e);
    }
    message.to_vec().unwrap()
}

/// A UDP socket on `source` (any 127.x address) that sends raw packets and
/// waits a bounded time for one answer.
struct Client {
    socket: UdpSocket,
}

impl Client {
    async fn on(source: &str, server: SocketAddr) -> Client {
        let ip: IpAddr = source.parse().unwrap();
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
        socket.connect(server).await.unwrap();
        Client { socket }
    }

    async fn send(&self, bytes: &[u8]) {
        self.socket.send(bytes).await.unwrap();
    }

    async fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65535];
        match tokio::time::timeout(wait, self.socket.recv(&mut buf)).await {
            Ok(Ok(len)) => Some(buf[..len].to_vec()),
            _ => None,
        }
    }

    /// Sends `bytes` and returns the answer with the same id, if any comes.
    async fn ask(&self, bytes: &[u8], wait: Duration) -> Option<Message> {
        self.send(bytes).await;
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        let until = Instant::now() + wait;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let raw = self.recv(left).await?;
            if let Ok(m) = Message::from_vec(&raw)
                && m.metadata.id == id
            {
                return Some(m);
            }
        }
        None
    }
}

const SHORT: Duration = Duration::from_millis(300);
const ANSWER: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_sent_to_the_server_are_dropped_not_answered() {
    let server = start(RateLimit::default()).await;
    let client = Client::on("127.0.3.1", server.local_addr()).await;
    // A well-formed response, a response whose body does not parse, a bare
    // response header claiming a question, and an error response.
    let mut answer = Message::from_vec(&query(7, "app.example.com.", RecordType::A, None)).unwrap();
    answer.metadata.message_type = MessageType::Response;
    let well_formed = answer.to_vec().unwrap();
    let mut garbage_body = well_formed[..12].to_vec();
    garbage_body.extend_from_slice(&[0xff; 40]);
    let mut bare = well_formed[..12].to_vec();
    bare[5] = 1;
    let mut formerr = well_formed.clone();
    formerr[3] |= 0x01;
    for packet in [&well_formed, &garbage_body, &bare, &formerr] {
        client.send(packet).await;
        assert_eq!(client.recv(SHORT).await, None, "answered {packet:02x?}");
    }
    // The server still answers queries from the same client.
    let reply = client
        .ask(&query(9, "app.example.com.", RecordType::A, None), ANSWER)
        .await
        .expect("a query is answered");
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_edns_version_gets_badvers() {
    let server = start(RateLimit::default()).await;
    let client = Client::on("127.0.3.2", server.local_addr()).await;
    for version in [1u8, 255] {
        let reply = client
            .ask(
                &query(11, "app.example.com.", RecordType::A, Some((1232, version))),
                ANSWER,
            )
            .await
            .expect("an answer");
        // Code 16 on the wire (4 bits in the header, 1 in the OPT record);
        // hickory decodes 16 by its other name, BADSIG.
        assert_eq!(
            u16::from(reply.metadata.response_code),
            16,
            "version {version}"
        );
        assert_eq!(u16::from(ResponseCode::BADVERS), 16);
        let edns = reply
            .edns
            .as_ref()
            .expect("BADVERS travels in an OPT record");
        assert_eq!(edns.version(), 0, "we speak version 0");
        assert!(reply.answers.is_empty());
    }
    let reply = client
        .ask(
            &query(12, "app.example.com.", RecordType::A, Some((1232, 0))),
            ANSWER,
        )
        .await
        .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_is_answered_minimally_per_rfc_8482() {
    let server = start(RateLimit::default()).await;
    let client = Client::on("127.0.3.3", server.local_addr()).await;
    let ask = |name: &'static str, id: u16| {
        let bytes = query(id, name, RecordType::ANY, Some((4096, 0)));
        let client = &client;
        async move {
            let len = bytes.len();
            let reply = client.ask(&bytes, ANSWER).await.expect("an answer");
            (len, reply)
        }
    };
    // The apex holds SOA, NS and 40 TXT records: a synthesized HINFO.
    let (sent, reply) = ask("example.com.", 21).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 1, "{reply:?}");
    let RData::HINFO(hinfo) = &reply.answers[0].data else {
        panic!("expected HINFO: {reply:?}");
    };
    assert_eq!(hinfo.cpu.as_ref(), b"RFC8482");
    let received = reply.to_vec().unwrap().len();
    assert!(
        received <= 3 * sent,
        "{received} bytes for a {sent}-byte query"
    );
    // A name with an address set: that one RRset (one weighted address).
    let (_, reply) = ask("app.example.com.", 22).await;
    assert_eq!(reply.answers.len(), 1, "{reply:?}");
    assert_eq!(reply.answers[0].record_type(), RecordType::A);
    // A CNAME: the CNAME alone.
    let (_, reply) = ask("www.example.com.", 23).await;
    assert_eq!(reply.answers.len(), 1, "{reply:?}");
    assert_eq!(reply.answers[0].record_type(), RecordType::CNAME);
    // Missing names stay NXDOMAIN.
    let (_, reply) = ask("nope.example.com.", 24).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_prefix_is_limited_with_truncated_slips_and_others_are_answered() {
    let limit = RateLimit {
        responses_per_second: 5,
        burst: 20,
        slip: 2,
        exempt_loopback: false,
        ..RateLimit::default()
    };
    let server = start(limit).await;
    let flooder = Client::on("127.0.4.1", server.local_addr()).await;
    let neighbour = Client::on("127.0.4.2", server.local_addr()).await;
    let other = Client::on("127.0.5.1", server.local_addr()).await;
    // 400 queries as fast as the socket takes them: beyond the burst, answers
    // are dropped or slipped as TC=1 with no records.
    let packet = query(1, "app.example.com.", RecordType::A, None);
    for _ in 0..400 {
        flooder.send(&packet).await;
    }
    // Same /24, right behind the flood: limited as well (a slip or nothing).
    let same_prefix = neighbour
        .ask(&query(2, "app.example.com.", RecordType::A, None), SHORT)
        .await;
    assert!(
        same_prefix.as_ref().is_none_or(|m| m.metadata.truncation),
        "{same_prefix:?}"
    );
    let (mut full, mut truncated) = (0, 0);
    while let Some(raw) = flooder.recv(SHORT).await {
        let reply = Message::from_vec(&raw).unwrap();
        if reply.metadata.truncation {
            assert!(reply.answers.is_empty());
            truncated += 1;
        } else {
            full += 1;
        }
    }
    assert!((20..100).contains(&full), "{full} full answers");
    assert!(truncated >= 50, "{truncated} truncated answers");
    assert!(full + truncated < 400, "some answers are dropped");
    // Another /24 is answered in full.
    let reply = other
        .ask(&query(3, "app.example.com.", RecordType::A, None), ANSWER)
        .await
        .expect("another prefix is answered");
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 1);
    // The slipped client retries over TCP, which is not rate limited.
    let mut tcp = common::TcpClient::connect(server.local_addr()).await;
    let reply = tcp.query("app.example.com.", RecordType::A).await;
    assert_eq!(reply.answers.len(), 1);
    let metrics = server.handle().metrics();
    assert!(metrics.counts.rate_limited_dropped > 0, "{metrics:?}");
    assert!(metrics.counts.rate_limited_slipped > 0, "{metrics:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_flood_from_one_client_another_clients_queries_are_answered() {
    let server = start(RateLimit {
        exempt_loopback: false,
        ..RateLimit::default()
    })
    .await;
    let addr = server.local_addr();
    let flood_for = Duration::from_secs(3);
    let flood = tokio::spawn(async move {
        let flooder = Client::on("127.0.6.1", addr).await;
        let packet = query(1, "example.com.", RecordType::ANY, Some((4096, 0)));
        let until = Instant::now() + flood_for;
        let mut sent = 0u64;
        // Bounded: at most 2,000,000 packets or `flood_for`.
        while Instant::now() < until && sent < 2_000_000 {
            flooder.send(&packet).await;
            sent += 1;
            if sent.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        }
        sent
    });
    let other = Client::on("127.0.7.1", addr).await;
    let mut answered = 0;
    for i in 0..15u16 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        // As a stub resolver does (`dig +time=1 +tries=3`): up to three
        // tries, one second each.
        let packet = query(100 + i, "app.example.com.", RecordType::A, None);
        for _ in 0..3 {
            let reply = other.ask(&packet, Duration::from_secs(1)).await;
            if reply.is_some_and(|m| m.answers.len() == 1) {
                answered += 1;
                break;
            }
        }
    }
    let sent = flood.await.unwrap();
    assert!(sent > 1000, "the flood ran: {sent} packets");
    assert_eq!(
        answered,
        15,
        "the other client lost {} of 15",
        15 - answered
    );
    server.shutdown().await.unwrap();
}

#[test]
fn any_packet_gets_nothing_or_a_response_with_its_id_within_the_udp_size() {
    use rand::{RngCore, SeedableRng};
    let (handle, _) = neutral_dns::DnsHandle::detached([zone()].into_iter().collect());
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let valid = query(5, "app.example.com.", RecordType::ANY, Some((4096, 0)));
    for round in 0..20_000usize {
        let mut packet = if round % 2 == 0 {
            let mut bytes = vec![0u8; round % 700];
            rng.fill_bytes(&mut bytes);
            bytes
        } else {
            // A real query with a few bytes flipped.
            let mut bytes = valid.clone();
            for _ in 0..1 + round % 4 {
                let at = usize::try_from(rng.next_u32()).unwrap() % bytes.len();
                bytes[at] ^= u8::try_from(rng.next_u32() & 0xff).unwrap();
            }
            bytes
        };
        if round % 3 == 0 && packet.len() > 2 {
            packet[2] &= 0x7f; // mostly queries
        }
        let Some(reply) = handle.answer_udp(&packet) else {
            continue;
        };
        assert!(packet.len() >= 12 && packet[2] & 0x80 == 0, "{packet:02x?}");
        assert_eq!(reply[..2], packet[..2]);
        assert!(reply.len() <= 4096);
        assert!(reply[2] & 0x80 != 0, "QR set in every reply");
    }
}
