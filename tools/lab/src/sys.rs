//! The lab's contact with the system: one helper that runs a command (`ip`, `tc`) and
//! turns its failure into an error naming the command and its stderr, namespace
//! listing, and process signals (through `vnet_sys`, which holds every `unsafe`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs `prog args...`, returns its stdout; fails with "prog args...: stderr" when it
/// cannot start or exits unsuccessfully.
pub fn run<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> Result<String> {
    let line = command_line(prog, args);
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{line}: cannot run `{prog}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        if stderr.is_empty() {
            bail!("{line}: {}", out.status);
        }
        bail!("{line}: {stderr}");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn command_line<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> String {
    let mut line = prog.to_string();
    for a in args {
        line.push(' ');
        line.push_str(&a.as_ref().to_string_lossy());
    }
    line
}

/// The last `lines` lines of a log, for error messages (a missing log reads as empty).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        format!("{} is empty", path.display())
    } else {
        format!("last lines of {}:\n{tail}", path.display())
    }
}

/// `ip args...`.
pub fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    run("ip", args)
}

/// `ip -n NS args...`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// `tc args...` inside namespace `ns` (`ip netns exec NS tc ...`).
pub fn tc_in(ns: &str, args: &[String]) -> Result<()> {
    let mut all: Vec<String> = ["netns", "exec", ns, "tc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend_from_slice(args);
    ip(&all).map(drop)
}

/// The named network namespaces (`ip netns list`).
pub fn netns_list() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    // Lines read "name" or "name (id: 3)".
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The PIDs of the processes inside namespace `ns` (`ip netns pids NS`).
pub fn netns_pids(ns: &str) -> Result<Vec<u32>> {
    let out = ip(&["netns", "pids", ns])?;
    Ok(out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
}

/// Polls `done` every `every` until it returns true or `timeout` passes; returns whether
/// it became true.
pub fn poll_until(timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Milliseconds since the Unix epoch (the wall clock status files and reports carry).
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The signals the lab sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: please exit.
    Term,
    /// SIGKILL.
    Kill,
}

/// A PID the lab may signal: positive, not init, not ourselves. `kill(0|-1, ..)` would hit
/// a whole process group or every process, so those never get through.
fn signalable(pid: u32) -> Option<libc::pid_t> {
    let p = libc::pid_t::try_from(pid).ok()?;
    (p > 1 && pid != std::process::id()).then_some(p)
}

/// Sends `sig` to `pid`; false when the process does not exist (or the PID is refused).
pub fn signal(pid: u32, sig: Signal) -> bool {
    let Some(p) = signalable(pid) else {
        return false;
    };
    let s = match sig {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    vnet_sys::kill(p, s)
}

/// Whether `pid` is still running. Reaps it first if it is our own child (a library
/// caller of `up` is the vnetds' parent), and counts a zombie as gone.
pub fn alive(pid: u32) -> bool {
    let Some(p) = signalable(pid) else {
        return false;
    };
    if vnet_sys::reap_if_exited(p) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name, which may contain spaces.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Whether process `pid`'s command line contains `needle` (checks that a recorded PID
/// still is the process we started, not a reuse of its number).
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

/// SIGTERMs `pids`, waits up to `grace` for them to exit, SIGKILLs the rest and waits a
/// little more. Returns the PIDs that survived even that.
pub fn terminate(pids: &[u32], grace: Duration) -> Vec<u32> {
    let pids: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| signal(p, Signal::Term))
        .collect();
    let step = Duration::from_millis(20);
    poll_until(grace, step, || pids.iter().all(|&p| !alive(p)));
    let rest: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    for &p in &rest {
        signal(p, Signal::Kill);
    }
    poll_until(Duration::from_secs(1), step, || rest.iter().all(|&p| !alive(p)));
    rest.into_iter().filter(|&p| alive(p)).collect()
}

/// The workspace binary `name` next to this program (or next to the directory of a test
/// binary in `deps/`), the way cargo lays out its target directory.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this program's directory")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = (d.file_name() == Some("deps".as_ref()))
            .then(|| d.parent().map(Path::to_path_buf))
            .flatten();
    }
    bail!(
        "no {name} binary next to {}: build it with `cargo build --release -p {}`",
        exe.display(),
        match name {
            "vnet" => "vnet-cli",
            "vadapt" => "vadapt-service",
            other => other,
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_shows_the_last_lines_or_says_the_log_is_empty() {
        let path = std::env::temp_dir().join(format!("vnet-lab-log-tail-{}.log", std::process::id()));
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let tail = log_tail(&path, 2);
        let empty = log_tail(&path.with_extension("missing"), 2);
        let all = log_tail(&path, 10);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(tail, format!("last lines of {}:\ntwo\nthree", path.display()));
        assert!(all.ends_with(":\none\ntwo\nthree"), "{all}");
        assert!(empty.ends_with(".missing is empty"), "{empty}");
    }

    #[test]
    fn run_reports_command_and_stderr() {
        assert_eq!(run("sh", &["-c", "echo out"]).unwrap(), "out\n");
        let e = run("sh", &["-c", "echo oops >&2; exit 3"])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "sh -c echo oops >&2; exit 3: oops");
        let e = run("sh", &["-c", "exit 4"]).unwrap_err().to_string();
        assert!(e.starts_with("sh -c exit 4: exit status: 4"), "{e}");
        let e = run("/nonexistent/prog", &["x"]).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("/nonexistent/prog x: cannot run"),
            "{e:#}"
        );
    }

    #[test]
    fn refuses_dangerous_pids() {
        assert_eq!(signalable(0), None);
        assert_eq!(signalable(1), None);
        assert_eq!(signalable(u32::MAX), None);
        assert_eq!(signalable(std::process::id()), None);
        assert!(!signal(0, Signal::Term));
        assert!(!alive(0));
    }

    #[test]
    fn terminates_and_reaps_a_child() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(alive(pid));
        // Until the child has exec'd, its command line is still ours.
        assert!(poll_until(
            Duration::from_secs(2),
            Duration::from_millis(1),
            || cmdline_contains(pid, "sleep")
        ));
        assert!(terminate(&[pid], Duration::from_secs(3)).is_empty());
        assert!(!alive(pid));
        // Already reaped by `alive`; this only satisfies the type's contract.
        let _ = child.wait();
    }

    #[test]
    fn polls_with_a_deadline() {
        let mut n = 0;
        assert!(poll_until(
            Duration::from_secs(1),
            Duration::from_millis(1),
            || {
                n += 1;
                n == 3
            }
        ));
        assert!(!poll_until(
            Duration::from_millis(20),
            Duration::from_millis(5),
            || false
        ));
    }
}
