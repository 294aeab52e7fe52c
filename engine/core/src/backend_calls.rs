//! The report of the requests Terraform's provider sent to a DNS backend,
//! as it travels to the control plane (`POST /dns/backend-calls`) and as the
//! control plane counts it (`neutral_dns_backend_calls_total`). One
//! definition for both sides; this module owns only the shape and its
//! limits, no IO.

use serde::{Deserialize, Serialize};

use crate::model::DnsBackendKind;

/// Whether a request only reads the backend or changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Read,
    Write,
}

impl Call {
    pub const ALL: [Call; 2] = [Call::Read, Call::Write];

    pub fn as_str(self) -> &'static str {
        match self {
            Call::Read => "read",
            Call::Write => "write",
        }
    }
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallResult {
    Ok,
    /// Refused for now (rate limited, busy); tried again while tries last.
    Throttled,
    /// Refused for good, unreachable, or answered with something unreadable.
    Error,
}

impl CallResult {
    pub const ALL: [CallResult; 3] = [CallResult::Ok, CallResult::Throttled, CallResult::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            CallResult::Ok => "ok",
            CallResult::Throttled => "throttled",
            CallResult::Error => "error",
        }
    }
}

/// The requests of one (backend, call, result) since the last report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallCount {
    pub backend: DnsBackendKind,
    pub call: Call,
    pub result: CallResult,
    pub count: u64,
}

/// One report: the body of `POST /dns/backend-calls`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendCalls {
    pub calls: Vec<CallCount>,
}

impl BackendCalls {
    /// Entries one report may hold: every (backend, call, result) once.
    pub const MAX_ENTRIES: usize = 5 * 2 * 3;
    /// Requests one entry may claim: more than a provider process can send
    /// between two reports, so a larger figure is a bad report.
    pub const MAX_COUNT: u64 = 1_000_000;

    /// Why the report cannot be counted, naming the entry; `None` if fine.
    pub fn problem(&self) -> Option<String> {
        if self.calls.len() > Self::MAX_ENTRIES {
            return Some(format!(
                "`calls` holds {} entries; at most {} (one per backend, call and result)",
                self.calls.len(),
                Self::MAX_ENTRIES
            ));
        }
        self.calls.iter().enumerate().find_map(|(i, c)| {
            (c.count > Self::MAX_COUNT).then(|| {
                format!(
                    "`calls[{i}].count` is {}; at most {} per report",
                    c.count,
                    Self::MAX_COUNT
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_as_the_api_documents_it_and_refuses_what_it_does_not_know() {
        let text =
            r#"{"calls":[{"backend":"alidns","call":"write","result":"throttled","count":3}]}"#;
        let report: BackendCalls = serde_json::from_str(text).expect("a report");
        assert_eq!(
            report.calls,
            [CallCount {
                backend: DnsBackendKind::Alidns,
                call: Call::Write,
                result: CallResult::Throttled,
                count: 3
            }]
        );
        assert_eq!(serde_json::to_string(&report).expect("json"), text);
        assert!(
            serde_json::from_str::<BackendCalls>(
                r#"{"calls":[{"backend":"alidns","call":"write","result":"slow","count":3}]}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<BackendCalls>(
                r#"{"calls":[{"backend":"alidns","call":"write","result":"ok","count":3,"x":1}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn oversized_reports_are_named() {
        let entry = CallCount {
            backend: DnsBackendKind::Route53,
            call: Call::Read,
            result: CallResult::Ok,
            count: BackendCalls::MAX_COUNT + 1,
        };
        let one = BackendCalls {
            calls: vec![entry.clone()],
        };
        assert_eq!(
            one.problem().as_deref(),
            Some("`calls[0].count` is 1000001; at most 1000000 per report")
        );
        let many = BackendCalls {
            calls: vec![entry; BackendCalls::MAX_ENTRIES + 1],
        };
        assert!(many.problem().is_some_and(|p| p.contains("31 entries")));
        assert_eq!(BackendCalls::default().problem(), None);
    }
}
