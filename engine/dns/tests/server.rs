//! The embedded server on loopback, queried by a real DNS client over UDP and
//! TCP. Every test binds port 0 and shuts its server down.

mod common;

use std::net::IpAddr;

use common::{TcpClient, UdpClient, answer_addresses};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use neutral_core::model::{AllDownPolicy, NodeStatus};
use neutral_dns::{
    DnsHandle, DnsServer, HealthView, Record, RrSetChange, Zone, ZonePatch, ZoneRules, ZoneSet,
    apply_patch,
};
use rand::{RngCore, SeedableRng};

const QUERIES: usize = 1000;

fn example_zone() -> Zone {
    let zone = Zone::create("example.com.", &["ns1.example.com.", "ns2.example.com."]).unwrap();
    apply_patch(
        &zone,
        &ZonePatch {
            rrsets: vec![
                RrSetChange::replace(
                    "app.example.com.",
                    "A",
                    30,
                    vec![
                        Record::new("127.0.0.11").weighted(100),
                        Record::new("127.0.0.12").weighted(50),
                        Record::new("127.0.0.13").weighted(10),
                        Record::new("127.0.0.14").weighted(0),
                    ],
                ),
                RrSetChange::replace(
                    "pair.example.com.",
                    "A",
                    45,
                    vec![Record::new("127.0.0.21"), Record::new("127.0.0.22")],
                ),
                RrSetChange::replace(
                    "v6.example.com.",
                    "AAAA",
                    60,
                    vec![Record::new("2001:db8::1")],
                ),
                RrSetChange::replace(
                    "www.example.com.",
                    "CNAME",
                    300,
                    vec![Record::new("app.example.com.")],
                ),
                RrSetChange::replace(
                    "example.com.",
                    "TXT",
                    120,
                    vec![Record::new("\"v=spf1 -all\"")],
                ),
            ],
        },
    )
    .unwrap()
}

async fn start(zones: Vec<Zone>) -> DnsServer {
    let set: ZoneSet = zones.into_iter().collect();
    DnsServer::bind("127.0.0.1:0".parse().unwrap(), set)
        .await
        .unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Pearson's chi-square statistic of `observed` counts against `weights`.
fn chi_square(observed: &[u64], weights: &[f64]) -> f64 {
    let n: u64 = observed.iter().sum();
    let total: f64 = weights.iter().sum();
    observed
        .iter()
        .zip(weights)
        .map(|(&o, &w)| {
            let expected = n as f64 * w / total;
            (o as f64 - expected).powi(2) / expected
        })
        .sum()
}

/// The chi-square critical value for 2 degrees of freedom at p = 1e-6: a
/// correct server fails this check about once in a million runs.
const CHI_SQUARE_DF2_P1E6: f64 = 27.63;

fn count(addresses: &[String], observed: &mut [u64; 3], zero_weight: &mut u64) {
    assert_eq!(addresses.len(), 1, "exactly one address per answer");
    match addresses[0].as_str() {
        "127.0.0.11" => observed[0] += 1,
        "127.0.0.12" => observed[1] += 1,
        "127.0.0.13" => observed[2] += 1,
        "127.0.0.14" => *zero_weight += 1,
        other => panic!("unexpected answer {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_answers_follow_the_weights_over_udp_and_tcp() {
    let server = start(vec![example_zone()]).await;
    let weights = [100.0, 50.0, 10.0];

    let mut udp = UdpClient::connect(server.local_addr()).await;
    let (mut observed, mut zero) = ([0u64; 3], 0u64);
    for _ in 0..QUERIES {
        let response = udp.query("app.example.com.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative);
        assert_eq!(response.answers[0].ttl, 30, "TTL as stored");
        count(&answer_addresses(&response), &mut observed, &mut zero);
    }
    let udp_chi = chi_square(&observed, &weights);
    assert_eq!(zero, 0, "weight 0 is never answered");
    assert!(
        udp_chi < CHI_SQUARE_DF2_P1E6,
        "UDP {observed:?}: chi² = {udp_chi}"
    );

    let mut tcp = TcpClient::connect(server.local_addr()).await;
    let (mut observed, mut zero) = ([0u64; 3], 0u64);
    for _ in 0..QUERIES {
        let response = tcp.query("app.example.com.", RecordType::A).await;
        assert!(response.metadata.authoritative);
        assert_eq!(response.answers[0].ttl, 30, "TTL as stored");
        count(&answer_addresses(&response), &mut observed, &mut zero);
    }
    let tcp_chi = chi_square(&observed, &weights);
    assert_eq!(zero, 0, "weight 0 is never answered");
    assert!(
        tcp_chi < CHI_SQUARE_DF2_P1E6,
        "TCP {observed:?}: chi² = {tcp_chi}"
    );

    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_weights_are_equal_and_ttls_are_as_stored() {
    let server = start(vec![example_zone()]).await;
    let mut udp = UdpClient::connect(server.local_addr()).await;
    let mut first = 0u64;
    for _ in 0..QUERIES {
        let response = udp.query("pair.example.com.", RecordType::A).await;
        assert_eq!(response.answers.len(), 1);
        assert_eq!(response.answers[0].ttl, 45);
        if answer_addresses(&response) == ["127.0.0.21"] {
            first += 1;
        }
    }
    // Binomial(1000, 0.5): sd ≈ 15.8; ±100 is more than 6 sd.
    assert!(
        (400..=600).contains(&first),
        "{first} of {QUERIES} on the first record"
    );

    let v6 = udp.query("v6.example.com.", RecordType::AAAA).await;
    assert_eq!(answer_addresses(&v6), ["2001:db8::1"]);
    assert_eq!(v6.answers[0].ttl, 60);
    let txt = udp.query("example.com.", RecordType::TXT).await;
    assert_eq!(txt.answers[0].ttl, 120);
    assert_eq!(txt.answers[0].data.to_string(), "v=spf1 -all");
    let chased = udp.query("www.example.com.", RecordType::A).await;
    assert_eq!(chased.answers.len(), 2, "CNAME then one A");
    assert_eq!(chased.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(chased.answers[0].ttl, 300);
    assert_eq!(chased.answers[1].ttl, 30);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apex_serves_soa_and_ns_and_negative_answers_carry_the_soa() {
    let server = start(vec![example_zone()]).await;
    let mut udp = UdpClient::connect(server.local_addr()).await;
    let mut tcp = TcpClient::connect(server.local_addr()).await;
    for transport in ["udp", "tcp"] {
        let mut ask = async |name: &str, rtype| match transport {
            "udp" => udp.query(name, rtype).await,
            _ => tcp.query(name, rtype).await,
        };
        let soa = ask("example.com.", RecordType::SOA).await;
        assert!(soa.metadata.authoritative, "{transport}");
        assert_eq!(soa.answers.len(), 1);
        let RData::SOA(data) = &soa.answers[0].data else {
            panic!("{transport}: not an SOA: {soa:?}");
        };
        assert_eq!(data.mname.to_string(), "ns1.example.com.");
        assert_eq!(data.serial, 2, "created at 1, patched once");
        assert_eq!(soa.authorities.len(), 2, "{transport}: NS in authority");

        let ns = ask("example.com.", RecordType::NS).await;
        let mut hosts: Vec<String> = ns.answers.iter().map(|r| r.data.to_string()).collect();
        hosts.sort();
        assert_eq!(
            hosts,
            ["ns1.example.com.", "ns2.example.com."],
            "{transport}"
        );

        let nx = ask("missing.example.com.", RecordType::A).await;
        assert_eq!(
            nx.metadata.response_code,
            ResponseCode::NXDomain,
            "{transport}"
        );
        assert!(nx.metadata.authoritative);
        assert!(nx.answers.is_empty());
        assert_eq!(nx.authorities.len(), 1);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(nx.authorities[0].ttl, 3600, "min(SOA TTL, SOA minimum)");

        let nodata = ask("app.example.com.", RecordType::AAAA).await;
        assert_eq!(
            nodata.metadata.response_code,
            ResponseCode::NoError,
            "{transport}"
        );
        assert!(nodata.metadata.authoritative);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_the_server_does_not_hold_are_refused_over_udp_and_tcp() {
    let server = start(vec![example_zone()]).await;
    let mut udp = UdpClient::connect(server.local_addr()).await;
    let mut tcp = TcpClient::connect(server.local_addr()).await;
    for name in ["example.org.", "app.example.net.", "com.", "."] {
        let response = udp.query(name, RecordType::A).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::Refused,
            "UDP {name}"
        );
        assert!(!response.metadata.authoritative);
        assert!(response.answers.is_empty());
        let response = tcp.query(name, RecordType::A).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::Refused,
            "TCP {name}"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_marked_down_leaves_the_answers_at_once_and_returns_when_up() {
    let server = start(vec![example_zone()]).await;
    let handle = server.handle();
    let mut udp = UdpClient::connect(server.local_addr()).await;

    handle.set_health(HealthView::new().with_node(ip("127.0.0.11"), NodeStatus::Down));
    for _ in 0..300 {
        let response = udp.query("app.example.com.", RecordType::A).await;
        let addresses = answer_addresses(&response);
        assert_eq!(addresses.len(), 1);
        assert_ne!(addresses[0], "127.0.0.11", "a down node is never answered");
    }
    assert!(handle.degraded().is_empty(), "other records are healthy");

    handle.set_health(HealthView::new().with_node(ip("127.0.0.11"), NodeStatus::Up));
    let mut back = 0;
    for _ in 0..300 {
        let response = udp.query("app.example.com.", RecordType::A).await;
        if answer_addresses(&response) == ["127.0.0.11"] {
            back += 1;
        }
    }
    // Weight 100 of 160: expect ~187 of 300.
    assert!(
        back > 100,
        "the node is back in the answers ({back} of 300)"
    );

    // Drain removes a node just like down, without counting as a failure.
    handle.set_health(HealthView::new().with_node(ip("127.0.0.11"), NodeStatus::Drain));
    for _ in 0..100 {
        let response = udp.query("app.example.com.", RecordType::A).await;
        assert_ne!(answer_addresses(&response), ["127.0.0.11"]);
    }
    server.shutdown().await.unwrap();
}

fn all_down() -> HealthView {
    HealthView::new()
        .with_node(ip("127.0.0.11"), NodeStatus::Down)
        .with_node(ip("127.0.0.12"), NodeStatus::Down)
        .with_node(ip("127.0.0.13"), NodeStatus::Down)
        .with_node(ip("127.0.0.14"), NodeStatus::Down)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_node_is_down_fail_open_serves_them_all() {
    let server = start(vec![example_zone()]).await;
    let handle = server.handle();
    let mut udp = UdpClient::connect(server.local_addr()).await;
    handle.set_health(all_down().with_node(ip("127.0.0.13"), NodeStatus::Drain));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let response = udp.query("app.example.com.", RecordType::A).await;
        let addresses = answer_addresses(&response);
        assert_eq!(addresses.len(), 1);
        seen.insert(addresses[0].clone());
    }
    let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(
        seen,
        ["127.0.0.11", "127.0.0.12"],
        "non-drained, weight > 0"
    );
    let degraded = handle.degraded();
    assert_eq!(degraded.len(), 1);
    assert_eq!(degraded[0].name, "app.example.com.");
    assert_eq!(degraded[0].mode, "fail_open");
    let metrics = handle.metrics();
    assert_eq!(metrics.counts.fail_open_answers, 300);
    assert_eq!(metrics.rrsets_fail_open, 1);
    server.shutdown().await.unwrap();
}

#[test]
fn the_last_known_good_memory_carries_over_to_a_new_process() {
    let policy =
        |view: HealthView| view.with_all_down("app.example.com", AllDownPolicy::LastKnownGood);
    let set = || -> ZoneSet { [example_zone()].into_iter().collect() };
    let first = DnsHandle::detached(set()).0;
    let (start_generation, _) = first.last_known_good();
    first.set_health(policy(
        all_down().with_node(ip("127.0.0.12"), NodeStatus::Up),
    ));
    let (generation, saved) = first.last_known_good();
    assert_ne!(generation, start_generation, "the memory changed");
    let app = saved
        .iter()
        .find(|s| s.name == "app.example.com." && s.rtype == "A")
        .unwrap();
    assert_eq!(app.addresses, [ip("127.0.0.12")]);
    // Nothing changed, the generation stays.
    first.set_health(policy(
        all_down().with_node(ip("127.0.0.12"), NodeStatus::Up),
    ));
    assert_eq!(first.last_known_good().0, generation);

    // A new process without the saved memory has nothing to keep: an
    // all-down rrset answers with every record, as fail_open.
    let forgetful = DnsHandle::detached(set()).0;
    forgetful.set_health(policy(all_down()));
    assert_eq!(
        answered(&forgetful),
        ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    );
    let second = DnsHandle::detached(set()).0;
    let mut with_strangers = saved.clone();
    with_strangers.push(neutral_dns::RememberedSet {
        name: "gone.example.com.".into(),
        rtype: "A".into(),
        addresses: vec![ip("127.0.0.99")],
    });
    assert_eq!(
        second.restore_last_known_good(with_strangers),
        saved.len(),
        "only rrsets it serves"
    );
    second.set_health(policy(all_down()));
    assert_eq!(answered(&second), ["127.0.0.12"]);
    assert_eq!(second.degraded()[0].mode, "last_known_good");
}

/// Every address `handle` answers for app.example.com A over 200 queries.
fn answered(handle: &DnsHandle) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    for id in 0..200u16 {
        let packet = common::query_message(id, "app.example.com.", RecordType::A);
        let response = handle.answer_udp(&packet).unwrap();
        let response = hickory_proto::op::Message::from_vec(&response).unwrap();
        seen.extend(answer_addresses(&response));
    }
    seen.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_node_is_down_last_known_good_keeps_the_last_healthy_set() {
    let server = start(vec![example_zone()]).await;
    let handle = server.handle();
    let mut udp = UdpClient::connect(server.local_addr()).await;
    let policy =
        |view: HealthView| view.with_all_down("app.example.com", AllDownPolicy::LastKnownGood);

    // Only .12 is healthy: that is the last known good set.
    handle.set_health(policy(
        all_down().with_node(ip("127.0.0.12"), NodeStatus::Up),
    ));
    let response = udp.query("app.example.com.", RecordType::A).await;
    assert_eq!(answer_addresses(&response), ["127.0.0.12"]);

    handle.set_health(policy(all_down()));
    for _ in 0..200 {
        let response = udp.query("app.example.com.", RecordType::A).await;
        assert_eq!(answer_addresses(&response), ["127.0.0.12"]);
    }
    assert_eq!(handle.degraded()[0].mode, "last_known_good");

    // Recovery of another node replaces the memory and the answers.
    handle.set_health(policy(
        all_down().with_node(ip("127.0.0.13"), NodeStatus::Up),
    ));
    for _ in 0..50 {
        let response = udp.query("app.example.com.", RecordType::A).await;
        assert_eq!(answer_addresses(&response), ["127.0.0.13"]);
    }
    assert!(handle.degraded().is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patched_zones_are_served_at_once_with_a_new_serial() {
    let server = start(vec![example_zone()]).await;
    let handle = server.handle();
    let mut tcp = TcpClient::connect(server.local_addr()).await;

    let current = handle.zone("example.com").unwrap();
    let patched = apply_patch(
        &current,
        &ZonePatch {
            rrsets: vec![
                RrSetChange::replace("new.example.com.", "A", 7, vec![Record::new("127.0.0.99")]),
                RrSetChange::delete("pair.example.com.", "A"),
            ],
        },
    )
    .unwrap();
    let report = handle.upsert_zone(patched);
    assert_eq!(report.zones, 1);
    assert!(report.skipped.is_empty());

    let response = tcp.query("new.example.com.", RecordType::A).await;
    assert_eq!(answer_addresses(&response), ["127.0.0.99"]);
    assert_eq!(response.answers[0].ttl, 7);
    let gone = tcp.query("pair.example.com.", RecordType::A).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    let soa = tcp.query("example.com.", RecordType::SOA).await;
    let RData::SOA(data) = &soa.answers[0].data else {
        panic!("not an SOA");
    };
    assert_eq!(data.serial, 3);

    assert!(handle.remove_zone("example.com."));
    let refused = tcp.query("new.example.com.", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_odd_queries_leave_the_server_answering() {
    let server = start(vec![example_zone()]).await;
    let handle = server.handle();
    let mut udp = UdpClient::connect(server.local_addr()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for len in [0usize, 1, 11, 12, 13, 64, 512, 1400] {
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        udp.send_raw(&bytes).await;
    }
    // Over TCP too: a length prefix promising more than is sent, then a close.
    {
        let mut stream = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, &[0x01, 0x00, 0xde, 0xad])
            .await
            .unwrap();
    }
    // A CHAOS-class query is refused; a normal one still works.
    let mut chaos = hickory_proto::op::Message::query();
    let mut query =
        hickory_proto::op::Query::query("version.bind.".parse().unwrap(), RecordType::TXT);
    query.set_query_class(hickory_proto::rr::DNSClass::CH);
    chaos.add_query(query);
    udp.send_raw(&chaos.to_vec().unwrap()).await;

    let response = udp.query("app.example.com.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer_addresses(&response).len(), 1);
    let metrics = handle.metrics();
    assert!(metrics.counts.queries_udp >= 2, "{metrics:?}");
    let refused = metrics
        .counts
        .responses
        .iter()
        .find(|(rcode, _)| rcode == "REFUSED")
        .unwrap()
        .1;
    assert!(refused >= 1, "the CHAOS query was refused: {metrics:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_queries_by_transport_and_rcode() {
    let server = start(vec![example_zone()]).await;
    let handle = server.handle();
    let mut udp = UdpClient::connect(server.local_addr()).await;
    let mut tcp = TcpClient::connect(server.local_addr()).await;
    udp.query("app.example.com.", RecordType::A).await;
    udp.query("missing.example.com.", RecordType::A).await;
    tcp.query("example.org.", RecordType::A).await;
    let metrics = handle.metrics();
    assert_eq!(metrics.counts.queries_udp, 2);
    assert_eq!(metrics.counts.queries_tcp, 1);
    let by_rcode = |name: &str| {
        metrics
            .counts
            .responses
            .iter()
            .find(|(rcode, _)| rcode == name)
            .unwrap()
            .1
    };
    assert_eq!(by_rcode("NOERROR"), 1);
    assert_eq!(by_rcode("NXDOMAIN"), 1);
    assert_eq!(by_rcode("REFUSED"), 1);
    assert_eq!(metrics.zones, 1);
    let text = metrics.prometheus_text();
    assert!(
        text.contains("neutral_dns_queries_total{transport=\"udp\"} 2"),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_sockets_and_frees_the_port() {
    let server = start(vec![example_zone()]).await;
    let addr = server.local_addr();
    server.shutdown().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The same address can be bound again at once.
    let again = DnsServer::bind(addr, ZoneSet::new()).await.unwrap();
    assert_eq!(again.local_addr(), addr);
    again.shutdown().await.unwrap();
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped_per_address_and_silent_ones_are_closed() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let server = start(vec![example_zone()]).await;
    let addr = server.local_addr();
    let connect_from = |source: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((source, 0)))
            .unwrap();
        socket.connect(addr).await.unwrap()
    };
    let opened = Instant::now();
    let mut held = Vec::new();
    for _ in 0..neutral_dns::tcp::TCP_MAX_PER_ADDRESS {
        held.push(connect_from([127, 0, 0, 7]).await);
    }
    // One more from that address is closed at once, unanswered...
    let mut excess = connect_from([127, 0, 0, 7]).await;
    assert!(closed_within(&mut excess, Duration::from_secs(2)).await);
    let metrics = server.handle().metrics();
    assert_eq!(metrics.counts.tcp_refused, 1, "{metrics:?}");
    assert!(
        metrics
            .prometheus_text()
            .contains("neutral_dns_dropped_total{reason=\"tcp_limit\"} 1")
    );
    // ...while another address is served.
    let mut other = TcpClient::connect(addr).await;
    let response = other.query("app.example.com.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);

    // A client trickling a query's bytes is closed by the read timeout, a
    // silent one by the idle timeout; neither stays longer.
    let mut trickler = held.pop().unwrap();
    trickler.write_all(&[0, 40, 0]).await.unwrap();
    let trickled = Instant::now();
    assert!(
        closed_within(
            &mut trickler,
            neutral_dns::tcp::TCP_READ_TIMEOUT + Duration::from_secs(2)
        )
        .await,
        "a query that never completes is dropped"
    );
    assert!(trickled.elapsed() >= neutral_dns::tcp::TCP_READ_TIMEOUT - Duration::from_millis(100));
    let mut silent = held.pop().unwrap();
    let left = (neutral_dns::tcp::TCP_IDLE_TIMEOUT + Duration::from_secs(2))
        .saturating_sub(opened.elapsed());
    assert!(
        closed_within(&mut silent, left).await,
        "a silent connection is closed"
    );
    assert!(opened.elapsed() >= neutral_dns::tcp::TCP_IDLE_TIMEOUT - Duration::from_millis(100));
    // Their slots are free again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from([127, 0, 0, 7]).await;
    assert!(!closed_within(&mut again, Duration::from_millis(500)).await);
    assert_eq!(server.handle().metrics().counts.tcp_refused, 1);
    server.shutdown().await.unwrap();
}
