//! `vadapt bench`: heuristic quality against the exact solver on small instances, and solve
//! times on growing ones. Prints Markdown tables.

use std::time::Instant;

use anyhow::Result;
use vadapt::exact::DEFAULT_MAX_NODES;
use vadapt::{
    anneal, evaluate, exact, generate, greedy, residual_aware, GenConfig, MoveBudget, Pattern, Problem,
    Solution,
};

use crate::Deadline;

/// Ratio statistics of one heuristic against the optimum.
#[derive(Debug, Default)]
struct Quality {
    feasible: u64,
    ratios: Vec<f64>,
    seconds: f64,
}

impl Quality {
    fn record(&mut self, problem: &Problem, solution: &Solution, optimum: f64, seconds: f64) {
        self.seconds += seconds;
        let evaluation = evaluate(problem, solution);
        if evaluation.feasible {
            self.feasible += 1;
            if optimum > 0.0 {
                self.ratios.push(evaluation.objective / optimum);
            }
        }
    }

    fn row(&self, name: &str, solved: u64) -> String {
        let mean = self.ratios.iter().sum::<f64>() / self.ratios.len().max(1) as f64;
        let worst = self.ratios.iter().copied().fold(f64::INFINITY, f64::min);
        format!(
            "| {name} | {:.1} % ({}/{solved}) | {:.4} | {:.4} | {:.3} |",
            100.0 * self.feasible as f64 / solved.max(1) as f64,
            self.feasible,
            mean,
            if worst.is_finite() { worst } else { f64::NAN },
            1000.0 * self.seconds / solved.max(1) as f64,
        )
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed().as_secs_f64())
}

/// Runs both parts of the benchmark.
pub fn run(instances: u64, moves: u64, budget_ms: u64, seed: u64) -> Result<()> {
    quality(instances, moves, seed)?;
    scaling(budget_ms, seed)
}

fn quality(instances: u64, moves: u64, seed: u64) -> Result<()> {
    let (mut greedy_q, mut residual_q, mut anneal_q, mut exact_seconds) =
        (Quality::default(), Quality::default(), Quality::default(), 0.0);
    let (mut solved, mut infeasible, mut too_big) = (0, 0, 0);
    for i in 0..instances {
        let config = GenConfig {
            hosts: 3 + (i % 3) as usize,
            vms: 4 + (i % 4) as usize,
            pattern: Pattern::ALL[(i / 3 % 5) as usize],
            ..GenConfig::default()
        };
        let problem = Problem::new(&generate(&config, seed + i))?;
        let (optimum, seconds) = timed(|| exact(&problem, DEFAULT_MAX_NODES));
        let optimum = match optimum {
            Ok(Some(solution)) => evaluate(&problem, &solution).objective,
            Ok(None) => {
                infeasible += 1;
                continue;
            }
            Err(_) => {
                too_big += 1;
                continue;
            }
        };
        solved += 1;
        exact_seconds += seconds;
        let (s, t) = timed(|| greedy(&problem));
        greedy_q.record(&problem, &s, optimum, t);
        let (s, t) = timed(|| residual_aware(&problem));
        residual_q.record(&problem, &s, optimum, t);
        let (s, t) = timed(|| anneal(&problem, seed + i, &mut MoveBudget(moves)));
        anneal_q.record(&problem, &s, optimum, t);
    }
    println!(
        "Quality: {instances} random instances (3–5 hosts, 4–7 VMs, all patterns); {solved} with a \
         feasible optimum, {infeasible} provably infeasible, {too_big} over the exact node limit.\n"
    );
    println!("| algorithm | feasible | mean objective/optimum | worst | mean solve ms |");
    println!("|---|---|---|---|---|");
    println!("{}", greedy_q.row("greedy (thesis)", solved));
    println!("{}", residual_q.row("greedy + residual routing", solved));
    println!("{}", anneal_q.row(&format!("anneal ({moves} moves)"), solved));
    println!(
        "| exact | 100 % | 1 | 1 | {:.3} |\n",
        1000.0 * exact_seconds / solved.max(1) as f64
    );
    Ok(())
}

fn scaling(budget_ms: u64, seed: u64) -> Result<()> {
    println!(
        "Scaling: random pattern (2 partners per VM), link density 0.5; anneal budget {budget_ms} ms.\n"
    );
    println!("| hosts | VMs | demands | greedy ms | greedy obj (feasible) | anneal ms | anneal moves | anneal obj (feasible) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (hosts, vms) in [(8, 16), (16, 32), (32, 64), (32, 128), (64, 128), (64, 256)] {
        let config = GenConfig {
            hosts,
            vms,
            pattern: Pattern::Random,
            ..GenConfig::default()
        };
        let problem = Problem::new(&generate(&config, seed))?;
        let (g, greedy_seconds) = timed(|| greedy(&problem));
        let g = evaluate(&problem, &g);
        let mut budget = CountingDeadline {
            inner: Deadline::new(budget_ms, None),
            moves: 0,
        };
        let (a, anneal_seconds) = timed(|| anneal(&problem, seed, &mut budget));
        let a = evaluate(&problem, &a);
        println!(
            "| {hosts} | {vms} | {} | {:.2} | {:.0} ({}) | {:.0} | {} | {:.0} ({}) |",
            problem.demands.len(),
            1000.0 * greedy_seconds,
            g.objective,
            g.feasible,
            1000.0 * anneal_seconds,
            budget.moves,
            a.objective,
            a.feasible,
        );
    }
    Ok(())
}

/// A deadline that remembers how many moves were made.
#[derive(Debug)]
struct CountingDeadline {
    inner: Deadline,
    moves: u64,
}

impl vadapt::Budget for CountingDeadline {
    fn spent(&mut self, moves: u64) -> f64 {
        self.moves = moves;
        self.inner.spent(moves)
    }
}
