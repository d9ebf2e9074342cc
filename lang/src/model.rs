//! The overlay a description builds: hosts, and the interfaces, links and rules its
//! blocks leave standing. Semantic checks are the model refusing a statement.

use std::collections::{BTreeMap, BTreeSet};

use vnet_core::name::Name;

use crate::ast::{Action, Description, Host, Iface, Item, Link, Rule, Statement, Target};
use crate::source::{Diagnostic, Source};

/// The configuration a description describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Hosts by machine name.
    pub hosts: BTreeMap<String, Host>,
    /// Interfaces by (machine, name).
    pub ifaces: BTreeMap<(String, Name), Iface>,
    /// Links by name.
    pub links: BTreeMap<String, Link>,
    /// Rules.
    pub rules: BTreeSet<Rule>,
}

/// Why the overlay refuses a statement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A statement names a machine no HOST declares.
    #[error("unknown machine `{0}`: declare it with HOST")]
    UnknownMachine(String),
    /// Two HOST lines name the same machine.
    #[error("machine `{0}` is declared twice")]
    DuplicateHost(String),
    /// ADD of an interface, link or rule that is already there.
    #[error("duplicate {what} `{name}`")]
    Duplicate {
        /// "interface", "link" or "rule".
        what: &'static str,
        /// What it is.
        name: String,
    },
    /// A link or a rule's edge joins a machine to itself.
    #[error("`{0}` cannot link to itself")]
    SelfLink(String),
    /// A rule sends over a link that is not there.
    #[error("the rule sends over link `{0}`, which is not there")]
    MissingLink(String),
    /// A rule sends to an interface that is not there.
    #[error(
        "the rule sends to interface `{name}` of `{machine}`, which is not there (declare it with IFACE)"
    )]
    MissingIface {
        /// The rule's machine.
        machine: String,
        /// The interface.
        name: String,
    },
    /// DELETE of something that was not added.
    #[error("DELETE of {what} `{name}`, which was not added")]
    NotAdded {
        /// "interface", "link" or "rule".
        what: &'static str,
        /// What it is.
        name: String,
    },
    /// DELETE of a link or interface that a rule still uses.
    #[error("{what} `{name}` is still used by `{rule}`; delete the rule first")]
    InUse {
        /// "link" or "interface".
        what: &'static str,
        /// Its name.
        name: String,
        /// The rule, as text.
        rule: String,
    },
}

/// A description, checked: its tree, the overlay it builds and every diagnostic.
#[derive(Debug)]
pub struct Analysis {
    /// The tree.
    pub description: Description,
    /// The overlay after every statement that checks out.
    pub overlay: Overlay,
    /// Syntax errors, then semantic ones, each in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Analysis {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses and checks a description.
pub fn analyze(src: &str) -> Analysis {
    let parsed = crate::parser::parse(src);
    let source = Source::new(src);
    let mut semantic = Vec::new();
    let overlay = check(&parsed.description, |span, err| {
        semantic.push(source.error(span, err.to_string(), None));
    });
    semantic.sort_by_key(|d| d.span.start);
    let mut diagnostics = parsed.diagnostics;
    diagnostics.extend(semantic);
    Analysis {
        description: parsed.description,
        overlay,
        diagnostics,
    }
}

/// Builds the overlay of a tree, reporting each refused statement with the span of the
/// word it is about. A block's statements apply as a unit: ADD takes interfaces, then
/// links, then rules; DELETE the reverse, so a block may delete a link with its rules.
pub fn check(d: &Description, mut report: impl FnMut(crate::source::Span, ModelError)) -> Overlay {
    let mut overlay = Overlay::default();
    for h in &d.hosts {
        if let Err(e) = overlay.add_host(h.decl.clone()) {
            report(h.span_of(&h.decl.machine), e);
        }
    }
    for b in &d.blocks {
        let mut items: Vec<&Statement<Item>> = b.items.iter().collect();
        items.sort_by_key(|s| kind_rank(&s.decl));
        if b.action == Action::Delete {
            items.reverse();
        }
        for s in items {
            let result = match b.action {
                Action::Add => overlay.add(&s.decl),
                Action::Delete => overlay.delete(&s.decl),
            };
            if let Err(e) = result {
                let span = match &e {
                    ModelError::UnknownMachine(m) => s.span_of(m),
                    ModelError::MissingLink(_) | ModelError::InUse { .. } => match &s.decl {
                        Item::Rule(Rule {
                            out: Target::Edge(p), ..
                        }) => s.span_of(p),
                        _ => s.span,
                    },
                    ModelError::MissingIface { name, .. } => s.span_of(name),
                    _ => s.span,
                };
                report(span, e);
            }
        }
    }
    overlay
}

fn kind_rank(i: &Item) -> u8 {
    match i {
        Item::Iface(_) => 0,
        Item::Link(_) => 1,
        Item::Rule(_) => 2,
    }
}

impl Overlay {
    /// Declares a host.
    pub fn add_host(&mut self, h: Host) -> Result<(), ModelError> {
        if self.hosts.contains_key(&h.machine) {
            return Err(ModelError::DuplicateHost(h.machine));
        }
        self.hosts.insert(h.machine.clone(), h);
        Ok(())
    }

    fn known(&self, machine: &str) -> Result<(), ModelError> {
        if self.hosts.contains_key(machine) {
            Ok(())
        } else {
            Err(ModelError::UnknownMachine(machine.to_string()))
        }
    }

    /// Adds an interface, link or rule.
    pub fn add(&mut self, item: &Item) -> Result<(), ModelError> {
        match item {
            Item::Iface(i) => {
                self.known(&i.machine)?;
                let key = (i.machine.clone(), i.name.clone());
                if self.ifaces.contains_key(&key) {
                    return Err(ModelError::Duplicate {
                        what: "interface",
                        name: format!("{} on {}", i.name, i.machine),
                    });
                }
                self.ifaces.insert(key, i.clone());
            }
            Item::Link(l) => {
                self.known(&l.owner)?;
                self.known(&l.peer)?;
                if l.owner == l.peer {
                    return Err(ModelError::SelfLink(l.owner.clone()));
                }
                if self.links.contains_key(&l.name()) {
                    return Err(ModelError::Duplicate {
                        what: "link",
                        name: l.name(),
                    });
                }
                self.links.insert(l.name(), l.clone());
            }
            Item::Rule(r) => {
                self.known(&r.machine)?;
                match &r.out {
                    Target::Edge(peer) => {
                        self.known(peer)?;
                        if peer == &r.machine {
                            return Err(ModelError::SelfLink(peer.clone()));
                        }
                        let name = crate::ast::link_name(&r.machine, peer);
                        if !self.links.contains_key(&name) {
                            return Err(ModelError::MissingLink(name));
                        }
                    }
                    Target::Iface(name) => {
                        if !self.ifaces.contains_key(&(r.machine.clone(), name.clone())) {
                            return Err(ModelError::MissingIface {
                                machine: r.machine.clone(),
                                name: name.to_string(),
                            });
                        }
                    }
                }
                if !self.rules.insert(r.clone()) {
                    return Err(ModelError::Duplicate {
                        what: "rule",
                        name: crate::printer::item(item),
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes an interface, link or rule; it must be there (with the same options) and,
    /// for a link or interface, no rule may use it.
    pub fn delete(&mut self, item: &Item) -> Result<(), ModelError> {
        let not_added = |what, name| ModelError::NotAdded { what, name };
        match item {
            Item::Iface(i) => {
                let key = (i.machine.clone(), i.name.clone());
                if self.ifaces.get(&key) != Some(i) {
                    return Err(not_added("interface", format!("{} on {}", i.name, i.machine)));
                }
                if let Some(r) = self
                    .rules
                    .iter()
                    .find(|r| r.machine == i.machine && r.out == Target::Iface(i.name.clone()))
                {
                    return Err(in_use("interface", &i.name, r));
                }
                self.ifaces.remove(&key);
            }
            Item::Link(l) => {
                let name = l.name();
                if self.links.get(&name) != Some(l) {
                    return Err(not_added("link", name));
                }
                if let Some(r) = self
                    .rules
                    .iter()
                    .find(|r| self.rule_link(r) == Some(name.clone()))
                {
                    return Err(in_use("link", &name, r));
                }
                self.links.remove(&name);
            }
            Item::Rule(r) => {
                if !self.rules.remove(r) {
                    return Err(not_added("rule", crate::printer::item(item)));
                }
            }
        }
        Ok(())
    }

    /// The link a rule sends over, if it sends over one.
    pub fn rule_link(&self, r: &Rule) -> Option<String> {
        match &r.out {
            Target::Edge(peer) => Some(crate::ast::link_name(&r.machine, peer)),
            Target::Iface(_) => None,
        }
    }

    /// The description of this overlay: its hosts and one ADD block with every interface,
    /// link and rule (in that order).
    pub fn to_description(&self) -> Description {
        let items: Vec<Statement<Item>> = self.items().into_iter().map(Statement::synthetic).collect();
        Description {
            hosts: self.hosts.values().cloned().map(Statement::synthetic).collect(),
            blocks: if items.is_empty() {
                Vec::new()
            } else {
                vec![crate::ast::Block {
                    action: Action::Add,
                    items,
                }]
            },
        }
    }

    /// Every interface, link and rule, in that order.
    pub fn items(&self) -> Vec<Item> {
        let ifaces = self.ifaces.values().cloned().map(Item::Iface);
        let links = self.links.values().cloned().map(Item::Link);
        let rules = self.rules.iter().cloned().map(Item::Rule);
        ifaces.chain(links).chain(rules).collect()
    }
}

fn in_use(what: &'static str, name: &str, r: &Rule) -> ModelError {
    ModelError::InUse {
        what,
        name: name.to_string(),
        rule: crate::printer::item(&Item::Rule(r.clone())),
    }
}
