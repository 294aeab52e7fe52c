//! RTT and error rate of the node's own service, measured by a few bounded
//! HTTP requests to the probe URL at each heartbeat.
//!
//! [`summarise`] and [`probe_timeout`] are pure; [`Prober::measure`] sends the
//! requests.

use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;

/// Largest part of a probe response that is read (the rest is dropped).
const MAX_PROBE_BODY: usize = 64 * 1024;
/// Shortest per-request timeout, whatever the heartbeat interval.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(10);

/// The result of one probe request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A 2xx or 3xx answer, after this long.
    Success(Duration),
    /// Another status, a connection error or a timeout.
    Failure,
}

/// What a round of probes measured.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ProbeSummary {
    /// Median duration of the successful requests; the per-request timeout
    /// when none succeeded (the service is at least that slow).
    pub rtt_ms: f64,
    /// Failed requests over all requests.
    pub error_rate: f64,
}

/// Summarises a round; `None` when no request was made.
pub fn summarise(outcomes: &[ProbeOutcome], timeout: Duration) -> Option<ProbeSummary> {
    if outcomes.is_empty() {
        return None;
    }
    let mut successes: Vec<Duration> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            ProbeOutcome::Success(took) => Some(*took),
            ProbeOutcome::Failure => None,
        })
        .collect();
    successes.sort_unstable();
    let rtt = match successes.len() {
        0 => timeout,
        n if n % 2 == 1 => successes.get(n / 2).copied().unwrap_or(timeout),
        n => {
            let low = successes.get(n / 2 - 1).copied().unwrap_or(timeout);
            let high = successes.get(n / 2).copied().unwrap_or(timeout);
            (low + high) / 2
        }
    };
    #[allow(clippy::cast_precision_loss)]
    let error_rate = (outcomes.len() - successes.len()) as f64 / outcomes.len() as f64;
    Some(ProbeSummary {
        rtt_ms: rtt.as_secs_f64() * 1000.0,
        error_rate,
    })
}

/// The per-request timeout: the configured one, shortened so that `count`
/// sequential requests take at most half the heartbeat interval.
pub fn probe_timeout(configured: Duration, interval: Duration, count: u32) -> Duration {
    let budget = interval / 2;
    let share = budget / count.max(1);
    configured.min(share).max(MIN_PROBE_TIMEOUT)
}

/// Sends probe rounds to one URL.
#[derive(Debug)]
pub struct Prober {
    http: reqwest::Client,
    url: Url,
    count: u32,
    timeout: Duration,
}

impl Prober {
    /// `count` requests per round, each bounded by `timeout` (and by the
    /// heartbeat interval, see [`probe_timeout`]).
    pub fn new(url: Url, count: u32, timeout: Duration) -> Result<Self, reqwest::Error> {
        crate::client::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "neutral-agent/",
                env!("CARGO_PKG_VERSION"),
                " probe"
            ))
            .build()?;
        Ok(Prober {
            http,
            url,
            count: count.max(1),
            timeout,
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// One round of sequential requests, bounded by `count × timeout`.
    pub async fn measure(&self, interval: Duration) -> Option<ProbeSummary> {
        let timeout = probe_timeout(self.timeout, interval, self.count);
        let mut outcomes = Vec::new();
        for _ in 0..self.count {
            outcomes.push(self.one(timeout).await);
        }
        let summary = summarise(&outcomes, timeout);
        tracing::debug!(url = %self.url, ?outcomes, ?summary, "probed the local service");
        summary
    }

    async fn one(&self, timeout: Duration) -> ProbeOutcome {
        let started = Instant::now();
        let attempt = async {
            let mut response = self.http.get(self.url.clone()).send().await.ok()?;
            let status = response.status();
            let mut read = 0usize;
            while let Ok(Some(chunk)) = response.chunk().await {
                read = read.saturating_add(chunk.len());
                if read > MAX_PROBE_BODY {
                    break;
                }
            }
            Some(status.is_success() || status.is_redirection())
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Some(true)) => ProbeOutcome::Success(started.elapsed()),
            _ => ProbeOutcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> ProbeOutcome {
        ProbeOutcome::Success(Duration::from_millis(ms))
    }

    #[test]
    fn rtt_is_the_median_of_successes_and_failures_make_the_error_rate() {
        let timeout = Duration::from_secs(1);
        let summary = summarise(&[ok(3), ok(100), ok(5)], timeout).unwrap();
        assert_eq!(
            summary,
            ProbeSummary {
                rtt_ms: 5.0,
                error_rate: 0.0
            }
        );
        let summary = summarise(&[ok(4), ProbeOutcome::Failure, ok(8), ok(2)], timeout).unwrap();
        assert_eq!(
            summary,
            ProbeSummary {
                rtt_ms: 4.0,
                error_rate: 0.25
            }
        );
        let summary = summarise(&[ok(2), ok(6)], timeout).unwrap();
        assert_eq!(summary.rtt_ms, 4.0);
    }

    #[test]
    fn a_service_that_never_answers_reports_the_timeout_and_full_error_rate() {
        let summary = summarise(
            &[ProbeOutcome::Failure, ProbeOutcome::Failure],
            Duration::from_millis(250),
        )
        .unwrap();
        assert_eq!(
            summary,
            ProbeSummary {
                rtt_ms: 250.0,
                error_rate: 1.0
            }
        );
    }

    #[test]
    fn no_requests_means_no_measurement() {
        assert_eq!(summarise(&[], Duration::from_secs(1)), None);
    }

    #[test]
    fn probes_fit_in_half_the_heartbeat_interval() {
        let second = Duration::from_secs(1);
        assert_eq!(probe_timeout(second, Duration::from_secs(10), 3), second);
        assert_eq!(
            probe_timeout(second, Duration::from_millis(600), 3),
            Duration::from_millis(100)
        );
        assert_eq!(probe_timeout(second, Duration::ZERO, 3), MIN_PROBE_TIMEOUT);
        assert_eq!(probe_timeout(second, Duration::from_secs(10), 0), second);
    }
}
