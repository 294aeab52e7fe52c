//! The Prometheus text the agent reads: its metrics textfile
//! (`metrics_file::parse`) and node_exporter's `node_cpu_seconds_total`
//! (`node_exporter::parse_node_cpu`). Must never panic; parsed values are
//! within their documented ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use neutral_agent::{metrics_file, node_exporter};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = metrics_file::parse(text) {
        let m = parsed.metrics;
        assert!(m.cpu.is_none_or(|v| (0.0..=1.0).contains(&v)), "{m:?}");
        assert!(
            m.error_rate.is_none_or(|v| (0.0..=1.0).contains(&v)),
            "{m:?}"
        );
        assert!(m.rtt_ms.is_none_or(|v| v >= 0.0), "{m:?}");
    }
    let _ = node_exporter::parse_node_cpu(text);
});
