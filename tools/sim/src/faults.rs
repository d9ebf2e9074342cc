//! The fault schedule: what the underlay does to datagrams (per-path delay, jitter, loss,
//! duplication) and when hosts fail (partitions, daemon crashes and restarts). A schedule
//! is data; [`FaultSchedule::random`] draws one from a seeded RNG.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::time::SimTime;

/// Everything that goes wrong, and how slow the underlay is.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSchedule {
    /// Each path's (ordered host pair's) one-way delay is drawn from this range.
    pub delay: (Duration, Duration),
    /// Each path's jitter bound is drawn up to this; every datagram waits a uniform extra
    /// up to its path's bound, so datagrams overtake each other (reordering).
    pub jitter: Duration,
    /// Each path's loss probability is drawn up to this.
    pub loss: f64,
    /// Each path's duplication probability is drawn up to this (the copy gets its own
    /// jitter).
    pub duplicate: f64,
    /// Sets of hosts cut off from the others for an interval.
    pub partitions: Vec<Partition>,
    /// Daemon crashes, each with its restart.
    pub crashes: Vec<Crash>,
}

/// Hosts cut off from every other host from `from` until `until`: datagrams between a
/// host inside and one outside are dropped, links between them go down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The machines cut off.
    pub hosts: BTreeSet<String>,
    /// When the cut starts.
    pub from: SimTime,
    /// When it heals.
    pub until: SimTime,
}

/// A daemon that crashes at `at` (its forwarding state and links go) and restarts at
/// `restart` with the topology of its state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    /// The machine.
    pub host: String,
    /// When it crashes.
    pub at: SimTime,
    /// When it starts again.
    pub restart: SimTime,
}

impl FaultSchedule {
    /// A healthy underlay: delays of 1 to 20 ms with up to 5 ms of jitter, nothing lost,
    /// duplicated, cut or crashed.
    pub fn calm() -> FaultSchedule {
        FaultSchedule {
            delay: (Duration::from_millis(1), Duration::from_millis(20)),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            duplicate: 0.0,
            partitions: Vec::new(),
            crashes: Vec::new(),
        }
    }

    /// A random schedule over `machines` (the first is the proxy) within `horizon`: up to
    /// 5% loss and 2% duplication per path, up to two partitions and up to two crashes
    /// (half of them the proxy's), each fault over by `horizon`.
    pub fn random(rng: &mut ChaCha8Rng, machines: &[String], horizon: SimTime) -> FaultSchedule {
        let mut s = FaultSchedule::calm();
        s.loss = rng.gen_range(0.0..0.05);
        s.duplicate = rng.gen_range(0.0..0.02);
        let span = |rng: &mut ChaCha8Rng| {
            let from = rng.gen_range(0..horizon.0.max(2) / 2);
            let until = rng.gen_range(from + 1..horizon.0.max(from + 2));
            (SimTime(from), SimTime(until))
        };
        if machines.len() >= 2 {
            for _ in 0..rng.gen_range(0..=2) {
                let size = rng.gen_range(1..=machines.len() / 2);
                let hosts = machines.choose_multiple(rng, size).cloned().collect();
                let (from, until) = span(rng);
                s.partitions.push(Partition { hosts, from, until });
            }
        }
        if let Some(proxy) = machines.first() {
            for _ in 0..rng.gen_range(0..=2) {
                let host = if rng.gen_bool(0.5) {
                    proxy
                } else {
                    machines.choose(rng).unwrap_or(proxy)
                };
                let (at, restart) = span(rng);
                s.crashes.push(Crash {
                    host: host.clone(),
                    at,
                    restart,
                });
            }
        }
        s
    }

    /// The longest a datagram can take on any path.
    pub fn max_one_way(&self) -> Duration {
        self.delay.1 + self.jitter
    }

    /// The same schedule with every partition and crash `by` later (to let links come
    /// up first).
    pub fn shifted(mut self, by: Duration) -> FaultSchedule {
        for p in &mut self.partitions {
            p.from = p.from + by;
            p.until = p.until + by;
        }
        for c in &mut self.crashes {
            c.at = c.at + by;
            c.restart = c.restart + by;
        }
        self
    }

    /// When the last partition heals or the last crashed daemon restarts.
    pub fn last_fault_end(&self) -> SimTime {
        let heals = self.partitions.iter().map(|p| p.until);
        let restarts = self.crashes.iter().map(|c| c.restart);
        heals.chain(restarts).max().unwrap_or(SimTime::ZERO)
    }

    /// Whether something scheduled disturbs a frame that crosses `links` (pairs of
    /// machines) between `window.0` and `window.1`: a partition that separates the ends
    /// of one of them, or a crash of a machine on them, from its start until `recovery`
    /// after it ends.
    pub fn disturbs(
        &self,
        links: &[(String, String)],
        window: (SimTime, SimTime),
        recovery: Duration,
    ) -> bool {
        let overlaps = |from: SimTime, until: SimTime| from <= window.1 && window.0 <= until + recovery;
        let cut = self.partitions.iter().any(|p| {
            overlaps(p.from, p.until)
                && links
                    .iter()
                    .any(|(a, b)| p.hosts.contains(a) != p.hosts.contains(b))
        });
        let crashed = self
            .crashes
            .iter()
            .any(|c| overlaps(c.at, c.restart) && links.iter().any(|(a, b)| *a == c.host || *b == c.host));
        cut || crashed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_schedules_are_reproducible_and_end_within_the_horizon() {
        let machines: Vec<String> = (0..6).map(|i| format!("h{i}")).collect();
        let horizon = SimTime::ZERO + Duration::from_secs(10);
        let draw = |seed| FaultSchedule::random(&mut ChaCha8Rng::seed_from_u64(seed), &machines, horizon);
        assert_eq!(draw(3), draw(3));
        let mut faults = 0;
        for seed in 0..50 {
            let s = draw(seed);
            assert!(s.last_fault_end() <= horizon);
            assert!(s
                .partitions
                .iter()
                .all(|p| p.from < p.until && p.hosts.len() <= 3));
            assert!(s.crashes.iter().all(|c| c.at < c.restart));
            faults += s.partitions.len() + s.crashes.len();
        }
        assert!(faults > 50, "{faults}");
    }

    #[test]
    fn disturbance_covers_the_fault_and_the_recovery_after_it() {
        let at = |ms| SimTime::ZERO + Duration::from_millis(ms);
        let mut s = FaultSchedule::calm();
        s.partitions.push(Partition {
            hosts: ["h1".to_string()].into(),
            from: at(100),
            until: at(200),
        });
        s.crashes.push(Crash {
            host: "h0".into(),
            at: at(1000),
            restart: at(1100),
        });
        let link = |a: &str, b: &str| vec![(a.to_string(), b.to_string())];
        let r = Duration::from_millis(50);
        assert!(s.disturbs(&link("h0", "h1"), (at(90), at(110)), r));
        assert!(s.disturbs(&link("h0", "h1"), (at(240), at(260)), r));
        assert!(!s.disturbs(&link("h0", "h1"), (at(260), at(270)), r));
        assert!(!s.disturbs(&link("h2", "h3"), (at(150), at(160)), r));
        assert!(s.disturbs(&link("h2", "h0"), (at(1120), at(1130)), r));
        assert_eq!(s.last_fault_end(), at(1100));
    }
}
