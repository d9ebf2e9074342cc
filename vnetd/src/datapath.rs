//! The data path's shared state and its send side: the published rule table, the port
//! map, and how one frame is sent to each output.
//!
//! Workers (one per interface reader and link reader) read both snapshots without locks
//! (`arc-swap`); the control plane publishes new ones on every change. Each worker owns a
//! [`Forwarder`] (its lookup cache) and a scratch buffer, so forwarding allocates nothing
//! per frame except on TCP links, whose writer task takes owned messages.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::forward::{DropCounters, DropReason, Forwarder, PortStats};
use crate::table::{ForwardingTable, PortId};
use crate::wire::{self, Kind};

/// How frames leave by one port.
#[derive(Debug, Clone)]
pub enum PortTx {
    /// A TAP device or a packet socket: one `write` per frame.
    Device(Arc<File>),
    /// A UDP link session: one datagram per frame from the daemon's UDP socket.
    Udp {
        /// The daemon's link socket.
        socket: Arc<tokio::net::UdpSocket>,
        /// The peer's address.
        peer: SocketAddr,
        /// The session id the peer expects.
        session: u32,
    },
    /// A TCP link session: encoded messages go to its writer task.
    Tcp(mpsc::Sender<Vec<u8>>),
}

/// A live port: how to send, and its counters.
#[derive(Debug, Clone)]
pub struct Port {
    /// Name, for logs.
    pub name: Arc<str>,
    /// True for links (frames get a link header and a decremented hop limit).
    pub is_link: bool,
    /// The send side.
    pub tx: PortTx,
    /// Counters.
    pub stats: Arc<PortStats>,
    /// Which session installed this send side (0 for interfaces).
    pub session: u64,
}

/// Live ports indexed by [`PortId`]; `None` where the port is down or unknown.
#[derive(Debug, Default, Clone)]
pub struct PortMap(pub Vec<Option<Port>>);

impl PortMap {
    /// The live port with this id.
    pub fn get(&self, id: PortId) -> Option<&Port> {
        self.0.get(id.0 as usize).and_then(Option::as_ref)
    }
}

/// What the workers share.
#[derive(Debug, Default)]
pub struct Datapath {
    /// The published forwarding table.
    pub table: ArcSwap<ForwardingTable>,
    /// The published port map.
    pub ports: ArcSwap<PortMap>,
    /// Drops by reason.
    pub drops: DropCounters,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

/// A forwarding worker's private state.
#[derive(Debug, Default)]
pub struct Worker {
    forwarder: Forwarder,
    scratch: Vec<u8>,
    reported: (u64, u64),
}

impl Datapath {
    /// Forwards one frame that arrived on `ingress` with `hop_limit` hops left.
    pub fn forward(&self, worker: &mut Worker, ingress: PortId, frame: &[u8], hop_limit: u8) {
        let table = self.table.load();
        let ports = self.ports.load();
        let decision = match worker.forwarder.decide(&table, ingress, frame, hop_limit) {
            Ok(d) => d,
            Err(reason) => {
                self.drops.add(reason);
                return;
            }
        };
        for &out in &decision.outputs {
            let Some(port) = ports.get(out) else {
                self.drops.add(DropReason::PortDown);
                continue;
            };
            match send(port, frame, hop_limit, &mut worker.scratch) {
                Ok(()) => port.stats.tx(frame.len()),
                Err(reason) => {
                    port.stats.tx_drop();
                    self.drops.add(reason);
                }
            }
        }
    }

    /// Adds the worker's cache hits and misses since its last report to the totals.
    pub fn report_cache(&self, worker: &mut Worker) {
        let (hits, misses) = worker.forwarder.cache_stats();
        self.cache_hits.fetch_add(hits - worker.reported.0, Relaxed);
        self.cache_misses.fetch_add(misses - worker.reported.1, Relaxed);
        worker.reported = (hits, misses);
    }

    /// Total cache hits and misses reported so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.cache_hits.load(Relaxed), self.cache_misses.load(Relaxed))
    }
}

fn send(port: &Port, frame: &[u8], hop_limit: u8, scratch: &mut Vec<u8>) -> Result<(), DropReason> {
    let hops = if port.is_link {
        // The frame has used one hop to get here; a link cannot carry it with none left.
        match hop_limit.checked_sub(1) {
            Some(h) if h > 0 => h,
            _ => return Err(DropReason::HopLimit),
        }
    } else {
        0
    };
    match &port.tx {
        PortTx::Device(file) => match (&**file).write(frame) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(DropReason::QueueFull),
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(DropReason::TooLarge),
            Err(_) => Err(DropReason::SendError),
        },
        PortTx::Udp {
            socket,
            peer,
            session,
        } => {
            scratch.clear();
            wire::encode_message(Kind::Frame, hops, *session, frame, scratch)
                .map_err(|_| DropReason::TooLarge)?;
            match socket.try_send_to(scratch, *peer) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Err(DropReason::QueueFull),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(DropReason::TooLarge),
                Err(_) => Err(DropReason::SendError),
            }
        }
        PortTx::Tcp(queue) => {
            let mut msg = Vec::with_capacity(wire::HEADER_LEN + frame.len());
            wire::encode_message(Kind::Frame, hops, 0, frame, &mut msg).map_err(|_| DropReason::TooLarge)?;
            match queue.try_send(msg) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => Err(DropReason::QueueFull),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(DropReason::PortDown),
            }
        }
    }
}
