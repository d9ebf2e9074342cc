//! The life of one link path, sans-IO: the handshake as initiator or responder, keepalives
//! with round-trip stamps, dead-peer detection and the end of the session, for every
//! transport. A [`LinkSession`] is one path: one TCP connection, one QUIC stream, or one
//! UDP peer address (the [`crate::endpoint::Endpoint`] holds those of every UDP link).
//!
//! The calling contract is quinn-proto's:
//!
//! - inputs: [`LinkSession::handle_message`] (or [`LinkSession::handle_input`] for a
//!   whole message in one buffer) for every message from the peer, and
//!   [`LinkSession::handle_timeout`] once [`LinkSession::poll_timeout`]'s instant has
//!   passed;
//! - outputs, drained after every input: [`LinkSession::poll_transmit`] until `None`
//!   (messages to send), [`LinkSession::poll_event`] until `None` (what happened), then
//!   [`LinkSession::poll_timeout`] (when to call back).
//!
//! Time comes in as `now`, randomness (nonces, ephemeral secrets, session ids) through an
//! [`Entropy`], so that a session is deterministic under test. Frames stay in the caller's
//! buffer: a Frame message of the up session comes back as [`Input::Frame`] with its
//! payload, for the driver to open (sealing needs `vnet-seal`) and forward.
//!
//! ```text
//!  dial ──▶ AwaitChallenge ──Challenge──▶ AwaitWelcome ──Welcome──▶ Up ──▶ Closed
//!  respond(Hello) ──▶ AwaitProof ──Proof──▶ [AwaitApproval ──approve──▶] Up ──▶ Closed
//! ```
//!
//! What differs between transports is a [`Policy`]: a datagram path retransmits Hello and
//! Proof, ignores strays and keeps going after an unauthenticated Refused or a Challenge
//! that fails; a stream path ends at the first message out of turn. Keepalives and the
//! silence that kills a session are configured per transport; QUIC keeps its own.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{LinkProto, LinkSpec};
use crate::forward::DropReason;
use crate::handshake::{
    self, Challenge, HandshakeError, Hello, Initiator, NetworkKey, Offer, Refused, Responder, Session,
    CAP_ENCRYPT, CAP_SUPERFRAMES,
};
use crate::measure::KeepaliveEcho;
use crate::name::Name;
use crate::wire::{self, Header, KeepaliveStamp, Kind, WireError, HEADER_LEN};

/// Interval between keepalives of an up session. It also bounds how long a dialing end
/// that has nothing to send takes to learn (from the Reset its keepalive earns) that a
/// waiting UDP peer restarted, so it is well under the one-second reconnection target.
pub const KEEPALIVE: Duration = Duration::from_millis(400);
/// Silence after which an up session is dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(5000);
/// Interval between retransmissions of Hello and Proof on datagram paths.
pub const RETRANSMIT: Duration = Duration::from_millis(250);
/// A datagram handshake that has not finished by then is given up (the UDP endpoint
/// starts a new one for a dialing link).
pub const DATAGRAM_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// A stream handshake that has not finished by then fails (the dialer connects again).
pub const STREAM_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and largest pause between dial attempts ([`Backoff`]). The cap keeps
/// reconnection within a second of the peer coming back.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// See [`BACKOFF_MIN`].
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// What a responder sends when a Proof fails verification.
const AUTH_FAILED: &str = "authentication failed";

/// Where a session draws its randomness: nonces, ephemeral secrets, session ids. The
/// daemon fills from a CSPRNG; tests and simulators from a seeded generator. Any
/// `FnMut(&mut [u8])` is one.
pub trait Entropy {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

impl<F: FnMut(&mut [u8])> Entropy for F {
    fn fill(&mut self, dest: &mut [u8]) {
        self(dest)
    }
}

fn random32(entropy: &mut dyn Entropy) -> [u8; 32] {
    let mut b = [0u8; 32];
    entropy.fill(&mut b);
    b
}

/// A fresh session id; 0 means "no session" on the wire, so it is never drawn.
fn session_id(entropy: &mut dyn Entropy) -> u32 {
    let mut b = [0u8; 4];
    entropy.fill(&mut b);
    u32::from_be_bytes(b).max(1)
}

fn offer(entropy: &mut dyn Entropy, caps: u32, binding: [u8; 32]) -> Offer {
    Offer {
        nonce: random32(entropy),
        ephemeral_secret: random32(entropy),
        caps,
        binding,
    }
}

/// Who this end is in handshakes: its node name and the overlay's network key.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// This node's name.
    pub node: Name,
    /// The overlay's network key.
    pub key: NetworkKey,
}

/// Stream or datagram: how a session treats loss, duplicates and strays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// In order and reliable (TCP, a QUIC stream): anything out of turn ends the session,
    /// and so do a Refused and a Challenge that fails.
    Stream,
    /// Lossy and spoofable (UDP): duplicates and strays are ignored, and an
    /// unauthenticated Refused or a failing Challenge only gets reported.
    Datagram,
}

/// When silence means the peer is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadAfter {
    /// Never: the transport has its own idle timeout (QUIC), or nothing follows the
    /// handshake (probes).
    Never,
    /// After this long without a message from the peer.
    Silence(Duration),
    /// After this long without a message, once the peer has sent a keepalive: a peer
    /// that never sends one (an older daemon) is left to the transport.
    SilenceOnceKeptAlive(Duration),
}

impl DeadAfter {
    /// When an up session's silence kills it, and that silence.
    fn deadline(self, up: &Up) -> Option<(Instant, Duration)> {
        match self {
            DeadAfter::Never => None,
            DeadAfter::Silence(after) => Some((up.heard + after, after)),
            DeadAfter::SilenceOnceKeptAlive(after) => up.kept_alive.then(|| (up.heard + after, after)),
        }
    }
}

/// How a session behaves on its transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Stream or datagram semantics.
    pub transport: Transport,
    /// The whole handshake must finish within this; then the session is lost.
    pub handshake_timeout: Duration,
    /// Resend Hello and Proof at this interval until answered (lossy transports).
    pub retransmit: Option<Duration>,
    /// Send a stamped keepalive at this interval while up.
    pub keepalive: Option<Duration>,
    /// Delay from coming up to the first keepalive.
    pub first_keepalive: Duration,
    /// When silence ends an up session.
    pub dead_after: DeadAfter,
}

impl Policy {
    /// UDP links: retransmits, keepalives every [`KEEPALIVE`] (the first one interval
    /// after coming up, so it cannot overtake the Welcome), dead after [`DEAD_AFTER`].
    pub fn udp() -> Policy {
        Policy {
            transport: Transport::Datagram,
            handshake_timeout: DATAGRAM_HANDSHAKE_TIMEOUT,
            retransmit: Some(RETRANSMIT),
            keepalive: Some(KEEPALIVE),
            first_keepalive: KEEPALIVE,
            dead_after: DeadAfter::Silence(DEAD_AFTER),
        }
    }

    /// TCP links: keepalives every [`KEEPALIVE`] from the start, dead after
    /// [`DEAD_AFTER`] of silence once the peer has kept alive.
    pub fn tcp() -> Policy {
        Policy {
            transport: Transport::Stream,
            handshake_timeout: STREAM_HANDSHAKE_TIMEOUT,
            retransmit: None,
            keepalive: Some(KEEPALIVE),
            first_keepalive: Duration::ZERO,
            dead_after: DeadAfter::SilenceOnceKeptAlive(DEAD_AFTER),
        }
    }

    /// A handshake on a stream and nothing after it: QUIC links (QUIC keeps the
    /// connection alive and times it out; the round-trip time comes from quinn) and
    /// bandwidth probes (the connection carries filler once the handshake is done).
    pub fn handshake_only() -> Policy {
        Policy {
            transport: Transport::Stream,
            handshake_timeout: STREAM_HANDSHAKE_TIMEOUT,
            retransmit: None,
            keepalive: None,
            first_keepalive: Duration::ZERO,
            dead_after: DeadAfter::Never,
        }
    }

    /// The policy of a link over `proto`.
    pub fn for_proto(proto: LinkProto) -> Policy {
        match proto {
            LinkProto::Tcp => Policy::tcp(),
            LinkProto::Udp => Policy::udp(),
            LinkProto::Quic => Policy::handshake_only(),
        }
    }
}

/// The capabilities a link's configuration asks for in the handshake.
pub fn link_caps(spec: &LinkSpec) -> u32 {
    // QUIC encrypts by itself.
    let encrypt = if spec.encrypt && spec.proto != LinkProto::Quic {
        CAP_ENCRYPT
    } else {
        0
    };
    // A TCP stream carries 64 KiB messages as easily as small ones; datagram links
    // segment super-frames to fit the underlay.
    let superframes = if spec.proto == LinkProto::Tcp {
        CAP_SUPERFRAMES
    } else {
        0
    };
    encrypt | superframes
}

/// Why a responder with capabilities `ours` refuses a Hello asking for `theirs`.
pub fn caps_mismatch(link: &str, ours: u32, theirs: u32) -> Option<String> {
    let (we, they) = (ours & CAP_ENCRYPT != 0, theirs & CAP_ENCRYPT != 0);
    (we != they).then(|| {
        let says = |b: bool| if b { "encrypts" } else { "does not encrypt" };
        format!(
            "link `{link}`: this end {} it but the dialing end {}; set encrypt alike on both",
            says(we),
            says(they)
        )
    })
}

/// The Hello that must open an accepted stream; anything else is a bad message, and the
/// connection is dropped.
pub fn opening_hello(header: &Header, payload: &[u8]) -> Result<Hello, Lost> {
    if header.kind != Kind::Hello {
        return Err(Lost::Unexpected(header.kind));
    }
    handshake::decode_hello(payload).map_err(Lost::Handshake)
}

/// What a responder does with a Hello, decided from the link it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Answer it, offering these capabilities; Welcome follows the peer's proof.
    Accept(u32),
    /// Answer it, but once the peer has proven the key hold the Welcome until
    /// [`LinkSession::approve`] or [`LinkSession::refuse`] (admission that only a proven
    /// peer may claim, as a bandwidth probe's).
    AcceptAfterApproval(u32),
    /// Refuse it; the reason goes to the peer (cut to
    /// [`handshake::MAX_REASON_LEN`] bytes).
    Refuse(String),
}

impl Admission {
    /// The admission of a Hello for `link` that arrived on a stream transport `proto`,
    /// given the link of that name this end has configured, if any: only a link of that
    /// transport that waits for its peer answers.
    pub fn for_stream(link: &str, proto: LinkProto, spec: Option<&LinkSpec>) -> Admission {
        match spec {
            Some(spec) if spec.proto == proto && spec.peer.is_none() => Admission::Accept(link_caps(spec)),
            Some(_) => Admission::Refuse(format!("link `{link}` is not a {proto} link that waits here")),
            None => Admission::Refuse(format!("no link `{link}` here")),
        }
    }
}

/// What became of a message handed to [`LinkSession::handle_message`].
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A frame of the up session: the payload, still sealed if the link encrypts, for the
    /// driver to open and forward with the header's flags and hop limit.
    Frame(&'a [u8]),
    /// The session took it (a handshake message, a keepalive) or ignored a stray.
    Consumed,
    /// The message was bad; count it under this reason.
    Dropped(DropReason),
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The handshake did not finish within [`Policy::handshake_timeout`].
    Timeout,
    /// The peer refused the handshake, with its reason.
    PeerRefused(String),
    /// This end refused the peer, with the reason it sent.
    Refused(String),
    /// A handshake message did not decode or verify.
    Handshake(HandshakeError),
    /// Nothing came from the peer for this long.
    Silent {
        /// The silence that ended the session.
        after: Duration,
        /// The path's transport (the message names what did not come).
        transport: Transport,
    },
    /// The peer no longer knows the session (it restarted): a dialing end handshakes
    /// again.
    Reset,
    /// A message of this kind arrived out of turn on a stream.
    Unexpected(Kind),
    /// Bytes that are not a link message arrived on a stream.
    Wire(WireError),
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Timeout => f.write_str("timed out"),
            Lost::PeerRefused(reason) => write!(f, "peer refused the link: {reason}"),
            Lost::Refused(reason) => f.write_str(reason),
            Lost::Handshake(e) => write!(f, "{e}"),
            Lost::Silent { after, transport } => {
                let what = match transport {
                    Transport::Stream => "message",
                    Transport::Datagram => "datagram",
                };
                write!(f, "no {what} from the peer for {after:?}")
            }
            Lost::Reset => f.write_str("the peer lost the session (restarted?)"),
            Lost::Unexpected(kind) => write!(f, "unexpected {kind:?} message"),
            Lost::Wire(e) => write!(f, "bad message from peer: {e}"),
        }
    }
}

impl std::error::Error for Lost {}

/// What a session reports, in order, from [`LinkSession::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed: the peer's node, the session id, the keys and the
    /// capabilities both ends offered. Frames may flow.
    Established(Session),
    /// The peer has proven the key; the session waits for [`LinkSession::approve`] or
    /// [`LinkSession::refuse`] (only after [`Admission::AcceptAfterApproval`]).
    Proven {
        /// The peer's node name.
        peer_node: Name,
    },
    /// A round-trip time sample from a keepalive stamp.
    Rtt(Duration),
    /// The peer refused the handshake (unauthenticated, at most
    /// [`handshake::MAX_REASON_LEN`] bytes). A datagram handshake goes on; a stream one
    /// is lost.
    PeerRefused(String),
    /// A handshake message from the peer failed verification (the message is counted as
    /// `auth_failed`). A datagram initiator goes on; otherwise the session is lost.
    Rejected(HandshakeError),
    /// This end refused the peer; the reason went to it.
    Refused(String),
    /// The session is over; nothing more comes from it but what it still has to send.
    Lost(Lost),
}

/// Where a session is, for demultiplexing datagrams by phase and session id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Initiator: Hello sent.
    AwaitChallenge,
    /// Initiator: Proof sent for this session id.
    AwaitWelcome(u32),
    /// Responder: Challenge sent with this session id.
    AwaitProof(u32),
    /// Responder: the peer is proven, the driver decides.
    AwaitApproval,
    /// Up with this session id.
    Up(u32),
    /// Over.
    Closed,
}

/// An up session's liveness and round-trip state.
#[derive(Debug)]
struct Up {
    id: u32,
    initiator: bool,
    /// When the peer was last heard from.
    heard: Instant,
    /// The peer has sent a keepalive.
    kept_alive: bool,
    next_keepalive: Option<Instant>,
    /// A keepalive is due; it is stamped when polled, so only time on the wire counts.
    keepalive_due: bool,
    echo: KeepaliveEcho,
}

#[derive(Debug)]
enum State {
    AwaitChallenge {
        initiator: Box<Initiator>,
        /// The Hello message, for retransmission.
        hello: Vec<u8>,
    },
    AwaitWelcome {
        initiator: Box<Initiator>,
        /// The Proof message, for retransmission.
        proof: Vec<u8>,
        session: u32,
    },
    AwaitProof {
        responder: Box<Responder>,
        /// The nonce of the Hello answered: a retransmitted Hello gets the same Challenge.
        nonce: [u8; 32],
        /// The Challenge message, to answer that Hello again.
        challenge: Vec<u8>,
        approval: bool,
    },
    AwaitApproval {
        session: Box<Session>,
    },
    Up(Up),
    Closed,
}

/// One link path's session: its handshake, then keepalives and liveness, until lost.
#[derive(Debug)]
pub struct LinkSession {
    policy: Policy,
    /// The link's name (from the Hello, on a responder).
    link: Name,
    /// The session's clock starts here; keepalive stamps never leave the session.
    epoch: Instant,
    /// The handshake's deadline.
    deadline: Instant,
    retransmit_at: Option<Instant>,
    state: State,
    /// Encoded messages waiting for [`LinkSession::poll_transmit`].
    queue: VecDeque<(Kind, Vec<u8>)>,
    events: VecDeque<Event>,
}

/// One encoded handshake-sized message (session id 0 except where the protocol puts one).
fn message(kind: Kind, session: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    // Handshake payloads are a few hundred bytes at most, far below MAX_PAYLOAD, so this
    // cannot fail.
    let _ = wire::encode_message(kind, 0, session, payload, &mut out);
    out
}

/// A Refused message: the reason as sent (cut to what the peer accepts) and the message.
pub(crate) fn refusal(reason: &str) -> (String, Vec<u8>) {
    let refused = Refused::new(reason);
    let msg = message(Kind::Refused, 0, &handshake::encode_payload(&refused));
    (refused.reason, msg)
}

impl LinkSession {
    fn new(policy: Policy, link: &Name, now: Instant, state: State) -> LinkSession {
        LinkSession {
            policy,
            link: link.clone(),
            epoch: now,
            deadline: now + policy.handshake_timeout,
            retransmit_at: policy.retransmit.map(|r| now + r),
            state,
            queue: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Opens link `link` as the initiator, asking for `caps`; `binding` ties the proofs to
    /// the transport's own security session (QUIC's TLS exporter), zero where there is
    /// none. The Hello is the first transmit.
    pub fn dial(
        creds: &Credentials,
        link: &Name,
        caps: u32,
        binding: [u8; 32],
        policy: Policy,
        now: Instant,
        entropy: &mut dyn Entropy,
    ) -> LinkSession {
        let (initiator, hello) = Initiator::new(
            creds.key.clone(),
            &creds.node,
            link,
            offer(entropy, caps, binding),
        );
        let hello = message(Kind::Hello, 0, &handshake::encode_payload(&hello));
        let mut session = LinkSession::new(
            policy,
            link,
            now,
            State::AwaitChallenge {
                initiator: Box::new(initiator),
                hello: hello.clone(),
            },
        );
        session.queue.push_back((Kind::Hello, hello));
        session
    }

    /// Answers a peer's `hello` as the responder, as `admission` says: the Challenge (or a
    /// Refused, and the session is lost at once) is the first transmit. A Hello whose
    /// encryption wish differs from the offered capabilities is refused.
    pub fn respond(
        creds: &Credentials,
        hello: &Hello,
        admission: Admission,
        binding: [u8; 32],
        policy: Policy,
        now: Instant,
        entropy: &mut dyn Entropy,
    ) -> LinkSession {
        let mut session = LinkSession::new(policy, &hello.link, now, State::Closed);
        // Responders never retransmit: the initiator's retransmits drive the exchange.
        session.retransmit_at = None;
        let (caps, approval) = match admission {
            Admission::Accept(caps) => (caps, false),
            Admission::AcceptAfterApproval(caps) => (caps, true),
            Admission::Refuse(reason) => {
                session.send_refusal(&reason);
                return session;
            }
        };
        if let Some(reason) = caps_mismatch(&hello.link, caps, hello.caps) {
            session.send_refusal(&reason);
            return session;
        }
        let id = session_id(entropy);
        let (responder, challenge) = Responder::on_hello(
            creds.key.clone(),
            &creds.node,
            hello,
            offer(entropy, caps, binding),
            id,
        );
        let challenge = message(Kind::Challenge, 0, &handshake::encode_payload(&challenge));
        session.queue.push_back((Kind::Challenge, challenge.clone()));
        session.state = State::AwaitProof {
            responder: Box::new(responder),
            nonce: hello.nonce,
            challenge,
            approval,
        };
        session
    }

    /// The link's name.
    pub fn link(&self) -> &Name {
        &self.link
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        match &self.state {
            State::AwaitChallenge { .. } => Phase::AwaitChallenge,
            State::AwaitWelcome { session, .. } => Phase::AwaitWelcome(*session),
            State::AwaitProof { responder, .. } => Phase::AwaitProof(responder.session()),
            State::AwaitApproval { .. } => Phase::AwaitApproval,
            State::Up(up) => Phase::Up(up.id),
            State::Closed => Phase::Closed,
        }
    }

    /// The id of the up session, if it is up.
    pub fn up_id(&self) -> Option<u32> {
        match &self.state {
            State::Up(up) => Some(up.id),
            _ => None,
        }
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether `challenge` is the answer to this initiator's Hello (its proof verifies):
    /// lets an endpoint pick the handshake a Challenge belongs to, since it names no link.
    pub fn verifies(&self, challenge: &Challenge) -> bool {
        matches!(&self.state, State::AwaitChallenge { initiator, .. } if initiator.verifies(challenge))
    }

    /// Whether `hello` is the Hello this responder answered (a retransmission).
    pub fn answers(&self, hello: &Hello) -> bool {
        matches!(&self.state, State::AwaitProof { nonce, .. } if *nonce == hello.nonce)
    }

    /// Takes one whole message (a UDP datagram): [`wire::decode_datagram`], then
    /// [`LinkSession::handle_message`].
    pub fn handle_input<'a>(&mut self, message: &'a [u8], now: Instant) -> Input<'a> {
        match wire::decode_datagram(message) {
            Ok((header, payload)) => self.handle_message(header, payload, now),
            Err(e) => {
                if self.policy.transport == Transport::Stream && !self.is_closed() {
                    self.lose(Lost::Wire(e));
                }
                Input::Dropped(DropReason::BadMessage)
            }
        }
    }

    /// Takes one message from the peer, its header already decoded. A Frame of the up
    /// session comes back as [`Input::Frame`] without a copy or an allocation.
    #[inline]
    pub fn handle_message<'a>(&mut self, header: Header, payload: &'a [u8], now: Instant) -> Input<'a> {
        // The hot path: a frame of the up session only marks the peer as heard.
        if let State::Up(up) = &mut self.state {
            if header.kind == Kind::Frame {
                up.heard = now;
                return Input::Frame(payload);
            }
        }
        self.handle_control(header, payload, now)
    }

    /// Everything but the up session's frames.
    fn handle_control<'a>(&mut self, header: Header, payload: &'a [u8], now: Instant) -> Input<'a> {
        match header.kind {
            Kind::Keepalive => self.on_keepalive(payload, now),
            Kind::Challenge => self.on_challenge(payload),
            Kind::Proof => self.on_proof(payload, now),
            Kind::Welcome => self.on_welcome(header.session, now),
            Kind::Hello => self.on_hello(payload),
            Kind::Refused => self.on_refused(payload),
            Kind::Reset => self.on_reset(header.session),
            Kind::Frame => self.stray(header.kind),
        }
    }

    /// A keepalive marks the peer as heard and may carry a round-trip sample.
    fn on_keepalive(&mut self, payload: &[u8], now: Instant) -> Input<'static> {
        let State::Up(up) = &mut self.state else {
            return self.stray(Kind::Keepalive);
        };
        up.heard = now;
        up.kept_alive = true;
        match KeepaliveStamp::decode(payload) {
            Ok(Some(stamp)) => {
                let at = now.saturating_duration_since(self.epoch);
                if let Some(rtt) = up.echo.receive(&stamp, at) {
                    self.events.push_back(Event::Rtt(rtt));
                }
                Input::Consumed
            }
            // An older peer's keepalive measures nothing.
            Ok(None) => Input::Consumed,
            Err(_) => Input::Dropped(DropReason::BadMessage),
        }
    }

    /// A message this state does not expect: a datagram path ignores it (duplicates and
    /// strays are normal there), a stream path ends.
    fn stray(&mut self, kind: Kind) -> Input<'static> {
        match self.policy.transport {
            Transport::Datagram => Input::Consumed,
            Transport::Stream => {
                if !self.is_closed() {
                    self.lose(Lost::Unexpected(kind));
                }
                Input::Dropped(DropReason::BadMessage)
            }
        }
    }

    /// A handshake payload that does not decode.
    fn malformed(&mut self, e: HandshakeError) -> Input<'static> {
        if self.policy.transport == Transport::Stream {
            self.lose(Lost::Handshake(e));
        }
        Input::Dropped(DropReason::BadMessage)
    }

    fn on_challenge(&mut self, payload: &[u8]) -> Input<'static> {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let State::AwaitChallenge { mut initiator, hello } = state else {
            self.state = state;
            return self.stray(Kind::Challenge);
        };
        let outcome = handshake::decode_challenge(payload).map(|c| {
            let proof = initiator.on_challenge(&c);
            (c.session, proof)
        });
        match outcome {
            Ok((session, Ok(proof))) => {
                let proof = message(Kind::Proof, session, &handshake::encode_payload(&proof));
                self.queue.push_back((Kind::Proof, proof.clone()));
                self.state = State::AwaitWelcome {
                    initiator,
                    proof,
                    session,
                };
                Input::Consumed
            }
            Ok((_, Err(e))) => {
                self.state = State::AwaitChallenge { initiator, hello };
                self.events.push_back(Event::Rejected(e.clone()));
                if self.policy.transport == Transport::Stream {
                    self.lose(Lost::Handshake(e));
                }
                Input::Dropped(DropReason::AuthFailed)
            }
            Err(e) => {
                self.state = State::AwaitChallenge { initiator, hello };
                self.malformed(e)
            }
        }
    }

    fn on_welcome(&mut self, id: u32, now: Instant) -> Input<'static> {
        let State::AwaitWelcome { initiator, .. } = &self.state else {
            return self.stray(Kind::Welcome);
        };
        match initiator.on_welcome(id) {
            Ok(session) => {
                self.come_up(now, session.id, true);
                self.events.push_back(Event::Established(session));
                Input::Consumed
            }
            Err(e) => self.malformed(e),
        }
    }

    fn on_proof(&mut self, payload: &[u8], now: Instant) -> Input<'static> {
        let (responder, approval) = match &self.state {
            State::AwaitProof {
                responder, approval, ..
            } => (responder, *approval),
            // Our Welcome got lost: the peer proves again for the session we run.
            State::Up(up) if !up.initiator && self.policy.transport == Transport::Datagram => {
                self.queue
                    .push_back((Kind::Welcome, message(Kind::Welcome, up.id, &[])));
                return Input::Consumed;
            }
            _ => return self.stray(Kind::Proof),
        };
        let verified = match handshake::decode_proof(payload) {
            Ok(proof) => responder.on_proof(&proof),
            Err(e) => return self.malformed(e),
        };
        match verified {
            Ok(session) if approval => {
                self.events.push_back(Event::Proven {
                    peer_node: session.peer_node.clone(),
                });
                self.state = State::AwaitApproval {
                    session: Box::new(session),
                };
                Input::Consumed
            }
            Ok(session) => {
                self.welcome(now, session);
                Input::Consumed
            }
            Err(e) => {
                self.events.push_back(Event::Rejected(e.clone()));
                self.queue_refusal(AUTH_FAILED);
                self.lose(Lost::Handshake(e));
                Input::Dropped(DropReason::AuthFailed)
            }
        }
    }

    /// A retransmitted Hello gets the same Challenge again.
    fn on_hello(&mut self, payload: &[u8]) -> Input<'static> {
        if self.policy.transport == Transport::Datagram {
            if let State::AwaitProof { nonce, challenge, .. } = &self.state {
                return match handshake::decode_hello(payload) {
                    Ok(hello) if hello.nonce == *nonce => {
                        self.queue.push_back((Kind::Challenge, challenge.clone()));
                        Input::Consumed
                    }
                    Ok(_) => Input::Consumed,
                    Err(_) => Input::Dropped(DropReason::BadMessage),
                };
            }
        }
        self.stray(Kind::Hello)
    }

    fn on_refused(&mut self, payload: &[u8]) -> Input<'static> {
        if !matches!(
            self.state,
            State::AwaitChallenge { .. } | State::AwaitWelcome { .. }
        ) {
            return self.stray(Kind::Refused);
        }
        let reason = handshake::decode_refused(payload)
            .map(|r| r.reason)
            .unwrap_or_else(|e| e.to_string());
        self.events.push_back(Event::PeerRefused(reason.clone()));
        // Unauthenticated: on a datagram path anyone could send it, so the handshake
        // goes on until its deadline; on a stream it comes from the connected peer.
        if self.policy.transport == Transport::Stream {
            self.lose(Lost::PeerRefused(reason));
        }
        Input::Consumed
    }

    fn on_reset(&mut self, id: u32) -> Input<'static> {
        match (&self.state, self.policy.transport) {
            // Unauthenticated: it can make a dialing end handshake again, never cut a
            // waiting end's session.
            (State::Up(up), Transport::Datagram) => {
                if up.initiator {
                    self.lose(Lost::Reset);
                }
                Input::Consumed
            }
            // The responder lost the handshake (it restarted after its Challenge):
            // retransmitting the Proof until the deadline would keep the link down for
            // seconds, so start over at once.
            (State::AwaitWelcome { session, .. }, Transport::Datagram) if *session == id => {
                self.lose(Lost::Reset);
                Input::Consumed
            }
            _ => self.stray(Kind::Reset),
        }
    }

    /// Queues the Welcome and comes up as the responder.
    fn welcome(&mut self, now: Instant, session: Session) {
        self.queue
            .push_back((Kind::Welcome, message(Kind::Welcome, session.id, &[])));
        self.come_up(now, session.id, false);
        self.events.push_back(Event::Established(session));
    }

    fn come_up(&mut self, now: Instant, id: u32, initiator: bool) {
        self.retransmit_at = None;
        self.state = State::Up(Up {
            id,
            initiator,
            heard: now,
            kept_alive: false,
            next_keepalive: self.policy.keepalive.map(|_| now + self.policy.first_keepalive),
            keepalive_due: false,
            echo: KeepaliveEcho::default(),
        });
    }

    fn lose(&mut self, reason: Lost) {
        self.state = State::Closed;
        self.retransmit_at = None;
        self.events.push_back(Event::Lost(reason));
    }

    /// Welcomes a peer held after [`Event::Proven`]; the session comes up
    /// ([`Event::Established`]). Does nothing in any other phase.
    pub fn approve(&mut self, now: Instant) {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::AwaitApproval { session } => self.welcome(now, *session),
            other => self.state = other,
        }
    }

    /// Ends the session, telling the peer why (a Refused message; [`Event::Refused`],
    /// then [`Event::Lost`]): how a peer held after [`Event::Proven`] is turned down.
    /// Does nothing once closed.
    pub fn refuse(&mut self, reason: &str) {
        if !self.is_closed() {
            self.send_refusal(reason);
        }
    }

    fn send_refusal(&mut self, reason: &str) {
        let sent = self.queue_refusal(reason);
        self.lose(Lost::Refused(sent));
    }

    /// Queues a Refused message and reports it; returns the reason as sent.
    fn queue_refusal(&mut self, reason: &str) -> String {
        let (sent, msg) = refusal(reason);
        self.queue.push_back((Kind::Refused, msg));
        self.events.push_back(Event::Refused(sent.clone()));
        sent
    }

    /// When [`LinkSession::handle_timeout`] is due next; `None` once closed (or when up
    /// with neither keepalives nor a dead-peer timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Closed => None,
            State::Up(up) => earliest(
                self.policy.dead_after.deadline(up).map(|(at, _)| at),
                up.next_keepalive,
            ),
            _ => earliest(Some(self.deadline), self.retransmit_at),
        }
    }

    /// Runs the timers due at `now`: the handshake deadline, retransmissions, keepalives
    /// and the dead-peer timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        let policy = self.policy;
        match &mut self.state {
            State::Closed => {}
            State::Up(up) => {
                if let Some((at, after)) = policy.dead_after.deadline(up) {
                    if now >= at {
                        self.lose(Lost::Silent {
                            after,
                            transport: policy.transport,
                        });
                        return;
                    }
                }
                if let (Some(at), Some(interval)) = (up.next_keepalive, policy.keepalive) {
                    if now >= at {
                        up.keepalive_due = true;
                        up.next_keepalive = Some(now + interval);
                    }
                }
            }
            _ => {
                if now >= self.deadline {
                    self.lose(Lost::Timeout);
                    return;
                }
                let (Some(at), Some(interval)) = (self.retransmit_at, policy.retransmit) else {
                    return;
                };
                if now < at {
                    return;
                }
                self.retransmit_at = Some(now + interval);
                match &self.state {
                    State::AwaitChallenge { hello, .. } => self.queue.push_back((Kind::Hello, hello.clone())),
                    State::AwaitWelcome { proof, .. } => self.queue.push_back((Kind::Proof, proof.clone())),
                    _ => {}
                }
            }
        }
    }

    /// The next message to send, written into `buf` (replacing what it held); returns its
    /// kind (a driver samples its counters on each keepalive). `None` when nothing is due.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Kind> {
        if let Some((kind, msg)) = self.queue.pop_front() {
            buf.clear();
            buf.extend_from_slice(&msg);
            return Some(kind);
        }
        let State::Up(up) = &mut self.state else {
            return None;
        };
        if !up.keepalive_due {
            return None;
        }
        up.keepalive_due = false;
        let stamp = up.echo.stamp(now.saturating_duration_since(self.epoch));
        buf.clear();
        // A keepalive payload is far below MAX_PAYLOAD: encoding cannot fail.
        let _ = wire::encode_message(Kind::Keepalive, 0, up.id, &stamp.encode(), buf);
        Some(Kind::Keepalive)
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Pauses between dial attempts: from [`BACKOFF_MIN`], doubling to [`BACKOFF_MAX`], back
/// to the start after an attempt whose session came up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The pause after an attempt; `came_up` says whether its session came up.
    pub fn pause(&mut self, came_up: bool) -> Duration {
        if came_up {
            self.next = BACKOFF_MIN;
        }
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(BACKOFF_MAX);
        pause
    }
}

/// Test helpers shared with the endpoint's tests: credentials, seeded entropy, and a pipe
/// that moves messages between two sessions in virtual time.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) const KEY: [u8; 32] = [7; 32];

    pub(crate) fn creds(node: &str) -> Credentials {
        Credentials {
            node: crate::name::name(node),
            key: NetworkKey::from_bytes(KEY),
        }
    }

    pub(crate) fn creds_with_key(node: &str, key: [u8; 32]) -> Credentials {
        Credentials {
            node: crate::name::name(node),
            key: NetworkKey::from_bytes(key),
        }
    }

    /// Deterministic entropy (splitmix64).
    pub(crate) fn entropy(seed: u64) -> impl FnMut(&mut [u8]) + Send {
        let mut state = seed;
        move |dest: &mut [u8]| {
            for chunk in dest.chunks_mut(8) {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_be_bytes()[..chunk.len()]);
            }
        }
    }

    /// Everything a session has to send now.
    pub(crate) fn drain(s: &mut LinkSession, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while s.poll_transmit(now, &mut buf).is_some() {
            out.push(buf.clone());
        }
        out
    }

    pub(crate) fn events(s: &mut LinkSession) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// A Proof message for session `id` carrying `proof`.
    pub(crate) fn proof_message(id: u32, proof: [u8; 32]) -> Vec<u8> {
        message(
            Kind::Proof,
            id,
            &handshake::encode_payload(&handshake::Proof { proof }),
        )
    }

    /// The Hello a dialing session sends first, decoded.
    pub(crate) fn hello_of(message: &[u8]) -> Hello {
        let (h, p) = wire::decode_datagram(message).expect("a message");
        assert_eq!(h.kind, Kind::Hello);
        handshake::decode_hello(p).expect("a Hello")
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "the tests take one base instant for their virtual time; every step is an offset from it"
)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::name::name;
    use proptest::prelude::*;

    fn kind_of(m: &[u8]) -> Kind {
        wire::decode_datagram(m).expect("a message").0.kind
    }

    /// A dials link "a-b" asking for `caps`; B answers its Hello with `admission`.
    fn start(
        a: &Credentials,
        b: &Credentials,
        caps: u32,
        admission: Admission,
        policy: Policy,
        now: Instant,
    ) -> (LinkSession, LinkSession) {
        let mut rng = entropy(1);
        let mut initiator = LinkSession::dial(a, &name("a-b"), caps, [0; 32], policy, now, &mut rng);
        let first = drain(&mut initiator, now);
        assert_eq!(first.len(), 1, "the Hello first");
        let hello = hello_of(&first[0]);
        let responder = LinkSession::respond(b, &hello, admission, [0; 32], policy, now, &mut rng);
        (initiator, responder)
    }

    fn pair(policy: Policy, now: Instant) -> (LinkSession, LinkSession) {
        start(
            &creds("host-a"),
            &creds("host-b"),
            0,
            Admission::Accept(0),
            policy,
            now,
        )
    }

    /// A pair of `policy` up at `now`, their events taken.
    fn up_pair(policy: Policy, now: Instant) -> (LinkSession, LinkSession) {
        let (mut i, mut r) = pair(policy, now);
        assert!(pump(&mut i, &mut r, now, |_, _| true).is_empty());
        assert!(established(&events(&mut i)).is_some() && established(&events(&mut r)).is_some());
        (i, r)
    }

    /// Checks why a session ended, as its driver would report it.
    fn assert_lost(s: &mut LinkSession, want: &str) {
        assert_eq!(lost(&events(s)).map(Lost::to_string).as_deref(), Some(want));
    }

    /// Moves messages both ways at `now` until both are quiet; `deliver(from_initiator,
    /// kind)` may drop each. Returns the drops the receivers reported.
    fn pump(
        i: &mut LinkSession,
        r: &mut LinkSession,
        now: Instant,
        mut deliver: impl FnMut(bool, Kind) -> bool,
    ) -> Vec<DropReason> {
        let mut drops = Vec::new();
        for _ in 0..100 {
            let to_r = drain(i, now);
            let to_i = drain(r, now);
            if to_r.is_empty() && to_i.is_empty() {
                break;
            }
            for (from_i, msgs) in [(true, to_r), (false, to_i)] {
                for m in msgs {
                    if !deliver(from_i, kind_of(&m)) {
                        continue;
                    }
                    let to = if from_i { &mut *r } else { &mut *i };
                    if let Input::Dropped(d) = to.handle_input(&m, now) {
                        drops.push(d);
                    }
                }
            }
        }
        drops
    }

    /// Runs both sessions' timers and the pipe from `now` for `span`, in 10 ms steps.
    fn run(
        i: &mut LinkSession,
        r: &mut LinkSession,
        now: &mut Instant,
        span: Duration,
        mut deliver: impl FnMut(bool, Kind) -> bool,
    ) -> Vec<DropReason> {
        let end = *now + span;
        let mut drops = Vec::new();
        while *now < end {
            *now += Duration::from_millis(10);
            for s in [&mut *i, &mut *r] {
                if s.poll_timeout().is_some_and(|t| t <= *now) {
                    s.handle_timeout(*now);
                }
            }
            drops.extend(pump(i, r, *now, &mut deliver));
        }
        drops
    }

    fn established(events: &[Event]) -> Option<&Session> {
        events.iter().find_map(|e| match e {
            Event::Established(s) => Some(s),
            _ => None,
        })
    }

    fn lost(events: &[Event]) -> Option<&Lost> {
        events.iter().find_map(|e| match e {
            Event::Lost(l) => Some(l),
            _ => None,
        })
    }

    #[test]
    fn handshake_completes_in_both_roles_over_a_stream() {
        let now = Instant::now();
        let (mut i, mut r) = start(
            &creds("host-a"),
            &creds("host-b"),
            CAP_SUPERFRAMES,
            Admission::Accept(CAP_SUPERFRAMES),
            Policy::tcp(),
            now,
        );
        assert_eq!(i.phase(), Phase::AwaitChallenge);
        assert!(matches!(r.phase(), Phase::AwaitProof(id) if id != 0));
        let drops = pump(&mut i, &mut r, now, |_, _| true);
        assert!(drops.is_empty(), "{drops:?}");
        let (ei, er) = (events(&mut i), events(&mut r));
        let si = established(&ei).expect("initiator up");
        let sr = established(&er).expect("responder up");
        assert_eq!(si.id, sr.id);
        assert_eq!(
            (si.peer_node.as_str(), sr.peer_node.as_str()),
            ("host-b", "host-a")
        );
        assert_eq!((si.link.as_str(), sr.link.as_str()), ("a-b", "a-b"));
        assert!(si.initiator && !sr.initiator);
        assert_eq!(si.keys, sr.keys);
        assert!(si.superframes() && sr.superframes() && !si.encrypts());
        assert_eq!((i.phase(), r.phase()), (Phase::Up(si.id), Phase::Up(si.id)));
        assert_eq!(r.link(), "a-b");
        // A frame of the up session comes back as a slice of the caller's buffer.
        let mut frame = Vec::new();
        wire::encode_frame(5, 0, 0, &[b"payload"], &mut frame).expect("fits");
        let (h, p) = wire::decode_datagram(&frame).expect("valid");
        match r.handle_message(h, p, now) {
            Input::Frame(got) => assert!(std::ptr::eq(got, p)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lossy_datagrams_are_retransmitted_until_the_handshake_completes() {
        let mut now = Instant::now();
        let (mut i, mut r) = pair(Policy::udp(), now);
        // The first Hello already went; the first Challenge and the first Proof get lost.
        let mut lost_challenge = false;
        let mut lost_proof = false;
        let mut sent = Vec::new();
        let drops = run(
            &mut i,
            &mut r,
            &mut now,
            Duration::from_secs(2),
            |from_i, kind| {
                sent.push((from_i, kind));
                match kind {
                    Kind::Challenge if !lost_challenge => {
                        lost_challenge = true;
                        false
                    }
                    Kind::Proof if !lost_proof => {
                        lost_proof = true;
                        false
                    }
                    _ => true,
                }
            },
        );
        assert!(drops.is_empty(), "{drops:?}");
        assert!(established(&events(&mut i)).is_some(), "initiator up: {sent:?}");
        assert!(established(&events(&mut r)).is_some());
        // The Hello was sent again after the Challenge was lost and answered with the
        // same Challenge; the Proof was sent again.
        let count = |k: Kind| sent.iter().filter(|(_, s)| *s == k).count();
        assert!(
            count(Kind::Hello) >= 1 && count(Kind::Challenge) >= 2 && count(Kind::Proof) >= 2,
            "{sent:?}"
        );
        assert_eq!(count(Kind::Welcome), 1);
    }

    #[test]
    fn an_unanswered_datagram_handshake_retransmits_then_times_out() {
        let mut now = Instant::now();
        let mut rng = entropy(2);
        let start = now;
        let mut i = LinkSession::dial(
            &creds("host-a"),
            &name("a-b"),
            0,
            [0; 32],
            Policy::udp(),
            now,
            &mut rng,
        );
        let mut hellos = drain(&mut i, now).len();
        while let Some(t) = i.poll_timeout() {
            now = t;
            i.handle_timeout(now);
            hellos += drain(&mut i, now).len();
        }
        assert_eq!(events(&mut i), vec![Event::Lost(Lost::Timeout)]);
        assert_eq!(now - start, DATAGRAM_HANDSHAKE_TIMEOUT);
        // One at once, then every 250 ms until the deadline.
        assert_eq!(hellos, 12);
        assert!(i.is_closed() && i.poll_timeout().is_none());
    }

    #[test]
    fn a_stream_handshake_has_one_deadline_and_no_retransmits() {
        let now = Instant::now();
        let (mut i, mut r) = pair(Policy::tcp(), now);
        assert_eq!(i.poll_timeout(), Some(now + STREAM_HANDSHAKE_TIMEOUT));
        assert_eq!(r.poll_timeout(), Some(now + STREAM_HANDSHAKE_TIMEOUT));
        i.handle_timeout(now + STREAM_HANDSHAKE_TIMEOUT);
        r.handle_timeout(now + STREAM_HANDSHAKE_TIMEOUT);
        assert!(drain(&mut i, now).is_empty(), "no retransmit on a stream");
        assert_eq!(lost(&events(&mut i)), Some(&Lost::Timeout));
        assert_eq!(lost(&events(&mut r)), Some(&Lost::Timeout));
        assert_eq!(Lost::Timeout.to_string(), "timed out");
    }

    #[test]
    fn a_wrong_key_fails_at_the_initiator_first() {
        let now = Instant::now();
        for policy in [Policy::tcp(), Policy::udp()] {
            let (mut i, mut r) = start(
                &creds("host-a"),
                &creds_with_key("host-b", [8; 32]),
                0,
                Admission::Accept(0),
                policy,
                now,
            );
            let drops = pump(&mut i, &mut r, now, |_, _| true);
            assert_eq!(drops, vec![DropReason::AuthFailed]);
            let ev = events(&mut i);
            assert!(ev.contains(&Event::Rejected(HandshakeError::BadProof)), "{ev:?}");
            match policy.transport {
                // The connection is done for.
                Transport::Stream => {
                    assert_eq!(lost(&ev), Some(&Lost::Handshake(HandshakeError::BadProof)));
                    assert!(i.is_closed());
                }
                // Anyone can send a datagram: the handshake waits for the real Challenge.
                Transport::Datagram => {
                    assert_eq!(lost(&ev), None);
                    assert_eq!(i.phase(), Phase::AwaitChallenge);
                }
            }
            assert!(established(&events(&mut r)).is_none());
        }
    }

    #[test]
    fn a_forged_proof_is_refused_and_counted() {
        let now = Instant::now();
        let (_, mut r) = pair(Policy::tcp(), now);
        let Phase::AwaitProof(id) = r.phase() else {
            panic!("{:?}", r.phase());
        };
        drain(&mut r, now);
        let forged = proof_message(id, [3; 32]);
        assert_eq!(
            r.handle_input(&forged, now),
            Input::Dropped(DropReason::AuthFailed)
        );
        let out = drain(&mut r, now);
        assert_eq!(out.len(), 1);
        let (h, p) = wire::decode_datagram(&out[0]).expect("a message");
        assert_eq!(h.kind, Kind::Refused);
        assert_eq!(
            handshake::decode_refused(p).expect("refused").reason,
            "authentication failed"
        );
        assert_eq!(
            events(&mut r),
            vec![
                Event::Rejected(HandshakeError::BadProof),
                Event::Refused("authentication failed".into()),
                Event::Lost(Lost::Handshake(HandshakeError::BadProof)),
            ]
        );
    }

    #[test]
    fn an_encryption_mismatch_is_refused_with_a_reason() {
        let now = Instant::now();
        for policy in [Policy::tcp(), Policy::udp()] {
            let (mut i, mut r) = start(
                &creds("host-a"),
                &creds("host-b"),
                CAP_ENCRYPT,
                Admission::Accept(0),
                policy,
                now,
            );
            assert!(r.is_closed());
            let er = events(&mut r);
            let Some(Lost::Refused(reason)) = lost(&er) else {
                panic!("{er:?}");
            };
            assert_eq!(
                reason,
                "link `a-b`: this end does not encrypt it but the dialing end encrypts; set encrypt alike on both"
            );
            pump(&mut i, &mut r, now, |_, _| true);
            let ei = events(&mut i);
            assert!(ei.contains(&Event::PeerRefused(reason.clone())), "{ei:?}");
            match policy.transport {
                Transport::Stream => {
                    let l = lost(&ei).expect("lost");
                    assert_eq!(l, &Lost::PeerRefused(reason.clone()));
                    assert!(l
                        .to_string()
                        .starts_with("peer refused the link: link `a-b`: this end"));
                }
                // Unauthenticated on a datagram path: reported, and the handshake goes on.
                Transport::Datagram => assert_eq!(i.phase(), Phase::AwaitChallenge),
            }
        }
    }

    #[test]
    fn a_link_to_ourselves_is_refused_on_both_sides() {
        let now = Instant::now();
        let me = creds("host-a");
        let (mut i, mut r) = start(&me, &me, 0, Admission::Accept(0), Policy::tcp(), now);
        pump(&mut i, &mut r, now, |_, _| true);
        let ev = events(&mut i);
        assert_eq!(
            lost(&ev),
            Some(&Lost::Handshake(HandshakeError::SelfConnection(name("host-a"))))
        );
        // The responder's own check, for a Proof from a peer that skipped that one.
        let Phase::AwaitProof(id) = r.phase() else {
            panic!("{:?}", r.phase());
        };
        let proof = proof_message(id, [0; 32]);
        assert_eq!(
            r.handle_input(&proof, now),
            Input::Dropped(DropReason::AuthFailed)
        );
        assert!(matches!(
            lost(&events(&mut r)),
            Some(Lost::Handshake(HandshakeError::SelfConnection(_)))
        ));
    }

    #[test]
    fn a_lost_welcome_is_sent_again_for_the_retransmitted_proof() {
        let mut now = Instant::now();
        let (mut i, mut r) = pair(Policy::udp(), now);
        let mut welcomes = 0;
        run(&mut i, &mut r, &mut now, Duration::from_secs(1), |_, kind| {
            if kind == Kind::Welcome {
                welcomes += 1;
                return welcomes > 1;
            }
            true
        });
        assert_eq!(welcomes, 2, "one lost, one answering the Proof sent again");
        let (ei, er) = (events(&mut i), events(&mut r));
        assert_eq!(established(&ei).map(|s| s.id), established(&er).map(|s| s.id));
        assert_eq!(
            er.iter().filter(|e| matches!(e, Event::Established(_))).count(),
            1
        );
    }

    #[test]
    fn keepalive_stamps_measure_the_round_trip() {
        let now = Instant::now();
        for policy in [Policy::tcp(), Policy::udp()] {
            let (mut i, mut r) = up_pair(policy, now);
            // Messages take 10 ms each way; run for 3 s of virtual time.
            let one_way = Duration::from_millis(10);
            let mut in_flight: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
            let mut t = now;
            let mut samples = Vec::new();
            while t < now + Duration::from_secs(3) {
                t += Duration::from_millis(1);
                for (from_i, s) in [(true, &mut i), (false, &mut r)] {
                    if s.poll_timeout().is_some_and(|d| d <= t) {
                        s.handle_timeout(t);
                    }
                    for m in drain(s, t) {
                        in_flight.push((t + one_way, from_i, m));
                    }
                }
                let (due, later): (Vec<_>, Vec<_>) = in_flight.into_iter().partition(|(at, _, _)| *at <= t);
                in_flight = later;
                for (_, from_i, m) in due {
                    let to = if from_i { &mut r } else { &mut i };
                    assert_eq!(to.handle_input(&m, t), Input::Consumed);
                    for e in events(to) {
                        match e {
                            Event::Rtt(rtt) => samples.push(rtt),
                            other => panic!("{other:?}"),
                        }
                    }
                }
            }
            assert!(samples.len() >= 8, "{policy:?}: {samples:?}");
            assert!(samples.iter().all(|s| *s == 2 * one_way), "{samples:?}");
        }
    }

    #[test]
    fn a_silent_datagram_peer_is_dead_after_the_deadline() {
        let now = Instant::now();
        let (mut i, _) = up_pair(Policy::udp(), now);
        // Keepalives go out every interval; nothing comes back.
        let mut t = now;
        let mut keepalives = 0;
        while let Some(at) = i.poll_timeout() {
            t = at;
            i.handle_timeout(t);
            keepalives += drain(&mut i, t).len();
        }
        assert_eq!(t - now, DEAD_AFTER);
        assert_eq!(keepalives, 12, "at 0.4 s, 0.8 s ... 4.8 s");
        assert_lost(&mut i, "no datagram from the peer for 5s");
    }

    #[test]
    fn a_stream_peer_is_dead_only_once_it_has_kept_alive() {
        let now = Instant::now();
        let (mut i, _) = up_pair(Policy::tcp(), now);
        // The first keepalive is due at once.
        assert_eq!(i.poll_timeout(), Some(now));
        i.handle_timeout(now);
        assert_eq!(drain(&mut i, now).len(), 1);
        // A peer that never keeps alive (an older daemon) is left to the transport.
        let later = now + Duration::from_secs(60);
        i.handle_timeout(later);
        assert!(lost(&events(&mut i)).is_none());
        assert_eq!(i.poll_timeout(), Some(later + KEEPALIVE));
        // Once it has, its silence counts.
        let keepalive = message(Kind::Keepalive, 0, &[]);
        assert_eq!(i.handle_input(&keepalive, later), Input::Consumed);
        assert_eq!(i.poll_timeout(), Some(later + KEEPALIVE));
        i.handle_timeout(later + DEAD_AFTER);
        assert_lost(&mut i, "no message from the peer for 5s");
    }

    #[test]
    fn handshake_only_sessions_have_no_timers_once_up() {
        let now = Instant::now();
        let (mut i, mut r) = up_pair(Policy::handshake_only(), now);
        assert_eq!((i.poll_timeout(), r.poll_timeout()), (None, None));
        let later = now + Duration::from_secs(60);
        assert!(drain(&mut i, later).is_empty() && drain(&mut r, later).is_empty());
    }

    #[test]
    fn a_reset_ends_a_dialing_session_and_never_a_waiting_one() {
        let now = Instant::now();
        let (mut i, mut r) = up_pair(Policy::udp(), now);
        let id = i.up_id().expect("up");
        let reset = message(Kind::Reset, id, &[]);
        assert_eq!(r.handle_input(&reset, now), Input::Consumed);
        assert_eq!(r.up_id(), Some(id), "the waiting end keeps its session");
        assert_eq!(i.handle_input(&reset, now), Input::Consumed);
        assert!(events(&mut i).contains(&Event::Lost(Lost::Reset)));
        assert!(i.is_closed());
    }

    #[test]
    fn out_of_turn_messages_end_a_stream_and_are_ignored_on_datagrams() {
        let now = Instant::now();
        let frame = message(Kind::Frame, 0, b"early");
        let (mut i, _) = pair(Policy::udp(), now);
        assert_eq!(i.handle_input(&frame, now), Input::Consumed);
        assert_eq!(i.phase(), Phase::AwaitChallenge);
        let (mut i, _) = pair(Policy::tcp(), now);
        assert_eq!(
            i.handle_input(&frame, now),
            Input::Dropped(DropReason::BadMessage)
        );
        assert_eq!(lost(&events(&mut i)), Some(&Lost::Unexpected(Kind::Frame)));
        let (mut i, _) = pair(Policy::tcp(), now);
        assert_eq!(
            i.handle_input(b"GET / HTTP/1.1\r\n", now),
            Input::Dropped(DropReason::BadMessage)
        );
        assert!(matches!(lost(&events(&mut i)), Some(Lost::Wire(_))));
    }

    #[test]
    fn approval_holds_the_welcome_until_the_driver_decides() {
        let now = Instant::now();
        for approve in [true, false] {
            let (mut i, mut r) = start(
                &creds("host-a"),
                &creds("host-b"),
                0,
                Admission::AcceptAfterApproval(0),
                Policy::handshake_only(),
                now,
            );
            pump(&mut i, &mut r, now, |_, _| true);
            assert_eq!(r.phase(), Phase::AwaitApproval);
            assert_eq!(
                events(&mut r),
                vec![Event::Proven {
                    peer_node: name("host-a")
                }]
            );
            assert!(matches!(i.phase(), Phase::AwaitWelcome(_)), "no Welcome yet");
            if approve {
                r.approve(now);
                assert!(established(&events(&mut r)).is_some());
                pump(&mut i, &mut r, now, |_, _| true);
                assert!(established(&events(&mut i)).is_some());
            } else {
                r.refuse("another probe is running; try again when it ends");
                pump(&mut i, &mut r, now, |_, _| true);
                assert_eq!(
                    lost(&events(&mut i)).map(|l| l.to_string()),
                    Some("peer refused the link: another probe is running; try again when it ends".into())
                );
                assert!(r.is_closed());
            }
        }
    }

    #[test]
    fn refusal_reasons_are_bounded() {
        let now = Instant::now();
        let mut rng = entropy(3);
        let mut i = LinkSession::dial(&creds("a"), &name("l"), 0, [0; 32], Policy::tcp(), now, &mut rng);
        let hello = hello_of(&drain(&mut i, now)[0]);
        let long = "é".repeat(500);
        let mut r = LinkSession::respond(
            &creds("b"),
            &hello,
            Admission::Refuse(long),
            [0; 32],
            Policy::tcp(),
            now,
            &mut rng,
        );
        let sent = drain(&mut r, now);
        assert_eq!(i.handle_input(&sent[0], now), Input::Consumed);
        let Some(Lost::PeerRefused(reason)) = lost(&events(&mut i)).cloned() else {
            panic!("refused");
        };
        assert_eq!(reason.len(), handshake::MAX_REASON_LEN);
    }

    #[test]
    fn stream_admission_names_what_is_wrong() {
        let spec = |proto, peer: Option<&str>| LinkSpec {
            name: name("a-b"),
            proto,
            peer: peer.map(|p| p.parse().expect("addr")),
            encrypt: true,
        };
        assert_eq!(
            Admission::for_stream("a-b", LinkProto::Tcp, Some(&spec(LinkProto::Tcp, None))),
            Admission::Accept(CAP_ENCRYPT | CAP_SUPERFRAMES)
        );
        assert_eq!(
            Admission::for_stream("a-b", LinkProto::Quic, Some(&spec(LinkProto::Quic, None))),
            Admission::Accept(0),
            "QUIC encrypts by itself"
        );
        assert_eq!(
            Admission::for_stream("a-b", LinkProto::Tcp, Some(&spec(LinkProto::Udp, None))),
            Admission::Refuse("link `a-b` is not a tcp link that waits here".into())
        );
        assert_eq!(
            Admission::for_stream(
                "a-b",
                LinkProto::Tcp,
                Some(&spec(LinkProto::Tcp, Some("10.0.0.1:7400")))
            ),
            Admission::Refuse("link `a-b` is not a tcp link that waits here".into())
        );
        assert_eq!(
            Admission::for_stream("a-b", LinkProto::Tcp, None),
            Admission::Refuse("no link `a-b` here".into())
        );
    }

    #[test]
    fn a_stream_must_open_with_a_hello() {
        let now = Instant::now();
        let mut rng = entropy(4);
        let mut i = LinkSession::dial(&creds("a"), &name("l"), 0, [0; 32], Policy::tcp(), now, &mut rng);
        let hello = drain(&mut i, now).remove(0);
        let (h, p) = wire::decode_datagram(&hello).expect("valid");
        assert_eq!(opening_hello(&h, p).map(|h| h.link), Ok(name("l")));
        let proof = message(Kind::Proof, 0, &[0; 32]);
        let (h, p) = wire::decode_datagram(&proof).expect("valid");
        assert_eq!(opening_hello(&h, p), Err(Lost::Unexpected(Kind::Proof)));
        let junk = message(Kind::Hello, 0, &[0xff; 40]);
        let (h, p) = wire::decode_datagram(&junk).expect("valid");
        assert!(matches!(
            opening_hello(&h, p),
            Err(Lost::Handshake(HandshakeError::Malformed(_)))
        ));
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_restarts_after_a_session() {
        let mut b = Backoff::default();
        let ms = |d: Duration| d.as_millis();
        let pauses: Vec<u128> = (0..6).map(|_| ms(b.pause(false))).collect();
        assert_eq!(pauses, [50, 100, 200, 400, 500, 500]);
        assert_eq!(ms(b.pause(true)), 50);
        assert_eq!(ms(b.pause(false)), 100);
    }

    /// What the pipe does with one message.
    #[derive(Clone, Copy, Debug)]
    enum Fate {
        Deliver,
        Drop,
        Duplicate,
        /// Held back until after the next message.
        Delay,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            6 => Just(Fate::Deliver),
            2 => Just(Fate::Drop),
            1 => Just(Fate::Duplicate),
            1 => Just(Fate::Delay),
        ]
    }

    /// Runs a datagram handshake for 5 s of virtual time with the fates given, cycling;
    /// returns whether both ends came up.
    fn lossy_handshake(fates: &[Fate], seed: u64) -> bool {
        let mut now = Instant::now();
        let mut rng = entropy(seed);
        let (a, b) = (creds("host-a"), creds("host-b"));
        let mut i = LinkSession::dial(&a, &name("a-b"), 0, [0; 32], Policy::udp(), now, &mut rng);
        let mut r: Option<LinkSession> = None;
        let mut held: Option<(bool, Vec<u8>)> = None;
        let mut n = 0usize;
        let end = now + Duration::from_secs(5);
        while now < end {
            now += Duration::from_millis(5);
            if i.poll_timeout().is_some_and(|t| t <= now) {
                i.handle_timeout(now);
            }
            if let Some(r) = r.as_mut() {
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now);
                }
            }
            let mut out: Vec<(bool, Vec<u8>)> = drain(&mut i, now).into_iter().map(|m| (true, m)).collect();
            if let Some(r) = r.as_mut() {
                out.extend(drain(r, now).into_iter().map(|m| (false, m)));
            }
            let mut deliver = Vec::new();
            for m in out {
                let f = fates
                    .get(n % fates.len().max(1))
                    .copied()
                    .unwrap_or(Fate::Deliver);
                n += 1;
                match f {
                    Fate::Deliver => deliver.push(m),
                    Fate::Drop => {}
                    Fate::Duplicate => {
                        deliver.push(m.clone());
                        deliver.push(m);
                    }
                    Fate::Delay => {
                        if let Some(h) = held.replace(m) {
                            deliver.push(h);
                        }
                    }
                }
            }
            for (to_r, m) in deliver {
                if to_r {
                    let hello = wire::decode_datagram(&m)
                        .ok()
                        .filter(|(h, _)| h.kind == Kind::Hello)
                        .and_then(|(_, p)| handshake::decode_hello(p).ok());
                    // The first Hello (or one after the responder gave up) opens it.
                    let opens = r.as_ref().is_none_or(LinkSession::is_closed);
                    match (r.as_mut(), hello) {
                        (_, Some(h)) if opens => {
                            r = Some(LinkSession::respond(
                                &b,
                                &h,
                                Admission::Accept(0),
                                [0; 32],
                                Policy::udp(),
                                now,
                                &mut rng,
                            ))
                        }
                        (Some(s), _) => {
                            s.handle_input(&m, now);
                        }
                        (None, _) => {}
                    }
                } else {
                    i.handle_input(&m, now);
                }
            }
            if i.is_closed() {
                // The endpoint would start again; here the test stops.
                return false;
            }
        }
        i.up_id().is_some() && r.is_some_and(|r| r.up_id() == i.up_id())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_in_any_phase(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
            kinds in proptest::collection::vec(0u8..9, 0..20),
            stream in any::<bool>(),
        ) {
            let now = Instant::now();
            let policy = if stream { Policy::tcp() } else { Policy::udp() };
            let (mut i, mut r) = pair(policy, now);
            let (mut ui, mut ur) = pair(policy, now);
            pump(&mut ui, &mut ur, now, |_, _| true);
            for (n, m) in msgs.iter().enumerate() {
                // Raw bytes, and the same bytes as the payload of a well-formed header.
                let kind = Kind::from_byte(kinds.get(n).copied().unwrap_or(1)).unwrap_or(Kind::Frame);
                let framed = message(kind, ui.up_id().unwrap_or(0), m);
                for s in [&mut i, &mut r, &mut ui, &mut ur] {
                    let _ = s.handle_input(m, now);
                    let _ = s.handle_input(&framed, now);
                    s.handle_timeout(now + Duration::from_millis(n as u64 * 300));
                    drain(s, now);
                    events(s);
                }
            }
        }

        #[test]
        fn loss_duplication_and_reordering_never_panic(
            fates in proptest::collection::vec(fate(), 1..40),
            seed in any::<u64>(),
        ) {
            let _ = lossy_handshake(&fates, seed);
        }

        #[test]
        fn a_reliable_pipe_always_completes_the_handshake(seed in any::<u64>(), stream in any::<bool>()) {
            prop_assert!(lossy_handshake(&[Fate::Deliver], seed));
            let now = Instant::now();
            let policy = if stream { Policy::tcp() } else { Policy::udp() };
            let mut rng = entropy(seed);
            let mut i = LinkSession::dial(&creds("x"), &name("l"), 0, [0; 32], policy, now, &mut rng);
            let hello = hello_of(&drain(&mut i, now)[0]);
            let mut r = LinkSession::respond(&creds("y"), &hello, Admission::Accept(0), [0; 32], policy, now, &mut rng);
            pump(&mut i, &mut r, now, |_, _| true);
            prop_assert!(i.up_id().is_some());
            prop_assert_eq!(i.up_id(), r.up_id());
        }
    }
}
