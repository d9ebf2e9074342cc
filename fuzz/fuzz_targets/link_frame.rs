//! Fuzzes everything a link peer controls before it is authenticated: the link frame
//! codec (as a UDP reader and as a TCP reader see it), the handshake payload decoders,
//! the keepalive timestamp payload, and the link lifecycle: a UDP endpoint pair with the
//! input as the network between them (delivering, dropping, duplicating, reordering and
//! injecting datagrams, letting time pass), and stream sessions fed the input as their
//! stream.
//!
//! Besides "never panics", it checks the properties the daemon relies on: decoded
//! lengths are within bounds, a stream split in arbitrary chunks yields the same messages
//! as the whole stream, whatever decodes re-encodes to something that decodes the same,
//! everything a session sends is a valid link message, and refusal reasons are bounded.

#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vnet_core::endpoint::{Datagram, Endpoint};
use vnet_core::handshake::{
    decode_challenge, decode_hello, decode_proof, decode_refused, encode_payload, NetworkKey, MAX_REASON_LEN,
};
use vnet_core::name::Name;
use vnet_core::session::{Admission, Credentials, Event, Input, LinkSession, Policy};
use vnet_core::wire::{decode_datagram, split_stream, Header, KeepaliveStamp, Kind, HEADER_LEN, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    datagram(data);
    let whole = stream_whole(data);
    // Chunk sizes derived from the input, so the fuzzer explores how reads are split.
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    assert_eq!(
        stream_chunked(data, chunk),
        whole,
        "chunking changed the messages"
    );
    assert_eq!(
        stream_chunked(data, 1),
        whole,
        "byte-at-a-time changed the messages"
    );
    payload(None, data);
    endpoints(data);
    stream_sessions(data);
});

/// One UDP datagram.
fn datagram(data: &[u8]) {
    if let Ok((h, p)) = decode_datagram(data) {
        assert_eq!(p.len(), h.len as usize);
        assert!(p.len() <= MAX_PAYLOAD);
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        payload(Some(h.kind), p);
    }
}

/// A message a stream reader extracted: header and payload.
type Message = (Header, Vec<u8>);

/// Splits a whole buffer the way a TCP reader does, until an error or an incomplete
/// message. Returns the messages and whether the stream ended in an error.
fn stream_whole(data: &[u8]) -> (Vec<Message>, bool) {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        match split_stream(rest) {
            Ok(Some((h, total))) => {
                assert!(total >= HEADER_LEN && total <= rest.len());
                assert_eq!(total, HEADER_LEN + h.len as usize);
                let (msg, tail) = rest.split_at(total);
                let body = msg.get(HEADER_LEN..).unwrap_or_default();
                payload(Some(h.kind), body);
                out.push((h, body.to_vec()));
                rest = tail;
            }
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

/// Feeds `data` to a buffering reader `chunk` bytes at a time, consuming each message as
/// soon as it is complete, the way the TCP link driver does.
fn stream_chunked(data: &[u8], chunk: usize) -> (Vec<Message>, bool) {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match split_stream(&buf) {
                Ok(Some((h, total))) => {
                    let body = buf.get(HEADER_LEN..total).unwrap_or_default().to_vec();
                    out.push((h, body));
                    buf.drain(..total);
                }
                Ok(None) => break,
                // The driver closes the connection here: nothing after it is read.
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

/// Handshake and keepalive payload decoders: the one matching `kind`, or all of them
/// when `None`.
/// Whatever decodes must survive a re-encode unchanged.
fn payload(kind: Option<Kind>, p: &[u8]) {
    let all = kind.is_none();
    if all || kind == Some(Kind::Hello) {
        if let Ok(m) = decode_hello(p) {
            assert_eq!(decode_hello(&encode_payload(&m)), Ok(m));
        }
    }
    if all || kind == Some(Kind::Challenge) {
        if let Ok(m) = decode_challenge(p) {
            assert_eq!(decode_challenge(&encode_payload(&m)), Ok(m));
        }
    }
    if all || kind == Some(Kind::Proof) {
        if let Ok(m) = decode_proof(p) {
            assert_eq!(decode_proof(&encode_payload(&m)), Ok(m));
        }
    }
    if all || kind == Some(Kind::Refused) {
        if let Ok(m) = decode_refused(p) {
            assert_eq!(decode_refused(&encode_payload(&m)), Ok(m));
        }
    }
    if all || kind == Some(Kind::Keepalive) {
        if let Ok(Some(k)) = KeepaliveStamp::decode(p) {
            assert_eq!(KeepaliveStamp::decode(&k.encode()), Ok(Some(k)));
        }
    }
}

fn name(text: &str) -> Name {
    text.parse().unwrap()
}

fn creds(node: &str) -> Credentials {
    Credentials {
        node: name(node),
        key: NetworkKey::from_bytes([7; 32]),
    }
}

/// Deterministic entropy: a counter's bytes.
fn counter(seed: u8) -> impl FnMut(&mut [u8]) + Send {
    let mut n = u64::from(seed) << 56;
    move |dest: &mut [u8]| {
        for chunk in dest.chunks_mut(8) {
            n = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
            chunk.copy_from_slice(&n.to_be_bytes()[..chunk.len()]);
        }
    }
}

/// The proxy (waiting), the host dialing it, and a stranger that only injects.
const ADDRS: [SocketAddr; 3] = [
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 7400),
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)), 7400),
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3)), 7400),
];

/// A datagram between the two endpoints: sender index, receiver index, bytes.
type Packet = (usize, usize, Vec<u8>);

/// Checks what a session or endpoint reported.
fn check_event(event: &Event) {
    if let Event::PeerRefused(reason) | Event::Refused(reason) = event {
        assert!(
            reason.len() <= MAX_REASON_LEN,
            "unbounded reason: {} bytes",
            reason.len()
        );
    }
}

/// Moves what both endpoints send into flight (checking each is a valid message) and
/// checks their events.
fn collect(nodes: &mut [Endpoint; 2], now: Instant, in_flight: &mut VecDeque<Packet>) {
    let mut buf = Vec::new();
    for (from, ep) in nodes.iter_mut().enumerate() {
        while let Some(t) = ep.poll_transmit(now, &mut buf) {
            let (header, _) = decode_datagram(&buf).expect("an endpoint sent an invalid datagram");
            assert_eq!(header.kind, t.kind);
            if let Some(to) = ADDRS[..2].iter().position(|a| *a == t.to) {
                in_flight.push_back((from, to, buf.clone()));
            }
        }
        while let Some(e) = ep.poll_event() {
            check_event(&e.event);
        }
    }
}

fn deliver(nodes: &mut [Endpoint; 2], (from, to, bytes): &Packet, now: Instant) {
    if let Datagram::Frame { header, payload, .. } = nodes[*to].handle_datagram(ADDRS[*from], bytes, now) {
        assert_eq!(header.kind, Kind::Frame);
        assert_eq!(payload.len(), header.len as usize);
    }
}

/// Two endpoints whose network the input is: each byte is an action on the datagrams in
/// flight (deliver, drop, duplicate, reorder), an injected datagram cut from the input,
/// or time passing; real handshakes and up sessions meet the garbage in every phase.
fn endpoints(data: &[u8]) {
    let mut now = Instant::now();
    let mut nodes = [
        Endpoint::new(creds("h0"), Box::new(counter(1))),
        Endpoint::new(creds("h1"), Box::new(counter(2))),
    ];
    nodes[0].add_link(&name("l"), None, 0, now);
    nodes[1].add_link(&name("l"), Some(ADDRS[0]), 0, now);
    let mut in_flight: VecDeque<Packet> = VecDeque::new();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        collect(&mut nodes, now, &mut in_flight);
        match op % 6 {
            0 => {
                if let Some(p) = in_flight.pop_front() {
                    deliver(&mut nodes, &p, now);
                }
            }
            1 => {
                in_flight.pop_front();
            }
            2 => {
                if let Some(p) = in_flight.front().cloned() {
                    deliver(&mut nodes, &p, now);
                }
            }
            3 => in_flight.rotate_left(1.min(in_flight.len())),
            4 => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let (bytes, tail) = tail.split_at(usize::from(len).min(tail.len()));
                rest = tail;
                // From either endpoint's address or the stranger's, to either endpoint.
                let from = usize::from(op / 6) % 3;
                let to = usize::from(op / 18) % 2;
                if let Datagram::Frame { header, payload, .. } =
                    nodes[to].handle_datagram(ADDRS[from], bytes, now)
                {
                    assert_eq!(payload.len(), header.len as usize);
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(op) * 20);
                for ep in &mut nodes {
                    if ep.poll_timeout().is_some_and(|t| t <= now) {
                        ep.handle_timeout(now);
                    }
                }
            }
        }
    }
    collect(&mut nodes, now, &mut in_flight);
}

/// A stream initiator and responder fed the input as the stream, message by message as
/// the TCP reader splits it.
fn stream_sessions(data: &[u8]) {
    let now = Instant::now();
    let mut rng = counter(3);
    let mut initiator = LinkSession::dial(&creds("a"), &name("l"), 0, [0; 32], Policy::tcp(), now, &mut rng);
    let mut buf = Vec::new();
    let Some(Kind::Hello) = initiator.poll_transmit(now, &mut buf) else {
        panic!("a dialing session sends its Hello first");
    };
    let hello = decode_datagram(&buf)
        .ok()
        .and_then(|(_, p)| decode_hello(p).ok())
        .expect("a valid Hello");
    let mut responder = LinkSession::respond(
        &creds("b"),
        &hello,
        Admission::Accept(0),
        [0; 32],
        Policy::tcp(),
        now,
        &mut rng,
    );
    let mut rest = data;
    while let Ok(Some((header, len))) = split_stream(rest) {
        let body = rest.get(HEADER_LEN..len).unwrap_or_default();
        for s in [&mut initiator, &mut responder] {
            if let Input::Frame(p) = s.handle_message(header, body, now) {
                assert_eq!(p.len(), body.len());
            }
            s.handle_timeout(now + Duration::from_secs(1));
            while s.poll_transmit(now, &mut buf).is_some() {
                decode_datagram(&buf).expect("a session sent an invalid message");
            }
            while let Some(e) = s.poll_event() {
                check_event(&e);
            }
        }
        rest = rest.get(len..).unwrap_or_default();
    }
}
