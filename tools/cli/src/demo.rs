//! `vnet demo`: an unmodified application in VMs runs faster because the overlay adapts to
//! it by itself (seeds/004 §1, §6, §9).
//!
//! The demo builds a lab whose hosts differ (the proxy h0 and the hosts of vm0 and vm1 have
//! slow uplinks, the hosts of vm2 and vm3 fast ones), joined by the resilient star over
//! TCP, so every frame between VMs crosses the slow proxy. It runs the Patterns workload
//! (a BSP neighbour exchange) and measures its throughput on the star; starts the adaptor
//! (`vadapt run --lab NAME`), which measures the host graph, infers the application's
//! topology with VTTIF while the workload runs again, and migrates VMs, adds fast-path
//! links and rules, and reserves bandwidth as its solver decides; then measures the
//! workload on the adapted overlay. It prints what the adaptor did as it happens, draws
//! the overlay before and after (SVG), and reports both throughputs and the speedup.
//!
//! Progress goes to stderr with the seconds since the start; the report to stdout (text,
//! or JSON with `--json`). The demo cleans up after itself (adaptor stopped, lab down) on
//! success, on error and on Ctrl-C: every wait checks the Ctrl-C flag.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;

use vnet_client::Client;

use crate::topo::draw::{render, Format};
use vadapt::status::{AdaptorPhase, DecisionRecord, Status, Verdict};
use vadapt_service::status_file;
use vnet_lab::fleet::Daemons;
use vnet_lab::lab_status_path;
use vnet_lab::patterns::{self, PatternsArgs};
use vnet_lab::sys::{signal, Signal};
use vnet_lab::{self as lab, LabInfo, UpArgs, Uplink};

/// Hosts of the demo lab, the proxy h0 included.
const HOSTS: usize = 5;
/// VMs of the demo lab; the lab places vm{j} on h{j+1}.
const VMS: usize = 4;
/// Uplink rates: the proxy and the hosts of vm0 and vm1 slow, those of vm2 and vm3 fast.
/// On the star all traffic between VMs crosses h0's uplink twice (in and out), so the
/// star is the bottleneck; direct links take it off the proxy, and moving vm0 and vm1
/// off their slow hosts takes the rest of the slow uplinks out of the way.
const UPLINKS: [&str; HOSTS] = ["h0=20mbit", "h1=20mbit", "h2=20mbit", "h3=1gbit", "h4=1gbit"];
/// Patterns' compute/communicate ratio in the demo: pure communication, so the figure is
/// the network's. (With a positive ratio each compute phase copies the last communication
/// phase, which includes waiting for neighbours, and the ranks' delays feed on each
/// other.)
const RATIO: f64 = 0.0;
/// How long one run of the workload lasts while the adaptor observes and adapts: short, so
/// that runs complete (and show the throughput) while VTTIF settles and a run broken by a
/// migration costs little; the gaps between runs are far shorter than VTTIF's smoothing.
const ADAPT_RUN: f64 = 2.0;
/// How long the adaptor may take to measure the host graph.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the adaptor may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Pause before running the workload again after a broken run.
const BROKEN_RUN_PAUSE: Duration = Duration::from_millis(500);
/// Poll interval of the demo's waits.
const POLL: Duration = Duration::from_millis(100);
/// Log lines quoted in an error about the adaptor.
const LOG_TAIL: usize = 30;

/// Options of `vnet demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Lab name (namespaces NAME-h0, NAME-vm0, ...).
    #[arg(long, default_value = "demo")]
    name: String,
    /// Leave the lab running at the end (remove it with `vnet lab down --name NAME`); the
    /// adaptor is stopped either way.
    #[arg(long)]
    keep: bool,
    /// Print the report as JSON (throughputs, speedup, decisions, file paths) on stdout.
    #[arg(long)]
    json: bool,
    /// Where to write the pictures of the overlay (before.svg, after.svg) and the
    /// adaptor's log (adapt.log); default /tmp/vnet-demo-NAME.
    #[arg(long, value_name = "DIR")]
    svg_dir: Option<PathBuf>,
    /// Seconds of each measured run of the workload (before and after adapting).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The workload's communication topology, as `vnet patterns --topology` takes it
    /// (ring, all-to-all, mesh:2x2, hypercube, tree, ...), over the lab's 4 VMs.
    #[arg(long, default_value = "ring")]
    topology: String,
    /// Seconds the adaptor may take, once it has measured, to apply a decision.
    #[arg(long, default_value_t = 60.0)]
    adapt_timeout: f64,
    /// The adaptor binary (default: `vadapt` next to this program).
    #[arg(long, env = "VADAPT_BIN")]
    vadapt: Option<PathBuf>,
}

/// Connects to one daemon's control socket.
fn connect(control: &Path) -> Result<Client> {
    Client::unix(control).with_context(|| format!("cannot reach vnetd at {}", control.display()))
}

/// The demo's report: what `--json` prints.
#[derive(Serialize, Debug)]
struct Report {
    /// Lab name.
    lab: String,
    /// Uplink of each host (`hI=RATE`).
    uplinks: Vec<String>,
    /// The workload: Patterns' topology.
    topology: String,
    /// Seconds of each measured run.
    seconds: f64,
    /// Iterations per second on the star (mean over ranks).
    throughput_before: f64,
    /// Iterations per second of the runs while the adaptor observed and adapted (runs a
    /// migration broke are left out).
    throughput_during: Vec<f64>,
    /// Iterations per second on the adapted overlay.
    throughput_after: f64,
    /// `throughput_after / throughput_before`.
    speedup: f64,
    /// Bytes through the proxy h0 during the run before adapting.
    proxy_bytes_before: u64,
    /// Bytes through the proxy h0 during the run after adapting.
    proxy_bytes_after: u64,
    /// VM → host before adapting.
    placement_before: BTreeMap<String, String>,
    /// VM → host after adapting.
    placement_after: BTreeMap<String, String>,
    /// The application topology VTTIF inferred (as the adaptor saw it last).
    inferred_topology: Option<vttif::AppTopology>,
    /// The adaptor's decisions, oldest first, with what it did.
    decisions: Vec<DecisionRecord>,
    /// The adaptor's PID (stopped by now).
    adaptor_pid: u32,
    /// The overlay before adapting.
    svg_before: PathBuf,
    /// The overlay after adapting.
    svg_after: PathBuf,
    /// The adaptor's stdout and stderr.
    adaptor_log: PathBuf,
    /// Seconds the demo took, up to the report (teardown excluded).
    elapsed_s: f64,
}

/// Progress lines on stderr, stamped with the seconds since the start, and the Ctrl-C flag
/// every wait checks.
struct Progress {
    start: Instant,
    stop: Arc<AtomicBool>,
}

impl Progress {
    fn say(&self, what: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        let mut lines = what.as_ref().lines();
        eprintln!("[{t:6.1}s] {}", lines.next().unwrap_or(""));
        for l in lines {
            eprintln!("          {l}");
        }
    }

    /// Fails if Ctrl-C (SIGINT) or SIGTERM has arrived.
    fn check(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted: cleaning up (adaptor stopped, lab torn down unless --keep)");
        }
        Ok(())
    }

    /// `e`, or the interruption that explains it (an interrupted workload fails too).
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        match self.check() {
            Err(interrupted) => interrupted,
            Ok(()) => e,
        }
    }
}

/// Removes the lab when dropped (unless kept), so an error, a Ctrl-C or a panic midway
/// leaves nothing behind.
struct LabGuard<'a> {
    name: &'a str,
    keep: bool,
}

impl LabGuard<'_> {
    /// Tears the lab down (unless kept) and reports a failure to do so.
    fn finish(mut self) -> Result<()> {
        let keep = std::mem::replace(&mut self.keep, true);
        if keep {
            return Ok(());
        }
        lab::down(self.name)
    }
}

impl Drop for LabGuard<'_> {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = lab::down(self.name) {
                eprintln!("vnet demo: tearing the lab down failed: {e:#}");
            }
        }
    }
}

/// The adaptor process: SIGTERM by PID and reaped when stopped or dropped.
struct Adaptor {
    child: Child,
    log: PathBuf,
    status: PathBuf,
}

impl Adaptor {
    fn start(bin: &Path, lab: &str, log: &Path) -> Result<Adaptor> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(["run", "--lab", lab])
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("duplicating the log file")?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("{} run --lab {lab}: cannot start", bin.display()))?;
        Ok(Adaptor {
            child,
            log: log.to_path_buf(),
            status: lab_status_path(lab),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its status, if it has written one.
    fn status(&self) -> Option<Status> {
        status_file::read(&self.status).ok()
    }

    /// Fails, with its log and status, if it has exited.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait().context("checking on the adaptor")? {
            None => Ok(()),
            Some(code) => Err(anyhow!("the adaptor exited ({code})\n{}", self.account())),
        }
    }

    /// The end of its log and its status, for error messages.
    fn account(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let mut s = format!(
            "last lines of {}:\n{}\n",
            self.log.display(),
            lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
        );
        match status_file::read(&self.status) {
            Ok(st) => s += &format!("status ({}):\n{}", self.status.display(), st.text(5)),
            Err(e) => s += &format!("no status: {e:#}"),
        }
        s
    }

    /// SIGTERM, then waits up to [`STOP_GRACE`]; kills it if it is still there.
    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        signal(self.pid(), Signal::Term);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        self.child.kill().context("killing the adaptor")?;
        self.child.wait().context("reaping the adaptor")?;
        bail!(
            "the adaptor did not stop within {}s of SIGTERM and was killed",
            STOP_GRACE.as_secs()
        )
    }
}

impl Drop for Adaptor {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("vnet demo: stopping the adaptor: {e:#}");
        }
    }
}

/// The adaptor binary: the one named, else `vadapt` next to this program.
fn find_vadapt(named: Option<&Path>) -> Result<PathBuf> {
    let path = match named {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .context("cannot find this program's path")?
            .with_file_name("vadapt"),
    };
    if !path.is_file() {
        bail!(
            "the adaptor {} does not exist: build it with `cargo build --release -p vadapt-service` \
             (tools/scripts/vnet does), or name it with --vadapt PATH",
            path.display()
        );
    }
    Ok(path)
}

/// The demo lab's options.
fn lab_args(name: &str) -> Result<UpArgs> {
    let mut up = UpArgs::new(name, HOSTS, VMS);
    up.uplinks = UPLINKS
        .iter()
        .map(|u| u.parse::<Uplink>())
        .collect::<Result<_>>()?;
    Ok(up)
}

fn placement(name: &str) -> Result<BTreeMap<String, String>> {
    Ok(lab::info(name)?
        .vms
        .into_iter()
        .map(|v| (v.name, v.host))
        .collect())
}

fn placement_text(p: &BTreeMap<String, String>) -> String {
    p.iter()
        .map(|(v, h)| format!("{v}@{h}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes the proxy h0 has received on all its links so far.
fn proxy_bytes(info: &LabInfo) -> Result<u64> {
    let s = connect(&info.hosts[0].control)?.stats()?;
    Ok(s.links.iter().map(|(_, c)| c.rx_bytes).sum())
}

/// Draws the lab's live overlay (links with state and counters, VMs) as SVG into `path`.
fn write_svg(lab: &str, path: &Path) -> Result<()> {
    let fleet = Daemons {
        lab: Some(lab.to_string()),
        hosts: None,
    }
    .fleet(None)?;
    let svg = render(Format::Svg, &fleet.live()?, &fleet.link_status()?)?;
    fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// One run of the workload, measured: throughput and the bytes through the proxy.
fn measured_run(p: &Progress, info: &LabInfo, args: &PatternsArgs, what: &str) -> Result<(f64, u64)> {
    p.say(format!("running the application {what}"));
    let proxy = proxy_bytes(info)?;
    let reports = patterns::run_lab_until(args, &p.stop).map_err(|e| p.explain(e))?;
    let proxy = proxy_bytes(info)?.saturating_sub(proxy);
    let t = patterns::throughput(&reports);
    p.say(format!(
        "{what}: {t:.2} iterations/s; {:.1} MB through the proxy",
        proxy as f64 / 1e6
    ));
    Ok((t, proxy))
}

/// The host graph as a matrix of Mbit/s.
fn host_graph_text(st: &Status) -> String {
    let mut hosts: Vec<&str> = st
        .host_graph
        .iter()
        .flat_map(|l| [l.from.as_str(), l.to.as_str()])
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut s = format!("{:>8}", "Mbit/s");
    for h in &hosts {
        let _ = write!(s, "{h:>8}");
    }
    for from in &hosts {
        let _ = write!(s, "\n{from:>8}");
        for to in &hosts {
            match st.host_graph.iter().find(|l| l.from == *from && l.to == *to) {
                Some(l) => {
                    let _ = write!(s, "{:>8.1}", l.mbps);
                }
                None => s += "       -",
            }
        }
    }
    s
}

fn topology_text(t: &vttif::AppTopology) -> String {
    let edges: Vec<String> = t.edges.iter().map(|e| format!("{}-{}", e.a, e.b)).collect();
    format!(
        "{} ({} VMs): {}",
        t.shape.as_deref().unwrap_or("unrecognised shape"),
        t.nodes.len(),
        edges.join(" ")
    )
}

/// Waits until the adaptor has measured the host graph (its phase is past `measuring`).
fn wait_measured(p: &Progress, adaptor: &mut Adaptor) -> Result<Status> {
    let deadline = Instant::now() + MEASURE_TIMEOUT;
    let mut said = Instant::now();
    loop {
        p.check()?;
        adaptor.check_running()?;
        if let Some(st) = adaptor.status() {
            if st.phase != AdaptorPhase::Measuring && !st.host_graph.is_empty() {
                return Ok(st);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the adaptor did not measure the host graph within {}s\n{}",
                MEASURE_TIMEOUT.as_secs(),
                adaptor.account()
            );
        }
        if said.elapsed() >= Duration::from_secs(5) {
            p.say("  ... the adaptor is still measuring");
            said = Instant::now();
        }
        std::thread::sleep(POLL);
    }
}

/// What the adaptation phase saw.
struct Adapted {
    /// Throughput of each whole run during the phase.
    during: Vec<f64>,
}

/// Runs the workload again and again while the adaptor observes and adapts, printing the
/// topology VTTIF infers and every decision as it appears, until a decision is applied.
fn adapt(p: &Progress, adaptor: &mut Adaptor, args: &PatternsArgs, timeout: Duration) -> Result<Adapted> {
    // Decisions are told apart by their time stamps: the status keeps only the last ones.
    let known = adaptor
        .status()
        .and_then(|s| s.decisions.iter().map(|d| d.unix_ms).max())
        .unwrap_or(0);
    // Set when the workload must stop: a decision applied, a failure, or Ctrl-C.
    let halt = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Result<f64>>();
    let run_args = args.clone();
    std::thread::scope(|scope| {
        let workload = scope.spawn(|| {
            let tx = tx;
            while !halt.load(Ordering::Relaxed) {
                let r = patterns::run_lab_until(&run_args, &halt).map(|r| patterns::throughput(&r));
                let broke = r.is_err();
                if tx.send(r).is_err() {
                    break;
                }
                if broke {
                    // A run that fails at once (its port still taken, a VM's NIC moving)
                    // is retried at a modest pace rather than in a tight loop.
                    std::thread::sleep(BROKEN_RUN_PAUSE);
                }
            }
        });
        let result = watch(p, adaptor, known, &rx, timeout, &halt);
        halt.store(true, Ordering::Relaxed);
        let _ = workload.join();
        result
    })
}

/// The watching half of [`adapt`]: polls the adaptor's status and the workload's results.
fn watch(
    p: &Progress,
    adaptor: &mut Adaptor,
    mut seen: u128,
    runs: &mpsc::Receiver<Result<f64>>,
    timeout: Duration,
    halt: &AtomicBool,
) -> Result<Adapted> {
    let deadline = Instant::now() + timeout;
    let mut during = Vec::new();
    let mut seen_topology: Option<String> = None;
    let mut phase = None;
    // A run that breaks the same way as the one before is not told again.
    let mut last_break = String::new();
    loop {
        if p.stop.load(Ordering::Relaxed) {
            halt.store(true, Ordering::Relaxed);
        }
        p.check()?;
        adaptor.check_running()?;
        while let Ok(run) = runs.try_recv() {
            match run {
                Ok(t) => {
                    p.say(format!("  application while adapting: {t:.2} iterations/s"));
                    during.push(t);
                }
                Err(e) if !halt.load(Ordering::Relaxed) => {
                    let text = format!("{e:#}");
                    if text != last_break {
                        p.say(format!("  a run of the application broke (a migration?): {text}"));
                        last_break = text;
                    }
                }
                Err(_) => {}
            }
        }
        if let Some(st) = adaptor.status() {
            if phase != Some(st.phase) {
                p.say(format!("adaptor: {:?}", st.phase).to_lowercase());
                phase = Some(st.phase);
            }
            // Said when the edges or the shape change, not when only their weights do.
            if let Some(t) = &st.topology {
                let text = topology_text(t);
                if !t.edges.is_empty() && seen_topology.as_ref() != Some(&text) {
                    p.say(format!("VTTIF infers {text}"));
                    seen_topology = Some(text);
                }
            }
            let mut applied = false;
            let since = seen;
            for d in st.decisions.iter().filter(|d| d.unix_ms > since) {
                p.say(d.text());
                match d.verdict {
                    Verdict::Applied => applied = true,
                    Verdict::Failed => bail!("the adaptor failed to apply its plan\n{}", adaptor.account()),
                    Verdict::Kept | Verdict::WouldApply => {}
                }
                seen = seen.max(d.unix_ms);
            }
            if applied {
                return Ok(Adapted { during });
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the adaptor applied no decision within {}s of measuring\n{}",
                timeout.as_secs(),
                adaptor.account()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Runs the demo. Installs SIGINT and SIGTERM handlers for the rest of the process's life:
/// the first asks for a clean stop, a second exits at once.
pub fn run(args: DemoArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C exits at once (the first one asked for a clean stop).
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("installing the Ctrl-C handler")?;
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing the Ctrl-C handler")?;
    }
    let p = Progress {
        start: Instant::now(),
        stop,
    };
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    if !(args.adapt_timeout > 0.0 && args.adapt_timeout <= 3600.0) {
        bail!("--adapt-timeout must be in (0, 3600]");
    }
    patterns::check_topology(&args.topology, VMS)
        .with_context(|| format!("--topology {}: the demo runs {VMS} VMs", args.topology))?;
    let vadapt = find_vadapt(args.vadapt.as_deref())?;
    let dir = args
        .svg_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vnet-demo-{}", args.name)));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (svg_before, svg_after, log) = (
        dir.join("before.svg"),
        dir.join("after.svg"),
        dir.join("adapt.log"),
    );

    p.say(format!(
        "building lab `{}`: {HOSTS} hosts (h0 is the proxy), {VMS} VMs, star over TCP, uplinks {}",
        args.name,
        UPLINKS.join(" ")
    ));
    let info = lab::up(&lab_args(&args.name)?)?;
    let guard = LabGuard {
        name: &args.name,
        keep: args.keep,
    };
    p.check()?;
    let placement_before = placement(&args.name)?;
    p.say(format!("VMs placed: {}", placement_text(&placement_before)));
    let work = PatternsArgs::new(&args.name, &args.topology, args.seconds).ratio(RATIO);
    let app = patterns::app_topology(&work)?;
    p.say(format!(
        "the application: Patterns on {} with {} KiB messages; it talks {}",
        args.topology,
        patterns::DEFAULT_SIZE / 1024,
        topology_text(&app)
    ));

    let (throughput_before, proxy_bytes_before) = measured_run(&p, &info, &work, "on the star")?;
    write_svg(&args.name, &svg_before)?;
    p.say(format!("overlay before: {}", svg_before.display()));

    p.say(format!(
        "starting the adaptor: {} run --lab {}",
        vadapt.display(),
        args.name
    ));
    let mut adaptor = Adaptor::start(&vadapt, &args.name, &log)?;
    let measured = wait_measured(&p, &mut adaptor)?;
    p.say(format!(
        "adaptor measured the host graph:\n{}",
        host_graph_text(&measured)
    ));
    p.say(format!(
        "running the application in {ADAPT_RUN} s runs while the adaptor observes and adapts"
    ));
    let adapt_runs = PatternsArgs::new(&args.name, &args.topology, ADAPT_RUN).ratio(RATIO);
    let adapted = adapt(
        &p,
        &mut adaptor,
        &adapt_runs,
        Duration::from_secs_f64(args.adapt_timeout),
    )?;

    let (throughput_after, proxy_bytes_after) = measured_run(&p, &info, &work, "on the adapted overlay")?;
    write_svg(&args.name, &svg_after)?;
    p.say(format!("overlay after: {}", svg_after.display()));
    let placement_after = placement(&args.name)?;
    p.say("stopping the adaptor");
    adaptor.stop()?;
    let status = adaptor
        .status()
        .with_context(|| format!("the adaptor's status is gone\n{}", adaptor.account()))?;
    let report = Report {
        lab: args.name.clone(),
        uplinks: UPLINKS.iter().map(|u| u.to_string()).collect(),
        topology: args.topology.clone(),
        seconds: args.seconds,
        throughput_before,
        throughput_during: adapted.during,
        throughput_after,
        speedup: if throughput_before > 0.0 {
            throughput_after / throughput_before
        } else {
            0.0
        },
        proxy_bytes_before,
        proxy_bytes_after,
        placement_before,
        placement_after,
        inferred_topology: status.topology.clone(),
        decisions: status.decisions.clone(),
        adaptor_pid: adaptor.pid(),
        svg_before,
        svg_after,
        adaptor_log: log,
        elapsed_s: p.start.elapsed().as_secs_f64(),
    };
    drop(adaptor);
    if args.keep {
        p.say(format!(
            "lab `{}` left running; remove it with: vnet lab down --name {}",
            args.name, args.name
        ));
    } else {
        p.say("tearing the lab down");
    }
    guard.finish()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report_text(&report));
    }
    Ok(())
}

/// The human report.
fn report_text(r: &Report) -> String {
    let mut s = String::from("\n== vnet demo: the overlay adapted itself to the application ==\n");
    let _ = writeln!(
        s,
        "lab `{}`: uplinks {}; star over TCP around the proxy h0",
        r.lab,
        r.uplinks.join(" ")
    );
    let _ = writeln!(
        s,
        "application: Patterns on {}, {} s per measured run",
        r.topology, r.seconds
    );
    if let Some(t) = &r.inferred_topology {
        let _ = writeln!(s, "VTTIF inferred: {}", topology_text(t));
    }
    let _ = writeln!(
        s,
        "\n  before (star)     {:>8.2} iterations/s   {:>7.1} MB through the proxy",
        r.throughput_before,
        r.proxy_bytes_before as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "  after (adapted)   {:>8.2} iterations/s   {:>7.1} MB through the proxy",
        r.throughput_after,
        r.proxy_bytes_after as f64 / 1e6
    );
    let _ = writeln!(s, "  speedup           {:>8.2}x", r.speedup);
    let _ = writeln!(s, "\nwhat the adaptor did:");
    for d in &r.decisions {
        for line in d.text().lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    let _ = writeln!(
        s,
        "placement: before {}; after {}",
        placement_text(&r.placement_before),
        placement_text(&r.placement_after)
    );
    let _ = writeln!(
        s,
        "pictures: {} and {}; adaptor log: {}",
        r.svg_before.display(),
        r.svg_after.display(),
        r.adaptor_log.display()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use vadapt::status::{MeasuredLink, PlanSummary};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: DemoArgs,
    }

    #[test]
    fn the_lab_is_valid_and_puts_vm0_and_vm1_on_slow_hosts() {
        let up = lab_args("dm0").unwrap();
        assert_eq!((up.hosts, up.vms, up.uplinks.len()), (HOSTS, VMS, HOSTS));
        let rate = |h: usize| {
            up.uplinks
                .iter()
                .find(|u| u.host == h)
                .unwrap()
                .rate
                .bits_per_sec()
        };
        // vm{j} lives on h{j+1}: vm0 and vm1 on slow hosts, vm2 and vm3 on fast ones.
        assert!(rate(0) == rate(1) && rate(1) == rate(2));
        assert!(rate(3) >= 10 * rate(1) && rate(4) >= 10 * rate(1));
        let a = Cli::try_parse_from(["demo"]).unwrap().a;
        patterns::check_topology(&a.topology, VMS).unwrap();
        assert_eq!(
            (a.name.as_str(), a.seconds, a.keep, a.json),
            ("demo", 5.0, false, false)
        );
    }

    #[test]
    fn a_missing_adaptor_says_how_to_build_it() {
        let e = find_vadapt(Some(Path::new("/nonexistent/vadapt"))).unwrap_err();
        assert!(
            format!("{e:#}").contains("cargo build --release -p vadapt-service"),
            "{e:#}"
        );
        assert_eq!(
            find_vadapt(Some(Path::new("/bin/sh"))).unwrap(),
            Path::new("/bin/sh")
        );
    }

    fn decision() -> DecisionRecord {
        DecisionRecord {
            unix_ms: 1,
            trigger: "first observation".into(),
            objective_before: 40.0,
            objective_after: 1900.0,
            migration_cost: 5.0,
            feasible_after: true,
            solver: "exact".into(),
            margin: 0.1,
            verdict: Verdict::Applied,
            plan: PlanSummary::default(),
            actions: vec!["migrate vm0 h1->h3: ok".into(), "link h3-h4: up".into()],
            solve_ms: 3.0,
            apply_ms: 900.0,
        }
    }

    #[test]
    fn texts_show_the_host_graph_topology_and_decisions() {
        let mut st = Status {
            target: "lab dm0".into(),
            pid: 1,
            dry_run: false,
            phase: AdaptorPhase::Observing,
            rounds: 0,
            updated_unix_ms: 0,
            host_graph: vec![],
            topology: None,
            current: None,
            decisions: vec![],
            error: None,
        };
        for (from, to, mbps) in [("h0", "h1", 19.0), ("h1", "h0", 18.5), ("h1", "h3", 19.2)] {
            st.host_graph.push(MeasuredLink {
                from: from.into(),
                to: to.into(),
                mbps,
                rtt_ms: 0.2,
            });
        }
        let g = host_graph_text(&st);
        let rows: Vec<&str> = g.lines().collect();
        assert_eq!(rows.len(), 4, "{g}");
        assert!(rows[0].ends_with("h0      h1      h3"), "{g}");
        assert!(rows[1].contains("      -    19.0       -"), "{g}");
        assert!(rows[2].ends_with("18.5       -    19.2"), "{g}");

        let ring = vttif::AppTopology::new(
            [("vm0", "vm1"), ("vm1", "vm2"), ("vm2", "vm3"), ("vm0", "vm3")]
                .iter()
                .map(|(a, b)| vttif::Edge {
                    a: a.to_string(),
                    b: b.to_string(),
                    normalized: 1.0,
                    bytes_per_s: None,
                })
                .collect(),
        );
        assert_eq!(
            topology_text(&ring),
            "ring (4 VMs): vm0-vm1 vm0-vm3 vm1-vm2 vm2-vm3"
        );
        let d = DecisionRecord::text(&decision());
        assert!(
            d.starts_with("decision (first observation): Applied: objective 40.0 -> 1900.0"),
            "{d}"
        );
        assert!(d.ends_with("\n  migrate vm0 h1->h3: ok\n  link h3-h4: up"), "{d}");
    }

    #[test]
    fn the_report_has_the_figures_and_what_was_done() {
        let p = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(v, h)| (v.to_string(), h.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let r = Report {
            lab: "dm0".into(),
            uplinks: UPLINKS.iter().map(|u| u.to_string()).collect(),
            topology: "ring".into(),
            seconds: 5.0,
            throughput_before: 4.0,
            throughput_during: vec![4.1, 9.0],
            throughput_after: 16.0,
            speedup: 4.0,
            proxy_bytes_before: 12_000_000,
            proxy_bytes_after: 0,
            placement_before: p(&[("vm0", "h1"), ("vm1", "h2")]),
            placement_after: p(&[("vm0", "h3"), ("vm1", "h4")]),
            inferred_topology: None,
            decisions: vec![decision()],
            adaptor_pid: 42,
            svg_before: "/tmp/b.svg".into(),
            svg_after: "/tmp/a.svg".into(),
            adaptor_log: "/tmp/adapt.log".into(),
            elapsed_s: 80.0,
        };
        let text = report_text(&r);
        assert!(
            text.contains("before (star)         4.00 iterations/s      12.0 MB"),
            "{text}"
        );
        assert!(text.contains("speedup               4.00x"), "{text}");
        assert!(text.contains("    migrate vm0 h1->h3: ok"), "{text}");
        assert!(
            text.contains("placement: before vm0@h1 vm1@h2; after vm0@h3 vm1@h4"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "throughput_before",
            "throughput_after",
            "speedup",
            "decisions",
            "svg_before",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert_eq!(json["decisions"][0]["verdict"], "applied");
    }
}
