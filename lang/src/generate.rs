//! Descriptions from high-level requirements (the thesis's second parser variant): a host
//! graph of a given shape, with rules that route every VM's unicast over shortest paths,
//! broadcast over a spanning tree rooted at the proxy, and everything else toward the
//! proxy; and fast paths for chosen VM pairs over an existing overlay.

use std::collections::{BTreeMap, VecDeque};

use vnet_core::mac::MacAddr;
use vnet_core::rule::{DstMatch, MacMatch};

use crate::ast::{natural_cmp, Host, Iface, Item, Link, LinkProto, Rule, Target};
use crate::model::{ModelError, Overlay};

/// Shape of the host graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Every host links to the proxy.
    Star,
    /// Every pair of hosts is linked (all-to-all).
    Full,
    /// Hosts in a cycle, proxy first.
    Ring,
    /// A binary tree rooted at the proxy.
    Tree,
    /// A grid of ⌈√n⌉ columns, proxy in the corner.
    Mesh,
}

/// What the generators start from.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The hosts.
    pub hosts: Vec<Host>,
    /// The VMs' interfaces (each with a MAC), on their hosts.
    pub vms: Vec<Iface>,
    /// The machine every default route leads to.
    pub proxy: String,
    /// Transport of the generated links.
    pub proto: LinkProto,
}

/// Why a layout cannot be generated from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The proxy is not a host.
    #[error("the proxy `{0}` is not a host")]
    UnknownProxy(String),
    /// A VM interface has no MAC, so no rule can name it.
    #[error("VM interface `{0}` has no MAC")]
    VmWithoutMac(String),
    /// A fast-path pair names a MAC that no VM has.
    #[error("no VM has MAC {0}")]
    UnknownVm(MacAddr),
    /// The generated overlay does not check (a VM on an unknown host, a duplicate...).
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The overlay of `layout` in `shape`.
pub fn generate(layout: &Layout, shape: Shape) -> Result<Overlay, GenerateError> {
    let mut machines: Vec<&str> = layout.hosts.iter().map(|h| h.machine.as_str()).collect();
    machines.sort_by(|a, b| natural_cmp(a, b));
    let Some(p) = machines.iter().position(|m| *m == layout.proxy) else {
        return Err(GenerateError::UnknownProxy(layout.proxy.clone()));
    };
    let proxy = machines.remove(p);
    machines.insert(0, proxy);
    let n = machines.len();
    let edges: Vec<(usize, usize)> = match shape {
        Shape::Star => (1..n).map(|i| (0, i)).collect(),
        Shape::Full => (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).collect(),
        Shape::Ring if n <= 2 => (1..n).map(|i| (i - 1, i)).collect(),
        Shape::Ring => (0..n).map(|i| (i, (i + 1) % n)).collect(),
        Shape::Tree => (1..n).map(|i| ((i - 1) / 2, i)).collect(),
        Shape::Mesh => {
            let w = (1..=n).find(|w| w * w >= n).unwrap_or(1);
            (0..n)
                .flat_map(|i| {
                    let right = (i % w + 1 < w && i + 1 < n).then_some((i, i + 1));
                    let down = (i + w < n).then_some((i, i + w));
                    right.into_iter().chain(down)
                })
                .collect()
        }
    };

    let mut o = Overlay::default();
    for h in &layout.hosts {
        o.add_host(h.clone())?;
    }
    let mut vms: Vec<(&Iface, MacAddr)> = Vec::with_capacity(layout.vms.len());
    for v in &layout.vms {
        let Some(mac) = v.mac else {
            return Err(GenerateError::VmWithoutMac(v.name.to_string()));
        };
        o.add(&Item::Iface(v.clone()))?;
        vms.push((v, mac));
    }
    let mut adjacent: BTreeMap<&str, Vec<&str>> = machines.iter().map(|m| (*m, Vec::new())).collect();
    for &(a, b) in &edges {
        let (a, b) = (machines[a], machines[b]);
        o.add(&Item::Link(dialing_link(a, b, layout.proto)))?;
        adjacent.entry(a).or_default().push(b);
        adjacent.entry(b).or_default().push(a);
    }
    for list in adjacent.values_mut() {
        list.sort_by(|a, b| natural_cmp(a, b));
    }
    // next_hop[t][m]: the neighbour of m on a shortest path from m to t.
    let next_hop: BTreeMap<&str, BTreeMap<&str, &str>> =
        machines.iter().map(|t| (*t, bfs_parents(&adjacent, t))).collect();
    let bcast_tree = &next_hop[proxy];

    let broadcast = DstMatch::Mac(MacMatch::Exact(MacAddr::BROADCAST));
    let mut add_rule = |machine: &str, dst: DstMatch, out: Target| {
        o.add(&Item::Rule(Rule {
            machine: machine.to_string(),
            src: MacMatch::Any,
            dst,
            out,
        }))
    };
    for &m in &machines {
        let to_proxy = next_hop[proxy].get(m).copied();
        for &(v, mac) in &vms {
            let mac = DstMatch::Mac(MacMatch::Exact(mac));
            if v.machine == m {
                add_rule(m, mac, Target::Iface(v.name.clone()))?;
                add_rule(m, broadcast, Target::Iface(v.name.clone()))?;
            } else if let Some(&hop) = next_hop[v.machine.as_str()].get(m) {
                if m == proxy || Some(hop) != to_proxy {
                    add_rule(m, mac, Target::Edge(hop.to_string()))?;
                }
            }
        }
        let tree_neighbours = adjacent[m]
            .iter()
            .filter(|&&x| bcast_tree.get(m) == Some(&x) || bcast_tree.get(x) == Some(&m));
        for t in tree_neighbours {
            add_rule(m, broadcast, Target::Edge(t.to_string()))?;
        }
        if let Some(hop) = to_proxy {
            add_rule(m, DstMatch::None, Target::Edge(hop.to_string()))?;
        }
    }
    Ok(o)
}

/// A link between `a` and `b` dialed by the later one in natural order, as in the lab.
pub fn dialing_link(a: &str, b: &str, proto: LinkProto) -> Link {
    let (peer, owner) = if natural_cmp(a, b).is_lt() { (a, b) } else { (b, a) };
    Link {
        owner: owner.to_string(),
        peer: peer.to_string(),
        proto,
        port: None,
        key: None,
        reserve: None,
        encrypt: false,
    }
}

/// Breadth-first from `root`: for every other reachable machine, its neighbour toward `root`.
fn bfs_parents<'a>(adjacent: &BTreeMap<&'a str, Vec<&'a str>>, root: &'a str) -> BTreeMap<&'a str, &'a str> {
    let mut parent = BTreeMap::new();
    let mut queue = VecDeque::from([root]);
    while let Some(m) = queue.pop_front() {
        for &x in &adjacent[m] {
            if x != root && !parent.contains_key(x) {
                parent.insert(x, m);
                queue.push_back(x);
            }
        }
    }
    parent
}

/// `o` plus, for each pair of VMs (by MAC) on different hosts, a direct link between their
/// hosts (if there is none) and a rule on each side sending that pair's frames over it.
pub fn fast_paths(
    o: &Overlay,
    pairs: &[(MacAddr, MacAddr)],
    proto: LinkProto,
) -> Result<Overlay, GenerateError> {
    let host_of = |mac: MacAddr| {
        o.ifaces
            .values()
            .find(|i| i.mac == Some(mac))
            .map(|i| i.machine.clone())
            .ok_or(GenerateError::UnknownVm(mac))
    };
    let mut out = o.clone();
    for &(a, b) in pairs {
        let (ha, hb) = (host_of(a)?, host_of(b)?);
        if ha == hb {
            continue;
        }
        let link = dialing_link(&ha, &hb, proto);
        if !out.links.contains_key(&link.name()) {
            out.add(&Item::Link(link))?;
        }
        for (machine, src, dst, peer) in [(&ha, a, b, &hb), (&hb, b, a, &ha)] {
            let rule = Rule {
                machine: machine.clone(),
                src: MacMatch::Exact(src),
                dst: DstMatch::Mac(MacMatch::Exact(dst)),
                out: Target::Edge(peer.clone()),
            };
            if !out.rules.contains(&rule) {
                out.add(&Item::Rule(rule))?;
            }
        }
    }
    Ok(out)
}

/// Every unordered pair of distinct VM MACs.
pub fn all_pairs(vms: &[MacAddr]) -> Vec<(MacAddr, MacAddr)> {
    vms.iter()
        .enumerate()
        .flat_map(|(i, a)| vms[i + 1..].iter().map(move |b| (*a, *b)))
        .collect()
}
