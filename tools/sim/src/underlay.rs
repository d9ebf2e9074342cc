//! The simulated underlay: hosts with addresses, and what happens to a datagram between
//! two of them: per-path delay and jitter (jitter reorders), loss, duplication, and
//! partitions. All random draws come from one seeded RNG, in the order datagrams are
//! sent.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::faults::FaultSchedule;
use crate::time::SimTime;
use crate::HostId;

/// How one path (an ordered pair of hosts) treats datagrams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathParams {
    /// One-way delay.
    pub delay: Duration,
    /// Bound of the uniform extra delay of each datagram.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice.
    pub duplicate: f64,
}

/// What became of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// A partition separates the hosts.
    Cut,
    /// The path lost it.
    Lost,
    /// It arrives at `at`, and a second copy at `copy` if the path duplicated it.
    Arrives {
        /// When it arrives.
        at: SimTime,
        /// When the duplicate arrives.
        copy: Option<SimTime>,
    },
}

/// Hosts, paths and the partitions in force.
#[derive(Debug)]
pub struct Underlay {
    hosts: usize,
    paths: Vec<PathParams>,
    /// Bit `i` of a host's word: the host is inside partition `i`.
    membership: Vec<u64>,
    /// Bit `i`: partition `i` is in force.
    active: u64,
    rng: ChaCha8Rng,
}

/// Most partitions one schedule may hold (a bit each).
pub const MAX_PARTITIONS: usize = 64;

impl Underlay {
    /// The underlay of `hosts` hosts under `faults`; `members[i]` are the hosts inside
    /// partition `i` (at most [`MAX_PARTITIONS`]; more are ignored). Path parameters are
    /// drawn from `rng` first, then every datagram's fate.
    pub fn new(
        hosts: usize,
        faults: &FaultSchedule,
        members: &[Vec<HostId>],
        mut rng: ChaCha8Rng,
    ) -> Underlay {
        let (lo, hi) = (faults.delay.0.as_nanos() as u64, faults.delay.1.as_nanos() as u64);
        let mut draw = |max: f64| if max > 0.0 { rng.gen::<f64>() * max } else { 0.0 };
        let mut paths = Vec::with_capacity(hosts * hosts);
        for _ in 0..hosts * hosts {
            let delay = Duration::from_nanos(lo + (draw(1.0) * hi.saturating_sub(lo) as f64) as u64);
            let jitter = faults.jitter.mul_f64(draw(1.0));
            paths.push(PathParams {
                delay,
                jitter,
                loss: draw(faults.loss),
                duplicate: draw(faults.duplicate),
            });
        }
        let mut membership = vec![0u64; hosts];
        for (i, inside) in members.iter().take(MAX_PARTITIONS).enumerate() {
            for h in inside {
                if let Some(m) = membership.get_mut(h.0 as usize) {
                    *m |= 1 << i;
                }
            }
        }
        Underlay {
            hosts,
            paths,
            membership,
            active: 0,
            rng,
        }
    }

    /// The parameters of the path from `from` to `to`.
    pub fn path(&self, from: HostId, to: HostId) -> PathParams {
        self.paths[from.0 as usize * self.hosts + to.0 as usize]
    }

    /// Puts partition `index` in force or lifts it.
    pub fn set_partition(&mut self, index: usize, active: bool) {
        if index < MAX_PARTITIONS {
            let bit = 1u64 << index;
            self.active = if active {
                self.active | bit
            } else {
                self.active & !bit
            };
        }
    }

    /// Whether no partition in force separates `a` and `b`.
    pub fn reachable(&self, a: HostId, b: HostId) -> bool {
        (self.membership[a.0 as usize] ^ self.membership[b.0 as usize]) & self.active == 0
    }

    /// The fate of a datagram sent from `from` to `to` at `now`.
    pub fn send(&mut self, from: HostId, to: HostId, now: SimTime) -> Fate {
        if !self.reachable(from, to) {
            return Fate::Cut;
        }
        let p = self.path(from, to);
        if p.loss > 0.0 && self.rng.gen_bool(p.loss) {
            return Fate::Lost;
        }
        let at = now + p.delay + self.jitter(p.jitter);
        let copy = (p.duplicate > 0.0 && self.rng.gen_bool(p.duplicate))
            .then(|| now + p.delay + self.jitter(p.jitter));
        Fate::Arrives { at, copy }
    }

    fn jitter(&mut self, bound: Duration) -> Duration {
        if bound.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.gen_range(0..=bound.as_nanos() as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn underlay(faults: &FaultSchedule, members: &[Vec<HostId>]) -> Underlay {
        Underlay::new(3, faults, members, ChaCha8Rng::seed_from_u64(1))
    }

    #[test]
    fn datagrams_arrive_within_the_path_bounds_and_reorder() {
        let mut u = underlay(&FaultSchedule::calm(), &[]);
        let p = u.path(HostId(0), HostId(1));
        assert!(p.delay >= Duration::from_millis(1) && p.delay <= Duration::from_millis(20));
        let mut last = SimTime::ZERO;
        let mut overtaken = 0;
        for i in 0..200 {
            let now = SimTime(i * 10_000);
            let Fate::Arrives { at, copy: None } = u.send(HostId(0), HostId(1), now) else {
                panic!("a calm underlay neither loses nor duplicates");
            };
            assert!(at >= now + p.delay && at <= now + p.delay + p.jitter);
            overtaken += usize::from(at < last);
            last = last.max(at);
        }
        assert!(overtaken > 0, "jitter reorders");
    }

    #[test]
    fn loss_duplication_and_partitions() {
        let mut faults = FaultSchedule::calm();
        faults.loss = 1.0;
        let mut u = underlay(&faults, &[vec![HostId(2)]]);
        let lossy = (0..100)
            .filter(|_| u.send(HostId(0), HostId(1), SimTime::ZERO) == Fate::Lost)
            .count();
        assert!(lossy > 10, "{lossy}");
        faults.loss = 0.0;
        faults.duplicate = 1.0;
        let mut u = underlay(&faults, &[vec![HostId(2)]]);
        let twice = (0..100)
            .filter(|_| {
                matches!(
                    u.send(HostId(0), HostId(1), SimTime::ZERO),
                    Fate::Arrives { copy: Some(_), .. }
                )
            })
            .count();
        assert!(twice > 10, "{twice}");
        u.set_partition(0, true);
        assert_eq!(u.send(HostId(0), HostId(2), SimTime::ZERO), Fate::Cut);
        assert!(u.reachable(HostId(0), HostId(1)));
        u.set_partition(0, false);
        assert!(u.reachable(HostId(0), HostId(2)));
    }
}
