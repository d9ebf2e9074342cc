//! The set of daemons a command talks to: a lab's (`--lab NAME`, from its lab.json) or
//! the ones a description's HOST lines name with CONTROL (`--hosts FILE`, or the target
//! file itself).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use lang::ast::Control;
use lang::{Action, Host, Overlay};
use vnet_client::{Client, ClientError};
use vnet_control::proto::LinkStatus;
use vnet_core::config::Topology;

use crate::LINK_PORT;

/// Poll interval while waiting for links.
const POLL: Duration = Duration::from_millis(20);

/// Which daemons to talk to.
#[derive(clap::Args, Debug, Clone)]
pub struct Daemons {
    /// The daemons of this lab (`vnet lab up --name NAME`).
    #[arg(long, conflicts_with = "hosts")]
    pub lab: Option<String>,
    /// The daemons whose HOST lines in this description give CONTROL endpoints.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
}

/// Connected-on-demand daemons, by machine.
#[derive(Debug)]
pub struct Fleet {
    /// The hosts, with control endpoints.
    pub hosts: Vec<Host>,
    /// A description given with --hosts (the source of `generate`'s layout).
    described: Option<Overlay>,
    /// Each daemon's configuration-time bound, kept across replaces.
    bounds: RefCell<BTreeMap<String, Option<u64>>>,
}

/// The hosts of lab `name`, as the language sees them.
pub fn lab_hosts(name: &str) -> Result<Vec<Host>> {
    let info = crate::info(name)?;
    Ok(info
        .hosts
        .into_iter()
        .map(|h| Host {
            user: "root".into(),
            machine: h.name,
            port: LINK_PORT,
            interface: "ul0".into(),
            address: Some(h.underlay.into()),
            control: Some(Control::Unix(h.control)),
            key_file: Some(info.key_file.clone()),
        })
        .collect())
}

impl Daemons {
    /// The daemons: the lab's, the --hosts file's, or else `target`'s; restricted to the
    /// machines `target` names, if given.
    pub fn fleet(&self, target: Option<&Overlay>) -> Result<Fleet> {
        let (mut hosts, described) = match (&self.lab, &self.hosts, target) {
            (Some(lab), _, _) => (lab_hosts(lab)?, None),
            (None, Some(file), _) => {
                let o = load(file)?;
                (o.hosts.values().cloned().collect(), Some(o))
            }
            (None, None, Some(t)) => (t.hosts.values().cloned().collect(), None),
            (None, None, None) => bail!("say which daemons: --lab NAME or --hosts FILE"),
        };
        if let Some(t) = target {
            if let Some(m) = t.hosts.keys().find(|m| !hosts.iter().any(|h| &&h.machine == m)) {
                bail!("the description names machine `{m}`, which is not among the daemons");
            }
            hosts.retain(|h| t.hosts.contains_key(&h.machine));
        }
        Ok(Fleet {
            hosts,
            described,
            bounds: RefCell::default(),
        })
    }
}

impl Fleet {
    fn host(&self, machine: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.machine == machine)
            .ok_or_else(|| anyhow!("no daemon for machine `{machine}`"))
    }

    /// Runs one control primitive (`Client::link_list`, `|c| c.config_replace(t)`, ...)
    /// on `machine`'s daemon.
    pub fn ask<T>(
        &self,
        machine: &str,
        primitive: impl FnOnce(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T> {
        let mut client = connect(self.host(machine)?)?;
        primitive(&mut client).with_context(|| format!("daemon of `{machine}`"))
    }

    /// The overlay the daemons run now.
    pub fn live(&self) -> Result<Overlay> {
        let mut topologies = BTreeMap::new();
        for h in &self.hosts {
            let t = self.ask(&h.machine, Client::config_get)?;
            self.bounds
                .borrow_mut()
                .insert(h.machine.clone(), t.config_time_bound_ms);
            topologies.insert(h.machine.clone(), t);
        }
        lang::decompile(&self.hosts, &topologies)
            .context("reading the daemons' configuration as a description")
    }

    /// `target` with the addresses, control endpoints and key files it leaves out taken
    /// from the daemons' hosts.
    pub fn complete(&self, target: &Overlay) -> Overlay {
        let mut o = target.clone();
        for h in o.hosts.values_mut() {
            if let Some(known) = self.hosts.iter().find(|k| k.machine == h.machine) {
                h.address = h.address.or(known.address);
                h.control = h.control.take().or_else(|| known.control.clone());
                h.key_file = h.key_file.take().or_else(|| known.key_file.clone());
            }
        }
        o
    }

    /// Replaces the configuration of `machines` with their part of `state`; returns how
    /// many replaces it sent.
    pub fn replace(&self, state: &Overlay, machines: &[&str]) -> Result<usize> {
        let mut compiled = lang::compile(state)?;
        for m in machines {
            let mut topology: Topology = compiled.remove(*m).unwrap_or_default();
            topology.config_time_bound_ms = self.bounds.borrow().get(*m).copied().flatten();
            self.ask(m, |c| c.config_replace(topology))?;
        }
        Ok(machines.len())
    }

    /// Waits until `links` are up on every one of `machines` that has them.
    pub fn wait_links_up(&self, machines: &[&str], links: &[String], timeout: Duration) -> Result<()> {
        if links.is_empty() {
            return Ok(());
        }
        let mut down = Vec::new();
        let done = crate::sys::poll_until(timeout, POLL, || {
            down.clear();
            for m in machines {
                match self.ask(m, Client::link_list) {
                    Ok(list) => down.extend(
                        list.iter()
                            .filter(|l| links.iter().any(|n| *n == l.spec.name) && !l.is_up())
                            .map(|l| format!("{} on {m}", l.spec.name)),
                    ),
                    Err(e) => down.push(format!("{m}: {e:#}")),
                }
            }
            down.is_empty()
        });
        if !done {
            bail!("links not up within {}s: {}", timeout.as_secs(), down.join(", "));
        }
        Ok(())
    }

    /// Every daemon's links with state and counters, by machine.
    pub fn link_status(&self) -> Result<BTreeMap<String, Vec<LinkStatus>>> {
        self.hosts
            .iter()
            .map(|h| Ok((h.machine.clone(), self.ask(&h.machine, Client::link_list)?)))
            .collect()
    }

    /// The hosts and interfaces to generate from: the --hosts description's, or the live ones.
    pub fn layout_source(&self) -> Result<Overlay> {
        match &self.described {
            Some(o) => Ok(o.clone()),
            None => self.live(),
        }
    }
}

/// Connects to a host's control endpoint.
pub fn connect(h: &Host) -> Result<Client> {
    match &h.control {
        Some(Control::Unix(path)) => Client::unix(path).with_context(|| {
            format!(
                "connecting to the daemon of `{}` at {}",
                h.machine,
                path.display()
            )
        }),
        Some(Control::Tcp { addr, token_file }) => {
            let token = std::fs::read_to_string(token_file)
                .with_context(|| format!("reading the control token {}", token_file.display()))?;
            Client::tcp(*addr, token.trim().to_string())
                .with_context(|| format!("connecting to the daemon of `{}` at {addr}", h.machine))
        }
        None => bail!(
            "no control endpoint for `{}`: give its HOST line CONTROL /path.sock (or use --lab)",
            h.machine
        ),
    }
}

/// Reads and checks a description; fails with every diagnostic rendered.
pub fn load(file: &Path) -> Result<Overlay> {
    let src = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let a = lang::analyze(&src);
    let name = file.display().to_string();
    let rendered: String = a.diagnostics.iter().map(|d| d.render(&name, &src)).collect();
    if a.has_errors() {
        bail!("{} is not a valid description:\n{rendered}", file.display());
    }
    eprint!("{rendered}");
    Ok(a.overlay)
}

/// What `vnet apply` did.
#[derive(serde::Serialize, Debug)]
pub struct ApplyReport {
    /// The primitives, in order.
    pub primitives: Vec<lang::Primitive>,
    /// Whole-configuration replaces sent.
    pub replaces: usize,
    /// Wall time from the first replace to the last answer (and links up), in seconds.
    pub seconds: f64,
}

impl ApplyReport {
    /// One line saying what was applied, for the CLI.
    pub fn summary(&self) -> String {
        let count = |a| self.primitives.iter().filter(|p| p.action == a).count();
        format!(
            "applied {} primitives ({} additions, {} removals) in {} configuration replaces, {:.3} s\n",
            self.primitives.len(),
            count(Action::Add),
            count(Action::Delete),
            self.replaces,
            self.seconds
        )
    }
}

/// How long `apply` waits for new links to come up before it moves traffic onto them.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes the fleet's overlay `target`: each step of the diff ([`lang::steps`]) becomes one
/// replace per daemon it touches, in the step's order; new links come up before rules use
/// them.
pub fn apply(fleet: &Fleet, target: &Overlay) -> Result<ApplyReport> {
    lang::compile(target).context("the description cannot run on vnetd")?;
    let mut state = fleet.live()?;
    let primitives = lang::diff(&state, target);
    let started = Instant::now();
    let mut replaces = 0;
    for step in lang::steps(&primitives) {
        state = lang::apply(&state, &step.primitives).context("applying the diff")?;
        let machines: Vec<&str> = step.machines.iter().map(String::as_str).collect();
        replaces += fleet.replace(&state, &machines)?;
        let new_links: Vec<String> = step
            .primitives
            .iter()
            .filter_map(|p| match (&p.action, &p.item) {
                (Action::Add, lang::Item::Link(l)) => Some(l.name()),
                _ => None,
            })
            .collect();
        fleet.wait_links_up(&machines, &new_links, LINK_UP_TIMEOUT)?;
    }
    Ok(ApplyReport {
        primitives,
        replaces,
        seconds: started.elapsed().as_secs_f64(),
    })
}
