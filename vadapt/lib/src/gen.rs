//! Random instances for tests and benchmarks, reproducible from a seed.
//!
//! Hosts get heterogeneous links: a bidirectional ring keeps the graph connected, every
//! other ordered pair is a possible link with probability `link_density`; bandwidth is
//! log-uniform in `link_bw` (a few fast links, many slow ones, as across sites), latency
//! uniform in `link_lat`. Demands follow one of the Patterns benchmark's topologies.

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::model::{DemandSpec, HostLinkSpec, HostSpec, Instance, PinSpec, VmSpec};

/// The application's communication topology (as the Patterns benchmark generates it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Every VM to every other VM.
    AllToAll,
    /// Each VM to its two ring neighbours.
    Ring,
    /// A 2-D mesh: each VM to its grid neighbours (grid width ⌈√n⌉).
    Mesh,
    /// A binary tree: each VM to its parent and children.
    Tree,
    /// Each VM to two random others.
    Random,
}

impl Pattern {
    /// Every pattern, for sweeps.
    pub const ALL: [Pattern; 5] = [
        Pattern::AllToAll,
        Pattern::Ring,
        Pattern::Mesh,
        Pattern::Tree,
        Pattern::Random,
    ];
}

/// A pattern name that [`Pattern::from_str`] does not know.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown pattern {0:?} (expected all-to-all, ring, mesh, tree or random)")]
pub struct UnknownPattern(pub String);

impl FromStr for Pattern {
    type Err = UnknownPattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all-to-all" => Ok(Pattern::AllToAll),
            "ring" => Ok(Pattern::Ring),
            "mesh" => Ok(Pattern::Mesh),
            "tree" => Ok(Pattern::Tree),
            "random" => Ok(Pattern::Random),
            other => Err(UnknownPattern(other.to_owned())),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pattern::AllToAll => "all-to-all",
            Pattern::Ring => "ring",
            Pattern::Mesh => "mesh",
            Pattern::Tree => "tree",
            Pattern::Random => "random",
        })
    }
}

/// Parameters of a random instance.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Number of hosts.
    pub hosts: usize,
    /// Number of VMs.
    pub vms: usize,
    /// Demand topology.
    pub pattern: Pattern,
    /// Probability that a non-ring ordered host pair is a possible link.
    pub link_density: f64,
    /// Link bandwidth range, Mbit/s (log-uniform).
    pub link_bw: (f64, f64),
    /// Link latency range, ms.
    pub link_lat: (f64, f64),
    /// Demand bandwidth range, Mbit/s (uniform).
    pub demand_bw: (f64, f64),
    /// Fraction of demands that get a latency bound (uniform in 2–4 × the mean link latency).
    pub latency_bound_fraction: f64,
    /// Number of pinned VMs.
    pub pinned: usize,
    /// Total host compute (and size) over total VM compute (and size).
    pub capacity_slack: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            hosts: 4,
            vms: 6,
            pattern: Pattern::Random,
            link_density: 0.5,
            link_bw: (10.0, 1000.0),
            link_lat: (1.0, 20.0),
            demand_bw: (5.0, 50.0),
            latency_bound_fraction: 0.2,
            pinned: 1,
            capacity_slack: 2.0,
        }
    }
}

/// The demand pairs of a pattern over `n` VMs (both directions where the pattern has them).
fn pattern_pairs(pattern: Pattern, n: usize, rng: &mut ChaCha8Rng) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    let both = |a: usize, b: usize, pairs: &mut Vec<(usize, usize)>| {
        if a != b {
            pairs.push((a, b));
            pairs.push((b, a));
        }
    };
    match pattern {
        Pattern::AllToAll => {
            for a in 0..n {
                for b in a + 1..n {
                    both(a, b, &mut pairs);
                }
            }
        }
        Pattern::Ring if n > 2 => (0..n).for_each(|a| both(a, (a + 1) % n, &mut pairs)),
        Pattern::Ring => (1..n).for_each(|a| both(0, a, &mut pairs)),
        Pattern::Mesh => {
            let width = (n as f64).sqrt().ceil() as usize;
            for a in 0..n {
                if (a + 1) % width != 0 && a + 1 < n {
                    both(a, a + 1, &mut pairs);
                }
                if a + width < n {
                    both(a, a + width, &mut pairs);
                }
            }
        }
        Pattern::Tree => (1..n).for_each(|a| both((a - 1) / 2, a, &mut pairs)),
        Pattern::Random => {
            for a in 0..n {
                for _ in 0..2 {
                    let b = rng.gen_range(0..n);
                    if a != b {
                        pairs.push((a, b));
                    }
                }
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Generates an instance from `config` and `seed`.
pub fn generate(config: &GenConfig, seed: u64) -> Instance {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = config.hosts.max(1);
    let host_name = |h: usize| format!("h{h}");
    let log_uniform = |rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)| {
        let (lo, hi) = (lo.max(1e-3), hi.max(lo.max(1e-3)));
        (lo.ln() + rng.gen::<f64>() * (hi.ln() - lo.ln())).exp().round()
    };
    let uniform =
        |rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)| (lo + rng.gen::<f64>() * (hi - lo).max(0.0)).round();
    let mut links = Vec::new();
    for from in 0..n {
        for to in 0..n {
            let ring = to == (from + 1) % n || from == (to + 1) % n;
            if from != to && (ring || rng.gen_bool(config.link_density.clamp(0.0, 1.0))) {
                links.push(HostLinkSpec {
                    from: host_name(from),
                    to: host_name(to),
                    bw: log_uniform(&mut rng, config.link_bw),
                    lat: uniform(&mut rng, config.link_lat),
                });
            }
        }
    }
    let vms: Vec<VmSpec> = (0..config.vms)
        .map(|v| VmSpec {
            name: format!("vm{v}"),
            compute: uniform(&mut rng, (1.0, 4.0)),
            size: uniform(&mut rng, (1.0, 8.0)),
            host: host_name(rng.gen_range(0..n)),
            migration_cost: 0.0,
        })
        .collect();
    // Host capacities: random shares of `capacity_slack` times the VMs' totals, but never
    // below the largest VM so every VM fits somewhere.
    let shares: Vec<f64> = (0..n).map(|_| rng.gen_range(0.5..1.5)).collect();
    let share_sum: f64 = shares.iter().sum();
    let total = |f: fn(&VmSpec) -> f64| vms.iter().map(f).sum::<f64>() * config.capacity_slack;
    let largest = |f: fn(&VmSpec) -> f64| vms.iter().map(f).fold(0.0, f64::max);
    let (compute, size) = (total(|v| v.compute), total(|v| v.size));
    let hosts = shares
        .iter()
        .enumerate()
        .map(|(h, share)| HostSpec {
            name: host_name(h),
            compute: (compute * share / share_sum).round().max(largest(|v| v.compute)),
            size: (size * share / share_sum).round().max(largest(|v| v.size)),
        })
        .collect();
    let mean_lat = (config.link_lat.0 + config.link_lat.1) / 2.0;
    let demands = pattern_pairs(config.pattern, config.vms, &mut rng)
        .into_iter()
        .map(|(a, b)| DemandSpec {
            src: format!("vm{a}"),
            dst: format!("vm{b}"),
            bw: uniform(&mut rng, config.demand_bw),
            lat: rng
                .gen_bool(config.latency_bound_fraction.clamp(0.0, 1.0))
                .then(|| uniform(&mut rng, (2.0 * mean_lat, 4.0 * mean_lat))),
        })
        .collect();
    let mut order: Vec<usize> = (0..config.vms).collect();
    order.shuffle(&mut rng);
    let pinned = order
        .into_iter()
        .take(config.pinned)
        .map(|v| PinSpec {
            vm: format!("vm{v}"),
            host: vms[v].host.clone(),
        })
        .collect();
    Instance {
        hosts,
        links,
        vms,
        demands,
        pinned,
        local_bw: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Problem;

    #[test]
    fn generated_instances_are_valid_and_reproducible() {
        for pattern in [
            Pattern::AllToAll,
            Pattern::Ring,
            Pattern::Mesh,
            Pattern::Tree,
            Pattern::Random,
        ] {
            let config = GenConfig {
                hosts: 5,
                vms: 7,
                pattern,
                ..GenConfig::default()
            };
            let a = generate(&config, 42);
            assert_eq!(a, generate(&config, 42));
            Problem::new(&a).expect("generated instance validates");
            assert_eq!(pattern.to_string().parse::<Pattern>(), Ok(pattern));
        }
    }

    #[test]
    fn pattern_shapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(pattern_pairs(Pattern::AllToAll, 4, &mut rng).len(), 12);
        assert_eq!(pattern_pairs(Pattern::Ring, 5, &mut rng).len(), 10);
        // 3x3 mesh: 12 undirected edges.
        assert_eq!(pattern_pairs(Pattern::Mesh, 9, &mut rng).len(), 24);
        assert_eq!(pattern_pairs(Pattern::Tree, 7, &mut rng).len(), 12);
    }
}
