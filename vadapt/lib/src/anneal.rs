//! The better heuristic: residual-aware routing, then simulated annealing over placements
//! and routes, started from the greedy plan, under a caller-supplied budget.
//!
//! Residual-aware routing routes demands heaviest first, each on the widest latency-feasible
//! path of the network *as already loaded* by the heavier ones (the greedy topology step
//! ignores that load, so it stacks demands on the same wide link).
//!
//! Annealing state: a placement and a route per demand. Moves, each followed by re-routing
//! the demands it disturbs through the residual network:
//! - relocate one unpinned VM to another host, swap the hosts of two unpinned VMs, or
//!   exchange all unpinned VMs of two hosts (so a co-located group moves as one); the
//!   moved VMs' demands are re-routed heaviest first on widest paths;
//! - rip up one to three demands and re-route them in random order, each on a randomly
//!   chosen kind of path ([`PathChoice`]: widest, tightest fit, or via a random host). The
//!   order and the path kind decide who gets the wide links, which is what a fixed
//!   heaviest-first widest-path order gets wrong when capacity is tight.
//!
//! Score: objective − W · Σ severity of violations, W = (demands + 1) × widest link, so one
//! unit of violation outweighs any objective gain. Acceptance is Metropolis. The budget is
//! split into [`ROUNDS`] rounds; in each the temperature falls geometrically from the mean
//! link bandwidth to a thousandth of it. Round 0 starts from the better of the greedy plan
//! and its residual-aware re-routing, the last from the best plan so far, the others from
//! random capacity-respecting placements (or, when rounds are too short for that to pay
//! off, from the best plan so far).
//! While tuning on small instances (5000 moves), one round reached 92 % feasibility and a
//! 0.985 mean ratio to the optimum, 8 rounds 99 % and 0.995 (crate docs). The best plan
//! seen (feasible first, then objective) is returned. Randomness comes only from the seed,
//! so a [`MoveBudget`] run is reproducible.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::eval::{evaluate, evaluate_loaded, link_loads, Evaluation};
use crate::greedy::greedy;
use crate::model::{DemandId, HostId, LinkId, Problem, VmId};
use crate::plan::Solution;
use crate::route::{add_load, route_residual_aware, PathChoice};

/// How much of its budget a search has spent. The library never reads the clock: a caller
/// that wants a wall-clock deadline implements this with its own clock.
pub trait Budget {
    /// Fraction of the budget spent after `moves` moves: 0 at the start, ≥ 1 means stop.
    fn spent(&mut self, moves: u64) -> f64;
}

/// A budget of a fixed number of moves: reproducible for a given seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveBudget(pub u64);

impl Budget for MoveBudget {
    fn spent(&mut self, moves: u64) -> f64 {
        if self.0 == 0 {
            1.0
        } else {
            moves as f64 / self.0 as f64
        }
    }
}

/// The greedy placement with residual-aware routing.
pub fn residual_aware(problem: &Problem) -> Solution {
    let mut solution = greedy(problem);
    solution.routes = residual_routes(problem, &solution.placement);
    solution
}

/// Routes every demand of `placement`, heaviest first, through the residual network.
pub fn residual_routes(problem: &Problem, placement: &[HostId]) -> Vec<Option<Vec<LinkId>>> {
    let mut routes = vec![None; problem.demands.len()];
    let mut load = vec![0.0; problem.links.len()];
    route_residual_aware(
        problem,
        placement,
        &problem.demands_by_weight(),
        |_| PathChoice::Widest,
        &mut routes,
        &mut load,
    );
    routes
}

/// The better of the greedy plan and its residual-aware re-routing: the annealing start.
fn starting_point(problem: &Problem) -> (Solution, Evaluation) {
    let greedy = greedy(problem);
    let rerouted = Solution {
        placement: greedy.placement.clone(),
        routes: residual_routes(problem, &greedy.placement),
    };
    let (g, r) = (evaluate(problem, &greedy), evaluate(problem, &rerouted));
    if r.better_than(&g) {
        (rerouted, r)
    } else {
        (greedy, g)
    }
}

/// What a move changed, to undo it.
#[derive(Default)]
struct Undo {
    placements: Vec<(VmId, HostId)>,
    routes: Vec<(DemandId, Option<Vec<LinkId>>)>,
}

struct Search<'a> {
    problem: &'a Problem,
    rng: ChaCha8Rng,
    solution: Solution,
    load: Vec<f64>,
    /// Objective and violation severity of `solution`.
    current: (f64, f64),
    movable: Vec<VmId>,
}

/// A move's effect on routes: which demands to re-route, and whether to re-route them in
/// random order with random path choices (else heaviest first on widest paths).
struct Disturbed {
    demands: Vec<DemandId>,
    randomized: bool,
}

impl Search<'_> {
    fn relocate(&mut self, vm: VmId, host: HostId, undo: &mut Undo) {
        undo.placements.push((vm, self.solution.placement[vm]));
        self.solution.placement[vm] = host;
    }

    /// Picks and applies a random move's placement part; returns the demands to re-route.
    fn perturb(&mut self, undo: &mut Undo) -> Option<Disturbed> {
        let hosts = self.problem.hosts.len();
        let kind = self.rng.gen_range(0..10);
        if kind < 6 && hosts > 1 && !self.movable.is_empty() {
            let a = *self.movable.choose(&mut self.rng)?;
            if kind < 3 || self.movable.len() < 2 {
                let host = (self.solution.placement[a] + self.rng.gen_range(1..hosts)) % hosts;
                self.relocate(a, host, undo);
            } else if kind == 5 {
                // Exchange the movable VMs of two hosts: a group of co-located VMs moves
                // as one, where moving them one by one would first break what they gain
                // from sharing a host.
                let ha = self.solution.placement[a];
                let hb = (ha + self.rng.gen_range(1..hosts)) % hosts;
                for i in 0..self.movable.len() {
                    let vm = self.movable[i];
                    match self.solution.placement[vm] {
                        h if h == ha => self.relocate(vm, hb, undo),
                        h if h == hb => self.relocate(vm, ha, undo),
                        _ => {}
                    }
                }
            } else {
                let b = *self.movable.choose(&mut self.rng)?;
                let (ha, hb) = (self.solution.placement[a], self.solution.placement[b]);
                if ha == hb {
                    return None;
                }
                self.relocate(a, hb, undo);
                self.relocate(b, ha, undo);
            }
            let mut demands: Vec<DemandId> = undo
                .placements
                .iter()
                .flat_map(|&(vm, _)| self.problem.demands_of(vm).iter().copied())
                .collect();
            demands.sort_by(|&x, &y| {
                self.problem.demands[y]
                    .bw
                    .total_cmp(&self.problem.demands[x].bw)
                    .then(x.cmp(&y))
            });
            demands.dedup();
            Some(Disturbed {
                demands,
                randomized: false,
            })
        } else {
            let count = self.problem.demands.len();
            if count == 0 {
                return None;
            }
            let picks = self.rng.gen_range(1..=3.min(count));
            let mut demands: Vec<DemandId> = (0..picks).map(|_| self.rng.gen_range(0..count)).collect();
            demands.sort_unstable();
            demands.dedup();
            demands.shuffle(&mut self.rng);
            Some(Disturbed {
                demands,
                randomized: true,
            })
        }
    }

    /// One move at `temperature` with violations weighted by `penalty`: perturb, re-route,
    /// then accept or undo. Returns the new evaluation if the move was accepted.
    fn step(&mut self, temperature: f64, penalty: f64) -> Option<Evaluation> {
        let mut undo = Undo::default();
        let Some(disturbed) = self.perturb(&mut undo) else {
            self.restore(undo);
            return None;
        };
        for &d in &disturbed.demands {
            let old = self.solution.routes[d].take();
            if let Some(path) = &old {
                add_load(&mut self.load, path, -self.problem.demands[d].bw);
            }
            undo.routes.push((d, old));
        }
        let (rng, hosts) = (&mut self.rng, self.problem.hosts.len());
        let choice = |_| match (disturbed.randomized, rng.gen_range(0..3)) {
            (false, _) | (true, 0) => PathChoice::Widest,
            (true, 1) => PathChoice::Fit,
            (true, _) => PathChoice::Via(rng.gen_range(0..hosts)),
        };
        route_residual_aware(
            self.problem,
            &self.solution.placement,
            &disturbed.demands,
            choice,
            &mut self.solution.routes,
            &mut self.load,
        );
        let evaluation = evaluate_loaded(self.problem, &self.solution, &self.load);
        let (objective, severity) = (evaluation.objective, evaluation.severity());
        let delta = (objective - self.current.0) - penalty * (severity - self.current.1);
        if delta >= 0.0 || self.rng.gen::<f64>() < (delta / temperature).exp() {
            self.current = (objective, severity);
            Some(evaluation)
        } else {
            self.restore(undo);
            None
        }
    }

    fn restore(&mut self, undo: Undo) {
        for (d, old) in undo.routes {
            let bw = self.problem.demands[d].bw;
            if let Some(path) = &self.solution.routes[d] {
                add_load(&mut self.load, path, -bw);
            }
            if let Some(path) = &old {
                add_load(&mut self.load, path, bw);
            }
            self.solution.routes[d] = old;
        }
        for (vm, host) in undo.placements.into_iter().rev() {
            self.solution.placement[vm] = host;
        }
    }
}

/// Number of annealing rounds the budget is split into; each round runs the whole cooling
/// schedule. The first starts from the greedy plan, the others from random placements, so a
/// run that cools into a poor (often infeasible) basin gets fresh starts.
pub const ROUNDS: u64 = 8;

/// Moves per VM a round needs for a random restart to pay off. With fewer (large instances
/// under a short deadline) a random placement cannot even catch up with greedy, so the next
/// round reheats the best plan instead.
pub const RESTART_MOVES_PER_VM: u64 = 20;

impl Search<'_> {
    /// Restarts from `solution`.
    fn reset(&mut self, solution: Solution) {
        self.load = link_loads(self.problem, &solution);
        let evaluation = evaluate_loaded(self.problem, &solution, &self.load);
        self.current = (evaluation.objective, evaluation.severity());
        self.solution = solution;
    }

    /// A random placement (pins kept; each VM on a random host with room left, if any),
    /// routed residual-aware.
    fn random_start(&mut self) -> Solution {
        let problem = self.problem;
        let mut compute: Vec<f64> = problem.hosts.iter().map(|h| h.compute).collect();
        let mut size: Vec<f64> = problem.hosts.iter().map(|h| h.size).collect();
        let mut placement: Vec<HostId> = problem
            .vms
            .iter()
            .map(|vm| vm.pin.unwrap_or(vm.current))
            .collect();
        let mut order: Vec<VmId> = (0..problem.vms.len()).collect();
        order.sort_by_key(|&vm| problem.vms[vm].pin.is_none());
        for vm in order {
            let spec = &problem.vms[vm];
            if spec.pin.is_none() {
                let roomy: Vec<HostId> = (0..problem.hosts.len())
                    .filter(|&h| spec.compute <= compute[h] && spec.size <= size[h])
                    .collect();
                placement[vm] = match roomy.choose(&mut self.rng) {
                    Some(&h) => h,
                    None => self.rng.gen_range(0..problem.hosts.len()),
                };
            }
            compute[placement[vm]] -= spec.compute;
            size[placement[vm]] -= spec.size;
        }
        let routes = residual_routes(problem, &placement);
        Solution { placement, routes }
    }
}

/// Simulated annealing from the greedy plan (see the module docs), until `budget` is spent,
/// then [`polish`] (on small instances; it may outlast a deadline by its own few
/// milliseconds).
pub fn anneal(problem: &Problem, seed: u64, budget: &mut dyn Budget) -> Solution {
    let (start, start_evaluation) = starting_point(problem);
    let widest = problem.links.iter().map(|l| l.bw).fold(1.0, f64::max);
    let mean_bw = if problem.links.is_empty() {
        1.0
    } else {
        problem.links.iter().map(|l| l.bw).sum::<f64>() / problem.links.len() as f64
    };
    let (t_start, t_end) = (mean_bw.max(1e-3), 1e-3 * mean_bw.max(1e-3));
    let penalty = widest * (problem.demands.len() as f64 + 1.0);
    let mut search = Search {
        problem,
        rng: ChaCha8Rng::seed_from_u64(seed),
        load: Vec::new(),
        solution: start.clone(),
        current: (0.0, 0.0),
        movable: (0..problem.vms.len())
            .filter(|&vm| problem.vms[vm].pin.is_none())
            .collect(),
    };
    search.reset(start.clone());
    let (mut best, mut best_evaluation) = (start, start_evaluation);
    let (mut moves, mut round, mut round_start) = (0, 0, 0);
    loop {
        let spent = budget.spent(moves);
        if spent >= 1.0 {
            break;
        }
        // Progress within the current round drives its cooling schedule.
        let scaled = spent.max(0.0) * ROUNDS as f64;
        if scaled as u64 > round {
            round = scaled as u64;
            let enough_moves = moves - round_start >= RESTART_MOVES_PER_VM * problem.vms.len() as u64;
            round_start = moves;
            // The last round always refines the best plan found.
            let fresh = if enough_moves && round + 1 < ROUNDS {
                search.random_start()
            } else {
                best.clone()
            };
            search.reset(fresh);
        }
        let temperature = t_start * (t_end / t_start).powf(scaled.fract());
        if let Some(evaluation) = search.step(temperature, penalty) {
            if evaluation.better_than(&best_evaluation) {
                best = search.solution.clone();
                best_evaluation = evaluation;
            }
        }
        moves += 1;
    }
    // A budget spent before the first move asks for the starting plan as it is.
    if moves == 0 {
        best
    } else {
        polish(problem, best)
    }
}

/// Largest neighbourhood (relocations plus host exchanges) [`polish`] searches; beyond it
/// the annealing's own moves must do.
pub const POLISH_NEIGHBOURHOOD: usize = 2048;

/// Best-improvement local search from `solution` over every relocation of one unpinned VM
/// and every exchange of two hosts' unpinned VMs, each re-routed residual-aware, until
/// none improves. Annealing can end in a basin a single such move leaves (two co-located
/// VMs on a slow host while a fast one is free: moving either alone breaks the pair); on
/// small instances this makes the plan a local optimum for these moves. Skipped when the
/// neighbourhood exceeds [`POLISH_NEIGHBOURHOOD`].
pub fn polish(problem: &Problem, mut solution: Solution) -> Solution {
    let (hosts, vms) = (problem.hosts.len(), problem.vms.len());
    if vms * hosts + hosts * hosts / 2 > POLISH_NEIGHBOURHOOD {
        return solution;
    }
    let movable: Vec<VmId> = (0..vms).filter(|&vm| problem.vms[vm].pin.is_none()).collect();
    let mut current = evaluate(problem, &solution);
    // Each accepted move strictly improves; the cap only bounds a pathological instance.
    for _ in 0..vms * hosts {
        let mut candidates: Vec<Vec<HostId>> = Vec::new();
        for &vm in &movable {
            for h in (0..hosts).filter(|&h| h != solution.placement[vm]) {
                let mut p = solution.placement.clone();
                p[vm] = h;
                candidates.push(p);
            }
        }
        for a in 0..hosts {
            for b in a + 1..hosts {
                let mut p = solution.placement.clone();
                for &vm in &movable {
                    p[vm] = match p[vm] {
                        h if h == a => b,
                        h if h == b => a,
                        h => h,
                    };
                }
                candidates.push(p);
            }
        }
        let best = candidates
            .into_iter()
            .map(|placement| {
                let routes = residual_routes(problem, &placement);
                let s = Solution { placement, routes };
                let e = evaluate(problem, &s);
                (s, e)
            })
            .filter(|(_, e)| e.better_than(&current))
            .reduce(|x, y| if y.1.better_than(&x.1) { y } else { x });
        match best {
            Some((s, e)) => {
                solution = s;
                current = e;
            }
            None => break,
        }
    }
    solution
}
