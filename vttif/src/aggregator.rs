//! The aggregator: global traffic matrix and application topology from the daemons'
//! cumulative local matrices.
//!
//! Each [`Snapshot`] a source (daemon) reports is turned into an update (counters since its
//! previous snapshot) stamped with the time it was ingested. The global matrix is the sum
//! of the updates of the last smoothing interval, a sliding window, divided by its length:
//! a low-passed rate per (src, dst). A pair's traffic is counted where it entered the
//! overlay (`sent`) and again where it left (`delivered`); the matrix takes the larger of
//! the two sums, so cross-host traffic is not counted twice and a pair whose source daemon
//! is not polled still shows.
//!
//! The topology: entries normalized by the largest unicast entry, pruned below the
//! detection threshold, as undirected edges. When the largest rate is below the noise
//! floor (the application is quiet), the previous topology stands. Damping: an edge whose
//! presence flipped at least three times within the damping window (it came, went and came
//! back, or went, came and went again) is held in the topology, so
//! topologies that alternate faster than the view can follow show as their union (those
//! that alternate faster than the smoothing interval already do, through the window). A
//! quiet window (a smoothing interval of silence) ends an oscillation episode: the flip
//! history is forgotten, so the next phase of the application starts undamped. The
//! view has settled when the reported edge set has not changed for the settle time.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vnet_core::mac::MacAddr;

use crate::matrix::{Counts, LocalMatrix, PairCounts, Snapshot};
use crate::shape::classify;

/// Flips of an edge's presence within the damping window that make it held. One flip is a
/// change of topology; two can be one transition seen through the noise of a slow phase;
/// three are an oscillation.
const HOLD_FLIPS: usize = 3;

/// The fastest update rate (thesis §4: 20 Hz).
pub const MAX_UPDATE_RATE_HZ: f64 = 20.0;

/// The aggregator's parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Updates per second from each daemon, in (0, 20].
    pub update_rate_hz: f64,
    /// The window the global matrix is averaged over; at least two update periods.
    pub smoothing: Duration,
    /// Fraction of the largest entry an entry needs to be part of the topology, in (0, 1].
    pub threshold: f64,
    /// How long the topology must stay the same to count as settled. A change takes up
    /// to one smoothing interval to pass through the window (the view shows the union of
    /// old and new edges meanwhile), so anything shorter can call a transition settled.
    pub settle: Duration,
    /// An edge whose presence flips three times within this window is held.
    pub damping: Duration,
    /// Below this largest rate (bytes/s) the application counts as quiet.
    pub noise_floor: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            update_rate_hz: MAX_UPDATE_RATE_HZ,
            smoothing: Duration::from_secs(1),
            threshold: 0.1,
            settle: Duration::from_secs(1),
            damping: Duration::from_secs(4),
            noise_floor: 1000.0,
        }
    }
}

/// Why parameters are unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// The update rate is not in (0, 20] Hz.
    #[error("update rate {0} Hz is not in (0, 20]")]
    UpdateRate(f64),
    /// The smoothing interval holds fewer than two updates.
    #[error("smoothing interval {smoothing:?} is shorter than two update periods ({period:?})")]
    Smoothing {
        /// The smoothing interval asked for.
        smoothing: Duration,
        /// One update period.
        period: Duration,
    },
    /// The detection threshold is not in (0, 1].
    #[error("detection threshold {0} is not in (0, 1]")]
    Threshold(f64),
    /// The noise floor is negative or not a number.
    #[error("noise floor {0} B/s is not a non-negative number")]
    NoiseFloor(f64),
}

impl Params {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ParamError> {
        if !(self.update_rate_hz > 0.0 && self.update_rate_hz <= MAX_UPDATE_RATE_HZ) {
            return Err(ParamError::UpdateRate(self.update_rate_hz));
        }
        let period = self.update_period();
        if self.smoothing < period * 2 {
            return Err(ParamError::Smoothing {
                smoothing: self.smoothing,
                period,
            });
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(ParamError::Threshold(self.threshold));
        }
        if self.noise_floor.is_nan() || self.noise_floor < 0.0 {
            return Err(ParamError::NoiseFloor(self.noise_floor));
        }
        Ok(())
    }

    /// Time between two updates.
    pub fn update_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.update_rate_hz)
    }
}

/// An undirected edge of the topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    /// One end (the smaller label).
    pub a: String,
    /// The other end.
    pub b: String,
    /// The larger of the two directions' normalized rates (1.0 for the heaviest entry).
    pub normalized: f64,
    /// Both directions' rates together, bytes/s, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_s: Option<f64>,
}

/// The application's topology as inferred from its traffic: nodes, edges, and the names of
/// the known shapes it is (not the daemons' interfaces, links and rules, which are
/// `vnet_core::config::Topology`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppTopology {
    /// Every node that has an edge, sorted.
    pub nodes: Vec<String>,
    /// Edges sorted by (a, b).
    pub edges: Vec<Edge>,
    /// The most specific known shape, if it is one.
    pub shape: Option<String>,
    /// Every known shape it is, most specific first.
    #[serde(default)]
    pub also: Vec<String>,
}

impl AppTopology {
    /// A topology from edges: orders each edge's ends and the edges, lists the nodes, and
    /// classifies the shape.
    pub fn new(mut edges: Vec<Edge>) -> AppTopology {
        for e in &mut edges {
            if e.b < e.a {
                std::mem::swap(&mut e.a, &mut e.b);
            }
        }
        edges.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
        edges.dedup_by(|x, y| (&x.a, &x.b) == (&y.a, &y.b));
        let nodes: Vec<String> = edges
            .iter()
            .flat_map(|e| [e.a.clone(), e.b.clone()])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index = |s: &str| nodes.binary_search_by(|n| n.as_str().cmp(s)).unwrap_or(0);
        let pairs: Vec<(usize, usize)> = edges.iter().map(|e| (index(&e.a), index(&e.b))).collect();
        let shapes: Vec<String> = classify(nodes.len(), &pairs)
            .iter()
            .map(ToString::to_string)
            .collect();
        AppTopology {
            shape: shapes.first().cloned(),
            also: shapes,
            nodes,
            edges,
        }
    }

    /// The same topology with every node renamed by `name` (MACs to VM names, say).
    pub fn relabel(&self, name: impl Fn(&str) -> String) -> AppTopology {
        AppTopology::new(
            self.edges
                .iter()
                .map(|e| Edge {
                    a: name(&e.a),
                    b: name(&e.b),
                    ..e.clone()
                })
                .collect(),
        )
    }

    /// The edge set as (a, b) pairs.
    pub fn pairs(&self) -> BTreeSet<(String, String)> {
        self.edges.iter().map(|e| (e.a.clone(), e.b.clone())).collect()
    }
}

/// One entry of the global matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatrixEntry {
    /// Source MAC (or label).
    pub src: String,
    /// Destination MAC (or label).
    pub dst: String,
    /// Smoothed rate, bytes/s.
    pub bytes_per_s: f64,
    /// Smoothed rate, frames/s.
    pub frames_per_s: f64,
    /// `bytes_per_s` over the largest unicast entry's.
    pub normalized: f64,
}

/// What the aggregator reports after an update.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// The caller's clock at this view, milliseconds.
    pub at_ms: u64,
    /// How much time the matrix averages over (the smoothing interval once running), ms.
    pub window_ms: u64,
    /// The application topology.
    pub topology: AppTopology,
    /// The global matrix, heaviest first.
    pub matrix: Vec<MatrixEntry>,
    /// The topology differs from the previous view's.
    pub changed: bool,
    /// The topology has not changed for the settle time.
    pub settled: bool,
    /// Some edges are held by oscillation damping (the view is a union of topologies).
    pub damped: bool,
    /// The largest rate is below the noise floor; the topology is the last one seen.
    pub quiet: bool,
    /// Topology changes so far.
    pub changes: u64,
    /// When the topology last changed (caller's clock, ms).
    pub last_change_ms: Option<u64>,
}

type Pair = (MacAddr, MacAddr);

#[derive(Debug)]
struct Source {
    uptime_us: u64,
    matrix: LocalMatrix,
}

/// The aggregator state. Feed it snapshots with [`Aggregator::ingest`], read it with
/// [`Aggregator::view`]; `now` is any monotonic clock, the same for both.
#[derive(Debug)]
pub struct Aggregator {
    params: Params,
    sources: HashMap<String, Source>,
    window: VecDeque<(Duration, Vec<PairCounts>)>,
    sums: BTreeMap<Pair, (Counts, Counts)>,
    first: Option<Duration>,
    raw: BTreeSet<Pair>,
    flips: BTreeMap<Pair, VecDeque<Duration>>,
    reported: BTreeSet<Pair>,
    last_change: Option<Duration>,
    changes: u64,
}

fn add(c: &mut Counts, d: Counts, sign: bool) {
    if sign {
        c.bytes += d.bytes;
        c.frames += d.frames;
    } else {
        c.bytes -= d.bytes;
        c.frames -= d.frames;
    }
}

fn unicast(p: &Pair) -> bool {
    !p.1.is_multicast() && p.0 != p.1
}

fn undirected(p: &Pair) -> Pair {
    (p.0.min(p.1), p.0.max(p.1))
}

impl Aggregator {
    /// An aggregator with checked parameters.
    pub fn new(params: Params) -> Result<Aggregator, ParamError> {
        params.validate()?;
        Ok(Aggregator {
            params,
            sources: HashMap::new(),
            window: VecDeque::new(),
            sums: BTreeMap::new(),
            first: None,
            raw: BTreeSet::new(),
            flips: BTreeMap::new(),
            reported: BTreeSet::new(),
            last_change: None,
            changes: 0,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Takes a source's snapshot at `now`. The first snapshot of a source, and one after
    /// the source restarted (uptime or a counter went backwards), only sets its baseline;
    /// returns whether the snapshot contributed an update.
    pub fn ingest(&mut self, now: Duration, source: &str, snap: &Snapshot) -> bool {
        self.first.get_or_insert(now);
        let mut matrix = snap.matrix.clone();
        matrix.normalize();
        let update = match self.sources.get(source) {
            Some(prev) if snap.uptime_us >= prev.uptime_us => matrix.since(&prev.matrix),
            _ => None,
        };
        self.sources.insert(
            source.to_string(),
            Source {
                uptime_us: snap.uptime_us,
                matrix,
            },
        );
        let Some(update) = update else {
            return false;
        };
        for e in &update {
            let s = self.sums.entry((e.src, e.dst)).or_default();
            add(&mut s.0, e.sent, true);
            add(&mut s.1, e.delivered, true);
        }
        self.window.push_back((now, update));
        true
    }

    /// The view at `now`: expires updates older than the smoothing interval, recomputes the
    /// matrix and topology, and tracks changes, damping and settling.
    pub fn view(&mut self, now: Duration) -> View {
        self.expire(now);
        let span = self
            .first
            .map_or(Duration::ZERO, |f| now.saturating_sub(f))
            .min(self.params.smoothing);
        let secs = span.as_secs_f64();
        let rates: BTreeMap<Pair, (f64, f64)> = self
            .sums
            .iter()
            .filter(|_| secs > 0.0)
            .map(|(p, (sent, deliv))| {
                let bytes = sent.bytes.max(deliv.bytes) as f64 / secs;
                let frames = sent.frames.max(deliv.frames) as f64 / secs;
                (*p, (bytes, frames))
            })
            .filter(|(_, (b, _))| *b > 0.0)
            .collect();
        let max = rates
            .iter()
            .filter(|(p, _)| unicast(p))
            .map(|(_, (b, _))| *b)
            .fold(0.0, f64::max);
        let quiet = max < self.params.noise_floor || max == 0.0;
        let norm = |b: f64| if max > 0.0 { b / max } else { 0.0 };
        if !quiet {
            let raw: BTreeSet<Pair> = rates
                .iter()
                .filter(|(p, (b, _))| unicast(p) && norm(*b) >= self.params.threshold)
                .map(|(p, _)| undirected(p))
                .collect();
            for p in raw.symmetric_difference(&self.raw) {
                self.flips.entry(*p).or_default().push_back(now);
            }
            self.raw = raw;
        }
        if quiet {
            // The whole window is below the noise floor: the application has been silent
            // for about a smoothing interval.
            self.flips.clear();
        }
        let horizon = now.saturating_sub(self.params.damping);
        self.flips.retain(|_, times| {
            while times.front().is_some_and(|t| *t < horizon) {
                times.pop_front();
            }
            !times.is_empty()
        });
        let held: BTreeSet<Pair> = self
            .flips
            .iter()
            .filter(|(p, times)| times.len() >= HOLD_FLIPS && !self.raw.contains(*p))
            .map(|(p, _)| *p)
            .collect();
        let reported: BTreeSet<Pair> = self.raw.union(&held).copied().collect();
        let changed = reported != self.reported;
        if changed {
            self.reported = reported;
            self.changes += 1;
            self.last_change = Some(now);
        }
        let settled = !self.reported.is_empty()
            && self
                .last_change
                .is_some_and(|t| now.saturating_sub(t) >= self.params.settle);

        let edges = self
            .reported
            .iter()
            .map(|&(a, b)| {
                let ab = rates.get(&(a, b)).map_or(0.0, |r| r.0);
                let ba = rates.get(&(b, a)).map_or(0.0, |r| r.0);
                Edge {
                    a: a.to_string(),
                    b: b.to_string(),
                    normalized: norm(ab.max(ba)),
                    bytes_per_s: Some(ab + ba),
                }
            })
            .collect();
        let mut matrix: Vec<MatrixEntry> = rates
            .iter()
            .map(|(p, (b, f))| MatrixEntry {
                src: p.0.to_string(),
                dst: p.1.to_string(),
                bytes_per_s: *b,
                frames_per_s: *f,
                normalized: norm(*b),
            })
            .collect();
        matrix.sort_by(|x, y| y.bytes_per_s.total_cmp(&x.bytes_per_s));
        View {
            at_ms: now.as_millis() as u64,
            window_ms: span.as_millis() as u64,
            topology: AppTopology::new(edges),
            matrix,
            changed,
            settled,
            damped: !held.is_empty(),
            quiet,
            changes: self.changes,
            last_change_ms: self.last_change.map(|t| t.as_millis() as u64),
        }
    }

    fn expire(&mut self, now: Duration) {
        let Some(cutoff) = now.checked_sub(self.params.smoothing) else {
            return;
        };
        while let Some((t, _)) = self.window.front() {
            if *t > cutoff {
                break;
            }
            let Some((_, update)) = self.window.pop_front() else {
                break;
            };
            for e in update {
                let key = (e.src, e.dst);
                if let Some(s) = self.sums.get_mut(&key) {
                    add(&mut s.0, e.sent, false);
                    add(&mut s.1, e.delivered, false);
                    if s.0.is_zero() && s.1.is_zero() {
                        self.sums.remove(&key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
