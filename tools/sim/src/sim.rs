//! The simulated world: hosts with their daemons and state files, the VMs on them, the
//! underlay, the event queue (with each daemon's link timer) and the virtual clock; and
//! the ledger and trace every run writes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lang::ast::natural_cmp;
use lang::Overlay;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vnet_core::config::Topology;
use vnet_core::mac::MacAddr;
use vnet_core::name::{Name, NameError};
use vnet_core::wire;

use crate::daemon::{ConfigureError, DaemonOutput, SimDaemon};
use crate::faults::FaultSchedule;
use crate::ledger::{Delivery, Ledger};
use crate::queue::EventQueue;
use crate::time::{Clock, SimTime};
use crate::trace::{self, Trace, TraceEvent, TraceMode};
use crate::underlay::{Fate, Underlay, MAX_PARTITIONS};
use crate::vm::{self, FrameId, Vm, VmId};
use crate::{rng, HostId, Stream};

/// Why a simulation cannot be built or go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A host has no underlay address (give its HOST line ADDRESS).
    #[error("host `{0}` has no address")]
    NoAddress(String),
    /// Two hosts share an address.
    #[error("hosts `{0}` and `{1}` share an address")]
    SharedAddress(String, String),
    /// The overlay does not compile to daemon topologies.
    #[error("the overlay does not compile: {0}")]
    Compile(#[from] lang::CompileError),
    /// A daemon refused a topology.
    #[error("daemon `{0}` refused its topology: {1}")]
    Configure(String, ConfigureError),
    /// A machine's name is not a daemon's node name.
    #[error("host `{0}`: {1}")]
    NodeName(String, NameError),
    /// A machine the caller named is not a host.
    #[error("no host `{0}`")]
    UnknownHost(String),
    /// A daemon to configure does not run.
    #[error("the daemon of `{0}` does not run")]
    HostDown(String),
    /// The schedule has more partitions than the underlay tracks.
    #[error("at most {MAX_PARTITIONS} partitions")]
    TooManyPartitions,
    /// A run did not settle within its event budget.
    #[error("more than {0} events without settling")]
    Runaway(u64),
    /// Links both ends declare were not up within the time given.
    #[error("links not up after {0:?}: {1}")]
    LinksDown(Duration, String),
}

/// Most events one [`Sim::run_until_idle`] processes: far more than any scenario needs,
/// so only a simulator bug reaches it (every frame's copies are bounded by the hop limit).
pub const EVENT_BUDGET: u64 = 20_000_000;

#[derive(Debug)]
enum Event {
    /// A VM sends the frame of this ledger entry.
    VmSends(FrameId),
    /// A datagram reaches `host` from `from`.
    Arrives {
        host: HostId,
        from: HostId,
        datagram: Vec<u8>,
    },
    /// The link timer of `host`'s daemon is due.
    Timer(HostId),
    Crash(HostId),
    Restart(HostId),
    PartitionStarts(usize),
    PartitionEnds(usize),
}

#[derive(Debug)]
struct SimHost {
    /// The machine's name, which is its daemon's node name.
    node: Name,
    addr: SocketAddr,
    /// `None` while crashed.
    daemon: Option<SimDaemon>,
    /// What the daemon wrote to its state file last: the topology it restarts with.
    state_file: Topology,
    /// Crashes not yet followed by their restart: overlapping crash windows are one
    /// outage, from the first crash to the last restart.
    outages: u32,
    /// When the daemon's link timer is scheduled (the earliest timer event that counts).
    timer: Option<SimTime>,
}

/// The simulation (module docs).
#[derive(Debug)]
pub struct Sim {
    seed: u64,
    clock: Clock,
    queue: EventQueue<Event>,
    underlay: Underlay,
    hosts: Vec<SimHost>,
    names: Vec<String>,
    host_by_ip: BTreeMap<IpAddr, HostId>,
    vms: Vec<Vm>,
    /// VMs by interface, per host.
    vm_at: Vec<BTreeMap<String, VmId>>,
    /// Seeds of the daemons' handshake randomness, one per daemon started.
    sessions: ChaCha8Rng,
    /// Events queued that are not link timers or link messages: frames to send or in
    /// flight, faults to come. [`Sim::run_until_idle`] runs until there are none.
    work: u64,
    faults: FaultSchedule,
    ledger: Ledger,
    trace: Trace,
    /// Frame messages a daemon forwarded though no link of it had the message's session
    /// with its sender up: what a stale session id must never get.
    stale: Vec<(SimTime, HostId, u32)>,
}

impl Sim {
    /// The hosts of `overlay` (in natural order of machine names: `HostId(i)` is the
    /// i-th), each daemon configured with its part of the overlay as `vnet apply` would
    /// compile it, a VM behind every interface with a MAC, and `faults` scheduled. The
    /// seed drives the underlay's draws.
    pub fn new(
        seed: u64,
        overlay: &Overlay,
        faults: FaultSchedule,
        mode: TraceMode,
    ) -> Result<Sim, SimError> {
        let mut machines: Vec<&lang::Host> = overlay.hosts.values().collect();
        machines.sort_by(|a, b| natural_cmp(&a.machine, &b.machine));
        let compiled = lang::compile(overlay)?;
        let mut hosts = Vec::with_capacity(machines.len());
        let mut host_by_ip = BTreeMap::new();
        for (i, h) in machines.iter().enumerate() {
            let ip = h
                .listen_ip()
                .ok_or_else(|| SimError::NoAddress(h.machine.clone()))?;
            if let Some(other) = host_by_ip.insert(ip, HostId(i as u32)) {
                let other = machines[other.0 as usize].machine.clone();
                return Err(SimError::SharedAddress(other, h.machine.clone()));
            }
            hosts.push(SimHost {
                node: Name::try_from(h.machine.as_str())
                    .map_err(|e| SimError::NodeName(h.machine.clone(), e))?,
                addr: SocketAddr::new(ip, h.port),
                state_file: compiled.get(&h.machine).cloned().unwrap_or_default(),
                daemon: None,
                outages: 0,
                timer: None,
            });
        }
        let names: Vec<String> = hosts.iter().map(|h| h.node.to_string()).collect();
        let id_of = |m: &str| {
            names
                .iter()
                .position(|n| n == m)
                .map(|i| HostId(i as u32))
                .ok_or_else(|| SimError::UnknownHost(m.to_string()))
        };
        let mut ifaces: Vec<&lang::Iface> = overlay.ifaces.values().filter(|i| i.mac.is_some()).collect();
        ifaces
            .sort_by(|a, b| natural_cmp(&a.name, &b.name).then_with(|| natural_cmp(&a.machine, &b.machine)));
        let mut vms = Vec::with_capacity(ifaces.len());
        let mut vm_at = vec![BTreeMap::new(); hosts.len()];
        for i in ifaces {
            let (Some(mac), host) = (i.mac, id_of(&i.machine)?) else {
                continue;
            };
            vm_at[host.0 as usize].insert(i.name.to_string(), VmId(vms.len() as u32));
            vms.push(Vm {
                iface: i.name.to_string(),
                mac,
                host,
            });
        }
        if faults.partitions.len() > MAX_PARTITIONS {
            return Err(SimError::TooManyPartitions);
        }
        let members = faults
            .partitions
            .iter()
            .map(|p| p.hosts.iter().map(|m| id_of(m)).collect())
            .collect::<Result<Vec<Vec<HostId>>, SimError>>()?;
        let mut queue = EventQueue::default();
        let mut work = 0;
        for (i, p) in faults.partitions.iter().enumerate() {
            queue.push(p.from, Event::PartitionStarts(i));
            queue.push(p.until, Event::PartitionEnds(i));
            work += 2;
        }
        for c in &faults.crashes {
            let host = id_of(&c.host)?;
            queue.push(c.at, Event::Crash(host));
            queue.push(c.restart, Event::Restart(host));
            work += 2;
        }
        let underlay = Underlay::new(hosts.len(), &faults, &members, rng(seed, Stream::Underlay));
        #[allow(
            clippy::disallowed_methods,
            reason = "only the base of simulated time: every duration the simulation uses is an offset from it, so traces stay deterministic"
        )]
        let base = Instant::now();
        let mut sim = Sim {
            seed,
            clock: Clock::new(base),
            queue,
            underlay,
            hosts,
            names,
            host_by_ip,
            vms,
            vm_at,
            sessions: rng(seed, Stream::Sessions),
            work,
            faults,
            ledger: Ledger::default(),
            trace: Trace::new(mode),
            stale: Vec::new(),
        };
        for i in 0..sim.hosts.len() {
            sim.start_daemon(HostId(i as u32))?;
        }
        Ok(sim)
    }

    /// The seed the simulation was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current simulated time.
    pub fn now(&self) -> SimTime {
        self.clock.now()
    }

    /// The current simulated time as an `Instant`, for pure APIs that take `now`.
    pub fn instant(&self) -> Instant {
        self.clock.instant(self.clock.now())
    }

    /// The fault schedule.
    pub fn faults(&self) -> &FaultSchedule {
        &self.faults
    }

    /// Machine names, by host id.
    pub fn host_names(&self) -> &[String] {
        &self.names
    }

    /// The id of machine `name`.
    pub fn host_id(&self, name: &str) -> Option<HostId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| HostId(i as u32))
    }

    /// The VMs, by id.
    pub fn vms(&self) -> &[Vm] {
        &self.vms
    }

    /// The VM behind interface `iface` of `host`.
    pub fn vm_at(&self, host: HostId, iface: &str) -> Option<VmId> {
        self.vm_at.get(host.0 as usize)?.get(iface).copied()
    }

    /// The daemon of machine `name`, while it runs.
    pub fn daemon(&self, name: &str) -> Option<&SimDaemon> {
        self.hosts.get(self.host_id(name)?.0 as usize)?.daemon.as_ref()
    }

    /// The session of link `name` when the link is up at both its ends with the same
    /// session (and no third daemon claims it).
    pub fn link_session(&self, name: &str) -> Option<u32> {
        let mut ends = self
            .hosts
            .iter()
            .filter_map(|h| h.daemon.as_ref())
            .filter_map(|d| d.link_session(name));
        match (ends.next(), ends.next(), ends.next()) {
            (Some(a), Some(b), None) if a == b => Some(a),
            _ => None,
        }
    }

    /// The links that should be up: every running daemon's link that dials an address
    /// where a running daemon declares the same link as waiting, with no partition
    /// between them; as (link, dialer, waiter).
    pub fn expected_links(&self) -> Vec<(String, HostId, HostId)> {
        let mut out = Vec::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let dialer = HostId(i as u32);
            let Some(d) = &h.daemon else { continue };
            for spec in &d.topology().links {
                let Some(&waiter) = spec.peer.and_then(|a| self.host_by_ip.get(&a.ip())) else {
                    continue;
                };
                let waits = self.hosts[waiter.0 as usize].daemon.as_ref().is_some_and(|w| {
                    w.topology()
                        .links
                        .iter()
                        .any(|l| l.name == spec.name && l.peer.is_none())
                });
                if waiter != dialer && waits && self.underlay.reachable(dialer, waiter) {
                    out.push((spec.name.to_string(), dialer, waiter));
                }
            }
        }
        out
    }

    /// The first of [`Sim::expected_links`] that is not up with one session at both
    /// ends.
    pub fn link_not_up(&self) -> Option<String> {
        self.expected_links().into_iter().find_map(|(name, a, b)| {
            let at = |h: HostId| self.hosts[h.0 as usize].daemon.as_ref()?.link_session(&name);
            let ends = [at(a), at(b)];
            (ends[0].is_none() || ends[0] != ends[1]).then(|| {
                let (a, b) = (&self.names[a.0 as usize], &self.names[b.0 as usize]);
                format!("link {name} ({a} dials {b}) has sessions {ends:?}")
            })
        })
    }

    /// Runs events until every expected link is up with one session at both ends, for
    /// at most `bound` of simulated time.
    pub fn await_links(&mut self, bound: Duration) -> Result<(), SimError> {
        let deadline = self.now() + bound;
        loop {
            let Some(down) = self.link_not_up() else {
                return Ok(());
            };
            match self.queue.next_time() {
                Some(t) if t <= deadline => self.step()?,
                _ => return Err(SimError::LinksDown(bound, down)),
            }
        }
    }

    /// Whether machines `a` and `b` both run and no partition separates them.
    pub fn joined(&self, a: HostId, b: HostId) -> bool {
        let runs = |h: HostId| self.hosts.get(h.0 as usize).is_some_and(|h| h.daemon.is_some());
        runs(a) && runs(b) && self.underlay.reachable(a, b)
    }

    /// Frame messages forwarded through a session their receiver did not have up with
    /// their sender (a stale session id): when, where, which session. Always empty
    /// unless the endpoint's demultiplexing is broken.
    pub fn stale_forwards(&self) -> &[(SimTime, HostId, u32)] {
        &self.stale
    }

    /// Every frame sent so far and what became of it.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The trace so far.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Schedules VM `from` to send a frame to `dst` at `at` (now, if `at` has passed).
    pub fn send(&mut self, from: VmId, dst: MacAddr, at: SimTime) -> FrameId {
        let at = at.max(self.now());
        let id = self.ledger.open(from, dst, at);
        self.queue.push(at, Event::VmSends(id));
        self.work += 1;
        id
    }

    /// Gives machine `name`'s daemon a new topology (`ConfigReplace`); it writes it to its
    /// state file, and links follow.
    pub fn configure(&mut self, name: &str, topology: Topology) -> Result<(), SimError> {
        let id = self
            .host_id(name)
            .ok_or_else(|| SimError::UnknownHost(name.to_string()))?;
        let now = self.instant();
        let daemon = self.hosts[id.0 as usize]
            .daemon
            .as_mut()
            .ok_or_else(|| SimError::HostDown(name.to_string()))?;
        let configured = daemon.configure(topology, now);
        self.trace
            .push(self.clock.now(), TraceEvent::Configured { host: id });
        self.drain(id, None);
        configured.map_err(|e| SimError::Configure(name.to_string(), e))
    }

    /// Starts `host`'s daemon from its state file: a new control state and endpoint, as a
    /// real daemon starts.
    fn start_daemon(&mut self, host: HostId) -> Result<(), SimError> {
        let now = self.instant();
        let mut entropy = ChaCha8Rng::seed_from_u64(self.sessions.next_u64());
        let h = &mut self.hosts[host.0 as usize];
        let mut daemon = SimDaemon::new(
            h.node.clone(),
            h.addr,
            Box::new(move |dest: &mut [u8]| entropy.fill_bytes(dest)),
            now,
        );
        let configured = daemon.configure(h.state_file.clone(), now);
        h.daemon = Some(daemon);
        h.timer = None;
        configured.map_err(|e| SimError::Configure(h.node.to_string(), e))?;
        self.drain(host, None);
        Ok(())
    }

    /// Processes every event due by `t`, then moves the clock to `t`.
    pub fn run_until(&mut self, t: SimTime) -> Result<(), SimError> {
        while self.queue.next_time().is_some_and(|at| at <= t) {
            self.step()?;
        }
        self.clock.advance_to(t);
        Ok(())
    }

    /// Processes events until none is left (at most [`EVENT_BUDGET`]).
    pub fn run_until_idle(&mut self) -> Result<(), SimError> {
        let mut budget = EVENT_BUDGET;
        while self.work > 0 {
            budget = budget.checked_sub(1).ok_or(SimError::Runaway(EVENT_BUDGET))?;
            self.step()?;
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), SimError> {
        let Some((at, event)) = self.queue.pop() else {
            return Ok(());
        };
        self.clock.advance_to(at);
        let counts = match &event {
            Event::Timer(_) => false,
            Event::Arrives { datagram, .. } => vm::datagram_frame(datagram).is_some(),
            _ => true,
        };
        if counts {
            self.work = self.work.saturating_sub(1);
        }
        match event {
            Event::VmSends(frame) => self.vm_sends(frame),
            Event::Arrives { host, from, datagram } => self.arrives(host, from, &datagram),
            Event::Timer(host) => {
                let now = self.instant();
                let h = &mut self.hosts[host.0 as usize];
                if h.timer == Some(at) {
                    h.timer = None;
                    if let Some(d) = h.daemon.as_mut() {
                        d.handle_timeout(now);
                    }
                    self.drain(host, None);
                }
            }
            Event::Crash(host) => {
                let h = &mut self.hosts[host.0 as usize];
                h.outages += 1;
                h.timer = None;
                if h.daemon.take().is_some() {
                    self.trace.push(at, TraceEvent::Crash { host });
                }
            }
            Event::Restart(host) => {
                let h = &mut self.hosts[host.0 as usize];
                h.outages = h.outages.saturating_sub(1);
                if h.outages == 0 && h.daemon.is_none() {
                    self.trace.push(at, TraceEvent::Restart { host });
                    self.start_daemon(host)?;
                }
            }
            Event::PartitionStarts(i) => {
                self.underlay.set_partition(i, true);
                self.trace
                    .push(at, TraceEvent::PartitionStarts { index: i as u32 });
            }
            Event::PartitionEnds(i) => {
                self.underlay.set_partition(i, false);
                self.trace.push(at, TraceEvent::PartitionEnds { index: i as u32 });
            }
        }
        Ok(())
    }

    fn vm_sends(&mut self, frame: FrameId) {
        let now = self.clock.now();
        let Some(record) = self.ledger.get(frame) else {
            return;
        };
        let (src, dst) = (record.src, record.dst);
        let vm = &self.vms[src.0 as usize];
        let bytes = vm::frame(vm.mac, dst, frame);
        let host = vm.host;
        self.trace.push(now, TraceEvent::Sent { frame, vm: src });
        let entered = match self.hosts[host.0 as usize].daemon.as_mut() {
            Some(d) => d.frame_from_vm(&vm.iface, &bytes).is_ok(),
            None => {
                if let Some(r) = self.ledger.get_mut(frame) {
                    r.host_down += 1;
                }
                false
            }
        };
        if !entered {
            self.trace.push(now, TraceEvent::NotAttached { frame, vm: src });
        }
        self.drain(host, Some(frame));
    }

    fn arrives(&mut self, host: HostId, from: HostId, datagram: &[u8]) {
        let frame = vm::datagram_frame(datagram).map(|(f, _)| f);
        let from_addr = self.hosts[from.0 as usize].addr;
        let now = self.instant();
        match self.hosts[host.0 as usize].daemon.as_mut() {
            Some(d) => {
                let session = wire::decode_datagram(datagram)
                    .ok()
                    .filter(|(h, _)| h.kind == wire::Kind::Frame)
                    .map(|(h, _)| h.session);
                let live = session.is_none_or(|s| d.has_session(from_addr, s));
                let before = d.pending_forwards();
                d.datagram_from_underlay(from_addr, datagram, now);
                if let Some(s) = session.filter(|_| !live && d.pending_forwards() > before) {
                    self.stale.push((self.clock.now(), host, s));
                }
            }
            None => {
                self.trace
                    .push(self.clock.now(), TraceEvent::HostDown { frame, host });
                if let Some(r) = frame.and_then(|f| self.ledger.get_mut(f)) {
                    r.host_down += 1;
                }
            }
        }
        self.drain(host, frame);
    }

    /// Carries out everything `host`'s daemon produced; `input` is the frame it was fed.
    /// Then schedules the daemon's link timer, if it moved earlier.
    fn drain(&mut self, host: HostId, input: Option<FrameId>) {
        let now = self.clock.now();
        self.drain_outputs(host, input);
        let base = self.clock.instant(SimTime::ZERO);
        let h = &mut self.hosts[host.0 as usize];
        let Some(due) = h.daemon.as_ref().and_then(SimDaemon::poll_timeout) else {
            return;
        };
        // Never in the past; rounded up to whole nanoseconds by the conversion.
        let due = SimTime::from_duration(due.saturating_duration_since(base)).max(now);
        if h.timer.is_none_or(|t| due < t) {
            h.timer = Some(due);
            self.queue.push(due, Event::Timer(host));
        }
    }

    fn drain_outputs(&mut self, host: HostId, input: Option<FrameId>) {
        let now = self.clock.now();
        while let Some(out) = self.hosts[host.0 as usize]
            .daemon
            .as_mut()
            .and_then(SimDaemon::poll_output)
        {
            match out {
                DaemonOutput::Transmit { to, datagram } => self.transmit(host, to, datagram),
                DaemonOutput::ToVm { iface, frame } => {
                    let vm = self.vm_at(host, &iface);
                    let id = vm::frame_id(&frame);
                    self.trace
                        .push(now, TraceEvent::Delivered { frame: id, host, vm });
                    if let Some(r) = id.and_then(|f| self.ledger.get_mut(f)) {
                        r.deliveries.push(Delivery { host, vm, at: now });
                    }
                }
                DaemonOutput::LinkUp { peer, session, .. } => {
                    if let Some(&peer) = self.host_by_ip.get(&peer.ip()) {
                        self.trace.push(now, TraceEvent::LinkUp { host, peer, session });
                    }
                }
                DaemonOutput::LinkDown { session, .. } => {
                    self.trace.push(now, TraceEvent::LinkDown { host, session });
                }
                DaemonOutput::Persist(topology) => self.hosts[host.0 as usize].state_file = topology,
                DaemonOutput::Dropped(reason) => {
                    self.trace.push(
                        now,
                        TraceEvent::Dropped {
                            frame: input,
                            host,
                            reason,
                        },
                    );
                    if let Some(r) = input.and_then(|f| self.ledger.get_mut(f)) {
                        r.drops.push((host, reason));
                    }
                }
            }
        }
    }

    fn transmit(&mut self, from: HostId, to: SocketAddr, datagram: Vec<u8>) {
        let now = self.clock.now();
        let carried = vm::datagram_frame(&datagram);
        let frame = carried.map(|(f, _)| f);
        let record = frame.and_then(|f| self.ledger.get_mut(f));
        let Some(&to) = self.host_by_ip.get(&to.ip()) else {
            // No host has the address: the underlay has nowhere to take it.
            self.trace.push(
                now,
                TraceEvent::Lost {
                    frame,
                    from,
                    to: from,
                },
            );
            if let Some(r) = record {
                r.lost += 1;
            }
            return;
        };
        let hops = carried.map_or(0, |(_, h)| h);
        if let Some(r) = record {
            r.transmissions += 1;
            r.min_hop_limit = Some(r.min_hop_limit.map_or(hops, |m| m.min(hops)));
        }
        self.trace.push(
            now,
            TraceEvent::Transmit {
                frame,
                from,
                to,
                hops,
            },
        );
        let fate = self.underlay.send(from, to, now);
        let record = frame.and_then(|f| self.ledger.get_mut(f));
        match fate {
            Fate::Cut => {
                self.trace.push(now, TraceEvent::Cut { frame, from, to });
                if let Some(r) = record {
                    r.cut += 1;
                }
            }
            Fate::Lost => {
                self.trace.push(now, TraceEvent::Lost { frame, from, to });
                if let Some(r) = record {
                    r.lost += 1;
                }
            }
            Fate::Arrives { at, copy } => {
                let work = u64::from(frame.is_some());
                self.work += work * (1 + u64::from(copy.is_some()));
                if let Some(copy) = copy {
                    self.trace.push(now, TraceEvent::Duplicated { frame, from, to });
                    if let Some(r) = record {
                        r.duplicated += 1;
                    }
                    self.queue.push(
                        copy,
                        Event::Arrives {
                            host: to,
                            from,
                            datagram: datagram.clone(),
                        },
                    );
                }
                self.queue.push(
                    at,
                    Event::Arrives {
                        host: to,
                        from,
                        datagram,
                    },
                );
            }
        }
    }

    /// The kept trace as text: the events of `frame` (all of them, or the `tail` last),
    /// then the last `tail` events of the run.
    pub fn render_trace(&self, frame: Option<FrameId>, tail: usize) -> String {
        let line = |r: &trace::Record| format!("    {}\n", trace::render(r, &self.names, &self.vms));
        let mut out = String::new();
        if let Some(f) = frame {
            let mine: Vec<&trace::Record> = self
                .trace
                .records()
                .filter(|r| r.event.frame() == Some(f))
                .collect();
            out += &format!("  events of {f}:\n");
            for r in &mine[mine.len().saturating_sub(tail.max(64))..] {
                out += &line(r);
            }
        }
        // Why a link was down is in the overlay's own events, often long before the tail.
        let overlay: Vec<&trace::Record> = self
            .trace
            .records()
            .filter(|r| r.event.frame().is_none())
            .collect();
        out += &format!(
            "  faults: {:?}\n  link, daemon and partition events ({}):\n",
            self.faults,
            overlay.len()
        );
        for r in &overlay[overlay.len().saturating_sub(tail.max(200))..] {
            out += &line(r);
        }
        let all: Vec<&trace::Record> = self.trace.records().collect();
        out += &format!("  last {} of {} events:\n", tail.min(all.len()), self.trace.len());
        for r in &all[all.len().saturating_sub(tail)..] {
            out += &line(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::check::RECOVERY_BOUND;
    use crate::faults::Crash;
    use crate::topology;

    fn star(hosts: usize) -> Overlay {
        let mut r = rng(1, Stream::Topology);
        topology::star(&topology::layout(&mut r, hosts, 1..=1, lang::LinkProto::Udp)).unwrap()
    }

    fn ms(n: u64) -> SimTime {
        SimTime::ZERO + Duration::from_millis(n)
    }

    #[test]
    fn overlapping_crashes_are_one_outage_and_the_restart_brings_links_back() {
        let mut faults = FaultSchedule::calm();
        for (at, restart) in [(100, 500), (200, 300)] {
            faults.crashes.push(Crash {
                host: "h1".into(),
                at: ms(at),
                restart: ms(restart),
            });
        }
        let mut sim = Sim::new(1, &star(2), faults, TraceMode::Full).unwrap();
        assert_eq!(sim.link_session("h0-h1"), None, "a link starts with a handshake");
        sim.run_until(ms(99)).unwrap();
        let session = sim.link_session("h0-h1");
        assert!(session.is_some(), "{:?}", sim.link_not_up());
        for (t, up) in [
            (150, false),
            (400, false),
            (500 + RECOVERY_BOUND.as_millis() as u64, true),
        ] {
            sim.run_until(ms(t)).unwrap();
            assert_eq!(sim.daemon("h1").is_some(), up, "at {t} ms");
            assert_eq!(sim.link_session("h0-h1").is_some(), up, "at {t} ms");
        }
        assert_ne!(
            sim.link_session("h0-h1"),
            session,
            "a new session after the restart"
        );
    }

    #[test]
    fn a_daemon_restarts_with_the_topology_it_last_had() {
        let o = star(3);
        let mut faults = FaultSchedule::calm();
        faults.crashes.push(Crash {
            host: "h2".into(),
            at: ms(10),
            restart: ms(20),
        });
        let mut sim = Sim::new(1, &o, faults, TraceMode::Full).unwrap();
        let mut t = sim.daemon("h2").unwrap().topology().clone();
        t.rules.pop();
        sim.configure("h2", t).unwrap();
        let configured = sim.daemon("h2").unwrap().topology().clone();
        // A frame into a crashed daemon goes nowhere and is counted as such.
        let vm = sim
            .vms()
            .iter()
            .position(|v| sim.host_names()[v.host.0 as usize] == "h2")
            .unwrap();
        let lost = sim.send(VmId(vm as u32), MacAddr::BROADCAST, ms(15));
        sim.run_until_idle().unwrap();
        assert_eq!(sim.daemon("h2").unwrap().topology(), &configured);
        let r = sim.ledger().get(lost).unwrap();
        assert_eq!((r.host_down, r.deliveries.len()), (1, 0));
        assert!(matches!(
            sim.configure("h9", Topology::default()),
            Err(SimError::UnknownHost(_))
        ));
    }
}
