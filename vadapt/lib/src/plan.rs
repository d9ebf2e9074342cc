//! What the algorithms produce: a [`Solution`] (indices) and its JSON form, the [`Plan`]
//! (placement, routes, overlay links, reservations, migrations, objective, violations).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::eval::{evaluate, Violation};
use crate::model::{HostId, LinkId, Problem};
use crate::reserve::CpuReservation;

/// CPU reservation period given to every VM. 100 ms is coarse enough for a user-level
/// periodic scheduler (VSched handles periods from milliseconds to days) and fine enough that
/// a VM's share is smooth at the time scale of the application's traffic.
pub const CPU_PERIOD_MS: f64 = 100.0;

/// A placement and a route per demand, in [`Problem`] indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// Host of each VM.
    pub placement: Vec<HostId>,
    /// Links of each demand's path, in order; empty for a local (same-host) demand, `None`
    /// for a demand that could not be routed.
    pub routes: Vec<Option<Vec<LinkId>>>,
}

/// A plan in JSON form, keyed by names. Produced by `solve`, read by `eval`; when read,
/// only `placement` and `routes` matter: everything else is recomputed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Host of every VM.
    pub placement: BTreeMap<String, String>,
    /// One route per demand; a local pair's path is `[host]`.
    pub routes: Vec<PlanRoute>,
    /// The overlay links the routes use (deduplicated, sorted).
    #[serde(default)]
    pub overlay_links: Vec<OverlayLink>,
    /// What to reserve so the plan's traffic and compute fit.
    #[serde(default)]
    pub reservations: PlannedReservations,
    /// VMs that move away from their current host.
    #[serde(default)]
    pub migrations: Vec<Migration>,
    /// Objective as defined in [`crate::eval`].
    #[serde(default)]
    pub objective: f64,
    /// Total migration cost included (subtracted) in the objective.
    #[serde(default)]
    pub migration_cost: f64,
    /// Whether every constraint holds.
    #[serde(default)]
    pub feasible: bool,
    /// Every broken constraint.
    #[serde(default)]
    pub violations: Vec<Violation>,
}

/// A demand's path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRoute {
    /// Source VM.
    pub src: String,
    /// Destination VM.
    pub dst: String,
    /// Hosts from the source VM's host to the destination VM's host.
    pub path: Vec<String>,
}

/// An overlay link to establish.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OverlayLink {
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
}

/// Bandwidth and CPU reservations implied by a plan: what the adaptor asks a
/// [`crate::reserve::ReservationBackend`] for (as a [`crate::reserve::Reservations`] set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlannedReservations {
    /// Per overlay link: the sum of the demands routed over it.
    pub links: Vec<PlannedLinkReservation>,
    /// Per VM: a periodic real-time reservation (see [`cpu_reservation`]).
    pub cpu: Vec<CpuReservation>,
}

/// Bandwidth the plan routes over one overlay link, to reserve there. Unlike a
/// [`crate::reserve::LinkReservation`] (the guarantee a backend enforces), it counts the
/// demands' frame bytes alone, without the underlay's overhead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedLinkReservation {
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// Mbit/s.
    pub bw: f64,
}

/// A VM move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// The VM.
    pub vm: String,
    /// Current host.
    pub from: String,
    /// New host.
    pub to: String,
}

/// One VM to move, as the adaptor asks a migration hook to move it
/// (`vadapt_service::hook`; contract in tools/hooks/README.md).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationRequest {
    /// The VM's name (a libvirt domain, a lab VM such as `vm1`).
    pub vm: String,
    /// The MAC of the VM's NIC on the overlay.
    pub mac: String,
    /// The host it runs on now.
    pub from: String,
    /// The host it moves to.
    pub to: String,
}

/// CPU slice for a VM of compute demand `vm_compute` on a host of capacity `host_compute`:
/// the VM's share of the host, `period × vm_compute / host_compute`, capped at the period
/// (an overloaded host is a compute violation, not a longer slice). A host with no compute
/// gives a zero slice.
pub fn cpu_reservation(vm_compute: f64, host_compute: f64) -> CpuReservation {
    let share = if host_compute > 0.0 {
        (vm_compute / host_compute).min(1.0)
    } else {
        0.0
    };
    CpuReservation {
        vm: String::new(),
        period_ms: CPU_PERIOD_MS,
        slice_ms: CPU_PERIOD_MS * share,
    }
}

impl Solution {
    /// Builds the JSON plan: names, derived links and reservations, and the evaluation.
    pub fn to_plan(&self, problem: &Problem) -> Plan {
        let host = |h: HostId| problem.hosts[h].name.clone();
        let placement = problem
            .vms
            .iter()
            .zip(&self.placement)
            .map(|(vm, &h)| (vm.name.clone(), host(h)))
            .collect();
        let mut routes = Vec::new();
        let mut used: BTreeMap<LinkId, f64> = BTreeMap::new();
        for (demand, route) in problem.demands.iter().zip(&self.routes) {
            let Some(links) = route else { continue };
            let mut path = vec![host(self.placement[demand.src])];
            for &l in links {
                path.push(host(problem.links[l].to));
                *used.entry(l).or_default() += demand.bw;
            }
            routes.push(PlanRoute {
                src: problem.vms[demand.src].name.clone(),
                dst: problem.vms[demand.dst].name.clone(),
                path,
            });
        }
        let link_names = |l: LinkId| (host(problem.links[l].from), host(problem.links[l].to));
        let overlay_links: BTreeSet<OverlayLink> = used
            .keys()
            .map(|&l| {
                let (from, to) = link_names(l);
                OverlayLink { from, to }
            })
            .collect();
        let links = used
            .iter()
            .map(|(&l, &bw)| {
                let (from, to) = link_names(l);
                PlannedLinkReservation { from, to, bw }
            })
            .collect();
        let cpu = problem
            .vms
            .iter()
            .zip(&self.placement)
            .map(|(vm, &h)| CpuReservation {
                vm: vm.name.clone(),
                ..cpu_reservation(vm.compute, problem.hosts[h].compute)
            })
            .collect();
        let migrations = problem
            .vms
            .iter()
            .zip(&self.placement)
            .filter(|(vm, &h)| vm.current != h)
            .map(|(vm, &h)| Migration {
                vm: vm.name.clone(),
                from: host(vm.current),
                to: host(h),
            })
            .collect();
        let evaluation = evaluate(problem, self);
        Plan {
            placement,
            routes,
            overlay_links: overlay_links.into_iter().collect(),
            reservations: PlannedReservations { links, cpu },
            migrations,
            objective: evaluation.objective,
            migration_cost: evaluation.migration_cost,
            feasible: evaluation.feasible,
            violations: evaluation.violations,
        }
    }
}

impl Plan {
    /// Parses a plan from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        serde_json::from_str(text).map_err(|e| ModelError::Json(e.to_string()))
    }

    /// Resolves the plan's placement and routes against `problem`. Unknown names, missing
    /// placements, hops that are not possible links and routes for pairs with no demand are
    /// errors, and so is a route that does not join the hosts the plan places its VMs on; a
    /// demand with no route is left unrouted, which the evaluator reports as a violation.
    pub fn to_solution(&self, problem: &Problem) -> Result<Solution, ModelError> {
        let host_id = |name: &str, context: &dyn Fn() -> String| {
            problem.host_id(name).ok_or_else(|| ModelError::UnknownHost {
                name: name.to_owned(),
                context: context(),
            })
        };
        let vm_id = |name: &str, context: &dyn Fn() -> String| {
            problem.vm_id(name).ok_or_else(|| ModelError::UnknownVm {
                name: name.to_owned(),
                context: context(),
            })
        };
        let mut placement = vec![None; problem.vms.len()];
        for (vm, host) in &self.placement {
            let context = || format!("placement of {vm}");
            placement[vm_id(vm, &context)?] = Some(host_id(host, &context)?);
        }
        let placement = placement
            .into_iter()
            .zip(&problem.vms)
            .map(|(h, vm)| h.ok_or_else(|| ModelError::UnplacedVm(vm.name.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut routes = vec![None; problem.demands.len()];
        for route in &self.routes {
            let context = || format!("route {}->{}", route.src, route.dst);
            let (src, dst) = (vm_id(&route.src, &context)?, vm_id(&route.dst, &context)?);
            let demand = problem
                .demands
                .iter()
                .position(|d| d.src == src && d.dst == dst)
                .ok_or_else(|| ModelError::UnknownRoute {
                    src: route.src.clone(),
                    dst: route.dst.clone(),
                })?;
            let hops = route
                .path
                .iter()
                .map(|h| host_id(h, &context))
                .collect::<Result<Vec<_>, _>>()?;
            if hops.is_empty() {
                return Err(ModelError::EmptyPath {
                    src: route.src.clone(),
                    dst: route.dst.clone(),
                });
            }
            let links = hops
                .windows(2)
                .map(|hop| {
                    problem
                        .link_between(hop[0], hop[1])
                        .ok_or_else(|| ModelError::NoSuchLink {
                            src: route.src.clone(),
                            dst: route.dst.clone(),
                            from: problem.hosts[hop[0]].name.clone(),
                            to: problem.hosts[hop[1]].name.clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (first, last) = (hops[0], hops[hops.len() - 1]);
            if first != placement[src] || last != placement[dst] {
                return Err(ModelError::RouteEndpoints {
                    src: route.src.clone(),
                    dst: route.dst.clone(),
                });
            }
            routes[demand] = Some(links);
        }
        Ok(Solution { placement, routes })
    }
}
