//! The virtual clock: simulated time as an offset from the start, and the `Instant`s the
//! pure APIs take (`now: Instant`), derived from one base instant plus that offset.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::{Duration, Instant};

/// A point in simulated time: nanoseconds since the simulation started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(pub u64);

impl SimTime {
    /// The start of the simulation.
    pub const ZERO: SimTime = SimTime(0);

    /// The time `d` after the start.
    pub fn from_duration(d: Duration) -> SimTime {
        SimTime(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The offset from the start.
    pub fn since_start(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// Seconds since the start.
    pub fn as_secs_f64(self) -> f64 {
        self.since_start().as_secs_f64()
    }
}

impl Add<Duration> for SimTime {
    type Output = SimTime;

    /// Saturates at the end of representable time (584 years) rather than wrapping.
    fn add(self, d: Duration) -> SimTime {
        SimTime(self.0.saturating_add(SimTime::from_duration(d).0))
    }
}

impl Sub for SimTime {
    type Output = Duration;

    /// The time from `rhs` to `self`; zero when `rhs` is later.
    fn sub(self, rhs: SimTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(rhs.0))
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000 / 1_000
        )
    }
}

/// Simulated time as the `Instant`s that sans-IO code takes.
///
/// The base is one real instant, read once when the clock is made: `Instant` has no
/// public constructor. Nothing the simulation decides depends on its value, only on the
/// offsets, and traces print offsets ([`SimTime`]), never instants.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    now: SimTime,
}

impl Clock {
    /// A clock at [`SimTime::ZERO`] whose instants start at `base`.
    pub fn new(base: Instant) -> Clock {
        Clock {
            base,
            now: SimTime::ZERO,
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// Moves the clock to `t`; it never goes back, so an earlier `t` leaves it where it is.
    pub fn advance_to(&mut self, t: SimTime) {
        self.now = self.now.max(t);
    }

    /// The instant of simulated time `t`.
    pub fn instant(&self, t: SimTime) -> Instant {
        self.base + t.since_start()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods, reason = "the base of the test's simulated time")]
    fn instants_follow_simulated_time_and_the_clock_never_goes_back() {
        let base = Instant::now();
        let mut c = Clock::new(base);
        let t = SimTime::ZERO + Duration::from_millis(1500);
        c.advance_to(t);
        c.advance_to(SimTime(5));
        assert_eq!(c.now(), t);
        assert_eq!(c.instant(c.now()) - base, Duration::from_millis(1500));
        assert_eq!(t.to_string(), "1.500000s");
        assert_eq!(SimTime(5) - t, Duration::ZERO);
        assert_eq!(SimTime(u64::MAX) + Duration::from_secs(1), SimTime(u64::MAX));
    }
}
