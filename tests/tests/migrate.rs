//! Live migration in the lab (`vnet lab migrate`): a verified TCP transfer survives a
//! migration of its receiver, the black-hole time a 10 ms ping sees, rollback of a
//! migration that fails at any step, and the `lab-migrate` hook run by the hook runner.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vnet_core::name::Name;

use vadapt_service::hook::{Hook, HookError, MigrationRequest};
use vnet_core::rule::{DstMatch, MacMatch, Output};
use vnet_e2e::{bin, root_or_skip, run, vnet, wait_for, Lab, PortsOf, Proc};
use vnet_lab::MigrationReport;

/// The VM that moves (vm1, on h2 in every lab here) and its peer (vm0, on h1).
const VM: usize = 1;
const PEER: usize = 0;

/// Where lab.json says VM `j` is now, and its NIC's device name (`lab.info` is what
/// `lab up` printed).
fn name(text: &str) -> Name {
    text.parse().unwrap()
}

fn placement(lab: &Lab, j: usize) -> (String, String) {
    let now = vnet_lab::info(lab.name()).unwrap_or_else(|e| panic!("{e:#}"));
    let v = &now.vms[j];
    assert_eq!(v.name, format!("vm{j}"));
    (v.host.clone(), v.device.clone())
}

/// A migration report in one line.
fn summary(r: &MigrationReport) -> String {
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|s| format!("{} {:.1}", s.step.name(), s.ms))
        .collect();
    format!(
        "{} -> {} ({}) in {:.1} ms [{} ms]",
        r.from,
        r.to,
        r.device,
        r.total_ms,
        steps.join(", ")
    )
}

/// `vnet lab migrate --name LAB vmJ HOST --json`.
fn migrate(lab: &Lab, j: usize, host: &str) -> MigrationReport {
    let out = vnet(&[
        "lab",
        "migrate",
        "--name",
        lab.name(),
        &format!("vm{j}"),
        host,
        "--json",
    ])
    .unwrap_or_else(|e| panic!("migrating vm{j} to {host}: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vnet lab migrate --json: {e}: {out}"))
}

/// `vnet lab migrate` that must fail; its error text. `fail_at` sets the test switch
/// that makes that step fail.
fn migrate_fails(lab: &Lab, j: usize, host: &str, fail_at: Option<&str>) -> String {
    let mut cmd = Command::new(bin("vnet"));
    cmd.args(["lab", "migrate", "--name", lab.name(), &format!("vm{j}"), host]);
    if let Some(step) = fail_at {
        cmd.env("VNET_LAB_MIGRATE_FAIL", step);
    }
    match run(&mut cmd) {
        Ok(out) => panic!("migrating vm{j} to {host} (failing at {fail_at:?}) succeeded: {out}"),
        Err(e) => e,
    }
}

/// The live overlay as a description (`vnet show --lab`).
fn overlay(lab: &Lab) -> String {
    vnet(&["show", "--lab", lab.name()]).unwrap_or_else(|e| panic!("vnet show: {e}"))
}

/// The device names in VM `j`'s namespace, sorted.
fn devices(lab: &Lab, j: usize) -> Vec<String> {
    let out = run(Command::new("ip").args(["-n", &lab.vm(j).netns, "-j", "link", "show"]))
        .unwrap_or_else(|e| panic!("{e}"));
    let links: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut names: Vec<String> = links
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The IPv4 addresses (`ADDR/LEN`) of device `dev` in VM `j`.
fn addresses(lab: &Lab, j: usize, dev: &str) -> Vec<String> {
    let out = run(Command::new("ip").args(["-n", &lab.vm(j).netns, "-4", "-br", "addr", "show", "dev", dev]))
        .unwrap_or_else(|e| panic!("{e}"));
    out.split_whitespace().skip(2).map(str::to_string).collect()
}

/// The outputs of host `i`'s rule for frames to `mac` from anyone.
fn route_to(lab: &Lab, i: usize, mac: &str) -> Vec<Output> {
    let dst: DstMatch = mac.parse().unwrap_or_else(|e| panic!("{mac}: {e}"));
    lab.rules(i)
        .into_iter()
        .find(|r| r.spec.src == MacMatch::Any && r.spec.dst == dst)
        .map(|r| r.spec.out)
        .unwrap_or_default()
}

/// Whether host `i`'s daemon has an interface named `name`.
fn has_iface(lab: &Lab, i: usize, name: &str) -> bool {
    lab.stats(i).ifaces.iter().any(|(n, _)| n == name)
}

/// Sum of the frames host `i` sent over link `link`.
fn tx_frames(lab: &Lab, i: usize, link: &str) -> u64 {
    lab.stats(i).link_counters(link).tx_frames
}

/// A verified 32 MiB TCP transfer from vm0 to vm1 runs through a migration of vm1 from
/// h2 to h3 and completes byte for byte, without a reset; afterwards h2 carries none of
/// vm1's frames and the proxy sends them to h3.
#[test]
fn tcp_transfer_survives_a_migration() {
    if !root_or_skip("tcp_transfer_survives_a_migration") {
        return;
    }
    // vm0 on h1 behind a 50 Mbit/s uplink (so the transfer takes seconds), vm1 on h2,
    // h3 without VMs.
    let lab = Lab::up("mgxfer", &["--hosts", "4", "--vms", "2", "--uplink", "h1=50mbit"]);
    assert_eq!(placement(&lab, VM), ("h2".to_string(), "eth0".to_string()));
    lab.wait_ping(PEER, VM, Duration::from_secs(5));
    let mac = lab.vm(VM).mac.clone();

    let started = Instant::now();
    let before = lab.stats(0).link_counters("h0-h2").tx_bytes;
    let report = std::thread::scope(|s| {
        let transfer = s.spawn(|| lab.transfer_file_verified(PEER, VM, 32));
        wait_for(
            Duration::from_secs(10),
            "8 MiB of the transfer to reach h2",
            || lab.stats(0).link_counters("h0-h2").tx_bytes > before + (8 << 20),
        );
        let at = started.elapsed();
        let report = migrate(&lab, VM, "h3");
        eprintln!(
            "migration {} at {:.1} s into the transfer",
            summary(&report),
            at.as_secs_f64()
        );
        assert!(
            !transfer.is_finished(),
            "the transfer ended before the migration finished"
        );
        // Panics (bytes differ, reset, timeout) come through the join.
        transfer.join().expect("the transfer failed");
        report
    });
    let took = started.elapsed();
    eprintln!(
        "32 MiB transfer with a migration in the middle: {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!((report.from.as_str(), report.to.as_str()), ("h2", "h3"));
    assert_eq!(placement(&lab, VM), ("h3".to_string(), report.device.clone()));

    // h2 has nothing of vm1 left; the proxy sends it to h3.
    assert!(!has_iface(&lab, 2, "vm1"), "h2 still has vm1's interface");
    assert!(has_iface(&lab, 3, "vm1"), "h3 has no interface for vm1");
    assert_eq!(route_to(&lab, 0, &mac), [Output::Link(name("h0-h3"))]);
    assert_eq!(devices(&lab, VM), ["lo".to_string(), report.device.clone()]);
    let to_h2 = tx_frames(&lab, 0, "h0-h2");
    let to_h3 = tx_frames(&lab, 0, "h0-h3");
    let (sent, received) = lab.ping(PEER, VM, 20, Duration::from_millis(20));
    assert_eq!((sent, received), (20, 20), "ping vm0 -> vm1 at its new host");
    let (to_h2, to_h3) = (
        tx_frames(&lab, 0, "h0-h2") - to_h2,
        tx_frames(&lab, 0, "h0-h3") - to_h3,
    );
    eprintln!("20 pings after the migration: the proxy sent {to_h3} frames to h3, {to_h2} to h2");
    assert!(to_h3 >= 20, "the pings did not go to h3 ({to_h3} frames)");
    assert_eq!(to_h2, 0, "the proxy still sends frames to h2");
}

/// Echo replies of a `ping -i 0.01` by sequence number, with their arrival times.
struct SeqPing {
    _ping: Proc,
    replies: mpsc::Receiver<(String, Instant)>,
    seen: Vec<(u32, Instant)>,
    dups: usize,
}

impl SeqPing {
    fn start(lab: &Lab, from: usize, to: usize) -> SeqPing {
        let (ping, replies) = lab.ping_replies(from, to, Duration::from_millis(10));
        SeqPing {
            _ping: ping,
            replies,
            seen: Vec::new(),
            dups: 0,
        }
    }

    fn drain(&mut self) {
        // "64 bytes from 198.19.0.2: icmp_seq=12 ttl=64 time=0.5 ms [(DUP!)]"
        for (line, t) in self.replies.try_iter() {
            let seq = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|n| n.parse::<u32>().ok());
            match seq {
                Some(_) if line.contains("DUP!") => self.dups += 1,
                Some(seq) => self.seen.push((seq, t)),
                None => {}
            }
        }
    }

    /// Waits until `n` more replies have come.
    fn wait_replies(&mut self, n: usize) {
        let want = self.seen.len() + n;
        wait_for(Duration::from_secs(10), &format!("{n} ping replies"), || {
            self.drain();
            self.seen.len() >= want
        });
    }

    /// The sequence numbers missing between the replies received at `from` and later,
    /// up to the last reply, and the longest silence between two replies in that span.
    fn losses_since(&self, from: usize) -> (Vec<u32>, Duration) {
        let span = &self.seen[from..];
        let (lo, hi) = (
            span.iter().map(|r| r.0).min().unwrap_or(0),
            span.iter().map(|r| r.0).max().unwrap_or(0),
        );
        let got: std::collections::BTreeSet<u32> = span.iter().map(|r| r.0).collect();
        let missing = (lo..=hi).filter(|s| !got.contains(s)).collect();
        let gap = span
            .windows(2)
            .map(|w| w[1].1.saturating_duration_since(w[0].1))
            .max()
            .unwrap_or_default();
        (missing, gap)
    }
}

/// A 10 ms ping from vm0 to vm1 across a migration there (h2 -> h3) and back: lost
/// echoes x 10 ms is the black-hole time; it stays within 100 ms each way.
#[test]
fn black_hole_time_of_a_migration() {
    if !root_or_skip("black_hole_time_of_a_migration") {
        return;
    }
    const INTERVAL_MS: u64 = 10;
    const BUDGET_MS: u64 = 100;
    let lab = Lab::up("mgbhole", &["--hosts", "4", "--vms", "2"]);
    lab.wait_ping(PEER, VM, Duration::from_secs(5));
    let mut ping = SeqPing::start(&lab, PEER, VM);
    ping.wait_replies(50);
    for (to, back) in [("h3", "h2"), ("h2", "h3")] {
        let start = ping.seen.len() - 20;
        let report = migrate(&lab, VM, to);
        ping.wait_replies(50);
        let (missing, gap) = ping.losses_since(start);
        let black_hole = missing.len() as u64 * INTERVAL_MS;
        eprintln!(
            "migration {}: {} echoes lost ({black_hole} ms black hole at {INTERVAL_MS} ms intervals), \
             longest silence {:.1} ms, {} duplicates",
            summary(&report),
            missing.len(),
            gap.as_secs_f64() * 1e3,
            ping.dups
        );
        assert!(
            black_hole <= BUDGET_MS,
            "moving vm1 to {to} (from {back}) lost echoes {missing:?}: {black_hole} ms > {BUDGET_MS} ms"
        );
    }
    assert_eq!(ping.dups, 0, "frames reached vm1 twice during the migrations");
    assert_eq!(placement(&lab, VM), ("h2".to_string(), "eth0".to_string()));
}

/// The state a rolled-back migration must restore.
#[derive(Debug, PartialEq)]
struct Snapshot {
    overlay: String,
    placement: (String, String),
    devices: Vec<String>,
    addresses: Vec<String>,
}

fn snapshot(lab: &Lab) -> Snapshot {
    let (host, device) = placement(lab, VM);
    Snapshot {
        overlay: overlay(lab),
        devices: devices(lab, VM),
        addresses: addresses(lab, VM, &device),
        placement: (host, device),
    }
}

/// A migration that fails at any of its steps leaves everything as it was: the same
/// rules, interfaces and lab.json, the VM's address on its old NIC and no new one, and
/// the VM reachable at its old host. So does one refused up front (the destination
/// already has an interface of that name), and bad requests get clear errors.
#[test]
fn failed_migrations_roll_back() {
    if !root_or_skip("failed_migrations_roll_back") {
        return;
    }
    // vm0 on h1, vm1 on h2, vm2 on h1 with a captured veth.
    let lab = Lab::up("mgroll", &["--hosts", "4", "--vms", "3", "--veth-vms", "2"]);
    lab.wait_ping(PEER, VM, Duration::from_secs(5));
    let before = snapshot(&lab);
    assert_eq!(before.devices, ["eth0", "lo"]);
    assert_eq!(before.addresses, [format!("{}/16", lab.vm(VM).ip)]);

    for step in ["nic", "rules", "addresses", "source-rules", "info", "delete"] {
        let err = migrate_fails(&lab, VM, "h3", Some(step));
        assert!(
            err.contains(&format!("step `{step}`")) && err.contains("rolled back: vm1 stays on h2"),
            "{step}: {err}"
        );
        assert_eq!(snapshot(&lab), before, "after a failure at `{step}`");
        assert!(
            !has_iface(&lab, 3, "vm1"),
            "h3 kept vm1's interface after a failure at `{step}`"
        );
        let (sent, received) = lab.ping(PEER, VM, 3, Duration::from_millis(50));
        assert_eq!(
            (sent, received),
            (3, 3),
            "ping vm0 -> vm1 after a failure at `{step}`"
        );
    }

    // A destination that already has an interface named vm1 (a stray TAP in its own
    // namespace) is refused before anything changes.
    lab.ctl_ok(3, &["iface", "add", "vm1", "--device", "stray1"]);
    let err = migrate_fails(&lab, VM, "h3", None);
    assert!(err.contains("already has an interface named `vm1`"), "{err}");
    lab.ctl_ok(3, &["iface", "del", "vm1"]);
    assert_eq!(snapshot(&lab), before, "after the refused migration");

    let err = migrate_fails(&lab, VM, "h2", None);
    assert!(err.contains("vm1 is already on h2"), "{err}");
    let err = migrate_fails(&lab, 2, "h3", None);
    assert!(
        err.contains("veth") && err.contains("only TAP NICs migrate"),
        "{err}"
    );
    let err = migrate_fails(&lab, VM, "h0", None);
    assert!(err.contains("proxy"), "{err}");
    let err = migrate_fails(&lab, VM, "h7", None);
    assert!(err.contains("no host `h7`"), "{err}");
    assert_eq!(snapshot(&lab), before);

    // And the lab still migrates.
    migrate(&lab, VM, "h3");
    lab.wait_ping(PEER, VM, Duration::from_secs(2));
}

/// The hook runner calls tools/hooks/lab-migrate as the adaptor would: the VM moves; a
/// second call with the now stale FROM fails with the hook's reason.
#[test]
fn lab_migrate_hook_moves_a_vm() {
    if !root_or_skip("lab_migrate_hook_moves_a_vm") {
        return;
    }
    let lab = Lab::up("mghook", &["--hosts", "4", "--vms", "2"]);
    lab.wait_ping(PEER, VM, Duration::from_secs(5));
    let hook = Hook {
        env: vec![
            ("VNET_LAB".into(), lab.name().into()),
            ("VNET".into(), bin("vnet").display().to_string()),
        ],
        ..Hook::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/hooks/lab-migrate"))
    };
    let request = MigrationRequest {
        vm: "vm1".into(),
        mac: lab.vm(VM).mac.clone(),
        from: "h2".into(),
        to: "h3".into(),
    };
    let out = hook.run(&request).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "lab-migrate hook: {:.1} ms: {}",
        out.elapsed.as_secs_f64() * 1e3,
        out.stdout.join(" ")
    );
    assert_eq!(placement(&lab, VM).0, "h3");
    lab.wait_ping(PEER, VM, Duration::from_secs(2));

    match hook.run(&request) {
        Err(HookError::Failed { output, .. }) => assert!(
            output.iter().any(|l| l.contains("vm1 is on h3, not on h2")),
            "{output:?}"
        ),
        other => panic!("a migration from a stale host: {other:?}"),
    }
    assert_eq!(placement(&lab, VM).0, "h3");
}
