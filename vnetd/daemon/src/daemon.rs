//! The daemon: the driver around the pure control state (`vnet_control::state`).
//!
//! One **control thread** owns the [`ControlState`]. Control requests (from the control
//! server's tasks) and driver events (an interface's reader failed) reach it through a
//! channel; it applies them and carries out the effects the state returns, in order:
//! opening TAPs and starting their reader threads, starting and stopping links, stopping
//! and joining threads, publishing tables, writing the state file. None of that runs on
//! the async runtime, and there is no state mutex: data-path threads never wait for the
//! control plane.
//!
//! What the drivers share outside the control thread, each behind its own small lock that
//! is never held while a thread is joined:
//! - the **port book**: the live send side of every port, published to the data path as
//!   a lock-free snapshot. Link sessions install and remove their send sides here
//!   ([`Daemon::link_up`], [`Daemon::link_down`]);
//! - the **link registry**: each running link's spec, port, counters and status cell, and
//!   the tasks that run it, so an acceptor can find the link a Hello names and deleting a
//!   link stops its tasks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use vnet_control::proto::{ControlError, Request, Response};
use vnet_control::state::{ControlState, Effect, Outcome, Reply, StateConfig};
use vnet_core::config::{IfaceSpec, LinkProto, LinkSpec, Topology};
use vnet_core::forward::PortStats;
use vnet_core::handshake::NetworkKey;
use vnet_core::name::Name;
use vnet_core::rule::Output;
use vnet_core::table::PortId;

use crate::datapath::{Datapath, Port, PortMap, PortTx};
use crate::iface;
use crate::link::{quic, tcp, udp};
use crate::threads::DataThread;

pub use vnet_control::state::{LinkInfo, SharedLinkInfo};

/// What a daemon is, apart from its topology.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Node name.
    pub node: Name,
    /// Overlay network key.
    pub key: NetworkKey,
    /// Link listen address.
    pub listen: SocketAddr,
    /// State file, if any.
    pub state_file: Option<PathBuf>,
    /// MTU of the underlay path links cross: UDP links segment TCP super-frames so each
    /// frame fits one packet.
    pub link_mtu: u32,
    /// Queues per TAP device, each with a reader thread.
    pub tap_queues: usize,
}

/// What the control thread is asked to do.
enum Command {
    /// A control request; the answer goes back on `reply`.
    Request {
        request: Request,
        reply: oneshot::Sender<Answer>,
    },
    /// An interface's reader stopped with an error.
    IfaceFailed { name: String, error: String },
}

/// The control thread's answer to a request.
enum Answer {
    /// The answer.
    Ready(Result<Response, ControlError>),
    /// Run this bandwidth probe and answer with its result.
    Probe {
        to: SocketAddr,
        max_bytes: Option<u64>,
        max_ms: Option<u64>,
    },
}

/// A running link, as the drivers find it.
struct LinkEntry {
    spec: LinkSpec,
    port: PortId,
    stats: Arc<PortStats>,
    info: SharedLinkInfo,
    /// The dialer task of a TCP or QUIC link that dials; its sessions run inside it.
    dialer: Option<JoinHandle<()>>,
    /// The session task of a link the peer dialed in.
    session: Option<JoinHandle<()>>,
}

impl LinkEntry {
    fn stop_tasks(&mut self) {
        for t in self.dialer.take().into_iter().chain(self.session.take()) {
            t.abort();
        }
    }
}

/// The live send side of every port, and the sessions that installed them.
#[derive(Default)]
struct PortBook {
    ports: Vec<Option<Port>>,
    /// Ports by name, for the drivers that ask (stable for the daemon's life, like the
    /// control state's registry they mirror).
    ids: HashMap<Output, (PortId, Arc<PortStats>)>,
    session_seq: u64,
}

/// The daemon.
pub struct Daemon {
    /// Who we are.
    pub identity: Identity,
    /// The shared data path.
    pub datapath: Arc<Datapath>,
    /// The UDP link socket and its thread's command queue.
    pub udp: udp::Handle,
    /// The QUIC endpoint links dial from and, with `quic_listen`, accept on.
    pub quic: quic::Endpoint,
    /// Admission of the bandwidth probes this daemon sends and answers.
    pub probes: crate::link::probe::Probes,
    control: Mutex<mpsc::Sender<Command>>,
    book: Mutex<PortBook>,
    links: Mutex<HashMap<String, LinkEntry>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("node", &self.identity.node)
            .finish_non_exhaustive()
    }
}

/// Locks a driver table: each holds plain data that a panicking holder leaves usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Daemon {
    /// Creates the daemon around an already bound UDP socket and starts its control
    /// thread, which spawns link tasks on the runtime `runtime`. Bring the configured
    /// topology up next with a `ConfigReplace` ([`Daemon::handle`]).
    pub fn new(
        identity: Identity,
        udp: udp::Handle,
        quic: quic::Endpoint,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Arc<Daemon>> {
        let datapath = Arc::new(Datapath::default());
        let config = StateConfig {
            node: identity.node.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            listen: identity.listen,
            quic_accepts: quic.accepts(),
        };
        let state = ControlState::new(config, datapath.dataplane.clone(), Instant::now());
        let (tx, rx) = mpsc::channel();
        let daemon = Arc::new(Daemon {
            identity,
            datapath,
            udp,
            quic,
            probes: Default::default(),
            control: Mutex::new(tx),
            book: Mutex::default(),
            links: Mutex::default(),
        });
        let weak = Arc::downgrade(&daemon);
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || control_thread(weak, state, rx, runtime))?;
        Ok(daemon)
    }

    fn send(&self, c: Command) -> Result<(), ControlError> {
        lock(&self.control)
            .send(c)
            .map_err(|_| ControlError::System("the daemon's control thread has stopped".into()))
    }

    /// Handles one control request (a probe takes as long as it sends; the rest answer
    /// at once).
    pub async fn handle(self: &Arc<Self>, request: Request) -> Result<Response, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Request { request, reply })?;
        let stopped = || ControlError::System("the daemon's control thread stopped while answering".into());
        match answer.await.map_err(|_| stopped())? {
            Answer::Ready(result) => result,
            Answer::Probe {
                to,
                max_bytes,
                max_ms,
            } => crate::link::probe::run(self, to, max_bytes, max_ms)
                .await
                .map(Response::Probe),
        }
    }

    /// Installs the send side of a session of link `link`; returns a token for
    /// [`Daemon::link_down`] (0, and nothing installed, if the link is not running).
    pub fn link_up(&self, link: &str, tx: PortTx) -> u64 {
        let Some(port) = lock(&self.links).get(link).map(|l| (l.port, l.stats.clone())) else {
            return 0;
        };
        let mut book = lock(&self.book);
        book.session_seq += 1;
        let token = book.session_seq;
        book.install(
            port.0,
            Port {
                name: Arc::from(link),
                is_link: true,
                tx,
                stats: port.1,
                session: token,
            },
        );
        self.datapath.publish_ports(book.map());
        token
    }

    /// Removes the send side of a link session, unless a newer session replaced it.
    pub fn link_down(&self, link: &Name, token: u64) {
        let mut book = lock(&self.book);
        let Some((port, _)) = book.ids.get(&Output::Link(link.clone())).cloned() else {
            return;
        };
        if book.live(port).is_some_and(|p| p.session == token) {
            book.remove(port);
            self.datapath.publish_ports(book.map());
        }
    }

    /// The port id and counters of a link or interface, for its driver. Every running
    /// link and interface has one; an output the daemon never ran gets a port id no
    /// table uses and counters nobody reads.
    pub fn port(&self, output: &Output) -> (PortId, Arc<PortStats>) {
        lock(&self.book)
            .ids
            .get(output)
            .cloned()
            .unwrap_or_else(|| (PortId(u32::MAX), Arc::default()))
    }

    /// The spec and status cell of a running link.
    pub fn link(&self, name: &str) -> Option<(LinkSpec, SharedLinkInfo)> {
        lock(&self.links)
            .get(name)
            .map(|l| (l.spec.clone(), l.info.clone()))
    }

    /// Registers the session task of a link the peer dialed in, so deleting the link
    /// stops it; a new session replaces (aborts) the previous one.
    pub fn replace_session_task(&self, link: &str, task: JoinHandle<()>) {
        match lock(&self.links).get_mut(link) {
            Some(l) => {
                if let Some(old) = l.session.replace(task) {
                    old.abort();
                }
            }
            None => task.abort(),
        }
    }

    /// Marks an interface as failed (its reader saw an error): its port goes down and
    /// the control state learns why.
    pub fn iface_failed(&self, name: &Name, error: String) {
        {
            let mut book = lock(&self.book);
            if let Some((port, _)) = book.ids.get(&Output::Iface(name.clone())).cloned() {
                book.remove(port);
                self.datapath.publish_ports(book.map());
            }
        }
        let failed = Command::IfaceFailed {
            name: name.to_string(),
            error,
        };
        if self.send(failed).is_err() {
            tracing::debug!(iface = %name, "interface failed while the daemon stops");
        }
    }
}

impl PortBook {
    fn slot(&mut self, port: PortId) -> &mut Option<Port> {
        let i = port.0 as usize;
        if self.ports.len() <= i {
            self.ports.resize(i + 1, None);
        }
        &mut self.ports[i]
    }

    fn install(&mut self, port: PortId, p: Port) {
        *self.slot(port) = Some(p);
    }

    fn remove(&mut self, port: PortId) {
        *self.slot(port) = None;
    }

    fn live(&self, port: PortId) -> Option<&Port> {
        self.ports.get(port.0 as usize).and_then(Option::as_ref)
    }

    fn map(&self) -> PortMap {
        PortMap(self.ports.clone())
    }
}

/// An interface's reader threads and its device.
struct IfaceRuntime {
    /// A reader thread per queue, each with the task that reports its failure.
    readers: Vec<(DataThread, JoinHandle<()>)>,
    device: Arc<std::fs::File>,
}

/// Stops an interface's reader threads and waits for them: they hold the device open, and
/// it must be closed before the same TAP can be opened again (a restarted interface).
fn stop_readers(readers: Vec<(DataThread, JoinHandle<()>)>) {
    for (thread, watcher) in readers {
        watcher.abort();
        thread.stop_and_join();
    }
}

/// The control thread: applies requests and events to the state, runs the effects.
fn control_thread(
    daemon: Weak<Daemon>,
    mut state: ControlState,
    commands: mpsc::Receiver<Command>,
    runtime: tokio::runtime::Handle,
) {
    // Link and reader tasks are spawned from here onto the daemon's runtime.
    let _runtime = runtime.enter();
    let mut ifaces: HashMap<String, IfaceRuntime> = HashMap::new();
    while let Ok(command) = commands.recv() {
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        match command {
            Command::Request { request, reply } => {
                let outcome = state.apply(request, Instant::now());
                let answer = daemon.run(&mut state, &mut ifaces, outcome);
                // The client may have gone; nobody wants the answer then.
                let _ = reply.send(answer);
            }
            Command::IfaceFailed { name, error } => {
                tracing::error!(iface = %name, "interface stopped: {error}");
                if let Some(rt) = ifaces.remove(&name) {
                    stop_readers(rt.readers);
                }
                state.iface_failed(&name, error);
            }
        }
    }
}

impl Daemon {
    /// Runs an outcome's effects, and those of the device reports they lead to; the
    /// answer.
    fn run(
        self: &Arc<Self>,
        state: &mut ControlState,
        ifaces: &mut HashMap<String, IfaceRuntime>,
        outcome: Outcome,
    ) -> Answer {
        match state.carry_out(outcome, |effect| self.effect(ifaces, effect)) {
            Some(Reply::Ready(r)) => Answer::Ready(r),
            Some(Reply::Probe {
                to,
                max_bytes,
                max_ms,
            }) => Answer::Probe {
                to,
                max_bytes,
                max_ms,
            },
            Some(Reply::AwaitOpen | Reply::Nothing) | None => {
                Answer::Ready(Err(ControlError::System("the request got no answer".into())))
            }
        }
    }

    /// Carries out one effect; for an interface to open, its name and whether it opened.
    fn effect(
        self: &Arc<Self>,
        ifaces: &mut HashMap<String, IfaceRuntime>,
        effect: Effect,
    ) -> Option<(String, Result<(), String>)> {
        match effect {
            Effect::OpenIface { spec, port, stats } => {
                let result = self.open_iface(ifaces, &spec, port, stats);
                if let Err(e) = &result {
                    tracing::error!(iface = %spec.name, "cannot bring interface up: {e}");
                }
                return Some((spec.name.into_string(), result));
            }
            Effect::CloseIface {
                name,
                port,
                remove_device,
            } => self.close_iface(ifaces, &name, port, remove_device),
            Effect::StartLink {
                spec,
                port,
                stats,
                info,
            } => self.start_link(spec, port, stats, info),
            Effect::StopLink { name, port } => self.stop_link(&name, port),
            Effect::PublishTable(table) => self.datapath.table.store(table),
            Effect::Persist(topology) => self.persist(&topology),
        }
        None
    }

    fn register_port(&self, output: Output, port: PortId, stats: &Arc<PortStats>) {
        lock(&self.book).ids.insert(output, (port, stats.clone()));
    }

    fn open_iface(
        self: &Arc<Self>,
        ifaces: &mut HashMap<String, IfaceRuntime>,
        spec: &IfaceSpec,
        port: PortId,
        stats: Arc<PortStats>,
    ) -> Result<(), String> {
        self.register_port(Output::Iface(spec.name.clone()), port, &stats);
        let queues: Vec<Arc<std::fs::File>> =
            iface::open(spec, self.identity.link_mtu, self.identity.tap_queues)
                .map_err(|e| format!("interface `{}`: {e}", spec.name))?
                .into_iter()
                .map(Arc::new)
                .collect();
        let Some(device) = queues.first().cloned() else {
            return Err(format!("interface `{}`: the device has no queues", spec.name));
        };
        // TAPs and packet sockets alike read and write behind virtio-net headers.
        let vnet_hdr = spec.offload;
        let mut readers = Vec::with_capacity(queues.len());
        for queue in &queues {
            match iface::spawn_reader(
                self.clone(),
                spec.name.clone(),
                port,
                queue.clone(),
                vnet_hdr,
                stats.clone(),
            ) {
                Ok(r) => readers.push(r),
                Err(e) => {
                    stop_readers(readers);
                    return Err(format!("interface `{}`: cannot start its reader: {e}", spec.name));
                }
            }
        }
        {
            let mut book = lock(&self.book);
            book.install(
                port,
                Port {
                    name: Arc::from(spec.name.as_str()),
                    is_link: false,
                    tx: PortTx::Device {
                        queues: queues.into(),
                        vnet_hdr,
                    },
                    stats,
                    session: 0,
                },
            );
            self.datapath.publish_ports(book.map());
        }
        ifaces.insert(spec.name.to_string(), IfaceRuntime { readers, device });
        Ok(())
    }

    fn close_iface(
        &self,
        ifaces: &mut HashMap<String, IfaceRuntime>,
        name: &str,
        port: PortId,
        remove_device: bool,
    ) {
        {
            let mut book = lock(&self.book);
            book.remove(port);
            self.datapath.publish_ports(book.map());
        }
        // Joined without any lock held: a reader may be sending through the port book.
        let Some(rt) = ifaces.remove(name) else {
            return;
        };
        stop_readers(rt.readers);
        if remove_device {
            if let Err(e) = vnet_sys::tap_unpersist(&rt.device) {
                // Packet sockets are not TAPs: nothing to unpersist.
                tracing::debug!(iface = name, "unpersist: {e}");
            }
        }
    }

    fn start_link(
        self: &Arc<Self>,
        spec: LinkSpec,
        port: PortId,
        stats: Arc<PortStats>,
        info: SharedLinkInfo,
    ) {
        self.register_port(Output::Link(spec.name.clone()), port, &stats);
        let name = spec.name.clone();
        lock(&self.links).insert(
            name.to_string(),
            LinkEntry {
                spec: spec.clone(),
                port,
                stats,
                info: info.clone(),
                dialer: None,
                session: None,
            },
        );
        let dialer = match (spec.proto, spec.peer) {
            (LinkProto::Tcp, Some(peer)) => Some(tcp::spawn_dialer(self.clone(), name.clone(), peer, info)),
            (LinkProto::Udp, peer) => {
                self.udp
                    .add_link(name.clone(), peer, crate::link::stream::link_caps(&spec), info);
                None
            }
            (LinkProto::Quic, Some(peer)) => Some(quic::spawn_dialer(
                self.clone(),
                self.quic.clone(),
                name.clone(),
                peer,
                info,
            )),
            // Links the peer dials: the acceptors find them in the registry.
            (LinkProto::Tcp | LinkProto::Quic, None) => None,
        };
        if let Some(l) = lock(&self.links).get_mut(name.as_str()) {
            l.dialer = dialer;
        }
    }

    fn stop_link(&self, name: &str, port: PortId) {
        if let Some(mut l) = lock(&self.links).remove(name) {
            l.stop_tasks();
        }
        self.udp.remove_link(name.to_string());
        let mut book = lock(&self.book);
        book.remove(port);
        self.datapath.publish_ports(book.map());
    }

    fn persist(&self, topology: &Topology) {
        let Some(path) = &self.identity.state_file else {
            return;
        };
        let text = match serde_json::to_string_pretty(topology) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("state file: cannot encode: {e}");
                return;
            }
        };
        // Write a sibling file and rename it over, so a crash never leaves half a state.
        let tmp = path.with_extension("tmp");
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::error!("state file {}: {e}", path.display());
        }
    }
}
