//! Following a frame through an overlay's rules, hop by hop, the way the daemons would:
//! at each machine every rule at the top matching priority fires
//! ([`vnet_core::rule::priority`]), outputs are deduplicated and never include the port the
//! frame came in on.

use std::collections::{BTreeSet, VecDeque};

use vnet_core::mac::MacAddr;
use vnet_core::rule::priority;

use crate::ast::{link_name, Target};
use crate::model::Overlay;

/// Where a frame entered a daemon.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Ingress {
    /// From a local interface.
    Iface(String),
    /// From a link.
    Link(String),
}

/// One daemon's forwarding decision.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Hop {
    /// The daemon.
    pub machine: String,
    /// Where the frame came in.
    pub ingress: Ingress,
    /// Priority of the rules that fired (none if no rule matched).
    pub priority: Option<i8>,
    /// Where it goes (after split horizon).
    pub outputs: Vec<Target>,
}

/// How one copy of the frame ends.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    /// Written to a local interface (a VM's NIC).
    Delivered {
        /// The daemon.
        machine: String,
        /// The interface.
        iface: String,
        /// The MAC configured on it, if any.
        mac: Option<MacAddr>,
    },
    /// No rule matched: the daemon drops it.
    BlackHole {
        /// The daemon.
        machine: String,
    },
    /// The rules that fired send it only back where it came from (split horizon drops
    /// it): the normal end of a broadcast copy, a black hole for unicast.
    Returned {
        /// The daemon.
        machine: String,
    },
    /// A rule sends over a link or to an interface that is not there.
    Missing {
        /// The daemon.
        machine: String,
        /// The missing output.
        output: Target,
    },
    /// The frame came back to a daemon by the same way it came before: it circulates
    /// until the hop limit stops it.
    Loop {
        /// The daemon.
        machine: String,
        /// The link it came back over.
        link: String,
    },
}

/// Every hop and every end of a frame's trip.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// Source MAC.
    pub src: MacAddr,
    /// Destination MAC.
    pub dst: MacAddr,
    /// Decisions, in breadth-first order.
    pub hops: Vec<Hop>,
    /// Ends, in the order they were reached.
    pub outcomes: Vec<Outcome>,
}

impl Route {
    /// The number of interfaces the frame reaches (more than one: broadcast fan-out).
    pub fn deliveries(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Delivered { .. }))
            .count()
    }

    /// Whether some copy is lost or circulates (a broadcast copy returned is not lost).
    pub fn has_problems(&self) -> bool {
        self.outcomes.iter().any(|o| match o {
            Outcome::Delivered { .. } => false,
            Outcome::Returned { .. } => !self.dst.is_multicast(),
            _ => true,
        })
    }
}

/// Why a route cannot be traced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No interface carries the source MAC and no start was given.
    #[error("no interface has MAC {0}: say where the frame enters (--from MACHINE)")]
    UnknownSource(MacAddr),
    /// The given start machine is not a host.
    #[error("unknown machine `{0}`")]
    UnknownMachine(String),
}

/// Traces a frame from `src` to `dst`. It enters at the interface whose MAC is `src`, or,
/// given `from`, at that machine as if from a local interface named `-`.
pub fn trace(o: &Overlay, src: MacAddr, dst: MacAddr, from: Option<&str>) -> Result<Route, RouteError> {
    let start = match from {
        Some(m) if o.hosts.contains_key(m) => (m.to_string(), Ingress::Iface("-".into())),
        Some(m) => return Err(RouteError::UnknownMachine(m.to_string())),
        None => o
            .ifaces
            .values()
            .find(|i| i.mac == Some(src))
            .map(|i| (i.machine.clone(), Ingress::Iface(i.name.to_string())))
            .ok_or(RouteError::UnknownSource(src))?,
    };
    let mut route = Route {
        src,
        dst,
        hops: Vec::new(),
        outcomes: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([start]);
    while let Some((machine, ingress)) = queue.pop_front() {
        if !seen.insert((machine.clone(), ingress.clone())) {
            if let Ingress::Link(link) = ingress {
                route.outcomes.push(Outcome::Loop { machine, link });
            }
            continue;
        }
        let matching: Vec<_> = o
            .rules
            .iter()
            .filter(|r| r.machine == machine && r.src.matches(src) && r.dst.matches(dst))
            .collect();
        let top = matching.iter().map(|r| priority(&r.src, &r.dst)).max();
        let mut outputs: Vec<Target> = Vec::new();
        for r in matching.iter().filter(|r| Some(priority(&r.src, &r.dst)) == top) {
            let back = match (&r.out, &ingress) {
                (Target::Iface(i), Ingress::Iface(j)) => i == j,
                (Target::Edge(p), Ingress::Link(l)) => &link_name(&machine, p) == l,
                _ => false,
            };
            if !back && !outputs.contains(&r.out) {
                outputs.push(r.out.clone());
            }
        }
        if top.is_none() {
            route.outcomes.push(Outcome::BlackHole {
                machine: machine.clone(),
            });
        } else if outputs.is_empty() {
            route.outcomes.push(Outcome::Returned {
                machine: machine.clone(),
            });
        }
        for out in &outputs {
            match out {
                Target::Iface(name) => match o.ifaces.get(&(machine.clone(), name.clone())) {
                    Some(i) => route.outcomes.push(Outcome::Delivered {
                        machine: machine.clone(),
                        iface: name.to_string(),
                        mac: i.mac,
                    }),
                    None => route.outcomes.push(Outcome::Missing {
                        machine: machine.clone(),
                        output: out.clone(),
                    }),
                },
                Target::Edge(peer) => {
                    let link = link_name(&machine, peer);
                    if o.links.contains_key(&link) {
                        queue.push_back((peer.clone(), Ingress::Link(link)));
                    } else {
                        route.outcomes.push(Outcome::Missing {
                            machine: machine.clone(),
                            output: out.clone(),
                        });
                    }
                }
            }
        }
        route.hops.push(Hop {
            machine,
            ingress,
            priority: top,
            outputs,
        });
    }
    Ok(route)
}

/// The route as text: one line per hop, then one per end.
pub fn render(r: &Route) -> String {
    let mut s = format!("route {} -> {}\n", r.src, r.dst);
    for h in &r.hops {
        let from = match &h.ingress {
            Ingress::Iface(i) => format!("iface {i}"),
            Ingress::Link(l) => format!("link {l}"),
        };
        let to: Vec<String> = h
            .outputs
            .iter()
            .map(|t| match t {
                Target::Iface(i) => format!("iface {i}"),
                Target::Edge(p) => format!("link {} to {p}", link_name(&h.machine, p)),
            })
            .collect();
        let decision = match h.priority {
            None => "no rule".to_string(),
            Some(p) if to.is_empty() => format!("priority {p}: nowhere (split horizon)"),
            Some(p) => format!("priority {p}: {}", to.join(", ")),
        };
        s += &format!("  {} (from {from}): {decision}\n", h.machine);
    }
    for o in &r.outcomes {
        s += &match o {
            Outcome::Delivered { machine, iface, mac } => format!(
                "  delivered: {machine} iface {iface}{}\n",
                mac.map(|m| format!(" ({m})")).unwrap_or_default()
            ),
            Outcome::BlackHole { machine } => format!("  BLACK HOLE: no rule on {machine}\n"),
            Outcome::Returned { machine } if r.dst.is_multicast() => format!("  ends at {machine}\n"),
            Outcome::Returned { machine } => {
                format!("  BLACK HOLE: {machine} sends it back where it came from\n")
            }
            Outcome::Missing { machine, output } => {
                format!("  BLACK HOLE: {machine} sends to missing {output:?}\n")
            }
            Outcome::Loop { machine, link } => format!("  LOOP: back at {machine} over {link}\n"),
        };
    }
    if r.deliveries() > 1 {
        s += &format!("  fan-out: {} deliveries\n", r.deliveries());
    }
    s
}
