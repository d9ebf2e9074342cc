//! `vadapt run`: the adaptor service. Measures the host graph through the daemons,
//! follows VTTIF, and when the application's topology settles (or measurements move),
//! solves the adaptation problem and applies the plan if it gains more than the
//! hysteresis margin: migrations through a hook, links and rules through the topology
//! language's diff (add before delete), reservations through a backend.
//!
//! The decision itself is the library's ([`vadapt::adaptor`], [`vadapt::overlay`]); this
//! module is the thin driver around it: clocks, daemons, hooks, files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lang::Overlay;
use vadapt::adaptor::{self, HostPair, Policy};
use vadapt::model::{DemandSpec, HostLinkSpec, HostSpec, Instance, VmSpec};
use vadapt::overlay;
use vadapt::status::{AdaptorPhase, DecisionRecord, MeasuredLink, PlanSummary, Status, Verdict};
use vadapt::{anneal, Plan};
use vnet_client::Client;
use vnet_core::mac::MacAddr;
use vnet_lab::fleet::{Daemons, Fleet};
use vttif::{Aggregator, Params, View};

use crate::measure;
use crate::Deadline;

/// `vadapt run ...`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub daemons: Daemons,
    /// The proxy every host keeps a link to (default: h0 for a lab, else the machine
    /// linked to every other one).
    #[arg(long)]
    pub proxy: Option<String>,
    /// Status file, rewritten after every round (default for a lab:
    /// /run/vnet-lab/NAME/adapt/status.json; else ./vadapt-status.json).
    #[arg(long, value_name = "FILE")]
    pub status: Option<PathBuf>,
    /// Decision log, one JSON object per line (default: decisions.jsonl beside the status).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Stop after the first decision (applied or not).
    #[arg(long)]
    pub once: bool,
    /// Decide and report, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Never move VMs.
    #[arg(long)]
    pub no_migrate: bool,
    /// Never add overlay links (route over the links that exist).
    #[arg(long)]
    pub no_topology: bool,
    /// Make no reservations.
    #[arg(long)]
    pub no_reserve: bool,
    /// Migration hook: an executable called as `HOOK VM MAC FROM TO` (see tools/hooks/).
    /// Default for a lab: the lab's own migration (`vnet lab migrate`).
    #[arg(long, value_name = "PROGRAM")]
    pub hook: Option<PathBuf>,
    /// How long a migration hook may run, seconds.
    #[arg(long, default_value_t = 60)]
    pub hook_timeout_s: u64,
    /// Reservation backend: an executable (see `vadapt::reserve`); default for a lab:
    /// the lab's tc/HTB and cgroup backend.
    #[arg(long, value_name = "PROGRAM")]
    pub reserve_script: Option<PathBuf>,
    /// The algorithm that decides.
    #[arg(long, value_enum, default_value_t = Solver::Auto)]
    pub solver: Solver,
    /// Annealing time budget per decision, ms.
    #[arg(long, default_value_t = 500)]
    pub budget_ms: u64,
    /// Seed of the solver.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Hysteresis: a plan must beat the configuration in force by this fraction of its
    /// objective (and by --min-gain).
    #[arg(long, default_value_t = 0.1)]
    pub margin: f64,
    /// Hysteresis: the least gain worth a change, Mbit/s.
    #[arg(long, default_value_t = 1.0)]
    pub min_gain: f64,
    /// Cost of moving a VM, in objective units (Mbit/s of residual bandwidth).
    #[arg(long, default_value_t = 10.0)]
    pub migration_cost: f64,
    /// Relative change of a demand or a link's bandwidth that triggers a new decision.
    #[arg(long, default_value_t = 0.5)]
    pub change: f64,
    /// Least time between two decisions, seconds: hysteresis in time, so a bursty
    /// application does not make the adaptor re-solve (and take CPU from it) every round.
    #[arg(long, default_value_t = 10)]
    pub min_interval_s: u64,
    /// Round interval, ms (VTTIF is polled at its update rate in between).
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
    /// VTTIF smoothing interval, ms.
    #[arg(long, default_value_t = 1000)]
    pub smoothing_ms: u64,
    /// VTTIF: how long the topology must stay unchanged to count as settled, ms.
    #[arg(long, default_value_t = 2000)]
    pub settle_ms: u64,
    /// VTTIF detection threshold (fraction of the heaviest pair).
    #[arg(long, default_value_t = 0.1)]
    pub threshold: f64,
    /// Bandwidth probe duration per host pair, ms.
    #[arg(long, default_value_t = 400)]
    pub probe_ms: u64,
    /// Re-measure the host graph after this many seconds (0: only at start).
    #[arg(long, default_value_t = 0)]
    pub remeasure_s: u64,
    /// Compute capacity of every host (default: this machine's CPUs).
    #[arg(long)]
    pub host_compute: Option<f64>,
    /// Space capacity of every host (in VMs of --vm-size).
    #[arg(long, default_value_t = 8.0)]
    pub host_size: f64,
    /// Compute demand of every VM.
    #[arg(long, default_value_t = 1.0)]
    pub vm_compute: f64,
    /// Space demand of every VM.
    #[arg(long, default_value_t = 1.0)]
    pub vm_size: f64,
    /// Bandwidth credited to two VMs on one host, Mbit/s (the daemon forwards between
    /// them in memory).
    #[arg(long, default_value_t = 10_000.0)]
    pub local_mbps: f64,
}

/// What the daemons run and what the adaptor knows about it.
struct Scene {
    fleet: Fleet,
    /// The lab, when the adaptor drives one.
    lab: Option<String>,
    hub: String,
    /// Links that are not the adaptor's (recorded at start).
    base_links: BTreeSet<String>,
    /// VM name → MAC, and MAC (lower case) → VM name.
    macs: BTreeMap<String, MacAddr>,
    names: BTreeMap<String, String>,
}

impl Scene {
    fn new(args: &RunArgs) -> Result<Scene> {
        let fleet = args.daemons.fleet(None)?;
        let live = fleet.live()?;
        let hub = match (&args.proxy, &args.daemons.lab) {
            (Some(p), _) => p.clone(),
            (None, Some(_)) => "h0".to_string(),
            (None, None) => live
                .hosts
                .keys()
                .find(|h| {
                    live.hosts
                        .keys()
                        .filter(|o| o != h)
                        .all(|o| live.links.values().any(|l| l.other_end(h) == Some(o.as_str())))
                })
                .cloned()
                .context("no machine is linked to every other one: name the proxy with --proxy")?,
        };
        if !live.hosts.contains_key(&hub) {
            bail!("the proxy `{hub}` is not among the daemons");
        }
        let macs: BTreeMap<String, MacAddr> = live
            .ifaces
            .values()
            .filter_map(|i| i.mac.map(|m| (i.name.to_string(), m)))
            .collect();
        if macs.is_empty() {
            bail!("the daemons serve no VM interface with a MAC: nothing to adapt");
        }
        let names = macs
            .iter()
            .map(|(n, m)| (m.to_string().to_lowercase(), n.clone()))
            .collect();
        Ok(Scene {
            base_links: live.links.keys().cloned().collect(),
            fleet,
            lab: args.daemons.lab.clone(),
            hub,
            macs,
            names,
        })
    }

    /// VM → host it runs on now (the machine whose daemon serves its MAC).
    fn placement(&self, live: &Overlay) -> BTreeMap<String, String> {
        live.ifaces
            .values()
            .filter_map(|i| {
                let vm = self.names.get(&i.mac?.to_string().to_lowercase())?;
                Some((vm.clone(), i.machine.clone()))
            })
            .collect()
    }
}

/// Directed host pairs the overlay links join now.
fn current_links(live: &Overlay) -> BTreeSet<HostPair> {
    live.links
        .values()
        .flat_map(|l| {
            [
                (l.owner.clone(), l.peer.clone()),
                (l.peer.clone(), l.owner.clone()),
            ]
        })
        .collect()
}

/// The problem instance for what the adaptor sees now.
fn instance(args: &RunArgs, live: &Overlay, scene: &Scene, graph: &[MeasuredLink], view: &View) -> Instance {
    let compute = args
        .host_compute
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
    let placement = scene.placement(live);
    let demands = view
        .matrix
        .iter()
        .filter(|e| e.normalized >= args.threshold && e.src != e.dst)
        .filter_map(|e| {
            let (src, dst) = (scene.names.get(&e.src)?, scene.names.get(&e.dst)?);
            (placement.contains_key(src) && placement.contains_key(dst)).then(|| DemandSpec {
                src: src.clone(),
                dst: dst.clone(),
                bw: e.bytes_per_s * 8.0 / 1e6,
                lat: None,
            })
        })
        .collect();
    Instance {
        hosts: live
            .hosts
            .keys()
            .map(|h| HostSpec {
                name: h.clone(),
                compute,
                size: args.host_size,
            })
            .collect(),
        links: graph
            .iter()
            .map(|m| HostLinkSpec {
                from: m.from.clone(),
                to: m.to.clone(),
                bw: m.mbps,
                lat: m.rtt_ms / 2.0,
            })
            .collect(),
        vms: placement
            .iter()
            .map(|(vm, host)| VmSpec {
                name: vm.clone(),
                compute: args.vm_compute,
                size: args.vm_size,
                host: host.clone(),
                migration_cost: args.migration_cost,
            })
            .collect(),
        demands,
        pinned: vec![],
        local_bw: args.local_mbps,
    }
}

fn summary(plan: &Plan) -> PlanSummary {
    PlanSummary {
        placement: plan.placement.clone(),
        overlay_links: plan
            .overlay_links
            .iter()
            .map(|l| (l.from.clone(), l.to.clone()))
            .collect(),
        routes: plan
            .routes
            .iter()
            .map(|r| (r.src.clone(), r.dst.clone(), r.path.clone()))
            .collect(),
        link_reservations: plan
            .reservations
            .links
            .iter()
            .map(|r| (r.from.clone(), r.to.clone(), r.bw))
            .collect(),
        cpu_reservations: plan
            .reservations
            .cpu
            .iter()
            .map(|r| (r.vm.clone(), r.period_ms, r.slice_ms))
            .collect(),
        objective: plan.objective,
    }
}

/// Polls every daemon's VTTIF matrix into the aggregator.
struct Follower {
    agg: Aggregator,
    start: Instant,
}

impl Follower {
    fn new(args: &RunArgs) -> Result<Follower> {
        let smoothing = Duration::from_millis(args.smoothing_ms);
        let agg = Aggregator::new(Params {
            update_rate_hz: 10.0,
            smoothing,
            threshold: args.threshold,
            settle: Duration::from_millis(args.settle_ms),
            damping: smoothing * 4,
            noise_floor: 1000.0,
        })
        .context("bad VTTIF parameters")?;
        Ok(Follower {
            agg,
            start: Instant::now(),
        })
    }

    /// Polls every daemon once; a daemon that does not answer is skipped this time.
    fn poll(&mut self, fleet: &Fleet) -> View {
        let now = self.start.elapsed();
        for h in &fleet.hosts {
            match fleet.ask(&h.machine, Client::vttif_matrix) {
                Ok(snap) => {
                    self.agg.ingest(now, &h.machine, &snap);
                }
                Err(e) => eprintln!("vadapt: {e:#}"),
            }
        }
        self.agg.view(now)
    }
}

/// Which algorithm decides.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Solver {
    /// The exact solver when it finishes within a small search (small instances: an
    /// optimal plan in milliseconds), else annealing.
    Auto,
    /// Simulated annealing from greedy, within --budget-ms.
    Anneal,
    /// The exact solver (branch and bound), falling back to annealing past its limit.
    Exact,
}

/// Search nodes `--solver auto` gives the exact solver before it anneals instead.
const AUTO_EXACT_NODES: u64 = 200_000;

/// Solves `p` as `--solver` says; returns the solution and the algorithm that found it.
fn solve(args: &RunArgs, p: &vadapt::Problem, budget: &mut Deadline) -> (vadapt::Solution, &'static str) {
    let limit = match args.solver {
        Solver::Anneal => None,
        Solver::Auto => Some(AUTO_EXACT_NODES),
        Solver::Exact => Some(vadapt::exact::DEFAULT_MAX_NODES),
    };
    if let Some(Ok(Some(solution))) = limit.map(|nodes| vadapt::exact(p, nodes)) {
        return (solution, "exact");
    }
    (anneal(p, args.seed, budget), "anneal")
}

/// Runs the adaptor until a signal (or the first decision with `--once`).
pub fn run(args: &RunArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    let scene = Scene::new(args)?;
    let status_path = match (&args.status, &scene.lab) {
        (Some(p), _) => p.clone(),
        (None, Some(lab)) => vnet_lab::lab_status_path(lab),
        (None, None) => PathBuf::from("vadapt-status.json"),
    };
    let log_path = args
        .log
        .clone()
        .unwrap_or_else(|| status_path.with_file_name("decisions.jsonl"));
    let mut status = Status {
        target: scene.lab.as_ref().map_or_else(
            || "daemons of the description".to_string(),
            |l| format!("lab {l}"),
        ),
        pid: std::process::id(),
        dry_run: args.dry_run,
        phase: AdaptorPhase::Measuring,
        rounds: 0,
        updated_unix_ms: vnet_lab::sys::unix_ms(),
        host_graph: vec![],
        topology: None,
        current: None,
        decisions: vec![],
        error: None,
    };
    vadapt_service::status_file::write(&status, &status_path)?;
    let result = adapt_loop(args, &scene, &mut status, &status_path, &log_path, &stop);
    status.phase = AdaptorPhase::Stopped;
    status.error = result.as_ref().err().map(|e| format!("{e:#}"));
    status.updated_unix_ms = vnet_lab::sys::unix_ms();
    vadapt_service::status_file::write(&status, &status_path)?;
    result
}

fn adapt_loop(
    args: &RunArgs,
    scene: &Scene,
    status: &mut Status,
    status_path: &std::path::Path,
    log_path: &std::path::Path,
    stop: &AtomicBool,
) -> Result<()> {
    let policy = Policy {
        margin: args.margin,
        min_gain: args.min_gain,
        migrate: !args.no_migrate,
        topology: !args.no_topology,
    };
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("cannot open the decision log {}", log_path.display()))?;
    let mut reservations = crate::reserve::backend(args, scene.lab.as_deref())?;
    eprintln!(
        "vadapt: measuring the host graph ({} hosts)",
        scene.fleet.hosts.len()
    );
    status.host_graph = measure::host_graph(&scene.fleet, Duration::from_millis(args.probe_ms), stop)?;
    let mut measured_at = Instant::now();
    status.phase = AdaptorPhase::Observing;
    vadapt_service::status_file::write(status, status_path)?;
    let mut follower = Follower::new(args)?;
    let mut decided_on: Option<Instance> = None;
    let mut decided_at: Option<Instant> = None;
    let min_interval = Duration::from_secs(args.min_interval_s);
    let interval = Duration::from_millis(args.interval_ms);
    let poll = Duration::from_millis(100);
    let mut next_round = Instant::now() + interval;
    while !stop.load(Ordering::Relaxed) {
        let view = follower.poll(&scene.fleet);
        if Instant::now() < next_round {
            std::thread::sleep(poll);
            continue;
        }
        next_round = Instant::now() + interval;
        status.rounds += 1;
        status.updated_unix_ms = vnet_lab::sys::unix_ms();
        let topology = view
            .topology
            .relabel(|m| scene.names.get(m).cloned().unwrap_or_else(|| m.to_string()));
        status.topology = Some(topology);
        if args.remeasure_s > 0
            && measured_at.elapsed() >= Duration::from_secs(args.remeasure_s)
            && view.quiet
        {
            status.phase = AdaptorPhase::Measuring;
            vadapt_service::status_file::write(status, status_path)?;
            status.host_graph =
                measure::host_graph(&scene.fleet, Duration::from_millis(args.probe_ms), stop)?;
            measured_at = Instant::now();
            status.phase = AdaptorPhase::Observing;
        }
        let too_soon = decided_at.is_some_and(|t| t.elapsed() < min_interval);
        if too_soon || !view.settled || view.quiet || view.topology.edges.is_empty() {
            vadapt_service::status_file::write(status, status_path)?;
            continue;
        }
        let live = scene.fleet.live()?;
        let now = instance(args, &live, scene, &status.host_graph, &view);
        let trigger = match &decided_on {
            None => "first settled topology".to_string(),
            Some(then) if adaptor::significant_change(then, &now, args.change) => {
                "traffic or measurements changed".to_string()
            }
            Some(_) => {
                vadapt_service::status_file::write(status, status_path)?;
                continue;
            }
        };
        status.phase = AdaptorPhase::Adapting;
        vadapt_service::status_file::write(status, status_path)?;
        let instance_path = status_path.with_file_name("instance.json");
        std::fs::write(&instance_path, serde_json::to_vec_pretty(&now)?)
            .with_context(|| format!("cannot write {}", instance_path.display()))?;
        let solve_start = Instant::now();
        let mut budget = Deadline::new(args.budget_ms, None);
        let mut solver_used = "";
        let decision = adaptor::decide(&now, &current_links(&live), &policy, &mut |p| {
            let (solution, used) = solve(args, p, &mut budget);
            solver_used = used;
            solution
        })
        .context("building the adaptation problem")?;
        let solve_ms = solve_start.elapsed().as_secs_f64() * 1e3;
        let apply_start = Instant::now();
        let (verdict, actions) = if !decision.apply {
            (Verdict::Kept, vec![])
        } else if args.dry_run {
            (Verdict::WouldApply, vec![])
        } else {
            apply(args, scene, &decision.plan, reservations.as_mut())
        };
        let record = DecisionRecord {
            unix_ms: vnet_lab::sys::unix_ms(),
            trigger,
            objective_before: decision.before.objective,
            objective_after: decision.after.objective,
            migration_cost: decision.after.migration_cost,
            feasible_after: decision.after.feasible,
            solver: solver_used.to_string(),
            margin: decision.margin,
            verdict,
            plan: summary(&decision.plan),
            actions,
            solve_ms,
            apply_ms: apply_start.elapsed().as_secs_f64() * 1e3,
        };
        eprintln!(
            "vadapt: {}: {:?}, objective {:.1} -> {:.1} (margin {:.1})",
            record.trigger, record.verdict, record.objective_before, record.objective_after, record.margin
        );
        for a in &record.actions {
            eprintln!("vadapt:   {a}");
        }
        writeln!(log, "{}", serde_json::to_string(&record)?).context("writing the decision log")?;
        if verdict == Verdict::Applied {
            status.current = Some(record.plan.clone());
        }
        status.push_decision(record);
        // What the next observation is compared with: the configuration now in force.
        let live = scene.fleet.live()?;
        decided_on = Some(instance(args, &live, scene, &status.host_graph, &view));
        decided_at = Some(Instant::now());
        status.phase = AdaptorPhase::Observing;
        status.updated_unix_ms = vnet_lab::sys::unix_ms();
        vadapt_service::status_file::write(status, status_path)?;
        if args.once {
            break;
        }
    }
    Ok(())
}

/// Applies a decided plan: migrations first (each through the hook; a failed one leaves
/// its VM where it is), then links and rules, then reservations. Returns the verdict and
/// one line per action.
fn apply(
    args: &RunArgs,
    scene: &Scene,
    plan: &Plan,
    reservations: Option<&mut Box<dyn vadapt::reserve::ReservationBackend>>,
) -> (Verdict, Vec<String>) {
    let mut actions = Vec::new();
    let mut failed = false;
    for m in &plan.migrations {
        let started = Instant::now();
        match crate::migrate::migrate(args, &scene.fleet, scene.lab.as_deref(), &scene.macs, m) {
            Ok(()) => actions.push(format!(
                "migrate {} {} -> {}: done in {:.0} ms",
                m.vm,
                m.from,
                m.to,
                started.elapsed().as_secs_f64() * 1e3
            )),
            Err(e) => {
                failed = true;
                actions.push(format!(
                    "migrate {} {} -> {}: FAILED, stays: {e:#}",
                    m.vm, m.from, m.to
                ));
            }
        }
    }
    let overlay_result = scene.fleet.live().and_then(|live| {
        let planned = overlay::target(&live, &scene.base_links, &scene.hub, plan, &scene.macs)?;
        let report = vnet_lab::fleet::apply(&scene.fleet, &planned.overlay)?;
        Ok((planned.skipped, report))
    });
    match overlay_result {
        Ok((skipped, report)) => {
            let links = report
                .primitives
                .iter()
                .filter(|p| matches!(p.item, lang::Item::Link(_)))
                .count();
            let rules = report.primitives.len() - links;
            actions.push(format!(
                "overlay: {links} link and {rules} rule changes in {} replaces, {:.0} ms",
                report.replaces,
                report.seconds * 1e3
            ));
            for s in skipped {
                actions.push(format!("route left to the base rules: {s}"));
            }
        }
        Err(e) => {
            failed = true;
            actions.push(format!("overlay: FAILED: {e:#}"));
        }
    }
    if let Some(backend) = reservations {
        match crate::reserve::apply(backend.as_mut(), plan) {
            Ok(line) => actions.push(line),
            Err(e) => {
                failed = true;
                actions.push(format!("reservations: FAILED: {e:#}"));
            }
        }
    }
    let verdict = if failed { Verdict::Failed } else { Verdict::Applied };
    (verdict, actions)
}

/// Applies `plan` once to the daemons `args` name (`vadapt apply`): migrations, links and
/// rules, reservations, as a decision would. Returns the actions; fails if one failed.
pub fn apply_plan(args: &RunArgs, plan: &Plan) -> Result<Vec<String>> {
    let scene = Scene::new(args)?;
    let mut reservations = crate::reserve::backend(args, scene.lab.as_deref())?;
    let (verdict, actions) = apply(args, &scene, plan, reservations.as_mut());
    if verdict == Verdict::Failed {
        bail!("applying the plan failed: {}", actions.join("; "));
    }
    Ok(actions)
}
