//! Reservations: guaranteed bandwidth per overlay link and a CPU share per VM, behind a
//! [`ReservationBackend`], so the adaptor decides *what* to reserve and a backend decides
//! *how*.
//!
//! A [`LinkReservation`] guarantees `mbps` Mbit/s to the overlay link's traffic in one
//! direction, from host `from` to host `to`. A [`CpuReservation`] gives a VM `slice_ms` of
//! CPU time in every `period_ms` (a periodic real-time reservation in the thesis's sense).
//!
//! # The contract of [`ReservationBackend::apply`]
//!
//! `apply(links, cpu)` is declarative: it is given the *whole* set wanted, and afterwards
//! exactly that set is in force. A reservation in force before and absent from the set is
//! released; one whose figures changed is changed in place; an unchanged one is left
//! alone (its traffic sees no gap). Calling it twice with the same set is a no-op.
//!
//! - The whole set is validated before anything changes: bad figures (not finite, not
//!   positive, a slice longer than its period, a link from a host to itself), the same link
//!   (same `from` and `to`) or VM twice, unknown hosts or VMs, and a set that does not fit
//!   (over-subscription) are errors that leave the reservations in force untouched.
//! - A failure of the system underneath (a `tc` command, a cgroup file, the script) midway
//!   is reported as an error; what was applied before it stays applied, and
//!   [`ReservationBackend::current`] tells what is in force.
//! - `apply(&[], &[])` (or [`ReservationBackend::clear`]) releases everything.
//! - Backends are not safe against two writers applying at once: the adaptor is the one
//!   writer of a lab's (or a site's) reservations.
//!
//! # Backends
//!
//! - `vnet_lab::reserve::LabBackend`: a `vnet lab` lab. Bandwidth with Linux tc HTB on the
//!   emulated uplinks, CPU with cgroups (see that module for the details and the limits).
//! - `vadapt_service::script::ScriptBackend`: an external reservation system, e.g.
//!   optical-path reservations, plugged in as an executable.
//!
//! # The script protocol (`ScriptBackend`)
//!
//! The executable is called once per change, with the arguments
//!
//! ```text
//! SCRIPT link FROM TO MBPS            reserve (or change to) MBPS Mbit/s from FROM to TO
//! SCRIPT cpu VM PERIOD_MS SLICE_MS    reserve SLICE_MS of every PERIOD_MS for VM
//! SCRIPT release-link FROM TO         release the reservation from FROM to TO
//! SCRIPT release-cpu VM               release VM's CPU reservation
//! ```
//!
//! Numbers are decimal (`60`, `12.5`). Exit status 0 means done; anything else (or no exit
//! within the timeout, after which the script and whatever it started are killed) is a
//! failure, reported with the last lines the script printed (20 of each of stdout and
//! stderr). Releases run before reservations, so capacity freed by the new set
//! is free before it is asked for again. The script has no query verb: the backend
//! remembers what the script accepted, and that is what `current` returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bandwidth guaranteed to one overlay link in one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkReservation {
    /// The sending host.
    pub from: String,
    /// The receiving host.
    pub to: String,
    /// Guaranteed rate, Mbit/s.
    pub mbps: f64,
}

/// A VM's CPU reservation: `slice_ms` of CPU time in every `period_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuReservation {
    /// The VM.
    pub vm: String,
    /// Period, ms.
    pub period_ms: f64,
    /// Slice, ms (at most the period).
    pub slice_ms: f64,
}

impl LinkReservation {
    /// `mbps` Mbit/s from host `from` to host `to`.
    pub fn new(from: &str, to: &str, mbps: f64) -> LinkReservation {
        LinkReservation {
            from: from.to_string(),
            to: to.to_string(),
            mbps,
        }
    }
}

impl CpuReservation {
    /// `slice_ms` of every `period_ms` for VM `vm`.
    pub fn new(vm: &str, period_ms: f64, slice_ms: f64) -> CpuReservation {
        CpuReservation {
            vm: vm.to_string(),
            period_ms,
            slice_ms,
        }
    }
}

/// A set of reservations: what `apply` is given, and what `current` returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reservations {
    /// Link reservations, sorted by (from, to).
    pub links: Vec<LinkReservation>,
    /// CPU reservations, sorted by VM.
    pub cpu: Vec<CpuReservation>,
}

/// Why reservations could not be applied or read.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// A reservation's figures make no sense, or lie outside what the backend can enforce.
    #[error("invalid reservation: {0}")]
    Invalid(String),
    /// The same link (same from and to) or the same VM appears twice in one set.
    #[error("{0} is reserved twice in one set")]
    Duplicate(String),
    /// A host or VM the backend does not know.
    #[error("{0}")]
    Unknown(String),
    /// The reservations crossing one uplink add up to more than it can guarantee.
    #[error(
        "{place}: reservations add up to {asked_mbps} Mbit/s, more than the {available_mbps} Mbit/s \
         that can be reserved there"
    )]
    OverSubscribed {
        /// The uplink, its direction and the reservations on it, e.g. "the uplink toward h3
        /// (sw p3), uplink 100 Mbit/s (h1 -> h3 60 Mbit/s, h2 -> h3 50 Mbit/s)".
        place: String,
        /// Sum of the reservations asked for there, Mbit/s.
        asked_mbps: f64,
        /// What can be reserved there, Mbit/s.
        available_mbps: f64,
    },
    /// Neither end of a link reservation has a shaped uplink, so there is no capacity to
    /// share and nothing to guarantee against.
    #[error(
        "cannot reserve {from} -> {to}: neither {from} nor {to} has a shaped uplink (a guarantee \
         needs a known capacity: bring the lab up with --uplink {from}=RATE or --uplink {to}=RATE)"
    )]
    Unshaped {
        /// Sending host.
        from: String,
        /// Receiving host.
        to: String,
    },
    /// CPU reservations are asked for, but no cgroup hierarchy has the cpu controller.
    #[error(
        "no cgroup hierarchy with the cpu controller is mounted (looked for cgroup2 with `cpu` in \
         cgroup.controllers, and a cgroup v1 mount with the `cpu` option)"
    )]
    NoCpuController,
    /// The system refused: a tc command failed, a cgroup file could not be written, ...
    #[error("{0}")]
    System(String),
    /// The reservation script failed, could not start or timed out.
    #[error("reservation script `{command}`: {reason}")]
    Script {
        /// The command line.
        command: String,
        /// What went wrong, with what the script printed.
        reason: String,
    },
}

/// Something that enforces reservations. See the module docs for the contract.
pub trait ReservationBackend {
    /// Makes `links` and `cpu` the whole set of reservations in force: releases what is no
    /// longer wanted, changes what changed, adds what is new. Validates the whole set
    /// first; an invalid set changes nothing.
    fn apply(&mut self, links: &[LinkReservation], cpu: &[CpuReservation]) -> Result<(), ReserveError>;

    /// The reservations in force, as the backend reads them back.
    fn current(&mut self) -> Result<Reservations, ReserveError>;

    /// Releases every reservation.
    fn clear(&mut self) -> Result<(), ReserveError> {
        self.apply(&[], &[])
    }
}

/// Link reservations keyed by (from, to): Mbit/s.
pub type LinkSet = BTreeMap<(String, String), f64>;
/// CPU reservations keyed by VM: (period, slice) in ms.
pub type CpuSet = BTreeMap<String, (f64, f64)>;

/// Checks what every backend needs: finite positive figures, a slice within its period,
/// named ends that differ, and no link or VM twice. Returns the set keyed and sorted.
pub fn validate(
    links: &[LinkReservation],
    cpu: &[CpuReservation],
) -> Result<(LinkSet, CpuSet), ReserveError> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    let mut link_set = BTreeMap::new();
    for l in links {
        if l.from.is_empty() || l.to.is_empty() {
            return Err(ReserveError::Invalid(format!(
                "link `{}` -> `{}`: both ends need a host name",
                l.from, l.to
            )));
        }
        if l.from == l.to {
            return Err(ReserveError::Invalid(format!(
                "link {} -> {}: a link joins two different hosts",
                l.from, l.to
            )));
        }
        if !positive(l.mbps) {
            return Err(ReserveError::Invalid(format!(
                "link {} -> {}: rate {} Mbit/s is not a positive number",
                l.from, l.to, l.mbps
            )));
        }
        if link_set.insert((l.from.clone(), l.to.clone()), l.mbps).is_some() {
            return Err(ReserveError::Duplicate(format!("link {} -> {}", l.from, l.to)));
        }
    }
    let mut cpu_set = BTreeMap::new();
    for c in cpu {
        if c.vm.is_empty() {
            return Err(ReserveError::Invalid("a CPU reservation needs a VM name".into()));
        }
        if !positive(c.period_ms) || !positive(c.slice_ms) {
            return Err(ReserveError::Invalid(format!(
                "{}: period {} ms and slice {} ms must be positive numbers",
                c.vm, c.period_ms, c.slice_ms
            )));
        }
        if c.slice_ms > c.period_ms {
            return Err(ReserveError::Invalid(format!(
                "{}: slice {} ms is longer than its period {} ms",
                c.vm, c.slice_ms, c.period_ms
            )));
        }
        if cpu_set.insert(c.vm.clone(), (c.period_ms, c.slice_ms)).is_some() {
            return Err(ReserveError::Duplicate(format!("VM {}", c.vm)));
        }
    }
    Ok((link_set, cpu_set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_validation_refuses_bad_sets() {
        assert!(validate(
            &[LinkReservation::new("h1", "h2", 10.0)],
            &[CpuReservation::new("vm0", 100.0, 25.0)]
        )
        .is_ok());
        let bad_links = [
            LinkReservation::new("h1", "h1", 10.0),
            LinkReservation::new("", "h1", 10.0),
            LinkReservation::new("h1", "h2", 0.0),
            LinkReservation::new("h1", "h2", -5.0),
            LinkReservation::new("h1", "h2", f64::NAN),
            LinkReservation::new("h1", "h2", f64::INFINITY),
        ];
        for l in bad_links {
            assert!(
                matches!(
                    validate(std::slice::from_ref(&l), &[]),
                    Err(ReserveError::Invalid(_))
                ),
                "{l:?}"
            );
        }
        for c in [
            CpuReservation::new("vm0", 100.0, 101.0),
            CpuReservation::new("vm0", 0.0, 0.0),
            CpuReservation::new("", 100.0, 1.0),
        ] {
            assert!(
                matches!(
                    validate(&[], std::slice::from_ref(&c)),
                    Err(ReserveError::Invalid(_))
                ),
                "{c:?}"
            );
        }
        let e = validate(
            &[
                LinkReservation::new("h1", "h2", 1.0),
                LinkReservation::new("h1", "h2", 2.0),
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "link h1 -> h2 is reserved twice in one set");
        // The reverse direction is another reservation.
        assert!(validate(
            &[
                LinkReservation::new("h1", "h2", 1.0),
                LinkReservation::new("h2", "h1", 2.0)
            ],
            &[]
        )
        .is_ok());
        let e = validate(
            &[],
            &[
                CpuReservation::new("vm1", 100.0, 1.0),
                CpuReservation::new("vm1", 50.0, 1.0),
            ],
        )
        .unwrap_err();
        assert!(matches!(e, ReserveError::Duplicate(_)), "{e}");
    }
}
