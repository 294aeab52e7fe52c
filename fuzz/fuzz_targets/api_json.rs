//! The JSON bodies the control plane's API reads: node registration and
//! heartbeats (the server's own request types), release orders and results,
//! DNS zone creation and PATCH. The first byte picks the type, the rest is
//! the body. Deserializing must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use neutral_server::api;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => drop(serde_json::from_slice::<api::RegisterRequest>(body)),
        1 => drop(serde_json::from_slice::<api::HeartbeatRequest>(body)),
        2 => drop(serde_json::from_slice::<api::releases::ReleaseBody>(body)),
        3 => drop(serde_json::from_slice::<
            neutral_server::releases::ReleaseResult,
        >(body)),
        4 => drop(serde_json::from_slice::<api::CreateZone>(body)),
        _ => drop(serde_json::from_slice::<neutral_dns::ZonePatch>(body)),
    }
});
