//! The scenarios: each builds everything from one seed, runs, and checks. The property
//! tests run them over many seeds; `replay` runs one seed again, exactly.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use lang::{Item, LinkProto, Overlay, Rule};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use vnet_core::mac::MacAddr;
use vnet_core::session::KEEPALIVE;

use crate::apply::{self, Grouping, Stage};
use crate::check::{self, Failure, Judged, Violation, LINK_SETUP, RECOVERY_BOUND};
use crate::faults::{Crash, FaultSchedule};
use crate::reference::{Expectation, Reference};
use crate::sim::Sim;
use crate::time::SimTime;
use crate::topology::{self, Routing, GHOST};
use crate::trace::TraceMode;
use crate::vm::{FrameId, VmId};
use crate::{rng, Stream};

/// A scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Star, fast paths and relayed routes on a calm underlay: every unicast frame reaches
    /// its VM once, every broadcast every other VM once, as the model says.
    Delivery,
    /// The same overlays under random loss, duplication, partitions, crashes and restarts
    /// (the proxy's among them): delivery holds wherever no fault touched a frame, and
    /// after the last fault links and delivery are back within [`RECOVERY_BOUND`].
    Faults,
    /// Rules forming a cycle: every frame caught in it dies at the hop limit.
    Loops,
    /// `vnet apply` from a routed overlay to a random target, primitive by primitive and
    /// grouped as `vnet apply` groups it: connectivity both overlays provide holds after
    /// every change, and the daemons agree with the model of every intermediate overlay.
    Apply,
    /// Links handshake over an underlay that loses, duplicates and reorders (jitter)
    /// datagrams: every link comes up within [`LINK_SETUP`] with exactly one session at
    /// both ends, and every frame no fault touched is delivered exactly as the model
    /// says.
    Handshakes,
    /// A daemon (the proxy, or another) crashes and restarts during traffic: the peer's
    /// keepalive or frame earns a Reset, and every link is back within
    /// [`RESTART_RECOVERY`] with a new session replacing the old at both ends; no frame
    /// is delivered more often than the model says, none through a stale session, and
    /// every frame sent after the recovery arrives exactly once.
    Restart,
}

/// How soon after a daemon restarts on a calm underlay its links are up again: the peer
/// sends a keepalive within [`KEEPALIVE`] (or a frame sooner), and a Reset's round trip
/// and a handshake's two round trips follow: `400 ms + 6 × 25 ms` = 550 ms, within the
/// second the e2e resilience tests measure on real kernels.
pub const RESTART_RECOVERY: Duration = KEEPALIVE.saturating_add(check::MAX_ONE_WAY.saturating_mul(6));

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 6] = [
        Scenario::Delivery,
        Scenario::Faults,
        Scenario::Loops,
        Scenario::Apply,
        Scenario::Handshakes,
        Scenario::Restart,
    ];

    /// Its name, as `VNET_SIM_SCENARIO` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Delivery => "delivery",
            Scenario::Faults => "faults",
            Scenario::Loops => "loops",
            Scenario::Apply => "apply",
            Scenario::Handshakes => "handshakes",
            Scenario::Restart => "restart",
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Runs the scenario for `seed`.
    pub fn run(self, seed: u64) -> Result<Summary, Failure> {
        let mut run = Run {
            scenario: self,
            seed,
            sim: None,
        };
        let result = match self {
            Scenario::Delivery => run.delivery(),
            Scenario::Faults => run.faults(),
            Scenario::Loops => run.loops(),
            Scenario::Apply => run.apply(),
            Scenario::Handshakes => run.handshakes(),
            Scenario::Restart => run.restart(),
        };
        result.map_err(|v| Failure::new(self.name(), seed, v, run.sim.as_ref()))
    }
}

/// What the `apply` scenario saw, executing the diff one primitive at a time, that is
/// inherent to single primitives (crate docs, "Findings"): counted and reported rather
/// than failed. `vnet apply`'s own grouping ([`lang::steps`]) swaps such rules in one
/// replace, and is checked strictly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// Frames delivered twice to a VM while a rule of their pair was being replaced by one
    /// with the same sides and another output: one primitive adds the new rule, a later
    /// one deletes the old, and in between both fire.
    pub duplicated_while_replacing: usize,
    /// The first frame of each kind, described.
    pub examples: Vec<String>,
}

impl Known {
    fn add(&mut self, other: Known) {
        self.duplicated_while_replacing += other.duplicated_while_replacing;
        for e in other.examples {
            let kind = e.split(':').next().unwrap_or_default().to_string();
            if !self.examples.iter().any(|x| x.starts_with(&kind)) {
                self.examples.push(e);
            }
        }
    }
}

/// What a scenario did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The scenario.
    pub scenario: &'static str,
    /// The seed.
    pub seed: u64,
    /// Hosts.
    pub hosts: usize,
    /// VMs.
    pub vms: usize,
    /// Frames sent.
    pub frames: usize,
    /// How the checks judged them.
    pub judged: Judged,
    /// Events of the (last) simulation.
    pub events: u64,
    /// Simulated time at the end.
    pub ended: SimTime,
    /// Digest of the (last) simulation's trace.
    pub digest: String,
    /// What else the scenario measured.
    pub notes: Vec<String>,
    /// Known issues it saw.
    pub known: Known,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seed {}: {} hosts, {} VMs, {} frames ({} exact, {} under faults, {} outside the model), {} events, {} simulated, digest {}",
            self.scenario,
            self.seed,
            self.hosts,
            self.vms,
            self.frames,
            self.judged.exact,
            self.judged.faulted,
            self.judged.unmodelled,
            self.events,
            self.ended,
            &self.digest[..16]
        )?;
        for n in &self.notes {
            write!(f, "\n  {n}")?;
        }
        let k = &self.known;
        if k.duplicated_while_replacing > 0 {
            write!(
                f,
                "\n  known issue: {} frames duplicated while a rule was replaced primitive by primitive",
                k.duplicated_while_replacing
            )?;
            for e in &k.examples {
                write!(f, "\n    {e}")?;
            }
        }
        Ok(())
    }
}

/// A scenario in progress: the simulation is kept for the failure report.
struct Run {
    scenario: Scenario,
    seed: u64,
    sim: Option<Sim>,
}

fn sim_error(e: impl fmt::Display) -> Violation {
    Violation::general(e.to_string())
}

/// A random star: a number of hosts drawn from `hosts`, 1..=`max_vms` VMs each, links of
/// a random transport.
fn random_star(
    rng: &mut ChaCha8Rng,
    hosts: std::ops::RangeInclusive<usize>,
    max_vms: usize,
) -> Result<Overlay, Violation> {
    let proto = if rng.gen_bool(0.5) {
        LinkProto::Tcp
    } else {
        LinkProto::Udp
    };
    let n = rng.gen_range(hosts);
    let layout = topology::layout(rng, n, 1..=max_vms, proto);
    topology::star(&layout).map_err(sim_error)
}

/// Every VM sends to every other VM and one broadcast, each at `at` plus up to `spread`.
fn all_pairs(sim: &mut Sim, rng: &mut ChaCha8Rng, at: SimTime, spread: Duration) -> Vec<FrameId> {
    let macs: Vec<MacAddr> = sim.vms().iter().map(|v| v.mac).collect();
    let mut frames = Vec::new();
    for (i, &a) in macs.iter().enumerate() {
        let to = macs
            .iter()
            .copied()
            .filter(|b| *b != a)
            .chain([MacAddr::BROADCAST]);
        for b in to {
            let t = at + spread.mul_f64(rng.gen::<f64>());
            frames.push(sim.send(VmId(i as u32), b, t));
        }
    }
    frames
}

/// Starts the simulation of `overlay` under `faults` in `slot` and lets its links
/// handshake (a function of the slot, not of the run, so the run's other fields stay
/// usable while the simulation is borrowed).
fn simulate<'a>(
    slot: &'a mut Option<Sim>,
    seed: u64,
    overlay: &Overlay,
    faults: FaultSchedule,
) -> Result<&'a mut Sim, Violation> {
    let sim = slot.insert(Sim::new(seed, overlay, faults, TraceMode::Full).map_err(sim_error)?);
    sim.await_links(LINK_SETUP).map_err(sim_error)?;
    Ok(sim)
}

impl Run {
    fn summary(&self, frames: usize, judged: Judged, notes: Vec<String>) -> Summary {
        let sim = self.sim.as_ref();
        Summary {
            scenario: self.scenario.name(),
            seed: self.seed,
            hosts: sim.map_or(0, |s| s.host_names().len()),
            vms: sim.map_or(0, |s| s.vms().len()),
            frames,
            judged,
            events: sim.map_or(0, |s| s.trace().len()),
            ended: sim.map_or(SimTime::ZERO, Sim::now),
            digest: sim.map(|s| s.trace().digest()).unwrap_or_default(),
            notes,
            known: Known::default(),
        }
    }

    /// A routed overlay: a star, fast paths for about a fifth of the VM pairs, and up to
    /// four relayed routes.
    fn routed(
        &self,
        hosts: std::ops::RangeInclusive<usize>,
        max_vms: usize,
    ) -> Result<(Overlay, Overlay, Routing), Violation> {
        let mut t = rng(self.seed, Stream::Topology);
        let star = random_star(&mut t, hosts, max_vms)?;
        let routing = topology::random_routing(&mut t, &star, 0.2, 4);
        let overlay = routing.apply_to(&star).map_err(sim_error)?;
        Ok((star, overlay, routing))
    }

    fn delivery(&mut self) -> Result<Summary, Violation> {
        let (_, overlay, _) = self.routed(2..=8, 4)?;
        let sim = simulate(&mut self.sim, self.seed, &overlay, FaultSchedule::calm())?;
        let mut w = rng(self.seed, Stream::Workload);
        let start = sim.now();
        let frames = all_pairs(sim, &mut w, start, Duration::from_secs(1));
        sim.run_until_idle().map_err(sim_error)?;
        let mut reference = Reference::new(&overlay, sim);
        let judged = check::deliveries(sim, &mut reference, frames.iter().copied())?;
        if judged.exact != frames.len() {
            return Err(Violation::general(format!(
                "only {} of {} frames had a clean route and no fault: {judged:?}",
                judged.exact,
                frames.len()
            )));
        }
        Ok(self.summary(frames.len(), judged, Vec::new()))
    }

    fn faults(&mut self) -> Result<Summary, Violation> {
        let (_, overlay, _) = self.routed(2..=6, 3)?;
        let machines: Vec<String> = (0..overlay.hosts.len()).map(|i| format!("h{i}")).collect();
        // Links come up first; traffic and faults start after LINK_SETUP.
        let start = SimTime::ZERO + LINK_SETUP;
        let horizon = start + Duration::from_secs(3);
        let faults = FaultSchedule::random(
            &mut rng(self.seed, Stream::Faults),
            &machines,
            SimTime::ZERO + Duration::from_secs(3),
        )
        .shifted(LINK_SETUP);
        let settled = faults.last_fault_end() + RECOVERY_BOUND;
        let sim = simulate(&mut self.sim, self.seed, &overlay, faults)?;
        let mut w = rng(self.seed, Stream::Workload);
        // Traffic through the faults: each VM sends about 5 frames a second to a random
        // VM, one in ten a broadcast.
        let macs: Vec<MacAddr> = sim.vms().iter().map(|v| v.mac).collect();
        let mut frames = Vec::new();
        for i in 0..macs.len() {
            let mut t = start;
            loop {
                t = t + Duration::from_millis(w.gen_range(50..350));
                if t >= horizon {
                    break;
                }
                let dst = match macs.choose(&mut w) {
                    Some(&m) if m != macs[i] && !w.gen_bool(0.1) => m,
                    _ => MacAddr::BROADCAST,
                };
                frames.push(sim.send(VmId(i as u32), dst, t));
            }
        }
        sim.run_until(settled).map_err(sim_error)?;
        check::links_recovered(sim, &overlay)?;
        // Strictly after the bound: a frame sent at it still counts as disturbed.
        let after = all_pairs(
            sim,
            &mut w,
            settled + Duration::from_millis(1),
            Duration::from_millis(100),
        );
        sim.run_until_idle().map_err(sim_error)?;
        let mut reference = Reference::new(&overlay, sim);
        let judged = check::deliveries(sim, &mut reference, frames.iter().copied())?;
        let recovered = check::deliveries(sim, &mut reference, after.iter().copied())?;
        check::no_stale_sessions(sim)?;
        // After the faults only the underlay's loss and duplication may touch a frame.
        let touched = after
            .iter()
            .filter(|f| sim.ledger().get(**f).is_some_and(|r| r.touched_by_faults()))
            .count();
        if recovered.exact + touched != after.len() {
            return Err(Violation::general(format!(
                "{} frames sent {RECOVERY_BOUND:?} after the last fault: {recovered:?}, {touched} touched by loss or duplication",
                after.len()
            )));
        }
        let s = sim.faults();
        let notes = vec![format!(
            "{} partitions, {} crashes ({} of the proxy), loss up to {:.1}%, duplication up to {:.1}%; links and delivery back {RECOVERY_BOUND:?} after the last fault ended at {}",
            s.partitions.len(),
            s.crashes.len(),
            s.crashes.iter().filter(|c| c.host == topology::PROXY).count(),
            s.loss * 100.0,
            s.duplicate * 100.0,
            s.last_fault_end()
        )];
        let all = Judged {
            exact: judged.exact + recovered.exact,
            faulted: judged.faulted + recovered.faulted,
            unmodelled: judged.unmodelled + recovered.unmodelled,
        };
        Ok(self.summary(frames.len() + after.len(), all, notes))
    }

    fn loops(&mut self) -> Result<Summary, Violation> {
        let (_, routed, _) = self.routed(3..=8, 3)?;
        let (overlay, cycle) =
            topology::with_cycle(&mut rng(self.seed, Stream::Topology), &routed).map_err(sim_error)?;
        let sim = simulate(&mut self.sim, self.seed, &overlay, FaultSchedule::calm())?;
        let start = sim.now();
        let mut w = rng(self.seed, Stream::Workload);
        let ghosts: Vec<FrameId> = (0..sim.vms().len())
            .map(|i| {
                let t = start + Duration::from_millis(w.gen_range(0..1000));
                sim.send(VmId(i as u32), GHOST, t)
            })
            .collect();
        let frames = all_pairs(sim, &mut w, start, Duration::from_secs(1));
        sim.run_until_idle().map_err(sim_error)?;
        let mut reference = Reference::new(&overlay, sim);
        if let Some(f) = ghosts.iter().find(|f| {
            let src = sim.vms()[sim.ledger().get(**f).map_or(0, |r| r.src.0 as usize)].mac;
            reference.expect(src, GHOST).clean
        }) {
            return Err(Violation::frame(
                *f,
                "the model sees no loop for a frame to the ghost".into(),
            ));
        }
        check::loops(sim, &ghosts)?;
        let judged = check::deliveries(sim, &mut reference, frames.iter().copied())?;
        if judged.exact != frames.len() {
            return Err(Violation::general(format!(
                "the cycle disturbed other traffic: {judged:?}"
            )));
        }
        let notes = vec![format!(
            "cycle {}: {} frames each crossed {} links and were dropped as hop_limit",
            cycle.join(" -> "),
            ghosts.len(),
            vnet_core::wire::DEFAULT_HOP_LIMIT - 1
        )];
        Ok(self.summary(frames.len() + ghosts.len(), judged, notes))
    }

    fn handshakes(&mut self) -> Result<Summary, Violation> {
        let (_, overlay, _) = self.routed(2..=6, 3)?;
        let mut f = rng(self.seed, Stream::Faults);
        let mut faults = FaultSchedule::calm();
        faults.loss = f.gen_range(0.0..0.05);
        faults.duplicate = f.gen_range(0.0..0.05);
        faults.jitter = Duration::from_millis(f.gen_range(5..=20));
        faults.delay.1 = check::MAX_ONE_WAY - faults.jitter;
        let sim = simulate(&mut self.sim, self.seed, &overlay, faults)?;
        let setup = sim.now();
        check::links_recovered(sim, &overlay)?;
        let mut w = rng(self.seed, Stream::Workload);
        let frames = all_pairs(sim, &mut w, setup, Duration::from_millis(500));
        sim.run_until_idle().map_err(sim_error)?;
        check::links_recovered(sim, &overlay)?;
        check::no_stale_sessions(sim)?;
        let mut reference = Reference::new(&overlay, sim);
        let judged = check::deliveries(sim, &mut reference, frames.iter().copied())?;
        let s = sim.faults();
        let notes = vec![format!(
            "{} links up with one session each after {setup} (loss up to {:.1}%, duplication up to {:.1}%, jitter {:?})",
            overlay.links.len(),
            s.loss * 100.0,
            s.duplicate * 100.0,
            s.jitter
        )];
        Ok(self.summary(frames.len(), judged, notes))
    }

    fn restart(&mut self) -> Result<Summary, Violation> {
        let (_, overlay, _) = self.routed(2..=6, 3)?;
        let mut f = rng(self.seed, Stream::Faults);
        let host = if f.gen_bool(0.5) {
            topology::PROXY.to_string()
        } else {
            format!("h{}", f.gen_range(1..overlay.hosts.len()))
        };
        let start = SimTime::ZERO + LINK_SETUP;
        let at = start + Duration::from_millis(f.gen_range(200..1000));
        let restart = at + Duration::from_millis(f.gen_range(10..600));
        let mut faults = FaultSchedule::calm();
        faults.crashes.push(Crash {
            host: host.clone(),
            at,
            restart,
        });
        let sim = simulate(&mut self.sim, self.seed, &overlay, faults)?;
        let mut w = rng(self.seed, Stream::Workload);
        let macs: Vec<MacAddr> = sim.vms().iter().map(|v| v.mac).collect();
        let mut frames = Vec::new();
        for i in 0..macs.len() {
            let mut t = start;
            while t < restart + Duration::from_secs(2) {
                t = t + Duration::from_millis(w.gen_range(10..100));
                if let Some(&dst) = macs.choose(&mut w).filter(|m| **m != macs[i]) {
                    frames.push(sim.send(VmId(i as u32), dst, t));
                }
            }
        }
        let links: Vec<String> = overlay
            .links
            .iter()
            .filter(|(_, l)| l.owner == host || l.peer == host)
            .map(|(n, _)| n.clone())
            .collect();
        sim.run_until(SimTime(at.0 - 1)).map_err(sim_error)?;
        let before: Vec<Option<u32>> = links.iter().map(|n| sim.link_session(n)).collect();
        sim.run_until(restart).map_err(sim_error)?;
        sim.await_links(RESTART_RECOVERY).map_err(sim_error)?;
        let recovered = sim.now();
        for (name, old) in links.iter().zip(&before) {
            let new = sim.link_session(name);
            if new.is_none() || new == *old {
                return Err(Violation::general(format!(
                    "link {name} has session {new:?} after the restart of {host}, {old:?} before"
                )));
            }
        }
        sim.run_until_idle().map_err(sim_error)?;
        check::no_stale_sessions(sim)?;
        let mut reference = Reference::new(&overlay, sim);
        let judged = check::deliveries(sim, &mut reference, frames.iter().copied())?;
        let mut after = 0;
        for &id in &frames {
            let Some(r) = sim.ledger().get(id) else { continue };
            let exp = reference.expect(sim.vms()[r.src.0 as usize].mac, r.dst);
            if r.sent_at < recovered || !exp.clean {
                continue;
            }
            after += 1;
            let got = check::copies(r);
            if got != exp.receivers {
                return Err(Violation::frame(
                    id,
                    format!(
                        "sent at {} after the links were back at {recovered}: copies {got:?}, model {:?}\n{}",
                        r.sent_at, exp.receivers, exp.route
                    ),
                ));
            }
        }
        let notes = vec![format!(
            "{host} down {at}..{restart}: its {} links back {:?} after the restart with new sessions; {after} frames sent after that each delivered exactly as the model says",
            links.len(),
            recovered - restart
        )];
        Ok(self.summary(frames.len(), judged, notes))
    }

    fn apply(&mut self) -> Result<Summary, Violation> {
        let (star, current, routing) = self.routed(3..=5, 2)?;
        let target = routing
            .retarget(&mut rng(self.seed, Stream::Apply), &star)
            .apply_to(&star)
            .map_err(sim_error)?;
        let mut notes = Vec::new();
        let mut frames = 0;
        let mut judged = Judged::default();
        let mut known = Known::default();
        for grouping in [Grouping::Primitives, Grouping::Fleet] {
            let sim = self.sim.insert(
                Sim::new(self.seed, &current, FaultSchedule::calm(), TraceMode::Full).map_err(sim_error)?,
            );
            sim.await_links(LINK_SETUP).map_err(sim_error)?;
            let shared = Shared::new(sim, &current, &target);
            let done = apply::execute(sim, &current, &target, grouping, |sim, stage| {
                let probed = shared.probe(sim, stage, grouping)?;
                frames += probed.frames;
                judged.exact += probed.exact;
                known.add(probed.known);
                Ok(())
            })?;
            notes.push(format!(
                "{grouping:?}: {} primitives in {} steps, {} replaces, {} probes",
                done.primitives, done.steps, done.replaces, done.probes
            ));
        }
        let mut summary = self.summary(frames, judged, notes);
        summary.known = known;
        Ok(summary)
    }
}

/// What one probe sent and saw.
struct Probed {
    frames: usize,
    exact: usize,
    known: Known,
}

/// What both the current and the target overlay provide, frame by frame (source VM and
/// destination), and which frames cross what the diff replaces.
struct Shared {
    /// The copies each VM gets in both, for frames both carry cleanly and alike.
    both: BTreeMap<(VmId, MacAddr), Expectation>,
    /// Frames whose route crosses a link the diff replaces (delete, then add again): the
    /// diff's documented cut, so they may be lost, never duplicated or misdelivered.
    replaced: Vec<(VmId, MacAddr)>,
    /// Rules the diff replaces by one of the same machine and sides (another output).
    swaps: Vec<Rule>,
}

impl Shared {
    fn new(sim: &Sim, current: &Overlay, target: &Overlay) -> Shared {
        let mut cur = Reference::new(current, sim);
        let mut tgt = Reference::new(target, sim);
        let primitives = lang::diff(current, target);
        let swaps: Vec<Rule> = primitives
            .iter()
            .filter_map(|p| match (&p.item, p.action) {
                (Item::Rule(r), lang::Action::Delete)
                    if target
                        .rules
                        .iter()
                        .any(|t| (&t.machine, t.src, t.dst) == (&r.machine, r.src, r.dst)) =>
                {
                    Some(r.clone())
                }
                _ => None,
            })
            .collect();
        let replaced_links: Vec<(String, String)> = primitives
            .iter()
            .filter_map(|p| match (&p.item, p.action) {
                (Item::Link(l), lang::Action::Delete) if target.links.contains_key(&l.name()) => {
                    Some((l.owner.clone(), l.peer.clone()))
                }
                _ => None,
            })
            .collect();
        let crosses = |e: &Expectation| {
            e.links.iter().any(|(a, b)| {
                replaced_links
                    .iter()
                    .any(|(x, y)| (a, b) == (x, y) || (a, b) == (y, x))
            })
        };
        let mut both = BTreeMap::new();
        let mut replaced = Vec::new();
        let macs: Vec<MacAddr> = sim.vms().iter().map(|v| v.mac).collect();
        for (i, &a) in macs.iter().enumerate() {
            for b in macs
                .iter()
                .copied()
                .filter(|b| *b != a)
                .chain([MacAddr::BROADCAST])
            {
                let (c, t) = (cur.expect(a, b).clone(), tgt.expect(a, b));
                if c.clean && t.clean && c.receivers == t.receivers {
                    if crosses(&c) || crosses(t) {
                        replaced.push((VmId(i as u32), b));
                    }
                    both.insert((VmId(i as u32), b), c);
                }
            }
        }
        Shared {
            both,
            replaced,
            swaps,
        }
    }

    /// Sends a frame between every pair of VMs and a broadcast from each, and checks
    /// them: exactly what both overlays provide (at most that across a replaced link),
    /// and, once the daemons run a whole overlay, what its model says. The known issues
    /// ([`Known`]) are counted instead: a second copy of a frame whose pair has a rule
    /// being replaced, and, between the replaces of one `vnet apply` step, a lost frame.
    fn probe(&self, sim: &mut Sim, stage: &Stage<'_>, grouping: Grouping) -> Result<Probed, Violation> {
        let at = sim.now();
        let mut w = rng(sim.seed(), Stream::Workload);
        let frames = all_pairs(sim, &mut w, at, Duration::ZERO);
        sim.run_until_idle().map_err(sim_error)?;
        let mut model = stage.overlay.map(|o| Reference::new(o, sim));
        let mut probed = Probed {
            frames: frames.len(),
            exact: 0,
            known: Known::default(),
        };
        let fail =
            |id: FrameId, what: String| Violation::frame(id, format!("{what}\n  {}", stage.describe()));
        let example = |kind: &str, id: FrameId| {
            format!(
                "{kind}: seed {}, {grouping:?}, {id}, {}",
                sim.seed(),
                stage.describe()
            )
        };
        for &id in &frames {
            let Some(r) = sim.ledger().get(id) else { continue };
            let got = check::copies(r);
            let src = sim.vms()[r.src.0 as usize].mac;
            let name = |v: &VmId| sim.vms()[v.0 as usize].iface.clone();
            if r.deliveries.iter().any(|d| d.vm.is_none()) || got.contains_key(&r.src) {
                return Err(fail(id, "reached an interface with no VM, or its sender".into()));
            }
            // Executed primitive by primitive, each machine that fires the old and the new
            // rule of the pair doubles the copies; `vnet apply` swaps them in one replace.
            let swapping = match grouping {
                Grouping::Primitives => self
                    .swaps
                    .iter()
                    .filter(|s| s.src.matches(src) && s.dst.matches(r.dst))
                    .count(),
                Grouping::Fleet => 0,
            };
            let swap_bound = 1usize.checked_shl(swapping.min(16) as u32).unwrap_or(usize::MAX);
            let mut duplicated = false;
            if let Some(want) = self.both.get(&(r.src, r.dst)) {
                let across_replaced = self.replaced.contains(&(r.src, r.dst));
                for (v, &n) in &got {
                    let w = want.receivers.get(v).copied().unwrap_or(0);
                    if n <= w {
                        continue;
                    }
                    if swapping > 0 && n <= swap_bound * w {
                        duplicated = true;
                    } else {
                        return Err(fail(
                            id,
                            format!(
                                "reached {} {n} times during the apply; both the current and the target overlay deliver it {w} times\n{}",
                                name(v),
                                want.route
                            ),
                        ));
                    }
                }
                let short = want
                    .receivers
                    .iter()
                    .any(|(v, w)| got.get(v).copied().unwrap_or(0) < *w);
                if short && !across_replaced {
                    return Err(fail(
                        id,
                        format!(
                            "the apply cut it: it reached {:?} (by VM), both overlays deliver it to {:?}\n{}",
                            got, want.receivers, want.route
                        ),
                    ));
                }
                probed.exact += usize::from(!across_replaced && !duplicated);
            }
            if duplicated {
                if probed.known.duplicated_while_replacing == 0 {
                    probed
                        .known
                        .examples
                        .push(example("duplicated while replacing", id));
                }
                probed.known.duplicated_while_replacing += 1;
            }
            if let Some(m) = model.as_mut() {
                let e = m.expect(src, r.dst);
                if e.clean && got != e.receivers {
                    return Err(fail(
                        id,
                        format!(
                            "the daemons disagree with the model of the overlay they run: copies {got:?}, model {:?}\n{}",
                            e.receivers, e.route
                        ),
                    ));
                }
            }
        }
        Ok(probed)
    }
}
