//! The driver side of link measurement: one session's clock and keepalive timestamps,
//! feeding the link's [`LinkMeasure`](vnet_core::measure::LinkMeasure) in its status.
//! The arithmetic is in [`vnet_core::measure`]; this only reads the clock and the counters.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::LinkInfo;
use crate::link::update;
use vnet_core::forward::PortStats;
use vnet_core::measure::KeepaliveEcho;
use vnet_core::wire::{KeepaliveStamp, WireError, KEEPALIVE_LEN};

/// What one link session measures: shared by the session's tasks (a TCP session's
/// reader and writer), so the echo state sits behind a lock taken once per keepalive.
#[derive(Debug)]
pub(crate) struct SessionMeter {
    /// The session's own clock starts here; stamps never leave the session.
    epoch: Instant,
    echo: Mutex<KeepaliveEcho>,
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
            echo: Mutex::default(),
            info,
            stats,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn echo(&self) -> std::sync::MutexGuard<'_, KeepaliveEcho> {
        // The guarded value is plain data that no panic leaves half-updated.
        self.echo.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The payload of a keepalive sent now.
    pub(crate) fn keepalive(&self) -> [u8; KEEPALIVE_LEN] {
        self.echo().stamp(self.now()).encode()
    }

    /// Takes a received keepalive's payload; an error is a payload that does not decode
    /// (the caller counts it). An empty payload (an older peer) measures nothing.
    pub(crate) fn on_keepalive(&self, payload: &[u8]) -> Result<(), WireError> {
        let Some(stamp) = KeepaliveStamp::decode(payload)? else {
            return Ok(());
        };
        let now = self.now();
        if let Some(rtt) = self.echo().receive(&stamp, now) {
            self.sample_rtt(rtt);
        }
        Ok(())
    }

    /// Records a round-trip sample measured elsewhere (QUIC's own estimate).
    pub(crate) fn sample_rtt(&self, rtt: Duration) {
        update(&self.info, |i| i.measure.rtt.sample(rtt));
    }

    /// Feeds the port's byte counters to the throughput meters; called on the keepalive
    /// tick.
    pub(crate) fn sample_counters(&self) {
        let c = self.stats.snapshot();
        let now = self.now();
        update(&self.info, |i| i.measure.counters(now, c.tx_bytes, c.rx_bytes));
    }
}
