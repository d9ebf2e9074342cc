//! Every example instance parses, validates and solves with every algorithm, and the plans
//! survive a JSON round trip through the evaluator.

use std::fs;
use std::path::PathBuf;

use vadapt::exact::DEFAULT_MAX_NODES;
use vadapt::{anneal, evaluate, exact, greedy, residual_aware, MoveBudget, Plan, Problem, Solution};

fn examples() -> Vec<(PathBuf, Problem)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out: Vec<_> = fs::read_dir(&dir)
        .expect("examples directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let text = fs::read_to_string(&path).expect("readable example");
            let problem = Problem::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, problem)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 4,
        "expected the example instances, found {}",
        out.len()
    );
    out
}

/// Plan -> JSON -> Plan -> Solution gives back the same solution and evaluation.
fn assert_round_trip(problem: &Problem, solution: &Solution) {
    let plan = solution.to_plan(problem);
    let text = serde_json::to_string(&plan).expect("plan encodes");
    let parsed = Plan::from_json(&text).expect("plan parses");
    assert_eq!(parsed, plan);
    let back = parsed.to_solution(problem).expect("plan resolves");
    assert_eq!(&back, solution);
    let evaluation = evaluate(problem, &back);
    assert_eq!(evaluation.objective, plan.objective);
    assert_eq!(evaluation.feasible, plan.feasible);
}

#[test]
fn every_example_solves_with_every_algorithm() {
    for (path, problem) in examples() {
        let optimum = exact(&problem, DEFAULT_MAX_NODES)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .unwrap_or_else(|| panic!("{}: examples are meant to be feasible", path.display()));
        let best = evaluate(&problem, &optimum);
        assert!(best.feasible, "{}", path.display());
        for solution in [
            greedy(&problem),
            residual_aware(&problem),
            anneal(&problem, 7, &mut MoveBudget(3000)),
            optimum,
        ] {
            assert_round_trip(&problem, &solution);
            let evaluation = evaluate(&problem, &solution);
            if evaluation.feasible {
                assert!(
                    evaluation.objective <= best.objective + 1e-6,
                    "{}: beats the optimum",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn schemas_are_json() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema");
    for name in ["instance.schema.json", "plan.schema.json"] {
        let text = fs::read_to_string(dir.join(name)).expect("schema file");
        let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
        assert!(schema.get("$schema").is_some(), "{name} declares its dialect");
    }
}
