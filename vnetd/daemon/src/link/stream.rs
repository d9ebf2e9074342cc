//! What every stream link (TCP, a QUIC stream) shares: running a
//! [`LinkSession`]'s handshake over an async byte stream, the Hello that opens an
//! accepted one, the responder's admission, and the re-dial loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::daemon::{Daemon, LinkInfo};
use crate::link::{credentials, entropy, update};
use vnet_control::proto::LinkState;
use vnet_core::config::LinkProto;
use vnet_core::forward::{DropCounters, DropReason};
use vnet_core::handshake::{HandshakeError, Hello, Session};
use vnet_core::name::Name;
use vnet_core::session::{
    self, Admission, Backoff, Event, Input, LinkSession, Lost, Policy, STREAM_HANDSHAKE_TIMEOUT,
};
use vnet_core::wire::{self, Header, WireError, HEADER_LEN};
use vnet_seal::{Opener, Sealer};

pub(crate) use vnet_core::session::link_caps;

/// Why a link session could not start or ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A socket operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A connect timed out.
    #[error("timed out")]
    Timeout,
    /// The peer sent something that is not a valid link message.
    #[error("bad message from peer: {0}")]
    Wire(#[from] WireError),
    /// The session ended: the handshake failed or was refused, or the peer fell silent.
    #[error("{0}")]
    Session(#[from] Lost),
    /// The transport (QUIC connection, the socket) failed or the session was stopped.
    #[error("{0}")]
    Transport(String),
}

/// What a stream's reader has taken off the stream and not handed on: handshake
/// messages, then whatever followed them, which the session's next reader takes over.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    buf: Vec<u8>,
}

/// Bytes read from the stream per call during the handshake.
const HANDSHAKE_READ: usize = 4096;

impl Inbox {
    /// The next whole message's header and length (the message is the buffer's first
    /// `len` bytes), reading as needed; `None` when `deadline` passes first.
    async fn next<R: AsyncRead + Unpin>(
        &mut self,
        read: &mut R,
        deadline: Instant,
    ) -> Result<Option<(Header, usize)>, LinkError> {
        let mut chunk = [0u8; HANDSHAKE_READ];
        loop {
            if let Some(message) = wire::split_stream(&self.buf)? {
                return Ok(Some(message));
            }
            match tokio::time::timeout_at(deadline.into(), read.read(&mut chunk)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(LinkError::Transport("the peer closed the connection".into())),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// The payload of the first message, `len` bytes long with its header.
    fn payload(&self, len: usize) -> &[u8] {
        self.buf.get(HEADER_LEN..len).unwrap_or_default()
    }

    fn consume(&mut self, len: usize) {
        self.buf.drain(..len.min(self.buf.len()));
    }

    /// What was read past the handshake.
    pub(crate) fn into_rest(self) -> Vec<u8> {
        self.buf
    }
}

/// Runs `session`'s handshake over a stream until the session is up: sends what it
/// polls, feeds it each message that arrives (counting bad ones in `drops`) and runs its
/// timer. A responder held after the peer's proof (a probe) is approved or refused with
/// what `approve` says. Nothing past the handshake is consumed from `inbox`.
pub(crate) async fn establish<R, W>(
    session: &mut LinkSession,
    inbox: &mut Inbox,
    read: &mut R,
    write: &mut W,
    drops: &DropCounters,
    mut approve: impl FnMut(&str) -> Result<(), String>,
) -> Result<Session, LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        let mut end = None;
        while let Some(event) = session.poll_event() {
            match event {
                Event::Established(agreed) => end = Some(Ok(agreed)),
                Event::Proven { peer_node } => match approve(&peer_node) {
                    Ok(()) => session.approve(now),
                    Err(reason) => session.refuse(&reason),
                },
                Event::Lost(lost) => end = Some(Err(LinkError::Session(lost))),
                // On a stream these come with the loss that follows them.
                Event::Rtt(_) | Event::PeerRefused(_) | Event::Rejected(_) | Event::Refused(_) => {}
            }
        }
        let mut sent = Ok(());
        while session.poll_transmit(now, &mut out).is_some() {
            if let Err(e) = write.write_all(&out).await {
                sent = Err(e);
                break;
            }
        }
        match end {
            // A refusal's last words are best effort; the loss says why it ended.
            Some(Err(e)) => return Err(e),
            Some(Ok(agreed)) => {
                sent?;
                return Ok(agreed);
            }
            None => sent?,
        }
        let deadline = session.poll_timeout().unwrap_or(now);
        match inbox.next(read, deadline).await? {
            Some((header, len)) => {
                if let Input::Dropped(reason) =
                    session.handle_message(header, inbox.payload(len), Instant::now())
                {
                    drops.add(reason);
                }
                inbox.consume(len);
            }
            None => session.handle_timeout(Instant::now()),
        }
    }
}

/// [`establish`] for a link, admitted at its Hello: nothing waits for approval.
async fn establish_link<R, W>(
    daemon: &Daemon,
    session: &mut LinkSession,
    inbox: &mut Inbox,
    read: &mut R,
    write: &mut W,
) -> Result<Session, LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    establish(session, inbox, read, write, &daemon.datapath.drops, |_| Ok(())).await
}

/// Reads the Hello that opens an accepted stream, within the stream handshake timeout;
/// anything else is counted as a bad message.
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(
    drops: &DropCounters,
    inbox: &mut Inbox,
    read: &mut R,
) -> Result<Hello, LinkError> {
    let deadline = Instant::now() + STREAM_HANDSHAKE_TIMEOUT;
    let hello = async {
        let (header, len) = inbox.next(read, deadline).await?.ok_or(Lost::Timeout)?;
        let hello = session::opening_hello(&header, inbox.payload(len))?;
        inbox.consume(len);
        Ok(hello)
    };
    hello.await.inspect_err(|_| drops.add(DropReason::BadMessage))
}

/// A stream link this end answered: its up session, what both ends agreed, and the
/// link's status handle.
pub(crate) struct Answered {
    pub session: LinkSession,
    pub agreed: Session,
    pub info: Arc<Mutex<LinkInfo>>,
}

/// Answers `hello` on an accepted stream of transport `proto` as the responder: only a
/// link of that transport that waits here is admitted. `binding` ties the proofs to the
/// transport's own session (QUIC's TLS exporter), or is zero.
pub(crate) async fn respond<R, W>(
    daemon: &Daemon,
    proto: LinkProto,
    hello: &Hello,
    binding: [u8; 32],
    inbox: &mut Inbox,
    read: &mut R,
    write: &mut W,
) -> Result<Answered, LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let spec = daemon.link(&hello.link).map(|(spec, _)| spec);
    let admission = Admission::for_stream(&hello.link, proto, spec.as_ref());
    let mut session = LinkSession::respond(
        &credentials(daemon),
        hello,
        admission,
        binding,
        Policy::for_proto(proto),
        Instant::now(),
        &mut entropy(),
    );
    let agreed = establish_link(daemon, &mut session, inbox, read, write).await?;
    // The link may have gone while the handshake ran.
    let (_, info) = daemon
        .link(&agreed.link)
        .ok_or_else(|| LinkError::Transport(format!("link `{}` was deleted meanwhile", agreed.link)))?;
    Ok(Answered {
        session,
        agreed,
        info,
    })
}

/// Opens link `name` as the initiator on a connected stream, with the capabilities its
/// configuration asks for (none for a probe, which has no link) and `policy`; `binding`
/// as for [`respond`]. Returns the up session and what both ends agreed.
pub(crate) async fn initiate<R, W>(
    daemon: &Daemon,
    name: &Name,
    policy: Policy,
    binding: [u8; 32],
    inbox: &mut Inbox,
    read: &mut R,
    write: &mut W,
) -> Result<(LinkSession, Session), LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let caps = daemon.link(name).map_or(0, |(spec, _)| link_caps(&spec));
    let mut session = LinkSession::dial(
        &credentials(daemon),
        name,
        caps,
        binding,
        policy,
        Instant::now(),
        &mut entropy(),
    );
    let agreed = establish_link(daemon, &mut session, inbox, read, write).await?;
    Ok((session, agreed))
}

/// Keeps dialing link `name`: each `attempt` connects and authenticates, then runs the
/// session and returns why it ended (`Ok`), or fails to connect (`Err`). Between
/// attempts it pauses as [`Backoff`] says.
pub(crate) async fn redial<F, Fut>(name: &str, peer: SocketAddr, info: &Arc<Mutex<LinkInfo>>, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<LinkError, LinkError>>,
{
    let mut backoff = Backoff::default();
    loop {
        let came_up = match attempt().await {
            Ok(end) => {
                tracing::warn!(link = %name, "link down: {end}");
                update(info, |i| {
                    i.state = LinkState::Connecting;
                    i.last_error = Some(end.to_string());
                });
                true
            }
            Err(e) => {
                if let LinkError::Session(Lost::Handshake(HandshakeError::BadProof)) = e {
                    tracing::warn!(link = %name, peer = %peer, "peer failed authentication (different network key?)");
                } else {
                    tracing::debug!(link = %name, peer = %peer, "dial failed: {e}");
                }
                update(info, |i| i.last_error = Some(e.to_string()));
                false
            }
        };
        tokio::time::sleep(backoff.pause(came_up)).await;
    }
}

/// The sealer and opener of a session whose link encrypts, from this end's view.
pub(crate) fn session_crypto(session: &Session) -> Option<(Arc<Sealer>, Opener)> {
    if !session.encrypts() {
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
        update(&info, |i| i.session_lost(false, Some(end.to_string())));
    });
    daemon.replace_session_task(&link, task);
}
