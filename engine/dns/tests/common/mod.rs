//! A minimal DNS client over UDP and TCP (hickory-proto message encoding on
//! tokio sockets) for tests and the bench. Every wait is bounded.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const TIMEOUT: Duration = Duration::from_secs(3);

pub fn query_message(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    message.to_vec().unwrap()
}

/// One UDP socket connected to the server; queries are sequential.
pub struct UdpClient {
    socket: UdpSocket,
    next_id: u16,
}

impl UdpClient {
    pub async fn connect(server: SocketAddr) -> UdpClient {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(server).await.unwrap();
        UdpClient { socket, next_id: 1 }
    }

    pub async fn send_raw(&self, bytes: &[u8]) {
        self.socket.send(bytes).await.unwrap();
    }

    pub async fn query(&mut self, name: &str, rtype: RecordType) -> Message {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.socket
            .send(&query_message(id, name, rtype))
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        // Skip stale responses (e.g. to garbage sent before), bounded.
        for _ in 0..16 {
            let len = tokio::time::timeout(TIMEOUT, self.socket.recv(&mut buf))
                .await
                .expect("UDP response within the timeout")
                .unwrap();
            let response = Message::from_vec(&buf[..len]).unwrap();
            if response.metadata.id == id {
                return response;
            }
        }
        panic!("no UDP response with id {id}");
    }
}

/// One TCP connection to the server; queries are sequential.
pub struct TcpClient {
    stream: TcpStream,
    next_id: u16,
}

impl TcpClient {
    pub async fn connect(server: SocketAddr) -> TcpClient {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(server))
            .await
            .unwrap()
            .unwrap();
        TcpClient { stream, next_id: 1 }
    }

    pub async fn query(&mut self, name: &str, rtype: RecordType) -> Message {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let body = query_message(id, name, rtype);
        let mut framed = (body.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        self.stream.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut len))
            .await
            .expect("TCP response within the timeout")
            .unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut buf))
            .await
            .expect("TCP response within the timeout")
            .unwrap();
        let response = Message::from_vec(&buf).unwrap();
        assert_eq!(response.metadata.id, id);
        response
    }
}

/// The addresses in the answer section, as text.
pub fn answer_addresses(message: &Message) -> Vec<String> {
    message
        .answers
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .map(|r| r.data.to_string())
        .collect()
}
