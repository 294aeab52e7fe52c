//! A report as a store keeps it: every shared run of answers ([`Answers`])
//! and every shared region weight written once, each domain naming them by
//! number.
//!
//! The flat JSON of a report (the API's) repeats a run for every domain
//! that holds it: 1,000 domains over the same 100 regions of 100 nodes are
//! 8.8 million answers there, about a gigabyte of text, where the packed
//! form holds 8,800; and 100,000 region weights, each with a reason that
//! lists the region's nodes, where the packed form holds 100. This module
//! only converts; when and where a report is stored is the caller's
//! business.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Answer, Answers, DomainWeights, RegionWeight, SplitBrain, WeightsReport};

/// A [`WeightsReport`] with its runs of answers written once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackedReport {
    pub split_brain: Option<SplitBrain>,
    /// Every distinct run, once.
    runs: Vec<Arc<[Answer]>>,
    /// Every distinct region weight, once.
    regions: Vec<RegionWeight>,
    /// Each domain's entry without its answers and regions, and those by
    /// number.
    domains: BTreeMap<String, PackedDomain>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PackedDomain {
    weights: DomainWeights,
    runs: Vec<u32>,
    regions: Vec<u32>,
}

/// A packed report that names a run of answers or a region weight it does
/// not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("domain {domain}: {what} {number} is not among the report's {held}")]
pub struct UnknownRun {
    pub domain: String,
    /// `answer run` or `region weight`.
    pub what: &'static str,
    pub number: u32,
    pub held: usize,
}

/// Numbers values as they are first seen, telling them apart by the address
/// of `key` and, for values sharing one, by equality.
struct Numbering<T> {
    values: Vec<T>,
    by_key: HashMap<*const (), Vec<u32>>,
}

impl<T: Clone + PartialEq> Numbering<T> {
    fn new() -> Self {
        Numbering {
            values: Vec::new(),
            by_key: HashMap::new(),
        }
    }

    fn number(&mut self, key: *const (), value: &T) -> u32 {
        let numbers = self.by_key.entry(key).or_default();
        let values = &mut self.values;
        if let Some(&known) = numbers
            .iter()
            .find(|&&n| usize::try_from(n).ok().and_then(|n| values.get(n)) == Some(value))
        {
            return known;
        }
        values.push(value.clone());
        let number = u32::try_from(values.len() - 1).unwrap_or(u32::MAX);
        numbers.push(number);
        number
    }
}

/// The values `numbers` name in `held`, or the first number it does not
/// hold.
fn named<T: Clone>(
    domain: &str,
    what: &'static str,
    held: &[T],
    numbers: &[u32],
) -> Result<Vec<T>, UnknownRun> {
    numbers
        .iter()
        .map(|&number| {
            usize::try_from(number)
                .ok()
                .and_then(|i| held.get(i))
                .cloned()
                .ok_or_else(|| UnknownRun {
                    domain: domain.to_owned(),
                    what,
                    number,
                    held: held.len(),
                })
        })
        .collect()
}

impl PackedReport {
    /// `report`, each run and region weight it shares written once (told
    /// apart by identity, so equal runs made apart are written twice).
    pub fn pack(report: &WeightsReport) -> Self {
        let mut runs: Numbering<Arc<[Answer]>> = Numbering::new();
        let mut regions: Numbering<RegionWeight> = Numbering::new();
        let domains = report
            .domains
            .iter()
            .map(|(name, weights)| {
                let run_numbers = weights
                    .answers
                    .runs()
                    .iter()
                    .map(|run| runs.number(Arc::as_ptr(run).cast::<()>(), run))
                    .collect();
                let region_numbers = weights
                    .regions
                    .iter()
                    .map(|r| regions.number(Arc::as_ptr(&r.reason).cast::<()>(), r))
                    .collect();
                // Every field by name: answers and regions are written
                // apart, so they are not copied here.
                let DomainWeights {
                    domain,
                    zone,
                    record_type,
                    ttl,
                    dns,
                    mode,
                    regions: _,
                    answers: _,
                    reasons,
                } = &**weights;
                let weights = DomainWeights {
                    domain: domain.clone(),
                    zone: zone.clone(),
                    record_type: *record_type,
                    ttl: *ttl,
                    dns: *dns,
                    mode: *mode,
                    regions: Vec::new(),
                    answers: Answers::default(),
                    reasons: reasons.clone(),
                };
                (
                    name.to_string(),
                    PackedDomain {
                        weights,
                        runs: run_numbers,
                        regions: region_numbers,
                    },
                )
            })
            .collect();
        PackedReport {
            split_brain: report.split_brain.clone(),
            runs: runs.values,
            regions: regions.values,
            domains,
        }
    }

    /// The report again, its domains sharing runs and region weights as
    /// they did when packed.
    pub fn unpack(self) -> Result<WeightsReport, UnknownRun> {
        let mut domains = BTreeMap::new();
        for (name, packed) in self.domains {
            let answers = named(&name, "answer run", &self.runs, &packed.runs)?;
            let regions = named(&name, "region weight", &self.regions, &packed.regions)?;
            let weights = DomainWeights {
                answers: Answers::from_runs(answers),
                regions,
                ..packed.weights
            };
            domains.insert(Arc::from(name), Arc::new(weights));
        }
        Ok(WeightsReport {
            split_brain: self.split_brain,
            domains,
        })
    }
}
