//! The reservation script backend: an external reservation system (optical paths, a
//! site's own scheduler) plugged in as an executable. The protocol is in
//! `vadapt::reserve`'s module docs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vadapt::reserve::{
    validate, CpuReservation, LinkReservation, ReservationBackend, Reservations, ReserveError,
};

use crate::process::{self, Output};

/// How long [`ScriptBackend`] waits for one call of the script by default.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a failed call's output may take to arrive after the script exited (a process
/// the script started may keep its pipes open).
const DRAIN: Duration = Duration::from_millis(200);

/// An external reservation system called as an executable (protocol in the module docs).
#[derive(Debug)]
pub struct ScriptBackend {
    program: PathBuf,
    timeout: Duration,
    applied: Reservations,
}

impl ScriptBackend {
    /// A backend calling `program`, waiting [`DEFAULT_SCRIPT_TIMEOUT`] per call, with
    /// nothing reserved yet.
    pub fn new(program: impl Into<PathBuf>) -> ScriptBackend {
        ScriptBackend {
            program: program.into(),
            timeout: DEFAULT_SCRIPT_TIMEOUT,
            applied: Reservations::default(),
        }
    }

    /// The same, waiting at most `timeout` for each call.
    pub fn with_timeout(mut self, timeout: Duration) -> ScriptBackend {
        self.timeout = timeout;
        self
    }

    fn call(&self, args: &[String]) -> Result<(), ReserveError> {
        run_script(&self.program, args, self.timeout)
    }
}

impl ReservationBackend for ScriptBackend {
    fn apply(&mut self, links: &[LinkReservation], cpu: &[CpuReservation]) -> Result<(), ReserveError> {
        let (want_links, want_cpu) = validate(links, cpu)?;
        // Releases first: what they free may be what the new set asks for.
        let gone: Vec<LinkReservation> = self
            .applied
            .links
            .iter()
            .filter(|l| !want_links.contains_key(&(l.from.clone(), l.to.clone())))
            .cloned()
            .collect();
        for l in gone {
            self.call(&["release-link".into(), l.from.clone(), l.to.clone()])?;
            self.applied.links.retain(|a| a != &l);
        }
        let gone: Vec<CpuReservation> = self
            .applied
            .cpu
            .iter()
            .filter(|c| !want_cpu.contains_key(&c.vm))
            .cloned()
            .collect();
        for c in gone {
            self.call(&["release-cpu".into(), c.vm.clone()])?;
            self.applied.cpu.retain(|a| a != &c);
        }
        for ((from, to), mbps) in want_links {
            let l = LinkReservation { from, to, mbps };
            if self.applied.links.contains(&l) {
                continue;
            }
            self.call(&["link".into(), l.from.clone(), l.to.clone(), mbps.to_string()])?;
            self.applied
                .links
                .retain(|a| (&a.from, &a.to) != (&l.from, &l.to));
            self.applied.links.push(l);
            self.applied
                .links
                .sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        }
        for (vm, (period_ms, slice_ms)) in want_cpu {
            let c = CpuReservation {
                vm,
                period_ms,
                slice_ms,
            };
            if self.applied.cpu.contains(&c) {
                continue;
            }
            self.call(&[
                "cpu".into(),
                c.vm.clone(),
                period_ms.to_string(),
                slice_ms.to_string(),
            ])?;
            self.applied.cpu.retain(|a| a.vm != c.vm);
            self.applied.cpu.push(c);
            self.applied.cpu.sort_by(|a, b| a.vm.cmp(&b.vm));
        }
        Ok(())
    }

    fn current(&mut self) -> Result<Reservations, ReserveError> {
        Ok(self.applied.clone())
    }
}

/// Runs `program args...` ([`crate::process`]: its own process group, the last lines of
/// its output kept); fails unless it exits 0 within `timeout` (when it is killed with what
/// it started).
fn run_script(program: &Path, args: &[String], timeout: Duration) -> Result<(), ReserveError> {
    let command = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let fail = |reason: String| ReserveError::Script {
        command: command.clone(),
        reason,
    };
    let finished =
        process::run(Command::new(program).args(args), timeout).map_err(|e| fail(e.to_string()))?;
    let status = match finished.status {
        None => return Err(fail(format!("no answer within {timeout:?}: killed"))),
        Some(status) if status.success() => return Ok(()),
        Some(status) => status,
    };
    let Output { stdout, stderr } = finished.output(DRAIN);
    let printed = stdout.into_iter().chain(stderr).collect::<Vec<_>>().join("\n");
    let printed = printed.trim();
    Err(fail(if printed.is_empty() {
        format!("{status}")
    } else {
        format!("{status}: {printed}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;
    use std::fs;

    #[test]
    fn reserve_script_backend_calls_the_protocol() {
        let dir = TempDir::new("reserve-script");
        let log = dir.0.join("calls");
        let prog = dir.script(
            "reserve.sh",
            &format!(
                "echo \"$*\" >> {}\n[ \"$2\" = h9 ] && {{ echo no path to h9 >&2; exit 3; }}\nexit 0",
                log.display()
            ),
        );
        let calls = || fs::read_to_string(&log).unwrap_or_default();
        let mut b = ScriptBackend::new(&prog);

        b.apply(
            &[LinkReservation::new("h1", "h2", 60.0)],
            &[CpuReservation::new("vm0", 100.0, 25.0)],
        )
        .unwrap();
        assert_eq!(calls(), "link h1 h2 60\ncpu vm0 100 25\n");
        // The same set again: nothing to do.
        b.apply(
            &[LinkReservation::new("h1", "h2", 60.0)],
            &[CpuReservation::new("vm0", 100.0, 25.0)],
        )
        .unwrap();
        assert_eq!(calls().lines().count(), 2);

        // A new set: releases first, then changes and additions.
        fs::remove_file(&log).unwrap();
        b.apply(
            &[
                LinkReservation::new("h1", "h2", 12.5),
                LinkReservation::new("h2", "h3", 5.0),
            ],
            &[CpuReservation::new("vm1", 50.0, 10.0)],
        )
        .unwrap();
        assert_eq!(
            calls(),
            "release-cpu vm0\nlink h1 h2 12.5\nlink h2 h3 5\ncpu vm1 50 10\n"
        );
        assert_eq!(
            b.current().unwrap(),
            Reservations {
                links: vec![
                    LinkReservation::new("h1", "h2", 12.5),
                    LinkReservation::new("h2", "h3", 5.0)
                ],
                cpu: vec![CpuReservation::new("vm1", 50.0, 10.0)],
            }
        );

        // The script refuses one: the error carries what it printed; what it accepted
        // before stays recorded.
        fs::remove_file(&log).unwrap();
        let e = b
            .apply(
                &[
                    LinkReservation::new("h1", "h2", 12.5),
                    LinkReservation::new("h9", "h1", 1.0),
                ],
                &[],
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("link h9 h1 1") && e.contains("no path to h9"), "{e}");
        assert_eq!(calls(), "release-link h2 h3\nrelease-cpu vm1\nlink h9 h1 1\n");
        assert_eq!(
            b.current().unwrap().links,
            [LinkReservation::new("h1", "h2", 12.5)]
        );

        // An invalid set calls nothing.
        fs::remove_file(&log).unwrap();
        assert!(b.apply(&[LinkReservation::new("h1", "h1", 1.0)], &[]).is_err());
        assert_eq!(calls(), "");

        b.clear().unwrap();
        assert_eq!(calls(), "release-link h1 h2\n");
        assert_eq!(b.current().unwrap(), Reservations::default());
    }

    #[test]
    fn reserve_script_backend_times_out_and_reports_missing_program() {
        let dir = TempDir::new("reserve-slow");
        let prog = dir.script("reserve.sh", "exec sleep 30");
        let mut b = ScriptBackend::new(&prog).with_timeout(Duration::from_millis(200));
        let start = std::time::Instant::now();
        let e = b
            .apply(&[LinkReservation::new("h1", "h2", 1.0)], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no answer within"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(b.current().unwrap(), Reservations::default());

        let mut b = ScriptBackend::new(dir.0.join("missing"));
        let e = b
            .apply(&[], &[CpuReservation::new("vm0", 10.0, 1.0)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot start"), "{e}");
    }
}
