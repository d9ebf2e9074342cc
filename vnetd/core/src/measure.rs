//! Network measurement, sans-IO: a link's round-trip time from keepalive timestamps, its
//! throughput from the port byte counters, and the bookkeeping of active bandwidth probes
//! (limits, admission, what the receiving end reports).
//!
//! Nothing here reads a clock: every `now` is a [`Duration`] since an epoch the caller
//! picks (a session's start, the daemon's start) and keeps for as long as it feeds one
//! value. The daemon's link drivers (`vnetd::link`) call in on their keepalive tick and on
//! every keepalive received; the control plane reports the results
//! (`vnet_control::proto::LinkMeasurement`).

use std::time::Duration;

use crate::wire::{Echo, KeepaliveStamp};

/// Microseconds of `d`, saturating (a `u64` of microseconds outlasts any uptime).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// Round-trip time.

/// A link's round-trip time, smoothed as TCP does (RFC 6298: gains α = 1/8 for the
/// smoothed RTT, β = 1/4 for its variation), with the minimum and the sample count.
///
/// The minimum is the figure to use for the link's latency: the smoothed value includes
/// whatever queueing the link's own traffic causes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min: Option<Duration>,
    latest: Option<Duration>,
    samples: u64,
}

impl RttEstimator {
    /// Takes one round-trip sample.
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            // RFC 6298 (2.2): the first sample sets SRTT = R and RTTVAR = R/2.
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            // (2.3): RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|, then SRTT = 7/8 SRTT + 1/8 R.
            // Saturating: any Duration is accepted without a panic.
            Some(srtt) => {
                self.rttvar = (self.rttvar / 4)
                    .saturating_mul(3)
                    .saturating_add(srtt.abs_diff(rtt) / 4);
                self.srtt = Some((srtt / 8).saturating_mul(7).saturating_add(rtt / 8));
            }
        }
        self.min = Some(self.min.map_or(rtt, |m| m.min(rtt)));
        self.latest = Some(rtt);
        self.samples += 1;
    }

    /// The smoothed round-trip time, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The round-trip time's mean deviation, once there is a sample.
    pub fn rttvar(&self) -> Option<Duration> {
        self.srtt.map(|_| self.rttvar)
    }

    /// The smallest sample.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min
    }

    /// The most recent sample.
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// Samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

/// Round trips longer than this are not believed from keepalive stamps: an up link
/// declares a silent peer dead sooner, so such a sample is a corrupt or replayed stamp.
pub const MAX_KEEPALIVE_RTT: Duration = Duration::from_secs(10);

/// One end's keepalive timestamps: what to stamp on the next keepalive and what a
/// received one says about the round-trip time. Works without synchronized clocks: each
/// end subtracts only stamps of its own clock, and the peer says how long it held ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepaliveEcho {
    /// The newest stamp heard from the peer and when it arrived (on our clock).
    heard: Option<(u64, Duration)>,
    /// Our stamp whose echo already gave a sample; a second echo of it is not counted.
    answered: Option<u64>,
}

impl KeepaliveEcho {
    /// The payload of a keepalive sent at `now`: our clock and the echo of the peer's
    /// newest stamp.
    pub fn stamp(&self, now: Duration) -> KeepaliveStamp {
        KeepaliveStamp {
            stamp_us: micros(now),
            echo: self.heard.map(|(stamp_us, at)| Echo {
                stamp_us,
                held_us: u32::try_from(micros(now.saturating_sub(at))).unwrap_or(u32::MAX),
            }),
        }
    }

    /// Takes a keepalive received at `now`; returns a round-trip sample when it echoes a
    /// stamp of ours that gave none yet and the arithmetic is plausible (not negative,
    /// at most [`MAX_KEEPALIVE_RTT`]).
    pub fn receive(&mut self, stamp: &KeepaliveStamp, now: Duration) -> Option<Duration> {
        // Keep the newest stamp: a reordered older one must not replace it.
        if self.heard.is_none_or(|(s, _)| stamp.stamp_us > s) {
            self.heard = Some((stamp.stamp_us, now));
        }
        let echo = stamp.echo?;
        if self.answered == Some(echo.stamp_us) {
            return None;
        }
        let rtt = micros(now)
            .checked_sub(echo.stamp_us)?
            .checked_sub(u64::from(echo.held_us))?;
        let rtt = Duration::from_micros(rtt);
        if rtt > MAX_KEEPALIVE_RTT {
            return None;
        }
        self.answered = Some(echo.stamp_us);
        Some(rtt)
    }
}

// ---------------------------------------------------------------------------------------
// Throughput.

/// Time constant of the throughput meters: a rate change shows ~63 % after this long.
pub const RATE_TAU: Duration = Duration::from_secs(1);

/// The rate of a byte counter sampled at irregular times, in bits per second, smoothed
/// exponentially with time constant `tau` (the weight of a sample grows with the time it
/// covers, so irregular sampling does not bias the result).
///
/// A counter that goes backwards (the counted thing was reset) or a `now` that does
/// (a caller that switched epochs) starts a new baseline and keeps the rate it had.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateMeter {
    tau: Duration,
    /// Time and value of the previous sample.
    last: Option<(Duration, u64)>,
    rate: Option<f64>,
    resets: u64,
}

impl RateMeter {
    /// A meter with time constant `tau` (zero: no smoothing, the last interval's rate).
    pub fn new(tau: Duration) -> RateMeter {
        RateMeter {
            tau,
            last: None,
            rate: None,
            resets: 0,
        }
    }

    /// Takes the counter's value at `now`.
    pub fn sample(&mut self, now: Duration, counter: u64) {
        let Some((t, c)) = self.last else {
            self.last = Some((now, counter));
            return;
        };
        if counter < c || now < t {
            self.resets += 1;
            self.last = Some((now, counter));
            return;
        }
        let dt = now - t;
        if dt.is_zero() {
            // Keep the older baseline: the bytes count in the next interval.
            return;
        }
        let secs = dt.as_secs_f64();
        let instant = (counter - c) as f64 * 8.0 / secs;
        let weight = if self.tau.is_zero() {
            1.0
        } else {
            1.0 - (-secs / self.tau.as_secs_f64()).exp()
        };
        self.rate = Some(match self.rate {
            None => instant,
            Some(r) => r + weight * (instant - r),
        });
        self.last = Some((now, counter));
    }

    /// The smoothed rate in bits per second, once two samples span some time.
    pub fn bits_per_sec(&self) -> Option<f64> {
        self.rate
    }

    /// The counter's latest value (0 before any sample).
    pub fn total(&self) -> u64 {
        self.last.map_or(0, |(_, c)| c)
    }

    /// How often the counter went backwards.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Forgets the rate and the baseline (the next sample starts afresh), e.g. when the
    /// link's session changed and the old rate says nothing about the new one.
    pub fn forget(&mut self) {
        self.last = None;
        self.rate = None;
    }
}

impl Default for RateMeter {
    fn default() -> RateMeter {
        RateMeter::new(RATE_TAU)
    }
}

/// What a link's driver measures about it: round-trip time and throughput each way.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkMeasure {
    /// Round-trip time of the current session.
    pub rtt: RttEstimator,
    /// Bytes sent to the link (frames, as the port counts them).
    pub tx: RateMeter,
    /// Bytes received from the link.
    pub rx: RateMeter,
}

impl LinkMeasure {
    /// A new session: its path may differ, so earlier round trips and rates are dropped.
    pub fn session_started(&mut self) {
        self.rtt = RttEstimator::default();
        self.tx.forget();
        self.rx.forget();
    }

    /// Takes the port's byte counters at `now`.
    pub fn counters(&mut self, now: Duration, tx_bytes: u64, rx_bytes: u64) {
        self.tx.sample(now, tx_bytes);
        self.rx.sample(now, rx_bytes);
    }
}

// ---------------------------------------------------------------------------------------
// Active probes.

/// Bytes a probe sends when the request names no limit.
pub const PROBE_DEFAULT_BYTES: u64 = 8 << 20;
/// Most bytes a probe sends (larger requests are clamped).
pub const PROBE_MAX_BYTES: u64 = 256 << 20;
/// Fewest bytes a probe sends: several of the receiver's reads (256 KiB each at most),
/// so that the rate can be timed at all.
pub const PROBE_MIN_BYTES: u64 = 1 << 20;
/// How long a probe sends when the request names no limit.
pub const PROBE_DEFAULT_TIME: Duration = Duration::from_millis(1000);
/// Longest a probe sends (longer requests are clamped).
pub const PROBE_MAX_TIME: Duration = Duration::from_millis(5000);
/// Shortest a probe sends.
pub const PROBE_MIN_TIME: Duration = Duration::from_millis(10);
/// Least time between the end of one incoming probe and the start of the next.
pub const PROBE_MIN_INTERVAL: Duration = Duration::from_millis(200);

/// The limits one probe runs with: it sends until either is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePlan {
    /// Bytes to send at most.
    pub max_bytes: u64,
    /// Time to send for at most.
    pub max_time: Duration,
}

impl ProbePlan {
    /// The plan for a request: defaults for what it leaves out, everything clamped into
    /// [`PROBE_MIN_BYTES`]..=[`PROBE_MAX_BYTES`] and
    /// [`PROBE_MIN_TIME`]..=[`PROBE_MAX_TIME`]. The answer reports the plan, so the
    /// caller sees any clamping.
    pub fn clamp(max_bytes: Option<u64>, max_ms: Option<u64>) -> ProbePlan {
        let max_time = max_ms.map_or(PROBE_DEFAULT_TIME, Duration::from_millis);
        ProbePlan {
            max_bytes: max_bytes
                .unwrap_or(PROBE_DEFAULT_BYTES)
                .clamp(PROBE_MIN_BYTES, PROBE_MAX_BYTES),
            max_time: max_time.clamp(PROBE_MIN_TIME, PROBE_MAX_TIME),
        }
    }
}

/// Why a probe may not start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeRefusal {
    /// Another probe in the same role is under way.
    #[error("another probe is running; try again when it ends")]
    Busy,
    /// The previous probe ended less than the minimum interval ago.
    #[error("the last probe ended {ago:?} ago and probes must be {min:?} apart; try again later")]
    TooSoon {
        /// Since the previous probe ended.
        ago: Duration,
        /// The minimum interval.
        min: Duration,
    },
}

/// Admission of probes in one role (sending or answering): one at a time, and at least
/// `min_interval` from the end of one to the start of the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeGate {
    min_interval: Duration,
    running: bool,
    last_end: Option<Duration>,
}

impl ProbeGate {
    /// A gate that spaces probes `min_interval` apart (zero: only one at a time).
    pub fn new(min_interval: Duration) -> ProbeGate {
        ProbeGate {
            min_interval,
            running: false,
            last_end: None,
        }
    }

    /// Admits a probe starting at `now`, or says why not. An admitted probe must be
    /// ended with [`ProbeGate::finish`], whatever its outcome.
    pub fn try_start(&mut self, now: Duration) -> Result<(), ProbeRefusal> {
        if self.running {
            return Err(ProbeRefusal::Busy);
        }
        if let Some(end) = self.last_end {
            let ago = now.saturating_sub(end);
            if ago < self.min_interval {
                return Err(ProbeRefusal::TooSoon {
                    ago,
                    min: self.min_interval,
                });
            }
        }
        self.running = true;
        Ok(())
    }

    /// The admitted probe ended at `now`.
    pub fn finish(&mut self, now: Duration) {
        self.running = false;
        self.last_end = Some(now);
    }

    /// Whether a probe is under way.
    pub fn running(&self) -> bool {
        self.running
    }
}

/// Length of the [`ProbeReport`] the receiving end sends back.
pub const PROBE_REPORT_LEN: usize = 24;

/// What the receiving end of a probe saw: the bytes that arrived and the time from the
/// first arrival to the last. The first read's bytes arrived before the clock started,
/// so only the later ones (`timed_bytes`) count toward the rate.
///
/// On the wire (after the probe's filler, toward the prober): `bytes`, `timed_bytes`,
/// `elapsed_us`, each a big-endian `u64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// Every byte received.
    pub bytes: u64,
    /// Bytes received after the first read.
    pub timed_bytes: u64,
    /// From the first read to the last, in microseconds.
    pub elapsed_us: u64,
}

/// A probe report that cannot be true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeReportError {
    /// More bytes timed than received.
    #[error("probe report times {timed} bytes of only {bytes} received")]
    Inconsistent {
        /// Bytes received, as reported.
        bytes: u64,
        /// Bytes timed, as reported.
        timed: u64,
    },
}

impl ProbeReport {
    /// The report's bytes.
    pub fn encode(&self) -> [u8; PROBE_REPORT_LEN] {
        let mut out = [0u8; PROBE_REPORT_LEN];
        out[..8].copy_from_slice(&self.bytes.to_be_bytes());
        out[8..16].copy_from_slice(&self.timed_bytes.to_be_bytes());
        out[16..].copy_from_slice(&self.elapsed_us.to_be_bytes());
        out
    }

    /// Decodes a report, refusing one that contradicts itself.
    pub fn decode(b: &[u8; PROBE_REPORT_LEN]) -> Result<ProbeReport, ProbeReportError> {
        let field = |i: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(v)
        };
        let report = ProbeReport {
            bytes: field(0),
            timed_bytes: field(8),
            elapsed_us: field(16),
        };
        if report.timed_bytes > report.bytes {
            return Err(ProbeReportError::Inconsistent {
                bytes: report.bytes,
                timed: report.timed_bytes,
            });
        }
        Ok(report)
    }

    /// The rate the receiver saw, in Mbit/s (bits per microsecond), when the data took
    /// long enough to time.
    pub fn mbps(&self) -> Option<f64> {
        (self.elapsed_us > 0).then(|| self.timed_bytes as f64 * 8.0 / self.elapsed_us as f64)
    }
}

/// The receiving end's count of a probe's bytes and their arrival times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeReceiver {
    /// When the first bytes arrived and how many.
    first: Option<(Duration, u64)>,
    last: Duration,
    bytes: u64,
}

impl ProbeReceiver {
    /// `n` bytes arrived at `now`.
    pub fn on_data(&mut self, now: Duration, n: u64) {
        if n == 0 {
            return;
        }
        if self.first.is_none() {
            self.first = Some((now, n));
        }
        self.last = self.last.max(now);
        self.bytes = self.bytes.saturating_add(n);
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The report to send back.
    pub fn report(&self) -> ProbeReport {
        match self.first {
            None => ProbeReport::default(),
            Some((start, first)) => ProbeReport {
                bytes: self.bytes,
                timed_bytes: self.bytes - first,
                elapsed_us: micros(self.last.saturating_sub(start)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rtt_follows_rfc_6298() {
        let mut r = RttEstimator::default();
        assert_eq!(
            (r.srtt(), r.rttvar(), r.min_rtt(), r.samples()),
            (None, None, None, 0)
        );
        r.sample(ms(100));
        assert_eq!((r.srtt(), r.rttvar()), (Some(ms(100)), Some(ms(50))));
        r.sample(ms(200));
        // RTTVAR = 3/4·50 + 1/4·|100−200| = 62.5; SRTT = 7/8·100 + 1/8·200 = 112.5.
        assert_eq!(r.rttvar(), Some(Duration::from_micros(62_500)));
        assert_eq!(r.srtt(), Some(Duration::from_micros(112_500)));
        r.sample(ms(40));
        assert_eq!(r.min_rtt(), Some(ms(40)));
        assert_eq!(r.latest(), Some(ms(40)));
        assert_eq!(r.samples(), 3);
    }

    #[test]
    fn rtt_converges_on_a_steady_link() {
        let mut r = RttEstimator::default();
        r.sample(ms(500));
        for _ in 0..100 {
            r.sample(ms(10));
        }
        let srtt = r.srtt().expect("samples");
        assert!(srtt.abs_diff(ms(10)) < Duration::from_micros(10), "{srtt:?}");
        assert!(r.rttvar().expect("samples") < Duration::from_micros(10));
    }

    #[test]
    fn keepalive_echo_measures_without_shared_clocks() {
        // Two ends whose clocks differ by a day; the one-way delay is 3 ms each way.
        let (mut a, mut b) = (KeepaliveEcho::default(), KeepaliveEcho::default());
        let day = Duration::from_secs(86_400);
        let a_clock = |t: Duration| t;
        let b_clock = |t: Duration| t + day;
        // a sends at t=0; b gets it at 3 ms.
        let k = a.stamp(a_clock(ms(0)));
        assert_eq!(k.echo, None, "nothing to echo yet");
        assert_eq!(b.receive(&k, b_clock(ms(3))), None);
        // b sends 400 ms later (held 400 ms); a gets it at 406 ms: RTT 6 ms.
        let k = b.stamp(b_clock(ms(403)));
        assert_eq!(k.echo.map(|e| e.held_us), Some(400_000));
        assert_eq!(a.receive(&k, a_clock(ms(406))), Some(ms(6)));
        // The same echo again (b sent twice before hearing from a) is no new sample.
        let again = b.stamp(b_clock(ms(803)));
        assert_eq!(a.receive(&again, a_clock(ms(806))), None);
        // a echoes b's newest stamp; b measures 6 ms too.
        let k = a.stamp(a_clock(ms(900)));
        assert_eq!(b.receive(&k, b_clock(ms(903))), Some(ms(6)));
    }

    #[test]
    fn implausible_echoes_give_no_sample() {
        let mut a = KeepaliveEcho::default();
        let echo = |stamp_us, held_us| KeepaliveStamp {
            stamp_us: 1,
            echo: Some(Echo { stamp_us, held_us }),
        };
        // A stamp from our future, a hold longer than the round trip, an ancient stamp.
        assert_eq!(a.receive(&echo(5_000_000, 0), ms(1000)), None);
        assert_eq!(a.receive(&echo(900_000, 200_000), ms(1000)), None);
        assert_eq!(a.receive(&echo(0, 0), Duration::from_secs(11)), None);
        assert_eq!(a.receive(&echo(900_000, 50_000), ms(1000)), Some(ms(50)));
    }

    #[test]
    fn a_reordered_older_stamp_is_not_echoed() {
        let mut a = KeepaliveEcho::default();
        let k = |stamp_us| KeepaliveStamp { stamp_us, echo: None };
        a.receive(&k(2000), ms(10));
        a.receive(&k(1000), ms(11));
        let out = a.stamp(ms(20)).echo.expect("echo");
        assert_eq!((out.stamp_us, out.held_us), (2000, 10_000));
    }

    #[test]
    fn rate_meter_measures_and_smooths() {
        let mut m = RateMeter::new(Duration::ZERO);
        m.sample(ms(0), 0);
        assert_eq!(m.bits_per_sec(), None, "one sample spans no time");
        m.sample(ms(500), 1_000_000);
        assert_eq!(m.bits_per_sec(), Some(16_000_000.0));
        assert_eq!(m.total(), 1_000_000);

        let mut s = RateMeter::new(RATE_TAU);
        s.sample(ms(0), 0);
        s.sample(ms(1000), 1_250_000); // 10 Mbit/s
        assert_eq!(s.bits_per_sec(), Some(10e6));
        // Traffic stops: the rate decays by e^-1 per time constant.
        s.sample(ms(2000), 1_250_000);
        let r = s.bits_per_sec().expect("rate");
        assert!((r - 10e6 * (-1f64).exp()).abs() < 1.0, "{r}");
    }

    #[test]
    fn rate_meter_survives_resets_and_clock_jumps() {
        let mut m = RateMeter::new(Duration::ZERO);
        m.sample(ms(0), 5000);
        m.sample(ms(1000), 5000 + 125_000);
        assert_eq!(m.bits_per_sec(), Some(1e6));
        // The counter restarts from zero: no negative or huge rate, a new baseline.
        m.sample(ms(2000), 10);
        assert_eq!((m.bits_per_sec(), m.resets()), (Some(1e6), 1));
        m.sample(ms(3000), 10 + 250_000);
        assert_eq!(m.bits_per_sec(), Some(2e6));
        // The same instant twice keeps the baseline; time going back rebaselines.
        m.sample(ms(3000), 10 + 500_000);
        assert_eq!(m.bits_per_sec(), Some(2e6));
        m.sample(ms(100), 0);
        assert_eq!(m.resets(), 2);
        m.forget();
        assert_eq!((m.bits_per_sec(), m.total()), (None, 0));
    }

    #[test]
    fn a_new_session_forgets_the_old_one() {
        let mut l = LinkMeasure::default();
        l.rtt.sample(ms(5));
        l.counters(ms(0), 0, 0);
        l.counters(ms(400), 50_000, 100_000);
        assert_eq!(l.rx.bits_per_sec(), Some(2e6));
        l.session_started();
        assert_eq!(l.rtt.samples(), 0);
        assert_eq!((l.tx.bits_per_sec(), l.rx.bits_per_sec()), (None, None));
    }

    #[test]
    fn probe_plans_take_defaults_and_clamp() {
        assert_eq!(
            ProbePlan::clamp(None, None),
            ProbePlan {
                max_bytes: 8 << 20,
                max_time: ms(1000)
            }
        );
        assert_eq!(
            ProbePlan::clamp(Some(u64::MAX), Some(u64::MAX)),
            ProbePlan {
                max_bytes: PROBE_MAX_BYTES,
                max_time: PROBE_MAX_TIME
            }
        );
        assert_eq!(
            ProbePlan::clamp(Some(0), Some(0)),
            ProbePlan {
                max_bytes: PROBE_MIN_BYTES,
                max_time: PROBE_MIN_TIME
            }
        );
        assert_eq!(ProbePlan::clamp(Some(1 << 20), Some(300)).max_bytes, 1 << 20);
    }

    #[test]
    fn probe_gate_admits_one_at_a_time_and_spaces_them() {
        let mut g = ProbeGate::new(PROBE_MIN_INTERVAL);
        assert_eq!(g.try_start(ms(0)), Ok(()));
        assert!(g.running());
        assert_eq!(g.try_start(ms(50)), Err(ProbeRefusal::Busy));
        g.finish(ms(1000));
        assert_eq!(
            g.try_start(ms(1150)),
            Err(ProbeRefusal::TooSoon {
                ago: ms(150),
                min: PROBE_MIN_INTERVAL
            })
        );
        assert_eq!(g.try_start(ms(1200)), Ok(()));
        // Without an interval, only overlap is refused.
        let mut g = ProbeGate::new(Duration::ZERO);
        g.try_start(ms(0)).expect("first");
        g.finish(ms(1));
        assert_eq!(g.try_start(ms(1)), Ok(()));
        assert!(ProbeRefusal::Busy.to_string().contains("another probe"));
    }

    #[test]
    fn probe_receiver_times_all_but_the_first_read() {
        let mut r = ProbeReceiver::default();
        assert_eq!(r.report(), ProbeReport::default());
        assert_eq!(r.report().mbps(), None);
        r.on_data(ms(10), 1000);
        assert_eq!(r.report().mbps(), None, "one read cannot be timed");
        r.on_data(ms(10), 0);
        r.on_data(ms(510), 2_500_000);
        r.on_data(ms(1010), 2_500_000);
        let rep = r.report();
        assert_eq!(
            rep,
            ProbeReport {
                bytes: 5_001_000,
                timed_bytes: 5_000_000,
                elapsed_us: 1_000_000
            }
        );
        assert_eq!(rep.mbps(), Some(40.0));
        assert_eq!(r.bytes(), 5_001_000);
    }

    #[test]
    fn probe_reports_round_trip_and_refuse_contradictions() {
        let rep = ProbeReport {
            bytes: 10,
            timed_bytes: 7,
            elapsed_us: 3,
        };
        assert_eq!(ProbeReport::decode(&rep.encode()), Ok(rep));
        let bad = ProbeReport {
            bytes: 1,
            timed_bytes: 2,
            elapsed_us: 3,
        };
        assert_eq!(
            ProbeReport::decode(&bad.encode()),
            Err(ProbeReportError::Inconsistent { bytes: 1, timed: 2 })
        );
    }

    proptest! {
        #[test]
        fn srtt_stays_within_the_samples(samples in proptest::collection::vec(0u64..10_000_000, 1..50)) {
            let mut r = RttEstimator::default();
            for &s in &samples {
                r.sample(Duration::from_micros(s));
            }
            let lo = Duration::from_micros(*samples.iter().min().expect("non-empty"));
            let hi = Duration::from_micros(*samples.iter().max().expect("non-empty"));
            let srtt = r.srtt().expect("sampled");
            // Integer division may round down by a few nanoseconds per sample.
            prop_assert!(srtt + Duration::from_nanos(8 * samples.len() as u64) >= lo && srtt <= hi);
            prop_assert_eq!(r.min_rtt(), Some(lo));
            prop_assert_eq!(r.samples(), samples.len() as u64);
        }

        #[test]
        fn rtt_takes_any_duration(a in any::<u64>(), b in any::<u64>(), n in any::<u32>()) {
            let mut r = RttEstimator::default();
            r.sample(Duration::new(a, n % 1_000_000_000));
            r.sample(Duration::new(b, 0));
            r.sample(Duration::ZERO);
        }

        #[test]
        fn rate_is_never_negative_whatever_the_counters_do(
            steps in proptest::collection::vec((0u64..2_000, any::<u32>()), 1..60),
        ) {
            let mut m = RateMeter::default();
            let mut now = Duration::ZERO;
            for (dt, counter) in steps {
                now += Duration::from_millis(dt);
                m.sample(now, u64::from(counter));
                if let Some(r) = m.bits_per_sec() {
                    prop_assert!(r.is_finite() && r >= 0.0);
                }
            }
        }

        #[test]
        fn a_steady_rate_is_measured_exactly(
            bps in 1u64..100_000_000_000,
            intervals in proptest::collection::vec(1u64..2_000, 2..40),
        ) {
            let mut m = RateMeter::default();
            let mut now = 0u64;
            m.sample(Duration::ZERO, 0);
            for dt in intervals {
                now += dt;
                m.sample(Duration::from_millis(now), bps * now / 8000);
            }
            let got = m.bits_per_sec().expect("rate");
            // Counters are whole bytes: each interval may lose up to a byte.
            prop_assert!((got - bps as f64).abs() <= bps as f64 * 1e-6 + 8000.0, "{} vs {}", got, bps);
        }

        #[test]
        fn keepalive_round_trips_are_recovered(
            offset in 0u64..1_000_000_000_000,
            one_way in 0u64..1_000_000,
            back in 0u64..1_000_000,
            hold in 0u64..5_000_000,
        ) {
            let (mut a, mut b) = (KeepaliveEcho::default(), KeepaliveEcho::default());
            let us = Duration::from_micros;
            let k = a.stamp(us(1000));
            b.receive(&k, us(offset + 1000 + one_way));
            let k = b.stamp(us(offset + 1000 + one_way + hold));
            let rtt = a.receive(&k, us(1000 + one_way + hold + back));
            let want = us(one_way + back);
            prop_assert_eq!(rtt, (want <= MAX_KEEPALIVE_RTT).then_some(want));
        }
    }
}
