//! `vnet patterns`: a BSP workload like the thesis's Patterns (§9), to run in lab VMs.
//!
//! Each process (rank) alternates a compute phase (a busy loop lasting `ratio` times its
//! last communication phase) and a communication phase over TCP with its neighbours in the
//! chosen topology: a neighbour exchange (every neighbour gets and sends one message) or a
//! reduction (up a spanning tree rooted at rank 0, then the result back down). It reports
//! iterations per second. `--print-topology` prints the VM pairs it uses in the JSON shape
//! of `vnet vttif --json`'s `topology`. Without `--rank`, it launches every rank itself in
//! the lab's VMs and prints their reports.
//!
//! Library callers (the demo, the adaptation benchmark) build a [`PatternsArgs`] with
//! [`PatternsArgs::new`] and its setters and call [`run_lab`], which returns every rank's
//! [`Report`]; [`throughput`] sums them up as one figure.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use vttif::{AppTopology, Edge, KnownShape};

/// How long a rank waits for its neighbours to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often [`run_lab_until`] looks at its ranks and its stop flag.
const RANK_POLL: Duration = Duration::from_millis(50);
/// Default message size, bytes.
pub const DEFAULT_SIZE: usize = 65536;
/// Default compute/communicate ratio.
pub const DEFAULT_RATIO: f64 = 1.0;
/// Default TCP port of the ranks.
pub const DEFAULT_PORT: u16 = 7700;

/// The communication operation of each iteration.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Every rank sends one message to and receives one from each neighbour.
    Exchange,
    /// Messages go up a spanning tree to rank 0, then the result comes back down.
    Reduce,
}

/// `vnet patterns ...`.
#[derive(clap::Args, Debug, Clone)]
pub struct PatternsArgs {
    /// The lab whose VMs run the ranks (VM j is rank j).
    #[arg(long)]
    lab: Option<String>,
    /// Instead of a lab: the ranks' IPv4 addresses, in rank order, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "lab")]
    peers: Vec<Ipv4Addr>,
    /// Use only the first N VMs of the lab.
    #[arg(long)]
    ranks: Option<usize>,
    /// This process's rank; without it, launch every rank in the lab's VMs.
    #[arg(long)]
    rank: Option<usize>,
    /// bus|chain, ring, mesh:AxB..., torus:AxB..., hypercube, tree, all-to-all, star;
    /// `reduction` is `tree` with `--op reduce`.
    #[arg(long, default_value = "ring")]
    topology: String,
    /// Communication operation.
    #[arg(long, value_enum, default_value = "exchange")]
    op: Op,
    /// Message size in bytes.
    #[arg(long, default_value_t = DEFAULT_SIZE)]
    size: usize,
    /// Compute/communicate ratio: each compute phase lasts this many times the previous
    /// communication phase.
    #[arg(long, default_value_t = DEFAULT_RATIO)]
    ratio: f64,
    /// Instead of --ratio: a fixed compute phase of this many milliseconds per iteration
    /// (a real application's computation does not shrink when its network gets faster;
    /// `vadapt evaluate` sets it to the ratio times the star's communication time).
    #[arg(long, conflicts_with = "ratio")]
    compute_ms: Option<f64>,
    /// Iterations to run (0: until --seconds).
    #[arg(long, default_value_t = 0)]
    iterations: u64,
    /// Stop after this many seconds (a rank also stops when a neighbour has stopped).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// TCP port the ranks listen on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Print the VM pairs the workload uses (JSON, like `vnet vttif --json`) and exit.
    #[arg(long)]
    print_topology: bool,
}

impl PatternsArgs {
    /// A run of every rank in lab `lab`'s VMs on `topology` (as `--topology` takes it) for
    /// `seconds`, with the command's defaults for everything else.
    pub fn new(lab: &str, topology: &str, seconds: f64) -> PatternsArgs {
        PatternsArgs {
            lab: Some(lab.to_string()),
            peers: Vec::new(),
            ranks: None,
            rank: None,
            topology: topology.to_string(),
            op: Op::Exchange,
            size: DEFAULT_SIZE,
            ratio: DEFAULT_RATIO,
            compute_ms: None,
            iterations: 0,
            seconds,
            port: DEFAULT_PORT,
            print_topology: false,
        }
    }

    /// The communication operation (`--op`).
    pub fn op(mut self, op: Op) -> PatternsArgs {
        self.op = op;
        self
    }

    /// The message size in bytes (`--size`).
    pub fn size(mut self, bytes: usize) -> PatternsArgs {
        self.size = bytes;
        self
    }

    /// The compute/communicate ratio (`--ratio`).
    pub fn ratio(mut self, ratio: f64) -> PatternsArgs {
        self.ratio = ratio;
        self
    }

    /// A fixed compute phase per iteration, ms (`--compute-ms`).
    pub fn compute_ms(mut self, ms: f64) -> PatternsArgs {
        self.compute_ms = Some(ms);
        self
    }

    /// Use only the first `n` VMs (`--ranks`).
    pub fn ranks(mut self, n: usize) -> PatternsArgs {
        self.ranks = Some(n);
        self
    }

    /// Stop after this many iterations as well as after the seconds (`--iterations`).
    pub fn iterations(mut self, n: u64) -> PatternsArgs {
        self.iterations = n;
        self
    }

    /// The ranks' TCP port (`--port`).
    pub fn port(mut self, port: u16) -> PatternsArgs {
        self.port = port;
        self
    }
}

/// What a rank reports when it ends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Report {
    /// Its rank.
    pub rank: usize,
    /// Iterations completed.
    pub iterations: u64,
    /// Seconds from the first iteration to the last.
    pub seconds: f64,
    /// The application's throughput.
    pub iterations_per_s: f64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Whether it stopped because a neighbour had.
    pub peer_stopped: bool,
}

/// The plan every rank derives alike: names, addresses, and who talks to whom.
struct RankPlan {
    names: Vec<String>,
    addrs: Vec<Ipv4Addr>,
    op: Op,
    /// Undirected edges `(a, b)`, `a < b`.
    edges: Vec<(usize, usize)>,
    /// For a reduction: each rank's parent in the spanning tree rooted at 0.
    parent: Vec<Option<usize>>,
}

impl RankPlan {
    fn new(args: &PatternsArgs) -> Result<RankPlan> {
        let (mut names, mut addrs) = match &args.lab {
            Some(lab) => {
                let info = crate::info(lab)?;
                (
                    info.vms.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
                    info.vms.iter().map(|v| v.ip).collect::<Vec<_>>(),
                )
            }
            None if args.peers.is_empty() => bail!("name the ranks: --lab NAME or --peers IP,IP,..."),
            None => (
                args.peers.iter().map(ToString::to_string).collect(),
                args.peers.clone(),
            ),
        };
        if let Some(n) = args.ranks {
            if n > addrs.len() {
                bail!("--ranks {n}: only {} VMs", addrs.len());
            }
            names.truncate(n);
            addrs.truncate(n);
        }
        let n = addrs.len();
        let (shape, op) = shape_and_op(&args.topology, args.op, n)?;
        let mut edges = shape.edges();
        let parent = spanning_tree(n, &edges);
        if op == Op::Reduce {
            edges = (0..n)
                .filter_map(|v| parent[v].map(|p| (p.min(v), p.max(v))))
                .collect();
            edges.sort_unstable();
        }
        Ok(RankPlan {
            names,
            addrs,
            op,
            edges,
            parent,
        })
    }

    fn topology(&self) -> AppTopology {
        AppTopology::new(
            self.edges
                .iter()
                .map(|&(a, b)| Edge {
                    a: self.names[a].clone(),
                    b: self.names[b].clone(),
                    normalized: 1.0,
                    bytes_per_s: None,
                })
                .collect(),
        )
    }

    fn neighbours(&self, r: usize) -> Vec<usize> {
        self.edges
            .iter()
            .filter_map(|&(a, b)| match (a == r, b == r) {
                (true, _) => Some(b),
                (_, true) => Some(a),
                _ => None,
            })
            .collect()
    }
}

/// The shape and operation `--topology` and `--op` name for `n` ranks (`reduction` is a
/// reduction up a tree).
fn shape_and_op(topology: &str, op: Op, n: usize) -> Result<(KnownShape, Op)> {
    let (text, op) = match topology {
        "reduction" => ("tree", Op::Reduce),
        t => (t, op),
    };
    Ok((KnownShape::parse(text, n)?, op))
}

/// Checks that `topology` (as `--topology` takes it) is a topology of `ranks` ranks,
/// without a lab: callers validate their options before building one.
pub fn check_topology(topology: &str, ranks: usize) -> Result<()> {
    shape_and_op(topology, Op::Exchange, ranks).map(drop)
}

/// Parent of every node in the BFS tree from node 0 over `edges`.
fn spanning_tree(n: usize, edges: &[(usize, usize)]) -> Vec<Option<usize>> {
    let mut parent = vec![None; n];
    let mut seen = vec![false; n];
    let mut queue = VecDeque::from([0usize]);
    seen[0] = true;
    while let Some(v) = queue.pop_front() {
        for &(a, b) in edges {
            let w = match (a == v, b == v) {
                (true, _) => b,
                (_, true) => a,
                _ => continue,
            };
            if !seen[w] {
                seen[w] = true;
                parent[w] = Some(v);
                queue.push_back(w);
            }
        }
    }
    parent
}

/// Runs `vnet patterns`.
pub fn run(args: PatternsArgs) -> Result<()> {
    let plan = RankPlan::new(&args)?;
    if args.print_topology {
        println!("{}", serde_json::to_string_pretty(&plan.topology())?);
        return Ok(());
    }
    let reports = match args.rank {
        Some(rank) => vec![run_rank(&args, &plan, rank)?],
        None => launch(&args, &plan, &AtomicBool::new(false))?,
    };
    for report in reports {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// The pairs of VMs a run of `args` makes talk (VM names), as VTTIF would report them:
/// what `--print-topology` prints.
pub fn app_topology(args: &PatternsArgs) -> Result<AppTopology> {
    Ok(RankPlan::new(args)?.topology())
}

/// Runs every rank in its lab VM (`args` must name a lab) and returns their reports, in
/// rank order. Fails if a rank fails.
pub fn run_lab(args: &PatternsArgs) -> Result<Vec<Report>> {
    run_lab_until(args, &AtomicBool::new(false))
}

/// [`run_lab`], but kills the ranks and fails as soon as `stop` is set (a caller's Ctrl-C
/// flag), so that it never outlives its caller's wish to stop by more than a poll.
pub fn run_lab_until(args: &PatternsArgs, stop: &AtomicBool) -> Result<Vec<Report>> {
    if args.rank.is_some() {
        bail!("run_lab runs every rank: leave the rank unset");
    }
    launch(args, &RankPlan::new(args)?, stop)
}

/// The throughput of a run: the mean of its ranks' iterations per second. (The ranks of a
/// BSP run are coupled through their exchanges, so the mean and the minimum differ by a
/// fraction of an iteration; the mean does not hinge on one rank's start-up.) 0 for no
/// reports.
pub fn throughput(reports: &[Report]) -> f64 {
    if reports.is_empty() {
        return 0.0;
    }
    reports.iter().map(|r| r.iterations_per_s).sum::<f64>() / reports.len() as f64
}

/// Starts every rank in its lab VM and returns their reports; kills them all when `stop`
/// is set.
fn launch(args: &PatternsArgs, plan: &RankPlan, stop: &AtomicBool) -> Result<Vec<Report>> {
    let Some(lab) = &args.lab else {
        bail!("without --lab, start each rank yourself with --rank");
    };
    let info = crate::info(lab)?;
    let exe = own_exe()?;
    let mut children = Vec::new();
    for rank in 0..plan.addrs.len() {
        // Into the VM's namespace and cgroup, so its CPU reservation holds the rank.
        let mut cmd = crate::reserve::machine_command(lab, &info.vms[rank].name);
        cmd.arg(&exe)
            .args(["patterns", "--lab", lab, "--rank", &rank.to_string()])
            .args([
                "--ranks",
                &plan.addrs.len().to_string(),
                "--topology",
                &args.topology,
            ])
            .args([
                "--op",
                if plan.op == Op::Reduce {
                    "reduce"
                } else {
                    "exchange"
                },
            ])
            .args(["--size", &args.size.to_string()])
            .args(if args.compute_ms.is_none() {
                vec!["--ratio".to_string(), args.ratio.to_string()]
            } else {
                vec![]
            })
            .args(["--iterations", &args.iterations.to_string()])
            .args(
                args.compute_ms
                    .map(|ms| ["--compute-ms".to_string(), ms.to_string()])
                    .iter()
                    .flatten(),
            )
            .args([
                "--seconds",
                &args.seconds.to_string(),
                "--port",
                &args.port.to_string(),
            ])
            .stdout(Stdio::piped());
        children.push(Rank(cmd.spawn().context("cannot start a rank (ip netns exec)")?));
    }
    // Each rank prints one short JSON line, far less than a pipe holds, so polling for
    // exits before reading their output cannot dead-lock.
    loop {
        if stop.load(Ordering::Relaxed) {
            // Dropping the ranks kills them.
            bail!("interrupted: the ranks are stopped");
        }
        let mut running = false;
        for r in &mut children {
            running |= r.0.try_wait().context("checking on a rank")?.is_none();
        }
        if !running {
            break;
        }
        std::thread::sleep(RANK_POLL);
    }
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for (rank, mut r) in children.into_iter().enumerate() {
        let mut out = String::new();
        if let Some(mut stdout) = r.0.stdout.take() {
            stdout
                .read_to_string(&mut out)
                .context("reading a rank's report")?;
        }
        let status = r.0.wait().context("rank lost")?;
        match serde_json::from_str::<Report>(out.trim()) {
            Ok(report) if status.success() => reports.push(report),
            _ => failed.push(format!("rank {rank} ({status})")),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} ranks failed: {}",
            failed.len(),
            plan.addrs.len(),
            failed.join(", ")
        );
    }
    Ok(reports)
}

/// This program's path, for the ranks to run. A binary replaced while it runs (a rebuild)
/// shows as `PATH (deleted)`; the ranks then run the program now at PATH.
fn own_exe() -> Result<std::path::PathBuf> {
    // Not current_exe: the vadapt binary runs workloads too.
    let exe = crate::sys::sibling_binary("vnet")?;
    Ok(match exe.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(path) => path.into(),
        None => exe,
    })
}

/// A launched rank: killed and reaped when dropped before it has exited (an interrupted
/// or failed launch leaves no rank running).
struct Rank(Child);

impl Drop for Rank {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Connects rank `rank` to its neighbours: the higher rank of each pair dials.
fn connect(plan: &RankPlan, rank: usize, port: u16) -> Result<Vec<(usize, TcpStream)>> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .with_context(|| format!("cannot listen on port {port}"))?;
    let neighbours = plan.neighbours(rank);
    let mut conns = Vec::new();
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    for &peer in neighbours.iter().filter(|p| **p < rank) {
        let addr = SocketAddr::from((plan.addrs[peer], port));
        let mut s = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("cannot reach rank {peer} at {addr}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        s.write_all(&(rank as u32).to_be_bytes())?;
        conns.push((peer, s));
    }
    let expect = neighbours.iter().filter(|p| **p > rank).count();
    listener.set_nonblocking(true)?;
    while conns.len() < neighbours.len() {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false)?;
                let mut id = [0u8; 4];
                s.read_exact(&mut id)?;
                let peer = u32::from_be_bytes(id) as usize;
                if !neighbours.contains(&peer) || peer <= rank {
                    bail!("rank {peer} connected, but it is not a higher neighbour of rank {rank}");
                }
                conns.push((peer, s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!("only {} of {expect} higher neighbours connected", conns.len());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
    for (_, s) in &conns {
        s.set_nodelay(true)?;
    }
    Ok(conns)
}

/// Sends `buf` to every stream in `to` while reading one message from every stream in
/// `from`. Returns false when a peer has closed.
fn communicate(to: &[&TcpStream], from: &[&TcpStream], buf: &[u8]) -> bool {
    std::thread::scope(|s| {
        let writers: Vec<_> = to
            .iter()
            .copied()
            .map(|mut t| s.spawn(move || t.write_all(buf).is_ok()))
            .collect();
        let mut ok = true;
        let mut inbox = vec![0u8; buf.len()];
        for mut f in from.iter().copied() {
            ok &= f.read_exact(&mut inbox).is_ok();
        }
        writers
            .into_iter()
            .fold(ok, |ok, w| w.join().unwrap_or(false) && ok)
    })
}

fn run_rank(args: &PatternsArgs, plan: &RankPlan, rank: usize) -> Result<Report> {
    if rank >= plan.addrs.len() {
        bail!("rank {rank} of {} ranks", plan.addrs.len());
    }
    let conns = connect(plan, rank, args.port)?;
    let by = |pred: &dyn Fn(usize) -> bool| -> Vec<&TcpStream> {
        conns.iter().filter(|(p, _)| pred(*p)).map(|(_, s)| s).collect()
    };
    let all = by(&|_| true);
    let parent = by(&|p| plan.parent[rank] == Some(p));
    let children = by(&|p| plan.parent[p] == Some(rank));
    let buf = vec![0x5au8; args.size];
    let limit = Duration::from_secs_f64(args.seconds.max(0.0));
    let start = Instant::now();
    let (mut iterations, mut bytes_sent, mut peer_stopped) = (0u64, 0u64, false);
    let mut last_comm = Duration::ZERO;
    while (args.iterations == 0 || iterations < args.iterations) && start.elapsed() < limit {
        let compute = match args.compute_ms {
            Some(ms) => Duration::from_secs_f64(ms.max(0.0) / 1e3),
            None => last_comm.mul_f64(args.ratio.max(0.0)),
        };
        let compute_until = Instant::now() + compute;
        let mut x = 0u64;
        while Instant::now() < compute_until {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let t = Instant::now();
        let ok = match plan.op {
            Op::Exchange => {
                bytes_sent += (all.len() * buf.len()) as u64;
                communicate(&all, &all, &buf)
            }
            Op::Reduce => {
                bytes_sent += ((parent.len() + children.len()) * buf.len()) as u64;
                communicate(&[], &children, &buf)
                    && communicate(&parent, &[], &buf)
                    && communicate(&[], &parent, &buf)
                    && communicate(&children, &[], &buf)
            }
        };
        if !ok {
            peer_stopped = true;
            break;
        }
        last_comm = t.elapsed();
        iterations += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Report {
        rank,
        iterations,
        seconds,
        iterations_per_s: if seconds > 0.0 {
            iterations as f64 / seconds
        } else {
            0.0
        },
        bytes_sent,
        peer_stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: PatternsArgs,
    }

    fn plan(args: &[&str]) -> RankPlan {
        let mut v = vec![
            "patterns",
            "--peers",
            "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6",
        ];
        v.extend_from_slice(args);
        RankPlan::new(&Cli::try_parse_from(v).unwrap().a).unwrap()
    }

    #[test]
    fn plans_edges_for_exchange_and_reduction() {
        let p = plan(&["--topology", "ring"]);
        assert_eq!(p.edges.len(), 6);
        assert_eq!(p.neighbours(0), vec![1, 5]);
        let t = p.topology();
        assert_eq!(t.shape.as_deref(), Some("ring"));
        assert!(t
            .pairs()
            .contains(&("10.0.0.1".to_string(), "10.0.0.6".to_string())));
        // A reduction over a mesh uses its BFS spanning tree from rank 0.
        let r = plan(&["--topology", "mesh:2x3", "--op", "reduce"]);
        assert_eq!(r.edges.len(), 5);
        assert!(r
            .edges
            .iter()
            .all(|e| KnownShape::Mesh(vec![3, 2]).edges().contains(e)));
        let red = plan(&["--topology", "reduction"]);
        assert_eq!(red.op, Op::Reduce);
        assert_eq!(red.edges, KnownShape::Tree(6).edges());
    }

    #[test]
    fn library_args_match_the_command_line_defaults() {
        let lib = PatternsArgs::new("t", "all-to-all", 3.0);
        let cli = Cli::try_parse_from([
            "patterns",
            "--lab",
            "t",
            "--topology",
            "all-to-all",
            "--seconds",
            "3",
        ])
        .unwrap()
        .a;
        assert_eq!(format!("{lib:?}"), format!("{cli:?}"));
        let set = lib
            .op(Op::Reduce)
            .size(10)
            .ratio(0.5)
            .ranks(4)
            .iterations(9)
            .port(7800);
        assert_eq!(
            (set.op, set.size, set.ratio, set.ranks, set.iterations, set.port),
            (Op::Reduce, 10, 0.5, Some(4), 9, 7800)
        );
        let e = run_lab(&PatternsArgs { rank: Some(0), ..set })
            .unwrap_err()
            .to_string();
        assert!(e.contains("leave the rank unset"), "{e}");
    }

    #[test]
    fn checks_topologies_without_a_lab() {
        check_topology("ring", 4).unwrap();
        check_topology("reduction", 5).unwrap();
        assert!(check_topology("hypercube", 6).is_err());
        assert!(check_topology("pentagram", 4).is_err());
    }

    #[test]
    fn throughput_is_the_mean_over_ranks() {
        let r = |rank, ips| Report {
            rank,
            iterations: 1,
            seconds: 1.0,
            iterations_per_s: ips,
            bytes_sent: 0,
            peer_stopped: false,
        };
        assert_eq!(throughput(&[]), 0.0);
        assert_eq!(throughput(&[r(0, 2.0), r(1, 4.0)]), 3.0);
    }

    #[test]
    fn bad_topologies_are_errors() {
        let args = Cli::try_parse_from([
            "patterns",
            "--peers",
            "10.0.0.1,10.0.0.2,10.0.0.3",
            "--topology",
            "hypercube",
        ])
        .unwrap()
        .a;
        let err = RankPlan::new(&args).err().unwrap().to_string();
        assert!(err.contains("power of two"), "{err}");
    }
}
