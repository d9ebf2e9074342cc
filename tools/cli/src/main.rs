//! `vnet`: the command line of the vnet overlay: control a vnetd, run the lab, the demo
//! and the benchmark.

use clap::{Parser, Subcommand};
mod adapt;
mod bench;
mod control;
mod demo;
mod topo;
mod vttif;

use vnet_lab::{self as lab, patterns};

/// Control vnet daemons, build an emulated lab of hosts and VMs, run the demo.
///
/// Control commands talk to one vnetd's control socket (-c SOCKET, or $VNET_CONTROL).
#[derive(Parser, Debug)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    target: control::Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The topology language: check, fmt, show, diff, apply, route, up, generate.
    #[command(flatten)]
    Topo(topo::TopoCommand),
    #[command(flatten)]
    Control(control::ControlCommand),
    /// Emulated hosts and VMs in network namespaces (needs root).
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// The adaptive overlay in one command: a lab whose star crosses a slow proxy, an
    /// application measured before and after the adaptor (`vadapt run`) adapts the overlay
    /// to it by itself, with what it did and the speedup (needs root).
    Demo(demo::DemoArgs),
    /// Throughput and RTT VM to VM over vnet links (TCP, QUIC, sealed TCP and UDP, UDP),
    /// kernel VXLAN and tinc in one run, as ratios to VXLAN and tinc; rule-table lookups
    /// per second; each target PASS or MISS (needs root, iperf3, tinc; `--lookup-only`
    /// needs none; build with --release for meaningful figures).
    Bench(bench::BenchArgs),
    /// The application topology and traffic matrix VTTIF infers from the daemons' counters
    /// (`--lab N` for every daemon of a lab; `--watch` follows changes).
    Vttif(vttif::VttifArgs),
    /// The adaptor (`vadapt run`): the plan in force and its last decisions.
    #[command(subcommand)]
    Adapt(adapt::AdaptCommand),
    /// A BSP workload (Patterns): compute and communicate over TCP on a topology, in the
    /// lab's VMs; reports iterations per second.
    Patterns(patterns::PatternsArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Control(c) => control::run(&cli.target, c),
        Command::Lab(c) => lab::run(c),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Vttif(a) => vttif::run(&cli.target, a),
        Command::Patterns(a) => patterns::run(a),
        Command::Topo(c) => topo::run(c),
        Command::Adapt(c) => adapt::run(c),
    };
    if let Err(e) = result {
        eprintln!("vnet: error: {e:#}");
        std::process::exit(1);
    }
}
