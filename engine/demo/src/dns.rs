//! One DNS question over UDP, as a user's resolver would ask it.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

/// The A records answered for `name`.
pub async fn addresses(server: SocketAddr, name: &str, id: u16) -> Result<Vec<String>> {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .context("binding a UDP socket")?;
    socket
        .connect(server)
        .await
        .context("connecting the UDP socket")?;
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(
        Name::from_str(name).context("query name")?,
        RecordType::A,
    ));
    socket
        .send(&message.to_vec().context("encoding the query")?)
        .await
        .context("sending the query")?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..8 {
        let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .context("no DNS answer within 2 s")?
            .context("receiving the answer")?;
        let answer =
            Message::from_vec(buf.get(..len).unwrap_or_default()).context("decoding the answer")?;
        if answer.metadata.id == id {
            return Ok(answer
                .answers
                .iter()
                .filter(|r| r.record_type() == RecordType::A)
                .map(|r| r.data.to_string())
                .collect());
        }
    }
    anyhow::bail!("no DNS answer with id {id}")
}
