//! `diff(current, target)`: the primitives that turn one overlay into another, ordered so
//! that connectivity both share is never cut: new interfaces and links come up and new
//! rules are in place before old rules go, and old links and interfaces go last. A link
//! or interface whose options change is replaced: the rules using it go with it and come
//! back after it (the only step that cuts, and only what uses it).

use crate::ast::{Action, Block, Description, Item, Statement, Target};
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
            readd.push(Primitive::add(Item::Rule(r.clone())));
        } else if !current.rules.contains(r) {
            out.push(Primitive::add(Item::Rule(r.clone())));
        }
    }
    for r in &current.rules {
        if uses_replaced(r) || !target.rules.contains(r) {
            out.push(Primitive::delete(Item::Rule(r.clone())));
        }
    }
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
    out.extend(readd);
    out
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
