//! A minimal blocking DNS client for end-to-end tests: hickory-proto message
//! encoding over std UDP and TCP sockets, every wait bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

pub const TIMEOUT: Duration = Duration::from_secs(3);

/// What a response said, in plain values.
#[derive(Debug, Clone)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    /// `(record type, ttl, data)` of the answer section.
    pub records: Vec<(RecordType, u32, String)>,
    /// Record types of the authority section.
    pub authority: Vec<RecordType>,
}

impl Answer {
    /// The A/AAAA addresses of the answer section.
    pub fn addresses(&self) -> Vec<String> {
        self.records
            .iter()
            .filter(|(t, _, _)| matches!(t, RecordType::A | RecordType::AAAA))
            .map(|(_, _, d)| d.clone())
            .collect()
    }
}

fn message(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(
        Name::from_str(name).expect("valid query name"),
        rtype,
    ));
    message.to_vec().expect("encode query")
}

fn decode(bytes: &[u8]) -> Answer {
    let response = Message::from_vec(bytes).expect("decode DNS response");
    Answer {
        rcode: response.metadata.response_code,
        authoritative: response.metadata.authoritative,
        records: response
            .answers
            .iter()
            .map(|r| (r.record_type(), r.ttl, r.data.to_string()))
            .collect(),
        authority: response
            .authorities
            .iter()
            .map(hickory_proto::rr::Record::record_type)
            .collect(),
    }
}

/// One query over UDP.
pub fn udp(server: SocketAddr, name: &str, rtype: RecordType) -> std::io::Result<Answer> {
    // Loopback servers are asked from loopback; others (the multi-host test
    // bed's hosts) from any local address.
    let local = if server.ip().is_loopback() {
        "127.0.0.1:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.connect(server)?;
    let id = rand_id();
    socket.send(&message(id, name, rtype))?;
    let mut buf = vec![0u8; 4096];
    let len = socket.recv(&mut buf)?;
    Ok(decode(buf.get(..len).unwrap_or_default()))
}

/// One query over TCP.
pub fn tcp(server: SocketAddr, name: &str, rtype: RecordType) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&server, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let body = message(rand_id(), name, rtype);
    let len = u16::try_from(body.len()).expect("small query");
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf)?;
    Ok(decode(&buf))
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    (nanos % 65_521) as u16
}

pub use hickory_proto::op::ResponseCode as Rcode;
pub use hickory_proto::rr::RecordType as Type;
