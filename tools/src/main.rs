//! `vnet`: the command line of the vnet overlay: control a vnetd, run the lab, the demo
//! and the benchmark.

mod bench;
mod control;
mod demo;
mod lab;

use clap::{Parser, Subcommand};

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
    #[command(flatten)]
    Control(control::ControlCommand),
    /// Emulated hosts and VMs in network namespaces (needs root).
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Build a small lab, show frames take the star, add a fast-path link, show them leave
    /// the proxy, print counters, tear down (needs root).
    Demo(demo::DemoArgs),
    /// Throughput and RTT VM to VM over vnet TCP, vnet UDP and kernel VXLAN, in one run
    /// (needs root, iperf3; build with --release for meaningful figures).
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Control(c) => control::run(&cli.target, c),
        Command::Lab(c) => lab::run(c),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("vnet: error: {e:#}");
        std::process::exit(1);
    }
}
