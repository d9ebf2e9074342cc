//! `vnet demo` end to end: the adaptor (`vadapt run`) makes the Patterns workload faster
//! on a lab whose star crosses a slow proxy, the JSON report carries the figures, and the
//! demo leaves nothing behind, also when it is interrupted with SIGINT (Ctrl-C).
//!
//! The demo runs debug binaries on a possibly loaded 2-core machine: the speedup asserted
//! here is a safe lower bound (the evaluation's target, 2.5×, is checked by hand on
//! release builds; the figure is printed).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use vnet_e2e::{bin, kill, pid_alive, root_or_skip, vnet, wait_until};

/// The least speedup asserted here.
const MIN_SPEEDUP: f64 = 1.5;
/// How long a whole demo may take here (it aims at 2 minutes on release builds).
const DEMO_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an interrupted demo may take to clean up and exit.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The demos of this file run one at a time: each builds a lab and measures throughput.
static SERIAL: Mutex<()> = Mutex::new(());

/// Tears lab `name` down when dropped, whatever the test did (after its own checks).
struct Teardown(&'static str);

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(e) = vnet(&["lab", "down", "--name", self.0]) {
            eprintln!("demo test: tearing down lab {}: {e}", self.0);
        }
    }
}

/// A `vnet demo` process with its stdout and stderr collected by threads (so that a full
/// pipe never stalls it); killed when dropped before it has exited.
struct Demo {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// The bytes it has printed on stderr so far.
    progress: Arc<Mutex<Vec<u8>>>,
}

/// Reads `from` to its end on a thread, appending to `so_far` as bytes arrive.
fn collect(mut from: impl Read + Send + 'static, so_far: Arc<Mutex<Vec<u8>>>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut chunk) {
            so_far
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&chunk[..n]);
        }
        let all = so_far.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&all).into_owned()
    })
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(bin("vnet"))
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting vnet demo");
        let progress = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().map(|o| collect(o, Arc::default()));
        let stderr = child.stderr.take().map(|e| collect(e, progress.clone()));
        Demo {
            child,
            stdout,
            stderr,
            progress,
        }
    }

    /// What it has printed on stderr so far.
    fn stderr_so_far(&self) -> String {
        let so_far = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&so_far).into_owned()
    }

    /// Waits for it to exit; returns whether it succeeded, its stdout and its stderr.
    fn finish(mut self, timeout: Duration) -> (bool, String, String) {
        let mut status = None;
        let done = wait_until(timeout, || {
            status = self.child.try_wait().expect("checking on vnet demo");
            status.is_some()
        });
        if done.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let out = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        assert!(
            done.is_some(),
            "vnet demo did not exit within {timeout:?}; stderr:\n{err}"
        );
        (status.is_some_and(|s| s.success()), out, err)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The namespaces of lab `name` that exist.
fn namespaces(name: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&format!("{name}-")))
        .map(str::to_string)
        .collect()
}

fn lab_dir(name: &str) -> PathBuf {
    Path::new("/run/vnet-lab").join(name)
}

/// Asserts that lab `name` left no namespace, no directory and no adaptor behind.
fn assert_nothing_left(name: &str, adaptor_pid: Option<u32>) {
    assert_eq!(
        namespaces(name),
        Vec::<String>::new(),
        "namespaces of {name} remain"
    );
    assert!(!lab_dir(name).exists(), "{} remains", lab_dir(name).display());
    if let Some(pid) = adaptor_pid {
        assert!(!pid_alive(pid), "the adaptor (pid {pid}) still runs");
    }
}

#[test]
fn the_adaptor_speeds_the_application_up_and_the_demo_cleans_up() {
    if !root_or_skip("demo") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let name = "dm1";
    vnet(&["lab", "down", "--name", name]).expect("clearing a leftover lab");
    let _teardown = Teardown(name);
    let svg_dir = std::env::temp_dir().join(format!("vnet-e2e-demo-{}", std::process::id()));
    let svg_dir_arg = svg_dir.to_string_lossy().into_owned();

    let (ok, out, err) = Demo::start(&[
        "--json",
        "--name",
        name,
        "--seconds",
        "5",
        "--svg-dir",
        &svg_dir_arg,
    ])
    .finish(DEMO_TIMEOUT);
    assert!(ok, "vnet demo failed; stderr:\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    let figure = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no number `{key}` in {report}"))
    };
    let (before, after, speedup) = (
        figure("throughput_before"),
        figure("throughput_after"),
        figure("speedup"),
    );
    println!(
        "demo: {before:.2} -> {after:.2} iterations/s, speedup {speedup:.2}x in {:.0} s",
        figure("elapsed_s")
    );
    assert!(before > 0.0, "{report}");
    assert!(
        (speedup - after / before).abs() < 1e-6 * speedup.max(1.0),
        "{report}"
    );
    assert!(
        speedup >= MIN_SPEEDUP,
        "speedup {speedup:.2} < {MIN_SPEEDUP}; stderr:\n{err}"
    );
    let decisions = report["decisions"].as_array().expect("decisions");
    assert!(
        decisions.iter().any(|d| d["verdict"] == "applied"),
        "no applied decision: {report}"
    );
    // The adapted overlay keeps traffic off the slow proxy.
    assert!(
        figure("proxy_bytes_after") < figure("proxy_bytes_before"),
        "{report}"
    );
    for key in ["svg_before", "svg_after"] {
        let path = report[key].as_str().unwrap_or_else(|| panic!("no {key}"));
        let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(svg.starts_with("<svg") && svg.contains("h0"), "{path}");
    }
    // The demo reported progress with elapsed seconds as it went.
    assert!(err.contains("s] running the application on the star"), "{err}");
    let pid = report["adaptor_pid"].as_u64().map(|p| p as u32);
    assert_nothing_left(name, pid);
    let _ = std::fs::remove_dir_all(&svg_dir);
}

/// Interrupts a demo with SIGINT once `ready` holds (it is given the demo's stderr so
/// far), and checks that it cleans up.
fn interrupt(name: &'static str, ready: impl Fn(&str) -> bool, what: &str) -> String {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    vnet(&["lab", "down", "--name", name]).expect("clearing a leftover lab");
    let _teardown = Teardown(name);
    let svg_dir = std::env::temp_dir().join(format!("vnet-e2e-demo-{name}-{}", std::process::id()));
    let svg_dir_arg = svg_dir.to_string_lossy().into_owned();
    let demo = Demo::start(&["--name", name, "--seconds", "3", "--svg-dir", &svg_dir_arg]);
    let reached = wait_until(Duration::from_secs(120), || ready(&demo.stderr_so_far()));
    let status = lab_dir(name).join("adapt/status.json");
    let adaptor_pid = std::fs::read_to_string(&status)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["pid"].as_u64())
        .map(|p| p as u32);
    kill(demo.child.id(), "INT");
    let (ok, _, err) = demo.finish(CLEANUP_TIMEOUT);
    assert!(reached.is_some(), "the demo never reached {what}; stderr:\n{err}");
    assert!(!ok, "an interrupted demo must fail; stderr:\n{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_nothing_left(name, adaptor_pid);
    let _ = std::fs::remove_dir_all(&svg_dir);
    err
}

/// Whether a process runs in namespace `ns` (a rank of the workload, in a VM's).
fn runs_in(ns: &str) -> bool {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .is_ok_and(|o| !o.stdout.trim_ascii().is_empty())
}

#[test]
fn a_demo_interrupted_while_the_application_runs_leaves_nothing_behind() {
    if !root_or_skip("demo") {
        return;
    }
    // The lab runs short commands in VM namespaces while it builds: the application runs
    // once the demo has said so and a rank shows up in vm0.
    let err = interrupt(
        "dm2",
        |so_far| so_far.contains("running the application on the star") && runs_in("dm2-vm0"),
        "the application running in the lab",
    );
    assert!(err.contains("running the application on the star"), "{err}");
}

#[test]
fn a_demo_interrupted_while_the_adaptor_runs_stops_it_and_leaves_nothing_behind() {
    if !root_or_skip("demo") {
        return;
    }
    let err = interrupt(
        "dm3",
        |_| lab_dir("dm3").join("adapt/status.json").exists(),
        "a running adaptor",
    );
    assert!(err.contains("starting the adaptor"), "{err}");
}
