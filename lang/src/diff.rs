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
//! rules keep the overlay's order. A new rule whose path leads through a replaced link
//! comes after that link is back, with the rules using it; an old rule whose new version
//! waits like that stays until then, with the old rules downstream of it (found by
//! vnet-sim: `apply`, seed 16833019033704442697, a frame looping through a default route
//! back to the proxy).

use std::collections::{BTreeSet, HashMap};

use vnet_core::name::Name;
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
    let replaced_ifaces: Vec<&(String, Name)> = target
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
    // Rules that come back after a replaced link or interface, and every new rule whose
    // path leads to one of them: added before it, such a rule would send its frames to a
    // machine that cannot carry them on yet (a default route back to the proxy, a loop).
    let new_rules: Vec<Rule> = target
        .rules
        .iter()
        .filter(|r| uses_replaced(r) || !current.rules.contains(r))
        .cloned()
        .collect();
    let late = leading_to(&new_rules, |r| uses_replaced(r));
    let (readd, added) = split(new_rules, &late);
    out.extend(along_paths(added, Direction::EndFirst).map(Primitive::add));
    // A rule whose new version waits for a replaced link stays until that version is in
    // place, and so do the old rules downstream of it (its frames still take that path).
    // Rules over a link or interface that goes away cannot wait for it.
    let deleted: Vec<Rule> = current
        .rules
        .iter()
        .filter(|r| uses_replaced(r) || !target.rules.contains(r))
        .cloned()
        .collect();
    let stays_usable = |r: &Rule| {
        !uses_replaced(r)
            && match &r.out {
                Target::Iface(name) => target.ifaces.contains_key(&(r.machine.clone(), name.clone())),
                Target::Edge(_) => current
                    .rule_link(r)
                    .is_some_and(|l| target.links.get(&l) == current.links.get(&l)),
            }
    };
    let replaced_later = |r: &Rule| {
        stays_usable(r)
            && readd
                .iter()
                .any(|n| n.machine == r.machine && n.src == r.src && n.dst == r.dst)
    };
    let waits = downstream_of(&deleted, replaced_later, stays_usable);
    let (delete_late, delete_now) = split(deleted, &waits);
    out.extend(along_paths(delete_now, Direction::StartFirst).map(Primitive::delete));
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
    out.extend(along_paths(delete_late, Direction::StartFirst).map(Primitive::delete));
    out
}

/// `rules` split by `marked` into (marked, the rest), each in the given order.
fn split(rules: Vec<Rule>, marked: &[bool]) -> (Vec<Rule>, Vec<Rule>) {
    let (yes, no): (Vec<_>, Vec<_>) = rules.into_iter().zip(marked).partition(|(_, m)| **m);
    (
        yes.into_iter().map(|(r, _)| r).collect(),
        no.into_iter().map(|(r, _)| r).collect(),
    )
}

/// The rule on the path's next machine that carries `r`'s frames on: same sides, on the
/// machine `r` sends to.
fn carries_on(r: &Rule, next: &Rule) -> bool {
    matches!(&r.out, Target::Edge(peer) if *peer == next.machine) && next.src == r.src && next.dst == r.dst
}

/// Which of `rules` lead, along their paths, to a rule for which `seed` holds (the seeds
/// included).
fn leading_to(rules: &[Rule], seed: impl Fn(&Rule) -> bool) -> Vec<bool> {
    let mut marked: Vec<bool> = rules.iter().map(&seed).collect();
    loop {
        let mut changed = false;
        for i in 0..rules.len() {
            if !marked[i] && (0..rules.len()).any(|j| marked[j] && carries_on(&rules[i], &rules[j])) {
                marked[i] = true;
                changed = true;
            }
        }
        if !changed {
            return marked;
        }
    }
}

/// Which of `rules` are downstream, along their paths, of a rule for which `seed` holds
/// (the seeds included), as far as `may` holds.
fn downstream_of(rules: &[Rule], seed: impl Fn(&Rule) -> bool, may: impl Fn(&Rule) -> bool) -> Vec<bool> {
    let mut marked: Vec<bool> = rules.iter().map(&seed).collect();
    loop {
        let mut changed = false;
        for i in 0..rules.len() {
            if !marked[i]
                && may(&rules[i])
                && (0..rules.len()).any(|j| marked[j] && carries_on(&rules[j], &rules[i]))
            {
                marked[i] = true;
                changed = true;
            }
        }
        if !changed {
            return marked;
        }
    }
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

/// One reconfiguration of `vnet apply`: primitives applied together, then a whole
/// configuration replace sent to each of `machines`, in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The primitives, in diff order.
    pub primitives: Vec<Primitive>,
    /// The daemons to reconfigure, in the order they must take the change.
    pub machines: Vec<String>,
}

/// How `vnet apply` sends `primitives` (from [`diff`]) to the daemons, so that no frame is
/// cut, lost or duplicated on the way (the simulator checks it after every replace):
///
/// - Interfaces and links come in steps of their own: consecutive structure primitives
///   of one action are one step (no rule uses what they add or remove yet).
/// - Rules go in runs: consecutive rule primitives of one machine are one step, one
///   replace of that machine. A machine is never given a rule before the rules it
///   relies on downstream, which [`diff`] put earlier on other machines: replacing all
///   of a phase's machines at once, in any order, loses frames between the replaces.
/// - A rule that only changes its output (same machine, same sides) swaps in one
///   replace: its old version's delete joins the run that adds the new one, so the two
///   never fire side by side (every frame would be delivered twice) and never both miss.
///   Moving the delete earlier is safe: the new rule matches every frame the old one did.
pub fn steps(primitives: &[Primitive]) -> Vec<Step> {
    let sides = |p: &Primitive| match &p.item {
        Item::Rule(r) => Some((r.machine.clone(), r.src, r.dst)),
        _ => None,
    };
    // The deletes that join an add of the same machine and sides, by position.
    let mut joined = vec![false; primitives.len()];
    let mut fused: Vec<Primitive> = Vec::with_capacity(primitives.len());
    for (i, p) in primitives.iter().enumerate() {
        if joined[i] {
            continue;
        }
        fused.push(p.clone());
        if p.action != Action::Add {
            continue;
        }
        let Some(key) = sides(p) else { continue };
        // Only when this is the last add of its sides, so that the set of rules with
        // these sides changes in one replace.
        let later_add = primitives[i + 1..]
            .iter()
            .any(|q| q.action == Action::Add && sides(q).as_ref() == Some(&key));
        if later_add {
            continue;
        }
        for (j, q) in primitives.iter().enumerate().skip(i + 1) {
            if !joined[j] && q.action == Action::Delete && sides(q).as_ref() == Some(&key) {
                joined[j] = true;
                fused.push(q.clone());
            }
        }
    }
    let mut out: Vec<Step> = Vec::new();
    for p in fused {
        let machines: Vec<String> = p.machines().into_iter().map(str::to_string).collect();
        let joins = out.last().is_some_and(|step| {
            let last = &step.primitives[step.primitives.len() - 1];
            match (&last.item, &p.item) {
                (Item::Rule(a), Item::Rule(b)) => a.machine == b.machine,
                (Item::Rule(_), _) | (_, Item::Rule(_)) => false,
                _ => last.action == p.action,
            }
        });
        match out.last_mut() {
            Some(step) if joins => {
                for m in machines {
                    if !step.machines.contains(&m) {
                        step.machines.push(m);
                    }
                }
                step.primitives.push(p);
            }
            _ => {
                let mut unique = Vec::new();
                for m in machines {
                    if !unique.contains(&m) {
                        unique.push(m);
                    }
                }
                out.push(Step {
                    primitives: vec![p],
                    machines: unique,
                });
            }
        }
    }
    out
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
