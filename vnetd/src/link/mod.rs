//! Link drivers: TCP (length-framed messages on a stream) and UDP (one message per
//! datagram). Both open with the [`crate::handshake`] exchange and carry
//! [`crate::wire`] messages.

pub mod tcp;
pub mod udp;

use std::sync::{Arc, Mutex};

use crate::control::proto::LinkState;
use crate::daemon::LinkInfo;

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
