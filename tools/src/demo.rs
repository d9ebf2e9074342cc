//! `vnet demo`: a small lab shows frames taking the star through the proxy, then a
//! fast-path link takes them off the proxy.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use vnetd::config::{LinkProto, LinkSpec};
use vnetd::control::client::Client;
use vnetd::control::proto::{LinkState, PortCounters, Request, Response};
use vnetd::rule::{DstMatch, MacMatch, Output, RuleSpec};

use crate::lab::{self, sys::poll_until, LabInfo, UpArgs};

/// Options of `vnet demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Lab name (namespaces NAME-h0, NAME-vm0, ...).
    #[arg(long, default_value = "demo")]
    name: String,
    /// Leave the lab running at the end (remove it with `vnet lab down --name NAME`).
    #[arg(long)]
    keep: bool,
}

/// Removes the lab when dropped, so an error or a panic midway leaves nothing behind.
struct LabGuard<'a> {
    name: &'a str,
    keep: bool,
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

/// Asks one daemon something.
pub fn ask(control: &Path, request: Request) -> Result<Response> {
    let mut c =
        Client::unix(control).with_context(|| format!("cannot reach vnetd at {}", control.display()))?;
    Ok(c.request(request)?)
}

/// Counters of one link at one daemon.
pub fn link_counters(control: &Path, link: &str) -> Result<PortCounters> {
    match ask(control, Request::Stats)? {
        Response::Stats(s) => s
            .links
            .into_iter()
            .find(|(n, _)| n == link)
            .map(|(_, c)| c)
            .with_context(|| format!("no link {link} at {}", control.display())),
        r => bail!("unexpected answer {r:?}"),
    }
}

/// Whether a link is up at a daemon.
pub fn link_up(control: &Path, link: &str) -> bool {
    matches!(ask(control, Request::LinkList), Ok(Response::Links(l))
        if l.iter().any(|s| s.spec.name == link && s.state == LinkState::Up))
}

/// Adds a direct link between the hosts of two VMs plus the rules that send their
/// unicast traffic over it: the thesis's fast-path link. Returns the link name.
pub fn add_fast_path(info: &LabInfo, proto: LinkProto, vm_a: usize, vm_b: usize) -> Result<String> {
    let (a, b) = (&info.vms[vm_a], &info.vms[vm_b]);
    let host = |name: &str| {
        info.hosts
            .iter()
            .find(|h| h.name == name)
            .context("VM on an unknown host")
    };
    let (ha, hb) = (host(&a.host)?, host(&b.host)?);
    if ha.name == hb.name {
        bail!(
            "{} and {} share host {}: they need no fast path",
            a.name,
            b.name,
            ha.name
        );
    }
    // The lower-numbered host waits, the other dials, as the lab does.
    let (wait, dial) = if ha.name < hb.name { (ha, hb) } else { (hb, ha) };
    let name = format!("{}-{}", wait.name, dial.name);
    let spec = |peer| LinkSpec {
        name: name.clone(),
        proto,
        peer,
        encrypt: false,
    };
    expect_done(ask(&wait.control, Request::LinkAdd(spec(None)))?)?;
    expect_done(ask(
        &dial.control,
        Request::LinkAdd(spec(Some((wait.underlay, lab::LINK_PORT).into()))),
    )?)?;
    for (at, to) in [(ha, b), (hb, a)] {
        let rule = RuleSpec {
            src: MacMatch::Any,
            dst: DstMatch::Mac(MacMatch::Exact(to.mac.parse()?)),
            out: vec![Output::Link(name.clone())],
        };
        match ask(&at.control, Request::RuleAdd(rule))? {
            Response::RuleAdded(_) => {}
            r => bail!("unexpected answer {r:?}"),
        }
    }
    if !poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        link_up(&wait.control, &name)
    }) {
        bail!("fast-path link {name} did not come up within 5 s");
    }
    Ok(name)
}

fn expect_done(r: Response) -> Result<()> {
    match r {
        Response::Done => Ok(()),
        r => bail!("unexpected answer {r:?}"),
    }
}

fn ping(info: &LabInfo, from: usize, to: usize, count: u32) -> Result<String> {
    let out = lab::sys::run(
        "ip",
        &[
            "netns",
            "exec",
            &info.vms[from].netns,
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            &info.vms[to].ip.to_string(),
        ],
    )?;
    Ok(out
        .lines()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    println!("== vnet demo: 3 hosts (h0 is the proxy), 2 VMs, star topology over TCP ==");
    let info = lab::up(&UpArgs::new(&args.name, 3, 2))?;
    let _guard = LabGuard {
        name: &args.name,
        keep: args.keep,
    };
    let proxy = &info.hosts[0];
    for vm in &info.vms {
        println!("  {} on {}: MAC {} IP {}", vm.name, vm.host, vm.mac, vm.ip);
    }
    let (vm0, vm1) = (&info.vms[0], &info.vms[1]);
    let up_link_0 = format!("h0-{}", vm0.host);

    println!(
        "\n1. {} pings {}: the frames cross the proxy (h0)",
        vm0.name, vm1.name
    );
    let before = link_counters(&proxy.control, &up_link_0)?;
    println!("{}", ping(&info, 0, 1, 5)?);
    let after = link_counters(&proxy.control, &up_link_0)?;
    println!(
        "   proxy link {up_link_0}: {} frames in, {} frames out during the pings",
        after.rx_frames - before.rx_frames,
        after.tx_frames - before.tx_frames
    );
    if after.rx_frames == before.rx_frames {
        bail!("the proxy saw no frames: the star is not forwarding");
    }

    println!(
        "\n2. adding a fast-path TCP link {} <-> {} with rules for the two VMs",
        vm0.host, vm1.host
    );
    let fast = add_fast_path(&info, LinkProto::Tcp, 0, 1)?;
    let before = link_counters(&proxy.control, &up_link_0)?;
    let host0 = info
        .hosts
        .iter()
        .find(|h| h.name == vm0.host)
        .context("host of vm0")?;
    let fast_before = link_counters(&host0.control, &fast)?;
    println!("{}", ping(&info, 0, 1, 5)?);
    let after = link_counters(&proxy.control, &up_link_0)?;
    let fast_after = link_counters(&host0.control, &fast)?;
    println!(
        "   proxy link {up_link_0}: {} frames in; fast link {fast}: {} frames out, {} in",
        after.rx_frames - before.rx_frames,
        fast_after.tx_frames - fast_before.tx_frames,
        fast_after.rx_frames - fast_before.rx_frames
    );
    if fast_after.tx_frames == fast_before.tx_frames {
        bail!("the fast-path link carried nothing");
    }

    println!("\n3. counters at {}:", vm0.host);
    match ask(&host0.control, Request::Stats)? {
        Response::Stats(s) => {
            for (n, c) in s.ifaces.iter().chain(&s.links) {
                println!(
                    "   {n:<8} rx {:>6} frames, tx {:>6} frames, tx drops {}",
                    c.rx_frames, c.tx_frames, c.tx_drops
                );
            }
            println!(
                "   drops by reason: {:?}; lookup cache {} hits / {} misses",
                s.drops, s.cache_hits, s.cache_misses
            );
        }
        r => bail!("unexpected answer {r:?}"),
    }
    if args.keep {
        println!(
            "\nlab `{}` left running; remove it with: vnet lab down --name {}",
            args.name, args.name
        );
    } else {
        println!("\ntearing the lab down");
    }
    Ok(())
}
