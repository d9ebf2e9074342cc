//! The language tools (seeds/004 §3.3): `vnet check|fmt|show|diff|apply|route|up|generate`.
//! The language itself (parsing, checks, the mapping to vnetd, diff, routes, generators)
//! is the pure `lang` crate; this module reads files, talks to daemons and prints.

pub mod draw;
mod up;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lang::generate::{all_pairs, fast_paths, generate, Layout, Shape};
use lang::{LinkProto, Overlay};
use vnet_core::mac::MacAddr;

use vnet_lab::fleet::{apply, load, Daemons};

/// Language commands.
#[derive(clap::Subcommand, Debug)]
pub enum TopoCommand {
    /// Parse and check a description; print every diagnostic.
    ///
    /// Example: `vnet check overlay.vnet`
    Check {
        /// The description.
        file: PathBuf,
        /// Print the diagnostics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a description in canonical form (idempotent).
    ///
    /// Example: `vnet fmt --write overlay.vnet`
    Fmt {
        /// The description.
        file: PathBuf,
        /// Rewrite the file instead of printing.
        #[arg(long)]
        write: bool,
    },
    /// Fetch the live configuration of a set of daemons and print it as a description, or
    /// draw it.
    ///
    /// Example: `vnet show --lab t --format svg > t.svg`
    Show {
        #[command(flatten)]
        daemons: Daemons,
        /// Output: the description, a graphviz graph, an SVG picture or JSON.
        #[arg(long, value_enum, default_value_t = draw::Format::Text)]
        format: draw::Format,
    },
    /// Print the primitives that would turn the live overlay into FILE (as a description
    /// with ADD and DELETE blocks; empty when they agree).
    ///
    /// Example: `vnet diff --lab t target.vnet`
    Diff {
        /// The target description.
        file: PathBuf,
        #[command(flatten)]
        daemons: Daemons,
        /// Print the primitives as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the live overlay match FILE: the primitives of `vnet diff`, in phases of
    /// whole-configuration replaces (new links, wait for them, new rules, then removals).
    ///
    /// Example: `vnet apply --lab t fastpaths.vnet`
    Apply {
        /// The target description.
        file: PathBuf,
        #[command(flatten)]
        daemons: Daemons,
        /// Print what changed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a frame from SRC_MAC to DST_MAC through the live rules, hop by hop; report
    /// loops, black holes and broadcast fan-out (exit status 2 if a copy is lost).
    ///
    /// Example: `vnet route --lab t 02:00:00:00:00:01 02:00:00:00:00:02`
    Route {
        /// Source MAC; the frame enters at the interface with this MAC.
        src: MacAddr,
        /// Destination MAC.
        dst: MacAddr,
        /// Enter at this machine instead.
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        daemons: Daemons,
        /// Print the route as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start the daemons FILE names that are not running (inside a lab, locally, or over
    /// SSH as USER@MACHINE) and establish its topology.
    ///
    /// Example: `vnet up overlay.vnet` or `vnet up --lab t star.vnet`
    Up(up::UpArgs),
    /// Generate a description from high-level requirements: a shape among hosts and VMs,
    /// plus fast paths for VM pairs.
    ///
    /// Example: `vnet generate star --lab t --fast-paths all > fast.vnet`
    Generate {
        /// Shape of the host graph.
        #[arg(value_enum)]
        shape: ShapeArg,
        /// Hosts and VMs: from a lab (--lab) or a description's HOST and IFACE lines (--hosts).
        #[command(flatten)]
        daemons: Daemons,
        /// The proxy (default: the first host in natural order).
        #[arg(long)]
        proxy: Option<String>,
        /// Link transport.
        #[arg(long, value_enum, default_value_t = ProtoArg::Tcp)]
        proto: ProtoArg,
        /// Fast paths: `all` (every VM pair) or MAC pairs `A/B`, comma separated.
        #[arg(long, value_delimiter = ',')]
        fast_paths: Vec<String>,
    },
}

/// `vnet generate` shapes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ShapeArg {
    /// Every host links to the proxy.
    Star,
    /// Every pair of hosts (all-to-all).
    Full,
    /// A cycle.
    Ring,
    /// A binary tree rooted at the proxy.
    Tree,
    /// A grid.
    Mesh,
}

/// Link transports the generators can use.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ProtoArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Runs a language command.
pub fn run(cmd: TopoCommand) -> Result<()> {
    match cmd {
        TopoCommand::Check { file, json } => check(&file, json),
        TopoCommand::Fmt { file, write } => fmt(&file, write),
        TopoCommand::Show { daemons, format } => {
            let fleet = daemons.fleet(None)?;
            let live = fleet.live()?;
            print!("{}", draw::render(format, &live, &fleet.link_status()?)?);
            Ok(())
        }
        TopoCommand::Diff { file, daemons, json } => {
            let target = load(&file)?;
            let fleet = daemons.fleet(Some(&target))?;
            let target = fleet.complete(&target);
            let primitives = lang::diff(&fleet.live()?, &target);
            if json {
                println!("{}", serde_json::to_string_pretty(&primitives)?);
            } else if !primitives.is_empty() {
                print!(
                    "{}",
                    lang::print(&lang::diff::to_description(&target, &primitives))
                );
            }
            Ok(())
        }
        TopoCommand::Apply { file, daemons, json } => {
            let target = load(&file)?;
            let fleet = daemons.fleet(Some(&target))?;
            let report = apply(&fleet, &fleet.complete(&target))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.summary());
            }
            Ok(())
        }
        TopoCommand::Route {
            src,
            dst,
            from,
            daemons,
            json,
        } => {
            let live = daemons.fleet(None)?.live()?;
            let route = lang::route::trace(&live, src, dst, from.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&route)?);
            } else {
                print!("{}", lang::route::render(&route));
            }
            if route.has_problems() {
                std::process::exit(2);
            }
            Ok(())
        }
        TopoCommand::Up(args) => up::run(&args),
        TopoCommand::Generate {
            shape,
            daemons,
            proxy,
            proto,
            fast_paths: pairs,
        } => {
            let base = daemons.fleet(None)?.layout_source()?;
            let overlay = generated(&base, shape, proxy, proto, &pairs)?;
            print!("{}", lang::print(&overlay.to_description()));
            Ok(())
        }
    }
}

fn check(file: &Path, json: bool) -> Result<()> {
    let src = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let a = lang::analyze(&src);
    if json {
        println!("{}", serde_json::to_string_pretty(&a.diagnostics)?);
    } else {
        let name = file.display().to_string();
        for d in &a.diagnostics {
            eprint!("{}", d.render(&name, &src));
        }
        let o = &a.overlay;
        println!(
            "{}: {} hosts, {} interfaces, {} links, {} rules; {} diagnostics",
            name,
            o.hosts.len(),
            o.ifaces.len(),
            o.links.len(),
            o.rules.len(),
            a.diagnostics.len()
        );
    }
    if a.has_errors() {
        std::process::exit(1);
    }
    Ok(())
}

fn fmt(file: &Path, write: bool) -> Result<()> {
    let src = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let parsed = lang::parse(&src);
    if !parsed.diagnostics.is_empty() {
        let name = file.display().to_string();
        let rendered: String = parsed.diagnostics.iter().map(|d| d.render(&name, &src)).collect();
        bail!("not formatting {name}: it does not parse (formatting would drop text):\n{rendered}");
    }
    let text = lang::print(&parsed.description);
    if write {
        if text != src {
            std::fs::write(file, &text).with_context(|| format!("writing {}", file.display()))?;
        }
    } else {
        print!("{text}");
    }
    Ok(())
}

fn generated(
    base: &Overlay,
    shape: ShapeArg,
    proxy: Option<String>,
    proto: ProtoArg,
    pairs: &[String],
) -> Result<Overlay> {
    let proto = match proto {
        ProtoArg::Tcp => LinkProto::Tcp,
        ProtoArg::Udp => LinkProto::Udp,
    };
    let mut machines: Vec<&String> = base.hosts.keys().collect();
    machines.sort_by(|a, b| lang::ast::natural_cmp(a, b));
    let proxy = match proxy {
        Some(p) => p,
        None => machines
            .first()
            .map(|m| m.to_string())
            .context("no hosts to generate for")?,
    };
    let layout = Layout {
        hosts: base.hosts.values().cloned().collect(),
        vms: base
            .ifaces
            .values()
            .filter(|i| i.mac.is_some())
            .cloned()
            .collect(),
        proxy,
        proto,
    };
    let shape = match shape {
        ShapeArg::Star => Shape::Star,
        ShapeArg::Full => Shape::Full,
        ShapeArg::Ring => Shape::Ring,
        ShapeArg::Tree => Shape::Tree,
        ShapeArg::Mesh => Shape::Mesh,
    };
    let overlay = generate(&layout, shape)?;
    let pairs: Vec<(MacAddr, MacAddr)> = if pairs.iter().any(|p| p == "all") {
        all_pairs(&layout.vms.iter().filter_map(|i| i.mac).collect::<Vec<_>>())
    } else {
        pairs
            .iter()
            .map(|p| {
                let (a, b) = p
                    .split_once('/')
                    .with_context(|| format!("`{p}`: write a pair as MAC/MAC"))?;
                Ok((a.parse()?, b.parse()?))
            })
            .collect::<Result<_>>()?
    };
    Ok(fast_paths(&overlay, &pairs, proto)?)
}
