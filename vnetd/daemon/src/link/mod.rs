//! Link drivers: TCP (length-framed messages on a stream), UDP (one message per
//! datagram) and QUIC (the handshake on a stream, frames as datagrams). They only move
//! bytes: each path's lifecycle (handshake, keepalives, dead peer, reset) is a
//! [`vnet_core::session::LinkSession`], every UDP link's sessions one
//! [`vnet_core::endpoint::Endpoint`]; the drivers feed them what arrives, send what
//! they poll, and open, seal and forward the frames.

pub(crate) mod meter;
pub mod probe;
pub mod quic;
pub mod stream;
pub mod tcp;
pub mod udp;

use std::sync::{Arc, Mutex};

use crate::daemon::LinkInfo;

/// Kernel buffers of a UDP or QUIC link socket, each way: the default (about 200 KiB)
/// overflows within a millisecond at link speed, and every datagram it drops is a frame
/// lost to the VMs.
pub(crate) const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Largest super-frame a link's coalescer builds (a TAP takes 64 KiB, IP lengths limit it
/// too), and most segments in it.
const GRO_MAX_BYTES: usize = 65_535 - 100;
const GRO_MAX_SEGMENTS: usize = 64;

/// A coalescer for frames received on a link, building super-frames a TAP takes.
pub(crate) fn tap_coalescer() -> vnet_core::gro::Coalescer {
    vnet_core::gro::Coalescer::new(GRO_MAX_BYTES, GRO_MAX_SEGMENTS)
}

/// Forwards what the coalescer emits as received on link `port`.
pub(crate) fn forward_from<'a>(
    daemon: &'a crate::daemon::Daemon,
    worker: &'a mut crate::datapath::Worker,
    port: vnet_core::table::PortId,
    stats: &'a vnet_core::forward::PortStats,
) -> impl FnMut(u8, &vnet_core::offload::VirtioNetHdr, &[u8]) + 'a {
    move |hops, hdr, frame| {
        stats.rx(frame.len());
        daemon.datapath.forward_with(worker, port, hdr, frame, hops);
    }
}

/// The randomness sessions draw (nonces, ephemeral secrets, session ids): the thread's
/// CSPRNG.
pub(crate) fn entropy() -> impl FnMut(&mut [u8]) + Send {
    |dest: &mut [u8]| rand::RngCore::fill_bytes(&mut rand::thread_rng(), dest)
}

/// Who this daemon is in handshakes.
pub(crate) fn credentials(daemon: &crate::daemon::Daemon) -> vnet_core::session::Credentials {
    vnet_core::session::Credentials {
        node: daemon.identity.node.clone(),
        key: daemon.identity.key.clone(),
    }
}

/// The frame a Frame message carries: opened with the session's opener when the link
/// encrypts (then an unsealed or forged frame is refused), the payload itself otherwise.
pub(crate) fn frame_payload<'a>(
    opener: Option<&mut vnet_seal::Opener>,
    header: &vnet_core::wire::Header,
    payload: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], vnet_core::forward::DropReason> {
    use vnet_core::forward::DropReason;
    let sealed = header.flags & vnet_core::wire::FLAG_SEALED != 0;
    match opener {
        Some(opener) if sealed => {
            vnet_seal::open_sealed_frame(opener, header, payload, scratch)
                .map_err(|_| DropReason::AuthFailed)?;
            Ok(scratch)
        }
        None if !sealed => Ok(payload),
        // A plaintext frame on an encrypted link, or a sealed one on a plain link.
        _ => Err(DropReason::AuthFailed),
    }
}

/// Forwards a frame received on a link, splitting off its virtio-net header when the
/// message carries one ([`vnet_core::wire::FLAG_VNET_HDR`]).
pub(crate) fn deliver(
    daemon: &crate::daemon::Daemon,
    worker: &mut crate::datapath::Worker,
    port: vnet_core::table::PortId,
    stats: &vnet_core::forward::PortStats,
    header: &vnet_core::wire::Header,
    payload: &[u8],
) -> Result<(), vnet_core::forward::DropReason> {
    use vnet_core::offload::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};
    if header.flags & vnet_core::wire::FLAG_VNET_HDR == 0 {
        stats.rx(payload.len());
        daemon.datapath.forward(worker, port, payload, header.hop_limit);
        return Ok(());
    }
    let hdr = VirtioNetHdr::decode(payload).map_err(|_| vnet_core::forward::DropReason::BadMessage)?;
    let frame = &payload[VIRTIO_NET_HDR_LEN..];
    stats.rx(frame.len());
    daemon
        .datapath
        .forward_with(worker, port, &hdr, frame, header.hop_limit);
    Ok(())
}

/// Updates a link's reported status.
pub(crate) fn update(info: &Arc<Mutex<LinkInfo>>, f: impl FnOnce(&mut LinkInfo)) {
    f(&mut info.lock().unwrap_or_else(|p| p.into_inner()));
}
