//! Local interfaces: TAP devices and captured (packet-socket) devices, and the task that
//! reads frames from one and forwards them.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::daemon::Daemon;
use crate::threads::{thread_name, DataThread, Stop};
use vnet_core::config::{default_tap_mtu, IfaceKind, IfaceSpec};
use vnet_core::forward::DropReason;
use vnet_core::forward::PortStats;
use vnet_core::name::Name;
use vnet_core::offload::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use vnet_core::table::PortId;
use vnet_core::wire::DEFAULT_HOP_LIMIT;

/// Largest read from a device: a 64 KiB super-frame behind its virtio-net header (or a
/// jumbo frame of an MTU up to 65000).
const MAX_DEVICE_READ: usize = VIRTIO_NET_HDR_LEN + 65_535 + 64;

/// Opens the device of an interface: a TAP's queues (up to `queues`), or one packet
/// socket. A TAP without an MTU gets [`default_tap_mtu`] of the daemon's `link_mtu`.
pub fn open(spec: &IfaceSpec, link_mtu: u32, queues: usize) -> std::io::Result<Vec<File>> {
    match spec.kind {
        IfaceKind::Tap => vnet_sys::open_tap(&vnet_sys::TapParams {
            device: spec.device().to_string(),
            netns: spec.netns.as_ref().map(Name::to_string),
            mac: spec.mac.map(|m| m.0),
            mtu: spec.mtu.unwrap_or_else(|| default_tap_mtu(link_mtu)),
            offload: spec.offload,
            queues,
        }),
        IfaceKind::Attach => {
            if spec.netns.is_some() {
                return Err(std::io::Error::new(
                    ErrorKind::Unsupported,
                    "attach interfaces live in the daemon's namespace; drop `netns`",
                ));
            }
            let sock = vnet_sys::open_packet_socket(spec.device(), spec.offload)?;
            // The kernel queues captured frames here while we forward; the default
            // buffer overflows under a single TCP stream.
            if let Err(e) = vnet_sys::grow_socket_buffers(&sock, 4 * 1024 * 1024) {
                tracing::warn!(iface = %spec.name, "cannot grow the packet socket's buffers: {e}");
            }
            Ok(vec![sock])
        }
    }
}

/// Starts the thread that reads one queue of a device and forwards every frame as
/// arriving on `port`, and the task that reports the interface failed if that thread ends
/// with an error.
pub fn spawn_reader(
    daemon: Arc<Daemon>,
    name: Name,
    port: PortId,
    device: Arc<File>,
    vnet_hdr: bool,
    stats: Arc<PortStats>,
) -> std::io::Result<(DataThread, JoinHandle<()>)> {
    let thread_daemon = daemon.clone();
    let (thread, result) = DataThread::spawn(thread_name("if", &name), Stop::new()?, move |stop: &Stop| {
        read_loop(&thread_daemon, port, &device, vnet_hdr, &stats, stop)
    })?;
    let watcher = tokio::spawn(async move {
        if let Ok(Err(e)) = result.await {
            tracing::error!(iface = %name, "interface stopped: {e}");
            daemon.iface_failed(&name, e.to_string());
        }
    });
    Ok((thread, watcher))
}

/// Reads frames until the device fails or the thread is stopped (then `Ok`), forwarding
/// each one to completion before the next read.
fn read_loop(
    daemon: &Daemon,
    port: PortId,
    device: &File,
    vnet_hdr: bool,
    stats: &PortStats,
    stop: &Stop,
) -> std::io::Result<()> {
    let mut worker = daemon.datapath.worker();
    let mut buf = vec![0u8; MAX_DEVICE_READ];
    let readable = vnet_sys::Interest {
        read: true,
        write: false,
    };
    while !stop.is_set() {
        match (&*device).read(&mut buf) {
            Ok(0) => return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "device closed")),
            Ok(n) if vnet_hdr => match VirtioNetHdr::decode(&buf[..n]) {
                Ok(hdr) => {
                    let frame = &buf[VIRTIO_NET_HDR_LEN..n];
                    stats.rx(frame.len());
                    daemon
                        .datapath
                        .forward_with(&mut worker, port, &hdr, frame, DEFAULT_HOP_LIMIT);
                }
                Err(_) => daemon.datapath.drops.add(DropReason::Runt),
            },
            Ok(n) => {
                stats.rx(n);
                daemon
                    .datapath
                    .forward(&mut worker, port, &buf[..n], DEFAULT_HOP_LIMIT);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Drained: report once per batch, then sleep until the next frame.
                daemon.datapath.report_cache(&mut worker);
                vnet_sys::wait(device, readable, stop.waker(), None)?;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    daemon.datapath.report_cache(&mut worker);
    Ok(())
}
