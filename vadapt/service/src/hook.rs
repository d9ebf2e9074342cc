//! The migration hook contract (tools/hooks/README.md) and its runner: how the adaptor
//! asks the world to move a VM from one host to another.
//!
//! A hook is an executable called as `HOOK VM MAC FROM TO`, with `VNET_VM`, `VNET_MAC`,
//! `VNET_FROM` and `VNET_TO` (and whatever [`Hook::env`] adds, e.g. `VNET_LAB`) in its
//! environment. Exit status 0 means the VM now runs at TO and TO's vnetd serves its MAC;
//! anything else, or running past the timeout, means it failed and the VM still runs at
//! FROM. The runner ([`crate::process`]) starts the hook in a process group of its own,
//! so on timeout it kills the hook and everything the hook started, and reaps it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub use vadapt::plan::MigrationRequest;

pub use crate::process::TAIL_LINES;
use crate::process::{self, Output, RunError};

/// How long a hook may run unless [`Hook::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the runner waits for the output pipes to close after the hook exited (a
/// daemon the hook started may keep them open; its output is then cut short).
const DRAIN: Duration = Duration::from_secs(1);

/// A migration hook: the program and how to call it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// The executable.
    pub program: PathBuf,
    /// How long it may run before it is killed and the migration counts as failed.
    pub timeout: Duration,
    /// Extra environment variables (e.g. `VNET_LAB`).
    pub env: Vec<(String, String)>,
}

/// What a successful hook did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HookOutcome {
    /// How long it ran.
    pub elapsed: Duration,
    /// The last lines it printed on stdout.
    pub stdout: Vec<String>,
    /// The last lines it printed on stderr.
    pub stderr: Vec<String>,
}

/// Why a migration through a hook failed. In every case the hook has exited (or was
/// killed) and been reaped.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook could not be started (missing, not executable, bad interpreter).
    #[error("migration hook {program}: cannot start it: {source}")]
    Spawn {
        /// The executable.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The hook exited unsuccessfully: the VM stays where it was.
    #[error("migration hook {program} failed ({status}) after {:.1} s{}", elapsed.as_secs_f64(), tail(output))]
    Failed {
        /// The executable.
        program: PathBuf,
        /// Its exit status.
        status: String,
        /// How long it ran.
        elapsed: Duration,
        /// The last lines of its stdout and stderr.
        output: Vec<String>,
    },
    /// The hook ran past its timeout and was killed with everything it started.
    #[error("migration hook {program} did not finish within {} s and was killed{}", timeout.as_secs_f64(), tail(output))]
    TimedOut {
        /// The executable.
        program: PathBuf,
        /// The timeout.
        timeout: Duration,
        /// The last lines of its stdout and stderr.
        output: Vec<String>,
    },
    /// Waiting for the hook failed (the runner lost track of its child).
    #[error("migration hook {program}: waiting for it: {source}")]
    Wait {
        /// The executable.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn tail(output: &[String]) -> String {
    if output.is_empty() {
        "; it printed nothing".to_string()
    } else {
        format!("; its last lines:\n{}", output.join("\n"))
    }
}

impl Hook {
    /// A hook with the default timeout and no extra environment.
    pub fn new(program: impl Into<PathBuf>) -> Hook {
        Hook {
            program: program.into(),
            timeout: DEFAULT_TIMEOUT,
            env: Vec::new(),
        }
    }

    /// Runs the hook for `m` and waits for it, at most [`Hook::timeout`].
    pub fn run(&self, m: &MigrationRequest) -> Result<HookOutcome, HookError> {
        let mut command = Command::new(&self.program);
        command
            .args([&m.vm, &m.mac, &m.from, &m.to])
            .env("VNET_VM", &m.vm)
            .env("VNET_MAC", &m.mac)
            .env("VNET_FROM", &m.from)
            .env("VNET_TO", &m.to)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let program = self.program.clone();
        let finished = process::run(&mut command, self.timeout).map_err(|e| match e {
            RunError::Spawn(source) => HookError::Spawn { program, source },
            RunError::Wait(source) => HookError::Wait { program, source },
        })?;
        let Output { stdout, stderr } = finished.output(DRAIN);
        let output = || -> Vec<String> {
            let out = stdout.iter().map(|l| format!("stdout: {l}"));
            let err = stderr.iter().map(|l| format!("stderr: {l}"));
            let all: Vec<String> = out.chain(err).collect();
            all[all.len().saturating_sub(TAIL_LINES)..].to_vec()
        };
        match finished.status {
            Some(s) if s.success() => Ok(HookOutcome {
                elapsed: finished.elapsed,
                stdout: stdout.clone(),
                stderr: stderr.clone(),
            }),
            Some(s) => Err(HookError::Failed {
                program: self.program.clone(),
                status: s.to_string(),
                elapsed: finished.elapsed,
                output: output(),
            }),
            None => Err(HookError::TimedOut {
                program: self.program.clone(),
                timeout: self.timeout,
                output: output(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::Instant;

    fn request() -> MigrationRequest {
        MigrationRequest {
            vm: "vm1".into(),
            mac: "02:00:00:00:00:02".into(),
            from: "h2".into(),
            to: "h3".into(),
        }
    }

    #[test]
    fn success_passes_arguments_and_environment() {
        let dir = TempDir::new("hook-ok");
        let hook = Hook {
            env: vec![("VNET_LAB".into(), "t".into())],
            ..Hook::new(dir.script(
                "hook",
                "echo \"args $1 $2 $3 $4\"\necho \"env $VNET_VM $VNET_MAC $VNET_FROM $VNET_TO $VNET_LAB\"\necho note >&2",
            ))
        };
        let out = hook.run(&request()).unwrap();
        assert_eq!(
            out.stdout,
            [
                "args vm1 02:00:00:00:00:02 h2 h3",
                "env vm1 02:00:00:00:00:02 h2 h3 t"
            ]
        );
        assert_eq!(out.stderr, ["note"]);
        assert!(out.elapsed < DEFAULT_TIMEOUT);
    }

    #[test]
    fn non_zero_exit_fails_with_the_output() {
        let dir = TempDir::new("hook-fail");
        let hook = Hook::new(dir.script(
            "hook",
            "i=0; while [ $i -lt 30 ]; do echo line$i; i=$((i+1)); done\necho 'cannot reach h3' >&2\nexit 3",
        ));
        let e = hook.run(&request()).unwrap_err();
        let HookError::Failed { status, output, .. } = &e else {
            panic!("{e}")
        };
        assert!(status.contains('3'), "{status}");
        // Only the last lines are kept, the error's among them.
        assert_eq!(output.len(), TAIL_LINES);
        assert!(
            output.contains(&"stderr: cannot reach h3".to_string()),
            "{output:?}"
        );
        assert!(!output.contains(&"stdout: line0".to_string()));
        let text = e.to_string();
        assert!(
            text.contains("failed (exit status: 3)") && text.contains("cannot reach h3"),
            "{text}"
        );
    }

    #[test]
    fn timeout_kills_the_hook_and_its_children() {
        let dir = TempDir::new("hook-slow");
        let pid_file = dir.0.join("child.pid");
        let hook = Hook {
            timeout: Duration::from_millis(300),
            ..Hook::new(dir.script(
                "hook",
                &format!(
                    "echo starting\nsleep 30 &\necho $! > {}\nwait",
                    pid_file.display()
                ),
            ))
        };
        let started = Instant::now();
        let e = hook.run(&request()).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, HookError::TimedOut { .. }), "{e}");
        assert!(e.to_string().contains("stdout: starting"), "{e}");
        assert!(
            took < Duration::from_millis(300) + Duration::from_secs(2),
            "took {took:?}"
        );
        // The hook's own child went with it.
        let child: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            vnet_lab::sys::poll_until(Duration::from_secs(2), Duration::from_millis(10), || {
                !vnet_lab::sys::alive(child)
            }),
            "the hook's child {child} survived"
        );
    }

    #[test]
    fn a_missing_hook_is_a_spawn_error() {
        let e = Hook::new("/nonexistent/hook").run(&request()).unwrap_err();
        assert!(matches!(e, HookError::Spawn { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/hook"), "{e}");
    }

    fn example_hooks() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/hooks");
        let mut hooks: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none())
            .collect();
        hooks.sort();
        assert_eq!(hooks.len(), 3, "{hooks:?}");
        hooks
    }

    #[test]
    fn example_hooks_are_valid_bash() {
        for hook in example_hooks() {
            let out = Command::new("bash").arg("-n").arg(&hook).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                hook.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let mode = std::fs::metadata(&hook).unwrap().permissions().mode();
            assert!(mode & 0o111 != 0, "{} is not executable", hook.display());
        }
    }

    #[test]
    fn example_hooks_say_which_tool_is_missing() {
        // A PATH with bash (for the scripts' `#!/usr/bin/env bash`) and nothing else.
        let dir = TempDir::new("hook-nopath");
        let bash = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v bash"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::os::unix::fs::symlink(bash.trim(), dir.0.join("bash")).unwrap();
        for hook in example_hooks() {
            let h = Hook {
                env: vec![
                    ("PATH".into(), dir.0.display().to_string()),
                    ("VNET_LAB".into(), "t".into()),
                ],
                ..Hook::new(&hook)
            };
            let e = h.run(&request()).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(e, HookError::Failed { .. }) && text.contains("not found"),
                "{}: {text}",
                hook.display()
            );
        }
    }
}
