//! Counters of the embedded DNS server and their Prometheus text rendering.
//!
//! This module owns the metric names and the lock-free counters the query path
//! bumps. It must not decide anything about answers; [`crate::server`] feeds
//! it. Counts start at 0 when the server starts.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::health::ServeMode;

/// Response codes counted by name; anything else is `OTHER`.
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "OTHER",
];

/// The counters the query path bumps.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    queries_udp: AtomicU64,
    queries_tcp: AtomicU64,
    responses: [AtomicU64; RCODES.len()],
    fail_open_answers: AtomicU64,
    last_known_good_answers: AtomicU64,
    send_failures: AtomicU64,
    dropped_responses: AtomicU64,
    rate_limited_dropped: AtomicU64,
    rate_limited_slipped: AtomicU64,
    tcp_refused: AtomicU64,
}

/// Which transport a query came over.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

impl Counters {
    pub(crate) fn query(&self, transport: Transport) {
        let counter = match transport {
            Transport::Udp => &self.queries_udp,
            Transport::Tcp => &self.queries_tcp,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response by its numeric code.
    pub(crate) fn response(&self, rcode: u16) {
        let index = usize::from(rcode).min(RCODES.len().saturating_sub(1));
        if let Some(counter) = self.responses.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn fallback(&self, mode: ServeMode) {
        match mode {
            ServeMode::FailOpen => self.fail_open_answers.fetch_add(1, Ordering::Relaxed),
            ServeMode::LastKnownGood => {
                self.last_known_good_answers.fetch_add(1, Ordering::Relaxed)
            }
            ServeMode::Healthy | ServeMode::Empty => 0,
        };
    }

    pub(crate) fn send_failure(&self) {
        self.send_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A packet with QR=1 (a response) was dropped unanswered.
    pub(crate) fn dropped_response(&self) {
        self.dropped_responses.fetch_add(1, Ordering::Relaxed);
    }

    /// A UDP query over its prefix's rate: dropped, or slipped (TC=1).
    pub(crate) fn rate_limited(&self, slipped: bool) {
        let counter = if slipped {
            &self.rate_limited_slipped
        } else {
            &self.rate_limited_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A TCP connection closed unserved by a connection cap.
    pub(crate) fn tcp_refused(&self) {
        self.tcp_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> Counts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            queries_udp: load(&self.queries_udp),
            queries_tcp: load(&self.queries_tcp),
            responses: RCODES
                .iter()
                .zip(&self.responses)
                .map(|(name, c)| ((*name).to_owned(), load(c)))
                .collect(),
            fail_open_answers: load(&self.fail_open_answers),
            last_known_good_answers: load(&self.last_known_good_answers),
            send_failures: load(&self.send_failures),
            dropped_responses: load(&self.dropped_responses),
            rate_limited_dropped: load(&self.rate_limited_dropped),
            rate_limited_slipped: load(&self.rate_limited_slipped),
            tcp_refused: load(&self.tcp_refused),
        }
    }
}

/// Cumulative counts since the server started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub queries_udp: u64,
    pub queries_tcp: u64,
    /// By response code name (`NOERROR`, `NXDOMAIN`, `REFUSED`, …).
    pub responses: Vec<(String, u64)>,
    /// Address answers served by the `fail_open` all-down policy.
    pub fail_open_answers: u64,
    /// Address answers served from the last known good set.
    pub last_known_good_answers: u64,
    /// Responses that could not be sent (client gone, encoding failed).
    pub send_failures: u64,
    /// Packets with QR=1 (responses) dropped unanswered.
    pub dropped_responses: u64,
    /// UDP queries over their prefix's rate, dropped unanswered.
    pub rate_limited_dropped: u64,
    /// UDP queries over their prefix's rate, answered empty with TC=1.
    pub rate_limited_slipped: u64,
    /// TCP connections closed unserved by a connection cap.
    pub tcp_refused: u64,
}

/// A point-in-time view of the server for `/metrics` and `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsMetrics {
    #[serde(flatten)]
    pub counts: Counts,
    /// Zones being served.
    pub zones: usize,
    /// A/AAAA rrsets currently answering from `fail_open`.
    pub rrsets_fail_open: usize,
    /// A/AAAA rrsets currently answering from the last known good set.
    pub rrsets_last_known_good: usize,
    /// A/AAAA rrsets with nothing to answer (all drained or at weight 0).
    pub rrsets_empty: usize,
    /// Rrsets and records left out when the zones were last loaded.
    pub skipped: usize,
}

impl DnsMetrics {
    /// The metrics in Prometheus' text exposition format.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        let c = &self.counts;
        family(
            &mut out,
            "neutral_dns_queries_total",
            "counter",
            "DNS queries received.",
        );
        for (transport, value) in [("udp", c.queries_udp), ("tcp", c.queries_tcp)] {
            let _ = writeln!(
                out,
                "neutral_dns_queries_total{{transport=\"{transport}\"}} {value}"
            );
        }
        family(
            &mut out,
            "neutral_dns_responses_total",
            "counter",
            "DNS responses sent, by response code.",
        );
        for (rcode, value) in &c.responses {
            let _ = writeln!(
                out,
                "neutral_dns_responses_total{{rcode=\"{rcode}\"}} {value}"
            );
        }
        family(
            &mut out,
            "neutral_dns_fallback_answers_total",
            "counter",
            "Address answers chosen by an all-down policy because no healthy record was left.",
        );
        for (mode, value) in [
            ("fail_open", c.fail_open_answers),
            ("last_known_good", c.last_known_good_answers),
        ] {
            let _ = writeln!(
                out,
                "neutral_dns_fallback_answers_total{{mode=\"{mode}\"}} {value}"
            );
        }
        family(
            &mut out,
            "neutral_dns_send_failures_total",
            "counter",
            "Responses that could not be sent.",
        );
        let _ = writeln!(out, "neutral_dns_send_failures_total {}", c.send_failures);
        family(
            &mut out,
            "neutral_dns_dropped_total",
            "counter",
            "Dropped unanswered: responses sent to the server (QR=1), UDP queries over their prefix's rate, TCP connections over a connection cap.",
        );
        for (reason, value) in [
            ("response", c.dropped_responses),
            ("rate_limit", c.rate_limited_dropped),
            ("tcp_limit", c.tcp_refused),
        ] {
            let _ = writeln!(
                out,
                "neutral_dns_dropped_total{{reason=\"{reason}\"}} {value}"
            );
        }
        family(
            &mut out,
            "neutral_dns_rate_limit_slipped_total",
            "counter",
            "UDP queries over their prefix's rate answered empty with TC=1, so real clients retry over TCP.",
        );
        let _ = writeln!(
            out,
            "neutral_dns_rate_limit_slipped_total {}",
            c.rate_limited_slipped
        );
        family(&mut out, "neutral_dns_zones", "gauge", "Zones served.");
        let _ = writeln!(out, "neutral_dns_zones {}", self.zones);
        family(
            &mut out,
            "neutral_dns_degraded_rrsets",
            "gauge",
            "A/AAAA rrsets not answering from healthy records, by mode.",
        );
        for (mode, value) in [
            ("fail_open", self.rrsets_fail_open),
            ("last_known_good", self.rrsets_last_known_good),
            ("empty", self.rrsets_empty),
        ] {
            let _ = writeln!(
                out,
                "neutral_dns_degraded_rrsets{{mode=\"{mode}\"}} {value}"
            );
        }
        family(
            &mut out,
            "neutral_dns_skipped_records",
            "gauge",
            "Rrsets and records left out at the last zone load because they were invalid.",
        );
        let _ = writeln!(out, "neutral_dns_skipped_records {}", self.skipped);
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let counters = Counters::default();
        counters.query(Transport::Udp);
        counters.query(Transport::Udp);
        counters.query(Transport::Tcp);
        counters.response(0);
        counters.response(3);
        counters.response(5);
        counters.response(23);
        counters.fallback(ServeMode::FailOpen);
        counters.dropped_response();
        counters.rate_limited(true);
        let metrics = DnsMetrics {
            counts: counters.read(),
            zones: 1,
            rrsets_fail_open: 1,
            ..DnsMetrics::default()
        };
        expect_test::expect![[r##"
            # HELP neutral_dns_queries_total DNS queries received.
            # TYPE neutral_dns_queries_total counter
            neutral_dns_queries_total{transport="udp"} 2
            neutral_dns_queries_total{transport="tcp"} 1
            # HELP neutral_dns_responses_total DNS responses sent, by response code.
            # TYPE neutral_dns_responses_total counter
            neutral_dns_responses_total{rcode="NOERROR"} 1
            neutral_dns_responses_total{rcode="FORMERR"} 0
            neutral_dns_responses_total{rcode="SERVFAIL"} 0
            neutral_dns_responses_total{rcode="NXDOMAIN"} 1
            neutral_dns_responses_total{rcode="NOTIMP"} 0
            neutral_dns_responses_total{rcode="REFUSED"} 1
            neutral_dns_responses_total{rcode="OTHER"} 1
            # HELP neutral_dns_fallback_answers_total Address answers chosen by an all-down policy because no healthy record was left.
            # TYPE neutral_dns_fallback_answers_total counter
            neutral_dns_fallback_answers_total{mode="fail_open"} 1
            neutral_dns_fallback_answers_total{mode="last_known_good"} 0
            # HELP neutral_dns_send_failures_total Responses that could not be sent.
            # TYPE neutral_dns_send_failures_total counter
            neutral_dns_send_failures_total 0
            # HELP neutral_dns_dropped_total Dropped unanswered: responses sent to the server (QR=1), UDP queries over their prefix's rate, TCP connections over a connection cap.
            # TYPE neutral_dns_dropped_total counter
            neutral_dns_dropped_total{reason="response"} 1
            neutral_dns_dropped_total{reason="rate_limit"} 0
            neutral_dns_dropped_total{reason="tcp_limit"} 0
            # HELP neutral_dns_rate_limit_slipped_total UDP queries over their prefix's rate answered empty with TC=1, so real clients retry over TCP.
            # TYPE neutral_dns_rate_limit_slipped_total counter
            neutral_dns_rate_limit_slipped_total 1
            # HELP neutral_dns_zones Zones served.
            # TYPE neutral_dns_zones gauge
            neutral_dns_zones 1
            # HELP neutral_dns_degraded_rrsets A/AAAA rrsets not answering from healthy records, by mode.
            # TYPE neutral_dns_degraded_rrsets gauge
            neutral_dns_degraded_rrsets{mode="fail_open"} 1
            neutral_dns_degraded_rrsets{mode="last_known_good"} 0
            neutral_dns_degraded_rrsets{mode="empty"} 0
            # HELP neutral_dns_skipped_records Rrsets and records left out at the last zone load because they were invalid.
            # TYPE neutral_dns_skipped_records gauge
            neutral_dns_skipped_records 0
        "##]]
        .assert_eq(&metrics.prometheus_text());
    }
}
