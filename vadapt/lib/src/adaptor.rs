//! The adaptor's decision (seeds/004 §9): whether a plan found for what the daemons
//! measured and VTTIF inferred is worth applying, and whether an observation differs
//! enough from the last one to decide again.
//!
//! # Decision
//! The configuration in force is scored as the problem restricted to the overlay links
//! that exist now, with every VM pinned where it runs and demands routed residual-aware
//! over those links. The candidate plan is solved on the problem the [`Policy`] allows
//! (all possible links unless `topology` is off; VMs free to move unless `migrate` is
//! off). The plan is applied only when it is better by more than the hysteresis margin:
//! `after − before > max(min_gain, margin × |before|)`, where `after` already has the
//! migration cost subtracted ([`crate::eval`]). A feasible plan always beats an
//! infeasible configuration.
//!
//! # Re-deciding
//! [`significant_change`] says whether a new observation differs from the one the last
//! decision was made on: a demand appears or goes away, or a demand's or link's bandwidth
//! moves by more than a relative threshold. Under steady traffic it stays false, so the
//! adaptor does not revisit (and cannot oscillate).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::anneal::residual_routes;
use crate::error::ModelError;
use crate::eval::{evaluate, Evaluation};
use crate::model::{Instance, PinSpec, Problem};
use crate::plan::{Plan, Solution};

/// What the adaptor may change and how much better a plan must be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Relative hysteresis margin: the gain must exceed this fraction of the current
    /// objective.
    pub margin: f64,
    /// Absolute margin, Mbit/s: the gain must exceed this too.
    pub min_gain: f64,
    /// VMs may move.
    pub migrate: bool,
    /// Overlay links beyond the current ones may be used.
    pub topology: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            margin: 0.1,
            min_gain: 1.0,
            migrate: true,
            topology: true,
        }
    }
}

/// A directed host pair `(from, to)`.
pub type HostPair = (String, String);

/// The adaptor's verdict on a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The plan found (names, links, reservations, migrations).
    pub plan: Plan,
    /// The configuration in force, scored.
    pub before: Evaluation,
    /// The plan, scored (migration cost subtracted).
    pub after: Evaluation,
    /// The margin the gain had to exceed.
    pub margin: f64,
    /// Whether to apply the plan.
    pub apply: bool,
}

impl Decision {
    /// `after − before`.
    pub fn gain(&self) -> f64 {
        self.after.objective - self.before.objective
    }
}

/// `instance` with only the links in `links` (both directions must be listed).
fn with_links(instance: &Instance, links: &BTreeSet<HostPair>) -> Instance {
    let mut out = instance.clone();
    out.links
        .retain(|l| links.contains(&(l.from.clone(), l.to.clone())));
    out
}

/// `instance` with every VM pinned to the host it runs on (earlier pins give way: the VM
/// runs where it runs).
fn pinned_in_place(instance: &Instance) -> Instance {
    let mut out = instance.clone();
    out.pinned = instance
        .vms
        .iter()
        .map(|v| PinSpec {
            vm: v.name.clone(),
            host: v.host.clone(),
        })
        .collect();
    out
}

/// The problem the policy lets the solver work on.
pub fn allowed(instance: &Instance, current_links: &BTreeSet<HostPair>, policy: &Policy) -> Instance {
    let mut out = if policy.topology {
        instance.clone()
    } else {
        with_links(instance, current_links)
    };
    if !policy.migrate {
        out = pinned_in_place(&out);
    }
    out
}

/// The configuration in force as a problem and a solution: current links, VMs where they
/// are, demands routed residual-aware over those links.
pub fn in_force(
    instance: &Instance,
    current_links: &BTreeSet<HostPair>,
) -> Result<(Problem, Solution), ModelError> {
    let problem = Problem::new(&pinned_in_place(&with_links(instance, current_links)))?;
    let placement: Vec<usize> = problem.vms.iter().map(|v| v.current).collect();
    let routes = residual_routes(&problem, &placement);
    Ok((problem, Solution { placement, routes }))
}

/// Scores the configuration in force, solves the allowed problem with `solve`, and
/// decides (module docs).
pub fn decide(
    instance: &Instance,
    current_links: &BTreeSet<HostPair>,
    policy: &Policy,
    solve: &mut dyn FnMut(&Problem) -> Solution,
) -> Result<Decision, ModelError> {
    let (now_problem, now_solution) = in_force(instance, current_links)?;
    let before = evaluate(&now_problem, &now_solution);
    let problem = Problem::new(&allowed(instance, current_links, policy))?;
    let solution = solve(&problem);
    let after = evaluate(&problem, &solution);
    let margin = policy.min_gain.max(policy.margin * before.objective.abs());
    let apply = match (after.feasible, before.feasible) {
        (true, false) => true,
        (false, _) => false,
        (true, true) => after.objective - before.objective > margin,
    };
    Ok(Decision {
        plan: solution.to_plan(&problem),
        before,
        after,
        margin,
        apply,
    })
}

/// Whether `now` differs from `then` enough to decide again (module docs): the set of
/// demands or links changed, or a demand's or link's bandwidth moved by more than
/// `threshold` (relative).
pub fn significant_change(then: &Instance, now: &Instance, threshold: f64) -> bool {
    let moved = |a: f64, b: f64| (a - b).abs() > threshold * a.abs().max(b.abs());
    let demands = |i: &Instance| -> BTreeMap<(String, String), f64> {
        i.demands
            .iter()
            .map(|d| ((d.src.clone(), d.dst.clone()), d.bw))
            .collect()
    };
    let links = |i: &Instance| -> BTreeMap<(String, String), f64> {
        i.links
            .iter()
            .map(|l| ((l.from.clone(), l.to.clone()), l.bw))
            .collect()
    };
    let differ = |a: BTreeMap<(String, String), f64>, b: BTreeMap<(String, String), f64>| {
        a.len() != b.len() || a.iter().any(|(k, &x)| b.get(k).is_none_or(|&y| moved(x, y)))
    };
    let hosts = |i: &Instance| -> BTreeMap<String, String> {
        i.vms.iter().map(|v| (v.name.clone(), v.host.clone())).collect()
    };
    differ(demands(then), demands(now)) || differ(links(then), links(now)) || hosts(then) != hosts(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anneal::{anneal, MoveBudget};
    use crate::model::{DemandSpec, HostLinkSpec, HostSpec, VmSpec};

    /// A proxy p with thin links to every host, fast hosts a and b with a fat possible
    /// link between them, and two VMs talking, one on each fast host.
    fn instance() -> Instance {
        let host = |name: &str| HostSpec {
            name: name.into(),
            compute: 2.0,
            size: 2.0,
        };
        let link = |from: &str, to: &str, bw: f64| HostLinkSpec {
            from: from.into(),
            to: to.into(),
            bw,
            lat: 1.0,
        };
        let vm = |name: &str, host: &str| VmSpec {
            name: name.into(),
            compute: 1.0,
            size: 1.0,
            host: host.into(),
            migration_cost: 0.0,
        };
        Instance {
            hosts: vec![host("p"), host("a"), host("b")],
            links: vec![
                link("p", "a", 20.0),
                link("a", "p", 20.0),
                link("p", "b", 20.0),
                link("b", "p", 20.0),
                link("a", "b", 200.0),
                link("b", "a", 200.0),
            ],
            vms: vec![vm("v0", "a"), vm("v1", "b")],
            demands: vec![
                DemandSpec {
                    src: "v0".into(),
                    dst: "v1".into(),
                    bw: 10.0,
                    lat: None,
                },
                DemandSpec {
                    src: "v1".into(),
                    dst: "v0".into(),
                    bw: 10.0,
                    lat: None,
                },
            ],
            pinned: vec![],
            local_bw: 0.0,
        }
    }

    fn star() -> BTreeSet<HostPair> {
        [("p", "a"), ("a", "p"), ("p", "b"), ("b", "p")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn solve(p: &Problem) -> Solution {
        anneal(p, 1, &mut MoveBudget(2000))
    }

    #[test]
    fn a_fast_path_beats_the_star_and_is_applied() {
        let d = decide(&instance(), &star(), &Policy::default(), &mut solve).unwrap();
        // Star: each direction's two thin links carry one 10 Mbit/s demand, residual 10;
        // the direct link leaves 190 each way.
        assert!(d.before.feasible);
        assert_eq!(d.before.objective, 2.0 * 10.0);
        assert_eq!(d.after.objective, 2.0 * 190.0);
        assert!(d.apply);
        assert!(d.plan.overlay_links.iter().any(|l| l.from == "a" && l.to == "b"));
        assert!(d.plan.migrations.is_empty());
    }

    #[test]
    fn without_topology_changes_only_the_current_links_are_used() {
        let policy = Policy {
            topology: false,
            migrate: false,
            ..Policy::default()
        };
        let d = decide(&instance(), &star(), &policy, &mut solve).unwrap();
        assert!(!d.apply, "the same configuration cannot gain: {d:?}");
        assert!(d.plan.overlay_links.iter().all(|l| l.from == "p" || l.to == "p"));
    }

    #[test]
    fn migration_cost_and_margin_keep_a_marginal_plan_out() {
        // Co-locating is worth what the two 10 Mbit/s demands leave of local_bw = 1000 each,
        // against 190 over the direct link now: 1960 − 1700 (moving one VM) = 260 < 380 is
        // no gain.
        let mut i = instance();
        i.local_bw = 1000.0;
        for v in &mut i.vms {
            v.migration_cost = 1700.0;
        }
        let mut all = star();
        all.insert(("a".into(), "b".into()));
        all.insert(("b".into(), "a".into()));
        let d = decide(&i, &all, &Policy::default(), &mut solve).unwrap();
        assert!(!d.apply, "moving costs more than it gains: {d:?}");
        i.vms[0].migration_cost = 0.0;
        let d = decide(&i, &all, &Policy::default(), &mut solve).unwrap();
        assert!(d.apply);
        assert_eq!(d.plan.migrations.len(), 1);
        assert!(d.gain() > d.margin);
    }

    #[test]
    fn a_faster_application_does_not_tip_a_direct_link_into_a_migration() {
        // The direct link and the hosts' local forwarding are equally fast. Once the
        // application runs at full speed over the direct link, co-locating would carry the
        // same traffic inside one host: its residual shrinks with the traffic as the
        // link's does, so the adaptor keeps what it has (vadapt e2e: a 1.5 Gbit/s
        // application made a credited-constant local_bw migrate a VM it had just linked).
        let mut i = instance();
        i.local_bw = 200.0;
        let mut all = star();
        all.insert(("a".into(), "b".into()));
        all.insert(("b".into(), "a".into()));
        for speed in [10.0, 90.0, 150.0] {
            i.demands.iter_mut().for_each(|d| d.bw = speed);
            let d = decide(&i, &all, &Policy::default(), &mut solve).unwrap();
            assert!(!d.apply, "at {speed} Mbit/s: {d:?}");
            assert!(d.plan.migrations.is_empty(), "at {speed} Mbit/s: {d:?}");
        }
    }

    #[test]
    fn an_infeasible_configuration_gives_way_to_a_feasible_plan() {
        let mut i = instance();
        i.demands[0].bw = 30.0; // over the thin links' 20 Mbit/s
        let d = decide(&i, &star(), &Policy::default(), &mut solve).unwrap();
        assert!(!d.before.feasible && d.after.feasible && d.apply);
    }

    #[test]
    fn steady_observations_are_not_a_change() {
        let a = instance();
        let mut b = instance();
        b.demands[0].bw *= 1.1;
        b.links[4].bw *= 0.9;
        assert!(!significant_change(&a, &b, 0.25));
        b.demands[0].bw = 20.0;
        assert!(significant_change(&a, &b, 0.25));
        let mut c = instance();
        c.demands.pop();
        assert!(significant_change(&a, &c, 0.25));
        let mut d = instance();
        d.vms[0].host = "p".into();
        assert!(significant_change(&a, &d, 0.25));
        let mut e = instance();
        e.links.pop();
        assert!(significant_change(&a, &e, 0.25));
    }
}
