//! The adaptor service (`vadapt run`) against a real lab: it converges under steady
//! traffic and then stops changing things, `--dry-run` changes nothing, and a failing
//! migration hook leaves the VM reachable where it was.
//!
//! The lab: the proxy h0 behind a 20 Mbit/s uplink, h1 and h2 unshaped, vm0 on h1 and
//! vm1 on h2 exchanging messages (Patterns). The star squeezes their traffic through the
//! proxy's uplink; the adaptor should move one VM next to the other (local forwarding)
//! or link h1 and h2 directly.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vadapt::status::{Status, Verdict};
use vadapt_service::status_file;
use vnet_client::Client;
use vnet_core::config::Topology;
use vnet_e2e::{bin, root_or_skip, wait_for, wait_until, Lab, Proc};

/// Lab options shared by the tests.
const LAB: &[&str] = &["--hosts", "3", "--vms", "2", "--uplink", "h0=20mbit"];

/// How long the adaptor gets to measure, observe a settled topology and decide.
const DECIDE_TIMEOUT: Duration = Duration::from_secs(90);

/// Starts Patterns between the lab's two VMs for `seconds` in the background.
fn patterns(lab: &Lab, seconds: u32) -> Proc {
    let child = Command::new(bin("vnet"))
        .args([
            "patterns",
            "--lab",
            lab.name(),
            "--topology",
            "bus",
            "--ranks",
            "2",
        ])
        .args(["--seconds", &seconds.to_string(), "--ratio", "0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting vnet patterns");
    Proc(child)
}

/// Starts `vadapt run --lab NAME --status FILE ARGS`.
fn adaptor(lab: &Lab, status: &Path, args: &[&str]) -> Proc {
    let child = Command::new(bin("vadapt"))
        .args(["run", "--lab", lab.name(), "--status"])
        .arg(status)
        .args(["--probe-ms", "200", "--settle-ms", "1500"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting vadapt run");
    Proc(child)
}

fn status(path: &Path) -> Option<Status> {
    status_file::read(path).ok()
}

/// Every daemon's configuration.
fn configs(lab: &Lab) -> Vec<Topology> {
    (0..lab.info.hosts.len())
        .map(|i| lab.ask(i, Client::config_get))
        .collect()
}

/// Waits until the adaptor's status holds a decision; returns the status.
fn first_decision(path: &Path, adaptor: &mut Proc) -> Status {
    let mut last = None;
    let done = wait_until(DECIDE_TIMEOUT, || {
        last = status(path);
        last.as_ref().is_some_and(|s| !s.decisions.is_empty()) || adaptor.exited()
    });
    let st = last.unwrap_or_else(|| panic!("the adaptor wrote no status at {}", path.display()));
    assert!(
        done.is_some() && !st.decisions.is_empty(),
        "no decision within {DECIDE_TIMEOUT:?}: {}",
        st.text(5)
    );
    st
}

#[test]
fn converges_and_then_leaves_the_overlay_alone() {
    if !root_or_skip("converges_and_then_leaves_the_overlay_alone") {
        return;
    }
    let lab = Lab::up("e2eadc", LAB);
    let status_path = lab.info.dir.join("adapt-test-status.json");
    let _app = patterns(&lab, 150);
    let mut run = adaptor(&lab, &status_path, &[]);
    let st = first_decision(&status_path, &mut run);
    let applied = st
        .decisions
        .iter()
        .find(|d| d.verdict == Verdict::Applied)
        .unwrap_or_else(|| panic!("the first decision was not applied: {}", st.text(5)));
    assert!(
        applied.objective_after > applied.objective_before + applied.margin,
        "{}",
        st.text(5)
    );
    // The application still talks after the change.
    lab.wait_ping(0, 1, Duration::from_secs(5));

    // Steady traffic for a minute: the adaptor may re-examine, but changes nothing.
    let settled = configs(&lab);
    let decided = st.decisions.len();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        assert!(
            !run.exited(),
            "the adaptor stopped: {:?}",
            status(&status_path).map(|s| s.text(5))
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let st = status(&status_path).expect("status");
    let later: Vec<_> = st.decisions.iter().skip(decided).collect();
    assert!(
        later.iter().all(|d| d.verdict == Verdict::Kept),
        "the adaptor changed things again under steady traffic: {}",
        st.text(10)
    );
    assert_eq!(configs(&lab), settled, "the overlay changed under steady traffic");
    assert!(
        st.rounds > 20,
        "the adaptor stopped observing: {} rounds",
        st.rounds
    );
}

#[test]
fn dry_run_changes_nothing_and_a_failing_hook_leaves_the_vm_where_it_was() {
    if !root_or_skip("dry_run_changes_nothing_and_a_failing_hook_leaves_the_vm_where_it_was") {
        return;
    }
    let lab = Lab::up("e2eadf", LAB);
    let _app = patterns(&lab, 200);
    let before = configs(&lab);

    let dry = lab.info.dir.join("adapt-dry.json");
    let mut run = adaptor(&lab, &dry, &["--dry-run", "--once"]);
    let st = first_decision(&dry, &mut run);
    assert_eq!(st.decisions[0].verdict, Verdict::WouldApply, "{}", st.text(5));
    wait_for(Duration::from_secs(10), "vadapt --once to exit", || run.exited());
    assert_eq!(configs(&lab), before, "--dry-run changed the overlay");

    // Every migration fails: the VMs stay, reachable where they were.
    let hook = lab.info.dir.join("failing-hook");
    std::fs::write(&hook, "#!/bin/sh\necho \"cannot move $1 today\" >&2\nexit 7\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let failing = lab.info.dir.join("adapt-failing.json");
    let hook_arg = hook.to_string_lossy().into_owned();
    let mut run = adaptor(&lab, &failing, &["--once", "--no-topology", "--hook", &hook_arg]);
    let st = first_decision(&failing, &mut run);
    let d = &st.decisions[0];
    assert_eq!(d.verdict, Verdict::Failed, "{}", st.text(5));
    assert!(
        d.actions
            .iter()
            .any(|a| a.contains("FAILED") && a.contains("cannot move")),
        "{:?}",
        d.actions
    );
    for (host, vm) in [(1, "vm0"), (2, "vm1")] {
        let ifaces: Vec<String> = lab
            .ask(host, Client::iface_list)
            .into_iter()
            .map(|i| i.spec.name.into_string())
            .collect();
        assert!(ifaces.iter().any(|i| i == vm), "{vm} left h{host}: {ifaces:?}");
    }
    lab.wait_ping(0, 1, Duration::from_secs(5));
}
