//! DNS packets into the embedded server's resolver, as its UDP loop hands
//! them over (`DnsHandle::answer_udp`, without the rate limiter). Must never
//! panic; a packet with QR=1 or shorter than a header gets nothing back;
//! every reply decodes as a response with the query's id and fits the UDP
//! size the server allows.
#![no_main]

use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use neutral_dns::server::MAX_UDP_PAYLOAD;
use neutral_dns::{DnsHandle, Record, RrSetChange, Zone, ZonePatch, ZoneSet, apply_patch};

fn handle() -> &'static DnsHandle {
    static HANDLE: OnceLock<DnsHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let zone = Zone::create("example.com.", &["ns1.example.com."]).expect("zone");
        let zone = apply_patch(
            &zone,
            &ZonePatch {
                rrsets: vec![
                    RrSetChange::replace(
                        "app.example.com.",
                        "A",
                        30,
                        vec![
                            Record::new("192.0.2.1").weighted(100),
                            Record::new("192.0.2.2").weighted(50),
                        ],
                    ),
                    RrSetChange::replace(
                        "www.example.com.",
                        "CNAME",
                        300,
                        vec![Record::new("app.example.com.")],
                    ),
                    RrSetChange::replace("example.com.", "TXT", 60, vec![Record::new("\"x\"")]),
                    RrSetChange::replace(
                        "sub.example.com.",
                        "NS",
                        300,
                        vec![Record::new("ns.sub.example.com.")],
                    ),
                ],
            },
        )
        .expect("patch");
        let zones: ZoneSet = [zone].into_iter().collect();
        DnsHandle::detached(zones).0
    })
}

fuzz_target!(|data: &[u8]| {
    let reply = handle().answer_udp(data);
    let is_query = data.len() >= 12 && data[2] & 0x80 == 0;
    let Some(bytes) = reply else {
        return;
    };
    assert!(is_query, "answered a response or a runt: {data:02x?}");
    assert!(
        bytes.len() <= usize::from(MAX_UDP_PAYLOAD),
        "{} bytes",
        bytes.len()
    );
    assert_eq!(bytes[..2], data[..2], "the reply keeps the query's id");
    // A FORMERR built from the header alone may not decode as a message
    // with sections; everything else must.
    if let Ok(message) = Message::from_vec(&bytes) {
        assert_eq!(message.metadata.message_type, MessageType::Response);
    } else {
        assert_eq!(bytes.len(), 12, "undecodable reply: {bytes:02x?}");
    }
});
