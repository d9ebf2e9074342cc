//! Live migration on the overlay: [`move_vm`] takes an overlay in which a VM's NIC (the
//! interface with its MAC) is on one machine and returns the overlay in which it is on
//! another, with every rule that concerned the VM retargeted. Pure, so the lab's
//! `vnet lab migrate` and the adaptor retarget alike and tests check the result without
//! daemons.
//!
//! What changes, and nothing else (M is the VM's MAC, F the old machine, T the new one,
//! P the proxy):
//!
//! - **Delivery.** F's rules that write frames for M to the old interface move to T and
//!   write to the new one; F instead forwards M's frames toward T (unless its default
//!   rule already does).
//! - **Routes toward M.** Every rule on any machine that sends frames for M over a link
//!   now sends them toward T: over the direct link to T if the machine has one, else to
//!   the proxy (the proxy itself over its link to T); on T they are delivered.
//! - **The VM's own rules** (source M) at F move to T: their links are taken from T (the
//!   same peer if T links to it, else the proxy), F's local interfaces become "toward F",
//!   and what F sent to T, T now does itself: whatever its `src any` rules for that
//!   destination do (deliver to its VMs; flood, on a relay such as the proxy).
//! - **Broadcast at T.** Wherever T delivers broadcast or multicast frames to a local
//!   interface, it now delivers them to the new interface too (the VM joins T's VMs);
//!   F's deliveries of other sources' frames to the old interface go.
//! - **Defaults.** Forwarding F gave every source (`src any` over a link) that T has no
//!   rule of the same sides for is given to T too, pointed over T's own links, so a VM
//!   moving to a host without VMs (hence without rules) still reaches everyone. An F left
//!   with no interface to deliver broadcasts to keeps no default (it would send them back
//!   into the overlay) and no route for M: it is then like a host that never had VMs.
//!
//! So a VM that moves and comes back leaves the overlay as it was.

use std::collections::{BTreeSet, HashSet};

use vnet_core::mac::MacAddr;
use vnet_core::rule::{DstMatch, MacMatch};

use crate::ast::{link_name, Iface, Item, Rule, Target};
use crate::model::{ModelError, Overlay};

/// A VM's move: its MAC, where its NIC is now, and the NIC it gets.
#[derive(Clone, Copy, Debug)]
pub struct Move<'a> {
    /// The VM's MAC (the MAC of its interface on `from`).
    pub mac: MacAddr,
    /// The machine the VM leaves.
    pub from: &'a str,
    /// The VM's new interface; its machine is where the VM goes.
    pub iface: &'a Iface,
    /// The machine frames go to when a machine has no direct link to their destination.
    pub proxy: &'a str,
}

/// Why a VM cannot be moved as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    /// The VM would move to the machine it is on.
    #[error("the VM is already on `{0}`")]
    SameMachine(String),
    /// A machine of the move is not a host of the overlay.
    #[error("unknown machine `{0}`")]
    UnknownMachine(String),
    /// No interface of the old machine has the VM's MAC.
    #[error("`{machine}` has no interface with MAC {mac}")]
    NoVm {
        /// The MAC.
        mac: MacAddr,
        /// The machine.
        machine: String,
    },
    /// Several interfaces of the old machine have the VM's MAC, so which one is its NIC
    /// is unclear.
    #[error("`{machine}` has several interfaces with MAC {mac}")]
    SeveralVms {
        /// The MAC.
        mac: MacAddr,
        /// The machine.
        machine: String,
    },
    /// The new interface does not carry the VM's MAC.
    #[error("the new interface `{iface}` must have the VM's MAC {mac}")]
    MacMismatch {
        /// The new interface.
        iface: String,
        /// The VM's MAC.
        mac: MacAddr,
    },
    /// The new machine already has an interface of the new interface's name.
    #[error("`{machine}` already has an interface named `{name}`")]
    IfaceExists {
        /// The new machine.
        machine: String,
        /// The name.
        name: String,
    },
    /// The new machine already has an interface with the VM's MAC.
    #[error("`{machine}` already has an interface with MAC {mac} (`{iface}`)")]
    MacTaken {
        /// The new machine.
        machine: String,
        /// That interface.
        iface: String,
        /// The MAC.
        mac: MacAddr,
    },
    /// A machine must forward toward another but links to neither it nor the proxy.
    #[error(
        "`{machine}` has no link to `{toward}` nor to the proxy, so it cannot forward toward `{toward}`"
    )]
    NoRoute {
        /// The machine.
        machine: String,
        /// Where it must forward to.
        toward: String,
    },
    /// The moved overlay does not check (a bug in the move, or an inconsistent input).
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The overlay after the VM with `m.mac` moved from `m.from` to `m.iface.machine` (see
/// the module documentation for what changes).
pub fn move_vm(o: &Overlay, m: &Move) -> Result<Overlay, MoveError> {
    let (from, to, mac) = (m.from, m.iface.machine.as_str(), m.mac);
    for machine in [from, to, m.proxy] {
        if !o.hosts.contains_key(machine) {
            return Err(MoveError::UnknownMachine(machine.to_string()));
        }
    }
    if from == to {
        return Err(MoveError::SameMachine(to.to_string()));
    }
    let mut olds = o
        .ifaces
        .values()
        .filter(|i| i.machine == from && i.mac == Some(mac));
    let old = olds.next().ok_or_else(|| MoveError::NoVm {
        mac,
        machine: from.to_string(),
    })?;
    if olds.next().is_some() {
        return Err(MoveError::SeveralVms {
            mac,
            machine: from.to_string(),
        });
    }
    if m.iface.mac != Some(mac) {
        return Err(MoveError::MacMismatch {
            iface: m.iface.name.to_string(),
            mac,
        });
    }
    if o.ifaces.contains_key(&(to.to_string(), m.iface.name.clone())) {
        return Err(MoveError::IfaceExists {
            machine: to.to_string(),
            name: m.iface.name.to_string(),
        });
    }
    if let Some(taken) = o.ifaces.values().find(|i| i.machine == to && i.mac == Some(mac)) {
        return Err(MoveError::MacTaken {
            machine: to.to_string(),
            iface: taken.name.to_string(),
            mac,
        });
    }

    let old_out = Target::Iface(old.name.clone());
    let new_out = Target::Iface(m.iface.name.clone());
    let linked = |a: &str, b: &str| o.links.contains_key(&link_name(a, b));
    // The next hop from `at` toward machine `target`.
    let hop = |at: &str, target: &str| -> Result<Target, MoveError> {
        if linked(at, target) {
            Ok(Target::Edge(target.to_string()))
        } else if at != m.proxy && linked(at, m.proxy) {
            Ok(Target::Edge(m.proxy.to_string()))
        } else {
            Err(MoveError::NoRoute {
                machine: at.to_string(),
                toward: target.to_string(),
            })
        }
    };
    let to_vm = DstMatch::Mac(MacMatch::Exact(mac));
    let from_vm = MacMatch::Exact(mac);
    let group = |d: &DstMatch| matches!(d, DstMatch::Mac(MacMatch::Exact(x)) if x.is_multicast());
    let rule = |machine: &str, r: &Rule, out: Target| Rule {
        machine: machine.to_string(),
        src: r.src,
        dst: r.dst,
        out,
    };
    // A host without a default rule is one that never had VMs: it adopts F's forwarding.
    let to_has_default = o
        .rules
        .iter()
        .any(|r| r.machine == to && r.src == MacMatch::Any && r.dst == DstMatch::None);
    let sides_at_to: HashSet<(MacMatch, DstMatch)> = o
        .rules
        .iter()
        .filter(|r| r.machine == to)
        .map(|r| (r.src, r.dst))
        .collect();

    let mut rules = BTreeSet::new();
    // How F forwards frames for the VM once it no longer delivers them (decided below).
    let mut from_routes = Vec::new();
    // F's forwarding that a T without a default adopts (filtered below).
    let mut adopted = Vec::new();
    // Sides of the VM's own rules for which F sent the frames to T.
    let mut sent_to_t = HashSet::new();
    for r in &o.rules {
        let at_from = r.machine == from;
        if at_from && r.out == old_out {
            if r.dst == to_vm {
                rules.insert(rule(to, r, new_out.clone()));
                from_routes.push(rule(from, r, hop(from, to)?));
            } else if matches!(r.src, MacMatch::Exact(s) if s != mac) {
                // Another source's frames handed to the VM at F: at T they arrive over
                // the overlay and T's own (broadcast) deliveries take them.
            } else {
                rules.insert(rule(to, r, new_out.clone()));
            }
        } else if r.dst == to_vm && matches!(r.out, Target::Edge(_)) {
            let out = if r.machine == to {
                new_out.clone()
            } else {
                hop(&r.machine, to)?
            };
            rules.insert(rule(&r.machine, r, out));
        } else if at_from && r.src == from_vm {
            match &r.out {
                Target::Edge(p) if p == to => {
                    // What F sent to T, T now does itself (below); a broadcast F sent to
                    // T, T sends to F.
                    sent_to_t.insert((r.src, r.dst));
                    if group(&r.dst) {
                        rules.insert(rule(to, r, hop(to, from)?));
                    }
                }
                Target::Edge(p) => {
                    rules.insert(rule(to, r, hop(to, p)?));
                }
                // F's other VMs now lie across the overlay.
                Target::Iface(_) => {
                    rules.insert(rule(to, r, hop(to, from)?));
                }
            }
        } else {
            rules.insert(r.clone());
            if r.machine == to && group(&r.dst) && r.src != from_vm && matches!(r.out, Target::Iface(_)) {
                rules.insert(rule(to, r, new_out.clone()));
            }
            if at_from && !to_has_default && r.src == MacMatch::Any && !sides_at_to.contains(&(r.src, r.dst))
            {
                match &r.out {
                    Target::Edge(p) if p != to => adopted.push(rule(to, r, hop(to, p)?)),
                    // F's routes to its other VMs: from T they lie across the overlay.
                    Target::Iface(_) if !group(&r.dst) && r.dst != DstMatch::None => {
                        adopted.push(rule(to, r, hop(to, from)?))
                    }
                    _ => {}
                }
            }
        }
    }
    // What T adopts, but not routes its default (adopted too) already takes.
    adopted.sort_by_key(|r| r.dst != DstMatch::None);
    for r in adopted {
        let default = Rule {
            src: MacMatch::Any,
            dst: DstMatch::None,
            ..r.clone()
        };
        if r.dst == DstMatch::None || !rules.contains(&default) {
            rules.insert(r);
        }
    }
    // The VM's own rules at T outrank T's `src any` ones for its frames: for broadcasts,
    // and for what F sent to T, they must do what those do (deliver to T's VMs; a relay
    // such as the proxy also floods).
    let absorbed: HashSet<DstMatch> = rules
        .iter()
        .filter(|r| r.machine == to && r.src == from_vm)
        .filter(|r| group(&r.dst) || sent_to_t.contains(&(r.src, r.dst)))
        .map(|r| r.dst)
        .chain(sent_to_t.iter().map(|s| s.1))
        .collect();
    for r in &o.rules {
        if r.machine == to && r.src == MacMatch::Any && absorbed.contains(&r.dst) {
            rules.insert(Rule {
                src: from_vm,
                ..r.clone()
            });
        }
    }

    // F delivered some broadcast sides only to the VM: with those rules gone, its default
    // would catch such frames and send them back into the overlay (where a full mesh
    // floods them again). A host left with no VM to deliver broadcasts to keeps none of
    // the forwarding it did for its VMs (its default, its routes to other VMs), like a
    // host that never had VMs; nothing routes the VM to it any more either.
    let group_sides_at_from = |set: &BTreeSet<Rule>| -> HashSet<(MacMatch, DstMatch)> {
        set.iter()
            .filter(|r| r.machine == from && group(&r.dst))
            .map(|r| (r.src, r.dst))
            .collect()
    };
    let remaining = group_sides_at_from(&rules);
    if group_sides_at_from(&o.rules)
        .iter()
        .any(|s| s.0 != from_vm && !remaining.contains(s))
    {
        rules.retain(|r| {
            !(r.machine == from
                && r.src == MacMatch::Any
                && !group(&r.dst)
                && matches!(r.out, Target::Edge(_)))
        });
    } else {
        // F routes the VM's frames toward T, unless its default already does.
        for r in from_routes {
            let default = Rule {
                src: MacMatch::Any,
                dst: DstMatch::None,
                ..r.clone()
            };
            if !rules.contains(&default) {
                rules.insert(r);
            }
        }
    }

    let mut moved = Overlay {
        hosts: o.hosts.clone(),
        ifaces: o.ifaces.clone(),
        links: o.links.clone(),
        rules: BTreeSet::new(),
    };
    moved.ifaces.remove(&(from.to_string(), old.name.clone()));
    moved.add(&Item::Iface(m.iface.clone()))?;
    for r in rules {
        moved.add(&Item::Rule(r))?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{trace, Outcome};
    use vnet_core::name::Name;

    /// A lab-shaped overlay (as `vnet lab up` builds it): proxy h0, h1..h3; vm0 (…:01)
    /// and vm2 (…:03) on h1, vm1 (…:02) on h2, h3 without VMs. `full` adds a link between
    /// every pair of hosts and the full lab's rules.
    fn lab(full: bool) -> Overlay {
        lab_with(full, &[(0, 1), (1, 2), (2, 1)])
    }

    /// The lab with VM j on host h for each (j, h) of `placement`.
    fn lab_with(full: bool, placement: &[(usize, usize)]) -> Overlay {
        let mut s = String::from("BEGIN\n");
        for i in 0..4 {
            s += &format!("HOST root AT h{i} 7400 ul0 ADDRESS 198.18.0.{}\n", i + 1);
        }
        s += "ADD\n";
        for &(j, h) in placement {
            s += &format!(
                "IFACE TAP h{h} vm{j} MAC 02:00:00:00:00:0{} DEVICE eth0 NETNS t-vm{j} MTU 1500\n",
                j + 1
            );
        }
        for i in 1..4 {
            s += &format!("LINK TCP h{i} h{i} h0\n");
            if full {
                for k in 1..i {
                    s += &format!("LINK TCP h{i} h{i} h{k}\n");
                }
            }
        }
        let vm = |j: usize| format!("02:00:00:00:00:0{}", j + 1);
        let bc = "ff:ff:ff:ff:ff:ff";
        // The proxy: every VM toward its host, broadcast to every host.
        for &(j, h) in placement {
            s += &format!("FORWARD EDGE h0 ANY {} h0 h{h}\n", vm(j));
        }
        for i in 1..4 {
            s += &format!("FORWARD EDGE h0 ANY {bc} h0 h{i}\n");
        }
        let locals =
            |h: usize| -> Vec<usize> { placement.iter().filter(|p| p.1 == h).map(|p| p.0).collect() };
        for h in 1..4 {
            let local = locals(h);
            if local.is_empty() {
                continue;
            }
            for &j in &local {
                s += &format!("FORWARD INTERFACE h{h} ANY {} vm{j}\n", vm(j));
            }
            let remote: Vec<usize> = if full {
                (1..4).filter(|&k| k != h).collect()
            } else {
                vec![0]
            };
            if full {
                for &(j, hj) in placement {
                    if hj != h {
                        s += &format!("FORWARD EDGE h{h} ANY {} h{h} h{hj}\n", vm(j));
                    }
                }
            }
            for &j in &local {
                for &k in &remote {
                    s += &format!("FORWARD EDGE h{h} {} {bc} h{h} h{k}\n", vm(j));
                }
                for &l in &local {
                    s += &format!("FORWARD INTERFACE h{h} {} {bc} vm{l}\n", vm(j));
                }
            }
            for &l in &local {
                s += &format!("FORWARD INTERFACE h{h} ANY {bc} vm{l}\n");
            }
            s += &format!("FORWARD EDGE h{h} ANY NONE h{h} h0\n");
        }
        s += "END\n";
        let a = crate::analyze(&s);
        assert!(a.diagnostics.is_empty(), "{s}\n{:#?}", a.diagnostics);
        a.overlay
    }

    fn mac(j: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, j + 1])
    }

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    fn new_iface(o: &Overlay, j: u8, to: &str, device: &str) -> Iface {
        let old = o.ifaces.values().find(|i| i.mac == Some(mac(j))).unwrap();
        Iface {
            machine: to.to_string(),
            device: Some(name(device)),
            ..old.clone()
        }
    }

    fn moved(o: &Overlay, j: u8, from: &str, to: &str) -> Overlay {
        let iface = new_iface(o, j, to, "m1");
        move_vm(
            o,
            &Move {
                mac: mac(j),
                from,
                iface: &iface,
                proxy: "h0",
            },
        )
        .unwrap_or_else(|e| panic!("moving vm{j} {from} -> {to}: {e}"))
    }

    /// Where a frame from `src` to `dst` is delivered, as (machine, iface), with no copy
    /// lost or looping.
    fn deliveries(o: &Overlay, src: MacAddr, dst: MacAddr) -> BTreeSet<(String, String)> {
        let route = trace(o, src, dst, None).unwrap();
        // A broadcast copy may end at a host that has no rule for it (a host without
        // VMs); a unicast frame may not.
        let lost = route.outcomes.iter().any(|out| match out {
            Outcome::Delivered { .. } => false,
            Outcome::BlackHole { .. } | Outcome::Returned { .. } => !dst.is_multicast(),
            Outcome::Missing { .. } | Outcome::Loop { .. } => true,
        });
        assert!(!lost, "{src} -> {dst}: {route:#?}");
        let delivered: Vec<(String, String)> = route
            .outcomes
            .iter()
            .filter_map(|out| match out {
                Outcome::Delivered { machine, iface, .. } => Some((machine.clone(), iface.clone())),
                _ => None,
            })
            .collect();
        let once: BTreeSet<(String, String)> = delivered.iter().cloned().collect();
        assert_eq!(
            once.len(),
            delivered.len(),
            "{src} -> {dst} delivered twice: {route:#?}"
        );
        once
    }

    fn at(machine: &str, iface: &str) -> (String, String) {
        (machine.to_string(), iface.to_string())
    }

    /// Every property a move must have, for a VM j moving from `from` to `to`.
    fn check_move(o: &Overlay, j: u8, from: &str, to: &str) -> Overlay {
        let after = moved(o, j, from, to);
        let m = mac(j);
        let name = name(&format!("vm{j}"));
        // The NIC moved.
        assert!(!after.ifaces.contains_key(&(from.to_string(), name.clone())));
        assert_eq!(
            after.ifaces[&(to.to_string(), name.clone())].device.as_deref(),
            Some("m1")
        );
        // No rule anywhere still points the MAC at the old host.
        for r in &after.rules {
            if r.dst == DstMatch::Mac(MacMatch::Exact(m)) {
                assert_ne!(r.out, Target::Edge(from.to_string()), "{r:?}");
                assert!(r.machine != from || matches!(r.out, Target::Edge(_)), "{r:?}");
            }
        }
        crate::compile(&after).unwrap();
        let others: Vec<u8> = (0..3).filter(|&k| k != j).collect();
        for &k in &others {
            // Unicast both ways reaches the right NIC, exactly once.
            assert_eq!(deliveries(&after, mac(k), m), BTreeSet::from([at(to, &name)]));
            let k_at = after.ifaces.values().find(|i| i.mac == Some(mac(k))).unwrap();
            assert_eq!(
                deliveries(&after, m, mac(k)),
                BTreeSet::from([at(&k_at.machine, &k_at.name)])
            );
            // The others' broadcasts reach the VM at its new place instead of the old.
            let mut expected = deliveries(o, mac(k), MacAddr::BROADCAST);
            assert!(expected.remove(&at(from, &name)));
            expected.insert(at(to, &name));
            assert_eq!(
                deliveries(&after, mac(k), MacAddr::BROADCAST),
                expected,
                "vm{k} broadcast"
            );
            // Nothing else changes: the others' unicast among themselves goes as before.
            for &l in &others {
                if l != k {
                    assert_eq!(
                        trace(&after, mac(k), mac(l), None).unwrap(),
                        trace(o, mac(k), mac(l), None).unwrap()
                    );
                }
            }
        }
        // The VM's broadcast reaches every other VM (and not itself).
        let before = deliveries(o, m, MacAddr::BROADCAST);
        assert_eq!(deliveries(&after, m, MacAddr::BROADCAST), before);
        // Rules of machines that are neither end, about other MACs, are untouched.
        let unrelated = |x: &Overlay| -> BTreeSet<Rule> {
            x.rules
                .iter()
                .filter(|r| {
                    r.machine != from && r.machine != to && r.dst != DstMatch::Mac(MacMatch::Exact(m))
                })
                .cloned()
                .collect()
        };
        assert_eq!(unrelated(&after), unrelated(o));
        after
    }

    #[test]
    fn star_moves_to_a_host_with_vms_and_to_an_empty_one() {
        let o = lab(false);
        let to_h1 = check_move(&o, 1, "h2", "h1");
        // The proxy now sends vm1 to h1; h2 (left empty of VMs) forwards it to the proxy.
        assert!(to_h1.rules.contains(&Rule {
            machine: "h0".into(),
            src: MacMatch::Any,
            dst: DstMatch::Mac(MacMatch::Exact(mac(1))),
            out: Target::Edge("h1".into()),
        }));
        // Onto the proxy itself (the lab keeps VMs off it, but the overlay allows it).
        check_move(&o, 1, "h2", "h0");
        let to_h3 = check_move(&o, 1, "h2", "h3");
        // h3 had no rules at all: it now has the VM's and a default route to the proxy.
        assert!(to_h3.rules.contains(&Rule {
            machine: "h3".into(),
            src: MacMatch::Any,
            dst: DstMatch::None,
            out: Target::Edge("h0".into()),
        }));
        // vm0 leaves h1 while vm2 stays; and back again.
        let away = check_move(&o, 0, "h1", "h3");
        let back = moved(&away, 0, "h3", "h1");
        assert_eq!(
            deliveries(&back, mac(1), mac(0)),
            BTreeSet::from([at("h1", "vm0")])
        );
        // Moving back and forth leaves the routes of the pair as they were.
        for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 0)] {
            assert_eq!(deliveries(&back, mac(a), mac(b)), deliveries(&o, mac(a), mac(b)));
        }
    }

    #[test]
    fn there_and_back_leaves_the_overlay_as_it_was() {
        for full in [false, true] {
            let o = lab(full);
            for (j, from, to) in [(1, "h2", "h1"), (1, "h2", "h3"), (0, "h1", "h2"), (0, "h1", "h3")] {
                let away = moved(&o, j, from, to);
                let iface = new_iface(&away, j, from, "eth0");
                let back = move_vm(
                    &away,
                    &Move {
                        mac: mac(j),
                        from: to,
                        iface: &iface,
                        proxy: "h0",
                    },
                )
                .unwrap();
                let only = |a: &Overlay, b: &Overlay| -> Vec<String> {
                    a.rules
                        .difference(&b.rules)
                        .map(|r| crate::printer::item(&Item::Rule(r.clone())))
                        .collect()
                };
                assert_eq!(
                    (only(&back, &o), only(&o, &back)),
                    (Vec::new(), Vec::new()),
                    "full={full}: vm{j} {from} -> {to} -> {from}: rules gained, lost"
                );
                assert_eq!(back, o);
            }
        }
    }

    #[test]
    fn a_moved_lab_is_the_lab_built_with_the_vm_there() {
        for full in [false, true] {
            let o = lab(full);
            for (j, from, to) in [(1, "h2", "h1"), (1, "h2", "h3"), (0, "h1", "h2"), (0, "h1", "h3")] {
                let iface = new_iface(&o, j, to, "eth0");
                let after = move_vm(
                    &o,
                    &Move {
                        mac: mac(j),
                        from,
                        iface: &iface,
                        proxy: "h0",
                    },
                )
                .unwrap();
                let mut placement = vec![(0, 1), (1, 2), (2, 1)];
                placement[usize::from(j)].1 = to[1..].parse().unwrap();
                assert_eq!(
                    after,
                    lab_with(full, &placement),
                    "full={full}: vm{j} {from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn full_mesh_uses_the_direct_links() {
        let o = lab(true);
        let after = check_move(&o, 1, "h2", "h3");
        // Every host sends vm1 straight to h3; h2, left without VMs, keeps no rules.
        assert!(!after.rules.iter().any(|r| r.machine == "h2"));
        for h in ["h0", "h1"] {
            assert!(
                after.rules.contains(&Rule {
                    machine: h.into(),
                    src: MacMatch::Any,
                    dst: DstMatch::Mac(MacMatch::Exact(mac(1))),
                    out: Target::Edge("h3".into()),
                }),
                "{h}"
            );
        }
        let route = trace(&after, mac(0), mac(1), None).unwrap();
        assert_eq!(route.hops.len(), 2, "h1 -> h3 directly: {route:#?}");
        check_move(&o, 0, "h1", "h2");
    }

    #[test]
    fn fast_paths_follow_the_vm() {
        let o = crate::generate::fast_paths(&lab(false), &[(mac(0), mac(1))], crate::LinkProto::Tcp).unwrap();
        let after = check_move(&o, 1, "h2", "h3");
        // h1's fast-path rule for vm1 no longer points at h2: h1 has no link to h3, so the
        // pair goes through the proxy again.
        assert!(!after
            .rules
            .iter()
            .any(|r| r.out == Target::Edge("h2".into()) && r.machine == "h1"));
        assert_eq!(trace(&after, mac(0), mac(1), None).unwrap().hops.len(), 3);
    }

    #[test]
    fn bad_moves_are_refused() {
        let o = lab(false);
        let iface = new_iface(&o, 1, "h3", "m1");
        let mv = |from, iface: &Iface, proxy| {
            move_vm(
                &o,
                &Move {
                    mac: mac(1),
                    from,
                    iface,
                    proxy,
                },
            )
            .unwrap_err()
        };
        assert_eq!(mv("h9", &iface, "h0"), MoveError::UnknownMachine("h9".into()));
        assert_eq!(mv("h3", &iface, "h0"), MoveError::SameMachine("h3".into()));
        assert!(matches!(mv("h1", &iface, "h0"), MoveError::NoVm { .. }));
        let wrong_mac = Iface {
            mac: Some(mac(0)),
            ..iface.clone()
        };
        assert!(matches!(
            mv("h2", &wrong_mac, "h0"),
            MoveError::MacMismatch { .. }
        ));
        let clash = new_iface(&o, 1, "h1", "m1");
        let clash = Iface {
            name: name("vm0"),
            ..clash
        };
        assert_eq!(
            mv("h2", &clash, "h0"),
            MoveError::IfaceExists {
                machine: "h1".into(),
                name: "vm0".into()
            }
        );
        // A proxy that h3 does not link to leaves it no way to reach vm0's host.
        let e = mv("h2", &iface, "h1");
        assert!(matches!(e, MoveError::NoRoute { .. }), "{e}");
    }
}
