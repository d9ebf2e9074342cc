//! The daemon's control state, sans-IO: the configured topology, the port registry, rule
//! ids, what each interface and link reports, and the control primitives that change them.
//!
//! [`ControlState::apply`] takes a request and the time and returns the answer and the
//! [`Effect`]s the driver must carry out, in order: open or close a device, start or stop
//! a link, publish a forwarding table, write the state file. Nothing here touches a
//! device, a socket, a thread, the clock or a file, so every primitive is tested without
//! kernels, and the simulator runs many daemons' control states in one process.
//!
//! Opening a device can fail, and `IfaceAdd` answers with that failure: its outcome is
//! [`Reply::AwaitOpen`], and the driver reports the device's fate with
//! [`ControlState::iface_opened`], whose outcome carries the answer. A bandwidth probe
//! talks to the network for up to seconds: its outcome is [`Reply::Probe`] and the driver
//! runs it. Everything else is answered at once.
//!
//! Ordering: a configuration replace brings new interfaces and links up and publishes the
//! new rules before it takes anything old down, so connectivity both topologies share is
//! never cut; the effects come in that order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vnet_core::config::{ConfigError, IfaceSpec, LinkProto, LinkSpec, RuleEntry, Topology};
use vnet_core::forward::PortStats;
use vnet_core::measure::{LinkMeasure, RateMeter};
use vnet_core::name::Name;
use vnet_core::rule::{priority, Output, RuleSpec};
use vnet_core::table::{ForwardingTable, PortId, RuleId, RuleStats};

use crate::dataplane::Dataplane;
use crate::proto::{
    ControlError, IfaceStatus, LinkMeasurement, LinkState, LinkStatus, MeasureReport, PortCounters, Request,
    Response, RuleStatus, StatsReport, StatusReport,
};

/// What a daemon is, apart from its topology.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Node name.
    pub node: String,
    /// The daemon's version, for `Status`.
    pub version: String,
    /// Link listen address, for `Status`.
    pub listen: SocketAddr,
    /// Whether QUIC peers can dial in (the daemon has a `quic_listen` address).
    pub quic_accepts: bool,
}

/// What a link's sessions report about it; the driver's link tasks write it, the control
/// state reads it for listings. Shared rather than sent as events because RTT and rates
/// change several times a second and only the latest value matters.
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
    pub measure: LinkMeasure,
}

/// The state of a link without a session: it dials (`Connecting`) or waits for its peer.
fn idle(dials: bool) -> LinkState {
    if dials {
        LinkState::Connecting
    } else {
        LinkState::Waiting
    }
}

impl LinkInfo {
    /// A link not yet connected: it dials (`Connecting`) or waits for its peer.
    pub fn new(dials: bool) -> LinkInfo {
        LinkInfo {
            state: idle(dials),
            peer_node: None,
            remote: None,
            sessions: 0,
            last_error: None,
            measure: LinkMeasure::default(),
        }
    }
}

impl LinkInfo {
    /// A session of the link came up with node `peer_node` at `remote`.
    pub fn session_up(&mut self, peer_node: &str, remote: SocketAddr) {
        self.state = LinkState::Up;
        self.peer_node = Some(peer_node.to_string());
        self.remote = Some(remote);
        self.sessions += 1;
        self.last_error = None;
    }

    /// The link's session ended: it dials again (`dials`) or waits for its peer. `error`
    /// says why, when that is news for `vnet link list` (not for a peer that restarted).
    pub fn session_lost(&mut self, dials: bool, error: Option<String>) {
        self.state = idle(dials);
        if let Some(e) = error {
            self.last_error = Some(e);
        }
    }
}

/// A link's status cell, shared by the link's tasks and the control state.
pub type SharedLinkInfo = Arc<Mutex<LinkInfo>>;

/// Reads a shared link status (a panicking writer leaves plain data usable).
pub fn read_link_info(info: &SharedLinkInfo) -> MutexGuard<'_, LinkInfo> {
    info.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the driver must do, in the order given.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Open the interface's device and start its readers, as port `port` with counters
    /// `stats`; then report with [`ControlState::iface_opened`].
    OpenIface {
        /// The interface.
        spec: IfaceSpec,
        /// Its port.
        port: PortId,
        /// Its counters.
        stats: Arc<PortStats>,
    },
    /// Stop the interface's readers and close its device (the port goes down). With
    /// `remove_device`, the device itself goes away (a TAP stops being persistent).
    CloseIface {
        /// The interface.
        name: String,
        /// Its port.
        port: PortId,
        /// Delete the device, not only close it.
        remove_device: bool,
    },
    /// Start running a link: dial its peer, or wait for the peer to dial.
    StartLink {
        /// The link.
        spec: LinkSpec,
        /// Its port.
        port: PortId,
        /// Its counters.
        stats: Arc<PortStats>,
        /// Where its sessions report.
        info: SharedLinkInfo,
    },
    /// Stop a link: end its sessions and dialing (the port goes down).
    StopLink {
        /// The link.
        name: String,
        /// Its port.
        port: PortId,
    },
    /// Make this the data path's forwarding table.
    PublishTable(Arc<ForwardingTable>),
    /// Write this topology to the state file (atomically), if the daemon keeps one.
    Persist(Topology),
}

/// The answer side of an [`Outcome`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The answer to the request.
    Ready(Result<Response, ControlError>),
    /// The answer depends on the device being opened (`IfaceAdd`): it comes with the
    /// outcome of [`ControlState::iface_opened`].
    AwaitOpen,
    /// A bandwidth probe: the driver runs it and answers with its result.
    Probe {
        /// The other daemon's link listen address.
        to: SocketAddr,
        /// Byte limit asked for (clamped by the prober).
        max_bytes: Option<u64>,
        /// Time limit asked for, milliseconds (clamped by the prober).
        max_ms: Option<u64>,
    },
    /// Nobody waits for an answer (an event from the driver, not a request).
    Nothing,
}

/// What the driver gets back from the control state: an answer and effects to run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The answer, or what it waits for.
    pub reply: Reply,
    /// Effects to carry out, in order.
    pub effects: Vec<Effect>,
}

impl Outcome {
    fn ready(result: Result<Response, ControlError>, effects: Vec<Effect>) -> Outcome {
        Outcome {
            reply: Reply::Ready(result),
            effects,
        }
    }

    fn refuse(e: ControlError) -> Outcome {
        Outcome::ready(Err(e), Vec::new())
    }

    fn answer(response: Response) -> Outcome {
        Outcome::ready(Ok(response), Vec::new())
    }
}

/// What an interface reports.
#[derive(Debug, Clone, Default)]
struct IfaceRun {
    /// The device is open and read.
    up: bool,
    /// Why it is not.
    error: Option<String>,
}

/// Stable port ids by output name, and each port's counters, for the daemon's life: a
/// link going down and up never invalidates the table.
#[derive(Debug, Default)]
struct PortRegistry {
    ids: HashMap<Output, PortId>,
    stats: Vec<Arc<PortStats>>,
}

impl PortRegistry {
    /// The port of `output`, registered on first use.
    fn id(&mut self, output: &Output) -> Result<PortId, ControlError> {
        if let Some(id) = self.ids.get(output) {
            return Ok(*id);
        }
        let id = u32::try_from(self.stats.len())
            .map(PortId)
            .map_err(|_| ControlError::Invalid("the daemon has no port ids left".into()))?;
        self.ids.insert(output.clone(), id);
        self.stats.push(Arc::default());
        Ok(id)
    }

    fn stats(&self, id: PortId) -> Arc<PortStats> {
        // Ids come from `id`, which pushed their counters.
        self.stats.get(id.0 as usize).cloned().unwrap_or_default()
    }

    fn counters(&self, output: &Output) -> PortCounters {
        self.ids
            .get(output)
            .map(|id| self.stats(*id).snapshot())
            .unwrap_or_default()
    }
}

/// The daemon's control state. One owner (the driver's control thread) applies requests
/// and driver events in turn.
#[derive(Debug)]
pub struct ControlState {
    config: StateConfig,
    started: Instant,
    topology: Topology,
    /// The id the next unnumbered rule gets; ids only grow, and `u64::MAX` is never one.
    next_rule_id: u64,
    ports: PortRegistry,
    rule_stats: HashMap<RuleId, Arc<RuleStats>>,
    /// The table in force (its successor continues its generations).
    table: Arc<ForwardingTable>,
    ifaces: HashMap<String, IfaceRun>,
    links: HashMap<String, SharedLinkInfo>,
    /// An `IfaceAdd` waiting for its device.
    adding: Option<IfaceSpec>,
    dataplane: Dataplane,
}

fn invalid(e: impl std::fmt::Display) -> ControlError {
    ControlError::Invalid(e.to_string())
}

fn not_found(what: &str, name: impl std::fmt::Display) -> ControlError {
    ControlError::NotFound {
        what: what.to_string(),
        name: name.to_string(),
    }
}

/// The rule id after `id`, which was just given out; ids stop short of `u64::MAX`, so a
/// daemon refuses new rules rather than wrap around onto old ids.
fn allocate_after(id: u64) -> Result<u64, ControlError> {
    id.checked_add(1)
        .filter(|n| *n < u64::MAX)
        .ok_or_else(|| invalid(ConfigError::RuleIdsExhausted))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl ControlState {
    /// A daemon with no interfaces, links or rules, started at `now`, whose data path
    /// counts into `dataplane`. Bring its configured topology up with a `ConfigReplace`
    /// (or [`ControlState::replace_topology`]).
    pub fn new(config: StateConfig, dataplane: Dataplane, now: Instant) -> ControlState {
        ControlState {
            config,
            started: now,
            topology: Topology::default(),
            next_rule_id: 1,
            ports: PortRegistry::default(),
            rule_stats: HashMap::new(),
            table: Arc::new(ForwardingTable::new()),
            ifaces: HashMap::new(),
            links: HashMap::new(),
            adding: None,
            dataplane,
        }
    }

    /// The topology in force.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The counters shared with the data path.
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// Applies one control request at `now`.
    pub fn apply(&mut self, request: Request, now: Instant) -> Outcome {
        match request {
            Request::Status => Outcome::answer(Response::Status(self.status(now))),
            Request::IfaceList => Outcome::answer(Response::Ifaces(self.iface_list())),
            Request::IfaceAdd(spec) => self.iface_add(spec),
            Request::IfaceDel { name } => self.iface_del(&name),
            Request::LinkList => Outcome::answer(Response::Links(self.link_list())),
            Request::LinkAdd(spec) => self.link_add(spec),
            Request::LinkDel { name } => self.link_del(&name),
            Request::RuleList => Outcome::answer(Response::Rules(self.rule_list())),
            Request::RuleAdd(spec) => self.rule_add(spec),
            Request::RuleDel { id } => self.rule_del(id),
            Request::Stats => Outcome::answer(Response::Stats(self.stats())),
            Request::ConfigGet => Outcome::answer(Response::Config(self.topology.clone())),
            Request::ConfigReplace(topology) => match self.replace_topology(topology) {
                Ok(effects) => Outcome::ready(Ok(Response::Done), effects),
                Err(e) => Outcome::refuse(e),
            },
            Request::SetConfigTimeBound { ms } => {
                self.topology.config_time_bound_ms = ms;
                Outcome::ready(Ok(Response::Done), vec![self.persist()])
            }
            Request::VttifMatrix => {
                let traffic = &self.dataplane.traffic;
                Outcome::answer(Response::VttifMatrix(vttif::Snapshot {
                    node: self.config.node.clone(),
                    enabled: traffic.enabled(),
                    uptime_us: micros(now.saturating_duration_since(self.started)),
                    matrix: traffic.matrix(),
                }))
            }
            Request::VttifSet { enabled } => {
                self.dataplane.traffic.set_enabled(enabled);
                Outcome::answer(Response::Done)
            }
            Request::Measure => Outcome::answer(Response::Measurements(self.measurements(now))),
            Request::Probe {
                to,
                max_bytes,
                max_ms,
            } => Outcome {
                reply: Reply::Probe {
                    to,
                    max_bytes,
                    max_ms,
                },
                effects: Vec::new(),
            },
        }
    }

    /// Carries out `outcome`: `run` performs one effect and, for an interface it opened
    /// (or failed to open), returns the interface's name and the result. Those reports
    /// are fed back ([`ControlState::iface_opened`]) after their outcome's effects, in
    /// order, and the effects of what they return are carried out in turn. Returns the
    /// answer: the last [`Reply::Ready`] or [`Reply::Probe`], if any.
    pub fn carry_out(
        &mut self,
        outcome: Outcome,
        mut run: impl FnMut(Effect) -> Option<(String, Result<(), String>)>,
    ) -> Option<Reply> {
        let mut pending = vec![outcome];
        let mut answer = None;
        while let Some(Outcome { reply, effects }) = pending.pop() {
            if matches!(reply, Reply::Ready(_) | Reply::Probe { .. }) {
                answer = Some(reply);
            }
            let reports: Vec<_> = effects.into_iter().filter_map(&mut run).collect();
            for (name, result) in reports.into_iter().rev() {
                pending.push(self.iface_opened(&name, result));
            }
        }
        answer
    }

    /// The driver's report on a device an [`Effect::OpenIface`] asked for: opened, or why
    /// not. Answers the `IfaceAdd` that waits for it, if any: a device that cannot be
    /// opened leaves that interface out. After a configuration replace the failure shows
    /// in the interface's status instead (`vnet iface list` says why).
    pub fn iface_opened(&mut self, name: &str, result: Result<(), String>) -> Outcome {
        if self.adding.as_ref().is_some_and(|s| s.name == name) {
            let Some(spec) = self.adding.take() else {
                return Outcome::refuse(not_found("interface", name));
            };
            return match result {
                Ok(()) => {
                    self.topology.ifaces.push(spec);
                    self.ifaces.insert(
                        name.to_string(),
                        IfaceRun {
                            up: true,
                            error: None,
                        },
                    );
                    Outcome::ready(Ok(Response::Done), vec![self.persist()])
                }
                Err(e) => Outcome::refuse(ControlError::System(e)),
            };
        }
        if let Some(run) = self.ifaces.get_mut(name) {
            *run = match result {
                Ok(()) => IfaceRun {
                    up: true,
                    error: None,
                },
                Err(e) => IfaceRun {
                    up: false,
                    error: Some(e),
                },
            };
        }
        Outcome {
            reply: Reply::Nothing,
            effects: Vec::new(),
        }
    }

    /// The driver's report that an open interface stopped working (its reader failed).
    pub fn iface_failed(&mut self, name: &str, error: String) {
        if let Some(run) = self.ifaces.get_mut(name) {
            *run = IfaceRun {
                up: false,
                error: Some(error),
            };
        }
    }

    /// Makes the running topology equal to `next`: new interfaces and links come up and
    /// the new rules are published before anything old is taken down. Rule ids given are
    /// kept; the rest are numbered after the largest in use. Interfaces or links that are
    /// new and fail to come up are reported in their status, not fatal. An invalid
    /// topology changes nothing.
    pub fn replace_topology(&mut self, mut next: Topology) -> Result<Vec<Effect>, ControlError> {
        next.validate().map_err(invalid)?;
        let mut next_id = self.next_rule_id;
        if let Some(max) = next.rules.iter().filter_map(|r| r.id).map(|i| i.0).max() {
            // validate() keeps u64::MAX out, so this cannot overflow.
            next_id = next_id.max(max.saturating_add(1));
        }
        for r in &mut next.rules {
            if r.id.is_none() {
                r.id = Some(RuleId(next_id));
                next_id = allocate_after(next_id)?;
            }
        }
        // Everything that can fail happens before anything changes: port ids for every
        // name (stable for the daemon's life), then the table.
        for name in next.ifaces.iter().map(|i| Output::Iface(i.name.clone())) {
            self.ports.id(&name)?;
        }
        for name in next.links.iter().map(|l| Output::Link(l.name.clone())) {
            self.ports.id(&name)?;
        }
        let table = self.compile(&next)?;
        self.next_rule_id = next_id;
        let old = std::mem::replace(&mut self.topology, next);
        let mut effects = Vec::new();
        for spec in self.topology.ifaces.clone() {
            let unchanged = old.ifaces.contains(&spec);
            if unchanged && self.ifaces.get(spec.name.as_str()).is_some_and(|r| r.up) {
                continue;
            }
            let port = self.ports.id(&Output::Iface(spec.name.clone()))?;
            if self.ifaces.contains_key(spec.name.as_str()) {
                effects.push(Effect::CloseIface {
                    name: spec.name.to_string(),
                    port,
                    remove_device: false,
                });
            }
            self.ifaces.insert(spec.name.to_string(), IfaceRun::default());
            effects.push(Effect::OpenIface {
                stats: self.ports.stats(port),
                spec,
                port,
            });
        }
        for spec in self.topology.links.clone() {
            if old.links.contains(&spec) && self.links.contains_key(spec.name.as_str()) {
                continue;
            }
            let port = self.ports.id(&Output::Link(spec.name.clone()))?;
            if self.links.remove(spec.name.as_str()).is_some() {
                effects.push(Effect::StopLink {
                    name: spec.name.to_string(),
                    port,
                });
            }
            effects.push(self.start_link(spec, port));
        }
        let ids: Vec<RuleId> = self.topology.rules.iter().filter_map(|r| r.id).collect();
        self.rule_stats.retain(|id, _| ids.contains(id));
        effects.push(self.publish(table));
        effects.push(self.persist());
        for o in &old.ifaces {
            if !self.topology.ifaces.iter().any(|n| n.name == o.name) {
                self.ifaces.remove(o.name.as_str());
                effects.push(Effect::CloseIface {
                    name: o.name.to_string(),
                    port: self.ports.id(&Output::Iface(o.name.clone()))?,
                    remove_device: true,
                });
            }
        }
        for o in &old.links {
            if !self.topology.links.iter().any(|n| n.name == o.name) {
                self.links.remove(o.name.as_str());
                effects.push(Effect::StopLink {
                    name: o.name.to_string(),
                    port: self.ports.id(&Output::Link(o.name.clone()))?,
                });
            }
        }
        Ok(effects)
    }

    fn iface_add(&mut self, spec: IfaceSpec) -> Outcome {
        if self.topology.ifaces.iter().any(|i| i.name == spec.name) {
            return Outcome::refuse(ControlError::Exists {
                what: "interface".into(),
                name: spec.name.into_string(),
            });
        }
        if let Some(adding) = &self.adding {
            return Outcome::refuse(ControlError::Invalid(format!(
                "interface `{}` is still being added",
                adding.name
            )));
        }
        let mut next = self.topology.clone();
        next.ifaces.push(spec.clone());
        if let Err(e) = next.validate() {
            return Outcome::refuse(invalid(e));
        }
        let port = match self.ports.id(&Output::Iface(spec.name.clone())) {
            Ok(p) => p,
            Err(e) => return Outcome::refuse(e),
        };
        self.adding = Some(spec.clone());
        Outcome {
            reply: Reply::AwaitOpen,
            effects: vec![Effect::OpenIface {
                spec,
                port,
                stats: self.ports.stats(port),
            }],
        }
    }

    fn iface_del(&mut self, name: &Name) -> Outcome {
        if !self.topology.ifaces.iter().any(|i| i.name == *name) {
            return Outcome::refuse(not_found("interface", name));
        }
        if let Err(e) = self.check_unused(&Output::Iface(name.clone()), "interface") {
            return Outcome::refuse(e);
        }
        let port = match self.ports.id(&Output::Iface(name.clone())) {
            Ok(p) => p,
            Err(e) => return Outcome::refuse(e),
        };
        self.topology.ifaces.retain(|i| i.name != *name);
        self.ifaces.remove(name.as_str());
        let close = Effect::CloseIface {
            name: name.to_string(),
            port,
            remove_device: true,
        };
        Outcome::ready(Ok(Response::Done), vec![close, self.persist()])
    }

    fn link_add(&mut self, spec: LinkSpec) -> Outcome {
        if self.topology.links.iter().any(|l| l.name == spec.name) {
            return Outcome::refuse(ControlError::Exists {
                what: "link".into(),
                name: spec.name.into_string(),
            });
        }
        let mut next = self.topology.clone();
        next.links.push(spec.clone());
        if let Err(e) = next.validate() {
            return Outcome::refuse(invalid(e));
        }
        let port = match self.ports.id(&Output::Link(spec.name.clone())) {
            Ok(p) => p,
            Err(e) => return Outcome::refuse(e),
        };
        self.topology = next;
        let start = self.start_link(spec, port);
        Outcome::ready(Ok(Response::Done), vec![start, self.persist()])
    }

    fn link_del(&mut self, name: &Name) -> Outcome {
        if !self.topology.links.iter().any(|l| l.name == *name) {
            return Outcome::refuse(not_found("link", name));
        }
        if let Err(e) = self.check_unused(&Output::Link(name.clone()), "link") {
            return Outcome::refuse(e);
        }
        let port = match self.ports.id(&Output::Link(name.clone())) {
            Ok(p) => p,
            Err(e) => return Outcome::refuse(e),
        };
        self.topology.links.retain(|l| l.name != *name);
        self.links.remove(name.as_str());
        let stop = Effect::StopLink {
            name: name.to_string(),
            port,
        };
        Outcome::ready(Ok(Response::Done), vec![stop, self.persist()])
    }

    fn rule_add(&mut self, spec: RuleSpec) -> Outcome {
        if let Err(e) = self.topology.check_rule(&spec) {
            return Outcome::refuse(invalid(e));
        }
        let id = self.next_rule_id;
        let after = match allocate_after(id) {
            Ok(a) => a,
            Err(e) => return Outcome::refuse(e),
        };
        let mut next = self.topology.clone();
        next.rules.push(RuleEntry {
            id: Some(RuleId(id)),
            src: spec.src,
            dst: spec.dst,
            out: spec.out,
        });
        let table = match self.compile(&next) {
            Ok(t) => t,
            Err(e) => return Outcome::refuse(e),
        };
        self.next_rule_id = after;
        self.topology = next;
        let publish = self.publish(table);
        Outcome::ready(Ok(Response::RuleAdded(RuleId(id))), vec![publish, self.persist()])
    }

    fn rule_del(&mut self, id: RuleId) -> Outcome {
        let mut next = self.topology.clone();
        next.rules.retain(|r| r.id != Some(id));
        if next.rules.len() == self.topology.rules.len() {
            return Outcome::refuse(not_found("rule", id.0));
        }
        let table = match self.compile(&next) {
            Ok(t) => t,
            Err(e) => return Outcome::refuse(e),
        };
        self.topology = next;
        self.rule_stats.remove(&id);
        let publish = self.publish(table);
        Outcome::ready(Ok(Response::Done), vec![publish, self.persist()])
    }

    fn start_link(&mut self, spec: LinkSpec, port: PortId) -> Effect {
        let mut link = LinkInfo::new(spec.peer.is_some());
        if spec.proto == LinkProto::Quic && spec.peer.is_none() && !self.config.quic_accepts {
            link.last_error =
                Some("this daemon has no quic_listen address, so QUIC peers cannot dial in".into());
        }
        let info = Arc::new(Mutex::new(link));
        self.links.insert(spec.name.to_string(), info.clone());
        Effect::StartLink {
            spec,
            port,
            stats: self.ports.stats(port),
            info,
        }
    }

    /// The forwarding table of `topology` (every rule numbered), continuing the
    /// generations of the table in force.
    fn compile(&mut self, topology: &Topology) -> Result<ForwardingTable, ControlError> {
        let mut table = ForwardingTable::succeeding(&self.table);
        for r in &topology.rules {
            let Some(id) = r.id else { continue };
            let outputs = r
                .out
                .iter()
                .map(|o| self.ports.id(o))
                .collect::<Result<Vec<_>, _>>()?;
            let stats = self.rule_stats.entry(id).or_default().clone();
            table.insert(id, r.src, r.dst, outputs, stats).map_err(invalid)?;
        }
        Ok(table)
    }

    fn publish(&mut self, table: ForwardingTable) -> Effect {
        self.table = Arc::new(table);
        Effect::PublishTable(self.table.clone())
    }

    fn persist(&self) -> Effect {
        Effect::Persist(self.topology.clone())
    }

    fn check_unused(&self, output: &Output, what: &str) -> Result<(), ControlError> {
        match self.topology.rules.iter().find(|r| r.out.contains(output)) {
            Some(r) => Err(ControlError::InUse {
                what: what.to_string(),
                name: match output {
                    Output::Link(n) | Output::Iface(n) => n.to_string(),
                },
                rule: r.id.map_or(0, |i| i.0),
            }),
            None => Ok(()),
        }
    }

    fn status(&self, now: Instant) -> StatusReport {
        StatusReport {
            node: self.config.node.clone(),
            version: self.config.version.clone(),
            uptime_ms: u64::try_from(now.saturating_duration_since(self.started).as_millis())
                .unwrap_or(u64::MAX),
            listen: self.config.listen.to_string(),
            config_time_bound_ms: self.topology.config_time_bound_ms,
        }
    }

    fn link_info(&self, name: &str) -> Option<LinkInfo> {
        self.links.get(name).map(|i| read_link_info(i).clone())
    }

    fn iface_list(&self) -> Vec<IfaceStatus> {
        self.topology
            .ifaces
            .iter()
            .map(|spec| {
                let run = self.ifaces.get(spec.name.as_str());
                IfaceStatus {
                    spec: spec.clone(),
                    up: run.is_some_and(|r| r.up),
                    error: match run {
                        Some(r) => r.error.clone(),
                        None => Some("not open".to_string()),
                    },
                    counters: self.ports.counters(&Output::Iface(spec.name.clone())),
                }
            })
            .collect()
    }

    fn link_list(&self) -> Vec<LinkStatus> {
        self.topology
            .links
            .iter()
            .map(|spec| {
                let info = self.link_info(&spec.name);
                LinkStatus {
                    spec: spec.clone(),
                    state: info.as_ref().map_or(LinkState::Connecting, |i| i.state),
                    peer_node: info.as_ref().and_then(|i| i.peer_node.clone()),
                    remote: info.as_ref().and_then(|i| i.remote.map(|r| r.to_string())),
                    sessions: info.as_ref().map_or(0, |i| i.sessions),
                    last_error: info.as_ref().and_then(|i| i.last_error.clone()),
                    counters: self.ports.counters(&Output::Link(spec.name.clone())),
                }
            })
            .collect()
    }

    fn measurements(&self, now: Instant) -> MeasureReport {
        let links = self
            .topology
            .links
            .iter()
            .map(|spec| {
                let info = self.link_info(&spec.name);
                let m = info.as_ref().map(|i| i.measure).unwrap_or_default();
                let bps = |r: &RateMeter| r.bits_per_sec().map_or(0, |b| b.round() as u64);
                let counters = self.ports.counters(&Output::Link(spec.name.clone()));
                LinkMeasurement {
                    name: spec.name.to_string(),
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
            node: self.config.node.clone(),
            uptime_us: micros(now.saturating_duration_since(self.started)),
            links,
        }
    }

    fn rule_list(&self) -> Vec<RuleStatus> {
        self.topology
            .rules
            .iter()
            .filter_map(|r| {
                let id = r.id?;
                let stats = self.rule_stats.get(&id);
                Some(RuleStatus {
                    id,
                    spec: r.spec(),
                    priority: priority(&r.src, &r.dst),
                    frames: stats.map_or(0, |s| s.frames()),
                    bytes: stats.map_or(0, |s| s.bytes()),
                })
            })
            .collect()
    }

    fn stats(&self) -> StatsReport {
        let (cache_hits, cache_misses) = self.dataplane.cache.get();
        StatsReport {
            node: self.config.node.clone(),
            ifaces: self
                .topology
                .ifaces
                .iter()
                .map(|i| {
                    (
                        i.name.to_string(),
                        self.ports.counters(&Output::Iface(i.name.clone())),
                    )
                })
                .collect(),
            links: self
                .topology
                .links
                .iter()
                .map(|l| {
                    (
                        l.name.to_string(),
                        self.ports.counters(&Output::Link(l.name.clone())),
                    )
                })
                .collect(),
            rules: self
                .topology
                .rules
                .iter()
                .filter_map(|r| {
                    let id = r.id?;
                    let s = self.rule_stats.get(&id);
                    Some((id, s.map_or(0, |s| s.frames()), s.map_or(0, |s| s.bytes())))
                })
                .collect(),
            drops: self.dataplane.drops.nonzero(),
            cache_hits,
            cache_misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_core::config::IfaceKind;
    use vnet_core::forward::DropReason;
    use vnet_core::mac::MacAddr;
    use vnet_core::rule::{DstMatch, MacMatch};

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the base instant of the tests' virtual time; nothing waits on the clock"
    )]
    fn state() -> (ControlState, Instant) {
        let now = Instant::now();
        let config = StateConfig {
            node: "h1".into(),
            version: "9.9.9".into(),
            listen: "198.18.0.2:7400".parse().unwrap(),
            quic_accepts: false,
        };
        (ControlState::new(config, Dataplane::default(), now), now)
    }

    fn tap(name: &str) -> IfaceSpec {
        IfaceSpec {
            name: name.parse().unwrap(),
            kind: IfaceKind::Tap,
            device: None,
            netns: None,
            mac: None,
            mtu: None,
            offload: true,
        }
    }

    fn link(name: &str, dials: bool) -> LinkSpec {
        LinkSpec {
            name: name.parse().unwrap(),
            proto: LinkProto::Tcp,
            peer: dials.then(|| "198.18.0.1:7400".parse().unwrap()),
            encrypt: false,
        }
    }

    fn rule(out: Output) -> RuleSpec {
        RuleSpec {
            src: MacMatch::Any,
            dst: DstMatch::None,
            out: vec![out],
        }
    }

    fn entry(id: Option<u64>, out: Output) -> RuleEntry {
        RuleEntry {
            id: id.map(RuleId),
            src: MacMatch::Any,
            dst: DstMatch::None,
            out: vec![out],
        }
    }

    fn ready(o: &Outcome) -> &Result<Response, ControlError> {
        match &o.reply {
            Reply::Ready(r) => r,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn done(o: &Outcome) {
        assert_eq!(ready(o), &Ok(Response::Done));
    }

    /// A short name per effect, to check their order.
    fn kinds(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::OpenIface { spec, .. } => format!("open {}", spec.name),
                Effect::CloseIface {
                    name, remove_device, ..
                } => format!("close {name}{}", if *remove_device { " remove" } else { "" }),
                Effect::StartLink { spec, .. } => format!("start {}", spec.name),
                Effect::StopLink { name, .. } => format!("stop {name}"),
                Effect::PublishTable(_) => "publish".into(),
                Effect::Persist(_) => "persist".into(),
            })
            .collect()
    }

    fn published(effects: &[Effect]) -> Arc<ForwardingTable> {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::PublishTable(t) => Some(t.clone()),
                _ => None,
            })
            .expect("a table is published")
    }

    /// Adds an interface whose device opens.
    fn add_iface(s: &mut ControlState, name: &str, now: Instant) {
        let o = s.apply(Request::IfaceAdd(tap(name)), now);
        assert_eq!(o.reply, Reply::AwaitOpen);
        done(&s.iface_opened(name, Ok(())));
    }

    #[test]
    fn status_reports_identity_uptime_and_bound() {
        let (mut s, t0) = state();
        done(&s.apply(Request::SetConfigTimeBound { ms: Some(900) }, t0));
        let o = s.apply(Request::Status, t0 + Duration::from_millis(1500));
        let Ok(Response::Status(st)) = ready(&o) else {
            panic!("{o:?}")
        };
        assert_eq!(
            (st.node.as_str(), st.version.as_str(), st.listen.as_str()),
            ("h1", "9.9.9", "198.18.0.2:7400")
        );
        assert_eq!((st.uptime_ms, st.config_time_bound_ms), (1500, Some(900)));
        // A clock that runs backwards (it never should) gives 0, not a panic.
        let o = s.apply(Request::Status, t0 - Duration::from_millis(1).min(t0.elapsed()));
        assert!(matches!(ready(&o), Ok(Response::Status(st)) if st.uptime_ms == 0));
    }

    #[test]
    fn iface_add_waits_for_the_device_and_answers_with_its_fate() {
        let (mut s, now) = state();
        let o = s.apply(Request::IfaceAdd(tap("vm0")), now);
        assert_eq!(o.reply, Reply::AwaitOpen);
        assert_eq!(kinds(&o.effects), ["open vm0"]);
        // Nothing is configured until the device opened.
        assert!(s.topology().ifaces.is_empty());
        let o = s.apply(Request::IfaceAdd(tap("vm1")), now);
        assert!(matches!(ready(&o), Err(ControlError::Invalid(m)) if m.contains("vm0")));
        let o = s.iface_opened("vm0", Ok(()));
        done(&o);
        assert_eq!(kinds(&o.effects), ["persist"]);
        let o = s.apply(Request::IfaceList, now);
        let Ok(Response::Ifaces(l)) = ready(&o) else {
            panic!("{o:?}")
        };
        assert_eq!((l.len(), l[0].up, l[0].error.clone()), (1, true, None));
        // A device that cannot be opened: a system error, and no interface.
        assert_eq!(
            s.apply(Request::IfaceAdd(tap("vm1")), now).reply,
            Reply::AwaitOpen
        );
        let o = s.iface_opened("vm1", Err("no such device".into()));
        assert_eq!(ready(&o), &Err(ControlError::System("no such device".into())));
        assert!(o.effects.is_empty());
        assert_eq!(s.topology().ifaces.len(), 1);
        // Duplicates and device names Linux refuses are refused at once (a bad name does
        // not decode: see proto's tests).
        assert!(matches!(
            ready(&s.apply(Request::IfaceAdd(tap("vm0")), now)),
            Err(ControlError::Exists { .. })
        ));
        assert!(matches!(
            ready(&s.apply(Request::IfaceAdd(tap("a-sixteen-bytes0")), now)),
            Err(ControlError::Invalid(m)) if m.contains("Linux allows at most 15")
        ));
    }

    #[test]
    fn iface_del_refuses_while_used_and_removes_the_device() {
        let (mut s, now) = state();
        assert!(matches!(
            ready(&s.apply(Request::IfaceDel { name: name("vm0") }, now)),
            Err(ControlError::NotFound { .. })
        ));
        add_iface(&mut s, "vm0", now);
        let o = s.apply(Request::RuleAdd(rule(Output::Iface(name("vm0")))), now);
        assert_eq!(ready(&o), &Ok(Response::RuleAdded(RuleId(1))));
        assert_eq!(
            ready(&s.apply(Request::IfaceDel { name: name("vm0") }, now)),
            &Err(ControlError::InUse {
                what: "interface".into(),
                name: "vm0".into(),
                rule: 1
            })
        );
        done(&s.apply(Request::RuleDel { id: RuleId(1) }, now));
        let o = s.apply(Request::IfaceDel { name: name("vm0") }, now);
        done(&o);
        assert_eq!(kinds(&o.effects), ["close vm0 remove", "persist"]);
        assert!(s.topology().ifaces.is_empty());
    }

    #[test]
    fn link_add_and_del_start_and_stop_links_on_stable_ports() {
        let (mut s, now) = state();
        let o = s.apply(Request::LinkAdd(link("h0-h1", true)), now);
        done(&o);
        assert_eq!(kinds(&o.effects), ["start h0-h1", "persist"]);
        let Effect::StartLink { port, info, .. } = &o.effects[0] else {
            unreachable!()
        };
        let first_port = *port;
        assert_eq!(read_link_info(info).state, LinkState::Connecting);
        assert!(matches!(
            ready(&s.apply(Request::LinkAdd(link("h0-h1", false)), now)),
            Err(ControlError::Exists { .. })
        ));
        // Names starting with a dot are the daemon's own (probes).
        assert!(matches!(
            ready(&s.apply(Request::LinkAdd(link(".probe", false)), now)),
            Err(ControlError::Invalid(_))
        ));
        // The session reports; the listing shows it.
        read_link_info(info).state = LinkState::Up;
        let o = s.apply(Request::LinkList, now);
        assert!(matches!(ready(&o), Ok(Response::Links(l)) if l[0].state == LinkState::Up));
        let o = s.apply(Request::LinkDel { name: name("h0-h1") }, now);
        assert_eq!(kinds(&o.effects), ["stop h0-h1", "persist"]);
        assert!(matches!(
            ready(&s.apply(Request::LinkDel { name: name("h0-h1") }, now)),
            Err(ControlError::NotFound { .. })
        ));
        // Added again, the link keeps its port: tables never point at a stale one.
        let o = s.apply(Request::LinkAdd(link("h0-h1", false)), now);
        let Effect::StartLink { port, info, .. } = &o.effects[0] else {
            unreachable!()
        };
        assert_eq!(*port, first_port);
        assert_eq!(read_link_info(info).state, LinkState::Waiting);
    }

    #[test]
    fn a_waiting_quic_link_without_a_listener_says_why() {
        let (mut s, now) = state();
        let mut spec = link("h0-h1", false);
        spec.proto = LinkProto::Quic;
        let o = s.apply(Request::LinkAdd(spec), now);
        let Effect::StartLink { info, .. } = &o.effects[0] else {
            unreachable!()
        };
        assert!(read_link_info(info)
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("quic_listen")));
    }

    #[test]
    fn link_del_refuses_while_a_rule_sends_to_it() {
        let (mut s, now) = state();
        done(&s.apply(Request::LinkAdd(link("h0-h1", true)), now));
        assert_eq!(
            ready(&s.apply(Request::RuleAdd(rule(Output::Link(name("h0-h1")))), now)),
            &Ok(Response::RuleAdded(RuleId(1)))
        );
        assert!(matches!(
            ready(&s.apply(Request::LinkDel { name: name("h0-h1") }, now)),
            Err(ControlError::InUse { rule: 1, .. })
        ));
    }

    #[test]
    fn rules_get_growing_ids_and_every_change_publishes_a_newer_table() {
        let (mut s, now) = state();
        add_iface(&mut s, "vm0", now);
        // A rule naming what is not configured is refused and publishes nothing.
        let o = s.apply(Request::RuleAdd(rule(Output::Link(name("nope")))), now);
        assert!(matches!(ready(&o), Err(ControlError::Invalid(_))) && o.effects.is_empty());
        let o = s.apply(Request::RuleAdd(rule(Output::Iface(name("vm0")))), now);
        assert_eq!(ready(&o), &Ok(Response::RuleAdded(RuleId(1))));
        assert_eq!(kinds(&o.effects), ["publish", "persist"]);
        let t1 = published(&o.effects);
        assert!(t1.contains(RuleId(1)));
        let o = s.apply(Request::RuleAdd(rule(Output::Iface(name("vm0")))), now);
        assert_eq!(ready(&o), &Ok(Response::RuleAdded(RuleId(2))));
        let t2 = published(&o.effects);
        assert!(t2.generation() > t1.generation());
        assert_eq!(t2.len(), 2);
        let o = s.apply(Request::RuleDel { id: RuleId(1) }, now);
        done(&o);
        let t3 = published(&o.effects);
        assert!(!t3.contains(RuleId(1)) && t3.generation() > t2.generation());
        assert!(matches!(
            ready(&s.apply(Request::RuleDel { id: RuleId(1) }, now)),
            Err(ControlError::NotFound { .. })
        ));
        // The listing has priorities and hit counters.
        let o = s.apply(Request::RuleList, now);
        let Ok(Response::Rules(rules)) = ready(&o) else {
            panic!("{o:?}")
        };
        assert_eq!(rules.len(), 1);
        assert_eq!(
            (rules[0].id, rules[0].priority),
            (RuleId(2), priority(&MacMatch::Any, &DstMatch::None))
        );
        // Deleted ids are never given out again.
        let o = s.apply(Request::RuleAdd(rule(Output::Iface(name("vm0")))), now);
        assert_eq!(ready(&o), &Ok(Response::RuleAdded(RuleId(3))));
    }

    #[test]
    fn config_replace_keeps_ids_numbers_the_rest_and_orders_its_effects() {
        let (mut s, now) = state();
        let t = Topology {
            ifaces: vec![tap("vm0"), tap("vm1")],
            links: vec![link("h0-h1", true), link("h1-h2", false)],
            rules: vec![
                entry(Some(7), Output::Link(name("h0-h1"))),
                entry(None, Output::Iface(name("vm0"))),
            ],
            ..Topology::default()
        };
        let o = s.apply(Request::ConfigReplace(t.clone()), now);
        done(&o);
        assert_eq!(
            kinds(&o.effects),
            [
                "open vm0",
                "open vm1",
                "start h0-h1",
                "start h1-h2",
                "publish",
                "persist"
            ]
        );
        let ids: Vec<_> = s.topology().rules.iter().map(|r| r.id).collect();
        assert_eq!(ids, [Some(RuleId(7)), Some(RuleId(8))]);
        for name in ["vm0", "vm1"] {
            assert_eq!(s.iface_opened(name, Ok(())).reply, Reply::Nothing);
        }
        // Replace: vm0 unchanged (left alone), vm1 gone, vm2 new; h0-h1 changed, h1-h2 gone.
        let mut next = t.clone();
        next.ifaces = vec![tap("vm0"), tap("vm2")];
        next.links = vec![LinkSpec {
            encrypt: true,
            ..link("h0-h1", true)
        }];
        next.rules = vec![
            entry(Some(7), Output::Link(name("h0-h1"))),
            entry(None, Output::Iface(name("vm2"))),
        ];
        let o = s.apply(Request::ConfigReplace(next), now);
        done(&o);
        assert_eq!(
            kinds(&o.effects),
            [
                "open vm2",
                "stop h0-h1",
                "start h0-h1",
                "publish",
                "persist",
                "close vm1 remove",
                "stop h1-h2"
            ]
        );
        // Numbering continues after every id ever given.
        assert_eq!(s.topology().rules[1].id, Some(RuleId(9)));
        // A device that fails after a replace shows in the listing, it is not fatal.
        assert_eq!(s.iface_opened("vm2", Err("busy".into())).reply, Reply::Nothing);
        let o = s.apply(Request::IfaceList, now);
        let Ok(Response::Ifaces(l)) = ready(&o) else {
            panic!("{o:?}")
        };
        let vm2 = l.iter().find(|i| i.spec.name == "vm2").unwrap();
        assert_eq!((vm2.up, vm2.error.as_deref()), (false, Some("busy")));
        // Get returns what is in force.
        let o = s.apply(Request::ConfigGet, now);
        assert!(matches!(ready(&o), Ok(Response::Config(c)) if c == s.topology()));
    }

    #[test]
    fn config_replace_retries_a_failed_interface() {
        let (mut s, now) = state();
        let t = Topology {
            ifaces: vec![tap("vm0")],
            ..Topology::default()
        };
        done(&s.apply(Request::ConfigReplace(t.clone()), now));
        s.iface_opened("vm0", Err("busy".into()));
        let o = s.apply(Request::ConfigReplace(t.clone()), now);
        assert_eq!(kinds(&o.effects), ["close vm0", "open vm0", "publish", "persist"]);
        s.iface_opened("vm0", Ok(()));
        let o = s.apply(Request::ConfigReplace(t), now);
        assert_eq!(kinds(&o.effects), ["publish", "persist"]);
    }

    #[test]
    fn carry_out_feeds_device_reports_back_and_returns_the_answer() {
        let (mut s, now) = state();
        let t = Topology {
            ifaces: vec![tap("vm0"), tap("vm1")],
            links: vec![link("a", true)],
            ..Topology::default()
        };
        let mut ran = Vec::new();
        let outcome = s.apply(Request::ConfigReplace(t), now);
        let reply = s.carry_out(outcome, |e| {
            ran.extend(kinds(std::slice::from_ref(&e)));
            match e {
                Effect::OpenIface { spec, .. } if spec.name == "vm1" => {
                    Some((spec.name.to_string(), Err("busy".into())))
                }
                Effect::OpenIface { spec, .. } => Some((spec.name.to_string(), Ok(()))),
                _ => None,
            }
        });
        assert_eq!(reply, Some(Reply::Ready(Ok(Response::Done))));
        assert_eq!(ran, ["open vm0", "open vm1", "start a", "publish", "persist"]);
        let o = s.apply(Request::IfaceList, now);
        assert!(matches!(ready(&o), Ok(Response::Ifaces(l))
            if l[0].up && !l[1].up && l[1].error.as_deref() == Some("busy")));
        // An IfaceAdd is answered by its device's report, whose persist runs too.
        let mut ran = Vec::new();
        let outcome = s.apply(Request::IfaceAdd(tap("vm2")), now);
        let reply = s.carry_out(outcome, |e| {
            ran.extend(kinds(std::slice::from_ref(&e)));
            match e {
                Effect::OpenIface { spec, .. } => Some((spec.name.to_string(), Ok(()))),
                _ => None,
            }
        });
        assert_eq!(reply, Some(Reply::Ready(Ok(Response::Done))));
        assert_eq!(ran, ["open vm2", "persist"]);
        let probe = s.apply(
            Request::Probe {
                to: "198.18.0.3:7400".parse().unwrap(),
                max_bytes: None,
                max_ms: None,
            },
            now,
        );
        assert!(matches!(s.carry_out(probe, |_| None), Some(Reply::Probe { .. })));
    }

    #[test]
    fn link_info_follows_its_sessions() {
        let remote: SocketAddr = "198.18.0.3:7400".parse().unwrap();
        let mut i = LinkInfo::new(true);
        assert_eq!(i.state, LinkState::Connecting);
        i.last_error = Some("timed out".into());
        i.session_up("h2", remote);
        assert_eq!(
            (
                i.state,
                i.peer_node.as_deref(),
                i.remote,
                i.sessions,
                i.last_error.clone()
            ),
            (LinkState::Up, Some("h2"), Some(remote), 1, None)
        );
        i.session_lost(true, None);
        assert_eq!((i.state, i.last_error.clone()), (LinkState::Connecting, None));
        i.session_up("h2", remote);
        i.session_lost(false, Some("no datagram from the peer for 5s".into()));
        assert_eq!(
            (i.state, i.sessions, i.last_error.as_deref()),
            (LinkState::Waiting, 2, Some("no datagram from the peer for 5s"))
        );
    }

    #[test]
    fn rule_ids_never_overflow() {
        let (mut s, now) = state();
        let mut t = Topology {
            ifaces: vec![tap("vm0")],
            rules: vec![entry(Some(u64::MAX), Output::Iface(name("vm0")))],
            ..Topology::default()
        };
        let o = s.apply(Request::ConfigReplace(t.clone()), now);
        assert!(
            matches!(ready(&o), Err(ControlError::Invalid(m)) if m.contains("too large")),
            "{o:?}"
        );
        assert!(o.effects.is_empty() && s.topology().ifaces.is_empty());
        // The largest id is taken: there is none left for an unnumbered rule, or a new one.
        t.rules = vec![
            entry(Some(u64::MAX - 1), Output::Iface(name("vm0"))),
            entry(None, Output::Iface(name("vm0"))),
        ];
        let o = s.apply(Request::ConfigReplace(t.clone()), now);
        assert!(matches!(ready(&o), Err(ControlError::Invalid(m)) if m.contains("no rule ids")));
        assert!(
            s.topology().ifaces.is_empty(),
            "a refused replace changes nothing"
        );
        t.rules.pop();
        done(&s.apply(Request::ConfigReplace(t), now));
        let o = s.apply(Request::RuleAdd(rule(Output::Iface(name("vm0")))), now);
        assert!(matches!(ready(&o), Err(ControlError::Invalid(m)) if m.contains("no rule ids")));
        assert_eq!(s.topology().rules.len(), 1);
    }

    #[test]
    fn stats_measure_and_vttif_read_the_shared_counters() {
        let (mut s, t0) = state();
        done(&s.apply(Request::LinkAdd(link("h0-h1", true)), t0));
        let o = s.apply(Request::ConfigGet, t0);
        assert!(matches!(ready(&o), Ok(Response::Config(_))));
        s.dataplane().drops.add(DropReason::NoRule);
        s.dataplane().cache.add(5, 2);
        let port = s.ports.id(&Output::Link(name("h0-h1"))).unwrap();
        s.ports.stats(port).tx(100);
        let o = s.apply(Request::Stats, t0);
        let Ok(Response::Stats(st)) = ready(&o) else {
            panic!("{o:?}")
        };
        assert_eq!(st.drops, vec![("no_rule".to_string(), 1)]);
        assert_eq!((st.cache_hits, st.cache_misses), (5, 2));
        assert_eq!(st.links[0].1.tx_bytes, 100);
        let o = s.apply(Request::Measure, t0 + Duration::from_micros(250));
        let Ok(Response::Measurements(m)) = ready(&o) else {
            panic!("{o:?}")
        };
        assert_eq!((m.uptime_us, m.links.len(), m.links[0].tx_bytes), (250, 1, 100));
        done(&s.apply(Request::VttifSet { enabled: false }, t0));
        let mut rec = s.dataplane().traffic.recorder();
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        rec.record(&a, &b, 60, vttif::Direction::Sent);
        let o = s.apply(Request::VttifMatrix, t0);
        let Ok(Response::VttifMatrix(snap)) = ready(&o) else {
            panic!("{o:?}")
        };
        assert!(!snap.enabled);
        assert_eq!((snap.node.as_str(), snap.matrix.entries.len()), ("h1", 1));
    }

    #[test]
    fn probes_are_the_drivers_and_failures_show_in_listings() {
        let (mut s, now) = state();
        let to: SocketAddr = "198.18.0.3:7400".parse().unwrap();
        let o = s.apply(
            Request::Probe {
                to,
                max_bytes: Some(1),
                max_ms: None,
            },
            now,
        );
        assert_eq!(
            o.reply,
            Reply::Probe {
                to,
                max_bytes: Some(1),
                max_ms: None
            }
        );
        add_iface(&mut s, "vm0", now);
        s.iface_failed("vm0", "device vanished".into());
        let o = s.apply(Request::IfaceList, now);
        assert!(matches!(ready(&o), Ok(Response::Ifaces(l))
            if !l[0].up && l[0].error.as_deref() == Some("device vanished")));
    }
}
