//! A report as a store keeps it: every shared run of answers ([`Answers`])
//! written once, each domain naming its runs by number.
//!
//! The flat JSON of a report (the API's) repeats a run for every domain
//! that holds it: 1,000 domains over the same 100 regions of 100 nodes are
//! 8.8 million answers there, about a gigabyte of text, where the packed
//! form holds 8,800. This module only converts; when and where a report is
//! stored is the caller's business.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Answer, Answers, DomainWeights, SplitBrain, WeightsReport};

/// A [`WeightsReport`] with its runs of answers written once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackedReport {
    pub split_brain: Option<SplitBrain>,
    /// Every distinct run, once.
    runs: Vec<Arc<[Answer]>>,
    /// Each domain's entry without its answers, and its runs by number.
    domains: BTreeMap<String, PackedDomain>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PackedDomain {
    weights: DomainWeights,
    runs: Vec<u32>,
}

/// A packed report that names a run it does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("domain {domain}: answer run {run} is not among the report's {runs} runs")]
pub struct UnknownRun {
    pub domain: String,
    pub run: u32,
    pub runs: usize,
}

impl PackedReport {
    /// `report`, each run it shares written once (runs are told apart by
    /// identity, so equal runs made apart are written twice).
    pub fn pack(report: &WeightsReport) -> Self {
        let mut numbers: HashMap<*const (), u32> = HashMap::new();
        let mut runs: Vec<Arc<[Answer]>> = Vec::new();
        let domains = report
            .domains
            .iter()
            .map(|(name, weights)| {
                let numbered = weights
                    .answers
                    .runs()
                    .iter()
                    .map(|run| {
                        *numbers
                            .entry(Arc::as_ptr(run).cast::<()>())
                            .or_insert_with(|| {
                                runs.push(Arc::clone(run));
                                u32::try_from(runs.len() - 1).unwrap_or(u32::MAX)
                            })
                    })
                    .collect();
                let weights = DomainWeights {
                    answers: Answers::default(),
                    ..DomainWeights::clone(weights)
                };
                (
                    name.clone(),
                    PackedDomain {
                        weights,
                        runs: numbered,
                    },
                )
            })
            .collect();
        PackedReport {
            split_brain: report.split_brain.clone(),
            runs,
            domains,
        }
    }

    /// The report again, its domains sharing runs as they did when packed.
    pub fn unpack(self) -> Result<WeightsReport, UnknownRun> {
        let runs = self.runs;
        let mut domains = BTreeMap::new();
        for (name, packed) in self.domains {
            let mut answers = Vec::with_capacity(packed.runs.len());
            for run in packed.runs {
                let Some(shared) = usize::try_from(run).ok().and_then(|i| runs.get(i)) else {
                    return Err(UnknownRun {
                        domain: name,
                        run,
                        runs: runs.len(),
                    });
                };
                answers.push(Arc::clone(shared));
            }
            let weights = DomainWeights {
                answers: Answers::from_runs(answers),
                ..packed.weights
            };
            domains.insert(name, Arc::new(weights));
        }
        Ok(WeightsReport {
            split_brain: self.split_brain,
            domains,
        })
    }
}
