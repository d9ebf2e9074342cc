//! `vnet patterns`: a BSP workload like the thesis's Patterns (§9), to run in lab VMs.
//!
//! Each process (rank) alternates a compute phase (a busy loop lasting `ratio` times its
//! last communication phase) and a communication phase over TCP with its neighbours in the
//! chosen topology: a neighbour exchange (every neighbour gets and sends one message) or a
//! reduction (up a spanning tree rooted at rank 0, then the result back down). It reports
//! iterations per second. `--print-topology` prints the VM pairs it uses in the JSON shape
//! of `vnet vttif --json`'s `topology`. Without `--rank`, it launches every rank itself in
//! the lab's VMs and prints their reports.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use vttif::{Edge, Shape, Topology};

/// How long a rank waits for its neighbours to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

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
    #[arg(long, default_value_t = 65536)]
    size: usize,
    /// Compute/communicate ratio: each compute phase lasts this many times the previous
    /// communication phase.
    #[arg(long, default_value_t = 1.0)]
    ratio: f64,
    /// Iterations to run (0: until --seconds).
    #[arg(long, default_value_t = 0)]
    iterations: u64,
    /// Stop after this many seconds (a rank also stops when a neighbour has stopped).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// TCP port the ranks listen on.
    #[arg(long, default_value_t = 7700)]
    port: u16,
    /// Print the VM pairs the workload uses (JSON, like `vnet vttif --json`) and exit.
    #[arg(long)]
    print_topology: bool,
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
struct Plan {
    names: Vec<String>,
    addrs: Vec<Ipv4Addr>,
    op: Op,
    /// Undirected edges `(a, b)`, `a < b`.
    edges: Vec<(usize, usize)>,
    /// For a reduction: each rank's parent in the spanning tree rooted at 0.
    parent: Vec<Option<usize>>,
}

impl Plan {
    fn new(args: &PatternsArgs) -> Result<Plan> {
        let (mut names, mut addrs) = match &args.lab {
            Some(lab) => {
                let info = crate::lab::info(lab)?;
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
        let (text, op) = match args.topology.as_str() {
            "reduction" => ("tree", Op::Reduce),
            t => (t, args.op),
        };
        let shape = Shape::parse(text, n)?;
        let mut edges = shape.edges();
        let parent = spanning_tree(n, &edges);
        if op == Op::Reduce {
            edges = (0..n)
                .filter_map(|v| parent[v].map(|p| (p.min(v), p.max(v))))
                .collect();
            edges.sort_unstable();
        }
        Ok(Plan {
            names,
            addrs,
            op,
            edges,
            parent,
        })
    }

    fn topology(&self) -> Topology {
        Topology::new(
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
    let plan = Plan::new(&args)?;
    if args.print_topology {
        println!("{}", serde_json::to_string_pretty(&plan.topology())?);
        return Ok(());
    }
    match args.rank {
        Some(rank) => {
            let report = run_rank(&args, &plan, rank)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        None => launch(&args, &plan),
    }
}

/// Starts every rank in its lab VM and prints their reports, one JSON line each.
fn launch(args: &PatternsArgs, plan: &Plan) -> Result<()> {
    let Some(lab) = &args.lab else {
        bail!("without --lab, start each rank yourself with --rank");
    };
    let info = crate::lab::info(lab)?;
    let exe = std::env::current_exe().context("cannot find the vnet binary")?;
    let mut children = Vec::new();
    for rank in 0..plan.addrs.len() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &info.vms[rank].netns])
            .arg(&exe)
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
            .args([
                "--size",
                &args.size.to_string(),
                "--ratio",
                &args.ratio.to_string(),
            ])
            .args(["--iterations", &args.iterations.to_string()])
            .args([
                "--seconds",
                &args.seconds.to_string(),
                "--port",
                &args.port.to_string(),
            ])
            .stdout(Stdio::piped());
        children.push(cmd.spawn().context("cannot start a rank (ip netns exec)")?);
    }
    let mut failed = 0;
    for (rank, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().context("rank lost")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("vnet patterns: rank {rank} failed ({})", out.status);
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} ranks failed");
    }
    Ok(())
}

/// Connects rank `rank` to its neighbours: the higher rank of each pair dials.
fn connect(plan: &Plan, rank: usize, port: u16) -> Result<Vec<(usize, TcpStream)>> {
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

fn run_rank(args: &PatternsArgs, plan: &Plan, rank: usize) -> Result<Report> {
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
        let compute_until = Instant::now() + last_comm.mul_f64(args.ratio.max(0.0));
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

    fn plan(args: &[&str]) -> Plan {
        let mut v = vec![
            "patterns",
            "--peers",
            "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6",
        ];
        v.extend_from_slice(args);
        Plan::new(&Cli::try_parse_from(v).unwrap().a).unwrap()
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
            .all(|e| Shape::Mesh(vec![3, 2]).edges().contains(e)));
        let red = plan(&["--topology", "reduction"]);
        assert_eq!(red.op, Op::Reduce);
        assert_eq!(red.edges, Shape::Tree(6).edges());
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
        let err = Plan::new(&args).err().unwrap().to_string();
        assert!(err.contains("power of two"), "{err}");
    }
}
