//! What the adaptor service (`vadapt run`) reports, and `vnet adapt status`, which shows it.
//!
//! `vadapt run` rewrites its status file (atomically) after every round; for a lab the
//! file is `/run/vnet-lab/NAME/adapt/status.json`. The types live here, in the library
//! both binaries share, so the writer and the readers cannot drift apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// How many decisions the status file keeps (the log file keeps all of them).
pub const KEPT_DECISIONS: usize = 50;

/// What the adaptor is doing.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
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
    pub phase: Phase,
    /// Rounds run so far (observations evaluated).
    pub rounds: u64,
    /// Wall clock of the last update, ms since the Unix epoch.
    pub updated_unix_ms: u128,
    /// The host graph the adaptor measured: `from -> to` with bandwidth and latency.
    pub host_graph: Vec<MeasuredLink>,
    /// The application topology VTTIF reported last (VM names).
    pub topology: Option<vttif::Topology>,
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

/// The status file of lab `name`'s adaptor.
pub fn lab_status_path(name: &str) -> PathBuf {
    crate::lab::lab_dir(name).join("adapt").join("status.json")
}

impl Status {
    /// Writes the status atomically (temporary file and rename), so a reader never sees
    /// half a file.
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
    }

    /// Reads a status file.
    pub fn read(path: &Path) -> Result<Status> {
        let text = fs::read(path).with_context(|| {
            format!(
                "cannot read the adaptor status {} (is `vadapt run` running?)",
                path.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not an adaptor status", path.display()))
    }

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

/// `vnet adapt ...`.
#[derive(clap::Subcommand, Debug)]
pub enum AdaptCommand {
    /// Show what the adaptor (`vadapt run`) is doing: the plan in force and the last
    /// decisions with the objective before and after.
    Status {
        /// The lab whose adaptor to show.
        #[arg(long, conflicts_with = "status")]
        lab: Option<String>,
        /// The adaptor's status file (`vadapt run --status FILE`).
        #[arg(long, value_name = "FILE")]
        status: Option<PathBuf>,
        /// How many decisions to show.
        #[arg(long, default_value_t = 5)]
        last: usize,
        /// Print the whole status as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `vnet adapt ...`.
pub fn run(cmd: AdaptCommand) -> Result<()> {
    match cmd {
        AdaptCommand::Status {
            lab,
            status,
            last,
            json,
        } => {
            let path = match (lab, status) {
                (_, Some(p)) => p,
                (Some(lab), None) => lab_status_path(&lab),
                (None, None) => anyhow::bail!("name the adaptor: --lab NAME or --status FILE"),
            };
            let st = Status::read(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", st.text(last));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            target: "lab t".into(),
            pid: 7,
            dry_run: false,
            phase: Phase::Observing,
            rounds: 3,
            updated_unix_ms: 1,
            host_graph: vec![],
            topology: None,
            current: None,
            decisions: vec![],
            error: None,
        }
    }

    fn decision(n: u128) -> DecisionRecord {
        DecisionRecord {
            unix_ms: n,
            trigger: "topology".into(),
            objective_before: 1.0,
            objective_after: 2.0,
            migration_cost: 0.0,
            feasible_after: true,
            solver: "anneal".into(),
            margin: 0.1,
            verdict: Verdict::Applied,
            plan: PlanSummary::default(),
            actions: vec!["migrate vm0 h1->h2: ok".into()],
            solve_ms: 1.0,
            apply_ms: 2.0,
        }
    }

    #[test]
    fn round_trips_through_its_file_and_keeps_the_last_decisions() {
        let dir = std::env::temp_dir().join(format!("vnet-adapt-status-{}", std::process::id()));
        let path = dir.join("status.json");
        let mut st = status();
        for n in 0..(KEPT_DECISIONS as u128 + 5) {
            st.push_decision(decision(n));
        }
        assert_eq!(st.decisions.len(), KEPT_DECISIONS);
        assert_eq!(st.decisions[0].unix_ms, 5);
        st.write(&path).unwrap();
        assert_eq!(Status::read(&path).unwrap(), st);
        let text = st.text(1);
        assert!(
            text.contains("Applied") && text.contains("migrate vm0 h1->h2"),
            "{text}"
        );
        assert_eq!(text.matches("decision (").count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_foreign_file_is_a_clear_error() {
        let missing = Status::read(Path::new("/nonexistent/status.json")).unwrap_err();
        assert!(format!("{missing:#}").contains("is `vadapt run` running?"));
        let dir = std::env::temp_dir().join(format!("vnet-adapt-foreign-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("status.json");
        fs::write(&path, "{\"x\": 1}").unwrap();
        assert!(format!("{:#}", Status::read(&path).unwrap_err()).contains("not an adaptor status"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
