//! UDP links: every link shares the daemon's one UDP socket. One data-path thread receives every
//! datagram, runs the handshakes, keeps sessions alive and forwards frames; senders on
//! other threads write frames to the socket directly.
//!
//! Liveness: an up session sends a keepalive every `KEEPALIVE` and is declared dead
//! after `DEAD_AFTER` without hearing from the peer. Keepalives carry timestamps from
//! which both ends measure the round-trip time (`link::meter`), and their tick samples
//! the link's throughput. A datagram for a session the receiver does not know (it
//! restarted) is answered with a Reset, upon which a dialing end handshakes again at once,
//! so a restarted peer is reachable again within a handshake round trip rather than after
//! `DEAD_AFTER`.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::daemon::{Daemon, LinkInfo};
use crate::datapath::{PortTx, Worker};
use crate::link::meter::SessionMeter;
use crate::link::stream::{caps_mismatch, session_crypto};
use crate::link::{
    deliver, forward_from, frame_payload, idle_state, offer, tap_coalescer, update, SOCKET_BUFFER,
};
use crate::threads::{DataThread, Stop};
use vnet_control::proto::LinkState;
use vnet_core::forward::{DropReason, PortStats};
use vnet_core::gro::Coalescer;
use vnet_core::handshake::{self, Initiator, Refused, Responder, Session};
use vnet_core::rule::Output;
use vnet_core::table::PortId;
use vnet_core::wire::{self, Header, Kind};
use vnet_seal::Opener;

/// Interval between keepalives of an up session. It also bounds how long a dialing end
/// that has nothing to send takes to learn (from the Reset its keepalive earns) that a
/// waiting peer restarted, so it is well under the one-second reconnection target: with
/// 1 s, a proxy restart cut a host that only receives off for up to ~1.1 s.
/// TCP links send theirs at the same interval.
pub(crate) const KEEPALIVE: Duration = Duration::from_millis(400);
/// Silence after which an up session is dead (TCP sessions whose peer keeps alive too).
pub(crate) const DEAD_AFTER: Duration = Duration::from_millis(5000);
/// Interval between retransmissions of Hello and Proof.
const RETRANSMIT: Duration = Duration::from_millis(250);
/// A handshake that has not finished by then starts over.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Timer resolution of the link thread.
const TICK: Duration = Duration::from_millis(50);
/// Resets sent per tick at most, so garbage cannot make us a traffic amplifier.
const RESETS_PER_TICK: u32 = 8;
/// Receives in a row before the thread looks at its timers and commands again.
const RECEIVES_PER_ROUND: usize = 64;

enum Command {
    Add {
        name: String,
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
    pub fn add_link(&self, name: String, peer: Option<SocketAddr>, caps: u32, info: Arc<Mutex<LinkInfo>>) {
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

enum Phase {
    /// Waiting for the peer to dial (links without `peer`), or between dial attempts.
    Idle,
    /// Hello sent, waiting for the Challenge.
    Hello {
        initiator: Initiator,
        hello: Vec<u8>,
        started: Instant,
        sent: Instant,
    },
    /// Proof sent, waiting for the Welcome.
    Proof {
        initiator: Initiator,
        proof: Vec<u8>,
        session: u32,
        started: Instant,
        sent: Instant,
    },
    /// Challenge sent to `addr`, waiting for the Proof.
    Challenged {
        responder: Responder,
        addr: SocketAddr,
        started: Instant,
    },
    /// Forwarding.
    Up {
        addr: SocketAddr,
        session: u32,
        token: u64,
        heard: Instant,
        keepalive: Instant,
        /// Opens the peer's sealed frames when the link encrypts (boxed: a cipher key
        /// schedule would make every link's phase that large).
        opener: Option<Box<Opener>>,
        /// Round-trip time and throughput of this session.
        meter: SessionMeter,
    },
}

struct Link {
    name: String,
    /// Capabilities the link's configuration asks for (encryption).
    caps: u32,
    peer: Option<SocketAddr>,
    info: Arc<Mutex<LinkInfo>>,
    /// The link's port and counters, looked up once so receiving takes no lock.
    port: PortId,
    stats: Arc<PortStats>,
    phase: Phase,
}

struct Task {
    daemon: Arc<Daemon>,
    socket: Arc<UdpSocket>,
    links: HashMap<String, Link>,
    worker: Worker,
    resets: u32,
    /// Handshakes answered for links whose session is still up (the peer restarted, or
    /// someone replays a Hello): the old session stays until the new one is proven.
    pending: HashMap<String, (Responder, SocketAddr, Instant)>,
    /// Scratch for opened frames.
    plain: Vec<u8>,
    /// Glues the TCP segments of a receive batch back into super-frames (user-space GRO).
    gro: Gro,
}

/// The coalescer, and the link whose frames it holds.
struct Gro {
    coalescer: Coalescer,
    link: Option<(PortId, Arc<PortStats>)>,
}

impl Gro {
    /// Offers a frame received on `link`; frames of another link are forwarded first.
    fn push(&mut self, daemon: &Daemon, worker: &mut Worker, link: &Link, hops: u8, frame: &[u8]) {
        if self.link.as_ref().is_some_and(|(p, _)| *p != link.port) {
            self.flush(daemon, worker);
        }
        let mut emit = forward_from(daemon, worker, link.port, &link.stats);
        self.coalescer.push(hops, frame, &mut emit);
        if self.link.is_none() {
            self.link = Some((link.port, link.stats.clone()));
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
            daemon,
            links: HashMap::new(),
            resets: 0,
            pending: HashMap::new(),
            plain: Vec::new(),
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
        let mut next_tick = Instant::now() + TICK;
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
                        self.flush_gro();
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
            if now >= next_tick {
                self.on_tick(now);
                next_tick = now + TICK;
            }
            if drained {
                self.daemon.datapath.report_cache(&mut self.worker);
                let timeout = next_tick.saturating_duration_since(now);
                if let Err(e) = vnet_sys::wait(&*self.socket, readable, stop.waker(), Some(timeout)) {
                    tracing::error!("UDP links stopped: cannot wait for the socket: {e}");
                    return;
                }
            }
        }
    }

    fn send(&self, to: SocketAddr, kind: Kind, session: u32, payload: &[u8]) {
        let mut msg = Vec::with_capacity(wire::HEADER_LEN + payload.len());
        if wire::encode_message(kind, 0, session, payload, &mut msg).is_ok() {
            if let Err(e) = self.socket.try_send_to(&msg, to) {
                tracing::debug!(peer = %to, "udp send {kind:?}: {e}");
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
                let (port, stats) = self.daemon.port(&Output::Link(name.clone()));
                let link = Link {
                    name: name.clone(),
                    caps,
                    peer,
                    info,
                    port,
                    stats,
                    phase: Phase::Idle,
                };
                if let Some(old) = self.links.insert(name, link) {
                    self.end_session(old, "link replaced");
                }
                self.on_tick(now);
            }
            Command::Remove { name } => {
                if let Some(old) = self.links.remove(&name) {
                    self.end_session(old, "link deleted");
                }
            }
        }
    }

    fn end_session(&self, link: Link, why: &str) {
        if let Phase::Up { token, .. } = link.phase {
            self.daemon.link_down(&link.name, token);
            tracing::info!(link = %link.name, "udp session ended: {why}");
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.resets = 0;
        self.pending
            .retain(|_, (_, _, started)| now - *started <= HANDSHAKE_TIMEOUT);
        let names: Vec<String> = self.links.keys().cloned().collect();
        for name in names {
            let Some(mut link) = self.links.remove(&name) else {
                continue;
            };
            self.tick_link(&mut link, now);
            self.links.insert(name, link);
        }
    }

    fn tick_link(&mut self, link: &mut Link, now: Instant) {
        match &mut link.phase {
            Phase::Idle => {
                if let Some(peer) = link.peer {
                    let id = &self.daemon.identity;
                    let (initiator, hello) =
                        Initiator::new(id.key.clone(), &id.node, &link.name, offer(link.caps, [0; 32]));
                    let hello = handshake::encode_payload(&hello);
                    self.send(peer, Kind::Hello, 0, &hello);
                    link.phase = Phase::Hello {
                        initiator,
                        hello,
                        started: now,
                        sent: now,
                    };
                    update(&link.info, |i| i.state = LinkState::Connecting);
                }
            }
            Phase::Hello {
                hello, started, sent, ..
            } => {
                if now - *started > HANDSHAKE_TIMEOUT {
                    link.phase = Phase::Idle;
                } else if now - *sent > RETRANSMIT {
                    *sent = now;
                    if let Some(peer) = link.peer {
                        self.send(peer, Kind::Hello, 0, hello);
                    }
                }
            }
            Phase::Proof {
                proof,
                session,
                started,
                sent,
                ..
            } => {
                if now - *started > HANDSHAKE_TIMEOUT {
                    link.phase = Phase::Idle;
                } else if now - *sent > RETRANSMIT {
                    *sent = now;
                    if let Some(peer) = link.peer {
                        self.send(peer, Kind::Proof, *session, proof);
                    }
                }
            }
            Phase::Challenged { started, .. } => {
                if now - *started > HANDSHAKE_TIMEOUT {
                    link.phase = Phase::Idle;
                }
            }
            Phase::Up {
                addr,
                session,
                token,
                heard,
                keepalive,
                meter,
                ..
            } => {
                if now - *heard > DEAD_AFTER {
                    tracing::warn!(link = %link.name, "udp session timed out");
                    self.daemon.link_down(&link.name, *token);
                    update(&link.info, |i| {
                        i.state = idle_state(link.peer.is_some());
                        i.last_error = Some(format!("no datagram from the peer for {DEAD_AFTER:?}"));
                    });
                    link.phase = Phase::Idle;
                } else if now - *keepalive > KEEPALIVE {
                    *keepalive = now;
                    meter.sample_counters();
                    self.send(*addr, Kind::Keepalive, *session, &meter.keepalive());
                }
            }
        }
    }

    fn on_datagram(&mut self, buf: &[u8], from: SocketAddr, now: Instant) {
        let drops = &self.daemon.datapath.drops;
        let (header, payload) = match wire::decode_datagram(buf) {
            Ok(m) => m,
            Err(_) => {
                drops.add(DropReason::BadMessage);
                return;
            }
        };
        match header.kind {
            Kind::Frame | Kind::Keepalive => self.on_session_message(header, payload, from, now),
            Kind::Hello => self.on_hello(payload, from, now),
            Kind::Challenge => self.on_challenge(payload, from, now),
            Kind::Proof => self.on_proof(header, payload, from, now),
            Kind::Welcome => self.on_welcome(header, from, now),
            Kind::Reset => self.on_reset(header, from, now),
            Kind::Refused => self.on_refused(payload, from),
        }
    }

    fn session_link(&mut self, from: SocketAddr, id: u32) -> Option<&mut Link> {
        self.links
            .values_mut()
            .find(|l| matches!(l.phase, Phase::Up { addr, session, .. } if addr == from && session == id))
    }

    fn on_session_message(&mut self, header: Header, payload: &[u8], from: SocketAddr, now: Instant) {
        // Borrow the links alone, so the scratch, worker and daemon stay usable.
        let found = self.links.values_mut().find(
            |l| matches!(l.phase, Phase::Up { addr, session, .. } if addr == from && session == header.session),
        );
        let Some(link) = found else {
            self.daemon.datapath.drops.add(DropReason::NoSession);
            if self.resets < RESETS_PER_TICK {
                self.resets += 1;
                self.send(from, Kind::Reset, header.session, &[]);
            }
            return;
        };
        let Phase::Up {
            heard, opener, meter, ..
        } = &mut link.phase
        else {
            return;
        };
        *heard = now;
        if header.kind == Kind::Keepalive && meter.on_keepalive(payload).is_err() {
            self.daemon.datapath.drops.add(DropReason::BadMessage);
        }
        if header.kind != Kind::Frame {
            return;
        }
        let frame = match frame_payload(opener.as_deref_mut(), &header, payload, &mut self.plain) {
            Ok(frame) => frame,
            Err(reason) => return self.daemon.datapath.drops.add(reason),
        };
        if header.flags & wire::FLAG_VNET_HDR != 0 {
            // Already a super-frame (or a frame with a partial checksum): as it came, after
            // what the coalescer holds.
            self.gro.flush(&self.daemon, &mut self.worker);
            if let Err(reason) = deliver(
                &self.daemon,
                &mut self.worker,
                link.port,
                &link.stats,
                &header,
                frame,
            ) {
                self.daemon.datapath.drops.add(reason);
            }
            return;
        }
        self.gro
            .push(&self.daemon, &mut self.worker, link, header.hop_limit, frame);
    }

    /// Forwards what the coalescer holds (at the end of each receive batch).
    fn flush_gro(&mut self) {
        self.gro.flush(&self.daemon, &mut self.worker);
    }

    fn refuse(&self, to: SocketAddr, reason: &str) {
        tracing::warn!(peer = %to, "udp link refused: {reason}");
        self.send(
            to,
            Kind::Refused,
            0,
            &handshake::encode_payload(&Refused::new(reason)),
        );
    }

    fn on_hello(&mut self, payload: &[u8], from: SocketAddr, now: Instant) {
        let Ok(hello) = handshake::decode_hello(payload) else {
            self.daemon.datapath.drops.add(DropReason::BadMessage);
            return;
        };
        let id = &self.daemon.identity;
        let Some(link) = self.links.get_mut(&hello.link) else {
            let reason = format!("no udp link `{}` here", hello.link);
            return self.refuse(from, &reason);
        };
        if link.peer.is_some() {
            let reason = format!("link `{}` dials from here; it does not wait", hello.link);
            return self.refuse(from, &reason);
        }
        if let Some(reason) = caps_mismatch(&hello.link, link.caps, hello.caps) {
            return self.refuse(from, &reason);
        }
        let session = rand::random::<u32>().max(1);
        let (responder, challenge) = Responder::on_hello(
            id.key.clone(),
            &id.node,
            &hello,
            offer(link.caps, [0; 32]),
            session,
        );
        let challenge = handshake::encode_payload(&challenge);
        // An up session stays up until the new handshake proves the peer (a forged Hello
        // cannot tear it down).
        if !matches!(link.phase, Phase::Up { .. }) {
            link.phase = Phase::Challenged {
                responder,
                addr: from,
                started: now,
            };
        } else {
            self.pending.insert(hello.link.clone(), (responder, from, now));
        }
        self.send(from, Kind::Challenge, 0, &challenge);
    }

    fn on_challenge(&mut self, payload: &[u8], from: SocketAddr, now: Instant) {
        let Ok(challenge) = handshake::decode_challenge(payload) else {
            self.daemon.datapath.drops.add(DropReason::BadMessage);
            return;
        };
        let Some(link) = self
            .links
            .values_mut()
            .find(|l| l.peer == Some(from) && matches!(l.phase, Phase::Hello { .. }))
        else {
            return;
        };
        let Phase::Hello { initiator, .. } = &mut link.phase else {
            return;
        };
        match initiator.on_challenge(&challenge) {
            Ok(proof) => {
                let proof = handshake::encode_payload(&proof);
                let initiator = initiator.clone();
                link.phase = Phase::Proof {
                    initiator,
                    proof: proof.clone(),
                    session: challenge.session,
                    started: now,
                    sent: now,
                };
                self.send(from, Kind::Proof, challenge.session, &proof);
            }
            Err(e) => {
                tracing::warn!(link = %link.name, peer = %from, "udp handshake failed: {e}");
                update(&link.info, |i| i.last_error = Some(e.to_string()));
                self.daemon.datapath.drops.add(DropReason::AuthFailed);
            }
        }
    }

    fn on_proof(&mut self, header: Header, payload: &[u8], from: SocketAddr, now: Instant) {
        let Ok(proof) = handshake::decode_proof(payload) else {
            self.daemon.datapath.drops.add(DropReason::BadMessage);
            return;
        };
        // Our Welcome got lost: the peer proves again for the session we already run.
        if self.session_link(from, header.session).is_some() {
            self.send(from, Kind::Welcome, header.session, &[]);
            return;
        }
        let Some(name) = self
            .links
            .iter()
            .find_map(|(name, l)| match &l.phase {
                Phase::Challenged { responder, addr, .. }
                    if *addr == from && responder.session() == header.session =>
                {
                    Some(name.clone())
                }
                _ => None,
            })
            .or_else(|| {
                self.pending.iter().find_map(|(name, (r, addr, _))| {
                    (*addr == from && r.session() == header.session).then(|| name.clone())
                })
            })
        else {
            return;
        };
        let responder = match self.links.get(&name).map(|l| &l.phase) {
            Some(Phase::Challenged { responder, .. }) => responder.clone(),
            _ => match self.pending.remove(&name) {
                Some((r, _, _)) => r,
                None => return,
            },
        };
        match responder.on_proof(&proof) {
            Ok(session) => {
                self.send(from, Kind::Welcome, session.id, &[]);
                self.session_up(&name, from, &session, now);
            }
            Err(e) => {
                self.daemon.datapath.drops.add(DropReason::AuthFailed);
                tracing::warn!(link = %name, peer = %from, "udp peer failed authentication: {e}");
                self.refuse(from, "authentication failed");
                if let Some(link) = self.links.get_mut(&name) {
                    if matches!(link.phase, Phase::Challenged { .. }) {
                        link.phase = Phase::Idle;
                    }
                }
            }
        }
    }

    fn on_welcome(&mut self, header: Header, from: SocketAddr, now: Instant) {
        let Some((name, result)) = self.links.iter().find_map(|(name, l)| match &l.phase {
            Phase::Proof {
                initiator, session, ..
            } if l.peer == Some(from) && *session == header.session => {
                Some((name.clone(), initiator.on_welcome(header.session)))
            }
            _ => None,
        }) else {
            return;
        };
        match result {
            Ok(session) => self.session_up(&name, from, &session, now),
            Err(e) => tracing::warn!(link = %name, "udp welcome rejected: {e}"),
        }
    }

    fn session_up(&mut self, name: &str, addr: SocketAddr, s: &Session, now: Instant) {
        let Some(link) = self.links.get_mut(name) else {
            return;
        };
        let (session, peer_node) = (s.id, s.peer_node.as_str());
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
            session,
            sealer,
            max_frame,
        };
        // Installing the new send side replaces the old session's, if any.
        let token = self.daemon.link_up(name, tx);
        link.phase = Phase::Up {
            addr,
            session,
            token,
            heard: now,
            keepalive: now,
            opener: opener.map(Box::new),
            meter: SessionMeter::new(link.info.clone(), link.stats.clone()),
        };
        tracing::info!(link = %name, peer = %addr, node = %peer_node, "link up (udp)");
        update(&link.info, |i| {
            i.state = LinkState::Up;
            i.peer_node = Some(peer_node.to_string());
            i.remote = Some(addr);
            i.sessions += 1;
            i.last_error = None;
        });
    }

    fn on_reset(&mut self, header: Header, from: SocketAddr, _now: Instant) {
        // Unauthenticated: it can only make a dialing end handshake again, never cut a
        // waiting end's session.
        let Some(link) = self.links.values_mut().find(|l| {
            l.peer == Some(from) && matches!(l.phase, Phase::Up { session, .. } if session == header.session)
        }) else {
            return;
        };
        if let Phase::Up { token, .. } = link.phase {
            self.daemon.link_down(&link.name, token);
        }
        tracing::info!(link = %link.name, "peer lost our udp session (restarted?); handshaking again");
        update(&link.info, |i| i.state = LinkState::Connecting);
        link.phase = Phase::Idle;
        let name = link.name.clone();
        if let Some(mut link) = self.links.remove(&name) {
            self.tick_link(&mut link, Instant::now());
            self.links.insert(name, link);
        }
    }

    fn on_refused(&mut self, payload: &[u8], from: SocketAddr) {
        let reason = handshake::decode_refused(payload)
            .map(|r| r.reason)
            .unwrap_or_else(|e| e.to_string());
        for link in self.links.values_mut().filter(|l| l.peer == Some(from)) {
            if matches!(link.phase, Phase::Hello { .. } | Phase::Proof { .. }) {
                tracing::warn!(link = %link.name, peer = %from, "peer refused the link: {reason}");
                update(&link.info, |i| {
                    i.last_error = Some(format!("peer refused the link: {reason}"))
                });
            }
        }
    }
}
