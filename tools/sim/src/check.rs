//! The checks. Each returns a [`Violation`] naming the frame (if one is at fault) and
//! what went wrong; a scenario turns it into a [`Failure`] with the seed, the replay
//! command and the trace.
//!
//! - [`deliveries`]: every copy reaches a VM the reference model names, never more often
//!   than the model says times one plus the underlay's duplicates of it; and a frame the
//!   faults did not touch (no datagram of it lost, duplicated or cut, no daemon down on
//!   its way, no scheduled fault on its route from its start until [`RECOVERY_BOUND`]
//!   after its end) reaches exactly the VMs the model names, exactly as often (for
//!   unicast: the destination, once; for broadcast: every other VM, once).
//! - [`loops`]: a frame caught in a cycle of rules crosses exactly `DEFAULT_HOP_LIMIT − 1`
//!   links, none with a hop limit below 1, reaches no VM, and is dropped once, counted as
//!   `hop_limit`.
//! - [`links_recovered`]: every link of the overlay whose ends run and reach each other
//!   is up, with the same session at both ends.
//! - [`no_stale_sessions`]: no daemon forwarded a Frame message whose session it did not
//!   have up with the sender.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use lang::Overlay;
use vnet_core::forward::DropReason;
use vnet_core::session::{KEEPALIVE, RETRANSMIT};
use vnet_core::wire::DEFAULT_HOP_LIMIT;

use crate::ledger::FrameRecord;
use crate::reference::Reference;
use crate::sim::Sim;
use crate::vm::{FrameId, VmId};

/// How long links a daemon starts (at boot, or in a replace) get to come up before
/// traffic is sent or a check expects them: a handshake is two round trips, and this
/// leaves room for several retransmissions ([`RETRANSMIT`]) of lost messages.
pub const LINK_SETUP: Duration = Duration::from_secs(2);

/// The longest one-way delay of the underlays the scenarios draw
/// ([`crate::faults::FaultSchedule::max_one_way`] of every schedule: 20 ms and 5 ms of
/// jitter).
pub const MAX_ONE_WAY: Duration = Duration::from_millis(25);

/// How soon after a fault ends (a partition heals, a daemon restarts) links must be up
/// and frames delivered again, from the session constants:
///
/// - within [`KEEPALIVE`] a dialing end whose session survived sends a keepalive (or a
///   frame), which a restarted peer answers with a Reset, upon which it handshakes at
///   once; a dialing end without a session sends a Hello every [`RETRANSMIT`] (a
///   handshake past its 3 s deadline is replaced by a new one at once, so Hellos never
///   pause); a restarted dialer sends its Hello at once; a session that survived on both
///   ends carries frames at once (partitions are shorter than the 5 s dead-after);
/// - then a Reset's round trip and a handshake's two round trips: 6 one-way delays;
/// - each lost message costs a keepalive or a retransmission: one more keepalive and
///   three retransmissions are allowed for (up to 5% loss per path).
///
/// `2 × 400 ms + 3 × 250 ms + 6 × 25 ms` = 1.7 s.
pub const RECOVERY_BOUND: Duration = KEEPALIVE
    .saturating_mul(2)
    .saturating_add(RETRANSMIT.saturating_mul(3))
    .saturating_add(MAX_ONE_WAY.saturating_mul(6));

/// A check that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The frame at fault, if one is.
    pub frame: Option<FrameId>,
    /// What went wrong.
    pub what: String,
}

impl Violation {
    /// A violation about frame `frame`.
    pub fn frame(frame: FrameId, what: String) -> Violation {
        Violation {
            frame: Some(frame),
            what,
        }
    }

    /// A violation about no one frame.
    pub fn general(what: String) -> Violation {
        Violation { frame: None, what }
    }
}

/// A failed scenario: what to replay and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Its seed.
    pub seed: u64,
    /// The frame at fault, if one is.
    pub frame: Option<FrameId>,
    /// What went wrong.
    pub what: String,
    /// The frame's events and the last events of the run.
    pub trace: String,
}

impl Failure {
    /// The failure of `scenario` with `seed` for `v`, with the trace of `sim` if it got
    /// that far.
    pub fn new(scenario: &'static str, seed: u64, v: Violation, sim: Option<&Sim>) -> Failure {
        Failure {
            scenario,
            seed,
            frame: v.frame,
            what: v.what,
            trace: sim.map(|s| s.render_trace(v.frame, 30)).unwrap_or_default(),
        }
    }

    /// The command that replays it.
    pub fn replay(&self) -> String {
        format!(
            "VNET_SIM_SEED={} VNET_SIM_SCENARIO={} cargo test -p vnet-sim --test props replay -- --nocapture",
            self.seed, self.scenario
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario `{}` failed with seed {}", self.scenario, self.seed)?;
        if let Some(frame) = self.frame {
            write!(f, " at {frame}")?;
        }
        write!(f, ": {}\n  replay: {}\n{}", self.what, self.replay(), self.trace)
    }
}

/// How the frames [`deliveries`] looked at were judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Judged {
    /// Untouched by faults: held to exactly what the model says.
    pub exact: usize,
    /// Touched by faults: held to the safety bounds only.
    pub faulted: usize,
    /// The model sees no clean route (a loop, a black hole): not judged here.
    pub unmodelled: usize,
}

/// Checks what became of `frames` against the model (module docs).
pub fn deliveries(
    sim: &Sim,
    reference: &mut Reference,
    frames: impl IntoIterator<Item = FrameId>,
) -> Result<Judged, Violation> {
    let mut judged = Judged::default();
    let max_one_way = sim.faults().max_one_way();
    for id in frames {
        let Some(r) = sim.ledger().get(id) else {
            return Err(Violation::frame(id, "was never sent".into()));
        };
        let src = sim.vms()[r.src.0 as usize].mac;
        let exp = reference.expect(src, r.dst);
        if !exp.clean {
            judged.unmodelled += 1;
            continue;
        }
        let got = copies(r);
        let name = |v: &VmId| sim.vms()[v.0 as usize].iface.clone();
        if r.deliveries.iter().any(|d| d.vm.is_none()) {
            return Err(Violation::frame(id, "reached an interface with no VM".into()));
        }
        if let Some(v) = got.keys().find(|v| !exp.receivers.contains_key(v)) {
            return Err(Violation::frame(
                id,
                format!(
                    "reached {}, which the model says it does not reach\n{}",
                    name(v),
                    exp.route
                ),
            ));
        }
        for (v, &want) in &exp.receivers {
            let n = got.get(v).copied().unwrap_or(0);
            if n > want * (1 + r.duplicated as usize) {
                return Err(Violation::frame(
                    id,
                    format!(
                        "reached {} {n} times; the model says {want}, the underlay duplicated it {} times\n{}",
                        name(v),
                        r.duplicated,
                        exp.route
                    ),
                ));
            }
        }
        let window = (r.sent_at, r.sent_at + max_one_way * (exp.depth as u32 + 1));
        if r.touched_by_faults() || sim.faults().disturbs(&exp.links, window, RECOVERY_BOUND) {
            judged.faulted += 1;
            continue;
        }
        if let Some((v, want)) = exp.receivers.iter().find(|(v, want)| got.get(*v) != Some(*want)) {
            return Err(Violation::frame(
                id,
                format!(
                    "reached {} {} times, the model says {want}, and no fault touched it\n{}",
                    name(v),
                    got.get(v).copied().unwrap_or(0),
                    exp.route
                ),
            ));
        }
        judged.exact += 1;
    }
    Ok(judged)
}

/// Copies of a frame per VM.
pub fn copies(r: &FrameRecord) -> BTreeMap<VmId, usize> {
    let mut got = BTreeMap::new();
    for v in r.deliveries.iter().filter_map(|d| d.vm) {
        *got.entry(v).or_insert(0) += 1;
    }
    got
}

/// Checks that each of `frames`, caught in a cycle, dies at the hop limit (module docs),
/// and that the daemons counted exactly these drops as `hop_limit`.
pub fn loops(sim: &Sim, frames: &[FrameId]) -> Result<(), Violation> {
    let crossings = u32::from(DEFAULT_HOP_LIMIT - 1);
    for &id in frames {
        let Some(r) = sim.ledger().get(id) else {
            return Err(Violation::frame(id, "was never sent".into()));
        };
        if !r.deliveries.is_empty() {
            return Err(Violation::frame(
                id,
                format!("reached {} interfaces", r.deliveries.len()),
            ));
        }
        if r.transmissions != crossings || r.min_hop_limit != Some(1) {
            return Err(Violation::frame(
                id,
                format!(
                    "crossed {} links (lowest hop limit {:?}); a loop must stop after {crossings}, the last with 1",
                    r.transmissions, r.min_hop_limit
                ),
            ));
        }
        if !matches!(r.drops[..], [(_, DropReason::HopLimit)]) {
            return Err(Violation::frame(
                id,
                format!("ended with drops {:?}, not one hop_limit drop", r.drops),
            ));
        }
    }
    let counted: u64 = sim
        .host_names()
        .iter()
        .filter_map(|n| sim.daemon(n))
        .map(|d| d.drops().get(DropReason::HopLimit))
        .sum();
    if counted != frames.len() as u64 {
        return Err(Violation::general(format!(
            "the daemons counted {counted} hop_limit drops for {} looping frames",
            frames.len()
        )));
    }
    Ok(())
}

/// Checks that every link of `overlay` whose ends run and reach each other is up, with
/// one session at both ends.
pub fn links_recovered(sim: &Sim, overlay: &Overlay) -> Result<(), Violation> {
    for (name, l) in &overlay.links {
        let (Some(a), Some(b)) = (sim.host_id(&l.owner), sim.host_id(&l.peer)) else {
            return Err(Violation::general(format!("link {name} joins unknown hosts")));
        };
        if !sim.joined(a, b) {
            continue;
        }
        let session = sim.link_session(name);
        let ends = [&l.owner, &l.peer].map(|m| sim.daemon(m).and_then(|d| d.link_session(name)));
        if session.is_none() || ends != [session, session] {
            return Err(Violation::general(format!(
                "at {} link {name} is not up (both ends: {session:?}, each end: {ends:?}) though both ends run and reach each other",
                sim.now()
            )));
        }
    }
    Ok(())
}

/// Checks that no daemon forwarded a frame through a stale session id
/// ([`Sim::stale_forwards`]).
pub fn no_stale_sessions(sim: &Sim) -> Result<(), Violation> {
    match sim.stale_forwards().first() {
        None => Ok(()),
        Some((at, host, session)) => Err(Violation::general(format!(
            "at {at} {} forwarded a frame of session {session}, which it had not up with the sender ({} such frames)",
            sim.host_names()[host.0 as usize],
            sim.stale_forwards().len()
        ))),
    }
}
