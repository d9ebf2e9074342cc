//! The canonical text of a tree: upper-case keywords, one statement per line, two-space
//! indentation, options in a fixed order. `parse(print(d)) == d` for every tree, and
//! printing is idempotent.

use std::fmt::Write;

use vnet_core::rule::{DstMatch, MacMatch};

use crate::ast::{Action, Control, Description, Host, Iface, IfaceKind, Item, Link, LinkProto, Rule, Target};
use crate::lexer::quote_if_needed;
use crate::parser::is_statement_keyword;

/// Prints a description.
pub fn print(d: &Description) -> String {
    let mut out = String::from("BEGIN\n");
    for h in &d.hosts {
        out += &format!("  {}\n", host(&h.decl));
    }
    for b in &d.blocks {
        out += match b.action {
            Action::Add => "ADD\n",
            Action::Delete => "DELETE\n",
        };
        for i in &b.items {
            out += &format!("  {}\n", item(&i.decl));
        }
    }
    out + "END\n"
}

/// A name or path as a word, quoted when it would not lex as one word or would read as a
/// statement keyword.
fn word(value: &str) -> String {
    if is_statement_keyword(value) {
        format!("\"{value}\"")
    } else {
        quote_if_needed(value)
    }
}

/// One `HOST` statement.
pub fn host(h: &Host) -> String {
    let mut s = format!(
        "HOST {} AT {} {} {}",
        word(&h.user),
        word(&h.machine),
        h.port,
        word(&h.interface)
    );
    if let Some(a) = h.address {
        let _ = write!(s, " ADDRESS {a}");
    }
    match &h.control {
        Some(Control::Unix(path)) => {
            let _ = write!(s, " CONTROL {}", word(&path.to_string_lossy()));
        }
        Some(Control::Tcp { addr, token_file }) => {
            let _ = write!(s, " CONTROL {addr} TOKEN {}", word(&token_file.to_string_lossy()));
        }
        None => {}
    }
    if let Some(k) = &h.key_file {
        let _ = write!(s, " KEY {}", word(&k.to_string_lossy()));
    }
    s
}

/// One `IFACE`, `LINK` or `FORWARD` statement.
pub fn item(i: &Item) -> String {
    match i {
        Item::Iface(i) => iface(i),
        Item::Link(l) => link(l),
        Item::Rule(r) => rule(r),
    }
}

fn iface(i: &Iface) -> String {
    let kind = match i.kind {
        IfaceKind::Tap => "TAP",
        IfaceKind::Attach => "ATTACH",
    };
    let mut s = format!("IFACE {kind} {} {}", word(&i.machine), word(&i.name));
    if let Some(m) = i.mac {
        let _ = write!(s, " MAC {m}");
    }
    if let Some(d) = &i.device {
        let _ = write!(s, " DEVICE {}", word(d));
    }
    if let Some(n) = &i.netns {
        let _ = write!(s, " NETNS {}", word(n));
    }
    if let Some(m) = i.mtu {
        let _ = write!(s, " MTU {m}");
    }
    s
}

fn link(l: &Link) -> String {
    let proto = match l.proto {
        LinkProto::Tcp => "TCP",
        LinkProto::Udp => "UDP",
        LinkProto::Quic => "QUIC",
    };
    let owner = word(&l.owner);
    let mut s = format!("LINK {proto} {owner} {owner} {}", word(&l.peer));
    if let Some(p) = l.port {
        let _ = write!(s, " PORT {p}");
    }
    if let Some(k) = &l.key {
        let _ = write!(s, " KEY {}", word(k));
    }
    if let Some(r) = l.reserve {
        let _ = write!(s, " RESERVE {r}");
    }
    if l.encrypt {
        s.push_str(" ENCRYPT");
    }
    s
}

/// One side of a rule as the language writes it.
pub fn side(m: &MacMatch) -> String {
    match m {
        MacMatch::Any => "ANY".into(),
        MacMatch::Exact(a) => a.to_string(),
        MacMatch::Not(a) => format!("NOT {a}"),
    }
}

/// A destination side as the language writes it.
pub fn destination(d: &DstMatch) -> String {
    match d {
        DstMatch::Mac(m) => side(m),
        DstMatch::None => "NONE".into(),
    }
}

fn rule(r: &Rule) -> String {
    let m = word(&r.machine);
    let sides = format!("{} {}", side(&r.src), destination(&r.dst));
    match &r.out {
        Target::Edge(peer) => format!("FORWARD EDGE {m} {sides} {m} {}", word(peer)),
        Target::Iface(i) => format!("FORWARD INTERFACE {m} {sides} {}", word(i)),
    }
}
