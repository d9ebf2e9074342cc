//! The mapping between the language and the data plane.
//!
//! - A host is a vnetd; its machine name is the daemon's node name.
//! - `IFACE` becomes an [`IfaceSpec`] on its machine's daemon.
//! - `LINK proto owner owner peer` becomes a [`LinkSpec`] named [`link_name`]`(owner, peer)`
//!   on **both** daemons: the owner's dials `peer`'s address at `PORT` (default: the
//!   peer host's port), the peer's waits (`peer: None`). The lab's links come out the same
//!   way because there the higher-numbered end dials.
//! - `FORWARD` statements of one machine with the same source and destination become
//!   one vnetd rule whose outputs are their targets in order: all rules at the top
//!   priority fire and outputs are deduplicated, so both forms forward alike.
//!
//! [`decompile`] is the inverse, for `vnet show` and `vnet diff` against live daemons.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use vnet_core::config::{
    IfaceKind as VIfaceKind, IfaceSpec, LinkProto as VLinkProto, LinkSpec, RuleEntry, Topology,
};
use vnet_core::name::{Name, NameError};
use vnet_core::rule::Output;

use crate::ast::{link_name, Host, Iface, IfaceKind, Link, LinkProto, Rule, Target};
use crate::model::Overlay;

/// Why an overlay cannot be given to the daemons, or a daemon's state read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The link uses a feature vnetd does not have yet.
    #[error("link `{link}`: {feature} is not supported by vnetd yet")]
    Unsupported {
        /// The link.
        link: String,
        /// "QUIC", "per-link keys" or "bandwidth reservations".
        feature: &'static str,
    },
    /// The dialing end needs the peer's address and the peer host has none.
    #[error("link `{link}` dials `{peer}`, which has no address: give its HOST line ADDRESS ip")]
    NoAddress {
        /// The link.
        link: String,
        /// The peer machine.
        peer: String,
    },
    /// A daemon reports a link whose name matches no pair of known machines.
    #[error("daemon `{machine}` has link `{link}`, which joins it to no known machine")]
    StrangeLink {
        /// The daemon.
        machine: String,
        /// The link.
        link: String,
    },
    /// Both ends of a link dial, or both wait, or only one end declares it.
    #[error("link `{0}` is inconsistent: exactly one end must dial and both must declare it")]
    InconsistentLink(String),
    /// The name of the link between two machines (`a-b`) is not a valid name: the two
    /// machine names are too long together.
    #[error("the link between `{a}` and `{b}` has no valid name: {error}")]
    LinkName {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// Why `a-b` is not a name.
        error: NameError,
    },
    /// A daemon reports something the language cannot say.
    #[error("daemon `{machine}`: {what}")]
    Unrepresentable {
        /// The daemon.
        machine: String,
        /// What it is.
        what: String,
    },
}

/// The topology each host's daemon should run, by machine name (every host has one,
/// possibly empty).
pub fn compile(o: &Overlay) -> Result<BTreeMap<String, Topology>, CompileError> {
    let mut out: BTreeMap<String, Topology> =
        o.hosts.keys().map(|m| (m.clone(), Topology::default())).collect();
    for i in o.ifaces.values() {
        if let Some(t) = out.get_mut(&i.machine) {
            t.ifaces.push(iface_spec(i));
        }
    }
    for l in o.links.values() {
        let name = spec_link_name(&l.owner, &l.peer)?;
        let unsupported = |feature| CompileError::Unsupported {
            link: name.to_string(),
            feature,
        };
        let proto = match l.proto {
            LinkProto::Tcp => VLinkProto::Tcp,
            LinkProto::Udp => VLinkProto::Udp,
            LinkProto::Quic => VLinkProto::Quic,
        };
        if l.key.is_some() {
            return Err(unsupported("per-link keys"));
        }
        if l.reserve.is_some() {
            return Err(unsupported("bandwidth reservations"));
        }
        let peer_host = o.hosts.get(&l.peer);
        let ip = peer_host
            .and_then(Host::listen_ip)
            .ok_or_else(|| CompileError::NoAddress {
                link: name.to_string(),
                peer: l.peer.clone(),
            })?;
        // QUIC listens on its own UDP port: by convention the link port + 1 (as in the
        // lab), unless the link names one.
        let quic_offset = u16::from(proto == VLinkProto::Quic);
        let port = l
            .port
            .unwrap_or(peer_host.map_or(vnet_core::config::DEFAULT_LINK_PORT, |h| h.port) + quic_offset);
        for (machine, peer) in [(&l.owner, Some(SocketAddr::new(ip, port))), (&l.peer, None)] {
            if let Some(t) = out.get_mut(machine) {
                t.links.push(LinkSpec {
                    name: name.clone(),
                    proto,
                    peer,
                    encrypt: l.encrypt,
                });
            }
        }
    }
    for r in &o.rules {
        let Some(t) = out.get_mut(&r.machine) else {
            continue;
        };
        let output = match &r.out {
            Target::Edge(peer) => Output::Link(spec_link_name(&r.machine, peer)?),
            Target::Iface(name) => Output::Iface(name.clone()),
        };
        match t.rules.iter_mut().find(|e| e.src == r.src && e.dst == r.dst) {
            Some(e) => e.out.push(output),
            None => t.rules.push(RuleEntry {
                id: None,
                src: r.src,
                dst: r.dst,
                out: vec![output],
            }),
        }
    }
    Ok(out)
}

/// [`link_name`] of two machines, as the daemons' configurations name the link.
fn spec_link_name(a: &str, b: &str) -> Result<Name, CompileError> {
    Name::try_from(link_name(a, b)).map_err(|error| CompileError::LinkName {
        a: a.to_string(),
        b: b.to_string(),
        error,
    })
}

fn iface_spec(i: &Iface) -> IfaceSpec {
    IfaceSpec {
        name: i.name.clone(),
        kind: match i.kind {
            IfaceKind::Tap => VIfaceKind::Tap,
            IfaceKind::Attach => VIfaceKind::Attach,
        },
        device: i.device.clone(),
        netns: i.netns.clone(),
        mac: i.mac,
        mtu: i.mtu,
        // The language has no offload option yet: TAPs take the daemon's default.
        offload: true,
    }
}

/// The overlay that these hosts' daemons run, from their topologies (by machine name).
pub fn decompile(hosts: &[Host], topologies: &BTreeMap<String, Topology>) -> Result<Overlay, CompileError> {
    let mut o = Overlay::default();
    for h in hosts {
        o.hosts.insert(h.machine.clone(), h.clone());
    }
    let mut ends: BTreeMap<String, LinkEnds> = BTreeMap::new();
    for (machine, t) in topologies {
        for i in &t.ifaces {
            o.ifaces.insert(
                (machine.clone(), i.name.clone()),
                Iface {
                    machine: machine.clone(),
                    name: i.name.clone(),
                    kind: match i.kind {
                        VIfaceKind::Tap => IfaceKind::Tap,
                        VIfaceKind::Attach => IfaceKind::Attach,
                    },
                    mac: i.mac,
                    device: i.device.clone(),
                    netns: i.netns.clone(),
                    mtu: i.mtu,
                },
            );
        }
        for l in &t.links {
            let entry = ends.entry(l.name.to_string()).or_default();
            match l.peer {
                Some(addr) => entry.0.push((machine.clone(), addr, l.proto, l.encrypt)),
                None => entry.1.push(machine.clone()),
            }
        }
        for r in &t.rules {
            for output in &r.out {
                let out = match output {
                    Output::Iface(name) => Target::Iface(name.clone()),
                    Output::Link(name) => Target::Edge(peer_of(&o, machine, name)?),
                };
                o.rules.insert(Rule {
                    machine: machine.clone(),
                    src: r.src,
                    dst: r.dst,
                    out,
                });
            }
        }
    }
    for (name, (dialers, waiters)) in ends {
        let ([(owner, addr, proto, encrypt)], [waiter]) = (dialers.as_slice(), waiters.as_slice()) else {
            return Err(CompileError::InconsistentLink(name));
        };
        let peer = peer_of(&o, owner, &name)?;
        if &peer != waiter {
            return Err(CompileError::InconsistentLink(name));
        }
        let peer_host = &o.hosts[&peer];
        if peer_host.listen_ip() != Some(addr.ip()) {
            return Err(CompileError::Unrepresentable {
                machine: owner.clone(),
                what: format!("link `{name}` dials {addr}, which is not the address of `{peer}`"),
            });
        }
        let (proto, default_port) = match proto {
            VLinkProto::Tcp => (LinkProto::Tcp, peer_host.port),
            VLinkProto::Udp => (LinkProto::Udp, peer_host.port),
            VLinkProto::Quic => (LinkProto::Quic, peer_host.port + 1),
        };
        let link = Link {
            owner: owner.clone(),
            peer,
            proto,
            port: (addr.port() != default_port).then_some(addr.port()),
            key: None,
            reserve: None,
            encrypt: *encrypt,
        };
        o.links.insert(name, link);
    }
    Ok(o)
}

/// The daemons that declare one link: those that dial (with the address, transport and
/// encryption),
/// and those that wait.
type LinkEnds = (Vec<(String, SocketAddr, VLinkProto, bool)>, Vec<String>);

/// The machine at the other end of link `name` from `machine`.
fn peer_of(o: &Overlay, machine: &str, name: &str) -> Result<String, CompileError> {
    o.hosts
        .keys()
        .find(|p| p.as_str() != machine && link_name(machine, p) == name)
        .cloned()
        .ok_or_else(|| CompileError::StrangeLink {
            machine: machine.to_string(),
            link: name.to_string(),
        })
}
