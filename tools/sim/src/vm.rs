//! VMs and their frames. Every frame a VM sends carries a unique id in its payload, so
//! every copy that reaches a VM, and every datagram that carries it, is accounted to it.

use std::fmt;

use vnet_core::mac::MacAddr;
use vnet_core::wire;

use crate::HostId;

/// A VM's index in the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(pub u32);

/// A frame's id: the order in which VMs sent them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameId(pub u64);

impl fmt::Display for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {}", self.0)
    }
}

/// A VM: a MAC behind one interface of one daemon (`iface:NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    /// The interface name (`vm3`), as rules name it.
    pub iface: String,
    /// Its MAC.
    pub mac: MacAddr,
    /// The host whose daemon the interface belongs to.
    pub host: HostId,
}

/// EtherType of simulated frames (IEEE 802 local experimental).
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
/// Marks a simulated frame's payload.
const MAGIC: [u8; 4] = *b"VSIM";
/// Where the id starts: after the Ethernet header and the magic.
const ID_AT: usize = 14 + MAGIC.len();
/// The minimum Ethernet frame (without FCS).
const MIN_FRAME: usize = 60;

/// The frame `src` sends to `dst` with id `id`.
pub fn frame(src: MacAddr, dst: MacAddr, id: FrameId) -> Vec<u8> {
    let mut f = Vec::with_capacity(MIN_FRAME);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(&MAGIC);
    f.extend_from_slice(&id.0.to_be_bytes());
    f.resize(MIN_FRAME, 0);
    f
}

/// The id of a simulated frame; `None` for anything else.
pub fn frame_id(frame: &[u8]) -> Option<FrameId> {
    if frame.get(12..14) != Some(&ETHERTYPE) || frame.get(14..ID_AT) != Some(&MAGIC) {
        return None;
    }
    let id: [u8; 8] = frame.get(ID_AT..ID_AT + 8)?.try_into().ok()?;
    Some(FrameId(u64::from_be_bytes(id)))
}

/// The id of the frame a link datagram carries, and its hop limit.
pub fn datagram_frame(datagram: &[u8]) -> Option<(FrameId, u8)> {
    let (header, payload) = wire::decode_datagram(datagram).ok()?;
    (header.kind == wire::Kind::Frame)
        .then(|| frame_id(payload).map(|id| (id, header.hop_limit)))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_id_through_a_link_message() {
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr::BROADCAST);
        let f = frame(a, b, FrameId(0x0102_0304_0506));
        assert_eq!(f.len(), MIN_FRAME);
        assert_eq!(MacAddr::frame_addrs(&f), Some((b, a)));
        assert_eq!(frame_id(&f), Some(FrameId(0x0102_0304_0506)));
        let mut m = Vec::new();
        wire::encode_frame(9, 1, 0, &[&f], &mut m).unwrap();
        assert_eq!(datagram_frame(&m), Some((FrameId(0x0102_0304_0506), 9)));
        assert_eq!(frame_id(&f[..20]), None);
        assert_eq!(frame_id(&[0u8; 60]), None);
        assert_eq!(datagram_frame(&m[1..]), None);
    }
}
