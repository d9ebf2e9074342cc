//! One host's daemon, sans-IO: a second, pure driver of the real daemon's pieces. It
//! holds the real `vnet_control::state::ControlState` (configuration, port registry, rule
//! ids, forwarding table builds) and the real `vnet_core::endpoint::Endpoint` (every link's
//! handshakes, keepalives, dead-peer detection, Resets and session replacement), and
//! forwards with the real `Forwarder` and wire codec.
//!
//! | input                                   | what the real daemon does there                  |
//! |-----------------------------------------|--------------------------------------------------|
//! | [`SimDaemon::configure`]                | `ConfigReplace` → `ControlState::apply`, its effects carried out (`Daemon::effect`) |
//! | [`SimDaemon::frame_from_vm`]            | a TAP reader forwards a frame                    |
//! | [`SimDaemon::datagram_from_underlay`]   | the UDP link thread hands a datagram to its `Endpoint` (`udp.rs`) |
//! | [`SimDaemon::handle_timeout`]           | the UDP link thread's timer fires                |
//!
//! The effects of the control state are carried out here as `vnetd` carries them out:
//! `OpenIface` attaches the VM's port (and reports success), `CloseIface` detaches it,
//! `StartLink` / `StopLink` add and remove the link on the endpoint, `PublishTable` is
//! the table frames are forwarded with, and `Persist` comes out as
//! [`DaemonOutput::Persist`], the state file a restart reads back. A link's send side is
//! installed on the endpoint's `Established` and removed on `Lost`, as `udp.rs` does.
//!
//! Every link runs on the endpoint, whatever transport its spec names: the simulator's
//! links are all UDP links (TCP's reliable, ordered streams are not modelled). Frames
//! travel unsealed: sealing lives in `vnet-seal`, outside the pure crates.
//!
//! Every effect comes out of [`SimDaemon::poll_output`]: datagrams for the underlay,
//! frames for VMs, drops with their reason, link sessions coming and going, state files.
//! [`SimDaemon::poll_timeout`] says when the daemon wants [`SimDaemon::handle_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use vnet_control::dataplane::Dataplane;
use vnet_control::proto::{ControlError, Request};
use vnet_control::state::{ControlState, Effect, Reply, SharedLinkInfo, StateConfig};
use vnet_core::config::Topology;
use vnet_core::endpoint::{Datagram, Endpoint, EndpointEvent, LinkId};
use vnet_core::forward::{link_hop_limit, DropCounters, DropReason, Forwarder, PortCounters, PortStats};
use vnet_core::handshake::NetworkKey;
use vnet_core::name::Name;
use vnet_core::rule::Output;
use vnet_core::session::{link_caps, Credentials, Entropy, Event};
use vnet_core::table::{ForwardingTable, PortId};
use vnet_core::wire;

/// The overlay's network key in the simulation: every daemon holds the same.
const NETWORK_KEY: [u8; 32] = [0x5a; 32];

/// What a daemon step produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonOutput {
    /// A datagram for the underlay.
    Transmit {
        /// The peer daemon's link address.
        to: SocketAddr,
        /// The encoded link message.
        datagram: Vec<u8>,
    },
    /// A frame written to a local interface (the VM behind it receives it).
    ToVm {
        /// The interface.
        iface: Arc<str>,
        /// The Ethernet frame.
        frame: Vec<u8>,
    },
    /// A frame or message dropped, counted under this reason.
    Dropped(DropReason),
    /// A link has a new session with the daemon at `peer` (it replaces one that was up).
    LinkUp {
        /// The link.
        link: Arc<str>,
        /// The peer's link address.
        peer: SocketAddr,
        /// The session id.
        session: u32,
    },
    /// A link's session ended.
    LinkDown {
        /// The link.
        link: Arc<str>,
        /// The session that ended.
        session: u32,
    },
    /// The daemon writes this topology to its state file.
    Persist(Topology),
}

/// Why a daemon refused a topology.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigureError {
    /// The control state refused it.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The control state gave no answer (a bug of the driver or the state).
    #[error("the control state gave no answer")]
    NoAnswer,
}

/// Why a VM's frame did not enter the daemon.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IfaceError {
    /// The daemon has no such interface open: the VM's NIC is attached to nothing.
    #[error("no interface `{0}` is open")]
    NotConfigured(String),
}

/// A link session's send side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Up {
    peer: SocketAddr,
    session: u32,
}

/// How a port sends, when it can.
#[derive(Debug)]
enum PortKind {
    /// Closed or stopped.
    Down,
    /// An open local interface.
    Iface,
    /// A running link, with its session's send side while it has one.
    Link {
        link: LinkId,
        dials: bool,
        info: SharedLinkInfo,
        up: Option<Up>,
    },
}

#[derive(Debug)]
struct Port {
    name: Arc<str>,
    kind: PortKind,
    stats: Arc<PortStats>,
}

/// Everything of a daemon but its control state: what carries out the state's effects
/// and forwards.
struct Datapath {
    endpoint: Endpoint,
    table: Arc<ForwardingTable>,
    forwarder: Forwarder,
    /// Ports by the ids the control state gave them.
    ports: BTreeMap<PortId, Port>,
    /// Open interfaces' ports by name.
    ifaces: BTreeMap<String, PortId>,
    /// Running links' ports by endpoint link index.
    links: BTreeMap<usize, PortId>,
    drops: Arc<DropCounters>,
    outputs: VecDeque<DaemonOutput>,
    scratch: Vec<u8>,
}

/// A daemon built from the real control state, link endpoint and forwarding core
/// (module docs).
pub struct SimDaemon {
    node: String,
    state: ControlState,
    path: Datapath,
}

impl std::fmt::Debug for SimDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDaemon")
            .field("node", &self.node)
            .field("endpoint", &self.path.endpoint)
            .finish_non_exhaustive()
    }
}

impl SimDaemon {
    /// A daemon with an empty topology, listening at `listen`, started at `now`, drawing
    /// its handshakes' randomness from `entropy`.
    pub fn new(node: Name, listen: SocketAddr, entropy: Box<dyn Entropy + Send>, now: Instant) -> SimDaemon {
        let dataplane = Dataplane::default();
        let config = StateConfig {
            node: node.to_string(),
            version: "sim".into(),
            listen,
            quic_accepts: false,
        };
        let creds = Credentials {
            node: node.clone(),
            key: NetworkKey::from_bytes(NETWORK_KEY),
        };
        SimDaemon {
            node: node.to_string(),
            path: Datapath {
                endpoint: Endpoint::new(creds, entropy),
                table: Arc::new(ForwardingTable::new()),
                forwarder: Forwarder::default(),
                ports: BTreeMap::new(),
                ifaces: BTreeMap::new(),
                links: BTreeMap::new(),
                drops: dataplane.drops.clone(),
                outputs: VecDeque::new(),
                scratch: Vec::new(),
            },
            state: ControlState::new(config, dataplane, now),
        }
    }

    /// The node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The running topology, rule ids included: what the real daemon writes to its state
    /// file.
    pub fn topology(&self) -> &Topology {
        self.state.topology()
    }

    /// Makes the running topology `next` with `ConfigReplace`, carrying out its effects.
    /// A topology the control state refuses changes nothing.
    pub fn configure(&mut self, next: Topology, now: Instant) -> Result<(), ConfigureError> {
        let outcome = self.state.apply(Request::ConfigReplace(next), now);
        let SimDaemon { state, path, .. } = self;
        let reply = state.carry_out(outcome, |effect| path.effect(effect, now));
        path.settle(now);
        match reply {
            Some(Reply::Ready(Ok(_))) => Ok(()),
            Some(Reply::Ready(Err(e))) => Err(e.into()),
            _ => Err(ConfigureError::NoAnswer),
        }
    }

    /// A frame from the VM behind interface `iface`, forwarded with the hop limit a daemon
    /// puts on frames it originates.
    pub fn frame_from_vm(&mut self, iface: &str, frame: &[u8]) -> Result<(), IfaceError> {
        let p = &mut self.path;
        let port = p
            .ifaces
            .get(iface)
            .copied()
            .ok_or_else(|| IfaceError::NotConfigured(iface.to_string()))?;
        if let Some(port) = p.ports.get(&port) {
            port.stats.rx(frame.len());
        }
        p.forward(port, frame, wire::DEFAULT_HOP_LIMIT);
        Ok(())
    }

    /// A datagram from the underlay, from the daemon at `from`, handed to the endpoint as
    /// `udp.rs` does: a frame of an up session is forwarded with the hop limit it
    /// carries; anything else is the sessions' (then what they send and report is
    /// collected).
    pub fn datagram_from_underlay(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let p = &mut self.path;
        match p.endpoint.handle_datagram(from, datagram, now) {
            Datagram::Frame {
                link,
                header,
                payload,
            } => {
                // The simulated links carry plain frames only (module docs).
                if header.flags != 0 {
                    return p.drop_counted(DropReason::BadMessage);
                }
                let Some(&port) = p.links.get(&link.index()) else {
                    return p.drop_counted(DropReason::NoSession);
                };
                if let Some(port) = p.ports.get(&port) {
                    port.stats.rx(payload.len());
                }
                p.forward(port, payload, header.hop_limit);
            }
            Datagram::Consumed => p.settle(now),
            Datagram::Dropped(reason) => {
                p.drop_counted(reason);
                p.settle(now);
            }
        }
    }

    /// When the daemon's link timers want [`SimDaemon::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.path.endpoint.poll_timeout()
    }

    /// Runs the link timers due at `now` (retransmissions, keepalives, deadlines).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.path.endpoint.handle_timeout(now);
        self.path.settle(now);
    }

    /// The next effect of the inputs so far. Drain it after every input.
    pub fn poll_output(&mut self) -> Option<DaemonOutput> {
        self.path.outputs.pop_front()
    }

    /// The session of link `link`, while it has one.
    pub fn link_session(&self, link: &str) -> Option<u32> {
        self.path.ports.values().find_map(|p| match &p.kind {
            PortKind::Link { up: Some(up), .. } if &*p.name == link => Some(up.session),
            _ => None,
        })
    }

    /// Whether a link has an up session `session` with the daemon at `peer`.
    pub fn has_session(&self, peer: SocketAddr, session: u32) -> bool {
        self.path
            .ports
            .values()
            .any(|p| matches!(p.kind, PortKind::Link { up: Some(up), .. } if up == Up { peer, session }))
    }

    /// Frames the outputs not yet polled forward: to a VM or in a Frame message.
    pub fn pending_forwards(&self) -> usize {
        self.path
            .outputs
            .iter()
            .filter(|o| match o {
                DaemonOutput::ToVm { .. } => true,
                DaemonOutput::Transmit { datagram, .. } => {
                    wire::decode_datagram(datagram).is_ok_and(|(h, _)| h.kind == wire::Kind::Frame)
                }
                _ => false,
            })
            .count()
    }

    /// Drops by reason so far.
    pub fn drops(&self) -> &DropCounters {
        &self.path.drops
    }

    /// The counters of a port (zero for a port never opened).
    pub fn port_counters(&self, output: &Output) -> PortCounters {
        let (name, link) = match output {
            Output::Iface(n) => (n, false),
            Output::Link(n) => (n, true),
        };
        self.path
            .ports
            .values()
            .find(|p| &*p.name == name.as_str() && matches!(p.kind, PortKind::Link { .. }) == link)
            .map(|p| p.stats.snapshot())
            .unwrap_or_default()
    }
}

impl Datapath {
    /// Carries out one effect of the control state; for an interface, its name and that
    /// it opened (a VM's port always attaches).
    fn effect(&mut self, effect: Effect, now: Instant) -> Option<(String, Result<(), String>)> {
        match effect {
            Effect::OpenIface { spec, port, stats } => {
                self.ifaces.insert(spec.name.to_string(), port);
                self.ports.insert(
                    port,
                    Port {
                        name: Arc::from(spec.name.as_str()),
                        kind: PortKind::Iface,
                        stats,
                    },
                );
                return Some((spec.name.to_string(), Ok(())));
            }
            Effect::CloseIface { name, port, .. } => {
                self.ifaces.remove(&name);
                if let Some(p) = self.ports.get_mut(&port) {
                    p.kind = PortKind::Down;
                }
            }
            Effect::StartLink {
                spec,
                port,
                stats,
                info,
            } => {
                let link = self
                    .endpoint
                    .add_link(&spec.name, spec.peer, link_caps(&spec), now);
                self.links.insert(link.index(), port);
                self.ports.insert(
                    port,
                    Port {
                        name: Arc::from(spec.name.as_str()),
                        kind: PortKind::Link {
                            link,
                            dials: spec.peer.is_some(),
                            info,
                            up: None,
                        },
                        stats,
                    },
                );
            }
            Effect::StopLink { port, .. } => {
                let p = self.ports.get_mut(&port)?;
                if let PortKind::Link { link, up, .. } = &p.kind {
                    self.endpoint.remove_link(*link);
                    self.links.remove(&link.index());
                    if let Some(up) = up {
                        self.outputs.push_back(DaemonOutput::LinkDown {
                            link: p.name.clone(),
                            session: up.session,
                        });
                    }
                }
                p.kind = PortKind::Down;
            }
            Effect::PublishTable(table) => self.table = table,
            Effect::Persist(topology) => self.outputs.push_back(DaemonOutput::Persist(topology)),
        }
        None
    }

    /// Collects what the endpoint sends and reports, as `udp.rs`'s `settle`.
    fn settle(&mut self, now: Instant) {
        while let Some(t) = self.endpoint.poll_transmit(now, &mut self.scratch) {
            self.outputs.push_back(DaemonOutput::Transmit {
                to: t.to,
                datagram: self.scratch.clone(),
            });
        }
        while let Some(event) = self.endpoint.poll_event() {
            self.on_event(event);
        }
    }

    fn on_event(&mut self, EndpointEvent { link, peer, event }: EndpointEvent) {
        let Some(port) = link.and_then(|l| self.links.get(&l.index())) else {
            return;
        };
        let Some(Port {
            name,
            kind: PortKind::Link { dials, info, up, .. },
            ..
        }) = self.ports.get_mut(port)
        else {
            return;
        };
        let mut info = vnet_control::state::read_link_info(info);
        match event {
            Event::Established(s) => {
                *up = Some(Up { peer, session: s.id });
                info.session_up(&s.peer_node, peer);
                self.outputs.push_back(DaemonOutput::LinkUp {
                    link: name.clone(),
                    peer,
                    session: s.id,
                });
            }
            Event::Lost(lost) => {
                info.session_lost(*dials, Some(lost.to_string()));
                if let Some(old) = up.take() {
                    self.outputs.push_back(DaemonOutput::LinkDown {
                        link: name.clone(),
                        session: old.session,
                    });
                }
            }
            // Measurements and handshake trouble change no port; the status has them.
            _ => {}
        }
    }

    fn drop_counted(&mut self, reason: DropReason) {
        self.drops.add(reason);
        self.outputs.push_back(DaemonOutput::Dropped(reason));
    }

    /// One forwarding step, as the real data path's `forward` and `send`.
    fn forward(&mut self, ingress: PortId, frame: &[u8], hop_limit: u8) {
        let decision = match self.forwarder.decide(&self.table, ingress, frame, hop_limit) {
            Ok(d) => d,
            Err(reason) => {
                self.drops.add(reason);
                self.outputs.push_back(DaemonOutput::Dropped(reason));
                return;
            }
        };
        for &out in &decision.outputs {
            let port = self.ports.get(&out);
            let sent = match port.map(|p| &p.kind) {
                None | Some(PortKind::Down | PortKind::Link { up: None, .. }) => {
                    // The real data path finds no live port: a drop, not a port tx drop.
                    self.drops.add(DropReason::PortDown);
                    self.outputs
                        .push_back(DaemonOutput::Dropped(DropReason::PortDown));
                    continue;
                }
                Some(PortKind::Iface) => {
                    self.outputs.push_back(DaemonOutput::ToVm {
                        iface: port.map(|p| p.name.clone()).unwrap_or_else(|| Arc::from("")),
                        frame: frame.to_vec(),
                    });
                    Ok(())
                }
                Some(PortKind::Link { up: Some(up), .. }) => link_hop_limit(hop_limit).and_then(|hops| {
                    let mut datagram = Vec::new();
                    wire::encode_frame(hops, up.session, 0, &[frame], &mut datagram)
                        .map_err(|_| DropReason::TooLarge)?;
                    self.outputs.push_back(DaemonOutput::Transmit {
                        to: up.peer,
                        datagram,
                    });
                    Ok(())
                }),
            };
            let Some(port) = port else { continue };
            match sent {
                Ok(()) => port.stats.tx(frame.len()),
                Err(reason) => {
                    port.stats.tx_drop();
                    self.drops.add(reason);
                    self.outputs.push_back(DaemonOutput::Dropped(reason));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use vnet_core::config::{IfaceKind, IfaceSpec, LinkProto, LinkSpec, RuleEntry};
    use vnet_core::mac::MacAddr;
    use vnet_core::rule::{DstMatch, MacMatch};

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, i], 7400))
    }

    fn daemon(node: &str, i: u8, seed: u64, now: Instant) -> SimDaemon {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        SimDaemon::new(
            node.parse().unwrap(),
            addr(i),
            Box::new(move |d: &mut [u8]| r.fill_bytes(d)),
            now,
        )
    }

    /// A VM with `mac` behind `vm0`, and link `h0-h1` dialing `peer` (or waiting).
    fn topology(mac: MacAddr, peer: Option<SocketAddr>) -> Topology {
        Topology {
            ifaces: vec![IfaceSpec {
                name: "vm0".parse().unwrap(),
                kind: IfaceKind::Tap,
                device: None,
                netns: None,
                mac: Some(mac),
                mtu: None,
                offload: true,
            }],
            links: vec![LinkSpec {
                name: "h0-h1".parse().unwrap(),
                proto: LinkProto::Udp,
                peer,
                encrypt: false,
            }],
            rules: vec![
                RuleEntry {
                    id: None,
                    src: MacMatch::Any,
                    dst: DstMatch::Mac(MacMatch::Exact(mac)),
                    out: vec![Output::Iface("vm0".parse().unwrap())],
                },
                RuleEntry {
                    id: None,
                    src: MacMatch::Any,
                    dst: DstMatch::None,
                    out: vec![Output::Link("h0-h1".parse().unwrap())],
                },
            ],
            config_time_bound_ms: None,
        }
    }

    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = [dst.0, src.0].concat();
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(60, 0);
        f
    }

    /// Carries datagrams between the two daemons until none is left; the other outputs.
    fn exchange(d: &mut [SimDaemon; 2], now: Instant) -> Vec<(usize, DaemonOutput)> {
        let mut rest = Vec::new();
        loop {
            let mut moved = false;
            for i in 0..2 {
                while let Some(out) = d[i].poll_output() {
                    match out {
                        DaemonOutput::Transmit { to, datagram } => {
                            assert_eq!(to, addr(2 - i as u8));
                            d[1 - i].datagram_from_underlay(addr(i as u8 + 1), &datagram, now);
                            moved = true;
                        }
                        other => rest.push((i, other)),
                    }
                }
            }
            if !moved {
                return rest;
            }
        }
    }

    #[test]
    fn links_handshake_forward_and_replace_a_restarted_peers_session() {
        #[allow(clippy::disallowed_methods, reason = "a base instant for virtual time")]
        let now = Instant::now();
        // h0 (198.18.0.1) waits, h1 (198.18.0.2) dials.
        let mut d = [daemon("h0", 1, 1, now), daemon("h1", 2, 2, now)];
        d[0].configure(topology(A, None), now).unwrap();
        d[1].configure(topology(B, Some(addr(1))), now).unwrap();
        let out = exchange(&mut d, now);
        assert!(out
            .iter()
            .any(|(i, o)| *i == 0 && matches!(o, DaemonOutput::Persist(_))));
        let session = d[0].link_session("h0-h1");
        assert!(session.is_some());
        assert_eq!(d[1].link_session("h0-h1"), session, "one session at both ends");
        assert!(d[0].topology().rules.iter().all(|r| r.id.is_some()));

        // A frame from h1's VM to h0's crosses the link with one hop less.
        d[1].frame_from_vm("vm0", &frame(A, B)).unwrap();
        let Some(DaemonOutput::Transmit { datagram, .. }) = d[1].poll_output() else {
            panic!("no datagram");
        };
        let (h, _) = wire::decode_datagram(&datagram).unwrap();
        assert_eq!(
            (h.hop_limit, Some(h.session)),
            (wire::DEFAULT_HOP_LIMIT - 1, session)
        );
        d[0].datagram_from_underlay(addr(2), &datagram, now);
        assert_eq!(
            d[0].poll_output(),
            Some(DaemonOutput::ToVm {
                iface: Arc::from("vm0"),
                frame: frame(A, B)
            })
        );
        assert!(matches!(
            d[0].frame_from_vm("vm9", &frame(B, A)),
            Err(IfaceError::NotConfigured(_))
        ));

        // h0 restarts: h1's next frame earns a Reset, and h1 handshakes again at once.
        d[0] = daemon("h0", 1, 3, now);
        d[0].configure(topology(A, None), now).unwrap();
        d[1].frame_from_vm("vm0", &frame(A, B)).unwrap();
        let out = exchange(&mut d, now);
        assert!(
            out.contains(&(0, DaemonOutput::Dropped(DropReason::NoSession))),
            "{out:?}"
        );
        let new = d[0].link_session("h0-h1");
        assert!(new.is_some() && new != session, "{new:?} replaces {session:?}");
        assert_eq!(d[1].link_session("h0-h1"), new);
        assert!(out.iter().any(|(i, o)| *i == 1
            && *o
                == DaemonOutput::LinkDown {
                    link: Arc::from("h0-h1"),
                    session: session.unwrap()
                }));
    }
}
