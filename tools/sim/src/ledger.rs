//! Per-frame accounting: for every frame a VM sent, where copies of it went and what the
//! underlay and the daemons did to them. The checks read only this (and the trace for
//! their reports).

use vnet_core::forward::DropReason;
use vnet_core::mac::MacAddr;

use crate::time::SimTime;
use crate::vm::{FrameId, VmId};
use crate::HostId;

/// One copy written to a local interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The daemon's host.
    pub host: HostId,
    /// The VM behind the interface (`None`: an interface without a VM).
    pub vm: Option<VmId>,
    /// When.
    pub at: SimTime,
}

/// What happened to one frame and its copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRecord {
    /// The sender.
    pub src: VmId,
    /// The destination MAC.
    pub dst: MacAddr,
    /// When the VM sent it.
    pub sent_at: SimTime,
    /// Copies written to interfaces.
    pub deliveries: Vec<Delivery>,
    /// Datagrams carrying it that daemons sent.
    pub transmissions: u32,
    /// The lowest hop limit any of those datagrams carried.
    pub min_hop_limit: Option<u8>,
    /// Datagrams carrying it the underlay lost.
    pub lost: u32,
    /// Datagrams carrying it the underlay duplicated.
    pub duplicated: u32,
    /// Datagrams carrying it a partition dropped.
    pub cut: u32,
    /// Datagrams carrying it that reached a host whose daemon did not run, or the frame
    /// itself when its VM's daemon did not run.
    pub host_down: u32,
    /// Drops by daemons, with the host.
    pub drops: Vec<(HostId, DropReason)>,
}

impl FrameRecord {
    /// How many copies reached `vm`.
    pub fn deliveries_to(&self, vm: VmId) -> usize {
        self.deliveries.iter().filter(|d| d.vm == Some(vm)).count()
    }

    /// Whether the underlay lost, duplicated or cut a datagram of it, or it met a daemon
    /// that was down.
    pub fn touched_by_faults(&self) -> bool {
        self.lost + self.duplicated + self.cut + self.host_down > 0
    }
}

/// Every frame sent, by id.
#[derive(Debug, Default)]
pub struct Ledger {
    frames: Vec<FrameRecord>,
}

impl Ledger {
    /// Records a new frame and returns its id.
    pub fn open(&mut self, src: VmId, dst: MacAddr, sent_at: SimTime) -> FrameId {
        let id = FrameId(self.frames.len() as u64);
        self.frames.push(FrameRecord {
            src,
            dst,
            sent_at,
            deliveries: Vec::new(),
            transmissions: 0,
            min_hop_limit: None,
            lost: 0,
            duplicated: 0,
            cut: 0,
            host_down: 0,
            drops: Vec::new(),
        });
        id
    }

    /// The record of frame `id`.
    pub fn get(&self, id: FrameId) -> Option<&FrameRecord> {
        self.frames.get(usize::try_from(id.0).ok()?)
    }

    /// The record of frame `id`, to update (`None` for ids the ledger never gave out,
    /// e.g. from a frame a test crafted).
    pub fn get_mut(&mut self, id: FrameId) -> Option<&mut FrameRecord> {
        self.frames.get_mut(usize::try_from(id.0).ok()?)
    }

    /// Every frame with its id, in the order they were sent.
    pub fn frames(&self) -> impl Iterator<Item = (FrameId, &FrameRecord)> {
        self.frames
            .iter()
            .enumerate()
            .map(|(i, r)| (FrameId(i as u64), r))
    }

    /// Frames sent.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame was sent.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}
