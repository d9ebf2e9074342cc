//! What the adaptor service (`vadapt run`) reports: its status and decision records.
//!
//! `vadapt run` rewrites its status file (atomically) after every round; for a lab the
//! file is `/run/vnet-lab/NAME/adapt/status.json`. The types live here, in the pure
//! library the service, `vnet adapt status` and the demo share, so the writer and the
//! readers cannot drift apart; `vadapt_service::status_file` reads and writes the file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// How many decisions the status file keeps (the log file keeps all of them).
pub const KEPT_DECISIONS: usize = 50;

/// What the adaptor is doing.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AdaptorPhase {
    /// Probing the host graph.
    Measuring,
    /// Waiting for VTTIF to report a settled application topology.
    Observing,
    /// Solving and applying a plan.
    Adapting,
    /// Stopped (after `--once`, a signal or an error).
    Stopped,
}

/// The adaptor's status: the current plan and the last decisions.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Status {
    /// The lab or description the adaptor drives.
    pub target: String,
    /// Process id of the adaptor.
    pub pid: u32,
    /// Decide and print only, never change anything.
    pub dry_run: bool,
    /// What it is doing now.
    pub phase: AdaptorPhase,
    /// Rounds run so far (observations evaluated).
    pub rounds: u64,
    /// Wall clock of the last update, ms since the Unix epoch.
    pub updated_unix_ms: u128,
    /// The host graph the adaptor measured: `from -> to` with bandwidth and latency.
    pub host_graph: Vec<MeasuredLink>,
    /// The application topology VTTIF reported last (VM names).
    pub topology: Option<vttif::AppTopology>,
    /// The configuration in force (the last applied plan), if any.
    pub current: Option<PlanSummary>,
    /// The last decisions, oldest first (at most [`KEPT_DECISIONS`]).
    pub decisions: Vec<DecisionRecord>,
    /// Why the adaptor stopped, when it stopped on an error.
    pub error: Option<String>,
}

/// One measured host pair.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MeasuredLink {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Available bandwidth, Mbit/s.
    pub mbps: f64,
    /// Round-trip latency, ms.
    pub rtt_ms: f64,
}

/// A plan, as far as an operator needs to see it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct PlanSummary {
    /// VM → host.
    pub placement: BTreeMap<String, String>,
    /// Overlay links the plan routes over, `(from, to)`.
    pub overlay_links: Vec<(String, String)>,
    /// Routes: `src VM -> dst VM` and the hosts on the way.
    pub routes: Vec<(String, String, Vec<String>)>,
    /// Bandwidth reservations: `(from, to, Mbit/s)`.
    pub link_reservations: Vec<(String, String, f64)>,
    /// CPU reservations: `(VM, period ms, slice ms)`.
    pub cpu_reservations: Vec<(String, f64, f64)>,
    /// The objective (sum of residual bottleneck bandwidths, Mbit/s, minus migration cost).
    pub objective: f64,
}

/// One decision: what triggered it, the objective before and after, what was done.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    /// Wall clock, ms since the Unix epoch.
    pub unix_ms: u128,
    /// Why the adaptor decided now (first observation, topology change, measurement change).
    pub trigger: String,
    /// Objective of the configuration in force.
    pub objective_before: f64,
    /// Objective of the plan found.
    pub objective_after: f64,
    /// Migration cost included in `objective_after`.
    pub migration_cost: f64,
    /// Whether the plan found meets every constraint (capacities, link bandwidth,
    /// latency bounds); an infeasible plan is never applied, however high its objective.
    pub feasible_after: bool,
    /// The algorithm that found the plan (`exact` or `anneal`).
    pub solver: String,
    /// The margin the gain had to exceed.
    pub margin: f64,
    /// Applied, kept (not worth it), dry run, or failed.
    pub verdict: Verdict,
    /// The plan found.
    pub plan: PlanSummary,
    /// What was done, in order (migrations, links, rules, reservations), with results.
    pub actions: Vec<String>,
    /// Milliseconds spent solving.
    pub solve_ms: f64,
    /// Milliseconds spent applying.
    pub apply_ms: f64,
}

/// The outcome of a decision.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The plan was applied.
    Applied,
    /// The gain did not exceed the margin; nothing changed.
    Kept,
    /// `--dry-run`: the plan would have been applied.
    WouldApply,
    /// Applying failed part-way; what was done is rolled back or listed in the actions.
    Failed,
}

impl Status {
    /// Keeps at most [`KEPT_DECISIONS`] decisions, adding `d`.
    pub fn push_decision(&mut self, d: DecisionRecord) {
        self.decisions.push(d);
        let excess = self.decisions.len().saturating_sub(KEPT_DECISIONS);
        self.decisions.drain(..excess);
    }

    /// A human-readable account: phase, plan in force, last decisions.
    pub fn text(&self, last: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "adaptor of {} (pid {}){}: {:?}, {} rounds",
            self.target,
            self.pid,
            if self.dry_run { " [dry run]" } else { "" },
            self.phase,
            self.rounds
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "stopped on error: {e}");
        }
        if let Some(t) = &self.topology {
            let _ = writeln!(
                s,
                "application topology: {} ({} VMs, {} edges)",
                t.shape.as_deref().unwrap_or("unrecognised"),
                t.nodes.len(),
                t.edges.len()
            );
        }
        match &self.current {
            Some(p) => {
                let _ = writeln!(s, "plan in force (objective {:.1}):", p.objective);
                s += &p.text();
            }
            None => s += "plan in force: none (the configuration the adaptor found)\n",
        }
        let shown = self.decisions.len().saturating_sub(last);
        for d in &self.decisions[shown..] {
            let _ = writeln!(s, "{}", d.text());
        }
        s
    }
}

impl DecisionRecord {
    /// One line for the decision, then one indented line per action.
    pub fn text(&self) -> String {
        let mut s = format!(
            "decision ({}): {:?}: objective {:.1} -> {:.1}{} (margin {:.1}, migration cost {:.1}), solved by {} in {:.0} ms, applied in {:.0} ms",
            self.trigger,
            self.verdict,
            self.objective_before,
            self.objective_after,
            if self.feasible_after { "" } else { " (infeasible plan)" },
            self.margin,
            self.migration_cost,
            self.solver,
            self.solve_ms,
            self.apply_ms
        );
        for a in &self.actions {
            let _ = write!(s, "\n  {a}");
        }
        s
    }
}

impl PlanSummary {
    /// Placement, links and reservations, one item per line.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let placement: Vec<String> = self.placement.iter().map(|(v, h)| format!("{v}@{h}")).collect();
        let _ = writeln!(s, "  placement: {}", placement.join(" "));
        let links: Vec<String> = self
            .overlay_links
            .iter()
            .map(|(a, b)| format!("{a}->{b}"))
            .collect();
        let _ = writeln!(s, "  overlay links: {}", links.join(" "));
        for (from, to, mbps) in &self.link_reservations {
            let _ = writeln!(s, "  reserve {from}->{to} {mbps:.1} Mbit/s");
        }
        for (vm, period, slice) in &self.cpu_reservations {
            let _ = writeln!(s, "  cpu {vm}: {slice:.1} ms every {period:.1} ms");
        }
        s
    }
}
