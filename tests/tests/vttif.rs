//! VTTIF end to end: `patterns` runs a BSP workload on a topology in the lab's 8 VMs (on 4
//! hosts behind the proxy), `vnet vttif --watch` polls every daemon at 20 Hz, and the
//! inferred edge set must equal the pairs `patterns --print-topology` names, within 2 s.
//! Also: reaction and settle times of a topology switch, the union view when the workload
//! switches faster than the smoothing interval, and iperf3 with accounting on and off.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vnet_e2e::{bin, root_or_skip, vnet, wait_until, Lab, Proc};

type Pairs = BTreeSet<(String, String)>;

/// The workload's run time per topology.
const RUN_SECS: &str = "4";
/// The bound from workload start to a correct view.
const DETECT: Duration = Duration::from_secs(2);

fn pairs(topology: &Value) -> Pairs {
    topology["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .map(|e| {
                    let (a, b) = (e["a"].as_str().unwrap_or(""), e["b"].as_str().unwrap_or(""));
                    (a.min(b).to_string(), a.max(b).to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `vnet vttif --lab N --watch --json` and the views it printed, with arrival times.
struct Watch {
    _proc: Proc,
    views: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Watch {
    fn start(lab: &Lab) -> Watch {
        let mut child = Command::new(bin("vnet"))
            .args(["vttif", "--lab", lab.name(), "--watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting vnet vttif --watch");
        let out = child.stdout.take().expect("vttif stdout");
        let views = Arc::new(Mutex::new(Vec::new()));
        let sink = views.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push((Instant::now(), v));
                }
            }
        });
        Watch {
            _proc: Proc(child),
            views,
        }
    }

    /// The latest view printed.
    fn current(&self) -> Option<Value> {
        self.views.lock().unwrap().last().map(|(_, v)| v.clone())
    }

    /// Waits until the current view's edges are `want` (and `settled`, if asked); returns
    /// when that view arrived.
    fn wait(&self, want: &Pairs, settled: bool, timeout: Duration) -> Option<Instant> {
        let mut at = None;
        wait_until(timeout, || {
            let views = self.views.lock().unwrap();
            at = views
                .last()
                .filter(|(_, v)| &pairs(&v["topology"]) == want && (!settled || v["settled"] == true))
                .map(|(t, _)| *t);
            at.is_some()
        });
        at
    }

    /// Waits until the workload's traffic has left the smoothing window.
    fn wait_quiet(&self) {
        let quiet = wait_until(Duration::from_secs(5), || {
            self.current().is_some_and(|v| v["quiet"] == true)
        });
        assert!(
            quiet.is_some(),
            "the view never went quiet after the workload ended"
        );
    }

    /// Views that arrived after `t`.
    fn since(&self, t: Instant) -> Vec<Value> {
        let views = self.views.lock().unwrap();
        views
            .iter()
            .filter(|(at, _)| *at >= t)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn expected(lab: &Lab, topology: &str) -> Pairs {
    let out = vnet(&[
        "patterns",
        "--lab",
        lab.name(),
        "--topology",
        topology,
        "--print-topology",
    ])
    .unwrap_or_else(|e| panic!("patterns --print-topology {topology}: {e}"));
    pairs(&serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")))
}

/// Launches `vnet patterns` in every VM of the lab (the launcher starts the ranks).
fn workload(lab: &Lab, topology: &str, secs: &str) -> Proc {
    let child = Command::new(bin("vnet"))
        .args([
            "patterns",
            "--lab",
            lab.name(),
            "--topology",
            topology,
            "--seconds",
            secs,
        ])
        .args(["--size", "32768", "--ratio", "0.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting vnet patterns");
    Proc(child)
}

/// Waits for the launcher to end and returns the ranks' mean iterations per second.
fn finish(mut p: Proc) -> f64 {
    let ok = wait_until(Duration::from_secs(30), || p.exited()).is_some();
    assert!(ok, "patterns did not end");
    let mut out = String::new();
    if let Some(mut s) = p.0.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
    }
    let reports: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(reports.len(), 8, "every rank reports: {out}");
    reports
        .iter()
        .filter_map(|r| r["iterations_per_s"].as_f64())
        .sum::<f64>()
        / 8.0
}

#[test]
fn vttif_recovers_patterns_topologies_and_follows_switches() {
    if !root_or_skip("vttif_recovers_patterns_topologies_and_follows_switches") {
        return;
    }
    let lab = Lab::up("e2evtt", &["--hosts", "5", "--vms", "8"]);
    let watch = Watch::start(&lab);

    // Accuracy: every topology, edge set equal to the workload's pairs within 2 s.
    let topologies = [
        "bus",
        "ring",
        "mesh:4x2",
        "reduction",
        "torus:4x2",
        "tree",
        "hypercube",
        "star",
        "all-to-all",
    ];
    let mut report = Vec::new();
    for t in topologies {
        // Each topology starts from a quiet network, as an application would.
        watch.wait_quiet();
        let want = expected(&lab, t);
        let start = Instant::now();
        let run = workload(&lab, t, RUN_SECS);
        let seen = watch.wait(&want, false, Duration::from_secs(4));
        let settled = watch.wait(&want, true, Duration::from_secs(3));
        let ips = finish(run);
        let current = watch.current().map(|v| v["topology"].clone()).unwrap_or_default();
        let detect = seen.map(|at| at.saturating_duration_since(start));
        eprintln!(
            "vttif e2e: {t:<11} {} pairs: correct after {:?}, settled after {:?}, shape {}, {ips:.1} iterations/s",
            want.len(),
            detect,
            settled.map(|at| at.saturating_duration_since(start)),
            current["shape"]
        );
        if detect.is_none_or(|d| d > DETECT) {
            for v in watch.since(start) {
                eprintln!(
                    "  view: {} edges, damped {}, settled {}",
                    pairs(&v["topology"]).len(),
                    v["damped"],
                    v["settled"]
                );
            }
        }
        report.push((t, detect));
    }
    let late: Vec<_> = report
        .iter()
        .filter(|(_, d)| d.is_none_or(|d| d > DETECT))
        .collect();
    assert!(
        late.is_empty(),
        "topologies not recovered within {DETECT:?}: {late:?}"
    );

    // A switch mid-run: ring, then all-to-all right after (no quiet gap).
    watch.wait_quiet();
    let b = expected(&lab, "all-to-all");
    finish(workload(&lab, "ring", "3"));
    let switch = Instant::now();
    let run = workload(&lab, "all-to-all", "4");
    let settled = watch.wait(&b, true, Duration::from_secs(4));
    finish(run);
    let first_change = watch
        .since(switch)
        .iter()
        .find(|v| v["changed"] == true)
        .and_then(|v| v["unix_ms"].as_u64());
    let settle = settled.map(|at| at.saturating_duration_since(switch));
    eprintln!(
        "vttif e2e: switch ring -> all-to-all: first change at unix {first_change:?}, settled on all-to-all after {settle:?}"
    );
    assert!(
        settle.is_some(),
        "the view never settled on all-to-all after the switch"
    );

    // Switching faster than the smoothing interval (1 s): the view is the union.
    watch.wait_quiet();
    let (r, s) = (expected(&lab, "ring"), expected(&lab, "star"));
    let union: Pairs = r.union(&s).cloned().collect();
    let start = Instant::now();
    let mut union_at = None;
    for i in 0..8 {
        finish(workload(&lab, if i % 2 == 0 { "ring" } else { "star" }, "0.4"));
        if union_at.is_none() && watch.current().is_some_and(|v| pairs(&v["topology"]) == union) {
            union_at = Some(start.elapsed());
        }
    }
    let last = watch.current().unwrap_or_default();
    eprintln!(
        "vttif e2e: ring/star every ~0.4 s: union view after {union_at:?}; last view {} edges, damped {}, settled {}",
        pairs(&last["topology"]).len(),
        last["damped"],
        last["settled"]
    );
    assert!(
        union_at.is_some(),
        "the view never showed ring ∪ star while they alternated"
    );
}

fn iperf_mbps(lab: &Lab) -> f64 {
    lab.iperf(0, 1, 3).mbps()
}

#[test]
fn accounting_costs_little_throughput() {
    if !root_or_skip("accounting_costs_little_throughput") {
        return;
    }
    let lab = Lab::up("e2evtto", &["--hosts", "3", "--vms", "2"]);
    let set = |on: bool| {
        vnet(&[
            "vttif",
            "--lab",
            lab.name(),
            if on { "--enable" } else { "--disable" },
        ])
        .unwrap_or_else(|e| panic!("vnet vttif --enable/--disable: {e}"))
    };
    // Alternate, so drift in the machine's load hits both sides alike.
    let (mut on, mut off) = (0.0, 0.0);
    for _ in 0..2 {
        set(false);
        off += iperf_mbps(&lab);
        set(true);
        on += iperf_mbps(&lab);
    }
    let ratio = on / off;
    eprintln!(
        "vttif e2e: iperf3 vm0 -> vm1 with accounting on {:.0} Mbit/s, off {:.0} Mbit/s: on/off = {ratio:.3}",
        on / 2.0,
        off / 2.0
    );
    // Debug builds and a shared machine make this noisy; the 0.99 target is checked with
    // release builds (see the vttif bench), this only guards against a gross regression.
    assert!(ratio > 0.5, "accounting cost too much: on/off = {ratio:.3}");
}
