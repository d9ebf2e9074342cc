//! VADAPT: the adaptation problem (VM placement, overlay links, routes, reservations) and
//! its algorithms (seeds/004 §6–9, appendix B).
//!
//! Pure and deterministic: no clock, threads or IO. Randomness comes from a seed; a time
//! budget comes from the caller as a [`Budget`] (the `vadapt` binary wraps a wall-clock
//! deadline in one).
//!
//! # Pipeline
//! - [`Instance`] (JSON, `schema/instance.schema.json`, examples in `examples/`) is validated
//!   into a [`Problem`] with dense indices; bad input is a [`ModelError`], never a panic.
//! - An algorithm returns a [`Solution`]: [`greedy()`] (the thesis's heuristics),
//!   [`residual_aware`] (greedy placement, residual-aware widest-path routing), [`anneal()`]
//!   (simulated annealing from greedy, with restarts), [`exact()`] (branch and bound, the
//!   oracle for small instances).
//! - [`evaluate`] checks every GAPVEE constraint and computes the objective (definition in
//!   [`eval`]); [`Solution::to_plan`] gives the JSON [`Plan`] with overlay links, link and
//!   CPU reservations ([`plan::cpu_reservation`]) and migrations.
//! - [`route::Graph::widest_path`] is the exact latency-bounded widest path all of them use.
//!
//! # Measured quality and speed
//!
//! `vadapt bench` (release build, `--instances 300 --budget-ms 900`), on a shared 2-core
//! VM (Intel Xeon, load average 2–4 from other builds: absolute times are indicative
//! only). Quality instances: 3–5 hosts, 4–7 VMs, every Patterns topology, link density 0.5,
//! log-uniform link bandwidth 10–1000 Mbit/s, 20 % of demands latency-bounded, one pinned
//! VM, capacity slack 2. Ratios are over the instances where the algorithm's plan is
//! feasible; feasibility is over the 248 instances that have a feasible plan (49 were
//! provably infeasible, 3 exceeded the exact solver's node limit and were skipped).
//!
//! | algorithm | feasible | mean objective/optimum | worst | mean solve ms |
//! |---|---|---|---|---|
//! | greedy (thesis) | 28.6 % (71/248) | 0.7659 | 0.4416 | 0.003 |
//! | greedy + residual routing | 58.9 % (146/248) | 0.7942 | 0.4591 | 0.007 |
//! | anneal (5000 moves) | 99.2 % (246/248) | 0.9954 | 0.7947 | 7.799 |
//! | exact | 100 % | 1 | 1 | 15.484 |
//!
//! Scaling (random pattern, 2 partners per VM; anneal stops at a 900 ms deadline):
//!
//! | hosts | VMs | demands | greedy ms | greedy obj (feasible) | anneal ms | anneal moves | anneal obj (feasible) |
//! |---|---|---|---|---|---|---|---|
//! | 8 | 16 | 32 | 0.02 | 8507 (true) | 900 | 273387 | 12865 (true) |
//! | 16 | 32 | 61 | 0.10 | 22992 (false) | 900 | 75914 | 33218 (true) |
//! | 32 | 64 | 125 | 0.48 | 50085 (false) | 900 | 15952 | 69097 (true) |
//! | 32 | 128 | 250 | 1.60 | 89603 (false) | 900 | 12659 | 124944 (true) |
//! | 64 | 128 | 254 | 5.09 | 118496 (false) | 900 | 4044 | 164899 (true) |
//! | 64 | 256 | 509 | 9.80 | 189802 (false) | 900 | 3076 | 287497 (true) |
//!
//! Targets: anneal within 5 % of exact on average (met: 0.5 % mean gap); 64 hosts / 256 VMs
//! in under 1 s (greedy 10 ms; anneal returns a feasible plan, +51 % over greedy's infeasible
//! one, at its 900 ms deadline; `vadapt solve` defaults to a 950 ms deadline).
// A pure crate: no panic on bad input, no clock, threads or sleeps (the list is in
// clippy.toml at the repository root).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

pub mod adaptor;
pub mod anneal;
pub mod error;
pub mod eval;
pub mod exact;
pub mod gen;
pub mod greedy;
pub mod model;
pub mod overlay;
pub mod plan;
pub mod reserve;
pub mod route;
pub mod status;

pub use anneal::{anneal, residual_aware, residual_routes, Budget, MoveBudget};
pub use error::{ModelError, SolveError};
pub use eval::{evaluate, Evaluation, Violation};
pub use exact::exact;
pub use gen::{generate, GenConfig, Pattern};
pub use greedy::greedy;
pub use model::{Instance, Problem};
pub use plan::{Plan, Solution};
