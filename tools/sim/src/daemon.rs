//! One host's daemon, sans-IO: the configured [`Topology`], the port registry, the real
//! [`ForwardingTable`] and [`Forwarder`], and the link messages it sends and receives.
//!
//! This is the one interface the simulation drives a daemon through:
//!
//! | input                                   | what the real daemon does there                  |
//! |-----------------------------------------|--------------------------------------------------|
//! | [`SimDaemon::configure`]                | `ConfigReplace` → `Daemon::apply_topology`        |
//! | [`SimDaemon::frame_from_vm`]            | a TAP reader forwards a frame                    |
//! | [`SimDaemon::datagram_from_underlay`]   | the UDP link task decodes and forwards a message |
//! | [`SimDaemon::link_up`] / [`SimDaemon::link_down`] | a link session installs / removes its send side (`Daemon::link_up` / `link_down`) |
//!
//! and every effect comes out of [`SimDaemon::poll_output`]: datagrams for the underlay,
//! frames for VMs, and drops with their reason.
//!
//! **To be replaced.** `link_up` / `link_down` are the modelled link layer: the
//! simulation calls them from its global view ([`crate::links`]). When the sans-IO link
//! sessions of vnet-core exist, each configured link owns one; `datagram_from_underlay`
//! hands non-frame messages (handshake, keepalive, reset) to the link's session, the
//! session's events take the place of `link_up` / `link_down`, its `poll_transmit` feeds
//! [`DaemonOutput::Transmit`], and `poll_timeout` / `handle_timeout` join this interface
//! (the simulation then schedules a timer per daemon). When `vnet_control::state` exists,
//! `configure` becomes its `apply(ConfigReplace, now)` and the effects it returns are
//! applied here; the port registry and table publication below are what it replaces.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use vnet_core::config::{ConfigError, RuleEntry, Topology};
use vnet_core::forward::{DropCounters, DropReason, Forwarder, PortCounters, PortStats};
use vnet_core::name::Name;
use vnet_core::rule::Output;
use vnet_core::table::{ForwardingTable, PortId, RuleId, RuleStats, TableError};
use vnet_core::wire;

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
}

/// Why a daemon refused a topology.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigureError {
    /// The topology does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The forwarding table refused a rule.
    #[error(transparent)]
    Table(#[from] TableError),
}

/// Why a VM's frame did not enter the daemon.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IfaceError {
    /// The daemon has no such interface configured: the VM's NIC is attached to nothing.
    #[error("no interface `{0}` is configured")]
    NotConfigured(String),
}

/// How a port sends, when it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortState {
    /// Not configured, or a link without a session.
    Down,
    /// A configured local interface.
    Iface,
    /// A link with a session to `peer`.
    Link { peer: SocketAddr, session: u32 },
}

#[derive(Debug)]
struct Port {
    name: Arc<str>,
    state: PortState,
    stats: PortStats,
}

/// A daemon built from the real forwarding core (module docs).
#[derive(Debug)]
pub struct SimDaemon {
    node: String,
    topology: Topology,
    next_rule_id: u64,
    /// Stable port ids by output, as the real daemon's registry: a name keeps its id for
    /// the daemon's lifetime.
    registry: BTreeMap<Output, PortId>,
    ports: Vec<Port>,
    table: ForwardingTable,
    forwarder: Forwarder,
    rule_stats: BTreeMap<RuleId, Arc<RuleStats>>,
    /// Link ports by the session id their peer sends with.
    sessions: BTreeMap<u32, PortId>,
    drops: DropCounters,
    outputs: VecDeque<DaemonOutput>,
}

/// The hops left on a frame sent over a link, as the real data path's `send` decides: the
/// frame used one hop to get here, and a link cannot carry it with none left.
fn link_hops(hop_limit: u8) -> Option<u8> {
    hop_limit.checked_sub(1).filter(|h| *h > 0)
}

impl SimDaemon {
    /// A daemon with an empty topology.
    pub fn new(node: &str) -> SimDaemon {
        SimDaemon {
            node: node.to_string(),
            topology: Topology::default(),
            next_rule_id: 1,
            registry: BTreeMap::new(),
            ports: Vec::new(),
            table: ForwardingTable::new(),
            forwarder: Forwarder::default(),
            rule_stats: BTreeMap::new(),
            sessions: BTreeMap::new(),
            drops: DropCounters::default(),
            outputs: VecDeque::new(),
        }
    }

    /// The node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The running topology, rule ids included: what the real daemon writes to its state
    /// file.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Makes the running topology `next`, as `ConfigReplace` does: rule ids given are kept
    /// and the others numbered after the largest in use; a link whose spec changes or that
    /// goes loses its session (the real daemon restarts it); the new table is published
    /// at once. A topology that does not validate changes nothing.
    pub fn configure(&mut self, mut next: Topology) -> Result<(), ConfigureError> {
        next.validate()?;
        let max_id = next.rules.iter().filter_map(|r| r.id).map(|i| i.0).max();
        let mut next_id = self.next_rule_id.max(max_id.map_or(1, |m| m.saturating_add(1)));
        for r in &mut next.rules {
            if r.id.is_none() {
                r.id = Some(RuleId(next_id));
                next_id = next_id.saturating_add(1);
            }
        }
        let table = self.build_table(&next.rules)?;
        self.next_rule_id = next_id;
        let old = std::mem::replace(&mut self.topology, next);
        for l in &old.links {
            if !self.topology.links.contains(l) {
                self.link_down(&l.name);
            }
        }
        let names: Vec<Name> = self.topology.ifaces.iter().map(|i| i.name.clone()).collect();
        for name in names {
            self.port_id(&Output::Iface(name));
        }
        for (output, id) in &self.registry {
            let port = &mut self.ports[id.0 as usize];
            port.state = match output {
                Output::Iface(name) if self.topology.ifaces.iter().any(|i| &i.name == name) => {
                    PortState::Iface
                }
                Output::Iface(_) => PortState::Down,
                Output::Link(_) => port.state,
            };
        }
        self.rule_stats
            .retain(|id, _| self.topology.rules.iter().any(|r| r.id == Some(*id)));
        self.table = table;
        Ok(())
    }

    /// The table of `rules` (every one with an id), its generations above the running
    /// table's, as the real daemon's `publish_table` builds it.
    fn build_table(&mut self, rules: &[RuleEntry]) -> Result<ForwardingTable, TableError> {
        let mut table = ForwardingTable::succeeding(&self.table);
        for r in rules {
            let Some(id) = r.id else { continue };
            let outputs = r.out.iter().map(|o| self.port_id(o)).collect();
            let stats = self.rule_stats.entry(id).or_default().clone();
            table.insert(id, r.src, r.dst, outputs, stats)?;
        }
        Ok(table)
    }

    fn port_id(&mut self, output: &Output) -> PortId {
        if let Some(id) = self.registry.get(output) {
            return *id;
        }
        // More ports than u32 ids would take more memory than any simulation has.
        let id = PortId(u32::try_from(self.ports.len()).unwrap_or(u32::MAX));
        let name = match output {
            Output::Iface(n) | Output::Link(n) => Arc::from(n.as_str()),
        };
        self.registry.insert(output.clone(), id);
        self.ports.push(Port {
            name,
            state: PortState::Down,
            stats: PortStats::default(),
        });
        id
    }

    /// A frame from the VM behind interface `iface`, forwarded with the hop limit a daemon
    /// puts on frames it originates.
    pub fn frame_from_vm(&mut self, iface: &str, frame: &[u8]) -> Result<(), IfaceError> {
        let id = self
            .registered(Output::Iface, iface)
            .filter(|id| self.ports[id.0 as usize].state == PortState::Iface)
            .ok_or_else(|| IfaceError::NotConfigured(iface.to_string()))?;
        self.ports[id.0 as usize].stats.rx(frame.len());
        self.forward(id, frame, wire::DEFAULT_HOP_LIMIT);
        Ok(())
    }

    /// A datagram from the underlay, from the daemon at `from`: a Frame message of a link
    /// session is forwarded with the hop limit it carries.
    pub fn datagram_from_underlay(&mut self, from: SocketAddr, datagram: &[u8]) {
        let Ok((header, payload)) = wire::decode_datagram(datagram) else {
            return self.drop_counted(DropReason::BadMessage);
        };
        if header.kind != wire::Kind::Frame || header.flags != 0 {
            // The modelled links carry plain frames only (no handshake, keepalive, seal
            // or virtio-net header): anything else is not a message of theirs.
            return self.drop_counted(DropReason::BadMessage);
        }
        let port = self.sessions.get(&header.session).copied().filter(|id| {
            matches!(self.ports[id.0 as usize].state, PortState::Link { peer, .. } if peer.ip() == from.ip())
        });
        let Some(port) = port else {
            return self.drop_counted(DropReason::NoSession);
        };
        self.ports[port.0 as usize].stats.rx(payload.len());
        self.forward(port, payload, header.hop_limit);
    }

    /// One forwarding step, as the real data path's `forward` and `send`.
    fn forward(&mut self, ingress: PortId, frame: &[u8], hop_limit: u8) {
        let SimDaemon {
            table,
            forwarder,
            ports,
            drops,
            outputs,
            ..
        } = self;
        let decision = match forwarder.decide(table, ingress, frame, hop_limit) {
            Ok(d) => d,
            Err(reason) => {
                drops.add(reason);
                outputs.push_back(DaemonOutput::Dropped(reason));
                return;
            }
        };
        for &out in &decision.outputs {
            let Some(port) = ports.get(out.0 as usize) else {
                drops.add(DropReason::PortDown);
                outputs.push_back(DaemonOutput::Dropped(DropReason::PortDown));
                continue;
            };
            let sent = match port.state {
                PortState::Down => {
                    // The real data path finds no live port: a drop, not a port tx drop.
                    drops.add(DropReason::PortDown);
                    outputs.push_back(DaemonOutput::Dropped(DropReason::PortDown));
                    continue;
                }
                PortState::Iface => {
                    outputs.push_back(DaemonOutput::ToVm {
                        iface: port.name.clone(),
                        frame: frame.to_vec(),
                    });
                    Ok(())
                }
                PortState::Link { peer, session } => match link_hops(hop_limit) {
                    None => Err(DropReason::HopLimit),
                    Some(hops) => {
                        let mut datagram = Vec::new();
                        match wire::encode_frame(hops, session, 0, &[frame], &mut datagram) {
                            Ok(()) => {
                                outputs.push_back(DaemonOutput::Transmit { to: peer, datagram });
                                Ok(())
                            }
                            Err(_) => Err(DropReason::TooLarge),
                        }
                    }
                },
            };
            match sent {
                Ok(()) => port.stats.tx(frame.len()),
                Err(reason) => {
                    port.stats.tx_drop();
                    drops.add(reason);
                    outputs.push_back(DaemonOutput::Dropped(reason));
                }
            }
        }
    }

    fn drop_counted(&mut self, reason: DropReason) {
        self.drops.add(reason);
        self.outputs.push_back(DaemonOutput::Dropped(reason));
    }

    /// The next effect of the inputs so far. Drain it after every input.
    pub fn poll_output(&mut self) -> Option<DaemonOutput> {
        self.outputs.pop_front()
    }

    /// Link `link` has a session with the daemon at `peer`, whose messages carry
    /// `session` (replaces any session it had). Ignored for a link not configured here.
    /// Part of the modelled link layer (module docs).
    pub fn link_up(&mut self, link: &str, peer: SocketAddr, session: u32) {
        let Some(name) = self
            .topology
            .links
            .iter()
            .find(|l| l.name == link)
            .map(|l| l.name.clone())
        else {
            return;
        };
        self.link_down(link);
        let id = self.port_id(&Output::Link(name));
        self.ports[id.0 as usize].state = PortState::Link { peer, session };
        self.sessions.insert(session, id);
    }

    /// Link `link` has no session any more. Part of the modelled link layer.
    pub fn link_down(&mut self, link: &str) {
        let Some(id) = self.registered(Output::Link, link) else {
            return;
        };
        let port = &mut self.ports[id.0 as usize];
        if let PortState::Link { session, .. } = port.state {
            self.sessions.remove(&session);
        }
        port.state = PortState::Down;
    }

    /// The port of an output named by text (text that is not a name names none).
    fn registered(&self, output: fn(Name) -> Output, name: &str) -> Option<PortId> {
        let name = Name::try_from(name).ok()?;
        self.registry.get(&output(name)).copied()
    }

    /// The session of link `link`, when it has one.
    pub fn link_session(&self, link: &str) -> Option<u32> {
        let id = self.registered(Output::Link, link)?;
        match self.ports[id.0 as usize].state {
            PortState::Link { session, .. } => Some(session),
            _ => None,
        }
    }

    /// Drops by reason so far.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// The counters of a port (zero for a port never configured).
    pub fn port_counters(&self, output: &Output) -> PortCounters {
        self.registry
            .get(output)
            .map(|id| self.ports[id.0 as usize].stats.snapshot())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_core::config::{IfaceKind, IfaceSpec, LinkProto, LinkSpec};
    use vnet_core::mac::MacAddr;
    use vnet_core::rule::{DstMatch, MacMatch};

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn topology() -> Topology {
        Topology {
            ifaces: vec![IfaceSpec {
                name: name("vm0"),
                kind: IfaceKind::Tap,
                device: None,
                netns: None,
                mac: Some(A),
                mtu: None,
                offload: true,
            }],
            links: vec![LinkSpec {
                name: name("h0-h1"),
                proto: LinkProto::Udp,
                peer: None,
                encrypt: false,
            }],
            rules: vec![
                RuleEntry {
                    id: None,
                    src: MacMatch::Any,
                    dst: DstMatch::Mac(MacMatch::Exact(A)),
                    out: vec![Output::Iface(name("vm0"))],
                },
                RuleEntry {
                    id: None,
                    src: MacMatch::Any,
                    dst: DstMatch::None,
                    out: vec![Output::Link(name("h0-h1"))],
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

    fn drain(d: &mut SimDaemon) -> Vec<DaemonOutput> {
        std::iter::from_fn(|| d.poll_output()).collect()
    }

    #[test]
    fn forwards_over_a_session_with_one_hop_less_and_delivers_what_comes_back() {
        let peer: SocketAddr = "198.18.0.2:7400".parse().unwrap();
        let mut d = SimDaemon::new("h0");
        d.configure(topology()).unwrap();
        assert!(d.topology().rules.iter().all(|r| r.id.is_some()));
        d.frame_from_vm("vm0", &frame(B, A)).unwrap();
        assert_eq!(drain(&mut d), [DaemonOutput::Dropped(DropReason::PortDown)]);
        d.link_up("h0-h1", peer, 7);
        d.frame_from_vm("vm0", &frame(B, A)).unwrap();
        let out = drain(&mut d);
        let [DaemonOutput::Transmit { to, datagram }] = out.as_slice() else {
            panic!("expected one datagram: {out:?}");
        };
        assert_eq!(*to, peer);
        let (h, payload) = wire::decode_datagram(datagram).unwrap();
        assert_eq!(
            (h.hop_limit, h.session, payload),
            (wire::DEFAULT_HOP_LIMIT - 1, 7, &frame(B, A)[..])
        );

        let mut back = Vec::new();
        wire::encode_frame(3, 7, 0, &[&frame(A, B)], &mut back).unwrap();
        d.datagram_from_underlay(peer, &back);
        assert_eq!(
            drain(&mut d),
            [DaemonOutput::ToVm {
                iface: Arc::from("vm0"),
                frame: frame(A, B)
            }]
        );
        // A frame from the link for anyone else would go back where it came from.
        back.clear();
        wire::encode_frame(3, 7, 0, &[&frame(B, A)], &mut back).unwrap();
        d.datagram_from_underlay(peer, &back);
        assert_eq!(drain(&mut d), [DaemonOutput::Dropped(DropReason::SplitHorizon)]);
        // Wrong session, wrong sender, garbage.
        let other: SocketAddr = "198.18.0.9:7400".parse().unwrap();
        let message = |session| {
            let mut m = Vec::new();
            wire::encode_frame(3, session, 0, &[&frame(A, B)], &mut m).unwrap();
            m
        };
        d.datagram_from_underlay(peer, &message(8));
        d.datagram_from_underlay(other, &message(7));
        d.datagram_from_underlay(peer, &message(7)[..20]);
        assert_eq!(
            drain(&mut d),
            [
                DaemonOutput::Dropped(DropReason::NoSession),
                DaemonOutput::Dropped(DropReason::NoSession),
                DaemonOutput::Dropped(DropReason::BadMessage)
            ]
        );
        assert_eq!(d.drops().get(DropReason::NoSession), 2);
        assert_eq!(d.port_counters(&Output::Iface(name("vm0"))).tx_frames, 1);
    }

    #[test]
    fn a_link_frame_with_one_hop_left_is_dropped_at_the_hop_limit() {
        let (p1, p2): (SocketAddr, SocketAddr) = (
            "198.18.0.2:7400".parse().unwrap(),
            "198.18.0.3:7400".parse().unwrap(),
        );
        let mut t = topology();
        t.links.push(LinkSpec {
            name: name("h0-h2"),
            ..t.links[0].clone()
        });
        t.rules.push(RuleEntry {
            id: None,
            src: MacMatch::Any,
            dst: DstMatch::Mac(MacMatch::Exact(B)),
            out: vec![Output::Link(name("h0-h2"))],
        });
        let mut d = SimDaemon::new("h0");
        d.configure(t).unwrap();
        d.link_up("h0-h1", p1, 7);
        d.link_up("h0-h2", p2, 8);
        // From the link with 2 hops left the frame leaves with 1; with 1 left it cannot.
        for hops in [2, 1] {
            let mut m = Vec::new();
            wire::encode_frame(hops, 7, 0, &[&frame(B, A)], &mut m).unwrap();
            d.datagram_from_underlay(p1, &m);
        }
        let out = drain(&mut d);
        let [DaemonOutput::Transmit { to, datagram }, DaemonOutput::Dropped(DropReason::HopLimit)] =
            out.as_slice()
        else {
            panic!("{out:?}");
        };
        assert_eq!(
            (*to, wire::decode_datagram(datagram).unwrap().0.hop_limit),
            (p2, 1)
        );
        assert_eq!(d.port_counters(&Output::Link(name("h0-h2"))).tx_drops, 1);
        assert_eq!(link_hops(16), Some(15));
        assert_eq!(link_hops(0), None);
    }

    #[test]
    fn reconfiguring_keeps_ports_and_ids_and_restarts_changed_links() {
        let peer: SocketAddr = "198.18.0.2:7400".parse().unwrap();
        let mut d = SimDaemon::new("h0");
        d.configure(topology()).unwrap();
        d.link_up("h0-h1", peer, 7);
        let ids: Vec<_> = d.topology().rules.iter().map(|r| r.id).collect();
        // The same topology with its ids: nothing changes, the session stays.
        d.configure(d.topology().clone()).unwrap();
        assert_eq!(d.link_session("h0-h1"), Some(7));
        assert_eq!(d.topology().rules.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
        // Without ids: numbered after the largest in use.
        d.configure(topology()).unwrap();
        assert!(d.topology().rules.iter().all(|r| r.id > ids[1]));
        let mut changed = topology();
        changed.links[0].proto = LinkProto::Tcp;
        d.configure(changed).unwrap();
        assert_eq!(d.link_session("h0-h1"), None, "a changed link restarts");
        let mut bad = topology();
        bad.rules[0].out = vec![Output::Iface(name("vm9"))];
        assert!(d.configure(bad).is_err());
        assert!(matches!(
            d.frame_from_vm("vm9", &frame(B, A)),
            Err(IfaceError::NotConfigured(_))
        ));
    }
}
