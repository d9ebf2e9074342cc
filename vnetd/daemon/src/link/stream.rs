//! What every stream-based link (TCP, a QUIC stream) shares: the handshake over a
//! byte stream as initiator or responder, message framing, and the re-dial loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::daemon::{Daemon, LinkInfo};
use crate::link::{offer, update};
use vnet_control::proto::LinkState;
use vnet_core::config::LinkProto;
use vnet_core::forward::DropReason;
use vnet_core::handshake::{self, HandshakeError, Hello, Initiator, Refused, Responder, Session};
use vnet_core::wire::{self, Header, Kind, HEADER_LEN};
use vnet_seal::{Opener, Sealer};

/// How long a handshake step may take before the connection is dropped.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and largest pause between dial attempts. The cap keeps reconnection within a
/// second of the peer coming back.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Why a link session could not start or ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A socket operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A handshake step or a connect timed out.
    #[error("timed out")]
    Timeout,
    /// The peer sent something that is not a valid link message.
    #[error("bad message from peer: {0}")]
    Wire(#[from] wire::WireError),
    /// Authentication or handshake decoding failed.
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    /// The peer refused the link.
    #[error("peer refused the link: {0}")]
    Refused(String),
    /// The peer sent a message out of turn.
    #[error("unexpected {0:?} message")]
    Unexpected(Kind),
    /// The transport (QUIC connection) failed.
    #[error("{0}")]
    Transport(String),
}

/// Keeps dialing link `name`: each `attempt` connects and authenticates, then runs the
/// session and returns why it ended (`Ok`), or fails to connect (`Err`). Between
/// attempts it backs off from 50 ms up to 500 ms; a session that came up resets that.
pub(crate) async fn redial<F, Fut>(
    daemon: &Daemon,
    name: &str,
    peer: SocketAddr,
    info: &Arc<Mutex<LinkInfo>>,
    mut attempt: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<LinkError, LinkError>>,
{
    let mut backoff = BACKOFF_MIN;
    loop {
        match attempt().await {
            Ok(end) => {
                backoff = BACKOFF_MIN;
                tracing::warn!(link = %name, "link down: {end}");
                update(info, |i| {
                    i.state = LinkState::Connecting;
                    i.last_error = Some(end.to_string());
                });
            }
            Err(e) => {
                if let LinkError::Handshake(HandshakeError::BadProof) = e {
                    daemon.datapath.drops.add(DropReason::AuthFailed);
                    tracing::warn!(link = %name, peer = %peer, "peer failed authentication (different network key?)");
                } else {
                    tracing::debug!(link = %name, peer = %peer, "dial failed: {e}");
                }
                update(info, |i| i.last_error = Some(e.to_string()));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Runs the initiator's side of the handshake for link `name` on a connected stream.
/// `binding` ties the proofs to the transport's own session (QUIC's TLS exporter), or is
/// zero for plain TCP.
pub(crate) async fn initiate<R, W>(
    daemon: &Daemon,
    name: &str,
    read: &mut R,
    write: &mut W,
    binding: [u8; 32],
) -> Result<Session, LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let id = &daemon.identity;
    let caps = daemon.link(name).map_or(0, |(spec, _)| link_caps(&spec));
    let (mut initiator, hello) = Initiator::new(id.key.clone(), &id.node, name, offer(caps, binding));
    send(write, Kind::Hello, 0, &handshake::encode_payload(&hello)).await?;
    let (header, payload) = recv_timeout(read).await?;
    let challenge = match header.kind {
        Kind::Challenge => handshake::decode_challenge(&payload)?,
        Kind::Refused => return Err(LinkError::Refused(handshake::decode_refused(&payload)?.reason)),
        k => return Err(LinkError::Unexpected(k)),
    };
    let proof = initiator.on_challenge(&challenge)?;
    send(
        write,
        Kind::Proof,
        challenge.session,
        &handshake::encode_payload(&proof),
    )
    .await?;
    let (header, payload) = recv_timeout(read).await?;
    match header.kind {
        Kind::Welcome => Ok(initiator.on_welcome(header.session)?),
        Kind::Refused => Err(LinkError::Refused(handshake::decode_refused(&payload)?.reason)),
        k => Err(LinkError::Unexpected(k)),
    }
}

/// Runs the responder's side of the handshake on an accepted stream: the Hello must name
/// a link of transport `proto` that waits here. Returns the session and the link's status
/// handle once Welcome is sent.
pub(crate) async fn respond<R, W>(
    daemon: &Daemon,
    from: SocketAddr,
    proto: LinkProto,
    read: &mut R,
    write: &mut W,
    binding: [u8; 32],
) -> Result<(Session, Arc<Mutex<LinkInfo>>), LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = read_hello(daemon, read).await?;
    respond_link(daemon, from, proto, &hello, read, write, binding).await
}

/// Reads the Hello that opens an accepted stream (a bad one counts as a bad message).
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(
    daemon: &Daemon,
    read: &mut R,
) -> Result<Hello, LinkError> {
    let drops = &daemon.datapath.drops;
    let (header, payload) = recv_timeout(read)
        .await
        .inspect_err(|_| drops.add(DropReason::BadMessage))?;
    if header.kind != Kind::Hello {
        drops.add(DropReason::BadMessage);
        return Err(LinkError::Unexpected(header.kind));
    }
    Ok(handshake::decode_hello(&payload).inspect_err(|_| drops.add(DropReason::BadMessage))?)
}

/// [`respond`] once the Hello is read.
pub(crate) async fn respond_link<R, W>(
    daemon: &Daemon,
    from: SocketAddr,
    proto: LinkProto,
    hello: &Hello,
    read: &mut R,
    write: &mut W,
    binding: [u8; 32],
) -> Result<(Session, Arc<Mutex<LinkInfo>>), LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (info, caps) = match daemon.link(&hello.link) {
        Some((spec, info)) if spec.proto == proto && spec.peer.is_none() => (info, link_caps(&spec)),
        Some(_) => {
            let reason = format!("link `{}` is not a {proto} link that waits here", hello.link);
            return Err(refuse(write, &reason).await);
        }
        None => return Err(refuse(write, &format!("no link `{}` here", hello.link)).await),
    };
    if let Some(reason) = caps_mismatch(&hello.link, caps, hello.caps) {
        return Err(refuse(write, &reason).await);
    }
    let session = prove(daemon, from, hello, caps, read, write, binding).await?;
    send(write, Kind::Welcome, session.id, &[]).await?;
    Ok((session, info))
}

/// The responder's Challenge and the check of the initiator's Proof, offering `caps`:
/// the session once the peer has proven the key (the caller sends Welcome, or refuses).
/// A wrong proof is counted, logged and refused.
pub(crate) async fn prove<R, W>(
    daemon: &Daemon,
    from: SocketAddr,
    hello: &Hello,
    caps: u32,
    read: &mut R,
    write: &mut W,
    binding: [u8; 32],
) -> Result<Session, LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let id = &daemon.identity;
    let session_id = rand::random::<u32>().max(1);
    let (responder, challenge) =
        Responder::on_hello(id.key.clone(), &id.node, hello, offer(caps, binding), session_id);
    send(write, Kind::Challenge, 0, &handshake::encode_payload(&challenge)).await?;
    let (header, payload) = recv_timeout(read).await?;
    if header.kind != Kind::Proof {
        return Err(LinkError::Unexpected(header.kind));
    }
    match responder.on_proof(&handshake::decode_proof(&payload)?) {
        Ok(s) => Ok(s),
        Err(e) => {
            daemon.datapath.drops.add(DropReason::AuthFailed);
            tracing::warn!(link = %hello.link, peer = %from, node = %hello.node, "peer failed authentication (different network key?)");
            refuse(write, "authentication failed").await;
            Err(e.into())
        }
    }
}

/// The capabilities a link's configuration asks for in the handshake.
pub(crate) fn link_caps(spec: &vnet_core::config::LinkSpec) -> u32 {
    let encrypt = if spec.encrypt && spec.proto != LinkProto::Quic {
        handshake::CAP_ENCRYPT
    } else {
        0
    };
    // A TCP stream carries 64 KiB messages as easily as small ones; datagram links
    // segment super-frames to fit the underlay.
    let superframes = if spec.proto == LinkProto::Tcp {
        handshake::CAP_SUPERFRAMES
    } else {
        0
    };
    encrypt | superframes
}

/// Whether both ends of a session take super-frames.
pub(crate) fn superframes(session: &Session) -> bool {
    session.own_caps & session.peer_caps & handshake::CAP_SUPERFRAMES != 0
}

/// Why a responder with capabilities `ours` refuses a Hello asking for `theirs`.
pub(crate) fn caps_mismatch(link: &str, ours: u32, theirs: u32) -> Option<String> {
    let (we, they) = (
        ours & handshake::CAP_ENCRYPT != 0,
        theirs & handshake::CAP_ENCRYPT != 0,
    );
    (we != they).then(|| {
        let says = |b: bool| if b { "encrypts" } else { "does not encrypt" };
        format!(
            "link `{link}`: this end {} it but the dialing end {}; set encrypt alike on both",
            says(we),
            says(they)
        )
    })
}

/// The sealer and opener of a session whose link encrypts, from this end's view.
pub(crate) fn session_crypto(session: &Session) -> Option<(Arc<Sealer>, Opener)> {
    if session.own_caps & handshake::CAP_ENCRYPT == 0 {
        return None;
    }
    let (send, recv) = session.keys.for_side(session.initiator);
    Some((Arc::new(Sealer::new(&send)), Opener::new(&recv)))
}

/// Runs the session of a link the peer dialed in as its own task, registered with the
/// daemon so a newer session or a link deletion replaces it; logs and reports its end.
pub(crate) fn adopt_session<F>(daemon: &Daemon, link: String, info: Arc<Mutex<LinkInfo>>, session: F)
where
    F: Future<Output = LinkError> + Send + 'static,
{
    let name = link.clone();
    let task = tokio::spawn(async move {
        let end = session.await;
        tracing::warn!(link = %name, "link down: {end}");
        update(&info, |i| {
            i.state = LinkState::Waiting;
            i.last_error = Some(end.to_string());
        });
    });
    daemon.replace_session_task(&link, task);
}

/// Sends Refused (best effort) and returns the matching error.
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(write: &mut W, reason: &str) -> LinkError {
    let _ = send(
        write,
        Kind::Refused,
        0,
        &handshake::encode_payload(&Refused::new(reason)),
    )
    .await;
    LinkError::Refused(reason.to_string())
}

/// Writes one link message.
pub(crate) async fn send<W: AsyncWrite + Unpin>(
    write: &mut W,
    kind: Kind,
    session: u32,
    payload: &[u8],
) -> Result<(), LinkError> {
    let mut msg = Vec::with_capacity(HEADER_LEN + payload.len());
    wire::encode_message(kind, 0, session, payload, &mut msg)?;
    write.write_all(&msg).await?;
    Ok(())
}

/// Reads one link message into `payload`, returning its header.
pub(crate) async fn recv_into<R: AsyncRead + Unpin>(
    read: &mut R,
    payload: &mut Vec<u8>,
) -> Result<Header, LinkError> {
    let mut head = [0u8; HEADER_LEN];
    read.read_exact(&mut head).await?;
    let header = Header::decode(&head)?;
    payload.resize(header.len as usize, 0);
    read.read_exact(payload).await?;
    Ok(header)
}

async fn recv_timeout<R: AsyncRead + Unpin>(read: &mut R) -> Result<(Header, Vec<u8>), LinkError> {
    let mut payload = Vec::new();
    let header = tokio::time::timeout(HANDSHAKE_TIMEOUT, recv_into(read, &mut payload))
        .await
        .map_err(|_| LinkError::Timeout)??;
    Ok((header, payload))
}
