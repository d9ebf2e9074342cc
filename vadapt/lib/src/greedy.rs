//! The thesis's greedy heuristics (seeds/004 §9.3.2, appendix B), the baseline.
//!
//! Mapping: demands by decreasing bandwidth; possible links (host pairs) by decreasing
//! bandwidth. First pass: each demand whose two VMs are both unplaced goes onto the first
//! host pair in that list where neither host holds a VM yet. Second pass, the stragglers: in
//! demand order, each unplaced VM goes to the host with the widest link to (or from) the host
//! of its partner. Topology: each demand takes the direct link when one exists, otherwise
//! the widest path of the empty network; no demand sees the load of the others.
//!
//! Additions the thesis leaves implicit: pinned VMs are placed first and their hosts count
//! as taken; a host only receives a VM it has compute and size room for; latency bounds are
//! respected when choosing a path; a VM with no demand stays where it is.

use crate::model::{HostId, LinkId, Problem, VmId};
use crate::plan::Solution;

/// Runs the greedy mapping and topology heuristics.
pub fn greedy(problem: &Problem) -> Solution {
    let placement = greedy_placement(problem);
    let routes = direct_or_widest_routes(problem, &placement);
    Solution { placement, routes }
}

/// Free compute and size per host while a placement is being built.
struct Room<'a> {
    problem: &'a Problem,
    compute: Vec<f64>,
    size: Vec<f64>,
    occupied: Vec<bool>,
    placement: Vec<Option<HostId>>,
}

impl<'a> Room<'a> {
    fn new(problem: &'a Problem) -> Self {
        let mut room = Self {
            problem,
            compute: problem.hosts.iter().map(|h| h.compute).collect(),
            size: problem.hosts.iter().map(|h| h.size).collect(),
            occupied: vec![false; problem.hosts.len()],
            placement: vec![None; problem.vms.len()],
        };
        for (vm, spec) in problem.vms.iter().enumerate() {
            if let Some(host) = spec.pin {
                room.place(vm, host);
            }
        }
        room
    }

    fn fits(&self, vm: VmId, host: HostId) -> bool {
        let spec = &self.problem.vms[vm];
        spec.compute <= self.compute[host] && spec.size <= self.size[host]
    }

    fn place(&mut self, vm: VmId, host: HostId) {
        let spec = &self.problem.vms[vm];
        self.compute[host] -= spec.compute;
        self.size[host] -= spec.size;
        self.occupied[host] = true;
        self.placement[vm] = Some(host);
    }

    /// Where a VM goes when nothing better is known: its current host if it fits there,
    /// else the host with the most free compute (which may still be too small: the
    /// evaluator then reports the overload rather than the heuristic failing).
    fn place_by_default(&mut self, vm: VmId) -> HostId {
        let current = self.problem.vms[vm].current;
        let host = if self.fits(vm, current) {
            current
        } else {
            (0..self.problem.hosts.len())
                .max_by(|&a, &b| self.compute[a].total_cmp(&self.compute[b]).then(b.cmp(&a)))
                .unwrap_or(current)
        };
        self.place(vm, host);
        host
    }
}

/// Bandwidth between two hosts in one direction: the direct link's, `local_bw` on the same
/// host, 0 without a link.
fn pair_bandwidth(problem: &Problem, from: HostId, to: HostId) -> f64 {
    if from == to {
        return problem.local_bw;
    }
    problem
        .link_between(from, to)
        .map_or(0.0, |l| problem.links[l].bw)
}

fn greedy_placement(problem: &Problem) -> Vec<HostId> {
    let demands = problem.demands_by_weight();
    let mut links: Vec<_> = problem.links.iter().collect();
    links.sort_by(|a, b| b.bw.total_cmp(&a.bw));
    let mut room = Room::new(problem);
    // First pass: non-overlapping pairs onto free host pairs.
    for &d in &demands {
        let (src, dst) = (problem.demands[d].src, problem.demands[d].dst);
        if room.placement[src].is_some() || room.placement[dst].is_some() {
            continue;
        }
        let free_pair = links.iter().find(|l| {
            !room.occupied[l.from] && !room.occupied[l.to] && room.fits(src, l.from) && room.fits(dst, l.to)
        });
        if let Some(link) = free_pair {
            let (from, to) = (link.from, link.to);
            room.place(src, from);
            room.place(dst, to);
        }
    }
    // Second pass: stragglers next to their partner, over the widest link.
    for &d in &demands {
        let (src, dst) = (problem.demands[d].src, problem.demands[d].dst);
        for (vm, partner, vm_is_src) in [(src, dst, true), (dst, src, false)] {
            if room.placement[vm].is_some() {
                continue;
            }
            let Some(partner_host) = room.placement[partner] else {
                room.place_by_default(vm);
                continue;
            };
            let width = |h: HostId| {
                if vm_is_src {
                    pair_bandwidth(problem, h, partner_host)
                } else {
                    pair_bandwidth(problem, partner_host, h)
                }
            };
            let best = (0..problem.hosts.len())
                .filter(|&h| room.fits(vm, h))
                .max_by(|&a, &b| width(a).total_cmp(&width(b)).then(b.cmp(&a)));
            match best {
                Some(host) => room.place(vm, host),
                None => {
                    room.place_by_default(vm);
                }
            }
        }
    }
    (0..problem.vms.len())
        .map(|vm| room.placement[vm].unwrap_or_else(|| room.place_by_default(vm)))
        .collect()
}

/// The thesis's topology step: the direct link where one exists (and meets the latency
/// bound), else the widest path of the empty network.
fn direct_or_widest_routes(problem: &Problem, placement: &[HostId]) -> Vec<Option<Vec<LinkId>>> {
    let capacity = problem.capacities();
    problem
        .demands
        .iter()
        .map(|d| {
            let (src, dst) = (placement[d.src], placement[d.dst]);
            let direct = problem
                .link_between(src, dst)
                .filter(|&l| d.lat.is_none_or(|bound| problem.links[l].lat <= bound));
            match direct {
                Some(l) => Some(vec![l]),
                None => problem.graph.widest_path(&capacity, src, dst, d.lat),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::evaluate;

    fn problem(json: &str) -> Problem {
        Problem::from_json(json).expect("valid instance")
    }

    #[test]
    fn heaviest_pair_gets_the_widest_link_and_stragglers_join_their_partner() {
        let p = problem(
            r#"{
            "hosts": [{"name":"a","compute":4,"size":4},{"name":"b","compute":4,"size":4},
                      {"name":"c","compute":4,"size":4}],
            "links": [{"from":"a","to":"b","bw":10,"lat":1},{"from":"b","to":"c","bw":100,"lat":1},
                      {"from":"c","to":"a","bw":50,"lat":1},{"from":"c","to":"b","bw":5,"lat":1}],
            "vms": [{"name":"x","compute":1,"size":1,"host":"a"},{"name":"y","compute":1,"size":1,"host":"a"},
                    {"name":"z","compute":1,"size":1,"host":"a"}],
            "demands": [{"src":"x","dst":"y","bw":20},{"src":"y","dst":"z","bw":10}]
        }"#,
        );
        let s = greedy(&p);
        // x->y, the heaviest, lands on b->c (100); z follows y (on c) to the host with the
        // widest c->? link: a (50).
        assert_eq!(s.placement, vec![1, 2, 0]);
        let e = evaluate(&p, &s);
        assert!(e.feasible, "{:?}", e.violations);
        assert_eq!(e.objective, (100.0 - 20.0) + (50.0 - 10.0));
    }

    #[test]
    fn pinned_vms_stay_and_their_hosts_are_taken() {
        let p = problem(
            r#"{
            "hosts": [{"name":"a","compute":4,"size":4},{"name":"b","compute":4,"size":4},
                      {"name":"c","compute":4,"size":4}],
            "links": [{"from":"a","to":"b","bw":100,"lat":1},{"from":"b","to":"c","bw":10,"lat":1},
                      {"from":"c","to":"b","bw":10,"lat":1}],
            "vms": [{"name":"x","compute":1,"size":1,"host":"c"},{"name":"y","compute":1,"size":1,"host":"c"}],
            "demands": [{"src":"x","dst":"y","bw":5}],
            "pinned": [{"vm":"x","host":"b"}]
        }"#,
        );
        let s = greedy(&p);
        assert_eq!(s.placement[0], 1);
        assert_eq!(s.placement[1], 2);
        assert!(evaluate(&p, &s).feasible);
    }
}
