//! The daemon's control state: the configured topology, the port registry, the running
//! interfaces and links, and the control primitives that change them. Every change
//! republishes the data path's snapshots and rewrites the state file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::task::JoinHandle;

use crate::threads::DataThread;

use crate::datapath::{Datapath, Port, PortMap, PortTx};
use crate::iface;
use crate::link::{quic, tcp, udp};
use vnet_control::proto::{
    ControlError, IfaceStatus, LinkMeasurement, LinkState, LinkStatus, MeasureReport, PortCounters, Request,
    Response, RuleStatus, StatsReport, StatusReport,
};
use vnet_core::config::{IfaceSpec, LinkProto, LinkSpec, RuleEntry, Topology};
use vnet_core::forward::PortStats;
use vnet_core::handshake::NetworkKey;
use vnet_core::rule::{priority, Output, RuleSpec};
use vnet_core::table::{ForwardingTable, PortId, RuleId, RuleStats};

/// What a daemon is, apart from its topology.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Node name.
    pub node: String,
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

/// What a link's tasks report about it.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    /// Current state.
    pub state: LinkState,
    /// Peer node name of the current session.
    pub peer_node: Option<String>,
    /// Peer address of the current session.
    pub remote: Option<SocketAddr>,
    /// Sessions established so far.
    pub sessions: u64,
    /// Last error.
    pub last_error: Option<String>,
    /// Round-trip time and throughput, as the link's sessions measure them.
    pub measure: vnet_core::measure::LinkMeasure,
}

struct IfaceRuntime {
    /// A reader thread per queue, each with the task that reports its failure.
    readers: Vec<(DataThread, JoinHandle<()>)>,
    device: Option<Arc<std::fs::File>>,
    error: Option<String>,
}

struct LinkRuntime {
    info: Arc<Mutex<LinkInfo>>,
    /// The dialer task of a TCP link that dials; its sessions run inside it.
    dialer: Option<JoinHandle<()>>,
    /// The session task of a TCP link the peer dialed in.
    session: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    topology: Topology,
    next_rule_id: u64,
    registry: HashMap<Output, PortId>,
    ports: Vec<Option<Port>>,
    port_stats: Vec<Arc<PortStats>>,
    rule_stats: HashMap<RuleId, Arc<RuleStats>>,
    ifaces: HashMap<String, IfaceRuntime>,
    links: HashMap<String, LinkRuntime>,
    session_seq: u64,
}

/// Stops an interface's reader threads and waits for them: they hold the device open, and
/// it must be closed before the same TAP can be opened again (a restarted interface).
fn stop_readers(readers: Vec<(DataThread, JoinHandle<()>)>) {
    for (thread, watcher) in readers {
        watcher.abort();
        thread.stop_and_join();
    }
}

/// The daemon.
pub struct Daemon {
    /// Who we are.
    pub identity: Identity,
    /// The shared data path.
    pub datapath: Arc<Datapath>,
    /// The UDP link socket and its task's command queue.
    pub udp: udp::Handle,
    /// The QUIC endpoint links dial from and, with `quic_listen`, accept on.
    pub quic: quic::Endpoint,
    /// Admission of the bandwidth probes this daemon sends and answers.
    pub probes: crate::link::probe::Probes,
    started: Instant,
    state: Mutex<State>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("node", &self.identity.node)
            .finish_non_exhaustive()
    }
}

fn err_invalid(e: impl std::fmt::Display) -> ControlError {
    ControlError::Invalid(e.to_string())
}

fn not_found(what: &str, name: impl std::fmt::Display) -> ControlError {
    ControlError::NotFound {
        what: what.to_string(),
        name: name.to_string(),
    }
}

impl Daemon {
    /// Creates the daemon around an already bound UDP socket. Call [`Daemon::apply_topology`]
    /// next to bring up the configured topology.
    pub fn new(identity: Identity, udp: udp::Handle, quic: quic::Endpoint) -> Arc<Daemon> {
        Arc::new(Daemon {
            identity,
            datapath: Arc::new(Datapath::default()),
            udp,
            quic,
            probes: Default::default(),
            started: Instant::now(),
            state: Mutex::new(State {
                next_rule_id: 1,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; keep serving with the state as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles one control request (a probe takes as long as it sends; the rest answer
    /// at once).
    pub async fn handle(self: &Arc<Self>, request: Request) -> Result<Response, ControlError> {
        match request {
            Request::Status => Ok(Response::Status(self.status())),
            Request::IfaceList => Ok(Response::Ifaces(self.iface_list())),
            Request::IfaceAdd(spec) => {
                let mut st = self.lock();
                if st.topology.ifaces.iter().any(|i| i.name == spec.name) {
                    return Err(ControlError::Exists {
                        what: "interface".into(),
                        name: spec.name,
                    });
                }
                let mut next = st.topology.clone();
                next.ifaces.push(spec.clone());
                next.validate().map_err(err_invalid)?;
                self.start_iface(&mut st, &spec).map_err(ControlError::System)?;
                st.topology = next;
                self.commit(&mut st);
                Ok(Response::Done)
            }
            Request::IfaceDel { name } => {
                let mut st = self.lock();
                if !st.topology.ifaces.iter().any(|i| i.name == name) {
                    return Err(not_found("interface", &name));
                }
                check_unused(&st.topology, &Output::Iface(name.clone()), "interface")?;
                st.topology.ifaces.retain(|i| i.name != name);
                self.stop_iface(&mut st, &name, true);
                self.commit(&mut st);
                Ok(Response::Done)
            }
            Request::LinkList => Ok(Response::Links(self.link_list())),
            Request::LinkAdd(spec) => {
                let mut st = self.lock();
                if st.topology.links.iter().any(|l| l.name == spec.name) {
                    return Err(ControlError::Exists {
                        what: "link".into(),
                        name: spec.name,
                    });
                }
                let mut next = st.topology.clone();
                next.links.push(spec.clone());
                next.validate().map_err(err_invalid)?;
                st.topology = next;
                self.start_link(&mut st, &spec);
                self.commit(&mut st);
                Ok(Response::Done)
            }
            Request::LinkDel { name } => {
                let mut st = self.lock();
                if !st.topology.links.iter().any(|l| l.name == name) {
                    return Err(not_found("link", &name));
                }
                check_unused(&st.topology, &Output::Link(name.clone()), "link")?;
                st.topology.links.retain(|l| l.name != name);
                self.stop_link(&mut st, &name);
                self.commit(&mut st);
                Ok(Response::Done)
            }
            Request::RuleList => Ok(Response::Rules(self.rule_list())),
            Request::RuleAdd(spec) => {
                let mut st = self.lock();
                st.topology.check_rule(&spec).map_err(err_invalid)?;
                let id = RuleId(st.next_rule_id);
                st.next_rule_id += 1;
                st.topology.rules.push(RuleEntry {
                    id: Some(id),
                    src: spec.src,
                    dst: spec.dst,
                    out: spec.out,
                });
                self.commit(&mut st);
                Ok(Response::RuleAdded(id))
            }
            Request::RuleDel { id } => {
                let mut st = self.lock();
                let before = st.topology.rules.len();
                st.topology.rules.retain(|r| r.id != Some(id));
                if st.topology.rules.len() == before {
                    return Err(not_found("rule", id.0));
                }
                st.rule_stats.remove(&id);
                self.commit(&mut st);
                Ok(Response::Done)
            }
            Request::Stats => Ok(Response::Stats(self.stats())),
            Request::ConfigGet => Ok(Response::Config(self.lock().topology.clone())),
            Request::ConfigReplace(topology) => {
                self.apply_topology(topology).map_err(err_invalid)?;
                Ok(Response::Done)
            }
            Request::SetConfigTimeBound { ms } => {
                let mut st = self.lock();
                st.topology.config_time_bound_ms = ms;
                self.commit(&mut st);
                Ok(Response::Done)
            }
            Request::VttifMatrix => Ok(Response::VttifMatrix(vttif::Snapshot {
                node: self.identity.node.clone(),
                enabled: self.datapath.vttif_enabled(),
                uptime_us: self.started.elapsed().as_micros() as u64,
                matrix: self.datapath.vttif_matrix(),
            })),
            Request::VttifSet { enabled } => {
                self.datapath.set_vttif(enabled);
                Ok(Response::Done)
            }
            Request::Measure => Ok(Response::Measurements(self.measurements())),
            Request::Probe {
                to,
                max_bytes,
                max_ms,
            } => crate::link::probe::run(self, to, max_bytes, max_ms)
                .await
                .map(Response::Probe),
        }
    }

    /// Makes the running topology equal to `next`: new interfaces and links come up and
    /// the new rules are published before anything old is taken down, so connectivity
    /// that both topologies share is never cut. Interfaces or links that are new and fail
    /// to come up are reported in their status, not fatal.
    pub fn apply_topology(
        self: &Arc<Self>,
        mut next: Topology,
    ) -> Result<(), vnet_core::config::ConfigError> {
        next.validate()?;
        let mut st = self.lock();
        // Ids: keep the ones given, number the rest after the largest in use.
        let max_id = next
            .rules
            .iter()
            .filter_map(|r| r.id)
            .map(|i| i.0)
            .max()
            .unwrap_or(0);
        st.next_rule_id = st.next_rule_id.max(max_id + 1);
        for r in &mut next.rules {
            if r.id.is_none() {
                r.id = Some(RuleId(st.next_rule_id));
                st.next_rule_id += 1;
            }
        }
        let old = std::mem::replace(&mut st.topology, next.clone());
        for i in &next.ifaces {
            if old.ifaces.iter().any(|o| o == i) && st.ifaces.get(&i.name).is_some_and(|r| r.device.is_some())
            {
                continue;
            }
            self.stop_iface(&mut st, &i.name, false);
            if let Err(e) = self.start_iface(&mut st, i) {
                tracing::error!(iface = %i.name, "cannot bring interface up: {e}");
                // `vnet iface list` shows why.
                st.ifaces.insert(
                    i.name.clone(),
                    IfaceRuntime {
                        readers: Vec::new(),
                        device: None,
                        error: Some(e),
                    },
                );
            }
        }
        for l in &next.links {
            if old.links.iter().any(|o| o == l) && st.links.contains_key(&l.name) {
                continue;
            }
            self.stop_link(&mut st, &l.name);
            self.start_link(&mut st, l);
        }
        st.rule_stats
            .retain(|id, _| next.rules.iter().any(|r| r.id == Some(*id)));
        self.commit(&mut st);
        for i in old
            .ifaces
            .iter()
            .filter(|o| !next.ifaces.iter().any(|n| n.name == o.name))
        {
            self.stop_iface(&mut st, &i.name, true);
        }
        for l in old
            .links
            .iter()
            .filter(|o| !next.links.iter().any(|n| n.name == o.name))
        {
            self.stop_link(&mut st, &l.name);
        }
        self.publish_ports(&st);
        Ok(())
    }

    /// Republishes the table and persists the state.
    fn commit(&self, st: &mut State) {
        self.publish_table(st);
        self.persist(st);
    }

    fn port_id(st: &mut State, output: &Output) -> PortId {
        if let Some(id) = st.registry.get(output) {
            return *id;
        }
        let id = PortId(st.ports.len() as u32);
        st.registry.insert(output.clone(), id);
        st.ports.push(None);
        st.port_stats.push(Arc::default());
        id
    }

    fn publish_table(&self, st: &mut State) {
        // Generations continue from the table in force, so no worker's cache mistakes the
        // new table for the old one.
        let mut table = ForwardingTable::succeeding(&self.datapath.table.load());
        let rules = st.topology.rules.clone();
        for r in &rules {
            let Some(id) = r.id else { continue };
            let outputs = r.out.iter().map(|o| Self::port_id(st, o)).collect();
            let stats = st.rule_stats.entry(id).or_default().clone();
            if let Err(e) = table.insert(id, r.src, r.dst, outputs, stats) {
                // validate() has ruled duplicates out; log rather than lose the rest.
                tracing::error!("{e}");
            }
        }
        self.datapath.table.store(Arc::new(table));
    }

    fn publish_ports(&self, st: &State) {
        self.datapath.ports.store(Arc::new(PortMap(st.ports.clone())));
    }

    /// Installs the send side of a link session; returns a token for [`Daemon::link_down`].
    pub fn link_up(&self, link: &str, tx: PortTx) -> u64 {
        let mut st = self.lock();
        let id = Self::port_id(&mut st, &Output::Link(link.to_string()));
        st.session_seq += 1;
        let token = st.session_seq;
        st.ports[id.0 as usize] = Some(Port {
            name: Arc::from(link),
            is_link: true,
            tx,
            stats: st.port_stats[id.0 as usize].clone(),
            session: token,
        });
        self.publish_ports(&st);
        token
    }

    /// Removes the send side of a link session, unless a newer session replaced it.
    pub fn link_down(&self, link: &str, token: u64) {
        let mut st = self.lock();
        let Some(id) = st.registry.get(&Output::Link(link.to_string())).copied() else {
            return;
        };
        if st.ports[id.0 as usize]
            .as_ref()
            .is_some_and(|p| p.session == token)
        {
            st.ports[id.0 as usize] = None;
            self.publish_ports(&st);
        }
    }

    /// The port id and counters of a port, for its reader.
    pub fn port(&self, output: &Output) -> (PortId, Arc<PortStats>) {
        let mut st = self.lock();
        let id = Self::port_id(&mut st, output);
        (id, st.port_stats[id.0 as usize].clone())
    }

    /// The link's spec and status handle, if the link is configured.
    pub fn link(&self, name: &str) -> Option<(LinkSpec, Arc<Mutex<LinkInfo>>)> {
        let st = self.lock();
        let spec = st.topology.links.iter().find(|l| l.name == name)?.clone();
        let info = st.links.get(name)?.info.clone();
        Some((spec, info))
    }

    /// Registers the session task of a link the peer dialed in, so deleting the link
    /// stops it; a new session replaces (aborts) the previous one.
    pub fn replace_session_task(&self, link: &str, task: JoinHandle<()>) {
        let mut st = self.lock();
        match st.links.get_mut(link) {
            Some(rt) => {
                if let Some(old) = rt.session.replace(task) {
                    old.abort();
                }
            }
            None => task.abort(),
        }
    }

    fn start_iface(self: &Arc<Self>, st: &mut State, spec: &IfaceSpec) -> Result<(), String> {
        let output = Output::Iface(spec.name.clone());
        let id = Self::port_id(st, &output);
        let stats = st.port_stats[id.0 as usize].clone();
        let queues: Vec<Arc<std::fs::File>> =
            iface::open(spec, self.identity.link_mtu, self.identity.tap_queues)
                .map_err(|e| format!("interface `{}`: {e}", spec.name))?
                .into_iter()
                .map(Arc::new)
                .collect();
        // TAPs and packet sockets alike read and write behind virtio-net headers.
        let vnet_hdr = spec.offload;
        let mut readers = Vec::with_capacity(queues.len());
        for queue in &queues {
            match iface::spawn_reader(
                self.clone(),
                spec.name.clone(),
                id,
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
        st.ports[id.0 as usize] = Some(Port {
            name: Arc::from(spec.name.as_str()),
            is_link: false,
            tx: PortTx::Device {
                queues: queues.clone().into(),
                vnet_hdr,
            },
            stats,
            session: 0,
        });
        st.ifaces.insert(
            spec.name.clone(),
            IfaceRuntime {
                readers,
                device: queues.first().cloned(),
                error: None,
            },
        );
        self.publish_ports(st);
        Ok(())
    }

    /// Marks an interface as failed (its reader saw an error).
    pub fn iface_failed(&self, name: &str, error: String) {
        let mut st = self.lock();
        if let Some(id) = st.registry.get(&Output::Iface(name.to_string())).copied() {
            st.ports[id.0 as usize] = None;
        }
        if let Some(rt) = st.ifaces.get_mut(name) {
            rt.error = Some(error);
            rt.device = None;
        }
        self.publish_ports(&st);
    }

    fn stop_iface(&self, st: &mut State, name: &str, remove_device: bool) {
        if let Some(id) = st.registry.get(&Output::Iface(name.to_string())).copied() {
            st.ports[id.0 as usize] = None;
        }
        if let Some(rt) = st.ifaces.remove(name) {
            stop_readers(rt.readers);
            if let (true, Some(dev)) = (remove_device, rt.device) {
                if let Err(e) = vnet_sys::tap_unpersist(&dev) {
                    // Packet sockets are not TAPs: nothing to unpersist.
                    tracing::debug!(iface = name, "unpersist: {e}");
                }
            }
        }
        self.publish_ports(st);
    }

    fn start_link(self: &Arc<Self>, st: &mut State, spec: &LinkSpec) {
        let info = Arc::new(Mutex::new(LinkInfo {
            state: if spec.peer.is_some() {
                LinkState::Connecting
            } else {
                LinkState::Waiting
            },
            peer_node: None,
            remote: None,
            sessions: 0,
            last_error: None,
            measure: Default::default(),
        }));
        Self::port_id(st, &Output::Link(spec.name.clone()));
        let mut dialer = None;
        match (spec.proto, spec.peer) {
            (LinkProto::Tcp, Some(peer)) => {
                dialer = Some(tcp::spawn_dialer(
                    self.clone(),
                    spec.name.clone(),
                    peer,
                    info.clone(),
                ))
            }
            (LinkProto::Tcp, None) => {}
            (LinkProto::Udp, peer) => self.udp.add_link(
                spec.name.clone(),
                peer,
                crate::link::stream::link_caps(spec),
                info.clone(),
            ),
            (LinkProto::Quic, Some(peer)) => {
                dialer = Some(quic::spawn_dialer(
                    self.clone(),
                    self.quic.clone(),
                    spec.name.clone(),
                    peer,
                    info.clone(),
                ))
            }
            (LinkProto::Quic, None) if !self.quic.accepts() => {
                info.lock().unwrap_or_else(|p| p.into_inner()).last_error =
                    Some("this daemon has no quic_listen address, so QUIC peers cannot dial in".into());
            }
            (LinkProto::Quic, None) => {}
        }
        st.links.insert(
            spec.name.clone(),
            LinkRuntime {
                info,
                dialer,
                session: None,
            },
        );
    }

    fn stop_link(&self, st: &mut State, name: &str) {
        if let Some(rt) = st.links.remove(name) {
            for t in rt.dialer.into_iter().chain(rt.session) {
                t.abort();
            }
        }
        self.udp.remove_link(name.to_string());
        if let Some(id) = st.registry.get(&Output::Link(name.to_string())).copied() {
            st.ports[id.0 as usize] = None;
        }
        self.publish_ports(st);
    }

    fn persist(&self, st: &State) {
        let Some(path) = &self.identity.state_file else {
            return;
        };
        let text = match serde_json::to_string_pretty(&st.topology) {
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

    fn status(&self) -> StatusReport {
        StatusReport {
            node: self.identity.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            listen: self.identity.listen.to_string(),
            config_time_bound_ms: self.lock().topology.config_time_bound_ms,
        }
    }

    /// A copy of link `name`'s run-time status, if it runs.
    fn link_info(st: &State, name: &str) -> Option<LinkInfo> {
        st.links
            .get(name)
            .map(|rt| rt.info.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn counters(st: &State, output: &Output) -> PortCounters {
        st.registry
            .get(output)
            .map(|id| st.port_stats[id.0 as usize].snapshot())
            .unwrap_or_default()
    }

    fn iface_list(&self) -> Vec<IfaceStatus> {
        let st = self.lock();
        st.topology
            .ifaces
            .iter()
            .map(|spec| {
                let rt = st.ifaces.get(&spec.name);
                IfaceStatus {
                    spec: spec.clone(),
                    up: rt.is_some_and(|r| r.device.is_some()),
                    error: rt
                        .and_then(|r| r.error.clone())
                        .or_else(|| rt.is_none().then(|| "not open".to_string())),
                    counters: Self::counters(&st, &Output::Iface(spec.name.clone())),
                }
            })
            .collect()
    }

    fn link_list(&self) -> Vec<LinkStatus> {
        let st = self.lock();
        st.topology
            .links
            .iter()
            .map(|spec| {
                let info = Self::link_info(&st, &spec.name);
                LinkStatus {
                    spec: spec.clone(),
                    state: info.as_ref().map_or(LinkState::Connecting, |i| i.state),
                    peer_node: info.as_ref().and_then(|i| i.peer_node.clone()),
                    remote: info.as_ref().and_then(|i| i.remote.map(|r| r.to_string())),
                    sessions: info.as_ref().map_or(0, |i| i.sessions),
                    last_error: info.as_ref().and_then(|i| i.last_error.clone()),
                    counters: Self::counters(&st, &Output::Link(spec.name.clone())),
                }
            })
            .collect()
    }

    fn measurements(&self) -> MeasureReport {
        let st = self.lock();
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let links = st
            .topology
            .links
            .iter()
            .map(|spec| {
                let info = Self::link_info(&st, &spec.name);
                let m = info.as_ref().map(|i| i.measure).unwrap_or_default();
                let bps =
                    |r: &vnet_core::measure::RateMeter| r.bits_per_sec().map_or(0, |b| b.round() as u64);
                let counters = Self::counters(&st, &Output::Link(spec.name.clone()));
                LinkMeasurement {
                    name: spec.name.clone(),
                    proto: spec.proto,
                    peer_node: info.as_ref().and_then(|i| i.peer_node.clone()),
                    remote: info.as_ref().and_then(|i| i.remote.map(|r| r.to_string())),
                    state: info.as_ref().map_or(LinkState::Connecting, |i| i.state),
                    srtt_us: m.rtt.srtt().map(micros),
                    rttvar_us: m.rtt.rttvar().map(micros),
                    min_rtt_us: m.rtt.min_rtt().map(micros),
                    rtt_samples: m.rtt.samples(),
                    tx_bps: bps(&m.tx),
                    rx_bps: bps(&m.rx),
                    tx_bytes: counters.tx_bytes,
                    rx_bytes: counters.rx_bytes,
                }
            })
            .collect();
        MeasureReport {
            node: self.identity.node.clone(),
            uptime_us: micros(self.started.elapsed()),
            links,
        }
    }

    fn rule_list(&self) -> Vec<RuleStatus> {
        let st = self.lock();
        st.topology
            .rules
            .iter()
            .filter_map(|r| {
                let id = r.id?;
                let stats = st.rule_stats.get(&id);
                Some(RuleStatus {
                    id,
                    spec: RuleSpec {
                        src: r.src,
                        dst: r.dst,
                        out: r.out.clone(),
                    },
                    priority: priority(&r.src, &r.dst),
                    frames: stats.map_or(0, |s| s.frames()),
                    bytes: stats.map_or(0, |s| s.bytes()),
                })
            })
            .collect()
    }

    fn stats(&self) -> StatsReport {
        let (cache_hits, cache_misses) = self.datapath.cache_stats();
        let st = self.lock();
        StatsReport {
            node: self.identity.node.clone(),
            ifaces: st
                .topology
                .ifaces
                .iter()
                .map(|i| {
                    (
                        i.name.clone(),
                        Self::counters(&st, &Output::Iface(i.name.clone())),
                    )
                })
                .collect(),
            links: st
                .topology
                .links
                .iter()
                .map(|l| (l.name.clone(), Self::counters(&st, &Output::Link(l.name.clone()))))
                .collect(),
            rules: st
                .topology
                .rules
                .iter()
                .filter_map(|r| {
                    let id = r.id?;
                    let s = st.rule_stats.get(&id);
                    Some((id, s.map_or(0, |s| s.frames()), s.map_or(0, |s| s.bytes())))
                })
                .collect(),
            drops: self.datapath.drops.nonzero(),
            cache_hits,
            cache_misses,
        }
    }
}

fn check_unused(topology: &Topology, output: &Output, what: &str) -> Result<(), ControlError> {
    match topology.rules.iter().find(|r| r.out.contains(output)) {
        Some(r) => Err(ControlError::InUse {
            what: what.to_string(),
            name: match output {
                Output::Link(n) | Output::Iface(n) => n.clone(),
            },
            rule: r.id.map_or(0, |i| i.0),
        }),
        None => Ok(()),
    }
}
