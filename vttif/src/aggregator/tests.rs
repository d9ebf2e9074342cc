//! Aggregator tests on synthetic traffic: VMs spread over simulated daemons, every frame
//! counted where it enters the overlay and again where it leaves.

use super::*;
use crate::shape::KnownShape;
use proptest::prelude::*;

const HOSTS: usize = 4;
const STEP: Duration = Duration::from_millis(50);

fn mac(i: usize) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, i as u8 + 1])
}

/// Simulated daemons with cumulative counters, polled at 20 Hz.
struct Sim {
    agg: Aggregator,
    now: Duration,
    daemons: Vec<LocalMatrix>,
    uptime: Vec<u64>,
}

impl Sim {
    fn new(params: Params) -> Sim {
        Sim {
            agg: Aggregator::new(params).unwrap(),
            now: Duration::from_secs(100),
            daemons: vec![LocalMatrix::default(); HOSTS],
            uptime: vec![0; HOSTS],
        }
    }

    fn count(&mut self, host: usize, src: usize, dst: usize, bytes: u64, sent: bool) {
        let m = &mut self.daemons[host];
        m.entries.push(PairCounts {
            src: mac(src),
            dst: mac(dst),
            sent: Counts::default(),
            delivered: Counts::default(),
        });
        m.normalize();
        let Some(e) = m
            .entries
            .iter_mut()
            .find(|e| (e.src, e.dst) == (mac(src), mac(dst)))
        else {
            return;
        };
        let c = if sent { &mut e.sent } else { &mut e.delivered };
        c.bytes += bytes;
        c.frames += bytes.div_ceil(1500);
    }

    /// Runs `dur` of traffic at `rates` (src, dst, bytes/s), polling every daemon each step.
    fn run(&mut self, dur: Duration, rates: &[(usize, usize, f64)]) -> View {
        let mut view = View::default();
        let steps = (dur.as_millis() / STEP.as_millis()).max(1);
        for _ in 0..steps {
            self.now += STEP;
            for &(s, d, r) in rates {
                let bytes = (r * STEP.as_secs_f64()) as u64;
                self.count(s % HOSTS, s, d, bytes, true);
                if s % HOSTS != d % HOSTS {
                    self.count(d % HOSTS, s, d, bytes, false);
                }
            }
            for h in 0..HOSTS {
                self.uptime[h] += STEP.as_micros() as u64;
                let snap = Snapshot {
                    node: format!("h{h}"),
                    enabled: true,
                    uptime_us: self.uptime[h],
                    matrix: self.daemons[h].clone(),
                };
                self.agg.ingest(self.now, &format!("h{h}"), &snap);
            }
            view = self.agg.view(self.now);
        }
        view
    }

    /// Switches to `rates` and runs until the view has changed and settled again (or
    /// `limit`): the reaction time (to the first change), the settle time, the last view.
    fn switch(&mut self, limit: Duration, rates: &[(usize, usize, f64)]) -> (Duration, Duration, View) {
        let start = self.now;
        let mut reaction = None;
        loop {
            let v = self.run(STEP, rates);
            if v.changed {
                reaction.get_or_insert(self.now - start);
            }
            if (reaction.is_some() && v.settled) || self.now - start >= limit {
                return (reaction.unwrap_or(limit), self.now - start, v);
            }
        }
    }
}

/// Both directions of every edge of `shape` at `rate`, plus ACK-sized reverse traffic.
fn traffic(shape: &KnownShape, rate: f64) -> Vec<(usize, usize, f64)> {
    shape
        .edges()
        .iter()
        .flat_map(|&(a, b)| [(a, b, rate), (b, a, rate)])
        .collect()
}

fn pairs(shape: &KnownShape) -> BTreeSet<(String, String)> {
    shape
        .edges()
        .iter()
        .map(|&(a, b)| (mac(a).to_string(), mac(b).to_string()))
        .collect()
}

#[test]
fn recovers_every_known_shape_with_its_name() {
    let shapes = [
        KnownShape::Bus(8),
        KnownShape::Ring(8),
        KnownShape::Mesh(vec![4, 2]),
        KnownShape::Hypercube(3),
        KnownShape::Tree(8),
        KnownShape::AllToAll(8),
        KnownShape::Star(8),
        KnownShape::Torus(vec![3, 3]),
    ];
    for shape in shapes {
        let mut sim = Sim::new(Params::default());
        let v = sim.run(Duration::from_millis(1500), &traffic(&shape, 1e6));
        assert_eq!(v.topology.pairs(), pairs(&shape), "{shape}");
        assert_eq!(v.topology.shape, Some(shape.to_string()));
        assert!(v.settled && !v.damped && !v.quiet, "{shape}: {v:?}");
    }
}

#[test]
fn rates_are_smoothed_normalized_and_not_double_counted() {
    let mut sim = Sim::new(Params::default());
    // vm0 (h0) -> vm1 (h1) crosses daemons; vm0 -> vm4 (h0) stays on one.
    let v = sim.run(Duration::from_secs(3), &[(0, 1, 2e6), (0, 4, 1e6), (1, 0, 5e3)]);
    let rate = |s: usize, d: usize| {
        v.matrix
            .iter()
            .find(|e| e.src == mac(s).to_string() && e.dst == mac(d).to_string())
            .map(|e| (e.bytes_per_s, e.normalized))
            .unwrap()
    };
    let (r01, n01) = rate(0, 1);
    assert!((r01 - 2e6).abs() / 2e6 < 0.01, "cross-host rate {r01}");
    assert_eq!(n01, 1.0);
    let (r04, n04) = rate(0, 4);
    assert!((r04 - 1e6).abs() / 1e6 < 0.01 && (n04 - 0.5).abs() < 0.01);
    assert_eq!(v.window_ms, 1000);
    // The ACK-sized reverse flow is below the threshold, but its edge is there anyway.
    assert_eq!(v.topology.edges.len(), 2);
    let e01 = &v.topology.edges[0];
    assert!((e01.bytes_per_s.unwrap() - 2.005e6).abs() < 3e4);
}

#[test]
fn entries_below_the_threshold_are_pruned() {
    let params = Params {
        threshold: 0.3,
        ..Params::default()
    };
    let mut sim = Sim::new(params);
    let v = sim.run(
        Duration::from_secs(2),
        &[(0, 1, 1e6), (2, 3, 0.31e6), (4, 5, 0.29e6)],
    );
    assert_eq!(v.topology.edges.len(), 2);
    assert_eq!(v.matrix.len(), 3, "the matrix keeps every entry");
}

#[test]
fn broadcast_and_quiet_periods_do_not_make_topology() {
    let mut sim = Sim::new(Params::default());
    let ring = KnownShape::Ring(8);
    sim.run(Duration::from_secs(2), &traffic(&ring, 1e6));
    // Only ARP-like broadcasts and a trickle below the noise floor: the ring stands.
    let bcast = [(0, 0xfe, 100.0)];
    let mut sim2 = Sim::new(Params::default());
    let v = sim2.run(Duration::from_secs(2), &bcast);
    assert!(v.topology.edges.is_empty() && v.quiet);
    let v = sim.run(Duration::from_secs(3), &[(0, 1, 100.0)]);
    assert!(v.quiet);
    assert_eq!(v.topology.pairs(), pairs(&ring));
}

#[test]
fn a_topology_change_is_detected_and_settles() {
    let mut sim = Sim::new(Params::default());
    let (a, b) = (KnownShape::Ring(8), KnownShape::Star(8));
    sim.run(Duration::from_secs(3), &traffic(&a, 1e6));
    let before = sim.agg.view(sim.now).changes;
    let (reaction, t, v) = sim.switch(Duration::from_secs(10), &traffic(&b, 1e6));
    assert_eq!(v.topology.pairs(), pairs(&b));
    assert!(v.changes > before);
    // New edges pass 10 % of the old ones within two updates; old edges fade once they drop
    // below 10 % of the new ones (~0.9 s), then one smoothing interval to settle.
    assert!(
        reaction <= Duration::from_millis(150),
        "reacted after {reaction:?}"
    );
    assert!(t <= Duration::from_millis(2000), "settled after {t:?}");
    assert!(!v.damped);
}

#[test]
fn switching_faster_than_the_smoothing_interval_shows_the_union() {
    let mut sim = Sim::new(Params::default());
    let (a, b) = (KnownShape::Ring(8), KnownShape::Star(8));
    let union: BTreeSet<_> = pairs(&a).union(&pairs(&b)).cloned().collect();
    let mut last = View::default();
    for _ in 0..20 {
        sim.run(Duration::from_millis(200), &traffic(&a, 1e6));
        last = sim.run(Duration::from_millis(200), &traffic(&b, 1e6));
    }
    assert_eq!(last.topology.pairs(), union);
    assert!(last.settled, "the union view keeps still: {last:?}");
}

#[test]
fn switching_slower_than_smoothing_but_within_damping_holds_the_union() {
    let mut sim = Sim::new(Params::default());
    let (a, b) = (KnownShape::Ring(8), KnownShape::Hypercube(3));
    let union: BTreeSet<_> = pairs(&a).union(&pairs(&b)).cloned().collect();
    let mut views = Vec::new();
    for _ in 0..6 {
        views.push(sim.run(Duration::from_millis(1500), &traffic(&a, 1e6)));
        views.push(sim.run(Duration::from_millis(1500), &traffic(&b, 1e6)));
    }
    let tail = &views[views.len() - 4..];
    for v in tail {
        assert_eq!(v.topology.pairs(), union, "damped view");
        assert!(v.damped);
    }
    // Without damping, the same schedule flips between the two topologies.
    let mut plain = Sim::new(Params {
        damping: Duration::ZERO,
        ..Params::default()
    });
    let v = plain.run(Duration::from_millis(1500), &traffic(&a, 1e6));
    assert_eq!(v.topology.pairs(), pairs(&a));
    let v = plain.run(Duration::from_millis(1500), &traffic(&b, 1e6));
    assert_eq!(v.topology.pairs(), pairs(&b));
    // Once the application keeps to one topology, the held edges age out.
    let v = sim.run(Duration::from_secs(4), &traffic(&b, 1e6));
    assert_eq!(v.topology.pairs(), pairs(&b));
    assert!(v.settled && !v.damped);
}

#[test]
fn a_quiet_spell_ends_an_oscillation_episode() {
    let mut sim = Sim::new(Params::default());
    let (a, b) = (KnownShape::Ring(8), KnownShape::Hypercube(3));
    for _ in 0..3 {
        sim.run(Duration::from_millis(1500), &traffic(&a, 1e6));
        sim.run(Duration::from_millis(1500), &traffic(&b, 1e6));
    }
    assert!(sim.run(Duration::from_millis(1500), &traffic(&a, 1e6)).damped);
    // Silence for longer than the smoothing interval, then a new phase: no held edges.
    sim.run(Duration::from_millis(2500), &[]);
    let star = KnownShape::Star(8);
    let v = sim.run(Duration::from_millis(1500), &traffic(&star, 1e6));
    assert_eq!(v.topology.pairs(), pairs(&star));
    assert!(!v.damped);
}

#[test]
fn a_restarted_daemon_sets_a_new_baseline() {
    let mut sim = Sim::new(Params::default());
    sim.run(Duration::from_secs(2), &[(0, 1, 1e6)]);
    // h0 restarts: counters and uptime start over.
    sim.daemons[0] = LocalMatrix::default();
    sim.uptime[0] = 0;
    let v = sim.run(Duration::from_secs(2), &[(0, 1, 1e6)]);
    let r = v.matrix[0].bytes_per_s;
    assert!((r - 1e6).abs() / 1e6 < 0.01, "rate after restart {r}");
}

#[test]
fn parameters_are_checked() {
    let bad = |p: Params| Aggregator::new(p).unwrap_err();
    let d = Params::default();
    assert!(matches!(
        bad(Params {
            update_rate_hz: 25.0,
            ..d.clone()
        }),
        ParamError::UpdateRate(_)
    ));
    assert!(matches!(
        bad(Params {
            smoothing: Duration::from_millis(60),
            ..d.clone()
        }),
        ParamError::Smoothing { .. }
    ));
    assert!(matches!(
        bad(Params {
            threshold: 0.0,
            ..d.clone()
        }),
        ParamError::Threshold(_)
    ));
    assert!(matches!(
        bad(Params {
            noise_floor: f64::NAN,
            ..d
        }),
        ParamError::NoiseFloor(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn steady_state_edges_are_the_entries_over_the_threshold(
        flows in proptest::collection::btree_map((0usize..8, 0usize..8), 2_000.0f64..1e7, 1..20),
        threshold in 0.05f64..0.9,
    ) {
        let rates: Vec<(usize, usize, f64)> =
            flows.iter().filter(|((s, d), _)| s != d).map(|((s, d), r)| (*s, *d, *r)).collect();
        prop_assume!(!rates.is_empty());
        let mut sim = Sim::new(Params { threshold, ..Params::default() });
        let v = sim.run(Duration::from_secs(2), &rates);
        let max = rates.iter().map(|r| r.2).fold(0.0, f64::max);
        // Stay clear of the threshold itself (integer byte counts round).
        prop_assume!(rates.iter().all(|r| ((r.2 / max) - threshold).abs() > 0.01));
        let want: BTreeSet<(String, String)> = rates
            .iter()
            .filter(|r| r.2 / max >= threshold)
            .map(|&(s, d, _)| {
                let (a, b) = (mac(s.min(d)).to_string(), mac(s.max(d)).to_string());
                (a, b)
            })
            .collect();
        prop_assert_eq!(v.topology.pairs(), want);
        let top = v.matrix.iter().map(|e| e.normalized).fold(0.0, f64::max);
        prop_assert!((top - 1.0).abs() < 1e-9);
    }
}
