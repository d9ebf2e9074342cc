//! The trace: every event of a run, in order, with a digest over all of them (same seed,
//! same digest, byte for byte) and the events kept for failure reports.

use std::collections::VecDeque;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use vnet_core::forward::DropReason;

use crate::time::SimTime;
use crate::vm::{FrameId, Vm, VmId};
use crate::HostId;

/// One thing that happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A VM sent a frame into its daemon.
    Sent {
        /// The frame.
        frame: FrameId,
        /// The sender.
        vm: VmId,
    },
    /// A VM sent a frame, but its daemon does not run or has no such interface.
    NotAttached {
        /// The frame.
        frame: FrameId,
        /// The sender.
        vm: VmId,
    },
    /// A daemon sent a datagram (carrying `frame`, if it carries one) over the underlay.
    Transmit {
        /// The frame carried.
        frame: Option<FrameId>,
        /// Sending host.
        from: HostId,
        /// Receiving host.
        to: HostId,
        /// The hop limit in the link header.
        hops: u8,
    },
    /// The underlay lost a datagram.
    Lost {
        /// The frame carried.
        frame: Option<FrameId>,
        /// Sending host.
        from: HostId,
        /// Receiving host.
        to: HostId,
    },
    /// The underlay duplicated a datagram.
    Duplicated {
        /// The frame carried.
        frame: Option<FrameId>,
        /// Sending host.
        from: HostId,
        /// Receiving host.
        to: HostId,
    },
    /// A partition dropped a datagram.
    Cut {
        /// The frame carried.
        frame: Option<FrameId>,
        /// Sending host.
        from: HostId,
        /// Receiving host.
        to: HostId,
    },
    /// A datagram arrived at a host whose daemon does not run.
    HostDown {
        /// The frame carried.
        frame: Option<FrameId>,
        /// The host.
        host: HostId,
    },
    /// A daemon wrote a frame to a local interface.
    Delivered {
        /// The frame.
        frame: Option<FrameId>,
        /// The daemon's host.
        host: HostId,
        /// The VM behind the interface (`None`: no VM is there).
        vm: Option<VmId>,
    },
    /// A daemon dropped a frame or message.
    Dropped {
        /// The frame, if the input carried one.
        frame: Option<FrameId>,
        /// The daemon's host.
        host: HostId,
        /// Why.
        reason: DropReason,
    },
    /// A daemon's link got a new session with a peer.
    LinkUp {
        /// The daemon's host.
        host: HostId,
        /// The peer's host.
        peer: HostId,
        /// Its session id.
        session: u32,
    },
    /// A daemon's link session ended.
    LinkDown {
        /// The daemon's host.
        host: HostId,
        /// The session that ended.
        session: u32,
    },
    /// A daemon crashed.
    Crash {
        /// Its host.
        host: HostId,
    },
    /// A daemon restarted from its state file.
    Restart {
        /// Its host.
        host: HostId,
    },
    /// A partition came into force.
    PartitionStarts {
        /// Its index in the schedule.
        index: u32,
    },
    /// A partition healed.
    PartitionEnds {
        /// Its index in the schedule.
        index: u32,
    },
    /// A daemon took a new topology.
    Configured {
        /// Its host.
        host: HostId,
    },
}

/// An event and when it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// When.
    pub at: SimTime,
    /// What.
    pub event: TraceEvent,
}

const NONE: u64 = u64::MAX;

fn frame_word(f: Option<FrameId>) -> u64 {
    f.map_or(NONE, |f| f.0)
}

impl TraceEvent {
    /// The event as a tag and four numbers: what the digest is computed over.
    fn code(&self) -> (u8, [u64; 4]) {
        let h = |h: &HostId| u64::from(h.0);
        match self {
            TraceEvent::Sent { frame, vm } => (0, [frame.0, u64::from(vm.0), 0, 0]),
            TraceEvent::NotAttached { frame, vm } => (1, [frame.0, u64::from(vm.0), 0, 0]),
            TraceEvent::Transmit {
                frame,
                from,
                to,
                hops,
            } => (2, [frame_word(*frame), h(from), h(to), u64::from(*hops)]),
            TraceEvent::Lost { frame, from, to } => (3, [frame_word(*frame), h(from), h(to), 0]),
            TraceEvent::Duplicated { frame, from, to } => (4, [frame_word(*frame), h(from), h(to), 0]),
            TraceEvent::Cut { frame, from, to } => (5, [frame_word(*frame), h(from), h(to), 0]),
            TraceEvent::HostDown { frame, host } => (6, [frame_word(*frame), h(host), 0, 0]),
            TraceEvent::Delivered { frame, host, vm } => (
                7,
                [
                    frame_word(*frame),
                    h(host),
                    vm.map_or(NONE, |v| u64::from(v.0)),
                    0,
                ],
            ),
            TraceEvent::Dropped { frame, host, reason } => {
                (8, [frame_word(*frame), h(host), *reason as u64, 0])
            }
            TraceEvent::LinkUp { host, peer, session } => (9, [h(host), h(peer), u64::from(*session), 0]),
            TraceEvent::LinkDown { host, session } => (10, [h(host), u64::from(*session), 0, 0]),
            TraceEvent::Crash { host } => (11, [h(host), 0, 0, 0]),
            TraceEvent::Restart { host } => (12, [h(host), 0, 0, 0]),
            TraceEvent::PartitionStarts { index } => (13, [u64::from(*index), 0, 0, 0]),
            TraceEvent::PartitionEnds { index } => (14, [u64::from(*index), 0, 0, 0]),
            TraceEvent::Configured { host } => (15, [h(host), 0, 0, 0]),
        }
    }

    /// The frame the event concerns, if any.
    pub fn frame(&self) -> Option<FrameId> {
        match *self {
            TraceEvent::Sent { frame, .. } | TraceEvent::NotAttached { frame, .. } => Some(frame),
            TraceEvent::Transmit { frame, .. }
            | TraceEvent::Lost { frame, .. }
            | TraceEvent::Duplicated { frame, .. }
            | TraceEvent::Cut { frame, .. }
            | TraceEvent::HostDown { frame, .. }
            | TraceEvent::Delivered { frame, .. }
            | TraceEvent::Dropped { frame, .. } => frame,
            _ => None,
        }
    }
}

/// How much of the trace a run keeps (the digest always covers every event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// Every event, for failure reports that show a frame's whole trip.
    Full,
    /// The last this many events (for long runs).
    Tail(usize),
}

/// The trace of a run.
#[derive(Debug)]
pub struct Trace {
    mode: TraceMode,
    digest: Sha256,
    records: VecDeque<Record>,
    count: u64,
}

impl Trace {
    /// An empty trace.
    pub fn new(mode: TraceMode) -> Trace {
        Trace {
            mode,
            digest: Sha256::new(),
            records: VecDeque::new(),
            count: 0,
        }
    }

    /// Records an event.
    pub fn push(&mut self, at: SimTime, event: TraceEvent) {
        let (tag, words) = event.code();
        let mut bytes = [0u8; 41];
        bytes[0] = tag;
        for (i, w) in std::iter::once(at.0).chain(words).enumerate() {
            bytes[1 + 8 * i..9 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        self.digest.update(bytes);
        self.count += 1;
        if let TraceMode::Tail(n) = self.mode {
            if self.records.len() >= n {
                self.records.pop_front();
            }
        }
        self.records.push_back(Record { at, event });
    }

    /// Events recorded so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing happened yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The events kept.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }

    /// SHA-256 over every event so far, as hex.
    pub fn digest(&self) -> String {
        self.digest
            .clone()
            .finalize()
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

/// One record as a line, with host and VM names.
pub fn render(r: &Record, hosts: &[String], vms: &[Vm]) -> String {
    let host = |h: HostId| hosts.get(h.0 as usize).map_or("?", String::as_str);
    let vm = |v: VmId| vms.get(v.0 as usize).map_or("?", |v| v.iface.as_str());
    let frame = |f: Option<FrameId>| f.map_or("a message".to_string(), |f| f.to_string());
    let what = match r.event {
        TraceEvent::Sent { frame, vm: v } => format!("{} sends {frame}", vm(v)),
        TraceEvent::NotAttached { frame, vm: v } => {
            format!("{} sends {frame}, but its daemon has no such NIC", vm(v))
        }
        TraceEvent::Transmit {
            frame: f,
            from,
            to,
            hops,
        } => {
            format!(
                "{} sends {} to {} (hop limit {hops})",
                host(from),
                frame(f),
                host(to)
            )
        }
        TraceEvent::Lost { frame: f, from, to } => {
            format!("underlay loses {} {}->{}", frame(f), host(from), host(to))
        }
        TraceEvent::Duplicated { frame: f, from, to } => {
            format!("underlay duplicates {} {}->{}", frame(f), host(from), host(to))
        }
        TraceEvent::Cut { frame: f, from, to } => {
            format!("partition drops {} {}->{}", frame(f), host(from), host(to))
        }
        TraceEvent::HostDown { frame: f, host: h } => {
            format!("{} reaches {}, whose daemon is down", frame(f), host(h))
        }
        TraceEvent::Delivered {
            frame: f,
            host: h,
            vm: v,
        } => match v {
            Some(v) => format!("{} delivers {} to {}", host(h), frame(f), vm(v)),
            None => format!("{} delivers {} to an interface with no VM", host(h), frame(f)),
        },
        TraceEvent::Dropped {
            frame: f,
            host: h,
            reason,
        } => {
            format!("{} drops {} ({})", host(h), frame(f), reason.name())
        }
        TraceEvent::LinkUp {
            host: h,
            peer,
            session,
        } => {
            format!("{} link to {} up (session {session})", host(h), host(peer))
        }
        TraceEvent::LinkDown { host: h, session } => {
            format!("{} link session {session} down", host(h))
        }
        TraceEvent::Crash { host: h } => format!("{} crashes", host(h)),
        TraceEvent::Restart { host: h } => format!("{} restarts from its state file", host(h)),
        TraceEvent::PartitionStarts { index } => format!("partition {index} starts"),
        TraceEvent::PartitionEnds { index } => format!("partition {index} heals"),
        TraceEvent::Configured { host: h } => format!("{} takes a new topology", host(h)),
    };
    format!("{} {what}", r.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_covers_every_event_and_the_tail_keeps_the_last() {
        let run = |frames: &[u64]| {
            let mut t = Trace::new(TraceMode::Tail(2));
            for &f in frames {
                t.push(
                    SimTime(f),
                    TraceEvent::Sent {
                        frame: FrameId(f),
                        vm: VmId(0),
                    },
                );
            }
            t
        };
        let t = run(&[1, 2, 3]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.records().map(|r| r.at.0).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(t.digest(), run(&[1, 2, 3]).digest());
        assert_ne!(t.digest(), run(&[1, 3, 2]).digest());
        assert_eq!(t.digest().len(), 64);
    }
}
