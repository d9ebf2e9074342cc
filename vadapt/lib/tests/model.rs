//! Input validation errors and the evaluator's constraints and objective.

use vadapt::plan::{cpu_reservation, CPU_PERIOD_MS};
use vadapt::{evaluate, ModelError, Plan, Problem, Solution, Violation};

const BASE: &str = r#"{
  "hosts": [{"name":"a","compute":4,"size":4},{"name":"b","compute":4,"size":4},{"name":"c","compute":4,"size":4}],
  "links": [{"from":"a","to":"b","bw":100,"lat":5},{"from":"b","to":"c","bw":50,"lat":5},
            {"from":"a","to":"c","bw":30,"lat":20}],
  "vms": [{"name":"x","compute":2,"size":1,"host":"a","migration_cost":7},
          {"name":"y","compute":2,"size":1,"host":"b"},{"name":"z","compute":1,"size":1,"host":"c"}],
  "demands": [{"src":"x","dst":"y","bw":40},{"src":"x","dst":"z","bw":20,"lat":15}]
}"#;

fn base() -> Problem {
    Problem::from_json(BASE).expect("valid")
}

fn with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Problem, ModelError> {
    let mut value: serde_json::Value = serde_json::from_str(BASE).expect("json");
    edit(&mut value);
    Problem::from_json(&value.to_string())
}

#[test]
fn bad_instances_give_specific_errors() {
    assert!(matches!(Problem::from_json("{"), Err(ModelError::Json(_))));
    assert!(matches!(
        Problem::from_json(r#"{"hosts": 3, "vms": []}"#),
        Err(ModelError::Json(_))
    ));
    assert!(matches!(
        with(|v| v["links"][0]["to"] = "nowhere".into()),
        Err(ModelError::UnknownHost { name, .. }) if name == "nowhere"
    ));
    assert!(matches!(
        with(|v| v["hosts"][1]["compute"] = (-1.0).into()),
        Err(ModelError::BadNumber { field: "compute", value, .. }) if value == -1.0
    ));
    assert!(matches!(
        with(|v| v["links"][0]["bw"] = (-5).into()),
        Err(ModelError::BadNumber { field: "bw", .. })
    ));
    assert!(matches!(
        with(|v| v["demands"][0]["dst"] = "ghost".into()),
        Err(ModelError::UnknownVm { name, .. }) if name == "ghost"
    ));
    assert_eq!(
        with(|v| v["hosts"][1]["name"] = "a".into()).unwrap_err(),
        ModelError::DuplicateHost("a".into())
    );
    assert!(matches!(
        with(|v| v["links"][1]["from"] = "a".into()),
        Err(ModelError::DuplicateLink { .. })
    ));
    assert_eq!(
        with(|v| v["links"][0]["to"] = "a".into()).unwrap_err(),
        ModelError::SelfLink("a".into())
    );
    assert!(matches!(
        with(|v| v["demands"][1]["dst"] = "y".into()),
        Err(ModelError::DuplicateDemand { .. })
    ));
    assert_eq!(
        with(|v| v["pinned"] = serde_json::json!([{"vm":"x","host":"a"},{"vm":"x","host":"b"}])).unwrap_err(),
        ModelError::ConflictingPin("x".into())
    );
    assert!(matches!(
        with(|v| v["surprise"] = 1.into()),
        Err(ModelError::Json(_))
    ));
}

/// x on a, y on b, z on c; x->y over a->b, x->z over a->b->c.
fn two_hop() -> Solution {
    Solution {
        placement: vec![0, 1, 2],
        routes: vec![Some(vec![0]), Some(vec![0, 1])],
    }
}

#[test]
fn objective_is_the_sum_of_residual_bottlenecks() {
    let p = base();
    let e = evaluate(&p, &two_hop());
    // a->b carries 60 (residual 40), b->c carries 20 (residual 30).
    // x->y: min(40) = 40; x->z: min(40, 30) = 30. Latency of x->z is 10 <= 15.
    assert!(e.feasible, "{:?}", e.violations);
    assert_eq!(e.objective, 70.0);
    assert_eq!(e.migration_cost, 0.0);
}

#[test]
fn overload_is_a_violation_and_contributes_nothing() {
    let mut json: serde_json::Value = serde_json::from_str(BASE).expect("json");
    json["demands"][0]["bw"] = 90.into();
    let p = Problem::from_json(&json.to_string()).expect("valid");
    let e = evaluate(&p, &two_hop());
    // a->b carries 110 > 100: both demands cross it, both contribute 0.
    assert!(!e.feasible);
    assert_eq!(e.objective, 0.0);
    assert_eq!(
        e.violations,
        vec![Violation::Bandwidth {
            from: "a".into(),
            to: "b".into(),
            load: 110.0,
            capacity: 100.0
        }]
    );
}

#[test]
fn latency_compute_pin_and_route_violations() {
    let mut json: serde_json::Value = serde_json::from_str(BASE).expect("json");
    json["pinned"] = serde_json::json!([{"vm": "z", "host": "c"}]);
    let p = Problem::from_json(&json.to_string()).expect("valid");
    // x->z direct over a->c: latency 20 > 15.
    let slow = Solution {
        placement: vec![0, 1, 2],
        routes: vec![Some(vec![0]), Some(vec![2])],
    };
    assert_eq!(
        evaluate(&p, &slow).violations,
        vec![Violation::Latency {
            src: "x".into(),
            dst: "z".into(),
            latency: 20.0,
            bound: 15.0
        }]
    );
    // Everything on b: compute 5 > 4, z off its pin, both demands local, x moved (cost 7).
    let crowded = Solution {
        placement: vec![1, 1, 1],
        routes: vec![Some(vec![]), Some(vec![])],
    };
    let e = evaluate(&p, &crowded);
    assert_eq!(e.objective, -7.0);
    assert_eq!(e.migration_cost, 7.0);
    assert_eq!(
        e.violations,
        vec![
            Violation::Pin {
                vm: "z".into(),
                host: "c".into(),
                placed: "b".into()
            },
            Violation::Compute {
                host: "b".into(),
                used: 5.0,
                capacity: 4.0
            },
        ]
    );
    let broken = Solution {
        placement: vec![0, 1, 2],
        routes: vec![None, Some(vec![1])],
    };
    assert_eq!(
        evaluate(&p, &broken).violations,
        vec![
            Violation::Unrouted {
                src: "x".into(),
                dst: "y".into()
            },
            Violation::BrokenRoute {
                src: "x".into(),
                dst: "z".into()
            },
        ]
    );
}

#[test]
fn local_pairs_earn_what_their_host_leaves_of_local_bw() {
    let mut json: serde_json::Value = serde_json::from_str(BASE).expect("json");
    json["local_bw"] = 500.into();
    let p = Problem::from_json(&json.to_string()).expect("valid");
    let s = Solution {
        placement: vec![0, 0, 2],
        routes: vec![Some(vec![]), Some(vec![2])],
    };
    let e = evaluate(&p, &s);
    assert_eq!(
        e.violations,
        vec![Violation::Latency {
            src: "x".into(),
            dst: "z".into(),
            latency: 20.0,
            bound: 15.0
        }]
    );
    // x→y (40) is local on a: 500 − 40; x→z leaves 10 on its link.
    assert_eq!(e.objective, 460.0 + 10.0);
    // With z on a too, both local demands share a's local bandwidth.
    let s = Solution {
        placement: vec![0, 0, 0],
        routes: vec![Some(vec![]), Some(vec![])],
    };
    assert_eq!(evaluate(&p, &s).objective, 2.0 * (500.0 - 60.0));
}

#[test]
fn plan_carries_links_reservations_and_migrations() {
    let p = base();
    let plan = Solution {
        placement: vec![0, 1, 1],
        routes: vec![Some(vec![0]), Some(vec![0])],
    }
    .to_plan(&p);
    assert_eq!(plan.overlay_links.len(), 1);
    assert_eq!(plan.reservations.links[0].bw, 60.0);
    assert_eq!(plan.migrations.len(), 1);
    assert_eq!(plan.migrations[0].vm, "z");
    assert_eq!(plan.reservations.cpu[0].slice_ms, CPU_PERIOD_MS * 2.0 / 4.0);
    assert_eq!(plan.routes[1].path, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(cpu_reservation(8.0, 4.0).slice_ms, CPU_PERIOD_MS);
    assert_eq!(cpu_reservation(1.0, 0.0).slice_ms, 0.0);
}

#[test]
fn bad_plans_give_specific_errors() {
    let p = base();
    let good = two_hop().to_plan(&p);
    let mut plan = good.clone();
    plan.placement.insert("x".into(), "mars".into());
    assert!(matches!(plan.to_solution(&p), Err(ModelError::UnknownHost { name, .. }) if name == "mars"));
    let mut plan = good.clone();
    plan.placement.remove("y");
    assert_eq!(
        plan.to_solution(&p).unwrap_err(),
        ModelError::UnplacedVm("y".into())
    );
    let mut plan = good.clone();
    plan.routes[0].path = vec!["a".into(), "c".into(), "b".into()];
    assert!(matches!(plan.to_solution(&p), Err(ModelError::NoSuchLink { .. })));
    let mut plan = good.clone();
    plan.routes[0].path = vec!["a".into(), "c".into()];
    assert!(matches!(
        plan.to_solution(&p),
        Err(ModelError::RouteEndpoints { .. })
    ));
    let mut plan = good.clone();
    plan.routes[0].path.clear();
    assert!(matches!(plan.to_solution(&p), Err(ModelError::EmptyPath { .. })));
    let mut plan = good;
    plan.routes[0].src = "z".into();
    assert!(matches!(
        plan.to_solution(&p),
        Err(ModelError::UnknownRoute { .. })
    ));
    assert!(matches!(Plan::from_json("[]"), Err(ModelError::Json(_))));
}
