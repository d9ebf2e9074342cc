//! `vadapt evaluate`: the adaptation's payoff in the lab (the shape of seeds/004 figs.
//! 13–14 and 16). For each workload (Patterns topology and compute/communicate ratio) it
//! measures the application's throughput on a fresh lab five times: on the star (no
//! adaptation), after the adaptor ran with topology changes only, with migration only,
//! with both, and on the best static configuration the exact solver finds for the
//! instance the adaptor solved (applied directly, without the adaptor's heuristics).
//!
//! The lab is the demo's: the proxy and two hosts behind slow uplinks, two hosts fast,
//! one VM per host, badly placed (the VMs on the slow hosts).

use std::process::{Child, Command};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use vadapt::exact::DEFAULT_MAX_NODES;
use vadapt::{exact, Instance, Problem};
use vadapt_service::status_file;
use vnet_lab::lab_status_path;
use vnet_lab::patterns::{self, PatternsArgs};
use vnet_lab::{self as lab, UpArgs, Uplink};

use crate::run::{apply_plan, RunArgs};

/// Hosts (the proxy h0 included) and VMs of the evaluation lab: vm{j} on h{j+1}.
const HOSTS: usize = 5;
const VMS: usize = 4;
/// The proxy and the hosts of vm0 and vm1 slow, the hosts of vm2 and vm3 fast.
const UPLINKS: [&str; HOSTS] = ["h0=20mbit", "h1=20mbit", "h2=20mbit", "h3=1gbit", "h4=1gbit"];
/// One short workload run while the adaptor observes (a migration may break one).
const ADAPT_RUN_S: f64 = 2.0;
/// How long the adaptor may take to measure, observe and decide.
const ADAPT_TIMEOUT: Duration = Duration::from_secs(150);

/// `vadapt evaluate ...`.
#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// Lab name (rebuilt for every configuration).
    #[arg(long, default_value = "eval")]
    name: String,
    /// Workloads, `TOPOLOGY:RATIO`, comma-separated: Patterns' --topology, and the
    /// compute/communicate ratio on the star (each iteration computes for RATIO times the
    /// star's communication time per iteration, measured first at ratio 0).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "all-to-all:0,all-to-all:1,ring:0,ring:1,tree:0"
    )]
    workloads: Vec<String>,
    /// The adaptor's algorithm (`vadapt run --solver`).
    #[arg(long, value_enum, default_value_t = crate::run::Solver::Auto)]
    solver: crate::run::Solver,
    /// Seconds of each throughput measurement.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// One workload's results: iterations per second in each configuration.
#[derive(Serialize, Debug)]
struct Row {
    topology: String,
    ratio: f64,
    /// Compute time per iteration: the ratio times the star's communication time.
    compute_ms: f64,
    star: f64,
    topology_only: f64,
    migration_only: f64,
    both: f64,
    best_static: f64,
    /// both / star.
    speedup: f64,
    /// both / best static.
    of_best: f64,
}

/// The adaptor's policy in a configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Topology,
    Migration,
    Both,
}

/// Removes the lab when dropped, so an error midway leaves nothing behind.
struct LabGuard<'a>(&'a str);

impl Drop for LabGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = lab::down(self.0) {
            eprintln!("vadapt evaluate: tearing lab {} down: {e:#}", self.0);
        }
    }
}

/// Kills and reaps the adaptor when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn up(name: &str) -> Result<()> {
    let mut args = UpArgs::new(name, HOSTS, VMS);
    args.uplinks = UPLINKS
        .iter()
        .map(|u| u.parse::<Uplink>())
        .collect::<Result<_>>()?;
    lab::up(&args).map(|_| ())
}

fn workload(name: &str, topology: &str, compute_ms: f64, seconds: f64) -> PatternsArgs {
    PatternsArgs::new(name, topology, seconds).compute_ms(compute_ms)
}

/// Application throughput over `seconds`.
fn measure(name: &str, topology: &str, compute_ms: f64, seconds: f64) -> Result<f64> {
    let reports = patterns::run_lab(&workload(name, topology, compute_ms, seconds))
        .with_context(|| format!("running Patterns ({topology}) in lab {name}"))?;
    Ok(patterns::throughput(&reports))
}

/// Runs `vadapt run --once` with the mode's policy while the workload runs in short
/// bursts; returns the instance it solved.
fn adapt(
    name: &str,
    topology: &str,
    compute_ms: f64,
    mode: Mode,
    solver: crate::run::Solver,
) -> Result<Instance> {
    let exe = std::env::current_exe().context("cannot find the vadapt binary")?;
    let status = lab_status_path(name);
    let mut cmd = Command::new(exe);
    cmd.args(["run", "--lab", name, "--once", "--probe-ms", "300", "--solver"]);
    cmd.arg(
        clap::ValueEnum::to_possible_value(&solver)
            .context("solver name")?
            .get_name(),
    );
    match mode {
        Mode::Topology => cmd.arg("--no-migrate"),
        Mode::Migration => cmd.arg("--no-topology"),
        Mode::Both => &mut cmd,
    };
    let mut adaptor = ChildGuard(cmd.spawn().context("starting vadapt run")?);
    let started = Instant::now();
    // The host graph is probed on an idle network.
    while status_file::read(&status).map_or(true, |s| s.phase == vadapt::status::AdaptorPhase::Measuring) {
        if adaptor.0.try_wait()?.is_some() || started.elapsed() > ADAPT_TIMEOUT {
            bail!("the adaptor stopped or hung while measuring");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop = AtomicBool::new(false);
    loop {
        if let Some(exit) = adaptor.0.try_wait()? {
            if !exit.success() {
                bail!("vadapt run failed ({exit})");
            }
            break;
        }
        if started.elapsed() > ADAPT_TIMEOUT {
            bail!("the adaptor did not decide within {ADAPT_TIMEOUT:?}");
        }
        // A run broken by a migration is expected; the next one starts at once.
        let _ = patterns::run_lab_until(&workload(name, topology, compute_ms, ADAPT_RUN_S), &stop);
    }
    let text = std::fs::read_to_string(status.with_file_name("instance.json"))
        .context("the adaptor wrote no instance")?;
    Instance::from_json(&text).context("reading the adaptor's instance")
}

/// The best static configuration's throughput: the exact solver's plan for `instance`,
/// applied to a fresh lab.
fn best_static(
    name: &str,
    topology: &str,
    compute_ms: f64,
    seconds: f64,
    instance: &Instance,
) -> Result<f64> {
    let problem = Problem::new(instance).context("the adaptor's instance")?;
    let solution = exact(&problem, DEFAULT_MAX_NODES)
        .context("exact solver")?
        .context("the exact solver found no feasible plan")?;
    let plan = solution.to_plan(&problem);
    up(name)?;
    let _guard = LabGuard(name);
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        run: RunArgs,
    }
    let args = Wrapper::try_parse_from(["vadapt", "--lab", name])?.run;
    apply_plan(&args, &plan)?;
    measure(name, topology, compute_ms, seconds)
}

fn configuration(
    args: &EvaluateArgs,
    topology: &str,
    compute_ms: f64,
    mode: Option<Mode>,
) -> Result<(f64, Option<Instance>)> {
    let name = args.name.as_str();
    up(name)?;
    let _guard = LabGuard(name);
    let instance = match mode {
        Some(m) => Some(adapt(name, topology, compute_ms, m, args.solver)?),
        None => None,
    };
    Ok((measure(name, topology, compute_ms, args.seconds)?, instance))
}

/// Runs the evaluation and prints the table (or JSON).
pub fn run(args: &EvaluateArgs) -> Result<()> {
    let mut rows = Vec::new();
    let mut star_comm: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for w in &args.workloads {
        let (topology, ratio) = w
            .split_once(':')
            .with_context(|| format!("workload `{w}`: write TOPOLOGY:RATIO, e.g. ring:1"))?;
        let ratio: f64 = ratio
            .parse()
            .with_context(|| format!("workload `{w}`: the ratio is not a number"))?;
        // The star's communication time per iteration sets the compute time of the ratio.
        let star_comm_ms = match star_comm.get(topology) {
            Some(&ms) => ms,
            None => {
                eprintln!("vadapt evaluate: {topology}: the star's communication time");
                let (rate, _) = configuration(args, topology, 0.0, None)?;
                let ms = 1e3 / rate.max(1e-9);
                star_comm.insert(topology.to_string(), ms);
                ms
            }
        };
        let compute_ms = ratio * star_comm_ms;
        let run = |mode: Option<Mode>| -> Result<(f64, Option<Instance>)> {
            let what = mode.map_or("star".to_string(), |m| format!("{m:?}"));
            eprintln!("vadapt evaluate: {topology} ratio {ratio} (compute {compute_ms:.1} ms): {what}");
            configuration(args, topology, compute_ms, mode)
        };
        let (star, _) = run(None)?;
        let (topology_only, _) = run(Some(Mode::Topology))?;
        let (migration_only, _) = run(Some(Mode::Migration))?;
        let (both, instance) = run(Some(Mode::Both))?;
        eprintln!("vadapt evaluate: {topology} ratio {ratio}: best static (exact)");
        let instance = instance.context("no instance from the adaptor")?;
        let best = best_static(&args.name, topology, compute_ms, args.seconds, &instance)?;
        rows.push(Row {
            topology: topology.to_string(),
            ratio,
            compute_ms,
            star,
            topology_only,
            migration_only,
            both,
            best_static: best,
            speedup: both / star.max(1e-9),
            of_best: both / best.max(1e-9),
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("| workload | star it/s | topology only | migration only | both | best static (exact) | both/star | both/best |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} ratio {} | {:.2} | {:.2} ({:.2}x) | {:.2} ({:.2}x) | {:.2} | {:.2} | {:.2}x | {:.0} % |",
            r.topology,
            r.ratio,
            r.star,
            r.topology_only,
            r.topology_only / r.star.max(1e-9),
            r.migration_only,
            r.migration_only / r.star.max(1e-9),
            r.both,
            r.best_static,
            r.speedup,
            r.of_best * 100.0
        );
    }
    Ok(())
}
