//! Link drivers: TCP (length-framed messages on a stream) and UDP (one message per
//! datagram). Both open with the [`crate::handshake`] exchange and carry
//! [`crate::wire`] messages.

pub mod quic;
pub mod stream;
pub mod tcp;
pub mod udp;

use std::sync::{Arc, Mutex};

use crate::control::proto::LinkState;
use crate::daemon::LinkInfo;

/// Fresh randomness and capabilities for one side of a handshake.
pub(crate) fn offer(caps: u32, binding: [u8; 32]) -> crate::handshake::Offer {
    crate::handshake::Offer {
        nonce: rand::random(),
        ephemeral_secret: rand::random(),
        caps,
        binding,
    }
}

/// Updates a link's reported status.
pub(crate) fn update(info: &Arc<Mutex<LinkInfo>>, f: impl FnOnce(&mut LinkInfo)) {
    f(&mut info.lock().unwrap_or_else(|p| p.into_inner()));
}

/// The state a link falls back to when its session ends.
pub(crate) fn idle_state(dials: bool) -> LinkState {
    if dials {
        LinkState::Connecting
    } else {
        LinkState::Waiting
    }
}
