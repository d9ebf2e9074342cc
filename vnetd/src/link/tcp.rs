//! TCP links: a dialer that keeps one authenticated connection up (re-dialing with
//! backoff), an acceptor for links the peer dials (and for bandwidth probes,
//! [`super::probe`]), and the session that moves frames. A session sends a stamped
//! keepalive every `KEEPALIVE` from its writer, ahead of queued frames, so that both
//! ends measure the round-trip time (`link::meter`); once a peer has sent one, its silence
//! for `DEAD_AFTER` ends the session (a host gone without closing the connection).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::LinkProto;
use crate::control::proto::LinkState;
use crate::crypto::Opener;
use crate::daemon::{Daemon, LinkInfo};
use crate::datapath::PortTx;
use crate::forward::DropReason;
use crate::handshake::Session;
use crate::link::meter::SessionMeter;
use crate::link::probe::{self, PROBE_LINK};
use crate::link::stream::{
    adopt_session, initiate, read_hello, recv_into, redial, respond_link, session_crypto, superframes,
    LinkError,
};
use crate::link::udp::{DEAD_AFTER, KEEPALIVE};
use crate::link::{deliver, frame_payload, idle_state, update};
use crate::rule::Output;
use crate::wire::{self, Kind};

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Encoded messages a session's writer may have queued before frames are dropped.
const SEND_QUEUE: usize = 1024;

/// Spawns the task that keeps link `name` dialed to `peer`.
pub fn spawn_dialer(
    daemon: Arc<Daemon>,
    name: String,
    peer: SocketAddr,
    info: Arc<Mutex<LinkInfo>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        redial(&daemon, &name, peer, &info, || async {
            let (session, read, write) = dial(&daemon, &name, peer).await?;
            tracing::info!(link = %name, peer = %peer, node = %session.peer_node, "link up (tcp, dialed)");
            Ok(run_session(&daemon, &name, session, peer, read, write, &info).await)
        })
        .await
    })
}

async fn dial(
    daemon: &Daemon,
    name: &str,
    peer: SocketAddr,
) -> Result<(Session, OwnedReadHalf, OwnedWriteHalf), LinkError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
        .await
        .map_err(|_| LinkError::Timeout)??;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let session = initiate(daemon, name, &mut read, &mut write, [0; 32]).await?;
    Ok((session, read.into_inner(), write))
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

async fn accept(daemon: Arc<Daemon>, stream: TcpStream, from: SocketAddr) -> Result<(), LinkError> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let hello = read_hello(&daemon, &mut read).await?;
    if hello.link == PROBE_LINK {
        // The probe runs on this connection's own task: the accept loop goes on.
        let (report, node) = probe::respond(&daemon, from, &hello, &mut read, &mut write).await?;
        tracing::info!(peer = %from, node = %node, bytes = report.bytes, mbps = report.mbps().unwrap_or(0.0), "answered a bandwidth probe");
        return Ok(());
    }
    let (session, info) = respond_link(
        &daemon,
        from,
        LinkProto::Tcp,
        &hello,
        &mut read,
        &mut write,
        [0; 32],
    )
    .await?;
    tracing::info!(link = %session.link, peer = %from, node = %session.peer_node, "link up (tcp, accepted)");
    let (task_daemon, task_info, name) = (daemon.clone(), info.clone(), session.link.clone());
    adopt_session(&daemon, session.link.clone(), info, async move {
        run_session(
            &task_daemon,
            &name,
            session,
            from,
            read.into_inner(),
            write,
            &task_info,
        )
        .await
    });
    Ok(())
}

/// Moves frames on an authenticated connection until it fails; returns why it ended.
async fn run_session(
    daemon: &Arc<Daemon>,
    name: &str,
    session: Session,
    remote: SocketAddr,
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    info: &Arc<Mutex<LinkInfo>>,
) -> LinkError {
    let (queue, rx) = mpsc::channel(SEND_QUEUE);
    let (_, stats) = daemon.port(&Output::Link(name.to_string()));
    let meter = Arc::new(SessionMeter::new(info.clone(), stats));
    let writer = tokio::spawn(write_loop(write, rx, session.id, meter.clone()));
    let (sealer, opener) = session_crypto(&session).unzip();
    let tx = PortTx::Tcp {
        queue,
        sealer,
        superframes: superframes(&session),
    };
    let token = daemon.link_up(name, tx);
    update(info, |i| {
        i.state = LinkState::Up;
        i.peer_node = Some(session.peer_node.clone());
        i.remote = Some(remote);
        i.sessions += 1;
        i.last_error = None;
    });
    let end = read_loop(daemon, name, read, opener, &meter).await;
    daemon.link_down(name, token);
    writer.abort();
    update(info, |i| i.state = idle_state(false));
    end
}

async fn read_loop(
    daemon: &Daemon,
    name: &str,
    read: OwnedReadHalf,
    mut opener: Option<Opener>,
    meter: &SessionMeter,
) -> LinkError {
    let (port, stats) = daemon.port(&Output::Link(name.to_string()));
    let mut read = BufReader::with_capacity(256 * 1024, read);
    let mut worker = daemon.datapath.worker();
    let mut payload = Vec::with_capacity(wire::MAX_PAYLOAD);
    let mut plain = Vec::new();
    // A peer that has sent a keepalive keeps sending them; its silence then means it is
    // gone (a host that vanished without closing the connection). A peer that never sent
    // one (an older daemon) is left to TCP.
    let mut keeps_alive = false;
    loop {
        let received = if keeps_alive {
            match tokio::time::timeout(DEAD_AFTER, recv_into(&mut read, &mut payload)).await {
                Ok(r) => r,
                Err(_) => {
                    daemon.datapath.report_cache(&mut worker);
                    return LinkError::Transport(format!("no message from the peer for {DEAD_AFTER:?}"));
                }
            }
        } else {
            recv_into(&mut read, &mut payload).await
        };
        let header = match received {
            Ok(h) => h,
            Err(e) => {
                if let LinkError::Wire(_) = e {
                    daemon.datapath.drops.add(DropReason::BadMessage);
                }
                daemon.datapath.report_cache(&mut worker);
                return e;
            }
        };
        match header.kind {
            Kind::Frame => {
                let frame = match frame_payload(opener.as_mut(), &header, &payload, &mut plain) {
                    Ok(f) => f,
                    Err(reason) => {
                        // A stream that carries a forgery is not worth reading further.
                        daemon.datapath.drops.add(reason);
                        return LinkError::Transport("frame failed authentication".into());
                    }
                };
                if let Err(reason) = deliver(daemon, &mut worker, port, &stats, &header, frame) {
                    daemon.datapath.drops.add(reason);
                }
                if read.buffer().is_empty() {
                    daemon.datapath.report_cache(&mut worker);
                }
            }
            Kind::Keepalive => {
                keeps_alive = true;
                if meter.on_keepalive(&payload).is_err() {
                    daemon.datapath.drops.add(DropReason::BadMessage);
                }
            }
            other => {
                daemon.datapath.drops.add(DropReason::BadMessage);
                return LinkError::Unexpected(other);
            }
        }
    }
}

/// Writes queued messages in batches, and a keepalive every [`KEEPALIVE`]: stamped as it
/// is written rather than when queued, so that time in the queue does not count as
/// round-trip time (time in the socket buffer still does).
async fn write_loop(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<u8>>,
    session: u32,
    meter: Arc<SessionMeter>,
) {
    let mut batch = Vec::with_capacity(256 * 1024);
    let mut msgs = Vec::with_capacity(64);
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        batch.clear();
        tokio::select! {
            n = rx.recv_many(&mut msgs, 64) => {
                if n == 0 {
                    return;
                }
                for m in msgs.drain(..) {
                    batch.extend_from_slice(&m);
                }
            }
            _ = keepalive.tick() => {
                meter.sample_counters();
                // A keepalive payload is far below MAX_PAYLOAD: encoding cannot fail.
                let _ = wire::encode_message(Kind::Keepalive, 0, session, &meter.keepalive(), &mut batch);
            }
        }
        if write.write_all(&batch).await.is_err() {
            // The reader sees the same failure and ends the session.
            return;
        }
    }
}
