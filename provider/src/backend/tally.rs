//! The provider's count of the requests it sends to DNS backends, by
//! backend, read or write, and how each ended. The control plane cannot see
//! these requests (they happen inside Terraform's provider process), so the
//! resource reports them after each Terraform call and the control plane
//! exposes them as `neutral_dns_backend_calls_total`.
//!
//! The backends [`record`] every request in one process-wide [`Tally`]; the
//! resource [`Tally::take`]s what accumulated and [`Tally::restore`]s it
//! when the report fails. A leaf: it must not import the backends or the
//! clients.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use neutral_core::backend_calls::{Call, CallCount, CallResult};
use neutral_core::model::DnsBackendKind;

type Key = (DnsBackendKind, Call, CallResult);

/// Requests counted since the last take.
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<Key, u64>>);

impl Tally {
    /// The process' tally, which the backends count into.
    pub fn global() -> &'static Tally {
        static TALLY: OnceLock<Tally> = OnceLock::new();
        TALLY.get_or_init(Tally::default)
    }

    fn add(&self, key: Key, count: u64) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = counts.entry(key).or_default();
        *slot = slot.saturating_add(count);
    }

    pub fn record(&self, backend: DnsBackendKind, call: Call, result: CallResult) {
        self.add((backend, call, result), 1);
    }

    /// Everything counted since the last take; the tally is left empty.
    pub fn take(&self) -> Vec<CallCount> {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        taken
            .into_iter()
            .map(|((backend, call, result), count)| CallCount {
                backend,
                call,
                result,
                count,
            })
            .collect()
    }

    /// Puts back counts that could not be reported, for the next report.
    pub fn restore(&self, counts: Vec<CallCount>) {
        for c in counts {
            self.add((c.backend, c.call, c.result), c.count);
        }
    }
}

/// Counts one request in the process' tally.
pub fn record(backend: DnsBackendKind, call: Call, result: CallResult) {
    Tally::global().record(backend, call, result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_once_and_restored_whole() {
        let tally = Tally::default();
        tally.record(DnsBackendKind::Alidns, Call::Write, CallResult::Throttled);
        tally.record(DnsBackendKind::Alidns, Call::Write, CallResult::Throttled);
        tally.record(DnsBackendKind::Alidns, Call::Write, CallResult::Ok);
        tally.record(DnsBackendKind::Route53, Call::Read, CallResult::Error);
        let taken = tally.take();
        let shown: Vec<String> = taken
            .iter()
            .map(|c| {
                format!(
                    "{} {} {} {}",
                    c.backend.as_str(),
                    c.call.as_str(),
                    c.result.as_str(),
                    c.count
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "route53 read error 1",
                "alidns write ok 1",
                "alidns write throttled 2",
            ]
        );
        assert!(tally.take().is_empty(), "a take empties the tally");
        tally.record(DnsBackendKind::Alidns, Call::Write, CallResult::Ok);
        tally.restore(taken);
        let again = tally.take();
        let ok = again
            .iter()
            .find(|c| c.backend == DnsBackendKind::Alidns && c.result == CallResult::Ok)
            .map(|c| c.count);
        assert_eq!(ok, Some(2), "restored counts add to new ones");
        assert_eq!(again.len(), 3);
    }
}
