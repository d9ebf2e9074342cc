//! The adaptor's status file: written atomically by `vadapt run` after every round, read
//! by `vnet adapt status`, the demo and `vadapt evaluate`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use vadapt::status::Status;

/// Writes the status atomically (temporary file and rename), so a reader never sees half
/// a file.
pub fn write(status: &Status, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(status)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use vadapt::status::{AdaptorPhase, DecisionRecord, PlanSummary, Verdict, KEPT_DECISIONS};

    fn status() -> Status {
        Status {
            target: "lab t".into(),
            pid: 7,
            dry_run: false,
            phase: AdaptorPhase::Observing,
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
        write(&st, &path).unwrap();
        assert_eq!(read(&path).unwrap(), st);
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
        let missing = read(Path::new("/nonexistent/status.json")).unwrap_err();
        assert!(format!("{missing:#}").contains("is `vadapt run` running?"));
        let dir = std::env::temp_dir().join(format!("vnet-adapt-foreign-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("status.json");
        fs::write(&path, "{\"x\": 1}").unwrap();
        assert!(format!("{:#}", read(&path).unwrap_err()).contains("not an adaptor status"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
