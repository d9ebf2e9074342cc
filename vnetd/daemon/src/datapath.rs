//! The data path's shared state and its send side: the published rule table, the port
//! map, and how one frame is sent to each output.
//!
//! Workers (one per interface reader thread, TCP session thread and UDP/QUIC link task)
//! read both snapshots without locks (`arc-swap`); the control plane publishes new ones on
//! every change. Each worker owns a [`Forwarder`] (its lookup cache), reusable buffers and
//! a VTTIF recorder, and runs each frame to completion: forwarding allocates nothing per
//! frame, and a frame for a TCP link is written to its socket by the worker itself.
//!
//! VTTIF accounting: every forwarded frame that came from a local interface is recorded
//! as `Sent`, every one that came from a link and leaves by a local interface as
//! `Delivered`, in the worker's own table (no lock, no allocation once the pair is known).
//! The control state reads every worker's cumulative counters when asked
//! (`vnet_control::dataplane::TrafficAccounts::matrix`); the counters of workers that
//! ended are folded into a retired total, so the daemon's matrix never goes backwards.

use std::fs::File;
use std::io::{ErrorKind, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use vnet_control::dataplane::Dataplane;
use vttif::Direction;

use vnet_core::forward::{link_hop_limit, DropCounters, DropReason, Forwarder, PortStats};
use vnet_core::mac::MacAddr;
use vnet_core::offload::{self, VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM};
use vnet_core::table::{ForwardingTable, PortId};
use vnet_core::wire;
use vnet_seal::Sealer;

/// How frames leave by one port.
#[derive(Debug, Clone)]
pub enum PortTx {
    /// A TAP device or a packet socket: one `write` per frame.
    Device {
        /// The device's queues (one for a packet socket). A flow is always written to the
        /// same queue, so the kernel hands its replies to that queue's reader.
        queues: Arc<[Arc<File>]>,
        /// The device reads and writes frames behind virtio-net headers (TAP offloads).
        vnet_hdr: bool,
    },
    /// A UDP link session: one datagram per frame from the daemon's UDP socket.
    Udp {
        /// The daemon's link socket.
        socket: Arc<tokio::net::UdpSocket>,
        /// The peer's address.
        peer: SocketAddr,
        /// The session id the peer expects.
        session: u32,
        /// Seals frames when the link encrypts.
        sealer: Option<Arc<Sealer>>,
        /// Largest Ethernet frame that fits one underlay packet (link MTU minus the
        /// encapsulation); TCP super-frames are segmented to fit.
        max_frame: usize,
    },
    /// A TCP link session: encoded messages go straight to its socket.
    Tcp {
        /// The session's send side.
        tx: Arc<crate::link::tcp::TcpTx>,
        /// Seals frames when the link encrypts.
        sealer: Option<Arc<Sealer>>,
        /// The peer takes super-frames behind virtio-net headers.
        superframes: bool,
    },
    /// A QUIC link session: frames as (fragmented) datagrams.
    Quic(Arc<crate::link::quic::QuicTx>),
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
#[derive(Debug)]
pub struct Datapath {
    /// The published forwarding table.
    pub table: ArcSwap<ForwardingTable>,
    /// The published port map.
    pub ports: ArcSwap<PortMap>,
    /// Drops by reason.
    /// Drops by reason (shared with the control state, as [`Datapath::dataplane`]).
    pub drops: Arc<DropCounters>,
    /// The counters the control state reports: drops, cache totals, VTTIF accounts.
    pub dataplane: Dataplane,
    too_large_log: LogLimit,
}

/// At most one log line per [`LogLimit::EVERY`]: per-frame problems are counted, and
/// logged only so that an operator notices them.
#[derive(Debug)]
struct LogLimit {
    start: Instant,
    /// Milliseconds after `start` of the last line, plus one (0: never).
    last_ms: AtomicU64,
}

impl LogLimit {
    const EVERY: Duration = Duration::from_secs(10);

    fn new() -> LogLimit {
        LogLimit {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now (and if so, the next one waits).
    fn allow(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Relaxed);
        (last == 0 || now >= last + Self::EVERY.as_millis() as u64)
            && self.last_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    }
}

impl Default for Datapath {
    fn default() -> Self {
        let dataplane = Dataplane::default();
        Datapath {
            table: ArcSwap::default(),
            ports: ArcSwap::default(),
            drops: dataplane.drops.clone(),
            dataplane,
            too_large_log: LogLimit::new(),
        }
    }
}

/// A forwarding worker's private state. Make one with [`Datapath::worker`].
#[derive(Debug)]
pub struct Worker {
    forwarder: Forwarder,
    bufs: Buffers,
    reported: (u64, u64),
    traffic: vttif::Recorder,
}

impl Datapath {
    /// A new worker whose traffic counts in this data path's VTTIF matrix.
    pub fn worker(&self) -> Worker {
        Worker {
            forwarder: Forwarder::default(),
            bufs: Buffers::default(),
            reported: (0, 0),
            traffic: self.dataplane.traffic.recorder(),
        }
    }

    /// Publishes a new port map to the workers.
    pub fn publish_ports(&self, ports: PortMap) {
        self.ports.store(Arc::new(ports));
    }

    /// Forwards one ordinary frame that arrived on `ingress` with `hop_limit` hops left.
    pub fn forward(&self, worker: &mut Worker, ingress: PortId, frame: &[u8], hop_limit: u8) {
        self.forward_with(worker, ingress, &VirtioNetHdr::default(), frame, hop_limit)
    }

    /// Forwards one frame that came with a virtio-net header: maybe a super-frame, maybe
    /// with a partial checksum; each output gets it in a form it can take.
    pub fn forward_with(
        &self,
        worker: &mut Worker,
        ingress: PortId,
        hdr: &VirtioNetHdr,
        frame: &[u8],
        hop_limit: u8,
    ) {
        let table = self.table.load();
        let ports = self.ports.load();
        let decision = match worker.forwarder.decide(&table, ingress, frame, hop_limit) {
            Ok(d) => d,
            Err(reason) => {
                self.drops.add(reason);
                return;
            }
        };
        let mut to_local = false;
        for &out in &decision.outputs {
            let Some(port) = ports.get(out) else {
                self.drops.add(DropReason::PortDown);
                continue;
            };
            to_local |= !port.is_link;
            match send(port, hdr, frame, hop_limit, &mut worker.bufs) {
                Ok(()) => port.stats.tx(frame.len()),
                Err(reason) => {
                    port.stats.tx_drop();
                    self.drops.add(reason);
                    if reason == DropReason::TooLarge && self.too_large_log.allow() {
                        tracing::warn!(
                            port = %port.name,
                            frame = frame.len(),
                            "frame too large for the port, dropped (counted as too_large; \
                             lower the sender's MTU or raise link_mtu); next such line in {}s at the earliest",
                            LogLimit::EVERY.as_secs()
                        );
                    }
                }
            }
        }
        if self.dataplane.traffic.enabled() {
            let from_local = ports.get(ingress).is_some_and(|p| !p.is_link);
            let dir = if from_local {
                Direction::Sent
            } else if to_local {
                Direction::Delivered
            } else {
                return;
            };
            // `decide` checked the frame holds an Ethernet header.
            if let Some((dst, src)) = MacAddr::frame_addrs(frame) {
                worker.traffic.record(&src, &dst, frame.len(), dir);
            }
        }
    }

    /// Adds the worker's cache hits and misses since its last report to the totals.
    pub fn report_cache(&self, worker: &mut Worker) {
        let (hits, misses) = worker.forwarder.cache_stats();
        self.dataplane
            .cache
            .add(hits - worker.reported.0, misses - worker.reported.1);
        worker.reported = (hits, misses);
    }
}

/// Sends one frame (maybe a super-frame described by `hdr`) to `port`: whole where the
/// port takes virtio-net headers, else segmented and with checksums completed.
fn send(
    port: &Port,
    hdr: &VirtioNetHdr,
    frame: &[u8],
    hop_limit: u8,
    bufs: &mut Buffers,
) -> Result<(), DropReason> {
    let hops = if port.is_link {
        link_hop_limit(hop_limit)?
    } else {
        0
    };
    let Buffers { msg, seg } = bufs;
    let whole = matches!(
        port.tx,
        PortTx::Device { vnet_hdr: true, .. }
            | PortTx::Tcp {
                superframes: true,
                ..
            }
    );
    if whole {
        return send_one(port, Some(hdr), frame, hops, msg);
    }
    if !hdr.is_gso() {
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
            return send_one(port, None, frame, hops, msg);
        }
        seg.clear();
        seg.extend_from_slice(frame);
        offload::complete_checksum(seg, hdr).map_err(|_| DropReason::Offload)?;
        return send_one(port, None, seg, hops, msg);
    }
    let max_frame = match &port.tx {
        PortTx::Udp { max_frame, .. } => *max_frame,
        PortTx::Quic(tx) => tx.max_frame(),
        _ => usize::MAX,
    };
    if let PortTx::Udp {
        socket,
        peer,
        session,
        sealer,
        ..
    } = &port.tx
    {
        return send_udp_batched(
            socket,
            *peer,
            *session,
            sealer.as_deref(),
            hdr,
            frame,
            max_frame,
            hops,
            msg,
            seg,
        );
    }
    let mut result = Ok(());
    offload::segment(frame, hdr, max_frame, seg, |s| {
        if let Err(e) = send_one(port, None, s, hops, msg) {
            result = Err(e);
        }
    })
    .map_err(|_| DropReason::Offload)?;
    result
}

/// Most datagrams one UDP_SEGMENT send may carry, and most bytes (IPv4's limit).
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 65_000;

/// Sends the segments of a super-frame over a UDP link as equal-sized datagrams gathered
/// into UDP_SEGMENT sends (one syscall for up to 64 datagrams); where the kernel refuses
/// GSO, datagram by datagram.
#[allow(clippy::too_many_arguments)]
fn send_udp_batched(
    socket: &tokio::net::UdpSocket,
    peer: SocketAddr,
    session: u32,
    sealer: Option<&Sealer>,
    hdr: &VirtioNetHdr,
    frame: &[u8],
    max_frame: usize,
    hops: u8,
    batch: &mut Vec<u8>,
    seg: &mut Vec<u8>,
) -> Result<(), DropReason> {
    batch.clear();
    let (mut size, mut count, mut result) = (0usize, 0usize, Ok(()));
    let mut flush = |batch: &mut Vec<u8>, size: usize| {
        if let Err(e) = send_gso_batch(socket, peer, batch, size) {
            result = Err(e);
        }
        batch.clear();
    };
    offload::segment(frame, hdr, max_frame, seg, |s| {
        let start = batch.len();
        if vnet_seal::encode_frame(sealer, hops, session, 0, &[s], batch).is_err() {
            batch.truncate(start);
            return;
        }
        let len = batch.len() - start;
        if count == 0 {
            size = len;
        }
        count += 1;
        // A shorter datagram may only end a GSO send; so may the limits.
        if len != size || count == GSO_MAX_SEGMENTS || batch.len() + size > GSO_MAX_BYTES {
            flush(batch, size);
            count = 0;
        }
    })
    .map_err(|_| DropReason::Offload)?;
    if !batch.is_empty() {
        flush(batch, size);
    }
    result
}

fn send_gso_batch(
    socket: &tokio::net::UdpSocket,
    peer: SocketAddr,
    batch: &[u8],
    size: usize,
) -> Result<(), DropReason> {
    let udp_error = |e: std::io::Error| match e.kind() {
        ErrorKind::WouldBlock => DropReason::QueueFull,
        _ if e.raw_os_error() == Some(libc::EMSGSIZE) => DropReason::TooLarge,
        _ => DropReason::SendError,
    };
    if batch.len() <= size {
        return socket.try_send_to(batch, peer).map(drop).map_err(udp_error);
    }
    match vnet_sys::send_udp_gso(socket, batch, size as u16, peer) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
            ) =>
        {
            for d in batch.chunks(size) {
                socket.try_send_to(d, peer).map_err(udp_error)?;
            }
            Ok(())
        }
        Err(e) => Err(udp_error(e)),
    }
}

/// Sends one frame, behind its virtio-net header when `hdr` is given.
fn send_one(
    port: &Port,
    hdr: Option<&VirtioNetHdr>,
    frame: &[u8],
    hops: u8,
    msg: &mut Vec<u8>,
) -> Result<(), DropReason> {
    let head = hdr.map(VirtioNetHdr::encode);
    let (flags, parts): (u8, [&[u8]; 2]) = match &head {
        Some(h) => (wire::FLAG_VNET_HDR, [h, frame]),
        None => (0, [&[], frame]),
    };
    match &port.tx {
        PortTx::Device { queues, .. } => {
            let file = &queues[flow_hash(frame) as usize % queues.len()];
            let written = match &head {
                // One writev: the TAP takes header and frame as one packet.
                Some(h) => (&**file).write_vectored(&[IoSlice::new(h), IoSlice::new(frame)]),
                None => (&**file).write(frame),
            };
            match written {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Err(DropReason::QueueFull),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(DropReason::TooLarge),
                Err(_) => Err(DropReason::SendError),
            }
        }
        PortTx::Udp {
            socket,
            peer,
            session,
            sealer,
            max_frame,
        } => {
            // Larger would leave as IP fragments, which a lossy path turns into lost
            // reassembly buffers; the TAP's default MTU keeps frames below this.
            if frame.len() > *max_frame {
                return Err(DropReason::TooLarge);
            }
            msg.clear();
            vnet_seal::encode_frame(sealer.as_deref(), hops, *session, flags, &parts, msg)
                .map_err(|_| DropReason::TooLarge)?;
            match socket.try_send_to(msg, *peer) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Err(DropReason::QueueFull),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(DropReason::TooLarge),
                Err(_) => Err(DropReason::SendError),
            }
        }
        PortTx::Tcp { tx, sealer, .. } => {
            msg.clear();
            vnet_seal::encode_frame(sealer.as_deref(), hops, 0, flags, &parts, msg)
                .map_err(|_| DropReason::TooLarge)?;
            tx.send(msg)
        }
        PortTx::Quic(tx) => tx.send(frame, hops),
    }
}

/// A hash of a frame's IP addresses and ports (zero for other frames), to keep each flow
/// on one device queue.
fn flow_hash(frame: &[u8]) -> u32 {
    let ends = match frame.get(12..14) {
        // IPv4 (assuming no options: a wrong guess only moves the flow to another queue).
        Some([0x08, 0x00]) => 26..38,
        Some([0x86, 0xdd]) => 22..58,
        _ => return 0,
    };
    frame.get(ends).map_or(0, |b| {
        // FNV-1a: cheap, and spreads neighbouring addresses and ports.
        b.iter().fold(0x811c_9dc5u32, |h, &x| {
            (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
        })
    })
}

/// A worker's reusable buffers: encoded messages, and segments of super-frames.
#[derive(Debug, Default)]
struct Buffers {
    msg: Vec<u8>,
    seg: Vec<u8>,
}
