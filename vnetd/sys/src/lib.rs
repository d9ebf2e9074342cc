//! Every `unsafe` call of vnet: TAP ioctls, packet sockets, network namespaces.
//!
//! Each function returns owned, non-blocking file descriptors; reads and writes then go
//! through safe `std::fs::File` methods.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
/// UDP segmentation offload (Linux 6.2): the kernel hands over UDP GSO super-frames too.
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;
/// PACKET_IGNORE_OUTGOING (Linux 4.20): the packet socket does not see the frames it sends.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad device name `{name}`"),
        ));
    }
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(ifr)
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A socket for interface ioctls (SIOCSIFHWADDR and friends) in the current namespace.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes only integers and touches no memory of ours; the fd it
    // returns is owned right below.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Settings for a TAP device.
#[derive(Debug, Clone)]
pub struct TapParams {
    /// Kernel device name.
    pub device: String,
    /// Named network namespace to create it in (`/run/netns/NAME`).
    pub netns: Option<String>,
    /// MAC address to set.
    pub mac: Option<[u8; 6]>,
    /// MTU to set.
    pub mtu: u32,
    /// Read and write frames behind a virtio-net header, with checksum and TCP
    /// segmentation offload: the kernel hands over 64 KiB TCP super-frames.
    pub offload: bool,
    /// Queues to open (at least 1). More than one makes a multi-queue TAP: the kernel
    /// hands each flow to one queue.
    pub queues: usize,
}

/// Creates (or re-attaches to) a persistent TAP device, sets its MAC and MTU, brings it up
/// and returns its non-blocking queue fds (fewer than asked when the device exists as a
/// single-queue TAP). With `netns`, all of it happens inside that namespace on a
/// short-lived thread, so the daemon's own threads never change namespace.
pub fn open_tap(params: &TapParams) -> io::Result<Vec<File>> {
    match &params.netns {
        None => open_tap_here(params),
        Some(ns) => {
            let ns_path = format!("/run/netns/{ns}");
            let ns_file = File::open(&ns_path)
                .map_err(|e| io::Error::new(e.kind(), format!("network namespace {ns_path}: {e}")))?;
            let params = params.clone();
            std::thread::spawn(move || {
                // SAFETY: setns on a namespace fd we opened; it changes only this thread,
                // which exits right after.
                cvt(unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) })?;
                open_tap_here(&params)
            })
            .join()
            .map_err(|_| io::Error::other("TAP creation thread panicked"))?
        }
    }
}

/// Opens one queue of TAP `device` with `flags`.
fn attach_tap_queue(device: &str, flags: libc::c_short) -> io::Result<File> {
    let path = CString::new("/dev/net/tun").map_err(io::Error::other)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call, which only reads
    // it; the fd it returns is owned right below.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: fd is fresh and owned by nobody else.
    let tap = unsafe { File::from_raw_fd(fd) };
    let mut ifr = ifreq_for(device)?;
    ifr.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads and writes an ifreq we own, on a tun fd.
    cvt(unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETIFF, &mut ifr) })?;
    Ok(tap)
}

fn open_tap_here(params: &TapParams) -> io::Result<Vec<File>> {
    let base = IFF_TAP | IFF_NO_PI | if params.offload { IFF_VNET_HDR } else { 0 };
    let multi = params.queues > 1;
    let wanted = if multi { base | IFF_MULTI_QUEUE } else { base };
    // A persistent device keeps the queue mode it was created with; take it as it is.
    let (tap, flags) = match attach_tap_queue(&params.device, wanted) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let other = wanted ^ IFF_MULTI_QUEUE;
            (attach_tap_queue(&params.device, other), other)
        }
        first => (first, wanted),
    };
    let tap = tap.map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            // An existing device of another kind (a TUN, a veth) of that name.
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "device `{}` exists and is not a TAP vnetd can open: delete it \
                     (ip link del {}) or choose another device name",
                    params.device, params.device
                ),
            )
        } else {
            e
        }
    })?;
    // The offload mask is device-wide and persists: set it either way, so a device once
    // opened with offloads never hands super-frames to a reader that cannot take them.
    let offloads = if params.offload {
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    } else {
        0
    };
    let set_offloads = |mask: libc::c_ulong| {
        // SAFETY: TUNSETOFFLOAD takes an integer argument, on a tun fd we own.
        cvt(unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETOFFLOAD, mask) })
    };
    // USO where the kernel has it (EINVAL before 6.2); TSO and checksums either way.
    if offloads == 0 || set_offloads(offloads | TUN_F_USO4 | TUN_F_USO6).is_err() {
        set_offloads(offloads)?;
    }
    // Persistent, so the VM keeps its NIC (and addresses) across a daemon restart.
    // SAFETY: TUNSETPERSIST takes an integer argument, not a pointer, on a tun fd we own.
    cvt(unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) })?;
    let sock = ioctl_socket()?;
    if let Some(mac) = params.mac {
        let mut ifr = ifreq_for(&params.device)?;
        // SAFETY: ifru_hwaddr is a plain-data sockaddr member of the union in an ifreq we
        // own; any bytes are a valid sockaddr, so writing its fields cannot make an
        // invalid value.
        unsafe {
            ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (d, s) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                *d = s as libc::c_char;
            }
        }
        // SAFETY: SIOCSIFHWADDR reads the ifreq we own.
        cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFHWADDR, &ifr) })?;
    }
    let mut ifr = ifreq_for(&params.device)?;
    ifr.ifr_ifru.ifru_mtu = params.mtu as libc::c_int;
    // SAFETY: SIOCSIFMTU reads the ifreq we own.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &ifr) })?;
    set_up(sock.as_raw_fd(), &params.device)?;
    let mut queues = vec![tap];
    if flags & IFF_MULTI_QUEUE != 0 {
        for _ in 1..params.queues {
            queues.push(attach_tap_queue(&params.device, flags)?);
        }
    }
    Ok(queues)
}

fn set_up(sock: RawFd, device: &str) -> io::Result<()> {
    let mut ifr = ifreq_for(device)?;
    // SAFETY: SIOCGIFFLAGS fills the ifreq we own.
    cvt(unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr) })?;
    // SAFETY: reading and writing the flags member that SIOCGIFFLAGS just filled.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    cvt(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr) })?;
    Ok(())
}

/// Clears the persist flag so the device disappears when `tap` is closed (interface
/// deletion, as opposed to a daemon restart).
pub fn tap_unpersist(tap: &File) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes an integer argument, on a tun fd we own.
    cvt(unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETPERSIST, 0 as libc::c_ulong) })?;
    Ok(())
}

/// Opens a non-blocking AF_PACKET socket bound to `device`, in promiscuous mode, that does
/// not see its own transmissions. Reads return whole Ethernet frames; writes inject them.
/// With `vnet_hdr` (PACKET_VNET_HDR), both go behind a virtio-net header, as on a TAP with
/// offloads: the VM's TSO super-frames arrive whole, and super-frames written are
/// segmented by the kernel where the device needs it.
pub fn open_packet_socket(device: &str, vnet_hdr: bool) -> io::Result<File> {
    let name = CString::new(device).map_err(io::Error::other)?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call, which only
    // reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no device `{device}`"),
        ));
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket(2) takes only integers and touches no memory of ours; the fd it
    // returns is owned right below.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto as libc::c_int,
        )
    })?;
    // SAFETY: fd is fresh and owned by nobody else.
    let sock = unsafe { File::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as libc::c_int;
    // SAFETY: bind with a pointer to a sockaddr_ll we own and its exact size.
    cvt(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    // SAFETY: packet_mreq is plain data; all-zero is valid.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = index as libc::c_int;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    setsockopt(
        sock.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_ADD_MEMBERSHIP,
        &mreq,
    )?;
    setsockopt(
        sock.as_raw_fd(),
        libc::SOL_PACKET,
        PACKET_IGNORE_OUTGOING,
        &1 as &libc::c_int,
    )?;
    if vnet_hdr {
        setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            &1 as &libc::c_int,
        )?;
    }
    Ok(sock)
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points to a live T of the size we pass.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Sends signal `sig` to the single process `pid`; false when it does not exist. Refuses
/// PIDs <= 1 (which would name a process group, every process, or init).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> bool {
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; pid > 1 names
    // one process.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Reaps `pid` if it is an exited child of ours; true when it was reaped. For a PID that
/// is not our child this does nothing and returns false.
pub fn reap_if_exited(pid: libc::pid_t) -> bool {
    if pid <= 1 {
        return false;
    }
    let mut status = 0;
    // SAFETY: waitpid(2) with WNOHANG writes only the status integer we pass.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
}

/// Asks for `bytes` of socket receive and send buffer, beyond `net.core.rmem_max` when
/// privileged (SO_RCVBUFFORCE), so bursts are queued rather than dropped by the kernel.
/// Best effort: returns the error of the plain request if even that fails.
pub fn grow_socket_buffers(fd: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, force, &size).is_err() {
            setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, plain, &size)?;
        }
    }
    Ok(())
}

/// UDP_SEGMENT (Linux 4.18): the kernel cuts one send into datagrams of this size.
const UDP_SEGMENT: libc::c_int = 103;

/// Sends `buf` to `to` as datagrams of `segment` bytes each (the last may be shorter) in
/// one `sendmsg` with UDP generic segmentation offload. Fails with EIO or EINVAL where the
/// kernel or device cannot; the caller then sends the datagrams one by one.
pub fn send_udp_gso(
    socket: &impl AsRawFd,
    buf: &[u8],
    segment: u16,
    to: std::net::SocketAddr,
) -> io::Result<usize> {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let addr_len = match to {
        std::net::SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger and more strictly aligned than
            // sockaddr_in, which is plain data: the cast reference is in bounds, aligned
            // and valid, and `addr` is not used otherwise while it lives.
            let a = unsafe { &mut *(&mut addr as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_port = v4.port().to_be();
            a.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is larger and more strictly aligned than
            // sockaddr_in6, which is plain data: the cast reference is in bounds, aligned
            // and valid, and `addr` is not used otherwise while it lives.
            let a = unsafe { &mut *(&mut addr as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            a.sin6_port = v6.port().to_be();
            a.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            a.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsg carrying a u16, aligned as the kernel expects.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut addr as *mut libc::sockaddr_storage as *mut libc::c_void;
    msg.msg_namelen = addr_len as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: CMSG_SPACE computes a size from an integer; it touches no memory.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as _;
    // SAFETY: msg_control points to `control`, large enough for one cmsg with a u16
    // (CMSG_SPACE(2) = 24 bytes <= 32), so CMSG_FIRSTHDR is non-null and in bounds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment);
    }
    // SAFETY: every pointer in msg refers to live locals or to `buf`, valid for the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// UDP_GRO (Linux 5.0): the kernel may hand several datagrams of one flow to one receive,
/// telling their size in a control message.
const UDP_GRO: libc::c_int = 104;

/// Asks the kernel to coalesce received datagrams (UDP_GRO). Best effort.
pub fn enable_udp_gro(socket: &impl AsRawFd) -> io::Result<()> {
    setsockopt(socket.as_raw_fd(), libc::SOL_UDP, UDP_GRO, &1 as &libc::c_int)
}

/// Receives into `buf` without blocking: the byte count, the sender, and, when the kernel
/// coalesced several datagrams (UDP_GRO), their size (all equal but the last).
pub fn recv_udp_gro(
    socket: &impl AsRawFd,
    buf: &mut [u8],
) -> io::Result<(usize, std::net::SocketAddr, Option<usize>)> {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut addr as *mut libc::sockaddr_storage as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in msg refers to live locals or to `buf`, valid for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut segment = None;
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/NXTHDR walk it
    // within those bounds and return null at the end.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
                segment = usize::try_from(size).ok().filter(|s| *s > 0);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let from = match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET sender;
            // sockaddr_storage is larger and more strictly aligned, so the reference is
            // in bounds and aligned.
            let a = unsafe { &*(&addr as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            std::net::SocketAddr::from((a.sin_addr.s_addr.to_ne_bytes(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 sender;
            // sockaddr_storage is larger and more strictly aligned, so the reference is
            // in bounds and aligned.
            let a = unsafe { &*(&addr as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram from an unknown address family",
            ))
        }
    };
    Ok((n as usize, from, segment))
}

/// An eventfd that wakes a data-path thread out of [`wait`]: fired to stop the thread, or
/// to tell it there is something to write.
#[derive(Debug)]
pub struct Waker(File);

impl Waker {
    /// A new, unfired waker.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd(2) takes plain integers; the fd is owned right away.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: fd is fresh and owned by nobody else.
        Ok(Waker(unsafe { File::from_raw_fd(fd) }))
    }

    /// Fires the waker; it stays fired until [`wait`] reports it.
    pub fn wake(&self) {
        use std::io::Write;
        // Fails only when the counter would overflow, i.e. when it is fired already.
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    fn clear(&self) {
        use std::io::Read;
        let mut count = [0u8; 8];
        // Fails only with EAGAIN, when the counter is zero already.
        let _ = (&self.0).read(&mut count);
    }
}

/// What [`wait`] waits for on its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Readable (or closed, or failed).
    pub read: bool,
    /// Writable.
    pub write: bool,
}

/// What [`wait`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The descriptor is readable, or hung up, or has an error (a read says which).
    pub readable: bool,
    /// The descriptor is writable.
    pub writable: bool,
    /// The waker fired (and is now cleared).
    pub woken: bool,
}

/// Blocks until `fd` is ready for `interest`, `waker` fires, or `timeout` passes (`None`:
/// no limit). An interrupted wait returns with nothing ready.
pub fn wait(
    fd: &impl AsRawFd,
    interest: Interest,
    waker: &Waker,
    timeout: Option<std::time::Duration>,
) -> io::Result<Readiness> {
    let mut events = 0;
    if interest.read {
        events |= libc::POLLIN;
    }
    if interest.write {
        events |= libc::POLLOUT;
    }
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: waker.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let timeout_ms = timeout.map_or(-1, |t| {
        // Round up, so a short timeout does not become a busy loop.
        libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: fds is a live array of two pollfd structs and we pass its length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Readiness::default())
        } else {
            Err(e)
        };
    }
    let ready = fds[0].revents;
    let woken = fds[1].revents & libc::POLLIN != 0;
    if woken {
        waker.clear();
    }
    Ok(Readiness {
        readable: ready & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
        writable: ready & (libc::POLLOUT | libc::POLLERR) != 0,
        woken,
    })
}
