//! TCP links: a dialer that keeps one authenticated connection up (re-dialing with
//! backoff), an acceptor for links the peer dials (and for bandwidth probes,
//! [`super::probe`]), and the session that moves frames.
//!
//! A session runs on a data-path thread of its own ([`crate::threads`]): it reads the
//! peer's messages, feeds each to the [`LinkSession`] and forwards the frames it hands
//! back, flushes what the socket did not take, and sends the stamped keepalives the
//! session polls ([`Policy::tcp`]: every 400 ms, so that both ends measure the round-trip
//! time; once a peer has sent one, its silence for 5 s ends the session, a host gone
//! without closing the connection). Every forwarding thread writes its frames straight to
//! the socket ([`TcpTx`]); only what the socket cannot take at once waits in the
//! session's outbox.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::daemon::{Daemon, LinkInfo};
use crate::datapath::{PortTx, Worker};
use crate::link::meter::SessionMeter;
use crate::link::probe::{self, PROBE_LINK};
use crate::link::stream::{
    adopt_session, initiate, read_hello, redial, respond, session_crypto, Answered, Inbox, LinkError,
};
use crate::link::{deliver, frame_payload, update};
use crate::threads::{thread_name, DataThread, Stop};
use vnet_core::config::LinkProto;
use vnet_core::forward::{DropReason, PortStats};
use vnet_core::handshake::Session;
use vnet_core::name::Name;
use vnet_core::rule::Output;
use vnet_core::session::{Event, Input, LinkSession, Policy};
use vnet_core::table::PortId;
use vnet_core::wire::{self, Kind, HEADER_LEN};
use vnet_seal::Opener;

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Spawns the task that keeps link `name` dialed to `peer`.
pub fn spawn_dialer(
    daemon: Arc<Daemon>,
    name: Name,
    peer: SocketAddr,
    info: Arc<Mutex<LinkInfo>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        redial(&name, peer, &info, || async {
            let (session, agreed, stream, initial) = dial(&daemon, &name, peer).await?;
            tracing::info!(link = %name, peer = %peer, node = %agreed.peer_node, "link up (tcp, dialed)");
            let up = Up {
                session,
                agreed,
                info: info.clone(),
            };
            Ok(run_session(&daemon, up, peer, stream, initial).await)
        })
        .await
    })
}

/// An up TCP session, for its data-path thread.
struct Up {
    session: LinkSession,
    agreed: Session,
    info: Arc<Mutex<LinkInfo>>,
}

/// Connects and authenticates; returns the session, what both ends agreed, the
/// connection and what was read past the handshake.
async fn dial(
    daemon: &Daemon,
    name: &Name,
    peer: SocketAddr,
) -> Result<(LinkSession, Session, TcpStream, Vec<u8>), LinkError> {
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
        .await
        .map_err(|_| LinkError::Timeout)??;
    stream.set_nodelay(true)?;
    let mut inbox = Inbox::default();
    let (mut read, mut write) = stream.split();
    let (session, agreed) = initiate(
        daemon,
        name,
        Policy::tcp(),
        [0; 32],
        &mut inbox,
        &mut read,
        &mut write,
    )
    .await?;
    Ok((session, agreed, stream, inbox.into_rest()))
}

/// Accepts connections for links that wait for their peer, forever.
pub async fn serve(daemon: Arc<Daemon>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let daemon = daemon.clone();
                tokio::spawn(async move {
                    if let Err(e) = accept(daemon.clone(), stream, from).await {
                        tracing::warn!(peer = %from, "incoming link refused: {e}");
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept(daemon: Arc<Daemon>, mut stream: TcpStream, from: SocketAddr) -> Result<(), LinkError> {
    stream.set_nodelay(true)?;
    let mut inbox = Inbox::default();
    let (mut read, mut write) = stream.split();
    let hello = read_hello(&daemon.datapath.drops, &mut inbox, &mut read).await?;
    if hello.link == PROBE_LINK {
        // The probe runs on this connection's own task: the accept loop goes on.
        let (report, node) = probe::respond(&daemon, &hello, inbox, &mut read, &mut write).await?;
        tracing::info!(peer = %from, node = %node, bytes = report.bytes, mbps = report.mbps().unwrap_or(0.0), "answered a bandwidth probe");
        return Ok(());
    }
    let Answered {
        session,
        agreed,
        info,
    } = respond(
        &daemon,
        LinkProto::Tcp,
        &hello,
        [0; 32],
        &mut inbox,
        &mut read,
        &mut write,
    )
    .await?;
    tracing::info!(link = %agreed.link, peer = %from, node = %agreed.peer_node, "link up (tcp, accepted)");
    let (task_daemon, name) = (daemon.clone(), agreed.link.clone());
    let up = Up {
        session,
        agreed,
        info: info.clone(),
    };
    let initial = inbox.into_rest();
    adopt_session(&daemon, name.to_string(), info, async move {
        run_session(&task_daemon, up, from, stream, initial).await
    });
    Ok(())
}

/// Moves frames on an authenticated connection until it fails; returns why it ended.
/// `initial` holds what the handshake's reader had already taken past the handshake.
async fn run_session(
    daemon: &Arc<Daemon>,
    up: Up,
    remote: SocketAddr,
    stream: TcpStream,
    initial: Vec<u8>,
) -> LinkError {
    let Up {
        session,
        agreed,
        info,
    } = up;
    let name = &agreed.link;
    let (port, stats) = daemon.port(&Output::Link(name.clone()));
    let meter = SessionMeter::new(info.clone(), stats.clone());
    let (socket, stop) = match (stream.into_std(), Stop::new()) {
        (Ok(s), Ok(stop)) => (Arc::new(s), stop),
        (Err(e), _) | (_, Err(e)) => return LinkError::Io(e),
    };
    let tx = Arc::new(TcpTx::new(socket.clone(), stop.clone()));
    let (sealer, opener) = session_crypto(&agreed).unzip();
    let io = SessionIo {
        daemon: daemon.clone(),
        port,
        stats,
        socket: socket.clone(),
        tx: tx.clone(),
        opener,
        meter,
        session,
    };
    let (thread, ended) = match DataThread::spawn(thread_name("tcp", name), stop, move |stop: &Stop| {
        io.run(initial, stop)
    }) {
        Ok(t) => t,
        Err(e) => return LinkError::Io(e),
    };
    // Ends the thread and the connection however this future ends (also when aborted).
    let _guard = SessionGuard {
        socket,
        tx: tx.clone(),
        _thread: thread,
    };
    let token = daemon.link_up(
        name,
        PortTx::Tcp {
            tx,
            sealer,
            superframes: agreed.superframes(),
        },
    );
    update(&info, |i| i.session_up(&agreed.peer_node, remote));
    let end = ended
        .await
        .unwrap_or_else(|_| LinkError::Transport("the session thread panicked".into()));
    daemon.link_down(name, token);
    update(&info, |i| i.session_lost(false, None));
    end
}

/// Stops a session's thread and closes its connection when the session ends.
struct SessionGuard {
    socket: Arc<std::net::TcpStream>,
    tx: Arc<TcpTx>,
    _thread: DataThread,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.tx.close();
        // The peer learns at once; the descriptor closes when the last sender lets go.
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

/// Most bytes a session queues behind its socket before frames are dropped as
/// `queue_full`: about 64 super-frames, a few milliseconds at the speeds a TCP link runs.
const OUTBOX_MAX: usize = 4 * 1024 * 1024;
/// Room for the largest message plus a full socket read.
const RECV_BUFFER: usize = 512 * 1024;
/// Reads in a row before the session thread looks at its outbox and timers again.
const READS_PER_ROUND: usize = 64;

/// The send side of a TCP link session, shared by every forwarding thread. A message goes
/// straight to the socket when nothing waits ahead of it; what the socket does not take
/// waits in the outbox, which the session thread flushes. Messages are never split
/// between a direct write and a drop: a message is sent whole or dropped whole.
#[derive(Debug)]
pub struct TcpTx {
    socket: Arc<std::net::TcpStream>,
    outbox: Mutex<Outbox>,
    /// The session thread's signal: fired when the outbox gets something to flush.
    session: Arc<Stop>,
}

#[derive(Debug, Default)]
struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` before this are written.
    head: usize,
    /// The connection failed or the session ended: nothing more is sent.
    closed: bool,
}

impl Outbox {
    fn pending(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            // Move the unwritten rest to the front rather than grow past the cap.
            self.buf.copy_within(self.head.., 0);
            self.buf.truncate(self.buf.len() - self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn consumed(&mut self, n: usize) {
        self.head += n;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
    }
}

impl TcpTx {
    fn new(socket: Arc<std::net::TcpStream>, session: Arc<Stop>) -> TcpTx {
        TcpTx {
            socket,
            outbox: Mutex::default(),
            session,
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // Plain bytes and offsets that a panicking holder cannot leave inconsistent.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one encoded message, or drops it whole (`queue_full`) when the outbox is
    /// full; `port_down` once the session has ended.
    pub fn send(&self, msg: &[u8]) -> Result<(), DropReason> {
        self.enqueue(msg, OUTBOX_MAX)
    }

    fn enqueue(&self, msg: &[u8], limit: usize) -> Result<(), DropReason> {
        let mut outbox = self.outbox();
        if outbox.closed {
            return Err(DropReason::PortDown);
        }
        let mut rest = msg;
        if outbox.pending().is_empty() {
            loop {
                match (&*self.socket).write(rest) {
                    Ok(n) if n == rest.len() => return Ok(()),
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => {
                        // The session thread sees the same failure and ends the session.
                        outbox.closed = true;
                        return Err(DropReason::SendError);
                    }
                }
                break;
            }
        }
        // A message partly written must be finished, whatever the limit.
        if rest.len() == msg.len() && outbox.pending().len() + msg.len() > limit {
            return Err(DropReason::QueueFull);
        }
        let was_empty = outbox.pending().is_empty();
        outbox.push(rest);
        drop(outbox);
        if was_empty {
            self.session.waker().wake();
        }
        Ok(())
    }

    /// Writes what the outbox holds until the socket is full; true when it is empty.
    fn flush(&self) -> std::io::Result<bool> {
        let mut outbox = self.outbox();
        while !outbox.pending().is_empty() {
            match (&*self.socket).write(outbox.pending()) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => outbox.consumed(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => {
                    outbox.closed = true;
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// Refuses every later message.
    fn close(&self) {
        self.outbox().closed = true;
    }
}

/// What a session thread owns.
struct SessionIo {
    daemon: Arc<Daemon>,
    port: PortId,
    stats: Arc<PortStats>,
    socket: Arc<std::net::TcpStream>,
    tx: Arc<TcpTx>,
    opener: Option<Opener>,
    meter: SessionMeter,
    /// Keepalives and the dead-peer timeout.
    session: LinkSession,
}

impl SessionIo {
    /// Runs the session until the connection fails, the peer falls silent or the thread is
    /// stopped; returns why it ended.
    fn run(mut self, initial: Vec<u8>, stop: &Stop) -> LinkError {
        let mut worker = self.daemon.datapath.worker();
        let end = self.serve(&mut worker, initial, stop);
        self.tx.close();
        self.daemon.datapath.report_cache(&mut worker);
        end
    }

    fn serve(&mut self, worker: &mut Worker, initial: Vec<u8>, stop: &Stop) -> LinkError {
        let mut buf = vec![0u8; RECV_BUFFER.max(initial.len())];
        buf[..initial.len()].copy_from_slice(&initial);
        let (mut start, mut end) = (0, initial.len());
        let mut plain = Vec::new();
        let mut out = Vec::new();
        // When the bytes being parsed arrived.
        let mut now = Instant::now();
        loop {
            if stop.is_set() {
                return LinkError::Transport("session stopped".into());
            }
            // Read and forward what the peer sent, a bounded number of reads at a time.
            let mut drained = false;
            for _ in 0..READS_PER_ROUND {
                loop {
                    match wire::split_stream(&buf[start..end]) {
                        Ok(Some((header, len))) => {
                            let payload = &buf[start + HEADER_LEN..start + len];
                            start += len;
                            match self.session.handle_message(header, payload, now) {
                                Input::Frame(payload) => {
                                    let frame = match frame_payload(
                                        self.opener.as_mut(),
                                        &header,
                                        payload,
                                        &mut plain,
                                    ) {
                                        Ok(f) => f,
                                        Err(reason) => {
                                            // A stream that carries a forgery is not worth
                                            // reading further.
                                            self.daemon.datapath.drops.add(reason);
                                            return LinkError::Transport(
                                                "frame failed authentication".into(),
                                            );
                                        }
                                    };
                                    if let Err(reason) =
                                        deliver(&self.daemon, worker, self.port, &self.stats, &header, frame)
                                    {
                                        self.daemon.datapath.drops.add(reason);
                                    }
                                    continue;
                                }
                                Input::Consumed => {}
                                Input::Dropped(reason) => self.daemon.datapath.drops.add(reason),
                            }
                            if let Some(end) = self.events() {
                                return end;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.daemon.datapath.drops.add(DropReason::BadMessage);
                            return LinkError::Wire(e);
                        }
                    }
                }
                // Keep room behind the unparsed rest for the largest message.
                if start == end {
                    (start, end) = (0, 0);
                } else if buf.len() - start < wire::HEADER_LEN + wire::MAX_PAYLOAD + 64 * 1024 {
                    buf.copy_within(start..end, 0);
                    (start, end) = (0, end - start);
                }
                match (&*self.socket).read(&mut buf[end..]) {
                    Ok(0) => return LinkError::Transport("the peer closed the connection".into()),
                    Ok(n) => {
                        end += n;
                        now = Instant::now();
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) => return LinkError::Io(e),
                }
            }
            let flushed = match self.tx.flush() {
                Ok(empty) => empty,
                Err(e) => return LinkError::Io(e),
            };
            let tick = Instant::now();
            if self.session.poll_timeout().is_some_and(|t| t <= tick) {
                self.session.handle_timeout(tick);
            }
            // Keepalives, stamped as they are sent so only socket time counts as round trip.
            while let Some(kind) = self.session.poll_transmit(tick, &mut out) {
                if kind == Kind::Keepalive {
                    self.meter.sample_counters(tick);
                }
                if let Err(DropReason::SendError) = self.tx.enqueue(&out, usize::MAX) {
                    return LinkError::Transport("cannot write to the connection".into());
                }
            }
            if let Some(end) = self.events() {
                return end;
            }
            if drained {
                self.daemon.datapath.report_cache(worker);
                let timeout = self
                    .session
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(tick));
                let interest = vnet_sys::Interest {
                    read: true,
                    write: !flushed,
                };
                if let Err(e) = vnet_sys::wait(&*self.socket, interest, stop.waker(), timeout) {
                    return LinkError::Io(e);
                }
            }
        }
    }

    /// Takes the session's round-trip samples; why it ended, once it has.
    fn events(&mut self) -> Option<LinkError> {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Rtt(rtt) => self.meter.sample_rtt(rtt),
                Event::Lost(lost) => return Some(LinkError::Session(lost)),
                // The handshake is over: nothing else comes from an up session.
                Event::Established(_)
                | Event::Proven { .. }
                | Event::PeerRefused(_)
                | Event::Rejected(_)
                | Event::Refused(_) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_keeps_unwritten_bytes_in_order_and_compacts() {
        let mut o = Outbox::default();
        o.push(b"abcdef");
        o.consumed(4);
        assert_eq!(o.pending(), b"ef");
        // More than half is written: the rest moves to the front before growing.
        o.push(b"gh");
        assert_eq!((o.head, o.pending()), (0, &b"efgh"[..]));
        o.consumed(1);
        o.push(b"i");
        assert_eq!(o.pending(), b"fghi");
        o.consumed(4);
        assert!(o.pending().is_empty() && o.buf.is_empty() && o.head == 0);
    }
}
