//! Link encryption, pure: session keys from the handshake, the sealed message format and
//! its replay window. The ChaCha20-Poly1305 sealer and opener themselves are in
//! `vnet-seal` (ring's vectorized cipher links C and libc, which this crate must not).
//!
//! Keys come from an ephemeral X25519 exchange inside the authenticated handshake
//! ([`crate::handshake`]), so they are fresh per session (forward secrecy: a network key
//! that leaks later does not decrypt recorded traffic) and unknown to other overlay
//! members, who hold the network key but not the ephemeral secrets:
//!
//! ```text
//! ikm  = X25519(e_self, e_peer)
//! okm  = HKDF-SHA256(salt = transcript hash, ikm, info = "vnet/1 link keys") (64 bytes)
//! keys = okm[0..32] initiator → responder, okm[32..64] responder → initiator
//! ```
//!
//! A sealed message is `counter (u64, big endian) || ciphertext || tag (16 bytes)`; the
//! counter is the AEAD nonce (zero-padded to 96 bits) and is never reused under one key.
//! The receiver accepts each counter once, within a window of the last
//! [`REPLAY_WINDOW`] counters (UDP reorders; TCP is simply in order).

use hkdf::Hkdf;
use sha2::Sha256;

/// Bytes a sealed message adds: the counter and the tag.
pub const SEAL_OVERHEAD: usize = 8 + 16;
/// How far behind the newest counter a message may arrive and still be accepted.
pub const REPLAY_WINDOW: u64 = 1024;

const KEY_INFO: &[u8] = b"vnet/1 link keys";

/// Why a message cannot be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Shorter than a counter and a tag.
    #[error("sealed message too short")]
    Truncated,
    /// The tag does not verify: wrong key, or the message was altered.
    #[error("message failed authentication")]
    Forged,
    /// The counter was seen already or is too old for the window.
    #[error("replayed or too old message (counter {0})")]
    Replay(u64),
    /// The sending counter is exhausted; the session must be renewed.
    #[error("send counter exhausted")]
    Exhausted,
    /// The peer's ephemeral key gives an all-zero shared secret (a low-order point).
    #[error("peer's ephemeral key is invalid")]
    BadEphemeral,
}

/// The two directions' keys of a session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Key of messages the initiator sends.
    pub initiator_to_responder: [u8; 32],
    /// Key of messages the responder sends.
    pub responder_to_initiator: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

impl SessionKeys {
    /// Derives the keys from our ephemeral secret, the peer's ephemeral public key and a
    /// hash of the authenticated transcript.
    pub fn derive(
        own_secret: &[u8; 32],
        peer_public: &[u8; 32],
        transcript: &[u8; 32],
    ) -> Result<SessionKeys, CryptoError> {
        let secret = x25519_dalek::StaticSecret::from(*own_secret);
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return Err(CryptoError::BadEphemeral);
        }
        let hk = Hkdf::<Sha256>::new(Some(transcript), shared.as_bytes());
        let mut okm = [0u8; 64];
        // 64 bytes is far below HKDF-SHA256's 8160-byte limit.
        hk.expand(KEY_INFO, &mut okm)
            .map_err(|_| CryptoError::BadEphemeral)?;
        let mut keys = SessionKeys {
            initiator_to_responder: [0; 32],
            responder_to_initiator: [0; 32],
        };
        keys.initiator_to_responder.copy_from_slice(&okm[..32]);
        keys.responder_to_initiator.copy_from_slice(&okm[32..]);
        Ok(keys)
    }

    /// The (send, receive) keys for one side.
    pub fn for_side(&self, initiator: bool) -> ([u8; 32], [u8; 32]) {
        if initiator {
            (self.initiator_to_responder, self.responder_to_initiator)
        } else {
            (self.responder_to_initiator, self.initiator_to_responder)
        }
    }
}

/// The public key of an ephemeral secret (sent in the handshake).
pub fn ephemeral_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

/// Which counters have been seen: the newest one and a bitmap of the
/// [`REPLAY_WINDOW`] below it (RFC 6479 style, one bit per counter).
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// One more than the newest counter accepted (0: none yet).
    top: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: 0,
            bits: [0; (REPLAY_WINDOW / 64) as usize],
        }
    }
}

impl ReplayWindow {
    fn slot(counter: u64) -> (usize, u64) {
        let i = counter % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Whether `counter` may be accepted (not seen, not too old).
    pub fn fresh(&self, counter: u64) -> bool {
        if counter >= self.top {
            return true;
        }
        if self.top - counter > REPLAY_WINDOW {
            return false;
        }
        let (word, bit) = Self::slot(counter);
        self.bits[word] & bit == 0
    }

    /// Records `counter` as seen (call only after [`ReplayWindow::fresh`] and
    /// authentication succeeded).
    pub fn mark(&mut self, counter: u64) {
        if counter >= self.top {
            // Clear the slots the window slides over; they now stand for new counters.
            let advance = (counter + 1 - self.top).min(REPLAY_WINDOW);
            for c in self.top..self.top + advance {
                let (word, bit) = Self::slot(c);
                self.bits[word] &= !bit;
            }
            self.top = counter + 1;
        }
        let (word, bit) = Self::slot(counter);
        self.bits[word] |= bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair() -> (SessionKeys, SessionKeys) {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let t = [7u8; 32];
        let ka = SessionKeys::derive(&a, &ephemeral_public(&b), &t).unwrap();
        let kb = SessionKeys::derive(&b, &ephemeral_public(&a), &t).unwrap();
        (ka, kb)
    }

    #[test]
    fn both_sides_derive_the_same_keys_and_directions_differ() {
        let (ka, kb) = pair();
        assert_eq!(ka, kb);
        assert_ne!(ka.initiator_to_responder, ka.responder_to_initiator);
        let other = SessionKeys::derive(&[1u8; 32], &ephemeral_public(&[2u8; 32]), &[8u8; 32]).unwrap();
        assert_ne!(other, ka, "the transcript is bound into the keys");
    }

    #[test]
    fn low_order_peer_keys_are_refused() {
        assert_eq!(
            SessionKeys::derive(&[1u8; 32], &[0u8; 32], &[0u8; 32]),
            Err(CryptoError::BadEphemeral)
        );
    }

    proptest! {
        /// The window accepts each counter once and rejects only repeats or counters more
        /// than REPLAY_WINDOW behind the newest, against a naive set.
        #[test]
        fn replay_window_matches_a_naive_set(counters in proptest::collection::vec(0u64..5000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::HashSet::new();
            let mut newest: Option<u64> = None;
            for c in counters {
                let too_old = newest.is_some_and(|n| n >= c + REPLAY_WINDOW);
                let expect = !seen.contains(&c) && !too_old;
                prop_assert_eq!(w.fresh(c), expect, "counter {}", c);
                if expect {
                    w.mark(c);
                    seen.insert(c);
                    newest = Some(newest.map_or(c, |n| n.max(c)));
                }
            }
        }
    }
}
