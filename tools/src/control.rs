//! `vnet iface|link|rule|stats|config|status|bound`: the control primitives from the
//! command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use vnetd::config::{IfaceKind, IfaceSpec, LinkProto, LinkSpec, Topology};
use vnetd::control::client::Client;
use vnetd::control::proto::{PortCounters, Request, Response};
use vnetd::mac::MacAddr;
use vnetd::rule::{DstMatch, MacMatch, Output, RuleSpec};
use vnetd::table::RuleId;

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

    /// Sends one request.
    pub fn request(&self, request: Request) -> Result<Response> {
        Ok(self.connect()?.request(request)?)
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
        name: String,
        /// Capture an existing device in promiscuous mode instead of creating a TAP.
        #[arg(long)]
        attach: bool,
        /// Kernel device name (default: NAME).
        #[arg(long)]
        device: Option<String>,
        /// Create the TAP inside this named network namespace.
        #[arg(long)]
        netns: Option<String>,
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
        name: String,
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
        name: String,
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
        name: String,
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

fn unexpected(r: Response) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from vnetd: {r:?}")
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
        ControlCommand::Status { json } => match target.request(Request::Status)? {
            Response::Status(s) if json => print_json(&s),
            Response::Status(s) => {
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
            r => Err(unexpected(r)),
        },
        ControlCommand::Iface(c) => iface(target, c),
        ControlCommand::Link(c) => link(target, c),
        ControlCommand::Rule(c) => rule(target, c),
        ControlCommand::Stats { json } => match target.request(Request::Stats)? {
            Response::Stats(s) if json => print_json(&s),
            Response::Stats(s) => {
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
            r => Err(unexpected(r)),
        },
        ControlCommand::Config(ConfigCommand::Get { json }) => match target.request(Request::ConfigGet)? {
            Response::Config(t) if json => print_json(&t),
            Response::Config(t) => {
                print!("{}", t.to_toml());
                Ok(())
            }
            r => Err(unexpected(r)),
        },
        ControlCommand::Config(ConfigCommand::Replace { file }) => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let topology = Topology::from_toml(&text).with_context(|| format!("{}", file.display()))?;
            expect_done(target.request(Request::ConfigReplace(topology))?)
        }
        ControlCommand::Bound { ms } => expect_done(target.request(Request::SetConfigTimeBound { ms })?),
    }
}

fn expect_done(r: Response) -> Result<()> {
    match r {
        Response::Done => Ok(()),
        r => Err(unexpected(r)),
    }
}

fn iface(target: &Target, cmd: IfaceCommand) -> Result<()> {
    match cmd {
        IfaceCommand::List { json } => match target.request(Request::IfaceList)? {
            Response::Ifaces(list) if json => print_json(&list),
            Response::Ifaces(list) => {
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
            r => Err(unexpected(r)),
        },
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
            expect_done(target.request(Request::IfaceAdd(IfaceSpec {
                name,
                kind,
                device,
                netns,
                mac,
                mtu,
                offload: !no_offload,
            }))?)
        }
        IfaceCommand::Del { name } => expect_done(target.request(Request::IfaceDel { name })?),
    }
}

fn link(target: &Target, cmd: LinkCommand) -> Result<()> {
    match cmd {
        LinkCommand::List { json } => match target.request(Request::LinkList)? {
            Response::Links(list) if json => print_json(&list),
            Response::Links(list) => {
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
            r => Err(unexpected(r)),
        },
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
            expect_done(target.request(Request::LinkAdd(LinkSpec {
                name,
                proto,
                peer,
                encrypt,
            }))?)
        }
        LinkCommand::Del { name } => expect_done(target.request(Request::LinkDel { name })?),
    }
}

fn rule(target: &Target, cmd: RuleCommand) -> Result<()> {
    match cmd {
        RuleCommand::List { json } => match target.request(Request::RuleList)? {
            Response::Rules(list) if json => print_json(&list),
            Response::Rules(list) => {
                for r in list {
                    println!(
                        "{:>4}  prio {:>2}  {}  ({} frames, {} B)",
                        r.id.0, r.priority, r.spec, r.frames, r.bytes
                    );
                }
                Ok(())
            }
            r => Err(unexpected(r)),
        },
        RuleCommand::Add { src, dst, out } => {
            match target.request(Request::RuleAdd(RuleSpec { src, dst, out }))? {
                Response::RuleAdded(id) => {
                    println!("{}", id.0);
                    Ok(())
                }
                r => Err(unexpected(r)),
            }
        }
        RuleCommand::Del { id } => expect_done(target.request(Request::RuleDel { id: RuleId(id) })?),
    }
}
