//! Fuzzes everything a link peer controls before it is authenticated: the link frame
//! codec (as a UDP reader and as a TCP reader see it), the handshake payload decoders and
//! the keepalive timestamp payload.
//!
//! Besides "never panics", it checks the properties the daemon relies on: decoded
//! lengths are within bounds, a stream split in arbitrary chunks yields the same messages
//! as the whole stream, and whatever decodes re-encodes to something that decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vnet_core::handshake::{
    decode_challenge, decode_hello, decode_proof, decode_refused, encode_payload,
};
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
