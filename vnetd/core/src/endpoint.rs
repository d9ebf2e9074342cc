//! Every UDP link of a daemon over its one socket, sans-IO: the links' current sessions
//! and half-open responders, and the demultiplexing of datagrams among them.
//!
//! One datagram goes to one session, chosen by:
//!
//! - Hello: the link it names (a waiting link answers it with a new half-open responder;
//!   a retransmitted Hello gets its Challenge again);
//! - Challenge, Welcome, Refused: the peer address of a dialing link and the phase of its
//!   handshake (and the session id for Welcome);
//! - Proof: address and session id of a half-open responder, or of an up session whose
//!   Welcome got lost;
//! - Frame, Keepalive: address and session id of an up session;
//! - Reset: address and session id of an up session, or of a dialing link awaiting its
//!   Welcome.
//!
//! A Frame, Keepalive or Proof for a session nobody knows (the peer restarted) earns a
//! rate-limited Reset, upon which a dialing end handshakes again at once.
//!
//! A new handshake for a link that is up never tears it down: the half-open responder
//! replaces the session only once its peer has proven the key. A link holds up to
//! [`HALF_OPEN_PER_LINK`] half-open responders at once, so one Hello cannot displace
//! another's handshake. A dialing link's session is replaced by a fresh handshake as soon
//! as it ends (lost, reset, timed out).
//!
//! The calling contract is the session's ([`crate::session`]): after each
//! [`Endpoint::handle_datagram`] that is not a frame, and after
//! [`Endpoint::handle_timeout`], drain [`Endpoint::poll_transmit`] and
//! [`Endpoint::poll_event`] before the next datagram, so that a replaced session's keys
//! are never used for the new one's frames.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::forward::DropReason;
use crate::handshake::{self, Challenge, Hello};
use crate::name::Name;
use crate::session::{refusal, Admission, Credentials, Entropy, Event, Input, LinkSession, Phase, Policy};
use crate::wire::{self, Header, Kind};

/// Half-open responders a link keeps at once; a further Hello displaces the oldest.
pub const HALF_OPEN_PER_LINK: usize = 4;
/// Resets sent per [`RESET_WINDOW`] at most, so garbage cannot make us a traffic
/// amplifier.
pub const RESETS_PER_WINDOW: u32 = 8;
/// See [`RESETS_PER_WINDOW`].
pub const RESET_WINDOW: Duration = Duration::from_millis(50);

/// A link of the endpoint; its index is stable while the link exists (a removed link's
/// index is reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkId(u32);

impl LinkId {
    /// The index, for a driver keeping its own per-link state in a vector.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What became of a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A frame of an up session of `link`, for the driver to open and forward.
    Frame {
        /// The link.
        link: LinkId,
        /// The message header (flags, hop limit).
        header: Header,
        /// The payload, still sealed if the link encrypts.
        payload: &'a [u8],
    },
    /// Taken by a session, or a stray that is ignored.
    Consumed,
    /// Dropped; count it under this reason.
    Dropped(DropReason),
}

/// A datagram to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub to: SocketAddr,
    /// The link whose session sends it (`None` for a Reset or a refusal of no link).
    pub link: Option<LinkId>,
    /// Its kind.
    pub kind: Kind,
}

/// What happened on the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointEvent {
    /// The link concerned (`None`: a Hello for a link that is not here was refused).
    pub link: Option<LinkId>,
    /// The peer address concerned.
    pub peer: SocketAddr,
    /// What happened, in a session's terms with a link's meaning:
    /// [`Event::Established`] is the link's new session (it replaces one that was up);
    /// [`Event::Lost`] is the end of the link's up session. Handshakes that fail are
    /// retried or forgotten without a `Lost`. [`Event::Proven`] never occurs.
    pub event: Event,
}

/// One received datagram, decoded.
#[derive(Clone, Copy)]
struct Received<'a> {
    from: SocketAddr,
    header: Header,
    payload: &'a [u8],
    now: Instant,
}

/// A session on one peer address.
#[derive(Debug)]
struct Path {
    addr: SocketAddr,
    session: LinkSession,
    /// It came up ([`Event::Established`] was seen).
    up: bool,
}

#[derive(Debug)]
struct Link {
    name: Name,
    /// Address to dial; `None` waits for the peer.
    peer: Option<SocketAddr>,
    caps: u32,
    /// A dialing link's handshake or up session; a waiting link's up session.
    current: Option<Path>,
    /// A waiting link's responders whose peers have not proven the key yet.
    half_open: Vec<Path>,
}

/// At most [`RESETS_PER_WINDOW`] Resets per [`RESET_WINDOW`].
#[derive(Debug, Default)]
struct ResetBudget {
    window: Option<Instant>,
    sent: u32,
}

impl ResetBudget {
    fn allow(&mut self, now: Instant) -> bool {
        if self.window.is_none_or(|start| now >= start + RESET_WINDOW) {
            self.window = Some(now);
            self.sent = 0;
        }
        if self.sent < RESETS_PER_WINDOW {
            self.sent += 1;
            true
        } else {
            false
        }
    }
}

/// The UDP links of a daemon and their sessions.
pub struct Endpoint {
    creds: Credentials,
    entropy: Box<dyn Entropy + Send>,
    links: Vec<Option<Link>>,
    resets: ResetBudget,
    /// Messages of no session (Resets, refusals) and last words of ended ones.
    outbox: VecDeque<(Transmit, Vec<u8>)>,
    events: VecDeque<EndpointEvent>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("node", &self.creds.node)
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with no links, drawing its randomness from `entropy`.
    pub fn new(creds: Credentials, entropy: Box<dyn Entropy + Send>) -> Endpoint {
        Endpoint {
            creds,
            entropy,
            links: Vec::new(),
            resets: ResetBudget::default(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Adds link `name`, which dials `peer` (its Hello is the next transmit) or waits for
    /// the peer when `None`, asking for `caps`. A link of that name already here is
    /// removed first.
    pub fn add_link(&mut self, name: &Name, peer: Option<SocketAddr>, caps: u32, now: Instant) -> LinkId {
        if let Some(old) = self.find(name) {
            self.remove_link(old);
        }
        let index = match self.links.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.links.push(None);
                self.links.len() - 1
            }
        };
        let mut link = Link {
            name: name.clone(),
            peer,
            caps,
            current: None,
            half_open: Vec::new(),
        };
        link.current = link.dial(&self.creds, now, &mut *self.entropy);
        if let Some(slot) = self.links.get_mut(index) {
            *slot = Some(link);
        }
        // Fewer than u32::MAX links exist: a daemon's config cannot hold that many.
        LinkId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// Removes a link and its sessions (what they had still to send is dropped).
    pub fn remove_link(&mut self, id: LinkId) {
        if let Some(slot) = self.links.get_mut(id.index()) {
            *slot = None;
        }
    }

    /// The link named `name`.
    pub fn find(&self, name: &str) -> Option<LinkId> {
        self.links
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.name == name))
            .and_then(|i| u32::try_from(i).ok())
            .map(LinkId)
    }

    /// Takes one datagram from `from`. A frame of an up session comes back as
    /// [`Datagram::Frame`], without a copy or an allocation.
    pub fn handle_datagram<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &'a [u8],
        now: Instant,
    ) -> Datagram<'a> {
        let bad = Datagram::Dropped(DropReason::BadMessage);
        let Ok((header, payload)) = wire::decode_datagram(datagram) else {
            return bad;
        };
        let m = Received {
            from,
            header,
            payload,
            now,
        };
        // Handshake payloads that do not decode are bad whoever they are for.
        match header.kind {
            Kind::Frame | Kind::Keepalive => self.on_session_message(m),
            Kind::Hello => handshake::decode_hello(payload).map_or(bad, |h| self.on_hello(m, &h)),
            Kind::Challenge => handshake::decode_challenge(payload).map_or(bad, |c| self.on_challenge(m, &c)),
            Kind::Proof => handshake::decode_proof(payload).map_or(bad, |_| self.on_proof(m)),
            Kind::Welcome => {
                let at = self.dialing(from, |p| p == Phase::AwaitWelcome(header.session));
                self.deliver_current(at.first().copied(), m)
            }
            Kind::Reset => {
                let at = self.up_path(from, header.session).or_else(|| {
                    let awaiting = self.dialing(from, |p| p == Phase::AwaitWelcome(header.session));
                    awaiting.first().copied()
                });
                self.deliver_current(at, m)
            }
            Kind::Refused => {
                for i in self.dialing(from, |p| {
                    matches!(p, Phase::AwaitChallenge | Phase::AwaitWelcome(_))
                }) {
                    self.deliver_current(Some(i), m);
                }
                Datagram::Consumed
            }
        }
    }

    /// The link whose up session is `id` with the peer at `from`.
    fn up_path(&self, from: SocketAddr, id: u32) -> Option<usize> {
        self.links.iter().position(|l| {
            l.as_ref()
                .and_then(|l| l.current.as_ref())
                .is_some_and(|p| p.addr == from && p.session.up_id() == Some(id))
        })
    }

    /// The dialing links to `from` whose session is in a phase `phase` accepts.
    fn dialing(&self, from: SocketAddr, phase: impl Fn(Phase) -> bool) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&i| {
                self.link(i).is_some_and(|l| {
                    l.peer == Some(from) && l.current.as_ref().is_some_and(|p| phase(p.session.phase()))
                })
            })
            .collect()
    }

    fn link(&self, i: usize) -> Option<&Link> {
        self.links.get(i).and_then(Option::as_ref)
    }

    fn link_mut(&mut self, i: usize) -> Option<&mut Link> {
        self.links.get_mut(i).and_then(Option::as_mut)
    }

    fn on_session_message<'a>(&mut self, m: Received<'a>) -> Datagram<'a> {
        let (from, header, now) = (m.from, m.header, m.now);
        let Some(i) = self.up_path(from, header.session) else {
            return self.reset(from, header.session, now);
        };
        if header.kind == Kind::Frame {
            // The hot path: no event can follow a frame, so nothing needs settling.
            if let Some(path) = self.link_mut(i).and_then(|l| l.current.as_mut()) {
                if let Input::Frame(payload) = path.session.handle_message(header, m.payload, now) {
                    return Datagram::Frame {
                        link: LinkId(i as u32),
                        header,
                        payload,
                    };
                }
            }
            return Datagram::Consumed;
        }
        self.deliver_current(Some(i), m)
    }

    /// A message for session `id`, which nobody here knows (the peer restarted, or this
    /// end did): answered by a rate-limited Reset naming it, dropped as `no_session`.
    fn reset<'a>(&mut self, from: SocketAddr, id: u32, now: Instant) -> Datagram<'a> {
        if self.resets.allow(now) {
            let mut reset = Vec::with_capacity(wire::HEADER_LEN);
            // An empty payload always fits.
            let _ = wire::encode_message(Kind::Reset, 0, id, &[], &mut reset);
            self.outbox.push_back((transmit(from, None, Kind::Reset), reset));
        }
        Datagram::Dropped(DropReason::NoSession)
    }

    /// Hands a message to link `i`'s current session and settles what follows.
    fn deliver_current<'a>(&mut self, i: Option<usize>, m: Received<'a>) -> Datagram<'a> {
        let Some(i) = i else {
            return Datagram::Consumed;
        };
        let input = match self.link_mut(i).and_then(|l| l.current.as_mut()) {
            Some(path) => path.session.handle_message(m.header, m.payload, m.now),
            None => Input::Consumed,
        };
        self.settle(i, m.now);
        datagram(input, i, m.header)
    }

    fn on_hello<'a>(&mut self, m: Received<'a>, hello: &Hello) -> Datagram<'a> {
        let (from, header, now) = (m.from, m.header, m.now);
        let Some(i) = self.find(&hello.link).map(LinkId::index) else {
            let (reason, msg) = refusal(&format!("no udp link `{}` here", hello.link));
            self.outbox.push_back((transmit(from, None, Kind::Refused), msg));
            self.events.push_back(EndpointEvent {
                link: None,
                peer: from,
                event: Event::Refused(reason),
            });
            return Datagram::Consumed;
        };
        let Endpoint {
            creds,
            entropy,
            links,
            ..
        } = self;
        let Some(link) = links.get_mut(i).and_then(Option::as_mut) else {
            return Datagram::Consumed;
        };
        // A retransmitted Hello: the responder answering it sends its Challenge again.
        if let Some(path) = link
            .half_open
            .iter_mut()
            .find(|p| p.addr == from && p.session.answers(hello))
        {
            let input = path.session.handle_message(header, m.payload, now);
            self.settle(i, now);
            return datagram(input, i, header);
        }
        let admission = match link.peer {
            Some(_) => Admission::Refuse(format!("link `{}` dials from here; it does not wait", hello.link)),
            None => Admission::Accept(link.caps),
        };
        let session = LinkSession::respond(
            creds,
            hello,
            admission,
            [0; 32],
            Policy::udp(),
            now,
            &mut **entropy,
        );
        link.half_open.push(Path {
            addr: from,
            session,
            up: false,
        });
        self.settle(i, now);
        if let Some(link) = self.link_mut(i) {
            // An up session stays up meanwhile: only a proven peer replaces it.
            let excess = link.half_open.len().saturating_sub(HALF_OPEN_PER_LINK);
            link.half_open.drain(..excess);
        }
        Datagram::Consumed
    }

    fn on_challenge<'a>(&mut self, m: Received<'a>, challenge: &Challenge) -> Datagram<'a> {
        // A Challenge names no link: among several handshakes to the same address, it
        // belongs to the one whose proof it verifies (else the first reports it).
        let candidates = self.dialing(m.from, |p| p == Phase::AwaitChallenge);
        let pick = match candidates.as_slice() {
            [only] => Some(*only),
            _ => candidates
                .iter()
                .copied()
                .find(|&i| {
                    self.link(i)
                        .and_then(|l| l.current.as_ref())
                        .is_some_and(|p| p.session.verifies(challenge))
                })
                .or(candidates.first().copied()),
        };
        self.deliver_current(pick, m)
    }

    fn on_proof<'a>(&mut self, m: Received<'a>) -> Datagram<'a> {
        let (from, header, now) = (m.from, m.header, m.now);
        if let Some(i) = self.up_path(from, header.session) {
            return self.deliver_current(Some(i), m);
        }
        let found = self.links.iter_mut().enumerate().find_map(|(i, l)| {
            let l = l.as_mut()?;
            let path = l
                .half_open
                .iter_mut()
                .find(|p| p.addr == from && p.session.phase() == Phase::AwaitProof(header.session))?;
            Some((i, path.session.handle_message(header, m.payload, now)))
        });
        match found {
            Some((i, input)) => {
                self.settle(i, now);
                datagram(input, i, header)
            }
            // This end restarted (or displaced the responder) after its Challenge: the
            // Reset makes the dialing end start over instead of waiting out its deadline.
            None => self.reset(from, header.session, now),
        }
    }

    /// Runs the timers due at `now` (handshake deadlines, retransmissions, keepalives,
    /// dead peers) of every session.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.links.len() {
            let Some(link) = self.link_mut(i) else {
                continue;
            };
            for path in link.current.iter_mut().chain(link.half_open.iter_mut()) {
                if path.session.poll_timeout().is_some_and(|t| t <= now) {
                    path.session.handle_timeout(now);
                }
            }
            self.settle(i, now);
        }
    }

    /// When [`Endpoint::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .iter()
            .flatten()
            .flat_map(|l| l.current.iter().chain(l.half_open.iter()))
            .filter_map(|p| p.session.poll_timeout())
            .min()
    }

    /// The next datagram to send, written into `buf` (replacing what it held).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some((t, msg)) = self.outbox.pop_front() {
            buf.clear();
            buf.extend_from_slice(&msg);
            return Some(t);
        }
        for (i, link) in self.links.iter_mut().enumerate() {
            let Some(link) = link else { continue };
            for path in link.current.iter_mut().chain(link.half_open.iter_mut()) {
                if let Some(kind) = path.session.poll_transmit(now, buf) {
                    return Some(transmit(path.addr, Some(LinkId(i as u32)), kind));
                }
            }
        }
        None
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// Collects the events of link `i`'s sessions after an input: promotes a half-open
    /// responder whose peer proved the key, forgets ended handshakes (keeping their last
    /// words, e.g. a Refused), and starts a dialing link's next handshake when its session
    /// ended.
    fn settle(&mut self, i: usize, now: Instant) {
        let Endpoint {
            creds,
            entropy,
            links,
            outbox,
            events,
            ..
        } = self;
        let Some(link) = links.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let id = LinkId(i as u32);
        let mut report = |peer: SocketAddr, event: Event| {
            events.push_back(EndpointEvent {
                link: Some(id),
                peer,
                event,
            })
        };
        let mut k = 0;
        while let Some(path) = link.half_open.get_mut(k) {
            let mut ended = false;
            while let Some(event) = path.session.poll_event() {
                match event {
                    Event::Established(_) => path.up = true,
                    Event::Lost(_) => ended = true,
                    _ => {}
                }
                if !matches!(event, Event::Lost(_)) {
                    report(path.addr, event);
                }
            }
            if ended {
                let path = link.half_open.remove(k);
                last_words(path, id, now, outbox);
            } else if path.up {
                // The peer proved the key: this session replaces the link's (the one
                // that was up, if any, ends here without a word).
                let path = link.half_open.remove(k);
                link.current = Some(path);
            } else {
                k += 1;
            }
        }
        let Some(path) = link.current.as_mut() else {
            return;
        };
        let mut ended = false;
        while let Some(event) = path.session.poll_event() {
            match &event {
                Event::Established(_) => path.up = true,
                Event::Lost(_) => ended = true,
                _ => {}
            }
            // Only the end of an up session is the link's news; a failed handshake is
            // simply tried again.
            if !matches!(event, Event::Lost(_)) || path.up {
                report(path.addr, event);
            }
        }
        if ended {
            if let Some(path) = link.current.take() {
                last_words(path, id, now, outbox);
            }
            link.current = link.dial(creds, now, &mut **entropy);
        }
    }
}

impl Link {
    /// A new handshake, if this link dials.
    fn dial(&self, creds: &Credentials, now: Instant, entropy: &mut dyn Entropy) -> Option<Path> {
        let addr = self.peer?;
        let session = LinkSession::dial(creds, &self.name, self.caps, [0; 32], Policy::udp(), now, entropy);
        Some(Path {
            addr,
            session,
            up: false,
        })
    }
}

/// Keeps what an ended session still had to send.
fn last_words(mut path: Path, link: LinkId, now: Instant, outbox: &mut VecDeque<(Transmit, Vec<u8>)>) {
    let mut buf = Vec::new();
    while let Some(kind) = path.session.poll_transmit(now, &mut buf) {
        outbox.push_back((transmit(path.addr, Some(link), kind), std::mem::take(&mut buf)));
    }
}

fn transmit(to: SocketAddr, link: Option<LinkId>, kind: Kind) -> Transmit {
    Transmit { to, link, kind }
}

fn datagram(input: Input<'_>, i: usize, header: Header) -> Datagram<'_> {
    match input {
        Input::Frame(payload) => Datagram::Frame {
            link: LinkId(i as u32),
            header,
            payload,
        },
        Input::Consumed => Datagram::Consumed,
        Input::Dropped(reason) => Datagram::Dropped(reason),
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "the tests take one base instant for their virtual time; every step is an offset from it"
)]
mod tests {
    use super::*;
    use crate::handshake::HandshakeError;
    use crate::name::name;
    use crate::session::testing::{creds, creds_with_key, entropy};
    use crate::session::{Lost, DEAD_AFTER};
    use proptest::prelude::*;

    fn addr(host: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, host], 7400))
    }

    /// A frame's payload, or why not (`None`: consumed).
    type Outcome = Result<Vec<u8>, Option<DropReason>>;

    /// A datagram on the virtual network.
    #[derive(Clone, Debug)]
    struct Packet {
        at: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    }

    /// Endpoints at addresses, a one-way delay, and what each endpoint reported.
    struct Net {
        now: Instant,
        delay: Duration,
        nodes: Vec<(SocketAddr, Endpoint)>,
        in_flight: Vec<Packet>,
        events: Vec<(SocketAddr, EndpointEvent)>,
        /// What receivers returned for each delivered datagram (frames as their payload).
        results: Vec<(SocketAddr, Kind, Outcome)>,
        /// Decides each datagram's fate: true delivers it.
        filter: Box<dyn FnMut(&Packet) -> bool>,
        sent: Vec<Packet>,
    }

    impl Net {
        fn new() -> Net {
            Net {
                now: Instant::now(),
                delay: Duration::from_millis(1),
                nodes: Vec::new(),
                in_flight: Vec::new(),
                events: Vec::new(),
                results: Vec::new(),
                filter: Box::new(|_| true),
                sent: Vec::new(),
            }
        }

        fn node(&mut self, host: u8, name: &str, seed: u64) -> usize {
            self.node_with(addr(host), creds(name), seed)
        }

        fn node_with(&mut self, at: SocketAddr, c: Credentials, seed: u64) -> usize {
            self.nodes.retain(|(a, _)| *a != at);
            self.nodes.push((at, Endpoint::new(c, Box::new(entropy(seed)))));
            self.nodes.len() - 1
        }

        fn ep(&mut self, n: usize) -> &mut Endpoint {
            &mut self.nodes[n].1
        }

        fn collect(&mut self) {
            let mut buf = Vec::new();
            for (at, ep) in &mut self.nodes {
                while let Some(t) = ep.poll_transmit(self.now, &mut buf) {
                    let p = Packet {
                        at: self.now + self.delay,
                        from: *at,
                        to: t.to,
                        bytes: buf.clone(),
                    };
                    self.sent.push(p.clone());
                    if (self.filter)(&p) {
                        self.in_flight.push(p);
                    }
                }
                while let Some(e) = ep.poll_event() {
                    self.events.push((*at, e));
                }
            }
        }

        /// Injects a datagram from `from` (an attacker, a restarted peer).
        fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
            self.in_flight.push(Packet {
                at: self.now,
                from,
                to,
                bytes,
            });
            self.step(Duration::ZERO);
        }

        /// Delivers what is due, runs timers, collects output; for `span` in 1 ms steps.
        fn step(&mut self, span: Duration) {
            let end = self.now + span;
            loop {
                self.collect();
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                    .into_iter()
                    .partition(|p| p.at <= self.now);
                self.in_flight = later;
                for p in due {
                    let Some((_, ep)) = self.nodes.iter_mut().find(|(a, _)| *a == p.to) else {
                        continue;
                    };
                    let kind = wire::decode_datagram(&p.bytes).map_or(Kind::Frame, |(h, _)| h.kind);
                    let r = match ep.handle_datagram(p.from, &p.bytes, self.now) {
                        Datagram::Frame { payload, .. } => Ok(payload.to_vec()),
                        Datagram::Consumed => Err(None),
                        Datagram::Dropped(d) => Err(Some(d)),
                    };
                    self.results.push((p.to, kind, r));
                    self.collect();
                }
                for (_, ep) in &mut self.nodes {
                    if ep.poll_timeout().is_some_and(|t| t <= self.now) {
                        ep.handle_timeout(self.now);
                    }
                }
                self.collect();
                if self.now >= end {
                    return;
                }
                self.now += Duration::from_millis(1);
            }
        }

        /// The session ids each node's links came up with, in order.
        fn ups(&self, at: SocketAddr) -> Vec<u32> {
            self.events
                .iter()
                .filter(|(a, _)| *a == at)
                .filter_map(|(_, e)| match &e.event {
                    Event::Established(s) => Some(s.id),
                    _ => None,
                })
                .collect()
        }

        fn losses(&self, at: SocketAddr) -> Vec<Lost> {
            self.events
                .iter()
                .filter(|(a, _)| *a == at)
                .filter_map(|(_, e)| match &e.event {
                    Event::Lost(l) => Some(l.clone()),
                    _ => None,
                })
                .collect()
        }

        /// The last datagram sent to `to`.
        fn last_to(&self, to: SocketAddr) -> Vec<u8> {
            self.sent
                .iter()
                .rev()
                .find(|p| p.to == to)
                .map(|p| p.bytes.clone())
                .unwrap_or_else(|| panic!("nothing was sent to {to}"))
        }

        fn drops(&self, at: SocketAddr, reason: DropReason) -> usize {
            self.results
                .iter()
                .filter(|(a, _, r)| *a == at && *r == Err(Some(reason)))
                .count()
        }
    }

    fn frame(session: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        wire::encode_frame(9, session, 0, &[payload], &mut m).expect("fits");
        m
    }

    fn message(kind: Kind, session: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        wire::encode_message(kind, 0, session, payload, &mut m).expect("fits");
        m
    }

    /// h1 dials link "h0-h1" to the proxy h0, which waits; both are up after `step`.
    fn up_pair() -> (Net, u32) {
        let mut net = Net::new();
        let (h0, h1) = (net.node(0, "h0", 1), net.node(1, "h1", 2));
        let now = net.now;
        net.ep(h0).add_link(&name("h0-h1"), None, 0, now);
        net.ep(h1).add_link(&name("h0-h1"), Some(addr(0)), 0, now);
        net.step(Duration::from_millis(20));
        let ids = net.ups(addr(1));
        assert_eq!(ids.len(), 1, "{:?}", net.events);
        assert_eq!(net.ups(addr(0)), ids);
        (net, ids[0])
    }

    #[test]
    fn a_dialed_link_comes_up_and_carries_frames_both_ways() {
        let (mut net, id) = up_pair();
        let link0 = net.ep(0).find("h0-h1").expect("link");
        let up = net.events.iter().find(|(a, _)| *a == addr(0)).expect("event");
        assert_eq!((up.1.link, up.1.peer), (Some(link0), addr(1)));
        net.inject(addr(1), addr(0), frame(id, b"to h0"));
        net.inject(addr(0), addr(1), frame(id, b"to h1"));
        let frames: Vec<_> = net
            .results
            .iter()
            .filter_map(|(a, _, r)| r.as_ref().ok().map(|p| (*a, p.clone())))
            .collect();
        assert_eq!(
            frames,
            vec![(addr(0), b"to h0".to_vec()), (addr(1), b"to h1".to_vec())]
        );
        // Keepalives flow and measure; nobody dies while both talk.
        net.step(Duration::from_secs(12));
        assert!(net.losses(addr(0)).is_empty() && net.losses(addr(1)).is_empty());
        let rtts = net
            .events
            .iter()
            .filter(|(_, e)| matches!(e.event, Event::Rtt(_)))
            .count();
        assert!(rtts > 20, "{rtts}");
    }

    #[test]
    fn lost_datagrams_are_retransmitted() {
        let mut net = Net::new();
        let (h0, h1) = (net.node(0, "h0", 1), net.node(1, "h1", 2));
        // The first Hello, the first Challenge and the first Proof are lost.
        let mut seen = Vec::new();
        net.filter = Box::new(move |p| {
            let kind = wire::decode_datagram(&p.bytes).map(|(h, _)| h.kind).ok();
            let first = !seen.contains(&kind);
            seen.push(kind);
            !(first && matches!(kind, Some(Kind::Hello | Kind::Challenge | Kind::Proof)))
        });
        let now = net.now;
        net.ep(h0).add_link(&name("h0-h1"), None, 0, now);
        net.ep(h1).add_link(&name("h0-h1"), Some(addr(0)), 0, now);
        net.step(Duration::from_secs(2));
        assert_eq!(net.ups(addr(0)).len(), 1, "{:?}", net.events);
        assert_eq!(net.ups(addr(1)), net.ups(addr(0)));
        // A retransmitted Hello got the same Challenge, not a second half-open session.
        let challenges: Vec<_> = net
            .sent
            .iter()
            .filter(|p| p.from == addr(0) && p.bytes[3] == Kind::Challenge.to_byte())
            .map(|p| p.bytes.clone())
            .collect();
        assert!(challenges.len() >= 2 && challenges.iter().all(|c| *c == challenges[0]));
    }

    #[test]
    fn unknown_sessions_earn_rate_limited_resets() {
        let mut net = Net::new();
        let h0 = net.node(0, "h0", 1);
        let now = net.now;
        net.ep(h0).add_link(&name("h0-h1"), None, 0, now);
        for i in 0..20 {
            net.in_flight.push(Packet {
                at: now,
                from: addr(9),
                to: addr(0),
                bytes: frame(1000 + i, b"junk"),
            });
        }
        net.step(Duration::ZERO);
        let resets = |net: &Net| {
            net.sent
                .iter()
                .filter(|p| p.from == addr(0) && p.bytes[3] == Kind::Reset.to_byte())
                .count()
        };
        assert_eq!(net.drops(addr(0), DropReason::NoSession), 20);
        assert_eq!(resets(&net), RESETS_PER_WINDOW as usize);
        // The Reset names the session it is about.
        let first = net
            .sent
            .iter()
            .find(|p| p.bytes[3] == Kind::Reset.to_byte())
            .expect("a reset");
        assert_eq!(
            wire::decode_datagram(&first.bytes).expect("valid").0.session,
            1000
        );
        net.step(RESET_WINDOW);
        net.inject(addr(9), addr(0), message(Kind::Keepalive, 77, &[]));
        assert_eq!(resets(&net), RESETS_PER_WINDOW as usize + 1);
    }

    #[test]
    fn a_reset_makes_the_dialing_end_handshake_again_at_once() {
        let (mut net, old) = up_pair();
        // The proxy restarts: a new endpoint at its address knows no session.
        let h0 = net.node_with(addr(0), creds("h0"), 99);
        let now = net.now;
        net.ep(h0).add_link(&name("h0-h1"), None, 0, now);
        let before = net.now;
        // h1's next keepalive earns a Reset, then it handshakes again.
        net.step(Duration::from_millis(500));
        assert_eq!(net.losses(addr(1)), vec![Lost::Reset]);
        let ids = net.ups(addr(1));
        assert_eq!(ids.len(), 2, "{:?}", net.events);
        assert_ne!(ids[1], old);
        assert_eq!(net.ups(addr(0)), vec![ids[0], ids[1]]);
        // Within a keepalive interval and a round trip, not after DEAD_AFTER.
        let reset_at = net
            .sent
            .iter()
            .find(|p| p.at > before && p.bytes[3] == Kind::Reset.to_byte())
            .expect("reset")
            .at;
        let hello_at = net
            .sent
            .iter()
            .find(|p| p.at >= reset_at && p.bytes[3] == Kind::Hello.to_byte())
            .expect("hello")
            .at;
        assert!(hello_at - reset_at <= 2 * net.delay, "{:?}", hello_at - reset_at);
    }

    #[test]
    fn a_proof_the_responder_lost_earns_a_reset_and_a_new_handshake() {
        let mut net = Net::new();
        let (h0, h1) = (net.node(0, "h0", 1), net.node(1, "h1", 2));
        let now = net.now;
        net.ep(h0).add_link(&name("h0-h1"), None, 0, now);
        // The first Proof is lost; meanwhile the proxy restarts and forgets the Challenge.
        net.filter = Box::new(|p| p.bytes[3] != Kind::Proof.to_byte());
        net.ep(h1).add_link(&name("h0-h1"), Some(addr(0)), 0, now);
        net.step(Duration::from_millis(5));
        let h0 = net.node_with(addr(0), creds("h0"), 99);
        let now = net.now;
        net.ep(h0).add_link(&name("h0-h1"), None, 0, now);
        net.filter = Box::new(|_| true);
        // The retransmitted Proof meets no responder: a Reset, and h1 starts over at once
        // instead of at its 3 s handshake deadline.
        net.step(Duration::from_millis(400));
        let ids = net.ups(addr(1));
        assert_eq!(ids.len(), 1, "{:?}", net.events);
        assert_eq!(net.ups(addr(0)), ids);
        assert_eq!(net.drops(addr(0), DropReason::NoSession), 1);
        let at = |kind: Kind, from: SocketAddr, after: Instant| {
            net.sent
                .iter()
                .find(|p| p.at > after && p.from == from && p.bytes[3] == kind.to_byte())
                .map(|p| p.at)
                .unwrap_or_else(|| panic!("no {kind:?} from {from}"))
        };
        let reset_at = at(Kind::Reset, addr(0), now);
        let hello_at = at(Kind::Hello, addr(1), reset_at);
        assert!(hello_at - reset_at <= 2 * net.delay, "{:?}", hello_at - reset_at);
    }

    #[test]
    fn forged_resets_and_hellos_cannot_cut_a_waiting_ends_session() {
        let (mut net, id) = up_pair();
        // A Reset for the session, even from the peer's own address.
        net.inject(addr(1), addr(0), message(Kind::Reset, id, &[]));
        // A Hello for the link from elsewhere, whose sender then fails to prove the key.
        let mut rng = entropy(5);
        let mut rogue = LinkSession::dial(
            &creds_with_key("h1", [1; 32]),
            &name("h0-h1"),
            0,
            [0; 32],
            Policy::udp(),
            net.now,
            &mut rng,
        );
        let hello = crate::session::testing::drain(&mut rogue, net.now).remove(0);
        net.inject(addr(66), addr(0), hello);
        let challenge = net.last_to(addr(66));
        let (h, _) = wire::decode_datagram(&challenge).expect("valid");
        assert_eq!(h.kind, Kind::Challenge);
        let Phase::AwaitProof(half_open) = net.nodes[0].1.links[0].as_ref().expect("link").half_open[0]
            .session
            .phase()
        else {
            panic!("a half-open responder");
        };
        let forged = crate::session::testing::proof_message(half_open, [9; 32]);
        net.inject(addr(66), addr(0), forged);
        assert_eq!(net.drops(addr(0), DropReason::AuthFailed), 1);
        let refused = net.last_to(addr(66));
        let (h, p) = wire::decode_datagram(&refused).expect("valid");
        assert_eq!(h.kind, Kind::Refused);
        assert_eq!(
            handshake::decode_refused(p).expect("decodes").reason,
            "authentication failed"
        );
        assert!(net.events.iter().any(|(a, e)| *a == addr(0)
            && e.peer == addr(66)
            && e.event == Event::Rejected(HandshakeError::BadProof)));
        // The session is untouched: no loss, no new session, frames still flow.
        assert!(net.losses(addr(0)).is_empty());
        assert_eq!(net.ups(addr(0)), vec![id]);
        net.inject(addr(1), addr(0), frame(id, b"still up"));
        assert_eq!(
            net.results.last().map(|r| r.2.clone()),
            Some(Ok(b"still up".to_vec()))
        );
    }

    #[test]
    fn a_new_handshake_replaces_an_up_session_only_once_proven() {
        let (mut net, old) = up_pair();
        // h1 restarts: its new endpoint dials again; the proxy never heard of a problem.
        let h1 = net.node_with(addr(1), creds("h1"), 42);
        // Hold the new Proof back to look at the proxy in between.
        net.filter = Box::new(|p| p.bytes[3] != Kind::Proof.to_byte());
        let now = net.now;
        net.ep(h1).add_link(&name("h0-h1"), Some(addr(0)), 0, now);
        net.step(Duration::from_millis(5));
        let proof = net
            .sent
            .iter()
            .rev()
            .find(|p| p.bytes[3] == Kind::Proof.to_byte())
            .expect("the new Proof")
            .bytes
            .clone();
        // Meanwhile the old session still carries frames.
        net.inject(addr(1), addr(0), frame(old, b"old"));
        assert_eq!(net.results.last().map(|r| r.2.clone()), Some(Ok(b"old".to_vec())));
        // The Proof arrives: the new session replaces the old one.
        net.filter = Box::new(|_| true);
        net.inject(addr(1), addr(0), proof);
        net.step(Duration::from_millis(5));
        let ups = net.ups(addr(0));
        assert_eq!(ups.len(), 2);
        assert_ne!(ups[1], old);
        assert!(net.losses(addr(0)).is_empty(), "replaced, not lost");
        net.inject(addr(1), addr(0), frame(old, b"old"));
        assert_eq!(
            net.results.last().map(|r| r.2.clone()),
            Some(Err(Some(DropReason::NoSession)))
        );
        net.inject(addr(1), addr(0), frame(ups[1], b"new"));
        assert_eq!(net.results.last().map(|r| r.2.clone()), Some(Ok(b"new".to_vec())));
    }

    #[test]
    fn hellos_are_refused_for_unknown_dialing_and_mismatched_links() {
        let mut net = Net::new();
        let (h0, h1) = (net.node(0, "h0", 1), net.node(1, "h1", 2));
        let now = net.now;
        net.ep(h0).add_link(&name("dials"), Some(addr(5)), 0, now);
        net.ep(h0).add_link(&name("plain"), None, 0, now);
        net.ep(h1).add_link(&name("nowhere"), Some(addr(0)), 0, now);
        net.ep(h1).add_link(&name("dials"), Some(addr(0)), 0, now);
        net.ep(h1)
            .add_link(&name("plain"), Some(addr(0)), handshake::CAP_ENCRYPT, now);
        net.step(Duration::from_millis(20));
        let mut refusals: Vec<String> = net
            .events
            .iter()
            .filter(|(a, _)| *a == addr(1))
            .filter_map(|(_, e)| match &e.event {
                Event::PeerRefused(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        refusals.sort();
        refusals.dedup();
        assert_eq!(
            refusals,
            [
                "link `dials` dials from here; it does not wait",
                "link `plain`: this end does not encrypt it but the dialing end encrypts; set encrypt alike on both",
                "no udp link `nowhere` here",
            ]
        );
        // The proxy reports each refusal; the one of no link has no link id.
        assert!(net.events.iter().any(|(a, e)| *a == addr(0)
            && e.link.is_none()
            && matches!(&e.event, Event::Refused(r) if r.contains("nowhere"))));
        assert!(net.ups(addr(0)).is_empty() && net.ups(addr(1)).is_empty());
    }

    #[test]
    fn a_silent_peer_is_dead_and_a_dialing_link_handshakes_again() {
        let (mut net, _) = up_pair();
        // The proxy vanishes.
        net.nodes.retain(|(a, _)| *a != addr(0));
        net.step(DEAD_AFTER + Duration::from_millis(500));
        let l = net.losses(addr(1));
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].to_string(), "no datagram from the peer for 5s");
        let last_up = net
            .events
            .iter()
            .rposition(|(_, e)| matches!(e.event, Event::Lost(_)))
            .expect("lost");
        let hellos_after = net
            .sent
            .iter()
            .filter(|p| p.from == addr(1) && p.bytes[3] == Kind::Hello.to_byte())
            .count();
        assert!(last_up > 0 && hellos_after >= 2, "it dials again");
    }

    #[test]
    fn a_waiting_link_forgets_a_silent_peer() {
        let (mut net, _) = up_pair();
        net.nodes.retain(|(a, _)| *a != addr(1));
        net.step(DEAD_AFTER + Duration::from_millis(500));
        assert_eq!(net.losses(addr(0)).len(), 1);
        assert_eq!(net.ep(0).poll_timeout(), None, "nothing left to time");
    }

    #[test]
    fn two_links_to_one_address_each_take_their_own_challenge() {
        let mut net = Net::new();
        let (h0, h1) = (net.node(0, "h0", 1), net.node(1, "h1", 2));
        let now = net.now;
        for link in [name("one"), name("two")] {
            net.ep(h0).add_link(&link, None, 0, now);
            net.ep(h1).add_link(&link, Some(addr(0)), 0, now);
        }
        net.step(Duration::from_millis(20));
        assert_eq!(net.ups(addr(1)).len(), 2, "{:?}", net.events);
        assert!(net
            .events
            .iter()
            .all(|(_, e)| !matches!(e.event, Event::Rejected(_))));
    }

    #[test]
    fn removed_links_stop_and_their_slot_is_reused() {
        let (mut net, id) = up_pair();
        let link = net.ep(0).find("h0-h1").expect("link");
        net.ep(0).remove_link(link);
        assert_eq!(net.ep(0).find("h0-h1"), None);
        net.inject(addr(1), addr(0), frame(id, b"gone"));
        assert_eq!(
            net.results.last().map(|r| r.2.clone()),
            Some(Err(Some(DropReason::NoSession)))
        );
        let now = net.now;
        assert_eq!(net.ep(0).add_link(&name("again"), None, 0, now), link);
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(
            datagrams in proptest::collection::vec(
                (0u8..4, proptest::collection::vec(any::<u8>(), 0..120), 0u8..9, any::<bool>()), 0..60),
        ) {
            let (mut net, id) = up_pair();
            for (from, bytes, kind, framed) in datagrams {
                let bytes = match Kind::from_byte(kind) {
                    Some(k) if framed => message(k, if from == 1 { id } else { u32::from(kind) }, &bytes),
                    _ => bytes,
                };
                net.inject(addr(from), addr(0), bytes.clone());
                net.inject(addr(from), addr(1), bytes);
            }
            net.step(Duration::from_secs(1));
        }

        #[test]
        fn lossy_duplicating_reordering_networks_never_panic_and_reliable_ones_come_up(
            fates in proptest::collection::vec(0u8..10, 1..50),
            seed in any::<u64>(),
        ) {
            let mut net = Net::new();
            let (h0, h1) = (net.node(0, "h0", seed), net.node(1, "h1", seed ^ 1));
            let mut n = 0usize;
            let delay = net.delay;
            net.filter = Box::new(move |_| {
                n += 1;
                fates[n % fates.len()] >= 2
            });
            let now = net.now;
            net.ep(h0).add_link(&name("l"), None, 0, now);
            net.ep(h1).add_link(&name("l"), Some(addr(0)), 0, now);
            // Reordering and duplication: every datagram some way late, some twice.
            for _ in 0..200 {
                net.step(Duration::from_millis(10));
                let extra: Vec<Packet> = net.in_flight.iter().step_by(3).cloned().collect();
                for mut p in extra {
                    p.at += delay * 7;
                    net.in_flight.push(p);
                }
            }
            // A reliable network after that: it comes up.
            net.filter = Box::new(|_| true);
            net.step(Duration::from_secs(4));
            prop_assert!(!net.ups(addr(1)).is_empty());
        }
    }
}
