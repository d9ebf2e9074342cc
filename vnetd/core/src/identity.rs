//! Who a peer is: the contract between the link session, which runs the handshake and
//! learns the peer's static key and the certificate bytes it presented, and the trust
//! store, which checks that certificate against the overlay's CA, its validity period and
//! the revocation list.
//!
//! The session never parses a certificate: it hands the bytes to a [`PeerVerifier`] and
//! acts on the [`VerifiedPeer`] it gets back (is this the node at the link's other end?).
//! An implementation that needs the wall clock (expiry) reads it itself: the pure trust
//! store takes the time as an argument, and the daemon's adapter supplies it.

use std::fmt;

use crate::mac::MacAddr;
use crate::name::Name;

/// Length of a static public key (Curve25519, Noise's `s`).
pub const STATIC_KEY_LEN: usize = 32;

/// A host's static public key, as the handshake carries it.
pub type StaticPublic = [u8; STATIC_KEY_LEN];

/// A peer the trust store vouches for: the facts its certificate binds to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPeer {
    /// The node name the certificate was issued to.
    pub node: Name,
    /// The source MAC addresses that node's VMs may use.
    pub vm_macs: Vec<MacAddr>,
    /// End of the certificate's validity, seconds since the Unix epoch.
    pub not_after_unix: u64,
}

/// Why a peer's certificate is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The bytes do not decode as a certificate.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The certificate was signed by another CA than the overlay's.
    #[error("certificate signed by another CA")]
    UnknownIssuer,
    /// The CA signature does not verify.
    #[error("bad CA signature")]
    BadSignature,
    /// The certificate's validity has not begun.
    #[error("certificate not valid before {not_before_unix} (now {now_unix})")]
    NotYetValid {
        /// Start of validity, Unix seconds.
        not_before_unix: u64,
        /// The verifier's clock, Unix seconds.
        now_unix: u64,
    },
    /// The certificate's validity has ended.
    #[error("certificate expired at {not_after_unix} (now {now_unix})")]
    Expired {
        /// End of validity, Unix seconds.
        not_after_unix: u64,
        /// The verifier's clock, Unix seconds.
        now_unix: u64,
    },
    /// The CA revoked the certificate.
    #[error("certificate revoked")]
    Revoked,
    /// The certificate binds another static key than the one the peer proved it holds.
    #[error("certificate is for another key")]
    KeyMismatch,
}

/// Checks the certificate a peer presented in a handshake.
pub trait PeerVerifier: Send + Sync + fmt::Debug {
    /// Accepts `certificate` when it is a valid, unrevoked certificate of the overlay's CA
    /// binding `static_key`, now (the implementation's clock).
    fn verify(&self, certificate: &[u8], static_key: &StaticPublic) -> Result<VerifiedPeer, VerifyError>;
}
