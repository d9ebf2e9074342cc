//! Reservations for the adaptor: the plan's per-link bandwidth and per-VM CPU, handed to
//! a backend (`--reserve-script`, or the lab's tc/HTB and cgroup backend).

use anyhow::Result;
use vadapt::reserve::{CpuReservation, LinkReservation, ReservationBackend, ReserveError};
use vadapt::Plan;
use vadapt_service::script::ScriptBackend;
use vnet_lab::reserve::LabBackend;

use crate::run::RunArgs;

/// Link reservations are enforced on underlay bytes (encapsulation included) while the
/// plan's demands are frame bytes: reserve this much more.
const UNDERLAY_HEADROOM: f64 = 1.1;
/// The smallest CPU slice a scheduler can give (a tiny VM's share rounds up to it).
const MIN_SLICE_MS: f64 = 1.0;

/// The backend the arguments choose, or none (`--no-reserve`, or no backend for the
/// daemons of a description without `--reserve-script`).
pub fn backend(args: &RunArgs, lab: Option<&str>) -> Result<Option<Box<dyn ReservationBackend>>> {
    if args.no_reserve {
        return Ok(None);
    }
    Ok(match (&args.reserve_script, lab) {
        (Some(program), _) => Some(Box::new(ScriptBackend::new(program.clone()))),
        (None, Some(lab)) => Some(Box::new(LabBackend::new(lab)?)),
        (None, None) => None,
    })
}

/// Applies the plan's reservations (the whole set: what is no longer wanted is released).
/// A link whose path has no shaped (known) capacity cannot be guaranteed and needs no
/// guarantee: the backend refuses it as `Unshaped`, and it is left out and noted.
/// Returns a line for the decision log.
pub fn apply(backend: &mut dyn ReservationBackend, plan: &Plan) -> Result<String> {
    let mut links: Vec<LinkReservation> = plan
        .reservations
        .links
        .iter()
        .map(|r| LinkReservation {
            from: r.from.clone(),
            to: r.to.clone(),
            mbps: r.bw * UNDERLAY_HEADROOM,
        })
        .collect();
    let cpu: Vec<CpuReservation> = plan
        .reservations
        .cpu
        .iter()
        .map(|r| CpuReservation {
            slice_ms: r.slice_ms.max(MIN_SLICE_MS),
            ..r.clone()
        })
        .collect();
    let mut unshaped = Vec::new();
    let mut headroom = true;
    loop {
        match backend.apply(&links, &cpu) {
            Ok(()) => break,
            Err(ReserveError::Unshaped { from, to }) => {
                links.retain(|l| (&l.from, &l.to) != (&from, &to));
                unshaped.push(format!("{from}->{to}"));
            }
            // The plan fits the measured capacity; only the headroom may not.
            Err(ReserveError::OverSubscribed { .. }) if headroom => {
                headroom = false;
                for l in &mut links {
                    l.mbps /= UNDERLAY_HEADROOM;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut line = format!(
        "reservations: {} links ({:.1} Mbit/s in all), {} VMs' CPU",
        links.len(),
        links.iter().fold(0.0, |sum, l| sum + l.mbps),
        cpu.len()
    );
    if !unshaped.is_empty() {
        line += &format!(
            "; not reserved (no shaped capacity on the path): {}",
            unshaped.join(" ")
        );
    }
    Ok(line)
}
