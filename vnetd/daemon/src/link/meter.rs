//! The driver side of link measurement: one session's samples into the link's
//! [`LinkMeasure`](vnet_core::measure::LinkMeasure) in its status. The round trips come
//! from the session ([`vnet_core::session::Event::Rtt`]) or from QUIC; this adds the port
//! counters, sampled on the keepalive tick.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::LinkInfo;
use crate::link::update;
use vnet_core::forward::PortStats;

/// What one link session measures.
#[derive(Debug)]
pub(crate) struct SessionMeter {
    /// The counters' clock starts here.
    epoch: Instant,
    info: Arc<Mutex<LinkInfo>>,
    stats: Arc<PortStats>,
}

impl SessionMeter {
    /// Starts measuring a new session of the link whose status is `info` and whose
    /// counters are `stats`; what earlier sessions measured is dropped.
    pub(crate) fn new(info: Arc<Mutex<LinkInfo>>, stats: Arc<PortStats>) -> SessionMeter {
        update(&info, |i| i.measure.session_started());
        SessionMeter {
            epoch: Instant::now(),
            info,
            stats,
        }
    }

    /// Records a round-trip sample.
    pub(crate) fn sample_rtt(&self, rtt: Duration) {
        update(&self.info, |i| i.measure.rtt.sample(rtt));
    }

    /// Feeds the port's byte counters at `now` to the throughput meters; called on the
    /// keepalive tick.
    pub(crate) fn sample_counters(&self, now: Instant) {
        let c = self.stats.snapshot();
        let at = now.saturating_duration_since(self.epoch);
        update(&self.info, |i| i.measure.counters(at, c.tx_bytes, c.rx_bytes));
    }
}
