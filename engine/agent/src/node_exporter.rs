//! CPU from a Prometheus node_exporter (optional): its
//! `node_cpu_seconds_total{cpu,mode}` counters are summed over CPUs into busy
//! and total time, and two scrapes give the utilisation between them, the
//! same way [`crate::cpu`] treats `/proc/stat`.
//!
//! [`parse_node_cpu`] is pure; [`NodeExporter::measure`] scrapes.

use std::time::Duration;

use reqwest::Url;

use crate::cpu::{CpuMeter, CpuTimes};

const METRIC: &str = "node_cpu_seconds_total";
const MAX_BODY: usize = 8 << 20;

/// Busy and total CPU time in milliseconds, summed over every CPU; `None`
/// when the text holds no `node_cpu_seconds_total` sample.
pub fn parse_node_cpu(text: &str) -> Option<CpuTimes> {
    let mut total = 0f64;
    let mut idle = 0f64;
    let mut seen = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
            continue;
        };
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
        else {
            continue;
        };
        seen = true;
        total += value;
        if labels.contains("mode=\"idle\"") || labels.contains("mode=\"iowait\"") {
            idle += value;
        }
    }
    let to_ms = |seconds: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ms = (seconds * 1000.0).round().clamp(0.0, 1.8e19) as u64;
        ms
    };
    seen.then(|| CpuTimes {
        busy: to_ms(total - idle),
        total: to_ms(total),
    })
}

/// Scrapes one node_exporter.
#[derive(Debug)]
pub struct NodeExporter {
    http: reqwest::Client,
    url: Url,
    meter: CpuMeter,
}

impl NodeExporter {
    pub fn new(url: Url) -> Result<Self, reqwest::Error> {
        crate::client::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()?;
        Ok(NodeExporter {
            http,
            url,
            meter: CpuMeter::default(),
        })
    }

    /// The utilisation since the previous successful scrape.
    pub async fn measure(&mut self) -> Option<f64> {
        let mut response = self.http.get(self.url.clone()).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return None;
            }
        }
        let times = parse_node_cpu(&String::from_utf8_lossy(&body))?;
        self.meter.observe(times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_is_every_mode_but_idle_and_iowait_over_all_cpus() {
        let text = "\
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 100
node_cpu_seconds_total{cpu=\"0\",mode=\"iowait\"} 10
node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 30.5
node_cpu_seconds_total{cpu=\"1\",mode=\"idle\"} 90
node_cpu_seconds_total{cpu=\"1\",mode=\"system\"} 9.5
node_cpu_guest_seconds_total{cpu=\"0\",mode=\"user\"} 5
node_load1 0.5
";
        assert_eq!(
            parse_node_cpu(text),
            Some(CpuTimes {
                busy: 40_000,
                total: 240_000
            })
        );
        assert_eq!(parse_node_cpu("node_load1 1\n"), None);
        assert_eq!(
            parse_node_cpu("node_cpu_seconds_total{mode=\"user\"} NaN\n"),
            None
        );
    }

    #[test]
    fn two_scrapes_give_the_utilisation_between_them() {
        let scrape = |user: f64, idle: f64| {
            parse_node_cpu(&format!(
                "node_cpu_seconds_total{{cpu=\"0\",mode=\"user\"}} {user}\n\
                 node_cpu_seconds_total{{cpu=\"0\",mode=\"idle\"}} {idle}\n"
            ))
            .unwrap()
        };
        let mut meter = CpuMeter::default();
        assert_eq!(meter.observe(scrape(10.0, 10.0)), None);
        assert_eq!(meter.observe(scrape(13.0, 11.0)), Some(0.75));
    }
}
