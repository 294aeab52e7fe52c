//! A domain's answers as a report holds them: a list of runs, each run a
//! shared slice (`Arc<[Answer]>`).
//!
//! A `normal` or `fail_open` domain holds one run per serving region, in
//! the order of its `regions`, and every domain whose settings give a
//! region the same evaluation holds the very same run: 1,000 domains over
//! the same 100 regions hold 100 runs between them, not 1,000 × 100 copies.
//! An incremental recompute swaps the runs of the regions that changed and
//! keeps the others by reference. Kept answers (`last_known_good`,
//! `split_brain_hold`) are one run.
//!
//! The type reads as the flat list it stands for: equality, `Debug` and
//! JSON see the answers one after the other, never the runs (a list read
//! back from JSON is one run). This module owns the answer and that
//! representation only; which answers a domain has is the weights'
//! business.

use std::fmt;
use std::sync::Arc;

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One node in a domain's answers.
///
/// The text is shared (`Arc<str>`, serialized as a plain string): a report
/// holds each node id, region name and reason once, however many domains
/// answer with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub node_id: Arc<str>,
    pub region: Arc<str>,
    pub address: IpAddr,
    pub weight: u32,
    pub reason: Arc<str>,
}

/// A domain's answers; see the [module docs](self).
#[derive(Clone, Default)]
pub struct Answers {
    runs: Vec<Arc<[Answer]>>,
    len: usize,
}

impl Answers {
    /// The answers of `runs`, one after the other.
    pub fn from_runs(runs: Vec<Arc<[Answer]>>) -> Self {
        let len = runs.iter().map(|run| run.len()).sum();
        Answers { runs, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every answer, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Answer> + Clone {
        self.runs.iter().flat_map(|run| run.iter())
    }

    /// The shared runs the answers are made of.
    pub fn runs(&self) -> &[Arc<[Answer]>] {
        &self.runs
    }

    /// The answer at `index` of the flat list.
    pub fn get(&self, mut index: usize) -> Option<&Answer> {
        for run in &self.runs {
            match run.get(index) {
                Some(answer) => return Some(answer),
                None => index -= run.len(),
            }
        }
        None
    }

    pub fn first(&self) -> Option<&Answer> {
        self.iter().next()
    }

    pub fn to_vec(&self) -> Vec<Answer> {
        self.iter().cloned().collect()
    }
}

impl From<Vec<Answer>> for Answers {
    /// One run, or none when `answers` is empty.
    fn from(answers: Vec<Answer>) -> Self {
        if answers.is_empty() {
            return Answers::default();
        }
        Answers::from_runs(vec![Arc::from(answers)])
    }
}

impl FromIterator<Answer> for Answers {
    fn from_iter<I: IntoIterator<Item = Answer>>(answers: I) -> Self {
        Answers::from(answers.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a Answers {
    type Item = &'a Answer;
    type IntoIter = Box<dyn DoubleEndedIterator<Item = &'a Answer> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl PartialEq for Answers {
    /// The flat lists compared; runs shared by both are not read.
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        let aligned = self.runs.len() == other.runs.len()
            && self
                .runs
                .iter()
                .zip(&other.runs)
                .all(|(a, b)| a.len() == b.len());
        if aligned {
            return self
                .runs
                .iter()
                .zip(&other.runs)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b);
        }
        self.iter().eq(other.iter())
    }
}

impl Eq for Answers {}

impl PartialEq<[Answer]> for Answers {
    fn eq(&self, other: &[Answer]) -> bool {
        self.len == other.len() && self.iter().eq(other.iter())
    }
}

impl PartialEq<Vec<Answer>> for Answers {
    fn eq(&self, other: &Vec<Answer>) -> bool {
        self == other.as_slice()
    }
}

impl fmt::Debug for Answers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Answers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Answers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Answer>::deserialize(deserializer).map(Answers::from)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn answer(id: &str, weight: u32) -> Answer {
        Answer {
            node_id: id.into(),
            region: "jp".into(),
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            weight,
            reason: "jp 100 split over 2 ready nodes".into(),
        }
    }

    #[test]
    fn runs_read_as_one_flat_list() {
        let runs: Vec<Arc<[Answer]>> = vec![
            Arc::from(vec![answer("a", 1), answer("b", 2)]),
            Arc::from(Vec::new()),
            Arc::from(vec![answer("c", 3)]),
        ];
        let answers = Answers::from_runs(runs);
        let flat = vec![answer("a", 1), answer("b", 2), answer("c", 3)];
        assert_eq!(answers.len(), 3);
        assert_eq!(answers, flat);
        assert_eq!(answers, Answers::from(flat.clone()));
        assert_eq!(answers.get(2).map(|a| &*a.node_id), Some("c"));
        assert_eq!(answers.get(3), None);
        assert_eq!(answers.get(1).map(|a| a.weight), Some(2));
        assert_eq!(answers.iter().next_back().map(|a| a.weight), Some(3));
        assert_ne!(answers, Answers::from(vec![answer("a", 1), answer("b", 2)]));
        assert_ne!(
            answers,
            Answers::from(vec![answer("a", 1), answer("b", 2), answer("c", 4)])
        );
        assert_eq!(
            serde_json::to_value(&answers).expect("serializes"),
            serde_json::to_value(&flat).expect("serializes")
        );
        let back: Answers =
            serde_json::from_value(serde_json::to_value(&answers).expect("serializes"))
                .expect("reads back");
        assert_eq!(back, answers);
        assert_eq!(back.runs().len(), 1);
        assert_eq!(format!("{answers:?}"), format!("{flat:?}"));
    }

    #[test]
    fn runs_of_the_same_count_compare_run_by_run() {
        let shared: Arc<[Answer]> = Arc::from(vec![answer("a", 1)]);
        let one = Answers::from_runs(vec![Arc::clone(&shared), Arc::from(vec![answer("b", 2)])]);
        let same = Answers::from_runs(vec![shared, Arc::from(vec![answer("b", 2)])]);
        let other = Answers::from_runs(vec![
            Arc::from(vec![answer("a", 1)]),
            Arc::from(vec![answer("b", 3)]),
        ]);
        assert_eq!(one, same);
        assert_ne!(one, other);
        let regrouped = Answers::from_runs(vec![
            Arc::from(Vec::new()),
            Arc::from(vec![answer("a", 1), answer("b", 2)]),
        ]);
        assert_eq!(one, regrouped);
        assert!(Answers::default().is_empty());
        assert_eq!(Answers::from(Vec::new()).runs().len(), 0);
    }
}
