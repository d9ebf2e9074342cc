//! The adaptation problem as the caller states it ([`Instance`], JSON) and as the algorithms
//! use it ([`Problem`]: validated, names resolved to dense indices).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::route::Graph;

/// Index of a host in [`Problem::hosts`].
pub type HostId = usize;
/// Index of a VM in [`Problem::vms`].
pub type VmId = usize;
/// Index of a possible link in [`Problem::links`].
pub type LinkId = usize;
/// Index of a demand in [`Problem::demands`].
pub type DemandId = usize;

/// One adaptation problem: what the daemons measured and what VTTIF inferred (seeds/004 §7.1).
/// Units: bandwidth in Mbit/s, latency in ms; compute and size in any unit consistent between
/// hosts and VMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Hosts that can run VMs (VNET daemons).
    pub hosts: Vec<HostSpec>,
    /// Possible directed overlay links with their measured capacity.
    #[serde(default)]
    pub links: Vec<HostLinkSpec>,
    /// The application's VMs and where they run now.
    pub vms: Vec<VmSpec>,
    /// Traffic between VM pairs, from VTTIF.
    #[serde(default)]
    pub demands: Vec<DemandSpec>,
    /// VMs that must stay on (or move to) a given host.
    #[serde(default)]
    pub pinned: Vec<PinSpec>,
    /// Bandwidth of a host's in-memory forwarding between its own VMs (default 0, the
    /// thesis's literal reading: only network paths count). A positive value rewards
    /// co-location: a local demand is credited what the host's local demands leave of it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_bw: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// A host's capacities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Unique host name.
    pub name: String,
    /// Compute capacity.
    pub compute: f64,
    /// Space capacity.
    pub size: f64,
}

/// A possible directed overlay link in the host graph, with what it offers (not a daemon's
/// link, `vnet_core::config::LinkSpec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLinkSpec {
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// Available bandwidth, Mbit/s.
    pub bw: f64,
    /// Latency, ms.
    pub lat: f64,
}

/// A VM's needs and current host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Unique VM name.
    pub name: String,
    /// Compute demand.
    pub compute: f64,
    /// Space demand.
    pub size: f64,
    /// Current host.
    pub host: String,
    /// Cost of migrating this VM, in objective units (Mbit/s of residual bandwidth given up).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub migration_cost: f64,
}

/// Traffic from one VM to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandSpec {
    /// Source VM.
    pub src: String,
    /// Destination VM.
    pub dst: String,
    /// Bandwidth, Mbit/s.
    pub bw: f64,
    /// Latency bound of the path, ms; absent means unconstrained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
}

/// A VM that must run on a given host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinSpec {
    /// The VM.
    pub vm: String,
    /// Its host.
    pub host: String,
}

impl Instance {
    /// Parses an instance from JSON text (without validating it; see [`Problem::new`]).
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        serde_json::from_str(text).map_err(|e| ModelError::Json(e.to_string()))
    }
}

/// A host, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Name from the instance.
    pub name: String,
    /// Compute capacity.
    pub compute: f64,
    /// Space capacity.
    pub size: f64,
}

/// A possible link, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Source host.
    pub from: HostId,
    /// Destination host.
    pub to: HostId,
    /// Capacity, Mbit/s.
    pub bw: f64,
    /// Latency, ms.
    pub lat: f64,
}

/// A VM, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Vm {
    /// Name from the instance.
    pub name: String,
    /// Compute demand.
    pub compute: f64,
    /// Space demand.
    pub size: f64,
    /// Current host.
    pub current: HostId,
    /// Host it must run on, if pinned.
    pub pin: Option<HostId>,
    /// Cost charged when the plan moves it.
    pub migration_cost: f64,
}

/// A demand, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Source VM.
    pub src: VmId,
    /// Destination VM.
    pub dst: VmId,
    /// Bandwidth, Mbit/s.
    pub bw: f64,
    /// Latency bound, ms.
    pub lat: Option<f64>,
}

/// A validated instance with dense indices, the input of every algorithm.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Hosts, in instance order.
    pub hosts: Vec<Host>,
    /// Possible links, in instance order.
    pub links: Vec<Link>,
    /// VMs, in instance order.
    pub vms: Vec<Vm>,
    /// Demands, in instance order.
    pub demands: Vec<Demand>,
    /// Bandwidth of a host's in-memory forwarding between its own VMs: a local (same-host)
    /// demand is credited what its host's local demands leave of it.
    pub local_bw: f64,
    /// The link graph used by the path algorithms.
    pub graph: Graph,
    /// `link_between[from * hosts + to]`: the direct link, if any.
    link_between: Vec<Option<LinkId>>,
    /// Demands that involve each VM, for re-routing after a VM moves.
    demands_of_vm: Vec<Vec<DemandId>>,
    host_index: HashMap<String, HostId>,
    vm_index: HashMap<String, VmId>,
}

fn number(field: &'static str, owner: impl FnOnce() -> String, value: f64) -> Result<f64, ModelError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ModelError::BadNumber {
            field,
            owner: owner(),
            value,
        })
    }
}

impl Problem {
    /// Validates an instance: unique names, known references, finite non-negative numbers,
    /// no self-loops, no duplicate links or demands, consistent pins.
    pub fn new(instance: &Instance) -> Result<Self, ModelError> {
        let mut host_index = HashMap::new();
        let mut hosts = Vec::with_capacity(instance.hosts.len());
        for h in &instance.hosts {
            if host_index.insert(h.name.clone(), hosts.len()).is_some() {
                return Err(ModelError::DuplicateHost(h.name.clone()));
            }
            let owner = || format!("host {}", h.name);
            hosts.push(Host {
                name: h.name.clone(),
                compute: number("compute", owner, h.compute)?,
                size: number("size", owner, h.size)?,
            });
        }
        let find_host = |name: &str, context: &dyn Fn() -> String| {
            host_index
                .get(name)
                .copied()
                .ok_or_else(|| ModelError::UnknownHost {
                    name: name.to_owned(),
                    context: context(),
                })
        };
        let n = hosts.len();
        let mut link_between = vec![None; n * n];
        let mut links = Vec::with_capacity(instance.links.len());
        for l in &instance.links {
            let context = || format!("link {}->{}", l.from, l.to);
            let from = find_host(&l.from, &context)?;
            let to = find_host(&l.to, &context)?;
            if from == to {
                return Err(ModelError::SelfLink(l.from.clone()));
            }
            let slot = &mut link_between[from * n + to];
            if slot.is_some() {
                return Err(ModelError::DuplicateLink {
                    from: l.from.clone(),
                    to: l.to.clone(),
                });
            }
            *slot = Some(links.len());
            links.push(Link {
                from,
                to,
                bw: number("bw", context, l.bw)?,
                lat: number("lat", context, l.lat)?,
            });
        }
        let mut vm_index = HashMap::new();
        let mut vms = Vec::with_capacity(instance.vms.len());
        for v in &instance.vms {
            if vm_index.insert(v.name.clone(), vms.len()).is_some() {
                return Err(ModelError::DuplicateVm(v.name.clone()));
            }
            let owner = || format!("VM {}", v.name);
            vms.push(Vm {
                name: v.name.clone(),
                compute: number("compute", owner, v.compute)?,
                size: number("size", owner, v.size)?,
                current: find_host(&v.host, &owner)?,
                pin: None,
                migration_cost: number("migration_cost", owner, v.migration_cost)?,
            });
        }
        let find_vm = |name: &str, context: &dyn Fn() -> String| {
            vm_index.get(name).copied().ok_or_else(|| ModelError::UnknownVm {
                name: name.to_owned(),
                context: context(),
            })
        };
        for p in &instance.pinned {
            let context = || format!("pin {}@{}", p.vm, p.host);
            let vm = find_vm(&p.vm, &context)?;
            let host = find_host(&p.host, &context)?;
            match vms[vm].pin {
                Some(existing) if existing != host => return Err(ModelError::ConflictingPin(p.vm.clone())),
                _ => vms[vm].pin = Some(host),
            }
        }
        let mut demands = Vec::with_capacity(instance.demands.len());
        let mut seen_pairs = HashMap::new();
        let mut demands_of_vm = vec![Vec::new(); vms.len()];
        for d in &instance.demands {
            let context = || format!("demand {}->{}", d.src, d.dst);
            let src = find_vm(&d.src, &context)?;
            let dst = find_vm(&d.dst, &context)?;
            if src == dst {
                return Err(ModelError::SelfDemand(d.src.clone()));
            }
            if seen_pairs.insert((src, dst), ()).is_some() {
                return Err(ModelError::DuplicateDemand {
                    src: d.src.clone(),
                    dst: d.dst.clone(),
                });
            }
            let lat = d.lat.map(|lat| number("lat", context, lat)).transpose()?;
            demands_of_vm[src].push(demands.len());
            demands_of_vm[dst].push(demands.len());
            demands.push(Demand {
                src,
                dst,
                bw: number("bw", context, d.bw)?,
                lat,
            });
        }
        let local_bw = number("local_bw", || "the instance".to_owned(), instance.local_bw)?;
        let graph = Graph::new(n, links.iter().map(|l| (l.from, l.to, l.lat)));
        Ok(Self {
            hosts,
            links,
            vms,
            demands,
            local_bw,
            graph,
            link_between,
            demands_of_vm,
            host_index,
            vm_index,
        })
    }

    /// Parses and validates an instance from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        Self::new(&Instance::from_json(text)?)
    }

    /// The direct link `from -> to`, if it is a possible link.
    pub fn link_between(&self, from: HostId, to: HostId) -> Option<LinkId> {
        self.link_between[from * self.hosts.len() + to]
    }

    /// The demands in which `vm` is source or destination.
    pub fn demands_of(&self, vm: VmId) -> &[DemandId] {
        &self.demands_of_vm[vm]
    }

    /// Looks a host up by name.
    pub fn host_id(&self, name: &str) -> Option<HostId> {
        self.host_index.get(name).copied()
    }

    /// Looks a VM up by name.
    pub fn vm_id(&self, name: &str) -> Option<VmId> {
        self.vm_index.get(name).copied()
    }

    /// Link capacities, indexed by [`LinkId`]; the "residual" view of an empty network.
    pub fn capacities(&self) -> Vec<f64> {
        self.links.iter().map(|l| l.bw).collect()
    }

    /// Residual of each host's in-memory forwarding under `placement`: `local_bw` less the
    /// bandwidth of the demands whose two VMs it holds, never below 0. A local pair is a
    /// link of capacity `local_bw` inside the host, so more local traffic leaves less of it,
    /// as a network link's residual shrinks with its load; crediting a constant instead
    /// made co-location look better the faster the application ran.
    pub fn local_residuals(&self, placement: &[HostId]) -> Vec<f64> {
        let mut residual = vec![self.local_bw; self.hosts.len()];
        for d in &self.demands {
            let host = placement[d.src];
            if host == placement[d.dst] {
                residual[host] -= d.bw;
            }
        }
        residual.iter().map(|r| r.max(0.0)).collect()
    }

    /// Demand ids ordered heaviest first (ties by instance order), the order in which every
    /// heuristic places and routes traffic.
    pub fn demands_by_weight(&self) -> Vec<DemandId> {
        let mut order: Vec<DemandId> = (0..self.demands.len()).collect();
        order.sort_by(|&a, &b| self.demands[b].bw.total_cmp(&self.demands[a].bw));
        order
    }
}
