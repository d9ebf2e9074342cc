//! Applying reservations and reading them back: [`LabBackend`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use vadapt::reserve::{
    validate, CpuReservation, LinkReservation, ReservationBackend, Reservations, ReserveError,
};

use super::cgroup::{CpuCgroups, CpuLimit};
use super::htb::{bps_of_mbps, mbps, plan_links, read_ends, tc, Side};
use crate::plan::check_lab_name;
use crate::sys;

/// A system failure (a tc command, a cgroup file) as a reservation error, with its context
/// chain.
fn system_error(e: anyhow::Error) -> ReserveError {
    ReserveError::System(format!("{e:#}"))
}

/// A link reservation in force and where it is enforced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LinkInForce {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Guaranteed Mbit/s (the smaller of its ends' classes, should they differ).
    pub mbps: f64,
    /// The shapers holding it: "h1 ul0" (the sender's uplink), "sw p3" (the switch port
    /// toward the receiver).
    pub enforced_at: Vec<String>,
}

/// A shaped uplink and what is reserved on it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UplinkUse {
    /// The host.
    pub host: String,
    /// Its rate, Mbit/s.
    pub mbps: f64,
    /// Reserved on what the host sends, Mbit/s.
    pub reserved_out_mbps: f64,
    /// Reserved on what the host receives, Mbit/s.
    pub reserved_in_mbps: f64,
}

/// A VM's cgroups and CPU use.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VmCgroup {
    /// The VM.
    pub vm: String,
    /// Its cgroup directory in each hierarchy (that exists).
    pub dirs: Vec<PathBuf>,
    /// CPU time its processes used so far, µs (None without accounting).
    pub usage_us: Option<u64>,
}

/// What `vnet lab reservations --json` prints: the reservations in force, read back from
/// tc and the cgroups.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LabReservations {
    /// Lab name.
    pub lab: String,
    /// Link reservations, by (from, to).
    pub links: Vec<LinkInForce>,
    /// CPU reservations, by VM.
    pub cpu: Vec<CpuReservation>,
    /// Shaped uplinks, by host.
    pub uplinks: Vec<UplinkUse>,
    /// Where the cpu controller is ("cgroup v1 (...)"), None when there is none.
    pub cgroups: Option<String>,
    /// Every VM's cgroups and usage.
    pub vms: Vec<VmCgroup>,
}

impl LabReservations {
    /// The reservations alone.
    pub fn reservations(&self) -> Reservations {
        Reservations {
            links: self
                .links
                .iter()
                .map(|l| LinkReservation {
                    from: l.from.clone(),
                    to: l.to.clone(),
                    mbps: l.mbps,
                })
                .collect(),
            cpu: self.cpu.clone(),
        }
    }
}

/// Reads back lab `lab`'s reservations.
pub fn read(lab: &str) -> Result<LabReservations> {
    check_lab_name(lab)?;
    let info = crate::info(lab)?;
    let states = read_ends(lab, info.hosts.len())?;
    let mut links: BTreeMap<(usize, usize), LinkInForce> = BTreeMap::new();
    for (end, state) in &states {
        for (&peer, &bps) in &state.reserved {
            let key = match end.side {
                Side::Out => (end.host, peer),
                Side::In => (peer, end.host),
            };
            let l = links.entry(key).or_insert_with(|| LinkInForce {
                from: format!("h{}", key.0),
                to: format!("h{}", key.1),
                mbps: mbps(bps),
                enforced_at: Vec::new(),
            });
            l.mbps = l.mbps.min(mbps(bps));
            l.enforced_at.push(end.place());
        }
    }
    let mut uplinks: BTreeMap<usize, UplinkUse> = BTreeMap::new();
    for (end, state) in &states {
        let u = uplinks.entry(end.host).or_insert_with(|| UplinkUse {
            host: format!("h{}", end.host),
            mbps: mbps(state.uplink_bps),
            reserved_out_mbps: 0.0,
            reserved_in_mbps: 0.0,
        });
        let sum = mbps(state.reserved.values().sum());
        match end.side {
            Side::Out => u.reserved_out_mbps = sum,
            Side::In => u.reserved_in_mbps = sum,
        }
    }
    let cgroups = CpuCgroups::detect()?;
    let mut cpu = Vec::new();
    let mut vms = Vec::new();
    for vm in &info.vms {
        let Some(cg) = &cgroups else {
            vms.push(VmCgroup {
                vm: vm.name.clone(),
                dirs: Vec::new(),
                usage_us: None,
            });
            continue;
        };
        if let Some(limit) = cg.get(lab, &vm.name)? {
            cpu.push(limit.reservation(&vm.name));
        }
        vms.push(VmCgroup {
            vm: vm.name.clone(),
            dirs: cg
                .vm_dirs(lab, &vm.name)
                .into_iter()
                .filter(|d| d.exists())
                .collect(),
            usage_us: cg.usage_us(lab, &vm.name)?,
        });
    }
    Ok(LabReservations {
        lab: lab.to_string(),
        links: links.into_values().collect(),
        cpu,
        uplinks: uplinks.into_values().collect(),
        cgroups: cgroups.map(|c| c.describe()),
        vms,
    })
}

/// Makes `links` and `cpu` the reservations in force in lab `lab` (the contract of
/// [`ReservationBackend::apply`]).
pub fn apply(lab: &str, links: &[LinkReservation], cpu: &[CpuReservation]) -> Result<(), ReserveError> {
    let (want_links, want_cpu) = validate(links, cpu)?;
    check_lab_name(lab).map_err(system_error)?;
    let info = crate::info(lab).map_err(|e| ReserveError::Unknown(format!("{e:#}")))?;
    let hosts = info.hosts.len();
    let host = |name: &str| -> Result<usize, ReserveError> {
        name.strip_prefix('h')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < hosts && name == format!("h{i}"))
            .ok_or_else(|| {
                ReserveError::Unknown(format!(
                    "lab `{lab}` has no host `{name}` (its hosts are h0..h{})",
                    hosts - 1
                ))
            })
    };
    let mut wanted = BTreeMap::new();
    for ((from, to), rate) in &want_links {
        let bps = bps_of_mbps(&format!("link {from} -> {to}"), *rate)?;
        wanted.insert((host(from)?, host(to)?), bps);
    }
    let mut limits = BTreeMap::new();
    for (vm, &(period_ms, slice_ms)) in &want_cpu {
        if !info.vms.iter().any(|v| &v.name == vm) {
            return Err(ReserveError::Unknown(format!(
                "lab `{lab}` has no VM `{vm}` (its VMs are vm0..vm{})",
                info.vms.len().saturating_sub(1)
            )));
        }
        limits.insert(vm.clone(), CpuLimit::from_ms(vm, period_ms, slice_ms)?);
    }
    let cgroups = CpuCgroups::detect().map_err(system_error)?;
    if cgroups.is_none() && !limits.is_empty() {
        return Err(ReserveError::NoCpuController);
    }
    let states = read_ends(lab, hosts).map_err(system_error)?;
    let plans = plan_links(&states, &wanted)?;

    // Everything is checked: change things.
    for (end, commands) in plans {
        for args in commands {
            tc(&end.ns(lab), &args).map_err(system_error)?;
        }
    }
    if let Some(cg) = cgroups {
        for vm in &info.vms {
            let limit = limits.get(&vm.name).copied();
            // An unchanged limit is left alone: rewriting it lifts the cap for a moment.
            if cg.get(lab, &vm.name).map_err(system_error)? != limit {
                cg.set(lab, &vm.name, limit).map_err(system_error)?;
            }
            if limit.is_some() {
                // Programs started in the VM without entering its cgroup.
                for pid in sys::netns_pids(&vm.netns).map_err(system_error)? {
                    cg.enter(lab, &vm.name, pid).map_err(system_error)?;
                }
            }
        }
    }
    Ok(())
}

/// The reservations of a `vnet lab` lab (module docs: how they are enforced).
#[derive(Debug)]
pub struct LabBackend {
    lab: String,
}

impl LabBackend {
    /// The backend of lab `lab`, which must be up.
    pub fn new(lab: &str) -> Result<LabBackend, ReserveError> {
        check_lab_name(lab).map_err(|e| ReserveError::Unknown(format!("{e:#}")))?;
        crate::info(lab).map_err(|e| ReserveError::Unknown(format!("{e:#}")))?;
        Ok(LabBackend { lab: lab.to_string() })
    }

    /// Everything read back, with uplinks, cgroups and CPU usage.
    pub fn details(&self) -> Result<LabReservations, ReserveError> {
        read(&self.lab).map_err(system_error)
    }
}

impl ReservationBackend for LabBackend {
    fn apply(&mut self, links: &[LinkReservation], cpu: &[CpuReservation]) -> Result<(), ReserveError> {
        apply(&self.lab, links, cpu)
    }

    fn current(&mut self) -> Result<Reservations, ReserveError> {
        Ok(self.details()?.reservations())
    }
}
