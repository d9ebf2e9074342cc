//! `vadapt`: the adaptor service (`run`), and the tools around its algorithms: solve,
//! check and generate adaptation instances, benchmark the algorithms.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use vadapt::exact::DEFAULT_MAX_NODES;
use vadapt::{
    anneal, evaluate, exact, generate, greedy, residual_aware, Budget, GenConfig, Pattern, Plan, Problem,
};

#[derive(Debug, Parser)]
#[command(
    name = "vadapt",
    about = "VADAPT: VM placement, overlay routing and reservations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which algorithm `solve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Algo {
    /// The thesis's greedy mapping and topology heuristics.
    Greedy,
    /// Greedy mapping with residual-aware widest-path routing.
    Residual,
    /// Simulated annealing started from greedy.
    Anneal,
    /// Branch and bound (small instances only).
    Exact,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The adaptor service: measure the hosts, follow VTTIF, decide and apply plans
    /// (migrations, links, rules, reservations) while the application runs.
    Run(Box<run::RunArgs>),
    /// Apply a plan (as `solve` prints it) to the daemons once: migrations, links and
    /// rules, reservations.
    Apply {
        #[command(flatten)]
        run: Box<run::RunArgs>,
        /// Plan JSON file.
        #[arg(long)]
        plan: PathBuf,
    },
    /// The adaptation's payoff in the lab: application throughput on the star, with
    /// topology changes only, migration only, both, and the exact solver's best static
    /// configuration (needs root; takes minutes).
    Evaluate(evaluate::EvaluateArgs),
    /// Solve an instance and print the plan as JSON.
    Solve {
        /// Instance JSON file.
        instance: PathBuf,
        /// Algorithm.
        #[arg(long, value_enum, default_value_t = Algo::Anneal)]
        algo: Algo,
        /// Seed of the annealing moves.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Wall-clock deadline of the annealing, ms. Whichever of --budget-ms and --moves
        /// comes first ends the search; only a run that ends by --moves is reproducible.
        #[arg(long, default_value_t = 950)]
        budget_ms: u64,
        /// Move budget of the annealing.
        #[arg(long, default_value_t = 20_000)]
        moves: u64,
        /// Search-node limit of the exact solver.
        #[arg(long, default_value_t = DEFAULT_MAX_NODES)]
        max_nodes: u64,
    },
    /// Check a plan against an instance; print its objective and violations as JSON.
    Eval {
        /// Instance JSON file.
        instance: PathBuf,
        /// Plan JSON file (as printed by `solve`; only placement and routes are read).
        plan: PathBuf,
    },
    /// Print a random instance as JSON.
    Gen {
        /// Number of hosts.
        #[arg(long, default_value_t = 4)]
        hosts: usize,
        /// Number of VMs.
        #[arg(long, default_value_t = 6)]
        vms: usize,
        /// Demand topology: all-to-all, ring, mesh, tree or random.
        #[arg(long, default_value = "random")]
        pattern: Pattern,
        /// Probability that a host pair (beyond the ring) has a possible link.
        #[arg(long, default_value_t = 0.5)]
        density: f64,
        /// Number of pinned VMs.
        #[arg(long, default_value_t = 1)]
        pinned: usize,
        /// Total host capacity over total VM demand.
        #[arg(long, default_value_t = 2.0)]
        slack: f64,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Measure the heuristics against the exact solver and time them on growing instances.
    Bench {
        /// Number of small random instances for the quality comparison.
        #[arg(long, default_value_t = 300)]
        instances: u64,
        /// Annealing moves per small instance.
        #[arg(long, default_value_t = 5000)]
        moves: u64,
        /// Wall-clock budget of the annealing on the scaling instances, ms.
        #[arg(long, default_value_t = 900)]
        budget_ms: u64,
        /// Seed of the first instance.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// A wall-clock deadline and/or a move cap, whichever comes first: the binary's side of the
/// library's clock-free [`Budget`].
#[derive(Debug)]
pub(crate) struct Deadline {
    start: Instant,
    limit: Duration,
    moves: Option<u64>,
}

impl Budget for Deadline {
    fn spent(&mut self, moves: u64) -> f64 {
        let by_time = self.start.elapsed().as_secs_f64() / self.limit.as_secs_f64().max(1e-9);
        let by_moves = self
            .moves
            .map_or(0.0, |cap| if cap == 0 { 1.0 } else { moves as f64 / cap as f64 });
        by_time.max(by_moves)
    }
}

impl Deadline {
    pub(crate) fn new(budget_ms: u64, moves: Option<u64>) -> Self {
        Self {
            start: Instant::now(),
            limit: Duration::from_millis(budget_ms),
            moves,
        }
    }
}

fn load_problem(path: &Path) -> Result<Problem> {
    let text = fs::read_to_string(path).with_context(|| format!("reading instance {}", path.display()))?;
    Problem::from_json(&text).with_context(|| format!("invalid instance {}", path.display()))
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("encoding JSON")?
    );
    Ok(())
}

fn solve(problem: &Problem, algo: Algo, seed: u64, budget: &mut Deadline, max_nodes: u64) -> Result<Plan> {
    let solution = match algo {
        Algo::Greedy => greedy(problem),
        Algo::Residual => residual_aware(problem),
        Algo::Anneal => anneal(problem, seed, budget),
        Algo::Exact => match exact(problem, max_nodes).context("exact solver")? {
            Some(solution) => solution,
            None => bail!("no feasible plan exists for this instance"),
        },
    };
    Ok(solution.to_plan(problem))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run::run(&args),
        Command::Apply { run, plan } => {
            let text =
                fs::read_to_string(&plan).with_context(|| format!("reading plan {}", plan.display()))?;
            let plan = Plan::from_json(&text).with_context(|| format!("invalid plan {}", plan.display()))?;
            for action in run::apply_plan(&run, &plan)? {
                println!("{action}");
            }
            Ok(())
        }
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Solve {
            instance,
            algo,
            seed,
            budget_ms,
            moves,
            max_nodes,
        } => {
            let problem = load_problem(&instance)?;
            print_json(&solve(
                &problem,
                algo,
                seed,
                &mut Deadline::new(budget_ms, Some(moves)),
                max_nodes,
            )?)
        }
        Command::Eval { instance, plan } => {
            let problem = load_problem(&instance)?;
            let text =
                fs::read_to_string(&plan).with_context(|| format!("reading plan {}", plan.display()))?;
            let solution = Plan::from_json(&text)
                .and_then(|p| p.to_solution(&problem))
                .with_context(|| format!("invalid plan {}", plan.display()))?;
            print_json(&evaluate(&problem, &solution))
        }
        Command::Gen {
            hosts,
            vms,
            pattern,
            density,
            pinned,
            slack,
            seed,
        } => {
            if !(0.0..=1.0).contains(&density) {
                bail!("--density must be within 0..=1, got {density}");
            }
            if !(slack.is_finite() && slack > 0.0) {
                bail!("--slack must be a positive number, got {slack}");
            }
            if hosts == 0 {
                bail!("--hosts must be at least 1");
            }
            let config = GenConfig {
                hosts,
                vms,
                pattern,
                link_density: density,
                pinned,
                capacity_slack: slack,
                ..GenConfig::default()
            };
            print_json(&generate(&config, seed))
        }
        Command::Bench {
            instances,
            moves,
            budget_ms,
            seed,
        } => bench::run(instances, moves, budget_ms, seed),
    }
}

mod bench;
mod evaluate;
mod measure;
mod migrate;
mod reserve;
mod run;
