//! `vnet iface|link|rule|stats|config|status|bound|measure`: the control primitives from
//! the command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use vnet_client::Client;
use vnet_control::proto::{MeasureReport, PortCounters, ProbeResult};
use vnet_core::config::{IfaceKind, IfaceSpec, LinkProto, LinkSpec, Topology};
use vnet_core::mac::MacAddr;
use vnet_core::name::Name;
use vnet_core::rule::{DstMatch, MacMatch, Output, RuleSpec};
use vnet_core::table::RuleId;

/// Where the daemon's control socket is.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Control socket of the daemon to talk to.
    #[arg(
        short = 'c',
        long = "control",
        global = true,
        env = "VNET_CONTROL",
        default_value = "/run/vnet/vnetd.sock"
    )]
    pub socket: PathBuf,
    /// Talk to a daemon's TCP control port instead (needs --token-file).
    #[arg(long, global = true, requires = "token_file")]
    pub tcp: Option<SocketAddr>,
    /// File holding the TCP control token.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
}

impl Target {
    /// Connects to the daemon.
    pub fn connect(&self) -> Result<Client> {
        match (&self.tcp, &self.token_file) {
            (Some(addr), Some(file)) => {
                let token = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read token file {}", file.display()))?;
                Client::tcp(*addr, token.trim().to_string())
                    .with_context(|| format!("cannot reach vnetd at {addr}"))
            }
            _ => Client::unix(&self.socket).with_context(|| {
                format!(
                    "cannot reach vnetd at {} (is it running? pass -c SOCKET)",
                    self.socket.display()
                )
            }),
        }
    }
}

/// Control commands.
#[derive(Subcommand, Debug)]
pub enum ControlCommand {
    /// Daemon name, version, uptime.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Local interfaces (TAP devices and captured devices).
    #[command(subcommand)]
    Iface(IfaceCommand),
    /// Overlay links to other daemons.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Forwarding rules.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Counters of every interface, link and rule, and drops by reason.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The whole topology at once.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The upper bound on configuration time (thesis §3.2), handed to VTTIF.
    Bound {
        /// Milliseconds; omit to clear the bound.
        ms: Option<u64>,
    },
    /// Round-trip time and throughput of every link (from keepalives and counters); with
    /// --probe, the bandwidth available toward another daemon (a bounded active probe).
    Measure(MeasureArgs),
}

/// `vnet measure ...`
#[derive(Args, Debug)]
pub struct MeasureArgs {
    /// Instead of listing links, send a bounded burst of filler over TCP to the daemon
    /// whose link listener is ADDR:PORT (what its `vnet status` shows after "links on")
    /// and report the rate it received at and the handshake's round-trip time. Both
    /// daemons need the same network key; each runs one probe at a time.
    #[arg(long, value_name = "ADDR:PORT")]
    pub probe: Option<SocketAddr>,
    /// With --probe: bytes to send at most (default 8 MiB; clamped to 1 MiB..=256 MiB).
    #[arg(long, requires = "probe", value_name = "N")]
    pub bytes: Option<u64>,
    /// With --probe: milliseconds to send for at most (default 1000; clamped to
    /// 10..=5000). The probe ends at whichever limit comes first.
    #[arg(long, requires = "probe", value_name = "N")]
    pub ms: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `vnet iface ...`
#[derive(Subcommand, Debug)]
pub enum IfaceCommand {
    /// List interfaces.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a TAP device (default) or attach an existing device (--attach).
    Add {
        /// Name rules use (iface:NAME).
        name: Name,
        /// Capture an existing device in promiscuous mode instead of creating a TAP.
        #[arg(long)]
        attach: bool,
        /// Kernel device name (default: NAME).
        #[arg(long)]
        device: Option<Name>,
        /// Create the TAP inside this named network namespace.
        #[arg(long)]
        netns: Option<Name>,
        /// MAC address of the TAP.
        #[arg(long)]
        mac: Option<MacAddr>,
        /// MTU of the TAP.
        #[arg(long)]
        mtu: Option<u32>,
        /// Open the TAP without offloads (no virtio-net header, no TSO super-frames).
        #[arg(long)]
        no_offload: bool,
    },
    /// Remove an interface (a TAP device is destroyed).
    Del {
        /// Interface name.
        name: Name,
    },
}

/// `vnet link ...`
#[derive(Subcommand, Debug)]
pub enum LinkCommand {
    /// List links with their state.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a link; both ends declare it with the same name, one with --peer.
    Add {
        /// Link name (the same on both ends).
        name: Name,
        /// Transport.
        #[arg(long, value_enum, default_value = "tcp")]
        proto: Proto,
        /// Dial this address (IP:PORT); without it, wait for the peer to dial.
        #[arg(long)]
        peer: Option<SocketAddr>,
        /// Seal frames with per-session keys (TCP, UDP); both ends must say so.
        #[arg(long)]
        encrypt: bool,
    },
    /// Delete a link.
    Del {
        /// Link name.
        name: Name,
    },
}

/// Link transport on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// QUIC (the peer needs quic_listen; --peer is its QUIC address).
    Quic,
}

/// `vnet rule ...`
#[derive(Subcommand, Debug)]
pub enum RuleCommand {
    /// List rules with priority and hits.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a rule: vnet rule add --src any --dst 02:00:00:00:00:01 --out link:h0-h1
    Add {
        /// Source: a MAC, `not MAC` or `any`.
        #[arg(long, default_value = "any")]
        src: MacMatch,
        /// Destination: a MAC, `not MAC`, `any` or `none` (the default rule).
        #[arg(long)]
        dst: DstMatch,
        /// Output: link:NAME or iface:NAME; repeat for several.
        #[arg(long = "out", required = true)]
        out: Vec<Output>,
    },
    /// Delete a rule by id.
    Del {
        /// Rule id (see `vnet rule list`).
        id: u64,
    },
}

/// `vnet config ...`
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the topology (TOML, or JSON with --json).
    Get {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the topology with a file's (TOML, as `config get` prints it).
    Replace {
        /// Topology file.
        file: PathBuf,
    },
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn counters(c: &PortCounters) -> String {
    format!(
        "rx {} frames / {} B, tx {} frames / {} B, tx drops {}",
        c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes, c.tx_drops
    )
}

/// Runs a control command.
pub fn run(target: &Target, cmd: ControlCommand) -> Result<()> {
    match cmd {
        ControlCommand::Status { json } => {
            let s = target.connect()?.status()?;
            if json {
                return print_json(&s);
            }
            println!(
                "node {} (vnetd {}), up {:.1} s, links on {}, config-time bound {}",
                s.node,
                s.version,
                s.uptime_ms as f64 / 1000.0,
                s.listen,
                s.config_time_bound_ms
                    .map_or("unset".to_string(), |b| format!("{b} ms"))
            );
            Ok(())
        }
        ControlCommand::Iface(c) => iface(target, c),
        ControlCommand::Link(c) => link(target, c),
        ControlCommand::Rule(c) => rule(target, c),
        ControlCommand::Stats { json } => {
            let s = target.connect()?.stats()?;
            if json {
                return print_json(&s);
            }
            println!("node {}", s.node);
            for (n, c) in &s.ifaces {
                println!("  iface {n:<12} {}", counters(c));
            }
            for (n, c) in &s.links {
                println!("  link  {n:<12} {}", counters(c));
            }
            for (id, frames, bytes) in &s.rules {
                println!("  rule  {:<12} {frames} frames / {bytes} B", id.0);
            }
            let drops: Vec<String> = s.drops.iter().map(|(r, n)| format!("{r} {n}")).collect();
            println!(
                "  drops {}",
                if drops.is_empty() {
                    "none".to_string()
                } else {
                    drops.join(", ")
                }
            );
            println!("  lookup cache {} hits, {} misses", s.cache_hits, s.cache_misses);
            Ok(())
        }
        ControlCommand::Config(ConfigCommand::Get { json }) => {
            let t = target.connect()?.config_get()?;
            if json {
                return print_json(&t);
            }
            print!("{}", t.to_toml());
            Ok(())
        }
        ControlCommand::Config(ConfigCommand::Replace { file }) => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let topology = Topology::from_toml(&text).with_context(|| format!("{}", file.display()))?;
            Ok(target.connect()?.config_replace(topology)?)
        }
        ControlCommand::Bound { ms } => Ok(target.connect()?.set_config_time_bound(ms)?),
        ControlCommand::Measure(args) => measure(target, args),
    }
}

fn measure(target: &Target, args: MeasureArgs) -> Result<()> {
    let mut client = target.connect()?;
    match args.probe {
        Some(to) => {
            let p = client.probe(to, args.bytes, args.ms)?;
            if args.json {
                return print_json(&p);
            }
            println!("{}", probe_line(&p));
        }
        None => {
            let m = client.measure()?;
            if args.json {
                return print_json(&m);
            }
            print!("{}", measure_table(&m));
        }
    }
    Ok(())
}

/// `vnet measure`'s table: one line per link.
fn measure_table(m: &MeasureReport) -> String {
    let ms = |us: Option<u64>| us.map_or("-".to_string(), |us| format!("{:.3}", us as f64 / 1000.0));
    let mbit = |bps: u64| format!("{:.2}", bps as f64 / 1e6);
    let mut out = format!(
        "node {}\n{:<14} {:<10} {:<10} {:>9} {:>9} {:>9} {:>11} {:>11}\n",
        m.node, "link", "peer", "state", "rtt ms", "rttvar", "min ms", "tx Mbit/s", "rx Mbit/s"
    );
    for l in &m.links {
        out += &format!(
            "{:<14} {:<10} {:<10} {:>9} {:>9} {:>9} {:>11} {:>11}\n",
            l.name,
            l.peer_node.as_deref().unwrap_or("-"),
            format!("{:?}", l.state),
            ms(l.srtt_us),
            ms(l.rttvar_us),
            ms(l.min_rtt_us),
            mbit(l.tx_bps),
            mbit(l.rx_bps)
        );
    }
    out
}

/// `vnet measure --probe`'s answer in one line.
fn probe_line(p: &ProbeResult) -> String {
    format!(
        "{}: {:.1} Mbit/s ({} B received in {:.3} s), handshake rtt {:.3} ms; limits {} B, {} ms",
        p.peer_node,
        p.mbps,
        p.bytes,
        p.elapsed_us as f64 / 1e6,
        p.rtt_us as f64 / 1000.0,
        p.max_bytes,
        p.max_ms
    )
}

fn iface(target: &Target, cmd: IfaceCommand) -> Result<()> {
    match cmd {
        IfaceCommand::List { json } => {
            let list = target.connect()?.iface_list()?;
            if json {
                return print_json(&list);
            }
            for i in list {
                let kind = match i.spec.kind {
                    IfaceKind::Tap => "tap",
                    IfaceKind::Attach => "attach",
                };
                let state = if i.up {
                    "up".to_string()
                } else {
                    format!("down ({})", i.error.unwrap_or_default())
                };
                println!(
                    "{:<12} {kind:<6} dev {}{} mac {} {state}; {}",
                    i.spec.name,
                    i.spec.device(),
                    i.spec
                        .netns
                        .as_ref()
                        .map(|n| format!(" netns {n}"))
                        .unwrap_or_default(),
                    i.spec.mac.map_or("-".to_string(), |m| m.to_string()),
                    counters(&i.counters)
                );
            }
            Ok(())
        }
        IfaceCommand::Add {
            name,
            attach,
            device,
            netns,
            mac,
            mtu,
            no_offload,
        } => {
            let kind = if attach { IfaceKind::Attach } else { IfaceKind::Tap };
            if attach && (mac.is_some() || mtu.is_some() || netns.is_some()) {
                bail!("--mac, --mtu and --netns apply to TAP devices vnetd creates, not to attached devices");
            }
            Ok(target.connect()?.iface_add(IfaceSpec {
                name,
                kind,
                device,
                netns,
                mac,
                mtu,
                offload: !no_offload,
            })?)
        }
        IfaceCommand::Del { name } => Ok(target.connect()?.iface_del(&name)?),
    }
}

fn link(target: &Target, cmd: LinkCommand) -> Result<()> {
    match cmd {
        LinkCommand::List { json } => {
            let list = target.connect()?.link_list()?;
            if json {
                return print_json(&list);
            }
            for l in list {
                let toward = match l.spec.peer {
                    Some(p) => format!("dials {p}"),
                    None => "waits".to_string(),
                };
                println!(
                    "{:<12} {} {toward:<24} {:?}{} sessions {}{}; {}",
                    l.spec.name,
                    l.spec.proto,
                    l.state,
                    l.peer_node.map(|n| format!(" to {n}")).unwrap_or_default(),
                    l.sessions,
                    l.last_error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default(),
                    counters(&l.counters)
                );
            }
            Ok(())
        }
        LinkCommand::Add {
            name,
            proto,
            peer,
            encrypt,
        } => {
            let proto = match proto {
                Proto::Tcp => LinkProto::Tcp,
                Proto::Udp => LinkProto::Udp,
                Proto::Quic => LinkProto::Quic,
            };
            Ok(target.connect()?.link_add(LinkSpec {
                name,
                proto,
                peer,
                encrypt,
            })?)
        }
        LinkCommand::Del { name } => Ok(target.connect()?.link_del(&name)?),
    }
}

fn rule(target: &Target, cmd: RuleCommand) -> Result<()> {
    match cmd {
        RuleCommand::List { json } => {
            let list = target.connect()?.rule_list()?;
            if json {
                return print_json(&list);
            }
            for r in list {
                println!(
                    "{:>4}  prio {:>2}  {}  ({} frames, {} B)",
                    r.id.0, r.priority, r.spec, r.frames, r.bytes
                );
            }
            Ok(())
        }
        RuleCommand::Add { src, dst, out } => {
            let id = target.connect()?.rule_add(RuleSpec { src, dst, out })?;
            println!("{}", id.0);
            Ok(())
        }
        RuleCommand::Del { id } => Ok(target.connect()?.rule_del(RuleId(id))?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use vnet_control::proto::{LinkMeasurement, LinkState};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: ControlCommand,
    }

    fn parse(args: &[&str]) -> Result<MeasureArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("vnet").chain(args.iter().copied()))?;
        match cli.command {
            ControlCommand::Measure(m) => Ok(m),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn measure_flags() {
        let m = parse(&["measure"]).expect("plain");
        assert!(m.probe.is_none() && !m.json);
        let m = parse(&[
            "measure",
            "--probe",
            "198.18.0.3:7400",
            "--bytes",
            "1048576",
            "--ms",
            "300",
        ])
        .expect("probe");
        assert_eq!(m.probe, Some("198.18.0.3:7400".parse().unwrap()));
        assert_eq!((m.bytes, m.ms), (Some(1 << 20), Some(300)));
        // Limits without a probe, and a probe without a port, are refused.
        assert!(parse(&["measure", "--bytes", "10"]).is_err());
        assert!(parse(&["measure", "--probe", "198.18.0.3"]).is_err());
        assert!(parse(&["measure", "--probe", "198.18.0.3:7400", "--ms", "soon"]).is_err());
    }

    #[test]
    fn measure_table_shows_missing_figures_as_dashes() {
        let link = |name: &str, srtt_us: Option<u64>| LinkMeasurement {
            name: name.into(),
            proto: LinkProto::Tcp,
            peer_node: srtt_us.map(|_| "h0".to_string()),
            remote: None,
            state: if srtt_us.is_some() {
                LinkState::Up
            } else {
                LinkState::Connecting
            },
            srtt_us,
            rttvar_us: srtt_us.map(|s| s / 4),
            min_rtt_us: srtt_us,
            rtt_samples: 3,
            tx_bps: 40_000_000,
            rx_bps: 0,
            tx_bytes: 0,
            rx_bytes: 0,
        };
        let table = measure_table(&MeasureReport {
            node: "h1".into(),
            uptime_us: 0,
            links: vec![link("h0-h1", Some(1500)), link("h1-h2", None)],
        });
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "node h1");
        assert!(lines[1].starts_with("link") && lines[1].contains("rtt ms"));
        let up: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            up,
            ["h0-h1", "h0", "Up", "1.500", "0.375", "1.500", "40.00", "0.00"]
        );
        let down: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(down, ["h1-h2", "-", "Connecting", "-", "-", "-", "40.00", "0.00"]);
    }

    #[test]
    fn probe_line_reads_well() {
        let line = probe_line(&ProbeResult {
            peer_node: "h2".into(),
            bytes: 5_000_000,
            elapsed_us: 1_000_000,
            mbps: 39.96,
            rtt_us: 250,
            sent: 5_000_000,
            max_bytes: 8 << 20,
            max_ms: 1000,
        });
        assert_eq!(
            line,
            "h2: 40.0 Mbit/s (5000000 B received in 1.000 s), handshake rtt 0.250 ms; limits 8388608 B, 1000 ms"
        );
    }
}
