//! `vnet vttif`: the application's traffic matrix and topology as VTTIF infers them.
//!
//! Polls every daemon's local matrix (`Request::VttifMatrix`, cumulative counters) at the
//! update rate, feeds the [`vttif::Aggregator`] and prints its view: once after observing
//! for a while, or, with `--watch`, every time the topology changes or settles. With
//! `--lab N` it polls every daemon of the lab and names nodes by VM.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use vnet_client::{Client, ClientError};
use vttif::{Aggregator, AppTopology, Params, View};

use crate::control::Target;

/// `vnet vttif ...`.
#[derive(clap::Args, Debug)]
pub struct VttifArgs {
    /// Poll every daemon of this lab and name nodes by VM.
    #[arg(long, conflicts_with = "daemon")]
    lab: Option<String>,
    /// Control socket of a daemon to poll (repeat for several; default: -c SOCKET).
    #[arg(long, value_name = "SOCKET")]
    daemon: Vec<PathBuf>,
    /// Updates per second from each daemon (at most 20).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Smoothing interval, ms: the window the global matrix averages over.
    #[arg(long, default_value_t = 1000)]
    smoothing_ms: u64,
    /// Detection threshold: fraction of the largest entry an entry needs to be an edge.
    #[arg(long, default_value_t = 0.1)]
    threshold: f64,
    /// How long the topology must stay unchanged to count as settled, ms (default: the
    /// smoothing interval).
    #[arg(long)]
    settle_ms: Option<u64>,
    /// Edges that come and go (three flips) within this window are held (union damping),
    /// ms (default: four smoothing intervals).
    #[arg(long)]
    damping_ms: Option<u64>,
    /// Largest rate (bytes/s) below which the application counts as quiet.
    #[arg(long, default_value_t = 1000.0)]
    noise_floor: f64,
    /// One-shot: observe this long before printing, ms (default: until the view settles,
    /// at most 10 smoothing intervals).
    #[arg(long)]
    observe_ms: Option<u64>,
    /// Keep running; print the view whenever the topology changes or settles, or the
    /// application goes quiet or resumes.
    #[arg(long)]
    watch: bool,
    /// Print JSON (with --watch: one object per line).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Print the topology as a picture instead of text.
    #[arg(long, value_enum)]
    format: Option<Picture>,
    /// Switch accounting on in every daemon and exit.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Switch accounting off in every daemon and exit (to measure its cost).
    #[arg(long)]
    disable: bool,
}

/// Picture formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Picture {
    /// Graphviz DOT.
    Dot,
    /// A standalone SVG (nodes on a circle).
    Svg,
}

/// What `--json` prints: the aggregator's view with the wall clock.
#[derive(Serialize, Debug)]
struct Output<'a> {
    /// Wall clock of the view, ms since the Unix epoch.
    unix_ms: u128,
    #[serde(flatten)]
    view: &'a View,
}

/// A daemon `vnet vttif` polls for its matrix: its control socket and a connection, made
/// on first use and again after an error.
struct PolledDaemon {
    socket: PathBuf,
    client: Option<Client>,
}

impl PolledDaemon {
    /// Runs `primitive` on the daemon, connecting first if need be.
    fn ask<T>(&mut self, primitive: impl FnOnce(&mut Client) -> Result<T, ClientError>) -> Result<T> {
        if self.client.is_none() {
            self.client = Some(
                Client::unix(&self.socket)
                    .with_context(|| format!("cannot reach vnetd at {}", self.socket.display()))?,
            );
        }
        let answer = self.client.as_mut().map(primitive);
        match answer {
            Some(Ok(resp)) => Ok(resp),
            Some(Err(e)) => {
                // Reconnect next time (the daemon may have restarted).
                self.client = None;
                Err(anyhow!("vnetd at {}: {e}", self.socket.display()))
            }
            None => bail!("no connection"),
        }
    }
}

/// Runs `vnet vttif`.
pub fn run(target: &Target, args: VttifArgs) -> Result<()> {
    let (sockets, names) = match &args.lab {
        Some(lab) => {
            let info = vnet_lab::info(lab)?;
            let names: HashMap<String, String> = info
                .vms
                .iter()
                .map(|v| (v.mac.to_lowercase(), v.name.clone()))
                .collect();
            (info.hosts.iter().map(|h| h.control.clone()).collect(), names)
        }
        None if args.daemon.is_empty() => (vec![target.socket.clone()], HashMap::new()),
        None => (args.daemon.clone(), HashMap::new()),
    };
    let mut daemons: Vec<PolledDaemon> = sockets
        .into_iter()
        .map(|socket| PolledDaemon { socket, client: None })
        .collect();
    if args.enable || args.disable {
        for d in &mut daemons {
            d.ask(|c| c.vttif_set(args.enable))?;
        }
        return Ok(());
    }
    let smoothing = Duration::from_millis(args.smoothing_ms);
    let params = Params {
        update_rate_hz: args.rate,
        smoothing,
        threshold: args.threshold,
        settle: args.settle_ms.map_or(smoothing, Duration::from_millis),
        damping: args.damping_ms.map_or(smoothing * 4, Duration::from_millis),
        noise_floor: args.noise_floor,
    };
    let mut agg = Aggregator::new(params).context("bad VTTIF parameters")?;
    let period = agg.params().update_period();
    let start = Instant::now();
    let deadline = args.observe_ms.map(Duration::from_millis);
    let mut next = start;
    let mut last = (false, false);
    loop {
        let now = start.elapsed();
        for d in &mut daemons {
            match d.ask(Client::vttif_matrix) {
                Ok(snap) => {
                    agg.ingest(now, &d.socket.to_string_lossy(), &snap);
                }
                // A daemon that is down in watch mode: keep polling the others.
                Err(e) if args.watch => eprintln!("vnet vttif: {e:#}"),
                Err(e) => return Err(e),
            }
        }
        let mut view = agg.view(now);
        relabel(&mut view, &names);
        if args.watch {
            if view.changed || (view.settled, view.quiet) != last {
                print_view(&view, &args)?;
            }
            last = (view.settled, view.quiet);
        } else {
            let done = match deadline {
                Some(d) => now >= d,
                None => (view.settled && !view.changed) || now >= smoothing * 10,
            };
            if done {
                return print_view(&view, &args);
            }
        }
        next += period;
        let wait = next.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            next = Instant::now();
        }
        std::thread::sleep(wait);
    }
}

/// Renames MACs to VM names where known.
fn relabel(view: &mut View, names: &HashMap<String, String>) {
    if names.is_empty() {
        return;
    }
    let name = |m: &str| names.get(m).cloned().unwrap_or_else(|| m.to_string());
    view.topology = view.topology.relabel(name);
    for e in &mut view.matrix {
        e.src = name(&e.src);
        e.dst = name(&e.dst);
    }
}

fn print_view(view: &View, args: &VttifArgs) -> Result<()> {
    let text = if args.json {
        let out = Output {
            unix_ms: vnet_lab::sys::unix_ms(),
            view,
        };
        if args.watch {
            serde_json::to_string(&out)?
        } else {
            serde_json::to_string_pretty(&out)?
        }
    } else {
        match args.format {
            Some(Picture::Dot) => dot(&view.topology),
            Some(Picture::Svg) => svg(&view.topology),
            None => text(view),
        }
    };
    println!("{text}");
    Ok(())
}

fn rate(bps: f64) -> String {
    match bps {
        b if b >= 1e6 => format!("{:.1} MB/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB/s", b / 1e3),
        b => format!("{b:.0} B/s"),
    }
}

fn text(v: &View) -> String {
    let t = &v.topology;
    let mut s = String::new();
    let state = match (v.settled, v.damped, v.quiet) {
        (_, _, true) => "quiet (showing the last topology)",
        (true, true, _) => "settled on a union (damped oscillation)",
        (true, false, _) => "settled",
        (false, _, _) => "changing",
    };
    let _ = writeln!(
        s,
        "topology: {} ({} nodes, {} edges), {state}, {} changes, window {} ms",
        t.shape.as_deref().unwrap_or("unrecognised"),
        t.nodes.len(),
        t.edges.len(),
        v.changes,
        v.window_ms
    );
    if t.also.len() > 1 {
        let _ = writeln!(s, "  also: {}", t.also[1..].join(", "));
    }
    for e in &t.edges {
        let _ = writeln!(
            s,
            "  {} -- {}  {:>12}  {:.2}",
            e.a,
            e.b,
            rate(e.bytes_per_s.unwrap_or(0.0)),
            e.normalized
        );
    }
    let _ = writeln!(s, "matrix (src -> dst, rate, frames/s, normalized):");
    for e in &v.matrix {
        let _ = writeln!(
            s,
            "  {} -> {}  {:>12}  {:>8.0}  {:.3}",
            e.src,
            e.dst,
            rate(e.bytes_per_s),
            e.frames_per_s,
            e.normalized
        );
    }
    s.trim_end().to_string()
}

fn dot(t: &AppTopology) -> String {
    let mut s = String::from("graph vttif {\n  node [shape=circle];\n");
    if let Some(shape) = &t.shape {
        let _ = writeln!(s, "  label=\"{shape}\";");
    }
    for n in &t.nodes {
        let _ = writeln!(s, "  \"{n}\";");
    }
    for e in &t.edges {
        let _ = writeln!(
            s,
            "  \"{}\" -- \"{}\" [label=\"{}\", penwidth={:.1}];",
            e.a,
            e.b,
            rate(e.bytes_per_s.unwrap_or(0.0)),
            1.0 + 4.0 * e.normalized
        );
    }
    s + "}"
}

fn svg(t: &AppTopology) -> String {
    let (size, r) = (480.0, 180.0);
    let c = size / 2.0;
    let n = t.nodes.len().max(1) as f64;
    let pos = |name: &str| {
        let i = t.nodes.iter().position(|x| x == name).unwrap_or(0) as f64;
        let a = std::f64::consts::TAU * i / n - std::f64::consts::FRAC_PI_2;
        (c + r * a.cos(), c + r * a.sin())
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{size}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"8\" y=\"16\">{}</text>",
        t.shape.as_deref().unwrap_or("unrecognised topology")
    );
    for e in &t.edges {
        let ((x1, y1), (x2, y2)) = (pos(&e.a), pos(&e.b));
        let _ = writeln!(
            s,
            "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"#36c\" stroke-width=\"{:.1}\"><title>{} -- {}: {}</title></line>",
            1.0 + 4.0 * e.normalized,
            e.a,
            e.b,
            rate(e.bytes_per_s.unwrap_or(0.0))
        );
    }
    for name in &t.nodes {
        let (x, y) = pos(name);
        let _ = writeln!(
            s,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"16\" fill=\"#fff\" stroke=\"#333\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>",
            y + 4.0
        );
    }
    s + "</svg>"
}

#[cfg(test)]
mod tests {
    use super::*;
    use vttif::Edge;

    fn ring3() -> AppTopology {
        AppTopology::new(
            [("vm0", "vm1"), ("vm1", "vm2"), ("vm2", "vm0")]
                .iter()
                .map(|(a, b)| Edge {
                    a: a.to_string(),
                    b: b.to_string(),
                    normalized: 1.0,
                    bytes_per_s: Some(2e6),
                })
                .collect(),
        )
    }

    #[test]
    fn pictures_name_every_node_and_edge() {
        let d = dot(&ring3());
        assert!(d.starts_with("graph vttif {") && d.ends_with('}'));
        assert_eq!(d.matches(" -- ").count(), 3);
        assert!(d.contains("\"vm0\" -- \"vm2\" [label=\"2.0 MB/s\""));
        let s = svg(&ring3());
        assert_eq!(s.matches("<line").count(), 3);
        assert_eq!(s.matches("<circle").count(), 3);
        assert!(s.contains(">all-to-all</text>"), "a 3-ring is K3: {s}");
    }

    #[test]
    fn relabel_names_known_macs_only() {
        let mut v = View {
            topology: AppTopology::new(vec![Edge {
                a: "02:00:00:00:00:01".into(),
                b: "02:00:00:00:00:09".into(),
                normalized: 1.0,
                bytes_per_s: None,
            }]),
            ..View::default()
        };
        let names = HashMap::from([("02:00:00:00:00:01".to_string(), "vm0".to_string())]);
        relabel(&mut v, &names);
        assert_eq!(v.topology.nodes, vec!["02:00:00:00:00:09", "vm0"]);
    }
}
