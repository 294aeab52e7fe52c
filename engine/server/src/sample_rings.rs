//! The metric samples the autoscaler reads, kept in memory: one bounded ring
//! per node of a region with an autoscale policy, as long as that policy's
//! windows need and no longer.
//!
//! The store keeps every node's samples for `--sample-retention` (for a
//! restart and for the next leader); reading them back on every autoscale
//! tick would cost rows × nodes (about 7.5 million rows every tick for a
//! 100,000-node region with a one-minute window). So the leader's autoscaler
//! reads the store once, when its rings do not yet cover what the
//! declarations ask ([`SampleRings::begin_seed`], [`SampleRings::finish_seed`]),
//! and from then on every heartbeat's metrics that reach the world (this
//! replica's node API, or another replica's through the store) are appended
//! here ([`SampleRings::note`]) with the store's own spacing rule, so the
//! rings hold what a store read would return for every registered node.
//!
//! A ring keeps the samples of the cover's `keep` before its newest; with
//! the spacing rule that is at most `keep / spacing + 2` samples (one more
//! where a seed joins the store's samples to those noted meanwhile).
//! Regions without a policy keep no ring; a ring with nothing left in the
//! window (its node deleted or silent) is dropped at the next read, and the
//! rings of a region that lost its policy when the cover narrows. Rings
//! exist only while this replica leads ([`SampleRings::stop`] when its term
//! ends).
//!
//! This module holds data and computes on it; it must not do IO.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use neutral_core::autoscale::NodeSample;
use neutral_core::model::{MetricSample, Timestamp};

/// What the rings hold: the samples of the nodes of `regions`, as far back
/// as `keep` before now. Each region's name is held once, shared by its
/// rings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cover {
    pub regions: BTreeSet<Arc<str>>,
    pub keep: Duration,
}

impl Cover {
    fn keep_ms(&self) -> i64 {
        i64::try_from(self.keep.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether samples kept for `self` are all that `wanted` needs.
    fn holds(&self, wanted: &Cover) -> bool {
        wanted.keep <= self.keep && wanted.regions.is_subset(&self.regions)
    }
}

/// Whether the autoscaler can read its samples from the rings or must read
/// the store first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The rings hold what the cover asks for.
    Ready,
    /// The rings must be seeded from the store (the first read of a term, or
    /// a policy that reaches further back or into a new region).
    Seed,
}

#[derive(Clone, Debug)]
struct Ring {
    /// One of the cover's region names.
    region: Arc<str>,
    /// Shared with a [`RingSnapshot`] being read, if any: a heartbeat then
    /// copies this ring before changing it (`Arc::make_mut`).
    samples: Arc<VecDeque<MetricSample>>,
}

/// Per-node sample rings; see the module documentation.
#[derive(Clone, Debug)]
pub struct SampleRings {
    /// The smallest gap between two kept samples of one node: the store's
    /// (`neutral_store::SampleStore::spacing_ms`).
    spacing_ms: i64,
    /// `None`: not in use (this replica does not lead); notes are ignored.
    cover: Option<Cover>,
    /// Whether the cover was read from the store (not only being seeded).
    seeded: bool,
    /// Keyed by node id, shared with every sample read out.
    rings: HashMap<Arc<str>, Ring>,
}

impl SampleRings {
    pub fn new(spacing_ms: i64) -> SampleRings {
        SampleRings {
            spacing_ms: spacing_ms.max(1),
            cover: None,
            seeded: false,
            rings: HashMap::new(),
        }
    }

    /// Whether the rings already hold what `wanted` needs. When they hold
    /// more (a policy's window shrank, a region lost its policy), the cover
    /// narrows to `wanted` and what it no longer needs is dropped.
    pub fn readiness(&mut self, wanted: &Cover) -> Readiness {
        match &self.cover {
            Some(cover) if self.seeded && cover.holds(wanted) => {
                if cover != wanted {
                    self.cover = Some(wanted.clone());
                    self.rings
                        .retain(|_, ring| wanted.regions.contains(&ring.region));
                    let keep = wanted.keep_ms();
                    for ring in self.rings.values_mut() {
                        trim(ring, keep);
                    }
                }
                Readiness::Ready
            }
            _ => Readiness::Seed,
        }
    }

    /// Starts covering `wanted` before the store is read, so that samples
    /// noted while the read runs are kept and merged by
    /// [`SampleRings::finish_seed`].
    pub fn begin_seed(&mut self, wanted: Cover) {
        self.cover = Some(wanted);
        self.seeded = false;
    }

    /// Seeds the rings from `stored` (the store's samples of the covered
    /// regions since `keep` before now, oldest first, each with its node's
    /// region), keeping what was noted since [`SampleRings::begin_seed`]
    /// that is newer than the node's last stored sample. Does nothing if the
    /// cover changed meanwhile (the term ended or another seed began).
    pub fn finish_seed(&mut self, wanted: &Cover, stored: Vec<(Arc<str>, NodeSample)>) {
        if self.cover.as_ref() != Some(wanted) {
            return;
        }
        let mut seeded: HashMap<Arc<str>, Ring> = HashMap::new();
        for (region, NodeSample { node_id, sample }) in stored {
            let Some(region) = wanted.regions.get(&*region).cloned() else {
                continue;
            };
            let ring = seeded.entry(node_id).or_insert_with(|| Ring {
                region,
                samples: Arc::default(),
            });
            // The store returns samples oldest first; a late batch may put
            // one out of order, which is placed, not dropped.
            let samples = Arc::make_mut(&mut ring.samples);
            let place = samples.partition_point(|s| s.at <= sample.at);
            samples.insert(place, sample);
        }
        for (id, noted) in self.rings.drain() {
            // Kept for an earlier cover that held a region this one does not.
            if !wanted.regions.contains(&noted.region) {
                continue;
            }
            let ring = seeded.entry(id).or_insert_with(|| Ring {
                region: noted.region.clone(),
                samples: Arc::default(),
            });
            let last = ring.samples.back().map(|s| s.at);
            Arc::make_mut(&mut ring.samples).extend(
                noted
                    .samples
                    .iter()
                    .filter(|s| last.is_none_or(|last| s.at > last))
                    .copied(),
            );
        }
        self.rings = seeded;
        self.seeded = true;
        let keep = wanted.keep_ms();
        for ring in self.rings.values_mut() {
            trim(ring, keep);
        }
    }

    /// Stops keeping samples (this replica's term ended): the next leader
    /// reads the store, and so does this one if it leads again.
    pub fn stop(&mut self) {
        self.cover = None;
        self.seeded = false;
        self.rings = HashMap::new();
    }

    /// Notes a heartbeat's metrics of node `id` in `region`, taken `at`:
    /// appended when the region is covered and `at` is at least the spacing
    /// after the node's last kept sample (the store's rule), then the ring
    /// is trimmed to its cover.
    pub fn note(&mut self, id: &str, region: &str, sample: MetricSample) {
        let Some(cover) = &self.cover else {
            return;
        };
        let Some(shared) = cover.regions.get(region) else {
            return;
        };
        let ring = match self.rings.get_mut(id) {
            Some(ring) => ring,
            None => self.rings.entry(Arc::from(id)).or_insert_with(|| Ring {
                region: Arc::clone(shared),
                samples: Arc::default(),
            }),
        };
        if !Arc::ptr_eq(&ring.region, shared) {
            ring.region = Arc::clone(shared);
        }
        if let Some(last) = ring.samples.back()
            && sample.at.0.saturating_sub(last.at.0) < self.spacing_ms
        {
            return;
        }
        Arc::make_mut(&mut ring.samples).push_back(sample);
        trim(ring, cover.keep_ms());
    }

    /// The samples taken at or after `since` of the covered regions' nodes:
    /// each node's oldest first, the nodes in no order (what
    /// `neutral_core::autoscale` reads; it gathers them per node, and reads
    /// only the samples of a region's registered ready nodes, so those of a
    /// node deleted meanwhile are ignored there). Drops the rings with no
    /// sample since `since`: a node deleted or silent for that long.
    ///
    /// Taking it runs under the world's lock, so it copies one pointer per
    /// node and nothing else (no look-up, no sample, no sort); the samples
    /// are copied out by [`RingSnapshot::samples`], after the lock is let go.
    pub fn snapshot_since(&mut self, since: Timestamp) -> RingSnapshot {
        if self.cover.is_none() {
            return RingSnapshot::default();
        }
        self.rings
            .retain(|_, ring| ring.samples.back().is_some_and(|s| s.at >= since));
        RingSnapshot {
            since,
            rings: self
                .rings
                .iter()
                .map(|(id, ring)| (Arc::clone(id), Arc::clone(&ring.samples)))
                .collect(),
        }
    }

    /// [`SampleRings::snapshot_since`] read at once (the tests' reading).
    #[cfg(test)]
    pub fn samples_since(&mut self, since: Timestamp) -> Vec<NodeSample> {
        self.snapshot_since(since).samples()
    }

    /// Nodes with a ring, and samples held in all of them.
    pub fn size(&self) -> (usize, usize) {
        let samples = self.rings.values().map(|r| r.samples.len()).sum();
        (self.rings.len(), samples)
    }
}

/// Drops a ring's samples older than `keep_ms` before its newest.
fn trim(ring: &mut Ring, keep_ms: i64) {
    let Some(newest) = ring.samples.back().map(|s| s.at.0) else {
        return;
    };
    let cutoff = newest.saturating_sub(keep_ms);
    if ring.samples.front().is_some_and(|s| s.at.0 < cutoff) {
        let samples = Arc::make_mut(&mut ring.samples);
        while samples.front().is_some_and(|s| s.at.0 < cutoff) {
            samples.pop_front();
        }
    }
}

/// The rings as they were when taken ([`SampleRings::snapshot_since`]):
/// each node's id and its ring, shared.
#[derive(Debug, Default)]
pub struct RingSnapshot {
    since: Timestamp,
    rings: Vec<(Arc<str>, Arc<VecDeque<MetricSample>>)>,
}

impl RingSnapshot {
    /// The samples taken at or after the snapshot's `since`, as
    /// [`SampleRings::snapshot_since`] describes.
    pub fn samples(&self) -> Vec<NodeSample> {
        let count = self.rings.iter().map(|(_, ring)| ring.len()).sum();
        let mut out: Vec<NodeSample> = Vec::with_capacity(count);
        for (id, ring) in &self.rings {
            let from = ring.partition_point(|s| s.at < self.since);
            out.extend(ring.range(from..).map(|sample| NodeSample {
                node_id: Arc::clone(id),
                sample: *sample,
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests;
