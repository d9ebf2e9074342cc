//! The reference model: what a frame should do on an overlay, from the language's own
//! route tracer ([`lang::route::trace`]), which follows the rules machine by machine as
//! vnetd ranks them (every rule at the top matching priority fires, outputs deduplicated,
//! split horizon). The simulator forwards with the real data plane; the checks hold the
//! two to each other.

use std::collections::BTreeMap;

use lang::route::{self, Ingress, Outcome};
use lang::Overlay;
use vnet_core::mac::MacAddr;

use crate::sim::Sim;
use crate::vm::VmId;

/// What the model says a frame from `src` to `dst` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// Copies each VM receives.
    pub receivers: BTreeMap<VmId, usize>,
    /// Whether the route is clean: every copy reaches a VM or, for broadcast, ends where
    /// split horizon ends it; no black hole, missing output or loop.
    pub clean: bool,
    /// The links the copies cross, as their ends (machine names).
    pub links: Vec<(String, String)>,
    /// Forwarding decisions along the route: no copy crosses more links than this.
    pub depth: usize,
    /// The route as `vnet route` prints it.
    pub route: String,
}

/// The model of one overlay, with the answers it gave so far.
#[derive(Debug)]
pub struct Reference {
    overlay: Overlay,
    vm_at: BTreeMap<(String, String), VmId>,
    cache: BTreeMap<(MacAddr, MacAddr), Expectation>,
}

impl Reference {
    /// The model of `overlay`, naming VMs as `sim` does.
    pub fn new(overlay: &Overlay, sim: &Sim) -> Reference {
        let names = sim.host_names();
        let vm_at = sim
            .vms()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    (names[v.host.0 as usize].clone(), v.iface.clone()),
                    VmId(i as u32),
                )
            })
            .collect();
        Reference {
            overlay: overlay.clone(),
            vm_at,
            cache: BTreeMap::new(),
        }
    }

    /// What a frame from the VM with MAC `src` to `dst` does.
    pub fn expect(&mut self, src: MacAddr, dst: MacAddr) -> &Expectation {
        let Reference {
            overlay,
            vm_at,
            cache,
        } = self;
        cache
            .entry((src, dst))
            .or_insert_with(|| match route::trace(overlay, src, dst, None) {
                Err(e) => Expectation {
                    receivers: BTreeMap::new(),
                    clean: false,
                    links: Vec::new(),
                    depth: 0,
                    route: e.to_string(),
                },
                Ok(r) => {
                    let mut receivers = BTreeMap::new();
                    let mut to_vms = true;
                    for o in &r.outcomes {
                        if let Outcome::Delivered { machine, iface, .. } = o {
                            match vm_at.get(&(machine.clone(), iface.clone())) {
                                Some(v) => *receivers.entry(*v).or_insert(0) += 1,
                                None => to_vms = false,
                            }
                        }
                    }
                    let links = r
                        .hops
                        .iter()
                        .filter_map(|h| match &h.ingress {
                            Ingress::Link(l) => {
                                let other = overlay.links.get(l)?.other_end(&h.machine)?;
                                Some((other.to_string(), h.machine.clone()))
                            }
                            Ingress::Iface(_) => None,
                        })
                        .collect();
                    Expectation {
                        receivers,
                        clean: to_vms && !r.has_problems(),
                        links,
                        depth: r.hops.len(),
                        route: route::render(&r),
                    }
                }
            })
    }
}
