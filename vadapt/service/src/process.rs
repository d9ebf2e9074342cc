//! The one runner of external programs the adaptor calls (migration hooks, the reservation
//! script): a program runs with stdin on `/dev/null`, in a process group of its own, with
//! its stdout and stderr drained by threads (so it never blocks on a full pipe). Past its
//! timeout the whole group (the program and everything it started) is killed with SIGKILL
//! and the program is reaped. The last [`TAIL_LINES`] lines of each stream are kept, each
//! cut at [`MAX_LINE`] bytes, so a program printing megabytes or binary junk stays
//! readable in an error.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use vnet_lab::sys::poll_until;

/// How many of the last lines of each of the program's stdout and stderr are kept.
pub const TAIL_LINES: usize = 20;
/// Longest line kept, in bytes (longer ones are cut and marked ` [...]`).
pub const MAX_LINE: usize = 500;
/// How often the runner checks whether the program has exited.
const POLL: Duration = Duration::from_millis(5);

/// Why a program could not be run to its end. In both cases nothing of it is left running
/// that the runner could reach.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started (missing, not executable, bad interpreter).
    #[error("cannot start: {0}")]
    Spawn(std::io::Error),
    /// Waiting for the program failed (the runner lost track of its child); its group was
    /// killed.
    #[error("waiting for it: {0}")]
    Wait(std::io::Error),
}

/// A program that has exited or was killed at its timeout, and was reaped.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status; `None` when it ran past the timeout and was killed.
    pub status: Option<ExitStatus>,
    /// How long it ran.
    pub elapsed: Duration,
    stdout: Tail,
    stderr: Tail,
}

/// The last lines a program printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The last lines of its stdout.
    pub stdout: Vec<String>,
    /// The last lines of its stderr.
    pub stderr: Vec<String>,
}

impl Finished {
    /// What it printed, once each pipe has closed. A process the program started may keep
    /// a pipe open after the program ended: the runner waits at most `drain` for each
    /// stream, and a stream still open then gives no lines.
    pub fn output(&self, drain: Duration) -> Output {
        Output {
            stdout: self.stdout.lines(drain),
            stderr: self.stderr.lines(drain),
        }
    }
}

/// Runs `command` (its program, arguments and environment as the caller set them; stdin,
/// stdout, stderr and the process group are the runner's) and waits for it, at most
/// `timeout` (module docs: what happens then).
pub fn run(command: &mut Command, timeout: Duration) -> Result<Finished, RunError> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: on timeout the whole group goes, the program's children included.
        .process_group(0)
        .spawn()
        .map_err(RunError::Spawn)?;
    let stdout = Tail::collect(child.stdout.take());
    let stderr = Tail::collect(child.stderr.take());
    let mut waited = Ok(None);
    poll_until(timeout, POLL, || {
        waited = child.try_wait();
        !matches!(waited, Ok(None))
    });
    let status = match waited {
        Ok(Some(status)) => Some(status),
        Ok(None) => {
            kill(&mut child).map_err(RunError::Wait)?;
            None
        }
        Err(e) => {
            let _ = kill(&mut child);
            return Err(RunError::Wait(e));
        }
    };
    Ok(Finished {
        status,
        elapsed: started.elapsed(),
        stdout,
        stderr,
    })
}

/// Kills the child's process group and the child, and reaps the child.
fn kill(child: &mut Child) -> std::io::Result<()> {
    kill_group(child.id());
    // The leader itself, in case the group kill could not be sent.
    let _ = child.kill();
    child.wait().map(drop)
}

/// SIGKILLs process group `pgid` (the program and what it started) with kill(1): the only
/// `unsafe` allowed is in vnet-sys, whose `kill` refuses groups.
fn kill_group(pgid: u32) {
    // A group id is the PID of the child we spawned: never 0 or 1, never ours.
    if pgid > 1 && pgid != std::process::id() {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The last lines of a pipe, read by a thread of its own.
#[derive(Debug)]
struct Tail {
    done: mpsc::Receiver<VecDeque<String>>,
}

impl Tail {
    fn collect(pipe: Option<impl Read + Send + 'static>) -> Tail {
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = pipe {
            thread::spawn(move || {
                let mut lines = VecDeque::new();
                for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                    if lines.len() == TAIL_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(cut(String::from_utf8_lossy(&line).into_owned()));
                }
                let _ = tx.send(lines);
            });
        }
        Tail { done: rx }
    }

    /// The lines, once the pipe has closed (or `drain` has passed: then none).
    fn lines(&self, drain: Duration) -> Vec<String> {
        self.done.recv_timeout(drain).map(Vec::from).unwrap_or_default()
    }
}

/// `text` cut to [`MAX_LINE`] bytes at a character boundary, marked when cut.
fn cut(mut text: String) -> String {
    if text.len() > MAX_LINE {
        let at = (0..=MAX_LINE)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(at);
        text.push_str(" [...]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAIN: Duration = Duration::from_secs(1);

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn keeps_the_last_lines_of_each_stream() {
        let f = run(
            &mut sh("i=0; while [ $i -lt 30 ]; do echo out$i; i=$((i+1)); done; echo err >&2; exit 4"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(f.status.and_then(|s| s.code()), Some(4));
        let out = f.output(DRAIN);
        assert_eq!(out.stdout.len(), TAIL_LINES);
        assert_eq!(
            (out.stdout[0].as_str(), out.stdout[19].as_str()),
            ("out10", "out29")
        );
        assert_eq!(out.stderr, ["err"]);
    }

    #[test]
    fn cuts_long_lines_at_a_character_boundary() {
        assert_eq!(cut("short".into()), "short");
        let long = format!("a{}", "é".repeat(400));
        let c = cut(long);
        assert!(c.ends_with(" [...]") && c.len() <= MAX_LINE + 6, "{}", c.len());
        let f = run(
            &mut sh("head -c 2000 /dev/zero | tr '\\0' x"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(
            f.output(DRAIN).stdout,
            [format!("{} [...]", "x".repeat(MAX_LINE))]
        );
    }

    #[test]
    fn stdin_is_empty() {
        let f = run(&mut sh("cat; echo done"), Duration::from_secs(10)).unwrap();
        assert!(f.status.is_some_and(|s| s.success()));
        assert_eq!(f.output(DRAIN).stdout, ["done"]);
    }

    #[test]
    fn a_timeout_kills_the_group_and_reports_no_status() {
        let started = Instant::now();
        let f = run(&mut sh("echo begun; sleep 30 & wait"), Duration::from_millis(200)).unwrap();
        assert_eq!(f.status, None);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // The group is gone, so the pipes close and the output arrives.
        assert_eq!(f.output(DRAIN).stdout, ["begun"]);
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run(&mut Command::new("/nonexistent/program"), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, RunError::Spawn(_)), "{e}");
    }
}
