//! Random overlays as users build them: hosts `h0..` with the proxy `h0`, 1–4 VMs each,
//! the star around the proxy and fast paths exactly as `vnet generate` makes them
//! ([`lang::generate::generate`] with [`Shape::Star`], then
//! [`lang::generate::fast_paths`]), plus routes as the adaptor adds them (exact
//! source/destination rules along a path of hosts, relays included); targets for
//! `vnet apply` that change those; and bad overlays whose rules form a cycle.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use lang::ast::{Host, Iface, IfaceKind};
use lang::generate::{dialing_link, fast_paths, generate, GenerateError, Layout, Shape};
use lang::{Item, LinkProto, ModelError, Overlay, Rule, Target};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use vnet_core::mac::MacAddr;
use vnet_core::name::Name;
use vnet_core::rule::{DstMatch, MacMatch};

/// The machine every default route leads to.
pub const PROXY: &str = "h0";

/// A MAC no VM has, for frames that only a bad rule carries.
pub const GHOST: MacAddr = MacAddr([0x02, 0xff, 0, 0, 0, 1]);

/// Why an overlay could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// `lang::generate` refused the layout.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The overlay refused a statement.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A cycle needs three hosts.
    #[error("a cycle needs at least 3 hosts, the overlay has {0}")]
    TooFewHosts(usize),
}

/// Host `h{i}`, its address `198.18.x.y` (the lab's range) and port 7400.
pub fn host(i: usize) -> Host {
    let n = i + 1;
    Host {
        user: "root".into(),
        machine: format!("h{i}"),
        port: vnet_core::config::DEFAULT_LINK_PORT,
        interface: "ul0".into(),
        address: Some([198, 18, (n >> 8) as u8, n as u8].into()),
        control: None,
        key_file: None,
    }
}

/// The MAC of VM `j`: `02:00:00:00:` and `j + 1` in two bytes.
pub fn vm_mac(j: usize) -> MacAddr {
    let [hi, lo] = ((j + 1) as u16).to_be_bytes();
    MacAddr([2, 0, 0, 0, hi, lo])
}

/// VM `j`'s NIC, `vm{j}` on `machine`.
pub fn vm_iface(j: usize, machine: &str) -> Iface {
    Iface {
        machine: machine.to_string(),
        // `vm` and a number: always a name.
        name: Name::try_from(format!("vm{j}")).unwrap_or_else(|e| unreachable!("{e}")),
        kind: IfaceKind::Tap,
        mac: Some(vm_mac(j)),
        device: None,
        netns: None,
        mtu: None,
    }
}

/// `hosts` hosts, each with a number of VMs drawn from `vms_per_host`, linked by `proto`.
pub fn layout(
    rng: &mut ChaCha8Rng,
    hosts: usize,
    vms_per_host: RangeInclusive<usize>,
    proto: LinkProto,
) -> Layout {
    let mut vms = Vec::new();
    for h in 0..hosts {
        for _ in 0..rng.gen_range(vms_per_host.clone()) {
            vms.push(vm_iface(vms.len(), &format!("h{h}")));
        }
    }
    Layout {
        hosts: (0..hosts).map(host).collect(),
        vms,
        proxy: PROXY.into(),
        proto,
    }
}

/// The star around the proxy, as `vnet generate --shape star` makes it.
pub fn star(layout: &Layout) -> Result<Overlay, TopologyError> {
    Ok(generate(layout, Shape::Star)?)
}

/// The unicast routes an overlay adds on top of its star: fast paths (a direct link and a
/// rule each way) and relayed routes (one direction, through other hosts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// VM pairs with a fast path, as `vnet generate --fast-paths` takes them.
    pub fast: Vec<(MacAddr, MacAddr)>,
    /// Relayed routes: (source, destination) → the hosts from the source's to the
    /// destination's.
    pub relayed: BTreeMap<(MacAddr, MacAddr), Vec<String>>,
    /// Transport of the links fast paths and routes add.
    pub proto: LinkProto,
}

/// Where each VM is, by MAC.
fn placement(o: &Overlay) -> BTreeMap<MacAddr, (String, Name)> {
    o.ifaces
        .values()
        .filter_map(|i| Some((i.mac?, (i.machine.clone(), i.name.clone()))))
        .collect()
}

/// Pairs of VMs on different hosts, in a fixed order.
fn remote_pairs(o: &Overlay) -> Vec<(MacAddr, MacAddr)> {
    let at = placement(o);
    let macs: Vec<MacAddr> = at.keys().copied().collect();
    let mut pairs = Vec::new();
    for &a in &macs {
        for &b in &macs {
            if a != b && at[&a].0 != at[&b].0 {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

/// A random path of distinct hosts from `from` to `to` through one or two relays.
fn relay_path(rng: &mut ChaCha8Rng, o: &Overlay, from: &str, to: &str) -> Vec<String> {
    let others: Vec<&String> = o.hosts.keys().filter(|m| *m != from && *m != to).collect();
    let relays = rng.gen_range(1..=2.min(others.len()));
    let mut path = vec![from.to_string()];
    path.extend(others.choose_multiple(rng, relays).map(|m| m.to_string()));
    path.push(to.to_string());
    path
}

/// Random routing over `o`'s VMs: each remote pair (unordered) gets a fast path with
/// probability `fast`; up to `relayed` ordered pairs without one get a relayed route.
pub fn random_routing(rng: &mut ChaCha8Rng, o: &Overlay, fast: f64, relayed: usize) -> Routing {
    let at = placement(o);
    let pairs = remote_pairs(o);
    let fast: Vec<(MacAddr, MacAddr)> = pairs
        .iter()
        .filter(|(a, b)| a < b)
        .filter(|_| rng.gen_bool(fast))
        .copied()
        .collect();
    let mut routing = Routing {
        fast,
        relayed: BTreeMap::new(),
        proto: if rng.gen_bool(0.5) {
            LinkProto::Udp
        } else {
            LinkProto::Tcp
        },
    };
    if o.hosts.len() >= 3 {
        let open: Vec<&(MacAddr, MacAddr)> = pairs.iter().filter(|p| !routing.has_fast(p)).collect();
        for &&(a, b) in open.choose_multiple(rng, relayed) {
            let path = relay_path(rng, o, &at[&a].0, &at[&b].0);
            routing.relayed.insert((a, b), path);
        }
    }
    routing
}

impl Routing {
    fn has_fast(&self, &(a, b): &(MacAddr, MacAddr)) -> bool {
        self.fast.contains(&(a, b)) || self.fast.contains(&(b, a))
    }

    /// A target for `vnet apply` as the adaptor would make one: each fast path kept with
    /// probability ½ and some new ones; each relayed route kept, moved to another path
    /// (the rule for the pair is replaced) or dropped, a third each, and some new ones;
    /// and, one time in four, links of the other transport (so existing fast links are
    /// replaced).
    pub fn retarget(&self, rng: &mut ChaCha8Rng, o: &Overlay) -> Routing {
        let at = placement(o);
        let pairs = remote_pairs(o);
        let mut fast: Vec<(MacAddr, MacAddr)> =
            self.fast.iter().filter(|_| rng.gen_bool(0.5)).copied().collect();
        for &(a, b) in pairs.iter().filter(|(a, b)| a < b) {
            if !fast.contains(&(a, b)) && !self.has_fast(&(a, b)) && rng.gen_bool(0.1) {
                fast.push((a, b));
            }
        }
        let proto = match (self.proto, rng.gen_bool(0.25)) {
            (p, false) => p,
            (LinkProto::Udp, true) => LinkProto::Tcp,
            (_, true) => LinkProto::Udp,
        };
        let mut next = Routing {
            fast,
            relayed: BTreeMap::new(),
            proto,
        };
        for (&(a, b), path) in &self.relayed {
            if next.has_fast(&(a, b)) {
                continue;
            }
            match rng.gen_range(0..3) {
                0 => {
                    next.relayed.insert((a, b), path.clone());
                }
                1 if o.hosts.len() >= 4 => {
                    let moved =
                        std::iter::repeat_with(|| relay_path(rng, o, &path[0], &path[path.len() - 1]))
                            .take(8)
                            .find(|p| p != path);
                    if let Some(p) = moved {
                        next.relayed.insert((a, b), p);
                    }
                }
                _ => {}
            }
        }
        if o.hosts.len() >= 3 {
            let open: Vec<&(MacAddr, MacAddr)> = pairs
                .iter()
                .filter(|p| {
                    !next.has_fast(p) && !next.relayed.contains_key(p) && !self.relayed.contains_key(p)
                })
                .collect();
            for &&(a, b) in open.choose_multiple(rng, 2) {
                let path = relay_path(rng, o, &at[&a].0, &at[&b].0);
                next.relayed.insert((a, b), path);
            }
        }
        next
    }

    /// `star` with these routes: fast paths through `lang::generate::fast_paths`, relayed
    /// routes as exact source/destination rules on every host of the path (over a link
    /// to the next host, added if there is none; the last host delivers).
    pub fn apply_to(&self, star: &Overlay) -> Result<Overlay, TopologyError> {
        let mut o = fast_paths(star, &self.fast, self.proto)?;
        let at = placement(&o);
        for (&(a, b), path) in &self.relayed {
            let rule = |machine: &str, out: Target| Rule {
                machine: machine.to_string(),
                src: MacMatch::Exact(a),
                dst: DstMatch::Mac(MacMatch::Exact(b)),
                out,
            };
            for hop in path.windows(2) {
                let (x, y) = (&hop[0], &hop[1]);
                if !o.links.values().any(|l| l.other_end(x) == Some(y)) {
                    o.add(&Item::Link(dialing_link(x, y, self.proto)))?;
                }
                o.add(&Item::Rule(rule(x, Target::Edge(y.clone()))))?;
            }
            if let (Some(last), Some((_, iface))) = (path.last(), at.get(&b)) {
                o.add(&Item::Rule(rule(last, Target::Iface(iface.clone()))))?;
            }
        }
        Ok(o)
    }
}

/// `o` with a bad cycle: the proxy and two to four other hosts each send frames for
/// [`GHOST`] to the next (links added where missing), so such a frame from any VM
/// circulates until the hop limit stops it. Returns the overlay and the cycle.
pub fn with_cycle(rng: &mut ChaCha8Rng, o: &Overlay) -> Result<(Overlay, Vec<String>), TopologyError> {
    let others: Vec<&String> = o.hosts.keys().filter(|m| *m != PROXY).collect();
    if others.len() < 2 {
        return Err(TopologyError::TooFewHosts(others.len() + 1));
    }
    let k = rng.gen_range(2..=others.len().min(4));
    let mut cycle = vec![PROXY.to_string()];
    cycle.extend(others.choose_multiple(rng, k).map(|m| m.to_string()));
    let mut out = o.clone();
    for (i, x) in cycle.iter().enumerate() {
        let y = &cycle[(i + 1) % cycle.len()];
        let link = dialing_link(x, y, LinkProto::Udp);
        if !out.links.contains_key(&link.name()) {
            out.add(&Item::Link(link))?;
        }
        out.add(&Item::Rule(Rule {
            machine: x.clone(),
            src: MacMatch::Any,
            dst: DstMatch::Mac(MacMatch::Exact(GHOST)),
            out: Target::Edge(y.clone()),
        }))?;
    }
    Ok((out, cycle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{rng, Stream};

    fn base(seed: u64, hosts: usize) -> Overlay {
        let mut r = rng(seed, Stream::Topology);
        star(&layout(&mut r, hosts, 1..=4, LinkProto::Tcp)).unwrap()
    }

    #[test]
    fn routed_overlays_and_their_targets_compile_and_connect() {
        for seed in 0..20 {
            let o = base(seed, 6);
            let mut r = rng(seed, Stream::Apply);
            let routing = random_routing(&mut r, &o, 0.2, 3);
            let current = routing.apply_to(&o).unwrap();
            let target = routing.retarget(&mut r, &o).apply_to(&o).unwrap();
            for ov in [&current, &target] {
                lang::compile(ov).unwrap();
                let macs: Vec<MacAddr> = placement(ov).keys().copied().collect();
                for &a in &macs {
                    for &b in macs.iter().filter(|b| **b != a) {
                        let route = lang::route::trace(ov, a, b, None).unwrap();
                        assert!(
                            !route.has_problems() && route.deliveries() == 1,
                            "{}",
                            lang::route::render(&route)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_cycle_loops_frames_for_the_ghost() {
        let o = base(1, 5);
        let (bad, cycle) = with_cycle(&mut rng(1, Stream::Topology), &o).unwrap();
        assert!(cycle.len() >= 3 && cycle[0] == PROXY);
        let vm = o.ifaces.values().next().and_then(|i| i.mac).unwrap();
        let route = lang::route::trace(&bad, vm, GHOST, None).unwrap();
        assert!(route
            .outcomes
            .iter()
            .any(|o| matches!(o, lang::route::Outcome::Loop { .. })));
        assert!(with_cycle(&mut rng(1, Stream::Topology), &base(1, 2)).is_err());
    }
}
