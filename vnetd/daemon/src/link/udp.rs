//! UDP links: every link shares the daemon's one UDP socket. One data-path thread receives
//! every datagram and hands it to the [`Endpoint`], which runs the handshakes, keeps
//! sessions alive and demultiplexes; the thread sends what the endpoint polls, opens and
//! forwards the frames it hands back, and reports what happened in the links' status.
//! Senders on other threads write frames to the socket directly.
//!
//! Liveness ([`Policy::udp`](vnet_core::session::Policy::udp)): an up session sends a
//! keepalive every 400 ms and is declared dead after 5 s without hearing from the peer.
//! Keepalives carry timestamps from which both ends measure the round-trip time, and
//! their tick samples the link's throughput. A datagram for a session the receiver does
//! not know (it restarted) is answered with a Reset, upon which a dialing end handshakes
//! again at once, so a restarted peer is reachable again within a handshake round trip
//! rather than after 5 s.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::daemon::{Daemon, LinkInfo};
use crate::datapath::{PortTx, Worker};
use crate::link::meter::SessionMeter;
use crate::link::stream::session_crypto;
use crate::link::{
    credentials, deliver, entropy, forward_from, frame_payload, tap_coalescer, update, SOCKET_BUFFER,
};
use crate::threads::{DataThread, Stop};
use vnet_core::endpoint::{Datagram, Endpoint, EndpointEvent, LinkId};
use vnet_core::forward::PortStats;
use vnet_core::gro::Coalescer;
use vnet_core::handshake::Session;
use vnet_core::name::Name;
use vnet_core::rule::Output;
use vnet_core::session::{Event, Lost};
use vnet_core::table::PortId;
use vnet_core::wire::{self, Header, Kind};
use vnet_seal::Opener;

/// Receives in a row before the thread looks at its timers and commands again.
const RECEIVES_PER_ROUND: usize = 64;

enum Command {
    Add {
        name: Name,
        peer: Option<SocketAddr>,
        caps: u32,
        info: Arc<Mutex<LinkInfo>>,
    },
    Remove {
        name: String,
    },
}

/// The UDP socket and the command queue of its thread.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The daemon's UDP link socket.
    pub socket: Arc<UdpSocket>,
    commands: mpsc::UnboundedSender<Command>,
    /// Wakes the thread for a command.
    thread: Arc<Stop>,
}

/// The receiving end the thread consumes; returned by [`bind`], given to [`spawn`].
#[derive(Debug)]
pub struct Commands {
    queue: mpsc::UnboundedReceiver<Command>,
    stop: Arc<Stop>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Add { name, .. } => write!(f, "Add({name})"),
            Command::Remove { name } => write!(f, "Remove({name})"),
        }
    }
}

impl Handle {
    /// Starts handling a UDP link: dial `peer`, or wait for the peer when `None`.
    pub fn add_link(&self, name: Name, peer: Option<SocketAddr>, caps: u32, info: Arc<Mutex<LinkInfo>>) {
        self.command(Command::Add {
            name,
            peer,
            caps,
            info,
        });
    }

    /// Stops handling a link (no-op for links it does not know, e.g. TCP ones).
    pub fn remove_link(&self, name: String) {
        self.command(Command::Remove { name });
    }

    fn command(&self, c: Command) {
        // The thread lives as long as the daemon; a send error only happens at shutdown.
        let _ = self.commands.send(c);
        self.thread.waker().wake();
    }
}

/// Binds the UDP link socket.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(Handle, Commands)> {
    let socket = UdpSocket::bind(addr).await?;
    if let Err(e) = vnet_sys::grow_socket_buffers(&socket, SOCKET_BUFFER) {
        tracing::warn!("cannot grow the UDP link socket's buffers: {e}");
    }
    // Coalesced receives cut syscalls per datagram; without them, one datagram per recv.
    if let Err(e) = vnet_sys::enable_udp_gro(&socket) {
        tracing::info!("UDP_GRO unavailable, receiving datagram by datagram: {e}");
    }
    let socket = Arc::new(socket);
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = Stop::new()?;
    let handle = Handle {
        socket,
        commands: tx,
        thread: stop.clone(),
    };
    Ok((handle, Commands { queue: rx, stop }))
}

/// The driver's side of one UDP link, at its [`LinkId`]'s index.
struct Link {
    name: Name,
    /// The link dials (it falls back to Connecting, not Waiting).
    dials: bool,
    info: Arc<Mutex<LinkInfo>>,
    /// The link's port and counters, looked up once so receiving takes no lock.
    port: PortId,
    stats: Arc<PortStats>,
    up: Option<Up>,
}

/// The link's up session, as far as the driver is concerned.
struct Up {
    token: u64,
    /// Opens the peer's sealed frames when the link encrypts (boxed: a cipher key schedule
    /// would make every link that large).
    opener: Option<Box<Opener>>,
    /// Round-trip time and throughput of this session.
    meter: SessionMeter,
}

struct Task {
    daemon: Arc<Daemon>,
    socket: Arc<UdpSocket>,
    endpoint: Endpoint,
    links: Vec<Option<Link>>,
    worker: Worker,
    /// Scratch for opened frames.
    plain: Vec<u8>,
    /// Scratch for datagrams to send.
    out: Vec<u8>,
    /// Glues the TCP segments of a receive batch back into super-frames (user-space GRO).
    gro: Gro,
}

/// The coalescer, and the link whose frames it holds.
struct Gro {
    coalescer: Coalescer,
    link: Option<(PortId, Arc<PortStats>)>,
}

impl Gro {
    /// Offers a frame received on link port `port`; frames of another link are forwarded
    /// first.
    fn push(
        &mut self,
        daemon: &Daemon,
        worker: &mut Worker,
        port: PortId,
        stats: &Arc<PortStats>,
        hops: u8,
        frame: &[u8],
    ) {
        if self.link.as_ref().is_some_and(|(p, _)| *p != port) {
            self.flush(daemon, worker);
        }
        let mut emit = forward_from(daemon, worker, port, stats);
        self.coalescer.push(hops, frame, &mut emit);
        if self.link.is_none() {
            self.link = Some((port, stats.clone()));
        }
    }

    /// Forwards what the coalescer holds.
    fn flush(&mut self, daemon: &Daemon, worker: &mut Worker) {
        if let Some((port, stats)) = self.link.take() {
            self.coalescer
                .flush(&mut forward_from(daemon, worker, port, &stats));
        }
    }
}

/// Starts the thread that runs every UDP link: handshakes, keepalives, and receiving and
/// forwarding frames. Dropping the handle stops it.
pub fn spawn(daemon: Arc<Daemon>, commands: Commands) -> std::io::Result<DataThread> {
    let Commands { queue, stop } = commands;
    let (thread, _) = DataThread::spawn("udp-links".into(), stop, move |stop: &Stop| {
        let mut task = Task {
            worker: daemon.datapath.worker(),
            socket: daemon.udp.socket.clone(),
            endpoint: Endpoint::new(credentials(&daemon), Box::new(entropy())),
            daemon,
            links: Vec::new(),
            plain: Vec::new(),
            out: Vec::new(),
            gro: Gro {
                coalescer: tap_coalescer(),
                link: None,
            },
        };
        task.run(queue, stop);
    })?;
    Ok(thread)
}

impl Task {
    fn run(&mut self, mut commands: mpsc::UnboundedReceiver<Command>, stop: &Stop) {
        let mut buf = vec![0u8; 65_536];
        let readable = vnet_sys::Interest {
            read: true,
            write: false,
        };
        while !stop.is_set() {
            loop {
                match commands.try_recv() {
                    Ok(c) => self.on_command(c, Instant::now()),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            // Take what is queued (each receive maybe several coalesced datagrams), a
            // bounded number at a time so that timers and commands are not starved.
            let mut drained = false;
            for _ in 0..RECEIVES_PER_ROUND {
                match vnet_sys::recv_udp_gro(&*self.socket, &mut buf) {
                    Ok((n, from, segment)) => {
                        let now = Instant::now();
                        for d in buf[..n].chunks(segment.unwrap_or(n).max(1)) {
                            self.on_datagram(d, from, now);
                        }
                        self.gro.flush(&self.daemon, &mut self.worker);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    // ICMP errors surface as ECONNREFUSED on Linux; not fatal.
                    Err(e) => tracing::debug!("udp recv: {e}"),
                }
            }
            let now = Instant::now();
            if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                self.endpoint.handle_timeout(now);
            }
            self.settle(now);
            if drained {
                self.daemon.datapath.report_cache(&mut self.worker);
                let timeout = self
                    .endpoint
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(now));
                if let Err(e) = vnet_sys::wait(&*self.socket, readable, stop.waker(), timeout) {
                    tracing::error!("UDP links stopped: cannot wait for the socket: {e}");
                    return;
                }
            }
        }
    }

    fn on_command(&mut self, c: Command, now: Instant) {
        match c {
            Command::Add {
                name,
                peer,
                info,
                caps,
            } => {
                if let Some(old) = self.endpoint.find(&name) {
                    self.remove(old, "link replaced");
                }
                let (port, stats) = self.daemon.port(&Output::Link(name.clone()));
                let id = self.endpoint.add_link(&name, peer, caps, now);
                if self.links.len() <= id.index() {
                    self.links.resize_with(id.index() + 1, || None);
                }
                self.links[id.index()] = Some(Link {
                    name,
                    dials: peer.is_some(),
                    info,
                    port,
                    stats,
                    up: None,
                });
                // A dialing link's Hello goes at once.
                self.settle(now);
            }
            Command::Remove { name } => {
                if let Some(id) = self.endpoint.find(&name) {
                    self.remove(id, "link deleted");
                }
            }
        }
    }

    fn remove(&mut self, id: LinkId, why: &str) {
        self.endpoint.remove_link(id);
        if let Some(link) = self.links.get_mut(id.index()).and_then(Option::take) {
            if let Some(up) = link.up {
                self.daemon.link_down(&link.name, up.token);
                tracing::info!(link = %link.name, "udp session ended: {why}");
            }
        }
    }

    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        match self.endpoint.handle_datagram(from, datagram, now) {
            Datagram::Frame {
                link,
                header,
                payload,
            } => self.on_frame(link, header, payload),
            Datagram::Consumed => self.settle(now),
            Datagram::Dropped(reason) => {
                self.daemon.datapath.drops.add(reason);
                self.settle(now);
            }
        }
    }

    /// Opens a frame of link `id`'s up session and forwards it (through the coalescer
    /// unless it is already a super-frame).
    fn on_frame(&mut self, id: LinkId, header: Header, payload: &[u8]) {
        let Some(Link {
            port,
            stats,
            up: Some(up),
            ..
        }) = self.links.get_mut(id.index()).and_then(Option::as_mut)
        else {
            return;
        };
        let frame = match frame_payload(up.opener.as_deref_mut(), &header, payload, &mut self.plain) {
            Ok(frame) => frame,
            Err(reason) => return self.daemon.datapath.drops.add(reason),
        };
        if header.flags & wire::FLAG_VNET_HDR != 0 {
            // Already a super-frame (or a frame with a partial checksum): as it came, after
            // what the coalescer holds.
            self.gro.flush(&self.daemon, &mut self.worker);
            if let Err(reason) = deliver(&self.daemon, &mut self.worker, *port, stats, &header, frame) {
                self.daemon.datapath.drops.add(reason);
            }
            return;
        }
        self.gro.push(
            &self.daemon,
            &mut self.worker,
            *port,
            stats,
            header.hop_limit,
            frame,
        );
    }

    /// Sends what the endpoint has to send and takes what it reports; after every
    /// datagram that was not a frame, so a new session's opener is in place before its
    /// first frame.
    fn settle(&mut self, now: Instant) {
        while let Some(t) = self.endpoint.poll_transmit(now, &mut self.out) {
            if t.kind == Kind::Keepalive {
                if let Some(up) = t.link.and_then(|id| self.up(id)) {
                    up.meter.sample_counters(now);
                }
            }
            if let Err(e) = self.socket.try_send_to(&self.out, t.to) {
                tracing::debug!(peer = %t.to, "udp send {:?}: {e}", t.kind);
            }
        }
        while let Some(event) = self.endpoint.poll_event() {
            self.on_event(event);
        }
    }

    fn up(&self, id: LinkId) -> Option<&Up> {
        self.links.get(id.index())?.as_ref()?.up.as_ref()
    }

    fn on_event(&mut self, EndpointEvent { link, peer, event }: EndpointEvent) {
        let Some((id, l)) = link.and_then(|id| Some((id, self.links.get_mut(id.index())?.as_mut()?))) else {
            // A Hello for a link that is not here.
            if let Event::Refused(reason) = event {
                tracing::warn!(peer = %peer, "udp link refused: {reason}");
            }
            return;
        };
        match event {
            Event::Established(session) => self.session_up(id, peer, &session),
            Event::Rtt(rtt) => {
                if let Some(up) = &l.up {
                    up.meter.sample_rtt(rtt);
                }
            }
            Event::PeerRefused(reason) => {
                tracing::warn!(link = %l.name, peer = %peer, "peer refused the link: {reason}");
                update(&l.info, |i| {
                    i.last_error = Some(format!("peer refused the link: {reason}"))
                });
            }
            Event::Rejected(e) if l.dials => {
                tracing::warn!(link = %l.name, peer = %peer, "udp handshake failed: {e}");
                update(&l.info, |i| i.last_error = Some(e.to_string()));
            }
            Event::Rejected(e) => {
                tracing::warn!(link = %l.name, peer = %peer, "udp peer failed authentication: {e}");
            }
            Event::Refused(reason) => {
                tracing::warn!(link = %l.name, peer = %peer, "udp link refused: {reason}")
            }
            Event::Lost(lost) => {
                if let Some(up) = l.up.take() {
                    self.daemon.link_down(&l.name, up.token);
                }
                let dials = l.dials;
                match lost {
                    Lost::Reset => {
                        tracing::info!(link = %l.name, "peer lost our udp session (restarted?); handshaking again");
                        update(&l.info, |i| i.session_lost(dials, None));
                    }
                    lost => {
                        tracing::warn!(link = %l.name, "udp session ended: {lost}");
                        update(&l.info, |i| i.session_lost(dials, Some(lost.to_string())));
                    }
                }
            }
            // The endpoint admits at the Hello: nothing waits for approval.
            Event::Proven { .. } => {}
        }
    }

    fn session_up(&mut self, id: LinkId, addr: SocketAddr, s: &Session) {
        let Some(link) = self.links.get_mut(id.index()).and_then(Option::as_mut) else {
            return;
        };
        let (sealer, opener) = session_crypto(s).unzip();
        // One underlay packet per frame: link MTU minus IP, UDP, link header and seal.
        let ip = if addr.is_ipv6() { 40 } else { 20 };
        let seal = if sealer.is_some() {
            vnet_core::crypto::SEAL_OVERHEAD
        } else {
            0
        };
        let overhead = ip + 8 + wire::HEADER_LEN + seal;
        let max_frame = (self.daemon.identity.link_mtu as usize).saturating_sub(overhead);
        let tx = PortTx::Udp {
            socket: self.socket.clone(),
            peer: addr,
            session: s.id,
            sealer,
            max_frame,
        };
        // Installing the new send side replaces the old session's, if any.
        let token = self.daemon.link_up(&link.name, tx);
        link.up = Some(Up {
            token,
            opener: opener.map(Box::new),
            meter: SessionMeter::new(link.info.clone(), link.stats.clone()),
        });
        tracing::info!(link = %link.name, peer = %addr, node = %s.peer_node, "link up (udp)");
        update(&link.info, |i| i.session_up(&s.peer_node, addr));
    }
}
