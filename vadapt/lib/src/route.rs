//! Path algorithms on the host graph: the latency-bounded widest path, and routing every
//! demand of a placement through the residual network.
//!
//! The host graphs here are small and often dense (up to a few hundred hosts, links between
//! most pairs), so the Dijkstra variants use the O(V²) array form rather than a heap.

use crate::model::{Demand, DemandId, HostId, LinkId, Problem};

/// The directed link graph: endpoints and latency of each link, outgoing links per host.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// `(from, to, lat)` per link.
    edges: Vec<(HostId, HostId, f64)>,
    /// Outgoing link ids per host.
    out: Vec<Vec<LinkId>>,
}

impl Graph {
    /// Builds a graph on `hosts` nodes from `(from, to, lat)` per link, in link-id order.
    pub fn new(hosts: usize, edges: impl IntoIterator<Item = (HostId, HostId, f64)>) -> Self {
        let edges: Vec<_> = edges.into_iter().collect();
        let mut out = vec![Vec::new(); hosts];
        for (id, &(from, _, _)) in edges.iter().enumerate() {
            out[from].push(id);
        }
        Self { edges, out }
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.out.len()
    }

    /// Destination host of a link.
    pub fn head(&self, link: LinkId) -> HostId {
        self.edges[link].1
    }

    /// Source host of a link.
    pub fn tail(&self, link: LinkId) -> HostId {
        self.edges[link].0
    }

    /// Total latency of a path.
    pub fn latency(&self, path: &[LinkId]) -> f64 {
        path.iter().map(|&l| self.edges[l].2).sum()
    }

    /// Every simple path from `src` to `dst`, or `None` if enumerating them takes more than
    /// `*budget` steps (their number is exponential in the number of hosts); the steps taken
    /// are subtracted from `*budget`. For the exact solver and tests.
    pub fn simple_paths(&self, src: HostId, dst: HostId, budget: &mut u64) -> Option<Vec<Vec<LinkId>>> {
        let mut out = Vec::new();
        let mut seen = vec![false; self.hosts()];
        self.extend_paths(src, dst, &mut seen, &mut Vec::new(), &mut out, budget)
            .then_some(out)
    }

    /// Depth-first step of [`Graph::simple_paths`]; false when the budget ran out.
    fn extend_paths(
        &self,
        at: HostId,
        dst: HostId,
        seen: &mut [bool],
        path: &mut Vec<LinkId>,
        out: &mut Vec<Vec<LinkId>>,
        budget: &mut u64,
    ) -> bool {
        let Some(left) = budget.checked_sub(1) else {
            return false;
        };
        *budget = left;
        if at == dst {
            out.push(path.clone());
            return true;
        }
        seen[at] = true;
        let mut complete = true;
        for &l in &self.out[at] {
            if complete && !seen[self.head(l)] {
                path.push(l);
                complete = self.extend_paths(self.head(l), dst, seen, path, out, budget);
                path.pop();
            }
        }
        seen[at] = false;
        complete
    }

    /// The widest path from `src` to `dst` whose latency is at most `max_latency`: it
    /// maximises the bottleneck (the smallest `residual` of its links) and, among the
    /// widest, minimises latency. `None` when no path meets the bound. `src == dst` gives
    /// the empty path.
    ///
    /// Exact: a path has bottleneck ≥ t iff it only uses links with residual ≥ t, so the best
    /// bottleneck is the largest threshold t whose min-latency path over those links meets
    /// the bound. The plain widest-path Dijkstra gives the top candidate; only when its
    /// min-latency variant breaks the bound do we binary-search lower thresholds.
    pub fn widest_path(
        &self,
        residual: &[f64],
        src: HostId,
        dst: HostId,
        max_latency: Option<f64>,
    ) -> Option<Vec<LinkId>> {
        if src == dst {
            return Some(Vec::new());
        }
        let widest = self.widest_bottleneck(residual, src, dst)?;
        let within = |path: &Vec<LinkId>| max_latency.is_none_or(|bound| self.latency(path) <= bound);
        let top = self.fastest_path(residual, widest, src, dst)?;
        if within(&top) {
            return Some(top);
        }
        // The fastest path over all links is the answer at the lowest useful threshold, its
        // own bottleneck; if even it is too slow, no path meets the bound.
        let fastest = self
            .fastest_path(residual, f64::NEG_INFINITY, src, dst)
            .filter(within)?;
        let floor = fastest.iter().map(|&l| residual[l]).fold(f64::INFINITY, f64::min);
        // Thresholds strictly between, descending; feasibility is monotone in them.
        let mut thresholds: Vec<f64> = residual
            .iter()
            .copied()
            .filter(|&r| floor < r && r < widest)
            .collect();
        thresholds.sort_by(|a, b| b.total_cmp(a));
        thresholds.dedup();
        let (mut lo, mut hi) = (0, thresholds.len());
        let mut found = fastest;
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self
                .fastest_path(residual, thresholds[mid], src, dst)
                .filter(within)
            {
                Some(path) => {
                    found = path;
                    hi = mid;
                }
                None => lo = mid + 1,
            }
        }
        Some(found)
    }

    /// The largest bottleneck of any `src -> dst` path (max-min Dijkstra).
    fn widest_bottleneck(&self, residual: &[f64], src: HostId, dst: HostId) -> Option<f64> {
        let n = self.hosts();
        let mut width = vec![f64::NEG_INFINITY; n];
        let mut reached = vec![false; n];
        let mut done = vec![false; n];
        width[src] = f64::INFINITY;
        reached[src] = true;
        loop {
            let u = (0..n)
                .filter(|&v| reached[v] && !done[v])
                .max_by(|&a, &b| width[a].total_cmp(&width[b]))?;
            if u == dst {
                return Some(width[u]);
            }
            done[u] = true;
            for &l in &self.out[u] {
                let v = self.head(l);
                let w = width[u].min(residual[l]);
                if !done[v] && (!reached[v] || w > width[v]) {
                    width[v] = w;
                    reached[v] = true;
                }
            }
        }
    }

    /// The minimum-latency `src -> dst` path using only links with residual ≥ `threshold`.
    pub fn fastest_path(
        &self,
        residual: &[f64],
        threshold: f64,
        src: HostId,
        dst: HostId,
    ) -> Option<Vec<LinkId>> {
        let n = self.hosts();
        let mut dist = vec![f64::INFINITY; n];
        let mut via: Vec<Option<LinkId>> = vec![None; n];
        let mut done = vec![false; n];
        dist[src] = 0.0;
        loop {
            let u = (0..n)
                .filter(|&v| !done[v] && dist[v].is_finite())
                .min_by(|&a, &b| dist[a].total_cmp(&dist[b]))?;
            if u == dst {
                break;
            }
            done[u] = true;
            for &l in &self.out[u] {
                let (_, v, lat) = self.edges[l];
                if residual[l] >= threshold && !done[v] && dist[u] + lat < dist[v] {
                    dist[v] = dist[u] + lat;
                    via[v] = Some(l);
                }
            }
        }
        let mut path = Vec::new();
        let mut at = dst;
        while let Some(l) = via[at] {
            path.push(l);
            at = self.tail(l);
        }
        path.reverse();
        Some(path)
    }
}

/// Smallest residual (capacity minus load) over a path's links; `+inf` for the empty path.
pub fn bottleneck(capacity: &[f64], load: &[f64], path: &[LinkId]) -> f64 {
    path.iter()
        .map(|&l| capacity[l] - load[l])
        .fold(f64::INFINITY, f64::min)
}

/// Adds `amount` to the load of every link on `path`.
pub fn add_load(load: &mut [f64], path: &[LinkId], amount: f64) {
    for &l in path {
        load[l] += amount;
    }
}

/// How to pick a demand's path in the residual network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathChoice {
    /// The widest latency-feasible path: the most room left for this demand.
    Widest,
    /// The fastest path on which the demand fits: it leaves the wide links to others.
    Fit,
    /// The widest path through a given host: a detour the other two never consider.
    Via(HostId),
}

/// A path for `demand` between hosts `src` and `dst` chosen as `choice` says; the choices
/// other than [`PathChoice::Widest`] fall back to it when they find nothing valid.
pub fn choose_path(
    graph: &Graph,
    residual: &[f64],
    (src, dst): (HostId, HostId),
    demand: &Demand,
    choice: PathChoice,
) -> Option<Vec<LinkId>> {
    let within = |path: &Vec<LinkId>| demand.lat.is_none_or(|bound| graph.latency(path) <= bound);
    let alternative = match choice {
        PathChoice::Widest => None,
        PathChoice::Fit => graph.fastest_path(residual, demand.bw, src, dst).filter(within),
        PathChoice::Via(via) if via != src && via != dst => {
            let first = graph.widest_path(residual, src, via, demand.lat);
            let second = graph.widest_path(residual, via, dst, demand.lat);
            first
                .zip(second)
                .map(|(mut first, second)| {
                    first.extend(second);
                    first
                })
                .filter(|path| within(path) && is_simple(graph, path))
        }
        PathChoice::Via(_) => None,
    };
    alternative.or_else(|| graph.widest_path(residual, src, dst, demand.lat))
}

/// Whether a path visits no host twice.
fn is_simple(graph: &Graph, path: &[LinkId]) -> bool {
    let mut seen = vec![false; graph.hosts()];
    path.iter()
        .all(|&l| !std::mem::replace(&mut seen[graph.head(l)], true))
        && path.first().is_none_or(|&l| !seen[graph.tail(l)])
}

/// Routes `demands` (in the given order) one by one through the residual network, each on
/// the path `choice` picks for it, adding each demand's load as it goes. `routes` and `load`
/// hold the other demands' state and are updated in place; a demand with no latency-feasible
/// path gets `None`.
pub fn route_residual_aware(
    problem: &Problem,
    placement: &[HostId],
    demands: &[DemandId],
    mut choice: impl FnMut(DemandId) -> PathChoice,
    routes: &mut [Option<Vec<LinkId>>],
    load: &mut [f64],
) {
    let mut residual: Vec<f64> = problem
        .links
        .iter()
        .zip(load.iter())
        .map(|(l, used)| l.bw - used)
        .collect();
    for &d in demands {
        let demand = problem.demands[d];
        let hosts = (placement[demand.src], placement[demand.dst]);
        let path = choose_path(&problem.graph, &residual, hosts, &demand, choice(d));
        if let Some(path) = &path {
            add_load(load, path, demand.bw);
            for &l in path {
                residual[l] -= demand.bw;
            }
        }
        routes[d] = path;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path_bottleneck(residual: &[f64], path: &[LinkId]) -> f64 {
        bottleneck(residual, &vec![0.0; residual.len()], path)
    }

    /// A random graph on up to 6 hosts: (hosts, links as (from, to, residual, lat)).
    fn graphs() -> impl Strategy<Value = (usize, Vec<(usize, usize, f64, f64)>)> {
        (2usize..=6).prop_flat_map(|n| {
            let link =
                (0..n, 0..n, -5i32..20, 0u32..10).prop_map(|(a, b, r, l)| (a, b, f64::from(r), f64::from(l)));
            (Just(n), proptest::collection::vec(link, 0..20))
        })
    }

    /// The graph of `raw` links without self-loops and duplicates, and its residuals.
    fn graph_from(n: usize, raw: Vec<(usize, usize, f64, f64)>) -> (Graph, Vec<f64>) {
        let mut seen = std::collections::HashSet::new();
        let links: Vec<_> = raw
            .into_iter()
            .filter(|&(a, b, _, _)| a != b && seen.insert((a, b)))
            .collect();
        let graph = Graph::new(n, links.iter().map(|&(a, b, _, lat)| (a, b, lat)));
        (graph, links.iter().map(|l| l.2).collect())
    }

    proptest! {
        #[test]
        fn widest_path_matches_brute_force(
            (n, raw) in graphs(),
            src_seed in 0usize..6,
            dst_seed in 0usize..6,
            bound in proptest::option::of(0u32..25),
        ) {
            let (graph, residual) = graph_from(n, raw);
            let (src, dst) = (src_seed % n, dst_seed % n);
            let bound = bound.map(f64::from);
            let feasible: Vec<_> = graph
                .simple_paths(src, dst, &mut { u64::MAX })
                .expect("unlimited budget")
                .into_iter()
                .filter(|p| bound.is_none_or(|b| graph.latency(p) <= b))
                .collect();
            let got = graph.widest_path(&residual, src, dst, bound);
            match got {
                None => prop_assert!(feasible.is_empty()),
                Some(path) => {
                    let best = feasible
                        .iter()
                        .map(|p| path_bottleneck(&residual, p))
                        .fold(f64::NEG_INFINITY, f64::max);
                    let width = path_bottleneck(&residual, &path);
                    prop_assert_eq!(width, best);
                    let fastest = feasible
                        .iter()
                        .filter(|p| path_bottleneck(&residual, p) == best)
                        .map(|p| graph.latency(p))
                        .fold(f64::INFINITY, f64::min);
                    prop_assert_eq!(graph.latency(&path), fastest);
                    // It is a real path from src to dst.
                    let mut at = src;
                    for &l in &path {
                        prop_assert_eq!(graph.tail(l), at);
                        at = graph.head(l);
                    }
                    prop_assert_eq!(at, dst);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn every_path_choice_gives_a_valid_simple_path(
            (n, raw) in graphs(),
            src_seed in 0usize..6,
            dst_seed in 0usize..6,
            bound in proptest::option::of(0u32..25),
            bw in 0u32..10,
            choice in 0usize..8,
        ) {
            let (graph, residual) = graph_from(n, raw);
            let (src, dst) = (src_seed % n, dst_seed % n);
            let demand = Demand { src: 0, dst: 1, bw: f64::from(bw), lat: bound.map(f64::from) };
            let choice = match choice {
                0 => PathChoice::Widest,
                1 => PathChoice::Fit,
                via => PathChoice::Via(via % n),
            };
            let any_feasible = graph.widest_path(&residual, src, dst, demand.lat).is_some();
            match choose_path(&graph, &residual, (src, dst), &demand, choice) {
                None => prop_assert!(!any_feasible),
                Some(path) => {
                    prop_assert!(is_simple(&graph, &path));
                    prop_assert!(demand.lat.is_none_or(|b| graph.latency(&path) <= b));
                    let mut at = src;
                    for &l in &path {
                        prop_assert_eq!(graph.tail(l), at);
                        at = graph.head(l);
                    }
                    prop_assert_eq!(at, dst);
                }
            }
        }
    }

    #[test]
    fn fit_leaves_the_wide_link_and_via_forces_the_detour() {
        // 0->1 direct is wide; 0->2->1 fits a small demand and is faster.
        let graph = Graph::new(3, [(0, 1, 10.0), (0, 2, 1.0), (2, 1, 1.0)]);
        let residual = [100.0, 20.0, 20.0];
        let demand = Demand {
            src: 0,
            dst: 1,
            bw: 10.0,
            lat: None,
        };
        assert_eq!(
            choose_path(&graph, &residual, (0, 1), &demand, PathChoice::Widest),
            Some(vec![0])
        );
        assert_eq!(
            choose_path(&graph, &residual, (0, 1), &demand, PathChoice::Fit),
            Some(vec![1, 2])
        );
        let big = Demand { bw: 50.0, ..demand };
        assert_eq!(
            choose_path(&graph, &residual, (0, 1), &big, PathChoice::Fit),
            Some(vec![0])
        );
        assert_eq!(
            choose_path(&graph, &residual, (0, 1), &demand, PathChoice::Via(2)),
            Some(vec![1, 2])
        );
        assert_eq!(
            choose_path(&graph, &residual, (0, 1), &demand, PathChoice::Via(0)),
            Some(vec![0])
        );
    }

    #[test]
    fn latency_bound_forces_a_narrower_path() {
        // 0->1 direct is wide but slow; 0->2->1 is narrower but fast.
        let graph = Graph::new(3, [(0, 1, 50.0), (0, 2, 5.0), (2, 1, 5.0)]);
        let residual = [100.0, 10.0, 20.0];
        assert_eq!(graph.widest_path(&residual, 0, 1, None), Some(vec![0]));
        assert_eq!(graph.widest_path(&residual, 0, 1, Some(10.0)), Some(vec![1, 2]));
        assert_eq!(graph.widest_path(&residual, 0, 1, Some(9.0)), None);
    }
}
