//! `diff(current, target)`: the primitives that turn one overlay into another, ordered so
//! that connectivity both share is never cut: new interfaces and links come up and new
//! rules are in place before old rules go, and old links and interfaces go last. A link
//! or interface whose options change is replaced: the rules using it go with it and come
//! back after it (the only step that cuts, and only what uses it).
//!
//! Rules along a path (a rule sending over the link to a machine that holds a rule with
//! the same sides, and so on) are added from the path's end back to its start and
//! deleted from its start on, so no machine sends frames to a neighbour before the
//! neighbour has, or after it has lost, the rule that carries them further. Otherwise
//! rules keep the overlay's order.

use std::collections::{BTreeSet, HashMap};

use vnet_core::rule::{DstMatch, MacMatch};

use crate::ast::{Action, Block, Description, Item, Rule, Statement, Target};
use crate::model::{ModelError, Overlay};

/// One control primitive (thesis §3.2) on the overlay.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Primitive {
    /// Add or delete.
    pub action: Action,
    /// What.
    pub item: Item,
}

impl Primitive {
    fn add(item: Item) -> Primitive {
        Primitive {
            action: Action::Add,
            item,
        }
    }

    fn delete(item: Item) -> Primitive {
        Primitive {
            action: Action::Delete,
            item,
        }
    }

    /// The machines whose daemons this primitive changes.
    pub fn machines(&self) -> Vec<&str> {
        match &self.item {
            Item::Iface(i) => vec![&i.machine],
            Item::Link(l) => vec![&l.owner, &l.peer],
            Item::Rule(r) => vec![&r.machine],
        }
    }
}

/// The primitives that turn `current` into `target` (hosts are taken as they are).
pub fn diff(current: &Overlay, target: &Overlay) -> Vec<Primitive> {
    let replaced_ifaces: Vec<&(String, String)> = target
        .ifaces
        .iter()
        .filter(|(k, v)| current.ifaces.get(*k).is_some_and(|c| c != *v))
        .map(|(k, _)| k)
        .collect();
    let replaced_links: Vec<&String> = target
        .links
        .iter()
        .filter(|(k, v)| current.links.get(*k).is_some_and(|c| c != *v))
        .map(|(k, _)| k)
        .collect();
    let uses_replaced = |r: &crate::ast::Rule| match &r.out {
        Target::Iface(name) => replaced_ifaces.contains(&&(r.machine.clone(), name.clone())),
        Target::Edge(_) => current.rule_link(r).is_some_and(|l| replaced_links.contains(&&l)),
    };

    let mut out = Vec::new();
    let mut readd = Vec::new();
    let mut added = Vec::new();
    for (k, i) in &target.ifaces {
        if !current.ifaces.contains_key(k) {
            out.push(Primitive::add(Item::Iface(i.clone())));
        }
    }
    for (k, l) in &target.links {
        if !current.links.contains_key(k) {
            out.push(Primitive::add(Item::Link(l.clone())));
        }
    }
    for r in &target.rules {
        if uses_replaced(r) {
            readd.push(r.clone());
        } else if !current.rules.contains(r) {
            added.push(r.clone());
        }
    }
    out.extend(along_paths(added, Direction::EndFirst).map(Primitive::add));
    let deleted: Vec<Rule> = current
        .rules
        .iter()
        .filter(|r| uses_replaced(r) || !target.rules.contains(r))
        .cloned()
        .collect();
    out.extend(along_paths(deleted, Direction::StartFirst).map(Primitive::delete));
    for (k, l) in &current.links {
        if target.links.get(k) != Some(l) {
            out.push(Primitive::delete(Item::Link(l.clone())));
        }
    }
    for (k, i) in &current.ifaces {
        if target.ifaces.get(k) != Some(i) {
            out.push(Primitive::delete(Item::Iface(i.clone())));
        }
    }
    for k in replaced_ifaces {
        out.push(Primitive::add(Item::Iface(target.ifaces[k].clone())));
    }
    for k in replaced_links {
        out.push(Primitive::add(Item::Link(target.links[k].clone())));
    }
    out.extend(along_paths(readd, Direction::EndFirst).map(Primitive::add));
    out
}

/// Which end of a path of rules comes first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The rules nearest the delivery first (for adding).
    EndFirst,
    /// The rules nearest the sender first (for deleting).
    StartFirst,
}

/// `rules` ordered along their paths (module docs): a rule sending over the link to
/// machine `p` is the next hop's predecessor of every rule of `p` with the same sides.
/// Each rule comes as early as the order allows; rules the paths do not order, and rules
/// on a cycle of paths, keep their order.
fn along_paths(rules: Vec<Rule>, direction: Direction) -> impl Iterator<Item = Item> {
    type Sides = (MacMatch, DstMatch);
    let mut at: HashMap<(&str, Sides), Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        at.entry((r.machine.as_str(), (r.src, r.dst)))
            .or_default()
            .push(i);
    }
    // waits[i]: the rules that must come before rule i; then[i]: the rules waiting for i.
    let mut waits = vec![0usize; rules.len()];
    let mut then: Vec<Vec<usize>> = vec![Vec::new(); rules.len()];
    for (i, r) in rules.iter().enumerate() {
        let Target::Edge(peer) = &r.out else { continue };
        for &j in at.get(&(peer.as_str(), (r.src, r.dst))).into_iter().flatten() {
            let (first, second) = match direction {
                Direction::EndFirst => (j, i),
                Direction::StartFirst => (i, j),
            };
            waits[second] += 1;
            then[first].push(second);
        }
    }
    let mut ready: BTreeSet<usize> = (0..rules.len()).filter(|&i| waits[i] == 0).collect();
    let mut done = vec![false; rules.len()];
    let mut order = Vec::with_capacity(rules.len());
    let mut oldest = 0;
    while order.len() < rules.len() {
        // A cycle leaves nothing ready: its first rule in the given order goes next.
        let i = match ready.pop_first() {
            Some(i) => i,
            None => {
                while done[oldest] {
                    oldest += 1;
                }
                oldest
            }
        };
        if done[i] {
            continue;
        }
        done[i] = true;
        order.push(i);
        for &k in &then[i] {
            waits[k] = waits[k].saturating_sub(1);
            if waits[k] == 0 && !done[k] {
                ready.insert(k);
            }
        }
    }
    let mut slots: Vec<Option<Rule>> = rules.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(move |i| slots[i].take())
        .map(Item::Rule)
}

/// Applies primitives in order; fails at the first one the overlay refuses.
pub fn apply(overlay: &Overlay, primitives: &[Primitive]) -> Result<Overlay, ModelError> {
    let mut o = overlay.clone();
    for p in primitives {
        match p.action {
            Action::Add => o.add(&p.item)?,
            Action::Delete => o.delete(&p.item)?,
        }
    }
    Ok(o)
}

/// Splits primitives into phases of one action each (adds, deletes, re-adds), the steps
/// at which a whole-configuration replace can take them without cutting connectivity.
pub fn phases(primitives: &[Primitive]) -> Vec<&[Primitive]> {
    primitives.chunk_by(|a, b| a.action == b.action).collect()
}

/// The primitives as a description: the hosts of `hosts`, one block per phase.
pub fn to_description(hosts: &Overlay, primitives: &[Primitive]) -> Description {
    Description {
        hosts: hosts.hosts.values().cloned().map(Statement::synthetic).collect(),
        blocks: phases(primitives)
            .into_iter()
            .map(|phase| Block {
                action: phase[0].action,
                items: phase
                    .iter()
                    .map(|p| Statement::synthetic(p.item.clone()))
                    .collect(),
            })
            .collect(),
    }
}
