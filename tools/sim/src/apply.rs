//! `vnet apply` on the simulated daemons: the primitives of [`fn@lang::diff`] reach the
//! daemons step by step, and a probe runs after every change.
//!
//! Two groupings: [`Grouping::Primitives`] applies one primitive at a time (apply it with
//! [`lang::apply`], recompile, reconfigure the daemons it changes, probe);
//! [`Grouping::Fleet`] groups them as `vnet apply` does, with [`lang::steps`] (runs of one
//! machine's rules, a rule's swap in one replace, structure steps of their own); a step
//! sends one whole-configuration replace to every daemon it touches, in the step's
//! order, and the probe runs after every single replace, since traffic flows between
//! them. After a step, the links it added must be up (`vnet apply` waits for them before
//! moving traffic onto them).

use lang::{Action, Item, Overlay, Primitive};

use crate::check::{Violation, LINK_SETUP};
use crate::sim::Sim;

/// How primitives are grouped into daemon reconfigurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// One primitive per step.
    Primitives,
    /// As `vnet apply` groups them.
    Fleet,
}

/// The steps of `primitives` under `grouping`.
pub fn steps(primitives: &[Primitive], grouping: Grouping) -> Vec<lang::Step> {
    match grouping {
        Grouping::Primitives => primitives
            .iter()
            .map(|p| {
                let mut machines: Vec<String> = p.machines().into_iter().map(str::to_string).collect();
                machines.dedup();
                lang::Step {
                    primitives: vec![p.clone()],
                    machines,
                }
            })
            .collect(),
        Grouping::Fleet => lang::steps(primitives),
    }
}

/// Where an apply is when the probe runs.
#[derive(Clone, Copy, Debug)]
pub struct Stage<'a> {
    /// The step (from 1), and how many there are.
    pub step: (usize, usize),
    /// The step's primitives.
    pub primitives: &'a [Primitive],
    /// The machines reconfigured so far in this step.
    pub configured: &'a [&'a str],
    /// The overlay the daemons run, once every daemon of the step is reconfigured.
    pub overlay: Option<&'a Overlay>,
}

impl Stage<'_> {
    /// Where the apply is, for a failure report.
    pub fn describe(&self) -> String {
        let items: Vec<String> = self
            .primitives
            .iter()
            .map(|p| format!("{:?} {}", p.action, lang::printer::item(&p.item)))
            .collect();
        format!(
            "after step {}/{} ({}), reconfigured so far: {}",
            self.step.0,
            self.step.1,
            items.join("; "),
            self.configured.join(", ")
        )
    }
}

/// What an apply did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Primitives of the diff.
    pub primitives: usize,
    /// Steps they were grouped into.
    pub steps: usize,
    /// Daemon reconfigurations sent.
    pub replaces: usize,
    /// Probes run.
    pub probes: usize,
}

/// Applies the diff from `current` (what `sim`'s daemons run) to `target` under
/// `grouping`, running `probe` after every change (module docs); checks that the daemons
/// end up running `target`.
pub fn execute(
    sim: &mut Sim,
    current: &Overlay,
    target: &Overlay,
    grouping: Grouping,
    mut probe: impl FnMut(&mut Sim, &Stage<'_>) -> Result<(), Violation>,
) -> Result<Applied, Violation> {
    let primitives = lang::diff(current, target);
    let steps = steps(&primitives, grouping);
    let mut done = Applied {
        primitives: primitives.len(),
        steps: steps.len(),
        ..Applied::default()
    };
    let failed = |what: String| Violation::general(what);
    let mut state = current.clone();
    for (i, step) in steps.iter().enumerate() {
        state = lang::apply(&state, &step.primitives).map_err(|e| failed(format!("step {}: {e}", i + 1)))?;
        let compiled = lang::compile(&state).map_err(|e| failed(format!("step {}: {e}", i + 1)))?;
        let machines: Vec<&str> = step.machines.iter().map(String::as_str).collect();
        for (n, m) in machines.iter().enumerate() {
            let topology = compiled.get(*m).cloned().unwrap_or_default();
            sim.configure(m, topology).map_err(|e| failed(e.to_string()))?;
            done.replaces += 1;
            // Links the replace started handshake before the probe, as `vnet apply`
            // waits for them.
            sim.await_links(LINK_SETUP).map_err(|e| failed(e.to_string()))?;
            sim.run_until_idle().map_err(|e| failed(e.to_string()))?;
            let all = n + 1 == machines.len();
            if grouping == Grouping::Fleet || all {
                let stage = Stage {
                    step: (i + 1, steps.len()),
                    primitives: &step.primitives,
                    configured: &machines[..=n],
                    overlay: all.then_some(&state),
                };
                probe(sim, &stage)?;
                done.probes += 1;
            }
        }
        for p in &step.primitives {
            if let (Action::Add, Item::Link(l)) = (p.action, &p.item) {
                if sim.link_session(&l.name()).is_none() {
                    return Err(failed(format!(
                        "step {}: link {} is not up after it",
                        i + 1,
                        l.name()
                    )));
                }
            }
        }
    }
    if state != *target {
        return Err(failed("the diff applied does not give the target".into()));
    }
    let compiled = lang::compile(target).map_err(|e| failed(e.to_string()))?;
    for (m, want) in compiled {
        let running = sim.daemon(&m).map(|d| {
            let mut t = d.topology().clone();
            t.rules.iter_mut().for_each(|r| r.id = None);
            t
        });
        if running.as_ref() != Some(&want) {
            return Err(failed(format!(
                "after the apply `{m}` does not run its part of the target"
            )));
        }
    }
    Ok(done)
}
