//! The link frame codec: the fixed 16-byte header in front of every message on a link.
//!
//! Every message on a link — a TCP stream or one UDP datagram — is a header followed by a
//! payload. The header is hand-written rather than serde-encoded so that its size is
//! fixed, which lets a TCP reader know how much to wait for before it can even decode a
//! length, and lets a UDP sender lay a header in front of a frame without reallocating.
//!
//! ```text
//! offset size field
//! 0      2    magic b"VN"
//! 2      1    version = 1
//! 3      1    kind: 1 Frame, 2 Hello, 3 Challenge, 4 Proof, 5 Welcome, 6 Keepalive,
//!             7 Reset, 8 Refused
//! 4      1    hop_limit (frames only; 0 for others)
//! 5      1    flags (Frame messages): bit 0 FLAG_SEALED, the payload is a sealed
//!             frame; bit 1 FLAG_VNET_HDR, the (opened) payload starts with a
//!             virtio-net header; other bits have no meaning and are ignored
//! 6      2    reserved, sent as 0, ignored on receive
//! 8      4    session id, u32 big endian (0 until a session exists)
//! 12     4    payload length, u32 big endian
//! ```
//!
//! The module is sans-IO: it only turns bytes into headers and back. A TCP reader keeps
//! its own buffer and calls [`split_stream`]; a UDP reader calls [`decode_datagram`] on
//! each datagram. Every decoder returns an error instead of panicking on any input.

/// The two bytes every message starts with, so that a stray connection from something
/// that is not a vnet daemon is rejected on its first bytes.
pub const MAGIC: [u8; 2] = *b"VN";

/// The header version this code speaks. A different version is refused rather than
/// guessed at: the header layout is only fixed within one version.
pub const VERSION: u8 = 1;

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 16;

/// Largest payload accepted (room for 64 KiB super-frames plus a virtio-net header later).
///
/// The bound also caps how much a TCP reader buffers for one message, so a peer cannot
/// make it allocate gigabytes by announcing a huge length.
pub const MAX_PAYLOAD: usize = 128 * 1024;

/// Hop limit a daemon puts on frames it originates.
pub const DEFAULT_HOP_LIMIT: u8 = 16;

/// What a message carries; byte 3 of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// An Ethernet frame being forwarded across the overlay.
    Frame = 1,
    /// Handshake, initiator to responder: names and the initiator's nonce.
    Hello = 2,
    /// Handshake, responder to initiator: the responder's nonce, session and proof.
    Challenge = 3,
    /// Handshake, initiator to responder: the initiator's proof.
    Proof = 4,
    /// Handshake, responder to initiator: the link is up (empty payload; the session id
    /// is in the header).
    Welcome = 5,
    /// Liveness probe, sent on an interval whatever the traffic; its payload, when not
    /// empty, is a [`KeepaliveStamp`] for round-trip time measurement.
    Keepalive = 6,
    /// The sender is tearing the session down.
    Reset = 7,
    /// The responder refused the handshake (payload: a reason).
    Refused = 8,
}

impl Kind {
    /// Every kind, in wire order; handy for tests and exhaustive tables.
    pub const ALL: [Kind; 8] = [
        Kind::Frame,
        Kind::Hello,
        Kind::Challenge,
        Kind::Proof,
        Kind::Welcome,
        Kind::Keepalive,
        Kind::Reset,
        Kind::Refused,
    ];

    /// The byte that encodes this kind on the wire.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// The kind a wire byte names, or `None` for a byte no version-1 peer sends.
    pub fn from_byte(b: u8) -> Option<Kind> {
        // `ALL` is in wire order starting at 1, so the byte is an index off by one; a
        // lookup (rather than a cast) keeps unknown bytes from becoming a Kind.
        Kind::ALL.get(usize::from(b).checked_sub(1)?).copied()
    }
}

impl TryFrom<u8> for Kind {
    type Error = WireError;

    fn try_from(b: u8) -> Result<Kind, WireError> {
        Kind::from_byte(b).ok_or(WireError::UnknownKind(b))
    }
}

/// A decoded link header (the magic, version and reserved bytes are implicit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: Kind,
    /// Remaining hops for a [`Kind::Frame`]; 0 for every other kind.
    pub hop_limit: u8,
    /// Flag bits of a [`Kind::Frame`] ([`FLAG_SEALED`], [`FLAG_VNET_HDR`]), kept as they
    /// came; bits without a meaning are ignored.
    pub flags: u8,
    /// The session this message belongs to; 0 before the handshake assigns one.
    pub session: u32,
    /// Length of the payload that follows the header, in bytes.
    pub len: u32,
}

impl Header {
    /// Serializes the header. Infallible: a `len` above [`MAX_PAYLOAD`] is written as
    /// given, and the receiver rejects it; [`encode_message`] is the checked path.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [m0, m1] = MAGIC;
        let [s0, s1, s2, s3] = self.session.to_be_bytes();
        let [l0, l1, l2, l3] = self.len.to_be_bytes();
        // Bytes 6 and 7 are reserved and always sent as 0.
        [
            m0,
            m1,
            VERSION,
            self.kind.to_byte(),
            self.hop_limit,
            self.flags,
            0,
            0,
            s0,
            s1,
            s2,
            s3,
            l0,
            l1,
            l2,
            l3,
        ]
    }

    /// Decodes the first HEADER_LEN bytes; checks magic, version, kind, len <= MAX_PAYLOAD.
    ///
    /// Bytes after the header are not looked at. The reserved bytes and unknown flag bits
    /// are accepted whatever their value, so that a later version can use them without
    /// breaking this one.
    pub fn decode(buf: &[u8]) -> Result<Header, WireError> {
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            // Check what is there first, so that garbage is reported as garbage rather
            // than as a short read.
            check_prefix(buf)?;
            return Err(WireError::Truncated {
                needed: HEADER_LEN,
                got: buf.len(),
            });
        };
        check_prefix(h)?;
        let [_, _, _, kind, hop_limit, flags, _, _, s0, s1, s2, s3, l0, l1, l2, l3] = *h;
        let kind = Kind::try_from(kind)?;
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        if len as usize > MAX_PAYLOAD {
            return Err(WireError::TooLong(len as usize));
        }
        Ok(Header {
            kind,
            hop_limit,
            flags,
            session: u32::from_be_bytes([s0, s1, s2, s3]),
            len,
        })
    }

    /// The length of the whole message this header starts: header plus payload.
    pub fn message_len(&self) -> usize {
        // Saturating: a hand-built header may carry any length, even on 32-bit targets.
        HEADER_LEN.saturating_add(self.len as usize)
    }
}

/// Validates whatever part of magic, version and kind `buf` holds (it may be shorter
/// than a header). Lets a stream reader drop a non-vnet peer on its first bytes instead
/// of waiting for a full header that may never come.
fn check_prefix(buf: &[u8]) -> Result<(), WireError> {
    // A buffer holding only a prefix of the magic is fine: more bytes may follow.
    if buf.iter().zip(MAGIC.iter()).any(|(got, want)| got != want) {
        return Err(WireError::BadMagic);
    }
    if let Some(&v) = buf.get(2) {
        if v != VERSION {
            return Err(WireError::BadVersion(v));
        }
    }
    if let Some(&k) = buf.get(3) {
        Kind::try_from(k)?;
    }
    Ok(())
}

/// Appends header + payload to `out` (used for TCP writes and UDP datagrams). Errors if
/// payload > MAX_PAYLOAD.
///
/// Flags are written as 0: no capability bits are defined yet. Callers pass a
/// `hop_limit` of 0 for every kind but [`Kind::Frame`]. On error `out` is unchanged.
pub fn encode_message(
    kind: Kind,
    hop_limit: u8,
    session: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::TooLong(payload.len()));
    }
    let header = Header {
        kind,
        hop_limit,
        flags: 0,
        session,
        // Fits: MAX_PAYLOAD is far below u32::MAX.
        len: payload.len() as u32,
    };
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    Ok(())
}

/// Flag bit: the payload is `counter || ciphertext || tag` of a frame sealed with the
/// session keys ([`crate::crypto`]); the header is the AEAD's associated data.
pub const FLAG_SEALED: u8 = 1;

/// Flag bit: the (opened) payload starts with a virtio-net header
/// ([`crate::offload::VirtioNetHdr`]), so the frame may be a TSO super-frame or carry a
/// partial checksum. The daemon sets it on every frame of a TCP link whose handshake
/// agreed on [`crate::handshake::CAP_SUPERFRAMES`]; its link readers take it on any link.
pub const FLAG_VNET_HDR: u8 = 2;

/// The header of a Frame message with a `len`-byte payload; `TooLong` past
/// [`MAX_PAYLOAD`].
pub fn frame_header(
    hop_limit: u8,
    session: u32,
    flags: u8,
    len: usize,
) -> Result<[u8; HEADER_LEN], WireError> {
    if len > MAX_PAYLOAD {
        return Err(WireError::TooLong(len));
    }
    Ok(Header {
        kind: Kind::Frame,
        hop_limit,
        flags,
        session,
        len: len as u32,
    }
    .encode())
}

/// Appends a plain Frame message whose payload is `parts` one after the other, with
/// `flags` (e.g. [`FLAG_VNET_HDR`]). Sealed frames: `vnet_seal::encode_frame`.
pub fn encode_frame(
    hop_limit: u8,
    session: u32,
    flags: u8,
    parts: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let len = parts.iter().map(|p| p.len()).sum();
    let header = frame_header(hop_limit, session, flags, len)?;
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&header);
    for p in parts {
        out.extend_from_slice(p);
    }
    Ok(())
}

/// A whole UDP datagram: header, and a payload whose length must equal header.len exactly.
///
/// A datagram is never split or joined by the network, so any difference between the
/// announced and the actual length means a corrupt or hostile datagram, not a short read.
pub fn decode_datagram(buf: &[u8]) -> Result<(Header, &[u8]), WireError> {
    let header = Header::decode(buf)?;
    let payload = buf.get(HEADER_LEN..).unwrap_or_default();
    if payload.len() != header.len as usize {
        return Err(WireError::LengthMismatch {
            header: header.len,
            actual: payload.len(),
        });
    }
    Ok((header, payload))
}

/// For TCP streams: given the bytes buffered so far, returns Ok(None) if a full message
/// is not there yet, or Ok(Some((header, total_len_consumed))) for the first complete
/// message (payload is buf[HEADER_LEN..total]). Bad header -> Err (the caller closes the
/// connection).
///
/// A partial header is checked as far as it goes, so a peer that is not speaking vnet is
/// rejected on its first bytes. Once a header is complete its length is known to be at
/// most [`MAX_PAYLOAD`], so the caller never needs to buffer more than
/// `HEADER_LEN + MAX_PAYLOAD` bytes for one message.
pub fn split_stream(buf: &[u8]) -> Result<Option<(Header, usize)>, WireError> {
    if buf.len() < HEADER_LEN {
        check_prefix(buf)?;
        return Ok(None);
    }
    let header = Header::decode(buf)?;
    let total = header.message_len();
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((header, total)))
}

/// Length of a Keepalive's timestamp payload ([`KeepaliveStamp`]).
pub const KEEPALIVE_LEN: usize = 24;

/// Flag bit of a Keepalive payload: the echo fields are valid.
const KEEPALIVE_ECHO: u8 = 1;

/// What a Keepalive carries so that each end can measure the link's round-trip time
/// without synchronized clocks (as TCP timestamps do): its own monotonic clock, and the
/// latest stamp it heard from the peer with how long it held that stamp before sending.
///
/// ```text
/// offset size field (big endian)
/// 0      8    stamp_us: the sender's monotonic clock, microseconds (any epoch)
/// 8      8    echo stamp_us: the latest stamp the sender received from the peer
/// 16     4    echo held_us: time between receiving that stamp and sending this one
/// 20     1    flags: bit 0 = the echo fields are valid; other bits ignored
/// 21     3    reserved, sent as 0, ignored
/// ```
///
/// The peer's round-trip time is then `now − echo.stamp_us − echo.held_us` on the clock
/// that made the echoed stamp. An empty payload (older daemons) is a plain keepalive;
/// bytes past [`KEEPALIVE_LEN`] are ignored so that a later version can add fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveStamp {
    /// The sender's clock when it sent the keepalive, in microseconds.
    pub stamp_us: u64,
    /// The peer stamp being echoed, if the sender has heard one.
    pub echo: Option<Echo>,
}

/// The echoed half of a [`KeepaliveStamp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    /// The peer's own `stamp_us`, returned unchanged.
    pub stamp_us: u64,
    /// How long the echoing end held it, in microseconds (saturates at `u32::MAX`).
    pub held_us: u32,
}

impl KeepaliveStamp {
    /// The payload bytes.
    pub fn encode(&self) -> [u8; KEEPALIVE_LEN] {
        let mut out = [0u8; KEEPALIVE_LEN];
        out[..8].copy_from_slice(&self.stamp_us.to_be_bytes());
        if let Some(echo) = self.echo {
            out[8..16].copy_from_slice(&echo.stamp_us.to_be_bytes());
            out[16..20].copy_from_slice(&echo.held_us.to_be_bytes());
            out[20] = KEEPALIVE_ECHO;
        }
        out
    }

    /// Decodes a Keepalive's payload: `Ok(None)` for the empty payload of a daemon that
    /// sends no stamps, an error for a payload too short to hold one.
    pub fn decode(payload: &[u8]) -> Result<Option<KeepaliveStamp>, WireError> {
        if payload.is_empty() {
            return Ok(None);
        }
        let Some(b) = payload.first_chunk::<KEEPALIVE_LEN>() else {
            return Err(WireError::Truncated {
                needed: KEEPALIVE_LEN,
                got: payload.len(),
            });
        };
        let u64_at = |i: usize| {
            u64::from_be_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let echo = (b[20] & KEEPALIVE_ECHO != 0).then(|| Echo {
            stamp_us: u64_at(8),
            held_us: u32::from_be_bytes([b[16], b[17], b[18], b[19]]),
        });
        Ok(Some(KeepaliveStamp {
            stamp_us: u64_at(0),
            echo,
        }))
    }
}

/// Why bytes are not a valid link message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than a header; only [`Header::decode`] and [`decode_datagram`] report
    /// it, since a stream reader just waits for more.
    #[error("message truncated: need {needed} bytes, got {got}")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The first two bytes are not `VN`: the peer is not a vnet daemon.
    #[error("bad magic: not a vnet link message")]
    BadMagic,
    /// A header version this daemon does not speak.
    #[error("unsupported link protocol version {0} (this daemon speaks {VERSION})")]
    BadVersion(u8),
    /// A kind byte that names no message kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A payload longer than [`MAX_PAYLOAD`], announced by a header or handed to
    /// [`encode_message`].
    #[error("payload of {0} bytes exceeds the maximum of {MAX_PAYLOAD}")]
    TooLong(usize),
    /// A datagram whose payload length differs from the one its header announces.
    #[error("header announces {header} payload bytes but the datagram carries {actual}")]
    LengthMismatch {
        /// Length in the header.
        header: u32,
        /// Length actually present.
        actual: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind_strategy() -> impl Strategy<Value = Kind> {
        proptest::sample::select(Kind::ALL.to_vec())
    }

    fn header_strategy() -> impl Strategy<Value = Header> {
        (
            kind_strategy(),
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            0..=MAX_PAYLOAD as u32,
        )
            .prop_map(|(kind, hop_limit, flags, session, len)| Header {
                kind,
                hop_limit,
                flags,
                session,
                len,
            })
    }

    fn msg(kind: Kind, hop: u8, session: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_message(kind, hop, session, payload, &mut out).expect("payload within bounds");
        out
    }

    #[test]
    fn layout_matches_the_documented_table() {
        let h = Header {
            kind: Kind::Frame,
            hop_limit: 16,
            flags: 0,
            session: 0x0102_0304,
            len: 0x0000_0506,
        };
        assert_eq!(
            h.encode(),
            [b'V', b'N', 1, 1, 16, 0, 0, 0, 1, 2, 3, 4, 0, 0, 5, 6]
        );
    }

    #[test]
    fn kind_bytes_are_stable() {
        let bytes: Vec<u8> = Kind::ALL.iter().map(|k| k.to_byte()).collect();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
        for k in Kind::ALL {
            assert_eq!(Kind::from_byte(k.to_byte()), Some(k));
        }
        assert_eq!(Kind::from_byte(0), None);
        assert_eq!(Kind::from_byte(9), None);
        assert_eq!(Kind::from_byte(255), None);
    }

    #[test]
    fn reserved_bytes_and_unknown_flags_are_ignored() {
        let mut b = Header {
            kind: Kind::Keepalive,
            hop_limit: 0,
            flags: 0xa5,
            session: 7,
            len: 0,
        }
        .encode();
        b[6] = 0xff;
        b[7] = 0x12;
        let h = Header::decode(&b).expect("valid header");
        assert_eq!(h.flags, 0xa5);
        assert_eq!(h.session, 7);
    }

    #[test]
    fn error_truncated() {
        let b = msg(Kind::Hello, 0, 0, b"");
        for n in 0..HEADER_LEN {
            assert_eq!(
                Header::decode(&b[..n]),
                Err(WireError::Truncated {
                    needed: HEADER_LEN,
                    got: n
                })
            );
            assert!(matches!(
                decode_datagram(&b[..n]),
                Err(WireError::Truncated { .. })
            ));
            // A stream reader waits instead.
            assert_eq!(split_stream(&b[..n]), Ok(None));
        }
    }

    #[test]
    fn error_bad_magic() {
        let mut b = msg(Kind::Frame, 1, 0, b"x");
        b[1] = b'X';
        assert_eq!(Header::decode(&b), Err(WireError::BadMagic));
        assert_eq!(decode_datagram(&b), Err(WireError::BadMagic));
        assert_eq!(split_stream(&b), Err(WireError::BadMagic));
        // Rejected on the very first byte of a stream, before a full header arrives.
        assert_eq!(split_stream(b"G"), Err(WireError::BadMagic));
        assert_eq!(split_stream(b"GET / HTTP/1.1\r\n"), Err(WireError::BadMagic));
        assert_eq!(split_stream(b"V"), Ok(None));
    }

    #[test]
    fn error_bad_version() {
        let mut b = msg(Kind::Frame, 1, 0, b"x");
        b[2] = 2;
        assert_eq!(Header::decode(&b), Err(WireError::BadVersion(2)));
        assert_eq!(decode_datagram(&b), Err(WireError::BadVersion(2)));
        assert_eq!(split_stream(&b[..3]), Err(WireError::BadVersion(2)));
    }

    #[test]
    fn error_unknown_kind() {
        for k in [0u8, 9, 200, 255] {
            let mut b = msg(Kind::Frame, 1, 0, b"x");
            b[3] = k;
            assert_eq!(Header::decode(&b), Err(WireError::UnknownKind(k)));
            assert_eq!(split_stream(&b[..4]), Err(WireError::UnknownKind(k)));
            assert_eq!(Kind::try_from(k), Err(WireError::UnknownKind(k)));
        }
    }

    #[test]
    fn error_too_long() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        let mut out = vec![9u8];
        assert_eq!(
            encode_message(Kind::Frame, 1, 0, &big, &mut out),
            Err(WireError::TooLong(MAX_PAYLOAD + 1))
        );
        assert_eq!(out, [9u8], "out is untouched on error");
        // The largest allowed payload goes through.
        encode_message(Kind::Frame, 1, 0, &big[..MAX_PAYLOAD], &mut out).expect("max fits");
        assert_eq!(out.len(), 1 + HEADER_LEN + MAX_PAYLOAD);

        for len in [MAX_PAYLOAD as u32 + 1, u32::MAX] {
            let h = Header {
                kind: Kind::Frame,
                hop_limit: 1,
                flags: 0,
                session: 0,
                len,
            }
            .encode();
            assert_eq!(Header::decode(&h), Err(WireError::TooLong(len as usize)));
            // A stream reader learns it from the header alone, without buffering the body.
            assert_eq!(split_stream(&h), Err(WireError::TooLong(len as usize)));
        }
    }

    #[test]
    fn error_length_mismatch() {
        let b = msg(Kind::Frame, 1, 0, b"hello");
        assert_eq!(
            decode_datagram(&b[..b.len() - 1]),
            Err(WireError::LengthMismatch { header: 5, actual: 4 })
        );
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(
            decode_datagram(&longer),
            Err(WireError::LengthMismatch { header: 5, actual: 6 })
        );
    }

    #[test]
    fn errors_display_something_useful() {
        let e = WireError::TooLong(MAX_PAYLOAD + 1);
        assert!(e.to_string().contains("131073"));
        assert!(WireError::BadVersion(3).to_string().contains('3'));
    }

    #[test]
    fn split_stream_leaves_the_rest() {
        let mut s = msg(Kind::Frame, 3, 9, b"abc");
        s.extend(msg(Kind::Keepalive, 0, 9, b""));
        let (h, n) = split_stream(&s).expect("ok").expect("complete");
        assert_eq!(h.kind, Kind::Frame);
        assert_eq!(&s[HEADER_LEN..n], b"abc");
        let (h2, n2) = split_stream(&s[n..]).expect("ok").expect("complete");
        assert_eq!(h2.kind, Kind::Keepalive);
        assert_eq!(n + n2, s.len());
        // Header complete, payload not: wait.
        assert_eq!(split_stream(&s[..HEADER_LEN + 2]), Ok(None));
    }

    #[test]
    fn keepalive_payload_layout_and_old_empty_keepalives() {
        let k = KeepaliveStamp {
            stamp_us: 0x0102_0304_0506_0708,
            echo: Some(Echo {
                stamp_us: 0x1112_1314_1516_1718,
                held_us: 0x2122_2324,
            }),
        };
        let b = k.encode();
        assert_eq!(&b[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[8..16], &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        assert_eq!(&b[16..20], &[0x21, 0x22, 0x23, 0x24]);
        assert_eq!(&b[20..], &[1, 0, 0, 0]);
        assert_eq!(KeepaliveStamp::decode(&b), Ok(Some(k)));
        // Older daemons send keepalives without a payload.
        assert_eq!(KeepaliveStamp::decode(&[]), Ok(None));
        // Without the echo flag the echo fields mean nothing, whatever they hold.
        let mut no_echo = b;
        no_echo[20] = 0xfe;
        let got = KeepaliveStamp::decode(&no_echo).expect("valid").expect("stamped");
        assert_eq!(got.echo, None);
        // A later version may append fields.
        let mut longer = b.to_vec();
        longer.extend_from_slice(b"future");
        assert_eq!(KeepaliveStamp::decode(&longer), Ok(Some(k)));
        for n in 1..KEEPALIVE_LEN {
            assert_eq!(
                KeepaliveStamp::decode(&b[..n]),
                Err(WireError::Truncated {
                    needed: KEEPALIVE_LEN,
                    got: n
                })
            );
        }
    }

    proptest! {
        #[test]
        fn header_round_trip(h in header_strategy()) {
            prop_assert_eq!(Header::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn message_round_trip(
            kind in kind_strategy(),
            hop in any::<u8>(),
            session in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
            prefix in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut out = prefix.clone();
            encode_message(kind, hop, session, &payload, &mut out).expect("fits");
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            let (h, p) = decode_datagram(&out[prefix.len()..]).expect("valid datagram");
            prop_assert_eq!(h, Header { kind, hop_limit: hop, flags: 0, session, len: payload.len() as u32 });
            prop_assert_eq!(p, &payload[..]);
        }

        #[test]
        fn decoders_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Header::decode(&buf);
            let _ = decode_datagram(&buf);
            let _ = split_stream(&buf);
            let _ = KeepaliveStamp::decode(&buf);
        }

        #[test]
        fn keepalive_stamp_round_trip(
            stamp_us in any::<u64>(),
            echo in proptest::option::of((any::<u64>(), any::<u32>())),
        ) {
            let k = KeepaliveStamp {
                stamp_us,
                echo: echo.map(|(stamp_us, held_us)| Echo { stamp_us, held_us }),
            };
            prop_assert_eq!(KeepaliveStamp::decode(&k.encode()), Ok(Some(k)));
        }

        #[test]
        fn split_stream_reassembles_any_chunking(
            msgs in proptest::collection::vec(
                (kind_strategy(), any::<u8>(), any::<u32>(),
                 proptest::collection::vec(any::<u8>(), 0..300)),
                1..12),
            cuts in proptest::collection::vec(1usize..200, 0..64),
        ) {
            let mut stream = Vec::new();
            for (k, hop, s, p) in &msgs {
                encode_message(*k, *hop, *s, p, &mut stream).expect("fits");
            }
            // Feed the stream in the chunk sizes `cuts` gives (then the rest at once), as
            // a TCP reader would see it, and consume messages as soon as they complete.
            let mut buffered: Vec<u8> = Vec::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut sizes = cuts.into_iter().chain(std::iter::once(usize::MAX));
            while pos < stream.len() {
                let n = sizes.next().unwrap_or(usize::MAX).min(stream.len() - pos);
                buffered.extend_from_slice(&stream[pos..pos + n]);
                pos += n;
                while let Some((h, total)) = split_stream(&buffered).expect("valid stream") {
                    got.push((h.kind, h.hop_limit, h.session, buffered[HEADER_LEN..total].to_vec()));
                    buffered.drain(..total);
                }
            }
            prop_assert!(buffered.is_empty());
            prop_assert_eq!(got, msgs);
        }
    }
}
