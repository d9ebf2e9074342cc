//! The evaluator: checks every GAPVEE constraint (seeds/004 §8.2) and computes the objective.
//!
//! # Objective
//!
//! With `load(e)` the sum of the bandwidth of the demands routed over link `e` and the
//! residual `rc(e) = bw(e) − load(e)`:
//!
//! ```text
//! objective = Σ_demands contribution(d) − Σ_{moved VMs} migration_cost(vm)
//! contribution(d) = max(0, min_{e ∈ path(d)} rc(e))   for a network path
//!                 = max(0, local_bw − local_load(h))   for a local pair on host h
//!                 = 0                                  for an unrouted or broken route
//! ```
//!
//! A negative residual is never a negative contribution: the overloaded link is a
//! [`Violation::Bandwidth`] and the plan is infeasible; its demands contribute 0.
//! `local_load(h)` is the bandwidth of the demands whose two VMs host `h` holds: its
//! in-memory forwarding is a link of capacity `local_bw` (a credit, not a measured
//! capacity, so exceeding it is no violation). Algorithms compare plans by feasibility
//! first, objective second.
//!
//! # Constraints
//! Per host, the compute and size of its VMs within its capacity; pinned VMs on their
//! host; per link, `load ≤ bw`; per demand, a path joining its VMs' hosts whose latency is
//! within the demand's bound.

use serde::{Deserialize, Serialize};

use crate::model::{HostId, Problem};
use crate::plan::Solution;
use crate::route::bottleneck;

/// One broken constraint, named as in the instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// The VMs on a host need more compute than it has.
    Compute {
        /// The host.
        host: String,
        /// Sum of its VMs' compute.
        used: f64,
        /// Its compute capacity.
        capacity: f64,
    },
    /// The VMs on a host need more space than it has.
    Size {
        /// The host.
        host: String,
        /// Sum of its VMs' size.
        used: f64,
        /// Its space capacity.
        capacity: f64,
    },
    /// A pinned VM is elsewhere.
    Pin {
        /// The VM.
        vm: String,
        /// Where it is pinned.
        host: String,
        /// Where the plan puts it.
        placed: String,
    },
    /// The demands routed over a link exceed its bandwidth.
    Bandwidth {
        /// Source host.
        from: String,
        /// Destination host.
        to: String,
        /// Sum of the routed demands.
        load: f64,
        /// Link bandwidth.
        capacity: f64,
    },
    /// A demand's path is slower than its bound.
    Latency {
        /// Source VM.
        src: String,
        /// Destination VM.
        dst: String,
        /// Path latency.
        latency: f64,
        /// The demand's bound.
        bound: f64,
    },
    /// A demand has no route.
    Unrouted {
        /// Source VM.
        src: String,
        /// Destination VM.
        dst: String,
    },
    /// A demand's route is not a contiguous path between its VMs' hosts.
    BrokenRoute {
        /// Source VM.
        src: String,
        /// Destination VM.
        dst: String,
    },
}

/// Relative size of an overrun: `(used − limit) / limit`, or the overrun itself when the
/// limit is below 1 (so a zero capacity still gives a finite, growing penalty).
fn overrun(used: f64, limit: f64) -> f64 {
    (used - limit) / limit.max(1.0)
}

impl Violation {
    /// How badly the constraint is broken, as a dimensionless amount: the relative overrun
    /// for capacities and latency, 1 for a pin or a missing route. Local search uses it to
    /// walk from an infeasible plan towards a feasible one.
    pub fn severity(&self) -> f64 {
        match *self {
            Violation::Compute { used, capacity, .. } | Violation::Size { used, capacity, .. } => {
                overrun(used, capacity)
            }
            Violation::Bandwidth { load, capacity, .. } => overrun(load, capacity),
            Violation::Latency { latency, bound, .. } => overrun(latency, bound),
            Violation::Pin { .. } | Violation::Unrouted { .. } | Violation::BrokenRoute { .. } => 1.0,
        }
    }
}

/// The result of checking a solution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The objective (module docs), migration cost already subtracted.
    pub objective: f64,
    /// The migration cost subtracted.
    pub migration_cost: f64,
    /// No violations.
    pub feasible: bool,
    /// Every broken constraint.
    pub violations: Vec<Violation>,
}

impl Evaluation {
    /// Total [`Violation::severity`], 0 for a feasible plan.
    pub fn severity(&self) -> f64 {
        self.violations.iter().map(Violation::severity).sum()
    }

    /// Whether `self` is a better plan than `other`: feasible beats infeasible, then the
    /// higher objective wins (for two infeasible plans, the lower severity).
    pub fn better_than(&self, other: &Evaluation) -> bool {
        match (self.feasible, other.feasible) {
            (true, false) => true,
            (false, true) => false,
            (true, true) => self.objective > other.objective,
            (false, false) => self.severity() < other.severity(),
        }
    }
}

/// Per-link load (sum of routed demand bandwidth) of a solution.
pub fn link_loads(problem: &Problem, solution: &Solution) -> Vec<f64> {
    let mut load = vec![0.0; problem.links.len()];
    for (demand, route) in problem.demands.iter().zip(&solution.routes) {
        for &l in route.iter().flatten() {
            load[l] += demand.bw;
        }
    }
    load
}

/// Checks every constraint of `solution` and computes its objective.
pub fn evaluate(problem: &Problem, solution: &Solution) -> Evaluation {
    evaluate_loaded(problem, solution, &link_loads(problem, solution))
}

/// [`evaluate`] with the link loads already known (local search maintains them).
pub(crate) fn evaluate_loaded(problem: &Problem, solution: &Solution, load: &[f64]) -> Evaluation {
    let host = |h: HostId| problem.hosts[h].name.clone();
    let vm = |v: usize| problem.vms[v].name.clone();
    let mut violations = Vec::new();
    let mut compute = vec![0.0; problem.hosts.len()];
    let mut size = vec![0.0; problem.hosts.len()];
    let mut migration_cost = 0.0;
    for (v, (spec, &h)) in problem.vms.iter().zip(&solution.placement).enumerate() {
        compute[h] += spec.compute;
        size[h] += spec.size;
        if spec.current != h {
            migration_cost += spec.migration_cost;
        }
        if let Some(pin) = spec.pin.filter(|&pin| pin != h) {
            violations.push(Violation::Pin {
                vm: vm(v),
                host: host(pin),
                placed: host(h),
            });
        }
    }
    for (h, spec) in problem.hosts.iter().enumerate() {
        if compute[h] > spec.compute {
            violations.push(Violation::Compute {
                host: host(h),
                used: compute[h],
                capacity: spec.compute,
            });
        }
        if size[h] > spec.size {
            violations.push(Violation::Size {
                host: host(h),
                used: size[h],
                capacity: spec.size,
            });
        }
    }
    for (link, &used) in problem.links.iter().zip(load) {
        if used > link.bw {
            violations.push(Violation::Bandwidth {
                from: host(link.from),
                to: host(link.to),
                load: used,
                capacity: link.bw,
            });
        }
    }
    let capacity = problem.capacities();
    let local = problem.local_residuals(&solution.placement);
    let mut sum = 0.0;
    for (demand, route) in problem.demands.iter().zip(&solution.routes) {
        let (src, dst) = (solution.placement[demand.src], solution.placement[demand.dst]);
        let Some(path) = route else {
            violations.push(Violation::Unrouted {
                src: vm(demand.src),
                dst: vm(demand.dst),
            });
            continue;
        };
        let mut at = src;
        let contiguous = path.iter().all(|&l| {
            let joined = problem.links[l].from == at;
            at = problem.links[l].to;
            joined
        });
        if !contiguous || at != dst {
            violations.push(Violation::BrokenRoute {
                src: vm(demand.src),
                dst: vm(demand.dst),
            });
            continue;
        }
        let latency = problem.graph.latency(path);
        if let Some(bound) = demand.lat.filter(|&bound| latency > bound) {
            violations.push(Violation::Latency {
                src: vm(demand.src),
                dst: vm(demand.dst),
                latency,
                bound,
            });
        }
        sum += if path.is_empty() {
            local[src]
        } else {
            bottleneck(&capacity, load, path).max(0.0)
        };
    }
    Evaluation {
        objective: sum - migration_cost,
        migration_cost,
        feasible: violations.is_empty(),
        violations,
    }
}
