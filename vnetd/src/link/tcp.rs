//! TCP links: a dialer that keeps one authenticated connection up (re-dialing with
//! backoff), an acceptor for links the peer dials, and the session that moves frames.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::LinkProto;
use crate::control::proto::LinkState;
use crate::daemon::{Daemon, LinkInfo};
use crate::datapath::{PortTx, Worker};
use crate::forward::DropReason;
use crate::handshake::{self, Initiator, Refused, Responder, Session};
use crate::link::{idle_state, update};
use crate::rule::Output;
use crate::wire::{self, Header, Kind, HEADER_LEN};

/// How long a handshake step may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// First and largest pause between dial attempts. The cap keeps reconnection within a
/// second of the peer coming back.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Encoded messages a session's writer may have queued before frames are dropped.
const SEND_QUEUE: usize = 1024;

/// Why a TCP link session could not start or ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A socket operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A handshake step timed out.
    #[error("handshake timed out")]
    Timeout,
    /// The peer sent something that is not a valid link message.
    #[error("bad message from peer: {0}")]
    Wire(#[from] wire::WireError),
    /// Authentication or handshake decoding failed.
    #[error("{0}")]
    Handshake(#[from] handshake::HandshakeError),
    /// The peer refused the link.
    #[error("peer refused the link: {0}")]
    Refused(String),
    /// The peer sent a message out of turn.
    #[error("unexpected {0:?} message")]
    Unexpected(Kind),
}

/// Spawns the task that keeps link `name` dialed to `peer`.
pub fn spawn_dialer(
    daemon: Arc<Daemon>,
    name: String,
    peer: SocketAddr,
    info: Arc<Mutex<LinkInfo>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        loop {
            match dial(&daemon, &name, peer).await {
                Ok((session, reader, writer)) => {
                    backoff = BACKOFF_MIN;
                    tracing::info!(link = %name, peer = %peer, node = %session.peer_node, "link up (tcp, dialed)");
                    let end = run_session(&daemon, &name, session, peer, reader, writer, &info).await;
                    tracing::warn!(link = %name, "link down: {end}");
                    update(&info, |i| {
                        i.state = LinkState::Connecting;
                        i.last_error = Some(end.to_string());
                    });
                }
                Err(e) => {
                    if let LinkError::Handshake(handshake::HandshakeError::BadProof) = e {
                        daemon.datapath.drops.add(DropReason::AuthFailed);
                        tracing::warn!(link = %name, peer = %peer, "peer failed authentication (different network key?)");
                    } else {
                        tracing::debug!(link = %name, peer = %peer, "dial failed: {e}");
                    }
                    update(&info, |i| i.last_error = Some(e.to_string()));
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
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
    let id = &daemon.identity;
    let (mut initiator, hello) = Initiator::new(id.key.clone(), &id.node, name, rand::random());
    send(&mut write, Kind::Hello, 0, &handshake::encode_payload(&hello)).await?;
    let (header, payload) = recv_timeout(&mut read).await?;
    let challenge = match header.kind {
        Kind::Challenge => handshake::decode_challenge(&payload)?,
        Kind::Refused => return Err(LinkError::Refused(handshake::decode_refused(&payload)?.reason)),
        k => return Err(LinkError::Unexpected(k)),
    };
    let proof = initiator.on_challenge(&challenge)?;
    send(
        &mut write,
        Kind::Proof,
        challenge.session,
        &handshake::encode_payload(&proof),
    )
    .await?;
    let (header, payload) = recv_timeout(&mut read).await?;
    let session = match header.kind {
        Kind::Welcome => initiator.on_welcome(header.session)?,
        Kind::Refused => return Err(LinkError::Refused(handshake::decode_refused(&payload)?.reason)),
        k => return Err(LinkError::Unexpected(k)),
    };
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
    let (header, payload) = match recv_timeout(&mut read).await {
        Ok(m) => m,
        Err(e) => {
            daemon.datapath.drops.add(DropReason::BadMessage);
            return Err(e);
        }
    };
    if header.kind != Kind::Hello {
        daemon.datapath.drops.add(DropReason::BadMessage);
        return Err(LinkError::Unexpected(header.kind));
    }
    let hello = match handshake::decode_hello(&payload) {
        Ok(h) => h,
        Err(e) => {
            // As on UDP: a Hello that does not decode is a bad message, and counted.
            daemon.datapath.drops.add(DropReason::BadMessage);
            return Err(e.into());
        }
    };
    let info = match daemon.link(&hello.link) {
        Some((spec, info)) if spec.proto == LinkProto::Tcp && spec.peer.is_none() => info,
        Some(_) => {
            return refuse(
                &mut write,
                &format!("link `{}` is not a tcp link that waits here", hello.link),
            )
            .await
        }
        None => return refuse(&mut write, &format!("no link `{}` here", hello.link)).await,
    };
    let id = &daemon.identity;
    let session_id = rand::random::<u32>().max(1);
    let (responder, challenge) =
        Responder::on_hello(id.key.clone(), &id.node, &hello, rand::random(), session_id);
    send(
        &mut write,
        Kind::Challenge,
        0,
        &handshake::encode_payload(&challenge),
    )
    .await?;
    let (header, payload) = recv_timeout(&mut read).await?;
    if header.kind != Kind::Proof {
        return Err(LinkError::Unexpected(header.kind));
    }
    let session = match responder.on_proof(&handshake::decode_proof(&payload)?) {
        Ok(s) => s,
        Err(e) => {
            daemon.datapath.drops.add(DropReason::AuthFailed);
            tracing::warn!(link = %hello.link, peer = %from, node = %hello.node, "peer failed authentication (different network key?)");
            let _ = refuse(&mut write, "authentication failed").await;
            return Err(e.into());
        }
    };
    send(&mut write, Kind::Welcome, session.id, &[]).await?;
    tracing::info!(link = %session.link, peer = %from, node = %session.peer_node, "link up (tcp, accepted)");
    let link = session.link.clone();
    let task_daemon = daemon.clone();
    let task = tokio::spawn(async move {
        let name = session.link.clone();
        let end = run_session(
            &task_daemon,
            &name,
            session,
            from,
            read.into_inner(),
            write,
            &info,
        )
        .await;
        tracing::warn!(link = %name, "link down: {end}");
        update(&info, |i| {
            i.state = LinkState::Waiting;
            i.last_error = Some(end.to_string());
        });
    });
    daemon.replace_session_task(&link, task);
    Ok(())
}

async fn refuse(write: &mut OwnedWriteHalf, reason: &str) -> Result<(), LinkError> {
    send(
        write,
        Kind::Refused,
        0,
        &handshake::encode_payload(&Refused::new(reason)),
    )
    .await?;
    Err(LinkError::Refused(reason.to_string()))
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
    let writer = tokio::spawn(write_loop(write, rx));
    let token = daemon.link_up(name, PortTx::Tcp(queue));
    update(info, |i| {
        i.state = LinkState::Up;
        i.peer_node = Some(session.peer_node.clone());
        i.remote = Some(remote);
        i.sessions += 1;
        i.last_error = None;
    });
    let end = read_loop(daemon, name, read).await;
    daemon.link_down(name, token);
    writer.abort();
    update(info, |i| i.state = idle_state(false));
    end
}

async fn read_loop(daemon: &Daemon, name: &str, read: OwnedReadHalf) -> LinkError {
    let (port, stats) = daemon.port(&Output::Link(name.to_string()));
    let mut read = BufReader::with_capacity(256 * 1024, read);
    let mut worker = Worker::default();
    let mut payload = Vec::with_capacity(wire::MAX_PAYLOAD);
    loop {
        let header = match recv_into(&mut read, &mut payload).await {
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
                stats.rx(payload.len());
                daemon
                    .datapath
                    .forward(&mut worker, port, &payload, header.hop_limit);
                if read.buffer().is_empty() {
                    daemon.datapath.report_cache(&mut worker);
                }
            }
            Kind::Keepalive => {}
            other => {
                daemon.datapath.drops.add(DropReason::BadMessage);
                return LinkError::Unexpected(other);
            }
        }
    }
}

async fn write_loop(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut batch = Vec::with_capacity(256 * 1024);
    let mut msgs = Vec::with_capacity(64);
    while rx.recv_many(&mut msgs, 64).await > 0 {
        batch.clear();
        for m in msgs.drain(..) {
            batch.extend_from_slice(&m);
        }
        if write.write_all(&batch).await.is_err() {
            // The reader sees the same failure and ends the session.
            return;
        }
    }
}

async fn send(write: &mut OwnedWriteHalf, kind: Kind, session: u32, payload: &[u8]) -> Result<(), LinkError> {
    let mut msg = Vec::with_capacity(HEADER_LEN + payload.len());
    wire::encode_message(kind, 0, session, payload, &mut msg)?;
    write.write_all(&msg).await?;
    Ok(())
}

async fn recv_into(read: &mut BufReader<OwnedReadHalf>, payload: &mut Vec<u8>) -> Result<Header, LinkError> {
    let mut head = [0u8; HEADER_LEN];
    read.read_exact(&mut head).await?;
    let header = Header::decode(&head)?;
    payload.resize(header.len as usize, 0);
    read.read_exact(payload).await?;
    Ok(header)
}

async fn recv_timeout(read: &mut BufReader<OwnedReadHalf>) -> Result<(Header, Vec<u8>), LinkError> {
    let mut payload = Vec::new();
    let header = tokio::time::timeout(HANDSHAKE_TIMEOUT, recv_into(read, &mut payload))
        .await
        .map_err(|_| LinkError::Timeout)??;
    Ok((header, payload))
}
