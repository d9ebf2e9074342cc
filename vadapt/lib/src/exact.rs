//! The exact solver for small instances, the oracle the heuristics are measured against.
//!
//! Branch and bound in two levels. Outer: every placement, VM by VM (most traffic first),
//! skipping hosts without compute or size room and honouring pins. Inner, per placement:
//! every combination of simple paths for the network demands (heaviest first), skipping any
//! path that would overload a link or break the demand's latency bound.
//!
//! Bounds use the fact that residuals only shrink as demands are added: a routed demand's
//! bottleneck can only fall, and an unrouted one can at best get the widest remaining
//! candidate minus its own bandwidth. The sum of those, plus the local credit, minus the
//! placement's migration cost, bounds every completion; a branch that cannot beat the
//! incumbent (initially the better heuristic plan, if feasible) is cut.
//!
//! Exponential: it enumerates simple paths, so it is meant for about 6 hosts and 8 VMs. A
//! node limit turns a run that would take too long into [`SolveError::SearchLimit`].

use std::collections::HashMap;

use crate::anneal::residual_aware;
use crate::error::SolveError;
use crate::eval::evaluate;
use crate::greedy::greedy;
use crate::model::{DemandId, HostId, LinkId, Problem, VmId};
use crate::plan::Solution;
use crate::route::{add_load, bottleneck};

/// Default search-node limit: a few seconds of search.
pub const DEFAULT_MAX_NODES: u64 = 20_000_000;

/// The optimal feasible plan, `Ok(None)` if no plan is feasible, or an error if the search
/// needed more than `max_nodes` nodes.
pub fn exact(problem: &Problem, max_nodes: u64) -> Result<Option<Solution>, SolveError> {
    let mut search = Exact::new(problem, max_nodes);
    for candidate in [greedy(problem), residual_aware(problem)] {
        let evaluation = evaluate(problem, &candidate);
        if evaluation.feasible
            && search
                .best
                .as_ref()
                .is_none_or(|(best, _)| evaluation.objective > *best)
        {
            search.best = Some((evaluation.objective, candidate));
        }
    }
    search.place(0)?;
    Ok(search.best.map(|(_, solution)| solution))
}

/// Slack for floating-point comparisons of objectives.
const EPSILON: f64 = 1e-9;

struct Exact<'a> {
    problem: &'a Problem,
    capacity: Vec<f64>,
    max_nodes: u64,
    nodes: u64,
    best: Option<(f64, Solution)>,
    /// VMs in branching order.
    vm_order: Vec<VmId>,
    placement: Vec<HostId>,
    compute_room: Vec<f64>,
    size_room: Vec<f64>,
    /// Simple paths per (src host, dst host), computed on first use.
    paths: HashMap<(HostId, HostId), Vec<Vec<LinkId>>>,
}

/// The network demands of one placement and their candidate paths.
struct Routing {
    demands: Vec<DemandId>,
    candidates: Vec<Vec<Vec<LinkId>>>,
    /// Local credit minus migration cost: the part of the objective routing cannot change.
    fixed: f64,
}

impl<'a> Exact<'a> {
    fn new(problem: &'a Problem, max_nodes: u64) -> Self {
        let mut traffic = vec![0.0; problem.vms.len()];
        for d in &problem.demands {
            traffic[d.src] += d.bw;
            traffic[d.dst] += d.bw;
        }
        let mut vm_order: Vec<VmId> = (0..problem.vms.len()).collect();
        vm_order.sort_by(|&a, &b| traffic[b].total_cmp(&traffic[a]));
        Self {
            problem,
            capacity: problem.capacities(),
            max_nodes,
            nodes: 0,
            best: None,
            vm_order,
            placement: problem.vms.iter().map(|vm| vm.current).collect(),
            compute_room: problem.hosts.iter().map(|h| h.compute).collect(),
            size_room: problem.hosts.iter().map(|h| h.size).collect(),
            paths: HashMap::new(),
        }
    }

    fn visit(&mut self) -> Result<(), SolveError> {
        self.nodes += 1;
        if self.nodes > self.max_nodes {
            return Err(SolveError::SearchLimit {
                nodes: self.max_nodes,
            });
        }
        Ok(())
    }

    fn beats_incumbent(&self, bound: f64) -> bool {
        self.best.as_ref().is_none_or(|(best, _)| bound > best + EPSILON)
    }

    fn place(&mut self, depth: usize) -> Result<(), SolveError> {
        self.visit()?;
        let Some(&vm) = self.vm_order.get(depth) else {
            return self.route_placement();
        };
        let spec = &self.problem.vms[vm];
        let (compute, size) = (spec.compute, spec.size);
        let hosts = match spec.pin {
            Some(pin) => pin..pin + 1,
            None => 0..self.problem.hosts.len(),
        };
        for host in hosts {
            if compute <= self.compute_room[host] && size <= self.size_room[host] {
                self.compute_room[host] -= compute;
                self.size_room[host] -= size;
                self.placement[vm] = host;
                let result = self.place(depth + 1);
                self.compute_room[host] += compute;
                self.size_room[host] += size;
                result?;
            }
        }
        Ok(())
    }

    /// Builds the routing subproblem of the current placement, or `None` when a demand has
    /// no path that fits alone (then no routing of this placement is feasible). Enumerating
    /// paths counts against the node limit.
    fn routing(&mut self) -> Result<Option<Routing>, SolveError> {
        let problem = self.problem;
        let mut fixed = 0.0;
        for (vm, &host) in problem.vms.iter().zip(&self.placement) {
            if vm.current != host {
                fixed -= vm.migration_cost;
            }
        }
        let local_residual = problem.local_residuals(&self.placement);
        let mut demands = problem.demands_by_weight();
        demands.retain(|&d| {
            let host = self.placement[problem.demands[d].src];
            let local = host == self.placement[problem.demands[d].dst];
            if local {
                fixed += local_residual[host];
            }
            !local
        });
        let mut candidates = Vec::with_capacity(demands.len());
        for &d in &demands {
            let demand = problem.demands[d];
            let (src, dst) = (self.placement[demand.src], self.placement[demand.dst]);
            let graph = &problem.graph;
            if !self.paths.contains_key(&(src, dst)) {
                let mut budget = self.max_nodes.saturating_sub(self.nodes);
                let found = graph.simple_paths(src, dst, &mut budget);
                self.nodes = self.max_nodes - budget;
                let found = found.ok_or(SolveError::SearchLimit {
                    nodes: self.max_nodes,
                })?;
                self.paths.insert((src, dst), found);
            }
            let all = &self.paths[&(src, dst)];
            let width = |p: &Vec<LinkId>| {
                p.iter()
                    .map(|&l| problem.links[l].bw)
                    .fold(f64::INFINITY, f64::min)
            };
            let mut paths: Vec<Vec<LinkId>> = all
                .iter()
                .filter(|p| demand.lat.is_none_or(|bound| graph.latency(p) <= bound))
                .filter(|p| width(p) >= demand.bw)
                .cloned()
                .collect();
            if paths.is_empty() {
                return Ok(None);
            }
            paths.sort_by(|a, b| width(b).total_cmp(&width(a)));
            candidates.push(paths);
        }
        Ok(Some(Routing {
            demands,
            candidates,
            fixed,
        }))
    }

    fn route_placement(&mut self) -> Result<(), SolveError> {
        let Some(routing) = self.routing()? else {
            return Ok(());
        };
        let mut load = vec![0.0; self.capacity.len()];
        let mut chosen = Vec::with_capacity(routing.demands.len());
        self.route(&routing, &mut load, &mut chosen)
    }

    /// Upper bound on every completion of `chosen` (module docs), `None` if some unrouted
    /// demand has no candidate left that fits.
    fn bound(&self, routing: &Routing, load: &[f64], chosen: &[usize]) -> Option<f64> {
        let mut bound = routing.fixed;
        for (k, &c) in chosen.iter().enumerate() {
            bound += bottleneck(&self.capacity, load, &routing.candidates[k][c]);
        }
        for k in chosen.len()..routing.demands.len() {
            let bw = self.problem.demands[routing.demands[k]].bw;
            let best = routing.candidates[k]
                .iter()
                .map(|p| bottleneck(&self.capacity, load, p) - bw)
                .fold(f64::NEG_INFINITY, f64::max);
            if best < 0.0 {
                return None;
            }
            bound += best;
        }
        Some(bound)
    }

    fn route(
        &mut self,
        routing: &Routing,
        load: &mut Vec<f64>,
        chosen: &mut Vec<usize>,
    ) -> Result<(), SolveError> {
        self.visit()?;
        let Some(bound) = self.bound(routing, load, chosen) else {
            return Ok(());
        };
        if !self.beats_incumbent(bound) {
            return Ok(());
        }
        let k = chosen.len();
        if k == routing.demands.len() {
            // All routed: the bound is the objective.
            let mut routes = vec![Some(Vec::new()); self.problem.demands.len()];
            for (k, &c) in chosen.iter().enumerate() {
                routes[routing.demands[k]] = Some(routing.candidates[k][c].clone());
            }
            self.best = Some((
                bound,
                Solution {
                    placement: self.placement.clone(),
                    routes,
                },
            ));
            return Ok(());
        }
        let bw = self.problem.demands[routing.demands[k]].bw;
        for c in 0..routing.candidates[k].len() {
            let path = &routing.candidates[k][c];
            if path.iter().all(|&l| load[l] + bw <= self.capacity[l]) {
                add_load(load, path, bw);
                chosen.push(c);
                let result = self.route(routing, load, chosen);
                chosen.pop();
                add_load(load, &routing.candidates[k][c], -bw);
                result?;
            }
        }
        Ok(())
    }
}
