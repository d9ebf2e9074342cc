//! One forwarding step, pure: an Ethernet frame arrives on a port; which ports does it
//! leave by, or why is it dropped? Also the counters the data path keeps.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::mac::MacAddr;
use crate::table::{Decision, ForwardingTable, LookupCache, PortId};

/// Entries a worker's lookup cache holds before it starts evicting.
pub const CACHE_CAPACITY: usize = 4096;

/// Why a frame or link message was dropped. Every drop is counted under one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// No rule matches the frame.
    NoRule,
    /// The only outputs of the matching rules were the port the frame came in on.
    SplitHorizon,
    /// The frame's hop limit ran out (a loop in the overlay topology).
    HopLimit,
    /// The output port has no live device or session.
    PortDown,
    /// The output's queue or socket buffer is full.
    QueueFull,
    /// The frame is larger than the output can carry.
    TooLarge,
    /// A UDP datagram from a peer without a session.
    NoSession,
    /// A link message that does not decode.
    BadMessage,
    /// A handshake that failed authentication.
    AuthFailed,
    /// The operating system refused to send.
    SendError,
    /// A super-frame that could not be segmented, or a partial checksum that could not be
    /// completed, for an output without offloads.
    Offload,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 12] = [
        DropReason::Runt,
        DropReason::NoRule,
        DropReason::SplitHorizon,
        DropReason::HopLimit,
        DropReason::PortDown,
        DropReason::QueueFull,
        DropReason::TooLarge,
        DropReason::NoSession,
        DropReason::BadMessage,
        DropReason::AuthFailed,
        DropReason::SendError,
        DropReason::Offload,
    ];

    /// The counter's name in listings.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::NoRule => "no_rule",
            DropReason::SplitHorizon => "split_horizon",
            DropReason::HopLimit => "hop_limit",
            DropReason::PortDown => "port_down",
            DropReason::QueueFull => "queue_full",
            DropReason::TooLarge => "too_large",
            DropReason::NoSession => "no_session",
            DropReason::BadMessage => "bad_message",
            DropReason::AuthFailed => "auth_failed",
            DropReason::SendError => "send_error",
            DropReason::Offload => "offload",
        }
    }
}

/// Drop counters, one per reason.
#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DropReason::ALL.len()]);

impl DropCounters {
    /// Counts one drop.
    pub fn add(&self, reason: DropReason) {
        self.0[reason as usize].fetch_add(1, Relaxed);
    }

    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize].load(Relaxed)
    }

    /// Non-zero counters by name.
    pub fn nonzero(&self) -> Vec<(String, u64)> {
        DropReason::ALL
            .iter()
            .filter_map(|r| {
                let n = self.get(*r);
                (n > 0).then(|| (r.name().to_string(), n))
            })
            .collect()
    }
}

/// Frame and byte counters of one port (interface or link), from this daemon's view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    /// Frames received from the port.
    pub rx_frames: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_frames: u64,
    /// Bytes sent to the port.
    pub tx_bytes: u64,
    /// Frames that could not be sent to the port (down, queue full, too large, error).
    pub tx_drops: u64,
}

/// Counters of one port. Shared (`Arc`) between the workers that count and the control
/// plane that reports, and kept across reconnects.
#[derive(Debug, Default)]
pub struct PortStats {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_drops: AtomicU64,
}

impl PortStats {
    /// Counts a frame received from the port.
    pub fn rx(&self, bytes: usize) {
        self.rx_frames.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a frame sent to the port.
    pub fn tx(&self, bytes: usize) {
        self.tx_frames.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a frame that could not be sent to the port.
    pub fn tx_drop(&self) {
        self.tx_drops.fetch_add(1, Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> PortCounters {
        PortCounters {
            rx_frames: self.rx_frames.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_frames: self.tx_frames.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_drops: self.tx_drops.load(Relaxed),
        }
    }
}

/// The hop limit a frame leaves by a link with, having arrived with `hop_limit` hops left:
/// it used one hop to get here, and a link cannot carry it with none left
/// ([`DropReason::HopLimit`]). Outputs to local interfaces take no hop.
pub fn link_hop_limit(hop_limit: u8) -> Result<u8, DropReason> {
    hop_limit
        .checked_sub(1)
        .filter(|h| *h > 0)
        .ok_or(DropReason::HopLimit)
}

/// A forwarding worker's private state: its lookup cache.
#[derive(Debug)]
pub struct Forwarder {
    cache: LookupCache,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder {
            cache: LookupCache::new(CACHE_CAPACITY),
        }
    }
}

impl Forwarder {
    /// Decides where `frame`, arriving on `ingress` with `hop_limit` hops left, goes. Counts
    /// rule hits. The caller sends to each output and counts per-port results.
    pub fn decide<'a>(
        &'a mut self,
        table: &ForwardingTable,
        ingress: PortId,
        frame: &[u8],
        hop_limit: u8,
    ) -> Result<&'a Decision, DropReason> {
        if hop_limit == 0 {
            return Err(DropReason::HopLimit);
        }
        let (dst, src) = MacAddr::frame_addrs(frame).ok_or(DropReason::Runt)?;
        let decision = self.cache.lookup(table, ingress, src, dst);
        if decision.fired.is_empty() {
            return Err(DropReason::NoRule);
        }
        for idx in &decision.fired {
            table.stats(*idx).hit(frame.len());
        }
        if decision.outputs.is_empty() {
            return Err(DropReason::SplitHorizon);
        }
        Ok(decision)
    }

    /// Cache hits and misses so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.cache.hits(), self.cache.misses())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{DstMatch, MacMatch};
    use crate::table::{RuleId, RuleStats};
    use std::sync::Arc;

    fn frame(dst: &str, src: &str) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.parse::<MacAddr>().unwrap().0);
        f.extend_from_slice(&src.parse::<MacAddr>().unwrap().0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0u8; 46]);
        f
    }

    #[test]
    fn decides_counts_and_drops_with_reasons() {
        let a = "02:00:00:00:00:01";
        let b = "02:00:00:00:00:02";
        let mut t = ForwardingTable::new();
        let stats = Arc::new(RuleStats::default());
        t.insert(
            RuleId(1),
            MacMatch::Any,
            DstMatch::Mac(MacMatch::Exact(b.parse().unwrap())),
            vec![PortId(2)],
            stats.clone(),
        )
        .unwrap();
        let mut f = Forwarder::default();
        assert_eq!(
            f.decide(&t, PortId(1), &frame(b, a), 16).unwrap().outputs,
            vec![PortId(2)]
        );
        assert_eq!((stats.frames(), stats.bytes()), (1, 60));
        assert_eq!(
            f.decide(&t, PortId(2), &frame(b, a), 16),
            Err(DropReason::SplitHorizon)
        );
        assert_eq!(f.decide(&t, PortId(1), &frame(a, b), 16), Err(DropReason::NoRule));
        assert_eq!(
            f.decide(&t, PortId(1), &frame(b, a)[..13], 16),
            Err(DropReason::Runt)
        );
        assert_eq!(
            f.decide(&t, PortId(1), &frame(b, a), 0),
            Err(DropReason::HopLimit)
        );
        assert_eq!(stats.frames(), 2, "split horizon still fired the rule");
    }

    #[test]
    fn a_link_takes_a_frame_with_a_hop_left_after_its_own() {
        assert_eq!(link_hop_limit(16), Ok(15));
        assert_eq!(link_hop_limit(2), Ok(1));
        assert_eq!(link_hop_limit(1), Err(DropReason::HopLimit));
        assert_eq!(link_hop_limit(0), Err(DropReason::HopLimit));
    }

    #[test]
    fn drop_counters_report_nonzero_reasons_by_name() {
        let d = DropCounters::default();
        d.add(DropReason::NoRule);
        d.add(DropReason::NoRule);
        d.add(DropReason::HopLimit);
        assert_eq!(
            d.nonzero(),
            vec![("no_rule".to_string(), 2), ("hop_limit".to_string(), 1)]
        );
    }
}
