//! Link authentication: a sans-IO challenge–response that proves both ends of a link hold
//! the overlay's network key, without the key ever crossing the wire.
//!
//! ```text
//! initiator                                         responder
//!   Hello { link, node_i, nonce_i, e_i, caps_i } ──▶
//!                                             ◀──   Challenge { node_r, nonce_r, session,
//!                                                               e_r, caps_r,
//!                                                               proof = responder_proof }
//!   verify responder_proof
//!   Proof { proof = initiator_proof }         ──▶
//!                                                   verify initiator_proof
//!                                             ◀──   Welcome (header carries session)
//!                                                   or Refused { reason }
//! ```
//!
//! Both proofs are HMAC-SHA256 under the network key over the same transcript, with
//! different labels so one side's proof can never be replayed as the other's:
//!
//! ```text
//! proof = HMAC(key, label || lp(link) || lp(node_i) || lp(node_r)
//!                         || nonce_i || nonce_r || e_i || e_r
//!                         || caps_i_be || caps_r_be || binding || session_be)
//! label = "vnet/1 responder" | "vnet/1 initiator"      lp(x) = u8 length || x
//! ```
//!
//! `e_i`, `e_r` are ephemeral X25519 public keys; the same MAC with the label
//! "vnet/1 keys" salts the session keys derived from their shared secret
//! ([`crate::crypto`]). Capabilities (e.g. [`CAP_ENCRYPT`]) are covered by both proofs,
//! so a man in the middle cannot strip encryption.
//!
//! Each side contributes a fresh nonce, so a recorded proof is useless in a later
//! handshake; the session id and both names are covered, so none can be changed in
//! flight. The state machines take nonces and session ids from the caller, which owns
//! the RNG, so they are deterministic under test.
//!
//! What the handshake alone does **not** give: frames after it are bound to the session
//! only when the link seals them with the session keys ([`CAP_ENCRYPT`]); on an
//! unencrypted link a man in the middle that relays the handshake can inject frames.
//!
//! Handshake messages travel in [`crate::wire`] messages of the matching [`Kind`] with
//! session id 0 in the header, except Welcome, whose header carries the new session id.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::crypto::SessionKeys;
use crate::name::Name;
use crate::text::PostcardError;
use crate::wire::Kind;

type HmacSha256 = Hmac<Sha256>;

/// Longest refusal reason, in bytes.
pub const MAX_REASON_LEN: usize = 200;

/// Label mixed into the responder's proof.
const RESPONDER_LABEL: &[u8] = b"vnet/1 responder";
/// Label mixed into the initiator's proof.
const INITIATOR_LABEL: &[u8] = b"vnet/1 initiator";
/// Label of the transcript hash that salts the session keys.
const KEYS_LABEL: &[u8] = b"vnet/1 keys";

/// Capability bit: frames on this link are sealed with the session keys
/// ([`crate::crypto`]). Both ends' link configurations must agree.
pub const CAP_ENCRYPT: u32 = 1;

/// Capability bit: this end takes TSO super-frames behind virtio-net headers
/// ([`crate::wire::FLAG_VNET_HDR`]); used when both ends offer it.
pub const CAP_SUPERFRAMES: u32 = 2;

/// What one side contributes to a handshake: fresh randomness from the caller's RNG and
/// the capabilities its configuration asks for. Debug does not print the secret.
#[derive(Clone)]
pub struct Offer {
    /// Fresh random nonce.
    pub nonce: [u8; 32],
    /// Fresh ephemeral X25519 secret.
    pub ephemeral_secret: [u8; 32],
    /// Capability bits.
    pub caps: u32,
    /// Channel binding: a value both ends derive from the transport's own security
    /// session (QUIC's TLS exporter), mixed into the proofs so a man in the middle cannot
    /// relay the handshake between two transport sessions; zero where there is none.
    pub binding: [u8; 32],
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offer")
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

/// The overlay's shared secret (32 bytes). Debug must not print it.
///
/// Equality is constant-time so that comparing keys cannot leak them through timing.
#[derive(Clone)]
pub struct NetworkKey([u8; 32]);

impl NetworkKey {
    /// Wraps 32 secret bytes (from a CSPRNG when generating a new key).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        NetworkKey(b)
    }

    /// Parses a key file's text: exactly 64 hex digits, surrounding whitespace ignored.
    /// Clear errors otherwise.
    ///
    /// The errors name lengths and positions but never echo the text, since a nearly
    /// valid key file is still mostly secret.
    pub fn from_hex(text: &str) -> Result<Self, HandshakeError> {
        let t = text.trim();
        if let Some((pos, _)) = t.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(HandshakeError::BadKey(format!(
                "the key must be 64 hex digits; the character at byte {pos} is not a hex digit"
            )));
        }
        if t.len() != 64 {
            return Err(HandshakeError::BadKey(format!(
                "the key must be exactly 64 hex digits (32 bytes); found {} digits",
                t.len()
            )));
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(t, &mut key).map_err(|e| {
            // Unreachable after the checks above, but an error beats a panic.
            HandshakeError::BadKey(format!("the key is not valid hex: {e}"))
        })?;
        Ok(NetworkKey(key))
    }

    /// The key as 64 lowercase hex digits, the key file format.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A keyed HMAC-SHA256 instance.
    fn mac(&self) -> HmacSha256 {
        // HMAC zero-pads a key shorter than its 64-byte block, so padding here gives the
        // same MAC as `new_from_slice` without its (impossible) error path.
        let mut block = [0u8; 64];
        for (dst, src) in block.iter_mut().zip(self.0.iter()) {
            *dst = *src;
        }
        HmacSha256::new(&block.into())
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkKey(<redacted>)")
    }
}

impl PartialEq for NetworkKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for NetworkKey {}

/// Handshake message payloads: what [`encode_payload`] accepts. Sealed, so that encoding
/// only ever sees these fixed-shape types and cannot fail.
pub trait Payload: Serialize + sealed::Sealed {
    /// The wire kind this payload travels under.
    const KIND: Kind;
}

mod sealed {
    /// Keeps [`super::Payload`] closed to this module's types.
    pub trait Sealed {}
    impl Sealed for super::Hello {}
    impl Sealed for super::Challenge {}
    impl Sealed for super::Proof {}
    impl Sealed for super::Refused {}
}

/// Kind::Hello, initiator -> responder: which link this is, who is asking, and the
/// initiator's fresh nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Name of the link being opened (the same on both ends' configurations).
    pub link: Name,
    /// The initiator's node name.
    pub node: Name,
    /// The initiator's fresh random nonce.
    pub nonce: [u8; 32],
    /// The initiator's ephemeral X25519 public key (session keys, see [`crate::crypto`]).
    pub ephemeral: [u8; 32],
    /// Capabilities the initiator asks for ([`CAP_ENCRYPT`], ...).
    pub caps: u32,
}

impl Payload for Hello {
    const KIND: Kind = Kind::Hello;
}

/// Kind::Challenge, responder -> initiator: the responder's name, nonce, the session id it
/// assigned, and its proof of holding the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The responder's node name.
    pub node: Name,
    /// The responder's fresh random nonce.
    pub nonce: [u8; 32],
    /// Session id the responder assigned; nonzero.
    pub session: u32,
    /// The responder's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// Capabilities the responder offers.
    pub caps: u32,
    /// The responder's proof over the transcript.
    pub proof: [u8; 32],
}

impl Payload for Challenge {
    const KIND: Kind = Kind::Challenge;
}

/// Kind::Proof, initiator -> responder: the initiator's proof of holding the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The initiator's proof over the transcript.
    pub proof: [u8; 32],
}

impl Payload for Proof {
    const KIND: Kind = Kind::Proof;
}

/// Kind::Refused, responder -> initiator: why the handshake failed (at most
/// [`MAX_REASON_LEN`] bytes). Informational only: it is not authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Human-readable reason.
    pub reason: String,
}

impl Refused {
    /// A refusal whose reason is cut (on a character boundary) to [`MAX_REASON_LEN`]
    /// bytes, so that the peer's decoder accepts it.
    pub fn new(reason: &str) -> Refused {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Refused {
            reason: reason.get(..end).unwrap_or_default().to_string(),
        }
    }
}

impl Payload for Refused {
    const KIND: Kind = Kind::Refused;
}

/// Serializes a handshake payload with postcard. Welcome has an empty payload; the
/// session id travels in the wire header.
pub fn encode_payload<T: Payload>(msg: &T) -> Vec<u8> {
    // postcard fails only on sequences of unknown length or on errors raised by custom
    // Serialize impls; the sealed payload types have neither, so this cannot fail.
    postcard::to_stdvec(msg).unwrap_or_default()
}

/// Decodes a postcard payload that must fill `b` exactly: trailing bytes mean a peer
/// speaking some other format, and are refused rather than ignored. The only text fields
/// of handshake payloads that are parsed are names, so a text error is a bad name.
fn decode_exact<'a, T: Deserialize<'a>>(what: &str, b: &'a [u8]) -> Result<T, HandshakeError> {
    let (msg, rest) = crate::text::take_from_bytes::<T>(b).map_err(|e| match e {
        PostcardError::Text(e) => HandshakeError::BadName(format!("{what}: {e}")),
        PostcardError::Shape(e) => HandshakeError::Malformed(format!("{what}: {e}")),
    })?;
    if !rest.is_empty() {
        return Err(HandshakeError::Malformed(format!(
            "{what}: {} trailing bytes",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Decodes a Hello payload (its names parse as [`Name`]s).
pub fn decode_hello(b: &[u8]) -> Result<Hello, HandshakeError> {
    decode_exact("hello", b)
}

/// Decodes a Challenge payload and checks its session id.
pub fn decode_challenge(b: &[u8]) -> Result<Challenge, HandshakeError> {
    let c: Challenge = decode_exact("challenge", b)?;
    if c.session == 0 {
        return Err(HandshakeError::Malformed(
            "challenge: session id 0 is reserved".into(),
        ));
    }
    Ok(c)
}

/// Decodes a Proof payload.
pub fn decode_proof(b: &[u8]) -> Result<Proof, HandshakeError> {
    decode_exact("proof", b)
}

/// Decodes a Refused payload; the reason is at most [`MAX_REASON_LEN`] bytes.
pub fn decode_refused(b: &[u8]) -> Result<Refused, HandshakeError> {
    let r: Refused = decode_exact("refused", b)?;
    if r.reason.len() > MAX_REASON_LEN {
        return Err(HandshakeError::Malformed(format!(
            "refused: reason of {} bytes exceeds {MAX_REASON_LEN}",
            r.reason.len()
        )));
    }
    Ok(r)
}

/// Everything both proofs cover.
struct Transcript<'a> {
    link: &'a Name,
    node_i: &'a Name,
    node_r: &'a Name,
    nonce_i: &'a [u8; 32],
    nonce_r: &'a [u8; 32],
    ephemeral_i: &'a [u8; 32],
    ephemeral_r: &'a [u8; 32],
    caps_i: u32,
    caps_r: u32,
    binding: &'a [u8; 32],
    session: u32,
}

impl Transcript<'_> {
    /// HMAC of the labelled transcript, ready to finalize or verify.
    fn mac(&self, key: &NetworkKey, label: &[u8]) -> HmacSha256 {
        let mut m = key.mac();
        m.update(label);
        for s in [self.link, self.node_i, self.node_r] {
            // A name is at most 64 bytes (`MAX_NAME_LEN`): its length fits the byte.
            m.update(&[u8::try_from(s.len()).unwrap_or(u8::MAX)]);
            m.update(s.as_bytes());
        }
        m.update(self.nonce_i);
        m.update(self.nonce_r);
        // Ephemeral keys and capabilities are covered, so a man in the middle can neither
        // substitute its own key nor strip encryption.
        m.update(self.ephemeral_i);
        m.update(self.ephemeral_r);
        m.update(&self.caps_i.to_be_bytes());
        m.update(&self.caps_r.to_be_bytes());
        m.update(self.binding);
        m.update(&self.session.to_be_bytes());
        m
    }

    /// Session keys from our ephemeral secret and the peer's public key, salted with a
    /// keyed hash of the whole transcript.
    fn keys(
        &self,
        key: &NetworkKey,
        own_secret: &[u8; 32],
        initiator: bool,
    ) -> Result<SessionKeys, HandshakeError> {
        let salt = self.prove(key, KEYS_LABEL);
        let peer = if initiator {
            self.ephemeral_r
        } else {
            self.ephemeral_i
        };
        SessionKeys::derive(own_secret, peer, &salt).map_err(|_| HandshakeError::BadEphemeral)
    }

    /// The proof one side sends.
    fn prove(&self, key: &NetworkKey, label: &[u8]) -> [u8; 32] {
        self.mac(key, label).finalize().into_bytes().into()
    }

    /// Checks the other side's proof in constant time.
    fn verify(&self, key: &NetworkKey, label: &[u8], proof: &[u8; 32]) -> bool {
        self.mac(key, label).verify_slice(proof).is_ok()
    }
}

/// Where an [`Initiator`] is in the exchange.
#[derive(Clone, Debug)]
enum InitiatorState {
    /// Hello sent; waiting for the Challenge.
    AwaitChallenge,
    /// Proof sent; waiting for Welcome with this session id.
    AwaitWelcome {
        peer_node: Name,
        session: u32,
        keys: SessionKeys,
        peer_caps: u32,
    },
}

/// The dialing side of a link handshake.
#[derive(Clone, Debug)]
pub struct Initiator {
    key: NetworkKey,
    node: Name,
    link: Name,
    offer: Offer,
    ephemeral: [u8; 32],
    state: InitiatorState,
}

impl Initiator {
    /// `offer` comes from the caller's RNG and configuration. Returns the Hello to send.
    pub fn new(key: NetworkKey, node: &Name, link: &Name, offer: Offer) -> (Initiator, Hello) {
        let ephemeral = crate::crypto::ephemeral_public(&offer.ephemeral_secret);
        let hello = Hello {
            link: link.clone(),
            node: node.clone(),
            nonce: offer.nonce,
            ephemeral,
            caps: offer.caps,
        };
        let me = Initiator {
            key,
            node: node.clone(),
            link: link.clone(),
            offer,
            ephemeral,
            state: InitiatorState::AwaitChallenge,
        };
        (me, hello)
    }

    /// On Challenge: verify the responder's proof; Ok(Proof to send). Err(HandshakeError::BadProof)
    /// means the peer does not hold our key.
    ///
    /// A Challenge naming our own node is refused with [`HandshakeError::SelfConnection`]
    /// before its proof is looked at: that is what an attacker sees when it reflects our
    /// Hello back at our own responder to have it answer for us. On error the state is
    /// unchanged; the caller closes the link.
    pub fn on_challenge(&mut self, c: &Challenge) -> Result<Proof, HandshakeError> {
        if !matches!(self.state, InitiatorState::AwaitChallenge) {
            return Err(HandshakeError::OutOfOrder("a second Challenge"));
        }
        if c.node == self.node {
            return Err(HandshakeError::SelfConnection(self.node.clone()));
        }
        if c.session == 0 {
            return Err(HandshakeError::Malformed(
                "challenge: session id 0 is reserved".into(),
            ));
        }
        let t = self.transcript(c);
        if !t.verify(&self.key, RESPONDER_LABEL, &c.proof) {
            return Err(HandshakeError::BadProof);
        }
        let keys = t.keys(&self.key, &self.offer.ephemeral_secret, true)?;
        let proof = t.prove(&self.key, INITIATOR_LABEL);
        self.state = InitiatorState::AwaitWelcome {
            peer_node: c.node.clone(),
            session: c.session,
            keys,
            peer_caps: c.caps,
        };
        Ok(Proof { proof })
    }

    /// Whether [`Initiator::on_challenge`] would take `c`, without the key derivation:
    /// picks, among several handshakes to one peer address, the one a Challenge answers
    /// (it names no link).
    pub fn verifies(&self, c: &Challenge) -> bool {
        matches!(self.state, InitiatorState::AwaitChallenge)
            && c.node != self.node
            && c.session != 0
            && self.transcript(c).verify(&self.key, RESPONDER_LABEL, &c.proof)
    }

    fn transcript<'a>(&'a self, c: &'a Challenge) -> Transcript<'a> {
        Transcript {
            link: &self.link,
            node_i: &self.node,
            node_r: &c.node,
            nonce_i: &self.offer.nonce,
            nonce_r: &c.nonce,
            ephemeral_i: &self.ephemeral,
            ephemeral_r: &c.ephemeral,
            caps_i: self.offer.caps,
            caps_r: c.caps,
            binding: &self.offer.binding,
            session: c.session,
        }
    }

    /// On Welcome (with the header's session id, which must equal the challenge's): the
    /// link is up.
    pub fn on_welcome(&self, session: u32) -> Result<Session, HandshakeError> {
        match &self.state {
            InitiatorState::AwaitChallenge => Err(HandshakeError::OutOfOrder("Welcome before Challenge")),
            InitiatorState::AwaitWelcome {
                peer_node,
                session: expected,
                keys,
                peer_caps,
            } => {
                if session != *expected {
                    return Err(HandshakeError::UnexpectedSession {
                        expected: *expected,
                        got: session,
                    });
                }
                Ok(Session {
                    id: session,
                    link: self.link.clone(),
                    peer_node: peer_node.clone(),
                    initiator: true,
                    keys: keys.clone(),
                    own_caps: self.offer.caps,
                    peer_caps: *peer_caps,
                })
            }
        }
    }
}

/// The accepting side of a link handshake, created on receipt of a Hello.
#[derive(Clone, Debug)]
pub struct Responder {
    key: NetworkKey,
    node: Name,
    hello: Hello,
    offer: Offer,
    ephemeral: [u8; 32],
    session: u32,
}

impl Responder {
    /// On Hello: nonce and session id come from the caller's RNG. Returns the Challenge to
    /// send.
    ///
    /// `session` must be nonzero (0 means "no session" in the wire header; the caller
    /// draws again): the initiator rejects the Challenge otherwise.
    pub fn on_hello(
        key: NetworkKey,
        node: &Name,
        hello: &Hello,
        offer: Offer,
        session: u32,
    ) -> (Responder, Challenge) {
        let ephemeral = crate::crypto::ephemeral_public(&offer.ephemeral_secret);
        let me = Responder {
            key,
            node: node.clone(),
            hello: hello.clone(),
            offer,
            ephemeral,
            session,
        };
        let proof = me.transcript().prove(&me.key, RESPONDER_LABEL);
        let challenge = Challenge {
            node: node.clone(),
            nonce: me.offer.nonce,
            session,
            ephemeral,
            caps: me.offer.caps,
            proof,
        };
        (me, challenge)
    }

    /// On Proof: Ok(Session) and the caller sends Welcome; Err(BadProof) and the caller
    /// sends Refused and logs.
    ///
    /// A Hello that named our own node yields [`HandshakeError::SelfConnection`] here,
    /// whatever the proof: a link to ourselves is a misconfiguration or a reflection.
    pub fn on_proof(&self, p: &Proof) -> Result<Session, HandshakeError> {
        if self.hello.node == self.node {
            return Err(HandshakeError::SelfConnection(self.node.clone()));
        }
        let t = self.transcript();
        if !t.verify(&self.key, INITIATOR_LABEL, &p.proof) {
            return Err(HandshakeError::BadProof);
        }
        Ok(Session {
            id: self.session,
            link: self.hello.link.clone(),
            peer_node: self.hello.node.clone(),
            initiator: false,
            keys: t.keys(&self.key, &self.offer.ephemeral_secret, false)?,
            own_caps: self.offer.caps,
            peer_caps: self.hello.caps,
        })
    }

    /// The session id this responder assigned (for the Welcome header).
    pub fn session(&self) -> u32 {
        self.session
    }

    fn transcript(&self) -> Transcript<'_> {
        Transcript {
            link: &self.hello.link,
            node_i: &self.hello.node,
            node_r: &self.node,
            nonce_i: &self.hello.nonce,
            nonce_r: &self.offer.nonce,
            ephemeral_i: &self.hello.ephemeral,
            ephemeral_r: &self.ephemeral,
            caps_i: self.hello.caps,
            caps_r: self.offer.caps,
            binding: &self.offer.binding,
            session: self.session,
        }
    }
}

/// An authenticated link: what both ends agree on once the handshake succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Session id, carried in every later wire header on this link.
    pub id: u32,
    /// Name of the link.
    pub link: Name,
    /// The other end's node name.
    pub peer_node: Name,
    /// True on the end that dialed.
    pub initiator: bool,
    /// Keys for sealing frames on this session.
    pub keys: SessionKeys,
    /// Capabilities this end asked for or offered.
    pub own_caps: u32,
    /// Capabilities the peer asked for or offered.
    pub peer_caps: u32,
}

impl Session {
    /// Whether frames on this session are sealed with its keys ([`CAP_ENCRYPT`]; the
    /// responder refuses a Hello whose wish differs from its own).
    pub fn encrypts(&self) -> bool {
        self.own_caps & CAP_ENCRYPT != 0
    }

    /// Whether both ends take super-frames ([`CAP_SUPERFRAMES`]).
    pub fn superframes(&self) -> bool {
        self.own_caps & self.peer_caps & CAP_SUPERFRAMES != 0
    }
}

/// Why a handshake step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's proof does not verify: it does not hold our network key, or a message
    /// was altered or replayed.
    #[error("the peer's proof is wrong: it does not hold this overlay's network key, or the handshake was tampered with")]
    BadProof,
    /// A network key file or string is unusable.
    #[error("bad network key: {0}")]
    BadKey(String),
    /// A payload does not decode as the message it should be.
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    /// A node or link name in a payload is not a [`Name`]: the message and its error.
    #[error("bad name in {0}")]
    BadName(String),
    /// Welcome carried a session id other than the one the Challenge assigned.
    #[error("welcome for session {got}, but the challenge assigned session {expected}")]
    UnexpectedSession {
        /// Session id from the Challenge.
        expected: u32,
        /// Session id in the Welcome header.
        got: u32,
    },
    /// A message arrived in a state that does not expect it.
    #[error("handshake message out of order: {0}")]
    OutOfOrder(&'static str),
    /// The peer's ephemeral key is unusable (a low-order point).
    #[error("the peer's ephemeral key is invalid")]
    BadEphemeral,
    /// The peer claims our own node name: a link to ourselves, by misconfiguration or by
    /// an attacker reflecting our own messages back at us.
    #[error("the peer claims to be this node ({0}): refusing a link to ourselves")]
    SelfConnection(Name),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::name;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7u8; 32];
    const NONCE_I: [u8; 32] = [1u8; 32];
    const NONCE_R: [u8; 32] = [2u8; 32];
    const SESSION: u32 = 0xdead_beef;

    fn offer(nonce: [u8; 32]) -> Offer {
        Offer {
            nonce,
            ephemeral_secret: nonce.map(|b| b ^ 0x5a),
            caps: 0,
            binding: [0; 32],
        }
    }

    fn key() -> NetworkKey {
        NetworkKey::from_bytes(KEY)
    }

    fn other_key() -> NetworkKey {
        let mut k = KEY;
        k[31] ^= 1;
        NetworkKey::from_bytes(k)
    }

    /// Runs a handshake through the encoders and decoders, as the driver would.
    fn exchange(
        ki: NetworkKey,
        kr: NetworkKey,
    ) -> (Result<Session, HandshakeError>, Result<Session, HandshakeError>) {
        let (mut init, hello) = Initiator::new(ki, &name("host-a"), &name("a-b.tcp"), offer(NONCE_I));
        let hello = decode_hello(&encode_payload(&hello)).expect("hello decodes");
        let (resp, challenge) = Responder::on_hello(kr, &name("host-b"), &hello, offer(NONCE_R), SESSION);
        let challenge = decode_challenge(&encode_payload(&challenge)).expect("challenge decodes");
        let proof = match init.on_challenge(&challenge) {
            Ok(p) => p,
            Err(e) => return (Err(e), Err(HandshakeError::OutOfOrder("not reached"))),
        };
        let proof = decode_proof(&encode_payload(&proof)).expect("proof decodes");
        let r = resp.on_proof(&proof);
        let i = match &r {
            Ok(s) => init.on_welcome(s.id),
            Err(_) => Err(HandshakeError::OutOfOrder("not reached")),
        };
        (i, r)
    }

    #[test]
    fn same_key_establishes_the_same_session() {
        let (i, r) = exchange(key(), key());
        let i = i.expect("initiator up");
        let r = r.expect("responder up");
        assert_eq!(i.id, SESSION);
        assert_eq!(i.link, "a-b.tcp");
        assert_eq!(r.link, "a-b.tcp");
        assert_eq!(i.peer_node, "host-b");
        assert_eq!(r.peer_node, "host-a");
    }

    #[test]
    fn wrong_key_at_the_responder_fails_at_the_initiators_first_check() {
        // The responder proves first, so the initiator catches a wrong key before it
        // reveals a proof of its own.
        let (i, _) = exchange(key(), other_key());
        assert_eq!(i, Err(HandshakeError::BadProof));
    }

    #[test]
    fn wrong_key_at_the_initiator_fails_at_the_responder() {
        // An initiator with the wrong key also fails to verify the responder's proof...
        let (i, _) = exchange(other_key(), key());
        assert_eq!(i, Err(HandshakeError::BadProof));
        // ...and if it skipped that check and answered anyway, the responder refuses it.
        let (_, hello) = Initiator::new(other_key(), &name("host-a"), &name("l"), offer(NONCE_I));
        let (resp, c) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), SESSION);
        let forged = Transcript {
            link: &name("l"),
            node_i: &name("host-a"),
            node_r: &c.node,
            nonce_i: &NONCE_I,
            nonce_r: &c.nonce,
            ephemeral_i: &hello.ephemeral,
            ephemeral_r: &c.ephemeral,
            caps_i: hello.caps,
            caps_r: c.caps,
            binding: &[0; 32],
            session: c.session,
        }
        .prove(&other_key(), INITIATOR_LABEL);
        assert_eq!(
            resp.on_proof(&Proof { proof: forged }),
            Err(HandshakeError::BadProof)
        );
    }

    /// A named change a man in the middle might make to a message.
    type Mutation<T> = (&'static str, Box<dyn Fn(&mut T)>);

    fn flip(b: &mut [u8; 32], bit: usize) {
        b[bit / 8] ^= 1 << (bit % 8);
    }

    #[test]
    fn modified_challenge_fails() {
        let mutations: Vec<Mutation<Challenge>> = vec![
            ("nonce", Box::new(|c| flip(&mut c.nonce, 100))),
            ("session", Box::new(|c| c.session ^= 1)),
            ("node", Box::new(|c| c.node = name(&format!("{}x", c.node)))),
            ("ephemeral key", Box::new(|c| flip(&mut c.ephemeral, 3))),
            ("capabilities", Box::new(|c| c.caps ^= CAP_ENCRYPT)),
            ("proof", Box::new(|c| flip(&mut c.proof, 0))),
        ];
        for (what, mutate) in mutations {
            let (mut init, hello) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
            let (_, mut c) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), SESSION);
            mutate(&mut c);
            assert_eq!(init.on_challenge(&c), Err(HandshakeError::BadProof), "{what}");
        }
    }

    #[test]
    fn modified_hello_makes_the_challenge_fail() {
        // A man in the middle rewrites the link name or nonce in the Hello: the
        // responder's proof then covers the wrong transcript.
        let mutations: Vec<Mutation<Hello>> = vec![
            ("link", Box::new(|h| h.link = name("other"))),
            ("nonce", Box::new(|h| flip(&mut h.nonce, 7))),
            ("node", Box::new(|h| h.node = name("host-c"))),
        ];
        for (what, mutate) in mutations {
            let (mut init, mut hello) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
            mutate(&mut hello);
            let (_, c) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), SESSION);
            assert_eq!(init.on_challenge(&c), Err(HandshakeError::BadProof), "{what}");
        }
    }

    #[test]
    fn verifies_agrees_with_on_challenge() {
        let (init, hello) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
        let (_, c) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), SESSION);
        assert!(init.verifies(&c));
        let mut forged = c.clone();
        flip(&mut forged.proof, 9);
        assert!(!init.verifies(&forged));
        // Another handshake's Challenge (other nonce) does not verify either.
        let (other, _) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_R));
        assert!(!other.verifies(&c));
        // Nor one reflected from ourselves, nor one after the Challenge was taken.
        let (_, mine) = Responder::on_hello(key(), &name("host-a"), &hello, offer(NONCE_R), SESSION);
        assert!(!init.verifies(&mine));
        let mut taken = init.clone();
        taken.on_challenge(&c).expect("genuine");
        assert!(!taken.verifies(&c));
    }

    #[test]
    fn replayed_challenge_fails_in_a_new_handshake() {
        let (mut init1, hello1) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
        let (_, c1) = Responder::on_hello(key(), &name("host-b"), &hello1, offer(NONCE_R), SESSION);
        init1.on_challenge(&c1).expect("genuine challenge");
        // A later handshake with a fresh initiator nonce must not accept the old one.
        let mut fresh = NONCE_I;
        fresh[0] ^= 0xff;
        let (mut init2, _) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(fresh));
        assert_eq!(init2.on_challenge(&c1), Err(HandshakeError::BadProof));
        // Nor does the first initiator take a second Challenge.
        assert!(matches!(
            init1.on_challenge(&c1),
            Err(HandshakeError::OutOfOrder(_))
        ));
    }

    #[test]
    fn modified_or_replayed_proof_fails() {
        let (mut init, hello) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
        let (resp, c) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), SESSION);
        let p = init.on_challenge(&c).expect("genuine");
        let mut bad = p.clone();
        flip(&mut bad.proof, 255);
        assert_eq!(resp.on_proof(&bad), Err(HandshakeError::BadProof));
        // The proof replayed to a responder that chose another nonce or session fails.
        let mut other_nonce = NONCE_R;
        flip(&mut other_nonce, 3);
        let (resp2, _) = Responder::on_hello(key(), &name("host-b"), &hello, offer(other_nonce), SESSION);
        assert_eq!(resp2.on_proof(&p), Err(HandshakeError::BadProof));
        let (resp3, _) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), SESSION + 1);
        assert_eq!(resp3.on_proof(&p), Err(HandshakeError::BadProof));
        // A responder's own proof reflected back as the initiator's fails: labels differ.
        assert_eq!(
            resp.on_proof(&Proof { proof: c.proof }),
            Err(HandshakeError::BadProof)
        );
        assert!(resp.on_proof(&p).is_ok());
    }

    #[test]
    fn reflection_to_ourselves_is_refused() {
        // An attacker sends our own Hello to our own responder and relays its Challenge
        // back: the proof would verify, so the name check must stop it.
        let (mut init, hello) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
        let (resp, c) = Responder::on_hello(key(), &name("host-a"), &hello, offer(NONCE_R), SESSION);
        assert_eq!(
            init.on_challenge(&c),
            Err(HandshakeError::SelfConnection(name("host-a")))
        );
        assert!(matches!(
            resp.on_proof(&Proof { proof: [0; 32] }),
            Err(HandshakeError::SelfConnection(_))
        ));
    }

    #[test]
    fn welcome_checks_state_and_session() {
        let (mut init, hello) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
        assert!(matches!(
            init.on_welcome(SESSION),
            Err(HandshakeError::OutOfOrder(_))
        ));
        let (_, c) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), SESSION);
        init.on_challenge(&c).expect("genuine");
        assert_eq!(
            init.on_welcome(SESSION + 1),
            Err(HandshakeError::UnexpectedSession {
                expected: SESSION,
                got: SESSION + 1
            })
        );
        assert_eq!(init.on_welcome(SESSION).map(|s| s.id), Ok(SESSION));
    }

    #[test]
    fn session_zero_is_refused() {
        let (mut init, hello) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
        let (_, c) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), 0);
        assert!(matches!(init.on_challenge(&c), Err(HandshakeError::Malformed(_))));
        assert!(matches!(
            decode_challenge(&encode_payload(&c)),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn proof_matches_a_hand_computed_hmac() {
        // Pins the transcript layout and the key padding against the documented formula.
        let mut msg = Vec::new();
        msg.extend_from_slice(b"vnet/1 responder");
        for s in ["a-b", "host-a", "host-b"] {
            msg.push(s.len() as u8);
            msg.extend_from_slice(s.as_bytes());
        }
        msg.extend_from_slice(&NONCE_I);
        msg.extend_from_slice(&NONCE_R);
        let (_, hello) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
        let (_, c) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), SESSION);
        msg.extend_from_slice(&crate::crypto::ephemeral_public(&offer(NONCE_I).ephemeral_secret));
        msg.extend_from_slice(&crate::crypto::ephemeral_public(&offer(NONCE_R).ephemeral_secret));
        msg.extend_from_slice(&0u32.to_be_bytes());
        msg.extend_from_slice(&0u32.to_be_bytes());
        msg.extend_from_slice(&[0; 32]);
        msg.extend_from_slice(&SESSION.to_be_bytes());
        let mut m = HmacSha256::new_from_slice(&KEY).expect("any key length");
        m.update(&msg);
        let want: [u8; 32] = m.finalize().into_bytes().into();

        assert_eq!(c.proof, want);
    }

    #[test]
    fn key_hex() {
        let hex64 = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = NetworkKey::from_hex(&format!("  {hex64}\n")).expect("valid");
        assert_eq!(k.to_hex(), hex64.to_lowercase());
        assert_eq!(NetworkKey::from_hex(&k.to_hex()), Ok(k.clone()));

        for bad in ["", "   \n", "abcd", &hex64[..63], &format!("{hex64}0")] {
            match NetworkKey::from_hex(bad) {
                Err(HandshakeError::BadKey(m)) => assert!(m.contains("64"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let with_g = format!("g{}", &hex64[1..]);
        let inner_space = format!("{} {}", &hex64[..32], &hex64[32..]);
        for bad in [with_g.as_str(), &inner_space, "0x0011", "ü"] {
            match NetworkKey::from_hex(bad) {
                Err(HandshakeError::BadKey(m)) => {
                    assert!(m.contains("not a hex digit"), "{m}");
                    // The error never quotes the key text.
                    assert!(!m.contains(&hex64[40..50]), "{m}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = NetworkKey::from_bytes([0xab; 32]);
        let d = format!("{k:?}");
        assert!(!d.contains("ab") && !d.contains("171"), "{d}");
        let (init, _) = Initiator::new(k.clone(), &name("a"), &name("l"), offer(NONCE_I));
        let d = format!("{init:?}");
        assert!(!d.contains("171") && !d.contains("abab"), "{d}");
        let h = Hello {
            link: name("l"),
            node: name("a"),
            nonce: NONCE_I,
            ephemeral: [9; 32],
            caps: 0,
        };
        let (resp, _) = Responder::on_hello(k, &name("b"), &h, offer(NONCE_R), 1);
        assert!(!format!("{resp:?}").contains("171"));
    }

    #[test]
    fn decoders_parse_every_name() {
        // What a peer may send: a Hello's or a Challenge's fields, with any text as names.
        let hello =
            |link: &str, node: &str| postcard::to_stdvec(&(link, node, NONCE_I, [9u8; 32], 0u32)).unwrap();
        let challenge =
            |node: &str| postcard::to_stdvec(&(node, NONCE_R, 1u32, [9u8; 32], 0u32, [0u8; 32])).unwrap();
        let decoded = decode_hello(&hello("l", "a")).unwrap();
        assert_eq!((&decoded.link, &decoded.node), (&name("l"), &name("a")));
        // Names encode as their text: the Hello's bytes are those of the plain fields.
        assert_eq!(encode_payload(&decoded), hello("l", "a"));
        assert_eq!(
            decode_hello(&hello("bad link", "a")).map_err(|e| e.to_string()),
            Err(
                "bad name in hello: name \"bad link\" contains ' '; only A-Z a-z 0-9 . _ - are allowed"
                    .into()
            )
        );
        assert!(matches!(
            decode_hello(&hello("l", &"x".repeat(65))),
            Err(HandshakeError::BadName(m)) if m.contains("is 65 bytes long")
        ));
        assert_eq!(decode_challenge(&challenge("b")).map(|c| c.node), Ok(name("b")));
        assert_eq!(
            decode_challenge(&challenge("")),
            Err(HandshakeError::BadName("challenge: name is empty".into()))
        );
        // A name that is not even text is a malformed message.
        let mut not_text = hello("l", "a");
        not_text[1] = 0xff;
        assert!(matches!(
            decode_hello(&not_text),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn bad_name_errors_are_bounded() {
        let long = "\u{202e}".repeat(1000);
        let msg = postcard::to_stdvec(&(long.as_str(), "a", NONCE_I, [9u8; 32], 0u32)).unwrap();
        let Err(HandshakeError::BadName(m)) = decode_hello(&msg) else {
            panic!("should fail");
        };
        assert!(m.len() < 1000, "{}", m.len());
        assert!(!m.contains('\u{202e}'), "control characters are escaped");
    }

    #[test]
    fn refused() {
        let r = Refused::new("bad proof");
        assert_eq!(decode_refused(&encode_payload(&r)), Ok(r));
        // Cut to the limit on a character boundary.
        let r = Refused::new(&"é".repeat(150));
        assert_eq!(r.reason.len(), MAX_REASON_LEN);
        assert_eq!(decode_refused(&encode_payload(&r)), Ok(r));
        let long = Refused {
            reason: "x".repeat(MAX_REASON_LEN + 1),
        };
        assert!(matches!(
            decode_refused(&encode_payload(&long)),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_payloads() {
        assert!(matches!(decode_proof(&[]), Err(HandshakeError::Malformed(_))));
        assert!(matches!(
            decode_proof(&[0; 31]),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            decode_proof(&[0; 33]),
            Err(HandshakeError::Malformed(m)) if m.contains("trailing")
        ));
        assert!(decode_proof(&[0; 32]).is_ok());
        // A string whose length prefix runs past the end.
        assert!(matches!(
            decode_refused(&[0x7f, b'a']),
            Err(HandshakeError::Malformed(_))
        ));
        // Invalid UTF-8.
        assert!(matches!(
            decode_refused(&[2, 0xff, 0xfe]),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn payload_kinds() {
        assert_eq!(Hello::KIND, Kind::Hello);
        assert_eq!(Challenge::KIND, Kind::Challenge);
        assert_eq!(Proof::KIND, Kind::Proof);
        assert_eq!(Refused::KIND, Kind::Refused);
    }

    fn any_name() -> impl Strategy<Value = Name> {
        "[A-Za-z0-9._-]{1,64}".prop_map(|s| name(&s))
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_hello(&b);
            let _ = decode_challenge(&b);
            let _ = decode_proof(&b);
            let _ = decode_refused(&b);
        }

        #[test]
        fn payload_round_trips(
            link in any_name(), node in any_name(),
            nonce in any::<[u8; 32]>(), proof in any::<[u8; 32]>(),
            session in 1u32..,
        ) {
            let h = Hello { link, node: node.clone(), nonce, ephemeral: proof, caps: session };
            prop_assert_eq!(decode_hello(&encode_payload(&h)), Ok(h));
            let c = Challenge { node, nonce, session, ephemeral: nonce, caps: session, proof };
            prop_assert_eq!(decode_challenge(&encode_payload(&c)), Ok(c));
            let p = Proof { proof };
            prop_assert_eq!(decode_proof(&encode_payload(&p)), Ok(p));
        }

        #[test]
        fn any_names_and_nonces_handshake(
            link in any_name(), ni in any_name(), nr in any_name(),
            nonce_i in any::<[u8; 32]>(), nonce_r in any::<[u8; 32]>(),
            session in 1u32..,
        ) {
            prop_assume!(ni != nr);
            let (mut init, hello) = Initiator::new(key(), &ni, &link, offer(nonce_i));
            let (resp, c) = Responder::on_hello(key(), &nr, &hello, offer(nonce_r), session);
            let p = init.on_challenge(&c).expect("same key");
            let r = resp.on_proof(&p).expect("same key");
            let i = init.on_welcome(session).expect("same key");
            prop_assert_eq!((r.id, &r.link, &r.peer_node, r.initiator), (session, &link, &ni, false));
            prop_assert_eq!((i.id, &i.link, &i.peer_node, i.initiator), (session, &link, &nr, true));
            // Both ends hold the same keys: what one seals, the other opens.
            prop_assert_eq!(&r.keys, &i.keys);
        }

        #[test]
        fn any_bit_flip_in_the_challenge_fails(bit in 0usize..(8 * (32 + 4 + 32))) {
            let (mut init, hello) = Initiator::new(key(), &name("host-a"), &name("a-b"), offer(NONCE_I));
            let (_, mut c) = Responder::on_hello(key(), &name("host-b"), &hello, offer(NONCE_R), SESSION);
            match bit {
                b if b < 256 => flip(&mut c.nonce, b),
                b if b < 256 + 32 => c.session ^= 1 << (b - 256),
                b => flip(&mut c.proof, b - 256 - 32),
            }
            let r = init.on_challenge(&c);
            if c.session == 0 {
                prop_assert!(matches!(r, Err(HandshakeError::Malformed(_))));
            } else {
                prop_assert_eq!(r, Err(HandshakeError::BadProof));
            }
        }
    }
}
