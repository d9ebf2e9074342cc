//! Processes and waiting: the workspace's binaries, commands and their output, signals,
//! children killed when dropped, and polling for a condition with a deadline.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Poll interval of every wait.
pub const POLL: Duration = Duration::from_millis(25);

/// The cargo target directory: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        // A relative CARGO_TARGET_DIR is taken from where cargo ran: the workspace, here.
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// A binary of the workspace's debug build; panics if it is not built.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Whether this process may build labs. If not, prints a loud SKIPPED line and returns
/// false, so the test returns early; under `CI=true` it panics instead, so a CI run
/// never passes by skipping.
pub fn root_or_skip(test: &str) -> bool {
    static CAN: OnceLock<bool> = OnceLock::new();
    let can = *CAN.get_or_init(|| {
        // A namespace name no lab uses (lab namespaces look like `NAME-h1`).
        let ns = format!("e2eprobe{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        ok
    });
    if !can {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: needs root / CAP_NET_ADMIN (cannot create a network namespace), and CI=true forbids skipping");
        }
        // Straight to stderr, past the test harness's output capture.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: needs root / CAP_NET_ADMIN");
    }
    can
}

/// Polls `cond` every [`POLL`] until it holds (returns how long that took) or `timeout`
/// passes (returns `None`).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Like [`wait_until`], but panics naming `what` when the deadline passes.
pub fn wait_for(timeout: Duration, what: &str, cond: impl FnMut() -> bool) -> Duration {
    wait_until(timeout, cond).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Whether process `pid` exists and is not a zombie (a daemon that exited but that
/// nobody has reaped yet counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Sends signal `sig` (`TERM`, `KILL`) to `pid` with the `kill` command.
pub fn kill(pid: u32, sig: &str) {
    assert!(pid > 1, "refusing to signal PID {pid}");
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Runs a command; its stdout, or an error with the command line, status and stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the `vnet` CLI.
pub fn vnet(args: &[&str]) -> Result<String, String> {
    run(Command::new(bin("vnet")).args(args))
}

/// A command to run inside network namespace `ns`.
pub fn in_netns(ns: &str, prog: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog);
    c
}

/// A child process that is killed (SIGKILL to its own PID) and reaped when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// The PID.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it has exited (and reaps it if so).
    pub fn exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
