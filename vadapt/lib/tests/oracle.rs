//! The exact solver against brute force, and the heuristics against the exact solver.

use proptest::prelude::*;
use vadapt::exact::DEFAULT_MAX_NODES;
use vadapt::{
    anneal, evaluate, exact, generate, greedy, residual_aware, GenConfig, MoveBudget, Pattern, Problem,
    Solution,
};

/// The best feasible objective over every placement and every choice of simple paths,
/// with no pruning at all: the definition the exact solver must meet.
fn brute_force(problem: &Problem) -> Option<f64> {
    let (hosts, vms) = (problem.hosts.len(), problem.vms.len());
    let mut best: Option<f64> = None;
    for code in 0..hosts.pow(vms as u32) {
        let placement: Vec<usize> = (0..vms).map(|v| code / hosts.pow(v as u32) % hosts).collect();
        let options: Vec<Vec<Vec<usize>>> = problem
            .demands
            .iter()
            .map(|d| {
                problem
                    .graph
                    .simple_paths(placement[d.src], placement[d.dst], &mut { u64::MAX })
                    .expect("unlimited")
            })
            .collect();
        if options.iter().any(Vec::is_empty) {
            continue;
        }
        let combos: usize = options.iter().map(Vec::len).product();
        for mut pick in 0..combos {
            let routes = options
                .iter()
                .map(|paths| {
                    let path = paths[pick % paths.len()].clone();
                    pick /= paths.len();
                    Some(path)
                })
                .collect();
            let e = evaluate(
                problem,
                &Solution {
                    placement: placement.clone(),
                    routes,
                },
            );
            if e.feasible && best.is_none_or(|b| e.objective > b) {
                best = Some(e.objective);
            }
        }
    }
    best
}

fn tiny(seed: u64, hosts: usize, vms: usize, pattern: Pattern) -> Problem {
    let config = GenConfig {
        hosts,
        vms,
        pattern,
        demand_bw: (20.0, 200.0),
        link_bw: (20.0, 400.0),
        latency_bound_fraction: 0.3,
        capacity_slack: 1.5,
        ..GenConfig::default()
    };
    let mut instance = generate(&config, seed);
    // Some instances reward co-location and charge for moving, to exercise both terms.
    if seed % 3 == 0 {
        instance.local_bw = 150.0;
        instance.vms.iter_mut().for_each(|vm| vm.migration_cost = 10.0);
    }
    Problem::new(&instance).expect("valid")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn exact_matches_brute_force(
        seed in 0u64..10_000,
        hosts in 2usize..=3,
        vms in 2usize..=4,
        p in 0usize..5,
    ) {
        let problem = tiny(seed, hosts, vms, Pattern::ALL[p]);
        let brute = brute_force(&problem);
        let found = exact(&problem, DEFAULT_MAX_NODES).expect("small enough");
        match (brute, found) {
            (None, None) => {}
            (Some(best), Some(solution)) => {
                let e = evaluate(&problem, &solution);
                prop_assert!(e.feasible);
                let gap = (e.objective - best).abs();
                prop_assert!(gap < 1e-6, "exact {} vs brute force {}", e.objective, best);
            }
            (brute, found) => prop_assert!(false, "brute force {:?}, exact {:?}", brute, found),
        }
    }

    #[test]
    fn heuristics_never_beat_the_optimum(
        seed in 0u64..10_000,
        hosts in 3usize..=4,
        vms in 3usize..=6,
        p in 0usize..5,
    ) {
        let problem = tiny(seed, hosts, vms, Pattern::ALL[p]);
        let optimum = exact(&problem, DEFAULT_MAX_NODES)
            .expect("small enough")
            .map(|s| evaluate(&problem, &s).objective);
        let greedy_e = evaluate(&problem, &greedy(&problem));
        let annealed = evaluate(&problem, &anneal(&problem, seed, &mut MoveBudget(500)));
        for e in [&greedy_e, &evaluate(&problem, &residual_aware(&problem)), &annealed] {
            if e.feasible {
                let optimum = optimum.expect("a feasible heuristic plan means a feasible optimum");
                prop_assert!(e.objective <= optimum + 1e-6);
            }
        }
        // Annealing starts from greedy and keeps the best plan it sees.
        prop_assert!(!greedy_e.better_than(&annealed));
    }
}

#[test]
fn anneal_is_reproducible_and_respects_pins() {
    let config = GenConfig {
        hosts: 8,
        vms: 16,
        pinned: 4,
        ..GenConfig::default()
    };
    let problem = Problem::new(&generate(&config, 5)).expect("valid");
    let a = anneal(&problem, 9, &mut MoveBudget(2000));
    assert_eq!(a, anneal(&problem, 9, &mut MoveBudget(2000)));
    for (vm, &host) in problem.vms.iter().zip(&a.placement) {
        if let Some(pin) = vm.pin {
            assert_eq!(host, pin, "{} moved off its pin", vm.name);
        }
    }
}

#[test]
fn anneal_with_no_budget_returns_its_starting_plan() {
    let problem = tiny(4, 4, 6, Pattern::Ring);
    let start = anneal(&problem, 1, &mut MoveBudget(0));
    let g = greedy(&problem);
    let r = residual_aware(&problem);
    assert!(start == g || start == r);
}

#[test]
fn residual_routing_spreads_load_that_greedy_stacks() {
    // Two demands from a to b; the direct link fits one, the detour via c fits the other.
    let problem = Problem::from_json(
        r#"{
        "hosts": [{"name":"a","compute":1,"size":1},{"name":"b","compute":1,"size":1},{"name":"c","compute":0,"size":0}],
        "links": [{"from":"a","to":"b","bw":100,"lat":1},{"from":"a","to":"c","bw":80,"lat":1},
                  {"from":"c","to":"b","bw":80,"lat":1}],
        "vms": [{"name":"x","compute":1,"size":1,"host":"a"},{"name":"y","compute":1,"size":1,"host":"b"},
                {"name":"u","compute":0,"size":0,"host":"a"},{"name":"v","compute":0,"size":0,"host":"b"}],
        "demands": [{"src":"x","dst":"y","bw":60},{"src":"u","dst":"v","bw":50}],
        "pinned": [{"vm":"x","host":"a"},{"vm":"y","host":"b"},{"vm":"u","host":"a"},{"vm":"v","host":"b"}]
    }"#,
    )
    .expect("valid");
    let stacked = evaluate(&problem, &greedy(&problem));
    assert!(!stacked.feasible, "both demands on a->b overload it");
    let spread = evaluate(&problem, &residual_aware(&problem));
    assert!(spread.feasible, "{:?}", spread.violations);
    // x->y keeps a->b (40 left), u->v detours via c (30 left).
    assert_eq!(spread.objective, 40.0 + 30.0);
}

#[test]
fn exact_gives_up_cleanly_on_large_instances() {
    let config = GenConfig {
        hosts: 16,
        vms: 24,
        link_density: 1.0,
        ..GenConfig::default()
    };
    let problem = Problem::new(&generate(&config, 1)).expect("valid");
    assert_eq!(
        exact(&problem, 100_000),
        Err(vadapt::SolveError::SearchLimit { nodes: 100_000 })
    );
}

/// The lab the adaptor is evaluated on: the proxy and two hosts behind slow uplinks, two
/// fast hosts, four VMs talking all to all, sharing a host worth far more than any link.
/// The best plan pairs the VMs on the fast hosts; a plan that pairs them on a slow and a
/// fast host is a deep local optimum (moving one VM of a pair breaks the pair first).
fn paired_lab() -> Problem {
    let hosts = ["h0", "h1", "h2", "h3", "h4"];
    let fast = |h: &str| h == "h3" || h == "h4";
    let mut links = Vec::new();
    for a in hosts {
        for b in hosts.iter().filter(|b| **b != a) {
            let bw = if fast(a) && fast(b) { 960.0 } else { 19.0 };
            links.push(serde_json::json!({"from": a, "to": b, "bw": bw, "lat": 0.1}));
        }
    }
    let vms: Vec<_> = (0..4)
        .map(|j| serde_json::json!({"name": format!("vm{j}"), "compute": 1.0, "size": 1.0, "host": format!("h{}", j + 1), "migration_cost": 10.0}))
        .collect();
    let mut demands = Vec::new();
    for a in 0..4 {
        for b in (0..4).filter(|b| *b != a) {
            demands.push(serde_json::json!({"src": format!("vm{a}"), "dst": format!("vm{b}"), "bw": 1.5}));
        }
    }
    let instance = serde_json::json!({
        "hosts": hosts.iter().map(|h| serde_json::json!({"name": h, "compute": 2.0, "size": 8.0})).collect::<Vec<_>>(),
        "links": links,
        "vms": vms,
        "demands": demands,
        "local_bw": 10000.0,
    });
    Problem::from_json(&instance.to_string()).unwrap()
}

#[test]
fn annealing_moves_co_located_groups_out_of_local_optima() {
    let problem = paired_lab();
    let best = exact(&problem, DEFAULT_MAX_NODES).unwrap().unwrap();
    let best = evaluate(&problem, &best).objective;
    let mut misses = Vec::new();
    for seed in 1..=40 {
        let found = anneal(&problem, seed, &mut MoveBudget(3000));
        let e = evaluate(&problem, &found);
        assert!(e.feasible, "seed {seed}: {e:?}");
        if e.objective < 0.999 * best {
            misses.push((seed, e.objective, found.placement));
        }
    }
    // Deterministic (seeded move budgets): 3 of 40 seeds end on a plateau where both pairs
    // sit on slow hosts and no single move gains; before host exchanges, the final round
    // from the best plan and polishing, 25 of 40 ended in such basins.
    assert!(
        misses.len() <= 3,
        "{} of 40 seeds miss the optimum {best}: {misses:?}",
        misses.len()
    );
}
